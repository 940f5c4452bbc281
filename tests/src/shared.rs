//! Locating `../shared`, the reference material that lives beside the repository.
//!
//! Tests that read it find it at `$PSFLEET_SHARED` or `<repo>/../shared`. Where it is absent
//! (a user's clone) they skip with a printed line, except under `CI=true`, where its absence
//! fails the run: CI always has it, so a silent skip there would hide a broken set-up.

use std::path::PathBuf;

/// The shared directory, or `None` (after printing why) when a test should skip.
///
/// # Panics
/// Under `CI=true` when the directory is missing.
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    let candidate = match std::env::var_os("PSFLEET_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    if candidate.join("conformance").is_dir() {
        return Some(candidate);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "{test}: the shared reference directory {} is missing (set PSFLEET_SHARED); under CI=true this fails the run",
        candidate.display()
    );
    println!(
        "{test}: skipped, no shared reference directory at {} (set PSFLEET_SHARED to run it)",
        candidate.display()
    );
    None
}
