//! Crash safety, smoke size: five cycles each of scripts/crash-kill (SIGKILL mid-run) and
//! scripts/crash-powerloss (ext4 shutdown ioctl on a loop-mounted state directory), through
//! `tests/crash/harness.py` and the `psfleet` binary (docs/reliability.md has the full
//! figures: 200 and 100 cycles, run by hand).
//!
//! The power-loss smoke needs root and a loop device; without them it says so and skips.
//! Both skip, saying so, when the binary's `psfleet run` is not wired in this build.

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// Cycles of each smoke run.
const CYCLES: u32 = 5;

#[test]
fn sigkill_mid_run_loses_no_acknowledged_result() {
    smoke("kill");
}

#[test]
fn power_loss_mid_run_loses_no_acknowledged_result() {
    let root = effective_uid() == Some(0);
    let loop_ok = Path::new("/dev/loop-control").exists()
        && ["mkfs.ext4", "mount", "umount"]
            .iter()
            .all(|tool| which(tool));
    if !root || !loop_ok {
        println!(
            "crash powerloss smoke skipped: needs root, /dev/loop-control and mkfs.ext4 (root: {root}, loop and tools: {loop_ok})"
        );
        return;
    }
    smoke("powerloss");
}

/// Runs the harness for [`CYCLES`] cycles and checks its summary.
fn smoke(mode: &str) {
    let bin = crate::cli::binary();
    if !run_is_wired(bin) {
        println!("crash {mode} smoke skipped: `psfleet run` is not wired in this build");
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = std::env::var_os("PSFLEET_PYTHON").unwrap_or_else(|| "python3".into());
    // Each mode its own loopback block, apart from the other tests' 127.100-127.250.
    let first_address = if mode == "kill" {
        "127.62.0.1"
    } else {
        "127.63.0.1"
    };
    let output = Command::new(python)
        .arg(workspace.join("tests/crash/harness.py"))
        .arg(mode)
        .arg("--psfleet")
        .arg(bin)
        .args(["--cycles", &CYCLES.to_string()])
        .args(["--hosts", "40", "--forks", "16", "--seed", "8"])
        .args(["--first-address", first_address])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with(&format!("crash-{mode} summary: ")))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    for figure in [
        format!("cycles run {CYCLES}, cycles passed {CYCLES}"),
        "acknowledged results lost 0".to_owned(),
        "reopen failures 0".to_owned(),
        "finished hosts rerun 0".to_owned(),
        "resume failures 0".to_owned(),
    ] {
        assert!(summary.contains(&figure), "{figure:?} not in {summary}");
    }
}

/// False when `psfleet run` answers "not available in this build" (exit 5).
fn run_is_wired(bin: &Path) -> bool {
    let out = Command::new(bin)
        .args(["run", "-i", "/dev/null/none.csv", "-c", "'x'"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stderr).contains("not available in this build")
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join(tool).exists())
            || ["/sbin", "/usr/sbin"]
                .iter()
                .any(|dir| Path::new(dir).join(tool).exists())
    })
}

/// The effective user id, from /proc (no unsafe libc call).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
