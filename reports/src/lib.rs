//! psfleet-reports: a run's host records as CSV, JSON lines and one self-contained HTML file,
//! and the diff between two runs. The columns are documented in docs/reports.md and are a
//! stable interface: they are only ever added to.
//!
//! Input is a [`Report`]: the run's records (from the journal, see
//! `psfleet_engine::journal::RunState::records`), optionally the previous run's records for
//! "what changed". Every writer takes any `io::Write`; [`Report::write_files`] writes all four
//! files into a folder.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use psfleet_engine::cache::HostFacts;
use psfleet_engine::journal::RunState;
use psfleet_engine::record::{HostRecord, JobKind, RunId};

pub mod csv_report;
pub mod diff;
pub mod fleet;
pub mod html;
pub mod jsonl;

pub use diff::{Change, DiffRow, diff};

/// Report failures.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing failed.
    #[error("writing {what}: {source}")]
    Io {
        /// Which output.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// Writing one report file failed (the file, then why).
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<ReportError>,
    },
    /// The CSV writer failed.
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    /// A record could not be encoded or a JSON line could not be read back.
    #[error("JSON line {line}: {source}")]
    Json {
        /// 1-based line number (0 when writing).
        line: usize,
        /// Why.
        source: serde_json::Error,
    },
}

/// One run's report input.
#[derive(Debug, Clone)]
pub struct Report {
    /// The run.
    pub run_id: RunId,
    /// Job kind, when known.
    pub job: Option<JobKind>,
    /// When the run started, RFC 3339 UTC, when known.
    pub started: Option<String>,
    /// The command line (secrets already removed by the journal).
    pub command_line: Vec<String>,
    /// Every host's record (sorted by host for stable output).
    pub records: Vec<HostRecord>,
    /// The previous run of the same inventory, for "what changed".
    pub previous: Option<Previous>,
    /// Facts the run learned per host (a sweep's service configuration feeds the fleet
    /// configuration summary).
    pub facts: BTreeMap<String, HostFacts>,
}

/// The run a report compares against.
#[derive(Debug, Clone)]
pub struct Previous {
    /// Its id.
    pub run_id: RunId,
    /// Its records.
    pub records: Vec<HostRecord>,
}

/// The files [`Report::write_files`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// One row per host.
    pub hosts_csv: PathBuf,
    /// One row per failure bucket.
    pub buckets_csv: PathBuf,
    /// One host record per line.
    pub jsonl: PathBuf,
    /// The self-contained HTML report.
    pub html: PathBuf,
    /// The fleet configuration (`config.csv`), when the run read any host's service
    /// configuration (sweeps).
    pub config_csv: Option<PathBuf>,
}

impl Report {
    /// A report over `records` (sorted here by host).
    pub fn new(run_id: RunId, mut records: Vec<HostRecord>) -> Self {
        records.sort_by(|a, b| a.host.cmp(&b.host));
        Report {
            run_id,
            job: None,
            started: None,
            command_line: Vec::new(),
            records,
            previous: None,
            facts: BTreeMap::new(),
        }
    }

    /// The report of a run read from its journal: done hosts plus an Interrupted record for
    /// each host that was in flight.
    pub fn from_state(state: &RunState) -> Self {
        let mut report = Report::new(state.meta.run_id.clone(), state.records());
        report.job = Some(state.meta.job);
        report.started = Some(state.meta.started.clone());
        report.command_line = state.meta.command_line.clone();
        report.facts = state.facts.clone();
        report
    }

    /// Adds the previous run to compare against.
    pub fn with_previous(mut self, previous: &RunState) -> Self {
        self.previous = Some(Previous {
            run_id: previous.meta.run_id.clone(),
            records: previous.records(),
        });
        self
    }

    /// Writes `hosts.csv`, `buckets.csv`, `hosts.jsonl` and `report.html` into `dir`
    /// (created if needed), and `config.csv` when the run read service configurations.
    pub fn write_files(&self, dir: &Path) -> Result<ReportFiles, ReportError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let files = ReportFiles {
            hosts_csv: dir.join("hosts.csv"),
            buckets_csv: dir.join("buckets.csv"),
            jsonl: dir.join("hosts.jsonl"),
            html: dir.join("report.html"),
            config_csv: (!fleet::configured(&self.facts).is_empty())
                .then(|| dir.join("config.csv")),
        };
        write_file(&files.hosts_csv, |w| {
            csv_report::write_hosts(w, &self.records)
        })?;
        write_file(&files.buckets_csv, |w| {
            csv_report::write_buckets(w, &self.records)
        })?;
        write_file(&files.jsonl, |w| jsonl::write(w, &self.records))?;
        write_file(&files.html, |w| html::write(w, self))?;
        if let Some(path) = &files.config_csv {
            write_file(path, |w| fleet::write_csv(w, &self.facts))?;
        }
        Ok(files)
    }
}

/// Writes one file through `body`. A file that fails half-way (a full disk, an I/O error) is
/// removed, so no truncated report is left looking complete; a file that cannot be created
/// is left as it was.
pub fn write_file(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let file = File::create(path).map_err(io_err(path))?;
    let mut out = BufWriter::new(file);
    let written = body(&mut out).and_then(|()| out.flush().map_err(io_err(path)));
    if let Err(error) = written {
        // The buffered rest would fail again on drop; the partial file goes.
        let (_, _) = out.into_parts();
        let _ = std::fs::remove_file(path);
        let shown = path.display().to_string();
        return Err(match error {
            ReportError::Io { what, source } if what == shown => ReportError::Io { what, source },
            other => ReportError::File {
                path: path.to_owned(),
                source: Box::new(other),
            },
        });
    }
    Ok(())
}

pub(crate) fn io_err(what: &Path) -> impl FnOnce(io::Error) -> ReportError {
    let what = what.display().to_string();
    move |source| ReportError::Io { what, source }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use psfleet_core::taxonomy::Bucket;
    use psfleet_engine::record::Status;

    pub(crate) fn sample(host: &str, bucket: Option<Bucket>) -> HostRecord {
        HostRecord {
            run_id: RunId("20261121T101500Z-1a2b".into()),
            host: host.into(),
            address: Some("127.20.0.1".into()),
            group: Some("web".into()),
            job: JobKind::Script,
            status: if bucket.is_some() {
                Status::Failed
            } else {
                Status::Succeeded
            },
            bucket,
            message: bucket.map_or("ok".into(), |b| b.message(host, "5985")),
            attempts: 2,
            started: "2026-11-21T10:15:00.000Z".into(),
            finished: "2026-11-21T10:15:01.250Z".into(),
            duration_ms: 1250,
            exit_code: None,
            pipeline_state: Some("Completed".into()),
            error_id: bucket.map(|_| "2150858770".into()),
            output_excerpt: format!("output of {host}"),
            output: vec![serde_json::json!({"Name": host})],
            output_truncated: 0,
            errors: vec![],
            warnings: vec![],
        }
    }

    /// A full disk (`/dev/full` behind the report's path: ENOSPC on every write) fails the
    /// file with its path and the OS error, and leaves no half-written file behind.
    #[test]
    fn a_file_that_fails_half_way_is_removed_and_named() {
        let dir = std::env::temp_dir().join(format!("psfleet-reports-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts.csv");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let records: Vec<HostRecord> = (0..50).map(|i| sample(&format!("srv{i}"), None)).collect();
        let error = write_file(&path, |w| csv_report::write_hosts(w, &records)).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("hosts.csv"), "{text}");
        assert!(text.contains("No space left on device"), "{text}");
        assert!(
            path.symlink_metadata().is_err(),
            "the partial file is removed"
        );
        // The OS error is reachable through the source chain (the CLI's exit 7 reads it).
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        let mut kind = None;
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                kind = Some(io.kind());
                break;
            }
            source = e.source();
        }
        assert_eq!(kind, Some(io::ErrorKind::StorageFull));
        // A healthy write is untouched by the clean-up path.
        let ok = dir.join("ok.csv");
        write_file(&ok, |w| csv_report::write_hosts(w, &records)).unwrap();
        assert_eq!(csv::Reader::from_path(&ok).unwrap().records().count(), 50);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
