//! The engine's WinRM operations end to end against simulated hosts: a PowerShell script
//! with arguments and every stream, a cmd command, cancellation that leaves no shell open
//! (the simulator's counters), keep-alive reuse, Basic and Negotiate over HTTPS (channel
//! binding), and the typed errors a classifier reads: wrong password, scheme not offered,
//! wrong-name and self-signed certificates, plaintext refused, trusted hosts.
//!
//! Every host is a real listener on its own loopback address; the client connects by name
//! with the host's address given as the inventory address.

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use psfleet_core::psrp::client::ScriptSpec;
use psfleet_core::taxonomy::Bucket;
use psfleet_engine::auth::{Credential, Mechanism};
use psfleet_engine::error::ClientError;
use psfleet_engine::http::{AuthMethod, Encryption, TransportError};
use psfleet_engine::ops::{ClientOptions, HostClient, RunControl, ShellEvent, ShellNotRecorded};
use psfleet_engine::target::{ClientPolicy, Endpoint, Scheme, TrustedHosts};
use psfleet_engine::tls::{TlsClient, TlsFailure, TlsOptions};
use psfleet_sim::fleet::{FleetHandle, FleetOptions};
use psfleet_sim::profile::Profile;
use serde_json::json;

/// One class per behaviour under test, one host each.
const PROFILE: &str = r#"
[[class]]
name = "plain"
count = 1

[[class]]
name = "https"
count = 1
listeners = ["https"]
auth = ["negotiate", "basic"]

[[class]]
name = "https_negotiate_only"
count = 1
listeners = ["https"]
auth = ["negotiate"]

[[class]]
name = "https_wrong_name"
count = 1
listeners = ["https"]
certificate = "wrong-name"

[[class]]
name = "https_self_signed"
count = 1
listeners = ["https"]
certificate = "self-signed"

[[class]]
name = "cuts_replies"
count = 1
reset_probability = 1.0
"#;

/// The script of the streams test: one statement per stream, and the two arguments.
/// Verbose and debug records are only written when their preference says Continue (the
/// defaults are SilentlyContinue, as on Windows).
const STREAMS_SCRIPT: &str = "$VerbosePreference = 'Continue'
$DebugPreference = 'Continue'
Write-Output $args[0]
$args[1]
Write-Error 'bad thing'
Write-Warning 'careful'
Write-Verbose 'details'
Write-Debug 'debugging'
Write-Information 'for your information'
Write-Progress 'working'
hostname";

#[tokio::test]
async fn script_with_arguments_returns_objects_and_every_stream() {
    let fleet = fleet().await;
    let (name, address) = host(&fleet, "plain");
    let mut client = client(&fleet, "plain", Scheme::Http, negotiate(&fleet));
    let spec = ScriptSpec::new(STREAMS_SCRIPT)
        .with_argument("alpha")
        .with_argument(42);
    let result = client.run_script(spec, RunControl::none()).await.unwrap();

    let computer = &fleet.host_of_class("plain").unwrap().spec.os.computer_name;
    assert_eq!(result.output, [json!("alpha"), json!(42), json!(computer)]);
    assert_eq!(result.errors.len(), 1);
    assert_eq!(result.errors[0].message, "bad thing");
    assert_eq!(result.warnings, ["careful"]);
    assert_eq!(result.verbose, ["details"]);
    assert_eq!(result.debug, ["debugging"]);
    assert_eq!(result.information.len(), 1);
    assert_eq!(result.information[0].message, json!("for your information"));
    assert_eq!(result.progress.len(), 1);
    assert_eq!(result.progress[0].activity, "working");
    // Non-terminating errors leave the pipeline Completed (wire-facts 1.13).
    assert_eq!(result.pipeline_state, "Completed");
    assert_eq!(result.bucket(), None);
    assert!(result.error_record.is_none());
    assert_eq!(result.computer_name, name);
    assert!(result.ps_version.is_some());
    assert!(result.leaked_shell.is_none());
    assert!(result.durations.requests >= 4, "{:?}", result.durations);
    // The shell was created once and deleted: nothing stays open on the host.
    let counts = counts(&fleet, "plain");
    assert_eq!(
        (counts.0, counts.1, counts.2),
        (0, 1, 1),
        "open, created, deleted"
    );
    let _ = address;
}

#[tokio::test]
async fn a_terminating_error_is_a_failed_pipeline_with_its_record() {
    let fleet = fleet().await;
    let mut client = client(&fleet, "plain", Scheme::Http, negotiate(&fleet));
    let spec = ScriptSpec::new("Write-Output 'before'\nthrow 'boom'");
    let result = client.run_script(spec, RunControl::none()).await.unwrap();
    assert_eq!(result.output, [json!("before")]);
    assert_eq!(result.pipeline_state, "Failed");
    assert_eq!(result.bucket(), Some(Bucket::ScriptFailed));
    let record = result.error_record.unwrap();
    assert_eq!(record.message, "boom");
    assert_eq!(counts(&fleet, "plain").0, 0);
}

#[tokio::test]
async fn cmd_returns_stdout_stderr_and_exit_code() {
    let fleet = fleet().await;
    let mut client = client(&fleet, "plain", Scheme::Http, negotiate(&fleet));
    let result = client
        .run_cmd(
            "cmd.exe",
            &[
                "/c".to_owned(),
                "echo hello& nosuchcommand & exit /b 3".to_owned(),
            ],
            b"",
            RunControl::none(),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&result.stdout), "hello\r\n");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("nosuchcommand"), "{stderr}");
    assert_eq!(result.exit_code, 3);
    assert_eq!(result.bucket(), Some(Bucket::ScriptFailed));
    assert!(result.leaked_shell.is_none());
    assert_eq!(counts(&fleet, "plain").0, 0);
}

#[tokio::test]
async fn operations_share_one_kept_alive_connection() {
    let fleet = fleet().await;
    let mut client = client(&fleet, "plain", Scheme::Http, negotiate(&fleet));
    let identity = client.identify(true).await.unwrap();
    assert!(identity.security_profiles.is_some());
    assert_eq!(client.offered_schemes(), ["Negotiate"]);
    let config = client.get_config().await.unwrap();
    assert!(config.max_envelope_size_kb.is_some());
    assert!(client.enumerate_shells().await.unwrap().is_empty());
    let cmd = client
        .run_cmd("hostname", &[], b"", RunControl::none())
        .await
        .unwrap();
    assert_eq!(cmd.durations.connections, 0, "{:?}", cmd.durations);
    let script = client
        .run_script(ScriptSpec::new("'x'"), RunControl::none())
        .await
        .unwrap();
    assert_eq!(script.output, [json!("x")]);
    assert_eq!(script.durations.connections, 0);
    // One TCP connection (authenticated once) carried every operation.
    let network = fleet.host_of_class("plain").unwrap().stats.snapshot();
    assert_eq!(network.connections, 1, "{network:?}");

    // Unauthenticated Identify opens a connection of its own and sends no credentials.
    let anonymous = client.identify(false).await.unwrap();
    assert_eq!(anonymous.product_version, identity.product_version);
    let network = fleet.host_of_class("plain").unwrap().stats.snapshot();
    assert_eq!(network.connections, 2, "{network:?}");
}

#[tokio::test]
async fn cancelled_and_timed_out_runs_leave_no_open_shell() {
    let fleet = fleet().await;
    let mut client = client(&fleet, "plain", Scheme::Http, negotiate(&fleet));

    // Cancelled while the script sleeps: ctrl_c, then Delete on a fresh connection.
    let (cancel, cancelled) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let _ = cancel.send(true);
    });
    let spec = ScriptSpec::new("Start-Sleep 30\nWrite-Output 'late'");
    let error = client
        .run_script(spec.clone(), RunControl::none().with_watch(cancelled))
        .await
        .unwrap_err();
    assert!(matches!(error.error, ClientError::Cancelled), "{error:?}");
    assert_eq!(error.error.bucket(), Some(Bucket::Interrupted));
    assert_eq!(error.leaked_shell, None);
    assert!(error.durations.total < Duration::from_secs(10));
    let (open, created, deleted) = counts(&fleet, "plain");
    assert_eq!((open, created, deleted), (0, 1, 1));

    // The same for a deadline, on a cmd command that never ends by itself.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
    let error = client
        .run_script(spec, RunControl::none().with_deadline(deadline))
        .await
        .unwrap_err();
    assert!(
        matches!(error.error, ClientError::Timeout { .. }),
        "{error:?}"
    );
    assert_eq!(error.error.bucket(), Some(Bucket::Timeout));
    assert_eq!(error.leaked_shell, None);
    let (open, created, deleted) = counts(&fleet, "plain");
    assert_eq!((open, created, deleted), (0, 2, 2));

    // The client is still usable afterwards.
    let result = client
        .run_script(ScriptSpec::new("'after'"), RunControl::none())
        .await
        .unwrap();
    assert_eq!(result.output, [json!("after")]);
}

/// A Create whose reply is lost (the host made the shell, then the connection was cut)
/// leaves no shell: the PowerShell run names its ShellId itself, reports it before the
/// Create goes out (so a crash leaves an id for the reaper), and deletes it after the cut.
#[tokio::test]
async fn a_create_whose_reply_is_cut_is_deleted_by_the_id_reported_before_it() {
    let fleet = fleet().await;
    let mut client = client(&fleet, "cuts_replies", Scheme::Http, negotiate(&fleet));
    let service = Arc::clone(fleet.host_of_class("cuts_replies").unwrap().service());
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let hook = move |event: ShellEvent| {
        let seen = Arc::clone(&seen);
        // Shells the host had made when the hook ran.
        let made = service.counters().totals.shells_created;
        Box::pin(async move {
            seen.lock().unwrap().push((event, made));
            Ok(())
        })
            as std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), ShellNotRecorded>> + Send>,
            >
    };
    let error = client
        .run_script(
            ScriptSpec::new("'never seen'"),
            RunControl::none().with_shell_hook(Box::new(hook)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.error,
            ClientError::Transport(TransportError::ConnectionClosed { .. })
        ),
        "{error:?}"
    );
    let events = events.lock().unwrap().clone();
    let [(ShellEvent::Created { shell_id, .. }, 0)] = events.as_slice() else {
        panic!("one shell reported, before the host made it: {events:?}")
    };
    // The Delete's reply was cut too, so the client cannot vouch for it: the id stays
    // with the caller (journaled open, reaped by the next run).
    assert_eq!(error.leaked_shell, Some(*shell_id));
    // The host made the shell and deleted it: none is left.
    let (open, created, deleted) = counts(&fleet, "cuts_replies");
    assert_eq!((open, created, deleted), (0, 1, 1));
}

/// A shell the caller cannot record (its state store failed) is never created: the run
/// stops before sending the Create, and the host makes no shell.
#[tokio::test]
async fn a_shell_that_cannot_be_recorded_is_never_created() {
    let fleet = fleet().await;
    let mut client = client(&fleet, "plain", Scheme::Http, negotiate(&fleet));
    let (_, created_before, _) = counts(&fleet, "plain");
    let hook = |event: ShellEvent| {
        Box::pin(async move {
            match event {
                ShellEvent::Created { .. } => Err(ShellNotRecorded("disk I/O error".into())),
                ShellEvent::Deleted { .. } => Ok(()),
            }
        })
            as std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), ShellNotRecorded>> + Send>,
            >
    };
    let error = client
        .run_script(
            ScriptSpec::new("'never run'"),
            RunControl::none().with_shell_hook(Box::new(hook)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error.error, ClientError::NotRecorded { reason } if reason == "disk I/O error"),
        "{error:?}"
    );
    assert_eq!(error.error.bucket(), Some(Bucket::Interrupted));
    assert_eq!(error.leaked_shell, None);
    let (open, created, _) = counts(&fleet, "plain");
    assert_eq!((open, created), (0, created_before), "no Create was sent");
}

/// Over HTTPS with NTLM the first request of a new connection rides on the AUTHENTICATE
/// leg: the host sees one HTTP request more than the WS-Man messages (the NEGOTIATE leg),
/// not two; with SPNEGO the legs stay empty (its context completes only with the server's
/// last token).
#[tokio::test]
async fn over_https_ntlm_carries_the_first_request_on_the_authenticating_leg() {
    let fleet = fleet().await;
    let tls = TlsClient::new(&TlsOptions {
        system_roots: false,
        ca_pem: Some(fleet.ca_pem().to_owned()),
        ..TlsOptions::default()
    })
    .unwrap();
    let (user, password) = admin(&fleet);
    let host = fleet.host_of_class("https").unwrap();
    for (mechanism, extra_legs) in [(Mechanism::Ntlm, 1), (Mechanism::Negotiate, 2)] {
        let mut options = ClientOptions::new(mechanism, Credential::new(&user, &password).unwrap());
        options.tls = Some(tls.clone());
        let mut client = client(&fleet, "https", Scheme::Https, options);
        let before = host.stats.snapshot().requests;
        let result = client
            .run_script(ScriptSpec::new("'carried'"), RunControl::none())
            .await
            .unwrap();
        assert_eq!(result.output, [json!("carried")]);
        let http_requests = host.stats.snapshot().requests - before;
        assert_eq!(result.durations.connections, 1, "{mechanism:?}");
        assert_eq!(
            http_requests,
            u64::from(result.durations.requests) + extra_legs,
            "{mechanism:?}: {} WS-Man messages",
            result.durations.requests
        );
        println!(
            "https {mechanism:?}: {http_requests} HTTP requests for {} WS-Man messages",
            result.durations.requests
        );
    }
}

#[tokio::test]
async fn basic_and_negotiate_over_https() {
    let fleet = fleet().await;
    let tls = TlsOptions {
        system_roots: false,
        ca_pem: Some(fleet.ca_pem().to_owned()),
        ..TlsOptions::default()
    };
    let (user, password) = admin(&fleet);
    for (auth, encryption) in [
        (AuthMethod::Basic, Encryption::Auto),
        (AuthMethod::Sspi(Mechanism::Negotiate), Encryption::Auto),
        (AuthMethod::Sspi(Mechanism::Ntlm), Encryption::Auto),
        (AuthMethod::Sspi(Mechanism::Negotiate), Encryption::Always),
    ] {
        let mut options = ClientOptions::new(auth, Credential::new(&user, &password).unwrap());
        options.tls = Some(TlsClient::new(&tls).unwrap());
        options.encryption = encryption;
        let mut client = client(&fleet, "https", Scheme::Https, options);
        let result = client
            .run_script(
                ScriptSpec::new("Write-Output $args[0]").with_argument("over TLS"),
                RunControl::none(),
            )
            .await
            .unwrap_or_else(|e| panic!("{auth} {encryption:?}: {e:?}"));
        assert_eq!(result.output, [json!("over TLS")], "{auth}");
        let cmd = client
            .run_cmd("echo", &["tls".to_owned()], b"", RunControl::none())
            .await
            .unwrap();
        assert_eq!(cmd.stdout, b"tls\r\n");
    }
    assert_eq!(counts(&fleet, "https").0, 0);
}

#[tokio::test]
async fn failures_come_out_typed_with_their_bucket() {
    let fleet = fleet().await;
    let (user, _) = admin(&fleet);
    let ca = TlsOptions {
        system_roots: false,
        ca_pem: Some(fleet.ca_pem().to_owned()),
        ..TlsOptions::default()
    };

    // Wrong password: a complete NTLM exchange, then 401.
    let options = ClientOptions::new(
        Mechanism::Negotiate,
        Credential::new(&user, "not the password").unwrap(),
    );
    let error = client(&fleet, "plain", Scheme::Http, options)
        .identify(true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Transport(TransportError::CredentialsRejected { .. })
        ),
        "{error:?}"
    );
    assert_eq!(error.bucket(), Some(Bucket::InvalidCredentials));

    // Basic where the host offers only Negotiate.
    let (_, password) = admin(&fleet);
    let mut options = ClientOptions::new(
        AuthMethod::Basic,
        Credential::new(&user, &password).unwrap(),
    );
    options.tls = Some(TlsClient::new(&ca).unwrap());
    let mut basic = client(&fleet, "https_negotiate_only", Scheme::Https, options);
    let error = basic.identify(true).await.unwrap_err();
    match &error {
        ClientError::Transport(TransportError::MechanismNotOffered { scheme, offered }) => {
            assert_eq!(*scheme, "Basic");
            assert_eq!(offered, &["Negotiate"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(error.bucket(), Some(Bucket::AccessDenied));
    assert_eq!(basic.offered_schemes(), ["Negotiate"]);

    // Certificates: wrong name, self-signed.
    for (class, expected) in [
        ("https_wrong_name", "name"),
        ("https_self_signed", "issuer"),
    ] {
        let mut options = negotiate(&fleet);
        options.tls = Some(TlsClient::new(&ca).unwrap());
        let (name, _) = host(&fleet, class);
        let error = client(&fleet, class, Scheme::Https, options)
            .identify(true)
            .await
            .unwrap_err();
        match (&error, expected) {
            (
                ClientError::Transport(TransportError::Tls {
                    failure: TlsFailure::NameMismatch { name: n },
                    ..
                }),
                "name",
            ) => assert_eq!(n, &name),
            (
                ClientError::Transport(TransportError::Tls {
                    failure: TlsFailure::UnknownIssuer,
                    ..
                }),
                "issuer",
            ) => {}
            other => panic!("{class}: {other:?}"),
        }
        assert_eq!(error.bucket(), Some(Bucket::InvalidCertificate), "{class}");
    }

    // Plaintext over HTTP, allowed by this client, refused by the host.
    let mut options = negotiate(&fleet);
    options.encryption = Encryption::Never;
    options.policy.allow_unencrypted = true;
    let error = client(&fleet, "plain", Scheme::Http, options)
        .identify(true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Transport(TransportError::PlaintextRefused { .. })
        ),
        "{error:?}"
    );
    assert_eq!(error.bucket(), Some(Bucket::EncryptionRequired));
}

#[tokio::test]
async fn pre_send_refusals_send_nothing() {
    let fleet = fleet().await;
    let (_, address) = host(&fleet, "plain");
    let before = fleet.host_of_class("plain").unwrap().stats.snapshot();

    // An IP-address target over HTTP with NTLM: not in the trusted hosts.
    let ip = Endpoint::new(&address.to_string(), Scheme::Http).unwrap();
    let error = HostClient::new(ip.clone(), Arc::new(negotiate(&fleet))).unwrap_err();
    assert_eq!(error.bucket(), Some(Bucket::InvalidHostIpAddress));
    // Basic over plain HTTP without AllowUnencrypted on this client.
    let (user, password) = admin(&fleet);
    let basic = ClientOptions::new(
        AuthMethod::Basic,
        Credential::new(&user, &password).unwrap(),
    );
    let name = Endpoint::new(&host(&fleet, "plain").0, Scheme::Http).unwrap();
    let error = HostClient::new(name, Arc::new(basic)).unwrap_err();
    assert_eq!(error.bucket(), Some(Bucket::ClientAuthenticationDisabled));
    // A name with invalid characters.
    let error = Endpoint::new("srv_0001.fleet.test", Scheme::Http).unwrap_err();
    assert_eq!(error.bucket(), Some(Bucket::HostContainsInvalidCharacters));

    let after = fleet.host_of_class("plain").unwrap().stats.snapshot();
    assert_eq!(after.connections, before.connections);

    // With the address trusted, the same target works.
    let mut options = negotiate(&fleet);
    options.policy = ClientPolicy {
        trusted_hosts: TrustedHosts::parse("127.*"),
        allow_unencrypted: false,
    };
    let mut client = HostClient::new(ip, Arc::new(options)).unwrap();
    assert!(client.identify(true).await.is_ok());
}

// ---------------------------------------------------------------------------------------

async fn fleet() -> FleetHandle {
    let profile = Profile::parse("client-ops", "<test>", PROFILE).unwrap();
    let hosts = profile.classes.len();
    let options = FleetOptions::new(profile, hosts, 7);
    psfleet_tests::fleet::start(options).await
}

fn host(fleet: &FleetHandle, class: &str) -> (String, Ipv4Addr) {
    let h = fleet.host_of_class(class).unwrap();
    (h.spec.name.clone(), h.spec.address)
}

fn admin(fleet: &FleetHandle) -> (String, String) {
    let account = fleet.accounts().iter().find(|a| a.admin).unwrap();
    (account.name.clone(), account.password.clone())
}

/// Negotiate as the admin account, short timeouts.
fn negotiate(fleet: &FleetHandle) -> ClientOptions {
    let (user, password) = admin(fleet);
    ClientOptions::new(
        Mechanism::Negotiate,
        Credential::new(&user, &password).unwrap(),
    )
}

/// A client for the host of `class`, by name, with its address as the inventory address.
fn client(
    fleet: &FleetHandle,
    class: &str,
    scheme: Scheme,
    mut options: ClientOptions,
) -> HostClient {
    let (name, address) = host(fleet, class);
    options.connect_timeout = Duration::from_secs(5);
    options.request_timeout = Duration::from_secs(10);
    options.cleanup_timeout = Duration::from_secs(5);
    let endpoint = Endpoint::new(&name, scheme).unwrap();
    HostClient::new(endpoint, Arc::new(options))
        .unwrap()
        .with_address(IpAddr::V4(address))
}

/// (open, created, deleted) shells on the host of `class`, all users.
fn counts(fleet: &FleetHandle, class: &str) -> (u64, u64, u64) {
    let totals = fleet
        .host_of_class(class)
        .unwrap()
        .service()
        .counters()
        .totals;
    (
        totals.shells_open,
        totals.shells_created,
        totals.shells_deleted,
    )
}

#[tokio::test]
async fn mixed_profile_hosts_land_in_their_expected_buckets() {
    // The built-in mixed profile: one host per class at least, each with the bucket a
    // correct client reports for it in the inventory. The client's own bucket hints must
    // agree, class by class, before any classifier logic.
    let profile = Profile::load("mixed").unwrap();
    let options = FleetOptions::new(profile, 60, 3);
    let fleet = psfleet_tests::fleet::start(options).await;
    let tls = TlsClient::new(&TlsOptions {
        system_roots: false,
        ca_pem: Some(fleet.ca_pem().to_owned()),
        ..TlsOptions::default()
    })
    .unwrap();
    let mut checked = std::collections::BTreeSet::new();
    for row in fleet.inventory().to_vec() {
        // Kerberos rows belong to the Kerberos tests (they need a KDC); the JEA row's
        // expectation is for the default job, which a restricted endpoint allows and
        // `hostname` is not.
        if row.authentication == "kerberos" || row.group == "jea" || checked.contains(&row.group) {
            continue;
        }
        checked.insert(row.group.clone());
        let user = row.user.clone().unwrap_or_else(|| admin(&fleet).0);
        let password = fleet
            .accounts()
            .iter()
            .find(|a| a.name == user)
            .map_or_else(|| admin(&fleet).1, |a| a.password.clone());
        let auth = match row.authentication.as_str() {
            "basic" => AuthMethod::Basic,
            "ntlm" => AuthMethod::Sspi(Mechanism::Ntlm),
            _ => AuthMethod::Sspi(Mechanism::Negotiate),
        };
        let mut options = ClientOptions::new(auth, Credential::new(&user, &password).unwrap());
        options.tls = Some(tls.clone());
        options.configuration_name = row.configuration_name.clone();
        options.connect_timeout = Duration::from_secs(2);
        options.request_timeout = Duration::from_secs(4);
        // Basic over HTTP is a deliberate inventory choice (AllowUnencrypted on the host).
        options.policy.allow_unencrypted = row.authentication == "basic";
        let scheme = if row.scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let bucket = match Endpoint::new(&row.name, scheme)
            .map_err(ClientError::from)
            .and_then(|e| HostClient::new(e.with_port(row.port), Arc::new(options)))
        {
            Err(error) => error.bucket(),
            Ok(client) => {
                let mut client = match row.address {
                    Some(address) => client.with_address(IpAddr::V4(address)),
                    None => client,
                };
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                match client
                    .run_script(
                        ScriptSpec::new("hostname"),
                        RunControl::none().with_deadline(deadline),
                    )
                    .await
                {
                    Ok(result) => result.bucket(),
                    Err(error) => error.error.bucket(),
                }
            }
        };
        let got = bucket.map_or("Succeeded", Bucket::name);
        assert_eq!(got, row.expected, "class {} ({})", row.group, row.name);
    }
    // Every non-Kerberos class of the profile was checked (29 at the time of writing).
    assert!(checked.len() >= 25, "{checked:?}");
    println!(
        "mixed profile: {} classes in their expected buckets",
        checked.len()
    );
}
