//! The PSRP server of one runspace-pool shell (MS-PSRP 3.1.5.3, 3.2; wire-facts 2.5, 4.x).
//!
//! Create carries SESSION_CAPABILITY and INIT_RUNSPACEPOOL in `creationXml`; the pool
//! answers SESSION_CAPABILITY (nil RPID, as recorded), APPLICATION_PRIVATE_DATA with the
//! host's `$PSVersionTable` and RUNSPACEPOOL_STATE Opened, or Broken with the module-load
//! error record (wire-facts 1.13). A Command carries CREATE_PIPELINE fragments in
//! `rsp:Arguments` (the rest arrive by Send on stdin, R:test_psrp_small_msg_size); once
//! complete (and its input ended, when it takes input) the pipeline runs and its records
//! are released by time through an [`Outbox`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use psfleet_core::psrp::messages::{
    ApplicationPrivateData, Availability, CreatePipeline, ErrorRecord, PipelineStateMessage,
    PsInvocationState, PsrpMessage, RunspaceAvailability, RunspacePoolState,
    RunspacePoolStateMessage, SessionCapability,
};
use psfleet_core::psrp::{Defragmenter, Destination, Message, Value, clixml::Version};
use uuid::Uuid;

use super::output::{Drained, Outbox, ReceiveBudget};
use super::script::PlannedPipeline;
use crate::host::HostSpec;
use crate::powershell::EarlierScript;

/// Pipelines one pool keeps (running or finished and not yet terminated); a client that
/// starts more gets a quota fault instead of growing the host's memory.
pub(super) const MAX_PIPELINES: usize = 64;

/// Most earlier pipelines a pool keeps for its session state, and their most script text
/// in bytes; past either, the oldest are forgotten (the state is then approximate).
const MAX_SESSION_ENTRIES: usize = 256;
const MAX_SESSION_BYTES: usize = 1 << 20;

/// Why a PSRP operation was refused; the service turns it into a WS-Man fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PsrpRefusal {
    /// The PSRP payload could not be read (the parameter is incorrect).
    BadPayload,
    /// No such pipeline (or it already finished and was received).
    UnknownCommand,
    /// Too many pipelines in this pool.
    TooManyPipelines,
}

/// A pipeline ready to run outside the host lock.
#[derive(Debug, Clone)]
pub(super) struct ScriptJob {
    /// The pipeline id (CommandId).
    pub pid: Uuid,
    /// What to run.
    pub create: CreatePipeline,
    /// Its input objects.
    pub input: Vec<Value>,
    /// The pipelines that ran in the pool before it (the session state).
    pub earlier: Arc<Vec<EarlierScript>>,
}

/// What a Receive found.
#[derive(Debug)]
pub(super) enum PsrpReceive {
    /// Something to send; `done` when the pipeline's final PIPELINE_STATE went out.
    Data { drained: Drained, done: bool },
    /// Nothing ready; the next message is due at this time (if any is queued).
    Nothing { next: Option<Duration> },
    /// The pipeline is being started by another request; ask again shortly.
    Starting,
}

/// The PSRP state of a runspace-pool shell.
#[derive(Debug)]
pub(super) struct PsrpShell {
    /// The RunspacePool id (= ShellId).
    pub rpid: Uuid,
    /// A no-language (JEA) endpoint: script commands are refused.
    pub restricted: bool,
    max_runspaces: i32,
    pool_in: Defragmenter,
    pool_out: Outbox,
    /// Server-side fragment object ids: one counter per sender (wire-facts 4.1).
    next_object_id: u64,
    pipelines: BTreeMap<Uuid, Pipeline>,
    /// The scripts that ran in this pool, oldest first: what a pipeline finds in the
    /// session (variables, functions) is what they left (`Invoke-Command -Session`).
    session: Arc<Vec<EarlierScript>>,
    /// The pipeline each session entry came from (to drop a stopped one).
    session_pids: Vec<Uuid>,
}

#[derive(Debug)]
struct Pipeline {
    inbound: Defragmenter,
    phase: Phase,
    outbox: Outbox,
    /// The final PIPELINE_STATE was received by the client (CommandState Done sent).
    delivered: bool,
}

#[derive(Debug)]
enum Phase {
    /// CREATE_PIPELINE fragments still arriving.
    Receiving,
    /// Created with `NoInput` false: collecting PIPELINE_INPUT until END_OF_PIPELINE_INPUT.
    AwaitingInput {
        create: Box<CreatePipeline>,
        input: Vec<Value>,
    },
    /// Handed to the interpreter by a request that has not come back yet.
    Starting,
    /// Its messages are in the outbox.
    Running,
}

impl PsrpShell {
    /// Opens the pool from `creationXml` at `now`. Returns the refusal when the payload
    /// does not hold SESSION_CAPABILITY and INIT_RUNSPACEPOOL.
    pub(super) fn open(
        rpid: Uuid,
        creation_xml: &[u8],
        host: &HostSpec,
        restricted: bool,
        now: Duration,
    ) -> Result<Self, PsrpRefusal> {
        let mut defrag = Defragmenter::new();
        let mut capability = None;
        let mut init = None;
        for message in decode_all(&mut defrag, creation_xml)? {
            match message {
                PsrpMessage::SessionCapability(c) => capability = Some(c),
                PsrpMessage::InitRunspacePool(i) => init = Some(i),
                _ => {}
            }
        }
        let (Some(_client), Some(init)) = (capability, init) else {
            return Err(PsrpRefusal::BadPayload);
        };
        let mut shell = Self {
            rpid,
            restricted,
            max_runspaces: init.max_runspaces,
            pool_in: Defragmenter::new(),
            pool_out: Outbox::default(),
            next_object_id: 1,
            pipelines: BTreeMap::new(),
            session: Arc::new(Vec::new()),
            session_pids: Vec::new(),
        };
        let capability = SessionCapability {
            protocol_version: Version::from_text(host.powershell.protocol_version.clone()),
            ..SessionCapability::default()
        };
        // Windows sends its SESSION_CAPABILITY with a nil RPID (R:test_psrp_open_runspace).
        shell.queue_pool(now, &capability.encode(Destination::Client, Uuid::nil()));
        let data =
            ApplicationPrivateData::from_version_table(crate::powershell::version_table(host));
        shell.queue_pool(now, &data.encode(rpid));
        let state = if host.powershell.modules_fail {
            RunspacePoolStateMessage {
                state: RunspacePoolState::Broken,
                error: Some(crate::powershell::module_load_failure(host)),
            }
        } else {
            RunspacePoolStateMessage {
                state: RunspacePoolState::Opened,
                error: None,
            }
        };
        // Windows answers the first Receive with the capability exchange and the next one
        // with the pool's state (R:test_psrp_open_runspace).
        shell
            .pool_out
            .push_in_next_response(now, &state.encode(rpid), &mut shell.next_object_id);
        Ok(shell)
    }

    /// Starts pipeline `pid` with the first CREATE_PIPELINE fragments (from a Command).
    pub(super) fn command(
        &mut self,
        pid: Uuid,
        fragments: &[u8],
    ) -> Result<Option<ScriptJob>, PsrpRefusal> {
        if !self.pipelines.contains_key(&pid) && self.pipelines.len() >= MAX_PIPELINES {
            // Forget pipelines whose outcome the client already has before refusing.
            self.pipelines.retain(|_, p| !p.delivered);
            if self.pipelines.len() >= MAX_PIPELINES {
                return Err(PsrpRefusal::TooManyPipelines);
            }
        }
        self.pipelines.insert(
            pid,
            Pipeline {
                inbound: Defragmenter::new(),
                phase: Phase::Receiving,
                outbox: Outbox::default(),
                delivered: false,
            },
        );
        self.pipeline_input(pid, fragments)
    }

    /// Input on stdin: pool messages when `command` is `None`, else more CREATE_PIPELINE
    /// fragments or pipeline input.
    pub(super) fn send(
        &mut self,
        command: Option<Uuid>,
        data: &[u8],
        now: Duration,
    ) -> Result<Option<ScriptJob>, PsrpRefusal> {
        match command {
            Some(pid) => self.pipeline_input(pid, data),
            None => {
                self.pool_input(data, now)?;
                Ok(None)
            }
        }
    }

    /// Puts a pipeline's planned messages in its outbox, released from `started_at`.
    /// Ignored when the pipeline was stopped or removed while it ran.
    pub(super) fn install(&mut self, pid: Uuid, plan: PlannedPipeline, started_at: Duration) {
        let Some(pipeline) = self.pipelines.get_mut(&pid) else {
            return;
        };
        if !matches!(pipeline.phase, Phase::Starting) {
            return;
        }
        pipeline.phase = Phase::Running;
        let last = plan.messages.len().saturating_sub(1);
        for (i, (at, message)) in plan.messages.iter().enumerate() {
            pipeline.outbox.push(
                started_at.saturating_add(*at),
                message,
                &mut self.next_object_id,
                i == last,
            );
        }
        if let Some(entry) = plan.session_entry {
            self.remember(pid, entry);
        }
    }

    /// Receive: the pool's messages (`command` `None`) or a pipeline's.
    pub(super) fn receive(
        &mut self,
        command: Option<Uuid>,
        now: Duration,
        budget: &mut ReceiveBudget,
    ) -> Result<PsrpReceive, PsrpRefusal> {
        let Some(pid) = command else {
            if !self.pool_out.has_ready(now) {
                return Ok(PsrpReceive::Nothing {
                    next: self.pool_out.next_ready_at(),
                });
            }
            let drained = self.pool_out.drain(now, budget, None);
            return Ok(PsrpReceive::Data {
                drained,
                done: false,
            });
        };
        let pipeline = self
            .pipelines
            .get_mut(&pid)
            .filter(|p| !p.delivered)
            .ok_or(PsrpRefusal::UnknownCommand)?;
        if matches!(pipeline.phase, Phase::Starting) {
            return Ok(PsrpReceive::Starting);
        }
        if !pipeline.outbox.has_ready(now) {
            return Ok(PsrpReceive::Nothing {
                next: pipeline.outbox.next_ready_at(),
            });
        }
        let drained = pipeline.outbox.drain(now, budget, Some(pid));
        let done = drained.terminal_sent;
        pipeline.delivered = done;
        Ok(PsrpReceive::Data { drained, done })
    }

    /// Stops a pipeline (`powershell/signal/ctrl_c`, R:test_psrp_nested_command): what it
    /// had not produced by `now` is dropped and PIPELINE_STATE Stopped follows. A pipeline
    /// that already finished is left as it is.
    pub(super) fn stop(&mut self, pid: Uuid, now: Duration) -> Result<(), PsrpRefusal> {
        let rpid = self.rpid;
        let pipeline = self
            .pipelines
            .get_mut(&pid)
            .ok_or(PsrpRefusal::UnknownCommand)?;
        if pipeline.delivered || pipeline.outbox.terminal_ready(now) {
            return Ok(());
        }
        pipeline.outbox.discard_after(now);
        pipeline.phase = Phase::Running;
        // A stopped pipeline leaves nothing in the session (its effects are treated as
        // not having happened; the interpreter runs a script whole).
        if let Some(at) = self.session_pids.iter().position(|p| *p == pid) {
            self.session_pids.remove(at);
            Arc::make_mut(&mut self.session).remove(at);
        }
        let stopped = PipelineStateMessage {
            state: PsInvocationState::Stopped,
            error: Some(pipeline_stopped_error()),
        };
        pipeline.outbox.push(
            now,
            &stopped.encode(rpid, pid),
            &mut self.next_object_id,
            true,
        );
        Ok(())
    }

    /// Forgets a pipeline (`signal/Terminate`, pypsrp's cleanup between invocations).
    pub(super) fn terminate(&mut self, pid: Uuid) -> Result<(), PsrpRefusal> {
        self.pipelines
            .remove(&pid)
            .map(|_| ())
            .ok_or(PsrpRefusal::UnknownCommand)
    }

    /// The ids of the pipelines the client can still receive from (for Enumerate).
    pub(super) fn pipeline_ids(&self) -> Vec<Uuid> {
        self.pipelines
            .iter()
            .filter(|(_, p)| !p.delivered)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Adds a pipeline's script to the session state, forgetting the oldest past the caps.
    fn remember(&mut self, pid: Uuid, entry: EarlierScript) {
        let session = Arc::make_mut(&mut self.session);
        session.push(entry);
        self.session_pids.push(pid);
        let mut bytes: usize = session.iter().map(|e| e.script.len()).sum();
        while session.len() > MAX_SESSION_ENTRIES
            || (bytes > MAX_SESSION_BYTES && session.len() > 1)
        {
            bytes = bytes.saturating_sub(session.remove(0).script.len());
            self.session_pids.remove(0);
        }
    }

    fn queue_pool(&mut self, now: Duration, message: &Message) {
        self.pool_out
            .push(now, message, &mut self.next_object_id, false);
    }

    fn pipeline_input(&mut self, pid: Uuid, data: &[u8]) -> Result<Option<ScriptJob>, PsrpRefusal> {
        let earlier = Arc::clone(&self.session);
        let pipeline = self
            .pipelines
            .get_mut(&pid)
            .ok_or(PsrpRefusal::UnknownCommand)?;
        for message in decode_all(&mut pipeline.inbound, data)? {
            let phase = std::mem::replace(&mut pipeline.phase, Phase::Running);
            let (next, job) = match (phase, message) {
                (Phase::Receiving, PsrpMessage::CreatePipeline(create)) if create.no_input => (
                    Phase::Starting,
                    Some(ScriptJob {
                        pid,
                        create,
                        input: Vec::new(),
                        earlier: Arc::clone(&earlier),
                    }),
                ),
                (Phase::Receiving, PsrpMessage::CreatePipeline(create)) => (
                    Phase::AwaitingInput {
                        create: Box::new(create),
                        input: Vec::new(),
                    },
                    None,
                ),
                (Phase::AwaitingInput { create, mut input }, PsrpMessage::PipelineInput(i)) => {
                    // Bounded by the Defragmenter's limits and by MaxEnvelopeSizekb on
                    // every request.
                    input.push(i.value);
                    (Phase::AwaitingInput { create, input }, None)
                }
                (Phase::AwaitingInput { create, input }, PsrpMessage::EndOfPipelineInput) => (
                    Phase::Starting,
                    Some(ScriptJob {
                        pid,
                        create: *create,
                        input,
                        earlier: Arc::clone(&earlier),
                    }),
                ),
                // Host responses and anything unexpected carry nothing this host acts on.
                (phase, _) => (phase, None),
            };
            pipeline.phase = next;
            if job.is_some() {
                return Ok(job);
            }
        }
        Ok(None)
    }

    /// Pool messages from the client (MS-PSRP 3.2.5.3): SET_MAX/MIN_RUNSPACES,
    /// GET_AVAILABLE_RUNSPACES and RESET_RUNSPACE_STATE get RUNSPACE_AVAILABILITY.
    fn pool_input(&mut self, data: &[u8], now: Duration) -> Result<(), PsrpRefusal> {
        let rpid = self.rpid;
        let mut replies = Vec::new();
        for message in decode_all(&mut self.pool_in, data)? {
            let (response, call_id) = match message {
                PsrpMessage::SetMaxRunspaces(m) => {
                    self.max_runspaces = m.max_runspaces;
                    (Availability::Succeeded(true), m.call_id)
                }
                PsrpMessage::SetMinRunspaces(m) => (Availability::Succeeded(true), m.call_id),
                PsrpMessage::ResetRunspaceState(m) => (Availability::Succeeded(true), m.call_id),
                PsrpMessage::GetAvailableRunspaces(m) => (
                    Availability::Available(i64::from(self.max_runspaces)),
                    m.call_id,
                ),
                _ => continue,
            };
            replies.push(RunspaceAvailability { response, call_id }.encode(rpid));
        }
        for reply in &replies {
            self.queue_pool(now, reply);
        }
        Ok(())
    }
}

/// Feeds a blob of client fragments and decodes what completes.
fn decode_all(defrag: &mut Defragmenter, blob: &[u8]) -> Result<Vec<PsrpMessage>, PsrpRefusal> {
    let mut out = Vec::new();
    for raw in defrag
        .push_blob(blob)
        .map_err(|_| PsrpRefusal::BadPayload)?
    {
        let message = Message::decode(&raw).map_err(|_| PsrpRefusal::BadPayload)?;
        out.push(PsrpMessage::decode(&message).map_err(|_| PsrpRefusal::BadPayload)?);
    }
    Ok(out)
}

/// The error a stopped pipeline carries (PowerShell's `PipelineStoppedException`).
fn pipeline_stopped_error() -> ErrorRecord {
    let message = "The pipeline has been stopped.";
    ErrorRecord {
        fully_qualified_error_id: "PipelineStopped".to_owned(),
        category: 14, // OperationStopped
        reason: Some("PipelineStoppedException".to_owned()),
        target_name: Some(String::new()),
        target_type: Some(String::new()),
        category_message: Some("OperationStopped: (:) [], PipelineStoppedException".to_owned()),
        exception_type_names: [
            "System.Management.Automation.PipelineStoppedException",
            "System.Management.Automation.RuntimeException",
            "System.SystemException",
            "System.Exception",
            "System.Object",
        ]
        .map(str::to_owned)
        .to_vec(),
        exception_message: Some(message.to_owned()),
        target_object: None,
        message: message.to_owned(),
        ..ErrorRecord::runtime_exception(message)
    }
}
