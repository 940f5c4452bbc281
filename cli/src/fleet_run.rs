//! Running one job over the fleet (`run`, `sweep`, `cleanup`): the hosts from the
//! inventories, a credential per account, the engine's client options per kind of host, the
//! state store, then the engine's fleet runner (`engine::fleet::execute`) watched by
//! [`crate::drive::watch`] (progress, output, Ctrl-C), and at the end the reports.
//!
//! The order matters to the operator: everything that can be wrong with the command line,
//! the configuration or the inventory is found before the password prompt, and the prompt
//! comes before anything is written to the state directory or sent to a host.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use psfleet_engine::fleet::{FleetError, RunEvent, RunInfo, RunKind, RunPlan, Target, execute};
use psfleet_engine::ops::ClientOptions;
use psfleet_engine::record::{JobKind, RunId};
use psfleet_engine::scheduler::StopLevel;
use psfleet_engine::store::{Store, StoreError};
use psfleet_engine::target::Scheme as EngineScheme;
use psfleet_inventories::{Address, Host, Scheme};
use tokio::sync::mpsc;

use crate::cli::Context;
use crate::credentials::{CredentialCache, Credentials};
use crate::drive::{Observed, watch};
use crate::exit::{CliError, Exit};
use crate::options::ResumeFrom;
use crate::output::Reporter;
use crate::progress::{Mode, ProgressDisplay};
use crate::settings::{ConnectionSettings, FleetSettings, OutputSettings};
use crate::tty::TerminalPrompt;

/// Events buffered between the runner and the display.
const EVENT_BUFFER: usize = 1024;

/// A lookup of environment variables (the process's, or a stand-in).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

/// What a caller other than the command line changes about a run (`psfleet demo`).
pub struct RunTweaks<'a> {
    /// Where `PSFLEET_PASSWORD` and inventory `env:` references are looked up, instead of
    /// the process environment.
    pub env: Option<Env<'a>>,
    /// A change to the run's client options (every host's options derive from them).
    pub client: Option<&'a dyn Fn(&mut ClientOptions)>,
    /// A change to the plan (scheduler settings, output caps).
    pub plan: Option<&'a dyn Fn(&mut RunPlan)>,
    /// The state directory, instead of the global one.
    pub state_dir: Option<PathBuf>,
    /// Text output without a line per failed host (the summary only).
    pub summary_only: bool,
    /// Text summaries with each bucket's message and fix (the default), or the table only.
    pub details: bool,
}

impl Default for RunTweaks<'_> {
    fn default() -> Self {
        Self {
            env: None,
            client: None,
            plan: None,
            state_dir: None,
            summary_only: false,
            details: true,
        }
    }
}

/// How a run went, for callers that go on after it.
#[derive(Debug, Clone)]
pub struct FleetOutcome {
    /// The exit code the run means.
    pub exit: Exit,
    /// The run.
    pub run_id: RunId,
    /// The reports written at the end (`None`: aborted, or the writing failed).
    pub reports: Option<psfleet_reports::ReportFiles>,
}

/// Runs `kind` over the hosts `fleet` selects and returns the exit code (docs/cli.md).
/// `what` names the command in the summary (`psfleet run`).
pub fn run_fleet(
    kind: RunKind,
    what: &'static str,
    conn: &ConnectionSettings,
    fleet: &FleetSettings,
    output: &OutputSettings,
    ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    run_fleet_with(kind, what, conn, fleet, output, ctx, &RunTweaks::default()).map(|o| o.exit)
}

/// [`run_fleet`] with `tweaks`.
#[allow(clippy::too_many_arguments)] // The settings groups of a run, and the tweaks.
pub fn run_fleet_with(
    kind: RunKind,
    what: &'static str,
    conn: &ConnectionSettings,
    fleet: &FleetSettings,
    output: &OutputSettings,
    ctx: &Context<'_>,
    tweaks: &RunTweaks<'_>,
) -> Result<FleetOutcome, CliError> {
    // 1. The hosts: inventory errors before any prompt.
    let loaded = crate::hosts::load(&fleet.select, conn)?;
    if !ctx.quiet() {
        for warning in &loaded.warnings {
            ctx.sink.err(&format!("{warning}\n"));
        }
    }
    let state_dir = match &tweaks.state_dir {
        Some(dir) => dir.clone(),
        None => ctx.global.state_dir()?.to_owned(),
    };

    // 2. Credentials (one prompt per account at most) and client options.
    let mut prompt = TerminalPrompt;
    let env = tweaks.env.unwrap_or(ctx.env);
    let targets = targets(&loaded.hosts, conn, env, tweaks.client, &mut prompt)?;
    let Some(base) = targets.base else {
        return Err(CliError::Inventory("the inventory selects no host".into()));
    };

    // 3. The state store (its lock keeps two runs out of one state directory).
    let store = open_store(&state_dir)?;
    let resume = match &fleet.resume {
        None => None,
        Some(from) => Some(resume_id(&store, from, &kind)?),
    };

    // 4. The plan.
    let host_count = targets.targets.len() as u64;
    let options = run_options(conn, fleet, &kind);
    let mut plan = RunPlan::new(kind, targets.targets, base);
    plan.scheduler = fleet.scheduler_config();
    plan.resume = resume;
    plan.rerun_interrupted = fleet.rerun_interrupted.value;
    plan.info = RunInfo {
        command_line: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        inventory_paths: fleet.select.inventory.value.clone(),
        inventory_digest: Some(loaded.digest.clone()),
        options,
    };
    if let Some(tweak) = tweaks.plan {
        tweak(&mut plan);
    }
    let handle = plan.handle();

    // 5. The run, watched.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("cannot start the runtime", e))?;
    let quiet = ctx.quiet();
    let (result, watched) = runtime.block_on(async {
        let interrupts = crate::drive::interrupt_signals()?;
        let mode = Mode::choose(
            quiet,
            output.no_progress.value,
            ctx.stderr_is_terminal,
            output.progress_interval.value,
        );
        let mut progress = ProgressDisplay::new(ctx.sink.clone(), mode, Some(host_count));
        let mut reporter = Reporter::new(
            ctx.sink.clone(),
            output.output.value,
            ctx.verbosity > 0,
            quiet,
        );
        reporter.set_host_lines(!tweaks.summary_only);
        reporter.set_details(tweaks.details);
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let observe = move |event: RunEvent| observe(event, quiet);
        let (result, watched) = tokio::join!(
            execute(plan, &store, tx),
            watch(
                rx,
                observe,
                &handle,
                &mut progress,
                &mut reporter,
                &ctx.sink,
                what,
                interrupts
            )
        );
        Ok::<_, CliError>((result, watched))
    })?;
    let summary = result.map_err(|e| fleet_error(e, &state_dir))?;
    if let Some(error) = &summary.store_error {
        return Err(CliError::State(format!(
            "the run journal in {} failed and the run stopped: {error}; the hosts recorded \
             before are safe. Free the space or fix the directory, then `psfleet run ... \
             --resume {}`: hosts without a durable record run again",
            state_dir.display(),
            summary.run_id
        )));
    }
    if let Some(error) = &summary.cache_error {
        tracing::warn!(%error, "the host cache could not be updated (the journal is complete)");
    }

    // 6. Reports (not after a second Ctrl-C: that means "exit now"). A report or standard
    // output that cannot be written ends the command with exit 7: the run is complete in
    // its journal, and `psfleet report RUN` writes the reports again.
    let mut reports = None;
    if handle.stop_level() < StopLevel::Aborted {
        let files = write_reports(&store, &summary.run_id)?;
        if !quiet {
            ctx.sink.err(&format!(
                "run {}: {}\nreports: {} {}\n",
                summary.run_id,
                summary.run_dir.display(),
                files.html.display(),
                files.hosts_csv.display()
            ));
        }
        reports = Some(files);
    }
    if let Some(error) = ctx.sink.stdout_failure() {
        return Err(CliError::output(
            "standard output",
            &error,
            Some(&summary.run_id.0),
        ));
    }
    Ok(FleetOutcome {
        exit: watched.exit,
        run_id: summary.run_id,
        reports,
    })
}

/// What a runner event means to the display.
fn observe(event: RunEvent, quiet: bool) -> Observed {
    match event {
        RunEvent::RunStarted {
            run_id,
            hosts,
            already_done,
            resumed,
            ..
        } => {
            let to_run = hosts.saturating_sub(already_done);
            if quiet {
                return Observed::Total(to_run);
            }
            let text = if resumed {
                format!(
                    "psfleet: resuming run {run_id}: {already_done} of {hosts} hosts already \
                     done, {to_run} to go"
                )
            } else {
                format!("psfleet: run {run_id}: {hosts} hosts")
            };
            Observed::TotalAndNotice(to_run, text)
        }
        RunEvent::HostDone(record) | RunEvent::HostInterrupted(record) => {
            Observed::Finished(record)
        }
        RunEvent::Retrying {
            host,
            attempt,
            after,
            detail,
            ..
        } => Observed::Retrying {
            host: host.to_string(),
            attempt,
            after,
            detail,
        },
        RunEvent::StoreFailed { error } => Observed::Notice(format!(
            "psfleet: the run journal refused a write ({error}); the run stops"
        )),
        _ => Observed::Nothing,
    }
}

/// The hosts as runner targets, with the run's client options and the hosts' own.
struct Targets {
    targets: Vec<Target>,
    base: Option<Arc<ClientOptions>>,
}

/// What makes two hosts' client options differ.
type OptionsKey = (usize, String, bool, Option<PathBuf>, String);

fn targets(
    hosts: &[Host],
    conn: &ConnectionSettings,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    tweak: Option<&dyn Fn(&mut ClientOptions)>,
    prompt: &mut TerminalPrompt,
) -> Result<Targets, CliError> {
    let mut cache = CredentialCache::default();
    let mut accounts: HashMap<String, usize> = HashMap::new();
    // An account is a user with a password source: two references for one user are two
    // accounts (they may hold different passwords).
    let mut account_of = |c: &Credentials, host: &Host| -> usize {
        let user = c
            .credential
            .as_ref()
            .map_or_else(String::new, |c| c.user().to_owned());
        let source = host
            .password
            .as_ref()
            .map(crate::hosts::secret_ref_text)
            .unwrap_or_default();
        let next = accounts.len();
        *accounts.entry(format!("{user}\0{source}")).or_insert(next)
    };
    let mut base: Option<(Arc<ClientOptions>, usize)> = None;
    let mut shared: HashMap<OptionsKey, Option<Arc<ClientOptions>>> = HashMap::new();
    let mut targets = Vec::with_capacity(hosts.len());
    for host in hosts {
        let credentials = cache.for_host(host, conn, env, prompt)?;
        let account = account_of(&credentials, host);
        let options = match &base {
            None => {
                let mut options =
                    crate::client::client_options(conn, credentials.credential.clone())?;
                if let Some(tweak) = tweak {
                    tweak(&mut options);
                }
                let options = Arc::new(options);
                let own = crate::client::for_host(&options, conn, host, None)?;
                base = Some((Arc::clone(&options), account));
                own
            }
            Some((base_options, base_account)) => {
                let key: OptionsKey = (
                    account,
                    host.authentication.to_string(),
                    host.cert_validation == psfleet_inventories::CertValidation::Ignore,
                    host.ca_trust_path.clone(),
                    host.configuration_name.clone(),
                );
                match shared.get(&key) {
                    Some(found) => found.clone(),
                    None => {
                        let credential = (account != *base_account)
                            .then(|| credentials.credential.clone())
                            .flatten();
                        let own = crate::client::for_host(base_options, conn, host, credential)?;
                        shared.insert(key, own.clone());
                        own
                    }
                }
            }
        };
        targets.push(target(host, options));
    }
    Ok(Targets {
        targets,
        base: base.map(|(options, _)| options),
    })
}

/// One inventory host as a runner target.
fn target(host: &Host, options: Option<Arc<ClientOptions>>) -> Target {
    let mut target = Target::new(&host.name);
    match &host.address {
        Some(Address::Ip(ip)) => target.address = Some(*ip),
        Some(Address::Name(name)) => target.host = Some(name.clone()),
        None => {}
    }
    target.scheme = match host.scheme {
        Scheme::Http => EngineScheme::Http,
        Scheme::Https => EngineScheme::Https,
    };
    target.port = Some(host.port);
    target.path = Some(host.path.clone());
    target.group = host.groups.iter().find(|g| *g != "all").cloned();
    target.options = options;
    target.configuration_name = Some(host.configuration_name.clone());
    target
}

/// Opens the state store in `dir`, or says why it cannot be used (exit 6, nothing run).
pub fn open_store(dir: &std::path::Path) -> Result<Store, CliError> {
    // create_dir_all reports a file in the way as "exists"; say what it is.
    if let Ok(meta) = std::fs::metadata(dir)
        && !meta.is_dir()
    {
        return Err(CliError::state_dir(
            dir,
            &std::io::Error::from(std::io::ErrorKind::NotADirectory),
        ));
    }
    Store::open(dir).map_err(|e| match e {
        StoreError::Locked(dir) => CliError::State(format!(
            "the state directory {} is in use by another psfleet process (it holds {}); wait \
             for it to finish, or give this run its own --state-dir. Nothing was run.",
            dir.display(),
            dir.join(psfleet_engine::store::LOCK_FILE).display()
        )),
        other => CliError::state_dir(dir, &other),
    })
}

/// The run `--resume` names: `last` is the newest run of the same kind. The run must have
/// run the same script or command: its finished hosts ran that one.
fn resume_id(store: &Store, from: &ResumeFrom, kind: &RunKind) -> Result<RunId, CliError> {
    let id = find_resumed(store, from, kind)?;
    let meta = run_meta(store, &id)?;
    let (option, what) = match kind {
        RunKind::Cmd { .. } => ("--cmd", "cmd command"),
        _ => ("the script (SCRIPT_FILE or -c)", "script"),
    };
    if meta.job != kind.job_kind() {
        return Err(crate::settings::conflict(
            &format!("--resume {from}"),
            option,
            &format!(
                "run {id} is a {} run; it continues only as one",
                job_name(meta.job)
            ),
        ));
    }
    if let (Some(before), Some(now)) = (meta.script.as_deref(), kind.text())
        && before != now.as_str()
    {
        return Err(crate::settings::conflict(
            &format!("--resume {from}"),
            option,
            &format!(
                "run {id} ran another {what} (its hosts done so far ran that one); give the \
                 same {what} to continue it (the run's run.json has it), or start a new run \
                 without --resume"
            ),
        ));
    }
    Ok(id)
}

fn find_resumed(store: &Store, from: &ResumeFrom, kind: &RunKind) -> Result<RunId, CliError> {
    find_run(store, from, &[kind.job_kind()])
}

/// The run `from` names among the runs of the `jobs` kinds (`last`: the newest).
fn find_run(store: &Store, from: &ResumeFrom, jobs: &[JobKind]) -> Result<RunId, CliError> {
    let runs = store
        .runs()
        .map_err(|e| CliError::state_dir(store.dir(), &e))?;
    match from {
        ResumeFrom::Last => runs
            .iter()
            .filter(|r| jobs.contains(&r.job))
            .max_by(|a, b| a.run_id.cmp(&b.run_id))
            .map(|r| r.run_id.clone())
            .ok_or_else(|| {
                let kinds: Vec<String> = jobs.iter().map(|j| job_name(*j)).collect();
                CliError::usage(format!(
                    "--resume last: there is no earlier {} run in {}",
                    kinds.join(" or "),
                    store.dir().display()
                ))
            }),
        ResumeFrom::Run(id) => runs
            .iter()
            .find(|r| r.run_id.0 == *id)
            .map(|r| r.run_id.clone())
            .ok_or_else(|| {
                CliError::usage(format!(
                    "--resume {id}: no such run in {} (`psfleet runs` lists them)",
                    store.dir().display()
                ))
            }),
    }
}

/// The `run.json` of run `id`.
fn run_meta(store: &Store, id: &RunId) -> Result<psfleet_engine::journal::RunMeta, CliError> {
    let dir = store
        .dir()
        .join(psfleet_engine::journal::RUNS_DIR)
        .join(&id.0);
    psfleet_engine::journal::read_meta(&dir).map_err(|e| CliError::state_dir(store.dir(), &e))
}

/// A job kind as `run.json` writes it (`script`, `cmd`, ...).
fn job_name(job: JobKind) -> String {
    serde_json::to_value(job)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The `run.json` option holding a script's `--argument` values.
const SCRIPT_ARGUMENTS: &str = "script_arguments";

/// The script's arguments as the strings `--argument` gave, when they are only that
/// (positional strings; the demo and tests may build others).
fn string_arguments(spec: &psfleet_core::psrp::client::ScriptSpec) -> Option<Vec<String>> {
    spec.arguments
        .iter()
        .map(|a| match (&a.name, &a.value) {
            (None, psfleet_core::psrp::clixml::Value::String(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// What an earlier run ran, recalled from its `run.json` for `psfleet run --resume`
/// given no script or command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recalled {
    /// The run.
    pub run_id: RunId,
    /// A script run or a cmd run.
    pub job: JobKind,
    /// The script text or the command line.
    pub text: String,
    /// The script's `--argument` values.
    pub arguments: Vec<String>,
}

/// The script (or command) and arguments of the script or cmd run `from` names in
/// `state_dir`, so that `--resume` continues it without the script given again.
pub fn recall_work(state_dir: &std::path::Path, from: &ResumeFrom) -> Result<Recalled, CliError> {
    let store = open_store(state_dir)?;
    let run_id = find_run(&store, from, &[JobKind::Script, JobKind::Cmd])?;
    let meta = run_meta(&store, &run_id)?;
    let again = |why: &str| {
        CliError::usage(format!(
            "--resume {from}: run {run_id} {why}; give the script (SCRIPT_FILE, -c) or --cmd \
             again, as first run"
        ))
    };
    let text = match (meta.job, meta.script) {
        (JobKind::Script | JobKind::Cmd, Some(text)) => text,
        (JobKind::Script | JobKind::Cmd, None) => return Err(again("kept no script text")),
        (other, _) => {
            return Err(again(&format!(
                "is a {} run, which `psfleet run` does not continue",
                job_name(other)
            )));
        }
    };
    let arguments = match meta.options.get(SCRIPT_ARGUMENTS) {
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|_| again("has unreadable script arguments"))?,
        // Runs recorded before the arguments were kept: only safe without any.
        None if meta
            .command_line
            .iter()
            .any(|a| a.starts_with("--argument")) =>
        {
            return Err(again("was recorded without its --argument values"));
        }
        None => Vec::new(),
    };
    Ok(Recalled {
        run_id,
        job: meta.job,
        text,
        arguments,
    })
}

/// The effective options `run.json` keeps (never secrets), and a script's `--argument`
/// values, which `psfleet run --resume` without a script recalls with the script.
fn run_options(
    conn: &ConnectionSettings,
    fleet: &FleetSettings,
    kind: &RunKind,
) -> BTreeMap<String, serde_json::Value> {
    use serde_json::json;
    let mut o = BTreeMap::new();
    if let RunKind::Script(spec) = kind
        && let Some(arguments) = string_arguments(spec)
    {
        o.insert(SCRIPT_ARGUMENTS.into(), json!(arguments));
    }
    o.insert("forks".into(), json!(fleet.forks.value));
    o.insert("retries".into(), json!(fleet.retries.value));
    o.insert(
        "max_shells_default".into(),
        json!(fleet.max_shells_default.value),
    );
    if let Some(t) = &fleet.timeout {
        o.insert("timeout_s".into(), json!(t.value.as_secs_f64()));
    }
    if let Some(r) = &fleet.rate {
        o.insert("rate".into(), json!(r.value.to_string()));
    }
    if let Some(r) = &fleet.per_host_rate {
        o.insert("per_host_rate".into(), json!(r.value.to_string()));
    }
    if let Some(l) = &fleet.select.limit {
        o.insert("limit".into(), json!(l.value));
    }
    o.insert(
        "authentication".into(),
        json!(conn.authentication.value.name()),
    );
    o.insert("use_ssl".into(), json!(conn.use_ssl.value));
    o.insert("port".into(), json!(conn.port().value));
    o.insert("encryption".into(), json!(conn.encryption.value.name()));
    o.insert(
        "configuration_name".into(),
        json!(conn.configuration_name.value),
    );
    if let Some(user) = &conn.user {
        o.insert("user".into(), json!(user.value));
    }
    o
}

/// The runner's errors as exit codes.
fn fleet_error(error: FleetError, state_dir: &std::path::Path) -> CliError {
    match error {
        // Creating the run's journal failed before any host was touched.
        FleetError::Store(e) => CliError::state_dir(state_dir, &e),
        FleetError::Scheduler(e) => CliError::usage(e.to_string()),
        FleetError::DuplicateHost(host) => CliError::Inventory(format!(
            "host {host:?} is selected twice (two inventory entries with one name)"
        )),
        FleetError::ResumeKindMismatch { .. } => CliError::usage(error.to_string()),
        other => CliError::Internal(other.to_string()),
    }
}

/// Writes the run's reports into its folder (the HTML compares with the previous run of the
/// same inventory).
fn write_reports(store: &Store, run_id: &RunId) -> Result<psfleet_reports::ReportFiles, CliError> {
    let state = store
        .load_run(run_id)
        .map_err(|e| CliError::output("the reports (reading the journal)", &e, Some(&run_id.0)))?;
    let mut report = psfleet_reports::Report::from_state(&state);
    if let Ok(Some(previous)) = store.previous_run(run_id)
        && let Ok(previous) = store.load_run(&previous.run_id)
    {
        report = report.with_previous(&previous);
    }
    report
        .write_files(&state.dir)
        .map_err(|e| CliError::output("the reports", &e, Some(&run_id.0)))
}
