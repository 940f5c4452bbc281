//! Kerberos for WinRM clients: where the KDC is, what the principals are called, and the
//! small network client sspi drives to reach the KDC.
//!
//! sspi's Kerberos client is sans-IO: it yields KDC requests (`NetworkRequest`) and expects
//! the caller to carry them (dependencies.md). This module resolves, before any packet:
//!
//! - the client realm: from the user name (`REALM\user`, `user@realm`), else the configured
//!   default realm ([`KerberosOptions::realm`], else `default_realm` of krb5.conf);
//! - the KDC of that realm: [`KerberosOptions::kdc`], else `$PSFLEET_KDC`, else the `kdc`
//!   lines of the realm in krb5.conf (`$KRB5_CONFIG`, else `/etc/krb5.conf`);
//! - the service principal: `HTTP/<host>` (what WinRM registers, wire-facts 1.5), another
//!   service class, or a full SPN.
//!
//! The user is handed to sspi as `REALM\user`: sspi sends a UPN (`user@realm`) as an
//! NT-ENTERPRISE name, which an MIT KDC refuses unless it canonicalizes (dependencies.md).
//!
//! With a password every connection runs its own AS and TGS exchange; with a ticket cache
//! (crate::ticket_cache) the AS exchange is answered from the cache and only the TGS
//! exchange reaches the KDC.
//!
//! What is not here: DNS SRV discovery of KDCs (`_kerberos._tcp.REALM`), UDP to the KDC,
//! cross-realm referrals to realms without a configured KDC.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sspi::network_client::NetworkClient;
use sspi::{ErrorKind, NetworkProtocol, NetworkRequest, Username, UsernameParts};

use crate::auth::AuthError;
use crate::ticket_cache::LocalAs;

/// The environment variable naming a KDC for every realm (`host`, `host:port` or
/// `tcp://host:port`); `scripts/kdc` writes it.
pub const KDC_ENV: &str = "PSFLEET_KDC";

/// The environment variable MIT Kerberos reads its configuration path list from.
pub const KRB5_CONFIG_ENV: &str = "KRB5_CONFIG";

/// The configuration read when `KRB5_CONFIG` is unset.
pub const DEFAULT_KRB5_CONFIG: &str = "/etc/krb5.conf";

/// The service class WinRM registers its SPN under (`HTTP/<host>`, MS-WSMV 2.2.9.1.2;
/// wire-facts 1.5).
pub const DEFAULT_SERVICE_CLASS: &str = "HTTP";

/// The Kerberos port (RFC 4120 7.2.1).
pub const DEFAULT_KDC_PORT: u16 = 88;

/// Time allowed to connect to the KDC and for each of its answers. MIT krb5 waits 1 s per
/// KDC before trying the next, Windows 5 s; one KDC is tried here, so the longer one.
pub const DEFAULT_KDC_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest KDC reply accepted. A TGS-REP with a large PAC stays under 64 KiB; Windows
/// caps Kerberos tokens at 48,000 bytes.
pub const MAX_KDC_REPLY: usize = 256 * 1024;

/// Largest krb5.conf read; real ones are a few KiB.
const MAX_KRB5_CONF: u64 = 1024 * 1024;

/// Deepest `{ }` nesting followed in krb5.conf (realms use one level).
const MAX_KRB5_CONF_DEPTH: usize = 8;

/// How a client finds its KDC and names the service. Every field is optional: the default
/// reads the environment and krb5.conf like MIT tools do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KerberosOptions {
    /// The KDC (`host`, `host:port`, `[v6]:port`, `tcp://host:port`), overriding
    /// `$PSFLEET_KDC` and krb5.conf.
    pub kdc: Option<String>,
    /// The realm of user names written without one, overriding krb5.conf's
    /// `default_realm`.
    pub realm: Option<String>,
    /// The krb5.conf to read instead of `$KRB5_CONFIG` / `/etc/krb5.conf`.
    pub krb5_config: Option<PathBuf>,
    /// The SPN service class (`HTTP` by default; `WSMAN` or `host` for some setups).
    pub service_class: Option<String>,
    /// A full SPN (`class/host`, optionally `@REALM`), overriding class and host.
    pub spn: Option<String>,
    /// Time allowed for each KDC connection and answer ([`DEFAULT_KDC_TIMEOUT`]).
    pub kdc_timeout: Option<Duration>,
}

/// What a Kerberos client context needs, resolved before any packet is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct KerberosTarget {
    /// The client realm, upper case as Kerberos realms are written.
    pub realm: String,
    /// The user as sspi and MIT KDCs need it: `REALM\user`.
    pub principal: Username,
    /// The KDC as a URL sspi accepts (`tcp://host:port`).
    pub kdc_url: String,
    /// The service principal, `class/host` (sspi's target name; no realm).
    pub spn: String,
    /// Time allowed for each KDC connection and answer.
    pub kdc_timeout: Duration,
}

impl fmt::Debug for KerberosTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KerberosTarget")
            .field("realm", &self.realm)
            .field("principal", &self.principal.inner())
            .field("kdc_url", &self.kdc_url)
            .field("spn", &self.spn)
            .finish()
    }
}

/// Resolves the realm, principal, KDC and SPN for `user` talking to `host`, reading the
/// process environment for `$PSFLEET_KDC` and `$KRB5_CONFIG`.
pub fn resolve(
    user: &Username,
    host: &str,
    options: &KerberosOptions,
) -> Result<KerberosTarget, AuthError> {
    resolve_with_env(user, host, options, |name| std::env::var(name).ok())
}

/// [`resolve`] with the environment given as a function (tests, embedding).
pub fn resolve_with_env(
    user: &Username,
    host: &str,
    options: &KerberosOptions,
    env: impl Fn(&str) -> Option<String>,
) -> Result<KerberosTarget, AuthError> {
    let conf = match &options.krb5_config {
        Some(path) => Krb5Conf::read(std::slice::from_ref(path))?,
        None => {
            let list = env(KRB5_CONFIG_ENV).unwrap_or_else(|| DEFAULT_KRB5_CONFIG.to_owned());
            let paths: Vec<PathBuf> = list
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect();
            Krb5Conf::read(&paths)?
        }
    };
    let default_realm = options
        .realm
        .clone()
        .or_else(|| conf.default_realm.clone())
        .map(|r| r.to_ascii_uppercase());
    let account = user.account_name();
    let realm = client_realm(user, default_realm.as_deref(), &conf)?;
    let principal = Username::new_down_level_logon_name(account, &realm).map_err(|_| {
        AuthError::InvalidUserName {
            user: user.inner().to_owned(),
            reason: "cannot be written as REALM\\user",
        }
    })?;
    let kdc = options
        .kdc
        .clone()
        .or_else(|| env(KDC_ENV).filter(|v| !v.trim().is_empty()))
        .or_else(|| conf.kdc_of(&realm).map(str::to_owned))
        .ok_or_else(|| AuthError::KerberosRealmUnknown {
            realm: realm.clone(),
        })?;
    let kdc_url = kdc_url(&kdc)?;
    let spn = service_principal(host, options)?;
    Ok(KerberosTarget {
        realm,
        principal,
        kdc_url,
        spn,
        kdc_timeout: options.kdc_timeout.unwrap_or(DEFAULT_KDC_TIMEOUT),
    })
}

/// The client realm of `user` (MS-KILE 3.3.5.6.1 resolves the realm of a down-level name
/// through the domain; an MIT setup has only krb5.conf, so: a name that is a configured
/// realm is that realm; a DNS suffix maps through `[domain_realm]`; a NetBIOS name that is
/// the first label of the default realm is the default realm; otherwise the name upper
/// cased, as MIT does for a `user@realm` principal).
fn client_realm(
    user: &Username,
    default_realm: Option<&str>,
    conf: &Krb5Conf,
) -> Result<String, AuthError> {
    let no_realm = || AuthError::KerberosNoRealm {
        user: user.inner().to_owned(),
    };
    let domain = match user.parts() {
        UsernameParts::UserPrincipalName(parts) => parts.suffix(),
        UsernameParts::DownLevelLogonName(parts) => match parts.netbios_domain() {
            // `.\user` is a local account of the target: never Kerberos.
            Some(".") => return Err(no_realm()),
            Some(domain) => domain,
            None => return default_realm.map(str::to_owned).ok_or_else(no_realm),
        },
    };
    if domain.is_empty() {
        return Err(no_realm());
    }
    let upper = domain.to_ascii_uppercase();
    if conf.realms.contains_key(&upper) || default_realm == Some(upper.as_str()) {
        return Ok(upper);
    }
    if domain.contains('.') {
        if let Some(realm) = conf.realm_of_domain(domain) {
            return Ok(realm.to_ascii_uppercase());
        }
        return Ok(upper);
    }
    // A NetBIOS domain (`FLEET\alice`): the realm whose first label it is.
    let first_label = |realm: &str| {
        realm
            .split('.')
            .next()
            .is_some_and(|l| l.eq_ignore_ascii_case(domain))
    };
    if let Some(realm) = default_realm.filter(|r| first_label(r)) {
        return Ok(realm.to_owned());
    }
    if let Some(realm) = conf.realms.keys().find(|r| first_label(r)) {
        return Ok(realm.clone());
    }
    Ok(upper)
}

/// `class/host` for sspi (which takes no realm in its target name).
fn service_principal(host: &str, options: &KerberosOptions) -> Result<String, AuthError> {
    let invalid = |spn: &str, reason| AuthError::InvalidSpn {
        spn: spn.to_owned(),
        reason,
    };
    let spn = match &options.spn {
        Some(spn) => {
            // A realm suffix names the service's realm; sspi asks the client realm's KDC,
            // which refers it on, so the suffix is dropped.
            let without_realm = spn.split_once('@').map_or(spn.as_str(), |(s, _)| s);
            without_realm.to_owned()
        }
        None => {
            let class = options
                .service_class
                .as_deref()
                .unwrap_or(DEFAULT_SERVICE_CLASS);
            if class.is_empty() || class.contains('/') {
                return Err(invalid(class, "the service class must be one word"));
            }
            format!("{class}/{host}")
        }
    };
    match spn.split_once('/') {
        Some((class, name)) if !class.is_empty() && !name.is_empty() => {}
        _ => return Err(invalid(&spn, "expected service/host")),
    }
    if spn
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '@')
    {
        return Err(invalid(&spn, "contains a space, control character or '@'"));
    }
    Ok(spn)
}

/// `tcp://host:port` from the forms krb5.conf and users write (`host`, `host:port`,
/// `[v6]:port`, `tcp://...`; `udp://` and `kerberos://` are carried over TCP, which every
/// KDC serves).
fn kdc_url(kdc: &str) -> Result<String, AuthError> {
    let invalid = |reason| AuthError::InvalidKdc {
        kdc: kdc.to_owned(),
        reason,
    };
    let trimmed = kdc.trim();
    let rest = match trimmed.split_once("://") {
        Some(("tcp" | "udp" | "kerberos", rest)) => rest,
        Some(_) => return Err(invalid("only tcp:// KDC addresses are supported")),
        None => trimmed,
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty()
        || rest
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err(invalid("not a host or host:port"));
    }
    let (host, port) = split_host_port(rest).ok_or_else(|| invalid("bad port"))?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(format!("tcp://{host}:{}", port.unwrap_or(DEFAULT_KDC_PORT)))
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address has no port.
fn split_host_port(value: &str) -> Option<(&str, Option<u16>)> {
    if let Some(inner) = value.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match value.matches(':').count() {
        0 => Some((value, None)),
        1 => {
            let (host, port) = value.split_once(':')?;
            Some((host, Some(port.parse().ok()?)))
        }
        _ => Some((value, None)),
    }
}

/// Maps an sspi error from a Kerberos client step to the typed error the classifier
/// needs (wire-facts 1.4, 1.5): KDC unreachable or wrong realm → [`AuthError::KdcUnreachable`]
/// (InvalidDomain); unknown client, failed pre-authentication, revoked or expired
/// credentials → [`AuthError::KerberosCredentialsRejected`] (InvalidCredentials); unknown
/// service → [`AuthError::KerberosServiceUnknown`]; anything else stays an sspi error.
pub(crate) fn classify(
    error: sspi::Error,
    target: &KerberosTarget,
    mechanism: crate::auth::Mechanism,
    operation: &'static str,
) -> AuthError {
    let text = error.description.to_ascii_lowercase();
    let principal = target.principal.inner().to_owned();
    match error.error_type {
        ErrorKind::NoAuthenticatingAuthority => AuthError::KdcUnreachable {
            realm: target.realm.clone(),
            kdc: target.kdc_url.clone(),
            source: error,
        },
        ErrorKind::UnknownCredentials if text.contains("server not found") => {
            AuthError::KerberosServiceUnknown {
                spn: target.spn.clone(),
                source: error,
            }
        }
        ErrorKind::UnknownCredentials => AuthError::KerberosCredentialsRejected {
            principal,
            reason: "the KDC does not know the principal or has revoked it",
            source: error,
        },
        ErrorKind::KdcInvalidRequest if text.contains("pre-authentication") => {
            AuthError::KerberosCredentialsRejected {
                principal,
                reason: "pre-authentication failed (wrong password)",
                source: error,
            }
        }
        ErrorKind::InvalidParameter if text.contains("password has expired") => {
            AuthError::KerberosCredentialsRejected {
                principal,
                reason: "the password has expired",
                source: error,
            }
        }
        // An AS-REP that does not decrypt under the password's key (a KDC that does not
        // require pre-authentication answers anyone; the password is checked here).
        ErrorKind::DecryptFailure | ErrorKind::MessageAltered if operation == KDC_EXCHANGE => {
            AuthError::KerberosCredentialsRejected {
                principal,
                reason: "the KDC reply does not decrypt with the password",
                source: error,
            }
        }
        _ => AuthError::Sspi {
            mechanism,
            operation,
            source: error,
        },
    }
}

/// The operation name of the first client step, where the AS and TGS exchanges run.
pub(crate) const KDC_EXCHANGE: &str = "KDC exchange";

/// The KDC network client sspi's Kerberos drives: one TCP connection per request, the
/// RFC 4120 7.2.2 framing (a 4-byte big-endian length, which sspi already puts in front
/// of TCP requests and expects in front of replies), every wait bounded.
///
/// With a ticket cache credential, AS requests never reach the network: the cache's
/// [`LocalAs`] answers them (crate::ticket_cache explains why).
#[derive(Debug, Clone)]
pub struct KdcClient {
    timeout: Duration,
    local_as: Option<Arc<LocalAs>>,
}

impl KdcClient {
    /// A client waiting at most `timeout` for the connection and for each read or write.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            local_as: None,
        }
    }

    /// A client whose AS requests `local_as` answers from a ticket cache; TGS requests go
    /// to the KDC as usual.
    pub fn with_ticket_cache(timeout: Duration, local_as: Arc<LocalAs>) -> Self {
        Self {
            timeout,
            local_as: Some(local_as),
        }
    }

    /// The ticket cache's answer to an AS request, when this client has a cache.
    fn answer_locally(&self, request: &NetworkRequest) -> Option<sspi::Result<Vec<u8>>> {
        self.local_as.as_ref()?.answer(&request.data)
    }

    /// Sends `request` and returns the KDC's framed reply, without blocking the runtime.
    pub async fn send_async(&self, request: &NetworkRequest) -> sspi::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if let Some(answer) = self.answer_locally(request) {
            return answer;
        }
        let (host, port) = tcp_endpoint(request)?;
        let timeout = self.timeout;
        let unreachable = |what: &str, e: &dyn fmt::Display| {
            sspi::Error::new(
                ErrorKind::NoAuthenticatingAuthority,
                format!("KDC {host}:{port}: {what}: {e}"),
            )
        };
        let io = async {
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| unreachable("connect", &e))?;
            stream
                .write_all(&request.data)
                .await
                .map_err(|e| unreachable("send", &e))?;
            let mut len = [0u8; 4];
            stream
                .read_exact(&mut len)
                .await
                .map_err(|e| unreachable("read", &e))?;
            let mut reply = reply_buffer(len)?;
            stream
                .read_exact(&mut reply[4..])
                .await
                .map_err(|e| unreachable("read", &e))?;
            checked_reply(reply)
        };
        tokio::time::timeout(timeout, io)
            .await
            .map_err(|_| unreachable("no answer", &format_args!("after {timeout:?}")))?
    }

    fn send_blocking(&self, request: &NetworkRequest) -> sspi::Result<Vec<u8>> {
        if let Some(answer) = self.answer_locally(request) {
            return answer;
        }
        let (host, port) = tcp_endpoint(request)?;
        let unreachable = |what: &str, e: &dyn fmt::Display| {
            sspi::Error::new(
                ErrorKind::NoAuthenticatingAuthority,
                format!("KDC {host}:{port}: {what}: {e}"),
            )
        };
        let addrs = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| unreachable("resolve", &e))?;
        let mut last = None;
        let mut connected = None;
        for addr in addrs.take(8) {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = match (connected, last) {
            (Some(stream), _) => stream,
            (None, Some(e)) => return Err(unreachable("connect", &e)),
            (None, None) => return Err(unreachable("resolve", &"no address")),
        };
        let set = |s: &TcpStream| {
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))
        };
        set(&stream).map_err(|e| unreachable("socket", &e))?;
        stream
            .write_all(&request.data)
            .map_err(|e| unreachable("send", &e))?;
        let mut len = [0u8; 4];
        stream
            .read_exact(&mut len)
            .map_err(|e| unreachable("read", &e))?;
        let mut reply = reply_buffer(len)?;
        stream
            .read_exact(&mut reply[4..])
            .map_err(|e| unreachable("read", &e))?;
        checked_reply(reply)
    }
}

impl NetworkClient for KdcClient {
    fn send(&self, request: &NetworkRequest) -> sspi::Result<Vec<u8>> {
        self.send_blocking(request)
    }
}

/// The host and port of a TCP KDC request (the only kind [`kdc_url`] produces).
fn tcp_endpoint(request: &NetworkRequest) -> sspi::Result<(String, u16)> {
    if request.protocol != NetworkProtocol::Tcp {
        return Err(sspi::Error::new(
            ErrorKind::NoAuthenticatingAuthority,
            format!("KDC protocol {:?} is not supported", request.protocol),
        ));
    }
    let host = request.url.host_str().ok_or_else(|| {
        sspi::Error::new(ErrorKind::NoAuthenticatingAuthority, "KDC URL has no host")
    })?;
    // The url crate keeps IPv6 brackets in host_str.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, request.url.port().unwrap_or(DEFAULT_KDC_PORT)))
}

/// A zeroed buffer for a reply whose length prefix is `len`, the prefix copied in front.
fn reply_buffer(len: [u8; 4]) -> sspi::Result<Vec<u8>> {
    let body = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if body == 0 || body > MAX_KDC_REPLY {
        return Err(sspi::Error::new(
            ErrorKind::NoAuthenticatingAuthority,
            format!("KDC reply of {body} bytes is not a Kerberos message"),
        ));
    }
    let mut reply = vec![0u8; 4 + body];
    reply[..4].copy_from_slice(&len);
    Ok(reply)
}

/// `reply` (length prefix and message) when the message is well-formed DER all the way
/// down: sspi decodes it with picky-asn1-der, which adds lengths unchecked (a hostile
/// length near 2^64 overflows it).
fn checked_reply(reply: Vec<u8>) -> sspi::Result<Vec<u8>> {
    if psfleet_core::der::is_well_formed(reply.get(4..).unwrap_or_default()) {
        Ok(reply)
    } else {
        Err(sspi::Error::new(
            ErrorKind::NoAuthenticatingAuthority,
            "the KDC reply is not well-formed DER",
        ))
    }
}

/// The parts of krb5.conf (MIT profile format) a client needs: the default realm, each
/// realm's KDCs, and the DNS domain to realm map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Krb5Conf {
    /// `[libdefaults] default_realm`.
    pub default_realm: Option<String>,
    /// `[realms] REALM = { kdc = ... }`, every `kdc` line in order.
    pub realms: BTreeMap<String, Vec<String>>,
    /// `[domain_realm]` lines in order (`.example.com = EXAMPLE.COM`).
    pub domain_realm: Vec<(String, String)>,
}

impl Krb5Conf {
    /// Reads and merges the files that exist among `paths` (MIT's `KRB5_CONFIG` list: the
    /// first value of a setting wins). Missing files are skipped, like MIT does.
    pub fn read(paths: &[PathBuf]) -> Result<Self, AuthError> {
        let mut conf = Self::default();
        for path in paths {
            if !path.exists() {
                continue;
            }
            let text = read_bounded(path).map_err(|source| AuthError::Krb5Config {
                path: path.clone(),
                source,
            })?;
            conf.merge(Self::parse(&text));
        }
        Ok(conf)
    }

    /// Parses one file. Unknown sections and settings are ignored; malformed lines too,
    /// as MIT's profile library would refuse the file but a client needs only three keys.
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        let mut section = String::new();
        // The names of the open `{ }` groups, outermost first, and how many are open
        // (groups nested deeper than MAX_KRB5_CONF_DEPTH are counted, not named).
        let mut groups: Vec<String> = Vec::new();
        let mut depth = 0usize;
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
                    section = name.trim().to_ascii_lowercase();
                    groups.clear();
                    depth = 0;
                }
                continue;
            }
            if line.starts_with('}') {
                if depth == groups.len() {
                    groups.pop();
                }
                depth = depth.saturating_sub(1);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim();
            let value = value.trim();
            if value.starts_with('{') {
                if section == "realms" && groups.is_empty() {
                    conf.realms.entry(key.to_owned()).or_default();
                }
                if depth < MAX_KRB5_CONF_DEPTH {
                    groups.push(key.to_owned());
                }
                depth = depth.saturating_add(1);
                continue;
            }
            // A trailing `*` marks the value final in MIT profiles.
            let value = value.trim_end_matches('*').trim();
            if depth > groups.len() {
                continue;
            }
            match (section.as_str(), groups.as_slice()) {
                ("libdefaults", []) if key == "default_realm" => {
                    conf.default_realm.get_or_insert_with(|| value.to_owned());
                }
                ("realms", [realm]) if key == "kdc" => {
                    conf.realms
                        .entry(realm.clone())
                        .or_default()
                        .push(value.to_owned());
                }
                ("domain_realm", []) => {
                    conf.domain_realm
                        .push((key.to_ascii_lowercase(), value.to_owned()));
                }
                _ => {}
            }
        }
        conf
    }

    /// The first KDC of `realm` (realm names are case-sensitive in Kerberos; a realm
    /// configured in another case is taken too, as users type domains in any case).
    pub fn kdc_of(&self, realm: &str) -> Option<&str> {
        self.realms
            .get(realm)
            .or_else(|| {
                self.realms
                    .iter()
                    .find(|(r, _)| r.eq_ignore_ascii_case(realm))
                    .map(|(_, k)| k)
            })?
            .first()
            .map(String::as_str)
    }

    /// The realm `[domain_realm]` maps `domain` to: an exact entry, else the longest
    /// `.suffix` entry (MIT's rule: `.example.com` covers hosts under example.com).
    pub fn realm_of_domain(&self, domain: &str) -> Option<&str> {
        let domain = domain.to_ascii_lowercase();
        if let Some((_, realm)) = self.domain_realm.iter().find(|(d, _)| *d == domain) {
            return Some(realm);
        }
        self.domain_realm
            .iter()
            .filter(|(d, _)| d.starts_with('.') && domain.ends_with(d.as_str()))
            .max_by_key(|(d, _)| d.len())
            .map(|(_, realm)| realm.as_str())
    }

    fn merge(&mut self, other: Self) {
        if self.default_realm.is_none() {
            self.default_realm = other.default_realm;
        }
        for (realm, kdcs) in other.realms {
            self.realms.entry(realm).or_default().extend(kdcs);
        }
        self.domain_realm.extend(other.domain_realm);
    }
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_KRB5_CONF)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "\
# a comment
[libdefaults]
    default_realm = FLEET.TEST
    dns_lookup_kdc = false

[realms]
    FLEET.TEST = {
        kdc = 127.0.0.1:8888
        kdc = backup.fleet.test
        admin_server = 127.0.0.1:8889
    }
    CORP.EXAMPLE = {
        kdc = [::1]:750
    }
    EMPTY.TEST = {
    }

[domain_realm]
    .fleet.test = FLEET.TEST
    fleet.test = FLEET.TEST
    .eu.corp.example = CORP.EXAMPLE
";

    fn conf_file(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("krb5.conf");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// A directory removed on drop (the engine has no tempfile dependency).
    mod tempdir {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicUsize, Ordering};
        pub struct Dir(pub PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "psfleet-krb5-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn options(path: &Path) -> KerberosOptions {
        KerberosOptions {
            krb5_config: Some(path.to_owned()),
            ..KerberosOptions::default()
        }
    }

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn krb5_conf_parses_the_three_settings() {
        let conf = Krb5Conf::parse(CONF);
        assert_eq!(conf.default_realm.as_deref(), Some("FLEET.TEST"));
        assert_eq!(
            conf.realms["FLEET.TEST"],
            vec!["127.0.0.1:8888", "backup.fleet.test"]
        );
        assert_eq!(conf.kdc_of("CORP.EXAMPLE"), Some("[::1]:750"));
        assert_eq!(conf.kdc_of("corp.example"), Some("[::1]:750"));
        assert_eq!(conf.kdc_of("EMPTY.TEST"), None);
        assert!(conf.realms.contains_key("EMPTY.TEST"));
        assert_eq!(conf.realm_of_domain("web01.fleet.test"), Some("FLEET.TEST"));
        assert_eq!(conf.realm_of_domain("FLEET.test"), Some("FLEET.TEST"));
        assert_eq!(
            conf.realm_of_domain("a.eu.corp.example"),
            Some("CORP.EXAMPLE")
        );
        assert_eq!(conf.realm_of_domain("corp.example"), None);
    }

    #[test]
    fn user_names_become_realm_backslash_user() {
        let (_dir, path) = conf_file(CONF);
        let opts = options(&path);
        for (name, principal, realm) in [
            ("fleetadmin", "FLEET.TEST\\fleetadmin", "FLEET.TEST"),
            (
                "fleetadmin@FLEET.TEST",
                "FLEET.TEST\\fleetadmin",
                "FLEET.TEST",
            ),
            (
                "fleetadmin@fleet.test",
                "FLEET.TEST\\fleetadmin",
                "FLEET.TEST",
            ),
            ("FLEET\\fleetadmin", "FLEET.TEST\\fleetadmin", "FLEET.TEST"),
            (
                "fleet.test\\fleetadmin",
                "FLEET.TEST\\fleetadmin",
                "FLEET.TEST",
            ),
            ("CORP\\bob", "CORP.EXAMPLE\\bob", "CORP.EXAMPLE"),
            ("bob@x.eu.corp.example", "CORP.EXAMPLE\\bob", "CORP.EXAMPLE"),
        ] {
            let target = resolve_with_env(&user(name), "web01.fleet.test", &opts, no_env)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(target.principal.inner(), principal, "{name}");
            assert_eq!(target.realm, realm, "{name}");
            assert_eq!(target.spn, "HTTP/web01.fleet.test");
        }
    }

    #[test]
    fn kdc_comes_from_option_then_env_then_krb5_conf() {
        let (_dir, path) = conf_file(CONF);
        let mut opts = options(&path);
        let u = user("fleetadmin");
        let env = |name: &str| (name == KDC_ENV).then(|| "kdc.env.test:99".to_owned());
        let from_conf = resolve_with_env(&u, "h", &opts, no_env).unwrap();
        assert_eq!(from_conf.kdc_url, "tcp://127.0.0.1:8888");
        let from_env = resolve_with_env(&u, "h", &opts, env).unwrap();
        assert_eq!(from_env.kdc_url, "tcp://kdc.env.test:99");
        opts.kdc = Some("tcp://[::1]".to_owned());
        let from_option = resolve_with_env(&u, "h", &opts, env).unwrap();
        assert_eq!(from_option.kdc_url, "tcp://[::1]:88");
        // KRB5_CONFIG from the environment when no path is given.
        let conf_env = |name: &str| {
            (name == KRB5_CONFIG_ENV).then(|| format!("/nonexistent:{}", path.display()))
        };
        let target = resolve_with_env(&u, "h", &KerberosOptions::default(), conf_env).unwrap();
        assert_eq!(target.kdc_url, "tcp://127.0.0.1:8888");
    }

    #[test]
    fn kdc_address_forms() {
        for (given, url) in [
            ("kdc", "tcp://kdc:88"),
            ("kdc:750", "tcp://kdc:750"),
            ("udp://kdc:750", "tcp://kdc:750"),
            ("tcp://10.0.0.1:88/", "tcp://10.0.0.1:88"),
            ("::1", "tcp://[::1]:88"),
            ("[fe80::1]:8888", "tcp://[fe80::1]:8888"),
        ] {
            assert_eq!(kdc_url(given).unwrap(), url, "{given}");
        }
        for bad in [
            "",
            "http://kdc",
            "kdc:port",
            "kdc:99999",
            "a b",
            "kdc/x",
            "[::1",
        ] {
            assert!(
                matches!(kdc_url(bad), Err(AuthError::InvalidKdc { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn spn_forms() {
        let mut opts = KerberosOptions::default();
        assert_eq!(service_principal("web01", &opts).unwrap(), "HTTP/web01");
        opts.service_class = Some("WSMAN".to_owned());
        assert_eq!(service_principal("web01", &opts).unwrap(), "WSMAN/web01");
        opts.spn = Some("host/alias.fleet.test@FLEET.TEST".to_owned());
        assert_eq!(
            service_principal("web01", &opts).unwrap(),
            "host/alias.fleet.test"
        );
        for bad in ["noslash", "/x", "x/", "a/b c"] {
            opts.spn = Some(bad.to_owned());
            assert!(
                matches!(
                    service_principal("web01", &opts),
                    Err(AuthError::InvalidSpn { .. })
                ),
                "{bad}"
            );
        }
        let opts = KerberosOptions {
            service_class: Some("a/b".to_owned()),
            ..KerberosOptions::default()
        };
        assert!(service_principal("web01", &opts).is_err());
    }

    #[test]
    fn missing_realm_and_unknown_realm_are_typed() {
        let (_dir, path) = conf_file("[realms]\n FLEET.TEST = {\n kdc = k:1\n }\n");
        let opts = options(&path);
        // No domain in the name and no default realm: Kerberos is unavailable.
        for name in ["alice", ".\\alice"] {
            match resolve_with_env(&user(name), "h", &opts, no_env) {
                Err(e @ AuthError::KerberosNoRealm { .. }) => assert_eq!(
                    e.bucket(),
                    Some(psfleet_core::taxonomy::Bucket::ClientAuthenticationDisabled)
                ),
                other => panic!("{name}: {other:?}"),
            }
        }
        // A realm no KDC is known for.
        match resolve_with_env(&user("OTHER.TEST\\alice"), "h", &opts, no_env) {
            Err(e @ AuthError::KerberosRealmUnknown { .. }) => {
                assert_eq!(
                    e.bucket(),
                    Some(psfleet_core::taxonomy::Bucket::InvalidDomain)
                );
                assert!(e.to_string().contains("OTHER.TEST"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // The option supplies the default realm.
        let opts = KerberosOptions {
            realm: Some("fleet.test".to_owned()),
            ..opts
        };
        let target = resolve_with_env(&user("alice"), "h", &opts, no_env).unwrap();
        assert_eq!(target.principal.inner(), "FLEET.TEST\\alice");
        assert_eq!(target.kdc_url, "tcp://k:1");
    }

    #[test]
    fn kdc_client_bounds_replies_and_reports_unreachable() {
        use std::net::TcpListener;
        // A "KDC" that reads one 8-byte request and answers `reply`.
        let kdc = |reply: Vec<u8>| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 8];
                s.read_exact(&mut buf).unwrap();
                s.write_all(&reply).unwrap();
            });
            (port, server)
        };
        // A reply announced as 1 GiB is refused without allocating it.
        let (port, server) = kdc((1u32 << 30).to_be_bytes().to_vec());
        let request = |port: u16| NetworkRequest {
            protocol: NetworkProtocol::Tcp,
            url: format!("tcp://127.0.0.1:{port}").parse().unwrap(),
            data: vec![0, 0, 0, 4, 1, 2, 3, 4],
        };
        let client = KdcClient::new(Duration::from_secs(5));
        let err = client.send(&request(port)).unwrap_err();
        assert_eq!(err.error_type, ErrorKind::NoAuthenticatingAuthority);
        assert!(err.description.contains("1073741824 bytes"), "{err}");
        server.join().unwrap();
        // A reply whose DER lengths run past it (a fuzz finding against picky-asn1-der).
        let mut hostile = vec![0, 0, 0, 10, 0x6b, 0x88];
        hostile.extend_from_slice(&[0xff; 8]);
        let (port, server) = kdc(hostile);
        let err = client.send(&request(port)).unwrap_err();
        assert!(err.description.contains("not well-formed DER"), "{err}");
        server.join().unwrap();
        // Nothing listening: refused, as NoAuthenticatingAuthority.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = client.send(&request(port)).unwrap_err();
        assert_eq!(err.error_type, ErrorKind::NoAuthenticatingAuthority);
        assert!(err.description.contains("connect"), "{err}");
    }
}
