//! The files a running fleet writes to its output directory: `inventory.csv`,
//! `inventory.yml` (Ansible YAML), `ca.pem`, `accounts.txt` (mode 0600) and `stats.json`
//! (refreshed while running, final on shutdown). Columns and keys are documented in
//! `docs/simulator.md`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::host::Account;
use crate::profile::InventoryRow;
use crate::tls::ClientCertificate;

/// `inventory.csv`.
pub const INVENTORY_CSV: &str = "inventory.csv";
/// `inventory.yml`.
pub const INVENTORY_YAML: &str = "inventory.yml";
/// `ca.pem`.
pub const CA_PEM: &str = "ca.pem";
/// `accounts.txt`.
pub const ACCOUNTS: &str = "accounts.txt";
/// `stats.json`.
pub const STATS: &str = "stats.json";

/// The CSV header (psfleet's inventory column names; `user` is empty unless a class sets
/// one).
pub const CSV_HEADER: [&str; 9] = [
    "name",
    "address",
    "port",
    "scheme",
    "authentication",
    "configuration_name",
    "group",
    "expected",
    "user",
];

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct OutputError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> OutputError + '_ {
    move |source| OutputError {
        path: path.to_owned(),
        source,
    }
}

/// The CSV inventory.
pub fn inventory_csv(rows: &[InventoryRow]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail; a failed record would only shorten the file.
    let _ = writer.write_record(CSV_HEADER);
    for row in rows {
        let address = row.address.map(|a| a.to_string()).unwrap_or_default();
        let port = row.port.to_string();
        let _ = writer.write_record([
            row.name.as_str(),
            &address,
            &port,
            row.scheme,
            &row.authentication,
            &row.configuration_name,
            &row.group,
            &row.expected,
            row.user.as_deref().unwrap_or(""),
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

/// The Ansible YAML inventory: `all: children: <class>: hosts: <name>: {vars}`.
///
/// Written line by line (serde_yaml takes most of a second for 10,000 hosts); every
/// scalar is a JSON string or number, which YAML reads as the same value, so names and
/// values need no YAML-specific escaping.
pub fn inventory_yaml(rows: &[InventoryRow]) -> Vec<u8> {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    let mut groups: Vec<(&str, Vec<&InventoryRow>)> = Vec::new();
    for row in rows {
        match groups.iter_mut().find(|(g, _)| *g == row.group) {
            Some((_, members)) => members.push(row),
            None => groups.push((&row.group, vec![row])),
        }
    }
    let mut text = String::with_capacity(rows.len() * 260 + 128);
    text.push_str("# psfleet simulated fleet (psfleet sim); variables in docs/simulator.md\n");
    text.push_str("all:\n  children:\n");
    for (group, members) in groups {
        text.push_str(&format!("    {}:\n      hosts:\n", quote(group)));
        for row in members {
            text.push_str(&format!("        {}:\n", quote(&row.name)));
            let mut var = |name: &str, value: String| {
                text.push_str(&format!("          {name}: {value}\n"));
            };
            if let Some(address) = row.address {
                var("ansible_host", quote(&address.to_string()));
            }
            var("ansible_port", row.port.to_string());
            var("ansible_winrm_scheme", quote(row.scheme));
            var(
                "ansible_winrm_transport",
                quote(ansible_transport(&row.authentication)),
            );
            if row.configuration_name != "Microsoft.PowerShell" {
                var(
                    "ansible_psrp_configuration_name",
                    quote(&row.configuration_name),
                );
            }
            if let Some(user) = &row.user {
                var("ansible_user", quote(user));
            }
            var("psfleet_authentication", quote(&row.authentication));
            var("psfleet_expected", quote(&row.expected));
        }
    }
    text.into_bytes()
}

/// pywinrm's transport name for an authentication mechanism (`negotiate` has none: its
/// `ntlm` transport is NTLM under the Negotiate scheme).
pub fn ansible_transport(authentication: &str) -> &str {
    match authentication {
        "negotiate" => "ntlm",
        other => other,
    }
}

/// `accounts.txt`: one `name password role` line per account.
pub fn accounts_text(accounts: &[Account]) -> Vec<u8> {
    let mut text = String::from(
        "# psfleet simulator accounts: name password role (role admin: Administrators)\n",
    );
    for account in accounts {
        let role = if account.admin { "admin" } else { "user" };
        text.push_str(&format!("{} {} {role}\n", account.name, account.password));
    }
    text.into_bytes()
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see a
/// half-written file; `mode` sets the Unix permissions of the new file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), OutputError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// Writes `client-<account>.pem` (the certificate) and `client-<account>.key` (its key,
/// mode 0600) for each client certificate.
pub fn write_client_certificates(
    dir: &Path,
    certificates: &[(String, ClientCertificate)],
) -> Result<(), OutputError> {
    for (account, certificate) in certificates {
        write_atomic(
            &dir.join(format!("client-{account}.pem")),
            certificate.certificate_pem.as_bytes(),
            0o644,
        )?;
        write_atomic(
            &dir.join(format!("client-{account}.key")),
            certificate.key_pem.as_bytes(),
            0o600,
        )?;
    }
    Ok(())
}

/// Writes the start-up files into `dir` (created if missing).
pub fn write_startup_files(
    dir: &Path,
    rows: &[InventoryRow],
    ca_pem: &str,
    accounts: &[Account],
) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    write_atomic(&dir.join(INVENTORY_CSV), &inventory_csv(rows), 0o644)?;
    write_atomic(&dir.join(INVENTORY_YAML), &inventory_yaml(rows), 0o644)?;
    write_atomic(&dir.join(CA_PEM), ca_pem.as_bytes(), 0o644)?;
    // The passwords: readable by the owner only.
    let accounts_path = dir.join(ACCOUNTS);
    write_atomic(&accounts_path, &accounts_text(accounts), 0o600)?;
    // A file that existed before keeps its mode through the rename of a new inode, but be
    // explicit in case the umask widened nothing or narrowed too much.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&accounts_path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(&accounts_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;
    use std::net::Ipv4Addr;

    fn rows() -> Vec<InventoryRow> {
        vec![
            InventoryRow {
                name: "srv0001.fleet.test".into(),
                address: Some(Ipv4Addr::new(127, 20, 0, 1)),
                port: 5985,
                scheme: "http",
                authentication: "negotiate".into(),
                configuration_name: "Microsoft.PowerShell".into(),
                group: "healthy".into(),
                expected: "Succeeded".into(),
                user: None,
            },
            InventoryRow {
                name: "srv0002%bad.fleet.test".into(),
                address: None,
                port: 5986,
                scheme: "https",
                authentication: "kerberos".into(),
                configuration_name: "JEA.Maintenance".into(),
                group: "bad-name".into(),
                expected: "HostContainsInvalidCharacters".into(),
                user: Some("fleetadmin@NOKDC.INVALID".into()),
            },
        ]
    }

    #[test]
    fn csv_has_the_documented_columns() {
        let text = String::from_utf8(inventory_csv(&rows())).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "name,address,port,scheme,authentication,configuration_name,group,expected,user"
        );
        assert_eq!(
            lines[1],
            "srv0001.fleet.test,127.20.0.1,5985,http,negotiate,Microsoft.PowerShell,healthy,Succeeded,"
        );
        assert_eq!(
            lines[2],
            "srv0002%bad.fleet.test,,5986,https,kerberos,JEA.Maintenance,bad-name,HostContainsInvalidCharacters,fleetadmin@NOKDC.INVALID"
        );
    }

    #[test]
    fn yaml_is_an_ansible_inventory() {
        let text = inventory_yaml(&rows());
        let value: Value = serde_yaml::from_slice(&text).unwrap();
        let host = &value["all"]["children"]["healthy"]["hosts"]["srv0001.fleet.test"];
        assert_eq!(host["ansible_host"], Value::from("127.20.0.1"));
        assert_eq!(host["ansible_port"], Value::from(5985u64));
        assert_eq!(host["ansible_winrm_scheme"], Value::from("http"));
        assert_eq!(host["ansible_winrm_transport"], Value::from("ntlm"));
        assert_eq!(host["psfleet_expected"], Value::from("Succeeded"));
        assert_eq!(host["psfleet_authentication"], Value::from("negotiate"));
        let bad = &value["all"]["children"]["bad-name"]["hosts"]["srv0002%bad.fleet.test"];
        assert!(bad.get("ansible_host").is_none());
        assert_eq!(bad["ansible_user"], Value::from("fleetadmin@NOKDC.INVALID"));
        assert_eq!(
            bad["ansible_psrp_configuration_name"],
            Value::from("JEA.Maintenance")
        );
    }

    #[test]
    fn files_are_written_atomically_with_private_accounts() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("psfleet-outputs-{}", std::process::id()));
        let accounts = vec![Account {
            name: "fleetadmin".into(),
            password: "pw-1".into(),
            admin: true,
        }];
        write_startup_files(&dir, &rows(), "PEM", &accounts).unwrap();
        let mode = std::fs::metadata(dir.join(ACCOUNTS))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.join(ACCOUNTS))
                .unwrap()
                .lines()
                .nth(1),
            Some("fleetadmin pw-1 admin")
        );
        assert_eq!(std::fs::read_to_string(dir.join(CA_PEM)).unwrap(), "PEM");
        assert!(!dir.join("accounts.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
