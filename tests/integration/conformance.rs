//! The protocol core against real Windows traffic recorded by pypsrp's test suite.
//!
//! One test walks the whole corpus so that it can print a single summary line:
//! `conformance: files=F responses=R psrp_messages=M mismatches=0`. Every check that fails
//! adds a mismatch naming the file, the exchange and what differed; the test fails if there
//! is any.
//!
//! What is checked:
//! - every recorded request parses as a typed `wsman::Request`, and writing it back gives a
//!   structurally equal envelope (so the encoders reproduce what Windows accepted);
//! - every recorded response parses as a typed `wsman::Response` and writes back equal;
//! - every recorded fault yields the code, subcode, machine and reason that an independent
//!   reading of the XML tree finds, and only the exchanges recorded as HTTP 500 are faults;
//! - every PSRP blob (creationXml, Command arguments, Send and Receive streams, connect
//!   payloads) reassembles across streams and responses, every message decodes into a
//!   typed `PsrpMessage` (never `Unknown`), every CLIXML payload deserializes with no
//!   unknown node and serializes back to an equal tree, and the client builders reproduce
//!   every recorded SESSION_CAPABILITY, INIT_RUNSPACEPOOL and CREATE_PIPELINE;
//! - the WinRS client state machine, driven by a replay transport, sends exactly the
//!   recorded requests and reports exactly the output and exit codes the recorded
//!   responses hold (decoded independently of the wsman codec);
//! - the PSRP client (`psrp::client::ScriptRun`), driven by a replay transport through every
//!   recorded single-script run, sends the recorded sequence of operations and reports the
//!   recorded output objects and final pipeline state.

use std::collections::VecDeque;
use std::fmt::Write as _;

use base64::Engine as _;
use std::collections::{BTreeMap, HashMap};

use psfleet_core::ids::{self, IdGenerator};
use psfleet_core::psrp::messages::PsrpMessage;
use psfleet_core::psrp::{Defragmenter, Message, clixml};
use psfleet_core::winrs::{self, CommandRun, CommandSpec, ShellSettings, Step, WinrsEvent};
use psfleet_core::wsman::{self, Action, RequestBody, Response, ResponseBody, structurally_equal};
use psfleet_core::xml::{self, Element};
use psfleet_tests::corpus::{self, Exchange, Recording};
use psfleet_tests::shared;
use uuid::Uuid;

const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
const SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
const WSMAN_FAULT: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";

#[derive(Default)]
struct Tally {
    files: usize,
    requests: usize,
    responses: usize,
    faults: usize,
    psrp_messages: usize,
    psrp_types: BTreeMap<String, usize>,
    psrp_runs: usize,
    client_builders_checked: usize,
    winrs_runs: usize,
    mismatches: Vec<String>,
}

impl Tally {
    fn mismatch(&mut self, file: &str, index: usize, what: impl std::fmt::Display) {
        self.mismatches.push(format!("{file}#{index}: {what}"));
    }
}

#[test]
fn conformance_corpus() {
    let Some(dir) = shared::shared_dir("conformance_corpus") else {
        return;
    };
    let recordings = corpus::load(&dir);
    let mut tally = Tally::default();
    for recording in &recordings {
        tally.files += 1;
        // Each request is parsed once; the later checks share the typed requests.
        let mut parsed = Vec::with_capacity(recording.exchanges.len());
        for (index, exchange) in recording.exchanges.iter().enumerate() {
            parsed.push(check_request(&recording.name, index, exchange, &mut tally));
            check_response(&recording.name, index, exchange, &mut tally);
        }
        check_psrp_streams(recording, &parsed, &mut tally);
        for range in shell_conversations(&parsed, |uri| uri == wsman::resources::CMD_SHELL) {
            if has_shape(&parsed[range.clone()], WINRS_RUN) {
                replay_winrs(recording, range, &parsed, &mut tally);
            }
        }
        let is_psrp = |uri: &str| uri.starts_with(wsman::resources::POWERSHELL_PREFIX);
        for range in shell_conversations(&parsed, is_psrp) {
            if has_shape(&parsed[range.clone()], PSRP_RUN) {
                replay_psrp(recording, range, &parsed, &mut tally);
            }
        }
    }
    println!(
        "conformance: files={} responses={} psrp_messages={} mismatches={}",
        tally.files,
        tally.responses,
        tally.psrp_messages,
        tally.mismatches.len()
    );
    println!(
        "conformance detail: requests={} faults={} winrs_replays={} psrp_replays={} client_builders={} psrp_types={:?}",
        tally.requests,
        tally.faults,
        tally.winrs_runs,
        tally.psrp_runs,
        tally.client_builders_checked,
        tally.psrp_types
    );
    // Every message type that occurs in the corpus must be seen decoded (wire-facts 5).
    for expected in [
        "SessionCapability",
        "InitRunspacePool",
        "ApplicationPrivateData",
        "RunspacePoolState",
        "CreatePipeline",
        "PipelineOutput",
        "ErrorRecord",
        "PipelineState",
        "WarningRecord",
        "VerboseRecord",
        "DebugRecord",
        "InformationRecord",
        "ProgressRecord",
        "PipelineHostCall",
        "PipelineHostResponse",
        "PipelineInput",
        "EndOfPipelineInput",
        "PublicKey",
        "EncryptedSessionKey",
        "SetMaxRunspaces",
        "SetMinRunspaces",
        "RunspaceAvailability",
        "GetAvailableRunspaces",
        "ConnectRunspacePool",
        "RunspacePoolInitData",
        "GetCommandMetadata",
        "ResetRunspaceState",
    ] {
        assert!(
            tally.psrp_types.contains_key(expected),
            "no {expected} decoded from the corpus"
        );
    }
    assert!(
        tally.psrp_messages > 300,
        "only {} PSRP messages",
        tally.psrp_messages
    );
    assert_eq!(tally.files, recordings.len());
    assert!(
        tally.winrs_runs >= 15,
        "only {} WinRS replays",
        tally.winrs_runs
    );
    // Every recorded single-script run without pipeline input (12 in the corpus).
    assert!(
        tally.psrp_runs >= 12,
        "only {} PSRP replays",
        tally.psrp_runs
    );
    assert!(
        tally.mismatches.is_empty(),
        "{} mismatches:\n{}",
        tally.mismatches.len(),
        tally.mismatches.join("\n")
    );
}

fn check_request(
    file: &str,
    index: usize,
    exchange: &Exchange,
    tally: &mut Tally,
) -> Option<wsman::Request> {
    tally.requests += 1;
    let raw = exchange.request.as_bytes();
    let request = match wsman::Request::parse(raw) {
        Ok(request) => request,
        Err(e) => {
            tally.mismatch(file, index, format!("request does not parse: {e}"));
            return None;
        }
    };
    if let RequestBody::Other(_) = request.body {
        tally.mismatch(file, index, "request body is not typed");
    }
    if let Err(diff) = same_tree(raw, &request.to_xml()) {
        tally.mismatch(
            file,
            index,
            format!("request re-encodes differently: {diff}"),
        );
    }
    Some(request)
}

fn check_response(file: &str, index: usize, exchange: &Exchange, tally: &mut Tally) {
    let Some(raw) = exchange.response.as_deref() else {
        if !exchange.http_error {
            tally.mismatch(file, index, "no response, yet not marked http_error");
        }
        return;
    };
    tally.responses += 1;
    let response = match Response::parse(raw.as_bytes()) {
        Ok(response) => response,
        Err(e) => return tally.mismatch(file, index, format!("response does not parse: {e}")),
    };
    if let ResponseBody::Other(_) = response.body {
        tally.mismatch(file, index, "response body is not typed");
    }
    if let Err(diff) = same_tree(raw.as_bytes(), &response.to_xml()) {
        tally.mismatch(
            file,
            index,
            format!("response re-encodes differently: {diff}"),
        );
    }
    let recorded_500 = exchange
        .transport_error
        .as_ref()
        .is_some_and(|t| t.code == 500);
    match (response.fault(), recorded_500) {
        (Some(fault), true) => {
            tally.faults += 1;
            if let Err(diff) = fault_matches_tree(fault, raw.as_bytes()) {
                tally.mismatch(file, index, diff);
            }
        }
        (None, false) => {}
        (Some(_), false) => tally.mismatch(file, index, "fault without a recorded HTTP 500"),
        (None, true) => tally.mismatch(file, index, "recorded HTTP 500 but no fault parsed"),
    }
}

fn same_tree(recorded: &[u8], ours: &[u8]) -> Result<(), String> {
    let recorded = xml::parse(recorded).map_err(|e| format!("recording: {e}"))?;
    let ours = xml::parse(ours).map_err(|e| format!("ours: {e}"))?;
    structurally_equal(&recorded, &ours)
}

/// Reads the fault straight from the XML tree, independently of `wsman::WsmanFault`.
fn fault_matches_tree(fault: &wsman::WsmanFault, raw: &[u8]) -> Result<(), String> {
    let root = xml::parse(raw).map_err(|e| e.to_string())?;
    let soap_fault = root
        .path(&[(SOAP, "Body"), (SOAP, "Fault")])
        .ok_or("no s:Fault in the recording")?;
    let subcode = soap_fault
        .path(&[(SOAP, "Code"), (SOAP, "Subcode"), (SOAP, "Value")])
        .map(|e| e.text().into_owned());
    let reason = soap_fault
        .path(&[(SOAP, "Reason"), (SOAP, "Text")])
        .map(|e| e.text().into_owned());
    let detail = soap_fault.path(&[(SOAP, "Detail"), (WSMAN_FAULT, "WSManFault")]);
    let code = detail
        .and_then(|d| d.attr("Code"))
        .and_then(|c| c.parse::<u32>().ok());
    let machine = detail.and_then(|d| d.attr("Machine")).map(str::to_owned);

    let our_code = fault.code.map(|c| c.as_u32());
    if our_code != code {
        return Err(format!("fault code {our_code:?}, recording says {code:?}"));
    }
    // Subcodes are QNames (`w:TimedOut`); compare local names.
    let local = |q: &str| q.rsplit(':').next().unwrap_or(q).to_owned();
    let our_subcode = fault.subcode.as_ref().map(|s| s.local_name().to_owned());
    if our_subcode != subcode.as_deref().map(local) {
        return Err(format!(
            "fault subcode {our_subcode:?}, recording says {subcode:?}"
        ));
    }
    if Some(fault.reason.trim()) != reason.as_deref().map(str::trim) {
        return Err(format!(
            "fault reason {:?}, recording says {reason:?}",
            fault.reason
        ));
    }
    if fault.machine != machine {
        return Err(format!(
            "fault machine {:?}, recording says {machine:?}",
            fault.machine
        ));
    }
    // The message must carry the innermost text the recording has.
    let innermost = detail.map(innermost_text).unwrap_or_default();
    if !fault.message.contains(innermost.trim()) {
        return Err(format!(
            "fault message {:?} lacks the recorded text {innermost:?}",
            fault.message
        ));
    }
    Ok(())
}

fn innermost_text(element: &Element) -> String {
    let nested: Vec<&Element> = element.elements().collect();
    match nested.last() {
        Some(child) => innermost_text(child),
        None => element.text().into_owned(),
    }
}

// ===== PSRP =====

/// Client-to-server or server-to-client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    ToServer,
    ToClient,
}

/// Reassembles every PSRP blob of a recording, per shell and direction (object ids are
/// per sender and restart with each runspace pool, MS-PSRP 2.2.4), and checks each message.
fn check_psrp_streams(recording: &Recording, parsed: &[Option<wsman::Request>], tally: &mut Tally) {
    let file = recording.name.as_str();
    let mut defrag: HashMap<(Direction, Uuid), Defragmenter> = HashMap::new();
    for (index, (exchange, request)) in recording.exchanges.iter().zip(parsed).enumerate() {
        let Some(request) = request else {
            continue;
        };
        let shell = match &request.body {
            RequestBody::Create(create) => create.shell_id,
            _ => request.header.shell_id(),
        }
        .unwrap_or_default();
        let mut outgoing: Vec<Vec<u8>> = Vec::new();
        match &request.body {
            RequestBody::Create(create) => outgoing.extend(create.creation_xml.clone()),
            RequestBody::Command(line) if line.command_id.is_some() => {
                match line.psrp_arguments() {
                    Ok(blob) => outgoing.push(blob),
                    Err(e) => tally.mismatch(file, index, e),
                }
            }
            RequestBody::Send(send) => outgoing.extend(send.streams.iter().map(|s| s.data.clone())),
            RequestBody::Connect(connect) => outgoing.extend(connect.connect_xml.clone()),
            _ => {}
        }
        let is_psrp = request
            .header
            .resource_uri
            .starts_with(wsman::resources::POWERSHELL_PREFIX);
        if !is_psrp {
            continue;
        }
        for blob in outgoing {
            let d = defrag.entry((Direction::ToServer, shell)).or_default();
            check_blob(file, index, d, &blob, Direction::ToServer, tally);
        }
        let Some(raw) = exchange.response.as_deref() else {
            continue;
        };
        let Ok(response) = Response::parse(raw.as_bytes()) else {
            continue;
        };
        let incoming: Vec<Vec<u8>> = match response.body {
            ResponseBody::ReceiveResponse(receive) => {
                receive.streams.into_iter().map(|s| s.data).collect()
            }
            ResponseBody::ConnectResponse(connect) => {
                connect.connect_response_xml.into_iter().collect()
            }
            _ => Vec::new(),
        };
        for blob in incoming {
            let d = defrag.entry((Direction::ToClient, shell)).or_default();
            check_blob(file, index, d, &blob, Direction::ToClient, tally);
        }
    }
    for ((direction, shell), d) in defrag {
        if d.pending_objects() != 0 {
            tally.mismatch(
                file,
                0,
                format!(
                    "{direction:?} shell {shell}: {} objects never completed",
                    d.pending_objects()
                ),
            );
        }
    }
}

fn check_blob(
    file: &str,
    index: usize,
    defrag: &mut Defragmenter,
    blob: &[u8],
    direction: Direction,
    tally: &mut Tally,
) {
    let messages = match defrag.push_blob(blob) {
        Ok(messages) => messages,
        Err(e) => return tally.mismatch(file, index, format!("fragments: {e}")),
    };
    for bytes in messages {
        tally.psrp_messages += 1;
        let message = match Message::decode(&bytes) {
            Ok(m) => m,
            Err(e) => {
                tally.mismatch(file, index, format!("message header: {e}"));
                continue;
            }
        };
        let typed = match PsrpMessage::decode(&message) {
            Ok(PsrpMessage::Unknown { message_type, .. }) => {
                tally.mismatch(
                    file,
                    index,
                    format!("unknown message type {message_type:#x}"),
                );
                continue;
            }
            Ok(typed) => typed,
            Err(e) => {
                tally.mismatch(file, index, format!("{:?}: {e}", message.message_type));
                continue;
            }
        };
        *tally
            .psrp_types
            .entry(format!("{:?}", message.message_type))
            .or_default() += 1;
        check_clixml(file, index, &message, &typed, direction, tally);
    }
}

fn check_clixml(
    file: &str,
    index: usize,
    message: &Message,
    typed: &PsrpMessage,
    direction: Direction,
    tally: &mut Tally,
) {
    let data = message.clixml();
    if data.is_empty() {
        return;
    }
    let value = match clixml::from_bytes(data) {
        Ok(value) => value,
        Err(e) => {
            return tally.mismatch(
                file,
                index,
                format!("{:?} CLIXML: {e}", message.message_type),
            );
        }
    };
    if let Err(diff) = same_tree(data, &clixml::to_bytes(&value)) {
        tally.mismatch(
            file,
            index,
            format!(
                "{:?} CLIXML re-serializes differently: {diff}",
                message.message_type
            ),
        );
    }
    // The client builders must reproduce what the recorded client sent.
    let rebuilt = match (direction, typed) {
        (Direction::ToServer, PsrpMessage::SessionCapability(m)) => Some(m.to_clixml()),
        (Direction::ToServer, PsrpMessage::InitRunspacePool(m)) => Some(m.to_clixml()),
        (Direction::ToServer, PsrpMessage::CreatePipeline(m)) => Some(m.to_clixml()),
        _ => None,
    };
    if let Some(rebuilt) = rebuilt {
        tally.client_builders_checked += 1;
        if let Err(diff) = same_tree(data, &clixml::to_bytes(&rebuilt)) {
            tally.mismatch(
                file,
                index,
                format!(
                    "{:?} builder differs from the recording: {diff}",
                    message.message_type
                ),
            );
        }
    }
}

// ===== WinRS replay =====

/// Hands out the recorded MessageIDs in order, so that a faithful client produces the
/// recorded requests exactly and the recorded responses relate to them unchanged.
struct RecordedIds(VecDeque<Uuid>);

impl IdGenerator for RecordedIds {
    fn next_id(&mut self) -> Uuid {
        self.0.pop_front().unwrap_or_else(Uuid::nil)
    }
}

/// The shell settings both clients share, as the recorded client sent them in Create.
struct RecordedShell {
    endpoint: String,
    session_id: Option<Uuid>,
    max_envelope_size: u32,
    operation_timeout: Option<std::time::Duration>,
    no_profile: bool,
}

impl RecordedShell {
    fn from_create(create: &wsman::Request) -> Self {
        let header = &create.header;
        Self {
            endpoint: header.to.clone(),
            session_id: header.session_id,
            max_envelope_size: header.max_envelope_size.unwrap_or_default(),
            operation_timeout: header.operation_timeout.as_ref().and_then(|t| t.duration()),
            no_profile: header.option("WINRS_NOPROFILE").is_some(),
        }
    }
}

/// How often an operation occurs at its place in a conversation's shape.
#[derive(Clone, Copy)]
enum Times {
    One,
    Optional,
    OneOrMore,
    Any,
}

/// A psfleet WinRS run: Create, Command, Send*, Receive+, Signal, Delete. Other recorded
/// shapes (pypsrp running two commands in one shell, Receive without a Command) are
/// checked at the message level only.
const WINRS_RUN: &[(Action, Times)] = &[
    (Action::Create, Times::One),
    (Action::Command, Times::One),
    (Action::Send, Times::Any),
    (Action::Receive, Times::OneOrMore),
    (Action::Signal, Times::One),
    (Action::Delete, Times::One),
];

/// A psfleet script run: Create, Receive+ (the pool opens), Command, Send* (the rest of
/// CREATE_PIPELINE), Receive+, Signal? (pypsrp's, skipped in the replay), Delete.
const PSRP_RUN: &[(Action, Times)] = &[
    (Action::Create, Times::One),
    (Action::Receive, Times::OneOrMore),
    (Action::Command, Times::One),
    (Action::Send, Times::Any),
    (Action::Receive, Times::OneOrMore),
    (Action::Signal, Times::Optional),
    (Action::Delete, Times::One),
];

/// The index ranges of the shells in a recording whose resource URI passes `resource`:
/// from each Create to the Delete that follows.
fn shell_conversations(
    parsed: &[Option<wsman::Request>],
    resource: impl Fn(&str) -> bool,
) -> Vec<std::ops::RangeInclusive<usize>> {
    let mut ranges = Vec::new();
    let mut start = None;
    for (i, request) in parsed.iter().enumerate() {
        let Some(request) = request else { continue };
        if !resource(&request.header.resource_uri) {
            continue;
        }
        match request.header.action {
            Action::Create => start = Some(i),
            Action::Delete => ranges.extend(start.take().map(|first| first..=i)),
            _ => {}
        }
    }
    ranges
}

/// True when the conversation's operations follow `shape` exactly.
fn has_shape(conversation: &[Option<wsman::Request>], shape: &[(Action, Times)]) -> bool {
    let mut rest = conversation
        .iter()
        .flatten()
        .map(|r| &r.header.action)
        .peekable();
    for (action, times) in shape {
        let mut take = || rest.next_if(|a| *a == action).is_some();
        let ok = match times {
            Times::One => take(),
            Times::Optional => {
                take();
                true
            }
            Times::OneOrMore => {
                let first = take();
                while take() {}
                first
            }
            Times::Any => {
                while take() {}
                true
            }
        };
        if !ok {
            return false;
        }
    }
    rest.next().is_none()
}

fn replay_winrs(
    recording: &Recording,
    range: std::ops::RangeInclusive<usize>,
    parsed: &[Option<wsman::Request>],
    tally: &mut Tally,
) {
    let file = recording.name.as_str();
    let first = *range.start();
    let requests: Vec<&wsman::Request> = parsed[range.clone()].iter().flatten().collect();
    let exchanges = &recording.exchanges[range];
    let (Some(create), Some(command)) = (requests.first(), requests.get(1)) else {
        return;
    };

    // Inputs come from what the recorded client asked for.
    let recorded = RecordedShell::from_create(create);
    let mut settings = ShellSettings::new(recorded.endpoint);
    settings.session_id = recorded.session_id;
    settings.max_envelope_size = recorded.max_envelope_size;
    settings.operation_timeout = recorded
        .operation_timeout
        .unwrap_or(settings.operation_timeout);
    settings.no_profile = recorded.no_profile;
    settings.codepage = create
        .header
        .option("WINRS_CODEPAGE")
        .and_then(|c| c.parse().ok());
    if let RequestBody::Create(shell) = &create.body {
        settings.environment = shell
            .environment
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        settings.working_directory = shell.working_directory.clone();
        settings.idle_timeout = shell.idle_timeout;
        settings.lifetime = shell.lifetime;
        settings.name = shell.name.clone();
    }
    let RequestBody::Command(line) = &command.body else {
        return;
    };
    // The caller's stdin pieces, as the recorded client sent them.
    let stdin: Vec<Vec<u8>> = requests
        .iter()
        .filter_map(|r| match &r.body {
            RequestBody::Send(send) => Some(send.streams.iter().map(|s| s.data.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    let spec = CommandSpec {
        command: line.command.clone().unwrap_or_default(),
        arguments: line.arguments.clone(),
        stdin,
    };

    let mut ids = RecordedIds(requests.iter().map(|r| r.header.message_id).collect());
    let (mut run, mut next) = CommandRun::start(settings, spec, &mut ids);
    let mut events = Vec::new();
    let mut outcome = None;
    for (offset, exchange) in exchanges.iter().enumerate() {
        let index = first + offset;
        let mut ours = (*next).clone();
        for o in &exchange.overrides {
            apply_override(&mut ours, o);
        }
        if let Err(diff) = same_tree(exchange.request.as_bytes(), &ours.to_xml()) {
            tally.mismatch(file, index, format!("WinRS replay request differs: {diff}"));
            return;
        }
        let Some(raw) = exchange.response.as_deref() else {
            return;
        };
        let Ok(response) = Response::parse(raw.as_bytes()) else {
            return;
        };
        let step = run.handle(response, &mut ids);
        events.extend(std::iter::from_fn(|| run.poll_event()));
        match step {
            Step::Send(request) => next = request,
            Step::Finished(result) => {
                outcome = Some(result);
                if offset + 1 != exchanges.len() {
                    tally.mismatch(file, index, "WinRS run finished before the recording did");
                    return;
                }
            }
        }
    }
    let Some(outcome) = outcome else {
        return tally.mismatch(file, first, "WinRS run did not finish with the recording");
    };
    tally.winrs_runs += 1;
    if let Err(diff) = compare_winrs_results(exchanges, &events, &outcome) {
        tally.mismatch(file, first, diff);
    }
}

fn apply_override(request: &mut wsman::Request, o: &corpus::Override) {
    let id = o.attributes.get("CommandId").and_then(|v| ids::parse(v));
    if let (true, RequestBody::Receive(receive), Some(id)) =
        (o.path.ends_with("rsp:DesiredStream"), &mut request.body, id)
    {
        receive.command_id = Some(id);
    }
}

/// Decodes stdout, stderr and the exit code from the recorded responses with the XML tree
/// and base64 only, and compares them with what the state machine reported.
fn compare_winrs_results(
    exchanges: &[Exchange],
    events: &[WinrsEvent],
    outcome: &winrs::RunOutcome,
) -> Result<(), String> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut exit_code = None;
    let mut fault_code = None;
    for exchange in exchanges {
        let Some(raw) = exchange.response.as_deref() else {
            continue;
        };
        let root = xml::parse(raw.as_bytes()).map_err(|e| e.to_string())?;
        let Some(body) = root.child(SOAP, "Body") else {
            continue;
        };
        if let Some(receive) = body.child(SHELL, "ReceiveResponse") {
            for stream in receive.children_named(SHELL, "Stream") {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(stream.text().trim())
                    .map_err(|e| e.to_string())?;
                match stream.attr("Name") {
                    Some("stderr") => stderr.extend(data),
                    _ => stdout.extend(data),
                }
            }
            if let Some(code) = receive.path(&[(SHELL, "CommandState"), (SHELL, "ExitCode")]) {
                exit_code = code.text().trim().parse::<i64>().ok();
            }
        }
        let code = body
            .path(&[
                (SOAP, "Fault"),
                (SOAP, "Detail"),
                (WSMAN_FAULT, "WSManFault"),
            ])
            .and_then(|f| f.attr("Code"))
            .and_then(|c| c.parse::<u32>().ok());
        // A TimedOut fault is a normal re-poll, not an outcome.
        if code.is_some_and(|c| c != 2_150_858_793) {
            fault_code = code;
        }
    }
    let our_stdout: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            WinrsEvent::Stdout(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let our_stderr: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            WinrsEvent::Stderr(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut diff = String::new();
    if our_stdout != stdout {
        let _ = write!(
            diff,
            "stdout {:?} != recorded {:?}; ",
            String::from_utf8_lossy(&our_stdout),
            String::from_utf8_lossy(&stdout)
        );
    }
    if our_stderr != stderr {
        let _ = write!(diff, "stderr differs; ");
    }
    match (outcome, exit_code, fault_code) {
        (Ok(code), Some(recorded), None) if *code == recorded => {}
        (Err(winrs::WinrsError::Fault { fault, .. }), _, Some(recorded))
            if fault.code.map(|c| c.as_u32()) == Some(recorded) => {}
        _ => {
            let _ = write!(
                diff,
                "outcome {outcome:?} vs recorded exit {exit_code:?} fault {fault_code:?}"
            );
        }
    }
    let deleted = events
        .iter()
        .any(|e| matches!(e, WinrsEvent::ShellDeleted { .. }));
    if !deleted {
        diff.push_str("shell not reported deleted");
    }
    if diff.is_empty() { Ok(()) } else { Err(diff) }
}

#[test]
fn corpus_loads_completely() {
    let Some(dir) = shared::shared_dir("corpus_loads_completely") else {
        return;
    };
    let recordings = corpus::load(&dir);
    let exchanges: usize = recordings.iter().map(|r| r.exchanges.len()).sum();
    assert_eq!(recordings.len(), 60, "recorded files");
    assert!(exchanges > 400, "only {exchanges} exchanges loaded");
    let faults = recordings
        .iter()
        .flat_map(|r| &r.exchanges)
        .filter(|e| e.transport_error.as_ref().is_some_and(|t| t.code == 500))
        .count();
    assert_eq!(faults, 8, "exchanges annotated as HTTP 500 faults");
}

// ===== PSRP replay =====

/// The recorded client's CREATE_PIPELINE and SESSION_CAPABILITY, reassembled from the
/// Command arguments, the Sends that continue them, and the creationXml.
fn recorded_pipeline(
    requests: &[&wsman::Request],
) -> Option<(
    psfleet_core::psrp::messages::CreatePipeline,
    psfleet_core::psrp::messages::SessionCapability,
)> {
    let mut defrag = Defragmenter::new();
    let mut pipeline = None;
    let mut capability = None;
    for request in requests {
        let blobs: Vec<Vec<u8>> = match &request.body {
            RequestBody::Create(create) => create.creation_xml.clone().into_iter().collect(),
            RequestBody::Command(line) => line.psrp_arguments().ok().into_iter().collect(),
            RequestBody::Send(send) => send.streams.iter().map(|s| s.data.clone()).collect(),
            _ => Vec::new(),
        };
        for blob in blobs {
            for bytes in defrag.push_blob(&blob).ok()? {
                match PsrpMessage::decode(&Message::decode(&bytes).ok()?).ok()? {
                    PsrpMessage::CreatePipeline(p) => pipeline = Some(p),
                    PsrpMessage::SessionCapability(c) => capability = Some(c),
                    _ => {}
                }
            }
        }
    }
    Some((pipeline?, capability?))
}

/// What the recorded host sent for the pipeline: output objects and the final state,
/// reassembled from the recorded Receive responses.
fn recorded_results(exchanges: &[Exchange]) -> (Vec<clixml::Value>, Option<i32>) {
    let mut defrag = Defragmenter::new();
    let mut outputs = Vec::new();
    let mut state = None;
    for exchange in exchanges {
        let Some(raw) = exchange.response.as_deref() else {
            continue;
        };
        let Ok(response) = Response::parse(raw.as_bytes()) else {
            continue;
        };
        let ResponseBody::ReceiveResponse(receive) = response.body else {
            continue;
        };
        for stream in receive.streams {
            for bytes in defrag.push_blob(&stream.data).unwrap_or_default() {
                match Message::decode(&bytes)
                    .ok()
                    .map(|m| PsrpMessage::decode(&m))
                {
                    Some(Ok(PsrpMessage::PipelineOutput(out))) => outputs.push(out.value),
                    Some(Ok(PsrpMessage::PipelineState(s))) => state = Some(s.state.value()),
                    _ => {}
                }
            }
        }
    }
    (outputs, state)
}

fn replay_psrp(
    recording: &Recording,
    range: std::ops::RangeInclusive<usize>,
    parsed: &[Option<wsman::Request>],
    tally: &mut Tally,
) {
    use psfleet_core::psrp::client::{
        PsrpEvent, PsrpSettings, ScriptRun, ScriptSpec, Step as PsrpStep,
    };

    let file = recording.name.as_str();
    let first = *range.start();
    let requests: Vec<&wsman::Request> = parsed[range.clone()].iter().flatten().collect();
    let exchanges = &recording.exchanges[range];
    let Some((pipeline, capability)) = recorded_pipeline(&requests) else {
        return tally.mismatch(file, first, "recorded CREATE_PIPELINE does not decode");
    };
    let [command] = pipeline.pipeline.commands.as_slice() else {
        return; // several commands in one pipeline: not a psfleet script run
    };
    // psfleet runs one script with no pipeline input; pypsrp's file copies stream input.
    if !command.is_script || !pipeline.no_input {
        return;
    }
    let Some(create) = requests.first() else {
        return;
    };
    let recorded = RecordedShell::from_create(create);
    let mut settings = PsrpSettings::new(recorded.endpoint);
    settings.configuration_name = create
        .header
        .resource_uri
        .trim_start_matches(wsman::resources::POWERSHELL_PREFIX)
        .to_owned();
    settings.session_id = recorded.session_id;
    settings.max_envelope_size = recorded.max_envelope_size;
    settings.operation_timeout = recorded
        .operation_timeout
        .unwrap_or(settings.operation_timeout);
    settings.no_profile = recorded.no_profile;
    if let Some(protocol) = capability.protocol() {
        settings.protocol_version = protocol;
    }
    let spec = ScriptSpec {
        script: command.command.clone(),
        arguments: command.arguments.clone(),
    };

    // Our ids are fresh; the recorded responses are rewritten to refer to them.
    let mut ids = ids::SequentialIds::starting_after(0x5f5f_0000);
    let (mut run, mut next) = ScriptRun::start(settings, spec, &mut ids);
    let mut renames: Vec<(String, String)> = Vec::new();
    let mut events = Vec::new();
    let mut outcome = None;
    let mut replayed = 0;
    for (offset, (exchange, recorded)) in exchanges.iter().zip(&requests).enumerate() {
        let index = first + offset;
        let ours = &*next;
        // pypsrp sometimes signals Terminate after a finished pipeline; psfleet deletes the
        // shell straight away (the Signal is a wasted round trip), so skip that exchange.
        if recorded.header.action == Action::Signal && ours.header.action == Action::Delete {
            continue;
        }
        replayed += 1;
        if ours.header.action != recorded.header.action
            || ours.header.resource_uri != recorded.header.resource_uri
            || ours.header.options != recorded.header.options
        {
            return tally.mismatch(
                file,
                index,
                format!(
                    "PSRP replay: sent {} {:?}, recording has {} {:?}",
                    ours.header.action.uri(),
                    ours.header.options,
                    recorded.header.action.uri(),
                    recorded.header.options
                ),
            );
        }
        let pairs = [
            (
                Some(recorded.header.message_id),
                Some(ours.header.message_id),
            ),
            (recorded_shell(recorded), recorded_shell(ours)),
            (recorded_command(recorded), recorded_command(ours)),
        ];
        for (theirs, mine) in pairs {
            if let (Some(theirs), Some(mine)) = (theirs, mine) {
                renames.push((ids::upper(&theirs), ids::upper(&mine)));
            }
        }
        let Some(raw) = exchange.response.as_deref() else {
            return;
        };
        let mut text = raw.to_owned();
        for (theirs, mine) in &renames {
            text = text
                .replace(theirs.as_str(), mine)
                .replace(&theirs.to_lowercase(), mine);
        }
        let response = match Response::parse(text.as_bytes()) {
            Ok(response) => response,
            Err(e) => return tally.mismatch(file, index, format!("rewritten response: {e}")),
        };
        let step = run.handle(response, &mut ids);
        events.extend(std::iter::from_fn(|| run.poll_event()));
        match step {
            PsrpStep::Send(request) => next = request,
            PsrpStep::Finished(result) => {
                outcome = Some(result);
                if offset + 1 != exchanges.len() {
                    return tally.mismatch(file, index, "PSRP run finished before the recording");
                }
                debug_assert!(replayed > 0);
            }
        }
    }
    let Some(outcome) = outcome else {
        return tally.mismatch(file, first, "PSRP run did not finish with the recording");
    };
    tally.psrp_runs += 1;
    let (recorded_outputs, recorded_state) = recorded_results(exchanges);
    let outputs: Vec<&clixml::Value> = events
        .iter()
        .filter_map(|e| match e {
            PsrpEvent::Output(v) => Some(v),
            _ => None,
        })
        .collect();
    if outputs.len() != recorded_outputs.len()
        || outputs.iter().zip(&recorded_outputs).any(|(a, b)| *a != b)
    {
        tally.mismatch(
            file,
            first,
            format!(
                "PSRP replay: {} output objects, recording has {}",
                outputs.len(),
                recorded_outputs.len()
            ),
        );
    }
    let state = outcome.as_ref().ok().map(|o| o.state.value());
    if state != recorded_state {
        tally.mismatch(
            file,
            first,
            format!("PSRP replay: outcome {outcome:?}, recorded pipeline state {recorded_state:?}"),
        );
    }
    if !events
        .iter()
        .any(|e| matches!(e, PsrpEvent::ShellDeleted { .. }))
    {
        tally.mismatch(file, first, "PSRP replay: shell not reported deleted");
    }
}

fn recorded_shell(request: &wsman::Request) -> Option<Uuid> {
    match &request.body {
        RequestBody::Create(create) => create.shell_id,
        _ => request.header.shell_id(),
    }
}

fn recorded_command(request: &wsman::Request) -> Option<Uuid> {
    match &request.body {
        RequestBody::Command(line) => line.command_id,
        RequestBody::Receive(receive) => receive.command_id,
        RequestBody::Signal(signal) => signal.command_id,
        _ => None,
    }
}
