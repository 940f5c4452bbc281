//! psfleet-engine: the async shell around `psfleet-core` (see docs/ARCHITECTURE.md).
//!
//! This slice holds the WinRM client transport over plain HTTP:
//! - [`auth`]: NTLM and Negotiate (SPNEGO) client security contexts over sspi, and the
//!   message sealer `psfleet_core::encryption` frames bodies with;
//! - [`http`]: one authenticated, message-encrypted HTTP/1.1 connection to one host;
//! - [`record`]: the per-host run record the journal, reports and resume share;
//! - [`scheduler`]: fans jobs over hosts within the forks cap, rate limits, shell budgets,
//!   retries and deadlines ([`budget`] holds the per-host shell budgets, [`retry`] the
//!   back-off policy); docs/scheduling.md explains the choices.

pub mod auth;
pub mod budget;
pub mod http;
pub mod record;
pub mod retry;
pub mod scheduler;
