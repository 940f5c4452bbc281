//! The scheduler: fans jobs over hosts within a global cap on hosts in flight (`--forks`),
//! rate limits on new connections (global and per host), per-host shell budgets, retries with
//! back-off for transient failures, a per-host deadline (`--timeout`) and Ctrl-C semantics.
//! docs/scheduling.md explains the defaults and the semantics for users.
//!
//! The scheduler is generic over the work: a [`HostJob`] is one job on one host (a script, a
//! cmd command, a sweep) whose [`HostJob::attempt`] makes one try and says how it went
//! ([`AttemptOutcome`]). The scheduler decides when an attempt may start, whether and when to
//! try again, and reports every step as an [`Event`] on a bounded channel, ending with exactly
//! one [`EventKind::Finished`] per job, whatever happens (unless the run is aborted by a second
//! [`Scheduler::stop`]).
//!
//! One job goes through these steps, each step's wait cut short by a stop or, after the first
//! attempt, by the deadline:
//! 1. pulled from the caller's iterator once fewer than `queue_depth` jobs are pending
//!    ([`EventKind::Queued`]);
//! 2. a shell slot on its host ([`crate::budget`]; [`EventKind::WaitingForShellSlot`] when it
//!    has to wait);
//! 3. a fork (one of `forks` attempts doing WinRM work); a job that connects through the
//!    gate holds it in its [`AttemptGate`], gives it back for one of the `connecting` slots
//!    while a slow first TCP connect is pending (`connect_handoff_after`), and takes one
//!    again once connected, so hosts that never answer the SYN do not hold the forks;
//! 4. the rate limiters ([`RateLimit`]): a job that [connects through the
//!    gate](HostJob::connects_through_gate) spends their tokens inside its attempt, right
//!    before each new TCP connect ([`AttemptGate`]); any other job just before the attempt;
//! 5. the attempt ([`EventKind::Started`]); on a transient failure or a quota fault, every
//!    permit is given back and the job sleeps out its back-off ([`EventKind::Retrying`]), then
//!    goes back to step 2.
//!
//! Memory is bounded by `queue_depth` jobs whatever the fleet size: jobs are pulled lazily,
//! results leave as events, and the per-host state (budgets, the rate gate) goes with the
//! host's last job. Only the counters of [`Progress`] and governor's per-host rate states
//! (dropped by [`Scheduler::retain_recent`] once fresh) outlive a host.

mod gate;
mod rate;

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::FutureExt as _;
use psfleet_core::taxonomy::Bucket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

pub use self::gate::AttemptGate;
use self::rate::Limiters;
pub use self::rate::{RateLimit, RateParseError};
use crate::budget::{
    BudgetHandle, BudgetView, DEFAULT_MAX_SHELLS, HostBudget, ShellBudgets, ShellFacts,
};
use crate::record::Status;
use crate::retry::{Jitter, RetryPolicy};

/// Default cap on attempts in flight (`--forks`); docs/scheduling.md gives the measurements
/// behind it.
pub const DEFAULT_FORKS: usize = 256;

/// Default time a cancelled attempt gets to stop its pipeline and delete its shell before it
/// is abandoned (the shell is then left to the leak reaper).
pub const DEFAULT_CLEANUP_GRACE: Duration = Duration::from_secs(15);

/// Default time a first TCP connect may stay pending before its attempt gives its fork back
/// (`SchedulerConfig::connect_handoff_after`): the initial retransmission timeout of a SYN
/// (RFC 6298 2.1, Linux `TCP_TIMEOUT_INIT`), so a host that answers at all, however far
/// away, has answered by then unless a packet was lost.
pub const DEFAULT_CONNECT_HANDOFF_AFTER: Duration = Duration::from_secs(1);

/// How many attempts start between two prunings of governor's per-host rate states.
const RETAIN_EVERY: u64 = 1024;

/// Everything the scheduler can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most attempts doing WinRM work at once, all hosts together (`--forks`); attempts
    /// whose first connect is slow may wait for it without a fork (`connecting`).
    pub forks: usize,
    /// Most jobs pulled from the iterator and not finished (in flight, waiting for a slot or
    /// backing off). `0` means `max(4 * forks, 1024)`.
    pub queue_depth: usize,
    /// Most attempts at once that gave their fork back while their first TCP connect is
    /// pending (a host that does not answer the SYN), on top of the `forks` doing WinRM
    /// work. `0` means `2 * forks`. Only jobs that connect through the gate hand off.
    pub connecting: usize,
    /// How long a first TCP connect may be pending before its attempt gives its fork back
    /// (it takes a fork again once connected); `None`: never.
    pub connect_handoff_after: Option<Duration>,
    /// Global rate of new connections (`--rate`), or none.
    pub rate: Option<RateLimit>,
    /// Rate of new connections to any one host, or none.
    pub per_host_rate: Option<RateLimit>,
    /// MaxShellsPerUser assumed for a host nothing is known about.
    pub default_max_shells: u32,
    /// Per-job deadline from the start of its first attempt (`--timeout`), or none.
    pub timeout: Option<Duration>,
    /// Time a cancelled attempt gets to clean up (stop the pipeline, delete the shell).
    pub cleanup_grace: Duration,
    /// Retries and back-off.
    pub retry: RetryPolicy,
    /// Seed of the back-off jitter (`None`: from the clock), for reproducible tests.
    pub seed: Option<u64>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            forks: DEFAULT_FORKS,
            queue_depth: 0,
            connecting: 0,
            connect_handoff_after: Some(DEFAULT_CONNECT_HANDOFF_AFTER),
            rate: None,
            per_host_rate: None,
            default_max_shells: DEFAULT_MAX_SHELLS,
            timeout: None,
            cleanup_grace: DEFAULT_CLEANUP_GRACE,
            retry: RetryPolicy::default(),
            seed: None,
        }
    }
}

impl SchedulerConfig {
    /// The cap on attempts connecting without a fork in effect.
    pub fn effective_connecting(&self) -> usize {
        match self.connecting {
            0 => self.forks.saturating_mul(2),
            n => n,
        }
        .min(Semaphore::MAX_PERMITS)
    }

    /// The queue depth in effect.
    pub fn effective_queue_depth(&self) -> usize {
        match self.queue_depth {
            0 => self.forks.saturating_mul(4).max(1024),
            n => n.max(self.forks),
        }
    }
}

/// A configuration the scheduler cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `forks` is zero.
    #[error("forks must be at least 1")]
    ZeroForks,
    /// `forks` is beyond what a semaphore can count.
    #[error("forks must be at most {max}")]
    TooManyForks {
        /// The largest value.
        max: usize,
    },
    /// A rate the limiter cannot represent.
    #[error("rate {0} is too high")]
    Rate(RateLimit),
    /// `retry.max_attempts` is zero.
    #[error("retry attempts must be at least 1")]
    ZeroAttempts,
}

/// One job on one host: run a script, run a cmd command, sweep.
///
/// `attempt` returns `impl Future + Send`, so an implementation may be written as an
/// `async fn` (its future must be `Send`); no boxing, no async-trait.
///
/// Events only observe; whatever must be durable before the work starts (the journal's
/// host-started record, the state store's open-shell record) is written by the attempt itself.
pub trait HostJob: Send + Sync + 'static {
    /// What a successful attempt yields.
    type Output: Send + 'static;
    /// What a failed attempt yields (its `Display` goes into [`EventKind::Retrying`]).
    type Error: fmt::Display + Send + 'static;

    /// The inventory host name (budgets and per-host rates compare it case-insensitively).
    fn host(&self) -> &str;

    /// Shells the job holds open at once: 1 for a script or a cmd command, 0 for a sweep.
    fn shells_needed(&self) -> u32;

    /// What the state store knows about the host's shells (learned MaxShellsPerUser, shells
    /// recorded open); read once when the job is pulled.
    fn shell_facts(&self) -> ShellFacts {
        ShellFacts::default()
    }

    /// Whether the job's connections pass [`AttemptContext::gate`] (true: the job hands the
    /// gate to every client it connects with, and the rate-limit tokens are spent there,
    /// right before each new TCP connect; false: the scheduler spends one set of tokens just
    /// before each attempt, which then must open at most one connection).
    fn connects_through_gate(&self) -> bool {
        false
    }

    /// One try. On `ctx.cancel` (deadline or stop) the job stops its pipeline, deletes its
    /// shell within its own bounds and returns; the scheduler waits `cleanup_grace` for that.
    fn attempt(
        &self,
        ctx: AttemptContext,
    ) -> impl Future<Output = AttemptOutcome<Self::Output, Self::Error>> + Send;
}

/// What one attempt is told.
#[derive(Debug, Clone)]
pub struct AttemptContext {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the job's deadline expires, if it has one (OperationTimeout and friends should
    /// end before it).
    pub deadline: Option<Instant>,
    /// Fires on the deadline or a stop.
    pub cancel: CancelToken,
    /// Where to report what the host said about its shells (the config Get's MaxShellsPerUser,
    /// shells found open and reaped).
    pub budget: BudgetHandle,
    /// For a job that [connects through the gate](HostJob::connects_through_gate): hand it
    /// to every client of the attempt (`HostClient::with_connect_gate`); `None` otherwise.
    pub gate: Option<Arc<AttemptGate>>,
}

/// How one attempt went.
#[derive(Debug)]
pub enum AttemptOutcome<R, E> {
    /// The work is done (a script that failed on the host is still done: its result says so).
    Done(R),
    /// Worth trying again: a timeout, a reset connection, a 503.
    Transient {
        /// What went wrong.
        error: E,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// A WinRM quota refused the shell or operation (wire-facts 1.10): requeued with back-off.
    Quota {
        /// The fault.
        error: E,
        /// N from "a maximum number of N concurrent shells" (`WsmanFault::max_shells_quota`).
        max_shells: Option<u32>,
    },
    /// Trying again cannot help: credentials, DNS, certificate, missing configuration.
    Permanent(E),
}

/// Why an attempt was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The job's deadline expired.
    Deadline,
    /// The run is stopping (Ctrl-C).
    Stop,
}

/// Cancellation of one attempt: cheap to clone, fires at most once.
#[derive(Debug, Clone)]
pub struct CancelToken {
    // The token owns the sender, so the channel never closes while a token exists.
    reason: Arc<watch::Sender<Option<CancelReason>>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A token that has not fired.
    pub fn new() -> Self {
        Self {
            reason: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Fires the token (the first reason sticks).
    pub fn cancel(&self, reason: CancelReason) {
        self.reason.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
    }

    /// Why it fired, if it has.
    pub fn reason(&self) -> Option<CancelReason> {
        *self.reason.borrow()
    }

    /// Whether it fired.
    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// Resolves when the token fires (at once if it has).
    pub async fn cancelled(&self) -> CancelReason {
        let mut rx = self.reason.subscribe();
        loop {
            if let Some(reason) = *rx.borrow_and_update() {
                return reason;
            }
            if rx.changed().await.is_err() {
                // Unreachable: `self` holds the sender.
                return CancelReason::Stop;
            }
        }
    }
}

/// A job's number in the order the iterator gave it (from 0 in each run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// One step of one job.
pub struct Event<J: HostJob> {
    /// The job.
    pub job: JobId,
    /// Its host, as the job names it.
    pub host: Arc<str>,
    /// What happened.
    pub kind: EventKind<J>,
}

/// What happened to a job.
pub enum EventKind<J: HostJob> {
    /// Pulled from the iterator; it waits for its turn.
    Queued,
    /// Its host's shell budget is full; it waits for a slot.
    WaitingForShellSlot {
        /// Shells psfleet may hold on the host.
        usable: u32,
        /// Shells psfleet holds there now.
        in_use: u32,
    },
    /// An attempt started: it holds a fork, and its rate-limit tokens are spent (a job that
    /// connects through the gate spends them later, right before each TCP connect).
    Started {
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// The host's budget changed (keep it as a fact for the next run).
    BudgetLearned {
        /// The budget now.
        budget: BudgetView,
    },
    /// The attempt failed and another is scheduled.
    Retrying {
        /// The number of the next attempt.
        attempt: u32,
        /// The back-off before it.
        after: Duration,
        /// Transient failure or quota fault.
        reason: RetryReason,
        /// The error's text.
        detail: String,
    },
    /// The job is over; exactly one per job.
    Finished(Box<Finished<J>>),
}

/// Why a job is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// A transient failure.
    Transient,
    /// A quota fault (requeued).
    Quota {
        /// N from the fault text, if it had one.
        max_shells: Option<u32>,
    },
}

/// The end of one job.
pub struct Finished<J: HostJob> {
    /// The job, handed back.
    pub job: J,
    /// How it ended.
    pub outcome: Outcome<J::Output, J::Error>,
    /// Attempts made (0 when it never started).
    pub attempts: u32,
    /// Wall-clock start of the first attempt.
    pub started: Option<SystemTime>,
    /// Wall-clock end.
    pub finished: SystemTime,
    /// Time from the start of the first attempt to the end (0 when it never started).
    pub elapsed: Duration,
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome<R, E> {
    /// An attempt returned `Done`.
    Succeeded(R),
    /// A permanent failure, or transient failures until the attempts ran out.
    Failed {
        /// The last error.
        error: E,
        /// The attempts ran out (the error was transient).
        retries_exhausted: bool,
    },
    /// Quota faults until the quota requeues ran out.
    QuotaExceeded {
        /// The last fault.
        error: E,
        /// N from its text, if it had one.
        max_shells: Option<u32>,
    },
    /// The deadline expired (the attempt in flight was cancelled, or the next would start
    /// too late).
    TimedOut {
        /// The error of the attempt before, or of the cancelled one.
        last_error: Option<E>,
    },
    /// Stopped (Ctrl-C) after it had started: in flight (cancelled and cleaned up) or between
    /// attempts.
    Interrupted {
        /// The error of the attempt before, or of the cancelled one.
        last_error: Option<E>,
    },
    /// Stopped before its first attempt.
    Skipped,
    /// The attempt panicked (a bug in psfleet); the message is the panic's.
    Panicked {
        /// The panic message.
        message: String,
    },
}

impl<R, E> Outcome<R, E> {
    /// The run-record status.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Succeeded(_) => Status::Succeeded,
            Outcome::Skipped => Status::Skipped,
            _ => Status::Failed,
        }
    }

    /// The bucket the scheduler itself determines (`QuotaExceeded`, `Timeout`,
    /// `Interrupted`); `None` when the classifier decides from the error (or for success and
    /// skips).
    pub fn bucket(&self) -> Option<Bucket> {
        match self {
            Outcome::QuotaExceeded { .. } => Some(Bucket::QuotaExceeded),
            Outcome::TimedOut { .. } => Some(Bucket::Timeout),
            Outcome::Interrupted { .. } => Some(Bucket::Interrupted),
            _ => None,
        }
    }

    /// Stable lower-case name (progress lines, logs).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::QuotaExceeded { .. } => "quota_exceeded",
            Outcome::TimedOut { .. } => "timed_out",
            Outcome::Interrupted { .. } => "interrupted",
            Outcome::Skipped => "skipped",
            Outcome::Panicked { .. } => "panicked",
        }
    }
}

/// Counters for the progress display: where the pending jobs are, and how the finished ones
/// ended. Pending states are exclusive: a job is in exactly one of the first four.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Pulled and waiting for a fork or the rate limiters.
    pub queued: u64,
    /// Waiting for a shell slot on their host.
    pub waiting_for_shell_slot: u64,
    /// Attempts in flight (holding a fork, or connecting without one).
    pub in_flight: u64,
    /// Of `in_flight`: attempts that gave their fork back while a slow first TCP connect is
    /// pending (not counted among the pending states: they are in flight).
    pub connecting: u64,
    /// Sleeping out a back-off.
    pub backing_off: u64,
    /// Retries scheduled so far (transient and quota).
    pub retried: u64,
    /// Finished: succeeded.
    pub succeeded: u64,
    /// Finished: failed.
    pub failed: u64,
    /// Finished: quota exceeded.
    pub quota_exceeded: u64,
    /// Finished: timed out.
    pub timed_out: u64,
    /// Finished: interrupted.
    pub interrupted: u64,
    /// Finished: skipped.
    pub skipped: u64,
    /// Finished: panicked.
    pub panicked: u64,
}

impl Progress {
    /// Jobs pulled and not finished.
    pub fn pending(&self) -> u64 {
        self.queued + self.waiting_for_shell_slot + self.in_flight + self.backing_off
    }

    /// Jobs finished.
    pub fn done(&self) -> u64 {
        self.succeeded
            + self.failed
            + self.quota_exceeded
            + self.timed_out
            + self.interrupted
            + self.skipped
            + self.panicked
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The counters at the end (this scheduler's, all runs so far).
    pub progress: Progress,
    /// Most attempts in flight at once (with `connecting`, up to `forks + connecting`).
    pub max_in_flight: usize,
    /// Most attempts at once that had given their fork back during a slow connect.
    pub max_connecting: usize,
    /// Most jobs pending at once.
    pub max_pending: usize,
    /// A second stop aborted the run: jobs in flight were dropped without a `Finished`.
    pub aborted: bool,
}

/// How far a stop has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StopLevel {
    /// Not stopped.
    Running,
    /// First stop: nothing new starts, attempts in flight are cancelled and cleaned up,
    /// pending and remaining jobs finish as skipped or interrupted.
    Stopping,
    /// Second stop: the run returns now.
    Aborted,
}

/// What the scheduler holds, for memory checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Hosts with a budget entry.
    pub hosts_tracked: usize,
    /// Per-host rate-limiter states.
    pub rate_keys: usize,
    /// Jobs pending.
    pub pending: u64,
}

/// The scheduler; clones share everything (hand one to the Ctrl-C handler).
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.shared.config)
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

/// A run started with [`Scheduler::start`].
pub struct Run<J: HostJob> {
    /// The events, in order per job.
    pub events: mpsc::Receiver<Event<J>>,
    /// The run itself; resolves to its summary.
    pub done: tokio::task::JoinHandle<Summary>,
}

impl Scheduler {
    /// A scheduler for `config`.
    pub fn new(config: SchedulerConfig) -> Result<Self, ConfigError> {
        if config.forks == 0 {
            return Err(ConfigError::ZeroForks);
        }
        if config.forks > Semaphore::MAX_PERMITS {
            return Err(ConfigError::TooManyForks {
                max: Semaphore::MAX_PERMITS,
            });
        }
        if config.retry.max_attempts == 0 {
            return Err(ConfigError::ZeroAttempts);
        }
        let limiters =
            Limiters::new(config.rate, config.per_host_rate).map_err(ConfigError::Rate)?;
        let jitter = config.seed.map_or_else(Jitter::from_entropy, Jitter::new);
        Ok(Self {
            shared: Arc::new(Shared {
                forks: Arc::new(Semaphore::new(config.forks)),
                connecting: Arc::new(Semaphore::new(config.effective_connecting())),
                limiters,
                budgets: ShellBudgets::new(config.default_max_shells),
                jitter,
                stop: watch::Sender::new(StopLevel::Running),
                counters: Counters::default(),
                starts: AtomicU64::new(0),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.shared.config
    }

    /// Ctrl-C: the first call stops the run gracefully, the second aborts it (see
    /// [`StopLevel`]). Returns the level reached.
    pub fn stop(&self) -> StopLevel {
        let mut reached = StopLevel::Aborted;
        self.shared.stop.send_modify(|level| {
            *level = match *level {
                StopLevel::Running => StopLevel::Stopping,
                _ => StopLevel::Aborted,
            };
            reached = *level;
        });
        reached
    }

    /// How far a stop has gone.
    pub fn stop_level(&self) -> StopLevel {
        *self.shared.stop.borrow()
    }

    /// The counters now.
    pub fn progress(&self) -> Progress {
        self.shared.counters.snapshot()
    }

    /// The shell budgets (shared by every job of every run of this scheduler).
    pub fn budgets(&self) -> &Arc<ShellBudgets> {
        &self.shared.budgets
    }

    /// What the scheduler holds now.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            hosts_tracked: self.shared.budgets.hosts_tracked(),
            rate_keys: self.shared.limiters.keys(),
            pending: self.progress().pending(),
        }
    }

    /// Drops per-host rate states that went back to fresh (done every 1,024 starts and at the
    /// end of a run; a host's state is fresh one rate interval after its last connection).
    pub fn retain_recent(&self) {
        self.shared.limiters.retain_recent();
    }

    /// Runs `jobs` on a spawned task; events arrive on a channel of `buffer` (at least 1).
    pub fn start<J, I>(&self, jobs: I, buffer: usize) -> Run<J>
    where
        J: HostJob,
        I: IntoIterator<Item = J>,
        I::IntoIter: Send + 'static,
    {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let this = self.clone();
        let jobs = jobs.into_iter();
        Run {
            events: rx,
            done: tokio::spawn(async move { this.run(jobs, tx).await }),
        }
    }

    /// Runs `jobs`, pulling them lazily, sending events to `events` (a slow consumer slows
    /// the run: that is the memory bound; a dropped receiver is ignored). Returns when every
    /// job pulled has finished, or at once on a second stop.
    pub async fn run<J, I>(&self, jobs: I, events: mpsc::Sender<Event<J>>) -> Summary
    where
        J: HostJob,
        I: IntoIterator<Item = J>,
    {
        let shared = &self.shared;
        let mut jobs = jobs.into_iter();
        let depth = shared.config.effective_queue_depth();
        let pending = Arc::new(Semaphore::new(depth));
        let mut tasks = JoinSet::new();
        let mut next_id = 0u64;
        let mut max_pending = 0usize;
        let mut aborted = false;

        // Pull jobs while there is room and no stop.
        loop {
            while let Some(joined) = tasks.try_join_next() {
                log_join_error(joined);
            }
            let permit = tokio::select! {
                biased;
                () = shared.stopped(StopLevel::Stopping) => break,
                permit = Arc::clone(&pending).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break, // never closed
                },
            };
            let Some(job) = jobs.next() else { break };
            let id = JobId(next_id);
            next_id += 1;
            let host: Arc<str> = Arc::from(job.host());
            let budget = shared.budgets.register(&host, job.shell_facts());
            let phase = PhaseTracker::new(Arc::clone(shared));
            max_pending = max_pending.max(depth - pending.available_permits());
            let queued = Event {
                job: id,
                host: Arc::clone(&host),
                kind: EventKind::Queued,
            };
            if !shared.send_unless_aborted(&events, queued).await {
                aborted = true;
                break;
            }
            let task = JobTask {
                shared: Arc::clone(shared),
                id,
                host,
                budget,
                events: events.clone(),
                phase,
                _pending: permit,
            };
            tasks.spawn(task.drive(job));
        }

        // Stopped: the jobs never pulled are skipped.
        if !aborted && self.stop_level() >= StopLevel::Stopping {
            for job in jobs.by_ref() {
                shared.counters.skipped.fetch_add(1, Ordering::Relaxed);
                let id = JobId(next_id);
                next_id += 1;
                let host: Arc<str> = Arc::from(job.host());
                let now = SystemTime::now();
                let skipped = Event {
                    job: id,
                    host,
                    kind: EventKind::Finished(Box::new(Finished {
                        job,
                        outcome: Outcome::Skipped,
                        attempts: 0,
                        started: None,
                        finished: now,
                        elapsed: Duration::ZERO,
                    })),
                };
                if !shared.send_unless_aborted(&events, skipped).await {
                    aborted = true;
                    break;
                }
            }
        }

        // Wait for the jobs pulled; a second stop drops them.
        while !aborted {
            tokio::select! {
                biased;
                () = shared.stopped(StopLevel::Aborted) => aborted = true,
                joined = tasks.join_next() => match joined {
                    Some(joined) => log_join_error(joined),
                    None => break,
                },
            }
        }
        // Aborted: drop every job now (their attempts' shells are left to the leak reaper);
        // `shutdown` only waits for the drops, which do not block.
        tasks.shutdown().await;
        self.retain_recent();
        Summary {
            progress: self.progress(),
            max_in_flight: shared.counters.max_in_flight.load(Ordering::Relaxed),
            max_connecting: shared.counters.max_connecting.load(Ordering::Relaxed),
            max_pending,
            aborted,
        }
    }
}

/// What every task of a scheduler shares.
struct Shared {
    config: SchedulerConfig,
    forks: Arc<Semaphore>,
    /// Attempts connecting without a fork (see `gate`).
    connecting: Arc<Semaphore>,
    limiters: Limiters,
    budgets: Arc<ShellBudgets>,
    jitter: Jitter,
    stop: watch::Sender<StopLevel>,
    counters: Counters,
    starts: AtomicU64,
}

impl Shared {
    /// Resolves once the stop level reaches `level`.
    async fn stopped(&self, level: StopLevel) {
        let mut rx = self.stop.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while this runs.
        let _ = rx.wait_for(|current| *current >= level).await;
    }

    /// Sends an event unless a second stop comes first; `false` when aborted.
    async fn send_unless_aborted<J: HostJob>(
        &self,
        events: &mpsc::Sender<Event<J>>,
        event: Event<J>,
    ) -> bool {
        tokio::select! {
            biased;
            () = self.stopped(StopLevel::Aborted) => false,
            // A closed channel means nobody listens; the run goes on regardless.
            _ = events.send(event) => true,
        }
    }

    /// Runs `fut` unless the run stops or `deadline` passes first.
    async fn unless_interrupted<F: Future>(
        &self,
        deadline: Option<Instant>,
        fut: F,
    ) -> Result<F::Output, CancelReason> {
        tokio::select! {
            biased;
            () = self.stopped(StopLevel::Stopping) => Err(CancelReason::Stop),
            () = sleep_until(deadline) => Err(CancelReason::Deadline),
            out = fut => Ok(out),
        }
    }

    /// The per-host turn of `budget`'s host when a per-host limit is configured: one job
    /// per host waits on the per-host limiter at a time (see `rate`).
    fn rate_turn(&self, budget: &HostBudget) -> Option<Arc<tokio::sync::Mutex<()>>> {
        match self.limiters.has_per_host() {
            true => budget.rate_gate(),
            false => None,
        }
    }

    /// Waits for the rate limiters to let one new connection to `host` through, and spends
    /// their tokens at that moment.
    async fn pass_rate_limits(&self, host: &Arc<str>, turn: Option<&tokio::sync::Mutex<()>>) {
        let _turn = match turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        self.limiters.until_ready(host).await;
        if self.starts.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.limiters.retain_recent();
        }
    }
}

/// Resolves when `gate`'s first connect has been pending for `after` (never without a gate
/// or a hand-off time).
async fn handoff_due(gate: Option<&AttemptGate>, after: Option<Duration>) {
    match (gate, after) {
        (Some(gate), Some(after)) => gate.handoff_due(after).await,
        _ => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn log_join_error(joined: Result<(), JoinError>) {
    if let Err(err) = joined
        && !err.is_cancelled()
    {
        tracing::error!(error = %err, "scheduler task failed");
    }
}

/// The atomic counters behind [`Progress`].
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    waiting_for_shell_slot: AtomicU64,
    in_flight: AtomicU64,
    connecting: AtomicU64,
    backing_off: AtomicU64,
    retried: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    quota_exceeded: AtomicU64,
    timed_out: AtomicU64,
    interrupted: AtomicU64,
    skipped: AtomicU64,
    panicked: AtomicU64,
    max_in_flight: AtomicUsize,
    max_connecting: AtomicUsize,
}

impl Counters {
    fn snapshot(&self) -> Progress {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Progress {
            queued: get(&self.queued),
            waiting_for_shell_slot: get(&self.waiting_for_shell_slot),
            in_flight: get(&self.in_flight),
            connecting: get(&self.connecting),
            backing_off: get(&self.backing_off),
            retried: get(&self.retried),
            succeeded: get(&self.succeeded),
            failed: get(&self.failed),
            quota_exceeded: get(&self.quota_exceeded),
            timed_out: get(&self.timed_out),
            interrupted: get(&self.interrupted),
            skipped: get(&self.skipped),
            panicked: get(&self.panicked),
        }
    }

    fn pending_state(&self, phase: Phase) -> Option<&AtomicU64> {
        match phase {
            Phase::Queued => Some(&self.queued),
            Phase::WaitingForShellSlot => Some(&self.waiting_for_shell_slot),
            Phase::InFlight => Some(&self.in_flight),
            Phase::BackingOff => Some(&self.backing_off),
            Phase::Done => None,
        }
    }

    fn finished<R, E>(&self, outcome: &Outcome<R, E>) {
        let counter = match outcome {
            Outcome::Succeeded(_) => &self.succeeded,
            Outcome::Failed { .. } => &self.failed,
            Outcome::QuotaExceeded { .. } => &self.quota_exceeded,
            Outcome::TimedOut { .. } => &self.timed_out,
            Outcome::Interrupted { .. } => &self.interrupted,
            Outcome::Skipped => &self.skipped,
            Outcome::Panicked { .. } => &self.panicked,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a pending job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    WaitingForShellSlot,
    InFlight,
    BackingOff,
    Done,
}

/// Keeps a job counted in exactly one pending state, and in none once dropped (also when the
/// task is aborted).
struct PhaseTracker {
    shared: Arc<Shared>,
    phase: Phase,
}

impl PhaseTracker {
    fn new(shared: Arc<Shared>) -> Self {
        shared.counters.queued.fetch_add(1, Ordering::Relaxed);
        Self {
            shared,
            phase: Phase::Queued,
        }
    }

    fn set(&mut self, phase: Phase) {
        let counters = &self.shared.counters;
        if let Some(old) = counters.pending_state(self.phase) {
            old.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(new) = counters.pending_state(phase) {
            let now = new.fetch_add(1, Ordering::Relaxed) + 1;
            if phase == Phase::InFlight {
                let now = usize::try_from(now).unwrap_or(usize::MAX);
                counters.max_in_flight.fetch_max(now, Ordering::Relaxed);
            }
        }
        self.phase = phase;
    }
}

impl Drop for PhaseTracker {
    fn drop(&mut self) {
        self.set(Phase::Done);
    }
}

/// One pulled job's task.
struct JobTask<J: HostJob> {
    shared: Arc<Shared>,
    id: JobId,
    host: Arc<str>,
    budget: HostBudget,
    events: mpsc::Sender<Event<J>>,
    phase: PhaseTracker,
    _pending: OwnedSemaphorePermit,
}

/// How one attempt ended, from the scheduler's side.
enum AttemptEnd<R, E> {
    /// It returned on its own.
    Returned(AttemptOutcome<R, E>),
    /// It was cancelled; it returned within the grace, or was abandoned.
    Cancelled {
        reason: CancelReason,
        returned: Option<AttemptOutcome<R, E>>,
    },
    /// It panicked.
    Panicked(String),
}

impl<J: HostJob> JobTask<J> {
    async fn drive(mut self, job: J) {
        let shared = Arc::clone(&self.shared);
        let policy = &shared.config.retry;
        let needed = job.shells_needed();
        let gated = job.connects_through_gate();
        let rate_turn = shared.rate_turn(&self.budget);
        let mut attempts = 0u32;
        let mut transient_failures = 0u32;
        let mut quota_retries = 0u32;
        let mut deadline: Option<Instant> = None;
        let mut first_start: Option<(Instant, SystemTime)> = None;
        let mut last_error: Option<J::Error> = None;

        let outcome = loop {
            // A wait cut short: before the first attempt a stop skips the job; after it, a
            // stop interrupts it and the deadline times it out.
            let interrupted = |reason: CancelReason, attempts: u32, last_error| match reason {
                CancelReason::Stop if attempts == 0 => Outcome::Skipped,
                CancelReason::Stop => Outcome::Interrupted { last_error },
                CancelReason::Deadline => Outcome::TimedOut { last_error },
            };

            // 2. A shell slot on the host.
            let shells = match self.budget.try_acquire(needed) {
                Some(permit) => permit,
                None => {
                    self.phase.set(Phase::WaitingForShellSlot);
                    let view = self.budget.view();
                    self.emit(EventKind::WaitingForShellSlot {
                        usable: view.map_or(0, |v| v.usable()),
                        in_use: view.map_or(0, |v| v.in_use),
                    })
                    .await;
                    match shared
                        .unless_interrupted(deadline, self.budget.acquire(needed))
                        .await
                    {
                        Ok(permit) => permit,
                        Err(reason) => break interrupted(reason, attempts, last_error),
                    }
                }
            };
            self.phase.set(Phase::Queued);

            // 3. A fork.
            let fork = match shared
                .unless_interrupted(deadline, Arc::clone(&shared.forks).acquire_owned())
                .await
            {
                Ok(Ok(fork)) => fork,
                // The semaphore is never closed; treat it as a stop if it were.
                Ok(Err(_)) => break interrupted(CancelReason::Stop, attempts, last_error),
                Err(reason) => break interrupted(reason, attempts, last_error),
            };

            // 4. The rate limiters. The `Started` event's channel slot is reserved first, so
            // nothing waits between spending the rate tokens and connecting (a token spent
            // early would let connections bunch up past the rate). A job that connects
            // through the gate spends them there instead, right before each TCP connect.
            let slot = match shared
                .unless_interrupted(deadline, self.events.reserve())
                .await
            {
                Ok(slot) => slot.ok(), // closed: nobody listens
                Err(reason) => break interrupted(reason, attempts, last_error),
            };
            if !gated
                && let Err(reason) = shared
                    .unless_interrupted(
                        deadline,
                        shared.pass_rate_limits(self.budget.key(), rate_turn.as_deref()),
                    )
                    .await
            {
                break interrupted(reason, attempts, last_error);
            }
            if *shared.stop.borrow() >= StopLevel::Stopping {
                break interrupted(CancelReason::Stop, attempts, last_error);
            }

            // 5. The attempt.
            attempts += 1;
            let (t0, _) = *first_start.get_or_insert_with(|| (Instant::now(), SystemTime::now()));
            if let Some(timeout) = shared.config.timeout {
                deadline.get_or_insert(t0 + timeout);
            }
            self.phase.set(Phase::InFlight);
            if let Some(slot) = slot {
                slot.send(Event {
                    job: self.id,
                    host: Arc::clone(&self.host),
                    kind: EventKind::Started { attempt: attempts },
                });
            }
            let cancel = CancelToken::new();
            // A gated attempt holds its fork in the gate, which gives it back during a slow
            // first connect and takes one again once connected.
            let (fork, gate) = match gated {
                true => {
                    let gate = Arc::new(AttemptGate::new(
                        Arc::clone(&shared),
                        Arc::clone(self.budget.key()),
                        rate_turn.clone(),
                        cancel.clone(),
                        fork,
                    ));
                    (None, Some(gate))
                }
                false => (Some(fork), None),
            };
            let ctx = AttemptContext {
                attempt: attempts,
                deadline,
                cancel,
                budget: self.budget.handle(),
                gate: gate.clone(),
            };
            let end = run_attempt(&shared, &job, ctx, deadline, gate.as_deref()).await;
            if let Some(gate) = &gate {
                gate.release();
            }
            if let AttemptEnd::Returned(AttemptOutcome::Quota { max_shells, .. }) = &end {
                self.budget.on_quota_fault(&shells, *max_shells);
            }
            self.report_budget_change().await;

            let (error, reason, retry_after) = match end {
                AttemptEnd::Returned(AttemptOutcome::Done(result))
                | AttemptEnd::Cancelled {
                    returned: Some(AttemptOutcome::Done(result)),
                    ..
                } => break Outcome::Succeeded(result),
                AttemptEnd::Panicked(message) => break Outcome::Panicked { message },
                AttemptEnd::Cancelled { reason, returned } => {
                    let last_error = returned.and_then(attempt_error).or(last_error);
                    break interrupted(reason, attempts, last_error);
                }
                AttemptEnd::Returned(AttemptOutcome::Permanent(error)) => {
                    break Outcome::Failed {
                        error,
                        retries_exhausted: false,
                    };
                }
                AttemptEnd::Returned(AttemptOutcome::Transient { error, retry_after }) => {
                    transient_failures += 1;
                    if transient_failures >= policy.max_attempts {
                        break Outcome::Failed {
                            error,
                            retries_exhausted: true,
                        };
                    }
                    let delay =
                        policy
                            .transient
                            .delay(transient_failures - 1, &shared.jitter, retry_after);
                    (error, RetryReason::Transient, delay)
                }
                AttemptEnd::Returned(AttemptOutcome::Quota { error, max_shells }) => {
                    quota_retries += 1;
                    if quota_retries > policy.max_quota_retries {
                        break Outcome::QuotaExceeded { error, max_shells };
                    }
                    let delay = policy.quota.delay(quota_retries - 1, &shared.jitter, None);
                    (error, RetryReason::Quota { max_shells }, delay)
                }
            };
            drop((fork, shells));

            // Back off, unless the deadline would pass first.
            if deadline.is_some_and(|d| Instant::now() + retry_after >= d) {
                break Outcome::TimedOut {
                    last_error: Some(error),
                };
            }
            shared.counters.retried.fetch_add(1, Ordering::Relaxed);
            self.phase.set(Phase::BackingOff);
            self.emit(EventKind::Retrying {
                attempt: attempts + 1,
                after: retry_after,
                reason,
                detail: error.to_string(),
            })
            .await;
            let slept = shared
                .unless_interrupted(deadline, tokio::time::sleep(retry_after))
                .await;
            last_error = Some(error);
            if let Err(reason) = slept {
                break interrupted(reason, attempts, last_error);
            }
            self.phase.set(Phase::Queued);
        };
        self.finish(job, outcome, attempts, first_start).await;
    }

    async fn emit(&self, kind: EventKind<J>) {
        let event = Event {
            job: self.id,
            host: Arc::clone(&self.host),
            kind,
        };
        // A closed channel means nobody listens; the job goes on regardless.
        let _ = self.events.send(event).await;
    }

    /// Emits `BudgetLearned` if what is learned about the host changed and no job of the
    /// host reported it yet.
    async fn report_budget_change(&self) {
        if let Some(budget) = self.budget.take_unreported() {
            self.emit(EventKind::BudgetLearned { budget }).await;
        }
    }

    async fn finish(
        mut self,
        job: J,
        outcome: Outcome<J::Output, J::Error>,
        attempts: u32,
        first_start: Option<(Instant, SystemTime)>,
    ) {
        self.phase.set(Phase::Done);
        self.shared.counters.finished(&outcome);
        let finished = Finished {
            job,
            outcome,
            attempts,
            started: first_start.map(|(_, wall)| wall),
            finished: SystemTime::now(),
            elapsed: first_start.map_or(Duration::ZERO, |(t0, _)| t0.elapsed()),
        };
        self.emit(EventKind::Finished(Box::new(finished))).await;
    }
}

/// Runs one attempt, cancelling it on a stop or the deadline and giving it the cleanup grace.
/// Meanwhile, a gated attempt whose first connect stays pending gives its fork back.
async fn run_attempt<J: HostJob>(
    shared: &Shared,
    job: &J,
    ctx: AttemptContext,
    deadline: Option<Instant>,
    gate: Option<&AttemptGate>,
) -> AttemptEnd<J::Output, J::Error> {
    let token = ctx.cancel.clone();
    // Boxed: a pending job's task then holds only the scheduler's state, not the space of
    // the attempt's whole state machine (tens of KB for a PSRP run) until it starts.
    let mut attempt = Box::pin(AssertUnwindSafe(job.attempt(ctx)).catch_unwind());
    let handoff_after = shared.config.connect_handoff_after;
    let reason = loop {
        tokio::select! {
            biased;
            out = &mut attempt => return returned(out),
            () = shared.stopped(StopLevel::Stopping) => break CancelReason::Stop,
            () = sleep_until(deadline) => break CancelReason::Deadline,
            () = handoff_due(gate, handoff_after) => {
                if let Some(gate) = gate {
                    gate.hand_off();
                }
            }
        }
    };
    token.cancel(reason);
    match tokio::time::timeout(shared.config.cleanup_grace, &mut attempt).await {
        Ok(Ok(out)) => AttemptEnd::Cancelled {
            reason,
            returned: Some(out),
        },
        Ok(Err(panic)) => AttemptEnd::Panicked(panic_message(panic.as_ref())),
        Err(_) => {
            tracing::warn!(
                ?reason,
                "attempt did not clean up within the grace; abandoned"
            );
            AttemptEnd::Cancelled {
                reason,
                returned: None,
            }
        }
    }
}

type Caught<T> = Result<T, Box<dyn std::any::Any + Send>>;

fn returned<R, E>(out: Caught<AttemptOutcome<R, E>>) -> AttemptEnd<R, E> {
    match out {
        Ok(outcome) => AttemptEnd::Returned(outcome),
        Err(panic) => AttemptEnd::Panicked(panic_message(panic.as_ref())),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_owned())
}

/// The error of a failed attempt (`None` for `Done`, handled before this is called).
fn attempt_error<R, E>(outcome: AttemptOutcome<R, E>) -> Option<E> {
    match outcome {
        AttemptOutcome::Done(_) => None,
        AttemptOutcome::Transient { error, .. }
        | AttemptOutcome::Quota { error, .. }
        | AttemptOutcome::Permanent(error) => Some(error),
    }
}

impl<J: HostJob> fmt::Debug for Event<J>
where
    J: fmt::Debug,
    J::Output: fmt::Debug,
    J::Error: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("job", &self.job)
            .field("host", &self.host)
            .field("kind", &self.kind)
            .finish()
    }
}

impl<J: HostJob> fmt::Debug for EventKind<J>
where
    J: fmt::Debug,
    J::Output: fmt::Debug,
    J::Error: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Queued => f.write_str("Queued"),
            EventKind::WaitingForShellSlot { usable, in_use } => f
                .debug_struct("WaitingForShellSlot")
                .field("usable", usable)
                .field("in_use", in_use)
                .finish(),
            EventKind::Started { attempt } => {
                f.debug_struct("Started").field("attempt", attempt).finish()
            }
            EventKind::BudgetLearned { budget } => f
                .debug_struct("BudgetLearned")
                .field("budget", budget)
                .finish(),
            EventKind::Retrying {
                attempt,
                after,
                reason,
                detail,
            } => f
                .debug_struct("Retrying")
                .field("attempt", attempt)
                .field("after", after)
                .field("reason", reason)
                .field("detail", detail)
                .finish(),
            EventKind::Finished(finished) => f.debug_tuple("Finished").field(finished).finish(),
        }
    }
}

impl<J: HostJob> fmt::Debug for Finished<J>
where
    J: fmt::Debug,
    J::Output: fmt::Debug,
    J::Error: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finished")
            .field("job", &self.job)
            .field("outcome", &self.outcome)
            .field("attempts", &self.attempts)
            .field("elapsed", &self.elapsed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
