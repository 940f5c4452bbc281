//! The HTML report: ONE self-contained file (inline CSS, JS and SVG; no network access) that
//! reads offline and stays quick with 10,000 hosts.
//!
//! The summary, bucket chart, bucket reference, duration histogram and run-to-run changes are
//! rendered here as escaped HTML. The host table is built in the browser from the records
//! embedded as JSON in a `<script type="application/json">` block, with `textContent` only,
//! so no host-supplied text is ever parsed as markup. Two more layers stand behind that: the
//! embedded JSON escapes `<`, `>` and `&` (so `</script>` in host output cannot close the data
//! block), and a Content-Security-Policy allows no network access and only the one inline
//! script whose SHA-256 it names.
//!
//! Filtering is driven by the URL fragment, so a link can open the report filtered:
//! `report.html#filter=bucket:AccessDenied,status:failed,group:web,q:text`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use psfleet_core::taxonomy::Bucket;
use psfleet_engine::cache::HostFacts;
use psfleet_engine::record::{HostRecord, Status};
use serde_json::{Value, json};

use crate::csv_report::{bucket_rows, job_name, status_name};
use crate::diff::{Change, diff};
use crate::fleet::{Risk, risks};
use crate::{Report, ReportError, excerpt};

/// The longest output excerpt embedded per host (bytes).
pub const OUTPUT_BYTES: usize = 4096;
/// At most this many error and warning lines are embedded per host, each cut to 1 KiB.
pub const MAX_ERROR_LINES: usize = 10;
/// At most this many changed hosts are listed in the "changes since" section (all are counted).
pub const MAX_CHANGE_ROWS: usize = 500;

/// The columns of each embedded row, in order (the table script reads them by name).
const DATA_COLUMNS: [&str; 16] = [
    "host",
    "address",
    "group",
    "status",
    "bucket",
    "message",
    "attempts",
    "started",
    "finished",
    "duration_ms",
    "exit_code",
    "pipeline_state",
    "error_id",
    "output_excerpt",
    "errors",
    "warnings",
];

/// Writes the report as one HTML document.
pub fn write<W: Write>(out: &mut W, report: &Report) -> Result<(), ReportError> {
    let page = render(report);
    out.write_all(page.as_bytes())
        .map_err(|source| ReportError::Io {
            what: "HTML report".into(),
            source,
        })
}

/// Renders the report as one HTML document.
pub fn render(report: &Report) -> String {
    let script_hash = BASE64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        SCRIPT.as_bytes(),
    ));
    let records = &report.records;
    let title = format!("psfleet run {}", report.run_id);
    let mut h = String::with_capacity(64 * 1024 + records.len() * 512);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; img-src data:; \
         base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    let _ = write!(h, "<header><h1>{}</h1>", esc(&title));
    let mut facts = Vec::new();
    if let Some(job) = report.job {
        facts.push(format!("job: {}", job_name(job)));
    }
    if let Some(started) = &report.started {
        facts.push(format!("started: {started}"));
    }
    if !report.command_line.is_empty() {
        facts.push(format!("command: {}", report.command_line.join(" ")));
    }
    if !facts.is_empty() {
        let _ = write!(h, "<p class=\"meta\">{}</p>", esc(&facts.join(" · ")));
    }
    h.push_str("</header>\n<main>\n");
    summary_cards(&mut h, records);
    buckets_section(&mut h, records);
    histogram_section(&mut h, records);
    fleet_section(&mut h, &report.facts);
    if let Some(previous) = &report.previous {
        changes_section(
            &mut h,
            &previous.run_id.0,
            &diff(&previous.records, records),
        );
    }
    host_table(&mut h, records);
    h.push_str("</main>\n");
    let _ = writeln!(
        h,
        "<script type=\"application/json\" id=\"psfleet-data\">{}</script>",
        data_json(records)
    );
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    h
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The records as the JSON the table script reads, safe to place inside a `<script>` block:
/// `<`, `>` and `&` are written as `\u003c`, `\u003e`, `\u0026` (they can only occur inside
/// JSON strings, where the escapes mean the same), and U+2028/U+2029 likewise.
fn data_json(records: &[HostRecord]) -> String {
    let rows: Vec<Value> = records.iter().map(data_row).collect();
    let doc = json!({ "columns": DATA_COLUMNS, "rows": rows });
    let text = doc.to_string();
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn data_row(r: &HostRecord) -> Value {
    let lines = |v: &[String]| -> Vec<String> {
        v.iter()
            .take(MAX_ERROR_LINES)
            .map(|l| excerpt(l, 1024))
            .collect()
    };
    let mut output = excerpt(&r.output_excerpt, OUTPUT_BYTES);
    if r.output_truncated > 0 {
        let _ = write!(
            output,
            "\n[{} more bytes or objects not kept]",
            r.output_truncated
        );
    }
    json!([
        r.host,
        r.address,
        r.group,
        status_name(r.status),
        r.bucket.map(Bucket::name),
        r.message,
        r.attempts,
        r.started,
        r.finished,
        r.duration_ms,
        r.exit_code,
        r.pipeline_state,
        r.error_id,
        output,
        lines(&r.errors),
        lines(&r.warnings),
    ])
}

fn summary_cards(h: &mut String, records: &[HostRecord]) {
    let count = |s: Status| records.iter().filter(|r| r.status == s).count();
    let interrupted = records
        .iter()
        .filter(|r| r.bucket == Some(Bucket::Interrupted))
        .count();
    let wall = wall_time_ms(records);
    h.push_str("<section id=\"summary\" class=\"cards\">");
    let mut card = |id: &str, label: &str, value: String, link: Option<&str>| {
        let value = match link {
            Some(href) => format!("<a href=\"{}\">{}</a>", esc(href), esc(&value)),
            None => esc(&value),
        };
        let _ = write!(
            h,
            "<div class=\"card\" id=\"card-{id}\"><div class=\"v\">{value}</div>\
             <div class=\"l\">{}</div></div>",
            esc(label)
        );
    };
    card(
        "total",
        "hosts",
        records.len().to_string(),
        Some("#filter="),
    );
    card(
        "succeeded",
        "succeeded",
        count(Status::Succeeded).to_string(),
        Some("#filter=status:succeeded"),
    );
    card(
        "failed",
        "failed",
        count(Status::Failed).to_string(),
        Some("#filter=status:failed"),
    );
    if count(Status::Skipped) > 0 {
        card(
            "skipped",
            "skipped",
            count(Status::Skipped).to_string(),
            Some("#filter=status:skipped"),
        );
    }
    if interrupted > 0 {
        card(
            "interrupted",
            "interrupted",
            interrupted.to_string(),
            Some("#filter=bucket:Interrupted"),
        );
    }
    if let Some(ms) = wall {
        card("duration", "wall time", human_ms(ms), None);
        if ms > 0 {
            let rate = records.len() as f64 * 1000.0 / ms as f64;
            card("rate", "hosts/s", format!("{rate:.1}"), None);
        }
    }
    h.push_str("</section>\n");
}

fn buckets_section(h: &mut String, records: &[HostRecord]) {
    let rows = bucket_rows(records);
    h.push_str("<section id=\"buckets\"><h2>Failures by bucket</h2>");
    if rows.is_empty() {
        h.push_str("<p>No host failed.</p></section>\n");
        return;
    }
    // Bar chart: one bar per bucket, scaled to the largest.
    let max = rows.iter().map(|r| r.hosts).max().unwrap_or(1).max(1);
    let bar_h = 22;
    let height = rows.len() * bar_h + 4;
    let _ = write!(
        h,
        "<svg class=\"chart\" id=\"bucket-chart\" viewBox=\"0 0 760 {height}\" width=\"760\" \
         height=\"{height}\" role=\"img\" aria-label=\"hosts per failure bucket\">"
    );
    for (i, row) in rows.iter().enumerate() {
        let y = i * bar_h + 2;
        let w = (row.hosts as f64 / max as f64 * 440.0).max(2.0);
        let name = esc(row.bucket.name());
        let _ = write!(
            h,
            "<a href=\"#filter=bucket:{name}\"><text x=\"220\" y=\"{}\" text-anchor=\"end\" \
             class=\"lbl\">{name}</text><rect x=\"228\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" \
             fill=\"{}\"></rect><text x=\"{:.1}\" y=\"{}\" class=\"cnt\">{} ({:.1}%)</text></a>",
            y + 15,
            bar_h - 6,
            bucket_color(row.bucket),
            228.0 + w + 6.0,
            y + 15,
            row.hosts,
            row.share
        );
    }
    h.push_str("</svg>");
    h.push_str(
        "<table class=\"ref\" id=\"bucket-table\"><thead><tr><th>bucket</th><th>hosts</th>\
         <th>share</th><th>what it means (example)</th><th>how to fix</th></tr></thead><tbody>",
    );
    for row in &rows {
        let name = esc(row.bucket.name());
        let _ = write!(
            h,
            "<tr><td><a href=\"#filter=bucket:{name}\">{name}</a></td>\
             <td class=\"num count\" data-bucket=\"{name}\">{}</td><td class=\"num\">{:.1}%</td>\
             <td>{}<div class=\"ex\">e.g. {}</div></td><td>{}</td></tr>",
            row.hosts,
            row.share,
            esc(&row.message),
            esc(&row.example_host),
            esc(row.bucket.how_to_fix())
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn histogram_section(h: &mut String, records: &[HostRecord]) {
    if records.is_empty() {
        return;
    }
    const BINS: usize = 20;
    let max = records
        .iter()
        .map(|r| r.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let width = max.div_ceil(BINS as u64).max(1);
    let mut bins = [0u64; BINS];
    for r in records {
        let i = ((r.duration_ms / width) as usize).min(BINS - 1);
        bins[i] += 1;
    }
    let top = bins.iter().copied().max().unwrap_or(1).max(1);
    let _ = write!(
        h,
        "<section id=\"durations\"><h2>Duration per host</h2><svg class=\"chart\" \
         id=\"duration-histogram\" viewBox=\"0 0 760 170\" width=\"760\" height=\"170\" \
         role=\"img\" aria-label=\"hosts per duration range\">"
    );
    for (i, n) in bins.iter().enumerate() {
        let bh = (*n as f64 / top as f64 * 118.0).max(if *n > 0 { 1.0 } else { 0.0 });
        let x = 20 + i * 36;
        let _ = write!(
            h,
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"32\" height=\"{bh:.1}\" fill=\"#4a7bd0\">\
             <title>{} to {}: {n} host(s)</title></rect>",
            140.0 - bh,
            human_ms(i as u64 * width),
            human_ms((i as u64 + 1) * width),
        );
        if *n > 0 {
            let _ = write!(
                h,
                "<text x=\"{}\" y=\"{:.1}\" class=\"cnt\" text-anchor=\"middle\">{n}</text>",
                x + 16,
                136.0 - bh
            );
        }
    }
    let _ = write!(
        h,
        "<text x=\"20\" y=\"160\" class=\"lbl\">0</text><text x=\"740\" y=\"160\" \
         class=\"lbl\" text-anchor=\"end\">{}</text></svg></section>",
        esc(&human_ms(width * BINS as u64))
    );
    h.push('\n');
}

/// How many affected hosts each risk row names.
const RISK_EXAMPLES: usize = 10;

fn fleet_section(h: &mut String, facts: &BTreeMap<String, HostFacts>) {
    let hosts = crate::fleet::configured(facts);
    if hosts.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<section id=\"fleet\"><h2>Fleet configuration</h2><p>WinRM service settings read \
         from {} host(s).</p><table class=\"ref\" id=\"risk-table\"><thead><tr><th>setting</th>\
         <th>hosts</th><th>what to do</th><th>hosts affected</th></tr></thead><tbody>",
        hosts.len()
    );
    for risk in Risk::ALL {
        let affected: Vec<&str> = hosts
            .iter()
            .filter(|(_, f, _)| risks(f).contains(&risk))
            .map(|(host, _, _)| *host)
            .collect();
        let mut names: Vec<String> = affected
            .iter()
            .take(RISK_EXAMPLES)
            .map(|n| esc(n))
            .collect();
        if affected.len() > RISK_EXAMPLES {
            names.push(format!("… {} more", affected.len() - RISK_EXAMPLES));
        }
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td class=\"num risk-count\" data-risk=\"{}\">{}</td><td>{}</td>\
             <td>{}</td></tr>",
            if affected.is_empty() {
                ""
            } else {
                " class=\"risk\""
            },
            risk.name(),
            risk.name(),
            affected.len(),
            esc(risk.advice()),
            names.join(", ")
        );
    }
    h.push_str("</tbody></table>");
    // How often each authentication method is enabled, and each listener.
    let mut auth: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut listeners: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, s) in &hosts {
        for (method, on) in &s.auth {
            let e = auth.entry(method.as_str()).or_default();
            if *on {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        for l in &s.listeners {
            *listeners.entry(l.as_str()).or_default() += 1;
        }
    }
    h.push_str(
        "<table class=\"ref\" id=\"auth-table\"><thead><tr><th>authentication</th>\
         <th>enabled</th><th>disabled</th></tr></thead><tbody>",
    );
    for (method, (on, off)) in auth {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{on}</td><td class=\"num\">{off}</td></tr>",
            esc(method)
        );
    }
    h.push_str(
        "</tbody></table><table class=\"ref\" id=\"listener-table\"><thead><tr>\
         <th>listener</th><th>hosts</th></tr></thead><tbody>",
    );
    for (listener, n) in listeners {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{n}</td></tr>",
            esc(listener)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn changes_section(h: &mut String, previous: &str, rows: &[crate::DiffRow]) {
    let mut counts: BTreeMap<Change, usize> = BTreeMap::new();
    for r in rows {
        *counts.entry(r.change).or_default() += 1;
    }
    let _ = write!(
        h,
        "<section id=\"changes\"><h2>Changes since run {}</h2><p>",
        esc(previous)
    );
    if rows.is_empty() {
        h.push_str("No host changed.</p></section>\n");
        return;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(c, n)| {
            format!(
                "<span class=\"chg\" data-change=\"{}\">{n} {}</span>",
                c.name(),
                c.name().replace('_', " ")
            )
        })
        .collect();
    h.push_str(&parts.join(", "));
    h.push_str(
        "</p><table class=\"ref\"><thead><tr><th>host</th><th>change</th><th>before</th>\
         <th>after</th></tr></thead><tbody>",
    );
    let outcome = |s: Option<Status>, b: Option<Bucket>| match (s, b) {
        (None, _) => "-".to_owned(),
        (Some(s), None) => status_name(s).to_owned(),
        (Some(s), Some(b)) => format!("{} ({})", status_name(s), b.name()),
    };
    for r in rows.iter().take(MAX_CHANGE_ROWS) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.host),
            r.change.name(),
            esc(&outcome(r.status_before, r.bucket_before)),
            esc(&outcome(r.status_after, r.bucket_after))
        );
    }
    h.push_str("</tbody></table>");
    if rows.len() > MAX_CHANGE_ROWS {
        let _ = write!(
            h,
            "<p>… and {} more (see psfleet diff).</p>",
            rows.len() - MAX_CHANGE_ROWS
        );
    }
    h.push_str("</section>\n");
}

fn host_table(h: &mut String, records: &[HostRecord]) {
    let _ = write!(
        h,
        "<section id=\"hosts\"><h2>Hosts</h2>\
         <div class=\"controls\">\
         <input id=\"q\" type=\"search\" placeholder=\"search host, message, output\" \
         aria-label=\"search\">\
         <select id=\"f-status\" aria-label=\"status\"><option value=\"\">any status</option></select>\
         <select id=\"f-bucket\" aria-label=\"bucket\"><option value=\"\">any bucket</option></select>\
         <select id=\"f-group\" aria-label=\"group\"><option value=\"\">any group</option></select>\
         <a href=\"#filter=\" id=\"clear\">clear</a>\
         <span class=\"shown\"><span id=\"shown\">{n}</span> of <span id=\"total\">{n}</span> \
         hosts shown</span></div>\
         <div id=\"detail\" hidden></div>\
         <table id=\"host-table\"><thead><tr>\
         <th data-key=\"host\">host</th><th data-key=\"group\">group</th>\
         <th data-key=\"status\">status</th><th data-key=\"bucket\">bucket</th>\
         <th data-key=\"attempts\" class=\"num\">attempts</th>\
         <th data-key=\"duration_ms\" class=\"num\">ms</th>\
         <th data-key=\"exit_code\">exit / state</th><th data-key=\"message\">message</th>\
         <th data-key=\"output_excerpt\">output</th></tr></thead>\
         <tbody id=\"host-rows\"></tbody></table>\
         <noscript><p>The host table needs JavaScript; hosts.csv holds the same rows.</p></noscript>\
         </section>",
        n = records.len()
    );
    h.push('\n');
}

/// Milliseconds from the earliest start to the latest finish, when the times parse.
fn wall_time_ms(records: &[HostRecord]) -> Option<u64> {
    let start = records.iter().filter_map(|r| parse_ms(&r.started)).min()?;
    let end = records.iter().filter_map(|r| parse_ms(&r.finished)).max()?;
    Some(end.saturating_sub(start))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to milliseconds since the epoch.
fn parse_ms(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20 || b.get(10) != Some(&b'T') || !t.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mi, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = match t.get(19..t.len() - 1) {
        Some("") => 0,
        Some(frac) if frac.starts_with('.') => {
            let digits = frac.get(1..)?;
            let padded: String = digits.chars().chain("000".chars()).take(3).collect();
            padded.parse::<u64>().ok()?
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    // Days from civil (Howard Hinnant), for years from 1970.
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(((days * 24 + hh) * 60 + mi) * 60_000 + ss * 1000 + ms)
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000)
    }
}

fn bucket_color(b: Bucket) -> &'static str {
    match b {
        Bucket::Interrupted | Bucket::Timeout | Bucket::QuotaExceeded => "#d89a2b",
        Bucket::ScriptFailed | Bucket::ModuleLoadFailure => "#8a5cc2",
        b if b.is_remoting_reason() => "#c84b4b",
        _ => "#6b7280",
    }
}

const STYLE: &str = r#"
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#fff;--soft:#f6f8fa;--ok:#1a7f37;--bad:#c84b4b}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0}
header{padding:16px 24px;border-bottom:1px solid var(--line);background:var(--soft)}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:var(--muted);margin:0;word-break:break-all}
main{padding:0 24px 48px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:120px;background:var(--bg)}
.card .v{font-size:24px;font-weight:600}.card .l{color:var(--muted)}
.card a{color:inherit;text-decoration:none}
#card-succeeded .v{color:var(--ok)}#card-failed .v{color:var(--bad)}
svg.chart{max-width:100%;height:auto;font-size:12px}
svg .lbl{fill:var(--fg)}svg .cnt{fill:var(--muted)}
svg a:hover rect{opacity:.75}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);position:sticky;top:0}
th[data-key]{cursor:pointer;user-select:none}
th.asc::after{content:" \25B2"}th.desc::after{content:" \25BC"}
td.num,th.num{text-align:right}
.ref td .ex{color:var(--muted);font-size:12px}
#host-table td.msg{max-width:420px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#host-table td.out{max-width:220px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-family:ui-monospace,monospace;font-size:12px}
#host-rows tr{cursor:pointer}#host-rows tr:hover{background:var(--soft)}
#host-rows tr.sel{background:#ddf4ff}
.st-succeeded{color:var(--ok)}.st-failed{color:var(--bad)}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin-bottom:8px}
.controls input{min-width:260px;padding:4px 6px}.controls .shown{color:var(--muted);margin-left:auto}
#detail{border:1px solid var(--line);border-radius:8px;padding:8px 16px;margin-bottom:12px;background:var(--soft)}
#detail dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}
#detail dt{color:var(--muted)}#detail dd{margin:0;word-break:break-word}
#detail pre{white-space:pre-wrap;word-break:break-word;background:var(--bg);border:1px solid var(--line);padding:8px;max-height:320px;overflow:auto}
.chg{font-weight:600}
tr.risk td{background:#fff4e5}tr.risk td:first-child{font-weight:600;color:#b35900}
#auth-table,#listener-table{width:auto;display:inline-table;margin:12px 24px 0 0}
"#;

/// The table script. Host data reaches the page only through `textContent` and `dataset`.
const SCRIPT: &str = r#"
(function () {
  'use strict';
  var t0 = performance.now();
  var data = JSON.parse(document.getElementById('psfleet-data').textContent);
  var col = {};
  data.columns.forEach(function (name, i) { col[name] = i; });
  var rows = data.rows;
  var tbody = document.getElementById('host-rows');
  var shown = document.getElementById('shown');
  var detail = document.getElementById('detail');
  var trs = new Array(rows.length);
  var hay = new Array(rows.length);
  var str = function (v) { return v === null || v === undefined ? '' : String(v); };
  var frag = document.createDocumentFragment();
  var cell = function (tr, text, cls) {
    var td = document.createElement('td');
    td.textContent = text;
    if (cls) { td.className = cls; }
    tr.appendChild(td);
  };
  for (var i = 0; i < rows.length; i++) {
    var r = rows[i];
    var tr = document.createElement('tr');
    tr.dataset.i = i;
    tr.dataset.bucket = str(r[col.bucket]);
    tr.dataset.status = str(r[col.status]);
    tr.dataset.group = str(r[col.group]);
    var exit = r[col.exit_code] !== null ? 'exit ' + r[col.exit_code] : str(r[col.pipeline_state]);
    var out = str(r[col.output_excerpt]);
    cell(tr, str(r[col.host]));
    cell(tr, str(r[col.group]));
    cell(tr, str(r[col.status]), 'st-' + str(r[col.status]));
    cell(tr, str(r[col.bucket]));
    cell(tr, str(r[col.attempts]), 'num');
    cell(tr, str(r[col.duration_ms]), 'num');
    cell(tr, exit);
    cell(tr, str(r[col.message]), 'msg');
    cell(tr, out.length > 120 ? out.slice(0, 120) + '\u2026' : out, 'out');
    trs[i] = tr;
    hay[i] = [r[col.host], r[col.address], r[col.group], r[col.status], r[col.bucket],
      r[col.message], out, r[col.error_id]].map(str).join('\n').toLowerCase();
    frag.appendChild(tr);
  }
  tbody.appendChild(frag);

  var selects = { status: 'f-status', bucket: 'f-bucket', group: 'f-group' };
  Object.keys(selects).forEach(function (key) {
    var values = {};
    rows.forEach(function (r) { var v = str(r[col[key]]); if (v) { values[v] = 1; } });
    var sel = document.getElementById(selects[key]);
    Object.keys(values).sort().forEach(function (v) {
      var o = document.createElement('option');
      o.value = v;
      o.textContent = v;
      sel.appendChild(o);
    });
    sel.addEventListener('change', function () { setFilter(key, sel.value); });
  });

  var filter = {};
  function parseHash() {
    var f = {};
    var m = /^#filter=(.*)$/.exec(location.hash);
    if (!m) { return f; }
    m[1].split(',').forEach(function (part) {
      var k = part.indexOf(':');
      if (k > 0) {
        try { f[part.slice(0, k)] = decodeURIComponent(part.slice(k + 1)); } catch (e) { }
      }
    });
    return f;
  }
  function writeHash() {
    var parts = [];
    ['status', 'bucket', 'group', 'q'].forEach(function (k) {
      if (filter[k]) { parts.push(k + ':' + encodeURIComponent(filter[k])); }
    });
    var h = '#filter=' + parts.join(',');
    if (location.hash !== h) { history.replaceState(null, '', h); }
  }
  function setFilter(key, value) {
    filter[key] = value;
    writeHash();
    apply();
  }
  function apply() {
    var q = (filter.q || '').toLowerCase();
    var n = 0;
    for (var i = 0; i < trs.length; i++) {
      var d = trs[i].dataset;
      var ok = (!filter.status || d.status === filter.status) &&
        (!filter.bucket || d.bucket === filter.bucket) &&
        (!filter.group || d.group === filter.group) &&
        (!q || hay[i].indexOf(q) >= 0);
      trs[i].hidden = !ok;
      if (ok) { n++; }
    }
    shown.textContent = String(n);
    Object.keys(selects).forEach(function (key) {
      document.getElementById(selects[key]).value = filter[key] || '';
    });
    var box = document.getElementById('q');
    if (box.value !== (filter.q || '')) { box.value = filter.q || ''; }
  }
  function fromHash() { filter = parseHash(); apply(); }
  window.addEventListener('hashchange', fromHash);
  var timer = null;
  document.getElementById('q').addEventListener('input', function (e) {
    clearTimeout(timer);
    var v = e.target.value;
    timer = setTimeout(function () { setFilter('q', v); }, 150);
  });

  var sortKey = null, sortDir = 1;
  var numeric = { attempts: 1, duration_ms: 1, exit_code: 1 };
  document.querySelectorAll('#host-table th[data-key]').forEach(function (th) {
    th.addEventListener('click', function () {
      var key = th.dataset.key;
      sortDir = sortKey === key ? -sortDir : 1;
      sortKey = key;
      document.querySelectorAll('#host-table th').forEach(function (o) { o.className = o.className.replace(/\b(asc|desc)\b/g, '').trim(); });
      th.className = (th.className + ' ' + (sortDir > 0 ? 'asc' : 'desc')).trim();
      var c = col[key];
      var order = rows.map(function (_, i) { return i; });
      order.sort(function (a, b) {
        var x = rows[a][c], y = rows[b][c];
        if (numeric[key]) { x = x === null ? -Infinity : Number(x); y = y === null ? -Infinity : Number(y); }
        else { x = str(x).toLowerCase(); y = str(y).toLowerCase(); }
        return (x < y ? -1 : x > y ? 1 : a - b) * sortDir;
      });
      var f = document.createDocumentFragment();
      order.forEach(function (i) { f.appendChild(trs[i]); });
      tbody.appendChild(f);
    });
  });

  function show(i) {
    var r = rows[i];
    detail.textContent = '';
    var h = document.createElement('h3');
    h.textContent = str(r[col.host]);
    detail.appendChild(h);
    var dl = document.createElement('dl');
    ['address', 'group', 'status', 'bucket', 'message', 'attempts', 'started', 'finished',
      'duration_ms', 'exit_code', 'pipeline_state', 'error_id'].forEach(function (k) {
      var v = str(r[col[k]]);
      if (!v) { return; }
      var dt = document.createElement('dt'); dt.textContent = k.replace('_', ' ');
      var dd = document.createElement('dd'); dd.textContent = v;
      dl.appendChild(dt); dl.appendChild(dd);
    });
    detail.appendChild(dl);
    [['output', [r[col.output_excerpt]]], ['errors', r[col.errors]], ['warnings', r[col.warnings]]].forEach(function (p) {
      var text = (p[1] || []).map(str).filter(function (s) { return s; }).join('\n');
      if (!text) { return; }
      var t = document.createElement('h4'); t.textContent = p[0];
      var pre = document.createElement('pre'); pre.textContent = text;
      detail.appendChild(t); detail.appendChild(pre);
    });
    detail.hidden = false;
    trs.forEach(function (tr) { tr.classList.remove('sel'); });
    trs[i].classList.add('sel');
  }
  tbody.addEventListener('click', function (e) {
    var tr = e.target.closest('tr');
    if (tr && tr.dataset.i !== undefined) { show(Number(tr.dataset.i)); }
  });

  fromHash();
  document.body.setAttribute('data-ready', String(rows.length));
  document.body.setAttribute('data-render-ms', String(Math.round(performance.now() - t0)));
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_milliseconds() {
        assert_eq!(parse_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_ms("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_ms("2023-11-14 22:13:20Z"), None);
        assert_eq!(parse_ms("garbage"), None);
        assert_eq!(parse_ms(""), None);
    }

    #[test]
    fn embedded_json_cannot_close_its_script_block_and_parses_back() {
        let mut r = crate::tests::sample("h1", Some(Bucket::ScriptFailed));
        let evil = "</script><script>alert(1)</script><!-- & \u{2028}\u{2029}";
        r.message = evil.into();
        r.output_excerpt = evil.into();
        let text = data_json(std::slice::from_ref(&r));
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
        assert!(!text.contains('\u{2028}') && !text.contains('\u{2029}'));
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["rows"][0][5], evil);
        assert_eq!(back["rows"][0][13], evil);
        assert_eq!(back["columns"][5], "message");
        assert_eq!(back["columns"][13], "output_excerpt");
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_page_allows_only_its_own_script_and_no_network() {
        let report = Report::new(
            psfleet_engine::record::RunId("r".into()),
            vec![crate::tests::sample("h1", None)],
        );
        let page = render(&report);
        let hash = BASE64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            SCRIPT.as_bytes(),
        ));
        assert!(page.contains(&format!("script-src 'sha256-{hash}'")));
        assert!(page.contains("default-src 'none'"));
        assert!(page.contains(&format!("<script>{SCRIPT}</script>")));
        for needle in ["http://", "https://", "src=\"", "<link"] {
            assert!(
                !page.contains(needle),
                "{needle} found: the page must load nothing"
            );
        }
    }
}
