//! Requests: the client builds them, the simulator parses them.
//!
//! [`Request::to_xml`] writes exactly what pypsrp sends (wire-facts 2.1): the header
//! elements in pypsrp's order with its prefixes and `s:mustUnderstand` flags, then one body
//! shape per operation (wire-facts 2.4, 2.5; R:test_winrs_standard, R:test_psrp_open_runspace).
//! [`Request::parse`] reads any client's request by namespace and local name, so element
//! order and prefixes of other clients (pywinrm, WinRb) do not matter to it.

use std::borrow::Cow;
use std::time::Duration;

use uuid::Uuid;

use super::WsmanError;
use super::duration;
use super::names::{Action, SignalCode, ns, resources};
use super::util::{
    self, child_text, decode_base64, describe_first, encode_base64, guid, opt_child, parse_bool,
    parse_duration, parse_number, parse_uuid, py_bool, required, required_attr, split_streams,
    write_opt, write_text, xs_bool,
};
use crate::xml::{self, Element, XML_NS, XmlWriter};

/// `wsman:MaxEnvelopeSize` pypsrp sends before it has read the server's config (150 KiB,
/// the Server 2008 R2 default; R:test_winrs_standard).
pub const DEFAULT_MAX_ENVELOPE_SIZE: u32 = 153_600;
/// `wsman:OperationTimeout` pypsrp sends by default (R:test_winrs_standard).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Locale and data locale pypsrp sends.
pub const DEFAULT_LOCALE: &str = "en-US";

/// A WS-Management request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The SOAP header.
    pub header: RequestHeader,
    /// The SOAP body.
    pub body: RequestBody,
}

/// The SOAP header of a request (MS-WSMV 2.2.4; order as in wire-facts 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// `wsa:Action`.
    pub action: Action,
    /// `wsa:To`: the endpoint URL, e.g. `https://host:5986/wsman`.
    pub to: String,
    /// `wsman:ResourceURI`.
    pub resource_uri: String,
    /// `wsa:MessageID` (written `uuid:` + upper-case GUID).
    pub message_id: Uuid,
    /// `wsmv:SessionId`, the same for every request of one client session.
    pub session_id: Option<Uuid>,
    /// `wsman:MaxEnvelopeSize` in bytes: the largest response the client accepts.
    pub max_envelope_size: Option<u32>,
    /// `wsman:OperationTimeout`.
    pub operation_timeout: Option<OperationTimeout>,
    /// `wsman:Locale/@xml:lang`.
    pub locale: Option<String>,
    /// `wsmv:DataLocale/@xml:lang`.
    pub data_locale: Option<String>,
    /// `wsman:OptionSet` options, in order.
    pub options: Vec<WsOption>,
    /// `wsman:SelectorSet` selectors, in order (normally just `ShellId`).
    pub selectors: Vec<Selector>,
}

/// A `wsman:OperationTimeout` value. Windows rejects values that are not a valid
/// duration with a WS-Addressing fault quoting the text (R:test_psrp_is_alive_other_wsman_error
/// sends `PT-1S`), so an invalid value is kept verbatim for the simulator to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationTimeout {
    /// A valid duration, written `PT<seconds>S`.
    Duration(Duration),
    /// Text that is not a valid non-negative duration.
    Invalid(String),
}

impl OperationTimeout {
    /// The timeout as a duration, if valid.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            OperationTimeout::Duration(d) => Some(*d),
            OperationTimeout::Invalid(_) => None,
        }
    }

    /// Reads a header value.
    pub fn parse(text: &str) -> Self {
        match duration::parse(text) {
            Some(d) => OperationTimeout::Duration(d),
            None => OperationTimeout::Invalid(text.to_owned()),
        }
    }

    /// The header text.
    pub fn to_text(&self) -> String {
        match self {
            OperationTimeout::Duration(d) => duration::format_seconds(*d),
            OperationTimeout::Invalid(text) => text.clone(),
        }
    }
}

/// A `wsman:Option` (MS-WSMV 2.2.4.24).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsOption {
    /// `@Name`, e.g. `WINRS_SKIP_CMD_SHELL` or `protocolversion`.
    pub name: String,
    /// The text value, e.g. `False` or `2.3`.
    pub value: String,
    /// `@MustComply`, when present.
    pub must_comply: Option<bool>,
}

impl WsOption {
    /// An option without `MustComply`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            must_comply: None,
        }
    }

    /// An option with `MustComply="true"` (e.g. PSRP `protocolversion`, wire-facts 2.5).
    pub fn must_comply(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            must_comply: Some(true),
            ..Self::new(name, value)
        }
    }
}

/// A `wsman:Selector` (name and text value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// `@Name`, e.g. `ShellId`.
    pub name: String,
    /// The text value.
    pub value: String,
}

impl Selector {
    /// The `ShellId` selector for a shell, upper-case as Windows writes it.
    pub fn shell_id(id: &Uuid) -> Self {
        Self {
            name: "ShellId".to_owned(),
            value: guid(id),
        }
    }
}

/// The body of a request: one variant per operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// Create a shell (`rsp:Shell`).
    Create(CreateShell),
    /// WS-Transfer Get of the resource in the header (config, or a shell with a
    /// `ShellId` selector); empty body.
    Get,
    /// WS-Transfer Delete of the shell in the selectors; empty body.
    Delete,
    /// Enumerate shells or commands.
    Enumerate(Enumerate),
    /// Pull the next batch of an enumeration.
    Pull(Pull),
    /// Start a command (`rsp:CommandLine`).
    Command(CommandLine),
    /// Send input (`rsp:Send`).
    Send(Send),
    /// Receive output (`rsp:Receive`).
    Receive(Receive),
    /// Signal a command (`rsp:Signal`).
    Signal(Signal),
    /// Disconnect a shell (`rsp:Disconnect`).
    Disconnect(Disconnect),
    /// Reconnect a disconnected shell; empty body.
    Reconnect,
    /// Connect to a disconnected shell or command (`rsp:Connect`).
    Connect(Connect),
    /// A body this module does not type (unknown action, or Create of a non-shell
    /// resource); the elements are kept and written back as they were.
    Other(Vec<Element>),
}

impl RequestBody {
    /// The action that carries this body, when it implies one.
    pub fn action(&self) -> Option<Action> {
        Some(match self {
            RequestBody::Create(_) => Action::Create,
            RequestBody::Get => Action::Get,
            RequestBody::Delete => Action::Delete,
            RequestBody::Enumerate(_) => Action::Enumerate,
            RequestBody::Pull(_) => Action::Pull,
            RequestBody::Command(_) => Action::Command,
            RequestBody::Send(_) => Action::Send,
            RequestBody::Receive(_) => Action::Receive,
            RequestBody::Signal(_) => Action::Signal,
            RequestBody::Disconnect(_) => Action::Disconnect,
            RequestBody::Reconnect => Action::Reconnect,
            RequestBody::Connect(_) => Action::Connect,
            RequestBody::Other(_) => return None,
        })
    }
}

/// `rsp:Shell` in a Create request (MS-WSMV 2.2.4.37; pypsrp's element order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateShell {
    /// `@ShellId`: the client-chosen id; PSRP sets it to the RunspacePool id.
    pub shell_id: Option<Uuid>,
    /// `rsp:InputStreams` (`stdin`, or `stdin pr` for PSRP).
    pub input_streams: Vec<String>,
    /// `rsp:OutputStreams` (`stdout stderr`, or `stdout` for PSRP).
    pub output_streams: Vec<String>,
    /// `rsp:Environment/rsp:Variable` (R:test_winrs_environment).
    pub environment: Vec<EnvironmentVariable>,
    /// `rsp:IdleTimeOut` (R:test_winrs_extra_opts).
    pub idle_timeout: Option<Duration>,
    /// `rsp:Lifetime`.
    pub lifetime: Option<Duration>,
    /// `rsp:Name`.
    pub name: Option<String>,
    /// `rsp:WorkingDirectory`.
    pub working_directory: Option<String>,
    /// PSRP `creationXml` (base64 on the wire): the SESSION_CAPABILITY and
    /// INIT_RUNSPACEPOOL fragments (MS-PSRP 3.1.5.3.1).
    pub creation_xml: Option<Vec<u8>>,
}

impl CreateShell {
    /// A cmd shell with stdin and stdout/stderr, as pypsrp opens one.
    pub fn cmd() -> Self {
        Self {
            input_streams: vec!["stdin".to_owned()],
            output_streams: vec!["stdout".to_owned(), "stderr".to_owned()],
            ..Self::default()
        }
    }

    /// A PowerShell runspace-pool shell (wire-facts 2.5).
    pub fn powershell(runspace_pool_id: Uuid, creation_xml: Vec<u8>) -> Self {
        Self {
            shell_id: Some(runspace_pool_id),
            input_streams: vec!["stdin".to_owned(), "pr".to_owned()],
            output_streams: vec!["stdout".to_owned()],
            creation_xml: Some(creation_xml),
            ..Self::default()
        }
    }
}

/// An environment variable of a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentVariable {
    /// `@Name`.
    pub name: String,
    /// The text value.
    pub value: String,
}

/// `rsp:CommandLine` (MS-WSMV 2.2.4.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandLine {
    /// `@CommandId`: client-chosen id; PSRP sets it to the pipeline id.
    pub command_id: Option<Uuid>,
    /// `rsp:Command`; empty for PSRP (`<rsp:Command />`).
    pub command: Option<String>,
    /// `rsp:Arguments`, one element each. For PSRP there is one, holding the base64 of the
    /// CREATE_PIPELINE fragments; see [`CommandLine::powershell`] and
    /// [`CommandLine::psrp_arguments`].
    pub arguments: Vec<String>,
}

impl CommandLine {
    /// A cmd command line: executable and arguments.
    pub fn cmd(command: impl Into<String>, arguments: Vec<String>) -> Self {
        Self {
            command_id: None,
            command: Some(command.into()),
            arguments,
        }
    }

    /// A PSRP pipeline: empty command, fragments base64-encoded in one `rsp:Arguments`.
    pub fn powershell(pipeline_id: Uuid, fragments: &[u8]) -> Self {
        Self {
            command_id: Some(pipeline_id),
            command: Some(String::new()),
            arguments: vec![encode_base64(fragments)],
        }
    }

    /// The PSRP fragments: all `rsp:Arguments` base64-decoded and concatenated.
    pub fn psrp_arguments(&self) -> Result<Vec<u8>, WsmanError> {
        let mut out = Vec::new();
        for arg in &self.arguments {
            out.extend(decode_base64(arg, "rsp:CommandLine/rsp:Arguments")?);
        }
        Ok(out)
    }
}

/// `rsp:Send` (MS-WSMV 2.2.4.31).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Send {
    /// The `rsp:Stream` elements, in order.
    pub streams: Vec<SendStream>,
}

/// One `rsp:Stream` of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendStream {
    /// `@Name`: `stdin`, or `pr` for PSRP host responses.
    pub name: String,
    /// `@CommandId`: absent for input to the shell itself (PSRP runspace messages).
    pub command_id: Option<Uuid>,
    /// `@End`, when present (pypsrp writes `True`/`False`).
    pub end: Option<bool>,
    /// The decoded bytes.
    pub data: Vec<u8>,
}

/// `rsp:Receive` (MS-WSMV 2.2.4.26).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receive {
    /// `rsp:DesiredStream/@CommandId`: absent to receive the shell's own output (PSRP
    /// runspace-pool messages).
    pub command_id: Option<Uuid>,
    /// The stream names in `rsp:DesiredStream` (`stdout stderr`, or `stdout`).
    pub streams: Vec<String>,
}

/// `rsp:Signal` (MS-WSMV 2.2.4.38).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// `@CommandId`.
    pub command_id: Option<Uuid>,
    /// `rsp:Code`.
    pub code: SignalCode,
}

/// `wsen:Enumerate` with the WS-Management extensions pypsrp uses
/// (R:test_psrp_disconnect_runspaces).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enumerate {
    /// `wsman:OptimizeEnumeration`: return the first items in the EnumerateResponse.
    pub optimize: bool,
    /// `wsman:MaxElements`.
    pub max_elements: Option<u32>,
    /// `wsman:Filter`, e.g. the commands of one shell.
    pub filter: Option<SelectorFilter>,
}

/// A `wsman:Filter` with a selector set (dialect [`resources::SELECTOR_FILTER_DIALECT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorFilter {
    /// `@Dialect`.
    pub dialect: String,
    /// The `wsman:SelectorSet` inside the filter.
    pub selectors: Vec<Selector>,
}

impl SelectorFilter {
    /// The filter that lists the commands of one shell.
    pub fn shell(id: &Uuid) -> Self {
        Self {
            dialect: resources::SELECTOR_FILTER_DIALECT.to_owned(),
            selectors: vec![Selector::shell_id(id)],
        }
    }
}

/// `wsen:Pull`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// `wsen:EnumerationContext` from the previous response.
    pub context: String,
    /// `wsen:MaxElements`.
    pub max_elements: Option<u32>,
}

/// `rsp:Disconnect` (MS-WSMV 2.2.4.11).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// `rsp:IdleTimeOut`: how long the server keeps the disconnected shell.
    pub idle_timeout: Option<Duration>,
}

/// `rsp:Connect` (MS-WSMV 2.2.4.8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connect {
    /// `@CommandId` when connecting to a command rather than the shell.
    pub command_id: Option<Uuid>,
    /// PSRP `connectXml` (base64 on the wire): SESSION_CAPABILITY and CONNECT_RUNSPACEPOOL.
    pub connect_xml: Option<Vec<u8>>,
}

impl RequestHeader {
    /// A header with pypsrp's defaults: locale and data locale `en-US`, MaxEnvelopeSize
    /// 153600, OperationTimeout 20 s, no session id, options or selectors.
    pub fn new(
        action: Action,
        to: impl Into<String>,
        resource_uri: impl Into<String>,
        message_id: Uuid,
    ) -> Self {
        Self {
            action,
            to: to.into(),
            resource_uri: resource_uri.into(),
            message_id,
            session_id: None,
            max_envelope_size: Some(DEFAULT_MAX_ENVELOPE_SIZE),
            operation_timeout: Some(OperationTimeout::Duration(DEFAULT_OPERATION_TIMEOUT)),
            locale: Some(DEFAULT_LOCALE.to_owned()),
            data_locale: Some(DEFAULT_LOCALE.to_owned()),
            options: Vec::new(),
            selectors: Vec::new(),
        }
    }

    /// Sets `wsmv:SessionId`.
    pub fn with_session_id(mut self, id: Uuid) -> Self {
        self.session_id = Some(id);
        self
    }

    /// Sets `wsman:MaxEnvelopeSize`.
    pub fn with_max_envelope_size(mut self, bytes: u32) -> Self {
        self.max_envelope_size = Some(bytes);
        self
    }

    /// Sets `wsman:OperationTimeout`.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(OperationTimeout::Duration(timeout));
        self
    }

    /// Adds an option.
    pub fn with_option(mut self, option: WsOption) -> Self {
        self.options.push(option);
        self
    }

    /// Adds the `ShellId` selector.
    pub fn with_shell_id(mut self, id: &Uuid) -> Self {
        self.selectors.push(Selector::shell_id(id));
        self
    }

    /// The value of a selector.
    pub fn selector(&self, name: &str) -> Option<&str> {
        self.selectors
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.as_str())
    }

    /// The `ShellId` selector as a GUID.
    pub fn shell_id(&self) -> Option<Uuid> {
        self.selector("ShellId").and_then(crate::ids::parse)
    }

    /// The value of an option.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.value.as_str())
    }

    fn parse(header: &Element) -> Result<Self, WsmanError> {
        let text = |name: &str, path: &'static str, nsu: &str| {
            required(header, nsu, name, path).map(|e| e.text().into_owned())
        };
        let action = Action::from_uri(&text("Action", "s:Header/wsa:Action", ns::ADDRESSING)?);
        let to = text("To", "s:Header/wsa:To", ns::ADDRESSING)?;
        let resource_uri = text("ResourceURI", "s:Header/wsman:ResourceURI", ns::WSMAN)?;
        let message_id = parse_uuid(
            &text("MessageID", "s:Header/wsa:MessageID", ns::ADDRESSING)?,
            "wsa:MessageID",
        )?;
        let session_id = opt_child(header, ns::WSMV, "SessionId", |t| {
            parse_uuid(t, "wsmv:SessionId")
        })?;
        let max_envelope_size = opt_child(header, ns::WSMAN, "MaxEnvelopeSize", |t| {
            parse_number(t, "wsman:MaxEnvelopeSize")
        })?;
        let operation_timeout = header
            .child(ns::WSMAN, "OperationTimeout")
            .map(|e| OperationTimeout::parse(&e.text()));
        let lang = |nsu: &str, name: &str| {
            header
                .child(nsu, name)
                .and_then(|e| e.attr_ns(XML_NS, "lang"))
                .map(str::to_owned)
        };
        let mut options = Vec::new();
        if let Some(set) = header.child(ns::WSMAN, "OptionSet") {
            for o in set.children_named(ns::WSMAN, "Option") {
                options.push(WsOption {
                    name: required_attr(o, "Name", "wsman:Option")?.to_owned(),
                    value: o.text().into_owned(),
                    must_comply: o
                        .attr("MustComply")
                        .map(|v| parse_bool(v, "wsman:Option/@MustComply"))
                        .transpose()?,
                });
            }
        }
        let selectors = match header.child(ns::WSMAN, "SelectorSet") {
            Some(set) => parse_selectors(set)?,
            None => Vec::new(),
        };
        Ok(Self {
            action,
            to,
            resource_uri,
            message_id,
            session_id,
            max_envelope_size,
            operation_timeout,
            locale: lang(ns::WSMAN, "Locale"),
            data_locale: lang(ns::WSMV, "DataLocale"),
            options,
            selectors,
        })
    }

    fn write(&self, w: &mut XmlWriter) {
        const MUST: (&str, &str) = ("s:mustUnderstand", "true");
        const MAY: (&str, &str) = ("s:mustUnderstand", "false");
        w.start("s:Header", &[]);
        w.text_element("wsa:Action", &[MUST], self.action.uri());
        if let Some(lang) = &self.data_locale {
            w.empty("wsmv:DataLocale", &[MAY, ("xml:lang", lang)]);
        }
        if let Some(lang) = &self.locale {
            w.empty("wsman:Locale", &[MAY, ("xml:lang", lang)]);
        }
        if let Some(size) = self.max_envelope_size {
            let mut digits = [0u8; 20];
            w.text_element(
                "wsman:MaxEnvelopeSize",
                &[MUST],
                crate::xml::decimal(u64::from(size), &mut digits),
            );
        }
        let mut id = [0u8; 41];
        w.text_element(
            "wsa:MessageID",
            &[],
            message_id_text(&self.message_id, &mut id),
        );
        if let Some(timeout) = &self.operation_timeout {
            w.text_element("wsman:OperationTimeout", &[], &timeout.to_text());
        }
        w.start("wsa:ReplyTo", &[]);
        w.text_element("wsa:Address", &[MUST], resources::ANONYMOUS);
        w.end("wsa:ReplyTo");
        w.text_element("wsman:ResourceURI", &[MUST], &self.resource_uri);
        if let Some(session) = &self.session_id {
            let text = message_id_text(session, &mut id);
            w.text_element("wsmv:SessionId", &[MAY], text);
        }
        w.text_element("wsa:To", &[], &self.to);
        if !self.options.is_empty() {
            w.start("wsman:OptionSet", &[MUST]);
            for o in &self.options {
                let mut attrs = Vec::with_capacity(2);
                if let Some(must) = o.must_comply {
                    attrs.push(("MustComply", xs_bool(must)));
                }
                attrs.push(("Name", o.name.as_str()));
                write_text(w, "wsman:Option", &attrs, &o.value);
            }
            w.end("wsman:OptionSet");
        }
        if !self.selectors.is_empty() {
            write_selector_set(w, "wsman", &self.selectors);
        }
        w.end("s:Header");
    }
}

impl Request {
    /// A request from its parts.
    pub fn new(header: RequestHeader, body: RequestBody) -> Self {
        Self { header, body }
    }

    /// Parses any request (one tree parse).
    pub fn parse(bytes: &[u8]) -> Result<Self, WsmanError> {
        Self::from_root(&xml::parse(bytes)?)
    }

    /// Reads a request from an already parsed document.
    pub(crate) fn from_root(root: &Element) -> Result<Self, WsmanError> {
        let env = util::envelope(root)?;
        let header = env
            .header
            .ok_or(WsmanError::MissingElement("s:Envelope/s:Header"))?;
        let header = RequestHeader::parse(header)?;
        let body = parse_body(&header.action, env.body)?;
        Ok(Self { header, body })
    }

    /// Writes the request as pypsrp would send it.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut w = XmlWriter::with_capacity(2048 + self.body_size_hint());
        let mut decls: Vec<(&str, &str)> = Vec::with_capacity(6);
        let uses_shell = matches!(
            self.body,
            RequestBody::Create(_)
                | RequestBody::Command(_)
                | RequestBody::Send(_)
                | RequestBody::Receive(_)
                | RequestBody::Signal(_)
                | RequestBody::Disconnect(_)
                | RequestBody::Connect(_)
        );
        if uses_shell {
            decls.push(("xmlns:rsp", ns::SHELL));
        }
        decls.push(("xmlns:s", ns::SOAP));
        decls.push(("xmlns:wsa", ns::ADDRESSING));
        if matches!(self.body, RequestBody::Enumerate(_) | RequestBody::Pull(_)) {
            decls.push(("xmlns:wsen", ns::ENUMERATION));
        }
        decls.push(("xmlns:wsman", ns::WSMAN));
        decls.push(("xmlns:wsmv", ns::WSMV));
        w.start("s:Envelope", &decls);
        self.header.write(&mut w);
        write_body(&self.body, &mut w);
        w.end("s:Envelope");
        w.into_bytes()
    }

    fn body_size_hint(&self) -> usize {
        let b64 = |n: usize| n.div_ceil(3) * 4;
        match &self.body {
            RequestBody::Create(c) => c.creation_xml.as_ref().map_or(0, |x| b64(x.len())),
            RequestBody::Command(c) => c.arguments.iter().map(String::len).sum(),
            RequestBody::Send(s) => s.streams.iter().map(|s| b64(s.data.len())).sum(),
            RequestBody::Connect(c) => c.connect_xml.as_ref().map_or(0, |x| b64(x.len())),
            _ => 0,
        }
    }
}

pub(crate) fn parse_selectors(set: &Element) -> Result<Vec<Selector>, WsmanError> {
    set.children_named(&set.ns, "Selector")
        .map(|s| {
            Ok(Selector {
                name: required_attr(s, "Name", "Selector")?.to_owned(),
                value: s.text().into_owned(),
            })
        })
        .collect()
}

pub(crate) fn write_selector_set(w: &mut XmlWriter, prefix: &str, selectors: &[Selector]) {
    // The two prefixes in use are spelt out: no names built per request.
    let (set, one): (Cow<'_, str>, Cow<'_, str>) = match prefix {
        "wsman" => ("wsman:SelectorSet".into(), "wsman:Selector".into()),
        "w" => ("w:SelectorSet".into(), "w:Selector".into()),
        _ => (
            format!("{prefix}:SelectorSet").into(),
            format!("{prefix}:Selector").into(),
        ),
    };
    w.start(&set, &[]);
    for s in selectors {
        write_text(w, &one, &[("Name", &s.name)], &s.value);
    }
    w.end(&set);
}

/// `uuid:` and the upper-case GUID (what `ids::message_id` returns) in `buf`, without a
/// temporary string.
fn message_id_text<'b>(id: &Uuid, buf: &'b mut [u8; 41]) -> &'b str {
    let (prefix, guid) = buf.split_at_mut(5);
    prefix.copy_from_slice(b"uuid:");
    id.hyphenated().encode_upper(guid);
    // Both halves are ASCII.
    std::str::from_utf8(buf).unwrap_or_default()
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

fn parse_body(action: &Action, body: &Element) -> Result<RequestBody, WsmanError> {
    let empty = body.elements().next().is_none();
    let other = || RequestBody::Other(body.elements().cloned().collect());
    Ok(match action {
        Action::Create => match body.child(ns::SHELL, "Shell") {
            Some(shell) => RequestBody::Create(parse_create(shell)?),
            None => other(),
        },
        Action::Get if empty => RequestBody::Get,
        Action::Delete if empty => RequestBody::Delete,
        Action::Reconnect if empty => RequestBody::Reconnect,
        Action::Enumerate => RequestBody::Enumerate(parse_enumerate(expect(
            body,
            action,
            ns::ENUMERATION,
            "Enumerate",
        )?)?),
        Action::Pull => {
            let pull = expect(body, action, ns::ENUMERATION, "Pull")?;
            RequestBody::Pull(Pull {
                context: required(
                    pull,
                    ns::ENUMERATION,
                    "EnumerationContext",
                    "wsen:Pull/wsen:EnumerationContext",
                )?
                .text()
                .into_owned(),
                max_elements: opt_child(pull, ns::ENUMERATION, "MaxElements", |t| {
                    parse_number(t, "wsen:Pull/wsen:MaxElements")
                })?,
            })
        }
        Action::Command => RequestBody::Command(parse_command(expect(
            body,
            action,
            ns::SHELL,
            "CommandLine",
        )?)?),
        Action::Send => RequestBody::Send(parse_send(expect(body, action, ns::SHELL, "Send")?)?),
        Action::Receive => {
            let receive = expect(body, action, ns::SHELL, "Receive")?;
            let desired = required(
                receive,
                ns::SHELL,
                "DesiredStream",
                "rsp:Receive/rsp:DesiredStream",
            )?;
            RequestBody::Receive(Receive {
                command_id: opt_attr_uuid(desired, "CommandId", "rsp:DesiredStream/@CommandId")?,
                streams: split_streams(&desired.text()),
            })
        }
        Action::Signal => {
            let signal = expect(body, action, ns::SHELL, "Signal")?;
            RequestBody::Signal(Signal {
                command_id: opt_attr_uuid(signal, "CommandId", "rsp:Signal/@CommandId")?,
                code: SignalCode::from_uri(
                    &required(signal, ns::SHELL, "Code", "rsp:Signal/rsp:Code")?.text(),
                ),
            })
        }
        Action::Disconnect => match body.child(ns::SHELL, "Disconnect") {
            Some(d) => RequestBody::Disconnect(Disconnect {
                idle_timeout: opt_child(d, ns::SHELL, "IdleTimeOut", |t| {
                    parse_duration(t, "rsp:Disconnect/rsp:IdleTimeOut")
                })?,
            }),
            None if empty => RequestBody::Disconnect(Disconnect::default()),
            None => other(),
        },
        Action::Connect => {
            let connect = expect(body, action, ns::SHELL, "Connect")?;
            RequestBody::Connect(Connect {
                command_id: opt_attr_uuid(connect, "CommandId", "rsp:Connect/@CommandId")?,
                connect_xml: connect
                    .child(ns::POWERSHELL, "connectXml")
                    .map(|e| decode_base64(&e.text(), "rsp:Connect/connectXml"))
                    .transpose()?,
            })
        }
        _ => other(),
    })
}

pub(crate) fn opt_attr_uuid(
    e: &Element,
    attr: &str,
    field: &'static str,
) -> Result<Option<Uuid>, WsmanError> {
    e.attr(attr).map(|v| parse_uuid(v, field)).transpose()
}

fn parse_create(shell: &Element) -> Result<CreateShell, WsmanError> {
    let mut environment = Vec::new();
    if let Some(env) = shell.child(ns::SHELL, "Environment") {
        environment = parse_environment(env)?;
    }
    Ok(CreateShell {
        shell_id: opt_attr_uuid(shell, "ShellId", "rsp:Shell/@ShellId")?,
        input_streams: child_text(shell, ns::SHELL, "InputStreams")
            .map(|t| split_streams(&t))
            .unwrap_or_default(),
        output_streams: child_text(shell, ns::SHELL, "OutputStreams")
            .map(|t| split_streams(&t))
            .unwrap_or_default(),
        environment,
        idle_timeout: opt_child(shell, ns::SHELL, "IdleTimeOut", |t| {
            parse_duration(t, "rsp:Shell/rsp:IdleTimeOut")
        })?,
        lifetime: opt_child(shell, ns::SHELL, "Lifetime", |t| {
            parse_duration(t, "rsp:Shell/rsp:Lifetime")
        })?,
        name: child_text(shell, ns::SHELL, "Name"),
        working_directory: child_text(shell, ns::SHELL, "WorkingDirectory"),
        creation_xml: shell
            .child(ns::POWERSHELL, "creationXml")
            .map(|e| decode_base64(&e.text(), "rsp:Shell/creationXml"))
            .transpose()?,
    })
}

pub(crate) fn parse_environment(env: &Element) -> Result<Vec<EnvironmentVariable>, WsmanError> {
    env.children_named(ns::SHELL, "Variable")
        .map(|v| {
            Ok(EnvironmentVariable {
                name: required_attr(v, "Name", "rsp:Variable")?.to_owned(),
                value: v.text().into_owned(),
            })
        })
        .collect()
}

pub(crate) fn write_environment(w: &mut XmlWriter, environment: &[EnvironmentVariable]) {
    if environment.is_empty() {
        return;
    }
    w.start("rsp:Environment", &[]);
    for v in environment {
        write_text(w, "rsp:Variable", &[("Name", &v.name)], &v.value);
    }
    w.end("rsp:Environment");
}

fn parse_command(cmd: &Element) -> Result<CommandLine, WsmanError> {
    Ok(CommandLine {
        command_id: opt_attr_uuid(cmd, "CommandId", "rsp:CommandLine/@CommandId")?,
        command: child_text(cmd, ns::SHELL, "Command"),
        arguments: cmd
            .children_named(ns::SHELL, "Arguments")
            .map(|a| a.text().into_owned())
            .collect(),
    })
}

fn parse_send(send: &Element) -> Result<Send, WsmanError> {
    let streams = send
        .children_named(ns::SHELL, "Stream")
        .map(|s| {
            Ok(SendStream {
                name: required_attr(s, "Name", "rsp:Send/rsp:Stream")?.to_owned(),
                command_id: opt_attr_uuid(s, "CommandId", "rsp:Stream/@CommandId")?,
                end: s
                    .attr("End")
                    .map(|v| parse_bool(v, "rsp:Stream/@End"))
                    .transpose()?,
                data: decode_base64(&s.text(), "rsp:Send/rsp:Stream")?,
            })
        })
        .collect::<Result<_, WsmanError>>()?;
    Ok(Send { streams })
}

fn parse_enumerate(e: &Element) -> Result<Enumerate, WsmanError> {
    let filter = match e.child(ns::WSMAN, "Filter") {
        Some(f) => Some(SelectorFilter {
            dialect: f.attr("Dialect").unwrap_or_default().to_owned(),
            selectors: match f.child(ns::WSMAN, "SelectorSet") {
                Some(set) => parse_selectors(set)?,
                None => Vec::new(),
            },
        }),
        None => None,
    };
    Ok(Enumerate {
        optimize: e.child(ns::WSMAN, "OptimizeEnumeration").is_some(),
        max_elements: opt_child(e, ns::WSMAN, "MaxElements", |t| {
            parse_number(t, "wsen:Enumerate/wsman:MaxElements")
        })?,
        filter,
    })
}

fn write_body(body: &RequestBody, w: &mut XmlWriter) {
    match body {
        RequestBody::Get | RequestBody::Delete | RequestBody::Reconnect => {
            w.empty("s:Body", &[]);
            return;
        }
        RequestBody::Other(elements) if elements.is_empty() => {
            w.empty("s:Body", &[]);
            return;
        }
        _ => {
            w.start("s:Body", &[]);
        }
    }
    match body {
        RequestBody::Create(c) => {
            let id = c.shell_id.map(|id| guid(&id));
            let attrs: Vec<(&str, &str)> = id.iter().map(|v| ("ShellId", v.as_str())).collect();
            w.start("rsp:Shell", &attrs);
            if !c.input_streams.is_empty() {
                w.text_element("rsp:InputStreams", &[], &c.input_streams.join(" "));
            }
            if !c.output_streams.is_empty() {
                w.text_element("rsp:OutputStreams", &[], &c.output_streams.join(" "));
            }
            write_environment(w, &c.environment);
            let idle = c.idle_timeout.map(duration::format_seconds);
            write_opt(w, "rsp:IdleTimeOut", idle.as_deref());
            let lifetime = c.lifetime.map(duration::format_seconds);
            write_opt(w, "rsp:Lifetime", lifetime.as_deref());
            write_opt(w, "rsp:Name", c.name.as_deref());
            write_opt(w, "rsp:WorkingDirectory", c.working_directory.as_deref());
            if let Some(x) = &c.creation_xml {
                w.text_element(
                    "creationXml",
                    &[("xmlns", ns::POWERSHELL)],
                    &encode_base64(x),
                );
            }
            w.end("rsp:Shell");
        }
        RequestBody::Enumerate(e) => {
            w.start("wsen:Enumerate", &[]);
            if e.optimize {
                w.empty("wsman:OptimizeEnumeration", &[]);
            }
            if let Some(max) = e.max_elements {
                w.text_element("wsman:MaxElements", &[], &max.to_string());
            }
            if let Some(f) = &e.filter {
                w.start("wsman:Filter", &[("Dialect", &f.dialect)]);
                write_selector_set(w, "wsman", &f.selectors);
                w.end("wsman:Filter");
            }
            w.end("wsen:Enumerate");
        }
        RequestBody::Pull(p) => {
            w.start("wsen:Pull", &[]);
            w.text_element("wsen:EnumerationContext", &[], &p.context);
            if let Some(max) = p.max_elements {
                w.text_element("wsen:MaxElements", &[], &max.to_string());
            }
            w.end("wsen:Pull");
        }
        RequestBody::Command(c) => {
            let id = c.command_id.map(|id| guid(&id));
            let attrs: Vec<(&str, &str)> = id.iter().map(|v| ("CommandId", v.as_str())).collect();
            w.start("rsp:CommandLine", &attrs);
            if let Some(command) = &c.command {
                write_text(w, "rsp:Command", &[], command);
            }
            for a in &c.arguments {
                write_text(w, "rsp:Arguments", &[], a);
            }
            w.end("rsp:CommandLine");
        }
        RequestBody::Send(s) => {
            w.start("rsp:Send", &[]);
            for stream in &s.streams {
                let id = stream.command_id.map(|id| guid(&id));
                let mut attrs: Vec<(&str, &str)> = vec![("Name", stream.name.as_str())];
                if let Some(end) = stream.end {
                    attrs.push(("End", py_bool(end)));
                }
                if let Some(id) = &id {
                    attrs.push(("CommandId", id.as_str()));
                }
                write_text(w, "rsp:Stream", &attrs, &encode_base64(&stream.data));
            }
            w.end("rsp:Send");
        }
        RequestBody::Receive(r) => {
            let id = r.command_id.map(|id| guid(&id));
            let attrs: Vec<(&str, &str)> = id.iter().map(|v| ("CommandId", v.as_str())).collect();
            w.start("rsp:Receive", &[]);
            write_text(w, "rsp:DesiredStream", &attrs, &r.streams.join(" "));
            w.end("rsp:Receive");
        }
        RequestBody::Signal(s) => {
            let id = s.command_id.map(|id| guid(&id));
            let attrs: Vec<(&str, &str)> = id.iter().map(|v| ("CommandId", v.as_str())).collect();
            w.start("rsp:Signal", &attrs);
            w.text_element("rsp:Code", &[], s.code.uri());
            w.end("rsp:Signal");
        }
        RequestBody::Disconnect(d) => match d.idle_timeout {
            Some(idle) => {
                w.start("rsp:Disconnect", &[]);
                w.text_element("rsp:IdleTimeOut", &[], &duration::format_seconds(idle));
                w.end("rsp:Disconnect");
            }
            None => {
                w.empty("rsp:Disconnect", &[]);
            }
        },
        RequestBody::Connect(c) => {
            let id = c.command_id.map(|id| guid(&id));
            let attrs: Vec<(&str, &str)> = id.iter().map(|v| ("CommandId", v.as_str())).collect();
            match &c.connect_xml {
                Some(x) => {
                    w.start("rsp:Connect", &attrs);
                    w.text_element(
                        "connectXml",
                        &[("xmlns", ns::POWERSHELL)],
                        &encode_base64(x),
                    );
                    w.end("rsp:Connect");
                }
                None => {
                    w.empty("rsp:Connect", &attrs);
                }
            }
        }
        RequestBody::Other(elements) => {
            for e in elements {
                e.write_to(w);
            }
        }
        RequestBody::Get | RequestBody::Delete | RequestBody::Reconnect => {}
    }
    w.end("s:Body");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsman::structurally_equal;

    const TO: &str = "https://host.example:5986/wsman";

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn header(action: Action, resource: &str) -> RequestHeader {
        RequestHeader::new(action, TO, resource, id(0xA1)).with_session_id(id(0x5E))
    }

    fn round_trip(request: &Request) -> Request {
        let parsed = Request::parse(&request.to_xml()).unwrap();
        assert_eq!(&parsed, request);
        parsed
    }

    #[test]
    fn every_body_round_trips() {
        let shell = id(0x51);
        let cmd = id(0xC1);
        let bodies = vec![
            RequestBody::Create(CreateShell {
                environment: vec![EnvironmentVariable {
                    name: "A<&>\"".into(),
                    value: "x y".into(),
                }],
                idle_timeout: Some(Duration::from_secs(60)),
                lifetime: Some(Duration::from_millis(1500)),
                name: Some("shell 1".into()),
                working_directory: Some("C:\\Windows".into()),
                ..CreateShell::cmd()
            }),
            RequestBody::Create(CreateShell::powershell(shell, vec![0, 1, 2, 255])),
            RequestBody::Get,
            RequestBody::Delete,
            RequestBody::Enumerate(Enumerate {
                optimize: true,
                max_elements: Some(32_000),
                filter: Some(SelectorFilter::shell(&shell)),
            }),
            RequestBody::Enumerate(Enumerate::default()),
            RequestBody::Pull(Pull {
                context: "ctx".into(),
                max_elements: Some(5),
            }),
            RequestBody::Command(CommandLine::cmd(
                "cmd.exe",
                vec!["/c".into(), "echo hi".into()],
            )),
            RequestBody::Command(CommandLine::powershell(cmd, b"fragments")),
            RequestBody::Send(Send {
                streams: vec![
                    SendStream {
                        name: "stdin".into(),
                        command_id: Some(cmd),
                        end: Some(true),
                        data: b"input\r\n".to_vec(),
                    },
                    SendStream {
                        name: "pr".into(),
                        command_id: None,
                        end: None,
                        data: Vec::new(),
                    },
                ],
            }),
            RequestBody::Receive(Receive {
                command_id: Some(cmd),
                streams: vec!["stdout".into(), "stderr".into()],
            }),
            RequestBody::Receive(Receive {
                command_id: None,
                streams: vec!["stdout".into()],
            }),
            RequestBody::Signal(Signal {
                command_id: Some(cmd),
                code: SignalCode::PsCtrlC,
            }),
            RequestBody::Signal(Signal {
                command_id: Some(cmd),
                code: SignalCode::TerminateLowercase,
            }),
            RequestBody::Disconnect(Disconnect::default()),
            RequestBody::Disconnect(Disconnect {
                idle_timeout: Some(Duration::from_secs(120)),
            }),
            RequestBody::Reconnect,
            RequestBody::Connect(Connect {
                command_id: None,
                connect_xml: Some(b"connect".to_vec()),
            }),
            RequestBody::Connect(Connect {
                command_id: Some(cmd),
                connect_xml: None,
            }),
        ];
        for body in bodies {
            let action = body.action().unwrap();
            let request = Request::new(
                header(action, resources::CMD_SHELL)
                    .with_shell_id(&shell)
                    .with_option(WsOption::new("WINRS_SKIP_CMD_SHELL", "False"))
                    .with_option(WsOption::must_comply("protocolversion", "2.3"))
                    .with_max_envelope_size(512_000)
                    .with_operation_timeout(Duration::from_secs(5)),
                body,
            );
            let parsed = round_trip(&request);
            assert_eq!(parsed.header.shell_id(), Some(shell));
            assert_eq!(parsed.header.option("protocolversion"), Some("2.3"));
        }
    }

    #[test]
    fn psrp_arguments_decode_back_to_the_fragments() {
        let line = CommandLine::powershell(id(7), b"\x00\x01frag");
        assert_eq!(line.command.as_deref(), Some(""));
        assert_eq!(line.psrp_arguments().unwrap(), b"\x00\x01frag");
        let bad = CommandLine::cmd("x", vec!["not base64!".into()]);
        assert_eq!(
            bad.psrp_arguments(),
            Err(WsmanError::InvalidBase64("rsp:CommandLine/rsp:Arguments"))
        );
    }

    #[test]
    fn header_has_pypsrp_order_prefixes_and_flags() {
        // Handwritten from wire-facts 2.1 (the documented pypsrp header) for a Delete.
        let expected = format!(
            concat!(
                r#"<s:Envelope xmlns:s="{s}" xmlns:wsa="{a}" xmlns:wsman="{w}" xmlns:wsmv="{p}">"#,
                r#"<s:Header><wsa:Action s:mustUnderstand="true">{act}</wsa:Action>"#,
                r#"<wsmv:DataLocale s:mustUnderstand="false" xml:lang="en-US" />"#,
                r#"<wsman:Locale s:mustUnderstand="false" xml:lang="en-US" />"#,
                r#"<wsman:MaxEnvelopeSize s:mustUnderstand="true">153600</wsman:MaxEnvelopeSize>"#,
                r#"<wsa:MessageID>uuid:00000000-0000-0000-0000-0000000000A1</wsa:MessageID>"#,
                r#"<wsman:OperationTimeout>PT20S</wsman:OperationTimeout>"#,
                r#"<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">{anon}</wsa:Address></wsa:ReplyTo>"#,
                r#"<wsman:ResourceURI s:mustUnderstand="true">{cmd}</wsman:ResourceURI>"#,
                r#"<wsmv:SessionId s:mustUnderstand="false">uuid:00000000-0000-0000-0000-00000000005E</wsmv:SessionId>"#,
                r#"<wsa:To>{to}</wsa:To>"#,
                r#"<wsman:SelectorSet><wsman:Selector Name="ShellId">00000000-0000-0000-0000-000000000051</wsman:Selector></wsman:SelectorSet>"#,
                r#"</s:Header><s:Body /></s:Envelope>"#
            ),
            s = ns::SOAP,
            a = ns::ADDRESSING,
            w = ns::WSMAN,
            p = ns::WSMV,
            act = crate::wsman::actions::DELETE,
            anon = resources::ANONYMOUS,
            cmd = resources::CMD_SHELL,
            to = TO,
        );
        let request = Request::new(
            header(Action::Delete, resources::CMD_SHELL).with_shell_id(&id(0x51)),
            RequestBody::Delete,
        );
        let ours = xml::parse(&request.to_xml()).unwrap();
        let theirs = xml::parse(expected.as_bytes()).unwrap();
        assert_eq!(structurally_equal(&ours, &theirs), Ok(()));
        let names: Vec<_> = ours
            .child(ns::SOAP, "Header")
            .unwrap()
            .elements()
            .map(|e| format!("{}:{}", e.prefix, e.name))
            .collect();
        assert_eq!(names[0], "wsa:Action");
        assert_eq!(names[names.len() - 1], "wsman:SelectorSet");
    }

    #[test]
    fn stack_formatted_ids_and_numbers_match_the_allocating_ones() {
        let mut buf = [0u8; 41];
        for n in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        ] {
            assert_eq!(
                message_id_text(&id(n), &mut buf),
                crate::ids::message_id(&id(n))
            );
        }
    }

    #[test]
    fn invalid_operation_timeout_is_kept_verbatim() {
        let mut request = Request::new(header(Action::Get, resources::SHELLS), RequestBody::Get);
        request.header.operation_timeout = Some(OperationTimeout::Invalid("PT-1S".into()));
        let parsed = round_trip(&request);
        let timeout = parsed.header.operation_timeout.unwrap();
        assert_eq!(timeout.duration(), None);
        assert_eq!(timeout.to_text(), "PT-1S");
        assert_eq!(
            OperationTimeout::parse("PT7200.000S").duration(),
            Some(Duration::from_secs(7200))
        );
    }

    #[test]
    fn unknown_actions_keep_their_body() {
        let body = xml::parse(br#"<x:Thing xmlns:x="urn:x" a="1"><x:Y>t</x:Y></x:Thing>"#).unwrap();
        let request = Request::new(
            header(Action::Other("urn:custom/Act".into()), resources::CONFIG),
            RequestBody::Other(vec![body]),
        );
        round_trip(&request);
        // A Create of something that is not a shell is kept too.
        let mut create = request.clone();
        create.header.action = Action::Create;
        round_trip(&create);
    }

    fn envelope_with(header: &str, body: &str) -> Vec<u8> {
        format!(
            r#"<s:Envelope xmlns:s="{}" xmlns:wsa="{}" xmlns:wsman="{}" xmlns:rsp="{}"><s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#,
            ns::SOAP,
            ns::ADDRESSING,
            ns::WSMAN,
            ns::SHELL
        )
        .into_bytes()
    }

    fn minimal_header(action: &str) -> String {
        format!(
            "<wsa:Action>{action}</wsa:Action><wsa:To>{TO}</wsa:To><wsman:ResourceURI>{}</wsman:ResourceURI><wsa:MessageID>uuid:{}</wsa:MessageID>",
            resources::CMD_SHELL,
            id(1)
        )
    }

    #[test]
    fn other_clients_minimal_requests_parse() {
        let bytes = envelope_with(
            &minimal_header(crate::wsman::actions::RECEIVE),
            r#"<rsp:Receive><rsp:DesiredStream CommandId="e0b2f8a3-0000-4000-8000-000000000001">stdout stderr</rsp:DesiredStream></rsp:Receive>"#,
        );
        let r = Request::parse(&bytes).unwrap();
        assert_eq!(r.header.operation_timeout, None);
        assert_eq!(r.header.max_envelope_size, None);
        match r.body {
            RequestBody::Receive(rx) => {
                assert_eq!(rx.streams, ["stdout", "stderr"]);
                assert_eq!(
                    rx.command_id,
                    Some(Uuid::from_u128(0xe0b2f8a3_0000_4000_8000_000000000001))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_requests_are_errors_not_panics() {
        let send = crate::wsman::actions::SEND;
        let cases: Vec<(Vec<u8>, WsmanError)> = vec![
            (
                b"<a/>".to_vec(),
                WsmanError::NotAnEnvelope {
                    ns: String::new(),
                    name: "a".into(),
                },
            ),
            (
                format!(
                    r#"<s:Envelope xmlns:s="{}"><s:Header/></s:Envelope>"#,
                    ns::SOAP
                )
                .into_bytes(),
                WsmanError::MissingElement("s:Envelope/s:Body"),
            ),
            (
                format!(
                    r#"<s:Envelope xmlns:s="{}"><s:Body/></s:Envelope>"#,
                    ns::SOAP
                )
                .into_bytes(),
                WsmanError::MissingElement("s:Envelope/s:Header"),
            ),
            (
                envelope_with("<wsa:To>x</wsa:To>", ""),
                WsmanError::MissingElement("s:Header/wsa:Action"),
            ),
            (
                envelope_with(
                    &minimal_header(send),
                    r#"<rsp:Send><rsp:Stream Name="stdin">@@not base64@@</rsp:Stream></rsp:Send>"#,
                ),
                WsmanError::InvalidBase64("rsp:Send/rsp:Stream"),
            ),
            (
                envelope_with(
                    &minimal_header(send),
                    r#"<rsp:Send><rsp:Stream>AA==</rsp:Stream></rsp:Send>"#,
                ),
                WsmanError::MissingAttribute {
                    element: "rsp:Send/rsp:Stream",
                    attribute: "Name",
                },
            ),
            (
                envelope_with(&minimal_header(send), "<rsp:Receive/>"),
                WsmanError::UnexpectedBody {
                    action: send.into(),
                    found: format!("{{{}}}Receive", ns::SHELL),
                },
            ),
            (
                envelope_with(
                    &minimal_header(crate::wsman::actions::RECEIVE),
                    "<rsp:Receive/>",
                ),
                WsmanError::MissingElement("rsp:Receive/rsp:DesiredStream"),
            ),
            (
                envelope_with(
                    &(minimal_header(crate::wsman::actions::GET)
                        + "<wsman:MaxEnvelopeSize>99999999999999999999999</wsman:MaxEnvelopeSize>"),
                    "",
                ),
                WsmanError::InvalidValue {
                    field: "wsman:MaxEnvelopeSize",
                    value: "99999999999999999999999".into(),
                },
            ),
            (
                envelope_with(
                    &minimal_header(crate::wsman::actions::SIGNAL),
                    r#"<rsp:Signal CommandId="nope"><rsp:Code>x</rsp:Code></rsp:Signal>"#,
                ),
                WsmanError::InvalidValue {
                    field: "rsp:Signal/@CommandId",
                    value: "nope".into(),
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Request::parse(&bytes), Err(expected));
        }
        assert!(matches!(
            Request::parse(b"<s:Envelope"),
            Err(WsmanError::Xml(_))
        ));
        let long = "x".repeat(10_000);
        match Request::parse(&envelope_with(
            &minimal_header(crate::wsman::actions::GET).replace("uuid:", &long),
            "",
        )) {
            Err(WsmanError::InvalidValue { value, .. }) => assert_eq!(value.len(), 64),
            other => panic!("{other:?}"),
        }
    }
}
