//! Fuzz targets: one function per inventory format, called by `fuzz/fuzz_targets/inventory_*.rs`
//! and replayed by `tests/integration/fuzz_replay.rs`. Not a supported API.
//!
//! Each loads arbitrary bytes in one format under small limits and, when the load succeeds,
//! resolves every host and evaluates a few `--limit` patterns. The invariants: no panic;
//! every error names the source; every resolved host comes from the inventory and is in
//! `all`; the host count stays within the limit.

use crate::{Defaults, Format, Inventory, Limits, Overrides, Pattern, resolve};

/// The CSV reader.
pub fn inventory_csv(data: &[u8]) {
    run(data, Format::Csv);
}

/// The plain-text reader.
pub fn inventory_text(data: &[u8]) {
    run(data, Format::Text);
}

/// The Ansible INI reader.
pub fn inventory_ini(data: &[u8]) {
    run(data, Format::Ini);
}

/// The Ansible YAML reader.
pub fn inventory_yaml(data: &[u8]) {
    run(data, Format::Yaml);
}

/// Small limits keep every input fast (ranges and aliases can multiply the input).
const LIMITS: Limits = Limits {
    max_bytes: 1 << 20,
    max_hosts: 2_000,
    max_groups: 500,
    max_depth: 32,
    max_yaml_nodes: 20_000,
};

#[allow(clippy::panic)] // a broken invariant is the finding
fn run(data: &[u8], format: Format) {
    let mut inventory = Inventory::new(LIMITS);
    if let Err(error) = inventory.load_bytes("fuzz", data, Some(format)) {
        let text = error.to_string();
        if !text.starts_with("fuzz") {
            panic!("error without the source name: {text}");
        }
        return;
    }
    if inventory.len() > LIMITS.max_hosts {
        panic!("{} hosts over the limit", inventory.len());
    }
    // Content detection must not panic either.
    let _ = Format::detect(&String::from_utf8_lossy(data));
    let hosts = match resolve(&inventory, &Overrides::default(), &Defaults::default()) {
        Ok(hosts) => hosts,
        Err(_) => return,
    };
    if hosts.len() != inventory.len() {
        panic!("resolved {} of {} hosts", hosts.len(), inventory.len());
    }
    for host in &hosts {
        if inventory.host(&host.name).is_none()
            || host.groups.last().map(String::as_str) != Some("all")
        {
            panic!("host {} resolved wrongly: {:?}", host.name, host.groups);
        }
    }
    // Patterns built from the inventory's own names.
    let mut patterns = vec!["all".to_string(), "*".to_string(), "!ungrouped".to_string()];
    if let Some(group) = inventory.groups().nth(2) {
        patterns.push(format!("{}:&all:!{}", group.name(), group.name()));
        patterns.push(format!("{}[0]", group.name()));
    }
    if let Some(host) = hosts.first() {
        patterns.push(host.name.clone());
    }
    for text in patterns {
        if let Ok(pattern) = Pattern::parse(&text) {
            let _ = pattern.matches(&inventory);
        }
    }
}

/// INI host-line splitting (Python's `shlex.split(line, comments=True)`), exposed for the
/// cross-check against Python in `tests/integration/inventories.rs`.
pub fn ini_split(line: &str) -> Option<Vec<String>> {
    crate::formats::ini::shell_split(line).ok()
}

/// INI value reading (Ansible's `_parse_value`), exposed for the same cross-check.
pub fn ini_value(raw: &str, vars_section: bool) -> String {
    crate::formats::ini::python_value(raw, vars_section)
}

/// Whether a `--limit` glob matches a group name (Python's `fnmatch.fnmatchcase`), exposed
/// for the cross-check against Python; `None` when the glob does not compile.
pub fn glob_matches(glob: &str, name: &str) -> Option<bool> {
    crate::pattern::glob_matches_group(glob, name)
}
