//! Ansible YAML inventories, read as Ansible's `yaml` inventory plugin reads them.
//!
//! The top level maps group names to group data; group data has `hosts` (host pattern ->
//! host variables), `vars` (group variables) and `children` (nested groups, recursively).
//! Like the plugin: a string where a mapping is expected is a one-key mapping (`hosts: srv1`),
//! other keys are skipped with a warning, host patterns take ports and ranges.
//!
//! The YAML is read through yaml-rust2's event parser into a small tree that keeps every
//! node's line and column, so that errors name them. Anchors, aliases and `<<` merge keys
//! work as in PyYAML (a later duplicate key replaces an earlier one, with a warning); the
//! expanded size is bounded ([`crate::Limits::max_yaml_nodes`]) so an alias bomb cannot
//! exhaust memory. Scalars are kept as written (`yes` stays `yes`, `0755` stays `0755`): every
//! value psfleet reads is text. Lists and mappings used as variable values become JSON.

use std::collections::HashMap;
use std::sync::Arc;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::error::{ErrorKind, InventoryError, Location};
use crate::model::{Inventory, Limits, printable};

/// Loads an Ansible YAML inventory into `inventory`.
pub(crate) fn parse(
    inventory: &mut Inventory,
    file: &Arc<str>,
    text: &str,
) -> Result<(), InventoryError> {
    let limits = *inventory.limits();
    let tree = build(text, &limits)
        .map_err(|(kind, mark)| InventoryError::at(mark.location(file), kind))?;
    for (mark, message) in tree.warnings {
        inventory.warn(&mark.location(file), message);
    }
    let root = match tree.root {
        Some(node) if !node.is_null() => node,
        _ => {
            return Err(InventoryError::at(
                Location::file(file),
                ErrorKind::YamlEmpty,
            ));
        }
    };
    let Node::Map { entries, .. } = &root else {
        return Err(InventoryError::at(
            root.mark().location(file),
            ErrorKind::YamlNotMapping {
                found: root.kind_name(),
            },
        ));
    };
    let walker = Walker { file };
    for (key, value) in entries {
        let name = walker.key_text(key)?;
        if name == "plugin" && !value.is_null() {
            return Err(InventoryError::at(
                key.mark().location(file),
                ErrorKind::YamlPluginConfig,
            ));
        }
    }
    for (key, value) in entries {
        let name = walker.key_text(key)?;
        walker.group(inventory, name, key.mark(), value)?;
    }
    Ok(())
}

/// A position in the YAML text (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    line: usize,
    column: usize,
}

impl Mark {
    fn from_marker(marker: &Marker) -> Mark {
        Mark {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }

    fn location(self, file: &Arc<str>) -> Location {
        Location::with_column(file, self.line, self.column)
    }
}

/// A YAML node with its position.
#[derive(Debug, Clone)]
enum Node {
    Scalar {
        text: String,
        plain: bool,
        tag: Option<String>,
        mark: Mark,
    },
    Seq {
        items: Vec<Node>,
        mark: Mark,
        size: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        mark: Mark,
        size: usize,
    },
}

impl Node {
    fn mark(&self) -> Mark {
        match self {
            Node::Scalar { mark, .. } | Node::Seq { mark, .. } | Node::Map { mark, .. } => *mark,
        }
    }

    /// Nodes in this subtree (what cloning it for an alias costs).
    fn size(&self) -> usize {
        match self {
            Node::Scalar { .. } => 1,
            Node::Seq { size, .. } | Node::Map { size, .. } => *size,
        }
    }

    /// YAML's null: `~`, `null`, or nothing at all (PyYAML's resolver).
    fn is_null(&self) -> bool {
        match self {
            Node::Scalar {
                text, plain, tag, ..
            } => {
                (tag.is_none()
                    && *plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
                    || tag.as_deref() == Some("tag:yaml.org,2002:null")
            }
            _ => false,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a single value",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
        }
    }

    fn tag(&self) -> Option<&str> {
        match self {
            Node::Scalar { tag, .. } => tag.as_deref(),
            _ => None,
        }
    }
}

/// The document's root, and warnings met while building it.
struct Tree {
    root: Option<Node>,
    warnings: Vec<(Mark, String)>,
}

/// A collection being built.
enum Frame {
    Seq {
        items: Vec<Node>,
        mark: Mark,
        anchor: usize,
    },
    Map {
        /// Keys and values alternate.
        flat: Vec<Node>,
        mark: Mark,
        anchor: usize,
    },
}

/// Builds the node tree from parser events, bounding depth and expanded size.
fn build(text: &str, limits: &Limits) -> Result<Tree, (ErrorKind, Mark)> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut nodes = 0usize;
    let mut documents = 0usize;
    let mut tree = Tree {
        root: None,
        warnings: Vec::new(),
    };
    let too_many = || ErrorKind::YamlTooManyNodes {
        limit: limits.max_yaml_nodes,
    };
    loop {
        let (event, marker) = parser.next_token().map_err(|e| {
            (
                ErrorKind::YamlSyntax {
                    message: e.info().to_string(),
                },
                Mark::from_marker(e.marker()),
            )
        })?;
        let mark = Mark::from_marker(&marker);
        let node = match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err((ErrorKind::YamlMultipleDocuments, mark));
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::Alias(id) => {
                let target = anchors
                    .get(&id)
                    .ok_or((ErrorKind::YamlUnknownAlias, mark))?;
                nodes = nodes.saturating_add(target.size());
                if nodes > limits.max_yaml_nodes {
                    return Err((too_many(), mark));
                }
                target.clone()
            }
            Event::Scalar(text, style, anchor, tag) => {
                nodes += 1;
                let node = Node::Scalar {
                    text,
                    plain: style == TScalarStyle::Plain,
                    tag: tag.map(|t| tag_name(&t)),
                    mark,
                };
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                nodes += 1;
                if nodes > limits.max_yaml_nodes {
                    return Err((too_many(), mark));
                }
                if stack.len() >= limits.max_depth {
                    return Err((
                        ErrorKind::YamlTooDeep {
                            limit: limits.max_depth,
                        },
                        mark,
                    ));
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        items: Vec::new(),
                        mark,
                        anchor,
                    }
                } else {
                    Frame::Map {
                        flat: Vec::new(),
                        mark,
                        anchor,
                    }
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Seq {
                        items,
                        mark,
                        anchor,
                    }) => {
                        let size = 1 + items.iter().map(Node::size).sum::<usize>();
                        (Node::Seq { items, mark, size }, anchor)
                    }
                    Some(Frame::Map { flat, mark, anchor }) => {
                        (finish_map(flat, mark, &mut tree.warnings)?, anchor)
                    }
                    None => continue,
                };
                if anchor > 0 {
                    nodes = nodes.saturating_add(node.size());
                    if nodes > limits.max_yaml_nodes {
                        return Err((too_many(), mark));
                    }
                    anchors.insert(anchor, node.clone());
                }
                node
            }
        };
        match stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { flat, .. }) => flat.push(node),
            None => tree.root = Some(node),
        }
    }
    Ok(tree)
}

/// Pairs keys with values, applies `<<` merge keys and lets a later duplicate key win (in the
/// first key's place), as PyYAML's SafeLoader does.
fn finish_map(
    flat: Vec<Node>,
    mark: Mark,
    warnings: &mut Vec<(Mark, String)>,
) -> Result<Node, (ErrorKind, Mark)> {
    let mut explicit = Vec::with_capacity(flat.len() / 2);
    let mut merged: Vec<(Node, Node)> = Vec::new();
    let mut iter = flat.into_iter();
    while let (Some(key), Some(value)) = (iter.next(), iter.next()) {
        let is_merge =
            matches!(&key, Node::Scalar { text, plain: true, tag: None, .. } if text == "<<");
        if !is_merge {
            explicit.push((key, value));
            continue;
        }
        let sources = match value {
            Node::Map { entries, .. } => vec![entries],
            Node::Seq { items, .. } => {
                let mut maps = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Node::Map { entries, .. } => maps.push(entries),
                        other => return Err((merge_error(), other.mark())),
                    }
                }
                maps
            }
            other => return Err((merge_error(), other.mark())),
        };
        // Earlier mappings in a merge list win over later ones; explicit keys win over all.
        for entries in sources.into_iter().rev() {
            merged.extend(entries);
        }
    }
    let mut entries: Vec<(Node, Node)> = Vec::with_capacity(merged.len() + explicit.len());
    // Key text -> (index in entries, whether the key was written in this mapping).
    let mut positions: HashMap<String, (usize, bool)> = HashMap::new();
    let merged_count = merged.len();
    for (index, (key, value)) in merged.into_iter().chain(explicit).enumerate() {
        let is_explicit = index >= merged_count;
        let Node::Scalar { text, .. } = &key else {
            entries.push((key, value));
            continue;
        };
        match positions.get(text.as_str()).copied() {
            Some((position, first_explicit)) => {
                // Overriding a merged key is what merge keys are for; a key written twice
                // is worth a warning (Ansible's loader gives one too).
                if is_explicit && first_explicit && warnings.len() < 1000 {
                    let first_line = entries.get(position).map_or(0, |(k, _)| k.mark().line);
                    warnings.push((
                        key.mark(),
                        format!(
                            "duplicate key '{}' (first at line {first_line}); the last value is used",
                            printable(text)
                        ),
                    ));
                }
                if let Some(slot) = entries.get_mut(position) {
                    slot.1 = value;
                }
                if is_explicit {
                    positions.insert(text.clone(), (position, true));
                }
            }
            None => {
                positions.insert(text.clone(), (entries.len(), is_explicit));
                entries.push((key, value));
            }
        }
    }
    let size = 1 + entries
        .iter()
        .map(|(k, v)| k.size() + v.size())
        .sum::<usize>();
    Ok(Node::Map {
        entries,
        mark,
        size,
    })
}

fn merge_error() -> ErrorKind {
    ErrorKind::YamlSyntax {
        message: "'<<' merges a mapping or a list of mappings".to_string(),
    }
}

/// `!vault`, `!!str` (as `tag:yaml.org,2002:str`), `!unsafe`.
fn tag_name(tag: &Tag) -> String {
    if tag.handle == "!!" {
        format!("tag:yaml.org,2002:{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// Walks the tree the way Ansible's yaml plugin does.
struct Walker<'a> {
    file: &'a Arc<str>,
}

impl Walker<'_> {
    fn at(&self, mark: Mark) -> Location {
        mark.location(self.file)
    }

    fn key_text<'n>(&self, key: &'n Node) -> Result<&'n str, InventoryError> {
        match key {
            Node::Scalar { text, .. } => Ok(text),
            other => Err(InventoryError::at(
                self.at(other.mark()),
                ErrorKind::YamlComplexKey {
                    found: other.kind_name(),
                },
            )),
        }
    }

    /// One group and, recursively, its children (depth is bounded by the tree's depth).
    fn group(
        &self,
        inventory: &mut Inventory,
        name: &str,
        at: Mark,
        data: &Node,
    ) -> Result<Option<usize>, InventoryError> {
        let entries = match data {
            Node::Map { entries, .. } => entries.as_slice(),
            node if node.is_null() => &[],
            _ => {
                inventory.warn(
                    &self.at(at),
                    format!(
                        "skipping '{}': a group is a mapping with hosts, vars and children",
                        printable(name)
                    ),
                );
                return Ok(None);
            }
        };
        let group = inventory.add_group(name, &self.at(at))?;
        for (key, value) in entries {
            let section = self.key_text(key)?;
            let section = match section {
                "hosts" => "hosts",
                "vars" => "vars",
                "children" => "children",
                other => {
                    inventory.warn(
                        &self.at(key.mark()),
                        format!(
                            "skipping unexpected key '{}' in group '{}'; only hosts, vars and children are valid",
                            printable(other),
                            printable(name)
                        ),
                    );
                    continue;
                }
            };
            // A single value is a one-key mapping (`hosts: srv1`), as in the plugin.
            let single;
            let members: &[(Node, Node)] = match value {
                Node::Map { entries, .. } => entries,
                node if node.is_null() => &[],
                Node::Scalar { mark, .. } => {
                    single = [(
                        value.clone(),
                        Node::Scalar {
                            text: String::new(),
                            plain: true,
                            tag: None,
                            mark: *mark,
                        },
                    )];
                    &single
                }
                Node::Seq { mark, .. } => {
                    return Err(InventoryError::at(
                        self.at(*mark),
                        ErrorKind::YamlSectionNotMapping {
                            group: printable(name),
                            section,
                            found: if section == "hosts" {
                                "a list (write each host as 'name:' on its own line, not '- name')"
                            } else {
                                "a list"
                            },
                        },
                    ));
                }
            };
            for (member, member_value) in members {
                let member_name = self.key_text(member)?;
                let member_at = self.at(member.mark());
                match section {
                    "vars" => {
                        let text = self.value_text(member_name, member_value)?;
                        inventory.set_group_var(group, member_name, text, &member_at)?;
                    }
                    "children" => {
                        if let Some(child) =
                            self.group(inventory, member_name, member.mark(), member_value)?
                        {
                            inventory.add_child(group, child, &member_at)?;
                        }
                    }
                    _ => self.hosts(inventory, group, member_name, &member_at, member_value)?,
                }
            }
        }
        Ok(Some(group))
    }

    /// One entry under `hosts:` (a pattern with ranges and port) and its variables.
    fn hosts(
        &self,
        inventory: &mut Inventory,
        group: usize,
        pattern: &str,
        at: &Location,
        vars: &Node,
    ) -> Result<(), InventoryError> {
        let entries = match vars {
            Node::Map { entries, .. } => entries.as_slice(),
            node if node.is_null() => &[],
            other => {
                return Err(InventoryError::at(
                    self.at(other.mark()),
                    ErrorKind::YamlHostVarsNotMapping {
                        host: printable(pattern),
                        found: other.kind_name(),
                    },
                ));
            }
        };
        let mut values = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let name = self.key_text(key)?;
            values.push((name, self.value_text(name, value)?, self.at(key.mark())));
        }
        let expanded = inventory.expand_entry(pattern, at)?;
        for name in &expanded.names {
            let host = inventory.add_host(name, at)?;
            inventory.add_host_to_group(host, group);
            if let Some(port) = expanded.port {
                inventory.set_host_var(host, "ansible_port", port.to_string(), at)?;
            }
            for (var, value, var_at) in &values {
                inventory.set_host_var(host, var, value.clone(), var_at)?;
            }
        }
        Ok(())
    }

    /// A variable's value as text: scalars as written, null as empty, collections as JSON.
    fn value_text(&self, name: &str, node: &Node) -> Result<String, InventoryError> {
        if node.tag() == Some("!vault") {
            return Err(InventoryError::at(
                self.at(node.mark()),
                ErrorKind::VaultValue {
                    variable: name.to_string(),
                },
            ));
        }
        Ok(match node {
            node if node.is_null() => String::new(),
            Node::Scalar { text, .. } => text.clone(),
            other => to_json(other).to_string(),
        })
    }
}

/// A collection as JSON (scalars as strings, null as null).
fn to_json(node: &Node) -> serde_json::Value {
    match node {
        node if node.is_null() => serde_json::Value::Null,
        Node::Scalar { text, .. } => serde_json::Value::String(text.clone()),
        Node::Seq { items, .. } => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Node::Map { entries, .. } => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Node::Scalar { text, .. } => text.clone(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Inventory, InventoryError> {
        let mut inventory = Inventory::default();
        parse(&mut inventory, &Arc::from("hosts.yml"), text)?;
        Ok(inventory)
    }

    #[test]
    fn groups_hosts_vars_children_as_the_yaml_plugin() {
        let inv = load(
            "all:\n\
             \x20 hosts:\n\
             \x20   lone.fleet.test:\n\
             \x20 vars:\n\
             \x20   ansible_connection: psrp\n\
             \x20 children:\n\
             \x20   windows:\n\
             \x20     vars:\n\
             \x20       ansible_psrp_auth: ntlm\n\
             \x20     children:\n\
             \x20       web:\n\
             \x20         hosts:\n\
             \x20           web[1:2].fleet.test:\n\
             \x20             ansible_port: 5986\n\
             \x20           web3.fleet.test:5985:\n\
             \x20       db:\n\
             \x20         hosts: db1.fleet.test\n\
             \x20         vars: {tags: [a, b], nested: {k: v}, nothing: ~}\n",
        )
        .unwrap();
        let names: Vec<&str> = inv.hosts().map(|h| h.name()).collect();
        assert_eq!(
            names,
            [
                "lone.fleet.test",
                "web1.fleet.test",
                "web2.fleet.test",
                "web3.fleet.test",
                "db1.fleet.test"
            ]
        );
        let web1 = inv.host("web1.fleet.test").unwrap();
        assert_eq!(web1.vars()["ansible_port"].value, "5986");
        assert_eq!(
            web1.vars()["ansible_port"].location.to_string(),
            "hosts.yml:14:15"
        );
        assert_eq!(web1.location().to_string(), "hosts.yml:13:13");
        assert_eq!(
            inv.host("web3.fleet.test").unwrap().vars()["ansible_port"].value,
            "5985"
        );
        assert_eq!(
            inv.group("all").unwrap().vars()["ansible_connection"].value,
            "psrp"
        );
        let db = inv.group("db").unwrap();
        assert_eq!(db.vars()["tags"].value, r#"["a","b"]"#);
        assert_eq!(db.vars()["nested"].value, r#"{"k":"v"}"#);
        assert_eq!(db.vars()["nothing"].value, "");
        assert_eq!(
            inv.host_groups("web2.fleet.test").unwrap(),
            ["web", "windows", "all"]
        );
        assert_eq!(inv.group_hosts("ungrouped").unwrap(), ["lone.fleet.test"]);
        assert_eq!(
            inv.group_hosts("windows").unwrap(),
            [
                "web1.fleet.test",
                "web2.fleet.test",
                "web3.fleet.test",
                "db1.fleet.test"
            ]
        );
        assert!(inv.warnings().is_empty(), "{:?}", inv.warnings());
    }

    #[test]
    fn anchors_merge_keys_and_duplicates_follow_pyyaml() {
        let inv = load(
            "base: &base\n\
             \x20 vars: &common {ansible_psrp_auth: ntlm, owner: ops}\n\
             web:\n\
             \x20 vars:\n\
             \x20   <<: *common\n\
             \x20   owner: web-team\n\
             \x20 hosts:\n\
             \x20   w1:\n\
             \x20   w1:\n\
             \x20     x: 2\n",
        )
        .unwrap();
        let web = inv.group("web").unwrap();
        assert_eq!(web.vars()["ansible_psrp_auth"].value, "ntlm");
        assert_eq!(web.vars()["owner"].value, "web-team");
        assert_eq!(inv.host("w1").unwrap().vars()["x"].value, "2");
        assert_eq!(inv.warnings().len(), 1);
        assert_eq!(
            inv.warnings()[0].to_string(),
            "hosts.yml:9:5: warning: duplicate key 'w1' (first at line 8); the last value is used"
        );
    }

    #[test]
    fn unexpected_keys_and_invalid_groups_are_skipped_with_warnings() {
        let inv = load("web:\n  hosts: {w1: }\n  host_vars: {x: 1}\nbad: 5\n").unwrap();
        let warnings: Vec<String> = inv.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "hosts.yml:3:3: warning: skipping unexpected key 'host_vars' in group 'web'; only hosts, vars and children are valid",
                "hosts.yml:4:1: warning: skipping 'bad': a group is a mapping with hosts, vars and children",
            ]
        );
        assert_eq!(inv.len(), 1);
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            text.push_str(&format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let err = load(&text).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::YamlTooManyNodes { .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let deep = format!("{}x", "a: {".repeat(100));
        let cases: Vec<(&str, &str)> = vec![
            (
                "",
                "hosts.yml: the YAML inventory is empty; it needs a top-level mapping like 'all: {hosts: {srv1: }}'",
            ),
            (
                "- srv1\n- srv2\n",
                "hosts.yml:1:1: a YAML inventory is a mapping of group names (like 'all:'), not a list",
            ),
            (
                "all:\n  hosts:\n    - srv1\n",
                "hosts.yml:3:5: 'hosts' of group 'all' must be a mapping, not a list (write each host as 'name:' on its own line, not '- name')",
            ),
            (
                "all:\n  vars: [a]\n",
                "hosts.yml:2:9: 'vars' of group 'all' must be a mapping, not a list",
            ),
            (
                "all:\n  hosts:\n    srv1: [a]\n",
                "hosts.yml:3:11: the variables of host 'srv1' must be a mapping (name: value), not a list",
            ),
            (
                "all:\n  hosts:\n    srv1:\n      ansible_password: Secret1\n",
                "hosts.yml:4:7: variable 'ansible_password' holds a password in plain text; psfleet never reads secrets from inventories. Remove it and set PSFLEET_PASSWORD or use --password-file, or write a reference instead: ansible_password=env:NAME (environment variable), file:/path (first line of a file), prompt, or kerberos-cache",
            ),
            (
                "all:\n  vars:\n    ansible_password: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6162\n",
                "hosts.yml:4:7: variable 'ansible_password' is an Ansible Vault value; psfleet cannot decrypt vaults. Use a reference instead: env:NAME, file:/path, prompt or kerberos-cache",
            ),
            (
                "all:\n  hosts:\n    srv1:\n  bad: [\n",
                "hosts.yml:5:1: YAML syntax error: while parsing a node, did not find expected node content",
            ),
            (
                "all: {hosts: {a: }}\n---\nb: {}\n",
                "hosts.yml:2:1: the YAML inventory has more than one document ('---'); keep one",
            ),
            (
                "plugin: aws_ec2\nregions: [x]\n",
                "hosts.yml:1:1: this is an inventory plugin configuration ('plugin:'), which psfleet cannot run; export the hosts with ansible-inventory --list --yaml",
            ),
            (
                "all:\n  children:\n    web:\n      hosts:\n        w[3:1]:\n",
                "hosts.yml:5:9: host range in 'w[3:1]': a host range must have begin <= end",
            ),
            (
                "all:\n  children:\n    a:\n      children:\n        all:\n",
                "hosts.yml:5:9: adding group 'all' as a child of 'a' makes a loop ('a' is already inside 'all'); remove one of the two :children entries",
            ),
            (
                "? [a, b]\n: {}\n",
                "hosts.yml:1:3: a mapping key must be a plain value, not a list",
            ),
            (
                "x: *nope\n",
                "hosts.yml:1:4: YAML syntax error: while parsing node, found unknown anchor",
            ),
            (
                deep.as_str(),
                "hosts.yml:1:256: the YAML is nested deeper than 64 levels; flatten the group tree",
            ),
            (
                "all:\n  children:\n    'web prod':\n",
                "hosts.yml:3:5: invalid group name 'web prod': group names cannot contain spaces or control characters",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(load(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }
}
