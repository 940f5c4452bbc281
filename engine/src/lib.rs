//! psfleet-engine: the async shell around `psfleet-core` (see docs/ARCHITECTURE.md).
//!
//! The WinRM client:
//! - [`target`]: endpoints, the Windows client's pre-send checks, name resolution;
//! - [`tls`]: rustls with certificate checks, skips, thumbprint pins and channel bindings;
//! - [`auth`]: NTLM, Negotiate (SPNEGO), Kerberos and CredSSP client security contexts over
//!   sspi, and the message sealer `psfleet_core::encryption` frames bodies with;
//! - [`credssp`]: CredSSP (TLS in the Authorization header, delegated credentials);
//! - [`kerberos`]: realm, KDC and SPN resolution and the KDC network client;
//! - [`ticket_cache`]: MIT FILE ticket caches as a Kerberos credential (no password);
//! - [`http`]: one authenticated HTTP/1.1 connection to one host, HTTP or HTTPS, Basic or
//!   SSPI, sealed or not;
//! - [`ops`]: the WinRM operations on one host (Identify, config, shells, cmd, PowerShell)
//!   driving the core state machines, with typed, classifiable errors;
//! - [`error`]: [`error::ClientError`], every way an operation fails, with its bucket;
//! - [`session`]: a runspace pool kept open for many pipelines, and the interactive loop
//!   of `psfleet enter` (Enter-PSSession);
//! - [`doctor`]: the step-by-step diagnosis of one host (`psfleet doctor`);
//!
//! Fleet scope:
//! - [`scheduler`]: fans jobs over hosts within the forks cap, rate limits, shell budgets,
//!   retries and deadlines ([`budget`] holds the per-host shell budgets, [`retry`] the
//!   back-off policy); docs/scheduling.md explains the choices;
//! - [`record`]: the per-host run record the journal, reports and resume share;
//! - [`journal`] (fsync'd, the truth), [`cache`] (sled: facts, open shells, run index) and
//!   [`store`], the one owner of both (docs/state.md);
//! - [`fleet`]: the runner the CLI calls: a job over every host of a plan on the scheduler,
//!   each host classified and recorded in the journal (docs/engine.md).

pub mod auth;
pub mod budget;
pub mod cache;
pub mod credssp;
pub mod doctor;
pub mod error;
pub mod fleet;
pub mod http;
pub mod journal;
pub mod kerberos;
pub mod limits;
pub mod ops;
pub mod record;
pub mod retry;
pub mod scheduler;
pub mod session;
pub mod store;
pub mod target;
pub mod ticket_cache;
pub mod tls;
