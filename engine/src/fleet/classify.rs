//! The classifier: what happened to a host (the scheduler's [`Outcome`] of its job, carrying
//! the operation's result or its [`ClientError`]) becomes one status, at most one bucket, the
//! documented message (`Bucket::message`, seed 000's formats) and an error id. docs/engine.md
//! has the table; the evidence is the transport's (wire-facts sections 1 and 6).
//!
//! The rules, in order:
//! - the scheduler decides `Skipped` (stopped before the first attempt), `Interrupted`
//!   (stopped in flight), `Timeout` (the per-host deadline) and `QuotaExceeded` (quota faults
//!   after every requeue);
//! - a failed operation takes the bucket its error names ([`ClientError::bucket`]: the
//!   transport, the pre-send checks, the fault code); an error that names none is a local
//!   set-up problem: TLS set-up → InvalidCertificate, anything else → ProtocolError;
//! - a script whose pipeline ended `Failed` (a terminating error) or `Stopped` by the host is
//!   ScriptFailed; non-terminating errors (Write-Error) leave it Succeeded, with the errors
//!   in the record, as `Invoke-Command` leaves `$?` true for them (wire-facts 1.13);
//! - a cmd command that exits non-zero is ScriptFailed (the exit code is in the record);
//! - a journal failure before the host was touched: Skipped (the run stops); a panic in
//!   psfleet: Interrupted (the host's outcome is unknown), with the panic in the message.

use std::time::Duration;

use psfleet_core::taxonomy::Bucket;

use super::jobs::{JobError, JobOutput, JobResult};
use crate::auth::AuthError;
use crate::error::ClientError;
use crate::http::TransportError;
use crate::record::Status;
use crate::scheduler::Outcome;
use crate::target::TargetError;

/// What the documented messages name: filled in from the host's target and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostContext {
    /// The inventory name ('Host' in the messages).
    pub host: String,
    /// The port connected to (InvalidPort).
    pub port: u16,
    /// The authentication mechanism (`Negotiate`, `Basic`, ...; AccessDenied,
    /// ClientAuthenticationDisabled).
    pub mechanism: String,
    /// The session configuration (InvalidPSConfiguration).
    pub configuration_name: String,
    /// The per-host deadline, if any (Timeout).
    pub timeout: Option<Duration>,
}

/// A host's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Succeeded, failed or skipped.
    pub status: Status,
    /// Why it failed (`None` when it succeeded or was skipped).
    pub bucket: Option<Bucket>,
    /// The documented message (failures) or a one-line summary (successes, skips).
    pub message: String,
    /// The WS-Man fault code, the HTTP status, or the error record's FullyQualifiedErrorId.
    pub error_id: Option<String>,
}

/// Classifies one finished job.
pub fn classify(host: &HostContext, outcome: &Outcome<JobOutput, JobError>) -> Classification {
    match outcome {
        Outcome::Succeeded(output) => classify_result(host, output),
        Outcome::Failed { error, .. } => classify_error(host, error),
        Outcome::QuotaExceeded { error, .. } => {
            let client = client_error(error);
            failed(
                Bucket::QuotaExceeded,
                host,
                &quota_detail(error),
                client.and_then(ClientError::error_id),
            )
        }
        Outcome::TimedOut { last_error } => {
            let mut detail = match host.timeout {
                Some(timeout) => format!("the per-host timeout of {} passed", seconds(timeout)),
                None => "the per-host timeout passed".to_owned(),
            };
            if let Some(error) = last_error
                && !matches!(error, JobError::Client(ClientError::Cancelled))
            {
                detail.push_str(&format!(" (last error: {error})"));
            }
            failed(Bucket::Timeout, host, &detail, None)
        }
        Outcome::Interrupted { .. } => failed(Bucket::Interrupted, host, "", None),
        Outcome::Skipped => skipped("not started: the run was stopped first"),
        Outcome::Panicked { message } => Classification {
            status: Status::Failed,
            bucket: Some(Bucket::Interrupted),
            message: format!(
                "{} psfleet failed internally while the host was in flight: {message}",
                Bucket::Interrupted.message(&host.host, "")
            ),
            error_id: None,
        },
    }
}

/// A job that returned a result.
fn classify_result(host: &HostContext, output: &JobOutput) -> Classification {
    match &output.result {
        JobResult::Script(result) => match result.pipeline_state.as_str() {
            "Failed" => {
                let record = result.error_record.as_ref();
                let detail =
                    record.map_or_else(|| "the pipeline failed".to_owned(), |r| r.message.clone());
                failed(
                    Bucket::ScriptFailed,
                    host,
                    &detail,
                    record
                        .map(|r| r.fully_qualified_error_id.clone())
                        .filter(|id| !id.is_empty()),
                )
            }
            "Stopped" => failed(
                Bucket::ScriptFailed,
                host,
                "the pipeline was stopped on the host",
                None,
            ),
            state => {
                let mut message = format!(
                    "{state}: {} output object(s)",
                    result.output.len() as u64 + result.dropped
                );
                if !result.errors.is_empty() {
                    message.push_str(&format!(
                        ", {} non-terminating error(s)",
                        result.errors.len()
                    ));
                }
                succeeded(message)
            }
        },
        JobResult::Cmd(result) if result.exit_code != 0 => failed(
            Bucket::ScriptFailed,
            host,
            &format!("the command exited with code {}", result.exit_code),
            None,
        ),
        JobResult::Cmd(_) => succeeded("the command exited with code 0".to_owned()),
        JobResult::Sweep(sweep) => {
            let mut parts = vec![format!(
                "reachable and authenticated ({})",
                if sweep.facts.auth_schemes.is_empty() {
                    host.mechanism.clone()
                } else {
                    sweep.facts.auth_schemes.join(", ")
                }
            )];
            if let Some(version) = &sweep.product_version {
                parts.push(version.clone());
            }
            match sweep.facts.max_shells_per_user {
                Some(max) => parts.push(format!("MaxShellsPerUser {max}")),
                None if sweep.config_error.is_some() => {
                    parts.push("configuration not readable by this account".to_owned());
                }
                None => {}
            }
            succeeded(parts.join("; "))
        }
        JobResult::Cleanup(cleanup) => succeeded(format!(
            "{} leaked shell(s) deleted, {} already gone, {} in use by this process left alone",
            cleanup.deleted.len(),
            cleanup.already_gone,
            cleanup.kept_live
        )),
    }
}

/// A job that failed.
fn classify_error(host: &HostContext, error: &JobError) -> Classification {
    let error = match error {
        JobError::Client(error) => error,
        JobError::Store(store) => {
            return skipped(&format!(
                "not started: the run journal failed ({store}) and the run was stopped"
            ));
        }
    };
    let bucket = error.bucket().unwrap_or(match error {
        ClientError::Transport(TransportError::TlsSetup(_)) => Bucket::InvalidCertificate,
        _ => Bucket::ProtocolError,
    });
    failed(bucket, host, &detail(bucket, host, error), error.error_id())
}

/// What the bucket's message format asks for (seed 000): the mechanism, the port, the
/// domain, the configuration name, or the error's own text.
fn detail(bucket: Bucket, host: &HostContext, error: &ClientError) -> String {
    match bucket {
        // "<mechanism> Authentication is disabled on the Host's WinRM service": only when
        // the host did not offer the scheme; a fault 5 has no mechanism to name.
        Bucket::AccessDenied => match error {
            ClientError::Transport(TransportError::MechanismNotOffered { scheme, .. }) => {
                (*scheme).to_owned()
            }
            _ => String::new(),
        },
        Bucket::ClientAuthenticationDisabled => match error {
            ClientError::Target(TargetError::UnencryptedRefused { auth, .. }) => auth.clone(),
            _ => host.mechanism.clone(),
        },
        Bucket::InvalidCertificate => match error {
            ClientError::Transport(TransportError::Tls { failure, .. }) => failure.to_string(),
            other => other.to_string(),
        },
        Bucket::InvalidDomain => realm(error).unwrap_or_default(),
        Bucket::InvalidPort => host.port.to_string(),
        Bucket::InvalidPsConfiguration => host.configuration_name.clone(),
        Bucket::ModuleLoadFailure => match error {
            ClientError::PoolBroken {
                error: Some(record),
                ..
            } => record.message.clone(),
            other => other.to_string(),
        },
        Bucket::Interrupted
        | Bucket::HostContainsInvalidCharacters
        | Bucket::InvalidCredentials
        | Bucket::InvalidDns
        | Bucket::InvalidHostIpAddress
        | Bucket::InvalidHostName
        | Bucket::InvalidProtocol
        | Bucket::EncryptionRequired => String::new(),
        // 413 is the envelope limit (wire-facts 1.14): say which setting.
        Bucket::ServiceError => match error {
            ClientError::Transport(TransportError::HttpStatus { status: 413, .. }) => {
                "HTTP 413: the request is larger than the host's MaxEnvelopeSizekb".to_owned()
            }
            other => other.to_string(),
        },
        Bucket::QuotaExceeded | Bucket::Timeout | Bucket::ScriptFailed | Bucket::ProtocolError => {
            error.to_string()
        }
    }
}

/// The Kerberos realm an InvalidDomain error names.
fn realm(error: &ClientError) -> Option<String> {
    let ClientError::Transport(TransportError::Auth { source, .. }) = error else {
        return None;
    };
    match source {
        AuthError::KerberosRealmUnknown { realm } | AuthError::KdcUnreachable { realm, .. } => {
            Some(realm.clone())
        }
        _ => None,
    }
}

fn quota_detail(error: &JobError) -> String {
    match client_error(error).and_then(ClientError::fault) {
        Some(fault) if !fault.message.trim().is_empty() => fault.message.trim().to_owned(),
        Some(fault) => fault.reason.trim().to_owned(),
        None => error.to_string(),
    }
}

fn client_error(error: &JobError) -> Option<&ClientError> {
    match error {
        JobError::Client(error) => Some(error),
        JobError::Store(_) => None,
    }
}

fn failed(
    bucket: Bucket,
    host: &HostContext,
    detail: &str,
    error_id: Option<String>,
) -> Classification {
    Classification {
        status: Status::Failed,
        bucket: Some(bucket),
        message: bucket.message(&host.host, detail),
        error_id,
    }
}

fn succeeded(message: String) -> Classification {
    Classification {
        status: Status::Succeeded,
        bucket: None,
        message,
        error_id: None,
    }
}

fn skipped(message: &str) -> Classification {
    Classification {
        status: Status::Skipped,
        bucket: None,
        message: message.to_owned(),
        error_id: None,
    }
}

fn seconds(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::net::SocketAddr;

    use psfleet_core::wsman::WsmanFault;

    use super::*;
    use crate::fleet::jobs::{CleanupResult, SweepResult};
    use crate::http::{Phase, ProtocolViolation};
    use crate::ops::{CmdResult, Durations, ErrorInfo, ScriptResult};
    use crate::store::StoreError;
    use crate::tls::TlsFailure;

    fn host() -> HostContext {
        HostContext {
            host: "srv1.fleet.test".into(),
            port: 5986,
            mechanism: "Negotiate".into(),
            configuration_name: "JEA.Maintenance".into(),
            timeout: Some(Duration::from_secs(30)),
        }
    }

    fn addr() -> SocketAddr {
        "127.20.0.1:5985".parse().unwrap()
    }

    fn failure(error: ClientError) -> Classification {
        classify(
            &host(),
            &Outcome::Failed {
                error: JobError::Client(error),
                retries_exhausted: false,
            },
        )
    }

    fn transport(error: TransportError) -> Classification {
        failure(ClientError::Transport(error))
    }

    fn fault(fault: WsmanFault) -> ClientError {
        ClientError::Fault {
            operation: "Create".into(),
            fault: Box::new(fault),
        }
    }

    fn auth(source: AuthError) -> TransportError {
        TransportError::Auth {
            phase: Phase::Connect,
            source,
        }
    }

    fn error_info(message: &str, id: &str) -> ErrorInfo {
        ErrorInfo {
            message: message.into(),
            fully_qualified_error_id: id.into(),
            category: None,
            category_message: None,
            target_name: None,
            exception_type: None,
            exception_message: None,
            position: None,
            script_stack_trace: None,
        }
    }

    fn script(state: &str, error: Option<ErrorInfo>, errors: Vec<ErrorInfo>) -> JobOutput {
        JobOutput {
            result: JobResult::Script(Box::new(ScriptResult {
                output: vec![serde_json::json!("x")],
                errors,
                warnings: vec![],
                verbose: vec![],
                debug: vec![],
                information: vec![],
                progress: vec![],
                dropped: 0,
                pipeline_state: state.into(),
                error_record: error,
                ps_version: None,
                computer_name: "SRV1".into(),
                runspace_id: None,
                leaked_shell: None,
                durations: Durations::default(),
            })),
            address: None,
            leaks_reaped: 0,
        }
    }

    fn cmd(exit_code: i64) -> JobOutput {
        JobOutput {
            result: JobResult::Cmd(Box::new(CmdResult {
                stdout: b"hi\r\n".to_vec(),
                stderr: vec![],
                exit_code,
                dropped_bytes: 0,
                leaked_shell: None,
                durations: Durations::default(),
            })),
            address: None,
            leaks_reaped: 0,
        }
    }

    /// (bucket, message, error id) of a failure.
    fn verdict(c: &Classification) -> (Option<Bucket>, &str, Option<&str>) {
        assert_eq!(c.status, Status::Failed, "{c:?}");
        (c.bucket, c.message.as_str(), c.error_id.as_deref())
    }

    #[test]
    fn every_bucket_comes_from_its_evidence() {
        let h = "srv1.fleet.test";
        let cases: Vec<(Classification, Bucket, String, Option<&str>)> = vec![
            (
                failure(fault(WsmanFault::access_denied("SRV1"))),
                Bucket::AccessDenied,
                Bucket::AccessDenied.message(h, ""),
                Some("5"),
            ),
            (
                transport(TransportError::MechanismNotOffered {
                    scheme: "Basic",
                    offered: vec!["Negotiate".into()],
                }),
                Bucket::AccessDenied,
                Bucket::AccessDenied.message(h, "Basic"),
                None,
            ),
            (
                transport(auth(AuthError::KerberosNoRealm {
                    user: "fleetadmin".into(),
                })),
                Bucket::ClientAuthenticationDisabled,
                Bucket::ClientAuthenticationDisabled.message(h, "Negotiate"),
                None,
            ),
            (
                failure(ClientError::Target(TargetError::UnencryptedRefused {
                    host: h.into(),
                    auth: "Basic".into(),
                })),
                Bucket::ClientAuthenticationDisabled,
                Bucket::ClientAuthenticationDisabled.message(h, "Basic"),
                None,
            ),
            (
                failure(
                    crate::target::Host::parse("srv%1")
                        .map(drop)
                        .unwrap_err()
                        .into(),
                ),
                Bucket::HostContainsInvalidCharacters,
                Bucket::HostContainsInvalidCharacters.message(h, ""),
                None,
            ),
            (
                transport(TransportError::Tls {
                    addr: addr(),
                    failure: TlsFailure::Expired,
                }),
                Bucket::InvalidCertificate,
                Bucket::InvalidCertificate.message(h, "the certificate has expired"),
                None,
            ),
            (
                transport(TransportError::CredentialsRejected {
                    user: "fleetadmin".into(),
                    offered: vec!["Negotiate".into()],
                    channel_bound: false,
                }),
                Bucket::InvalidCredentials,
                Bucket::InvalidCredentials.message(h, ""),
                None,
            ),
            (
                transport(TransportError::Dns {
                    host: h.into(),
                    source: io::Error::new(io::ErrorKind::NotFound, "no such host"),
                }),
                Bucket::InvalidDns,
                Bucket::InvalidDns.message(h, ""),
                None,
            ),
            (
                transport(auth(AuthError::KerberosRealmUnknown {
                    realm: "NOKDC.INVALID".into(),
                })),
                Bucket::InvalidDomain,
                Bucket::InvalidDomain.message(h, "NOKDC.INVALID"),
                None,
            ),
            (
                failure(ClientError::Target(TargetError::InvalidHostIpAddress {
                    host: "127.20.0.1".into(),
                })),
                Bucket::InvalidHostIpAddress,
                Bucket::InvalidHostIpAddress.message(h, ""),
                None,
            ),
            (
                transport(TransportError::ConnectTimeout {
                    addr: addr(),
                    timeout: Duration::from_secs(2),
                }),
                Bucket::InvalidHostName,
                Bucket::InvalidHostName.message(h, ""),
                None,
            ),
            (
                transport(TransportError::ConnectionRefused { addr: addr() }),
                Bucket::InvalidPort,
                Bucket::InvalidPort.message(h, "5986"),
                None,
            ),
            (
                transport(TransportError::Protocol {
                    phase: Phase::Negotiate,
                    violation: ProtocolViolation::MalformedHttp,
                }),
                Bucket::InvalidProtocol,
                Bucket::InvalidProtocol.message(h, ""),
                None,
            ),
            (
                failure(fault(WsmanFault::invalid_resource_uri(
                    "SRV1",
                    "http://schemas.microsoft.com/powershell/JEA.Maintenance",
                ))),
                Bucket::InvalidPsConfiguration,
                Bucket::InvalidPsConfiguration.message(h, "JEA.Maintenance"),
                Some("2150858811"),
            ),
            (
                transport(TransportError::PlaintextRefused { status: 500 }),
                Bucket::EncryptionRequired,
                Bucket::EncryptionRequired.message(h, ""),
                None,
            ),
            (
                failure(ClientError::PoolBroken {
                    state: "Broken".into(),
                    error: Some(Box::new(error_info(
                        "The module 'Microsoft.PowerShell.Utility' could not be loaded.",
                        "Modules_ModuleNotFound",
                    ))),
                }),
                Bucket::ModuleLoadFailure,
                Bucket::ModuleLoadFailure.message(
                    h,
                    "The module 'Microsoft.PowerShell.Utility' could not be loaded.",
                ),
                Some("Modules_ModuleNotFound"),
            ),
            (
                transport(TransportError::HttpStatus {
                    status: 413,
                    phase: Phase::Message,
                    offered: vec![],
                    body_len: 0,
                }),
                Bucket::ServiceError,
                Bucket::ServiceError.message(
                    h,
                    "HTTP 413: the request is larger than the host's MaxEnvelopeSizekb",
                ),
                Some("HTTP 413"),
            ),
            (
                failure(ClientError::Protocol {
                    operation: "Identify".into(),
                    detail: "not XML".into(),
                }),
                Bucket::ProtocolError,
                Bucket::ProtocolError.message(h, "Identify: protocol violation: not XML"),
                None,
            ),
            (
                transport(TransportError::RequestTimeout {
                    phase: Phase::Message,
                    timeout: Duration::from_secs(30),
                }),
                Bucket::Timeout,
                Bucket::Timeout.message(h, "no response within 30s (message)"),
                None,
            ),
        ];
        for (got, bucket, message, id) in &cases {
            assert_eq!(
                verdict(got),
                (Some(*bucket), message.as_str(), *id),
                "{bucket}"
            );
        }
    }

    #[test]
    fn scheduler_outcomes_decide_their_own_buckets() {
        let h = "srv1.fleet.test";
        let quota = classify(
            &host(),
            &Outcome::QuotaExceeded {
                error: JobError::Client(fault(WsmanFault::max_shells_per_user("SRV1", 5))),
                max_shells: Some(5),
            },
        );
        assert_eq!(quota.bucket, Some(Bucket::QuotaExceeded));
        assert_eq!(quota.error_id.as_deref(), Some("2150859173"));
        assert!(
            quota
                .message
                .contains("maximum number of 5 concurrent shells"),
            "{}",
            quota.message
        );
        let timed_out = classify(
            &host(),
            &Outcome::TimedOut {
                last_error: Some(JobError::Client(ClientError::Cancelled)),
            },
        );
        assert_eq!(
            verdict(&timed_out),
            (
                Some(Bucket::Timeout),
                Bucket::Timeout
                    .message(h, "the per-host timeout of 30 s passed")
                    .as_str(),
                None
            )
        );
        let interrupted = classify(&host(), &Outcome::Interrupted { last_error: None });
        assert_eq!(
            verdict(&interrupted),
            (
                Some(Bucket::Interrupted),
                Bucket::Interrupted.message(h, "").as_str(),
                None
            )
        );
        let skipped = classify(&host(), &Outcome::Skipped);
        assert_eq!((skipped.status, skipped.bucket), (Status::Skipped, None));
        let store = classify(
            &host(),
            &Outcome::Failed {
                error: JobError::Store(StoreError::Closed),
                retries_exhausted: false,
            },
        );
        assert_eq!((store.status, store.bucket), (Status::Skipped, None));
        assert!(
            store.message.contains("journal failed"),
            "{}",
            store.message
        );
        let panicked = classify(
            &host(),
            &Outcome::Panicked {
                message: "index out of bounds".into(),
            },
        );
        assert_eq!(panicked.bucket, Some(Bucket::Interrupted));
        assert!(panicked.message.ends_with("index out of bounds"));
    }

    #[test]
    fn results_are_judged_by_pipeline_state_and_exit_code() {
        let h = "srv1.fleet.test";
        let ok = classify(
            &host(),
            &Outcome::Succeeded(script(
                "Completed",
                None,
                vec![error_info(
                    "bad thing",
                    "Microsoft.PowerShell.Commands.WriteErrorException",
                )],
            )),
        );
        assert_eq!((ok.status, ok.bucket), (Status::Succeeded, None));
        assert_eq!(
            ok.message,
            "Completed: 1 output object(s), 1 non-terminating error(s)"
        );
        let thrown = classify(
            &host(),
            &Outcome::Succeeded(script("Failed", Some(error_info("boom", "boom")), vec![])),
        );
        assert_eq!(
            verdict(&thrown),
            (
                Some(Bucket::ScriptFailed),
                Bucket::ScriptFailed.message(h, "boom").as_str(),
                Some("boom")
            )
        );
        let stopped = classify(
            &host(),
            &Outcome::Succeeded(script("Stopped", None, vec![])),
        );
        assert_eq!(stopped.bucket, Some(Bucket::ScriptFailed));
        let exit3 = classify(&host(), &Outcome::Succeeded(cmd(3)));
        assert_eq!(
            verdict(&exit3),
            (
                Some(Bucket::ScriptFailed),
                Bucket::ScriptFailed
                    .message(h, "the command exited with code 3")
                    .as_str(),
                None
            )
        );
        let exit0 = classify(&host(), &Outcome::Succeeded(cmd(0)));
        assert_eq!((exit0.status, exit0.bucket), (Status::Succeeded, None));
        let sweep = classify(
            &host(),
            &Outcome::Succeeded(JobOutput {
                result: JobResult::Sweep(Box::new(SweepResult {
                    product_version: Some("OS: 10.0.17763 SP: 0.0 Stack: 3.0".into()),
                    config_error: Some("Get: Access is denied.".into()),
                    ..SweepResult::default()
                })),
                address: None,
                leaks_reaped: 0,
            }),
        );
        assert_eq!(sweep.status, Status::Succeeded);
        assert_eq!(
            sweep.message,
            "reachable and authenticated (Negotiate); OS: 10.0.17763 SP: 0.0 Stack: 3.0; \
             configuration not readable by this account"
        );
        let cleanup = classify(
            &host(),
            &Outcome::Succeeded(JobOutput {
                result: JobResult::Cleanup(CleanupResult {
                    found: 3,
                    deleted: vec!["a".into(), "b".into()],
                    already_gone: 1,
                    kept_live: 1,
                }),
                address: None,
                leaks_reaped: 0,
            }),
        );
        assert_eq!(
            cleanup.message,
            "2 leaked shell(s) deleted, 1 already gone, 1 in use by this process left alone"
        );
    }

    #[test]
    fn errors_without_a_bucket_get_a_documented_one() {
        let unusable = transport(TransportError::Unusable);
        assert_eq!(unusable.bucket, Some(Bucket::ProtocolError));
        let request = transport(TransportError::InvalidRequest("bad header"));
        assert_eq!(request.bucket, Some(Bucket::ProtocolError));
    }
}
