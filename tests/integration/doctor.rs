//! `psfleet doctor` against the built-in mixed fleet: for each failing host class, the step
//! that fails and the bucket it names (the class's expected bucket), the steps after it
//! skipped, and the facts it prints (certificate, quotas); a healthy host where every step
//! passes; the diagnosis as JSON.

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::Duration;

use psfleet_core::taxonomy::Bucket;
use psfleet_engine::auth::{Credential, Mechanism};
use psfleet_engine::doctor::{Diagnosis, DoctorTarget, Status, Step, StepId, diagnose};
use psfleet_engine::http::AuthMethod;
use psfleet_engine::ops::ClientOptions;
use psfleet_engine::target::{Scheme, TrustedHosts};
use psfleet_engine::tls::{TlsClient, TlsOptions};
use psfleet_sim::fleet::{FleetHandle, FleetOptions};
use psfleet_sim::profile::{InventoryRow, Profile};

#[tokio::test]
async fn an_invalid_name_fails_the_first_step_and_skips_the_rest() {
    let d = doctor("bad_name", |_, _| {}).await;
    fails_at(&d, StepId::Name, Bucket::HostContainsInvalidCharacters);
    assert!(
        d.step(StepId::Name)
            .unwrap()
            .detail
            .contains("only letters, digits")
    );
    assert!(d.endpoint.is_none());
}

#[tokio::test]
async fn an_unresolvable_name_is_invalid_dns() {
    let d = doctor("unresolvable", |_, _| {}).await;
    fails_at(&d, StepId::Dns, Bucket::InvalidDns);
    assert!(
        d.step(StepId::Dns)
            .unwrap()
            .detail
            .contains(".fleet.invalid")
    );
}

#[tokio::test]
async fn a_closed_port_is_invalid_port_and_an_unreachable_host_invalid_host_name() {
    let d = doctor("closed_port", |_, _| {}).await;
    fails_at(&d, StepId::TcpHttp, Bucket::InvalidPort);
    let tcp = d.step(StepId::TcpHttp).unwrap();
    assert!(tcp.detail.contains("refused"), "{tcp}");
    assert!(
        tcp.message.as_deref().unwrap().contains("'Port' 5985"),
        "{tcp}"
    );

    // Nothing answers the SYN: the connect timeout (short here) runs out.
    let d = doctor("unreachable", |_, o| {
        o.connect_timeout = Duration::from_millis(500)
    })
    .await;
    fails_at(&d, StepId::TcpHttp, Bucket::InvalidHostName);
    assert!(
        d.step(StepId::TcpHttp)
            .unwrap()
            .detail
            .contains("did not answer within 500ms")
    );
}

#[tokio::test]
async fn a_blackhole_accepts_and_never_answers() {
    let d = doctor("blackhole", |_, o| {
        o.connect_timeout = Duration::from_millis(500);
        o.request_timeout = Duration::from_secs(1);
    })
    .await;
    // TCP connects; the Identify gets no answer.
    assert_eq!(d.step(StepId::TcpHttp).unwrap().status, Status::Pass);
    fails_at(&d, StepId::Identify, Bucket::Timeout);
}

#[tokio::test]
async fn http_to_an_https_only_listener() {
    // Plain HTTP to the TLS port: closed unanswered, and the port does speak TLS.
    let d = doctor("https_only", |_, _| {}).await;
    fails_at(&d, StepId::Identify, Bucket::InvalidProtocol);
    assert!(
        d.step(StepId::Identify)
            .unwrap()
            .detail
            .contains("speaks HTTPS")
    );
    // HTTP on 5985 where only 5986 listens: refused.
    let d = doctor("https_only_http_port", |_, _| {}).await;
    fails_at(&d, StepId::TcpHttp, Bucket::InvalidPort);
    assert_eq!(d.step(StepId::TcpHttps).unwrap().status, Status::Pass);
    let tcp = d.step(StepId::TcpHttp).unwrap();
    assert!(
        tcp.detail.contains(
            "port 5986 accepts connections (the host may listen for HTTPS only: try --use-ssl)"
        ),
        "{tcp}"
    );
}

#[tokio::test]
async fn certificates_with_the_wrong_name_self_signed_or_expired() {
    let d = doctor("cert_wrong_name", |_, _| {}).await;
    fails_at(&d, StepId::Tls, Bucket::InvalidCertificate);
    let tls = d.step(StepId::Tls).unwrap();
    assert!(tls.detail.contains("not valid for the name"), "{tls}");
    let cert = d.facts.certificate.as_ref().unwrap();
    assert!(!cert.matches_name);
    assert!(!cert.self_signed);
    assert!(!cert.subject_alternative_names.is_empty());
    assert!(
        !cert
            .subject_alternative_names
            .iter()
            .any(|s| s.contains(&d.host)),
        "{cert:?}"
    );
    // What the step prints: subject, SAN, issuer, dates, thumbprint.
    for label in [
        "subject: ",
        "SAN: DNS:",
        "issuer: ",
        "valid: ",
        "thumbprint: ",
    ] {
        assert!(tls.detail.contains(label), "{label} in {tls}");
    }
    assert_eq!(cert.thumbprint.len(), 40);
    assert!(tls.detail.contains(&cert.thumbprint));
    assert!(
        tls.message
            .as_deref()
            .unwrap()
            .contains("TLS certificate was rejected")
    );

    let d = doctor("cert_self_signed", |_, _| {}).await;
    fails_at(&d, StepId::Tls, Bucket::InvalidCertificate);
    assert!(
        d.step(StepId::Tls)
            .unwrap()
            .detail
            .contains("unknown certificate authority")
    );
    let cert = d.facts.certificate.as_ref().unwrap();
    assert!(cert.self_signed);
    assert!(cert.matches_name);
    assert_eq!(cert.subject, cert.issuer);

    let d = doctor("cert_expired", |_, _| {}).await;
    fails_at(&d, StepId::Tls, Bucket::InvalidCertificate);
    assert!(d.step(StepId::Tls).unwrap().detail.contains("expired"));
    assert!(
        d.facts
            .certificate
            .as_ref()
            .unwrap()
            .expired_or_not_yet_valid
    );
}

#[tokio::test]
async fn a_wrong_password_is_invalid_credentials() {
    let d = doctor("rotated_password", |_, _| {}).await;
    fails_at(&d, StepId::Authentication, Bucket::InvalidCredentials);
    // The steps before it passed: the host is fine, the password is not.
    assert_eq!(d.step(StepId::AuthSchemes).unwrap().status, Status::Pass);
    assert_eq!(d.facts.offered_schemes, ["Negotiate"]);
}

#[tokio::test]
async fn a_disabled_mechanism_is_access_denied_at_the_offered_schemes() {
    let d = doctor("basic_disabled", |_, o| o.policy.allow_unencrypted = true).await;
    fails_at(&d, StepId::AuthSchemes, Bucket::AccessDenied);
    let step = d.step(StepId::AuthSchemes).unwrap();
    assert!(
        step.message
            .as_deref()
            .unwrap()
            .contains("Basic Authentication is disabled on the Host's WinRM service"),
        "{step}"
    );
}

#[tokio::test]
async fn a_non_admin_account_is_denied_the_configuration() {
    let d = doctor("non_admin", |_, _| {}).await;
    fails_at(&d, StepId::Configuration, Bucket::AccessDenied);
    assert_eq!(d.step(StepId::Authentication).unwrap().status, Status::Pass);
    let step = d.step(StepId::Configuration).unwrap();
    assert!(
        step.detail
            .contains("fleetuser may not use Microsoft.PowerShell"),
        "{step}"
    );
    assert_eq!(
        step.message.as_deref(),
        Some(format!("Access denied to the 'Host' (\"{}\").", d.host).as_str())
    );
    // Reading the quotas needs an administrator too: a warning, not a failure.
    assert_eq!(d.step(StepId::Quotas).unwrap().status, Status::Warn);

    let d = doctor("remoting_disabled", |_, _| {}).await;
    fails_at(&d, StepId::Configuration, Bucket::AccessDenied);
}

#[tokio::test]
async fn a_missing_configuration_is_invalid_ps_configuration() {
    let d = doctor("unknown_configuration", |_, _| {}).await;
    fails_at(&d, StepId::Configuration, Bucket::InvalidPsConfiguration);
    let step = d.step(StepId::Configuration).unwrap();
    assert!(
        step.message
            .as_deref()
            .unwrap()
            .contains("'PSConfiguration' (\"JEA.Maintenance\") has not been configured"),
        "{step}"
    );
    // The configuration exists on the JEA hosts.
    let d = doctor("jea", |_, _| {}).await;
    assert!(d.passed(), "{}", text(&d));
    assert_eq!(counts(&d), (1, 1));
}

#[tokio::test]
async fn plaintext_refused_by_the_host_or_by_this_client() {
    // This client allows unencrypted Basic over HTTP; the host does not.
    let d = doctor("plaintext_refused", |_, o| {
        o.policy.allow_unencrypted = true
    })
    .await;
    fails_at(&d, StepId::Encryption, Bucket::EncryptionRequired);
    assert_eq!(d.step(StepId::Authentication).unwrap().status, Status::Pass);
    // Without that allowance this client refuses first, sending nothing.
    let d = doctor("plaintext_refused", |_, _| {}).await;
    fails_at(&d, StepId::Encryption, Bucket::ClientAuthenticationDisabled);
    assert_eq!(d.step(StepId::Authentication).unwrap().status, Status::Skip);
    // A host that allows it: a warning that anyone can read the messages.
    let d = doctor("basic_http", |_, o| o.policy.allow_unencrypted = true).await;
    assert!(d.passed(), "{}", text(&d));
    assert_eq!(d.step(StepId::Encryption).unwrap().status, Status::Warn);
}

#[tokio::test]
async fn an_ip_target_outside_the_trusted_hosts() {
    let d = doctor("ip_address", |_, _| {}).await;
    fails_at(&d, StepId::TrustedHosts, Bucket::InvalidHostIpAddress);
    // Trusted, the same target goes through.
    let d = doctor("ip_address", |_, o| {
        o.policy.trusted_hosts = TrustedHosts::parse("127.*")
    })
    .await;
    assert!(d.passed(), "{}", text(&d));
}

#[tokio::test]
async fn quotas_are_reported_and_an_exhausted_quota_fails() {
    let d = doctor("quota_limited", |_, _| {}).await;
    assert!(d.passed(), "{}", text(&d));
    let config = d.facts.config.as_ref().unwrap();
    assert_eq!(config.max_shells_per_user, Some(2));
    assert_eq!(config.max_concurrent_operations_per_user, Some(15));
    assert_eq!(d.facts.open_shells, Some(0));
    let quotas = d.step(StepId::Quotas).unwrap();
    assert!(quotas.detail.contains("MaxShellsPerUser 2"), "{quotas}");
    assert!(
        quotas.detail.contains("MaxConcurrentOperationsPerUser 15"),
        "{quotas}"
    );
    assert!(quotas.detail.contains("0 shells open"), "{quotas}");

    let d = doctor("quota_exhausted", |_, _| {}).await;
    fails_at_keeping_later(&d, StepId::Configuration, Bucket::QuotaExceeded);
    let quotas = d.step(StepId::Quotas).unwrap();
    assert_eq!(quotas.status, Status::Fail);
    assert_eq!(quotas.bucket, Some(Bucket::QuotaExceeded));
    assert!(quotas.detail.contains("MaxShellsPerUser 0"), "{quotas}");
}

#[tokio::test]
async fn broken_modules_and_an_impostor() {
    let d = doctor("modules_fail", |_, _| {}).await;
    fails_at_keeping_later(&d, StepId::Configuration, Bucket::ModuleLoadFailure);
    // The broken pool's shell was deleted.
    assert_eq!(counts(&d), (1, 1));

    let d = doctor("impostor", |_, _| {}).await;
    fails_at(&d, StepId::Identify, Bucket::ProtocolError);
}

#[tokio::test]
async fn a_healthy_https_host_passes_every_step_and_the_diagnosis_is_json() {
    let mut reported = Vec::new();
    let fleet = mixed().await;
    let (target, options) = setup(&fleet, "healthy_https");
    let d = diagnose(&target, &options, |step: &Step| reported.push(step.clone())).await;
    for step in &d.steps {
        assert_eq!(step.status, Status::Pass, "{}", text(&d));
    }
    assert_eq!(d.steps.len(), StepId::ALL.len());
    assert_eq!(reported, d.steps, "every step is reported as it ends");
    let cert = d.facts.certificate.as_ref().unwrap();
    assert!(cert.matches_name && !cert.self_signed && !cert.expired_or_not_yet_valid);
    assert!(
        d.facts
            .product_version
            .as_deref()
            .unwrap()
            .starts_with("OS: ")
    );
    assert!(d.facts.ps_version.is_some());
    // The configuration step's shell was created and deleted.
    assert_eq!(shells(&fleet, "healthy_https"), (0, 1, 1));

    let json = serde_json::to_value(&d).unwrap();
    let steps = json["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "name",
            "dns",
            "tcp-http",
            "tcp-https",
            "tls",
            "identify",
            "auth-schemes",
            "trusted-hosts",
            "authentication",
            "encryption",
            "configuration",
            "quotas"
        ]
    );
    assert!(
        steps
            .iter()
            .all(|s| s["status"] == "pass" && s["bucket"].is_null())
    );
    assert!(json["facts"]["config"]["max_shells_per_user"].is_u64());

    // A healthy HTTP-only host: nothing fails; the unused HTTPS port warns and TLS is
    // skipped.
    let (target, options) = setup(&fleet, "healthy");
    let d = diagnose(&target, &options, |_| {}).await;
    assert!(d.passed(), "{}", text(&d));
    assert_eq!(d.step(StepId::TcpHttps).unwrap().status, Status::Warn);
    assert_eq!(d.step(StepId::Tls).unwrap().status, Status::Skip);
    assert_eq!(d.step(StepId::Quotas).unwrap().status, Status::Pass);
}

// ---------------------------------------------------------------------------------------

/// The built-in mixed profile: one host per failure class and healthy ones.
async fn mixed() -> FleetHandle {
    let profile = Profile::load("mixed").unwrap();
    psfleet_tests::fleet::start(FleetOptions::new(profile, 60, 3)).await
}

/// The diagnosis of the (first) host of `class`, with the inventory's settings adjusted
/// by `adjust`; the fleet's shell counters of the host are checked by the caller through
/// [`counts`]. The fleet lives as long as the diagnosis.
async fn doctor(
    class: &str,
    adjust: impl FnOnce(&mut DoctorTarget, &mut ClientOptions),
) -> Diagnosed {
    let fleet = mixed().await;
    let (mut target, mut options) = setup(&fleet, class);
    adjust(&mut target, &mut options);
    let diagnosis = diagnose(&target, &options, |_| {}).await;
    let totals = fleet
        .host_of_class(class)
        .map(|h| h.service().counters().totals);
    Diagnosed {
        diagnosis,
        created_deleted: totals.map(|t| (t.shells_created, t.shells_deleted)),
    }
}

/// A diagnosis and the host's (created, deleted) shell counts afterwards.
struct Diagnosed {
    diagnosis: Diagnosis,
    created_deleted: Option<(u64, u64)>,
}

impl std::ops::Deref for Diagnosed {
    type Target = Diagnosis;

    fn deref(&self) -> &Diagnosis {
        &self.diagnosis
    }
}

fn counts(d: &Diagnosed) -> (u64, u64) {
    d.created_deleted.unwrap()
}

/// The target and options of the inventory row of `class`, as a run would use them.
fn setup(fleet: &FleetHandle, class: &str) -> (DoctorTarget, ClientOptions) {
    let row: InventoryRow = fleet
        .inventory()
        .iter()
        .find(|r| r.group == class)
        .unwrap_or_else(|| panic!("no host of class {class}"))
        .clone();
    let admin = fleet.accounts().iter().find(|a| a.admin).unwrap();
    let user = row.user.clone().unwrap_or_else(|| admin.name.clone());
    let password = fleet
        .accounts()
        .iter()
        .find(|a| a.name == user)
        .map_or_else(|| admin.password.clone(), |a| a.password.clone());
    let auth = match row.authentication.as_str() {
        "basic" => AuthMethod::Basic,
        "ntlm" => AuthMethod::Sspi(Mechanism::Ntlm),
        _ => AuthMethod::Sspi(Mechanism::Negotiate),
    };
    let mut options = ClientOptions::new(auth, Credential::new(&user, &password).unwrap());
    options.tls = Some(
        TlsClient::new(&TlsOptions {
            system_roots: false,
            ca_pem: Some(fleet.ca_pem().to_owned()),
            ..TlsOptions::default()
        })
        .unwrap(),
    );
    options.configuration_name = row.configuration_name.clone();
    options.connect_timeout = Duration::from_secs(2);
    options.request_timeout = Duration::from_secs(5);
    let scheme = if row.scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let mut target = DoctorTarget::new(row.name.clone(), scheme).with_port(row.port);
    if let Some(address) = row.address {
        target = target.with_address(IpAddr::V4(address));
    }
    (target, options)
}

/// (open, created, deleted) shells of the host of `class`.
fn shells(fleet: &FleetHandle, class: &str) -> (u64, u64, u64) {
    let t = fleet
        .host_of_class(class)
        .unwrap()
        .service()
        .counters()
        .totals;
    (t.shells_open, t.shells_created, t.shells_deleted)
}

/// Every step as the CLI prints it.
fn text(d: &Diagnosis) -> String {
    d.steps.iter().map(|s| format!("{s}\n")).collect()
}

/// `id` is the first failure, with `bucket`, a message and a fix, and every step after it
/// was skipped, but the ones that do not depend on it (the other TCP port, the quotas after
/// the configuration).
fn fails_at(d: &Diagnosis, id: StepId, bucket: Bucket) {
    fails_at_keeping_later(d, id, bucket);
    let at = d.steps.iter().position(|s| s.id == id).unwrap();
    for later in &d.steps[at + 1..] {
        let independent = matches!(
            (id, later.id),
            (StepId::TcpHttp, StepId::TcpHttps) | (StepId::Configuration, StepId::Quotas)
        );
        if !independent {
            assert_eq!(later.status, Status::Skip, "{}", text(d));
        }
    }
}

/// `id` is the first failure, with `bucket`, a message and a fix; every step appears once.
fn fails_at_keeping_later(d: &Diagnosis, id: StepId, bucket: Bucket) {
    let failed = d
        .first_failure()
        .unwrap_or_else(|| panic!("nothing failed:\n{}", text(d)));
    assert_eq!(failed.id, id, "{}", text(d));
    assert_eq!(failed.bucket, Some(bucket), "{}", text(d));
    assert_eq!(d.bucket(), Some(bucket));
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains(&d.host)),
        "{failed}"
    );
    assert_eq!(failed.fix.as_deref(), Some(bucket.how_to_fix()));
    let ids: Vec<StepId> = d.steps.iter().map(|s| s.id).collect();
    assert_eq!(ids, StepId::ALL, "{}", text(d));
    println!("{}: {id} -> {bucket}", d.host);
}
