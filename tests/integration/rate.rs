//! The global connection rate limit (`--rate`) checked against the simulator's own log of
//! accepted TCP connections (issue 5, "Done when" item 3): over a 1,000-host run at 50/s with
//! a burst of 10, no one-second window of the log holds more than 50 + 10 connections.
//!
//! The limiter spends one token per new TCP connection, right before the connect (the
//! scheduler's `AttemptGate`, awaited by the transport), so the test also checks that each
//! host saw exactly one connection (one attempt, one keep-alive connection for
//! authentication and every request).
//!
//! History: this test was ignored while the scheduler spent the token before the attempt
//! journaled `host_started` (durably) and built its client; connections then followed their
//! tokens by 200-500 ms at 256 forks on a loaded 2-core machine and bunched into busiest
//! seconds of 63-77.
//!
//! The simulator's log is the kernel's: each connection is stamped with when the kernel
//! completed its handshake, from TCP_INFO at accept time. It used
//! to be stamped when the accept task ran, and on a 2-core machine shared with other builds
//! (load average 9 to 11) that lagged the client's connect by 20-95 ms (median) and up to
//! 450 ms, bunching the log into busiest seconds of 59-68 while the gate itself never
//! released more than 60 in any second (measured with a temporary probe in the gate).

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use psfleet_core::psrp::client::ScriptSpec;
use psfleet_engine::auth::{Credential, Mechanism};
use psfleet_engine::fleet::{RunEvent, RunKind, RunPlan, RunSummary, Target, execute};
use psfleet_engine::http::AuthMethod;
use psfleet_engine::journal::EndReason;
use psfleet_engine::ops::ClientOptions;
use psfleet_engine::record::{HostRecord, Status};
use psfleet_engine::scheduler::RateLimit;
use psfleet_engine::store::Store;
use psfleet_engine::target::Scheme;
use psfleet_sim::fleet::{FleetHandle, FleetOptions};
use psfleet_sim::profile::Profile;
use psfleet_sim::stats::ConnectionLogSnapshot;
use tokio::sync::mpsc;

use crate::state::temp_dir;

const WINDOW: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1000_host_run_at_50_per_second_never_exceeds_rate_plus_burst_in_any_second() {
    const HOSTS: usize = 1_000;
    const RATE: u32 = 50;
    const BURST: u32 = 10;
    let sim = Sim::start("bench", HOSTS, 50).await;
    let fleet = &sim.fleet;
    let state = temp_dir("rate-50");
    let store = Store::open(&state).unwrap();
    let mut plan = plan(fleet, "hostname");
    plan.scheduler.forks = 256;
    plan.scheduler.rate = Some(
        RateLimit::per_second(NonZeroU32::new(RATE).unwrap())
            .with_burst(NonZeroU32::new(BURST).unwrap()),
    );
    assert_eq!(
        plan.scheduler.rate.unwrap(),
        "50/s:10".parse::<RateLimit>().unwrap()
    );
    assert!(fleet.connection_log().is_empty());

    let began = Instant::now();
    let (summary, records, started) = run(plan, &store).await;
    let wall = began.elapsed();

    // Every host succeeded, once, on its first attempt.
    assert_eq!(summary.end, EndReason::Completed);
    assert_eq!(records.len(), HOSTS);
    assert_eq!(
        summary.count(Status::Succeeded),
        HOSTS as u64,
        "{summary:?}"
    );
    for record in &records {
        assert_eq!(record.status, Status::Succeeded, "{record:?}");
        assert_eq!(record.attempts, 1, "{record:?}");
    }

    // One connection per host: a token is spent per attempt, so this is what makes the
    // limiter a limit on connections.
    for host in fleet.hosts() {
        assert_eq!(
            host.stats.snapshot().connections,
            1,
            "connections to {}",
            host.spec.name
        );
    }
    let log = fleet.connection_log();
    assert_eq!(log.dropped, 0);
    assert_eq!(log.len(), HOSTS, "the log holds every accepted connection");

    let (max, at) = log.max_in_window(WINDOW);
    let first = log.times[0];
    let last = log.times[log.len() - 1];
    println!(
        "rate 50/s burst 10 over {HOSTS} hosts: {} connections, busiest one-second window {max} \
         (from {:.3} s), connections spread over {:.3} s, run wall time {:.3} s, max in flight {}",
        log.len(),
        at.saturating_sub(first).as_secs_f64(),
        last.saturating_sub(first).as_secs_f64(),
        wall.as_secs_f64(),
        summary.scheduler.max_in_flight
    );
    let (started_max, [p50, p99, lag_max]) = started_figures(&started, &log);
    println!(
        "  attempts started: busiest one-second window {started_max}; connection after start: \
         median {p50:.1} ms, p99 {p99:.1} ms, max {lag_max:.1} ms"
    );
    assert!(
        max <= (RATE + BURST) as usize,
        "{max} connections in the one-second window from {at:?}: more than {RATE} + {BURST}"
    );
    // The limiter cannot release the last host earlier than (hosts - burst) / rate after
    // the first (19.8 s); a little slack for the limiter's nanosecond rounding.
    let floor = Duration::from_secs_f64((HOSTS as f64 - f64::from(BURST)) / f64::from(RATE));
    assert!(
        wall + Duration::from_millis(100) >= floor,
        "wall {wall:?} < {floor:?}"
    );
    // And it was not much slower: the busiest second is close to the bound (the rate was
    // actually reached), not a trivially quiet run.
    assert!(
        max >= RATE as usize,
        "busiest second {max}: the run never reached {RATE}/s"
    );
    sim.shutdown().await;
}

/// The control: the same log and window over an unthrottled run do see more than 60
/// connections in a second, so the bound above is a real measurement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unthrottled_run_exceeds_that_bound() {
    const HOSTS: usize = 200;
    let sim = Sim::start("bench", HOSTS, 51).await;
    let fleet = &sim.fleet;
    let state = temp_dir("rate-none");
    let store = Store::open(&state).unwrap();
    let mut plan = plan(fleet, "hostname");
    plan.scheduler.forks = 256;
    assert_eq!(plan.scheduler.rate, None);
    let began = Instant::now();
    let (summary, _records, _started) = run(plan, &store).await;
    let wall = began.elapsed();
    assert_eq!(
        summary.count(Status::Succeeded),
        HOSTS as u64,
        "{summary:?}"
    );
    let log = fleet.connection_log();
    assert_eq!(log.len(), HOSTS);
    let (max, _) = log.max_in_window(WINDOW);
    println!(
        "no rate over {HOSTS} hosts: busiest one-second window {max}, wall time {:.3} s",
        wall.as_secs_f64()
    );
    assert!(max > 60, "busiest second {max}");
    sim.shutdown().await;
}

/// The simulated fleet on a runtime of its own (two worker threads), as real hosts are
/// machines of their own: its accept tasks, which write the connection log, do not queue
/// behind the client's tasks on the test's two workers (on a loaded machine that queueing
/// delayed accepts by up to 700 ms and bunched the log without any bunching on the wire).
struct Sim {
    fleet: FleetHandle,
    runtime: tokio::runtime::Runtime,
}

impl Sim {
    async fn start(profile: &str, hosts: usize, seed: u64) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sim")
            .enable_all()
            .build()
            .unwrap();
        let profile = Profile::load(profile).unwrap();
        let fleet = runtime
            .spawn(psfleet_tests::fleet::start(FleetOptions::new(
                profile, hosts, seed,
            )))
            .await
            .unwrap();
        Self { fleet, runtime }
    }

    async fn shutdown(self) {
        let Self { fleet, runtime } = self;
        runtime
            .spawn(async move { fleet.shutdown().await })
            .await
            .unwrap()
            .unwrap();
        runtime.shutdown_background();
    }
}

/// A script run over every host of the fleet as the admin account, Negotiate over HTTP.
fn plan(fleet: &FleetHandle, script: &str) -> RunPlan {
    let admin = fleet.accounts().iter().find(|a| a.admin).unwrap();
    let mut options = ClientOptions::new(
        AuthMethod::Sspi(Mechanism::Negotiate),
        Credential::new(&admin.name, admin.password.clone()).unwrap(),
    );
    options.connect_timeout = Duration::from_secs(5);
    options.request_timeout = Duration::from_secs(10);
    let hosts = fleet
        .inventory()
        .iter()
        .map(|row| {
            let mut target = Target::new(&row.name);
            target.address = row.address.map(IpAddr::V4);
            target.scheme = Scheme::Http;
            target.port = Some(row.port);
            target
        })
        .collect();
    let mut plan = RunPlan::new(
        RunKind::Script(ScriptSpec::new(script)),
        hosts,
        Arc::new(options),
    );
    plan.scheduler.seed = Some(7);
    plan
}

/// Runs a plan to its end, collecting the durable records and when each attempt's `Started`
/// event arrived (before it journals `host_started`, builds its client and spends its rate
/// tokens at the connect).
async fn run(plan: RunPlan, store: &Store) -> (RunSummary, Vec<HostRecord>, Vec<Instant>) {
    let (tx, mut rx) = mpsc::channel(256);
    let collector = tokio::spawn(async move {
        let mut records = Vec::new();
        let mut started = Vec::new();
        while let Some(event) = rx.recv().await {
            match event {
                RunEvent::Started { .. } => started.push(Instant::now()),
                RunEvent::HostDone(record) => records.push(*record),
                _ => {}
            }
        }
        (records, started)
    });
    let summary = execute(plan, store, tx).await.unwrap();
    let (records, started) = collector.await.unwrap();
    (summary, records, started)
}

/// The busiest `WINDOW` of the `Started` events (as the collector received them, so a little
/// late and bunched by the event path), and how long after its `Started` event the
/// k-th connection was accepted (k-th in time order on both sides): median, 99th
/// percentile and maximum, in milliseconds.
fn started_figures(started: &[Instant], log: &ConnectionLogSnapshot) -> (usize, [f64; 3]) {
    let mut as_log = log.clone();
    as_log.times = started
        .iter()
        .map(|t| t.saturating_duration_since(log.origin))
        .collect();
    as_log.times.sort_unstable();
    let (max, _) = as_log.max_in_window(WINDOW);
    let mut lags: Vec<f64> = as_log
        .times
        .iter()
        .zip(&log.times)
        .map(|(s, c)| (c.as_secs_f64() - s.as_secs_f64()) * 1e3)
        .collect();
    lags.sort_by(f64::total_cmp);
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    (max, [at(0.5), at(0.99), at(1.0)])
}
