//! `psfleet-bench`: the psfleet row of the side-by-side benchmark (BENCHMARKS.md).
//!
//! Reads a simulated fleet's `inventory.csv` and `accounts.txt` (the password never
//! travels in argv), runs one PowerShell script on every host through the engine
//! (`HostClient::run_script`: one kept-alive, NTLM-authenticated, sealed connection per
//! host) with at most `--concurrency` hosts in flight, checks that every host answered
//! with its own computer name, and prints one JSON summary on stdout. The Python driver
//! (`bench/bench.py`) measures CPU, memory and round trips from outside; this binary only
//! reports what the client itself saw.
//!
//! It stands in for `psfleet run` until that command is in main, and stays as the
//! "psfleet-engine" row afterwards (the engine without the scheduler, journal or reports).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use psfleet_core::psrp::client::ScriptSpec;
use psfleet_engine::auth::{Credential, Mechanism};
use psfleet_engine::http::Encryption;
use psfleet_engine::ops::{ClientOptions, HostClient, RunControl};
use psfleet_engine::target::{Endpoint, Scheme};
use psfleet_engine::tls::{TlsClient, TlsOptions};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// `--features mimalloc`: the allocator experiment of BENCHMARKS.md (glibc malloc is about
/// 15 % of the client's CPU).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--features count-allocs`: the system allocator with counters, so the summary can say
/// how many allocations (and bytes) each host cost. Not combined with `mimalloc`.
#[cfg(all(feature = "count-allocs", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// A counting wrapper over the system allocator (allocation figures of BENCHMARKS.md).
#[cfg(all(feature = "count-allocs", not(feature = "mimalloc")))]
#[allow(unsafe_code)] // A GlobalAlloc impl is unsafe by definition; it only forwards.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Allocations (`alloc`, `alloc_zeroed` and `realloc` calls).
    pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
    /// Bytes asked for by those calls (a `realloc` counts its new size).
    pub static BYTES: AtomicU64 = AtomicU64::new(0);

    /// The system allocator, counting.
    pub struct Counting;

    fn count(size: usize) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }

    // SAFETY: every call is forwarded unchanged to `System`, which upholds the contract.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(new_size);
            // SAFETY: forwarded with the caller's pointer and layouts.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded with the caller's pointer and layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// (allocations, bytes) so far.
    pub fn snapshot() -> (u64, u64) {
        (
            ALLOCATIONS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        )
    }
}

/// (allocations, bytes) so far; zeros without the `count-allocs` feature.
fn alloc_snapshot() -> (u64, u64) {
    #[cfg(all(feature = "count-allocs", not(feature = "mimalloc")))]
    {
        counting::snapshot()
    }
    #[cfg(not(all(feature = "count-allocs", not(feature = "mimalloc"))))]
    {
        (0, 0)
    }
}

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "psfleet-bench",
    about = "Run one script over a simulated fleet through the psfleet engine"
)]
struct Args {
    /// The simulator's inventory.csv.
    #[arg(long)]
    inventory: PathBuf,
    /// The simulator's accounts.txt (`name password role` per line).
    #[arg(long)]
    accounts: PathBuf,
    /// The account to use.
    #[arg(long, default_value = "fleetadmin")]
    user: String,
    /// Hosts in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The PowerShell script every host runs.
    #[arg(long, default_value = "$env:COMPUTERNAME")]
    script: String,
    /// Only the first N hosts of the inventory.
    #[arg(long)]
    limit: Option<usize>,
    /// CA certificate (PEM) trusted for HTTPS hosts.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept any HTTPS certificate issuer (-SkipCACheck).
    #[arg(long)]
    skip_ca_check: bool,
    /// TCP connect (plus TLS handshake) timeout, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    connect_timeout_ms: u64,
    /// One request and its response, milliseconds.
    #[arg(long, default_value_t = 60_000)]
    request_timeout_ms: u64,
    /// Tokio worker threads (0: one current-thread runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Write one JSON line per host here.
    #[arg(long)]
    results: Option<PathBuf>,
    /// What each host does: `script` (the script over PSRP, as `psfleet run`) or `sweep`
    /// (unauthenticated Identify, then authenticate and read `winrm/config`, as
    /// `psfleet sweep`).
    #[arg(long, value_enum, default_value_t = Job::Script)]
    job: Job,
    /// Probe each host's TCP port (bare connect, `--connect-timeout-ms`) with up to this
    /// many probes in flight before it takes one of the `--concurrency` work slots; 0 (the
    /// default) connects inside the work slot, as the engine's scheduler does.
    #[arg(long, default_value_t = 0)]
    probe_slots: usize,
    /// Drive the hosts through the engine's fleet runner (`engine::fleet::execute`: the
    /// scheduler, the classifier, the fsync'd journal and the state cache, what
    /// `psfleet run` calls) with this state directory, instead of a bare semaphore.
    #[arg(long)]
    runner_state_dir: Option<PathBuf>,
    /// With `--runner-state-dir`: the scheduler's `queue_depth` (jobs pulled and not
    /// finished; 0, the default, is the engine's max(4 x forks, 1024)).
    #[arg(long, default_value_t = 0)]
    queue_depth: usize,
}

/// The work done on each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Job {
    /// Run the script (PSRP runspace pool, one pipeline).
    Script,
    /// Identify, authenticate, read the service configuration; nothing runs.
    Sweep,
}

/// Why the benchmark could not run at all (per-host failures are counted, not errors).
#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("{0}: no account {1:?}")]
    NoAccount(PathBuf, String),
    #[error("credential: {0}")]
    Credential(String),
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("results file: {0}")]
    Results(#[source] std::io::Error),
    #[error("the concurrency must be at least 1")]
    Concurrency,
    #[error("state store: {0}")]
    Store(String),
    #[error("fleet runner: {0}")]
    Runner(String),
}

/// One inventory row, the columns the benchmark needs.
#[derive(Debug, Clone, serde::Deserialize)]
struct Row {
    name: String,
    address: String,
    port: u16,
    scheme: String,
}

/// What happened on one host.
#[derive(Debug, Serialize)]
struct HostOutcome {
    name: String,
    /// `ok`, `wrong_output` or a failure bucket name (`Unclassified` without one).
    outcome: String,
    /// First output object, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    /// The error text of a failed host.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    ms: f64,
    requests: u32,
    connections: u32,
}

/// The summary printed on stdout.
#[derive(Debug, Serialize)]
struct Summary {
    hosts: usize,
    concurrency: usize,
    succeeded: usize,
    failed: usize,
    outcomes: BTreeMap<String, usize>,
    /// From the first connection to the last answer, as the client saw it.
    wall_s: f64,
    /// WS-Man requests the client sent (authentication legs not included).
    requests: u64,
    connections: u64,
    per_host_ms_p50: f64,
    per_host_ms_p99: f64,
    per_host_ms_max: f64,
    first_failure: Option<String>,
    /// With `--features count-allocs`: heap allocations (alloc and realloc calls) per host
    /// during the run, set-up excluded.
    #[serde(skip_serializing_if = "Option::is_none")]
    allocations_per_host: Option<f64>,
    /// With `--features count-allocs`: bytes those allocations asked for, per host.
    #[serde(skip_serializing_if = "Option::is_none")]
    allocated_bytes_per_host: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(summary) => {
            match serde_json::to_string(&summary) {
                Ok(line) => println!("{line}"),
                Err(error) => eprintln!("psfleet-bench: {error}"),
            }
            if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(error) => {
            eprintln!("psfleet-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Summary, BenchError> {
    if args.concurrency == 0 {
        return Err(BenchError::Concurrency);
    }
    let mut rows = read_inventory(&args.inventory)?;
    if let Some(limit) = args.limit {
        rows.truncate(limit);
    }
    let options = Arc::new(client_options(args)?);
    let runtime = if args.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(BenchError::Runtime)?;
    let script = Arc::new(args.script.clone());
    let limits = Limits {
        concurrency: args.concurrency,
        queue_depth: args.queue_depth,
        probe_slots: args.probe_slots,
    };
    let before = alloc_snapshot();
    let (outcomes, wall) = match &args.runner_state_dir {
        Some(dir) => runtime.block_on(run_with_runner(
            rows, options, &script, limits, args.job, dir,
        ))?,
        None => runtime.block_on(run_fleet(rows, options, script, limits, args.job)),
    };
    if let Some(path) = &args.results {
        write_results(path, &outcomes).map_err(BenchError::Results)?;
    }
    let after = alloc_snapshot();
    let mut summary = summarise(&outcomes, args.concurrency, wall);
    if cfg!(feature = "count-allocs") && !outcomes.is_empty() {
        let hosts = outcomes.len() as f64;
        summary.allocations_per_host = Some(after.0.saturating_sub(before.0) as f64 / hosts);
        summary.allocated_bytes_per_host = Some(after.1.saturating_sub(before.1) as f64 / hosts);
    }
    Ok(summary)
}

fn read_inventory(path: &Path) -> Result<Vec<Row>, BenchError> {
    let csv_error = |source| BenchError::Csv {
        path: path.to_owned(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(csv_error)?;
    reader
        .deserialize()
        .collect::<Result<Vec<Row>, _>>()
        .map_err(csv_error)
}

fn client_options(args: &Args) -> Result<ClientOptions, BenchError> {
    let accounts = std::fs::read_to_string(&args.accounts).map_err(|source| BenchError::Read {
        path: args.accounts.clone(),
        source,
    })?;
    let password = accounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?))
        })
        .find(|(name, _)| name.eq_ignore_ascii_case(&args.user))
        .map(|(_, password)| password.to_owned())
        .ok_or_else(|| BenchError::NoAccount(args.accounts.clone(), args.user.clone()))?;
    let credential = Credential::new(&args.user, password)
        .map_err(|error| BenchError::Credential(error.to_string()))?;
    let mut options = ClientOptions::new(Mechanism::Ntlm, credential);
    // Auto: sealed over HTTP, TLS alone over HTTPS (pypsrp and pywinrm do the same).
    options.encryption = Encryption::Auto;
    options.connect_timeout = Duration::from_millis(args.connect_timeout_ms);
    options.request_timeout = Duration::from_millis(args.request_timeout_ms);
    if args.ca.is_some() || args.skip_ca_check {
        let ca_pem = match &args.ca {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| BenchError::Read {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let tls = TlsOptions {
            system_roots: false,
            ca_pem,
            skip_ca_check: args.skip_ca_check,
            ..TlsOptions::default()
        };
        options.tls = Some(TlsClient::new(&tls).map_err(|e| BenchError::Tls(e.to_string()))?);
    }
    Ok(options)
}

/// Runs every host, at most `concurrency` at once; returns the outcomes and the wall time.
async fn run_fleet(
    rows: Vec<Row>,
    options: Arc<ClientOptions>,
    script: Arc<String>,
    limits: Limits,
    job: Job,
) -> (Vec<HostOutcome>, Duration) {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(limits.concurrency));
    // With probing, a host first takes a probe slot (many: a pending connect costs a
    // socket and nothing else) and keeps it until it has a work slot, so at most
    // `probe_slots + concurrency` hosts are alive at once.
    let probe_permits = Arc::new(Semaphore::new(limits.probe_slots.max(1)));
    let mut tasks = JoinSet::new();
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let probing = limits.probe_slots > 0;
        let gate = if probing { &probe_permits } else { &permits };
        // The permit is taken before the task exists: the number of hosts (and their
        // buffers) alive at once stays bounded.
        let Ok(first_permit) = Arc::clone(gate).acquire_owned().await else {
            break;
        };
        let options = Arc::clone(&options);
        let script = Arc::clone(&script);
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let permit = if probing {
                if let Some(outcome) = probe(&row, options.connect_timeout).await {
                    return outcome;
                }
                let Ok(permit) = permits.acquire_owned().await else {
                    return probe_failed(&row, "Interrupted", "no work slot".to_owned(), 0.0);
                };
                drop(first_permit);
                permit
            } else {
                first_permit
            };
            let outcome = match job {
                Job::Script => run_host(row, options, &script).await,
                Job::Sweep => sweep_host(row, options).await,
            };
            drop(permit);
            outcome
        });
        // Reap finished hosts as we go, so outcomes do not pile up in the JoinSet.
        while let Some(done) = tasks.try_join_next() {
            outcomes.push(joined(done));
        }
    }
    while let Some(done) = tasks.join_next().await {
        outcomes.push(joined(done));
    }
    (outcomes, started.elapsed())
}

/// How many hosts may be in flight.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Hosts doing the job (connected, authenticating, running).
    concurrency: usize,
    /// The fleet runner's queue depth (0: the engine's default).
    queue_depth: usize,
    /// Hosts whose TCP reachability is being probed before they take a work slot (0: no
    /// probe; the connect happens inside the work slot, as the engine does it).
    probe_slots: usize,
}

/// A bare TCP connect to the row's address within `timeout`: `None` when it connected
/// (the socket is closed at once), or the host's outcome when it did not.
async fn probe(row: &Row, timeout: Duration) -> Option<HostOutcome> {
    let started = Instant::now();
    let Ok(address) = row.address.parse::<IpAddr>() else {
        return None;
    };
    let target = std::net::SocketAddr::new(address, row.port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_stream)) => None,
        Ok(Err(error)) => Some(probe_failed(
            row,
            "InvalidPort",
            format!("probe: connecting to {target}: {error}"),
            millis(started.elapsed()),
        )),
        Err(_) => Some(probe_failed(
            row,
            "InvalidHostName",
            format!("probe: connecting to {target} timed out after {timeout:?}"),
            millis(started.elapsed()),
        )),
    }
}

fn probe_failed(row: &Row, outcome: &str, error: String, ms: f64) -> HostOutcome {
    HostOutcome {
        name: row.name.clone(),
        outcome: outcome.to_owned(),
        output: None,
        error: Some(error),
        ms,
        requests: 0,
        connections: 0,
    }
}

/// The same hosts through `engine::fleet::execute`, the path of `psfleet run`: forks =
/// `--concurrency`, every other scheduler setting at its default; each host's journal record
/// is checked like a bare run's result.
async fn run_with_runner(
    rows: Vec<Row>,
    options: Arc<ClientOptions>,
    script: &str,
    limits: Limits,
    job: Job,
    state_dir: &Path,
) -> Result<(Vec<HostOutcome>, Duration), BenchError> {
    use psfleet_engine::fleet::{RunEvent, RunKind, RunPlan, Target, execute};
    let store = psfleet_engine::store::Store::open(state_dir)
        .map_err(|error| BenchError::Store(error.to_string()))?;
    let targets = rows
        .iter()
        .map(|row| {
            let mut target = Target::new(&row.name);
            target.address = row.address.parse().ok();
            target.scheme = if row.scheme.eq_ignore_ascii_case("https") {
                Scheme::Https
            } else {
                Scheme::Http
            };
            target.port = Some(row.port);
            target
        })
        .collect();
    let kind = match job {
        Job::Script => RunKind::Script(ScriptSpec::new(script)),
        Job::Sweep => RunKind::Sweep,
    };
    let mut plan = RunPlan::new(kind, targets, options);
    plan.scheduler.forks = limits.concurrency;
    plan.scheduler.queue_depth = limits.queue_depth;
    let (events, mut received) = tokio::sync::mpsc::channel(1024);
    let collector = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        while let Some(event) = received.recv().await {
            if let RunEvent::HostDone(record) = event {
                outcomes.push(record_outcome(&record, job));
            }
        }
        outcomes
    });
    let started = Instant::now();
    let summary = execute(plan, &store, events)
        .await
        .map_err(|error| BenchError::Runner(error.to_string()))?;
    let wall = started.elapsed();
    let outcomes = collector
        .await
        .map_err(|error| BenchError::Runner(error.to_string()))?;
    if outcomes.len() as u64 != summary.hosts {
        eprintln!(
            "psfleet-bench: {} host records for {} hosts",
            outcomes.len(),
            summary.hosts
        );
    }
    Ok((outcomes, wall))
}

/// A journal record judged like a bare run's result: a script must have answered with the
/// host's computer name, a sweep must have succeeded.
fn record_outcome(record: &psfleet_engine::record::HostRecord, job: Job) -> HostOutcome {
    use psfleet_engine::record::Status;
    let output = record
        .output
        .first()
        .and_then(|value| value.as_str())
        .map(str::to_owned);
    let outcome = match (record.status, job) {
        (Status::Succeeded, Job::Sweep) => "ok".to_owned(),
        (Status::Succeeded, Job::Script)
            if output
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case(&computer_name(&record.host))) =>
        {
            "ok".to_owned()
        }
        (Status::Succeeded, Job::Script) => "wrong_output".to_owned(),
        (_, _) => record
            .bucket
            .map_or_else(|| format!("{:?}", record.status), |b| b.name().to_owned()),
    };
    HostOutcome {
        name: record.host.clone(),
        outcome,
        output,
        error: (record.status != Status::Succeeded).then(|| record.message.clone()),
        ms: record.duration_ms as f64,
        requests: 0,
        connections: 0,
    }
}

fn joined(done: Result<HostOutcome, tokio::task::JoinError>) -> HostOutcome {
    done.unwrap_or_else(|error| HostOutcome {
        name: String::new(),
        outcome: "Panicked".to_owned(),
        output: None,
        error: Some(error.to_string()),
        ms: 0.0,
        requests: 0,
        connections: 0,
    })
}

/// A client for the row's host, connecting to its inventory address; or the outcome of a
/// host refused before any packet.
fn host_client(
    row: &Row,
    options: Arc<ClientOptions>,
    started: Instant,
) -> Result<HostClient, HostOutcome> {
    let failed = |outcome: &str, error: String| HostOutcome {
        name: row.name.clone(),
        outcome: outcome.to_owned(),
        output: None,
        error: Some(error),
        ms: millis(started.elapsed()),
        requests: 0,
        connections: 0,
    };
    let scheme = if row.scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let endpoint = match Endpoint::new(&row.name, scheme) {
        Ok(endpoint) => endpoint.with_port(row.port),
        Err(error) => return Err(failed("InvalidEndpoint", error.to_string())),
    };
    let mut client = HostClient::new(endpoint, options)
        .map_err(|error| failed(bucket_name(error.bucket()), error.to_string()))?;
    if let Ok(address) = row.address.parse::<IpAddr>() {
        client = client.with_address(address);
    }
    Ok(client)
}

/// `psfleet sweep`'s work: unauthenticated Identify on a connection of its own (as
/// Test-WSMan), then authenticate and read `winrm/config`. Succeeds when the host answered
/// both and its configuration names a MaxEnvelopeSizekb.
async fn sweep_host(row: Row, options: Arc<ClientOptions>) -> HostOutcome {
    let started = Instant::now();
    let mut client = match host_client(&row, options, started) {
        Ok(client) => client,
        Err(outcome) => return outcome,
    };
    let result = match client.identify(false).await {
        Ok(_) => client.get_config().await,
        Err(error) => Err(error),
    };
    let outcome = match &result {
        Ok(config) if config.max_envelope_size_kb.is_some() => "ok".to_owned(),
        Ok(_) => "wrong_output".to_owned(),
        Err(error) => bucket_name(error.bucket()).to_owned(),
    };
    HostOutcome {
        name: row.name,
        outcome,
        output: None,
        error: result.err().map(|e| e.to_string()),
        ms: millis(started.elapsed()),
        // The client counts per operation only for runs; a sweep is Identify (its own
        // connection) plus one Get.
        requests: 2,
        connections: 0,
    }
}

async fn run_host(row: Row, options: Arc<ClientOptions>, script: &str) -> HostOutcome {
    let started = Instant::now();
    let mut client = match host_client(&row, options, started) {
        Ok(client) => client,
        Err(outcome) => return outcome,
    };
    let result = client
        .run_script(ScriptSpec::new(script), RunControl::none())
        .await;
    let ms = millis(started.elapsed());
    match result {
        Ok(result) => {
            let output = result
                .output
                .first()
                .and_then(|value| value.as_str())
                .map(str::to_owned);
            let expected = computer_name(&row.name);
            let outcome = if output
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case(&expected))
            {
                "ok"
            } else if result.bucket().is_some() {
                "ScriptFailed"
            } else {
                "wrong_output"
            };
            HostOutcome {
                name: row.name,
                outcome: outcome.to_owned(),
                output,
                error: None,
                ms,
                requests: result.durations.requests,
                connections: result.durations.connections,
            }
        }
        Err(error) => HostOutcome {
            name: row.name,
            outcome: bucket_name(error.error.bucket()).to_owned(),
            output: None,
            error: Some(error.error.to_string()),
            ms,
            requests: error.durations.requests,
            connections: error.durations.connections,
        },
    }
}

/// The NetBIOS name a host reports: the first label, upper case, at most 15 characters.
fn computer_name(host: &str) -> String {
    let label = host.split('.').next().unwrap_or(host);
    label.chars().take(15).collect::<String>().to_uppercase()
}

fn bucket_name(bucket: Option<psfleet_core::taxonomy::Bucket>) -> &'static str {
    bucket.map_or("Unclassified", psfleet_core::taxonomy::Bucket::name)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn write_results(path: &Path, outcomes: &[HostOutcome]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for outcome in outcomes {
        serde_json::to_writer(&mut out, outcome)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn summarise(outcomes: &[HostOutcome], concurrency: usize, wall: Duration) -> Summary {
    let mut counts = BTreeMap::new();
    for outcome in outcomes {
        *counts.entry(outcome.outcome.clone()).or_insert(0) += 1;
    }
    let succeeded = counts.get("ok").copied().unwrap_or(0);
    let mut times: Vec<f64> = outcomes.iter().map(|o| o.ms).collect();
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if times.is_empty() {
            return 0.0;
        }
        // Rounded index into a non-empty sorted list, clamped to its end.
        let at = ((times.len() - 1) as f64 * q).round() as usize;
        times.get(at.min(times.len() - 1)).copied().unwrap_or(0.0)
    };
    Summary {
        hosts: outcomes.len(),
        concurrency,
        succeeded,
        failed: outcomes.len() - succeeded,
        outcomes: counts,
        wall_s: wall.as_secs_f64(),
        requests: outcomes.iter().map(|o| u64::from(o.requests)).sum(),
        connections: outcomes.iter().map(|o| u64::from(o.connections)).sum(),
        per_host_ms_p50: pick(0.5),
        per_host_ms_p99: pick(0.99),
        per_host_ms_max: times.last().copied().unwrap_or(0.0),
        first_failure: outcomes.iter().find(|o| o.outcome != "ok").map(|o| {
            format!(
                "{}: {} {}",
                o.name,
                o.outcome,
                o.error.as_deref().unwrap_or("")
            )
        }),
        allocations_per_host: None,
        allocated_bytes_per_host: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computer_names_follow_the_netbios_rule() {
        assert_eq!(computer_name("srv0001.fleet.test"), "SRV0001");
        assert_eq!(computer_name("averyveryverylongname.x"), "AVERYVERYVERYLO");
        assert_eq!(computer_name("127.20.0.1"), "127");
    }

    fn row_at(address: std::net::SocketAddr) -> Row {
        Row {
            name: "srv0001.fleet.test".to_owned(),
            address: address.ip().to_string(),
            port: address.port(),
            scheme: "http".to_owned(),
        }
    }

    #[tokio::test]
    async fn the_probe_passes_a_listening_port_and_names_a_refused_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        assert!(probe(&row_at(open), Duration::from_secs(5)).await.is_none());
        drop(listener);
        // Nothing listens there any more: the connect is refused at once.
        let refused = probe(&row_at(open), Duration::from_secs(5)).await.unwrap();
        assert_eq!(refused.outcome, "InvalidPort");
        assert!(refused.ms < 5000.0, "{}", refused.ms);
    }

    /// Over HTTPS the first request rides on the authenticating leg: connect and one
    /// request take 2 HTTP requests instead of 3 (the 8 -> 7 of BENCHMARKS.md "Round trips
    /// per host"), the connection stays usable, one authentication, and a refused password
    /// is the same error as `connect` gives.
    #[tokio::test]
    async fn over_https_the_first_request_rides_on_the_authenticating_leg() {
        use psfleet_core::wsman::{IdentifyRequest, IdentifyResponse};
        use psfleet_engine::http::{AuthMethod, Connection, ConnectionConfig, TransportError};
        use psfleet_sim::fleet::FleetOptions;
        use psfleet_sim::profile::Profile;

        let profile = Profile::parse(
            "carried",
            "<test>",
            "[[class]]\nname = \"https\"\ncount = 1\nlisteners = [\"https\"]\n",
        )
        .unwrap();
        let fleet = psfleet_tests::fleet::start(FleetOptions::new(profile, 1, 3)).await;
        let host = fleet.host_of_class("https").unwrap();
        let account = fleet.accounts().iter().find(|a| a.admin).unwrap();
        let tls = TlsClient::new(&TlsOptions {
            system_roots: false,
            ca_pem: Some(fleet.ca_pem().to_owned()),
            ..TlsOptions::default()
        })
        .unwrap();
        let config = |mechanism, password: &str| {
            let endpoint = Endpoint::new(&host.spec.name, Scheme::Https).unwrap();
            let credential = Credential::new(&account.name, password).unwrap();
            let mut config =
                ConnectionConfig::for_endpoint(&endpoint, AuthMethod::Sspi(mechanism), credential);
            config.encryption = Encryption::Auto;
            config.tls = Some(tls.clone());
            config.address = Some(IpAddr::V4(host.spec.address));
            config
        };
        let identify = IdentifyRequest.to_xml();
        // Raw NTLM completes with its AUTHENTICATE leg, which carries the request; SPNEGO
        // waits for the server's last token and sends it after (3 requests, as before).
        for (mechanism, first) in [(Mechanism::Ntlm, 2), (Mechanism::Negotiate, 3)] {
            let config = config(mechanism, &account.password);
            let before = host.stats.snapshot();
            let (mut conn, reply) = Connection::connect_and_send(&config, &identify)
                .await
                .unwrap_or_else(|e| panic!("{mechanism:?}: {e:?}"));
            let carried = host.stats.snapshot();
            assert_eq!(reply.status, 200);
            let answer = IdentifyResponse::parse(&reply.body).unwrap();
            assert!(answer.security_profiles.is_some(), "{answer:?}");
            assert_eq!(carried.requests - before.requests, first, "{mechanism:?}");
            assert_eq!(carried.authentications - before.authentications, 1);
            // The connection goes on without authenticating again.
            let again = conn.send(&identify).await.unwrap();
            assert_eq!(again.status, 200);
            let after = host.stats.snapshot();
            assert_eq!(after.requests - carried.requests, 1);
            assert_eq!(after.connections - before.connections, 1);
            assert_eq!(after.authentications, carried.authentications);

            // The two-step path takes one request more for the same answer.
            let before = host.stats.snapshot();
            let mut plain = Connection::connect(&config).await.unwrap();
            assert_eq!(plain.send(&identify).await.unwrap().status, 200);
            assert_eq!(host.stats.snapshot().requests - before.requests, 3);
        }
        let wrong = config(Mechanism::Ntlm, "not the password");
        let carried = Connection::connect_and_send(&wrong, &identify)
            .await
            .map(|_| ())
            .unwrap_err();
        let direct = Connection::connect(&wrong).await.map(|_| ()).unwrap_err();
        assert!(
            matches!(carried, TransportError::CredentialsRejected { .. }),
            "{carried:?}"
        );
        assert_eq!(carried.to_string(), direct.to_string());
    }

    #[test]
    fn the_summary_counts_outcomes_and_percentiles() {
        let host = |outcome: &str, ms: f64| HostOutcome {
            name: "h".to_owned(),
            outcome: outcome.to_owned(),
            output: None,
            error: None,
            ms,
            requests: 5,
            connections: 1,
        };
        let outcomes = [host("ok", 10.0), host("ok", 30.0), host("Timeout", 20.0)];
        let summary = summarise(&outcomes, 8, Duration::from_secs(2));
        assert_eq!(summary.succeeded, 2);
        assert_eq!(summary.failed, 1);
        assert_eq!(summary.outcomes.get("Timeout"), Some(&1));
        assert_eq!(summary.requests, 15);
        assert_eq!(summary.per_host_ms_p50, 20.0);
        assert_eq!(summary.per_host_ms_max, 30.0);
        assert_eq!(summary.first_failure.as_deref(), Some("h: Timeout "));
    }
}
