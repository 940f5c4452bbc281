//! psfleet-sim: a simulated Windows fleet. Real WinRM servers on loopback addresses
//! (127.0.0.0/8 only) whose hosts behave as their profile class says, failures included.
//!
//! - [`host`]: one host's settings, resolved from a profile class;
//! - [`service`]: the WS-Man service of one host (shells, quotas, WinRS, PSRP), clock-free.

pub mod host;
pub mod powershell;
pub mod service;
