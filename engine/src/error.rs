//! The error of a WinRM operation on one host: what failed, with the evidence a classifier
//! needs (issue 4 item 7; wire-facts section 6), and [`ClientError::bucket`], the failure
//! bucket it points to.
//!
//! Script-level outcomes (a Failed pipeline, a non-zero exit code) are results, not
//! errors: see `ops::ScriptResult` and `ops::CmdResult`.

use std::time::Duration;

use psfleet_core::taxonomy::Bucket;
use psfleet_core::wsman::WsmanFault;

use crate::http::TransportError;
use crate::ops::ErrorInfo;
use crate::target::TargetError;

/// Why an operation on a host failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Refused before any packet: host name, trusted hosts, unencrypted Basic.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Name resolution, TCP, TLS, HTTP or authentication failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The host answered with a WS-Management fault (HTTP 500).
    #[error("{operation}: WS-Man fault {}: {}", fault_code_text(.fault), fault_text(.fault))]
    Fault {
        /// The operation (`Create`, `Receive`, `Get`, `Identify`, ...).
        operation: String,
        /// The fault as the host sent it: code, subcode, machine, message.
        fault: Box<WsmanFault>,
    },
    /// The runspace pool did not open or broke (RUNSPACEPOOL_STATE Broken/Closed): how a
    /// module load failure shows (wire-facts 1.13).
    #[error("the runspace pool is {state}{}", .error.as_ref().map(|e| format!(": {}", e.message)).unwrap_or_default())]
    PoolBroken {
        /// The state reported (`Broken`, `Closed`).
        state: String,
        /// The error record the host sent with it, if any.
        error: Option<Box<ErrorInfo>>,
    },
    /// A reply that is not what the protocol calls for: unparsable XML, a wrong action or
    /// RelatesTo, a PSRP message that does not decode.
    #[error("{operation}: protocol violation: {detail}")]
    Protocol {
        /// The operation.
        operation: String,
        /// What was wrong.
        detail: String,
    },
    /// The run's deadline passed; the run was stopped and cleaned up.
    #[error("the run did not finish within its deadline ({elapsed:?} elapsed)")]
    Timeout {
        /// How long the run had been going.
        elapsed: Duration,
    },
    /// The run was cancelled; it was stopped and cleaned up.
    #[error("the run was cancelled")]
    Cancelled,
    /// The state store could not record a shell the run was about to create or had
    /// created, so the run stopped without using it (a crash would otherwise leave a shell
    /// no record names).
    #[error("stopped: the state store could not record the run's shell ({reason})")]
    NotRecorded {
        /// The store's error.
        reason: String,
    },
}

impl ClientError {
    /// The failure bucket this error points to, for the engine's classifier; `None` for a
    /// local set-up problem that says nothing about the host.
    pub fn bucket(&self) -> Option<Bucket> {
        match self {
            Self::Target(e) => e.bucket(),
            Self::Transport(e) => e.bucket(),
            Self::Fault { fault, .. } => Some(fault_bucket(fault)),
            Self::PoolBroken { .. } => Some(Bucket::ModuleLoadFailure),
            Self::Protocol { .. } => Some(Bucket::ProtocolError),
            Self::Timeout { .. } => Some(Bucket::Timeout),
            // The host did not run the work; a resume runs it again.
            Self::Cancelled | Self::NotRecorded { .. } => Some(Bucket::Interrupted),
        }
    }

    /// The WS-Man fault, if the host sent one.
    pub fn fault(&self) -> Option<&WsmanFault> {
        match self {
            Self::Fault { fault, .. } => Some(fault),
            _ => None,
        }
    }

    /// The error id a report shows: the WS-Man fault code, the HTTP status, or the error
    /// record's FullyQualifiedErrorId.
    pub fn error_id(&self) -> Option<String> {
        match self {
            Self::Fault { fault, .. } => fault.code.map(|c| c.as_u32().to_string()),
            Self::Transport(TransportError::HttpStatus { status, .. }) => {
                Some(format!("HTTP {status}"))
            }
            Self::PoolBroken { error, .. } => {
                error.as_ref().map(|e| e.fully_qualified_error_id.clone())
            }
            _ => None,
        }
    }

    /// A hint for the scheduler: the failure may not recur on another attempt (a cut
    /// connection, a quota fault, an empty 500).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(e) => e.is_transient(),
            Self::Fault { fault, .. } => fault.is_quota(),
            _ => false,
        }
    }
}

/// The bucket of a WS-Man fault (wire-facts 1.1, 1.9, 1.10; section 6).
pub fn fault_bucket(fault: &WsmanFault) -> Bucket {
    if fault.is_access_denied() || fault.message.trim() == "Access is denied." {
        Bucket::AccessDenied
    } else if fault.is_invalid_resource_uri() {
        Bucket::InvalidPsConfiguration
    } else if fault.is_quota() {
        Bucket::QuotaExceeded
    } else {
        Bucket::ServiceError
    }
}

fn fault_code_text(fault: &WsmanFault) -> String {
    fault
        .code
        .map_or_else(|| "(no code)".to_owned(), |c| c.to_string())
}

fn fault_text(fault: &WsmanFault) -> &str {
    let message = fault.message.trim();
    if message.is_empty() {
        fault.reason.trim()
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use psfleet_core::wsman::WsmanFault;

    #[test]
    fn faults_map_to_buckets() {
        let denied = WsmanFault::access_denied("web01");
        assert_eq!(fault_bucket(&denied), Bucket::AccessDenied);
        let config = WsmanFault::invalid_resource_uri(
            "web01",
            "http://schemas.microsoft.com/powershell/Nope",
        );
        assert_eq!(fault_bucket(&config), Bucket::InvalidPsConfiguration);
        let quota = WsmanFault::max_shells_per_user("web01", 5);
        assert_eq!(fault_bucket(&quota), Bucket::QuotaExceeded);
        assert_eq!(
            fault_bucket(&WsmanFault::shell_not_found("web01")),
            Bucket::ServiceError
        );
        let error = ClientError::Fault {
            operation: "Create".into(),
            fault: Box::new(quota),
        };
        assert!(error.is_transient());
        assert_eq!(error.error_id().as_deref(), Some("2150859173"));
        assert!(
            error
                .to_string()
                .starts_with("Create: WS-Man fault 2150859173 (0x803381A5): ")
        );
        assert_eq!(ClientError::Cancelled.bucket(), Some(Bucket::Interrupted));
        assert_eq!(
            ClientError::Timeout {
                elapsed: Duration::from_secs(1)
            }
            .bucket(),
            Some(Bucket::Timeout)
        );
    }
}
