//! The run journal: the durable truth of a run (docs/state.md).
//!
//! One directory per run, `<state>/runs/<run_id>/`, holding `run.json` (what was run, written
//! once, atomically) and `journal.jsonl` (append-only JSON lines). A host counts as done only
//! once its `done` line is on disk: lines are written in batches and each batch is made durable
//! with ONE `fdatasync` before any of its hosts is acknowledged (group commit; the store's owner
//! thread does the batching, see [`crate::store`]). The directory is fsync'd when the run is
//! created so the files themselves survive a power cut.
//!
//! sled is only a cache beside this (`/work/shared/docs/dependencies.md`: its flush does not
//! fsync on Linux and it lost acknowledged records under simulated power loss), so resume,
//! reports, diff and the cache rebuild all read these files.
//!
//! Reading never panics: a torn last line (a write cut short by a crash) is ignored, counted
//! and reported; an unreadable line in the middle is skipped and counted the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use psfleet_core::taxonomy::Bucket;
use serde::{Deserialize, Serialize};

use crate::cache::HostFacts;
use crate::record::{HostRecord, JobKind, RunId, Status};

/// The folder under the state directory that holds one folder per run.
pub const RUNS_DIR: &str = "runs";
/// The run's metadata file inside its folder.
pub const RUN_FILE: &str = "run.json";
/// The append-only journal inside the run's folder.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// The version of the `run.json` / `journal.jsonl` layout this code writes and reads.
pub const JOURNAL_SCHEMA: u32 = 1;
/// The longest journal line read back (a host record with capped output fits easily); longer
/// lines are skipped and counted as corrupt rather than read into memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// At most this many corrupt line numbers are kept in a [`RunState`] (all are counted).
const MAX_CORRUPT_KEPT: usize = 100;

/// What was run: written once to `run.json` when the run is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Layout version ([`JOURNAL_SCHEMA`]).
    pub schema: u32,
    /// The run.
    pub run_id: RunId,
    /// When the run started, RFC 3339 UTC.
    pub started: String,
    /// The command line, secrets removed (see [`redact_command_line`]).
    pub command_line: Vec<String>,
    /// The inventory files (or `-` for stdin).
    pub inventory_paths: Vec<String>,
    /// SHA-256 over the inventory contents, hex, when known: runs of the same inventory are
    /// compared by it ("what changed since the previous run").
    pub inventory_digest: Option<String>,
    /// What kind of job ran.
    pub job: JobKind,
    /// SHA-256 of the script or command text, hex (`None` for sweeps).
    pub script_sha256: Option<String>,
    /// The script or command text.
    pub script: Option<String>,
    /// The effective options (forks, timeout, authentication, ...), never secrets.
    pub options: BTreeMap<String, serde_json::Value>,
    /// Hosts selected for the run.
    pub host_count: u64,
}

impl RunMeta {
    /// Metadata for a new run started now, with no script, options or inventory yet.
    pub fn new(run_id: RunId, job: JobKind, host_count: u64) -> Self {
        RunMeta {
            schema: JOURNAL_SCHEMA,
            run_id,
            started: timestamp_now(),
            command_line: Vec::new(),
            inventory_paths: Vec::new(),
            inventory_digest: None,
            job,
            script_sha256: None,
            script: None,
            options: BTreeMap::new(),
            host_count,
        }
    }

    /// Sets the script text and its SHA-256.
    pub fn with_script(mut self, text: &str) -> Self {
        self.script_sha256 = Some(sha256_hex(text.as_bytes()));
        self.script = Some(text.to_owned());
        self
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Every selected host was accounted for.
    Completed,
    /// The operator stopped the run (Ctrl-C); hosts not started were skipped.
    Interrupted,
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEnd {
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Why.
    pub reason: EndReason,
}

/// One line of `journal.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// The host went in flight (its first attempt began).
    Started {
        /// Inventory host name.
        host: String,
        /// When, RFC 3339 UTC.
        at: String,
    },
    /// The host finished: its final record. Durable before the host counts as done.
    Done {
        /// The record.
        record: Box<HostRecord>,
    },
    /// A shell was created on the host (deleted later by a `shell_closed` line, or leaked).
    ShellOpened {
        /// Inventory host name.
        host: String,
        /// The ShellId the service returned.
        shell_id: String,
        /// When, RFC 3339 UTC.
        at: String,
    },
    /// A shell was deleted.
    ShellClosed {
        /// Inventory host name.
        host: String,
        /// The ShellId.
        shell_id: String,
        /// When, RFC 3339 UTC.
        at: String,
    },
    /// Facts learned about a host (kept here so the cache can be rebuilt from journals).
    Facts {
        /// Inventory host name.
        host: String,
        /// What was learned (absent fields were not learned).
        facts: Box<HostFacts>,
    },
    /// The run was resumed by a later process.
    Resumed {
        /// When, RFC 3339 UTC.
        at: String,
        /// Whether hosts interrupted earlier run again.
        rerun_interrupted: bool,
    },
    /// The run ended.
    End(RunEnd),
}

/// A shell created and not (yet) deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenShell {
    /// Inventory host name.
    pub host: String,
    /// The ShellId.
    pub shell_id: String,
    /// The run that created it.
    pub run_id: RunId,
    /// When it was created, RFC 3339 UTC.
    pub created: String,
}

/// The bytes at the end of the journal that did not form a complete line (a torn write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Offset of the first ignored byte: everything before it is whole lines.
    pub offset: u64,
    /// How many bytes were ignored.
    pub bytes: u64,
}

/// A run read back from its journal.
#[derive(Debug, Clone)]
pub struct RunState {
    /// The run's folder.
    pub dir: PathBuf,
    /// `run.json`.
    pub meta: RunMeta,
    /// Hosts done, with their final record (the last `done` line wins).
    pub done: HashMap<String, HostRecord>,
    /// Hosts started and not done: in flight when the process stopped, so Interrupted.
    pub in_flight: BTreeSet<String>,
    /// When each host in flight started.
    pub started_at: HashMap<String, String>,
    /// Shells this run opened and did not close.
    pub open_shells: Vec<OpenShell>,
    /// Facts journaled in this run, merged per host in journal order.
    pub facts: BTreeMap<String, HostFacts>,
    /// The `end` line, if the run ended.
    pub ended: Option<RunEnd>,
    /// How often the run was resumed.
    pub resumes: u32,
    /// The torn last line, if any (ignored).
    pub torn_tail: Option<TornTail>,
    /// Unreadable lines before the end (skipped): their count.
    pub corrupt_lines: u64,
    /// The first line numbers (1-based) of those, at most 100.
    pub corrupt_line_numbers: Vec<u64>,
    /// The journal's length in bytes when read.
    pub journal_bytes: u64,
}

/// The index entry of one run (what `psfleet runs` lists; kept in the cache, rebuilt from the
/// journal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// The run's folder.
    pub path: PathBuf,
    /// When it started, RFC 3339 UTC.
    pub started: String,
    /// Job kind.
    pub job: JobKind,
    /// Inventory digest, if known.
    pub inventory_digest: Option<String>,
    /// Hosts selected.
    pub host_count: u64,
    /// Hosts done (any status).
    pub done: u64,
    /// Hosts that succeeded.
    pub succeeded: u64,
    /// Hosts that failed.
    pub failed: u64,
    /// Hosts skipped.
    pub skipped: u64,
    /// Hosts in flight when the process stopped (reported Interrupted).
    pub interrupted: u64,
    /// Failed hosts per bucket name (in-flight hosts count under `Interrupted`).
    pub buckets: BTreeMap<String, u64>,
    /// The end, if the run ended.
    pub ended: Option<RunEnd>,
    /// The journal's length this summary was computed from: an index entry whose length
    /// differs from the file's is stale and recomputed.
    pub journal_bytes: u64,
}

/// Which hosts a resumed run skips, reports as interrupted, and runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResumePlan {
    /// Done already: never rerun.
    pub skip: Vec<String>,
    /// In flight when the process stopped.
    pub interrupted: Vec<String>,
    /// To run now: never started, plus the interrupted ones when asked to rerun them.
    pub run: Vec<String>,
}

/// Counters of a journal writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    /// Lines written.
    pub lines: u64,
    /// `fdatasync` calls made.
    pub syncs: u64,
}

/// Journal failures.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
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
    /// The run's folder exists already.
    #[error("run folder {0} exists already")]
    Exists(PathBuf),
    /// No such run.
    #[error("no run at {0} (no run.json)")]
    NotFound(PathBuf),
    /// `run.json` is unreadable.
    #[error("{path}: not a psfleet run.json: {source}")]
    BadMeta {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// `run.json` has a layout version this build does not read.
    #[error("{path}: journal schema {found}, this psfleet reads {JOURNAL_SCHEMA}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// An entry could not be encoded (cannot happen for the record types; kept typed).
    #[error("encoding a journal entry: {0}")]
    Encode(serde_json::Error),
    /// A write or fsync failed earlier; after a failed fsync the file's state is unknown, so
    /// the journal refuses further writes rather than acknowledge records it cannot vouch for.
    #[error("the journal at {0} failed earlier and accepts no more writes")]
    Poisoned(PathBuf),
}

/// An open journal, appending.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    pending: u64,
    poisoned: bool,
    stats: JournalStats,
    len: u64,
    /// The line being encoded, reused from one append to the next (issue 7).
    scratch: Vec<u8>,
}

impl Journal {
    /// Creates `<state_dir>/runs/<run_id>/` with `run.json` and an empty `journal.jsonl`, all
    /// durable (files and directories fsync'd) when this returns.
    pub fn create(state_dir: &Path, meta: &RunMeta) -> Result<Journal, JournalError> {
        let runs = state_dir.join(RUNS_DIR);
        let runs_existed = runs.is_dir();
        fs::create_dir_all(&runs).map_err(io_err("create", &runs))?;
        if !runs_existed {
            sync_dir(state_dir)?;
            if let Some(parent) = state_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                // Best effort: the state directory itself may just have been created.
                let _ = sync_dir(parent);
            }
        }
        let dir = runs.join(&meta.run_id.0);
        if !is_plain_name(&meta.run_id.0) {
            return Err(JournalError::Io {
                op: "create",
                path: dir,
                source: io::Error::new(io::ErrorKind::InvalidInput, "run id is not a file name"),
            });
        }
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(JournalError::Exists(dir));
            }
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
        let meta_json = serde_json::to_vec_pretty(meta).map_err(JournalError::Encode)?;
        write_atomically(&dir, RUN_FILE, &meta_json)?;
        let path = dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        file.sync_all().map_err(io_err("fsync", &path))?;
        sync_dir(&dir)?;
        sync_dir(&runs)?;
        Ok(Journal::over(dir, path, file, 0))
    }

    /// Reopens a run for appending (resume): replays it, cuts a torn tail off (so the next
    /// line starts on a line boundary), and returns the journal with the state read.
    pub fn reopen(run_dir: &Path) -> Result<(Journal, RunState), JournalError> {
        let state = Journal::replay(run_dir)?;
        let path = run_dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if let Some(tail) = &state.torn_tail {
            file.set_len(tail.offset)
                .map_err(io_err("truncate", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
        }
        let len = state
            .torn_tail
            .as_ref()
            .map_or(state.journal_bytes, |t| t.offset);
        Ok((Journal::over(run_dir.to_owned(), path, file, len), state))
    }

    /// Reads a run back. Tolerates a torn last line and unreadable lines (skipped and counted);
    /// fails only when `run.json` is missing or unreadable or the journal cannot be opened.
    pub fn replay(run_dir: &Path) -> Result<RunState, JournalError> {
        let meta = read_meta(run_dir)?;
        let path = run_dir.join(JOURNAL_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            // Created right after run.json: a crash between the two leaves a run with no lines.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(RunState::new(run_dir.to_owned(), meta));
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mut state = RunState::new(run_dir.to_owned(), meta);
        let mut reader = BufReader::new(file);
        let mut offset = 0u64;
        // End of the last line that parsed: unreadable lines after it form the torn tail.
        let mut good_end = 0u64;
        let mut bad_since_good: Vec<u64> = Vec::new();
        let mut line_no = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let (len, complete, overlong) =
                read_bounded_line(&mut reader, &mut buf).map_err(io_err("read", &path))?;
            if len == 0 {
                break;
            }
            line_no += 1;
            offset += len;
            let entry = if complete && !overlong {
                serde_json::from_slice::<Entry>(trim_newline(&buf)).ok()
            } else {
                None
            };
            match entry {
                Some(entry) => {
                    for n in bad_since_good.drain(..) {
                        state.note_corrupt(n);
                    }
                    state.apply(entry);
                    good_end = offset;
                }
                None if trim_newline(&buf).iter().all(u8::is_ascii_whitespace) && complete => {
                    // A blank line is harmless; it does not end the good prefix.
                    if bad_since_good.is_empty() {
                        good_end = offset;
                    }
                }
                None => bad_since_good.push(line_no),
            }
        }
        state.journal_bytes = offset;
        if !bad_since_good.is_empty() {
            state.torn_tail = Some(TornTail {
                offset: good_end,
                bytes: offset - good_end,
            });
        }
        Ok(state)
    }

    /// Appends an entry to the write buffer. Not durable until [`Journal::commit`].
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned(self.dir.clone()));
        }
        let line = &mut self.scratch;
        line.clear();
        serde_json::to_writer(&mut *line, entry).map_err(JournalError::Encode)?;
        line.push(b'\n');
        if let Err(e) = self.out.write_all(line) {
            self.poisoned = true;
            return Err(io_err("write", &self.path)(e));
        }
        self.pending += 1;
        self.stats.lines += 1;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Makes every appended entry durable: writes the buffer, then ONE `fdatasync`. Does
    /// nothing when nothing is pending.
    pub fn commit(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned(self.dir.clone()));
        }
        if self.pending == 0 {
            return Ok(());
        }
        // The error paths copy the path only when they are taken.
        let result = self
            .out
            .flush()
            .map_err(|e| io_err("write", &self.path)(e))
            .and_then(|()| {
                self.out
                    .get_ref()
                    .sync_data()
                    .map_err(|e| io_err("fdatasync", &self.path)(e))
            });
        if result.is_err() {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing
            // written since the last good sync can be vouched for.
            self.poisoned = true;
        }
        result?;
        self.pending = 0;
        self.stats.syncs += 1;
        Ok(())
    }

    /// The run's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries appended and not yet committed.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Lines written and syncs made by this writer.
    pub fn stats(&self) -> JournalStats {
        self.stats
    }

    /// The journal file's length once everything appended is written.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the journal has no lines.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn over(dir: PathBuf, path: PathBuf, file: File, len: u64) -> Journal {
        Journal {
            dir,
            path,
            out: BufWriter::with_capacity(256 * 1024, file),
            pending: 0,
            poisoned: false,
            stats: JournalStats::default(),
            len,
            scratch: Vec::with_capacity(1024),
        }
    }
}

impl RunState {
    /// An empty state for a run with no lines yet.
    pub fn new(dir: PathBuf, meta: RunMeta) -> Self {
        RunState {
            dir,
            meta,
            done: HashMap::new(),
            in_flight: BTreeSet::new(),
            started_at: HashMap::new(),
            open_shells: Vec::new(),
            facts: BTreeMap::new(),
            ended: None,
            resumes: 0,
            torn_tail: None,
            corrupt_lines: 0,
            corrupt_line_numbers: Vec::new(),
            journal_bytes: 0,
        }
    }

    /// Applies one journal entry, in journal order.
    pub fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Started { host, at } => {
                self.in_flight.insert(host.clone());
                self.started_at.insert(host, at);
            }
            Entry::Done { record } => {
                self.in_flight.remove(&record.host);
                self.started_at.remove(&record.host);
                self.done.insert(record.host.clone(), *record);
            }
            Entry::ShellOpened { host, shell_id, at } => self.open_shells.push(OpenShell {
                host,
                shell_id,
                run_id: self.meta.run_id.clone(),
                created: at,
            }),
            Entry::ShellClosed { host, shell_id, .. } => self
                .open_shells
                .retain(|s| !(s.shell_id == shell_id && s.host == host)),
            Entry::Facts { host, facts } => self.facts.entry(host).or_default().merge(*facts),
            Entry::Resumed { .. } => {
                self.resumes = self.resumes.saturating_add(1);
                // A resumed run is running again until a new end line.
                self.ended = None;
            }
            Entry::End(end) => self.ended = Some(end),
        }
    }

    /// The record reported for a host that was in flight when the process stopped.
    pub fn interrupted_record(&self, host: &str) -> HostRecord {
        let started = self.started_at.get(host).cloned().unwrap_or_default();
        HostRecord {
            run_id: self.meta.run_id.clone(),
            host: host.to_owned(),
            address: None,
            group: None,
            job: self.meta.job,
            status: Status::Failed,
            bucket: Some(Bucket::Interrupted),
            message: Bucket::Interrupted.message(host, ""),
            attempts: 1,
            finished: started.clone(),
            started,
            duration_ms: 0,
            exit_code: None,
            pipeline_state: None,
            error_id: None,
            output_excerpt: String::new(),
            output: Vec::new(),
            output_truncated: 0,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Every host's record: the done ones, plus an Interrupted record for each host in flight;
    /// sorted by host name.
    pub fn records(&self) -> Vec<HostRecord> {
        let mut out: Vec<HostRecord> = self.done.values().cloned().collect();
        out.extend(self.in_flight.iter().map(|h| self.interrupted_record(h)));
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    /// What a resume of this run does with `hosts` (the run's selection, inventory order kept).
    pub fn resume_plan<I, S>(&self, hosts: I, rerun_interrupted: bool) -> ResumePlan
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut plan = ResumePlan::default();
        let mut seen = BTreeSet::new();
        for host in hosts {
            let host = host.into();
            if !seen.insert(host.clone()) {
                continue;
            }
            if self.done.contains_key(&host) {
                plan.skip.push(host);
            } else if self.in_flight.contains(&host) {
                plan.interrupted.push(host.clone());
                if rerun_interrupted {
                    plan.run.push(host);
                }
            } else {
                plan.run.push(host);
            }
        }
        plan
    }

    /// The run's index entry.
    pub fn summary(&self) -> RunSummary {
        let mut tally = Tally::default();
        for record in self.done.values() {
            tally.done(record);
        }
        for host in &self.in_flight {
            tally.started(host);
        }
        tally.summary(
            &self.meta,
            &self.dir,
            self.ended.clone(),
            self.journal_bytes,
        )
    }

    fn note_corrupt(&mut self, line_no: u64) {
        self.corrupt_lines += 1;
        if self.corrupt_line_numbers.len() < MAX_CORRUPT_KEPT {
            self.corrupt_line_numbers.push(line_no);
        }
    }
}

/// Per-host outcome counts of a run being written, without keeping whole records (memory stays
/// small however large the outputs are).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    done: HashMap<String, (Status, Option<Bucket>)>,
    in_flight: BTreeSet<String>,
}

impl Tally {
    /// Counts the run read back so far (resume).
    pub fn from_state(state: &RunState) -> Self {
        let mut tally = Tally::default();
        for record in state.done.values() {
            tally.done(record);
        }
        for host in &state.in_flight {
            tally.started(host);
        }
        tally
    }

    /// A host went in flight.
    pub fn started(&mut self, host: &str) {
        self.in_flight.insert(host.to_owned());
    }

    /// A host is done.
    pub fn done(&mut self, record: &HostRecord) {
        self.done_parts(&record.host, record.status, record.bucket);
    }

    /// A host is done, given the parts of its record the counts need.
    pub fn done_parts(&mut self, host: &str, status: Status, bucket: Option<Bucket>) {
        self.in_flight.remove(host);
        self.done.insert(host.to_owned(), (status, bucket));
    }

    /// The index entry.
    pub fn summary(
        &self,
        meta: &RunMeta,
        dir: &Path,
        ended: Option<RunEnd>,
        journal_bytes: u64,
    ) -> RunSummary {
        let mut summary = RunSummary {
            run_id: meta.run_id.clone(),
            path: dir.to_owned(),
            started: meta.started.clone(),
            job: meta.job,
            inventory_digest: meta.inventory_digest.clone(),
            host_count: meta.host_count,
            done: self.done.len() as u64,
            succeeded: 0,
            failed: 0,
            skipped: 0,
            interrupted: self.in_flight.len() as u64,
            buckets: BTreeMap::new(),
            ended,
            journal_bytes,
        };
        for (status, bucket) in self.done.values() {
            match status {
                Status::Succeeded => summary.succeeded += 1,
                Status::Failed => summary.failed += 1,
                Status::Skipped => summary.skipped += 1,
            }
            if let Some(bucket) = bucket {
                *summary.buckets.entry(bucket.name().to_owned()).or_default() += 1;
            }
        }
        if !self.in_flight.is_empty() {
            *summary
                .buckets
                .entry(Bucket::Interrupted.name().to_owned())
                .or_default() += self.in_flight.len() as u64;
        }
        summary
    }
}

/// Reads `run.json`.
pub fn read_meta(run_dir: &Path) -> Result<RunMeta, JournalError> {
    let path = run_dir.join(RUN_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(JournalError::NotFound(run_dir.to_owned()));
        }
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    #[derive(Deserialize)]
    struct Version {
        schema: u32,
    }
    if let Ok(v) = serde_json::from_slice::<Version>(&bytes)
        && v.schema != JOURNAL_SCHEMA
    {
        return Err(JournalError::Schema {
            path,
            found: v.schema,
        });
    }
    serde_json::from_slice(&bytes).map_err(|source| JournalError::BadMeta { path, source })
}

/// The command line with the values of secret-looking options replaced by `***`
/// (`--password x`, `--password=x`, and options naming a secret, token or credential).
/// psfleet takes no secret on its command line, but a mistyped one must not reach the journal.
pub fn redact_command_line<I, S>(args: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    const SECRET: [&str; 4] = ["password", "secret", "token", "credential"];
    let is_secret = |flag: &str| {
        let flag = flag.to_ascii_lowercase();
        flag.starts_with('-')
            && !flag.ends_with("-file")
            && !flag.ends_with("-env")
            && SECRET.iter().any(|s| flag.contains(s))
    };
    let mut out = Vec::new();
    let mut redact_next = false;
    for arg in args {
        let arg: String = arg.into();
        if redact_next {
            out.push("***".to_owned());
            redact_next = false;
            continue;
        }
        match arg.split_once('=') {
            Some((flag, _)) if is_secret(flag) => out.push(format!("{flag}=***")),
            None if is_secret(&arg) => {
                redact_next = true;
                out.push(arg);
            }
            _ => out.push(arg),
        }
    }
    out
}

/// A new run id: `YYYYMMDDTHHMMSSZ-xxxx` (UTC now and 4 hex digits from the clock's
/// nanoseconds and the process id, so two runs started in the same second differ).
pub fn new_run_id() -> RunId {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (date, time) = civil(now.as_secs());
    let salt = (now.subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    RunId(format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{salt:04x}",
        date.0, date.1, date.2, time.0, time.1, time.2
    ))
}

/// Now as RFC 3339 UTC with milliseconds (`2026-11-21T10:15:00.000Z`).
pub fn timestamp_now() -> String {
    format_timestamp(SystemTime::now())
}

/// A time as RFC 3339 UTC with milliseconds; times before 1970 print as the epoch.
pub fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ((y, mo, da), (h, mi, s)) = civil(d.as_secs());
    // Sized once (24 bytes for years 0 to 9999) instead of grown by `format!`.
    use std::fmt::Write as _;
    let mut text = String::with_capacity(24);
    let _ = write!(
        text,
        "{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        d.subsec_millis()
    );
    text
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Lists the run folders under `<state_dir>/runs`, sorted by name (run ids sort by time).
pub fn list_run_dirs(state_dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let runs = state_dir.join(RUNS_DIR);
    let entries = match fs::read_dir(&runs) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", &runs)(e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", &runs))?;
        let path = entry.path();
        if path.join(RUN_FILE).is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// fsyncs a directory, so entries created in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// Writes `name` in `dir` through a temporary file, fsync, rename, and directory fsync: the
/// file is either the old one or the new one, whole.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    sync_dir(dir)
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JournalError {
    let path = path.to_owned();
    move |source| JournalError::Io { op, path, source }
}

/// Reads one line of at most [`MAX_LINE_BYTES`] into `buf`; the rest of a longer line is
/// consumed and dropped. Returns (bytes consumed, ends with a newline, was too long).
pub(crate) fn read_bounded_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<(u64, bool, bool)> {
    let limit = MAX_LINE_BYTES as u64 + 1;
    let n = reader.by_ref().take(limit).read_until(b'\n', buf)? as u64;
    if n == 0 || buf.last() == Some(&b'\n') {
        return Ok((n, n > 0, false));
    }
    if n < limit {
        // End of file without a newline: a torn line.
        return Ok((n, false, false));
    }
    // Overlong: skip to the end of the line without keeping it.
    let mut skipped = n;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok((skipped, false, true));
        }
        if let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            reader.consume(pos + 1);
            skipped += pos as u64 + 1;
            return Ok((skipped, true, true));
        }
        let len = chunk.len();
        reader.consume(len);
        skipped += len as u64;
    }
}

fn trim_newline(buf: &[u8]) -> &[u8] {
    buf.strip_suffix(b"\n").unwrap_or(buf)
}

/// Whether a run id can be used as one path component.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name != "."
        && name != ".."
}

/// Seconds since the epoch to ((year, month, day), (hour, minute, second)), proleptic
/// Gregorian, UTC (Howard Hinnant's days-to-civil algorithm).
fn civil(secs: u64) -> ((i64, u32, u32), (u32, u32, u32)) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        (year, month, day),
        (
            (rem / 3600) as u32,
            (rem % 3600 / 60) as u32,
            (rem % 60) as u32,
        ),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("psfleet-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(crate) fn record(run: &RunId, host: &str, bucket: Option<Bucket>) -> HostRecord {
        HostRecord {
            run_id: run.clone(),
            host: host.into(),
            address: Some("127.20.0.1".into()),
            group: Some("web".into()),
            job: JobKind::Script,
            status: if bucket.is_some() {
                Status::Failed
            } else {
                Status::Succeeded
            },
            bucket,
            message: bucket.map_or("ok".into(), |b| b.message(host, "")),
            attempts: 1,
            started: "2026-11-21T10:15:00.000Z".into(),
            finished: "2026-11-21T10:15:01.250Z".into(),
            duration_ms: 1250,
            exit_code: Some(0),
            pipeline_state: Some("Completed".into()),
            error_id: None,
            output_excerpt: "hello".into(),
            output: vec![serde_json::json!({"n": 1})],
            output_truncated: 0,
            errors: vec![],
            warnings: vec![],
        }
    }

    fn meta(id: &str) -> RunMeta {
        RunMeta::new(RunId(id.into()), JobKind::Script, 3).with_script("Get-Date")
    }

    #[test]
    fn a_run_is_created_durably_and_replays() {
        let state_dir = temp_dir("journal-create");
        let m = meta("20260101T000000Z-0001");
        let mut j = Journal::create(&state_dir, &m).unwrap();
        j.append(&Entry::Started {
            host: "a".into(),
            at: timestamp_now(),
        })
        .unwrap();
        j.append(&Entry::Started {
            host: "b".into(),
            at: "2026-01-01T00:00:01.000Z".into(),
        })
        .unwrap();
        j.append(&Entry::Done {
            record: Box::new(record(&m.run_id, "a", None)),
        })
        .unwrap();
        j.commit().unwrap();
        assert_eq!(j.stats(), JournalStats { lines: 3, syncs: 1 });

        let dir = state_dir.join(RUNS_DIR).join(&m.run_id.0);
        let state = Journal::replay(&dir).unwrap();
        assert_eq!(state.meta, m);
        assert_eq!(
            state.meta.script_sha256.as_deref(),
            // `printf Get-Date | sha256sum`
            Some("c1d9af5ecced5022dd0e037ef3d6e96a33b43dea902d1c05c894b7b33cb3c798")
        );
        assert_eq!(state.done.len(), 1);
        assert_eq!(state.done["a"], record(&m.run_id, "a", None));
        assert_eq!(
            state.in_flight.iter().collect::<Vec<_>>(),
            vec![&"b".to_string()]
        );
        assert!(state.torn_tail.is_none());
        assert_eq!(state.corrupt_lines, 0);
        assert_eq!(
            state.journal_bytes,
            fs::metadata(dir.join(JOURNAL_FILE)).unwrap().len()
        );
        assert_eq!(j.len(), state.journal_bytes);

        let records = state.records();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].host, "b");
        assert_eq!(records[1].bucket, Some(Bucket::Interrupted));
        assert_eq!(records[1].started, "2026-01-01T00:00:01.000Z");

        let summary = state.summary();
        assert_eq!(
            (summary.done, summary.succeeded, summary.interrupted),
            (1, 1, 1)
        );
        assert_eq!(summary.buckets.get("Interrupted"), Some(&1));

        assert!(matches!(
            Journal::create(&state_dir, &m),
            Err(JournalError::Exists(_))
        ));
        fs::remove_dir_all(&state_dir).unwrap();
    }

    #[test]
    fn group_commit_makes_a_batch_durable_with_one_sync() {
        let state_dir = temp_dir("journal-group");
        let m = meta("20260101T000000Z-0002");
        let mut j = Journal::create(&state_dir, &m).unwrap();
        for i in 0..100 {
            j.append(&Entry::Done {
                record: Box::new(record(&m.run_id, &format!("h{i}"), None)),
            })
            .unwrap();
        }
        assert_eq!(j.pending(), 100);
        j.commit().unwrap();
        j.commit().unwrap(); // nothing pending: no second sync
        assert_eq!(
            j.stats(),
            JournalStats {
                lines: 100,
                syncs: 1
            }
        );
        assert_eq!(j.pending(), 0);
        let state = Journal::replay(j.dir()).unwrap();
        assert_eq!(state.done.len(), 100);
        fs::remove_dir_all(&state_dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_ignored_counted_and_cut_on_reopen() {
        let state_dir = temp_dir("journal-torn");
        let m = meta("20260101T000000Z-0003");
        let mut j = Journal::create(&state_dir, &m).unwrap();
        j.append(&Entry::Done {
            record: Box::new(record(&m.run_id, "a", None)),
        })
        .unwrap();
        j.commit().unwrap();
        let good_len = j.len();
        let dir = j.dir().to_owned();
        drop(j);
        let path = dir.join(JOURNAL_FILE);
        let torn = br#"{"type":"done","record":{"run_id":"2026"#;
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(torn)
            .unwrap();

        let state = Journal::replay(&dir).unwrap();
        assert_eq!(state.done.len(), 1);
        assert_eq!(
            state.torn_tail,
            Some(TornTail {
                offset: good_len,
                bytes: torn.len() as u64
            })
        );
        assert_eq!(state.corrupt_lines, 0);

        let (mut j, state) = Journal::reopen(&dir).unwrap();
        assert!(state.torn_tail.is_some());
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
        j.append(&Entry::Done {
            record: Box::new(record(&m.run_id, "b", Some(Bucket::AccessDenied))),
        })
        .unwrap();
        j.commit().unwrap();
        let state = Journal::replay(&dir).unwrap();
        assert!(state.torn_tail.is_none());
        assert_eq!(state.done.len(), 2);
        assert_eq!(state.done["b"].bucket, Some(Bucket::AccessDenied));
        fs::remove_dir_all(&state_dir).unwrap();
    }

    #[test]
    fn zero_filled_tails_and_corrupt_middle_lines_never_panic() {
        let state_dir = temp_dir("journal-zeros");
        let m = meta("20260101T000000Z-0004");
        let mut j = Journal::create(&state_dir, &m).unwrap();
        j.append(&Entry::Started {
            host: "a".into(),
            at: timestamp_now(),
        })
        .unwrap();
        j.commit().unwrap();
        let dir = j.dir().to_owned();
        drop(j);
        let path = dir.join(JOURNAL_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        // A corrupt line in the middle, a good line, then what ext4 leaves after a power
        // cut: the size grew but the block holds zeros.
        f.write_all(b"{not json\n").unwrap();
        let done = Entry::Done {
            record: Box::new(record(&m.run_id, "a", None)),
        };
        f.write_all(&serde_json::to_vec(&done).unwrap()).unwrap();
        f.write_all(b"\n").unwrap();
        let good_len = f.metadata().unwrap().len();
        f.write_all(&[0u8; 4096]).unwrap();
        drop(f);
        let state = Journal::replay(&dir).unwrap();
        assert_eq!(state.corrupt_lines, 1);
        assert_eq!(state.corrupt_line_numbers, vec![2]);
        assert_eq!(
            state.torn_tail,
            Some(TornTail {
                offset: good_len,
                bytes: 4096
            })
        );
        assert!(state.in_flight.is_empty());
        assert_eq!(state.done.len(), 1);
        fs::remove_dir_all(&state_dir).unwrap();
    }

    #[test]
    fn an_overlong_line_is_skipped_without_reading_it_whole() {
        let state_dir = temp_dir("journal-long");
        let m = meta("20260101T000000Z-0005");
        let j = Journal::create(&state_dir, &m).unwrap();
        let dir = j.dir().to_owned();
        drop(j);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(JOURNAL_FILE))
            .unwrap();
        f.write_all(&vec![b'x'; MAX_LINE_BYTES + 10]).unwrap();
        f.write_all(b"\n").unwrap();
        let line = serde_json::to_vec(&Entry::Started {
            host: "z".into(),
            at: timestamp_now(),
        })
        .unwrap();
        f.write_all(&line).unwrap();
        f.write_all(b"\n").unwrap();
        drop(f);
        let state = Journal::replay(&dir).unwrap();
        assert_eq!(state.corrupt_line_numbers, vec![1]);
        assert!(state.in_flight.contains("z"));
        assert!(state.torn_tail.is_none());
        fs::remove_dir_all(&state_dir).unwrap();
    }

    #[test]
    fn resume_plans_skip_done_and_hold_back_interrupted_hosts() {
        let dir = PathBuf::from("/nonexistent");
        let m = meta("20260101T000000Z-0006");
        let mut state = RunState::new(dir, m.clone());
        for entry in [
            Entry::Started {
                host: "a".into(),
                at: "t".into(),
            },
            Entry::Started {
                host: "b".into(),
                at: "t".into(),
            },
            Entry::Done {
                record: Box::new(record(&m.run_id, "a", Some(Bucket::Timeout))),
            },
        ] {
            state.apply(entry);
        }
        let hosts = ["a", "b", "c", "c"];
        let plan = state.resume_plan(hosts, false);
        assert_eq!(plan.skip, vec!["a"]);
        assert_eq!(plan.interrupted, vec!["b"]);
        assert_eq!(plan.run, vec!["c"]);
        let plan = state.resume_plan(hosts, true);
        assert_eq!(plan.run, vec!["b", "c"]);

        // A rerun interrupted host that finishes is no longer in flight.
        state.apply(Entry::Resumed {
            at: "t2".into(),
            rerun_interrupted: true,
        });
        state.apply(Entry::Started {
            host: "b".into(),
            at: "t2".into(),
        });
        state.apply(Entry::Done {
            record: Box::new(record(&m.run_id, "b", None)),
        });
        assert!(state.in_flight.is_empty());
        assert_eq!(state.resumes, 1);
        assert_eq!(state.resume_plan(hosts, false).skip, vec!["a", "b"]);
    }

    #[test]
    fn shells_opened_and_closed_within_a_run_leave_the_leaks() {
        let m = meta("20260101T000000Z-0007");
        let mut state = RunState::new(PathBuf::from("/x"), m.clone());
        for (open, id) in [(true, "S1"), (true, "S2"), (false, "S1")] {
            state.apply(if open {
                Entry::ShellOpened {
                    host: "h".into(),
                    shell_id: id.into(),
                    at: "t".into(),
                }
            } else {
                Entry::ShellClosed {
                    host: "h".into(),
                    shell_id: id.into(),
                    at: "t".into(),
                }
            });
        }
        assert_eq!(state.open_shells.len(), 1);
        assert_eq!(state.open_shells[0].shell_id, "S2");
        assert_eq!(state.open_shells[0].run_id, m.run_id);
    }

    #[test]
    fn secrets_are_redacted_from_command_lines() {
        let args = [
            "psfleet",
            "run",
            "--password",
            "hunter2",
            "--api-token=abc",
            "--password-file",
            "/p",
            "-f",
            "50",
        ];
        assert_eq!(
            redact_command_line(args),
            vec![
                "psfleet",
                "run",
                "--password",
                "***",
                "--api-token=***",
                "--password-file",
                "/p",
                "-f",
                "50"
            ]
        );
    }

    #[test]
    fn timestamps_and_run_ids_have_the_documented_shape() {
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(format_timestamp(t), "2023-11-14T22:13:20.123Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // leap day
        assert_eq!(format_timestamp(t), "2000-02-29T00:00:00.000Z");
        let id = new_run_id().0;
        assert_eq!(id.len(), "YYYYMMDDTHHMMSSZ-xxxx".len(), "{id}");
        assert_eq!(&id[8..9], "T");
        assert_eq!(&id[15..17], "Z-");
        assert!(id[17..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn unreadable_or_future_run_files_are_typed_errors() {
        let state_dir = temp_dir("journal-meta");
        assert!(matches!(
            Journal::replay(&state_dir),
            Err(JournalError::NotFound(_))
        ));
        fs::write(state_dir.join(RUN_FILE), b"{garbage").unwrap();
        assert!(matches!(
            Journal::replay(&state_dir),
            Err(JournalError::BadMeta { .. })
        ));
        let mut m = serde_json::to_value(meta("x")).unwrap();
        m["schema"] = 99.into();
        fs::write(state_dir.join(RUN_FILE), m.to_string()).unwrap();
        assert!(matches!(
            Journal::replay(&state_dir),
            Err(JournalError::Schema { found: 99, .. })
        ));
        fs::remove_dir_all(&state_dir).unwrap();
    }
}
