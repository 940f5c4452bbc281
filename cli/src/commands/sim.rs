//! `psfleet sim`: a simulated Windows fleet on loopback addresses (docs/simulator.md).

use std::path::PathBuf;

use clap::Args;

use crate::cli::Context;
use crate::exit::{CliError, Exit};

/// `psfleet sim` options.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Number of hosts.
    #[arg(long)]
    pub hosts: usize,
    /// A built-in profile (healthy, mixed, bench) or a profile TOML file.
    #[arg(long, default_value = "healthy")]
    pub profile: String,
    /// Directory for the fleet's inventory, CA, accounts and stats.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `psfleet sim`.
pub fn execute(_args: SimArgs, _ctx: &Context<'_>) -> Result<Exit, CliError> {
    Err(super::not_available("sim", "the simulator's network layer"))
}
