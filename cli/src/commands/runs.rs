//! `psfleet runs`: the runs in the state directory, newest first, with their counts.

use clap::Args;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::OutputFormat;

/// `psfleet runs` options.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// How many runs to list, newest first.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub last: usize,
    /// Text table or one JSON object per run [default: text].
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

/// Runs `psfleet runs`.
pub fn execute(args: RunsArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    if args.last == 0 {
        return Err(CliError::usage("--last must be at least 1"));
    }
    let state_dir = ctx.global.state_dir()?.to_owned();
    list_runs(
        args.last,
        args.output.unwrap_or(OutputFormat::Text),
        &state_dir,
        ctx,
    )
}

/// Reads the run index and prints it.
///
/// Not in this build: it needs the run journal's index (`engine::journal` / `engine::store`).
pub fn list_runs(
    _last: usize,
    _format: OutputFormat,
    _state_dir: &std::path::Path,
    _ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    Err(super::not_available("runs", "the run journal"))
}
