//! The option groups commands share (clap derive) and the value types behind them.
//!
//! Connection options carry the names PowerShell users know from `Invoke-Command` /
//! `New-PSSessionOption` (`--port`, `--use-ssl`, `--authentication`, `--configuration-name`,
//! `--skip-ca-check`, ...); fleet options the names Ansible users know (`-i`, `-l/--limit`,
//! `-f/--forks`). Every option here can also come from a `PSFLEET_*` environment variable
//! (clap's `env`) and from the configuration file under the option's long name
//! (`crate::config`); `crate::settings` merges the three (command line > environment >
//! file > default).
//!
//! Every value is an `Option` here, even where a default exists, so that the merge can tell
//! "not given" from "given as the default value"; the defaults live in `crate::settings`.
//! On/off options take an optional value (`--use-ssl`, `--use-ssl=false`) so that the
//! command line can turn off what the configuration file turned on.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};
use psfleet_engine::scheduler::RateLimit;
use serde::Deserialize;

/// How to authenticate (`--authentication`, like Invoke-Command's `-Authentication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// HTTP Basic: user and password on every request; HTTPS only in practice (no message
    /// encryption exists for Basic).
    Basic,
    /// NTLM, with message encryption over HTTP.
    Ntlm,
    /// Negotiate (SPNEGO): Kerberos when the host has an SPN and a KDC is reachable, NTLM
    /// otherwise. The default, as in PowerShell.
    Negotiate,
    /// Kerberos only: with the password, or the TGT of the ticket cache `kinit` filled.
    Kerberos,
    /// CredSSP: the credentials are delegated to the host (for second hops).
    Credssp,
    /// A client certificate mapped to a local account on the host (HTTPS only).
    Certificate,
}

impl AuthMethod {
    /// The name on the command line and in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Basic => "basic",
            AuthMethod::Ntlm => "ntlm",
            AuthMethod::Negotiate => "negotiate",
            AuthMethod::Kerberos => "kerberos",
            AuthMethod::Credssp => "credssp",
            AuthMethod::Certificate => "certificate",
        }
    }

    /// Whether the method needs a password: certificate authentication never does; every
    /// other method does (the engine's Kerberos runs its own AS exchange with it).
    pub fn password(self) -> PasswordNeed {
        match self {
            AuthMethod::Certificate => PasswordNeed::Never,
            _ => PasswordNeed::Required,
        }
    }
}

/// Whether an authentication method needs a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordNeed {
    /// Always (from PSFLEET_PASSWORD, --password-file or the prompt).
    Required,
    /// Never read.
    Never,
}

/// Message encryption over HTTP (`--encryption`), as pypsrp's `message_encryption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMode {
    /// Sealed over HTTP, not over HTTPS (TLS already protects the messages).
    Auto,
    /// Sealed over HTTP and HTTPS.
    Always,
    /// Never sealed: plaintext bodies over HTTP need AllowUnencrypted=true on the host.
    Never,
}

impl EncryptionMode {
    /// The name on the command line and in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            EncryptionMode::Auto => "auto",
            EncryptionMode::Always => "always",
            EncryptionMode::Never => "never",
        }
    }
}

/// What goes to standard output (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// A line per failed host and a summary table by bucket (the default).
    Text,
    /// One JSON object per host (the run record), one per line, and nothing else.
    Json,
}

impl OutputFormat {
    /// The name on the command line and in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Text => "text",
            OutputFormat::Json => "json",
        }
    }
}

/// When to use colours (`--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set to a non-empty value.
    Auto,
    /// Always (even with NO_COLOR).
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// The name on the command line and in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            ColorChoice::Auto => "auto",
            ColorChoice::Always => "always",
            ColorChoice::Never => "never",
        }
    }
}

/// A report format (`psfleet report --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum ReportFormat {
    /// The hosts CSV and the bucket summary CSV.
    Csv,
    /// One self-contained HTML file.
    Html,
    /// JSON lines, one run record per host.
    Json,
}

/// A duration: `30s`, `5m`, `1h30m`, `250ms`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationArg(pub Duration);

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. 30s, 5m, 1h30m, 250ms or 45)")]
pub struct DurationParseError {
    /// The text given.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// The longest duration accepted (a week): anything longer is a typo.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

impl FromStr for DurationArg {
    type Err = DurationParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationParseError {
            input: s.chars().take(64).collect(),
            reason,
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(err("it is empty"));
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            let secs: u64 = text.parse().map_err(|_| err("the number is too large"))?;
            return bounded(Duration::from_secs(secs)).ok_or_else(|| err("longer than a week"));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        // Each round eats one NUMBER UNIT pair; the text is at most a few pairs long.
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("each part must start with a number"));
            }
            let (number, tail) = rest.split_at(digits);
            let number: u64 = number.parse().map_err(|_| err("the number is too large"))?;
            let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, tail) = tail.split_at(unit_len);
            let part = match unit {
                "ms" => Duration::from_millis(number),
                "s" => Duration::from_secs(number),
                "m" => Duration::from_secs(number.saturating_mul(60)),
                "h" => Duration::from_secs(number.saturating_mul(3600)),
                "" => return Err(err("a unit (ms, s, m, h) is missing")),
                _ => return Err(err("the unit must be ms, s, m or h")),
            };
            total = total.saturating_add(part);
            rest = tail.trim_start();
        }
        bounded(total).ok_or_else(|| err("longer than a week"))
    }
}

fn bounded(d: Duration) -> Option<DurationArg> {
    (d <= MAX_DURATION).then_some(DurationArg(d))
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 || d.is_zero() {
            return write!(f, "{}ms", d.as_millis());
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

/// A name resolution override (`--resolve NAME=IP`), as curl's `--resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolveEntry {
    /// The host name, as the inventory spells it.
    pub name: String,
    /// The address to connect to instead of asking DNS.
    pub ip: IpAddr,
}

/// Why a `--resolve` entry did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid --resolve {input:?}: {reason} (expected NAME=IP, e.g. srv1.corp.example=10.0.0.5)"
)]
pub struct ResolveParseError {
    /// The text given.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl FromStr for ResolveEntry {
    type Err = ResolveParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ResolveParseError {
            input: s.chars().take(300).collect(),
            reason,
        };
        let (name, ip) = s.split_once('=').ok_or_else(|| err("there is no '='"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(err("the name is empty"));
        }
        if name.len() > 253 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("the name is not a host name"));
        }
        let ip = ip
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| err("the address is not an IPv4 or IPv6 address"))?;
        Ok(Self {
            name: name.to_owned(),
            ip,
        })
    }
}

impl fmt::Display for ResolveEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.ip)
    }
}

/// Which run `--resume` continues.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResumeFrom {
    /// The most recent run in the state directory.
    Last,
    /// A run id (`psfleet runs` lists them).
    Run(String),
}

impl FromStr for ResumeFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "" => Err("the run id is empty (use a run id from `psfleet runs`, or `last`)".into()),
            "last" => Ok(ResumeFrom::Last),
            id if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
                Err(format!(
                    "{:?} is not a run id (letters, digits and '-'; see `psfleet runs`)",
                    id.chars().take(64).collect::<String>()
                ))
            }
            id => Ok(ResumeFrom::Run(id.to_owned())),
        }
    }
}

impl fmt::Display for ResumeFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumeFrom::Last => f.write_str("last"),
            ResumeFrom::Run(id) => f.write_str(id),
        }
    }
}

impl<'de> Deserialize<'de> for DurationArg {
    /// A string as on the command line (`"30s"`), or a whole number of seconds.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a duration such as \"30s\", \"5m\" or a number of seconds",
            )
        })? {
            Raw::Seconds(secs) => bounded(Duration::from_secs(secs))
                .ok_or_else(|| serde::de::Error::custom("the duration is longer than a week")),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for ResolveEntry {
    /// A `"NAME=IP"` string.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A run named on the command line (`report`, `diff`): `last`, `previous` (the one before
/// `last`) or a run id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunRef {
    /// The newest run in the state directory.
    Last,
    /// The run before the newest.
    Previous,
    /// A run id (`psfleet runs` lists them).
    Id(String),
}

impl FromStr for RunRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "last" => Ok(RunRef::Last),
            "previous" | "prev" => Ok(RunRef::Previous),
            other => match other.parse::<ResumeFrom>()? {
                ResumeFrom::Last => Ok(RunRef::Last),
                ResumeFrom::Run(id) => Ok(RunRef::Id(id)),
            },
        }
    }
}

impl fmt::Display for RunRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunRef::Last => f.write_str("last"),
            RunRef::Previous => f.write_str("previous"),
            RunRef::Id(id) => f.write_str(id),
        }
    }
}

/// How to reach and authenticate to hosts (PowerShell's names).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Connection (as Invoke-Command / New-PSSessionOption)")]
pub struct ConnectionArgs {
    /// TCP port [default: 5985, or 5986 with --use-ssl] (-Port).
    #[arg(long, env = "PSFLEET_PORT", value_name = "PORT")]
    pub port: Option<u16>,
    /// Connect over HTTPS (-UseSSL) [default: false].
    #[arg(long, env = "PSFLEET_USE_SSL", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub use_ssl: Option<bool>,
    /// Authentication mechanism (-Authentication) [default: negotiate].
    #[arg(
        long,
        env = "PSFLEET_AUTHENTICATION",
        value_name = "METHOD",
        value_enum
    )]
    pub authentication: Option<AuthMethod>,
    /// Session configuration (-ConfigurationName) [default: Microsoft.PowerShell].
    #[arg(long, env = "PSFLEET_CONFIGURATION_NAME", value_name = "NAME")]
    pub configuration_name: Option<String>,
    /// User: DOMAIN\user, user@REALM or a local user (-Credential's user name).
    #[arg(long, short = 'u', env = "PSFLEET_USER", value_name = "USER")]
    pub user: Option<String>,
    /// Pin the host's TLS certificate: its SHA-1 (as `Get-ChildItem Cert:` shows it) or
    /// SHA-256 thumbprint. Unlike Invoke-Command's -CertificateThumbprint this checks the
    /// server; the client certificate comes from --certificate-file.
    #[arg(long, env = "PSFLEET_CERTIFICATE_THUMBPRINT", value_name = "HEX")]
    pub certificate_thumbprint: Option<String>,
    /// Client certificate (PEM) for --authentication certificate.
    #[arg(long, env = "PSFLEET_CERTIFICATE_FILE", value_name = "FILE")]
    pub certificate_file: Option<PathBuf>,
    /// Private key (PEM) of --certificate-file, when it is not in the same file.
    #[arg(long, env = "PSFLEET_CERTIFICATE_KEY_FILE", value_name = "FILE")]
    pub certificate_key_file: Option<PathBuf>,
    /// Accept a host certificate from an untrusted issuer (-SkipCACheck; lab hosts only).
    #[arg(long, env = "PSFLEET_SKIP_CA_CHECK", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub skip_ca_check: Option<bool>,
    /// Accept a host certificate issued for another name (-SkipCNCheck; lab hosts only).
    #[arg(long, env = "PSFLEET_SKIP_CN_CHECK", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub skip_cn_check: Option<bool>,
    /// Further trusted CA certificates (a PEM bundle), besides the system's.
    #[arg(long, env = "PSFLEET_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Message encryption [default: auto: sealed over HTTP, TLS alone over HTTPS]
    /// (-NoEncryption is `never`).
    #[arg(long, env = "PSFLEET_ENCRYPTION", value_name = "MODE", value_enum)]
    pub encryption: Option<EncryptionMode>,
    /// Allow unencrypted messages where a host's settings need them: Basic over plain HTTP
    /// (the Windows client's winrm/config/client/AllowUnencrypted) [default: false].
    #[arg(long, env = "PSFLEET_ALLOW_UNENCRYPTED", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub allow_unencrypted: Option<bool>,
    /// URL path of the WinRM listener [default: wsman] (-UrlPrefix).
    #[arg(long, env = "PSFLEET_URL_PREFIX", value_name = "PREFIX")]
    pub url_prefix: Option<String>,
    /// Hosts that may be reached by IP address or without Kerberos over HTTP, as the
    /// WinRM client's TrustedHosts: comma-separated names, `*.corp.example` patterns or `*`.
    #[arg(long, env = "PSFLEET_TRUSTED_HOSTS", value_name = "LIST")]
    pub trusted_hosts: Option<String>,
    /// Connect to IP instead of asking DNS for NAME (repeatable; the environment variable
    /// takes a comma-separated list).
    #[arg(
        long,
        env = "PSFLEET_RESOLVE",
        value_name = "NAME=IP",
        value_delimiter = ','
    )]
    pub resolve: Vec<ResolveEntry>,
    /// Kerberos KDC (host or host:port) instead of krb5.conf's.
    #[arg(long, env = "PSFLEET_KDC", value_name = "HOST[:PORT]")]
    pub kdc: Option<String>,
    /// Service class of the host's SPN [default: HTTP, as the Windows client] (`WSMAN` for
    /// hosts registered only under it).
    #[arg(long, env = "PSFLEET_SPN_SERVICE", value_name = "SERVICE")]
    pub spn_service: Option<String>,
    /// TCP connect plus TLS handshake timeout [default: 30s] (-OpenTimeout).
    #[arg(long, env = "PSFLEET_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<DurationArg>,
    /// WS-Man OperationTimeout of each request [default: 20s] (-OperationTimeout).
    #[arg(long, env = "PSFLEET_OPERATION_TIMEOUT", value_name = "DURATION")]
    pub operation_timeout: Option<DurationArg>,
    /// Read the password from the first line of FILE (which must not be readable by group
    /// or others). Or set PSFLEET_PASSWORD, or answer the prompt.
    #[arg(long, env = "PSFLEET_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// Which hosts: the inventory and the `--limit` pattern.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Fleet (as ansible / ansible-playbook)")]
pub struct SelectArgs {
    /// Inventory: CSV, text, Ansible INI or YAML file, or `-` for standard input
    /// (repeatable).
    #[arg(short = 'i', long, env = "PSFLEET_INVENTORY", value_name = "FILE")]
    pub inventory: Vec<String>,
    /// Only the hosts matching PATTERN: names, globs, groups, `!` to exclude, `&` to
    /// intersect, `:` or `,` between them (as ansible --limit).
    #[arg(short = 'l', long, env = "PSFLEET_LIMIT", value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Read every inventory in this format instead of guessing from the extension and the
    /// content.
    #[arg(
        long,
        env = "PSFLEET_INVENTORY_FORMAT",
        value_name = "FORMAT",
        value_enum
    )]
    pub inventory_format: Option<InventoryFormat>,
    /// A variable for every host, beating the inventory's (as ansible -e); repeatable.
    #[arg(short = 'e', long = "extra-var", value_name = "NAME=VALUE")]
    pub extra_vars: Vec<ExtraVar>,
}

/// An inventory to take one host's settings from (`enter`, `doctor`): no `--limit`.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Inventory (optional)")]
pub struct HostInventoryArgs {
    /// Inventory holding the host's settings (repeatable); without one, the connection
    /// options alone say how to connect.
    #[arg(short = 'i', long, env = "PSFLEET_INVENTORY", value_name = "FILE")]
    pub inventory: Vec<String>,
    /// Read every inventory in this format instead of guessing.
    #[arg(
        long,
        env = "PSFLEET_INVENTORY_FORMAT",
        value_name = "FORMAT",
        value_enum
    )]
    pub inventory_format: Option<InventoryFormat>,
    /// A variable for the host, beating the inventory's (as ansible -e); repeatable.
    #[arg(short = 'e', long = "extra-var", value_name = "NAME=VALUE")]
    pub extra_vars: Vec<ExtraVar>,
}

impl HostInventoryArgs {
    /// The same selection, without a limit.
    pub fn select(&self) -> SelectArgs {
        SelectArgs {
            inventory: self.inventory.clone(),
            limit: None,
            inventory_format: self.inventory_format,
            extra_vars: self.extra_vars.clone(),
        }
    }
}

/// An inventory format (`--inventory-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InventoryFormat {
    /// CSV with a header row.
    Csv,
    /// One host per line.
    Text,
    /// Ansible INI.
    Ini,
    /// Ansible YAML.
    Yaml,
}

impl InventoryFormat {
    /// The inventories crate's format.
    pub fn format(self) -> psfleet_inventories::Format {
        match self {
            InventoryFormat::Csv => psfleet_inventories::Format::Csv,
            InventoryFormat::Text => psfleet_inventories::Format::Text,
            InventoryFormat::Ini => psfleet_inventories::Format::Ini,
            InventoryFormat::Yaml => psfleet_inventories::Format::Yaml,
        }
    }

    /// The name on the command line and in the configuration file.
    pub fn name(self) -> &'static str {
        self.format().name()
    }
}

/// A `-e NAME=VALUE` variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExtraVar {
    /// The variable.
    pub name: String,
    /// Its value.
    pub value: String,
}

impl FromStr for ExtraVar {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| "expected NAME=VALUE, e.g. -e owner=team-web".to_owned())?;
        let name = name.trim();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "{name:?} is not a variable name (letters, digits, '_')"
            ));
        }
        if psfleet_inventories::is_secret_name(name) {
            return Err(format!(
                "-e {name}=... would put a secret on the command line; use PSFLEET_PASSWORD, \
                 --password-file or the prompt"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// How to spread the work over the fleet (Ansible's names where it has them).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Fleet (as ansible / ansible-playbook)")]
pub struct FleetArgs {
    /// The hosts.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Pace and bounds.
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Continuing an earlier run.
    #[command(flatten)]
    pub resume: ResumeArgs,
}

/// How fast and how hard to go (the scheduler's settings; docs/scheduling.md).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Fleet (as ansible / ansible-playbook)")]
pub struct ScheduleArgs {
    /// Most hosts in flight at once [default: 256] (Invoke-Command -ThrottleLimit).
    #[arg(short = 'f', long, env = "PSFLEET_FORKS", value_name = "N")]
    pub forks: Option<usize>,
    /// Most new connections, all hosts together: COUNT[/s|/m|/h][:BURST], e.g. 50/s
    /// [default: no limit].
    #[arg(long, env = "PSFLEET_RATE", value_name = "RATE")]
    pub rate: Option<RateLimit>,
    /// Most new connections to any one host, same syntax as --rate [default: no limit].
    #[arg(long, env = "PSFLEET_PER_HOST_RATE", value_name = "RATE")]
    pub per_host_rate: Option<RateLimit>,
    /// Per-host deadline, from its first attempt: the pipeline is stopped, the shell
    /// deleted and the host recorded as Timeout [default: none].
    #[arg(long, env = "PSFLEET_TIMEOUT", value_name = "DURATION")]
    pub timeout: Option<DurationArg>,
    /// Retries after a transient failure (timeouts, resets, 503) [default: 2].
    #[arg(long, env = "PSFLEET_RETRIES", value_name = "N")]
    pub retries: Option<u32>,
    /// MaxShellsPerUser assumed for a host psfleet knows nothing about [default: 5].
    #[arg(long, env = "PSFLEET_MAX_SHELLS_DEFAULT", value_name = "N")]
    pub max_shells_default: Option<u32>,
}

/// Continuing an earlier run of the same command.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Fleet (as ansible / ansible-playbook)")]
pub struct ResumeArgs {
    /// Continue a run: RUN is a run id (`psfleet runs`) or `last`; hosts already done are
    /// skipped, never rerun.
    #[arg(long, value_name = "RUN|last")]
    pub resume: Option<ResumeFrom>,
    /// With --resume: run again the hosts that were in flight when the run stopped
    /// [default: false; they are reported Interrupted].
    #[arg(long, env = "PSFLEET_RERUN_INTERRUPTED", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub rerun_interrupted: Option<bool>,
}

/// What the run shows while it runs and prints at the end.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// What goes to standard output [default: text].
    #[arg(
        short = 'o',
        long,
        env = "PSFLEET_OUTPUT",
        value_name = "FORMAT",
        value_enum
    )]
    pub output: Option<OutputFormat>,
    /// No progress bars: a plain summary line to stderr every --progress-interval instead
    /// (the default without a terminal) [default: false].
    #[arg(long, env = "PSFLEET_NO_PROGRESS", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub no_progress: Option<bool>,
    /// Time between plain progress lines [default: 5s].
    #[arg(long, env = "PSFLEET_PROGRESS_INTERVAL", value_name = "DURATION")]
    pub progress_interval: Option<DurationArg>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_units_and_refuse_nonsense() {
        let d = |s: &str| s.parse::<DurationArg>().map(|d| d.0);
        assert_eq!(d("45"), Ok(Duration::from_secs(45)));
        assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("1h 30m 5s"), Ok(Duration::from_secs(5405)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        for bad in [
            "",
            "s",
            "5x",
            "-5s",
            "1.5s",
            "1000h",
            "99999999999999999999",
        ] {
            let e = d(bad).unwrap_err();
            assert!(e.to_string().contains("expected e.g. 30s"), "{bad}: {e}");
        }
        assert_eq!(DurationArg(d("5m").unwrap()).to_string(), "5m");
        assert_eq!(
            DurationArg(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(
            DurationArg(Duration::from_secs(5405)).to_string(),
            "1h30m5s"
        );
    }

    #[test]
    fn resolve_entries_parse_names_and_addresses() {
        let e: ResolveEntry = "srv1.corp.example=10.0.0.5".parse().unwrap();
        assert_eq!(e.name, "srv1.corp.example");
        assert_eq!(e.ip.to_string(), "10.0.0.5");
        let e: ResolveEntry = "srv2=[::1]".parse().unwrap();
        assert_eq!(e.ip.to_string(), "::1");
        assert_eq!(e.to_string(), "srv2=::1");
        for bad in ["srv1", "=10.0.0.1", "srv1=10.0.0", "a b=10.0.0.1"] {
            assert!(bad.parse::<ResolveEntry>().is_err(), "{bad}");
        }
    }

    #[test]
    fn resume_takes_last_or_a_run_id() {
        assert_eq!("last".parse(), Ok(ResumeFrom::Last));
        assert_eq!(
            "20261121T101500Z-1a2b".parse(),
            Ok(ResumeFrom::Run("20261121T101500Z-1a2b".into()))
        );
        assert!("../etc".parse::<ResumeFrom>().is_err());
        assert!("".parse::<ResumeFrom>().is_err());
    }

    #[test]
    fn password_need_follows_the_method() {
        assert_eq!(AuthMethod::Ntlm.password(), PasswordNeed::Required);
        assert_eq!(AuthMethod::Kerberos.password(), PasswordNeed::Required);
        assert_eq!(AuthMethod::Certificate.password(), PasswordNeed::Never);
    }
}
