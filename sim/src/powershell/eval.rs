//! The evaluator: runs a parsed script against a host, on a virtual clock.
//!
//! Error semantics follow PowerShell: non-terminating errors (`Write-Error`, a cmdlet's
//! "not found") are written and the statement goes on; statement-terminating errors
//! (unknown command, failed method call, bad parameter) abort the statement and the script
//! goes on with the next one; `throw` ends the script. `$ErrorActionPreference = 'Stop'`
//! (or `-ErrorAction Stop`) turns errors into terminating ones, and `try`/`catch` catches
//! terminating and statement-terminating errors.
//!
//! Pipelines stream: each item goes through every stage before the next item is produced,
//! so `ForEach-Object { Start-Sleep 1; $_ }` spaces its outputs one second apart, and
//! `Select-Object -First 1` stops the stages before it.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use psfleet_core::psrp::clixml::{Property, Value};
use psfleet_core::psrp::messages::{ErrorRecord, InformationalKind};

use super::objects::{self, HostFacts};
use super::records::{self, Site};
use super::syntax::{
    Arg, Block, CommandName, Element, Expr, Pipeline, Redirect, Stmt, StmtKind, XPart,
};
use super::values::{self, Moment, Table, Val, to_str, truthy};
use super::{ScriptEvent, TimedEvent};
use crate::host::HostSpec;

/// Most statements, expressions and pipeline items one script may evaluate.
const MAX_STEPS: u64 = 2_000_000;
/// Most events (outputs and records) one script may produce.
pub(crate) const MAX_EVENTS: usize = 100_000;
/// Longest string an operator may build.
pub(crate) const MAX_STRING: usize = 4 << 20;
/// Most items an operator may build (ranges, repetition).
pub(crate) const MAX_ITEMS: usize = 1_000_000;
/// Longest virtual time a script may take (further sleeps are cut short).
const MAX_ELAPSED: Duration = Duration::from_secs(7 * 24 * 3600);
/// Deepest nesting of calls (functions, script blocks) and parenthesised or sub-expressions
/// together: every level costs stack, so one counter bounds them all.
const MAX_CALL_DEPTH: usize = 100;

/// Why evaluation stopped early.
#[derive(Debug)]
pub(crate) enum Flow {
    /// A terminating error (catchable).
    Throw(Box<ErrorRecord>),
    /// A simulator limit: ends the script, not catchable.
    Limit(Box<ErrorRecord>),
    /// The current statement failed; its error has been written.
    Abort,
    /// `exit N`.
    Exit(i32),
    Return,
    Break,
    Continue,
}

pub(crate) type R<T> = Result<T, Flow>;

/// Error action preference values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Stop,
    Continue,
    SilentlyContinue,
    Ignore,
}

impl Action {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "stop" => Self::Stop,
            "continue" | "inquire" => Self::Continue,
            "silentlycontinue" => Self::SilentlyContinue,
            "ignore" => Self::Ignore,
            "0" => Self::SilentlyContinue,
            "1" => Self::Stop,
            "2" | "3" => Self::Continue,
            "4" => Self::Ignore,
            _ => return None,
        })
    }
}

/// How errors of the pipeline being run are redirected.
#[derive(Debug, Clone, Copy, Default)]
struct Redirection {
    discard_output: bool,
    discard_errors: bool,
    errors_to_output: bool,
    discard_streams: bool,
}

/// The script engine.
pub(crate) struct Engine<'a> {
    pub host: &'a HostSpec,
    pub facts: HostFacts,
    /// The text of the script being run (every source offset points into it; Invoke-Expression
    /// swaps in its own text while it runs).
    pub script: Rc<str>,
    pub clock: Duration,
    pub events: Vec<TimedEvent>,
    scopes: Vec<HashMap<String, Val>>,
    functions: HashMap<String, Rc<Block>>,
    env: Vec<(String, String)>,
    captures: Vec<Vec<Val>>,
    redirections: Vec<Redirection>,
    steps: u64,
    try_depth: usize,
    call_depth: usize,
    /// `$?`
    pub last_ok: bool,
    /// The source span of the statement or command being run (the site of run-time
    /// errors).
    pub cur: (usize, usize),
    /// Set when output or records were cut by [`MAX_EVENTS`].
    pub truncated: bool,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(host: &'a HostSpec, user: &str, script: &str) -> Self {
        let facts = HostFacts::new(host, user);
        let env = environment(&facts);
        let mut globals = HashMap::new();
        for (k, v) in [
            ("erroractionpreference", "Continue"),
            ("warningpreference", "Continue"),
            ("verbosepreference", "SilentlyContinue"),
            ("debugpreference", "SilentlyContinue"),
            ("informationpreference", "SilentlyContinue"),
            ("progresspreference", "Continue"),
            ("confirmpreference", "High"),
            ("psculture", "en-US"),
            ("psuiculture", "en-US"),
            ("psscriptroot", ""),
            ("pshome", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0"),
        ] {
            globals.insert(k.to_owned(), Val::str(v));
        }
        globals.insert(
            "home".into(),
            Val::str(format!("C:\\Users\\{}", facts.user)),
        );
        globals.insert("pid".into(), Val::int(i64::from(facts.process_id)));
        globals.insert("psversiontable".into(), objects::version_table_val(host));
        Self {
            host,
            facts,
            script: Rc::from(script),
            clock: Duration::ZERO,
            events: Vec::new(),
            scopes: vec![globals],
            functions: HashMap::new(),
            env,
            captures: Vec::new(),
            redirections: Vec::new(),
            steps: 0,
            try_depth: 0,
            call_depth: 0,
            last_ok: true,
            cur: (0, 0),
            truncated: false,
        }
    }

    /// Runs the script of an earlier pipeline of the same runspace for what it leaves in
    /// the session (variables, functions, environment), then forgets its records, time
    /// and work count so the next script starts afresh. A script that does not parse, or
    /// fails, leaves what it did before failing.
    pub(crate) fn replay(&mut self, script: &str, positional: &[Value], named: &[(String, Value)]) {
        let Ok(block) = super::syntax::parse_script(script) else {
            return;
        };
        let saved = std::mem::replace(&mut self.script, Rc::from(script));
        let positional = positional.iter().cloned().map(Val::V).collect();
        let named = named
            .iter()
            .map(|(n, v)| (n.clone(), Val::V(v.clone())))
            .collect();
        // Its outcome is irrelevant: only the state it leaves counts.
        let _ = self
            .bind_params(&block, positional, named)
            .and_then(|()| self.exec_all(&block.body));
        self.script = saved;
        self.clock = Duration::ZERO;
        self.events.clear();
        self.captures.clear();
        self.redirections.clear();
        self.steps = 0;
        self.try_depth = 0;
        self.call_depth = 0;
        self.last_ok = true;
        self.truncated = false;
        self.scopes.truncate(1);
    }

    // ===== Bookkeeping =====

    pub(crate) fn site(&self, start: usize, end: usize) -> Site<'_> {
        Site {
            script: &self.script,
            start,
            end,
        }
    }

    pub(crate) fn tick(&mut self) -> R<()> {
        self.charge(1)
    }

    /// Counts `n` units of work (bulk operations count their size: one unit per item and
    /// per KiB of text) and fails once the budget is spent.
    pub(crate) fn charge(&mut self, n: usize) -> R<()> {
        self.steps = self.steps.saturating_add(n as u64);
        if self.steps > MAX_STEPS {
            return Err(self.limit("The script ran longer than this simulated host allows."));
        }
        Ok(())
    }

    /// A simulator-limit error (documented in docs/simulator-powershell.md).
    pub(crate) fn limit(&self, message: &str) -> Flow {
        Flow::Limit(Box::new(records::runtime_error(
            message.to_owned(),
            "SimulatorLimitExceeded",
            29,
            "",
            self.site(0, 0),
        )))
    }

    /// The virtual time now (`Get-Date`).
    pub(crate) fn now(&self) -> Moment {
        let elapsed = i64::try_from(self.clock.as_nanos() / 100).unwrap_or(i64::MAX);
        self.facts
            .boot
            .add_ticks(objects::UPTIME_TICKS)
            .add_ticks(elapsed)
    }

    /// Advances the virtual clock.
    pub(crate) fn sleep(&mut self, d: Duration) {
        self.clock = (self.clock + d).min(MAX_ELAPSED);
    }

    fn push_event(&mut self, event: ScriptEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.truncated = true;
            return;
        }
        self.events.push(TimedEvent {
            at: self.clock,
            event,
        });
    }

    fn redirection(&self) -> Redirection {
        self.redirections.last().copied().unwrap_or_default()
    }

    /// Sends a value to the current output: the innermost capture, or the pipeline's output
    /// stream.
    pub(crate) fn emit(&mut self, v: Val) {
        // Copies of large values count against the budget (checked at the next tick).
        self.steps = self.steps.saturating_add(values::cost(&v) as u64);
        if let Some(top) = self.captures.last_mut() {
            if top.len() < MAX_ITEMS {
                top.push(v);
            } else {
                self.truncated = true;
            }
            return;
        }
        if self.redirection().discard_output {
            return;
        }
        let wire = objects::to_wire(v.to_clixml());
        self.push_event(ScriptEvent::Output(wire));
    }

    /// Runs `f` with output captured, returning what it output.
    pub(crate) fn capture(&mut self, f: impl FnOnce(&mut Self) -> R<()>) -> R<Vec<Val>> {
        self.captures.push(Vec::new());
        let r = f(self);
        let out = self.captures.pop().unwrap_or_default();
        r.map(|()| out)
    }

    /// Sends a stream record (not output).
    pub(crate) fn record(&mut self, event: ScriptEvent) {
        if self.redirection().discard_streams {
            return;
        }
        self.push_event(event);
    }

    pub(crate) fn pref(&self, name: &str) -> Action {
        self.var(name)
            .map(|v| to_str(&v))
            .and_then(|s| Action::parse(&s))
            .unwrap_or(Action::Continue)
    }

    /// Writes a non-terminating error under `action` (the command's `-ErrorAction`, or
    /// `$ErrorActionPreference`).
    pub(crate) fn write_error(&mut self, record: ErrorRecord, action: Option<Action>) -> R<()> {
        self.last_ok = false;
        let action = action.unwrap_or_else(|| self.pref("ErrorActionPreference"));
        match action {
            Action::Stop => Err(Flow::Throw(Box::new(record))),
            Action::SilentlyContinue | Action::Ignore => Ok(()),
            Action::Continue => {
                self.send_error(record);
                Ok(())
            }
        }
    }

    fn send_error(&mut self, record: ErrorRecord) {
        let r = self.redirection();
        if r.discard_errors {
            return;
        }
        let record = records::as_stream_error(record);
        if r.errors_to_output {
            self.emit(Val::V(record.to_clixml()));
            return;
        }
        self.push_event(ScriptEvent::Error(record));
    }

    /// A statement-terminating error: caught by an enclosing `try`, fatal under
    /// `$ErrorActionPreference = 'Stop'`, otherwise written and the statement abandoned.
    pub(crate) fn fail(&mut self, record: ErrorRecord) -> Flow {
        self.last_ok = false;
        if self.try_depth > 0 || self.pref("ErrorActionPreference") == Action::Stop {
            return Flow::Throw(Box::new(record));
        }
        self.send_error(record);
        Flow::Abort
    }

    /// A message for the Warning/Verbose/Debug streams, honouring the preference.
    pub(crate) fn informational(
        &mut self,
        kind: InformationalKind,
        message: String,
        forced: bool,
    ) -> R<()> {
        let pref = match kind {
            InformationalKind::Warning => "WarningPreference",
            InformationalKind::Verbose => "VerbosePreference",
            InformationalKind::Debug => "DebugPreference",
        };
        let action = if forced {
            Action::Continue
        } else {
            self.pref(pref)
        };
        match action {
            Action::SilentlyContinue | Action::Ignore => Ok(()),
            Action::Stop => Err(Flow::Throw(Box::new(records::runtime_error(
                format!(
                    "The running command stopped because the preference variable \"{pref}\" or common parameter is set to Stop: {message}"
                ),
                "ActionPreferenceStop",
                14,
                "",
                self.site(0, 0),
            )))),
            Action::Continue => {
                let record = records::informational(kind, message, &self.script);
                self.record(match kind {
                    InformationalKind::Warning => ScriptEvent::Warning(record),
                    InformationalKind::Verbose => ScriptEvent::Verbose(record),
                    InformationalKind::Debug => ScriptEvent::Debug(record),
                });
                Ok(())
            }
        }
    }

    // ===== Variables =====

    pub(crate) fn var(&self, name: &str) -> Option<Val> {
        let lower = name.to_ascii_lowercase();
        let lower = lower
            .strip_prefix("global:")
            .or_else(|| lower.strip_prefix("script:"))
            .or_else(|| lower.strip_prefix("local:"))
            .or_else(|| lower.strip_prefix("private:"))
            .or_else(|| lower.strip_prefix("using:"))
            .unwrap_or(&lower);
        if let Some(env) = lower.strip_prefix("env:") {
            return Some(
                self.env_var(env)
                    .map_or_else(Val::null, |v| Val::str(v.to_owned())),
            );
        }
        match lower {
            "true" => return Some(Val::bool(true)),
            "false" => return Some(Val::bool(false)),
            "null" => return Some(Val::null()),
            "?" => return Some(Val::bool(self.last_ok)),
            "psitem" => return self.var("_"),
            _ => {}
        }
        self.scopes.iter().rev().find_map(|s| s.get(lower).cloned())
    }

    pub(crate) fn set_var(&mut self, name: &str, v: Val) {
        let lower = name.to_ascii_lowercase();
        if let Some(env) = lower.strip_prefix("env:") {
            let text = to_str(&v);
            match self
                .env
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(env))
            {
                Some(e) => e.1 = text,
                None => self.env.push((name[4..].to_owned(), text)),
            }
            return;
        }
        let (global, lower) = match lower.split_once(':') {
            Some(("global" | "script", rest)) => (true, rest.to_owned()),
            Some((_, rest)) => (false, rest.to_owned()),
            None => (false, lower),
        };
        if matches!(lower.as_str(), "true" | "false" | "null") {
            return;
        }
        let scope = if global {
            self.scopes.first_mut()
        } else {
            self.scopes.last_mut()
        };
        if let Some(s) = scope {
            s.insert(lower, v);
        }
    }

    pub(crate) fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Runs `f` with `$_` set to `item`.
    pub(crate) fn with_item<T>(&mut self, item: Val, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        let old = self
            .scopes
            .last_mut()
            .and_then(|s| s.insert("_".into(), item));
        let r = f(self);
        if let Some(s) = self.scopes.last_mut() {
            match old {
                Some(v) => s.insert("_".into(), v),
                None => s.remove("_"),
            };
        }
        r
    }

    // ===== Script =====

    /// Binds a block's `param()` from positional and named arguments; the rest go to
    /// `$args`. Runs in the current (new) scope.
    pub(crate) fn bind_params(
        &mut self,
        block: &Block,
        positional: Vec<Val>,
        named: Vec<(String, Val)>,
    ) -> R<()> {
        let mut positional = positional.into_iter();
        let mut extra = Vec::new();
        let mut named = named;
        for p in &block.params {
            let given = named
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(&p.name))
                .map(|i| named.remove(i).1);
            let is_switch = p.type_name.as_deref() == Some("switch");
            let value = match given {
                Some(v) => Some(v),
                None if is_switch => None,
                None => positional.next(),
            };
            let value = match (value, &p.default) {
                (Some(v), _) => v,
                (None, Some(d)) => self.eval(d)?,
                (None, None) if is_switch => Val::bool(false),
                (None, None) => Val::null(),
            };
            let value = match &p.type_name {
                Some(t) if !value.is_null() || t == "switch" || t == "bool" => {
                    super::ops::cast(self, t, value, 0, 0)?
                }
                _ => value,
            };
            self.set_var(&p.name, value);
        }
        extra.extend(positional);
        extra.extend(named.into_iter().map(|(_, v)| v));
        self.set_var("args", Val::Array(extra));
        Ok(())
    }

    /// Runs statements; a statement-terminating error moves on to the next statement.
    pub(crate) fn exec_all(&mut self, stmts: &[Stmt]) -> R<()> {
        for s in stmts {
            match self.exec(s) {
                Err(Flow::Abort) => {}
                other => other?,
            }
        }
        Ok(())
    }

    fn exec(&mut self, s: &Stmt) -> R<()> {
        self.tick()?;
        let saved = std::mem::replace(&mut self.cur, (s.start, s.end));
        let r = self.exec_kind(s);
        self.cur = saved;
        r
    }

    fn exec_kind(&mut self, s: &Stmt) -> R<()> {
        match &s.kind {
            StmtKind::Pipeline(p) => {
                self.last_ok = true;
                self.run_pipeline(p)
            }
            StmtKind::Assign { target, op, value } => {
                let v = self.statement_value(value)?;
                self.assign(target, *op, v, s)
            }
            StmtKind::If { clauses, otherwise } => {
                for (cond, body) in clauses {
                    let c = self.pipeline_value(cond)?;
                    if truthy(&c) {
                        return self.exec_all(&body.body);
                    }
                }
                match otherwise {
                    Some(b) => self.exec_all(&b.body),
                    None => Ok(()),
                }
            }
            StmtKind::Foreach { var, items, body } => {
                let items = self.pipeline_value(items)?.enumerate();
                for item in items {
                    self.tick()?;
                    self.set_var(var, item);
                    match self.exec_all(&body.body) {
                        Err(Flow::Break) => break,
                        Err(Flow::Continue) => continue,
                        other => other?,
                    }
                }
                Ok(())
            }
            StmtKind::While { cond, body } => {
                loop {
                    self.tick()?;
                    let c = self.pipeline_value(cond)?;
                    if !truthy(&c) {
                        break;
                    }
                    match self.exec_all(&body.body) {
                        Err(Flow::Break) => break,
                        Err(Flow::Continue) => continue,
                        other => other?,
                    }
                }
                Ok(())
            }
            StmtKind::Try {
                body,
                catches,
                finally,
            } => {
                self.try_depth += 1;
                let mut r = self.exec_all(&body.body);
                self.try_depth -= 1;
                if let (Err(Flow::Throw(record)), Some(catch)) = (&r, catches.first()) {
                    let value = Val::V(record.to_clixml());
                    r = self.with_item(value, |e| e.exec_all(&catch.body));
                }
                if let Some(f) = finally {
                    self.exec_all(&f.body)?;
                }
                r
            }
            StmtKind::Function { name, body } => {
                self.functions
                    .insert(name.to_ascii_lowercase(), Rc::clone(body));
                Ok(())
            }
            StmtKind::Throw(value) => {
                let v = match value {
                    Some(p) => Some(self.pipeline_value(p)?),
                    None => None,
                };
                Err(Flow::Throw(Box::new(thrown(v, self.site(s.start, s.end)))))
            }
            StmtKind::Exit(value) => {
                let code = match value {
                    Some(p) => {
                        let v = self.pipeline_value(p)?;
                        values::to_number(&v).map_or(0, |n| n.as_f64() as i32)
                    }
                    None => 0,
                };
                Err(Flow::Exit(code))
            }
            StmtKind::Return(value) => {
                if let Some(p) = value {
                    self.run_pipeline(p)?;
                }
                Err(Flow::Return)
            }
            StmtKind::Break => Err(Flow::Break),
            StmtKind::Continue => Err(Flow::Continue),
        }
    }

    fn assign(&mut self, target: &Expr, op: char, v: Val, s: &Stmt) -> R<()> {
        let combine = |e: &mut Self, old: Val| -> R<Val> {
            let bin = match op {
                '+' => super::syntax::BinOp::Add,
                '-' => super::syntax::BinOp::Sub,
                '*' => super::syntax::BinOp::Mul,
                '/' => super::syntax::BinOp::Div,
                _ => return Ok(v.clone()),
            };
            super::ops::binary(e, bin, old, v.clone(), s.start, s.end)
        };
        match target {
            Expr::Var(name) => {
                let old = self.var(name).unwrap_or_else(Val::null);
                let new = combine(self, old)?;
                self.set_var(name, new);
                Ok(())
            }
            Expr::Cast(t, inner) => {
                let new = super::ops::cast(self, t, v, s.start, s.end)?;
                self.assign(inner, '=', new, s)
            }
            Expr::Member { target, name, .. } => {
                let Expr::Var(var) = &**target else {
                    return Err(self.fail(records::runtime_error(
                        "The assignment expression is not valid.".into(),
                        "InvalidLeftHandSide",
                        16,
                        "",
                        self.site(s.start, s.end),
                    )));
                };
                let mut holder = self.var(var).unwrap_or_else(Val::null);
                let old = super::ops::member(&holder, name);
                let new = combine(self, old)?;
                match &mut holder {
                    Val::Table(t) => t.set(Value::String(name.clone()), new),
                    Val::V(Value::Object(o)) => {
                        let mut copy = (**o).clone();
                        match copy
                            .extended
                            .iter_mut()
                            .chain(copy.adapted.iter_mut())
                            .find(|p| p.name.eq_ignore_ascii_case(name))
                        {
                            Some(p) => p.value = new.to_clixml(),
                            None => copy
                                .extended
                                .push(Property::new(name.clone(), new.to_clixml())),
                        }
                        holder = Val::V(Value::object(copy));
                    }
                    _ => {
                        let msg = format!(
                            "The property '{name}' cannot be found on this object. Verify that the property exists and can be set."
                        );
                        return Err(self.fail(records::runtime_error(
                            msg,
                            "PropertyAssignmentException",
                            7,
                            "",
                            self.site(s.start, s.end),
                        )));
                    }
                }
                self.set_var(var, holder);
                Ok(())
            }
            Expr::Index { target, index } => {
                let Expr::Var(var) = &**target else {
                    return Ok(());
                };
                let idx = self.eval(index)?;
                let mut holder = self.var(var).unwrap_or_else(Val::null);
                let old = super::ops::index(&holder, &idx);
                let new = combine(self, old)?;
                match &mut holder {
                    Val::Table(t) => t.set(idx.to_clixml(), new),
                    Val::Array(items) => {
                        let n = values::to_number(&idx).map_or(0, |n| n.as_f64() as i64);
                        let len = items.len() as i64;
                        let i = if n < 0 { n + len } else { n };
                        match usize::try_from(i).ok().and_then(|i| items.get_mut(i)) {
                            Some(slot) => *slot = new,
                            None => {
                                return Err(self.fail(records::runtime_error(
                                    "Index was outside the bounds of the array.".into(),
                                    "System.IndexOutOfRangeException",
                                    0,
                                    "",
                                    self.site(s.start, s.end),
                                )));
                            }
                        }
                    }
                    _ => {}
                }
                self.set_var(var, holder);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The value of a statement used as a value (`$x = <statement>`, `( ... )`).
    pub(crate) fn statement_value(&mut self, s: &Stmt) -> R<Val> {
        if let StmtKind::Pipeline(p) = &s.kind
            && p.elements.len() == 1
            && p.redirects.is_empty()
            && let Some(Element::Expr(e)) = p.elements.first()
        {
            self.tick()?;
            return self.eval(e);
        }
        if let StmtKind::Assign { target, .. } = &s.kind {
            self.exec(s)?;
            return self.eval(target);
        }
        let out = self.capture(|e| e.exec(s))?;
        Ok(collapse(out))
    }

    /// The value of a pipeline used as a value (conditions, `foreach` collections).
    pub(crate) fn pipeline_value(&mut self, p: &Pipeline) -> R<Val> {
        if p.elements.len() == 1
            && p.redirects.is_empty()
            && let Some(Element::Expr(e)) = p.elements.first()
        {
            return self.eval(e);
        }
        let out = self.capture(|e| e.run_pipeline(p))?;
        Ok(collapse(out))
    }

    // ===== Pipelines =====

    pub(crate) fn run_pipeline(&mut self, p: &Pipeline) -> R<()> {
        let mut redirection = self.redirection();
        for Redirect { stream, target } in &p.redirects {
            match (stream, target) {
                ('2', None) => redirection.errors_to_output = true,
                ('1', Some(_)) => redirection.discard_output = true,
                ('2', Some(_)) => redirection.discard_errors = true,
                ('*', Some(_)) => {
                    redirection.discard_output = true;
                    redirection.discard_errors = true;
                    redirection.discard_streams = true;
                }
                (_, Some(_)) => redirection.discard_streams = true,
                _ => {}
            }
        }
        let capture_output = redirection.discard_output && !self.captures.is_empty();
        self.redirections.push(redirection);
        let r = if capture_output {
            // `> $null` inside a capture: outputs go nowhere.
            self.capture(|e| e.run_elements(p)).map(|_| ())
        } else {
            self.run_elements(p)
        };
        self.redirections.pop();
        r
    }

    fn run_elements(&mut self, p: &Pipeline) -> R<()> {
        let Some((first, rest)) = p.elements.split_first() else {
            return Ok(());
        };
        let mut stages = Vec::with_capacity(rest.len());
        for el in rest {
            match el {
                Element::Command(c) => stages.push(super::cmdlets::Stage::prepare(self, c)?),
                Element::Expr(_) => {}
            }
        }
        let produced = match first {
            Element::Expr(e) => {
                let v = self.eval(e)?;
                let items = if matches!(e, Expr::Unary(super::syntax::UnOp::Comma, _)) {
                    match v {
                        Val::Array(mut a) if a.len() == 1 => vec![a.remove(0)],
                        other => vec![other],
                    }
                } else {
                    v.enumerate()
                };
                if stages.is_empty() {
                    for item in items {
                        self.emit(item);
                    }
                    return Ok(());
                }
                items
            }
            Element::Command(c) => {
                if stages.is_empty() {
                    return super::cmdlets::invoke(self, c, None);
                }
                let mut out = Vec::new();
                self.captures.push(Vec::new());
                let r = super::cmdlets::invoke(self, c, None);
                if let Some(v) = self.captures.pop() {
                    out = v;
                }
                r?;
                out
            }
        };
        for item in produced {
            self.tick()?;
            if self.drive(&mut stages, item)? {
                break;
            }
        }
        for i in 0..stages.len() {
            let (done, rest) = stages.split_at_mut(i + 1);
            let Some(stage) = done.last_mut() else { break };
            let last = rest.is_empty();
            let outs = stage.end(self, last)?;
            for o in outs {
                if self.drive(rest, o)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Pushes one item through `stages`; true when they want no more input.
    pub(crate) fn drive(&mut self, stages: &mut [super::cmdlets::Stage<'_>], item: Val) -> R<bool> {
        let Some((stage, rest)) = stages.split_first_mut() else {
            self.emit(item);
            return Ok(false);
        };
        let last = rest.is_empty();
        let outs = stage.process(self, item, last)?;
        for o in outs {
            self.tick()?;
            if self.drive(rest, o)? {
                return Ok(true);
            }
        }
        Ok(stage.done())
    }

    /// Invokes a script block or function with arguments, in a new scope.
    pub(crate) fn call_block(
        &mut self,
        block: &Block,
        positional: Vec<Val>,
        named: Vec<(String, Val)>,
        input: Option<Vec<Val>>,
    ) -> R<()> {
        if self.call_depth >= MAX_CALL_DEPTH {
            return Err(
                self.limit("The script called functions too deeply for this simulated host.")
            );
        }
        self.call_depth += 1;
        self.scopes.push(HashMap::new());
        if let Some(input) = input {
            self.set_var("input", Val::Array(input));
        }
        let r = self
            .bind_params(block, positional, named)
            .and_then(|()| self.exec_all(&block.body));
        self.scopes.pop();
        self.call_depth -= 1;
        match r {
            Err(Flow::Return) => Ok(()),
            other => other,
        }
    }

    /// Runs a script block in the current scope with `$_` set (Where-Object, ForEach-Object)
    /// and returns its output.
    pub(crate) fn run_filter(&mut self, block: &Block, item: Val) -> R<Vec<Val>> {
        self.capture(|e| {
            e.with_item(item, |e| match e.exec_all(&block.body) {
                Err(Flow::Return) => Ok(()),
                other => other,
            })
        })
    }

    // ===== Expressions =====

    pub(crate) fn eval(&mut self, e: &Expr) -> R<Val> {
        self.tick()?;
        if matches!(
            e,
            Expr::Paren(_) | Expr::Sub(_) | Expr::ArraySub(_) | Expr::Expandable(_)
        ) {
            if self.call_depth >= MAX_CALL_DEPTH {
                return Err(self.limit(
                    "The script nests calls and expressions too deeply for this simulated host.",
                ));
            }
            self.call_depth += 1;
            let r = self.eval_inner(e);
            self.call_depth -= 1;
            return r;
        }
        self.eval_inner(e)
    }

    fn eval_inner(&mut self, e: &Expr) -> R<Val> {
        match e {
            Expr::Str(s) => Ok(Val::str(s.clone())),
            Expr::Int(i) => Ok(Val::int(*i)),
            Expr::Double(d) => Ok(Val::double(*d)),
            Expr::Expandable(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        XPart::Text(t) => s.push_str(t),
                        XPart::Var(name) => {
                            let v = self.var(name).unwrap_or_else(Val::null);
                            s.push_str(&to_str(&v));
                        }
                        XPart::Sub(stmts) => {
                            let out = self.capture(|e| e.exec_all(stmts))?;
                            s.push_str(&to_str(&collapse(out)));
                        }
                    }
                    if s.len() > MAX_STRING {
                        return Err(self.limit(
                            "The script built a string larger than this simulated host allows.",
                        ));
                    }
                }
                Ok(Val::str(s))
            }
            Expr::Var(name) => Ok(self.var(name).unwrap_or_else(Val::null)),
            Expr::Member {
                target,
                name,
                is_static,
            } => {
                if *is_static && let Expr::TypeLit(t) = &**target {
                    return super::ops::static_member(self, t, name, None, 0, 0);
                }
                let v = self.eval(target)?;
                self.charge(values::cost(&v))?;
                Ok(super::ops::member(&v, name))
            }
            Expr::Method {
                target,
                name,
                args,
                is_static,
            } => {
                let mut argv = Vec::with_capacity(args.len());
                for a in args {
                    argv.push(self.eval(a)?);
                }
                if *is_static && let Expr::TypeLit(t) = &**target {
                    return super::ops::static_member(self, t, name, Some(argv), 0, 0);
                }
                let v = self.eval(target)?;
                // Hashtables change in place through their variable.
                if let (Expr::Var(var), Val::Table(mut table)) = (&**target, v.clone()) {
                    let key = || argv.first().map_or(Value::Nil, Val::to_clixml);
                    let done = match name.to_ascii_lowercase().as_str() {
                        "add" => {
                            let k = key();
                            if table.get(&k.display_text()).is_some() {
                                let (start, end) = self.cur;
                                let text = k.display_text().into_owned();
                                return Err(self.fail(records::runtime_error(
                                    format!("Exception calling \"Add\" with \"2\" argument(s): \"Item has already been added. Key in dictionary: '{text}'  Key being added: '{text}'\""),
                                    "ArgumentException",
                                    0,
                                    "",
                                    self.site(start, end),
                                )));
                            }
                            table.set(k, argv.get(1).cloned().unwrap_or_else(Val::null));
                            true
                        }
                        "remove" => {
                            let k = key().display_text().into_owned();
                            table
                                .entries
                                .retain(|(x, _)| !x.display_text().eq_ignore_ascii_case(&k));
                            true
                        }
                        "clear" => {
                            table.entries.clear();
                            true
                        }
                        _ => false,
                    };
                    if done {
                        self.set_var(var, Val::Table(table));
                        return Ok(Val::Array(Vec::new()));
                    }
                }
                super::ops::method(self, v, name, argv)
            }
            Expr::Index { target, index } => {
                let v = self.eval(target)?;
                let i = self.eval(index)?;
                Ok(super::ops::index(&v, &i))
            }
            Expr::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.eval(i)?);
                }
                Ok(Val::Array(out))
            }
            Expr::Sub(stmts) => {
                let out = self.capture(|e| e.exec_all(stmts))?;
                Ok(collapse(out))
            }
            Expr::ArraySub(stmts) => {
                let out = self.capture(|e| e.exec_all(stmts))?;
                Ok(Val::Array(out))
            }
            Expr::Paren(s) => self.statement_value(s),
            Expr::Hash(entries) => {
                let mut t = Table::default();
                for (k, v) in entries {
                    let key = self.eval(k)?;
                    let value = self.statement_value(v)?;
                    t.set(key.to_clixml(), value);
                }
                Ok(Val::Table(t))
            }
            Expr::ScriptBlock(b) => Ok(Val::Block(Rc::clone(b))),
            Expr::Cast(t, inner) => {
                if t == "ordered"
                    && let Expr::Hash(_) = &**inner
                {
                    let v = self.eval(inner)?;
                    if let Val::Table(mut table) = v {
                        table.ordered = true;
                        return Ok(Val::Table(table));
                    }
                }
                let v = self.eval(inner)?;
                super::ops::cast(self, t, v, 0, 0)
            }
            Expr::TypeLit(t) => Ok(Val::str(super::ops::full_type_name(t))),
            Expr::Binary(op, l, r) => super::ops::eval_binary(self, *op, l, r),
            Expr::Unary(op, inner) => {
                let v = self.eval(inner)?;
                super::ops::unary(self, *op, v)
            }
            Expr::Range(a, b) => {
                let a = self.eval(a)?;
                let b = self.eval(b)?;
                let (Some(a), Some(b)) = (values::to_number(&a), values::to_number(&b)) else {
                    return Ok(Val::Array(Vec::new()));
                };
                let (a, b) = (a.as_f64() as i64, b.as_f64() as i64);
                let n = a.abs_diff(b) as usize + 1;
                if n > MAX_ITEMS {
                    return Err(self.limit("The range is larger than this simulated host allows."));
                }
                let items = if a <= b {
                    (a..=b).map(Val::int).collect()
                } else {
                    (b..=a).rev().map(Val::int).collect()
                };
                Ok(Val::Array(items))
            }
        }
    }

    /// Evaluates a command argument expression.
    pub(crate) fn eval_arg(&mut self, a: &Arg) -> R<Option<Val>> {
        match a {
            Arg::Value(e) => self.eval(e).map(Some),
            Arg::Param { value: Some(e), .. } => self.eval(e).map(Some),
            _ => Ok(None),
        }
    }

    pub(crate) fn function(&self, name: &str) -> Option<Rc<Block>> {
        self.functions.get(&name.to_ascii_lowercase()).cloned()
    }

    pub(crate) fn command_name(&mut self, name: &CommandName) -> R<Result<String, Val>> {
        match name {
            CommandName::Word(w) => Ok(Ok(w.clone())),
            CommandName::Expr(e) => {
                let v = self.eval(e)?;
                Ok(match v {
                    Val::Block(_) => Err(v),
                    other => Ok(to_str(&other)),
                })
            }
        }
    }
}

/// Output of a capture as one value: nothing is `$null`, one item is itself, more is an
/// array.
pub(crate) fn collapse(mut out: Vec<Val>) -> Val {
    match out.len() {
        0 => Val::null(),
        1 => out.pop().unwrap_or_else(Val::null),
        _ => Val::Array(out),
    }
}

/// The record for `throw <value>`: an error record is rethrown as it is.
fn thrown(v: Option<Val>, site: Site<'_>) -> ErrorRecord {
    match v {
        None => records::thrown(None, None, site),
        Some(Val::V(value @ Value::Object(_)))
            if value
                .as_object()
                .is_some_and(|o| o.is_type(psfleet_core::psrp::messages::ERROR_RECORD_TYPE)) =>
        {
            ErrorRecord::from_clixml(&value).unwrap_or_else(|_| {
                records::thrown(Some(value.display_text().into_owned()), None, site)
            })
        }
        Some(Val::V(Value::String(s))) => records::thrown(Some(s), None, site),
        Some(Val::V(Value::Nil)) => records::thrown(None, None, site),
        Some(other) => {
            let text = to_str(&other);
            records::thrown(Some(text), Some(other.to_clixml()), site)
        }
    }
}

/// The process environment of the simulated host (`$env:`, cmd's `set`).
pub(crate) fn environment(facts: &HostFacts) -> Vec<(String, String)> {
    let user = &facts.user;
    let computer = &facts.computer;
    let profile = format!("C:\\Users\\{user}");
    let mut env = vec![
        ("ALLUSERSPROFILE".to_owned(), "C:\\ProgramData".to_owned()),
        ("APPDATA".into(), format!("{profile}\\AppData\\Roaming")),
        ("CommonProgramFiles".into(), "C:\\Program Files\\Common Files".into()),
        ("COMPUTERNAME".into(), computer.clone()),
        ("ComSpec".into(), "C:\\Windows\\system32\\cmd.exe".into()),
        ("LOCALAPPDATA".into(), format!("{profile}\\AppData\\Local")),
        ("NUMBER_OF_PROCESSORS".into(), "2".into()),
        ("OS".into(), "Windows_NT".into()),
        (
            "Path".into(),
            "C:\\Windows\\system32;C:\\Windows;C:\\Windows\\System32\\Wbem;C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\".into(),
        ),
        (
            "PATHEXT".into(),
            ".COM;.EXE;.BAT;.CMD;.VBS;.VBE;.JS;.JSE;.WSF;.WSH;.MSC;.CPL".into(),
        ),
        ("PROCESSOR_ARCHITECTURE".into(), "AMD64".into()),
        ("ProgramData".into(), "C:\\ProgramData".into()),
        ("ProgramFiles".into(), "C:\\Program Files".into()),
        ("ProgramFiles(x86)".into(), "C:\\Program Files (x86)".into()),
        ("PROMPT".into(), "$P$G".into()),
        (
            "PSModulePath".into(),
            format!("{profile}\\Documents\\WindowsPowerShell\\Modules;C:\\Program Files\\WindowsPowerShell\\Modules;C:\\Windows\\system32\\WindowsPowerShell\\v1.0\\Modules"),
        ),
        ("PUBLIC".into(), "C:\\Users\\Public".into()),
        ("SystemDrive".into(), "C:".into()),
        ("SystemRoot".into(), "C:\\Windows".into()),
        ("TEMP".into(), format!("{profile}\\AppData\\Local\\Temp")),
        ("TMP".into(), format!("{profile}\\AppData\\Local\\Temp")),
        ("USERDOMAIN".into(), computer.clone()),
        ("USERNAME".into(), user.clone()),
        ("USERPROFILE".into(), profile.clone()),
        ("windir".into(), "C:\\Windows".into()),
    ];
    env.sort_by_key(|(k, _)| k.to_ascii_lowercase());
    env
}
