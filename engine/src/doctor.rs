//! `psfleet doctor HOST`: a step-by-step diagnosis of one host, each step passing or naming
//! the documented reason ([`Bucket`]) and its fix, in the order a connection meets them:
//!
//! 1. `name`: the RFC 1123 check behind HostContainsInvalidCharacters (wire-facts 1.7);
//! 2. `dns`: resolution, or the inventory address / `--resolve` override that replaces it
//!    (InvalidDNS);
//! 3. `tcp-http`, `tcp-https`: TCP to the HTTP (5985) and HTTPS (5986) listeners; refused is
//!    InvalidPort, no answer InvalidHostName (wire-facts 1.7). The port the connection does
//!    not use only warns;
//! 4. `tls`: the HTTPS listener's certificate: chain, name and validity as the client checks
//!    them (InvalidCertificate, wire-facts 1.8), with the certificate's subject, SANs,
//!    issuer, dates and thumbprint;
//! 5. `identify`: an unauthenticated `wsmid:Identify` (MS-WSMV 3.1.4.1.23): the product
//!    version, or why the listener is not WinRM: a TLS listener reached over HTTP
//!    (InvalidProtocol), no answer (Timeout), something else on the port (ProtocolError);
//! 6. `auth-schemes`: the schemes an unauthenticated POST's 401 offers, and whether the
//!    chosen one is among them (AccessDenied, "… Authentication is disabled on the Host's
//!    WinRM service", wire-facts 1.2);
//! 7. `trusted-hosts`: the Windows client's rule for IP-address targets (InvalidHostIPAddress,
//!    wire-facts 1.6);
//! 8. `authentication`: the full exchange and an authenticated Identify (InvalidCredentials,
//!    InvalidDomain, ClientAuthenticationDisabled, AccessDenied);
//! 9. `encryption`: how messages are protected (TLS, message encryption, or plaintext, which
//!    this client or the host may refuse: ClientAuthenticationDisabled, EncryptionRequired,
//!    wire-facts 1.3);
//! 10. `configuration`: a Create of the runspace pool on the session configuration, deleted
//!     again (InvalidPSConfiguration, AccessDenied, QuotaExceeded, ModuleLoadFailure);
//! 11. `quotas`: the WinRM configuration (MaxShellsPerUser and the other quotas, a WS-Transfer
//!     Get, wire-facts 2.3) and the shells the account has open (Enumerate) against the
//!     quota (QuotaExceeded).
//!
//! A step that an earlier failure makes meaningless is skipped, saying which one. The
//! [`Diagnosis`] holds every step and the facts learned, and serialises to JSON.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request as HttpRequest, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use psfleet_core::taxonomy::Bucket;
use psfleet_core::wsman::{IdentifyRequest, IdentifyResponse, ShellInfo, WinrmConfig, resources};
use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::ClientError;
use crate::http::{self as transport, AuthMethod, ConnectionConfig, TransportError};
use crate::ops::{ClientOptions, HostClient};
use crate::session::{RemoteSession, SessionError};
use crate::target::{Endpoint, Host, Scheme, TargetError};
use crate::tls::{TlsClient, TlsFailure, TlsOptions};

/// Most SANs listed for one certificate.
const MAX_SANS: usize = 32;

/// Time allowed to open the runspace pool in the configuration step (on top of the
/// request timeout of each request).
const POOL_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// What to diagnose: the host as the operator gave it and how the connection is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorTarget {
    /// The host as given (checked by the first step).
    pub host: String,
    /// Connect to this address instead of resolving the name (the inventory address).
    pub address: Option<IpAddr>,
    /// HTTP or HTTPS: the scheme the connection uses.
    pub scheme: Scheme,
    /// The port the connection uses; the scheme's WinRM port when `None`.
    pub port: Option<u16>,
    /// The listener path; `/wsman` when `None`.
    pub path: Option<String>,
}

impl DoctorTarget {
    /// `host` over `scheme` on the default port and path.
    pub fn new(host: impl Into<String>, scheme: Scheme) -> Self {
        Self {
            host: host.into(),
            address: None,
            scheme,
            port: None,
            path: None,
        }
    }

    /// The same target with the inventory address.
    pub fn with_address(mut self, address: IpAddr) -> Self {
        self.address = Some(address);
        self
    }

    /// The same target on another port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
}

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepId {
    /// The host name check.
    Name,
    /// Name resolution.
    Dns,
    /// TCP to the HTTP listener port.
    TcpHttp,
    /// TCP to the HTTPS listener port.
    TcpHttps,
    /// The HTTPS listener's certificate.
    Tls,
    /// Unauthenticated Identify.
    Identify,
    /// The schemes offered in the 401.
    AuthSchemes,
    /// The trusted-hosts rule for IP-address targets.
    TrustedHosts,
    /// Authentication.
    Authentication,
    /// Message protection.
    Encryption,
    /// The session configuration (a runspace pool Create).
    Configuration,
    /// Quotas and open shells.
    Quotas,
}

impl StepId {
    /// Every step, in order.
    pub const ALL: [StepId; 12] = [
        StepId::Name,
        StepId::Dns,
        StepId::TcpHttp,
        StepId::TcpHttps,
        StepId::Tls,
        StepId::Identify,
        StepId::AuthSchemes,
        StepId::TrustedHosts,
        StepId::Authentication,
        StepId::Encryption,
        StepId::Configuration,
        StepId::Quotas,
    ];

    /// The stable name (`dns`, `tcp-http`, ...), as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            StepId::Name => "name",
            StepId::Dns => "dns",
            StepId::TcpHttp => "tcp-http",
            StepId::TcpHttps => "tcp-https",
            StepId::Tls => "tls",
            StepId::Identify => "identify",
            StepId::AuthSchemes => "auth-schemes",
            StepId::TrustedHosts => "trusted-hosts",
            StepId::Authentication => "authentication",
            StepId::Encryption => "encryption",
            StepId::Configuration => "configuration",
            StepId::Quotas => "quotas",
        }
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A step's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The check passed.
    Pass,
    /// Something to know that does not stop the connection.
    Warn,
    /// The check failed: the bucket and fix say why and what to do.
    Fail,
    /// Not run: an earlier step makes it meaningless (the detail says which).
    Skip,
}

impl Status {
    /// `PASS`, `WARN`, `FAIL`, `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One step of a diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Which step.
    #[serde(rename = "step")]
    pub id: StepId,
    /// Its title (`TCP 5985 (HTTP)`).
    pub title: String,
    /// The verdict.
    pub status: Status,
    /// What was found (may span lines).
    pub detail: String,
    /// The documented reason of a failure (or of a warning about the unused listener).
    #[serde(serialize_with = "bucket_name")]
    pub bucket: Option<Bucket>,
    /// The documented message for the bucket.
    pub message: Option<String>,
    /// How to fix it.
    pub fix: Option<String>,
}

impl Step {
    fn new(
        id: StepId,
        title: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            id,
            title: title.into(),
            status,
            detail: detail.into(),
            bucket: None,
            message: None,
            fix: None,
        }
    }

    fn pass(id: StepId, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, title, Status::Pass, detail)
    }

    fn warn(id: StepId, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, title, Status::Warn, detail)
    }

    fn skip(id: StepId, title: impl Into<String>, why: impl Into<String>) -> Self {
        Self::new(id, title, Status::Skip, why)
    }

    /// A failure in `bucket`, with the documented message for `host` (`message_detail`
    /// fills its blank: the port, mechanism, configuration ...) and the fix.
    fn fail(
        id: StepId,
        title: impl Into<String>,
        detail: impl Into<String>,
        bucket: Option<Bucket>,
        host: &str,
        message_detail: &str,
    ) -> Self {
        let mut step = Self::new(id, title, Status::Fail, detail);
        step.set_bucket(bucket, host, message_detail);
        step
    }

    fn set_bucket(&mut self, bucket: Option<Bucket>, host: &str, message_detail: &str) {
        self.bucket = bucket;
        self.message = bucket.map(|b| b.message(host, message_detail));
        self.fix = bucket.map(|b| b.how_to_fix().to_owned());
    }
}

impl fmt::Display for Step {
    /// `[FAIL] DNS: cannot resolve ...`, then the reason and the fix on their own lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = self.detail.lines();
        write!(
            f,
            "[{}] {}: {}",
            self.status.label(),
            self.title,
            lines.next().unwrap_or_default()
        )?;
        for line in lines {
            write!(f, "\n       {line}")?;
        }
        if let Some(bucket) = self.bucket {
            write!(f, "\n       reason: {bucket}")?;
            if let Some(message) = &self.message {
                write!(f, ": {message}")?;
            }
        }
        if let Some(fix) = &self.fix {
            write!(f, "\n       fix: {fix}")?;
        }
        Ok(())
    }
}

/// What the diagnosis learned about the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// The addresses tried.
    pub addresses: Vec<String>,
    /// The HTTPS listener's certificate.
    pub certificate: Option<CertificateInfo>,
    /// `wsmid:ProductVersion` from the unauthenticated Identify.
    pub product_version: Option<String>,
    /// `wsmid:ProductVendor`.
    pub product_vendor: Option<String>,
    /// The schemes the 401 offered.
    pub offered_schemes: Vec<String>,
    /// `$PSVersionTable.PSVersion` of the runspace pool.
    pub ps_version: Option<String>,
    /// The WinRM configuration, when the account may read it.
    pub config: Option<ConfigFacts>,
    /// The shells the account has open (Enumerate).
    pub open_shells: Option<usize>,
}

/// The WinRM configuration values the diagnosis reports (`winrm get winrm/config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigFacts {
    /// `Winrs/MaxShellsPerUser`.
    pub max_shells_per_user: Option<u32>,
    /// `Service/MaxConcurrentOperationsPerUser`.
    pub max_concurrent_operations_per_user: Option<u32>,
    /// `Winrs/MaxConcurrentUsers`.
    pub max_concurrent_users: Option<u32>,
    /// `Winrs/MaxProcessesPerShell`.
    pub max_processes_per_shell: Option<u32>,
    /// `Winrs/MaxMemoryPerShellMB`.
    pub max_memory_per_shell_mb: Option<u32>,
    /// `Winrs/IdleTimeout` in milliseconds.
    pub idle_timeout_ms: Option<u32>,
    /// `MaxEnvelopeSizekb`.
    pub max_envelope_size_kb: Option<u32>,
    /// `Service/AllowUnencrypted`.
    pub allow_unencrypted: Option<bool>,
    /// `Service/Auth/Basic`.
    pub basic: Option<bool>,
    /// `Service/Auth/CbtHardeningLevel`.
    pub cbt_hardening_level: Option<String>,
}

impl ConfigFacts {
    fn from_config(config: &WinrmConfig) -> Self {
        let winrs = config.winrs.as_ref();
        let service = config.service.as_ref();
        let auth = service.and_then(|s| s.auth.as_ref());
        Self {
            max_shells_per_user: winrs.and_then(|w| w.max_shells_per_user),
            max_concurrent_operations_per_user: service
                .and_then(|s| s.max_concurrent_operations_per_user),
            max_concurrent_users: winrs.and_then(|w| w.max_concurrent_users),
            max_processes_per_shell: winrs.and_then(|w| w.max_processes_per_shell),
            max_memory_per_shell_mb: winrs.and_then(|w| w.max_memory_per_shell_mb),
            idle_timeout_ms: winrs.and_then(|w| w.idle_timeout_ms),
            max_envelope_size_kb: config.max_envelope_size_kb,
            allow_unencrypted: service.and_then(|s| s.allow_unencrypted),
            basic: auth.and_then(|a| a.basic),
            cbt_hardening_level: auth
                .and_then(|a| a.cbt_hardening_level.as_ref())
                .map(|l| format!("{l:?}")),
        }
    }

    /// `MaxShellsPerUser 2, MaxConcurrentOperationsPerUser 15, ...` (the values present).
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, value: Option<u32>| {
            if let Some(value) = value {
                parts.push(format!("{name} {value}"));
            }
        };
        add("MaxShellsPerUser", self.max_shells_per_user);
        add(
            "MaxConcurrentOperationsPerUser",
            self.max_concurrent_operations_per_user,
        );
        add("MaxConcurrentUsers", self.max_concurrent_users);
        add("MaxProcessesPerShell", self.max_processes_per_shell);
        add("MaxMemoryPerShellMB", self.max_memory_per_shell_mb);
        add("IdleTimeout(ms)", self.idle_timeout_ms);
        add("MaxEnvelopeSizekb", self.max_envelope_size_kb);
        parts.join(", ")
    }
}

/// A server certificate, as the diagnosis prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    /// The subject (`CN=srv0001.fleet.test`).
    pub subject: String,
    /// The subject alternative names (`DNS:name`, `IP:address`).
    pub subject_alternative_names: Vec<String>,
    /// The issuer.
    pub issuer: String,
    /// Start of validity (UTC).
    pub not_before: String,
    /// End of validity (UTC).
    pub not_after: String,
    /// The SHA-1 thumbprint, as Windows shows it (`Get-ChildItem Cert:`).
    pub thumbprint: String,
    /// The SHA-256 thumbprint.
    pub thumbprint_sha256: String,
    /// Issuer and subject are the same.
    pub self_signed: bool,
    /// Outside its validity period now.
    pub expired_or_not_yet_valid: bool,
    /// A SAN (or, without SANs, the CN) matches the name connected to.
    pub matches_name: bool,
}

impl CertificateInfo {
    fn lines(&self) -> String {
        let sans = if self.subject_alternative_names.is_empty() {
            "(none)".to_owned()
        } else {
            self.subject_alternative_names.join(", ")
        };
        format!(
            "subject: {}\nSAN: {sans}\nissuer: {}{}\nvalid: {} to {}\nthumbprint: {} (SHA-1)",
            self.subject,
            self.issuer,
            if self.self_signed {
                " (self-signed)"
            } else {
                ""
            },
            self.not_before,
            self.not_after,
            self.thumbprint
        )
    }
}

/// The result: every step and what was learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// The host as given.
    pub host: String,
    /// The endpoint URL, once the name passed.
    pub endpoint: Option<String>,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// What was learned.
    pub facts: HostFacts,
}

impl Diagnosis {
    /// The first failed step, if any.
    pub fn first_failure(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.status == Status::Fail)
    }

    /// The bucket of the first failed step.
    pub fn bucket(&self) -> Option<Bucket> {
        self.first_failure().and_then(|s| s.bucket)
    }

    /// True when no step failed.
    pub fn passed(&self) -> bool {
        self.first_failure().is_none()
    }

    /// The step `id`.
    pub fn step(&self, id: StepId) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// Runs every step against `target` with `options` (the same options a run uses:
/// authentication, credential, TLS, resolver, policy, timeouts, configuration name),
/// calling `report` as each step ends.
pub async fn diagnose(
    target: &DoctorTarget,
    options: &ClientOptions,
    report: impl FnMut(&Step),
) -> Diagnosis {
    let mut doctor = Doctor {
        target,
        options,
        report,
        steps: Vec::new(),
        facts: HostFacts::default(),
        host: target.host.clone(),
    };
    let endpoint = doctor.run().await;
    Diagnosis {
        host: target.host.clone(),
        endpoint: endpoint.map(|e| e.url()),
        steps: doctor.steps,
        facts: doctor.facts,
    }
}

/// The state of one diagnosis.
struct Doctor<'a, F> {
    target: &'a DoctorTarget,
    options: &'a ClientOptions,
    report: F,
    steps: Vec<Step>,
    facts: HostFacts,
    /// The host text for the documented messages.
    host: String,
}

/// How a TCP probe went.
enum TcpOutcome {
    Open(SocketAddr),
    Refused(SocketAddr),
    TimedOut(SocketAddr),
    Failed(SocketAddr, io::Error),
    NoAddress,
}

impl<F: FnMut(&Step)> Doctor<'_, F> {
    /// Runs the steps; returns the endpoint once the name passed.
    async fn run(&mut self) -> Option<Endpoint> {
        // 1. The name.
        let endpoint = match self.endpoint() {
            Ok(endpoint) => {
                let kind = if endpoint.host.is_ip() {
                    "an IP address"
                } else {
                    "a valid host name (RFC 1123)"
                };
                self.push(Step::pass(
                    StepId::Name,
                    "Host name",
                    format!("{} is {kind}", self.target.host),
                ));
                endpoint
            }
            Err(error) => {
                let step = Step::fail(
                    StepId::Name,
                    "Host name",
                    error.to_string(),
                    error.bucket(),
                    &self.host,
                    "",
                );
                self.push(step);
                self.skip_rest("the host name is not valid");
                return None;
            }
        };
        let url_host = endpoint.host.to_string();

        // 2. DNS.
        let Some(addresses) = self.dns(&endpoint).await else {
            self.skip_rest("the name does not resolve");
            return Some(endpoint);
        };

        // 3. TCP to both listeners.
        let (http_port, https_port) = match endpoint.scheme {
            Scheme::Http => (endpoint.port, Scheme::Https.default_port()),
            Scheme::Https => (Scheme::Http.default_port(), endpoint.port),
        };
        let timeout = self.options.connect_timeout;
        let http = probe_port(http_port, &addresses, timeout).await;
        let https = if https_port == http_port {
            None
        } else {
            Some(probe_port(https_port, &addresses, timeout).await)
        };
        let https_open = https
            .as_ref()
            .is_some_and(|o| matches!(o, TcpOutcome::Open(_)));
        let http_open = matches!(http, TcpOutcome::Open(_));
        let http = self.tcp(
            StepId::TcpHttp,
            Scheme::Http,
            http_port,
            &endpoint,
            http,
            https_open.then_some(https_port),
        );
        let https = match https {
            None => {
                self.push(Step::skip(
                    StepId::TcpHttps,
                    format!("TCP {https_port} (HTTPS)"),
                    format!("the connection uses port {https_port} over HTTP (checked above)"),
                ));
                None
            }
            Some(outcome) => self.tcp(
                StepId::TcpHttps,
                Scheme::Https,
                https_port,
                &endpoint,
                outcome,
                http_open.then_some(http_port),
            ),
        };
        let used = match endpoint.scheme {
            Scheme::Http => http,
            Scheme::Https => https,
        };
        let Some(address) = used else {
            self.skip_rest(&format!("nothing answers on port {}", endpoint.port));
            return Some(endpoint);
        };

        // 4. TLS.
        let tls_ok = self.tls(&endpoint, https.map(|a| (a, https_port))).await;
        if !tls_ok {
            self.skip_rest("the certificate is not accepted");
            return Some(endpoint);
        }

        // 5. Identify.
        let config = self.connection_config(&endpoint, address.ip());
        if !self.identify(&endpoint, &config, address).await {
            self.skip_rest("the listener does not answer as WinRM");
            return Some(endpoint);
        }

        // 6. Offered schemes.
        if !self.auth_schemes(&endpoint, address).await {
            self.skip_rest("the host does not offer the authentication method");
            return Some(endpoint);
        }

        // 7. Trusted hosts.
        if !self.trusted_hosts(&endpoint) {
            self.skip_rest("this client will not send credentials to the target");
            return Some(endpoint);
        }

        // 8, 9. Authentication and encryption.
        let Some(mut client) = self.authenticate(&endpoint, address.ip(), &url_host).await else {
            return Some(endpoint);
        };

        // 10. The session configuration.
        self.configuration(&mut client).await;

        // 11. Quotas.
        self.quotas(&mut client).await;
        Some(endpoint)
    }

    fn endpoint(&self) -> Result<Endpoint, TargetError> {
        let mut endpoint = Endpoint::new(&self.target.host, self.target.scheme)?;
        if let Some(port) = self.target.port {
            endpoint = endpoint.with_port(port);
        }
        if let Some(path) = &self.target.path {
            endpoint = endpoint.with_path(path)?;
        }
        Ok(endpoint)
    }

    async fn dns(&mut self, endpoint: &Endpoint) -> Option<Vec<SocketAddr>> {
        let title = "DNS";
        let port = endpoint.port;
        if let Some(address) = self.target.address {
            self.facts.addresses = vec![address.to_string()];
            self.push(Step::pass(
                StepId::Dns,
                title,
                format!("connecting to {address}, the inventory address (DNS is not consulted)"),
            ));
            return Some(vec![SocketAddr::new(address, port)]);
        }
        match &endpoint.host {
            Host::Ip(ip) => {
                self.facts.addresses = vec![ip.to_string()];
                self.push(Step::pass(
                    StepId::Dns,
                    title,
                    "an IP address: nothing to resolve",
                ));
                Some(vec![SocketAddr::new(*ip, port)])
            }
            Host::Name(name) => {
                let overridden = self.options.resolver.lookup_override(name).is_some();
                match self.options.resolver.resolve(&endpoint.host, port).await {
                    Ok(addrs) => {
                        let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                        let how = if overridden {
                            "the --resolve override gives"
                        } else {
                            "resolves to"
                        };
                        self.push(Step::pass(
                            StepId::Dns,
                            title,
                            format!("{name} {how} {}", list.join(", ")),
                        ));
                        self.facts.addresses = list;
                        Some(addrs)
                    }
                    Err(error) => {
                        let step = Step::fail(
                            StepId::Dns,
                            title,
                            format!("cannot resolve {name}: {}", error.source),
                            Some(Bucket::InvalidDns),
                            &self.host,
                            "",
                        );
                        self.push(step);
                        None
                    }
                }
            }
        }
    }

    /// Reports a TCP probe of `port`; the step fails (or, for the listener the connection
    /// does not use, warns) when nothing answered. `other_open` is the other listener's
    /// port when it answered (a hint about the scheme).
    fn tcp(
        &mut self,
        id: StepId,
        scheme: Scheme,
        port: u16,
        endpoint: &Endpoint,
        outcome: TcpOutcome,
        other_open: Option<u16>,
    ) -> Option<SocketAddr> {
        let title = format!("TCP {port} ({})", scheme.as_str().to_uppercase());
        let used = scheme == endpoint.scheme;
        let (mut detail, bucket) = match outcome {
            TcpOutcome::Open(addr) => {
                let role = if used {
                    "the connection's listener"
                } else {
                    "not used by this connection"
                };
                self.push(Step::pass(
                    id,
                    title,
                    format!("{addr} accepts connections ({role})"),
                ));
                return Some(addr);
            }
            TcpOutcome::Refused(addr) => (
                format!("{addr} refused the connection: nothing listens on port {port}"),
                Bucket::InvalidPort,
            ),
            TcpOutcome::TimedOut(addr) => (
                format!(
                    "{addr} did not answer within {:?}: the host is down or a firewall drops the port",
                    self.options.connect_timeout
                ),
                Bucket::InvalidHostName,
            ),
            TcpOutcome::Failed(addr, error) => (
                format!("cannot connect to {addr}: {error}"),
                Bucket::InvalidHostName,
            ),
            TcpOutcome::NoAddress => ("no address to try".to_owned(), Bucket::InvalidHostName),
        };
        if used {
            if let Some(other) = other_open {
                let advice = match scheme {
                    Scheme::Http => "the host may listen for HTTPS only: try --use-ssl",
                    Scheme::Https => "the host may listen for HTTP only",
                };
                detail.push_str(&format!("; port {other} accepts connections ({advice})"));
            }
            let step = Step::fail(
                id,
                title,
                detail,
                Some(bucket),
                &self.host,
                &port.to_string(),
            );
            self.push(step);
        } else {
            let listener = if scheme == Scheme::Https {
                "HTTPS"
            } else {
                "HTTP"
            };
            self.push(Step::warn(
                id,
                title,
                format!("{detail} (no {listener} listener; this connection does not need one)"),
            ));
        }
        None
    }

    /// Checks the HTTPS listener's certificate; false when the connection cannot go on.
    async fn tls(&mut self, endpoint: &Endpoint, https: Option<(SocketAddr, u16)>) -> bool {
        let title = "TLS certificate";
        let used = endpoint.scheme == Scheme::Https;
        let Some((address, port)) = https else {
            let why = if used {
                "no HTTPS listener"
            } else {
                "the connection uses HTTP and no HTTPS listener answers"
            };
            self.push(Step::skip(StepId::Tls, title, why));
            return true;
        };
        let name = endpoint.host.to_string();
        let timeout = self.options.connect_timeout;
        // First the certificate itself, whatever it is (nothing is sent on this handshake).
        let certificate = match capture_certificate(address, &name, timeout).await {
            Ok(der) => {
                let info = certificate_info(&der, &endpoint.host);
                self.facts.certificate = info.clone();
                info
            }
            Err(failure) => {
                let bucket = tls_bucket(address, &failure);
                let detail = format!("no TLS handshake with {address}: {failure}");
                if used {
                    let step = Step::fail(
                        StepId::Tls,
                        title,
                        detail,
                        Some(bucket),
                        &self.host,
                        &port.to_string(),
                    );
                    self.push(step);
                    return false;
                }
                self.push(Step::warn(
                    StepId::Tls,
                    title,
                    format!("{detail} (not used by this connection)"),
                ));
                return true;
            }
        };
        let cert_text = certificate.as_ref().map_or_else(
            || "the certificate could not be read".to_owned(),
            CertificateInfo::lines,
        );
        // Then the checks the client makes: chain, name, validity, pin.
        let verdict = match self.tls_client() {
            Ok(client) => match TcpStream::connect(address).await {
                Ok(tcp) => match tokio::time::timeout(timeout, client.connect(&name, tcp)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(failure)) => Err(failure),
                    Err(_) => Err(TlsFailure::Handshake(format!(
                        "no handshake within {timeout:?}"
                    ))),
                },
                Err(error) => Err(TlsFailure::Handshake(error.to_string())),
            },
            Err(error) => Err(TlsFailure::Handshake(format!("TLS set-up: {error}"))),
        };
        match verdict {
            Ok(()) => {
                self.push(Step::pass(
                    StepId::Tls,
                    title,
                    format!("trusted, valid now and issued for {name}\n{cert_text}"),
                ));
                true
            }
            Err(failure) if used => {
                let bucket = tls_bucket(address, &failure);
                let step = Step::fail(
                    StepId::Tls,
                    title,
                    format!("{failure}\n{cert_text}"),
                    Some(bucket),
                    &self.host,
                    &failure.to_string(),
                );
                self.push(step);
                false
            }
            Err(failure) => {
                self.push(Step::warn(
                    StepId::Tls,
                    title,
                    format!("{failure} (this connection uses HTTP)\n{cert_text}"),
                ));
                true
            }
        }
    }

    /// Unauthenticated Identify; false when the listener is not a usable WinRM one.
    async fn identify(
        &mut self,
        endpoint: &Endpoint,
        config: &ConnectionConfig,
        address: SocketAddr,
    ) -> bool {
        let title = "WinRM Identify";
        let body = IdentifyRequest.to_xml();
        let result = transport::identify_unauthenticated(config, &body).await;
        let failure = match result {
            Ok(reply) => match IdentifyResponse::parse(&reply.body) {
                Ok(identity) => {
                    self.facts
                        .product_vendor
                        .clone_from(&identity.product_vendor);
                    self.facts
                        .product_version
                        .clone_from(&identity.product_version);
                    let what = [
                        identity.product_vendor.as_deref(),
                        identity.product_version.as_deref(),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ");
                    self.push(Step::pass(
                        StepId::Identify,
                        title,
                        format!(
                            "WS-Management answers at {}: {}",
                            endpoint.url(),
                            if what.is_empty() {
                                "no product version given"
                            } else {
                                &what
                            }
                        ),
                    ));
                    return true;
                }
                Err(error) => {
                    let step = Step::fail(
                        StepId::Identify,
                        title,
                        format!(
                            "the answer is not a WS-Management Identify reply ({error}): something else listens on port {}",
                            endpoint.port
                        ),
                        Some(Bucket::ProtocolError),
                        &self.host,
                        "not a WS-Management reply",
                    );
                    self.push(step);
                    return false;
                }
            },
            Err(error) => error,
        };
        // Plain HTTP to a TLS listener is closed without a word (wire-facts 1.8): ask the
        // port for a TLS handshake to tell that from a broken listener.
        let closed_unanswered = matches!(
            failure,
            TransportError::ConnectionClosed { .. }
                | TransportError::Protocol {
                    violation: transport::ProtocolViolation::MalformedHttp,
                    ..
                }
        );
        if endpoint.scheme == Scheme::Http
            && closed_unanswered
            && capture_certificate(
                address,
                &endpoint.host.to_string(),
                self.options.connect_timeout,
            )
            .await
            .is_ok()
        {
            let step = Step::fail(
                StepId::Identify,
                title,
                format!(
                    "port {} speaks HTTPS: plain HTTP was closed unanswered and a TLS handshake succeeds",
                    endpoint.port
                ),
                Some(Bucket::InvalidProtocol),
                &self.host,
                "",
            );
            self.push(step);
            return false;
        }
        match failure {
            // A host that insists on authentication for Identify is still WinRM.
            TransportError::HttpStatus { status: 401, .. } => {
                self.push(Step::warn(
                    StepId::Identify,
                    title,
                    "the host does not answer an unauthenticated Identify (401); the next steps authenticate",
                ));
                true
            }
            TransportError::RequestTimeout { timeout, .. } => {
                let step = Step::fail(
                    StepId::Identify,
                    title,
                    format!(
                        "the host accepted the connection and did not answer within {timeout:?}"
                    ),
                    Some(Bucket::Timeout),
                    &self.host,
                    &format!("no answer to Identify within {timeout:?}"),
                );
                self.push(step);
                false
            }
            other => {
                let bucket = other.bucket().unwrap_or(Bucket::ProtocolError);
                let step = Step::fail(
                    StepId::Identify,
                    title,
                    other.to_string(),
                    Some(bucket),
                    &self.host,
                    &other.to_string(),
                );
                self.push(step);
                false
            }
        }
    }

    /// The schemes an unauthenticated POST's 401 offers; false when the chosen one is not
    /// among them.
    async fn auth_schemes(&mut self, endpoint: &Endpoint, address: SocketAddr) -> bool {
        let title = "Offered authentication";
        let wanted = self.options.auth.http_scheme();
        let tls = match endpoint.scheme {
            Scheme::Http => None,
            Scheme::Https => match self.tls_client() {
                Ok(client) => Some(client),
                Err(error) => {
                    self.push(Step::warn(
                        StepId::AuthSchemes,
                        title,
                        format!("TLS set-up: {error}"),
                    ));
                    return true;
                }
            },
        };
        let probe = probe_challenges(
            endpoint,
            address,
            tls.as_ref(),
            self.options.request_timeout,
        )
        .await;
        let (status, offered) = match probe {
            Ok(found) => found,
            Err(error) => {
                self.push(Step::warn(
                    StepId::AuthSchemes,
                    title,
                    format!("cannot read the offered schemes: {error}"),
                ));
                return true;
            }
        };
        self.facts.offered_schemes.clone_from(&offered);
        if status != StatusCode::UNAUTHORIZED {
            self.push(Step::warn(
                StepId::AuthSchemes,
                title,
                format!(
                    "an unauthenticated POST got HTTP {status}, not 401: the schemes are unknown"
                ),
            ));
            return true;
        }
        let list = if offered.is_empty() {
            "none".to_owned()
        } else {
            offered.join(", ")
        };
        if self.options.auth == AuthMethod::Certificate {
            // Certificate authentication is the TLS client certificate (the https/mutual
            // profile): never announced in WWW-Authenticate.
            self.push(Step::pass(
                StepId::AuthSchemes,
                title,
                format!(
                    "offered: {list}; certificate authentication is not announced there, the authentication step checks the client certificate"
                ),
            ));
            return true;
        }
        if offered.iter().any(|s| s.eq_ignore_ascii_case(wanted)) {
            self.push(Step::pass(
                StepId::AuthSchemes,
                title,
                if self.options.auth.to_string() == wanted {
                    format!("offered: {list}; {wanted} is among them")
                } else {
                    format!(
                        "offered: {list}; {wanted} (for {}) is among them",
                        self.options.auth
                    )
                },
            ));
            true
        } else {
            let step = Step::fail(
                StepId::AuthSchemes,
                title,
                format!("offered: {list}; {wanted} is not: the mechanism is disabled on the host"),
                Some(Bucket::AccessDenied),
                &self.host,
                wanted,
            );
            self.push(step);
            false
        }
    }

    /// The Windows client's TrustedHosts rule; false when it refuses the target.
    fn trusted_hosts(&mut self, endpoint: &Endpoint) -> bool {
        let title = "Trusted hosts";
        let step = if !endpoint.host.is_ip() {
            Step::pass(
                StepId::TrustedHosts,
                title,
                "a host name: the rule is for IP addresses only",
            )
        } else if endpoint.scheme == Scheme::Https {
            Step::pass(
                StepId::TrustedHosts,
                title,
                "an IP address over HTTPS: the certificate authenticates the host",
            )
        } else if self.options.auth.is_kerberos() {
            Step::pass(
                StepId::TrustedHosts,
                title,
                "Kerberos authenticates the host",
            )
        } else if self.options.policy.trusted_hosts.matches(&endpoint.host) {
            Step::pass(
                StepId::TrustedHosts,
                title,
                format!("{} matches the trusted-hosts patterns", endpoint.host),
            )
        } else {
            Step::fail(
                StepId::TrustedHosts,
                title,
                format!(
                    "{} is an IP address over HTTP with {} and matches no trusted-hosts pattern",
                    endpoint.host, self.options.auth
                ),
                Some(Bucket::InvalidHostIpAddress),
                &self.host,
                "",
            )
        };
        let ok = step.status != Status::Fail;
        self.push(step);
        ok
    }

    /// Authentication, then the message protection; the client for the next steps when
    /// both passed.
    async fn authenticate(
        &mut self,
        endpoint: &Endpoint,
        address: IpAddr,
        url_host: &str,
    ) -> Option<HostClient> {
        let auth_title = "Authentication";
        let enc_title = "Encryption";
        let options = Arc::new(self.options.clone());
        let user = self.options.credential.user().to_owned();
        let mut client = match HostClient::new(endpoint.clone(), Arc::clone(&options)) {
            Ok(client) => client.with_address(address),
            Err(error @ ClientError::Target(TargetError::UnencryptedRefused { .. })) => {
                // What is left of the pre-send checks: unencrypted Basic over plain HTTP.
                self.push(Step::skip(
                    StepId::Authentication,
                    auth_title,
                    "the credentials would travel unencrypted (see encryption)",
                ));
                let step = Step::fail(
                    StepId::Encryption,
                    enc_title,
                    format!(
                        "{error}; allow it on this client only if the host allows it too (AllowUnencrypted)"
                    ),
                    error.bucket(),
                    &self.host,
                    &self.options.auth.to_string(),
                );
                self.push(step);
                self.skip_rest("the client refuses to send unencrypted messages");
                return None;
            }
            Err(error) => {
                let step = Step::fail(
                    StepId::Authentication,
                    auth_title,
                    format!("this client refuses the target: {error}"),
                    error.bucket(),
                    &self.host,
                    "",
                );
                self.push(step);
                self.skip_rest("this client refuses the target");
                return None;
            }
        };
        // The exchange (SSPI mechanisms authenticate the connection), then an
        // authenticated Identify (Basic authenticates each request).
        let result = match client.connect().await {
            Ok(()) => client.identify(true).await.map(drop),
            Err(error) => Err(error),
        };
        let refused_plaintext = matches!(
            result,
            Err(ClientError::Transport(
                TransportError::PlaintextRefused { .. }
            ))
        );
        match &result {
            Ok(()) => {}
            Err(_) if refused_plaintext => {}
            Err(error) => {
                let bucket = error.bucket();
                let detail_for_message = match (bucket, error) {
                    (
                        _,
                        ClientError::Transport(TransportError::MechanismNotOffered {
                            scheme, ..
                        }),
                    ) => (*scheme).to_owned(),
                    (Some(Bucket::InvalidDomain), _) => user.rsplit_once('@').map_or_else(
                        || {
                            user.split_once('\\')
                                .map_or(String::new(), |(d, _)| d.to_owned())
                        },
                        |(_, realm)| realm.to_owned(),
                    ),
                    _ => String::new(),
                };
                let step = Step::fail(
                    StepId::Authentication,
                    auth_title,
                    format!("as {user} with {}: {error}", self.options.auth),
                    bucket,
                    &self.host,
                    &detail_for_message,
                );
                self.push(step);
                self.skip_rest("authentication failed");
                return None;
            }
        }
        let how = match self.options.auth {
            AuthMethod::Basic => "Basic (the credentials were accepted)".to_owned(),
            AuthMethod::Sspi(mechanism) => format!("{mechanism} (the exchange completed)"),
            AuthMethod::Certificate => "a TLS client certificate (accepted)".to_owned(),
        };
        self.push(Step::pass(
            StepId::Authentication,
            auth_title,
            format!("authenticated to {url_host} as {user} with {how}"),
        ));
        let config = self.connection_config(endpoint, address);
        let protection = if endpoint.scheme == Scheme::Https {
            if config.seals_messages() {
                "TLS, and message encryption inside it".to_owned()
            } else {
                "TLS".to_owned()
            }
        } else if config.seals_messages() {
            format!(
                "message encryption with {} (MS-WSMV 2.2.9.1)",
                self.options.auth
            )
        } else {
            "none: plaintext over HTTP".to_owned()
        };
        if refused_plaintext {
            let step = Step::fail(
                StepId::Encryption,
                enc_title,
                "the host refused an unencrypted message after authentication (AllowUnencrypted is false)".to_owned(),
                Some(Bucket::EncryptionRequired),
                &self.host,
                "",
            );
            self.push(step);
            self.skip_rest("the host refuses unencrypted messages");
            return None;
        }
        if config.plaintext_over_http() {
            self.push(Step::warn(
                StepId::Encryption,
                enc_title,
                format!("{protection}: the host accepts it (AllowUnencrypted is true); anyone on the path can read the messages"),
            ));
        } else {
            self.push(Step::pass(
                StepId::Encryption,
                enc_title,
                format!("messages are protected by {protection}"),
            ));
        }
        Some(client)
    }

    /// A Create of the runspace pool on the configuration, deleted again.
    async fn configuration(&mut self, client: &mut HostClient) {
        let title = "Session configuration";
        let name = self.options.configuration_name.clone();
        let uri = resources::powershell(&name);
        match RemoteSession::open(client, POOL_OPEN_TIMEOUT).await {
            Ok(session) => {
                let version = session.ps_version().map(str::to_owned);
                self.facts.ps_version.clone_from(&version);
                let closed = session.close(client).await;
                let mut detail = format!(
                    "a runspace pool opened on {uri}{}",
                    version
                        .map(|v| format!(" (PowerShell {v})"))
                        .unwrap_or_default()
                );
                if closed.deleted {
                    detail.push_str(" and was deleted");
                    self.push(Step::pass(StepId::Configuration, title, detail));
                } else {
                    detail
                        .push_str(", but its Delete was not confirmed: 'psfleet cleanup' reaps it");
                    self.push(Step::warn(StepId::Configuration, title, detail));
                }
            }
            Err(error) => {
                let bucket = error.bucket();
                let message_detail = match bucket {
                    Some(Bucket::InvalidPsConfiguration) => name.clone(),
                    // The plain form: the account, not a mechanism, is refused.
                    Some(Bucket::AccessDenied) => String::new(),
                    _ => error_detail(&error),
                };
                let detail = match bucket {
                    Some(Bucket::InvalidPsConfiguration) => {
                        format!(
                            "{name} is not registered on the host ({})",
                            error_detail(&error)
                        )
                    }
                    Some(Bucket::AccessDenied) => format!(
                        "{} may not use {name}: {}",
                        self.options.credential.user(),
                        error_detail(&error)
                    ),
                    _ => format!(
                        "creating a runspace pool on {uri}: {}",
                        error_detail(&error)
                    ),
                };
                let step = Step::fail(
                    StepId::Configuration,
                    title,
                    detail,
                    bucket,
                    &self.host,
                    &message_detail,
                );
                self.push(step);
            }
        }
    }

    /// The quotas and the shells open against them.
    async fn quotas(&mut self, client: &mut HostClient) {
        let title = "Quotas";
        let config = match client.get_config().await {
            Ok(config) => ConfigFacts::from_config(&config),
            Err(error) => {
                let why = if error.bucket() == Some(Bucket::AccessDenied) {
                    "the account may not read the WinRM configuration (it needs administrator rights)".to_owned()
                } else {
                    format!("cannot read the WinRM configuration: {error}")
                };
                self.push(Step::warn(StepId::Quotas, title, why));
                return;
            }
        };
        let shells: Option<Vec<ShellInfo>> = client.enumerate_shells().await.ok();
        let open = shells.as_ref().map(Vec::len);
        self.facts.open_shells = open;
        let summary = config.summary();
        let max = config.max_shells_per_user;
        self.facts.config = Some(config);
        let open_text = open.map_or_else(
            || "open shells unknown (Enumerate failed)".to_owned(),
            |n| {
                format!(
                    "{n} shell{} open for this account",
                    if n == 1 { "" } else { "s" }
                )
            },
        );
        match (max, open) {
            (Some(max), Some(open))
                if u64::try_from(open).unwrap_or(u64::MAX) >= u64::from(max) =>
            {
                let step = Step::fail(
                    StepId::Quotas,
                    title,
                    format!("{summary}; {open_text}: no shell can be created"),
                    Some(Bucket::QuotaExceeded),
                    &self.host,
                    &format!("MaxShellsPerUser is {max} and {open} are open"),
                );
                self.push(step);
            }
            (Some(max), Some(open))
                if u64::try_from(open).unwrap_or(u64::MAX) + 1 >= u64::from(max) && max > 1 =>
            {
                self.push(Step::warn(
                    StepId::Quotas,
                    title,
                    format!("{summary}; {open_text}: one shell left ('psfleet cleanup' reaps leaked ones)"),
                ));
            }
            _ => self.push(Step::pass(
                StepId::Quotas,
                title,
                format!("{summary}; {open_text}"),
            )),
        }
    }

    fn tls_client(&self) -> Result<TlsClient, String> {
        match &self.options.tls {
            Some(client) => Ok(client.clone()),
            None => TlsClient::new(&TlsOptions::default()).map_err(|e| e.to_string()),
        }
    }

    /// The connection settings a [`HostClient`] would use, to `address`.
    fn connection_config(&self, endpoint: &Endpoint, address: IpAddr) -> ConnectionConfig {
        crate::ops::connection_config_for(endpoint, self.options, Some(address))
    }

    fn push(&mut self, step: Step) {
        (self.report)(&step);
        self.steps.push(step);
    }

    /// Skips every step not reported yet, saying why.
    fn skip_rest(&mut self, why: &str) {
        for id in StepId::ALL {
            if self.steps.iter().any(|s| s.id == id) {
                continue;
            }
            let title = default_title(id);
            self.push(Step::skip(id, title, format!("skipped: {why}")));
        }
    }
}

/// The bucket a run reports for a failed handshake (the transport's classification:
/// certificate checks, a plaintext or silent peer, anything else).
fn tls_bucket(address: SocketAddr, failure: &TlsFailure) -> Bucket {
    TransportError::Tls {
        addr: address,
        failure: failure.clone(),
    }
    .bucket()
    .unwrap_or(Bucket::ProtocolError)
}

/// The title of a step that was not run.
fn default_title(id: StepId) -> &'static str {
    match id {
        StepId::Name => "Host name",
        StepId::Dns => "DNS",
        StepId::TcpHttp => "TCP (HTTP)",
        StepId::TcpHttps => "TCP (HTTPS)",
        StepId::Tls => "TLS certificate",
        StepId::Identify => "WinRM Identify",
        StepId::AuthSchemes => "Offered authentication",
        StepId::TrustedHosts => "Trusted hosts",
        StepId::Authentication => "Authentication",
        StepId::Encryption => "Encryption",
        StepId::Configuration => "Session configuration",
        StepId::Quotas => "Quotas",
    }
}

/// The error without the "cannot open a session" prefix.
fn error_detail(error: &SessionError) -> String {
    match error {
        SessionError::Open(inner) | SessionError::Broken(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// Connects to `port` on each address in turn, until one answers.
async fn probe_port(port: u16, addresses: &[SocketAddr], timeout: Duration) -> TcpOutcome {
    let mut last = TcpOutcome::NoAddress;
    for address in addresses {
        last = tcp_connect(SocketAddr::new(address.ip(), port), timeout).await;
        if matches!(last, TcpOutcome::Open(_)) {
            break;
        }
    }
    last
}

async fn tcp_connect(address: SocketAddr, timeout: Duration) -> TcpOutcome {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(_)) => TcpOutcome::Open(address),
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
            TcpOutcome::Refused(address)
        }
        Ok(Err(error)) if error.kind() == io::ErrorKind::TimedOut => TcpOutcome::TimedOut(address),
        Ok(Err(error)) => TcpOutcome::Failed(address, error),
        Err(_) => TcpOutcome::TimedOut(address),
    }
}

/// A handshake that accepts any certificate, to read it (nothing is sent after it).
async fn capture_certificate(
    address: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<u8>, TlsFailure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(CaptureVerifier {
        seen: Mutex::new(None),
        algorithms: provider.signature_verification_algorithms,
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsFailure::Handshake(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&capture) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    let server_name =
        ServerName::try_from(name.to_owned()).map_err(|_| TlsFailure::NameMismatch {
            name: name.to_owned(),
        })?;
    let handshake = async {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| TlsFailure::Handshake(e.to_string()))?;
        TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| TlsFailure::from_io(&e, name))
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| TlsFailure::Handshake(format!("no handshake within {timeout:?}")))??;
    capture
        .seen
        .lock()
        .ok()
        .and_then(|mut seen| seen.take())
        .ok_or_else(|| TlsFailure::BadCertificate("no certificate presented".to_owned()))
}

/// Accepts any server certificate and keeps it; handshake signatures are still checked.
#[derive(Debug)]
struct CaptureVerifier {
    seen: Mutex<Option<Vec<u8>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CaptureVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.as_ref().to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Reads what the diagnosis prints from a DER certificate (`None` when it does not parse).
pub fn certificate_info(der: &[u8], host: &Host) -> Option<CertificateInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut sans = Vec::new();
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(extension)) = cert.subject_alternative_name() {
        for name in extension.value.general_names.iter().take(MAX_SANS) {
            match name {
                GeneralName::DNSName(dns) => {
                    sans.push(format!("DNS:{dns}"));
                    dns_names.push((*dns).to_owned());
                }
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(format!("IP:{ip}"));
                        ips.push(ip);
                    }
                }
                other => sans.push(format!("{other:?}")),
            }
        }
    }
    let common_names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    let matches_name = match host {
        Host::Ip(ip) => ips.contains(ip),
        Host::Name(name) => {
            let candidates = if dns_names.is_empty() {
                &common_names
            } else {
                &dns_names
            };
            candidates.iter().any(|pattern| name_matches(pattern, name))
        }
    };
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02X}")).collect::<String>();
    Some(CertificateInfo {
        subject: cert.subject().to_string(),
        subject_alternative_names: sans,
        issuer: cert.issuer().to_string(),
        not_before: utc_text(not_before),
        not_after: utc_text(not_after),
        thumbprint: hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
        thumbprint_sha256: hex(digest::digest(&digest::SHA256, der).as_ref()),
        self_signed: cert.subject() == cert.issuer(),
        expired_or_not_yet_valid: now < not_before || now > not_after,
        matches_name,
    })
}

/// A certificate name pattern against a host name: exact, or `*.` matching one label
/// (RFC 6125 6.4.3), without case.
fn name_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return name
            .split_once('.')
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix));
    }
    pattern.eq_ignore_ascii_case(name)
}

/// `YYYY-MM-DD hh:mm:ss UTC` for a Unix time (the civil-from-days algorithm).
fn utc_text(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rem = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An unauthenticated, empty POST to the listener: its status and the schemes its
/// `WWW-Authenticate` headers offer (wire-facts 1.2).
async fn probe_challenges(
    endpoint: &Endpoint,
    address: SocketAddr,
    tls: Option<&TlsClient>,
    timeout: Duration,
) -> Result<(StatusCode, Vec<String>), String> {
    let host_header = format!("{}:{}", endpoint.host.url_form(), endpoint.port);
    let probe = async {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        match tls {
            None => post_empty(TokioIo::new(tcp), &host_header, &endpoint.path).await,
            Some(client) => {
                let (stream, _) = client
                    .connect(&endpoint.host.to_string(), tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                post_empty(TokioIo::new(stream), &host_header, &endpoint.path).await
            }
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn post_empty<T>(
    io: T,
    host_header: &str,
    path: &str,
) -> Result<(StatusCode, Vec<String>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = HttpRequest::post(path)
        .header(HOST, host_header)
        .header(CONTENT_TYPE, "application/soap+xml;charset=UTF-8")
        .header(CONTENT_LENGTH, 0)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string());
    let result = match request {
        Ok(request) => sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string()),
        Err(error) => Err(error),
    };
    driver.abort();
    let response = result?;
    let offered = transport::parse_challenges(response.headers())
        .into_iter()
        .map(|c| c.scheme)
        .collect();
    Ok((response.status(), offered))
}

fn bucket_name<S: serde::Serializer>(
    bucket: &Option<Bucket>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match bucket {
        Some(bucket) => serializer.serialize_str(bucket.name()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_match_as_tls_clients_match_them() {
        assert!(name_matches("srv1.fleet.test", "SRV1.fleet.test"));
        assert!(name_matches("*.fleet.test", "srv1.fleet.test"));
        assert!(!name_matches("*.fleet.test", "a.srv1.fleet.test"));
        assert!(!name_matches("other.fleet.test", "srv1.fleet.test"));
    }

    #[test]
    fn utc_dates_print_as_calendar_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_text(1_735_689_599), "2024-12-31 23:59:59 UTC");
        assert_eq!(utc_text(-1), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn a_generated_certificate_is_read_back() {
        let mut params = rcgen::CertificateParams::new(vec!["srv1.fleet.test".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "srv1.fleet.test");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let host = Host::parse("srv1.fleet.test").unwrap();
        let info = certificate_info(cert.der(), &host).unwrap();
        assert_eq!(info.subject, "CN=srv1.fleet.test");
        assert_eq!(info.subject_alternative_names, ["DNS:srv1.fleet.test"]);
        assert!(info.self_signed);
        assert!(info.matches_name);
        assert_eq!(info.thumbprint.len(), 40);
        assert_eq!(
            info.thumbprint,
            crate::tls::Thumbprint::sha1(cert.der()).to_string()
        );
        let other = Host::parse("srv2.fleet.test").unwrap();
        assert!(!certificate_info(cert.der(), &other).unwrap().matches_name);
        assert!(certificate_info(b"not DER", &host).is_none());
    }

    #[test]
    fn steps_serialise_with_their_bucket_names() {
        let step = Step::fail(
            StepId::TcpHttp,
            "TCP 5985 (HTTP)",
            "refused",
            Some(Bucket::InvalidPort),
            "srv1",
            "5985",
        );
        let json = serde_json::to_value(&step).unwrap();
        assert_eq!(json["step"], "tcp-http");
        assert_eq!(json["status"], "fail");
        assert_eq!(json["bucket"], "InvalidPort");
        assert!(json["message"].as_str().unwrap().contains("'Port' 5985"));
        assert!(json["fix"].as_str().unwrap().contains("--use-ssl"));
        let text = step.to_string();
        assert!(
            text.starts_with("[FAIL] TCP 5985 (HTTP): refused\n       reason: InvalidPort: "),
            "{text}"
        );
    }
}
