//! JSON lines: one `HostRecord` per line, the same shape as the journal's `done` records and
//! `--output json` (field names in `psfleet_engine::record`).

use std::io::{BufRead, Write};

use psfleet_engine::record::HostRecord;

use crate::ReportError;

/// The longest line [`read`] accepts.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Writes one JSON object per record, each followed by `\n`.
pub fn write<W: Write>(out: &mut W, records: &[HostRecord]) -> Result<(), ReportError> {
    for record in records {
        serde_json::to_writer(&mut *out, record)
            .map_err(|source| ReportError::Json { line: 0, source })?;
        out.write_all(b"\n").map_err(|source| ReportError::Io {
            what: "JSON lines".into(),
            source,
        })?;
    }
    Ok(())
}

/// Reads records written by [`write`] (blank lines are skipped; a bad line is an error naming
/// its number; lines longer than [`MAX_LINE_BYTES`] are refused).
pub fn read<R: BufRead>(input: R) -> Result<Vec<HostRecord>, ReportError> {
    let mut out = Vec::new();
    let mut input = input;
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = std::io::Read::take(&mut input, MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| ReportError::Io {
                what: "JSON lines".into(),
                source,
            })?;
        if n == 0 {
            return Ok(out);
        }
        line += 1;
        if n > MAX_LINE_BYTES {
            return Err(ReportError::Json {
                line,
                source: serde::de::Error::custom("line too long"),
            });
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(
            serde_json::from_slice(&buf).map_err(|source| ReportError::Json { line, source })?,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;
    use psfleet_core::taxonomy::Bucket;

    #[test]
    fn lines_parse_back_to_the_same_records() {
        let mut odd = sample("b", Some(Bucket::ScriptFailed));
        odd.output_excerpt = "multi\nline \u{2028} \"output\"".into();
        odd.errors = vec!["boom".into()];
        let records = vec![sample("a", None), odd];
        let mut out = Vec::new();
        write(&mut out, &records).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["host"].is_string() && v["status"].is_string());
        }
        assert!(text.contains(r#""bucket":"ScriptFailed""#));
        assert_eq!(read(&out[..]).unwrap(), records);
    }

    #[test]
    fn a_bad_line_is_named() {
        let mut out = Vec::new();
        write(&mut out, &[sample("a", None)]).unwrap();
        out.extend_from_slice(b"\n{\"host\":1}\n");
        match read(&out[..]) {
            Err(ReportError::Json { line: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
