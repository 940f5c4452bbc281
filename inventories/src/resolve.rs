//! From inventory entries to validated [`Host`] records: precedence, names, defaults.
//!
//! Precedence, highest first: the command line ([`Overrides`]), host variables, group
//! variables (the nearest group first: deepest, then higher `ansible_group_priority`, then the
//! name that sorts last, Ansible's `sort_groups` read backwards), then [`Defaults`].
//!
//! Each connection setting is looked up level by level; within one level the most specific
//! name wins: `psfleet_*`, then `ansible_psrp_*`, then `ansible_winrm_*`, then the generic
//! `ansible_*`. A host's `ansible_connection` (winrm or psrp) hides the other plugin's names,
//! as in Ansible. (Ansible merges all levels first and then picks a name, so a group's
//! `ansible_psrp_port` beats a host's `ansible_port` there; here the host's value wins, which is
//! what "host variables beat group variables" promises.)

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{ErrorKind, InventoryError, Location};
use crate::model::{Inventory, Var, printable};
use crate::pattern::Pattern;
use crate::secrets::SecretRef;

/// `http` (port 5985) or `https` (port 5986).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// WS-Man over HTTP, with message encryption for NTLM/Negotiate/Kerberos/CredSSP.
    Http,
    /// WS-Man over TLS.
    Https,
}

impl Scheme {
    /// 5985 or 5986, the WinRM listener defaults.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 5985,
            Scheme::Https => 5986,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl FromStr for Scheme {
    type Err = ();

    fn from_str(s: &str) -> Result<Scheme, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authentication mechanism (PowerShell's `-Authentication` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Authentication {
    /// Basic (pywinrm's `plaintext` and `ssl` transports are Basic too).
    Basic,
    /// NTLM.
    Ntlm,
    /// SPNEGO: Kerberos, falling back to NTLM (PowerShell's and pypsrp's default).
    Negotiate,
    /// Kerberos only.
    Kerberos,
    /// CredSSP.
    CredSsp,
    /// TLS client certificate (HTTPS only).
    Certificate,
}

impl Authentication {
    /// The lower-case name used in inventories.
    pub fn as_str(self) -> &'static str {
        match self {
            Authentication::Basic => "basic",
            Authentication::Ntlm => "ntlm",
            Authentication::Negotiate => "negotiate",
            Authentication::Kerberos => "kerberos",
            Authentication::CredSsp => "credssp",
            Authentication::Certificate => "certificate",
        }
    }
}

impl FromStr for Authentication {
    type Err = ();

    /// One name, or a list (`ntlm,kerberos`, `['ntlm', 'kerberos']`, a JSON list) of which
    /// the first is used; names ignore case.
    fn from_str(s: &str) -> Result<Authentication, ()> {
        let first = s
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|p| p.trim().trim_matches(['\'', '"']).trim())
            .find(|p| !p.is_empty())
            .ok_or(())?;
        match first.to_ascii_lowercase().as_str() {
            "basic" | "plaintext" | "ssl" => Ok(Authentication::Basic),
            "ntlm" => Ok(Authentication::Ntlm),
            "negotiate" | "default" => Ok(Authentication::Negotiate),
            "kerberos" => Ok(Authentication::Kerberos),
            "credssp" => Ok(Authentication::CredSsp),
            "certificate" | "cert" => Ok(Authentication::Certificate),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Authentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the server's TLS certificate is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertValidation {
    /// Verify chain, name and validity (the default).
    Validate,
    /// Accept any certificate (New-PSSessionOption -SkipCACheck -SkipCNCheck).
    Ignore,
}

impl FromStr for CertValidation {
    type Err = ();

    fn from_str(s: &str) -> Result<CertValidation, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "validate" | "true" | "yes" | "1" => Ok(CertValidation::Validate),
            "ignore" | "false" | "no" | "0" => Ok(CertValidation::Ignore),
            _ => Err(()),
        }
    }
}

/// Where to connect instead of the inventory name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Name(name) => f.write_str(name),
        }
    }
}

/// A host ready to connect to: every setting resolved and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The inventory name (reports and `--limit` use it).
    pub name: String,
    /// Where to connect when it is not the name (`ansible_host`, `address` column).
    pub address: Option<Address>,
    /// TCP port.
    pub port: u16,
    /// http or https.
    pub scheme: Scheme,
    /// Authentication mechanism.
    pub authentication: Authentication,
    /// User name (`DOMAIN\user`, `user@REALM` or a local name); `None`: the CLI's default.
    pub user: Option<String>,
    /// Where the password is (never the password itself); `None`: the CLI's default.
    pub password: Option<SecretRef>,
    /// The PowerShell session configuration (`Microsoft.PowerShell`, or a JEA endpoint).
    pub configuration_name: String,
    /// The URL path of the WinRM listener (`/wsman`).
    pub path: String,
    /// TLS certificate verification.
    pub cert_validation: CertValidation,
    /// A PEM bundle of CAs to trust instead of the system's.
    pub ca_trust_path: Option<PathBuf>,
    /// Every group the host is in, nearest first, `all` last.
    pub groups: Vec<String>,
    /// Every variable after precedence (groups, host, command line), connection ones included.
    pub vars: BTreeMap<String, String>,
    /// Where the host was first declared.
    pub source: Location,
}

impl Host {
    /// The name or address to connect to.
    pub fn target(&self) -> String {
        match &self.address {
            Some(address) => address.to_string(),
            None => self.name.clone(),
        }
    }

    /// The endpoint URL, e.g. `https://srv1.fleet.test:5986/wsman` (IPv6 in brackets).
    pub fn url(&self) -> String {
        let target = match &self.address {
            Some(Address::Ip(IpAddr::V6(ip))) => format!("[{ip}]"),
            Some(address) => address.to_string(),
            None if self.name.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{}]", self.name),
            None => self.name.clone(),
        };
        format!("{}://{target}:{}{}", self.scheme, self.port, self.path)
    }
}

/// Settings given on the command line: they beat everything in the inventory.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--limit`: only the hosts this pattern selects.
    pub limit: Option<Pattern>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--use-ssl` (https) or `--scheme`.
    pub scheme: Option<Scheme>,
    /// `--authentication`.
    pub authentication: Option<Authentication>,
    /// `--user`.
    pub user: Option<String>,
    /// `--password-file`, `PSFLEET_PASSWORD` (as `env:PSFLEET_PASSWORD`), or `prompt`.
    pub password: Option<SecretRef>,
    /// `--configuration-name`.
    pub configuration_name: Option<String>,
    /// `--path`.
    pub path: Option<String>,
    /// `--skip-cert-check` (Ignore).
    pub cert_validation: Option<CertValidation>,
    /// `--ca-file`.
    pub ca_trust_path: Option<PathBuf>,
    /// `-e name=value`: variables that beat every inventory variable.
    pub vars: BTreeMap<String, String>,
}

/// What a host gets when neither the command line nor the inventory says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Scheme when nothing gives one (a port of 5986 alone implies https, 5985 http).
    pub scheme: Scheme,
    /// Port when nothing gives one; `None`: the scheme's default port.
    pub port: Option<u16>,
    /// Authentication mechanism.
    pub authentication: Authentication,
    /// User name.
    pub user: Option<String>,
    /// Session configuration.
    pub configuration_name: String,
    /// Listener URL path.
    pub path: String,
    /// TLS verification.
    pub cert_validation: CertValidation,
}

impl Default for Defaults {
    /// PowerShell's: HTTP on 5985, Negotiate, Microsoft.PowerShell, /wsman, certificates verified.
    fn default() -> Defaults {
        Defaults {
            scheme: Scheme::Http,
            port: None,
            authentication: Authentication::Negotiate,
            user: None,
            configuration_name: "Microsoft.PowerShell".to_string(),
            path: "/wsman".to_string(),
            cert_validation: CertValidation::Validate,
        }
    }
}

/// Every variable name psfleet reads (its own, then Ansible's), for listings and
/// the CSV reader.
pub const KNOWN_VARIABLES: &[&str] = &[
    "psfleet_address",
    "psfleet_port",
    "psfleet_scheme",
    "psfleet_authentication",
    "psfleet_user",
    "psfleet_password",
    "psfleet_configuration_name",
    "psfleet_path",
    "psfleet_cert_validation",
    "psfleet_ca_trust_path",
    "ansible_connection",
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_password",
    "ansible_winrm_host",
    "ansible_winrm_port",
    "ansible_winrm_user",
    "ansible_winrm_pass",
    "ansible_winrm_password",
    "ansible_winrm_scheme",
    "ansible_winrm_transport",
    "ansible_winrm_path",
    "ansible_winrm_server_cert_validation",
    "ansible_winrm_ca_trust_path",
    "ansible_psrp_host",
    "ansible_psrp_port",
    "ansible_psrp_user",
    "ansible_psrp_pass",
    "ansible_psrp_password",
    "ansible_psrp_protocol",
    "ansible_psrp_auth",
    "ansible_psrp_path",
    "ansible_psrp_cert_validation",
    "ansible_psrp_ca_cert",
    "ansible_psrp_cert_trust_path",
    "ansible_psrp_configuration_name",
];

/// One setting and its names, most specific first within each family.
struct Setting {
    psfleet: &'static str,
    psrp: &'static [&'static str],
    winrm: &'static [&'static str],
    generic: &'static [&'static str],
}

const ADDRESS: Setting = Setting {
    psfleet: "psfleet_address",
    psrp: &["ansible_psrp_host"],
    winrm: &["ansible_winrm_host"],
    generic: &["ansible_host"],
};
const PORT: Setting = Setting {
    psfleet: "psfleet_port",
    psrp: &["ansible_psrp_port"],
    winrm: &["ansible_winrm_port"],
    generic: &["ansible_port"],
};
const SCHEME: Setting = Setting {
    psfleet: "psfleet_scheme",
    psrp: &["ansible_psrp_protocol"],
    winrm: &["ansible_winrm_scheme"],
    generic: &[],
};
const AUTHENTICATION: Setting = Setting {
    psfleet: "psfleet_authentication",
    psrp: &["ansible_psrp_auth"],
    winrm: &["ansible_winrm_transport"],
    generic: &[],
};
const USER: Setting = Setting {
    psfleet: "psfleet_user",
    psrp: &["ansible_psrp_user"],
    winrm: &["ansible_winrm_user"],
    generic: &["ansible_user"],
};
const PASSWORD: Setting = Setting {
    psfleet: "psfleet_password",
    psrp: &["ansible_psrp_password", "ansible_psrp_pass"],
    winrm: &["ansible_winrm_password", "ansible_winrm_pass"],
    generic: &["ansible_password"],
};
const CONFIGURATION_NAME: Setting = Setting {
    psfleet: "psfleet_configuration_name",
    psrp: &["ansible_psrp_configuration_name"],
    winrm: &[],
    generic: &[],
};
const PATH: Setting = Setting {
    psfleet: "psfleet_path",
    psrp: &["ansible_psrp_path"],
    winrm: &["ansible_winrm_path"],
    generic: &[],
};
const CERT_VALIDATION: Setting = Setting {
    psfleet: "psfleet_cert_validation",
    psrp: &["ansible_psrp_cert_validation"],
    winrm: &["ansible_winrm_server_cert_validation"],
    generic: &[],
};
const CA_TRUST_PATH: Setting = Setting {
    psfleet: "psfleet_ca_trust_path",
    psrp: &["ansible_psrp_ca_cert", "ansible_psrp_cert_trust_path"],
    winrm: &["ansible_winrm_ca_trust_path"],
    generic: &[],
};

/// Which Ansible connection plugin's names apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Winrm,
    Psrp,
}

/// Resolves the hosts `overrides.limit` selects (all hosts without one) into validated
/// [`Host`]s, in selection order. Fails on the first invalid setting, naming host, variable,
/// value and where it was set.
pub fn resolve(
    inventory: &Inventory,
    overrides: &Overrides,
    defaults: &Defaults,
) -> Result<Vec<Host>, InventoryError> {
    if inventory.is_empty() {
        return Err(InventoryError::command_line(ErrorKind::NoHosts));
    }
    let selected: Vec<usize> = match &overrides.limit {
        Some(pattern) => {
            let selected = pattern.select(inventory)?;
            if selected.is_empty() {
                return Err(InventoryError::command_line(ErrorKind::NoHostsMatched {
                    pattern: printable(pattern.as_str()),
                    hosts: inventory.len(),
                }));
            }
            selected
        }
        None => (0..inventory.len()).collect(),
    };
    validate_overrides(overrides)?;
    let depths = inventory.depths();
    let mut hosts = Vec::with_capacity(selected.len());
    for index in selected {
        hosts.push(resolve_one(inventory, index, &depths, overrides, defaults)?);
    }
    Ok(hosts)
}

fn resolve_one(
    inventory: &Inventory,
    index: usize,
    depths: &[u32],
    overrides: &Overrides,
    defaults: &Defaults,
) -> Result<Host, InventoryError> {
    let Some(entry) = inventory.host_entries().get(index) else {
        return Err(InventoryError::command_line(ErrorKind::NoHosts));
    };
    let name = entry.name();
    let apply_order = inventory.groups_of(index, depths);
    let groups = inventory.group_entries();
    // Levels, highest precedence first: the host, then its groups nearest first.
    let mut levels: Vec<&BTreeMap<String, Var>> = Vec::with_capacity(apply_order.len() + 1);
    levels.push(entry.vars());
    levels.extend(
        apply_order
            .iter()
            .rev()
            .filter_map(|&g| groups.get(g).map(|g| g.vars())),
    );

    let lookup = Lookup {
        host: name,
        levels: &levels,
    };
    let family = match lookup.first_plain(&["ansible_connection"], None)? {
        None => None,
        Some((value, var)) => match value.trim().to_ascii_lowercase().as_str() {
            "" => None,
            "winrm" | "ansible.builtin.winrm" => Some(Family::Winrm),
            "psrp" | "ansible.builtin.psrp" => Some(Family::Psrp),
            _ => {
                return Err(InventoryError::at(
                    var.location.clone(),
                    ErrorKind::UnsupportedConnection {
                        host: name.to_string(),
                        value: printable(value.trim()),
                    },
                ));
            }
        },
    };
    let find = |setting: &Setting| lookup.find(setting, family);

    let port = match overrides.port {
        Some(port) => Some(port),
        None => find(&PORT)?
            .map(|(value, var, variable)| parse_port(name, variable, value, var))
            .transpose()?,
    };
    let scheme = match overrides.scheme {
        Some(scheme) => Some(scheme),
        None => find(&SCHEME)?
            .map(|(value, var, variable)| {
                value
                    .parse::<Scheme>()
                    .map_err(|()| invalid(name, variable, value, var, "use http or https"))
            })
            .transpose()?,
    };
    let (scheme, port) = match (scheme, port) {
        (Some(scheme), Some(port)) => (scheme, port),
        (Some(scheme), None) => (scheme, scheme.default_port()),
        (None, Some(port)) => (implied_scheme(port, defaults.scheme), port),
        (None, None) => (
            defaults.scheme,
            defaults.port.unwrap_or(defaults.scheme.default_port()),
        ),
    };

    let authentication = match overrides.authentication {
        Some(a) => a,
        None => match find(&AUTHENTICATION)? {
            Some((value, var, variable)) => value.parse::<Authentication>().map_err(|()| {
                invalid(
                    name,
                    variable,
                    value,
                    var,
                    "use basic, ntlm, negotiate, kerberos, credssp or certificate",
                )
            })?,
            None => defaults.authentication,
        },
    };
    if authentication == Authentication::Certificate && scheme == Scheme::Http {
        let location = find(&AUTHENTICATION)?.map_or_else(
            || entry.location().clone(),
            |(_, var, _)| var.location.clone(),
        );
        return Err(InventoryError::at(
            location,
            ErrorKind::CertificateOverHttp {
                host: name.to_string(),
            },
        ));
    }

    let address = match find(&ADDRESS)? {
        Some((value, var, variable)) => Some(parse_address(name, variable, value, var)?),
        None => None,
    };
    let user = match &overrides.user {
        Some(user) => Some(user.clone()),
        None => match find(&USER)? {
            Some((value, var, variable)) => Some(checked_text(name, variable, value, var, false)?),
            None => defaults.user.clone(),
        },
    };
    let password = match &overrides.password {
        Some(reference) => Some(reference.clone()),
        None => match find(&PASSWORD)? {
            Some((value, var, variable)) => Some(parse_secret(name, variable, value, var)?),
            None => None,
        },
    };
    let configuration_name = match &overrides.configuration_name {
        Some(c) => c.clone(),
        None => match find(&CONFIGURATION_NAME)? {
            Some((value, var, variable)) => checked_text(name, variable, value, var, true)?,
            None => defaults.configuration_name.clone(),
        },
    };
    let path = match &overrides.path {
        Some(p) => normalize_path(p).unwrap_or_else(|| p.clone()),
        None => match find(&PATH)? {
            Some((value, var, variable)) => normalize_path(value).ok_or_else(|| {
                invalid(
                    name,
                    variable,
                    value,
                    var,
                    "a URL path like /wsman, without spaces, '?' or '#'",
                )
            })?,
            None => defaults.path.clone(),
        },
    };
    let cert_validation = match overrides.cert_validation {
        Some(c) => c,
        None => match find(&CERT_VALIDATION)? {
            Some((value, var, variable)) => value
                .parse::<CertValidation>()
                .map_err(|()| invalid(name, variable, value, var, "use validate or ignore"))?,
            None => defaults.cert_validation,
        },
    };
    let ca_trust_path = match &overrides.ca_trust_path {
        Some(p) => Some(p.clone()),
        None => find(&CA_TRUST_PATH)?
            .map(|(value, var, _)| relative_to_inventory(Path::new(value.trim()), &var.location)),
    };

    // Free-form variables in Ansible's merge order: groups (all first, nearest last), the
    // host, the command line.
    let mut vars = BTreeMap::new();
    for level in levels.iter().rev() {
        for (key, var) in level.iter() {
            vars.insert(key.clone(), var.value.clone());
        }
    }
    for (key, value) in &overrides.vars {
        vars.insert(key.clone(), value.clone());
    }

    Ok(Host {
        name: name.to_string(),
        address,
        port,
        scheme,
        authentication,
        user,
        password,
        configuration_name,
        path,
        cert_validation,
        ca_trust_path,
        groups: apply_order
            .iter()
            .rev()
            .filter_map(|&g| groups.get(g).map(|g| g.name().to_string()))
            .collect(),
        vars,
        source: entry.location().clone(),
    })
}

/// Looks settings up level by level.
struct Lookup<'a> {
    host: &'a str,
    levels: &'a [&'a BTreeMap<String, Var>],
}

impl<'a> Lookup<'a> {
    /// The first non-empty value of any of a setting's names, level by level.
    fn find(
        &self,
        setting: &Setting,
        family: Option<Family>,
    ) -> Result<Option<(&'a str, &'a Var, &'static str)>, InventoryError> {
        let mut names: Vec<&'static str> = vec![setting.psfleet];
        if family != Some(Family::Winrm) {
            names.extend(setting.psrp);
        }
        if family != Some(Family::Psrp) {
            names.extend(setting.winrm);
        }
        names.extend(setting.generic);
        for level in self.levels {
            for name in &names {
                if let Some(var) = level.get(*name)
                    && !var.value.trim().is_empty()
                {
                    if var.value.contains("{{") {
                        return Err(InventoryError::at(
                            var.location.clone(),
                            ErrorKind::Template {
                                host: self.host.to_string(),
                                variable: (*name).to_string(),
                                value: printable(&var.value),
                            },
                        ));
                    }
                    return Ok(Some((var.value.as_str(), var, name)));
                }
            }
        }
        Ok(None)
    }

    fn first_plain(
        &self,
        names: &'static [&'static str],
        family: Option<Family>,
    ) -> Result<Option<(&'a str, &'a Var)>, InventoryError> {
        let setting = Setting {
            psfleet: "psfleet_connection",
            psrp: &[],
            winrm: &[],
            generic: names,
        };
        Ok(self
            .find(&setting, family)?
            .map(|(value, var, _)| (value, var)))
    }
}

/// 5986 alone means https, 5985 alone http; any other port takes the default scheme.
fn implied_scheme(port: u16, default: Scheme) -> Scheme {
    match port {
        5986 => Scheme::Https,
        5985 => Scheme::Http,
        _ => default,
    }
}

fn invalid(
    host: &str,
    variable: &str,
    value: &str,
    var: &Var,
    expected: &'static str,
) -> InventoryError {
    InventoryError::at(
        var.location.clone(),
        ErrorKind::InvalidValue {
            host: host.to_string(),
            variable: variable.to_string(),
            value: printable(value),
            expected,
        },
    )
}

fn parse_port(host: &str, variable: &str, value: &str, var: &Var) -> Result<u16, InventoryError> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| invalid(host, variable, value, var, "a port number from 1 to 65535"))
}

fn parse_address(
    host: &str,
    variable: &str,
    value: &str,
    var: &Var,
) -> Result<Address, InventoryError> {
    let text = value.trim();
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(Address::Ip(ip));
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        || text.len() > 1024
    {
        return Err(invalid(
            host,
            variable,
            value,
            var,
            "an IP address or a DNS name, without spaces or '/' (give the port in ansible_port)",
        ));
    }
    Ok(Address::Name(text.to_string()))
}

/// A user or configuration name: non-empty, no control characters; configuration names
/// also without characters that cannot go into the resource URI.
fn checked_text(
    host: &str,
    variable: &str,
    value: &str,
    var: &Var,
    uri_part: bool,
) -> Result<String, InventoryError> {
    let text = value.trim();
    let bad_char =
        |c: char| c.is_control() || (uri_part && (c.is_whitespace() || "/?#<>&\"'".contains(c)));
    if text.chars().any(bad_char) || text.len() > 1024 {
        let expected = if uri_part {
            "a session configuration name like Microsoft.PowerShell (no spaces or / ? # < > & quotes)"
        } else {
            "a user name without control characters"
        };
        return Err(invalid(host, variable, value, var, expected));
    }
    Ok(text.to_string())
}

fn parse_secret(
    host: &str,
    variable: &str,
    value: &str,
    var: &Var,
) -> Result<SecretRef, InventoryError> {
    match SecretRef::parse(value) {
        Ok(SecretRef::File(path)) => {
            Ok(SecretRef::File(relative_to_inventory(&path, &var.location)))
        }
        Ok(reference) => Ok(reference),
        Err(_) => Err(invalid(
            host,
            variable,
            value,
            var,
            "a reference: env:NAME, file:/path, prompt or kerberos-cache",
        )),
    }
}

/// A relative path in an inventory is relative to that inventory file's directory.
fn relative_to_inventory(path: &Path, location: &Location) -> PathBuf {
    if path.is_absolute() || location.file.as_ref() == crate::STDIN_NAME {
        return path.to_path_buf();
    }
    match Path::new(location.file.as_ref()).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// `/wsman` stays, `wsman` becomes `/wsman`; spaces, `?` and `#` are refused.
fn normalize_path(path: &str) -> Option<String> {
    let path = path.trim();
    if path.is_empty()
        || path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return None;
    }
    Some(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

/// Command-line strings get the same checks as inventory values.
fn validate_overrides(overrides: &Overrides) -> Result<(), InventoryError> {
    let option = |option: &str, value: &str, expected: &'static str| {
        InventoryError::command_line(ErrorKind::InvalidValue {
            host: "(all)".to_string(),
            variable: option.to_string(),
            value: printable(value),
            expected,
        })
    };
    if let Some(path) = &overrides.path
        && normalize_path(path).is_none()
    {
        return Err(option(
            "--path",
            path,
            "a URL path like /wsman, without spaces, '?' or '#'",
        ));
    }
    if let Some(name) = &overrides.configuration_name
        && (name.trim().is_empty()
            || name
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || "/?#<>&\"'".contains(c)))
    {
        return Err(option(
            "--configuration-name",
            name,
            "a session configuration name like Microsoft.PowerShell (no spaces or / ? # < > & quotes)",
        ));
    }
    if let Some(user) = &overrides.user
        && user.chars().any(char::is_control)
    {
        return Err(option(
            "--user",
            user,
            "a user name without control characters",
        ));
    }
    if overrides.port == Some(0) {
        return Err(option("--port", "0", "a port number from 1 to 65535"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(files: &[(&str, &str)]) -> Inventory {
        let mut inventory = Inventory::default();
        for (name, text) in files {
            inventory.load_str(name, text, None).unwrap();
        }
        inventory
    }

    fn one(inventory: &Inventory, host: &str, overrides: &Overrides) -> Host {
        let overrides = Overrides {
            limit: Some(Pattern::parse(host).unwrap()),
            ..overrides.clone()
        };
        let mut hosts = resolve(inventory, &overrides, &Defaults::default()).unwrap();
        assert_eq!(hosts.len(), 1);
        hosts.remove(0)
    }

    fn error(inventory: &Inventory, overrides: &Overrides) -> String {
        resolve(inventory, overrides, &Defaults::default())
            .unwrap_err()
            .to_string()
    }

    const LAYERED: &str = "\
[all:vars]
ansible_port=5985
owner=all
[windows:children]
web
[windows:vars]
ansible_psrp_auth=kerberos
owner=windows
tier=windows
[web]
w1 owner=host ansible_user='FLEET\\w1'
w2
[web:vars]
owner=web
ansible_psrp_configuration_name=JEA_Web
";

    #[test]
    fn command_line_beats_host_beats_nearest_group_beats_defaults() {
        let inv = inventory(&[("layers.ini", LAYERED)]);
        let w1 = one(&inv, "w1", &Overrides::default());
        assert_eq!(w1.vars["owner"], "host");
        assert_eq!(w1.vars["tier"], "windows");
        assert_eq!(w1.user.as_deref(), Some("FLEET\\w1"));
        assert_eq!(w1.authentication, Authentication::Kerberos);
        assert_eq!(w1.configuration_name, "JEA_Web");
        assert_eq!((w1.scheme, w1.port), (Scheme::Http, 5985));
        assert_eq!(w1.groups, ["web", "windows", "all"]);
        assert_eq!(w1.path, "/wsman");
        assert_eq!(w1.source.to_string(), "layers.ini:11");
        let w2 = one(&inv, "w2", &Overrides::default());
        assert_eq!(w2.vars["owner"], "web");
        assert_eq!(w2.user, None);

        let cli = Overrides {
            user: Some("admin".into()),
            authentication: Some(Authentication::Ntlm),
            port: Some(15985),
            vars: BTreeMap::from([("owner".to_string(), "cli".to_string())]),
            ..Default::default()
        };
        let w1 = one(&inv, "w1", &cli);
        assert_eq!(w1.user.as_deref(), Some("admin"));
        assert_eq!(w1.authentication, Authentication::Ntlm);
        assert_eq!(w1.vars["owner"], "cli");
        assert_eq!((w1.scheme, w1.port), (Scheme::Http, 15985));
    }

    #[test]
    fn a_host_value_beats_a_more_specific_group_name() {
        // Ansible would take the group's ansible_psrp_port; psfleet keeps host over group.
        let inv = inventory(&[(
            "p.ini",
            "[g]\nh ansible_port=1234\n[g:vars]\nansible_psrp_port=4321\n",
        )]);
        assert_eq!(one(&inv, "h", &Overrides::default()).port, 1234);
        // Within one level the most specific name wins.
        let inv = inventory(&[(
            "p.ini",
            "h ansible_port=1 ansible_winrm_port=2 ansible_psrp_port=3 psfleet_port=4\n",
        )]);
        assert_eq!(one(&inv, "h", &Overrides::default()).port, 4);
        let inv = inventory(&[(
            "p.ini",
            "h ansible_port=1 ansible_winrm_port=2 ansible_psrp_port=3\n",
        )]);
        assert_eq!(one(&inv, "h", &Overrides::default()).port, 3);
    }

    #[test]
    fn ansible_connection_hides_the_other_plugins_names() {
        let text = "h ansible_connection=winrm ansible_psrp_port=3 ansible_winrm_port=2 ansible_port=1\n\
                    p ansible_connection=psrp ansible_psrp_auth=ntlm ansible_winrm_transport=credssp\n";
        let inv = inventory(&[("c.ini", text)]);
        assert_eq!(one(&inv, "h", &Overrides::default()).port, 2);
        assert_eq!(
            one(&inv, "p", &Overrides::default()).authentication,
            Authentication::Ntlm
        );
        let inv = inventory(&[(
            "c.ini",
            "w ansible_connection=winrm ansible_winrm_transport=credssp ansible_psrp_auth=ntlm\n",
        )]);
        assert_eq!(
            one(&inv, "w", &Overrides::default()).authentication,
            Authentication::CredSsp
        );
    }

    #[test]
    fn equal_depth_groups_tie_on_priority_then_name() {
        let text = "[alpha]\nh\n[beta]\nh\n[alpha:vars]\nx=alpha\n[beta:vars]\nx=beta\n";
        let inv = inventory(&[("t.ini", text)]);
        let h = one(&inv, "h", &Overrides::default());
        assert_eq!(h.vars["x"], "beta");
        assert_eq!(h.groups, ["beta", "alpha", "all"]);
        let prioritized = format!("{text}ansible_group_priority=10\n").replace(
            "[beta:vars]\nx=beta\nansible_group_priority=10\n",
            "[beta:vars]\nx=beta\n[alpha:vars]\nansible_group_priority=10\n",
        );
        let inv = inventory(&[("t.ini", &prioritized)]);
        let h = one(&inv, "h", &Overrides::default());
        assert_eq!(h.vars["x"], "alpha");
        assert_eq!(h.groups, ["alpha", "beta", "all"]);
        // A child group beats its parent whatever the names.
        let inv = inventory(&[(
            "t.ini",
            "[zz:children]\naa\n[aa]\nh\n[zz:vars]\nx=zz\n[aa:vars]\nx=aa\n",
        )]);
        assert_eq!(one(&inv, "h", &Overrides::default()).vars["x"], "aa");
    }

    #[test]
    fn scheme_and_port_imply_each_other() {
        let inv = inventory(&[(
            "s.ini",
            "a\nb ansible_port=5986\nc ansible_winrm_scheme=https\nd ansible_port=8080\ne psfleet_scheme=http psfleet_port=5986\n",
        )]);
        let sp = |h: &str| {
            let host = one(&inv, h, &Overrides::default());
            (host.scheme, host.port)
        };
        assert_eq!(sp("a"), (Scheme::Http, 5985));
        assert_eq!(sp("b"), (Scheme::Https, 5986));
        assert_eq!(sp("c"), (Scheme::Https, 5986));
        assert_eq!(sp("d"), (Scheme::Http, 8080));
        assert_eq!(sp("e"), (Scheme::Http, 5986));
        let https = Overrides {
            scheme: Some(Scheme::Https),
            ..Default::default()
        };
        assert_eq!(one(&inv, "a", &https).port, 5986);
        assert_eq!(one(&inv, "a", &https).url(), "https://a:5986/wsman");
    }

    #[test]
    fn addresses_paths_references_and_urls() {
        let inv = inventory(&[(
            "dir/x.ini",
            "h1 ansible_host=10.0.0.7 ansible_winrm_path=wsman-alt ansible_password=file:pw.txt ansible_winrm_server_cert_validation=ignore\n\
             h2 ansible_host=[fe80::2] ansible_psrp_password=env:WIN_PW ansible_psrp_ca_cert=ca.pem\n\
             h3 ansible_host=srv3.corp.test ansible_password=kerberos-cache ansible_winrm_transport=kerberos\n\
             fe80::9\n",
        )]);
        let h1 = one(&inv, "h1", &Overrides::default());
        assert_eq!(h1.address, Some(Address::Ip("10.0.0.7".parse().unwrap())));
        assert_eq!(h1.path, "/wsman-alt");
        assert_eq!(
            h1.password,
            Some(SecretRef::File(PathBuf::from("dir/pw.txt")))
        );
        assert_eq!(h1.cert_validation, CertValidation::Ignore);
        assert_eq!(h1.url(), "http://10.0.0.7:5985/wsman-alt");
        let h2 = one(&inv, "h2", &Overrides::default());
        assert_eq!(h2.url(), "http://[fe80::2]:5985/wsman");
        assert_eq!(h2.password, Some(SecretRef::Env("WIN_PW".into())));
        assert_eq!(h2.ca_trust_path, Some(PathBuf::from("dir/ca.pem")));
        let h3 = one(&inv, "h3", &Overrides::default());
        assert_eq!(h3.target(), "srv3.corp.test");
        assert_eq!(h3.password, Some(SecretRef::KerberosCache));
        assert_eq!(h3.authentication, Authentication::Kerberos);
        let v6 = one(&inv, "fe80::9", &Overrides::default());
        assert_eq!(v6.url(), "http://[fe80::9]:5985/wsman");
    }

    #[test]
    fn duplicates_across_files_are_one_host() {
        let inv = inventory(&[
            ("a.ini", "[web]\nSRV1 owner=a tier=1\n"),
            ("b.csv", "name,group,owner\nsrv1,db,b\n"),
        ]);
        let hosts = resolve(&inv, &Overrides::default(), &Defaults::default()).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].name, "SRV1");
        assert_eq!(hosts[0].groups, ["web", "db", "all"]);
        assert_eq!(hosts[0].vars["owner"], "b");
        assert_eq!(hosts[0].vars["tier"], "1");
    }

    #[test]
    fn invalid_settings_name_host_variable_and_place() {
        let cases = [
            (
                "h ansible_port=abc\n",
                "x.ini:1: host 'h': ansible_port='abc' is not valid: a port number from 1 to 65535",
            ),
            (
                "h\n[all:vars]\nansible_winrm_scheme=ftp\n",
                "x.ini:3: host 'h': ansible_winrm_scheme='ftp' is not valid: use http or https",
            ),
            (
                "h ansible_psrp_auth=digest\n",
                "x.ini:1: host 'h': ansible_psrp_auth='digest' is not valid: use basic, ntlm, negotiate, kerberos, credssp or certificate",
            ),
            (
                "h ansible_psrp_cert_validation=maybe\n",
                "x.ini:1: host 'h': ansible_psrp_cert_validation='maybe' is not valid: use validate or ignore",
            ),
            (
                "h ansible_connection=ssh\n",
                "x.ini:1: host 'h' has ansible_connection=ssh; psfleet speaks WinRM only (winrm or psrp). Leave it out of the run with --limit '!h' or set ansible_connection=psrp",
            ),
            (
                "h ansible_host='{{ inventory_hostname }}.corp'\n",
                "x.ini:1: host 'h': ansible_host is a Jinja template ('{{ inventory_hostname }}.corp'); psfleet does not evaluate templates, write the value itself",
            ),
            (
                "h ansible_winrm_transport=certificate\n",
                "x.ini:1: host 'h': certificate authentication needs HTTPS, but the scheme is http; set the scheme to https (port 5986) or choose another authentication",
            ),
            (
                "h ansible_host='a b'\n",
                "x.ini:1: host 'h': ansible_host='a b' is not valid: an IP address or a DNS name, without spaces or '/' (give the port in ansible_port)",
            ),
            (
                "h ansible_psrp_configuration_name='JEA Ops'\n",
                "x.ini:1: host 'h': ansible_psrp_configuration_name='JEA Ops' is not valid: a session configuration name like Microsoft.PowerShell (no spaces or / ? # < > & quotes)",
            ),
            (
                "h ansible_winrm_path='/ws man'\n",
                "x.ini:1: host 'h': ansible_winrm_path='/ws man' is not valid: a URL path like /wsman, without spaces, '?' or '#'",
            ),
        ];
        for (text, expected) in cases {
            let inv = inventory(&[("x.ini", text)]);
            assert_eq!(error(&inv, &Overrides::default()), expected, "{text:?}");
        }
    }

    #[test]
    fn selection_errors() {
        let inv = inventory(&[("x.ini", "[web]\nw1\n")]);
        let limit = |p: &str| Overrides {
            limit: Some(Pattern::parse(p).unwrap()),
            ..Default::default()
        };
        assert_eq!(
            error(&inv, &limit("db")),
            "--limit 'db' matches no host of the inventory (1 hosts); group names match exactly, host names ignoring case"
        );
        assert_eq!(
            error(&Inventory::default(), &Overrides::default()),
            "the inventory has no hosts"
        );
        let bad = Overrides {
            path: Some("/a b".into()),
            ..Default::default()
        };
        assert_eq!(
            error(&inv, &bad),
            "host '(all)': --path='/a b' is not valid: a URL path like /wsman, without spaces, '?' or '#'"
        );
    }

    #[test]
    fn authentication_names_and_lists() {
        let parse = |s: &str| s.parse::<Authentication>();
        assert_eq!(parse("NTLM"), Ok(Authentication::Ntlm));
        assert_eq!(parse("plaintext"), Ok(Authentication::Basic));
        assert_eq!(parse("ssl"), Ok(Authentication::Basic));
        assert_eq!(parse("kerberos,ntlm"), Ok(Authentication::Kerberos));
        assert_eq!(parse("['credssp', 'ntlm']"), Ok(Authentication::CredSsp));
        assert_eq!(parse(r#"["negotiate"]"#), Ok(Authentication::Negotiate));
        assert_eq!(parse("[]"), Err(()));
    }
}
