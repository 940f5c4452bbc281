//! Scheduler tests. Timing runs on tokio's paused clock (`start_paused`): virtual time, so the
//! assertions on durations are exact statements about the schedule, not measurements.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;

use super::*;
use crate::budget::BudgetSource;
use crate::retry::Backoff;

/// What one attempt of a test job does.
#[derive(Debug, Clone)]
enum Step {
    /// Open `shells` on the fake host (quota-checked like WinRM does), work, close, succeed.
    Work(Duration),
    /// Fail transiently.
    Transient(Option<Duration>),
    /// Fail for good.
    Permanent,
    /// Wait for the cancel, record it, clean up for `cleanup`, return an error.
    Hang { cleanup: Duration },
    /// Never return (ignores the cancel).
    Deaf,
    /// Panic.
    Panic,
    /// A job that connects through the gate: `before` of its own (journal, client), then
    /// `connects` connections, each passing the gate, taking `connect` to open and `work`
    /// once open. A connect of [`BLACKHOLE`] or more never opens: the attempt fails.
    Connect {
        before: Duration,
        connects: u32,
        connect: Duration,
        work: Duration,
    },
}

/// A connect time that stands for a host that never answers the SYN.
const BLACKHOLE: Duration = Duration::from_secs(5);

/// The fake fleet the test jobs run against, and what they observed.
#[derive(Debug, Default)]
struct Probe {
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
    /// Per host: shells open now (ours), most at once.
    shells: Mutex<HashMap<String, (u32, u32)>>,
    /// Per host: the server's MaxShellsPerUser.
    limits: HashMap<String, u32>,
    /// Per host: shells someone else holds.
    foreign: Mutex<HashMap<String, u32>>,
    quota_faults: AtomicU32,
    cancels: Mutex<Vec<(String, CancelReason)>>,
    starts: Mutex<Vec<Instant>>,
    /// When each connection passed the gate (its rate tokens spent, the connect begins).
    connects: Mutex<Vec<Instant>>,
    /// Connections open and working now, most at once.
    working: AtomicU32,
    max_working: AtomicU32,
}

impl Probe {
    fn with_limits(limits: &[(&str, u32)]) -> Arc<Self> {
        Arc::new(Self {
            limits: limits.iter().map(|(h, n)| ((*h).to_owned(), *n)).collect(),
            ..Self::default()
        })
    }

    fn max_shells(&self, host: &str) -> u32 {
        self.shells.lock().unwrap().get(host).map_or(0, |s| s.1)
    }
}

#[derive(Debug)]
struct TestJob {
    host: String,
    plan: Vec<Step>,
    shells: u32,
    facts: ShellFacts,
    /// MaxShellsPerUser the attempt "reads from the config Get" and reports.
    config_get: Option<u32>,
    /// Connects through the gate ([`HostJob::connects_through_gate`]).
    gated: bool,
    probe: Arc<Probe>,
}

fn job(probe: &Arc<Probe>, host: &str, plan: Vec<Step>) -> TestJob {
    TestJob {
        host: host.to_owned(),
        plan,
        shells: 1,
        facts: ShellFacts::default(),
        config_get: None,
        gated: false,
        probe: Arc::clone(probe),
    }
}

/// A job connecting through the gate, `Step::Connect` with one connection.
fn gated(
    probe: &Arc<Probe>,
    host: &str,
    before_ms: u64,
    connect: Duration,
    work_ms: u64,
) -> TestJob {
    TestJob {
        gated: true,
        ..job(
            probe,
            host,
            vec![Step::Connect {
                before: Duration::from_millis(before_ms),
                connects: 1,
                connect,
                work: Duration::from_millis(work_ms),
            }],
        )
    }
}

/// The busiest one-second window of `times`.
fn busiest_second(times: &[Instant]) -> usize {
    let mut times = times.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn work(ms: u64) -> Vec<Step> {
    vec![Step::Work(Duration::from_millis(ms))]
}

/// Counts an attempt in flight while alive.
struct InFlight<'a>(&'a Probe);

impl<'a> InFlight<'a> {
    fn enter(probe: &'a Probe) -> Self {
        let now = probe.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        probe.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(probe)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Shells open on the fake host while alive.
struct OpenShells<'a> {
    probe: &'a Probe,
    host: &'a str,
    n: u32,
}

impl Drop for OpenShells<'_> {
    fn drop(&mut self) {
        let mut shells = self.probe.shells.lock().unwrap();
        if let Some(s) = shells.get_mut(self.host) {
            s.0 -= self.n;
        }
    }
}

impl TestJob {
    /// Opens shells as WinRM would: refused with the real quota text past MaxShellsPerUser.
    fn open_shells(&self) -> Result<OpenShells<'_>, AttemptOutcome<u32, String>> {
        let probe = &*self.probe;
        let foreign = probe
            .foreign
            .lock()
            .unwrap()
            .get(&self.host)
            .copied()
            .unwrap_or(0);
        let mut shells = probe.shells.lock().unwrap();
        let entry = shells.entry(self.host.clone()).or_default();
        if let Some(&limit) = probe.limits.get(&self.host)
            && entry.0 + foreign + self.shells > limit
        {
            probe.quota_faults.fetch_add(1, Ordering::SeqCst);
            return Err(AttemptOutcome::Quota {
                error: format!(
                    "This user is allowed a maximum number of {limit} concurrent shells, \
                     which has been exceeded."
                ),
                max_shells: Some(limit),
            });
        }
        entry.0 += self.shells;
        entry.1 = entry.1.max(entry.0);
        Ok(OpenShells {
            probe,
            host: &self.host,
            n: self.shells,
        })
    }
}

impl HostJob for TestJob {
    type Output = u32;
    type Error = String;

    fn host(&self) -> &str {
        &self.host
    }

    fn shells_needed(&self) -> u32 {
        self.shells
    }

    fn shell_facts(&self) -> ShellFacts {
        self.facts
    }

    fn connects_through_gate(&self) -> bool {
        self.gated
    }

    async fn attempt(&self, ctx: AttemptContext) -> AttemptOutcome<u32, String> {
        self.probe.starts.lock().unwrap().push(Instant::now());
        let _in_flight = InFlight::enter(&self.probe);
        if let Some(max) = self.config_get {
            ctx.budget.learn(max, BudgetSource::ConfigGet);
        }
        let index = usize::try_from(ctx.attempt - 1).unwrap();
        let step = self.plan[index.min(self.plan.len() - 1)].clone();
        match step {
            Step::Work(duration) => {
                // Connecting and authenticating take a moment before the shell is asked for,
                // as on the wire: attempts that start together are in flight together.
                tokio::time::sleep(CONNECT).await;
                let _open = match self.open_shells() {
                    Ok(open) => open,
                    Err(quota) => return quota,
                };
                tokio::time::sleep(duration).await;
                AttemptOutcome::Done(ctx.attempt)
            }
            Step::Transient(retry_after) => AttemptOutcome::Transient {
                error: format!("connection reset (attempt {})", ctx.attempt),
                retry_after,
            },
            Step::Permanent => AttemptOutcome::Permanent("access denied".to_owned()),
            Step::Hang { cleanup } => {
                let _open = self.open_shells().ok();
                let reason = ctx.cancel.cancelled().await;
                assert_eq!(ctx.cancel.reason(), Some(reason));
                self.probe
                    .cancels
                    .lock()
                    .unwrap()
                    .push((self.host.clone(), reason));
                tokio::time::sleep(cleanup).await;
                AttemptOutcome::Transient {
                    error: format!("cancelled: {reason:?}"),
                    retry_after: None,
                }
            }
            Step::Deaf => {
                std::future::pending::<()>().await;
                AttemptOutcome::Done(0)
            }
            Step::Panic => panic!("boom on {}", self.host),
            Step::Connect {
                before,
                connects,
                connect,
                work,
            } => {
                use crate::http::ConnectGate as _;
                tokio::time::sleep(before).await;
                // Ungated (a control), the scheduler spent the tokens before the attempt.
                assert_eq!(ctx.gate.is_some(), self.gated);
                let gate = ctx.gate.clone();
                for _ in 0..connects {
                    if let Some(gate) = &gate
                        && let Err(error) = gate.before_connect().await
                    {
                        return AttemptOutcome::Permanent(error.to_string());
                    }
                    self.probe.connects.lock().unwrap().push(Instant::now());
                    if connect >= BLACKHOLE {
                        tokio::time::sleep(BLACKHOLE).await;
                        return AttemptOutcome::Permanent("connect timed out".to_owned());
                    }
                    tokio::time::sleep(connect).await;
                    if let Some(gate) = &gate
                        && let Err(error) = gate.after_connect().await
                    {
                        return AttemptOutcome::Permanent(error.to_string());
                    }
                    let now = self.probe.working.fetch_add(1, Ordering::SeqCst) + 1;
                    self.probe.max_working.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(work).await;
                    self.probe.working.fetch_sub(1, Ordering::SeqCst);
                }
                AttemptOutcome::Done(ctx.attempt)
            }
        }
    }
}

/// Virtual time a test attempt takes to connect before it asks for its shell.
const CONNECT: Duration = Duration::from_millis(5);

fn config() -> SchedulerConfig {
    SchedulerConfig {
        seed: Some(1),
        ..SchedulerConfig::default()
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Runs `jobs` and collects every event.
async fn run_all(scheduler: &Scheduler, jobs: Vec<TestJob>) -> (Summary, Vec<Event<TestJob>>) {
    let mut run = scheduler.start(jobs, 64);
    let mut events = Vec::new();
    while let Some(event) = run.events.recv().await {
        events.push(event);
    }
    (run.done.await.unwrap(), events)
}

/// The Finished events, by job id (asserting there is exactly one per job).
fn finished(events: &[Event<TestJob>]) -> HashMap<u64, &Finished<TestJob>> {
    let mut out = HashMap::new();
    for event in events {
        if let EventKind::Finished(f) = &event.kind {
            assert!(
                out.insert(event.job.0, &**f).is_none(),
                "two Finished for {:?}",
                event.job
            );
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_forks_cap_is_never_exceeded() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        forks: 16,
        ..config()
    })
    .unwrap();
    let jobs = (0..500)
        .map(|i| job(&probe, &format!("h{i}"), work(10 + i % 7)))
        .collect();
    let (summary, events) = run_all(&scheduler, jobs).await;
    assert_eq!(probe.max_in_flight.load(Ordering::SeqCst), 16);
    assert_eq!(summary.max_in_flight, 16);
    assert_eq!(summary.progress.succeeded, 500);
    assert_eq!(finished(&events).len(), 500);
    // Per job: Queued, Started, Finished, in that order.
    let mut kinds: HashMap<u64, Vec<&'static str>> = HashMap::new();
    for e in &events {
        let k = match e.kind {
            EventKind::Queued => "queued",
            EventKind::Started { .. } => "started",
            EventKind::Finished(_) => "finished",
            _ => "other",
        };
        kinds.entry(e.job.0).or_default().push(k);
    }
    assert!(
        kinds
            .values()
            .all(|k| k == &["queued", "started", "finished"])
    );
}

#[tokio::test(start_paused = true)]
async fn a_known_budget_is_never_exceeded_by_several_jobs_on_one_host() {
    let probe = Probe::with_limits(&[("busy", 2)]);
    let scheduler = Scheduler::new(config()).unwrap();
    let mut jobs = Vec::new();
    for i in 0..8 {
        let mut j = job(&probe, "busy", work(100 + i));
        // The state store learned MaxShellsPerUser=2 in an earlier run.
        j.facts = ShellFacts {
            max_shells: Some(2),
            open_shells: 0,
        };
        jobs.push(j);
        jobs.push(job(&probe, &format!("other{i}"), work(50)));
    }
    let (summary, events) = run_all(&scheduler, jobs).await;
    assert_eq!(summary.progress.succeeded, 16);
    assert_eq!(probe.quota_faults.load(Ordering::SeqCst), 0);
    assert_eq!(probe.max_shells("busy"), 2);
    let waits = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::WaitingForShellSlot { usable: 2, .. }))
        .count();
    assert_eq!(waits, 6);
    assert_eq!(scheduler.footprint().hosts_tracked, 0);
}

#[tokio::test(start_paused = true)]
async fn a_quota_fault_teaches_the_budget_and_requeues_instead_of_failing() {
    // MaxShellsPerUser=2 on the host, nothing known beforehand (default budget 5): the first
    // wave of five meets three quota faults, then the learned budget holds.
    let probe = Probe::with_limits(&[("busy", 2)]);
    let scheduler = Scheduler::new(config()).unwrap();
    let jobs = (0..8)
        .map(|i| job(&probe, "busy", work(1_000 + i)))
        .collect();
    let (summary, events) = run_all(&scheduler, jobs).await;
    assert_eq!(summary.progress.succeeded, 8);
    assert_eq!(summary.progress.quota_exceeded, 0);
    assert_eq!(probe.quota_faults.load(Ordering::SeqCst), 3);
    assert_eq!(probe.max_shells("busy"), 2);
    let learned: Vec<BudgetView> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::BudgetLearned { budget } => Some(budget),
            _ => None,
        })
        .collect();
    assert_eq!(learned.len(), 1);
    assert_eq!(
        (learned[0].max_shells, learned[0].source),
        (2, BudgetSource::QuotaFault)
    );
    let quota_retries = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Retrying {
                    reason: RetryReason::Quota {
                        max_shells: Some(2)
                    },
                    ..
                }
            )
        })
        .count();
    assert_eq!(quota_retries, 3);
    assert_eq!(summary.progress.retried, 3);
}

#[tokio::test(start_paused = true)]
async fn a_config_get_raises_the_budget_for_the_hosts_other_jobs() {
    let probe = Probe::with_limits(&[("h", 30)]);
    let scheduler = Scheduler::new(SchedulerConfig {
        default_max_shells: 1,
        ..config()
    })
    .unwrap();
    let jobs = (0..12)
        .map(|_| TestJob {
            config_get: Some(4),
            ..job(&probe, "h", work(1_000))
        })
        .collect();
    let (summary, events) = run_all(&scheduler, jobs).await;
    assert_eq!(summary.progress.succeeded, 12);
    // The first job ran alone (budget 1) and learned 4; the rest ran four at a time.
    assert_eq!(probe.max_shells("h"), 4);
    let learned: Vec<BudgetView> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::BudgetLearned { budget } => Some(budget),
            _ => None,
        })
        .collect();
    assert_eq!(learned.len(), 1);
    assert_eq!(
        (learned[0].max_shells, learned[0].source),
        (4, BudgetSource::ConfigGet)
    );
}

#[tokio::test(start_paused = true)]
async fn sweeps_need_no_shell_slot() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        default_max_shells: 1,
        ..config()
    })
    .unwrap();
    let jobs = (0..10)
        .map(|_| TestJob {
            shells: 0,
            ..job(&probe, "h", work(1_000))
        })
        .collect();
    let t0 = Instant::now();
    let (summary, events) = run_all(&scheduler, jobs).await;
    assert_eq!(summary.progress.succeeded, 10);
    assert_eq!(probe.max_in_flight.load(Ordering::SeqCst), 10);
    assert_eq!(t0.elapsed(), CONNECT + Duration::from_secs(1));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::WaitingForShellSlot { .. }))
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_back_off_interrupts_with_the_last_error() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(config()).unwrap();
    let flaky = job(
        &probe,
        "flaky",
        vec![Step::Transient(Some(Duration::from_secs(20)))],
    );
    let mut run = scheduler.start(vec![flaky], 8);
    let mut finished = None;
    while let Some(event) = run.events.recv().await {
        match event.kind {
            EventKind::Retrying { .. } => {
                assert_eq!(scheduler.progress().backing_off, 1);
                scheduler.stop();
            }
            EventKind::Finished(f) => finished = Some(f),
            _ => {}
        }
    }
    run.done.await.unwrap();
    let f = finished.unwrap();
    assert!(matches!(
        &f.outcome,
        Outcome::Interrupted { last_error: Some(e) } if e.contains("attempt 1")
    ));
    assert_eq!(f.attempts, 1);
    assert!(f.elapsed < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_foreign_shell_delays_the_job_until_it_closes() {
    let probe = Probe::with_limits(&[("h", 1)]);
    probe.foreign.lock().unwrap().insert("h".to_owned(), 1);
    let scheduler = Scheduler::new(config()).unwrap();
    let releaser = {
        let probe = Arc::clone(&probe);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            probe.foreign.lock().unwrap().insert("h".to_owned(), 0);
        })
    };
    let (summary, events) = run_all(&scheduler, vec![job(&probe, "h", work(10))]).await;
    releaser.await.unwrap();
    let done = finished(&events);
    let f = done[&0];
    assert!(matches!(f.outcome, Outcome::Succeeded(n) if n == f.attempts));
    assert!(f.attempts > 1);
    assert!(f.elapsed >= Duration::from_secs(3));
    assert_eq!(summary.progress.quota_exceeded, 0);
    assert_eq!(
        u64::from(probe.quota_faults.load(Ordering::SeqCst)),
        u64::from(f.attempts) - 1
    );
}

#[tokio::test(start_paused = true)]
async fn quota_requeues_are_bounded() {
    let probe = Probe::with_limits(&[("h", 1)]);
    probe.foreign.lock().unwrap().insert("h".to_owned(), 1);
    let scheduler = Scheduler::new(SchedulerConfig {
        retry: RetryPolicy {
            max_quota_retries: 4,
            ..RetryPolicy::default()
        },
        ..config()
    })
    .unwrap();
    let (summary, events) = run_all(&scheduler, vec![job(&probe, "h", work(10))]).await;
    let f = finished(&events)[&0];
    assert!(matches!(
        f.outcome,
        Outcome::QuotaExceeded {
            max_shells: Some(1),
            ..
        }
    ));
    assert_eq!(f.outcome.bucket(), Some(Bucket::QuotaExceeded));
    assert_eq!(f.attempts, 5);
    assert_eq!(summary.progress.quota_exceeded, 1);
}

#[tokio::test(start_paused = true)]
async fn only_transient_failures_are_retried_and_attempts_are_bounded() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(config()).unwrap();
    let flaky = vec![
        Step::Transient(None),
        Step::Transient(None),
        Step::Work(Duration::ZERO),
    ];
    let jobs = vec![
        job(&probe, "flaky", flaky),
        job(&probe, "denied", vec![Step::Permanent]),
        job(&probe, "down", vec![Step::Transient(None)]),
        job(
            &probe,
            "slow",
            vec![
                Step::Transient(Some(Duration::from_secs(5))),
                Step::Work(Duration::ZERO),
            ],
        ),
    ];
    let (summary, events) = run_all(&scheduler, jobs).await;
    let done = finished(&events);
    assert!(matches!(done[&0].outcome, Outcome::Succeeded(3)));
    assert_eq!(done[&0].attempts, 3);
    assert!(matches!(
        &done[&1].outcome,
        Outcome::Failed { error, retries_exhausted: false } if error == "access denied"
    ));
    assert_eq!(done[&1].attempts, 1);
    assert!(matches!(
        &done[&2].outcome,
        Outcome::Failed { error, retries_exhausted: true } if error.contains("attempt 3")
    ));
    assert_eq!(done[&2].attempts, 3);
    assert!(matches!(done[&3].outcome, Outcome::Succeeded(2)));
    let retries: Vec<(u64, u32, Duration)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Retrying { attempt, after, .. } => Some((e.job.0, attempt, after)),
            _ => None,
        })
        .collect();
    let per_job = |j| retries.iter().filter(|r| r.0 == j).count();
    assert_eq!(
        (per_job(0), per_job(1), per_job(2), per_job(3)),
        (2, 0, 2, 1)
    );
    // Retry k waits at most base * 2^k; Retry-After is a floor.
    let base = RetryPolicy::default().transient.base;
    for &(j, attempt, after) in &retries {
        if j == 3 {
            assert!(after >= Duration::from_secs(5));
        } else {
            assert!(
                after <= base * 2u32.pow(attempt - 2),
                "{j} {attempt} {after:?}"
            );
        }
    }
    assert_eq!(summary.progress.retried, 5);
    assert_eq!(summary.progress.failed, 2);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cancels_the_attempt_and_the_job_cleans_up() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        timeout: Some(Duration::from_secs(10)),
        cleanup_grace: Duration::from_secs(5),
        ..config()
    })
    .unwrap();
    let jobs = vec![
        job(
            &probe,
            "hung",
            vec![Step::Hang {
                cleanup: Duration::from_secs(1),
            }],
        ),
        job(&probe, "deaf", vec![Step::Deaf]),
        job(&probe, "quick", work(100)),
        // Back-off that would end after the deadline: times out without sleeping it out.
        job(
            &probe,
            "late",
            vec![Step::Transient(Some(Duration::from_secs(30)))],
        ),
    ];
    let (summary, events) = run_all(&scheduler, jobs).await;
    let done = finished(&events);
    assert!(matches!(
        &done[&0].outcome,
        Outcome::TimedOut { last_error: Some(e) } if e == "cancelled: Deadline"
    ));
    assert_eq!(done[&0].elapsed, Duration::from_secs(11));
    assert_eq!(done[&0].outcome.bucket(), Some(Bucket::Timeout));
    // The deaf job is abandoned after the grace.
    assert!(matches!(
        done[&1].outcome,
        Outcome::TimedOut { last_error: None }
    ));
    assert_eq!(done[&1].elapsed, Duration::from_secs(15));
    assert!(matches!(done[&2].outcome, Outcome::Succeeded(1)));
    assert!(matches!(
        &done[&3].outcome,
        Outcome::TimedOut { last_error: Some(e) } if e.contains("attempt 1")
    ));
    assert_eq!(done[&3].elapsed, Duration::ZERO);
    assert_eq!(
        *probe.cancels.lock().unwrap(),
        [("hung".to_owned(), CancelReason::Deadline)]
    );
    assert_eq!(probe.max_shells("hung"), 1);
    assert_eq!(probe.shells.lock().unwrap()["hung"].0, 0, "shell left open");
    assert_eq!(summary.progress.timed_out, 3);
}

#[tokio::test(start_paused = true)]
async fn stop_skips_queued_jobs_and_cancels_the_ones_in_flight() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        forks: 2,
        queue_depth: 4,
        ..config()
    })
    .unwrap();
    let hang = || {
        vec![Step::Hang {
            cleanup: Duration::from_millis(300),
        }]
    };
    let jobs: Vec<TestJob> = (0..10)
        .map(|i| job(&probe, &format!("h{i}"), hang()))
        .collect();
    let mut run = scheduler.start(jobs, 4);
    let mut events = Vec::new();
    let mut started = 0;
    while let Some(event) = run.events.recv().await {
        if matches!(event.kind, EventKind::Started { .. }) {
            started += 1;
            if started == 2 {
                assert_eq!(scheduler.stop(), StopLevel::Stopping);
            }
        }
        events.push(event);
    }
    let summary = run.done.await.unwrap();
    assert!(!summary.aborted);
    let done = finished(&events);
    assert_eq!(done.len(), 10);
    let interrupted: Vec<u64> = done
        .iter()
        .filter(|(_, f)| matches!(f.outcome, Outcome::Interrupted { .. }))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(interrupted.len(), 2);
    assert!(done.values().all(|f| match f.outcome {
        Outcome::Interrupted { .. } => f.attempts == 1,
        Outcome::Skipped => f.attempts == 0 && f.outcome.status() == Status::Skipped,
        _ => false,
    }));
    // The in-flight jobs saw the stop and cleaned up within the grace.
    let cancels = probe.cancels.lock().unwrap().clone();
    assert_eq!(cancels.len(), 2);
    assert!(cancels.iter().all(|(_, r)| *r == CancelReason::Stop));
    assert!(probe.shells.lock().unwrap().values().all(|s| s.0 == 0));
    assert_eq!(
        (summary.progress.interrupted, summary.progress.skipped),
        (2, 8)
    );
    // Only queue_depth jobs were ever pulled; the rest were skipped straight from the iterator.
    let queued = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Queued))
        .count();
    assert_eq!(queued, 4);
    assert_eq!(scheduler.footprint().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn a_second_stop_aborts_at_once() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        cleanup_grace: Duration::from_secs(3600),
        ..config()
    })
    .unwrap();
    let jobs: Vec<TestJob> = (0..3)
        .map(|i| job(&probe, &format!("h{i}"), vec![Step::Deaf]))
        .collect();
    let mut run = scheduler.start(jobs, 16);
    let mut started = 0;
    while started < 3 {
        if let Some(Event {
            kind: EventKind::Started { .. },
            ..
        }) = run.events.recv().await
        {
            started += 1;
        }
    }
    let t0 = Instant::now();
    assert_eq!(scheduler.stop(), StopLevel::Stopping);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(scheduler.stop(), StopLevel::Aborted);
    let summary = run.done.await.unwrap();
    assert!(summary.aborted);
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(summary.progress.done(), 0);
    assert_eq!(scheduler.footprint().pending, 0);
    assert_eq!(scheduler.footprint().hosts_tracked, 0);
    assert_eq!(scheduler.stop(), StopLevel::Aborted);
}

#[tokio::test(start_paused = true)]
async fn a_stop_before_the_run_skips_everything() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(config()).unwrap();
    scheduler.stop();
    let jobs = (0..5)
        .map(|i| job(&probe, &format!("h{i}"), work(1)))
        .collect();
    let (summary, events) = run_all(&scheduler, jobs).await;
    assert_eq!(summary.progress.skipped, 5);
    assert_eq!(events.len(), 5);
    assert!(probe.starts.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_global_rate_limits_starts_in_virtual_time() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        rate: Some(RateLimit::per_second(nz(50)).with_burst(nz(5))),
        ..config()
    })
    .unwrap();
    let n = 205;
    let jobs = (0..n)
        .map(|i| job(&probe, &format!("h{i}"), work(0)))
        .collect();
    let t0 = Instant::now();
    let (summary, _) = run_all(&scheduler, jobs).await;
    assert_eq!(summary.progress.succeeded, n);
    let starts = probe.starts.lock().unwrap().clone();
    // N starts took at least (N - burst) / rate.
    assert!(t0.elapsed() >= Duration::from_millis((n - 5) * 1000 / 50));
    // No one-second window holds more than rate + burst starts.
    for (i, s) in starts.iter().enumerate() {
        let in_window = starts[i..]
            .iter()
            .take_while(|t| t.duration_since(*s) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 55,
            "{in_window} starts in the second after start {i}"
        );
    }
}

/// The rate limits count connections: a job connecting through the gate spends its tokens
/// right before the connect, so a variable delay between the start of the attempt and its
/// connect (journal fsync, client set-up) cannot bunch connections past rate + burst. The
/// control runs the same jobs with the tokens spent at the start of the attempt.
#[tokio::test(start_paused = true)]
async fn the_rate_limits_connections_not_attempt_starts() {
    let rate = Some(RateLimit::per_second(nz(50)).with_burst(nz(5)));
    let n = 300u64;
    // 990 ms down to 0 between the start and the connect, in blocks of 100 starts: a stall
    // (an fsync behind a busy disk) that clears, releasing the attempts behind it together.
    let delay = |i: u64| (99 - i % 100) * 10;
    let mut busiest = Vec::new();
    for through_gate in [true, false] {
        let probe = Probe::with_limits(&[]);
        let scheduler = Scheduler::new(SchedulerConfig {
            forks: 64,
            rate,
            ..config()
        })
        .unwrap();
        let jobs = (0..n)
            .map(|i| TestJob {
                gated: through_gate,
                ..gated(&probe, &format!("h{i}"), delay(i), CONNECT, 20)
            })
            .collect();
        let t0 = Instant::now();
        let (summary, _) = run_all(&scheduler, jobs).await;
        assert_eq!(summary.progress.succeeded, n);
        let connects = probe.connects.lock().unwrap().clone();
        assert_eq!(connects.len() as u64, n);
        assert!(t0.elapsed() >= Duration::from_millis((n - 5) * 1000 / 50));
        busiest.push(busiest_second(&connects));
    }
    println!(
        "busiest second at 50/s:5: {} connections through the gate, {} with tokens at the start",
        busiest[0], busiest[1]
    );
    assert!(busiest[0] <= 55, "through the gate: {}", busiest[0]);
    assert!(busiest[1] > 55, "tokens at the start: {}", busiest[1]);
}

/// Every new connection spends a token (a reconnect too), and a cancelled attempt that never
/// connected gives up its wait at once.
#[tokio::test(start_paused = true)]
async fn every_connection_through_the_gate_spends_a_token() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        rate: Some(RateLimit::per_second(nz(10))),
        ..config()
    })
    .unwrap();
    let jobs = (0..4)
        .map(|i| TestJob {
            gated: true,
            ..job(
                &probe,
                &format!("h{i}"),
                vec![Step::Connect {
                    before: Duration::ZERO,
                    connects: 3,
                    connect: CONNECT,
                    work: Duration::ZERO,
                }],
            )
        })
        .collect();
    let t0 = Instant::now();
    let (summary, _) = run_all(&scheduler, jobs).await;
    assert_eq!(summary.progress.succeeded, 4);
    let mut connects: Vec<Duration> = probe
        .connects
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.duration_since(t0))
        .collect();
    connects.sort();
    // Twelve connections 100 ms apart.
    assert_eq!(connects.len(), 12);
    assert_eq!(*connects.last().unwrap(), Duration::from_millis(1_100));
    assert!(
        connects
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_millis(100))
    );

    // A stop while jobs wait for their first token: they end skipped-or-interrupted at once,
    // without connecting.
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        rate: Some(RateLimit::per_second(nz(1)).with_burst(nz(1))),
        ..config()
    })
    .unwrap();
    let jobs: Vec<TestJob> = (0..5)
        .map(|i| gated(&probe, &format!("h{i}"), 0, CONNECT, 0))
        .collect();
    let mut run = scheduler.start(jobs, 64);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(scheduler.stop(), StopLevel::Stopping);
    let stopped_at = Instant::now();
    let mut done = Vec::new();
    while let Some(event) = run.events.recv().await {
        if let EventKind::Finished(f) = event.kind {
            done.push(f.outcome.name());
        }
    }
    run.done.await.unwrap();
    assert_eq!(
        Instant::now(),
        stopped_at,
        "nobody waited for a token after the stop"
    );
    // Two connected (at 0 s and 1 s), three were cancelled while waiting for a token.
    assert_eq!(probe.connects.lock().unwrap().len(), 2);
    assert_eq!(done.iter().filter(|o| **o == "succeeded").count(), 2);
    assert_eq!(done.iter().filter(|o| **o == "interrupted").count(), 3);
}

/// Runs `jobs` and returns when each one finished (virtual time since the start) and how.
async fn finish_times(
    scheduler: &Scheduler,
    jobs: Vec<TestJob>,
) -> (Summary, HashMap<String, (Duration, &'static str)>) {
    let t0 = Instant::now();
    let mut run = scheduler.start(jobs, 64);
    let mut done = HashMap::new();
    while let Some(event) = run.events.recv().await {
        if let EventKind::Finished(f) = event.kind {
            done.insert(f.job.host.clone(), (t0.elapsed(), f.outcome.name()));
        }
    }
    (run.done.await.unwrap(), done)
}

/// Hosts that never answer the SYN give their fork back after `connect_handoff_after`, so
/// the healthy hosts behind them do not wait out their connect timeouts; `forks` still
/// bounds the attempts working on an open connection. The control never hands off.
#[tokio::test(start_paused = true)]
async fn hosts_that_never_answer_do_not_hold_the_forks() {
    let mut last_healthy = Vec::new();
    for handoff in [Some(Duration::from_secs(1)), None] {
        let probe = Probe::with_limits(&[]);
        let scheduler = Scheduler::new(SchedulerConfig {
            forks: 4,
            connect_handoff_after: handoff,
            ..config()
        })
        .unwrap();
        assert_eq!(scheduler.config().effective_connecting(), 8);
        // Eight blackholed hosts first (5 s connect timeouts), then forty healthy ones of
        // 100 ms each.
        let mut jobs: Vec<TestJob> = (0..8)
            .map(|i| gated(&probe, &format!("dark{i}"), 0, BLACKHOLE, 0))
            .collect();
        jobs.extend((0..40).map(|i| gated(&probe, &format!("ok{i}"), 0, CONNECT, 100)));
        let (summary, done) = finish_times(&scheduler, jobs).await;
        assert_eq!(done.len(), 48);
        assert_eq!(summary.progress.succeeded, 40);
        assert_eq!(summary.progress.failed, 8);
        assert_eq!(probe.max_working.load(Ordering::SeqCst), 4);
        let healthy = done
            .iter()
            .filter(|(h, _)| h.starts_with("ok"))
            .map(|(_, (t, _))| *t)
            .max()
            .unwrap();
        last_healthy.push(healthy);
        match handoff {
            Some(_) => {
                // Two waves of four dark hosts hand off at 1 s and 2 s (8 connecting slots);
                // the forty healthy hosts then take 10 rounds of 105 ms on 4 forks.
                assert_eq!(summary.max_connecting, 8);
                assert_eq!(summary.max_in_flight, 12);
                assert_eq!(healthy, Duration::from_millis(2_000 + 10 * 105));
                // The dark hosts still fail after their full connect timeout.
                let dark = done.iter().filter(|(h, _)| h.starts_with("dark"));
                assert!(dark.clone().all(|(_, (_, o))| *o == "failed"));
                assert_eq!(
                    dark.map(|(_, (t, _))| *t).max(),
                    Some(Duration::from_secs(6))
                );
            }
            None => {
                assert_eq!(summary.max_connecting, 0);
                assert_eq!(summary.max_in_flight, 4);
                assert_eq!(healthy, Duration::from_millis(10_000 + 10 * 105));
            }
        }
        assert_eq!(scheduler.progress().connecting, 0);
        assert_eq!(scheduler.footprint().pending, 0);
    }
    println!(
        "last healthy host done at {:?} with hand-off, {:?} without",
        last_healthy[0], last_healthy[1]
    );
}

/// A slow host that does answer takes a fork again once connected, before any work: the
/// forks cap holds throughout, and with no connecting slot free a slow connect keeps its
/// fork.
#[tokio::test(start_paused = true)]
async fn a_slow_host_that_answers_works_only_with_a_fork() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        forks: 1,
        connecting: 1,
        ..config()
    })
    .unwrap();
    let jobs = vec![
        gated(&probe, "slow", 0, Duration::from_secs(3), 1_000),
        gated(&probe, "slow2", 0, Duration::from_secs(3), 1_000),
        gated(&probe, "ok1", 0, CONNECT, 1_000),
        gated(&probe, "ok2", 0, CONNECT, 1_000),
    ];
    let (summary, done) = finish_times(&scheduler, jobs).await;
    assert_eq!(summary.progress.succeeded, 4);
    assert_eq!(probe.max_working.load(Ordering::SeqCst), 1);
    assert_eq!(summary.max_connecting, 1);
    // "slow" hands off at 1 s; "slow2" finds no connecting slot at 2 s and keeps its fork
    // through its connect (1-4 s) and work (to 5 s); meanwhile "slow" connected at 3 s and
    // waits for a fork in line behind ok1 and ok2 (5-6 s, 6-7 s), then works (7-8 s).
    assert_eq!(done["slow2"].0, Duration::from_secs(5));
    assert_eq!(done["ok1"].0, Duration::from_millis(6_005));
    assert_eq!(done["ok2"].0, Duration::from_millis(7_010));
    assert_eq!(done["slow"].0, Duration::from_millis(8_010));
}

#[tokio::test(start_paused = true)]
async fn the_per_host_rate_spaces_one_hosts_connections_only() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        rate: Some(RateLimit::per_second(nz(1000))),
        per_host_rate: Some(RateLimit::per_second(nz(2))),
        ..config()
    })
    .unwrap();
    let mut jobs: Vec<TestJob> = (0..6).map(|_| job(&probe, "same", work(0))).collect();
    jobs.extend((0..6).map(|i| job(&probe, &format!("h{i}"), work(0))));
    let t0 = Instant::now();
    let (summary, _) = run_all(&scheduler, jobs).await;
    assert_eq!(summary.progress.succeeded, 12);
    let mut starts: Vec<Duration> = probe
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.duration_since(t0))
        .collect();
    starts.sort();
    // Six to "same" 500 ms apart (0 .. 2.5 s); the six other hosts are not held up behind it.
    assert_eq!(*starts.last().unwrap(), Duration::from_millis(2_500));
    assert_eq!(
        starts
            .iter()
            .filter(|s| **s < Duration::from_millis(100))
            .count(),
        7
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    scheduler.retain_recent();
    assert_eq!(scheduler.footprint().rate_keys, 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_attempt_is_reported_and_the_run_goes_on() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(config()).unwrap();
    let jobs = vec![
        job(&probe, "bad", vec![Step::Panic]),
        job(&probe, "good", work(1)),
    ];
    let (summary, events) = run_all(&scheduler, jobs).await;
    let done = finished(&events);
    assert!(matches!(
        &done[&0].outcome,
        Outcome::Panicked { message } if message == "boom on bad"
    ));
    assert!(matches!(done[&1].outcome, Outcome::Succeeded(1)));
    assert_eq!(
        (summary.progress.panicked, summary.progress.succeeded),
        (1, 1)
    );
    assert_eq!(scheduler.footprint().hosts_tracked, 0);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_hosts_run_in_bounded_memory() {
    let probe = Probe::with_limits(&[]);
    let scheduler = Scheduler::new(SchedulerConfig {
        forks: 256,
        per_host_rate: Some(RateLimit::per_second(nz(10))),
        ..config()
    })
    .unwrap();
    let n = 100_000u64;
    // Lazy: each job is built when the scheduler pulls it.
    let jobs = (0..n).map({
        let probe = Arc::clone(&probe);
        move |i| TestJob {
            host: format!("host{i:06}.fleet.test"),
            plan: vec![Step::Work(Duration::from_millis(50))],
            shells: 1,
            facts: ShellFacts::default(),
            config_get: None,
            gated: false,
            probe: Arc::clone(&probe),
        }
    });
    let mut run = scheduler.start(jobs, 256);
    let mut finished_events = 0u64;
    let mut max_tracked = 0usize;
    let mut max_rate_keys = 0usize;
    while let Some(event) = run.events.recv().await {
        if let EventKind::Finished(f) = event.kind {
            assert!(matches!(f.outcome, Outcome::Succeeded(1)));
            finished_events += 1;
            if finished_events.is_multiple_of(1000) {
                let fp = scheduler.footprint();
                max_tracked = max_tracked.max(fp.hosts_tracked);
                max_rate_keys = max_rate_keys.max(fp.rate_keys);
            }
        }
    }
    let summary = run.done.await.unwrap();
    assert_eq!(finished_events, n);
    assert_eq!(summary.progress.succeeded, n);
    let depth = scheduler.config().effective_queue_depth();
    assert_eq!(depth, 1024);
    assert!(summary.max_pending <= depth, "{}", summary.max_pending);
    assert!(max_tracked <= depth, "{max_tracked}");
    // Per-host rate states are pruned every 1,024 starts: those of the last 100 ms (one
    // token at 10/s) stay, a few forks' worth, never the whole fleet.
    assert!(max_rate_keys <= 4 * 1024, "{max_rate_keys}");
    // Nothing per host is left once the run is over.
    let fp = scheduler.footprint();
    assert_eq!((fp.hosts_tracked, fp.pending), (0, 0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    scheduler.retain_recent();
    assert_eq!(scheduler.footprint().rate_keys, 0);
    assert_eq!(probe.max_in_flight.load(Ordering::SeqCst), 256);
}

#[tokio::test]
async fn cancel_tokens_fire_once_with_the_first_reason() {
    let token = CancelToken::new();
    assert!(!token.is_cancelled());
    let waiter = tokio::spawn({
        let token = token.clone();
        async move { token.cancelled().await }
    });
    token.cancel(CancelReason::Deadline);
    token.cancel(CancelReason::Stop);
    assert_eq!(waiter.await.unwrap(), CancelReason::Deadline);
    assert_eq!(token.reason(), Some(CancelReason::Deadline));
    assert_eq!(token.cancelled().await, CancelReason::Deadline);
}

#[test]
fn bad_configurations_are_refused() {
    let err = Scheduler::new(SchedulerConfig {
        forks: 0,
        ..config()
    })
    .unwrap_err();
    assert_eq!(err, ConfigError::ZeroForks);
    let err = Scheduler::new(SchedulerConfig {
        retry: RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        },
        ..config()
    })
    .unwrap_err();
    assert_eq!(err, ConfigError::ZeroAttempts);
    let c = SchedulerConfig {
        forks: 1000,
        ..config()
    };
    assert_eq!(c.effective_queue_depth(), 4000);
    let c = SchedulerConfig {
        forks: 8,
        queue_depth: 2,
        ..config()
    };
    assert_eq!(c.effective_queue_depth(), 8);
    // Backoff is re-exported through the policy.
    let _ = Backoff {
        base: Duration::ZERO,
        cap: Duration::ZERO,
    };
}

/// Figures behind the default `--forks` (docs/scheduling.md). Real time, real loopback TCP,
/// two worker threads; prints, asserts nothing about speed. Run with
/// `cargo test -p psfleet-engine --lib measure_forks -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: prints figures for docs/scheduling.md"]
fn measure_forks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A host that answers one 1 KiB request after `latency` (the round trips of a WinRM
    /// exchange folded into one wait), over a real loopback connection.
    struct TcpJob {
        host: String,
        addr: std::net::SocketAddr,
        latency: Duration,
    }

    impl HostJob for TcpJob {
        type Output = ();
        type Error = String;
        fn host(&self) -> &str {
            &self.host
        }
        fn shells_needed(&self) -> u32 {
            1
        }
        async fn attempt(&self, _ctx: AttemptContext) -> AttemptOutcome<(), String> {
            let exchange = async {
                let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
                stream.write_all(&[7u8; 1024]).await?;
                tokio::time::sleep(self.latency).await;
                let mut reply = [0u8; 1024];
                stream.read_exact(&mut reply).await?;
                Ok::<_, std::io::Error>(())
            };
            match exchange.await {
                Ok(()) => AttemptOutcome::Done(()),
                Err(e) => AttemptOutcome::Permanent(e.to_string()),
            }
        }
    }

    fn cpu_seconds() -> f64 {
        // utime + stime, fields 14 and 15 of /proc/self/stat, in USER_HZ (100 on Linux).
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The far end: echo 1 KiB back on each connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                    }
                });
            }
        });

        // Scheduler overhead alone: jobs that do nothing.
        struct Nothing(String);
        impl HostJob for Nothing {
            type Output = ();
            type Error = String;
            fn host(&self) -> &str {
                &self.0
            }
            fn shells_needed(&self) -> u32 {
                1
            }
            async fn attempt(&self, _ctx: AttemptContext) -> AttemptOutcome<(), String> {
                AttemptOutcome::Done(())
            }
        }
        let n = 100_000u32;
        let scheduler = Scheduler::new(SchedulerConfig::default()).unwrap();
        let (cpu0, t0) = (cpu_seconds(), std::time::Instant::now());
        let mut run = scheduler.start((0..n).map(|i| Nothing(format!("h{i}"))), 1024);
        while run.events.recv().await.is_some() {}
        run.done.await.unwrap();
        let wall = t0.elapsed().as_secs_f64();
        println!(
            "overhead: {n} empty jobs, forks 256: {wall:.2} s wall, {:.1} us CPU per job, {:.0} jobs/s",
            (cpu_seconds() - cpu0) * 1e6 / f64::from(n),
            f64::from(n) / wall
        );

        let latency = Duration::from_millis(200);
        println!("loopback TCP, 1 KiB each way, {latency:?} per host, 2 worker threads:");
        for forks in [32usize, 128, 256, 512, 1024, 2048] {
            let jobs = forks * 10;
            let scheduler = Scheduler::new(SchedulerConfig {
                forks,
                ..SchedulerConfig::default()
            })
            .unwrap();
            let rss0 = rss_kib();
            let fds0 = open_fds();
            let peak = Arc::new(std::sync::Mutex::new((0u64, 0usize)));
            let sampler = tokio::spawn({
                let peak = Arc::clone(&peak);
                async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let mut p = peak.lock().unwrap();
                        p.0 = p.0.max(rss_kib());
                        p.1 = p.1.max(open_fds());
                    }
                }
            });
            let (cpu0, t0) = (cpu_seconds(), std::time::Instant::now());
            let mut run = scheduler.start(
                (0..jobs).map(move |i| TcpJob {
                    host: format!("h{i}"),
                    addr,
                    latency,
                }),
                1024,
            );
            let mut failed = 0;
            while let Some(e) = run.events.recv().await {
                if let EventKind::Finished(f) = e.kind
                    && !matches!(f.outcome, Outcome::Succeeded(()))
                {
                    failed += 1;
                }
            }
            run.done.await.unwrap();
            let wall = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            sampler.abort();
            let (rss, fds) = *peak.lock().unwrap();
            println!(
                "forks {forks:>4}: {jobs:>5} hosts in {wall:5.2} s = {:6.0} hosts/s (ideal {:5.0}), \
                 CPU {:4.0} us/host, peak RSS +{:5} KiB (~{:.1} KiB per host in flight), \
                 peak fds +{}, failed {failed}",
                jobs as f64 / wall,
                forks as f64 / latency.as_secs_f64(),
                cpu * 1e6 / jobs as f64,
                rss.saturating_sub(rss0),
                rss.saturating_sub(rss0) as f64 / forks as f64,
                fds.saturating_sub(fds0),
            );
        }
    });
}
