//! WS-Management messages for both sides of the wire (MS-WSMV).
//!
//! The client builds [`Request`]s and parses [`Response`]s; the simulator parses
//! [`Request`]s and builds [`Response`]s from the same types, so one codec serves both.
//! Every message is read with a single tree parse ([`crate::xml::parse`]) and written with
//! [`crate::xml::XmlWriter`].
//!
//! Shapes follow what Windows and pypsrp actually put on the wire (the recorded traffic in
//! `shared/conformance/pypsrp-recorded`): requests use pypsrp's header order and prefixes
//! (`s`, `wsa`, `wsman`, `wsmv`, `rsp`, `wsen`), responses use the prefixes Windows uses
//! (`s`, `a`, `x`, `n`, `w`, `rsp`, `p`, `cfg`, `f`) and `xml:lang="en-US"` on the envelope.
//! [`structurally_equal`] compares two trees the way the conformance checks do.
//!
//! Module map: [`ns`], [`actions`], [`resources`], [`signals`], [`command_states`] (URIs and
//! names), [`Action`], [`Request`] and its bodies, [`Response`] and its bodies, [`ShellInfo`],
//! [`WinrmConfig`], [`WsmanFault`] / [`FaultCode`], [`IdentifyRequest`] /
//! [`IdentifyResponse`], and xs:duration helpers in [`duration`].

mod compare;
mod config;
pub mod duration;
mod fault;
mod identify;
mod names;
mod request;
mod response;
mod shell;
mod util;

pub use compare::structurally_equal;
pub use config::{
    CbtHardeningLevel, ClientAuth, ClientConfig, DefaultPorts, ServiceAuth, ServiceConfig,
    WinrmConfig, WinrsConfig,
};
pub use fault::{
    FaultAction, FaultCode, FaultSubcode, FaultValue, NestedFault, ProviderFault,
    ProviderFaultContent, WsmanFault,
};
pub use identify::{ClientMessage, IdentifyRequest, IdentifyResponse};
pub use names::{
    Action, CommandState, SignalCode, actions, command_states, ns, resources, signals,
};
pub use request::{
    CommandLine, Connect, CreateShell, DEFAULT_LOCALE, DEFAULT_MAX_ENVELOPE_SIZE,
    DEFAULT_OPERATION_TIMEOUT, Disconnect, Enumerate, EnvironmentVariable, OperationTimeout, Pull,
    Receive, Request, RequestBody, RequestHeader, Selector, SelectorFilter, Send, SendStream,
    Signal, WsOption,
};
pub use response::{
    CommandInfo, CommandResponse, CommandStateInfo, ConnectResponse, CreateResponse,
    EnumerationBatch, EnumerationItem, GetResponse, ReceiveResponse, ReceivedStream, Response,
    ResponseBody, ResponseHeader,
};
pub use shell::{ShellInfo, ShellState};

use crate::xml::XmlError;

/// Why a WS-Management message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsmanError {
    /// The bytes are not a well-formed XML document within the parser limits.
    #[error("invalid XML: {0}")]
    Xml(#[from] XmlError),
    /// The root element is not a SOAP 1.2 `s:Envelope`.
    #[error("not a SOAP envelope: root element is {{{ns}}}{name}")]
    NotAnEnvelope {
        /// Namespace of the root element found.
        ns: String,
        /// Local name of the root element found.
        name: String,
    },
    /// A required element is absent.
    #[error("missing element {0}")]
    MissingElement(&'static str),
    /// A required attribute is absent.
    #[error("missing attribute {attribute} on {element}")]
    MissingAttribute {
        /// Element that should carry it.
        element: &'static str,
        /// Attribute name.
        attribute: &'static str,
    },
    /// An element or attribute holds a value that does not parse as its type.
    #[error("invalid value for {field}: {value:?}")]
    InvalidValue {
        /// Which field (element path or attribute).
        field: &'static str,
        /// The offending text, cut to 64 characters.
        value: String,
    },
    /// A base64 field does not decode.
    #[error("invalid base64 in {0}")]
    InvalidBase64(&'static str),
    /// The body does not hold what the action requires.
    #[error("unexpected body for action {action}: found {found}")]
    UnexpectedBody {
        /// The action URI of the message.
        action: String,
        /// What the body held (`{ns}name` of its first element, or `nothing`).
        found: String,
    },
    /// The message is a SOAP fault where a success reply was expected (used by
    /// [`IdentifyResponse::parse`], which has no header to carry the fault action).
    #[error("WS-Management fault: {0}")]
    Fault(Box<WsmanFault>),
}
