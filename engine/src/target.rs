//! Where a host is and whether the client may talk to it: endpoints, the checks the
//! Windows WinRM client makes before it sends a packet, and name resolution.
//!
//! - [`Endpoint`]: scheme, host, port and URL path (`http://web01:5985/wsman`), from a host
//!   name and a scheme or from a full connection URI (`Invoke-Command -ConnectionUri`).
//! - [`Host`]: a host name that passed the RFC 1123 check, or an IP literal. The check is
//!   the one behind HostContainsInvalidCharacters (wire-facts 1.7: "One or more computer
//!   names are not valid").
//! - [`check_before_send`]: the client policy of wire-facts 1.6 and 1.3, applied before any
//!   I/O: an IP-address target with non-Kerberos authentication over HTTP must match the
//!   [`TrustedHosts`] patterns (else InvalidHostIPAddress, ERROR_WSMAN_SERVER_NOT_TRUSTED),
//!   and Basic over plain HTTP needs unencrypted traffic explicitly allowed.
//! - [`Resolver`]: tokio's resolver with a timeout, and per-name overrides (the inventory
//!   address, `--resolve NAME=IP`) that skip DNS.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use psfleet_core::taxonomy::Bucket;

use crate::http::AuthMethod;

/// The WinRM listener path.
pub const DEFAULT_PATH: &str = "/wsman";

/// The WinRM HTTP port.
pub const DEFAULT_HTTP_PORT: u16 = 5985;

/// The WinRM HTTPS port.
pub const DEFAULT_HTTPS_PORT: u16 = 5986;

/// Default time allowed to resolve one host name.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest host name (RFC 1123 2.1 and RFC 1035 2.3.4: 253 characters without the
/// trailing dot).
const MAX_NAME_LEN: usize = 253;

/// Longest label of a host name (RFC 1035 2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Most addresses one name may resolve to that are tried.
const MAX_ADDRESSES: usize = 16;

/// Most trusted-hosts patterns read from one list.
const MAX_PATTERNS: usize = 1024;

/// HTTP or HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP (5985): messages are protected by message encryption, if at all.
    Http,
    /// HTTP over TLS (5986).
    Https,
}

impl Scheme {
    /// The WinRM default port of the scheme.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Http => DEFAULT_HTTP_PORT,
            Self::Https => DEFAULT_HTTPS_PORT,
        }
    }

    /// `http` or `https`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host that passed the name check: an RFC 1123 host name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A host name, as given (case kept; names compare without case).
    Name(String),
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
}

impl Host {
    /// Checks `text` as the Windows client does before sending anything: an IPv4 or IPv6
    /// literal (IPv6 with or without brackets), or a name made of dot-separated labels of
    /// letters, digits and inner hyphens, each 1 to 63 characters, 253 in all, with an
    /// optional trailing dot (RFC 1123 2.1).
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let invalid = |reason| TargetError::HostContainsInvalidCharacters {
            host: truncate(text),
            reason,
        };
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        if text.is_empty() {
            return Err(invalid("the host name is empty"));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("the host name is longer than 253 characters"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(invalid("the host name has an empty label"));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(invalid("a label is longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(invalid(
                    "only letters, digits, '-' and '.' may appear in a host name",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label starts or ends with '-'"));
            }
        }
        // An all-numeric dotted name that is not an IPv4 address (999.1.1.1) is neither a
        // valid address nor a name a resolver should see.
        if name
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid("a numeric name that is not an IPv4 address"));
        }
        Ok(Self::Name(text.to_owned()))
    }

    /// True for an IP literal.
    pub fn is_ip(&self) -> bool {
        matches!(self, Self::Ip(_))
    }

    /// The form used in URLs and the `Host` header: IPv6 literals in brackets.
    pub fn url_form(&self) -> String {
        match self {
            Self::Name(name) => name.clone(),
            Self::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Self::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }
}

impl fmt::Display for Host {
    /// The name, or the address without brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A WinRM endpoint: `scheme://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// The checked host.
    pub host: Host,
    /// The TCP port.
    pub port: u16,
    /// The URL path, `/wsman` unless the listener has another `URLPrefix`.
    pub path: String,
}

impl Endpoint {
    /// The endpoint of `host` with the scheme's default port and `/wsman`.
    pub fn new(host: &str, scheme: Scheme) -> Result<Self, TargetError> {
        Ok(Self {
            scheme,
            host: Host::parse(host)?,
            port: scheme.default_port(),
            path: DEFAULT_PATH.to_owned(),
        })
    }

    /// The same endpoint on another port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The same endpoint with another URL path (`wsman`, `/wsman` and `/custom/` all work).
    pub fn with_path(mut self, path: &str) -> Result<Self, TargetError> {
        self.path = checked_path(path)?;
        Ok(self)
    }

    /// Parses a full connection URI, `http[s]://host[:port][/path]`. A missing port is the
    /// scheme's WinRM port (5985/5986, as `-ConnectionUri` assumes), a missing path `/wsman`.
    pub fn parse_uri(uri: &str) -> Result<Self, TargetError> {
        let invalid = |reason| TargetError::InvalidUri {
            uri: truncate(uri),
            reason,
        };
        let (scheme, rest) = match uri.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            Some(_) => return Err(invalid("the scheme must be http or https")),
            None => return Err(invalid("no scheme (http:// or https://)")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(invalid("a query or fragment is not allowed"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials do not belong in the URI"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| invalid("bad port"))?;
        let mut endpoint = Self {
            scheme,
            host: Host::parse(host)?,
            port: port.unwrap_or(scheme.default_port()),
            path: DEFAULT_PATH.to_owned(),
        };
        if !path.is_empty() && path != "/" {
            endpoint.path = checked_path(path)?;
        }
        Ok(endpoint)
    }

    /// The URL, e.g. `http://web01:5985/wsman` (the `wsa:To` of every request).
    pub fn url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme,
            self.host.url_form(),
            self.port,
            self.path
        )
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// Trusted-hosts patterns, as `WSMan:\localhost\Client\TrustedHosts` holds them: a
/// comma-separated list of exact names or addresses, `*` (everything), patterns with `*`
/// wildcards (`*.fleet.test`, `127.20.*`), and `<local>` (names without a dot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedHosts {
    patterns: Vec<String>,
}

impl TrustedHosts {
    /// No host is trusted (the Windows default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Every host is trusted (`*`).
    pub fn all() -> Self {
        Self {
            patterns: vec!["*".to_owned()],
        }
    }

    /// Parses a comma-separated list; blanks around entries and empty entries are ignored,
    /// as are entries past the first 1024.
    pub fn parse(list: &str) -> Self {
        Self {
            patterns: list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .take(MAX_PATTERNS)
                .map(str::to_ascii_lowercase)
                .collect(),
        }
    }

    /// The patterns, lower-cased.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// True when `host` matches a pattern (case-insensitive; IPv6 with or without brackets).
    pub fn matches(&self, host: &Host) -> bool {
        let text = host.to_string().to_ascii_lowercase();
        let bracketed = host.url_form().to_ascii_lowercase();
        self.patterns.iter().any(|pattern| {
            if pattern == "<local>" {
                return matches!(host, Host::Name(name) if !name.trim_end_matches('.').contains('.'));
            }
            glob_match(pattern, &text) || glob_match(pattern, &bracketed)
        })
    }
}

/// The client policy the pre-send checks apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Trusted hosts: IP-address targets over HTTP without Kerberos must match one.
    pub trusted_hosts: TrustedHosts,
    /// Allow unencrypted traffic (`winrm/config/client/AllowUnencrypted`): needed for Basic
    /// over plain HTTP and for plaintext messages over HTTP.
    pub allow_unencrypted: bool,
}

/// Applies the Windows client's checks before any packet is sent (wire-facts 1.6, 1.3).
///
/// `plaintext_over_http` is true when messages would travel unencrypted on a plain HTTP
/// connection (Basic, or encryption turned off).
pub fn check_before_send(
    endpoint: &Endpoint,
    auth: &AuthMethod,
    plaintext_over_http: bool,
    policy: &ClientPolicy,
) -> Result<(), TargetError> {
    if endpoint.scheme == Scheme::Http {
        // No SPN can name an IP address, so Negotiate falls back to NTLM and the server is
        // not authenticated: Windows then insists on TrustedHosts (wire-facts 1.6).
        if endpoint.host.is_ip()
            && !auth.is_kerberos()
            && !policy.trusted_hosts.matches(&endpoint.host)
        {
            return Err(TargetError::InvalidHostIpAddress {
                host: endpoint.host.to_string(),
            });
        }
        if plaintext_over_http && !policy.allow_unencrypted {
            return Err(TargetError::UnencryptedRefused {
                host: endpoint.host.to_string(),
                auth: auth.to_string(),
            });
        }
    }
    Ok(())
}

/// Why a target was refused before any I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The host name has characters (or a shape) no host name may have.
    #[error("invalid host {host:?}: {reason}")]
    HostContainsInvalidCharacters {
        /// The host as given (at most 120 characters).
        host: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An IP-address target over HTTP without Kerberos that no trusted-hosts pattern
    /// matches (Windows: ServerNotTrusted, ERROR_WSMAN_SERVER_NOT_TRUSTED 2150858980).
    #[error(
        "{host} is an IP address not in the trusted hosts list: HTTPS, Kerberos by name, or a trusted-hosts pattern is needed"
    )]
    InvalidHostIpAddress {
        /// The address.
        host: String,
    },
    /// Unencrypted messages over plain HTTP (Basic, or encryption off) while unencrypted
    /// traffic is not allowed on this client.
    #[error(
        "{auth} over plain HTTP to {host} would send unencrypted messages, which is not allowed"
    )]
    UnencryptedRefused {
        /// The host.
        host: String,
        /// The authentication method.
        auth: String,
    },
    /// A connection URI that cannot be used.
    #[error("invalid connection URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI as given (at most 120 characters).
        uri: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A URL path that cannot be used.
    #[error("invalid URL path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given (at most 120 characters).
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `NAME=IP` override that does not parse.
    #[error("invalid resolve override {text:?}: expected NAME=IP")]
    InvalidOverride {
        /// The text as given (at most 120 characters).
        text: String,
    },
}

impl TargetError {
    /// The failure bucket this refusal reports.
    pub fn bucket(&self) -> Option<Bucket> {
        Some(match self {
            Self::HostContainsInvalidCharacters { .. } | Self::InvalidUri { .. } => {
                Bucket::HostContainsInvalidCharacters
            }
            Self::InvalidHostIpAddress { .. } => Bucket::InvalidHostIpAddress,
            // Windows: "Unencrypted traffic is currently disabled in the client
            // configuration": the method is disabled on this client.
            Self::UnencryptedRefused { .. } => Bucket::ClientAuthenticationDisabled,
            Self::InvalidPath { .. } | Self::InvalidOverride { .. } => return None,
        })
    }
}

/// Resolves host names: overrides first (no DNS), then tokio's resolver within a timeout.
#[derive(Debug, Clone)]
pub struct Resolver {
    overrides: HashMap<String, Vec<IpAddr>>,
    /// Time allowed for one DNS resolution.
    pub timeout: Duration,
}

impl Default for Resolver {
    fn default() -> Self {
        Self {
            overrides: HashMap::new(),
            timeout: DEFAULT_RESOLVE_TIMEOUT,
        }
    }
}

impl Resolver {
    /// A resolver with no overrides and the default timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an override: `name` resolves to `ip` without DNS (repeat for several
    /// addresses).
    pub fn add_override(&mut self, name: &str, ip: IpAddr) {
        self.overrides
            .entry(override_key(name))
            .or_default()
            .push(ip);
    }

    /// Adds an override from `NAME=IP` (the `--resolve` option).
    pub fn add_override_text(&mut self, text: &str) -> Result<(), TargetError> {
        let invalid = || TargetError::InvalidOverride {
            text: truncate(text),
        };
        let (name, ip) = text.split_once('=').ok_or_else(invalid)?;
        let host = Host::parse(name.trim()).map_err(|_| invalid())?;
        let ip = ip
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| invalid())?;
        self.add_override(&host.to_string(), ip);
        Ok(())
    }

    /// The override for `name`, if any.
    pub fn lookup_override(&self, name: &str) -> Option<&[IpAddr]> {
        self.overrides.get(&override_key(name)).map(Vec::as_slice)
    }

    /// The socket addresses of `host:port`: an IP literal as is, an override without DNS,
    /// or at most 16 addresses from DNS within [`Resolver::timeout`].
    pub async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let name = match host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Name(name) => name,
        };
        if let Some(ips) = self.lookup_override(name) {
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        let lookup = tokio::net::lookup_host((name.as_str(), port));
        match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => Err(ResolveError {
                host: name.clone(),
                source: io::Error::new(io::ErrorKind::TimedOut, "name resolution timed out"),
            }),
            Ok(Err(source)) => Err(ResolveError {
                host: name.clone(),
                source,
            }),
            Ok(Ok(addrs)) => {
                let addrs: Vec<SocketAddr> = addrs.take(MAX_ADDRESSES).collect();
                if addrs.is_empty() {
                    Err(ResolveError {
                        host: name.clone(),
                        source: io::Error::new(
                            io::ErrorKind::NotFound,
                            "the name has no addresses",
                        ),
                    })
                } else {
                    Ok(addrs)
                }
            }
        }
    }
}

/// A host name that did not resolve (Windows: "the server name cannot be resolved",
/// ERROR_WSMAN_NAME_NOT_RESOLVED 2150859193).
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host:?}: {source}")]
pub struct ResolveError {
    /// The name.
    pub host: String,
    /// The resolver's error (`TimedOut` after the resolution timeout).
    #[source]
    pub source: io::Error,
}

/// Lower-cased, without a trailing dot.
fn override_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `*` matches any run of characters (also empty); everything else matches itself.
/// Iterative with one backtrack point, so linear in practice and never recursive.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// Splits `host[:port]` or `[v6][:port]`; `None` when the port is not a number.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    // A bare IPv6 literal has several colons and no port.
    if authority.matches(':').count() > 1 {
        return Some((authority, None));
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((authority, None)),
    }
}

/// A URL path with a leading `/`, made of URL path characters only.
fn checked_path(path: &str) -> Result<String, TargetError> {
    let invalid = |reason| TargetError::InvalidPath {
        path: truncate(path),
        reason,
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if path.len() > 2048 {
        return Err(invalid("longer than 2048 characters"));
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:@".contains(&b))
    {
        return Err(invalid("only URL path characters may appear"));
    }
    Ok(path)
}

/// At most 120 characters of untrusted text, for error messages.
fn truncate(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Mechanism;

    #[test]
    fn host_names_follow_rfc_1123() {
        for good in [
            "web01",
            "WEB01.corp.example",
            "a",
            "srv-0001.fleet.test",
            "srv0001.fleet.test.",
            "1host",
            "xn--bcher-kva.example",
            &"a".repeat(63),
        ] {
            assert_eq!(
                Host::parse(good).unwrap(),
                Host::Name(good.to_owned()),
                "{good}"
            );
        }
        for (bad, reason) in [
            ("", "the host name is empty"),
            (
                "web 01",
                "only letters, digits, '-' and '.' may appear in a host name",
            ),
            (
                "web_01",
                "only letters, digits, '-' and '.' may appear in a host name",
            ),
            (
                "host!",
                "only letters, digits, '-' and '.' may appear in a host name",
            ),
            (
                "user@host",
                "only letters, digits, '-' and '.' may appear in a host name",
            ),
            (
                "h\u{e9}te",
                "only letters, digits, '-' and '.' may appear in a host name",
            ),
            ("a..b", "the host name has an empty label"),
            (".a", "the host name has an empty label"),
            ("-a.b", "a label starts or ends with '-'"),
            ("a-.b", "a label starts or ends with '-'"),
            ("999.1.1.1", "a numeric name that is not an IPv4 address"),
            ("1.2.3", "a numeric name that is not an IPv4 address"),
        ] {
            match Host::parse(bad) {
                Err(TargetError::HostContainsInvalidCharacters { reason: r, .. }) => {
                    assert_eq!(r, reason, "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let long_label = "a".repeat(64);
        assert!(Host::parse(&long_label).is_err());
        let long_name = ["a"; 128].join(".");
        assert!(long_name.len() > 253);
        assert!(Host::parse(&long_name).is_err());
        assert_eq!(
            TargetError::HostContainsInvalidCharacters {
                host: String::new(),
                reason: ""
            }
            .bucket(),
            Some(Bucket::HostContainsInvalidCharacters)
        );
    }

    #[test]
    fn ip_literals() {
        assert_eq!(
            Host::parse("127.20.0.1").unwrap(),
            Host::Ip("127.20.0.1".parse().unwrap())
        );
        let v6 = Host::parse("::1").unwrap();
        assert_eq!(v6, Host::Ip("::1".parse().unwrap()));
        assert_eq!(Host::parse("[::1]").unwrap(), v6);
        assert_eq!(v6.url_form(), "[::1]");
        assert_eq!(v6.to_string(), "::1");
        assert!(v6.is_ip());
        assert!(!Host::parse("web01").unwrap().is_ip());
    }

    #[test]
    fn endpoints_and_uris() {
        let e = Endpoint::new("web01", Scheme::Http).unwrap();
        assert_eq!(e.url(), "http://web01:5985/wsman");
        let e = Endpoint::new("web01", Scheme::Https).unwrap();
        assert_eq!(e.url(), "https://web01:5986/wsman");
        let e = e.with_port(443).with_path("custom").unwrap();
        assert_eq!(e.url(), "https://web01:443/custom");
        let e = Endpoint::new("::1", Scheme::Http).unwrap();
        assert_eq!(e.url(), "http://[::1]:5985/wsman");

        for (uri, scheme, host, port, path) in [
            ("http://web01", Scheme::Http, "web01", 5985, "/wsman"),
            ("HTTPS://web01/", Scheme::Https, "web01", 5986, "/wsman"),
            (
                "https://web01:443/wsman",
                Scheme::Https,
                "web01",
                443,
                "/wsman",
            ),
            (
                "http://10.0.0.5:8080/ps",
                Scheme::Http,
                "10.0.0.5",
                8080,
                "/ps",
            ),
            (
                "http://[fe80::1]:5985/wsman",
                Scheme::Http,
                "fe80::1",
                5985,
                "/wsman",
            ),
            ("http://[fe80::1]", Scheme::Http, "fe80::1", 5985, "/wsman"),
        ] {
            let e = Endpoint::parse_uri(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(
                (
                    e.scheme,
                    e.host.to_string().as_str(),
                    e.port,
                    e.path.as_str()
                ),
                (scheme, host, port, path),
                "{uri}"
            );
        }
        for bad in [
            "web01",
            "ftp://web01",
            "http://web01:port/",
            "http://web01:99999/",
            "http://user:pw@web01/",
            "http://web01/wsman?x=1",
            "http://[fe80::1/",
        ] {
            assert!(
                matches!(
                    Endpoint::parse_uri(bad),
                    Err(TargetError::InvalidUri { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Endpoint::parse_uri("http://web_01/wsman"),
            Err(TargetError::HostContainsInvalidCharacters { .. })
        ));
        assert!(matches!(
            Endpoint::parse_uri("http://web01/ws man"),
            Err(TargetError::InvalidPath { .. })
        ));
    }

    #[test]
    fn trusted_hosts_patterns() {
        let host = |s: &str| Host::parse(s).unwrap();
        let list = TrustedHosts::parse(" *.fleet.test, 127.20.*,web01 ,, 10.0.0.5, [::1] ");
        assert_eq!(
            list.patterns(),
            ["*.fleet.test", "127.20.*", "web01", "10.0.0.5", "[::1]"]
        );
        for yes in [
            "srv1.fleet.test",
            "SRV1.Fleet.Test",
            "127.20.0.1",
            "127.20.255.3",
            "WEB01",
            "10.0.0.5",
            "::1",
        ] {
            assert!(list.matches(&host(yes)), "{yes}");
        }
        for no in [
            "fleet.test",
            "srv1.fleet.test.evil",
            "127.2.0.1",
            "127.21.0.1",
            "web02",
            "10.0.0.50",
            "::2",
        ] {
            assert!(!list.matches(&host(no)), "{no}");
        }
        assert!(TrustedHosts::all().matches(&host("10.1.2.3")));
        assert!(!TrustedHosts::none().matches(&host("10.1.2.3")));
        let local = TrustedHosts::parse("<local>");
        assert!(local.matches(&host("web01")));
        assert!(!local.matches(&host("web01.corp")));
        assert!(!local.matches(&host("10.1.2.3")));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("**", ""));
    }

    #[test]
    fn pre_send_checks() {
        let ip_http = Endpoint::new("10.0.0.5", Scheme::Http).unwrap();
        let ip_https = Endpoint::new("10.0.0.5", Scheme::Https).unwrap();
        let name_http = Endpoint::new("web01", Scheme::Http).unwrap();
        let negotiate = AuthMethod::Sspi(Mechanism::Negotiate);
        let strict = ClientPolicy::default();
        assert_eq!(
            check_before_send(&ip_http, &negotiate, false, &strict),
            Err(TargetError::InvalidHostIpAddress {
                host: "10.0.0.5".into()
            })
        );
        assert_eq!(
            check_before_send(&ip_http, &negotiate, false, &strict)
                .unwrap_err()
                .bucket(),
            Some(Bucket::InvalidHostIpAddress)
        );
        assert_eq!(
            check_before_send(&ip_https, &negotiate, false, &strict),
            Ok(())
        );
        assert_eq!(
            check_before_send(&name_http, &negotiate, false, &strict),
            Ok(())
        );
        let trusted = ClientPolicy {
            trusted_hosts: TrustedHosts::parse("10.0.0.*"),
            allow_unencrypted: false,
        };
        assert_eq!(
            check_before_send(&ip_http, &negotiate, false, &trusted),
            Ok(())
        );

        // Basic (plaintext) over HTTP needs AllowUnencrypted; over HTTPS it does not.
        let err = check_before_send(&name_http, &AuthMethod::Basic, true, &strict).unwrap_err();
        assert!(matches!(err, TargetError::UnencryptedRefused { .. }));
        assert_eq!(err.bucket(), Some(Bucket::ClientAuthenticationDisabled));
        let https = Endpoint::new("web01", Scheme::Https).unwrap();
        assert_eq!(
            check_before_send(&https, &AuthMethod::Basic, true, &strict),
            Ok(())
        );
        let open = ClientPolicy {
            trusted_hosts: TrustedHosts::none(),
            allow_unencrypted: true,
        };
        assert_eq!(
            check_before_send(&name_http, &AuthMethod::Basic, true, &open),
            Ok(())
        );
    }

    #[tokio::test]
    async fn overrides_skip_dns() {
        let mut resolver = Resolver::new();
        resolver
            .add_override_text("srv1.fleet.invalid=127.20.0.7")
            .unwrap();
        resolver
            .add_override_text("v6.fleet.invalid=[::1]")
            .unwrap();
        resolver.add_override("SRV1.fleet.invalid.", "127.20.0.8".parse().unwrap());
        let addrs = resolver
            .resolve(&Host::parse("Srv1.Fleet.Invalid").unwrap(), 5985)
            .await
            .unwrap();
        assert_eq!(
            addrs,
            [
                "127.20.0.7:5985".parse::<SocketAddr>().unwrap(),
                "127.20.0.8:5985".parse().unwrap()
            ]
        );
        let addrs = resolver
            .resolve(&Host::parse("v6.fleet.invalid").unwrap(), 1)
            .await
            .unwrap();
        assert_eq!(addrs, ["[::1]:1".parse::<SocketAddr>().unwrap()]);
        for bad in ["noequals", "a=b", "bad name=127.0.0.1", "=127.0.0.1"] {
            assert!(resolver.add_override_text(bad).is_err(), "{bad}");
        }
        // An IP literal needs no resolver.
        let addrs = resolver
            .resolve(&Host::parse("127.0.0.9").unwrap(), 80)
            .await
            .unwrap();
        assert_eq!(addrs, ["127.0.0.9:80".parse::<SocketAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn unresolvable_names_are_resolve_errors() {
        // RFC 6761: .invalid never resolves.
        let resolver = Resolver {
            timeout: Duration::from_secs(10),
            ..Resolver::new()
        };
        let error = resolver
            .resolve(&Host::parse("nothing.psfleet.invalid").unwrap(), 5985)
            .await
            .unwrap_err();
        assert_eq!(error.host, "nothing.psfleet.invalid");
    }
}
