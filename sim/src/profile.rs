//! Fleet profiles: a TOML file of host classes (documented in `docs/simulator.md`), and the
//! plan that turns a profile, a host count and a seed into one [`PlannedHost`] per host.
//!
//! A class gives a number of hosts (`count`) or a share of them (`percent`), the outcome a
//! correct client must report for them (`expected`), their WinRM behaviour (listeners,
//! certificate, authentication, quotas, OS, script behaviour, failures) and, in
//! `[class.inventory]`, the client-side settings their inventory row carries (a wrong
//! scheme, an unknown configuration name, a user in an unknown realm, ...). Built-in
//! profiles: [`BUILTIN`].

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use psfleet_core::taxonomy::Bucket;
use psfleet_core::wsman::{CbtHardeningLevel, WinrmConfig};
use serde::Deserialize;
use toml::Spanned;

use crate::host::{
    Account, AuthSpec, CertificateKind, Expected, HostData, HostSpec, NetworkSpec, OsInfo,
    PowerShellInfo, ScriptBehaviour,
};
use crate::rng::Rng;

/// The built-in profiles: (name, TOML text).
pub const BUILTIN: [(&str, &str); 4] = [
    ("healthy", include_str!("../profiles/healthy.toml")),
    ("mixed", include_str!("../profiles/mixed.toml")),
    ("bench", include_str!("../profiles/bench.toml")),
    ("chaos", include_str!("../profiles/chaos.toml")),
];

/// The WinRM HTTP port.
pub const HTTP_PORT: u16 = 5985;
/// The WinRM HTTPS port.
pub const HTTPS_PORT: u16 = 5986;
/// The default first host address.
pub const DEFAULT_FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 20, 0, 1);
/// The DNS suffix of simulated host names.
pub const DOMAIN: &str = "fleet.test";
/// The administrator account every fleet has.
pub const ADMIN_ACCOUNT: &str = "fleetadmin";
/// The non-administrator account every fleet has.
pub const USER_ACCOUNT: &str = "fleetuser";
/// Most hosts one fleet may have (the 127.0.0.0/8 block holds about 16.7 million).
pub const MAX_HOSTS: usize = 1_000_000;
/// Most classes in one profile.
pub const MAX_CLASSES: usize = 256;

/// A parsed, validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The profile's name (the built-in name or the file stem).
    pub name: String,
    /// What the profile is for.
    pub description: String,
    /// Host classes, in file order.
    pub classes: Vec<HostClass>,
}

/// One host class of a profile, with every default applied.
#[derive(Debug, Clone)]
pub struct HostClass {
    /// Class name: the inventory group.
    pub name: String,
    /// How many hosts.
    pub share: Share,
    /// The outcome a correct client reports for these hosts.
    pub expected: Expected,
    /// Settings.
    pub settings: ClassSettings,
}

/// How many hosts a class gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Share {
    /// Exactly this many (taken first).
    Count(usize),
    /// This share of the hosts left after the counted classes (shares are normalised over
    /// all percent classes; largest remainders get the rounding).
    Percent(f64),
}

/// Everything a class can set. Field names are the TOML keys (see `docs/simulator.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ClassSettings {
    /// Class name (read into [`HostClass::name`]).
    name: Spanned<String>,
    /// Host count (read into [`HostClass::share`]).
    count: Option<Spanned<usize>>,
    /// Host share (read into [`HostClass::share`]).
    percent: Option<Spanned<f64>>,
    /// Expected outcome (read into [`HostClass::expected`]).
    #[serde(default)]
    expected: ExpectedField,
    /// Listeners: `http` (5985) and/or `https` (5986). Empty: nothing listens.
    #[serde(default = "default_listeners")]
    pub listeners: Vec<Listener>,
    /// Certificate of the HTTPS listener.
    #[serde(default)]
    pub certificate: Certificate,
    /// Accept connections, read requests, never answer.
    #[serde(default)]
    pub blackhole: bool,
    /// The listener's accept queue is kept full, so new connections are never established
    /// (SYNs are dropped, connect times out): an unreachable or filtered host.
    #[serde(default)]
    pub unreachable: bool,
    /// Not a WinRM service: every POST gets a 200 HTML page (a web server or proxy on the
    /// port).
    #[serde(default)]
    pub impostor: bool,
    /// Delay before every response, in milliseconds (`--latency-ms` overrides it).
    #[serde(default)]
    pub latency_ms: u64,
    /// Extra uniform random delay in `[0, jitter_ms]` per response.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Probability that a response is cut off mid-body and the connection closed.
    #[serde(default)]
    pub reset_probability: f64,
    /// Probability that a request gets HTTP 500 with an empty body.
    #[serde(default)]
    pub empty_500_probability: f64,
    /// Authentication schemes the service offers.
    #[serde(default = "default_auth")]
    pub auth: Vec<AuthScheme>,
    /// AllowUnencrypted.
    #[serde(default)]
    pub allow_unencrypted: bool,
    /// CbtHardeningLevel.
    #[serde(default)]
    pub cbt_hardening: CbtHardening,
    /// The host's passwords differ from the fleet's (the accounts file does not have them).
    #[serde(default)]
    pub rotated_passwords: bool,
    /// Accounts that are administrators on this host (default: `fleetadmin` only).
    #[serde(default)]
    pub admins: Option<Vec<String>>,
    /// False: Disable-PSRemoting (session configurations deny network logons).
    #[serde(default = "yes")]
    pub remoting_enabled: bool,
    /// Registered session configurations.
    #[serde(default = "default_configurations")]
    pub configurations: Vec<String>,
    /// Operating system.
    #[serde(default)]
    pub os: OsKind,
    /// Overrides the OS's PowerShell version.
    #[serde(default)]
    pub powershell_version: Option<String>,
    /// Builtin modules fail to load (the runspace pool opens Broken).
    #[serde(default)]
    pub modules_fail: bool,
    /// Extra time every script takes, in milliseconds.
    #[serde(default)]
    pub script_extra_ms: u64,
    /// Every script ends with a terminating error.
    #[serde(default)]
    pub script_always_fails: bool,
    /// How the host is named in the inventory.
    #[serde(default)]
    pub naming: Naming,
    /// WinRM quotas.
    #[serde(default)]
    pub quotas: Quotas,
    /// Client-side settings of the inventory row.
    #[serde(default)]
    pub inventory: InventorySettings,
}

/// A listener kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    /// HTTP on 5985.
    Http,
    /// HTTPS on 5986.
    Https,
}

/// Certificate kinds (TOML spelling of [`CertificateKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Certificate {
    /// Issued by the simulator CA for the host's name and address.
    #[default]
    Valid,
    /// Self-signed.
    SelfSigned,
    /// Issued by the simulator CA for another name.
    WrongName,
    /// Issued by the simulator CA, expired.
    Expired,
}

/// Authentication schemes a host can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// `Basic realm="WSMAN"`.
    Basic,
    /// `Negotiate` (SPNEGO; raw NTLM accepted under it).
    Negotiate,
    /// `Kerberos`.
    Kerberos,
    /// `CredSSP`.
    Credssp,
    /// TLS client certificates.
    Certificate,
}

/// CbtHardeningLevel values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CbtHardening {
    /// Not checked.
    None,
    /// Checked when present (the Windows default).
    #[default]
    Relaxed,
    /// Required.
    Strict,
}

/// Operating systems with their version strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OsKind {
    /// Windows Server 2022.
    #[serde(rename = "server-2022")]
    Server2022,
    /// Windows Server 2019.
    #[default]
    #[serde(rename = "server-2019")]
    Server2019,
    /// Windows Server 2016.
    #[serde(rename = "server-2016")]
    Server2016,
    /// Windows Server 2012 R2 (with WMF 5.1).
    #[serde(rename = "server-2012r2")]
    Server2012r2,
}

/// How a host appears in the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Naming {
    /// `srvNNNN.fleet.test` with its address in the address column.
    #[default]
    Normal,
    /// `srvNNNN.fleet.invalid`, no address: the name does not resolve (RFC 6761 `.invalid`).
    Unresolvable,
    /// A name with a character no host name may have (`%`).
    InvalidCharacters,
    /// The IP address itself as the name (the TrustedHosts rule applies).
    IpAddress,
}

/// WinRM quotas (winrm/config and winrm/config/winrs). Unset values keep the Server 2016
/// defaults (wire-facts 2.3).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Quotas {
    /// MaxShellsPerUser.
    pub max_shells_per_user: Option<u32>,
    /// MaxConcurrentOperationsPerUser.
    pub max_concurrent_operations_per_user: Option<u32>,
    /// MaxConcurrentUsers.
    pub max_concurrent_users: Option<u32>,
    /// IdleTimeout in milliseconds.
    pub idle_timeout_ms: Option<u32>,
    /// MaxEnvelopeSizekb.
    pub max_envelope_size_kb: Option<u32>,
}

/// The client-side settings an inventory row carries. Unset values follow the host:
/// the first listener's scheme and port, the first offered of negotiate/basic/kerberos,
/// `Microsoft.PowerShell`, no user.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct InventorySettings {
    /// `http` or `https`.
    pub scheme: Option<Listener>,
    /// TCP port.
    pub port: Option<u16>,
    /// `negotiate`, `ntlm`, `basic`, `kerberos`, `credssp` or `certificate`.
    pub authentication: Option<String>,
    /// Session configuration name.
    pub configuration_name: Option<String>,
    /// A user for this row (for example `fleetadmin@NOKDC.INVALID`).
    pub user: Option<String>,
}

/// One host of a planned fleet.
#[derive(Debug, Clone)]
pub struct PlannedHost {
    /// Zero-based host index.
    pub index: usize,
    /// What the host is.
    pub spec: HostSpec,
    /// Network behaviours outside [`HostSpec`].
    pub extra: ExtraBehaviour,
    /// Its inventory row.
    pub row: InventoryRow,
}

/// Host behaviours the network layer handles that [`HostSpec`] does not describe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtraBehaviour {
    /// Connections are never established (accept queue kept full).
    pub unreachable: bool,
    /// Answers every POST with a 200 HTML page.
    pub impostor: bool,
}

/// One inventory row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryRow {
    /// The name the client is given.
    pub name: String,
    /// The address to connect to (`None`: resolve the name).
    pub address: Option<Ipv4Addr>,
    /// TCP port.
    pub port: u16,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Authentication mechanism.
    pub authentication: String,
    /// Session configuration name.
    pub configuration_name: String,
    /// The inventory group (the class).
    pub group: String,
    /// `Succeeded` or a bucket name.
    pub expected: String,
    /// A user for this row, if the class sets one.
    pub user: Option<String>,
}

/// The fleet's default accounts with generated passwords: `fleetadmin` (admin) and
/// `fleetuser` (not admin).
pub fn default_accounts(seed: u64) -> Vec<Account> {
    let mut rng = Rng::new(seed).fork(0x0ACC_00A7);
    vec![
        Account {
            name: ADMIN_ACCOUNT.to_owned(),
            password: rng.password(20),
            admin: true,
        },
        Account {
            name: USER_ACCOUNT.to_owned(),
            password: rng.password(20),
            admin: false,
        },
    ]
}

/// Why a profile could not be loaded or planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{file}: cannot read the profile: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Neither a built-in name nor an existing file.
    #[error(
        "unknown profile {0:?}: not a built-in profile (healthy, mixed, bench, chaos) nor a file"
    )]
    Unknown(String),
    /// A syntax or field error at a place in the file.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file (or `<builtin NAME>`).
        file: String,
        /// One-based line.
        line: usize,
        /// One-based column.
        column: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The profile cannot produce the requested fleet.
    #[error("profile {profile}: {message}")]
    Plan {
        /// The profile name.
        profile: String,
        /// What is wrong.
        message: String,
    },
}

impl Profile {
    /// A built-in profile by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self, ProfileError> {
        if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(name, &format!("<builtin {name}>"), text);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ProfileError::Unknown(name_or_path.to_owned()));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            file: name_or_path.to_owned(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name_or_path.to_owned());
        Self::parse(&name, name_or_path, &text)
    }

    /// Parses profile TOML; `file` names it in errors.
    pub fn parse(name: &str, file: &str, text: &str) -> Result<Self, ProfileError> {
        let raw: RawProfile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ProfileError::Invalid {
                file: file.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        let invalid = |at: usize, message: String| {
            let (line, column) = line_col(text, at);
            ProfileError::Invalid {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        };
        if raw.class.is_empty() {
            return Err(invalid(0, "the profile has no [[class]] tables".to_owned()));
        }
        if raw.class.len() > MAX_CLASSES {
            return Err(invalid(
                0,
                format!("more than {MAX_CLASSES} classes in one profile"),
            ));
        }
        let mut classes: Vec<HostClass> = Vec::with_capacity(raw.class.len());
        for class in raw.class {
            let name_at = class.name.span().start;
            let class_name = class.name.get_ref().clone();
            if class_name.is_empty()
                || !class_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    name_at,
                    format!(
                        "field `name`: {class_name:?} is not a valid group name (letters, digits, '_' and '-')"
                    ),
                ));
            }
            if classes.iter().any(|c| c.name == class_name) {
                return Err(invalid(
                    name_at,
                    format!("field `name`: class {class_name:?} is defined twice"),
                ));
            }
            let share = match (&class.count, &class.percent) {
                (Some(count), None) => Share::Count(*count.get_ref()),
                (None, Some(percent)) => {
                    let at = percent.span().start;
                    let p = *percent.get_ref();
                    if !(p > 0.0 && p <= 100.0) {
                        return Err(invalid(
                            at,
                            format!(
                                "field `percent` of class {class_name:?}: {p} is not in (0, 100]"
                            ),
                        ));
                    }
                    Share::Percent(p)
                }
                (Some(count), Some(_)) => {
                    return Err(invalid(
                        count.span().start,
                        format!("class {class_name:?} sets both `count` and `percent`; pick one"),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        name_at,
                        format!("class {class_name:?} needs `count` or `percent`"),
                    ));
                }
            };
            let expected = class.expected.0;
            let settings = class;
            for (field, p) in [
                ("reset_probability", settings.reset_probability),
                ("empty_500_probability", settings.empty_500_probability),
            ] {
                if !(0.0..=1.0).contains(&p) {
                    return Err(invalid(
                        name_at,
                        format!("field `{field}` of class {class_name:?}: {p} is not in [0, 1]"),
                    ));
                }
            }
            if settings.listeners.contains(&Listener::Https)
                && settings.naming == Naming::InvalidCharacters
            {
                // A certificate cannot carry such a name; the class needs no listener anyway
                // (the client refuses the name before any packet).
                return Err(invalid(
                    name_at,
                    format!(
                        "class {class_name:?}: naming = \"invalid-characters\" cannot have an https listener"
                    ),
                ));
            }
            classes.push(HostClass {
                name: class_name,
                share,
                expected,
                settings,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            description: raw.description.unwrap_or_default(),
            classes,
        })
    }

    /// How many hosts each class gets for a fleet of `hosts` (same order as `classes`).
    pub fn counts(&self, hosts: usize) -> Result<Vec<usize>, ProfileError> {
        let plan_error = |message: String| ProfileError::Plan {
            profile: self.name.clone(),
            message,
        };
        if hosts == 0 || hosts > MAX_HOSTS {
            return Err(plan_error(format!(
                "the host count must be between 1 and {MAX_HOSTS}, not {hosts}"
            )));
        }
        let counted: usize = self
            .classes
            .iter()
            .map(|c| match c.share {
                Share::Count(n) => n,
                Share::Percent(_) => 0,
            })
            .fold(0usize, usize::saturating_add);
        let percent_total: f64 = self
            .classes
            .iter()
            .map(|c| match c.share {
                Share::Percent(p) => p,
                Share::Count(_) => 0.0,
            })
            .sum();
        if counted > hosts {
            return Err(plan_error(format!(
                "its counted classes need {counted} hosts; ask for at least that many (--hosts {counted})"
            )));
        }
        let left = hosts - counted;
        if left > 0 && percent_total == 0.0 {
            return Err(plan_error(format!(
                "its classes add up to exactly {counted} hosts (no percent class takes the rest); ask for --hosts {counted}"
            )));
        }
        // Largest-remainder apportionment of `left` over the percent classes.
        let mut out = Vec::with_capacity(self.classes.len());
        let mut remainders: Vec<(usize, f64)> = Vec::new();
        let mut given = 0usize;
        for (i, class) in self.classes.iter().enumerate() {
            match class.share {
                Share::Count(n) => out.push(n),
                Share::Percent(p) => {
                    let exact = left as f64 * p / percent_total;
                    let floor = exact.floor() as usize;
                    given += floor;
                    remainders.push((i, exact - floor as f64));
                    out.push(floor);
                }
            }
        }
        remainders.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (i, _) in remainders.iter().cycle().take(left.saturating_sub(given)) {
            if let Some(n) = out.get_mut(*i) {
                *n += 1;
            }
        }
        Ok(out)
    }

    /// Plans a fleet: one host per index, classes placed in a seeded random order, addresses
    /// from `first_address` up.
    pub fn plan(&self, options: &PlanOptions<'_>) -> Result<Vec<PlannedHost>, ProfileError> {
        let plan_error = |message: String| ProfileError::Plan {
            profile: self.name.clone(),
            message,
        };
        if !options.first_address.is_loopback() {
            return Err(plan_error(format!(
                "first address {} is outside 127.0.0.0/8; the simulator binds loopback addresses only",
                options.first_address
            )));
        }
        let counts = self.counts(options.hosts)?;
        let first = u32::from(options.first_address);
        let last = first.saturating_add(options.hosts as u32 - 1);
        if !Ipv4Addr::from(last).is_loopback() || last < first {
            return Err(plan_error(format!(
                "{} hosts from {} run past 127.255.255.255",
                options.hosts, options.first_address
            )));
        }
        let root = Rng::new(options.seed);
        let mut placement: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(class, &n)| std::iter::repeat_n(class, n))
            .collect();
        root.fork(0x91ACE).shuffle(&mut placement);
        let width = options.hosts.to_string().len().max(4);
        let mut hosts = Vec::with_capacity(options.hosts);
        for (index, class_index) in placement.into_iter().enumerate() {
            let Some(class) = self.classes.get(class_index) else {
                continue;
            };
            let address = Ipv4Addr::from(first + index as u32);
            let mut rng = root.fork(index as u64 + 1);
            hosts.push(plan_host(index, width, address, class, options, &mut rng));
        }
        Ok(hosts)
    }
}

/// Inputs of [`Profile::plan`].
#[derive(Debug, Clone)]
pub struct PlanOptions<'a> {
    /// Number of hosts.
    pub hosts: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// The first host's address (inside 127.0.0.0/8).
    pub first_address: Ipv4Addr,
    /// Overrides every class's latency.
    pub latency: Option<Duration>,
    /// The fleet's accounts.
    pub accounts: &'a [Account],
}

/// The profile file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    description: Option<String>,
    #[serde(default)]
    class: Vec<ClassSettings>,
}

/// `expected = "Succeeded"` or a bucket name.
#[derive(Debug, Clone)]
struct ExpectedField(Expected);

impl Default for ExpectedField {
    fn default() -> Self {
        Self(Expected::Succeeded)
    }
}

impl<'de> Deserialize<'de> for ExpectedField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.eq_ignore_ascii_case("succeeded") {
            return Ok(Self(Expected::Succeeded));
        }
        text.parse::<Bucket>()
            .map(|b| Self(Expected::Failed(b)))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "field `expected`: {text:?} is neither \"Succeeded\" nor a bucket name ({})",
                    Bucket::ALL.map(|b| b.name()).join(", ")
                ))
            })
    }
}

/// The name an [`Expected`] has in the inventory.
pub fn expected_name(expected: Expected) -> &'static str {
    match expected {
        Expected::Succeeded => "Succeeded",
        Expected::Failed(bucket) => bucket.name(),
    }
}

fn plan_host(
    index: usize,
    width: usize,
    address: Ipv4Addr,
    class: &HostClass,
    options: &PlanOptions<'_>,
    rng: &mut Rng,
) -> PlannedHost {
    let s = &class.settings;
    let number = format!("{:0width$}", index + 1);
    let base = format!("srv{number}");
    let spec_name = match s.naming {
        Naming::Unresolvable => format!("{base}.fleet.invalid"),
        Naming::InvalidCharacters => format!("{base}%bad.{DOMAIN}"),
        Naming::Normal | Naming::IpAddress => format!("{base}.{DOMAIN}"),
    };
    let (caption, version, ps_version) = os_facts(s.os);
    let http_port = s.listeners.contains(&Listener::Http).then_some(HTTP_PORT);
    let https_port = s.listeners.contains(&Listener::Https).then_some(HTTPS_PORT);
    let latency = options
        .latency
        .unwrap_or(Duration::from_millis(s.latency_ms));
    let accounts = host_accounts(options.accounts, s, rng);
    let auth = AuthSpec {
        basic: s.auth.contains(&AuthScheme::Basic),
        negotiate: s.auth.contains(&AuthScheme::Negotiate),
        kerberos: s.auth.contains(&AuthScheme::Kerberos),
        credssp: s.auth.contains(&AuthScheme::Credssp),
        certificate: s.auth.contains(&AuthScheme::Certificate),
        allow_unencrypted: s.allow_unencrypted,
        cbt_hardening: match s.cbt_hardening {
            CbtHardening::None => "None",
            CbtHardening::Relaxed => "Relaxed",
            CbtHardening::Strict => "Strict",
        }
        .to_owned(),
    };
    let winrm = winrm_config(s, &auth);
    let spec = HostSpec {
        name: spec_name.clone(),
        address,
        class: class.name.clone(),
        expected: class.expected,
        network: NetworkSpec {
            http_port,
            https_port,
            certificate: match s.certificate {
                Certificate::Valid => CertificateKind::Valid,
                Certificate::SelfSigned => CertificateKind::SelfSigned,
                Certificate::WrongName => CertificateKind::WrongName,
                Certificate::Expired => CertificateKind::Expired,
            },
            blackhole: s.blackhole,
            latency,
            jitter: Duration::from_millis(s.jitter_ms),
            reset_probability: s.reset_probability,
            empty_500_probability: s.empty_500_probability,
        },
        auth,
        accounts,
        winrm,
        configurations: s.configurations.clone(),
        remoting_enabled: s.remoting_enabled,
        os: OsInfo {
            caption: caption.to_owned(),
            version: version.to_owned(),
            identify_product_version: format!("OS: {version} SP: 0.0 Stack: 3.0"),
            computer_name: netbios_name(&base),
            last_boot: last_boot(rng),
        },
        powershell: PowerShellInfo {
            version: s
                .powershell_version
                .clone()
                .unwrap_or_else(|| ps_version.to_owned()),
            protocol_version: "2.3".to_owned(),
            modules_fail: s.modules_fail,
        },
        script: ScriptBehaviour {
            extra_duration: Duration::from_millis(s.script_extra_ms),
            always_fail: s.script_always_fails,
        },
        data: host_data(rng),
    };
    let row = inventory_row(&spec, class, address);
    PlannedHost {
        index,
        spec,
        extra: ExtraBehaviour {
            unreachable: s.unreachable,
            impostor: s.impostor,
        },
        row,
    }
}

fn inventory_row(spec: &HostSpec, class: &HostClass, address: Ipv4Addr) -> InventoryRow {
    let s = &class.settings;
    let inv = &s.inventory;
    let scheme = inv.scheme.unwrap_or(match s.listeners.first() {
        Some(Listener::Https) => Listener::Https,
        _ => Listener::Http,
    });
    let port = inv.port.unwrap_or(match scheme {
        Listener::Http => HTTP_PORT,
        Listener::Https => HTTPS_PORT,
    });
    let authentication = inv.authentication.clone().unwrap_or_else(|| {
        [
            (AuthScheme::Negotiate, "negotiate"),
            (AuthScheme::Basic, "basic"),
            (AuthScheme::Kerberos, "kerberos"),
            (AuthScheme::Credssp, "credssp"),
            (AuthScheme::Certificate, "certificate"),
        ]
        .into_iter()
        .find(|(scheme, _)| s.auth.contains(scheme))
        .map_or("negotiate", |(_, name)| name)
        .to_owned()
    });
    let (name, address) = match s.naming {
        Naming::Normal => (spec.name.clone(), Some(address)),
        Naming::Unresolvable | Naming::InvalidCharacters => (spec.name.clone(), None),
        Naming::IpAddress => (address.to_string(), None),
    };
    InventoryRow {
        name,
        address,
        port,
        scheme: match scheme {
            Listener::Http => "http",
            Listener::Https => "https",
        },
        authentication,
        configuration_name: inv
            .configuration_name
            .clone()
            .unwrap_or_else(|| "Microsoft.PowerShell".to_owned()),
        group: class.name.clone(),
        expected: expected_name(class.expected).to_owned(),
        user: inv.user.clone(),
    }
}

fn host_accounts(fleet: &[Account], s: &ClassSettings, rng: &mut Rng) -> Vec<Account> {
    fleet
        .iter()
        .map(|a| Account {
            name: a.name.clone(),
            password: if s.rotated_passwords {
                rng.password(20)
            } else {
                a.password.clone()
            },
            admin: match &s.admins {
                Some(admins) => admins.iter().any(|n| n.eq_ignore_ascii_case(&a.name)),
                None => a.admin,
            },
        })
        .collect()
}

fn winrm_config(s: &ClassSettings, auth: &AuthSpec) -> WinrmConfig {
    let mut config = WinrmConfig::server_2016();
    let q = &s.quotas;
    if let Some(kb) = q.max_envelope_size_kb {
        config.max_envelope_size_kb = Some(kb);
    }
    if let Some(service) = config.service.as_mut() {
        service.allow_unencrypted = Some(auth.allow_unencrypted);
        if let Some(n) = q.max_concurrent_operations_per_user {
            service.max_concurrent_operations_per_user = Some(n);
        }
        if let Some(a) = service.auth.as_mut() {
            a.basic = Some(auth.basic);
            a.kerberos = Some(auth.kerberos);
            a.negotiate = Some(auth.negotiate);
            a.certificate = Some(auth.certificate);
            a.credssp = Some(auth.credssp);
            a.cbt_hardening_level = Some(match s.cbt_hardening {
                CbtHardening::None => CbtHardeningLevel::None,
                CbtHardening::Relaxed => CbtHardeningLevel::Relaxed,
                CbtHardening::Strict => CbtHardeningLevel::Strict,
            });
        }
    }
    if let Some(winrs) = config.winrs.as_mut() {
        if let Some(n) = q.max_shells_per_user {
            winrs.max_shells_per_user = Some(n);
        }
        if let Some(n) = q.max_concurrent_users {
            winrs.max_concurrent_users = Some(n);
        }
        if let Some(ms) = q.idle_timeout_ms {
            winrs.idle_timeout_ms = Some(ms);
        }
    }
    config
}

/// (caption, version, PowerShell version) of an OS kind.
fn os_facts(os: OsKind) -> (&'static str, &'static str, &'static str) {
    match os {
        OsKind::Server2022 => (
            "Microsoft Windows Server 2022 Datacenter",
            "10.0.20348",
            "5.1.20348.2849",
        ),
        OsKind::Server2019 => (
            "Microsoft Windows Server 2019 Datacenter",
            "10.0.17763",
            "5.1.17763.6414",
        ),
        OsKind::Server2016 => (
            "Microsoft Windows Server 2016 Datacenter",
            "10.0.14393",
            "5.1.14393.7426",
        ),
        OsKind::Server2012r2 => (
            "Microsoft Windows Server 2012 R2 Datacenter",
            "6.3.9600",
            "5.1.14409.1005",
        ),
    }
}

/// The NetBIOS computer name: the first label, upper case, at most 15 characters.
fn netbios_name(label: &str) -> String {
    label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(15)
        .collect::<String>()
        .to_ascii_uppercase()
}

fn last_boot(rng: &mut Rng) -> String {
    let day = 1 + rng.below(28);
    let hour = rng.below(24);
    let minute = rng.below(60);
    let second = rng.below(60);
    format!("2025-06-{day:02}T{hour:02}:{minute:02}:{second:02}")
}

fn host_data(rng: &mut Rng) -> HostData {
    let mut services: Vec<(String, String, String)> = [
        ("BITS", "Background Intelligent Transfer Service", "Running"),
        ("Dnscache", "DNS Client", "Running"),
        ("EventLog", "Windows Event Log", "Running"),
        ("LanmanServer", "Server", "Running"),
        ("MpsSvc", "Windows Defender Firewall", "Running"),
        ("Spooler", "Print Spooler", "Running"),
        ("TermService", "Remote Desktop Services", "Running"),
        ("W32Time", "Windows Time", "Running"),
        (
            "WinRM",
            "Windows Remote Management (WS-Management)",
            "Running",
        ),
        ("wuauserv", "Windows Update", "Stopped"),
    ]
    .into_iter()
    .map(|(n, d, s)| (n.to_owned(), d.to_owned(), s.to_owned()))
    .collect();
    // A few services differ from host to host, so filters have something to find.
    for (name, _, status) in services.iter_mut() {
        let flip = match name.as_str() {
            "Spooler" => rng.chance(0.3),
            "wuauserv" => rng.chance(0.4),
            "BITS" => rng.chance(0.1),
            _ => false,
        };
        if flip {
            *status = if status == "Running" {
                "Stopped".to_owned()
            } else {
                "Running".to_owned()
            };
        }
    }
    let hotfix_count = 2 + rng.below(4);
    let hotfixes = (0..hotfix_count)
        .map(|i| {
            let kb = 5_000_000 + rng.below(60_000);
            let kind = if i == 0 { "Update" } else { "Security Update" };
            let month = 1 + rng.below(12);
            let day = 1 + rng.below(28);
            (
                format!("KB{kb}"),
                kind.to_owned(),
                format!("2025-{month:02}-{day:02}"),
            )
        })
        .collect();
    let memory_kb = [4u64, 8, 16, 32]
        .get(rng.below(4) as usize)
        .copied()
        .unwrap_or(8)
        * 1024
        * 1024;
    HostData {
        services,
        hotfixes,
        memory_kb,
    }
}

/// One-based (line, column) of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener::Http]
}

fn default_auth() -> Vec<AuthScheme> {
    vec![AuthScheme::Negotiate]
}

fn default_configurations() -> Vec<String> {
    vec!["Microsoft.PowerShell".to_owned()]
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(hosts: usize, accounts: &[Account]) -> PlanOptions<'_> {
        PlanOptions {
            hosts,
            seed: 7,
            first_address: DEFAULT_FIRST_ADDRESS,
            latency: None,
            accounts,
        }
    }

    #[test]
    fn builtin_profiles_parse() {
        for (name, _) in BUILTIN {
            let profile = Profile::load(name).unwrap();
            assert_eq!(profile.name, name);
            assert!(!profile.classes.is_empty());
        }
    }

    #[test]
    fn mixed_covers_every_bucket_but_interrupted() {
        let profile = Profile::load("mixed").unwrap();
        let accounts = default_accounts(1);
        let hosts = profile.plan(&options(200, &accounts)).unwrap();
        assert_eq!(hosts.len(), 200);
        for bucket in Bucket::ALL {
            let found = hosts
                .iter()
                .any(|h| h.spec.expected == Expected::Failed(bucket));
            // Interrupted is what a client reports when its own run is stopped: no host
            // behaviour produces it.
            assert_eq!(found, bucket != Bucket::Interrupted, "{bucket}");
        }
        assert!(hosts.iter().any(|h| h.spec.expected == Expected::Succeeded));
        // Quota-limited, slow and flaky hosts are there and expected to succeed.
        for class in ["quota_limited", "slow", "flaky"] {
            let host = hosts.iter().find(|h| h.spec.class == class).unwrap();
            assert_eq!(host.spec.expected, Expected::Succeeded, "{class}");
        }
    }

    #[test]
    fn counts_and_percentages() {
        let profile = Profile::parse(
            "t",
            "t.toml",
            "[[class]]\nname='a'\ncount=3\n[[class]]\nname='b'\npercent=50\n\
             [[class]]\nname='c'\npercent=25\n",
        )
        .unwrap();
        assert_eq!(profile.counts(3).unwrap(), [3, 0, 0]);
        assert_eq!(profile.counts(6).unwrap(), [3, 2, 1]);
        assert_eq!(profile.counts(103).unwrap(), [3, 67, 33]);
        assert_eq!(profile.counts(1004).unwrap().iter().sum::<usize>(), 1004);
        let error = profile.counts(2).unwrap_err().to_string();
        assert!(error.contains("need 3 hosts"), "{error}");
        let only_counts = Profile::parse("t", "t.toml", "[[class]]\nname='a'\ncount=3\n").unwrap();
        assert!(only_counts.counts(4).is_err());
        assert!(only_counts.counts(0).is_err());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let text = "description = 'x'\n[[class]]\nname = 'a'\npercent = 10\nlatncy_ms = 5\n";
        let error = Profile::parse("p", "my.toml", text)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("my.toml:"), "{error}");
        assert!(error.contains("latncy_ms"), "{error}");

        let text = "[[class]]\nname = 'a'\ncount = 1\nexpected = 'Nope'\n";
        let error = Profile::parse("p", "my.toml", text)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("my.toml:"), "{error}");
        assert!(error.contains("expected"), "{error}");

        let text = "[[class]]\nname = 'a'\ncount = 1\n\n[class.quotas]\nmax_shells = 3\n";
        let error = Profile::parse("p", "my.toml", text)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("my.toml:6:"), "{error}");
        assert!(error.contains("max_shells"), "{error}");

        let text = "[[class]]\nname = 'a'\ncount = 1\npercent = 3\n";
        let error = Profile::parse("p", "my.toml", text)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("my.toml:3:"), "{error}");
        assert!(error.contains("both `count` and `percent`"), "{error}");

        let text = "[[class]]\nname = 'a'\ncertificate = 'bogus'\ncount = 1\n";
        let error = Profile::parse("p", "my.toml", text)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("my.toml:3:"), "{error}");

        assert!(matches!(
            Profile::load("/nonexistent/profile.toml"),
            Err(ProfileError::Unknown(_))
        ));
    }

    #[test]
    fn plans_are_deterministic_and_loopback_only() {
        let profile = Profile::load("mixed").unwrap();
        let accounts = default_accounts(11);
        let a = profile.plan(&options(60, &accounts)).unwrap();
        let b = profile.plan(&options(60, &accounts)).unwrap();
        let names = |h: &[PlannedHost]| -> Vec<(String, String)> {
            h.iter()
                .map(|h| (h.row.name.clone(), h.spec.class.clone()))
                .collect()
        };
        assert_eq!(names(&a), names(&b));
        assert_eq!(a[0].spec.address, DEFAULT_FIRST_ADDRESS);
        assert_eq!(a[59].spec.address, Ipv4Addr::new(127, 20, 0, 60));
        let mut other = options(60, &accounts);
        other.seed = 8;
        assert_ne!(names(&a), names(&profile.plan(&other).unwrap()));

        let mut outside = options(5, &accounts);
        outside.first_address = Ipv4Addr::new(10, 0, 0, 1);
        assert!(profile.plan(&outside).is_err());
        outside.first_address = Ipv4Addr::new(127, 255, 255, 254);
        assert!(profile.plan(&outside).is_err());
    }

    #[test]
    fn accounts_are_seeded_and_rotated_per_class() {
        assert_eq!(
            default_accounts(5)[0].password,
            default_accounts(5)[0].password
        );
        assert_ne!(
            default_accounts(5)[0].password,
            default_accounts(6)[0].password
        );
        let accounts = default_accounts(5);
        let profile = Profile::load("mixed").unwrap();
        let hosts = profile.plan(&options(200, &accounts)).unwrap();
        let rotated = hosts
            .iter()
            .find(|h| h.spec.expected == Expected::Failed(Bucket::InvalidCredentials))
            .unwrap();
        assert_eq!(rotated.spec.accounts[0].name, ADMIN_ACCOUNT);
        assert_ne!(rotated.spec.accounts[0].password, accounts[0].password);
        let healthy = hosts.iter().find(|h| h.spec.class == "healthy").unwrap();
        assert_eq!(healthy.spec.accounts[0].password, accounts[0].password);
        assert!(healthy.spec.accounts[0].admin && !healthy.spec.accounts[1].admin);
    }

    #[test]
    fn latency_override_and_rows() {
        let profile = Profile::load("bench").unwrap();
        let accounts = default_accounts(1);
        let mut opts = options(10, &accounts);
        opts.latency = Some(Duration::from_millis(25));
        let hosts = profile.plan(&opts).unwrap();
        assert!(
            hosts
                .iter()
                .all(|h| h.spec.network.latency == Duration::from_millis(25))
        );
        let row = &hosts[0].row;
        assert_eq!(row.name, "srv0001.fleet.test");
        assert_eq!(row.address, Some(DEFAULT_FIRST_ADDRESS));
        assert_eq!((row.scheme, row.port), ("http", 5985));
        assert_eq!(row.authentication, "negotiate");
        assert_eq!(row.expected, "Succeeded");
        assert_eq!(hosts[0].spec.os.computer_name, "SRV0001");
    }

    #[test]
    fn line_columns() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
