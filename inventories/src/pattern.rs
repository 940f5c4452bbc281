//! Host patterns for `--limit`, as Ansible evaluates them (`ansible.inventory.manager`).
//!
//! A pattern is terms separated by `,` (or `:` when the whole is not one host address):
//! `all` or `*`, a group name (its hosts and its descendants' hosts), a host name, a glob
//! (`srv00*`, `web-?`, `db[12]`), a regular expression after `~` (matched at the start of the
//! name, like Python's `re.match`), with `&` for intersection and `!` for exclusion, and an
//! optional subscript on a group (`web[0]`, `web[-1]`, `web[0:2]`). Terms apply in Ansible's
//! order: the plain ones (union), then the `&` ones, then the `!` ones; a pattern with only
//! `&`/`!` terms starts from `all`. A term that is exactly a host name selects that host.
//!
//! Host names match ignoring ASCII case (they are DNS names); group names match exactly.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

use crate::error::{ErrorKind, InventoryError};
use crate::hostpattern::constant;
use crate::model::{Inventory, printable};

/// A parsed `--limit` pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    terms: Vec<Term>,
}

/// How a term combines with what the terms before it selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Union,
    Intersect,
    Exclude,
}

/// One term: what it matches and an optional subscript.
#[derive(Debug, Clone)]
struct Term {
    op: Op,
    /// The text without the operator (and without the subscript).
    text: String,
    matcher: Matcher,
    subscript: Option<Subscript>,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// A plain word: a group or host of that name.
    Exact(String),
    /// A glob or a regex, compiled twice: exact case for groups, any case for hosts.
    Regex {
        groups: Regex,
        hosts: Regex,
        /// `~regex` (hosts are always searched, as in Ansible).
        is_regex: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscript {
    One(i64),
    Range(usize, Option<usize>),
}

impl Pattern {
    /// Parses a pattern; regular expressions and globs are compiled here.
    pub fn parse(text: &str) -> Result<Pattern, InventoryError> {
        let mut terms = Vec::new();
        for raw in split(text) {
            let (op, rest) = match raw.chars().next() {
                Some('!') => (Op::Exclude, raw.get(1..).unwrap_or_default()),
                Some('&') => (Op::Intersect, raw.get(1..).unwrap_or_default()),
                _ => (Op::Union, raw.as_str()),
            };
            if rest.is_empty() {
                return Err(bad(&raw, "'!' and '&' need a name or glob after them"));
            }
            terms.push(Term::parse(op, rest, &raw)?);
        }
        if terms.is_empty() {
            return Err(InventoryError::command_line(ErrorKind::EmptyPattern {
                pattern: printable(text),
            }));
        }
        // Ansible's order_patterns: plain terms, then intersections, then exclusions.
        terms.sort_by_key(|t| match t.op {
            Op::Union => 0,
            Op::Intersect => 1,
            Op::Exclude => 2,
        });
        if terms.first().is_some_and(|t| t.op != Op::Union) {
            terms.insert(0, Term::parse(Op::Union, "all", "all")?);
        }
        Ok(Pattern {
            text: text.to_string(),
            terms,
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The names of the hosts selected, in Ansible's order, each once.
    pub fn matches<'i>(&self, inventory: &'i Inventory) -> Result<Vec<&'i str>, InventoryError> {
        Ok(self
            .select(inventory)?
            .into_iter()
            .filter_map(|h| inventory.host_entries().get(h).map(|e| e.name()))
            .collect())
    }

    /// Terms that match no host or group (Ansible warns "Could not match supplied host
    /// pattern" for them).
    pub fn unmatched_terms(&self, inventory: &Inventory) -> Vec<String> {
        self.terms
            .iter()
            .filter(|t| t.text != "all" && t.candidates(inventory).is_empty())
            .map(|t| t.text.clone())
            .collect()
    }

    /// Indices of the selected hosts.
    pub(crate) fn select(&self, inventory: &Inventory) -> Result<Vec<usize>, InventoryError> {
        let mut selected: Vec<usize> = Vec::new();
        let mut present: HashSet<usize> = HashSet::new();
        for term in &self.terms {
            let matched = term.hosts(inventory)?;
            match term.op {
                Op::Union => {
                    for host in matched {
                        if present.insert(host) {
                            selected.push(host);
                        }
                    }
                }
                Op::Intersect | Op::Exclude => {
                    let matched: HashSet<usize> = matched.into_iter().collect();
                    let keep = term.op == Op::Intersect;
                    selected.retain(|h| matched.contains(h) == keep);
                    present = selected.iter().copied().collect();
                }
            }
        }
        Ok(selected)
    }
}

impl FromStr for Pattern {
    type Err = InventoryError;

    fn from_str(s: &str) -> Result<Pattern, InventoryError> {
        Pattern::parse(s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Term {
    fn parse(op: Op, text: &str, raw: &str) -> Result<Term, InventoryError> {
        let (text, subscript) = split_subscript(text);
        let matcher = if let Some(regex) = text.strip_prefix('~') {
            let source = format!("^(?:{regex})");
            Matcher::Regex {
                groups: compile(&source, false, raw)?,
                hosts: compile(&source, true, raw)?,
                is_regex: true,
            }
        } else if text.contains(['*', '?', '[']) {
            let source = translate_glob(text);
            Matcher::Regex {
                groups: compile(&source, false, raw)?,
                hosts: compile(&source, true, raw)?,
                is_regex: false,
            }
        } else {
            Matcher::Exact(text.to_string())
        };
        Ok(Term {
            op,
            text: text.to_string(),
            matcher,
            subscript,
        })
    }

    /// The hosts this term selects, subscript applied.
    fn hosts(&self, inventory: &Inventory) -> Result<Vec<usize>, InventoryError> {
        // Ansible: a plain term that is exactly a host name is that host.
        if self.op == Op::Union
            && self.subscript.is_none()
            && let Matcher::Exact(name) = &self.matcher
            && let Some(host) = inventory.host_index_of(name)
        {
            return Ok(vec![host]);
        }
        let hosts = self.candidates(inventory);
        match self.subscript {
            // Ansible applies no subscript to an empty match (no error either).
            _ if hosts.is_empty() => Ok(hosts),
            None => Ok(hosts),
            Some(subscript) => {
                let out_of_range = || {
                    InventoryError::command_line(ErrorKind::SubscriptOutOfRange {
                        term: printable(&format!("{}{}", self.text, subscript_text(subscript))),
                        count: hosts.len(),
                    })
                };
                match subscript {
                    Subscript::One(index) => {
                        let len = i64::try_from(hosts.len()).unwrap_or(i64::MAX);
                        let index = if index < 0 { len + index } else { index };
                        let host = usize::try_from(index)
                            .ok()
                            .and_then(|i| hosts.get(i))
                            .ok_or_else(out_of_range)?;
                        Ok(vec![*host])
                    }
                    // Python slicing: out-of-range bounds give fewer hosts, not an error.
                    Subscript::Range(start, end) => {
                        let end = end
                            .map_or(hosts.len(), |e| e.saturating_add(1))
                            .min(hosts.len());
                        Ok(hosts
                            .get(start..end)
                            .map(<[usize]>::to_vec)
                            .unwrap_or_default())
                    }
                }
            }
        }
    }

    /// Ansible's `_enumerate_matches`: hosts of the groups the term matches, then (when no
    /// group matched, or for globs and regexes) the hosts it matches by name.
    fn candidates(&self, inventory: &Inventory) -> Vec<usize> {
        let matched_groups: Vec<usize> = inventory
            .group_entries()
            .iter()
            .enumerate()
            .filter(|(_, group)| match &self.matcher {
                Matcher::Exact(name) => group.name() == name,
                Matcher::Regex { groups, .. } => groups.is_match(group.name()),
            })
            .map(|(index, _)| index)
            .collect();
        let any_group = !matched_groups.is_empty();
        let mut result = inventory.hosts_of_groups(&matched_groups);
        let mut seen: HashSet<usize> = result.iter().copied().collect();
        let search_hosts = !any_group
            || matches!(self.matcher, Matcher::Regex { is_regex: true, .. })
            || self.text.contains(['.', '?', '*', '[']);
        if search_hosts {
            for (index, host) in inventory.host_entries().iter().enumerate() {
                let hit = match &self.matcher {
                    Matcher::Exact(name) => host.name().eq_ignore_ascii_case(name),
                    Matcher::Regex { hosts, .. } => hosts.is_match(host.name()),
                };
                if hit && seen.insert(index) {
                    result.push(index);
                }
            }
        }
        result
    }
}

/// Ansible's `split_host_pattern`: commas separate; without commas, colons do unless the
/// whole is one address (an IPv6 address, `host:port`, a host with a `[1:3]` range).
fn split(text: &str) -> Vec<String> {
    let parts: Vec<&str> = if text.contains(',') {
        text.split(',').collect()
    } else if is_address(text.trim()) {
        vec![text]
    } else {
        COLON_TERMS.find_iter(text).map(|m| m.as_str()).collect()
    };
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether Ansible's `parse_address(text, allow_ranges=True)` accepts the text.
fn is_address(text: &str) -> bool {
    let host = BRACKETED_HOSTPORT
        .captures(text)
        .or_else(|| HOSTPORT.captures(text))
        .and_then(|c| c.get(1))
        .map_or(text, |m| m.as_str());
    if host.is_empty() {
        return false;
    }
    if host.parse::<std::net::IpAddr>().is_ok() || IPV4_WITH_RANGES.is_match(host) {
        return true;
    }
    host.split('.')
        .all(|label| LABEL.is_match(label) && !label.ends_with(['-', '_']))
}

/// `pattern[3]`, `pattern[-1]`, `pattern[0:2]`, `pattern[1:]` (not for `~regex`).
fn split_subscript(text: &str) -> (&str, Option<Subscript>) {
    if text.starts_with('~') {
        return (text, None);
    }
    let Some(captures) = SUBSCRIPT.captures(text) else {
        return (text, None);
    };
    let base = captures.get(1).map_or(text, |m| m.as_str());
    if let Some(index) = captures.get(2).and_then(|m| m.as_str().parse().ok()) {
        return (base, Some(Subscript::One(index)));
    }
    let start = captures.get(3).and_then(|m| m.as_str().parse().ok());
    let end = captures
        .get(5)
        .map(|m| m.as_str())
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok());
    match start {
        Some(start) => (base, Some(Subscript::Range(start, end))),
        None => (text, None),
    }
}

fn subscript_text(subscript: Subscript) -> String {
    match subscript {
        Subscript::One(i) => format!("[{i}]"),
        Subscript::Range(s, Some(e)) => format!("[{s}:{e}]"),
        Subscript::Range(s, None) => format!("[{s}:]"),
    }
}

/// Whether a glob matches a group name (case-sensitive), for the Python cross-check.
pub(crate) fn glob_matches_group(glob: &str, name: &str) -> Option<bool> {
    compile(&translate_glob(glob), false, glob)
        .ok()
        .map(|regex| regex.is_match(name))
}

/// Python's `fnmatch.translate` as a Rust regex (anchored at both ends).
fn translate_glob(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::from("^(?s:");
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        i += 1;
        match c {
            '*' => {
                if !out.ends_with(".*") {
                    out.push_str(".*");
                }
            }
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if chars.get(j) == Some(&'!') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while chars.get(j).is_some_and(|&c| c != ']') {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str("\\[");
                    continue;
                }
                let class: Vec<char> = chars.get(i..j).map(<[char]>::to_vec).unwrap_or_default();
                i = j + 1;
                let (negated, members) = match class.split_first() {
                    Some(('!', rest)) => (true, rest),
                    _ => (false, class.as_slice()),
                };
                out.push('[');
                if negated {
                    out.push('^');
                }
                for (k, &m) in members.iter().enumerate() {
                    let is_range = m == '-' && k > 0 && k + 1 < members.len();
                    if is_range {
                        out.push('-');
                    } else {
                        out.push_str(&regex::escape(&m.to_string()));
                    }
                }
                out.push(']');
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push_str(")$");
    out
}

fn compile(source: &str, case_insensitive: bool, raw: &str) -> Result<Regex, InventoryError> {
    RegexBuilder::new(source)
        .case_insensitive(case_insensitive)
        // Bounded: a hostile pattern cannot compile into a huge automaton.
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            InventoryError::command_line(ErrorKind::BadRegex {
                term: printable(raw),
                reason: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            })
        })
}

fn bad(term: &str, reason: &'static str) -> InventoryError {
    InventoryError::command_line(ErrorKind::BadPattern {
        term: printable(term),
        reason,
    })
}

/// Terms between colons: runs of non-space non-colon characters or bracketed expressions.
static COLON_TERMS: LazyLock<Regex> = LazyLock::new(|| constant(r"(?:[^\s:\[\]]|\[[^\]]*\])+"));
static BRACKETED_HOSTPORT: LazyLock<Regex> = LazyLock::new(|| constant(r"^\[(.+)\]:([0-9]+)$"));
static HOSTPORT: LazyLock<Regex> =
    LazyLock::new(|| constant(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$"));
static IPV4_WITH_RANGES: LazyLock<Regex> = LazyLock::new(|| {
    let part = r"(?:[01]?[0-9]{1,2}|2[0-4][0-9]|25[0-5]|\[[0-9]+:[0-9]+(?::[0-9]+)?\])";
    constant(&format!(r"^(?:{part}\.){{3}}{part}$"))
});
static LABEL: LazyLock<Regex> = LazyLock::new(|| {
    let range = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]";
    constant(&format!(r"(?i)^(?:\w|{range})(?:[\w-]|{range})*$"))
});
static SUBSCRIPT: LazyLock<Regex> =
    LazyLock::new(|| constant(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$"));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ini;
    use std::sync::Arc;

    fn inventory() -> Inventory {
        let mut inv = Inventory::default();
        ini::parse(
            &mut inv,
            &Arc::from("t.ini"),
            "lone\n\
             [web]\nweb01\nweb02\nweb03\n\
             [db]\ndb01\nDB02\n\
             [prod:children]\nweb\ndb\n\
             [dc]\ndc1.corp.test\n\
             [staging]\nweb03\n",
        )
        .unwrap();
        inv
    }

    fn names(pattern: &str) -> Vec<String> {
        let inv = inventory();
        Pattern::parse(pattern)
            .unwrap()
            .matches(&inv)
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn ansible_pattern_forms() {
        assert_eq!(names("all").len(), 7);
        assert_eq!(names("*").len(), 7);
        assert_eq!(names("web"), ["web01", "web02", "web03"]);
        assert_eq!(names("web:db"), ["web01", "web02", "web03", "db01", "DB02"]);
        assert_eq!(names("web,db"), names("web:db"));
        assert_eq!(names("prod:!web"), ["db01", "DB02"]);
        assert_eq!(names("prod:&staging"), ["web03"]);
        assert_eq!(names("!prod"), ["lone", "dc1.corp.test"]);
        assert_eq!(names("&staging"), ["web03"]);
        assert_eq!(names("web0*"), ["web01", "web02", "web03"]);
        assert_eq!(names("db0?"), ["db01", "DB02"]);
        assert_eq!(names("web0[!13]"), ["web02"]);
        assert_eq!(names("*0[ab1]"), ["web01", "db01"]);
        // As in Ansible, digits in brackets after a name are a subscript, not a glob class.
        assert!(names("web0[13]").is_empty());
        assert_eq!(names("~(web|db)0[12]"), ["web01", "web02", "db01", "DB02"]);
        assert_eq!(names("~dc"), ["dc1.corp.test"]);
        assert_eq!(names("db02"), ["DB02"]);
        assert_eq!(names("*.corp.test"), ["dc1.corp.test"]);
        assert_eq!(names("web[0]"), ["web01"]);
        assert_eq!(names("web[-1]"), ["web03"]);
        assert_eq!(names("web[1:]"), ["web02", "web03"]);
        assert_eq!(names("web[0:1]"), ["web01", "web02"]);
        assert_eq!(names("prod[3]"), ["db01"]);
        assert_eq!(names("ungrouped"), ["lone"]);
        assert_eq!(names(" web , lone "), ["web01", "web02", "web03", "lone"]);
        assert!(names("nothing").is_empty());
    }

    #[test]
    fn group_names_match_exactly_host_names_ignore_case() {
        assert!(names("WEB").is_empty());
        assert_eq!(names("WEB01"), ["web01"]);
        assert_eq!(names("WEB0*"), ["web01", "web02", "web03"]);
    }

    #[test]
    fn unmatched_terms_are_reported() {
        let inv = inventory();
        let pattern = Pattern::parse("web:nothing:!also*").unwrap();
        assert_eq!(pattern.unmatched_terms(&inv), ["nothing", "also*"]);
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        let err = |p: &str| Pattern::parse(p).unwrap_err().to_string();
        assert_eq!(
            err(""),
            "--limit '' is empty; give host names, group names or globs like 'web:!srv01'"
        );
        assert_eq!(
            err(" , "),
            "--limit ' , ' is empty; give host names, group names or globs like 'web:!srv01'"
        );
        assert_eq!(
            err("web,!"),
            "--limit: invalid host pattern '!': '!' and '&' need a name or glob after them"
        );
        assert!(
            err("~web(").starts_with("--limit: '~web(' is not a valid regular expression: "),
            "{}",
            err("~web(")
        );
        let inv = inventory();
        let out = Pattern::parse("web[5]")
            .unwrap()
            .matches(&inv)
            .unwrap_err()
            .to_string();
        assert_eq!(
            out,
            "--limit: no host matches the subscripted pattern 'web[5]' (the group has 3 hosts; subscripts start at 0)"
        );
    }

    #[test]
    fn splitting_follows_split_host_pattern() {
        assert_eq!(split("a:b:!c"), ["a", "b", "!c"]);
        assert_eq!(split("fe80::1"), ["fe80::1"]);
        assert_eq!(split("srv[1:3]"), ["srv[1:3]"]);
        assert_eq!(split("web[0:2]:db"), ["web[0:2]", "db"]);
        assert_eq!(split("a,b:c"), ["a", "b:c"]);
        assert_eq!(split("10.0.0.1:5986"), ["10.0.0.1:5986"]);
    }

    #[test]
    fn globs_translate_like_fnmatch() {
        assert_eq!(translate_glob("srv*"), "^(?s:srv.*)$");
        assert_eq!(translate_glob("a?[!x-z]"), "^(?s:a.[^x-z])$");
        assert_eq!(translate_glob("a[b"), "^(?s:a\\[b)$");
        assert_eq!(translate_glob("a.b**"), "^(?s:a\\.b.*)$");
    }
}
