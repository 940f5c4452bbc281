//! `psfleet diff RUN_A RUN_B`: what changed between two runs: hosts newly failing,
//! recovered, in another bucket, or with other output.

use clap::Args;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{OutputFormat, ResumeFrom};

/// `psfleet diff` options.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier run (a run id or `last`).
    #[arg(value_name = "RUN_A")]
    pub run_a: ResumeFrom,
    /// The later run (a run id or `last`).
    #[arg(value_name = "RUN_B")]
    pub run_b: ResumeFrom,
    /// Text or one JSON object per changed host [default: text].
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

/// Runs `psfleet diff`.
pub fn execute(args: DiffArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    if args.run_a == args.run_b {
        return Err(CliError::usage(format!(
            "RUN_A and RUN_B are the same run ({})",
            args.run_a
        )));
    }
    let state_dir = ctx.global.state_dir()?.to_owned();
    diff_runs(
        &args.run_a,
        &args.run_b,
        args.output.unwrap_or(OutputFormat::Text),
        &state_dir,
        ctx,
    )
}

/// Reads both journals and prints the differences.
///
/// Not in this build: it needs the run journal and `psfleet_reports`' diff.
pub fn diff_runs(
    _a: &ResumeFrom,
    _b: &ResumeFrom,
    _format: OutputFormat,
    _state_dir: &std::path::Path,
    _ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    Err(super::not_available(
        "diff",
        "the run journal and the run diff",
    ))
}
