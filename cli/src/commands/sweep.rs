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

/// Sweeps the selected hosts through the engine's fleet runner (a job that needs no shell).
pub fn sweep_fleet(
    connection: &ConnectionSettings,
    fleet: &FleetSettings,
    output: &OutputSettings,
    ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    crate::fleet_run::run_fleet(
        psfleet_engine::fleet::RunKind::Sweep,
        "psfleet sweep",
        connection,
        fleet,
        output,
        ctx,
    )
}
