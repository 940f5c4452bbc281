//! psfleet's exit codes (docs/cli.md, "Exit codes") and the error type every command returns.
//!
//! The codes are a stable interface for scripts and CI jobs: a wrapper can tell "some hosts
//! failed" (look at the report) from "the run was interrupted" (resume it) from "the command
//! line or the inventory is wrong" (fix it, nothing ran) from "the state directory cannot be
//! used" (fix it, nothing ran) from "the run went fine but its reports or output could not be
//! written" (the results are in the journal; `psfleet report RUN` writes them again). 1 is
//! deliberately unused so that a 1 always means something outside psfleet (a shell wrapper,
//! a killed process supervisor).

use std::fmt;
use std::io;
use std::path::Path;
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
    /// 5: psfleet itself failed (a bug, a feature not in this build).
    Internal,
    /// 6: the state directory cannot be used (permission denied, not a directory, read-only
    /// or full file system, locked by another psfleet process); nothing was run, or the run
    /// stopped because its journal could not be written.
    State,
    /// 7: the reports or standard output could not be written (a full disk, an I/O error);
    /// the run's results are safe in its journal and `psfleet report RUN` writes them again.
    Output,
}

impl Exit {
    /// Every code, in the documented order.
    pub const ALL: [Exit; 7] = [
        Exit::Success,
        Exit::HostsFailed,
        Exit::Interrupted,
        Exit::Usage,
        Exit::Internal,
        Exit::State,
        Exit::Output,
    ];

    /// The number the process exits with.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::HostsFailed => 2,
            Exit::Interrupted => 3,
            Exit::Usage => 4,
            Exit::Internal => 5,
            Exit::State => 6,
            Exit::Output => 7,
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
            Exit::State => "state",
            Exit::Output => "output",
        }
    }

    /// The worse of two outcomes (interrupted beats failed hosts beats success; errors beat
    /// every outcome: output, then usage, state and internal), for commands made of several
    /// steps.
    pub fn worst(self, other: Exit) -> Exit {
        fn rank(e: Exit) -> u8 {
            match e {
                Exit::Success => 0,
                Exit::HostsFailed => 1,
                Exit::Interrupted => 2,
                Exit::Output => 3,
                Exit::Usage => 4,
                Exit::State => 5,
                Exit::Internal => 6,
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
    /// The state directory cannot be used; the text names it, says why and what to do.
    #[error("{0}")]
    State(String),
    /// Reports or standard output could not be written; the text names the file, says why,
    /// and where the results still are.
    #[error("{0}")]
    Output(String),
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
            CliError::State(_) => Exit::State,
            CliError::Output(_) => Exit::Output,
            CliError::NotAvailable { .. } | CliError::Io { .. } | CliError::Internal(_) => {
                Exit::Internal
            }
        }
    }

    /// The state directory `dir` cannot be used because of `error`: names the directory,
    /// the reason (from the first OS error in `error`'s chain) and what to do about it.
    pub fn state_dir(dir: &Path, error: &(dyn std::error::Error + 'static)) -> Self {
        let advice = match io_kind(error) {
            Some(io::ErrorKind::PermissionDenied) => {
                "psfleet may not write there: make it writable by this user, or give another \
                 --state-dir (or PSFLEET_STATE_DIR)"
            }
            Some(io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists) => {
                "a part of that path is a file, not a directory: give a directory as \
                 --state-dir (or PSFLEET_STATE_DIR)"
            }
            Some(io::ErrorKind::ReadOnlyFilesystem) => {
                "its file system is mounted read-only: give a --state-dir on a writable file \
                 system"
            }
            Some(io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) => {
                "its file system is full: free some space, or give a --state-dir on another \
                 file system"
            }
            _ => {
                "psfleet needs a directory it can create files in: check it, or give another \
                 --state-dir (or PSFLEET_STATE_DIR)"
            }
        };
        CliError::State(format!(
            "the state directory {} cannot be used ({error}); {advice}. Nothing was run.",
            dir.display()
        ))
    }

    /// Writing `what` (a report file, standard output) failed with `error` after the run
    /// `run` was journaled: says that the results are safe and how to get the reports.
    pub fn output(
        what: &str,
        error: &(dyn std::error::Error + 'static),
        run: Option<&str>,
    ) -> Self {
        let reason = match io_kind(error) {
            Some(io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) => {
                " (the disk is full)"
            }
            _ => "",
        };
        let mut text = format!("cannot write {what}: {error}{reason}");
        if let Some(run) = run {
            text.push_str(&format!(
                "; the results of run {run} are safe in its journal: free the space and \
                 `psfleet report {run}` writes the reports again (`psfleet runs` lists it)"
            ));
        }
        CliError::Output(text)
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

/// The kind of the first `io::Error` in `error`'s source chain (the error itself first).
pub fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut current = Some(error);
    // A source chain is a handful of links; the bound guards a cyclic one.
    for _ in 0..32 {
        let e = current?;
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_numbers_and_distinct() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 2, 3, 4, 5, 6, 7]);
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
        assert_eq!(Exit::Interrupted.worst(Exit::Output), Exit::Output);
        assert_eq!(Exit::State.worst(Exit::Output), Exit::State);
    }

    #[test]
    fn state_and_output_errors_name_the_place_and_the_remedy() {
        let dir = Path::new("/srv/psfleet-state");
        let cases = [
            (io::ErrorKind::PermissionDenied, "make it writable"),
            (io::ErrorKind::NotADirectory, "is a file, not a directory"),
            (io::ErrorKind::ReadOnlyFilesystem, "mounted read-only"),
            (io::ErrorKind::StorageFull, "file system is full"),
        ];
        for (kind, advice) in cases {
            let error = CliError::state_dir(dir, &io::Error::from(kind));
            assert_eq!(error.exit(), Exit::State);
            let text = error.to_string();
            assert!(text.contains("/srv/psfleet-state"), "{text}");
            assert!(text.contains(advice), "{kind:?}: {text}");
            assert!(text.ends_with("Nothing was run."), "{text}");
        }
        // The kind is found below wrapping errors.
        #[derive(Debug, thiserror::Error)]
        #[error("open lock: {0}")]
        struct Wrapped(#[source] io::Error);
        let wrapped = Wrapped(io::Error::from(io::ErrorKind::ReadOnlyFilesystem));
        assert_eq!(io_kind(&wrapped), Some(io::ErrorKind::ReadOnlyFilesystem));
        let error = CliError::output(
            "/x/hosts.csv",
            &io::Error::from(io::ErrorKind::StorageFull),
            Some("20261121T101500Z-1a2b"),
        );
        assert_eq!(error.exit(), Exit::Output);
        let text = error.to_string();
        assert!(text.contains("(the disk is full)"), "{text}");
        assert!(
            text.contains("psfleet report 20261121T101500Z-1a2b"),
            "{text}"
        );
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
