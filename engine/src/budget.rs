//! Per-host shell budgets: never more shells open on a host than its MaxShellsPerUser minus
//! the shells already open there.
//!
//! WinRM refuses a shell beyond the user's MaxShellsPerUser with a quota fault (HTTP 500, code
//! 2150859173, "This user is allowed a maximum number of N concurrent shells", wire-facts
//! 1.10). Several jobs on one host (a run with several scripts, or a host listed for several
//! jobs) share one budget, so the scheduler asks for a [`ShellPermit`] before each attempt and
//! holds it until the attempt's shell is deleted.
//!
//! What a host allows is learned, in this order of trust:
//! 1. observed during this run: the WS-Man config Get (`Winrs/MaxShellsPerUser`, wire-facts
//!    2.3) and the number in a quota fault's text (`WsmanFault::max_shells_quota`). Both are
//!    upper bounds on reality (the PowerShell plugin's own quota can be lower than the winrs
//!    one), so the lowest observation wins;
//! 2. the state store's facts from earlier runs;
//! 3. the configured default ([`DEFAULT_MAX_SHELLS`]).
//!
//! Shells already open on the host (the state store's open-shell records: leaks of earlier
//! runs, or another psfleet process) are subtracted. A quota fault that names no number
//! (MaxConcurrentOperationsPerUser and friends) lowers the budget to the shells psfleet held
//! there without trouble. The usable budget never drops below one shell, so a host whose
//! every shell is taken by someone else keeps being tried, with back-off, until the
//! scheduler's bounded quota requeues run out.
//!
//! Memory: a host has an entry only while a job for it is registered or holds a permit;
//! [`ShellBudgets::hosts_tracked`] is zero once every job finished. Learned values leave with
//! the entry; the scheduler reports them as events so the state store can keep them.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The budget assumed for a host nothing is known about: 5, the lowest MaxShellsPerUser seen
/// on real hosts (the WinRM 1.1 / Server 2008 default, and the number in the fault text
/// wire-facts 1.10 quotes). Newer hosts allow 30 (MS-WSMV 2.2.4.42) and are learned upward
/// from the config Get.
pub const DEFAULT_MAX_SHELLS: u32 = 5;

/// Where a host's MaxShellsPerUser came from, least trusted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BudgetSource {
    /// The configured default.
    Default,
    /// A fact the state store kept from an earlier run.
    StateStore,
    /// The WS-Man config Get during this run.
    ConfigGet,
    /// A quota fault during this run.
    QuotaFault,
}

impl BudgetSource {
    /// Stable lower-case name (events, logs, state-store facts).
    pub fn name(self) -> &'static str {
        match self {
            BudgetSource::Default => "default",
            BudgetSource::StateStore => "state_store",
            BudgetSource::ConfigGet => "config_get",
            BudgetSource::QuotaFault => "quota_fault",
        }
    }

    /// Observed on the host during this run (as opposed to a prior).
    fn is_observation(self) -> bool {
        matches!(self, BudgetSource::ConfigGet | BudgetSource::QuotaFault)
    }
}

/// What the state store knows about a host's shells before the run touches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShellFacts {
    /// MaxShellsPerUser learned in an earlier run.
    pub max_shells: Option<u32>,
    /// Shells recorded open there (not deleted by the run that opened them).
    pub open_shells: u32,
}

/// A host's budget at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetView {
    /// MaxShellsPerUser as learned.
    pub max_shells: u32,
    /// Where `max_shells` came from.
    pub source: BudgetSource,
    /// Shells open there that this process does not hold.
    pub open_elsewhere: u32,
    /// Shells this process holds permits for.
    pub in_use: u32,
    /// Jobs registered for the host.
    pub jobs: u32,
}

impl BudgetView {
    /// Shells this process may hold at once: `max_shells - open_elsewhere`, at least 1.
    pub fn usable(&self) -> u32 {
        self.max_shells.saturating_sub(self.open_elsewhere).max(1)
    }
}

/// The budgets of every host with registered jobs.
#[derive(Debug)]
pub struct ShellBudgets {
    default_max_shells: u32,
    hosts: Mutex<HashMap<Arc<str>, Entry>>,
}

impl ShellBudgets {
    /// Budgets defaulting to `default_max_shells` (at least 1) per host.
    pub fn new(default_max_shells: u32) -> Arc<Self> {
        Arc::new(Self {
            default_max_shells: default_max_shells.max(1),
            hosts: Mutex::new(HashMap::new()),
        })
    }

    /// Registers one job for `host` (host names compare case-insensitively, as DNS does).
    /// `facts` seed a host not tracked yet; for a tracked host only a better `max_shells` is
    /// taken (the running jobs know the open shells better than an older lookup).
    pub fn register(self: &Arc<Self>, host: &str, facts: ShellFacts) -> HostBudget {
        let mut hosts = self.lock();
        let key = hosts
            .get_key_value(host.to_ascii_lowercase().as_str())
            .map(|(k, _)| Arc::clone(k))
            .unwrap_or_else(|| Arc::from(host.to_ascii_lowercase()));
        let entry = match hosts.entry(Arc::clone(&key)) {
            MapEntry::Occupied(o) => o.into_mut(),
            MapEntry::Vacant(v) => v.insert(Entry::new(self.default_max_shells, facts.open_shells)),
        };
        entry.jobs = entry.jobs.saturating_add(1);
        if let Some(max) = facts.max_shells {
            entry.learn(max, BudgetSource::StateStore);
        }
        drop(hosts);
        HostBudget {
            handle: BudgetHandle {
                budgets: Arc::clone(self),
                key,
            },
        }
    }

    /// Hosts with an entry (registered jobs or held permits); zero when the fleet is idle.
    pub fn hosts_tracked(&self) -> usize {
        self.lock().len()
    }

    /// The budget of `host`, if it is tracked.
    pub fn view(&self, host: &str) -> Option<BudgetView> {
        self.lock()
            .get(host.to_ascii_lowercase().as_str())
            .map(Entry::view)
    }

    /// The map, even if a thread panicked while holding it: every update below leaves the
    /// entry consistent between statements, so the data is still good.
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.hosts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the host's entry, then drops the entry if nothing refers to it any more.
    fn with_entry<T>(&self, key: &str, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let mut hosts = self.lock();
        let entry = hosts.get_mut(key)?;
        let out = f(entry);
        if entry.jobs == 0 && entry.in_use == 0 {
            hosts.remove(key);
        }
        Some(out)
    }
}

/// One job's registration with its host's budget; dropping it unregisters the job.
#[derive(Debug)]
pub struct HostBudget {
    handle: BudgetHandle,
}

impl HostBudget {
    /// The host key (lower case).
    pub fn host(&self) -> &str {
        &self.handle.key
    }

    /// The shared host key, for keyed maps elsewhere (the per-host rate limiter).
    pub fn key(&self) -> &Arc<str> {
        &self.handle.key
    }

    /// A handle the job's attempt can report facts through.
    pub fn handle(&self) -> BudgetHandle {
        self.handle.clone()
    }

    /// The host's budget now.
    pub fn view(&self) -> Option<BudgetView> {
        self.handle.view()
    }

    /// Takes `shells` permits if they fit now. A job needing more shells than the whole
    /// usable budget gets them only when the host is otherwise idle, so it runs alone rather
    /// than never (the host's quota fault then decides).
    pub fn try_acquire(&self, shells: u32) -> Option<ShellPermit> {
        let key = &self.handle.key;
        let granted = self
            .handle
            .budgets
            .with_entry(key, |e| {
                let fits = e.in_use.saturating_add(shells) <= e.view().usable() || e.in_use == 0;
                if fits {
                    e.in_use = e.in_use.saturating_add(shells);
                }
                fits
            })
            .unwrap_or(false);
        granted.then(|| ShellPermit {
            handle: self.handle.clone(),
            shells,
        })
    }

    /// Waits until `shells` permits fit (see [`HostBudget::try_acquire`]).
    pub async fn acquire(&self, shells: u32) -> ShellPermit {
        let budgets = &self.handle.budgets;
        loop {
            // The wake-up is registered under the lock that checked the budget, so a release
            // between the check and the await cannot be missed.
            let notified = {
                let mut hosts = budgets.lock();
                let Some(e) = hosts.get_mut(&*self.handle.key) else {
                    // Unreachable while `self` is registered; grant rather than wait forever.
                    return ShellPermit {
                        handle: self.handle.clone(),
                        shells: 0,
                    };
                };
                if e.in_use.saturating_add(shells) <= e.view().usable() || e.in_use == 0 {
                    e.in_use = e.in_use.saturating_add(shells);
                    return ShellPermit {
                        handle: self.handle.clone(),
                        shells,
                    };
                }
                let mut notified = Box::pin(Arc::clone(&e.notify).notified_owned());
                notified.as_mut().enable();
                notified
            };
            notified.await;
        }
    }

    /// Learns from a quota fault met while holding `permit`: the number in the fault text
    /// becomes the budget (and, if psfleet held fewer shells than that, the rest are counted
    /// as open elsewhere); with no number, the budget drops to the shells psfleet held there
    /// besides this job's. Returns whether the budget changed.
    pub fn on_quota_fault(&self, permit: &ShellPermit, max_shells: Option<u32>) -> bool {
        let held = permit.shells;
        self.handle
            .budgets
            .with_entry(&self.handle.key, |e| {
                let before = e.view();
                match max_shells {
                    Some(n) => {
                        e.learn(n, BudgetSource::QuotaFault);
                        // Refused at `in_use` shells of ours: if that is within n, at least
                        // n + 1 - in_use shells are someone else's.
                        if e.in_use <= n {
                            let elsewhere = n.saturating_add(1).saturating_sub(e.in_use);
                            e.open_elsewhere = e.open_elsewhere.max(elsewhere);
                        }
                    }
                    None => {
                        let worked = e.in_use.saturating_sub(held);
                        let max = worked.saturating_add(e.open_elsewhere).max(1);
                        if max < e.max_shells || !e.source.is_observation() {
                            e.max_shells = max.min(e.max_shells);
                            e.source = BudgetSource::QuotaFault;
                        }
                    }
                }
                let changed = e.view() != before;
                if changed {
                    e.revision += 1;
                }
                changed
            })
            .unwrap_or(false)
    }

    /// The budget, if what is learned about the host changed since the last call for any of
    /// its jobs: each change is reported once, by whichever job asks first.
    pub fn take_unreported(&self) -> Option<BudgetView> {
        self.handle
            .budgets
            .with_entry(&self.handle.key, |e| {
                (e.revision != e.reported).then(|| {
                    e.reported = e.revision;
                    e.view()
                })
            })
            .flatten()
    }

    /// Serialises the per-host rate-limit wait of this host's jobs (see the scheduler).
    pub(crate) fn rate_gate(&self) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.handle
            .budgets
            .with_entry(&self.handle.key, |e| Arc::clone(&e.rate_gate))
    }
}

impl Drop for HostBudget {
    fn drop(&mut self) {
        self.handle.budgets.with_entry(&self.handle.key, |e| {
            e.jobs = e.jobs.saturating_sub(1);
        });
    }
}

/// A cheap handle on a host's budget for reporting facts (no registration of its own: once
/// the host's jobs are gone, reports through it are ignored).
#[derive(Debug, Clone)]
pub struct BudgetHandle {
    budgets: Arc<ShellBudgets>,
    key: Arc<str>,
}

impl BudgetHandle {
    /// The host key (lower case).
    pub fn host(&self) -> &str {
        &self.key
    }

    /// Reports a MaxShellsPerUser value (at least 1 is used). Observations of this run
    /// (config Get, quota fault) replace priors and lower one another; a prior never
    /// overrides an observation. Returns whether the budget changed.
    pub fn learn(&self, max_shells: u32, source: BudgetSource) -> bool {
        self.budgets
            .with_entry(&self.key, |e| e.learn(max_shells, source))
            .unwrap_or(false)
    }

    /// Reports how many shells are open on the host that this process does not hold (after
    /// reaping leaks, usually 0).
    pub fn set_open_elsewhere(&self, shells: u32) {
        self.budgets.with_entry(&self.key, |e| {
            if shells < e.open_elsewhere {
                e.notify.notify_waiters();
            }
            if shells != e.open_elsewhere {
                e.open_elsewhere = shells;
                e.revision += 1;
            }
        });
    }

    /// The host's budget now.
    pub fn view(&self) -> Option<BudgetView> {
        self.budgets.view(&self.key)
    }
}

/// Shells a job may hold open on a host; dropping the permit gives them back.
#[derive(Debug)]
pub struct ShellPermit {
    handle: BudgetHandle,
    shells: u32,
}

impl ShellPermit {
    /// Shells granted.
    pub fn shells(&self) -> u32 {
        self.shells
    }
}

impl Drop for ShellPermit {
    fn drop(&mut self) {
        let shells = self.shells;
        self.handle.budgets.with_entry(&self.handle.key, |e| {
            e.in_use = e.in_use.saturating_sub(shells);
            e.notify.notify_waiters();
        });
    }
}

/// One tracked host.
#[derive(Debug)]
struct Entry {
    max_shells: u32,
    source: BudgetSource,
    open_elsewhere: u32,
    in_use: u32,
    jobs: u32,
    /// Bumped on every change of what is learned (max, source, shells elsewhere).
    revision: u64,
    /// The revision last handed out by `take_unreported`.
    reported: u64,
    notify: Arc<Notify>,
    rate_gate: Arc<tokio::sync::Mutex<()>>,
}

impl Entry {
    fn new(default_max_shells: u32, open_elsewhere: u32) -> Self {
        Self {
            max_shells: default_max_shells,
            source: BudgetSource::Default,
            open_elsewhere,
            in_use: 0,
            jobs: 0,
            revision: 0,
            reported: 0,
            notify: Arc::new(Notify::new()),
            rate_gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn view(&self) -> BudgetView {
        BudgetView {
            max_shells: self.max_shells,
            source: self.source,
            open_elsewhere: self.open_elsewhere,
            in_use: self.in_use,
            jobs: self.jobs,
        }
    }

    fn learn(&mut self, max_shells: u32, source: BudgetSource) -> bool {
        let n = max_shells.max(1);
        let take = match (self.source.is_observation(), source.is_observation()) {
            (false, true) => true,
            (true, true) => n < self.max_shells,
            (false, false) => source >= self.source,
            (true, false) => false,
        };
        if !take || (n == self.max_shells && source == self.source) {
            return false;
        }
        if n > self.max_shells {
            self.notify.notify_waiters();
        }
        self.max_shells = n;
        self.source = source;
        // Priors came from the state store or the configuration: nothing new to report.
        if source.is_observation() {
            self.revision += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[test]
    fn permits_stop_at_the_budget_and_come_back_on_drop() {
        let budgets = ShellBudgets::new(2);
        let a = budgets.register("SRV1", ShellFacts::default());
        let b = budgets.register("srv1", ShellFacts::default());
        assert_eq!(a.host(), "srv1");
        let p1 = a.try_acquire(1).unwrap();
        let p2 = b.try_acquire(1).unwrap();
        assert!(a.try_acquire(1).is_none());
        assert_eq!(a.view().unwrap().in_use, 2);
        drop(p1);
        let p3 = b.try_acquire(1).unwrap();
        assert!(b.try_acquire(1).is_none());
        // A sweep needs no shell and always fits.
        assert_eq!(a.try_acquire(0).unwrap().shells(), 0);
        drop((p2, p3));
        assert_eq!(budgets.hosts_tracked(), 1);
        drop((a, b));
        assert_eq!(budgets.hosts_tracked(), 0);
        assert!(budgets.view("srv1").is_none());
    }

    #[test]
    fn open_shells_elsewhere_are_subtracted_but_one_shell_stays_usable() {
        let budgets = ShellBudgets::new(5);
        let job = budgets.register(
            "h",
            ShellFacts {
                max_shells: Some(3),
                open_shells: 2,
            },
        );
        let view = job.view().unwrap();
        assert_eq!(
            (view.max_shells, view.source, view.usable()),
            (3, BudgetSource::StateStore, 1)
        );
        let p = job.try_acquire(1).unwrap();
        assert!(job.try_acquire(1).is_none());
        drop(p);
        job.handle().set_open_elsewhere(7);
        assert_eq!(job.view().unwrap().usable(), 1);
        job.handle().set_open_elsewhere(0);
        assert_eq!(job.view().unwrap().usable(), 3);
    }

    #[test]
    fn observations_beat_priors_and_the_lowest_observation_wins() {
        let budgets = ShellBudgets::new(5);
        let job = budgets.register("h", ShellFacts::default());
        let h = job.handle();
        assert!(h.learn(8, BudgetSource::StateStore));
        assert!(h.learn(30, BudgetSource::ConfigGet));
        assert_eq!(h.view().unwrap().max_shells, 30);
        // A prior never overrides an observation.
        assert!(!h.learn(4, BudgetSource::StateStore));
        // The plugin quota (25) is lower than the winrs one (30): the fault wins.
        assert!(h.learn(25, BudgetSource::QuotaFault));
        // A later, higher Get does not raise it again.
        assert!(!h.learn(30, BudgetSource::ConfigGet));
        let view = h.view().unwrap();
        assert_eq!(
            (view.max_shells, view.source),
            (25, BudgetSource::QuotaFault)
        );
        // Registering another job with an older fact changes nothing.
        let _other = budgets.register(
            "H",
            ShellFacts {
                max_shells: Some(2),
                open_shells: 9,
            },
        );
        let view = h.view().unwrap();
        assert_eq!(
            (view.max_shells, view.open_elsewhere, view.jobs),
            (25, 0, 2)
        );
        // Zero is read as one.
        assert!(h.learn(0, BudgetSource::ConfigGet));
        assert_eq!(h.view().unwrap().max_shells, 1);
    }

    #[test]
    fn a_quota_fault_with_a_number_sets_the_budget_and_counts_foreign_shells() {
        let budgets = ShellBudgets::new(5);
        let a = budgets.register("h", ShellFacts::default());
        let b = budgets.register("h", ShellFacts::default());
        let c = budgets.register("h", ShellFacts::default());
        let _pa = a.try_acquire(1).unwrap();
        let _pb = b.try_acquire(1).unwrap();
        let pc = c.try_acquire(1).unwrap();
        // Three held, the host allows two: our own count explains it.
        assert!(c.on_quota_fault(&pc, Some(2)));
        let view = c.view().unwrap();
        assert_eq!(
            (view.max_shells, view.open_elsewhere, view.usable()),
            (2, 0, 2)
        );
        drop(pc);
        assert!(c.try_acquire(1).is_none());

        // One held and refused at two: someone else holds at least two.
        let budgets = ShellBudgets::new(5);
        let lone = budgets.register("g", ShellFacts::default());
        let p = lone.try_acquire(1).unwrap();
        assert!(lone.on_quota_fault(&p, Some(2)));
        let view = lone.view().unwrap();
        assert_eq!((view.open_elsewhere, view.usable()), (2, 1));
    }

    #[test]
    fn a_quota_fault_without_a_number_drops_to_what_worked() {
        let budgets = ShellBudgets::new(5);
        let jobs: Vec<HostBudget> = (0..4)
            .map(|_| budgets.register("h", ShellFacts::default()))
            .collect();
        let permits: Vec<ShellPermit> = jobs.iter().map(|j| j.try_acquire(1).unwrap()).collect();
        assert!(jobs[3].on_quota_fault(&permits[3], None));
        let view = jobs[3].view().unwrap();
        assert_eq!(
            (view.max_shells, view.source),
            (3, BudgetSource::QuotaFault)
        );
        drop(permits);
        // Alone and refused: still one shell, never zero.
        let p = jobs[0].try_acquire(1).unwrap();
        assert!(jobs[0].on_quota_fault(&p, None));
        assert_eq!(jobs[0].view().unwrap().usable(), 1);
    }

    #[test]
    fn each_learned_change_is_reported_once() {
        let budgets = ShellBudgets::new(5);
        let facts = ShellFacts {
            max_shells: Some(4),
            open_shells: 0,
        };
        let a = budgets.register("h", facts);
        let b = budgets.register("h", facts);
        // A prior from the state store is not news.
        assert_eq!(a.take_unreported(), None);
        a.handle().learn(3, BudgetSource::ConfigGet);
        let p = b.try_acquire(1).unwrap();
        b.on_quota_fault(&p, Some(2));
        let seen = b.take_unreported().unwrap();
        assert_eq!(
            (seen.max_shells, seen.source),
            (2, BudgetSource::QuotaFault)
        );
        assert_eq!(a.take_unreported(), None);
        b.handle().set_open_elsewhere(1);
        assert_eq!(a.take_unreported().unwrap().open_elsewhere, 1);
        b.handle().set_open_elsewhere(1);
        assert_eq!(b.take_unreported(), None);
    }

    #[test]
    fn a_job_needing_more_than_the_budget_runs_alone() {
        let budgets = ShellBudgets::new(2);
        let big = budgets.register("h", ShellFacts::default());
        let small = budgets.register("h", ShellFacts::default());
        let p = small.try_acquire(1).unwrap();
        assert!(big.try_acquire(3).is_none());
        drop(p);
        let p = big.try_acquire(3).unwrap();
        assert_eq!(p.shells(), 3);
        assert!(small.try_acquire(1).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_never_exceed_the_budget_and_all_finish() {
        let budgets = ShellBudgets::new(5);
        // Learned from a fault: 2.
        let probe = budgets.register("h", ShellFacts::default());
        let permit = probe.try_acquire(1).unwrap();
        let other = probe.try_acquire(1).unwrap();
        let third = probe.try_acquire(1).unwrap();
        probe.on_quota_fault(&third, Some(2));
        drop((permit, other, third));
        let in_use = Arc::new(AtomicU32::new(0));
        let max_seen = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let job = budgets.register("h", ShellFacts::default());
            let (in_use, max_seen) = (Arc::clone(&in_use), Arc::clone(&max_seen));
            tasks.push(tokio::spawn(async move {
                let _permit = job.acquire(1).await;
                let now = in_use.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100 + i)).await;
                in_use.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max_seen.load(Ordering::SeqCst), 2);
        drop(probe);
        assert_eq!(budgets.hosts_tracked(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_raised_budget_wakes_waiters() {
        let budgets = ShellBudgets::new(1);
        let a = budgets.register("h", ShellFacts::default());
        let b = budgets.register("h", ShellFacts::default());
        let _held = a.try_acquire(1).unwrap();
        let waiter = tokio::spawn(async move {
            let p = b.acquire(1).await;
            p.shells()
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        assert!(a.handle().learn(2, BudgetSource::ConfigGet));
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
