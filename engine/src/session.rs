//! Interactive PowerShell on one host, as `Enter-PSSession` gives it: a runspace pool kept
//! open for many pipelines ([`RemoteSession`], the async driver of
//! `psfleet_core::psrp::session::PsrpSession`) and the read-eval-print loop on top of it
//! ([`run_interactive`]).
//!
//! The loop shows the remote prompt `[host]: PS C:\> ` (the path is the remote `$PWD`
//! when the host has one), reads a command over several lines while brackets, quotes or a
//! here-string are open or a line ends with a backtick or a pipe (continuation lines show
//! `>> `; an empty one submits what is there, as the console does), runs it in the pool
//! and writes what comes back as it arrives: output objects as their text, warnings,
//! verbose and debug lines with their prefixes, and error records in the shape Windows
//! PowerShell prints them (red unless colour is off, e.g. `NO_COLOR`). `exit` or
//! `Exit-PSSession` leaves; so does the end of the input. Either way the shell is deleted.
//!
//! An interrupt (Ctrl-C, one `()` on the channel) while a command runs stops that pipeline
//! with `powershell/signal/ctrl_c` (R:test_psrp_nested_command), sent on a second
//! connection beside the Receive the host is holding (a long poll, wire-facts 1.11); the
//! held Receive then returns the Stopped state and the prompt comes back, in the same
//! session. An interrupt at the prompt discards the command being typed.
//!
//! State set by one command (variables, functions, the location) is there for the next:
//! every command runs in the same runspace pool, as a script in its global scope.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use psfleet_core::psrp::client::{
    PipelineOutcome, PsrpClientError, PsrpEvent, PsrpSettings, ScriptSpec,
};
use psfleet_core::psrp::clixml::{Content, PsObject, Value};
use psfleet_core::psrp::messages::{ErrorRecord, ProtocolVersion, PsInvocationState};
use psfleet_core::psrp::session::{PsrpSession, SessionStep, SessionUsageError};
use psfleet_core::taxonomy::Bucket;
use psfleet_core::wsman::{Action, Request, Response};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ClientError;
use crate::http::{Connection, ConnectionConfig};
use crate::ops::{HostClient, RandomIds, psrp_error};

/// Default time allowed to open the runspace pool.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// The continuation prompt.
pub const CONTINUATION_PROMPT: &str = ">> ";

/// The path shown when the host does not say where the session is.
pub const DEFAULT_LOCATION: &str = "C:\\";

/// Longest command accepted (characters over all its lines).
const MAX_COMMAND_LEN: usize = 1 << 20;

/// Most consecutive unreadable (not UTF-8) input lines before the input counts as broken.
const MAX_BAD_LINES: u32 = 100;

/// Most events written per reply before the writer is flushed.
const FLUSH_EVERY: usize = 64;

/// The script that asks the host where the session is.
const LOCATION_PROBE: &str = "$PWD.Path";

/// How the interactive loop looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// The name in the prompt (`[name]: PS ...`); the endpoint's host when `None`.
    pub prompt_name: Option<String>,
    /// Colour errors red and warnings yellow (ANSI). Off for `NO_COLOR` or a non-terminal.
    pub color: bool,
    /// Time allowed to open the runspace pool.
    pub open_timeout: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            prompt_name: None,
            color: false,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
        }
    }
}

impl SessionSettings {
    /// Colour when the output is a terminal and `NO_COLOR` is unset or empty
    /// (https://no-color.org).
    pub fn color_for(output_is_terminal: bool) -> bool {
        output_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    }
}

/// Why the interactive loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ExitReason {
    /// `exit` or `Exit-PSSession`.
    Exited,
    /// The input ended.
    EndOfInput,
}

/// How an interactive session ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExitInfo {
    /// Why.
    pub reason: ExitReason,
    /// Commands run (pipelines typed by the user).
    pub commands: u64,
    /// The shell the session had on the host.
    pub shell_id: Option<Uuid>,
    /// True when the host confirmed the shell's Delete.
    pub shell_deleted: bool,
}

/// Why a session could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The runspace pool did not open (connection, authentication, configuration, quota,
    /// module load: the error's bucket says which).
    #[error("cannot open a session: {0}")]
    Open(#[source] ClientError),
    /// The session ended on the host's side (the pool broke, the shell is gone) or the
    /// host broke the protocol.
    #[error("the session ended: {0}")]
    Broken(#[source] ClientError),
    /// Reading the input failed.
    #[error("cannot read the input: {0}")]
    Input(#[source] io::Error),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
    /// A call out of turn (a bug in the caller).
    #[error(transparent)]
    Usage(#[from] SessionUsageError),
}

impl SessionError {
    /// The failure bucket, when the host is the cause.
    pub fn bucket(&self) -> Option<Bucket> {
        match self {
            Self::Open(e) | Self::Broken(e) => e.bucket(),
            Self::Input(_) | Self::Output(_) | Self::Usage(_) => None,
        }
    }
}

/// How a session was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The shell.
    pub shell_id: Option<Uuid>,
    /// True when the host confirmed its Delete; false means it may be left open.
    pub deleted: bool,
}

/// Where a pipeline's events go as each reply brings them.
pub trait EventSink {
    /// Takes the events of one reply, in order.
    fn accept(&mut self, events: Vec<PsrpEvent>) -> impl Future<Output = io::Result<()>> + Send;
}

impl EventSink for Vec<PsrpEvent> {
    fn accept(&mut self, events: Vec<PsrpEvent>) -> impl Future<Output = io::Result<()>> + Send {
        self.extend(events);
        std::future::ready(Ok(()))
    }
}

/// Where Ctrl-C presses come from: one `()` per press; `None` once the source is gone
/// (then nothing interrupts any more). Implemented for tokio's bounded and unbounded
/// channel receivers.
pub trait Interrupts: Send {
    /// The next press.
    fn recv(&mut self) -> impl Future<Output = Option<()>> + Send;

    /// Forgets the presses already queued.
    fn drain(&mut self);
}

impl Interrupts for mpsc::Receiver<()> {
    fn recv(&mut self) -> impl Future<Output = Option<()>> + Send {
        mpsc::Receiver::recv(self)
    }

    fn drain(&mut self) {
        while self.try_recv().is_ok() {}
    }
}

impl Interrupts for mpsc::UnboundedReceiver<()> {
    fn recv(&mut self) -> impl Future<Output = Option<()>> + Send {
        mpsc::UnboundedReceiver::recv(self)
    }

    fn drain(&mut self) {
        while self.try_recv().is_ok() {}
    }
}

/// A runspace pool open on one host for many pipelines.
pub struct RemoteSession {
    machine: PsrpSession,
    ids: RandomIds,
    /// Where the stop Signal goes (a connection of its own, so the held Receive stays).
    side_config: ConnectionConfig,
    side: Option<Connection>,
    shell: Option<Uuid>,
    deleted: bool,
    ps_version: Option<String>,
    cleanup_timeout: Duration,
}

impl std::fmt::Debug for RemoteSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSession")
            .field("shell", &self.shell)
            .field("ready", &self.machine.is_ready())
            .field("pipelines", &self.machine.pipelines_run())
            .finish_non_exhaustive()
    }
}

/// A boxed in-flight stop Signal: the connection it used (to keep) and the reply.
type SideFuture =
    Pin<Box<dyn Future<Output = (Option<Connection>, Result<Response, ClientError>)> + Send>>;

impl RemoteSession {
    /// Opens a runspace pool with the client's configuration name (Create, then Receive
    /// until RUNSPACEPOOL_STATE Opened), within `timeout`.
    pub async fn open(client: &mut HostClient, timeout: Duration) -> Result<Self, SessionError> {
        let options = client.options();
        let settings = PsrpSettings {
            configuration_name: options.configuration_name.clone(),
            session_id: Some(client.session_id()),
            max_envelope_size: options.max_envelope_size,
            operation_timeout: options.effective_operation_timeout(),
            protocol_version: ProtocolVersion::V2_3,
            max_received_message_bytes: options.max_received_message_bytes,
            ..PsrpSettings::new(client.endpoint().url())
        };
        let cleanup_timeout = options.cleanup_timeout;
        let mut ids = RandomIds::new();
        let (machine, create) = PsrpSession::open(settings, &mut ids);
        let mut session = Self {
            machine,
            ids,
            side_config: client.connection_config(),
            side: None,
            shell: None,
            deleted: false,
            ps_version: None,
            cleanup_timeout,
        };
        let deadline = Instant::now() + timeout;
        let (step, error) = session.drive(client, create, Some(deadline)).await;
        match step {
            SessionStep::Opened => Ok(session),
            SessionStep::Closed(result) => Err(SessionError::Open(error.unwrap_or_else(|| {
                result
                    .err()
                    .map_or_else(|| unexpected_end("Create"), psrp_error)
            }))),
            other => Err(SessionError::Open(unexpected_step("Create", &other))),
        }
    }

    /// The shell (runspace pool id) on the host.
    pub fn shell_id(&self) -> Option<Uuid> {
        self.shell
    }

    /// `$PSVersionTable.PSVersion` of the host, when it sent one.
    pub fn ps_version(&self) -> Option<&str> {
        self.ps_version.as_deref()
    }

    /// Pipelines run so far.
    pub fn pipelines_run(&self) -> u64 {
        self.machine.pipelines_run()
    }

    /// Runs `script` in the pool's global scope and hands every event to `sink` as the
    /// replies bring them. An interrupt on `interrupts` stops the pipeline (the pool
    /// stays). The inner result is the pipeline's: its terminal state, or why it failed
    /// (a fault, a connection lost mid-pipeline) while the session stays usable. The outer
    /// error ends the session.
    pub async fn run(
        &mut self,
        client: &mut HostClient,
        script: &str,
        interrupts: &mut impl Interrupts,
        sink: &mut impl EventSink,
    ) -> Result<Result<PipelineOutcome, ClientError>, SessionError> {
        let mut request = self.machine.run(&ScriptSpec::new(script), &mut self.ids)?;
        let mut stop_wanted = false;
        let mut interrupts_open = true;
        let mut side: Option<SideFuture> = None;
        let mut failure: Option<ClientError> = None;
        loop {
            let operation = operation_name(&request.header.action);
            let sent = {
                let main = client.send_request(&request, operation);
                tokio::pin!(main);
                loop {
                    if stop_wanted
                        && side.is_none()
                        && let Some(signal) = self.machine.stop(&mut self.ids)
                    {
                        side = Some(signal_beside(
                            self.side_config.clone(),
                            self.side.take(),
                            signal,
                        ));
                    }
                    tokio::select! {
                        biased;
                        result = &mut main => break result,
                        signal = interrupts.recv(), if interrupts_open && !stop_wanted => {
                            match signal {
                                Some(()) => stop_wanted = true,
                                None => interrupts_open = false,
                            }
                        }
                        (conn, reply) = poll_side(&mut side), if side.is_some() => {
                            side = None;
                            self.side = conn;
                            self.side_reply(reply);
                            // Another Ctrl-C is read again; the machine sends a second stop
                            // only when the first did not get through.
                            stop_wanted = false;
                        }
                    }
                }
            };
            let step = match sent {
                Ok(response) => self.machine.handle(response, &mut self.ids),
                Err(error) => {
                    let reason = PsrpClientError::Aborted(error.to_string());
                    failure.get_or_insert(error);
                    self.machine.fail_pipeline(reason, &mut self.ids)
                }
            };
            self.forward(sink).await?;
            match step {
                SessionStep::Send(next) => request = next,
                SessionStep::PipelineFinished(result) => {
                    // Ctrl-C pressed more than once stops this pipeline only.
                    interrupts.drain();
                    if let Some(pending) = side.take() {
                        // Let the stop's reply arrive so its connection can be reused.
                        let wait = self.cleanup_timeout;
                        if let Ok((conn, reply)) = tokio::time::timeout(wait, pending).await {
                            self.side = conn;
                            self.side_reply(reply);
                        }
                    }
                    return Ok(match (failure, result) {
                        (Some(error), _) => Err(error),
                        (None, Ok(outcome)) => Ok(outcome),
                        (None, Err(error)) => Err(psrp_error(error)),
                    });
                }
                SessionStep::Closed(result) => {
                    return Err(SessionError::Broken(failure.unwrap_or_else(|| {
                        result
                            .err()
                            .map_or_else(|| unexpected_end("Receive"), psrp_error)
                    })));
                }
                other => {
                    let error = unexpected_step("Receive", &other);
                    return Err(SessionError::Broken(error));
                }
            }
        }
    }

    /// Deletes the shell (within the client's cleanup timeout), stopping a pipeline left
    /// running first. Closing a session that already ended is a no-op.
    pub async fn close(mut self, client: &mut HostClient) -> Closed {
        // Idle: Delete. Left mid-pipeline (the output failed, say): stop it, then Delete.
        let first = if self.machine.is_ready() {
            self.machine.close(&mut self.ids).ok()
        } else if self.machine.is_closed() {
            None
        } else {
            let reason = PsrpClientError::Aborted("the session is closing".to_owned());
            match self.machine.abort(reason, &mut self.ids) {
                SessionStep::Send(request) => Some(request),
                _ => None,
            }
        };
        if let Some(first) = first {
            let deadline = Instant::now() + self.cleanup_timeout;
            let _ = self.drive(client, first, Some(deadline)).await;
        }
        Closed {
            shell_id: self.shell,
            deleted: self.deleted,
        }
    }

    /// Sends main requests (no interrupts) until the machine stops asking; a failed send
    /// ends the pipeline or gives the session up, as the machine decides. Past `deadline`
    /// the session is given up and its cleanup gets the cleanup timeout.
    async fn drive(
        &mut self,
        client: &mut HostClient,
        first: Box<Request>,
        deadline: Option<Instant>,
    ) -> (SessionStep, Option<ClientError>) {
        let started = Instant::now();
        let mut error: Option<ClientError> = None;
        let mut request = first;
        let mut cleanup_deadline: Option<Instant> = None;
        loop {
            let operation = operation_name(&request.header.action);
            let limit = cleanup_deadline.or(deadline);
            let sent = match limit {
                Some(at) => tokio::time::timeout_at(at, client.send_request(&request, operation))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ClientError::Timeout {
                            elapsed: started.elapsed(),
                        })
                    }),
                None => client.send_request(&request, operation).await,
            };
            let step = match sent {
                Ok(response) => self.machine.handle(response, &mut self.ids),
                Err(failed) => {
                    if matches!(failed, ClientError::Timeout { .. }) {
                        // An abandoned request leaves the connection mid-exchange.
                        client.disconnect();
                        if cleanup_deadline.is_some() {
                            error.get_or_insert(failed);
                            self.collect();
                            return (SessionStep::Closed(Ok(())), error);
                        }
                    }
                    let reason = PsrpClientError::Aborted(failed.to_string());
                    error.get_or_insert(failed);
                    cleanup_deadline.get_or_insert_with(|| Instant::now() + self.cleanup_timeout);
                    self.machine.fail_pipeline(reason, &mut self.ids)
                }
            };
            self.collect();
            match step {
                SessionStep::Send(next) => request = next,
                other => return (other, error),
            }
        }
    }

    /// Notes shell and version events, dropping the rest (open and close carry no output).
    fn collect(&mut self) {
        while let Some(event) = self.machine.poll_event() {
            self.note(&event);
        }
    }

    /// Notes shell and version events and hands every event to `sink`.
    async fn forward(&mut self, sink: &mut impl EventSink) -> Result<(), SessionError> {
        let mut events = Vec::new();
        while let Some(event) = self.machine.poll_event() {
            self.note(&event);
            events.push(event);
        }
        if events.is_empty() {
            return Ok(());
        }
        sink.accept(events).await.map_err(SessionError::Output)
    }

    fn note(&mut self, event: &PsrpEvent) {
        match event {
            PsrpEvent::ShellCreated { shell_id } => self.shell = Some(*shell_id),
            PsrpEvent::ShellDeleted { .. } => self.deleted = true,
            PsrpEvent::PsVersionTable(table) => {
                self.ps_version = table.ps_version.as_ref().map(ToString::to_string);
            }
            PsrpEvent::CleanupFailed { shell_id, error } => {
                tracing::debug!(%shell_id, %error, "session shell cleanup failed");
            }
            _ => {}
        }
    }

    /// The stop Signal's reply: to the machine (a refused stop changes nothing).
    fn side_reply(&mut self, reply: Result<Response, ClientError>) {
        match reply {
            Ok(response) => {
                let _ = self.machine.handle(response, &mut self.ids);
            }
            Err(error) => {
                // Another Ctrl-C may try again.
                self.machine.stop_failed();
                tracing::debug!(%error, "the stop signal failed");
            }
        }
    }
}

/// Runs an interactive session on the host of `client` until `exit`, `Exit-PSSession` or
/// the end of `input`, writing prompts and output to `output`; each `()` on `interrupts`
/// is one Ctrl-C. The shell is deleted when the loop ends, however it ends.
pub async fn run_interactive<R, W>(
    mut client: HostClient,
    settings: SessionSettings,
    input: R,
    output: W,
    mut interrupts: impl Interrupts,
) -> Result<ExitInfo, SessionError>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut out = Renderer::new(output, settings.color);
    let mut session = RemoteSession::open(&mut client, settings.open_timeout).await?;
    let name = settings
        .prompt_name
        .clone()
        .unwrap_or_else(|| client.endpoint().host.to_string());
    let result = repl(
        &mut client,
        &mut session,
        &name,
        input,
        &mut out,
        &mut interrupts,
    )
    .await;
    let closed = session.close(&mut client).await;
    let flushed = out.flush().await;
    let (reason, commands) = result?;
    flushed.map_err(SessionError::Output)?;
    Ok(ExitInfo {
        reason,
        commands,
        shell_id: closed.shell_id,
        shell_deleted: closed.deleted,
    })
}

/// The loop: prompt, read a command, run it, render; returns why it ended and how many
/// commands ran.
async fn repl<R, W>(
    client: &mut HostClient,
    session: &mut RemoteSession,
    name: &str,
    input: R,
    out: &mut Renderer<W>,
    interrupts: &mut impl Interrupts,
) -> Result<(ExitReason, u64), SessionError>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut lines = input.lines();
    let mut location = probe_location(client, session, interrupts).await?;
    let mut commands = 0u64;
    let mut command = String::new();
    let mut bad_lines = 0u32;
    let mut interrupts_open = true;
    loop {
        let prompt = if command.is_empty() {
            format!(
                "[{name}]: PS {}> ",
                location.as_deref().unwrap_or(DEFAULT_LOCATION)
            )
        } else {
            CONTINUATION_PROMPT.to_owned()
        };
        out.text(&prompt).await?;
        out.flush().await.map_err(SessionError::Output)?;
        let line = tokio::select! {
            line = lines.next_line() => line,
            signal = interrupts.recv(), if interrupts_open => {
                match signal {
                    // Ctrl-C at the prompt drops what was typed.
                    Some(()) => {
                        command.clear();
                        out.text("\n").await?;
                    }
                    None => interrupts_open = false,
                }
                continue;
            }
        };
        let line = match line {
            Ok(Some(line)) => {
                bad_lines = 0;
                line
            }
            Ok(None) => {
                // The end of the input submits what was typed, then leaves.
                if !command.trim().is_empty() && !is_exit(&command) {
                    out.text("\n").await?;
                    run_command(client, session, &command, out, interrupts).await?;
                    commands += 1;
                }
                out.text("\n").await?;
                return Ok((ExitReason::EndOfInput, commands));
            }
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                bad_lines += 1;
                if bad_lines > MAX_BAD_LINES {
                    return Err(SessionError::Input(error));
                }
                out.error_text("The line is not UTF-8 text; it was ignored.")
                    .await?;
                continue;
            }
            Err(error) => return Err(SessionError::Input(error)),
        };
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let continuing = !command.is_empty();
        if continuing {
            command.push('\n');
        }
        command.push_str(line);
        if command.len() > MAX_COMMAND_LEN {
            command.clear();
            out.error_text("The command is too long; it was discarded.")
                .await?;
            continue;
        }
        if command.trim().is_empty() {
            command.clear();
            continue;
        }
        // An empty continuation line submits, as the console does.
        if input_is_incomplete(&command) && !(continuing && line.trim().is_empty()) {
            continue;
        }
        let text = std::mem::take(&mut command);
        if is_exit(&text) {
            return Ok((ExitReason::Exited, commands));
        }
        run_command(client, session, &text, out, interrupts).await?;
        commands += 1;
        if location.is_some() {
            location = probe_location(client, session, interrupts)
                .await?
                .or(location);
        }
    }
}

/// Runs one typed command and renders its end (output was rendered as it came).
async fn run_command<W: AsyncWrite + Unpin + Send>(
    client: &mut HostClient,
    session: &mut RemoteSession,
    text: &str,
    out: &mut Renderer<W>,
    interrupts: &mut impl Interrupts,
) -> Result<(), SessionError> {
    match session.run(client, text, interrupts, out).await? {
        Ok(outcome) => match outcome.state {
            PsInvocationState::Failed => {
                if let Some(record) = &outcome.error {
                    out.error_record(record).await?;
                }
            }
            // Ctrl-C: back to the prompt on a fresh line, as the console does.
            PsInvocationState::Stopped => out.text("\n").await?,
            _ => {}
        },
        Err(error) => out.error_text(&error.to_string()).await?,
    }
    Ok(())
}

/// Where the session is (`$PWD.Path`), when the host says.
async fn probe_location(
    client: &mut HostClient,
    session: &mut RemoteSession,
    interrupts: &mut impl Interrupts,
) -> Result<Option<String>, SessionError> {
    let mut events = Vec::new();
    let result = session
        .run(client, LOCATION_PROBE, interrupts, &mut events)
        .await?;
    if !matches!(result, Ok(ref o) if o.state == PsInvocationState::Completed) {
        return Ok(None);
    }
    Ok(events.iter().find_map(|e| match e {
        PsrpEvent::Output(value) => value
            .as_str()
            .map(str::trim)
            .filter(|path| !path.is_empty() && path.len() < 1024 && !path.contains(['\r', '\n']))
            .map(str::to_owned),
        _ => None,
    }))
}

/// True for `exit` and `Exit-PSSession` (any case, surrounding blanks).
fn is_exit(text: &str) -> bool {
    let text = text.trim();
    text.eq_ignore_ascii_case("exit") || text.eq_ignore_ascii_case("exit-pssession")
}

/// True when `text` is not a complete PowerShell input yet: a bracket (`{ ( [`, `@( $( @{`
/// included), a quoted string, a here-string or a block comment is still open, or the
/// last line ends with a backtick (line continuation) or a pipe.
pub fn input_is_incomplete(text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Code(u8),
        Single,
        Double,
        HereSingle,
        HereDouble,
        BlockComment,
    }
    let bytes = text.as_bytes();
    let mut stack: Vec<Mode> = vec![Mode::Code(0)];
    let mut i = 0;
    let at_line_start = |i: usize| i == 0 || bytes.get(i - 1) == Some(&b'\n');
    while let Some(&b) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        let mode = *stack.last().unwrap_or(&Mode::Code(0));
        match mode {
            Mode::Code(_) => match b {
                b'`' => i += 1,
                b'#' => {
                    while bytes.get(i).is_some_and(|&c| c != b'\n') {
                        i += 1;
                    }
                    continue;
                }
                b'<' if next == Some(b'#') => {
                    stack.push(Mode::BlockComment);
                    i += 1;
                }
                b'@' if matches!(next, Some(b'\'' | b'"')) && line_rest_is_blank(bytes, i + 2) => {
                    stack.push(if next == Some(b'\'') {
                        Mode::HereSingle
                    } else {
                        Mode::HereDouble
                    });
                    i += 1;
                }
                b'\'' => stack.push(Mode::Single),
                b'"' => stack.push(Mode::Double),
                b'{' | b'(' | b'[' => stack.push(Mode::Code(b)),
                b'}' | b')' | b']' => {
                    let opener = match b {
                        b'}' => b'{',
                        b')' => b'(',
                        _ => b'[',
                    };
                    // A stray closer is a parse error, not an open construct.
                    if mode == Mode::Code(opener) && stack.len() > 1 {
                        stack.pop();
                    }
                }
                _ => {}
            },
            Mode::Single => {
                if b == b'\'' {
                    if next == Some(b'\'') {
                        i += 1;
                    } else {
                        stack.pop();
                    }
                }
            }
            Mode::Double => match b {
                b'`' => i += 1,
                b'"' if next == Some(b'"') => i += 1,
                b'"' => {
                    stack.pop();
                }
                b'$' if next == Some(b'(') => {
                    stack.push(Mode::Code(b'('));
                    i += 1;
                }
                _ => {}
            },
            Mode::HereSingle | Mode::HereDouble => {
                let closer = if mode == Mode::HereSingle {
                    b'\''
                } else {
                    b'"'
                };
                if b == closer && next == Some(b'@') && at_line_start(i) {
                    stack.pop();
                    i += 1;
                }
            }
            Mode::BlockComment => {
                if b == b'#' && next == Some(b'>') {
                    stack.pop();
                    i += 1;
                }
            }
        }
        i += 1;
    }
    if stack.len() > 1 {
        return true;
    }
    let last = text.rsplit('\n').next().unwrap_or("");
    let last = strip_comment(last).trim_end();
    last.ends_with('`') || last.ends_with('|') && !last.ends_with("||")
}

/// True when only blanks follow `from` up to the end of its line (a here-string opener
/// must end its line).
fn line_rest_is_blank(bytes: &[u8], from: usize) -> bool {
    bytes
        .get(from..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&b| b != b'\n')
        .all(|b| b.is_ascii_whitespace())
}

/// A line without a trailing `# comment` outside quotes (for the continuation check).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return line.get(..i).unwrap_or(line),
            _ => {}
        }
    }
    line
}

/// Writes what a session shows: prompts, output text, records, errors.
#[derive(Debug)]
pub struct Renderer<W> {
    out: W,
    color: bool,
    buffered: usize,
}

const RED: &str = "\x1b[91m";
const YELLOW: &str = "\x1b[93m";
const RESET: &str = "\x1b[0m";

impl<W: AsyncWrite + Unpin + Send> Renderer<W> {
    /// A renderer to `out`, with ANSI colours when `color`.
    pub fn new(out: W, color: bool) -> Self {
        Self {
            out,
            color,
            buffered: 0,
        }
    }

    /// Gives the writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes one event.
    pub async fn event(&mut self, event: &PsrpEvent) -> Result<(), SessionError> {
        match event {
            PsrpEvent::Output(value) => {
                let mut text = String::new();
                render_value(value, &mut text, 0);
                self.text(&text).await
            }
            PsrpEvent::Error(record) => self.error_record(record).await,
            PsrpEvent::Warning(record) => {
                self.colored(YELLOW, &format!("WARNING: {}\n", record.message))
                    .await
            }
            PsrpEvent::Verbose(record) => {
                self.colored(YELLOW, &format!("VERBOSE: {}\n", record.message))
                    .await
            }
            PsrpEvent::Debug(record) => {
                self.colored(YELLOW, &format!("DEBUG: {}\n", record.message))
                    .await
            }
            PsrpEvent::Information(record) => {
                let mut text = record.message_data.display_text().into_owned();
                text.push('\n');
                self.text(&text).await
            }
            // Progress bars, state changes and shell bookkeeping are not shown.
            _ => Ok(()),
        }
    }

    /// An error record as Windows PowerShell prints one (NormalView): the message, the
    /// position, then the category and the error id.
    pub async fn error_record(&mut self, record: &ErrorRecord) -> Result<(), SessionError> {
        self.colored(RED, &format_error_record(record)).await
    }

    /// A local error line (red).
    pub async fn error_text(&mut self, text: &str) -> Result<(), SessionError> {
        self.colored(RED, &format!("{text}\n")).await
    }

    /// Plain text.
    pub async fn text(&mut self, text: &str) -> Result<(), SessionError> {
        self.out
            .write_all(text.as_bytes())
            .await
            .map_err(SessionError::Output)
    }

    /// Flushes the writer.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.buffered = 0;
        self.out.flush().await
    }

    async fn colored(&mut self, color: &str, text: &str) -> Result<(), SessionError> {
        if !self.color {
            return self.text(text).await;
        }
        let body = text.strip_suffix('\n').unwrap_or(text);
        let end = if body.len() < text.len() { "\n" } else { "" };
        self.text(&format!("{color}{body}{RESET}{end}")).await
    }
}

impl<W: AsyncWrite + Unpin + Send> EventSink for Renderer<W> {
    async fn accept(&mut self, events: Vec<PsrpEvent>) -> io::Result<()> {
        for event in &events {
            self.event(event).await.map_err(|e| match e {
                SessionError::Output(io) => io,
                other => io::Error::other(other.to_string()),
            })?;
            self.buffered += 1;
            if self.buffered >= FLUSH_EVERY {
                self.flush().await?;
            }
        }
        self.flush().await
    }
}

/// The text of an error record as Windows PowerShell 5.1 prints it (its NormalView):
/// the command that raised it (`MyCommand`, or the name that was not found), the message,
/// the position unless the message already holds it, then the category and the error id:
///
/// ```text
/// Write-Error : bad thing
/// At line:1 char:1
/// + Write-Error 'bad thing'
/// + ~~~~~~~~~~~~~~~~~~~~~~~
///     + CategoryInfo          : NotSpecified: (:) [Write-Error], WriteErrorException
///     + FullyQualifiedErrorId : Microsoft.PowerShell.Commands.WriteErrorException
/// ```
pub fn format_error_record(record: &ErrorRecord) -> String {
    let mut text = String::new();
    let info = record.invocation.as_ref();
    let command = info
        .and_then(|i| i.my_command.as_deref())
        .filter(|c| !c.is_empty() && !c.contains(['\r', '\n']))
        .map(str::to_owned)
        .or_else(|| {
            (record.reason.as_deref() == Some("CommandNotFoundException"))
                .then(|| record.target_name.clone())
                .flatten()
        });
    if let Some(command) = command {
        text.push_str(&command);
        text.push_str(" : ");
    }
    let message = record.message.trim_end();
    text.push_str(message);
    text.push('\n');
    if let Some(position) = info
        .and_then(|i| i.position_message.as_deref())
        .map(str::trim_end)
        .filter(|p| !p.is_empty() && !message.starts_with(p))
    {
        text.push_str(&position.replace("\r\n", "\n"));
        text.push('\n');
    }
    if let Some(category) = record.category_message.as_deref().filter(|c| !c.is_empty()) {
        text.push_str(&format!("    + CategoryInfo          : {category}\n"));
    }
    if !record.fully_qualified_error_id.is_empty() {
        text.push_str(&format!(
            "    + FullyQualifiedErrorId : {}\n",
            record.fully_qualified_error_id
        ));
    }
    text
}

/// Deepest nesting of collections rendered item by item.
const MAX_RENDER_DEPTH: usize = 16;

/// Appends an output object's text: strings as they are, booleans as `True`/`False`,
/// collections one item per line, objects their `ToString`, and property bags without
/// one as `@{Name=value; ...}` (what PowerShell's string conversion makes of them).
fn render_value(value: &Value, out: &mut String, depth: usize) {
    match value {
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Object(object) if depth < MAX_RENDER_DEPTH => {
            if let Some(items) = object.list() {
                for item in items {
                    render_value(item, out, depth + 1);
                }
                return;
            }
            out.push_str(&object_text(object));
        }
        other => out.push_str(&other.display_text()),
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
}

/// An object's text: its `ToString`, its primitive, or its properties. A `ToString` that
/// is only the type's name (.NET's default, e.g. a deserialized ServiceController) says
/// nothing, so such an object is shown as a list of its properties, as `Format-List`
/// would.
fn object_text(object: &PsObject) -> String {
    let properties: Vec<(&str, String)> = object
        .adapted
        .iter()
        .chain(&object.extended)
        .map(|p| (p.name.as_str(), p.value.display_text().into_owned()))
        .collect();
    if let Some(text) = &object.to_string {
        let names_the_type = object
            .type_names()
            .iter()
            .any(|t| t == text || t.strip_prefix("Deserialized.") == Some(text.as_str()));
        if !names_the_type || properties.is_empty() {
            return text.clone();
        }
        let width = properties
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0);
        let mut list = String::from("\n");
        for (name, value) in &properties {
            list.push_str(&format!("{name:<width$} : {value}\n"));
        }
        return list;
    }
    if let Content::Value(inner) = &object.content {
        return inner.display_text().into_owned();
    }
    if properties.is_empty() {
        return object.type_names().first().cloned().unwrap_or_default();
    }
    let pairs: Vec<String> = properties
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    format!("@{{{}}}", pairs.join("; "))
}

/// Polls the in-flight stop Signal.
async fn poll_side(
    side: &mut Option<SideFuture>,
) -> (Option<Connection>, Result<Response, ClientError>) {
    match side.as_mut() {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Sends the stop Signal on the side connection (opened, and authenticated, when there
/// is none or it broke).
fn signal_beside(
    config: ConnectionConfig,
    conn: Option<Connection>,
    request: Box<Request>,
) -> SideFuture {
    Box::pin(async move {
        let mut conn = match conn {
            Some(conn) if conn.is_usable() => conn,
            _ => match Connection::connect(&config).await {
                Ok(conn) => conn,
                Err(error) => return (None, Err(ClientError::Transport(error))),
            },
        };
        match conn.send(&request.to_xml()).await {
            Ok(reply) => {
                let parsed = Response::parse(&reply.body).map_err(|e| ClientError::Protocol {
                    operation: "Signal".to_owned(),
                    detail: e.to_string(),
                });
                (Some(conn), parsed)
            }
            Err(error) => (None, Err(ClientError::Transport(error))),
        }
    })
}

fn operation_name(action: &Action) -> &'static str {
    match action {
        Action::Create => "Create",
        Action::Command => "Command",
        Action::Send => "Send",
        Action::Receive => "Receive",
        Action::Signal => "Signal",
        Action::Delete => "Delete",
        _ => "request",
    }
}

fn unexpected_end(operation: &str) -> ClientError {
    ClientError::Protocol {
        operation: operation.to_owned(),
        detail: "the session ended without a reason".to_owned(),
    }
}

fn unexpected_step(operation: &str, step: &SessionStep) -> ClientError {
    ClientError::Protocol {
        operation: operation.to_owned(),
        detail: format!("the session machine stopped unexpectedly: {step:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_input_is_recognised() {
        for complete in [
            "Get-Date",
            "$x = 5",
            "function f { 1 }",
            "if ($true) { 'yes' } else { 'no' }",
            "'it''s { fine'",
            "\"a `\" quote { \"",
            "# a comment with {",
            "<# block { #> 1",
            "@'\nhere { '\n'@",
            "@\"\n$( 1 + 1 ) {\n\"@",
            "'a' -or 'b' || 'c'",
            "1 | % { $_ }",
            "}",
        ] {
            assert!(!input_is_incomplete(complete), "{complete:?}");
        }
        for incomplete in [
            "function f {",
            "if ($true) {\n'yes'",
            "Get-Process |",
            "Get-Process |  # then",
            "Get-ChildItem `",
            "'unterminated",
            "\"unterminated $( 'x'",
            "@'\nhere",
            "<# block",
            "@(1,\n2",
            "$h = @{",
            "[int[]](1",
        ] {
            assert!(input_is_incomplete(incomplete), "{incomplete:?}");
        }
    }

    #[test]
    fn the_loop_and_the_diagnosis_can_run_on_spawned_tasks() {
        fn assert_send<T: Send>(_: &T) {}
        let options = std::sync::Arc::new(crate::ops::ClientOptions::new(
            crate::http::AuthMethod::Basic,
            crate::auth::Credential::new("u", "p").unwrap(),
        ));
        let endpoint = crate::target::Endpoint::new("web01", crate::target::Scheme::Https).unwrap();
        let client = HostClient::new(endpoint, std::sync::Arc::clone(&options)).unwrap();
        let (_tx, rx) = mpsc::unbounded_channel();
        let input: &[u8] = b"";
        let session = run_interactive(
            client,
            SessionSettings::default(),
            tokio::io::BufReader::new(input),
            Vec::new(),
            rx,
        );
        assert_send(&session);
        let target = crate::doctor::DoctorTarget::new("web01", crate::target::Scheme::Https);
        let diagnosis = crate::doctor::diagnose(&target, &options, |_| {});
        assert_send(&diagnosis);
    }

    #[test]
    fn exit_words_leave() {
        assert!(is_exit(" exit "));
        assert!(is_exit("Exit-PSSession"));
        assert!(is_exit("EXIT"));
        assert!(!is_exit("exit 1"));
        assert!(!is_exit("'exit'"));
    }

    #[test]
    fn error_records_print_like_windows_powershell() {
        let mut record = ErrorRecord::runtime_exception("bad thing");
        record.category_message =
            Some("NotSpecified: (:) [Write-Error], WriteErrorException".into());
        record.fully_qualified_error_id =
            "Microsoft.PowerShell.Commands.WriteErrorException".into();
        assert_eq!(
            format_error_record(&record),
            "bad thing\n    + CategoryInfo          : NotSpecified: (:) [Write-Error], \
             WriteErrorException\n    + FullyQualifiedErrorId : \
             Microsoft.PowerShell.Commands.WriteErrorException\n"
        );
    }

    #[test]
    fn values_render_as_text() {
        let mut out = String::new();
        render_value(&Value::Bool(true), &mut out, 0);
        render_value(&Value::I32(10), &mut out, 0);
        render_value(
            &Value::list(&["System.Object[]"], vec!["a".into(), Value::I64(2)]),
            &mut out,
            0,
        );
        let bag = Value::object(PsObject {
            extended: vec![
                psfleet_core::psrp::clixml::Property::new("Name", "x"),
                psfleet_core::psrp::clixml::Property::new("Count", 3),
            ],
            ..PsObject::default()
        });
        render_value(&bag, &mut out, 0);
        assert_eq!(out, "True\n10\na\n2\n@{Name=x; Count=3}\n");
        // A ToString that only names the type: the properties as a list.
        let service = Value::object(PsObject {
            type_names: Some(psfleet_core::psrp::clixml::type_names_of(&[
                "Deserialized.System.ServiceProcess.ServiceController",
                "Deserialized.System.Object",
            ])),
            to_string: Some("System.ServiceProcess.ServiceController".into()),
            adapted: vec![
                psfleet_core::psrp::clixml::Property::new("Name", "WinRM"),
                psfleet_core::psrp::clixml::Property::new("Status", "Running"),
            ],
            ..PsObject::default()
        });
        let mut out = String::new();
        render_value(&service, &mut out, 0);
        assert_eq!(out, "\nName   : WinRM\nStatus : Running\n");
    }

    #[tokio::test]
    async fn colour_wraps_errors_and_warnings_only_when_on() {
        let record = ErrorRecord::runtime_exception("boom");
        let mut plain = Renderer::new(Vec::new(), false);
        plain.error_record(&record).await.unwrap();
        let plain = String::from_utf8(plain.into_inner()).unwrap();
        assert!(!plain.contains('\x1b'));
        assert!(plain.starts_with("boom\n"));
        let mut colored = Renderer::new(Vec::new(), true);
        colored.error_record(&record).await.unwrap();
        colored.text("plain\n").await.unwrap();
        let colored = String::from_utf8(colored.into_inner()).unwrap();
        assert!(colored.starts_with("\x1b[91mboom"), "{colored:?}");
        assert!(colored.ends_with("\x1b[0m\nplain\n"), "{colored:?}");
    }
}
