//! Replays the committed fuzz inputs on the stable toolchain: every file under
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the same
//! `psfleet_core::fuzzing` function the cargo-fuzz target calls, so a crash found once stays
//! fixed without nightly or libFuzzer. See docs/fuzzing.md.

use std::collections::BTreeSet;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A `psfleet_core::fuzzing` (or `psfleet_inventories::fuzzing`, `psfleet_cli::fuzzing`) function: arbitrary bytes in, a panic when something is wrong.
type Target = fn(&[u8]);

/// Target name (the directory under `fuzz/corpus` and `fuzz/regressions`, and
/// `fuzz/fuzz_targets/<name>.rs`) to the function both the target and this replay call.
const TARGETS: &[(&str, Target)] = &[
    ("clixml", psfleet_core::fuzzing::clixml),
    ("config", psfleet_cli::fuzzing::config),
    ("encryption", psfleet_core::fuzzing::encryption),
    ("inventory_csv", psfleet_inventories::fuzzing::inventory_csv),
    ("inventory_ini", psfleet_inventories::fuzzing::inventory_ini),
    (
        "inventory_text",
        psfleet_inventories::fuzzing::inventory_text,
    ),
    (
        "inventory_yaml",
        psfleet_inventories::fuzzing::inventory_yaml,
    ),
    ("psrp_fragments", psfleet_core::fuzzing::psrp_fragments),
    ("psrp_message", psfleet_core::fuzzing::psrp_message),
    ("ticket_cache", psfleet_cli::fuzzing::ticket_cache),
    ("wsman_request", psfleet_core::fuzzing::wsman_request),
    ("wsman_response", psfleet_core::fuzzing::wsman_response),
    ("xml", psfleet_core::fuzzing::xml),
];

#[test]
fn fuzz_inputs_replay_without_panics() -> std::io::Result<()> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let known: BTreeSet<&str> = TARGETS.iter().map(|(name, _)| *name).collect();

    // The table, the cargo-fuzz targets and the corpus directories name the same targets.
    let fuzz_targets = names_in(&fuzz.join("fuzz_targets"), |p| p.is_file(), ".rs")?;
    let corpus_dirs = names_in(&fuzz.join("corpus"), Path::is_dir, "")?;
    let regression_dirs = names_in(&fuzz.join("regressions"), Path::is_dir, "")?;
    let table: BTreeSet<String> = known.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        fuzz_targets, table,
        "fuzz/fuzz_targets/*.rs and the TARGETS table in tests/integration/fuzz_replay.rs differ"
    );
    for dir in corpus_dirs.iter().chain(&regression_dirs) {
        assert!(
            known.contains(dir.as_str()),
            "fuzz input directory {dir:?} has no function in the TARGETS table of tests/integration/fuzz_replay.rs"
        );
    }
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml"))?;
    for name in &known {
        assert!(
            corpus_dirs.contains(*name),
            "target {name:?} has no seed corpus in fuzz/corpus/{name}/"
        );
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "target {name:?} has no [[bin]] in fuzz/Cargo.toml"
        );
    }

    let mut inputs = 0usize;
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        let mut files = Vec::new();
        for kind in ["corpus", "regressions"] {
            files.extend(files_in(&fuzz.join(kind).join(name))?);
        }
        assert!(!files.is_empty(), "target {name:?} has no inputs to replay");
        for file in files {
            let data = std::fs::read(&file).map_err(|e| context(e, &file))?;
            inputs += 1;
            if panic::catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz inputs that panic (message above each): {failures:#?}"
    );
    // Straight to stdout, past the test harness's capture, so every run shows the count.
    let _ = writeln!(
        std::io::stdout(),
        "fuzz replay: targets={} inputs={inputs}",
        TARGETS.len()
    );
    Ok(())
}

/// Names of the entries of `dir` that pass `keep`, with `suffix` removed (entries without
/// it and hidden files are left out). A missing directory has none.
fn names_in(
    dir: &Path,
    keep: impl Fn(&Path) -> bool,
    suffix: &str,
) -> std::io::Result<BTreeSet<String>> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|path| keep(path))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let stem = name.strip_suffix(suffix)?;
            (!stem.starts_with('.')).then(|| stem.to_owned())
        })
        .collect())
}

/// The input files of one target directory, sorted; hidden files (`.gitkeep`) are not inputs.
fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = entries(dir)?
        .into_iter()
        .filter(|path| path.is_file())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The paths in `dir`; a missing directory is empty.
fn entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| context(e, dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(context(e, dir)),
    }
}

/// Names the path in an I/O error.
fn context(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
