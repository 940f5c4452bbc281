//! `psfleet runs`: the runs in the state directory, newest first, with their counts (read
//! from each run's journal, the durable record).

use std::fmt::Write as _;

use clap::Args;
use psfleet_engine::journal::{self, EndReason, RunSummary};

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

/// Reads the newest `last` runs and prints them.
pub fn list_runs(
    last: usize,
    format: OutputFormat,
    state_dir: &std::path::Path,
    ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    let dirs = journal::list_run_dirs(state_dir).map_err(|e| CliError::state_dir(state_dir, &e))?;
    let mut summaries = Vec::new();
    for dir in dirs.iter().rev().take(last) {
        match super::replay_run(dir) {
            Ok(state) => summaries.push(state.summary()),
            // One unreadable run does not hide the others.
            Err(e) => tracing::warn!(run = %dir.display(), error = %e, "skipped"),
        }
    }
    let text = match format {
        OutputFormat::Json => {
            let mut text = String::new();
            for s in &summaries {
                let line =
                    serde_json::to_string(s).map_err(|e| CliError::Internal(e.to_string()))?;
                text.push_str(&line);
                text.push('\n');
            }
            text
        }
        OutputFormat::Text => table(&summaries),
    };
    if summaries.is_empty() && format == OutputFormat::Text {
        ctx.sink.err(&format!(
            "no runs in {}\n",
            state_dir.join(journal::RUNS_DIR).display()
        ));
        return Ok(Exit::Success);
    }
    ctx.sink.out(&text);
    Ok(Exit::Success)
}

/// The text table of `psfleet runs`.
pub fn table(summaries: &[RunSummary]) -> String {
    let mut s = format!(
        "{:<22} {:<24} {:<6} {:>7} {:>9} {:>7} {:>7} {:>11}  {}\n",
        "RUN", "STARTED", "JOB", "HOSTS", "SUCCEEDED", "FAILED", "SKIPPED", "INTERRUPTED", "END"
    );
    for r in summaries {
        let end = match &r.ended {
            Some(end) if end.reason == EndReason::Completed => "completed",
            Some(_) => "interrupted",
            None if r.interrupted > 0 || r.done < r.host_count => "stopped (resume it)",
            None => "not ended",
        };
        let job = serde_json::to_value(r.job)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<22} {:<24} {:<6} {:>7} {:>9} {:>7} {:>7} {:>11}  {end}",
            r.run_id.0,
            r.started,
            job,
            r.host_count,
            r.succeeded,
            r.failed,
            r.skipped,
            r.interrupted
        );
    }
    s
}
