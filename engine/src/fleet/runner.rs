//! [`execute`]: a plan through the scheduler into the journal.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use psfleet_core::taxonomy::Bucket;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::jobs::{FleetJob, JobBase, RunContext, live_shells};
use super::output::{self, RecordParts};
use super::{
    CleanupJob, CmdJob, FleetError, MAX_PENDING_WRITES, RunEvent, RunKind, RunPlan, RunSummary,
    ScriptJob, SweepJob, Target, classify,
};
use crate::budget::BudgetSource;
use crate::cache::HostFacts;
use crate::journal::{self, EndReason, OpenShell, RunMeta};
use crate::record::{HostRecord, RunId, Status};
use crate::scheduler::{self, Event, EventKind, Finished, RetryReason, Scheduler, StopLevel};
use crate::store::{RunWriter, Store, StoreError};

/// Descriptors a run needs besides its sockets: the state store (journal, sled's files),
/// reports, the resolver, standard streams.
const DESCRIPTOR_MARGIN: u64 = 128;

/// Events buffered between the scheduler and the runner.
const EVENT_BUFFER: usize = 1024;

/// Runs `plan` against `store`, reporting on `events` (a dropped receiver is ignored; a slow
/// one slows the run, which keeps memory bounded). Returns when every selected host has a
/// durable record, or the run was stopped (see [`super::RunHandle::stop`]).
pub async fn execute(
    plan: RunPlan,
    store: &Store,
    events: mpsc::Sender<RunEvent>,
) -> Result<RunSummary, FleetError> {
    check_unique(&plan.hosts)?;
    let RunPlan {
        kind,
        hosts,
        client,
        scheduler: config,
        caps,
        resume,
        rerun_interrupted,
        info,
        handle,
    } = plan;
    let host_count = hosts.len() as u64;
    // A socket per host in flight, working or connecting, plus the store's files.
    let needed = (config.forks.saturating_add(config.effective_connecting()) as u64)
        .saturating_add(DESCRIPTOR_MARGIN);
    let limit = crate::limits::raise_descriptor_limit(needed);
    if limit < needed {
        tracing::warn!(
            "the open-file limit is {limit}, below the {needed} that {} forks need: lower \
             --forks or raise `ulimit -n` (hosts past it would fail to connect)",
            config.forks
        );
    }

    // The run in the store: new, or resumed (skip what is done).
    let (writer, selection) = match &resume {
        None => {
            let mut meta = RunMeta::new(journal::new_run_id(), kind.job_kind(), host_count);
            if let Some(text) = kind.text() {
                meta = meta.with_script(&text);
            }
            meta.command_line = journal::redact_command_line(&info.command_line);
            meta.inventory_paths = info.inventory_paths;
            meta.inventory_digest = info.inventory_digest;
            meta.options = info.options;
            let writer = store.begin_run(meta)?;
            let selection = Selection {
                run: hosts,
                already_done: 0,
                interrupted: Vec::new(),
            };
            (writer, selection)
        }
        Some(run_id) => resume_selection(store, run_id, &kind, hosts, rerun_interrupted)?,
    };
    let run_id = writer.run_id().clone();
    let run_dir = store.dir().join(journal::RUNS_DIR).join(&run_id.0);
    let scheduler = match handle.start(config.clone()) {
        Ok(scheduler) => scheduler,
        Err(error) => {
            // The run exists; close it so it does not look crashed.
            let _ = writer.finish(EndReason::Interrupted).await;
            return Err(error.into());
        }
    };
    let _ = events
        .send(RunEvent::RunStarted {
            run_id: run_id.clone(),
            run_dir: run_dir.clone(),
            hosts: host_count,
            already_done: selection.already_done,
            resumed: resume.is_some(),
        })
        .await;
    let interrupted_not_rerun = selection.interrupted.len() as u64;
    for record in selection.interrupted {
        let _ = events
            .send(RunEvent::HostInterrupted(Box::new(record)))
            .await;
    }

    let ctx = Arc::new(RunContext {
        writer: writer.clone(),
        client,
        caps,
        handle: handle.clone(),
        timeout: config.timeout,
    });
    let mut tally = Tally::new(run_id.clone(), caps);
    let make = JobMaker { store, ctx: &ctx };
    let targets = selection.run.into_iter();
    let sched_summary = match &kind {
        RunKind::Script(spec) => {
            let spec = Arc::new(spec.clone());
            let jobs = targets.map(|t| ScriptJob::new(make.base(t), Arc::clone(&spec)));
            drive(&scheduler, jobs, &writer, &events, &mut tally).await
        }
        RunKind::Cmd { command, arguments } => {
            let command = Arc::new((command.clone(), arguments.clone()));
            let jobs = targets.map(|t| CmdJob::new(make.base(t), Arc::clone(&command)));
            drive(&scheduler, jobs, &writer, &events, &mut tally).await
        }
        RunKind::Sweep => {
            let jobs = targets.map(|t| SweepJob::new(make.base(t)));
            drive(&scheduler, jobs, &writer, &events, &mut tally).await
        }
        RunKind::Cleanup { reap_unknown } => {
            let reap_unknown = *reap_unknown;
            let jobs = targets.map(|t| CleanupJob::new(make.base(t), reap_unknown));
            drive(&scheduler, jobs, &writer, &events, &mut tally).await
        }
    };
    drop(ctx);

    let end = if scheduler.stop_level() >= StopLevel::Stopping || tally.store_error.is_some() {
        EndReason::Interrupted
    } else {
        EndReason::Completed
    };
    let closed = writer.finish(end).await?;
    Ok(RunSummary {
        run_id,
        run_dir,
        resumed: resume.is_some(),
        end,
        hosts: host_count,
        already_done: selection.already_done,
        interrupted_not_rerun,
        by_status: tally.by_status,
        by_bucket: tally.by_bucket,
        not_recorded: tally.not_recorded,
        run: closed.summary,
        scheduler: sched_summary,
        store_error: tally.store_error,
        cache_error: closed.cache_error,
    })
}

/// Which hosts a run runs.
struct Selection {
    /// To run, in plan order.
    run: Vec<Target>,
    /// Resume: done before (not run again).
    already_done: u64,
    /// Resume: in flight when the run stopped and not to be rerun; their records.
    interrupted: Vec<HostRecord>,
}

/// Resumes `run_id`: hosts with a final record are skipped; hosts in flight when it stopped
/// (no record, or an Interrupted one) run again only with `rerun_interrupted`; hosts skipped
/// by a Ctrl-C and hosts never reached run now.
fn resume_selection(
    store: &Store,
    run_id: &RunId,
    kind: &RunKind,
    hosts: Vec<Target>,
    rerun_interrupted: bool,
) -> Result<(RunWriter, Selection), FleetError> {
    // The kind is checked before the run is touched (resuming appends a `resumed` line).
    let plain = !run_id.0.is_empty()
        && run_id.0 != "."
        && run_id.0 != ".."
        && run_id
            .0
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !plain {
        return Err(StoreError::BadRunId(run_id.0.clone()).into());
    }
    let meta = journal::read_meta(&store.dir().join(journal::RUNS_DIR).join(&run_id.0))
        .map_err(StoreError::from)?;
    if meta.job != kind.job_kind() {
        return Err(FleetError::ResumeKindMismatch {
            run_id: run_id.clone(),
            found: meta.job,
            wanted: kind.job_kind(),
        });
    }
    let (state, writer) = store.resume_run(run_id, rerun_interrupted)?;
    let mut selection = Selection {
        run: Vec::new(),
        already_done: 0,
        interrupted: Vec::new(),
    };
    for target in hosts {
        let done = state.done.get(&target.name);
        let was_interrupted = state.in_flight.contains(&target.name)
            || done.is_some_and(|r| r.bucket == Some(Bucket::Interrupted));
        match done {
            _ if was_interrupted && !rerun_interrupted => {
                let record = match done {
                    Some(record) => record.clone(),
                    None => state.interrupted_record(&target.name),
                };
                selection.interrupted.push(record);
            }
            _ if was_interrupted => selection.run.push(target),
            Some(record) if record.status != Status::Skipped => selection.already_done += 1,
            _ => selection.run.push(target),
        }
    }
    Ok((writer, selection))
}

fn check_unique(hosts: &[Target]) -> Result<(), FleetError> {
    let mut seen = HashSet::with_capacity(hosts.len());
    for target in hosts {
        if !seen.insert(target.name.as_str()) {
            return Err(FleetError::DuplicateHost(target.name.clone()));
        }
    }
    Ok(())
}

/// Makes a job's common part when the scheduler pulls it: what the store knows about its
/// host (MaxShellsPerUser learned before, shells left open by runs that died).
struct JobMaker<'a> {
    store: &'a Store,
    ctx: &'a Arc<RunContext>,
}

impl JobMaker<'_> {
    fn base(&self, target: Target) -> JobBase {
        let host = target.connect_host();
        let max_shells = match self.store.facts(host) {
            Ok(facts) => facts.and_then(|f| f.max_shells_per_user),
            Err(error) => {
                tracing::warn!(%host, %error, "state cache: no facts for the host");
                None
            }
        };
        let leaked: Vec<OpenShell> = match self.store.open_shells_on(host) {
            Ok(shells) => shells
                .into_iter()
                .filter(|s| {
                    Uuid::parse_str(&s.shell_id).map_or(true, |id| !live_shells().contains(&id))
                })
                .collect(),
            Err(error) => {
                tracing::warn!(%host, %error, "state cache: open shells unknown");
                Vec::new()
            }
        };
        JobBase::new(target, Arc::clone(self.ctx), max_shells, leaked)
    }
}

/// What this process recorded, counted (nothing per host is kept).
struct Tally {
    run_id: RunId,
    caps: super::OutputCaps,
    by_status: BTreeMap<String, u64>,
    by_bucket: BTreeMap<String, u64>,
    not_recorded: u64,
    store_error: Option<String>,
}

impl Tally {
    fn new(run_id: RunId, caps: super::OutputCaps) -> Self {
        Self {
            run_id,
            caps,
            by_status: BTreeMap::new(),
            by_bucket: BTreeMap::new(),
            not_recorded: 0,
            store_error: None,
        }
    }

    fn recorded(&mut self, record: &HostRecord) {
        let status = match record.status {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        };
        *self.by_status.entry(status.to_owned()).or_default() += 1;
        if let Some(bucket) = record.bucket {
            *self.by_bucket.entry(bucket.name().to_owned()).or_default() += 1;
        }
    }
}

/// A journal write in flight.
enum Write {
    /// A host's record: reported once durable.
    Record(Box<HostRecord>, Result<(), StoreError>),
    /// A fact learned on the way.
    Facts(Result<(), StoreError>),
}

/// Runs the jobs and turns the scheduler's events into journal writes and [`RunEvent`]s.
async fn drive<J, I>(
    scheduler: &Scheduler,
    jobs: I,
    writer: &RunWriter,
    events: &mpsc::Sender<RunEvent>,
    tally: &mut Tally,
) -> scheduler::Summary
where
    J: FleetJob,
    I: Iterator<Item = J> + Send,
{
    let (tx, mut rx) = mpsc::channel::<Event<J>>(EVENT_BUFFER);
    let run = scheduler.run(jobs, tx);
    let consume = async {
        let mut writes = FuturesUnordered::new();
        let mut open = true;
        while open || !writes.is_empty() {
            tokio::select! {
                Some(write) = writes.next(), if !writes.is_empty() => {
                    finish_write(write, scheduler, events, tally).await;
                }
                event = rx.recv(), if open && writes.len() < MAX_PENDING_WRITES => {
                    let Some(event) = event else {
                        open = false;
                        continue;
                    };
                    if let Some(write) = on_event(event, writer, events, tally).await {
                        writes.push(write);
                    }
                }
            }
        }
    };
    let (summary, ()) = tokio::join!(run, consume);
    summary
}

type WriteFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Write> + Send>>;

/// One scheduler event: forwarded, and for a finished job its record written.
async fn on_event<J: FleetJob>(
    event: Event<J>,
    writer: &RunWriter,
    events: &mpsc::Sender<RunEvent>,
    tally: &Tally,
) -> Option<WriteFuture> {
    let host = event.host;
    let forward = match event.kind {
        EventKind::Finished(finished) => {
            let record = host_record(*finished, tally);
            let writer = writer.clone();
            return Some(Box::pin(async move {
                let written = writer.host_done(record.clone()).await;
                Write::Record(Box::new(record), written)
            }));
        }
        EventKind::Queued => RunEvent::Queued { host },
        EventKind::WaitingForShellSlot { usable, in_use } => RunEvent::WaitingForShellSlot {
            host,
            usable,
            in_use,
        },
        EventKind::Started { attempt } => RunEvent::Started { host, attempt },
        EventKind::Retrying {
            attempt,
            after,
            reason,
            detail,
        } => {
            // The N of a quota fault's text is MaxShellsPerUser (wire-facts 1.10): keep it for
            // the next run. (A fault without a number only lowers this run's budget.)
            let learned = match reason {
                RetryReason::Quota {
                    max_shells: Some(max),
                } => Some(max),
                _ => None,
            };
            let _ = events
                .send(RunEvent::Retrying {
                    host: Arc::clone(&host),
                    attempt,
                    after,
                    reason,
                    detail,
                })
                .await;
            return learned.map(|max| facts_write(writer, &host, max));
        }
        EventKind::BudgetLearned { budget } => {
            let learned = (budget.source == BudgetSource::ConfigGet).then_some(budget.max_shells);
            let _ = events
                .send(RunEvent::BudgetLearned {
                    host: Arc::clone(&host),
                    budget,
                })
                .await;
            return learned.map(|max| facts_write(writer, &host, max));
        }
    };
    let _ = events.send(forward).await;
    None
}

fn facts_write(writer: &RunWriter, host: &str, max_shells: u32) -> WriteFuture {
    let writer = writer.clone();
    let host = host.to_owned();
    Box::pin(async move {
        let facts = HostFacts {
            max_shells_per_user: Some(max_shells),
            ..HostFacts::default()
        };
        Write::Facts(writer.facts(&host, facts).await)
    })
}

/// Classifies a finished job and builds its record.
fn host_record<J: FleetJob>(finished: Finished<J>, tally: &Tally) -> HostRecord {
    let base = finished.job.base();
    let context = base.host_context();
    let verdict = classify(&context, &finished.outcome);
    let output = match &finished.outcome {
        scheduler::Outcome::Succeeded(output) => Some(output),
        _ => None,
    };
    let target = base.target();
    output::record(
        RecordParts {
            run_id: &tally.run_id,
            name: &target.name,
            group: target.group.as_deref(),
            job: J::KIND,
            attempts: finished.attempts,
            started: finished.started,
            finished: finished.finished,
            elapsed: finished.elapsed,
            address: target.address.map(|a| a.to_string()),
        },
        verdict,
        output,
        &tally.caps,
    )
}

/// A journal write finished: a durable record is reported; a failed write stops the run.
async fn finish_write(
    write: Write,
    scheduler: &Scheduler,
    events: &mpsc::Sender<RunEvent>,
    tally: &mut Tally,
) {
    let failure = match write {
        Write::Record(record, Ok(())) => {
            tally.recorded(&record);
            let _ = events.send(RunEvent::HostDone(record)).await;
            return;
        }
        Write::Record(_, Err(error)) => {
            tally.not_recorded += 1;
            error
        }
        Write::Facts(Ok(())) => return,
        Write::Facts(Err(error)) => error,
    };
    if tally.store_error.is_none() {
        tracing::error!(%failure, "the run journal failed; stopping the run");
        tally.store_error = Some(failure.to_string());
        let _ = events
            .send(RunEvent::StoreFailed {
                error: failure.to_string(),
            })
            .await;
        if scheduler.stop_level() == StopLevel::Running {
            scheduler.stop();
        }
    }
}
