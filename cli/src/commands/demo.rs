//! `psfleet demo`: start the built-in simulated fleet (the mixed profile), sweep it, run a
//! script on it, print the summary and the paths of the CSV and HTML reports. Nothing to
//! configure; under a minute on a 2-core machine.

use std::path::PathBuf;

use clap::Args;

use crate::cli::Context;
use crate::exit::{CliError, Exit};

/// Most hosts the demo starts (each is a loopback listener with two descriptors per
/// connection).
pub const MAX_DEMO_HOSTS: usize = 5_000;

/// `psfleet demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of simulated hosts.
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub hosts: usize,
    /// Simulator profile (healthy, mixed, bench, or a TOML file).
    #[arg(long, default_value = "mixed", value_name = "PROFILE")]
    pub profile: String,
    /// Seed of the simulated fleet (the same seed gives the same fleet) [default: random,
    /// printed].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Where to write the inventory, the reports and the state [default: a new directory
    /// under the state directory].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `psfleet demo`.
pub fn execute(args: DemoArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    if !(1..=MAX_DEMO_HOSTS).contains(&args.hosts) {
        return Err(CliError::usage(format!(
            "--hosts must be between 1 and {MAX_DEMO_HOSTS}"
        )));
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => ctx.global.state_dir()?.join("demo"),
    };
    run_demo(&args, &out, ctx)
}

/// Starts the fleet, sweeps it, runs the demo script, writes the reports.
///
/// Not in this build: it needs the simulator's fleet, the WinRM client, the journal and the
/// report writers.
pub fn run_demo(
    _args: &DemoArgs,
    _out: &std::path::Path,
    _ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    Err(super::not_available(
        "demo",
        "the simulator, the WinRM client and the reports",
    ))
}
