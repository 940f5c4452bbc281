//! PowerShell Remoting Protocol: fragments, messages, CLIXML, typed messages (MS-PSRP).
//!
//! Layers, bottom up:
//! - [`fragment`]: the 21-byte fragment header, splitting and reassembly (MS-PSRP 2.2.4);
//! - [`message`]: the 40-byte message header and message types (MS-PSRP 2.2.1);
//! - [`clixml`]: the CLIXML value model, reader and writer (MS-PSRP 2.2.5);
//! - [`messages`]: one typed struct per message type, with decoders for all of them and
//!   encoders for what a client and a simulated server send (MS-PSRP 2.2.2, 2.2.3).
//!
//! Client machines: [`client::ScriptRun`] (one script in a fresh pool, the Invoke-Command
//! path) and [`session::PsrpSession`] (one pool, many pipelines, Enter-PSSession); both
//! build their requests with the same pool wire.
//!
//! Receiving: base64-decode each `rsp:Stream` (or `creationXml`, `connectXml`...), feed
//! the bytes to one [`Defragmenter`] per sender, and decode what completes with
//! [`receive_blob`]. Sending: build a typed message, `encode` it to a [`Message`], split
//! it with a [`Fragmenter`] (size from [`fragment::max_fragment_size`]) and pack the
//! fragments into stream payloads with [`fragment::pack_fragments`].

pub mod client;
pub mod clixml;
pub mod fragment;
pub mod message;
pub mod messages;
pub mod session;

pub use clixml::{ClixmlError, PsObject, Value};
pub use fragment::{Defragmenter, DefragmenterLimits, Fragment, FragmentError, Fragmenter};
pub use message::{Destination, Message, MessageError, MessageType};
pub use messages::{DecodeError, PsrpMessage};

/// Any failure turning received bytes into typed messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PsrpError {
    /// Fragment framing was wrong.
    #[error(transparent)]
    Fragment(#[from] FragmentError),
    /// A reassembled message was too short for its header.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A message body was not what its type calls for.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Feeds one blob of fragments to `defragmenter` and decodes every message it completes,
/// returning each message (header and raw data) with its typed body.
pub fn receive_blob(
    defragmenter: &mut Defragmenter,
    blob: &[u8],
) -> Result<Vec<(Message, PsrpMessage)>, PsrpError> {
    let mut out = Vec::new();
    for raw in defragmenter.push_blob(blob)? {
        let message = Message::decode(&raw)?;
        let typed = PsrpMessage::decode(&message)?;
        out.push((message, typed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::messages::{CreatePipeline, InitRunspacePool, ProtocolVersion, SessionCapability};
    use super::*;
    use uuid::Uuid;

    #[test]
    fn sends_and_receives_through_every_layer() {
        let rpid = Uuid::from_u128(0x1234);
        let pid = Uuid::from_u128(0x5678);
        let script = "Get-Service | Select-Object -First 3\r\n# _x and 😀";
        let pipeline = CreatePipeline::script(script, ProtocolVersion::V2_3);
        let mut fragmenter = Fragmenter::new();
        let mut fragments = fragmenter.fragment_message(
            &SessionCapability::default().encode(Destination::Server, rpid),
            200,
        );
        fragments
            .extend(fragmenter.fragment_message(&InitRunspacePool::default().encode(rpid), 200));
        fragments.extend(fragmenter.fragment_message(&pipeline.encode(rpid, pid), 200));
        assert!(fragments.len() > 10);
        let blobs = fragment::pack_fragments(&fragments, 450);
        let mut defragmenter = Defragmenter::new();
        let mut received = Vec::new();
        for blob in &blobs {
            received.extend(receive_blob(&mut defragmenter, blob).unwrap());
        }
        assert_eq!(received.len(), 3);
        let (header, last) = received.pop().unwrap();
        assert_eq!((header.rpid, header.pid), (rpid, pid));
        let PsrpMessage::CreatePipeline(back) = last else {
            panic!("expected CREATE_PIPELINE, got {last:?}");
        };
        assert_eq!(back.pipeline.commands[0].command, script);
        assert!(matches!(received[0].1, PsrpMessage::SessionCapability(_)));
        assert_eq!(
            receive_blob(&mut defragmenter, &[0u8; 5]),
            Err(PsrpError::Fragment(FragmentError::TruncatedHeader {
                offset: 0,
                available: 5
            }))
        );
    }
}
