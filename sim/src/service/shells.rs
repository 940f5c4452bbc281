//! The shell table of one host: ids, ownership, idle expiry, the per-user quotas and the
//! operations in flight (MS-WSMV 3.1.4.5.2.1 quotas; wire-facts 1.10, 1.12, 2.4, 2.5).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use psfleet_core::wsman::{EnvironmentVariable, ShellInfo, ShellState, resources};
use uuid::Uuid;

use super::counters::{Counts, HostCounters};
use super::psrp::PsrpShell;
use super::winrs::CmdShell;
use crate::host::HostSpec;

/// Longest a waiting operation is remembered after its deadline, in case the network layer
/// dropped it without calling back (the client went away).
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

/// Shells one host keeps, whatever its quotas say (Server 2016's MaxShellsPerUser is
/// 2147483647): the simulator's own bound on memory per host.
pub(super) const MAX_SHELLS_PER_HOST: usize = 4096;

/// Enumeration contexts kept for Pull; older ones are forgotten.
const MAX_ENUMERATIONS: usize = 64;

/// Everything the service knows about one host, behind its one mutex.
#[derive(Debug)]
pub(super) struct HostState {
    pub ids: IdSource,
    pub shells: BTreeMap<Uuid, Shell>,
    /// Receives waiting for output, by request MessageID (MaxConcurrentOperationsPerUser).
    pub in_flight: HashMap<Uuid, InFlight>,
    pub counters: HostCounters,
    /// Items still to Pull, by enumeration context, oldest first.
    pub enumerations: Vec<(String, Vec<psfleet_core::wsman::EnumerationItem>)>,
}

/// A request that is waiting (a Receive held open until output or OperationTimeout).
#[derive(Debug, Clone)]
pub(super) struct InFlight {
    pub user: String,
    pub shell: Option<Uuid>,
    pub deadline: Duration,
}

/// One shell.
#[derive(Debug)]
pub(super) struct Shell {
    pub id: Uuid,
    /// Canonical account name of the creator; only it may use the shell.
    pub owner: String,
    /// The resource URI it was created with; every later operation must use it
    /// (wire-facts 1.12).
    pub resource_uri: String,
    pub created_at: Duration,
    pub last_activity: Duration,
    pub idle_timeout: Duration,
    pub state: ShellState,
    pub process_id: u32,
    pub input_streams: Vec<String>,
    pub output_streams: Vec<String>,
    pub environment: Vec<EnvironmentVariable>,
    pub working_directory: Option<String>,
    pub kind: ShellKind,
}

/// What runs in a shell.
#[derive(Debug)]
pub(super) enum ShellKind {
    /// WinRS cmd.
    Cmd(CmdShell),
    /// A PowerShell runspace pool.
    Psrp(Box<PsrpShell>),
}

/// Deterministic ids: a counter mixed with a seed derived from the host's name and address,
/// so that two runs of the same fleet hand out the same ShellIds, CommandIds and MessageIDs
/// while different hosts do not collide.
#[derive(Debug, Clone)]
pub(super) struct IdSource {
    seed: u64,
    counter: u64,
}

impl IdSource {
    /// The id source of `host`.
    pub(super) fn new(host: &HostSpec) -> Self {
        // FNV-1a over the name and the address.
        let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in host.name.bytes().chain(host.address.octets()) {
            seed ^= u64::from(byte);
            seed = seed.wrapping_mul(0x0100_0000_01b3);
        }
        Self { seed, counter: 0 }
    }

    /// The next GUID (version 4 layout, as Windows' random GUIDs have).
    pub(super) fn next_id(&mut self) -> Uuid {
        self.counter = self.counter.wrapping_add(1);
        let high = splitmix64(self.seed ^ self.counter);
        let low = splitmix64(high ^ self.counter.rotate_left(32));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&high.to_be_bytes());
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// A plausible process id for a plugin host (`rsp:ProcessId`, a multiple of 4).
    pub(super) fn process_id(&mut self) -> u32 {
        self.counter = self.counter.wrapping_add(1);
        let n = splitmix64(self.seed ^ self.counter);
        ((n % 16_000) as u32 + 500) * 4
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A quota the request would exceed (wire-facts 1.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QuotaExceeded {
    /// MaxConcurrentUsers (winrs).
    Users(u32),
    /// MaxShellsPerUser (winrs).
    ShellsPerUser(u32),
    /// MaxConcurrentOperationsPerUser (service).
    OperationsPerUser(u32),
    /// The simulator's per-host bound ([`MAX_SHELLS_PER_HOST`]).
    System,
}

impl HostState {
    /// The state of a host with no shells.
    pub(super) fn new(host: &HostSpec) -> Self {
        Self {
            ids: IdSource::new(host),
            shells: BTreeMap::new(),
            in_flight: HashMap::new(),
            counters: HostCounters::new(&host.name),
            enumerations: Vec::new(),
        }
    }

    /// Drops shells idle for longer than their IdleTimeout (they count as expired) and
    /// forgets waiting operations the network layer abandoned. A shell with a Receive
    /// waiting on it is not idle.
    pub(super) fn sweep(&mut self, now: Duration) {
        self.in_flight
            .retain(|_, op| op.deadline.saturating_add(IN_FLIGHT_GRACE) >= now);
        let busy: Vec<Uuid> = self.in_flight.values().filter_map(|op| op.shell).collect();
        let expired: Vec<(Uuid, String)> = self
            .shells
            .values()
            .filter(|s| {
                !busy.contains(&s.id) && now.saturating_sub(s.last_activity) > s.idle_timeout
            })
            .map(|s| (s.id, s.owner.clone()))
            .collect();
        for (id, owner) in expired {
            self.shells.remove(&id);
            self.counters.record(&owner, |c| c.shell_closed(true));
        }
    }

    /// Whether `user` may open one more shell: MaxConcurrentUsers, then MaxShellsPerUser.
    pub(super) fn check_new_shell(&self, host: &HostSpec, user: &str) -> Result<(), QuotaExceeded> {
        if self.shells.len() >= MAX_SHELLS_PER_HOST {
            return Err(QuotaExceeded::System);
        }
        let winrs = host.winrm.winrs.as_ref();
        let mine = self.shells.values().filter(|s| s.owner == user).count();
        if let Some(max) = winrs.and_then(|w| w.max_concurrent_users)
            && mine == 0
        {
            let mut users: Vec<&str> = self.shells.values().map(|s| s.owner.as_str()).collect();
            users.sort_unstable();
            users.dedup();
            if users.len() >= max as usize {
                return Err(QuotaExceeded::Users(max));
            }
        }
        if let Some(max) = winrs.and_then(|w| w.max_shells_per_user)
            && mine >= max as usize
        {
            return Err(QuotaExceeded::ShellsPerUser(max));
        }
        Ok(())
    }

    /// Whether one more operation of `user` may start, `message_id` not counted (it may be
    /// the same Receive calling back).
    pub(super) fn check_operation(
        &self,
        host: &HostSpec,
        user: &str,
        message_id: Uuid,
    ) -> Result<(), QuotaExceeded> {
        if self.in_flight.contains_key(&message_id) {
            return Ok(());
        }
        let Some(max) = host
            .winrm
            .service
            .as_ref()
            .and_then(|s| s.max_concurrent_operations_per_user)
        else {
            return Ok(());
        };
        let waiting = self.in_flight.values().filter(|op| op.user == user).count();
        if waiting.saturating_add(1) > max as usize {
            return Err(QuotaExceeded::OperationsPerUser(max));
        }
        Ok(())
    }

    /// Adds a shell and counts it.
    pub(super) fn insert(&mut self, shell: Shell) {
        self.counters.record(&shell.owner, Counts::shell_opened);
        self.shells.insert(shell.id, shell);
    }

    /// Removes a shell the client deleted.
    pub(super) fn delete(&mut self, id: Uuid) {
        if let Some(shell) = self.shells.remove(&id) {
            self.counters
                .record(&shell.owner, |c| c.shell_closed(false));
        }
        self.in_flight.retain(|_, op| op.shell != Some(id));
    }

    /// Keeps the items of an enumeration for Pull and returns its context.
    pub(super) fn keep_enumeration(
        &mut self,
        items: Vec<psfleet_core::wsman::EnumerationItem>,
    ) -> String {
        let context = format!("uuid:{}", psfleet_core::ids::upper(&self.ids.next_id()));
        if self.enumerations.len() >= MAX_ENUMERATIONS {
            self.enumerations.remove(0);
        }
        self.enumerations.push((context.clone(), items));
        context
    }
}

impl Shell {
    /// Whether this is a PowerShell shell.
    pub(super) fn is_psrp(&self) -> bool {
        matches!(self.kind, ShellKind::Psrp(_))
    }

    /// The shell as Windows describes it: the CreateResponse fields, plus MemoryUsed and
    /// ChildProcesses for a Get or Enumerate (`detailed`). cmd shells omit the PSRP-only
    /// fields (R:test_winrs_standard vs R:test_psrp_open_runspace); Windows does not echo
    /// a shell's Name or Lifetime (R:test_winrs_extra_opts).
    pub(super) fn info(&self, host: &HostSpec, now: Duration, detailed: bool) -> ShellInfo {
        let owner = if self.is_psrp() && !self.owner.contains('\\') {
            format!("{}\\{}", host.os.computer_name, self.owner)
        } else {
            self.owner.clone()
        };
        let psrp = self.is_psrp();
        ShellInfo {
            shell_id: Some(self.id),
            resource_uri: Some(self.resource_uri.clone()),
            owner: Some(owner),
            // The simulator listens on loopback only, so every client is local.
            client_ip: Some("127.0.0.1".to_owned()),
            process_id: psrp.then_some(self.process_id),
            environment: self.environment.clone(),
            working_directory: self.working_directory.clone(),
            idle_timeout: Some(self.idle_timeout),
            input_streams: Some(self.input_streams.clone()),
            output_streams: Some(self.output_streams.clone()),
            max_idle_timeout: psrp.then_some(Duration::from_millis(2_147_483_647)),
            locale: psrp.then(|| "en-US".to_owned()),
            data_locale: psrp.then(|| "en-US".to_owned()),
            compression_mode: psrp.then(|| "NoCompression".to_owned()),
            profile_loaded: psrp.then_some(true),
            encoding: psrp.then(|| "UTF8".to_owned()),
            buffer_mode: psrp.then(|| "Block".to_owned()),
            state: (psrp || detailed).then(|| self.state.clone()),
            shell_run_time: Some(whole_seconds(now.saturating_sub(self.created_at))),
            shell_inactivity: Some(whole_seconds(now.saturating_sub(self.last_activity))),
            memory_used: detailed.then(|| "46MB".to_owned()),
            child_processes: detailed.then_some(0),
            name: None,
            lifetime: None,
        }
    }
}

/// Whether `uri` names the same resource as `shell_uri` (Windows compares URIs
/// case-insensitively).
pub(super) fn same_resource(uri: &str, shell_uri: &str) -> bool {
    uri.trim().eq_ignore_ascii_case(shell_uri)
}

/// What a Create's resource URI asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// The WinRS cmd shell.
    Cmd,
    /// A registered PowerShell session configuration (its registered spelling).
    Psrp(String),
    /// Nothing this host has registered.
    Unknown,
}

/// Resolves a Create's resource URI against the host's registered configurations
/// (wire-facts 1.9).
pub(super) fn target(host: &HostSpec, uri: &str) -> Target {
    let uri = uri.trim();
    if uri.eq_ignore_ascii_case(resources::CMD_SHELL) {
        return Target::Cmd;
    }
    let prefix_len = resources::POWERSHELL_PREFIX.len();
    match (uri.get(..prefix_len), uri.get(prefix_len..)) {
        (Some(prefix), Some(name)) if prefix.eq_ignore_ascii_case(resources::POWERSHELL_PREFIX) => {
            host.configurations
                .iter()
                .find(|c| c.eq_ignore_ascii_case(name))
                .map_or(Target::Unknown, |c| Target::Psrp(c.clone()))
        }
        _ => Target::Unknown,
    }
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
