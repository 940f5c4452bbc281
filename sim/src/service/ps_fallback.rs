//! A stand-in for `crate::powershell` (written on another branch) with the same interface,
//! so the service and its tests run before that interpreter is merged. It understands one
//! statement per line (or `;`): quoted strings, Write-Output/Error/Warning/Verbose/Debug/
//! Information, Start-Sleep, throw, exit, hostname, `$env:COMPUTERNAME` and `$args[N]`; and
//! for cmd: echo, hostname, `exit /b N`. Everything else fails like an unknown command.

use std::time::Duration;

use psfleet_core::psrp::Value;
use psfleet_core::psrp::clixml::DateTime;
use psfleet_core::psrp::messages::{
    ErrorRecord, InformationRecord, InformationalKind, InformationalRecord, ProgressRecord,
};

use crate::host::HostSpec;

/// What to run.
pub(crate) struct ScriptInvocation<'a> {
    pub script: &'a str,
    pub arguments: &'a [Value],
    pub named: &'a [(String, Value)],
    pub input: &'a [Value],
    pub host: &'a HostSpec,
    pub user: &'a str,
}

/// One record and when the script produced it (from its start).
pub(crate) struct TimedEvent {
    pub at: Duration,
    pub event: ScriptEvent,
}

/// A record on one of the PowerShell streams.
#[allow(dead_code, clippy::large_enum_variant)] // mirrors the interpreter's interface
pub(crate) enum ScriptEvent {
    Output(Value),
    Error(ErrorRecord),
    Warning(InformationalRecord),
    Verbose(InformationalRecord),
    Debug(InformationalRecord),
    Information(InformationRecord),
    Progress(ProgressRecord),
}

/// How the script ended.
#[allow(clippy::large_enum_variant)] // mirrors the interpreter's interface
pub(crate) enum ScriptEnd {
    Completed { at: Duration },
    Failed { at: Duration, error: ErrorRecord },
}

/// A whole run, computed at once; the service releases it by time.
pub(crate) struct ScriptRun {
    pub events: Vec<TimedEvent>,
    pub end: ScriptEnd,
    #[allow(dead_code)] // used by `powershell -Command` in cmd
    pub exit_code: Option<i32>,
}

/// A cmd command's result.
pub(crate) struct CmdRun {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub duration: Duration,
}

/// Runs a script.
pub(crate) fn run_script(invocation: &ScriptInvocation<'_>) -> ScriptRun {
    let host = invocation.host;
    let _ = (invocation.named, invocation.input, invocation.user);
    let mut at = Duration::ZERO;
    let mut events = Vec::new();
    let mut exit_code = None;
    let mut failure = None;
    for statement in invocation
        .script
        .split(['\n', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(10_000)
    {
        let (verb, rest) = statement
            .split_once(char::is_whitespace)
            .map_or((statement, ""), |(v, r)| (v, r.trim()));
        let text = || unquote(rest);
        let event = match verb.to_ascii_lowercase().as_str() {
            "write-output" | "echo" => ScriptEvent::Output(argument_value(rest, invocation)),
            "write-error" => ScriptEvent::Error(ErrorRecord {
                write_error_stream: Some(true),
                ..ErrorRecord::runtime_exception(text())
            }),
            "write-warning" => {
                ScriptEvent::Warning(InformationalRecord::new(InformationalKind::Warning, text()))
            }
            "write-verbose" => {
                ScriptEvent::Verbose(InformationalRecord::new(InformationalKind::Verbose, text()))
            }
            "write-debug" => {
                ScriptEvent::Debug(InformationalRecord::new(InformationalKind::Debug, text()))
            }
            "write-information" => ScriptEvent::Information(InformationRecord::new(
                Value::String(text()),
                "Write-Information",
                DateTime::from_text("2026-01-01T00:00:00+00:00"),
            )),
            "write-progress" => ScriptEvent::Progress(ProgressRecord {
                activity: text(),
                ..ProgressRecord::preparing_modules()
            }),
            "start-sleep" => {
                at += sleep_duration(rest);
                continue;
            }
            "throw" => {
                failure = Some(ErrorRecord::runtime_exception(text()));
                break;
            }
            "exit" => {
                exit_code = Some(rest.parse().unwrap_or(0));
                break;
            }
            "hostname" | "$env:computername" => {
                ScriptEvent::Output(Value::String(host.os.computer_name.clone()))
            }
            _ if statement.starts_with(['\'', '"', '$']) => {
                ScriptEvent::Output(argument_value(statement, invocation))
            }
            _ => {
                failure = Some(ErrorRecord {
                    fully_qualified_error_id: "CommandNotFoundException".to_owned(),
                    ..ErrorRecord::runtime_exception(format!(
                        "The term '{verb}' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
                    ))
                });
                break;
            }
        };
        events.push(TimedEvent { at, event });
    }
    at += host.script.extra_duration;
    if failure.is_none() && host.script.always_fail {
        failure = Some(ErrorRecord::runtime_exception("simulated script failure"));
    }
    let end = match failure {
        Some(error) => ScriptEnd::Failed { at, error },
        None => ScriptEnd::Completed { at },
    };
    ScriptRun {
        events,
        end,
        exit_code,
    }
}

/// Runs a cmd command line.
pub(crate) fn run_cmd(
    command_line: &str,
    arguments: &[String],
    stdin: &[u8],
    host: &HostSpec,
    user: &str,
) -> CmdRun {
    let _ = (stdin, user);
    let mut line = command_line.trim().to_owned();
    for arg in arguments {
        line.push(' ');
        line.push_str(arg);
    }
    let lower = line.to_ascii_lowercase();
    let line = ["cmd.exe /c ", "cmd /c "]
        .iter()
        .find_map(|p| {
            lower
                .starts_with(p)
                .then(|| line[p.len()..].trim().to_owned())
        })
        .unwrap_or(line);
    let mut out = CmdRun {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit_code: 0,
        duration: Duration::from_millis(5),
    };
    for part in line.split('&').map(str::trim).filter(|p| !p.is_empty()) {
        let (verb, rest) = part.split_once(' ').unwrap_or((part, ""));
        match verb.to_ascii_lowercase().as_str() {
            "powershell" | "powershell.exe" => {
                let script = encoded_command(rest).unwrap_or_default();
                let run = run_script(&ScriptInvocation {
                    script: &script,
                    arguments: &[],
                    named: &[],
                    input: &[],
                    host,
                    user,
                });
                for event in run.events {
                    match event.event {
                        ScriptEvent::Output(v) => out
                            .stdout
                            .extend(format!("{}\r\n", v.display_text()).bytes()),
                        ScriptEvent::Error(e) => {
                            out.stderr.extend(format!("{}\r\n", e.message).bytes())
                        }
                        _ => {}
                    }
                }
                if let ScriptEnd::Failed { error, .. } = run.end {
                    out.stderr.extend(format!("{}\r\n", error.message).bytes());
                    out.exit_code = 1;
                }
            }
            "echo" => out.stdout.extend(format!("{rest}\r\n").bytes()),
            "hostname" => out
                .stdout
                .extend(format!("{}\r\n", host.os.computer_name).bytes()),
            "exit" => {
                out.exit_code = rest.trim_start_matches("/b").trim().parse().unwrap_or(0);
                break;
            }
            _ => {
                out.stderr.extend(
                    format!("'{verb}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n")
                        .bytes(),
                );
                out.exit_code = 1;
            }
        }
    }
    out
}

/// The script of `-EncodedCommand <base64 of UTF-16LE>` (pywinrm's `run_ps`).
fn encoded_command(args: &str) -> Option<String> {
    let mut words = args.split_whitespace();
    words.find(|w| w.eq_ignore_ascii_case("-encodedcommand"))?;
    let bytes = base64_decode(words.next()?)?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn unquote(text: &str) -> String {
    let t = text.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = t.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.to_owned();
        }
    }
    t.to_owned()
}

fn argument_value(text: &str, invocation: &ScriptInvocation<'_>) -> Value {
    let t = text.trim();
    if let Some(index) = t
        .strip_prefix("$args[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse::<usize>().ok())
    {
        return invocation
            .arguments
            .get(index)
            .cloned()
            .unwrap_or(Value::Nil);
    }
    if t.eq_ignore_ascii_case("$env:COMPUTERNAME") {
        return Value::String(invocation.host.os.computer_name.clone());
    }
    Value::String(unquote(t))
}

fn sleep_duration(args: &str) -> Duration {
    let mut parts = args.split_whitespace();
    let (unit, value) = match (parts.next(), parts.next()) {
        (Some(flag), Some(v)) if flag.eq_ignore_ascii_case("-milliseconds") => (1, v),
        (Some(flag), Some(v)) if flag.eq_ignore_ascii_case("-seconds") => (1000, v),
        (Some(v), _) => (1000, v),
        _ => (1000, "0"),
    };
    Duration::from_millis(value.parse::<u64>().unwrap_or(0).saturating_mul(unit))
}
