//! Live progress of a run (docs/cli.md, "Progress"), over the scheduler's counters
//! ([`Progress`]) and the finished hosts' buckets.
//!
//! On a terminal: three lines drawn by indicatif at 10 Hz,
//! - the overall bar: hosts done / total, hosts per second, ETA;
//! - hosts in flight, waiting for a shell slot, queued, backing off, and retries so far;
//! - counters per bucket (succeeded first, then each failure bucket that has hosts).
//!
//! Without a terminal, or with `--no-progress`: the same three parts as one plain line on
//! standard error every `--progress-interval` (5 s by default), and a last line at the end.
//! indicatif draws nothing without a terminal (dependencies.md), which is why the plain mode
//! is not left to it. `-q` turns both off.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use psfleet_core::taxonomy::Bucket;
use psfleet_engine::record::Status;
use psfleet_engine::scheduler::Progress;

use crate::console::Sink;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// indicatif bars on standard error (a terminal).
    Bars,
    /// A plain line on standard error every `interval`.
    Plain {
        /// Time between lines.
        interval: Duration,
    },
    /// Nothing (`-q`, or commands that print their own).
    Off,
}

impl Mode {
    /// The mode for a run: off with `-q`, plain with `--no-progress` or without a terminal
    /// on standard error, bars otherwise.
    pub fn choose(
        quiet: bool,
        no_progress: bool,
        stderr_is_terminal: bool,
        interval: Duration,
    ) -> Self {
        match (quiet, no_progress || !stderr_is_terminal) {
            (true, _) => Mode::Off,
            (false, true) => Mode::Plain { interval },
            (false, false) => Mode::Bars,
        }
    }
}

/// What the display knows: the scheduler's last counters and the finished hosts by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Hosts (jobs) in the run, when known in advance.
    pub total: Option<u64>,
    /// Finished and succeeded.
    pub succeeded: u64,
    /// Finished as skipped (stopped before their turn).
    pub skipped: u64,
    /// Finished and failed, by bucket.
    pub failed: BTreeMap<Bucket, u64>,
    /// Failed without a bucket (a psfleet bug: the attempt panicked).
    pub failed_unclassified: u64,
    /// The scheduler's counters when last observed.
    pub pending: Progress,
}

impl Tally {
    /// A tally for a run of `total` jobs.
    pub fn new(total: Option<u64>) -> Self {
        Self {
            total,
            ..Self::default()
        }
    }

    /// Counts one finished host.
    pub fn finished(&mut self, status: Status, bucket: Option<Bucket>) {
        match (status, bucket) {
            (Status::Succeeded, _) => self.succeeded += 1,
            (Status::Skipped, _) => self.skipped += 1,
            (Status::Failed, Some(bucket)) => *self.failed.entry(bucket).or_default() += 1,
            (Status::Failed, None) => self.failed_unclassified += 1,
        }
    }

    /// Records the scheduler's counters.
    pub fn observe(&mut self, progress: Progress) {
        self.pending = progress;
    }

    /// Hosts finished, whatever the outcome.
    pub fn done(&self) -> u64 {
        self.succeeded + self.skipped + self.failed_total()
    }

    /// Hosts failed.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum::<u64>() + self.failed_unclassified
    }

    /// Finished hosts per second over `elapsed`.
    pub fn rate(&self, elapsed: Duration) -> f64 {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            self.done() as f64 / secs
        }
    }

    /// The time left at the rate so far (`None` until a host finished, or without a total).
    pub fn eta(&self, elapsed: Duration) -> Option<Duration> {
        let total = self.total?;
        let rate = self.rate(elapsed);
        let left = total.saturating_sub(self.done());
        (rate > 0.0).then(|| Duration::from_secs_f64((left as f64 / rate).min(1e9)))
    }

    /// `done/total (pct), R hosts/s, ETA T`.
    pub fn overall_text(&self, elapsed: Duration) -> String {
        let mut s = match self.total {
            Some(total) if total > 0 => format!(
                "{}/{} done ({}%)",
                self.done(),
                total,
                self.done().saturating_mul(100) / total
            ),
            Some(_) => "0/0 done".to_owned(),
            None => format!("{} done", self.done()),
        };
        let _ = write!(s, ", {:.1} hosts/s", self.rate(elapsed));
        match self.eta(elapsed) {
            Some(eta) => {
                let _ = write!(s, ", ETA {}", clock(eta));
            }
            None if self.total.is_some() => s.push_str(", ETA -"),
            None => {}
        }
        s
    }

    /// `in flight N, waiting for a shell slot N, queued N, backing off N, retries N`.
    pub fn flight_text(&self) -> String {
        let p = &self.pending;
        format!(
            "in flight {}, waiting for a shell slot {}, queued {}, backing off {}, retries {}",
            p.in_flight, p.waiting_for_shell_slot, p.queued, p.backing_off, p.retried
        )
    }

    /// `succeeded N, <Bucket> N, ...` (failure buckets in the documented order, only those
    /// with hosts; skipped last).
    pub fn buckets_text(&self) -> String {
        let mut parts = vec![format!("succeeded {}", self.succeeded)];
        for (bucket, count) in &self.failed {
            parts.push(format!("{} {count}", bucket.name()));
        }
        if self.failed_unclassified > 0 {
            parts.push(format!("unclassified {}", self.failed_unclassified));
        }
        if self.skipped > 0 {
            parts.push(format!("skipped {}", self.skipped));
        }
        parts.join(", ")
    }

    /// The plain progress line at `elapsed`.
    pub fn plain_line(&self, elapsed: Duration) -> String {
        format!(
            "progress [{}] {} | {} | {}",
            clock(elapsed),
            self.overall_text(elapsed),
            self.flight_text(),
            self.buckets_text()
        )
    }
}

/// `HH:MM:SS`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The live display of one run.
pub struct ProgressDisplay {
    sink: Sink,
    mode: Mode,
    tally: Tally,
    next_line: Duration,
    bars: Option<Bars>,
}

struct Bars {
    overall: ProgressBar,
    flight: ProgressBar,
    buckets: ProgressBar,
}

impl ProgressDisplay {
    /// A display for a run of `total` jobs (bars start drawing at once in [`Mode::Bars`]).
    pub fn new(sink: Sink, mode: Mode, total: Option<u64>) -> Self {
        let bars = match (mode, sink.console()) {
            (Mode::Bars, Some(console)) => {
                let multi = console.bars();
                multi.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
                let color = console.color();
                let overall = match total {
                    Some(total) => ProgressBar::new(total),
                    None => ProgressBar::new_spinner(),
                };
                let template = if color {
                    "{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue} {msg}"
                } else {
                    "{spinner} [{elapsed_precise}] {wide_bar} {msg}"
                };
                overall.set_style(
                    ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                let line = || {
                    let bar = ProgressBar::new(0);
                    bar.set_style(
                        ProgressStyle::with_template("  {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar
                };
                let bars = Bars {
                    overall: multi.add(overall),
                    flight: multi.add(line()),
                    buckets: multi.add(line()),
                };
                bars.overall.enable_steady_tick(Duration::from_millis(200));
                Some(bars)
            }
            _ => None,
        };
        let next_line = match mode {
            Mode::Plain { interval } => interval,
            _ => Duration::MAX,
        };
        Self {
            sink,
            mode,
            tally: Tally::new(total),
            next_line,
            bars,
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What the display has counted.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The number of hosts the run reports, once known (a resume skips the hosts done).
    pub fn set_total(&mut self, total: u64) {
        self.tally.total = Some(total);
        if let Some(bars) = &self.bars {
            bars.overall.set_length(total);
        }
    }

    /// One host finished.
    pub fn finished(&mut self, status: Status, bucket: Option<Bucket>) {
        self.tally.finished(status, bucket);
        if let Some(bars) = &self.bars {
            bars.overall.set_position(self.tally.done());
        }
    }

    /// Updates the counters; in plain mode, writes a line when one is due and returns it.
    pub fn tick(&mut self, progress: Progress, elapsed: Duration) -> Option<String> {
        self.tally.observe(progress);
        if let Some(bars) = &self.bars {
            bars.overall.set_position(self.tally.done());
            bars.overall.set_message(self.bar_message(elapsed));
            bars.flight.set_message(self.tally.flight_text());
            bars.buckets.set_message(self.tally.buckets_text());
        }
        let Mode::Plain { interval } = self.mode else {
            return None;
        };
        if elapsed < self.next_line {
            return None;
        }
        // Keep a steady cadence (a line at every multiple of the interval), skipping the
        // multiples a slow tick missed.
        let periods = elapsed.as_nanos() / interval.as_nanos().max(1) + 1;
        self.next_line = interval
            .checked_mul(u32::try_from(periods).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX);
        Some(self.emit(elapsed))
    }

    /// The run is over: bars are cleared, plain mode writes its last line.
    pub fn finish(&mut self, progress: Progress, elapsed: Duration) -> Option<String> {
        self.tally.observe(progress);
        if let Some(bars) = self.bars.take() {
            for bar in [&bars.overall, &bars.flight, &bars.buckets] {
                bar.finish_and_clear();
            }
            if let Some(console) = self.sink.console() {
                let _ = console.bars().clear();
                console.bars().set_draw_target(ProgressDrawTarget::hidden());
            }
        }
        match self.mode {
            Mode::Plain { .. } => Some(self.emit(elapsed)),
            _ => None,
        }
    }

    fn emit(&self, elapsed: Duration) -> String {
        let line = self.tally.plain_line(elapsed);
        self.sink.err(&format!("{line}\n"));
        line
    }

    fn bar_message(&self, elapsed: Duration) -> String {
        let t = &self.tally;
        let mut s = match t.total {
            Some(total) => format!("{}/{total} hosts", t.done()),
            None => format!("{} hosts", t.done()),
        };
        let _ = write!(s, "  {:.1} hosts/s", t.rate(elapsed));
        if let Some(eta) = t.eta(elapsed) {
            let _ = write!(s, "  ETA {}", clock(eta));
        }
        s
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        if let Some(bars) = self.bars.take() {
            for bar in [&bars.overall, &bars.flight, &bars.buckets] {
                bar.finish_and_clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::console::Captured;

    fn memory() -> (Sink, Arc<Mutex<Captured>>) {
        let m = Arc::new(Mutex::new(Captured::default()));
        (Sink::Memory(Arc::clone(&m)), m)
    }

    #[test]
    fn mode_follows_quiet_no_progress_and_the_terminal() {
        let i = Duration::from_secs(5);
        assert_eq!(Mode::choose(true, false, true, i), Mode::Off);
        assert_eq!(
            Mode::choose(false, true, true, i),
            Mode::Plain { interval: i }
        );
        assert_eq!(
            Mode::choose(false, false, false, i),
            Mode::Plain { interval: i }
        );
        assert_eq!(Mode::choose(false, false, true, i), Mode::Bars);
    }

    /// A synthetic run of 10 hosts over 23 s, ticked every 250 ms as the run loop does: a
    /// plain line at 5, 10, 15 and 20 s and one at the end, each with the counts so far.
    #[test]
    fn plain_mode_writes_a_line_every_interval_with_the_counts() {
        let (sink, captured) = memory();
        let interval = Duration::from_secs(5);
        let mut display = ProgressDisplay::new(sink, Mode::Plain { interval }, Some(10));
        // host i finishes at 2i + 1 seconds: hosts 0..=6 succeed, 7 and 8 fail, 9 skipped.
        let finish_at = |i: u64| Duration::from_secs(2 * i + 1);
        let mut lines = Vec::new();
        let mut finished = 0u64;
        let mut t = Duration::ZERO;
        while t <= Duration::from_secs(23) {
            while finished < 10 && finish_at(finished) <= t {
                let (status, bucket) = match finished {
                    0..=6 => (Status::Succeeded, None),
                    7 => (Status::Failed, Some(Bucket::InvalidCredentials)),
                    8 => (Status::Failed, Some(Bucket::Timeout)),
                    _ => (Status::Skipped, None),
                };
                display.finished(status, bucket);
                finished += 1;
            }
            let progress = Progress {
                in_flight: 10 - finished.min(10),
                waiting_for_shell_slot: u64::from(finished < 3),
                retried: 2,
                ..Progress::default()
            };
            lines.extend(display.tick(progress, t));
            t += Duration::from_millis(250);
        }
        lines.extend(display.finish(Progress::default(), Duration::from_secs(23)));
        assert_eq!(
            lines,
            [
                "progress [00:00:05] 3/10 done (30%), 0.6 hosts/s, ETA 00:00:11 | in flight 7, \
                 waiting for a shell slot 0, queued 0, backing off 0, retries 2 | succeeded 3",
                "progress [00:00:10] 5/10 done (50%), 0.5 hosts/s, ETA 00:00:10 | in flight 5, \
                 waiting for a shell slot 0, queued 0, backing off 0, retries 2 | succeeded 5",
                "progress [00:00:15] 8/10 done (80%), 0.5 hosts/s, ETA 00:00:03 | in flight 2, \
                 waiting for a shell slot 0, queued 0, backing off 0, retries 2 | succeeded 7, \
                 InvalidCredentials 1",
                "progress [00:00:20] 10/10 done (100%), 0.5 hosts/s, ETA 00:00:00 | in flight \
                 0, waiting for a shell slot 0, queued 0, backing off 0, retries 2 | succeeded \
                 7, InvalidCredentials 1, Timeout 1, skipped 1",
                "progress [00:00:23] 10/10 done (100%), 0.4 hosts/s, ETA 00:00:00 | in flight \
                 0, waiting for a shell slot 0, queued 0, backing off 0, retries 0 | succeeded \
                 7, InvalidCredentials 1, Timeout 1, skipped 1",
            ]
        );
        let err = captured.lock().unwrap().err.clone();
        assert_eq!(err.lines().count(), 5, "{err}");
        assert!(
            captured.lock().unwrap().out.is_empty(),
            "progress never writes stdout"
        );
    }

    #[test]
    fn a_slow_tick_skips_missed_lines_instead_of_bursting() {
        let (sink, _) = memory();
        let interval = Duration::from_secs(5);
        let mut display = ProgressDisplay::new(sink, Mode::Plain { interval }, None);
        assert!(
            display
                .tick(Progress::default(), Duration::from_secs(4))
                .is_none()
        );
        // A stall until 17 s: one line, and the next at 20 s, not three at once.
        assert!(
            display
                .tick(Progress::default(), Duration::from_secs(17))
                .is_some()
        );
        assert!(
            display
                .tick(Progress::default(), Duration::from_secs(18))
                .is_none()
        );
        let line = display
            .tick(Progress::default(), Duration::from_secs(20))
            .unwrap();
        assert!(
            line.starts_with("progress [00:00:20] 0 done, 0.0 hosts/s |"),
            "{line}"
        );
    }

    #[test]
    fn off_mode_writes_nothing_but_counts() {
        let (sink, captured) = memory();
        let mut display = ProgressDisplay::new(sink, Mode::Off, Some(2));
        display.finished(Status::Failed, Some(Bucket::InvalidPort));
        display.finished(Status::Failed, None);
        assert!(
            display
                .tick(Progress::default(), Duration::from_secs(60))
                .is_none()
        );
        assert!(
            display
                .finish(Progress::default(), Duration::from_secs(61))
                .is_none()
        );
        assert_eq!(display.tally().failed_total(), 2);
        assert_eq!(
            display.tally().buckets_text(),
            "succeeded 0, InvalidPort 1, unclassified 1"
        );
        assert!(captured.lock().unwrap().err.is_empty());
    }
}
