//! `psfleet sweep`: reachability of every host without running anything: resolve, connect,
//! Identify, authenticate, and read the WinRM service configuration where the account may
//! (auth methods, AllowUnencrypted, CbtHardeningLevel, listeners, quotas).

use clap::Args;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ConnectionArgs, FleetArgs, OutputArgs};
use crate::settings::{ConnectionSettings, FleetSettings, OutputSettings};

/// `psfleet sweep` options.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Connection options.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Fleet options.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `psfleet sweep`.
pub fn execute(args: SweepArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let connection = ConnectionSettings::resolve(&args.connection, ctx.layers())?;
    let fleet = FleetSettings::resolve(&args.fleet, ctx.layers())?;
    let output = OutputSettings::resolve(&args.output, ctx.layers())?;
    fleet.select.require_inventory()?;
    ctx.global.state_dir()?;
    sweep_fleet(&connection, &fleet, &output, ctx)
}

/// Loads the inventory and sweeps it through `crate::drive::drive` with a job that needs no
/// shell (`shells_needed() == 0`).
///
/// Not in this build: it needs the inventory loader, the WinRM client's identify and config
/// Get (`engine::ops`), and the run journal.
pub fn sweep_fleet(
    _connection: &ConnectionSettings,
    _fleet: &FleetSettings,
    _output: &OutputSettings,
    _ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    Err(super::not_available(
        "sweep",
        "the WinRM client, the inventory loader and the run journal",
    ))
}
