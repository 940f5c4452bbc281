//! From the settings to the hosts of a run: load the inventories (`psfleet_inventories`),
//! apply `--limit` and the connection settings, and resolve every host's endpoint.
//!
//! Precedence (docs/cli.md, "Inventories and the connection options"): options given **on
//! the command line** beat every inventory variable (the inventories crate's `Overrides`);
//! options from PSFLEET_* variables and psfleet.toml are defaults that inventory variables
//! (host, then group) beat (its `Defaults`). A psfleet.toml saying `use-ssl = true` is a
//! fleet-wide default; an inventory saying one host listens on HTTP is more specific.

use std::collections::BTreeMap;
use std::path::PathBuf;

use psfleet_inventories::{
    Authentication, CertValidation, Defaults, Host, Overrides, Pattern, Scheme, SecretRef,
};

use crate::exit::CliError;
use crate::options::AuthMethod;
use crate::settings::{ConnectionSettings, Origin, Selection, Setting};

/// The hosts of a run, and what loading them found.
#[derive(Debug, Clone)]
pub struct LoadedHosts {
    /// The selected hosts, in inventory (or `--limit`) order.
    pub hosts: Vec<Host>,
    /// Warnings: inventory oddities and `--limit` terms that matched nothing.
    pub warnings: Vec<String>,
    /// Hosts in the inventories before `--limit`.
    pub inventory_hosts: usize,
    /// Groups in the inventories.
    pub groups: usize,
    /// SHA-256 over the selected hosts' names and URLs: runs of the same selection compare
    /// ("what changed since the previous run").
    pub digest: String,
}

/// Loads the inventories of `select` and resolves the hosts under `conn`.
pub fn load(select: &Selection, conn: &ConnectionSettings) -> Result<LoadedHosts, CliError> {
    let sources = select.require_inventory()?;
    let format = select.inventory_format.as_ref().map(|f| f.value.format());
    let inventory = psfleet_inventories::load(sources, format)
        .map_err(|e| CliError::Inventory(e.to_string()))?;
    let limit = match &select.limit {
        Some(limit) => Some(
            Pattern::parse(&limit.value)
                .map_err(|e| CliError::Inventory(format!("--limit: {e}")))?,
        ),
        None => None,
    };
    let mut warnings: Vec<String> = inventory
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Some(pattern) = &limit {
        for term in pattern.unmatched_terms(&inventory) {
            warnings.push(format!(
                "--limit: warning: could not match supplied host pattern '{term}'"
            ));
        }
    }
    let (overrides, defaults) = overrides_and_defaults(conn, limit, select);
    let hosts = psfleet_inventories::resolve(&inventory, &overrides, &defaults)
        .map_err(|e| CliError::Inventory(e.to_string()))?;
    let mut listing: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}\t{}\n", h.name.to_ascii_lowercase(), h.url()))
        .collect();
    listing.sort();
    let digest = psfleet_engine::journal::sha256_hex(listing.concat().as_bytes());
    Ok(LoadedHosts {
        hosts,
        warnings,
        inventory_hosts: inventory.len(),
        groups: inventory.groups().len(),
        digest,
    })
}

/// The inventories crate's authentication for psfleet's option value.
pub fn authentication(method: AuthMethod) -> Authentication {
    match method {
        AuthMethod::Basic => Authentication::Basic,
        AuthMethod::Ntlm => Authentication::Ntlm,
        AuthMethod::Negotiate => Authentication::Negotiate,
        AuthMethod::Kerberos => Authentication::Kerberos,
        AuthMethod::Credssp => Authentication::CredSsp,
        AuthMethod::Certificate => Authentication::Certificate,
    }
}

/// Splits the connection settings: command-line values become overrides, the rest
/// defaults.
pub fn overrides_and_defaults(
    conn: &ConnectionSettings,
    limit: Option<Pattern>,
    select: &Selection,
) -> (Overrides, Defaults) {
    fn cli<T: Clone>(s: &Setting<T>) -> Option<T> {
        (s.origin == Origin::CommandLine).then(|| s.value.clone())
    }
    fn cli_opt<T: Clone>(s: Option<&Setting<T>>) -> Option<T> {
        s.and_then(cli)
    }
    let scheme = |https: bool| if https { Scheme::Https } else { Scheme::Http };
    let path = format!("/{}", conn.url_prefix.value);
    let skip_both = conn.skip_ca_check.value && conn.skip_cn_check.value;
    let both_from_cli = conn.skip_ca_check.origin == Origin::CommandLine
        && conn.skip_cn_check.origin == Origin::CommandLine;
    let overrides = Overrides {
        limit,
        port: cli_opt(conn.port.as_ref()),
        scheme: cli(&conn.use_ssl).map(scheme),
        authentication: cli(&conn.authentication).map(authentication),
        user: cli_opt(conn.user.as_ref()),
        password: cli_opt(conn.password_file.as_ref()).map(SecretRef::File),
        configuration_name: cli(&conn.configuration_name),
        path: (conn.url_prefix.origin == Origin::CommandLine).then(|| path.clone()),
        cert_validation: (skip_both && both_from_cli).then_some(CertValidation::Ignore),
        ca_trust_path: cli_opt(conn.ca_file.as_ref()),
        vars: select
            .extra_vars
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect::<BTreeMap<_, _>>(),
    };
    let defaults = Defaults {
        scheme: scheme(conn.use_ssl.value),
        port: conn.port.as_ref().map(|p| p.value),
        authentication: authentication(conn.authentication.value),
        user: conn.user.as_ref().map(|u| u.value.clone()),
        configuration_name: conn.configuration_name.value.clone(),
        path,
        cert_validation: if skip_both {
            CertValidation::Ignore
        } else {
            CertValidation::Validate
        },
    };
    (overrides, defaults)
}

/// A secret reference as inventories write it.
pub fn secret_ref_text(secret: &SecretRef) -> String {
    match secret {
        SecretRef::Env(name) => format!("env:{name}"),
        SecretRef::File(path) => format!("file:{}", path.display()),
        SecretRef::Prompt => "prompt".to_owned(),
        SecretRef::KerberosCache => "kerberos-cache".to_owned(),
    }
}

/// A host as a JSON object (`psfleet inventory list -o json`): its resolved settings,
/// password references but never passwords.
pub fn host_json(host: &Host) -> serde_json::Value {
    serde_json::json!({
        "name": host.name,
        "url": host.url(),
        "address": host.address.as_ref().map(ToString::to_string),
        "port": host.port,
        "scheme": host.scheme.to_string(),
        "authentication": host.authentication.to_string(),
        "user": host.user,
        "password": host.password.as_ref().map(secret_ref_text),
        "configuration_name": host.configuration_name,
        "path": host.path,
        "cert_validation": match host.cert_validation {
            CertValidation::Validate => "validate",
            CertValidation::Ignore => "ignore",
        },
        "ca_trust_path": host.ca_trust_path.as_ref().map(|p: &PathBuf| p.display().to_string()),
        "groups": host.groups,
        "vars": host.vars,
        "source": host.source.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{ConnectionArgs, SelectArgs};

    fn settings(cli: &[&str], file: &str) -> (ConnectionSettings, Selection) {
        use clap::{Args as _, FromArgMatches as _};
        let cmd = SelectArgs::augment_args(ConnectionArgs::augment_args(clap::Command::new("t")));
        let matches = cmd
            .try_get_matches_from(std::iter::once("t").chain(cli.iter().copied()))
            .unwrap();
        let conn_args = ConnectionArgs::from_arg_matches(&matches).unwrap();
        let select_args = SelectArgs::from_arg_matches(&matches).unwrap();
        let config = crate::config::ConfigFile::parse(
            std::path::Path::new("/p/psfleet.toml"),
            file.to_owned(),
        )
        .unwrap();
        let layers = crate::settings::Layers::new(&matches, &config);
        (
            ConnectionSettings::resolve(&conn_args, layers).unwrap(),
            Selection::resolve(&select_args, layers).unwrap(),
        )
    }

    fn hosts(cli: &[&str], file: &str, inventory: &str) -> Vec<Host> {
        let (conn, select) = settings(cli, file);
        let mut inv = psfleet_inventories::Inventory::default();
        inv.load_str("hosts.ini", inventory, None).unwrap();
        let (overrides, defaults) = overrides_and_defaults(&conn, None, &select);
        psfleet_inventories::resolve(&inv, &overrides, &defaults).unwrap()
    }

    const INVENTORY: &str = "[web]\nweb1 ansible_port=5999 ansible_user=inv-user\nweb2\n";

    #[test]
    fn the_command_line_beats_inventory_variables_which_beat_the_file() {
        // psfleet.toml: a default; the inventory's host variables win.
        let h = hosts(
            &[],
            "port = 7000\nuser = \"file-user\"\nuse-ssl = true\n",
            INVENTORY,
        );
        assert_eq!((h[0].port, h[0].user.as_deref()), (5999, Some("inv-user")));
        assert_eq!((h[1].port, h[1].user.as_deref()), (7000, Some("file-user")));
        assert_eq!(h[1].url(), "https://web2:7000/wsman");
        // The command line: beats the inventory too.
        let h = hosts(
            &[
                "--port",
                "8000",
                "--user",
                "cli-user",
                "--url-prefix",
                "custom/ws",
                "-e",
                "owner=ops",
            ],
            "",
            INVENTORY,
        );
        assert_eq!((h[0].port, h[0].user.as_deref()), (8000, Some("cli-user")));
        assert_eq!(h[0].url(), "http://web1:8000/custom/ws");
        assert_eq!(h[1].vars.get("owner").map(String::as_str), Some("ops"));
        // --password-file on the command line becomes every host's password reference.
        let h = hosts(
            &["--password-file", "/run/pw"],
            "",
            "[web]\nweb1 ansible_password=env:WEB_PW\n",
        );
        assert_eq!(h[0].password, Some(SecretRef::File("/run/pw".into())));
        let h = hosts(
            &[],
            "password-file = \"/run/pw\"\n",
            "[web]\nweb1 ansible_password=env:WEB_PW\n",
        );
        assert_eq!(h[0].password, Some(SecretRef::Env("WEB_PW".into())));
        let json = host_json(&h[0]);
        assert_eq!(json["password"], "env:WEB_PW");
        assert_eq!(json["groups"], serde_json::json!(["web", "all"]));
    }

    #[test]
    fn skipping_both_certificate_checks_ignores_validation() {
        let h = hosts(&["--skip-ca-check", "--skip-cn-check"], "", INVENTORY);
        assert_eq!(h[0].cert_validation, CertValidation::Ignore);
        let h = hosts(&["--skip-ca-check"], "", INVENTORY);
        assert_eq!(h[0].cert_validation, CertValidation::Validate);
    }
}
