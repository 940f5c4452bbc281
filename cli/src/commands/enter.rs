//! `psfleet enter HOST`: an interactive PowerShell session on one host, as Enter-PSSession:
//! prompt `[host]: PS C:\>`, multi-line input, `exit` / `Exit-PSSession` to leave, Ctrl-C
//! stops the running pipeline without leaving the session.

use std::sync::Arc;

use clap::Args;
use psfleet_engine::error::ClientError;
use psfleet_engine::ops::HostClient;
use psfleet_engine::session::{SessionError, SessionSettings, run_interactive};

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

/// Opens a runspace pool on the host and runs the read-eval-print loop on the terminal
/// (docs/enter.md): exits 0 when the session ends normally, 2 when it could not open or
/// broke (the reason and its fix are printed).
pub fn enter_session(
    host: &str,
    connection: &ConnectionSettings,
    select: &Selection,
    ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    let one = super::doctor::one_host(host, connection, select, ctx)?;
    let runtime = super::doctor::runtime()?;
    let result = runtime.block_on(async {
        let interrupts = crate::drive::interrupt_signals()?;
        let client = one
            .endpoint()
            .map_err(ClientError::from)
            .and_then(|endpoint| HostClient::new(endpoint, Arc::new(one.options)));
        let client = match client {
            Ok(client) => match one.address {
                Some(address) => client.with_address(address),
                None => client,
            },
            Err(error) => return Ok(Err(SessionError::Open(error))),
        };
        let settings = SessionSettings {
            prompt_name: Some(host.trim().to_owned()),
            color: ctx.console.color(),
            ..SessionSettings::default()
        };
        let input = tokio::io::BufReader::new(tokio::io::stdin());
        Ok::<_, CliError>(
            run_interactive(client, settings, input, tokio::io::stdout(), interrupts).await,
        )
    });
    // A read of the terminal may still be pending; nothing waits for it.
    runtime.shutdown_background();
    match result? {
        Ok(info) => {
            if !info.shell_deleted
                && let Some(shell) = info.shell_id
            {
                ctx.sink.err(&format!(
                    "warning: the shell {shell} may be left open on {host}; `psfleet cleanup` reaps it\n"
                ));
            }
            Ok(Exit::Success)
        }
        Err(error) => {
            let mut text = format!("psfleet enter: {error}\n");
            if let Some(bucket) = error.bucket() {
                text.push_str(&format!(
                    "reason: {bucket}: {}\nfix: {}\n",
                    bucket.message(host, ""),
                    bucket.how_to_fix()
                ));
            }
            ctx.sink.err(&text);
            Ok(match error {
                SessionError::Open(_) | SessionError::Broken(_) => Exit::HostsFailed,
                _ => Exit::Internal,
            })
        }
    }
}
