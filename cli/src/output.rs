//! What a run prints on standard output (docs/cli.md, "Output").
//!
//! - `--output json`: one run record ([`HostRecord`]) per host, one JSON object per line, as
//!   hosts finish, and nothing else on standard output (the summary goes to standard error),
//!   so `psfleet run -o json ... | jq` always parses.
//! - `--output text` (the default): a line per failed host as it finishes (with `-v`, per
//!   succeeded host too), then a summary: counts, a table of hosts per bucket, and for each
//!   bucket its documented message (from one of its hosts) and how to fix it
//!   (`psfleet_core::taxonomy`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use psfleet_core::taxonomy::Bucket;
use psfleet_engine::record::{HostRecord, Status};

use crate::console::Sink;
use crate::options::OutputFormat;
use crate::progress::Tally;

/// Width the fix texts are wrapped at.
const WRAP: usize = 100;

/// Longest output excerpt shown on a `-v` success line.
const EXCERPT_CHARS: usize = 120;

/// Prints hosts as they finish and the summary at the end.
pub struct Reporter {
    sink: Sink,
    format: OutputFormat,
    verbose: bool,
    quiet: bool,
    host_lines: bool,
    details: bool,
    examples: BTreeMap<Bucket, Example>,
}

/// The first host seen in a bucket, whose message stands for the bucket in the summary.
#[derive(Debug, Clone)]
struct Example {
    host: String,
    message: String,
}

impl Reporter {
    /// A reporter writing `format`; `verbose` adds success lines (text), `quiet` drops the
    /// summary on standard error (json).
    pub fn new(sink: Sink, format: OutputFormat, verbose: bool, quiet: bool) -> Self {
        Self {
            sink,
            format,
            verbose,
            quiet,
            host_lines: true,
            details: true,
            examples: BTreeMap::new(),
        }
    }

    /// Whether text output has a line per failed host (on by default; the demo shows the
    /// summary only). JSON output always has every host.
    pub fn set_host_lines(&mut self, on: bool) {
        self.host_lines = on;
    }

    /// Whether the text summary explains each bucket (its message and fix; on by default)
    /// or shows the table only.
    pub fn set_details(&mut self, on: bool) {
        self.details = on;
    }

    /// One host finished.
    pub fn host(&mut self, record: &HostRecord) {
        if let Some(bucket) = record.bucket {
            self.examples.entry(bucket).or_insert_with(|| Example {
                host: record.host.clone(),
                message: record.message.clone(),
            });
        }
        match self.format {
            OutputFormat::Json => match serde_json::to_string(record) {
                Ok(mut line) => {
                    line.push('\n');
                    self.sink.out(&line);
                }
                Err(e) => {
                    tracing::error!(host = %record.host, error = %e, "cannot serialize the run record")
                }
            },
            OutputFormat::Text if !self.host_lines => {}
            OutputFormat::Text => {
                if let Some(line) = self.text_line(record) {
                    self.sink.out(&line);
                }
            }
        }
    }

    fn text_line(&self, record: &HostRecord) -> Option<String> {
        let color = self.sink.color();
        let paint = |code: &str, text: &str| match color {
            true => format!("\x1b[{code}m{text}\x1b[0m"),
            false => text.to_owned(),
        };
        match record.status {
            Status::Failed => {
                let bucket = record.bucket.map_or("unclassified", Bucket::name);
                Some(format!(
                    "{} {} [{bucket}] {}\n",
                    paint("31", "FAILED"),
                    record.host,
                    one_line(&record.message)
                ))
            }
            Status::Succeeded if self.verbose => {
                let excerpt: String = one_line(&record.output_excerpt)
                    .chars()
                    .take(EXCERPT_CHARS)
                    .collect();
                Some(
                    format!("{} {} {excerpt}\n", paint("32", "ok"), record.host)
                        .replace(" \n", "\n"),
                )
            }
            Status::Skipped if self.verbose => {
                Some(format!("{} {}\n", paint("33", "skipped"), record.host))
            }
            _ => None,
        }
    }

    /// The end of the run: in text, the summary on standard output; in JSON, one summary
    /// line on standard error (unless quiet).
    pub fn summary(&self, what: &str, tally: &Tally, elapsed: Duration, interrupted: bool) {
        match self.format {
            OutputFormat::Json => {
                if !self.quiet {
                    self.sink.err(&format!(
                        "{}\n",
                        headline(what, tally, elapsed, interrupted)
                    ));
                }
            }
            OutputFormat::Text => {
                self.sink
                    .out(&self.summary_text(what, tally, elapsed, interrupted));
            }
        }
    }

    /// The text summary.
    pub fn summary_text(
        &self,
        what: &str,
        tally: &Tally,
        elapsed: Duration,
        interrupted: bool,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n{}", headline(what, tally, elapsed, interrupted));
        if tally.failed.is_empty() && tally.failed_unclassified == 0 {
            return s;
        }
        let _ = writeln!(s, "\n  {:>7}  BUCKET", "HOSTS");
        for (bucket, count) in &tally.failed {
            let _ = writeln!(s, "  {count:>7}  {}", bucket.name());
        }
        if tally.failed_unclassified > 0 {
            let _ = writeln!(
                s,
                "  {:>7}  unclassified (a psfleet bug: see the log)",
                tally.failed_unclassified
            );
        }
        if !self.details {
            return s;
        }
        for (bucket, count) in &tally.failed {
            let _ = writeln!(s);
            let hosts = if *count == 1 { "host" } else { "hosts" };
            match self.examples.get(bucket) {
                Some(example) => {
                    let _ = writeln!(
                        s,
                        "{} ({count} {hosts}, e.g. {})",
                        bucket.name(),
                        example.host
                    );
                    let _ = writeln!(s, "{}", wrap(&one_line(&example.message), "  ", "  "));
                }
                None => {
                    let _ = writeln!(s, "{} ({count} {hosts})", bucket.name());
                }
            }
            let _ = writeln!(s, "{}", wrap(bucket.how_to_fix(), "  Fix: ", "       "));
        }
        s
    }
}

/// `psfleet run: 20 hosts in 00:00:12 (1.7 hosts/s): 17 succeeded, 2 failed, 1 skipped`.
pub fn headline(what: &str, tally: &Tally, elapsed: Duration, interrupted: bool) -> String {
    let mut s = format!(
        "{what}: {} hosts in {} ({:.1} hosts/s): {} succeeded, {} failed",
        tally.done(),
        crate::progress::clock(elapsed),
        tally.rate(elapsed),
        tally.succeeded,
        tally.failed_total()
    );
    if tally.skipped > 0 {
        let _ = write!(s, ", {} skipped", tally.skipped);
    }
    if interrupted {
        s.push_str(" (interrupted: continue with --resume last)");
    }
    s
}

/// Newlines and tabs become spaces (a message is one line on the terminal).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Wraps `text` at [`WRAP`] columns, `first` before the first line and `rest` before the
/// others.
fn wrap(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::from(first);
    let mut col = first.chars().count();
    let mut line_start = true;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if !line_start && col + 1 + len > WRAP {
            out.push('\n');
            out.push_str(rest);
            col = rest.chars().count();
            line_start = true;
        }
        if !line_start {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += len;
        line_start = false;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use psfleet_engine::record::{JobKind, RunId};

    use super::*;
    use crate::console::Captured;

    pub(crate) fn record(host: &str, status: Status, bucket: Option<Bucket>) -> HostRecord {
        HostRecord {
            run_id: RunId("20261121T101500Z-1a2b".into()),
            host: host.into(),
            address: Some("127.20.0.1".into()),
            group: None,
            job: JobKind::Script,
            status,
            bucket,
            message: bucket.map_or_else(|| "ok".to_owned(), |b| b.message(host, "5985")),
            attempts: 1,
            started: "2026-11-21T10:15:00.000Z".into(),
            finished: "2026-11-21T10:15:01.000Z".into(),
            duration_ms: 1000,
            exit_code: None,
            pipeline_state: Some("Completed".into()),
            error_id: None,
            output_excerpt: "hello\nworld".into(),
            output: vec![],
            output_truncated: 0,
            errors: vec![],
            warnings: vec![],
        }
    }

    fn run(format: OutputFormat, verbose: bool) -> (String, String) {
        let m = Arc::new(Mutex::new(Captured::default()));
        let mut reporter = Reporter::new(Sink::Memory(Arc::clone(&m)), format, verbose, false);
        let mut tally = Tally::new(Some(4));
        for r in [
            record("srv1", Status::Succeeded, None),
            record("srv2", Status::Failed, Some(Bucket::InvalidPort)),
            record("srv3", Status::Failed, Some(Bucket::InvalidPort)),
            record("srv4", Status::Failed, Some(Bucket::InvalidCredentials)),
        ] {
            tally.finished(r.status, r.bucket);
            reporter.host(&r);
        }
        reporter.summary("psfleet run", &tally, Duration::from_secs(2), false);
        let c = m.lock().unwrap();
        (c.out.clone(), c.err.clone())
    }

    #[test]
    fn json_output_is_one_record_per_line_and_nothing_else() {
        let (out, err) = run(OutputFormat::Json, true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        let buckets: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["bucket"].clone())
            .collect();
        assert_eq!(
            buckets,
            [
                serde_json::Value::Null,
                "InvalidPort".into(),
                "InvalidPort".into(),
                "InvalidCredentials".into()
            ]
        );
        let back: HostRecord = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(
            back,
            record("srv4", Status::Failed, Some(Bucket::InvalidCredentials))
        );
        assert_eq!(
            err,
            "psfleet run: 4 hosts in 00:00:02 (2.0 hosts/s): 1 succeeded, 3 failed\n"
        );
    }

    #[test]
    fn text_output_has_failure_lines_and_a_bucket_summary_with_fixes() {
        let (out, err) = run(OutputFormat::Text, false);
        assert!(err.is_empty());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "FAILED srv2 [InvalidPort] Access denied to the 'Host' (\"srv2\"). The 'Host' is \
             either not running, not listening on 'Port' 5985, or requires communication over SSL."
        );
        assert!(
            lines[2].starts_with("FAILED srv4 [InvalidCredentials]"),
            "{out}"
        );
        assert!(!out.contains("ok srv1"), "successes only with -v: {out}");
        assert!(
            out.contains("psfleet run: 4 hosts in 00:00:02 (2.0 hosts/s): 1 succeeded, 3 failed")
        );
        assert!(
            out.contains("\n        2  InvalidPort\n        1  InvalidCredentials\n")
                || out.contains("\n        1  InvalidCredentials\n        2  InvalidPort\n"),
            "{out}"
        );
        assert!(out.contains("InvalidPort (2 hosts, e.g. srv2)"), "{out}");
        assert!(
            out.contains("InvalidCredentials (1 host, e.g. srv4)"),
            "{out}"
        );
        let fix_start: String = Bucket::InvalidPort
            .how_to_fix()
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(out.contains(&format!("  Fix: {fix_start}")), "{out}");
        assert!(
            out.lines().all(|l| l.chars().count() <= WRAP + 40
                || l.starts_with("FAILED")
                || l.starts_with("  Access")),
            "{out}"
        );
        let (verbose, _) = run(OutputFormat::Text, true);
        assert!(verbose.starts_with("ok srv1 hello world\n"), "{verbose}");
    }

    #[test]
    fn wrapping_keeps_words_and_indents() {
        let text = "word ".repeat(40);
        let wrapped = wrap(&text, "  Fix: ", "       ");
        for line in wrapped.lines() {
            assert!(line.chars().count() <= WRAP, "{line}");
        }
        assert_eq!(
            wrapped.split_whitespace().filter(|w| *w == "word").count(),
            40
        );
        assert!(
            wrapped
                .lines()
                .skip(1)
                .all(|l| l.starts_with("       word"))
        );
    }
}
