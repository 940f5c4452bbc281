//! `psfleet doctor HOST`: a step-by-step diagnosis: name validity, DNS, TCP to 5985/5986,
//! TLS chain and name, Identify, offered schemes, authentication, configuration name,
//! quotas. Each step passes or names the documented reason (bucket) and the fix.

use clap::Args;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ConnectionArgs, HostInventoryArgs};
use crate::settings::{ConnectionSettings, Selection};

/// `psfleet doctor` options.
#[derive(Debug, Args)]
pub struct DoctorArgs {
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

/// Runs `psfleet doctor`.
pub fn execute(args: DoctorArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    super::check_host_argument(&args.host)?;
    let connection = ConnectionSettings::resolve(&args.connection, ctx.layers())?;
    let select = Selection::resolve(&args.inventory.select(), ctx.layers())?;
    diagnose(&args.host, &connection, &select, ctx)
}

/// Runs the diagnosis steps and prints each one's verdict; exits 0 when every step passes,
/// 2 when one fails.
///
/// Not in this build: it needs the transport's step-by-step pieces (`engine::target`,
/// `engine::tls`, `engine::ops`) and the inventory loader.
pub fn diagnose(
    _host: &str,
    _connection: &ConnectionSettings,
    _select: &Selection,
    _ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    Err(super::not_available(
        "doctor",
        "the transport's diagnosis steps",
    ))
}
