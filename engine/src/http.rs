//! One authenticated, message-encrypted HTTP/1.1 connection to one WinRM listener.
//!
//! NTLM and SPNEGO authenticate the TCP connection, not the request (MS-WSMV 2.2.9.1.1.1),
//! so this module owns its socket: a hyper HTTP/1.1 client connection on one tokio
//! `TcpStream`, kept alive for as long as the [`Connection`] lives.
//!
//! [`Connection::connect`] performs the exchange working Windows clients use (wire-facts
//! section 3, after WinRb `init_auth` and pypsrp "send an initial blank message"):
//!
//! 1. `POST` with an empty body and `Authorization: Negotiate <NEGOTIATE token>`;
//! 2. `401` with `WWW-Authenticate: Negotiate <CHALLENGE token>`;
//! 3. `POST` with an empty body and `Authorization: Negotiate <AUTHENTICATE token>`;
//! 4. `200`, for SPNEGO with the server's final token (its mechListMIC).
//!
//! After that [`Connection::send`] seals each SOAP envelope into a `multipart/encrypted`
//! body (`psfleet_core::encryption`) and sends it with no `Authorization` header on the
//! same connection; 200 and 500 bodies are both unsealed and returned (a 500 carries a
//! WS-Man fault, MS-WSMV 2.2.9.1.1 and wire-facts section 1).
//!
//! Every failure is a [`TransportError`] that keeps what a classifier needs (wire-facts
//! section 6): the phase, the HTTP status and the schemes the server offered.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap,
    HeaderValue, USER_AGENT, WWW_AUTHENTICATE,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use psfleet_core::encryption::{self, FramingError};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::auth::{AuthError, ClientContext, Credential, Mechanism};

/// The WinRM listener path.
pub const DEFAULT_PATH: &str = "/wsman";

/// The plain WinRM HTTP port.
pub const DEFAULT_PORT: u16 = 5985;

/// The `User-Agent` header value.
pub const USER_AGENT_VALUE: &str = concat!("psfleet/", env!("CARGO_PKG_VERSION"));

/// Default connect timeout (DNS and TCP), as pypsrp's `connection_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time allowed for one request and its whole response, as pypsrp's
/// `read_timeout`. It must exceed the WS-Man `OperationTimeout` of Receive requests.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default cap on one response body. WinRM's `MaxEnvelopeSizekb` defaults to 500 KB and
/// sealing adds a few hundred bytes, so this leaves a wide margin.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Most requests one authentication exchange may take; NTLM needs two and SPNEGO-wrapped
/// NTLM two (its final token rides on the 200).
const MAX_AUTH_LEGS: usize = 4;

/// Most challenges read from the `WWW-Authenticate` headers of one response.
const MAX_CHALLENGES: usize = 32;

/// The Content-Type of the empty-bodied authentication requests (pypsrp sends its session
/// headers, this one included, on its blank setup message).
const SOAP_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";

/// Where to connect and how to authenticate.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (5985 for WinRM over HTTP).
    pub port: u16,
    /// The listener path, normally `/wsman`.
    pub path: String,
    /// The authentication mechanism.
    pub mechanism: Mechanism,
    /// Who to authenticate as.
    pub credential: Credential,
    /// Time allowed to resolve the host and open the TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for each request, from sending to the end of the response body.
    pub request_timeout: Duration,
    /// The largest response body accepted.
    pub max_response_bytes: usize,
}

impl ConnectionConfig {
    /// A configuration for `host:port` with the default path, timeouts and limits.
    pub fn new(host: &str, port: u16, mechanism: Mechanism, credential: Credential) -> Self {
        Self {
            host: host.to_owned(),
            port,
            path: DEFAULT_PATH.to_owned(),
            mechanism,
            credential,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A decrypted response to [`Connection::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status: 200, or 500 when the body is a WS-Man fault.
    pub status: u16,
    /// The decrypted SOAP envelope.
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
    /// Resolving the host and opening the TCP connection.
    Connect,
    /// The first authentication leg (the NEGOTIATE token).
    Negotiate,
    /// Later authentication legs (the AUTHENTICATE token and after).
    Authenticate,
    /// An encrypted SOAP message on the authenticated connection.
    Message,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Negotiate => "negotiate leg",
            Self::Authenticate => "authenticate leg",
            Self::Message => "encrypted message",
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
    /// A `WWW-Authenticate: Negotiate` token that is not valid base64.
    BadTokenEncoding,
    /// The server accepted (200) before the authentication exchange was complete, or
    /// sent no final SPNEGO token, so the context cannot be completed.
    AcceptedBeforeComplete,
    /// The context wanted to send another token after the server's 200.
    TokenAfterAccept,
    /// More than the allowed number of authentication legs.
    TooManyLegs,
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
            Self::BadTokenEncoding => f.write_str("authentication token is not valid base64"),
            Self::AcceptedBeforeComplete => {
                f.write_str("server accepted before authentication completed")
            }
            Self::TokenAfterAccept => {
                f.write_str("authentication wanted another leg after the server accepted")
            }
            Self::TooManyLegs => write!(f, "more than {MAX_AUTH_LEGS} authentication legs"),
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
    /// The host or path cannot be used in a request (empty, spaces, control characters).
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        /// The host or path.
        target: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The request could not be built (a header value that HTTP cannot carry).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The host name did not resolve (Windows: "the server name cannot be resolved",
    /// 2150859193).
    #[error("cannot resolve {host:?}: {source}")]
    Dns {
        /// The host name.
        host: String,
        /// The resolver's error (`TimedOut` when the connect timeout ran out while
        /// resolving).
        #[source]
        source: io::Error,
    },
    /// TCP RST on connect: nothing listens on the port (Windows 0x80338012).
    #[error("connection to {addr} refused")]
    ConnectionRefused {
        /// The address tried last.
        addr: SocketAddr,
    },
    /// The TCP connection was not established within the connect timeout (a filtered port
    /// or an unreachable host, Windows 0x80338126).
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
    /// A 401 offering no scheme this mechanism can use (wire-facts 1.2: the mechanism is
    /// disabled on the server).
    #[error("server does not offer the {scheme} scheme (offered: {offered:?})")]
    MechanismNotOffered {
        /// The scheme wanted.
        scheme: &'static str,
        /// The schemes the 401 offered.
        offered: Vec<String>,
    },
    /// A 401 after the client sent its proof (the NTLM AUTHENTICATE message): bad
    /// password, unknown user, or an authorization refusal that looks the same on the
    /// wire (wire-facts 1.1 and 1.4).
    #[error("credentials for {user:?} rejected (offered: {offered:?})")]
    CredentialsRejected {
        /// The user name that was refused.
        user: String,
        /// The schemes the final 401 offered.
        offered: Vec<String>,
    },
    /// An HTTP status that ends the exchange (404 wrong path, 405, 413 envelope too large,
    /// 401 on an established connection, 500 with an empty body = unencrypted message
    /// refused, ...).
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
    /// mechListMIC, ...).
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

/// An authenticated HTTP/1.1 connection to one WinRM listener, sealing every message.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
    context: ClientContext,
    uri: Uri,
    host_header: HeaderValue,
    peer: SocketAddr,
    offered: Vec<String>,
    request_timeout: Duration,
    max_response_bytes: usize,
    usable: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("uri", &self.uri)
            .field("context", &self.context)
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
    /// Resolves the host, opens the TCP connection and authenticates it.
    pub async fn connect(config: &ConnectionConfig) -> Result<Self, TransportError> {
        let host_header = host_header(&config.host, config.port)?;
        let uri = request_uri(&config.path)?;
        let context = ClientContext::new(config.mechanism, &config.credential, &config.host)
            .map_err(|source| TransportError::Auth {
                phase: Phase::Connect,
                source,
            })?;
        let (stream, peer) = open_tcp(&config.host, config.port, config.connect_timeout).await?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
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
        let mut conn = Self {
            sender,
            driver,
            context,
            uri,
            host_header,
            peer,
            offered: Vec::new(),
            request_timeout: config.request_timeout,
            max_response_bytes: config.max_response_bytes,
            usable: false,
        };
        conn.authenticate(config.credential.user()).await?;
        conn.usable = true;
        Ok(conn)
    }

    /// Seals `soap`, sends it and returns the unsealed reply (status 200 or 500).
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
        let reply = self.exchange_encrypted(soap).await?;
        self.usable = true;
        Ok(reply)
    }

    /// The schemes offered by the last `WWW-Authenticate` headers seen (from the 401s of
    /// the authentication exchange), as sent (`Negotiate`, `Basic`, ...).
    pub fn offered_schemes(&self) -> &[String] {
        &self.offered
    }

    /// The address the connection is open to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The authentication mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.context.mechanism()
    }

    /// False once an error has left the connection unusable.
    pub fn is_usable(&self) -> bool {
        self.usable && !self.sender.is_closed()
    }

    /// Runs the empty-body authentication legs until the server answers 200.
    async fn authenticate(&mut self, user: &str) -> Result<(), TransportError> {
        let scheme = self.context.mechanism().http_scheme();
        let mut input: Option<Vec<u8>> = None;
        // True once a sent token answered a server challenge: from then on a 401 means
        // the server refused the proof (the NTLM AUTHENTICATE message).
        let mut proof_sent = false;
        for leg in 0..MAX_AUTH_LEGS {
            let phase = if leg == 0 {
                Phase::Negotiate
            } else {
                Phase::Authenticate
            };
            let step = self
                .context
                .step(input.as_deref())
                .map_err(|source| TransportError::Auth { phase, source })?;
            let Some(token) = step.token else {
                // Only a complete context has nothing to send, and a complete context
                // ended the loop below; anything else is a context that stalled.
                return Err(TransportError::Protocol {
                    phase,
                    violation: ProtocolViolation::AcceptedBeforeComplete,
                });
            };
            proof_sent |= input.is_some();
            let authorization = format!("{scheme} {}", BASE64.encode(&token));
            let response = self
                .exchange(Vec::new(), SOAP_CONTENT_TYPE, Some(&authorization), phase)
                .await?;
            let challenges = parse_challenges(&response.headers);
            if !challenges.is_empty() {
                self.offered = challenges.iter().map(|c| c.scheme.clone()).collect();
            }
            let server_token = negotiate_token(&challenges, scheme)
                .map_err(|violation| TransportError::Protocol { phase, violation })?;
            match response.status {
                StatusCode::UNAUTHORIZED => {
                    if !self.offered_scheme(scheme) {
                        return Err(TransportError::MechanismNotOffered {
                            scheme,
                            offered: self.offered.clone(),
                        });
                    }
                    if proof_sent || self.context.is_complete() {
                        return Err(TransportError::CredentialsRejected {
                            user: user.to_owned(),
                            offered: self.offered.clone(),
                        });
                    }
                    let Some(server_token) = server_token else {
                        // The server refused the NEGOTIATE token itself.
                        return Err(self.status_error(&response, phase));
                    };
                    input = Some(server_token);
                }
                StatusCode::OK => {
                    return self.finish_on_accept(server_token, phase);
                }
                _ => return Err(self.status_error(&response, phase)),
            }
        }
        Err(TransportError::Protocol {
            phase: Phase::Authenticate,
            violation: ProtocolViolation::TooManyLegs,
        })
    }

    /// Completes the context when the server answered 200 to an authentication leg.
    fn finish_on_accept(
        &mut self,
        server_token: Option<Vec<u8>>,
        phase: Phase,
    ) -> Result<(), TransportError> {
        if !self.context.is_complete() {
            // SPNEGO: the final token carries the server's mechListMIC; processing it
            // completes the context (MS-SPNG 3.1.5.1).
            let Some(token) = server_token else {
                return Err(TransportError::Protocol {
                    phase,
                    violation: ProtocolViolation::AcceptedBeforeComplete,
                });
            };
            let step = self
                .context
                .step(Some(&token))
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
        tracing::debug!(peer = %self.peer, mechanism = %self.context.mechanism(), "authenticated");
        Ok(())
    }

    /// Sends one sealed message and unseals the answer.
    async fn exchange_encrypted(&mut self, soap: &[u8]) -> Result<Reply, TransportError> {
        let protocol = self.context.mechanism().protocol();
        let sealed = encryption::encrypt(&mut self.context, protocol, soap)
            .map_err(TransportError::Encryption)?;
        let response = self
            .exchange(sealed.body, &sealed.content_type, None, Phase::Message)
            .await?;
        let status = response.status;
        match status {
            StatusCode::OK => {}
            // A 500 with an empty body is its own class: the server refused the message
            // before decrypting it (wire-facts 1.3, winrm4j#144).
            StatusCode::INTERNAL_SERVER_ERROR if !response.body.is_empty() => {}
            _ => {
                if status == StatusCode::UNAUTHORIZED {
                    let challenges = parse_challenges(&response.headers);
                    if !challenges.is_empty() {
                        self.offered = challenges.into_iter().map(|c| c.scheme).collect();
                    }
                }
                return Err(self.status_error(&response, Phase::Message));
            }
        }
        let content_type = response
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
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
        let body = encryption::decrypt(&mut self.context, content_type, &response.body)
            .map_err(TransportError::Encryption)?;
        Ok(Reply {
            status: status.as_u16(),
            body,
        })
    }

    /// Sends one POST and reads the whole response within the request timeout.
    async fn exchange(
        &mut self,
        body: Vec<u8>,
        content_type: &str,
        authorization: Option<&str>,
        phase: Phase,
    ) -> Result<Response, TransportError> {
        let mut builder = Request::post(self.uri.clone())
            .header(HOST, self.host_header.clone())
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(ACCEPT_ENCODING, "identity")
            .header(CONNECTION, "Keep-Alive")
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, body.len());
        if let Some(authorization) = authorization {
            builder = builder.header(AUTHORIZATION, authorization);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| TransportError::InvalidRequest("a header value is not valid"))?;
        let limit = self.max_response_bytes;
        let sender = &mut self.sender;
        let round_trip = async move {
            sender
                .ready()
                .await
                .map_err(|source| hyper_error(source, phase))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|source| hyper_error(source, phase))?;
            let (parts, incoming) = response.into_parts();
            let body = Limited::new(incoming, limit)
                .collect()
                .await
                .map_err(|error| body_error(error, phase, limit))?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body: body.to_vec(),
            })
        };
        timeout(self.request_timeout, round_trip)
            .await
            .map_err(|_| TransportError::RequestTimeout {
                phase,
                timeout: self.request_timeout,
            })?
    }

    fn offered_scheme(&self, scheme: &str) -> bool {
        self.offered.iter().any(|s| s.eq_ignore_ascii_case(scheme))
    }

    fn status_error(&self, response: &Response, phase: Phase) -> TransportError {
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
fn host_header(host: &str, port: u16) -> Result<HeaderValue, TransportError> {
    let invalid = |reason| TransportError::InvalidTarget {
        target: truncate(host),
        reason,
    };
    if host.is_empty() {
        return Err(invalid("the host name is empty"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/?#@[]".contains(c))
    {
        return Err(invalid(
            "the host name contains a character a host cannot have",
        ));
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let value = if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    };
    HeaderValue::from_str(&value).map_err(|_| invalid("not a valid Host header"))
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

/// Resolves `host` and connects to the first address that accepts, all within `limit`.
async fn open_tcp(
    host: &str,
    port: u16,
    limit: Duration,
) -> Result<(TcpStream, SocketAddr), TransportError> {
    let deadline = tokio::time::Instant::now() + limit;
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
            Err(_) => {
                return Err(TransportError::Dns {
                    host: host.to_owned(),
                    source: io::Error::new(io::ErrorKind::TimedOut, "name resolution timed out"),
                });
            }
            Ok(Err(source)) => {
                return Err(TransportError::Dns {
                    host: host.to_owned(),
                    source,
                });
            }
            Ok(Ok(addrs)) => addrs.collect(),
        };
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // The authentication legs are small request/response pairs: Nagle plus
                // delayed ACKs would add tens of milliseconds to each.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                return Ok((stream, addr));
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
    Err(last.unwrap_or_else(|| TransportError::Dns {
        host: host.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"),
    }))
}

/// Classifies a hyper error: closed/reset/EOF with no response, malformed HTTP, or other.
fn hyper_error(source: hyper::Error, phase: Phase) -> TransportError {
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
        TransportError::ConnectionClosed { phase, source }
    } else if source.is_parse() {
        TransportError::Protocol {
            phase,
            violation: ProtocolViolation::MalformedHttp,
        }
    } else {
        TransportError::Http { phase, source }
    }
}

/// Classifies an error while reading a (length-limited) body.
fn body_error(
    error: Box<dyn std::error::Error + Send + Sync>,
    phase: Phase,
    limit: usize,
) -> TransportError {
    if error.is::<LengthLimitError>() {
        return TransportError::ResponseTooLarge { phase, limit };
    }
    match error.downcast::<hyper::Error>() {
        Ok(source) => hyper_error(*source, phase),
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
    fn challenge_count_is_bounded() {
        let many = vec!["X"; 100].join(", ");
        assert_eq!(parse_challenges(&headers(&[&many])).len(), MAX_CHALLENGES);
    }

    #[test]
    fn host_headers() {
        assert_eq!(host_header("web01", 5985).unwrap(), "web01:5985");
        assert_eq!(host_header("web01.corp", 80).unwrap(), "web01.corp");
        assert_eq!(host_header("::1", 5985).unwrap(), "[::1]:5985");
        assert_eq!(host_header("10.0.0.5", 5985).unwrap(), "10.0.0.5:5985");
        for bad in ["", "a b", "a/b", "x\r\nInjected: 1", "user@host"] {
            assert!(
                matches!(
                    host_header(bad, 5985),
                    Err(TransportError::InvalidTarget { .. })
                ),
                "{bad:?}"
            );
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
