//! `psfleet report RUN`: the CSV (hosts and bucket summary), HTML and JSON-lines reports of a
//! run, written from its journal in the state directory.

use std::path::PathBuf;

use clap::Args;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ReportFormat, ResumeFrom};

/// `psfleet report` options.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run: a run id (`psfleet runs`) or `last`.
    #[arg(value_name = "RUN|last")]
    pub run: ResumeFrom,
    /// Report formats (repeatable, or comma-separated) [default: csv,html].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FORMAT")]
    pub format: Vec<ReportFormat>,
    /// Directory to write the reports to [default: the run's directory in the state
    /// directory].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `psfleet report`.
pub fn execute(args: ReportArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let state_dir = ctx.global.state_dir()?.to_owned();
    let mut formats = args.format.clone();
    if formats.is_empty() {
        formats = vec![ReportFormat::Csv, ReportFormat::Html];
    }
    formats.dedup();
    write_reports(&args.run, &formats, args.out.as_deref(), &state_dir, ctx)
}

/// Reads the run's journal and writes each format, printing the paths written.
///
/// Not in this build: it needs the run journal (`engine::journal`) and the report writers
/// (`psfleet_reports`).
pub fn write_reports(
    _run: &ResumeFrom,
    _formats: &[ReportFormat],
    _out: Option<&std::path::Path>,
    _state_dir: &std::path::Path,
    _ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    Err(super::not_available(
        "report",
        "the run journal and the report writers",
    ))
}
