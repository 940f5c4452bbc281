//! Starting and stopping a simulated fleet: plan the hosts from a profile, bind each
//! host's listeners on its own 127.x.y.z address (never anything outside 127.0.0.0/8),
//! serve them on the current tokio runtime, write the output files, and on shutdown the
//! final `stats.json`.
//!
//! Start-up is built for 10,000 hosts in well under five seconds: listeners are bound with
//! plain sockets in one pass, each gets one accept task, and a host's WS-Man service and
//! TLS certificate are only made when a client first needs them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth_kerberos::Keytab;
use crate::host::Account;
use crate::outputs::{self, OutputError};
use crate::profile::{
    DEFAULT_FIRST_ADDRESS, InventoryRow, PlanOptions, Profile, ProfileError, default_accounts,
};
use crate::rng::mix;
use crate::server::{HostRuntime, Shared, run_listener};
use crate::service::{FleetCounters, HostCounters};
use crate::stats::{ConnectionLog, ConnectionLogSnapshot, HostStatsSnapshot};
use crate::tls::{ClientCertificate, SimCa, TlsError};

/// Descriptors kept free for everything that is not a listener (clients in the same
/// process, files, the runtime).
pub const DESCRIPTOR_RESERVE: u64 = 512;

/// How often `stats.json` is refreshed while the fleet runs.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// What to start.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The profile.
    pub profile: Profile,
    /// Number of hosts.
    pub hosts: usize,
    /// Overrides every class's latency.
    pub latency: Option<Duration>,
    /// The seed of every random choice (placement, passwords, host data, draws).
    pub seed: u64,
    /// Where the output files go (`None`: write nothing).
    pub out_dir: Option<PathBuf>,
    /// The first host's address (default 127.20.0.1).
    pub first_address: Ipv4Addr,
    /// A keytab with `HTTP/<host name>` keys (from the fleet's KDC, `scripts/kdc`):
    /// Kerberos and SPNEGO-Kerberos are accepted for the hosts it has keys for.
    pub keytab: Option<PathBuf>,
}

impl FleetOptions {
    /// Options for `hosts` hosts of `profile` with the default address and no outputs.
    pub fn new(profile: Profile, hosts: usize, seed: u64) -> Self {
        Self {
            profile,
            hosts,
            latency: None,
            seed,
            out_dir: None,
            first_address: DEFAULT_FIRST_ADDRESS,
            keytab: None,
        }
    }
}

/// Why a fleet did not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The profile cannot produce this fleet.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The CA could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The process may not open enough descriptors.
    #[error(
        "the fleet needs about {needed} file descriptors but the limit is {limit}; use fewer hosts or profile classes with one listener, or raise the hard limit (ulimit -Hn)"
    )]
    TooManyDescriptors {
        /// Descriptors needed.
        needed: u64,
        /// The limit after raising the soft limit to the hard one.
        limit: u64,
    },
    /// An output file could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The keytab could not be read.
    #[error("keytab {path}: {source}")]
    Keytab {
        /// The keytab file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: crate::auth_kerberos::KeytabError,
    },
}

/// What start-up took.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StartupReport {
    /// Hosts started.
    pub hosts: usize,
    /// Listening sockets bound.
    pub listeners: usize,
    /// Wall time from the call to ready.
    pub elapsed: Duration,
    /// Resident memory after start-up, in KiB (`VmRSS`), when readable.
    pub rss_kib: Option<u64>,
    /// The descriptor limit in effect.
    pub descriptor_limit: u64,
}

impl std::fmt::Display for StartupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "started {} hosts ({} listeners) in {:.3} s",
            self.hosts,
            self.listeners,
            self.elapsed.as_secs_f64()
        )?;
        match self.rss_kib {
            Some(kib) => write!(f, ", RSS {:.1} MiB", kib as f64 / 1024.0),
            None => write!(f, ", RSS unknown"),
        }
    }
}

/// The fleet's counters at one moment (the content of `stats.json`).
#[derive(Debug, Clone, Serialize)]
pub struct FleetStats {
    /// The profile name.
    pub profile: String,
    /// The seed.
    pub seed: u64,
    /// Seconds since start-up.
    pub uptime_seconds: f64,
    /// True in the file written on shutdown.
    pub final_snapshot: bool,
    /// Number of hosts.
    pub host_count: usize,
    /// Network-layer totals over all hosts.
    pub totals: HostStatsSnapshot,
    /// WS-Man service totals (shells open, created, deleted, expired, script and cmd
    /// executions, quota faults, highest concurrency) over the hosts whose service ran.
    pub service_totals: FleetCounters,
    /// Hosts with any activity, in host order.
    pub hosts: Vec<HostStatsEntry>,
}

/// One host's counters in [`FleetStats`].
#[derive(Debug, Clone, Serialize)]
pub struct HostStatsEntry {
    /// Host name.
    pub name: String,
    /// Address.
    pub address: Ipv4Addr,
    /// Profile class.
    pub class: String,
    /// Network-layer counters.
    pub network: HostStatsSnapshot,
    /// The WS-Man service's counters (per user too), when a request reached it.
    pub service: Option<HostCounters>,
}

/// Entry point: `Fleet::start`.
#[derive(Debug)]
pub struct Fleet;

/// A running fleet. Dropping it without [`FleetHandle::shutdown`] stops the listeners
/// but writes no final stats.
#[derive(Debug)]
pub struct FleetHandle {
    hosts: Vec<Arc<HostRuntime>>,
    rows: Vec<InventoryRow>,
    accounts: Vec<Account>,
    client_certificates: Vec<(String, ClientCertificate)>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    stats_task: Option<JoinHandle<()>>,
    /// Listeners of unreachable hosts, kept open (never accepted from).
    _parked: Vec<TcpListener>,
    /// The connections that keep those listeners' accept queues full.
    _fillers: Vec<std::net::TcpStream>,
    profile: String,
    seed: u64,
    out_dir: Option<PathBuf>,
    startup: StartupReport,
}

impl Fleet {
    /// Plans and starts a fleet on the current tokio runtime.
    pub async fn start(options: FleetOptions) -> Result<FleetHandle, FleetError> {
        let began = Instant::now();
        if !options.first_address.is_loopback() {
            return Err(FleetError::Profile(ProfileError::Plan {
                profile: options.profile.name.clone(),
                message: format!(
                    "first address {} is outside 127.0.0.0/8; the simulator binds loopback addresses only",
                    options.first_address
                ),
            }));
        }
        let accounts = default_accounts(options.seed);
        let plan = options.profile.plan(&PlanOptions {
            hosts: options.hosts,
            seed: options.seed,
            first_address: options.first_address,
            latency: options.latency,
            accounts: &accounts,
        })?;

        // Descriptors: one per listener, two per filler connection (both ends live here).
        let listeners: u64 = plan
            .iter()
            .map(|h| {
                let n = u64::from(h.spec.network.http_port.is_some())
                    + u64::from(h.spec.network.https_port.is_some());
                if h.extra.unreachable { n * 3 } else { n }
            })
            .sum();
        let needed = listeners + DESCRIPTOR_RESERVE;
        let limit = raise_descriptor_limit(needed);
        if needed > limit {
            return Err(FleetError::TooManyDescriptors { needed, limit });
        }

        let keytab = match &options.keytab {
            Some(path) => Some(Arc::new(Keytab::read(path).map_err(|source| {
                FleetError::Keytab {
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let ca = Arc::new(SimCa::new()?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            start: Instant::now(),
            ca,
            shutdown: shutdown_rx,
            keytab,
            connections: Arc::new(ConnectionLog::default()),
        });

        let mut hosts = Vec::with_capacity(plan.len());
        let mut rows = Vec::with_capacity(plan.len());
        let mut tasks = Vec::with_capacity(plan.len());
        let mut parked = Vec::new();
        let mut fillers = Vec::new();
        let mut bound = 0usize;
        for planned in plan {
            let address = planned.spec.address;
            let ports: Vec<(u16, bool)> = [
                planned.spec.network.http_port.map(|p| (p, false)),
                planned.spec.network.https_port.map(|p| (p, true)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let seed = mix(options.seed ^ mix(planned.index as u64 + 0x5EED));
            let host = Arc::new(HostRuntime::new(planned.spec, planned.extra, seed));
            for (port, tls) in ports {
                let addr = SocketAddrV4::new(address, port);
                if host.extra.unreachable {
                    let (listener, filler) = bind_unreachable(addr)?;
                    parked.push(listener);
                    fillers.push(filler);
                } else {
                    let listener = bind(addr)?;
                    tasks.push(tokio::spawn(run_listener(
                        listener,
                        Arc::clone(&host),
                        Arc::clone(&shared),
                        tls,
                    )));
                }
                bound += 1;
            }
            rows.push(planned.row);
            hosts.push(host);
        }

        let client_certificates = accounts
            .iter()
            .map(|a| Ok((a.name.clone(), shared.ca.client_certificate(&a.name)?)))
            .collect::<Result<Vec<_>, TlsError>>()?;
        if let Some(dir) = &options.out_dir {
            outputs::write_startup_files(dir, &rows, shared.ca.pem(), &accounts)?;
            outputs::write_client_certificates(dir, &client_certificates)?;
        }
        let startup = StartupReport {
            hosts: hosts.len(),
            listeners: bound,
            elapsed: began.elapsed(),
            rss_kib: resident_kib(),
            descriptor_limit: limit,
        };
        let mut handle = FleetHandle {
            hosts,
            rows,
            accounts,
            client_certificates,
            shared,
            shutdown,
            tasks,
            stats_task: None,
            _parked: parked,
            _fillers: fillers,
            profile: options.profile.name.clone(),
            seed: options.seed,
            out_dir: options.out_dir.clone(),
            startup,
        };
        if let Some(dir) = options.out_dir {
            handle.write_stats(false)?;
            handle.stats_task = Some(handle.spawn_stats_refresh(dir));
        }
        Ok(handle)
    }
}

impl FleetHandle {
    /// What start-up took.
    pub fn startup(&self) -> &StartupReport {
        &self.startup
    }

    /// Every host's address, in host order.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        self.hosts.iter().map(|h| h.spec.address).collect()
    }

    /// The running hosts.
    pub fn hosts(&self) -> &[Arc<HostRuntime>] {
        &self.hosts
    }

    /// The first host of a profile class.
    pub fn host_of_class(&self, class: &str) -> Option<&Arc<HostRuntime>> {
        self.hosts.iter().find(|h| h.spec.class == class)
    }

    /// The inventory rows, in host order.
    pub fn inventory(&self) -> &[InventoryRow] {
        &self.rows
    }

    /// The simulator CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        self.shared.ca.pem()
    }

    /// The simulator CA (to issue further client certificates, for example).
    pub fn ca(&self) -> &SimCa {
        &self.shared.ca
    }

    /// The simulator CA certificate (DER).
    pub fn ca_der(&self) -> &rustls_pki_types::CertificateDer<'static> {
        self.shared.ca.der()
    }

    /// The fleet's accounts (names, passwords, admin flags).
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// The client certificate of `account` (issued by the CA, UPN `account@fleet.test`),
    /// for hosts that accept certificate authentication.
    pub fn client_certificate(&self, account: &str) -> Option<&ClientCertificate> {
        self.client_certificates
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(account))
            .map(|(_, c)| c)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FleetStats {
        snapshot(
            &self.hosts,
            &self.profile,
            self.seed,
            self.shared.start,
            false,
        )
    }

    /// Every TCP connection accepted so far, fleet-wide, with the time since start-up at
    /// which the kernel completed its handshake (ascending; bounded, see
    /// [`crate::stats::CONNECTION_LOG_CAP`]).
    pub fn connection_log(&self) -> ConnectionLogSnapshot {
        self.shared.connections.snapshot(self.shared.start)
    }

    /// Stops every listener and connection, then writes the final `stats.json`.
    pub async fn shutdown(mut self) -> Result<FleetStats, FleetError> {
        // Receivers live in every task; an error only means none is left.
        let _ = self.shutdown.send(true);
        if let Some(task) = self.stats_task.take() {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        // Give connection tasks a moment to see the signal and close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = snapshot(
            &self.hosts,
            &self.profile,
            self.seed,
            self.shared.start,
            true,
        );
        self.write_stats(true)?;
        Ok(stats)
    }

    fn write_stats(&self, final_snapshot: bool) -> Result<(), FleetError> {
        let Some(dir) = &self.out_dir else {
            return Ok(());
        };
        let stats = snapshot(
            &self.hosts,
            &self.profile,
            self.seed,
            self.shared.start,
            final_snapshot,
        );
        write_stats_file(dir, &stats)?;
        Ok(())
    }

    fn spawn_stats_refresh(&self, dir: PathBuf) -> JoinHandle<()> {
        let hosts = self.hosts.clone();
        let profile = self.profile.clone();
        let seed = self.seed;
        let start = self.shared.start;
        let mut shutdown = self.shared.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                let stats = snapshot(&hosts, &profile, seed, start, false);
                if let Err(error) = write_stats_file(&dir, &stats) {
                    tracing::warn!(%error, "cannot refresh stats.json");
                }
            }
        })
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
        if let Some(task) = &self.stats_task {
            task.abort();
        }
    }
}

fn snapshot(
    hosts: &[Arc<HostRuntime>],
    profile: &str,
    seed: u64,
    start: Instant,
    final_snapshot: bool,
) -> FleetStats {
    let mut totals = HostStatsSnapshot::default();
    let mut entries = Vec::new();
    let now = start.elapsed();
    for host in hosts {
        let network = host.stats.snapshot();
        totals.add(&network);
        // Shells idle past their IdleTimeout are dropped first, as the next request
        // would find them gone.
        let service = host.started_service().map(|s| s.counters_at(now));
        if !network.is_zero() || service.is_some() {
            entries.push(HostStatsEntry {
                name: host.spec.name.clone(),
                address: host.spec.address,
                class: host.spec.class.clone(),
                network,
                service,
            });
        }
    }
    let service_totals = FleetCounters::sum(entries.iter().filter_map(|e| e.service.as_ref()));
    FleetStats {
        profile: profile.to_owned(),
        seed,
        uptime_seconds: now.as_secs_f64(),
        final_snapshot,
        host_count: hosts.len(),
        totals,
        service_totals,
        hosts: entries,
    }
}

fn write_stats_file(dir: &std::path::Path, stats: &FleetStats) -> Result<(), OutputError> {
    let mut bytes = serde_json::to_vec_pretty(stats).unwrap_or_default();
    bytes.push(b'\n');
    outputs::write_atomic(&dir.join(outputs::STATS), &bytes, 0o644)
}

/// Binds a listener on a loopback address.
fn bind(addr: SocketAddrV4) -> Result<TcpListener, FleetError> {
    let bind_error = |source: std::io::Error| FleetError::Bind {
        addr: SocketAddr::V4(addr),
        hint: if source.kind() == std::io::ErrorKind::AddrInUse {
            " (another fleet on these addresses? pick another --first-address)"
        } else {
            ""
        },
        source,
    };
    if !addr.ip().is_loopback() {
        return Err(bind_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the simulator binds 127.0.0.0/8 addresses only",
        )));
    }
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    TcpListener::from_std(listener).map_err(bind_error)
}

/// Binds a listener with an accept queue of one and fills it, so later connection
/// attempts get no SYN-ACK and time out (Linux drops SYNs to a listener whose accept queue
/// is full): an unreachable or filtered host, on loopback.
fn bind_unreachable(addr: SocketAddrV4) -> Result<(TcpListener, std::net::TcpStream), FleetError> {
    let bind_error = |source: std::io::Error| FleetError::Bind {
        addr: SocketAddr::V4(addr),
        hint: "",
        source,
    };
    if !addr.ip().is_loopback() {
        return Err(bind_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the simulator binds 127.0.0.0/8 addresses only",
        )));
    }
    let socket = TcpSocket::new_v4().map_err(bind_error)?;
    socket.set_reuseaddr(true).map_err(bind_error)?;
    socket.bind(SocketAddr::V4(addr)).map_err(bind_error)?;
    let listener = socket.listen(0).map_err(bind_error)?;
    let filler =
        std::net::TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_secs(1))
            .map_err(bind_error)?;
    Ok((listener, filler))
}

pub use psfleet_engine::limits::raise_descriptor_limit;

/// The process's resident set size in KiB, from `/proc/self/status` (`VmRSS`).
pub fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_descriptor_limit_are_readable() {
        assert!(resident_kib().is_some_and(|k| k > 0));
        assert!(raise_descriptor_limit(100) >= 100);
    }

    #[tokio::test]
    async fn refuses_addresses_outside_loopback() {
        let profile = Profile::load("healthy").unwrap();
        let mut options = FleetOptions::new(profile, 1, 1);
        options.first_address = Ipv4Addr::new(10, 1, 2, 3);
        let error = Fleet::start(options).await.unwrap_err().to_string();
        assert!(error.contains("127.0.0.0/8"), "{error}");
        assert!(bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).is_err());
    }
}
