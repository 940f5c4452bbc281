//! Fuzz targets of the configuration file and of Kerberos ticket caches: called by
//! `fuzz/fuzz_targets/config.rs` and `ticket_cache.rs`, and replayed by
//! `tests/integration/fuzz_replay.rs` (docs/fuzzing.md). Not a supported API.
//!
//! [`config`] reads arbitrary bytes as psfleet.toml exactly as `psfleet` does
//! ([`crate::config::parse_bytes`]: UTF-8, byte-order mark, TOML, keys, the refused
//! `password`), then merges and validates every setting the way `psfleet config show` does.
//! The invariants:
//! - an error names the file, and its line is a line of the input;
//! - a setting refused by validation names the file, the line and the key;
//! - a file that validates, written back the way `psfleet config show` prints it (its
//!   documented use: seeding a psfleet.toml), reads back to the same values.

use std::path::Path;
use std::sync::OnceLock;

use clap::{ArgMatches, CommandFactory as _};

use crate::cli::Cli;
use crate::config::{ConfigError, ConfigFile};
use crate::options::{ConnectionArgs, FleetArgs, OutputArgs};
use crate::settings::{
    ConnectionSettings, FleetSettings, GlobalSettings, Layers, Origin, OutputSettings, Row,
    opt_row, row,
};

/// The name the fuzzed bytes are read under (relative paths in them resolve below it).
const PATH: &str = "/fuzz/psfleet.toml";

/// psfleet.toml parsing and validation (see the module documentation).
#[allow(clippy::panic)] // a broken invariant is the finding
pub fn config(data: &[u8]) {
    let path = Path::new(PATH);
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    let file = match crate::config::parse_bytes(path, data.to_vec()) {
        Ok(file) => file,
        Err(error) => {
            check_error(&error.to_string(), lines);
            if let ConfigError::Invalid { line, .. } = &error
                && *line > lines
            {
                panic!("line {line} of a {lines}-line input: {error}");
            }
            return;
        }
    };
    let Some(first) = file_rows(&file, lines) else {
        return;
    };
    // Written back as `config show` prints it, and read again.
    let mut text = String::new();
    for (key, value) in &first {
        text.push_str(&format!("{key} = {value}\n"));
    }
    let again = crate::config::parse_bytes(path, text.clone().into_bytes())
        .unwrap_or_else(|e| panic!("config show's output does not parse: {e}\n{text}"));
    let second = file_rows(&again, text.lines().count() + 1)
        .unwrap_or_else(|| panic!("config show's output does not validate:\n{text}"));
    assert_eq!(
        first, second,
        "config show's output reads back differently:\n{text}"
    );
}

/// The rows of the settings `file` sets, as (key, TOML value), or `None` when validation
/// refuses them (after checking the error names the file).
fn file_rows(file: &ConfigFile, lines: usize) -> Option<Vec<(&'static str, toml::Value)>> {
    let layers = Layers::new(matches(), file);
    let no_env = |_: &str| None;
    let global = GlobalSettings::resolve(None, None, layers, &no_env);
    let settings = ConnectionSettings::resolve(&ConnectionArgs::default(), layers)
        .and_then(|c| FleetSettings::resolve(&FleetArgs::default(), layers).map(|f| (c, f)))
        .and_then(|(c, f)| {
            OutputSettings::resolve(&OutputArgs::default(), layers).map(|o| (c, f, o))
        });
    let (connection, fleet, output) = match settings {
        Ok(settings) => settings,
        Err(error) => {
            check_error(&error.to_string(), lines);
            return None;
        }
    };
    let mut rows: Vec<Row> = vec![
        opt_row("state-dir", global.state_dir.as_ref()),
        row("color", &global.color),
        opt_row("log", global.log.as_ref()),
    ];
    rows.extend(connection.rows());
    rows.extend(fleet.rows());
    rows.extend(output.rows());
    Some(
        rows.into_iter()
            .filter(|r| matches!(r.origin, Some(Origin::File { .. })))
            .filter_map(|r| r.value.map(|v| (r.key, v)))
            .collect(),
    )
}

/// An error about the file names it, and a line of it when it names one.
#[allow(clippy::panic)]
fn check_error(text: &str, lines: usize) {
    let Some(rest) = text.strip_prefix(PATH) else {
        // Settings errors from the file start with the file; others name no file only when
        // the value came from elsewhere, which cannot happen here.
        panic!("the error does not name the file: {text}");
    };
    if let Some(line) = rest
        .strip_prefix(':')
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse::<usize>().ok())
        && (line == 0 || line > lines)
    {
        panic!("line {line} of a {lines}-line input: {text}");
    }
}

/// The matches of `psfleet config show` without options (every value from the file).
fn matches() -> &'static ArgMatches {
    static MATCHES: OnceLock<ArgMatches> = OnceLock::new();
    MATCHES.get_or_init(|| {
        let top = Cli::command()
            .try_get_matches_from(["psfleet", "config", "show"])
            .unwrap_or_default();
        let mut current = top;
        // Two levels: `config`, then `show`.
        for _ in 0..2 {
            match current.remove_subcommand() {
                Some((_, sub)) => current = sub,
                None => break,
            }
        }
        current
    })
}

/// The name fuzzed ticket caches are read under.
const CACHE_PATH: &str = "/fuzz/krb5cc";

/// Kerberos ticket caches (`engine::ticket_cache`), the credential behind `kerberos-cache`:
/// arbitrary bytes as an MIT FILE cache, then, when they parse, its TGT and user looked up.
/// The same bytes also go to the in-process AS of a fixed cache, as sspi's framed KDC
/// requests would. The invariants: an error names the file; a parsed cache never holds
/// more tickets than the input could encode; the AS answers only what decodes as an
/// AS-REQ and never panics on it.
#[allow(clippy::panic)] // a broken invariant is the finding
pub fn ticket_cache(data: &[u8]) {
    use psfleet_engine::ticket_cache::{LocalAs, TicketCache};
    let path = Path::new(CACHE_PATH);
    match TicketCache::parse(path, data) {
        Ok(cache) => {
            // The smallest credential takes well over 60 bytes.
            assert!(
                cache.tickets.len() <= data.len() / 60 + 1,
                "tickets out of nothing"
            );
            let _ = cache.username();
            for now in [0, 1_800_000_000, u64::MAX] {
                let _ = cache.tgt(now);
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.contains(CACHE_PATH),
                "error without the file: {message}"
            );
        }
    }
    static AS: OnceLock<std::sync::Arc<LocalAs>> = OnceLock::new();
    let local_as = AS.get_or_init(|| {
        let cache = TicketCache::parse(path, &fixed_cache()).unwrap_or_else(|e| panic!("{e}"));
        LocalAs::new(&cache, 1_800_000_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    });
    let mut framed = u32::try_from(data.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(data);
    let _ = local_as.answer(&framed);
}

/// A version 4 cache of `alice@FLEET.TEST` with one AES-256 TGT (the ticket itself is not
/// DER: the AS must fail cleanly when it cannot re-encode it).
fn fixed_cache() -> Vec<u8> {
    fn data(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    fn principal(out: &mut Vec<u8>, name_type: u32, parts: &[&str]) {
        out.extend_from_slice(&name_type.to_be_bytes());
        out.extend_from_slice(&u32::try_from(parts.len()).unwrap_or(0).to_be_bytes());
        data(out, b"FLEET.TEST");
        for part in parts {
            data(out, part.as_bytes());
        }
    }
    let mut out = vec![0x05, 0x04, 0, 0];
    principal(&mut out, 1, &["alice"]);
    principal(&mut out, 1, &["alice"]);
    principal(&mut out, 2, &["krbtgt", "FLEET.TEST"]);
    out.extend_from_slice(&18u16.to_be_bytes());
    data(&mut out, &[7; 32]);
    for time in [
        1_700_000_000u32,
        1_700_000_000,
        1_900_000_000,
        1_900_000_000,
    ] {
        out.extend_from_slice(&time.to_be_bytes());
    }
    out.push(0);
    out.extend_from_slice(&0x4081_0000u32.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    data(&mut out, b"not a ticket");
    data(&mut out, b"");
    out
}
