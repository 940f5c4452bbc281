//! Typed PSRP message bodies (MS-PSRP 2.2.2) and the complex types they carry
//! (MS-PSRP 2.2.3).
//!
//! Every message type has a struct with `from_clixml(&Value)` and `decode(&Message)`;
//! [`PsrpMessage::decode`] picks the right one. The messages a client sends and the ones
//! a simulated Windows server sends also have `to_clixml()` and `encode(..)`, which
//! produce the shapes recorded from Windows and pypsrp (wire-facts 4.4). Server-sent
//! messages are prefixed with a UTF-8 BOM as Windows does.
//!
//! Structs that wrap a whole record (error, informational, information, output) keep the
//! original [`Value`] too, so callers can render anything the typed fields leave out.

use uuid::Uuid;

use super::clixml::{self, ClixmlError, DateTime, DictEntry, Property, PsObject, Value, Version};
use super::message::{Destination, Message, MessageType, UTF8_BOM};

/// Why a message body could not be turned into its typed form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message has another type than the struct decodes.
    #[error("expected a {expected:?} message, got {got:?}")]
    WrongType {
        /// The type the decoder handles.
        expected: MessageType,
        /// The message's type.
        got: MessageType,
    },
    /// The body is not valid CLIXML.
    #[error(transparent)]
    Clixml(#[from] ClixmlError),
    /// The body is not the object the message type calls for.
    #[error("{message}: body is not an object")]
    NotAnObject {
        /// The message or type being decoded.
        message: &'static str,
    },
    /// A required property is absent.
    #[error("{message}: missing property {property}")]
    MissingProperty {
        /// The message or type being decoded.
        message: &'static str,
        /// The property.
        property: &'static str,
    },
    /// A property has the wrong CLIXML type.
    #[error("{message}: property {property} is a <{found}>, not the expected type")]
    InvalidProperty {
        /// The message or type being decoded.
        message: &'static str,
        /// The property.
        property: &'static str,
        /// The CLIXML tag found.
        found: &'static str,
    },
    /// An enum or state value this implementation does not know.
    #[error("{enumeration} value {value} is not defined")]
    UnknownEnumValue {
        /// The enum's name.
        enumeration: &'static str,
        /// The value found.
        value: i32,
    },
}

/// A PSRP protocol version (`protocolversion` in SESSION_CAPABILITY; wire-facts 4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Major part (2).
    pub major: u32,
    /// Minor part.
    pub minor: u32,
}

impl ProtocolVersion {
    /// 2.1: Windows 7 / PowerShell 2.0.
    pub const V2_1: Self = Self { major: 2, minor: 1 };
    /// 2.2: Windows 8 / PowerShell 3.0 (adds the per-stream merge settings).
    pub const V2_2: Self = Self { major: 2, minor: 2 };
    /// 2.3: Windows 10 / PowerShell 5.1 (adds the information stream).
    pub const V2_3: Self = Self { major: 2, minor: 3 };

    /// Reads a `Version` value's major and minor parts.
    pub fn from_version(v: &Version) -> Option<Self> {
        let (major, minor) = v.major_minor()?;
        Some(Self { major, minor })
    }

    /// As a CLIXML `Version`.
    pub fn to_version(self) -> Version {
        Version::new(self.major, self.minor, None, None)
    }
}

macro_rules! ps_enum {
    ($(#[$doc:meta])* $name:ident = $type_name:literal {
        $($(#[$vdoc:meta])* $variant:ident = $value:literal => $text:literal,)*
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// The .NET type name written in the enum's `TN`.
            pub const TYPE_NAME: &'static str = $type_name;

            /// The numeric value.
            pub fn value(self) -> i32 {
                match self {
                    $(Self::$variant => $value,)*
                }
            }

            /// The variant for a numeric value.
            pub fn from_value(value: i32) -> Option<Self> {
                match value {
                    $($value => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The name written as the enum's `ToString`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            /// The CLIXML enum object.
            pub fn to_clixml(self) -> Value {
                Value::enumeration(Self::TYPE_NAME, self.name(), self.value())
            }

            /// The variant an enum object or `I32` stands for.
            pub fn from_clixml(value: &Value) -> Option<Self> {
                value.as_i32().and_then(Self::from_value)
            }

            // Not every enum is read from a message property.
            #[allow(dead_code)]
            fn read(value: &Value, message: &'static str, property: &'static str) -> Result<Self, DecodeError> {
                let v = value.as_i32().ok_or(DecodeError::InvalidProperty {
                    message,
                    property,
                    found: value.tag(),
                })?;
                Self::from_value(v).ok_or(DecodeError::UnknownEnumValue {
                    enumeration: stringify!($name),
                    value: v,
                })
            }
        }
    };
}

ps_enum! {
    /// RunspacePool state (MS-PSRP 2.2.3.4, values as .NET `RunspacePoolState` sends them;
    /// wire-facts 4.3).
    RunspacePoolState = "System.Management.Automation.Runspaces.RunspacePoolState" {
        /// Not opened yet.
        BeforeOpen = 0 => "BeforeOpen",
        /// Opening.
        Opening = 1 => "Opening",
        /// Open and usable.
        Opened = 2 => "Opened",
        /// Closed.
        Closed = 3 => "Closed",
        /// Closing.
        Closing = 4 => "Closing",
        /// Failed (for example a module failed to load while opening).
        Broken = 5 => "Broken",
        /// Disconnecting.
        Disconnecting = 6 => "Disconnecting",
        /// Disconnected.
        Disconnected = 7 => "Disconnected",
        /// Connecting.
        Connecting = 8 => "Connecting",
    }
}

ps_enum! {
    /// Pipeline state (MS-PSRP 2.2.3.5).
    PsInvocationState = "System.Management.Automation.PSInvocationState" {
        /// Not started.
        NotStarted = 0 => "NotStarted",
        /// Running.
        Running = 1 => "Running",
        /// Stopping.
        Stopping = 2 => "Stopping",
        /// Stopped by a stop request.
        Stopped = 3 => "Stopped",
        /// Finished normally.
        Completed = 4 => "Completed",
        /// Finished with a terminating error.
        Failed = 5 => "Failed",
        /// Disconnected.
        Disconnected = 6 => "Disconnected",
    }
}

ps_enum! {
    /// Thread options (MS-PSRP 2.2.3.6).
    PsThreadOptions = "System.Management.Automation.Runspaces.PSThreadOptions" {
        /// Default.
        Default = 0 => "Default",
        /// A new thread per invocation.
        UseNewThread = 1 => "UseNewThread",
        /// Reuse one thread.
        ReuseThread = 2 => "ReuseThread",
        /// The current thread.
        UseCurrentThread = 3 => "UseCurrentThread",
    }
}

ps_enum! {
    /// Apartment state (MS-PSRP 2.2.3.7). `Unknown` is written `UNKNOWN`, as pypsrp sends
    /// it and Windows accepts it (`R:test_psrp_open_runspace`).
    ApartmentState = "System.Management.Automation.Runspaces.ApartmentState" {
        /// Single-threaded apartment.
        Sta = 0 => "STA",
        /// Multi-threaded apartment.
        Mta = 1 => "MTA",
        /// Not set.
        Unknown = 2 => "UNKNOWN",
    }
}

/// Where a command's stream is merged (MS-PSRP 2.2.3.31). A newtype over the .NET
/// value because `MergePreviousResults` combines Output and Error (3), which the .NET
/// numbering also calls Warning; Windows reads only the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipelineResultTypes(pub i32);

impl PipelineResultTypes {
    /// .NET type name.
    pub const TYPE_NAME: &'static str =
        "System.Management.Automation.Runspaces.PipelineResultTypes";
    /// No merge.
    pub const NONE: Self = Self(0);
    /// Output stream.
    pub const OUTPUT: Self = Self(1);
    /// Error stream.
    pub const ERROR: Self = Self(2);
    /// Output and Error: the only combination `MergePreviousResults` takes.
    pub const OUTPUT_AND_ERROR: Self = Self(3);
    /// Warning stream (same number as [`Self::OUTPUT_AND_ERROR`] in .NET's numbering).
    pub const WARNING: Self = Self(3);
    /// Verbose stream.
    pub const VERBOSE: Self = Self(4);
    /// Debug stream.
    pub const DEBUG: Self = Self(5);
    /// Information stream.
    pub const INFORMATION: Self = Self(6);
    /// All streams.
    pub const ALL: Self = Self(7);
    /// Discard.
    pub const NULL: Self = Self(8);

    /// The `ToString` written for the value; 3 is written `Output, Error`, as pypsrp
    /// sends it for MergePreviousResults (`R:test_psrp_merge_commands`).
    pub fn name(self) -> String {
        match self.0 {
            0 => "None",
            1 => "Output",
            2 => "Error",
            3 => "Output, Error",
            4 => "Verbose",
            5 => "Debug",
            6 => "Information",
            7 => "All",
            8 => "Null",
            v => return v.to_string(),
        }
        .to_owned()
    }

    /// The CLIXML enum object.
    pub fn to_clixml(self) -> Value {
        Value::enumeration(Self::TYPE_NAME, &self.name(), self.0)
    }

    fn read(
        value: &Value,
        message: &'static str,
        property: &'static str,
    ) -> Result<Self, DecodeError> {
        value
            .as_i32()
            .map(Self)
            .ok_or_else(|| wrong(value, message, property))
    }
}

ps_enum! {
    /// Progress record type (.NET `ProgressRecordType`, the `Type` of PROGRESS_RECORD).
    ProgressRecordType = "System.Management.Automation.ProgressRecordType" {
        /// Still processing.
        Processing = 0 => "Processing",
        /// Completed.
        Completed = 1 => "Completed",
    }
}

ps_enum! {
    /// Where a command came from (`CommandOrigin`, part of invocation info).
    CommandOrigin = "System.Management.Automation.CommandOrigin" {
        /// Invoked by the runspace.
        Runspace = 0 => "Runspace",
        /// Invoked internally.
        Internal = 1 => "Internal",
    }
}

/// Remote stream options, a flags enum (MS-PSRP 2.2.3.8): which records get invocation
/// info. 15 (`AddInvocationInfo`) is what every recorded client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteStreamOptions(pub i32);

impl RemoteStreamOptions {
    /// .NET type name.
    pub const TYPE_NAME: &'static str =
        "System.Management.Automation.Runspaces.RemoteStreamOptions";
    /// All four flags (15).
    pub const ADD_INVOCATION_INFO: Self = Self(15);

    /// The `ToString` written for the flags (.NET names joined by ", ").
    pub fn name(self) -> String {
        const FLAGS: [(&str, i32); 4] = [
            ("AddInvocationInfoToErrorRecord", 1),
            ("AddInvocationInfoToWarningRecord", 2),
            ("AddInvocationInfoToDebugRecord", 4),
            ("AddInvocationInfoToVerboseRecord", 8),
        ];
        match self.0 {
            // pypsrp writes an empty ToString for 0 [R:test_psrp_stream_no_output_invocation];
            // Windows reads only the number.
            0 => String::new(),
            15 => "AddInvocationInfo".to_owned(),
            v => FLAGS
                .iter()
                .filter(|(_, f)| v & f == *f)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The CLIXML enum object.
    pub fn to_clixml(self) -> Value {
        Value::enumeration(Self::TYPE_NAME, &self.name(), self.0)
    }
}

/// `ErrorCategory` names by value (.NET `System.Management.Automation.ErrorCategory`).
pub const ERROR_CATEGORY_NAMES: [&str; 32] = [
    "NotSpecified",
    "OpenError",
    "CloseError",
    "DeviceError",
    "DeadlockDetected",
    "InvalidArgument",
    "InvalidData",
    "InvalidOperation",
    "InvalidResult",
    "InvalidType",
    "MetadataError",
    "NotImplemented",
    "NotInstalled",
    "ObjectNotFound",
    "OperationStopped",
    "OperationTimeout",
    "SyntaxError",
    "ParserError",
    "PermissionDenied",
    "ResourceBusy",
    "ResourceExists",
    "ResourceUnavailable",
    "ReadError",
    "WriteError",
    "FromStdErr",
    "SecurityError",
    "ProtocolError",
    "ConnectionError",
    "AuthenticationError",
    "LimitsExceeded",
    "QuotaExceeded",
    "NotEnabled",
];

// ===== Top-level dispatch =====

/// Any PSRP message, decoded into its typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsrpMessage {
    /// SESSION_CAPABILITY.
    SessionCapability(SessionCapability),
    /// INIT_RUNSPACEPOOL.
    InitRunspacePool(InitRunspacePool),
    /// PUBLIC_KEY.
    PublicKey(PublicKey),
    /// ENCRYPTED_SESSION_KEY.
    EncryptedSessionKey(EncryptedSessionKey),
    /// PUBLIC_KEY_REQUEST.
    PublicKeyRequest(PublicKeyRequest),
    /// CONNECT_RUNSPACEPOOL.
    ConnectRunspacePool(ConnectRunspacePool),
    /// SET_MAX_RUNSPACES.
    SetMaxRunspaces(SetMaxRunspaces),
    /// SET_MIN_RUNSPACES.
    SetMinRunspaces(SetMinRunspaces),
    /// RUNSPACE_AVAILABILITY.
    RunspaceAvailability(RunspaceAvailability),
    /// RUNSPACEPOOL_STATE.
    RunspacePoolState(RunspacePoolStateMessage),
    /// CREATE_PIPELINE.
    CreatePipeline(CreatePipeline),
    /// GET_AVAILABLE_RUNSPACES.
    GetAvailableRunspaces(GetAvailableRunspaces),
    /// USER_EVENT.
    UserEvent(UserEvent),
    /// APPLICATION_PRIVATE_DATA.
    ApplicationPrivateData(ApplicationPrivateData),
    /// GET_COMMAND_METADATA.
    GetCommandMetadata(GetCommandMetadata),
    /// RUNSPACEPOOL_INIT_DATA.
    RunspacePoolInitData(RunspacePoolInitData),
    /// RESET_RUNSPACE_STATE.
    ResetRunspaceState(ResetRunspaceState),
    /// RUNSPACEPOOL_HOST_CALL.
    RunspacePoolHostCall(HostCall),
    /// RUNSPACEPOOL_HOST_RESPONSE.
    RunspacePoolHostResponse(HostResponse),
    /// PIPELINE_INPUT.
    PipelineInput(PipelineInput),
    /// END_OF_PIPELINE_INPUT.
    EndOfPipelineInput,
    /// PIPELINE_OUTPUT.
    PipelineOutput(PipelineOutput),
    /// ERROR_RECORD.
    ErrorRecord(ErrorRecord),
    /// PIPELINE_STATE.
    PipelineState(PipelineStateMessage),
    /// DEBUG_RECORD.
    DebugRecord(InformationalRecord),
    /// VERBOSE_RECORD.
    VerboseRecord(InformationalRecord),
    /// WARNING_RECORD.
    WarningRecord(InformationalRecord),
    /// PROGRESS_RECORD.
    ProgressRecord(ProgressRecord),
    /// INFORMATION_RECORD.
    InformationRecord(InformationRecord),
    /// PIPELINE_HOST_CALL.
    PipelineHostCall(HostCall),
    /// PIPELINE_HOST_RESPONSE.
    PipelineHostResponse(HostResponse),
    /// A message type MS-PSRP does not define; the body is kept undecoded.
    Unknown {
        /// The wire value of the type.
        message_type: u32,
        /// The raw data.
        data: Vec<u8>,
    },
}

impl PsrpMessage {
    /// Decodes a message's body according to its type.
    pub fn decode(message: &Message) -> Result<Self, DecodeError> {
        use MessageType as T;
        if let T::Unknown(v) = message.message_type {
            return Ok(Self::Unknown {
                message_type: v,
                data: message.data.clone(),
            });
        }
        if message.message_type == T::EndOfPipelineInput {
            return Ok(Self::EndOfPipelineInput);
        }
        let value = body(message)?;
        let v = &value;
        Ok(match message.message_type {
            T::SessionCapability => Self::SessionCapability(SessionCapability::from_clixml(v)?),
            T::InitRunspacePool => Self::InitRunspacePool(InitRunspacePool::from_clixml(v)?),
            T::PublicKey => Self::PublicKey(PublicKey::from_clixml(v)?),
            T::EncryptedSessionKey => {
                Self::EncryptedSessionKey(EncryptedSessionKey::from_clixml(v)?)
            }
            T::PublicKeyRequest => Self::PublicKeyRequest(PublicKeyRequest::from_clixml(v)?),
            T::ConnectRunspacePool => {
                Self::ConnectRunspacePool(ConnectRunspacePool::from_clixml(v)?)
            }
            T::SetMaxRunspaces => Self::SetMaxRunspaces(SetMaxRunspaces::from_clixml(v)?),
            T::SetMinRunspaces => Self::SetMinRunspaces(SetMinRunspaces::from_clixml(v)?),
            T::RunspaceAvailability => {
                Self::RunspaceAvailability(RunspaceAvailability::from_clixml(v)?)
            }
            T::RunspacePoolState => {
                Self::RunspacePoolState(RunspacePoolStateMessage::from_clixml(v)?)
            }
            T::CreatePipeline => Self::CreatePipeline(CreatePipeline::from_clixml(v)?),
            T::GetAvailableRunspaces => {
                Self::GetAvailableRunspaces(GetAvailableRunspaces::from_clixml(v)?)
            }
            T::UserEvent => Self::UserEvent(UserEvent::from_clixml(v)?),
            T::ApplicationPrivateData => {
                Self::ApplicationPrivateData(ApplicationPrivateData::from_clixml(v)?)
            }
            T::GetCommandMetadata => Self::GetCommandMetadata(GetCommandMetadata::from_clixml(v)?),
            T::RunspacePoolInitData => {
                Self::RunspacePoolInitData(RunspacePoolInitData::from_clixml(v)?)
            }
            T::ResetRunspaceState => Self::ResetRunspaceState(ResetRunspaceState::from_clixml(v)?),
            T::RunspacePoolHostCall => Self::RunspacePoolHostCall(HostCall::from_clixml(v)?),
            T::RunspacePoolHostResponse => {
                Self::RunspacePoolHostResponse(HostResponse::from_clixml(v)?)
            }
            T::PipelineInput => Self::PipelineInput(PipelineInput { value }),
            T::PipelineOutput => Self::PipelineOutput(PipelineOutput { value }),
            T::ErrorRecord => Self::ErrorRecord(ErrorRecord::from_clixml(v)?),
            T::PipelineState => Self::PipelineState(PipelineStateMessage::from_clixml(v)?),
            T::DebugRecord => Self::DebugRecord(InformationalRecord::from_clixml(v)?),
            T::VerboseRecord => Self::VerboseRecord(InformationalRecord::from_clixml(v)?),
            T::WarningRecord => Self::WarningRecord(InformationalRecord::from_clixml(v)?),
            T::ProgressRecord => Self::ProgressRecord(ProgressRecord::from_clixml(v)?),
            T::InformationRecord => Self::InformationRecord(InformationRecord::from_clixml(v)?),
            T::PipelineHostCall => Self::PipelineHostCall(HostCall::from_clixml(v)?),
            T::PipelineHostResponse => Self::PipelineHostResponse(HostResponse::from_clixml(v)?),
            T::EndOfPipelineInput | T::Unknown(_) => return Ok(Self::EndOfPipelineInput),
        })
    }

    /// The message type this variant stands for.
    pub fn message_type(&self) -> MessageType {
        use MessageType as T;
        match self {
            Self::SessionCapability(_) => T::SessionCapability,
            Self::InitRunspacePool(_) => T::InitRunspacePool,
            Self::PublicKey(_) => T::PublicKey,
            Self::EncryptedSessionKey(_) => T::EncryptedSessionKey,
            Self::PublicKeyRequest(_) => T::PublicKeyRequest,
            Self::ConnectRunspacePool(_) => T::ConnectRunspacePool,
            Self::SetMaxRunspaces(_) => T::SetMaxRunspaces,
            Self::SetMinRunspaces(_) => T::SetMinRunspaces,
            Self::RunspaceAvailability(_) => T::RunspaceAvailability,
            Self::RunspacePoolState(_) => T::RunspacePoolState,
            Self::CreatePipeline(_) => T::CreatePipeline,
            Self::GetAvailableRunspaces(_) => T::GetAvailableRunspaces,
            Self::UserEvent(_) => T::UserEvent,
            Self::ApplicationPrivateData(_) => T::ApplicationPrivateData,
            Self::GetCommandMetadata(_) => T::GetCommandMetadata,
            Self::RunspacePoolInitData(_) => T::RunspacePoolInitData,
            Self::ResetRunspaceState(_) => T::ResetRunspaceState,
            Self::RunspacePoolHostCall(_) => T::RunspacePoolHostCall,
            Self::RunspacePoolHostResponse(_) => T::RunspacePoolHostResponse,
            Self::PipelineInput(_) => T::PipelineInput,
            Self::EndOfPipelineInput => T::EndOfPipelineInput,
            Self::PipelineOutput(_) => T::PipelineOutput,
            Self::ErrorRecord(_) => T::ErrorRecord,
            Self::PipelineState(_) => T::PipelineState,
            Self::DebugRecord(_) => T::DebugRecord,
            Self::VerboseRecord(_) => T::VerboseRecord,
            Self::WarningRecord(_) => T::WarningRecord,
            Self::ProgressRecord(_) => T::ProgressRecord,
            Self::InformationRecord(_) => T::InformationRecord,
            Self::PipelineHostCall(_) => T::PipelineHostCall,
            Self::PipelineHostResponse(_) => T::PipelineHostResponse,
            Self::Unknown { message_type, .. } => T::Unknown(*message_type),
        }
    }
}

/// Reads a message's CLIXML body (BOM-tolerant); an empty body reads as `Nil`.
pub fn body(message: &Message) -> Result<Value, DecodeError> {
    let data = message.clixml();
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Nil);
    }
    Ok(clixml::from_bytes(data)?)
}

/// Builds a message from a CLIXML body. Messages to the client get the UTF-8 BOM Windows
/// writes (`R:test_psrp_open_runspace`); messages to the server do not (as pypsrp).
pub fn build_message(
    message_type: MessageType,
    destination: Destination,
    rpid: Uuid,
    pid: Uuid,
    value: &Value,
) -> Message {
    let xml = clixml::to_bytes(value);
    let mut data = Vec::with_capacity(xml.len() + 3);
    if destination == Destination::Client {
        data.extend_from_slice(UTF8_BOM);
    }
    data.extend_from_slice(&xml);
    Message::new(destination, message_type, rpid, pid, data)
}

fn check_type(message: &Message, expected: MessageType) -> Result<(), DecodeError> {
    if message.message_type == expected {
        Ok(())
    } else {
        Err(DecodeError::WrongType {
            expected,
            got: message.message_type,
        })
    }
}

/// `decode` for a struct with `from_clixml`, checking the message type.
macro_rules! decode_fn {
    ($($t:ty => $($mt:ident)|+;)*) => {
        $(impl $t {
            /// Decodes a message of this type.
            pub fn decode(message: &Message) -> Result<Self, DecodeError> {
                let types = [$(MessageType::$mt),+];
                if !types.contains(&message.message_type) {
                    check_type(message, types[0])?;
                }
                Self::from_clixml(&body(message)?)
            }
        })*
    };
}

decode_fn! {
    SessionCapability => SessionCapability;
    InitRunspacePool => InitRunspacePool;
    PublicKey => PublicKey;
    EncryptedSessionKey => EncryptedSessionKey;
    PublicKeyRequest => PublicKeyRequest;
    ConnectRunspacePool => ConnectRunspacePool;
    SetMaxRunspaces => SetMaxRunspaces;
    SetMinRunspaces => SetMinRunspaces;
    RunspaceAvailability => RunspaceAvailability;
    RunspacePoolStateMessage => RunspacePoolState;
    CreatePipeline => CreatePipeline;
    GetAvailableRunspaces => GetAvailableRunspaces;
    UserEvent => UserEvent;
    ApplicationPrivateData => ApplicationPrivateData;
    GetCommandMetadata => GetCommandMetadata;
    RunspacePoolInitData => RunspacePoolInitData;
    ResetRunspaceState => ResetRunspaceState;
    HostCall => RunspacePoolHostCall | PipelineHostCall;
    HostResponse => RunspacePoolHostResponse | PipelineHostResponse;
    PipelineInput => PipelineInput;
    PipelineOutput => PipelineOutput;
    ErrorRecord => ErrorRecord;
    PipelineStateMessage => PipelineState;
    InformationalRecord => DebugRecord | VerboseRecord | WarningRecord;
    ProgressRecord => ProgressRecord;
    InformationRecord => InformationRecord;
}

// ===== Reading helpers =====

fn object<'a>(value: &'a Value, message: &'static str) -> Result<&'a PsObject, DecodeError> {
    value
        .as_object()
        .ok_or(DecodeError::NotAnObject { message })
}

fn prop<'a>(
    o: &'a PsObject,
    message: &'static str,
    property: &'static str,
) -> Result<&'a Value, DecodeError> {
    o.property(property)
        .ok_or(DecodeError::MissingProperty { message, property })
}

/// A property that is present and not `Nil`.
fn opt<'a>(o: &'a PsObject, property: &str) -> Option<&'a Value> {
    o.property(property).filter(|v| !v.is_nil())
}

fn wrong(value: &Value, message: &'static str, property: &'static str) -> DecodeError {
    DecodeError::InvalidProperty {
        message,
        property,
        found: value.tag(),
    }
}

fn req_i32(
    o: &PsObject,
    message: &'static str,
    property: &'static str,
) -> Result<i32, DecodeError> {
    let v = prop(o, message, property)?;
    v.as_i32().ok_or_else(|| wrong(v, message, property))
}

fn req_i64(
    o: &PsObject,
    message: &'static str,
    property: &'static str,
) -> Result<i64, DecodeError> {
    let v = prop(o, message, property)?;
    v.as_i64().ok_or_else(|| wrong(v, message, property))
}

fn req_bool(
    o: &PsObject,
    message: &'static str,
    property: &'static str,
) -> Result<bool, DecodeError> {
    let v = prop(o, message, property)?;
    v.as_bool().ok_or_else(|| wrong(v, message, property))
}

fn req_string(
    o: &PsObject,
    message: &'static str,
    property: &'static str,
) -> Result<String, DecodeError> {
    let v = prop(o, message, property)?;
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| wrong(v, message, property))
}

fn req_version(
    o: &PsObject,
    message: &'static str,
    property: &'static str,
) -> Result<Version, DecodeError> {
    let v = prop(o, message, property)?;
    v.as_version()
        .cloned()
        .ok_or_else(|| wrong(v, message, property))
}

/// A string property that is present and a string; absent, `Nil` or another type give
/// `None`.
fn opt_string(o: &PsObject, property: &str) -> Option<String> {
    opt(o, property).and_then(Value::as_str).map(str::to_owned)
}

fn opt_i32(o: &PsObject, property: &str) -> Option<i32> {
    opt(o, property).and_then(Value::as_i32)
}

fn opt_i64(o: &PsObject, property: &str) -> Option<i64> {
    opt(o, property).and_then(Value::as_i64)
}

fn opt_bool(o: &PsObject, property: &str) -> Option<bool> {
    opt(o, property).and_then(Value::as_bool)
}

/// Strings of a list property (non-string items are rendered with `display_text`).
fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_list)
        .map(|items| {
            items
                .iter()
                .map(|i| i.display_text().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn nil_or<T>(value: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    value.map_or(Value::Nil, f)
}

fn ms(properties: Vec<Property>) -> Value {
    Value::extended(properties)
}

fn p(name: &str, value: impl Into<Value>) -> Property {
    Property::new(name, value)
}

/// Type names of `System.Collections.Generic.List<PSObject>`, used for `Cmds`,
/// `ExtraCmds` and `Args` (MS-PSRP 2.2.3.11, 2.2.3.12).
pub const PSOBJECT_LIST_TYPE: &str = "System.Collections.Generic.List`1[[System.Management.Automation.PSObject, System.Management.Automation, Version=1.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]";

/// Type names of a `PSPrimitiveDictionary` (MS-PSRP 2.2.3.18).
pub const PRIMITIVE_DICTIONARY_TYPES: [&str; 3] = [
    "System.Management.Automation.PSPrimitiveDictionary",
    "System.Collections.Hashtable",
    "System.Object",
];

/// A `PSPrimitiveDictionary` (used for ApplicationArguments and ApplicationPrivateData).
pub fn primitive_dictionary(entries: Vec<(String, Value)>) -> Value {
    Value::dictionary(
        &PRIMITIVE_DICTIONARY_TYPES,
        entries
            .into_iter()
            .map(|(k, v)| DictEntry {
                key: Value::String(k),
                value: v,
            })
            .collect(),
    )
}

// ===== Session and pool messages =====

/// SESSION_CAPABILITY (MS-PSRP 2.2.2.1), sent by both sides first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCapability {
    /// `protocolversion` (2.3 for Windows PowerShell 5.1).
    pub protocol_version: Version,
    /// `PSVersion` (2.0 on the wire for every version since PowerShell 2).
    pub ps_version: Version,
    /// `SerializationVersion` (1.1.0.1).
    pub serialization_version: Version,
    /// `TimeZone`: the client's serialized time zone, optional.
    pub time_zone: Option<Vec<u8>>,
}

impl Default for SessionCapability {
    /// What pypsrp and Windows send: 2.3 / 2.0 / 1.1.0.1 (`R:test_psrp_open_runspace`).
    fn default() -> Self {
        Self {
            protocol_version: ProtocolVersion::V2_3.to_version(),
            ps_version: Version::new(2, 0, None, None),
            serialization_version: Version::new(1, 1, Some(0), Some(1)),
            time_zone: None,
        }
    }
}

impl SessionCapability {
    const NAME: &'static str = "SESSION_CAPABILITY";

    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let o = object(value, Self::NAME)?;
        Ok(Self {
            protocol_version: req_version(o, Self::NAME, "protocolversion")?,
            ps_version: req_version(o, Self::NAME, "PSVersion")?,
            serialization_version: req_version(o, Self::NAME, "SerializationVersion")?,
            time_zone: match opt(o, "TimeZone") {
                Some(Value::Bytes(b)) => Some(b.clone()),
                _ => None,
            },
        })
    }

    /// The body.
    pub fn to_clixml(&self) -> Value {
        let mut props = vec![
            p(
                "protocolversion",
                Value::Version(self.protocol_version.clone()),
            ),
            p("PSVersion", Value::Version(self.ps_version.clone())),
            p(
                "SerializationVersion",
                Value::Version(self.serialization_version.clone()),
            ),
        ];
        if let Some(tz) = &self.time_zone {
            props.push(p("TimeZone", Value::Bytes(tz.clone())));
        }
        ms(props)
    }

    /// The message, to `destination` (the server from a client, the client from a
    /// server). The server's copy has a nil RPID on Windows (`R:test_psrp_open_runspace`).
    pub fn encode(&self, destination: Destination, rpid: Uuid) -> Message {
        build_message(
            MessageType::SessionCapability,
            destination,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }

    /// The protocol version as numbers.
    pub fn protocol(&self) -> Option<ProtocolVersion> {
        ProtocolVersion::from_version(&self.protocol_version)
    }
}

/// HostInfo (MS-PSRP 2.2.3.14): whether the client offers a host, and its default data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// `_isHostNull`.
    pub is_host_null: bool,
    /// `_isHostUINull`.
    pub is_host_ui_null: bool,
    /// `_isHostRawUINull`.
    pub is_host_raw_ui_null: bool,
    /// `_useRunspaceHost`.
    pub use_runspace_host: bool,
    /// `_hostDefaultData`: the raw-UI defaults object (MS-PSRP 2.2.3.13), kept as CLIXML.
    pub host_default_data: Option<Value>,
}

impl Default for HostInfo {
    /// No host: all four flags true, as every recorded client without a host sends.
    fn default() -> Self {
        Self {
            is_host_null: true,
            is_host_ui_null: true,
            is_host_raw_ui_null: true,
            use_runspace_host: true,
            host_default_data: None,
        }
    }
}

impl HostInfo {
    const NAME: &'static str = "HostInfo";

    /// Reads a HostInfo object.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let o = object(value, Self::NAME)?;
        Ok(Self {
            is_host_null: req_bool(o, Self::NAME, "_isHostNull")?,
            is_host_ui_null: req_bool(o, Self::NAME, "_isHostUINull")?,
            is_host_raw_ui_null: req_bool(o, Self::NAME, "_isHostRawUINull")?,
            use_runspace_host: req_bool(o, Self::NAME, "_useRunspaceHost")?,
            host_default_data: opt(o, "_hostDefaultData").cloned(),
        })
    }

    /// The HostInfo object.
    pub fn to_clixml(&self) -> Value {
        let mut props = Vec::with_capacity(5);
        if let Some(data) = &self.host_default_data {
            props.push(p("_hostDefaultData", data.clone()));
        }
        props.extend([
            p("_isHostNull", self.is_host_null),
            p("_isHostUINull", self.is_host_ui_null),
            p("_isHostRawUINull", self.is_host_raw_ui_null),
            p("_useRunspaceHost", self.use_runspace_host),
        ]);
        ms(props)
    }
}

/// INIT_RUNSPACEPOOL (MS-PSRP 2.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitRunspacePool {
    /// `MinRunspaces`.
    pub min_runspaces: i32,
    /// `MaxRunspaces`.
    pub max_runspaces: i32,
    /// `PSThreadOptions`.
    pub thread_options: PsThreadOptions,
    /// `ApartmentState`.
    pub apartment_state: ApartmentState,
    /// `HostInfo`.
    pub host_info: HostInfo,
    /// `ApplicationArguments`: a PSPrimitiveDictionary (see [`primitive_dictionary`]) or
    /// `None` for `Nil`.
    pub application_arguments: Option<Value>,
}

impl Default for InitRunspacePool {
    /// One runspace, default options, no host, no arguments (wire-facts 4.4 step 2).
    fn default() -> Self {
        Self {
            min_runspaces: 1,
            max_runspaces: 1,
            thread_options: PsThreadOptions::Default,
            apartment_state: ApartmentState::Unknown,
            host_info: HostInfo::default(),
            application_arguments: None,
        }
    }
}

impl InitRunspacePool {
    const NAME: &'static str = "INIT_RUNSPACEPOOL";

    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = Self::NAME;
        let o = object(value, n)?;
        Ok(Self {
            min_runspaces: req_i32(o, n, "MinRunspaces")?,
            max_runspaces: req_i32(o, n, "MaxRunspaces")?,
            thread_options: PsThreadOptions::read(
                prop(o, n, "PSThreadOptions")?,
                n,
                "PSThreadOptions",
            )?,
            apartment_state: ApartmentState::read(
                prop(o, n, "ApartmentState")?,
                n,
                "ApartmentState",
            )?,
            host_info: HostInfo::from_clixml(prop(o, n, "HostInfo")?)?,
            application_arguments: opt(o, "ApplicationArguments").cloned(),
        })
    }

    /// The body.
    pub fn to_clixml(&self) -> Value {
        ms(vec![
            p("MinRunspaces", self.min_runspaces),
            p("MaxRunspaces", self.max_runspaces),
            p("PSThreadOptions", self.thread_options.to_clixml()),
            p("ApartmentState", self.apartment_state.to_clixml()),
            p("HostInfo", self.host_info.to_clixml()),
            p(
                "ApplicationArguments",
                self.application_arguments.clone().unwrap_or(Value::Nil),
            ),
        ])
    }

    /// The message to the server.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_server(
            MessageType::InitRunspacePool,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

fn to_server(message_type: MessageType, rpid: Uuid, pid: Uuid, value: &Value) -> Message {
    build_message(message_type, Destination::Server, rpid, pid, value)
}

fn to_client(message_type: MessageType, rpid: Uuid, pid: Uuid, value: &Value) -> Message {
    build_message(message_type, Destination::Client, rpid, pid, value)
}

/// PUBLIC_KEY (MS-PSRP 2.2.2.3): the client's RSA public key, base64 of a
/// PUBLICKEYBLOB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// `PublicKey` (base64 text).
    pub public_key: String,
}

impl PublicKey {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let o = object(value, "PUBLIC_KEY")?;
        Ok(Self {
            public_key: req_string(o, "PUBLIC_KEY", "PublicKey")?,
        })
    }

    /// The body.
    pub fn to_clixml(&self) -> Value {
        ms(vec![p("PublicKey", self.public_key.as_str())])
    }

    /// The message to the server.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_server(MessageType::PublicKey, rpid, Uuid::nil(), &self.to_clixml())
    }
}

/// ENCRYPTED_SESSION_KEY (MS-PSRP 2.2.2.4): the session key encrypted with the client's
/// public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedSessionKey {
    /// `EncryptedSessionKey` (base64 text).
    pub encrypted_session_key: String,
}

impl EncryptedSessionKey {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let o = object(value, "ENCRYPTED_SESSION_KEY")?;
        Ok(Self {
            encrypted_session_key: req_string(o, "ENCRYPTED_SESSION_KEY", "EncryptedSessionKey")?,
        })
    }

    /// The body.
    pub fn to_clixml(&self) -> Value {
        ms(vec![p(
            "EncryptedSessionKey",
            self.encrypted_session_key.as_str(),
        )])
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_client(
            MessageType::EncryptedSessionKey,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// PUBLIC_KEY_REQUEST (MS-PSRP 2.2.2.5): the server asks for a public key; the body is
/// an empty string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublicKeyRequest;

impl PublicKeyRequest {
    /// Reads the body (anything is accepted; MS-PSRP defines no content).
    pub fn from_clixml(_value: &Value) -> Result<Self, DecodeError> {
        Ok(Self)
    }

    /// The body: `<S />`.
    pub fn to_clixml(&self) -> Value {
        Value::String(String::new())
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_client(
            MessageType::PublicKeyRequest,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// CONNECT_RUNSPACEPOOL (MS-PSRP 2.2.2.29): optional new pool size; an empty string
/// means "unchanged"; pypsrp sends `<S />` (`R:test_psrp_disconnect_runspaces`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectRunspacePool {
    /// `MinRunspaces`.
    pub min_runspaces: Option<i32>,
    /// `MaxRunspaces`.
    pub max_runspaces: Option<i32>,
}

impl ConnectRunspacePool {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        match value.as_object() {
            Some(o) => Ok(Self {
                min_runspaces: opt_i32(o, "MinRunspaces"),
                max_runspaces: opt_i32(o, "MaxRunspaces"),
            }),
            None => Ok(Self::default()),
        }
    }

    /// The body.
    pub fn to_clixml(&self) -> Value {
        if self.min_runspaces.is_none() && self.max_runspaces.is_none() {
            return Value::String(String::new());
        }
        let mut props = Vec::new();
        if let Some(v) = self.min_runspaces {
            props.push(p("MinRunspaces", v));
        }
        if let Some(v) = self.max_runspaces {
            props.push(p("MaxRunspaces", v));
        }
        ms(props)
    }

    /// The message to the server.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_server(
            MessageType::ConnectRunspacePool,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// SET_MAX_RUNSPACES (MS-PSRP 2.2.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetMaxRunspaces {
    /// `MaxRunspaces`.
    pub max_runspaces: i32,
    /// `CI`: call id echoed in RUNSPACE_AVAILABILITY.
    pub call_id: i64,
}

impl SetMaxRunspaces {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "SET_MAX_RUNSPACES";
        let o = object(value, n)?;
        Ok(Self {
            max_runspaces: req_i32(o, n, "MaxRunspaces")?,
            call_id: req_i64(o, n, "CI")?,
        })
    }

    /// The body (`R:test_psrp_set_runspaces`).
    pub fn to_clixml(&self) -> Value {
        ms(vec![
            p("MaxRunspaces", self.max_runspaces),
            p("CI", self.call_id),
        ])
    }

    /// The message to the server.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_server(
            MessageType::SetMaxRunspaces,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// SET_MIN_RUNSPACES (MS-PSRP 2.2.2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetMinRunspaces {
    /// `MinRunspaces`.
    pub min_runspaces: i32,
    /// `CI`: call id echoed in RUNSPACE_AVAILABILITY.
    pub call_id: i64,
}

impl SetMinRunspaces {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "SET_MIN_RUNSPACES";
        let o = object(value, n)?;
        Ok(Self {
            min_runspaces: req_i32(o, n, "MinRunspaces")?,
            call_id: req_i64(o, n, "CI")?,
        })
    }

    /// The body (`R:test_psrp_set_runspaces`).
    pub fn to_clixml(&self) -> Value {
        ms(vec![
            p("MinRunspaces", self.min_runspaces),
            p("CI", self.call_id),
        ])
    }

    /// The message to the server.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_server(
            MessageType::SetMinRunspaces,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// What RUNSPACE_AVAILABILITY reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Reply to SET_MAX/SET_MIN_RUNSPACES or RESET_RUNSPACE_STATE: success or failure.
    Succeeded(bool),
    /// Reply to GET_AVAILABLE_RUNSPACES: the number available.
    Available(i64),
}

/// RUNSPACE_AVAILABILITY (MS-PSRP 2.2.2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunspaceAvailability {
    /// `SetMinMaxRunspacesResponse`.
    pub response: Availability,
    /// `ci`: the call id being answered.
    pub call_id: i64,
}

impl RunspaceAvailability {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "RUNSPACE_AVAILABILITY";
        let o = object(value, n)?;
        let r = prop(o, n, "SetMinMaxRunspacesResponse")?;
        let response = match (r.as_bool(), r.as_i64()) {
            (Some(b), _) => Availability::Succeeded(b),
            (None, Some(count)) => Availability::Available(count),
            _ => return Err(wrong(r, n, "SetMinMaxRunspacesResponse")),
        };
        Ok(Self {
            response,
            call_id: req_i64(o, n, "ci")?,
        })
    }

    /// The body (`R:test_psrp_reset_runspace_state`).
    pub fn to_clixml(&self) -> Value {
        let response = match self.response {
            Availability::Succeeded(b) => Value::Bool(b),
            // Windows answers GET_AVAILABLE_RUNSPACES with an I32 [R:test_psrp_set_runspaces].
            Availability::Available(n) => i32::try_from(n).map_or(Value::I64(n), Value::I32),
        };
        ms(vec![
            p("SetMinMaxRunspacesResponse", response),
            p("ci", self.call_id),
        ])
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_client(
            MessageType::RunspaceAvailability,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// GET_AVAILABLE_RUNSPACES (MS-PSRP 2.2.2.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetAvailableRunspaces {
    /// `ci`.
    pub call_id: i64,
}

impl GetAvailableRunspaces {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let o = object(value, "GET_AVAILABLE_RUNSPACES")?;
        Ok(Self {
            call_id: req_i64(o, "GET_AVAILABLE_RUNSPACES", "ci")?,
        })
    }

    /// The body.
    pub fn to_clixml(&self) -> Value {
        ms(vec![p("ci", self.call_id)])
    }

    /// The message to the server.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_server(
            MessageType::GetAvailableRunspaces,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// RESET_RUNSPACE_STATE (MS-PSRP 2.2.2.31).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetRunspaceState {
    /// `ci`.
    pub call_id: i64,
}

impl ResetRunspaceState {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let o = object(value, "RESET_RUNSPACE_STATE")?;
        Ok(Self {
            call_id: req_i64(o, "RESET_RUNSPACE_STATE", "ci")?,
        })
    }

    /// The body.
    pub fn to_clixml(&self) -> Value {
        ms(vec![p("ci", self.call_id)])
    }

    /// The message to the server.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_server(
            MessageType::ResetRunspaceState,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// RUNSPACEPOOL_INIT_DATA (MS-PSRP 2.2.2.30): the pool size, sent after a connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunspacePoolInitData {
    /// `MinRunspaces`.
    pub min_runspaces: i32,
    /// `MaxRunspaces`.
    pub max_runspaces: i32,
}

impl RunspacePoolInitData {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "RUNSPACEPOOL_INIT_DATA";
        let o = object(value, n)?;
        Ok(Self {
            min_runspaces: req_i32(o, n, "MinRunspaces")?,
            max_runspaces: req_i32(o, n, "MaxRunspaces")?,
        })
    }

    /// The body (`R:test_psrp_disconnect_runspaces`).
    pub fn to_clixml(&self) -> Value {
        ms(vec![
            p("MinRunspaces", self.min_runspaces),
            p("MaxRunspaces", self.max_runspaces),
        ])
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_client(
            MessageType::RunspacePoolInitData,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// RUNSPACEPOOL_STATE (MS-PSRP 2.2.2.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunspacePoolStateMessage {
    /// `RunspaceState`.
    pub state: RunspacePoolState,
    /// `ExceptionAsErrorRecord`, sent with `Broken` (and sometimes `Closed`).
    pub error: Option<ErrorRecord>,
}

impl RunspacePoolStateMessage {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "RUNSPACEPOOL_STATE";
        let o = object(value, n)?;
        Ok(Self {
            state: RunspacePoolState::read(prop(o, n, "RunspaceState")?, n, "RunspaceState")?,
            error: opt(o, "ExceptionAsErrorRecord")
                .map(ErrorRecord::from_clixml)
                .transpose()?,
        })
    }

    /// The body (`<I32 N="RunspaceState">`, then the error record if any).
    pub fn to_clixml(&self) -> Value {
        let mut props = vec![p("RunspaceState", self.state.value())];
        if let Some(e) = &self.error {
            props.push(p("ExceptionAsErrorRecord", e.to_clixml()));
        }
        ms(props)
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_client(
            MessageType::RunspacePoolState,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// USER_EVENT (MS-PSRP 2.2.2.12): an event forwarded from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    /// `PSEventArgs.EventIdentifier`.
    pub event_identifier: Option<i32>,
    /// `PSEventArgs.SourceIdentifier`.
    pub source_identifier: Option<String>,
    /// `PSEventArgs.TimeGenerated`.
    pub time_generated: Option<DateTime>,
    /// `PSEventArgs.ComputerName`.
    pub computer_name: Option<String>,
    /// `PSEventArgs.RunspaceId`.
    pub runspace_id: Option<Uuid>,
    /// `PSEventArgs.MessageData`.
    pub message_data: Option<Value>,
    /// The whole body.
    pub value: Value,
}

impl UserEvent {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let o = object(value, "USER_EVENT")?;
        Ok(Self {
            event_identifier: opt_i32(o, "PSEventArgs.EventIdentifier"),
            source_identifier: opt_string(o, "PSEventArgs.SourceIdentifier"),
            time_generated: opt(o, "PSEventArgs.TimeGenerated")
                .and_then(Value::as_datetime)
                .cloned(),
            computer_name: opt_string(o, "PSEventArgs.ComputerName"),
            runspace_id: match opt(o, "PSEventArgs.RunspaceId").map(Value::primitive) {
                Some(Value::Guid(g)) => Some(*g),
                _ => None,
            },
            message_data: opt(o, "PSEventArgs.MessageData").cloned(),
            value: value.clone(),
        })
    }
}

/// The fields of `$PSVersionTable` the server reports in APPLICATION_PRIVATE_DATA.
/// Versions are kept as text ([`Version::from_text`]) because PowerShell 7 sends
/// `PSVersion` as a semantic version object; use [`Version::major_minor`] to compare.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PsVersionTable {
    /// `PSVersion` (5.1.14393.2248 on Server 2016).
    pub ps_version: Option<Version>,
    /// `PSEdition` (`Desktop` or `Core`).
    pub ps_edition: Option<String>,
    /// `PSCompatibleVersions`.
    pub ps_compatible_versions: Vec<Version>,
    /// `CLRVersion`.
    pub clr_version: Option<Version>,
    /// `BuildVersion`.
    pub build_version: Option<Version>,
    /// `WSManStackVersion`.
    pub wsman_stack_version: Option<Version>,
    /// `PSRemotingProtocolVersion`.
    pub ps_remoting_protocol_version: Option<Version>,
    /// `SerializationVersion`.
    pub serialization_version: Option<Version>,
    /// `OS` (PowerShell 6+).
    pub os: Option<String>,
    /// `Platform` (PowerShell 6+).
    pub platform: Option<String>,
    /// `GitCommitId` (PowerShell 6+).
    pub git_commit_id: Option<String>,
}

impl PsVersionTable {
    /// The table Windows Server 2016 (PowerShell 5.1.14393.2248) reports
    /// (`R:test_psrp_open_runspace`), a sensible default for a simulated host.
    pub fn windows_powershell_5_1() -> Self {
        let v = Version::from_text;
        Self {
            ps_version: Some(v("5.1.14393.2248")),
            ps_edition: Some("Desktop".to_owned()),
            ps_compatible_versions: ["1.0", "2.0", "3.0", "4.0", "5.0", "5.1.14393.2248"]
                .into_iter()
                .map(v)
                .collect(),
            clr_version: Some(v("4.0.30319.42000")),
            build_version: Some(v("10.0.14393.2248")),
            wsman_stack_version: Some(v("3.0")),
            ps_remoting_protocol_version: Some(v("2.3")),
            serialization_version: Some(v("1.1.0.1")),
            os: None,
            platform: None,
            git_commit_id: None,
        }
    }

    /// Reads the `PSVersionTable` dictionary object.
    pub fn from_clixml(value: &Value) -> Option<Self> {
        let o = value.as_object()?;
        let version = |key: &str| {
            o.dict_get(key)
                .filter(|v| !v.is_nil())
                .map(|v| Version::from_text(v.display_text().into_owned()))
        };
        let text = |key: &str| o.dict_get(key).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            ps_version: version("PSVersion"),
            ps_edition: text("PSEdition"),
            ps_compatible_versions: string_list(o.dict_get("PSCompatibleVersions"))
                .into_iter()
                .map(Version::from_text)
                .collect(),
            clr_version: version("CLRVersion"),
            build_version: version("BuildVersion"),
            wsman_stack_version: version("WSManStackVersion"),
            ps_remoting_protocol_version: version("PSRemotingProtocolVersion"),
            serialization_version: version("SerializationVersion"),
            os: text("OS"),
            platform: text("Platform"),
            git_commit_id: text("GitCommitId"),
        })
    }

    /// The `PSVersionTable` dictionary as Windows PowerShell writes it (entry order of
    /// R:test_psrp_open_runspace).
    pub fn to_clixml(&self) -> Value {
        let version = |v: &Option<Version>| nil_or(v.clone(), Value::Version);
        let text = |v: &Option<String>| nil_or(v.clone(), Value::String);
        let mut entries = vec![
            ("PSVersion".to_owned(), version(&self.ps_version)),
            ("PSEdition".to_owned(), text(&self.ps_edition)),
            (
                "PSCompatibleVersions".to_owned(),
                Value::list(
                    &["System.Version[]", "System.Array", "System.Object"],
                    self.ps_compatible_versions
                        .iter()
                        .cloned()
                        .map(Value::Version)
                        .collect(),
                ),
            ),
            ("CLRVersion".to_owned(), version(&self.clr_version)),
            ("BuildVersion".to_owned(), version(&self.build_version)),
            (
                "WSManStackVersion".to_owned(),
                version(&self.wsman_stack_version),
            ),
            (
                "PSRemotingProtocolVersion".to_owned(),
                version(&self.ps_remoting_protocol_version),
            ),
            (
                "SerializationVersion".to_owned(),
                version(&self.serialization_version),
            ),
        ];
        for (key, value) in [
            ("OS", &self.os),
            ("Platform", &self.platform),
            ("GitCommitId", &self.git_commit_id),
        ] {
            if let Some(v) = value {
                entries.push((key.to_owned(), Value::String(v.clone())));
            }
        }
        primitive_dictionary(entries)
    }
}

/// APPLICATION_PRIVATE_DATA (MS-PSRP 2.2.2.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationPrivateData {
    /// The `ApplicationPrivateData` dictionary (or `Nil`).
    pub data: Value,
    /// Its `PSVersionTable` entry, parsed.
    pub version_table: Option<PsVersionTable>,
}

impl ApplicationPrivateData {
    /// The data a Windows host sends: a dictionary holding only `PSVersionTable`.
    pub fn from_version_table(table: PsVersionTable) -> Self {
        Self {
            data: primitive_dictionary(vec![("PSVersionTable".to_owned(), table.to_clixml())]),
            version_table: Some(table),
        }
    }

    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "APPLICATION_PRIVATE_DATA";
        let o = object(value, n)?;
        let data = prop(o, n, "ApplicationPrivateData")?.clone();
        let version_table = data
            .as_object()
            .and_then(|d| d.dict_get("PSVersionTable"))
            .and_then(PsVersionTable::from_clixml);
        Ok(Self {
            data,
            version_table,
        })
    }

    /// The body.
    pub fn to_clixml(&self) -> Value {
        ms(vec![p("ApplicationPrivateData", self.data.clone())])
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid) -> Message {
        to_client(
            MessageType::ApplicationPrivateData,
            rpid,
            Uuid::nil(),
            &self.to_clixml(),
        )
    }
}

/// GET_COMMAND_METADATA (MS-PSRP 2.2.2.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetCommandMetadata {
    /// `Name`: command name patterns.
    pub names: Vec<String>,
    /// `CommandType`: `CommandTypes` flags.
    pub command_type: i32,
    /// `Namespace`: module name patterns, if any.
    pub namespace: Option<Vec<String>>,
    /// `ArgumentList`, if any.
    pub argument_list: Option<Vec<Value>>,
}

impl GetCommandMetadata {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "GET_COMMAND_METADATA";
        let o = object(value, n)?;
        Ok(Self {
            names: string_list(Some(prop(o, n, "Name")?)),
            command_type: req_i32(o, n, "CommandType")?,
            namespace: opt(o, "Namespace").map(|v| string_list(Some(v))),
            argument_list: opt(o, "ArgumentList")
                .and_then(Value::as_list)
                .map(<[Value]>::to_vec),
        })
    }

    /// The body (`R:test_psrp_get_command_metadata`).
    pub fn to_clixml(&self) -> Value {
        let strings = |types: &[&str], v: &[String]| {
            Value::list(types, v.iter().map(|s| Value::String(s.clone())).collect())
        };
        ms(vec![
            p(
                "Name",
                strings(
                    &["System.String[]", "System.Array", "System.Object"],
                    &self.names,
                ),
            ),
            p("CommandType", self.command_type),
            p(
                "Namespace",
                nil_or(self.namespace.as_deref(), |n| {
                    strings(&["System.Object[]", "System.Array", "System.Object"], n)
                }),
            ),
            p(
                "ArgumentList",
                nil_or(self.argument_list.clone(), |a| {
                    Value::list(&["System.Object[]", "System.Array", "System.Object"], a)
                }),
            ),
        ])
    }

    /// The message to the server.
    pub fn encode(&self, rpid: Uuid, pid: Uuid) -> Message {
        to_server(
            MessageType::GetCommandMetadata,
            rpid,
            pid,
            &self.to_clixml(),
        )
    }
}

/// RUNSPACEPOOL_HOST_CALL / PIPELINE_HOST_CALL (MS-PSRP 2.2.2.15, 2.2.2.27): the server
/// calls a method of the client's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCall {
    /// `ci`: call id (negative for calls that expect no response).
    pub call_id: i64,
    /// `mi`: method id (`RemoteHostMethodId` value, MS-PSRP 2.2.3.17).
    pub method_id: i32,
    /// `mi`'s name (`ReadLine`, `WriteLine2`, `SetShouldExit`...).
    pub method_name: String,
    /// `mp`: the parameters.
    pub parameters: Vec<Value>,
}

/// .NET type name of host method ids.
pub const REMOTE_HOST_METHOD_ID_TYPE: &str =
    "System.Management.Automation.Remoting.RemoteHostMethodId";

impl HostCall {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "HOST_CALL";
        let o = object(value, n)?;
        let mi = prop(o, n, "mi")?;
        Ok(Self {
            call_id: req_i64(o, n, "ci")?,
            method_id: mi.as_i32().ok_or_else(|| wrong(mi, n, "mi"))?,
            method_name: mi.display_text().into_owned(),
            parameters: prop(o, n, "mp")?
                .as_list()
                .map(<[Value]>::to_vec)
                .unwrap_or_default(),
        })
    }

    /// The body (`R:test_psrp_pshost_ui_mocked_methods`).
    pub fn to_clixml(&self) -> Value {
        ms(vec![
            p("ci", self.call_id),
            p(
                "mi",
                Value::enumeration(
                    REMOTE_HOST_METHOD_ID_TYPE,
                    &self.method_name,
                    self.method_id,
                ),
            ),
            p(
                "mp",
                Value::list(
                    &["System.Collections.ArrayList", "System.Object"],
                    self.parameters.clone(),
                ),
            ),
        ])
    }

    /// The message to the client: a pipeline host call when `pid` is given, else a pool
    /// host call.
    pub fn encode(&self, rpid: Uuid, pid: Option<Uuid>) -> Message {
        let t = match pid {
            Some(_) => MessageType::PipelineHostCall,
            None => MessageType::RunspacePoolHostCall,
        };
        to_client(t, rpid, pid.unwrap_or_default(), &self.to_clixml())
    }
}

/// RUNSPACEPOOL_HOST_RESPONSE / PIPELINE_HOST_RESPONSE (MS-PSRP 2.2.2.16, 2.2.2.28).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResponse {
    /// `ci`: the call being answered.
    pub call_id: i64,
    /// `mi`: method id.
    pub method_id: i32,
    /// `mi`'s name.
    pub method_name: String,
    /// `mr`: the return value, if any.
    pub result: Option<Value>,
    /// `me`: an error record, if the call failed.
    pub error: Option<Value>,
}

impl HostResponse {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "HOST_RESPONSE";
        let o = object(value, n)?;
        let mi = prop(o, n, "mi")?;
        Ok(Self {
            call_id: req_i64(o, n, "ci")?,
            method_id: mi.as_i32().ok_or_else(|| wrong(mi, n, "mi"))?,
            method_name: mi.display_text().into_owned(),
            result: o.property("mr").cloned(),
            error: o.property("me").cloned(),
        })
    }

    /// The body (`R:test_psrp_pshost_ui_mocked_methods`).
    pub fn to_clixml(&self) -> Value {
        let mut props = vec![
            p("ci", self.call_id),
            p(
                "mi",
                Value::enumeration(
                    REMOTE_HOST_METHOD_ID_TYPE,
                    &self.method_name,
                    self.method_id,
                ),
            ),
        ];
        if let Some(r) = &self.result {
            props.push(p("mr", r.clone()));
        }
        if let Some(e) = &self.error {
            props.push(p("me", e.clone()));
        }
        ms(props)
    }

    /// The message to the server: a pipeline host response when `pid` is given, else a
    /// pool host response.
    pub fn encode(&self, rpid: Uuid, pid: Option<Uuid>) -> Message {
        let t = match pid {
            Some(_) => MessageType::PipelineHostResponse,
            None => MessageType::RunspacePoolHostResponse,
        };
        to_server(t, rpid, pid.unwrap_or_default(), &self.to_clixml())
    }
}

// ===== CREATE_PIPELINE =====

/// One argument of a command (MS-PSRP 2.2.3.13): a named parameter or a positional
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandArgument {
    /// `N`: the parameter name, `None` for a positional argument.
    pub name: Option<String>,
    /// `V`: the value (`Nil` for a switch given without value).
    pub value: Value,
}

/// A command in a pipeline (MS-PSRP 2.2.3.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// `Cmd`: a command name or a script.
    pub command: String,
    /// `IsScript`: `command` is script text.
    pub is_script: bool,
    /// `UseLocalScope` (`None` is `Nil`, what every recorded client sends).
    pub use_local_scope: Option<bool>,
    /// `MergeMyResult`.
    pub merge_my_result: PipelineResultTypes,
    /// `MergeToResult`.
    pub merge_to_result: PipelineResultTypes,
    /// `MergePreviousResults`.
    pub merge_previous_results: PipelineResultTypes,
    /// `Args`.
    pub arguments: Vec<CommandArgument>,
    /// `MergeError` (protocol 2.2 and later; `None` omits it).
    pub merge_error: Option<PipelineResultTypes>,
    /// `MergeWarning` (2.2+).
    pub merge_warning: Option<PipelineResultTypes>,
    /// `MergeVerbose` (2.2+).
    pub merge_verbose: Option<PipelineResultTypes>,
    /// `MergeDebug` (2.2+).
    pub merge_debug: Option<PipelineResultTypes>,
    /// `MergeInformation` (2.3+).
    pub merge_information: Option<PipelineResultTypes>,
}

impl Command {
    /// A command (`is_script` false) or script with no arguments and no merging, with the
    /// merge fields the given protocol version carries: 2.1 has none of the per-stream
    /// ones, 2.2 adds Error/Warning/Verbose/Debug, 2.3 adds Information
    /// [R:test_psrp_run_protocol_version_2.2; R:test_psrp_run_protocol_version_2.3;
    /// pypsrp `Command`].
    pub fn new(command: impl Into<String>, is_script: bool, protocol: ProtocolVersion) -> Self {
        let v22 = (protocol >= ProtocolVersion::V2_2).then_some(PipelineResultTypes::NONE);
        let v23 = (protocol >= ProtocolVersion::V2_3).then_some(PipelineResultTypes::NONE);
        Self {
            command: command.into(),
            is_script,
            use_local_scope: None,
            merge_my_result: PipelineResultTypes::NONE,
            merge_to_result: PipelineResultTypes::NONE,
            merge_previous_results: PipelineResultTypes::NONE,
            arguments: Vec::new(),
            merge_error: v22,
            merge_warning: v22,
            merge_verbose: v22,
            merge_debug: v22,
            merge_information: v23,
        }
    }

    /// A script (`IsScript` true).
    pub fn script(text: impl Into<String>, protocol: ProtocolVersion) -> Self {
        Self::new(text, true, protocol)
    }

    /// A cmdlet or function by name.
    pub fn cmdlet(name: impl Into<String>, protocol: ProtocolVersion) -> Self {
        Self::new(name, false, protocol)
    }

    /// Adds a named argument.
    pub fn with_parameter(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.arguments.push(CommandArgument {
            name: Some(name.into()),
            value: value.into(),
        });
        self
    }

    /// Adds a positional argument.
    pub fn with_argument(mut self, value: impl Into<Value>) -> Self {
        self.arguments.push(CommandArgument {
            name: None,
            value: value.into(),
        });
        self
    }

    const NAME: &'static str = "Command";

    /// Reads a command object.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = Self::NAME;
        let o = object(value, n)?;
        let merge = |name: &'static str| -> Result<Option<PipelineResultTypes>, DecodeError> {
            opt(o, name)
                .map(|v| PipelineResultTypes::read(v, n, name))
                .transpose()
        };
        let required = |name: &'static str| -> Result<PipelineResultTypes, DecodeError> {
            PipelineResultTypes::read(prop(o, n, name)?, n, name)
        };
        let args = prop(o, n, "Args")?;
        let mut arguments = Vec::new();
        for a in args.as_list().ok_or_else(|| wrong(args, n, "Args"))? {
            let ao = object(a, "CommandParameter")?;
            arguments.push(CommandArgument {
                name: opt_string(ao, "N"),
                value: prop(ao, "CommandParameter", "V")?.clone(),
            });
        }
        Ok(Self {
            command: req_string(o, n, "Cmd")?,
            is_script: req_bool(o, n, "IsScript")?,
            use_local_scope: opt_bool(o, "UseLocalScope"),
            merge_my_result: required("MergeMyResult")?,
            merge_to_result: required("MergeToResult")?,
            merge_previous_results: required("MergePreviousResults")?,
            arguments,
            merge_error: merge("MergeError")?,
            merge_warning: merge("MergeWarning")?,
            merge_verbose: merge("MergeVerbose")?,
            merge_debug: merge("MergeDebug")?,
            merge_information: merge("MergeInformation")?,
        })
    }

    /// The command object, properties in the order pypsrp sends and Windows accepts.
    pub fn to_clixml(&self) -> Value {
        let args = self
            .arguments
            .iter()
            .map(|a| {
                ms(vec![
                    p("N", nil_or(a.name.clone(), Value::String)),
                    p("V", a.value.clone()),
                ])
            })
            .collect();
        let mut props = vec![
            p("Cmd", self.command.as_str()),
            p("IsScript", self.is_script),
            p("UseLocalScope", nil_or(self.use_local_scope, Value::Bool)),
            p("MergeMyResult", self.merge_my_result.to_clixml()),
            p("MergeToResult", self.merge_to_result.to_clixml()),
            p(
                "MergePreviousResults",
                self.merge_previous_results.to_clixml(),
            ),
            p(
                "Args",
                Value::list(&[PSOBJECT_LIST_TYPE, "System.Object"], args),
            ),
        ];
        for (name, merge) in [
            ("MergeError", self.merge_error),
            ("MergeWarning", self.merge_warning),
            ("MergeVerbose", self.merge_verbose),
            ("MergeDebug", self.merge_debug),
            ("MergeInformation", self.merge_information),
        ] {
            if let Some(m) = merge {
                props.push(p(name, m.to_clixml()));
            }
        }
        ms(props)
    }
}

/// The `PowerShell` property of CREATE_PIPELINE (MS-PSRP 2.2.3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerShellPipeline {
    /// `IsNested`.
    pub is_nested: bool,
    /// `Cmds`: the commands of the first statement.
    pub commands: Vec<Command>,
    /// `ExtraCmds`: every statement when there is more than one (`None` is `Nil`).
    pub extra_commands: Option<Vec<Vec<Command>>>,
    /// `History` (`None` is `Nil`).
    pub history: Option<String>,
    /// `RedirectShellErrorOutputPipe`.
    pub redirect_shell_error_output_pipe: bool,
}

impl PowerShellPipeline {
    /// A pipeline of statements: `Cmds` gets the first, `ExtraCmds` all of them when
    /// there are several (`R:test_client_execute_ps_environment`).
    pub fn from_statements(mut statements: Vec<Vec<Command>>) -> Self {
        let commands = statements.first().cloned().unwrap_or_default();
        let extra_commands = if statements.len() > 1 {
            Some(std::mem::take(&mut statements))
        } else {
            None
        };
        Self {
            is_nested: false,
            commands,
            extra_commands,
            history: None,
            redirect_shell_error_output_pipe: false,
        }
    }

    const NAME: &'static str = "PowerShell";

    /// Reads the `PowerShell` object.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = Self::NAME;
        let o = object(value, n)?;
        let commands = |v: &Value, property: &'static str| -> Result<Vec<Command>, DecodeError> {
            v.as_list()
                .ok_or_else(|| wrong(v, n, property))?
                .iter()
                .map(Command::from_clixml)
                .collect()
        };
        let extra_commands = match opt(o, "ExtraCmds") {
            None => None,
            Some(v) => {
                let mut statements = Vec::new();
                for s in v.as_list().ok_or_else(|| wrong(v, n, "ExtraCmds"))? {
                    let so = object(s, "ExtraCmds statement")?;
                    statements.push(commands(prop(so, n, "Cmds")?, "Cmds")?);
                }
                Some(statements)
            }
        };
        Ok(Self {
            is_nested: req_bool(o, n, "IsNested")?,
            commands: commands(prop(o, n, "Cmds")?, "Cmds")?,
            extra_commands,
            history: opt_string(o, "History"),
            redirect_shell_error_output_pipe: req_bool(o, n, "RedirectShellErrorOutputPipe")?,
        })
    }

    /// The `PowerShell` object.
    pub fn to_clixml(&self) -> Value {
        let list = |cmds: &[Command]| {
            Value::list(
                &[PSOBJECT_LIST_TYPE, "System.Object"],
                cmds.iter().map(Command::to_clixml).collect(),
            )
        };
        let extra = self.extra_commands.as_ref().map(|statements| {
            Value::list(
                &[PSOBJECT_LIST_TYPE, "System.Object"],
                statements
                    .iter()
                    .map(|s| ms(vec![p("Cmds", list(s))]))
                    .collect(),
            )
        });
        ms(vec![
            p("IsNested", self.is_nested),
            p("ExtraCmds", extra.unwrap_or(Value::Nil)),
            p("Cmds", list(&self.commands)),
            p("History", nil_or(self.history.clone(), Value::String)),
            p(
                "RedirectShellErrorOutputPipe",
                self.redirect_shell_error_output_pipe,
            ),
        ])
    }
}

/// CREATE_PIPELINE (MS-PSRP 2.2.2.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePipeline {
    /// `NoInput`: no PIPELINE_INPUT will follow.
    pub no_input: bool,
    /// `ApartmentState`.
    pub apartment_state: ApartmentState,
    /// `RemoteStreamOptions`.
    pub remote_stream_options: RemoteStreamOptions,
    /// `AddToHistory`.
    pub add_to_history: bool,
    /// `HostInfo`.
    pub host_info: HostInfo,
    /// `PowerShell`.
    pub pipeline: PowerShellPipeline,
    /// `IsNested`.
    pub is_nested: bool,
}

impl CreatePipeline {
    /// A pipeline of one statement with the settings every recorded client uses: no
    /// input, apartment state unknown, `AddInvocationInfo`, not added to history, no host
    /// (wire-facts 4.4 step 4).
    pub fn new(commands: Vec<Command>) -> Self {
        Self {
            no_input: true,
            apartment_state: ApartmentState::Unknown,
            remote_stream_options: RemoteStreamOptions::ADD_INVOCATION_INFO,
            add_to_history: false,
            host_info: HostInfo::default(),
            pipeline: PowerShellPipeline::from_statements(vec![commands]),
            is_nested: false,
        }
    }

    /// A pipeline running one script.
    pub fn script(text: impl Into<String>, protocol: ProtocolVersion) -> Self {
        Self::new(vec![Command::script(text, protocol)])
    }

    const NAME: &'static str = "CREATE_PIPELINE";

    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = Self::NAME;
        let o = object(value, n)?;
        let rso = prop(o, n, "RemoteStreamOptions")?;
        Ok(Self {
            no_input: req_bool(o, n, "NoInput")?,
            apartment_state: ApartmentState::read(
                prop(o, n, "ApartmentState")?,
                n,
                "ApartmentState",
            )?,
            remote_stream_options: RemoteStreamOptions(
                rso.as_i32()
                    .ok_or_else(|| wrong(rso, n, "RemoteStreamOptions"))?,
            ),
            add_to_history: req_bool(o, n, "AddToHistory")?,
            host_info: HostInfo::from_clixml(prop(o, n, "HostInfo")?)?,
            pipeline: PowerShellPipeline::from_clixml(prop(o, n, "PowerShell")?)?,
            is_nested: req_bool(o, n, "IsNested")?,
        })
    }

    /// The body, properties in the recorded order (`R:test_psrp_stream_output_invocation`).
    pub fn to_clixml(&self) -> Value {
        ms(vec![
            p("NoInput", self.no_input),
            p("ApartmentState", self.apartment_state.to_clixml()),
            p(
                "RemoteStreamOptions",
                self.remote_stream_options.to_clixml(),
            ),
            p("AddToHistory", self.add_to_history),
            p("HostInfo", self.host_info.to_clixml()),
            p("PowerShell", self.pipeline.to_clixml()),
            p("IsNested", self.is_nested),
        ])
    }

    /// The message to the server (`pid` becomes the WS-Man CommandId).
    pub fn encode(&self, rpid: Uuid, pid: Uuid) -> Message {
        to_server(MessageType::CreatePipeline, rpid, pid, &self.to_clixml())
    }
}

// ===== Pipeline data and state =====

/// PIPELINE_INPUT (MS-PSRP 2.2.2.17): one input object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineInput {
    /// The object.
    pub value: Value,
}

impl PipelineInput {
    /// Reads the body (any value).
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        Ok(Self {
            value: value.clone(),
        })
    }

    /// The message to the server.
    pub fn encode(&self, rpid: Uuid, pid: Uuid) -> Message {
        to_server(MessageType::PipelineInput, rpid, pid, &self.value)
    }
}

/// The END_OF_PIPELINE_INPUT message (MS-PSRP 2.2.2.18): an empty body.
pub fn end_of_pipeline_input(rpid: Uuid, pid: Uuid) -> Message {
    Message::new(
        Destination::Server,
        MessageType::EndOfPipelineInput,
        rpid,
        pid,
        Vec::new(),
    )
}

/// PIPELINE_OUTPUT (MS-PSRP 2.2.2.19): one output object, written bare
/// (`<S>output stream</S>`, wire-facts 4.4 step 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineOutput {
    /// The object.
    pub value: Value,
}

impl PipelineOutput {
    /// Reads the body (any value).
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        Ok(Self {
            value: value.clone(),
        })
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid, pid: Uuid) -> Message {
        to_client(MessageType::PipelineOutput, rpid, pid, &self.value)
    }
}

/// PIPELINE_STATE (MS-PSRP 2.2.2.21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineStateMessage {
    /// `PipelineState`.
    pub state: PsInvocationState,
    /// `ExceptionAsErrorRecord`: the terminating error of a `Failed` pipeline
    /// (`R:test_psrp_error_failed`).
    pub error: Option<ErrorRecord>,
}

impl PipelineStateMessage {
    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "PIPELINE_STATE";
        let o = object(value, n)?;
        Ok(Self {
            state: PsInvocationState::read(prop(o, n, "PipelineState")?, n, "PipelineState")?,
            error: opt(o, "ExceptionAsErrorRecord")
                .map(ErrorRecord::from_clixml)
                .transpose()?,
        })
    }

    /// The body.
    pub fn to_clixml(&self) -> Value {
        let mut props = vec![p("PipelineState", self.state.value())];
        if let Some(e) = &self.error {
            props.push(p("ExceptionAsErrorRecord", e.to_clixml()));
        }
        ms(props)
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid, pid: Uuid) -> Message {
        to_client(MessageType::PipelineState, rpid, pid, &self.to_clixml())
    }
}

// ===== Records =====

/// Where a record came from (.NET `InvocationInfo`, MS-PSRP 2.2.3.21 flattened as
/// `InvocationInfo_*` properties, or the adapted properties of an `InvocationInfo`
/// object).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvocationInfo {
    /// Command name (`CommandInfo_Name`, or `MyCommand`).
    pub command_name: Option<String>,
    /// Command definition (`CommandInfo_Definition`): the script text for scripts.
    pub command_definition: Option<String>,
    /// `CommandInfo_CommandType` (`CommandTypes` flags; 64 = Script).
    pub command_type: Option<i32>,
    /// `ScriptLineNumber`.
    pub script_line_number: Option<i32>,
    /// `OffsetInLine`.
    pub offset_in_line: Option<i32>,
    /// `PositionMessage` ("At line:80 char:1 ...").
    pub position_message: Option<String>,
    /// `Line`: the source line.
    pub line: Option<String>,
    /// `ScriptName`.
    pub script_name: Option<String>,
    /// `InvocationName`.
    pub invocation_name: Option<String>,
    /// `HistoryId`.
    pub history_id: Option<i64>,
    /// `PipelineLength`.
    pub pipeline_length: Option<i32>,
    /// `PipelinePosition`.
    pub pipeline_position: Option<i32>,
    /// `CommandOrigin`.
    pub command_origin: Option<CommandOrigin>,
    /// `ExpectingInput`.
    pub expecting_input: Option<bool>,
    /// `PipelineIterationInfo`.
    pub pipeline_iteration_info: Vec<i32>,
    /// `BoundParameters`: parameter name to value.
    pub bound_parameters: Vec<DictEntry>,
    /// `UnboundArguments`.
    pub unbound_arguments: Vec<Value>,
    /// `MyCommand` of the `InvocationInfo` object (the script text for a script block).
    pub my_command: Option<String>,
    /// `PSScriptRoot`.
    pub ps_script_root: Option<String>,
    /// `PSCommandPath`.
    pub ps_command_path: Option<String>,
}

/// .NET `CommandTypes` flag names, for [`command_types_name`].
const COMMAND_TYPES: [(&str, i32); 9] = [
    ("Alias", 0x1),
    ("Function", 0x2),
    ("Filter", 0x4),
    ("Cmdlet", 0x8),
    ("ExternalScript", 0x10),
    ("Application", 0x20),
    ("Script", 0x40),
    ("Workflow", 0x80),
    ("Configuration", 0x100),
];

/// The `ToString` of a `CommandTypes` value (`Script`, `Alias, Function`, `All`).
pub fn command_types_name(value: i32) -> String {
    if value == 0x1FF {
        return "All".to_owned();
    }
    COMMAND_TYPES
        .iter()
        .filter(|(_, f)| value & f == *f)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

impl InvocationInfo {
    /// Reads the flattened `InvocationInfo_*` and `CommandInfo_*` properties of a record.
    pub fn from_flattened(o: &PsObject) -> Self {
        Self {
            command_name: opt_string(o, "CommandInfo_Name"),
            command_definition: opt_string(o, "CommandInfo_Definition"),
            command_type: opt_i32(o, "CommandInfo_CommandType"),
            script_line_number: opt_i32(o, "InvocationInfo_ScriptLineNumber"),
            offset_in_line: opt_i32(o, "InvocationInfo_OffsetInLine"),
            position_message: opt_string(o, "InvocationInfo_PositionMessage"),
            line: opt_string(o, "InvocationInfo_Line"),
            script_name: opt_string(o, "InvocationInfo_ScriptName"),
            invocation_name: opt_string(o, "InvocationInfo_InvocationName"),
            history_id: opt_i64(o, "InvocationInfo_HistoryId"),
            pipeline_length: opt_i32(o, "InvocationInfo_PipelineLength"),
            pipeline_position: opt_i32(o, "InvocationInfo_PipelinePosition"),
            command_origin: opt(o, "InvocationInfo_CommandOrigin")
                .and_then(CommandOrigin::from_clixml),
            expecting_input: opt_bool(o, "InvocationInfo_ExpectingInput"),
            pipeline_iteration_info: int_list(opt(o, "InvocationInfo_PipelineIterationInfo")),
            bound_parameters: dict_entries(opt(o, "InvocationInfo_BoundParameters")),
            unbound_arguments: list_items(opt(o, "InvocationInfo_UnboundArguments")),
            my_command: None,
            ps_script_root: opt_string(o, "InvocationInfo_PSScriptRoot"),
            ps_command_path: opt_string(o, "InvocationInfo_PSCommandPath"),
        }
    }

    /// Reads an `InvocationInfo` object (its adapted properties).
    pub fn from_object(o: &PsObject) -> Self {
        Self {
            command_name: opt(o, "MyCommand").map(|v| v.display_text().into_owned()),
            command_definition: None,
            command_type: None,
            script_line_number: opt_i32(o, "ScriptLineNumber"),
            offset_in_line: opt_i32(o, "OffsetInLine"),
            position_message: opt_string(o, "PositionMessage"),
            line: opt_string(o, "Line"),
            script_name: opt_string(o, "ScriptName"),
            invocation_name: opt_string(o, "InvocationName"),
            history_id: opt_i64(o, "HistoryId"),
            pipeline_length: opt_i32(o, "PipelineLength"),
            pipeline_position: opt_i32(o, "PipelinePosition"),
            command_origin: match opt(o, "CommandOrigin").and_then(Value::as_str) {
                Some("Runspace") => Some(CommandOrigin::Runspace),
                Some("Internal") => Some(CommandOrigin::Internal),
                _ => None,
            },
            expecting_input: opt_bool(o, "ExpectingInput"),
            pipeline_iteration_info: int_list(opt(o, "PipelineIterationInfo")),
            bound_parameters: dict_entries(opt(o, "BoundParameters")),
            unbound_arguments: list_items(opt(o, "UnboundArguments")),
            my_command: opt(o, "MyCommand").map(|v| v.display_text().into_owned()),
            ps_script_root: opt_string(o, "PSScriptRoot"),
            ps_command_path: opt_string(o, "PSCommandPath"),
        }
    }

    /// The flattened properties PowerShell writes when a record carries invocation info
    /// (`InvocationInfo.ToPSObjectForRemoting`; order of R:test_psrp_merge_commands).
    /// Informational records carry a `PSBoundParametersDictionary`.
    fn flattened(&self, bound_parameters: Value, unbound_arguments: Value) -> Vec<Property> {
        let s = |v: &Option<String>| Value::String(v.clone().unwrap_or_default());
        let ints = |v: &[i32]| v.iter().map(|i| Value::I32(*i)).collect::<Vec<_>>();
        let mut props = vec![
            p("InvocationInfo_BoundParameters", bound_parameters),
            p(
                "InvocationInfo_CommandOrigin",
                self.command_origin
                    .unwrap_or(CommandOrigin::Runspace)
                    .to_clixml(),
            ),
            p(
                "InvocationInfo_ExpectingInput",
                self.expecting_input.unwrap_or(false),
            ),
            p("InvocationInfo_InvocationName", s(&self.invocation_name)),
            p("InvocationInfo_Line", s(&self.line)),
            p(
                "InvocationInfo_OffsetInLine",
                self.offset_in_line.unwrap_or(0),
            ),
            p("InvocationInfo_HistoryId", self.history_id.unwrap_or(1)),
            p(
                "InvocationInfo_PipelineIterationInfo",
                Value::list(
                    &["System.Int32[]", "System.Array", "System.Object"],
                    ints(&self.pipeline_iteration_info),
                ),
            ),
            p(
                "InvocationInfo_PipelineLength",
                self.pipeline_length.unwrap_or(0),
            ),
            p(
                "InvocationInfo_PipelinePosition",
                self.pipeline_position.unwrap_or(0),
            ),
            p("InvocationInfo_PSScriptRoot", s(&self.ps_script_root)),
            p(
                "InvocationInfo_PSCommandPath",
                nil_or(self.ps_command_path.clone(), Value::String),
            ),
            p("InvocationInfo_PositionMessage", s(&self.position_message)),
            p(
                "InvocationInfo_ScriptLineNumber",
                self.script_line_number.unwrap_or(0),
            ),
            p("InvocationInfo_ScriptName", s(&self.script_name)),
            p("InvocationInfo_UnboundArguments", unbound_arguments),
            p("SerializeExtent", false),
        ];
        if self.command_name.is_some() || self.command_definition.is_some() {
            let command_type = self.command_type.unwrap_or(0x40);
            props.extend([
                p(
                    "CommandInfo_CommandType",
                    Value::enumeration(
                        "System.Management.Automation.CommandTypes",
                        &command_types_name(command_type),
                        command_type,
                    ),
                ),
                p("CommandInfo_Definition", s(&self.command_definition)),
                p("CommandInfo_Name", s(&self.command_name)),
                p(
                    "CommandInfo_Visibility",
                    Value::enumeration(
                        "System.Management.Automation.SessionStateEntryVisibility",
                        "Public",
                        0,
                    ),
                ),
            ]);
        }
        props
    }
}

impl InvocationInfo {
    /// The `InvocationInfo` object an error record carries (its adapted properties, in
    /// the order Windows writes them), sharing `bound` and `unbound` with the flattened
    /// properties.
    fn to_object(&self, bound: Value, unbound: Value) -> Value {
        let s = |v: &Option<String>| Value::String(v.clone().unwrap_or_default());
        let origin = self.command_origin.unwrap_or(CommandOrigin::Runspace);
        Value::object(PsObject {
            type_names: Some(clixml::type_names_of(&[
                "System.Management.Automation.InvocationInfo",
                "System.Object",
            ])),
            to_string: Some("System.Management.Automation.InvocationInfo".to_owned()),
            adapted: vec![
                p("MyCommand", nil_or(self.my_command.clone(), Value::String)),
                p("BoundParameters", bound),
                p("UnboundArguments", unbound),
                p("ScriptLineNumber", self.script_line_number.unwrap_or(0)),
                p("OffsetInLine", self.offset_in_line.unwrap_or(0)),
                p("HistoryId", self.history_id.unwrap_or(1)),
                p("ScriptName", s(&self.script_name)),
                p("Line", s(&self.line)),
                p("PositionMessage", s(&self.position_message)),
                p("PSScriptRoot", s(&self.ps_script_root)),
                p(
                    "PSCommandPath",
                    nil_or(self.ps_command_path.clone(), Value::String),
                ),
                p("InvocationName", s(&self.invocation_name)),
                p("PipelineLength", self.pipeline_length.unwrap_or(0)),
                p("PipelinePosition", self.pipeline_position.unwrap_or(0)),
                p("ExpectingInput", self.expecting_input.unwrap_or(false)),
                p("CommandOrigin", origin.name()),
                p("DisplayScriptPosition", Value::Nil),
            ],
            ..PsObject::default()
        })
    }
}

fn dict_entries(value: Option<&Value>) -> Vec<DictEntry> {
    value
        .and_then(Value::as_object)
        .and_then(PsObject::dictionary)
        .map(<[DictEntry]>::to_vec)
        .unwrap_or_default()
}

fn list_items(value: Option<&Value>) -> Vec<Value> {
    value
        .and_then(Value::as_list)
        .map(<[Value]>::to_vec)
        .unwrap_or_default()
}

fn int_list(value: Option<&Value>) -> Vec<i32> {
    value
        .and_then(Value::as_list)
        .map(|items| items.iter().filter_map(Value::as_i32).collect())
        .unwrap_or_default()
}

const BOUND_PARAMETERS_TYPE: &str = "System.Collections.Generic.Dictionary`2[[System.String, mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089],[System.Object, mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089]]";
const OBJECT_LIST_TYPE: &str = "System.Collections.Generic.List`1[[System.Object, mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089]]";
const INT_COLLECTION_TYPE: &str = "System.Collections.ObjectModel.ReadOnlyCollection`1[[System.Int32, mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089]]";
const STRING_LIST_TYPE: &str = "System.Collections.Generic.List`1[[System.String, mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089]]";

/// An error record (MS-PSRP 2.2.3.15), from ERROR_RECORD or a state message's
/// `ExceptionAsErrorRecord`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRecord {
    /// The record's `ToString`: the message a console shows.
    pub message: String,
    /// `FullyQualifiedErrorId`.
    pub fully_qualified_error_id: String,
    /// `ErrorCategory_Category` (see [`ERROR_CATEGORY_NAMES`]).
    pub category: i32,
    /// `ErrorCategory_Activity`.
    pub activity: Option<String>,
    /// `ErrorCategory_Reason`.
    pub reason: Option<String>,
    /// `ErrorCategory_TargetName`.
    pub target_name: Option<String>,
    /// `ErrorCategory_TargetType`.
    pub target_type: Option<String>,
    /// `ErrorCategory_Message` ("NotSpecified: (:) [Write-Error], WriteErrorException").
    pub category_message: Option<String>,
    /// `ErrorDetails_Message`.
    pub details_message: Option<String>,
    /// `ErrorDetails_RecommendedAction`.
    pub recommended_action: Option<String>,
    /// Type names of `Exception`, most derived first.
    pub exception_type_names: Vec<String>,
    /// `Exception`'s `Message` property (or `ToString`).
    pub exception_message: Option<String>,
    /// The `Exception` object as received. When set it is written back unchanged;
    /// otherwise one is built from `exception_type_names` and `exception_message`.
    pub exception_object: Option<Value>,
    /// `TargetObject`.
    pub target_object: Option<Value>,
    /// Invocation info: the `InvocationInfo` object's properties, completed from the
    /// flattened `InvocationInfo_*` properties when `SerializeExtendedInfo` is set.
    pub invocation: Option<InvocationInfo>,
    /// `SerializeExtendedInfo`: whether the flattened invocation properties are present.
    pub serialize_extended_info: bool,
    /// `PipelineIterationInfo` (written with the flattened properties).
    pub pipeline_iteration_info: Vec<i32>,
    /// `ErrorDetails_ScriptStackTrace`.
    pub script_stack_trace: Option<String>,
    /// `writeErrorStream`: written by Write-Error rather than thrown.
    pub write_error_stream: Option<bool>,
    /// Whether the record carries the `PSMessageDetails` note property (records from the
    /// error stream do, `ExceptionAsErrorRecord` does not).
    pub ps_message_details: bool,
    /// The whole record as received (`Nil` for one built locally).
    pub value: Value,
}

/// .NET type name of error records.
pub const ERROR_RECORD_TYPE: &str = "System.Management.Automation.ErrorRecord";

impl ErrorRecord {
    /// A record for a thrown error, shaped like Windows PowerShell's
    /// (`RuntimeException`, category `OperationStopped`) (`R:test_client_copy_file_failure`).
    pub fn runtime_exception(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            fully_qualified_error_id: message.clone(),
            category: 14,
            activity: Some(String::new()),
            reason: Some("RuntimeException".to_owned()),
            target_name: Some(message.clone()),
            target_type: Some("String".to_owned()),
            category_message: Some(format!(
                "OperationStopped: ({message}:String) [], RuntimeException"
            )),
            details_message: None,
            recommended_action: None,
            exception_type_names: [
                "System.Management.Automation.RuntimeException",
                "System.SystemException",
                "System.Exception",
                "System.Object",
            ]
            .map(str::to_owned)
            .to_vec(),
            exception_message: Some(message.clone()),
            exception_object: None,
            target_object: Some(Value::String(message.clone())),
            invocation: None,
            serialize_extended_info: false,
            pipeline_iteration_info: Vec::new(),
            script_stack_trace: None,
            write_error_stream: None,
            ps_message_details: false,
            message,
            value: Value::Nil,
        }
    }

    /// The name of [`Self::category`].
    pub fn category_name(&self) -> Option<&'static str> {
        usize::try_from(self.category)
            .ok()
            .and_then(|i| ERROR_CATEGORY_NAMES.get(i).copied())
    }

    const NAME: &'static str = "ErrorRecord";

    /// Reads an error record object.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = Self::NAME;
        let o = object(value, n)?;
        let exception_value = opt(o, "Exception");
        let exception = exception_value.and_then(Value::as_object);
        let extended = opt_bool(o, "SerializeExtendedInfo").unwrap_or(false);
        let object_info = opt(o, "InvocationInfo")
            .and_then(Value::as_object)
            .map(InvocationInfo::from_object);
        let invocation = match (extended, object_info) {
            (true, object_info) => {
                let mut info = InvocationInfo::from_flattened(o);
                info.my_command = object_info.and_then(|i| i.my_command);
                Some(info)
            }
            (false, object_info) => object_info,
        };
        let fqid = opt_string(o, "FullyQualifiedErrorId").unwrap_or_default();
        Ok(Self {
            message: o
                .to_string
                .clone()
                .or_else(|| exception.and_then(|e| opt_string(e, "Message")))
                .unwrap_or_else(|| fqid.clone()),
            fully_qualified_error_id: fqid,
            category: opt_i32(o, "ErrorCategory_Category").unwrap_or(0),
            activity: opt_string(o, "ErrorCategory_Activity"),
            reason: opt_string(o, "ErrorCategory_Reason"),
            target_name: opt_string(o, "ErrorCategory_TargetName"),
            target_type: opt_string(o, "ErrorCategory_TargetType"),
            category_message: opt_string(o, "ErrorCategory_Message"),
            details_message: opt_string(o, "ErrorDetails_Message"),
            recommended_action: opt_string(o, "ErrorDetails_RecommendedAction"),
            exception_type_names: exception
                .map(|e| e.type_names().to_vec())
                .unwrap_or_default(),
            exception_message: exception
                .and_then(|e| opt_string(e, "Message").or_else(|| e.to_string.clone())),
            exception_object: exception_value.cloned(),
            target_object: opt(o, "TargetObject").cloned(),
            invocation,
            serialize_extended_info: extended,
            pipeline_iteration_info: int_list(opt(o, "PipelineIterationInfo")),
            script_stack_trace: opt_string(o, "ErrorDetails_ScriptStackTrace"),
            write_error_stream: opt_bool(o, "writeErrorStream"),
            ps_message_details: o.property("PSMessageDetails").is_some(),
            value: value.clone(),
        })
    }

    fn exception_clixml(&self) -> Value {
        if let Some(e) = &self.exception_object {
            return e.clone();
        }
        let message = self
            .exception_message
            .clone()
            .unwrap_or_else(|| self.message.clone());
        let type_names: clixml::TypeNames = if self.exception_type_names.is_empty() {
            clixml::type_names_of(&["System.Exception", "System.Object"])
        } else {
            self.exception_type_names.iter().cloned().collect()
        };
        let main_type = type_names.first().cloned().unwrap_or_default();
        Value::object(PsObject {
            type_names: Some(type_names),
            to_string: Some(format!("{main_type}: {message}")),
            adapted: vec![
                p("Message", message.as_str()),
                p(
                    "Data",
                    Value::dictionary(
                        &["System.Collections.ListDictionaryInternal", "System.Object"],
                        Vec::new(),
                    ),
                ),
                p("InnerException", Value::Nil),
                p("TargetSite", Value::Nil),
                p("StackTrace", Value::Nil),
                p("HelpLink", Value::Nil),
                p("Source", Value::Nil),
                p("HResult", -2_146_233_087),
            ],
            ..PsObject::default()
        })
    }

    /// The error record object, shaped like Windows PowerShell's
    /// (`ErrorRecord.ToPSObjectForRemoting`; (`R:test_psrp_merge_commands`)): the
    /// `InvocationInfo` object and the flattened `InvocationInfo_*` properties share the
    /// bound and unbound argument collections, so they are written once and referenced.
    pub fn to_clixml(&self) -> Value {
        let s = |v: &Option<String>| Value::String(v.clone().unwrap_or_default());
        let shared = self.invocation.as_ref().map(|info| {
            (
                Value::dictionary(
                    &[BOUND_PARAMETERS_TYPE, "System.Object"],
                    info.bound_parameters.clone(),
                ),
                Value::list(
                    &[OBJECT_LIST_TYPE, "System.Object"],
                    info.unbound_arguments.clone(),
                ),
            )
        });
        let mut props = Vec::new();
        if let Some(w) = self.write_error_stream {
            props.push(p("writeErrorStream", w));
        }
        props.extend([
            p("Exception", self.exception_clixml()),
            p(
                "TargetObject",
                self.target_object.clone().unwrap_or(Value::Nil),
            ),
            p(
                "FullyQualifiedErrorId",
                self.fully_qualified_error_id.as_str(),
            ),
            p(
                "InvocationInfo",
                match (&self.invocation, &shared) {
                    (Some(info), Some((bound, unbound))) => {
                        info.to_object(bound.clone(), unbound.clone())
                    }
                    _ => Value::Nil,
                },
            ),
            p("ErrorCategory_Category", self.category),
            p("ErrorCategory_Activity", s(&self.activity)),
            p("ErrorCategory_Reason", s(&self.reason)),
            p("ErrorCategory_TargetName", s(&self.target_name)),
            p("ErrorCategory_TargetType", s(&self.target_type)),
            p("ErrorCategory_Message", s(&self.category_message)),
        ]);
        if let Some(m) = &self.details_message {
            props.push(p("ErrorDetails_Message", m.as_str()));
        }
        if let Some(a) = &self.recommended_action {
            props.push(p("ErrorDetails_RecommendedAction", a.as_str()));
        }
        let extended = self.serialize_extended_info && self.invocation.is_some();
        props.push(p("SerializeExtendedInfo", extended));
        if let (true, Some(info), Some((bound, unbound))) = (extended, &self.invocation, shared) {
            props.extend(info.flattened(bound, unbound));
            props.push(p(
                "PipelineIterationInfo",
                Value::list(
                    &[INT_COLLECTION_TYPE, "System.Object"],
                    self.pipeline_iteration_info
                        .iter()
                        .map(|i| Value::I32(*i))
                        .collect(),
                ),
            ));
        }
        if let Some(t) = &self.script_stack_trace {
            props.push(p("ErrorDetails_ScriptStackTrace", t.as_str()));
        }
        if self.ps_message_details {
            props.push(p("PSMessageDetails", Value::Nil));
        }
        Value::object(PsObject {
            type_names: Some(clixml::type_names_of(&[ERROR_RECORD_TYPE, "System.Object"])),
            to_string: Some(self.message.clone()),
            extended: props,
            ..PsObject::default()
        })
    }

    /// The ERROR_RECORD message to the client.
    pub fn encode(&self, rpid: Uuid, pid: Uuid) -> Message {
        to_client(MessageType::ErrorRecord, rpid, pid, &self.to_clixml())
    }
}

/// Which of the three informational streams a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InformationalKind {
    /// DEBUG_RECORD (Write-Debug).
    Debug,
    /// VERBOSE_RECORD (Write-Verbose).
    Verbose,
    /// WARNING_RECORD (Write-Warning).
    Warning,
}

impl InformationalKind {
    /// The message type carrying this kind.
    pub fn message_type(self) -> MessageType {
        match self {
            Self::Debug => MessageType::DebugRecord,
            Self::Verbose => MessageType::VerboseRecord,
            Self::Warning => MessageType::WarningRecord,
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Self::Debug => "System.Management.Automation.DebugRecord",
            Self::Verbose => "System.Management.Automation.VerboseRecord",
            Self::Warning => "System.Management.Automation.WarningRecord",
        }
    }
}

/// DEBUG_RECORD, VERBOSE_RECORD and WARNING_RECORD bodies (MS-PSRP 2.2.3.22
/// InformationalRecord).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InformationalRecord {
    /// The stream, from the type names (`None` when they name none of the three).
    pub kind: Option<InformationalKind>,
    /// `InformationalRecord_Message`.
    pub message: String,
    /// Invocation info, when `InformationalRecord_SerializeInvocationInfo` is set.
    pub invocation: Option<InvocationInfo>,
    /// The whole record as received (`Nil` for one built locally).
    pub value: Value,
}

impl InformationalRecord {
    /// A record of `kind` with a message and no invocation info.
    pub fn new(kind: InformationalKind, message: impl Into<String>) -> Self {
        Self {
            kind: Some(kind),
            message: message.into(),
            invocation: None,
            value: Value::Nil,
        }
    }

    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "InformationalRecord";
        let o = object(value, n)?;
        let kind = [
            InformationalKind::Debug,
            InformationalKind::Verbose,
            InformationalKind::Warning,
        ]
        .into_iter()
        .find(|k| o.is_type(k.type_name()));
        let with_invocation =
            opt_bool(o, "InformationalRecord_SerializeInvocationInfo").unwrap_or(false);
        Ok(Self {
            kind,
            message: req_string(o, n, "InformationalRecord_Message")?,
            invocation: with_invocation.then(|| InvocationInfo::from_flattened(o)),
            value: value.clone(),
        })
    }

    /// The body, shaped like Windows PowerShell's (wire-facts 4.4 step 5). A record
    /// without a kind is written as a warning.
    pub fn to_clixml(&self) -> Value {
        let kind = self.kind.unwrap_or(InformationalKind::Warning);
        let mut props = vec![
            p("InformationalRecord_Message", self.message.as_str()),
            p(
                "InformationalRecord_SerializeInvocationInfo",
                self.invocation.is_some(),
            ),
        ];
        if let Some(info) = &self.invocation {
            props.extend(info.flattened(
                Value::dictionary(
                    &[
                        "System.Management.Automation.PSBoundParametersDictionary",
                        BOUND_PARAMETERS_TYPE,
                        "System.Object",
                    ],
                    info.bound_parameters.clone(),
                ),
                Value::list(
                    &[OBJECT_LIST_TYPE, "System.Object"],
                    info.unbound_arguments.clone(),
                ),
            ));
            props.push(p(
                "InformationalRecord_PipelineIterationInfo",
                Value::list(
                    &[INT_COLLECTION_TYPE, "System.Object"],
                    info.pipeline_iteration_info
                        .iter()
                        .map(|i| Value::I32(*i))
                        .collect(),
                ),
            ));
        }
        Value::object(PsObject {
            type_names: Some(clixml::type_names_of(&[
                kind.type_name(),
                "System.Management.Automation.InformationalRecord",
                "System.Object",
            ])),
            to_string: Some(self.message.clone()),
            extended: props,
            ..PsObject::default()
        })
    }

    /// The message to the client (type from `kind`, warning when unset).
    pub fn encode(&self, rpid: Uuid, pid: Uuid) -> Message {
        let kind = self.kind.unwrap_or(InformationalKind::Warning);
        to_client(kind.message_type(), rpid, pid, &self.to_clixml())
    }
}

/// PROGRESS_RECORD (MS-PSRP 2.2.2.25).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressRecord {
    /// `Activity`.
    pub activity: String,
    /// `ActivityId`.
    pub activity_id: i32,
    /// `StatusDescription`.
    pub status_description: String,
    /// `CurrentOperation`.
    pub current_operation: Option<String>,
    /// `ParentActivityId` (-1 for none).
    pub parent_activity_id: i32,
    /// `PercentComplete` (-1 for unknown).
    pub percent_complete: i32,
    /// `SecondsRemaining` (-1 for unknown).
    pub seconds_remaining: i32,
    /// `Type`.
    pub record_type: ProgressRecordType,
}

impl ProgressRecord {
    /// The record Windows sends while loading modules on first use, `Completed`
    /// (`R:test_psrp_stream_output_invocation`).
    pub fn preparing_modules() -> Self {
        Self {
            activity: "Preparing modules for first use.".to_owned(),
            activity_id: 0,
            status_description: " ".to_owned(),
            current_operation: None,
            parent_activity_id: -1,
            percent_complete: -1,
            seconds_remaining: -1,
            record_type: ProgressRecordType::Completed,
        }
    }

    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "PROGRESS_RECORD";
        let o = object(value, n)?;
        Ok(Self {
            activity: req_string(o, n, "Activity")?,
            activity_id: req_i32(o, n, "ActivityId")?,
            status_description: opt_string(o, "StatusDescription").unwrap_or_default(),
            current_operation: opt_string(o, "CurrentOperation"),
            parent_activity_id: opt_i32(o, "ParentActivityId").unwrap_or(-1),
            percent_complete: opt_i32(o, "PercentComplete").unwrap_or(-1),
            seconds_remaining: opt_i32(o, "SecondsRemaining").unwrap_or(-1),
            record_type: ProgressRecordType::read(prop(o, n, "Type")?, n, "Type")?,
        })
    }

    /// The body, in the recorded property order.
    pub fn to_clixml(&self) -> Value {
        ms(vec![
            p("Activity", self.activity.as_str()),
            p("ActivityId", self.activity_id),
            p("StatusDescription", self.status_description.as_str()),
            p(
                "CurrentOperation",
                nil_or(self.current_operation.clone(), Value::String),
            ),
            p("ParentActivityId", self.parent_activity_id),
            p("PercentComplete", self.percent_complete),
            p("Type", self.record_type.to_clixml()),
            p("SecondsRemaining", self.seconds_remaining),
        ])
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid, pid: Uuid) -> Message {
        to_client(MessageType::ProgressRecord, rpid, pid, &self.to_clixml())
    }
}

/// INFORMATION_RECORD (MS-PSRP 2.2.2.26; PowerShell 5+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InformationRecord {
    /// `MessageData`: a string for Write-Information, a HostInformationMessage object for
    /// Write-Host.
    pub message_data: Value,
    /// `Source` (`Write-Information`, `Write-Host`...).
    pub source: Option<String>,
    /// `TimeGenerated`.
    pub time_generated: Option<DateTime>,
    /// `Tags`.
    pub tags: Vec<String>,
    /// `User` (`DOMAIN\user`).
    pub user: Option<String>,
    /// `Computer`.
    pub computer: Option<String>,
    /// `ProcessId`.
    pub process_id: Option<u32>,
    /// `NativeThreadId`.
    pub native_thread_id: Option<u32>,
    /// `ManagedThreadId`.
    pub managed_thread_id: Option<u32>,
    /// The whole record as received (`Nil` for one built locally).
    pub value: Value,
}

impl InformationRecord {
    /// A record with a message and the given origin fields.
    pub fn new(message_data: impl Into<Value>, source: &str, time_generated: DateTime) -> Self {
        Self {
            message_data: message_data.into(),
            source: Some(source.to_owned()),
            time_generated: Some(time_generated),
            tags: Vec::new(),
            user: None,
            computer: None,
            process_id: None,
            native_thread_id: None,
            managed_thread_id: None,
            value: Value::Nil,
        }
    }

    /// The message as text (`MessageData`, or its `Message` property for Write-Host).
    pub fn message_text(&self) -> String {
        match self
            .message_data
            .as_object()
            .and_then(|o| o.property("Message"))
        {
            Some(m) if self.message_data.as_str().is_none() => m.display_text().into_owned(),
            _ => self.message_data.display_text().into_owned(),
        }
    }

    /// Reads the body.
    pub fn from_clixml(value: &Value) -> Result<Self, DecodeError> {
        let n = "INFORMATION_RECORD";
        let o = object(value, n)?;
        let u32_of = |name: &str| match opt(o, name).map(Value::primitive) {
            Some(Value::U32(v)) => Some(*v),
            Some(other) => other.as_i64().and_then(|v| u32::try_from(v).ok()),
            None => None,
        };
        Ok(Self {
            message_data: prop(o, n, "MessageData")?.clone(),
            source: opt_string(o, "Source"),
            time_generated: opt(o, "TimeGenerated")
                .and_then(Value::as_datetime)
                .cloned(),
            tags: string_list(opt(o, "Tags")),
            user: opt_string(o, "User"),
            computer: opt_string(o, "Computer"),
            process_id: u32_of("ProcessId"),
            native_thread_id: u32_of("NativeThreadId"),
            managed_thread_id: u32_of("ManagedThreadId"),
            value: value.clone(),
        })
    }

    /// The body, in the recorded property order (`R:test_psrp_merge_commands`).
    pub fn to_clixml(&self) -> Value {
        let text = |v: &Option<String>| nil_or(v.clone(), Value::String);
        let num = |v: Option<u32>| Value::U32(v.unwrap_or(0));
        ms(vec![
            p("MessageData", self.message_data.clone()),
            p("Source", text(&self.source)),
            p(
                "TimeGenerated",
                nil_or(self.time_generated.clone(), Value::DateTime),
            ),
            p(
                "Tags",
                Value::list(
                    &[STRING_LIST_TYPE, "System.Object"],
                    self.tags.iter().map(|t| Value::String(t.clone())).collect(),
                ),
            ),
            p("User", text(&self.user)),
            p("Computer", text(&self.computer)),
            p("ProcessId", num(self.process_id)),
            p("NativeThreadId", num(self.native_thread_id)),
            p("ManagedThreadId", num(self.managed_thread_id)),
        ])
    }

    /// The message to the client.
    pub fn encode(&self, rpid: Uuid, pid: Uuid) -> Message {
        to_client(MessageType::InformationRecord, rpid, pid, &self.to_clixml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml;

    const ENUM_TAIL: &str = "<T>System.Enum</T><T>System.ValueType</T><T>System.Object</T>";

    fn same_tree(value: &Value, expected: &str) {
        let actual = clixml::to_bytes(value);
        assert_eq!(
            xml::parse(&actual).unwrap(),
            xml::parse(expected.as_bytes()).unwrap(),
            "\nactual:   {}\nexpected: {expected}",
            String::from_utf8_lossy(&actual)
        );
    }

    fn rpid() -> Uuid {
        Uuid::from_u128(0x76056a84_51dc_4f24_9262_ca2a55464b2b)
    }

    #[test]
    fn session_capability_matches_wire_facts() {
        let message = SessionCapability::default().encode(Destination::Server, rpid());
        assert_eq!(
            message.data,
            concat!(
                r#"<Obj RefId="0"><MS><Version N="protocolversion">2.3</Version>"#,
                r#"<Version N="PSVersion">2.0</Version>"#,
                r#"<Version N="SerializationVersion">1.1.0.1</Version></MS></Obj>"#
            )
            .as_bytes()
        );
        let server = SessionCapability::default().encode(Destination::Client, Uuid::nil());
        assert!(server.data.starts_with(UTF8_BOM));
        let back = SessionCapability::decode(&server).unwrap();
        assert_eq!(back.protocol(), Some(ProtocolVersion::V2_3));
        assert_eq!(
            SessionCapability::decode(&InitRunspacePool::default().encode(rpid())),
            Err(DecodeError::WrongType {
                expected: MessageType::SessionCapability,
                got: MessageType::InitRunspacePool
            })
        );
    }

    #[test]
    fn init_runspace_pool_matches_wire_facts() {
        let init = InitRunspacePool::default();
        let expected = format!(
            concat!(
                r#"<Obj RefId="0"><MS><I32 N="MinRunspaces">1</I32><I32 N="MaxRunspaces">1</I32>"#,
                r#"<Obj N="PSThreadOptions" RefId="1"><TN RefId="0"><T>System.Management.Automation.Runspaces.PSThreadOptions</T>{tail}</TN><ToString>Default</ToString><I32>0</I32></Obj>"#,
                r#"<Obj N="ApartmentState" RefId="2"><TN RefId="1"><T>System.Management.Automation.Runspaces.ApartmentState</T>{tail}</TN><ToString>UNKNOWN</ToString><I32>2</I32></Obj>"#,
                r#"<Obj N="HostInfo" RefId="3"><MS><B N="_isHostNull">true</B><B N="_isHostUINull">true</B><B N="_isHostRawUINull">true</B><B N="_useRunspaceHost">true</B></MS></Obj>"#,
                r#"<Nil N="ApplicationArguments" /></MS></Obj>"#
            ),
            tail = ENUM_TAIL
        );
        same_tree(&init.to_clixml(), &expected);
        let with_args = InitRunspacePool {
            max_runspaces: 5,
            application_arguments: Some(primitive_dictionary(vec![(
                "test_var".into(),
                Value::from("abc"),
            )])),
            ..InitRunspacePool::default()
        };
        let decoded = InitRunspacePool::decode(&with_args.encode(rpid())).unwrap();
        assert_eq!(decoded, with_args);
        let args = decoded.application_arguments.unwrap();
        assert_eq!(
            args.as_object()
                .unwrap()
                .dict_get("test_var")
                .unwrap()
                .as_str(),
            Some("abc")
        );
    }

    fn merge(name: &str, text: &str, value: i32, first: bool) -> String {
        if first {
            format!(
                r#"<Obj N="{name}" RefId="{{R}}"><TN RefId="3"><T>System.Management.Automation.Runspaces.PipelineResultTypes</T>{ENUM_TAIL}</TN><ToString>{text}</ToString><I32>{value}</I32></Obj>"#
            )
        } else {
            format!(
                r#"<Obj N="{name}" RefId="{{R}}"><TNRef RefId="3" /><ToString>{text}</ToString><I32>{value}</I32></Obj>"#
            )
        }
    }

    #[test]
    fn create_pipeline_matches_wire_facts_for_protocol_2_3() {
        let pipeline = CreatePipeline::script("SCRIPT", ProtocolVersion::V2_3);
        let list_tn =
            format!(r#"<TN RefId="2"><T>{PSOBJECT_LIST_TYPE}</T><T>System.Object</T></TN>"#);
        let mut cmd = String::from(
            r#"<Obj RefId="6"><MS><S N="Cmd">SCRIPT</S><B N="IsScript">true</B><Nil N="UseLocalScope" />"#,
        );
        cmd += &merge("MergeMyResult", "None", 0, true).replace("{R}", "7");
        cmd += &merge("MergeToResult", "None", 0, false).replace("{R}", "8");
        cmd += &merge("MergePreviousResults", "None", 0, false).replace("{R}", "9");
        cmd += r#"<Obj N="Args" RefId="10"><TNRef RefId="2" /><LST /></Obj>"#;
        for (i, name) in [
            "MergeError",
            "MergeWarning",
            "MergeVerbose",
            "MergeDebug",
            "MergeInformation",
        ]
        .iter()
        .enumerate()
        {
            cmd += &merge(name, "None", 0, false).replace("{R}", &(11 + i).to_string());
        }
        cmd += "</MS></Obj>";
        let expected = format!(
            concat!(
                r#"<Obj RefId="0"><MS><B N="NoInput">true</B>"#,
                r#"<Obj N="ApartmentState" RefId="1"><TN RefId="0"><T>System.Management.Automation.Runspaces.ApartmentState</T>{tail}</TN><ToString>UNKNOWN</ToString><I32>2</I32></Obj>"#,
                r#"<Obj N="RemoteStreamOptions" RefId="2"><TN RefId="1"><T>System.Management.Automation.Runspaces.RemoteStreamOptions</T>{tail}</TN><ToString>AddInvocationInfo</ToString><I32>15</I32></Obj>"#,
                r#"<B N="AddToHistory">false</B>"#,
                r#"<Obj N="HostInfo" RefId="3"><MS><B N="_isHostNull">true</B><B N="_isHostUINull">true</B><B N="_isHostRawUINull">true</B><B N="_useRunspaceHost">true</B></MS></Obj>"#,
                r#"<Obj N="PowerShell" RefId="4"><MS><B N="IsNested">false</B><Nil N="ExtraCmds" />"#,
                r#"<Obj N="Cmds" RefId="5">{list_tn}<LST>{cmd}</LST></Obj>"#,
                r#"<Nil N="History" /><B N="RedirectShellErrorOutputPipe">false</B></MS></Obj>"#,
                r#"<B N="IsNested">false</B></MS></Obj>"#
            ),
            tail = ENUM_TAIL,
            list_tn = list_tn,
            cmd = cmd
        );
        same_tree(&pipeline.to_clixml(), &expected);
        let pid = Uuid::from_u128(7);
        let message = pipeline.encode(rpid(), pid);
        assert_eq!(
            (message.destination, message.pid),
            (Destination::Server, pid)
        );
        assert_eq!(CreatePipeline::decode(&message).unwrap(), pipeline);
    }

    #[test]
    fn command_merge_fields_follow_protocol_version() {
        let names = |c: &Command| -> Vec<String> {
            c.to_clixml()
                .as_object()
                .unwrap()
                .extended
                .iter()
                .map(|p| p.name.clone())
                .filter(|n| n.starts_with("Merge"))
                .collect()
        };
        let base = ["MergeMyResult", "MergeToResult", "MergePreviousResults"];
        assert_eq!(names(&Command::script("x", ProtocolVersion::V2_1)), base);
        let v22 = names(&Command::script("x", ProtocolVersion::V2_2));
        assert_eq!(
            v22[3..],
            ["MergeError", "MergeWarning", "MergeVerbose", "MergeDebug"]
        );
        let v23 = names(&Command::script("x", ProtocolVersion::V2_3));
        assert_eq!(v23.last().map(String::as_str), Some("MergeInformation"));
        assert_eq!(v23.len(), 8);
    }

    #[test]
    fn arguments_and_statements_round_trip() {
        let get = Command::cmdlet("Get-Item", ProtocolVersion::V2_3)
            .with_parameter("Path", "C:\\_x")
            .with_argument(true);
        let out = Command::cmdlet("Out-String", ProtocolVersion::V2_3);
        let mut pipeline = CreatePipeline::new(vec![]);
        pipeline.pipeline = PowerShellPipeline::from_statements(vec![vec![get.clone()], vec![out]]);
        let value = pipeline.to_clixml();
        let text = String::from_utf8(clixml::to_bytes(&value)).unwrap();
        assert!(
            text.contains(r#"<S N="N">Path</S><S N="V">C:\_x005F_x</S>"#),
            "{text}"
        );
        assert!(text.contains(r#"<Nil N="N"/><B N="V">true</B>"#), "{text}");
        let back = CreatePipeline::from_clixml(&value).unwrap();
        assert_eq!(back, pipeline);
        assert_eq!(back.pipeline.commands, vec![get]);
        assert_eq!(back.pipeline.extra_commands.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            back.pipeline.commands[0].arguments[0].value.as_str(),
            Some("C:\\_x")
        );
    }

    #[test]
    fn pool_state_with_error_round_trips() {
        let state = RunspacePoolStateMessage {
            state: RunspacePoolState::Broken,
            error: Some(ErrorRecord::runtime_exception("module failed")),
        };
        let message = state.encode(rpid());
        assert_eq!(message.destination, Destination::Client);
        assert!(message.data.starts_with(UTF8_BOM));
        let PsrpMessage::RunspacePoolState(back) = PsrpMessage::decode(&message).unwrap() else {
            panic!("wrong variant");
        };
        assert_eq!(back.state, RunspacePoolState::Broken);
        let error = back.error.unwrap();
        assert_eq!(error.message, "module failed");
        assert_eq!(error.category_name(), Some("OperationStopped"));
        assert_eq!(error.reason.as_deref(), Some("RuntimeException"));
        assert_eq!(
            error.exception_type_names.first().map(String::as_str),
            Some("System.Management.Automation.RuntimeException")
        );
        assert_eq!(error.exception_message.as_deref(), Some("module failed"));
        assert_eq!(error.target_object, Some(Value::from("module failed")));
        let unknown =
            clixml::from_bytes(br#"<Obj RefId="0"><MS><I32 N="RunspaceState">42</I32></MS></Obj>"#)
                .unwrap();
        assert_eq!(
            RunspacePoolStateMessage::from_clixml(&unknown),
            Err(DecodeError::UnknownEnumValue {
                enumeration: "RunspacePoolState",
                value: 42
            })
        );
    }

    #[test]
    fn failed_pipeline_state_reads_error_details() {
        let doc = concat!(
            r#"<Obj RefId="0"><MS><I32 N="PipelineState">5</I32>"#,
            r#"<Obj N="ExceptionAsErrorRecord" RefId="1"><TN RefId="0"><T>System.Management.Automation.ErrorRecord</T><T>System.Object</T></TN><ToString>oops_x000D__x000A_more</ToString><MS>"#,
            r#"<Obj N="Exception" RefId="2"><TN RefId="1"><T>System.Management.Automation.RuntimeException</T><T>System.Exception</T><T>System.Object</T></TN><ToString>System.Management.Automation.RuntimeException: oops</ToString><Props><S N="Message">oops</S></Props></Obj>"#,
            r#"<S N="FullyQualifiedErrorId">oops</S>"#,
            r#"<Obj N="InvocationInfo" RefId="3"><TN RefId="2"><T>System.Management.Automation.InvocationInfo</T><T>System.Object</T></TN><ToString>System.Management.Automation.InvocationInfo</ToString><Props><Nil N="MyCommand" /><I32 N="ScriptLineNumber">80</I32><S N="PositionMessage">At line:80 char:1</S></Props></Obj>"#,
            r#"<I32 N="ErrorCategory_Category">14</I32><S N="ErrorCategory_Activity"></S><S N="ErrorCategory_Reason">RuntimeException</S><S N="ErrorCategory_TargetType">String</S>"#,
            r#"<B N="SerializeExtendedInfo">false</B><S N="ErrorDetails_ScriptStackTrace">at &lt;ScriptBlock&gt;, &lt;No file&gt;: line 80</S>"#,
            r#"</MS></Obj></MS></Obj>"#
        );
        let message = Message::new(
            Destination::Client,
            MessageType::PipelineState,
            rpid(),
            Uuid::from_u128(9),
            doc.as_bytes().to_vec(),
        );
        let state = PipelineStateMessage::decode(&message).unwrap();
        assert_eq!(state.state, PsInvocationState::Failed);
        let error = state.error.unwrap();
        assert_eq!(error.message, "oops\r\nmore");
        assert_eq!(error.fully_qualified_error_id, "oops");
        assert_eq!(error.activity.as_deref(), Some(""));
        assert_eq!(error.target_type.as_deref(), Some("String"));
        assert_eq!(error.target_name, None);
        let info = error.invocation.unwrap();
        assert_eq!(info.script_line_number, Some(80));
        assert_eq!(info.position_message.as_deref(), Some("At line:80 char:1"));
        assert_eq!(info.command_name, None);
        assert_eq!(
            error.script_stack_trace.as_deref(),
            Some("at <ScriptBlock>, <No file>: line 80")
        );
    }

    #[test]
    fn error_record_with_invocation_info_shares_collections() {
        let record = ErrorRecord {
            message: "error stream".into(),
            write_error_stream: Some(true),
            ps_message_details: true,
            serialize_extended_info: true,
            invocation: Some(InvocationInfo {
                my_command: Some("Write-Error 'error stream'".into()),
                command_origin: Some(CommandOrigin::Internal),
                script_line_number: Some(4),
                unbound_arguments: vec![Value::from("x")],
                ..InvocationInfo::default()
            }),
            pipeline_iteration_info: vec![0, 0],
            ..ErrorRecord::runtime_exception("error stream")
        };
        let text = String::from_utf8(clixml::to_bytes(&record.to_clixml())).unwrap();
        assert!(
            text.contains(r#"<Obj N="InvocationInfo" RefId="3">"#),
            "{text}"
        );
        assert!(
            text.contains(r#"<Ref N="InvocationInfo_BoundParameters" RefId="4"/>"#),
            "{text}"
        );
        assert!(
            text.contains(r#"<Ref N="InvocationInfo_UnboundArguments" RefId="5"/>"#),
            "{text}"
        );
        assert!(
            text.ends_with(r#"<Nil N="PSMessageDetails"/></MS></Obj>"#),
            "{text}"
        );
        let back = ErrorRecord::decode(&record.encode(rpid(), Uuid::from_u128(1))).unwrap();
        let info = back.invocation.clone().unwrap();
        assert_eq!(
            info.my_command.as_deref(),
            Some("Write-Error 'error stream'")
        );
        assert_eq!(info.script_line_number, Some(4));
        assert_eq!(info.unbound_arguments, vec![Value::from("x")]);
        assert_eq!(back.pipeline_iteration_info, vec![0, 0]);
        assert_eq!(back.write_error_stream, Some(true));
        // Decoding keeps the exception object as received.
        assert!(back.exception_object.is_some());
        assert_eq!(back.exception_type_names, record.exception_type_names);
        assert_eq!(back.category_message, record.category_message);
        assert!(back.ps_message_details && back.serialize_extended_info);
    }

    #[test]
    fn informational_records_round_trip() {
        let info = InvocationInfo {
            command_name: Some("Get-Thing".into()),
            script_line_number: Some(3),
            position_message: Some("At line:3 char:1".into()),
            ..InvocationInfo::default()
        };
        let record = InformationalRecord {
            invocation: Some(info),
            ..InformationalRecord::new(InformationalKind::Verbose, "verbose stream")
        };
        let message = record.encode(rpid(), Uuid::from_u128(2));
        assert_eq!(message.message_type, MessageType::VerboseRecord);
        let PsrpMessage::VerboseRecord(back) = PsrpMessage::decode(&message).unwrap() else {
            panic!("wrong variant");
        };
        assert_eq!(back.kind, Some(InformationalKind::Verbose));
        assert_eq!(back.message, "verbose stream");
        let back_info = back.invocation.unwrap();
        assert_eq!(back_info.command_name.as_deref(), Some("Get-Thing"));
        assert_eq!(back_info.script_line_number, Some(3));
        let plain = InformationalRecord::new(InformationalKind::Warning, "careful");
        same_tree(
            &plain.to_clixml(),
            concat!(
                r#"<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.WarningRecord</T><T>System.Management.Automation.InformationalRecord</T><T>System.Object</T></TN>"#,
                r#"<ToString>careful</ToString><MS><S N="InformationalRecord_Message">careful</S>"#,
                r#"<B N="InformationalRecord_SerializeInvocationInfo">false</B></MS></Obj>"#
            ),
        );
    }

    #[test]
    fn progress_record_matches_recorded_shape() {
        let record = ProgressRecord::preparing_modules();
        same_tree(
            &record.to_clixml(),
            &format!(
                concat!(
                    r#"<Obj RefId="0"><MS><S N="Activity">Preparing modules for first use.</S><I32 N="ActivityId">0</I32>"#,
                    r#"<S N="StatusDescription"> </S><Nil N="CurrentOperation" /><I32 N="ParentActivityId">-1</I32>"#,
                    r#"<I32 N="PercentComplete">-1</I32><Obj N="Type" RefId="1"><TN RefId="0"><T>System.Management.Automation.ProgressRecordType</T>{}</TN>"#,
                    r#"<ToString>Completed</ToString><I32>1</I32></Obj><I32 N="SecondsRemaining">-1</I32></MS></Obj>"#
                ),
                ENUM_TAIL
            ),
        );
        let back = ProgressRecord::decode(&record.encode(rpid(), Uuid::from_u128(3))).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn information_record_round_trips() {
        let mut record = InformationRecord::new(
            "information stream",
            "Write-Information",
            DateTime::from_text("2018-06-13T23:46:28.00516+00:00"),
        );
        record.tags = vec!["a".into()];
        record.user = Some("HOST\\user".into());
        record.process_id = Some(2636);
        record.native_thread_id = Some(2840);
        record.managed_thread_id = Some(7);
        let back = InformationRecord::decode(&record.encode(rpid(), Uuid::from_u128(4))).unwrap();
        assert_eq!(back.message_text(), "information stream");
        assert_eq!(back.tags, ["a"]);
        assert_eq!(back.process_id, Some(2636));
        assert_eq!(back.computer, None);
        assert_eq!(
            InformationRecord {
                value: Value::Nil,
                ..back
            },
            record
        );
    }

    #[test]
    fn application_private_data_carries_the_version_table() {
        let table = PsVersionTable::windows_powershell_5_1();
        let data = ApplicationPrivateData::from_version_table(table.clone());
        let back = ApplicationPrivateData::decode(&data.encode(rpid())).unwrap();
        assert_eq!(back.version_table.as_ref(), Some(&table));
        let v = back.version_table.unwrap();
        assert_eq!(v.ps_version.unwrap().major_minor(), Some((5, 1)));
        assert_eq!(v.ps_compatible_versions.len(), 6);
        let text = String::from_utf8(clixml::to_bytes(&data.to_clixml())).unwrap();
        assert!(text.starts_with(r#"<Obj RefId="0"><MS><Obj N="ApplicationPrivateData" RefId="1"><TN RefId="0"><T>System.Management.Automation.PSPrimitiveDictionary</T>"#));
        assert!(text.contains(r#"<Obj N="Value" RefId="2"><TNRef RefId="0"/><DCT><En><S N="Key">PSVersion</S><Version N="Value">5.1.14393.2248</Version></En>"#));
    }

    #[test]
    fn pool_messages_and_host_calls_round_trip() {
        let avail = RunspaceAvailability {
            response: Availability::Available(5),
            call_id: 2,
        };
        let text = String::from_utf8(clixml::to_bytes(&avail.to_clixml())).unwrap();
        assert!(text.contains(r#"<I32 N="SetMinMaxRunspacesResponse">5</I32>"#));
        assert_eq!(
            RunspaceAvailability::decode(&avail.encode(rpid())).unwrap(),
            avail
        );
        let set = SetMaxRunspaces {
            max_runspaces: 5,
            call_id: 1,
        };
        assert_eq!(SetMaxRunspaces::decode(&set.encode(rpid())).unwrap(), set);
        let connect = ConnectRunspacePool::default();
        assert_eq!(clixml::to_bytes(&connect.to_clixml()), b"<S/>");
        assert_eq!(
            ConnectRunspacePool::decode(&connect.encode(rpid())).unwrap(),
            connect
        );
        let call = HostCall {
            call_id: -100,
            method_id: 6,
            method_name: "SetShouldExit".into(),
            parameters: vec![Value::I32(1)],
        };
        let message = call.encode(rpid(), Some(Uuid::from_u128(5)));
        assert_eq!(message.message_type, MessageType::PipelineHostCall);
        assert_eq!(HostCall::decode(&message).unwrap(), call);
        let response = HostResponse {
            call_id: 1,
            method_id: 11,
            method_name: "ReadLine".into(),
            result: Some(Value::from("typed")),
            error: None,
        };
        let message = response.encode(rpid(), None);
        assert_eq!(message.message_type, MessageType::RunspacePoolHostResponse);
        assert_eq!(HostResponse::decode(&message).unwrap(), response);
    }

    #[test]
    fn dispatch_handles_empty_output_and_unknown_types() {
        let pid = Uuid::from_u128(8);
        assert_eq!(
            PsrpMessage::decode(&end_of_pipeline_input(rpid(), pid)).unwrap(),
            PsrpMessage::EndOfPipelineInput
        );
        let output = PipelineOutput {
            value: Value::from("output stream"),
        };
        let message = output.encode(rpid(), pid);
        assert_eq!(message.data, b"\xEF\xBB\xBF<S>output stream</S>");
        assert_eq!(
            PsrpMessage::decode(&message).unwrap(),
            PsrpMessage::PipelineOutput(output)
        );
        let odd = Message::new(
            Destination::Client,
            MessageType::Unknown(0x0004_2000),
            rpid(),
            pid,
            b"<junk".to_vec(),
        );
        let decoded = PsrpMessage::decode(&odd).unwrap();
        assert_eq!(decoded.message_type(), MessageType::Unknown(0x0004_2000));
        let bad = Message::new(
            Destination::Client,
            MessageType::PipelineOutput,
            rpid(),
            pid,
            b"<Weird/>".to_vec(),
        );
        assert_eq!(
            PsrpMessage::decode(&bad),
            Err(DecodeError::Clixml(ClixmlError::UnknownElement(
                "Weird".into()
            )))
        );
    }
}
