//! The inventory as loaded: hosts, groups, their variables, and where each came from.
//!
//! It follows Ansible's inventory model (`ansible.inventory.data`): every host is in the
//! implicit group `all`; a host in no other group is in `ungrouped`; groups nest through
//! `children`; a group's hosts include its descendants' hosts. Several sources load into one
//! `Inventory`, so a host or group named in two files is one host or group (its groups are
//! unioned; a variable set twice keeps the value set last, as Ansible does).
//!
//! Host names compare ignoring ASCII case (DNS names do, RFC 4343), so `SRV1` and `srv1` are
//! one host spelt as first seen; group and variable names are case-sensitive as in Ansible.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::error::{ErrorKind, InventoryError, Location, Warning};
use crate::hostpattern;
use crate::secrets;

/// Bounds on what one inventory may hold, so that no input can exhaust memory or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest source read, in bytes.
    pub max_bytes: usize,
    /// Most hosts (after range expansion) over all sources.
    pub max_hosts: usize,
    /// Most groups over all sources.
    pub max_groups: usize,
    /// Deepest YAML nesting.
    pub max_depth: usize,
    /// Most YAML values after anchors and aliases are expanded.
    pub max_yaml_nodes: usize,
}

impl Default for Limits {
    /// 64 MiB per source, one million hosts, 100,000 groups, YAML 64 levels deep and four
    /// million values: far above a real fleet, far below what exhausts the machine.
    fn default() -> Limits {
        Limits {
            max_bytes: 64 << 20,
            max_hosts: 1_000_000,
            max_groups: 100_000,
            max_depth: 64,
            max_yaml_nodes: 4_000_000,
        }
    }
}

/// A variable's value and where it was set (for error messages and listings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// The value as text (YAML lists and mappings as JSON).
    pub value: String,
    /// Where it was set.
    pub location: Location,
}

/// A host as the inventory declares it (before precedence and defaults: see [`crate::resolve`]).
#[derive(Debug, Clone)]
pub struct HostEntry {
    name: String,
    location: Location,
    vars: BTreeMap<String, Var>,
    /// Groups the host was put in directly (indices), never `all` or `ungrouped`.
    groups: Vec<usize>,
}

impl HostEntry {
    /// The inventory name (the spelling first seen).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the host was first declared.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Variables set on the host itself.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }
}

/// A group: its variables, children and directly listed hosts.
#[derive(Debug, Clone)]
pub struct Group {
    name: String,
    location: Option<Location>,
    vars: BTreeMap<String, Var>,
    children: Vec<usize>,
    parents: Vec<usize>,
    hosts: Vec<usize>,
    priority: i64,
}

impl Group {
    /// The group name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the group was first declared (`None` for the implicit `all` and `ungrouped`).
    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    /// The group's own variables.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// `ansible_group_priority` (default 1): breaks ties between groups of equal depth.
    pub fn priority(&self) -> i64 {
        self.priority
    }
}

/// Index of the implicit group every host belongs to.
pub(crate) const ALL: usize = 0;
/// Index of the implicit group of hosts that are in no other group.
pub(crate) const UNGROUPED: usize = 1;

/// Hosts and groups loaded from one or more sources.
#[derive(Debug, Clone)]
pub struct Inventory {
    hosts: Vec<HostEntry>,
    host_index: HashMap<String, usize>,
    groups: Vec<Group>,
    group_index: HashMap<String, usize>,
    warnings: Vec<Warning>,
    limits: Limits,
}

impl Default for Inventory {
    fn default() -> Inventory {
        Inventory::new(Limits::default())
    }
}

impl Inventory {
    /// An empty inventory (only the implicit groups `all` and `ungrouped`).
    pub fn new(limits: Limits) -> Inventory {
        let mut inventory = Inventory {
            hosts: Vec::new(),
            host_index: HashMap::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            warnings: Vec::new(),
            limits,
        };
        for name in ["all", "ungrouped"] {
            inventory
                .group_index
                .insert(name.to_string(), inventory.groups.len());
            inventory.groups.push(Group {
                name: name.to_string(),
                location: None,
                vars: BTreeMap::new(),
                children: Vec::new(),
                parents: Vec::new(),
                hosts: Vec::new(),
                priority: 1,
            });
        }
        inventory
    }

    /// The bounds this inventory enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Hosts in the order first declared.
    pub fn hosts(&self) -> impl ExactSizeIterator<Item = &HostEntry> {
        self.hosts.iter()
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when no host is declared.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// A host by name (ASCII case ignored).
    pub fn host(&self, name: &str) -> Option<&HostEntry> {
        self.host_index
            .get(&name.to_ascii_lowercase())
            .and_then(|&i| self.hosts.get(i))
    }

    /// Groups in the order first declared, `all` and `ungrouped` first.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &Group> {
        self.groups.iter()
    }

    /// A group by name.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.group_index.get(name).and_then(|&i| self.groups.get(i))
    }

    /// What loading accepted but may not be what was meant.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The hosts of a group, its descendants' included, in Ansible's order (the group's own
    /// hosts, then its children's, breadth first); `None` for an unknown group.
    pub fn group_hosts(&self, name: &str) -> Option<Vec<&str>> {
        let group = *self.group_index.get(name)?;
        Some(
            self.group_host_indices(group)
                .into_iter()
                .filter_map(|h| self.hosts.get(h).map(|e| e.name.as_str()))
                .collect(),
        )
    }

    /// Every group a host is in (ancestors of its groups, `ungrouped`, `all`), nearest first:
    /// deepest first, then higher `ansible_group_priority`, then the name that sorts last.
    /// This is the reverse of the order in which group variables are applied.
    pub fn host_groups(&self, name: &str) -> Option<Vec<&str>> {
        let host = *self.host_index.get(&name.to_ascii_lowercase())?;
        let depths = self.depths();
        let mut groups = self.groups_of(host, &depths);
        groups.reverse();
        Some(
            groups
                .into_iter()
                .filter_map(|g| self.groups.get(g).map(|g| g.name.as_str()))
                .collect(),
        )
    }

    // ----- building (used by the format parsers) -----

    /// Declares a host (or finds it) and returns its index.
    pub(crate) fn add_host(&mut self, name: &str, at: &Location) -> Result<usize, InventoryError> {
        validate_host_name(name).map_err(|kind| InventoryError::at(at.clone(), kind))?;
        let key = name.to_ascii_lowercase();
        if let Some(&index) = self.host_index.get(&key) {
            return Ok(index);
        }
        if self.hosts.len() >= self.limits.max_hosts {
            return Err(InventoryError::at(
                at.clone(),
                ErrorKind::TooManyHosts {
                    limit: self.limits.max_hosts,
                },
            ));
        }
        let index = self.hosts.len();
        self.hosts.push(HostEntry {
            name: name.to_string(),
            location: at.clone(),
            vars: BTreeMap::new(),
            groups: Vec::new(),
        });
        self.host_index.insert(key, index);
        if self.group_index.contains_key(name) {
            self.warn(
                at,
                format!("'{name}' is both a host and a group name; --limit '{name}' selects both"),
            );
        }
        Ok(index)
    }

    /// Expands a host entry (`name`, `name:port`, ranges) within the host limit.
    pub(crate) fn expand_entry(
        &self,
        entry: &str,
        at: &Location,
    ) -> Result<hostpattern::Expanded, InventoryError> {
        let room = self.limits.max_hosts.saturating_sub(self.hosts.len());
        hostpattern::expand(entry, room).map_err(|kind| {
            let kind = match kind {
                ErrorKind::TooManyHosts { .. } => ErrorKind::TooManyHosts {
                    limit: self.limits.max_hosts,
                },
                other => other,
            };
            InventoryError::at(at.clone(), kind)
        })
    }

    /// Declares a group (or finds it) and returns its index.
    pub(crate) fn add_group(&mut self, name: &str, at: &Location) -> Result<usize, InventoryError> {
        if let Some(&index) = self.group_index.get(name) {
            if let Some(group) = self.groups.get_mut(index)
                && group.location.is_none()
                && index > UNGROUPED
            {
                group.location = Some(at.clone());
            }
            return Ok(index);
        }
        validate_group_name(name).map_err(|kind| InventoryError::at(at.clone(), kind))?;
        if self.groups.len() >= self.limits.max_groups {
            return Err(InventoryError::at(
                at.clone(),
                ErrorKind::TooManyGroups {
                    limit: self.limits.max_groups,
                },
            ));
        }
        let index = self.groups.len();
        self.groups.push(Group {
            name: name.to_string(),
            location: Some(at.clone()),
            vars: BTreeMap::new(),
            children: Vec::new(),
            parents: Vec::new(),
            hosts: Vec::new(),
            priority: 1,
        });
        self.group_index.insert(name.to_string(), index);
        if self.host_index.contains_key(&name.to_ascii_lowercase()) {
            self.warn(
                at,
                format!("'{name}' is both a host and a group name; --limit '{name}' selects both"),
            );
        }
        Ok(index)
    }

    /// Whether a group of that name exists.
    pub(crate) fn has_group(&self, name: &str) -> bool {
        self.group_index.contains_key(name)
    }

    /// Puts a host in a group (`all` and `ungrouped` are implicit: nothing to record).
    pub(crate) fn add_host_to_group(&mut self, host: usize, group: usize) {
        if group == ALL || group == UNGROUPED {
            return;
        }
        if let Some(entry) = self.hosts.get_mut(host)
            && !entry.groups.contains(&group)
        {
            entry.groups.push(group);
            if let Some(g) = self.groups.get_mut(group) {
                g.hosts.push(host);
            }
        }
    }

    /// Makes `child` a child of `parent`, refusing loops (Ansible refuses them too).
    pub(crate) fn add_child(
        &mut self,
        parent: usize,
        child: usize,
        at: &Location,
    ) -> Result<(), InventoryError> {
        let already = self
            .groups
            .get(parent)
            .is_some_and(|g| g.children.contains(&child));
        if already {
            return Ok(());
        }
        if child == ALL || child == parent || self.is_descendant(parent, child) {
            return Err(InventoryError::at(
                at.clone(),
                ErrorKind::GroupCycle {
                    parent: self.group_name(parent).to_string(),
                    child: self.group_name(child).to_string(),
                },
            ));
        }
        if let Some(g) = self.groups.get_mut(parent) {
            g.children.push(child);
        }
        if let Some(g) = self.groups.get_mut(child) {
            g.parents.push(parent);
        }
        Ok(())
    }

    /// Sets a host variable (a later setting replaces an earlier one, as in Ansible).
    pub(crate) fn set_host_var(
        &mut self,
        host: usize,
        name: &str,
        value: String,
        at: &Location,
    ) -> Result<(), InventoryError> {
        let value = checked_value(name, value, at)?;
        if let Some(entry) = self.hosts.get_mut(host) {
            entry.vars.insert(
                name.to_string(),
                Var {
                    value,
                    location: at.clone(),
                },
            );
        }
        Ok(())
    }

    /// Sets a group variable; `ansible_group_priority` sets the group's priority instead.
    pub(crate) fn set_group_var(
        &mut self,
        group: usize,
        name: &str,
        value: String,
        at: &Location,
    ) -> Result<(), InventoryError> {
        let value = checked_value(name, value, at)?;
        let Some(entry) = self.groups.get_mut(group) else {
            return Ok(());
        };
        if name == "ansible_group_priority" || name == "psfleet_group_priority" {
            entry.priority = value.trim().parse().map_err(|_| {
                InventoryError::at(at.clone(), ErrorKind::BadGroupPriority { value })
            })?;
            return Ok(());
        }
        entry.vars.insert(
            name.to_string(),
            Var {
                value,
                location: at.clone(),
            },
        );
        Ok(())
    }

    /// Records a warning.
    pub(crate) fn warn(&mut self, at: &Location, message: String) {
        // Bounded: a hostile file cannot grow the list without limit.
        if self.warnings.len() < 1000 {
            self.warnings.push(Warning {
                location: at.clone(),
                message,
            });
        }
    }

    // ----- queries used by patterns and resolution -----

    pub(crate) fn host_entries(&self) -> &[HostEntry] {
        &self.hosts
    }

    pub(crate) fn host_index_of(&self, name: &str) -> Option<usize> {
        self.host_index.get(&name.to_ascii_lowercase()).copied()
    }

    pub(crate) fn group_entries(&self) -> &[Group] {
        &self.groups
    }

    pub(crate) fn group_name(&self, group: usize) -> &str {
        self.groups.get(group).map_or("", |g| g.name.as_str())
    }

    /// Hosts of a group and its descendants, in Ansible's order, without duplicates.
    pub(crate) fn group_host_indices(&self, group: usize) -> Vec<usize> {
        self.hosts_of_groups(&[group])
    }

    /// Hosts of several groups and their descendants: each group's in Ansible's order (its
    /// own hosts, then its children's, breadth first), one after the other, each host once.
    /// One walk for all of them: a group already walked has nothing new to add.
    pub(crate) fn hosts_of_groups(&self, groups: &[usize]) -> Vec<usize> {
        if groups.contains(&ALL) {
            return (0..self.hosts.len()).collect();
        }
        let mut seen_hosts = vec![false; self.hosts.len()];
        let mut seen_groups = vec![false; self.groups.len()];
        let mut result = Vec::new();
        for &start in groups {
            let mut queue = VecDeque::new();
            if let Some(seen) = seen_groups.get_mut(start)
                && !*seen
            {
                *seen = true;
                queue.push_back(start);
            }
            while let Some(g) = queue.pop_front() {
                let Some(entry) = self.groups.get(g) else {
                    continue;
                };
                let implicit: Vec<usize> = if g == UNGROUPED {
                    (0..self.hosts.len())
                        .filter(|&h| self.hosts.get(h).is_some_and(|e| e.groups.is_empty()))
                        .collect()
                } else {
                    Vec::new()
                };
                for &h in entry.hosts.iter().chain(&implicit) {
                    if let Some(seen) = seen_hosts.get_mut(h)
                        && !*seen
                    {
                        *seen = true;
                        result.push(h);
                    }
                }
                for &child in &entry.children {
                    if let Some(seen) = seen_groups.get_mut(child)
                        && !*seen
                    {
                        *seen = true;
                        queue.push_back(child);
                    }
                }
            }
        }
        result
    }

    /// Every group's depth: `all` is 0, a group without parents 1, any other one more than
    /// its deepest parent (Ansible's `Group.depth`).
    pub(crate) fn depths(&self) -> Vec<u32> {
        // Kahn's algorithm over parent -> child edges; the graph has no cycles (add_child
        // refuses them), so every group is reached.
        let count = self.groups.len();
        let mut pending: Vec<usize> = self.groups.iter().map(|g| g.parents.len()).collect();
        let mut depth = vec![0u32; count];
        let mut queue: VecDeque<usize> =
            (0..count).filter(|&g| pending.get(g) == Some(&0)).collect();
        while let Some(g) = queue.pop_front() {
            let own = if g == ALL {
                0
            } else {
                depth.get(g).copied().unwrap_or(0).max(1)
            };
            if let Some(d) = depth.get_mut(g) {
                *d = own;
            }
            for &child in self.groups.get(g).map_or(&[][..], |e| &e.children) {
                if let Some(d) = depth.get_mut(child) {
                    *d = (*d).max(own + 1);
                }
                if let Some(p) = pending.get_mut(child) {
                    *p = p.saturating_sub(1);
                    if *p == 0 {
                        queue.push_back(child);
                    }
                }
            }
        }
        depth
    }

    /// The groups of a host in the order their variables apply (Ansible's `sort_groups`:
    /// by depth, then priority, then name; later ones override earlier ones).
    pub(crate) fn groups_of(&self, host: usize, depths: &[u32]) -> Vec<usize> {
        let Some(entry) = self.hosts.get(host) else {
            return Vec::new();
        };
        // Only the host's own ancestry is walked: cost follows its groups, not the inventory's.
        let mut member: HashSet<usize> = HashSet::new();
        let mut queue: VecDeque<usize> = entry.groups.iter().copied().collect();
        if entry.groups.is_empty() {
            queue.push_back(UNGROUPED);
        }
        queue.push_back(ALL);
        while let Some(g) = queue.pop_front() {
            if member.insert(g)
                && let Some(group) = self.groups.get(g)
            {
                queue.extend(group.parents.iter().copied());
            }
        }
        let mut groups: Vec<usize> = member.into_iter().collect();
        groups.sort_by(|&a, &b| {
            let key = |g: usize| {
                let group = self.groups.get(g);
                (
                    depths.get(g).copied().unwrap_or(0),
                    group.map_or(1, |g| g.priority),
                    group.map_or("", |g| g.name.as_str()),
                )
            };
            key(a).cmp(&key(b))
        });
        groups
    }

    /// Whether `group` is `ancestor` or below it.
    fn is_descendant(&self, group: usize, ancestor: usize) -> bool {
        let mut seen = vec![false; self.groups.len()];
        let mut stack = vec![ancestor];
        while let Some(g) = stack.pop() {
            if g == group {
                return true;
            }
            match seen.get_mut(g) {
                Some(s) if !*s => *s = true,
                _ => continue,
            }
            if let Some(entry) = self.groups.get(g) {
                stack.extend(entry.children.iter().copied());
            }
        }
        false
    }
}

/// Refuses host names that patterns, reports and the command line cannot carry. Other odd
/// characters are left to the engine, which reports HostContainsInvalidCharacters for them
/// before any packet (the documented PSRemotingException reason).
fn validate_host_name(name: &str) -> Result<(), ErrorKind> {
    let reason = if name.is_empty() {
        "a host name cannot be empty"
    } else if name.len() > 1024 {
        "longer than 1024 characters"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "host names cannot contain spaces or control characters"
    } else if name.contains(',') {
        "host names cannot contain commas (--limit separates names with commas)"
    } else {
        return Ok(());
    };
    Err(ErrorKind::InvalidHostName {
        name: printable(name),
        reason,
    })
}

/// Refuses group names a `--limit` pattern could not name.
fn validate_group_name(name: &str) -> Result<(), ErrorKind> {
    let reason = if name.is_empty() {
        "a group name cannot be empty"
    } else if name.len() > 1024 {
        "longer than 1024 characters"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "group names cannot contain spaces or control characters"
    } else if name.contains([':', ',', '[', ']']) {
        "group names cannot contain ':', ',', '[' or ']' (they separate --limit patterns); use letters, digits and '_'"
    } else if name.starts_with(['!', '&', '~', '@']) {
        "group names cannot start with '!', '&', '~' or '@' (--limit operators)"
    } else {
        return Ok(());
    };
    Err(ErrorKind::InvalidGroupName {
        name: printable(name),
        reason,
    })
}

/// Checks a variable name and, for password-like names, that the value is a reference.
fn checked_value(name: &str, value: String, at: &Location) -> Result<String, InventoryError> {
    let reason = if name.is_empty() {
        Some("a variable name cannot be empty")
    } else if name.len() > 256 {
        Some("longer than 256 characters")
    } else if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '=')
    {
        Some("variable names cannot contain spaces, '=' or control characters")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(InventoryError::at(
            at.clone(),
            ErrorKind::InvalidVariableName {
                name: printable(name),
                reason,
            },
        ));
    }
    if secrets::is_secret_name(name) {
        return secrets::checked_reference(name, value)
            .map_err(|kind| InventoryError::at(at.clone(), kind));
    }
    Ok(value)
}

/// A name for an error message: control characters escaped, at most 200 characters.
pub(crate) fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    // escape_debug also escapes quotes; keep them readable.
    out = out.replace("\\'", "'").replace("\\\"", "\"");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn at(line: usize) -> Location {
        Location::new(&Arc::from("t.ini"), line)
    }

    #[test]
    fn hosts_are_one_host_whatever_the_case_and_keep_the_first_spelling() {
        let mut inv = Inventory::default();
        let a = inv.add_host("SRV1.fleet.test", &at(1)).unwrap();
        let b = inv.add_host("srv1.FLEET.test", &at(2)).unwrap();
        assert_eq!(a, b);
        assert_eq!(inv.len(), 1);
        assert_eq!(
            inv.host("srv1.fleet.test").unwrap().name(),
            "SRV1.fleet.test"
        );
        assert_eq!(inv.host("srv1.fleet.test").unwrap().location().line, 1);
    }

    #[test]
    fn group_loops_are_refused_naming_both_groups() {
        let mut inv = Inventory::default();
        let a = inv.add_group("a", &at(1)).unwrap();
        let b = inv.add_group("b", &at(2)).unwrap();
        let c = inv.add_group("c", &at(3)).unwrap();
        inv.add_child(a, b, &at(4)).unwrap();
        inv.add_child(b, c, &at(5)).unwrap();
        let err = inv.add_child(c, a, &at(6)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.ini:6: adding group 'a' as a child of 'c' makes a loop ('c' is already inside 'a'); remove one of the two :children entries"
        );
        assert!(inv.add_child(a, a, &at(7)).is_err());
        assert!(inv.add_child(a, ALL, &at(8)).is_err());
    }

    #[test]
    fn depths_follow_the_longest_path_from_all() {
        let mut inv = Inventory::default();
        let a = inv.add_group("a", &at(1)).unwrap();
        let b = inv.add_group("b", &at(1)).unwrap();
        let c = inv.add_group("c", &at(1)).unwrap();
        inv.add_child(a, b, &at(1)).unwrap();
        inv.add_child(b, c, &at(1)).unwrap();
        inv.add_child(a, c, &at(1)).unwrap();
        let depths = inv.depths();
        assert_eq!(depths[ALL], 0);
        assert_eq!(depths[UNGROUPED], 1);
        assert_eq!((depths[a], depths[b], depths[c]), (1, 2, 3));
    }

    #[test]
    fn a_host_in_no_group_is_ungrouped_and_groups_list_nearest_first() {
        let mut inv = Inventory::default();
        let lone = inv.add_host("lone", &at(1)).unwrap();
        let web = inv.add_group("web", &at(2)).unwrap();
        let prod = inv.add_group("prod", &at(3)).unwrap();
        inv.add_child(prod, web, &at(4)).unwrap();
        let h = inv.add_host("w1", &at(5)).unwrap();
        inv.add_host_to_group(h, web);
        assert_eq!(inv.host_groups("lone").unwrap(), ["ungrouped", "all"]);
        assert_eq!(inv.host_groups("w1").unwrap(), ["web", "prod", "all"]);
        assert_eq!(inv.group_hosts("ungrouped").unwrap(), ["lone"]);
        assert_eq!(inv.group_hosts("prod").unwrap(), ["w1"]);
        assert_eq!(inv.group_hosts("all").unwrap(), ["lone", "w1"]);
        let _ = lone;
    }

    #[test]
    fn names_patterns_cannot_select_are_refused() {
        let mut inv = Inventory::default();
        let err = inv.add_group("web:prod", &at(3)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.ini:3: invalid group name 'web:prod'")
        );
        let err = inv.add_host("bad host", &at(4)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.ini:4: invalid host name 'bad host': host names cannot contain spaces or control characters"
        );
        // Characters Windows refuses are the engine's to report (HostContainsInvalidCharacters).
        assert!(inv.add_host("srv_01!", &at(5)).is_ok());
    }
}
