//! The WS-Man service of one simulated host: what happens to an authenticated, decrypted SOAP
//! request. Synchronous and clock-free: the network layer passes the times in and does the
//! waiting, so the service is testable without sockets.
//!
//! Contract with the network layer (`server`):
//! - the network layer authenticates, decrypts, applies latency, flakiness and the
//!   MaxEnvelopeSizekb check (HTTP 413), and answers unauthenticated Identify itself through
//!   [`HostService::identify`];
//! - it calls [`HostService::handle`] with the canonical account name and the plaintext body;
//! - on [`ServiceReply::WaitUntil`] it sleeps until that time (measured on the same clock as
//!   `now`) and calls `handle` again with the same request and a later `now`; the service answers
//!   the WS-Man TimedOut fault itself once `received_at + OperationTimeout` has passed.
//!
//! What the service does (wire-facts sections 1, 2, 4 and 7):
//! - Create of the cmd shell or a registered PowerShell session configuration, refused
//!   with the Windows faults for an unknown configuration (2150858811), a non-admin
//!   account or Disable-PSRemoting (Access is denied, 5) and the per-user quotas
//!   (MaxShellsPerUser 2150859173, MaxConcurrentUsers 2150859179,
//!   MaxConcurrentOperationsPerUser 2150859174);
//! - IdleTimeout: a shell nobody used for longer is gone (2150858843 afterwards);
//! - WS-Transfer Get of `winrm/config` (the host's real quotas) and of a shell; Enumerate
//!   and Pull of the user's shells (or of one shell's commands); Delete; Disconnect and
//!   Reconnect;
//! - WinRS: Command, Send (stdin), Receive (output chunked to the client's
//!   MaxEnvelopeSize, `CommandState` Done with the exit code), Signal;
//! - PSRP: the runspace pool opens (or breaks) from `creationXml`, pipelines run in the
//!   PowerShell subset and their records are released by time, fragmented to fit the
//!   client's MaxEnvelopeSize; ctrl_c stops a pipeline;
//! - Receive waits ([`ServiceReply::WaitUntil`]) until output is due or OperationTimeout
//!   passes (TimedOut 2150858793).
//!
//! All state of a host sits behind one mutex, held for short sections: scripts and cmd
//! commands run outside it.

mod counters;
mod output;
mod psrp;
mod script;
mod shells;
mod winrs;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use psfleet_core::wsman::{
    Action, ClientMessage, CommandLine, CommandResponse, CommandState, CommandStateInfo,
    CreateResponse, CreateShell, Enumerate, EnumerationBatch, EnumerationItem, FaultCode,
    FaultSubcode, FaultValue, GetResponse, OperationTimeout, ProviderFault, ProviderFaultContent,
    Pull, Receive, ReceiveResponse, Request, RequestBody, Response, ResponseBody, Selector, Send,
    ShellState, Signal, SignalCode, WsmanFault, resources,
};
use uuid::Uuid;

pub use counters::{Counts, FleetCounters, HostCounters};

use crate::host::HostSpec;
use output::ReceiveBudget;
use psrp::{PsrpReceive, PsrpRefusal, PsrpShell, ScriptJob};
use shells::{HostState, InFlight, QuotaExceeded, Shell, ShellKind, Target};
use winrs::{CmdJob, CmdReceive, CmdRefusal, CmdShell};

/// One authenticated request to the service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceRequest<'a> {
    /// The canonical account name the request authenticated as.
    pub user: &'a str,
    /// The plaintext SOAP envelope.
    pub body: &'a [u8],
    /// When the request arrived (time since the fleet started).
    pub received_at: Duration,
    /// Now (time since the fleet started).
    pub now: Duration,
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceReply {
    /// Send this status and SOAP body (the network layer seals it when the session is
    /// encrypted).
    Respond {
        /// HTTP status (200, or 500 for faults).
        status: u16,
        /// The SOAP envelope.
        body: Vec<u8>,
    },
    /// Nothing is ready yet: call `handle` again at this time.
    WaitUntil(Duration),
}

/// The WS-Man service of one host; shared by all connections to it.
#[derive(Debug)]
pub struct HostService {
    spec: Arc<HostSpec>,
    state: Mutex<HostState>,
    /// Woken after every request that is not a Receive: a Receive held open
    /// ([`ServiceReply::WaitUntil`]) asks again at once, as Windows answers a held Receive
    /// as soon as a Signal (ctrl_c), a Send or a Delete gives it something to say.
    changed: tokio::sync::Notify,
}

/// OperationTimeout when a request carries none: Windows' MaxTimeoutms default (60 s,
/// R:test_wsman_update_envelope_size_500).
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// IdleTimeout when the host's config has none (Windows' `PT7200.000S`, R:test_winrs_standard).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(7200);

/// MaxEnvelopeSize when a request carries none: the host's MaxEnvelopeSizekb, else 150 KiB.
const DEFAULT_MAX_ENVELOPE: usize = 153_600;

/// How soon a Receive asks again while another request of the same host runs the command
/// it waits for (only between the two halves of that other request).
const RETRY_SOON: Duration = Duration::from_millis(2);

/// `ERROR_WSMAN_ACTION_NOT_SUPPORTED` (windows-sys RemoteManagement constants).
const ACTION_NOT_SUPPORTED: u32 = 2_150_858_771;

/// Jobs one request may run (a Send can complete one pipeline; a Receive may start a
/// command and then read it).
const MAX_JOB_ROUNDS: usize = 3;

impl HostService {
    /// A service with no open shells.
    pub fn new(spec: Arc<HostSpec>) -> Self {
        let state = Mutex::new(HostState::new(&spec));
        Self {
            spec,
            state,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Notified after every request that is not a Receive (see the field).
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// The host this service simulates.
    pub fn spec(&self) -> &HostSpec {
        &self.spec
    }

    /// The Identify response body for an unauthenticated Identify (`WSMANIDENTIFY:
    /// unauthenticated`): MS-WSMV 3.1.4.1.23 forbids `wsmid:SecurityProfiles` in it
    /// (wire-facts 2.2). An authenticated Identify goes through [`HostService::handle`] and
    /// lists the profiles.
    pub fn identify(&self) -> Vec<u8> {
        psfleet_core::wsman::IdentifyResponse {
            security_profiles: None,
            ..self.identify_authenticated()
        }
        .to_xml()
    }

    /// The authenticated Identify reply: the security profiles the host's auth settings
    /// offer (Basic, and spnego-kerberos for Negotiate or Kerberos, MS-WSMV 3.1.4.1.29.2).
    fn identify_authenticated(&self) -> psfleet_core::wsman::IdentifyResponse {
        let auth = &self.spec.auth;
        let mut profiles = Vec::new();
        if auth.basic {
            profiles.push(resources::SECURITY_PROFILE_HTTP_BASIC.to_owned());
        }
        if auth.negotiate || auth.kerberos {
            profiles.push(resources::SECURITY_PROFILE_HTTP_SPNEGO_KERBEROS.to_owned());
        }
        psfleet_core::wsman::IdentifyResponse::new(
            self.spec.os.identify_product_version.clone(),
            profiles,
        )
    }

    /// A snapshot of the host's counters (shells that idled past their IdleTimeout are
    /// dropped when the next request arrives; see [`HostService::counters_at`]).
    pub fn counters(&self) -> HostCounters {
        self.lock().counters.clone()
    }

    /// Like [`HostService::counters`], first dropping shells idle past their IdleTimeout
    /// at `now` (the same clock as [`ServiceRequest::now`]).
    pub fn counters_at(&self, now: Duration) -> HostCounters {
        let mut state = self.lock();
        state.sweep(now);
        state.counters.clone()
    }

    /// Handles one authenticated request.
    pub fn handle(&self, request: &ServiceRequest<'_>) -> ServiceReply {
        let parsed = match ClientMessage::parse(request.body) {
            Ok(ClientMessage::Request(parsed)) => parsed,
            Ok(ClientMessage::Identify(_)) => {
                return ServiceReply::Respond {
                    status: 200,
                    body: self.identify_authenticated().to_xml(),
                };
            }
            Err(_) => {
                let fault = invalid_parameter(self.machine());
                let mut state = self.lock();
                let id = state.ids.next_id();
                drop(state);
                return envelope(Uuid::nil(), id, ResponseBody::Fault(fault));
            }
        };
        let budget = match &parsed.body {
            RequestBody::Receive(receive) => Some(ReceiveBudget::new(
                self.max_envelope_of(&parsed),
                receive.command_id,
            )),
            _ => None,
        };
        let ctx = Ctx {
            budget,
            user: request.user,
            now: request.now,
            received_at: request.received_at,
            request: &parsed,
            machine: self.machine(),
        };
        let mut state = self.lock();
        let mut flow = self.dispatch(&mut state, &ctx);
        if !matches!(parsed.body, RequestBody::Receive(_)) {
            self.changed.notify_waiters();
        }
        for _ in 0..MAX_JOB_ROUNDS {
            let Flow::Run(jobs, then) = flow else {
                break;
            };
            // Scripts and commands run without the host lock (short critical sections).
            drop(state);
            let done: Vec<Done> = jobs.into_iter().map(|job| self.run(job)).collect();
            state = self.lock();
            for result in done {
                self.install(&mut state, result, ctx.now);
            }
            flow = match then {
                Then::Reply(body) => Flow::Reply(*body),
                Then::Receive => self.dispatch(&mut state, &ctx),
            };
        }
        let message_id = parsed.header.message_id;
        let reply = match flow {
            Flow::Wait(at) => {
                state.in_flight.insert(
                    message_id,
                    InFlight {
                        user: ctx.user.to_owned(),
                        shell: parsed.header.shell_id(),
                        deadline: ctx.deadline(),
                    },
                );
                return ServiceReply::WaitUntil(at);
            }
            Flow::Reply(body) => body,
            Flow::Run(..) => ResponseBody::Fault(internal_error(ctx.machine)),
        };
        if state.in_flight.remove(&message_id).is_some()
            && let Some(shell) = parsed
                .header
                .shell_id()
                .and_then(|id| state.shells.get_mut(&id))
        {
            shell.last_activity = shell.last_activity.max(ctx.now);
        }
        let response_id = state.ids.next_id();
        drop(state);
        envelope(message_id, response_id, reply)
    }

    fn lock(&self) -> MutexGuard<'_, HostState> {
        // A panic while holding the lock cannot leave the table half-updated in a way
        // that matters more than losing the host: keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn machine(&self) -> &str {
        &self.spec.name
    }

    fn dispatch(&self, state: &mut HostState, ctx: &Ctx<'_>) -> Flow {
        state.sweep(ctx.now);
        let header = &ctx.request.header;
        if let Some(OperationTimeout::Invalid(text)) = &header.operation_timeout {
            return fault(WsmanFault::invalid_timeout_header(ctx.machine, text));
        }
        if let Err(quota) = state.check_operation(&self.spec, ctx.user, header.message_id) {
            return self.quota_fault(state, ctx, quota);
        }
        let result = match &ctx.request.body {
            RequestBody::Create(create) => self.create(state, ctx, create),
            RequestBody::Get => self.get(state, ctx),
            RequestBody::Delete => self.delete(state, ctx),
            RequestBody::Enumerate(e) => self.enumerate(state, ctx, e),
            RequestBody::Pull(p) => self.pull(state, ctx, p),
            RequestBody::Command(line) => self.command(state, ctx, line),
            RequestBody::Send(send) => self.send(state, ctx, send),
            RequestBody::Receive(receive) => self.receive(state, ctx, receive),
            RequestBody::Signal(signal) => self.signal(state, ctx, signal),
            RequestBody::Disconnect(_) => self.set_state(state, ctx, ShellState::Disconnected),
            RequestBody::Reconnect => self.set_state(state, ctx, ShellState::Connected),
            RequestBody::Other(_) if header.action == Action::Create => {
                match shells::target(&self.spec, &header.resource_uri) {
                    Target::Unknown => Err(WsmanFault::invalid_resource_uri(
                        ctx.machine,
                        &header.resource_uri,
                    )
                    .into()),
                    _ => Err(invalid_parameter(ctx.machine).into()),
                }
            }
            RequestBody::Connect(_) | RequestBody::Other(_) => {
                Err(action_not_supported(ctx.machine).into())
            }
        };
        result.unwrap_or_else(|f| fault(*f))
    }

    // ----- shells -----

    fn create(&self, state: &mut HostState, ctx: &Ctx<'_>, create: &CreateShell) -> Outcome {
        let header = &ctx.request.header;
        let target = shells::target(&self.spec, &header.resource_uri);
        let (resource_uri, configuration) = match &target {
            Target::Unknown => {
                return Err(
                    WsmanFault::invalid_resource_uri(ctx.machine, &header.resource_uri).into(),
                );
            }
            Target::Cmd => (resources::CMD_SHELL.to_owned(), None),
            Target::Psrp(name) => (resources::powershell(name), Some(name.clone())),
        };
        // wire-facts 1.1: the plugin ACL denies non-administrators; Disable-PSRemoting
        // denies network logons to the session configurations.
        if !self.is_admin(ctx.user) || (configuration.is_some() && !self.spec.remoting_enabled) {
            return Err(WsmanFault::access_denied(ctx.machine).into());
        }
        if let Err(quota) = state.check_new_shell(&self.spec, ctx.user) {
            return Ok(self.quota_fault(state, ctx, quota));
        }
        let id = match create.shell_id {
            Some(id) if state.shells.contains_key(&id) => {
                return Err(invalid_parameter(ctx.machine).into());
            }
            Some(id) => id,
            None => state.ids.next_id(),
        };
        let kind = match &configuration {
            None => ShellKind::Cmd(CmdShell::default()),
            Some(name) => {
                // JEA endpoints run in no-language mode; the built-in ones do not.
                let restricted = !name.to_ascii_lowercase().starts_with("microsoft.");
                let creation = create.creation_xml.as_deref().unwrap_or_default();
                match PsrpShell::open(id, creation, &self.spec, restricted, ctx.now) {
                    Ok(shell) => ShellKind::Psrp(Box::new(shell)),
                    Err(_) => return Err(invalid_parameter(ctx.machine).into()),
                }
            }
        };
        let host_idle = self
            .spec
            .winrm
            .winrs
            .as_ref()
            .and_then(|w| w.idle_timeout_ms)
            .map_or(DEFAULT_IDLE_TIMEOUT, |ms| {
                Duration::from_millis(u64::from(ms))
            });
        let process_id = state.ids.process_id();
        let shell = Shell {
            id,
            owner: ctx.user.to_owned(),
            resource_uri: resource_uri.clone(),
            created_at: ctx.now,
            last_activity: ctx.now,
            // A client may ask for less than the host's IdleTimeout, never for more.
            idle_timeout: create.idle_timeout.map_or(host_idle, |d| d.min(host_idle)),
            state: ShellState::Connected,
            process_id,
            input_streams: non_empty(&create.input_streams, &["stdin"]),
            output_streams: non_empty(&create.output_streams, &["stdout", "stderr"]),
            environment: create.environment.clone(),
            working_directory: create.working_directory.clone(),
            kind,
        };
        let info = shell.info(&self.spec, ctx.now, false);
        state.insert(shell);
        Ok(Flow::Reply(ResponseBody::CreateResponse(CreateResponse {
            address: header.to.clone(),
            resource_uri: Some(resource_uri),
            selectors: vec![Selector::shell_id(&id)],
            shell: Some(info),
        })))
    }

    fn get(&self, state: &mut HostState, ctx: &Ctx<'_>) -> Outcome {
        let header = &ctx.request.header;
        if shells::same_resource(&header.resource_uri, resources::CONFIG) {
            // Reading the config needs an administrator (wire-facts 2.3).
            if !self.is_admin(ctx.user) {
                return Err(WsmanFault::access_denied(ctx.machine).into());
            }
            return Ok(Flow::Reply(ResponseBody::GetResponse(GetResponse::Config(
                self.spec.winrm.clone(),
            ))));
        }
        let Some(id) = header.shell_id() else {
            return Err(WsmanFault::invalid_resource_uri(ctx.machine, &header.resource_uri).into());
        };
        // Shell status: Get on the shell resource with its ShellId (wire-facts 2.5).
        match state.shells.get(&id) {
            Some(shell)
                if shell.owner == ctx.user
                    && (shells::same_resource(&header.resource_uri, resources::SHELLS)
                        || shells::same_resource(&header.resource_uri, &shell.resource_uri)) =>
            {
                let info = shell.info(&self.spec, ctx.now, true);
                Ok(Flow::Reply(ResponseBody::GetResponse(GetResponse::Shell(
                    info,
                ))))
            }
            _ => Err(WsmanFault::shell_not_found(ctx.machine).into()),
        }
    }

    fn delete(&self, state: &mut HostState, ctx: &Ctx<'_>) -> Outcome {
        let header = &ctx.request.header;
        if header.shell_id().is_none() {
            return Err(WsmanFault::invalid_resource_uri(ctx.machine, &header.resource_uri).into());
        }
        let id = self.shell_mut(state, ctx)?.id;
        state.delete(id);
        Ok(Flow::Reply(ResponseBody::DeleteResponse))
    }

    fn set_state(&self, state: &mut HostState, ctx: &Ctx<'_>, to: ShellState) -> Outcome {
        let shell = self.shell_mut(state, ctx)?;
        shell.state = to.clone();
        Ok(Flow::Reply(match to {
            ShellState::Disconnected => ResponseBody::DisconnectResponse,
            _ => ResponseBody::ReconnectResponse,
        }))
    }

    /// Enumerate of the shell resource: the user's shells, or with a ShellId filter that
    /// shell's commands (R:test_psrp_disconnect_runspaces). With OptimizeEnumeration the
    /// first batch comes back at once; the rest by Pull.
    fn enumerate(&self, state: &mut HostState, ctx: &Ctx<'_>, e: &Enumerate) -> Outcome {
        let header = &ctx.request.header;
        if !shells::same_resource(&header.resource_uri, resources::SHELLS) {
            return Err(WsmanFault::invalid_resource_uri(ctx.machine, &header.resource_uri).into());
        }
        let filter_shell = e.filter.as_ref().and_then(|f| {
            f.selectors
                .iter()
                .find(|s| s.name == "ShellId")
                .and_then(|s| psfleet_core::ids::parse(&s.value))
        });
        let mut items: Vec<EnumerationItem> = match filter_shell {
            Some(id) => match state.shells.get(&id).filter(|s| s.owner == ctx.user) {
                Some(shell) => commands_of(shell),
                None => Vec::new(),
            },
            None => state
                .shells
                .values()
                .filter(|s| s.owner == ctx.user)
                .map(|s| EnumerationItem::Shell(Box::new(s.info(&self.spec, ctx.now, true))))
                .collect(),
        };
        let batch = if e.optimize {
            let limit = self.batch_limit(ctx, e.max_elements);
            let rest = items.split_off(limit.min(items.len()));
            EnumerationBatch {
                context: Some(if rest.is_empty() {
                    String::new()
                } else {
                    state.keep_enumeration(rest.clone())
                }),
                end_of_sequence: rest.is_empty(),
                items,
            }
        } else {
            EnumerationBatch {
                context: Some(state.keep_enumeration(items)),
                items: Vec::new(),
                end_of_sequence: false,
            }
        };
        Ok(Flow::Reply(ResponseBody::EnumerateResponse(batch)))
    }

    fn pull(&self, state: &mut HostState, ctx: &Ctx<'_>, pull: &Pull) -> Outcome {
        let Some(index) = state
            .enumerations
            .iter()
            .position(|(context, _)| *context == pull.context)
        else {
            return Err(invalid_parameter(ctx.machine).into());
        };
        let (context, mut items) = state.enumerations.remove(index);
        // WS-Enumeration: a Pull without MaxElements returns one item.
        let limit = self.batch_limit(ctx, Some(pull.max_elements.unwrap_or(1)));
        let rest = items.split_off(limit.min(items.len()));
        let done = rest.is_empty();
        if !done {
            state.enumerations.push((context.clone(), rest));
        }
        Ok(Flow::Reply(ResponseBody::PullResponse(EnumerationBatch {
            context: (!done).then_some(context),
            items,
            end_of_sequence: done,
        })))
    }

    // ----- commands -----

    fn command(&self, state: &mut HostState, ctx: &Ctx<'_>, line: &CommandLine) -> Outcome {
        let next_id = state.ids.next_id();
        let shell = self.shell_mut(state, ctx)?;
        let shell_id = shell.id;
        match &mut shell.kind {
            ShellKind::Cmd(cmd) => {
                let id = line.command_id.unwrap_or(next_id);
                cmd.command(
                    id,
                    line.command.clone().unwrap_or_default(),
                    line.arguments.clone(),
                )
                .map_err(|r| cmd_fault(r, ctx.machine))?;
                Ok(Flow::Reply(ResponseBody::CommandResponse(
                    CommandResponse { command_id: id },
                )))
            }
            ShellKind::Psrp(pool) => {
                // The CommandId is the pipeline id the client chose (wire-facts 2.5).
                let pid = line
                    .command_id
                    .ok_or_else(|| invalid_parameter(ctx.machine))?;
                let fragments = line
                    .psrp_arguments()
                    .map_err(|_| invalid_parameter(ctx.machine))?;
                let job = pool
                    .command(pid, &fragments)
                    .map_err(|r| psrp_fault(r, ctx.machine))?;
                let reply = ResponseBody::CommandResponse(CommandResponse { command_id: pid });
                Ok(match job {
                    Some(job) => {
                        script_flow(shell_id, ctx.user, pool, job, Then::Reply(Box::new(reply)))
                    }
                    None => Flow::Reply(reply),
                })
            }
        }
    }

    fn send(&self, state: &mut HostState, ctx: &Ctx<'_>, send: &Send) -> Outcome {
        let shell = self.shell_mut(state, ctx)?;
        let shell_id = shell.id;
        let mut jobs = Vec::new();
        for stream in &send.streams {
            match &mut shell.kind {
                ShellKind::Cmd(cmd) => {
                    let id = stream
                        .command_id
                        .ok_or_else(|| invalid_parameter(ctx.machine))?;
                    if let Some(job) = cmd
                        .send(id, &stream.data, stream.end.unwrap_or(false))
                        .map_err(|r| cmd_fault(r, ctx.machine))?
                    {
                        jobs.push(Job::Cmd {
                            shell: shell_id,
                            user: ctx.user.to_owned(),
                            job,
                        });
                    }
                }
                // `pr` carries host-call responses; this host makes no host calls.
                ShellKind::Psrp(_) if stream.name == "pr" => {}
                ShellKind::Psrp(pool) => {
                    if let Some(job) = pool
                        .send(stream.command_id, &stream.data, ctx.now)
                        .map_err(|r| psrp_fault(r, ctx.machine))?
                    {
                        jobs.push(Job::Script {
                            shell: shell_id,
                            user: ctx.user.to_owned(),
                            rpid: pool.rpid,
                            restricted: pool.restricted,
                            job,
                        });
                    }
                }
            }
        }
        let reply = ResponseBody::SendResponse;
        Ok(if jobs.is_empty() {
            Flow::Reply(reply)
        } else {
            Flow::Run(jobs, Then::Reply(Box::new(reply)))
        })
    }

    fn receive(&self, state: &mut HostState, ctx: &Ctx<'_>, receive: &Receive) -> Outcome {
        let mut budget = ctx
            .budget
            .clone()
            .unwrap_or_else(|| ReceiveBudget::new(self.max_envelope(ctx), receive.command_id));
        let shell = self.shell_mut(state, ctx)?;
        let shell_id = shell.id;
        match &mut shell.kind {
            ShellKind::Cmd(cmd) => {
                // R:test_winrs_fail_poll_process: Receive without a command is code 87.
                let id = receive
                    .command_id
                    .ok_or_else(|| cmd_plugin_invalid_parameter(ctx.machine))?;
                match cmd
                    .receive(id, &receive.streams, ctx.now, &mut budget)
                    .map_err(|r| cmd_fault(r, ctx.machine))?
                {
                    CmdReceive::Data(response) => {
                        Ok(Flow::Reply(ResponseBody::ReceiveResponse(response)))
                    }
                    CmdReceive::NotYet(at) => Ok(ctx.wait_for(Some(at))),
                    CmdReceive::Starting => Ok(ctx.wait_for(Some(ctx.now + RETRY_SOON))),
                    CmdReceive::Run(job) => Ok(Flow::Run(
                        vec![Job::Cmd {
                            shell: shell_id,
                            user: ctx.user.to_owned(),
                            job,
                        }],
                        Then::Receive,
                    )),
                }
            }
            ShellKind::Psrp(pool) => {
                match pool
                    .receive(receive.command_id, ctx.now, &mut budget)
                    .map_err(|r| psrp_fault(r, ctx.machine))?
                {
                    PsrpReceive::Data { drained, done } => {
                        // CommandState Done travels with the final PIPELINE_STATE
                        // (R:test_psrp_stream_output_invocation).
                        let command_state = done.then_some(CommandStateInfo {
                            command_id: receive.command_id,
                            state: CommandState::Done,
                            exit_code: Some(0),
                        });
                        Ok(Flow::Reply(ResponseBody::ReceiveResponse(
                            ReceiveResponse {
                                streams: drained.streams,
                                command_state,
                            },
                        )))
                    }
                    PsrpReceive::Nothing { next } => Ok(ctx.wait_for(next)),
                    PsrpReceive::Starting => Ok(ctx.wait_for(Some(ctx.now + RETRY_SOON))),
                }
            }
        }
    }

    fn signal(&self, state: &mut HostState, ctx: &Ctx<'_>, signal: &Signal) -> Outcome {
        let shell = self.shell_mut(state, ctx)?;
        let id = signal
            .command_id
            .ok_or_else(|| invalid_parameter(ctx.machine))?;
        let terminate = matches!(
            signal.code,
            SignalCode::Terminate | SignalCode::TerminateLowercase
        );
        let interrupt = matches!(
            signal.code,
            SignalCode::CtrlC | SignalCode::CtrlBreak | SignalCode::PsCtrlC
        );
        if !terminate && !interrupt {
            return Err(invalid_parameter(ctx.machine).into());
        }
        match &mut shell.kind {
            ShellKind::Cmd(cmd) if terminate => cmd.terminate(id),
            ShellKind::Cmd(cmd) => cmd.interrupt(id, ctx.now),
            ShellKind::Psrp(pool) if terminate => {
                pool.terminate(id).map_err(|_| CmdRefusal::UnknownCommand)
            }
            ShellKind::Psrp(pool) => pool
                .stop(id, ctx.now)
                .map_err(|_| CmdRefusal::UnknownCommand),
        }
        .map_err(|r| cmd_fault(r, ctx.machine))?;
        Ok(Flow::Reply(ResponseBody::SignalResponse))
    }

    // ----- jobs -----

    fn run(&self, job: Job) -> Done {
        match job {
            Job::Script {
                shell,
                user,
                rpid,
                restricted,
                job,
            } => Done::Script {
                shell,
                pid: job.pid,
                plan: script::plan_pipeline(
                    &self.spec,
                    &user,
                    &job.create,
                    &job.input,
                    restricted,
                    &job.earlier,
                    rpid,
                    job.pid,
                ),
            },
            Job::Cmd { shell, user, job } => Done::Cmd {
                shell,
                id: job.command_id,
                result: script::plan_cmd(
                    &self.spec,
                    &user,
                    &job.command,
                    &job.arguments,
                    &job.stdin,
                ),
            },
        }
    }

    fn install(&self, state: &mut HostState, done: Done, now: Duration) {
        let (shell_id, owner) = match &done {
            Done::Script { shell, .. } | Done::Cmd { shell, .. } => match state.shells.get(shell) {
                Some(s) => (*shell, s.owner.clone()),
                // Deleted while it ran: nothing to install.
                None => return,
            },
        };
        let Some(shell) = state.shells.get_mut(&shell_id) else {
            return;
        };
        match (done, &mut shell.kind) {
            (Done::Script { pid, plan, .. }, ShellKind::Psrp(pool)) => {
                pool.install(pid, plan, now);
                state.counters.record(&owner, |c| c.script_executions += 1);
            }
            (Done::Cmd { id, result, .. }, ShellKind::Cmd(cmd)) => {
                cmd.install(id, result, now);
                state.counters.record(&owner, |c| c.cmd_executions += 1);
            }
            _ => {}
        }
    }

    // ----- helpers -----

    /// The shell a request names: it must exist, belong to the user and be addressed with
    /// its own resource URI (deleting a PSRP shell with the cmd URI is "not found",
    /// wire-facts 1.12). Marks it used now.
    fn shell_mut<'s>(
        &self,
        state: &'s mut HostState,
        ctx: &Ctx<'_>,
    ) -> Result<&'s mut Shell, Box<WsmanFault>> {
        let header = &ctx.request.header;
        let id = header.shell_id();
        let shell = id.and_then(|id| state.shells.get_mut(&id)).filter(|s| {
            s.owner == ctx.user && shells::same_resource(&header.resource_uri, &s.resource_uri)
        });
        match shell {
            Some(shell) => {
                shell.last_activity = shell.last_activity.max(ctx.now);
                Ok(shell)
            }
            None => Err(
                unknown_shell(ctx.machine, header.selector("ShellId").unwrap_or_default()).into(),
            ),
        }
    }

    fn is_admin(&self, user: &str) -> bool {
        let bare = |name: &str| {
            name.rsplit_once('\\')
                .map_or(name, |(_, n)| n)
                .to_ascii_lowercase()
        };
        let user = bare(user);
        self.spec
            .accounts
            .iter()
            .any(|a| a.admin && bare(&a.name) == user)
    }

    fn quota_fault(&self, state: &mut HostState, ctx: &Ctx<'_>, quota: QuotaExceeded) -> Flow {
        state.counters.record(ctx.user, |c| c.quota_faults += 1);
        fault(match quota {
            QuotaExceeded::ShellsPerUser(max) => WsmanFault::max_shells_per_user(ctx.machine, max),
            QuotaExceeded::OperationsPerUser(max) => {
                WsmanFault::max_operations_per_user(ctx.machine, max)
            }
            QuotaExceeded::System => WsmanFault::new(
                FaultValue::Sender,
                FaultSubcode::QuotaLimit,
                FaultCode::QuotaSystem,
                ctx.machine,
                "The WS-Management service cannot process the request. The service is configured to not accept any more shells. Close existing shells or retry later. ",
            ),
            QuotaExceeded::Users(_) => WsmanFault::new(
                FaultValue::Sender,
                FaultSubcode::QuotaLimit,
                FaultCode::QuotaMaxShellUsers,
                ctx.machine,
                "The Windows Remote Shell cannot process the request. The server exceeded the maximum number of users concurrently performing remote operations on the same system. Retry later. ",
            ),
        })
    }

    /// The largest response the client accepts: its `wsman:MaxEnvelopeSize`, else the
    /// host's MaxEnvelopeSizekb.
    fn max_envelope(&self, ctx: &Ctx<'_>) -> usize {
        self.max_envelope_of(ctx.request)
    }

    fn max_envelope_of(&self, request: &Request) -> usize {
        request
            .header
            .max_envelope_size
            .map(|n| n as usize)
            .or_else(|| {
                self.spec
                    .winrm
                    .max_envelope_size_kb
                    .map(|kb| kb as usize * 1024)
            })
            .unwrap_or(DEFAULT_MAX_ENVELOPE)
    }

    /// Items per enumeration response: the client's MaxElements, and what fits its
    /// envelope (a detailed `rsp:Shell` is about 1.5 KB).
    fn batch_limit(&self, ctx: &Ctx<'_>, max_elements: Option<u32>) -> usize {
        let by_size = (self.max_envelope(ctx).saturating_sub(2048) / 1536).max(1);
        max_elements.map_or(by_size, |n| (n as usize).clamp(1, by_size))
    }
}

/// The parts of a request every operation needs.
struct Ctx<'a> {
    /// A Receive's response budget, measured before the lock is taken.
    budget: Option<ReceiveBudget>,
    user: &'a str,
    now: Duration,
    received_at: Duration,
    request: &'a Request,
    machine: &'a str,
}

impl Ctx<'_> {
    /// When the Receive gives up with TimedOut: arrival plus OperationTimeout (MS-WSMV
    /// 3.1.4.14; wire-facts 1.11).
    fn deadline(&self) -> Duration {
        let timeout = self
            .request
            .header
            .operation_timeout
            .as_ref()
            .and_then(OperationTimeout::duration)
            .unwrap_or(DEFAULT_OPERATION_TIMEOUT);
        self.received_at.saturating_add(timeout)
    }

    /// Nothing to send now: wait for `next` (or the deadline), or time out.
    fn wait_for(&self, next: Option<Duration>) -> Flow {
        let deadline = self.deadline();
        if self.now >= deadline {
            return fault(WsmanFault::operation_timeout(self.machine));
        }
        Flow::Wait(next.map_or(deadline, |at| at.min(deadline)).max(self.now))
    }
}

/// What an operation leads to. Lives on the stack for one request, so its size does not
/// matter.
#[allow(clippy::large_enum_variant)]
enum Flow {
    /// Answer with this body.
    Reply(ResponseBody),
    /// Call again at this time.
    Wait(Duration),
    /// Run these outside the lock, install their results, then continue.
    Run(Vec<Job>, Then),
}

/// What to do after the jobs of a [`Flow::Run`].
enum Then {
    Reply(Box<ResponseBody>),
    Receive,
}

/// A flow, or the fault to answer with (boxed: a fault is large and rare).
type Outcome = Result<Flow, Box<WsmanFault>>;

enum Job {
    Script {
        shell: Uuid,
        user: String,
        rpid: Uuid,
        restricted: bool,
        job: ScriptJob,
    },
    Cmd {
        shell: Uuid,
        user: String,
        job: CmdJob,
    },
}

enum Done {
    Script {
        shell: Uuid,
        pid: Uuid,
        plan: script::PlannedPipeline,
    },
    Cmd {
        shell: Uuid,
        id: Uuid,
        result: script::PlannedCmd,
    },
}

fn script_flow(shell: Uuid, user: &str, pool: &PsrpShell, job: ScriptJob, then: Then) -> Flow {
    Flow::Run(
        vec![Job::Script {
            shell,
            user: user.to_owned(),
            rpid: pool.rpid,
            restricted: pool.restricted,
            job,
        }],
        then,
    )
}

fn commands_of(shell: &Shell) -> Vec<EnumerationItem> {
    let listing: Vec<(Uuid, String)> = match &shell.kind {
        ShellKind::Cmd(cmd) => cmd.listing(),
        ShellKind::Psrp(pool) => pool
            .pipeline_ids()
            .into_iter()
            .map(|id| (id, String::new()))
            .collect(),
    };
    listing
        .into_iter()
        .map(|(id, line)| {
            EnumerationItem::Command(psfleet_core::wsman::CommandInfo {
                command_id: Some(id),
                command_line: Some(line),
                state: Some("Running".to_owned()),
            })
        })
        .collect()
}

fn non_empty(streams: &[String], default: &[&str]) -> Vec<String> {
    if streams.is_empty() {
        default.iter().map(|s| (*s).to_owned()).collect()
    } else {
        streams.to_vec()
    }
}

fn fault(f: WsmanFault) -> Flow {
    Flow::Reply(ResponseBody::Fault(f))
}

fn envelope(relates_to: Uuid, message_id: Uuid, body: ResponseBody) -> ServiceReply {
    let response = Response::reply(relates_to, message_id, body);
    ServiceReply::Respond {
        status: response.http_status(),
        body: response.to_xml(),
    }
}

/// An operation on a shell that does not exist (any more) for this user (wire-facts 1.12,
/// the Windows "shell was not found" text).
fn unknown_shell(machine: &str, shell_id: &str) -> WsmanFault {
    WsmanFault {
        fault_detail: Some(resources::FAULT_DETAIL_UNEXPECTED_SELECTORS.to_owned()),
        ..WsmanFault::new(
            FaultValue::Sender,
            FaultSubcode::InvalidSelectors,
            FaultCode::UnexpectedSelectors,
            machine,
            format!(
                "The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation. "
            ),
        )
    }
}

/// "The parameter is incorrect." (code 87, R:test_winrs_fail_poll_process).
fn invalid_parameter(machine: &str) -> WsmanFault {
    WsmanFault {
        fault_detail: Some(resources::FAULT_DETAIL_INVALID_VALUE.to_owned()),
        ..WsmanFault::new(
            FaultValue::Sender,
            FaultSubcode::InvalidParameter,
            FaultCode::InvalidParameter,
            machine,
            "The parameter is incorrect. ",
        )
    }
}

/// Code 87 raised by the cmd plugin, as Windows answers a Receive without a command
/// (R:test_winrs_fail_poll_process).
fn cmd_plugin_invalid_parameter(machine: &str) -> WsmanFault {
    WsmanFault {
        provider_fault: Some(ProviderFault {
            provider: "Shell cmd plugin".to_owned(),
            path: "%systemroot%\\system32\\winrscmd.dll".to_owned(),
            content: ProviderFaultContent::Text("The parameter is incorrect. ".to_owned()),
        }),
        ..invalid_parameter(machine)
    }
}

fn action_not_supported(machine: &str) -> WsmanFault {
    WsmanFault::new(
        FaultValue::Sender,
        FaultSubcode::ActionNotSupported,
        FaultCode::Unknown(ACTION_NOT_SUPPORTED),
        machine,
        "The WS-Management service cannot process the request because the action is not supported. ",
    )
}

fn internal_error(machine: &str) -> WsmanFault {
    WsmanFault::new(
        FaultValue::Receiver,
        FaultSubcode::InternalError,
        FaultCode::Unknown(0x8033_8000),
        machine,
        "The WS-Management service cannot process the request. The service encountered an internal error. ",
    )
}

fn too_many(machine: &str) -> WsmanFault {
    WsmanFault::new(
        FaultValue::Sender,
        FaultSubcode::QuotaLimit,
        FaultCode::QuotaLimit,
        machine,
        "The WS-Management service cannot process the request. The maximum number of concurrent commands per shell has been exceeded. ",
    )
}

fn cmd_fault(refusal: CmdRefusal, machine: &str) -> WsmanFault {
    match refusal {
        CmdRefusal::UnknownCommand => WsmanFault::unknown_command_id(machine),
        CmdRefusal::TooMuch => too_many(machine),
    }
}

fn psrp_fault(refusal: PsrpRefusal, machine: &str) -> WsmanFault {
    match refusal {
        PsrpRefusal::BadPayload => invalid_parameter(machine),
        PsrpRefusal::UnknownCommand => WsmanFault::unknown_command_id(machine),
        PsrpRefusal::TooManyPipelines => too_many(machine),
    }
}

#[cfg(test)]
mod tests;
