//! `psfleet cleanup`: delete shells left open on the hosts of an inventory: those the state
//! store recorded (leaked by a crashed or killed run) and, by enumeration, those it does not
//! know (owned by the same user).

use clap::Args;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ConnectionArgs, OutputArgs, ScheduleArgs, SelectArgs};
use crate::settings::{ConnectionSettings, FleetSettings, OutputSettings};

/// `psfleet cleanup` options.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// List the shells that would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Connection options.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The hosts.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Pace and bounds.
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `psfleet cleanup`.
pub fn execute(args: CleanupArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let connection = ConnectionSettings::resolve(&args.connection, ctx.layers())?;
    let fleet = FleetSettings::resolve_parts(&args.select, &args.schedule, None, ctx.layers())?;
    let output = OutputSettings::resolve(&args.output, ctx.layers())?;
    fleet.select.require_inventory()?;
    if fleet.resume.is_some() {
        return Err(CliError::usage(
            "cleanup does not resume runs; --resume does not apply",
        ));
    }
    ctx.global.state_dir()?;
    reap_shells(args.dry_run, &connection, &fleet, &output, ctx)
}

/// Enumerates and deletes the shells on every host through `crate::drive::drive`.
///
/// Not in this build: it needs the WinRM client's shell enumeration and delete
/// (`engine::ops`), the state store's open-shell records and the inventory loader.
pub fn reap_shells(
    _dry_run: bool,
    _connection: &ConnectionSettings,
    _fleet: &FleetSettings,
    _output: &OutputSettings,
    _ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    Err(super::not_available(
        "cleanup",
        "the WinRM client's shell enumeration and the state store",
    ))
}
