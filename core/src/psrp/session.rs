//! A PowerShell runspace pool kept open for many pipelines, sans-IO: what
//! `Enter-PSSession` and `Invoke-Command -Session` do (MS-PSRP 3.1.4, 3.1.5.3; wire-facts
//! 2.5 and 4.4).
//!
//! The pool is opened once, with the same Create and `creationXml` as
//! [`ScriptRun`](super::client::ScriptRun) (the two share [`PoolWire`]); then pipelines run
//! one after another on it, each a Command (plus Sends when CREATE_PIPELINE does not fit
//! one envelope), Receives until its terminal PIPELINE_STATE, and a Signal `Terminate` that
//! releases the command on the host, as pypsrp does between invocations
//! (R:test_psrp_multiple_invocations). State set by one pipeline (variables, functions)
//! stays in the pool for the next. At the end the pool is deleted with its PowerShell
//! resource URI.
//!
//! Driving model: as `ScriptRun`, the caller sends each request the machine hands out and
//! passes the parsed reply to [`PsrpSession::handle`]. One *main* request is outstanding at
//! a time. [`PsrpSession::stop`] is the exception: while a pipeline's Receive is held open
//! by the host (a long poll, wire-facts 1.11) it returns a `powershell/signal/ctrl_c`
//! Signal (R:test_psrp_nested_command) to send *beside* it, on another connection; its
//! reply is also passed to `handle` (told apart by `a:RelatesTo`) and the held Receive then
//! returns the Stopped state. Stopping a pipeline leaves the pool open.
//!
//! ```text
//!  ExpectShellCreated ─CreateResponse─> ExpectPoolOpened ⟲ Receive ─Opened─> Ready <────────┐
//!                                                                         │ run()           │
//!                                                                         ▼                 │
//!                               ExpectCommandId ─> ExpectSendAck* ─> ExpectPipelineOutput ⟲ │
//!                                                                         │ terminal state  │
//!                                                                         ▼                 │
//!                                                               ExpectTerminated ───────────┘
//!  Ready ─close()─> ExpectDeleted ─DeleteResponse─> Closed
//! ```
//!
//! A pipeline that fails (a fault on Command, Send or Receive; a reply that does not
//! decode; a transport failure the caller reports with [`PsrpSession::fail_pipeline`]) ends
//! with its error and the pool goes back to Ready. What ends the session: the pool reporting
//! itself Broken or Closed, the shell being gone (a Command answered with the unknown-shell
//! fault, wire-facts 1.12), a reply to another request, or [`PsrpSession::abort`].

use std::collections::VecDeque;

use uuid::Uuid;

use super::client::{
    PipelineOutcome, PoolWire, PsrpClientError, PsrpEvent, PsrpSettings, ScriptSpec,
};
use super::messages::CreatePipeline;
use crate::ids::IdGenerator;
use crate::winrs::Operation;
use crate::wsman::{Request, Response, ResponseBody, SignalCode};

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStep {
    /// Send this request (the main one) and pass its reply to [`PsrpSession::handle`].
    Send(Box<Request>),
    /// The pool is open and idle: [`PsrpSession::run`] a pipeline or
    /// [`PsrpSession::close`].
    Opened,
    /// A pipeline ended (its command released); the pool is idle again.
    PipelineFinished(Result<PipelineOutcome, PsrpClientError>),
    /// That was the reply to the stop Signal; the main request is still outstanding.
    Pending,
    /// The session is over: the shell was deleted (or reported with
    /// [`PsrpEvent::CleanupFailed`]), or never existed.
    Closed(Result<(), PsrpClientError>),
}

/// A call the session cannot take in its current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionUsageError {
    /// [`PsrpSession::run`] or [`PsrpSession::close`] while the pool is not idle.
    #[error("the session is not ready ({state}): wait for the outstanding request")]
    NotReady {
        /// What the session is doing.
        state: &'static str,
    },
}

/// States, named after the reply each waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ExpectShellCreated { shell: Uuid },
    ExpectPoolOpened { shell: Uuid },
    Ready { shell: Uuid },
    ExpectCommandId { shell: Uuid, command: Uuid },
    ExpectSendAck { shell: Uuid, command: Uuid },
    ExpectPipelineOutput { shell: Uuid, command: Uuid },
    ExpectTerminated { shell: Uuid },
    ExpectSignalled { shell: Uuid },
    ExpectDeleted { shell: Uuid },
    Closed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::ExpectShellCreated { .. } => "creating the shell",
            State::ExpectPoolOpened { .. } => "opening the runspace pool",
            State::Ready { .. } => "ready",
            State::ExpectCommandId { .. }
            | State::ExpectSendAck { .. }
            | State::ExpectPipelineOutput { .. } => "running a pipeline",
            State::ExpectTerminated { .. } => "releasing a pipeline",
            State::ExpectSignalled { .. } | State::ExpectDeleted { .. } => "closing",
            State::Closed => "closed",
        }
    }
}

/// The stop Signal sent beside the main request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StopSignal {
    /// The pipeline it stops.
    command: Uuid,
    /// Its MessageID, until the reply arrives.
    awaiting: Option<Uuid>,
}

/// A runspace pool open for many pipelines.
#[derive(Debug)]
pub struct PsrpSession {
    wire: PoolWire,
    state: State,
    awaiting: Uuid,
    events: VecDeque<PsrpEvent>,
    /// CREATE_PIPELINE fragment blobs that did not fit in the Command, one Send each.
    pending_sends: VecDeque<Vec<u8>>,
    /// The running pipeline's terminal state, once received.
    outcome: Option<PipelineOutcome>,
    /// Why the running pipeline failed.
    failure: Option<PsrpClientError>,
    /// Why the session ends (kept through the cleanup requests).
    close_error: Option<PsrpClientError>,
    stop: Option<StopSignal>,
    pipelines: u64,
}

impl PsrpSession {
    /// Starts opening a pool; returns the machine and the Create request to send first.
    pub fn open(settings: PsrpSettings, ids: &mut impl IdGenerator) -> (Self, Box<Request>) {
        let shell = ids.next_id();
        let mut session = Self {
            wire: PoolWire::new(settings, shell),
            state: State::ExpectShellCreated { shell },
            awaiting: Uuid::nil(),
            events: VecDeque::new(),
            pending_sends: VecDeque::new(),
            outcome: None,
            failure: None,
            close_error: None,
            stop: None,
            pipelines: 0,
        };
        let create = session.wire.create(shell, ids);
        let request = session.issue(create);
        (session, request)
    }

    /// The next event, if any. Drain after every call that returns a [`SessionStep`].
    pub fn poll_event(&mut self) -> Option<PsrpEvent> {
        self.events.pop_front()
    }

    /// The shell (runspace pool) this session has open on the host, if any.
    pub fn shell_id(&self) -> Option<Uuid> {
        match self.state {
            State::ExpectPoolOpened { shell }
            | State::Ready { shell }
            | State::ExpectCommandId { shell, .. }
            | State::ExpectSendAck { shell, .. }
            | State::ExpectPipelineOutput { shell, .. }
            | State::ExpectTerminated { shell }
            | State::ExpectSignalled { shell }
            | State::ExpectDeleted { shell } => Some(shell),
            State::ExpectShellCreated { .. } | State::Closed => None,
        }
    }

    /// The session's settings.
    pub fn settings(&self) -> &PsrpSettings {
        self.wire.settings()
    }

    /// True when the pool is open and idle.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// True while a pipeline runs (from its Command to its terminal state).
    pub fn is_running(&self) -> bool {
        matches!(
            self.state,
            State::ExpectCommandId { .. }
                | State::ExpectSendAck { .. }
                | State::ExpectPipelineOutput { .. }
        )
    }

    /// True once [`SessionStep::Closed`] has been returned.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// True while the stop Signal's reply is still due.
    pub fn stop_outstanding(&self) -> bool {
        self.stop.is_some_and(|s| s.awaiting.is_some())
    }

    /// Pipelines started on this pool.
    pub fn pipelines_run(&self) -> u64 {
        self.pipelines
    }

    /// Runs `spec` as the next pipeline: the Command to send. Only when idle.
    pub fn run(
        &mut self,
        spec: &ScriptSpec,
        ids: &mut impl IdGenerator,
    ) -> Result<Box<Request>, SessionUsageError> {
        let pipeline = spec.create_pipeline(self.wire.settings().protocol_version);
        self.run_pipeline(&pipeline, ids)
    }

    /// Runs any CREATE_PIPELINE (several commands, statements, input) as the next
    /// pipeline. Only when idle.
    pub fn run_pipeline(
        &mut self,
        pipeline: &CreatePipeline,
        ids: &mut impl IdGenerator,
    ) -> Result<Box<Request>, SessionUsageError> {
        let State::Ready { shell } = self.state else {
            return Err(SessionUsageError::NotReady {
                state: self.state.name(),
            });
        };
        let command = ids.next_id();
        self.state = State::ExpectCommandId { shell, command };
        self.outcome = None;
        self.failure = None;
        self.stop = None;
        self.pipelines += 1;
        let (request, rest) = self.wire.command(shell, command, pipeline, ids);
        self.pending_sends = rest;
        Ok(self.issue(request))
    }

    /// The `powershell/signal/ctrl_c` Signal that stops the running pipeline, to send
    /// beside the outstanding Receive (its reply goes to [`PsrpSession::handle`]). `None`
    /// when there is nothing to stop yet (no pipeline, or its Command not acknowledged:
    /// ask again after the next step) or a stop was already sent for this pipeline.
    pub fn stop(&mut self, ids: &mut impl IdGenerator) -> Option<Box<Request>> {
        let (State::ExpectSendAck { shell, command }
        | State::ExpectPipelineOutput { shell, command }) = self.state
        else {
            return None;
        };
        if self.stop.is_some_and(|s| s.command == command) {
            return None;
        }
        let request = self.wire.signal(shell, command, SignalCode::PsCtrlC, ids);
        self.stop = Some(StopSignal {
            command,
            awaiting: Some(request.header.message_id),
        });
        Some(Box::new(request))
    }

    /// The stop Signal got no reply (its connection failed): another [`PsrpSession::stop`]
    /// may be asked for.
    pub fn stop_failed(&mut self) {
        self.stop = None;
    }

    /// Closes the idle session: the Delete to send.
    pub fn close(&mut self, ids: &mut impl IdGenerator) -> Result<Box<Request>, SessionUsageError> {
        let State::Ready { shell } = self.state else {
            return Err(SessionUsageError::NotReady {
                state: self.state.name(),
            });
        };
        Ok(self.delete(shell, ids))
    }

    /// The main request failed without a reply (a transport failure, a timeout): the
    /// running pipeline ends with `error` and its command is released (the request to send
    /// on a new connection); the session stays open. In other states the session is
    /// given up as [`PsrpSession::abort`] does, except that a failed release or Delete is
    /// only recorded.
    pub fn fail_pipeline(
        &mut self,
        error: PsrpClientError,
        ids: &mut impl IdGenerator,
    ) -> SessionStep {
        match self.state {
            State::ExpectCommandId { shell, command }
            | State::ExpectSendAck { shell, command }
            | State::ExpectPipelineOutput { shell, command } => {
                self.failure.get_or_insert(error);
                // The Command may have reached the host: release it in any case (an unknown
                // command id only gets a fault, which is ignored).
                self.terminate(shell, command, ids)
            }
            State::ExpectTerminated { shell } => {
                self.state = State::Ready { shell };
                self.pipeline_finished()
            }
            State::ExpectDeleted { shell } => {
                self.events.push_back(PsrpEvent::CleanupFailed {
                    shell_id: shell,
                    error: error.clone(),
                });
                self.close_error.get_or_insert(error);
                self.closed()
            }
            _ => self.abort(error, ids),
        }
    }

    /// Ends the session (the caller gives up, or the reply was unusable): a running
    /// pipeline is stopped with ctrl_c, then the shell is deleted.
    pub fn abort(&mut self, error: PsrpClientError, ids: &mut impl IdGenerator) -> SessionStep {
        self.close_error.get_or_insert(error);
        match self.state {
            State::ExpectCommandId { shell, .. }
            | State::ExpectPoolOpened { shell }
            | State::Ready { shell }
            | State::ExpectTerminated { shell }
            | State::ExpectSignalled { shell } => SessionStep::Send(self.delete(shell, ids)),
            State::ExpectSendAck { shell, command }
            | State::ExpectPipelineOutput { shell, command } => {
                self.state = State::ExpectSignalled { shell };
                let request = self.wire.signal(shell, command, SignalCode::PsCtrlC, ids);
                SessionStep::Send(self.issue(request))
            }
            State::ExpectShellCreated { .. } | State::ExpectDeleted { .. } | State::Closed => {
                self.closed()
            }
        }
    }

    /// Feeds a reply: to the main request, or to the stop Signal.
    pub fn handle(&mut self, response: Response, ids: &mut impl IdGenerator) -> SessionStep {
        if let Some(stop) = self.stop.as_mut()
            && stop.awaiting.is_some()
            && response.header.relates_to == stop.awaiting
        {
            stop.awaiting = None;
            // A refused stop (the pipeline already ended, say) changes nothing: the
            // pipeline runs on to its own end and the held Receive reports it. Another
            // stop may be asked for.
            if matches!(response.body, ResponseBody::Fault(_)) {
                self.stop = None;
            }
            return SessionStep::Pending;
        }
        if self.state == State::Closed {
            return self.closed();
        }
        let operation = self.operation();
        if response.header.relates_to != Some(self.awaiting) {
            let error = PsrpClientError::WrongRelatesTo {
                operation,
                expected: self.awaiting,
                found: response.header.relates_to,
            };
            return self.abort(error, ids);
        }
        match (self.state, response.body) {
            (State::ExpectShellCreated { shell }, ResponseBody::CreateResponse(created)) => {
                let shell = created.shell_id().unwrap_or(shell);
                self.events
                    .push_back(PsrpEvent::ShellCreated { shell_id: shell });
                self.receive_pool(shell, ids)
            }
            (State::ExpectPoolOpened { shell }, ResponseBody::ReceiveResponse(output)) => {
                match self.wire.pool_opening(output, &mut self.events) {
                    Err(error) => self.abort(error, ids),
                    Ok(false) => self.receive_pool(shell, ids),
                    Ok(true) => {
                        self.state = State::Ready { shell };
                        SessionStep::Opened
                    }
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
                    Err(error @ PsrpClientError::PoolFailed { .. }) => {
                        return self.abort(error, ids);
                    }
                    Err(error) => return self.pipeline_failed(error, ids),
                };
                if self.outcome.is_none() {
                    self.outcome = progress.outcome;
                }
                if self.outcome.is_some() {
                    self.terminate(shell, command, ids)
                } else if progress.done {
                    self.pipeline_failed(PsrpClientError::NoPipelineState, ids)
                } else {
                    self.receive_pipeline(shell, command, ids)
                }
            }
            // MS-WSMV 3.1.4.14: a Receive that times out is answered with the TimedOut
            // fault; poll again (wire-facts 1.11).
            (State::ExpectPoolOpened { shell }, ResponseBody::Fault(fault))
                if fault.is_operation_timeout() =>
            {
                self.receive_pool(shell, ids)
            }
            (State::ExpectPipelineOutput { shell, command }, ResponseBody::Fault(fault))
                if fault.is_operation_timeout() =>
            {
                self.receive_pipeline(shell, command, ids)
            }
            // The shell is gone (idle timeout, deleted by someone else): nothing to clean.
            (State::ExpectCommandId { .. }, ResponseBody::Fault(fault))
                if fault.is_shell_not_found() =>
            {
                self.close_error = Some(PsrpClientError::Fault {
                    operation,
                    fault: Box::new(fault),
                });
                self.closed()
            }
            (State::ExpectTerminated { shell }, ResponseBody::SignalResponse) => {
                self.state = State::Ready { shell };
                self.pipeline_finished()
            }
            // Releasing a command the host already forgot is not a failure.
            (State::ExpectTerminated { shell }, ResponseBody::Fault(_)) => {
                self.state = State::Ready { shell };
                self.pipeline_finished()
            }
            (State::ExpectSignalled { shell }, ResponseBody::SignalResponse) => {
                SessionStep::Send(self.delete(shell, ids))
            }
            (State::ExpectSignalled { shell }, ResponseBody::Fault(fault)) => {
                self.events.push_back(PsrpEvent::CleanupFailed {
                    shell_id: shell,
                    error: PsrpClientError::Fault {
                        operation: Operation::Signal,
                        fault: Box::new(fault),
                    },
                });
                SessionStep::Send(self.delete(shell, ids))
            }
            (State::ExpectDeleted { shell }, ResponseBody::DeleteResponse) => {
                self.events
                    .push_back(PsrpEvent::ShellDeleted { shell_id: shell });
                self.closed()
            }
            (State::ExpectDeleted { shell }, ResponseBody::Fault(fault)) => {
                self.events.push_back(PsrpEvent::CleanupFailed {
                    shell_id: shell,
                    error: PsrpClientError::Fault {
                        operation: Operation::Delete,
                        fault: Box::new(fault),
                    },
                });
                self.closed()
            }
            (
                State::ExpectCommandId { .. }
                | State::ExpectSendAck { .. }
                | State::ExpectPipelineOutput { .. },
                ResponseBody::Fault(fault),
            ) => {
                let error = PsrpClientError::Fault {
                    operation,
                    fault: Box::new(fault),
                };
                self.pipeline_failed(error, ids)
            }
            (_, ResponseBody::Fault(fault)) => {
                let error = PsrpClientError::Fault {
                    operation,
                    fault: Box::new(fault),
                };
                self.abort(error, ids)
            }
            (_, other) => {
                let error = PsrpClientError::unexpected(operation, &other);
                self.abort(error, ids)
            }
        }
    }

    /// A pipeline failure the pool survives: release the command if the host has it.
    fn pipeline_failed(
        &mut self,
        error: PsrpClientError,
        ids: &mut impl IdGenerator,
    ) -> SessionStep {
        self.failure.get_or_insert(error);
        match self.state {
            State::ExpectSendAck { shell, command }
            | State::ExpectPipelineOutput { shell, command } => self.terminate(shell, command, ids),
            State::ExpectCommandId { shell, .. } => {
                self.state = State::Ready { shell };
                self.pipeline_finished()
            }
            _ => {
                let error = self
                    .failure
                    .take()
                    .unwrap_or(PsrpClientError::NoPipelineState);
                self.abort(error, ids)
            }
        }
    }

    /// The pipeline's result, once its command is released.
    fn pipeline_finished(&mut self) -> SessionStep {
        let result = match (self.failure.take(), self.outcome.take()) {
            (Some(error), _) => Err(error),
            (None, Some(outcome)) => Ok(outcome),
            (None, None) => Err(PsrpClientError::NoPipelineState),
        };
        SessionStep::PipelineFinished(result)
    }

    fn closed(&mut self) -> SessionStep {
        self.state = State::Closed;
        SessionStep::Closed(match self.close_error.clone() {
            Some(error) => Err(error),
            None => Ok(()),
        })
    }

    fn receive_pool(&mut self, shell: Uuid, ids: &mut impl IdGenerator) -> SessionStep {
        self.state = State::ExpectPoolOpened { shell };
        let request = self.wire.receive(shell, None, ids);
        SessionStep::Send(self.issue(request))
    }

    fn receive_pipeline(
        &mut self,
        shell: Uuid,
        command: Uuid,
        ids: &mut impl IdGenerator,
    ) -> SessionStep {
        self.state = State::ExpectPipelineOutput { shell, command };
        let request = self.wire.receive(shell, Some(command), ids);
        SessionStep::Send(self.issue(request))
    }

    fn send_next_or_receive(
        &mut self,
        shell: Uuid,
        command: Uuid,
        ids: &mut impl IdGenerator,
    ) -> SessionStep {
        let Some(data) = self.pending_sends.pop_front() else {
            return self.receive_pipeline(shell, command, ids);
        };
        self.state = State::ExpectSendAck { shell, command };
        let request = self.wire.send(shell, command, data, ids);
        SessionStep::Send(self.issue(request))
    }

    /// Signal `Terminate`: the host forgets the command (R:test_psrp_multiple_invocations;
    /// PowerShell's client closes each command the same way).
    fn terminate(&mut self, shell: Uuid, command: Uuid, ids: &mut impl IdGenerator) -> SessionStep {
        self.state = State::ExpectTerminated { shell };
        self.pending_sends.clear();
        let request = self.wire.signal(shell, command, SignalCode::Terminate, ids);
        SessionStep::Send(self.issue(request))
    }

    fn delete(&mut self, shell: Uuid, ids: &mut impl IdGenerator) -> Box<Request> {
        self.state = State::ExpectDeleted { shell };
        let request = self.wire.delete(shell, ids);
        self.issue(request)
    }

    /// Records `request` as the outstanding main request.
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
            State::ExpectTerminated { .. } | State::ExpectSignalled { .. } => Operation::Signal,
            State::Ready { .. } | State::ExpectDeleted { .. } | State::Closed => Operation::Delete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SequentialIds;
    use crate::psrp::client::tests::{ENDPOINT, Host};
    use crate::psrp::messages::{ErrorRecord, PsInvocationState, RunspacePoolState};
    use crate::wsman::{Action, RequestBody, WsmanFault};

    /// Sends `request` and whatever follows to `host` until the machine stops asking,
    /// answering pipeline Receives with `pipeline` and the rest the usual way.
    fn drive(
        session: &mut PsrpSession,
        host: &mut Host,
        ids: &mut SequentialIds,
        request: Box<Request>,
        pipeline: &mut dyn FnMut(&mut Host, &Request) -> ResponseBody,
    ) -> SessionStep {
        let mut next = request;
        loop {
            host.learn(&next);
            let body = match &next.body {
                RequestBody::Receive(r) if r.command_id.is_some() => pipeline(host, &next),
                _ => host.usual(&next),
            };
            let response = host.answer(&next, body);
            match session.handle(response, ids) {
                SessionStep::Send(request) => next = request,
                other => return other,
            }
        }
    }

    /// A pipeline Receive answered with `texts` as output and Completed.
    fn outputs(texts: &'static [&'static str]) -> impl FnMut(&mut Host, &Request) -> ResponseBody {
        move |host, _| {
            let mut messages: Vec<_> = texts.iter().map(|t| host.output(t)).collect();
            messages.push(host.state(PsInvocationState::Completed, None));
            let blob = host.fragments(&messages).concat();
            host.pipeline_output(vec![blob], true)
        }
    }

    fn opened() -> (PsrpSession, Host, SequentialIds) {
        let mut ids = SequentialIds::default();
        let mut host = Host::new();
        let (mut session, create) = PsrpSession::open(PsrpSettings::new(ENDPOINT), &mut ids);
        assert_eq!(create.header.action, Action::Create);
        let step = drive(&mut session, &mut host, &mut ids, create, &mut |_, _| {
            panic!("no pipeline yet")
        });
        assert_eq!(step, SessionStep::Opened);
        assert!(session.is_ready());
        assert_eq!(session.shell_id(), Some(host.rpid));
        (session, host, ids)
    }

    fn drain(session: &mut PsrpSession) -> Vec<PsrpEvent> {
        std::iter::from_fn(|| session.poll_event()).collect()
    }

    fn texts(events: &[PsrpEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                PsrpEvent::Output(v) => Some(v.display_text().into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_pool_runs_pipelines_one_after_another_then_is_deleted() {
        let (mut session, mut host, mut ids) = opened();
        let events = drain(&mut session);
        assert!(matches!(events[0], PsrpEvent::ShellCreated { .. }));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, PsrpEvent::PsVersionTable(_)))
        );

        for (script, expected) in [("$x = 5", &[][..]), ("$x * 2", &["10"][..])] {
            let command = session.run(&ScriptSpec::new(script), &mut ids).unwrap();
            assert!(session.is_running());
            let step = drive(
                &mut session,
                &mut host,
                &mut ids,
                command,
                &mut outputs(if expected.is_empty() { &[] } else { &["10"] }),
            );
            let SessionStep::PipelineFinished(Ok(outcome)) = step else {
                panic!("{step:?}")
            };
            assert_eq!(outcome.state, PsInvocationState::Completed);
            assert_eq!(texts(&drain(&mut session)), expected);
            assert!(session.is_ready());
            // The host got the script as a CREATE_PIPELINE of its own.
            let Some(crate::psrp::PsrpMessage::CreatePipeline(p)) = host.received.last() else {
                panic!()
            };
            assert_eq!(p.pipeline.commands[0].command, script);
        }
        assert_eq!(session.pipelines_run(), 2);

        let delete = session.close(&mut ids).unwrap();
        assert_eq!(
            delete.header.resource_uri,
            "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
        );
        let step = drive(
            &mut session,
            &mut host,
            &mut ids,
            delete,
            &mut |_, _| panic!(),
        );
        assert_eq!(step, SessionStep::Closed(Ok(())));
        assert!(session.is_closed());
        assert_eq!(
            drain(&mut session),
            [PsrpEvent::ShellDeleted {
                shell_id: host.rpid
            }]
        );
        // One Create, then per pipeline Command, Receive and a Terminate that releases
        // the command (R:test_psrp_multiple_invocations), and one Delete.
        let pipeline = [
            (Action::Command, None),
            (Action::Receive, None),
            (Action::Signal, Some(SignalCode::Terminate)),
        ];
        let mut expected = vec![(Action::Create, None), (Action::Receive, None)];
        expected.extend(pipeline.clone());
        expected.extend(pipeline);
        expected.push((Action::Delete, None));
        assert_eq!(host.log, expected);
    }

    #[test]
    fn a_stop_beside_the_held_receive_stops_the_pipeline_not_the_pool() {
        let (mut session, mut host, mut ids) = opened();
        let command = session
            .run(&ScriptSpec::new("Start-Sleep 30"), &mut ids)
            .unwrap();
        assert!(
            session.stop(&mut ids).is_none(),
            "no acknowledged command yet"
        );
        host.learn(&command);
        let body = host.usual(&command);
        let Some(SessionStep::Send(receive)) =
            Some(session.handle(host.answer(&command, body), &mut ids))
        else {
            panic!()
        };
        assert!(matches!(&receive.body, RequestBody::Receive(r) if r.command_id == Some(host.pid)));
        // The Receive is held by the host; the stop goes beside it.
        let signal = session.stop(&mut ids).unwrap();
        let RequestBody::Signal(sig) = &signal.body else {
            panic!("{:?}", signal.body)
        };
        assert_eq!(sig.code, SignalCode::PsCtrlC);
        assert_eq!(sig.command_id, Some(host.pid));
        assert!(session.stop(&mut ids).is_none(), "one stop per pipeline");
        assert!(session.stop_outstanding());
        // A stop whose connection failed may be asked for again.
        session.stop_failed();
        let signal = session.stop(&mut ids).unwrap();
        host.learn(&signal);
        let reply = host.answer(&signal, ResponseBody::SignalResponse);
        assert_eq!(session.handle(reply, &mut ids), SessionStep::Pending);
        assert!(!session.stop_outstanding());
        // The held Receive returns the Stopped state with PipelineStoppedException.
        let step = drive(
            &mut session,
            &mut host,
            &mut ids,
            receive,
            &mut |host, _| {
                let error = ErrorRecord::runtime_exception("The pipeline has been stopped.");
                let blob = host
                    .fragments(&[host.state(PsInvocationState::Stopped, Some(error))])
                    .concat();
                host.pipeline_output(vec![blob], true)
            },
        );
        let SessionStep::PipelineFinished(Ok(outcome)) = step else {
            panic!("{step:?}")
        };
        assert_eq!(outcome.state, PsInvocationState::Stopped);
        assert!(session.is_ready());
        // The pool is still there: the next pipeline runs.
        let command = session.run(&ScriptSpec::new("'after'"), &mut ids).unwrap();
        let step = drive(
            &mut session,
            &mut host,
            &mut ids,
            command,
            &mut outputs(&["after"]),
        );
        assert!(
            matches!(step, SessionStep::PipelineFinished(Ok(_))),
            "{step:?}"
        );
        assert_eq!(texts(&drain(&mut session)), ["after"]);
        assert!(!host.log.iter().any(|(a, _)| *a == Action::Delete));
    }

    #[test]
    fn a_pipeline_fault_ends_the_pipeline_and_keeps_the_pool() {
        let (mut session, mut host, mut ids) = opened();
        let command = session.run(&ScriptSpec::new("x"), &mut ids).unwrap();
        let step = drive(&mut session, &mut host, &mut ids, command, &mut |_, _| {
            ResponseBody::Fault(WsmanFault::max_operations_per_user("host", 15))
        });
        let SessionStep::PipelineFinished(Err(PsrpClientError::Fault { operation, fault })) = step
        else {
            panic!("{step:?}")
        };
        assert_eq!(operation, Operation::Receive);
        assert!(fault.is_quota());
        assert!(session.is_ready());
        assert_eq!(
            host.log.last(),
            Some(&(Action::Signal, Some(SignalCode::Terminate)))
        );

        // A transport failure reported by the caller: the command is released too.
        let command = session.run(&ScriptSpec::new("y"), &mut ids).unwrap();
        host.learn(&command);
        let body = host.usual(&command);
        let SessionStep::Send(_receive) = session.handle(host.answer(&command, body), &mut ids)
        else {
            panic!()
        };
        let step = session.fail_pipeline(
            PsrpClientError::Aborted("connection reset".into()),
            &mut ids,
        );
        let SessionStep::Send(terminate) = step else {
            panic!("{step:?}")
        };
        assert!(
            matches!(&terminate.body, RequestBody::Signal(s) if s.code == SignalCode::Terminate)
        );
        let step = drive(
            &mut session,
            &mut host,
            &mut ids,
            terminate,
            &mut |_, _| panic!(),
        );
        assert_eq!(
            step,
            SessionStep::PipelineFinished(Err(PsrpClientError::Aborted("connection reset".into())))
        );
        assert!(session.is_ready());
    }

    #[test]
    fn a_gone_shell_or_a_broken_pool_ends_the_session() {
        // The shell idled out: the Command is refused with the unknown-shell fault, and
        // there is nothing left to delete.
        let (mut session, mut host, mut ids) = opened();
        let command = session.run(&ScriptSpec::new("x"), &mut ids).unwrap();
        host.learn(&command);
        let reply = host.answer(
            &command,
            ResponseBody::Fault(WsmanFault::shell_not_found("host")),
        );
        let step = session.handle(reply, &mut ids);
        assert!(
            matches!(
                step,
                SessionStep::Closed(Err(PsrpClientError::Fault { .. }))
            ),
            "{step:?}"
        );
        assert!(session.is_closed());
        assert_eq!(host.log.last().map(|l| &l.0), Some(&Action::Command));

        // The pool breaks while opening: its error record, and the shell is deleted.
        let mut ids = SequentialIds::default();
        let mut host = Host::new();
        let (mut session, create) = PsrpSession::open(PsrpSettings::new(ENDPOINT), &mut ids);
        let mut next = create;
        let step = loop {
            host.learn(&next);
            let body = match &next.body {
                RequestBody::Receive(_) => {
                    let error = ErrorRecord::runtime_exception("module failed to load");
                    let messages = host.pool_messages(RunspacePoolState::Broken, Some(error));
                    let blob = host.fragments(&messages).concat();
                    host.pool_output(vec![blob])
                }
                _ => host.usual(&next),
            };
            match session.handle(host.answer(&next, body), &mut ids) {
                SessionStep::Send(r) => next = r,
                other => break other,
            }
        };
        let SessionStep::Closed(Err(PsrpClientError::PoolFailed { state, error })) = step else {
            panic!("{step:?}")
        };
        assert_eq!(state, RunspacePoolState::Broken);
        assert_eq!(error.unwrap().message, "module failed to load");
        assert_eq!(host.log.last().map(|l| &l.0), Some(&Action::Delete));
        assert!(drain(&mut session).contains(&PsrpEvent::ShellDeleted {
            shell_id: host.rpid
        }));
    }

    #[test]
    fn calls_out_of_turn_are_refused_and_abort_cleans_up() {
        let mut ids = SequentialIds::default();
        let (mut session, _create) = PsrpSession::open(PsrpSettings::new(ENDPOINT), &mut ids);
        assert_eq!(
            session.run(&ScriptSpec::new("x"), &mut ids),
            Err(SessionUsageError::NotReady {
                state: "creating the shell"
            })
        );
        assert!(session.close(&mut ids).is_err());

        let (mut session, mut host, mut ids) = opened();
        let command = session.run(&ScriptSpec::new("x"), &mut ids).unwrap();
        host.learn(&command);
        let body = host.usual(&command);
        let SessionStep::Send(_receive) = session.handle(host.answer(&command, body), &mut ids)
        else {
            panic!()
        };
        // Giving up mid-pipeline: ctrl_c on the main channel, then Delete.
        let SessionStep::Send(signal) =
            session.abort(PsrpClientError::Aborted("bye".into()), &mut ids)
        else {
            panic!()
        };
        assert!(matches!(&signal.body, RequestBody::Signal(s) if s.code == SignalCode::PsCtrlC));
        let step = drive(
            &mut session,
            &mut host,
            &mut ids,
            signal,
            &mut |_, _| panic!(),
        );
        assert_eq!(
            step,
            SessionStep::Closed(Err(PsrpClientError::Aborted("bye".into())))
        );
        assert_eq!(host.log.last().map(|l| &l.0), Some(&Action::Delete));
    }

    #[test]
    fn a_pipeline_too_big_for_one_envelope_goes_out_as_command_then_sends() {
        let mut ids = SequentialIds::default();
        let mut host = Host::new();
        let settings = PsrpSettings {
            max_envelope_size: 4096,
            ..PsrpSettings::new(ENDPOINT)
        };
        let (mut session, create) = PsrpSession::open(settings, &mut ids);
        let step = drive(
            &mut session,
            &mut host,
            &mut ids,
            create,
            &mut |_, _| panic!(),
        );
        assert_eq!(step, SessionStep::Opened);
        let script = format!("'{}' | Out-Null", "x".repeat(12_000));
        let command = session
            .run(&ScriptSpec::new(script.clone()), &mut ids)
            .unwrap();
        let step = drive(
            &mut session,
            &mut host,
            &mut ids,
            command,
            &mut outputs(&[]),
        );
        assert!(
            matches!(step, SessionStep::PipelineFinished(Ok(_))),
            "{step:?}"
        );
        let sends = host.log.iter().filter(|(a, _)| *a == Action::Send).count();
        assert!(sends >= 3, "{:?}", host.log);
        let Some(crate::psrp::PsrpMessage::CreatePipeline(p)) = host.received.last() else {
            panic!()
        };
        assert_eq!(p.pipeline.commands[0].command, script);
    }
}
