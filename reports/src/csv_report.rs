//! The CSV reports: one row per host (`hosts.csv`) and one row per failure bucket
//! (`buckets.csv`). Columns are documented in docs/reports.md; new columns are only ever
//! appended.
//!
//! Free-text cells (message, first error, output excerpt) that a spreadsheet would read as a
//! formula (starting with `=`, `+`, `-`, `@`, tab or carriage return, and not a plain number)
//! get a leading `'`: host output is attacker-controlled text (OWASP "CSV injection").

use std::collections::BTreeMap;
use std::io::Write;

use psfleet_core::taxonomy::Bucket;
use psfleet_engine::record::{HostRecord, JobKind, Status};

use crate::ReportError;

/// The columns of `hosts.csv`, in order.
pub const HOST_COLUMNS: [&str; 19] = [
    "run_id",
    "host",
    "address",
    "group",
    "job",
    "status",
    "bucket",
    "message",
    "how_to_fix",
    "attempts",
    "started",
    "finished",
    "duration_ms",
    "exit_code",
    "pipeline_state",
    "error_id",
    "first_error",
    "output_excerpt",
    "output_truncated",
];

/// The columns of `buckets.csv`, in order.
pub const BUCKET_COLUMNS: [&str; 6] = [
    "bucket",
    "hosts",
    "share",
    "example_host",
    "message",
    "how_to_fix",
];

/// The longest output excerpt written to a CSV cell (bytes; cut on a character boundary).
pub const OUTPUT_CELL_BYTES: usize = 1024;

/// Writes `hosts.csv`: a header, then one row per record in the order given.
pub fn write_hosts<W: Write>(out: W, records: &[HostRecord]) -> Result<(), ReportError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(HOST_COLUMNS)?;
    for r in records {
        let row: [String; 19] = [
            r.run_id.0.clone(),
            r.host.clone(),
            r.address.clone().unwrap_or_default(),
            r.group.clone().unwrap_or_default(),
            job_name(r.job).to_owned(),
            status_name(r.status).to_owned(),
            r.bucket.map(Bucket::name).unwrap_or_default().to_owned(),
            defuse(&r.message),
            r.bucket
                .map(Bucket::how_to_fix)
                .unwrap_or_default()
                .to_owned(),
            r.attempts.to_string(),
            r.started.clone(),
            r.finished.clone(),
            r.duration_ms.to_string(),
            r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            r.pipeline_state.clone().unwrap_or_default(),
            r.error_id.clone().unwrap_or_default(),
            defuse(r.errors.first().map(String::as_str).unwrap_or_default()),
            defuse(&crate::excerpt(&r.output_excerpt, OUTPUT_CELL_BYTES)),
            r.output_truncated.to_string(),
        ];
        w.write_record(&row)?;
    }
    w.flush().map_err(|source| ReportError::Io {
        what: "hosts CSV".into(),
        source,
    })?;
    Ok(())
}

/// One row of the bucket summary.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketRow {
    /// The bucket.
    pub bucket: Bucket,
    /// Hosts in it.
    pub hosts: u64,
    /// Share of all hosts in the run, percent.
    pub share: f64,
    /// The first host in it (by the records' order).
    pub example_host: String,
    /// That host's message (the documented format, filled in).
    pub message: String,
}

/// The failure buckets of `records`, most hosts first (ties in the documented order).
pub fn bucket_rows(records: &[HostRecord]) -> Vec<BucketRow> {
    let total = records.len().max(1) as f64;
    let mut by_bucket: BTreeMap<Bucket, BucketRow> = BTreeMap::new();
    for r in records {
        let Some(bucket) = r.bucket else { continue };
        by_bucket
            .entry(bucket)
            .or_insert_with(|| BucketRow {
                bucket,
                hosts: 0,
                share: 0.0,
                example_host: r.host.clone(),
                message: r.message.clone(),
            })
            .hosts += 1;
    }
    let mut rows: Vec<BucketRow> = by_bucket
        .into_values()
        .map(|mut row| {
            row.share = row.hosts as f64 * 100.0 / total;
            row
        })
        .collect();
    let order = |b: Bucket| {
        Bucket::ALL
            .iter()
            .position(|x| *x == b)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by(|a, b| {
        b.hosts
            .cmp(&a.hosts)
            .then(order(a.bucket).cmp(&order(b.bucket)))
    });
    rows
}

/// Writes `buckets.csv`: a header, then one row per failure bucket present (most hosts first).
/// `share` is the percentage of all hosts in the run, one decimal.
pub fn write_buckets<W: Write>(out: W, records: &[HostRecord]) -> Result<(), ReportError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(BUCKET_COLUMNS)?;
    for row in bucket_rows(records) {
        w.write_record([
            row.bucket.name().to_owned(),
            row.hosts.to_string(),
            format!("{:.1}", row.share),
            row.example_host,
            defuse(&row.message),
            row.bucket.how_to_fix().to_owned(),
        ])?;
    }
    w.flush().map_err(|source| ReportError::Io {
        what: "buckets CSV".into(),
        source,
    })?;
    Ok(())
}

/// The stable status name (as in the JSON).
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
    }
}

/// The stable job kind name (as in the JSON).
pub fn job_name(job: JobKind) -> &'static str {
    match job {
        JobKind::Script => "script",
        JobKind::Cmd => "cmd",
        JobKind::Sweep => "sweep",
        JobKind::Cleanup => "cleanup",
    }
}

/// Prefixes `'` to text a spreadsheet would evaluate as a formula.
pub fn defuse(text: &str) -> String {
    let risky = text
        .chars()
        .next()
        .is_some_and(|c| matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r'));
    if risky && text.trim().parse::<f64>().is_err() {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;

    fn parse(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
        let mut r = csv::Reader::from_reader(bytes);
        let header = r.headers().unwrap().iter().map(str::to_owned).collect();
        let rows = r
            .records()
            .map(|row| row.unwrap().iter().map(str::to_owned).collect())
            .collect();
        (header, rows)
    }

    #[test]
    fn host_rows_carry_every_documented_column_with_its_value() {
        let mut failed = sample("srv2", Some(Bucket::InvalidPort));
        failed.errors = vec!["=HYPERLINK(\"http://x\")".into(), "second".into()];
        failed.output_excerpt = "line1\nline2, \"quoted\"".into();
        failed.exit_code = Some(-1);
        let mut long = sample("srv3", None);
        long.output_excerpt = "é".repeat(OUTPUT_CELL_BYTES);
        long.output_truncated = 7;
        let mut out = Vec::new();
        write_hosts(&mut out, &[sample("srv1", None), failed.clone(), long]).unwrap();
        let (header, rows) = parse(&out);
        assert_eq!(header, HOST_COLUMNS);
        assert_eq!(rows.len(), 3);
        let get = |row: &Vec<String>, name: &str| {
            row[HOST_COLUMNS.iter().position(|c| *c == name).unwrap()].clone()
        };
        let ok = &rows[0];
        assert_eq!(get(ok, "run_id"), "20261121T101500Z-1a2b");
        assert_eq!(get(ok, "host"), "srv1");
        assert_eq!(get(ok, "status"), "succeeded");
        assert_eq!(get(ok, "bucket"), "");
        assert_eq!(get(ok, "how_to_fix"), "");
        assert_eq!(get(ok, "job"), "script");
        assert_eq!(get(ok, "duration_ms"), "1250");
        assert_eq!(get(ok, "pipeline_state"), "Completed");
        let bad = &rows[1];
        assert_eq!(get(bad, "status"), "failed");
        assert_eq!(get(bad, "bucket"), "InvalidPort");
        assert_eq!(get(bad, "message"), failed.message);
        assert!(get(bad, "message").contains("'Port' 5985"));
        assert_eq!(get(bad, "how_to_fix"), Bucket::InvalidPort.how_to_fix());
        assert_eq!(get(bad, "attempts"), "2");
        assert_eq!(get(bad, "address"), "127.20.0.1");
        assert_eq!(get(bad, "group"), "web");
        assert_eq!(get(bad, "started"), "2026-11-21T10:15:00.000Z");
        assert_eq!(get(bad, "finished"), "2026-11-21T10:15:01.250Z");
        assert_eq!(get(bad, "exit_code"), "-1");
        assert_eq!(get(bad, "error_id"), "2150858770");
        assert_eq!(get(bad, "first_error"), "'=HYPERLINK(\"http://x\")");
        assert_eq!(get(bad, "output_excerpt"), "line1\nline2, \"quoted\"");
        let cut = get(&rows[2], "output_excerpt");
        assert!(cut.len() <= OUTPUT_CELL_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(get(&rows[2], "output_truncated"), "7");
    }

    #[test]
    fn the_bucket_summary_counts_shares_and_gives_an_example_and_fix() {
        let records = vec![
            sample("a", None),
            sample("b", Some(Bucket::AccessDenied)),
            sample("c", Some(Bucket::Timeout)),
            sample("d", Some(Bucket::Timeout)),
            sample("e", Some(Bucket::AccessDenied)),
            sample("f", Some(Bucket::Timeout)),
            sample("g", Some(Bucket::InvalidDns)),
            sample("h", None),
        ];
        let mut out = Vec::new();
        write_buckets(&mut out, &records).unwrap();
        let (header, rows) = parse(&out);
        assert_eq!(header, BUCKET_COLUMNS);
        assert_eq!(
            rows,
            vec![
                vec![
                    "Timeout".to_string(),
                    "3".into(),
                    "37.5".into(),
                    "c".into(),
                    Bucket::Timeout.message("c", "5985"),
                    Bucket::Timeout.how_to_fix().into()
                ],
                vec![
                    "AccessDenied".to_string(),
                    "2".into(),
                    "25.0".into(),
                    "b".into(),
                    Bucket::AccessDenied.message("b", "5985"),
                    Bucket::AccessDenied.how_to_fix().into()
                ],
                vec![
                    "InvalidDNS".to_string(),
                    "1".into(),
                    "12.5".into(),
                    "g".into(),
                    Bucket::InvalidDns.message("g", "5985"),
                    Bucket::InvalidDns.how_to_fix().into()
                ],
            ]
        );
    }

    #[test]
    fn formula_like_cells_are_defused_but_numbers_are_kept() {
        assert_eq!(defuse("=1+2"), "'=1+2");
        assert_eq!(defuse("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(defuse("+cmd"), "'+cmd");
        assert_eq!(defuse("-1"), "-1");
        assert_eq!(defuse("-2.5e3"), "-2.5e3");
        assert_eq!(defuse("hello"), "hello");
        assert_eq!(defuse(""), "");
    }
}
