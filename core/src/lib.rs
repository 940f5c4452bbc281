//! psfleet-core: the WinRM protocol, sans-IO.
//!
//! Pure functions and state machines over bytes: WS-Management envelopes and faults
//! ([`wsman`]), WinRS shells ([`winrs`]), PSRP fragments, messages, CLIXML and the
//! runspace-pool and pipeline state machines ([`psrp`]), HTTP message-encryption framing
//! ([`encryption`]), the failure taxonomy ([`taxonomy`]), and a bounded DER reader for the
//! certificate fields authentication needs ([`der`]). No tokio, no sockets, no clock
//! and no random ids: callers pass time and an id generator in ([`ids`]).

pub mod der;
pub mod encryption;
pub mod ids;
pub mod psrp;
pub mod taxonomy;
pub mod winrs;
pub mod wsman;
pub mod xml;

// Fuzz-target bodies shared by `fuzz/` and the corpus replay test; not a supported API.
#[doc(hidden)]
pub mod fuzzing;
