//! From the connection settings to the engine's client options (`engine::ops::ClientOptions`):
//! the mechanism, message encryption, the pre-send policy (TrustedHosts, AllowUnencrypted),
//! TLS (CAs, skips, the pinned thumbprint), Kerberos (KDC, SPN service class), name
//! overrides and timeouts. Built once per run and shared; a host whose inventory settings
//! differ (its own mechanism, certificate validation or CA bundle) gets its own copy through
//! [`for_host`].

use std::sync::Arc;
use std::time::Duration;

use psfleet_engine::auth::{ClientCertificate, Credential, Mechanism};
use psfleet_engine::http::{AuthMethod as EngineAuth, Encryption};
use psfleet_engine::kerberos::KerberosOptions;
use psfleet_engine::ops::ClientOptions;
use psfleet_engine::target::{ClientPolicy, Resolver, TrustedHosts};
use psfleet_engine::tls::{Thumbprint, TlsClient, TlsOptions};
use psfleet_inventories::{CertValidation, Host};

use crate::exit::CliError;
use crate::options::{AuthMethod, EncryptionMode};
use crate::settings::ConnectionSettings;

/// Time a request may take beyond its OperationTimeout (the service answers a held
/// Receive at OperationTimeout; the margin covers the network and the service's own work).
const REQUEST_MARGIN: Duration = Duration::from_secs(10);

/// The engine's mechanism for psfleet's option value.
pub fn engine_auth(method: AuthMethod) -> EngineAuth {
    match method {
        AuthMethod::Basic => EngineAuth::Basic,
        AuthMethod::Ntlm => EngineAuth::Sspi(Mechanism::Ntlm),
        AuthMethod::Negotiate => EngineAuth::Sspi(Mechanism::Negotiate),
        AuthMethod::Kerberos => EngineAuth::Sspi(Mechanism::Kerberos),
        AuthMethod::Credssp => EngineAuth::Sspi(Mechanism::CredSsp),
        AuthMethod::Certificate => EngineAuth::Certificate,
    }
}

/// The client options of a run, for `credential` (the run's default account; `None` for
/// certificate authentication, where the user only labels errors).
pub fn client_options(
    conn: &ConnectionSettings,
    credential: Option<Credential>,
) -> Result<ClientOptions, CliError> {
    let method = conn.authentication.value;
    let credential = match credential {
        Some(credential) => credential,
        None => label(conn)?,
    };
    let mut options = ClientOptions::new(engine_auth(method), credential);
    if method == AuthMethod::Certificate {
        options = options.with_client_certificate(load_certificate(conn)?);
    }
    options.encryption = match conn.encryption.value {
        EncryptionMode::Auto => Encryption::Auto,
        EncryptionMode::Always => Encryption::Always,
        EncryptionMode::Never => Encryption::Never,
    };
    options.policy = ClientPolicy {
        trusted_hosts: conn
            .trusted_hosts
            .as_ref()
            .map_or_else(TrustedHosts::none, |t| TrustedHosts::parse(&t.value)),
        // AllowUnencrypted on a Windows client; asking for no encryption implies it.
        allow_unencrypted: conn.allow_unencrypted.value
            || conn.encryption.value == EncryptionMode::Never,
    };
    options.tls = Some(tls_client(conn, None, None)?);
    options.kerberos = KerberosOptions {
        kdc: conn.kdc.as_ref().map(|k| k.value.clone()),
        service_class: Some(conn.spn_service.value.clone()),
        ..KerberosOptions::default()
    };
    let mut resolver = Resolver::new();
    for entry in &conn.resolve.value {
        resolver.add_override(&entry.name, entry.ip);
    }
    options.resolver = Arc::new(resolver);
    options.connect_timeout = conn.connect_timeout.value;
    options.operation_timeout = conn.operation_timeout.value;
    options.request_timeout = options
        .request_timeout
        .max(conn.operation_timeout.value.saturating_add(REQUEST_MARGIN));
    options.configuration_name = conn.configuration_name.value.clone();
    Ok(options)
}

/// The options for one inventory host: `None` when the run's options serve it, else a copy
/// with its own mechanism, credential, configuration name, certificate validation or CA
/// bundle.
pub fn for_host(
    base: &Arc<ClientOptions>,
    conn: &ConnectionSettings,
    host: &Host,
    credential: Option<Credential>,
) -> Result<Option<Arc<ClientOptions>>, CliError> {
    let method = crate::credentials::method_of(host.authentication);
    let auth = engine_auth(method);
    let ignore = host.cert_validation == CertValidation::Ignore;
    let tls_differs = ignore != (conn.skip_ca_check.value && conn.skip_cn_check.value)
        || host.ca_trust_path != conn.ca_file.as_ref().map(|c| c.value.clone());
    let credential_differs = credential
        .as_ref()
        .is_some_and(|c| c.user() != base.credential.user());
    if auth == base.auth
        && !tls_differs
        && !credential_differs
        && host.configuration_name == base.configuration_name
    {
        return Ok(None);
    }
    let mut options = (**base).clone();
    options.auth = auth;
    if method == AuthMethod::Certificate && options.client_certificate.is_none() {
        options = options.with_client_certificate(load_certificate(conn).map_err(|e| {
            CliError::usage(format!("{}: authentication certificate: {e}", host.name))
        })?);
    }
    options.configuration_name = host.configuration_name.clone();
    if let Some(credential) = credential {
        options.credential = credential;
    }
    if tls_differs {
        options.tls = Some(tls_client(
            conn,
            Some(ignore),
            host.ca_trust_path.as_deref(),
        )?);
    }
    Ok(Some(Arc::new(options)))
}

/// The credential that labels a certificate-authenticated connection: the user (the account
/// the certificate maps to) and no password, which is never sent.
fn label(conn: &ConnectionSettings) -> Result<Credential, CliError> {
    let user = conn
        .user
        .as_ref()
        .map_or("certificate", |u| u.value.as_str());
    Credential::new(user, String::new()).map_err(|e| CliError::usage(format!("--user: {e}")))
}

/// The client certificate of `--certificate-file` (and `--certificate-key-file`, else the
/// same file), checked to match its key.
fn load_certificate(conn: &ConnectionSettings) -> Result<ClientCertificate, CliError> {
    let cert = conn.certificate_file.as_ref().ok_or_else(|| {
        CliError::usage("certificate authentication needs --certificate-file (a PEM certificate)")
    })?;
    let key = conn.certificate_key_file.as_ref().unwrap_or(cert);
    ClientCertificate::from_pem_files(&cert.value, &key.value)
        .map_err(|e| crate::settings::invalid("certificate-file", cert, e))
}

/// The TLS client: the system roots plus `--ca-file` (or a host's own bundle), the skips,
/// the pinned thumbprint. `ignore` forces both skips on (`true`) or to the settings
/// (`false`/`None`).
fn tls_client(
    conn: &ConnectionSettings,
    ignore: Option<bool>,
    ca: Option<&std::path::Path>,
) -> Result<TlsClient, CliError> {
    let thumbprint = match &conn.certificate_thumbprint {
        Some(t) => Some(
            Thumbprint::parse(&t.value)
                .map_err(|e| crate::settings::invalid("certificate-thumbprint", t, e))?,
        ),
        None => None,
    };
    let (skip_ca, skip_cn) = match ignore {
        Some(true) => (true, true),
        _ => (conn.skip_ca_check.value, conn.skip_cn_check.value),
    };
    let options = TlsOptions {
        system_roots: true,
        ca_file: ca
            .map(std::path::Path::to_path_buf)
            .or_else(|| conn.ca_file.as_ref().map(|c| c.value.clone())),
        ca_pem: None,
        skip_ca_check: skip_ca,
        skip_cn_check: skip_cn,
        thumbprint,
    };
    TlsClient::new(&options).map_err(|e| match e {
        psfleet_engine::tls::TlsSetupError::CaFile { .. }
        | psfleet_engine::tls::TlsSetupError::CaBundle { .. } => {
            CliError::usage(format!("--ca-file: {e}"))
        }
        other => CliError::Internal(format!("TLS set-up: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;
    use crate::options::ConnectionArgs;
    use crate::settings::Layers;

    fn conn(cli: &[&str]) -> ConnectionSettings {
        use clap::{Args as _, FromArgMatches as _};
        let cmd = ConnectionArgs::augment_args(clap::Command::new("t"));
        let m = cmd
            .try_get_matches_from(std::iter::once("t").chain(cli.iter().copied()))
            .unwrap();
        let args = ConnectionArgs::from_arg_matches(&m).unwrap();
        ConnectionSettings::resolve(&args, Layers::new(&m, &ConfigFile::none())).unwrap()
    }

    fn credential() -> Credential {
        Credential::new("FLEET\\ops", "pw").unwrap()
    }

    #[test]
    fn settings_map_onto_the_engine_options() {
        let c = conn(&[
            "--authentication",
            "ntlm",
            "--encryption",
            "never",
            "--trusted-hosts",
            "*.lab.test, 10.0.0.5",
            "--resolve",
            "srv1.lab.test=127.0.0.9",
            "--operation-timeout",
            "60s",
            "--connect-timeout",
            "5s",
            "--configuration-name",
            "JEA_Ops",
            "--spn-service",
            "WSMAN",
            "--kdc",
            "dc1.lab.test",
        ]);
        let o = client_options(&c, Some(credential())).unwrap();
        assert_eq!(o.auth, EngineAuth::Sspi(Mechanism::Ntlm));
        assert_eq!(o.encryption, Encryption::Never);
        assert!(o.policy.allow_unencrypted);
        assert_eq!(
            o.policy.trusted_hosts.patterns(),
            ["*.lab.test", "10.0.0.5"]
        );
        assert_eq!(
            o.resolver.lookup_override("srv1.lab.test"),
            Some(&["127.0.0.9".parse().unwrap()][..])
        );
        assert_eq!(o.operation_timeout, Duration::from_secs(60));
        assert!(o.request_timeout >= Duration::from_secs(70));
        assert_eq!(o.connect_timeout, Duration::from_secs(5));
        assert_eq!(o.configuration_name, "JEA_Ops");
        assert_eq!(o.kerberos.kdc.as_deref(), Some("dc1.lab.test"));
        assert_eq!(o.kerberos.service_class.as_deref(), Some("WSMAN"));
        let defaults = client_options(&conn(&[]), Some(credential())).unwrap();
        assert_eq!(defaults.auth, EngineAuth::Sspi(Mechanism::Negotiate));
        assert!(!defaults.policy.allow_unencrypted);
        assert_eq!(defaults.encryption, Encryption::Auto);
        let err = client_options(
            &conn(&["--ca-file", "/nonexistent/ca.pem"]),
            Some(credential()),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("--ca-file: "), "{err}");
    }

    #[test]
    fn hosts_that_differ_get_their_own_options() {
        let c = conn(&[]);
        let base = Arc::new(client_options(&c, Some(credential())).unwrap());
        let mut inv = psfleet_inventories::Inventory::default();
        inv.load_str(
            "h.ini",
            "same\nntlm ansible_winrm_transport=ntlm\njea ansible_psrp_configuration_name=JEA\n\
             lab ansible_winrm_server_cert_validation=ignore\n",
            None,
        )
        .unwrap();
        let hosts =
            psfleet_inventories::resolve(&inv, &Default::default(), &Default::default()).unwrap();
        let got: Vec<Option<Arc<ClientOptions>>> = hosts
            .iter()
            .map(|h| for_host(&base, &c, h, None).unwrap())
            .collect();
        assert!(
            got[0].is_none(),
            "the run's options serve a host like the others"
        );
        assert_eq!(
            got[1].as_ref().unwrap().auth,
            EngineAuth::Sspi(Mechanism::Ntlm)
        );
        assert_eq!(got[2].as_ref().unwrap().configuration_name, "JEA");
        assert!(got[3].is_some());
        let err = client_options(
            &conn(&[
                "--use-ssl",
                "--authentication",
                "certificate",
                "--certificate-file",
                "/nonexistent/c.pem",
            ]),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("--certificate-file: "), "{err}");
        let other = Credential::new("FLEET\\other", "pw").unwrap();
        let o = for_host(&base, &c, &hosts[0], Some(other))
            .unwrap()
            .unwrap();
        assert_eq!(o.credential.user(), "FLEET\\other");
    }
}
