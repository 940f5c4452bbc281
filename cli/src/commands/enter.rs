//! `psfleet enter HOST`: an interactive PowerShell session on one host, as Enter-PSSession:
//! prompt `[host]: PS C:\>`, multi-line input, `exit` / `Exit-PSSession` to leave, Ctrl-C
//! stops the running pipeline without leaving the session.

use clap::Args;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ConnectionArgs, HostInventoryArgs};
use crate::settings::{ConnectionSettings, Selection};

/// `psfleet enter` options.
#[derive(Debug, Args)]
pub struct EnterArgs {
    /// The host (a name from the inventory with -i, or any name or address).
    #[arg(value_name = "HOST")]
    pub host: String,
    /// An inventory to take the host's settings from (optional).
    #[command(flatten)]
    pub inventory: HostInventoryArgs,
    /// Connection options.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs `psfleet enter`.
pub fn execute(args: EnterArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    super::check_host_argument(&args.host)?;
    let connection = ConnectionSettings::resolve(&args.connection, ctx.layers())?;
    let select = Selection::resolve(&args.inventory.select(), ctx.layers())?;
    enter_session(&args.host, &connection, &select, ctx)
}

/// Opens a runspace pool on the host and runs the read-eval-print loop on the terminal.
///
/// Not in this build: it needs the WinRM client's runspace pool and pipelines
/// (`engine::ops`) and the inventory loader.
pub fn enter_session(
    _host: &str,
    _connection: &ConnectionSettings,
    _select: &Selection,
    _ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    Err(super::not_available(
        "enter",
        "the WinRM client's interactive runspace",
    ))
}
