//! Interactive sessions (`psfleet enter`) against a simulated host: the read-eval-print
//! loop driven through in-memory pipes, with state shared between commands, multi-line
//! input, Ctrl-C stopping a running pipeline without leaving the session, `exit` and the
//! end of the input both deleting the shell (the simulator's counters).

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use psfleet_core::psrp::messages::PsInvocationState;
use psfleet_engine::auth::{Credential, Mechanism};
use psfleet_engine::ops::{ClientOptions, HostClient};
use psfleet_engine::session::{
    ExitReason, RemoteSession, SessionError, SessionSettings, run_interactive,
};
use psfleet_engine::target::{Endpoint, Scheme};
use psfleet_sim::fleet::{FleetHandle, FleetOptions};
use psfleet_sim::profile::Profile;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const PROFILE: &str = r#"
[[class]]
name = "plain"
count = 1

[[class]]
name = "broken_modules"
count = 1
modules_fail = true
"#;

/// What the loop wrote so far, shared with the task reading the output pipe.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `needle` (at most 20 s).
    async fn wait_for(&self, needle: &str) {
        let until = Instant::now() + Duration::from_secs(20);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < until,
                "{needle:?} never appeared in:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn reading(mut pipe: DuplexStream) -> (Self, tokio::task::JoinHandle<()>) {
        let screen = Self::default();
        let shared = screen.clone();
        let task = tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            loop {
                match pipe.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => shared.0.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        });
        (screen, task)
    }
}

#[tokio::test]
async fn an_interactive_session_keeps_state_reads_blocks_survives_ctrl_c_and_deletes_its_shell() {
    let fleet = fleet().await;
    let name = fleet.host_of_class("plain").unwrap().spec.name.clone();
    let (mut keyboard, input) = tokio::io::duplex(64 * 1024);
    let (output, screen_pipe) = tokio::io::duplex(1 << 20);
    let (screen, reader) = Screen::reading(screen_pipe);
    let (ctrl_c, interrupts) = mpsc::channel(4);
    let session = tokio::spawn(run_interactive(
        client(&fleet, "plain"),
        SessionSettings::default(),
        BufReader::new(input),
        output,
        interrupts,
    ));
    let prompt = format!("[{name}]: PS C:\\> ");
    screen.wait_for(&prompt).await;

    // Three commands in a row share the session's state.
    keyboard
        .write_all(b"$x = 5\n$x * 2\n'x is ' + $x\n")
        .await
        .unwrap();
    screen.wait_for("x is 5\n").await;

    // A function over several lines, called from the next command, and an if/else block.
    keyboard
        .write_all(
            b"function Double($n) {\n  $n * 2\n}\nDouble 21\nif ($x -gt 1) {\n  'big'\n} else {\n  'small'\n}\n",
        )
        .await
        .unwrap();
    screen.wait_for("big\n").await;

    // Streams: an error record in Windows PowerShell's shape, a warning, a thrown error.
    keyboard
        .write_all(b"Write-Error 'bad thing'; Write-Warning 'careful'\nthrow 'boom'\n")
        .await
        .unwrap();
    screen.wait_for("boom\n").await;

    // Ctrl-C 200 ms into a 30 s sleep stops the pipeline; the session goes on.
    let before = scripts_run(&fleet, "plain");
    keyboard.write_all(b"Start-Sleep 30\n").await.unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while scripts_run(&fleet, "plain") == before {
        assert!(Instant::now() < until, "the sleep never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sleeping = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    ctrl_c.send(()).await.unwrap();
    keyboard
        .write_all(b"'after ' + (Double $x)\n")
        .await
        .unwrap();
    screen.wait_for("after 10\n").await;
    let stopped_after = sleeping.elapsed();
    // The held Receive answers as soon as the stop lands, not at its OperationTimeout.
    assert!(
        stopped_after < Duration::from_secs(5),
        "the sleep was not stopped promptly ({stopped_after:?})"
    );

    keyboard.write_all(b"exit\n").await.unwrap();
    let info = tokio::time::timeout(Duration::from_secs(20), session)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    reader.await.unwrap();
    assert_eq!(info.reason, ExitReason::Exited);
    // $x = 5, $x * 2, 'x is', function, Double 21, if, Write-Error, throw, sleep, after.
    assert_eq!(info.commands, 10);
    assert!(info.shell_deleted);

    let text = screen.text();
    // Input is not echoed (no terminal), so output follows the prompts on their line.
    let outputs: Vec<&str> = text
        .lines()
        .map(|mut l| {
            while let Some(rest) = l
                .strip_prefix(prompt.as_str())
                .or_else(|| l.strip_prefix(">> "))
            {
                l = rest;
            }
            l
        })
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("    +")
                && !l.starts_with("At line:")
                && !l.starts_with("+ ")
        })
        .collect();
    assert_eq!(
        outputs,
        [
            "10",
            "x is 5",
            "42",
            "big",
            // PowerShell 5.1 prefixes the command line that wrote the error.
            "Write-Error 'bad thing'; Write-Warning 'careful' : bad thing",
            "WARNING: careful",
            "boom",
            "after 10"
        ],
        "{text}"
    );
    // Continuation prompts: 2 for the function's body, 4 for the if/else block.
    assert_eq!(text.matches(">> ").count(), 6, "{text}");
    assert!(
        text.contains(": bad thing\n    + CategoryInfo          : NotSpecified: (:) [Write-Error], WriteErrorException\n    + FullyQualifiedErrorId : Microsoft.PowerShell.Commands.WriteErrorException\n"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "colour is off: {text:?}");
    // One shell for the whole session, deleted at the end.
    let (open, created, deleted) = counts(&fleet, "plain");
    assert_eq!(
        (open, created, deleted),
        (0, 1, 1),
        "open, created, deleted"
    );
}

#[tokio::test]
async fn the_end_of_the_input_leaves_cleanly_and_deletes_the_shell() {
    let fleet = fleet().await;
    // All the input at once, ending without `exit` and in the middle of nothing.
    let input: &[u8] = b"1 + 1\n\n   \n'done'";
    let mut output = Vec::new();
    // The unbounded channel a signal handler feeds works as well as a bounded one.
    let (_ctrl_c, interrupts) = mpsc::unbounded_channel();
    let info = run_interactive(
        client(&fleet, "plain"),
        SessionSettings {
            prompt_name: Some("web".to_owned()),
            color: true,
            ..SessionSettings::default()
        },
        BufReader::new(input),
        &mut output,
        interrupts,
    )
    .await
    .unwrap();
    assert_eq!(info.reason, ExitReason::EndOfInput);
    assert_eq!(info.commands, 2);
    assert!(info.shell_deleted);
    let text = String::from_utf8(output).unwrap();
    assert!(text.starts_with("[web]: PS C:\\> 2\n"), "{text:?}");
    assert!(text.contains("done\n"), "{text:?}");
    assert_eq!(counts(&fleet, "plain"), (0, 1, 1));
}

/// A terminal that breaks when it is asked to show an `X`.
struct BreaksOnX(Vec<u8>);

impl tokio::io::AsyncWrite for BreaksOnX {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if buf.contains(&b'X') {
            return std::task::Poll::Ready(Err(std::io::Error::other("the terminal went away")));
        }
        self.0.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_output_failure_mid_pipeline_still_stops_the_pipeline_and_deletes_the_shell() {
    let fleet = fleet().await;
    let input: &[u8] = b"'X'; Start-Sleep 30; 'never'\n";
    let (_ctrl_c, interrupts) = mpsc::channel(1);
    let started = Instant::now();
    let error = run_interactive(
        client(&fleet, "plain"),
        SessionSettings::default(),
        BufReader::new(input),
        BreaksOnX(Vec::new()),
        interrupts,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, SessionError::Output(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the sleep was not stopped"
    );
    assert_eq!(counts(&fleet, "plain"), (0, 1, 1), "open, created, deleted");
}

#[tokio::test]
async fn a_session_runs_pipelines_through_the_library_api() {
    let fleet = fleet().await;
    let mut client = client(&fleet, "plain");
    let mut session = RemoteSession::open(&mut client, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(session.shell_id().is_some());
    assert!(session.ps_version().is_some());
    let (_ctrl_c, mut interrupts) = mpsc::channel(1);
    for (script, expected) in [("$n = 2", None), ("$n + 40", Some("42"))] {
        let mut events = Vec::new();
        let outcome = session
            .run(&mut client, script, &mut interrupts, &mut events)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome.state, PsInvocationState::Completed);
        let outputs: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                psfleet_core::psrp::client::PsrpEvent::Output(v) => {
                    Some(v.display_text().into_owned())
                }
                _ => None,
            })
            .collect();
        assert_eq!(outputs, expected.into_iter().collect::<Vec<_>>());
    }
    assert_eq!(session.pipelines_run(), 2);
    let closed = session.close(&mut client).await;
    assert!(closed.deleted);
    assert_eq!(counts(&fleet, "plain"), (0, 1, 1));

    // A pool that breaks while opening: ModuleLoadFailure, and no shell left behind.
    let mut client = self::client(&fleet, "broken_modules");
    let error = RemoteSession::open(&mut client, Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(matches!(error, SessionError::Open(_)), "{error:?}");
    assert_eq!(
        error.bucket(),
        Some(psfleet_core::taxonomy::Bucket::ModuleLoadFailure)
    );
    assert_eq!(counts(&fleet, "broken_modules"), (0, 1, 1));
}

/// Drives `psfleet enter` on a pseudo-terminal: argv[1:] is the command line. Types a
/// command, reads its output, starts a sleep and presses Ctrl-C (the terminal turns it into
/// SIGINT), runs another command, then `exit`; prints what it saw as JSON.
const PTY_DRIVER: &str = r#"
import json, os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
seen = b""
def until(needle, count=1, limit=20.0):
    global seen
    end = time.time() + limit
    while seen.count(needle) < count and time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen.count(needle) >= count
prompt = b"PS C:\\> "
ok = until(prompt)
os.write(fd, b"$x = 6 * 7\r"); ok = ok and until(prompt, 2)
os.write(fd, b"'answer ' + $x\r"); ok = ok and until(b"answer 42") and until(prompt, 3)
os.write(fd, b"Start-Sleep 30\r"); time.sleep(0.5)
pressed = time.time(); os.write(fd, b"\x03")
ok = ok and until(prompt, 4); stopped = time.time() - pressed
os.write(fd, b"$x + 1\r"); ok = ok and until(b"43") and until(prompt, 5)
os.write(fd, b"exit\r")
until(b"\x00", limit=10.0)
_, status = os.waitpid(pid, 0)
print(json.dumps({"ok": ok, "stopped_after": stopped, "status": os.waitstatus_to_exitcode(status),
                  "transcript": seen.decode("utf-8", "replace")}))
"#;

#[tokio::test]
async fn psfleet_enter_on_a_terminal_runs_commands_stops_on_ctrl_c_and_exits() {
    let test = "psfleet_enter_on_a_terminal";
    let Some(python) = python(test) else {
        return;
    };
    let fleet = fleet().await;
    let host = fleet.host_of_class("plain").unwrap();
    let account = fleet.accounts().iter().find(|a| a.admin).unwrap();
    let dir = std::env::temp_dir().join(format!("psfleet-enter-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inventory = dir.join("hosts.csv");
    std::fs::write(
        &inventory,
        format!("name,address\n{},{}\n", host.spec.name, host.spec.address),
    )
    .unwrap();
    let binary = crate::cli::binary().to_owned();
    let mut command = tokio::process::Command::new(python);
    command
        .arg("-c")
        .arg(PTY_DRIVER)
        .arg(&binary)
        .args(["enter", &host.spec.name, "-i"])
        .arg(&inventory)
        .args(["--user", &account.name])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir)
        .env("PSFLEET_PASSWORD", &account.password);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    let transcript = report["transcript"].as_str().unwrap();
    assert_eq!(report["ok"], true, "{transcript}");
    assert_eq!(report["status"], 0, "{transcript}");
    // The prompt names the host; the output of each command follows it.
    let prompt = format!("[{}]: PS C:\\> ", host.spec.name);
    assert!(transcript.contains(&prompt), "{transcript}");
    assert!(transcript.contains("answer 42"), "{transcript}");
    assert!(
        transcript.contains("^C"),
        "the terminal echoes the Ctrl-C: {transcript}"
    );
    let stopped = report["stopped_after"].as_f64().unwrap();
    assert!(
        stopped < 5.0,
        "Ctrl-C took {stopped} s to stop the pipeline"
    );
    // The session survived the stop and kept its state ($x + 1), and exit deleted its
    // one shell.
    assert!(transcript.contains("43"), "{transcript}");
    assert_eq!(counts(&fleet, "plain"), (0, 1, 1), "open, created, deleted");
}

// ---------------------------------------------------------------------------------------

/// The venv interpreter from `PSFLEET_PYTHON`, or `None` after printing a skip line
/// (`scripts/test` sets it; under `CI=true` its absence fails).
fn python(test: &str) -> Option<std::path::PathBuf> {
    if let Some(python) = std::env::var_os("PSFLEET_PYTHON") {
        return Some(python.into());
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "{test}: PSFLEET_PYTHON is unset; under CI=true this fails the run"
    );
    println!("{test}: skipped, PSFLEET_PYTHON is unset (run scripts/test to set up the venv)");
    None
}

async fn fleet() -> FleetHandle {
    let profile = Profile::parse("session", "<test>", PROFILE).unwrap();
    let hosts = profile.classes.len();
    psfleet_tests::fleet::start(FleetOptions::new(profile, hosts, 5)).await
}

/// A Negotiate client as the fleet's administrator, by name, to the host's address.
fn client(fleet: &FleetHandle, class: &str) -> HostClient {
    let host = fleet.host_of_class(class).unwrap();
    let account = fleet.accounts().iter().find(|a| a.admin).unwrap();
    let mut options = ClientOptions::new(
        Mechanism::Negotiate,
        Credential::new(&account.name, &account.password).unwrap(),
    );
    options.connect_timeout = Duration::from_secs(5);
    // Receives are held up to 20 s (OperationTimeout): a stop must not wait for that.
    options.request_timeout = Duration::from_secs(30);
    let endpoint = Endpoint::new(&host.spec.name, Scheme::Http).unwrap();
    HostClient::new(endpoint, Arc::new(options))
        .unwrap()
        .with_address(IpAddr::V4(host.spec.address))
}

/// (open, created, deleted) shells on the host of `class`.
fn counts(fleet: &FleetHandle, class: &str) -> (u64, u64, u64) {
    let totals = fleet
        .host_of_class(class)
        .unwrap()
        .service()
        .counters()
        .totals;
    (
        totals.shells_open,
        totals.shells_created,
        totals.shells_deleted,
    )
}

/// Pipelines the host of `class` has run.
fn scripts_run(fleet: &FleetHandle, class: &str) -> u64 {
    fleet
        .host_of_class(class)
        .unwrap()
        .service()
        .counters()
        .totals
        .script_executions
}
