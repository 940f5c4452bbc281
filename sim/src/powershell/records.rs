//! The error and stream records the subset produces, shaped as Windows PowerShell 5.1 sends
//! them. Shapes are taken from recorded Windows traffic:
//!
//! - `throw`: R:test_client_copy_file_failure and R:test_client_fetch_file_fail_missing
//!   (`RuntimeException`, `WasThrownFromThrowStatement`, the message as
//!   FullyQualifiedErrorId, InvocationInfo with the script position, HistoryId -1);
//! - `Write-Error` and the informational records: R:test_psrp_stream_output_invocation;
//! - command not found: R:test_client_execute_ps_failure (there through Invoke-Expression;
//!   a script run directly has no activity and the id without the command suffix);
//! - parse errors: PowerShell's `ParseException` (error ids from the parser).

use psfleet_core::psrp::clixml::{self, Content, Property, PsObject, Value};
use psfleet_core::psrp::messages::{
    CommandOrigin, ErrorRecord, InformationRecord, InformationalKind, InformationalRecord,
    InvocationInfo,
};

use super::syntax::ParseError;

/// `HResult` of `System.Exception` subclasses that do not set their own (COR_E_EXCEPTION
/// family, as recorded).
const HRESULT_RUNTIME: i32 = -2_146_233_087;

const RUNTIME_EXCEPTION: [&str; 4] = [
    "System.Management.Automation.RuntimeException",
    "System.SystemException",
    "System.Exception",
    "System.Object",
];

/// Where in the script a record points: the script text and a byte range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Site<'a> {
    pub script: &'a str,
    pub start: usize,
    pub end: usize,
}

/// Line (1-based), column (1-based), the line's text (with its line break) and the
/// PowerShell `PositionMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub line: i32,
    pub column: i32,
    pub line_text: String,
    pub message: String,
}

/// Longest source line a position message shows whole; longer lines are cut to
/// [`SHOWN_LINE`] characters and ` ...` (R:test_client_copy_file_failure shows 69 of 92).
const MAX_SHOWN_LINE: usize = 75;
const SHOWN_LINE: usize = 69;

impl Site<'_> {
    pub(crate) fn position(&self) -> Position {
        let start = self.start.min(self.script.len());
        let before = self.script.get(..start).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_no = before.matches('\n').count() + 1;
        let rest = self.script.get(line_start..).unwrap_or("");
        let line_end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let line_text = rest.get(..line_end).unwrap_or("").to_owned();
        let shown_full = line_text.trim_end_matches(['\n', '\r']);
        let column = self
            .script
            .get(line_start..start)
            .map_or(0, |s| s.chars().count());
        let extent_end = self.end.clamp(start, line_start + shown_full.len());
        let width = self
            .script
            .get(start..extent_end)
            .map_or(0, |s| s.chars().count())
            .max(1);
        let (shown, width) = if shown_full.chars().count() > MAX_SHOWN_LINE {
            let cut: String = shown_full.chars().take(SHOWN_LINE).collect();
            (
                format!("{cut} ..."),
                width.min(SHOWN_LINE.saturating_sub(column)).max(1),
            )
        } else {
            (shown_full.to_owned(), width)
        };
        let message = format!(
            "At line:{line_no} char:{}\r\n+ {shown}\r\n+ {}{}",
            column + 1,
            " ".repeat(column),
            "~".repeat(width)
        );
        Position {
            line: i32::try_from(line_no).unwrap_or(i32::MAX),
            column: i32::try_from(column + 1).unwrap_or(i32::MAX),
            line_text,
            message,
        }
    }

    /// The InvocationInfo of an error raised by the script itself at this site.
    fn invocation(&self) -> InvocationInfo {
        let pos = self.position();
        InvocationInfo {
            script_line_number: Some(pos.line),
            offset_in_line: Some(pos.column),
            position_message: Some(pos.message),
            line: Some(pos.line_text),
            script_name: Some(String::new()),
            invocation_name: Some(String::new()),
            history_id: Some(-1),
            pipeline_length: Some(0),
            pipeline_position: Some(0),
            command_origin: Some(CommandOrigin::Internal),
            expecting_input: Some(false),
            ps_script_root: Some(String::new()),
            ..InvocationInfo::default()
        }
    }

    fn stack_trace(&self) -> String {
        format!("at <ScriptBlock>, <No file>: line {}", self.position().line)
    }
}

/// PowerShell's `ErrorCategoryInfo` target text: names over 40 characters keep their first
/// and last 15 around `...` (R:test_client_copy_file_failure).
pub(crate) fn ellipsize(s: &str) -> String {
    let n = s.chars().count();
    if n <= 40 {
        return s.to_owned();
    }
    let head: String = s.chars().take(15).collect();
    let tail: String = s.chars().skip(n - 15).collect();
    format!("{head}...{tail}")
}

fn category_name(category: i32) -> &'static str {
    usize::try_from(category)
        .ok()
        .and_then(|i| {
            psfleet_core::psrp::messages::ERROR_CATEGORY_NAMES
                .get(i)
                .copied()
        })
        .unwrap_or("NotSpecified")
}

/// The parts of an error record that differ between kinds.
pub(crate) struct ErrorSpec<'a> {
    pub message: String,
    pub fqid: String,
    pub category: i32,
    pub activity: &'a str,
    pub exception_types: &'a [&'a str],
    /// Extra exception properties written before `Message` (`ErrorRecord`,
    /// `WasThrownFromThrowStatement`, `CommandName`...).
    pub exception_extra: Vec<Property>,
    pub target_name: String,
    pub target_type: &'a str,
    pub target_object: Value,
}

/// Builds a record raised at `site`.
pub(crate) fn error_at(spec: ErrorSpec<'_>, site: Site<'_>) -> ErrorRecord {
    let reason = spec
        .exception_types
        .first()
        .map_or("Exception", |t| t.rsplit('.').next().unwrap_or(t));
    let category_message = format!(
        "{}: ({}:{}) [{}], {}",
        category_name(spec.category),
        ellipsize(&spec.target_name),
        spec.target_type,
        spec.activity,
        reason
    );
    let mut adapted = spec.exception_extra;
    adapted.extend(exception_tail(&spec.message));
    let main_type = spec
        .exception_types
        .first()
        .copied()
        .unwrap_or("System.Exception");
    let exception = Value::object(PsObject {
        type_names: Some(clixml::type_names_of(spec.exception_types)),
        to_string: Some(format!("{main_type}: {}", spec.message)),
        adapted,
        ..PsObject::default()
    });
    ErrorRecord {
        message: spec.message.clone(),
        fully_qualified_error_id: spec.fqid,
        category: spec.category,
        activity: Some(spec.activity.to_owned()),
        reason: Some(reason.to_owned()),
        target_name: Some(spec.target_name),
        target_type: Some(spec.target_type.to_owned()),
        category_message: Some(category_message),
        details_message: None,
        recommended_action: None,
        exception_type_names: spec
            .exception_types
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        exception_message: Some(spec.message),
        exception_object: Some(exception),
        target_object: Some(spec.target_object),
        invocation: Some(site.invocation()),
        serialize_extended_info: false,
        pipeline_iteration_info: Vec::new(),
        script_stack_trace: Some(site.stack_trace()),
        write_error_stream: None,
        ps_message_details: false,
        value: Value::Nil,
    }
}

/// `Message`, `Data` ... `HResult`: the properties every exception ends with.
fn exception_tail(message: &str) -> Vec<Property> {
    vec![
        Property::new("Message", message),
        Property::new(
            "Data",
            Value::dictionary(
                &["System.Collections.ListDictionaryInternal", "System.Object"],
                Vec::new(),
            ),
        ),
        Property::new("InnerException", Value::Nil),
        Property::new("TargetSite", Value::Nil),
        Property::new("StackTrace", Value::Nil),
        Property::new("HelpLink", Value::Nil),
        Property::new("Source", Value::Nil),
        Property::new("HResult", HRESULT_RUNTIME),
    ]
}

/// `throw <value>` (R:test_client_copy_file_failure): the message is also the error id and
/// the target; `throw` alone says `ScriptHalted`.
pub(crate) fn thrown(
    message: Option<String>,
    target: Option<Value>,
    site: Site<'_>,
) -> ErrorRecord {
    let message = message.unwrap_or_else(|| "ScriptHalted".to_owned());
    let target_type = match &target {
        Some(Value::Object(o)) => o
            .type_names()
            .first()
            .map_or("Object", |t| t.rsplit('.').next().unwrap_or(t))
            .to_owned(),
        _ => "String".to_owned(),
    };
    error_at(
        ErrorSpec {
            exception_extra: vec![
                Property::new("ErrorRecord", message.as_str()),
                Property::new("WasThrownFromThrowStatement", true),
            ],
            fqid: message.clone(),
            category: 14,
            activity: "",
            exception_types: &RUNTIME_EXCEPTION,
            target_name: message.clone(),
            target_type: &target_type,
            target_object: target.unwrap_or_else(|| Value::String(message.clone())),
            message,
        },
        site,
    )
}

/// The message Windows gives for a command it cannot find.
pub(crate) fn command_not_found_message(name: &str) -> String {
    format!(
        "The term '{name}' is not recognized as the name of a cmdlet, function, script file, or \
         operable program. Check the spelling of the name, or if a path was included, verify \
         that the path is correct and try again."
    )
}

/// An unknown command (R:test_client_execute_ps_failure, without Invoke-Expression).
pub(crate) fn command_not_found(name: &str, site: Site<'_>) -> ErrorRecord {
    let message = command_not_found_message(name);
    error_at(
        ErrorSpec {
            exception_extra: vec![
                Property::new("ErrorRecord", message.as_str()),
                Property::new("CommandName", name),
                Property::new("WasThrownFromThrowStatement", false),
            ],
            message,
            fqid: "CommandNotFoundException".to_owned(),
            category: 13,
            activity: "",
            exception_types: &[
                "System.Management.Automation.CommandNotFoundException",
                "System.Management.Automation.RuntimeException",
                "System.SystemException",
                "System.Exception",
                "System.Object",
            ],
            target_name: name.to_owned(),
            target_type: "String",
            target_object: Value::String(name.to_owned()),
        },
        site,
    )
}

/// A statement-terminating run-time error (`RuntimeException` family): method or type not
/// found, division by zero, conversions.
pub(crate) fn runtime_error(
    message: String,
    fqid: &str,
    category: i32,
    target_name: &str,
    site: Site<'_>,
) -> ErrorRecord {
    error_at(
        ErrorSpec {
            exception_extra: vec![
                Property::new("ErrorRecord", message.as_str()),
                Property::new("WasThrownFromThrowStatement", false),
            ],
            message,
            fqid: fqid.to_owned(),
            category,
            activity: "",
            exception_types: &RUNTIME_EXCEPTION,
            target_name: target_name.to_owned(),
            target_type: if target_name.is_empty() { "" } else { "String" },
            target_object: if target_name.is_empty() {
                Value::Nil
            } else {
                Value::String(target_name.to_owned())
            },
        },
        site,
    )
}

/// A parameter binding failure of `command` (`ParameterBindingException`, InvalidArgument).
pub(crate) fn parameter_binding(
    message: String,
    fqid: &str,
    command: &str,
    command_type: &str,
    site: Site<'_>,
) -> ErrorRecord {
    let mut record = error_at(
        ErrorSpec {
            exception_extra: vec![
                Property::new("ErrorRecord", message.as_str()),
                Property::new("WasThrownFromThrowStatement", false),
            ],
            message,
            fqid: format!("{fqid},{command_type}"),
            category: 5,
            activity: command,
            exception_types: &[
                "System.Management.Automation.ParameterBindingException",
                "System.Management.Automation.RuntimeException",
                "System.SystemException",
                "System.Exception",
                "System.Object",
            ],
            target_name: String::new(),
            target_type: "",
            target_object: Value::Nil,
        },
        site,
    );
    if let Some(info) = &mut record.invocation {
        info.my_command = Some(command.to_owned());
        info.invocation_name = Some(command.to_owned());
    }
    record
}

/// A non-terminating error a cmdlet writes (Get-Service, Get-HotFix, Get-CimInstance).
pub(crate) struct CmdletError<'a> {
    pub message: String,
    pub fqid: &'a str,
    pub command: &'a str,
    pub command_type: &'a str,
    pub category: i32,
    pub exception_types: &'a [&'a str],
    pub target: String,
}

/// A cmdlet's error record (its FullyQualifiedErrorId carries the command type).
pub(crate) fn cmdlet_error(e: CmdletError<'_>, site: Site<'_>) -> ErrorRecord {
    let mut record = error_at(
        ErrorSpec {
            exception_extra: Vec::new(),
            message: e.message,
            fqid: format!("{},{}", e.fqid, e.command_type),
            category: e.category,
            activity: e.command,
            exception_types: e.exception_types,
            target_name: e.target.clone(),
            target_type: "String",
            target_object: Value::String(e.target),
        },
        site,
    );
    if let Some(info) = &mut record.invocation {
        info.my_command = Some(e.command.to_owned());
        info.invocation_name = Some(e.command.to_owned());
        info.pipeline_length = Some(1);
        info.pipeline_position = Some(1);
        info.command_origin = Some(CommandOrigin::Runspace);
        info.history_id = Some(1);
    }
    record
}

/// The options of `Write-Error`.
pub(crate) struct WriteErrorSpec {
    pub message: String,
    pub error_id: Option<String>,
    pub category: i32,
    pub target: Option<Value>,
}

/// `Write-Error` (R:test_psrp_stream_output_invocation): `WriteErrorException`, invocation
/// info of the script block, `writeErrorStream`, extended info serialized.
pub(crate) fn write_error(spec: WriteErrorSpec, site: Site<'_>) -> ErrorRecord {
    let target_name = spec
        .target
        .as_ref()
        .map(super::values::value_to_str)
        .unwrap_or_default();
    let target_type = spec
        .target
        .as_ref()
        .map(|t| {
            let full = super::values::value_type_name(t);
            full.rsplit('.').next().unwrap_or(&full).to_owned()
        })
        .unwrap_or_default();
    let message = spec.message;
    let mut record = error_at(
        ErrorSpec {
            exception_extra: Vec::new(),
            fqid: spec
                .error_id
                .unwrap_or_else(|| "Microsoft.PowerShell.Commands.WriteErrorException".to_owned()),
            category: spec.category,
            activity: "Write-Error",
            exception_types: &[
                "Microsoft.PowerShell.Commands.WriteErrorException",
                "System.SystemException",
                "System.Exception",
                "System.Object",
            ],
            target_name,
            target_type: &target_type,
            target_object: spec.target.unwrap_or(Value::Nil),
            message,
        },
        site,
    );
    record.write_error_stream = Some(true);
    record.serialize_extended_info = true;
    record.ps_message_details = true;
    record.pipeline_iteration_info = vec![0, 0];
    record.invocation = Some(script_block_invocation(
        site.script,
        CommandOrigin::Internal,
        0,
    ));
    record
}

/// Marks a record as written to the error stream of a pipeline created with
/// `RemoteStreamOptions.AddInvocationInfo`: extended info serialized and the
/// `PSMessageDetails` note (R:test_psrp_stream_output_invocation).
pub(crate) fn as_stream_error(mut record: ErrorRecord) -> ErrorRecord {
    if record.invocation.is_some() {
        record.serialize_extended_info = true;
        if record.pipeline_iteration_info.is_empty() {
            record.pipeline_iteration_info = vec![0, 0];
        }
    }
    record.ps_message_details = true;
    record
}

/// The InvocationInfo of the script block itself (informational records and Write-Error):
/// `CommandInfo_Definition` is the script text.
fn script_block_invocation(script: &str, origin: CommandOrigin, length: i32) -> InvocationInfo {
    InvocationInfo {
        command_name: Some(String::new()),
        command_definition: Some(script.to_owned()),
        command_type: Some(0x40),
        script_line_number: Some(0),
        offset_in_line: Some(0),
        position_message: Some(String::new()),
        line: Some(String::new()),
        script_name: Some(String::new()),
        invocation_name: Some(String::new()),
        history_id: Some(1),
        pipeline_length: Some(length),
        pipeline_position: Some(length),
        command_origin: Some(origin),
        expecting_input: Some(false),
        pipeline_iteration_info: if length > 0 { vec![0, 0] } else { Vec::new() },
        my_command: Some(script.to_owned()),
        ps_script_root: Some(String::new()),
        ..InvocationInfo::default()
    }
}

/// A Warning, Verbose or Debug record with the script block's invocation info.
pub(crate) fn informational(
    kind: InformationalKind,
    message: String,
    script: &str,
) -> InformationalRecord {
    let mut record = InformationalRecord::new(kind, message);
    record.invocation = Some(script_block_invocation(script, CommandOrigin::Runspace, 1));
    record
}

/// Who and where, for information records.
pub(crate) struct Origin<'a> {
    pub user: &'a str,
    pub computer: &'a str,
    pub process_id: u32,
}

/// `Write-Information` (R:test_psrp_stream_output_invocation) or `Write-Host` (MessageData
/// a `HostInformationMessage`, tag `PSHOST`).
pub(crate) fn information(
    data: Value,
    source: &str,
    tags: Vec<String>,
    time: clixml::DateTime,
    origin: &Origin<'_>,
) -> InformationRecord {
    let mut record = InformationRecord::new(data, source, time);
    record.tags = tags;
    record.user = Some(format!("{}\\{}", origin.computer, origin.user));
    record.computer = Some(origin.computer.to_owned());
    record.process_id = Some(origin.process_id);
    record.native_thread_id = Some(origin.process_id.wrapping_mul(7) % 9000 + 100);
    record.managed_thread_id = Some(10);
    record
}

/// The `HostInformationMessage` Write-Host sends as MessageData.
pub(crate) fn host_message(
    text: &str,
    no_newline: bool,
    fg: Option<Value>,
    bg: Option<Value>,
) -> Value {
    Value::object(PsObject {
        type_names: Some(clixml::type_names_of(&[
            "System.Management.Automation.HostInformationMessage",
            "System.Object",
        ])),
        to_string: Some(text.to_owned()),
        content: Content::None,
        adapted: vec![
            Property::new("Message", text),
            Property::new("NoNewLine", no_newline),
            Property::new("ForegroundColor", fg.unwrap_or(Value::Nil)),
            Property::new("BackgroundColor", bg.unwrap_or(Value::Nil)),
        ],
        extended: Vec::new(),
    })
}

/// A parse error: `ParseException`, category ParserError, the parser's error id; the
/// message carries the position (`At line:1 char:5` ...) as PowerShell formats it.
pub(crate) fn parse_error(script: &str, e: &ParseError) -> ErrorRecord {
    let site = Site {
        script,
        start: e.at,
        end: e.at,
    };
    let pos = site.position();
    let message = format!("{}\r\n{}", pos.message, e.kind.message());
    let mut record = error_at(
        ErrorSpec {
            exception_extra: vec![
                Property::new(
                    "Errors",
                    Value::list(
                        &[
                            "System.Management.Automation.Language.ParseError[]",
                            "System.Array",
                            "System.Object",
                        ],
                        vec![Value::String(message.clone())],
                    ),
                ),
                Property::new("ErrorRecord", message.as_str()),
                Property::new("WasThrownFromThrowStatement", false),
            ],
            fqid: e.kind.id().to_owned(),
            category: 17,
            activity: "",
            exception_types: &[
                "System.Management.Automation.ParseException",
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
        site,
    );
    record.invocation = None;
    record.script_stack_trace = None;
    record
}

#[cfg(test)]
mod tests {
    use psfleet_core::psrp::messages::ErrorRecord;

    use super::*;

    fn round_trip(record: &ErrorRecord) -> ErrorRecord {
        let bytes = clixml::to_bytes(&record.to_clixml());
        ErrorRecord::from_clixml(&clixml::from_bytes(&bytes).unwrap()).unwrap()
    }

    #[test]
    fn positions_match_recorded_windows_messages() {
        // R:test_client_fetch_file_fail_missing: a throw on line 11, column 1.
        let line = "throw \"The path at '$src_path' does not exist\"";
        let script = format!("{}{line}\n$x", "\n".repeat(10));
        let start = script.find("throw").unwrap();
        let pos = Site {
            script: &script,
            start,
            end: start + line.len(),
        }
        .position();
        assert_eq!(pos.line, 11);
        assert_eq!(pos.column, 1);
        assert_eq!(pos.line_text, format!("{line}\n"));
        assert_eq!(
            pos.message,
            format!(
                "At line:11 char:1\r\n+ {line}\r\n+ {}",
                "~".repeat(line.len())
            )
        );
        // R:test_client_copy_file_failure: a 92-character line is cut to 69 and ` ...`.
        let long = "throw \"Transport failure, hash mismatch`r`nActual: $actual_hash`r`nExpected: $expected_hash\"";
        let pos = Site {
            script: long,
            start: 0,
            end: long.len(),
        }
        .position();
        let lines: Vec<&str> = pos.message.split("\r\n").collect();
        assert_eq!(
            lines[1],
            "+ throw \"Transport failure, hash mismatch`r`nActual: $actual_hash`r`nEx ..."
        );
        assert_eq!(lines[2].len(), 71);
    }

    #[test]
    fn ellipsis_matches_recorded_category_messages() {
        assert_eq!(
            ellipsize("The path at 'C:\\fakefile.txt' does not exist"),
            "The path at 'C:... does not exist"
        );
        assert_eq!(ellipsize("short"), "short");
    }

    #[test]
    fn thrown_record_matches_the_recorded_shape() {
        let script = "throw 'boom'";
        let r = thrown(
            Some("boom".into()),
            None,
            Site {
                script,
                start: 0,
                end: 12,
            },
        );
        let back = round_trip(&r);
        assert_eq!(back.message, "boom");
        assert_eq!(back.fully_qualified_error_id, "boom");
        assert_eq!(back.category, 14);
        assert_eq!(back.reason.as_deref(), Some("RuntimeException"));
        assert_eq!(
            back.category_message.as_deref(),
            Some("OperationStopped: (boom:String) [], RuntimeException")
        );
        assert_eq!(
            back.exception_type_names[0],
            "System.Management.Automation.RuntimeException"
        );
        let e = back.exception_object.as_ref().unwrap().as_object().unwrap();
        assert_eq!(
            e.property("WasThrownFromThrowStatement"),
            Some(&Value::Bool(true))
        );
        assert_eq!(e.property("Message").and_then(Value::as_str), Some("boom"));
        let info = back.invocation.unwrap();
        assert_eq!(info.script_line_number, Some(1));
        assert_eq!(info.history_id, Some(-1));
        assert_eq!(
            info.position_message.as_deref(),
            Some("At line:1 char:1\r\n+ throw 'boom'\r\n+ ~~~~~~~~~~~~")
        );
        assert_eq!(
            back.script_stack_trace.as_deref(),
            Some("at <ScriptBlock>, <No file>: line 1")
        );
        assert_eq!(r.target_object, Some(Value::String("boom".into())));
    }

    #[test]
    fn command_not_found_has_windows_fields() {
        let script = "hostname\nGet-Foo -x";
        let r = as_stream_error(command_not_found(
            "Get-Foo",
            Site {
                script,
                start: 9,
                end: 19,
            },
        ));
        let back = round_trip(&r);
        assert_eq!(back.fully_qualified_error_id, "CommandNotFoundException");
        assert_eq!(back.category, 13);
        assert_eq!(back.category_name(), Some("ObjectNotFound"));
        assert_eq!(back.reason.as_deref(), Some("CommandNotFoundException"));
        assert_eq!(back.target_name.as_deref(), Some("Get-Foo"));
        assert_eq!(
            back.message,
            "The term 'Get-Foo' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
        );
        assert_eq!(
            back.category_message.as_deref(),
            Some("ObjectNotFound: (Get-Foo:String) [], CommandNotFoundException")
        );
        assert!(back.serialize_extended_info);
        assert!(back.ps_message_details);
        assert_eq!(back.invocation.unwrap().script_line_number, Some(2));
    }

    #[test]
    fn write_error_matches_the_recorded_shape() {
        let script = "Write-Error 'error stream'";
        let r = write_error(
            WriteErrorSpec {
                message: "error stream".into(),
                error_id: None,
                category: 0,
                target: None,
            },
            Site {
                script,
                start: 0,
                end: script.len(),
            },
        );
        let back = round_trip(&r);
        assert_eq!(
            back.fully_qualified_error_id,
            "Microsoft.PowerShell.Commands.WriteErrorException"
        );
        assert_eq!(
            back.category_message.as_deref(),
            Some("NotSpecified: (:) [Write-Error], WriteErrorException")
        );
        assert_eq!(back.write_error_stream, Some(true));
        assert!(back.serialize_extended_info);
        assert_eq!(back.pipeline_iteration_info, vec![0, 0]);
        let info = back.invocation.unwrap();
        assert_eq!(info.command_definition.as_deref(), Some(script));
        assert_eq!(info.my_command.as_deref(), Some(script));
        assert_eq!(
            back.script_stack_trace.as_deref(),
            Some("at <ScriptBlock>, <No file>: line 1")
        );
    }

    #[test]
    fn parse_error_record() {
        let e = super::super::syntax::parse_script("if ($x) {").unwrap_err();
        let r = round_trip(&parse_error("if ($x) {", &e));
        assert_eq!(r.fully_qualified_error_id, "MissingEndCurlyBrace");
        assert_eq!(r.category_name(), Some("ParserError"));
        assert_eq!(
            r.message,
            "At line:1 char:9\r\n+ if ($x) {\r\n+         ~\r\nMissing closing '}' in statement block or type definition."
        );
        assert_eq!(
            r.exception_type_names[0],
            "System.Management.Automation.ParseException"
        );
    }

    #[test]
    fn informational_records_carry_the_script_invocation() {
        let r = informational(
            InformationalKind::Warning,
            "careful".into(),
            "Write-Warning careful",
        );
        let back = InformationalRecord::from_clixml(
            &clixml::from_bytes(&clixml::to_bytes(&r.to_clixml())).unwrap(),
        )
        .unwrap();
        assert_eq!(back.kind, Some(InformationalKind::Warning));
        assert_eq!(back.message, "careful");
        let info = back.invocation.unwrap();
        assert_eq!(
            info.command_definition.as_deref(),
            Some("Write-Warning careful")
        );
        assert_eq!(info.pipeline_iteration_info, vec![0, 0]);
        assert_eq!(info.pipeline_length, Some(1));
    }
}
