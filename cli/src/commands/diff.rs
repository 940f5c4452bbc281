//! `psfleet diff RUN_A RUN_B`: what changed between two runs, host by host: newly failing,
//! recovered, in another bucket, with other output, added, removed (docs/reports.md, "Diff").
//! Exits 0 whether or not anything changed (1 is never used by psfleet).

use std::fmt::Write as _;

use clap::Args;
use psfleet_core::taxonomy::Bucket;
use psfleet_engine::record::Status;
use psfleet_reports::DiffRow;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{OutputFormat, RunRef};

/// `psfleet diff` options.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier run (a run id, `last` or `previous`).
    #[arg(value_name = "RUN_A")]
    pub run_a: RunRef,
    /// The later run (a run id, `last` or `previous`).
    #[arg(value_name = "RUN_B")]
    pub run_b: RunRef,
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

/// Reads both journals and prints the hosts whose outcome changed.
pub fn diff_runs(
    a: &RunRef,
    b: &RunRef,
    format: OutputFormat,
    state_dir: &std::path::Path,
    ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    let dir_a = super::find_run(state_dir, a)?;
    let dir_b = super::find_run(state_dir, b)?;
    if dir_a == dir_b {
        return Err(CliError::usage(format!(
            "{a} and {b} are the same run ({})",
            dir_a
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )));
    }
    let (state_a, state_b) = (super::replay_run(&dir_a)?, super::replay_run(&dir_b)?);
    let rows = psfleet_reports::diff(&state_a.records(), &state_b.records());
    let text = match format {
        OutputFormat::Json => json_lines(&rows)?,
        OutputFormat::Text => text(&state_a.meta.run_id.0, &state_b.meta.run_id.0, &rows),
    };
    ctx.sink.out(&text);
    Ok(Exit::Success)
}

fn status(s: Option<Status>) -> &'static str {
    s.map_or("absent", psfleet_reports::csv_report::status_name)
}

/// One JSON object per changed host (the diff CSV's columns).
pub fn json_lines(rows: &[DiffRow]) -> Result<String, CliError> {
    let mut text = String::new();
    for r in rows {
        let value = serde_json::json!({
            "host": r.host,
            "change": r.change.name(),
            "status_before": r.status_before.map(|_| status(r.status_before)),
            "bucket_before": r.bucket_before.map(Bucket::name),
            "status_after": r.status_after.map(|_| status(r.status_after)),
            "bucket_after": r.bucket_after.map(Bucket::name),
        });
        let line = serde_json::to_string(&value).map_err(|e| CliError::Internal(e.to_string()))?;
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

/// The text form: a headline with counts per change, then a line per host.
pub fn text(a: &str, b: &str, rows: &[DiffRow]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for r in rows {
        *counts.entry(r.change.name()).or_insert(0u64) += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let mut s = format!("{a} -> {b}: {} hosts changed", rows.len());
    if !parts.is_empty() {
        let _ = write!(s, " ({})", parts.join(", "));
    }
    s.push('\n');
    let side = |st: Option<Status>, bucket: Option<Bucket>| match bucket {
        Some(bucket) => format!("{} [{}]", status(st), bucket.name()),
        None => status(st).to_owned(),
    };
    for r in rows {
        let _ = writeln!(
            s,
            "  {:<15} {}  {} -> {}",
            r.change.name(),
            r.host,
            side(r.status_before, r.bucket_before),
            side(r.status_after, r.bucket_after)
        );
    }
    s
}
