//! psfleet's exit codes (docs/cli.md, "Exit codes") and the error type every command returns.
//!
//! The codes are a stable interface for scripts and CI jobs: a wrapper can tell "some hosts
//! failed" (look at the report) from "the run was interrupted" (resume it) from "the command
//! line or the inventory is wrong" (fix it, nothing ran). 1 is deliberately unused so that a
//! 1 always means something outside psfleet (a shell wrapper, a killed process supervisor).

use std::fmt;
use std::process::ExitCode;

/// What the process exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// 0: every host succeeded (or the command had no hosts and did what it was asked).
    Success,
    /// 2: the run finished, and at least one host failed (its bucket says why).
    HostsFailed,
    /// 3: the run was interrupted (Ctrl-C, or a resume found hosts interrupted); it can be
    /// continued with `--resume`.
    Interrupted,
    /// 4: the command line, the configuration, the credentials or the inventory are wrong;
    /// nothing was run.
    Usage,
    /// 5: psfleet itself failed (a bug, an I/O error on the state directory, a feature not in
    /// this build).
    Internal,
}

impl Exit {
    /// Every code, in the documented order.
    pub const ALL: [Exit; 5] = [
        Exit::Success,
        Exit::HostsFailed,
        Exit::Interrupted,
        Exit::Usage,
        Exit::Internal,
    ];

    /// The number the process exits with.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::HostsFailed => 2,
            Exit::Interrupted => 3,
            Exit::Usage => 4,
            Exit::Internal => 5,
        }
    }

    /// The documented name (docs/cli.md).
    pub const fn name(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::HostsFailed => "hosts-failed",
            Exit::Interrupted => "interrupted",
            Exit::Usage => "usage",
            Exit::Internal => "internal",
        }
    }

    /// The worse of two outcomes (interrupted beats failed hosts beats success; errors beat
    /// everything), for commands made of several steps.
    pub fn worst(self, other: Exit) -> Exit {
        fn rank(e: Exit) -> u8 {
            match e {
                Exit::Success => 0,
                Exit::HostsFailed => 1,
                Exit::Interrupted => 2,
                Exit::Usage => 3,
                Exit::Internal => 4,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

/// Why a command could not do its work. Each variant maps to one exit code
/// ([`CliError::exit`]); the `Display` text is what the user reads on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line, an environment variable or the configuration is wrong.
    #[error("{0}")]
    Usage(String),
    /// The configuration file is wrong (file, line and key are in the text).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The password could not be obtained.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
    /// The inventory could not be read.
    #[error("{0}")]
    Inventory(String),
    /// The command exists, but the engine pieces it needs are not in this build yet.
    #[error(
        "`psfleet {command}` is not available in this build yet: it needs {missing}, which \
         this build does not wire in (see docs/cli.md, \"Availability\")"
    )]
    NotAvailable {
        /// The command.
        command: &'static str,
        /// What is missing.
        missing: &'static str,
    },
    /// Reading or writing a local file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else psfleet itself got wrong.
    #[error("{0}")]
    Internal(String),
}

impl CliError {
    /// The exit code this error ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_)
            | CliError::Config(_)
            | CliError::Credentials(_)
            | CliError::Inventory(_) => Exit::Usage,
            CliError::NotAvailable { .. } | CliError::Io { .. } | CliError::Internal(_) => {
                Exit::Internal
            }
        }
    }

    /// A usage error with `message`.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_numbers_and_distinct() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 2, 3, 4, 5]);
        let docs = include_str!("../../docs/cli.md");
        for exit in Exit::ALL {
            let row = format!("| {} | `{}` |", exit.code(), exit.name());
            assert!(docs.contains(&row), "docs/cli.md lacks the row {row:?}");
        }
    }

    #[test]
    fn worst_orders_outcomes() {
        assert_eq!(Exit::Success.worst(Exit::HostsFailed), Exit::HostsFailed);
        assert_eq!(
            Exit::Interrupted.worst(Exit::HostsFailed),
            Exit::Interrupted
        );
        assert_eq!(Exit::Usage.worst(Exit::Success), Exit::Usage);
        assert_eq!(Exit::Interrupted.worst(Exit::Internal), Exit::Internal);
    }

    #[test]
    fn errors_map_to_their_codes() {
        assert_eq!(CliError::usage("x").exit(), Exit::Usage);
        assert_eq!(CliError::Inventory("x".into()).exit(), Exit::Usage);
        let na = CliError::NotAvailable {
            command: "run",
            missing: "the WinRM client",
        };
        assert_eq!(na.exit(), Exit::Internal);
        assert!(na.to_string().contains("not available in this build yet"));
    }
}
