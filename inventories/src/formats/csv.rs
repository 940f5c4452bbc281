//! CSV: a header row, then one host per row.
//!
//! Header names are matched ignoring case and surrounding spaces. The documented columns:
//!
//! | column | meaning |
//! |---|---|
//! | `name` (or `host`, `hostname`, `computername`) | the host name (required) |
//! | `group` (or `groups`) | groups, separated by `;`, `,` or spaces |
//! | `address`, `port`, `scheme`, `authentication`, `user`, `configuration_name`, `path`, `cert_validation`, `ca_trust_path`, `password` | the host variables `psfleet_address`, `psfleet_port`, … |
//!
//! Any other column is a free-form host variable named by its header (an Ansible name such
//! as `ansible_port` is understood as such; `expected` is kept for the simulator's
//! inventories). Empty cells set nothing. Lines starting with `#` are comments. The delimiter
//! is `,`, or `;` or a tab when the header uses that instead (spreadsheets in many locales
//! write `;`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{ErrorKind, InventoryError, Location};
use crate::model::{Inventory, printable};
use crate::resolve::KNOWN_VARIABLES;

/// What a column sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Column {
    Name,
    Groups,
    Var(String),
}

/// The documented column names and the variables they set.
const COLUMNS: &[(&str, &str)] = &[
    ("address", "psfleet_address"),
    ("port", "psfleet_port"),
    ("scheme", "psfleet_scheme"),
    ("authentication", "psfleet_authentication"),
    ("user", "psfleet_user"),
    ("configuration_name", "psfleet_configuration_name"),
    ("path", "psfleet_path"),
    ("cert_validation", "psfleet_cert_validation"),
    ("ca_trust_path", "psfleet_ca_trust_path"),
    ("password", "psfleet_password"),
];

/// Loads a CSV inventory into `inventory`.
pub(crate) fn parse(
    inventory: &mut Inventory,
    file: &Arc<str>,
    text: &str,
) -> Result<(), InventoryError> {
    // Comment lines are blanked rather than left to the reader's comment option, which does
    // not count them in its line numbers.
    let blanked = blank_comments(text);
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .delimiter(sniff_delimiter(text))
        .from_reader(blanked.as_bytes());
    let mut records = reader.records();

    let Some(header) = records.next() else {
        return Ok(());
    };
    let lines = Lines::new(&blanked);
    let header = header.map_err(|e| syntax_error(file, &lines, &e))?;
    let header_line = lines.of(header.position());
    let mut columns = Vec::with_capacity(header.len());
    let mut seen: HashMap<Column, usize> = HashMap::new();
    for (index, cell) in header.iter().enumerate() {
        let at = Location::new(file, header_line);
        if cell.is_empty() {
            return Err(InventoryError::at(
                at,
                ErrorKind::CsvEmptyHeader { column: index + 1 },
            ));
        }
        let column = column_for(cell);
        if let Some(first) = seen.insert(column.clone(), index + 1) {
            let name = match &column {
                Column::Name => "the host name".to_string(),
                Column::Groups => "the groups".to_string(),
                Column::Var(var) => var.clone(),
            };
            return Err(InventoryError::at(
                at,
                ErrorKind::CsvDuplicateColumn {
                    name,
                    first,
                    second: index + 1,
                },
            ));
        }
        columns.push(column);
    }
    let Some(name_column) = columns.iter().position(|c| *c == Column::Name) else {
        return Err(InventoryError::at(
            Location::new(file, header_line),
            ErrorKind::CsvNoNameColumn {
                found: printable(&header.iter().collect::<Vec<_>>().join(", ")),
            },
        ));
    };

    for record in records {
        let record = record.map_err(|e| syntax_error(file, &lines, &e))?;
        let at = Location::new(file, lines.of(record.position()));
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != columns.len() {
            return Err(InventoryError::at(
                at,
                ErrorKind::CsvFieldCount {
                    expected: columns.len(),
                    found: record.len(),
                },
            ));
        }
        let name = record.get(name_column).unwrap_or_default();
        if name.is_empty() {
            return Err(InventoryError::at(
                at,
                ErrorKind::CsvEmptyName {
                    column: name_column + 1,
                    header: header.get(name_column).unwrap_or_default().to_string(),
                },
            ));
        }
        let host = inventory.add_host(name, &at)?;
        for (column, cell) in columns.iter().zip(record.iter()) {
            if cell.is_empty() {
                continue;
            }
            match column {
                Column::Name => {}
                Column::Groups => {
                    for group in cell.split([';', ',', ' ', '\t']).filter(|g| !g.is_empty()) {
                        let group = inventory.add_group(group, &at)?;
                        inventory.add_host_to_group(host, group);
                    }
                }
                Column::Var(var) => inventory.set_host_var(host, var, cell.to_string(), &at)?,
            }
        }
    }
    Ok(())
}

/// The meaning of a header cell.
fn column_for(cell: &str) -> Column {
    let lower = cell.to_ascii_lowercase();
    match lower.as_str() {
        "name" | "host" | "hostname" | "computername" => return Column::Name,
        "group" | "groups" => return Column::Groups,
        _ => {}
    }
    if let Some((_, var)) = COLUMNS.iter().find(|(column, _)| *column == lower) {
        return Column::Var((*var).to_string());
    }
    if KNOWN_VARIABLES.contains(&lower.as_str()) {
        return Column::Var(lower);
    }
    Column::Var(cell.to_string())
}

/// The text with lines that start with `#` emptied (their line breaks kept).
fn blank_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            if line.ends_with("\r\n") {
                out.push_str("\r\n");
            } else if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

/// `,` unless the header line has more `;` or tabs than commas.
fn sniff_delimiter(text: &str) -> u8 {
    let header = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    let count = |c: char| header.chars().filter(|&x| x == c).count();
    let (commas, semicolons, tabs) = (count(','), count(';'), count('\t'));
    if semicolons > commas && semicolons >= tabs {
        b';'
    } else if tabs > commas && tabs > semicolons {
        b'\t'
    } else {
        b','
    }
}

/// Line numbers from the reader's byte positions. The reader places a record after blank
/// lines at the start of those blank lines, so line breaks right at the position are skipped.
struct Lines<'t> {
    text: &'t str,
    breaks: Vec<usize>,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Lines<'t> {
        let breaks = text.match_indices('\n').map(|(i, _)| i).collect();
        Lines { text, breaks }
    }

    fn of(&self, position: Option<&::csv::Position>) -> usize {
        let Some(position) = position else {
            return 0;
        };
        let mut byte = usize::try_from(position.byte()).unwrap_or(usize::MAX);
        let rest = self.text.get(byte..).unwrap_or_default();
        byte += rest.len() - rest.trim_start_matches(['\r', '\n']).len();
        self.breaks.partition_point(|&b| b < byte) + 1
    }
}

fn syntax_error(file: &Arc<str>, lines: &Lines<'_>, error: &::csv::Error) -> InventoryError {
    let at = Location::new(file, lines.of(error.position()));
    match error.kind() {
        ::csv::ErrorKind::Utf8 { .. } => InventoryError::at(at, ErrorKind::NotUtf8),
        _ => InventoryError::at(
            at,
            ErrorKind::CsvSyntax {
                message: error.to_string(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Inventory, InventoryError> {
        let mut inventory = Inventory::default();
        parse(&mut inventory, &Arc::from("fleet.csv"), text)?;
        Ok(inventory)
    }

    #[test]
    fn documented_columns_groups_and_free_vars() {
        let inv = load(
            "Name , Address,PORT,scheme,Authentication,configuration_name,group,Owner,expected,Ansible_User\n\
             # a comment\n\
             srv1.fleet.test,127.0.0.11,5986,https,ntlm,JEA_Ops,web;prod,alice,Succeeded,FLEET\\ops\n\
             srv2.fleet.test,,,,,,web,,InvalidDNS,\n\
             \n\
             \"srv3.fleet.test\",\"127.0.0.13\",,,,,\"db, prod\",\"bob, jr\",,\n",
        )
        .unwrap();
        assert_eq!(inv.len(), 3);
        let srv1 = inv.host("srv1.fleet.test").unwrap();
        let vars: Vec<(&str, &str)> = srv1
            .vars()
            .iter()
            .map(|(k, v)| (k.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(
            vars,
            [
                ("Owner", "alice"),
                ("ansible_user", "FLEET\\ops"),
                ("expected", "Succeeded"),
                ("psfleet_address", "127.0.0.11"),
                ("psfleet_authentication", "ntlm"),
                ("psfleet_configuration_name", "JEA_Ops"),
                ("psfleet_port", "5986"),
                ("psfleet_scheme", "https"),
            ]
        );
        assert_eq!(srv1.location().to_string(), "fleet.csv:3");
        assert_eq!(inv.host("srv3.fleet.test").unwrap().location().line, 6);
        assert_eq!(
            inv.host_groups("srv1.fleet.test").unwrap(),
            ["web", "prod", "all"]
        );
        assert_eq!(
            inv.group_hosts("prod").unwrap(),
            ["srv1.fleet.test", "srv3.fleet.test"]
        );
        assert_eq!(
            inv.host("srv2.fleet.test").unwrap().vars()["expected"].value,
            "InvalidDNS"
        );
        assert_eq!(
            inv.host("srv3.fleet.test").unwrap().vars()["Owner"].value,
            "bob, jr"
        );
    }

    #[test]
    fn semicolon_and_tab_delimiters_are_sniffed_from_the_header() {
        let inv = load("name;port;group\nsrv1;5985;a b\n").unwrap();
        assert_eq!(
            inv.host("srv1").unwrap().vars()["psfleet_port"].value,
            "5985"
        );
        assert_eq!(inv.group_hosts("b").unwrap(), ["srv1"]);
        let inv = load("hostname\tport\nsrv1\t5986\n").unwrap();
        assert_eq!(
            inv.host("srv1").unwrap().vars()["psfleet_port"].value,
            "5986"
        );
    }

    #[test]
    fn malformed_csv_names_the_line() {
        let cases = [
            (
                "address,port\n1.2.3.4,5985\n",
                "fleet.csv:1: the CSV header has no host name column (found: address, port); the first row must be a header with a 'name' column (or host, hostname, computername)",
            ),
            (
                "name,,port\n",
                "fleet.csv:1: column 2 of the CSV header is empty; give every column a name",
            ),
            (
                "name,host\n",
                "fleet.csv:1: columns 1 and 2 of the CSV header both set 'the host name'; keep one",
            ),
            (
                "name,port,Port\n",
                "fleet.csv:1: columns 2 and 3 of the CSV header both set 'psfleet_port'; keep one",
            ),
            (
                "name,port\nsrv1,5985\nsrv2,5985,x\n",
                "fleet.csv:3: this row has 3 fields but the header has 2; quote cells that contain the delimiter",
            ),
            (
                "name,port\nsrv1\n",
                "fleet.csv:2: this row has 1 fields but the header has 2; quote cells that contain the delimiter",
            ),
            (
                "name,port\n,5985\n",
                "fleet.csv:2: this row has no host name (column 1, 'name')",
            ),
            (
                "name,password\nsrv1,hunter2\n",
                "fleet.csv:2: variable 'psfleet_password' holds a password in plain text; psfleet never reads secrets from inventories. Remove it and set PSFLEET_PASSWORD or use --password-file, or write a reference instead: psfleet_password=env:NAME (environment variable), file:/path (first line of a file), prompt, or kerberos-cache",
            ),
            (
                "name,ansible_password\nsrv1,{{ vault_pw }}\n",
                "fleet.csv:2: variable 'ansible_password': is a Jinja template, which psfleet does not evaluate; write a reference instead: env:NAME, file:/path, prompt or kerberos-cache",
            ),
            (
                "name,group\nsrv1,web:prod\n",
                "fleet.csv:2: invalid group name 'web:prod': group names cannot contain ':', ',', '[' or ']' (they separate --limit patterns); use letters, digits and '_'",
            ),
            (
                "name\nbad host\n",
                "fleet.csv:2: invalid host name 'bad host': host names cannot contain spaces or control characters",
            ),
            (
                "name,group\nsrv1,!web\n",
                "fleet.csv:2: invalid group name '!web': group names cannot start with '!', '&', '~' or '@' (--limit operators)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(load(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }

    #[test]
    fn references_are_kept_as_references() {
        let inv = load("name,password,ansible_winrm_pass\nsrv1,env:PW,file:pw.txt\n").unwrap();
        let vars = inv.host("srv1").unwrap().vars();
        assert_eq!(vars["psfleet_password"].value, "env:PW");
        assert_eq!(vars["ansible_winrm_pass"].value, "file:pw.txt");
    }
}
