//! Where an inventory entry came from, and what can be wrong with it.
//!
//! Every error and warning carries a [`Location`] (file, line, column where it helps) and its
//! text says what is wrong and what to do. The CLI maps every [`InventoryError`] to one exit
//! code: nothing runs and nothing is written to the state store when the inventory is bad.

use std::fmt;
use std::sync::Arc;

/// A place in an inventory source: `file:line` or `file:line:column` (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The inventory file as given on the command line (`<stdin>` for `-`).
    pub file: Arc<str>,
    /// The line, 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    /// The column, 1-based, where it helps (CSV cells, YAML nodes).
    pub column: Option<usize>,
}

impl Location {
    /// A line in a file.
    pub fn new(file: &Arc<str>, line: usize) -> Location {
        Location {
            file: Arc::clone(file),
            line,
            column: None,
        }
    }

    /// A line and column in a file.
    pub fn with_column(file: &Arc<str>, line: usize, column: usize) -> Location {
        Location {
            file: Arc::clone(file),
            line,
            column: Some(column),
        }
    }

    /// The whole file.
    pub fn file(file: &Arc<str>) -> Location {
        Location::new(file, 0)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}", self.file),
            (line, None) => write!(f, "{}:{line}", self.file),
            (line, Some(column)) => write!(f, "{}:{line}:{column}", self.file),
        }
    }
}

/// An inventory that cannot be used: where, and what is wrong (boxed: results stay small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryError(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    location: Option<Location>,
    kind: ErrorKind,
}

impl InventoryError {
    /// An error at a place in a file.
    pub fn at(location: Location, kind: ErrorKind) -> InventoryError {
        InventoryError(Box::new(Inner {
            location: Some(location),
            kind,
        }))
    }

    /// An error in command-line input.
    pub fn command_line(kind: ErrorKind) -> InventoryError {
        InventoryError(Box::new(Inner {
            location: None,
            kind,
        }))
    }

    /// Where the problem is; `None` for command-line input (`--limit`, overrides).
    pub fn location(&self) -> Option<&Location> {
        self.0.location.as_ref()
    }

    /// What is wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.location {
            Some(location) => write!(f, "{location}: {}", self.0.kind),
            None => write!(f, "{}", self.0.kind),
        }
    }
}

impl std::error::Error for InventoryError {}

/// What is wrong with an inventory, a `--limit` pattern or a command-line override.
///
/// The texts are complete sentences that end with what to do; the location is printed in
/// front of them by [`InventoryError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    // --- reading ---
    /// The file could not be read.
    #[error("cannot read the inventory: {message}. Check the path given to -i")]
    Read {
        /// The operating system's reason.
        message: String,
    },
    /// The file is larger than [`crate::Limits::max_bytes`].
    #[error("the inventory is larger than {limit} bytes; split it into several files (-i a -i b)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The text is not UTF-8.
    #[error("the line is not valid UTF-8; save the inventory as UTF-8")]
    NotUtf8,
    /// More hosts than [`crate::Limits::max_hosts`].
    #[error(
        "the inventory has more than {limit} hosts; check host ranges like srv[0001:9999] for a typo, or split the run"
    )]
    TooManyHosts {
        /// The limit.
        limit: usize,
    },
    /// More groups than [`crate::Limits::max_groups`].
    #[error("the inventory has more than {limit} groups; split it into several runs")]
    TooManyGroups {
        /// The limit.
        limit: usize,
    },
    /// An unknown `--inventory-format` value.
    #[error("unknown inventory format '{given}'; use csv, text, ini or yaml")]
    UnknownFormat {
        /// The value given.
        given: String,
    },

    // --- names and values common to every format ---
    /// A host name that cannot be one.
    #[error("invalid host name '{name}': {reason}")]
    InvalidHostName {
        /// The name as written.
        name: String,
        /// Why it is refused and what to do.
        reason: &'static str,
    },
    /// A group name that patterns could not select.
    #[error("invalid group name '{name}': {reason}")]
    InvalidGroupName {
        /// The name as written.
        name: String,
        /// Why it is refused and what to do.
        reason: &'static str,
    },
    /// A variable name that cannot be one.
    #[error("invalid variable name '{name}': {reason}")]
    InvalidVariableName {
        /// The name as written.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A password in plain text.
    #[error(
        "variable '{variable}' holds a password in plain text; psfleet never reads secrets from inventories. \
         Remove it and set PSFLEET_PASSWORD or use --password-file, or write a reference instead: \
         {variable}=env:NAME (environment variable), file:/path (first line of a file), prompt, or kerberos-cache"
    )]
    PlaintextSecret {
        /// The variable name.
        variable: String,
    },
    /// A secret reference that is malformed.
    #[error("variable '{variable}': {reason}")]
    BadSecretReference {
        /// The variable name.
        variable: String,
        /// What is wrong with the reference.
        reason: String,
    },
    /// An Ansible Vault value.
    #[error(
        "variable '{variable}' is an Ansible Vault value; psfleet cannot decrypt vaults. \
         Use a reference instead: env:NAME, file:/path, prompt or kerberos-cache"
    )]
    VaultValue {
        /// The variable name.
        variable: String,
    },
    /// `ansible_group_priority` that is not an integer.
    #[error("ansible_group_priority must be an integer, not '{value}'")]
    BadGroupPriority {
        /// The value.
        value: String,
    },
    /// A group made its own ancestor.
    #[error(
        "adding group '{child}' as a child of '{parent}' makes a loop ('{parent}' is already inside '{child}'); remove one of the two :children entries"
    )]
    GroupCycle {
        /// The parent group.
        parent: String,
        /// The child group.
        child: String,
    },
    /// A host range that cannot be expanded.
    #[error("host range in '{pattern}': {reason}")]
    BadRange {
        /// The host pattern.
        pattern: String,
        /// What is wrong (Ansible's rules: begin:end or begin:end:step, equal widths, …).
        reason: String,
    },

    // --- CSV ---
    /// A CSV file without a column naming the hosts.
    #[error(
        "the CSV header has no host name column (found: {found}); the first row must be a header with a 'name' column (or host, hostname, computername)"
    )]
    CsvNoNameColumn {
        /// The header cells found.
        found: String,
    },
    /// A header cell that is empty.
    #[error("column {column} of the CSV header is empty; give every column a name")]
    CsvEmptyHeader {
        /// 1-based column.
        column: usize,
    },
    /// Two header cells that name the same thing.
    #[error("columns {first} and {second} of the CSV header both set '{name}'; keep one")]
    CsvDuplicateColumn {
        /// The column meaning.
        name: String,
        /// The first column (1-based).
        first: usize,
        /// The second column (1-based).
        second: usize,
    },
    /// A row with more or fewer cells than the header.
    #[error(
        "this row has {found} fields but the header has {expected}; quote cells that contain the delimiter"
    )]
    CsvFieldCount {
        /// Cells in the header.
        expected: usize,
        /// Cells in the row.
        found: usize,
    },
    /// A row with an empty name cell.
    #[error("this row has no host name (column {column}, '{header}')")]
    CsvEmptyName {
        /// 1-based column.
        column: usize,
        /// The header of the name column.
        header: String,
    },
    /// Malformed CSV.
    #[error("malformed CSV: {message}")]
    CsvSyntax {
        /// The parser's description.
        message: String,
    },

    // --- plain text ---
    /// A text line with more than a host.
    #[error(
        "a plain-text inventory has one host per line (optionally host:port), but this line also has '{extra}'; for host variables use an Ansible INI inventory (.ini)"
    )]
    TextExtraField {
        /// The first extra token.
        extra: String,
    },
    /// A text line with a comma.
    #[error(
        "'{line}' contains a comma; a plain-text inventory has one host per line (for a table use a .csv file with a header)"
    )]
    TextComma {
        /// The line.
        line: String,
    },

    // --- Ansible INI ---
    /// `[group:unknown]`.
    #[error(
        "section [{section}] has unknown type '{kind}'; use [group], [group:vars] or [group:children]"
    )]
    IniUnknownSectionType {
        /// The section title.
        section: String,
        /// The type after the colon.
        kind: String,
    },
    /// A bracketed line that is not a section.
    #[error(
        "invalid section '{line}'; a section is [group], [group:vars] or [group:children] with no spaces in it"
    )]
    IniInvalidSection {
        /// The line.
        line: String,
    },
    /// A host-line token without `=`.
    #[error("expected key=value host variable after the host name, got '{got}'")]
    IniExpectedHostVariable {
        /// The token.
        got: String,
    },
    /// A `[group:vars]` line without `=`.
    #[error("expected key=value in a [{group}:vars] section, got '{got}'")]
    IniExpectedKeyValue {
        /// The group.
        group: String,
        /// The line.
        got: String,
    },
    /// A `[group:children]` line that is not a group name.
    #[error("expected a group name in a [{group}:children] section, got '{got}'")]
    IniExpectedGroupName {
        /// The group.
        group: String,
        /// The line.
        got: String,
    },
    /// Unbalanced quotes on a host line.
    #[error("cannot split the host line: {reason}; close the quote or escape it with a backslash")]
    IniQuoting {
        /// What shlex-style splitting found.
        reason: &'static str,
    },
    /// `[g:vars]` for a group never declared.
    #[error(
        "section [{group}:vars] is for group '{group}', which is never declared; add a [{group}] or [{group}:children] section"
    )]
    IniVarsForUndefinedGroup {
        /// The group.
        group: String,
    },
    /// `[p:children]` naming a group never declared.
    #[error(
        "section [{parent}:children] includes group '{child}', which is never declared; add a [{child}] section (it may be empty)"
    )]
    IniUndefinedChild {
        /// The parent group.
        parent: String,
        /// The child group.
        child: String,
    },
    /// `---` as a host: a YAML file read as INI.
    #[error(
        "'---' is not a host; this looks like a YAML inventory: name it .yml or pass --inventory-format yaml"
    )]
    IniLooksLikeYaml,
    /// `host:` without a port.
    #[error("host '{pattern}' ends in ':' without a port; write host:5986 or remove the colon")]
    IniEmptyPort {
        /// The host pattern.
        pattern: String,
    },
    /// `host:99999`.
    #[error("'{pattern}': port {port} is not a port number (1-65535)")]
    BadHostPort {
        /// The host pattern.
        pattern: String,
        /// The digits after the colon.
        port: String,
    },

    // --- Ansible YAML ---
    /// The YAML parser's error.
    #[error("YAML syntax error: {message}")]
    YamlSyntax {
        /// The parser's description.
        message: String,
    },
    /// No document, or only nulls.
    #[error(
        "the YAML inventory is empty; it needs a top-level mapping like 'all: {{hosts: {{srv1: }}}}'"
    )]
    YamlEmpty,
    /// More than one document.
    #[error("the YAML inventory has more than one document ('---'); keep one")]
    YamlMultipleDocuments,
    /// Top level not a mapping.
    #[error("a YAML inventory is a mapping of group names (like 'all:'), not {found}")]
    YamlNotMapping {
        /// What was found.
        found: &'static str,
    },
    /// An inventory-plugin configuration.
    #[error(
        "this is an inventory plugin configuration ('plugin:'), which psfleet cannot run; export the hosts with ansible-inventory --list --yaml"
    )]
    YamlPluginConfig,
    /// `hosts:`, `vars:` or `children:` that is not a mapping.
    #[error("'{section}' of group '{group}' must be a mapping, not {found}")]
    YamlSectionNotMapping {
        /// The group.
        group: String,
        /// hosts, vars or children.
        section: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// Host variables that are not a mapping.
    #[error("the variables of host '{host}' must be a mapping (name: value), not {found}")]
    YamlHostVarsNotMapping {
        /// The host pattern.
        host: String,
        /// What was found.
        found: &'static str,
    },
    /// A mapping key that is not a scalar.
    #[error("a mapping key must be a plain value, not {found}")]
    YamlComplexKey {
        /// What was found.
        found: &'static str,
    },
    /// Nesting deeper than [`crate::Limits::max_depth`].
    #[error("the YAML is nested deeper than {limit} levels; flatten the group tree")]
    YamlTooDeep {
        /// The limit.
        limit: usize,
    },
    /// More nodes (after alias expansion) than [`crate::Limits::max_yaml_nodes`].
    #[error(
        "the YAML expands to more than {limit} values (anchors and aliases included); simplify it"
    )]
    YamlTooManyNodes {
        /// The limit.
        limit: usize,
    },
    /// An alias to an unknown anchor.
    #[error("alias refers to an anchor that is not defined before it")]
    YamlUnknownAlias,

    // --- resolving connection settings ---
    /// A connection variable with a value psfleet cannot use.
    #[error("host '{host}': {variable}='{value}' is not valid: {expected}")]
    InvalidValue {
        /// The host.
        host: String,
        /// The variable (or command-line option).
        variable: String,
        /// The value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A Jinja template in a connection variable.
    #[error(
        "host '{host}': {variable} is a Jinja template ('{value}'); psfleet does not evaluate templates, write the value itself"
    )]
    Template {
        /// The host.
        host: String,
        /// The variable.
        variable: String,
        /// The value.
        value: String,
    },
    /// `ansible_connection` other than winrm/psrp.
    #[error(
        "host '{host}' has ansible_connection={value}; psfleet speaks WinRM only (winrm or psrp). Leave it out of the run with --limit '!{host}' or set ansible_connection=psrp"
    )]
    UnsupportedConnection {
        /// The host.
        host: String,
        /// The value.
        value: String,
    },
    /// Certificate authentication over HTTP.
    #[error(
        "host '{host}': certificate authentication needs HTTPS, but the scheme is http; set the scheme to https (port 5986) or choose another authentication"
    )]
    CertificateOverHttp {
        /// The host.
        host: String,
    },

    // --- host patterns (--limit) ---
    /// An empty pattern.
    #[error(
        "--limit '{pattern}' is empty; give host names, group names or globs like 'web:!srv01'"
    )]
    EmptyPattern {
        /// The pattern.
        pattern: String,
    },
    /// A regular expression that does not compile.
    #[error("--limit: '{term}' is not a valid regular expression: {reason}")]
    BadRegex {
        /// The term.
        term: String,
        /// The compiler's message.
        reason: String,
    },
    /// A glob or subscript that cannot be used.
    #[error("--limit: invalid host pattern '{term}': {reason}")]
    BadPattern {
        /// The term.
        term: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A subscript outside the group.
    #[error(
        "--limit: no host matches the subscripted pattern '{term}' (the group has {count} hosts; subscripts start at 0)"
    )]
    SubscriptOutOfRange {
        /// The term.
        term: String,
        /// Hosts the term matched before the subscript.
        count: usize,
    },
    /// Nothing selected.
    #[error(
        "--limit '{pattern}' matches no host of the inventory ({hosts} hosts); group names match exactly, host names ignoring case"
    )]
    NoHostsMatched {
        /// The pattern.
        pattern: String,
        /// Hosts in the inventory.
        hosts: usize,
    },
    /// An inventory without hosts.
    #[error("the inventory has no hosts")]
    NoHosts,
}

/// Something psfleet accepted but that may not be what was meant (Ansible warns about the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub location: Location,
    /// What, and what psfleet did about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.location, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_print_as_file_line_column() {
        let file: Arc<str> = Arc::from("hosts.ini");
        assert_eq!(Location::new(&file, 3).to_string(), "hosts.ini:3");
        assert_eq!(
            Location::with_column(&file, 3, 7).to_string(),
            "hosts.ini:3:7"
        );
        assert_eq!(Location::file(&file).to_string(), "hosts.ini");
        let error = InventoryError::at(
            Location::new(&file, 3),
            ErrorKind::IniExpectedHostVariable { got: "x".into() },
        );
        assert_eq!(
            error.to_string(),
            "hosts.ini:3: expected key=value host variable after the host name, got 'x'"
        );
    }
}
