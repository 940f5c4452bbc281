//! The run record: what the journal stores for every host, and what reports, `--output json`,
//! resume and diff read. One `HostRecord` per host per run; the field names are a stable,
//! documented interface (report columns follow them).

use psfleet_core::taxonomy::Bucket;
use serde::{Deserialize, Serialize};

/// A run's identifier: `YYYYMMDDTHHMMSSZ-xxxx` (UTC start time plus 4 hex digits), sortable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a host ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The job ran and succeeded.
    Succeeded,
    /// The job failed; `bucket` says why.
    Failed,
    /// Not started because the run was stopped first (Ctrl-C before the host's turn).
    Skipped,
}

/// What kind of job ran on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A PowerShell script over PSRP.
    Script,
    /// A cmd command over WinRS.
    Cmd,
    /// Reachability only: Identify, authentication, config facts.
    Sweep,
    /// Leaked shells deleted (`psfleet cleanup`).
    Cleanup,
}

/// The final record of one host in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The run.
    pub run_id: RunId,
    /// Inventory host name.
    pub host: String,
    /// The address connected to, if resolution got that far.
    pub address: Option<String>,
    /// Inventory group (the nearest one), if any.
    pub group: Option<String>,
    /// Job kind.
    pub job: JobKind,
    /// Outcome.
    pub status: Status,
    /// Why it failed (`None` when it succeeded or was skipped).
    #[serde(with = "bucket_name")]
    pub bucket: Option<Bucket>,
    /// The documented message (failures) or a one-line summary (successes).
    pub message: String,
    /// Attempts made (1 when no retry happened).
    pub attempts: u32,
    /// Start of the first attempt, RFC 3339 UTC.
    pub started: String,
    /// End of the last attempt, RFC 3339 UTC.
    pub finished: String,
    /// Wall time from start to finish, milliseconds.
    pub duration_ms: u64,
    /// cmd exit code (WinRS) or the script's `exit N` code.
    pub exit_code: Option<i64>,
    /// PSRP pipeline state name (`Completed`, `Failed`, `Stopped`).
    pub pipeline_state: Option<String>,
    /// The error id: WS-Man fault code, or the error record's FullyQualifiedErrorId.
    pub error_id: Option<String>,
    /// The first part of the output (text), capped; see `output_truncated`.
    pub output_excerpt: String,
    /// Output objects (JSON values, capped in count and size).
    pub output: Vec<serde_json::Value>,
    /// Bytes or objects of output dropped by the cap.
    pub output_truncated: u64,
    /// Error records and stderr lines, capped.
    pub errors: Vec<String>,
    /// Warnings, capped.
    pub warnings: Vec<String>,
}

mod bucket_name {
    use psfleet_core::taxonomy::Bucket;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bucket: &Option<Bucket>, s: S) -> Result<S::Ok, S::Error> {
        match bucket {
            Some(b) => s.serialize_str(b.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bucket>, D::Error> {
        let name: Option<String> = Option::deserialize(d)?;
        name.map(|n| n.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HostRecord {
        HostRecord {
            run_id: RunId("20261121T101500Z-1a2b".into()),
            host: "srv0001.fleet.test".into(),
            address: Some("127.20.0.1".into()),
            group: Some("web".into()),
            job: JobKind::Script,
            status: Status::Failed,
            bucket: Some(Bucket::InvalidPsConfiguration),
            message: "m".into(),
            attempts: 2,
            started: "2026-11-21T10:15:00.000Z".into(),
            finished: "2026-11-21T10:15:01.250Z".into(),
            duration_ms: 1250,
            exit_code: None,
            pipeline_state: None,
            error_id: Some("2150858811".into()),
            output_excerpt: String::new(),
            output: vec![serde_json::json!({"Name": "x"})],
            output_truncated: 0,
            errors: vec![],
            warnings: vec![],
        }
    }

    #[test]
    fn records_round_trip_through_json_with_stable_names() {
        let record = sample();
        let line = serde_json::to_string(&record).unwrap();
        assert!(
            line.contains(r#""bucket":"InvalidPSConfiguration""#),
            "{line}"
        );
        assert!(line.contains(r#""status":"failed""#), "{line}");
        assert!(line.contains(r#""job":"script""#), "{line}");
        let back: HostRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn an_unknown_bucket_name_is_an_error() {
        let line = serde_json::to_string(&sample())
            .unwrap()
            .replace("InvalidPSConfiguration", "Nope");
        let err = serde_json::from_str::<HostRecord>(&line).unwrap_err();
        assert!(err.to_string().contains("unknown failure bucket"), "{err}");
    }
}
