//! Credential hygiene (issue 8 item 4): `psfleet run` with the password in PSFLEET_PASSWORD
//! against a simulated mixed fleet (NTLM with sealing, Basic over HTTP and HTTPS, a rotated
//! password, Kerberos rows, quota and access failures), then a search of everything the run
//! left for the password: the process's `/proc/<pid>/cmdline` while it runs, standard error
//! at `-vv` and `-vvv`, the JSON on standard output, every file of the state directory (the
//! sled cache included) and the reports `psfleet report` writes.
//!
//! The password is searched as UTF-8, UTF-16LE (what NTLM hashes), base64, and inside the
//! base64 of a Basic `user:password` header.

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

#[test]
fn the_password_appears_in_no_argument_log_state_file_report_or_output() {
    let bin = crate::cli::binary();
    let root = std::env::temp_dir().join(format!("psfleet-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for dir in ["home", "state", "fleet", "reports"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let sim = Sim::start(bin, &root.join("fleet"));
    if !sim.run_is_wired(bin, &root) {
        println!("secrets test skipped: `psfleet run` is not wired in this build");
        return;
    }
    let needles = needles(&sim.user, &sim.password);
    // The search finds what is there: the simulator's accounts file holds the password.
    let accounts = std::fs::read(root.join("fleet/accounts.txt")).unwrap();
    assert!(
        std::panic::catch_unwind(|| assert_clean(&needles, "accounts.txt", &accounts)).is_err(),
        "the search missed the password in accounts.txt"
    );

    for verbosity in ["-vv", "-vvv"] {
        let mut child = psfleet(bin, &root)
            .args([verbosity, "run", "-i"])
            .arg(root.join("fleet/inventory.csv"))
            .args(["-c", "Get-Date; 'done'", "-o", "json", "--no-progress"])
            .arg("--ca-file")
            .arg(root.join("fleet/ca.pem"))
            .args([
                "--allow-unencrypted",
                "--timeout",
                "5s",
                "--user",
                &sim.user,
            ])
            .env("PSFLEET_PASSWORD", &sim.password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read both pipes on threads (a full pipe would stall the run), and look at the
        // process's arguments for as long as it runs.
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            stdout.read_to_end(&mut bytes).unwrap();
            bytes
        });
        let err_reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            stderr.read_to_end(&mut bytes).unwrap();
            bytes
        });
        let cmdline = PathBuf::from(format!("/proc/{}/cmdline", child.id()));
        let mut samples = 0;
        let started = Instant::now();
        let status = loop {
            if let Ok(args) = std::fs::read(&cmdline) {
                assert_clean(&needles, "/proc/<pid>/cmdline", &args);
                samples += 1;
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the run hangs"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out_reader.join().unwrap();
        let stderr = err_reader.join().unwrap();
        let text = String::from_utf8_lossy(&stderr);
        // Hosts failed (the mixed profile has a failure per class): exit 2, records for all.
        assert_eq!(status.code(), Some(2), "{text}");
        assert!(samples > 0, "the process's arguments were never read");
        assert!(
            text.lines().count() > 50,
            "{verbosity} logged almost nothing:\n{text}"
        );
        assert_eq!(
            String::from_utf8_lossy(&stdout).lines().count(),
            sim.hosts,
            "one JSON record per host"
        );
        assert_clean(&needles, &format!("standard error at {verbosity}"), &stderr);
        assert_clean(&needles, "standard output (JSON)", &stdout);
    }

    let report = psfleet(bin, &root)
        .args(["report", "last", "--format", "csv,html,json", "--out"])
        .arg(root.join("reports"))
        .output()
        .unwrap();
    assert_eq!(
        report.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let mut searched = 0;
    for dir in ["state", "reports"] {
        searched += search_tree(&needles, &root.join(dir));
    }
    // Journals, run.json, sled's files, CSV, HTML and JSON-lines reports.
    assert!(searched >= 10, "only {searched} files searched");
    println!("secrets: password absent from arguments, logs, outputs and {searched} files");
    drop(sim);
    let _ = std::fs::remove_dir_all(&root);
}

/// The byte strings that would give the password away.
fn needles(user: &str, password: &str) -> Vec<(String, Vec<u8>)> {
    let utf16: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut needles = vec![
        ("the password".to_owned(), password.as_bytes().to_vec()),
        ("the password in UTF-16LE".to_owned(), utf16),
        (
            "the password in base64".to_owned(),
            BASE64.encode(password).into_bytes(),
        ),
    ];
    for user in [user.to_owned(), format!(".\\{user}")] {
        needles.push((
            format!("a Basic header for {user}"),
            BASE64.encode(format!("{user}:{password}")).into_bytes(),
        ));
    }
    needles
}

fn assert_clean(needles: &[(String, Vec<u8>)], place: &str, haystack: &[u8]) {
    for (what, needle) in needles {
        assert!(
            !haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "{what} found in {place}"
        );
    }
}

/// Searches every file under `dir`; returns how many.
fn search_tree(needles: &[(String, Vec<u8>)], dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            count += search_tree(needles, &path);
        } else if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert_clean(needles, &path.display().to_string(), &bytes);
            count += 1;
        }
    }
    count
}

/// `psfleet` with a clean environment: PATH, a private home, the state directory.
fn psfleet(bin: &Path, root: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.join("home"))
        .env("XDG_CONFIG_HOME", root.join("home/config"))
        .env("PSFLEET_STATE_DIR", root.join("state"));
    cmd
}

/// `psfleet sim` with the mixed profile, as an operator would start it.
struct Sim {
    child: std::process::Child,
    user: String,
    password: String,
    hosts: usize,
}

impl Sim {
    fn start(bin: &Path, out: &Path) -> Self {
        // A loopback block of its own, apart from the other tests' 127.100-127.250.
        let stderr_path = out.with_extension("stderr");
        let mut child = Command::new(bin)
            .args(["sim", "--hosts", "30", "--profile", "mixed", "--seed", "9"])
            .args(["--first-address", "127.64.0.1", "--out"])
            .arg(out)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()))
            .spawn()
            .unwrap();
        let accounts = out.join("accounts.txt");
        let inventory = out.join("inventory.csv");
        let started = Instant::now();
        while !(accounts.exists() && inventory.exists()) {
            // An exit (say, its addresses taken by another process) ends the wait at once.
            let exited = child.try_wait().unwrap();
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(60),
                "psfleet sim did not start ({exited:?}): {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        let accounts = std::fs::read_to_string(accounts).unwrap();
        let (user, password) = accounts
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some((words.next()?, words.next()?, words.next()?))
            })
            .find(|(_, _, role)| *role == "admin")
            .map(|(u, p, _)| (u.to_owned(), p.to_owned()))
            .unwrap();
        let hosts = std::fs::read_to_string(inventory).unwrap().lines().count() - 1;
        Self {
            child,
            user,
            password,
            hosts,
        }
    }

    /// False when `psfleet run` answers "not available in this build".
    fn run_is_wired(&self, bin: &Path, root: &Path) -> bool {
        let out = psfleet(bin, root)
            .args(["run", "-i", "/dev/null/none.csv", "-c", "'x'"])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&out.stderr).contains("not available in this build")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
