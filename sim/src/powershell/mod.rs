//! The simulated hosts' script engines: a small deterministic PowerShell subset (run by PSRP
//! pipelines and by `powershell.exe` inside the WinRS cmd shell) and the cmd.exe command set
//! of the WinRS shell (issue 3 item 4; the subset is documented in
//! `docs/simulator-powershell.md`).
//!
//! Everything here is pure: no clock, no randomness, no I/O. Time is virtual: `Start-Sleep`
//! advances the offset stamped on the events that follow, and the caller (the WS-Man service)
//! releases each event when its offset has passed. The same script on the same [`HostSpec`]
//! always produces the same run.

use std::time::Duration;

use psfleet_core::psrp::clixml::Value;
use psfleet_core::psrp::messages::{
    ErrorRecord, InformationRecord, InformationalRecord, ProgressRecord,
};

use crate::host::HostSpec;

/// One script to run: what an Invoke-Command `-ScriptBlock` with `-ArgumentList` becomes on
/// the server (a CREATE_PIPELINE whose single command is the script, MS-PSRP 2.2.2.10).
#[derive(Debug, Clone, Copy)]
pub struct ScriptInvocation<'a> {
    /// The script text.
    pub script: &'a str,
    /// Positional `-ArgumentList` values, bound to `param()` in order (the rest go to
    /// `$args`).
    pub arguments: &'a [Value],
    /// Named parameters, bound to `param()` by name (case-insensitive).
    pub named: &'a [(String, Value)],
    /// Pipeline input (`$input`), usually empty.
    pub input: &'a [Value],
    /// The host the script runs on.
    pub host: &'a HostSpec,
    /// The account the pipeline runs as (`$env:USERNAME`, `whoami`, InformationRecord
    /// `User`); a `DOMAIN\` prefix is dropped.
    pub user: &'a str,
}

/// What a script did, in order, with virtual timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRun {
    /// Stream records and output objects in execution order (wire-facts 4.4 step 5: the
    /// server emits streams in execution order, not grouped).
    pub events: Vec<TimedEvent>,
    /// How the pipeline ended.
    pub end: ScriptEnd,
    /// The code given to `exit N` (`None` when the script did not call `exit`).
    pub exit_code: Option<i32>,
}

/// One event and when it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedEvent {
    /// Offset from the start of the pipeline (advanced by `Start-Sleep`).
    pub at: Duration,
    /// The event.
    pub event: ScriptEvent,
}

/// One thing a pipeline sends to the client (one PSRP message each).
// The records are kept unboxed so that callers can match and build them directly; a run
// holds few events and each becomes a whole PSRP message anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptEvent {
    /// PIPELINE_OUTPUT: an output object.
    Output(Value),
    /// ERROR_RECORD: a non-terminating error.
    Error(ErrorRecord),
    /// WARNING_RECORD.
    Warning(InformationalRecord),
    /// VERBOSE_RECORD.
    Verbose(InformationalRecord),
    /// DEBUG_RECORD.
    Debug(InformationalRecord),
    /// INFORMATION_RECORD (Write-Information and Write-Host).
    Information(InformationRecord),
    /// PROGRESS_RECORD.
    Progress(ProgressRecord),
}

/// How a pipeline ended (the PIPELINE_STATE message, MS-PSRP 2.2.2.21).
#[allow(clippy::large_enum_variant)] // one per run, see ScriptEvent
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptEnd {
    /// PipelineState Completed (4); also after `exit N`.
    Completed {
        /// When (offset from start, `HostSpec.script.extra_duration` included).
        at: Duration,
    },
    /// PipelineState Failed (5) with `ExceptionAsErrorRecord` (wire-facts 1.13).
    Failed {
        /// When (offset from start, `HostSpec.script.extra_duration` included).
        at: Duration,
        /// The terminating error.
        error: ErrorRecord,
    },
}

impl ScriptEnd {
    /// The offset at which the pipeline ends.
    pub fn at(&self) -> Duration {
        match self {
            Self::Completed { at } | Self::Failed { at, .. } => *at,
        }
    }
}

/// Runs a script of the PowerShell subset on a host.
pub fn run_script(inv: &ScriptInvocation<'_>) -> ScriptRun {
    let _ = inv;
    ScriptRun {
        events: Vec::new(),
        end: ScriptEnd::Completed {
            at: inv.host.script.extra_duration,
        },
        exit_code: None,
    }
}

/// What a WinRS command produced (the Receive streams and the CommandState ExitCode,
/// wire-facts 2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdRun {
    /// stdout bytes (CRLF line endings).
    pub stdout: Vec<u8>,
    /// stderr bytes (CRLF line endings).
    pub stderr: Vec<u8>,
    /// The process exit code.
    pub exit_code: i32,
    /// How long the command runs (virtual; `Start-Sleep` inside `powershell` included).
    pub duration: Duration,
}

/// Runs a WinRS command (`rsp:Command` and its `rsp:Arguments`, joined as cmd.exe joins
/// them because the shell runs with `WINRS_SKIP_CMD_SHELL` false) as `user` on a host.
pub fn run_cmd(
    command_line: &str,
    arguments: &[String],
    stdin: &[u8],
    host: &HostSpec,
    user: &str,
) -> CmdRun {
    let _ = (command_line, arguments, stdin, user);
    CmdRun {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit_code: 0,
        duration: host.script.extra_duration,
    }
}

mod lexer;
mod syntax;
