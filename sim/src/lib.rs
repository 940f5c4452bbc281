//! psfleet-sim: a simulated Windows fleet. Real WinRM servers on loopback addresses
//! (127.0.0.0/8 only) whose hosts behave as their profile class says, failures included.
//!
//! - [`auth_kerberos`]: the Kerberos (and SPNEGO) acceptor with keys from a keytab;
//! - [`client_cert`]: client-certificate authentication (mapping certificates to accounts);
//! - [`credssp`]: the CredSSP acceptor (TLS in the Authorization header, delegated
//!   credentials);
//! - [`host`]: one host's settings, resolved from a profile class;
//! - [`service`]: the WS-Man service of one host (shells, quotas, WinRS, PSRP), clock-free.

pub mod auth_kerberos;
pub mod client_cert;
pub mod credssp;
pub mod host;
pub mod powershell;
pub mod service;
