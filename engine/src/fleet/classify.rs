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
        Bucket::QuotaExceeded
        | Bucket::Timeout
        | Bucket::ScriptFailed
        | Bucket::ServiceError
        | Bucket::ProtocolError => error.to_string(),
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
