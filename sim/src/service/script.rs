//! The one place the service calls the PowerShell subset: a CREATE_PIPELINE becomes a
//! script invocation and its records become timed PSRP messages; a WinRS command line
//! becomes a cmd run. Runs outside the host lock (see `HostService::handle`).

use std::time::Duration;

use psfleet_core::psrp::messages::{
    Command, CreatePipeline, ErrorRecord, InformationalKind, InformationalRecord, PipelineOutput,
    PipelineStateMessage, PsInvocationState,
};
use psfleet_core::psrp::{Message, Value};
use uuid::Uuid;

use crate::host::HostSpec;
use crate::powershell::{self, EarlierScript, ScriptEnd, ScriptEvent, ScriptInvocation};

/// A pipeline's messages to the client, each with when it becomes ready (relative to the
/// pipeline's start). The last one is the terminal PIPELINE_STATE.
pub(super) struct PlannedPipeline {
    /// Messages in execution order (wire-facts 4.4 step 5: not grouped by stream).
    pub messages: Vec<(Duration, Message)>,
    /// What the pool keeps of this pipeline for the session state of the next ones
    /// (`None`: nothing ran).
    pub session_entry: Option<EarlierScript>,
}

/// A cmd command's result.
pub(super) struct PlannedCmd {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
    pub duration: Duration,
}

/// Runs a pipeline, after the `earlier` pipelines of its pool (the session state), and
/// renders its records as messages for `rpid`/`pid`. `restricted` (a JEA endpoint in
/// no-language mode) refuses script commands as Windows does (FullyQualifiedErrorId
/// `ScriptsNotAllowed`, wire-facts 1.1).
#[allow(clippy::too_many_arguments)] // The pipeline, its pool's state and its ids.
pub(super) fn plan_pipeline(
    host: &HostSpec,
    user: &str,
    create: &CreatePipeline,
    input: &[Value],
    restricted: bool,
    earlier: &[EarlierScript],
    rpid: Uuid,
    pid: Uuid,
) -> PlannedPipeline {
    let statements = statements(create);
    if restricted && statements.iter().flatten().any(|c| c.is_script) {
        let text = statements
            .iter()
            .flatten()
            .find(|c| c.is_script)
            .map(|c| c.command.clone())
            .unwrap_or_default();
        let state = PipelineStateMessage {
            state: PsInvocationState::Failed,
            error: Some(scripts_not_allowed(&text)),
        };
        return PlannedPipeline {
            messages: vec![(Duration::ZERO, state.encode(rpid, pid))],
            session_entry: None,
        };
    }
    let (script, arguments, named) = match invoke_expression(&statements) {
        // The subset has no Invoke-Expression; a script block piped to Out-String -Stream
        // produces the same lines as the text the console would show.
        Some(script) => (
            format!("& {{\n{script}\n}} | Out-String -Stream"),
            Vec::new(),
            Vec::new(),
        ),
        None => invocation_parts(&statements),
    };
    let run = powershell::run_script_in_session(
        earlier,
        &ScriptInvocation {
            script: &script,
            arguments: &arguments,
            named: &named,
            input,
            host,
            user,
        },
    );
    let mut messages = Vec::with_capacity(run.events.len() + 1);
    for timed in run.events {
        let message = match timed.event {
            ScriptEvent::Output(value) => PipelineOutput { value }.encode(rpid, pid),
            ScriptEvent::Error(record) => record.encode(rpid, pid),
            ScriptEvent::Warning(r) => informational(r, InformationalKind::Warning, rpid, pid),
            ScriptEvent::Verbose(r) => informational(r, InformationalKind::Verbose, rpid, pid),
            ScriptEvent::Debug(r) => informational(r, InformationalKind::Debug, rpid, pid),
            ScriptEvent::Information(record) => record.encode(rpid, pid),
            ScriptEvent::Progress(record) => record.encode(rpid, pid),
        };
        messages.push((timed.at, message));
    }
    let (at, state) = match run.end {
        ScriptEnd::Completed { at } => (
            at,
            PipelineStateMessage {
                state: PsInvocationState::Completed,
                error: None,
            },
        ),
        ScriptEnd::Failed { at, error } => (
            at,
            PipelineStateMessage {
                state: PsInvocationState::Failed,
                error: Some(error),
            },
        ),
    };
    messages.push((at, state.encode(rpid, pid)));
    PlannedPipeline {
        messages,
        session_entry: Some(EarlierScript {
            script,
            arguments,
            named,
        }),
    }
}

/// Runs a WinRS command line.
pub(super) fn plan_cmd(
    host: &HostSpec,
    user: &str,
    command: &str,
    arguments: &[String],
    stdin: &[u8],
) -> PlannedCmd {
    let run = powershell::run_cmd(command, arguments, stdin, host, user);
    PlannedCmd {
        stdout: run.stdout,
        stderr: run.stderr,
        exit_code: i64::from(run.exit_code),
        duration: run.duration,
    }
}

/// The statements of a pipeline: `ExtraCmds` when present (every statement), else `Cmds`
/// (MS-PSRP 2.2.3.11).
fn statements(create: &CreatePipeline) -> Vec<Vec<Command>> {
    match &create.pipeline.extra_commands {
        Some(statements) if !statements.is_empty() => statements.clone(),
        _ => vec![create.pipeline.commands.clone()],
    }
}

/// pypsrp's `Client.execute_ps` runs `Invoke-Expression -Command <script> | Out-String
/// -Stream` (after optional `New-Item env:` statements for its environment): the script.
/// The environment statements are not applied (the subset has no New-Item).
fn invoke_expression(statements: &[Vec<Command>]) -> Option<String> {
    let [invoke, out_string] = statements.last()?.as_slice() else {
        return None;
    };
    let is = |c: &Command, name: &str| !c.is_script && c.command.eq_ignore_ascii_case(name);
    if !is(invoke, "Invoke-Expression") || !is(out_string, "Out-String") {
        return None;
    }
    invoke
        .arguments
        .iter()
        .find(|a| {
            a.name
                .as_deref()
                .is_none_or(|n| n.trim_start_matches('-').eq_ignore_ascii_case("Command"))
        })
        .and_then(|a| a.value.as_str())
        .map(str::to_owned)
}

/// The script text and arguments to run. The Invoke-Command shape (one script command)
/// passes its arguments through; anything else (cmdlets with parameters, several commands
/// or statements, as pypsrp's `PowerShell.add_cmdlet` builds) is rendered as script text.
fn invocation_parts(statements: &[Vec<Command>]) -> (String, Vec<Value>, Vec<(String, Value)>) {
    if let [statement] = statements
        && let [command] = statement.as_slice()
        && command.is_script
    {
        let mut positional = Vec::new();
        let mut named = Vec::new();
        for argument in &command.arguments {
            match &argument.name {
                Some(name) => named.push((name.clone(), argument.value.clone())),
                None => positional.push(argument.value.clone()),
            }
        }
        return (command.command.clone(), positional, named);
    }
    let text = statements
        .iter()
        .map(|statement| {
            statement
                .iter()
                .map(render_command)
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    (text, Vec::new(), Vec::new())
}

fn render_command(command: &Command) -> String {
    let mut out = if command.is_script {
        format!("& {{ {} }}", command.command)
    } else {
        command.command.clone()
    };
    for argument in &command.arguments {
        if let Some(name) = &argument.name {
            out.push_str(" -");
            out.push_str(name.trim_start_matches('-'));
            if argument.value.is_nil() {
                continue; // a switch
            }
            out.push(':');
        } else {
            out.push(' ');
        }
        out.push_str(&literal(&argument.value));
    }
    out
}

/// A PowerShell literal for a parameter value.
fn literal(value: &Value) -> String {
    match value.primitive() {
        Value::Nil => "$null".to_owned(),
        Value::Bool(true) => "$true".to_owned(),
        Value::Bool(false) => "$false".to_owned(),
        v @ (Value::I32(_)
        | Value::I64(_)
        | Value::U32(_)
        | Value::U64(_)
        | Value::I16(_)
        | Value::U16(_)
        | Value::U8(_)
        | Value::I8(_)) => v.display_text().into_owned(),
        other => {
            if let Some(items) = other.as_list() {
                let parts: Vec<String> = items.iter().take(1024).map(literal).collect();
                return format!("@({})", parts.join(","));
            }
            format!("'{}'", other.display_text().replace('\'', "''"))
        }
    }
}

fn informational(
    record: InformationalRecord,
    kind: InformationalKind,
    rpid: Uuid,
    pid: Uuid,
) -> Message {
    InformationalRecord {
        kind: Some(kind),
        ..record
    }
    .encode(rpid, pid)
}

/// The terminating error of a script sent to a no-language (JEA) endpoint.
fn scripts_not_allowed(script: &str) -> ErrorRecord {
    let message = "The syntax is not supported by this runspace. This might be because it is in no-language mode.";
    let target: String = script.chars().take(30).collect();
    ErrorRecord {
        fully_qualified_error_id: "ScriptsNotAllowed".to_owned(),
        category: 17, // ParserError
        reason: Some("ParseException".to_owned()),
        target_name: Some(target.clone()),
        target_type: Some("String".to_owned()),
        category_message: Some(format!("ParserError: ({target}:String) [], ParseException")),
        exception_type_names: [
            "System.Management.Automation.ParseException",
            "System.Management.Automation.RuntimeException",
            "System.SystemException",
            "System.Exception",
            "System.Object",
        ]
        .map(str::to_owned)
        .to_vec(),
        exception_message: Some(message.to_owned()),
        target_object: Some(Value::String(script.to_owned())),
        message: message.to_owned(),
        ..ErrorRecord::runtime_exception(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use psfleet_core::psrp::messages::ProtocolVersion;

    #[test]
    fn cmdlets_with_parameters_render_as_script_text() {
        let v = ProtocolVersion::V2_3;
        let statements = vec![
            vec![
                Command::cmdlet("Get-Service", v)
                    .with_parameter("Name", "it's")
                    .with_parameter("Force", Value::Nil),
                Command::cmdlet("Select-Object", v).with_parameter("First", 2i32),
            ],
            vec![Command::script("Write-Output 1", v).with_argument(true)],
        ];
        let (text, args, named) = invocation_parts(&statements);
        assert_eq!(
            text,
            "Get-Service -Name:'it''s' -Force | Select-Object -First:2\n& { Write-Output 1 } $true"
        );
        assert!(args.is_empty() && named.is_empty());
        let single = vec![vec![
            Command::script("param($a) $a", v)
                .with_argument("x")
                .with_parameter("b", 3i32),
        ]];
        let (text, args, named) = invocation_parts(&single);
        assert_eq!(text, "param($a) $a");
        assert_eq!(args, vec![Value::String("x".into())]);
        assert_eq!(named, vec![("b".to_owned(), Value::I32(3))]);
    }

    #[test]
    fn pypsrp_execute_ps_shape_is_recognised() {
        let v = ProtocolVersion::V2_3;
        let statements = vec![
            vec![
                Command::cmdlet("New-Item", v).with_parameter("Path", "env:"),
                Command::cmdlet("Out-Null", v),
            ],
            vec![
                Command::cmdlet("Invoke-Expression", v).with_parameter("Command", "hostname"),
                Command::cmdlet("Out-String", v).with_parameter("Stream", true),
            ],
        ];
        assert_eq!(invoke_expression(&statements).as_deref(), Some("hostname"));
        assert_eq!(invoke_expression(&statements[..1]), None);
    }

    #[test]
    fn pypsrp_execute_ps_output_is_the_console_text() {
        use psfleet_core::psrp::messages::PsrpMessage;
        let v = ProtocolVersion::V2_3;
        let mut host = super::super::tests::host();
        host.data.services = vec![(
            "WinRM".to_owned(),
            "Windows Remote Management (WS-Management)".to_owned(),
            "Running".to_owned(),
        )];
        let create = CreatePipeline::new(vec![
            Command::cmdlet("Invoke-Expression", v)
                .with_parameter("Command", "Write-Warning 'w'\nGet-Service\n'done'"),
            Command::cmdlet("Out-String", v).with_parameter("Stream", true),
        ]);
        let (rpid, pid) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let plan = plan_pipeline(&host, "fleetadmin", &create, &[], false, &[], rpid, pid);
        let mut outputs = Vec::new();
        let mut warnings = Vec::new();
        let mut last = None;
        for (_, message) in &plan.messages {
            match PsrpMessage::decode(message).unwrap() {
                PsrpMessage::PipelineOutput(o) => outputs.push(o.value.display_text().into_owned()),
                PsrpMessage::WarningRecord(w) => warnings.push(w.message),
                PsrpMessage::PipelineState(s) => last = Some(s.state),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(warnings, ["w"]);
        assert_eq!(last, Some(PsInvocationState::Completed));
        assert_eq!(outputs.first().map(String::as_str), Some(""));
        assert!(
            outputs
                .iter()
                .any(|l| l.starts_with("Status") && l.contains("DisplayName"))
        );
        assert!(
            outputs
                .iter()
                .any(|l| l.starts_with("Running") && l.contains("WinRM"))
        );
        assert_eq!(outputs.last().map(String::as_str), Some("done"));
    }
}
