//! The session-state cache on sled: host facts, open shells and the run index (docs/state.md).
//!
//! It is a cache and never the only copy of anything: every value it holds is also in a run
//! journal (facts and shell lines are journaled; the run index is computed from journals), so
//! a damaged cache is moved aside and rebuilt. That matters because sled 0.34 is not
//! crash-safe under power loss (`/work/shared/docs/dependencies.md`: `sled::open` returned
//! `Corruption` or panicked, and acknowledged records were lost, in 84 of 140 simulated power
//! cuts; its `flush` does not fsync on Linux). So sled is opened inside `catch_unwind`, every
//! value is decoded once on open (an integrity scan: the cache is small), and any error or
//! panic leads to [`Cache::open_or_rebuild`] moving the directory to `cache.broken-<time>` and
//! rebuilding from `<state>/runs/*/journal.jsonl`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::journal::{
    self, Entry, JournalError, OpenShell, RunSummary, list_run_dirs, timestamp_now,
};
use crate::record::{RunId, Status};

/// The cache's folder under the state directory.
pub const CACHE_DIR: &str = "cache";
/// Shell deletions made outside any run (`psfleet cleanup`), journaled for rebuilds.
pub const REAPED_FILE: &str = "reaped.jsonl";
/// The cache's schema version: a different version is treated like damage (moved aside and
/// rebuilt), since everything in it can be rebuilt.
pub const CACHE_SCHEMA: u32 = 1;

const FACTS_TREE: &str = "facts_v1";
const SHELLS_TREE: &str = "shells_v1";
const RUNS_TREE: &str = "runs_v1";
const SCHEMA_KEY: &str = "schema";

/// What psfleet has learned about a host. Every field is optional: a partial update leaves the
/// fields it does not carry alone (see [`HostFacts::merge`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostFacts {
    /// Authentication schemes the host offered in its 401 (`WWW-Authenticate`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_schemes: Vec<String>,
    /// WinRS MaxShellsPerUser (config Get, or the quota fault's "maximum number of N
    /// concurrent shells").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shells_per_user: Option<u32>,
    /// Other quotas by their WinRM config name (MaxConcurrentOperationsPerUser, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quotas: BTreeMap<String, u64>,
    /// `$PSVersionTable.PSVersion` (or the PSRP protocol's PSVersion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub powershell_version: Option<String>,
    /// Operating system caption or version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The connection settings that last worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<ConnectionSettings>,
    /// When the host last answered, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// The WinRM service configuration, where the account could read it (sweeps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceConfig>,
}

/// A host's WinRM service configuration as a sweep reads it (`winrm/config/service` and the
/// listeners): what the fleet configuration report summarises and flags.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Service authentication methods by their config name (`Basic`, `Kerberos`, `Negotiate`,
    /// `Certificate`, `CredSSP`) and whether each is enabled.
    #[serde(default)]
    pub auth: BTreeMap<String, bool>,
    /// `AllowUnencrypted`.
    #[serde(default)]
    pub allow_unencrypted: Option<bool>,
    /// `CbtHardeningLevel` (`None`, `Relaxed`, `Strict`).
    #[serde(default)]
    pub cbt_hardening_level: Option<String>,
    /// Listeners as `transport:port` (`HTTP:5985`, `HTTPS:5986`).
    #[serde(default)]
    pub listeners: Vec<String>,
    /// `MaxEnvelopeSizekb`.
    #[serde(default)]
    pub max_envelope_size_kb: Option<u32>,
}

impl HostFacts {
    /// Takes every field `newer` carries; keeps the others. Quotas merge key by key.
    pub fn merge(&mut self, newer: HostFacts) {
        if !newer.auth_schemes.is_empty() {
            self.auth_schemes = newer.auth_schemes;
        }
        if newer.max_shells_per_user.is_some() {
            self.max_shells_per_user = newer.max_shells_per_user;
        }
        self.quotas.extend(newer.quotas);
        if newer.powershell_version.is_some() {
            self.powershell_version = newer.powershell_version;
        }
        if newer.os.is_some() {
            self.os = newer.os;
        }
        if newer.last_good.is_some() {
            self.last_good = newer.last_good;
        }
        if newer.last_seen.is_some() {
            self.last_seen = newer.last_seen;
        }
        if newer.service.is_some() {
            self.service = newer.service;
        }
    }
}

/// How a host was last reached successfully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSettings {
    /// The address connected to.
    pub address: Option<String>,
    /// `http` or `https`.
    pub scheme: String,
    /// TCP port.
    pub port: u16,
    /// Authentication mechanism name (`Negotiate`, `NTLM`, `Kerberos`, ...).
    pub authentication: String,
    /// The PowerShell session configuration, if not the default.
    pub configuration_name: Option<String>,
}

/// How a cache open went when it had to be rebuilt: said to the operator, never hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuild {
    /// Why it was rebuilt (the sled error or panic message, or "missing").
    pub reason: String,
    /// Where the damaged cache went (`None` when there was none).
    pub moved_to: Option<PathBuf>,
    /// Runs indexed from journals.
    pub runs: usize,
    /// Hosts with facts recovered.
    pub hosts_with_facts: usize,
    /// Open shells recovered (leaks to reap).
    pub open_shells: usize,
    /// Run folders whose journal could not be read, with the reason.
    pub unreadable_runs: Vec<(PathBuf, String)>,
}

impl std::fmt::Display for Rebuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.moved_to {
            Some(to) => write!(
                f,
                "the state cache was unusable ({}); moved it to {} and rebuilt it",
                self.reason,
                to.display()
            )?,
            None => write!(f, "the state cache was {}; rebuilt it", self.reason)?,
        }
        write!(
            f,
            " from {} run journal(s): {} host(s) with facts, {} open shell(s)",
            self.runs, self.hosts_with_facts, self.open_shells
        )?;
        if !self.unreadable_runs.is_empty() {
            write!(f, "; {} run(s) unreadable", self.unreadable_runs.len())?;
        }
        Ok(())
    }
}

/// A cache opened, and whether it had to be rebuilt.
#[derive(Debug)]
pub struct CacheOpen {
    /// The cache.
    pub cache: Cache,
    /// Set when it was rebuilt from the journals.
    pub rebuilt: Option<Rebuild>,
}

/// Cache failures.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// sled returned an error.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// sled panicked (it does on some damaged databases: "tried to serialize Uninitialized").
    #[error("sled panicked: {0}")]
    Panicked(String),
    /// A stored value does not decode.
    #[error("damaged value in {tree}: {reason}")]
    Corrupt {
        /// Which tree.
        tree: &'static str,
        /// Why.
        reason: String,
    },
    /// The cache was written by a different schema version.
    #[error("cache schema {found}, this psfleet uses {CACHE_SCHEMA}")]
    Schema {
        /// The version found.
        found: u32,
    },
    /// A file operation on the cache folder failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The cache is held by another handle (sled's file lock).
    #[error("the state cache at {0} is in use")]
    Locked(PathBuf),
    /// Reading journals during a rebuild failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The sled cache. Cloning is cheap (sled handles are shared).
#[derive(Debug, Clone)]
pub struct Cache {
    db: sled::Db,
    facts: sled::Tree,
    shells: sled::Tree,
    runs: sled::Tree,
}

impl Cache {
    /// Opens `<state_dir>/cache`. If sled fails or panics, or a value does not decode, the
    /// folder is moved aside to `cache.broken-<time>`, a fresh cache is built from the run
    /// journals, and [`CacheOpen::rebuilt`] says so. A missing cache beside existing runs is
    /// rebuilt the same way.
    pub fn open_or_rebuild(state_dir: &Path) -> Result<CacheOpen, CacheError> {
        let path = state_dir.join(CACHE_DIR);
        let existed = path.exists();
        let runs = list_run_dirs(state_dir)?;
        let (cache, moved_to, reason) = if existed {
            match Cache::open(&path) {
                Ok(cache) => match cache.behind(&runs)? {
                    None => {
                        return Ok(CacheOpen {
                            cache,
                            rebuilt: None,
                        });
                    }
                    // Not damaged as far as sled can tell, but it does not know everything the
                    // journals hold (an unclean stop, or sled silently dropped data): refill it
                    // in place.
                    Some(reason) => {
                        cache.clear()?;
                        (cache, None, reason)
                    }
                },
                Err(e @ CacheError::Locked(_)) => return Err(e),
                Err(e) => {
                    let moved = move_aside(state_dir, &path)?;
                    (Cache::open(&path)?, Some(moved), e.to_string())
                }
            }
        } else {
            (Cache::open(&path)?, None, "missing".to_owned())
        };
        if !existed && runs.is_empty() {
            // A new state directory: nothing to rebuild, nothing to say.
            return Ok(CacheOpen {
                cache,
                rebuilt: None,
            });
        }
        let mut rebuild = cache.rebuild_from(state_dir, &runs)?;
        rebuild.reason = reason;
        rebuild.moved_to = moved_to;
        Ok(CacheOpen {
            cache,
            rebuilt: Some(rebuild),
        })
    }

    /// Opens (or creates) the sled database at `path` inside `catch_unwind`, checks its schema
    /// version and decodes every value once. Any failure is an error; nothing is moved.
    ///
    /// sled's own file lock held elsewhere in this process (a run's owner thread still
    /// closing) is waited for up to two seconds, then reported as [`CacheError::Locked`]: a
    /// busy cache is not a damaged one and must never be moved aside.
    pub fn open(path: &Path) -> Result<Cache, CacheError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match Cache::open_once(path) {
                Err(CacheError::Sled(e)) if is_lock_error(&e) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(CacheError::Locked(path.to_owned()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Cache, CacheError> {
        guarded(|| {
            let db = sled::Config::new().path(path).open()?;
            let cache = Cache {
                facts: db.open_tree(FACTS_TREE)?,
                shells: db.open_tree(SHELLS_TREE)?,
                runs: db.open_tree(RUNS_TREE)?,
                db,
            };
            match cache.db.get(SCHEMA_KEY)? {
                Some(v) => {
                    let found = <[u8; 4]>::try_from(v.as_ref())
                        .map(u32::from_be_bytes)
                        .map_err(|_| CacheError::Corrupt {
                            tree: "default",
                            reason: "schema version is not 4 bytes".into(),
                        })?;
                    if found != CACHE_SCHEMA {
                        return Err(CacheError::Schema { found });
                    }
                }
                None => {
                    cache.db.insert(SCHEMA_KEY, &CACHE_SCHEMA.to_be_bytes())?;
                }
            }
            cache.check()?;
            Ok(cache)
        })
    }

    /// Facts about a host (host names compare without ASCII case).
    pub fn facts(&self, host: &str) -> Result<Option<HostFacts>, CacheError> {
        guarded(|| {
            self.facts
                .get(host_key(host))?
                .map(|v| decode(FACTS_TREE, &v))
                .transpose()
        })
    }

    /// Merges newly learned facts into the host's entry and returns the result.
    pub fn merge_facts(&self, host: &str, facts: HostFacts) -> Result<HostFacts, CacheError> {
        let mut current = self.facts(host)?.unwrap_or_default();
        current.merge(facts);
        let value = encode(&current)?;
        guarded(|| {
            self.facts.insert(host_key(host), value)?;
            Ok(())
        })?;
        Ok(current)
    }

    /// Every host with facts, by lower-cased host name.
    pub fn all_facts(&self) -> Result<BTreeMap<String, HostFacts>, CacheError> {
        guarded(|| {
            let mut out = BTreeMap::new();
            for item in self.facts.iter() {
                let (k, v) = item?;
                out.insert(
                    String::from_utf8_lossy(&k).into_owned(),
                    decode(FACTS_TREE, &v)?,
                );
            }
            Ok(out)
        })
    }

    /// Records a shell as open.
    pub fn shell_opened(&self, shell: &OpenShell) -> Result<(), CacheError> {
        let value = encode(shell)?;
        guarded(|| {
            self.shells
                .insert(shell_key(&shell.host, &shell.shell_id), value)?;
            Ok(())
        })
    }

    /// Records a shell as deleted; returns whether it was known.
    pub fn shell_closed(&self, host: &str, shell_id: &str) -> Result<bool, CacheError> {
        guarded(|| Ok(self.shells.remove(shell_key(host, shell_id))?.is_some()))
    }

    /// Every shell recorded as open (after a crash: leaks to reap), by host then id.
    pub fn open_shells(&self) -> Result<Vec<OpenShell>, CacheError> {
        self.scan_shells(b"")
    }

    /// The shells recorded as open on one host.
    pub fn open_shells_on(&self, host: &str) -> Result<Vec<OpenShell>, CacheError> {
        let mut prefix = host_key(host).into_bytes();
        prefix.push(0);
        self.scan_shells(&prefix)
    }

    /// Stores a run's index entry.
    pub fn put_run(&self, summary: &RunSummary) -> Result<(), CacheError> {
        let value = encode(summary)?;
        guarded(|| {
            self.runs.insert(summary.run_id.0.as_bytes(), value)?;
            Ok(())
        })
    }

    /// A run's index entry.
    pub fn run(&self, run_id: &RunId) -> Result<Option<RunSummary>, CacheError> {
        guarded(|| {
            self.runs
                .get(run_id.0.as_bytes())?
                .map(|v| decode(RUNS_TREE, &v))
                .transpose()
        })
    }

    /// Every indexed run, oldest first (run ids sort by start time).
    pub fn runs(&self) -> Result<Vec<RunSummary>, CacheError> {
        guarded(|| {
            let mut out = Vec::new();
            for item in self.runs.iter() {
                let (_, v) = item?;
                out.push(decode(RUNS_TREE, &v)?);
            }
            Ok(out)
        })
    }

    /// Asks sled to write its buffers out. Not a durability guarantee (sled does not fsync on
    /// Linux); the journal is the durable copy.
    pub fn flush(&self) -> Result<(), CacheError> {
        guarded(|| {
            self.db.flush()?;
            Ok(())
        })
    }

    /// Rebuilds the cache's contents from the run journals in `run_dirs` (oldest first) and
    /// `<state_dir>/reaped.jsonl`. `reason` and `moved_to` of the result are left for the caller.
    fn rebuild_from(&self, state_dir: &Path, run_dirs: &[PathBuf]) -> Result<Rebuild, CacheError> {
        let mut rebuild = Rebuild {
            reason: String::new(),
            moved_to: None,
            runs: 0,
            hosts_with_facts: 0,
            open_shells: 0,
            unreadable_runs: Vec::new(),
        };
        let mut facts: BTreeMap<String, HostFacts> = BTreeMap::new();
        let mut opened: Vec<OpenShell> = Vec::new();
        let mut closed: BTreeSet<(String, String)> = BTreeSet::new();
        for dir in run_dirs {
            let state = match journal::Journal::replay(dir) {
                Ok(s) => s,
                Err(e) => {
                    rebuild.unreadable_runs.push((dir.clone(), e.to_string()));
                    continue;
                }
            };
            self.put_run(&state.summary())?;
            rebuild.runs += 1;
            // Hosts that answered were seen at their finish time; journaled facts come after
            // (they carry what the run learned, the newer word).
            let mut records: Vec<_> = state.done.values().collect();
            records.sort_by(|a, b| a.finished.cmp(&b.finished));
            for record in records {
                if record.status == Status::Succeeded && !record.finished.is_empty() {
                    facts
                        .entry(host_key(&record.host))
                        .or_default()
                        .merge(HostFacts {
                            last_seen: Some(record.finished.clone()),
                            ..HostFacts::default()
                        });
                }
            }
            for (host, f) in state.facts {
                facts.entry(host_key(&host)).or_default().merge(f);
            }
            // Journal order within a run already removed shells closed in it; closures from
            // later runs or cleanup remove shells of earlier runs below.
            opened.extend(state.open_shells);
            for entry in read_entries_lossy(&state.dir.join(journal::JOURNAL_FILE)) {
                if let Entry::ShellClosed { host, shell_id, .. } = entry {
                    closed.insert((host_key(&host), shell_id));
                }
            }
        }
        for entry in read_entries_lossy(&state_dir.join(REAPED_FILE)) {
            if let Entry::ShellClosed { host, shell_id, .. } = entry {
                closed.insert((host_key(&host), shell_id));
            }
        }
        for (host, f) in facts {
            let value = encode(&f)?;
            guarded(|| {
                self.facts.insert(host.as_bytes(), value)?;
                Ok(())
            })?;
            rebuild.hosts_with_facts += 1;
        }
        for shell in opened {
            if !closed.contains(&(host_key(&shell.host), shell.shell_id.clone())) {
                self.shell_opened(&shell)?;
                rebuild.open_shells += 1;
            }
        }
        self.flush()?;
        Ok(rebuild)
    }

    /// Why the cache is behind the journals, if it is: a run folder it has no index entry
    /// for, or whose journal length differs from the one indexed (the owner indexes the final
    /// length when a run closes cleanly, so any difference means an unclean stop or lost data).
    fn behind(&self, run_dirs: &[PathBuf]) -> Result<Option<String>, CacheError> {
        for dir in run_dirs {
            let id = RunId(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            let on_disk = fs::metadata(dir.join(journal::JOURNAL_FILE))
                .map(|m| m.len())
                .unwrap_or(0);
            match self.run(&id)? {
                None => return Ok(Some(format!("behind the journals (run {id} not indexed)"))),
                Some(s) if s.journal_bytes != on_disk => {
                    return Ok(Some(format!(
                        "behind the journals (run {id} indexed at {} bytes, journal has {on_disk})",
                        s.journal_bytes
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(None)
    }

    /// Empties every tree (before an in-place rebuild); the schema version stays.
    fn clear(&self) -> Result<(), CacheError> {
        guarded(|| {
            self.facts.clear()?;
            self.shells.clear()?;
            self.runs.clear()?;
            Ok(())
        })
    }

    fn scan_shells(&self, prefix: &[u8]) -> Result<Vec<OpenShell>, CacheError> {
        guarded(|| {
            let mut out = Vec::new();
            for item in self.shells.scan_prefix(prefix) {
                let (_, v) = item?;
                out.push(decode(SHELLS_TREE, &v)?);
            }
            Ok(out)
        })
    }

    /// Decodes every value once: damage shows here, at open, rather than mid-run.
    fn check(&self) -> Result<(), CacheError> {
        self.all_facts()?;
        self.open_shells()?;
        self.runs()?;
        Ok(())
    }
}

/// Runs `f`, turning a panic inside sled into [`CacheError::Panicked`].
fn guarded<T>(f: impl FnOnce() -> Result<T, CacheError>) -> Result<T, CacheError> {
    // AssertUnwindSafe: on a panic the handles involved are dropped or the cache is treated
    // as broken (moved aside at open; mid-run the store stops using it), never read again.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            Err(CacheError::Panicked(message))
        }
    }
}

/// sled reports its file lock held as an I/O error with this text (sled 0.34 `config.rs`).
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Renames the damaged cache to `cache.broken-<time>` (with `-N` when that exists).
fn move_aside(state_dir: &Path, path: &Path) -> Result<PathBuf, CacheError> {
    let stamp: String = timestamp_now()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut target = state_dir.join(format!("{CACHE_DIR}.broken-{stamp}"));
    let mut n = 1u32;
    while target.exists() && n < 1000 {
        target = state_dir.join(format!("{CACHE_DIR}.broken-{stamp}-{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(|source| CacheError::Io {
        op: "move aside",
        path: path.to_owned(),
        source,
    })?;
    // Best effort: the rename is what matters, and losing it on a power cut only means the
    // damaged cache is found (and moved) again.
    let _ = journal::sync_dir(state_dir);
    Ok(target)
}

/// The journal entries of a file, skipping lines that do not parse (used by rebuilds, which
/// take what they can).
fn read_entries_lossy(path: &Path) -> Vec<Entry> {
    let Ok(file) = fs::File::open(path) else {
        return Vec::new();
    };
    let mut reader = std::io::BufReader::new(file);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match journal::read_bounded_line(&mut reader, &mut buf) {
            Ok((0, _, _)) | Err(_) => break,
            Ok((_, true, false)) => {
                if let Ok(entry) = serde_json::from_slice::<Entry>(&buf) {
                    out.push(entry);
                }
            }
            Ok(_) => {}
        }
    }
    out
}

fn host_key(host: &str) -> String {
    host.to_ascii_lowercase()
}

fn shell_key(host: &str, shell_id: &str) -> Vec<u8> {
    let mut key = host_key(host).into_bytes();
    key.push(0);
    key.extend_from_slice(shell_id.as_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CacheError> {
    serde_json::to_vec(value).map_err(|e| CacheError::Corrupt {
        tree: "encode",
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, CacheError> {
    serde_json::from_slice(bytes).map_err(|e| CacheError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, RunMeta};
    use crate::record::JobKind;
    use psfleet_core::taxonomy::Bucket;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("psfleet-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn facts(max_shells: u32) -> HostFacts {
        HostFacts {
            auth_schemes: vec!["Negotiate".into(), "Kerberos".into()],
            max_shells_per_user: Some(max_shells),
            quotas: BTreeMap::from([("MaxConcurrentOperationsPerUser".into(), 1500)]),
            powershell_version: Some("5.1.17763.1".into()),
            os: Some("Windows Server 2019".into()),
            last_good: Some(ConnectionSettings {
                address: Some("127.20.0.1".into()),
                scheme: "http".into(),
                port: 5985,
                authentication: "Negotiate".into(),
                configuration_name: None,
            }),
            last_seen: Some("2026-01-01T00:00:00.000Z".into()),
            service: Some(ServiceConfig {
                auth: BTreeMap::from([("Basic".into(), false), ("Kerberos".into(), true)]),
                allow_unencrypted: Some(false),
                cbt_hardening_level: Some("Relaxed".into()),
                listeners: vec!["HTTP:5985".into()],
                max_envelope_size_kb: Some(500),
            }),
        }
    }

    fn shell(host: &str, id: &str) -> OpenShell {
        OpenShell {
            host: host.into(),
            shell_id: id.into(),
            run_id: RunId("20260101T000000Z-0001".into()),
            created: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    /// Writes a run whose journal holds a done host, facts, and two shells of which one is
    /// closed: what a rebuild must recover.
    fn journal_with_facts_and_shells(state_dir: &Path, id: &str) -> RunSummary {
        let meta = RunMeta::new(RunId(id.into()), JobKind::Script, 2);
        let mut j = Journal::create(state_dir, &meta).unwrap();
        let mut rec = crate::journal::tests::record(&meta.run_id, "srv1", None);
        rec.finished = "2026-01-01T00:00:05.000Z".into();
        let entries = [
            Entry::ShellOpened {
                host: "SRV1".into(),
                shell_id: "S-LEAK".into(),
                at: "t".into(),
            },
            Entry::ShellOpened {
                host: "srv1".into(),
                shell_id: "S-DONE".into(),
                at: "t".into(),
            },
            Entry::ShellClosed {
                host: "srv1".into(),
                shell_id: "S-DONE".into(),
                at: "t".into(),
            },
            Entry::Facts {
                host: "srv2".into(),
                facts: Box::new(facts(2)),
            },
            Entry::Done {
                record: Box::new(rec),
            },
            Entry::Done {
                record: Box::new(crate::journal::tests::record(
                    &meta.run_id,
                    "srv2",
                    Some(Bucket::QuotaExceeded),
                )),
            },
        ];
        for e in &entries {
            j.append(e).unwrap();
        }
        j.commit().unwrap();
        Journal::replay(j.dir()).unwrap().summary()
    }

    #[test]
    fn facts_shells_and_runs_persist_across_reopen() {
        let state_dir = temp_dir("cache-reopen");
        let opened = Cache::open_or_rebuild(&state_dir).unwrap();
        assert!(opened.rebuilt.is_none(), "a new state dir needs no rebuild");
        let cache = opened.cache;
        cache.merge_facts("SRV1", facts(5)).unwrap();
        let merged = cache
            .merge_facts(
                "srv1",
                HostFacts {
                    max_shells_per_user: Some(2),
                    quotas: BTreeMap::from([("MaxShells".into(), 30)]),
                    ..HostFacts::default()
                },
            )
            .unwrap();
        assert_eq!(merged.max_shells_per_user, Some(2));
        assert_eq!(merged.auth_schemes, vec!["Negotiate", "Kerberos"]);
        assert_eq!(merged.quotas.len(), 2);
        cache.shell_opened(&shell("a", "S1")).unwrap();
        cache.shell_opened(&shell("ab", "S2")).unwrap();
        cache.shell_opened(&shell("a", "S3")).unwrap();
        assert!(cache.shell_closed("A", "S3").unwrap());
        assert!(!cache.shell_closed("a", "nope").unwrap());
        let summary = RunSummary {
            run_id: RunId("r1".into()),
            path: state_dir.join("runs/r1"),
            started: "t".into(),
            job: JobKind::Sweep,
            inventory_digest: None,
            host_count: 1,
            done: 1,
            succeeded: 1,
            failed: 0,
            skipped: 0,
            interrupted: 0,
            buckets: BTreeMap::new(),
            ended: None,
            journal_bytes: 10,
        };
        cache.put_run(&summary).unwrap();
        cache.flush().unwrap();
        drop(cache);

        let opened = Cache::open_or_rebuild(&state_dir).unwrap();
        assert!(opened.rebuilt.is_none());
        let cache = opened.cache;
        assert_eq!(cache.facts("srv1").unwrap(), Some(merged));
        assert_eq!(cache.open_shells_on("a").unwrap(), vec![shell("a", "S1")]);
        assert_eq!(cache.open_shells().unwrap().len(), 2);
        assert_eq!(cache.run(&RunId("r1".into())).unwrap(), Some(summary));
        drop(cache);
        fs::remove_dir_all(&state_dir).unwrap();
    }

    /// Overwrites the files sled wrote (all of them, or only those `pick` selects) with
    /// deterministic garbage; returns how many.
    fn garble(cache_dir: &Path, pick: impl Fn(&Path) -> bool) -> usize {
        let mut files = 0;
        let mut stack = vec![cache_dir.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if pick(&path) {
                    let len = fs::metadata(&path).unwrap().len().max(64) as usize;
                    let garbage: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
                    fs::write(&path, garbage).unwrap();
                    files += 1;
                }
            }
        }
        files
    }

    #[test]
    fn a_corrupted_cache_is_moved_aside_and_rebuilt_from_the_journals() {
        // Garbage over every file, then over the data file alone (its config file intact).
        for (case, only_db) in [("all files", false), ("db only", true)] {
            let state_dir = temp_dir("cache-garbage");
            let summary = journal_with_facts_and_shells(&state_dir, "20260101T000000Z-0001");
            let cache = Cache::open_or_rebuild(&state_dir).unwrap();
            // The cache was missing beside a run: rebuilt, nothing moved.
            let rebuild = cache.rebuilt.clone().unwrap();
            assert_eq!(rebuild.reason, "missing");
            assert_eq!(rebuild.moved_to, None);
            cache.cache.flush().unwrap();
            drop(cache);

            let files = garble(&state_dir.join(CACHE_DIR), |p| {
                !only_db || p.file_name().is_some_and(|n| n == "db")
            });
            assert!(files >= 1, "{case}: sled wrote {files} files");

            let opened = Cache::open_or_rebuild(&state_dir).unwrap();
            let rebuild = opened.rebuilt.clone().expect("garbage must be noticed");
            println!("{case}: garbage over {files} sled file(s): {rebuild}");
            if only_db {
                // sled 0.34 opens a garbled data file without an error, as an empty
                // database: the index check finds it behind the journals.
                assert!(
                    rebuild.reason.starts_with("behind the journals"),
                    "{rebuild}"
                );
                assert_eq!(rebuild.moved_to, None);
            } else {
                let moved = rebuild.moved_to.clone().unwrap();
                assert!(moved.is_dir(), "{}", moved.display());
                assert!(
                    moved
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("cache.broken-")
                );
                assert!(rebuild.to_string().contains("moved it to"), "{rebuild}");
            }
            assert_eq!(rebuild.runs, 1);
            assert_eq!(rebuild.open_shells, 1);
            assert_eq!(rebuild.hosts_with_facts, 2);
            let cache = opened.cache;
            let leaks = cache.open_shells().unwrap();
            assert_eq!(leaks.len(), 1);
            assert_eq!(leaks[0].shell_id, "S-LEAK");
            assert_eq!(cache.facts("srv2").unwrap(), Some(facts(2)));
            assert_eq!(
                cache.facts("srv1").unwrap().unwrap().last_seen.as_deref(),
                Some("2026-01-01T00:00:05.000Z")
            );
            assert_eq!(cache.run(&summary.run_id).unwrap(), Some(summary));
            drop(cache);
            fs::remove_dir_all(&state_dir).unwrap();
        }
    }

    #[test]
    fn a_cache_of_another_schema_is_rebuilt_and_reaped_shells_stay_closed() {
        let state_dir = temp_dir("cache-schema");
        journal_with_facts_and_shells(&state_dir, "20260101T000000Z-0002");
        fs::write(
            state_dir.join(REAPED_FILE),
            serde_json::to_string(&Entry::ShellClosed {
                host: "srv1".into(),
                shell_id: "S-LEAK".into(),
                at: "t".into(),
            })
            .unwrap()
                + "\n",
        )
        .unwrap();
        {
            let db = sled::open(state_dir.join(CACHE_DIR)).unwrap();
            db.insert(SCHEMA_KEY, &7u32.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let opened = Cache::open_or_rebuild(&state_dir).unwrap();
        let rebuild = opened.rebuilt.unwrap();
        assert!(rebuild.reason.contains("schema 7"), "{}", rebuild.reason);
        assert!(rebuild.moved_to.is_some());
        assert_eq!(rebuild.open_shells, 0);
        assert!(opened.cache.open_shells().unwrap().is_empty());
        drop(opened.cache);
        fs::remove_dir_all(&state_dir).unwrap();
    }
}
