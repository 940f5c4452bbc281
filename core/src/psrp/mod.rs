//! PowerShell Remoting Protocol: fragments, messages, CLIXML, typed messages (MS-PSRP).
//!
//! Layers, bottom up:
//! - [`fragment`]: the 21-byte fragment header, splitting and reassembly (MS-PSRP 2.2.4);
//! - [`message`]: the 40-byte message header and message types (MS-PSRP 2.2.1);
//! - [`clixml`]: the CLIXML value model, deserializer and serializer (MS-PSRP 2.2.5);
//! - [`messages`]: one typed struct per message type, with decoders for all of them and
//!   encoders for what a client and a simulated server send (MS-PSRP 2.2.2, 2.2.3).

pub mod client;
pub mod clixml;
pub mod fragment;
pub mod message;
pub mod messages;

pub use fragment::{Defragmenter, DefragmenterLimits, Fragment, FragmentError, Fragmenter};
pub use message::{Destination, Message, MessageError, MessageType};
