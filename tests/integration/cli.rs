//! The `psfleet` binary as a user meets it: help, usage errors and their exit code, the
//! refused `--password`, configuration file precedence, PSFLEET_* variables, completions.
//!
//! The binary: a test binary cannot see another package's `CARGO_BIN_EXE_*`, so the first
//! test to need it runs `cargo build -p psfleet --bin psfleet` once (same cargo, same target
//! directory and profile as this test binary, found from `current_exe()`'s ancestors), which
//! is a no-op when it is up to date and never runs a stale binary. `PSFLEET_BIN` overrides
//! the path (to test an installed binary).
//!
//! Each run gets a clean environment (PATH only, plus HOME and the XDG directories pointing
//! into a private temporary directory), so the user's own psfleet.toml and PSFLEET_*
//! variables cannot leak in.

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The exit codes (docs/cli.md, "Exit codes").
const USAGE: i32 = 4;

fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PSFLEET_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/integration-<hash>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let target_dir = profile_dir.parent().unwrap().to_owned();
        let profile = profile_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut build = Command::new(cargo);
        // The variables cargo set for this test process would change the fingerprints of
        // build scripts (ring's), making this build and the next `cargo test` rebuild each
        // other's dependencies; the build gets the environment of a plain shell.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || name == "LD_LIBRARY_PATH"
            {
                build.env_remove(&*name);
            }
        }
        build
            .current_dir(workspace)
            .args(["build", "--quiet", "-p", "psfleet", "--bin", "psfleet"])
            .arg("--target-dir")
            .arg(&target_dir);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        let status = build.status().expect("run cargo build -p psfleet");
        assert!(status.success(), "cargo build -p psfleet failed");
        let bin = profile_dir.join("psfleet");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A private directory with a home, config and state directory, and a working directory.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("psfleet-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["home", "cfg/psfleet", "state", "work"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        Self { root }
    }

    fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.root.join(relative);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `psfleet args...` in the work directory with a clean environment plus `env`.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.join("home"))
            .env("XDG_CONFIG_HOME", self.root.join("cfg"))
            .env("XDG_STATE_HOME", self.root.join("state"))
            .current_dir(self.work())
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `key = value  # origin` line of `psfleet config show` for `key`.
fn shown(out: &Output, key: &str) -> String {
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")) || *l == format!("# {key} (not set)"))
        .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"))
        .to_owned()
}

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let sb = Sandbox::new("help");
    let out = sb.run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "run",
            "sweep",
            "enter",
            "doctor",
            "report",
            "runs",
            "diff",
            "cleanup",
            "inventory",
            "sim",
            "demo",
            "completions",
            "config",
            "help"
        ]
    );
    for code in [
        "0  every host",
        "2  the run",
        "3  the run",
        "4  usage",
        "5  internal",
    ] {
        assert!(help.contains(code), "{code}");
    }
    let out = sb.run(&["inventory", "--help"], &[]);
    let help = text(&out.stdout);
    assert!(help.contains("list ") && help.contains("check "), "{help}");
    let out = sb.run(&["run", "--help"], &[]);
    let help = text(&out.stdout);
    for option in [
        "--use-ssl",
        "--authentication",
        "--configuration-name",
        "--skip-ca-check",
        "--inventory",
        "--limit",
        "--forks",
        "--password-file",
        "--argument",
        "--cmd",
    ] {
        assert!(help.contains(option), "run --help lacks {option}");
    }
    assert!(
        !help.contains("--password <"),
        "no --password option is offered"
    );
    let out = sb.run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("psfleet "));
}

#[test]
fn usage_errors_exit_with_the_usage_code() {
    let sb = Sandbox::new("usage");
    let cases: &[&[&str]] = &[
        &[],
        &["bogus"],
        &["run", "-i", "hosts.csv"],
        &["run", "-i", "hosts.csv", "-c", "x", "--cmd", "y"],
        &["run", "-i", "hosts.csv", "-c", "x", "--no-such-option"],
        &["run", "-i", "hosts.csv", "-c", "x", "--forks", "many"],
        &["run", "-i", "hosts.csv", "-c", "x", "--forks", "0"],
        &[
            "run",
            "-i",
            "hosts.csv",
            "-c",
            "x",
            "--rate",
            "50/fortnight",
        ],
        &[
            "run",
            "-i",
            "hosts.csv",
            "-c",
            "x",
            "--authentication",
            "digest",
        ],
        &["run", "-i", "hosts.csv", "-c", "x", "--timeout", "soon"],
        &["run", "-i", "hosts.csv", "-c", "x", "--resolve", "srv1"],
        &["run", "-c", "x"],
        &["run", "-i", "hosts.csv", "-c", "x", "--rerun-interrupted"],
        &["run", "-i", "hosts.csv", "--cmd", "dir", "--argument", "a"],
        &["run", "-i", "hosts.csv", "/nonexistent/script.ps1"],
        &["run", "-i", "-", "-"],
        &[
            "run",
            "-i",
            "h",
            "-c",
            "x",
            "--authentication",
            "certificate",
        ],
        &[
            "run",
            "-i",
            "h",
            "-c",
            "x",
            "--certificate-thumbprint",
            "abc",
        ],
        &["enter", ""],
        &["diff", "last", "last"],
        &["completions", "tcsh"],
        &[
            "sim",
            "--hosts",
            "1",
            "--profile",
            "mixed",
            "--out",
            "sim-out",
        ],
        &[
            "sim",
            "--hosts",
            "1",
            "--profile",
            "/nonexistent/profile.toml",
            "--out",
            "sim-out",
        ],
        &["config", "show", "-v", "-q"],
    ];
    for args in cases {
        let out = sb.run(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(USAGE),
            "psfleet {args:?}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "psfleet {args:?} says why");
    }
}

#[test]
fn a_password_on_the_command_line_is_refused_and_not_echoed() {
    let sb = Sandbox::new("password");
    let secret = "Sup3r-S3cret!x";
    let with_eq = format!("--password={secret}");
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", "-i", "h.csv", "-c", "Get-Date", "--password", secret],
        vec!["--password", secret, "sweep", "-i", "h.csv"],
        vec!["enter", "srv1", &with_eq],
        vec!["report", "last", "--password", secret],
        vec!["bogus", "--password", secret],
    ];
    for args in &cases {
        let out = sb.run(args, &[]);
        assert_eq!(out.status.code(), Some(USAGE), "{args:?}");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "echoed: {stderr}"
        );
        for way in [
            "PSFLEET_PASSWORD",
            "--password-file",
            "asks on the terminal",
        ] {
            assert!(
                stderr.contains(way),
                "{args:?}: the explanation lacks {way}: {stderr}"
            );
        }
    }
    // --password-file is not mistaken for it, nor is a script argument.
    let out = sb.run(
        &[
            "run",
            "--password-file",
            "f",
            "-i",
            "h",
            "-c",
            "x",
            "--argument",
            "--password",
        ],
        &[],
    );
    assert!(
        !text(&out.stderr).contains("is refused"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_command_line_beats_the_environment_beats_the_file_beats_the_default() {
    let sb = Sandbox::new("precedence");
    let file = sb.write(
        "work/psfleet.toml",
        "# fleet defaults\nforks = 12\nuse-ssl = true\nrate = \"50/s:5\"\noutput = \"json\"\n\
         inventory = [\"inv/web.ini\"]\n",
    );
    let origin = |line: usize| format!("# {}:{line}", file.display());

    let out = sb.run(&["config", "show"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("# configuration file: {}\n", file.display())));
    assert_eq!(shown(&out, "forks"), format!("forks = 12  {}", origin(2)));
    assert_eq!(
        shown(&out, "use-ssl"),
        format!("use-ssl = true  {}", origin(3))
    );
    // The default port follows use-ssl from the file.
    assert_eq!(shown(&out, "port"), "port = 5986  # default");
    assert_eq!(shown(&out, "retries"), "retries = 2  # default");
    // Relative paths in the file are relative to the file.
    assert_eq!(
        shown(&out, "inventory"),
        format!(
            "inventory = [\"{}\"]  {}",
            sb.work().join("inv/web.ini").display(),
            origin(6)
        )
    );

    let env = [("PSFLEET_FORKS", "34"), ("PSFLEET_OUTPUT", "text")];
    let out = sb.run(&["config", "show"], &env);
    assert_eq!(
        shown(&out, "forks"),
        "forks = 34  # environment PSFLEET_FORKS"
    );
    assert_eq!(
        shown(&out, "output"),
        "output = \"text\"  # environment PSFLEET_OUTPUT"
    );
    assert_eq!(
        shown(&out, "rate"),
        format!("rate = \"50/s:5\"  {}", origin(4))
    );

    let out = sb.run(
        &[
            "config",
            "show",
            "--forks",
            "56",
            "--use-ssl=false",
            "-i",
            "x.csv",
        ],
        &env,
    );
    assert_eq!(shown(&out, "forks"), "forks = 56  # command line");
    assert_eq!(shown(&out, "use-ssl"), "use-ssl = false  # command line");
    assert_eq!(shown(&out, "port"), "port = 5985  # default");
    assert_eq!(
        shown(&out, "inventory"),
        "inventory = [\"x.csv\"]  # command line"
    );

    // Search order: --config, then ./psfleet.toml, then $XDG_CONFIG_HOME/psfleet.
    let xdg = sb.write("cfg/psfleet/psfleet.toml", "forks = 7\n");
    let other = sb.write("other.toml", "forks = 8\n");
    let out = sb.run(&["config", "show"], &[]);
    assert_eq!(shown(&out, "forks"), format!("forks = 12  {}", origin(2)));
    let out = sb.run(
        &["--config", other.to_str().unwrap(), "config", "show"],
        &[],
    );
    assert_eq!(
        shown(&out, "forks"),
        format!("forks = 8  # {}:1", other.display())
    );
    let out = sb.run(
        &["config", "show"],
        &[("PSFLEET_CONFIG", other.to_str().unwrap())],
    );
    assert_eq!(
        shown(&out, "forks"),
        format!("forks = 8  # {}:1", other.display())
    );
    std::fs::remove_file(&file).unwrap();
    let out = sb.run(&["config", "show"], &[]);
    assert_eq!(
        shown(&out, "forks"),
        format!("forks = 7  # {}:1", xdg.display())
    );
    let out = sb.run(&["config", "path"], &[]);
    assert!(
        text(&out.stdout).starts_with(&format!("{}\n", xdg.display())),
        "{}",
        text(&out.stdout)
    );
    std::fs::remove_file(&xdg).unwrap();
    let out = sb.run(&["config", "show"], &[]);
    assert_eq!(shown(&out, "forks"), "forks = 256  # default");
    // An explicit file that does not exist is an error, not a silent fallback.
    let out = sb.run(
        &["--config", "/nonexistent/psfleet.toml", "config", "show"],
        &[],
    );
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(
        text(&out.stderr)
            .contains("/nonexistent/psfleet.toml: the configuration file given with --config")
    );
}

#[test]
fn configuration_errors_name_the_file_the_line_and_the_key() {
    let sb = Sandbox::new("config-errors");
    let file = sb.root.join("work/psfleet.toml");
    let cases = [
        (
            "forks = 12\n\nforks_ = 3\n",
            3,
            "forks_",
            "unknown key `forks_` (did you mean `forks`?)",
        ),
        ("use-ssl = \"maybe\"\n", 1, "use-ssl", "invalid type"),
        (
            "forks = 12\nrate = \"fast\"\n",
            2,
            "rate",
            "invalid rate \"fast\"",
        ),
        (
            "timeout = \"2 fortnights\"\n",
            1,
            "timeout",
            "invalid duration",
        ),
        (
            "user = \"FLEET\\\\ops\"\npassword = \"hunter2\"\n",
            2,
            "password",
            "PSFLEET_PASSWORD",
        ),
        ("forks = 0\n", 1, "forks", "must be between 1 and 100000"),
    ];
    for (content, line, key, message) in cases {
        std::fs::write(&file, content).unwrap();
        let out = sb.run(&["config", "show"], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(USAGE), "{content}: {stderr}");
        let place = format!("{}:{line}: key `{key}`: ", file.display());
        assert!(
            stderr.contains(&place),
            "{content}: expected {place:?} in {stderr}"
        );
        assert!(
            stderr.contains(message),
            "{content}: expected {message:?} in {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn psfleet_environment_variables_set_every_kind_of_option() {
    let sb = Sandbox::new("env");
    let env = [
        ("PSFLEET_USER", "FLEET\\ops"),
        ("PSFLEET_AUTHENTICATION", "kerberos"),
        ("PSFLEET_USE_SSL", "yes"),
        ("PSFLEET_PORT", "15986"),
        (
            "PSFLEET_RESOLVE",
            "srv1.fleet.test=10.0.0.1,srv2.fleet.test=10.0.0.2",
        ),
        ("PSFLEET_INVENTORY", "hosts.ini"),
        ("PSFLEET_LIMIT", "web:!srv9*"),
        ("PSFLEET_RATE", "300/m:20"),
        ("PSFLEET_TIMEOUT", "90s"),
        ("PSFLEET_NO_PROGRESS", "1"),
        ("PSFLEET_STATE_DIR", "/var/tmp/psfleet-state"),
    ];
    let out = sb.run(&["config", "show"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expect = [
        ("user", "'FLEET\\ops'", "PSFLEET_USER"),
        ("authentication", "\"kerberos\"", "PSFLEET_AUTHENTICATION"),
        ("use-ssl", "true", "PSFLEET_USE_SSL"),
        ("port", "15986", "PSFLEET_PORT"),
        (
            "resolve",
            "[\"srv1.fleet.test=10.0.0.1\", \"srv2.fleet.test=10.0.0.2\"]",
            "PSFLEET_RESOLVE",
        ),
        ("inventory", "[\"hosts.ini\"]", "PSFLEET_INVENTORY"),
        ("limit", "\"web:!srv9*\"", "PSFLEET_LIMIT"),
        ("rate", "\"300/m:20\"", "PSFLEET_RATE"),
        ("timeout", "\"1m30s\"", "PSFLEET_TIMEOUT"),
        ("no-progress", "true", "PSFLEET_NO_PROGRESS"),
        (
            "state-dir",
            "\"/var/tmp/psfleet-state\"",
            "PSFLEET_STATE_DIR",
        ),
    ];
    for (key, value, var) in expect {
        assert_eq!(
            shown(&out, key),
            format!("{key} = {value}  # environment {var}")
        );
    }
    // A bad value names the variable it came from.
    let out = sb.run(&["config", "show"], &[("PSFLEET_FORKS", "lots")]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(
        text(&out.stderr).contains("PSFLEET_FORKS"),
        "{}",
        text(&out.stderr)
    );
    let out = sb.run(&["config", "show"], &[("PSFLEET_MAX_SHELLS_DEFAULT", "0")]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(
        text(&out.stderr).contains("PSFLEET_MAX_SHELLS_DEFAULT: must be between"),
        "{}",
        text(&out.stderr)
    );
    let out = sb.run(&["config", "show"], &[("PSFLEET_LOG", "info,=[")]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("PSFLEET_LOG"),
        "{}",
        text(&out.stderr)
    );
    // PSFLEET_PASSWORD is a secret, not an option: never shown.
    let out = sb.run(&["config", "show"], &[("PSFLEET_PASSWORD", "hunter2-env")]);
    assert!(!text(&out.stdout).contains("hunter2-env"));
}

#[test]
fn completion_scripts_generate_and_parse_in_their_shells() {
    let sb = Sandbox::new("completions");
    for (shell, checker) in [
        ("bash", Some(("bash", "-n"))),
        ("zsh", Some(("zsh", "-n"))),
        ("fish", Some(("fish", "--no-execute"))),
        ("powershell", None),
    ] {
        let out = sb.run(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["psfleet", "sweep", "doctor", "forks", "use-ssl"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        let Some((program, flag)) = checker else {
            continue;
        };
        let path = sb.write(&format!("completion.{shell}"), &script);
        match Command::new(program).arg(flag).arg(&path).output() {
            Ok(check) => assert!(
                check.status.success(),
                "{program} {flag} rejects the {shell} script: {}",
                text(&check.stderr)
            ),
            Err(_) => {
                println!("{program} not installed: the {shell} script's syntax is not checked")
            }
        }
    }
}

#[test]
fn colours_follow_the_color_option_and_no_color() {
    let sb = Sandbox::new("color");
    let args = ["run", "-i", "h", "-c", "x", "--forks", "0"];
    let plain = sb.run(&args, &[]);
    assert!(
        text(&plain.stderr).contains("psfleet: error: --forks"),
        "{}",
        text(&plain.stderr)
    );
    let forced = sb.run(
        &[
            "--color", "always", "run", "-i", "h", "-c", "x", "--forks", "0",
        ],
        &[],
    );
    assert!(
        text(&forced.stderr).contains("\u{1b}[31merror\u{1b}[0m"),
        "{}",
        text(&forced.stderr)
    );
    let no_color = sb.run(&args, &[("NO_COLOR", "1"), ("PSFLEET_COLOR", "auto")]);
    assert!(!text(&no_color.stderr).contains('\u{1b}'));
}

/// A host record as the run loop writes it.
fn record(
    run: &str,
    host: &str,
    bucket: Option<psfleet_core::taxonomy::Bucket>,
) -> psfleet_engine::record::HostRecord {
    use psfleet_engine::record::{HostRecord, JobKind, RunId, Status};
    HostRecord {
        run_id: RunId(run.into()),
        host: host.into(),
        address: Some("127.30.0.1".into()),
        group: Some("web".into()),
        job: JobKind::Script,
        status: if bucket.is_some() {
            Status::Failed
        } else {
            Status::Succeeded
        },
        bucket,
        message: bucket.map_or_else(|| "ok".into(), |b| b.message(host, "5985")),
        attempts: 1,
        started: "2026-11-21T10:00:00.000Z".into(),
        finished: "2026-11-21T10:00:01.000Z".into(),
        duration_ms: 1000,
        exit_code: Some(0),
        pipeline_state: Some("Completed".into()),
        error_id: None,
        output_excerpt: format!("hello from {host}"),
        output: vec![],
        output_truncated: 0,
        errors: vec![],
        warnings: vec![],
    }
}

/// Two journaled runs of the same inventory in `state`: an earlier one killed with srv4 in
/// flight, and a completed later one where srv1 broke, srv2 recovered and srv5 is new.
fn two_runs(state: &Path) -> (String, String) {
    use psfleet_core::taxonomy::Bucket;
    use psfleet_engine::journal::{EndReason, Entry, Journal, RunEnd, RunMeta};
    use psfleet_engine::record::{JobKind, RunId};
    let (a, b) = ("20261121T100000Z-aaaa", "20261121T110000Z-bbbb");
    type Run<'a> = (&'a str, Vec<(&'a str, Option<Bucket>)>, &'a str);
    let runs: [Run<'_>; 2] = [
        (
            a,
            vec![
                ("srv1", None),
                ("srv2", Some(Bucket::InvalidPort)),
                ("srv3", None),
            ],
            "srv4",
        ),
        (
            b,
            vec![
                ("srv1", Some(Bucket::InvalidCredentials)),
                ("srv2", None),
                ("srv3", None),
                ("srv5", None),
            ],
            "",
        ),
    ];
    for (id, done, in_flight) in runs {
        let mut meta = RunMeta::new(RunId(id.into()), JobKind::Script, 4).with_script("hostname");
        meta.inventory_digest = Some("same-inventory".into());
        let mut journal = Journal::create(state, &meta).unwrap();
        for (host, bucket) in done {
            journal
                .append(&Entry::Started {
                    host: host.into(),
                    at: "2026-11-21T10:00:00.000Z".into(),
                })
                .unwrap();
            journal
                .append(&Entry::Done {
                    record: Box::new(record(id, host, bucket)),
                })
                .unwrap();
        }
        if in_flight.is_empty() {
            journal
                .append(&Entry::End(RunEnd {
                    at: "2026-11-21T11:00:05.000Z".into(),
                    reason: EndReason::Completed,
                }))
                .unwrap();
        } else {
            journal
                .append(&Entry::Started {
                    host: in_flight.into(),
                    at: "2026-11-21T10:00:02.000Z".into(),
                })
                .unwrap();
        }
        journal.commit().unwrap();
    }
    (a.into(), b.into())
}

#[test]
fn runs_report_and_diff_read_the_journals() {
    let sb = Sandbox::new("journals");
    let state = sb.root.join("state/psfleet");
    let (a, b) = two_runs(&state);

    // runs: newest first, counts from the journals.
    let out = sb.run(&["runs"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].starts_with(&b) && rows[0].ends_with("completed"),
        "{table}"
    );
    assert!(
        rows[1].starts_with(&a) && rows[1].contains("stopped (resume it)"),
        "{table}"
    );
    let out = sb.run(&["runs", "-o", "json", "--last", "1"], &[]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["run_id"], b.as_str());
    assert_eq!(
        (lines[0]["succeeded"].as_u64(), lines[0]["failed"].as_u64()),
        (Some(3), Some(1))
    );

    // report: CSV and JSON lines of the last run, in its own folder.
    let out = sb.run(&["report", "last", "--format", "csv,json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run_dir = state.join("runs").join(&b);
    let paths: Vec<PathBuf> = text(&out.stdout).lines().map(PathBuf::from).collect();
    assert_eq!(
        paths,
        [
            run_dir.join("hosts.csv"),
            run_dir.join("buckets.csv"),
            run_dir.join("hosts.jsonl")
        ]
    );
    let csv = std::fs::read_to_string(run_dir.join("hosts.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let jsonl = std::fs::read_to_string(run_dir.join("hosts.jsonl")).unwrap();
    let buckets: Vec<(String, serde_json::Value)> = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["host"].as_str().unwrap().to_owned(), v["bucket"].clone()))
        .collect();
    assert_eq!(
        buckets,
        [
            ("srv1".to_owned(), serde_json::json!("InvalidCredentials")),
            ("srv2".to_owned(), serde_json::Value::Null),
            ("srv3".to_owned(), serde_json::Value::Null),
            ("srv5".to_owned(), serde_json::Value::Null),
        ]
    );
    // The killed run's in-flight host is reported Interrupted; HTML into another folder.
    let elsewhere = sb.root.join("reports");
    let out = sb.run(
        &[
            "report",
            "previous",
            "--format",
            "json",
            "--format",
            "html",
            "--out",
            elsewhere.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let jsonl = std::fs::read_to_string(elsewhere.join("hosts.jsonl")).unwrap();
    assert!(
        jsonl
            .lines()
            .any(|l| l.contains("\"host\":\"srv4\"") && l.contains("\"bucket\":\"Interrupted\"")),
        "{jsonl}"
    );
    let html = std::fs::read_to_string(elsewhere.join("report.html")).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>") || html.starts_with("<!doctype html>"),
        "{}",
        &html[..40.min(html.len())]
    );
    let out = sb.run(&["report", "20261121T120000Z-zzzz"], &[]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(
        text(&out.stderr).contains("no run 20261121T120000Z-zzzz in"),
        "{}",
        text(&out.stderr)
    );

    // diff: one line per changed host.
    let out = sb.run(&["diff", "previous", "last", "-o", "json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let changes: Vec<(String, String)> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["host"].as_str().unwrap().to_owned(),
                v["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("srv1", "newly_failing"),
        ("srv2", "recovered"),
        ("srv4", "removed"),
        ("srv5", "added"),
    ]
    .iter()
    .map(|(h, c)| ((*h).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(changes, expected);
    let out = sb.run(&["diff", &a, &b], &[]);
    let diff = text(&out.stdout);
    assert!(
        diff.starts_with(&format!(
            "{a} -> {b}: 4 hosts changed (1 added, 1 newly_failing, 1 recovered, 1 removed)\n"
        )),
        "{diff}"
    );
    assert!(
        diff.contains("  newly_failing   srv1  succeeded -> failed [InvalidCredentials]\n"),
        "{diff}"
    );
    let out = sb.run(&["diff", &b, "last"], &[]);
    assert_eq!(out.status.code(), Some(USAGE), "the same run twice");
}

#[test]
fn inventory_list_and_check_resolve_hosts_as_run_would() {
    let sb = Sandbox::new("inventory");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventories/examples");
    let ini = examples.join("hosts.ini");
    let ini = ini.to_str().unwrap();

    let out = sb.run(
        &["inventory", "list", "-i", ini, "-l", "db", "-o", "json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hosts: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db01.fleet.test", "db02.fleet.test"]);
    assert_eq!(hosts[0]["authentication"], "kerberos");
    assert_eq!(hosts[0]["configuration_name"], "JEA_Maintenance");
    assert_eq!(
        hosts[0]["password"], "kerberos-cache",
        "a reference, never a password"
    );
    assert_eq!(hosts[1]["port"], 5986);

    // The command line beats the inventory; PSFLEET_* and psfleet.toml do not.
    let out = sb.run(
        &[
            "inventory",
            "list",
            "-i",
            ini,
            "-l",
            "web01*",
            "-o",
            "json",
            "--port",
            "15985",
        ],
        &[],
    );
    let host: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(host["url"], "http://web01.fleet.test:15985/wsman");
    let env = [
        ("PSFLEET_AUTHENTICATION", "ntlm"),
        ("PSFLEET_USER", "env-user"),
    ];
    let args = ["inventory", "list", "-i", ini, "-l", "web01*", "-o", "json"];
    let out = sb.run(&args, &env);
    let host: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    // The inventory says nothing about web01's mechanism: the environment's default applies;
    // it sets the user (windows:vars): the environment's default does not.
    assert_eq!(host["authentication"], "ntlm");
    assert_eq!(host["user"], "ops@FLEET.TEST");
    let out = sb.run(&[&args[..], &["--user", "cli-user"]].concat(), &env);
    let host: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(host["user"], "cli-user");
    let out = sb.run(&["inventory", "list", "-i", "jump.fleet.test"], &[]);
    assert_eq!(out.status.code(), Some(USAGE));

    let out = sb.run(
        &[
            "inventory",
            "check",
            "-i",
            ini,
            "-i",
            examples.join("fleet.csv").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: "),
        "{}",
        text(&out.stdout)
    );

    // Malformed inventories: the file and line, the usage/inventory exit code.
    let bad_csv = sb.write("bad.csv", "name,port\nsrv1,5985\nsrv2,5985,extra\n");
    let bad_ini = sb.write("bad.ini", "[web]\nweb1 ansible_password=hunter2\n");
    for (file, place) in [(&bad_csv, ":3:"), (&bad_ini, ":2:")] {
        let out = sb.run(&["inventory", "check", "-i", file.to_str().unwrap()], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(USAGE), "{stderr}");
        assert!(
            stderr.contains(&format!("{}{place}", file.display())),
            "{stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    let out = sb.run(&["inventory", "check", "-i", ini, "-l", "nothing*"], &[]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", text(&out.stderr));
    let out = sb.run(
        &["inventory", "list", "-i", ini, "-e", "ansible_password=x"],
        &[],
    );
    assert_eq!(out.status.code(), Some(USAGE), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("=x"), "{}", text(&out.stderr));
}
