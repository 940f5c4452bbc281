//! Kerberos against a real MIT KDC on 127.0.0.1.
//!
//! Each test starts a private realm (FLEET.TEST) with `scripts/kdc` in a temporary
//! directory: a user `fleetadmin` that requires pre-authentication, `HTTP/<host>` service
//! principals and their keytab. The engine's client context gets its tickets from that KDC
//! and authenticates to the simulator's Kerberos acceptor (`psfleet_sim::auth_kerberos`,
//! keys from the keytab) over a real loopback HTTP connection to an in-test hyper server,
//! then seals and unseals bodies both ways through `psfleet_core::encryption`.
//!
//! Without `krb5kdc` (Debian packages krb5-kdc krb5-admin-server krb5-user) the tests skip
//! with a printed line, except under `CI=true`, where they fail.

// Test support (KDC start-up, the in-test server): failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use psfleet_core::encryption::{self, Protocol};
use psfleet_core::taxonomy::Bucket;
use psfleet_engine::auth::{AuthError, ClientContext, ContextOptions, Credential, Mechanism};
use psfleet_engine::ticket_cache::TicketCache;
use psfleet_sim::auth_kerberos::{Accepted, KerberosAcceptor, Keytab, Scheme};
use psfleet_tests::kdc::Kdc;
use tokio::net::TcpListener;

const HOST: &str = "web01.fleet.test";

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn kerberos_scheme_authenticates_over_http_and_seals_both_ways() {
    let Some(kdc) = realm("kerberos_scheme") else {
        return;
    };
    let server = TestServer::start(&kdc, Scheme::Kerberos, &[]).await;
    // Every user-name form Windows accepts ends up as FLEET.TEST\fleetadmin.
    for user in [
        "fleetadmin",
        "FLEET\\fleetadmin",
        "FLEET.TEST\\fleetadmin",
        "fleetadmin@FLEET.TEST",
        "fleetadmin@fleet.test",
    ] {
        let credential = Credential::new(user, kdc.password.clone()).unwrap();
        let context =
            ClientContext::with_options(Mechanism::Kerberos, &credential, HOST, &kdc.options())
                .unwrap();
        assert_eq!(
            context.kerberos_target().unwrap().principal.inner(),
            "FLEET.TEST\\fleetadmin"
        );
        assert_eq!(context.target_name(), "HTTP/web01.fleet.test");
        let mut session = HttpSession::connect(server.addr, context).await;
        let legs = session.authenticate().await.unwrap();
        // One AP-REQ, answered by a 200 carrying the AP-REP (mutual authentication).
        assert_eq!(legs, 1, "{user}");
        assert!(session.context.uses_kerberos());
        let seen = session.round_trips(Protocol::Kerberos).await;
        assert_eq!(seen, 4, "{user}");
        assert_eq!(
            server.users(),
            vec!["fleetadmin@fleet.test".to_owned()],
            "{user}"
        );
        server.clear();
    }
    // A Negotiate client at a host that offers only the Kerberos scheme: a bare 401.
    let credential = Credential::new("fleetadmin", kdc.password.clone()).unwrap();
    let context =
        ClientContext::with_options(Mechanism::Negotiate, &credential, HOST, &kdc.options())
            .unwrap();
    let mut session = HttpSession::connect(server.addr, context).await;
    match session.authenticate().await {
        Err(Refusal::Status(StatusCode::UNAUTHORIZED)) => {}
        other => panic!("{other:?}"),
    }
    assert!(server.users().is_empty());
}

#[tokio::test]
async fn negotiate_prefers_kerberos_then_falls_back_to_ntlm() {
    let Some(kdc) = realm("negotiate_kerberos") else {
        return;
    };
    let password = kdc.password.clone();
    // The simulated host also knows a local account for NTLM.
    let accounts = [
        ("CORP\\alice", "Corr3ct-Horse!"),
        ("FLEET.TEST\\fleetadmin", password.as_str()),
    ];
    let server = TestServer::start(&kdc, Scheme::Negotiate, &accounts).await;

    // A realm with a KDC: SPNEGO carries Kerberos.
    let credential = Credential::new("FLEET\\fleetadmin", password.clone()).unwrap();
    let context =
        ClientContext::with_options(Mechanism::Negotiate, &credential, HOST, &kdc.options())
            .unwrap();
    assert!(context.kerberos_target().is_some());
    let mut session = HttpSession::connect(server.addr, context).await;
    session.authenticate().await.unwrap();
    assert!(session.context.uses_kerberos());
    assert_eq!(session.round_trips(Protocol::Spnego).await, 4);
    assert_eq!(server.users(), vec!["fleetadmin@fleet.test".to_owned()]);
    assert_eq!(server.kerberos_sessions(), 1);
    server.clear();

    // A domain no KDC is known for: NTLM alone, as on a workgroup machine.
    let credential = Credential::new("CORP\\alice", "Corr3ct-Horse!").unwrap();
    let context =
        ClientContext::with_options(Mechanism::Negotiate, &credential, HOST, &kdc.options())
            .unwrap();
    assert!(context.kerberos_target().is_none());
    let mut session = HttpSession::connect(server.addr, context).await;
    session.authenticate().await.unwrap();
    assert!(!session.context.uses_kerberos());
    assert_eq!(session.round_trips(Protocol::Spnego).await, 4);
    assert_eq!(server.users(), vec!["CORP\\alice".to_owned()]);
    assert_eq!(server.kerberos_sessions(), 0);
    server.clear();

    // A KDC that cannot be reached: SPNEGO falls back to NTLM (sspi's fallback rule).
    let mut options = kdc.options();
    options.kerberos.kdc = Some(format!("127.0.0.1:{}", closed_port()));
    let credential = Credential::new("FLEET\\fleetadmin", password.clone()).unwrap();
    let context =
        ClientContext::with_options(Mechanism::Negotiate, &credential, HOST, &options).unwrap();
    let mut session = HttpSession::connect(server.addr, context).await;
    session.authenticate().await.unwrap();
    assert!(!session.context.uses_kerberos());
    assert_eq!(session.round_trips(Protocol::Spnego).await, 4);
    assert_eq!(server.users(), vec!["FLEET.TEST\\fleetadmin".to_owned()]);
}

#[tokio::test]
async fn kdc_refusals_are_typed() {
    let Some(kdc) = realm("kdc_refusals") else {
        return;
    };
    let step = |user: &str, password: &str, options: &ContextOptions| {
        let credential = Credential::new(user, password.to_owned()).unwrap();
        let mut context =
            ClientContext::with_options(Mechanism::Kerberos, &credential, HOST, options)?;
        // The blocking path (the async one is used over HTTP in the other tests).
        context.step(None).map(|_| ())
    };
    let options = kdc.options();

    // Wrong password: the KDC refuses the encrypted timestamp (KDC_ERR_PREAUTH_FAILED).
    let err = step("fleetadmin", "wrong-password", &options).unwrap_err();
    assert!(
        matches!(&err, AuthError::KerberosCredentialsRejected { reason, .. } if reason.contains("pre-authentication")),
        "{err:?}"
    );
    assert_eq!(err.bucket(), Some(Bucket::InvalidCredentials));

    // Unknown user (KDC_ERR_C_PRINCIPAL_UNKNOWN).
    let err = step("nobody", "whatever", &options).unwrap_err();
    assert!(
        matches!(&err, AuthError::KerberosCredentialsRejected { principal, .. } if principal == "FLEET.TEST\\nobody"),
        "{err:?}"
    );
    assert_eq!(err.bucket(), Some(Bucket::InvalidCredentials));

    // A service without a principal (KDC_ERR_S_PRINCIPAL_UNKNOWN).
    let mut unknown_spn = options.clone();
    unknown_spn.kerberos.spn = Some("HTTP/nohost.fleet.test".to_owned());
    let err = step("fleetadmin", &kdc.password, &unknown_spn).unwrap_err();
    assert!(
        matches!(&err, AuthError::KerberosServiceUnknown { spn, .. } if spn == "HTTP/nohost.fleet.test"),
        "{err:?}"
    );

    // A realm no KDC is configured for: refused before any packet.
    let err = step("OTHER.TEST\\fleetadmin", &kdc.password, &options).unwrap_err();
    assert!(
        matches!(&err, AuthError::KerberosRealmUnknown { realm } if realm == "OTHER.TEST"),
        "{err:?}"
    );
    assert_eq!(err.bucket(), Some(Bucket::InvalidDomain));

    // A KDC that does not answer: connection refused.
    let mut dead = options.clone();
    dead.kerberos.kdc = Some(format!("127.0.0.1:{}", closed_port()));
    let err = step("fleetadmin", &kdc.password, &dead).unwrap_err();
    assert!(
        matches!(&err, AuthError::KdcUnreachable { realm, .. } if realm == "FLEET.TEST"),
        "{err:?}"
    );
    assert_eq!(err.bucket(), Some(Bucket::InvalidDomain));

    // No realm anywhere: a krb5.conf without default_realm and a bare user name.
    let bare_conf = kdc.dir.join("no-default-realm.conf");
    std::fs::write(
        &bare_conf,
        "[realms]\n FLEET.TEST = {\n  kdc = 127.0.0.1:1\n }\n",
    )
    .unwrap();
    let mut no_realm = options.clone();
    no_realm.kerberos.krb5_config = Some(bare_conf);
    let err = step("fleetadmin", &kdc.password, &no_realm).unwrap_err();
    assert!(matches!(&err, AuthError::KerberosNoRealm { .. }), "{err:?}");
    assert_eq!(err.bucket(), Some(Bucket::ClientAuthenticationDisabled));

    // An IP address has no SPN.
    let credential = Credential::new("fleetadmin", kdc.password.clone()).unwrap();
    let err = ClientContext::with_options(Mechanism::Kerberos, &credential, "127.0.0.1", &options)
        .unwrap_err();
    assert!(
        matches!(err, AuthError::KerberosIpAddress { .. }),
        "{err:?}"
    );

    // The right password over the blocking path gets an AP-REQ.
    step("fleetadmin", &kdc.password, &options).unwrap();
}

#[tokio::test]
async fn a_ticket_cache_from_kinit_logs_on_with_no_password_and_no_as_exchange() {
    let Some(kdc) = realm("ticket_cache") else {
        return;
    };
    let cache_path = kdc.dir.join("krb5cc_test");
    kdc.kinit(&cache_path);
    let as_before = kdc.logged("AS_REQ");
    let tgs_before = kdc.logged("TGS_REQ").len();
    // kinit's own AS exchange: refused for pre-authentication, then issued.
    assert_eq!(
        as_before.iter().filter(|l| l.contains(": ISSUE:")).count(),
        1,
        "{as_before:?}"
    );

    let cache = TicketCache::read(&cache_path).unwrap();
    assert_eq!(cache.principal.to_string(), "fleetadmin@FLEET.TEST");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let tgt = cache.tgt(now).unwrap();
    assert_eq!(tgt.server.to_string(), "krbtgt/FLEET.TEST@FLEET.TEST");
    assert_eq!(tgt.enctype, 18);
    // scripts/kdc gives tickets 10 hours: the same TGT ten hours on is refused, by name.
    let err = cache.tgt(now + 10 * 3600 + 60).unwrap_err();
    assert!(
        err.to_string().contains("expired")
            && err.to_string().contains("kinit fleetadmin@FLEET.TEST"),
        "{err}"
    );

    let credential = Credential::from_ticket_cache(cache).unwrap();
    assert_eq!(credential.user(), "FLEET.TEST\\fleetadmin");
    assert!(!format!("{credential:?}").contains("password"));

    // The Kerberos scheme and SPNEGO both log on and seal with the cached TGT.
    for (mechanism, scheme, protocol) in [
        (Mechanism::Kerberos, Scheme::Kerberos, Protocol::Kerberos),
        (Mechanism::Negotiate, Scheme::Negotiate, Protocol::Spnego),
    ] {
        let server = TestServer::start(&kdc, scheme, &[]).await;
        let context =
            ClientContext::with_options(mechanism, &credential, HOST, &kdc.options()).unwrap();
        let mut session = HttpSession::connect(server.addr, context).await;
        assert_eq!(session.authenticate().await.unwrap(), 1, "{mechanism}");
        assert!(session.context.uses_kerberos(), "{mechanism}");
        assert_eq!(session.round_trips(protocol).await, 4, "{mechanism}");
        assert_eq!(server.users(), vec!["fleetadmin@fleet.test".to_owned()]);
        assert_eq!(server.kerberos_sessions(), 1, "{mechanism}");
    }

    // The KDC saw one TGS-REQ per logon for the service, made with the cached TGT, and
    // no AS-REQ beyond kinit's: the AS exchange was answered from the cache.
    assert_eq!(kdc.logged("AS_REQ"), as_before);
    let tgs = kdc.logged("TGS_REQ");
    assert_eq!(tgs.len(), tgs_before + 2, "{tgs:?}");
    for line in &tgs[tgs_before..] {
        assert!(
            line.contains("ISSUE")
                && line.contains("fleetadmin@FLEET.TEST for HTTP/web01.fleet.test@FLEET.TEST"),
            "{line}"
        );
    }

    // Methods that need a password refuse the cache before any packet.
    for mechanism in [Mechanism::Ntlm, Mechanism::CredSsp] {
        let err =
            ClientContext::with_options(mechanism, &credential, HOST, &kdc.options()).unwrap_err();
        assert!(matches!(err, AuthError::PasswordNeeded { .. }), "{err:?}");
        assert_eq!(err.bucket(), Some(Bucket::InvalidCredentials));
    }
    // SPNEGO with a cache never falls back to NTLM: an address has no SPN.
    let err = ClientContext::with_options(
        Mechanism::Negotiate,
        &credential,
        "127.0.0.1",
        &kdc.options(),
    )
    .unwrap_err();
    assert!(
        matches!(err, AuthError::KerberosIpAddress { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_acceptor_refuses_tickets_for_another_service_and_replays() {
    let Some(kdc) = realm("acceptor_refusals") else {
        return;
    };
    let keytab = Keytab::read(&kdc.keytab).unwrap();
    let credential = Credential::new("fleetadmin", kdc.password.clone()).unwrap();
    // A ticket for web02 presented to web01 (a misrouted or relayed token).
    let mut context = ClientContext::with_options(
        Mechanism::Kerberos,
        &credential,
        "web02.fleet.test",
        &kdc.options(),
    )
    .unwrap();
    let ap_req = context.step_async(None).await.unwrap().token.unwrap();
    let mut web01 = KerberosAcceptor::new(Scheme::Kerberos, &keytab, HOST, &[], None).unwrap();
    assert!(web01.accept(&ap_req).is_err());
    // The same AP-REQ twice to web02: the second is a replay.
    let mut web02 =
        KerberosAcceptor::new(Scheme::Kerberos, &keytab, "web02.fleet.test", &[], None).unwrap();
    assert!(matches!(
        web02.accept(&ap_req).unwrap(),
        Accepted::Complete(Some(_))
    ));
    let err = web02.accept(&ap_req).unwrap_err();
    assert!(err.to_string().contains("complete"), "{err}");
    // A channel-bound client still authenticates (sspi's Kerberos acceptor does not
    // check the binding; see the module note in auth_kerberos).
    let options = ContextOptions {
        channel_bindings: Some(b"tls-server-end-point:0123456789abcdef".to_vec()),
        ..kdc.options()
    };
    let mut bound =
        ClientContext::with_options(Mechanism::Kerberos, &credential, HOST, &options).unwrap();
    let token = bound.step_async(None).await.unwrap().token.unwrap();
    let mut acceptor = KerberosAcceptor::new(
        Scheme::Kerberos,
        &keytab,
        HOST,
        &[],
        Some(b"tls-server-end-point:0123456789abcdef"),
    )
    .unwrap();
    let Accepted::Complete(Some(ap_rep)) = acceptor.accept(&token).unwrap() else {
        panic!("no AP-REP");
    };
    assert!(bound.step_async(Some(&ap_rep)).await.unwrap().complete);
    // Sealed in memory both ways; a flipped bit in a server block is refused.
    let sealed = encryption::encrypt(&mut bound, Protocol::Kerberos, b"<in/>").unwrap();
    let plain = encryption::decrypt(&mut acceptor, &sealed.content_type, &sealed.body).unwrap();
    assert_eq!(plain, b"<in/>");
    let mut reply = encryption::encrypt(&mut acceptor, Protocol::Kerberos, b"<out/>").unwrap();
    let end = reply.body.len() - b"--Encrypted Boundary--\r\n".len();
    reply.body[end - 1] ^= 1;
    assert!(encryption::decrypt(&mut bound, &reply.content_type, &reply.body).is_err());
}

// ---------------------------------------------------------------------------------------
// The KDC.

/// A realm with the `HTTP/web01` and `HTTP/web02` services (`None`: no KDC installed).
pub(crate) fn realm(test: &str) -> Option<Kdc> {
    Kdc::start(test, &[HOST, "web02.fleet.test"])
}

/// A loopback port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// The in-test WinRM-like server: Kerberos/Negotiate acceptor per connection, echo of
// sealed bodies.

struct TestServer {
    addr: SocketAddr,
    log: Arc<Mutex<ServerLog>>,
}

#[derive(Default)]
struct ServerLog {
    users: Vec<String>,
    kerberos_sessions: usize,
}

impl TestServer {
    async fn start(kdc: &Kdc, scheme: Scheme, accounts: &[(&str, &str)]) -> Self {
        let keytab = Arc::new(Keytab::read(&kdc.keytab).unwrap());
        let accounts: Arc<Vec<(String, String)>> = Arc::new(
            accounts
                .iter()
                .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                .collect(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let server_log = Arc::clone(&log);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let refs: Vec<(&str, &str)> = accounts
                    .iter()
                    .map(|(u, p)| (u.as_str(), p.as_str()))
                    .collect();
                let acceptor = KerberosAcceptor::new(scheme, &keytab, HOST, &refs, None).unwrap();
                let state = Arc::new(Mutex::new(acceptor));
                let log = Arc::clone(&server_log);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        let log = Arc::clone(&log);
                        async move { Ok::<_, hyper::Error>(handle(request, scheme, &state, &log).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, log }
    }

    fn users(&self) -> Vec<String> {
        self.log.lock().unwrap().users.clone()
    }

    fn kerberos_sessions(&self) -> usize {
        self.log.lock().unwrap().kerberos_sessions
    }

    fn clear(&self) {
        *self.log.lock().unwrap() = ServerLog::default();
    }
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    scheme: Scheme,
    state: &Mutex<KerberosAcceptor>,
    log: &Mutex<ServerLog>,
) -> Response<Full<Bytes>> {
    let scheme_name = match scheme {
        Scheme::Kerberos => "Kerberos",
        Scheme::Negotiate => "Negotiate",
    };
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let reply = |status: StatusCode, token: Option<Vec<u8>>| {
        let mut builder = Response::builder().status(status);
        builder = match token {
            Some(token) => builder.header(
                hyper::header::WWW_AUTHENTICATE,
                format!("{scheme_name} {}", BASE64.encode(token)),
            ),
            None if status == StatusCode::UNAUTHORIZED => {
                builder.header(hyper::header::WWW_AUTHENTICATE, scheme_name)
            }
            None => builder,
        };
        builder.body(Full::new(Bytes::new())).unwrap()
    };
    let mut acceptor = state.lock().unwrap();
    if let Some(value) = authorization {
        let Some(token) = value
            .strip_prefix(scheme_name)
            .map(str::trim)
            .and_then(|t| BASE64.decode(t).ok())
        else {
            return reply(StatusCode::UNAUTHORIZED, None);
        };
        return match acceptor.accept(&token) {
            Ok(Accepted::Continue(token)) => reply(StatusCode::UNAUTHORIZED, Some(token)),
            Ok(Accepted::Complete(token)) => {
                let user = acceptor.user().unwrap_or_default();
                let mut log = log.lock().unwrap();
                log.users.push(user);
                log.kerberos_sessions += usize::from(acceptor.is_kerberos());
                reply(StatusCode::OK, token)
            }
            Err(_) => reply(StatusCode::UNAUTHORIZED, None),
        };
    }
    if !acceptor.is_complete() {
        return reply(StatusCode::UNAUTHORIZED, None);
    }
    // An authenticated connection: unseal, echo, seal.
    let Ok(plain) = encryption::decrypt(&mut *acceptor, &content_type, &body) else {
        return reply(StatusCode::BAD_REQUEST, None);
    };
    let protocol = encryption::is_encrypted_content_type(&content_type).unwrap();
    let sealed = encryption::encrypt(&mut *acceptor, protocol, &echo(&plain)).unwrap();
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, sealed.content_type)
        .body(Full::new(Bytes::from(sealed.body)))
        .unwrap()
}

pub(crate) fn echo(body: &[u8]) -> Vec<u8> {
    [b"<echo>".as_slice(), body, b"</echo>"].concat()
}

// ---------------------------------------------------------------------------------------
// The client side: the engine's context driven over one hyper connection, the way the
// engine's transport drives it (empty-body legs, then sealed bodies).

pub(crate) struct HttpSession {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub(crate) context: ClientContext,
}

/// Why [`HttpSession::authenticate`] ended without a 200.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The server answered this status without a token to continue with.
    Status(StatusCode),
    /// The client context refused a server token (a CredSSP error TSRequest, ...).
    Auth(AuthError),
}

impl HttpSession {
    pub(crate) async fn connect(addr: SocketAddr, context: ClientContext) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self { sender, context }
    }

    async fn post(
        &mut self,
        body: Vec<u8>,
        content_type: &str,
        authorization: Option<String>,
    ) -> Response<Bytes> {
        let mut request = Request::post("/wsman")
            .header(hyper::header::HOST, HOST)
            .header(hyper::header::CONTENT_TYPE, content_type);
        if let Some(value) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let response = self
            .sender
            .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
    }

    /// Runs the empty-body legs until a 200; returns the number of legs, or why not.
    pub(crate) async fn authenticate(&mut self) -> Result<usize, Refusal> {
        let scheme = self.context.mechanism().http_scheme();
        let mut input: Option<Vec<u8>> = None;
        for leg in 1..=8 {
            let step = self
                .context
                .step_async(input.as_deref())
                .await
                .map_err(Refusal::Auth)?;
            let token = step.token.expect("a token for the server");
            let response = self
                .post(
                    Vec::new(),
                    "application/soap+xml;charset=UTF-8",
                    Some(format!("{scheme} {}", BASE64.encode(token))),
                )
                .await;
            let server_token = response
                .headers()
                .get(hyper::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix(scheme))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| BASE64.decode(t).unwrap());
            match response.status() {
                StatusCode::OK => {
                    if !self.context.is_complete() {
                        let last = self
                            .context
                            .step_async(server_token.as_deref())
                            .await
                            .unwrap();
                        assert!(last.complete && last.token.is_none());
                    }
                    return Ok(leg);
                }
                StatusCode::UNAUTHORIZED if server_token.is_some() => input = server_token,
                other => return Err(Refusal::Status(other)),
            }
        }
        panic!("too many legs");
    }

    /// Sends sealed bodies and checks the sealed echoes; returns how many round trips.
    pub(crate) async fn round_trips(&mut self, protocol: Protocol) -> usize {
        let bodies: Vec<Vec<u8>> = vec![
            b"<s:Envelope/>".to_vec(),
            (0..=255u8).cycle().take(5000).collect(),
            vec![b'x'; 150_000],
            b"<after-the-large-one/>".to_vec(),
        ];
        for body in &bodies {
            let sealed = encryption::encrypt(&mut self.context, protocol, body).unwrap();
            assert!(sealed.content_type.contains(protocol.mime_type()));
            let response = self.post(sealed.body, &sealed.content_type, None).await;
            assert_eq!(response.status(), StatusCode::OK);
            let content_type = response.headers()[hyper::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            let plain =
                encryption::decrypt(&mut self.context, &content_type, response.body()).unwrap();
            assert_eq!(plain, echo(body));
        }
        bodies.len()
    }
}

// ---------------------------------------------------------------------------------------
// `psfleet run` with ticket caches, through the binary.

/// One Kerberos-only and one Negotiate host, both with keys in the realm's keytab.
const CACHE_PROFILE: &str = r#"
[[class]]
name = "kerberos"
count = 1
auth = ["kerberos"]

[[class]]
name = "negotiate"
count = 1
auth = ["negotiate"]
"#;

#[test]
fn psfleet_run_uses_the_ticket_cache_named_by_the_inventory_or_found_for_the_user() {
    use psfleet_sim::fleet::FleetOptions;
    use psfleet_sim::profile::Profile;

    let test = "run_ticket_cache";
    let profile = Profile::parse("ticket-cache", "<test>", CACHE_PROFILE).unwrap();
    let mut options = FleetOptions::new(profile, 2, 11);
    let names = psfleet_tests::fleet::planned_names(&options);
    let Some(kdc) = Kdc::start(test, &names) else {
        return;
    };
    options.keytab = Some(kdc.keytab.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fleet = runtime.block_on(psfleet_tests::fleet::start(options));
    let sb = crate::cli::Sandbox::new(test);
    let cache = kdc.dir.join("krb5cc_run");
    kdc.kinit(&cache);
    let issued = |kdc: &Kdc| {
        kdc.logged("AS_REQ")
            .iter()
            .filter(|l| l.contains(": ISSUE:"))
            .count()
    };
    assert_eq!(issued(&kdc), 1);

    let rows: Vec<String> = fleet
        .hosts()
        .iter()
        .map(|h| {
            let method = if h.spec.class == "kerberos" {
                "kerberos"
            } else {
                "negotiate"
            };
            format!("{},{},{method}", h.spec.name, h.spec.address)
        })
        .collect();
    let with_reference = sb.write(
        "work/cache.csv",
        &format!(
            "name,address,authentication,password\n{}\n",
            rows.iter()
                .map(|r| format!("{r},kerberos-cache"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    let without = sb.write(
        "work/plain.csv",
        &format!("name,address,authentication\n{}\n", rows.join("\n")),
    );
    let krb5_config = kdc.krb5_conf.to_str().unwrap().to_owned();
    let ccname = format!("FILE:{}", cache.display());
    let run = |inventory: &std::path::Path, env: &[(&str, &str)]| {
        let inventory = inventory.to_str().unwrap();
        let mut all = vec![("KRB5_CONFIG", krb5_config.as_str())];
        all.extend_from_slice(env);
        sb.run(
            &[
                "run",
                "-i",
                inventory,
                "-c",
                "'hello from ' + $env:COMPUTERNAME",
                "-o",
                "json",
                "--no-progress",
                "--timeout",
                "20s",
            ],
            &all,
        )
    };
    let succeeded = |out: &std::process::Output| {
        let stderr = crate::cli::text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let records: Vec<serde_json::Value> = crate::cli::json_lines(&out.stdout);
        assert_eq!(records.len(), 2, "{stderr}");
        for record in &records {
            assert_eq!(record["status"], "succeeded", "{record}");
            assert!(record.to_string().contains("hello from"), "{record}");
        }
    };

    // 1. The inventory's reference, with no user and no password anywhere.
    succeeded(&run(&with_reference, &[("KRB5CCNAME", ccname.as_str())]));
    // 2. No reference, a user and no password: the cache holds that user's TGT, so it is
    //    used instead of a prompt (what Invoke-Command does with the logon's tickets).
    succeeded(&run(
        &without,
        &[
            ("KRB5CCNAME", ccname.as_str()),
            ("PSFLEET_USER", "FLEET\\fleetadmin"),
        ],
    ));
    // Four logons, one TGS-REQ each, and still only kinit's AS exchange.
    assert_eq!(issued(&kdc), 1);
    let tgs = kdc.logged("TGS_REQ");
    assert_eq!(
        tgs.iter().filter(|l| l.contains(": ISSUE:")).count(),
        4,
        "{tgs:#?}"
    );

    // At -vvv (every crate at trace) no Kerberos key reaches standard error or output:
    // not the TGT's session key in any spelling, nor any key structure.
    let key = {
        let cache = TicketCache::read(&cache).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        cache.tgt(now).unwrap().session_key().as_ref().clone()
    };
    let spellings = [
        key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        key.iter().map(|b| format!("{b:02X}")).collect::<String>(),
        format!("{:?}", &key[..6]).trim_end_matches(']').to_owned(),
        BASE64.encode(&key),
    ];
    let mut verbose = vec!["-vvv"];
    verbose.extend([
        "run",
        "-i",
        with_reference.to_str().unwrap(),
        "-c",
        "hostname",
        "--timeout",
        "20s",
    ]);
    let out = sb.run(
        &verbose,
        &[
            ("KRB5_CONFIG", krb5_config.as_str()),
            ("KRB5CCNAME", ccname.as_str()),
        ],
    );
    let all = format!(
        "{}{}",
        crate::cli::text(&out.stdout),
        crate::cli::text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.len() > 10_000,
        "-vvv logged little: {} bytes",
        all.len()
    );
    // sspi's trace spans print whole Kerberos structures, keys included
    // (`key_value: ...OctetString(0x...)`): the logger leaves them out.
    assert!(
        !all.contains("key_value"),
        "a Kerberos key structure was logged"
    );
    for spelling in &spellings {
        assert!(
            !all.contains(spelling.as_str()),
            "the TGT session key appears as {spelling}"
        );
    }

    // 3. A cache for another user is not taken for this one: with no terminal, the run
    //    says a password is needed.
    let out = run(
        &without,
        &[
            ("KRB5CCNAME", ccname.as_str()),
            ("PSFLEET_USER", "FLEET\\someoneelse"),
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        crate::cli::text(&out.stderr).contains("a password is needed"),
        "{}",
        crate::cli::text(&out.stderr)
    );
    // 4. A missing cache stops the run before any host, saying to run kinit.
    let missing = format!("FILE:{}", kdc.dir.join("no-such-cache").display());
    let out = run(&with_reference, &[("KRB5CCNAME", &missing)]);
    let stderr = crate::cli::text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("no-such-cache") && stderr.contains("kinit"),
        "{stderr}"
    );
    // 5. A cache type psfleet cannot read is named, with what to do.
    let out = run(&with_reference, &[("KRB5CCNAME", "KEYRING:persistent:0")]);
    let stderr = crate::cli::text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("KEYRING") && stderr.contains("FILE:"),
        "{stderr}"
    );
    runtime.block_on(fleet.shutdown()).unwrap();
}
