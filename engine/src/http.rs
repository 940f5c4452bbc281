//! One HTTP/1.1 connection to one WinRM listener, over HTTP or HTTPS, authenticated with
//! Basic, NTLM, Negotiate, Kerberos, CredSSP or a client certificate, with or without
//! message encryption.
//!
//! NTLM and SPNEGO authenticate the TCP connection, not the request (MS-WSMV 2.2.9.1.1.1),
//! so this module owns its socket: a hyper HTTP/1.1 client connection on one tokio
//! `TcpStream` (inside rustls for HTTPS), kept alive for as long as the [`Connection`]
//! lives. A new connection authenticates afresh.
//!
//! [`Connection::connect`] performs the exchange working Windows clients use (wire-facts
//! section 3, after WinRb `init_auth` and pypsrp "send an initial blank message"):
//!
//! 1. `POST` with an empty body and `Authorization: Negotiate <NEGOTIATE token>`;
//! 2. `401` with `WWW-Authenticate: Negotiate <CHALLENGE token>`;
//! 3. `POST` with an empty body and `Authorization: Negotiate <AUTHENTICATE token>`;
//! 4. `200`, for SPNEGO with the server's final token (its mechListMIC).
//!
//! Kerberos takes one leg (AP-REQ, answered by the 200 carrying the AP-REP); CredSSP six
//! (the TLS handshake, SPNEGO inside it, pubKeyAuth, the delegated credentials), each
//! intermediate one answered by a 401 carrying the server's token. KDC traffic goes over
//! tokio sockets ([`ClientContext::step_async`]), never blocking a runtime thread.
//!
//! Over HTTPS the context is bound to the TLS channel (`tls-server-end-point`, RFC 5929)
//! so that the server can tell the exchange was not relayed. Basic has no exchange: its
//! header rides on every request. Certificate authentication neither: the TLS handshake
//! presents the client certificate and every request carries the WS-Man `https/mutual`
//! header (wire-facts 3, [`CERTIFICATE_AUTH_HEADER`]).
//!
//! After that [`Connection::send`] sends each SOAP envelope, sealed into a
//! `multipart/encrypted` body (`psfleet_core::encryption`) when message encryption is on
//! ([`Encryption`]: by default over HTTP, not over HTTPS); 200 and 500 bodies are both
//! returned, unsealed when they came sealed (a 500 carries a WS-Man fault, MS-WSMV
//! 2.2.9.1.1 and wire-facts section 1).
//!
//! Every failure is a [`TransportError`] that keeps what a classifier needs (wire-facts
//! section 6): the phase, the HTTP status, the schemes the server offered, which TLS check
//! failed; [`TransportError::bucket`] names the failure bucket it points to.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap,
    HeaderName, HeaderValue, LOCATION, USER_AGENT, WWW_AUTHENTICATE,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use psfleet_core::encryption::{self, FramingError, Protocol};
use psfleet_core::taxonomy::Bucket;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use crate::auth::{
    AuthError, CERTIFICATE_AUTH_HEADER, CertificateResolver, ClientCertificate, ClientContext,
    ContextOptions, Credential, Mechanism,
};
use crate::kerberos::KerberosOptions;
use crate::target::{Endpoint, Host, Resolver, Scheme, TargetError};
use crate::tls::{TlsClient, TlsFailure, TlsOptions, TlsSession, TlsSetupError};

pub use crate::target::DEFAULT_PATH;

/// The plain WinRM HTTP port.
pub const DEFAULT_PORT: u16 = crate::target::DEFAULT_HTTP_PORT;

/// The `User-Agent` header value.
pub const USER_AGENT_VALUE: &str = concat!("psfleet/", env!("CARGO_PKG_VERSION"));

/// Default connect timeout (TCP and the TLS handshake), as pypsrp's `connection_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time allowed for one request and its whole response, as pypsrp's
/// `read_timeout`. It must exceed the WS-Man `OperationTimeout` of Receive requests.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default ceiling on one response body, whatever the envelope size asked for. WinRM's
/// `MaxEnvelopeSizekb` defaults to 500 KB and sealing adds a few hundred bytes, so this
/// leaves a wide margin; [`response_limit_for_envelope`] is the tighter per-request bound.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// What [`response_limit_for_envelope`] adds on top of twice the envelope size: the
/// `multipart/encrypted` framing and signature (a few hundred bytes, MS-WSMV 2.2.9.1),
/// CredSSP's TLS record overhead, and room to spare.
pub const RESPONSE_LIMIT_MARGIN: usize = 64 * 1024;

/// The largest response body accepted when requests ask for envelopes of at most
/// `max_envelope_size` bytes (`wsman:MaxEnvelopeSize`): twice that plus
/// [`RESPONSE_LIMIT_MARGIN`]. Windows never sends a larger envelope than the client asked
/// for (it answers with ERROR_WSMAN_MAX_ENVELOPE_SIZE_EXCEEDED instead, wire-facts 1.14), so
/// the factor of two only absorbs encoding differences; anything bigger is a hostile or
/// broken server, refused before it can fill memory (issue 8).
pub fn response_limit_for_envelope(max_envelope_size: u32) -> usize {
    usize::try_from(max_envelope_size)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .saturating_add(RESPONSE_LIMIT_MARGIN)
}

/// The header that asks for an unauthenticated Identify reply (MS-WSMV 3.1.4.1.23).
pub const WSMANIDENTIFY: &str = "wsmanidentify";

/// Most requests one authentication exchange may take: NTLM and SPNEGO-wrapped NTLM need
/// two (SPNEGO's final token rides on the 200), Kerberos one, CredSSP six (TLS handshake
/// two, SPNEGO two, pubKeyAuth, credentials); two to spare.
const MAX_AUTH_LEGS: usize = 8;

/// Most challenges read from the `WWW-Authenticate` headers of one response.
const MAX_CHALLENGES: usize = 32;

/// The Content-Type of SOAP bodies and of the empty-bodied authentication requests
/// (pypsrp sends its session headers, this one included, on its blank setup message).
const SOAP_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";

/// How a connection authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// HTTP Basic (RFC 7617): user and password on every request, no message encryption.
    Basic,
    /// An SSPI mechanism (NTLM, Negotiate, ...) authenticating the TCP connection.
    Sspi(Mechanism),
    /// WS-Man certificate authentication (the `https/mutual` security profile): a TLS
    /// client certificate ([`ConnectionConfig::client_certificate`]) and
    /// [`CERTIFICATE_AUTH_HEADER`] on every request. HTTPS only, no message encryption;
    /// the credential's password is never sent, its user name only labels errors.
    Certificate,
}

impl AuthMethod {
    /// The HTTP authentication scheme (`Basic`, `Negotiate`, ...).
    pub fn http_scheme(&self) -> &'static str {
        match self {
            Self::Basic => "Basic",
            Self::Sspi(mechanism) => mechanism.http_scheme(),
            // Not an HTTP scheme: WinRM never offers it in `WWW-Authenticate`.
            Self::Certificate => "Certificate",
        }
    }

    /// True when the method is Kerberos alone, so the target must be a name with an SPN
    /// (the TrustedHosts rule does not apply to it, wire-facts 1.6).
    pub fn is_kerberos(&self) -> bool {
        matches!(self, Self::Sspi(Mechanism::Kerberos))
    }

    /// True when the method can seal messages (everything but Basic, wire-facts 3).
    pub fn can_encrypt(&self) -> bool {
        matches!(self, Self::Sspi(_))
    }
}

impl From<Mechanism> for AuthMethod {
    fn from(mechanism: Mechanism) -> Self {
        Self::Sspi(mechanism)
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic => f.write_str("Basic"),
            Self::Sspi(mechanism) => write!(f, "{mechanism}"),
            Self::Certificate => f.write_str("Certificate"),
        }
    }
}

/// Whether SOAP bodies are sealed with the security context (MS-WSMV 2.2.9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encryption {
    /// On over HTTP, off over HTTPS (TLS protects the messages), as pypsrp's `auto`.
    #[default]
    Auto,
    /// Always sealed, over HTTPS too.
    Always,
    /// Never sealed: plaintext bodies over HTTP need AllowUnencrypted on the host.
    Never,
}

/// Where to connect and how to authenticate.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Host name or IP address (IPv6 with or without brackets): the `Host` header, the
    /// SPN and the name the TLS certificate must carry.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The listener path, normally `/wsman`.
    pub path: String,
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// How to authenticate.
    pub auth: AuthMethod,
    /// Who to authenticate as.
    pub credential: Credential,
    /// Message encryption.
    pub encryption: Encryption,
    /// The TLS client for HTTPS; `None` builds one with [`TlsOptions::default`] (system
    /// roots, full verification) on each connect.
    pub tls: Option<TlsClient>,
    /// The client certificate of [`AuthMethod::Certificate`], presented when the server
    /// asks for one in the TLS handshake.
    pub client_certificate: Option<Arc<ClientCertificate>>,
    /// Where the KDC is and what the service is called (Kerberos, and Negotiate when it
    /// tries Kerberos first).
    pub kerberos: KerberosOptions,
    /// Name resolution (overrides and timeout).
    pub resolver: Arc<Resolver>,
    /// Connect to this address instead of resolving `host` (the inventory address).
    pub address: Option<IpAddr>,
    /// Time allowed to open the TCP connection and finish the TLS handshake.
    pub connect_timeout: Duration,
    /// Time allowed for each request, from sending to the end of the response body.
    pub request_timeout: Duration,
    /// The largest response body accepted.
    pub max_response_bytes: usize,
    /// Hooks around each new TCP connect (a scheduler's rate limits and forks); none by
    /// default.
    pub gate: Option<Arc<dyn ConnectGate>>,
}

/// What [`ConnectGate`]'s hooks return: `Err` refuses the connection (nothing is sent; the
/// error becomes [`TransportError::Connect`]).
pub type GateFuture<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;

/// Hooks a scheduler puts around every new TCP connection a [`Connection`] opens (a
/// reconnect is a new connection; a kept-alive one passes no hook), so that rate limits
/// count connections exactly and a connect that hangs on a SYN need not hold a work slot
/// (docs/scheduling.md).
pub trait ConnectGate: Send + Sync + fmt::Debug {
    /// Awaited right before each `TcpStream::connect`, after name resolution; the connect
    /// timeout starts when it returns.
    fn before_connect(&self) -> GateFuture<'_>;

    /// Awaited once the TCP connection is open, before TLS and authentication; the time
    /// it takes does not count against the connect timeout.
    fn after_connect(&self) -> GateFuture<'_>;
}

impl ConnectionConfig {
    /// A configuration for `http://host:port/wsman` with the default timeouts and limits.
    pub fn new(host: &str, port: u16, auth: impl Into<AuthMethod>, credential: Credential) -> Self {
        Self {
            host: host.to_owned(),
            port,
            path: DEFAULT_PATH.to_owned(),
            scheme: Scheme::Http,
            auth: auth.into(),
            credential,
            encryption: Encryption::Auto,
            tls: None,
            client_certificate: None,
            kerberos: KerberosOptions::default(),
            resolver: Arc::new(Resolver::default()),
            address: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            gate: None,
        }
    }

    /// A configuration for `endpoint`.
    pub fn for_endpoint(
        endpoint: &Endpoint,
        auth: impl Into<AuthMethod>,
        credential: Credential,
    ) -> Self {
        let mut config = Self::new(&endpoint.host.to_string(), endpoint.port, auth, credential);
        config.scheme = endpoint.scheme;
        config.path = endpoint.path.clone();
        config
    }

    /// Whether [`Connection::connect_and_send`] can put the first request on an
    /// authentication leg with these settings (an SSPI mechanism over HTTPS without message
    /// encryption); otherwise it is `connect` then `send`.
    pub fn can_carry_first_request(&self) -> bool {
        matches!(self.auth, AuthMethod::Sspi(_))
            && self.scheme == Scheme::Https
            && !self.seals_messages()
    }

    /// True when messages are sealed: [`Encryption::Auto`] seals over HTTP only.
    pub fn seals_messages(&self) -> bool {
        self.auth.can_encrypt()
            && match self.encryption {
                Encryption::Auto => self.scheme == Scheme::Http,
                Encryption::Always => true,
                Encryption::Never => false,
            }
    }

    /// True when SOAP bodies would cross plain HTTP unencrypted (Basic, or encryption
    /// turned off): what the pre-send check and the host's AllowUnencrypted refuse.
    pub fn plaintext_over_http(&self) -> bool {
        self.scheme == Scheme::Http && !self.seals_messages()
    }
}

/// A response to [`Connection::send`], unsealed when it came sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status: 200, or 500 when the body is a WS-Man fault.
    pub status: u16,
    /// The SOAP envelope.
    pub body: Vec<u8>,
}

impl Reply {
    /// True when the server answered 500, i.e. the body is a SOAP fault (MS-WSMV 2.2.9.1.1;
    /// every recorded fault is a 500, wire-facts section 1).
    pub fn is_fault(&self) -> bool {
        self.status == StatusCode::INTERNAL_SERVER_ERROR.as_u16()
    }
}

/// Where in the life of a connection an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Resolving the host, opening the TCP connection, the TLS handshake.
    Connect,
    /// The first authentication leg (the NEGOTIATE token).
    Negotiate,
    /// Later authentication legs (the AUTHENTICATE token and after).
    Authenticate,
    /// A SOAP message on the authenticated connection.
    Message,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Negotiate => "negotiate leg",
            Self::Authenticate => "authenticate leg",
            Self::Message => "message",
        })
    }
}

/// A response that broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A 200 or 500 body that is not `multipart/encrypted` on a connection whose messages
    /// are encrypted (the reply could have been forged by anyone on the path).
    UnencryptedBody {
        /// The HTTP status.
        status: u16,
        /// The Content-Type header, if any (truncated).
        content_type: Option<String>,
        /// The body length.
        len: usize,
    },
    /// A sealed body on a connection that has no security context to unseal it (Basic).
    EncryptedWithoutContext,
    /// A `WWW-Authenticate: Negotiate` token that is not valid base64.
    BadTokenEncoding,
    /// The server accepted (200) before the authentication exchange was complete, or
    /// sent no final SPNEGO token, so the context cannot be completed.
    AcceptedBeforeComplete,
    /// The context wanted to send another token after the server's 200.
    TokenAfterAccept,
    /// More than the allowed number of authentication legs.
    TooManyLegs,
    /// A 401 carrying a new NTLM challenge after the client sent its AUTHENTICATE
    /// message: NTLM has three messages, so the server is restarting the exchange, which
    /// a hostile server could do forever (issue 8). A refused proof carries no token
    /// (wire-facts 1.4) and stays [`TransportError::CredentialsRejected`].
    ChallengeAfterProof,
    /// The response was not valid HTTP/1.1.
    MalformedHttp,
}

impl fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnencryptedBody {
                status,
                content_type,
                len,
            } => write!(
                f,
                "HTTP {status} with an unencrypted body of {len} bytes (content type {content_type:?})"
            ),
            Self::EncryptedWithoutContext => {
                f.write_str("an encrypted body on a connection without a security context")
            }
            Self::BadTokenEncoding => f.write_str("authentication token is not valid base64"),
            Self::AcceptedBeforeComplete => {
                f.write_str("server accepted before authentication completed")
            }
            Self::TokenAfterAccept => {
                f.write_str("authentication wanted another leg after the server accepted")
            }
            Self::TooManyLegs => write!(f, "more than {MAX_AUTH_LEGS} authentication legs"),
            Self::ChallengeAfterProof => {
                f.write_str("a new NTLM challenge after the authentication proof was sent")
            }
            Self::MalformedHttp => f.write_str("malformed HTTP response"),
        }
    }
}

/// Why a connection could not be made or a message not exchanged.
///
/// Any error from [`Connection::send`] leaves the connection unusable (its sequence
/// numbers or HTTP state may be out of step); open a new one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The host or path cannot be used in a request (the RFC 1123 check, an empty host,
    /// a path without `/`).
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        /// The host or path.
        target: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The request could not be built (a header value that HTTP cannot carry, a setting
    /// combination that cannot work).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The host name did not resolve (Windows: "the server name cannot be resolved",
    /// 2150859193).
    #[error("cannot resolve {host:?}: {source}")]
    Dns {
        /// The host name.
        host: String,
        /// The resolver's error (`TimedOut` when the resolution timeout ran out).
        #[source]
        source: io::Error,
    },
    /// TCP RST on connect: nothing listens on the port (Windows 0x80338012).
    #[error("connection to {addr} refused")]
    ConnectionRefused {
        /// The address tried last.
        addr: SocketAddr,
    },
    /// The TCP connection (or the TLS handshake) did not complete within the connect
    /// timeout (a filtered port or an unreachable host, Windows 0x80338126).
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The address tried last.
        addr: SocketAddr,
        /// The connect timeout.
        timeout: Duration,
    },
    /// Any other connect failure (host or network unreachable, ...).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS client could not be set up (CA bundle, thumbprint).
    #[error("TLS set-up failed: {0}")]
    TlsSetup(#[source] Arc<TlsSetupError>),
    /// The TLS handshake failed; `failure` says which check.
    #[error("TLS with {addr} failed: {failure}")]
    Tls {
        /// The server address.
        addr: SocketAddr,
        /// Which check failed.
        failure: TlsFailure,
    },
    /// No complete response within the request timeout.
    #[error("no response within {timeout:?} ({phase})")]
    RequestTimeout {
        /// What the request was.
        phase: Phase,
        /// The request timeout.
        timeout: Duration,
    },
    /// The connection was reset or closed before a complete response arrived.
    #[error("connection closed without a response ({phase})")]
    ConnectionClosed {
        /// What the request was.
        phase: Phase,
        /// Over HTTP or HTTPS (plain HTTP sent to a TLS listener is closed unanswered,
        /// wire-facts 1.8).
        scheme: Scheme,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// Another HTTP-level failure.
    #[error("HTTP failure ({phase})")]
    Http {
        /// What the request was.
        phase: Phase,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// A 401 offering no scheme this method can use (wire-facts 1.2: the mechanism is
    /// disabled on the server). For certificate authentication, which WinRM never lists:
    /// a 401 from a listener that did not ask for a client certificate.
    #[error("server does not offer the {scheme} scheme (offered: {offered:?})")]
    MechanismNotOffered {
        /// The scheme wanted.
        scheme: &'static str,
        /// The schemes the 401 offered.
        offered: Vec<String>,
    },
    /// A 401 after the client sent its proof (the NTLM AUTHENTICATE message, a Kerberos
    /// AP-REQ, CredSSP's delegated credentials, a Basic header, a client certificate the
    /// host asked for): bad password, unknown user or unmapped certificate, an
    /// authorization refusal that looks the same on the wire (wire-facts 1.1 and 1.4), or
    /// over HTTPS a channel-binding mismatch.
    #[error("credentials for {user:?} rejected (offered: {offered:?})")]
    CredentialsRejected {
        /// The user name that was refused.
        user: String,
        /// The schemes the final 401 offered.
        offered: Vec<String>,
        /// True when the exchange carried TLS channel bindings (a mismatch would also
        /// end here, wire-facts 1.4).
        channel_bound: bool,
    },
    /// The host refused the client certificate of certificate authentication: a fatal TLS
    /// alert after it asked for the certificate (not issued by a CA it trusts, expired,
    /// no client-authentication usage). Under TLS 1.3 the alert comes after the client's
    /// handshake is over, so it surfaces on the first request.
    #[error("{addr} refused the client certificate (TLS: {alert})")]
    ClientCertificateRefused {
        /// The server address.
        addr: SocketAddr,
        /// The alert, or the handshake failure, as rustls reported it.
        alert: String,
    },
    /// The host refused a plaintext message on an authenticated HTTP connection: 500 with
    /// an empty body, or 401 (wire-facts 1.3: AllowUnencrypted is false).
    #[error("the host refused an unencrypted message (HTTP {status})")]
    PlaintextRefused {
        /// 500 or 401.
        status: u16,
    },
    /// An HTTP status that ends the exchange (404 wrong path, 405, 413 envelope too large,
    /// 401 on an established connection, 500 with an empty body, ...).
    #[error("HTTP {status} ({phase})")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// What the request was.
        phase: Phase,
        /// The schemes offered in `WWW-Authenticate`, if any.
        offered: Vec<String>,
        /// The response body length.
        body_len: usize,
    },
    /// The local security context refused a server token (malformed challenge, failed
    /// mechListMIC, ...) or could not be created (phase Connect).
    #[error("authentication failed ({phase})")]
    Auth {
        /// Which leg.
        phase: Phase,
        /// The context's error.
        #[source]
        source: AuthError,
    },
    /// Sealing a request or unsealing a response failed (bad signature, wrong sequence
    /// number, malformed multipart framing).
    #[error("message encryption failed")]
    Encryption(#[source] FramingError<AuthError>),
    /// A redirection (301, 302, 303, 307, 308). It is not followed by a [`Connection`]:
    /// the Windows client refuses redirections unless `-AllowRedirection` is given, since
    /// following one sends the credentials to another server (`ops` follows them only
    /// when allowed).
    #[error("HTTP {status} redirection to {location:?} not followed ({phase})")]
    Redirected {
        /// The status code.
        status: u16,
        /// The `Location` header (at most 512 characters), if any.
        location: Option<String>,
        /// What the request was.
        phase: Phase,
    },
    /// A response body exceeded the configured limit.
    #[error("response body exceeds {limit} bytes ({phase})")]
    ResponseTooLarge {
        /// What the request was.
        phase: Phase,
        /// The limit.
        limit: usize,
    },
    /// The server broke the protocol.
    #[error("protocol violation ({phase}): {violation}")]
    Protocol {
        /// What the request was.
        phase: Phase,
        /// What was wrong.
        violation: ProtocolViolation,
    },
    /// An earlier error left this connection unusable.
    #[error("the connection is unusable after an earlier error")]
    Unusable,
}

impl TransportError {
    /// The failure bucket this error points to (wire-facts section 6), for the engine's
    /// classifier; `None` for local set-up problems that are not about the host.
    pub fn bucket(&self) -> Option<Bucket> {
        Some(match self {
            Self::InvalidTarget { .. } => Bucket::HostContainsInvalidCharacters,
            Self::InvalidRequest(_) | Self::TlsSetup(_) | Self::Unusable => return None,
            Self::Dns { .. } => Bucket::InvalidDns,
            Self::ConnectionRefused { .. } => Bucket::InvalidPort,
            Self::ConnectTimeout { .. } | Self::Connect { .. } => Bucket::InvalidHostName,
            Self::Tls { failure, .. } if failure.is_certificate() => Bucket::InvalidCertificate,
            // TLS to a port that answers in plaintext or hangs up: not an HTTPS listener.
            Self::Tls {
                failure: TlsFailure::PlaintextPeer | TlsFailure::Closed,
                ..
            } => Bucket::InvalidPort,
            Self::Tls { .. } => Bucket::ProtocolError,
            // Plain HTTP to a TLS listener: closed without a word on the first request.
            Self::ConnectionClosed {
                phase: Phase::Negotiate,
                scheme: Scheme::Http,
                ..
            } => Bucket::InvalidProtocol,
            Self::ConnectionClosed { .. } => Bucket::ServiceError,
            // The first answer on a fresh connection is not HTTP: a TLS listener's alert.
            Self::Protocol {
                phase: Phase::Negotiate,
                violation: ProtocolViolation::MalformedHttp,
            } => Bucket::InvalidProtocol,
            Self::RequestTimeout { .. } => Bucket::Timeout,
            Self::MechanismNotOffered { .. } => Bucket::AccessDenied,
            Self::CredentialsRejected { .. } | Self::ClientCertificateRefused { .. } => {
                Bucket::InvalidCredentials
            }
            Self::PlaintextRefused { .. } => Bucket::EncryptionRequired,
            // A 401 on an authenticated connection: the service-level authorization
            // refusal of wire-facts 1.1 looks like bad credentials.
            Self::HttpStatus { status: 401, .. } => Bucket::InvalidCredentials,
            Self::HttpStatus { .. } => Bucket::ServiceError,
            // Kerberos and CredSSP failures name their bucket themselves (KDC, realm,
            // credentials); a context that could not even be created is a mechanism
            // unusable here.
            Self::Auth { source, .. } if source.bucket().is_some() => return source.bucket(),
            Self::Auth {
                phase: Phase::Connect,
                ..
            } => Bucket::ClientAuthenticationDisabled,
            Self::Auth { .. }
            | Self::Encryption(_)
            | Self::Redirected { .. }
            | Self::ResponseTooLarge { .. }
            | Self::Protocol { .. }
            | Self::Http { .. } => Bucket::ProtocolError,
        })
    }

    /// Whether the request may have been received and acted on: false only when it
    /// provably never reached WinRM (no connection, a failure on an authentication leg,
    /// which carries no SOAP body, or an HTTP-level refusal such as a 401). Timeouts, cuts
    /// and unreadable replies to the message itself may follow a Create the host carried
    /// out (ops deletes its shell then). A leg that carries the request reports its
    /// failures as [`Phase::Message`] for this reason.
    pub fn may_have_reached_server(&self) -> bool {
        let phase = match self {
            Self::InvalidTarget { .. }
            | Self::InvalidRequest(_)
            | Self::Dns { .. }
            | Self::ConnectionRefused { .. }
            | Self::ConnectTimeout { .. }
            | Self::Connect { .. }
            | Self::TlsSetup(_)
            | Self::Tls { .. }
            | Self::MechanismNotOffered { .. }
            | Self::CredentialsRejected { .. }
            | Self::ClientCertificateRefused { .. }
            | Self::PlaintextRefused { .. }
            | Self::Redirected { .. } => return false,
            Self::HttpStatus { status, .. } => return !(400..500).contains(status),
            Self::Auth { phase, .. }
            | Self::ConnectionClosed { phase, .. }
            | Self::RequestTimeout { phase, .. }
            | Self::Http { phase, .. }
            | Self::ResponseTooLarge { phase, .. }
            | Self::Protocol { phase, .. } => *phase,
            Self::Encryption(_) | Self::Unusable => return true,
        };
        phase == Phase::Message
    }

    /// True for failures a later attempt on a new connection may not meet (a connection
    /// cut mid-exchange, an empty 500, a timeout): a hint for the scheduler's requeue.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ConnectionClosed { phase, .. } => *phase != Phase::Negotiate,
            Self::RequestTimeout { .. } | Self::Http { .. } | Self::Unusable => true,
            Self::HttpStatus {
                status: 500,
                body_len: 0,
                ..
            } => true,
            _ => false,
        }
    }
}

impl From<TargetError> for TransportError {
    fn from(error: TargetError) -> Self {
        let (target, reason) = match &error {
            TargetError::HostContainsInvalidCharacters { host, reason } => (host.clone(), *reason),
            TargetError::InvalidPath { path, reason } => (path.clone(), *reason),
            TargetError::InvalidUri { uri, reason } => (uri.clone(), *reason),
            other => (other.to_string(), "refused before sending"),
        };
        Self::InvalidTarget { target, reason }
    }
}

/// An HTTP/1.1 connection to one WinRM listener, authenticated (or about to be, for Basic:
/// on every request).
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
    /// The connection-bound context (NTLM, Negotiate, ...), if any.
    context: Option<Box<ClientContext>>,
    /// The `Authorization` header of a method without an exchange, sent on every request:
    /// Basic credentials (marked sensitive) or the certificate profile URI.
    per_request: Option<HeaderValue>,
    /// How the connection authenticates.
    auth: AuthMethod,
    /// Certificate authentication: what the TLS handshake did with the client certificate.
    certificate: Option<Arc<CertificateResolver>>,
    /// True when messages are sealed with `context`.
    seal: bool,
    uri: Uri,
    host_header: HeaderValue,
    peer: SocketAddr,
    scheme: Scheme,
    tls: Option<TlsSession>,
    user: String,
    offered: Vec<String>,
    request_timeout: Duration,
    max_response_bytes: usize,
    usable: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("scheme", &self.scheme)
            .field("uri", &self.uri)
            .field("context", &self.context)
            .field("auth", &self.auth)
            .field("per_request", &self.per_request.is_some())
            .field("seal", &self.seal)
            .field("offered", &self.offered)
            .field("usable", &self.usable)
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The driver task owns the socket; stopping it closes the connection.
        self.driver.abort();
    }
}

impl Connection {
    /// Resolves the host, opens the TCP connection (and TLS for HTTPS) and authenticates
    /// it. Nothing is sent when the host, path or settings are unusable.
    pub async fn connect(config: &ConnectionConfig) -> Result<Self, TransportError> {
        match config.auth {
            AuthMethod::Basic if config.encryption == Encryption::Always => {
                return Err(TransportError::InvalidRequest(
                    "Basic authentication cannot encrypt messages",
                ));
            }
            AuthMethod::Certificate if config.encryption == Encryption::Always => {
                return Err(TransportError::InvalidRequest(
                    "certificate authentication cannot encrypt messages",
                ));
            }
            AuthMethod::Certificate if config.scheme != Scheme::Https => {
                return Err(TransportError::InvalidRequest(
                    "certificate authentication needs HTTPS",
                ));
            }
            AuthMethod::Certificate if config.client_certificate.is_none() => {
                return Err(TransportError::InvalidRequest(
                    "certificate authentication needs a client certificate",
                ));
            }
            _ => {}
        }
        let mut conn = Self::open(config).await?;
        match config.auth {
            AuthMethod::Certificate => {
                conn.per_request = Some(HeaderValue::from_static(CERTIFICATE_AUTH_HEADER));
            }
            AuthMethod::Basic => {
                let password =
                    config
                        .credential
                        .password("Basic")
                        .map_err(|source| TransportError::Auth {
                            phase: Phase::Connect,
                            source,
                        })?;
                let secret = format!("{}:{password}", config.credential.user());
                let mut value = HeaderValue::from_str(&format!("Basic {}", BASE64.encode(secret)))
                    .map_err(|_| {
                        TransportError::InvalidRequest(
                            "the user name or password cannot travel in a Basic header",
                        )
                    })?;
                value.set_sensitive(true);
                conn.per_request = Some(value);
            }
            AuthMethod::Sspi(mechanism) => {
                let options = ContextOptions {
                    channel_bindings: conn.tls.as_ref().map(|t| t.channel_bindings.clone()),
                    kerberos: config.kerberos.clone(),
                };
                let context = ClientContext::with_options(
                    mechanism,
                    &config.credential,
                    &config.host,
                    &options,
                )
                .map_err(|source| TransportError::Auth {
                    phase: Phase::Connect,
                    source,
                })?;
                conn.context = Some(Box::new(context));
                conn.seal = config.seals_messages();
                conn.authenticate(None).await?;
            }
        }
        conn.usable = true;
        Ok(conn)
    }

    /// [`Connection::connect`] followed by [`Connection::send`] of `soap`, one round trip
    /// shorter over TLS with NTLM: with an SSPI mechanism over HTTPS and no message
    /// encryption, `soap` rides on the leg that completes the client's context (raw NTLM's
    /// AUTHENTICATE) and the server's answer to it is the reply (BENCHMARKS.md "Round trips
    /// per host": 8 -> 7 requests for a script). SPNEGO and Kerberos complete only with
    /// the server's last token, so they keep the two-step exchange. That is what
    /// pypsrp and pywinrm do against Windows (wire-facts 3, "HTTPS without message
    /// encryption: the SOAP body rides on the auth legs"; the recorded HTTPS traffic in
    /// `../shared/conformance` came from such a client). Over HTTP the legs stay empty: no
    /// body may travel before the context can seal it (wire-facts 3, "Handshake
    /// ordering"). Errors are those of `connect` and `send`.
    pub async fn connect_and_send(
        config: &ConnectionConfig,
        soap: &[u8],
    ) -> Result<(Self, Reply), TransportError> {
        let mechanism = match config.auth {
            AuthMethod::Sspi(mechanism) if config.can_carry_first_request() => mechanism,
            _ => {
                let mut conn = Self::connect(config).await?;
                let reply = conn.send(soap).await?;
                return Ok((conn, reply));
            }
        };
        let mut conn = Self::open(config).await?;
        let options = ContextOptions {
            channel_bindings: conn.tls.as_ref().map(|t| t.channel_bindings.clone()),
            kerberos: config.kerberos.clone(),
        };
        let context =
            ClientContext::with_options(mechanism, &config.credential, &config.host, &options)
                .map_err(|source| TransportError::Auth {
                    phase: Phase::Connect,
                    source,
                })?;
        conn.context = Some(Box::new(context));
        conn.seal = false;
        let carried = conn.authenticate(Some(soap)).await?;
        conn.usable = true;
        let reply = match carried {
            Some(reply) => reply,
            None => conn.send(soap).await?,
        };
        Ok((conn, reply))
    }

    /// Sends `soap` (sealed when message encryption is on) and returns the reply (status
    /// 200 or 500), unsealed when it came sealed.
    ///
    /// Any error leaves the connection unusable: later calls return
    /// [`TransportError::Unusable`]. So does dropping the future before it completes (an
    /// outer timeout, a cancelled task): a request may then be half sent, or a sealed
    /// message may have consumed a sequence number the server never saw.
    pub async fn send(&mut self, soap: &[u8]) -> Result<Reply, TransportError> {
        if !self.usable {
            return Err(TransportError::Unusable);
        }
        self.usable = false;
        let reply = if self.seal {
            self.exchange_encrypted(soap).await?
        } else {
            self.exchange_plain(soap).await?
        };
        self.usable = true;
        Ok(reply)
    }

    /// The schemes offered by the last 401's `WWW-Authenticate` headers, as sent
    /// (`Negotiate`, `Basic`, ...): a refusal lists every enabled scheme, a 401 that
    /// continues an exchange only its own; empty when no 401 came (Basic, a certificate,
    /// Kerberos accepted on its first leg).
    pub fn offered_schemes(&self) -> &[String] {
        &self.offered
    }

    /// The address the connection is open to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The authentication mechanism of a connection-bound context, if any.
    pub fn mechanism(&self) -> Option<Mechanism> {
        self.context.as_ref().map(|c| c.mechanism())
    }

    /// How the connection authenticated.
    pub fn auth_method(&self) -> AuthMethod {
        self.auth
    }

    /// True when the connection authenticated with Kerberos: [`Mechanism::Kerberos`], or
    /// Negotiate that settled on Kerberos rather than NTLM.
    pub fn uses_kerberos(&self) -> bool {
        self.context.as_ref().is_some_and(|c| c.uses_kerberos())
    }

    /// True when messages are sealed on this connection.
    pub fn seals(&self) -> bool {
        self.seal
    }

    /// HTTP or HTTPS.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The TLS session (server certificate, channel bindings) of an HTTPS connection.
    pub fn tls_session(&self) -> Option<&TlsSession> {
        self.tls.as_ref()
    }

    /// False once an error has left the connection unusable or the server closed it.
    pub fn is_usable(&self) -> bool {
        self.usable && !self.sender.is_closed()
    }

    /// Opens the TCP (and TLS) connection and the HTTP/1.1 client on it, unauthenticated.
    async fn open(config: &ConnectionConfig) -> Result<Self, TransportError> {
        let host = Host::parse(&config.host)?;
        let host_header = host_header(&host, config.port)?;
        let uri = request_uri(&config.path)?;
        let mut tls_client = match (config.scheme, &config.tls) {
            (Scheme::Http, _) => None,
            (Scheme::Https, Some(client)) => Some(client.clone()),
            (Scheme::Https, None) => Some(
                TlsClient::new(&TlsOptions::default())
                    .map_err(|e| TransportError::TlsSetup(Arc::new(e)))?,
            ),
        };
        // Certificate authentication: this connection's TLS client presents the
        // certificate, through a resolver of its own that notes whether the server asked.
        let mut certificate = None;
        if let (AuthMethod::Certificate, Some(client), Some(cert)) =
            (config.auth, tls_client.as_mut(), &config.client_certificate)
        {
            let resolver = Arc::new(cert.resolver());
            *client = client.with_client_cert_resolver(Arc::clone(&resolver) as _);
            certificate = Some(resolver);
        }
        let addrs = match config.address {
            Some(ip) => vec![SocketAddr::new(ip, config.port)],
            None => config
                .resolver
                .resolve(&host, config.port)
                .await
                .map_err(|e| TransportError::Dns {
                    host: e.host,
                    source: e.source,
                })?,
        };
        let (stream, peer, deadline) =
            open_tcp(&addrs, config.connect_timeout, config.gate.as_deref()).await?;
        let (sender, driver, tls) = match tls_client {
            None => {
                let (sender, driver) = start_http(TokioIo::new(stream)).await?;
                (sender, driver, None)
            }
            Some(client) => {
                let name = host.to_string();
                let stream = FirstBytes::new(stream);
                let first = Arc::clone(&stream.record);
                let (stream, session) = timeout_at(deadline, client.connect(&name, stream))
                    .await
                    .map_err(|_| TransportError::ConnectTimeout {
                        addr: peer,
                        timeout: config.connect_timeout,
                    })?
                    .map_err(|failure| {
                        let failure = plaintext_or_garbage(
                            failure,
                            &first
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner),
                        );
                        match (&failure, &certificate) {
                            // TLS 1.2: the refusal ends the handshake, after the server
                            // asked for the certificate (cipher and version are settled
                            // before that).
                            (TlsFailure::Handshake(alert), Some(resolver))
                                if resolver.was_requested() =>
                            {
                                TransportError::ClientCertificateRefused {
                                    addr: peer,
                                    alert: alert.clone(),
                                }
                            }
                            _ => TransportError::Tls {
                                addr: peer,
                                failure,
                            },
                        }
                    })?;
                let (sender, driver) = start_http(TokioIo::new(stream)).await?;
                (sender, driver, Some(session))
            }
        };
        Ok(Self {
            sender,
            driver,
            context: None,
            per_request: None,
            auth: config.auth,
            certificate,
            seal: false,
            uri,
            host_header,
            peer,
            scheme: config.scheme,
            tls,
            user: config.credential.user().to_owned(),
            offered: Vec::new(),
            request_timeout: config.request_timeout,
            max_response_bytes: config.max_response_bytes,
            usable: false,
        })
    }

    /// Runs the empty-body authentication legs until the server answers 200.
    ///
    /// A 401 carrying a token of the scheme continues the exchange (NTLM's CHALLENGE,
    /// each CredSSP flight); a 401 without one after the client's proof went out (NTLM's
    /// AUTHENTICATE, a Kerberos AP-REQ, the delegated CredSSP credentials) is the server
    /// refusing it (wire-facts 1.4).
    ///
    /// With `soap`, the leg that completes the client's context carries it, and the
    /// server's answer to that leg (200, or 500 with a fault) is its reply; `None` when no
    /// leg could carry it (the caller sends it next).
    async fn authenticate(&mut self, soap: Option<&[u8]>) -> Result<Option<Reply>, TransportError> {
        let context = self.context()?;
        let mechanism = context.mechanism();
        let scheme = mechanism.http_scheme();
        let channel_bound = context.is_channel_bound();
        let mut input: Option<Vec<u8>> = None;
        // True once a sent token carried the client's proof: a token answering a server
        // token, or a Kerberos AP-REQ (the first token). From then on a 401 without a
        // token means the server refused it.
        let mut proof_sent = false;
        for leg in 0..MAX_AUTH_LEGS {
            let phase = if leg == 0 {
                Phase::Negotiate
            } else {
                Phase::Authenticate
            };
            let step = match self.context()?.step_async(input.as_deref()).await {
                Ok(step) => step,
                // A 401 token the context cannot take after the proof went out (an SPNEGO
                // reject): the server refused the credentials. CredSSP's refusal is an
                // error TSRequest that names its NTSTATUS, kept as it is.
                Err(AuthError::Sspi { .. }) if proof_sent && mechanism != Mechanism::CredSsp => {
                    return Err(self.rejected(channel_bound));
                }
                Err(source) => return Err(TransportError::Auth { phase, source }),
            };
            let Some(token) = step.token else {
                // Only a complete context has nothing to send, and a complete context
                // ended the loop below; anything else is a context that stalled.
                return Err(TransportError::Protocol {
                    phase,
                    violation: ProtocolViolation::AcceptedBeforeComplete,
                });
            };
            proof_sent |= input.is_some() || self.context()?.uses_kerberos();
            let authorization = format!("{scheme} {}", BASE64.encode(&token));
            let authorization = HeaderValue::from_str(&authorization)
                .map_err(|_| TransportError::InvalidRequest("a token header is not valid"))?;
            // The request rides only on the leg after which the context is complete
            // (raw NTLM's AUTHENTICATE): the server's 200 to it can then only be the
            // reply. SPNEGO and Kerberos wait for the server's last token, so their legs
            // stay empty and the request follows as usual.
            let carried = match soap {
                Some(soap) if self.context()?.is_complete() => Some(soap),
                _ => None,
            };
            // A leg carrying the request is the message's own exchange: its failures may
            // follow a request the host carried out (ops' cleanup of a Create relies on it).
            let phase = if carried.is_some() {
                Phase::Message
            } else {
                phase
            };
            let response = self
                .exchange(
                    carried.map_or_else(Vec::new, <[u8]>::to_vec),
                    HeaderValue::from_static(SOAP_CONTENT_TYPE),
                    Some(authorization),
                    &[],
                    phase,
                )
                .await?;
            let challenges = parse_challenges(&response.headers);
            // What a 401 offers; a 200's header only carries the final token.
            if response.status == StatusCode::UNAUTHORIZED && !challenges.is_empty() {
                self.offered = challenges.iter().map(|c| c.scheme.clone()).collect();
            }
            let server_token = negotiate_token(&challenges, scheme)
                .map_err(|violation| TransportError::Protocol { phase, violation })?;
            match response.status {
                StatusCode::UNAUTHORIZED => {
                    if proof_sent && server_token.as_deref().is_some_and(carries_ntlm_challenge) {
                        return Err(TransportError::Protocol {
                            phase,
                            violation: ProtocolViolation::ChallengeAfterProof,
                        });
                    }
                    if !self.offered_scheme(scheme) {
                        return Err(TransportError::MechanismNotOffered {
                            scheme,
                            offered: self.offered.clone(),
                        });
                    }
                    let complete = self.context()?.is_complete();
                    match server_token {
                        // The exchange goes on.
                        Some(server_token) if !complete => input = Some(server_token),
                        _ if proof_sent || complete => {
                            return Err(self.rejected(channel_bound));
                        }
                        // The server refused the first token itself.
                        _ => return Err(self.status_error(&response, phase)),
                    }
                }
                StatusCode::OK => {
                    self.finish_on_accept(server_token, phase).await?;
                    return Ok(carried.map(|_| Reply {
                        status: 200,
                        body: response.body,
                    }));
                }
                // The carried request failed after the server accepted the proof: its
                // fault is the reply, once the context is complete.
                StatusCode::INTERNAL_SERVER_ERROR
                    if carried.is_some() && proof_sent && !response.body.is_empty() =>
                {
                    self.finish_on_accept(server_token, phase).await?;
                    return Ok(Some(Reply {
                        status: 500,
                        body: response.body,
                    }));
                }
                _ => return Err(self.status_error(&response, phase)),
            }
        }
        Err(TransportError::Protocol {
            phase: Phase::Authenticate,
            violation: ProtocolViolation::TooManyLegs,
        })
    }

    /// The server refused the credentials after a complete exchange.
    fn rejected(&self, channel_bound: bool) -> TransportError {
        TransportError::CredentialsRejected {
            user: self.user.clone(),
            offered: self.offered.clone(),
            channel_bound,
        }
    }

    /// The connection-bound context; only authenticated SSPI connections reach the
    /// paths that call this.
    fn context(&mut self) -> Result<&mut ClientContext, TransportError> {
        self.context
            .as_deref_mut()
            .ok_or(TransportError::InvalidRequest(
                "no security context on this connection",
            ))
    }

    /// Completes the context when the server answered 200 to an authentication leg.
    async fn finish_on_accept(
        &mut self,
        server_token: Option<Vec<u8>>,
        phase: Phase,
    ) -> Result<(), TransportError> {
        let context = self.context()?;
        if !context.is_complete() {
            // SPNEGO: the final token carries the server's mechListMIC; processing it
            // completes the context (MS-SPNG 3.1.5.1).
            let Some(token) = server_token else {
                return Err(TransportError::Protocol {
                    phase,
                    violation: ProtocolViolation::AcceptedBeforeComplete,
                });
            };
            let step = context
                .step_async(Some(&token))
                .await
                .map_err(|source| TransportError::Auth { phase, source })?;
            if step.token.is_some() {
                return Err(TransportError::Protocol {
                    phase,
                    violation: ProtocolViolation::TokenAfterAccept,
                });
            }
            if !step.complete {
                return Err(TransportError::Protocol {
                    phase,
                    violation: ProtocolViolation::AcceptedBeforeComplete,
                });
            }
        } else if server_token.is_some() {
            // Raw NTLM is complete after AUTHENTICATE; a final token has nothing to add.
            tracing::debug!("ignoring a server token on the 200 of a complete NTLM context");
        }
        tracing::debug!(peer = %self.peer, scheme = %self.scheme, "authenticated");
        Ok(())
    }

    /// Sends one sealed message and unseals the answer.
    async fn exchange_encrypted(&mut self, soap: &[u8]) -> Result<Reply, TransportError> {
        let context = self.context()?;
        let protocol = context.mechanism().protocol();
        let sealed =
            encryption::encrypt(context, protocol, soap).map_err(TransportError::Encryption)?;
        let response = self
            .exchange(
                sealed.body,
                sealed_content_type(&sealed.content_type),
                None,
                &[],
                Phase::Message,
            )
            .await?;
        let status = response.status;
        match status {
            StatusCode::OK => {}
            // A 500 with an empty body is its own class: the server refused the message
            // before decrypting it (wire-facts 1.3, winrm4j#144).
            StatusCode::INTERNAL_SERVER_ERROR if !response.body.is_empty() => {}
            _ => {
                self.note_challenges(&response);
                return Err(self.status_error(&response, Phase::Message));
            }
        }
        let content_type = content_type(&response.headers);
        if encryption::is_encrypted_content_type(content_type).is_none() {
            return Err(TransportError::Protocol {
                phase: Phase::Message,
                violation: ProtocolViolation::UnencryptedBody {
                    status: status.as_u16(),
                    content_type: response
                        .headers
                        .get(CONTENT_TYPE)
                        .map(|v| truncate(&String::from_utf8_lossy(v.as_bytes()))),
                    len: response.body.len(),
                },
            });
        }
        let body = encryption::decrypt(self.context()?, content_type, &response.body)
            .map_err(TransportError::Encryption)?;
        Ok(Reply {
            status: status.as_u16(),
            body,
        })
    }

    /// Sends one plaintext message (HTTPS, Basic, or encryption turned off).
    async fn exchange_plain(&mut self, soap: &[u8]) -> Result<Reply, TransportError> {
        let authorization = self.per_request.clone();
        let response = self
            .exchange(
                soap.to_vec(),
                HeaderValue::from_static(SOAP_CONTENT_TYPE),
                authorization,
                &[],
                Phase::Message,
            )
            .await?;
        let status = response.status;
        let refused_plaintext = self.scheme == Scheme::Http
            && (status == StatusCode::UNAUTHORIZED
                || (status == StatusCode::INTERNAL_SERVER_ERROR && response.body.is_empty()));
        let authenticated = self.per_request.is_some() || self.context.is_some();
        match status {
            StatusCode::OK => {}
            StatusCode::INTERNAL_SERVER_ERROR if !response.body.is_empty() => {}
            StatusCode::UNAUTHORIZED if self.per_request.is_some() => {
                self.note_challenges(&response);
                return Err(self.per_request_refusal());
            }
            // Authenticated, then refused for being unencrypted (wire-facts 1.3).
            _ if authenticated && refused_plaintext => {
                self.note_challenges(&response);
                return Err(TransportError::PlaintextRefused {
                    status: status.as_u16(),
                });
            }
            _ => {
                self.note_challenges(&response);
                return Err(self.status_error(&response, Phase::Message));
            }
        }
        let content_type = content_type(&response.headers);
        // A host may seal a reply (a fault, say) even when the request was not sealed:
        // unwrap it before parsing when the context can (wire-facts 1).
        let body = if encryption::is_encrypted_content_type(content_type).is_some() {
            let Some(context) = self.context.as_deref_mut() else {
                return Err(TransportError::Protocol {
                    phase: Phase::Message,
                    violation: ProtocolViolation::EncryptedWithoutContext,
                });
            };
            encryption::decrypt(context, content_type, &response.body)
                .map_err(TransportError::Encryption)?
        } else {
            response.body
        };
        Ok(Reply {
            status: status.as_u16(),
            body,
        })
    }

    /// Sends one POST and reads the whole response within the request timeout.
    async fn exchange(
        &mut self,
        body: Vec<u8>,
        content_type: HeaderValue,
        authorization: Option<HeaderValue>,
        extra: &[(HeaderName, HeaderValue)],
        phase: Phase,
    ) -> Result<Response, TransportError> {
        let mut builder = Request::post(self.uri.clone())
            .header(HOST, self.host_header.clone())
            // Constant values are static: no copy per request (issue 7).
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header(ACCEPT_ENCODING, HeaderValue::from_static("identity"))
            .header(CONNECTION, HeaderValue::from_static("Keep-Alive"))
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, body.len());
        if let Some(authorization) = authorization {
            builder = builder.header(AUTHORIZATION, authorization);
        }
        for (name, value) in extra {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| TransportError::InvalidRequest("a header value is not valid"))?;
        let limit = self.max_response_bytes;
        let scheme = self.scheme;
        let sender = &mut self.sender;
        let round_trip = async move {
            sender
                .ready()
                .await
                .map_err(|source| hyper_error(source, phase, scheme))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|source| hyper_error(source, phase, scheme))?;
            let (parts, incoming) = response.into_parts();
            // A declared length over the limit is refused before reading any of it (a
            // hostile `Content-Length: 1073741824`); an undeclared one (chunked, or read to
            // the close) is cut off by `Limited` as soon as it passes the limit.
            if declared_length(&parts.headers).is_some_and(|n| n > limit as u64) {
                return Err(TransportError::ResponseTooLarge { phase, limit });
            }
            let body = Limited::new(incoming, limit)
                .collect()
                .await
                .map_err(|error| body_error(error, phase, scheme, limit))?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                // Moves the buffer when hyper handed over one unshared chunk.
                body: Vec::from(body),
            })
        };
        timeout(self.request_timeout, round_trip)
            .await
            .map_err(|_| TransportError::RequestTimeout {
                phase,
                timeout: self.request_timeout,
            })?
            .map_err(|error| self.certificate_refusal(error))
    }

    /// A TLS alert on a connection that presented a client certificate: the host refused
    /// the certificate (TLS 1.3 sends the refusal after the client's handshake is done).
    fn certificate_refusal(&self, error: TransportError) -> TransportError {
        if !self.certificate.as_ref().is_some_and(|c| c.was_requested()) {
            return error;
        }
        let alert = match &error {
            TransportError::Http { source, .. }
            | TransportError::ConnectionClosed { source, .. } => tls_alert(source),
            _ => None,
        };
        match alert {
            Some(alert) => TransportError::ClientCertificateRefused {
                addr: self.peer,
                alert: format!("received fatal alert {alert:?}"),
            },
            None => error,
        }
    }

    fn note_challenges(&mut self, response: &Response) {
        if response.status == StatusCode::UNAUTHORIZED {
            let challenges = parse_challenges(&response.headers);
            if !challenges.is_empty() {
                self.offered = challenges.into_iter().map(|c| c.scheme).collect();
            }
        }
    }

    /// What a 401 to a request carrying Basic credentials or the certificate header means.
    fn per_request_refusal(&self) -> TransportError {
        let not_offered = |scheme| TransportError::MechanismNotOffered {
            scheme,
            offered: self.offered.clone(),
        };
        match self.auth {
            // WinRM never lists certificate authentication in `WWW-Authenticate`; a listener
            // without it does not ask for a client certificate in the handshake.
            AuthMethod::Certificate
                if self
                    .certificate
                    .as_ref()
                    .is_some_and(|c| !c.was_requested()) =>
            {
                not_offered("Certificate")
            }
            AuthMethod::Certificate => self.rejected(false),
            _ if self.offered_scheme("Basic") => self.rejected(false),
            _ => not_offered("Basic"),
        }
    }

    fn offered_scheme(&self, scheme: &str) -> bool {
        self.offered.iter().any(|s| s.eq_ignore_ascii_case(scheme))
    }

    fn status_error(&self, response: &Response, phase: Phase) -> TransportError {
        if is_redirection(response.status) {
            return TransportError::Redirected {
                status: response.status.as_u16(),
                location: response.headers.get(LOCATION).map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .chars()
                        .take(512)
                        .collect()
                }),
                phase,
            };
        }
        TransportError::HttpStatus {
            status: response.status.as_u16(),
            phase,
            offered: parse_challenges(&response.headers)
                .into_iter()
                .map(|c| c.scheme)
                .collect(),
            body_len: response.body.len(),
        }
    }
}

/// Sends an unauthenticated Identify (`WSMANIDENTIFY: unauthenticated`, MS-WSMV
/// 3.1.4.1.23) on a connection of its own and returns the reply as it came.
pub async fn identify_unauthenticated(
    config: &ConnectionConfig,
    body: &[u8],
) -> Result<Reply, TransportError> {
    let mut conn = Connection::open(config).await?;
    let extra = [(
        HeaderName::from_static(WSMANIDENTIFY),
        HeaderValue::from_static("unauthenticated"),
    )];
    let response = conn
        .exchange(
            body.to_vec(),
            HeaderValue::from_static(SOAP_CONTENT_TYPE),
            None,
            &extra,
            Phase::Message,
        )
        .await?;
    match response.status {
        StatusCode::OK | StatusCode::INTERNAL_SERVER_ERROR if !response.body.is_empty() => {
            Ok(Reply {
                status: response.status.as_u16(),
                body: response.body,
            })
        }
        _ => Err(conn.status_error(&response, Phase::Message)),
    }
}

/// True for the statuses that redirect a POST elsewhere (RFC 9110 15.4; 300 and 304 do not
/// name a new target).
fn is_redirection(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// rustls says "plaintext" for any first byte that is not a TLS record type; only an
/// answer that starts like `HTTP/` is an HTTP listener on the port (InvalidPort). Anything
/// else is garbage where a handshake should be: a protocol failure (issue 8).
fn plaintext_or_garbage(failure: TlsFailure, first: &FirstRecord) -> TlsFailure {
    match failure {
        TlsFailure::PlaintextPeer if !first.looks_like_http() => TlsFailure::Handshake(format!(
            "the server answered the handshake with bytes that are neither TLS nor HTTP ({})",
            first.hex()
        )),
        other => other,
    }
}

/// The first bytes a TLS peer sent, recorded by [`FirstBytes`].
#[derive(Debug, Default)]
struct FirstRecord {
    bytes: Vec<u8>,
}

impl FirstRecord {
    /// How many bytes are kept: enough for `HTTP/` and a TLS record header.
    const LEN: usize = 5;

    fn looks_like_http(&self) -> bool {
        let n = self.bytes.len().min(5);
        !self.bytes.is_empty() && self.bytes.get(..n) == b"HTTP/".get(..n)
    }

    fn hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A TCP stream that keeps a copy of the first bytes read from it, so that a failed TLS
/// handshake can say what the peer sent instead.
struct FirstBytes {
    inner: TcpStream,
    record: Arc<std::sync::Mutex<FirstRecord>>,
    /// True once the record is full: later reads skip the lock.
    full: bool,
}

impl FirstBytes {
    fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            record: Arc::default(),
            full: false,
        }
    }
}

impl tokio::io::AsyncRead for FirstBytes {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.full && matches!(polled, std::task::Poll::Ready(Ok(()))) {
            let fresh = buf.filled().get(before..).unwrap_or_default();
            let mut record = self
                .record
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let room = FirstRecord::LEN.saturating_sub(record.bytes.len());
            record
                .bytes
                .extend_from_slice(fresh.get(..room.min(fresh.len())).unwrap_or_default());
            let full = record.bytes.len() >= FirstRecord::LEN;
            drop(record);
            self.full = full;
        }
        polled
    }
}

impl tokio::io::AsyncWrite for FirstBytes {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The Content-Type of a sealed body as a header value: the constant for every protocol
/// (no copy per request), parsed only if the framing ever returns something else.
fn sealed_content_type(content_type: &str) -> HeaderValue {
    [Protocol::Spnego, Protocol::Kerberos, Protocol::CredSsp]
        .into_iter()
        .flat_map(|p| [p.content_type_str(false), p.content_type_str(true)])
        .find(|known| *known == content_type)
        .map_or_else(
            || HeaderValue::from_str(content_type).unwrap_or_else(|_| HeaderValue::from_static("")),
            HeaderValue::from_static,
        )
}

/// The `Content-Length` header, when present and a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// True when an authentication token is, or wraps (SPNEGO), an NTLM CHALLENGE message
/// (MS-NLMP 2.2.1.2: the signature `NTLMSSP\0` and message type 2). A Kerberos error or an
/// SPNEGO reject token never contains one.
fn carries_ntlm_challenge(token: &[u8]) -> bool {
    const CHALLENGE: &[u8; 12] = b"NTLMSSP\0\x02\0\0\0";
    token.windows(CHALLENGE.len()).any(|w| w == CHALLENGE)
}

/// The Content-Type header as text (empty when absent or not text).
fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Starts the HTTP/1.1 client on an open stream and its driver task.
async fn start_http<T>(io: T) -> Result<(SendRequest<Full<Bytes>>, JoinHandle<()>), TransportError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake::<_, Full<Bytes>>(io)
        .await
        .map_err(|source| TransportError::Http {
            phase: Phase::Connect,
            source,
        })?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "HTTP connection ended");
        }
    });
    Ok((sender, driver))
}

/// One challenge from a `WWW-Authenticate` header (RFC 7235 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The auth-scheme as sent (`Negotiate`, `Basic`, `Kerberos`, `CredSSP`, ...).
    pub scheme: String,
    /// What followed the scheme: a token68 (a base64 security token) or auth-params
    /// (`realm="WSMAN"`), trimmed; empty when the scheme stood alone.
    pub data: String,
}

/// Every challenge in a response's `WWW-Authenticate` headers, whether repeated (one
/// header per scheme, as http.sys sends them) or comma-joined (as proxies and client
/// libraries merge them, wire-facts 1.2). At most 32 are read.
pub fn parse_challenges(headers: &HeaderMap) -> Vec<Challenge> {
    let mut challenges: Vec<Challenge> = Vec::new();
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for element in split_outside_quotes(value) {
            let element = element.trim();
            if element.is_empty() {
                continue;
            }
            let (first, rest) = element.split_once([' ', '\t']).unwrap_or((element, ""));
            if first.contains('=') {
                // An auth-param (`charset="UTF-8"`) continuing the previous challenge.
                if let Some(last) = challenges.last_mut() {
                    last.data.push_str(", ");
                    last.data.push_str(element);
                }
                continue;
            }
            if challenges.len() == MAX_CHALLENGES {
                return challenges;
            }
            challenges.push(Challenge {
                scheme: first.to_owned(),
                data: rest.trim().to_owned(),
            });
        }
    }
    challenges
}

/// The decoded token of the first `scheme` challenge that carries one.
fn negotiate_token(
    challenges: &[Challenge],
    scheme: &str,
) -> Result<Option<Vec<u8>>, ProtocolViolation> {
    let Some(challenge) = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case(scheme) && !c.data.is_empty())
    else {
        return Ok(None);
    };
    BASE64
        .decode(challenge.data.as_bytes())
        .map(Some)
        .map_err(|_| ProtocolViolation::BadTokenEncoding)
}

/// Splits a header value on commas that are not inside a quoted string.
fn split_outside_quotes(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(value.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value.get(start..).unwrap_or_default());
    parts
}

/// A response read in full.
struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// The `Host` header: `host` or `host:port`, IPv6 literals in brackets.
fn host_header(host: &Host, port: u16) -> Result<HeaderValue, TransportError> {
    let host = host.url_form();
    let value = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    HeaderValue::from_str(&value).map_err(|_| TransportError::InvalidTarget {
        target: truncate(&host),
        reason: "not a valid Host header",
    })
}

/// The request target: an origin-form path.
fn request_uri(path: &str) -> Result<Uri, TransportError> {
    let invalid = |reason| TransportError::InvalidTarget {
        target: truncate(path),
        reason,
    };
    if !path.starts_with('/') {
        return Err(invalid("the path must start with '/'"));
    }
    path.parse::<Uri>()
        .map_err(|_| invalid("not a valid request path"))
}

/// Connects to the first address that accepts, all within `limit` of the first connect
/// (each connect passes `gate` first). Returns the deadline TLS must also meet, moved on
/// by the time `gate` took after the connect.
async fn open_tcp(
    addrs: &[SocketAddr],
    limit: Duration,
    gate: Option<&dyn ConnectGate>,
) -> Result<(TcpStream, SocketAddr, Instant), TransportError> {
    let mut last = None;
    let mut deadline = None;
    for &addr in addrs {
        if let Some(gate) = gate {
            gate.before_connect()
                .await
                .map_err(|source| TransportError::Connect { addr, source })?;
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + limit);
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // The authentication legs are small request/response pairs: Nagle plus
                // delayed ACKs would add tens of milliseconds to each.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                let Some(gate) = gate else {
                    return Ok((stream, addr, deadline));
                };
                let waited = Instant::now();
                gate.after_connect()
                    .await
                    .map_err(|source| TransportError::Connect { addr, source })?;
                return Ok((stream, addr, deadline + waited.elapsed()));
            }
            Ok(Err(source)) if source.kind() == io::ErrorKind::ConnectionRefused => {
                last = Some(TransportError::ConnectionRefused { addr });
            }
            Ok(Err(source)) => last = Some(TransportError::Connect { addr, source }),
            Err(_) => {
                return Err(TransportError::ConnectTimeout {
                    addr,
                    timeout: limit,
                });
            }
        }
    }
    Err(last.unwrap_or_else(|| TransportError::InvalidRequest("no address to connect to")))
}

/// Classifies a hyper error: closed/reset/EOF with no response, malformed HTTP, or other.
fn hyper_error(source: hyper::Error, phase: Phase, scheme: Scheme) -> TransportError {
    let reset = std::error::Error::source(&source)
        .and_then(|e| e.downcast_ref::<io::Error>())
        .is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            )
        });
    if reset || source.is_incomplete_message() || source.is_canceled() || source.is_closed() {
        TransportError::ConnectionClosed {
            phase,
            scheme,
            source,
        }
    } else if source.is_parse() {
        TransportError::Protocol {
            phase,
            violation: ProtocolViolation::MalformedHttp,
        }
    } else {
        TransportError::Http { phase, source }
    }
}

/// The TLS alert a peer sent, when it is what broke `error` (rustls reports an alert as
/// the I/O error of the read that met it).
fn tls_alert(error: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut current = Some(error);
    // Bounded: hyper wraps the I/O error once; a few levels leave room for more layers.
    for _ in 0..8 {
        let e = current?;
        if let Some(rustls::Error::AlertReceived(alert)) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(*alert);
        }
        current = e.source();
    }
    None
}

/// Classifies an error while reading a (length-limited) body.
fn body_error(
    error: Box<dyn std::error::Error + Send + Sync>,
    phase: Phase,
    scheme: Scheme,
    limit: usize,
) -> TransportError {
    if error.is::<LengthLimitError>() {
        return TransportError::ResponseTooLarge { phase, limit };
    }
    match error.downcast::<hyper::Error>() {
        Ok(source) => hyper_error(*source, phase, scheme),
        Err(_) => TransportError::Protocol {
            phase,
            violation: ProtocolViolation::MalformedHttp,
        },
    }
}

/// At most 120 characters of untrusted text, for error messages.
fn truncate(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn schemes(values: &[&str]) -> Vec<String> {
        parse_challenges(&headers(values))
            .into_iter()
            .map(|c| c.scheme)
            .collect()
    }

    #[test]
    fn challenges_repeated_or_comma_joined() {
        // One header per scheme, as http.sys sends them (wire-facts 1.2 capture).
        assert_eq!(
            schemes(&["Negotiate", "Basic realm=\"WSMAN\""]),
            ["Negotiate", "Basic"]
        );
        // Merged by a client library (pypsrp's error text quotes this form).
        assert_eq!(
            schemes(&["Negotiate, Basic realm=\"WSMAN\""]),
            ["Negotiate", "Basic"]
        );
        // pypsrp's test_negotiate.py form, with a quoted param containing a comma.
        let parsed = parse_challenges(&headers(&[
            "Negotiate, CredSSP, Basic Realm='WSMan', Digest realm=\"a,b\", charset=\"UTF-8\"",
        ]));
        let names: Vec<_> = parsed.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(names, ["Negotiate", "CredSSP", "Basic", "Digest"]);
        assert_eq!(parsed[3].data, "realm=\"a,b\", charset=\"UTF-8\"");
        assert!(schemes(&[]).is_empty());
        assert!(schemes(&["", " , "]).is_empty());
    }

    #[test]
    fn negotiate_tokens_are_decoded() {
        let challenges = parse_challenges(&headers(&[
            "Basic realm=\"x\"",
            "negotiate TlRMTVNTUAACAAAA",
        ]));
        assert_eq!(
            negotiate_token(&challenges, "Negotiate").unwrap().unwrap(),
            b"NTLMSSP\0\x02\0\0\0"
        );
        // Padding '=' at the end of a token68 is not an auth-param.
        let challenges = parse_challenges(&headers(&["Negotiate oRswGaADCgEAoxIEEAEAAAA="]));
        assert_eq!(challenges.len(), 1);
        assert_eq!(
            negotiate_token(&challenges, "Negotiate")
                .unwrap()
                .unwrap()
                .len(),
            17
        );
        let challenges = parse_challenges(&headers(&["Negotiate"]));
        assert_eq!(negotiate_token(&challenges, "Negotiate").unwrap(), None);
        let challenges = parse_challenges(&headers(&["Negotiate !!notbase64"]));
        assert_eq!(
            negotiate_token(&challenges, "Negotiate"),
            Err(ProtocolViolation::BadTokenEncoding)
        );
    }

    #[test]
    fn response_limit_follows_the_envelope_size() {
        assert_eq!(
            response_limit_for_envelope(153_600),
            2 * 153_600 + 64 * 1024
        );
        assert_eq!(response_limit_for_envelope(512_000), 1_024_000 + 64 * 1024);
        assert!(response_limit_for_envelope(u32::MAX) > u32::MAX as usize);
    }

    #[test]
    fn ntlm_challenges_are_recognised_raw_or_wrapped() {
        let challenge = b"NTLMSSP\0\x02\0\0\0rest of it";
        assert!(carries_ntlm_challenge(challenge));
        let mut wrapped = vec![0xa1, 0x81, 0x90, 0x30];
        wrapped.extend_from_slice(challenge);
        assert!(carries_ntlm_challenge(&wrapped));
        // NEGOTIATE and AUTHENTICATE messages, and an SPNEGO reject, are not challenges.
        assert!(!carries_ntlm_challenge(b"NTLMSSP\0\x01\0\0\0"));
        assert!(!carries_ntlm_challenge(b"NTLMSSP\0\x03\0\0\0"));
        assert!(!carries_ntlm_challenge(
            &BASE64.decode("oQcwBaADCgEC").unwrap()
        ));
    }

    #[test]
    fn plaintext_peers_must_look_like_http() {
        let record = |bytes: &[u8]| FirstRecord {
            bytes: bytes.to_vec(),
        };
        for http in [&b"HTTP/"[..], b"HTT", b"H"] {
            assert_eq!(
                plaintext_or_garbage(TlsFailure::PlaintextPeer, &record(http)),
                TlsFailure::PlaintextPeer
            );
        }
        for garbage in [&b"\x00\x01\x02\x03\x04"[..], b"HTTX/", b""] {
            let failure = plaintext_or_garbage(TlsFailure::PlaintextPeer, &record(garbage));
            assert!(matches!(failure, TlsFailure::Handshake(_)), "{garbage:?}");
        }
        assert_eq!(
            plaintext_or_garbage(TlsFailure::Closed, &record(b"")),
            TlsFailure::Closed
        );
    }

    #[test]
    fn redirections_are_the_five_statuses() {
        for status in [301, 302, 303, 307, 308] {
            assert!(is_redirection(StatusCode::from_u16(status).unwrap()));
        }
        for status in [200, 300, 304, 401, 500] {
            assert!(!is_redirection(StatusCode::from_u16(status).unwrap()));
        }
        let error = TransportError::Redirected {
            status: 302,
            location: Some("http://elsewhere/wsman".into()),
            phase: Phase::Message,
        };
        assert_eq!(error.bucket(), Some(Bucket::ProtocolError));
        assert!(!error.is_transient());
    }

    #[test]
    fn challenge_count_is_bounded() {
        let many = vec!["X"; 100].join(", ");
        assert_eq!(parse_challenges(&headers(&[&many])).len(), MAX_CHALLENGES);
    }

    #[test]
    fn host_headers() {
        let header = |h: &str, port| host_header(&Host::parse(h).unwrap(), port).unwrap();
        assert_eq!(header("web01", 5985), "web01:5985");
        assert_eq!(header("web01.corp", 80), "web01.corp");
        assert_eq!(header("::1", 5985), "[::1]:5985");
        assert_eq!(header("10.0.0.5", 5985), "10.0.0.5:5985");
        for bad in ["", "a b", "a/b", "x\r\nInjected: 1", "user@host"] {
            let error = TransportError::from(Host::parse(bad).unwrap_err());
            assert!(
                matches!(error, TransportError::InvalidTarget { .. }),
                "{bad:?}"
            );
            assert_eq!(error.bucket(), Some(Bucket::HostContainsInvalidCharacters));
        }
    }

    #[test]
    fn request_paths() {
        assert_eq!(request_uri("/wsman").unwrap(), "/wsman");
        assert!(request_uri("wsman").is_err());
        assert!(request_uri("/ws man").is_err());
    }

    #[test]
    fn connections_can_move_between_tasks() {
        fn assert_send<T: Send>() {}
        assert_send::<Connection>();
        assert_send::<TransportError>();
    }

    #[test]
    fn certificate_method_has_no_scheme_exchange_or_sealing() {
        let method = AuthMethod::Certificate;
        assert_eq!(method.to_string(), "Certificate");
        assert!(!method.can_encrypt() && !method.is_kerberos());
        let credential = Credential::new("alice", "").unwrap();
        let mut config = ConnectionConfig::new("web01", 5986, method, credential);
        config.scheme = Scheme::Https;
        assert!(!config.seals_messages());
        config.scheme = Scheme::Http;
        assert!(config.plaintext_over_http());
    }

    #[tokio::test]
    async fn certificate_settings_that_cannot_work_are_refused_before_any_packet() {
        // Port 9 of an unroutable name: any attempt to connect would fail differently.
        let credential = Credential::new("alice", "").unwrap();
        let mut config =
            ConnectionConfig::new("nowhere.invalid", 9, AuthMethod::Certificate, credential);
        let refusal = |config: ConnectionConfig| async move {
            match Connection::connect(&config).await {
                Err(TransportError::InvalidRequest(reason)) => reason,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            refusal(config.clone()).await,
            "certificate authentication needs HTTPS"
        );
        config.scheme = Scheme::Https;
        assert_eq!(
            refusal(config.clone()).await,
            "certificate authentication needs a client certificate"
        );
        config.encryption = Encryption::Always;
        assert_eq!(
            refusal(config).await,
            "certificate authentication cannot encrypt messages"
        );
    }

    #[test]
    fn connect_futures_can_move_between_tasks() {
        // Kerberos and CredSSP legs run inside `connect`: its future must stay Send for
        // the runner's spawned host tasks.
        fn assert_send<T: Send>(_: &T) {}
        for auth in [
            AuthMethod::Sspi(Mechanism::Kerberos),
            AuthMethod::Sspi(Mechanism::CredSsp),
            AuthMethod::Certificate,
        ] {
            let credential = Credential::new("FLEET\\alice", "pw").unwrap();
            let config = ConnectionConfig::new("web01", 5985, auth, credential);
            let future = Connection::connect(&config);
            assert_send(&future);
        }
    }

    #[test]
    fn reply_fault_flag() {
        assert!(
            Reply {
                status: 500,
                body: vec![]
            }
            .is_fault()
        );
        assert!(
            !Reply {
                status: 200,
                body: vec![]
            }
            .is_fault()
        );
    }
}
