//! The progress display and the output over a synthetic run, to look at them on a terminal:
//! `cargo run -p psfleet --example progress -- [HOSTS] [--no-progress] [-o json]`.
//! Hosts take 0.2-1.6 s each (real time), one in ten fails, 8 forks; a warning is logged
//! every 40 hosts to show that log lines stay above the bars.

use std::time::Duration;

use psfleet_cli::console::{Console, Sink};
use psfleet_cli::drive::{RunObserver, drive, interrupt_signals};
use psfleet_cli::options::OutputFormat;
use psfleet_cli::output::Reporter;
use psfleet_cli::progress::{Mode, ProgressDisplay};
use psfleet_core::taxonomy::Bucket;
use psfleet_engine::record::{HostRecord, JobKind, RunId};
use psfleet_engine::scheduler::{
    AttemptContext, AttemptOutcome, Finished, HostJob, Outcome, Scheduler, SchedulerConfig,
};

struct Job(usize);

impl HostJob for Job {
    type Output = ();
    type Error = Bucket;

    fn host(&self) -> &str {
        "host"
    }

    fn shells_needed(&self) -> u32 {
        0
    }

    async fn attempt(&self, ctx: AttemptContext) -> AttemptOutcome<(), Bucket> {
        let ms = 200 + (self.0 as u64 * 7919) % 1400;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = ctx.cancel.cancelled() => return AttemptOutcome::Permanent(Bucket::Interrupted),
        }
        if self.0 % 40 == 39 {
            tracing::warn!(host = self.0, "a log line while the bars are drawn");
        }
        match self.0 % 10 {
            3 => AttemptOutcome::Permanent(Bucket::InvalidCredentials),
            7 => AttemptOutcome::Permanent(Bucket::Timeout),
            _ => AttemptOutcome::Done(()),
        }
    }
}

struct Records;

impl RunObserver<Job> for Records {
    fn finished(&mut self, f: Finished<Job>) -> HostRecord {
        let host = format!("srv{:04}.fleet.test", f.job.0);
        let bucket = f.outcome.bucket().or(match &f.outcome {
            Outcome::Failed { error, .. } => Some(*error),
            _ => None,
        });
        HostRecord {
            run_id: RunId("example".into()),
            message: bucket.map_or_else(|| "ok".into(), |b| b.message(&host, "5985")),
            host,
            address: None,
            group: None,
            job: JobKind::Script,
            status: f.outcome.status(),
            bucket,
            attempts: f.attempts,
            started: String::new(),
            finished: String::new(),
            duration_ms: f.elapsed.as_millis() as u64,
            exit_code: None,
            pipeline_state: None,
            error_id: None,
            output_excerpt: "hello".into(),
            output: vec![],
            output_truncated: 0,
            errors: vec![],
            warnings: vec![],
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hosts: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);
    let no_progress = args.iter().any(|a| a == "--no-progress");
    let json = args.windows(2).any(|w| w[0] == "-o" && w[1] == "json");
    let console = Console::new(true);
    let _ = psfleet_cli::logging::init(&console, 0, None);
    let sink = Sink::Console(console);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mode = Mode::choose(false, no_progress, tty, Duration::from_secs(2));
    let format = if json {
        OutputFormat::Json
    } else {
        OutputFormat::Text
    };
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        return;
    };
    runtime.block_on(async {
        let mut progress = ProgressDisplay::new(sink.clone(), mode, Some(hosts as u64));
        let mut reporter = Reporter::new(sink.clone(), format, false, false);
        let Ok(scheduler) = Scheduler::new(SchedulerConfig {
            forks: 8,
            ..Default::default()
        }) else {
            return;
        };
        let Ok(interrupts) = interrupt_signals() else {
            return;
        };
        let jobs: Vec<Job> = (0..hosts).map(Job).collect();
        let end = drive(
            &scheduler,
            jobs,
            &mut Records,
            &mut progress,
            &mut reporter,
            &sink,
            "example",
            interrupts,
        )
        .await;
        if let Ok(end) = end {
            std::process::exit(i32::from(end.exit.code()));
        }
    });
}
