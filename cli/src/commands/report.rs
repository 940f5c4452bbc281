//! `psfleet report RUN`: the CSV (hosts, buckets, and the fleet configuration of sweeps),
//! HTML and JSON-lines reports of a run, written from its journal (docs/reports.md).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use clap::Args;
use psfleet_engine::journal::{self, RunState};
use psfleet_reports::{Report, ReportError};

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ReportFormat, RunRef};

/// `psfleet report` options.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run: a run id (`psfleet runs`), `last` or `previous`.
    #[arg(value_name = "RUN")]
    pub run: RunRef,
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
    formats.sort_by_key(|f| *f as u8);
    formats.dedup();
    write_reports(&args.run, &formats, args.out.as_deref(), &state_dir, ctx)
}

/// Reads the run's journal (and the previous run of the same inventory, for "what
/// changed"), writes each format, and prints the paths written.
pub fn write_reports(
    run: &RunRef,
    formats: &[ReportFormat],
    out: Option<&Path>,
    state_dir: &Path,
    ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    let dir = super::find_run(state_dir, run)?;
    let state = super::replay_run(&dir)?;
    let mut report = Report::from_state(&state);
    if let Some(previous) = previous_of(state_dir, &state) {
        report = report.with_previous(&previous);
    }
    let out = out.map_or_else(|| dir.clone(), Path::to_path_buf);
    let run_id = state.meta.run_id.0.clone();
    let write = |path: &Path, body: &dyn Fn(&mut BufWriter<File>) -> Result<(), ReportError>| {
        write(path, body)
            .map_err(|e| CliError::output(&path.display().to_string(), &e, Some(&run_id)))
    };
    std::fs::create_dir_all(&out)
        .map_err(|e| CliError::output(&out.display().to_string(), &e, Some(&run_id)))?;
    let mut written = Vec::new();
    for format in formats {
        match format {
            ReportFormat::Csv => {
                let hosts = out.join("hosts.csv");
                write(&hosts, &|w| {
                    psfleet_reports::csv_report::write_hosts(w, &report.records)
                })?;
                let buckets = out.join("buckets.csv");
                write(&buckets, &|w| {
                    psfleet_reports::csv_report::write_buckets(w, &report.records)
                })?;
                written.extend([hosts, buckets]);
                if !psfleet_reports::fleet::configured(&report.facts).is_empty() {
                    let config = out.join("config.csv");
                    write(&config, &|w| {
                        psfleet_reports::fleet::write_csv(w, &report.facts)
                    })?;
                    written.push(config);
                }
            }
            ReportFormat::Html => {
                let html = out.join("report.html");
                write(&html, &|w| psfleet_reports::html::write(w, &report))?;
                written.push(html);
            }
            ReportFormat::Json => {
                let jsonl = out.join("hosts.jsonl");
                write(&jsonl, &|w| {
                    psfleet_reports::jsonl::write(w, &report.records)
                })?;
                written.push(jsonl);
            }
        }
    }
    let mut text = String::new();
    for path in &written {
        text.push_str(&format!("{}\n", path.display()));
    }
    ctx.sink.out(&text);
    Ok(Exit::Success)
}

/// The newest run before `state` over the same inventory (same digest), if any.
fn previous_of(state_dir: &Path, state: &RunState) -> Option<RunState> {
    let digest = state.meta.inventory_digest.as_ref()?;
    let dirs = journal::list_run_dirs(state_dir).ok()?;
    dirs.iter()
        .rev()
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n < state.meta.run_id.0.as_str())
        })
        .filter_map(|d| journal::read_meta(d).ok().map(|m| (d, m)))
        .find(|(_, m)| m.inventory_digest.as_ref() == Some(digest))
        .and_then(|(d, _)| journal::Journal::replay(d).ok())
}

/// Writes one report file; one that fails half-way is removed, so no truncated report is
/// left looking complete (the journal still has everything).
fn write(
    path: &Path,
    body: &dyn Fn(&mut BufWriter<File>) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    psfleet_reports::write_file(path, body)
}
