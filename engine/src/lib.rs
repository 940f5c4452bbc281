//! psfleet-engine: the async shell around `psfleet-core` (see docs/ARCHITECTURE.md).
//!
//! This slice holds the WinRM client transport over plain HTTP:
//! - [`auth`]: NTLM and Negotiate (SPNEGO) client security contexts over sspi, and the
//!   message sealer `psfleet_core::encryption` frames bodies with;
//! - [`http`]: one authenticated, message-encrypted HTTP/1.1 connection to one host;
//! - [`record`]: the per-host run record the journal, reports and resume share.

pub mod auth;
pub mod cache;
pub mod http;
pub mod journal;
pub mod record;
pub mod store;
