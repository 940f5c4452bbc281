//! The HTTP(S) side of one simulated host: what http.sys and the WinRM service do before a
//! SOAP envelope reaches the WS-Man service (wire-facts sections 1, 3 and 7).
//!
//! - `Server: Microsoft-HTTPAPI/2.0` on every answer; `POST /wsman` only (404 for other
//!   paths, 405 with `Allow: POST` for other methods);
//! - an Identify carrying `WSMANIDENTIFY: unauthenticated` is answered without
//!   authentication (MS-WSMV 3.1.4.1.23);
//! - otherwise 401 with an empty body and one `WWW-Authenticate` header per enabled scheme
//!   (wire-facts 1.2); `Negotiate` (raw NTLM or SPNEGO) authenticates the connection, so
//!   later requests on it need no `Authorization` header (MS-WSMV 2.2.9.1.1.1); `Basic`
//!   authenticates one request;
//! - empty-bodied handshake POSTs get 200 with an empty body once authentication completes;
//! - `multipart/encrypted` bodies are unsealed with the connection's acceptor and the reply
//!   sealed the same way (MS-WSMV 2.2.9.1); a plaintext body over HTTP when
//!   AllowUnencrypted is false gets HTTP 500 with an empty body (wire-facts 1.3);
//! - bodies over MaxEnvelopeSizekb get 413 (wire-facts 1.14);
//! - latency and jitter before every answer; flaky hosts cut responses off or answer an
//!   empty 500; blackholes accept and never answer;
//! - HTTPS listeners close connections whose first byte is not a TLS handshake record
//!   (plain HTTP to 5986: closed with no response, wire-facts 1.8).
//!
//! Then the authenticated plaintext goes to [`HostService::handle`], which may ask to be
//! called again later ([`ServiceReply::WaitUntil`]) until it has an answer.

use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{
    ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, SERVER,
    WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use psfleet_core::encryption;
use psfleet_core::wsman::ClientMessage;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::auth::{AcceptStep, Acceptor, AcceptorContext, CbtLevel, HttpScheme, check_basic};
use crate::auth_kerberos::Keytab;
use crate::client_cert::{self, CERTIFICATE_AUTH_HEADER, CertificateMapping};
use crate::credssp::CredSspTls;
use crate::host::HostSpec;
use crate::profile::DOMAIN;
use crate::profile::ExtraBehaviour;
use crate::rng::{Rng, mix};
use crate::service::{HostService, ServiceReply, ServiceRequest};
use crate::stats::{ConnectionLog, Counter, HostStats};
use crate::tls::{HostTls, SimCa};

/// The `Server` header http.sys sends (wire-facts 1.2 capture).
pub const SERVER_HEADER: &str = "Microsoft-HTTPAPI/2.0";

/// The WinRM listener path (compared case-insensitively, as http.sys URL prefixes are).
pub const WSMAN_PATH: &str = "/wsman";

/// The Content-Type of plaintext SOAP.
pub const SOAP_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";

/// Room for multipart framing and signatures on top of MaxEnvelopeSizekb when reading an
/// encrypted body; the plaintext itself is held to the limit after unsealing.
pub const ENCRYPTION_OVERHEAD: usize = 16 * 1024;

/// MaxEnvelopeSizekb when a host's config does not say (the Server 2012+ default).
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 500 * 1024;

/// Time allowed for a TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may sit between requests (http.sys IdleConnectionTimeout, 120 s
/// by default) before it is closed.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// Most times one request goes back to the service after a `WaitUntil`.
const MAX_SERVICE_ROUNDS: usize = 100_000;

/// The body of every response.
pub type ResponseBody = http_body_util::combinators::BoxBody<Bytes, io::Error>;

/// State shared by every host of a fleet.
#[derive(Debug, Clone)]
pub struct Shared {
    /// When the fleet started: the origin of the service's clock.
    pub start: Instant,
    /// The simulator CA (HTTPS certificates are made from it on first use).
    pub ca: Arc<SimCa>,
    /// Becomes true when the fleet shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Kerberos service keys (`HTTP/<host name>`), when the fleet has a KDC.
    pub keytab: Option<Arc<Keytab>>,
    /// Every accepted TCP connection with its time, fleet-wide.
    pub connections: Arc<ConnectionLog>,
}

/// One running host: its spec, counters, and the service and TLS set-up it creates on
/// first use (so that 10,000 idle hosts cost little).
#[derive(Debug)]
pub struct HostRuntime {
    /// What the host is.
    pub spec: Arc<HostSpec>,
    /// Behaviours outside the spec.
    pub extra: ExtraBehaviour,
    /// Network-layer counters.
    pub stats: HostStats,
    seed: u64,
    draws: AtomicU64,
    service: OnceLock<Arc<HostService>>,
    tls: OnceLock<Result<HostTls, String>>,
    credssp: OnceLock<Result<CredSspTls, String>>,
}

impl HostRuntime {
    /// A host with `seed` for its random draws (jitter, resets, empty 500s).
    pub fn new(spec: HostSpec, extra: ExtraBehaviour, seed: u64) -> Self {
        Self {
            spec: Arc::new(spec),
            extra,
            stats: HostStats::default(),
            seed,
            draws: AtomicU64::new(0),
            service: OnceLock::new(),
            tls: OnceLock::new(),
            credssp: OnceLock::new(),
        }
    }

    /// The host's WS-Man service, created on first use.
    pub fn service(&self) -> &Arc<HostService> {
        self.service
            .get_or_init(|| Arc::new(HostService::new(Arc::clone(&self.spec))))
    }

    /// The service if anything used it yet.
    pub fn started_service(&self) -> Option<&Arc<HostService>> {
        self.service.get()
    }

    /// The host's TLS configuration, made on first use.
    pub fn tls(&self, ca: &SimCa) -> Result<&HostTls, &str> {
        self.tls
            .get_or_init(|| {
                ca.host_tls(
                    &self.spec.name,
                    self.spec.address,
                    self.spec.network.certificate,
                    self.spec.auth.certificate,
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// The host's CredSSP TLS identity (its own self-signed certificate, as WinRM makes),
    /// made on first use.
    pub fn credssp(&self) -> Result<&CredSspTls, &str> {
        self.credssp
            .get_or_init(|| CredSspTls::generate(&self.spec.name).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }

    /// A generator for one request's draws: the host seed mixed with a per-host counter,
    /// so a host's sequence of draws is the same in every run with the same seed.
    fn draw(&self) -> Rng {
        Rng::new(mix(
            self.seed ^ mix(self.draws.fetch_add(1, Ordering::Relaxed))
        ))
    }
}

/// How long ago the kernel completed the handshake of a just-accepted connection: TCP_INFO's
/// `tcpi_last_data_sent`, which Linux starts at the child socket's creation (the final ACK)
/// and which stays there until the server first sends, after accept() (jiffy resolution;
/// `tcpi_last_ack_recv` would move with the client's first request). `None` where TCP_INFO
/// is refused.
#[allow(unsafe_code)]
fn handshake_age(stream: &tokio::net::TcpStream) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain old data, so all-zero is a valid value; getsockopt writes
    // at most `len` bytes into it and the descriptor is open (borrowed from `stream`).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| Duration::from_millis(u64::from(info.tcpi_last_data_sent)))
}

/// Accepts connections on `listener` until shutdown; `tls` makes it an HTTPS listener.
pub async fn run_listener(
    listener: TcpListener,
    host: Arc<HostRuntime>,
    shared: Arc<Shared>,
    tls: bool,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Timed by the kernel: when the task gets to accept() on a busy machine, the
                // handshake may be hundreds of milliseconds old, and the log is of when
                // connections were made, not of when the simulator got to them.
                let now = shared.start.elapsed();
                let age = handshake_age(&stream).unwrap_or_default();
                shared.connections.record(now.saturating_sub(age));
                let host = Arc::clone(&host);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    serve_connection(stream, peer, host, shared, tls).await;
                });
            }
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, host = %host.spec.name, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Serves one accepted connection.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    host: Arc<HostRuntime>,
    shared: Arc<Shared>,
    tls: bool,
) {
    host.stats.bump(Counter::Connection);
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let mut shutdown = shared.shutdown.clone();
    if host.spec.network.blackhole {
        // Read and discard until the client gives up or the fleet stops; never answer.
        hold(stream, &mut shutdown).await;
        return;
    }
    if !tls {
        serve_http(TokioIo::new(stream), host, shared, None).await;
        return;
    }
    // http.sys on an SSL binding drops a connection whose first record is not a TLS
    // handshake (0x16) without answering: plain HTTP to 5986 sees the connection closed.
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        peeked = stream.peek(&mut first) => peeked,
        _ = stopped(&mut shutdown) => return,
    };
    match peeked {
        Ok(1) if first[0] == 0x16 => {}
        Ok(_) | Err(_) => {
            host.stats.bump(Counter::NotTls);
            tracing::debug!(%peer, host = %host.spec.name, "non-TLS bytes on the TLS listener");
            // Unread bytes make the close a reset.
            drop(stream);
            return;
        }
    }
    let host_tls = match host.tls(&shared.ca) {
        Ok(t) => t.clone(),
        Err(error) => {
            tracing::warn!(host = %host.spec.name, error, "no TLS configuration");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&host_tls.config));
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            host.stats.bump(Counter::TlsFailure);
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            host.stats.bump(Counter::TlsFailure);
            return;
        }
    };
    let peer_certificates = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| chain.to_vec());
    serve_http(
        TokioIo::new(stream),
        host,
        shared,
        Some(TlsPeer {
            channel_binding: Arc::from(host_tls.channel_binding),
            certificates: peer_certificates.map(Arc::from),
        }),
    )
    .await;
}

/// Authentication state of one connection.
#[derive(Debug, Default)]
struct ConnectionAuth {
    /// The Negotiate acceptor (in progress or complete).
    acceptor: Option<Acceptor>,
}

impl ConnectionAuth {
    fn user(&self) -> Option<&str> {
        self.acceptor.as_ref().and_then(Acceptor::user)
    }
}

/// What a TLS connection carries into authentication.
#[derive(Debug, Clone)]
struct TlsPeer {
    /// The RFC 5929 `tls-server-end-point` application data of the host certificate.
    channel_binding: Arc<[u8]>,
    /// The client's certificate chain, when it presented one.
    certificates: Option<Arc<[CertificateDer<'static>]>>,
}

/// Runs HTTP/1.1 with keep-alive on one connection (plain, or TLS with `tls`).
async fn serve_http<I>(io: I, host: Arc<HostRuntime>, shared: Arc<Shared>, tls: Option<TlsPeer>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let auth = Arc::new(Mutex::new(ConnectionAuth::default()));
    let https = tls.is_some();
    let service = {
        let host = Arc::clone(&host);
        let shared = Arc::clone(&shared);
        service_fn(move |request: Request<Incoming>| {
            let host = Arc::clone(&host);
            let shared = Arc::clone(&shared);
            let auth = Arc::clone(&auth);
            let tls = tls.clone();
            async move {
                let conn = Conn {
                    host: &host,
                    shared: &shared,
                    auth: &auth,
                    channel_binding: tls.as_ref().map(|t| &*t.channel_binding),
                    peer_certificates: tls.as_ref().and_then(|t| t.certificates.as_deref()),
                    https,
                };
                Ok::<_, Infallible>(conn.respond(request).await)
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_CONNECTION_TIMEOUT)
        .title_case_headers(true)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, host = %host.spec.name, "connection ended");
            }
        }
        _ = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_millis(500), connection).await;
        }
    }
}

/// Resolves once the fleet shuts down (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Holds a blackholed connection: reads and discards until EOF or shutdown.
async fn hold(mut stream: TcpStream, shutdown: &mut watch::Receiver<bool>) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = stopped(shutdown) => return,
        }
    }
}

/// One request's view of its connection.
struct Conn<'a> {
    host: &'a HostRuntime,
    shared: &'a Shared,
    auth: &'a Mutex<ConnectionAuth>,
    channel_binding: Option<&'a [u8]>,
    peer_certificates: Option<&'a [CertificateDer<'static>]>,
    https: bool,
}

/// Who a request authenticated as, and the token to send back.
struct Authenticated {
    user: String,
    final_token: Option<(HttpScheme, Vec<u8>)>,
}

impl Conn<'_> {
    async fn respond(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let host = self.host;
        host.stats.bump(Counter::Request);
        let received_at = self.shared.start.elapsed();
        let mut rng = host.draw();
        let delay = host.spec.network.latency + jitter(&mut rng, host.spec.network.jitter);
        if host.extra.impostor {
            self.wait(delay).await;
            return impostor_page();
        }
        if !request.uri().path().eq_ignore_ascii_case(WSMAN_PATH) {
            self.wait(delay).await;
            return empty(StatusCode::NOT_FOUND);
        }
        if request.method() != Method::POST {
            self.wait(delay).await;
            let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return response;
        }

        // MaxEnvelopeSizekb (wire-facts 1.14): refuse before reading what cannot fit.
        let limit = host
            .spec
            .winrm
            .max_envelope_size_bytes()
            .map_or(DEFAULT_MAX_ENVELOPE_BYTES, |n| n as usize);
        let cap = limit.saturating_add(ENCRYPTION_OVERHEAD);
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap as u64) {
            host.stats.bump(Counter::TooLarge);
            self.wait(delay).await;
            return closing(empty(StatusCode::PAYLOAD_TOO_LARGE));
        }
        let (parts, incoming) = request.into_parts();
        let body = match Limited::new(incoming, cap).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                if error.is::<http_body_util::LengthLimitError>() {
                    host.stats.bump(Counter::TooLarge);
                    self.wait(delay).await;
                    return closing(empty(StatusCode::PAYLOAD_TOO_LARGE));
                }
                // The client went away mid-body; nothing to answer.
                return closing(empty(StatusCode::BAD_REQUEST));
            }
        };
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };

        // Unauthenticated Identify (MS-WSMV 3.1.4.1.23).
        if header("WSMANIDENTIFY").is_some_and(|v| v.eq_ignore_ascii_case("unauthenticated"))
            && matches!(ClientMessage::parse(&body), Ok(ClientMessage::Identify(_)))
        {
            host.stats.bump(Counter::UnauthenticatedIdentify);
            let reply = host.service().identify();
            self.wait(delay).await;
            return soap(StatusCode::OK, reply, None);
        }

        let authenticated = match self.authenticate(header(AUTHORIZATION.as_str())) {
            Ok(a) => a,
            Err(response) => {
                self.wait(delay).await;
                return *response;
            }
        };
        let final_token = authenticated
            .final_token
            .as_ref()
            .map(|(scheme, token)| (*scheme, token.as_slice()));
        if body.is_empty() {
            // The end of an empty-bodied handshake (wire-facts 3): 200, empty body.
            self.wait(delay).await;
            return with_token(empty(StatusCode::OK), final_token);
        }

        let content_type = header(CONTENT_TYPE.as_str()).unwrap_or_default();
        let encrypted = encryption::is_encrypted_content_type(content_type).is_some();
        let plaintext = if encrypted {
            match self.unseal(content_type, &body) {
                Ok(plain) => plain,
                Err(response) => {
                    self.wait(delay).await;
                    return *response;
                }
            }
        } else if !self.https && !host.spec.auth.allow_unencrypted {
            // AllowUnencrypted=false: plaintext after authentication gets an empty 500
            // (wire-facts 1.3; winrm4j#144).
            host.stats.bump(Counter::PlaintextRefused);
            self.wait(delay).await;
            return closing(empty(StatusCode::INTERNAL_SERVER_ERROR));
        } else {
            body.to_vec()
        };
        if plaintext.len() > limit {
            host.stats.bump(Counter::TooLarge);
            self.wait(delay).await;
            return closing(empty(StatusCode::PAYLOAD_TOO_LARGE));
        }
        if rng.chance(host.spec.network.empty_500_probability) {
            host.stats.bump(Counter::Empty500);
            self.wait(delay).await;
            return closing(empty(StatusCode::INTERNAL_SERVER_ERROR));
        }

        self.wait(delay).await;
        let Some((status, reply)) = self
            .ask_service(&authenticated.user, &plaintext, received_at)
            .await
        else {
            return closing(empty(StatusCode::SERVICE_UNAVAILABLE));
        };
        host.stats.bump(Counter::ServiceReply);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (content_type, bytes) = if encrypted {
            match self.seal(&reply) {
                Some(sealed) => sealed,
                None => return closing(empty(StatusCode::INTERNAL_SERVER_ERROR)),
            }
        } else {
            (SOAP_CONTENT_TYPE.to_owned(), reply)
        };
        if rng.chance(host.spec.network.reset_probability) {
            host.stats.bump(Counter::Reset);
            return cut_off(status, &content_type, bytes);
        }
        soap(status, bytes, Some(&content_type))
    }

    /// Unseals an encrypted request with the connection's acceptor, or says what to answer.
    fn unseal(
        &self,
        content_type: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, Box<Response<ResponseBody>>> {
        let mut auth = lock(self.auth);
        let Some(acceptor) = auth.acceptor.as_mut().filter(|a| a.is_complete()) else {
            drop(auth);
            return Err(Box::new(self.challenge()));
        };
        match encryption::decrypt(acceptor, content_type, body) {
            Ok(plain) => Ok(plain),
            Err(error) => {
                // The sequence numbers are now out of step: the connection must
                // authenticate again.
                tracing::debug!(%error, host = %self.host.spec.name, "cannot unseal a request");
                auth.acceptor = None;
                Err(Box::new(closing(empty(StatusCode::BAD_REQUEST))))
            }
        }
    }

    /// Seals a reply with the connection's acceptor: (Content-Type, body).
    fn seal(&self, reply: &[u8]) -> Option<(String, Vec<u8>)> {
        let mut auth = lock(self.auth);
        let acceptor = auth.acceptor.as_mut()?;
        let protocol = acceptor.kind().protocol();
        encryption::encrypt(acceptor, protocol, reply)
            .ok()
            .map(|sealed| (sealed.content_type, sealed.body))
    }

    /// Checks the request's credentials: `Ok` with the user, or the 401 to send.
    fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Authenticated, Box<Response<ResponseBody>>> {
        let host = self.host;
        let auth_spec = &host.spec.auth;
        let Some(authorization) = authorization else {
            // No header: fine on a connection that authenticated before.
            return match lock(self.auth).user() {
                Some(user) => Ok(Authenticated {
                    user: user.to_owned(),
                    final_token: None,
                }),
                None => Err(Box::new(self.challenge())),
            };
        };
        let (scheme, data) = authorization
            .split_once(' ')
            .map_or((authorization, ""), |(s, d)| (s, d.trim()));
        if let Some(scheme) = HttpScheme::parse(scheme).filter(|s| self.offers(*s)) {
            let Ok(token) = BASE64.decode(data.as_bytes()) else {
                return Err(self.refuse());
            };
            return self.accept_token(scheme, &token);
        }
        if authorization.trim() == CERTIFICATE_AUTH_HEADER && auth_spec.certificate {
            // Certificate authentication (WS-Man https/mutual): the TLS client
            // certificate's UPN names the account through the host's mappings.
            let mappings: Vec<CertificateMapping> = host
                .spec
                .accounts
                .iter()
                .map(|a| CertificateMapping {
                    subject: format!("{}@{DOMAIN}", a.name),
                    account: a.name.clone(),
                })
                .collect();
            return match client_cert::authenticate(
                Some(authorization),
                self.peer_certificates,
                &mappings,
            ) {
                Ok(account) => {
                    host.stats.bump(Counter::Authentication);
                    Ok(Authenticated {
                        user: account.to_owned(),
                        final_token: None,
                    })
                }
                Err(error) => {
                    tracing::debug!(%error, host = %host.spec.name, "certificate refused");
                    Err(self.refuse())
                }
            };
        }
        if scheme.eq_ignore_ascii_case("Basic") && auth_spec.basic {
            return match check_basic(data, &host.spec.accounts) {
                Some(user) => {
                    host.stats.bump(Counter::Authentication);
                    Ok(Authenticated {
                        user,
                        final_token: None,
                    })
                }
                None => Err(self.refuse()),
            };
        }
        // A scheme the host does not offer: the bare list again (wire-facts 1.2).
        Err(self.refuse())
    }

    /// True when the host offers `scheme`.
    fn offers(&self, scheme: HttpScheme) -> bool {
        let auth = &self.host.spec.auth;
        match scheme {
            HttpScheme::Negotiate => auth.negotiate,
            HttpScheme::Kerberos => auth.kerberos,
            HttpScheme::CredSsp => auth.credssp,
        }
    }

    /// One leg of a connection-bound exchange (Negotiate, Kerberos, CredSSP).
    fn accept_token(
        &self,
        scheme: HttpScheme,
        token: &[u8],
    ) -> Result<Authenticated, Box<Response<ResponseBody>>> {
        let host = self.host;
        let credssp = match scheme {
            HttpScheme::CredSsp => host.credssp().ok(),
            _ => None,
        };
        let context = AcceptorContext {
            accounts: &host.spec.accounts,
            host_name: &host.spec.name,
            computer_name: &host.spec.os.computer_name,
            channel_binding: self.channel_binding,
            cbt_level: CbtLevel::from_setting(&host.spec.auth.cbt_hardening),
            keytab: self.shared.keytab.as_deref(),
            credssp,
        };
        let mut auth = lock(self.auth);
        // A new exchange when there is none, the scheme changed, or the client starts over.
        if auth.acceptor.as_ref().is_none_or(|a| {
            a.is_complete() || a.kind().http_scheme() != scheme || is_first_token(scheme, token)
        }) {
            auth.acceptor = match Acceptor::new(scheme, token, &context) {
                Ok(acceptor) => Some(acceptor),
                Err(error) => {
                    tracing::debug!(%error, host = %host.spec.name, "refused a first token");
                    drop(auth);
                    return Err(self.refuse());
                }
            };
        }
        let step = match auth.acceptor.as_mut().map(|a| a.step(token)) {
            Some(Ok(step)) => step,
            Some(Err(error)) => {
                tracing::debug!(%error, host = %host.spec.name, "authentication failed");
                auth.acceptor = None;
                drop(auth);
                return Err(self.refuse());
            }
            None => {
                drop(auth);
                return Err(self.refuse());
            }
        };
        drop(auth);
        match step {
            AcceptStep::Continue(reply) => Err(Box::new(with_token(
                empty(StatusCode::UNAUTHORIZED),
                Some((scheme, reply.as_slice())),
            ))),
            AcceptStep::Complete { user, token } => {
                host.stats.bump(Counter::Authentication);
                Ok(Authenticated {
                    user,
                    final_token: token.map(|t| (scheme, t)),
                })
            }
        }
    }

    /// A refused credential: counted, answered with the scheme list.
    fn refuse(&self) -> Box<Response<ResponseBody>> {
        self.host.stats.bump(Counter::AuthFailure);
        Box::new(self.challenge())
    }

    /// 401 with one `WWW-Authenticate` header per enabled scheme (wire-facts 1.2).
    fn challenge(&self) -> Response<ResponseBody> {
        let auth = &self.host.spec.auth;
        let mut response = empty(StatusCode::UNAUTHORIZED);
        let headers = response.headers_mut();
        for (enabled, value) in [
            (auth.negotiate, "Negotiate"),
            (auth.kerberos, "Kerberos"),
            (auth.basic, "Basic realm=\"WSMAN\""),
            (auth.credssp, "CredSSP"),
        ] {
            if enabled {
                headers.append(WWW_AUTHENTICATE, HeaderValue::from_static(value));
            }
        }
        response
    }

    /// Calls the service until it answers; `None` when the fleet shuts down first.
    async fn ask_service(
        &self,
        user: &str,
        body: &[u8],
        received_at: Duration,
    ) -> Option<(u16, Vec<u8>)> {
        let service = self.host.service();
        let mut shutdown = self.shared.shutdown.clone();
        for _ in 0..MAX_SERVICE_ROUNDS {
            let now = self.shared.start.elapsed();
            let request = ServiceRequest {
                user,
                body,
                received_at,
                now,
            };
            // Registered before asking, so a change while the service answers is not missed.
            let changed = service.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match service.handle(&request) {
                ServiceReply::Respond { status, body } => return Some((status, body)),
                ServiceReply::WaitUntil(at) => {
                    // At least a millisecond, so a service answering "now" cannot spin.
                    let at = at.max(now + Duration::from_millis(1));
                    let deadline = tokio::time::Instant::from_std(self.shared.start + at);
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        // Another request (a ctrl_c Signal, say) may have given it an answer.
                        () = &mut changed => {}
                        _ = stopped(&mut shutdown) => return None,
                    }
                }
            }
        }
        None
    }

    /// Waits out the host's latency (unless the fleet is shutting down).
    async fn wait(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut shutdown) => {}
        }
    }
}

/// True for a token that starts an exchange rather than continuing one: an NTLM
/// NEGOTIATE, a GSS-API InitialContextToken (SPNEGO or a Kerberos AP-REQ), or a TLS
/// ClientHello record (CredSSP: record type 22, handshake type 1).
fn is_first_token(scheme: HttpScheme, token: &[u8]) -> bool {
    match scheme {
        HttpScheme::Negotiate => {
            token.starts_with(b"NTLMSSP\0\x01\0\0\0") || token.first() == Some(&0x60)
        }
        HttpScheme::Kerberos => token.first() == Some(&0x60),
        HttpScheme::CredSsp => token.first() == Some(&0x16) && token.get(5) == Some(&0x01),
    }
}

fn jitter(rng: &mut Rng, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rng.below(micros.saturating_add(1)))
}

fn lock(auth: &Mutex<ConnectionAuth>) -> std::sync::MutexGuard<'_, ConnectionAuth> {
    // A panic while holding the lock cannot leave the state half-updated in a way that
    // matters more than a refused authentication; keep serving.
    auth.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn base_response(status: StatusCode, body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(SERVER, HeaderValue::from_static(SERVER_HEADER));
    response
}

fn full(bytes: Vec<u8>) -> ResponseBody {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

/// A response with an empty body (`Content-Length: 0`).
fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = base_response(status, full(Vec::new()));
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

fn closing(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Adds `WWW-Authenticate: <scheme> <token>` when there is a token to send.
fn with_token(
    mut response: Response<ResponseBody>,
    token: Option<(HttpScheme, &[u8])>,
) -> Response<ResponseBody> {
    if let Some((scheme, token)) = token
        && let Ok(value) =
            HeaderValue::from_str(&format!("{} {}", scheme.name(), BASE64.encode(token)))
    {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

fn soap(status: StatusCode, body: Vec<u8>, content_type: Option<&str>) -> Response<ResponseBody> {
    let len = body.len();
    let mut response = base_response(status, full(body));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type.unwrap_or(SOAP_CONTENT_TYPE))
            .unwrap_or_else(|_| HeaderValue::from_static(SOAP_CONTENT_TYPE)),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// A 200 HTML page, as a web server that is not WinRM would answer.
fn impostor_page() -> Response<ResponseBody> {
    let page = b"<!DOCTYPE html><html><head><title>IIS Windows Server</title></head>\
<body><h1>IIS Windows Server</h1></body></html>"
        .to_vec();
    let len = page.len();
    let mut response = Response::new(full(page));
    let headers = response.headers_mut();
    headers.insert(SERVER, HeaderValue::from_static("Microsoft-IIS/10.0"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// A response whose body stops halfway: the headers announce the full length, half the
/// bytes are written, then the connection is closed (a flaky link).
fn cut_off(status: StatusCode, content_type: &str, bytes: Vec<u8>) -> Response<ResponseBody> {
    let len = bytes.len();
    let half = Bytes::from(bytes).slice(..len / 2);
    let body = CutBody {
        part: Some(half),
        len: len as u64,
        pause: Box::pin(tokio::time::sleep(Duration::from_millis(20))),
    };
    let mut response = base_response(status, body.boxed());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// Yields its first part, pauses so hyper flushes it, then fails (hyper closes the
/// connection mid-body).
struct CutBody {
    part: Option<Bytes>,
    len: u64,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl Body for CutBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(part) = self.part.take() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulated connection reset",
            )))),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len)
    }
}
