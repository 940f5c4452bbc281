//! The fleet runner end to end (engine::fleet): plans run against simulated fleets through
//! the scheduler, the classifier and the run journal, checked against the simulator's own
//! counters (shells created, deleted and open, concurrent shells, script executions, quota
//! faults) and the journal on disk.
//!
//! Every host is a real listener on its own loopback address; every test has its own fleet
//! and state directory.

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use psfleet_core::psrp::client::ScriptSpec;
use psfleet_core::taxonomy::Bucket;
use psfleet_engine::auth::{Credential, Mechanism};
use psfleet_engine::fleet::{FleetError, RunEvent, RunKind, RunPlan, RunSummary, Target, execute};
use psfleet_engine::http::AuthMethod;
use psfleet_engine::journal::{EndReason, JOURNAL_FILE, RUNS_DIR, RunMeta};
use psfleet_engine::kerberos::KerberosOptions;
use psfleet_engine::ops::{ClientOptions, HostClient, RunControl};
use psfleet_engine::record::{HostRecord, JobKind, RunId, Status};
use psfleet_engine::retry::Backoff;
use psfleet_engine::store::Store;
use psfleet_engine::target::{Endpoint, Scheme};
use psfleet_engine::tls::{TlsClient, TlsOptions};
use psfleet_sim::fleet::{FleetHandle, FleetOptions};
use psfleet_sim::profile::{InventoryRow, Profile};
use serde_json::json;
use tokio::sync::mpsc;

use crate::state::temp_dir;

/// The script of the healthy run: two arguments bound to `param()`, values computed from them
/// and the host, a warning.
const ARGS_SCRIPT: &str = "param([int]$N, [string]$Word)
$N * 2
\"$Word-$env:COMPUTERNAME\"
$Word.ToUpper()
Write-Warning 'careful'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_with_arguments_succeeds_on_50_healthy_hosts() {
    let fleet = start("healthy", 50, 11).await;
    let state = temp_dir("fleet-healthy");
    let store = Store::open(&state).unwrap();
    let spec = ScriptSpec::new(ARGS_SCRIPT)
        .with_argument(21)
        .with_argument("hello");
    let mut plan = new_plan(&fleet, RunKind::Script(spec), fleet.inventory());
    plan.scheduler.forks = 16;
    let (summary, records) = run(plan, &store).await;

    assert_eq!(summary.end, EndReason::Completed);
    assert_eq!(summary.count(Status::Succeeded), 50, "{summary:?}");
    assert_eq!(records.len(), 50);
    let computers: HashMap<&str, &str> = fleet
        .hosts()
        .iter()
        .map(|h| (h.spec.name.as_str(), h.spec.os.computer_name.as_str()))
        .collect();
    for record in &records {
        assert_eq!(record.status, Status::Succeeded, "{record:?}");
        assert_eq!(record.bucket, None);
        assert_eq!(record.job, JobKind::Script);
        assert_eq!(record.pipeline_state.as_deref(), Some("Completed"));
        let computer = computers[record.host.as_str()];
        assert_eq!(
            record.output,
            [
                json!(42),
                json!(format!("hello-{computer}")),
                json!("HELLO")
            ],
            "{}",
            record.host
        );
        assert_eq!(
            record.output_excerpt,
            format!("42\nhello-{computer}\nHELLO")
        );
        assert_eq!(record.warnings, ["careful"]);
        assert_eq!(record.output_truncated, 0);
        assert_eq!(record.attempts, 1);
        assert!(record.address.is_some());
        assert_eq!(record.message, "Completed: 3 output object(s)");
    }

    // The journal: one `done` line per host, one `started` line per attempt, every shell
    // opened was closed.
    let lines = journal_lines(&state, &summary.run_id);
    let per_host = count_by_host(&lines, "done");
    assert_eq!(per_host.len(), 50);
    assert!(per_host.values().all(|&n| n == 1), "{per_host:?}");
    assert_eq!(count_by_host(&lines, "started").values().sum::<u64>(), 50);
    assert_eq!(count_type(&lines, "shell_opened"), 50);
    assert_eq!(count_type(&lines, "shell_closed"), 50);
    assert!(store.open_shells().unwrap().is_empty());

    // The simulator: every shell created was deleted, never more than MaxShellsPerUser
    // (Server 2019 default: 30) at once on a host, one execution per host.
    for host in fleet.hosts() {
        let totals = host.service().counters().totals;
        assert_eq!(totals.shells_created, 1, "{}", host.spec.name);
        assert_eq!(totals.shells_deleted, 1, "{}", host.spec.name);
        assert_eq!(totals.shells_open, 0, "{}", host.spec.name);
        assert_eq!(totals.script_executions, 1, "{}", host.spec.name);
        let max = host_max_shells(&fleet, &host.spec.name);
        assert!(totals.max_concurrent_shells <= u64::from(max));
    }
    println!(
        "50 healthy hosts: all succeeded; max in flight {}, journal {} lines",
        summary.scheduler.max_in_flight,
        lines.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_of_the_mixed_fleet_lands_in_its_expected_bucket() {
    let fleet = start("mixed", 200, 5).await;
    let state = temp_dir("fleet-mixed");
    let store = Store::open(&state).unwrap();
    let kerberos_env = std::env::var("PSFLEET_KDC").is_ok();
    let rows: Vec<InventoryRow> = fleet
        .inventory()
        .iter()
        .filter(|r| !(kerberos_env && r.authentication == "kerberos"))
        .cloned()
        .collect();
    if kerberos_env {
        println!(
            "PSFLEET_KDC is set: the Kerberos rows (kerberos_only, unknown_realm) are skipped; \
             their buckets depend on that KDC"
        );
    }
    let mut plan = new_plan(&fleet, RunKind::Script(ScriptSpec::new("hostname")), &rows);
    plan.scheduler.forks = 64;
    // The flaky class cuts 3 % of responses: enough attempts that a client which retries
    // transient failures finishes, as the profile intends.
    plan.scheduler.retry.max_attempts = 8;
    plan.scheduler.retry.transient = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
    };
    // quota_exhausted refuses every shell: its requeues run out quickly.
    plan.scheduler.retry.quota = Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
    };
    plan.scheduler.timeout = Some(Duration::from_secs(20));
    let (summary, records) = run(plan, &store).await;
    assert_eq!(records.len(), rows.len());

    let expected: HashMap<&str, &InventoryRow> =
        rows.iter().map(|r| (r.name.as_str(), r)).collect();
    // expected -> got -> count, and the mismatches.
    let mut confusion: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut mismatches = Vec::new();
    let mut jea = 0;
    for record in &records {
        let row = expected[record.host.as_str()];
        let got = record.bucket.map_or("Succeeded", Bucket::name).to_owned();
        // A JEA endpoint runs in no-language mode and refuses a script (ScriptsNotAllowed),
        // as Windows does; the inventory expects ScriptFailed for it.
        if row.group == "jea" {
            assert_eq!(
                record.error_id.as_deref(),
                Some("ScriptsNotAllowed"),
                "{record:?}"
            );
            jea += 1;
        }
        *confusion
            .entry(row.expected.clone())
            .or_default()
            .entry(got.clone())
            .or_default() += 1;
        if got != row.expected {
            mismatches.push(format!(
                "{} ({}): expected {}, got {got}: {}",
                record.host, row.group, row.expected, record.message
            ));
        }
    }
    println!("mixed fleet, {} hosts: expected -> got", records.len());
    for (want, got) in &confusion {
        println!("  {want:<30} {got:?}");
    }
    println!("  (jea: {jea} hosts refused the script with ScriptsNotAllowed)");
    assert!(
        mismatches.is_empty(),
        "mismatches:\n{}",
        mismatches.join("\n")
    );
    // Every bucket but Interrupted (and ScriptFailed's twin) appears.
    let seen: Vec<&String> = confusion.keys().collect();
    assert!(seen.len() >= 19, "{seen:?}");

    // Spot checks of the documented messages.
    let by_group = |group: &str| {
        let row = rows.iter().find(|r| r.group == group).unwrap();
        records.iter().find(|r| r.host == row.name).unwrap()
    };
    let basic_disabled = by_group("basic_disabled");
    assert_eq!(
        basic_disabled.message,
        Bucket::AccessDenied.message(&basic_disabled.host, "Basic")
    );
    let closed = by_group("closed_port");
    assert!(closed.message.contains("'Port' 5985"), "{}", closed.message);
    let config = by_group("unknown_configuration");
    assert!(
        config
            .message
            .contains("'PSConfiguration' (\"JEA.Maintenance\")"),
        "{}",
        config.message
    );
    assert_eq!(config.error_id.as_deref(), Some("2150858811"));
    let fails = by_group("script_fails");
    assert_eq!(fails.pipeline_state.as_deref(), Some("Failed"));
    assert!(!fails.errors.is_empty());
    // No shell left open on any host. (A flaky host may cut off a Create response: the
    // client never learns that shell's id, and the host's IdleTimeout reaps it.)
    let open: u64 = fleet
        .hosts()
        .iter()
        .filter(|h| h.spec.class != "flaky")
        .map(|h| h.service().counters().totals.shells_open)
        .sum();
    assert_eq!(open, 0);
    println!(
        "mixed: {:?}, retries {}",
        summary.by_bucket, summary.scheduler.progress.retried
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_jobs_on_a_host_with_two_shells_all_succeed_within_the_quota() {
    let fleet = start_profile(QUOTA_PROFILE, 3, 21).await;
    let state = temp_dir("fleet-quota");
    let store = Store::open(&state).unwrap();
    // Eight inventory entries per host, all naming the same machine: one shell budget.
    let rows = aliases(fleet.inventory(), 8);
    let spec = ScriptSpec::new("Start-Sleep -Milliseconds 400\n'ok'");
    let mut plan = new_plan(&fleet, RunKind::Script(spec), &[]);
    plan.hosts = rows;
    plan.scheduler.retry.quota = Backoff {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(2),
    };
    let (summary, records) = run(plan, &store).await;
    assert_eq!(records.len(), 24);
    assert_eq!(summary.count(Status::Succeeded), 24, "{summary:?}");
    assert_eq!(summary.bucket(Bucket::QuotaExceeded), 0);
    assert!(records.iter().all(|r| r.output == [json!("ok")]));
    let mut faults = 0;
    for host in fleet.hosts() {
        let counters = host.service().counters();
        let admin = &counters.users["fleetadmin"];
        assert!(
            admin.max_concurrent_shells <= 2,
            "{}: {} shells at once",
            host.spec.name,
            admin.max_concurrent_shells
        );
        assert_eq!(counters.totals.script_executions, 8);
        assert_eq!(counters.totals.shells_open, 0);
        faults += counters.totals.quota_faults;
    }
    // The default budget (5) met the quota (2): the faults were requeued, not failures.
    assert!(faults > 0);
    assert_eq!(summary.scheduler.progress.retried, faults);
    // What the faults taught is kept for the next run.
    for host in fleet.hosts() {
        let facts = store.facts(&host.spec.name).unwrap().unwrap();
        assert_eq!(facts.max_shells_per_user, Some(2), "{}", host.spec.name);
    }
    println!("quota: 18 jobs on 3 hosts with MaxShellsPerUser 2: {faults} quota faults requeued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_host_times_out_and_its_shell_is_deleted() {
    let fleet = start_profile(SLOW_PROFILE, 2, 31).await;
    let state = temp_dir("fleet-timeout");
    let store = Store::open(&state).unwrap();
    let mut plan = new_plan(
        &fleet,
        RunKind::Script(ScriptSpec::new("'slow'")),
        fleet.inventory(),
    );
    plan.scheduler.timeout = Some(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let (summary, records) = run(plan, &store).await;
    let elapsed = started.elapsed();
    assert_eq!(summary.bucket(Bucket::Timeout), 1, "{summary:?}");
    assert_eq!(summary.count(Status::Succeeded), 1);
    let slow = records.iter().find(|r| r.status == Status::Failed).unwrap();
    assert_eq!(slow.bucket, Some(Bucket::Timeout));
    assert_eq!(
        slow.message,
        Bucket::Timeout.message(&slow.host, "the per-host timeout of 2 s passed")
    );
    let host = fleet.host_of_class("slow").unwrap();
    let totals = host.service().counters().totals;
    assert_eq!(totals.shells_created, 1);
    assert_eq!(totals.shells_deleted, 1);
    assert_eq!(totals.shells_open, 0);
    assert!(store.open_shells().unwrap().is_empty());
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_resumes_without_running_a_done_host_again() {
    let fleet = start("healthy", 40, 41).await;
    let state = temp_dir("fleet-stop");
    let store = Store::open(&state).unwrap();
    let spec = ScriptSpec::new("Start-Sleep -Milliseconds 600\n'done'");
    let mut plan = new_plan(&fleet, RunKind::Script(spec.clone()), fleet.inventory());
    plan.scheduler.forks = 4;
    let handle = plan.handle();
    let (tx, mut rx) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut records = Vec::new();
        while let Some(event) = rx.recv().await {
            if let RunEvent::HostDone(record) = event {
                records.push(*record);
                if records.len() == 10 {
                    assert_eq!(
                        handle.stop(),
                        psfleet_engine::scheduler::StopLevel::Stopping
                    );
                }
            }
        }
        records
    });
    let first = execute(plan, &store, tx).await.unwrap();
    let records = collector.await.unwrap();
    assert_eq!(first.end, EndReason::Interrupted);
    assert_eq!(records.len(), 40, "every host has a record");
    let status = |s: Status| records.iter().filter(|r| r.status == s).count();
    let interrupted = records
        .iter()
        .filter(|r| r.bucket == Some(Bucket::Interrupted))
        .count();
    let skipped = status(Status::Skipped);
    // Hosts in flight at the stop (at most `forks`) were stopped or finished; the rest
    // never started.
    assert!(status(Status::Succeeded) >= 10);
    assert!(interrupted <= 4, "{interrupted}");
    assert_eq!(status(Status::Succeeded) + interrupted + skipped, 40);
    assert!(skipped >= 40 - 10 - 4 - 4, "{skipped}");
    for record in records.iter().filter(|r| r.status == Status::Skipped) {
        assert_eq!(record.attempts, 0);
        assert!(
            record.message.starts_with("not started"),
            "{}",
            record.message
        );
    }
    let executions_after_stop = executions(&fleet);
    assert_eq!(open_shells(&fleet), 0, "stopped hosts' shells are deleted");

    // A resume as another kind of job is refused before the run is touched; so is a plan
    // that names a host twice.
    let mut wrong = new_plan(&fleet, RunKind::Sweep, fleet.inventory());
    wrong.resume = Some(first.run_id.clone());
    let (tx, _rx) = mpsc::channel(8);
    let error = execute(wrong, &store, tx).await.unwrap_err();
    assert!(
        matches!(
            error,
            FleetError::ResumeKindMismatch {
                found: JobKind::Script,
                wanted: JobKind::Sweep,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(store.load_run(&first.run_id).unwrap().resumes, 0);
    let mut twice = new_plan(&fleet, RunKind::Sweep, &fleet.inventory()[..1]);
    twice.hosts.push(twice.hosts[0].clone());
    let (tx, _rx) = mpsc::channel(8);
    let error = execute(twice, &store, tx).await.unwrap_err();
    assert!(matches!(error, FleetError::DuplicateHost(_)), "{error}");

    // Resume: done hosts are not run again, skipped ones run, interrupted ones are reported
    // and left alone.
    let mut again = new_plan(&fleet, RunKind::Script(spec), fleet.inventory());
    again.resume = Some(first.run_id.clone());
    let (second, resumed_records) = run(again, &store).await;
    assert!(second.resumed);
    assert_eq!(second.end, EndReason::Completed);
    assert_eq!(second.already_done, status(Status::Succeeded) as u64);
    assert_eq!(second.interrupted_not_rerun, interrupted as u64);
    assert_eq!(second.count(Status::Succeeded), skipped as u64);
    assert_eq!(resumed_records.len(), skipped);
    let executions_after_resume = executions(&fleet);
    for record in &records {
        let before = executions_after_stop[&record.host];
        let after = executions_after_resume[&record.host];
        match record.status {
            Status::Skipped => assert_eq!((before, after), (0, 1), "{}", record.host),
            _ => assert_eq!(after, before, "{} ran again", record.host),
        }
    }
    // The journal's final word: every host done once (interrupted hosts stay so).
    let final_records = store.load_run(&first.run_id).unwrap().records();
    assert_eq!(final_records.len(), 40);
    let succeeded = final_records
        .iter()
        .filter(|r| r.status == Status::Succeeded)
        .count();
    assert_eq!(succeeded, 40 - interrupted);
    assert_eq!(second.run.succeeded, succeeded as u64);
    assert_eq!(open_shells(&fleet), 0);
    println!(
        "stop after 10 records: {} succeeded, {interrupted} interrupted, {skipped} skipped; \
         resume ran {skipped}",
        status(Status::Succeeded)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_run_leaks_shells_that_the_resume_reaps() {
    let fleet = start("healthy", 12, 43).await;
    let state = temp_dir("fleet-abort");
    let store = Store::open(&state).unwrap();
    let spec = ScriptSpec::new("Start-Sleep -Seconds 20\n'late'");
    let mut plan = new_plan(&fleet, RunKind::Script(spec), fleet.inventory());
    plan.scheduler.forks = 4;
    let handle = plan.handle();
    let (tx, mut rx) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut started = 0;
        let mut records = 0;
        while let Some(event) = rx.recv().await {
            match event {
                RunEvent::Started { .. } => started += 1,
                RunEvent::HostDone(_) => records += 1,
                _ => {}
            }
        }
        (started, records)
    });
    // Abort (a second Ctrl-C) once four hosts run their 20 s script: they are dropped in
    // flight, with their shells open, as a killed process would leave them.
    let watcher = {
        let fleet_shells = shells_open_counter(&fleet);
        let handle = handle.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                if fleet_shells() >= 4 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Time for the journal to record the shells (a kill between a Create's response
            // and its journal line leaves a shell only enumeration finds: `cleanup`).
            tokio::time::sleep(Duration::from_millis(500)).await;
            handle.stop();
            handle.stop();
        })
    };
    let first = execute(plan, &store, tx).await.unwrap();
    watcher.await.unwrap();
    let (started, _) = collector.await.unwrap();
    assert!(first.scheduler.aborted);
    assert_eq!(first.end, EndReason::Interrupted);
    assert_eq!(started, 4);
    assert_eq!(
        open_shells(&fleet),
        4,
        "the aborted attempts left their shells"
    );
    assert_eq!(
        store.open_shells().unwrap().len(),
        4,
        "and the journal knows them"
    );
    let in_flight = store.load_run(&first.run_id).unwrap().in_flight.len();
    assert_eq!(in_flight, 4);

    // Resume with --rerun-interrupted and a quick script: the leaks are reaped before each
    // host is touched, and every host ends done.
    let mut again = new_plan(
        &fleet,
        RunKind::Script(ScriptSpec::new("'quick'")),
        fleet.inventory(),
    );
    again.resume = Some(first.run_id.clone());
    again.rerun_interrupted = true;
    let (second, records) = run(again, &store).await;
    assert_eq!(second.count(Status::Succeeded), 12, "{second:?}");
    assert_eq!(records.len(), 12);
    assert_eq!(open_shells(&fleet), 0, "leaked shells reaped");
    assert!(store.open_shells().unwrap().is_empty());
    let deleted: u64 = fleet
        .hosts()
        .iter()
        .map(|h| h.service().counters().totals.shells_deleted)
        .sum();
    assert_eq!(deleted, 16, "4 reaped + 12 deleted after their run");
    let final_records = store.load_run(&first.run_id).unwrap().records();
    assert!(final_records.iter().all(|r| r.status == Status::Succeeded));
    assert_eq!(final_records.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_records_facts_that_the_next_run_budgets_by() {
    let fleet = start("mixed", 60, 51).await;
    let state = temp_dir("fleet-sweep");
    let store = Store::open(&state).unwrap();
    let rows: Vec<InventoryRow> = fleet
        .inventory()
        .iter()
        .filter(|r| r.authentication != "kerberos")
        .cloned()
        .collect();
    let mut plan = new_plan(&fleet, RunKind::Sweep, &rows);
    plan.scheduler.forks = 32;
    plan.scheduler.timeout = Some(Duration::from_secs(10));
    let (summary, records) = run(plan, &store).await;
    assert_eq!(records.len(), rows.len());
    assert!(records.iter().all(|r| r.job == JobKind::Sweep));
    // No shell is ever created by a sweep.
    let created: u64 = fleet
        .hosts()
        .iter()
        .map(|h| h.service().counters().totals.shells_created)
        .sum();
    assert_eq!(created, 0);

    let quota_hosts: Vec<&InventoryRow> =
        rows.iter().filter(|r| r.group == "quota_limited").collect();
    assert!(!quota_hosts.is_empty());
    for row in &quota_hosts {
        let facts = store.facts(&row.name).unwrap().unwrap();
        assert_eq!(facts.max_shells_per_user, Some(2), "{}", row.name);
        assert_eq!(facts.quotas["MaxConcurrentOperationsPerUser"], 15);
        let service = facts.service.unwrap();
        assert_eq!(service.allow_unencrypted, Some(false));
        assert_eq!(service.listeners, ["HTTP:5985"]);
        assert_eq!(facts.auth_schemes, ["Negotiate"]);
        assert!(facts.os.unwrap().starts_with("OS: "));
    }
    let legacy = rows.iter().find(|r| r.group == "legacy").unwrap();
    let facts = store.facts(&legacy.name).unwrap().unwrap();
    assert_eq!(facts.service.unwrap().max_envelope_size_kb, Some(150));
    // A non-administrator authenticates but may not read the configuration.
    let non_admin = rows.iter().find(|r| r.group == "non_admin").unwrap();
    let record = records.iter().find(|r| r.host == non_admin.name).unwrap();
    assert_eq!(record.status, Status::Succeeded, "{record:?}");
    assert!(
        record.message.contains("not readable"),
        "{}",
        record.message
    );
    // Unreachable hosts still fail with their bucket.
    for (group, bucket) in [
        ("closed_port", Bucket::InvalidPort),
        ("unresolvable", Bucket::InvalidDns),
        ("rotated_password", Bucket::InvalidCredentials),
        ("cert_expired", Bucket::InvalidCertificate),
    ] {
        let row = rows.iter().find(|r| r.group == group).unwrap();
        let record = records.iter().find(|r| r.host == row.name).unwrap();
        assert_eq!(record.bucket, Some(bucket), "{group}: {}", record.message);
    }

    // The next run budgets the quota-limited hosts at 2 shells from the start: six jobs
    // each, and not one quota fault.
    let faults_before: u64 = quota_faults(&fleet);
    let mut next = new_plan(
        &fleet,
        RunKind::Script(ScriptSpec::new("Start-Sleep -Milliseconds 300\n'ok'")),
        &[],
    );
    let quota_rows: Vec<InventoryRow> = quota_hosts.iter().map(|r| (*r).clone()).collect();
    next.hosts = aliases(&quota_rows, 6);
    let (second, _) = run(next, &store).await;
    assert_eq!(second.count(Status::Succeeded), 6 * quota_rows.len() as u64);
    assert_eq!(quota_faults(&fleet), faults_before, "no quota fault");
    assert_eq!(second.scheduler.progress.retried, 0);
    for row in &quota_rows {
        let host = fleet
            .hosts()
            .iter()
            .find(|h| h.spec.name == row.name)
            .unwrap();
        assert!(host.service().counters().users["fleetadmin"].max_concurrent_shells <= 2);
    }
    println!(
        "sweep of {} mixed hosts: {:?}; next run on {} quota-limited hosts: no quota fault",
        rows.len(),
        summary.by_bucket,
        quota_rows.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_deletes_recorded_and_enumerated_leaks() {
    let fleet = start("healthy", 2, 61).await;
    let state = temp_dir("fleet-cleanup");
    let store = Store::open(&state).unwrap();
    let rows = fleet.inventory().to_vec();

    // Two leaked shells on each host; the store knows one of each pair.
    let mut leaks = Vec::new();
    for row in &rows {
        for _ in 0..2 {
            leaks.push((row.name.clone(), leak_shell(&fleet, row).await));
        }
    }
    assert_eq!(open_shells(&fleet), 4);
    let writer = store
        .begin_run(RunMeta::new(
            RunId("20260101T000000Z-0001".into()),
            JobKind::Script,
            2,
        ))
        .unwrap();
    for (host, shell) in leaks.iter().step_by(2) {
        writer.shell_opened(host, shell).await.unwrap();
    }
    writer.finish(EndReason::Interrupted).await.unwrap();
    assert_eq!(store.open_shells().unwrap().len(), 2);

    // Recorded leaks only: the unknown ones stay.
    let plan1 = new_plan(
        &fleet,
        RunKind::Cleanup {
            reap_unknown: false,
        },
        &rows,
    );
    let (summary, records) = run(plan1, &store).await;
    assert_eq!(summary.count(Status::Succeeded), 2, "{records:?}");
    assert_eq!(open_shells(&fleet), 2);
    assert!(store.open_shells().unwrap().is_empty());
    for record in &records {
        assert_eq!(record.job, JobKind::Cleanup);
        assert_eq!(record.output.len(), 1, "{record:?}");
    }

    // Every leak of the user: enumeration finds the rest.
    let plan2 = new_plan(&fleet, RunKind::Cleanup { reap_unknown: true }, &rows);
    let (summary, records) = run(plan2, &store).await;
    assert_eq!(summary.count(Status::Succeeded), 2);
    assert_eq!(open_shells(&fleet), 0);
    let deleted: Vec<String> = records
        .iter()
        .flat_map(|r| r.output.iter().map(|v| v.as_str().unwrap().to_owned()))
        .collect();
    for (_, shell) in leaks.iter().skip(1).step_by(2) {
        assert!(deleted.contains(shell), "{shell} deleted");
    }
    assert!(records[0].message.starts_with("1 leaked shell(s) deleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_beyond_the_caps_is_counted_not_kept() {
    let fleet = start("healthy", 1, 71).await;
    let state = temp_dir("fleet-caps");
    let store = Store::open(&state).unwrap();
    let script: String = (0..30).map(|i| format!("'line {i:02}'\n")).collect();

    // The record keeps 10 objects; ops keeps up to 100 records per stream.
    let mut plan = new_plan(
        &fleet,
        RunKind::Script(ScriptSpec::new(&script)),
        fleet.inventory(),
    );
    plan.caps.objects = 10;
    plan.caps.excerpt_bytes = 32;
    let (_, records) = run(plan, &store).await;
    let record = &records[0];
    assert_eq!(record.output.len(), 10);
    assert_eq!(record.output[9], json!("line 09"));
    assert_eq!(record.output_truncated, 20);
    assert_eq!(record.output_excerpt, "line 00\nline 01\nline 02\nline 03");
    assert_eq!(record.message, "Completed: 30 output object(s)");

    // Objects and messages both 5: ops itself drops what is past 5, and counts it.
    let mut plan = new_plan(
        &fleet,
        RunKind::Script(ScriptSpec::new(&script)),
        fleet.inventory(),
    );
    plan.caps.objects = 5;
    plan.caps.messages = 5;
    let (_, records) = run(plan, &store).await;
    assert_eq!(records[0].output.len(), 5);
    assert_eq!(records[0].output_truncated, 25);

    // A byte cap: 3 objects of 9 JSON bytes fit in 30.
    let mut plan = new_plan(
        &fleet,
        RunKind::Script(ScriptSpec::new(&script)),
        fleet.inventory(),
    );
    plan.caps.bytes = 30;
    let (_, records) = run(plan, &store).await;
    assert_eq!(records[0].output.len(), 3);
    assert_eq!(records[0].output_truncated, 27);

    // cmd: stdout lines; the rest counted in bytes.
    let kind = RunKind::Cmd {
        command: "echo".into(),
        arguments: vec!["hello".into()],
    };
    let mut plan = new_plan(&fleet, kind, fleet.inventory());
    plan.caps.bytes = 3;
    let (summary, records) = run(plan, &store).await;
    assert_eq!(summary.count(Status::Succeeded), 1);
    assert_eq!(records[0].job, JobKind::Cmd);
    assert_eq!(records[0].exit_code, Some(0));
    // "hello\r\n": ops kept the first 3 bytes and counted the other 4.
    assert_eq!(records[0].output, [json!("hel")]);
    assert_eq!(records[0].output_truncated, 4);
    assert_eq!(records[0].output_excerpt, "hel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_a_create_is_in_flight_still_deletes_the_shell() {
    // Every response takes 600 ms: the stop lands while the Create is on the wire. Windows
    // makes the shell as soon as it reads the request, so dropping the request would leak
    // it; psfleet waits for the ShellId and deletes the shell. (The simulator handles a
    // request after its latency, so without the wait it would make no shell at all: 0/0/0.)
    let fleet = start_profile(LAGGY_PROFILE, 1, 81).await;
    let row = fleet.inventory()[0].clone();
    let tls = fleet_tls(&fleet);
    let endpoint = Endpoint::new(&row.name, Scheme::Http).unwrap();
    let mut client = HostClient::new(endpoint, Arc::new(options(&fleet, "negotiate", None, &tls)))
        .unwrap()
        .with_address(IpAddr::V4(row.address.unwrap()));
    client.connect().await.unwrap();
    let control = RunControl::none().with_cancel(tokio::time::sleep(Duration::from_millis(200)));
    let error = client
        .run_script(ScriptSpec::new("'never'"), control)
        .await
        .unwrap_err();
    assert!(
        matches!(error.error, psfleet_engine::error::ClientError::Cancelled),
        "{error:?}"
    );
    assert_eq!(error.leaked_shell, None);
    let totals = fleet.hosts()[0].service().counters().totals;
    assert_eq!(
        (
            totals.shells_created,
            totals.shells_deleted,
            totals.shells_open
        ),
        (1, 1, 0)
    );
}

// ---------------------------------------------------------------------------------------

/// MaxShellsPerUser 2, scripts take 300 ms more.
const QUOTA_PROFILE: &str = r#"
[[class]]
name = "quota2"
count = 3
quotas = { max_shells_per_user = 2 }
"#;

/// Every response 600 ms late.
const LAGGY_PROFILE: &str = r#"
[[class]]
name = "laggy"
count = 1
latency_ms = 600
"#;

/// One healthy host, one whose scripts take 30 s more.
const SLOW_PROFILE: &str = r#"
[[class]]
name = "healthy"
count = 1

[[class]]
name = "slow"
count = 1
script_extra_ms = 30000
"#;

async fn start(profile: &str, hosts: usize, seed: u64) -> FleetHandle {
    let profile = Profile::load(profile).unwrap();
    psfleet_tests::fleet::start(FleetOptions::new(profile, hosts, seed)).await
}

async fn start_profile(text: &str, hosts: usize, seed: u64) -> FleetHandle {
    let profile = Profile::parse("fleet-run", "<test>", text).unwrap();
    psfleet_tests::fleet::start(FleetOptions::new(profile, hosts, seed)).await
}

/// A plan over `rows` with short timeouts and each row's client settings.
fn new_plan(fleet: &FleetHandle, kind: RunKind, rows: &[InventoryRow]) -> RunPlan {
    let tls = fleet_tls(fleet);
    let base = Arc::new(options(fleet, "negotiate", None, &tls));
    let hosts = rows.iter().map(|row| target(fleet, row, &tls)).collect();
    let mut plan = RunPlan::new(kind, hosts, base);
    plan.scheduler.seed = Some(7);
    plan.scheduler.retry.transient = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
    };
    plan
}

/// TLS trusting the fleet's CA.
fn fleet_tls(fleet: &FleetHandle) -> TlsClient {
    TlsClient::new(&TlsOptions {
        system_roots: false,
        ca_pem: Some(fleet.ca_pem().to_owned()),
        ..TlsOptions::default()
    })
    .unwrap()
}

/// The row's target: its name, address, port, scheme, configuration and client settings.
fn target(fleet: &FleetHandle, row: &InventoryRow, tls: &TlsClient) -> Target {
    let mut target = Target::new(&row.name);
    target.address = row.address.map(IpAddr::V4);
    target.scheme = if row.scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    target.port = Some(row.port);
    target.group = Some(row.group.clone());
    target.configuration_name = Some(row.configuration_name.clone());
    if row.authentication != "negotiate" || row.user.is_some() {
        target.options = Some(Arc::new(options(
            fleet,
            &row.authentication,
            row.user.as_deref(),
            tls,
        )));
    }
    target
}

/// Client options for an inventory row's authentication and user; Basic rows are a
/// deliberate choice of plaintext over HTTP (AllowUnencrypted on this client).
fn options(fleet: &FleetHandle, auth: &str, user: Option<&str>, tls: &TlsClient) -> ClientOptions {
    let admin = fleet.accounts().iter().find(|a| a.admin).unwrap();
    let user = user.unwrap_or(&admin.name);
    let password = fleet
        .accounts()
        .iter()
        .find(|a| a.name == user)
        .map_or(admin.password.clone(), |a| a.password.clone());
    let method = match auth {
        "basic" => AuthMethod::Basic,
        "ntlm" => AuthMethod::Sspi(Mechanism::Ntlm),
        "kerberos" => AuthMethod::Sspi(Mechanism::Kerberos),
        _ => AuthMethod::Sspi(Mechanism::Negotiate),
    };
    let mut options = ClientOptions::new(method, Credential::new(user, password).unwrap());
    options.tls = Some(tls.clone());
    options.policy.allow_unencrypted = auth == "basic";
    options.connect_timeout = Duration::from_secs(2);
    options.request_timeout = Duration::from_secs(5);
    options.cleanup_timeout = Duration::from_secs(3);
    // No krb5.conf: Kerberos rows meet "no realm" / "no KDC for the realm".
    options.kerberos = KerberosOptions {
        krb5_config: Some("/nonexistent/psfleet-test-krb5.conf".into()),
        ..KerberosOptions::default()
    };
    options
}

/// `copies` inventory entries per row (`<name>#<k>`), each naming the row's machine.
fn aliases(rows: &[InventoryRow], copies: usize) -> Vec<Target> {
    let mut out = Vec::new();
    for row in rows {
        for k in 0..copies {
            let mut target = Target::new(format!("{}#{k}", row.name));
            target.host = Some(row.name.clone());
            target.address = row.address.map(IpAddr::V4);
            target.port = Some(row.port);
            out.push(target);
        }
    }
    out
}

/// Runs a plan to its end, collecting the durable records.
async fn run(plan: RunPlan, store: &Store) -> (RunSummary, Vec<HostRecord>) {
    let (tx, mut rx) = mpsc::channel(256);
    let collector = tokio::spawn(async move {
        let mut records = Vec::new();
        while let Some(event) = rx.recv().await {
            if let RunEvent::HostDone(record) = event {
                records.push(*record);
            }
        }
        records
    });
    let summary = execute(plan, store, tx).await.unwrap();
    (summary, collector.await.unwrap())
}

/// Leaves a PowerShell shell open on the row's host: the run is cancelled with no time to
/// clean up. Returns its id.
async fn leak_shell(fleet: &FleetHandle, row: &InventoryRow) -> String {
    let tls = fleet_tls(fleet);
    let mut options = options(fleet, "negotiate", None, &tls);
    options.cleanup_timeout = Duration::ZERO;
    let endpoint = Endpoint::new(&row.name, Scheme::Http).unwrap();
    let mut client = HostClient::new(endpoint, Arc::new(options))
        .unwrap()
        .with_address(IpAddr::V4(row.address.unwrap()));
    let control = RunControl::none().with_cancel(tokio::time::sleep(Duration::from_millis(500)));
    let error = client
        .run_script(ScriptSpec::new("Start-Sleep 60"), control)
        .await
        .unwrap_err();
    error
        .leaked_shell
        .expect("a leaked shell")
        .hyphenated()
        .to_string()
}

fn journal_lines(state: &Path, run_id: &RunId) -> Vec<serde_json::Value> {
    let path = state.join(RUNS_DIR).join(&run_id.0).join(JOURNAL_FILE);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count_type(lines: &[serde_json::Value], kind: &str) -> usize {
    lines.iter().filter(|l| l["type"] == kind).count()
}

fn count_by_host(lines: &[serde_json::Value], kind: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in lines.iter().filter(|l| l["type"] == kind) {
        let host = line["host"]
            .as_str()
            .or_else(|| line["record"]["host"].as_str())
            .unwrap()
            .to_owned();
        *out.entry(host).or_default() += 1;
    }
    out
}

fn host_max_shells(fleet: &FleetHandle, name: &str) -> u32 {
    let host = fleet.hosts().iter().find(|h| h.spec.name == name).unwrap();
    host.spec
        .winrm
        .winrs
        .as_ref()
        .and_then(|w| w.max_shells_per_user)
        .unwrap_or(30)
}

fn executions(fleet: &FleetHandle) -> HashMap<String, u64> {
    fleet
        .hosts()
        .iter()
        .map(|h| {
            (
                h.spec.name.clone(),
                h.service().counters().totals.script_executions,
            )
        })
        .collect()
}

fn open_shells(fleet: &FleetHandle) -> u64 {
    fleet
        .hosts()
        .iter()
        .map(|h| h.service().counters().totals.shells_open)
        .sum()
}

fn quota_faults(fleet: &FleetHandle) -> u64 {
    fleet
        .hosts()
        .iter()
        .map(|h| h.service().counters().totals.quota_faults)
        .sum()
}

/// A closure reading the fleet's open shells (for a watcher task).
fn shells_open_counter(fleet: &FleetHandle) -> impl Fn() -> u64 + Send + 'static {
    let hosts = fleet.hosts().to_vec();
    move || {
        hosts
            .iter()
            .map(|h| h.service().counters().totals.shells_open)
            .sum()
    }
}
