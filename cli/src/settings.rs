//! The effective settings: the command line, then `PSFLEET_*` environment variables, then the
//! configuration file, then the defaults (docs/cli.md, "Precedence"). Every value remembers
//! where it came from ([`Origin`]), so errors and `psfleet config show` can say so.
//!
//! clap has already merged the command line with the environment (each option's `env`);
//! [`Layers`] asks clap which of the two a value came from and falls back to the file.
//! Validation that clap's value parsers cannot do (ranges, combinations) happens here, and
//! its errors name the value's origin.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use psfleet_engine::scheduler::RateLimit;
use toml::Spanned;

use crate::config::ConfigFile;
use crate::exit::CliError;
use crate::options::{
    AuthMethod, ColorChoice, ConnectionArgs, DurationArg, EncryptionMode, ExtraVar, FleetArgs,
    InventoryFormat, OutputArgs, OutputFormat, ResolveEntry, ResumeArgs, ResumeFrom, ScheduleArgs,
    SelectArgs,
};

/// Default WinRM port over HTTP (MS-WSMV 2.1: 5985 since WinRM 2.0).
pub const DEFAULT_HTTP_PORT: u16 = 5985;
/// Default WinRM port over HTTPS.
pub const DEFAULT_HTTPS_PORT: u16 = 5986;
/// Default session configuration (what Invoke-Command uses without -ConfigurationName).
pub const DEFAULT_CONFIGURATION_NAME: &str = "Microsoft.PowerShell";
/// Default URL path of the listener.
pub const DEFAULT_URL_PREFIX: &str = "wsman";
/// Default SPN service class: `HTTP/host`, what the Windows WinRM client asks the KDC for
/// (and the engine's default).
pub const DEFAULT_SPN_SERVICE: &str = "HTTP";
/// Default TCP connect plus TLS handshake timeout (pypsrp and winrm-rs use 30 s too).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default WS-Man OperationTimeout (pywinrm and pypsrp use 20 s).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time between plain progress lines.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Largest `--forks` accepted: far beyond what one machine's descriptors allow.
pub const MAX_FORKS: usize = 100_000;
/// Largest `--retries` accepted.
pub const MAX_RETRIES: u32 = 100;
/// Largest `--max-shells-default` accepted (Windows' own ceiling is 2^31, the usual 30).
pub const MAX_SHELLS_DEFAULT: u32 = 10_000;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    CommandLine,
    /// An environment variable.
    Env(String),
    /// The configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
    },
    /// psfleet's default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::CommandLine => f.write_str("command line"),
            Origin::Env(name) => write!(f, "environment {name}"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Its origin.
    pub origin: Origin,
}

impl<T> Setting<T> {
    /// A default value.
    pub fn default_value(value: T) -> Self {
        Self {
            value,
            origin: Origin::Default,
        }
    }
}

/// The environment variable of an option: `PSFLEET_` and its id in upper case
/// (a test checks every option follows the rule).
pub fn env_name(id: &str) -> String {
    format!("PSFLEET_{}", id.to_ascii_uppercase())
}

/// The command line and environment (clap's matches of the command that runs) over the
/// configuration file.
#[derive(Debug, Clone, Copy)]
pub struct Layers<'a> {
    matches: &'a ArgMatches,
    file: &'a ConfigFile,
}

impl<'a> Layers<'a> {
    /// Layers over the matches of the subcommand that runs and the loaded file.
    pub fn new(matches: &'a ArgMatches, file: &'a ConfigFile) -> Self {
        Self { matches, file }
    }

    /// The configuration file.
    pub fn file(&self) -> &'a ConfigFile {
        self.file
    }

    /// Where clap's value of `id` came from (`None`: neither the command line nor the
    /// environment gave one).
    fn clap_origin(&self, id: &str) -> Option<Origin> {
        // `value_source` asserts the id exists; ask only about ids that are present.
        if !self.matches.ids().any(|i| i.as_str() == id) {
            return None;
        }
        match self.matches.value_source(id)? {
            ValueSource::CommandLine => Some(Origin::CommandLine),
            ValueSource::EnvVariable => Some(Origin::Env(env_name(id))),
            _ => None,
        }
    }

    /// The value of option `id`: clap's (`cli`, from the command line or the environment),
    /// else the file's (`file`, mapped by `map`), else none.
    pub fn pick<T, F>(
        &self,
        id: &str,
        cli: Option<T>,
        file: Option<&Spanned<F>>,
        map: impl FnOnce(&F) -> T,
    ) -> Option<Setting<T>> {
        if let Some(value) = cli {
            let origin = self.clap_origin(id).unwrap_or(Origin::CommandLine);
            return Some(Setting { value, origin });
        }
        let spanned = file?;
        Some(Setting {
            value: map(spanned.get_ref()),
            origin: self.file_origin(spanned),
        })
    }

    /// Like [`Layers::pick`] for values that are the same type in the file.
    pub fn pick_same<T: Clone>(
        &self,
        id: &str,
        cli: Option<T>,
        file: Option<&Spanned<T>>,
    ) -> Option<Setting<T>> {
        self.pick(id, cli, file, T::clone)
    }

    /// Like [`Layers::pick`] for paths: relative paths from the file are taken relative to
    /// the file's directory.
    pub fn pick_path(
        &self,
        id: &str,
        cli: Option<PathBuf>,
        file: Option<&Spanned<PathBuf>>,
    ) -> Option<Setting<PathBuf>> {
        self.pick(id, cli, file, |p| self.file.path_value(p))
    }

    fn file_origin<F>(&self, spanned: &Spanned<F>) -> Origin {
        Origin::File {
            path: self.file.path.clone().unwrap_or_default(),
            line: self.file.line(spanned),
        }
    }
}

/// Two options given together that cannot both hold: names both, and says why.
pub fn conflict(first: &str, second: &str, why: &str) -> CliError {
    CliError::usage(format!(
        "{first} and {second} cannot be used together: {why}"
    ))
}

/// An error about a setting, naming where its value came from.
pub fn invalid<T>(key: &str, setting: &Setting<T>, message: impl fmt::Display) -> CliError {
    let place = match &setting.origin {
        Origin::CommandLine => format!("--{key}"),
        Origin::Env(name) => name.clone(),
        Origin::File { path, line } => format!("{}:{line}: key `{key}`", path.display()),
        Origin::Default => format!("the default of --{key}"),
    };
    CliError::usage(format!("{place}: {message}"))
}

/// Settings every command has.
#[derive(Debug, Clone)]
pub struct GlobalSettings {
    /// Where runs, journals and the cache live (`None` when neither --state-dir,
    /// XDG_STATE_HOME nor HOME says).
    pub state_dir: Option<Setting<PathBuf>>,
    /// When to colour.
    pub color: Setting<ColorChoice>,
    /// The tracing filter from PSFLEET_LOG or the file's `log` (the command line's -q/-v
    /// win over it).
    pub log: Option<Setting<String>>,
}

impl GlobalSettings {
    /// Merges the global options.
    pub fn resolve(
        state_dir: Option<PathBuf>,
        color: Option<ColorChoice>,
        layers: Layers<'_>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Self {
        let file = &layers.file().values;
        let state_dir = layers
            .pick_path("state_dir", state_dir, file.state_dir.as_ref())
            .or_else(|| default_state_dir(env).map(Setting::default_value));
        let color = layers
            .pick_same("color", color, file.color.as_ref())
            .unwrap_or_else(|| Setting::default_value(ColorChoice::Auto));
        let log = match env("PSFLEET_LOG").and_then(|v| v.into_string().ok()) {
            Some(filter) if !filter.trim().is_empty() => Some(Setting {
                value: filter,
                origin: Origin::Env("PSFLEET_LOG".into()),
            }),
            _ => layers.pick_same("log", None, file.log.as_ref()),
        };
        Self {
            state_dir,
            color,
            log,
        }
    }

    /// The state directory, or a usage error saying how to set one.
    pub fn state_dir(&self) -> Result<&Path, CliError> {
        self.state_dir
            .as_ref()
            .map(|s| s.value.as_path())
            .ok_or_else(|| {
                CliError::usage(
                    "no state directory: set --state-dir (or PSFLEET_STATE_DIR), XDG_STATE_HOME or \
                 HOME",
                )
            })
    }
}

/// `$XDG_STATE_HOME/psfleet`, else `~/.local/state/psfleet` (the XDG base directory rules:
/// a relative XDG_STATE_HOME is ignored).
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let xdg = env("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    match xdg {
        Some(dir) => Some(dir.join("psfleet")),
        None => env("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".local/state/psfleet")),
    }
}

/// How to reach and authenticate to hosts, merged and validated.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Given port (the default depends on `use_ssl`: see [`ConnectionSettings::port`]).
    pub port: Option<Setting<u16>>,
    /// HTTPS.
    pub use_ssl: Setting<bool>,
    /// Mechanism.
    pub authentication: Setting<AuthMethod>,
    /// Session configuration.
    pub configuration_name: Setting<String>,
    /// User name.
    pub user: Option<Setting<String>>,
    /// Pinned host certificate thumbprint (hex, as given).
    pub certificate_thumbprint: Option<Setting<String>>,
    /// Client certificate.
    pub certificate_file: Option<Setting<PathBuf>>,
    /// Its key.
    pub certificate_key_file: Option<Setting<PathBuf>>,
    /// -SkipCACheck.
    pub skip_ca_check: Setting<bool>,
    /// -SkipCNCheck.
    pub skip_cn_check: Setting<bool>,
    /// Further CAs.
    pub ca_file: Option<Setting<PathBuf>>,
    /// Message encryption.
    pub encryption: Setting<EncryptionMode>,
    /// AllowUnencrypted on this client (Basic over plain HTTP).
    pub allow_unencrypted: Setting<bool>,
    /// Listener path, without slashes around it.
    pub url_prefix: Setting<String>,
    /// TrustedHosts patterns, comma-separated.
    pub trusted_hosts: Option<Setting<String>>,
    /// Name resolution overrides.
    pub resolve: Setting<Vec<ResolveEntry>>,
    /// KDC.
    pub kdc: Option<Setting<String>>,
    /// SPN service class.
    pub spn_service: Setting<String>,
    /// Connect timeout.
    pub connect_timeout: Setting<Duration>,
    /// OperationTimeout.
    pub operation_timeout: Setting<Duration>,
    /// Password file.
    pub password_file: Option<Setting<PathBuf>>,
}

impl ConnectionSettings {
    /// Merges and validates the connection options.
    pub fn resolve(args: &ConnectionArgs, layers: Layers<'_>) -> Result<Self, CliError> {
        let f = &layers.file().values;
        let or_default = |s: Option<Setting<bool>>| s.unwrap_or(Setting::default_value(false));
        let duration = |s: Option<Setting<DurationArg>>, d: Duration| {
            s.map_or(Setting::default_value(d), |s| Setting {
                value: s.value.0,
                origin: s.origin,
            })
        };
        let settings = Self {
            port: layers.pick_same("port", args.port, f.port.as_ref()),
            use_ssl: or_default(layers.pick_same("use_ssl", args.use_ssl, f.use_ssl.as_ref())),
            authentication: layers
                .pick_same(
                    "authentication",
                    args.authentication,
                    f.authentication.as_ref(),
                )
                .unwrap_or(Setting::default_value(AuthMethod::Negotiate)),
            configuration_name: layers
                .pick_same(
                    "configuration_name",
                    args.configuration_name.clone(),
                    f.configuration_name.as_ref(),
                )
                .unwrap_or_else(|| Setting::default_value(DEFAULT_CONFIGURATION_NAME.into())),
            user: layers.pick_same("user", args.user.clone(), f.user.as_ref()),
            certificate_thumbprint: layers.pick_same(
                "certificate_thumbprint",
                args.certificate_thumbprint.clone(),
                f.certificate_thumbprint.as_ref(),
            ),
            certificate_file: layers.pick_path(
                "certificate_file",
                args.certificate_file.clone(),
                f.certificate_file.as_ref(),
            ),
            certificate_key_file: layers.pick_path(
                "certificate_key_file",
                args.certificate_key_file.clone(),
                f.certificate_key_file.as_ref(),
            ),
            skip_ca_check: or_default(layers.pick_same(
                "skip_ca_check",
                args.skip_ca_check,
                f.skip_ca_check.as_ref(),
            )),
            skip_cn_check: or_default(layers.pick_same(
                "skip_cn_check",
                args.skip_cn_check,
                f.skip_cn_check.as_ref(),
            )),
            ca_file: layers.pick_path("ca_file", args.ca_file.clone(), f.ca_file.as_ref()),
            encryption: layers
                .pick_same("encryption", args.encryption, f.encryption.as_ref())
                .unwrap_or(Setting::default_value(EncryptionMode::Auto)),
            allow_unencrypted: or_default(layers.pick_same(
                "allow_unencrypted",
                args.allow_unencrypted,
                f.allow_unencrypted.as_ref(),
            )),
            url_prefix: layers
                .pick_same("url_prefix", args.url_prefix.clone(), f.url_prefix.as_ref())
                .unwrap_or_else(|| Setting::default_value(DEFAULT_URL_PREFIX.into())),
            trusted_hosts: layers.pick(
                "trusted_hosts",
                args.trusted_hosts.clone(),
                f.trusted_hosts.as_ref(),
                |v| v.clone().into_vec().join(","),
            ),
            resolve: layers
                .pick_same(
                    "resolve",
                    Some(args.resolve.clone()).filter(|r| !r.is_empty()),
                    f.resolve.as_ref(),
                )
                .unwrap_or_else(|| Setting::default_value(Vec::new())),
            kdc: layers.pick_same("kdc", args.kdc.clone(), f.kdc.as_ref()),
            spn_service: layers
                .pick_same(
                    "spn_service",
                    args.spn_service.clone(),
                    f.spn_service.as_ref(),
                )
                .unwrap_or_else(|| Setting::default_value(DEFAULT_SPN_SERVICE.into())),
            connect_timeout: duration(
                layers.pick_same(
                    "connect_timeout",
                    args.connect_timeout,
                    f.connect_timeout.as_ref(),
                ),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            operation_timeout: duration(
                layers.pick_same(
                    "operation_timeout",
                    args.operation_timeout,
                    f.operation_timeout.as_ref(),
                ),
                DEFAULT_OPERATION_TIMEOUT,
            ),
            password_file: layers.pick_path(
                "password_file",
                args.password_file.clone(),
                f.password_file.as_ref(),
            ),
        };
        settings.validate()
    }

    /// The port in effect: the given one, else 5986 with HTTPS and 5985 without.
    pub fn port(&self) -> Setting<u16> {
        self.port.clone().unwrap_or_else(|| {
            Setting::default_value(if self.use_ssl.value {
                DEFAULT_HTTPS_PORT
            } else {
                DEFAULT_HTTP_PORT
            })
        })
    }

    fn validate(mut self) -> Result<Self, CliError> {
        if let Some(port) = &self.port
            && port.value == 0
        {
            return Err(invalid(
                "port",
                port,
                "the port must be between 1 and 65535",
            ));
        }
        let name = &self.configuration_name;
        if name.value.is_empty()
            || name.value.len() > 256
            || name
                .value
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || "/?#&<>\"'".contains(c))
        {
            return Err(invalid(
                "configuration-name",
                name,
                "not a session configuration name (e.g. Microsoft.PowerShell)",
            ));
        }
        if let Some(user) = &self.user
            && (user.value.trim().is_empty() || user.value.chars().any(char::is_control))
        {
            return Err(invalid(
                "user",
                user,
                "the user name is empty or has control characters",
            ));
        }
        if let Some(thumb) = &self.certificate_thumbprint {
            let digits: Vec<char> = thumb
                .value
                .chars()
                .filter(|c| !matches!(c, ' ' | ':'))
                .collect();
            if !matches!(digits.len(), 40 | 64) || !digits.iter().all(char::is_ascii_hexdigit) {
                return Err(invalid(
                    "certificate-thumbprint",
                    thumb,
                    "expected 40 (SHA-1) or 64 (SHA-256) hex digits",
                ));
            }
        }
        let prefix = self.url_prefix.value.trim_matches('/').to_owned();
        if prefix.is_empty()
            || prefix
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
        {
            return Err(invalid(
                "url-prefix",
                &self.url_prefix,
                "expected a URL path such as wsman",
            ));
        }
        self.url_prefix.value = prefix;
        let spn = &self.spn_service;
        if spn.value.is_empty()
            || spn.value.len() > 64
            || !spn
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "spn-service",
                spn,
                "expected a service class such as WSMAN or HTTP",
            ));
        }
        if let Some(kdc) = &self.kdc
            && (kdc.value.trim().is_empty() || kdc.value.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "kdc",
                kdc,
                "expected a host or host:port, e.g. dc1.corp.example",
            ));
        }
        for (key, setting) in [
            ("connect-timeout", &self.connect_timeout),
            ("operation-timeout", &self.operation_timeout),
        ] {
            if setting.value < Duration::from_secs(1) {
                return Err(invalid(key, setting, "must be at least 1s"));
            }
        }
        self.check_conflicts()?;
        if self.authentication.value == AuthMethod::Certificate {
            if !self.use_ssl.value {
                return Err(invalid(
                    "authentication",
                    &self.authentication,
                    "certificate authentication works over HTTPS only: add --use-ssl",
                ));
            }
            if self.certificate_file.is_none() {
                return Err(invalid(
                    "authentication",
                    &self.authentication,
                    "certificate authentication needs --certificate-file (PEM)",
                ));
            }
        }
        Ok(self)
    }

    /// Options that contradict each other (docs/cli.md, "Conflicting options"). Only pairs
    /// given together on the command line are refused: a value from the environment or
    /// psfleet.toml is a default the command line may make moot, and inventory hosts may
    /// need it (an HTTPS host's CA while the command line's hosts use HTTP).
    fn check_conflicts(&self) -> Result<(), CliError> {
        use AuthMethod::{Basic, Certificate};
        let cli = |origin: &Origin| *origin == Origin::CommandLine;
        let no_ssl = !self.use_ssl.value && cli(&self.use_ssl.origin);
        // Everything that only means something over TLS; --use-ssl=false on the command line
        // makes every host HTTP (it beats the inventory).
        let tls_only: [(&str, Option<&Origin>); 5] = [
            (
                "certificate-thumbprint",
                self.certificate_thumbprint.as_ref().map(|s| &s.origin),
            ),
            (
                "skip-ca-check",
                self.skip_ca_check
                    .value
                    .then_some(&self.skip_ca_check.origin),
            ),
            (
                "skip-cn-check",
                self.skip_cn_check
                    .value
                    .then_some(&self.skip_cn_check.origin),
            ),
            ("ca-file", self.ca_file.as_ref().map(|s| &s.origin)),
            (
                "certificate-file",
                self.certificate_file.as_ref().map(|s| &s.origin),
            ),
        ];
        for (key, origin) in tls_only {
            if no_ssl && origin.is_some_and(cli) {
                return Err(conflict(
                    "--use-ssl=false",
                    &format!("--{key}"),
                    "the second is about the TLS of HTTPS connections, and the first makes \
                     every host plain HTTP; drop one of them",
                ));
            }
        }
        if self.encryption.value == EncryptionMode::Never
            && cli(&self.encryption.origin)
            && !self.allow_unencrypted.value
            && cli(&self.allow_unencrypted.origin)
        {
            return Err(conflict(
                "--encryption never",
                "--allow-unencrypted=false",
                "unsealed messages over HTTP are what AllowUnencrypted allows; drop one of them",
            ));
        }
        let auth = self.authentication.value;
        let auth_cli = cli(&self.authentication.origin);
        let auth_text = format!("--authentication {}", auth.name());
        if auth_cli
            && matches!(auth, Basic | Certificate)
            && self.encryption.value == EncryptionMode::Always
            && cli(&self.encryption.origin)
        {
            // Basic has no message encryption (wire-facts 1.3; pypsrp refuses the pair too).
            return Err(conflict(
                &auth_text,
                "--encryption always",
                "only NTLM, Negotiate, Kerberos and CredSSP can seal messages; use TLS \
                 (--use-ssl) with --encryption auto",
            ));
        }
        if auth_cli && auth != Certificate {
            for (key, origin) in [
                (
                    "certificate-file",
                    self.certificate_file.as_ref().map(|s| &s.origin),
                ),
                (
                    "certificate-key-file",
                    self.certificate_key_file.as_ref().map(|s| &s.origin),
                ),
            ] {
                if origin.is_some_and(cli) {
                    return Err(conflict(
                        &auth_text,
                        &format!("--{key}"),
                        "a client certificate is used only by --authentication certificate",
                    ));
                }
            }
        }
        if auth_cli
            && auth == Certificate
            && self.password_file.as_ref().is_some_and(|s| cli(&s.origin))
        {
            return Err(conflict(
                &auth_text,
                "--password-file",
                "certificate authentication uses no password",
            ));
        }
        if let Some(key) = &self.certificate_key_file
            && self.certificate_file.is_none()
        {
            return Err(invalid(
                "certificate-key-file",
                key,
                "a certificate key without --certificate-file: give the client certificate \
                 (PEM) with --certificate-file",
            ));
        }
        if let Some(port) = &self.port
            && cli(&port.origin)
            && cli(&self.use_ssl.origin)
        {
            // Not refused: a listener may sit on any port (PowerShell accepts -UseSSL -Port
            // 5985 too), but the pair is usually a slip.
            let other = if self.use_ssl.value {
                DEFAULT_HTTP_PORT
            } else {
                DEFAULT_HTTPS_PORT
            };
            if port.value == other {
                tracing::warn!(
                    "--port {other} is WinRM's default {} port, and --use-ssl={} asks for {}; \
                     check which listener the hosts have",
                    if self.use_ssl.value { "HTTP" } else { "HTTPS" },
                    self.use_ssl.value,
                    if self.use_ssl.value { "HTTPS" } else { "HTTP" },
                );
            }
        }
        Ok(())
    }

    /// The settings as `key = value (origin)` rows, for `psfleet config show`.
    pub fn rows(&self) -> Vec<Row> {
        vec![
            row("port", &self.port()),
            row("use-ssl", &self.use_ssl),
            row("authentication", &self.authentication),
            row("configuration-name", &self.configuration_name),
            opt_row("user", self.user.as_ref()),
            opt_row(
                "certificate-thumbprint",
                self.certificate_thumbprint.as_ref(),
            ),
            opt_row("certificate-file", self.certificate_file.as_ref()),
            opt_row("certificate-key-file", self.certificate_key_file.as_ref()),
            row("skip-ca-check", &self.skip_ca_check),
            row("skip-cn-check", &self.skip_cn_check),
            opt_row("ca-file", self.ca_file.as_ref()),
            row("encryption", &self.encryption),
            row("allow-unencrypted", &self.allow_unencrypted),
            row("url-prefix", &self.url_prefix),
            opt_row("trusted-hosts", self.trusted_hosts.as_ref()),
            row("resolve", &self.resolve),
            opt_row("kdc", self.kdc.as_ref()),
            row("spn-service", &self.spn_service),
            row("connect-timeout", &self.connect_timeout),
            row("operation-timeout", &self.operation_timeout),
            opt_row("password-file", self.password_file.as_ref()),
        ]
    }
}

/// Which hosts: inventory sources and the `--limit` pattern, merged and validated.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Inventory sources (`-` is standard input).
    pub inventory: Setting<Vec<String>>,
    /// The --limit pattern.
    pub limit: Option<Setting<String>>,
    /// The format every inventory is read in (else guessed per source).
    pub inventory_format: Option<Setting<InventoryFormat>>,
    /// `-e NAME=VALUE` variables (command line only).
    pub extra_vars: Vec<ExtraVar>,
}

impl Selection {
    /// Merges and validates `-i` and `-l`.
    pub fn resolve(args: &SelectArgs, layers: Layers<'_>) -> Result<Self, CliError> {
        let f = &layers.file().values;
        let inventory = layers
            .pick(
                "inventory",
                Some(args.inventory.clone()).filter(|v| !v.is_empty()),
                f.inventory.as_ref(),
                |v| {
                    v.clone()
                        .into_vec()
                        .into_iter()
                        .map(|p| match p.as_str() {
                            "-" => p,
                            _ => layers
                                .file()
                                .path_value(Path::new(&p))
                                .display()
                                .to_string(),
                        })
                        .collect()
                },
            )
            .unwrap_or_else(|| Setting::default_value(Vec::new()));
        let selection = Self {
            inventory,
            limit: layers.pick_same("limit", args.limit.clone(), f.limit.as_ref()),
            inventory_format: layers.pick_same(
                "inventory_format",
                args.inventory_format,
                f.inventory_format.as_ref(),
            ),
            extra_vars: args.extra_vars.clone(),
        };
        if let Some(limit) = &selection.limit
            && limit.value.trim().is_empty()
        {
            return Err(invalid("limit", limit, "the pattern is empty"));
        }
        if selection
            .inventory
            .value
            .iter()
            .filter(|s| *s == "-")
            .count()
            > 1
        {
            return Err(invalid(
                "inventory",
                &selection.inventory,
                "standard input (-) can be read only once",
            ));
        }
        if selection.inventory.value.iter().any(|s| s.is_empty()) {
            return Err(invalid(
                "inventory",
                &selection.inventory,
                "an inventory path is empty",
            ));
        }
        Ok(selection)
    }

    /// The inventory sources, or a usage error when there are none.
    pub fn require_inventory(&self) -> Result<&[String], CliError> {
        if self.inventory.value.is_empty() {
            return Err(CliError::usage(
                "no inventory: give -i FILE (or PSFLEET_INVENTORY, or `inventory` in \
                 psfleet.toml); `-` reads standard input",
            ));
        }
        Ok(&self.inventory.value)
    }

    /// Whether standard input is one of the inventory sources.
    pub fn reads_stdin(&self) -> bool {
        self.inventory.value.iter().any(|s| s == "-")
    }

    /// The settings as rows, for `psfleet config show`.
    pub fn rows(&self) -> Vec<Row> {
        vec![
            row("inventory", &self.inventory),
            opt_row("limit", self.limit.as_ref()),
            opt_row("inventory-format", self.inventory_format.as_ref()),
        ]
    }
}

/// How to spread the work over the fleet, merged and validated.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Which hosts.
    pub select: Selection,
    /// Hosts in flight at once.
    pub forks: Setting<usize>,
    /// Global connection rate.
    pub rate: Option<Setting<RateLimit>>,
    /// Per-host connection rate.
    pub per_host_rate: Option<Setting<RateLimit>>,
    /// Per-host deadline.
    pub timeout: Option<Setting<Duration>>,
    /// Retries after transient failures.
    pub retries: Setting<u32>,
    /// Assumed MaxShellsPerUser.
    pub max_shells_default: Setting<u32>,
    /// The run to continue (command line only).
    pub resume: Option<ResumeFrom>,
    /// Rerun hosts in flight when the resumed run stopped.
    pub rerun_interrupted: Setting<bool>,
}

impl FleetSettings {
    /// Merges and validates the fleet options.
    pub fn resolve(args: &FleetArgs, layers: Layers<'_>) -> Result<Self, CliError> {
        Self::resolve_parts(&args.select, &args.schedule, Some(&args.resume), layers)
    }

    /// Merges and validates the parts a command has (`cleanup` resumes nothing).
    pub fn resolve_parts(
        select: &SelectArgs,
        args: &ScheduleArgs,
        resume: Option<&ResumeArgs>,
        layers: Layers<'_>,
    ) -> Result<Self, CliError> {
        let f = &layers.file().values;
        let select = Selection::resolve(select, layers)?;
        let no_resume = ResumeArgs::default();
        let resume_args = resume.unwrap_or(&no_resume);
        let defaults = psfleet_engine::retry::RetryPolicy::default();
        let settings = Self {
            select,
            forks: layers
                .pick_same("forks", args.forks, f.forks.as_ref())
                .unwrap_or(Setting::default_value(
                    psfleet_engine::scheduler::DEFAULT_FORKS,
                )),
            rate: layers.pick("rate", args.rate, f.rate.as_ref(), |r| r.0),
            per_host_rate: layers.pick(
                "per_host_rate",
                args.per_host_rate,
                f.per_host_rate.as_ref(),
                |r| r.0,
            ),
            timeout: layers
                .pick_same("timeout", args.timeout, f.timeout.as_ref())
                .map(|s| Setting {
                    value: s.value.0,
                    origin: s.origin,
                }),
            retries: layers
                .pick_same("retries", args.retries, f.retries.as_ref())
                .unwrap_or(Setting::default_value(
                    defaults.max_attempts.saturating_sub(1),
                )),
            max_shells_default: layers
                .pick_same(
                    "max_shells_default",
                    args.max_shells_default,
                    f.max_shells_default.as_ref(),
                )
                .unwrap_or(Setting::default_value(
                    psfleet_engine::budget::DEFAULT_MAX_SHELLS,
                )),
            resume: resume_args.resume.clone(),
            rerun_interrupted: layers
                .pick_same(
                    "rerun_interrupted",
                    resume_args.rerun_interrupted,
                    f.rerun_interrupted.as_ref(),
                )
                .unwrap_or(Setting::default_value(false)),
        };
        settings.validate()
    }

    fn validate(self) -> Result<Self, CliError> {
        if !(1..=MAX_FORKS).contains(&self.forks.value) {
            return Err(invalid(
                "forks",
                &self.forks,
                format!("must be between 1 and {MAX_FORKS}"),
            ));
        }
        if self.retries.value > MAX_RETRIES {
            return Err(invalid(
                "retries",
                &self.retries,
                format!("must be at most {MAX_RETRIES}"),
            ));
        }
        if !(1..=MAX_SHELLS_DEFAULT).contains(&self.max_shells_default.value) {
            return Err(invalid(
                "max-shells-default",
                &self.max_shells_default,
                format!("must be between 1 and {MAX_SHELLS_DEFAULT}"),
            ));
        }
        if let Some(timeout) = &self.timeout
            && timeout.value < Duration::from_secs(1)
        {
            return Err(invalid("timeout", timeout, "must be at least 1s"));
        }
        if self.rerun_interrupted.value
            && self.rerun_interrupted.origin == Origin::CommandLine
            && self.resume.is_none()
        {
            return Err(invalid(
                "rerun-interrupted",
                &self.rerun_interrupted,
                "only makes sense with --resume RUN|last",
            ));
        }
        Ok(self)
    }

    /// The settings as rows, for `psfleet config show`.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = self.select.rows();
        rows.extend([
            row("forks", &self.forks),
            opt_row("rate", self.rate.as_ref()),
            opt_row("per-host-rate", self.per_host_rate.as_ref()),
            opt_row("timeout", self.timeout.as_ref()),
            row("retries", &self.retries),
            row("max-shells-default", &self.max_shells_default),
            row("rerun-interrupted", &self.rerun_interrupted),
        ]);
        rows
    }

    /// The scheduler's configuration.
    pub fn scheduler_config(&self) -> psfleet_engine::scheduler::SchedulerConfig {
        let retry = psfleet_engine::retry::RetryPolicy {
            max_attempts: self.retries.value.saturating_add(1),
            ..Default::default()
        };
        psfleet_engine::scheduler::SchedulerConfig {
            forks: self.forks.value,
            rate: self.rate.as_ref().map(|r| r.value),
            per_host_rate: self.per_host_rate.as_ref().map(|r| r.value),
            default_max_shells: self.max_shells_default.value,
            timeout: self.timeout.as_ref().map(|t| t.value),
            retry,
            ..Default::default()
        }
    }
}

/// What to show while running and print at the end, merged.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    /// Standard output's format.
    pub output: Setting<OutputFormat>,
    /// Plain progress lines instead of bars.
    pub no_progress: Setting<bool>,
    /// Time between plain progress lines.
    pub progress_interval: Setting<Duration>,
}

impl OutputSettings {
    /// Merges the output options.
    pub fn resolve(args: &OutputArgs, layers: Layers<'_>) -> Result<Self, CliError> {
        let f = &layers.file().values;
        let settings = Self {
            output: layers
                .pick_same("output", args.output, f.output.as_ref())
                .unwrap_or(Setting::default_value(OutputFormat::Text)),
            no_progress: layers
                .pick_same("no_progress", args.no_progress, f.no_progress.as_ref())
                .unwrap_or(Setting::default_value(false)),
            progress_interval: layers
                .pick_same(
                    "progress_interval",
                    args.progress_interval,
                    f.progress_interval.as_ref(),
                )
                .map_or(Setting::default_value(DEFAULT_PROGRESS_INTERVAL), |s| {
                    Setting {
                        value: s.value.0,
                        origin: s.origin,
                    }
                }),
        };
        if settings.progress_interval.value < Duration::from_millis(100) {
            return Err(invalid(
                "progress-interval",
                &settings.progress_interval,
                "must be at least 100ms",
            ));
        }
        Ok(settings)
    }

    /// The settings as rows, for `psfleet config show`.
    pub fn rows(&self) -> Vec<Row> {
        vec![
            row("output", &self.output),
            row("no-progress", &self.no_progress),
            row("progress-interval", &self.progress_interval),
        ]
    }
}

/// One `key = value  # origin` row of `psfleet config show`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The key (the long option name).
    pub key: &'static str,
    /// The value as TOML (`None`: not set).
    pub value: Option<toml::Value>,
    /// Where it came from (`None`: not set).
    pub origin: Option<Origin>,
}

/// A setting's value as TOML, as it would be written in psfleet.toml.
pub trait AsToml {
    /// The TOML value.
    fn as_toml(&self) -> toml::Value;
}

impl AsToml for bool {
    fn as_toml(&self) -> toml::Value {
        toml::Value::Boolean(*self)
    }
}

macro_rules! integer_as_toml {
    ($($t:ty),*) => {$(
        impl AsToml for $t {
            fn as_toml(&self) -> toml::Value {
                toml::Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
integer_as_toml!(u16, u32, usize);

macro_rules! text_as_toml {
    ($($t:ty => $f:expr),* $(,)?) => {$(
        impl AsToml for $t {
            fn as_toml(&self) -> toml::Value {
                let f: fn(&$t) -> String = $f;
                toml::Value::String(f(self))
            }
        }
    )*};
}
text_as_toml!(
    String => Clone::clone,
    PathBuf => |p| p.display().to_string(),
    Duration => |d| DurationArg(*d).to_string(),
    RateLimit => ToString::to_string,
    ResolveEntry => ToString::to_string,
    AuthMethod => |a| a.name().to_owned(),
    EncryptionMode => |e| e.name().to_owned(),
    OutputFormat => |o| o.name().to_owned(),
    ColorChoice => |c| c.name().to_owned(),
    InventoryFormat => |f| f.name().to_owned(),
);

impl<T: AsToml> AsToml for Vec<T> {
    fn as_toml(&self) -> toml::Value {
        toml::Value::Array(self.iter().map(AsToml::as_toml).collect())
    }
}

/// The row of a setting (an empty list left at its default counts as not set).
pub fn row<T: AsToml>(key: &'static str, s: &Setting<T>) -> Row {
    let value = s.value.as_toml();
    let empty_default =
        s.origin == Origin::Default && matches!(&value, toml::Value::Array(a) if a.is_empty());
    if empty_default {
        return Row {
            key,
            value: None,
            origin: None,
        };
    }
    Row {
        key,
        value: Some(value),
        origin: Some(s.origin.clone()),
    }
}

/// The row of an optional setting.
pub fn opt_row<T: AsToml>(key: &'static str, s: Option<&Setting<T>>) -> Row {
    match s {
        Some(s) => row(key, s),
        None => Row {
            key,
            value: None,
            origin: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_follows_xdg_then_home() {
        let env = |k: &str| match k {
            "XDG_STATE_HOME" => Some(OsString::from("/state")),
            "HOME" => Some(OsString::from("/home/u")),
            _ => None,
        };
        assert_eq!(
            default_state_dir(&env),
            Some(PathBuf::from("/state/psfleet"))
        );
        let relative = |k: &str| match k {
            "XDG_STATE_HOME" => Some(OsString::from("rel")),
            "HOME" => Some(OsString::from("/home/u")),
            _ => None,
        };
        assert_eq!(
            default_state_dir(&relative),
            Some(PathBuf::from("/home/u/.local/state/psfleet"))
        );
        assert_eq!(default_state_dir(&|_| None), None);
    }

    #[test]
    fn errors_name_the_origin_of_the_value() {
        let cli = Setting {
            value: 0usize,
            origin: Origin::CommandLine,
        };
        assert_eq!(invalid("forks", &cli, "bad").to_string(), "--forks: bad");
        let env = Setting {
            value: 0usize,
            origin: Origin::Env(env_name("forks")),
        };
        assert_eq!(
            invalid("forks", &env, "bad").to_string(),
            "PSFLEET_FORKS: bad"
        );
        let file = Setting {
            value: 0usize,
            origin: Origin::File {
                path: "/p/psfleet.toml".into(),
                line: 7,
            },
        };
        assert_eq!(
            invalid("forks", &file, "bad").to_string(),
            "/p/psfleet.toml:7: key `forks`: bad"
        );
    }
}
