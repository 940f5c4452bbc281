//! SOAP faults as Windows sends them (wire-facts 1 and 2.6) and the WS-Management error
//! codes a client classifies them by.

use super::WsmanError;
use super::names::{Action, ns, resources};
use super::util::{parse_number, required, write_text};
use crate::xml::{Element, Node, XML_NS, XmlWriter};

/// A `s:Fault` body with the Windows `f:WSManFault` detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsmanFault {
    /// Which fault action the header carried (WS-Management or WS-Addressing).
    pub action: FaultAction,
    /// `s:Code/s:Value`.
    pub value: FaultValue,
    /// `s:Code/s:Subcode/s:Value`.
    pub subcode: Option<FaultSubcode>,
    /// `s:Reason/s:Text`, verbatim (Windows ends it with one or two spaces).
    pub reason: String,
    /// `s:Reason/s:Text/@xml:lang`.
    pub reason_lang: Option<String>,
    /// `s:Detail/w:FaultDetail` URI.
    pub fault_detail: Option<String>,
    /// `f:WSManFault/@Code`; `None` when the fault has no `f:WSManFault` detail.
    pub code: Option<FaultCode>,
    /// `f:WSManFault/@Machine`.
    pub machine: Option<String>,
    /// The flattened text of `f:Message` (including the text of a nested provider fault).
    /// When [`WsmanFault::provider_fault`] is set, writing emits the provider fault and this
    /// field is only its flattened text.
    pub message: String,
    /// `f:Message/f:ProviderFault`, when the message comes from a plugin.
    pub provider_fault: Option<ProviderFault>,
}

/// The header action of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultAction {
    /// `http://schemas.dmtf.org/wbem/wsman/1/wsman/fault`.
    Wsman,
    /// `http://schemas.xmlsoap.org/ws/2004/08/addressing/fault`, for header errors.
    Addressing,
}

impl FaultAction {
    /// The header action.
    pub fn action(self) -> Action {
        match self {
            FaultAction::Wsman => Action::WsmanFault,
            FaultAction::Addressing => Action::AddressingFault,
        }
    }
}

/// `s:Code/s:Value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FaultValue {
    /// `s:Sender`: the request was at fault.
    Sender,
    /// `s:Receiver`: the server failed (including the normal Receive timeout).
    Receiver,
    /// Any other text, verbatim.
    Other(String),
}

impl FaultValue {
    fn from_text(text: &str) -> Self {
        match local_part(text) {
            "Sender" => FaultValue::Sender,
            "Receiver" => FaultValue::Receiver,
            _ => FaultValue::Other(text.trim().to_owned()),
        }
    }

    fn as_text(&self) -> &str {
        match self {
            FaultValue::Sender => "s:Sender",
            FaultValue::Receiver => "s:Receiver",
            FaultValue::Other(text) => text,
        }
    }
}

/// `s:Subcode/s:Value`: a QName in text. The tree parser drops namespace declarations, so
/// known subcodes are matched by local name and written with the prefix Windows uses
/// (`w:` for WS-Management, `a:` for WS-Addressing; wire-facts 2.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultSubcode {
    /// `w:TimedOut` (OperationTimeout expired; normal on Receive).
    TimedOut,
    /// `w:InvalidSelectors` (shell or command gone).
    InvalidSelectors,
    /// `w:InvalidParameter`.
    InvalidParameter,
    /// `w:InternalError`.
    InternalError,
    /// `w:QuotaLimit` (MS-WSMV 3.1.4.5.2.1).
    QuotaLimit,
    /// `w:AccessDenied`.
    AccessDenied,
    /// `w:DestinationUnreachable` (unknown resource URI).
    DestinationUnreachable,
    /// `w:ActionNotSupported`.
    ActionNotSupported,
    /// `w:EncodingLimit`.
    EncodingLimit,
    /// `w:SchemaValidationError`.
    SchemaValidationError,
    /// `w:UnsupportedFeature`.
    UnsupportedFeature,
    /// `w:InvalidOptions`.
    InvalidOptions,
    /// `a:InvalidMessageInformationHeader` (R:test_psrp_is_alive_other_wsman_error).
    InvalidMessageInformationHeader,
    /// `a:MessageInformationHeaderRequired`.
    MessageInformationHeaderRequired,
    /// `a:EndpointUnavailable`.
    EndpointUnavailable,
    /// Any other subcode text, verbatim.
    Other(String),
}

const SUBCODES: [(&str, FaultSubcode); 15] = [
    ("w:TimedOut", FaultSubcode::TimedOut),
    ("w:InvalidSelectors", FaultSubcode::InvalidSelectors),
    ("w:InvalidParameter", FaultSubcode::InvalidParameter),
    ("w:InternalError", FaultSubcode::InternalError),
    ("w:QuotaLimit", FaultSubcode::QuotaLimit),
    ("w:AccessDenied", FaultSubcode::AccessDenied),
    (
        "w:DestinationUnreachable",
        FaultSubcode::DestinationUnreachable,
    ),
    ("w:ActionNotSupported", FaultSubcode::ActionNotSupported),
    ("w:EncodingLimit", FaultSubcode::EncodingLimit),
    (
        "w:SchemaValidationError",
        FaultSubcode::SchemaValidationError,
    ),
    ("w:UnsupportedFeature", FaultSubcode::UnsupportedFeature),
    ("w:InvalidOptions", FaultSubcode::InvalidOptions),
    (
        "a:InvalidMessageInformationHeader",
        FaultSubcode::InvalidMessageInformationHeader,
    ),
    (
        "a:MessageInformationHeaderRequired",
        FaultSubcode::MessageInformationHeaderRequired,
    ),
    ("a:EndpointUnavailable", FaultSubcode::EndpointUnavailable),
];

impl FaultSubcode {
    /// The subcode for its text (`w:TimedOut`); matched on the local name.
    pub fn from_text(text: &str) -> Self {
        let local = local_part(text);
        SUBCODES
            .iter()
            .find(|(q, _)| local_part(q) == local)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| FaultSubcode::Other(text.trim().to_owned()))
    }

    /// The text written on the wire.
    pub fn as_text(&self) -> &str {
        if let FaultSubcode::Other(text) = self {
            return text;
        }
        SUBCODES
            .iter()
            .find(|(_, s)| s == self)
            .map(|(q, _)| *q)
            .unwrap_or_default()
    }

    /// The local name (`TimedOut`).
    pub fn local_name(&self) -> &str {
        local_part(self.as_text())
    }
}

/// `f:ProviderFault`: a plugin's own fault inside `f:Message`
/// (R:test_winrs_fail_poll_process, R:test_psrp_is_alive_invalid_selectors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderFault {
    /// `@provider`, e.g. `Shell cmd plugin`.
    pub provider: String,
    /// `@path`, e.g. `%systemroot%\system32\winrscmd.dll`.
    pub path: String,
    /// Plain text or a nested `f:WSManFault`.
    pub content: ProviderFaultContent,
}

/// What a provider fault holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderFaultContent {
    /// Plain text.
    Text(String),
    /// A nested `f:WSManFault`.
    Fault(Box<NestedFault>),
}

/// A `f:WSManFault` nested in a provider fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedFault {
    /// `@Code`.
    pub code: FaultCode,
    /// `@Machine`.
    pub machine: Option<String>,
    /// Flattened `f:Message` text.
    pub message: String,
    /// A further provider fault inside this one's message.
    pub provider_fault: Option<ProviderFault>,
}

macro_rules! fault_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, )*) => {
        /// A WS-Management / Win32 error code from `f:WSManFault/@Code` (decimal DWORD;
        /// names from windows-sys `Win32::System::RemoteManagement` ERROR_WSMAN_*).
        /// Equality and hashing use [`FaultCode::as_u32`], so `Unknown(5)` equals
        /// `AccessDenied`.
        #[derive(Debug, Clone, Copy)]
        #[non_exhaustive]
        pub enum FaultCode {
            $( $(#[$doc])* $name, )*
            /// Any other code.
            Unknown(u32),
        }

        impl FaultCode {
            /// The code for a number.
            pub fn from_u32(code: u32) -> Self {
                match code {
                    $( $value => FaultCode::$name, )*
                    other => FaultCode::Unknown(other),
                }
            }

            /// The number.
            pub fn as_u32(self) -> u32 {
                match self {
                    $( FaultCode::$name => $value, )*
                    FaultCode::Unknown(other) => other,
                }
            }
        }
    };
}

fault_codes! {
    /// 5, ERROR_ACCESS_DENIED: plugin / session-configuration ACL (wire-facts 1.1).
    AccessDenied = 5,
    /// 87, ERROR_INVALID_PARAMETER (R:test_winrs_fail_poll_process).
    InvalidParameter = 87,
    /// 0x80070002, file not found (R:test_winrs_no_cmd_shell).
    FileNotFound = 2_147_942_402,
    /// 0x80070005, access denied raised inside a provider.
    AccessDeniedHresult = 2_147_942_405,
    /// ERROR_WSMAN_INVALID_MESSAGE_INFORMATION_HEADER (R:test_psrp_is_alive_other_wsman_error).
    InvalidMessageInformationHeader = 2_150_858_767,
    /// ERROR_WSMAN_DESTINATION_UNREACHABLE (0x80338012, "cannot connect").
    DestinationUnreachable = 2_150_858_770,
    /// ERROR_WSMAN_ENVELOPE_TOO_LARGE.
    EnvelopeTooLarge = 2_150_858_790,
    /// ERROR_WSMAN_OPERATION_TIMEDOUT: normal on Receive, re-issue it (wire-facts 1.11).
    OperationTimeout = 2_150_858_793,
    /// ERROR_WSMAN_INVALID_RESOURCE_URI: session configuration not found (wire-facts 1.9).
    InvalidResourceUri = 2_150_858_811,
    /// ERROR_WSMAN_QUOTA_LIMIT.
    QuotaLimit = 2_150_858_815,
    /// ERROR_WSMAN_MAX_ENVELOPE_SIZE_EXCEEDED.
    MaxEnvelopeSizeExceeded = 2_150_858_824,
    /// ERROR_WSMAN_UNEXPECTED_SELECTORS: shell or command gone (wire-facts 1.12).
    UnexpectedSelectors = 2_150_858_843,
    /// ERROR_WSMAN_SERVER_NOT_TRUSTED (Windows client TrustedHosts rule).
    ServerNotTrusted = 2_150_858_980,
    /// ERROR_WSMAN_KERBEROS_IPADDRESS.
    KerberosIpAddress = 2_150_859_019,
    /// ERROR_WSMAN_CLIENT_WORKGROUP_NO_KERBEROS.
    ClientWorkgroupNoKerberos = 2_150_859_020,
    /// ERROR_WSMAN_HTTP_REQUEST_TOO_LARGE_STATUS (HTTP 413).
    HttpRequestTooLarge = 2_150_859_025,
    /// ERROR_WSMAN_NETWORK_TIMEDOUT.
    NetworkTimedOut = 2_150_859_046,
    /// ERROR_WSMAN_QUOTA_MAX_SHELLS: MaxShellsPerUser (wire-facts 1.10).
    QuotaMaxShells = 2_150_859_173,
    /// ERROR_WSMAN_QUOTA_MAX_OPERATIONS: MaxConcurrentOperationsPerUser.
    QuotaMaxOperations = 2_150_859_174,
    /// ERROR_WSMAN_QUOTA_USER.
    QuotaUser = 2_150_859_175,
    /// ERROR_WSMAN_QUOTA_SYSTEM.
    QuotaSystem = 2_150_859_176,
    /// ERROR_WSMAN_QUOTA_MAX_SHELLUSERS: winrs MaxConcurrentUsers.
    QuotaMaxShellUsers = 2_150_859_179,
    /// ERROR_WSMAN_NAME_NOT_RESOLVED.
    NameNotResolved = 2_150_859_193,
    /// ERROR_WSMAN_DEFAULTAUTH_IPADDRESS.
    DefaultAuthIpAddress = 2_150_859_195,
    /// ERROR_WSMAN_QUOTA_MAX_SHELLS_PPQ (per-plugin quota).
    QuotaMaxShellsPpq = 2_150_859_236,
    /// ERROR_WSMAN_QUOTA_MAX_USERS_PPQ.
    QuotaMaxUsersPpq = 2_150_859_237,
    /// ERROR_WSMAN_QUOTA_MAX_PLUGINSHELLS_PPQ.
    QuotaMaxPluginShellsPpq = 2_150_859_238,
    /// ERROR_WSMAN_QUOTA_MAX_PLUGINOPERATIONS_PPQ.
    QuotaMaxPluginOperationsPpq = 2_150_859_239,
    /// ERROR_WSMAN_QUOTA_MAX_OPERATIONS_USER_PPQ.
    QuotaMaxOperationsUserPpq = 2_150_859_240,
    /// ERROR_WSMAN_QUOTA_MAX_COMMANDS_PER_SHELL_PPQ.
    QuotaMaxCommandsPerShellPpq = 2_150_859_241,
    /// ERROR_WSMAN_QUOTA_MIN_REQUIREMENT_NOT_AVAILABLE_PPQ.
    QuotaMinRequirementNotAvailablePpq = 2_150_859_242,
}

impl PartialEq for FaultCode {
    fn eq(&self, other: &Self) -> bool {
        self.as_u32() == other.as_u32()
    }
}

impl Eq for FaultCode {}

impl std::hash::Hash for FaultCode {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_u32().hash(state);
    }
}

impl std::fmt::Display for FaultCode {
    /// Decimal and HRESULT hex, as Windows prints them (`2150858793 (0x80338029)`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.as_u32();
        write!(f, "{n} (0x{n:08X})")
    }
}

impl FaultCode {
    /// A quota was exceeded (wire-facts 1.10; PowerShell's `IsWsManQuotaReached` set).
    pub fn is_quota(self) -> bool {
        matches!(
            self.as_u32(),
            2_150_858_815 | 2_150_859_173..=2_150_859_176 | 2_150_859_179 | 2_150_859_236..=2_150_859_242
        )
    }

    /// The OperationTimeout expired (normal on Receive).
    pub fn is_operation_timeout(self) -> bool {
        self == FaultCode::OperationTimeout
    }

    /// The shell or command id is unknown (deleted, expired, wrong id).
    pub fn is_shell_not_found(self) -> bool {
        self == FaultCode::UnexpectedSelectors
    }

    /// Access denied (code 5 or 0x80070005).
    pub fn is_access_denied(self) -> bool {
        matches!(
            self,
            FaultCode::AccessDenied | FaultCode::AccessDeniedHresult
        )
    }

    /// The resource URI (session configuration) does not exist.
    pub fn is_invalid_resource_uri(self) -> bool {
        self == FaultCode::InvalidResourceUri
    }
}

impl std::fmt::Display for WsmanFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = if self.message.trim().is_empty() {
            self.reason.trim()
        } else {
            self.message.trim()
        };
        match self.code {
            Some(code) => write!(f, "{text} (code {code})"),
            None => f.write_str(text),
        }
    }
}

/// The two-space-terminated text of the Receive timeout (R:test_winrs_operation_timeout).
const TIMEOUT_TEXT: &str = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ";
/// Reason text of invalid-selector faults (R:test_winrs_bad_cmd_id).
const INVALID_SELECTORS_TEXT: &str = "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. ";
/// Message of an unknown command id (R:test_winrs_bad_cmd_id).
const UNKNOWN_COMMAND_TEXT: &str = "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. Either the command has completed execution or the client specified an invalid command identifier. ";

impl WsmanFault {
    /// A fault with the given classification; the message is also used as the reason.
    /// Building block for the constructors below and for simulator-specific faults.
    pub fn new(
        value: FaultValue,
        subcode: FaultSubcode,
        code: FaultCode,
        machine: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        Self {
            action: FaultAction::Wsman,
            value,
            subcode: Some(subcode),
            reason: message.clone(),
            reason_lang: Some("en-US".to_owned()),
            fault_detail: None,
            code: Some(code),
            machine: Some(machine.into()),
            message,
            provider_fault: None,
        }
    }

    /// The Receive timeout (R:test_winrs_operation_timeout): `s:Receiver`, `w:TimedOut`,
    /// code 2150858793, text ending in two spaces.
    pub fn operation_timeout(machine: impl Into<String>) -> Self {
        Self::new(
            FaultValue::Receiver,
            FaultSubcode::TimedOut,
            FaultCode::OperationTimeout,
            machine,
            TIMEOUT_TEXT,
        )
    }

    /// An unknown CommandId (R:test_winrs_bad_cmd_id, R:test_psrp_receive_failure).
    pub fn unknown_command_id(machine: impl Into<String>) -> Self {
        Self {
            reason: INVALID_SELECTORS_TEXT.to_owned(),
            fault_detail: Some(resources::FAULT_DETAIL_UNEXPECTED_SELECTORS.to_owned()),
            ..Self::new(
                FaultValue::Sender,
                FaultSubcode::InvalidSelectors,
                FaultCode::UnexpectedSelectors,
                machine,
                UNKNOWN_COMMAND_TEXT,
            )
        }
    }

    /// A shell that no longer exists, as a shell Get reports it
    /// (R:test_psrp_is_alive_invalid_selectors): nested "Shell provider" fault.
    pub fn shell_not_found(machine: impl Into<String>) -> Self {
        let machine = machine.into();
        let nested = NestedFault {
            code: FaultCode::UnexpectedSelectors,
            machine: Some(machine.clone()),
            message: INVALID_SELECTORS_TEXT.to_owned(),
            provider_fault: None,
        };
        Self {
            fault_detail: Some(resources::FAULT_DETAIL_UNEXPECTED_SELECTORS.to_owned()),
            provider_fault: Some(ProviderFault {
                provider: "Shell provider".to_owned(),
                path: "%systemroot%\\system32\\WsmSvc.dll".to_owned(),
                content: ProviderFaultContent::Fault(Box::new(nested)),
            }),
            ..Self::new(
                FaultValue::Sender,
                FaultSubcode::InvalidSelectors,
                FaultCode::UnexpectedSelectors,
                machine,
                INVALID_SELECTORS_TEXT,
            )
        }
    }

    /// An unknown resource URI (wire-facts 1.9; message text from pywinrm issue 273). The
    /// subcode and fault detail are not recorded; `w:DestinationUnreachable` and
    /// `faultDetail/InvalidResourceURI` follow DSP0226.
    pub fn invalid_resource_uri(machine: impl Into<String>, resource_uri: &str) -> Self {
        let text = format!(
            "The WS-Management service cannot process the request. The resource URI ({resource_uri}) was not found in the WS-Management catalog. The catalog contains the metadata that describes resources, or logical endpoints. "
        );
        Self {
            fault_detail: Some(resources::FAULT_DETAIL_INVALID_RESOURCE_URI.to_owned()),
            ..Self::new(
                FaultValue::Sender,
                FaultSubcode::DestinationUnreachable,
                FaultCode::InvalidResourceUri,
                machine,
                text,
            )
        }
    }

    /// MaxShellsPerUser exceeded (wire-facts 1.10 text; `w:QuotaLimit` per MS-WSMV
    /// 3.1.4.5.2.1).
    pub fn max_shells_per_user(machine: impl Into<String>, max: u32) -> Self {
        let text = format!(
            "The WS-Management service cannot process the request. This user is allowed a maximum number of {max} concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user. "
        );
        Self::new(
            FaultValue::Sender,
            FaultSubcode::QuotaLimit,
            FaultCode::QuotaMaxShells,
            machine,
            text,
        )
    }

    /// MaxConcurrentOperationsPerUser exceeded (wire-facts 1.10 text).
    pub fn max_operations_per_user(machine: impl Into<String>, max: u32) -> Self {
        let text = format!(
            "The WS-Management service cannot process the request. This user is allowed a maximum number of {max} concurrent operations, which has been exceeded. Close existing operations for this user, or raise the quota for this user. "
        );
        Self::new(
            FaultValue::Sender,
            FaultSubcode::QuotaLimit,
            FaultCode::QuotaMaxOperations,
            machine,
            text,
        )
    }

    /// Access denied by the plugin ACL (wire-facts 1.1: code 5, "Access is denied."; the
    /// subcode is not recorded, `w:AccessDenied` follows DSP0226).
    pub fn access_denied(machine: impl Into<String>) -> Self {
        Self::new(
            FaultValue::Sender,
            FaultSubcode::AccessDenied,
            FaultCode::AccessDenied,
            machine,
            "Access is denied. ",
        )
    }

    /// An invalid `wsman:OperationTimeout` header (R:test_psrp_is_alive_other_wsman_error):
    /// a WS-Addressing fault quoting the value.
    pub fn invalid_timeout_header(machine: impl Into<String>, value: &str) -> Self {
        Self {
            action: FaultAction::Addressing,
            reason: "The WS-Management service cannot process the request. The request contains one or more invalid SOAP headers. ".to_owned(),
            ..Self::new(
                FaultValue::Sender,
                FaultSubcode::InvalidMessageInformationHeader,
                FaultCode::InvalidMessageInformationHeader,
                machine,
                format!(
                    "The WS-Management service cannot process the request. The XML contains an invalid timeout field in the SOAP header: {value}. "
                ),
            )
        }
    }

    /// The code is a quota fault.
    pub fn is_quota(&self) -> bool {
        self.code.is_some_and(FaultCode::is_quota)
    }

    /// The Receive timed out (by code, or by `w:TimedOut` when there is no code).
    pub fn is_operation_timeout(&self) -> bool {
        match self.code {
            Some(code) => code.is_operation_timeout(),
            None => self.subcode == Some(FaultSubcode::TimedOut),
        }
    }

    /// The shell or command is gone.
    pub fn is_shell_not_found(&self) -> bool {
        self.code.is_some_and(FaultCode::is_shell_not_found)
    }

    /// Access denied.
    pub fn is_access_denied(&self) -> bool {
        self.code.is_some_and(FaultCode::is_access_denied)
    }

    /// Unknown resource URI.
    pub fn is_invalid_resource_uri(&self) -> bool {
        self.code.is_some_and(FaultCode::is_invalid_resource_uri)
    }

    /// N from "This user is allowed a maximum number of N concurrent shells" (the real
    /// MaxShellsPerUser text, wire-facts 1.10), searched in the message then the reason.
    pub fn max_shells_quota(&self) -> Option<u32> {
        quota_number(&self.message).or_else(|| quota_number(&self.reason))
    }

    pub(crate) fn parse(fault: &Element, action: FaultAction) -> Result<Self, WsmanError> {
        let code = required(fault, ns::SOAP, "Code", "s:Fault/s:Code")?;
        let value = FaultValue::from_text(
            &required(code, ns::SOAP, "Value", "s:Fault/s:Code/s:Value")?.text(),
        );
        let subcode = code
            .path(&[(ns::SOAP, "Subcode"), (ns::SOAP, "Value")])
            .map(|v| FaultSubcode::from_text(&v.text()));
        let text = fault.path(&[(ns::SOAP, "Reason"), (ns::SOAP, "Text")]);
        let detail = fault.child(ns::SOAP, "Detail");
        let mut out = Self {
            action,
            value,
            subcode,
            reason: text.map(|t| t.text().into_owned()).unwrap_or_default(),
            reason_lang: text
                .and_then(|t| t.attr_ns(XML_NS, "lang"))
                .map(str::to_owned),
            fault_detail: detail
                .and_then(|d| d.child(ns::WSMAN, "FaultDetail"))
                .map(|e| e.text().into_owned()),
            code: None,
            machine: None,
            message: String::new(),
            provider_fault: None,
        };
        if let Some(wf) = detail.and_then(|d| d.child(ns::WSMAN_FAULT, "WSManFault")) {
            let nested = parse_wsman_fault(wf)?;
            out.code = Some(nested.code);
            out.machine = nested.machine;
            out.message = nested.message;
            out.provider_fault = nested.provider_fault;
        }
        Ok(out)
    }

    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.start("s:Fault", &[]);
        w.start("s:Code", &[]);
        w.text_element("s:Value", &[], self.value.as_text());
        if let Some(sub) = &self.subcode {
            w.start("s:Subcode", &[]);
            w.text_element("s:Value", &[], sub.as_text());
            w.end("s:Subcode");
        }
        w.end("s:Code");
        w.start("s:Reason", &[]);
        let lang: Vec<(&str, &str)> = self
            .reason_lang
            .iter()
            .map(|l| ("xml:lang", l.as_str()))
            .collect();
        write_text(w, "s:Text", &lang, &self.reason);
        w.end("s:Reason");
        if self.fault_detail.is_some() || self.code.is_some() {
            w.start("s:Detail", &[]);
            if let Some(d) = &self.fault_detail {
                w.text_element("w:FaultDetail", &[], d);
            }
            if let Some(code) = self.code {
                write_wsman_fault(
                    w,
                    code,
                    self.machine.as_deref(),
                    &self.message,
                    self.provider_fault.as_ref(),
                );
            }
            w.end("s:Detail");
        }
        w.end("s:Fault");
    }
}

fn local_part(qname: &str) -> &str {
    let q = qname.trim();
    q.rsplit_once(':').map_or(q, |(_, local)| local)
}

fn quota_number(text: &str) -> Option<u32> {
    const LEAD: &str = "maximum number of ";
    let start = text.find(LEAD)? + LEAD.len();
    let rest = text.get(start..)?;
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, tail) = rest.split_at(digits_end);
    if !tail.starts_with(" concurrent shells") {
        return None;
    }
    digits.parse().ok()
}

/// Reads a `f:WSManFault` (top level or nested) into a [`NestedFault`]. Recursion is
/// bounded by the XML parser's depth limit.
fn parse_wsman_fault(wf: &Element) -> Result<NestedFault, WsmanError> {
    let code_text = wf.attr("Code").ok_or(WsmanError::MissingAttribute {
        element: "f:WSManFault",
        attribute: "Code",
    })?;
    let code = FaultCode::from_u32(parse_number(code_text, "f:WSManFault/@Code")?);
    let mut message = String::new();
    let mut provider_fault = None;
    if let Some(m) = wf.child(ns::WSMAN_FAULT, "Message") {
        for node in &m.children {
            match node {
                Node::Text(t) => message.push_str(t),
                Node::Element(e) if e.is(ns::WSMAN_FAULT, "ProviderFault") => {
                    let pf = parse_provider_fault(e)?;
                    message.push_str(&pf.text());
                    provider_fault = Some(pf);
                }
                Node::Element(_) => {}
            }
        }
    }
    Ok(NestedFault {
        code,
        machine: wf.attr("Machine").map(str::to_owned),
        message,
        provider_fault,
    })
}

fn parse_provider_fault(e: &Element) -> Result<ProviderFault, WsmanError> {
    let content = match e.child(ns::WSMAN_FAULT, "WSManFault") {
        Some(nested) => ProviderFaultContent::Fault(Box::new(parse_wsman_fault(nested)?)),
        None => ProviderFaultContent::Text(e.text().into_owned()),
    };
    Ok(ProviderFault {
        provider: e.attr("provider").unwrap_or_default().to_owned(),
        path: e.attr("path").unwrap_or_default().to_owned(),
        content,
    })
}

impl ProviderFault {
    /// The flattened text of the provider fault.
    pub fn text(&self) -> String {
        match &self.content {
            ProviderFaultContent::Text(t) => t.clone(),
            ProviderFaultContent::Fault(f) => f.message.clone(),
        }
    }
}

fn write_wsman_fault(
    w: &mut XmlWriter,
    code: FaultCode,
    machine: Option<&str>,
    message: &str,
    provider: Option<&ProviderFault>,
) {
    let code = code.as_u32().to_string();
    let mut attrs = vec![("xmlns:f", ns::WSMAN_FAULT), ("Code", code.as_str())];
    if let Some(m) = machine {
        attrs.push(("Machine", m));
    }
    w.start("f:WSManFault", &attrs);
    match provider {
        Some(pf) => {
            w.start("f:Message", &[]);
            let attrs = [
                ("provider", pf.provider.as_str()),
                ("path", pf.path.as_str()),
            ];
            match &pf.content {
                ProviderFaultContent::Text(t) => write_text(w, "f:ProviderFault", &attrs, t),
                ProviderFaultContent::Fault(nested) => {
                    w.start("f:ProviderFault", &attrs);
                    write_wsman_fault(
                        w,
                        nested.code,
                        nested.machine.as_deref(),
                        &nested.message,
                        nested.provider_fault.as_ref(),
                    );
                    w.end("f:ProviderFault");
                }
            }
            w.end("f:Message");
        }
        None => write_text(w, "f:Message", &[], message),
    }
    w.end("f:WSManFault");
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::wsman::{Response, ResponseBody};

    fn fault_envelope(action: &str, fault: &str) -> Vec<u8> {
        format!(
            r#"<s:Envelope xml:lang="en-US" xmlns:s="{}" xmlns:a="{}" xmlns:w="{}"><s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{}</a:MessageID></s:Header><s:Body>{fault}</s:Body></s:Envelope>"#,
            ns::SOAP,
            ns::ADDRESSING,
            ns::WSMAN,
            Uuid::from_u128(1)
        )
        .into_bytes()
    }

    fn parse_fault(action: &str, fault: &str) -> WsmanFault {
        let r = Response::parse(&fault_envelope(action, fault)).unwrap();
        let f = r.fault().unwrap().clone();
        // Whatever was parsed writes back to the same structure.
        let again = Response::parse(&r.to_xml()).unwrap();
        assert_eq!(again, r);
        f
    }

    #[test]
    fn nested_provider_fault_with_nested_wsman_fault() {
        // Handwritten in the shape of wire-facts 2.6 (shell Get on a deleted shell).
        let f = parse_fault(
            crate::wsman::actions::WSMAN_FAULT,
            r#"<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>w:InvalidSelectors</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">Outer reason. </s:Text></s:Reason><s:Detail><w:FaultDetail>urn:detail</w:FaultDetail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858843" Machine="m1"><f:Message><f:ProviderFault provider="Shell provider" path="p.dll"><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858843" Machine="m2"><f:Message>Inner text. </f:Message></f:WSManFault></f:ProviderFault></f:Message></f:WSManFault></s:Detail></s:Fault>"#,
        );
        assert_eq!(f.action, FaultAction::Wsman);
        assert_eq!(f.value, FaultValue::Sender);
        assert_eq!(f.subcode, Some(FaultSubcode::InvalidSelectors));
        assert_eq!(f.reason, "Outer reason. ");
        assert_eq!(f.reason_lang.as_deref(), Some("en-US"));
        assert_eq!(f.fault_detail.as_deref(), Some("urn:detail"));
        assert_eq!(f.code, Some(FaultCode::UnexpectedSelectors));
        assert_eq!(f.machine.as_deref(), Some("m1"));
        assert_eq!(f.message, "Inner text. ");
        let pf = f.provider_fault.as_ref().unwrap();
        assert_eq!(
            (pf.provider.as_str(), pf.path.as_str()),
            ("Shell provider", "p.dll")
        );
        match &pf.content {
            ProviderFaultContent::Fault(n) => {
                assert_eq!(n.code, FaultCode::UnexpectedSelectors);
                assert_eq!(n.machine.as_deref(), Some("m2"));
                assert_eq!(n.message, "Inner text. ");
            }
            other => panic!("{other:?}"),
        }
        assert!(f.is_shell_not_found());
        assert_eq!(f.to_string(), "Inner text. (code 2150858843 (0x8033805B))");
    }

    #[test]
    fn provider_fault_with_text_and_addressing_fault() {
        let f = parse_fault(
            crate::wsman::actions::WSMAN_FAULT,
            r#"<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:InternalError</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">Missing. </s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2147942402" Machine="m"><f:Message><f:ProviderFault provider="Shell cmd plugin" path="c.dll">Missing. </f:ProviderFault></f:Message></f:WSManFault></s:Detail></s:Fault>"#,
        );
        assert_eq!(f.code, Some(FaultCode::FileNotFound));
        assert_eq!(f.subcode, Some(FaultSubcode::InternalError));
        assert_eq!(f.message, "Missing. ");
        assert_eq!(
            f.provider_fault.unwrap().content,
            ProviderFaultContent::Text("Missing. ".into())
        );

        let a = parse_fault(
            crate::wsman::actions::ADDRESSING_FAULT,
            r#"<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>a:InvalidMessageInformationHeader</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">Bad header. </s:Text></s:Reason></s:Fault>"#,
        );
        assert_eq!(a.action, FaultAction::Addressing);
        assert_eq!(
            a.subcode,
            Some(FaultSubcode::InvalidMessageInformationHeader)
        );
        assert_eq!(a.code, None);
        assert_eq!(a.to_string(), "Bad header.");

        let other = parse_fault(
            crate::wsman::actions::WSMAN_FAULT,
            r#"<s:Fault><s:Code><s:Value>s:Other</s:Value><s:Subcode><s:Value>x:Custom</s:Value></s:Subcode></s:Code></s:Fault>"#,
        );
        assert_eq!(other.value, FaultValue::Other("s:Other".into()));
        assert_eq!(other.subcode, Some(FaultSubcode::Other("x:Custom".into())));
        assert_eq!(other.reason, "");
    }

    #[test]
    fn server_constructors_round_trip_with_their_codes() {
        let cases = [
            (
                WsmanFault::operation_timeout("h"),
                FaultCode::OperationTimeout,
                FaultSubcode::TimedOut,
            ),
            (
                WsmanFault::unknown_command_id("h"),
                FaultCode::UnexpectedSelectors,
                FaultSubcode::InvalidSelectors,
            ),
            (
                WsmanFault::shell_not_found("h"),
                FaultCode::UnexpectedSelectors,
                FaultSubcode::InvalidSelectors,
            ),
            (
                WsmanFault::invalid_resource_uri("h", "http://schemas.microsoft.com/powershell/X"),
                FaultCode::InvalidResourceUri,
                FaultSubcode::DestinationUnreachable,
            ),
            (
                WsmanFault::max_shells_per_user("h", 5),
                FaultCode::QuotaMaxShells,
                FaultSubcode::QuotaLimit,
            ),
            (
                WsmanFault::max_operations_per_user("h", 1500),
                FaultCode::QuotaMaxOperations,
                FaultSubcode::QuotaLimit,
            ),
            (
                WsmanFault::access_denied("h"),
                FaultCode::AccessDenied,
                FaultSubcode::AccessDenied,
            ),
            (
                WsmanFault::invalid_timeout_header("h", "PT-1S"),
                FaultCode::InvalidMessageInformationHeader,
                FaultSubcode::InvalidMessageInformationHeader,
            ),
        ];
        for (fault, code, subcode) in cases {
            let response = Response::reply(
                Uuid::from_u128(1),
                Uuid::from_u128(2),
                ResponseBody::Fault(fault.clone()),
            );
            assert_eq!(response.header.action, fault.action.action());
            let parsed = Response::parse(&response.to_xml()).unwrap();
            assert_eq!(parsed.fault(), Some(&fault));
            assert_eq!(fault.code, Some(code));
            assert_eq!(fault.subcode, Some(subcode));
            assert_eq!(fault.machine.as_deref(), Some("h"));
            assert!(fault.message.ends_with(' '), "{:?}", fault.message);
        }
        let timeout = WsmanFault::operation_timeout("h");
        assert!(timeout.reason.ends_with(".  "));
        assert!(timeout.is_operation_timeout());
        assert_eq!(timeout.value, FaultValue::Receiver);
        assert!(
            WsmanFault::invalid_resource_uri("h", "urn:r")
                .message
                .contains("(urn:r)")
        );
        assert!(WsmanFault::access_denied("h").is_access_denied());
        assert!(WsmanFault::max_operations_per_user("h", 15).is_quota());
        assert_eq!(
            WsmanFault::invalid_timeout_header("h", "PT-1S").action,
            FaultAction::Addressing
        );
    }

    #[test]
    fn reads_the_shell_quota_from_the_text() {
        assert_eq!(
            WsmanFault::max_shells_per_user("h", 5).max_shells_quota(),
            Some(5)
        );
        assert_eq!(
            WsmanFault::max_operations_per_user("h", 15).max_shells_quota(),
            None
        );
        let mut f = WsmanFault::access_denied("h");
        f.message.clear();
        f.reason = "This user is allowed a maximum number of 30 concurrent shells, which has been exceeded.".into();
        assert_eq!(f.max_shells_quota(), Some(30));
        f.reason = "maximum number of 99999999999 concurrent shells".into();
        assert_eq!(f.max_shells_quota(), None);
        f.reason = "maximum number of ".into();
        assert_eq!(f.max_shells_quota(), None);
    }

    #[test]
    fn fault_codes_map_both_ways() {
        let known = [
            5u32,
            87,
            2_147_942_402,
            2_147_942_405,
            2_150_858_767,
            2_150_858_770,
            2_150_858_790,
            2_150_858_793,
            2_150_858_811,
            2_150_858_815,
            2_150_858_824,
            2_150_858_843,
            2_150_858_980,
            2_150_859_019,
            2_150_859_020,
            2_150_859_025,
            2_150_859_046,
            2_150_859_173,
            2_150_859_174,
            2_150_859_175,
            2_150_859_176,
            2_150_859_179,
            2_150_859_193,
            2_150_859_195,
            2_150_859_236,
            2_150_859_237,
            2_150_859_238,
            2_150_859_239,
            2_150_859_240,
            2_150_859_241,
            2_150_859_242,
        ];
        for n in known {
            let code = FaultCode::from_u32(n);
            assert!(!matches!(code, FaultCode::Unknown(_)), "{n}");
            assert_eq!(code.as_u32(), n);
        }
        assert_eq!(FaultCode::from_u32(42), FaultCode::Unknown(42));
        assert_eq!(FaultCode::Unknown(5), FaultCode::AccessDenied);
        assert_eq!(
            FaultCode::OperationTimeout.to_string(),
            "2150858793 (0x80338029)"
        );
        let quota: Vec<u32> = known
            .iter()
            .copied()
            .filter(|n| FaultCode::from_u32(*n).is_quota())
            .collect();
        assert_eq!(
            quota,
            [
                2_150_858_815,
                2_150_859_173,
                2_150_859_174,
                2_150_859_175,
                2_150_859_176,
                2_150_859_179,
                2_150_859_236,
                2_150_859_237,
                2_150_859_238,
                2_150_859_239,
                2_150_859_240,
                2_150_859_241,
                2_150_859_242
            ]
        );
        assert!(FaultCode::AccessDeniedHresult.is_access_denied());
        assert!(FaultCode::InvalidResourceUri.is_invalid_resource_uri());
        assert!(!FaultCode::InvalidParameter.is_shell_not_found());
        assert_eq!(
            FaultSubcode::from_text(" wsman:TimedOut "),
            FaultSubcode::TimedOut
        );
        assert_eq!(FaultSubcode::TimedOut.as_text(), "w:TimedOut");
        assert_eq!(
            FaultSubcode::InvalidMessageInformationHeader.local_name(),
            "InvalidMessageInformationHeader"
        );
    }
}
