//! psfleet-sim: a simulated Windows fleet. Real WinRM servers on loopback addresses
//! (127.0.0.0/8 only) whose hosts behave as their profile class says, failures included.
//!
//! - [`profile`]: the TOML profile format and the fleet plan (one [`host::HostSpec`] and one
//!   inventory row per host);
//! - [`host`]: one host's settings, resolved from a profile class;
//! - [`service`]: the WS-Man service of one host (shells, quotas, WinRS, PSRP), clock-free;
//! - [`rng`]: the seeded PRNG behind every random choice.

pub mod host;
pub mod profile;
pub mod rng;
pub mod service;
pub mod tls;
