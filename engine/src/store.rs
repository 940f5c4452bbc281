//! The state store: the run journal and the sled cache behind one owner (docs/state.md).
//!
//! [`Store::open`] locks the state directory (one psfleet process at a time), opens the cache
//! (rebuilding it from the journals when it is damaged) and answers queries: [`Store::runs`],
//! [`Store::load_run`], [`Store::open_shells`], [`Store::facts`]. A run is written through a
//! [`RunWriter`]: a cloneable handle that sends messages over a bounded channel to ONE owner
//! thread, which holds the journal and does every cache write.
//!
//! The owner takes whatever messages are queued (up to [`MAX_BATCH`]), appends their lines,
//! makes them durable with one `fdatasync` (group commit), then updates the cache and answers
//! every sender. So [`RunWriter::host_done`] returns only once the record is on disk, and a
//! host counts as done only then; [`RunWriter::host_started`] likewise returns once the
//! `started` line is durable, so a host is in flight in the journal before any packet reaches
//! it and a crash afterwards reports it Interrupted rather than running it twice.
//!
//! The owner is a dedicated OS thread rather than a tokio task because `fdatasync` blocks:
//! on a runtime worker it would stall every connection sharing that worker.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::budget::ShellFacts;
use crate::cache::{Cache, CacheError, HostFacts, REAPED_FILE, Rebuild};
use crate::journal::{
    self, EndReason, Entry, Journal, JournalError, JournalStats, OpenShell, RUNS_DIR, RunEnd,
    RunMeta, RunState, RunSummary, Tally, list_run_dirs, timestamp_now,
};
use crate::record::{HostRecord, RunId};

/// The most messages the owner commits with one fsync.
pub const MAX_BATCH: usize = 512;
/// The channel's capacity: senders wait (back-pressure) when the owner falls this far behind.
pub const CHANNEL_CAPACITY: usize = 4096;
/// The lock file that keeps a second psfleet process out of the state directory.
pub const LOCK_FILE: &str = "store.lock";
/// How often the owner refreshes the run's index entry in the cache while a run goes on.
const INDEX_REFRESH: Duration = Duration::from_secs(1);
/// The most cache writes the owner holds back before making them (see `PendingCache`).
const MAX_PENDING_CACHE_WRITES: usize = 4096;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the state directory.
    #[error("the state directory {0} is in use by another psfleet process")]
    Locked(PathBuf),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The cache failed and could not be rebuilt.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The journal write behind this request failed: the record is NOT durable.
    #[error("journal write failed, the record is not durable: {0}")]
    NotDurable(String),
    /// The run's owner thread has stopped (the run was finished, or it failed).
    #[error("the run's store writer has stopped")]
    Closed,
    /// A run id that is not a plain file name.
    #[error("not a run id: {0:?}")]
    BadRunId(String),
}

/// The state directory: journals plus cache.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    cache: Cache,
    rebuilt: Option<Rebuild>,
    _lock: File,
}

/// What [`RunWriter::finish`] and a dropped writer leave behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunClosed {
    /// The run's index entry.
    pub summary: RunSummary,
    /// Lines written and fsyncs made by this process for the run.
    pub stats: JournalStats,
    /// Set when a cache write failed during the run (the journal is complete regardless).
    pub cache_error: Option<String>,
}

/// A handle for writing one run; clone it into every task that reports hosts.
#[derive(Debug, Clone)]
pub struct RunWriter {
    run_id: RunId,
    tx: mpsc::Sender<Msg>,
}

impl Store {
    /// Opens (creating if needed) the state directory `dir`: takes its lock, opens the cache,
    /// and rebuilds the cache from the journals if it is damaged or missing
    /// ([`Store::rebuilt`] then says what happened).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let opened = Cache::open_or_rebuild(dir)?;
        if let Some(rebuild) = &opened.rebuilt {
            tracing::warn!("{rebuild}");
        }
        Ok(Store {
            dir: dir.to_owned(),
            cache: opened.cache,
            rebuilt: opened.rebuilt,
            _lock: lock,
        })
    }

    /// Set when opening had to rebuild the cache from the journals: say so to the operator.
    pub fn rebuilt(&self) -> Option<&Rebuild> {
        self.rebuilt.as_ref()
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache (facts, open shells, run index).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Every run, oldest first. Index entries come from the cache when they match the journal's
    /// length; otherwise (a crash, a stale or damaged cache) the journal is replayed and the
    /// index refreshed. Runs whose journal cannot be read are left out (and logged).
    pub fn runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        let mut out = Vec::new();
        for dir in list_run_dirs(&self.dir)? {
            let Some(id) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let id = RunId(id.to_owned());
            let on_disk = fs::metadata(dir.join(journal::JOURNAL_FILE))
                .map(|m| m.len())
                .unwrap_or(0);
            if let Ok(Some(cached)) = self.cache.run(&id)
                && cached.journal_bytes == on_disk
                && cached.path == dir
            {
                out.push(cached);
                continue;
            }
            match Journal::replay(&dir) {
                Ok(state) => {
                    let summary = state.summary();
                    if let Err(e) = self.cache.put_run(&summary) {
                        tracing::warn!("state cache: could not index run {id}: {e}");
                    }
                    out.push(summary);
                }
                Err(e) => tracing::warn!("run {} is unreadable: {e}", dir.display()),
            }
        }
        Ok(out)
    }

    /// The run before `run_id` (by start) of the same inventory digest, if any: what "changed
    /// since the previous run" compares against.
    pub fn previous_run(&self, run_id: &RunId) -> Result<Option<RunSummary>, StoreError> {
        let runs = self.runs()?;
        let Some(this) = runs.iter().find(|r| &r.run_id == run_id) else {
            return Ok(None);
        };
        Ok(runs
            .iter()
            .filter(|r| {
                r.run_id < this.run_id
                    && r.job == this.job
                    && r.inventory_digest.is_some()
                    && r.inventory_digest == this.inventory_digest
            })
            .max_by(|a, b| a.run_id.cmp(&b.run_id))
            .cloned())
    }

    /// Reads a run from its journal (the truth; the cache is not consulted).
    pub fn load_run(&self, run_id: &RunId) -> Result<RunState, StoreError> {
        Ok(Journal::replay(&self.run_dir(run_id)?)?)
    }

    /// Shells recorded open and never closed: leaks to reap before touching their hosts.
    pub fn open_shells(&self) -> Result<Vec<OpenShell>, StoreError> {
        Ok(self.cache.open_shells()?)
    }

    /// The shells recorded open on one host.
    pub fn open_shells_on(&self, host: &str) -> Result<Vec<OpenShell>, StoreError> {
        Ok(self.cache.open_shells_on(host)?)
    }

    /// What is known about a host.
    pub fn facts(&self, host: &str) -> Result<Option<HostFacts>, StoreError> {
        Ok(self.cache.facts(host)?)
    }

    /// What the scheduler's shell budget needs about a host: MaxShellsPerUser learned earlier
    /// and the shells recorded open there (`HostJob::shell_facts`).
    pub fn shell_facts(&self, host: &str) -> Result<ShellFacts, StoreError> {
        let max_shells = self.facts(host)?.and_then(|f| f.max_shells_per_user);
        let open = self.open_shells_on(host)?.len();
        Ok(ShellFacts {
            max_shells,
            open_shells: u32::try_from(open).unwrap_or(u32::MAX),
        })
    }

    /// Records shells deleted outside any run (`psfleet cleanup`): appended to
    /// `<state>/reaped.jsonl` (fsync'd, so a rebuild does not resurrect them), then removed
    /// from the cache. Returns how many the cache knew.
    pub fn shells_reaped(&self, shells: &[(String, String)]) -> Result<usize, StoreError> {
        if shells.is_empty() {
            return Ok(0);
        }
        let path = self.dir.join(REAPED_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let at = timestamp_now();
        let mut text = Vec::new();
        for (host, shell_id) in shells {
            let entry = Entry::ShellClosed {
                host: host.clone(),
                shell_id: shell_id.clone(),
                at: at.clone(),
            };
            let line = serde_json::to_vec(&entry).map_err(JournalError::Encode)?;
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
        file.write_all(&text).map_err(io_err("write", &path))?;
        file.sync_data().map_err(io_err("fdatasync", &path))?;
        if !existed {
            journal::sync_dir(&self.dir)?;
        }
        let mut known = 0;
        for (host, shell_id) in shells {
            if self.cache.shell_closed(host, shell_id)? {
                known += 1;
            }
        }
        Ok(known)
    }

    /// Starts a new run: creates its journal (durable on return) and the owner thread.
    pub fn begin_run(&self, meta: RunMeta) -> Result<RunWriter, StoreError> {
        let journal = Journal::create(&self.dir, &meta)?;
        let tally = Tally::default();
        Ok(spawn_owner(journal, self.cache.clone(), meta, tally))
    }

    /// Continues a run: replays it, cuts a torn tail, appends a `resumed` line (durable on
    /// return) and starts the owner thread. The returned state says which hosts are done
    /// (skip them), which were in flight (Interrupted; see [`RunState::resume_plan`]).
    pub fn resume_run(
        &self,
        run_id: &RunId,
        rerun_interrupted: bool,
    ) -> Result<(RunState, RunWriter), StoreError> {
        let (mut journal, state) = Journal::reopen(&self.run_dir(run_id)?)?;
        journal.append(&Entry::Resumed {
            at: timestamp_now(),
            rerun_interrupted,
        })?;
        journal.commit()?;
        let tally = Tally::from_state(&state);
        let writer = spawn_owner(journal, self.cache.clone(), state.meta.clone(), tally);
        Ok((state, writer))
    }

    fn run_dir(&self, run_id: &RunId) -> Result<PathBuf, StoreError> {
        let id = &run_id.0;
        let plain = !id.is_empty()
            && id != "."
            && id != ".."
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !plain {
            return Err(StoreError::BadRunId(id.clone()));
        }
        Ok(self.dir.join(RUNS_DIR).join(id))
    }
}

impl RunWriter {
    /// The run.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Journals that `host` goes in flight; returns once that is durable. Call it before the
    /// first packet goes to the host.
    pub async fn host_started(&self, host: &str) -> Result<(), StoreError> {
        self.request(|ack| Msg::Started(host.to_owned(), Some(ack)))
            .await
    }

    /// Journals the host's final record; returns once it is durable (the host counts as done
    /// only then).
    pub async fn host_done(&self, record: HostRecord) -> Result<(), StoreError> {
        self.request(|ack| Msg::Done(Box::new(record), Some(ack)))
            .await
    }

    /// Journals and caches a shell the host created (so a crash leaves a leak to reap).
    pub async fn shell_opened(&self, host: &str, shell_id: &str) -> Result<(), StoreError> {
        self.request(|ack| Msg::ShellOpened(host.to_owned(), shell_id.to_owned(), Some(ack)))
            .await
    }

    /// Journals and uncaches a deleted shell.
    pub async fn shell_closed(&self, host: &str, shell_id: &str) -> Result<(), StoreError> {
        self.request(|ack| Msg::ShellClosed(host.to_owned(), shell_id.to_owned(), Some(ack)))
            .await
    }

    /// Journals facts learned about a host and merges them into the cache.
    pub async fn facts(&self, host: &str, facts: HostFacts) -> Result<(), StoreError> {
        self.request(|ack| Msg::Facts(host.to_owned(), Box::new(facts), Some(ack)))
            .await
    }

    /// Sends `host`'s `started` line without waiting for it to be durable; the returned
    /// [`Durable`] says when it is. What may not reach the host before the line is durable
    /// must await it first (the fleet run's connect gate does, before every TCP connect),
    /// so the commit overlaps whatever comes before the first packet.
    pub async fn host_started_queued(&self, host: &str) -> Result<Durable, StoreError> {
        let (ack, rx) = oneshot::channel();
        self.enqueue(Msg::Started(host.to_owned(), Some(ack)))
            .await?;
        Ok(Durable(rx))
    }

    /// Sends a deleted shell's line without waiting for it to be durable. Losing it is
    /// harmless (a crash leaves the shell recorded open, and the reaper finds it gone), and
    /// any later acknowledged request covers it: one owner takes the channel in order and
    /// the journal refuses every write after a failed one (`Journal::append`).
    pub async fn shell_closed_queued(&self, host: &str, shell_id: &str) -> Result<(), StoreError> {
        self.enqueue(Msg::ShellClosed(host.to_owned(), shell_id.to_owned(), None))
            .await
    }

    /// Sends facts learned about a host without waiting for them to be durable (the host's
    /// `done` record, sent after them, is acknowledged only once they are, see
    /// [`RunWriter::shell_closed_queued`]).
    pub async fn facts_queued(&self, host: &str, facts: HostFacts) -> Result<(), StoreError> {
        self.enqueue(Msg::Facts(host.to_owned(), Box::new(facts), None))
            .await
    }

    /// Ends the run: an `end` line, durable, the index entry updated, the cache flushed. The
    /// owner thread stops; other clones of this writer get [`StoreError::Closed`] afterwards.
    pub async fn finish(self, reason: EndReason) -> Result<RunClosed, StoreError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Msg::Finish(reason, ack))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn request(
        &self,
        msg: impl FnOnce(oneshot::Sender<Ack>) -> Msg,
    ) -> Result<(), StoreError> {
        let (ack, rx) = oneshot::channel();
        self.enqueue(msg(ack)).await?;
        Durable(rx).await
    }

    /// Hands `msg` to the owner (waiting for room in the channel: back-pressure), not for
    /// its commit.
    async fn enqueue(&self, msg: Msg) -> Result<(), StoreError> {
        self.tx.send(msg).await.map_err(|_| StoreError::Closed)
    }
}

/// A request sent to the owner: resolves once its line is durable, or with why it is not.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<Ack>);

impl std::future::Future for Durable {
    type Output = Result<(), StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| match answer {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(StoreError::NotDurable(message)),
                Err(_) => Err(StoreError::Closed),
            })
    }
}

/// The answer to one request: `Err` carries why the journal write failed.
type Ack = Result<(), String>;

/// Where an answer goes: `None` for a request sent without waiting (a later acknowledged one
/// covers it).
type Reply = Option<oneshot::Sender<Ack>>;

#[derive(Debug)]
enum Msg {
    Started(String, Reply),
    Done(Box<HostRecord>, Reply),
    ShellOpened(String, String, Reply),
    ShellClosed(String, String, Reply),
    Facts(String, Box<HostFacts>, Reply),
    Finish(EndReason, FinishReply),
}

type FinishReply = oneshot::Sender<Result<RunClosed, StoreError>>;

/// The owner: one thread holding the journal and making every cache write.
struct Owner {
    journal: Journal,
    cache: Cache,
    /// Cleared after the first cache failure: the run goes on with the journal alone.
    cache_error: Option<String>,
    meta: RunMeta,
    tally: Tally,
    last_index: Instant,
    pending: PendingCache,
    /// Effects of lines appended by batches nobody waited for, applied after the next sync.
    unsynced: Vec<Effect>,
}

/// Cache writes of committed lines not made yet. The journal is the truth and the cache is
/// rebuilt from it after any unclean stop (`Cache::open_or_rebuild` compares the indexed
/// journal length), so the owner may hold them back, as long as every index entry it writes
/// comes after them (`Owner::index`) and a run's hosts do not read them back (a host is in a
/// run once; its own shells are tracked in memory by the jobs). Held back, a shell opened and
/// deleted within one index period costs sled nothing, and a host's facts are merged in
/// memory: two sled writes fewer per host for a script run.
#[derive(Default)]
struct PendingCache {
    /// Shells journaled open, by lower-cased host and id (`cache::shell_key`'s order).
    opened: HashMap<(String, String), OpenShell>,
    /// Facts to merge, by lower-cased host (`cache::host_key`).
    facts: HashMap<String, HostFacts>,
}

impl PendingCache {
    fn len(&self) -> usize {
        self.opened.len() + self.facts.len()
    }
}

fn spawn_owner(journal: Journal, cache: Cache, meta: RunMeta, tally: Tally) -> RunWriter {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let run_id = meta.run_id.clone();
    start_owner(Owner::new(journal, cache, meta, tally), rx);
    RunWriter { run_id, tx }
}

fn start_owner(owner: Owner, rx: mpsc::Receiver<Msg>) {
    let spawned = thread::Builder::new()
        .name(format!("psfleet-store-{}", owner.meta.run_id))
        .spawn(move || owner.run(rx));
    if let Err(e) = spawned {
        // Without the thread every request fails with Closed (the receiver was dropped with
        // the closure): the run cannot acknowledge hosts, which is the safe failure.
        tracing::error!("could not start the state store thread: {e}");
    }
}

impl Owner {
    fn new(journal: Journal, cache: Cache, meta: RunMeta, tally: Tally) -> Owner {
        let mut owner = Owner {
            journal,
            cache,
            cache_error: None,
            meta,
            tally,
            last_index: Instant::now(),
            pending: PendingCache::default(),
            unsynced: Vec::new(),
        };
        // Index the run at once: a cache that does not know a run folder is rebuilt.
        owner.index(None);
        owner
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            if let Some((reply, result)) = self.process(&mut batch) {
                // Close the journal and release the cache before answering, so a caller that
                // reopens the store right after `finish` finds sled's lock free.
                drop(self);
                let _ = reply.send(result);
                return;
            }
        }
        // Every writer was dropped without finish (the process is stopping): everything sent
        // was committed batch by batch, but for the lines nobody waited for: sync them, then
        // leave the index as current as the journal.
        match self.journal.commit() {
            Ok(()) => {
                for effect in std::mem::take(&mut self.unsynced) {
                    self.apply(effect);
                }
            }
            Err(e) => tracing::error!("state journal: {e}"),
        }
        self.index(None);
        self.cache_flush();
    }

    /// Writes one batch with one commit, then answers it. Returns the finish reply and its
    /// answer when the run finished.
    fn process(
        &mut self,
        batch: &mut Vec<Msg>,
    ) -> Option<(FinishReply, Result<RunClosed, StoreError>)> {
        let mut finish = None;
        let mut acks = Vec::with_capacity(batch.len());
        let mut after = Vec::with_capacity(batch.len());
        let mut write_error: Option<String> = None;
        for msg in batch.drain(..) {
            if finish.is_some() {
                // Sent after finish by another clone: dropped, its sender sees Closed.
                continue;
            }
            let (entry, ack, effect) = match msg {
                Msg::Started(host, ack) => (
                    Entry::Started {
                        host: host.clone(),
                        at: timestamp_now(),
                    },
                    ack,
                    Effect::Started(host),
                ),
                Msg::Done(record, ack) => {
                    let effect = Effect::Done(record.host.clone(), record.status, record.bucket);
                    (Entry::Done { record }, ack, effect)
                }
                Msg::ShellOpened(host, shell_id, ack) => {
                    let at = timestamp_now();
                    let shell = OpenShell {
                        host: host.clone(),
                        shell_id: shell_id.clone(),
                        run_id: self.meta.run_id.clone(),
                        created: at.clone(),
                    };
                    (
                        Entry::ShellOpened { host, shell_id, at },
                        ack,
                        Effect::ShellOpened(shell),
                    )
                }
                Msg::ShellClosed(host, shell_id, ack) => (
                    Entry::ShellClosed {
                        host: host.clone(),
                        shell_id: shell_id.clone(),
                        at: timestamp_now(),
                    },
                    ack,
                    Effect::ShellClosed(host, shell_id),
                ),
                Msg::Facts(host, facts, ack) => (
                    Entry::Facts {
                        host: host.clone(),
                        facts: facts.clone(),
                    },
                    ack,
                    Effect::Facts(host, facts),
                ),
                Msg::Finish(reason, reply) => {
                    finish = Some((reason, reply));
                    continue;
                }
            };
            if write_error.is_none()
                && let Err(e) = self.journal.append(&entry)
            {
                write_error = Some(e.to_string());
            }
            acks.push(ack);
            after.push(effect);
        }
        let end = finish.as_ref().map(|(reason, _)| RunEnd {
            at: timestamp_now(),
            reason: *reason,
        });
        if write_error.is_none()
            && let Some(end) = &end
            && let Err(e) = self.journal.append(&Entry::End(end.clone()))
        {
            write_error = Some(e.to_string());
        }
        // A batch nobody waits for (shell_closed and facts sent with `*_queued`) is not
        // synced on its own: its lines stay appended and the next acknowledged batch (a
        // host's `done` follows them) or the end syncs them with its own. Its cache effects
        // wait for that sync too, so the cache still never knows more than the journal.
        let waited_for = finish.is_some() || acks.iter().any(Option::is_some);
        if !waited_for && write_error.is_none() {
            self.unsynced.append(&mut after);
            return None;
        }
        if write_error.is_none()
            && let Err(e) = self.journal.commit()
        {
            write_error = Some(e.to_string());
        }
        match &write_error {
            None => {
                // The journal is durable: now the cache (which never knows more than the
                // journal), then the answers.
                let unsynced = std::mem::take(&mut self.unsynced);
                for effect in unsynced.into_iter().chain(after) {
                    self.apply(effect);
                }
                for ack in acks.into_iter().flatten() {
                    let _ = ack.send(Ok(()));
                }
            }
            Some(message) => {
                tracing::error!("state journal: {message}");
                for ack in acks.into_iter().flatten() {
                    let _ = ack.send(Err(message.clone()));
                }
            }
        }
        if let Some((_, reply)) = finish {
            let result = match write_error {
                None => {
                    self.write_pending();
                    let summary = self.summary(end);
                    self.cache_op(|c| c.put_run(&summary));
                    self.cache_flush();
                    Ok(RunClosed {
                        summary,
                        stats: self.journal.stats(),
                        cache_error: self.cache_error.clone(),
                    })
                }
                Some(message) => Err(StoreError::NotDurable(message)),
            };
            return Some((reply, result));
        }
        if self.last_index.elapsed() >= INDEX_REFRESH {
            self.index(None);
        } else if self.pending.len() >= MAX_PENDING_CACHE_WRITES {
            self.write_pending();
        }
        None
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Started(host) => self.tally.started(&host),
            Effect::Done(host, status, bucket) => self.tally.done_parts(&host, status, bucket),
            Effect::ShellOpened(shell) => {
                let key = (shell.host.to_ascii_lowercase(), shell.shell_id.clone());
                self.pending.opened.insert(key, shell);
            }
            Effect::ShellClosed(host, shell_id) => {
                let key = (host.to_ascii_lowercase(), shell_id);
                if self.pending.opened.remove(&key).is_none() {
                    self.cache_op(|c| c.shell_closed(&host, &key.1).map(drop));
                }
            }
            Effect::Facts(host, facts) => {
                self.pending
                    .facts
                    .entry(host.to_ascii_lowercase())
                    .or_default()
                    .merge(*facts);
            }
        }
    }

    /// Makes the cache writes held back (`PendingCache`). Merging the held facts into the
    /// cached entry equals merging each in turn: `HostFacts::merge` takes the newer of every
    /// field and extends the quotas in order.
    fn write_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for shell in pending.opened.into_values() {
            self.cache_op(|c| c.shell_opened(&shell));
        }
        for (host, facts) in pending.facts {
            self.cache_op(|c| c.merge_facts(&host, facts).map(drop));
        }
    }

    fn summary(&self, ended: Option<RunEnd>) -> RunSummary {
        self.tally
            .summary(&self.meta, self.journal.dir(), ended, self.journal.len())
    }

    /// Refreshes the run's index entry, after the cache writes held back: an entry that
    /// claims the journal's length must never be in the cache before what that length holds.
    fn index(&mut self, ended: Option<RunEnd>) {
        self.write_pending();
        let summary = self.summary(ended);
        self.cache_op(|c| c.put_run(&summary));
        self.last_index = Instant::now();
    }

    fn cache_flush(&mut self) {
        self.cache_op(Cache::flush);
    }

    /// Runs a cache write unless the cache already failed; a failure is logged once and the
    /// run goes on with the journal alone (the next `Store::open` rebuilds what is missing).
    fn cache_op(&mut self, op: impl FnOnce(&Cache) -> Result<(), CacheError>) {
        if self.cache_error.is_some() {
            return;
        }
        if let Err(e) = op(&self.cache) {
            tracing::warn!("state cache write failed, continuing with the journal alone: {e}");
            self.cache_error = Some(e.to_string());
        }
    }
}

/// What a committed message does to the tally and the cache.
enum Effect {
    Started(String),
    Done(
        String,
        crate::record::Status,
        Option<psfleet_core::taxonomy::Bucket>,
    ),
    ShellOpened(OpenShell),
    ShellClosed(String, String),
    Facts(String, Box<HostFacts>),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ConnectionSettings;
    use crate::journal::tests::{record, temp_dir};
    use crate::journal::{EndReason, new_run_id};
    use crate::record::{JobKind, Status};
    use psfleet_core::taxonomy::Bucket;

    #[test]
    fn a_batch_nobody_waits_for_is_synced_with_the_next_acknowledged_one() {
        let state_dir = temp_dir("store-unsynced");
        let cache = Cache::open_or_rebuild(&state_dir).unwrap().cache;
        let meta = RunMeta::new(RunId("20260101T000000Z-00ac".into()), JobKind::Script, 1);
        let journal = Journal::create(&state_dir, &meta).unwrap();
        let dir = journal.dir().to_owned();
        let mut owner = Owner::new(journal, cache.clone(), meta.clone(), Tally::default());
        let facts = HostFacts {
            max_shells_per_user: Some(3),
            ..HostFacts::default()
        };
        let mut batch = vec![
            Msg::ShellClosed("h0001".into(), "s1".into(), None),
            Msg::Facts("h0001".into(), Box::new(facts), None),
        ];
        assert!(owner.process(&mut batch).is_none());
        // Appended, not synced, and not in the cache yet (it never knows more than the
        // journal's synced lines).
        assert_eq!(owner.journal.stats().syncs, 0);
        assert_eq!(owner.journal.pending(), 2);
        assert_eq!(owner.unsynced.len(), 2);
        let (ack, answered) = oneshot::channel();
        let rec = record(&meta.run_id, "h0001", None);
        let mut batch = vec![Msg::Done(Box::new(rec), Some(ack))];
        assert!(owner.process(&mut batch).is_none());
        assert_eq!(answered.blocking_recv().unwrap(), Ok(()));
        assert_eq!(owner.journal.stats(), JournalStats { lines: 3, syncs: 1 });
        assert!(owner.unsynced.is_empty());
        let (reply, finished) = oneshot::channel();
        let mut batch = vec![Msg::Finish(EndReason::Completed, reply)];
        let (reply_to, result) = owner.process(&mut batch).unwrap();
        drop(owner);
        let _ = reply_to.send(result);
        let closed = finished.blocking_recv().unwrap().unwrap();
        assert_eq!(closed.stats, JournalStats { lines: 4, syncs: 2 });
        assert_eq!(
            cache.facts("h0001").unwrap().unwrap().max_shells_per_user,
            Some(3)
        );
        let state = Journal::replay(&dir).unwrap();
        assert_eq!(state.done.len(), 1);
        drop(cache);
        fs::remove_dir_all(&state_dir).unwrap();
    }

    #[test]
    fn held_back_cache_writes_land_before_the_index_and_net_out() {
        let state_dir = temp_dir("store-pending");
        let cache = Cache::open_or_rebuild(&state_dir).unwrap().cache;
        let meta = RunMeta::new(RunId("20260101T000000Z-00ab".into()), JobKind::Script, 3);
        let journal = Journal::create(&state_dir, &meta).unwrap();
        let dir = journal.dir().to_owned();
        let owner = Owner::new(journal, cache.clone(), meta.clone(), Tally::default());
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let fact = |max: Option<u32>, ps: Option<&str>| {
            Box::new(HostFacts {
                max_shells_per_user: max,
                powershell_version: ps.map(str::to_owned),
                ..HostFacts::default()
            })
        };
        // Sent without answers, as a fleet run sends shell_closed and facts; one batch.
        let msgs = [
            Msg::ShellOpened("H1".into(), "s1".into(), None),
            Msg::ShellOpened("h2".into(), "s2".into(), None),
            Msg::ShellClosed("h1".into(), "s1".into(), None),
            Msg::Facts("h3".into(), fact(Some(5), None), None),
            Msg::Facts("H3".into(), fact(None, Some("5.1")), None),
            Msg::Facts("h3".into(), fact(Some(7), None), None),
        ];
        for msg in msgs {
            tx.try_send(msg).unwrap();
        }
        let (reply, finished) = oneshot::channel();
        tx.try_send(Msg::Finish(EndReason::Completed, reply))
            .unwrap();
        start_owner(owner, rx);
        let closed = finished.blocking_recv().unwrap().unwrap();
        assert_eq!(closed.cache_error, None);
        // The shell opened and deleted within the period never reached sled; the other did.
        let open: Vec<(String, String)> = cache
            .open_shells()
            .unwrap()
            .into_iter()
            .map(|s| (s.host, s.shell_id))
            .collect();
        assert_eq!(open, [("h2".to_owned(), "s2".to_owned())]);
        // Facts merged in memory equal merging each in turn: the newest of every field.
        let facts = cache.facts("h3").unwrap().unwrap();
        assert_eq!(facts.max_shells_per_user, Some(7));
        assert_eq!(facts.powershell_version.as_deref(), Some("5.1"));
        // The journal holds every line, so a rebuild gives the same cache.
        let state = Journal::replay(&dir).unwrap();
        assert_eq!(state.summary().journal_bytes, closed.summary.journal_bytes);
        assert_eq!(closed.stats, JournalStats { lines: 7, syncs: 1 });
        assert_eq!(cache.run(&meta.run_id).unwrap(), Some(closed.summary));
        drop(cache);
        fs::remove_dir_all(&state_dir).unwrap();
    }

    #[test]
    fn queued_messages_are_committed_in_batches_before_any_is_acknowledged() {
        let state_dir = temp_dir("store-group");
        let cache = Cache::open_or_rebuild(&state_dir).unwrap().cache;
        let meta = RunMeta::new(RunId("20260101T000000Z-00aa".into()), JobKind::Script, 1000);
        let journal = Journal::create(&state_dir, &meta).unwrap();
        let dir = journal.dir().to_owned();
        let owner = Owner::new(journal, cache, meta.clone(), Tally::default());
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        // Queue 1000 records before the owner runs: it must take them in batches of at most
        // MAX_BATCH, one fsync each.
        let mut acks = Vec::new();
        for i in 0..1000 {
            let (ack, rx) = oneshot::channel();
            let rec = record(&meta.run_id, &format!("h{i:04}"), None);
            tx.try_send(Msg::Done(Box::new(rec), Some(ack))).unwrap();
            acks.push(rx);
        }
        let (reply, finished) = oneshot::channel();
        tx.try_send(Msg::Finish(EndReason::Completed, reply))
            .unwrap();
        start_owner(owner, rx);
        for ack in acks {
            assert_eq!(ack.blocking_recv().unwrap(), Ok(()));
        }
        let closed = finished.blocking_recv().unwrap().unwrap();
        // 1000 = 512 + 488, and the finish rides in the second batch with its end line.
        assert_eq!(
            closed.stats,
            JournalStats {
                lines: 1001,
                syncs: 2
            }
        );
        assert_eq!(closed.summary.done, 1000);
        assert_eq!(closed.summary.succeeded, 1000);
        assert_eq!(
            closed.summary.ended.map(|e| e.reason),
            Some(EndReason::Completed)
        );
        let state = Journal::replay(&dir).unwrap();
        assert_eq!(state.done.len(), 1000);
        assert_eq!(state.summary().journal_bytes, closed.summary.journal_bytes);
        fs::remove_dir_all(&state_dir).unwrap();
    }

    #[tokio::test]
    async fn a_run_goes_through_the_store_and_reads_back_after_reopen() {
        let state_dir = temp_dir("store-run");
        let store = Store::open(&state_dir).unwrap();
        assert!(store.rebuilt().is_none());
        assert!(matches!(
            Store::open(&state_dir),
            Err(StoreError::Locked(_))
        ));
        let run_id = new_run_id();
        let mut meta = RunMeta::new(run_id.clone(), JobKind::Script, 3).with_script("hostname");
        meta.inventory_digest = Some("abc".into());
        let writer = store.begin_run(meta).unwrap();

        // Concurrent hosts, as the scheduler sends them.
        let mut tasks = Vec::new();
        for (host, bucket) in [
            ("srv1", None),
            ("srv2", Some(Bucket::AccessDenied)),
            ("srv3", Some(Bucket::AccessDenied)),
        ] {
            let w = writer.clone();
            let rid = run_id.clone();
            tasks.push(tokio::spawn(async move {
                w.host_started(host).await.unwrap();
                w.shell_opened(host, &format!("SHELL-{host}"))
                    .await
                    .unwrap();
                if bucket.is_none() {
                    w.shell_closed(host, &format!("SHELL-{host}"))
                        .await
                        .unwrap();
                    w.facts(
                        host,
                        HostFacts {
                            max_shells_per_user: Some(2),
                            last_good: Some(ConnectionSettings {
                                address: None,
                                scheme: "http".into(),
                                port: 5985,
                                authentication: "Negotiate".into(),
                                configuration_name: None,
                            }),
                            ..HostFacts::default()
                        },
                    )
                    .await
                    .unwrap();
                }
                w.host_done(record(&rid, host, bucket)).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let closed = writer.finish(EndReason::Completed).await.unwrap();
        assert_eq!(closed.cache_error, None);
        let s = &closed.summary;
        assert_eq!((s.done, s.succeeded, s.failed, s.interrupted), (3, 1, 2, 0));
        assert_eq!(s.buckets.get("AccessDenied"), Some(&2));

        let runs = store.runs().unwrap();
        assert_eq!(runs, vec![closed.summary.clone()]);
        let state = store.load_run(&run_id).unwrap();
        assert_eq!(state.done.len(), 3);
        assert_eq!(state.done["srv2"].status, Status::Failed);
        let leaks: Vec<_> = store
            .open_shells()
            .unwrap()
            .into_iter()
            .map(|s| s.shell_id)
            .collect();
        assert_eq!(leaks, vec!["SHELL-srv2", "SHELL-srv3"]);
        assert_eq!(
            store.facts("SRV1").unwrap().unwrap().max_shells_per_user,
            Some(2)
        );
        assert_eq!(
            store.shell_facts("srv1").unwrap(),
            ShellFacts {
                max_shells: Some(2),
                open_shells: 0
            }
        );
        assert_eq!(store.shell_facts("srv3").unwrap().open_shells, 1);
        assert_eq!(
            store
                .shells_reaped(&[("srv2".into(), "SHELL-srv2".into())])
                .unwrap(),
            1
        );
        drop(store);

        // A clean close leaves a cache that matches the journals: no rebuild.
        let store = Store::open(&state_dir).unwrap();
        assert!(store.rebuilt().is_none(), "{:?}", store.rebuilt());
        assert_eq!(store.open_shells().unwrap().len(), 1);
        assert_eq!(store.runs().unwrap(), runs);
        assert!(matches!(
            store.load_run(&RunId("../etc".into())),
            Err(StoreError::BadRunId(_))
        ));
        drop(store);
        fs::remove_dir_all(&state_dir).unwrap();
    }

    #[tokio::test]
    async fn a_resumed_run_skips_done_hosts_and_reports_the_interrupted_ones() {
        let state_dir = temp_dir("store-resume");
        let store = Store::open(&state_dir).unwrap();
        let run_id = RunId("20260101T000000Z-0b0b".into());
        let mut meta = RunMeta::new(run_id.clone(), JobKind::Script, 3);
        meta.inventory_digest = Some("inv".into());
        let writer = store.begin_run(meta).unwrap();
        writer.host_started("a").await.unwrap();
        writer.host_started("b").await.unwrap();
        writer.host_done(record(&run_id, "a", None)).await.unwrap();
        // The process "dies": the writer goes away without finish.
        drop(writer);
        drop(store);

        let store = Store::open(&state_dir).unwrap();
        let (state, writer) = store.resume_run(&run_id, false).unwrap();
        let plan = state.resume_plan(["a", "b", "c"], false);
        assert_eq!(
            (plan.skip, plan.interrupted, plan.run.clone()),
            (vec!["a".into()], vec!["b".into()], vec!["c".to_string()])
        );
        for host in &plan.run {
            writer.host_started(host).await.unwrap();
            writer.host_done(record(&run_id, host, None)).await.unwrap();
        }
        let closed = writer.finish(EndReason::Completed).await.unwrap();
        assert_eq!(
            (closed.summary.done, closed.summary.interrupted),
            (2, 1),
            "{:?}",
            closed.summary
        );
        let state = store.load_run(&run_id).unwrap();
        assert_eq!(state.resumes, 1);
        let records = state.records();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].host, "b");
        assert_eq!(records[1].bucket, Some(Bucket::Interrupted));

        // A later run of the same inventory finds this one as its previous run.
        let later = RunId("20260102T000000Z-0c0c".into());
        let mut meta = RunMeta::new(later.clone(), JobKind::Script, 3);
        meta.inventory_digest = Some("inv".into());
        store
            .begin_run(meta)
            .unwrap()
            .finish(EndReason::Interrupted)
            .await
            .unwrap();
        assert_eq!(
            store.previous_run(&later).unwrap().map(|r| r.run_id),
            Some(run_id.clone())
        );
        assert_eq!(store.previous_run(&run_id).unwrap(), None);
        drop(store);
        fs::remove_dir_all(&state_dir).unwrap();
    }
}
