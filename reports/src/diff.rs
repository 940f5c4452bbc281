//! The difference between two runs, host by host: newly failing, recovered, bucket changed,
//! output changed, added, removed. Hosts whose outcome is the same are left out.

use std::collections::BTreeMap;
use std::io::Write;

use psfleet_core::taxonomy::Bucket;
use psfleet_engine::record::{HostRecord, Status};

use crate::ReportError;
use crate::csv_report::status_name;

/// How a host changed between two runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// Succeeded (or skipped) before, failed now.
    NewlyFailing,
    /// Failed before, succeeded now.
    Recovered,
    /// Failed both times, for different reasons.
    BucketChanged,
    /// Same status and bucket, different output (or exit code).
    OutputChanged,
    /// In the second run only.
    Added,
    /// In the first run only.
    Removed,
    /// Any other change of status (to or from skipped).
    StatusChanged,
}

impl Change {
    /// The stable name used in CSV and HTML.
    pub fn name(self) -> &'static str {
        match self {
            Change::NewlyFailing => "newly_failing",
            Change::Recovered => "recovered",
            Change::BucketChanged => "bucket_changed",
            Change::OutputChanged => "output_changed",
            Change::Added => "added",
            Change::Removed => "removed",
            Change::StatusChanged => "status_changed",
        }
    }
}

/// One changed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffRow {
    /// Inventory host name.
    pub host: String,
    /// What changed.
    pub change: Change,
    /// Status in the first run.
    pub status_before: Option<Status>,
    /// Bucket in the first run.
    pub bucket_before: Option<Bucket>,
    /// Status in the second run.
    pub status_after: Option<Status>,
    /// Bucket in the second run.
    pub bucket_after: Option<Bucket>,
}

/// The columns of the diff CSV, in order.
pub const DIFF_COLUMNS: [&str; 6] = [
    "host",
    "change",
    "status_before",
    "bucket_before",
    "status_after",
    "bucket_after",
];

/// The hosts whose outcome differs between `before` and `after`, sorted by host.
pub fn diff(before: &[HostRecord], after: &[HostRecord]) -> Vec<DiffRow> {
    let a: BTreeMap<&str, &HostRecord> = before.iter().map(|r| (r.host.as_str(), r)).collect();
    let b: BTreeMap<&str, &HostRecord> = after.iter().map(|r| (r.host.as_str(), r)).collect();
    let mut hosts: Vec<&str> = a.keys().chain(b.keys()).copied().collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut rows = Vec::new();
    for host in hosts {
        let (x, y) = (a.get(host).copied(), b.get(host).copied());
        let change = match (x, y) {
            (None, Some(_)) => Some(Change::Added),
            (Some(_), None) => Some(Change::Removed),
            (Some(x), Some(y)) => compare(x, y),
            (None, None) => None,
        };
        if let Some(change) = change {
            rows.push(DiffRow {
                host: host.to_owned(),
                change,
                status_before: x.map(|r| r.status),
                bucket_before: x.and_then(|r| r.bucket),
                status_after: y.map(|r| r.status),
                bucket_after: y.and_then(|r| r.bucket),
            });
        }
    }
    rows
}

/// Writes the diff as CSV ([`DIFF_COLUMNS`]).
pub fn write_csv<W: Write>(out: W, rows: &[DiffRow]) -> Result<(), ReportError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(DIFF_COLUMNS)?;
    for r in rows {
        w.write_record([
            r.host.as_str(),
            r.change.name(),
            r.status_before.map(status_name).unwrap_or_default(),
            r.bucket_before.map(Bucket::name).unwrap_or_default(),
            r.status_after.map(status_name).unwrap_or_default(),
            r.bucket_after.map(Bucket::name).unwrap_or_default(),
        ])?;
    }
    w.flush().map_err(|source| ReportError::Io {
        what: "diff CSV".into(),
        source,
    })?;
    Ok(())
}

fn compare(x: &HostRecord, y: &HostRecord) -> Option<Change> {
    let failed = |r: &HostRecord| r.status == Status::Failed;
    match (failed(x), failed(y)) {
        (false, true) => Some(Change::NewlyFailing),
        (true, false) if y.status == Status::Succeeded => Some(Change::Recovered),
        (true, true) if x.bucket != y.bucket => Some(Change::BucketChanged),
        _ if x.status != y.status => Some(Change::StatusChanged),
        _ if x.output != y.output
            || x.output_excerpt != y.output_excerpt
            || x.exit_code != y.exit_code =>
        {
            Some(Change::OutputChanged)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;

    #[test]
    fn only_changed_hosts_are_listed_with_their_change() {
        let before = vec![
            sample("same", None),
            sample("breaks", None),
            sample("heals", Some(Bucket::AccessDenied)),
            sample("moves", Some(Bucket::AccessDenied)),
            sample("talks", None),
            sample("gone", None),
            sample("stays-bad", Some(Bucket::Timeout)),
        ];
        let mut talks = sample("talks", None);
        talks.output_excerpt = "different".into();
        let after = vec![
            sample("same", None),
            sample("breaks", Some(Bucket::InvalidCredentials)),
            sample("heals", None),
            sample("moves", Some(Bucket::Timeout)),
            talks,
            sample("new", None),
            sample("stays-bad", Some(Bucket::Timeout)),
        ];
        let rows = diff(&before, &after);
        let got: Vec<(&str, Change)> = rows.iter().map(|r| (r.host.as_str(), r.change)).collect();
        assert_eq!(
            got,
            vec![
                ("breaks", Change::NewlyFailing),
                ("gone", Change::Removed),
                ("heals", Change::Recovered),
                ("moves", Change::BucketChanged),
                ("new", Change::Added),
                ("talks", Change::OutputChanged),
            ]
        );
        let moves = &rows[3];
        assert_eq!(moves.bucket_before, Some(Bucket::AccessDenied));
        assert_eq!(moves.bucket_after, Some(Bucket::Timeout));
        let mut out = Vec::new();
        write_csv(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("host,change,status_before,bucket_before,status_after,bucket_after\n")
        );
        assert!(text.contains("breaks,newly_failing,succeeded,,failed,InvalidCredentials\n"));
        assert!(text.contains("new,added,,,succeeded,\n"));
    }
}
