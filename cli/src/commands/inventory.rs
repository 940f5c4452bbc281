//! `psfleet inventory list|check`: read inventories as `run` would, and show the hosts with
//! their effective settings (`list`) or only whether they are valid (`check`).

use clap::{Args, Subcommand};

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ConnectionArgs, OutputFormat, SelectArgs};
use crate::settings::{ConnectionSettings, Selection};

/// `psfleet inventory` subcommands.
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// List the hosts (after --limit) with their address, URL, authentication and groups.
    List(InventoryArgs),
    /// Check the inventories: every error with file and line, warnings, and a host count.
    Check(InventoryArgs),
}

/// Options of `inventory list` and `inventory check`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// The hosts.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Text table or one JSON object per host [default: text].
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// Connection defaults the hosts' settings start from (port, scheme, authentication).
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs `psfleet inventory ...`.
pub fn execute(command: InventoryCommand, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let (args, list) = match command {
        InventoryCommand::List(args) => (args, true),
        InventoryCommand::Check(args) => (args, false),
    };
    let select = Selection::resolve(&args.select, ctx.layers())?;
    select.require_inventory()?;
    let connection = ConnectionSettings::resolve(&args.connection, ctx.layers())?;
    load_and_show(
        list,
        &select,
        &connection,
        args.output.unwrap_or(OutputFormat::Text),
        ctx,
    )
}

/// Loads and resolves the inventories; prints the hosts (`list`) or a count (`check`).
///
/// Not in this build: it needs the inventory loader (`psfleet_inventories`).
pub fn load_and_show(
    _list: bool,
    _select: &Selection,
    _connection: &ConnectionSettings,
    _format: OutputFormat,
    _ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    Err(super::not_available("inventory", "the inventory loader"))
}
