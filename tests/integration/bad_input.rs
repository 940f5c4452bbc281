//! The `psfleet` binary against bad input (issue 8 item 5, docs/cli.md "Exit codes"):
//! malformed inventories (exit 4, file:line, nothing written to the state directory),
//! conflicting options (exit 4, both named), an unusable state directory (exit 6, nothing
//! run) and a full disk while writing reports or standard output (exit 7, the journal
//! complete and still readable by `psfleet runs` and `psfleet report`).
//!
//! Failures are real, also as root (CI runs as root, and chmod does not stop root): a state
//! directory below a regular file (ENOTDIR), a lock held by another process, a read-only
//! bind mount in a private mount namespace (`unshare -m`, skipped with a printed line where
//! the machine does not allow it), mode 0500 when not root; a full disk is `/dev/full`
//! (ENOSPC on every write) behind a report's path or as standard output.

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use super::cli::{Sandbox, SimFleet, env_refs, text};

/// The exit codes (docs/cli.md, "Exit codes").
const USAGE: i32 = 4;
const STATE: i32 = 6;
const OUTPUT: i32 = 7;

/// Every file under `dir` with its bytes: equal snapshots mean nothing was written.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_owned();
            if path.is_dir() {
                out.insert(relative.join(""), Vec::new());
                walk(root, &path, out);
            } else {
                out.insert(relative, std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A state directory holding a real store (the sled cache and its lock file) and one
/// journaled script run of `hostname` (srv1 done): what an operator's state looks like.
fn populated_state(state: &Path) -> String {
    use psfleet_engine::journal::{EndReason, Entry, Journal, RunEnd, RunMeta};
    use psfleet_engine::record::{HostRecord, JobKind, RunId, Status};
    drop(psfleet_engine::store::Store::open(state).unwrap());
    let id = "20261121T100000Z-aaaa";
    let meta = RunMeta::new(RunId(id.into()), JobKind::Script, 1).with_script("hostname");
    let mut journal = Journal::create(state, &meta).unwrap();
    let record = HostRecord {
        run_id: RunId(id.into()),
        host: "srv1".into(),
        address: Some("127.0.0.1".into()),
        group: None,
        job: JobKind::Script,
        status: Status::Succeeded,
        bucket: None,
        message: "ok".into(),
        attempts: 1,
        started: "2026-11-21T10:00:00.000Z".into(),
        finished: "2026-11-21T10:00:01.000Z".into(),
        duration_ms: 1000,
        exit_code: None,
        pipeline_state: Some("Completed".into()),
        error_id: None,
        output_excerpt: "srv1".into(),
        output: vec![],
        output_truncated: 0,
        errors: vec![],
        warnings: vec![],
    };
    for entry in [
        Entry::Started {
            host: "srv1".into(),
            at: "2026-11-21T10:00:00.000Z".into(),
        },
        Entry::Done {
            record: Box::new(record),
        },
        Entry::End(RunEnd {
            at: "2026-11-21T10:00:02.000Z".into(),
            reason: EndReason::Completed,
        }),
    ] {
        journal.append(&entry).unwrap();
    }
    journal.commit().unwrap();
    id.to_owned()
}

fn explain(args: &[&str], out: &Output) -> String {
    format!(
        "psfleet {args:?} exited {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// A host no test here may reach: if a run started by mistake, it would fail (exit 2), not
/// exit with the code under test.
const HOST_CSV: &str = "name,address,port\nsrv1,127.0.0.1,9\n";

/// The user and password `run` needs to get as far as the state directory.
const CREDENTIALS: [(&str, &str); 2] = [
    ("PSFLEET_USER", "FLEET\\ops"),
    ("PSFLEET_PASSWORD", "not-a-real-password"),
];

#[test]
fn malformed_inventories_exit_4_with_file_and_line_and_write_nothing_to_the_state() {
    let sb = Sandbox::new("bad-inventories");
    let state = sb.root.join("state-populated");
    populated_state(&state);
    let before = snapshot(&state);
    assert!(before.keys().any(|p| p.starts_with("runs")), "{before:?}");
    let absent = sb.root.join("state-absent");

    // (format, text, the line the error names): the library-level cases of
    // tests/integration/inventories.rs, here through the binary.
    let cases: &[(&str, &str, usize)] = &[
        ("csv", "address,port\n1.2.3.4,5985\n", 1),
        ("csv", "name,,port\n", 1),
        ("csv", "name,hostname\nsrv1,srv1\n", 1),
        ("csv", "name,port\nsrv1,5985\n\nsrv2,5985,extra\n", 4),
        ("csv", "name,port\nsrv1\n", 2),
        ("csv", "name,port\n# c\n,5985\n", 3),
        ("csv", "name,password\nsrv1,hunter2\n", 2),
        ("csv", "name,group\nsrv1,web:prod\n", 2),
        ("csv", "name\nbad host\n", 2),
        ("csv", "name,port\nsrv1,abc\n", 2),
        ("csv", "name,ansible_connection\nsrv1,ssh\n", 2),
        ("text", "srv1 ansible_port=1\n", 1),
        ("text", "a\nsrv1,srv2\n", 2),
        ("text", "a\nb\nsrv[1:\n", 3),
        ("text", "srv1:0\n", 1),
        ("text", "srv1:65536\n", 1),
        ("text", "\n\nweb[5:1]\n", 3),
        ("text", "web[01:1000]\n", 1),
        ("text", "web[1:2:0]\n", 1),
        ("text", "srv]1\n", 1),
        ("text", "web[a:9]\n", 1),
        ("ini", "[web:hosts2]\n", 1),
        ("ini", "[web]\nw1\n[bad group]\n", 3),
        ("ini", "[web]\nw1 ansible_port\n", 2),
        ("ini", "[web]\nw1\n[web:vars]\nport 5986\n", 4),
        ("ini", "[web:children]\nbad group\n", 2),
        ("ini", "[web]\nw1 owner='Team A\n", 2),
        ("ini", "[x]\nh\n[web:vars]\na=1\n", 3),
        ("ini", "[web]\nw1\n[prod:children]\nweb\ndb\n", 5),
        ("ini", "---\nall:\n", 1),
        ("ini", "[web]\nw1:\n", 2),
        ("ini", "[a:children]\nb\n[b:children]\na\n[a]\n[b]\n", 4),
        ("ini", "[web]\nw1 ansible_password=Secret1\n", 2),
        ("ini", "[web]\nw1\n[web:vars]\nansible_port=http\n", 4),
        ("yaml", "- srv1\n", 1),
        ("yaml", "all:\n  hosts:\n    - srv1\n", 3),
        ("yaml", "all:\n  vars: [a]\n", 2),
        ("yaml", "all:\n  hosts:\n    srv1: [a]\n", 3),
        (
            "yaml",
            "all:\n  hosts:\n    srv1:\n      ansible_password: Secret1\n",
            4,
        ),
        ("yaml", "all:\n  hosts:\n    srv1:\n  bad: [\n", 5),
        ("yaml", "all: {hosts: {a: }}\n---\nb: {}\n", 2),
        ("yaml", "plugin: aws_ec2\n", 1),
        (
            "yaml",
            "all:\n  children:\n    web:\n      hosts:\n        w[3:1]:\n",
            5,
        ),
        (
            "yaml",
            "all:\n  children:\n    a:\n      children:\n        all:\n",
            5,
        ),
        ("yaml", "x: *nope\n", 1),
        (
            "yaml",
            "all:\n  hosts:\n    srv1:\n      ansible_winrm_scheme: ftp\n",
            4,
        ),
        (
            "yaml",
            "all:\n  hosts:\n    srv1:\n      ansible_connection: local\n",
            4,
        ),
    ];
    fn extension(format: &str) -> &str {
        match format {
            "text" => "txt",
            "yaml" => "yml",
            other => other,
        }
    }
    let mut per_format: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (format, body, line)) in cases.iter().enumerate() {
        let file = sb.write(&format!("work/bad-{i}.{}", extension(format)), body);
        let file = file.to_str().unwrap();
        // run (the common case), and sweep and cleanup for one case of each format.
        let mut commands: Vec<Vec<&str>> = vec![vec!["run", "-c", "hostname"]];
        if !per_format.contains_key(format) {
            commands.push(vec!["sweep"]);
            commands.push(vec!["cleanup"]);
        }
        for (command, state_dir) in commands.iter().flat_map(|c| [(c, &state), (c, &absent)]) {
            let mut args = command.clone();
            args.extend([
                "-i",
                file,
                "--inventory-format",
                format,
                "--state-dir",
                state_dir.to_str().unwrap(),
            ]);
            let out = sb.run(&args, &CREDENTIALS);
            let why = explain(&args, &out);
            assert_eq!(out.status.code(), Some(USAGE), "{body:?}\n{why}");
            let stderr = text(&out.stderr);
            assert!(
                // `file:line: ` (and `file:line:column: ` for YAML).
                stderr.contains(&format!("{file}:{line}:")),
                "{body:?} should name {file}:{line}\n{why}"
            );
            assert!(!stderr.contains("panicked"), "{why}");
            assert!(!absent.exists(), "{why}: created {}", absent.display());
        }
        assert_eq!(
            snapshot(&state),
            before,
            "{body:?}: the state directory changed"
        );
        *per_format.entry(format).or_default() += 1;
    }
    assert!(
        per_format.len() == 4 && per_format.values().all(|&n| n >= 10),
        "{per_format:?}"
    );
    let _ = writeln!(
        std::io::stdout(),
        "bad_input: malformed inventories through the binary, exit 4 with file:line, state \
         untouched: {per_format:?}"
    );
}

#[test]
fn conflicting_options_exit_4_naming_both_and_run_nothing() {
    let sb = Sandbox::new("bad-conflicts");
    sb.write("work/hosts.csv", HOST_CSV);
    sb.write("work/client.pem", "not used");
    sb.write("work/script.ps1", "hostname");
    let state = sb.root.join("state-conflicts");
    let thumb = "aa".repeat(20);
    let run = ["run", "-i", "hosts.csv", "-c", "hostname"];
    // (extra arguments, texts the error must contain: both options)
    let cases: Vec<(Vec<&str>, [&str; 2])> = vec![
        (
            vec!["run", "-i", "hosts.csv", "-c", "x", "--cmd", "y"],
            ["--script", "--cmd"],
        ),
        (
            vec!["run", "-i", "hosts.csv", "script.ps1", "-c", "x"],
            ["--script", "SCRIPT_FILE"],
        ),
        (
            vec!["run", "-i", "hosts.csv", "script.ps1", "--cmd", "x"],
            ["--cmd", "SCRIPT_FILE"],
        ),
        (
            vec!["run", "-i", "hosts.csv", "--cmd", "dir", "--argument", "a"],
            ["--argument", "--cmd"],
        ),
        // No work at all: what to give, and that --resume alone recalls it.
        (
            vec!["run", "-i", "hosts.csv"],
            ["-c SCRIPT", "--resume RUN alone"],
        ),
        (
            vec![
                "run",
                "-i",
                "hosts.csv",
                "--argument",
                "a",
                "--resume",
                "last",
            ],
            ["--argument", "--resume"],
        ),
        (
            run_with(&run, &["--rerun-interrupted"]),
            ["--rerun-interrupted", "--resume"],
        ),
        (run_with(&run, &["-q", "-v"]), ["--quiet", "--verbose"]),
        (
            run_with(&run, &["--use-ssl=false", "--ca-file", "ca.pem"]),
            ["--use-ssl=false", "--ca-file"],
        ),
        (
            run_with(
                &run,
                &["--use-ssl=false", "--certificate-thumbprint", &thumb],
            ),
            ["--use-ssl=false", "--certificate-thumbprint"],
        ),
        (
            run_with(&run, &["--skip-ca-check", "--use-ssl=false"]),
            ["--use-ssl=false", "--skip-ca-check"],
        ),
        (
            run_with(&run, &["--use-ssl=false", "--skip-cn-check"]),
            ["--use-ssl=false", "--skip-cn-check"],
        ),
        (
            run_with(
                &run,
                &["--encryption", "never", "--allow-unencrypted=false"],
            ),
            ["--encryption never", "--allow-unencrypted=false"],
        ),
        (
            run_with(
                &run,
                &["--authentication", "basic", "--encryption", "always"],
            ),
            ["--authentication basic", "--encryption always"],
        ),
        (
            run_with(
                &run,
                &[
                    "--authentication",
                    "ntlm",
                    "--certificate-file",
                    "client.pem",
                ],
            ),
            ["--authentication ntlm", "--certificate-file"],
        ),
        (
            run_with(
                &run,
                &[
                    "--authentication",
                    "certificate",
                    "--use-ssl",
                    "--certificate-file",
                    "client.pem",
                    "--password-file",
                    "client.pem",
                ],
            ),
            ["--authentication certificate", "--password-file"],
        ),
        (
            run_with(&run, &["--certificate-key-file", "client.pem"]),
            ["--certificate-key-file", "--certificate-file"],
        ),
        (
            run_with(&run, &["--authentication", "certificate"]),
            ["--authentication", "--use-ssl"],
        ),
        (vec!["run", "-i", "-", "-"], ["standard input", "script"]),
        (vec!["diff", "last", "last"], ["same run", "last"]),
        (
            vec![
                "sweep",
                "-i",
                "hosts.csv",
                "--use-ssl=false",
                "--ca-file",
                "ca.pem",
            ],
            ["--use-ssl=false", "--ca-file"],
        ),
    ];
    for (args, [first, second]) in &cases {
        let mut args = args.clone();
        let state_arg = state.to_str().unwrap();
        args.extend(["--state-dir", state_arg]);
        let out = sb.run(&args, &CREDENTIALS);
        let why = explain(&args, &out);
        assert_eq!(out.status.code(), Some(USAGE), "{why}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(first) && stderr.contains(second), "{why}");
        assert!(!state.exists(), "{why}: the state directory was created");
    }

    // --resume of a run with another script, or as another kind of job: refused before
    // the run is touched.
    let id = populated_state(&state);
    let before = snapshot(&state);
    for (extra, option) in [
        (vec!["-c", "Get-Date"], "the script"),
        (vec!["--cmd", "hostname"], "--cmd"),
    ] {
        for resume in [id.as_str(), "last"] {
            let mut args = vec!["run", "-i", "hosts.csv", "--state-dir"];
            args.push(state.to_str().unwrap());
            args.extend(extra.iter().copied());
            args.extend(["--resume", resume]);
            let out = sb.run(&args, &CREDENTIALS);
            let why = explain(&args, &out);
            let stderr = text(&out.stderr);
            if option == "--cmd" && resume == "last" {
                // `last` is the newest run of the same kind: there is no cmd run.
                assert_eq!(out.status.code(), Some(USAGE), "{why}");
                assert!(stderr.contains("--resume last"), "{why}");
            } else {
                assert_eq!(out.status.code(), Some(USAGE), "{why}");
                assert!(
                    stderr.contains(&format!("--resume {resume}")) && stderr.contains(option),
                    "{why}"
                );
            }
            let after = snapshot(&state);
            let journals = |s: &BTreeMap<PathBuf, Vec<u8>>| {
                s.iter()
                    .filter(|(p, _)| p.starts_with("runs"))
                    .map(|(p, b)| (p.clone(), b.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                journals(&after),
                journals(&before),
                "{why}: a journal changed"
            );
        }
    }
    let _ = writeln!(
        std::io::stdout(),
        "bad_input: {} conflicting option sets and 4 refused resumes, exit 4 naming both",
        cases.len()
    );
}

fn run_with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

#[test]
fn an_unusable_state_directory_exits_6_names_it_and_runs_nothing() {
    let sb = Sandbox::new("bad-state");
    sb.write("work/hosts.csv", HOST_CSV);
    let run = |state: &Path, command: &[&str]| {
        let mut args: Vec<&str> = command.to_vec();
        args.extend(["--state-dir", state.to_str().unwrap()]);
        let out = sb.run(&args, &CREDENTIALS);
        let why = explain(&args, &out);
        (out, why)
    };
    let run_cmd: &[&str] = &["run", "-i", "hosts.csv", "-c", "hostname"];
    let mut checked = Vec::new();

    // Below a regular file (ENOTDIR), and a regular file itself.
    let file = sb.write("work/not-a-directory", "x");
    for state in [file.join("state"), file.clone()] {
        for command in [run_cmd, &["sweep", "-i", "hosts.csv"], &["runs"]] {
            let (out, why) = run(&state, command);
            assert_eq!(out.status.code(), Some(STATE), "{why}");
            let stderr = text(&out.stderr);
            assert!(stderr.contains(state.to_str().unwrap()), "{why}");
            assert!(stderr.contains("is a file, not a directory"), "{why}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
    checked.push("not a directory");

    // Locked by another process (a psfleet run holds this lock for its whole run).
    let state = sb.root.join("state-locked");
    populated_state(&state);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(state.join(psfleet_engine::store::LOCK_FILE))
        .unwrap();
    lock.try_lock().unwrap();
    let before = snapshot(&state);
    let (out, why) = run(&state, run_cmd);
    assert_eq!(out.status.code(), Some(STATE), "{why}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("in use by another psfleet process")
            && stderr.contains(state.to_str().unwrap()),
        "{why}"
    );
    assert_eq!(snapshot(&state), before, "{why}");
    // Reading runs does not need the lock.
    let (out, why) = run(&state, &["runs"]);
    assert_eq!(out.status.code(), Some(0), "{why}");
    drop(lock);
    checked.push("locked");

    // Read-only: a read-only bind mount of a populated state directory, in a private mount
    // namespace (root, or a user namespace, is needed for that).
    let state = sb.root.join("state-readonly");
    populated_state(&state);
    let before = snapshot(&state);
    let mut args = vec!["--state-dir".to_owned(), state.display().to_string()];
    args.extend(run_cmd.iter().map(|s| s.to_string()));
    let script = format!(
        "mount --bind '{0}' '{0}' && mount -o remount,bind,ro '{0}' && exec \"$@\"",
        state.display()
    );
    let mut unshare = std::process::Command::new("unshare");
    unshare.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"]);
    let base = sb.command(&[], &CREDENTIALS);
    unshare
        .env_clear()
        .envs(base.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .current_dir(sb.work())
        .arg(super::cli::binary())
        .args(&args);
    match unshare.output() {
        Ok(out) if out.status.code() == Some(STATE) => {
            let why = format!("read-only: {}", text(&out.stderr));
            assert!(text(&out.stderr).contains("mounted read-only"), "{why}");
            assert!(text(&out.stderr).contains(state.to_str().unwrap()), "{why}");
            assert_eq!(snapshot(&state), before, "{why}");
            checked.push("read-only");
        }
        Ok(out) if text(&out.stderr).contains("psfleet") => {
            panic!("read-only state: {}", explain(&["(unshare)"], &out))
        }
        other => {
            let _ = writeln!(
                std::io::stdout(),
                "bad_input: read-only state directory skipped: no private mount namespace here \
                 ({:?})",
                other.map(|o| text(&o.stderr))
            );
        }
    }

    // Permission denied: mode 0500 stops everyone but root.
    if is_root() {
        let _ = writeln!(
            std::io::stdout(),
            "bad_input: mode 0500 state directory skipped: running as root, which ignores it"
        );
    } else {
        use std::os::unix::fs::PermissionsExt as _;
        let state = sb.root.join("state-0500");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o500)).unwrap();
        let (out, why) = run(&state, run_cmd);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(out.status.code(), Some(STATE), "{why}");
        assert!(text(&out.stderr).contains("make it writable"), "{why}");
        assert!(snapshot(&state).is_empty(), "{why}");
        checked.push("permission denied");
    }
    let _ = writeln!(
        std::io::stdout(),
        "bad_input: unusable state directories, exit 6, nothing run: {checked:?}"
    );
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The run folder the run being watched creates under `state/runs`, waited for.
fn wait_for_new_run(runs: &Path, known: &[PathBuf], deadline: Duration) -> PathBuf {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Ok(entries) = std::fs::read_dir(runs) {
            for entry in entries.flatten() {
                let path = entry.path();
                if !known.contains(&path) && path.is_dir() {
                    return path;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("no new run in {} after {deadline:?}", runs.display());
}

fn runs_json(sb: &Sandbox, state: &Path) -> Vec<serde_json::Value> {
    let args = ["runs", "-o", "json", "--state-dir", state.to_str().unwrap()];
    let out = sb.run(&args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&args, &out));
    crate::cli::json_lines(&out.stdout)
}

#[test]
fn a_full_disk_while_writing_reports_or_output_exits_7_and_the_journal_stays_usable() {
    const HOSTS: usize = 4;
    let sb = Sandbox::new("bad-full");
    let sim = SimFleet::start("healthy", HOSTS, Some(150), sb.root.join("fleet"));
    let env = sim.admin_env();
    let state = sb.root.join("state-full");
    let state_arg = state.to_str().unwrap().to_owned();
    let inventory = sim.path("inventory.csv");
    let ca = sim.path("ca.pem");
    let run_args = [
        "run",
        "-i",
        &inventory,
        "-c",
        "hostname",
        "--ca-file",
        &ca,
        "--allow-unencrypted",
        "--forks",
        "1",
        "--timeout",
        "30s",
        "--state-dir",
        &state_arg,
    ];

    // 1. The run's own hosts.csv is /dev/full: planted as soon as the run folder appears
    // (the hosts take seconds at --forks 1 and 150 ms per message).
    let child = sb
        .command(&run_args, &env_refs(&env))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_dir = wait_for_new_run(&state.join("runs"), &[], Duration::from_secs(60));
    std::os::unix::fs::symlink("/dev/full", run_dir.join("hosts.csv")).unwrap();
    let out = child.wait_with_output().unwrap();
    let why = explain(&run_args, &out);
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(out.status.code(), Some(OUTPUT), "{why}");
    let stderr = text(&out.stderr);
    for needle in [
        "hosts.csv",
        "No space left on device",
        "(the disk is full)",
        &format!("psfleet report {run_id}"),
        "safe in its journal",
    ] {
        assert!(stderr.contains(needle), "no {needle:?}: {why}");
    }
    assert!(
        !run_dir.join("hosts.csv").exists()
            && run_dir.join("hosts.csv").symlink_metadata().is_err(),
        "the half-written hosts.csv is removed"
    );
    assert!(
        sim.executions().values().all(|&n| n == 1),
        "{:?}",
        sim.executions()
    );

    // The journal is complete and readable: `psfleet runs` lists the run as completed, and
    // `psfleet report` writes the reports again.
    let runs = runs_json(&sb, &state);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["host_count"], HOSTS as u64);
    assert_eq!(runs[0]["succeeded"], HOSTS as u64, "{runs:?}");
    assert_eq!(runs[0]["ended"]["reason"], "completed", "{runs:?}");

    // 2. `psfleet report --out DIR` with DIR/report.html on /dev/full: exit 7, the files
    // written before it stay whole, and nothing half-written is left.
    let out_dir = sb.root.join("reports-full");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::os::unix::fs::symlink("/dev/full", out_dir.join("report.html")).unwrap();
    let args = [
        "report",
        &run_id,
        "--out",
        out_dir.to_str().unwrap(),
        "--state-dir",
        &state_arg,
    ];
    let out = sb.run(&args, &[]);
    let why = explain(&args, &out);
    assert_eq!(out.status.code(), Some(OUTPUT), "{why}");
    assert!(text(&out.stderr).contains("report.html"), "{why}");
    assert!(
        out_dir.join("report.html").symlink_metadata().is_err(),
        "{why}"
    );
    let rows = csv::Reader::from_path(out_dir.join("hosts.csv"))
        .unwrap()
        .records()
        .count();
    assert_eq!(
        rows, HOSTS,
        "hosts.csv, written before report.html, is whole"
    );

    // 3. `psfleet report RUN` into the run's folder now works.
    let args = ["report", &run_id, "--state-dir", &state_arg];
    let out = sb.run(&args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&args, &out));
    let rows = csv::Reader::from_path(run_dir.join("hosts.csv"))
        .unwrap()
        .records()
        .count();
    assert_eq!(rows, HOSTS);
    assert!(run_dir.join("report.html").is_file());

    // 4. Standard output on a full disk: the run goes on, its journal is complete, exit 7.
    let mut json_args = run_args.to_vec();
    json_args.extend(["-o", "json"]);
    let known: Vec<PathBuf> = vec![run_dir.clone()];
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = sb
        .command(&json_args, &env_refs(&env))
        .stdout(full)
        .output()
        .unwrap();
    let why = explain(&json_args, &out);
    assert_eq!(out.status.code(), Some(OUTPUT), "{why}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot write standard output"), "{why}");
    assert!(stderr.contains("No space left on device"), "{why}");
    let second = wait_for_new_run(&state.join("runs"), &known, Duration::from_secs(1));
    let second_id = second.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr.contains(&format!("psfleet report {second_id}")),
        "{why}"
    );
    let runs = runs_json(&sb, &state);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let newest = &runs[0];
    assert_eq!(newest["run_id"], second_id);
    assert_eq!(newest["succeeded"], HOSTS as u64, "{runs:?}");
    assert_eq!(newest["ended"]["reason"], "completed", "{runs:?}");
    assert!(
        sim.executions().values().all(|&n| n == 2),
        "{:?}",
        sim.executions()
    );

    // `psfleet runs -o json` itself onto a full disk.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let args = ["runs", "-o", "json", "--state-dir", &state_arg];
    let out = sb.command(&args, &[]).stdout(full).output().unwrap();
    let why = explain(&args, &out);
    assert_eq!(out.status.code(), Some(OUTPUT), "{why}");
    assert!(
        text(&out.stderr).contains("cannot write standard output"),
        "{why}"
    );
    assert_eq!(sim.open_shells(), 0);
    let _ = writeln!(
        std::io::stdout(),
        "bad_input: full disk: run reports, report --out, run -o json and runs -o json exit 7; \
         both runs complete in their journals ({HOSTS} hosts each, each host's script ran once \
         per run)"
    );
}
