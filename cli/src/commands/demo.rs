//! `psfleet demo`: start the built-in simulated fleet (the mixed profile), sweep it, run a
//! script on it, print the summaries and the paths of the CSV and HTML reports. Nothing to
//! configure: the demo knows the fleet's accounts and hands their passwords to psfleet the
//! way an operator would, through references in the inventory (`env:NAME`) resolved from a
//! private environment; the operator's own environment and configuration are not used.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use psfleet_core::psrp::client::ScriptSpec;
use psfleet_core::taxonomy::Bucket;
use psfleet_engine::fleet::RunKind;
use psfleet_engine::retry::Backoff;
use psfleet_sim::fleet::{Fleet, FleetError, FleetHandle, FleetOptions};
use psfleet_sim::profile::Profile;

use crate::cli::Context;
use crate::config::ConfigFile;
use crate::exit::{CliError, Exit};
use crate::fleet_run::{FleetOutcome, RunTweaks, run_fleet_with};
use crate::options::{ConnectionArgs, FleetArgs, OutputArgs};
use crate::settings::{ConnectionSettings, FleetSettings, Layers, OutputSettings, Setting};

/// Most hosts the demo starts (each is a loopback listener with two descriptors per
/// connection).
pub const MAX_DEMO_HOSTS: usize = 5_000;

/// The script the demo runs: the computer, its OS and its WinRM service, as one object.
pub const DEMO_SCRIPT: &str = "$os = Get-CimInstance Win32_OperatingSystem
New-Object PSObject -Property @{ Computer = $env:COMPUTERNAME; OS = $os.Caption; WinRM = (Get-Service -Name WinRM).Status }";

/// The per-host deadline of the demo's runs: the blackholed host ends as Timeout this soon.
const DEMO_TIMEOUT: Duration = Duration::from_secs(10);

/// The demo's connect timeout: the unreachable host ends as InvalidHostName this soon.
const DEMO_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `psfleet demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of simulated hosts.
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub hosts: usize,
    /// Simulator profile (healthy, mixed, bench, or a TOML file).
    #[arg(long, default_value = "mixed", value_name = "PROFILE")]
    pub profile: String,
    /// Seed of the simulated fleet (the same seed gives the same fleet) [default: random,
    /// printed].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Where to write the fleet's files, the state (journals) and the reports [default:
    /// `demo` in the state directory].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `psfleet demo`.
pub fn execute(args: DemoArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    if !(1..=MAX_DEMO_HOSTS).contains(&args.hosts) {
        return Err(CliError::usage(format!(
            "--hosts must be between 1 and {MAX_DEMO_HOSTS}"
        )));
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => ctx.global.state_dir()?.join("demo"),
    };
    run_demo(&args, &out, ctx)
}

/// Starts the fleet, sweeps it, runs [`DEMO_SCRIPT`], prints where the reports are. Exits 0
/// when both runs completed (the failing hosts are the point of the demo), 3 when stopped.
pub fn run_demo(args: &DemoArgs, out: &Path, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let profile = Profile::load(&args.profile).map_err(|e| CliError::usage(e.to_string()))?;
    let seed = args.seed.unwrap_or_else(random_seed);
    let fleet_dir = out.join("fleet");
    let state_dir = out.join("state");
    std::fs::create_dir_all(&fleet_dir)
        .map_err(|e| CliError::io(format!("cannot create {}", fleet_dir.display()), e))?;

    // The fleet runs on its own runtime; the runs below make theirs.
    let sim_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CliError::io("cannot start the simulator's runtime", e))?;
    let mut options = FleetOptions::new(profile.clone(), args.hosts, seed);
    options.out_dir = Some(fleet_dir.clone());
    let fleet = sim_runtime.block_on(start_fleet(options))?;
    say(
        ctx,
        &format!(
            "psfleet demo: {} hosts of the {} profile on {} .. {}, seed {seed} (psfleet demo \
             --seed {seed} starts the same fleet)",
            args.hosts,
            profile.name,
            fleet
                .addresses()
                .first()
                .map_or_else(String::new, ToString::to_string),
            fleet
                .addresses()
                .last()
                .map_or_else(String::new, ToString::to_string),
        ),
    );
    let result = demo_runs(&fleet, &fleet_dir, &state_dir, ctx);
    let _ = sim_runtime.block_on(fleet.shutdown());
    let (sweep, run) = result?;

    let mut text = String::from("\npsfleet demo: reports\n");
    for (what, outcome) in [("sweep", &sweep), ("script run", &run)] {
        if let Some(files) = &outcome.reports {
            text.push_str(&format!("  {what}: {}\n", files.html.display()));
            text.push_str(&format!("  {what}: {}\n", files.hosts_csv.display()));
            text.push_str(&format!("  {what}: {}\n", files.buckets_csv.display()));
            if let Some(config) = &files.config_csv {
                text.push_str(&format!("  {what}: {}\n", config.display()));
            }
        }
    }
    if let Some(seen) = buckets_seen(&state_dir, &[&sweep, &run]) {
        let all: Vec<&str> = Bucket::ALL
            .iter()
            .filter(|b| **b != Bucket::Interrupted)
            .map(|b| b.name())
            .collect();
        let missing: Vec<&&str> = all.iter().filter(|b| !seen.contains(**b)).collect();
        text.push_str(&format!(
            "psfleet demo: {} of the {} failure buckets seen (Interrupted appears only when a \
             run is stopped){}\n",
            all.len() - missing.len(),
            all.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; not seen: {missing:?}")
            }
        ));
    }
    text.push_str(&format!(
        "psfleet demo: the runs' journals are in {0}; try `psfleet --state-dir {0} runs`\n",
        state_dir.display()
    ));
    ctx.sink.out(&text);
    Ok(
        if sweep.exit == Exit::Interrupted || run.exit == Exit::Interrupted {
            Exit::Interrupted
        } else {
            Exit::Success
        },
    )
}

/// The sweep and the script run over the fleet.
fn demo_runs(
    fleet: &FleetHandle,
    fleet_dir: &Path,
    state_dir: &Path,
    ctx: &Context<'_>,
) -> Result<(FleetOutcome, FleetOutcome), CliError> {
    let inventory = write_inventory(fleet, fleet_dir)?;
    let admin = fleet
        .accounts()
        .iter()
        .find(|a| a.admin)
        .ok_or_else(|| CliError::Internal("the simulated fleet has no administrator".into()))?;
    // The demo's secrets: PSFLEET_PASSWORD for the administrator, one variable per other
    // account (the inventory's env: references); nothing from the process environment.
    let env = |name: &str| -> Option<OsString> {
        if name == "PSFLEET_PASSWORD" {
            return Some(admin.password.clone().into());
        }
        let account = name.strip_prefix(PASSWORD_VAR_PREFIX)?;
        fleet
            .accounts()
            .iter()
            .find(|a| env_suffix(&a.name) == account)
            .map(|a| OsString::from(a.password.clone()))
    };
    // An empty krb5.conf: the Kerberos-only hosts fail the same way on every machine
    // (no realm configured here), whatever /etc/krb5.conf says.
    let krb5 = fleet_dir.join("krb5.conf");
    std::fs::write(&krb5, "# psfleet demo: no Kerberos realm configured\n")
        .map_err(|e| CliError::io(format!("cannot write {}", krb5.display()), e))?;
    let client = |o: &mut psfleet_engine::ops::ClientOptions| {
        o.kerberos.krb5_config = Some(krb5.clone());
    };
    let plan = |p: &mut psfleet_engine::fleet::RunPlan| {
        // Short back-offs: the quota-exhausted host ends as QuotaExceeded in seconds.
        p.scheduler.retry.quota = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        p.scheduler.retry.transient = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
    };
    let sweep_tweaks = RunTweaks {
        env: Some(&env),
        client: Some(&client),
        plan: Some(&plan),
        state_dir: Some(state_dir.to_owned()),
        summary_only: true,
        details: false,
    };
    // The script run explains each bucket (message and fix) once, for both runs.
    let run_tweaks = RunTweaks {
        env: Some(&env),
        client: Some(&client),
        plan: Some(&plan),
        state_dir: Some(state_dir.to_owned()),
        summary_only: true,
        details: true,
    };
    let matches = clap::ArgMatches::default();
    let none = ConfigFile::none();
    let layers = Layers::new(&matches, &none);
    let mut conn = ConnectionSettings::resolve(&ConnectionArgs::default(), layers)?;
    conn.user = Some(Setting::default_value(admin.name.clone()));
    conn.ca_file = Some(Setting::default_value(
        fleet_dir.join(psfleet_sim::outputs::CA_PEM),
    ));
    // The Basic hosts over HTTP are there to show what such hosts answer.
    conn.allow_unencrypted = Setting::default_value(true);
    conn.connect_timeout = Setting::default_value(DEMO_CONNECT_TIMEOUT);
    let mut settings = FleetSettings::resolve(&FleetArgs::default(), layers)?;
    settings.select.inventory = Setting::default_value(vec![inventory.display().to_string()]);
    settings.timeout = Some(Setting::default_value(DEMO_TIMEOUT));
    let output = OutputSettings::resolve(&OutputArgs::default(), layers)?;

    say(
        ctx,
        "\npsfleet demo: 1/2 sweep (reachability, authentication, WinRM configuration)",
    );
    let sweep = run_fleet_with(
        RunKind::Sweep,
        "psfleet demo sweep",
        &conn,
        &settings,
        &output,
        ctx,
        &sweep_tweaks,
    )?;
    if sweep.exit == Exit::Interrupted {
        return Ok((sweep.clone(), sweep));
    }
    say(
        ctx,
        &format!("\npsfleet demo: 2/2 script run:\n{DEMO_SCRIPT}"),
    );
    let run = run_fleet_with(
        RunKind::Script(ScriptSpec::new(DEMO_SCRIPT)),
        "psfleet demo run",
        &conn,
        &settings,
        &output,
        ctx,
        &run_tweaks,
    )?;
    Ok((sweep, run))
}

/// The environment variable prefix of the demo's per-account passwords.
const PASSWORD_VAR_PREFIX: &str = "PSFLEET_DEMO_PASSWORD_";

fn env_suffix(account: &str) -> String {
    account
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The fleet account a user name (`DOMAIN\\user`, `user@REALM` or `user`) names, if any.
fn account_of<'f>(fleet: &'f FleetHandle, user: &str) -> Option<&'f str> {
    let bare = user.rsplit('\\').next().unwrap_or(user);
    let bare = bare.split('@').next().unwrap_or(bare);
    fleet
        .accounts()
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(bare))
        .map(|a| a.name.as_str())
}

/// The simulator's inventory plus a `password` column: an `env:` reference for every row
/// that names its own user (the others use PSFLEET_PASSWORD, the administrator's).
fn write_inventory(fleet: &FleetHandle, dir: &Path) -> Result<PathBuf, CliError> {
    let source = dir.join(psfleet_sim::outputs::INVENTORY_CSV);
    let text = std::fs::read_to_string(&source)
        .map_err(|e| CliError::io(format!("cannot read {}", source.display()), e))?;
    let users: std::collections::HashMap<&str, Option<&str>> = fleet
        .inventory()
        .iter()
        .map(|row| (row.name.as_str(), row.user.as_deref()))
        .collect();
    let mut out = String::with_capacity(text.len() + 64 * users.len());
    for (i, line) in text.lines().enumerate() {
        out.push_str(line);
        if i == 0 {
            out.push_str(",password\n");
            continue;
        }
        // The name is the first cell; simulator names never need quoting.
        let name = line.split(',').next().unwrap_or_default();
        let account = users
            .get(name)
            .copied()
            .flatten()
            .and_then(|user| account_of(fleet, user));
        match account {
            Some(account) => {
                out.push_str(&format!(
                    ",env:{PASSWORD_VAR_PREFIX}{}\n",
                    env_suffix(account)
                ));
            }
            None => out.push_str(",\n"),
        }
    }
    let path = dir.join("inventory-demo.csv");
    std::fs::write(&path, out)
        .map_err(|e| CliError::io(format!("cannot write {}", path.display()), e))?;
    Ok(path)
}

/// Starts the fleet on the first free /16 block from 127.20.0.1 (another demo or simulator
/// may hold one).
async fn start_fleet(mut options: FleetOptions) -> Result<FleetHandle, CliError> {
    let mut last = None;
    for block in 20u8..36 {
        options.first_address = Ipv4Addr::new(127, block, 0, 1);
        match Fleet::start(options.clone()).await {
            Ok(fleet) => return Ok(fleet),
            Err(e @ FleetError::Bind { .. }) => last = Some(e),
            Err(e @ (FleetError::Profile(_) | FleetError::TooManyDescriptors { .. })) => {
                return Err(CliError::usage(e.to_string()));
            }
            Err(e) => return Err(CliError::Internal(e.to_string())),
        }
    }
    Err(CliError::Internal(format!(
        "no free loopback block for the simulated fleet: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// The buckets of the demo's runs' records, read back from their journals.
fn buckets_seen(state_dir: &Path, runs: &[&FleetOutcome]) -> Option<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for run in runs {
        let dir = state_dir
            .join(psfleet_engine::journal::RUNS_DIR)
            .join(&run.run_id.0);
        let state = psfleet_engine::journal::Journal::replay(&dir).ok()?;
        for record in state.records() {
            if let Some(bucket) = record.bucket {
                seen.insert(bucket.name().to_owned());
            }
        }
    }
    Some(seen)
}

fn say(ctx: &Context<'_>, text: &str) {
    if !ctx.quiet() {
        ctx.sink.err(&format!("{text}\n"));
    }
}

/// A seed from the clock and the process id, for demos without `--seed`.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    psfleet_sim::rng::mix(nanos ^ (u64::from(std::process::id()) << 32))
}
