//! Responses: the simulator builds them, the client parses them.
//!
//! [`Response::to_xml`] writes the Windows shape: `xml:lang="en-US"` on the envelope, the
//! `a`/`x`/`n`/`w`/`rsp`/`p` prefixes and the namespace set Windows declares for each reply
//! kind, `rsp` re-declared on `rsp:Shell`, empty elements written the way Windows writes
//! them (R:test_psrp_open_runspace, R:test_winrs_standard, R:test_psrp_disconnect_runspaces).

use uuid::Uuid;

use super::WsmanError;
use super::config::WinrmConfig;
use super::fault::{FaultAction, WsmanFault};
use super::names::{Action, CommandState, ns, resources};
use super::request::{Selector, opt_attr_uuid, parse_selectors, write_selector_set};
use super::shell::ShellInfo;
use super::util::{
    self, child_text, decode_base64, describe_first, encode_base64, guid, opt_child, parse_bool,
    parse_number, parse_uuid, required, required_attr, split_streams, write_opt, xs_bool,
};
use crate::xml::{self, Element, XML_NS, XmlWriter};

/// A WS-Management response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The SOAP header.
    pub header: ResponseHeader,
    /// The SOAP body.
    pub body: ResponseBody,
}

/// The SOAP header of a response, in Windows' order: Action, MessageID, ActivityId, To,
/// RelatesTo (wire-facts 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    /// `a:Action`.
    pub action: Action,
    /// `a:MessageID`.
    pub message_id: Uuid,
    /// `p:ActivityId` (present on newer hosts; an ETW correlation id).
    pub activity_id: Option<Uuid>,
    /// `a:To`, always the anonymous role on Windows.
    pub to: Option<String>,
    /// `a:RelatesTo`: the MessageID of the request.
    pub relates_to: Option<Uuid>,
    /// `xml:lang` of the envelope (`en-US`).
    pub lang: Option<String>,
}

impl ResponseHeader {
    /// A Windows-style header: `a:To` anonymous, `xml:lang="en-US"`, no ActivityId.
    pub fn new(action: Action, message_id: Uuid, relates_to: Uuid) -> Self {
        Self {
            action,
            message_id,
            activity_id: None,
            to: Some(resources::ANONYMOUS.to_owned()),
            relates_to: Some(relates_to),
            lang: Some("en-US".to_owned()),
        }
    }
}

/// The body of a response: one variant per reply action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// Reply to Create: the new shell's address and description.
    CreateResponse(CreateResponse),
    /// Reply to Get: the WinRM config or a shell's description.
    GetResponse(GetResponse),
    /// Reply to Delete (empty body).
    DeleteResponse,
    /// Reply to Enumerate (items returned at once with OptimizeEnumeration).
    EnumerateResponse(EnumerationBatch),
    /// Reply to Pull.
    PullResponse(EnumerationBatch),
    /// Reply to Command.
    CommandResponse(CommandResponse),
    /// Reply to Send (`<rsp:SendResponse/>`).
    SendResponse,
    /// Reply to Receive.
    ReceiveResponse(ReceiveResponse),
    /// Reply to Signal (`<rsp:SignalResponse/>`).
    SignalResponse,
    /// Reply to Disconnect (empty body).
    DisconnectResponse,
    /// Reply to Reconnect (empty body).
    ReconnectResponse,
    /// Reply to Connect.
    ConnectResponse(ConnectResponse),
    /// A SOAP fault (HTTP 500).
    Fault(WsmanFault),
    /// A body this module does not type; kept and written back as it was.
    Other(Vec<Element>),
}

impl ResponseBody {
    /// The action Windows puts in the header for this body.
    pub fn action(&self) -> Option<Action> {
        Some(match self {
            ResponseBody::CreateResponse(_) => Action::CreateResponse,
            ResponseBody::GetResponse(_) => Action::GetResponse,
            ResponseBody::DeleteResponse => Action::DeleteResponse,
            ResponseBody::EnumerateResponse(_) => Action::EnumerateResponse,
            ResponseBody::PullResponse(_) => Action::PullResponse,
            ResponseBody::CommandResponse(_) => Action::CommandResponse,
            ResponseBody::SendResponse => Action::SendResponse,
            ResponseBody::ReceiveResponse(_) => Action::ReceiveResponse,
            ResponseBody::SignalResponse => Action::SignalResponse,
            ResponseBody::DisconnectResponse => Action::DisconnectResponse,
            ResponseBody::ReconnectResponse => Action::ReconnectResponse,
            ResponseBody::ConnectResponse(_) => Action::ConnectResponse,
            ResponseBody::Fault(f) => f.action.action(),
            ResponseBody::Other(_) => return None,
        })
    }
}

/// `x:ResourceCreated` and `rsp:Shell` of a CreateResponse (wire-facts 2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateResponse {
    /// `a:Address`: the endpoint URL.
    pub address: String,
    /// `a:ReferenceParameters/w:ResourceURI`.
    pub resource_uri: Option<String>,
    /// `a:ReferenceParameters/w:SelectorSet` (the `ShellId`).
    pub selectors: Vec<Selector>,
    /// The created shell's description.
    pub shell: Option<ShellInfo>,
}

impl CreateResponse {
    /// The new shell's id, from the selector set (or the shell description).
    pub fn shell_id(&self) -> Option<Uuid> {
        self.selectors
            .iter()
            .find(|s| s.name == "ShellId")
            .and_then(|s| crate::ids::parse(&s.value))
            .or_else(|| self.shell.as_ref().and_then(|s| s.shell_id))
    }
}

/// The body of a GetResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetResponse {
    /// `cfg:Config` (Get of [`resources::CONFIG`]).
    Config(WinrmConfig),
    /// `rsp:Shell` (Get of [`resources::SHELLS`] with a `ShellId` selector).
    Shell(ShellInfo),
}

/// Items of an EnumerateResponse or PullResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnumerationBatch {
    /// `n:EnumerationContext` (empty when the enumeration is complete).
    pub context: Option<String>,
    /// The items (`w:Items` in an optimized EnumerateResponse, `n:Items` in Pull).
    pub items: Vec<EnumerationItem>,
    /// `EndOfSequence` present.
    pub end_of_sequence: bool,
}

/// One enumerated item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnumerationItem {
    /// A shell.
    Shell(Box<ShellInfo>),
    /// A command of a shell (Enumerate with a ShellId filter).
    Command(CommandInfo),
    /// Any other element, kept verbatim.
    Other(Element),
}

/// `rsp:Command` in an enumeration (R:test_psrp_disconnected_commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    /// `rsp:CommandId`.
    pub command_id: Option<Uuid>,
    /// `rsp:CommandLine` (empty for PSRP pipelines).
    pub command_line: Option<String>,
    /// `rsp:CommandState` as plain text (`Running`).
    pub state: Option<String>,
}

/// `rsp:CommandResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResponse {
    /// `rsp:CommandId`.
    pub command_id: Uuid,
}

/// `rsp:ReceiveResponse` (MS-WSMV 2.2.4.27).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiveResponse {
    /// The `rsp:Stream` elements in order (there can be many, R:test_psrp_small_msg_size).
    pub streams: Vec<ReceivedStream>,
    /// `rsp:CommandState`, when the command's state is reported.
    pub command_state: Option<CommandStateInfo>,
}

/// One `rsp:Stream` of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedStream {
    /// `@Name` (`stdout`, `stderr`).
    pub name: String,
    /// `@CommandId`; absent for the shell's own output (PSRP runspace-pool messages).
    pub command_id: Option<Uuid>,
    /// `@End="true"`: last chunk of this stream.
    pub end: bool,
    /// The decoded bytes.
    pub data: Vec<u8>,
}

/// `rsp:CommandState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandStateInfo {
    /// `@CommandId`.
    pub command_id: Option<Uuid>,
    /// `@State`.
    pub state: CommandState,
    /// `rsp:ExitCode` (with Done).
    pub exit_code: Option<i64>,
}

/// `rsp:ConnectResponse` (MS-WSMV 2.2.4.9).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    /// `rsp:InputStreams`.
    pub input_streams: Option<Vec<String>>,
    /// `rsp:OutputStreams`.
    pub output_streams: Option<Vec<String>>,
    /// PSRP `connectResponseXml` (base64 on the wire).
    pub connect_response_xml: Option<Vec<u8>>,
}

impl Response {
    /// A response from its parts.
    pub fn new(header: ResponseHeader, body: ResponseBody) -> Self {
        Self { header, body }
    }

    /// The reply to a request: header action from the body, RelatesTo the request's
    /// MessageID.
    pub fn reply(relates_to: Uuid, message_id: Uuid, body: ResponseBody) -> Self {
        let action = body
            .action()
            .unwrap_or_else(|| Action::Other(String::new()));
        Self {
            header: ResponseHeader::new(action, message_id, relates_to),
            body,
        }
    }

    /// The HTTP status Windows sends this response with: 500 for every fault
    /// (wire-facts 1; R:test_winrs_operation_timeout `transport_error`), 200 otherwise.
    pub fn http_status(&self) -> u16 {
        if matches!(self.body, ResponseBody::Fault(_)) {
            500
        } else {
            200
        }
    }

    /// The fault, if this response is one.
    pub fn fault(&self) -> Option<&WsmanFault> {
        match &self.body {
            ResponseBody::Fault(f) => Some(f),
            _ => None,
        }
    }

    /// Parses any response (one tree parse). A fault body parses to
    /// [`ResponseBody::Fault`], whatever the HTTP status was.
    pub fn parse(bytes: &[u8]) -> Result<Self, WsmanError> {
        let root = xml::parse(bytes)?;
        let env = util::envelope(&root)?;
        let header = env
            .header
            .ok_or(WsmanError::MissingElement("s:Envelope/s:Header"))?;
        let action = Action::from_uri(
            &required(header, ns::ADDRESSING, "Action", "s:Header/a:Action")?.text(),
        );
        let message_id = parse_uuid(
            &required(header, ns::ADDRESSING, "MessageID", "s:Header/a:MessageID")?.text(),
            "a:MessageID",
        )?;
        let header = ResponseHeader {
            message_id,
            activity_id: opt_child(header, ns::WSMV, "ActivityId", |t| {
                parse_uuid(t, "p:ActivityId")
            })?,
            to: child_text(header, ns::ADDRESSING, "To"),
            relates_to: opt_child(header, ns::ADDRESSING, "RelatesTo", |t| {
                parse_uuid(t, "a:RelatesTo")
            })?,
            lang: env.root.attr_ns(XML_NS, "lang").map(str::to_owned),
            action,
        };
        let body = parse_body(&header.action, env.body)?;
        Ok(Self { header, body })
    }

    /// Writes the response in the Windows shape.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut w = XmlWriter::with_capacity(1024 + self.body_size_hint());
        let mut attrs: Vec<(&str, &str)> = Vec::with_capacity(9);
        if let Some(lang) = &self.header.lang {
            attrs.push(("xml:lang", lang));
        }
        for (prefix, uri) in namespace_set(&self.body) {
            attrs.push((prefix, uri));
        }
        w.start("s:Envelope", &attrs);
        w.start("s:Header", &[]);
        w.text_element("a:Action", &[], self.header.action.uri());
        w.text_element(
            "a:MessageID",
            &[],
            &crate::ids::message_id(&self.header.message_id),
        );
        if let Some(id) = &self.header.activity_id {
            w.text_element("p:ActivityId", &[], &guid(id));
        }
        write_opt(&mut w, "a:To", self.header.to.as_deref());
        if let Some(id) = &self.header.relates_to {
            w.text_element("a:RelatesTo", &[], &crate::ids::message_id(id));
        }
        w.end("s:Header");
        w.start("s:Body", &[]);
        write_body(&self.body, &mut w);
        w.end("s:Body");
        w.end("s:Envelope");
        w.into_bytes()
    }

    fn body_size_hint(&self) -> usize {
        match &self.body {
            ResponseBody::ReceiveResponse(r) => r
                .streams
                .iter()
                .map(|s| s.data.len().div_ceil(3) * 4 + 128)
                .sum(),
            ResponseBody::ConnectResponse(c) => {
                c.connect_response_xml.as_ref().map_or(0, |x| x.len() * 2)
            }
            _ => 0,
        }
    }
}

/// The namespaces Windows declares on the envelope for each reply kind (recorded
/// envelopes; `cfg`, `rsp` on shells and `f` are declared where they are used).
fn namespace_set(body: &ResponseBody) -> &'static [(&'static str, &'static str)] {
    const S: (&str, &str) = ("xmlns:s", ns::SOAP);
    const A: (&str, &str) = ("xmlns:a", ns::ADDRESSING);
    const X: (&str, &str) = ("xmlns:x", ns::TRANSFER);
    const E: (&str, &str) = ("xmlns:e", ns::EVENTING);
    const N: (&str, &str) = ("xmlns:n", ns::ENUMERATION);
    const W: (&str, &str) = ("xmlns:w", ns::WSMAN);
    const RSP: (&str, &str) = ("xmlns:rsp", ns::SHELL);
    const P: (&str, &str) = ("xmlns:p", ns::WSMV);
    match body {
        ResponseBody::CreateResponse(_)
        | ResponseBody::CommandResponse(_)
        | ResponseBody::SendResponse
        | ResponseBody::SignalResponse
        | ResponseBody::ConnectResponse(_) => &[S, A, X, W, RSP, P],
        ResponseBody::ReceiveResponse(_) => &[S, A, W, RSP, P],
        ResponseBody::DeleteResponse
        | ResponseBody::DisconnectResponse
        | ResponseBody::ReconnectResponse => &[S, A, W, P],
        ResponseBody::EnumerateResponse(_) | ResponseBody::PullResponse(_) => &[S, A, N, W, P],
        ResponseBody::GetResponse(_) => &[S, A, X, W, P],
        ResponseBody::Fault(_) => &[S, A, X, E, N, W, P],
        ResponseBody::Other(_) => &[S, A, X, N, W, RSP, P],
    }
}

fn expect<'a>(
    body: &'a Element,
    action: &Action,
    nsu: &str,
    name: &str,
) -> Result<&'a Element, WsmanError> {
    body.child(nsu, name)
        .ok_or_else(|| WsmanError::UnexpectedBody {
            action: util::cut(action.uri()),
            found: describe_first(body),
        })
}

fn parse_body(action: &Action, body: &Element) -> Result<ResponseBody, WsmanError> {
    if let Some(fault) = body.child(ns::SOAP, "Fault") {
        let kind = if *action == Action::AddressingFault {
            FaultAction::Addressing
        } else {
            FaultAction::Wsman
        };
        return Ok(ResponseBody::Fault(WsmanFault::parse(fault, kind)?));
    }
    let empty = body.elements().next().is_none();
    let other = || ResponseBody::Other(body.elements().cloned().collect());
    Ok(match action {
        Action::CreateResponse => {
            let rc = expect(body, action, ns::TRANSFER, "ResourceCreated")?;
            let refs = rc.child(ns::ADDRESSING, "ReferenceParameters");
            ResponseBody::CreateResponse(CreateResponse {
                address: required(rc, ns::ADDRESSING, "Address", "x:ResourceCreated/a:Address")?
                    .text()
                    .into_owned(),
                resource_uri: refs.and_then(|r| child_text(r, ns::WSMAN, "ResourceURI")),
                selectors: match refs.and_then(|r| r.child(ns::WSMAN, "SelectorSet")) {
                    Some(set) => parse_selectors(set)?,
                    None => Vec::new(),
                },
                shell: body
                    .child(ns::SHELL, "Shell")
                    .map(ShellInfo::parse)
                    .transpose()?,
            })
        }
        Action::GetResponse => {
            if let Some(cfg) = body.child(ns::CONFIG, "Config") {
                ResponseBody::GetResponse(GetResponse::Config(WinrmConfig::parse(cfg)?))
            } else if let Some(shell) = body.child(ns::SHELL, "Shell") {
                ResponseBody::GetResponse(GetResponse::Shell(ShellInfo::parse(shell)?))
            } else {
                other()
            }
        }
        Action::DeleteResponse if empty => ResponseBody::DeleteResponse,
        Action::DisconnectResponse if empty => ResponseBody::DisconnectResponse,
        Action::ReconnectResponse if empty => ResponseBody::ReconnectResponse,
        Action::EnumerateResponse => ResponseBody::EnumerateResponse(parse_batch(expect(
            body,
            action,
            ns::ENUMERATION,
            "EnumerateResponse",
        )?)?),
        Action::PullResponse => ResponseBody::PullResponse(parse_batch(expect(
            body,
            action,
            ns::ENUMERATION,
            "PullResponse",
        )?)?),
        Action::CommandResponse => {
            let cr = expect(body, action, ns::SHELL, "CommandResponse")?;
            ResponseBody::CommandResponse(CommandResponse {
                command_id: parse_uuid(
                    &required(
                        cr,
                        ns::SHELL,
                        "CommandId",
                        "rsp:CommandResponse/rsp:CommandId",
                    )?
                    .text(),
                    "rsp:CommandResponse/rsp:CommandId",
                )?,
            })
        }
        Action::SendResponse if body.child(ns::SHELL, "SendResponse").is_some() => {
            ResponseBody::SendResponse
        }
        Action::SignalResponse if body.child(ns::SHELL, "SignalResponse").is_some() => {
            ResponseBody::SignalResponse
        }
        Action::ReceiveResponse => ResponseBody::ReceiveResponse(parse_receive(expect(
            body,
            action,
            ns::SHELL,
            "ReceiveResponse",
        )?)?),
        Action::ConnectResponse => {
            let cr = expect(body, action, ns::SHELL, "ConnectResponse")?;
            ResponseBody::ConnectResponse(ConnectResponse {
                input_streams: child_text(cr, ns::SHELL, "InputStreams").map(|t| split_streams(&t)),
                output_streams: child_text(cr, ns::SHELL, "OutputStreams")
                    .map(|t| split_streams(&t)),
                connect_response_xml: cr
                    .child(ns::POWERSHELL, "connectResponseXml")
                    .map(|e| decode_base64(&e.text(), "rsp:ConnectResponse/connectResponseXml"))
                    .transpose()?,
            })
        }
        _ => other(),
    })
}

fn parse_batch(e: &Element) -> Result<EnumerationBatch, WsmanError> {
    let items_el = e
        .child(ns::WSMAN, "Items")
        .or_else(|| e.child(ns::ENUMERATION, "Items"));
    let mut items = Vec::new();
    if let Some(list) = items_el {
        for item in list.elements() {
            items.push(if item.is(ns::SHELL, "Shell") {
                EnumerationItem::Shell(Box::new(ShellInfo::parse(item)?))
            } else if item.is(ns::SHELL, "Command") {
                EnumerationItem::Command(CommandInfo {
                    command_id: opt_child(item, ns::SHELL, "CommandId", |t| {
                        parse_uuid(t, "rsp:Command/rsp:CommandId")
                    })?,
                    command_line: child_text(item, ns::SHELL, "CommandLine"),
                    state: child_text(item, ns::SHELL, "CommandState"),
                })
            } else {
                EnumerationItem::Other(item.clone())
            });
        }
    }
    Ok(EnumerationBatch {
        context: child_text(e, ns::ENUMERATION, "EnumerationContext"),
        items,
        end_of_sequence: e.child(ns::WSMAN, "EndOfSequence").is_some()
            || e.child(ns::ENUMERATION, "EndOfSequence").is_some(),
    })
}

fn parse_receive(rr: &Element) -> Result<ReceiveResponse, WsmanError> {
    let streams = rr
        .children_named(ns::SHELL, "Stream")
        .map(|s| {
            Ok(ReceivedStream {
                name: required_attr(s, "Name", "rsp:ReceiveResponse/rsp:Stream")?.to_owned(),
                command_id: opt_attr_uuid(s, "CommandId", "rsp:Stream/@CommandId")?,
                end: s
                    .attr("End")
                    .map(|v| parse_bool(v, "rsp:Stream/@End"))
                    .transpose()?
                    .unwrap_or(false),
                data: decode_base64(&s.text(), "rsp:ReceiveResponse/rsp:Stream")?,
            })
        })
        .collect::<Result<Vec<_>, WsmanError>>()?;
    let command_state = match rr.child(ns::SHELL, "CommandState") {
        Some(cs) => Some(CommandStateInfo {
            command_id: opt_attr_uuid(cs, "CommandId", "rsp:CommandState/@CommandId")?,
            state: CommandState::from_uri(required_attr(cs, "State", "rsp:CommandState")?),
            exit_code: opt_child(cs, ns::SHELL, "ExitCode", |t| {
                parse_number(t, "rsp:CommandState/rsp:ExitCode")
            })?,
        }),
        None => None,
    };
    Ok(ReceiveResponse {
        streams,
        command_state,
    })
}

fn write_body(body: &ResponseBody, w: &mut XmlWriter) {
    match body {
        ResponseBody::CreateResponse(c) => {
            w.start("x:ResourceCreated", &[]);
            w.text_element("a:Address", &[], &c.address);
            w.start("a:ReferenceParameters", &[]);
            write_opt(w, "w:ResourceURI", c.resource_uri.as_deref());
            if !c.selectors.is_empty() {
                write_selector_set(w, "w", &c.selectors);
            }
            w.end("a:ReferenceParameters");
            w.end("x:ResourceCreated");
            if let Some(shell) = &c.shell {
                shell.write(w);
            }
        }
        ResponseBody::GetResponse(GetResponse::Config(cfg)) => cfg.write(w),
        ResponseBody::GetResponse(GetResponse::Shell(shell)) => shell.write(w),
        ResponseBody::DeleteResponse
        | ResponseBody::DisconnectResponse
        | ResponseBody::ReconnectResponse => {}
        ResponseBody::EnumerateResponse(b) => {
            write_batch(w, "n:EnumerateResponse", "w", b);
        }
        ResponseBody::PullResponse(b) => {
            write_batch(w, "n:PullResponse", "n", b);
        }
        ResponseBody::CommandResponse(c) => {
            w.start("rsp:CommandResponse", &[]);
            w.text_element("rsp:CommandId", &[], &guid(&c.command_id));
            w.end("rsp:CommandResponse");
        }
        ResponseBody::SendResponse => {
            w.empty("rsp:SendResponse", &[]);
        }
        ResponseBody::SignalResponse => {
            w.empty("rsp:SignalResponse", &[]);
        }
        ResponseBody::ReceiveResponse(r) => {
            w.start("rsp:ReceiveResponse", &[]);
            for s in &r.streams {
                let id = s.command_id.map(|id| guid(&id));
                let mut attrs: Vec<(&str, &str)> = vec![("Name", s.name.as_str())];
                if let Some(id) = &id {
                    attrs.push(("CommandId", id.as_str()));
                }
                if s.end {
                    attrs.push(("End", xs_bool(true)));
                }
                // Windows writes `<rsp:Stream ...></rsp:Stream>` for an empty final chunk.
                w.start("rsp:Stream", &attrs);
                if !s.data.is_empty() {
                    w.text(&encode_base64(&s.data));
                }
                w.end("rsp:Stream");
            }
            if let Some(cs) = &r.command_state {
                let id = cs.command_id.map(|id| guid(&id));
                let mut attrs: Vec<(&str, &str)> = Vec::with_capacity(2);
                if let Some(id) = &id {
                    attrs.push(("CommandId", id.as_str()));
                }
                attrs.push(("State", cs.state.uri()));
                // Windows writes a start/end pair even without an ExitCode.
                w.start("rsp:CommandState", &attrs);
                if let Some(code) = cs.exit_code {
                    w.text_element("rsp:ExitCode", &[], &code.to_string());
                }
                w.end("rsp:CommandState");
            }
            w.end("rsp:ReceiveResponse");
        }
        ResponseBody::ConnectResponse(c) => {
            if c.input_streams.is_none()
                && c.output_streams.is_none()
                && c.connect_response_xml.is_none()
            {
                w.empty("rsp:ConnectResponse", &[]);
                return;
            }
            w.start("rsp:ConnectResponse", &[]);
            let input = c.input_streams.as_ref().map(|s| s.join(" "));
            write_opt(w, "rsp:InputStreams", input.as_deref());
            let output = c.output_streams.as_ref().map(|s| s.join(" "));
            write_opt(w, "rsp:OutputStreams", output.as_deref());
            if let Some(x) = &c.connect_response_xml {
                w.text_element(
                    "connectResponseXml",
                    &[("xmlns", ns::POWERSHELL)],
                    &encode_base64(x),
                );
            }
            w.end("rsp:ConnectResponse");
        }
        ResponseBody::Fault(f) => f.write(w),
        ResponseBody::Other(elements) => {
            for e in elements {
                e.write_to(w);
            }
        }
    }
}

fn write_batch(w: &mut XmlWriter, element: &str, items_prefix: &str, b: &EnumerationBatch) {
    w.start(element, &[]);
    if let Some(ctx) = &b.context {
        // Windows writes the (empty) context as a start/end pair.
        w.start("n:EnumerationContext", &[]);
        if !ctx.is_empty() {
            w.text(ctx);
        }
        w.end("n:EnumerationContext");
    }
    if !b.items.is_empty() {
        let items = format!("{items_prefix}:Items");
        w.start(&items, &[]);
        for item in &b.items {
            match item {
                EnumerationItem::Shell(s) => s.write(w),
                EnumerationItem::Command(c) => {
                    w.start("rsp:Command", &[("xmlns:rsp", ns::SHELL)]);
                    let id = c.command_id.map(|id| guid(&id));
                    write_opt(w, "rsp:CommandId", id.as_deref());
                    if let Some(line) = &c.command_line {
                        w.start("rsp:CommandLine", &[]);
                        if !line.is_empty() {
                            w.text(line);
                        }
                        w.end("rsp:CommandLine");
                    }
                    write_opt(w, "rsp:CommandState", c.state.as_deref());
                    w.end("rsp:Command");
                }
                EnumerationItem::Other(e) => e.write_to(w),
            }
        }
        w.end(&items);
    }
    if b.end_of_sequence {
        w.empty(&format!("{items_prefix}:EndOfSequence"), &[]);
    }
    w.end(element);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wsman::{FaultCode, ShellState};

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn round_trip(response: &Response) -> Response {
        let bytes = response.to_xml();
        let parsed = Response::parse(&bytes).unwrap();
        assert_eq!(&parsed, response);
        parsed
    }

    fn psrp_shell() -> ShellInfo {
        ShellInfo {
            shell_id: Some(id(0x51)),
            resource_uri: Some(resources::powershell("Microsoft.PowerShell")),
            owner: Some("HOST\\user".into()),
            client_ip: Some("10.0.2.2".into()),
            process_id: Some(1868),
            idle_timeout: Some(Duration::from_secs(7200)),
            input_streams: Some(vec!["stdin".into(), "pr".into()]),
            output_streams: Some(vec!["stdout".into()]),
            max_idle_timeout: Some(Duration::from_millis(2_147_483_647)),
            locale: Some("en-US".into()),
            data_locale: Some("en-US".into()),
            compression_mode: Some("NoCompression".into()),
            profile_loaded: Some(true),
            encoding: Some("UTF8".into()),
            buffer_mode: Some("Block".into()),
            state: Some(ShellState::Disconnected),
            shell_run_time: Some(Duration::from_secs(9)),
            shell_inactivity: Some(Duration::ZERO),
            memory_used: Some("46MB".into()),
            child_processes: Some(0),
            ..ShellInfo::default()
        }
    }

    #[test]
    fn every_body_round_trips() {
        let cmd = id(0xC1);
        let bodies = vec![
            ResponseBody::CreateResponse(CreateResponse {
                address: "https://host:5986/wsman".into(),
                resource_uri: Some(resources::CMD_SHELL.into()),
                selectors: vec![Selector::shell_id(&id(0x51))],
                shell: Some(ShellInfo {
                    name: Some("shell 1".into()),
                    environment: vec![crate::wsman::EnvironmentVariable {
                        name: "k".into(),
                        value: "v".into(),
                    }],
                    working_directory: Some("C:\\".into()),
                    lifetime: Some(Duration::from_secs(60)),
                    ..psrp_shell()
                }),
            }),
            ResponseBody::GetResponse(GetResponse::Config(WinrmConfig::server_2016())),
            ResponseBody::GetResponse(GetResponse::Shell(psrp_shell())),
            ResponseBody::DeleteResponse,
            ResponseBody::EnumerateResponse(EnumerationBatch {
                context: Some(String::new()),
                items: vec![
                    EnumerationItem::Shell(Box::new(psrp_shell())),
                    EnumerationItem::Command(CommandInfo {
                        command_id: Some(cmd),
                        command_line: Some(String::new()),
                        state: Some("Running".into()),
                    }),
                ],
                end_of_sequence: true,
            }),
            ResponseBody::EnumerateResponse(EnumerationBatch {
                context: Some(String::new()),
                items: Vec::new(),
                end_of_sequence: true,
            }),
            ResponseBody::PullResponse(EnumerationBatch {
                context: Some("next".into()),
                items: vec![EnumerationItem::Shell(Box::default())],
                end_of_sequence: false,
            }),
            ResponseBody::CommandResponse(CommandResponse { command_id: cmd }),
            ResponseBody::SendResponse,
            ResponseBody::ReceiveResponse(ReceiveResponse {
                streams: vec![
                    ReceivedStream {
                        name: "stdout".into(),
                        command_id: Some(cmd),
                        end: false,
                        data: b"hi\r\n".to_vec(),
                    },
                    ReceivedStream {
                        name: "stderr".into(),
                        command_id: Some(cmd),
                        end: true,
                        data: Vec::new(),
                    },
                ],
                command_state: Some(CommandStateInfo {
                    command_id: Some(cmd),
                    state: CommandState::Done,
                    exit_code: Some(-1),
                }),
            }),
            ResponseBody::ReceiveResponse(ReceiveResponse {
                streams: vec![ReceivedStream {
                    name: "stdout".into(),
                    command_id: None,
                    end: false,
                    data: vec![0xEF, 0xBB, 0xBF, 0],
                }],
                command_state: Some(CommandStateInfo {
                    command_id: Some(cmd),
                    state: CommandState::Running,
                    exit_code: None,
                }),
            }),
            ResponseBody::ReceiveResponse(ReceiveResponse::default()),
            ResponseBody::SignalResponse,
            ResponseBody::DisconnectResponse,
            ResponseBody::ReconnectResponse,
            ResponseBody::ConnectResponse(ConnectResponse::default()),
            ResponseBody::ConnectResponse(ConnectResponse {
                input_streams: Some(vec!["stdin".into(), "pr".into()]),
                output_streams: Some(vec!["stdout".into()]),
                connect_response_xml: Some(b"xml".to_vec()),
            }),
            ResponseBody::Fault(WsmanFault::operation_timeout("127.0.0.1")),
        ];
        for body in bodies {
            let mut response = Response::reply(id(0xA1), id(0xB1), body);
            response.header.activity_id = Some(id(0xAC));
            let parsed = round_trip(&response);
            assert_eq!(parsed.header.relates_to, Some(id(0xA1)));
            assert_eq!(Some(parsed.header.action.clone()), parsed.body.action());
        }
    }

    #[test]
    fn writes_the_windows_envelope_and_header() {
        let response = Response::reply(id(0xA1), id(0xB1), ResponseBody::SignalResponse);
        let text = String::from_utf8(response.to_xml()).unwrap();
        assert!(
            text.starts_with(r#"<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="#),
            "{text}"
        );
        let root = xml::parse(text.as_bytes()).unwrap();
        let header: Vec<_> = root
            .child(ns::SOAP, "Header")
            .unwrap()
            .elements()
            .map(|e| format!("{}:{}", e.prefix, e.name))
            .collect();
        assert_eq!(header, ["a:Action", "a:MessageID", "a:To", "a:RelatesTo"]);
        assert!(
            text.contains("<a:RelatesTo>uuid:00000000-0000-0000-0000-0000000000A1</a:RelatesTo>")
        );
        assert!(
            text.contains("<s:Body><rsp:SignalResponse/></s:Body>"),
            "{text}"
        );
        let shell = Response::reply(
            id(1),
            id(2),
            ResponseBody::GetResponse(GetResponse::Shell(psrp_shell())),
        );
        let text = String::from_utf8(shell.to_xml()).unwrap();
        assert!(text.contains("<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"));
        assert!(text.contains("<rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut>"));
        assert!(text.contains("<rsp:ShellRunTime>P0DT0H0M9S</rsp:ShellRunTime>"));
        assert!(text.contains("<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded>"));
    }

    #[test]
    fn create_response_exposes_the_shell_id() {
        let created = CreateResponse {
            address: "a".into(),
            resource_uri: None,
            selectors: vec![Selector::shell_id(&id(9))],
            shell: None,
        };
        assert_eq!(created.shell_id(), Some(id(9)));
        let from_shell = CreateResponse {
            selectors: Vec::new(),
            shell: Some(psrp_shell()),
            ..created
        };
        assert_eq!(from_shell.shell_id(), Some(id(0x51)));
    }

    fn envelope(action: &str, body: &str) -> Vec<u8> {
        format!(
            r#"<s:Envelope xmlns:s="{}" xmlns:a="{}" xmlns:rsp="{}" xmlns:f="{}"><s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{}</a:MessageID></s:Header><s:Body>{body}</s:Body></s:Envelope>"#,
            ns::SOAP,
            ns::ADDRESSING,
            ns::SHELL,
            ns::WSMAN_FAULT,
            id(3)
        )
        .into_bytes()
    }

    #[test]
    fn hostile_responses_are_errors_not_panics() {
        use crate::wsman::actions;
        let cases: Vec<(Vec<u8>, WsmanError)> = vec![
            (
                envelope(
                    actions::RECEIVE_RESPONSE,
                    r#"<rsp:ReceiveResponse><rsp:Stream Name="stdout">!!</rsp:Stream></rsp:ReceiveResponse>"#,
                ),
                WsmanError::InvalidBase64("rsp:ReceiveResponse/rsp:Stream"),
            ),
            (
                envelope(
                    actions::RECEIVE_RESPONSE,
                    r#"<rsp:ReceiveResponse><rsp:CommandState State="x"><rsp:ExitCode>99999999999999999999</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>"#,
                ),
                WsmanError::InvalidValue {
                    field: "rsp:CommandState/rsp:ExitCode",
                    value: "99999999999999999999".into(),
                },
            ),
            (
                envelope(
                    actions::RECEIVE_RESPONSE,
                    "<rsp:ReceiveResponse><rsp:CommandState/></rsp:ReceiveResponse>",
                ),
                WsmanError::MissingAttribute {
                    element: "rsp:CommandState",
                    attribute: "State",
                },
            ),
            (
                envelope(actions::COMMAND_RESPONSE, "<rsp:CommandResponse/>"),
                WsmanError::MissingElement("rsp:CommandResponse/rsp:CommandId"),
            ),
            (
                envelope(actions::CREATE_RESPONSE, ""),
                WsmanError::UnexpectedBody {
                    action: actions::CREATE_RESPONSE.into(),
                    found: "nothing".into(),
                },
            ),
            (
                envelope(
                    actions::WSMAN_FAULT,
                    r#"<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Detail><f:WSManFault Code="-1"/></s:Detail></s:Fault>"#,
                ),
                WsmanError::InvalidValue {
                    field: "f:WSManFault/@Code",
                    value: "-1".into(),
                },
            ),
            (
                envelope(actions::WSMAN_FAULT, "<s:Fault/>"),
                WsmanError::MissingElement("s:Fault/s:Code"),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Response::parse(&bytes), Err(expected));
        }
        let no_id = format!(
            r#"<s:Envelope xmlns:s="{}" xmlns:a="{}"><s:Header><a:Action>x</a:Action></s:Header><s:Body/></s:Envelope>"#,
            ns::SOAP,
            ns::ADDRESSING
        );
        assert_eq!(
            Response::parse(no_id.as_bytes()),
            Err(WsmanError::MissingElement("s:Header/a:MessageID"))
        );
    }

    #[test]
    fn a_fault_body_wins_over_the_action() {
        let bytes = envelope(
            crate::wsman::actions::RECEIVE_RESPONSE,
            r#"<s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason><s:Text>r</s:Text></s:Reason></s:Fault>"#,
        );
        let r = Response::parse(&bytes).unwrap();
        let fault = r.fault().unwrap();
        assert_eq!(fault.code, None);
        assert_eq!(fault.reason, "r");
        assert!(!fault.is_operation_timeout());
        assert_eq!(r.http_status(), 500);
        let ok = Response::reply(id(1), id(2), ResponseBody::DeleteResponse);
        assert_eq!(ok.http_status(), 200);
        assert_ne!(Some(FaultCode::OperationTimeout), fault.code);
    }
}
