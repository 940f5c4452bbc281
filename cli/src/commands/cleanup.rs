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

/// Deletes the leaked shells on every selected host through the engine's fleet runner:
/// those the state store records open, and those enumeration finds (owned by the same
/// user, never a shell of a job of this process). With `dry_run`, lists the shells the
/// store records open on those hosts and touches nothing (no host is contacted, so shells
/// the store does not know are not listed).
pub fn reap_shells(
    dry_run: bool,
    connection: &ConnectionSettings,
    fleet: &FleetSettings,
    output: &OutputSettings,
    ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    if !dry_run {
        return crate::fleet_run::run_fleet(
            psfleet_engine::fleet::RunKind::Cleanup { reap_unknown: true },
            "psfleet cleanup",
            connection,
            fleet,
            output,
            ctx,
        );
    }
    let loaded = crate::hosts::load(&fleet.select, connection)?;
    let state_dir = ctx.global.state_dir()?;
    let store = crate::fleet_run::open_store(state_dir)?;
    let mut shells = Vec::new();
    for host in &loaded.hosts {
        let mut names = vec![host.name.clone()];
        if let Some(psfleet_inventories::Address::Name(name)) = &host.address
            && !name.eq_ignore_ascii_case(&host.name)
        {
            names.push(name.clone());
        }
        for name in names {
            let open = store
                .open_shells_on(&name)
                .map_err(|e| CliError::state_dir(state_dir, &e))?;
            shells.extend(open);
        }
    }
    let mut text = String::new();
    for shell in &shells {
        text.push_str(&match output.output.value {
            crate::options::OutputFormat::Json => format!(
                "{}\n",
                serde_json::json!({
                    "host": shell.host,
                    "shell_id": shell.shell_id,
                    "run_id": shell.run_id.0,
                    "created": shell.created,
                })
            ),
            crate::options::OutputFormat::Text => format!(
                "{}  {}  run {}  created {}\n",
                shell.host, shell.shell_id, shell.run_id, shell.created
            ),
        });
    }
    ctx.sink.out(&text);
    if !ctx.quiet() {
        ctx.sink.err(&format!(
            "dry run: {} shell(s) recorded open on {} selected host(s); nothing was deleted \
             (without --dry-run, enumeration also finds shells the state store does not know)\n",
            shells.len(),
            loaded.hosts.len()
        ));
    }
    Ok(Exit::Success)
}
