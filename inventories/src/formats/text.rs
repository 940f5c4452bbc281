//! Plain text: one host per line, `host` or `host:port` (and Ansible ranges such as
//! `srv[01:20].fleet.test`), `#` comments, blank lines ignored. No groups, no variables: for
//! those use CSV or an Ansible inventory.

use std::sync::Arc;

use crate::error::{ErrorKind, InventoryError, Location};
use crate::model::{Inventory, printable};

/// Loads a plain-text host list into `inventory`.
pub(crate) fn parse(
    inventory: &mut Inventory,
    file: &Arc<str>,
    text: &str,
) -> Result<(), InventoryError> {
    for (index, line) in text.lines().enumerate() {
        let at = Location::new(file, index + 1);
        let mut tokens = line
            .split_whitespace()
            .take_while(|token| !token.starts_with('#'));
        let Some(entry) = tokens.next() else {
            continue;
        };
        if let Some(extra) = tokens.next() {
            return Err(InventoryError::at(
                at,
                ErrorKind::TextExtraField {
                    extra: printable(extra),
                },
            ));
        }
        if entry.contains(',') {
            return Err(InventoryError::at(
                at,
                ErrorKind::TextComma {
                    line: printable(line.trim()),
                },
            ));
        }
        let expanded = inventory.expand_entry(entry, &at)?;
        for name in &expanded.names {
            let host = inventory.add_host(name, &at)?;
            if let Some(port) = expanded.port {
                inventory.set_host_var(host, "ansible_port", port.to_string(), &at)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Inventory, InventoryError> {
        let mut inventory = Inventory::default();
        parse(&mut inventory, &Arc::from("hosts.txt"), text)?;
        Ok(inventory)
    }

    #[test]
    fn hosts_ports_ranges_and_comments() {
        let inv = load(
            "# fleet\n\nsrv1.fleet.test\nsrv2.fleet.test:5986   # https\n  web[1:3]\n10.0.0.5\n[fe80::1]:5985\n",
        )
        .unwrap();
        let names: Vec<&str> = inv.hosts().map(|h| h.name()).collect();
        assert_eq!(
            names,
            [
                "srv1.fleet.test",
                "srv2.fleet.test",
                "web1",
                "web2",
                "web3",
                "10.0.0.5",
                "fe80::1"
            ]
        );
        let srv2 = inv.host("srv2.fleet.test").unwrap();
        assert_eq!(srv2.vars()["ansible_port"].value, "5986");
        assert_eq!(srv2.location().to_string(), "hosts.txt:4");
        assert!(inv.host("srv1.fleet.test").unwrap().vars().is_empty());
        assert_eq!(
            inv.host("fe80::1").unwrap().vars()["ansible_port"].value,
            "5985"
        );
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let cases = [
            (
                "srv1 ansible_port=5986\n",
                "hosts.txt:1: a plain-text inventory has one host per line (optionally host:port), but this line also has 'ansible_port=5986'; for host variables use an Ansible INI inventory (.ini)",
            ),
            (
                "ok\nsrv1,srv2\n",
                "hosts.txt:2: 'srv1,srv2' contains a comma; a plain-text inventory has one host per line (for a table use a .csv file with a header)",
            ),
            (
                "a\nb\nsrv[1:\n",
                "hosts.txt:3: host range in 'srv[1:': '[' without a closing ']'",
            ),
            (
                "srv1:0\n",
                "hosts.txt:1: 'srv1:0': port 0 is not a port number (1-65535)",
            ),
            (
                "srv1:65536\n",
                "hosts.txt:1: 'srv1:65536': port 65536 is not a port number (1-65535)",
            ),
            (
                "web[5:1]\n",
                "hosts.txt:1: host range in 'web[5:1]': a host range must have begin <= end",
            ),
            (
                "web[01:1000]\n",
                "hosts.txt:1: host range in 'web[01:1000]': a zero-padded host range must have begin and end of equal length, like [01:20]",
            ),
            (
                "web[1:2:0]\n",
                "hosts.txt:1: host range in 'web[1:2:0]': the step of a host range cannot be 0",
            ),
            (
                "srv]1\n",
                "hosts.txt:1: host range in 'srv]1': ']' without an opening '['",
            ),
            (
                "x\n\n\nweb[a:9]\n",
                "hosts.txt:4: host range in 'web[a:9]': host range bounds must be numbers or single letters",
            ),
            (
                "srv1\tsrv2\n",
                "hosts.txt:1: a plain-text inventory has one host per line (optionally host:port), but this line also has 'srv2'; for host variables use an Ansible INI inventory (.ini)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(load(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }

    #[test]
    fn ranges_are_bounded_by_the_host_limit() {
        let mut inventory = Inventory::new(crate::Limits {
            max_hosts: 100,
            ..Default::default()
        });
        let err = parse(&mut inventory, &Arc::from("big.txt"), "a[1:50]\nb[1:51]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "big.txt:2: the inventory has more than 100 hosts; check host ranges like srv[0001:9999] for a typo, or split the run"
        );
    }
}
