//! A finished job as a [`HostRecord`]: its classification, its timings, and its output cut to
//! the [`OutputCaps`] (what is dropped is counted in `output_truncated`).
//!
//! - Scripts: `output` keeps the first objects (as JSON, annotated like Invoke-Command's)
//!   while both the object count and their serialized bytes stay within the caps;
//!   `output_truncated` counts the objects dropped (here and by `ops`' own limit).
//! - cmd: `output` holds stdout's lines as strings within the same caps; `output_truncated`
//!   counts the bytes of stdout dropped (here and by `ops`' own limit). stderr's lines go to
//!   `errors`.
//! - `output_excerpt` is the start of the rendered text (strings as they are, other values as
//!   compact JSON, one per line), at most `excerpt_bytes`, cut on a character boundary.

use std::time::{Duration, SystemTime};

use super::jobs::{JobOutput, JobResult};
use super::{Classification, OutputCaps};
use crate::journal::format_timestamp;
use crate::ops::{CmdResult, ScriptResult};
use crate::record::{HostRecord, JobKind, RunId};

/// The parts of a record that do not come from the result.
pub(super) struct RecordParts<'a> {
    pub run_id: &'a RunId,
    pub name: &'a str,
    pub group: Option<&'a str>,
    pub job: JobKind,
    pub attempts: u32,
    pub started: Option<SystemTime>,
    pub finished: SystemTime,
    pub elapsed: Duration,
    pub address: Option<String>,
}

/// Builds the record.
pub(super) fn record(
    parts: RecordParts<'_>,
    verdict: Classification,
    output: Option<&JobOutput>,
    caps: &OutputCaps,
) -> HostRecord {
    let finished = format_timestamp(parts.finished);
    let mut record = HostRecord {
        run_id: parts.run_id.clone(),
        host: parts.name.to_owned(),
        address: output.and_then(|o| o.address.clone()).or(parts.address),
        group: parts.group.map(str::to_owned),
        job: parts.job,
        status: verdict.status,
        bucket: verdict.bucket,
        message: verdict.message,
        attempts: parts.attempts,
        started: parts
            .started
            .map_or_else(|| finished.clone(), format_timestamp),
        finished,
        duration_ms: u64::try_from(parts.elapsed.as_millis()).unwrap_or(u64::MAX),
        exit_code: None,
        pipeline_state: None,
        error_id: verdict.error_id,
        output_excerpt: String::new(),
        output: Vec::new(),
        output_truncated: 0,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    match output.map(|o| &o.result) {
        Some(JobResult::Script(result)) => script(&mut record, result, caps),
        Some(JobResult::Cmd(result)) => cmd(&mut record, result, caps),
        Some(JobResult::Sweep(sweep)) => {
            if let Some(error) = &sweep.config_error {
                record.warnings.push(cut(error, caps.excerpt_bytes));
            }
            if let Some(error) = &sweep.unauthenticated_identify_error {
                record.warnings.push(cut(
                    &format!("unauthenticated Identify: {error}"),
                    caps.excerpt_bytes,
                ));
            }
        }
        Some(JobResult::Cleanup(cleanup)) => {
            record.output = cleanup
                .deleted
                .iter()
                .take(caps.objects)
                .map(|id| serde_json::Value::String(id.clone()))
                .collect();
            record.output_truncated = cleanup.deleted.len().saturating_sub(caps.objects) as u64;
        }
        None => {}
    }
    record
}

fn script(record: &mut HostRecord, result: &ScriptResult, caps: &OutputCaps) {
    record.pipeline_state = Some(result.pipeline_state.clone());
    let mut bytes = 0usize;
    let mut excerpt = Excerpt::new(caps.excerpt_bytes);
    for (kept, value) in result.output.iter().enumerate() {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        excerpt.line(&text);
        let size = serde_json::to_vec(value).map_or(0, |v| v.len());
        if kept >= caps.objects || bytes.saturating_add(size) > caps.bytes {
            record.output_truncated = (result.output.len() - kept) as u64;
            break;
        }
        bytes += size;
        record.output.push(value.clone());
    }
    record.output_truncated += result.dropped;
    record.output_excerpt = excerpt.text;
    let errors = result
        .error_record
        .iter()
        .chain(&result.errors)
        .map(|e| e.message.as_str());
    record.errors = capped(errors, caps);
    record.warnings = capped(result.warnings.iter().map(String::as_str), caps);
}

fn cmd(record: &mut HostRecord, result: &CmdResult, caps: &OutputCaps) {
    record.exit_code = Some(result.exit_code);
    let stdout = String::from_utf8_lossy(&result.stdout);
    let mut excerpt = Excerpt::new(caps.excerpt_bytes);
    let mut bytes = 0usize;
    let mut dropped = 0u64;
    for line in stdout.lines() {
        let line = line.trim_end_matches('\r');
        excerpt.line(line);
        if record.output.len() >= caps.objects || bytes.saturating_add(line.len()) > caps.bytes {
            dropped += line.len() as u64 + 1;
            continue;
        }
        bytes += line.len();
        record
            .output
            .push(serde_json::Value::String(line.to_owned()));
    }
    record.output_truncated = dropped + result.dropped_bytes;
    record.output_excerpt = excerpt.text;
    let stderr = String::from_utf8_lossy(&result.stderr);
    record.errors = capped(
        stderr
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty()),
        caps,
    );
}

/// At most `caps.messages` entries, each cut to `caps.excerpt_bytes`.
fn capped<'a>(items: impl Iterator<Item = &'a str>, caps: &OutputCaps) -> Vec<String> {
    items
        .take(caps.messages)
        .map(|s| cut(s, caps.excerpt_bytes))
        .collect()
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// The start of the rendered output, one line per value.
struct Excerpt {
    text: String,
    max: usize,
}

impl Excerpt {
    fn new(max: usize) -> Self {
        Self {
            text: String::new(),
            max,
        }
    }

    fn line(&mut self, line: &str) {
        if self.text.len() >= self.max {
            return;
        }
        if !self.text.is_empty() {
            // No separator without room for something after it.
            if self.text.len() + 1 >= self.max {
                self.max = self.text.len();
                return;
            }
            self.text.push('\n');
        }
        let room = self.max.saturating_sub(self.text.len());
        self.text.push_str(&cut(line, room));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_respects_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }

    #[test]
    fn the_excerpt_stops_at_its_size() {
        let mut excerpt = Excerpt::new(10);
        excerpt.line("12345");
        excerpt.line("67890");
        excerpt.line("more");
        assert_eq!(excerpt.text, "12345\n6789");
        let mut exact = Excerpt::new(5);
        exact.line("12345");
        exact.line("6");
        assert_eq!(exact.text, "12345");
    }
}
