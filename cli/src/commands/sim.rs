//! `psfleet sim`: a simulated Windows fleet on loopback addresses (docs/simulator.md). The
//! options and the work are the simulator's (`crate::sim_cmd`); this maps its errors to
//! psfleet's exit codes.

use crate::cli::Context;
use crate::exit::{CliError, Exit};
pub use crate::sim_cmd::SimArgs;
use crate::sim_cmd::SimError;
use psfleet_sim::fleet::FleetError;

/// Runs `psfleet sim` until Ctrl-C or SIGTERM.
pub fn execute(args: SimArgs, _ctx: &Context<'_>) -> Result<Exit, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("cannot start the runtime", e))?;
    let result = runtime.block_on(async {
        let mut stop = crate::drive::interrupt_signals()?;
        let stopped = async move {
            stop.recv().await;
        };
        crate::sim_cmd::serve(args, stopped, &mut std::io::stdout())
            .await
            .map_err(|e| match e {
                // What the user asked for cannot be: a profile that does not load or cannot
                // make this many hosts, a keytab that does not read, too many hosts for the
                // descriptor limit (the text says what to change).
                SimError::Profile(_)
                | SimError::Fleet(
                    FleetError::Profile(_)
                    | FleetError::Keytab { .. }
                    | FleetError::TooManyDescriptors { .. },
                ) => CliError::usage(e.to_string()),
                other => CliError::Internal(other.to_string()),
            })
    });
    result.map(|_| Exit::Success)
}
