//! The fleet runner: one job (a PowerShell script, a cmd command, a sweep, a cleanup) over
//! many hosts, accounted for host by host in the run journal. docs/engine.md explains the
//! flow, what is recorded when, and how buckets are decided.
//!
//! The CLI builds a [`RunPlan`] (the work, the [`Target`]s from the inventory, client and
//! scheduler options, output caps, resume), keeps a [`RunHandle`] for Ctrl-C, and calls
//! [`execute`] with the [`crate::store::Store`] and a channel for [`RunEvent`]s (progress, `--output json`,
//! reports). `execute`:
//! 1. creates the run in the store, or resumes it (hosts already done are skipped, hosts that
//!    were in flight are reported Interrupted unless they are to be rerun);
//! 2. runs one job per host on the [`Scheduler`]: every attempt journals `host_started`
//!    (durable) before its first packet, journals each shell created and deleted, and feeds
//!    the host's shell budget ([`jobs`]);
//! 3. turns each finished job into a [`HostRecord`] ([`classify()`] decides status and bucket;
//!    the output is capped), writes it with [`crate::store::RunWriter::host_done`] and only then reports it;
//! 4. finishes the run (completed or interrupted) and returns a [`RunSummary`].
//!
//! Memory is bounded: jobs are made lazily from the plan, nothing per host is kept once its
//! record is written (counters only), and at most [`MAX_PENDING_WRITES`] records wait for
//! the disk at once.

pub mod classify;
pub mod jobs;
mod output;
mod runner;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use psfleet_core::psrp::client::ScriptSpec;
use psfleet_core::taxonomy::Bucket;

pub use self::classify::{Classification, HostContext, classify};
pub use self::jobs::{
    CleanupJob, CleanupResult, CmdJob, JobError, JobOutput, ScriptJob, SweepJob, SweepResult,
};
pub use self::runner::execute;
use crate::budget::BudgetView;
use crate::journal::{self, EndReason};
use crate::ops::ClientOptions;
use crate::record::{HostRecord, JobKind, RunId};
use crate::scheduler::{
    self, ConfigError, Progress, RetryReason, Scheduler, SchedulerConfig, StopLevel,
};
use crate::store::StoreError;
use crate::target::{Endpoint, Scheme, TargetError};

/// Most host records waiting for their journal write at once (the group commit batches them;
/// the bound keeps the records' memory bounded).
pub const MAX_PENDING_WRITES: usize = 64;

/// What a run does on each host.
#[derive(Debug, Clone)]
pub enum RunKind {
    /// A PowerShell script with its arguments, over PSRP (`Invoke-Command`).
    Script(ScriptSpec),
    /// A cmd command with its arguments, over WinRS.
    Cmd {
        /// The command (`ipconfig`, `cmd.exe`, ...).
        command: String,
        /// Its arguments, each passed as one argument.
        arguments: Vec<String>,
    },
    /// Reachability and configuration: resolve, connect, unauthenticated Identify,
    /// authenticate, authenticated Identify, config Get; facts go to the cache.
    Sweep,
    /// Delete leaked shells: the ones the store records open on the host, and (with
    /// `reap_unknown`) every other shell of the user that enumeration finds, except the
    /// shells of running jobs of this process.
    Cleanup {
        /// Also delete shells the store does not know (found by enumeration).
        reap_unknown: bool,
    },
}

impl RunKind {
    /// The record's job kind.
    pub fn job_kind(&self) -> JobKind {
        match self {
            RunKind::Script(_) => JobKind::Script,
            RunKind::Cmd { .. } => JobKind::Cmd,
            RunKind::Sweep => JobKind::Sweep,
            RunKind::Cleanup { .. } => JobKind::Cleanup,
        }
    }

    /// The script or command text `run.json` keeps (`None` for sweeps and cleanups).
    pub fn text(&self) -> Option<String> {
        match self {
            RunKind::Script(spec) => Some(spec.script.clone()),
            RunKind::Cmd { command, arguments } => {
                let mut text = command.clone();
                for argument in arguments {
                    text.push(' ');
                    text.push_str(argument);
                }
                Some(text)
            }
            RunKind::Sweep | RunKind::Cleanup { .. } => None,
        }
    }
}

/// One inventory host, ready to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The inventory name: the key of the host's record (unique within a run).
    pub name: String,
    /// The host name to connect to when it is not `name` (an inventory address that is a
    /// name). It names the machine: shell budgets, facts and open shells are kept under it,
    /// so two inventory entries for one machine share its shell budget.
    pub host: Option<String>,
    /// Connect to this address instead of resolving the host name (the inventory address;
    /// the name still goes in the Host header, the SPN and the certificate check).
    pub address: Option<IpAddr>,
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// The port (`None`: 5985 or 5986 by scheme).
    pub port: Option<u16>,
    /// The listener path (`None`: `/wsman`).
    pub path: Option<String>,
    /// The nearest inventory group.
    pub group: Option<String>,
    /// Client options for this host (authentication, user, TLS, ...) instead of the plan's.
    /// Hosts with the same settings should share one `Arc`.
    pub options: Option<Arc<ClientOptions>>,
    /// The PowerShell session configuration for this host, instead of the options' one.
    pub configuration_name: Option<String>,
}

impl Target {
    /// A host reached by its name over HTTP on 5985, with the plan's options.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            host: None,
            address: None,
            scheme: Scheme::Http,
            port: None,
            path: None,
            group: None,
            options: None,
            configuration_name: None,
        }
    }

    /// The host name connected to: [`Target::host`], else the inventory name.
    pub fn connect_host(&self) -> &str {
        self.host.as_deref().unwrap_or(&self.name)
    }

    /// The endpoint, after the host-name check (HostContainsInvalidCharacters).
    pub fn endpoint(&self) -> Result<Endpoint, TargetError> {
        let mut endpoint = Endpoint::new(self.connect_host(), self.scheme)?;
        if let Some(port) = self.port {
            endpoint = endpoint.with_port(port);
        }
        if let Some(path) = &self.path {
            endpoint = endpoint.with_path(path)?;
        }
        Ok(endpoint)
    }

    /// The port connected to.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }
}

/// How much of a host's output its record keeps; what is dropped is counted
/// (`HostRecord::output_truncated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCaps {
    /// Most output objects (scripts) or lines (cmd) kept.
    pub objects: usize,
    /// Most bytes of output kept (JSON for objects, text for cmd).
    pub bytes: usize,
    /// Length of `output_excerpt`, the start of the rendered output text.
    pub excerpt_bytes: usize,
    /// Most error and warning entries kept, each cut to `excerpt_bytes`.
    pub messages: usize,
}

impl Default for OutputCaps {
    /// 1,000 objects and 1 MiB of output per host, a 4 KiB excerpt, 100 errors and 100
    /// warnings.
    fn default() -> Self {
        Self {
            objects: 1_000,
            bytes: 1024 * 1024,
            excerpt_bytes: 4 * 1024,
            messages: 100,
        }
    }
}

/// What `run.json` records about how the run was asked for (never secrets).
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// The command line (passed through `journal::redact_command_line`).
    pub command_line: Vec<String>,
    /// The inventory files (`-` for standard input).
    pub inventory_paths: Vec<String>,
    /// SHA-256 of the inventory contents, hex.
    pub inventory_digest: Option<String>,
    /// The effective options (forks, timeout, authentication, ...).
    pub options: BTreeMap<String, serde_json::Value>,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// What to do on each host.
    pub kind: RunKind,
    /// The hosts, in inventory order (names unique).
    pub hosts: Vec<Target>,
    /// Client options of hosts without their own.
    pub client: Arc<ClientOptions>,
    /// Forks, rates, budgets, retries, deadline.
    pub scheduler: SchedulerConfig,
    /// Output kept per host.
    pub caps: OutputCaps,
    /// Continue this run instead of starting a new one.
    pub resume: Option<RunId>,
    /// With `resume`: run the hosts that were in flight again.
    pub rerun_interrupted: bool,
    /// What `run.json` records.
    pub info: RunInfo,
    handle: RunHandle,
}

impl RunPlan {
    /// A plan with default scheduler settings and caps, starting a new run.
    pub fn new(kind: RunKind, hosts: Vec<Target>, client: Arc<ClientOptions>) -> Self {
        Self {
            kind,
            hosts,
            client,
            scheduler: SchedulerConfig::default(),
            caps: OutputCaps::default(),
            resume: None,
            rerun_interrupted: false,
            info: RunInfo::default(),
            handle: RunHandle::default(),
        }
    }

    /// The handle that stops this plan's run (give it to the Ctrl-C handler).
    pub fn handle(&self) -> RunHandle {
        self.handle.clone()
    }
}

/// Stops a run and reads its counters; cheap to clone, usable before the run starts.
#[derive(Debug, Clone, Default)]
pub struct RunHandle {
    state: Arc<Mutex<HandleState>>,
}

#[derive(Debug, Default)]
enum HandleState {
    /// `execute` has not made the scheduler yet; stops are remembered.
    #[default]
    NotStarted,
    /// Stopped before the start.
    StoppedEarly(StopLevel),
    /// The run's scheduler.
    Started(Scheduler),
}

impl RunHandle {
    /// Ctrl-C: the first call stops the run gracefully (nothing new starts, hosts in flight
    /// are stopped and cleaned up, the rest are skipped), the second aborts it (the run
    /// returns at once; hosts in flight stay Interrupted in the journal). Returns the level
    /// reached.
    pub fn stop(&self) -> StopLevel {
        let mut state = self.lock();
        match &*state {
            HandleState::Started(scheduler) => scheduler.stop(),
            HandleState::NotStarted => {
                *state = HandleState::StoppedEarly(StopLevel::Stopping);
                StopLevel::Stopping
            }
            HandleState::StoppedEarly(_) => {
                *state = HandleState::StoppedEarly(StopLevel::Aborted);
                StopLevel::Aborted
            }
        }
    }

    /// How far a stop has gone.
    pub fn stop_level(&self) -> StopLevel {
        match &*self.lock() {
            HandleState::Started(scheduler) => scheduler.stop_level(),
            HandleState::NotStarted => StopLevel::Running,
            HandleState::StoppedEarly(level) => *level,
        }
    }

    /// The scheduler's counters, once the run has started.
    pub fn progress(&self) -> Option<Progress> {
        match &*self.lock() {
            HandleState::Started(scheduler) => Some(scheduler.progress()),
            _ => None,
        }
    }

    /// Makes the scheduler and replays stops that came first.
    fn start(&self, config: SchedulerConfig) -> Result<Scheduler, ConfigError> {
        let scheduler = Scheduler::new(config)?;
        let mut state = self.lock();
        let early = match &*state {
            HandleState::StoppedEarly(level) => *level,
            _ => StopLevel::Running,
        };
        if early >= StopLevel::Stopping {
            scheduler.stop();
        }
        if early >= StopLevel::Aborted {
            scheduler.stop();
        }
        *state = HandleState::Started(scheduler.clone());
        Ok(scheduler)
    }

    /// The state, even if a thread panicked while holding it (each update is one statement).
    fn lock(&self) -> std::sync::MutexGuard<'_, HandleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a run reports as it goes.
#[derive(Debug)]
pub enum RunEvent {
    /// The run exists in the store (new, or resumed).
    RunStarted {
        /// The run.
        run_id: RunId,
        /// Its folder.
        run_dir: PathBuf,
        /// Hosts selected.
        hosts: u64,
        /// Resume: hosts already done (not run again).
        already_done: u64,
        /// True for a resumed run.
        resumed: bool,
    },
    /// A host's job was taken from the plan; it waits for its turn.
    Queued {
        /// The host connected to ([`Target::connect_host`]).
        host: Arc<str>,
    },
    /// The host's shell budget is full; the job waits for a slot.
    WaitingForShellSlot {
        /// The host.
        host: Arc<str>,
        /// Shells psfleet may hold there.
        usable: u32,
        /// Shells psfleet holds there now.
        in_use: u32,
    },
    /// An attempt started.
    Started {
        /// The host.
        host: Arc<str>,
        /// 1 for the first.
        attempt: u32,
    },
    /// An attempt failed and another is scheduled.
    Retrying {
        /// The host.
        host: Arc<str>,
        /// The next attempt's number.
        attempt: u32,
        /// The back-off.
        after: Duration,
        /// Transient failure or quota fault.
        reason: RetryReason,
        /// The error's text.
        detail: String,
    },
    /// The host's shell budget changed.
    BudgetLearned {
        /// The host.
        host: Arc<str>,
        /// The budget now.
        budget: BudgetView,
    },
    /// A host's record is durable in the journal.
    HostDone(Box<HostRecord>),
    /// Resume: a host that was in flight when the run stopped, not run again (its record,
    /// Interrupted, is what the journal says).
    HostInterrupted(Box<HostRecord>),
    /// The journal refused a write: the run stops (hosts not acknowledged are not done).
    StoreFailed {
        /// The store's error.
        error: String,
    },
}

/// How a run went.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// Its folder (`run.json`, `journal.jsonl`).
    pub run_dir: PathBuf,
    /// True when this was a resume.
    pub resumed: bool,
    /// How the run ended.
    pub end: EndReason,
    /// Hosts selected.
    pub hosts: u64,
    /// Resume: hosts already done before, not run again.
    pub already_done: u64,
    /// Resume: hosts in flight when the run stopped, reported Interrupted and not run.
    pub interrupted_not_rerun: u64,
    /// Records this process wrote, by status name (`succeeded`, `failed`, `skipped`).
    pub by_status: BTreeMap<String, u64>,
    /// Records this process wrote, by bucket name.
    pub by_bucket: BTreeMap<String, u64>,
    /// Records that could not be written (the journal refused them).
    pub not_recorded: u64,
    /// The whole run as the journal has it now (every process's hosts).
    pub run: journal::RunSummary,
    /// The scheduler's figures (most hosts in flight, retries, ...).
    pub scheduler: scheduler::Summary,
    /// The journal failed during the run (the run was stopped).
    pub store_error: Option<String>,
    /// A cache write failed during the run (the journal is complete regardless).
    pub cache_error: Option<String>,
}

impl RunSummary {
    /// Records of this process with `status`.
    pub fn count(&self, status: crate::record::Status) -> u64 {
        let name = match status {
            crate::record::Status::Succeeded => "succeeded",
            crate::record::Status::Failed => "failed",
            crate::record::Status::Skipped => "skipped",
        };
        self.by_status.get(name).copied().unwrap_or(0)
    }

    /// Records of this process in `bucket`.
    pub fn bucket(&self, bucket: Bucket) -> u64 {
        self.by_bucket.get(bucket.name()).copied().unwrap_or(0)
    }
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The state store failed before the run could start or finish.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scheduler settings cannot work.
    #[error(transparent)]
    Scheduler(#[from] ConfigError),
    /// Two hosts of the plan have the same inventory name.
    #[error("host {0:?} is listed twice in the plan")]
    DuplicateHost(String),
    /// The run to resume ran another kind of job.
    #[error("run {run_id} is a {found:?} run; it cannot be resumed as a {wanted:?} run")]
    ResumeKindMismatch {
        /// The run.
        run_id: RunId,
        /// Its kind.
        found: JobKind,
        /// The plan's kind.
        wanted: JobKind,
    },
}
