//! PSRP client over WinRS: open a runspace pool, run one script with arguments (the
//! Invoke-Command path), read every stream, close, sans-IO (MS-PSRP 3.1.4, 3.1.5.3;
//! wire-facts 2.5 and 4.4).
//!
//! Same driving model as [`crate::winrs::CommandRun`]: the caller sends each [`Request`]
//! the machine hands out, parses the reply into a [`Response`] (an HTTP 500 body is a
//! [`ResponseBody::Fault`]) and passes it to [`ScriptRun::handle`], which answers with the
//! next request or the outcome. One request is outstanding at a time and every reply must
//! relate to it (`a:RelatesTo`).
//!
//! ```text
//!  ExpectShellCreated ──CreateResponse──> ExpectPoolOpened ⟲ Receive (TimedOut, partial)
//!        │                                      │ RUNSPACEPOOL_STATE Opened
//!        │ fault: Finished(Err)                 ▼
//!        ▼                              ExpectCommandId ──CommandResponse──┐
//!     (no shell)                                │                          ▼
//!                         fault / Broken pool   │            ExpectSendAck* (rest of CREATE_PIPELINE)
//!                                               ▼                          │
//!  Finished <──DeleteResponse── ExpectDeleted <─┤                          ▼
//!                                    ▲          │        ExpectPipelineOutput ⟲ Receive
//!                                    │          │                          │
//!                                    ├─────────────────────────────────────┘ PIPELINE_STATE terminal
//!                                    └── ExpectSignalled <── abort / failure mid-pipeline (ctrl_c)
//! ```
//!
//! A shell that was created is always deleted (with the PowerShell resource URI,
//! R:test_psrp_open_runspace) before the run finishes; failures after Create record the
//! error, then go through Signal (if a pipeline runs) and Delete.
//!
//! The ShellId is the client's (the RPID, MS-PSRP 3.1.4.1), known before the Create is
//! sent ([`ScriptRun::pending_shell`]): a caller journals it first, so a Create whose reply
//! is lost (a reset, a crash) still leaves an id to delete. [`ScriptRun::abort`] while the
//! Create is unanswered therefore deletes that id; a "shell not found" fault to a Delete
//! (MS-WSMV 2150858843) means the shell does not exist, which is what a Delete wants.
//!
//! Incoming PSRP message headers are not checked against the RPID/PID: old recordings
//! carry them in the other byte order. Messages are routed by the WS-Man `CommandId` of
//! the stream instead.

use std::collections::VecDeque;
use std::time::Duration;

use uuid::Uuid;

use super::clixml::Value;
use super::fragment::{
    Defragmenter, DefragmenterLimits, FragmentError, Fragmenter, encode_fragments,
    max_fragment_size,
};
use super::message::{Message, MessageError};
use super::messages::{
    Command, CommandArgument, CreatePipeline, DecodeError, ErrorRecord, InformationRecord,
    InformationalRecord, InitRunspacePool, ProgressRecord, ProtocolVersion, PsInvocationState,
    PsVersionTable, PsrpMessage, RunspacePoolState, SessionCapability,
};
use crate::ids::IdGenerator;
use crate::winrs::Operation;
use crate::wsman::{
    Action, CommandLine, CommandState, CreateShell, Receive, ReceiveResponse, Request, RequestBody,
    RequestHeader, Response, ResponseBody, Send, SendStream, Signal, SignalCode, WsOption,
    WsmanFault, resources,
};

/// Default [`PsrpSettings::max_received_message_bytes`]: 16 MiB, far above real messages
/// (the largest recorded is a few hundred KiB) and small enough that a host sending a
/// message that never ends cannot make a run hold more than this (issue 8).
pub const DEFAULT_MAX_RECEIVED_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How to open the runspace pool and address the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsrpSettings {
    /// `wsa:To`: the endpoint URL, e.g. `http://host:5985/wsman`.
    pub endpoint: String,
    /// Session configuration; the resource URI is `http://schemas.microsoft.com/powershell/<name>`.
    pub configuration_name: String,
    /// `wsmv:SessionId` shared by every request of this run.
    pub session_id: Option<Uuid>,
    /// `wsman:MaxEnvelopeSize`, also used to size outgoing fragments.
    pub max_envelope_size: u32,
    /// `wsman:OperationTimeout`: how long the host may hold a Receive open before the
    /// TimedOut fault (which means "poll again").
    pub operation_timeout: Duration,
    /// Protocol version announced in SESSION_CAPABILITY and the `protocolversion` option.
    pub protocol_version: ProtocolVersion,
    /// `MinRunspaces` of INIT_RUNSPACEPOOL.
    pub min_runspaces: i32,
    /// `MaxRunspaces` of INIT_RUNSPACEPOOL.
    pub max_runspaces: i32,
    /// `WINRS_NOPROFILE` option: do not load the user profile (R:test_psrp_no_profile).
    pub no_profile: bool,
    /// Largest message the host may send, and most bytes of partly received messages
    /// held at once (each of the pool's and the pipeline's): PowerShell's
    /// `MaximumReceivedObjectSizeMB`, smaller because a run holds hundreds of hosts.
    pub max_received_message_bytes: usize,
}

impl PsrpSettings {
    /// Settings as pypsrp uses them against `endpoint` (Microsoft.PowerShell, 2.3, one
    /// runspace).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            configuration_name: resources::DEFAULT_CONFIGURATION_NAME.to_owned(),
            session_id: None,
            max_envelope_size: crate::wsman::DEFAULT_MAX_ENVELOPE_SIZE,
            operation_timeout: crate::wsman::DEFAULT_OPERATION_TIMEOUT,
            protocol_version: ProtocolVersion::V2_3,
            min_runspaces: 1,
            max_runspaces: 1,
            no_profile: false,
            max_received_message_bytes: DEFAULT_MAX_RECEIVED_MESSAGE_BYTES,
        }
    }

    /// The resource URI of the session configuration.
    pub fn resource_uri(&self) -> String {
        resources::powershell(&self.configuration_name)
    }
}

/// The script to run and its arguments (`Invoke-Command -ScriptBlock {..} -ArgumentList`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSpec {
    /// The script text.
    pub script: String,
    /// Its arguments: positional (`name: None`) or named.
    pub arguments: Vec<CommandArgument>,
}

impl ScriptSpec {
    /// A script without arguments.
    pub fn new(script: impl Into<String>) -> Self {
        Self {
            script: script.into(),
            arguments: Vec::new(),
        }
    }

    /// Adds a positional argument.
    pub fn with_argument(mut self, value: impl Into<Value>) -> Self {
        self.arguments.push(CommandArgument {
            name: None,
            value: value.into(),
        });
        self
    }

    /// Adds a named argument.
    pub fn with_parameter(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.arguments.push(CommandArgument {
            name: Some(name.into()),
            value: value.into(),
        });
        self
    }

    /// The CREATE_PIPELINE body for `protocol`.
    pub fn create_pipeline(&self, protocol: ProtocolVersion) -> CreatePipeline {
        let mut command = Command::script(self.script.clone(), protocol);
        command.arguments = self.arguments.clone();
        CreatePipeline::new(vec![command])
    }
}

/// What happened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsrpEvent {
    /// The shell (runspace pool) exists on the host: record it for leak tracking.
    ShellCreated {
        /// The ShellId (= RPID).
        shell_id: Uuid,
    },
    /// `$PSVersionTable` from APPLICATION_PRIVATE_DATA.
    PsVersionTable(Box<PsVersionTable>),
    /// The pool is open and the pipeline is being created.
    PipelineStarted {
        /// The CommandId (= PID).
        command_id: Uuid,
    },
    /// An output object.
    Output(Value),
    /// A non-terminating error.
    Error(Box<ErrorRecord>),
    /// Write-Warning.
    Warning(InformationalRecord),
    /// Write-Verbose.
    Verbose(InformationalRecord),
    /// Write-Debug.
    Debug(InformationalRecord),
    /// Write-Information / Write-Host.
    Information(Box<InformationRecord>),
    /// Write-Progress.
    Progress(Box<ProgressRecord>),
    /// A PIPELINE_STATE message (terminal or not).
    PipelineState {
        /// The state.
        state: PsInvocationState,
        /// The terminating error of a failed pipeline.
        error: Option<Box<ErrorRecord>>,
    },
    /// The shell was deleted, or the host says it does not exist (a Delete answered
    /// "shell not found"): forget it.
    ShellDeleted {
        /// The ShellId.
        shell_id: Uuid,
    },
    /// Cleanup (Signal or Delete) failed; the shell may be left open on the host.
    CleanupFailed {
        /// The ShellId.
        shell_id: Uuid,
        /// Why.
        error: PsrpClientError,
    },
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PsrpClientError {
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
    /// The runspace pool did not open, or broke while the pipeline ran (RUNSPACEPOOL_STATE
    /// Broken or Closed): how a module load failure shows (wire-facts 1.13).
    #[error("runspace pool {state:?}: {}", .error.as_ref().map_or("no error record", |e| e.message.as_str()))]
    PoolFailed {
        /// The state reported.
        state: RunspacePoolState,
        /// `ExceptionAsErrorRecord`, if sent.
        error: Option<Box<ErrorRecord>>,
    },
    /// Fragments could not be reassembled.
    #[error("PSRP fragment: {0}")]
    Fragment(#[from] FragmentError),
    /// A reassembled message is malformed.
    #[error("PSRP message: {0}")]
    Message(#[from] MessageError),
    /// A message body could not be decoded.
    #[error("PSRP decode: {0}")]
    Decode(#[from] DecodeError),
    /// The command ended (WinRS `CommandState` Done) without a terminal PIPELINE_STATE.
    #[error("the pipeline ended without a terminal PIPELINE_STATE")]
    NoPipelineState,
    /// The caller gave up (deadline or cancellation), with its reason.
    #[error("aborted: {0}")]
    Aborted(String),
}

/// How the pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineOutcome {
    /// Completed, Failed or Stopped.
    pub state: PsInvocationState,
    /// The terminating error record of a Failed pipeline [R:test_psrp_error_failed].
    pub error: Option<Box<ErrorRecord>>,
}

/// The outcome of a run.
pub type ScriptOutcome = Result<PipelineOutcome, PsrpClientError>;

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request and pass its reply to [`ScriptRun::handle`].
    Send(Box<Request>),
    /// The run is over (the shell, if created, was deleted or reported as
    /// [`PsrpEvent::CleanupFailed`]).
    Finished(ScriptOutcome),
}

/// States, named after the reply each waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ExpectShellCreated { shell: Uuid },
    ExpectPoolOpened { shell: Uuid },
    ExpectCommandId { shell: Uuid, command: Uuid },
    ExpectSendAck { shell: Uuid, command: Uuid },
    ExpectPipelineOutput { shell: Uuid, command: Uuid },
    ExpectSignalled { shell: Uuid },
    ExpectDeleted { shell: Uuid },
    Finished,
}

/// One script in a fresh PowerShell runspace pool.
#[derive(Debug)]
pub struct ScriptRun {
    wire: PoolWire,
    spec: ScriptSpec,
    state: State,
    awaiting: Uuid,
    events: VecDeque<PsrpEvent>,
    failure: Option<PsrpClientError>,
    outcome: Option<PipelineOutcome>,
    /// CREATE_PIPELINE fragment blobs that did not fit in the Command, one Send each.
    pending_sends: VecDeque<Vec<u8>>,
}

impl ScriptRun {
    /// Starts a run; returns the machine and the Create request to send first.
    pub fn start(
        settings: PsrpSettings,
        spec: ScriptSpec,
        ids: &mut impl IdGenerator,
    ) -> (Self, Box<Request>) {
        let shell = ids.next_id();
        let mut run = Self {
            wire: PoolWire::new(settings, shell),
            spec,
            state: State::ExpectShellCreated { shell },
            awaiting: Uuid::nil(),
            events: VecDeque::new(),
            failure: None,
            outcome: None,
            pending_sends: VecDeque::new(),
        };
        let create = run.wire.create(shell, ids);
        let request = run.issue(create);
        (run, request)
    }

    /// The next event, if any. Drain after every [`ScriptRun::handle`].
    pub fn poll_event(&mut self) -> Option<PsrpEvent> {
        self.events.pop_front()
    }

    /// The ShellId of a Create not answered yet: the host may make this shell at any moment
    /// from now, so record it before sending the Create (see the module docs).
    pub fn pending_shell(&self) -> Option<Uuid> {
        match self.state {
            State::ExpectShellCreated { shell } => Some(shell),
            _ => None,
        }
    }

    /// The shell (runspace pool) this run has open on the host, if any.
    pub fn open_shell(&self) -> Option<Uuid> {
        match self.state {
            State::ExpectPoolOpened { shell }
            | State::ExpectCommandId { shell, .. }
            | State::ExpectSendAck { shell, .. }
            | State::ExpectPipelineOutput { shell, .. }
            | State::ExpectSignalled { shell }
            | State::ExpectDeleted { shell } => Some(shell),
            State::ExpectShellCreated { .. } | State::Finished => None,
        }
    }

    /// True once [`Step::Finished`] has been returned.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The largest outgoing fragment, header included, for the configured envelope.
    pub fn max_fragment_size(&self) -> usize {
        self.wire.max_fragment()
    }

    /// Feeds the reply to the outstanding request.
    pub fn handle(&mut self, response: Response, ids: &mut impl IdGenerator) -> Step {
        if self.state == State::Finished {
            return self.finish();
        }
        let operation = self.operation();
        if response.header.relates_to != Some(self.awaiting) {
            let error = PsrpClientError::WrongRelatesTo {
                operation,
                expected: self.awaiting,
                found: response.header.relates_to,
            };
            return self.fail(error, ids);
        }
        match (self.state, response.body) {
            (State::ExpectShellCreated { shell }, ResponseBody::CreateResponse(created)) => {
                // The ShellId is ours (the RPID); Windows echoes it in the selector.
                let shell = created.shell_id().unwrap_or(shell);
                self.events
                    .push_back(PsrpEvent::ShellCreated { shell_id: shell });
                self.receive_pool(shell, ids)
            }
            (State::ExpectPoolOpened { shell }, ResponseBody::ReceiveResponse(output)) => {
                match self.wire.pool_opening(output, &mut self.events) {
                    Err(error) => self.fail(error, ids),
                    Ok(false) => self.receive_pool(shell, ids),
                    Ok(true) => self.command(shell, ids),
                }
            }
            (
                State::ExpectCommandId { shell, command },
                ResponseBody::CommandResponse(_started),
            ) => {
                self.events.push_back(PsrpEvent::PipelineStarted {
                    command_id: command,
                });
                self.send_next_or_receive(shell, command, ids)
            }
            (State::ExpectSendAck { shell, command }, ResponseBody::SendResponse) => {
                self.send_next_or_receive(shell, command, ids)
            }
            (
                State::ExpectPipelineOutput { shell, command },
                ResponseBody::ReceiveResponse(output),
            ) => {
                let progress = match self.wire.pipeline_output(output, command, &mut self.events) {
                    Ok(progress) => progress,
                    Err(error) => return self.fail(error, ids),
                };
                if self.outcome.is_none() {
                    self.outcome = progress.outcome;
                }
                if self.outcome.is_some() {
                    // The pipeline is over: deleting the shell ends it, so no Signal is
                    // needed; one round trip fewer per host (Windows accepts Delete right
                    // after PIPELINE_STATE, R:test_psrp_stream_output_invocation).
                    self.delete(shell, ids)
                } else if progress.done {
                    self.fail(PsrpClientError::NoPipelineState, ids)
                } else {
                    self.receive_pipeline(shell, command, ids)
                }
            }
            // MS-WSMV 3.1.4.14: a Receive that times out is answered with the TimedOut
            // fault; poll again (wire-facts 1.11).
            (State::ExpectPoolOpened { shell }, ResponseBody::Fault(fault))
                if fault.code.is_some_and(|c| c.is_operation_timeout()) =>
            {
                self.receive_pool(shell, ids)
            }
            (State::ExpectPipelineOutput { shell, command }, ResponseBody::Fault(fault))
                if fault.code.is_some_and(|c| c.is_operation_timeout()) =>
            {
                self.receive_pipeline(shell, command, ids)
            }
            (State::ExpectSignalled { shell }, ResponseBody::SignalResponse) => {
                self.delete(shell, ids)
            }
            (State::ExpectSignalled { shell }, ResponseBody::Fault(fault)) => {
                let error = PsrpClientError::Fault {
                    operation: Operation::Signal,
                    fault: Box::new(fault),
                };
                self.events.push_back(PsrpEvent::CleanupFailed {
                    shell_id: shell,
                    error,
                });
                self.delete(shell, ids)
            }
            (State::ExpectDeleted { shell }, ResponseBody::DeleteResponse) => {
                self.events
                    .push_back(PsrpEvent::ShellDeleted { shell_id: shell });
                self.finish()
            }
            // The shell is gone already (it idled out, or a lost Create never made it):
            // what the Delete was for.
            (State::ExpectDeleted { shell }, ResponseBody::Fault(fault))
                if fault.is_shell_not_found() =>
            {
                self.events
                    .push_back(PsrpEvent::ShellDeleted { shell_id: shell });
                self.finish()
            }
            (State::ExpectDeleted { shell }, ResponseBody::Fault(fault)) => {
                let error = PsrpClientError::Fault {
                    operation: Operation::Delete,
                    fault: Box::new(fault),
                };
                self.events.push_back(PsrpEvent::CleanupFailed {
                    shell_id: shell,
                    error,
                });
                self.finish()
            }
            (_, ResponseBody::Fault(fault)) => {
                let error = PsrpClientError::Fault {
                    operation,
                    fault: Box::new(fault),
                };
                self.fail(error, ids)
            }
            (_, other) => {
                let error = PsrpClientError::unexpected(operation, &other);
                self.fail(error, ids)
            }
        }
    }

    /// Gives up on the run (deadline, cancellation, transport failure, unparsable reply).
    /// A running pipeline is stopped with `powershell/signal/ctrl_c`
    /// (R:test_psrp_nested_command), then the shell is deleted. A Create without a reply
    /// may have made the shell: its id is deleted too (use [`ScriptRun::abandon`] when the
    /// Create is known never to have reached the host).
    pub fn abort(&mut self, error: PsrpClientError, ids: &mut impl IdGenerator) -> Step {
        match self.state {
            State::ExpectShellCreated { shell } => {
                self.failure.get_or_insert(error);
                self.delete(shell, ids)
            }
            State::ExpectSignalled { shell } => {
                self.failure.get_or_insert(error);
                self.delete(shell, ids)
            }
            State::ExpectDeleted { .. } => {
                self.failure.get_or_insert(error);
                self.finish()
            }
            _ => self.fail(error, ids),
        }
    }

    /// Gives up on a run whose Create never reached the host (no connection, refused
    /// authentication): there is no shell to delete. Anywhere else this is
    /// [`ScriptRun::abort`].
    pub fn abandon(&mut self, error: PsrpClientError, ids: &mut impl IdGenerator) -> Step {
        match self.state {
            State::ExpectShellCreated { .. } => {
                self.failure.get_or_insert(error);
                self.finish()
            }
            _ => self.abort(error, ids),
        }
    }

    fn fail(&mut self, error: PsrpClientError, ids: &mut impl IdGenerator) -> Step {
        self.failure.get_or_insert(error);
        match self.state {
            State::ExpectSendAck { shell, command }
            | State::ExpectPipelineOutput { shell, command } => {
                self.state = State::ExpectSignalled { shell };
                let request = self.wire.signal(shell, command, SignalCode::PsCtrlC, ids);
                Step::Send(self.issue(request))
            }
            State::ExpectPoolOpened { shell }
            | State::ExpectCommandId { shell, .. }
            | State::ExpectSignalled { shell } => self.delete(shell, ids),
            State::ExpectShellCreated { .. } | State::ExpectDeleted { .. } | State::Finished => {
                self.finish()
            }
        }
    }

    fn finish(&mut self) -> Step {
        self.state = State::Finished;
        match (self.failure.clone(), self.outcome.clone()) {
            (Some(error), _) => Step::Finished(Err(error)),
            (None, Some(outcome)) => Step::Finished(Ok(outcome)),
            (None, None) => Step::Finished(Err(PsrpClientError::NoPipelineState)),
        }
    }

    fn receive_pool(&mut self, shell: Uuid, ids: &mut impl IdGenerator) -> Step {
        self.state = State::ExpectPoolOpened { shell };
        let request = self.wire.receive(shell, None, ids);
        Step::Send(self.issue(request))
    }

    fn receive_pipeline(&mut self, shell: Uuid, command: Uuid, ids: &mut impl IdGenerator) -> Step {
        self.state = State::ExpectPipelineOutput { shell, command };
        let request = self.wire.receive(shell, Some(command), ids);
        Step::Send(self.issue(request))
    }

    fn command(&mut self, shell: Uuid, ids: &mut impl IdGenerator) -> Step {
        let command = ids.next_id();
        self.state = State::ExpectCommandId { shell, command };
        let pipeline = self
            .spec
            .create_pipeline(self.wire.settings().protocol_version);
        let (request, rest) = self.wire.command(shell, command, &pipeline, ids);
        self.pending_sends = rest;
        Step::Send(self.issue(request))
    }

    fn send_next_or_receive(
        &mut self,
        shell: Uuid,
        command: Uuid,
        ids: &mut impl IdGenerator,
    ) -> Step {
        let Some(data) = self.pending_sends.pop_front() else {
            return self.receive_pipeline(shell, command, ids);
        };
        self.state = State::ExpectSendAck { shell, command };
        let request = self.wire.send(shell, command, data, ids);
        Step::Send(self.issue(request))
    }

    fn delete(&mut self, shell: Uuid, ids: &mut impl IdGenerator) -> Step {
        self.state = State::ExpectDeleted { shell };
        let request = self.wire.delete(shell, ids);
        Step::Send(self.issue(request))
    }

    /// Records `request` as the outstanding one.
    fn issue(&mut self, request: Request) -> Box<Request> {
        self.awaiting = request.header.message_id;
        Box::new(request)
    }

    fn operation(&self) -> Operation {
        match self.state {
            State::ExpectShellCreated { .. } => Operation::Create,
            State::ExpectCommandId { .. } => Operation::Command,
            State::ExpectSendAck { .. } => Operation::Send,
            State::ExpectPoolOpened { .. } | State::ExpectPipelineOutput { .. } => {
                Operation::Receive
            }
            State::ExpectSignalled { .. } => Operation::Signal,
            State::ExpectDeleted { .. } | State::Finished => Operation::Delete,
        }
    }
}

impl PsrpClientError {
    /// The error for a reply of the wrong kind to `operation`.
    pub(crate) fn unexpected(operation: Operation, body: &ResponseBody) -> Self {
        Self::UnexpectedResponse {
            operation,
            expected: expected_reply(operation),
            found: body
                .action()
                .map_or_else(|| "an untyped body".to_owned(), |a| a.uri().to_owned()),
        }
    }
}

/// The reply action each operation calls for.
fn expected_reply(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "CreateResponse",
        Operation::Command => "CommandResponse",
        Operation::Send => "SendResponse",
        Operation::Receive => "ReceiveResponse",
        Operation::Signal => "SignalResponse",
        Operation::Delete => "DeleteResponse",
    }
}

/// What one pipeline Receive brought.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PipelineProgress {
    /// The first terminal PIPELINE_STATE in this reply, if any.
    pub(crate) outcome: Option<PipelineOutcome>,
    /// WinRS `CommandState` Done: the host sends nothing more for this command.
    pub(crate) done: bool,
}

/// The wire half of a PowerShell runspace pool, shared by [`ScriptRun`] (one script) and
/// [`super::session::PsrpSession`] (many pipelines on one pool): the requests with their
/// headers (MS-PSRP 3.1.5.3; wire-facts 2.5), the fragment budget, and the reassembly and
/// decoding of what the pool and its pipelines send. It keeps no protocol state beyond
/// the reassembly buffers; the machines own the states and the outstanding request.
#[derive(Debug)]
pub(crate) struct PoolWire {
    settings: PsrpSettings,
    fragmenter: Fragmenter,
    pool_in: Defragmenter,
    pipeline_in: Defragmenter,
    max_fragment: usize,
}

impl PoolWire {
    /// The wire of pool `shell` (its id sizes the measured envelope overhead).
    pub(crate) fn new(settings: PsrpSettings, shell: Uuid) -> Self {
        let limits = Self::limits(&settings);
        let mut wire = Self {
            settings,
            fragmenter: Fragmenter::new(),
            pool_in: Defragmenter::with_limits(limits),
            pipeline_in: Defragmenter::with_limits(limits),
            max_fragment: 0,
        };
        wire.max_fragment = wire.fragment_budget(shell);
        wire
    }

    /// Reassembly limits: `max_received_message_bytes` for one message and for the bytes
    /// of partly received messages (each of the pool's and the pipeline's).
    fn limits(settings: &PsrpSettings) -> DefragmenterLimits {
        DefragmenterLimits {
            max_message_size: settings.max_received_message_bytes,
            max_pending_bytes: settings.max_received_message_bytes,
            ..DefragmenterLimits::default()
        }
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &PsrpSettings {
        &self.settings
    }

    /// The largest outgoing fragment, header included.
    pub(crate) fn max_fragment(&self) -> usize {
        self.max_fragment
    }

    /// Create with `creationXml`: SESSION_CAPABILITY and INIT_RUNSPACEPOOL
    /// (R:test_psrp_open_runspace), the `protocolversion` option and, when asked,
    /// `WINRS_NOPROFILE`.
    pub(crate) fn create(&mut self, shell: Uuid, ids: &mut impl IdGenerator) -> Request {
        let capability = SessionCapability {
            protocol_version: self.settings.protocol_version.to_version(),
            ..SessionCapability::default()
        };
        let init = InitRunspacePool {
            min_runspaces: self.settings.min_runspaces,
            max_runspaces: self.settings.max_runspaces,
            ..InitRunspacePool::default()
        };
        let mut creation = Vec::new();
        for message in [
            capability.encode(super::Destination::Server, shell),
            init.encode(shell),
        ] {
            let fragments = self
                .fragmenter
                .fragment(&message.encode(), self.max_fragment);
            creation.extend(encode_fragments(&fragments));
        }
        let version = format!(
            "{}.{}",
            self.settings.protocol_version.major, self.settings.protocol_version.minor
        );
        let mut header = self
            .header(Action::Create, ids)
            .with_option(WsOption::must_comply("protocolversion", version));
        if self.settings.no_profile {
            header = header.with_option(WsOption::must_comply("WINRS_NOPROFILE", "TRUE"));
        }
        Request::new(
            header,
            RequestBody::Create(CreateShell::powershell(shell, creation)),
        )
    }

    /// Receive on `stdout`: the pool's own output (`command` `None`) or a pipeline's.
    pub(crate) fn receive(
        &self,
        shell: Uuid,
        command: Option<Uuid>,
        ids: &mut impl IdGenerator,
    ) -> Request {
        let header = self
            .header(Action::Receive, ids)
            .with_shell_id(&shell)
            .with_option(WsOption::new("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True"));
        let body = RequestBody::Receive(Receive {
            command_id: command,
            streams: vec!["stdout".to_owned()],
        });
        Request::new(header, body)
    }

    /// Command with the CREATE_PIPELINE fragments that fit in one envelope; the rest are
    /// returned for Send on stdin, one blob each (R:test_psrp_small_msg_size). Starts a
    /// fresh reassembly buffer for the pipeline's output.
    pub(crate) fn command(
        &mut self,
        shell: Uuid,
        command: Uuid,
        pipeline: &CreatePipeline,
        ids: &mut impl IdGenerator,
    ) -> (Request, VecDeque<Vec<u8>>) {
        self.pipeline_in = Defragmenter::with_limits(Self::limits(&self.settings));
        let message = pipeline.encode(shell, command);
        let fragments = self
            .fragmenter
            .fragment(&message.encode(), self.max_fragment);
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        for fragment in &fragments {
            let encoded = fragment.encode();
            match chunks.last_mut() {
                Some(last) if last.len() + encoded.len() <= self.max_fragment => {
                    last.extend(encoded);
                }
                _ => chunks.push(encoded),
            }
        }
        let mut chunks = VecDeque::from(chunks);
        let first = chunks.pop_front().unwrap_or_default();
        let header = self
            .header(Action::Command, ids)
            .with_shell_id(&shell)
            .with_option(WsOption::new("WINRS_SKIP_CMD_SHELL", "False"));
        let body = RequestBody::Command(CommandLine::powershell(command, &first));
        (Request::new(header, body), chunks)
    }

    /// Send of one blob of pipeline fragments on `stdin`, without End.
    pub(crate) fn send(
        &self,
        shell: Uuid,
        command: Uuid,
        data: Vec<u8>,
        ids: &mut impl IdGenerator,
    ) -> Request {
        let header = self.header(Action::Send, ids).with_shell_id(&shell);
        let body = RequestBody::Send(Send {
            streams: vec![SendStream {
                name: "stdin".to_owned(),
                command_id: Some(command),
                end: None,
                data,
            }],
        });
        Request::new(header, body)
    }

    /// Signal `code` to pipeline `command`.
    pub(crate) fn signal(
        &self,
        shell: Uuid,
        command: Uuid,
        code: SignalCode,
        ids: &mut impl IdGenerator,
    ) -> Request {
        let header = self.header(Action::Signal, ids).with_shell_id(&shell);
        let body = RequestBody::Signal(Signal {
            command_id: Some(command),
            code,
        });
        Request::new(header, body)
    }

    /// Delete of the pool, with its PowerShell resource URI (R:test_psrp_open_runspace).
    pub(crate) fn delete(&self, shell: Uuid, ids: &mut impl IdGenerator) -> Request {
        let header = self.header(Action::Delete, ids).with_shell_id(&shell);
        Request::new(header, RequestBody::Delete)
    }

    /// Reads a pool Receive while the pool opens: `Ok(true)` once RUNSPACEPOOL_STATE
    /// Opened arrived, `Ok(false)` to poll again (the state can come over two or three
    /// Receives, R:test_psrp_open_runspace vs R:test_psrp_disconnect_runspaces), and
    /// [`PsrpClientError::PoolFailed`] for Broken or Closed (wire-facts 1.13).
    pub(crate) fn pool_opening(
        &mut self,
        output: ReceiveResponse,
        events: &mut VecDeque<PsrpEvent>,
    ) -> Result<bool, PsrpClientError> {
        let mut blob = Vec::new();
        for stream in output.streams {
            blob.extend(stream.data);
        }
        match self.pool_messages(&blob, events)? {
            None => Ok(false),
            Some((RunspacePoolState::Opened, _)) => Ok(true),
            Some((state, error)) => Err(PsrpClientError::PoolFailed { state, error }),
        }
    }

    /// Reads a pipeline Receive: output and records become events; streams without a
    /// CommandId are the pool's own, which may report itself broken. Streams are routed
    /// by the WS-Man CommandId, not by the PSRP header ids (old recordings carry those in
    /// the other byte order).
    pub(crate) fn pipeline_output(
        &mut self,
        output: ReceiveResponse,
        command: Uuid,
        events: &mut VecDeque<PsrpEvent>,
    ) -> Result<PipelineProgress, PsrpClientError> {
        let done = output
            .command_state
            .as_ref()
            .is_some_and(|s| s.state == CommandState::Done);
        let mut outcome = None;
        for stream in output.streams {
            if stream.data.is_empty() {
                continue;
            }
            match stream.command_id {
                Some(id) if id == command => {
                    let ended = self.pipeline_messages(&stream.data, events)?;
                    if outcome.is_none() {
                        outcome = ended;
                    }
                }
                Some(_) => {}
                None => match self.pool_messages(&stream.data, events)? {
                    Some((state, error)) if state != RunspacePoolState::Opened => {
                        return Err(PsrpClientError::PoolFailed { state, error });
                    }
                    _ => {}
                },
            }
        }
        Ok(PipelineProgress { outcome, done })
    }

    /// Reads pool messages; returns the first RUNSPACEPOOL_STATE other than
    /// Opening/BeforeOpen, if any.
    #[allow(clippy::type_complexity)]
    fn pool_messages(
        &mut self,
        blob: &[u8],
        events: &mut VecDeque<PsrpEvent>,
    ) -> Result<Option<(RunspacePoolState, Option<Box<ErrorRecord>>)>, PsrpClientError> {
        let mut found = None;
        for bytes in self.pool_in.push_blob(blob)? {
            let message = Message::decode(&bytes)?;
            match PsrpMessage::decode(&message)? {
                PsrpMessage::ApplicationPrivateData(data) => {
                    if let Some(table) = data.version_table {
                        events.push_back(PsrpEvent::PsVersionTable(Box::new(table)));
                    }
                }
                PsrpMessage::RunspacePoolState(state)
                    if found.is_none()
                        && !matches!(
                            state.state,
                            RunspacePoolState::BeforeOpen | RunspacePoolState::Opening
                        ) =>
                {
                    found = Some((state.state, state.error.map(Box::new)));
                }
                // SESSION_CAPABILITY and anything else the pool sends carries nothing
                // this client acts on.
                _ => {}
            }
        }
        Ok(found)
    }

    /// Reads pipeline messages into events; returns the first terminal PIPELINE_STATE.
    fn pipeline_messages(
        &mut self,
        blob: &[u8],
        events: &mut VecDeque<PsrpEvent>,
    ) -> Result<Option<PipelineOutcome>, PsrpClientError> {
        let mut outcome = None;
        for bytes in self.pipeline_in.push_blob(blob)? {
            let message = Message::decode(&bytes)?;
            let event = match PsrpMessage::decode(&message)? {
                PsrpMessage::PipelineOutput(out) => PsrpEvent::Output(out.value),
                PsrpMessage::ErrorRecord(e) => PsrpEvent::Error(Box::new(e)),
                PsrpMessage::WarningRecord(r) => PsrpEvent::Warning(r),
                PsrpMessage::VerboseRecord(r) => PsrpEvent::Verbose(r),
                PsrpMessage::DebugRecord(r) => PsrpEvent::Debug(r),
                PsrpMessage::InformationRecord(r) => PsrpEvent::Information(Box::new(r)),
                PsrpMessage::ProgressRecord(r) => PsrpEvent::Progress(Box::new(r)),
                PsrpMessage::PipelineState(s) => {
                    let error = s.error.map(Box::new);
                    if matches!(
                        s.state,
                        PsInvocationState::Completed
                            | PsInvocationState::Failed
                            | PsInvocationState::Stopped
                    ) && outcome.is_none()
                    {
                        outcome = Some(PipelineOutcome {
                            state: s.state,
                            error: error.clone(),
                        });
                    }
                    PsrpEvent::PipelineState {
                        state: s.state,
                        error,
                    }
                }
                _ => continue,
            };
            events.push_back(event);
        }
        Ok(outcome)
    }

    fn header(&self, action: Action, ids: &mut impl IdGenerator) -> RequestHeader {
        self.header_with_id(action, ids.next_id())
    }

    fn header_with_id(&self, action: Action, message_id: Uuid) -> RequestHeader {
        let mut header = RequestHeader::new(
            action,
            self.settings.endpoint.clone(),
            self.settings.resource_uri(),
            message_id,
        )
        .with_max_envelope_size(self.settings.max_envelope_size)
        .with_operation_timeout(self.settings.operation_timeout);
        if let Some(session) = self.settings.session_id {
            header = header.with_session_id(session);
        }
        header
    }

    /// Measures an empty Send envelope for this endpoint (pypsrp `_calc_envelope_size`)
    /// and derives the fragment budget from MaxEnvelopeSize.
    fn fragment_budget(&self, shell: Uuid) -> usize {
        let header = self
            .header_with_id(Action::Send, Uuid::nil())
            .with_shell_id(&shell);
        let skeleton = Request::new(
            header,
            RequestBody::Send(Send {
                streams: vec![SendStream {
                    name: "stdin".to_owned(),
                    command_id: Some(Uuid::nil()),
                    end: None,
                    data: Vec::new(),
                }],
            }),
        );
        let overhead = skeleton.to_xml().len();
        max_fragment_size(self.settings.max_envelope_size as usize, overhead)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids::SequentialIds;
    use crate::psrp::Destination;
    use crate::psrp::clixml::DateTime;
    use crate::psrp::messages::{
        ApplicationPrivateData, InformationalKind, PipelineOutput, PipelineStateMessage,
        RunspacePoolStateMessage,
    };
    use crate::wsman::{
        CommandResponse, CommandStateInfo, CreateResponse, ReceiveResponse, ReceivedStream,
        Selector,
    };

    pub(crate) const ENDPOINT: &str = "http://host:5985/wsman";

    /// A scripted Windows host: learns the RPID/PID from the client's requests, decodes
    /// what the client sends, and fragments its own messages like a server does.
    pub(crate) struct Host {
        ids: SequentialIds,
        pub(crate) rpid: Uuid,
        pub(crate) pid: Uuid,
        out: Fragmenter,
        /// Server-side fragment size: small values split every message.
        pub(crate) fragment_size: usize,
        inbound: Defragmenter,
        pub(crate) received: Vec<PsrpMessage>,
        pub(crate) log: Vec<(Action, Option<SignalCode>)>,
    }

    impl Host {
        pub(crate) fn new() -> Self {
            Self {
                ids: SequentialIds::starting_after(1000),
                rpid: Uuid::nil(),
                pid: Uuid::nil(),
                out: Fragmenter::new(),
                fragment_size: 32 * 1024,
                inbound: Defragmenter::new(),
                received: Vec::new(),
                log: Vec::new(),
            }
        }

        /// Records a request and decodes the PSRP it carries.
        pub(crate) fn learn(&mut self, request: &Request) {
            let signal = match &request.body {
                RequestBody::Signal(s) => Some(s.code.clone()),
                _ => None,
            };
            self.log.push((request.header.action.clone(), signal));
            let blob = match &request.body {
                RequestBody::Create(create) => {
                    self.rpid = create.shell_id.unwrap();
                    create.creation_xml.clone().unwrap()
                }
                RequestBody::Command(line) => {
                    self.pid = line.command_id.unwrap();
                    line.psrp_arguments().unwrap()
                }
                RequestBody::Send(send) => {
                    send.streams.iter().flat_map(|s| s.data.clone()).collect()
                }
                _ => Vec::new(),
            };
            for bytes in self.inbound.push_blob(&blob).unwrap() {
                let message = Message::decode(&bytes).unwrap();
                self.received.push(PsrpMessage::decode(&message).unwrap());
            }
        }

        /// Each message's fragments, encoded one by one.
        pub(crate) fn fragments(&mut self, messages: &[Message]) -> Vec<Vec<u8>> {
            messages
                .iter()
                .flat_map(|m| self.out.fragment(&m.encode(), self.fragment_size))
                .map(|f| f.encode())
                .collect()
        }

        pub(crate) fn created(&self) -> ResponseBody {
            ResponseBody::CreateResponse(CreateResponse {
                address: ENDPOINT.into(),
                resource_uri: Some(resources::powershell("Microsoft.PowerShell")),
                selectors: vec![Selector::shell_id(&self.rpid)],
                shell: None,
            })
        }

        /// SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA, RUNSPACEPOOL_STATE `state`.
        pub(crate) fn pool_messages(
            &self,
            state: RunspacePoolState,
            error: Option<ErrorRecord>,
        ) -> Vec<Message> {
            vec![
                // Windows sends its capability with a nil RPID (R:test_psrp_open_runspace).
                SessionCapability::default().encode(Destination::Client, Uuid::nil()),
                ApplicationPrivateData::from_version_table(
                    PsVersionTable::windows_powershell_5_1(),
                )
                .encode(self.rpid),
                RunspacePoolStateMessage { state, error }.encode(self.rpid),
            ]
        }

        /// A ReceiveResponse for the pool: one stream without CommandId per blob.
        pub(crate) fn pool_output(&self, blobs: Vec<Vec<u8>>) -> ResponseBody {
            ResponseBody::ReceiveResponse(ReceiveResponse {
                streams: blobs
                    .into_iter()
                    .map(|data| ReceivedStream {
                        name: "stdout".into(),
                        command_id: None,
                        end: false,
                        data,
                    })
                    .collect(),
                command_state: None,
            })
        }

        /// A ReceiveResponse for the pipeline: one stream per blob, Done when `done`.
        pub(crate) fn pipeline_output(&self, blobs: Vec<Vec<u8>>, done: bool) -> ResponseBody {
            ResponseBody::ReceiveResponse(ReceiveResponse {
                streams: blobs
                    .into_iter()
                    .map(|data| ReceivedStream {
                        name: "stdout".into(),
                        command_id: Some(self.pid),
                        end: done,
                        data,
                    })
                    .collect(),
                command_state: Some(CommandStateInfo {
                    command_id: Some(self.pid),
                    state: if done {
                        CommandState::Done
                    } else {
                        CommandState::Running
                    },
                    exit_code: done.then_some(0),
                }),
            })
        }

        pub(crate) fn state(
            &self,
            state: PsInvocationState,
            error: Option<ErrorRecord>,
        ) -> Message {
            PipelineStateMessage { state, error }.encode(self.rpid, self.pid)
        }

        pub(crate) fn output(&self, text: &str) -> Message {
            PipelineOutput { value: text.into() }.encode(self.rpid, self.pid)
        }

        /// Answers everything but the pipeline Receive the usual way.
        pub(crate) fn usual(&mut self, request: &Request) -> ResponseBody {
            match &request.body {
                RequestBody::Create(_) => self.created(),
                RequestBody::Receive(r) if r.command_id.is_none() => {
                    let messages = self.pool_messages(RunspacePoolState::Opened, None);
                    let blob = self.fragments(&messages).concat();
                    self.pool_output(vec![blob])
                }
                RequestBody::Command(_) => ResponseBody::CommandResponse(CommandResponse {
                    command_id: self.pid,
                }),
                RequestBody::Send(_) => ResponseBody::SendResponse,
                RequestBody::Signal(_) => ResponseBody::SignalResponse,
                RequestBody::Delete => ResponseBody::DeleteResponse,
                other => panic!("unexpected request {other:?}"),
            }
        }

        pub(crate) fn answer(&mut self, request: &Request, body: ResponseBody) -> Response {
            let response = Response::reply(request.header.message_id, self.ids.next_id(), body);
            // Everything crosses the wire as XML: the reply goes through the real codec.
            Response::parse(&response.to_xml()).unwrap()
        }
    }

    struct Run {
        outcome: ScriptOutcome,
        events: Vec<PsrpEvent>,
        requests: Vec<Request>,
        host: Host,
    }

    fn run_to_end(
        settings: PsrpSettings,
        spec: ScriptSpec,
        mut host: Host,
        mut reply: impl FnMut(&mut Host, &Request) -> ResponseBody,
    ) -> Run {
        let mut ids = SequentialIds::default();
        let (mut run, first) = ScriptRun::start(settings, spec, &mut ids);
        let mut requests = vec![(*first).clone()];
        let mut next = first;
        let mut events = Vec::new();
        for _ in 0..100 {
            host.learn(&next);
            let body = reply(&mut host, &next);
            let response = host.answer(&next, body);
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
                    return Run {
                        outcome,
                        events,
                        requests,
                        host,
                    };
                }
            }
        }
        panic!("run did not finish in 100 steps");
    }

    fn spec() -> ScriptSpec {
        ScriptSpec::new("param($a) Write-Output $a").with_argument("hi")
    }

    fn actions(host: &Host) -> Vec<Action> {
        host.log.iter().map(|(a, _)| a.clone()).collect()
    }

    fn info_record() -> InformationRecord {
        InformationRecord::new(
            "information",
            "Write-Information",
            DateTime::from_text("2018-06-13T23:46:28.00516+00:00"),
        )
    }

    #[test]
    fn runs_a_script_and_reports_every_stream() {
        let run = run_to_end(
            PsrpSettings::new(ENDPOINT),
            spec(),
            Host::new(),
            |host, req| match &req.body {
                RequestBody::Receive(r) if r.command_id.is_some() => {
                    let (rpid, pid) = (host.rpid, host.pid);
                    let messages = vec![
                        ProgressRecord::preparing_modules().encode(rpid, pid),
                        InformationalRecord::new(InformationalKind::Debug, "debug")
                            .encode(rpid, pid),
                        InformationalRecord::new(InformationalKind::Verbose, "verbose")
                            .encode(rpid, pid),
                        InformationalRecord::new(InformationalKind::Warning, "warning")
                            .encode(rpid, pid),
                        ErrorRecord::runtime_exception("error stream").encode(rpid, pid),
                        host.output("hi"),
                        info_record().encode(rpid, pid),
                        host.state(PsInvocationState::Completed, None),
                    ];
                    let blob = host.fragments(&messages).concat();
                    host.pipeline_output(vec![blob], true)
                }
                _ => host.usual(req),
            },
        );
        let host = &run.host;
        assert_eq!(
            run.outcome,
            Ok(PipelineOutcome {
                state: PsInvocationState::Completed,
                error: None
            })
        );
        assert_eq!(
            actions(host),
            [
                Action::Create,
                Action::Receive,
                Action::Command,
                Action::Receive,
                Action::Delete
            ]
        );

        let events = &run.events;
        assert_eq!(
            events[0],
            PsrpEvent::ShellCreated {
                shell_id: host.rpid
            }
        );
        let PsrpEvent::PsVersionTable(table) = &events[1] else {
            panic!("expected the version table, got {:?}", events[1]);
        };
        assert_eq!(table.ps_edition.as_deref(), Some("Desktop"));
        assert_eq!(
            events[2],
            PsrpEvent::PipelineStarted {
                command_id: host.pid
            }
        );
        assert!(
            matches!(&events[3], PsrpEvent::Progress(p) if p.activity == "Preparing modules for first use.")
        );
        assert!(matches!(&events[4], PsrpEvent::Debug(r) if r.message == "debug"));
        assert!(matches!(&events[5], PsrpEvent::Verbose(r) if r.message == "verbose"));
        assert!(matches!(&events[6], PsrpEvent::Warning(r) if r.message == "warning"));
        assert!(matches!(&events[7], PsrpEvent::Error(e) if e.message == "error stream"));
        assert_eq!(events[8], PsrpEvent::Output(Value::from("hi")));
        assert!(
            matches!(&events[9], PsrpEvent::Information(i) if i.source.as_deref() == Some("Write-Information"))
        );
        assert_eq!(
            events[10],
            PsrpEvent::PipelineState {
                state: PsInvocationState::Completed,
                error: None
            }
        );
        assert_eq!(
            events[11],
            PsrpEvent::ShellDeleted {
                shell_id: host.rpid
            }
        );
        assert_eq!(events.len(), 12);

        // Every request uses the PowerShell resource URI, Delete included.
        for req in &run.requests {
            assert_eq!(
                req.header.resource_uri,
                "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
            );
        }
        for req in &run.requests[1..] {
            assert_eq!(req.header.shell_id(), Some(host.rpid));
        }
        let create = &run.requests[0];
        assert_eq!(create.header.option("protocolversion"), Some("2.3"));
        assert_eq!(create.header.options[0].must_comply, Some(true));
        let RequestBody::Receive(pool_receive) = &run.requests[1].body else {
            panic!()
        };
        assert_eq!(pool_receive.command_id, None);
        assert_eq!(pool_receive.streams, ["stdout"]);
        let RequestBody::Receive(pipe_receive) = &run.requests[3].body else {
            panic!()
        };
        assert_eq!(pipe_receive.command_id, Some(host.pid));

        // What the host decoded: capability 2.3, a one-runspace pool, the script and its
        // argument.
        let [
            PsrpMessage::SessionCapability(cap),
            PsrpMessage::InitRunspacePool(init),
            PsrpMessage::CreatePipeline(pipeline),
        ] = host.received.as_slice()
        else {
            panic!("host received {:?}", host.received);
        };
        assert_eq!(cap.protocol(), Some(ProtocolVersion::V2_3));
        assert_eq!((init.min_runspaces, init.max_runspaces), (1, 1));
        assert_eq!(*pipeline, spec().create_pipeline(ProtocolVersion::V2_3));
    }

    #[test]
    fn reassembles_output_split_across_receives_fragments_and_timeouts() {
        let mut host = Host::new();
        // Every server message is cut into several fragments.
        host.fragment_size = 60;
        let mut pool_polls = 0;
        let mut pipe_polls = 0;
        let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
        let run = run_to_end(PsrpSettings::new(ENDPOINT), spec(), host, |host, req| {
            match &req.body {
                RequestBody::Receive(r) if r.command_id.is_none() => {
                    pool_polls += 1;
                    match pool_polls {
                        // MS-WSMV 3.1.4.14: nothing ready within OperationTimeout.
                        1 => ResponseBody::Fault(WsmanFault::operation_timeout("host")),
                        // The pool state arrives over two Receives (R:test_psrp_open_runspace).
                        2 => {
                            let messages = host.pool_messages(RunspacePoolState::Opened, None);
                            let mut frags = host.fragments(&messages);
                            let half = frags.split_off(frags.len() / 2);
                            pending.extend(half);
                            host.pool_output(frags)
                        }
                        _ => host.pool_output(pending.drain(..).collect()),
                    }
                }
                RequestBody::Receive(_) => {
                    pipe_polls += 1;
                    match pipe_polls {
                        1 => {
                            let messages = [
                                host.output("first object"),
                                host.output("second object"),
                                host.output("third object"),
                                host.state(PsInvocationState::Completed, None),
                            ];
                            let frags = host.fragments(&messages);
                            assert!(frags.len() > 8, "messages must span many fragments");
                            pending.extend(frags);
                            // Three fragments in three streams of this response.
                            let now: Vec<_> = pending.drain(..3).collect();
                            host.pipeline_output(now, false)
                        }
                        2 => ResponseBody::Fault(WsmanFault::operation_timeout("host")),
                        3 => {
                            let now = vec![pending.drain(..4).collect::<Vec<_>>().concat()];
                            host.pipeline_output(now, false)
                        }
                        _ => {
                            let now = pending.drain(..).collect();
                            host.pipeline_output(now, true)
                        }
                    }
                }
                _ => host.usual(req),
            }
        });
        assert!(run.outcome.is_ok(), "{:?}", run.outcome);
        assert_eq!(
            pool_polls, 3,
            "the second half of the pool messages needs a poll"
        );
        let outputs: Vec<_> = run
            .events
            .iter()
            .filter_map(|e| match e {
                PsrpEvent::Output(v) => v.as_str(),
                _ => None,
            })
            .collect();
        assert_eq!(outputs, ["first object", "second object", "third object"]);
        assert_eq!(
            actions(&run.host),
            [
                Action::Create,
                Action::Receive,
                Action::Receive,
                Action::Receive,
                Action::Command,
                Action::Receive,
                Action::Receive,
                Action::Receive,
                Action::Receive,
                Action::Delete
            ]
        );
    }

    #[test]
    fn a_pipeline_too_big_for_one_envelope_goes_out_as_command_then_sends() {
        let settings = PsrpSettings {
            max_envelope_size: 4096,
            ..PsrpSettings::new(ENDPOINT)
        };
        let script = format!("'{}' | Out-Null", "x".repeat(12_000));
        let spec = ScriptSpec::new(script.clone()).with_parameter("Name", "value");
        let run = run_to_end(
            settings,
            spec.clone(),
            Host::new(),
            |host, req| match &req.body {
                RequestBody::Receive(r) if r.command_id.is_some() => {
                    let blob = host
                        .fragments(&[host.state(PsInvocationState::Completed, None)])
                        .concat();
                    host.pipeline_output(vec![blob], true)
                }
                _ => host.usual(req),
            },
        );
        assert!(run.outcome.is_ok(), "{:?}", run.outcome);
        let log = actions(&run.host);
        let sends = log.iter().filter(|a| **a == Action::Send).count();
        assert!(
            sends >= 3,
            "expected the pipeline over several Sends: {log:?}"
        );
        assert_eq!(log[2], Action::Command);
        assert!(log[3..3 + sends].iter().all(|a| *a == Action::Send));
        // No envelope exceeds MaxEnvelopeSize, and Sends carry the CommandId on stdin
        // without End (R:test_psrp_small_msg_size).
        for req in &run.requests {
            assert!(req.to_xml().len() <= 4096, "{} bytes", req.to_xml().len());
            if let RequestBody::Send(send) = &req.body {
                assert_eq!(send.streams[0].name, "stdin");
                assert_eq!(send.streams[0].command_id, Some(run.host.pid));
                assert_eq!(send.streams[0].end, None);
            }
        }
        let Some(PsrpMessage::CreatePipeline(pipeline)) = run.host.received.last() else {
            panic!("no CREATE_PIPELINE reassembled");
        };
        assert_eq!(*pipeline, spec.create_pipeline(ProtocolVersion::V2_3));
    }

    #[test]
    fn a_failed_pipeline_reports_its_terminating_error() {
        let run = run_to_end(
            PsrpSettings::new(ENDPOINT),
            spec(),
            Host::new(),
            |host, req| match &req.body {
                RequestBody::Receive(r) if r.command_id.is_some() => {
                    let error = ErrorRecord::runtime_exception("boom");
                    let blob = host
                        .fragments(&[host.state(PsInvocationState::Failed, Some(error))])
                        .concat();
                    host.pipeline_output(vec![blob], true)
                }
                _ => host.usual(req),
            },
        );
        let Ok(outcome) = &run.outcome else {
            panic!("{:?}", run.outcome)
        };
        assert_eq!(outcome.state, PsInvocationState::Failed);
        let error = outcome.error.as_ref().unwrap();
        assert_eq!(error.message, "boom");
        assert_eq!(error.category_name(), Some("OperationStopped"));
        assert!(run.events.iter().any(|e| matches!(
            e,
            PsrpEvent::PipelineState {
                state: PsInvocationState::Failed,
                error: Some(_)
            }
        )));
        // A finished pipeline needs no Signal: the shell is deleted straight away.
        assert_eq!(run.host.log[4].0, Action::Delete);
    }

    #[test]
    fn a_broken_pool_ends_the_run_with_its_error_record_and_deletes_the_shell() {
        let run = run_to_end(
            PsrpSettings::new(ENDPOINT),
            spec(),
            Host::new(),
            |host, req| match &req.body {
                RequestBody::Receive(_) => {
                    let error = ErrorRecord::runtime_exception("module failed to load");
                    let messages = host.pool_messages(RunspacePoolState::Broken, Some(error));
                    let blob = host.fragments(&messages).concat();
                    host.pool_output(vec![blob])
                }
                _ => host.usual(req),
            },
        );
        let Err(PsrpClientError::PoolFailed { state, error }) = &run.outcome else {
            panic!("{:?}", run.outcome)
        };
        assert_eq!(*state, RunspacePoolState::Broken);
        assert_eq!(error.as_ref().unwrap().message, "module failed to load");
        assert_eq!(
            actions(&run.host),
            [Action::Create, Action::Receive, Action::Delete]
        );
        assert_eq!(
            run.events.last(),
            Some(&PsrpEvent::ShellDeleted {
                shell_id: run.host.rpid
            })
        );
    }

    #[test]
    fn a_fault_on_create_finishes_without_cleanup() {
        let run = run_to_end(PsrpSettings::new(ENDPOINT), spec(), Host::new(), |_, _| {
            ResponseBody::Fault(WsmanFault::max_shells_per_user("host", 2))
        });
        let Err(PsrpClientError::Fault { operation, fault }) = &run.outcome else {
            panic!("{:?}", run.outcome)
        };
        assert_eq!(*operation, Operation::Create);
        assert!(fault.code.is_some_and(|c| c.is_quota()));
        assert!(run.events.is_empty());
        assert_eq!(actions(&run.host), [Action::Create]);
    }

    #[test]
    fn a_fault_after_create_still_deletes_the_shell() {
        let run = run_to_end(
            PsrpSettings::new(ENDPOINT),
            spec(),
            Host::new(),
            |host, req| match &req.body {
                RequestBody::Command(_) => ResponseBody::Fault(WsmanFault::access_denied("host")),
                _ => host.usual(req),
            },
        );
        let Err(PsrpClientError::Fault { operation, .. }) = &run.outcome else {
            panic!("{:?}", run.outcome)
        };
        assert_eq!(*operation, Operation::Command);
        assert_eq!(
            actions(&run.host),
            [
                Action::Create,
                Action::Receive,
                Action::Command,
                Action::Delete
            ]
        );
        assert_eq!(
            run.events.last(),
            Some(&PsrpEvent::ShellDeleted {
                shell_id: run.host.rpid
            })
        );
    }

    #[test]
    fn a_failed_delete_is_reported_as_cleanup_failure() {
        let run = run_to_end(
            PsrpSettings::new(ENDPOINT),
            spec(),
            Host::new(),
            |host, req| match &req.body {
                RequestBody::Receive(r) if r.command_id.is_some() => {
                    let blob = host
                        .fragments(&[host.state(PsInvocationState::Completed, None)])
                        .concat();
                    host.pipeline_output(vec![blob], true)
                }
                RequestBody::Delete => ResponseBody::Fault(WsmanFault::access_denied("host")),
                _ => host.usual(req),
            },
        );
        // The pipeline result stands; the leak is reported as an event.
        assert!(run.outcome.is_ok());
        assert!(matches!(
            run.events.last(),
            Some(PsrpEvent::CleanupFailed {
                error: PsrpClientError::Fault {
                    operation: Operation::Delete,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn garbage_from_the_host_is_a_decode_error_and_cleans_up() {
        let run = run_to_end(
            PsrpSettings::new(ENDPOINT),
            spec(),
            Host::new(),
            |host, req| match &req.body {
                RequestBody::Receive(r) if r.command_id.is_some() => {
                    host.pipeline_output(vec![b"not a fragment".to_vec()], false)
                }
                _ => host.usual(req),
            },
        );
        assert!(matches!(run.outcome, Err(PsrpClientError::Fragment(_))));
        // A running pipeline is stopped before the shell goes.
        assert_eq!(run.host.log[4], (Action::Signal, Some(SignalCode::PsCtrlC)));
        assert_eq!(run.host.log[5].0, Action::Delete);
    }

    #[test]
    fn abort_mid_pipeline_sends_ctrl_c_then_delete() {
        let mut ids = SequentialIds::default();
        let mut host = Host::new();
        let (mut run, create) = ScriptRun::start(PsrpSettings::new(ENDPOINT), spec(), &mut ids);
        let mut next = create;
        // Drive until the first pipeline Receive is outstanding.
        loop {
            host.learn(&next);
            if matches!(&next.body, RequestBody::Receive(r) if r.command_id.is_some()) {
                break;
            }
            let body = host.usual(&next);
            let response = host.answer(&next, body);
            let Step::Send(request) = run.handle(response, &mut ids) else {
                panic!("finished early")
            };
            next = request;
        }
        assert_eq!(run.open_shell(), Some(host.rpid));
        let Step::Send(signal) = run.abort(PsrpClientError::Aborted("deadline".into()), &mut ids)
        else {
            panic!()
        };
        let RequestBody::Signal(sig) = &signal.body else {
            panic!("expected a Signal, got {:?}", signal.body)
        };
        assert_eq!(sig.code, SignalCode::PsCtrlC);
        assert_eq!(sig.command_id, Some(host.pid));
        let response = host.answer(&signal, ResponseBody::SignalResponse);
        let Step::Send(delete) = run.handle(response, &mut ids) else {
            panic!()
        };
        assert_eq!(delete.header.action, Action::Delete);
        assert_eq!(
            delete.header.resource_uri,
            "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
        );
        let response = host.answer(&delete, ResponseBody::DeleteResponse);
        assert_eq!(
            run.handle(response, &mut ids),
            Step::Finished(Err(PsrpClientError::Aborted("deadline".into())))
        );
        assert!(run.is_finished());
    }

    #[test]
    fn a_create_without_a_reply_is_deleted_by_its_known_id_and_not_found_means_gone() {
        let mut ids = SequentialIds::default();
        let mut host = Host::new();
        let (mut run, create) = ScriptRun::start(PsrpSettings::new(ENDPOINT), spec(), &mut ids);
        host.learn(&create);
        // The id to journal before sending is the one the Create carries.
        assert_eq!(run.pending_shell(), Some(host.rpid));
        assert_eq!(run.open_shell(), None);
        // The reply was lost (a reset): the host may have made the shell.
        let Step::Send(delete) = run.abort(PsrpClientError::Aborted("reset".into()), &mut ids)
        else {
            panic!("a lost Create is cleaned up")
        };
        assert_eq!(delete.header.action, Action::Delete);
        assert_eq!(delete.header.shell_id(), Some(host.rpid));
        assert_eq!(run.pending_shell(), None);
        // It had not: "shell not found" is what the Delete wanted.
        let response = host.answer(
            &delete,
            ResponseBody::Fault(WsmanFault::shell_not_found("host")),
        );
        assert_eq!(
            run.handle(response, &mut ids),
            Step::Finished(Err(PsrpClientError::Aborted("reset".into())))
        );
        let events: Vec<PsrpEvent> = std::iter::from_fn(|| run.poll_event()).collect();
        assert_eq!(
            events,
            [PsrpEvent::ShellDeleted {
                shell_id: host.rpid
            }]
        );

        // A Create that never left (connection refused) has nothing to delete.
        let (mut run, _create) = ScriptRun::start(PsrpSettings::new(ENDPOINT), spec(), &mut ids);
        assert_eq!(
            run.abandon(PsrpClientError::Aborted("refused".into()), &mut ids),
            Step::Finished(Err(PsrpClientError::Aborted("refused".into())))
        );
        assert!(run.poll_event().is_none());
    }

    #[test]
    fn a_reply_to_another_request_is_a_violation() {
        let mut ids = SequentialIds::default();
        let mut host = Host::new();
        let (mut run, create) = ScriptRun::start(PsrpSettings::new(ENDPOINT), spec(), &mut ids);
        host.learn(&create);
        let mut wrong = host.answer(&create, host.created());
        wrong.header.relates_to = Some(Uuid::from_u128(7));
        // Nothing is known to exist yet, so the run ends at once.
        assert!(matches!(
            run.handle(wrong, &mut ids),
            Step::Finished(Err(PsrpClientError::WrongRelatesTo {
                operation: Operation::Create,
                ..
            }))
        ));
    }

    #[test]
    fn a_pool_breaking_while_the_pipeline_runs_stops_and_deletes() {
        let run = run_to_end(
            PsrpSettings::new(ENDPOINT),
            spec(),
            Host::new(),
            |host, req| match &req.body {
                RequestBody::Receive(r) if r.command_id.is_some() => {
                    let broken = RunspacePoolStateMessage {
                        state: RunspacePoolState::Broken,
                        error: Some(ErrorRecord::runtime_exception("pool died")),
                    }
                    .encode(host.rpid);
                    let blob = host.fragments(&[broken]).concat();
                    // A stream without CommandId is the pool's own output.
                    host.pool_output(vec![blob])
                }
                _ => host.usual(req),
            },
        );
        let Err(PsrpClientError::PoolFailed { state, error }) = &run.outcome else {
            panic!("{:?}", run.outcome)
        };
        assert_eq!(*state, RunspacePoolState::Broken);
        assert_eq!(error.as_ref().unwrap().message, "pool died");
        assert_eq!(run.host.log[4], (Action::Signal, Some(SignalCode::PsCtrlC)));
        assert_eq!(run.host.log[5].0, Action::Delete);
    }
}
