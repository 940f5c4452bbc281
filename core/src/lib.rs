//! psfleet-core: the WinRM protocol, sans-IO.
//!
//! Pure functions and state machines over bytes: WS-Management envelopes and faults
//! ([`wsman`]), WinRS shells ([`winrs`]), PSRP fragments, messages, CLIXML and the
//! runspace-pool and pipeline state machines ([`psrp`]), and HTTP message-encryption
//! framing ([`encryption`]). No tokio, no sockets, no clock and no random ids: callers
//! pass time and an id generator in ([`ids`]).

pub mod encryption;
pub mod ids;
pub mod psrp;
pub mod winrs;
pub mod wsman;
pub mod xml;
