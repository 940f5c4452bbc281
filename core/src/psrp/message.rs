//! PSRP messages (MS-PSRP 2.2.1): a 40-byte little-endian header and CLIXML data.
//!
//! ```text
//! 0            4            8      24     40
//! Destination  MessageType  RPID   PID    data...
//! ```
//!
//! RPID and PID are GUIDs in .NET `ToByteArray` order (`Uuid::to_bytes_le`). Recordings
//! made before pypsrp 0.3.1 carry them in the other order and Windows echoed them back
//! unchanged (wire-facts 4.2), so decoding never interprets them beyond reading 16 bytes.

use uuid::Uuid;

/// Size of the message header (MS-PSRP 2.2.1).
pub const MESSAGE_HEADER_LEN: usize = 40;

/// The UTF-8 byte-order mark Windows puts before the CLIXML of every message it sends
/// (`R:test_psrp_open_runspace`).
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Who a message is for (MS-PSRP 2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// 0x00000001: the message goes to the client (sent by the server).
    Client,
    /// 0x00000002: the message goes to the server (sent by the client).
    Server,
    /// Any other value.
    Unknown(u32),
}

impl Destination {
    /// The wire value.
    pub fn value(self) -> u32 {
        match self {
            Self::Client => 1,
            Self::Server => 2,
            Self::Unknown(v) => v,
        }
    }

    /// The destination for a wire value.
    pub fn from_value(value: u32) -> Self {
        match value {
            1 => Self::Client,
            2 => Self::Server,
            v => Self::Unknown(v),
        }
    }
}

macro_rules! message_types {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// PSRP message types (MS-PSRP 2.2.1; values from wire-facts 4.3).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $($(#[$doc])* $name,)*
            /// A value not defined by MS-PSRP.
            Unknown(u32),
        }

        impl MessageType {
            /// Every defined message type, in numeric order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$name,)*];

            /// The wire value.
            pub fn value(self) -> u32 {
                match self {
                    $(Self::$name => $value,)*
                    Self::Unknown(v) => v,
                }
            }

            /// The message type for a wire value.
            pub fn from_value(value: u32) -> Self {
                match value {
                    $($value => Self::$name,)*
                    v => Self::Unknown(v),
                }
            }
        }
    };
}

message_types! {
    /// SESSION_CAPABILITY, both directions (MS-PSRP 2.2.2.1).
    SessionCapability = 0x0001_0002,
    /// INIT_RUNSPACEPOOL (2.2.2.2).
    InitRunspacePool = 0x0001_0004,
    /// PUBLIC_KEY (2.2.2.3).
    PublicKey = 0x0001_0005,
    /// ENCRYPTED_SESSION_KEY (2.2.2.4).
    EncryptedSessionKey = 0x0001_0006,
    /// PUBLIC_KEY_REQUEST (2.2.2.5).
    PublicKeyRequest = 0x0001_0007,
    /// CONNECT_RUNSPACEPOOL (2.2.2.29).
    ConnectRunspacePool = 0x0001_0008,
    /// SET_MAX_RUNSPACES (2.2.2.6).
    SetMaxRunspaces = 0x0002_1002,
    /// SET_MIN_RUNSPACES (2.2.2.7).
    SetMinRunspaces = 0x0002_1003,
    /// RUNSPACE_AVAILABILITY (2.2.2.8).
    RunspaceAvailability = 0x0002_1004,
    /// RUNSPACEPOOL_STATE (2.2.2.9).
    RunspacePoolState = 0x0002_1005,
    /// CREATE_PIPELINE (2.2.2.10).
    CreatePipeline = 0x0002_1006,
    /// GET_AVAILABLE_RUNSPACES (2.2.2.11).
    GetAvailableRunspaces = 0x0002_1007,
    /// USER_EVENT (2.2.2.12).
    UserEvent = 0x0002_1008,
    /// APPLICATION_PRIVATE_DATA (2.2.2.13).
    ApplicationPrivateData = 0x0002_1009,
    /// GET_COMMAND_METADATA (2.2.2.14).
    GetCommandMetadata = 0x0002_100A,
    /// RUNSPACEPOOL_INIT_DATA (2.2.2.30).
    RunspacePoolInitData = 0x0002_100B,
    /// RESET_RUNSPACE_STATE (2.2.2.31).
    ResetRunspaceState = 0x0002_100C,
    /// RUNSPACEPOOL_HOST_CALL (2.2.2.15).
    RunspacePoolHostCall = 0x0002_1100,
    /// RUNSPACEPOOL_HOST_RESPONSE (2.2.2.16).
    RunspacePoolHostResponse = 0x0002_1101,
    /// PIPELINE_INPUT (2.2.2.17).
    PipelineInput = 0x0004_1002,
    /// END_OF_PIPELINE_INPUT (2.2.2.18).
    EndOfPipelineInput = 0x0004_1003,
    /// PIPELINE_OUTPUT (2.2.2.19).
    PipelineOutput = 0x0004_1004,
    /// ERROR_RECORD (2.2.2.20).
    ErrorRecord = 0x0004_1005,
    /// PIPELINE_STATE (2.2.2.21).
    PipelineState = 0x0004_1006,
    /// DEBUG_RECORD (2.2.2.22).
    DebugRecord = 0x0004_1007,
    /// VERBOSE_RECORD (2.2.2.23).
    VerboseRecord = 0x0004_1008,
    /// WARNING_RECORD (2.2.2.24).
    WarningRecord = 0x0004_1009,
    /// PROGRESS_RECORD (2.2.2.25).
    ProgressRecord = 0x0004_1010,
    /// INFORMATION_RECORD (2.2.2.26).
    InformationRecord = 0x0004_1011,
    /// PIPELINE_HOST_CALL (2.2.2.27).
    PipelineHostCall = 0x0004_1100,
    /// PIPELINE_HOST_RESPONSE (2.2.2.28).
    PipelineHostResponse = 0x0004_1101,
}

/// A PSRP message: header fields and the raw data (CLIXML, possibly BOM-prefixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who the message is for.
    pub destination: Destination,
    /// What the data means.
    pub message_type: MessageType,
    /// Runspace pool id (equals the WS-Man ShellId).
    pub rpid: Uuid,
    /// Pipeline id (equals the WS-Man CommandId); nil for pool messages.
    pub pid: Uuid,
    /// The message data, normally UTF-8 CLIXML.
    pub data: Vec<u8>,
}

/// Why message bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Fewer than 40 bytes.
    #[error("message is {0} bytes, shorter than the 40-byte header")]
    Truncated(usize),
}

impl Message {
    /// A message with the given fields.
    pub fn new(
        destination: Destination,
        message_type: MessageType,
        rpid: Uuid,
        pid: Uuid,
        data: Vec<u8>,
    ) -> Self {
        Self {
            destination,
            message_type,
            rpid,
            pid,
            data,
        }
    }

    /// Size of the encoded message.
    pub fn encoded_len(&self) -> usize {
        MESSAGE_HEADER_LEN + self.data.len()
    }

    /// The wire form: header then data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.destination.value().to_le_bytes());
        out.extend_from_slice(&self.message_type.value().to_le_bytes());
        out.extend_from_slice(&self.rpid.to_bytes_le());
        out.extend_from_slice(&self.pid.to_bytes_le());
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads a reassembled message.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let Some((header, data)) = bytes.split_first_chunk::<MESSAGE_HEADER_LEN>() else {
            return Err(MessageError::Truncated(bytes.len()));
        };
        let (destination, rest) = header.split_at(4);
        let (message_type, rest) = rest.split_at(4);
        let (rpid, pid) = rest.split_at(16);
        Ok(Self {
            destination: Destination::from_value(u32::from_le_bytes(to_array(destination))),
            message_type: MessageType::from_value(u32::from_le_bytes(to_array(message_type))),
            rpid: Uuid::from_bytes_le(to_array(rpid)),
            pid: Uuid::from_bytes_le(to_array(pid)),
            data: data.to_vec(),
        })
    }

    /// The data without a leading UTF-8 byte-order mark.
    pub fn clixml(&self) -> &[u8] {
        self.data.strip_prefix(UTF8_BOM).unwrap_or(&self.data)
    }
}

/// Copies a slice whose length the caller fixed (split from the 40-byte header).
fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    if bytes.len() == N {
        out.copy_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_with_dotnet_guid_order() {
        let rpid = Uuid::parse_str("76056a84-51dc-4f24-9262-ca2a55464b2b").unwrap();
        let message = Message::new(
            Destination::Server,
            MessageType::SessionCapability,
            rpid,
            Uuid::nil(),
            b"<Obj RefId=\"0\"/>".to_vec(),
        );
        let bytes = message.encode();
        assert_eq!(bytes.len(), 40 + 16);
        assert_eq!(&bytes[..8], &[2, 0, 0, 0, 0x02, 0, 0x01, 0]);
        // R:test_psrp_open_runspace: ShellId 76056A84-51DC-... is written 84 6A 05 76 DC 51 24 4F.
        assert_eq!(
            &bytes[8..16],
            &[0x84, 0x6a, 0x05, 0x76, 0xdc, 0x51, 0x24, 0x4f]
        );
        assert_eq!(Message::decode(&bytes).unwrap(), message);
    }

    #[test]
    fn decodes_unknown_values_and_strips_bom() {
        let mut bytes = vec![7, 0, 0, 0, 0x99, 0x99, 0, 0];
        bytes.extend_from_slice(&[0xab; 32]);
        bytes.extend_from_slice(b"\xEF\xBB\xBF<S>x</S>");
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(message.destination, Destination::Unknown(7));
        assert_eq!(message.message_type, MessageType::Unknown(0x9999));
        assert_eq!(message.clixml(), b"<S>x</S>");
        assert_eq!(message.encode(), bytes);
        assert_eq!(
            Message::decode(&bytes[..39]),
            Err(MessageError::Truncated(39))
        );
    }

    #[test]
    fn message_type_values_match_wire_facts() {
        assert_eq!(MessageType::ALL.len(), 31);
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_value(t.value()), *t);
        }
        assert_eq!(MessageType::ProgressRecord.value(), 0x0004_1010);
        assert_eq!(
            MessageType::from_value(0x0002_100A),
            MessageType::GetCommandMetadata
        );
    }
}
