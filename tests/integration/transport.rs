//! The engine's WinRM HTTP transport against an independent NTLM implementation.
//!
//! `tests/python/ntlm_endpoint.py` is a WinRM-like endpoint built on pyspnego (NTLM and
//! SPNEGO acceptor, `wrap_winrm`/`unwrap_winrm`) with its own multipart framing; psfleet's
//! client authenticates to it and round-trips sealed bodies through it. The endpoint needs
//! the venv interpreter in `PSFLEET_PYTHON` (set by `scripts/test`): without it these tests
//! skip with a printed line, except under `CI=true`, where they fail.
//!
//! Over HTTPS the same endpoint (Python's ssl module) checks the client's channel
//! bindings with its own RFC 5929 computation. An in-test TLS server (rustls, rcgen
//! certificates) checks certificate verification check by check, Basic over HTTPS, and
//! the plaintext/TLS port mix-ups.
//!
//! The last tests check the client's sealer against sspi's own NTLM and Negotiate
//! acceptors in memory, through `psfleet_core::encryption` framing.

// Test support (endpoint start-up, in-memory acceptors): failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use psfleet_core::encryption::{self, FramingError, MessageSealer, Protocol, Sealed, Unsealed};
use psfleet_core::taxonomy::Bucket;
use psfleet_engine::auth::{AuthError, ClientContext, Credential, Mechanism};
use psfleet_engine::http::{
    AuthMethod, Connection, ConnectionConfig, Encryption, Phase, ProtocolViolation, TransportError,
};
use psfleet_engine::ops::{ClientOptions, HostClient};
use psfleet_engine::target::{self, Scheme, TrustedHosts};
use psfleet_engine::tls::{Thumbprint, TlsClient, TlsFailure, TlsOptions};
use sspi::{
    AuthIdentity, BufferType, CredentialUse, DataRepresentation, EncryptionFlags, Negotiate,
    NegotiateConfig, Ntlm, SecurityBuffer, SecurityBufferRef, SecurityStatus, ServerRequestFlags,
    Sspi, SspiEx, SspiImpl, Username,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const PASSWORD: &str = "Corr3ct-Horse!";

/// The accounts the endpoint knows, in pyspnego's `NTLM_USER_FILE` format
/// (`DOMAIN:USER:PASSWORD`; an empty domain for a UPN or a bare user name).
const USERS: &str =
    "CORP:alice:Corr3ct-Horse!\n:bob@corp.example:Corr3ct-Horse!\n:carol:Corr3ct-Horse!\n";

#[tokio::test]
async fn handshake_and_sealed_round_trips_through_pyspnego() {
    // The endpoint answers 400 to any request without exactly these headers.
    let user_agent = format!("User-Agent:psfleet/{}", env!("CARGO_PKG_VERSION"));
    let Some(endpoint) = Endpoint::start(
        "handshake_and_sealed_round_trips_through_pyspnego",
        &[
            "--expect-header",
            &user_agent,
            "--expect-header",
            "Accept-Encoding:identity",
            "--expect-header",
            "Connection:Keep-Alive",
        ],
    ) else {
        return;
    };
    let bodies = soap_bodies();
    for (mechanism, user) in [
        (Mechanism::Negotiate, "CORP\\alice"),
        (Mechanism::Ntlm, "CORP\\alice"),
        (Mechanism::Negotiate, "bob@corp.example"),
        (Mechanism::Ntlm, "carol"),
    ] {
        let mut conn = Connection::connect(&endpoint.config(mechanism, user, PASSWORD))
            .await
            .unwrap_or_else(|e| panic!("{mechanism} {user}: {e:?}"));
        assert_eq!(conn.mechanism(), Some(mechanism));
        assert!(conn.seals());
        // The first leg drew the 401 challenge, whose only scheme was Negotiate.
        assert_eq!(conn.offered_schemes(), ["Negotiate"]);
        // Every body on one connection: the sequence numbers advance in step with
        // pyspnego's on both sides, and the endpoint's context lives on this TCP
        // connection only, so success also proves keep-alive.
        for body in &bodies {
            let reply = conn
                .send(body)
                .await
                .unwrap_or_else(|e| panic!("{mechanism} {user}, {} bytes: {e:?}", body.len()));
            assert_eq!(reply.status, 200);
            assert!(!reply.is_fault());
            assert_eq!(reply.body, echo(body), "{mechanism} {user}");
        }
        // A 500 carries a sealed fault, returned (not an error) with its status.
        let fault = b"<fault><s:Fault/></fault>";
        let reply = conn.send(fault).await.unwrap();
        assert_eq!(reply.status, 500);
        assert!(reply.is_fault());
        assert_eq!(reply.body, echo(fault));
        // ...and the connection goes on.
        let reply = conn.send(&bodies[0]).await.unwrap();
        assert_eq!((reply.status, reply.body), (200, echo(&bodies[0])));
        assert!(conn.is_usable());
    }
}

#[tokio::test]
async fn wrong_password_or_unknown_user_is_credentials_rejected() {
    let Some(endpoint) = Endpoint::start(
        "wrong_password_or_unknown_user_is_credentials_rejected",
        &[],
    ) else {
        return;
    };
    for mechanism in [Mechanism::Negotiate, Mechanism::Ntlm] {
        for (user, password) in [
            ("CORP\\alice", "wrong password"),
            ("bob@corp.example", "Corr3ct-Horse"),
            ("CORP\\mallory", PASSWORD),
            ("OTHER\\alice", PASSWORD),
            ("dave@corp.example", PASSWORD),
        ] {
            let error = Connection::connect(&endpoint.config(mechanism, user, password))
                .await
                .expect_err(&format!("{mechanism} {user} accepted"));
            match error {
                TransportError::CredentialsRejected {
                    user: u,
                    offered,
                    channel_bound,
                } => {
                    assert_eq!(u, user);
                    assert_eq!(offered, ["Negotiate"]);
                    assert!(!channel_bound);
                }
                other => panic!("{mechanism} {user}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    // Bind, note the port, close: nothing listens there any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let credential = Credential::new("CORP\\alice", PASSWORD).unwrap();
    let config = ConnectionConfig::new("127.0.0.1", port, Mechanism::Negotiate, credential);
    match Connection::connect(&config).await {
        Err(TransportError::ConnectionRefused { addr }) => {
            assert_eq!(addr, format!("127.0.0.1:{port}").parse().unwrap());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn scheme_not_offered_is_mechanism_not_offered() {
    let Some(endpoint) = Endpoint::start(
        "scheme_not_offered_is_mechanism_not_offered",
        &["--offer", "Basic realm=\"WSMAN\"", "--offer", "CredSSP"],
    ) else {
        return;
    };
    match Connection::connect(&endpoint.config(Mechanism::Negotiate, "CORP\\alice", PASSWORD)).await
    {
        Err(TransportError::MechanismNotOffered { scheme, offered }) => {
            assert_eq!(scheme, "Negotiate");
            assert_eq!(offered, ["Basic", "CredSSP"]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_misbehaviour_is_typed() {
    let Some(endpoint) = Endpoint::start("server_misbehaviour_is_typed", &[]) else {
        return;
    };
    let mut config = endpoint.config(Mechanism::Negotiate, "CORP\\alice", PASSWORD);

    // A 200 with a plaintext body on an encrypted connection.
    let mut conn = Connection::connect(&config).await.unwrap();
    match conn.send(b"<plain/>").await {
        Err(TransportError::Protocol {
            phase: Phase::Message,
            violation:
                ProtocolViolation::UnencryptedBody {
                    status: 200,
                    content_type: Some(content_type),
                    len,
                },
        }) => {
            assert_eq!(content_type, "application/soap+xml;charset=UTF-8");
            assert_eq!(len, echo(b"<plain/>").len());
        }
        other => panic!("{other:?}"),
    }
    // Any error leaves the connection unusable.
    assert!(!conn.is_usable());
    assert!(matches!(
        conn.send(b"<x/>").await,
        Err(TransportError::Unusable)
    ));

    // The server refuses the message before decrypting it: 500 with an empty body.
    let mut conn = Connection::connect(&config).await.unwrap();
    match conn.send(b"<refuse/>").await {
        Err(TransportError::HttpStatus {
            status: 500,
            phase: Phase::Message,
            offered,
            body_len: 0,
        }) => assert!(offered.is_empty()),
        other => panic!("{other:?}"),
    }

    // A 401 on the authenticated connection keeps the offered schemes.
    let mut conn = Connection::connect(&config).await.unwrap();
    match conn.send(b"<unauthorized/>").await {
        Err(TransportError::HttpStatus {
            status: 401,
            phase: Phase::Message,
            offered,
            ..
        }) => assert_eq!(offered, ["Negotiate"]),
        other => panic!("{other:?}"),
    }

    // The server closes the connection without answering.
    let mut conn = Connection::connect(&config).await.unwrap();
    match conn.send(b"<close/>").await {
        Err(TransportError::ConnectionClosed {
            phase: Phase::Message,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }

    // The server answers after the request timeout.
    config.request_timeout = Duration::from_millis(300);
    let mut conn = Connection::connect(&config).await.unwrap();
    match conn.send(b"<sleep/>").await {
        Err(TransportError::RequestTimeout {
            phase: Phase::Message,
            timeout,
        }) => assert_eq!(timeout, Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }

    // A wrong path: 404 on the first leg, with its evidence.
    config.request_timeout = Duration::from_secs(20);
    config.path = "/powershell".to_owned();
    match Connection::connect(&config).await {
        Err(TransportError::HttpStatus {
            status: 404,
            phase: Phase::Negotiate,
            offered,
            body_len: 0,
        }) => assert!(offered.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn our_sealer_agrees_with_sspi_ntlm_acceptor() {
    for user in ["CORP\\alice", "bob@corp.example", "carol"] {
        let client_cred = Credential::new(user, PASSWORD).unwrap();
        let mut client = ClientContext::new(Mechanism::Ntlm, &client_cred, "web01").unwrap();
        let mut server = NtlmAcceptor::new(&[user]);
        handshake(&mut client, |token| server.accept(token)).unwrap();
        assert!(client.is_complete());
        check_sealing(&mut client, &mut server.sealer());
    }
}

#[test]
fn our_sealer_agrees_with_sspi_negotiate_acceptor() {
    for user in ["CORP\\alice", "bob@corp.example", "carol"] {
        let client_cred = Credential::new(user, PASSWORD).unwrap();
        let mut client = ClientContext::new(Mechanism::Negotiate, &client_cred, "web01").unwrap();
        let mut server = NegotiateAcceptor::new(&[user]);
        handshake(&mut client, |token| server.accept(token)).unwrap();
        assert!(client.is_complete());
        check_sealing(&mut client, &mut server.sealer());
    }
}

#[test]
fn sspi_ntlm_acceptor_refuses_wrong_names_and_passwords() {
    // The raw Ntlm acceptor does not check the user name itself (dependencies.md): the
    // acceptor here looks the wire name up first, so a known password under another
    // name is refused, as is a wrong password.
    for (user, password) in [
        ("CORP\\mallory", PASSWORD),
        ("OTHER\\alice", PASSWORD),
        ("CORP\\alice", "wrong"),
    ] {
        let client_cred = Credential::new(user, password).unwrap();
        let mut client = ClientContext::new(Mechanism::Ntlm, &client_cred, "web01").unwrap();
        let mut server = NtlmAcceptor::new(&["CORP\\alice"]);
        let result = handshake(&mut client, |token| server.accept(token));
        assert!(result.is_err(), "{user} with {password:?} accepted");
    }
}

#[test]
fn mutated_challenges_are_errors_never_panics() {
    // The CHALLENGE comes from the network: sspi's client must refuse a damaged one with
    // an error (or, when the damage is in fields it does not check, answer it), never
    // panic. 3,000 deterministic mutations of a real challenge per mechanism.
    let credential = Credential::new("CORP\\alice", PASSWORD).unwrap();
    for mechanism in [Mechanism::Ntlm, Mechanism::Negotiate] {
        let mut client = ClientContext::new(mechanism, &credential, "web01").unwrap();
        let negotiate = client.step(None).unwrap().token.unwrap();
        let challenge = match mechanism {
            Mechanism::Ntlm => NtlmAcceptor::new(&["CORP\\alice"]).accept(&negotiate),
            _ => NegotiateAcceptor::new(&["CORP\\alice"]).accept(&negotiate),
        }
        .unwrap();
        let (mut refused, mut rng) = (0, 7u32);
        let mut next = || {
            rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (rng >> 8) as usize
        };
        for i in 0..3000 {
            let mut token = challenge.clone();
            for _ in 0..1 + i % 4 {
                let at = next() % token.len();
                token[at] = next() as u8;
            }
            if i % 7 == 0 {
                token.truncate(next() % token.len());
            }
            let mut client = ClientContext::new(mechanism, &credential, "web01").unwrap();
            client.step(None).unwrap();
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                client.step(Some(&token))
            }));
            match step {
                Err(_) => panic!("{mechanism}: sspi panicked on mutation {i}: {token:02x?}"),
                Ok(Err(AuthError::Sspi { .. })) => refused += 1,
                Ok(Err(other)) => panic!("{mechanism}: unexpected error {other:?}"),
                Ok(Ok(_)) => {}
            }
        }
        // Most mutations are caught (truncations always are).
        assert!(
            refused > 1500,
            "{mechanism}: only {refused} of 3000 refused"
        );
    }
}

#[tokio::test]
async fn pre_send_refusals_never_reach_the_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let credential = Credential::new("CORP\\alice", PASSWORD).unwrap();

    // An IP-address target over HTTP with NTLM and no trusted hosts (wire-facts 1.6).
    let negotiate = Arc::new(ClientOptions::new(Mechanism::Negotiate, credential.clone()));
    let ip = target::Endpoint::new("127.0.0.1", Scheme::Http)
        .unwrap()
        .with_port(port);
    let error = HostClient::new(ip.clone(), Arc::clone(&negotiate)).unwrap_err();
    assert_eq!(error.bucket(), Some(Bucket::InvalidHostIpAddress));
    // Basic over plain HTTP while this client does not allow unencrypted traffic.
    let basic = Arc::new(ClientOptions::new(AuthMethod::Basic, credential.clone()));
    let name = target::Endpoint::new("localhost", Scheme::Http)
        .unwrap()
        .with_port(port);
    let error = HostClient::new(name, basic).unwrap_err();
    assert_eq!(error.bucket(), Some(Bucket::ClientAuthenticationDisabled));
    // A host name with invalid characters, at the transport layer too.
    for bad in ["local_host", "web 01", "h\u{e9}te"] {
        let config = ConnectionConfig::new(bad, port, Mechanism::Negotiate, credential.clone());
        let error = Connection::connect(&config).await.unwrap_err();
        assert!(
            matches!(error, TransportError::InvalidTarget { .. }),
            "{bad}: {error:?}"
        );
        assert_eq!(error.bucket(), Some(Bucket::HostContainsInvalidCharacters));
    }

    // Nothing connected: the first connection the listener accepts is this probe's.
    let probe = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (_, peer) = listener.accept().await.unwrap();
    assert_eq!(peer, probe.local_addr().unwrap());

    // A trusted-hosts pattern lets the same IP target through (to the listener).
    let mut trusted = ClientOptions::new(Mechanism::Negotiate, credential);
    trusted.policy.trusted_hosts = TrustedHosts::parse("127.0.0.*");
    trusted.request_timeout = Duration::from_millis(500);
    let mut client = HostClient::new(ip, Arc::new(trusted)).unwrap();
    let connect = tokio::spawn(async move { client.connect().await });
    let (_held_open, peer) = listener.accept().await.unwrap();
    assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    // The listener never answers: the first leg times out.
    let error = connect.await.unwrap().unwrap_err();
    assert_eq!(error.bucket(), Some(Bucket::Timeout), "{error:?}");
}

#[tokio::test]
async fn plaintext_messages_over_http_are_refused_as_encryption_required() {
    let Some(endpoint) = Endpoint::start(
        "plaintext_messages_over_http_are_refused_as_encryption_required",
        &[],
    ) else {
        return;
    };
    let mut config = endpoint.config(Mechanism::Negotiate, "CORP\\alice", PASSWORD);
    config.encryption = Encryption::Never;
    assert!(config.plaintext_over_http());
    // Authentication succeeds; the first plaintext message is refused (wire-facts 1.3).
    let mut conn = Connection::connect(&config).await.unwrap();
    assert!(!conn.seals());
    let error = conn.send(&soap_bodies()[0]).await.unwrap_err();
    assert!(
        matches!(error, TransportError::PlaintextRefused { status: 500 }),
        "{error:?}"
    );
    assert_eq!(error.bucket(), Some(Bucket::EncryptionRequired));
}

#[tokio::test]
async fn ntlm_and_negotiate_over_https_with_channel_binding() {
    let test = "ntlm_and_negotiate_over_https_with_channel_binding";
    let pki = TestPki::new();
    let dir = TempDir::new(test);
    // P-256/SHA-256 and P-384/SHA-384 certificates: the endpoint computes the binding
    // hash from the signature algorithm with `cryptography` (RFC 5929 4.1), so the
    // second proves the client picks SHA-384 the same way.
    for (alg, hash_len) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, 32),
        (&rcgen::PKCS_ECDSA_P384_SHA384, 48),
    ] {
        // The issuer's key decides the certificate's signature algorithm.
        let issuer = TestPki::with_key(alg);
        let (cert, key) = issuer.leaf(&["127.0.0.1"], false, alg);
        let (cert_file, key_file) = dir.write_pair(&cert, &key);
        let Some(endpoint) = Endpoint::start(
            test,
            &["--tls-cert", &cert_file, "--tls-key", &key_file, "--cbt"],
        ) else {
            return;
        };
        for mechanism in [Mechanism::Negotiate, Mechanism::Ntlm] {
            for encryption in [Encryption::Auto, Encryption::Always] {
                let mut config = endpoint.config(mechanism, "CORP\\alice", PASSWORD);
                config.scheme = Scheme::Https;
                config.encryption = encryption;
                config.tls = Some(issuer.client(TlsOptions::default()));
                let mut conn = Connection::connect(&config)
                    .await
                    .unwrap_or_else(|e| panic!("{mechanism} {encryption:?}: {e:?}"));
                let session = conn.tls_session().unwrap();
                assert_eq!(&session.channel_bindings[..21], b"tls-server-end-point:");
                assert_eq!(session.channel_bindings.len(), 21 + hash_len);
                // Auto: TLS protects the messages, no sealing (pypsrp's default).
                assert_eq!(conn.seals(), encryption == Encryption::Always);
                for body in &soap_bodies()[..2] {
                    let reply = conn.send(body).await.unwrap();
                    assert_eq!((reply.status, &reply.body), (200, &echo(body)));
                }
                let fault = conn.send(b"<fault/>").await.unwrap();
                assert_eq!((fault.status, fault.body), (500, echo(b"<fault/>")));
            }
        }
    }

    // A server that binds the exchange to another channel: the bound client is refused,
    // and the error says the exchange carried channel bindings (wire-facts 1.4).
    let (cert, key) = pki.leaf(&["127.0.0.1"], false, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (cert_file, key_file) = dir.write_pair(&cert, &key);
    let Some(endpoint) = Endpoint::start(
        test,
        &[
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
            "--wrong-cbt",
        ],
    ) else {
        return;
    };
    for mechanism in [Mechanism::Negotiate, Mechanism::Ntlm] {
        let mut config = endpoint.config(mechanism, "CORP\\alice", PASSWORD);
        config.scheme = Scheme::Https;
        config.tls = Some(pki.client(TlsOptions::default()));
        match Connection::connect(&config).await {
            Err(
                error @ TransportError::CredentialsRejected {
                    channel_bound: true,
                    ..
                },
            ) => {
                assert_eq!(error.bucket(), Some(Bucket::InvalidCredentials));
            }
            other => panic!("{mechanism}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn certificate_checks_name_the_check_that_failed() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
    let valid = pki.leaf(&[HTTPS_NAME], false, p256);
    let wrong_name = pki.leaf(&["other.fleet.test"], false, p256);
    let expired = pki.leaf(&[HTTPS_NAME], true, p256);
    let unknown_ca = other.leaf(&[HTTPS_NAME], false, p256);
    let self_signed = TestPki::self_signed(&[HTTPS_NAME]);
    let self_signed_pin = Thumbprint::sha1(&pem_der(&self_signed.0));
    let self_signed_pin256 = Thumbprint::sha256(&pem_der(&self_signed.0));
    let wrong_name_pin = Thumbprint::sha1(&pem_der(&wrong_name.0));

    let trusted = TlsOptions {
        system_roots: false,
        ca_pem: Some(pki.ca_pem.clone()),
        ..TlsOptions::default()
    };
    let with = |f: &dyn Fn(&mut TlsOptions)| {
        let mut options = trusted.clone();
        f(&mut options);
        options
    };
    let untrusted = with(&|o| o.ca_pem = None);
    let skip_ca = with(&|o| o.skip_ca_check = true);
    let skip_cn = with(&|o| o.skip_cn_check = true);
    let skip_both = with(&|o| {
        o.skip_ca_check = true;
        o.skip_cn_check = true;
    });
    let pin = |t: Thumbprint| with(&|o| o.thumbprint = Some(t));

    let name_mismatch = TlsFailure::NameMismatch {
        name: HTTPS_NAME.to_owned(),
    };
    type Case<'a> = (
        &'a str,
        &'a (String, String),
        TlsOptions,
        Option<TlsFailure>,
    );
    let cases: Vec<Case<'_>> = vec![
        ("valid", &valid, trusted.clone(), None),
        (
            "valid, CA not trusted",
            &valid,
            untrusted,
            Some(TlsFailure::UnknownIssuer),
        ),
        (
            "self-signed",
            &self_signed,
            trusted.clone(),
            Some(TlsFailure::UnknownIssuer),
        ),
        ("self-signed, skip CA", &self_signed, skip_ca.clone(), None),
        (
            "unknown CA",
            &unknown_ca,
            trusted.clone(),
            Some(TlsFailure::UnknownIssuer),
        ),
        (
            "unknown CA, skip CN",
            &unknown_ca,
            skip_cn.clone(),
            Some(TlsFailure::UnknownIssuer),
        ),
        (
            "wrong name",
            &wrong_name,
            trusted.clone(),
            Some(name_mismatch.clone()),
        ),
        (
            "wrong name, skip CA",
            &wrong_name,
            skip_ca.clone(),
            Some(name_mismatch.clone()),
        ),
        ("wrong name, skip CN", &wrong_name, skip_cn.clone(), None),
        (
            "expired",
            &expired,
            trusted.clone(),
            Some(TlsFailure::Expired),
        ),
        // The skips never forgive an expired certificate (SkipCACheck/SkipCNCheck do not
        // set the date flag either).
        (
            "expired, skip both",
            &expired,
            skip_both.clone(),
            Some(TlsFailure::Expired),
        ),
        (
            "self-signed, SHA-1 pin",
            &self_signed,
            pin(self_signed_pin),
            None,
        ),
        (
            "self-signed, SHA-256 pin",
            &self_signed,
            pin(self_signed_pin256),
            None,
        ),
        (
            "valid, another pin",
            &valid,
            pin(self_signed_pin),
            Some(TlsFailure::ThumbprintMismatch {
                expected: self_signed_pin,
                actual: Thumbprint::sha1(&pem_der(&valid.0)),
            }),
        ),
        (
            "wrong name, its pin",
            &wrong_name,
            pin(wrong_name_pin),
            Some(name_mismatch),
        ),
    ];
    for (case, (cert, key), options, expected) in cases {
        let server = TestServer::start(Some((cert, key)), Reply401::basic()).await;
        let mut config = server.https_config();
        config.tls = Some(TlsClient::new(&options).unwrap());
        let result = match Connection::connect(&config).await {
            Ok(mut conn) => conn.send(b"<hello/>").await.map(|r| r.body),
            Err(e) => Err(e),
        };
        match (result, expected) {
            (Ok(body), None) => {
                assert_eq!(body, echo(b"<hello/>"), "{case}");
                assert_eq!(server.requests(), 1, "{case}");
            }
            (Err(TransportError::Tls { addr, failure }), Some(expected)) => {
                assert_eq!(failure, expected, "{case}");
                assert_eq!(addr, server.addr, "{case}");
                let error = TransportError::Tls { addr, failure };
                assert_eq!(error.bucket(), Some(Bucket::InvalidCertificate), "{case}");
                // The handshake failed: not one HTTP request reached the server.
                assert_eq!(server.requests(), 0, "{case}");
            }
            (other, expected) => panic!("{case}: {other:?}, expected {expected:?}"),
        }
    }
}

#[tokio::test]
async fn basic_over_https_sends_credentials_and_reports_refusals() {
    let pki = TestPki::new();
    let cert = pki.leaf(&[HTTPS_NAME], false, &rcgen::PKCS_ECDSA_P256_SHA256);
    let server = TestServer::start(Some((&cert.0, &cert.1)), Reply401::basic()).await;
    let mut config = server.https_config();
    config.tls = Some(pki.client(TlsOptions::default()));
    let mut conn = Connection::connect(&config).await.unwrap();
    assert_eq!(conn.mechanism(), None);
    assert!(!conn.seals());
    for body in soap_bodies() {
        let reply = conn.send(&body).await.unwrap();
        assert_eq!((reply.status, reply.body), (200, echo(&body)));
    }
    // One TCP connection carried them all (keep-alive).
    assert_eq!(server.connections(), 1);

    config.credential = Credential::new("CORP\\alice", "wrong").unwrap();
    let mut conn = Connection::connect(&config).await.unwrap();
    match conn.send(b"<x/>").await {
        Err(error @ TransportError::CredentialsRejected { .. }) => {
            assert_eq!(error.bucket(), Some(Bucket::InvalidCredentials));
            let TransportError::CredentialsRejected { offered, user, .. } = error else {
                unreachable!()
            };
            assert_eq!(
                (user.as_str(), offered),
                ("CORP\\alice", vec!["Basic".to_owned()])
            );
        }
        other => panic!("{other:?}"),
    }

    // A host with Basic disabled offers only Negotiate.
    let server = TestServer::start(Some((&cert.0, &cert.1)), Reply401::negotiate_only()).await;
    let mut config = server.https_config();
    config.tls = Some(pki.client(TlsOptions::default()));
    let mut conn = Connection::connect(&config).await.unwrap();
    match conn.send(b"<x/>").await {
        Err(error @ TransportError::MechanismNotOffered { .. }) => {
            assert_eq!(error.bucket(), Some(Bucket::AccessDenied));
        }
        other => panic!("{other:?}"),
    }
    // Basic cannot seal.
    let mut config = server.https_config();
    config.encryption = Encryption::Always;
    assert!(matches!(
        Connection::connect(&config).await,
        Err(TransportError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn tls_and_plain_http_port_mix_ups() {
    let pki = TestPki::new();
    let cert = pki.leaf(&[HTTPS_NAME], false, &rcgen::PKCS_ECDSA_P256_SHA256);

    // HTTPS to a plain HTTP listener: it answers the ClientHello with an HTTP 400.
    let plain = TestServer::start(None, Reply401::basic()).await;
    let mut config = plain.https_config();
    config.tls = Some(pki.client(TlsOptions::default()));
    match Connection::connect(&config).await {
        Err(
            error @ TransportError::Tls {
                failure: TlsFailure::PlaintextPeer,
                ..
            },
        ) => {
            assert_eq!(error.bucket(), Some(Bucket::InvalidPort));
        }
        other => panic!("{other:?}"),
    }

    // Plain HTTP to a TLS listener: the handshake fails on the server, which closes the
    // connection without a response (wire-facts 1.8).
    let tls = TestServer::start(Some((&cert.0, &cert.1)), Reply401::basic()).await;
    let mut config = tls.https_config();
    config.scheme = Scheme::Http;
    config.auth = AuthMethod::Sspi(Mechanism::Negotiate);
    match Connection::connect(&config).await {
        Err(
            error @ TransportError::ConnectionClosed {
                phase: Phase::Negotiate,
                scheme: Scheme::Http,
                ..
            },
        ) => assert_eq!(error.bucket(), Some(Bucket::InvalidProtocol)),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The pyspnego endpoint.

/// A running `ntlm_endpoint.py`, killed (and its credential file removed) on drop.
struct Endpoint {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Endpoint {
    /// Starts the endpoint with `args`, or returns `None` after printing why when no
    /// interpreter is configured.
    fn start(test: &str, args: &[&str]) -> Option<Self> {
        let python = python(test)?;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "psfleet-ntlm-endpoint-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("ntlm_users");
        std::fs::write(&users, USERS).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ntlm_endpoint.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .env("NTLM_USER_FILE", &users)
            // The endpoint exits when its stdin closes, so it dies with this process.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: starting the endpoint: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{test}: endpoint printed {line:?}, not a port"));
        Some(Self { child, port, dir })
    }

    fn config(&self, mechanism: Mechanism, user: &str, password: &str) -> ConnectionConfig {
        let credential = Credential::new(user, password).unwrap();
        let mut config = ConnectionConfig::new("127.0.0.1", self.port, mechanism, credential);
        config.connect_timeout = Duration::from_secs(5);
        config.request_timeout = Duration::from_secs(20);
        config
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The venv interpreter from `PSFLEET_PYTHON`, or `None` after printing a skip line.
///
/// # Panics
/// Under `CI=true` when it is unset: CI always has the venv, so a skip would hide a
/// broken set-up.
fn python(test: &str) -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("PSFLEET_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "{test}: PSFLEET_PYTHON is unset (scripts/test sets it); under CI=true this fails the run"
    );
    println!("{test}: skipped, PSFLEET_PYTHON is unset (run scripts/test to set up the venv)");
    None
}

/// SOAP-sized bodies: small, typical, every byte value, and 200 KB.
fn soap_bodies() -> Vec<Vec<u8>> {
    let envelope = |payload: &str| {
        format!(
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Header/>\
             <s:Body>{payload}</s:Body></s:Envelope>"
        )
        .into_bytes()
    };
    let mut big = String::with_capacity(200 * 1024);
    let mut n: u32 = 1;
    while big.len() < 200 * 1024 - 200 {
        // A cheap deterministic pseudo-random stream of base64-like text.
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        big.push(char::from(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                [(n >> 16) as usize % 64],
        ));
    }
    let large = envelope(&format!("<rsp:Stream Name=\"stdout\">{big}</rsp:Stream>"));
    assert!(large.len() >= 200 * 1024 - 100 && large.len() <= 200 * 1024 + 100);
    vec![
        envelope(""),
        envelope(
            "<wsmid:Identify xmlns:wsmid=\"http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd\"/>",
        ),
        (0..=255u8).cycle().take(4096).collect(),
        large,
        envelope("<after-the-large-one/>"),
    ]
}

fn echo(body: &[u8]) -> Vec<u8> {
    [b"<echo>".as_slice(), body, b"</echo>"].concat()
}

// ---------------------------------------------------------------------------------------
// sspi's own acceptors, in memory.

/// Drives `client` against an acceptor until both are done. `accept` returns the
/// server's reply token (maybe empty) or an error string.
fn handshake(
    client: &mut ClientContext,
    mut accept: impl FnMut(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<(), String> {
    let mut input: Option<Vec<u8>> = None;
    for _ in 0..4 {
        let step = client.step(input.as_deref()).map_err(|e| e.to_string())?;
        if step.complete && step.token.is_none() {
            return Ok(());
        }
        let token = step.token.ok_or("client stalled")?;
        let reply = accept(&token)?;
        if step.complete {
            return Ok(());
        }
        input = Some(reply);
    }
    Err("too many legs".into())
}

/// Seals with the client and unseals with the server through the core framing, and the
/// other way round, over several messages; then checks a flipped bit is refused.
fn check_sealing<S: MessageSealer>(client: &mut ClientContext, server: &mut S)
where
    S::Error: std::fmt::Debug,
{
    for (i, body) in soap_bodies().iter().enumerate() {
        let request = encryption::encrypt(client, Protocol::Spnego, body).unwrap();
        assert!(request.body.starts_with(b"--Encrypted Boundary\r\n"));
        // The NTLM signature is 16 bytes: the length field reads 10 00 00 00.
        let at = request
            .body
            .windows(5)
            .position(|w| w == b"ream\r")
            .unwrap();
        assert_eq!(
            &request.body[at + 5..at + 10],
            b"\n\x10\0\0\0",
            "message {i}"
        );
        let plain = encryption::decrypt(server, &request.content_type, &request.body).unwrap();
        assert_eq!(&plain, body, "message {i}");

        let reply = encryption::encrypt(server, Protocol::Spnego, &echo(body)).unwrap();
        let plain = encryption::decrypt(client, &reply.content_type, &reply.body).unwrap();
        assert_eq!(plain, echo(body), "reply {i}");
    }
    let mut reply = encryption::encrypt(server, Protocol::Spnego, b"<tampered/>").unwrap();
    let end = reply.body.len() - b"--Encrypted Boundary--\r\n".len();
    reply.body[end - 1] ^= 1;
    assert!(matches!(
        encryption::decrypt(client, &reply.content_type, &reply.body),
        Err(FramingError::Unseal {
            part: 0,
            source: AuthError::Sspi { .. }
        })
    ));
}

/// sspi's raw NTLM acceptor with the user lookup it lacks (dependencies.md): after the
/// AUTHENTICATE message, the wire user name is looked up among the known accounts and
/// only that account's password is given to `complete_auth_token`.
struct NtlmAcceptor {
    ntlm: Ntlm,
    handle: Option<sspi::AuthIdentityBuffers>,
    accounts: Vec<AuthIdentity>,
}

impl NtlmAcceptor {
    fn new(users: &[&str]) -> Self {
        let mut ntlm = Ntlm::new();
        let handle = ntlm
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Inbound)
            .execute(&mut ntlm)
            .unwrap()
            .credentials_handle;
        Self {
            ntlm,
            handle,
            accounts: users.iter().map(|u| identity(u)).collect(),
        }
    }

    fn accept(&mut self, token: &[u8]) -> Result<Vec<u8>, String> {
        let mut input = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let builder = self
            .ntlm
            .accept_security_context()
            .with_credentials_handle(&mut self.handle)
            .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(&mut input)
            .with_output(&mut output);
        let status = self
            .ntlm
            .accept_security_context_impl(builder)
            .and_then(|mut g| g.resolve_to_result())
            .map_err(|e| e.to_string())?
            .status;
        if status == SecurityStatus::CompleteNeeded {
            let wire = self.ntlm.query_context_names().map_err(|e| e.to_string())?;
            let account = self
                .accounts
                .iter()
                .find(|a| a.username.eq_ignore_ascii_case(&wire.username))
                .cloned()
                .ok_or_else(|| format!("unknown user {}", wire.username.inner()))?;
            self.ntlm
                .custom_set_auth_identities(vec![account])
                .map_err(|e| e.to_string())?;
            self.ntlm
                .complete_auth_token(&mut output)
                .map_err(|e| e.to_string())?;
        }
        Ok(output.remove(0).buffer)
    }

    fn sealer(&mut self) -> SspiSealer<'_, Ntlm> {
        SspiSealer(&mut self.ntlm)
    }
}

/// sspi's Negotiate acceptor (it looks the user up itself).
struct NegotiateAcceptor {
    negotiate: Negotiate,
    handle: Option<sspi::CredentialsBuffers>,
}

impl NegotiateAcceptor {
    fn new(users: &[&str]) -> Self {
        let config = NegotiateConfig::new(
            Box::new(sspi::ntlm::NtlmConfig::default()),
            Some("ntlm".to_owned()),
            String::new(),
        );
        let mut negotiate =
            Negotiate::new_server(config, users.iter().map(|u| identity(u)).collect()).unwrap();
        let handle = negotiate
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Inbound)
            .execute(&mut negotiate)
            .unwrap()
            .credentials_handle;
        Self { negotiate, handle }
    }

    fn accept(&mut self, token: &[u8]) -> Result<Vec<u8>, String> {
        let mut input = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let builder = self
            .negotiate
            .accept_security_context()
            .with_credentials_handle(&mut self.handle)
            .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(&mut input)
            .with_output(&mut output);
        let status = self
            .negotiate
            .accept_security_context_impl(builder)
            .and_then(|mut g| g.resolve_to_result())
            .map_err(|e| e.to_string())?
            .status;
        if matches!(
            status,
            SecurityStatus::CompleteNeeded | SecurityStatus::CompleteAndContinue
        ) {
            self.negotiate
                .complete_auth_token(&mut output)
                .map_err(|e| e.to_string())?;
        }
        Ok(output.remove(0).buffer)
    }

    fn sealer(&mut self) -> SspiSealer<'_, Negotiate> {
        SspiSealer(&mut self.negotiate)
    }
}

fn identity(user: &str) -> AuthIdentity {
    AuthIdentity {
        username: Username::parse(user).unwrap(),
        password: PASSWORD.to_owned().into(),
    }
}

/// The server half of the sealing, written independently of `engine::auth`.
struct SspiSealer<'a, S>(&'a mut S);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SspiFailure(sspi::Error);

impl<S: Sspi> MessageSealer for SspiSealer<'_, S> {
    type Error = SspiFailure;

    fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, SspiFailure> {
        let mut signature = vec![0u8; 16];
        let mut data = plaintext.to_vec();
        let mut buffers = [
            SecurityBufferRef::token_buf(&mut signature),
            SecurityBufferRef::data_buf(&mut data),
        ];
        self.0
            .encrypt_message(EncryptionFlags::empty(), &mut buffers)
            .map_err(SspiFailure)?;
        Ok(Sealed {
            header: signature,
            payload: data,
            padding: 0,
        })
    }

    fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, SspiFailure> {
        let mut signature = header.to_vec();
        let mut data = payload.to_vec();
        let mut buffers = [
            SecurityBufferRef::token_buf(&mut signature),
            SecurityBufferRef::data_buf(&mut data),
        ];
        self.0.decrypt_message(&mut buffers).map_err(SspiFailure)?;
        Ok(Unsealed::new(buffers[1].data().to_vec()))
    }
}

// ---------------------------------------------------------------------------------------
// TLS test fixtures: certificates and a small HTTPS (or HTTP) server.

/// The name HTTPS test certificates are issued for; the client connects to 127.0.0.1 under
/// it (the address override skips DNS).
const HTTPS_NAME: &str = "srv1.fleet.test";

/// A test CA.
struct TestPki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl TestPki {
    fn new() -> Self {
        Self::with_key(&rcgen::PKCS_ECDSA_P256_SHA256)
    }

    /// A CA whose key (and so the signature of every certificate it issues) is `alg`.
    fn with_key(alg: &'static rcgen::SignatureAlgorithm) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("psfleet test CA {}", NEXT.fetch_add(1, Ordering::Relaxed)),
        );
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            ca_pem,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) and its key, as PEM.
    fn leaf(
        &self,
        names: &[&str],
        expired: bool,
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = leaf_params(names, expired);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf_params(names, false).self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client trusting only this CA, with `options` otherwise.
    fn client(&self, options: TlsOptions) -> TlsClient {
        TlsClient::new(&TlsOptions {
            system_roots: false,
            ca_pem: Some(self.ca_pem.clone()),
            ..options
        })
        .unwrap()
    }
}

fn leaf_params(names: &[&str], expired: bool) -> rcgen::CertificateParams {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    params
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "psfleet-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write_pair(&self, cert: &str, key: &str) -> (String, String) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let cert_file = self.0.join(format!("cert{n}.pem"));
        let key_file = self.0.join(format!("key{n}.pem"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        (
            cert_file.display().to_string(),
            key_file.display().to_string(),
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the test server offers in its 401s.
#[derive(Clone)]
struct Reply401(Vec<&'static str>);

impl Reply401 {
    fn basic() -> Self {
        Self(vec!["Basic realm=\"WSMAN\""])
    }

    fn negotiate_only() -> Self {
        Self(vec!["Negotiate"])
    }
}

/// A small HTTP/1.1 server on 127.0.0.1, over TLS when given a certificate: Basic
/// `CORP\alice` with [`PASSWORD`] gets an `<echo>` of each body; anything else a 401
/// with the configured challenges. Bytes that are not an HTTP request (a TLS ClientHello
/// on the plain server) get `400 Bad Request` and a close, as http.sys does.
struct TestServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(cert: Option<(&String, &String)>, offer: Reply401) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = cert.map(|(cert, key)| {
            use rustls::pki_types::pem::PemObject;
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (req, conns) = (Arc::clone(&requests), Arc::clone(&connections));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::Relaxed);
                let (acceptor, offer, req) = (acceptor.clone(), offer.clone(), Arc::clone(&req));
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            // Not a TLS handshake record: close without a word, as the
                            // simulator's HTTPS listener does (wire-facts 1.8).
                            let mut first = [0u8; 1];
                            if tcp.peek(&mut first).await.is_err() || first[0] != 0x16 {
                                return;
                            }
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve_http(tls, &offer, &req).await;
                            }
                        }
                        None => serve_http(tcp, &offer, &req).await,
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            connections,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Basic over HTTPS to [`HTTPS_NAME`] at this server's address.
    fn https_config(&self) -> ConnectionConfig {
        let credential = Credential::new("CORP\\alice", PASSWORD).unwrap();
        let mut config =
            ConnectionConfig::new(HTTPS_NAME, self.addr.port(), AuthMethod::Basic, credential);
        config.scheme = Scheme::Https;
        config.address = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        config.connect_timeout = Duration::from_secs(5);
        config.request_timeout = Duration::from_secs(10);
        config
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers requests on one connection until it closes.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    offer: &Reply401,
    requests: &AtomicUsize,
) {
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("CORP\\alice:{PASSWORD}"))
    );
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            if !buffer.starts_with(b"POST ") && buffer.len() >= 5 || buffer.len() > 65536 {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        requests.fetch_add(1, Ordering::Relaxed);
        let authorized = header("authorization").is_some_and(|v| v == expected);
        let offers_basic = offer.0.iter().any(|o| o.starts_with("Basic"));
        let response = if authorized && offers_basic {
            let reply = echo(&body);
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nServer: Microsoft-HTTPAPI/2.0\r\nContent-Type: application/soap+xml;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
                reply.len()
            )
            .into_bytes();
            r.extend(reply);
            r
        } else {
            let mut r = b"HTTP/1.1 401 Unauthorized\r\nServer: Microsoft-HTTPAPI/2.0\r\n".to_vec();
            for challenge in &offer.0 {
                r.extend(format!("WWW-Authenticate: {challenge}\r\n").into_bytes());
            }
            r.extend(b"Content-Length: 0\r\n\r\n");
            r
        };
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}
