//! Hostile WinRM listeners: servers on loopback that answer with what no Windows host
//! sends, so that tests can hold the client to its bounds (issue 8, docs/reliability.md).
//!
//! Each [`HostileServer`] is one raw TCP listener on a 127.0.0.0/8 address speaking just
//! enough HTTP/1.1 by hand to misbehave in one [`HostileMode`]: a 1 GiB declared body, an
//! endless chunked body or header, a trickle of one byte per second, a redirection, garbage
//! where a TLS handshake should be, an endless run of NTLM challenges, or a SOAP body with
//! a DTD, 10,000-deep nesting or invalid UTF-8, or a PSRP message whose fragments never end.
//!
//! Two modes need a valid WinRM conversation before the hostile reply (a 10,000-deep CLIXML
//! object inside a PSRP message needs an open runspace pool and a running pipeline; a wrong
//! `RelatesTo` is only wrong on an otherwise valid reply). Rather than teaching the
//! simulator's profile format a `hostile` key and its HTTP layer one branch per mode, the
//! listener authenticates Basic requests itself and forwards them to a real
//! [`HostService`] made from a host spec the caller passes ([`HostileServer::start`]'s
//! `backend`), rewriting one reply: the smaller change, kept in this file.
//!
//! Everything a listener sends is generated as it goes (no 1 GiB buffer), and every loop
//! ends when the client closes the connection or the server is shut down.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use psfleet_core::psrp::fragment::{self, Fragment, Fragmenter};
use psfleet_core::psrp::message::{Destination, Message, MessageType, UTF8_BOM};
use psfleet_core::wsman::{
    ReceiveResponse, ReceivedStream, Request, RequestBody, Response, ResponseBody, ns,
};
use psfleet_core::xml::XmlWriter;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::auth::{AcceptStep, Acceptor, AcceptorContext, CbtLevel, HttpScheme, check_basic};
use crate::host::{Account, HostSpec};
use crate::profile::default_accounts;
use crate::rng::{Rng, mix};
use crate::service::{HostService, ServiceReply, ServiceRequest};

/// Element nesting of the deep XML and CLIXML payloads.
pub const NESTING_DEPTH: usize = 10_000;

/// The body length [`HostileMode::HugeResponse`] declares and streams: 1 GiB.
pub const HUGE_RESPONSE_BYTES: u64 = 1 << 30;

/// The pause between two bytes of [`HostileMode::Trickle`].
pub const TRICKLE_INTERVAL: Duration = Duration::from_secs(1);

/// The billion-laughs document: ten levels of entities, each ten times the one below, so
/// that a parser expanding them builds 10^9 copies of "lol" (about 3 GB).
pub const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header/><s:Body><lolz>&lol9;</lolz></s:Body></s:Envelope>"#;

/// Largest request head read (request line and headers).
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Largest request body read; the client's envelopes are far smaller.
const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;

/// Size of each write of the streaming modes.
const CHUNK: usize = 64 * 1024;

/// Most times one request goes back to the service after a `WaitUntil`.
const MAX_SERVICE_ROUNDS: usize = 100_000;

/// `wsman:MaxEnvelopeSize` assumed when a request carries none.
const DEFAULT_ENVELOPE: usize = 153_600;

/// Room left in each envelope of the deep-CLIXML replies for the SOAP around the stream.
const ENVELOPE_OVERHEAD: usize = 4 * 1024;

/// The first object id of the injected PSRP message, far above what the service uses.
const INJECTED_OBJECT_ID: u64 = 0x7000_0000;

/// The `Server` header, as http.sys sends it.
const SERVER: &str = "Microsoft-HTTPAPI/2.0";

/// The Content-Type of plaintext SOAP.
const SOAP_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";

/// How a hostile listener misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostileMode {
    /// Every request gets `200` with `Content-Length: 1073741824`, and the body is streamed
    /// until 1 GiB is sent or the client hangs up.
    HugeResponse,
    /// Every request gets `200` with a chunked body that never ends.
    EndlessChunked,
    /// Every request gets a status line and a header line that never ends.
    EndlessHeader,
    /// Every request gets a complete, valid-looking reply written one byte per second.
    Trickle,
    /// Every request gets this redirection (301, 302, 303, 307 or 308) to `location`.
    Redirect {
        /// The status code.
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// The client's TLS ClientHello is answered with an endless stream of random bytes.
    GarbageTls,
    /// Like [`Self::GarbageTls`], but framed as TLS handshake records (`16 03 03 ...`), so
    /// that the client's TLS stack reads into them before it fails.
    GarbageTlsRecords,
    /// Every Negotiate token is answered with 401 and a fresh NTLM challenge, the
    /// AUTHENTICATE message included: an authentication exchange that never ends.
    EndlessChallenges,
    /// Basic-authenticated requests get `200` with the [`BILLION_LAUGHS`] document.
    BillionLaughs,
    /// Basic-authenticated requests get `200` with a SOAP envelope nesting
    /// [`NESTING_DEPTH`] elements.
    DeepXml,
    /// Basic-authenticated requests get `200` with a SOAP envelope containing bytes that are
    /// not UTF-8.
    InvalidUtf8,
    /// A real service conversation (needs a backend) until the pipeline's first Receive,
    /// which gets a PIPELINE_OUTPUT message whose CLIXML nests [`NESTING_DEPTH`] elements,
    /// fragmented over as many Receive replies as the client's MaxEnvelopeSize needs.
    DeepClixml,
    /// A real service conversation (needs a backend) whose first Receive reply relates to
    /// another message id.
    WrongRelatesTo,
    /// A real service conversation (needs a backend) until the pipeline's first Receive;
    /// from then on every Receive reply carries one more fragment of a PSRP message that
    /// never ends (each reply within the client's MaxEnvelopeSize).
    EndlessFragments,
}

impl HostileMode {
    /// A short name for reports (`huge-response`, `redirect-302`, ...).
    pub fn name(&self) -> String {
        match self {
            Self::HugeResponse => "huge-response".to_owned(),
            Self::EndlessChunked => "endless-chunked".to_owned(),
            Self::EndlessHeader => "endless-header".to_owned(),
            Self::Trickle => "trickle".to_owned(),
            Self::Redirect { status, .. } => format!("redirect-{status}"),
            Self::GarbageTls => "garbage-tls".to_owned(),
            Self::GarbageTlsRecords => "garbage-tls-records".to_owned(),
            Self::EndlessChallenges => "endless-challenges".to_owned(),
            Self::BillionLaughs => "billion-laughs".to_owned(),
            Self::DeepXml => "deep-xml".to_owned(),
            Self::InvalidUtf8 => "invalid-utf8".to_owned(),
            Self::DeepClixml => "deep-clixml".to_owned(),
            Self::WrongRelatesTo => "wrong-relates-to".to_owned(),
            Self::EndlessFragments => "endless-fragments".to_owned(),
        }
    }

    /// True for the modes that forward to a real service first.
    pub fn needs_backend(&self) -> bool {
        matches!(
            self,
            Self::DeepClixml | Self::WrongRelatesTo | Self::EndlessFragments
        )
    }

    /// True for the modes a client reaches with HTTPS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::GarbageTls | Self::GarbageTlsRecords)
    }
}

/// Why a hostile listener did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostileError {
    /// The address is outside 127.0.0.0/8.
    #[error("{0} is outside 127.0.0.0/8; hostile listeners bind loopback addresses only")]
    NotLoopback(SocketAddrV4),
    /// The mode forwards to a service and no backend spec was given.
    #[error("mode {0} needs a backend host spec")]
    NoBackend(String),
    /// A redirection with a status that is not one or a location HTTP cannot carry.
    #[error("invalid redirection: {0}")]
    InvalidRedirect(&'static str),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddrV4,
        /// The socket error.
        #[source]
        source: io::Error,
    },
}

/// What a hostile listener has seen and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostileStats {
    /// Connections accepted.
    pub connections: u64,
    /// HTTP requests read.
    pub requests: u64,
    /// The most requests read on one connection.
    pub most_requests_on_a_connection: u64,
    /// Bytes written (heads, bodies, garbage).
    pub bytes_sent: u64,
    /// Hostile replies started (the rest were forwarded service replies or 401s).
    pub hostile_replies: u64,
}

/// A running hostile listener. Dropping it stops the listener and its connections.
#[derive(Debug)]
pub struct HostileServer {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HostileServer {
    /// Binds `addr` (inside 127.0.0.0/8; port 0 picks a free port) and serves `mode` on the
    /// current tokio runtime. `backend` is the host the forwarding modes run a service for
    /// (its accounts check Basic credentials); the other modes use it for accounts only.
    pub async fn start(
        addr: SocketAddrV4,
        mode: HostileMode,
        backend: Option<Arc<HostSpec>>,
    ) -> Result<Self, HostileError> {
        if !addr.ip().is_loopback() {
            return Err(HostileError::NotLoopback(addr));
        }
        if mode.needs_backend() && backend.is_none() {
            return Err(HostileError::NoBackend(mode.name()));
        }
        if let HostileMode::Redirect { status, location } = &mode {
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Err(HostileError::InvalidRedirect("not a redirection status"));
            }
            if location.bytes().any(|b| b.is_ascii_control()) {
                return Err(HostileError::InvalidRedirect(
                    "control characters in the location",
                ));
            }
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HostileError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| HostileError::Bind { addr, source })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accounts = backend
            .as_ref()
            .map_or_else(|| default_accounts(0), |spec| spec.accounts.clone());
        let computer_name = backend.as_ref().map_or_else(
            || "HOSTILE".to_owned(),
            |spec| spec.os.computer_name.clone(),
        );
        let state = Arc::new(State {
            mode,
            service: backend.map(|spec| Arc::new(HostService::new(spec))),
            accounts,
            computer_name,
            start: Instant::now(),
            seed: mix(u64::from(local.port())),
            injected: Mutex::new(Injection::default()),
            ids: AtomicU64::new(1),
            stats: Counters::default(),
            shutdown: shutdown_rx,
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(Self {
            addr: local,
            state,
            shutdown,
            task,
        })
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The mode.
    pub fn mode(&self) -> &HostileMode {
        &self.state.mode
    }

    /// The counters so far.
    pub fn stats(&self) -> HostileStats {
        self.state.stats.snapshot()
    }

    /// The service the forwarding modes run (its counters show shells left open).
    pub fn service(&self) -> Option<&Arc<HostService>> {
        self.state.service.as_ref()
    }

    /// Stops the listener and every connection.
    pub async fn shutdown(mut self) {
        // An error only means every receiver is gone already.
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// The deep CLIXML object: [`NESTING_DEPTH`] elements, `Obj` and `LST` alternating.
pub fn deep_clixml(depth: usize) -> Vec<u8> {
    let mut w = XmlWriter::with_capacity(depth.saturating_mul(12));
    for level in 0..depth {
        w.start(nest_name(level), &[]);
    }
    w.text("deep");
    for level in (0..depth).rev() {
        w.end(nest_name(level));
    }
    w.into_bytes()
}

/// A SOAP envelope whose body nests elements down to `depth` levels in all.
pub fn deep_xml(depth: usize) -> Vec<u8> {
    let mut w = XmlWriter::with_capacity(depth.saturating_mul(8));
    w.start("s:Envelope", &[("xmlns:s", ns::SOAP)]);
    w.empty("s:Header", &[]);
    w.start("s:Body", &[]);
    let inner = depth.saturating_sub(2);
    for _ in 0..inner {
        w.start("x", &[]);
    }
    for _ in 0..inner {
        w.end("x");
    }
    w.end("s:Body");
    w.end("s:Envelope");
    w.into_bytes()
}

/// A SOAP envelope with bytes that are not UTF-8 in a text node (a truncated two-byte
/// sequence, a stray continuation byte, and 0xFE 0xFF, which never occur in UTF-8).
pub fn invalid_utf8_envelope() -> Vec<u8> {
    const MARK: &str = "MARK-INVALID-UTF8";
    let mut w = XmlWriter::with_capacity(512);
    w.start(
        "s:Envelope",
        &[("xmlns:s", ns::SOAP), ("xmlns:a", ns::ADDRESSING)],
    );
    w.start("s:Header", &[]);
    w.text_element(
        "a:Action",
        &[],
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
    );
    w.end("s:Header");
    w.start("s:Body", &[]);
    w.text_element("x", &[], MARK);
    w.end("s:Body");
    w.end("s:Envelope");
    let bytes = w.into_bytes();
    let Some(at) = bytes
        .windows(MARK.len())
        .position(|window| window == MARK.as_bytes())
    else {
        return bytes;
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..at]);
    out.extend_from_slice(b"\xC3\x28 \x80 \xFE\xFF");
    out.extend_from_slice(&bytes[at + MARK.len()..]);
    out
}

// ----- private -----

/// State shared by the listener's connections.
#[derive(Debug)]
struct State {
    mode: HostileMode,
    service: Option<Arc<HostService>>,
    accounts: Vec<Account>,
    computer_name: String,
    /// The origin of the service's clock.
    start: Instant,
    seed: u64,
    injected: Mutex<Injection>,
    ids: AtomicU64,
    stats: Counters,
    shutdown: watch::Receiver<bool>,
}

impl State {
    fn next_id(&self) -> Uuid {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        Uuid::from_u128((u128::from(mix(self.seed ^ n)) << 64) | u128::from(mix(n)))
    }
}

/// The deep-CLIXML blobs still to send, and whether the wrong RelatesTo went out.
#[derive(Debug, Default)]
struct Injection {
    started: bool,
    blobs: VecDeque<Vec<u8>>,
    fragments_sent: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    most_requests: AtomicU64,
    bytes_sent: AtomicU64,
    hostile_replies: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> HostileStats {
        HostileStats {
            connections: self.connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            most_requests_on_a_connection: self.most_requests.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            hostile_replies: self.hostile_replies.load(Ordering::Relaxed),
        }
    }
}

/// One request as read off the wire.
#[derive(Debug)]
struct RawRequest {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// State of one connection.
#[derive(Debug, Default)]
struct ConnState {
    /// The client's first Negotiate token, replayed to make each fresh challenge.
    first_token: Option<Vec<u8>>,
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut shutdown = state.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let mut shutdown = state.shutdown.clone();
                    tokio::select! {
                        () = serve(stream, &state) => {}
                        _ = shutdown.wait_for(|stop| *stop) => {}
                    }
                });
            }
            Err(error) => {
                tracing::debug!(%error, "hostile listener: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve(mut stream: TcpStream, state: &State) {
    state.stats.connections.fetch_add(1, Ordering::Relaxed);
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    if state.mode.is_tls() {
        garbage_tls(&mut stream, state).await;
        return;
    }
    let mut buf = Vec::new();
    let mut conn = ConnState::default();
    let mut on_connection = 0u64;
    loop {
        let request = match read_request(&mut stream, &mut buf).await {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        state.stats.requests.fetch_add(1, Ordering::Relaxed);
        on_connection += 1;
        state
            .stats
            .most_requests
            .fetch_max(on_connection, Ordering::Relaxed);
        match respond(&mut stream, state, &mut conn, &request).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
    }
}

/// Answers one request; `Ok(false)` when the connection must close.
async fn respond(
    stream: &mut TcpStream,
    state: &State,
    conn: &mut ConnState,
    request: &RawRequest,
) -> io::Result<bool> {
    let stats = &state.stats;
    match &state.mode {
        HostileMode::HugeResponse => {
            stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
            let head = format!(
                "HTTP/1.1 200 OK\r\nServer: {SERVER}\r\nContent-Type: {SOAP_CONTENT_TYPE}\r\nContent-Length: {HUGE_RESPONSE_BYTES}\r\n\r\n"
            );
            send(stream, state, head.as_bytes()).await?;
            let chunk = filler(CHUNK);
            let mut left = HUGE_RESPONSE_BYTES;
            while left > 0 {
                let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                send(stream, state, &chunk[..n]).await?;
                left -= n as u64;
            }
            Ok(false)
        }
        HostileMode::EndlessChunked => {
            stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
            let head = format!(
                "HTTP/1.1 200 OK\r\nServer: {SERVER}\r\nContent-Type: {SOAP_CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            send(stream, state, head.as_bytes()).await?;
            let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
            chunk.extend_from_slice(&filler(CHUNK));
            chunk.extend_from_slice(b"\r\n");
            loop {
                send(stream, state, &chunk).await?;
            }
        }
        HostileMode::EndlessHeader => {
            stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
            let head = format!("HTTP/1.1 200 OK\r\nServer: {SERVER}\r\nX-Hostile: ");
            send(stream, state, head.as_bytes()).await?;
            let chunk = vec![b'a'; CHUNK];
            loop {
                send(stream, state, &chunk).await?;
            }
        }
        HostileMode::Trickle => {
            stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
            let body = invalid_utf8_envelope();
            let mut reply = format!(
                "HTTP/1.1 200 OK\r\nServer: {SERVER}\r\nContent-Type: {SOAP_CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            reply.extend_from_slice(&body);
            for byte in reply.chunks(1) {
                send(stream, state, byte).await?;
                tokio::time::sleep(TRICKLE_INTERVAL).await;
            }
            Ok(false)
        }
        HostileMode::Redirect { status, location } => {
            stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
            let head = format!(
                "HTTP/1.1 {status} {}\r\nServer: {SERVER}\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n",
                reason(*status)
            );
            send(stream, state, head.as_bytes()).await?;
            Ok(true)
        }
        HostileMode::EndlessChallenges => {
            let token = challenge(state, conn, request);
            if token.is_some() {
                stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
            }
            let offer = token.map_or_else(
                || "Negotiate".to_owned(),
                |t| format!("Negotiate {}", BASE64.encode(t)),
            );
            let head = format!(
                "HTTP/1.1 401 Unauthorized\r\nServer: {SERVER}\r\nWWW-Authenticate: {offer}\r\nContent-Length: 0\r\n\r\n"
            );
            send(stream, state, head.as_bytes()).await?;
            Ok(true)
        }
        HostileMode::BillionLaughs | HostileMode::DeepXml | HostileMode::InvalidUtf8 => {
            if basic_user(state, request).is_none() {
                return unauthorized(stream, state).await;
            }
            stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
            let body = match state.mode {
                HostileMode::BillionLaughs => BILLION_LAUGHS.as_bytes().to_vec(),
                HostileMode::DeepXml => deep_xml(NESTING_DEPTH),
                _ => invalid_utf8_envelope(),
            };
            soap(stream, state, 200, &body).await?;
            Ok(true)
        }
        HostileMode::DeepClixml | HostileMode::WrongRelatesTo | HostileMode::EndlessFragments => {
            let Some(user) = basic_user(state, request) else {
                return unauthorized(stream, state).await;
            };
            let (status, body) = forward(state, &user, &request.body).await;
            soap(stream, state, status, &body).await?;
            Ok(true)
        }
        HostileMode::GarbageTls | HostileMode::GarbageTlsRecords => Ok(false),
    }
}

/// The forwarding modes: the service's reply, or the hostile one in its place.
async fn forward(state: &State, user: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let parsed = Request::parse(body).ok();
    let receive = parsed.as_ref().and_then(|request| match &request.body {
        RequestBody::Receive(receive) => Some((request, receive.command_id)),
        _ => None,
    });
    if let (HostileMode::DeepClixml, Some((request, Some(command_id)))) = (&state.mode, receive)
        && let Some(reply) = deep_clixml_reply(state, request, command_id)
    {
        return (200, reply);
    }
    if let (HostileMode::EndlessFragments, Some((request, Some(command_id)))) =
        (&state.mode, receive)
    {
        return (200, endless_fragment_reply(state, request, command_id));
    }
    let Some((status, reply)) = ask_service(state, user, body).await else {
        return (500, Vec::new());
    };
    if let (HostileMode::WrongRelatesTo, Some(_)) = (&state.mode, receive) {
        let first = {
            let mut injected = lock(&state.injected);
            !std::mem::replace(&mut injected.started, true)
        };
        if first && let Ok(mut response) = Response::parse(&reply) {
            state.stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
            response.header.relates_to = Some(state.next_id());
            return (status, response.to_xml());
        }
    }
    (status, reply)
}

/// The next Receive reply carrying a fragment of the deep PIPELINE_OUTPUT message, or
/// `None` once every fragment went out.
fn deep_clixml_reply(state: &State, request: &Request, command_id: Uuid) -> Option<Vec<u8>> {
    let blob = {
        let mut injected = lock(&state.injected);
        if !injected.started {
            injected.started = true;
            let rpid = request
                .header
                .selectors
                .iter()
                .find(|s| s.name == "ShellId")
                .and_then(|s| psfleet_core::ids::parse(&s.value))
                .unwrap_or(Uuid::nil());
            let mut data = UTF8_BOM.to_vec();
            data.extend_from_slice(&deep_clixml(NESTING_DEPTH));
            let message = Message::new(
                Destination::Client,
                MessageType::PipelineOutput,
                rpid,
                command_id,
                data,
            );
            let envelope = request
                .header
                .max_envelope_size
                .map_or(DEFAULT_ENVELOPE, |n| n as usize);
            let size = fragment::max_fragment_size(envelope, ENVELOPE_OVERHEAD);
            let fragments =
                Fragmenter::starting_at(INJECTED_OBJECT_ID).fragment_message(&message, size);
            injected.blobs = fragments.iter().map(|f| f.encode()).collect();
        }
        injected.blobs.pop_front()?
    };
    state.stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
    let body = ResponseBody::ReceiveResponse(ReceiveResponse {
        streams: vec![ReceivedStream {
            name: "stdout".to_owned(),
            command_id: Some(command_id),
            end: false,
            data: blob,
        }],
        command_state: None,
    });
    Some(Response::reply(request.header.message_id, state.next_id(), body).to_xml())
}

/// The next Receive reply of [`HostileMode::EndlessFragments`]: one more middle fragment,
/// as large as the client's envelope allows, of a message that never ends.
fn endless_fragment_reply(state: &State, request: &Request, command_id: Uuid) -> Vec<u8> {
    let fragment_id = {
        let mut injected = lock(&state.injected);
        let id = injected.fragments_sent;
        injected.fragments_sent += 1;
        id
    };
    state.stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
    let envelope = request
        .header
        .max_envelope_size
        .map_or(DEFAULT_ENVELOPE, |n| n as usize);
    let size = fragment::max_fragment_size(envelope, ENVELOPE_OVERHEAD);
    let fragment = Fragment {
        object_id: INJECTED_OBJECT_ID,
        fragment_id,
        start: fragment_id == 0,
        end: false,
        data: filler(size.saturating_sub(21)),
    };
    let body = ResponseBody::ReceiveResponse(ReceiveResponse {
        streams: vec![ReceivedStream {
            name: "stdout".to_owned(),
            command_id: Some(command_id),
            end: false,
            data: fragment.encode(),
        }],
        command_state: None,
    });
    Response::reply(request.header.message_id, state.next_id(), body).to_xml()
}

/// Calls the service until it answers (as the simulator's HTTP layer does).
async fn ask_service(state: &State, user: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let service = state.service.as_ref()?;
    let received_at = state.start.elapsed();
    for _ in 0..MAX_SERVICE_ROUNDS {
        let now = state.start.elapsed();
        let request = ServiceRequest {
            user,
            body,
            received_at,
            now,
        };
        match service.handle(&request) {
            ServiceReply::Respond { status, body } => return Some((status, body)),
            ServiceReply::WaitUntil(at) => {
                let at = at.max(now + Duration::from_millis(1));
                tokio::time::sleep_until(tokio::time::Instant::from_std(state.start + at)).await;
            }
        }
    }
    None
}

/// A fresh NTLM challenge for the connection's first Negotiate token, whatever token came
/// now (the AUTHENTICATE message included); `None` before any Negotiate token.
fn challenge(state: &State, conn: &mut ConnState, request: &RawRequest) -> Option<Vec<u8>> {
    let token = request
        .header("Authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Negotiate"))
        .and_then(|(_, data)| BASE64.decode(data.trim().as_bytes()).ok());
    if let Some(token) = token
        && (token.starts_with(b"NTLMSSP\0\x01\0\0\0") || token.first() == Some(&0x60))
    {
        conn.first_token = Some(token);
    }
    let first = conn.first_token.as_deref()?;
    let context = AcceptorContext {
        accounts: &state.accounts,
        host_name: "hostile.fleet.test",
        computer_name: &state.computer_name,
        channel_binding: None,
        cbt_level: CbtLevel::None,
        keytab: None,
        credssp: None,
    };
    let mut acceptor = Acceptor::new(HttpScheme::Negotiate, first, &context).ok()?;
    match acceptor.step(first) {
        Ok(AcceptStep::Continue(token)) => Some(token),
        _ => None,
    }
}

/// The account a Basic header authenticates (against the backend's accounts when there
/// is a service, any user name otherwise).
fn basic_user(state: &State, request: &RawRequest) -> Option<String> {
    let (scheme, data) = request.header("Authorization")?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    if state.service.is_some() {
        return check_basic(data, &state.accounts);
    }
    let decoded = BASE64.decode(data.trim().as_bytes()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(user, _)| user.to_owned())
}

async fn unauthorized(stream: &mut TcpStream, state: &State) -> io::Result<bool> {
    let head = format!(
        "HTTP/1.1 401 Unauthorized\r\nServer: {SERVER}\r\nWWW-Authenticate: Basic realm=\"WSMAN\"\r\nContent-Length: 0\r\n\r\n"
    );
    send(stream, state, head.as_bytes()).await?;
    Ok(true)
}

async fn soap(stream: &mut TcpStream, state: &State, status: u16, body: &[u8]) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nServer: {SERVER}\r\nContent-Type: {SOAP_CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n",
        reason(status),
        body.len()
    );
    send(stream, state, head.as_bytes()).await?;
    send(stream, state, body).await
}

/// Answers a TLS ClientHello with random bytes until the client hangs up.
async fn garbage_tls(stream: &mut TcpStream, state: &State) {
    let mut hello = vec![0u8; 4096];
    match stream.read(&mut hello).await {
        Ok(0) | Err(_) => return,
        Ok(_) => {}
    }
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    state.stats.hostile_replies.fetch_add(1, Ordering::Relaxed);
    let framed = state.mode == HostileMode::GarbageTlsRecords;
    let mut rng = Rng::new(state.seed);
    let mut first = true;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        while chunk.len() < CHUNK {
            chunk.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        if framed {
            // A handshake record of 16 KiB (the largest plaintext record) at the start
            // of every chunk, random content after it.
            chunk[..5].copy_from_slice(&[0x16, 0x03, 0x03, 0x40, 0x00]);
        } else if first && (0x14..=0x18).contains(&chunk[0]) {
            // Not a TLS record type, so the very first byte already breaks the protocol.
            chunk[0] ^= 0x80;
        }
        first = false;
        if send(stream, state, &chunk).await.is_err() {
            return;
        }
    }
}

async fn send(stream: &mut TcpStream, state: &State, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    state
        .stats
        .bytes_sent
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Reads one request (head and `Content-Length` body); `None` at a clean end of stream.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<RawRequest>> {
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let headers: Vec<(String, String)> = head
                .split("\r\n")
                .skip(1)
                .filter_map(|line| line.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let length = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            if length > MAX_REQUEST_BODY {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
            }
            let total = end + 4 + length;
            while buf.len() < total {
                let n = stream.read(&mut scratch).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&scratch[..n]);
            }
            let body = buf[end + 4..total].to_vec();
            buf.drain(..total);
            return Ok(Some(RawRequest { headers, body }));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let n = stream.read(&mut scratch).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&scratch[..n]);
    }
}

/// Generated body bytes: `<x/>` repeated (looks like XML to anyone sniffing it).
fn filler(len: usize) -> Vec<u8> {
    b"<x/>".iter().copied().cycle().take(len).collect()
}

fn nest_name(level: usize) -> &'static str {
    if level.is_multiple_of(2) {
        "Obj"
    } else {
        "LST"
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        401 => "Unauthorized",
        _ => "Internal Server Error",
    }
}

fn lock(injection: &Mutex<Injection>) -> std::sync::MutexGuard<'_, Injection> {
    // A panic while holding the lock leaves at worst a half-sent injection; keep serving.
    injection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use psfleet_core::psrp::clixml;
    use psfleet_core::xml::{self, XmlError};

    #[test]
    fn payloads_are_what_they_claim() {
        assert_eq!(
            xml::parse(BILLION_LAUGHS.as_bytes()),
            Err(XmlError::DoctypeRefused)
        );
        assert!(matches!(
            xml::parse(&deep_xml(NESTING_DEPTH)),
            Err(XmlError::TooDeep(_))
        ));
        // Within the limits the same shape parses: the depth is what is refused.
        assert!(xml::parse(&deep_xml(20)).is_ok());
        assert!(matches!(
            xml::parse(&invalid_utf8_envelope()),
            Err(XmlError::InvalidUtf8(_))
        ));
        let deep = deep_clixml(NESTING_DEPTH);
        assert_eq!(
            deep.windows(5).filter(|w| w == b"<Obj>").count(),
            NESTING_DEPTH / 2
        );
        assert!(clixml::from_bytes(&deep).is_err());
    }

    #[tokio::test]
    async fn refuses_addresses_outside_loopback_and_missing_backends() {
        let outside = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 0, 1), 0);
        assert!(matches!(
            HostileServer::start(outside, HostileMode::Trickle, None).await,
            Err(HostileError::NotLoopback(_))
        ));
        let loopback = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0);
        assert!(matches!(
            HostileServer::start(loopback, HostileMode::DeepClixml, None).await,
            Err(HostileError::NoBackend(_))
        ));
        let bad = HostileMode::Redirect {
            status: 302,
            location: "http://x/\r\nSet-Cookie: a".to_owned(),
        };
        assert!(matches!(
            HostileServer::start(loopback, bad, None).await,
            Err(HostileError::InvalidRedirect(_))
        ));
    }

    #[tokio::test]
    async fn huge_response_streams_without_buffering() {
        let loopback = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0);
        let server = HostileServer::start(loopback, HostileMode::HugeResponse, None)
            .await
            .unwrap();
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        stream
            .write_all(b"POST /wsman HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut got = vec![0u8; 1024 * 1024];
        let mut read = 0;
        while read < got.len() {
            read += stream.read(&mut got[read..]).await.unwrap();
        }
        let text = String::from_utf8_lossy(&got[..200]);
        assert!(text.contains("Content-Length: 1073741824"), "{text}");
        drop(stream);
        let stats = server.stats();
        assert_eq!((stats.connections, stats.requests), (1, 1));
        assert!(stats.bytes_sent >= 1024 * 1024);
        server.shutdown().await;
    }
}
