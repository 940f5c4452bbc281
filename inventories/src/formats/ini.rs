//! Ansible INI inventories, read as Ansible's `ini` inventory plugin reads them.
//!
//! - Hosts before any section are ungrouped; `[web]` lists hosts of group web, one per line:
//!   `srv1 ansible_host=10.0.0.1 ansible_port=5986`, `srv[01:20].fleet.test`, `srv2:5986`.
//!   Host lines are split like a POSIX shell (quotes, backslashes, `#` comments), then each
//!   `key=value` value is read as a Python literal when it is one (`'a b'`, `5986`, `True`).
//! - `[web:vars]` sets group variables, one `key=value` per line; everything after the `=`
//!   is the value, unless it is a Python literal followed by a `#` comment.
//! - `[web:children]` lists child groups, which must be declared somewhere in the file.
//! - Lines starting with `#` or `;` are comments.

use std::sync::{Arc, LazyLock};

use regex::Regex;

use crate::error::{ErrorKind, InventoryError, Location};
use crate::hostpattern::constant;
use crate::model::{Inventory, UNGROUPED, printable};

/// What the current section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hosts,
    Vars,
    Children,
}

/// A group used before it was declared (Ansible's `pending_declarations`).
#[derive(Debug)]
struct Pending {
    name: String,
    line: usize,
    state: State,
    parents: Vec<String>,
}

/// Loads an Ansible INI inventory into `inventory`.
pub(crate) fn parse(
    inventory: &mut Inventory,
    file: &Arc<str>,
    text: &str,
) -> Result<(), InventoryError> {
    let mut group = UNGROUPED;
    let mut group_name = "ungrouped".to_string();
    let mut state = State::Hosts;
    let mut pending: Vec<Pending> = Vec::new();

    for (index, raw) in text.lines().enumerate() {
        let at = Location::new(file, index + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(captures) = SECTION.captures(line) {
            let name = captures.get(1).map_or("", |m| m.as_str());
            let kind = captures.get(2).map(|m| m.as_str());
            state = match kind {
                None | Some("hosts") => State::Hosts,
                Some("vars") => State::Vars,
                Some("children") => State::Children,
                Some(other) => {
                    return Err(InventoryError::at(
                        at,
                        ErrorKind::IniUnknownSectionType {
                            section: printable(&format!("{name}:{other}")),
                            kind: printable(other),
                        },
                    ));
                }
            };
            if !inventory.has_group(name)
                && state == State::Vars
                && !pending.iter().any(|p| p.name == name)
            {
                pending.push(Pending {
                    name: name.to_string(),
                    line: index + 1,
                    state,
                    parents: Vec::new(),
                });
            }
            group = inventory.add_group(name, &at)?;
            group_name = name.to_string();
            if state != State::Vars
                && let Some(position) = pending.iter().position(|p| p.name == name)
            {
                if pending
                    .get(position)
                    .is_some_and(|p| p.state == State::Children)
                {
                    add_pending_children(inventory, &mut pending, name, &at)?;
                } else {
                    pending.remove(position);
                }
            }
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            return Err(InventoryError::at(
                at,
                ErrorKind::IniInvalidSection {
                    line: printable(line),
                },
            ));
        }
        match state {
            State::Hosts => parse_host_line(inventory, group, line, &at)?,
            State::Vars => {
                let Some((key, value)) = line.split_once('=') else {
                    return Err(InventoryError::at(
                        at,
                        ErrorKind::IniExpectedKeyValue {
                            group: group_name.clone(),
                            got: printable(line),
                        },
                    ));
                };
                inventory.set_group_var(
                    group,
                    key.trim(),
                    python_value(value.trim(), true),
                    &at,
                )?;
            }
            State::Children => {
                let Some(child) = GROUP_NAME.captures(line).and_then(|c| c.get(1)) else {
                    return Err(InventoryError::at(
                        at,
                        ErrorKind::IniExpectedGroupName {
                            group: group_name.clone(),
                            got: printable(line),
                        },
                    ));
                };
                let child = child.as_str();
                if inventory.has_group(child) {
                    let child = inventory.add_group(child, &at)?;
                    inventory.add_child(group, child, &at)?;
                } else if let Some(p) = pending.iter_mut().find(|p| p.name == child) {
                    p.parents.push(group_name.clone());
                } else {
                    pending.push(Pending {
                        name: child.to_string(),
                        line: index + 1,
                        state: State::Children,
                        parents: vec![group_name.clone()],
                    });
                }
            }
        }
    }

    // A group still pending was used but never declared: report the first, as Ansible does.
    if let Some(p) = pending.first() {
        let at = Location::new(file, p.line);
        let kind = match p.state {
            State::Vars => ErrorKind::IniVarsForUndefinedGroup {
                group: p.name.clone(),
            },
            _ => ErrorKind::IniUndefinedChild {
                parent: p.parents.last().cloned().unwrap_or_default(),
                child: p.name.clone(),
            },
        };
        return Err(InventoryError::at(at, kind));
    }
    Ok(())
}

/// Declares the parents that waited for `name`, and theirs in turn (iteratively: a chain of
/// pending children is as long as the file, not as deep as the stack).
fn add_pending_children(
    inventory: &mut Inventory,
    pending: &mut Vec<Pending>,
    name: &str,
    at: &Location,
) -> Result<(), InventoryError> {
    let mut work = vec![name.to_string()];
    while let Some(name) = work.pop() {
        let Some(position) = pending.iter().position(|p| p.name == name) else {
            continue;
        };
        let entry = pending.remove(position);
        let child = inventory.add_group(&name, at)?;
        for parent in entry.parents {
            let parent_index = inventory.add_group(&parent, at)?;
            inventory.add_child(parent_index, child, at)?;
            if pending
                .iter()
                .any(|p| p.name == parent && p.state == State::Children)
            {
                work.push(parent);
            }
        }
    }
    Ok(())
}

/// `host[:port] key=value ...`
fn parse_host_line(
    inventory: &mut Inventory,
    group: usize,
    line: &str,
    at: &Location,
) -> Result<(), InventoryError> {
    let tokens = shell_split(line)
        .map_err(|reason| InventoryError::at(at.clone(), ErrorKind::IniQuoting { reason }))?;
    let Some((entry, assignments)) = tokens.split_first() else {
        return Ok(());
    };
    if entry.trim() == "---" {
        return Err(InventoryError::at(at.clone(), ErrorKind::IniLooksLikeYaml));
    }
    let expanded = inventory.expand_entry(entry, at)?;
    if entry.trim().ends_with(':') && expanded.port.is_none() {
        return Err(InventoryError::at(
            at.clone(),
            ErrorKind::IniEmptyPort {
                pattern: printable(entry),
            },
        ));
    }
    let mut variables = Vec::with_capacity(assignments.len());
    for token in assignments {
        let Some((key, value)) = token.split_once('=') else {
            return Err(InventoryError::at(
                at.clone(),
                ErrorKind::IniExpectedHostVariable {
                    got: printable(token),
                },
            ));
        };
        variables.push((key, python_value(value, false)));
    }
    for name in &expanded.names {
        let host = inventory.add_host(name, at)?;
        inventory.add_host_to_group(host, group);
        if let Some(port) = expanded.port {
            inventory.set_host_var(host, "ansible_port", port.to_string(), at)?;
        }
        for (key, value) in &variables {
            inventory.set_host_var(host, key, value.clone(), at)?;
        }
    }
    Ok(())
}

/// Splits a line as Python's `shlex.split(line, comments=True)` does: whitespace separates
/// words, quotes group, a backslash escapes outside single quotes, `#` starts a comment.
pub(crate) fn shell_split(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' => break,
            '\\' => {
                word.push(
                    chars
                        .next()
                        .ok_or("a backslash at the end of the line escapes nothing")?,
                );
                in_word = true;
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a single quote is not closed"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        // In double quotes a backslash escapes only '"' and '\' (POSIX shlex).
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => word.push(e),
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err("a double quote is not closed"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("a double quote is not closed"),
                    }
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Ansible's `_parse_value` (`ast.literal_eval`, falling back to the text) reduced to what a
/// text value can hold: a quoted string loses its quotes, a number is written in decimal,
/// `True`/`False` stay words, `None` becomes empty; a list, tuple or mapping keeps its text.
/// In `:vars` sections the Python tokenizer also drops a trailing `# comment` from a literal
/// (`http_port=8080 # note` is 8080) but not from other text (`x=abc # note` keeps it all).
pub(crate) fn python_value(raw: &str, strip_comment: bool) -> String {
    let body = if strip_comment {
        strip_python_comment(raw).trim_end()
    } else {
        raw
    };
    if let Some(text) = python_string(body) {
        return text;
    }
    if let Some(number) = python_int(body) {
        return number;
    }
    if PYTHON_FLOAT.is_match(body) {
        return body.replace('_', "");
    }
    match body {
        "True" | "False" => return body.to_string(),
        "None" => return String::new(),
        _ => {}
    }
    let bracketed = [("[", "]"), ("(", ")"), ("{", "}")]
        .iter()
        .any(|(open, close)| body.starts_with(open) && body.ends_with(close));
    if bracketed {
        return body.to_string();
    }
    raw.to_string()
}

/// The text before a `#` that is outside quotes.
fn strip_python_comment(raw: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in raw.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') => return raw.get(..i).unwrap_or(raw),
            _ => {}
        }
    }
    raw
}

/// One or more single- or double-quoted Python string literals separated by spaces (Python
/// joins adjacent literals), common escapes decoded.
fn python_string(body: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    let mut literals = 0;
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(quote) = chars.next() else {
            break;
        };
        if quote != '\'' && quote != '"' {
            return None;
        }
        literals += 1;
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    other @ ('\\' | '\'' | '"') => out.push(other),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                },
                c if c == quote => break,
                c => out.push(c),
            }
        }
    }
    (literals > 0).then_some(out)
}

/// A Python integer literal in decimal (`0x1F`, `0o17`, `0b1`, `1_000`, `-5`).
fn python_int(body: &str) -> Option<String> {
    let (negative, digits) = match body.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, body.strip_prefix('+').unwrap_or(body)),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, text) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest)
    } else {
        // Python 3 refuses leading zeros on decimal integers other than 0 itself.
        if lower.len() > 1
            && lower.starts_with('0')
            && !lower.trim_start_matches(['0', '_']).is_empty()
        {
            return None;
        }
        (10, lower.as_str())
    };
    let text = text.strip_prefix('_').unwrap_or(text);
    if text.is_empty() || text.starts_with('_') || text.ends_with('_') || text.contains("__") {
        return None;
    }
    let value = u128::from_str_radix(&text.replace('_', ""), radix).ok()?;
    Some(if negative && value != 0 {
        format!("-{value}")
    } else {
        value.to_string()
    })
}

/// `[name]`, `[name:type]`, optionally followed by a `#` comment (Ansible's section regex).
static SECTION: LazyLock<Regex> =
    LazyLock::new(|| constant(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$"));
/// A group name in a `:children` section.
static GROUP_NAME: LazyLock<Regex> = LazyLock::new(|| constant(r"^([^:\]\s]+)\s*(?:#.*)?$"));
/// A Python float literal.
static PYTHON_FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    constant(
        r"^[-+]?(?:[0-9](?:_?[0-9])*\.(?:[0-9](?:_?[0-9])*)?|\.[0-9](?:_?[0-9])*)(?:[eE][-+]?[0-9]+)?$|^[-+]?[0-9](?:_?[0-9])*[eE][-+]?[0-9]+$",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Inventory, InventoryError> {
        let mut inventory = Inventory::default();
        parse(&mut inventory, &Arc::from("hosts.ini"), text)?;
        Ok(inventory)
    }

    fn var<'a>(inv: &'a Inventory, host: &str, name: &str) -> &'a str {
        &inv.host(host).unwrap().vars()[name].value
    }

    #[test]
    fn groups_children_vars_and_host_lines() {
        let inv = load(
            "lone.fleet.test\n\
             \n\
             [web]\n\
             web1 ansible_host=10.0.0.1 ansible_port=5986 owner='Team A'\n\
             web2:5985 ansible_winrm_transport=ntlm   # plain http\n\
             \n\
             [db]\n\
             db[01:02].fleet.test\n\
             \n\
             [windows:children]\n\
             web\n\
             db\n\
             \n\
             [windows:vars]\n\
             ansible_connection=winrm\n\
             http_port=8080 # a literal, comment dropped\n\
             note=plain text # kept\n\
             quoted = \"a # b\"\n",
        )
        .unwrap();
        let names: Vec<&str> = inv.hosts().map(|h| h.name()).collect();
        assert_eq!(
            names,
            [
                "lone.fleet.test",
                "web1",
                "web2",
                "db01.fleet.test",
                "db02.fleet.test"
            ]
        );
        assert_eq!(var(&inv, "web1", "ansible_host"), "10.0.0.1");
        assert_eq!(var(&inv, "web1", "owner"), "Team A");
        assert_eq!(var(&inv, "web2", "ansible_port"), "5985");
        assert_eq!(var(&inv, "web2", "ansible_winrm_transport"), "ntlm");
        assert_eq!(
            inv.host("web2").unwrap().location().to_string(),
            "hosts.ini:5"
        );
        let windows = inv.group("windows").unwrap();
        assert_eq!(windows.vars()["ansible_connection"].value, "winrm");
        assert_eq!(windows.vars()["http_port"].value, "8080");
        assert_eq!(windows.vars()["note"].value, "plain text # kept");
        assert_eq!(windows.vars()["quoted"].value, "a # b");
        assert_eq!(
            windows.vars()["quoted"].location.to_string(),
            "hosts.ini:18"
        );
        assert_eq!(
            inv.group_hosts("windows").unwrap(),
            ["web1", "web2", "db01.fleet.test", "db02.fleet.test"]
        );
        assert_eq!(inv.group_hosts("ungrouped").unwrap(), ["lone.fleet.test"]);
        assert_eq!(
            inv.host_groups("db01.fleet.test").unwrap(),
            ["db", "windows", "all"]
        );
    }

    #[test]
    fn children_may_be_declared_later_and_vars_need_a_declaration() {
        let inv = load("[all:children]\nprod\n[prod:children]\nweb\n[prod:vars]\nx=1\n[web]\nw1\n")
            .unwrap();
        assert_eq!(inv.host_groups("w1").unwrap(), ["web", "prod", "all"]);
        // vars before the group's own section is fine once the section comes.
        let inv = load("[web:vars]\nx=1\n[web]\nw1\n").unwrap();
        assert_eq!(inv.group("web").unwrap().vars()["x"].value, "1");
    }

    #[test]
    fn a_host_in_ungrouped_and_another_group_is_not_ungrouped() {
        let inv = load("h1\n[web]\nh1\nh2\n").unwrap();
        assert!(inv.group_hosts("ungrouped").unwrap().is_empty());
        assert_eq!(inv.host_groups("h1").unwrap(), ["web", "all"]);
    }

    #[test]
    fn shell_split_matches_python_shlex() {
        assert_eq!(
            shell_split("a b=\"c d\" e='f g' # x").unwrap(),
            ["a", "b=c d", "e=f g"]
        );
        assert_eq!(shell_split("a x=1#2").unwrap(), ["a", "x=1"]);
        assert_eq!(shell_split(r#"a p="x\"y\z""#).unwrap(), ["a", r#"p=x"y\z"#]);
        assert_eq!(shell_split(r"a b\ c").unwrap(), ["a", "b c"]);
        assert_eq!(shell_split("a ''").unwrap(), ["a", ""]);
        assert!(shell_split("a 'b").is_err());
        assert!(shell_split("a \"b").is_err());
        assert!(shell_split("a b\\").is_err());
    }

    #[test]
    fn values_read_as_python_literals() {
        assert_eq!(python_value("'03#pa33w0rd'", false), "03#pa33w0rd");
        assert_eq!(python_value("5986", false), "5986");
        assert_eq!(python_value("0x1656", false), "5718");
        assert_eq!(python_value("1_000", false), "1000");
        assert_eq!(python_value("-5", false), "-5");
        assert_eq!(python_value("0755", false), "0755");
        assert_eq!(python_value("1.5", false), "1.5");
        assert_eq!(python_value("None", false), "");
        assert_eq!(python_value("True # c", true), "True");
        assert_eq!(python_value("abc # c", true), "abc # c");
        assert_eq!(python_value("[1, 2] # c", true), "[1, 2]");
        assert_eq!(python_value("'a' 'b'", false), "ab");
        assert_eq!(python_value("'a' b", false), "'a' b");
        assert_eq!(python_value("ntlm", false), "ntlm");
        assert_eq!(python_value("'", false), "'");
    }

    #[test]
    fn malformed_ini_names_the_line() {
        let cases = [
            (
                "[web:hosts2]\n",
                "hosts.ini:1: section [web:hosts2] has unknown type 'hosts2'; use [group], [group:vars] or [group:children]",
            ),
            (
                "[web]\nw1\n[bad group]\n",
                "hosts.ini:3: invalid section '[bad group]'; a section is [group], [group:vars] or [group:children] with no spaces in it",
            ),
            (
                "[web]\nw1 ansible_port\n",
                "hosts.ini:2: expected key=value host variable after the host name, got 'ansible_port'",
            ),
            (
                "[web]\nw1\n[web:vars]\nport 5986\n",
                "hosts.ini:4: expected key=value in a [web:vars] section, got 'port 5986'",
            ),
            (
                "[web:children]\nbad group\n",
                "hosts.ini:2: expected a group name in a [web:children] section, got 'bad group'",
            ),
            (
                "[web]\nw1 owner='Team A\n",
                "hosts.ini:2: cannot split the host line: a single quote is not closed; close the quote or escape it with a backslash",
            ),
            (
                "[x]\nh\n[web:vars]\na=1\n",
                "hosts.ini:3: section [web:vars] is for group 'web', which is never declared; add a [web] or [web:children] section",
            ),
            (
                "[web]\nw1\n[prod:children]\nweb\ndb\n",
                "hosts.ini:5: section [prod:children] includes group 'db', which is never declared; add a [db] section (it may be empty)",
            ),
            (
                "---\nall:\n",
                "hosts.ini:1: '---' is not a host; this looks like a YAML inventory: name it .yml or pass --inventory-format yaml",
            ),
            (
                "[web]\nw1:\n",
                "hosts.ini:2: host 'w1:' ends in ':' without a port; write host:5986 or remove the colon",
            ),
            (
                "[web]\nw[1:0]\n",
                "hosts.ini:2: host range in 'w[1:0]': a host range must have begin <= end",
            ),
            (
                "[a:children]\nb\n[b:children]\na\n[a]\n[b]\n",
                "hosts.ini:4: adding group 'a' as a child of 'b' makes a loop ('b' is already inside 'a'); remove one of the two :children entries",
            ),
            (
                "[web]\nw1 ansible_password=Secret1\n",
                "hosts.ini:2: variable 'ansible_password' holds a password in plain text; psfleet never reads secrets from inventories. Remove it and set PSFLEET_PASSWORD or use --password-file, or write a reference instead: ansible_password=env:NAME (environment variable), file:/path (first line of a file), prompt, or kerberos-cache",
            ),
            (
                "[web]\nw1\n[web:vars]\nansible_winrm_password = hunter2\n",
                "hosts.ini:4: variable 'ansible_winrm_password' holds a password in plain text; psfleet never reads secrets from inventories. Remove it and set PSFLEET_PASSWORD or use --password-file, or write a reference instead: ansible_winrm_password=env:NAME (environment variable), file:/path (first line of a file), prompt, or kerberos-cache",
            ),
            (
                "[web]\nw1\n[web:vars]\nansible_group_priority=high\n",
                "hosts.ini:4: ansible_group_priority must be an integer, not 'high'",
            ),
            (
                "[web]\nw1 =x\n",
                "hosts.ini:2: invalid variable name '': a variable name cannot be empty",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(load(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }
}
