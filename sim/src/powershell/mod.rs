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

/// A script an earlier pipeline of the same runspace pool ran, with its arguments: the
/// session state (variables, functions, `$env:` changes) one pipeline leaves for the next,
/// as `Invoke-Command -Session` and `Enter-PSSession` rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierScript {
    /// The script text.
    pub script: String,
    /// Its positional arguments.
    pub arguments: Vec<Value>,
    /// Its named parameters.
    pub named: Vec<(String, Value)>,
}

/// [`run_script`] in a runspace where `earlier` ran first, in order. The interpreter keeps
/// no state between runs, so the earlier scripts are replayed (deterministic, virtual time)
/// with their records, time and work budget dropped; what they left in the global scope is
/// what the new script sees.
pub fn run_script_in_session(earlier: &[EarlierScript], inv: &ScriptInvocation<'_>) -> ScriptRun {
    run_in_session(earlier, inv).0
}

/// [`run_script`], also returning `$?` after the last statement (powershell.exe's exit code
/// rule).
pub(crate) fn run_with_state(inv: &ScriptInvocation<'_>) -> (ScriptRun, bool) {
    run_in_session(&[], inv)
}

fn run_in_session(earlier: &[EarlierScript], inv: &ScriptInvocation<'_>) -> (ScriptRun, bool) {
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
    for e in earlier {
        engine.replay(&e.script, &e.arguments, &e.named);
    }
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

/// The console text of output values: what `Out-String` makes of them and what
/// powershell.exe prints (strings and numbers as they are, the default table views of
/// services and hot fixes, tables or lists for custom objects; CRLF line endings). For
/// `Client.execute_ps`-style pipelines that end in `Out-String -Stream`.
pub fn out_string(values: &[Value]) -> String {
    text::render(values)
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
    let module = if host.powershell.version.starts_with('5') {
        "Microsoft.PowerShell.Management"
    } else {
        "CimCmdlets"
    };
    let message = format!(
        "One or more errors occurred processing the module '{module}' specified in the InitialSessionState object used to create this runspace. See the ErrorRecords property for a complete list of errors. The first error was: The module '{module}' could not be loaded."
    );
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
#[cfg(test)]
pub(crate) use cmd::CMD_START;
mod cmdlets;
mod eval;
mod lexer;
mod objects;
mod ops;
mod records;
mod syntax;
mod text;
mod values;

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use psfleet_core::psrp::clixml;
    use psfleet_core::psrp::message::Message;
    use psfleet_core::psrp::messages::{InformationalKind, PsrpMessage};
    use psfleet_core::wsman::WinrmConfig;
    use uuid::Uuid;

    use super::*;
    use crate::host::{
        AuthSpec, CertificateKind, Expected, HostData, NetworkSpec, OsInfo, PowerShellInfo,
        ScriptBehaviour,
    };

    pub(crate) fn host() -> HostSpec {
        HostSpec {
            name: "srv0001.fleet.test".into(),
            address: Ipv4Addr::new(127, 0, 0, 11),
            class: "healthy".into(),
            expected: Expected::Succeeded,
            network: NetworkSpec {
                http_port: Some(5985),
                https_port: None,
                certificate: CertificateKind::Valid,
                blackhole: false,
                latency: Duration::ZERO,
                jitter: Duration::ZERO,
                reset_probability: 0.0,
                empty_500_probability: 0.0,
            },
            auth: AuthSpec {
                basic: true,
                negotiate: true,
                kerberos: false,
                credssp: false,
                certificate: false,
                allow_unencrypted: false,
                cbt_hardening: "Relaxed".into(),
            },
            accounts: Vec::new(),
            winrm: WinrmConfig::default(),
            configurations: vec!["Microsoft.PowerShell".into()],
            remoting_enabled: true,
            os: OsInfo {
                caption: "Microsoft Windows Server 2019 Datacenter".into(),
                version: "10.0.17763".into(),
                identify_product_version: "OS: 10.0.17763 SP: 0.0 Stack: 3.0".into(),
                computer_name: "SRV0001".into(),
                last_boot: "2024-05-01T08:00:00Z".into(),
            },
            powershell: PowerShellInfo {
                version: "5.1.17763.1".into(),
                protocol_version: "2.3".into(),
                modules_fail: false,
            },
            script: ScriptBehaviour {
                extra_duration: Duration::ZERO,
                always_fail: false,
            },
            data: HostData {
                services: vec![
                    (
                        "WinRM".into(),
                        "Windows Remote Management (WS-Management)".into(),
                        "Running".into(),
                    ),
                    ("Spooler".into(), "Print Spooler".into(), "Stopped".into()),
                    ("W32Time".into(), "Windows Time".into(), "Running".into()),
                ],
                hotfixes: vec![
                    (
                        "KB5034439".into(),
                        "Security Update".into(),
                        "2024-01-10".into(),
                    ),
                    ("KB5005112".into(), "Update".into(), "2021-08-11".into()),
                ],
                memory_kb: 8_388_608,
            },
        }
    }

    fn run_on(h: &HostSpec, script: &str) -> ScriptRun {
        run_script(&ScriptInvocation {
            script,
            arguments: &[],
            named: &[],
            input: &[],
            host: h,
            user: "WORKGROUP\\admin",
        })
    }

    fn run(script: &str) -> ScriptRun {
        run_on(&host(), script)
    }

    fn outputs(r: &ScriptRun) -> Vec<Value> {
        r.events
            .iter()
            .filter_map(|e| match &e.event {
                ScriptEvent::Output(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    fn texts(r: &ScriptRun) -> Vec<String> {
        outputs(r).iter().map(values::value_to_str).collect()
    }

    fn errors(r: &ScriptRun) -> Vec<&ErrorRecord> {
        r.events
            .iter()
            .filter_map(|e| match &e.event {
                ScriptEvent::Error(x) => Some(x),
                _ => None,
            })
            .collect()
    }

    fn completed(r: &ScriptRun) -> bool {
        matches!(r.end, ScriptEnd::Completed { .. })
    }

    fn failure(r: &ScriptRun) -> &ErrorRecord {
        match &r.end {
            ScriptEnd::Failed { error, .. } => error,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    /// Encodes a record as the service will (a PSRP message) and decodes it back.
    fn over_the_wire(event: &ScriptEvent) -> PsrpMessage {
        let (rpid, pid) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let message = match event {
            ScriptEvent::Output(v) => {
                psfleet_core::psrp::messages::PipelineOutput { value: v.clone() }.encode(rpid, pid)
            }
            ScriptEvent::Error(r) => r.encode(rpid, pid),
            ScriptEvent::Warning(r) | ScriptEvent::Verbose(r) | ScriptEvent::Debug(r) => {
                r.encode(rpid, pid)
            }
            ScriptEvent::Information(r) => r.encode(rpid, pid),
            ScriptEvent::Progress(r) => r.encode(rpid, pid),
        };
        let bytes = message.encode();
        PsrpMessage::decode(&Message::decode(&bytes).unwrap()).unwrap()
    }

    #[test]
    fn hostname_and_environment() {
        let r =
            run("hostname; $env:COMPUTERNAME; $env:USERNAME; whoami; [Environment]::MachineName");
        assert_eq!(
            texts(&r),
            ["SRV0001", "SRV0001", "admin", "srv0001\\admin", "SRV0001"]
        );
        assert!(completed(&r));
        assert_eq!(r.exit_code, None);
    }

    #[test]
    fn streams_in_execution_order_with_recorded_shapes() {
        let r = run(
            "Write-Output 'out'\nWrite-Warning 'warn'\nWrite-Verbose 'hidden'\nWrite-Verbose 'shown' -Verbose\n$DebugPreference = 'Continue'\nWrite-Debug 'dbg'\nWrite-Information 'info' -Tags a,b\nWrite-Host 'host' -ForegroundColor Green\nWrite-Progress -Activity 'Copying' -Status 'Half' -PercentComplete 50\nWrite-Error 'bad'\n'after'",
        );
        let kinds: Vec<String> = r
            .events
            .iter()
            .map(|e| match &e.event {
                ScriptEvent::Output(v) => format!("out:{}", v.display_text()),
                ScriptEvent::Warning(x) => format!("warn:{}", x.message),
                ScriptEvent::Verbose(x) => format!("verbose:{}", x.message),
                ScriptEvent::Debug(x) => format!("debug:{}", x.message),
                ScriptEvent::Information(x) => format!(
                    "info:{}:{}",
                    x.source.as_deref().unwrap_or(""),
                    x.message_text()
                ),
                ScriptEvent::Progress(x) => format!(
                    "progress:{}:{}:{}",
                    x.activity, x.status_description, x.percent_complete
                ),
                ScriptEvent::Error(x) => format!("error:{}", x.message),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "out:out",
                "warn:warn",
                "verbose:shown",
                "debug:dbg",
                "info:Write-Information:info",
                "info:Write-Host:host",
                "progress:Copying:Half:50",
                "error:bad",
                "out:after",
            ]
        );
        // Every event survives encoding as a PSRP message and decoding by core.
        for e in &r.events {
            match (over_the_wire(&e.event), &e.event) {
                (PsrpMessage::PipelineOutput(o), ScriptEvent::Output(v)) => assert_eq!(&o.value, v),
                (PsrpMessage::ErrorRecord(back), ScriptEvent::Error(x)) => {
                    assert_eq!(back.message, x.message);
                    assert_eq!(
                        back.fully_qualified_error_id,
                        "Microsoft.PowerShell.Commands.WriteErrorException"
                    );
                    assert_eq!(back.write_error_stream, Some(true));
                    assert_eq!(
                        back.script_stack_trace.as_deref(),
                        Some("at <ScriptBlock>, <No file>: line 10")
                    );
                }
                (
                    PsrpMessage::WarningRecord(back)
                    | PsrpMessage::VerboseRecord(back)
                    | PsrpMessage::DebugRecord(back),
                    ScriptEvent::Warning(x) | ScriptEvent::Verbose(x) | ScriptEvent::Debug(x),
                ) => {
                    assert_eq!(back.message, x.message);
                    assert_eq!(back.kind, x.kind);
                    assert!(back.invocation.is_some());
                }
                (PsrpMessage::InformationRecord(back), ScriptEvent::Information(x)) => {
                    assert_eq!(back.message_text(), x.message_text());
                    assert_eq!(back.computer.as_deref(), Some("SRV0001"));
                    assert_eq!(back.user.as_deref(), Some("SRV0001\\admin"));
                    if back.source.as_deref() == Some("Write-Host") {
                        assert_eq!(back.tags, ["PSHOST"]);
                        let data = back.message_data.as_object().unwrap();
                        assert!(
                            data.is_type("System.Management.Automation.HostInformationMessage")
                        );
                        assert_eq!(
                            data.property("ForegroundColor").unwrap().display_text(),
                            "Green"
                        );
                    } else {
                        assert_eq!(back.tags, ["a", "b"]);
                    }
                }
                (PsrpMessage::ProgressRecord(back), ScriptEvent::Progress(x)) => {
                    assert_eq!(&back, x)
                }
                (other, e) => panic!("{other:?} for {e:?}"),
            }
        }
        let verbose = r.events.iter().find_map(|e| match &e.event {
            ScriptEvent::Verbose(x) => Some(x),
            _ => None,
        });
        assert_eq!(
            verbose.and_then(|v| v.kind),
            Some(InformationalKind::Verbose)
        );
    }

    #[test]
    fn start_sleep_advances_the_virtual_clock() {
        let mut h = host();
        h.script.extra_duration = Duration::from_millis(250);
        let r = run_on(
            &h,
            "'a'; Start-Sleep -Seconds 2; 'b'; Start-Sleep -Milliseconds 1500; sleep 1; 'c'",
        );
        let at: Vec<Duration> = r.events.iter().map(|e| e.at).collect();
        assert_eq!(
            at,
            [
                Duration::ZERO,
                Duration::from_secs(2),
                Duration::from_millis(4500)
            ]
        );
        assert_eq!(
            r.end,
            ScriptEnd::Completed {
                at: Duration::from_millis(4750)
            }
        );
        // Streaming pipelines keep each item's time.
        let r = run("1..3 | ForEach-Object { Start-Sleep 1; $_ * 10 }");
        let got: Vec<(Duration, String)> = r
            .events
            .iter()
            .map(|e| {
                (
                    e.at,
                    match &e.event {
                        ScriptEvent::Output(v) => v.display_text().into_owned(),
                        _ => String::new(),
                    },
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Duration::from_secs(1), "10".to_owned()),
                (Duration::from_secs(2), "20".to_owned()),
                (Duration::from_secs(3), "30".to_owned())
            ]
        );
        // Invalid values fail the statement as Windows does.
        let r = run("Start-Sleep -Seconds -1; 'next'");
        assert_eq!(texts(&r), ["next"]);
        assert_eq!(
            errors(&r)[0].fully_qualified_error_id,
            "ParameterArgumentValidationError,Microsoft.PowerShell.Commands.StartSleepCommand"
        );
    }

    #[test]
    fn param_block_binds_arguments_and_named_values() {
        let h = host();
        let args = [Value::from("7"), Value::from("x"), Value::from("extra")];
        let named = [("Flag".to_owned(), Value::Bool(true))];
        let r = run_script(&ScriptInvocation {
            script: "param([int]$Count, [string]$Name = 'dflt', [switch]$Flag, $Missing = 'm')\n$Count + 1; $Name; $Flag; $Missing; $args.Count; $args[0]",
            arguments: &args,
            named: &named,
            input: &[],
            host: &h,
            user: "admin",
        });
        assert_eq!(
            outputs(&r),
            // Every parameter of a plain param() block is positional, in order; the switch is
            // not.
            [
                Value::I32(8),
                Value::from("x"),
                Value::Bool(true),
                Value::from("extra"),
                Value::I32(0),
                Value::Nil
            ]
        );
        let r = run_script(&ScriptInvocation {
            script: "param($First, $Second = 'dflt') \"$First/$Second\"; $args",
            arguments: &[Value::from("a")],
            named: &[("Unknown".to_owned(), Value::from("u"))],
            input: &[],
            host: &h,
            user: "admin",
        });
        assert_eq!(outputs(&r), [Value::from("a/dflt"), Value::from("u")]);
        let r = run_script(&ScriptInvocation {
            script: "param([int]$Count) $Count",
            arguments: &[Value::from("abc")],
            named: &[],
            input: &[],
            host: &h,
            user: "admin",
        });
        assert_eq!(outputs(&r), []);
        assert_eq!(
            errors(&r)[0].fully_qualified_error_id,
            "InvalidCastFromStringToInteger"
        );
        let r = run_script(&ScriptInvocation {
            script: "$input | ForEach-Object { $_ * 2 }",
            arguments: &[],
            named: &[],
            input: &[Value::I32(1), Value::I32(2)],
            host: &h,
            user: "admin",
        });
        assert_eq!(outputs(&r), [Value::I32(2), Value::I32(4)]);
    }

    #[test]
    fn get_service_objects_and_filters() {
        let r = run("Get-Service -Name winrm");
        let o = outputs(&r);
        let s = o[0].as_object().unwrap();
        assert_eq!(s.type_names()[0], "System.ServiceProcess.ServiceController");
        assert_eq!(s.to_string.as_deref(), Some("winrm"));
        assert_eq!(s.property("Name").and_then(Value::as_str), Some("winrm"));
        assert_eq!(
            s.property("DisplayName").and_then(Value::as_str),
            Some("Windows Remote Management (WS-Management)")
        );
        assert_eq!(
            s.property("Status").and_then(Value::as_str),
            Some("Running")
        );
        assert_eq!(
            s.property("StartType").and_then(Value::as_str),
            Some("Automatic")
        );

        let names = |script: &str| texts(&run(script));
        assert_eq!(
            names("Get-Service | ForEach-Object { $_.Name }"),
            ["Spooler", "W32Time", "WinRM"]
        );
        assert_eq!(
            names("Get-Service | Where-Object { $_.Status -eq 'Running' } | ForEach-Object Name"),
            ["W32Time", "WinRM"]
        );
        assert_eq!(
            names(
                "Get-Service | Where-Object Status -eq Running | Select-Object -First 1 -ExpandProperty Name"
            ),
            ["W32Time"]
        );
        assert_eq!(
            names("Get-Service | ? { $_.Status -ne 'Running' -or $_.Name -like 'W32*' } | % Name"),
            ["Spooler", "W32Time"]
        );
        assert_eq!(
            names("Get-Service -Name W* | Sort-Object Name -Descending | % { $_.Name }"),
            ["WinRM", "W32Time"]
        );
        assert_eq!(names("(Get-Service | Measure-Object).Count"), ["3"]);
        assert_eq!(
            names("Get-Service | Where-Object DisplayName -match 'time$' | % Name"),
            ["W32Time"]
        );
        assert_eq!(
            names("@(Get-Service | ? Status -eq 'Stopped').Count"),
            ["1"]
        );

        // Select-Object makes Selected.* custom objects whose Status is the real enum.
        let r = run("Get-Service WinRM | Select-Object Name, Status");
        let o = outputs(&r);
        let sel = o[0].as_object().unwrap();
        assert_eq!(
            sel.type_names(),
            [
                "Selected.System.ServiceProcess.ServiceController",
                "System.Management.Automation.PSCustomObject",
                "System.Object"
            ]
        );
        assert_eq!(sel.to_string, None);
        assert_eq!(sel.extended[0].name, "Name");
        let status = sel.property("Status").unwrap();
        assert_eq!(
            status.as_object().unwrap().type_names()[0],
            "System.ServiceProcess.ServiceControllerStatus"
        );
        assert_eq!(status.display_text(), "Running");
        assert_eq!(status.as_i32(), Some(4));

        // A missing service is a non-terminating error; the script goes on.
        let r = run("Get-Service nosuch; 'next'");
        assert_eq!(texts(&r), ["next"]);
        let e = errors(&r)[0];
        assert_eq!(
            e.message,
            "Cannot find any service with service name 'nosuch'."
        );
        assert_eq!(
            e.fully_qualified_error_id,
            "NoServiceFoundForGivenName,Microsoft.PowerShell.Commands.GetServiceCommand"
        );
        assert_eq!(
            e.category_message.as_deref(),
            Some("ObjectNotFound: (nosuch:String) [Get-Service], ServiceCommandException")
        );
        assert!(completed(&r));
    }

    #[test]
    fn hotfixes_os_and_version_table() {
        let r = run(
            "Get-HotFix | % HotFixID; (Get-HotFix -Id KB5005112).Description; Get-HotFix -Id KB1",
        );
        assert_eq!(texts(&r), ["KB5034439", "KB5005112", "Update"]);
        assert_eq!(
            errors(&r)[0].fully_qualified_error_id,
            "GetHotFixNoEntriesFound,Microsoft.PowerShell.Commands.GetHotFixCommand"
        );
        let r = run("Get-HotFix -Id KB5034439");
        let o = outputs(&r);
        let h = o[0].as_object().unwrap();
        assert_eq!(
            h.type_names()[0],
            "System.Management.ManagementObject#root\\cimv2\\Win32_QuickFixEngineering"
        );
        assert_eq!(
            h.property("CSName").and_then(Value::as_str),
            Some("SRV0001")
        );
        assert_eq!(
            h.property("PSComputerName").and_then(Value::as_str),
            Some("SRV0001")
        );
        assert_eq!(
            h.property("InstalledOn")
                .and_then(Value::as_datetime)
                .map(|d| d.as_str()),
            Some("2024-01-10T00:00:00+00:00")
        );

        let r = run("Get-CimInstance Win32_OperatingSystem");
        let o = outputs(&r);
        let os = o[0].as_object().unwrap();
        assert_eq!(
            os.type_names()[0],
            "Microsoft.Management.Infrastructure.CimInstance#root/cimv2/Win32_OperatingSystem"
        );
        let prop = |n: &str| os.property(n).unwrap().clone();
        assert_eq!(
            prop("Caption"),
            Value::from("Microsoft Windows Server 2019 Datacenter")
        );
        assert_eq!(prop("Version"), Value::from("10.0.17763"));
        assert_eq!(prop("BuildNumber"), Value::from("17763"));
        assert_eq!(prop("CSName"), Value::from("SRV0001"));
        assert_eq!(prop("TotalVisibleMemorySize"), Value::U64(8_388_608));
        assert_eq!(
            prop("LastBootUpTime").as_datetime().unwrap().as_str(),
            "2024-05-01T08:00:00+00:00"
        );
        let r = run(
            "(Get-WmiObject -Class Win32_OperatingSystem).LastBootUpTime; (gcim -Query 'SELECT * FROM Win32_OperatingSystem').Caption; Get-CimInstance Win32_Nope",
        );
        assert_eq!(
            texts(&r),
            [
                "20240501080000.000000+000",
                "Microsoft Windows Server 2019 Datacenter"
            ]
        );
        assert_eq!(
            errors(&r)[0].fully_qualified_error_id,
            "HRESULT 0x80041010,Microsoft.Management.Infrastructure.CimCmdlets.GetCimInstanceCommand"
        );

        let r = run(
            "$PSVersionTable; $PSVersionTable.PSVersion.Major; $PSVersionTable.PSVersion.ToString(); $PSVersionTable.BuildVersion",
        );
        let o = outputs(&r);
        let table = o[0].as_object().unwrap();
        assert_eq!(
            table.type_names()[0],
            "System.Management.Automation.PSVersionHashTable"
        );
        assert_eq!(
            table.dict_get("PSEdition").and_then(Value::as_str),
            Some("Desktop")
        );
        assert_eq!(
            table
                .dict_get("PSRemotingProtocolVersion")
                .and_then(Value::as_version)
                .map(|v| v.as_str()),
            Some("2.3")
        );
        assert_eq!(o[1], Value::I32(5));
        assert_eq!(o[2], Value::from("5.1.17763.1"));
        assert_eq!(
            o[3],
            Value::Version(clixml::Version::from_text("10.0.17763.1"))
        );
    }

    #[test]
    fn get_date_is_deterministic() {
        let r = run(
            "Get-Date; Start-Sleep 90; Get-Date -Format 'yyyy-MM-dd HH:mm:ss'; (Get-Date).Year; ((Get-Date) - (Get-CimInstance Win32_OperatingSystem).LastBootUpTime).TotalMinutes",
        );
        let o = outputs(&r);
        let d = o[0].as_object().unwrap();
        assert_eq!(
            d.content,
            clixml::Content::Value(Value::DateTime(clixml::DateTime::from_text(
                "2024-05-02T08:00:00+00:00"
            )))
        );
        assert_eq!(
            d.property("DisplayHint").unwrap().display_text(),
            "DateTime"
        );
        assert_eq!(o[1], Value::from("2024-05-02 08:01:30"));
        assert_eq!(o[2], Value::I32(2024));
        assert_eq!(o[3], Value::Double(clixml::Float::from_f64(1441.5)));
    }

    #[test]
    fn values_operators_and_objects() {
        let t = |s: &str| texts(&run(s));
        assert_eq!(t("$x = 5; $x * 2 + 1"), ["11"]);
        assert_eq!(
            t("7 / 2; 6 / 3; 7 % 3; 2 + '3'; '2' + 3; 'ab' * 3"),
            ["3.5", "2", "1", "5", "23", "ababab"]
        );
        assert_eq!(
            t("$a = 1,2,3; $a.Count; $a[-1]; ($a | Measure-Object -Sum).Sum"),
            ["3", "3", "6"]
        );
        assert_eq!(t("@(1,2,3,4) -gt 2"), ["3", "4"]);
        assert_eq!(
            t("'Hello' -like 'h*'; 'Hello' -clike 'h*'; 'abc' -match 'b(c)'; $Matches[1]"),
            ["True", "False", "True", "c"]
        );
        assert_eq!(
            t("'a,b,c' -split ','; 'x-y' -replace '-', '+'; (1,2) -join ';'"),
            ["a", "b", "c", "x+y", "1;2"]
        );
        assert_eq!(
            t("\"$env:COMPUTERNAME has $(1 + 2) items\""),
            ["SRV0001 has 3 items"]
        );
        assert_eq!(
            t("'{0}:{1:N1}' -f 'v', 2.25; 'abc'.ToUpper(); 'abc'.Length"),
            ["v:2.3", "ABC", "3"]
        );
        assert_eq!(
            t(
                "if (2 -gt 1) { 'yes' } else { 'no' }; foreach ($i in 1..3) { if ($i -eq 2) { continue }; $i }"
            ),
            ["yes", "1", "3"]
        );
        assert_eq!(
            t("function Add($a, $b) { $a + $b }; Add 2 3; Add -b 1 -a 4"),
            ["5", "5"]
        );
        assert_eq!(
            t("$h = @{ b = 2; a = 1 }; $h.a; $h['b']; $h.Count"),
            ["1", "2", "2"]
        );
        let r = run("[pscustomobject]@{ Name = 'n'; Count = 2 }");
        let o = outputs(&r);
        let obj = o[0].as_object().unwrap();
        assert_eq!(
            obj.type_names(),
            [
                "System.Management.Automation.PSCustomObject",
                "System.Object"
            ]
        );
        assert_eq!(
            obj.extended
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["Name", "Count"]
        );
        assert_eq!(obj.property("Count"), Some(&Value::I32(2)));
        let r = run("@{ a = 1 }; ,@(1, 'x'); Measure-Object -InputObject 1");
        let o = outputs(&r);
        assert_eq!(
            o[0].as_object().unwrap().type_names()[0],
            "System.Collections.Hashtable"
        );
        let arr = o[1].as_object().unwrap();
        assert_eq!(arr.type_names()[0], "System.Object[]");
        assert_eq!(arr.list().unwrap(), [Value::I32(1), Value::from("x")]);
        let m = o[2].as_object().unwrap();
        assert_eq!(
            m.type_names()[0],
            "Microsoft.PowerShell.Commands.GenericMeasureInfo"
        );
        assert_eq!(m.property("Count"), Some(&Value::I32(1)));
    }

    #[test]
    fn unknown_command_is_a_real_shaped_error_and_the_script_goes_on() {
        let r = run("Get-Foo -Bar 1\n'next'");
        assert_eq!(texts(&r), ["next"]);
        assert!(completed(&r));
        let e = errors(&r)[0];
        assert_eq!(e.fully_qualified_error_id, "CommandNotFoundException");
        assert_eq!(e.category, 13);
        assert_eq!(e.reason.as_deref(), Some("CommandNotFoundException"));
        assert_eq!(e.target_name.as_deref(), Some("Get-Foo"));
        assert_eq!(e.message, records::command_not_found_message("Get-Foo"));
        assert_eq!(
            e.exception_type_names[0],
            "System.Management.Automation.CommandNotFoundException"
        );
        let info = e.invocation.as_ref().unwrap();
        assert_eq!(
            info.position_message.as_deref(),
            Some("At line:1 char:1\r\n+ Get-Foo -Bar 1\r\n+ ~~~~~~~~~~~~~~")
        );
        let PsrpMessage::ErrorRecord(back) = over_the_wire(&ScriptEvent::Error(e.clone())) else {
            panic!()
        };
        assert_eq!(&back.message, &e.message);
        assert_eq!(
            back.category_message.as_deref(),
            Some("ObjectNotFound: (Get-Foo:String) [], CommandNotFoundException")
        );
        let ex = back.exception_object.as_ref().unwrap().as_object().unwrap();
        assert_eq!(
            ex.property("CommandName").and_then(Value::as_str),
            Some("Get-Foo")
        );

        // With ErrorActionPreference Stop the same error fails the pipeline.
        let r = run("$ErrorActionPreference = 'Stop'\nGet-Foo\n'never'");
        assert_eq!(texts(&r), Vec::<String>::new());
        assert_eq!(
            failure(&r).fully_qualified_error_id,
            "CommandNotFoundException"
        );
        // Wrong parameters are binding errors.
        let r = run("Get-Service -Bogus x");
        assert_eq!(
            errors(&r)[0].message,
            "A parameter cannot be found that matches parameter name 'Bogus'."
        );
        assert_eq!(
            errors(&r)[0].fully_qualified_error_id,
            "NamedParameterNotFound,Microsoft.PowerShell.Commands.GetServiceCommand"
        );
    }

    #[test]
    fn throw_and_error_action_stop_fail_the_pipeline() {
        let r = run("'before'\n  throw \"disk full\"\n'after'");
        assert_eq!(texts(&r), ["before"]);
        let e = failure(&r);
        assert_eq!(e.message, "disk full");
        assert_eq!(e.fully_qualified_error_id, "disk full");
        assert_eq!(
            e.category_message.as_deref(),
            Some("OperationStopped: (disk full:String) [], RuntimeException")
        );
        let info = e.invocation.as_ref().unwrap();
        assert_eq!(
            (info.script_line_number, info.offset_in_line),
            (Some(2), Some(3))
        );
        assert_eq!(
            e.script_stack_trace.as_deref(),
            Some("at <ScriptBlock>, <No file>: line 2")
        );
        assert_eq!(failure(&run("throw")).message, "ScriptHalted");

        let r = run("Write-Error 'soft'; 'kept'; Write-Error 'hard' -ErrorAction Stop; 'lost'");
        assert_eq!(texts(&r), ["kept"]);
        assert_eq!(errors(&r).len(), 1);
        assert_eq!(failure(&r).message, "hard");

        let r = run(
            "try { throw 'boom' } catch { \"caught: $($_.Exception.Message)\" } finally { 'cleanup' }\ntry { Get-Nothing } catch { $_.FullyQualifiedErrorId }\n'end'",
        );
        assert_eq!(
            texts(&r),
            ["caught: boom", "cleanup", "CommandNotFoundException", "end"]
        );
        assert!(completed(&r));
        let r = run("try { 1/0 } catch { throw }");
        assert_eq!(failure(&r).message, "ScriptHalted");
        let r = run("1/0; 'next'");
        assert_eq!(texts(&r), ["next"]);
        assert_eq!(errors(&r)[0].message, "Attempted to divide by zero.");
    }

    #[test]
    fn parse_errors_fail_without_running_anything() {
        let r = run("'first'\nif ($true) {");
        assert!(r.events.is_empty());
        let e = failure(&r);
        assert_eq!(e.fully_qualified_error_id, "MissingEndCurlyBrace");
        assert_eq!(e.category_name(), Some("ParserError"));
        assert_eq!(
            e.message,
            "At line:2 char:12\r\n+ if ($true) {\r\n+            ~\r\nMissing closing '}' in statement block or type definition."
        );
        assert_eq!(
            failure(&run("hostname && whoami")).fully_qualified_error_id,
            "InvalidEndOfLine"
        );
        assert_eq!(
            failure(&run("\"unterminated")).fully_qualified_error_id,
            "TerminatorExpectedAtEndOfString"
        );
    }

    #[test]
    fn exit_codes_always_fail_and_limits() {
        let r = run("'x'; exit 3; 'y'");
        assert_eq!(texts(&r), ["x"]);
        assert!(completed(&r));
        assert_eq!(r.exit_code, Some(3));

        let mut h = host();
        h.script.always_fail = true;
        h.script.extra_duration = Duration::from_secs(2);
        let r = run_on(&h, "'x'");
        assert_eq!(texts(&r), ["x"]);
        let ScriptEnd::Failed { at, error } = &r.end else {
            panic!()
        };
        assert_eq!(*at, Duration::from_secs(2));
        assert_eq!(error.reason.as_deref(), Some("RuntimeException"));
        assert!(error.message.contains("SRV0001"));

        let r = run("while ($true) { }");
        assert_eq!(
            failure(&r).fully_qualified_error_id,
            "SimulatorLimitExceeded"
        );
        let r = run("try { 1..100000000 } catch { 'caught' }");
        assert_eq!(
            failure(&r).fully_qualified_error_id,
            "SimulatorLimitExceeded"
        );
        let r = run("$s = 'x'; while ($true) { $s += $s }");
        assert_eq!(
            failure(&r).fully_qualified_error_id,
            "SimulatorLimitExceeded"
        );
        // Deep recursion stops at the call-depth limit without exhausting the stack.
        let r = run("function f($n) { f ($n + 1) }; f 0");
        assert_eq!(
            failure(&r).fully_qualified_error_id,
            "SimulatorLimitExceeded"
        );
        let deep = format!("{}1{}", "(".repeat(45), ")".repeat(45));
        assert_eq!(texts(&run(&deep)), ["1"]);
        let nested = format!(
            "function f($n) {{ {}f ($n + 1){} }}; f 0",
            "(".repeat(45),
            ")".repeat(45)
        );
        assert_eq!(
            failure(&run(&nested)).fully_qualified_error_id,
            "SimulatorLimitExceeded"
        );
        // Bulk operations count their size: a large array compared in a loop runs out.
        let r = run("$a = 1..400000; while ($true) { $null = $a -contains 0 }");
        assert_eq!(
            failure(&r).fully_qualified_error_id,
            "SimulatorLimitExceeded"
        );
        // Results are bounded before they are built.
        let r = run("$s = 'a' * 500000; $s -replace 'a', 'bbbbbbbbbb'");
        assert_eq!(
            failure(&r).fully_qualified_error_id,
            "SimulatorLimitExceeded"
        );
        let r = run("$s = 'a' * 3000000; ($s, $s) -join ','");
        assert_eq!(
            failure(&r).fully_qualified_error_id,
            "SimulatorLimitExceeded"
        );
        let r = run("[int[][][][][][][][][][]]1");
        assert_eq!(errors(&r)[0].fully_qualified_error_id, "TypeNotFound");
        assert_eq!(
            texts(&run("3,1,3,2,1 | Select-Object -Unique")),
            ["3", "1", "2"]
        );
    }

    #[test]
    fn module_failure_record_and_version_table() {
        let r = module_load_failure(&host());
        assert_eq!(
            r.fully_qualified_error_id,
            "ErrorLoadingModulesOnRunspaceOpen"
        );
        assert_eq!(
            r.exception_type_names[0],
            "System.Management.Automation.Runspaces.RunspaceOpenModuleLoadException"
        );
        let back = ErrorRecord::from_clixml(
            &clixml::from_bytes(&clixml::to_bytes(&r.to_clixml())).unwrap(),
        )
        .unwrap();
        assert_eq!(back.message, r.message);
        let t = version_table(&host());
        assert_eq!(t.ps_version.unwrap().as_str(), "5.1.17763.1");
        assert_eq!(t.build_version.unwrap().as_str(), "10.0.17763.1");
    }

    fn cmd(line: &str) -> CmdRun {
        run_cmd(line, &[], &[], &host(), "admin")
    }

    fn utf16_b64(s: &str) -> String {
        use base64::Engine as _;
        let bytes: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn cmd_commands() {
        let r = run_cmd(
            "cmd.exe",
            &["/c".into(), "echo".into(), "hi".into()],
            &[],
            &host(),
            "admin",
        );
        assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"hi\r\n"[..], 0));
        assert_eq!(cmd("hostname").stdout, b"SRV0001\r\n");
        assert_eq!(cmd("whoami").stdout, b"srv0001\\admin\r\n");
        assert_eq!(
            cmd("echo %COMPUTERNAME% & echo.").stdout,
            b"SRV0001 \r\n\r\n"
        );
        let ip = String::from_utf8(cmd("ipconfig").stdout).unwrap();
        assert!(
            ip.contains("   IPv4 Address. . . . . . . . . . . : 127.0.0.11\r\n"),
            "{ip}"
        );
        assert!(ip.contains("Connection-specific DNS Suffix  . : fleet.test\r\n"));
        assert_eq!(cmd("exit /b 3").exit_code, 3);
        assert_eq!(cmd("cmd /c exit /b 4").exit_code, 4);
        let r = cmd("nosuch arg");
        assert_eq!(r.exit_code, 1);
        assert_eq!(
            r.stderr,
            b"'nosuch' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
        );
        assert_eq!(cmd("nosuch & echo %ERRORLEVEL%").stdout, b"9009\r\n");
        assert_eq!(cmd("nosuch || echo fallback").stdout, b"fallback\r\n");
        assert_eq!(cmd("echo a && exit /b 2 && echo b").stdout, b"a \r\n");
        assert!(
            String::from_utf8(cmd("set USER").stdout)
                .unwrap()
                .contains("USERNAME=admin\r\n")
        );
    }

    #[test]
    fn powershell_from_cmd() {
        // pywinrm run_ps: powershell -encodedcommand <UTF-16LE base64>.
        let r = cmd(&format!(
            "powershell -encodedcommand {}",
            utf16_b64("hostname; Write-Host 'hi' ; Get-Service WinRM")
        ));
        let out = String::from_utf8(r.stdout).unwrap();
        assert_eq!(
            out,
            "SRV0001\r\nhi\n\r\nStatus   Name               DisplayName\r\n------   ----               -----------\r\nRunning  WinRM              Windows Remote Management (WS-Manag...\r\n\r\n\r\n"
        );
        assert_eq!(r.exit_code, 0);
        assert!(r.stderr.is_empty());

        // Errors under -EncodedCommand come back as CLIXML on stderr; the exit code is 1.
        let r = cmd(&format!(
            "powershell.exe -NoProfile -NonInteractive -EncodedCommand {}",
            utf16_b64("throw 'boom'")
        ));
        assert_eq!(r.exit_code, 1);
        let err = String::from_utf8(r.stderr).unwrap();
        assert!(
            err.starts_with("#< CLIXML\r\n<Objs Version=\"1.1.0.1\""),
            "{err}"
        );
        let doc =
            clixml::from_objs_document(err.trim_start_matches("#< CLIXML\r\n").as_bytes()).unwrap();
        let lines: Vec<String> = doc.iter().map(|v| v.display_text().into_owned()).collect();
        assert_eq!(
            lines,
            [
                "boom\r\n",
                "At line:1 char:1\r\n",
                "+ throw 'boom'\r\n",
                "+ ~~~~~~~~~~~~\r\n",
                "    + CategoryInfo          : OperationStopped: (boom:String) [], RuntimeException\r\n",
                "    + FullyQualifiedErrorId : boom\r\n",
                " \r\n"
            ]
        );

        // -Command: errors as console text; $? of the last statement decides the exit code.
        let r = cmd("powershell -Command \"Get-Foo\"");
        assert_eq!(r.exit_code, 1);
        let err = String::from_utf8(r.stderr).unwrap();
        assert!(
            err.starts_with("Get-Foo : The term 'Get-Foo' is not recognized"),
            "{err}"
        );
        assert!(err.contains("    + FullyQualifiedErrorId : CommandNotFoundException\r\n \r\n"));
        let r = cmd("powershell -Command \"Get-Foo; 'ok'\"");
        assert_eq!((r.exit_code, r.stdout.as_slice()), (0, &b"ok\r\n"[..]));
        assert_eq!(cmd("powershell -c exit 7").exit_code, 7);
        // R:test_winrs_no_cmd_shell: positional arguments are the command; Write-Host ends
        // with LF.
        let r = run_cmd(
            "powershell.exe",
            &["Write-Host".into(), "hi".into()],
            &[],
            &host(),
            "admin",
        );
        assert_eq!(r.stdout, b"hi\n");
        // R:test_winrs_send: `powershell.exe -` reads the script from stdin.
        let r = run_cmd(
            "powershell.exe",
            &["-".into()],
            b"Write-Host \"output 1\";\nWrite-Host \"output 2\";\n",
            &host(),
            "admin",
        );
        assert_eq!(r.stdout, b"output 1\noutput 2\n");
        // Sleeps inside powershell make the command take that long.
        let r = cmd("powershell -Command Start-Sleep 5");
        assert_eq!(r.duration, Duration::from_secs(5) + cmd::CMD_START);
        assert_eq!(cmd("echo hi").duration, cmd::CMD_START);
    }
}
