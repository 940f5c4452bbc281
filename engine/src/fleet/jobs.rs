//! The job kinds the fleet runner puts on the scheduler: [`ScriptJob`] (PSRP), [`CmdJob`]
//! (WinRS), [`SweepJob`] (reachability and configuration facts) and [`CleanupJob`] (leaked
//! shells).
//!
//! Every attempt, whatever the kind:
//! 1. journals `host_started`, durable before any packet goes to the host (a crash afterwards
//!    reports the host Interrupted instead of running it twice). Script and cmd attempts send
//!    the line and go on building the client; their connect gate ([`StartGate`]) waits for
//!    the commit before every TCP connect, so the fsync overlaps the shell's own journal line
//!    (one commit wait per attempt instead of two). Sweep and cleanup wait for it at once;
//! 2. builds the client: the host-name check and the Windows client's pre-send checks run
//!    here (HostContainsInvalidCharacters, InvalidHostIPAddress, unencrypted Basic); every
//!    new connection of the client passes the attempt's gate (`AttemptContext::gate`), which
//!    spends the rate-limit tokens right before the TCP connect;
//! 3. reaps the shells earlier runs left open on the host (the store's open-shell records),
//!    never a shell a running job of this process holds;
//! 4. does its work; each shell the host creates or deletes is journaled the moment the host
//!    confirms it (`ops::RunControl::with_shell_hook`), before the next request;
//! 5. says how it went: `Done` (a script that failed on the host is done: its result says
//!    so), `Quota` for a quota fault (wire-facts 1.10; the scheduler requeues it), `Transient`
//!    for what [`ClientError::is_transient`] calls transient, else `Permanent`.
//!
//! A cancelled attempt (deadline or Ctrl-C: `AttemptContext::cancel`) stops its pipeline and
//! deletes its shell through `ops` (within `ClientOptions::cleanup_timeout`) and returns.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use psfleet_core::psrp::client::ScriptSpec;
use psfleet_core::wsman::{WinrmConfig, resources};
use uuid::Uuid;

use super::{OutputCaps, RunHandle, Target};
use crate::budget::{BudgetSource, ShellFacts};
use crate::cache::{ConnectionSettings, HostFacts, ServiceConfig};
use crate::error::ClientError;
use crate::http::TransportError;
use crate::journal::{OpenShell, timestamp_now};
use crate::ops::{
    ClientOptions, CmdResult, HostClient, OutputLimit, RunControl, RunError, ScriptResult,
    ShellEvent, ShellNotRecorded,
};
use crate::record::JobKind;
use crate::scheduler::AttemptGate;
use crate::scheduler::{AttemptContext, AttemptOutcome, CancelToken, HostJob};
use crate::store::{Durable, RunWriter, StoreError};

/// What a finished attempt produced.
#[derive(Debug)]
pub struct JobOutput {
    /// The work's result.
    pub result: JobResult,
    /// The address connected to, when known.
    pub address: Option<String>,
    /// Shells of earlier runs deleted before the work.
    pub leaks_reaped: u32,
}

/// The result of one kind of work.
#[derive(Debug)]
pub enum JobResult {
    /// A script ran; the pipeline state says how it ended.
    Script(Box<ScriptResult>),
    /// A cmd command ran; the exit code says how it ended.
    Cmd(Box<CmdResult>),
    /// The host was reached and authenticated.
    Sweep(Box<SweepResult>),
    /// The host's leaked shells were deleted.
    Cleanup(CleanupResult),
}

/// What a sweep learned about a host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SweepResult {
    /// `wsmid:ProductVersion` (`OS: 10.0.17763 SP: 0.0 Stack: 3.0`).
    pub product_version: Option<String>,
    /// `wsmid:ProtocolVersion`.
    pub protocol_version: Option<String>,
    /// Why the unauthenticated Identify failed, if it did (the sweep goes on: some hosts
    /// answer it only after authentication).
    pub unauthenticated_identify_error: Option<String>,
    /// Why the configuration could not be read (an account that is not an administrator
    /// gets Access is denied), if it could not.
    pub config_error: Option<String>,
    /// The facts recorded in the cache.
    pub facts: HostFacts,
}

/// What a cleanup did on a host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CleanupResult {
    /// Shells of the user the host listed.
    pub found: u32,
    /// Shells deleted (ids).
    pub deleted: Vec<String>,
    /// Shells the store recorded open that the host no longer has.
    pub already_gone: u32,
    /// Shells left alone because a running job of this process holds them.
    pub kept_live: u32,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The WinRM operation failed (the classifier reads it).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The run journal refused the write that must come before touching the host: the host
    /// was not touched, and the run stops.
    #[error("the run journal failed: {0}")]
    Store(#[from] StoreError),
}

/// What every job of a run shares.
#[derive(Debug)]
pub(crate) struct RunContext {
    /// The run's journal.
    pub writer: RunWriter,
    /// Client options of hosts without their own.
    pub client: Arc<ClientOptions>,
    /// Output kept per host.
    pub caps: OutputCaps,
    /// Stops the run when the journal fails.
    pub handle: RunHandle,
    /// The per-job deadline, for messages.
    pub timeout: Option<std::time::Duration>,
}

/// What every job holds: its host, its client options, and what the store knew about the
/// host's shells when the job was made.
#[derive(Debug)]
pub struct JobBase {
    target: Target,
    options: Arc<ClientOptions>,
    ctx: Arc<RunContext>,
    facts: ShellFacts,
    /// The store's open-shell records for the host (not held by this process); taken by the
    /// first attempt that reaps them.
    leaked: Mutex<Vec<OpenShell>>,
}

impl JobBase {
    /// A job for `target`; `leaked` are the store's open shells on its host.
    pub(crate) fn new(
        target: Target,
        ctx: Arc<RunContext>,
        max_shells: Option<u32>,
        leaked: Vec<OpenShell>,
    ) -> Self {
        let mut options = Arc::clone(target.options.as_ref().unwrap_or(&ctx.client));
        if let Some(name) = &target.configuration_name
            && *name != options.configuration_name
        {
            let mut changed = (*options).clone();
            changed.configuration_name.clone_from(name);
            options = Arc::new(changed);
        }
        let facts = ShellFacts {
            max_shells,
            open_shells: u32::try_from(leaked.len()).unwrap_or(u32::MAX),
        };
        Self {
            target,
            options,
            ctx,
            facts,
            leaked: Mutex::new(leaked),
        }
    }

    /// The host.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The client options in effect for the host.
    pub fn options(&self) -> &Arc<ClientOptions> {
        &self.options
    }

    /// What the classifier needs to fill in the documented messages.
    pub fn host_context(&self) -> super::HostContext {
        super::HostContext {
            host: self.target.name.clone(),
            port: self.target.effective_port(),
            mechanism: self.options.auth.to_string(),
            configuration_name: self.options.configuration_name.clone(),
            timeout: self.ctx.timeout,
        }
    }

    /// Steps 1 and 2: `host_started` (durable), then the client with its pre-send checks,
    /// its connections passing the attempt's gate (the rate limits are spent right before
    /// each TCP connect, not before these steps).
    async fn begin(
        &self,
        ctx: &AttemptContext,
    ) -> Result<HostClient, AttemptOutcome<JobOutput, JobError>> {
        if let Err(error) = self.ctx.writer.host_started(&self.target.name).await {
            tracing::error!(host = %self.target.name, %error, "the run journal failed; stopping the run");
            self.ctx.handle.stop();
            return Err(AttemptOutcome::Permanent(JobError::Store(error)));
        }
        let endpoint = self
            .target
            .endpoint()
            .map_err(|e| AttemptOutcome::Permanent(JobError::Client(e.into())))?;
        let mut client = HostClient::new(endpoint, Arc::clone(&self.options))
            .map_err(|e| AttemptOutcome::Permanent(JobError::Client(e)))?;
        if let Some(gate) = &ctx.gate {
            client = client.with_connect_gate(Arc::clone(gate) as _);
        }
        Ok(match self.target.address {
            Some(address) => client.with_address(address),
            None => client,
        })
    }

    /// Steps 1 and 2 with the `started` line sent but not waited for: the client's
    /// connections pass a [`StartGate`], which waits for the line to be durable before each
    /// TCP connect (so before any packet reaches the host), then the attempt's own gate.
    async fn begin_queued(
        &self,
        ctx: &AttemptContext,
    ) -> Result<(HostClient, Arc<StartGate>), AttemptOutcome<JobOutput, JobError>> {
        let durable = match self.ctx.writer.host_started_queued(&self.target.name).await {
            Ok(durable) => durable,
            Err(error) => return Err(self.store_failed(error)),
        };
        let start = Arc::new(StartGate::new(durable, ctx.gate.clone()));
        let client = match self.target.endpoint() {
            Ok(endpoint) => HostClient::new(endpoint, Arc::clone(&self.options))
                .map_err(|e| AttemptOutcome::Permanent(JobError::Client(e))),
            Err(e) => Err(AttemptOutcome::Permanent(JobError::Client(e.into()))),
        };
        let client = match client {
            Ok(client) => client.with_connect_gate(Arc::clone(&start) as _),
            // Nothing reached the host, but the record must still not outrun a failed
            // `started` line.
            Err(outcome) => return Err(self.settle(&start, outcome).await),
        };
        Ok((
            match self.target.address {
                Some(address) => client.with_address(address),
                None => client,
            },
            start,
        ))
    }

    /// The journal refused the write that comes before touching the host: the run stops.
    fn store_failed(&self, error: StoreError) -> Attempt {
        tracing::error!(host = %self.target.name, %error, "the run journal failed; stopping the run");
        self.ctx.handle.stop();
        AttemptOutcome::Permanent(JobError::Store(error))
    }

    /// An attempt begun with [`JobBase::begin_queued`] ends: if its `started` line did not
    /// become durable, that is what it reports (its connections were refused by the gate).
    async fn settle(&self, start: &StartGate, outcome: Attempt) -> Attempt {
        match start.durable().await {
            Ok(()) => outcome,
            Err(error) => self.store_failed(error),
        }
    }

    /// Step 3: deletes the shells the store recorded open on the host (leaks of runs that
    /// died). Failures are logged, not fatal: the work itself shows whether the host is
    /// usable. Returns the shells deleted or found gone.
    async fn reap_recorded(&self, client: &mut HostClient, ctx: &AttemptContext) -> u32 {
        let recorded = std::mem::take(&mut *self.leaked.lock().unwrap_or_else(|p| p.into_inner()));
        if recorded.is_empty() {
            return 0;
        }
        let reaper = Reaper {
            host: self.target.connect_host(),
            writer: &self.ctx.writer,
            configuration_name: &self.options.configuration_name,
        };
        let outcome = until_cancelled(&ctx.cancel, reaper.reap(client, &recorded, false)).await;
        match outcome {
            Ok(Ok(result)) => {
                ctx.budget.set_open_elsewhere(0);
                u32::try_from(result.deleted.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(result.already_gone)
            }
            Ok(Err(error)) => {
                tracing::warn!(host = %self.target.name, %error, "leaked shells could not be reaped");
                0
            }
            Err(_) => 0,
        }
    }

    /// The start every shell-running attempt (script, cmd) shares: the client, then the
    /// host's recorded leaks reaped before this attempt opens a shell of its own.
    async fn prepare_shell_work(
        &self,
        ctx: &AttemptContext,
    ) -> Result<(HostClient, ShellWork), Attempt> {
        let (mut client, start) = self.begin_queued(ctx).await?;
        let leaks_reaped = self.reap_recorded(&mut client, ctx).await;
        Ok((
            client,
            ShellWork {
                leaks_reaped,
                live: LiveGuard::default(),
                start,
            },
        ))
    }

    /// The end every shell-running attempt shares: facts journaled after a success, the
    /// output with the address used, or the failure classified for the scheduler.
    async fn conclude_shell_work(
        &self,
        client: &HostClient,
        shell: ShellWork,
        done: Result<(HostFacts, JobResult), RunError>,
    ) -> Attempt {
        let outcome = match done {
            Ok((facts, result)) => {
                self.record_facts(client, facts).await;
                AttemptOutcome::Done(JobOutput {
                    result,
                    address: self.address(client),
                    leaks_reaped: shell.leaks_reaped,
                })
            }
            Err(error) => failed(error.error),
        };
        let outcome = self.settle(&shell.start, outcome).await;
        // The attempt's shells stop counting as held only now (LiveGuard).
        drop(shell.live);
        outcome
    }

    /// Hooks that journal the shells the run creates and deletes, and mark them as held by
    /// this process meanwhile.
    fn control(&self, ctx: &AttemptContext, live: &LiveGuard) -> RunControl {
        let writer = self.ctx.writer.clone();
        let host: Arc<str> = Arc::from(self.target.connect_host());
        let held = Arc::clone(&live.ids);
        let hook = move |event: ShellEvent| {
            let writer = writer.clone();
            let host = Arc::clone(&host);
            let held = Arc::clone(&held);
            let fut: std::pin::Pin<Box<dyn Future<Output = Result<(), ShellNotRecorded>> + Send>> =
                Box::pin(async move {
                    let written = match event {
                        ShellEvent::Created { shell_id, .. } => {
                            live_shells().insert(shell_id);
                            held.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(shell_id);
                            writer
                                .shell_opened(&host, &shell_id.hyphenated().to_string())
                                .await
                        }
                        // Not waited for: a lost `shell_closed` line only makes the reaper
                        // find the shell gone, and the host's `done` record is acknowledged
                        // only once it is durable (RunWriter::shell_closed_queued).
                        ShellEvent::Deleted { shell_id } => {
                            live_shells().remove(&shell_id);
                            writer
                                .shell_closed_queued(&host, &shell_id.hyphenated().to_string())
                                .await
                        }
                    };
                    written.map_err(|error| {
                        tracing::warn!(%host, %error, "could not journal a shell");
                        ShellNotRecorded(error.to_string())
                    })
                });
            fut
        };
        let token = ctx.cancel.clone();
        let caps = self.ctx.caps;
        RunControl::none()
            .with_cancel(async move {
                token.cancelled().await;
            })
            .with_shell_hook(Box::new(hook))
            .with_output_limit(OutputLimit {
                records: caps.objects.max(caps.messages),
                bytes: caps.bytes,
            })
    }

    /// Journals what a successful run showed about the host (schemes offered, the settings
    /// that worked, PowerShell version, last seen).
    async fn record_facts(&self, client: &HostClient, mut facts: HostFacts) {
        facts.auth_schemes = client.offered_schemes().to_vec();
        facts.last_seen = Some(timestamp_now());
        facts.last_good = Some(ConnectionSettings {
            address: self.address(client),
            scheme: self.target.scheme.as_str().to_owned(),
            port: self.target.effective_port(),
            authentication: self.options.auth.to_string(),
            configuration_name: Some(self.options.configuration_name.clone())
                .filter(|c| c != resources::DEFAULT_CONFIGURATION_NAME),
        });
        // Not waited for: the host's `done` record, sent after them, is acknowledged only once
        // they are durable (RunWriter::facts_queued).
        if let Err(error) = self
            .ctx
            .writer
            .facts_queued(self.target.connect_host(), facts)
            .await
        {
            tracing::warn!(host = %self.target.name, %error, "could not journal host facts");
        }
    }

    /// The address connected to, when known.
    fn address(&self, client: &HostClient) -> Option<String> {
        client
            .peer_addr()
            .map(|a| a.ip().to_string())
            .or_else(|| self.target.address.map(|a| a.to_string()))
    }
}

/// A PowerShell script over PSRP (`Invoke-Command -ScriptBlock {..} -ArgumentList ..`).
#[derive(Debug)]
pub struct ScriptJob {
    base: JobBase,
    spec: Arc<ScriptSpec>,
}

/// A cmd command over WinRS.
#[derive(Debug)]
pub struct CmdJob {
    base: JobBase,
    command: Arc<(String, Vec<String>)>,
}

/// Reachability and configuration: resolve, connect, unauthenticated Identify, authenticate,
/// authenticated Identify, config Get (where the account may read it). No shell.
#[derive(Debug)]
pub struct SweepJob {
    base: JobBase,
}

/// Deletes the leaked shells on a host: the ones the store records open, and (with
/// `reap_unknown`) the user's other shells enumeration finds; never a shell a running job of
/// this process holds.
#[derive(Debug)]
pub struct CleanupJob {
    base: JobBase,
    reap_unknown: bool,
}

impl ScriptJob {
    pub(crate) fn new(base: JobBase, spec: Arc<ScriptSpec>) -> Self {
        Self { base, spec }
    }
}

impl CmdJob {
    pub(crate) fn new(base: JobBase, command: Arc<(String, Vec<String>)>) -> Self {
        Self { base, command }
    }
}

impl SweepJob {
    pub(crate) fn new(base: JobBase) -> Self {
        Self { base }
    }
}

impl CleanupJob {
    pub(crate) fn new(base: JobBase, reap_unknown: bool) -> Self {
        Self { base, reap_unknown }
    }
}

/// The jobs of the fleet runner: a [`HostJob`] with the common [`JobBase`].
pub trait FleetJob: HostJob<Output = JobOutput, Error = JobError> {
    /// The record's job kind.
    const KIND: JobKind;

    /// The common part.
    fn base(&self) -> &JobBase;
}

impl FleetJob for ScriptJob {
    const KIND: JobKind = JobKind::Script;

    fn base(&self) -> &JobBase {
        &self.base
    }
}

impl FleetJob for CmdJob {
    const KIND: JobKind = JobKind::Cmd;

    fn base(&self) -> &JobBase {
        &self.base
    }
}

impl FleetJob for SweepJob {
    const KIND: JobKind = JobKind::Sweep;

    fn base(&self) -> &JobBase {
        &self.base
    }
}

impl FleetJob for CleanupJob {
    const KIND: JobKind = JobKind::Cleanup;

    fn base(&self) -> &JobBase {
        &self.base
    }
}

type Attempt = AttemptOutcome<JobOutput, JobError>;

impl HostJob for ScriptJob {
    type Output = JobOutput;
    type Error = JobError;

    fn host(&self) -> &str {
        self.base.target.connect_host()
    }

    fn shells_needed(&self) -> u32 {
        1
    }

    fn shell_facts(&self) -> ShellFacts {
        self.base.facts
    }

    fn connects_through_gate(&self) -> bool {
        true
    }

    async fn attempt(&self, ctx: AttemptContext) -> Attempt {
        let (mut client, shell) = match self.base.prepare_shell_work(&ctx).await {
            Ok(prepared) => prepared,
            Err(outcome) => return outcome,
        };
        let run = client
            .run_script((*self.spec).clone(), shell.control(&self.base, &ctx))
            .await;
        let done = run.map(|result| {
            let facts = HostFacts {
                powershell_version: result.ps_version.clone(),
                ..HostFacts::default()
            };
            (facts, JobResult::Script(Box::new(result)))
        });
        self.base.conclude_shell_work(&client, shell, done).await
    }
}

impl HostJob for CmdJob {
    type Output = JobOutput;
    type Error = JobError;

    fn host(&self) -> &str {
        self.base.target.connect_host()
    }

    fn shells_needed(&self) -> u32 {
        1
    }

    fn shell_facts(&self) -> ShellFacts {
        self.base.facts
    }

    fn connects_through_gate(&self) -> bool {
        true
    }

    async fn attempt(&self, ctx: AttemptContext) -> Attempt {
        let (mut client, shell) = match self.base.prepare_shell_work(&ctx).await {
            Ok(prepared) => prepared,
            Err(outcome) => return outcome,
        };
        let (command, arguments) = &*self.command;
        let run = client
            .run_cmd(command, arguments, b"", shell.control(&self.base, &ctx))
            .await;
        let done = run.map(|result| (HostFacts::default(), JobResult::Cmd(Box::new(result))));
        self.base.conclude_shell_work(&client, shell, done).await
    }
}

impl HostJob for SweepJob {
    type Output = JobOutput;
    type Error = JobError;

    fn host(&self) -> &str {
        self.base.target.connect_host()
    }

    fn shells_needed(&self) -> u32 {
        0
    }

    fn shell_facts(&self) -> ShellFacts {
        self.base.facts
    }

    fn connects_through_gate(&self) -> bool {
        true
    }

    async fn attempt(&self, ctx: AttemptContext) -> Attempt {
        let base = &self.base;
        let mut client = match base.begin(&ctx).await {
            Ok(client) => client,
            Err(outcome) => return outcome,
        };
        let cancel = &ctx.cancel;
        let mut sweep = SweepResult::default();

        // Unauthenticated Identify (Test-WSMan): a connection of its own, no credentials. A
        // host that cannot be reached fails here; one that wants authentication for it
        // (an HTTP status or a fault) is noted and the sweep goes on.
        match until_cancelled(cancel, client.identify(false)).await {
            Ok(Ok(identity)) => {
                sweep.product_version = identity.product_version;
                sweep.protocol_version = identity.protocol_version;
            }
            Ok(Err(
                error @ (ClientError::Fault { .. }
                | ClientError::Transport(TransportError::HttpStatus { .. })),
            )) => {
                sweep.unauthenticated_identify_error = Some(error.to_string());
            }
            Ok(Err(error)) => return failed(error),
            Err(error) => return failed(error),
        }

        // Authenticate, then the authenticated Identify on that connection.
        match until_cancelled(cancel, client.identify(true)).await {
            Ok(Ok(identity)) => {
                sweep.product_version = identity.product_version.or(sweep.product_version);
                sweep.protocol_version = identity.protocol_version.or(sweep.protocol_version);
            }
            Ok(Err(error)) | Err(error) => return failed(error),
        }

        // The configuration, where the account may read it.
        let mut facts = HostFacts {
            os: sweep.product_version.clone(),
            ..HostFacts::default()
        };
        match until_cancelled(cancel, client.get_config()).await {
            Ok(Ok(config)) => {
                config_facts(&config, &base.target, &mut facts);
                if let Some(max) = facts.max_shells_per_user {
                    ctx.budget.learn(max, BudgetSource::ConfigGet);
                }
            }
            Ok(Err(error)) if error.fault().is_some_and(|f| f.is_access_denied()) => {
                sweep.config_error = Some(error.to_string());
            }
            Ok(Err(error)) | Err(error) => return failed(error),
        }
        base.record_facts(&client, facts.clone()).await;
        facts.auth_schemes = client.offered_schemes().to_vec();
        sweep.facts = facts;
        AttemptOutcome::Done(JobOutput {
            result: JobResult::Sweep(Box::new(sweep)),
            address: base.address(&client),
            leaks_reaped: 0,
        })
    }
}

impl HostJob for CleanupJob {
    type Output = JobOutput;
    type Error = JobError;

    fn host(&self) -> &str {
        self.base.target.connect_host()
    }

    fn shells_needed(&self) -> u32 {
        0
    }

    fn shell_facts(&self) -> ShellFacts {
        self.base.facts
    }

    fn connects_through_gate(&self) -> bool {
        true
    }

    async fn attempt(&self, ctx: AttemptContext) -> Attempt {
        let base = &self.base;
        let mut client = match base.begin(&ctx).await {
            Ok(client) => client,
            Err(outcome) => return outcome,
        };
        let recorded = base
            .leaked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let reaper = Reaper {
            host: base.target.connect_host(),
            writer: &base.ctx.writer,
            configuration_name: &base.options.configuration_name,
        };
        let reaped = until_cancelled(
            &ctx.cancel,
            reaper.reap(&mut client, &recorded, self.reap_unknown),
        )
        .await;
        match reaped {
            Ok(Ok(result)) => {
                base.leaked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                ctx.budget.set_open_elsewhere(0);
                AttemptOutcome::Done(JobOutput {
                    result: JobResult::Cleanup(result),
                    address: base.address(&client),
                    leaks_reaped: 0,
                })
            }
            Ok(Err(error)) | Err(error) => failed(error),
        }
    }
}

/// How a failed operation counts for the scheduler: a quota fault is requeued (with the N of
/// its text for the budget), a transient failure retried, anything else final.
fn failed(error: ClientError) -> Attempt {
    if let Some(fault) = error.fault()
        && fault.is_quota()
    {
        let max_shells = fault.max_shells_quota();
        return AttemptOutcome::Quota {
            error: JobError::Client(error),
            max_shells,
        };
    }
    if error.is_transient() {
        return AttemptOutcome::Transient {
            error: JobError::Client(error),
            retry_after: None,
        };
    }
    AttemptOutcome::Permanent(JobError::Client(error))
}

/// Runs `fut` unless `cancel` fires first ([`ClientError::Cancelled`]; dropping the
/// operation drops its connection, and these operations hold no shell).
async fn until_cancelled<T>(
    cancel: &CancelToken,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<Result<T, ClientError>, ClientError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(ClientError::Cancelled),
        out = fut => Ok(out),
    }
}

/// Fills `facts` from a config Get: MaxShellsPerUser and the other quotas, MaxEnvelopeSizekb,
/// the service's authentication methods, AllowUnencrypted and CbtHardeningLevel (wire-facts
/// 2.3; MS-WSMV 2.2.4.42). The listener list is the one reached (enumerating
/// `winrm/config/listener` is not done).
fn config_facts(config: &WinrmConfig, target: &Target, facts: &mut HostFacts) {
    let mut quota = |name: &str, value: Option<u32>| {
        if let Some(value) = value {
            facts.quotas.insert(name.to_owned(), u64::from(value));
        }
    };
    if let Some(winrs) = &config.winrs {
        quota("MaxShellsPerUser", winrs.max_shells_per_user);
        quota("MaxConcurrentUsers", winrs.max_concurrent_users);
        quota("IdleTimeout", winrs.idle_timeout_ms);
        quota("MaxShellRunTime", winrs.max_shell_run_time_ms);
        quota("MaxProcessesPerShell", winrs.max_processes_per_shell);
        quota("MaxMemoryPerShellMB", winrs.max_memory_per_shell_mb);
    }
    let service = config.service.as_ref();
    if let Some(service) = service {
        quota("MaxConcurrentOperations", service.max_concurrent_operations);
        quota(
            "MaxConcurrentOperationsPerUser",
            service.max_concurrent_operations_per_user,
        );
        quota("MaxConnections", service.max_connections);
    }
    quota("MaxEnvelopeSizekb", config.max_envelope_size_kb);
    quota("MaxTimeoutms", config.max_timeout_ms);
    facts.max_shells_per_user = config.winrs.as_ref().and_then(|w| w.max_shells_per_user);

    let mut summary = ServiceConfig {
        max_envelope_size_kb: config.max_envelope_size_kb,
        listeners: vec![format!(
            "{}:{}",
            target.scheme.as_str().to_ascii_uppercase(),
            target.effective_port()
        )],
        ..ServiceConfig::default()
    };
    if let Some(service) = service {
        summary.allow_unencrypted = service.allow_unencrypted;
        if let Some(auth) = &service.auth {
            for (name, enabled) in [
                ("Basic", auth.basic),
                ("Kerberos", auth.kerberos),
                ("Negotiate", auth.negotiate),
                ("Certificate", auth.certificate),
                ("CredSSP", auth.credssp),
            ] {
                if let Some(enabled) = enabled {
                    summary.auth.insert(name.to_owned(), enabled);
                }
            }
            summary.cbt_hardening_level = auth
                .cbt_hardening_level
                .as_ref()
                .map(|level| level.as_str().to_owned());
        }
    }
    facts.service = Some(summary);
}

/// Deletes leaked shells on one host.
struct Reaper<'a> {
    host: &'a str,
    writer: &'a RunWriter,
    configuration_name: &'a str,
}

impl Reaper<'_> {
    /// Lists the user's shells and deletes the `recorded` ones (and, with `reap_unknown`,
    /// every other one) that no running job of this process holds, each with the resource
    /// URI the host lists for it (a PowerShell shell deleted with the cmd URI stays open,
    /// wire-facts 1.12). Recorded shells the host no longer lists are journaled closed.
    /// Without a listing (an error), the recorded ones are deleted by id, trying the
    /// PowerShell then the cmd URI, unless unknown shells were asked for (then the listing
    /// error is the answer).
    async fn reap(
        &self,
        client: &mut HostClient,
        recorded: &[OpenShell],
        reap_unknown: bool,
    ) -> Result<CleanupResult, ClientError> {
        let mut result = CleanupResult::default();
        let recorded_ids: HashSet<Uuid> = recorded
            .iter()
            .filter_map(|s| Uuid::parse_str(&s.shell_id).ok())
            .collect();
        let listing = match client.enumerate_shells().await {
            Ok(listing) => listing,
            Err(error) if reap_unknown => return Err(error),
            Err(error) => {
                tracing::debug!(host = %self.host, %error, "cannot list shells; deleting recorded ones by id");
                return self.reap_blind(client, &recorded_ids).await;
            }
        };
        result.found = u32::try_from(listing.len()).unwrap_or(u32::MAX);
        let mut listed = HashSet::new();
        let mut first_error = None;
        for shell in listing {
            let Some(id) = shell.shell_id else { continue };
            listed.insert(id);
            if live_shells().contains(&id) {
                result.kept_live += 1;
                continue;
            }
            if !reap_unknown && !recorded_ids.contains(&id) {
                continue;
            }
            let uri = shell
                .resource_uri
                .unwrap_or_else(|| resources::CMD_SHELL.to_owned());
            match client.delete_shell(id, &uri).await {
                Ok(()) => {
                    self.closed(id).await;
                    result.deleted.push(id.hyphenated().to_string());
                }
                Err(error) if error.fault().is_some_and(|f| f.is_shell_not_found()) => {
                    self.closed(id).await;
                    result.already_gone += 1;
                }
                Err(error) => {
                    tracing::warn!(host = %self.host, shell = %id, %error, "could not delete a leaked shell");
                    first_error.get_or_insert(error);
                }
            }
        }
        for id in recorded_ids.difference(&listed) {
            if !live_shells().contains(id) {
                self.closed(*id).await;
                result.already_gone += 1;
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(result),
        }
    }

    /// Deletes recorded shells by id when the host would not list them.
    async fn reap_blind(
        &self,
        client: &mut HostClient,
        recorded: &HashSet<Uuid>,
    ) -> Result<CleanupResult, ClientError> {
        let mut result = CleanupResult::default();
        let powershell = format!(
            "{}{}",
            resources::POWERSHELL_PREFIX,
            self.configuration_name
        );
        for id in recorded {
            if live_shells().contains(id) {
                result.kept_live += 1;
                continue;
            }
            let mut outcome = client.delete_shell(*id, &powershell).await;
            if outcome.as_ref().is_err_and(|e| e.fault().is_some()) {
                outcome = client.delete_shell(*id, resources::CMD_SHELL).await;
            }
            match outcome {
                Ok(()) => {
                    self.closed(*id).await;
                    result.deleted.push(id.hyphenated().to_string());
                }
                Err(error) if error.fault().is_some_and(|f| f.is_shell_not_found()) => {
                    self.closed(*id).await;
                    result.already_gone += 1;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(result)
    }

    async fn closed(&self, id: Uuid) {
        if let Err(error) = self
            .writer
            .shell_closed(self.host, &id.hyphenated().to_string())
            .await
        {
            tracing::warn!(host = %self.host, %error, "could not journal a reaped shell");
        }
    }
}

/// The shells running jobs of this process hold, whatever run they belong to: a reaper never
/// deletes them.
pub(crate) struct LiveShells {
    ids: Mutex<HashSet<Uuid>>,
}

impl LiveShells {
    fn insert(&self, id: Uuid) {
        self.lock().insert(id);
    }

    fn remove(&self, id: &Uuid) {
        self.lock().remove(id);
    }

    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        self.lock().contains(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The process's [`LiveShells`] (bounded by the shells in flight).
pub(crate) fn live_shells() -> &'static LiveShells {
    static LIVE: OnceLock<LiveShells> = OnceLock::new();
    LIVE.get_or_init(|| LiveShells {
        ids: Mutex::new(HashSet::new()),
    })
}

/// What a shell-running attempt carries from its start to its end: the leaks reaped first,
/// and the guard that marks its shells as held by this process.
struct ShellWork {
    leaks_reaped: u32,
    live: LiveGuard,
    start: Arc<StartGate>,
}

/// The connect gate of an attempt whose `started` line was sent without waiting: before each
/// TCP connect it waits for that line to be durable (once; the answer is kept), then passes
/// the scheduler's gate, if any. A line that failed refuses the connection, and
/// [`JobBase::settle`] turns the attempt into the journal failure it is.
#[derive(Debug)]
pub(crate) struct StartGate {
    pending: Mutex<Option<Durable>>,
    /// `Err(None)`: the writer had stopped; `Err(Some(why))`: the write failed.
    answer: tokio::sync::OnceCell<Result<(), Option<String>>>,
    inner: Option<Arc<AttemptGate>>,
}

impl StartGate {
    fn new(durable: Durable, inner: Option<Arc<AttemptGate>>) -> Self {
        Self {
            pending: Mutex::new(Some(durable)),
            answer: tokio::sync::OnceCell::new(),
            inner,
        }
    }

    /// Waits until the `started` line is durable, or says why it is not.
    async fn durable(&self) -> Result<(), StoreError> {
        let answer = self
            .answer
            .get_or_init(|| async {
                let pending = self
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                match pending {
                    Some(durable) => durable.await.map_err(|e| match e {
                        StoreError::Closed => None,
                        StoreError::NotDurable(why) => Some(why),
                        other => Some(other.to_string()),
                    }),
                    None => Err(None),
                }
            })
            .await;
        answer
            .clone()
            .map_err(|why| why.map_or(StoreError::Closed, StoreError::NotDurable))
    }
}

impl crate::http::ConnectGate for StartGate {
    fn before_connect(&self) -> crate::http::GateFuture<'_> {
        Box::pin(async move {
            self.durable().await.map_err(std::io::Error::other)?;
            match &self.inner {
                Some(gate) => gate.before_connect().await,
                None => Ok(()),
            }
        })
    }

    fn after_connect(&self) -> crate::http::GateFuture<'_> {
        match &self.inner {
            Some(gate) => gate.after_connect(),
            None => Box::pin(async { Ok(()) }),
        }
    }
}

impl ShellWork {
    /// The run's control: cancellation, deadline, output caps and the journaling hook.
    fn control(&self, base: &JobBase, ctx: &AttemptContext) -> RunControl {
        base.control(ctx, &self.live)
    }
}

/// The shells one attempt created; they stop counting as held when the attempt ends (a shell
/// it could not delete is then a leak like any other).
#[derive(Default)]
struct LiveGuard {
    ids: Arc<Mutex<Vec<Uuid>>>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()));
        for id in ids {
            live_shells().remove(&id);
        }
    }
}
