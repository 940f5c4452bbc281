//! One module per command. Each has its clap `Args` and an `execute` that merges the
//! settings, validates them, and runs. Commands whose engine pieces are not in this build yet
//! validate everything they can and then call a clearly named function that returns
//! [`CliError::NotAvailable`](crate::exit::CliError::NotAvailable) (exit code 5): those are
//! the places to wire the engine in.

pub mod cleanup;
pub mod completions;
pub mod config;
pub mod demo;
pub mod diff;
pub mod doctor;
pub mod enter;
pub mod inventory;
pub mod report;
pub mod run;
pub mod runs;
pub mod sim;
pub mod sweep;

use crate::exit::CliError;

/// The error of a command whose engine pieces are not in this build.
pub fn not_available(command: &'static str, missing: &'static str) -> CliError {
    CliError::NotAvailable { command, missing }
}

/// Checks a host name given on the command line (`enter HOST`, `doctor HOST`): the
/// transport checks it fully (RFC 1123 or an IP address); this refuses what cannot be a
/// host at all, before anything else happens.
pub fn check_host_argument(host: &str) -> Result<(), CliError> {
    let host = host.trim();
    if host.is_empty() {
        return Err(CliError::usage("the host name is empty"));
    }
    if host.len() > 255 || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CliError::usage(format!(
            "{:?} is not a host name or address",
            host.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}
