//! The state store under crashes: a child process writes a run through the real store (real
//! files, real fsync, real sled) and is SIGKILLed, or SIGKILLs itself, at varying points;
//! the parent reopens the store and checks that every record the child saw acknowledged is in
//! the journal, that hosts in flight read back as Interrupted, and that a resume finishes the
//! run with every host done exactly once. Then a damaged cache is moved aside and rebuilt.
//!
//! The child is this same test binary, run with `--ignored --exact state::kill_child` and the
//! run to write in environment variables.

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use psfleet_core::taxonomy::Bucket;
use psfleet_engine::journal::{EndReason, RunMeta};
use psfleet_engine::record::{HostRecord, JobKind, RunId, Status};
use psfleet_engine::store::Store;

/// Hosts in the run the child writes.
const HOSTS: usize = 3000;
/// Concurrent reporting tasks in the child (so acknowledgements are group-committed).
const TASKS: usize = 16;

const ENV_DIR: &str = "PSFLEET_STATE_CHILD_DIR";
const ENV_RUN: &str = "PSFLEET_STATE_CHILD_RUN";
const ENV_SELF_KILL: &str = "PSFLEET_STATE_CHILD_SELF_KILL";

#[test]
fn acknowledged_records_survive_sigkill_and_resume_finishes_every_host_once() {
    // Kill points in acknowledged records; the last cycle's child kills itself.
    let cycles: [(usize, bool); 6] = [
        (1, false),
        (37, false),
        (400, false),
        (1234, false),
        (2900, false),
        (777, true),
    ];
    let mut lines = Vec::new();
    for (cycle, (kill_after, self_kill)) in cycles.into_iter().enumerate() {
        let state_dir = temp_dir(&format!("kill-{cycle}"));
        let run_id = RunId(format!("20260101T000000Z-{cycle:04x}"));
        let acked = run_child_and_kill(&state_dir, &run_id, kill_after, self_kill);
        assert!(
            acked.len() >= kill_after,
            "cycle {cycle}: child acknowledged {} before dying, wanted at least {kill_after}",
            acked.len()
        );

        let store = Store::open(&state_dir).unwrap();
        let rebuilt = store.rebuilt().map(|r| r.reason.clone());
        let state = store.load_run(&run_id).unwrap();
        let done: BTreeSet<&str> = state.done.keys().map(String::as_str).collect();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|h| !done.contains(h.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} acknowledged record(s) missing after SIGKILL, e.g. {:?}",
            lost.len(),
            lost.first()
        );
        for (host, record) in &state.done {
            assert_eq!(
                record,
                &record_for(&run_id, host),
                "{host} read back intact"
            );
        }
        // Started and not done: reported Interrupted, never silently dropped.
        for host in &state.in_flight {
            assert!(!done.contains(host.as_str()));
        }
        let records = state.records();
        assert_eq!(records.len(), state.done.len() + state.in_flight.len());
        assert!(
            records
                .iter()
                .filter(|r| state.in_flight.contains(&r.host))
                .all(|r| r.bucket == Some(Bucket::Interrupted))
        );
        // The index agrees with the journal after the crash.
        let summary = store
            .runs()
            .unwrap()
            .into_iter()
            .find(|r| r.run_id == run_id)
            .unwrap();
        assert_eq!(summary.done, state.done.len() as u64);
        assert_eq!(summary.interrupted, state.in_flight.len() as u64);

        // Resume without rerunning the interrupted hosts, then finish.
        let hosts = host_names();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (state, writer) = store.resume_run(&run_id, false).unwrap();
        let plan = state.resume_plan(hosts.iter().cloned(), false);
        assert_eq!(plan.skip.len(), state.done.len());
        assert_eq!(plan.interrupted.len(), state.in_flight.len());
        assert_eq!(
            plan.skip.len() + plan.interrupted.len() + plan.run.len(),
            HOSTS
        );
        rt.block_on(async {
            for host in &plan.run {
                writer.host_started(host).await.unwrap();
                writer.host_done(record_for(&run_id, host)).await.unwrap();
            }
            writer.finish(EndReason::Completed).await.unwrap();
        });
        let end = store.load_run(&run_id).unwrap();
        assert_eq!(end.done.len() + end.in_flight.len(), HOSTS);
        assert_eq!(end.in_flight.len(), plan.interrupted.len());
        let done_lines = count_done_lines(&state_dir, &run_id);
        assert!(
            done_lines.values().all(|n| *n == 1),
            "cycle {cycle}: a host was recorded done twice"
        );
        assert_eq!(done_lines.len(), end.done.len());
        lines.push(format!(
            "cycle {cycle}: {} after {} acks: {} acknowledged, {} durable, {} in flight \
             (Interrupted), torn tail {:?}, cache {}",
            if self_kill { "self-SIGKILL" } else { "SIGKILL" },
            kill_after,
            acked.len(),
            state.done.len(),
            state.in_flight.len(),
            state.torn_tail.as_ref().map(|t| t.bytes),
            rebuilt.unwrap_or_else(|| "clean".into())
        ));
        drop(store);
        drop(rt);
        remove_dir_best_effort(&state_dir);
    }
    for line in lines {
        println!("state kill test: {line}");
    }
}

#[test]
fn a_garbled_cache_is_moved_aside_and_rebuilt_with_the_leaked_shells() {
    let state_dir = temp_dir("garble");
    let run_id = RunId("20260101T000000Z-beef".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        let store = Store::open(&state_dir).unwrap();
        let writer = store
            .begin_run(RunMeta::new(run_id.clone(), JobKind::Script, 40))
            .unwrap();
        rt.block_on(async {
            for host in host_names().iter().take(40) {
                writer.host_started(host).await.unwrap();
                writer
                    .shell_opened(host, &format!("{host}-S"))
                    .await
                    .unwrap();
                // Hosts whose number ends in 0, 4 or 8 leak their shell: 12 of 40.
                if !host.ends_with('0') && !host.ends_with('4') && !host.ends_with('8') {
                    writer
                        .shell_closed(host, &format!("{host}-S"))
                        .await
                        .unwrap();
                }
                writer.host_done(record_for(&run_id, host)).await.unwrap();
            }
            writer.finish(EndReason::Completed).await.unwrap();
        });
        assert_eq!(store.open_shells().unwrap().len(), 12);
    }
    let cache = state_dir.join(psfleet_engine::cache::CACHE_DIR);
    let mut garbled = 0;
    for entry in fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let len = fs::metadata(&path).unwrap().len().max(512) as usize;
            fs::write(&path, vec![0xA5u8; len]).unwrap();
            garbled += 1;
        }
    }
    assert!(garbled > 0);

    let store = Store::open(&state_dir).unwrap();
    let rebuilt = store.rebuilt().expect("a garbled cache is noticed").clone();
    println!("state garbled cache: {rebuilt}");
    let moved = rebuilt.moved_to.expect("a damaged cache is moved aside");
    assert!(moved.is_dir());
    assert!(
        moved
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("cache.broken-")
    );
    assert_eq!(rebuilt.runs, 1);
    let leaks: BTreeSet<String> = store
        .open_shells()
        .unwrap()
        .into_iter()
        .map(|s| s.shell_id)
        .collect();
    assert_eq!(leaks.len(), 12);
    assert!(leaks.contains("host0000-S") && leaks.contains("host0008-S"));
    let runs = store.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].done, 40);
    drop(store);
    // The rebuilt cache is whole: the next open is clean.
    let store = Store::open(&state_dir).unwrap();
    assert!(store.rebuilt().is_none(), "{:?}", store.rebuilt());
    drop(store);
    remove_dir_best_effort(&state_dir);
}

/// The child: writes the run named in the environment through the store, printing `ACK host`
/// once each record is acknowledged (durable). Killed by the parent, or kills itself after
/// `PSFLEET_STATE_CHILD_SELF_KILL` acknowledgements.
#[test]
#[ignore = "child process of the kill test; run by it"]
fn kill_child() {
    let (Ok(dir), Ok(run)) = (std::env::var(ENV_DIR), std::env::var(ENV_RUN)) else {
        return;
    };
    let self_kill: Option<usize> = std::env::var(ENV_SELF_KILL)
        .ok()
        .and_then(|v| v.parse().ok());
    let run_id = RunId(run);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(Path::new(&dir)).unwrap();
    let writer = store
        .begin_run(RunMeta::new(run_id.clone(), JobKind::Script, HOSTS as u64))
        .unwrap();
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    rt.block_on(async {
        let hosts = std::sync::Arc::new(host_names());
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let writer = writer.clone();
            let hosts = hosts.clone();
            let run_id = run_id.clone();
            let acks = acks.clone();
            tasks.push(tokio::spawn(async move {
                for host in hosts.iter().skip(t).step_by(TASKS) {
                    writer.host_started(host).await.unwrap();
                    writer.host_done(record_for(&run_id, host)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {host}").unwrap();
                    out.flush().unwrap();
                    drop(out);
                    let n = acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if self_kill == Some(n) {
                        sigkill_self();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    // Reaching here means no kill came: block so the parent's kill still lands mid-life.
    std::thread::sleep(Duration::from_secs(30));
}

/// SIGKILLs this process at once (no external `kill` program: a fresh machine may lack procps).
fn sigkill_self() -> ! {
    // SAFETY: kill(2) with our own pid and a valid signal number touches no memory.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    panic!(
        "kill(getpid(), SIGKILL) returned {rc}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs the child until it has printed `kill_after` acknowledgements, SIGKILLs it (or lets
/// it kill itself), and returns every host it acknowledged.
fn run_child_and_kill(
    state_dir: &Path,
    run_id: &RunId,
    kill_after: usize,
    self_kill: bool,
) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    // Beside the state directory, not in it: the store must see only what the child wrote.
    let stderr_path = state_dir.with_extension("stderr");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "state::kill_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ENV_DIR, state_dir)
    .env(ENV_RUN, &run_id.0)
    .stdout(Stdio::piped())
    .stderr(Stdio::from(fs::File::create(&stderr_path).unwrap()));
    if self_kill {
        cmd.env(ENV_SELF_KILL, kill_after.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        // Not a prefix match: libtest prints `test state::kill_child ... ` without a newline
        // before the test runs, so the first acknowledgement shares that line.
        if let Some(host) = line.find("ACK ").map(|i| &line[i + 4..]) {
            acked.push(host.to_owned());
            if !self_kill && !killed && acked.len() >= kill_after {
                child.kill().unwrap(); // SIGKILL on Unix
                killed = true;
            }
        }
    }
    // The pipe closed: the child is dead. Lines read after the kill were printed before it,
    // so they were acknowledged too.
    let status = child.wait().unwrap();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = fs::remove_file(&stderr_path);
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the child was to die by SIGKILL after {} acknowledgement(s), killed by us: {killed}; \
             it ended {status:?}; its standard error:\n{stderr}",
            acked.len()
        );
    }
    acked
}

fn host_names() -> Vec<String> {
    (0..HOSTS).map(|i| format!("host{i:04}")).collect()
}

/// The record the child writes for a host: deterministic, so the parent can compare.
fn record_for(run_id: &RunId, host: &str) -> HostRecord {
    let n: u64 = host.trim_start_matches("host").parse().unwrap_or(0);
    let bucket = match n % 5 {
        0 => Some(Bucket::AccessDenied),
        1 => Some(Bucket::Timeout),
        _ => None,
    };
    HostRecord {
        run_id: run_id.clone(),
        host: host.to_owned(),
        address: Some(format!("127.20.{}.{}", n / 250, n % 250 + 1)),
        group: Some(format!("g{}", n % 3)),
        job: JobKind::Script,
        status: if bucket.is_some() {
            Status::Failed
        } else {
            Status::Succeeded
        },
        bucket,
        message: bucket.map_or_else(|| "ok".to_owned(), |b| b.message(host, "5985")),
        attempts: 1 + (n % 3) as u32,
        started: "2026-01-01T00:00:00.000Z".into(),
        finished: "2026-01-01T00:00:01.000Z".into(),
        duration_ms: 1000 + n,
        exit_code: Some(0),
        pipeline_state: Some("Completed".into()),
        error_id: None,
        output_excerpt: format!("{host} says hello\n{}", "x".repeat((n % 200) as usize)),
        output: vec![serde_json::json!({ "host": host, "n": n })],
        output_truncated: 0,
        errors: vec![],
        warnings: vec![],
    }
}

/// How many `done` lines each host has in the run's journal (read raw, not through replay).
fn count_done_lines(state_dir: &Path, run_id: &RunId) -> HashMap<String, usize> {
    let path = state_dir
        .join(psfleet_engine::journal::RUNS_DIR)
        .join(&run_id.0)
        .join(psfleet_engine::journal::JOURNAL_FILE);
    let mut counts = HashMap::new();
    for line in fs::read_to_string(path).unwrap().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["type"] == "done" {
            *counts
                .entry(v["record"]["host"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    counts
}

/// Removes a test's state directory. A failure is not the test's verdict: sled's background
/// threads may still be finishing a file when the store is dropped, so try a few times and
/// then leave the directory to the temp cleaner, saying so.
pub(crate) fn remove_dir_best_effort(dir: &Path) {
    for _ in 0..5 {
        match fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    println!(
        "state test: left {} behind (could not remove it)",
        dir.display()
    );
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("psfleet-it-{name}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}
