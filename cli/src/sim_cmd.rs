//! `psfleet sim`: start a simulated fleet (docs/simulator.md), write its inventory, CA,
//! accounts and stats to `--out`, and serve until Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use psfleet_sim::fleet::{Fleet, FleetError, FleetHandle, FleetOptions, FleetStats};
use psfleet_sim::outputs;
use psfleet_sim::profile::{DEFAULT_FIRST_ADDRESS, Profile, ProfileError, expected_name};

/// `psfleet sim` options.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Number of hosts.
    #[arg(long)]
    pub hosts: usize,
    /// A built-in profile (healthy, mixed, bench) or a profile TOML file.
    #[arg(long, default_value = "healthy")]
    pub profile: String,
    /// Latency added to every response, in milliseconds (overrides the profile's).
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Seed for every random choice; the same seed gives the same fleet (printed when
    /// omitted, so a run can be reproduced).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for inventory.csv, inventory.yml, ca.pem, accounts.txt and stats.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Address of the first host; the others follow it (inside 127.0.0.0/8 only).
    #[arg(long, default_value_t = DEFAULT_FIRST_ADDRESS)]
    pub first_address: Ipv4Addr,
    /// A keytab with HTTP/<host> keys from the fleet's KDC (scripts/kdc): hosts it has
    /// keys for accept Kerberos and SPNEGO-Kerberos.
    #[arg(long)]
    pub keytab: Option<PathBuf>,
}

/// Why `psfleet sim` failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The profile could not be loaded.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The fleet did not start or stop cleanly.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The runtime or the signal handlers could not be set up.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Runs `psfleet sim` to completion; the exit code is 0 after a clean stop, 1 on errors.
pub fn main(args: SimArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&SimError::Runtime(error)),
    };
    let result = runtime.block_on(async {
        let stop = stop_signal().map_err(SimError::Runtime)?;
        serve(args, stop, &mut std::io::stdout()).await
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// Starts the fleet, prints what it started, serves until `stop` resolves, then shuts
/// down and writes the final stats.
pub async fn serve(
    args: SimArgs,
    stop: impl Future<Output = ()>,
    out: &mut impl std::io::Write,
) -> Result<FleetStats, SimError> {
    let profile = Profile::load(&args.profile)?;
    let seed = args.seed.unwrap_or_else(random_seed);
    let mut options = FleetOptions::new(profile.clone(), args.hosts, seed);
    options.latency = args.latency_ms.map(Duration::from_millis);
    options.out_dir = Some(args.out.clone());
    options.first_address = args.first_address;
    options.keytab = args.keytab.clone();
    let fleet = Fleet::start(options).await?;
    // Console output is best effort: a closed stdout must not stop the fleet.
    let _ = print_started(out, &profile, &fleet, seed, &args);
    stop.await;
    let _ = writeln!(out, "psfleet sim: stopping");
    let stats = fleet.shutdown().await?;
    let _ = writeln!(
        out,
        "psfleet sim: stopped after {:.1} s: {} requests, {} authentications, {} authentication failures, {} shells created, {} left open; {}",
        stats.uptime_seconds,
        stats.totals.requests,
        stats.totals.authentications,
        stats.totals.auth_failures,
        stats.service_totals.shells_created,
        stats.service_totals.shells_open,
        args.out.join(outputs::STATS).display()
    );
    Ok(stats)
}

fn print_started(
    out: &mut impl std::io::Write,
    profile: &Profile,
    fleet: &FleetHandle,
    seed: u64,
    args: &SimArgs,
) -> std::io::Result<()> {
    let startup = fleet.startup();
    writeln!(
        out,
        "psfleet sim: profile {} ({}), seed {seed}",
        profile.name, profile.description
    )?;
    writeln!(out, "psfleet sim: {startup}")?;
    let addresses = fleet.addresses();
    if let (Some(first), Some(last)) = (addresses.first(), addresses.last()) {
        writeln!(out, "psfleet sim: addresses {first} .. {last}")?;
    }
    let mut classes: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for host in fleet.hosts() {
        let entry = classes
            .entry(host.spec.class.as_str())
            .or_insert((0, expected_name(host.spec.expected)));
        entry.0 += 1;
    }
    for (class, (count, expected)) in classes {
        writeln!(out, "  {class:<24} {count:>6}  expected {expected}")?;
    }
    let names: Vec<String> = fleet
        .accounts()
        .iter()
        .map(|a| {
            if a.admin {
                format!("{} (admin)", a.name)
            } else {
                a.name.clone()
            }
        })
        .collect();
    writeln!(
        out,
        "psfleet sim: accounts {}; passwords in {}",
        names.join(", "),
        args.out.join(outputs::ACCOUNTS).display()
    )?;
    writeln!(
        out,
        "psfleet sim: wrote {}, {}, {}; stats refresh every second in {}",
        args.out.join(outputs::INVENTORY_CSV).display(),
        args.out.join(outputs::INVENTORY_YAML).display(),
        args.out.join(outputs::CA_PEM).display(),
        args.out.join(outputs::STATS).display()
    )?;
    writeln!(out, "psfleet sim: running; Ctrl-C or SIGTERM stops it")?;
    out.flush()
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// A seed from the clock and the process id, for runs without `--seed`.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    psfleet_sim::rng::mix(nanos ^ (u64::from(std::process::id()) << 32))
}

fn fail(error: &SimError) -> ExitCode {
    eprintln!("psfleet sim: error: {error}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serve_writes_the_outputs_and_stops_cleanly() {
        let dir = std::env::temp_dir().join(format!("psfleet-sim-cmd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let args = SimArgs {
            hosts: 30,
            profile: "mixed".into(),
            latency_ms: Some(5),
            seed: Some(77),
            out: dir.clone(),
            first_address: Ipv4Addr::new(127, 79, 0, 1),
            keytab: None,
        };
        let mut printed = Vec::new();
        let stats = serve(args, async {}, &mut printed).await.unwrap();
        assert!(stats.final_snapshot);
        assert_eq!(stats.host_count, 30);
        let text = String::from_utf8(printed).unwrap();
        assert!(text.contains("profile mixed"), "{text}");
        assert!(text.contains("seed 77"), "{text}");
        assert!(text.contains("started 30 hosts"), "{text}");
        assert!(text.contains("expected InvalidCertificate"), "{text}");
        // Passwords are never printed.
        let accounts = std::fs::read_to_string(dir.join("accounts.txt")).unwrap();
        for line in accounts.lines().skip(1) {
            let password = line.split(' ').nth(1).unwrap();
            assert!(!text.contains(password));
        }
        for file in ["inventory.csv", "inventory.yml", "ca.pem", "stats.json"] {
            assert!(dir.join(file).exists(), "{file}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn profile_errors_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("psfleet-sim-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[[class]]\nname = 'a'\ncount = 1\nlatency = 5\n").unwrap();
        let args = SimArgs {
            hosts: 1,
            profile: file.to_string_lossy().into_owned(),
            latency_ms: None,
            seed: Some(1),
            out: dir.join("out"),
            first_address: Ipv4Addr::new(127, 79, 1, 1),
            keytab: None,
        };
        let error = serve(args, async {}, &mut Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("{}:4:", file.display())),
            "{error}"
        );
        assert!(error.contains("latency"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
