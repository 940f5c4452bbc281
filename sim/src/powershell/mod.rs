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

use psfleet_core::psrp::clixml::{Property, Value};
use psfleet_core::psrp::messages::{
    ErrorRecord, InformationRecord, InformationalRecord, ProgressRecord, PsVersionTable,
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
///
/// A script that does not parse ends `Failed` with a `ParseException` record and no events;
/// `HostSpec.script.extra_duration` is added to the end; `HostSpec.script.always_fail` turns
/// a completed run into a failed one (a thrown error, as `throw` makes).
pub fn run_script(inv: &ScriptInvocation<'_>) -> ScriptRun {
    run_with_state(inv).0
}

/// [`run_script`], also returning `$?` after the last statement (powershell.exe's exit code
/// rule).
pub(crate) fn run_with_state(inv: &ScriptInvocation<'_>) -> (ScriptRun, bool) {
    let extra = inv.host.script.extra_duration;
    let block = match syntax::parse_script(inv.script) {
        Ok(b) => b,
        Err(e) => {
            let run = ScriptRun {
                events: Vec::new(),
                end: ScriptEnd::Failed {
                    at: extra,
                    error: records::parse_error(inv.script, &e),
                },
                exit_code: None,
            };
            return (run, false);
        }
    };
    let mut engine = eval::Engine::new(inv.host, inv.user, inv.script);
    engine.set_var(
        "input",
        values::Val::Array(inv.input.iter().cloned().map(values::Val::V).collect()),
    );
    let positional = inv.arguments.iter().cloned().map(values::Val::V).collect();
    let named = inv
        .named
        .iter()
        .map(|(n, v)| (n.clone(), values::Val::V(v.clone())))
        .collect();
    let result = engine
        .bind_params(&block, positional, named)
        .and_then(|()| engine.exec_all(&block.body));
    let at = engine.clock + extra;
    let (mut end, exit_code) = match result {
        Ok(())
        | Err(eval::Flow::Abort | eval::Flow::Return | eval::Flow::Break | eval::Flow::Continue) => {
            (ScriptEnd::Completed { at }, None)
        }
        Err(eval::Flow::Exit(code)) => (ScriptEnd::Completed { at }, Some(code)),
        Err(eval::Flow::Throw(error) | eval::Flow::Limit(error)) => {
            (ScriptEnd::Failed { at, error: *error }, None)
        }
    };
    if inv.host.script.always_fail && matches!(end, ScriptEnd::Completed { .. }) {
        end = ScriptEnd::Failed {
            at,
            error: always_fail_record(inv.script, &engine.facts.computer),
        };
    }
    let last_ok = engine.last_ok && matches!(end, ScriptEnd::Completed { .. });
    let run = ScriptRun {
        events: engine.events,
        end,
        exit_code,
    };
    (run, last_ok)
}

/// The error a host with `always_fail` ends every script with: a thrown error at the end
/// of the script.
fn always_fail_record(script: &str, computer: &str) -> ErrorRecord {
    let end = script.len();
    records::thrown(
        Some(format!(
            "The script failed on {computer}: this simulated host fails every script."
        )),
        None,
        records::Site {
            script,
            start: end,
            end,
        },
    )
}

/// The host's `$PSVersionTable`, for the APPLICATION_PRIVATE_DATA the server sends when a
/// runspace pool opens (wire-facts 4.4 step 3).
pub fn version_table(host: &HostSpec) -> PsVersionTable {
    objects::version_table(host)
}

/// The error a runspace pool reports when its builtin modules fail to load
/// (`HostSpec.powershell.modules_fail`): `RunspaceOpenModuleLoadException`, id
/// `ErrorLoadingModulesOnRunspaceOpen` (wire-facts 1.13), for RUNSPACEPOOL_STATE Broken.
pub fn module_load_failure(host: &HostSpec) -> ErrorRecord {
    let _ = host;
    let message = "One or more errors occurred processing the module 'Microsoft.PowerShell.Management' specified in the InitialSessionState object used to create this runspace. See the ErrorRecords property for a complete list of errors. The first error was: The 'Get-Service' command was found in the module 'Microsoft.PowerShell.Management', but the module could not be loaded.".to_owned();
    let mut record = records::error_at(
        records::ErrorSpec {
            exception_extra: vec![
                Property::new("ErrorRecord", message.as_str()),
                Property::new("WasThrownFromThrowStatement", false),
            ],
            fqid: "ErrorLoadingModulesOnRunspaceOpen".to_owned(),
            category: 1,
            activity: "",
            exception_types: &[
                "System.Management.Automation.Runspaces.RunspaceOpenModuleLoadException",
                "System.Management.Automation.RuntimeException",
                "System.SystemException",
                "System.Exception",
                "System.Object",
            ],
            target_name: String::new(),
            target_type: "",
            target_object: Value::Nil,
            message,
        },
        records::Site {
            script: "",
            start: 0,
            end: 0,
        },
    );
    record.invocation = None;
    record.script_stack_trace = None;
    record
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
    cmd::run_cmd(command_line, arguments, stdin, host, user)
}

mod cmd;
mod cmdlets;
mod eval;
mod lexer;
mod objects;
mod ops;
mod records;
mod syntax;
mod text;
mod values;
