//! psfleet-sim: a simulated Windows fleet. Real WinRM servers on loopback addresses
//! (127.0.0.0/8 only) whose hosts behave as their profile class says, failures included.
//!
//! - [`auth_kerberos`]: the Kerberos (and SPNEGO) acceptor with keys from a keytab;
//! - [`client_cert`]: client-certificate authentication (mapping certificates to accounts);
//! - [`credssp`]: the CredSSP acceptor (TLS in the Authorization header, delegated
//!   credentials);
//! - [`profile`]: the TOML profile format and the fleet plan (one [`host::HostSpec`] and one
//!   inventory row per host);
//! - [`host`]: one host's settings, resolved from a profile class;
//! - [`service`]: the WS-Man service of one host (shells, quotas, WinRS, PSRP), clock-free;
//! - [`fleet`]: start-up and shutdown of a whole fleet ([`fleet::Fleet::start`]);
//! - [`server`]: one host's HTTP(S) listener: http.sys and WinRM behaviour before the
//!   service (authentication, encryption, failures);
//! - [`auth`]: the sspi acceptors (NTLM, SPNEGO) and Basic;
//! - [`hostile`]: hostile listeners (huge, endless and trickled replies, redirections,
//!   garbage instead of TLS, endless challenges, DTDs, deep nesting) for the client's
//!   hardening tests;
//! - [`tls`]: the simulator CA and host certificates;
//! - [`outputs`]: the inventory, CA, accounts and stats files;
//! - [`stats`]: network-layer counters;
//! - [`rng`]: the seeded PRNG behind every random choice.

pub mod auth;
pub mod auth_kerberos;
pub mod client_cert;
pub mod credssp;
pub mod fleet;
pub mod host;
pub mod hostile;
pub mod outputs;
pub mod powershell;
pub mod profile;
pub mod rng;
pub mod server;
pub mod service;
pub mod stats;
pub mod tls;
