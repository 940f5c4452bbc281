//! WinRS client: one command in a fresh cmd shell, sans-IO (MS-WSMV 3.1.4.1.29 and 2.2.4).
//!
//! The caller sends each [`Request`] the machine hands out, parses the reply into a
//! [`Response`] (an HTTP 500 body is a [`ResponseBody::Fault`]) and passes it back to
//! [`CommandRun::handle`], which answers with the next request or the outcome. Exactly one
//! request is outstanding at a time; every reply must relate to it (`a:RelatesTo`).
//!
//! ```text
//!  ExpectCreated ──CreateResponse──> ExpectCommandId ──CommandResponse──┐
//!        │                                 │                            ▼
//!        │ fault: Finished(Err)            │ fault          ExpectSendAck* (stdin chunks)
//!        ▼                                 ▼                            │
//!     (no shell)                     ExpectDeleted <────────────────────┤
//!                                          ▲                            ▼
//!                         ExpectSignalled ─┘          ExpectOutput ⟲ Running / TimedOut fault
//!                                ▲                                      │ CommandState Done
//!                                └──────────────────────────────────────┘
//! ```
//!
//! A shell that was created is always deleted before the run finishes, whatever went wrong
//! after it was created (a leaked shell counts against MaxShellsPerUser until its idle
//! timeout): failures after Create record the error, then go through Signal and Delete.

use std::collections::VecDeque;
use std::time::Duration;

use uuid::Uuid;

use crate::ids::IdGenerator;
use crate::wsman::{
    Action, CommandLine, CommandState, CreateShell, EnvironmentVariable, Receive, Request,
    RequestBody, RequestHeader, Response, ResponseBody, Send, SendStream, Signal, SignalCode,
    WsOption, WsmanFault, resources,
};

/// Largest stdin chunk put in one Send: base64 grows it by 4/3 and the envelope must stay
/// under the server's MaxEnvelopeSizekb (150 KiB on the oldest hosts, wire-facts 1.14).
pub const MAX_STDIN_CHUNK: usize = 64 * 1024;

/// How to open the shell and address the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellSettings {
    /// `wsa:To`: the endpoint URL, e.g. `http://host:5985/wsman`.
    pub endpoint: String,
    /// `wsmv:SessionId` shared by every request of this run.
    pub session_id: Option<Uuid>,
    /// `wsman:MaxEnvelopeSize`: the largest response accepted.
    pub max_envelope_size: u32,
    /// `wsman:OperationTimeout` of Receive: how long the host may hold a Receive open
    /// before answering with the TimedOut fault (which simply means "poll again").
    pub operation_timeout: Duration,
    /// `WINRS_CODEPAGE` option (65001 for UTF-8 output, R:test_winrs_unicode).
    pub codepage: Option<u32>,
    /// `WINRS_NOPROFILE` option: do not load the user profile (R:test_winrs_noprofile).
    pub no_profile: bool,
    /// Environment variables of the shell (R:test_winrs_environment).
    pub environment: Vec<(String, String)>,
    /// Working directory of the shell.
    pub working_directory: Option<String>,
    /// `rsp:IdleTimeOut` of the shell.
    pub idle_timeout: Option<Duration>,
    /// `rsp:Lifetime` of the shell (R:test_winrs_extra_opts).
    pub lifetime: Option<Duration>,
    /// `rsp:Name` of the shell, shown by `Get-WSManInstance` on the host.
    pub name: Option<String>,
    /// Signal sent once the command is done, before Delete. pypsrp sends ctrl_c here and
    /// Windows accepts it (R:test_winrs_standard); pywinrm sends terminate.
    pub cleanup_signal: SignalCode,
}

impl ShellSettings {
    /// Settings as pypsrp uses them against `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            session_id: None,
            max_envelope_size: crate::wsman::DEFAULT_MAX_ENVELOPE_SIZE,
            operation_timeout: crate::wsman::DEFAULT_OPERATION_TIMEOUT,
            codepage: None,
            no_profile: false,
            environment: Vec::new(),
            working_directory: None,
            idle_timeout: None,
            lifetime: None,
            name: None,
            cleanup_signal: SignalCode::CtrlC,
        }
    }
}

/// The command to run: an executable and its arguments as WinRS passes them to cmd.exe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// `rsp:Command`, e.g. `cmd.exe` or a whole command line such as `echo abc`.
    pub command: String,
    /// `rsp:Arguments`, one each.
    pub arguments: Vec<String>,
    /// Input written to stdin after the command starts, in the pieces the caller has it
    /// (each piece is one Send, split further at [`MAX_STDIN_CHUNK`]); stdin is closed
    /// with the last. Empty: no input is sent.
    pub stdin: Vec<Vec<u8>>,
}

/// What happened, in order, for progress and state tracking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WinrsEvent {
    /// The shell exists on the host: record it so that a crash can reap it later.
    ShellCreated {
        /// The ShellId.
        shell_id: Uuid,
    },
    /// The command started.
    CommandStarted {
        /// The CommandId.
        command_id: Uuid,
    },
    /// A chunk of stdout.
    Stdout(Vec<u8>),
    /// A chunk of stderr.
    Stderr(Vec<u8>),
    /// The command finished with this exit code.
    Exited {
        /// `rsp:ExitCode`.
        exit_code: i64,
    },
    /// The shell was deleted: forget it.
    ShellDeleted {
        /// The ShellId.
        shell_id: Uuid,
    },
    /// Cleanup (Signal or Delete) failed; the shell may be left open on the host.
    CleanupFailed {
        /// The ShellId.
        shell_id: Uuid,
        /// Why.
        error: WinrsError,
    },
}

/// The operation a fault or violation happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Create the shell.
    Create,
    /// Start the command.
    Command,
    /// Send stdin.
    Send,
    /// Receive output.
    Receive,
    /// Signal the command.
    Signal,
    /// Delete the shell.
    Delete,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WinrsError {
    /// The host answered with a WS-Management fault.
    #[error("{operation:?} failed: {}", .fault.reason)]
    Fault {
        /// What was being done.
        operation: Operation,
        /// The fault as Windows sent it.
        fault: Box<WsmanFault>,
    },
    /// The reply is not the one the outstanding request calls for.
    #[error("{operation:?}: expected {expected}, got {found}")]
    UnexpectedResponse {
        /// What was being done.
        operation: Operation,
        /// The reply action expected.
        expected: &'static str,
        /// What arrived.
        found: String,
    },
    /// The reply relates to another request (`a:RelatesTo`).
    #[error("{operation:?}: reply relates to {found:?}, not to request {expected}")]
    WrongRelatesTo {
        /// What was being done.
        operation: Operation,
        /// The outstanding request's MessageID.
        expected: Uuid,
        /// The reply's RelatesTo.
        found: Option<Uuid>,
    },
    /// The CreateResponse names no ShellId.
    #[error("CreateResponse carries no ShellId")]
    MissingShellId,
    /// The caller gave up (deadline or cancellation), with its reason.
    #[error("aborted: {0}")]
    Aborted(String),
}

/// The outcome of a run: the exit code, or why there is none.
pub type RunOutcome = Result<i64, WinrsError>;

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request and pass its reply to [`CommandRun::handle`].
    Send(Box<Request>),
    /// The run is over (the shell, if one was created, has been deleted or the attempt
    /// reported as [`WinrsEvent::CleanupFailed`]).
    Finished(RunOutcome),
}

/// One command in a fresh cmd shell.
#[derive(Debug)]
pub struct CommandRun {
    settings: ShellSettings,
    spec: CommandSpec,
    state: State,
    /// MessageID of the outstanding request.
    awaiting: Uuid,
    events: VecDeque<WinrsEvent>,
    /// The first failure, kept while the shell is cleaned up.
    failure: Option<WinrsError>,
    exit_code: Option<i64>,
}

/// The states, named after the reply each waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    ExpectCreated,
    ExpectCommandId {
        shell: Uuid,
    },
    ExpectSendAck {
        shell: Uuid,
        command: Uuid,
        /// Where the next Send starts: (piece, byte offset in it).
        next: (usize, usize),
    },
    ExpectOutput {
        shell: Uuid,
        command: Uuid,
    },
    ExpectSignalled {
        shell: Uuid,
    },
    ExpectDeleted {
        shell: Uuid,
    },
    Finished,
}

impl CommandRun {
    /// Starts a run; returns the machine and the Create request to send first.
    pub fn start(
        settings: ShellSettings,
        spec: CommandSpec,
        ids: &mut impl IdGenerator,
    ) -> (Self, Box<Request>) {
        let mut run = Self {
            settings,
            spec,
            state: State::ExpectCreated,
            awaiting: Uuid::nil(),
            events: VecDeque::new(),
            failure: None,
            exit_code: None,
        };
        let mut create = CreateShell::cmd();
        create.environment = run
            .settings
            .environment
            .iter()
            .map(|(name, value)| EnvironmentVariable {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        create.working_directory = run.settings.working_directory.clone();
        create.idle_timeout = run.settings.idle_timeout;
        create.lifetime = run.settings.lifetime;
        create.name = run.settings.name.clone();
        let mut header = run.header(Action::Create, ids);
        if run.settings.no_profile {
            header = header.with_option(WsOption::must_comply("WINRS_NOPROFILE", "TRUE"));
        }
        if let Some(codepage) = run.settings.codepage {
            header = header.with_option(WsOption::new("WINRS_CODEPAGE", codepage.to_string()));
        }
        let request = run.request(header, RequestBody::Create(create));
        (run, request)
    }

    /// The next event, if any. Drain after every [`CommandRun::handle`].
    pub fn poll_event(&mut self) -> Option<WinrsEvent> {
        self.events.pop_front()
    }

    /// The shell this run has open on the host, if any.
    pub fn open_shell(&self) -> Option<Uuid> {
        match self.state {
            State::ExpectCommandId { shell }
            | State::ExpectSendAck { shell, .. }
            | State::ExpectOutput { shell, .. }
            | State::ExpectSignalled { shell }
            | State::ExpectDeleted { shell } => Some(shell),
            State::ExpectCreated | State::Finished => None,
        }
    }

    /// True once [`Step::Finished`] has been returned.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Feeds the reply to the outstanding request.
    pub fn handle(&mut self, response: Response, ids: &mut impl IdGenerator) -> Step {
        let operation = self.operation();
        if response.header.relates_to != Some(self.awaiting) && self.state != State::Finished {
            let error = WinrsError::WrongRelatesTo {
                operation,
                expected: self.awaiting,
                found: response.header.relates_to,
            };
            return self.fail(error, ids);
        }
        match (self.state.clone(), response.body) {
            (State::Finished, _) => self.finish(),
            (State::ExpectCreated, ResponseBody::CreateResponse(created)) => {
                let Some(shell) = created.shell_id() else {
                    return self.fail(WinrsError::MissingShellId, ids);
                };
                self.events
                    .push_back(WinrsEvent::ShellCreated { shell_id: shell });
                self.state = State::ExpectCommandId { shell };
                let header = self
                    .header(Action::Command, ids)
                    .with_shell_id(&shell)
                    .with_option(WsOption::new("WINRS_SKIP_CMD_SHELL", "False"));
                let line = CommandLine::cmd(self.spec.command.clone(), self.spec.arguments.clone());
                Step::Send(self.request(header, RequestBody::Command(line)))
            }
            (State::ExpectCommandId { shell }, ResponseBody::CommandResponse(started)) => {
                let command = started.command_id;
                self.events.push_back(WinrsEvent::CommandStarted {
                    command_id: command,
                });
                if self.spec.stdin.iter().any(|piece| !piece.is_empty()) {
                    self.send_stdin(shell, command, (0, 0), ids)
                } else {
                    self.receive(shell, command, ids)
                }
            }
            (
                State::ExpectSendAck {
                    shell,
                    command,
                    next,
                },
                ResponseBody::SendResponse,
            ) => {
                if next.0 < self.spec.stdin.len() {
                    self.send_stdin(shell, command, next, ids)
                } else {
                    self.receive(shell, command, ids)
                }
            }
            (State::ExpectOutput { shell, command }, ResponseBody::ReceiveResponse(output)) => {
                for stream in output.streams {
                    if stream.data.is_empty() {
                        continue;
                    }
                    match stream.name.as_str() {
                        "stderr" => self.events.push_back(WinrsEvent::Stderr(stream.data)),
                        _ => self.events.push_back(WinrsEvent::Stdout(stream.data)),
                    }
                }
                match output.command_state {
                    Some(state) if state.state == CommandState::Done => {
                        let exit_code = state.exit_code.unwrap_or(0);
                        self.exit_code = Some(exit_code);
                        self.events.push_back(WinrsEvent::Exited { exit_code });
                        self.signal(shell, command, ids)
                    }
                    _ => self.receive(shell, command, ids),
                }
            }
            // MS-WSMV 3.1.4.14: a Receive that times out is answered with the TimedOut
            // fault; the client simply polls again (R:test_winrs_operation_timeout).
            (State::ExpectOutput { shell, command }, ResponseBody::Fault(fault))
                if fault.code.is_some_and(|c| c.is_operation_timeout()) =>
            {
                self.receive(shell, command, ids)
            }
            (State::ExpectSignalled { shell }, ResponseBody::SignalResponse) => {
                self.delete(shell, ids)
            }
            (State::ExpectSignalled { shell }, ResponseBody::Fault(fault)) => {
                // The command may already be gone; the shell still has to be deleted.
                let error = WinrsError::Fault {
                    operation: Operation::Signal,
                    fault: Box::new(fault),
                };
                self.events.push_back(WinrsEvent::CleanupFailed {
                    shell_id: shell,
                    error,
                });
                self.delete(shell, ids)
            }
            (State::ExpectDeleted { shell }, ResponseBody::DeleteResponse) => {
                self.events
                    .push_back(WinrsEvent::ShellDeleted { shell_id: shell });
                self.finish()
            }
            // The shell is gone already (it idled out): what the Delete was for.
            (State::ExpectDeleted { shell }, ResponseBody::Fault(fault))
                if fault.is_shell_not_found() =>
            {
                self.events
                    .push_back(WinrsEvent::ShellDeleted { shell_id: shell });
                self.finish()
            }
            (State::ExpectDeleted { shell }, ResponseBody::Fault(fault)) => {
                let error = WinrsError::Fault {
                    operation: Operation::Delete,
                    fault: Box::new(fault),
                };
                self.events.push_back(WinrsEvent::CleanupFailed {
                    shell_id: shell,
                    error,
                });
                self.finish()
            }
            (_, ResponseBody::Fault(fault)) => {
                let error = WinrsError::Fault {
                    operation,
                    fault: Box::new(fault),
                };
                self.fail(error, ids)
            }
            (_, other) => {
                let error = WinrsError::UnexpectedResponse {
                    operation,
                    expected: self.expected_reply(),
                    found: other
                        .action()
                        .map_or_else(|| "an untyped body".to_owned(), |a| a.uri().to_owned()),
                };
                self.fail(error, ids)
            }
        }
    }

    /// Gives up on the run (deadline, cancellation, a transport failure or a reply that
    /// could not be parsed). If a shell is open the next step deletes it (after stopping
    /// the command); the caller bounds how long that cleanup may take.
    pub fn abort(&mut self, error: WinrsError, ids: &mut impl IdGenerator) -> Step {
        match self.state {
            // Cleanup already under way: finish it, keeping the first failure.
            State::ExpectSignalled { .. } | State::ExpectDeleted { .. } => {
                self.failure.get_or_insert(error);
                match self.state {
                    State::ExpectSignalled { shell } => self.delete(shell, ids),
                    _ => self.finish(),
                }
            }
            _ => self.fail(error, ids),
        }
    }

    fn fail(&mut self, error: WinrsError, ids: &mut impl IdGenerator) -> Step {
        self.failure.get_or_insert(error);
        match self.state.clone() {
            State::ExpectSendAck { shell, command, .. }
            | State::ExpectOutput { shell, command } => self.signal(shell, command, ids),
            State::ExpectCommandId { shell } | State::ExpectSignalled { shell } => {
                self.delete(shell, ids)
            }
            State::ExpectCreated | State::ExpectDeleted { .. } | State::Finished => self.finish(),
        }
    }

    fn finish(&mut self) -> Step {
        self.state = State::Finished;
        match (self.failure.clone(), self.exit_code) {
            (Some(error), _) => Step::Finished(Err(error)),
            (None, Some(code)) => Step::Finished(Ok(code)),
            (None, None) => Step::Finished(Err(WinrsError::Aborted(
                "the command ended without an exit code".to_owned(),
            ))),
        }
    }

    fn send_stdin(
        &mut self,
        shell: Uuid,
        command: Uuid,
        (piece, offset): (usize, usize),
        ids: &mut impl IdGenerator,
    ) -> Step {
        let input = self
            .spec
            .stdin
            .get(piece)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let end = input.len().min(offset.saturating_add(MAX_STDIN_CHUNK));
        let chunk = input.get(offset..end).unwrap_or_default().to_vec();
        let next = if end < input.len() {
            (piece, end)
        } else {
            (piece + 1, 0)
        };
        let last = next.0 >= self.spec.stdin.len();
        self.state = State::ExpectSendAck {
            shell,
            command,
            next,
        };
        let header = self.header(Action::Send, ids).with_shell_id(&shell);
        let body = RequestBody::Send(Send {
            streams: vec![SendStream {
                name: "stdin".to_owned(),
                command_id: Some(command),
                end: Some(last),
                data: chunk,
            }],
        });
        Step::Send(self.request(header, body))
    }

    fn receive(&mut self, shell: Uuid, command: Uuid, ids: &mut impl IdGenerator) -> Step {
        self.state = State::ExpectOutput { shell, command };
        let header = self
            .header(Action::Receive, ids)
            .with_shell_id(&shell)
            .with_option(WsOption::new("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True"));
        let body = RequestBody::Receive(Receive {
            command_id: Some(command),
            streams: vec!["stdout".to_owned(), "stderr".to_owned()],
        });
        Step::Send(self.request(header, body))
    }

    fn signal(&mut self, shell: Uuid, command: Uuid, ids: &mut impl IdGenerator) -> Step {
        self.state = State::ExpectSignalled { shell };
        let header = self.header(Action::Signal, ids).with_shell_id(&shell);
        let body = RequestBody::Signal(Signal {
            command_id: Some(command),
            code: self.settings.cleanup_signal.clone(),
        });
        Step::Send(self.request(header, body))
    }

    fn delete(&mut self, shell: Uuid, ids: &mut impl IdGenerator) -> Step {
        self.state = State::ExpectDeleted { shell };
        let header = self.header(Action::Delete, ids).with_shell_id(&shell);
        Step::Send(self.request(header, RequestBody::Delete))
    }

    fn header(&self, action: Action, ids: &mut impl IdGenerator) -> RequestHeader {
        let mut header = RequestHeader::new(
            action,
            self.settings.endpoint.clone(),
            resources::CMD_SHELL,
            ids.next_id(),
        )
        .with_max_envelope_size(self.settings.max_envelope_size)
        .with_operation_timeout(self.settings.operation_timeout);
        if let Some(session) = self.settings.session_id {
            header = header.with_session_id(session);
        }
        header
    }

    fn request(&mut self, header: RequestHeader, body: RequestBody) -> Box<Request> {
        self.awaiting = header.message_id;
        Box::new(Request::new(header, body))
    }

    fn operation(&self) -> Operation {
        match self.state {
            State::ExpectCreated => Operation::Create,
            State::ExpectCommandId { .. } => Operation::Command,
            State::ExpectSendAck { .. } => Operation::Send,
            State::ExpectOutput { .. } => Operation::Receive,
            State::ExpectSignalled { .. } => Operation::Signal,
            State::ExpectDeleted { .. } | State::Finished => Operation::Delete,
        }
    }

    fn expected_reply(&self) -> &'static str {
        match self.operation() {
            Operation::Create => "CreateResponse",
            Operation::Command => "CommandResponse",
            Operation::Send => "SendResponse",
            Operation::Receive => "ReceiveResponse",
            Operation::Signal => "SignalResponse",
            Operation::Delete => "DeleteResponse",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SequentialIds;
    use crate::wsman::{
        CommandResponse, CommandStateInfo, CreateResponse, ReceiveResponse, ReceivedStream,
        Selector,
    };

    /// A scripted host: answers each request with the body `reply` picks for it, so a test
    /// reads like the conversation it checks.
    struct Host {
        ids: SequentialIds,
        shell: Uuid,
        command: Uuid,
        log: Vec<Action>,
    }

    impl Host {
        fn new() -> Self {
            Self {
                ids: SequentialIds::starting_after(1000),
                shell: Uuid::from_u128(0xAAAA),
                command: Uuid::from_u128(0xBBBB),
                log: Vec::new(),
            }
        }

        fn created(&self) -> ResponseBody {
            ResponseBody::CreateResponse(CreateResponse {
                address: "http://host:5985/wsman".into(),
                resource_uri: Some(resources::CMD_SHELL.into()),
                selectors: vec![Selector::shell_id(&self.shell)],
                shell: None,
            })
        }

        fn output(&self, stdout: &[u8], stderr: &[u8], exit: Option<i64>) -> ResponseBody {
            let stream = |name: &str, data: &[u8], end| ReceivedStream {
                name: name.into(),
                command_id: Some(self.command),
                end,
                data: data.to_vec(),
            };
            ResponseBody::ReceiveResponse(ReceiveResponse {
                streams: vec![
                    stream("stdout", stdout, exit.is_some()),
                    stream("stderr", stderr, exit.is_some()),
                ],
                command_state: Some(CommandStateInfo {
                    command_id: Some(self.command),
                    state: if exit.is_some() {
                        CommandState::Done
                    } else {
                        CommandState::Running
                    },
                    exit_code: exit,
                }),
            })
        }

        fn answer(&mut self, request: &Request, body: ResponseBody) -> Response {
            self.log.push(request.header.action.clone());
            Response::reply(request.header.message_id, self.ids.next_id(), body)
        }
    }

    fn run_to_end(
        spec: CommandSpec,
        mut reply: impl FnMut(&mut Host, &Request) -> ResponseBody,
    ) -> (RunOutcome, Vec<WinrsEvent>, Vec<Request>, Host) {
        let mut ids = SequentialIds::default();
        let mut host = Host::new();
        let (mut run, first) =
            CommandRun::start(ShellSettings::new("http://host:5985/wsman"), spec, &mut ids);
        let mut requests = vec![(*first).clone()];
        let mut next = first;
        let mut events = Vec::new();
        for _ in 0..100 {
            let body = reply(&mut host, &next);
            let response = host.answer(&next, body);
            // Everything crosses the wire as XML: the reply goes through the real codec.
            let response = Response::parse(&response.to_xml()).unwrap();
            let step = run.handle(response, &mut ids);
            events.extend(std::iter::from_fn(|| run.poll_event()));
            match step {
                Step::Send(request) => {
                    requests.push((*request).clone());
                    next = request;
                }
                Step::Finished(outcome) => {
                    assert!(run.is_finished());
                    assert_eq!(run.open_shell(), None);
                    return (outcome, events, requests, host);
                }
            }
        }
        panic!("run did not finish in 100 steps");
    }

    fn echo() -> CommandSpec {
        CommandSpec {
            command: "cmd.exe".into(),
            arguments: vec!["/c".into(), "echo".into(), "hi".into()],
            stdin: Vec::new(),
        }
    }

    #[test]
    fn runs_a_command_through_create_command_receive_signal_delete() {
        let mut polls = 0;
        let (outcome, events, requests, host) = run_to_end(echo(), |host, req| {
            match &req.body {
                RequestBody::Create(_) => host.created(),
                RequestBody::Command(_) => ResponseBody::CommandResponse(CommandResponse {
                    command_id: host.command,
                }),
                RequestBody::Receive(_) => {
                    polls += 1;
                    match polls {
                        1 => host.output(b"hi\r\n", b"", None),
                        // MS-WSMV 3.1.4.14: nothing ready within OperationTimeout.
                        2 => ResponseBody::Fault(WsmanFault::operation_timeout("host")),
                        _ => host.output(b"", b"warn\r\n", Some(3)),
                    }
                }
                RequestBody::Signal(_) => ResponseBody::SignalResponse,
                RequestBody::Delete => ResponseBody::DeleteResponse,
                other => panic!("unexpected request {other:?}"),
            }
        });
        assert_eq!(outcome, Ok(3));
        assert_eq!(
            host.log,
            [
                Action::Create,
                Action::Command,
                Action::Receive,
                Action::Receive,
                Action::Receive,
                Action::Signal,
                Action::Delete
            ]
        );
        assert_eq!(
            events,
            [
                WinrsEvent::ShellCreated {
                    shell_id: host.shell
                },
                WinrsEvent::CommandStarted {
                    command_id: host.command
                },
                WinrsEvent::Stdout(b"hi\r\n".to_vec()),
                WinrsEvent::Stderr(b"warn\r\n".to_vec()),
                WinrsEvent::Exited { exit_code: 3 },
                WinrsEvent::ShellDeleted {
                    shell_id: host.shell
                },
            ]
        );
        // Every request after Create addresses the shell, and message ids never repeat.
        for req in &requests[1..] {
            assert_eq!(req.header.shell_id(), Some(host.shell));
        }
        let mut ids: Vec<_> = requests.iter().map(|r| r.header.message_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), requests.len());
        let receive = &requests[2];
        assert_eq!(
            receive.header.option("WSMAN_CMDSHELL_OPTION_KEEPALIVE"),
            Some("True")
        );
    }

    #[test]
    fn stdin_is_sent_in_chunks_with_end_on_the_last() {
        let input = vec![b'x'; MAX_STDIN_CHUNK + 10];
        let spec = CommandSpec {
            stdin: vec![input[..5].to_vec(), input[5..].to_vec()],
            ..echo()
        };
        let (outcome, _, requests, _) = run_to_end(spec, |host, req| match &req.body {
            RequestBody::Create(_) => host.created(),
            RequestBody::Command(_) => ResponseBody::CommandResponse(CommandResponse {
                command_id: host.command,
            }),
            RequestBody::Send(_) => ResponseBody::SendResponse,
            RequestBody::Receive(_) => host.output(b"", b"", Some(0)),
            RequestBody::Signal(_) => ResponseBody::SignalResponse,
            _ => ResponseBody::DeleteResponse,
        });
        assert_eq!(outcome, Ok(0));
        let sends: Vec<&SendStream> = requests
            .iter()
            .filter_map(|r| match &r.body {
                RequestBody::Send(s) => s.streams.first(),
                _ => None,
            })
            .collect();
        // One piece of 5 bytes, then the rest split at the chunk size.
        let sizes: Vec<usize> = sends.iter().map(|s| s.data.len()).collect();
        assert_eq!(sizes, [5, MAX_STDIN_CHUNK, 5]);
        let ends: Vec<Option<bool>> = sends.iter().map(|s| s.end).collect();
        assert_eq!(ends, [Some(false), Some(false), Some(true)]);
        let sent: Vec<u8> = sends.iter().flat_map(|s| s.data.clone()).collect();
        assert_eq!(sent, input);
    }

    #[test]
    fn a_fault_after_create_still_deletes_the_shell() {
        let (outcome, events, _, host) = run_to_end(echo(), |host, req| match &req.body {
            RequestBody::Create(_) => host.created(),
            RequestBody::Command(_) => ResponseBody::Fault(WsmanFault::access_denied("host")),
            _ => ResponseBody::DeleteResponse,
        });
        let Err(WinrsError::Fault { operation, fault }) = outcome else {
            panic!("expected a fault, got {outcome:?}");
        };
        assert_eq!(operation, Operation::Command);
        assert!(fault.code.is_some_and(|c| c.is_access_denied()));
        assert_eq!(host.log, [Action::Create, Action::Command, Action::Delete]);
        assert_eq!(
            events.last(),
            Some(&WinrsEvent::ShellDeleted {
                shell_id: host.shell
            })
        );
    }

    #[test]
    fn a_shell_not_found_answer_to_delete_means_the_shell_is_gone() {
        let (outcome, events, _, host) = run_to_end(echo(), |host, req| match &req.body {
            RequestBody::Create(_) => host.created(),
            RequestBody::Command(_) => ResponseBody::Fault(WsmanFault::access_denied("host")),
            _ => ResponseBody::Fault(WsmanFault::shell_not_found("host")),
        });
        assert!(
            matches!(outcome, Err(WinrsError::Fault { .. })),
            "{outcome:?}"
        );
        assert_eq!(host.log, [Action::Create, Action::Command, Action::Delete]);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, WinrsEvent::CleanupFailed { .. })),
            "{events:?}"
        );
        assert_eq!(
            events.last(),
            Some(&WinrsEvent::ShellDeleted {
                shell_id: host.shell
            })
        );
    }

    #[test]
    fn a_quota_fault_on_create_finishes_without_cleanup() {
        let (outcome, events, _, host) = run_to_end(echo(), |_, _| {
            ResponseBody::Fault(WsmanFault::max_shells_per_user("host", 2))
        });
        let Err(WinrsError::Fault { operation, fault }) = outcome else {
            panic!("expected a fault");
        };
        assert_eq!(operation, Operation::Create);
        assert!(fault.code.is_some_and(|c| c.is_quota()));
        assert_eq!(fault.max_shells_quota(), Some(2));
        assert!(events.is_empty());
        assert_eq!(host.log, [Action::Create]);
    }

    #[test]
    fn a_reply_to_another_request_is_a_violation_and_cleans_up() {
        let mut ids = SequentialIds::default();
        let mut host = Host::new();
        let (mut run, create) =
            CommandRun::start(ShellSettings::new("http://h/wsman"), echo(), &mut ids);
        let created = host.created();
        let step = run.handle(host.answer(&create, created), &mut ids);
        let Step::Send(command) = step else { panic!() };
        // The host answers with a RelatesTo that is not the Command's MessageID.
        let mut wrong = host.answer(
            &command,
            ResponseBody::CommandResponse(CommandResponse {
                command_id: host.command,
            }),
        );
        wrong.header.relates_to = Some(Uuid::from_u128(7));
        let Step::Send(delete) = run.handle(wrong, &mut ids) else {
            panic!()
        };
        assert_eq!(delete.header.action, Action::Delete);
        let step = run.handle(host.answer(&delete, ResponseBody::DeleteResponse), &mut ids);
        assert!(matches!(
            step,
            Step::Finished(Err(WinrsError::WrongRelatesTo {
                operation: Operation::Command,
                ..
            }))
        ));
    }

    #[test]
    fn abort_while_receiving_stops_the_command_then_deletes() {
        let mut ids = SequentialIds::default();
        let mut host = Host::new();
        let (mut run, create) =
            CommandRun::start(ShellSettings::new("http://h/wsman"), echo(), &mut ids);
        let created = host.created();
        let Step::Send(command) = run.handle(host.answer(&create, created), &mut ids) else {
            panic!()
        };
        let started = ResponseBody::CommandResponse(CommandResponse {
            command_id: host.command,
        });
        let Step::Send(receive) = run.handle(host.answer(&command, started), &mut ids) else {
            panic!()
        };
        assert_eq!(receive.header.action, Action::Receive);
        assert_eq!(run.open_shell(), Some(host.shell));
        let Step::Send(signal) = run.abort(WinrsError::Aborted("deadline".into()), &mut ids) else {
            panic!()
        };
        assert_eq!(signal.header.action, Action::Signal);
        // A second abort during cleanup goes straight to Delete.
        let Step::Send(delete) = run.abort(WinrsError::Aborted("ctrl-c".into()), &mut ids) else {
            panic!()
        };
        assert_eq!(delete.header.action, Action::Delete);
        let step = run.handle(host.answer(&delete, ResponseBody::DeleteResponse), &mut ids);
        assert_eq!(
            step,
            Step::Finished(Err(WinrsError::Aborted("deadline".into())))
        );
    }
}
