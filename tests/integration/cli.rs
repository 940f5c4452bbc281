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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The exit codes (docs/cli.md, "Exit codes").
const USAGE: i32 = 4;

pub(crate) fn binary() -> &'static Path {
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
pub(crate) struct Sandbox {
    pub(crate) root: PathBuf,
}

impl Sandbox {
    pub(crate) fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("psfleet-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["home", "cfg/psfleet", "state", "work"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        Self { root }
    }

    pub(crate) fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    pub(crate) fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.root.join(relative);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `psfleet args...` in the work directory with a clean environment plus `env`.
    pub(crate) fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    /// The command [`Sandbox::run`] runs, to spawn it instead.
    pub(crate) fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
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
        cmd
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Standard output of `-o json`: one JSON value per line (a line that is not JSON fails,
/// naming it).
pub(crate) fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    text(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
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
    let lines: Vec<serde_json::Value> = json_lines(&out.stdout);
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
    let hosts: Vec<serde_json::Value> = json_lines(&out.stdout);
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

/// A simulated fleet on its own loopback block, served by its own runtime for as long as the
/// value lives; its inventory, CA and accounts are written to `dir`.
pub(crate) struct SimFleet {
    runtime: tokio::runtime::Runtime,
    fleet: Option<psfleet_sim::fleet::FleetHandle>,
    dir: PathBuf,
}

impl SimFleet {
    pub(crate) fn start(
        profile: &str,
        hosts: usize,
        latency_ms: Option<u64>,
        dir: PathBuf,
    ) -> Self {
        use psfleet_sim::fleet::FleetOptions;
        use psfleet_sim::profile::Profile;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut options = FleetOptions::new(Profile::load(profile).unwrap(), hosts, 5);
        options.out_dir = Some(dir.clone());
        options.latency = latency_ms.map(std::time::Duration::from_millis);
        let fleet = runtime.block_on(psfleet_tests::fleet::start(options));
        Self {
            runtime,
            fleet: Some(fleet),
            dir,
        }
    }

    pub(crate) fn fleet(&self) -> &psfleet_sim::fleet::FleetHandle {
        self.fleet.as_ref().unwrap()
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// PSFLEET_USER and PSFLEET_PASSWORD of the fleet's administrator.
    pub(crate) fn admin_env(&self) -> Vec<(&'static str, String)> {
        let admin = self.fleet().accounts().iter().find(|a| a.admin).unwrap();
        vec![
            ("PSFLEET_USER", admin.name.clone()),
            ("PSFLEET_PASSWORD", admin.password.clone()),
        ]
    }

    /// Script executions per host name.
    pub(crate) fn executions(&self) -> BTreeMap<String, u64> {
        self.fleet()
            .hosts()
            .iter()
            .map(|h| {
                (
                    h.spec.name.clone(),
                    h.service().counters().totals.script_executions,
                )
            })
            .collect()
    }

    pub(crate) fn open_shells(&self) -> u64 {
        self.fleet()
            .hosts()
            .iter()
            .map(|h| h.service().counters().totals.shells_open)
            .sum()
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        if let Some(fleet) = self.fleet.take() {
            let _ = self.runtime.block_on(fleet.shutdown());
        }
    }
}

pub(crate) fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Every host once on standard output as JSON, nothing else there, the same bucket as the
/// run's hosts.csv, and the exit code "some hosts failed".
#[test]
fn run_over_a_simulated_fleet_prints_one_json_record_per_host_with_the_csv_buckets() {
    let sb = Sandbox::new("run-mixed");
    let sim = SimFleet::start("mixed", 30, None, sb.root.join("fleet"));
    let env = sim.admin_env();
    let inventory = sim.path("inventory.csv");
    let ca = sim.path("ca.pem");
    let out = sb.run(
        &[
            "run",
            "-i",
            &inventory,
            "-c",
            "hostname",
            "--ca-file",
            &ca,
            "--allow-unencrypted",
            "-o",
            "json",
            "--timeout",
            "8s",
        ],
        &env_refs(&env),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let records: Vec<serde_json::Value> = json_lines(&out.stdout);
    let mut hosts: Vec<&str> = records
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    hosts.sort_unstable();
    let mut names: Vec<&str> = sim
        .fleet()
        .inventory()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(hosts, names, "each host exactly once");
    let succeeded = records
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .count();
    assert!(succeeded >= 3, "{succeeded} succeeded\n{stderr}");
    assert!(stderr.contains("psfleet run: 30 hosts in "), "{stderr}");

    // The run's own CSV (written at the end) has the same bucket for every host.
    let run_dir = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("run ")
                .and_then(|l| l.split_once(": "))
                .map(|(_, d)| d.to_owned())
        })
        .unwrap_or_else(|| panic!("no run folder in {stderr}"));
    let mut csv = csv::Reader::from_path(Path::new(&run_dir).join("hosts.csv")).unwrap();
    let headers = csv.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (host_col, bucket_col) = (col("host"), col("bucket"));
    let csv_buckets: BTreeMap<String, String> = csv
        .records()
        .map(|r| r.unwrap())
        .map(|r| (r[host_col].to_owned(), r[bucket_col].to_owned()))
        .collect();
    assert_eq!(csv_buckets.len(), 30);
    for record in &records {
        let host = record["host"].as_str().unwrap();
        let bucket = record["bucket"].as_str().unwrap_or("");
        assert_eq!(csv_buckets[host], bucket, "{host}");
    }
    assert!(Path::new(&run_dir).join("report.html").is_file());
    assert_eq!(
        sim.open_shells(),
        0,
        "every shell the run opened was deleted"
    );

    // Text output of the same run: failure lines and the bucket summary with the fixes.
    let out = sb.run(
        &[
            "run",
            "-i",
            &inventory,
            "-c",
            "hostname",
            "--ca-file",
            &ca,
            "--allow-unencrypted",
            "--timeout",
            "8s",
            "-l",
            "closed_port,script_fails",
        ],
        &env_refs(&env),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        stdout.contains("FAILED ") && stdout.contains("[InvalidPort]"),
        "{stdout}"
    );
    assert!(stdout.contains("[ScriptFailed]"), "{stdout}");
    assert!(stdout.contains("  Fix: "), "{stdout}");
}

/// Ctrl-C stops a run (exit 3, every host reported), `--resume last --rerun-interrupted`
/// with no script finishes it with the run's own script and arguments, and no host that
/// succeeded ran its script twice.
#[test]
fn ctrl_c_stops_a_run_and_resume_finishes_it_without_rerunning_done_hosts() {
    let sb = Sandbox::new("run-resume");
    let sim = SimFleet::start("healthy", 24, Some(150), sb.root.join("fleet"));
    let env = sim.admin_env();
    let inventory = sim.path("inventory.csv");
    let ca = sim.path("ca.pem");
    let common = [
        "run",
        "-i",
        &inventory,
        "--ca-file",
        &ca,
        "-o",
        "json",
        "-f",
        "3",
    ];
    let script = [
        "-c",
        "param($tag) \"$tag on \" + $env:COMPUTERNAME",
        "--argument",
        "marker-42",
    ];
    let args: Vec<&str> = common.iter().chain(&script).copied().collect();
    let child = sb
        .command(&args, &env_refs(&env))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("Stopping: no new hosts start"), "{stderr}");
    let first: Vec<serde_json::Value> = json_lines(&out.stdout);
    assert_eq!(first.len(), 24, "every host reported once: {stderr}");
    let done_first: Vec<String> = first
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| r["host"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !done_first.is_empty() && done_first.len() < 24,
        "{} succeeded before the stop",
        done_first.len()
    );
    assert_eq!(
        sim.open_shells(),
        0,
        "the stop deleted the shells of the hosts in flight"
    );

    for record in first.iter().filter(|r| r["status"] == "succeeded") {
        assert!(record.to_string().contains("marker-42 on "), "{record}");
    }

    // The script and its argument are not given again: the resume recalls them.
    let resume: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--resume", "last", "--rerun-interrupted"])
        .collect();
    let out = sb.run(&resume, &env_refs(&env));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("psfleet: resuming run "), "{stderr}");
    let second: Vec<serde_json::Value> = json_lines(&out.stdout);
    assert_eq!(
        second.len(),
        24 - done_first.len(),
        "only the hosts not done ran: {stderr}"
    );
    assert!(
        second
            .iter()
            .all(|r| r["status"] == "succeeded" && r.to_string().contains("marker-42 on ")),
        "{second:?}"
    );
    let executions = sim.executions();
    for host in &done_first {
        assert_eq!(executions[host], 1, "{host} ran once");
    }
    // The journal now says every host succeeded, once.
    let out = sb.run(&["runs", "-o", "json", "--last", "1"], &[]);
    let run: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        (run["succeeded"].as_u64(), run["done"].as_u64()),
        (Some(24), Some(24)),
        "{run}"
    );
    println!(
        "Ctrl-C after 4 s: {} of 24 hosts done, the rest interrupted or skipped; the resume ran {}",
        done_first.len(),
        second.len()
    );
}

/// `--authentication certificate`: the client certificate from PEM files, over HTTPS, no
/// password anywhere.
#[test]
fn certificate_authentication_runs_with_pem_files_and_no_password() {
    let sb = Sandbox::new("run-cert");
    let profile = sb.write(
        "cert.toml",
        "description = \"HTTPS hosts that map client certificates\"\n\
         [[class]]\nname = \"cert\"\npercent = 100\nexpected = \"Succeeded\"\n\
         listeners = [\"https\"]\nauth = [\"certificate\"]\n",
    );
    let sim = SimFleet::start(profile.to_str().unwrap(), 4, None, sb.root.join("fleet"));
    let admin = sim.fleet().accounts().iter().find(|a| a.admin).unwrap();
    let cert = sim.fleet().client_certificate(&admin.name).unwrap();
    let cert_file = sb.write("client.pem", &cert.certificate_pem);
    let key_file = sb.write("client.key", &cert.key_pem);
    let inventory = sim.path("inventory.csv");
    let ca = sim.path("ca.pem");
    let args = [
        "run",
        "-i",
        &inventory,
        "-c",
        "$env:COMPUTERNAME",
        "--use-ssl",
        "--authentication",
        "certificate",
        "--certificate-file",
        cert_file.to_str().unwrap(),
        "--certificate-key-file",
        key_file.to_str().unwrap(),
        "--ca-file",
        &ca,
        "-o",
        "json",
    ];
    let out = sb.run(&args, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stderr}\n{}",
        text(&out.stdout)
    );
    let records: Vec<serde_json::Value> = json_lines(&out.stdout);
    assert_eq!(records.len(), 4);
    assert!(
        records.iter().all(|r| r["status"] == "succeeded"),
        "{records:?}"
    );
    // A key that is not the certificate's is a usage error before anything is sent.
    let other = sim.fleet().accounts().iter().find(|a| !a.admin).unwrap();
    let wrong_key = sb.write(
        "wrong.key",
        &sim.fleet().client_certificate(&other.name).unwrap().key_pem,
    );
    let mut bad = args;
    bad[11] = wrong_key.to_str().unwrap();
    let out = sb.run(&bad, &[]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--certificate-file"),
        "{}",
        text(&out.stderr)
    );
}

/// `psfleet demo`: a mixed fleet, a sweep and a script run, both reports, every failure
/// bucket represented, nothing to configure (a clean environment, no password given).
#[test]
fn the_demo_shows_every_failure_bucket_and_writes_both_reports() {
    let sb = Sandbox::new("demo");
    let out_dir = sb.root.join("demo");
    let started = std::time::Instant::now();
    let out = sb.run(
        &[
            "demo",
            "--hosts",
            "60",
            "--seed",
            "3",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    let elapsed = started.elapsed();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(
        stdout.contains("psfleet demo sweep: 60 hosts in "),
        "{stdout}"
    );
    assert!(
        stdout.contains("psfleet demo run: 60 hosts in "),
        "{stdout}"
    );
    assert!(
        stdout.contains("psfleet demo: 19 of the 19 failure buckets seen"),
        "{stdout}"
    );
    let reports: Vec<&str> = stdout
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("script run: ")
                .or_else(|| l.trim().strip_prefix("sweep: "))
        })
        .collect();
    assert_eq!(reports.len(), 7, "{stdout}");
    for path in &reports {
        assert!(Path::new(path).is_file(), "{path}");
    }
    assert!(
        reports.iter().any(|p| p.ends_with("config.csv")),
        "the sweep's fleet configuration"
    );
    println!(
        "psfleet demo --hosts 60: {:.1} s (debug build)",
        elapsed.as_secs_f64()
    );
}

/// A run killed with SIGKILL leaves shells open; `cleanup --dry-run` lists the ones the
/// state store recorded, and `cleanup` deletes them (the simulator's open shells go to 0).
#[test]
fn cleanup_reaps_the_shells_a_killed_run_left_open() {
    let sb = Sandbox::new("cleanup");
    let sim = SimFleet::start("healthy", 4, Some(2500), sb.root.join("fleet"));
    let env = sim.admin_env();
    let inventory = sim.path("inventory.csv");
    let mut child = sb
        .command(
            &["run", "-i", &inventory, "-c", "hostname", "-o", "json"],
            &env_refs(&env),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until every host has a shell open (the Create answers after the latency).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sim.open_shells() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A little longer, so the journal has the shell_opened lines the answers produced.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let leaked = sim.open_shells();
    assert!(leaked > 0, "the killed run left shells open");

    let out = sb.run(&["cleanup", "-i", &inventory, "--dry-run"], &env_refs(&env));
    let listed = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        listed.lines().count() >= 1,
        "{listed}\n{}",
        text(&out.stderr)
    );
    assert_eq!(sim.open_shells(), leaked, "a dry run deletes nothing");

    let out = sb.run(
        &["cleanup", "-i", &inventory, "-o", "json"],
        &env_refs(&env),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(sim.open_shells(), 0, "{}", text(&out.stderr));
    println!(
        "cleanup: {leaked} shells left by a killed run, {} listed by --dry-run, all reaped",
        listed.lines().count()
    );
}

/// `doctor -o json` prints one JSON object (nothing else on standard output) whose first
/// failed step names the bucket the simulator expects for the host's class, with a fix; a
/// healthy host passes every step and exits 0.
#[test]
fn doctor_json_names_the_expected_bucket_for_each_class() {
    let sb = Sandbox::new("doctor-json");
    let sim = SimFleet::start("mixed", 40, None, sb.root.join("fleet"));
    let env = sim.admin_env();
    let inventory = sim.path("inventory.csv");
    let ca = sim.path("ca.pem");
    let mut rows = csv::Reader::from_path(&inventory).unwrap();
    let headers = rows.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (name_at, group_at, expected_at) = (column("name"), column("group"), column("expected"));
    let mut by_class: BTreeMap<String, (String, String)> = BTreeMap::new();
    for row in rows.records() {
        let row = row.unwrap();
        by_class
            .entry(row[group_at].to_owned())
            .or_insert_with(|| (row[name_at].to_owned(), row[expected_at].to_owned()));
    }
    let classes = [
        "healthy",
        "closed_port",
        "rotated_password",
        "cert_self_signed",
        "unknown_configuration",
    ];
    for class in classes {
        let (host, expected) = by_class
            .get(class)
            .unwrap_or_else(|| panic!("no {class} host in {inventory}"));
        let out = sb.run(
            &[
                "doctor",
                host,
                "-i",
                &inventory,
                "--ca-file",
                &ca,
                "-o",
                "json",
            ],
            &env_refs(&env),
        );
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{class}: one JSON object only:\n{stdout}");
        let diagnosis: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(diagnosis["host"], host.as_str());
        let steps = diagnosis["steps"].as_array().unwrap();
        let failed = steps.iter().find(|s| s["status"] == "fail");
        if expected == "Succeeded" {
            assert_eq!(out.status.code(), Some(0), "{class}: {stdout}");
            assert!(failed.is_none(), "{class}: {stdout}");
            assert!(steps.len() >= 6, "{class}: every step ran: {stdout}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{class}: {stdout}");
            let failed = failed.unwrap_or_else(|| panic!("{class}: no failed step: {stdout}"));
            assert_eq!(failed["bucket"], expected.as_str(), "{class}: {stdout}");
            assert!(
                failed["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "{class}: a fix is named: {stdout}"
            );
        }
    }
}
