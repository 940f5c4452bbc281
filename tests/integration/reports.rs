//! The reports of a real run (written through the store, read back from the journal) and the
//! HTML report in headless Chromium: 10,000 hosts render as 10,000 rows, the bucket counts
//! are shown, `#filter=bucket:...` shows exactly that bucket's hosts, markup in host output
//! stays text (an injected `<script>` does not run), and a screenshot is produced.
//!
//! Chromium is Debian's `chromium` package (installed by `scripts/test`); without it the
//! browser test skips with a printed line, except under `CI=true`, where it fails.

// Test support: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use psfleet_core::taxonomy::Bucket;
use psfleet_engine::cache::{HostFacts, ServiceConfig};
use psfleet_engine::journal::RunMeta;
use psfleet_engine::record::{HostRecord, JobKind, RunId, Status};
use psfleet_engine::store::Store;
use psfleet_reports::csv_report::{BUCKET_COLUMNS, HOST_COLUMNS};
use psfleet_reports::{Report, jsonl};

use crate::state::temp_dir;

/// Hosts in the browser test's report.
const HOSTS: usize = 10_000;

/// The payload planted in one host's output, message, errors and group: if any of it were
/// parsed as markup, the page's body would carry `data-pwned`.
const PAYLOAD: &str = "<script>document.body.setAttribute('data-pwned','script')</script>\
     <img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">\
     </script><b id=\"injected\">bold</b>";

#[test]
fn reports_of_a_stored_run_have_the_documented_columns_and_read_back() {
    let state_dir = temp_dir("reports-run");
    let run_id = RunId("20260101T000000Z-0e0e".into());
    let records = fleet(&run_id, 60);
    {
        let store = Store::open(&state_dir).unwrap();
        let writer = store
            .begin_run(RunMeta::new(run_id.clone(), JobKind::Script, 61).with_script("hostname"))
            .unwrap();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            for r in &records {
                writer.host_started(&r.host).await.unwrap();
                writer.host_done(r.clone()).await.unwrap();
            }
            // A sweep-like fact: one host's service configuration, with risky settings.
            writer
                .facts(&records[0].host, service_facts(true))
                .await
                .unwrap();
            writer
                .facts(&records[1].host, service_facts(false))
                .await
                .unwrap();
            // One host in flight when the run "dies": reported Interrupted.
            writer.host_started("zz-inflight").await.unwrap();
            drop(writer);
        });
    }
    let store = Store::open(&state_dir).unwrap();
    let state = store.load_run(&run_id).unwrap();
    let report = Report::from_state(&state);
    let out = state_dir.join("report");
    let files = report.write_files(&out).unwrap();

    // hosts.csv: header, one row per host, values from the records.
    let mut csv = csv::Reader::from_path(&files.hosts_csv).unwrap();
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, HOST_COLUMNS);
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 61);
    let col = |name: &str| HOST_COLUMNS.iter().position(|c| *c == name).unwrap();
    let by_host: BTreeMap<&str, &csv::StringRecord> =
        rows.iter().map(|r| (&r[col("host")], r)).collect();
    for r in &records {
        let row = by_host[r.host.as_str()];
        assert_eq!(&row[col("bucket")], r.bucket.map_or("", Bucket::name));
        assert_eq!(&row[col("status")], status(r.status));
        assert_eq!(&row[col("message")], r.message);
        assert_eq!(&row[col("duration_ms")], r.duration_ms.to_string());
        assert_eq!(&row[col("group")], r.group.as_deref().unwrap_or(""));
        assert_eq!(&row[col("run_id")], run_id.0);
    }
    let inflight = by_host["zz-inflight"];
    assert_eq!(&inflight[col("bucket")], "Interrupted");
    assert_eq!(&inflight[col("status")], "failed");

    // buckets.csv: one row per bucket, counts matching the records.
    let mut csv = csv::Reader::from_path(&files.buckets_csv).unwrap();
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, BUCKET_COLUMNS);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        if let Some(b) = r.bucket {
            *want.entry(b.name().to_owned()).or_default() += 1;
        }
    }
    *want.entry("Interrupted".into()).or_default() += 1;
    let got: BTreeMap<String, u64> = csv
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_owned(), r[1].parse().unwrap())
        })
        .collect();
    assert_eq!(got, want);

    // JSON lines parse back to exactly the journal's records.
    let back = jsonl::read(std::io::BufReader::new(
        fs::File::open(&files.jsonl).unwrap(),
    ))
    .unwrap();
    assert_eq!(back, state.records());

    // config.csv: the two hosts whose service configuration the run read.
    let config = fs::read_to_string(files.config_csv.as_ref().unwrap()).unwrap();
    let lines: Vec<&str> = config.lines().collect();
    assert_eq!(lines.len(), 3, "{config}");
    assert!(lines[1].starts_with(&format!(
        "{},Basic Negotiate,true,None,HTTP:5985,2,",
        records[0].host
    )));
    assert!(
        lines[1].ends_with("basic_enabled allow_unencrypted cbt_none http_only low_shell_quota")
    );
    assert!(lines[2].ends_with(",30,500,,"), "{}", lines[2]);

    let html = fs::read_to_string(&files.html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("data-risk=\"basic_enabled\">1</td>"));
    assert!(html.contains(&format!("psfleet run {}", run_id.0)));
    drop(store);
    fs::remove_dir_all(&state_dir).unwrap();
}

#[test]
fn the_html_report_renders_filters_and_stays_inert_in_chromium() {
    let Some(chromium) = chromium("the_html_report_renders_filters_and_stays_inert_in_chromium")
    else {
        return;
    };
    let dir = temp_dir("reports-html");
    let run_id = RunId("20260101T000000Z-0f0f".into());
    let mut records = fleet(&run_id, HOSTS);
    let evil = &mut records[0]; // also the AccessDenied example in the bucket table
    evil.output_excerpt = PAYLOAD.into();
    evil.message = PAYLOAD.into();
    evil.errors = vec![PAYLOAD.into()];
    let mut previous = fleet(&RunId("20251231T000000Z-0000".into()), HOSTS);
    previous[1].bucket = None;
    previous[1].status = Status::Succeeded;
    let mut report = Report::new(run_id, records.clone());
    report.job = Some(JobKind::Script);
    report.previous = Some(psfleet_reports::Previous {
        run_id: RunId("20251231T000000Z-0000".into()),
        records: previous,
    });
    report.facts = (0..300)
        .map(|i| (records[i].host.clone(), service_facts(i % 3 == 0)))
        .collect();
    let files = report.write_files(&dir).unwrap();
    let size = fs::metadata(&files.html).unwrap().len();

    let mut per_bucket: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        if let Some(b) = r.bucket {
            *per_bucket.entry(b.name()).or_default() += 1;
        }
    }

    // Unfiltered: every host is a row, all visible, the summary shows the bucket counts.
    let dom = dump_dom(&chromium, &dir, &files.html, "");
    assert!(
        dom.contains(&format!("data-ready=\"{HOSTS}\"")),
        "the table script did not finish"
    );
    let rows = rows(&dom);
    assert_eq!(rows.len(), HOSTS);
    assert_eq!(rows.iter().filter(|r| r.visible).count(), HOSTS);
    let render_ms = dom
        .split("data-render-ms=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("?")
        .to_owned();
    assert!(dom.contains(&format!("<span id=\"shown\">{HOSTS}</span>")));
    for (bucket, n) in &per_bucket {
        assert!(
            dom.contains(&format!(
                "<td class=\"num count\" data-bucket=\"{bucket}\">{n}</td>"
            )),
            "bucket {bucket} count {n} not shown"
        );
    }
    assert!(dom.contains("data-change=\"newly_failing\">1 newly failing"));
    // The fleet configuration summary counts the risky hosts.
    for risk in [
        "basic_enabled",
        "allow_unencrypted",
        "cbt_none",
        "http_only",
        "low_shell_quota",
    ] {
        assert!(
            dom.contains(&format!("data-risk=\"{risk}\">100</td>")),
            "risk {risk} not counted"
        );
    }
    // The payload stayed text: nothing ran, no element was created from it.
    let body = dom
        .split("<body")
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    assert!(
        !body.contains("data-pwned"),
        "injected markup executed: <body{body}>"
    );
    assert!(
        !dom.contains("<b id=\"injected\">"),
        "injected markup parsed"
    );
    assert!(!dom.contains("<img src=\"x\""), "injected markup parsed");
    assert!(dom.contains("&lt;script&gt;document.body.setAttribute"));

    // Filtered by the fragment: exactly that bucket's hosts are visible.
    for bucket in ["AccessDenied", "InvalidPSConfiguration"] {
        let dom = dump_dom(
            &chromium,
            &dir,
            &files.html,
            &format!("#filter=bucket:{bucket}"),
        );
        let rows = self::rows(&dom);
        assert_eq!(rows.len(), HOSTS);
        let visible: Vec<&Row> = rows.iter().filter(|r| r.visible).collect();
        assert_eq!(visible.len(), per_bucket[bucket], "{bucket}");
        assert!(visible.iter().all(|r| r.bucket == bucket), "{bucket}");
        assert!(dom.contains(&format!("<span id=\"shown\">{}</span>", per_bucket[bucket])));
    }
    // Two criteria at once.
    let dom = dump_dom(
        &chromium,
        &dir,
        &files.html,
        "#filter=status:succeeded,group:g1",
    );
    let want = records
        .iter()
        .filter(|r| r.status == Status::Succeeded && r.group.as_deref() == Some("g1"))
        .count();
    assert_eq!(rows_visible(&dom), want);

    // A screenshot of the page (summary, chart, table) for people to look at.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = fs::remove_file(&shot);
    let status = Command::new("timeout")
        .arg("180")
        .arg(&chromium)
        .args(chromium_flags(&dir))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,2600")
        .arg(format!("file://{}", files.html.display()))
        .status()
        .unwrap();
    assert!(status.success(), "chromium --screenshot: {status:?}");
    let png = fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    println!(
        "reports html: {HOSTS} hosts, {} KiB, table script ran in {render_ms} ms in headless \
         Chromium; rows and filters checked; screenshot {} ({} KiB)",
        size / 1024,
        shot.display(),
        png.len() / 1024
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// A service configuration as a sweep records it: risky (Basic, AllowUnencrypted, no CBT,
/// HTTP only, 2 shells) or hardened.
fn service_facts(risky: bool) -> HostFacts {
    HostFacts {
        max_shells_per_user: Some(if risky { 2 } else { 30 }),
        service: Some(ServiceConfig {
            auth: BTreeMap::from([("Basic".into(), risky), ("Negotiate".into(), true)]),
            allow_unencrypted: Some(risky),
            cbt_hardening_level: Some(if risky { "None" } else { "Strict" }.into()),
            listeners: if risky {
                vec!["HTTP:5985".into()]
            } else {
                vec!["HTTP:5985".into(), "HTTPS:5986".into()]
            },
            max_envelope_size_kb: Some(500),
        }),
        ..HostFacts::default()
    }
}

/// A deterministic fleet: most hosts succeed; the rest spread over several buckets.
fn fleet(run_id: &RunId, n: usize) -> Vec<HostRecord> {
    (0..n)
        .map(|i| {
            let host = format!("srv{i:05}.fleet.test");
            let bucket = match i % 10 {
                0 | 1 => Some(Bucket::AccessDenied),
                2 => Some(Bucket::Timeout),
                3 if i % 20 == 3 => Some(Bucket::InvalidPsConfiguration),
                4 if i % 40 == 4 => Some(Bucket::InvalidDns),
                _ => None,
            };
            HostRecord {
                run_id: run_id.clone(),
                host: host.clone(),
                address: Some(format!("127.30.{}.{}", i / 250, i % 250 + 1)),
                group: Some(format!("g{}", i % 4)),
                job: JobKind::Script,
                status: if bucket.is_some() {
                    Status::Failed
                } else {
                    Status::Succeeded
                },
                bucket,
                message: bucket.map_or_else(
                    || "completed".to_owned(),
                    |b| b.message(&host, "Microsoft.PowerShell"),
                ),
                attempts: 1 + (i % 3) as u32,
                started: "2026-01-01T00:00:00.000Z".into(),
                finished: format!("2026-01-01T00:00:{:02}.{:03}Z", i % 60, i % 1000),
                duration_ms: (i as u64 * 37) % 60_000,
                exit_code: bucket.is_none().then_some(0),
                pipeline_state: Some(
                    if bucket.is_some() {
                        "Failed"
                    } else {
                        "Completed"
                    }
                    .into(),
                ),
                error_id: bucket.map(|_| "2150858770".into()),
                output_excerpt: format!("Name: {host}\nUptime: {i}"),
                output: vec![serde_json::json!({ "Name": host })],
                output_truncated: 0,
                errors: vec![],
                warnings: vec![],
            }
        })
        .collect()
}

fn status(s: Status) -> &'static str {
    match s {
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
    }
}

/// Chromium's path, or `None` (after printing why) when the test should skip.
fn chromium(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PSFLEET_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .find_map(|name| {
                    std::env::var_os("PATH").and_then(|paths| {
                        std::env::split_paths(&paths)
                            .map(|p| p.join(name))
                            .find(|p| p.is_file())
                    })
                })
        });
    if found.is_some() {
        return found;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "{test}: chromium is not installed (apt-get install chromium; scripts/test does it); under CI=true this fails the run"
    );
    println!("{test}: skipped, chromium is not installed (apt-get install chromium)");
    None
}

fn chromium_flags(profile_parent: &Path) -> Vec<String> {
    let profile = profile_parent.join("chromium-profile");
    vec![
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        format!("--user-data-dir={}", profile.display()),
    ]
}

/// The DOM after the page's scripts ran, as Chromium serialises it.
fn dump_dom(chromium: &Path, dir: &Path, html: &Path, fragment: &str) -> String {
    let out = Command::new("timeout")
        .arg("180")
        .arg(chromium)
        .args(chromium_flags(dir))
        .arg("--virtual-time-budget=20000")
        .arg("--dump-dom")
        .arg(format!("file://{}{fragment}", html.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One host row of the dumped table.
struct Row {
    bucket: String,
    visible: bool,
}

/// The host rows (`<tr data-i=...>`) of a dumped DOM, read from their start tags (quoted
/// attribute values may hold `>`; the scan honours the quotes).
fn rows(dom: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find("<tr data-i=") {
        let tag_start = &rest[at..];
        let mut in_quote = false;
        let mut end = tag_start.len();
        for (i, c) in tag_start.char_indices() {
            match c {
                '"' => in_quote = !in_quote,
                '>' if !in_quote => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let tag = &tag_start[..end];
        let bucket = tag
            .split("data-bucket=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_owned();
        // Outside quoted values, a `hidden` attribute marks a filtered-out row.
        let mut unquoted = String::new();
        let mut q = false;
        for c in tag.chars() {
            if c == '"' {
                q = !q;
            } else if !q {
                unquoted.push(c);
            }
        }
        let visible = !unquoted.split_whitespace().any(|a| a.starts_with("hidden"));
        out.push(Row { bucket, visible });
        rest = &tag_start[end..];
    }
    out
}

fn rows_visible(dom: &str) -> usize {
    rows(dom).iter().filter(|r| r.visible).count()
}
