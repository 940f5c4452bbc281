//! Counters a simulated host keeps for tests and for `stats.json`: shells opened and closed per
//! user, the most shells a user (and the host) ever had open at once, executions and quota
//! faults. Tests use them to prove that a run leaks no shells and never exceeds a quota
//! (issue 3 item 5); the network layer adds requests and authentication failures.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counts for one user on one host, or summed over a host's users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Shells open now.
    pub shells_open: u64,
    /// The most shells open at the same time so far.
    pub max_concurrent_shells: u64,
    /// Shells created.
    pub shells_created: u64,
    /// Shells deleted by a client (WS-Transfer Delete).
    pub shells_deleted: u64,
    /// Shells dropped by the service after IdleTimeout (a client leaked them).
    pub shells_expired: u64,
    /// PowerShell pipelines run (PSRP CREATE_PIPELINE executed).
    pub script_executions: u64,
    /// WinRS cmd commands run.
    pub cmd_executions: u64,
    /// Quota faults returned (MaxShellsPerUser, MaxConcurrentUsers,
    /// MaxConcurrentOperationsPerUser).
    pub quota_faults: u64,
}

impl Counts {
    /// A shell was opened: bumps the open count and its high-water mark.
    pub(super) fn shell_opened(&mut self) {
        self.shells_created += 1;
        self.shells_open += 1;
        self.max_concurrent_shells = self.max_concurrent_shells.max(self.shells_open);
    }

    /// A shell was closed by the client (`expired` false) or by IdleTimeout.
    pub(super) fn shell_closed(&mut self, expired: bool) {
        self.shells_open = self.shells_open.saturating_sub(1);
        if expired {
            self.shells_expired += 1;
        } else {
            self.shells_deleted += 1;
        }
    }
}

/// The counters of one host: its totals and one entry per user that ever opened a shell or
/// met a quota. `totals.max_concurrent_shells` is the host's own high-water mark (all users
/// together), not a sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostCounters {
    /// The host name (`HostSpec::name`).
    pub host: String,
    /// All users together.
    pub totals: Counts,
    /// Per canonical account name.
    pub users: BTreeMap<String, Counts>,
}

impl HostCounters {
    /// Counts for `host` with nothing recorded.
    pub(super) fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            ..Self::default()
        }
    }

    /// Applies `change` to the user's counts and to the totals.
    pub(super) fn record(&mut self, user: &str, change: impl Fn(&mut Counts)) {
        change(&mut self.totals);
        // Bounded: users are the host's accounts (authenticated before reaching the service).
        change(self.users.entry(user.to_owned()).or_default());
    }
}

/// Fleet-wide sums over many hosts (for `stats.json` and end-to-end tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FleetCounters {
    /// Hosts summed.
    pub hosts: u64,
    /// Shells open now, all hosts.
    pub shells_open: u64,
    /// Shells created, all hosts.
    pub shells_created: u64,
    /// Shells deleted by clients, all hosts.
    pub shells_deleted: u64,
    /// Shells dropped after IdleTimeout, all hosts.
    pub shells_expired: u64,
    /// PowerShell pipelines run, all hosts.
    pub script_executions: u64,
    /// cmd commands run, all hosts.
    pub cmd_executions: u64,
    /// Quota faults returned, all hosts.
    pub quota_faults: u64,
    /// The highest number of shells one host had open at once.
    pub max_concurrent_shells_per_host: u64,
    /// The highest number of shells one user had open at once on one host (compare with
    /// MaxShellsPerUser).
    pub max_concurrent_shells_per_user: u64,
}

impl FleetCounters {
    /// Sums the counters of many hosts.
    pub fn sum<'a>(hosts: impl IntoIterator<Item = &'a HostCounters>) -> Self {
        let mut out = Self::default();
        for host in hosts {
            let t = &host.totals;
            out.hosts += 1;
            out.shells_open += t.shells_open;
            out.shells_created += t.shells_created;
            out.shells_deleted += t.shells_deleted;
            out.shells_expired += t.shells_expired;
            out.script_executions += t.script_executions;
            out.cmd_executions += t.cmd_executions;
            out.quota_faults += t.quota_faults;
            out.max_concurrent_shells_per_host = out
                .max_concurrent_shells_per_host
                .max(t.max_concurrent_shells);
            for user in host.users.values() {
                out.max_concurrent_shells_per_user = out
                    .max_concurrent_shells_per_user
                    .max(user.max_concurrent_shells);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_water_marks_survive_closing_and_fleet_sums_add_up() {
        let mut a = HostCounters::new("a");
        a.record("alice", Counts::shell_opened);
        a.record("alice", Counts::shell_opened);
        a.record("bob", Counts::shell_opened);
        a.record("alice", |c| c.shell_closed(false));
        a.record("alice", |c| c.shell_closed(true));
        assert_eq!(a.totals.shells_open, 1);
        assert_eq!(a.totals.max_concurrent_shells, 3);
        assert_eq!(a.users["alice"].max_concurrent_shells, 2);
        assert_eq!(a.users["alice"].shells_deleted, 1);
        assert_eq!(a.users["alice"].shells_expired, 1);
        let mut b = HostCounters::new("b");
        b.record("alice", |c| c.quota_faults += 1);
        b.record("alice", |c| c.script_executions += 4);
        let fleet = FleetCounters::sum([&a, &b]);
        assert_eq!(fleet.hosts, 2);
        assert_eq!(fleet.shells_created, 3);
        assert_eq!(fleet.shells_open, 1);
        assert_eq!(fleet.quota_faults, 1);
        assert_eq!(fleet.script_executions, 4);
        assert_eq!(fleet.max_concurrent_shells_per_host, 3);
        assert_eq!(fleet.max_concurrent_shells_per_user, 2);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["users"]["alice"]["shells_expired"], 1);
    }
}
