//! The run loop shared by `run`, `sweep` and `cleanup`: it watches a run's events, feeds
//! the progress display and the output, and handles Ctrl-C (docs/scheduling.md, "Ctrl-C"):
//! the first stops the run gracefully, the second aborts it.
//!
//! [`watch`] does not care where the events come from: it takes any event type and a
//! function saying what each one means ([`Observed`]), and stops the run through
//! [`RunControl`] (the scheduler itself, or the engine's fleet-run handle, which has the
//! same three methods). [`drive`] is the case of a bare scheduler over [`HostJob`]s, with the
//! caller's [`RunObserver`] turning finished jobs into run records; the tests use it with
//! synthetic jobs, so this file knows nothing about WinRM.

use std::time::Duration;

use psfleet_engine::budget::BudgetView;
use psfleet_engine::record::HostRecord;
use psfleet_engine::scheduler::{
    Event, EventKind, Finished, HostJob, Progress, Scheduler, StopLevel, Summary,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::console::Sink;
use crate::exit::{CliError, Exit};
use crate::output::Reporter;
use crate::progress::ProgressDisplay;

/// How often the display is refreshed from the run's counters.
pub const TICK: Duration = Duration::from_millis(250);

/// Events buffered between the scheduler and this loop (a slow terminal slows the run
/// rather than growing memory).
const EVENT_BUFFER: usize = 1024;

/// Stopping a run and reading its counters: the scheduler, or the engine's run handle.
pub trait RunControl {
    /// Ctrl-C: the first call stops gracefully, the second aborts; returns the level reached.
    fn stop(&self) -> StopLevel;
    /// How far a stop has gone.
    fn stop_level(&self) -> StopLevel;
    /// The counters now (`None` before the run started).
    fn progress(&self) -> Option<Progress>;
}

impl RunControl for Scheduler {
    fn stop(&self) -> StopLevel {
        Scheduler::stop(self)
    }

    fn stop_level(&self) -> StopLevel {
        Scheduler::stop_level(self)
    }

    fn progress(&self) -> Option<Progress> {
        Some(Scheduler::progress(self))
    }
}

impl RunControl for psfleet_engine::fleet::RunHandle {
    fn stop(&self) -> StopLevel {
        psfleet_engine::fleet::RunHandle::stop(self)
    }

    fn stop_level(&self) -> StopLevel {
        psfleet_engine::fleet::RunHandle::stop_level(self)
    }

    fn progress(&self) -> Option<Progress> {
        psfleet_engine::fleet::RunHandle::progress(self)
    }
}

/// What one event means to the display.
#[derive(Debug)]
pub enum Observed {
    /// A host is done: its durable record.
    Finished(Box<HostRecord>),
    /// An attempt failed and another is scheduled (logged at info).
    Retrying {
        /// The host.
        host: String,
        /// The next attempt's number.
        attempt: u32,
        /// The back-off.
        after: Duration,
        /// The error's text.
        detail: String,
    },
    /// A line for the operator (warnings from the run itself, such as a journal failure).
    Notice(String),
    /// The number of hosts the run will report (known once the run exists: a resume skips
    /// the hosts already done).
    Total(u64),
    /// Both of the above.
    TotalAndNotice(u64, String),
    /// Nothing to show (the counters say it).
    Nothing,
}

/// What [`watch`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// The exit code the run means.
    pub exit: Exit,
    /// Wall time from the start of the watch.
    pub elapsed: Duration,
    /// The run was stopped (Ctrl-C) or aborted.
    pub interrupted: bool,
}

/// Watches a run until its event channel closes: each event goes through `observe`, finished
/// hosts to the display and the output, the counters are polled every [`TICK`], and each
/// `()` on `interrupts` (Ctrl-C) stops the run one level further. Ends with the summary and
/// the exit code (interrupted, some hosts failed, or success).
#[allow(clippy::too_many_arguments)] // Each is one distinct collaborator of the loop.
pub async fn watch<E>(
    mut events: mpsc::Receiver<E>,
    mut observe: impl FnMut(E) -> Observed,
    control: &impl RunControl,
    progress: &mut ProgressDisplay,
    reporter: &mut Reporter,
    sink: &Sink,
    what: &str,
    mut interrupts: mpsc::UnboundedReceiver<()>,
) -> Watched {
    let start = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut interrupts_open = true;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                match observe(event) {
                    Observed::Finished(record) => {
                        progress.finished(record.status, record.bucket);
                        reporter.host(&record);
                    }
                    Observed::Retrying { host, attempt, after, detail } => {
                        tracing::info!(%host, attempt, after_ms = after.as_millis() as u64, %detail, "retrying");
                    }
                    Observed::Notice(text) => sink.err(&format!("{text}\n")),
                    Observed::Total(total) => progress.set_total(total),
                    Observed::TotalAndNotice(total, text) => {
                        progress.set_total(total);
                        sink.err(&format!("{text}\n"));
                    }
                    Observed::Nothing => {}
                }
            }
            _ = ticker.tick() => {
                if let Some(counters) = control.progress() {
                    progress.tick(counters, start.elapsed());
                }
            }
            signal = interrupts.recv(), if interrupts_open => {
                match signal {
                    Some(()) => match control.stop() {
                        StopLevel::Stopping => sink.err(
                            "Stopping: no new hosts start; hosts in flight are stopped and their \
                             shells deleted. Press Ctrl-C again to exit at once.\n",
                        ),
                        _ => sink.err("Aborting: hosts in flight are left to `psfleet cleanup` and --resume.\n"),
                    },
                    None => interrupts_open = false,
                }
            }
        }
    }
    let elapsed = start.elapsed();
    progress.finish(control.progress().unwrap_or_default(), elapsed);
    let interrupted = control.stop_level() >= StopLevel::Stopping;
    let tally = progress.tally();
    reporter.summary(what, tally, elapsed, interrupted);
    let exit = if interrupted
        || tally
            .failed
            .contains_key(&psfleet_core::taxonomy::Bucket::Interrupted)
    {
        Exit::Interrupted
    } else if tally.failed_total() > 0 {
        Exit::HostsFailed
    } else {
        Exit::Success
    };
    Watched {
        exit,
        elapsed,
        interrupted,
    }
}

/// What the caller does with a bare scheduler's events ([`drive`]).
pub trait RunObserver<J: HostJob> {
    /// Turns a finished job into its run record (classify, journal, keep facts).
    fn finished(&mut self, finished: Finished<J>) -> HostRecord;

    /// A host's shell budget changed (keep it for the next run).
    fn budget_learned(&mut self, _host: &str, _budget: BudgetView) {}
}

/// How a [`drive`]n run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnd {
    /// The scheduler's summary.
    pub summary: Summary,
    /// The exit code it means (an aborted run is interrupted).
    pub exit: Exit,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Runs `jobs` on `scheduler` until every job finished (or a second interrupt), reporting
/// as it goes through [`watch`].
#[allow(clippy::too_many_arguments)] // Each is one distinct collaborator of the loop.
pub async fn drive<J, I, O>(
    scheduler: &Scheduler,
    jobs: I,
    observer: &mut O,
    progress: &mut ProgressDisplay,
    reporter: &mut Reporter,
    sink: &Sink,
    what: &str,
    interrupts: mpsc::UnboundedReceiver<()>,
) -> Result<RunEnd, CliError>
where
    J: HostJob,
    I: IntoIterator<Item = J>,
    I::IntoIter: Send + 'static,
    O: RunObserver<J>,
{
    let run = scheduler.start(jobs, EVENT_BUFFER);
    let observe = |event: Event<J>| match event.kind {
        EventKind::Finished(finished) => Observed::Finished(Box::new(observer.finished(*finished))),
        EventKind::BudgetLearned { budget } => {
            observer.budget_learned(&event.host, budget);
            Observed::Nothing
        }
        EventKind::Retrying {
            attempt,
            after,
            detail,
            ..
        } => Observed::Retrying {
            host: event.host.to_string(),
            attempt,
            after,
            detail,
        },
        EventKind::Queued | EventKind::WaitingForShellSlot { .. } | EventKind::Started { .. } => {
            Observed::Nothing
        }
    };
    let watched = watch(
        run.events, observe, scheduler, progress, reporter, sink, what, interrupts,
    )
    .await;
    let summary = run
        .done
        .await
        .map_err(|e| CliError::Internal(format!("the scheduler task failed: {e}")))?;
    let exit = if summary.aborted {
        Exit::Interrupted
    } else {
        watched.exit
    };
    Ok(RunEnd {
        summary,
        exit,
        elapsed: watched.elapsed,
    })
}

/// A channel fed by Ctrl-C (SIGINT) and SIGTERM, one `()` per signal.
pub fn interrupt_signals() -> Result<mpsc::UnboundedReceiver<()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::unbounded_channel();
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| CliError::io("cannot watch for Ctrl-C", e))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| CliError::io("cannot watch for SIGTERM", e))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                s = int.recv() => if s.is_none() { break },
                s = term.recv() => if s.is_none() { break },
            }
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use psfleet_core::taxonomy::Bucket;
    use psfleet_engine::record::{JobKind, RunId, Status};
    use psfleet_engine::scheduler::{AttemptContext, AttemptOutcome, Outcome, SchedulerConfig};

    use super::*;
    use crate::console::Captured;
    use crate::options::OutputFormat;
    use crate::progress::Mode;

    /// A job that takes `secs` of (virtual) time and ends as `result` says.
    #[derive(Debug)]
    struct Synthetic {
        host: String,
        secs: u64,
        result: Result<(), Bucket>,
    }

    impl HostJob for Synthetic {
        type Output = ();
        type Error = Bucket;

        fn host(&self) -> &str {
            &self.host
        }

        fn shells_needed(&self) -> u32 {
            1
        }

        async fn attempt(&self, ctx: AttemptContext) -> AttemptOutcome<(), Bucket> {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(self.secs)) => {}
                // Cancelled: the work did not finish.
                _ = ctx.cancel.cancelled() => return AttemptOutcome::Permanent(Bucket::Interrupted),
            }
            match self.result {
                Ok(()) => AttemptOutcome::Done(()),
                Err(bucket) => AttemptOutcome::Permanent(bucket),
            }
        }
    }

    struct Classify;

    impl RunObserver<Synthetic> for Classify {
        fn finished(&mut self, f: Finished<Synthetic>) -> HostRecord {
            let bucket = f.outcome.bucket().or(match &f.outcome {
                Outcome::Failed { error, .. } => Some(*error),
                _ => None,
            });
            let mut r = crate::output::tests::record(&f.job.host, f.outcome.status(), bucket);
            r.run_id = RunId("test".into());
            r.job = JobKind::Script;
            r
        }
    }

    fn jobs(n: usize) -> Vec<Synthetic> {
        (0..n)
            .map(|i| Synthetic {
                host: format!("srv{i:03}"),
                secs: 1 + (i as u64 % 7),
                result: match i % 10 {
                    3 => Err(Bucket::InvalidCredentials),
                    7 => Err(Bucket::InvalidPort),
                    _ => Ok(()),
                },
            })
            .collect()
    }

    fn scheduler(forks: usize) -> Scheduler {
        Scheduler::new(SchedulerConfig {
            forks,
            seed: Some(1),
            ..SchedulerConfig::default()
        })
        .unwrap()
    }

    /// A synthetic run of 100 hosts (4 forks, 1-7 s each in virtual time): every host is
    /// reported once on stdout as JSON, plain progress lines arrive every 5 s on stderr, and
    /// the exit code says hosts failed.
    #[tokio::test(start_paused = true)]
    async fn a_synthetic_run_reports_every_host_once_with_plain_progress() {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let sink = Sink::Memory(Arc::clone(&captured));
        let mode = Mode::Plain {
            interval: Duration::from_secs(5),
        };
        let mut progress = ProgressDisplay::new(sink.clone(), mode, Some(100));
        let mut reporter = Reporter::new(sink.clone(), OutputFormat::Json, false, false);
        let (_tx, rx) = mpsc::unbounded_channel();
        let end = drive(
            &scheduler(4),
            jobs(100),
            &mut Classify,
            &mut progress,
            &mut reporter,
            &sink,
            "psfleet run",
            rx,
        )
        .await
        .unwrap();
        assert_eq!(end.exit, Exit::HostsFailed);
        assert_eq!(end.summary.progress.succeeded, 80);
        assert!(end.summary.max_in_flight <= 4);
        let c = captured.lock().unwrap();
        let mut hosts: Vec<String> = c
            .out
            .lines()
            .map(|l| serde_json::from_str::<HostRecord>(l).unwrap().host)
            .collect();
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), 100);
        let tally = progress.tally();
        assert_eq!(tally.failed.get(&Bucket::InvalidCredentials), Some(&10));
        assert_eq!(tally.failed.get(&Bucket::InvalidPort), Some(&10));
        // 100 hosts averaging 4 s over 4 forks take about 100 s: about 20 lines.
        let progress_lines: Vec<&str> = c
            .err
            .lines()
            .filter(|l| l.starts_with("progress ["))
            .collect();
        let secs = end.elapsed.as_secs();
        assert!(secs >= 90, "{secs}");
        assert_eq!(progress_lines.len() as u64, secs / 5 + 1, "{}", c.err);
        assert!(
            progress_lines[0].starts_with("progress [00:00:05] "),
            "{}",
            progress_lines[0]
        );
        let last = progress_lines.last().unwrap();
        assert!(last.contains("100/100 done (100%)"), "{last}");
        assert!(
            last.contains("succeeded 80, InvalidCredentials 10, InvalidPort 10"),
            "{last}"
        );
        assert!(c.err.contains("psfleet run: 100 hosts in "), "{}", c.err);
        assert!(c.err.ends_with("80 succeeded, 20 failed\n"), "{}", c.err);
    }

    /// Ctrl-C once stops the run: in-flight hosts end Interrupted, the rest Skipped, every
    /// host still reported once, and the exit code is "interrupted".
    #[tokio::test(start_paused = true)]
    async fn one_interrupt_stops_the_run_and_every_host_is_still_reported() {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let sink = Sink::Memory(Arc::clone(&captured));
        let mut progress = ProgressDisplay::new(sink.clone(), Mode::Off, Some(50));
        let mut reporter = Reporter::new(sink.clone(), OutputFormat::Json, false, false);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(4500)).await;
            tx.send(()).unwrap();
            // Keep the sender alive past the run.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let end = drive(
            &scheduler(5),
            jobs(50),
            &mut Classify,
            &mut progress,
            &mut reporter,
            &sink,
            "psfleet run",
            rx,
        )
        .await
        .unwrap();
        assert_eq!(end.exit, Exit::Interrupted);
        let c = captured.lock().unwrap();
        let records: Vec<HostRecord> = c
            .out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 50);
        let interrupted = records
            .iter()
            .filter(|r| r.bucket == Some(Bucket::Interrupted))
            .count();
        let skipped = records
            .iter()
            .filter(|r| r.status == Status::Skipped)
            .count();
        assert_eq!(interrupted, 5, "the 5 in flight at the stop");
        assert!(skipped > 0);
        assert!(c.err.contains("Stopping: no new hosts start"), "{}", c.err);
        assert!(
            c.err.contains("(interrupted: continue with --resume last)"),
            "{}",
            c.err
        );
    }
}
