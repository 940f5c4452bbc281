//! The configuration file, `psfleet.toml` (docs/cli.md, "Configuration file").
//!
//! The first file found is used, whole (files are not merged): `--config FILE` (or
//! `PSFLEET_CONFIG`; it must exist), else `./psfleet.toml`, else
//! `$XDG_CONFIG_HOME/psfleet/psfleet.toml` (`~/.config/psfleet/psfleet.toml` without
//! XDG_CONFIG_HOME). Its keys are the long option names (`forks = 64`, `use-ssl = true`);
//! relative paths in it are relative to the file's own directory, so a project directory can
//! carry its inventory next to its configuration.
//!
//! Every error names the file, the line and the key. A `password` key is refused: secrets
//! come from PSFLEET_PASSWORD, `password-file` or the prompt, never from a file others may
//! read in a repository.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use psfleet_engine::scheduler::RateLimit;
use serde::Deserialize;
use toml::Spanned;

use crate::options::{
    AuthMethod, ColorChoice, DurationArg, EncryptionMode, InventoryFormat, OutputFormat,
    ResolveEntry,
};

/// The file name searched for in the working directory and the configuration directory.
pub const FILE_NAME: &str = "psfleet.toml";

/// The largest configuration file read: it holds a few dozen keys.
const MAX_BYTES: u64 = 1024 * 1024;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` names a file that does not exist.
    #[error(
        "{path}: the configuration file given with --config (or PSFLEET_CONFIG) does not exist"
    )]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any configuration should be.
    #[error("{path}: the configuration file is larger than {MAX_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong kind.
    #[error("{}", located(path, *line, key.as_deref(), message))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (from 1; 0 when unknown).
        line: usize,
        /// The key, when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

fn located(path: &Path, line: usize, key: Option<&str>, message: &str) -> String {
    let mut text = path.display().to_string();
    if line > 0 {
        text.push_str(&format!(":{line}"));
    }
    if let Some(key) = key {
        text.push_str(&format!(": key `{key}`"));
    }
    format!("{text}: {message}")
}

/// The values a configuration file may set, each with its place in the file.
///
/// Field names are the long option names (kebab-case in the file).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(missing_docs)] // Each field is the option of the same name (docs/cli.md).
pub struct FileValues {
    // Global.
    pub state_dir: Option<Spanned<PathBuf>>,
    pub color: Option<Spanned<ColorChoice>>,
    pub log: Option<Spanned<String>>,
    // Connection.
    pub port: Option<Spanned<u16>>,
    pub use_ssl: Option<Spanned<bool>>,
    pub authentication: Option<Spanned<AuthMethod>>,
    pub configuration_name: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub certificate_thumbprint: Option<Spanned<String>>,
    pub certificate_file: Option<Spanned<PathBuf>>,
    pub certificate_key_file: Option<Spanned<PathBuf>>,
    pub skip_ca_check: Option<Spanned<bool>>,
    pub skip_cn_check: Option<Spanned<bool>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub encryption: Option<Spanned<EncryptionMode>>,
    pub allow_unencrypted: Option<Spanned<bool>>,
    pub url_prefix: Option<Spanned<String>>,
    pub trusted_hosts: Option<Spanned<OneOrMany>>,
    pub resolve: Option<Spanned<Vec<ResolveEntry>>>,
    pub kdc: Option<Spanned<String>>,
    pub spn_service: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<DurationArg>>,
    pub operation_timeout: Option<Spanned<DurationArg>>,
    pub password_file: Option<Spanned<PathBuf>>,
    /// Present only to be refused with an explanation.
    pub password: Option<Spanned<toml::Value>>,
    // Fleet.
    pub inventory: Option<Spanned<OneOrMany>>,
    pub limit: Option<Spanned<String>>,
    pub inventory_format: Option<Spanned<InventoryFormat>>,
    pub forks: Option<Spanned<usize>>,
    pub rate: Option<Spanned<RateValue>>,
    pub per_host_rate: Option<Spanned<RateValue>>,
    pub timeout: Option<Spanned<DurationArg>>,
    pub retries: Option<Spanned<u32>>,
    pub max_shells_default: Option<Spanned<u32>>,
    pub rerun_interrupted: Option<Spanned<bool>>,
    // Output.
    pub output: Option<Spanned<OutputFormat>>,
    pub no_progress: Option<Spanned<bool>>,
    pub progress_interval: Option<Spanned<DurationArg>>,
}

/// Every key [`FileValues`] accepts, for suggestions and the documentation test.
pub const KEYS: &[&str] = &[
    "state-dir",
    "color",
    "log",
    "port",
    "use-ssl",
    "authentication",
    "configuration-name",
    "user",
    "certificate-thumbprint",
    "certificate-file",
    "certificate-key-file",
    "skip-ca-check",
    "skip-cn-check",
    "ca-file",
    "encryption",
    "allow-unencrypted",
    "url-prefix",
    "trusted-hosts",
    "resolve",
    "kdc",
    "spn-service",
    "connect-timeout",
    "operation-timeout",
    "password-file",
    "inventory",
    "limit",
    "inventory-format",
    "forks",
    "rate",
    "per-host-rate",
    "timeout",
    "retries",
    "max-shells-default",
    "rerun-interrupted",
    "output",
    "no-progress",
    "progress-interval",
];

/// A string, or an array of strings (`inventory`, `trusted-hosts`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// A rate as on the command line (`"50/s"`, `"300/m:20"`), or a number per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateValue(pub RateLimit);

impl<'de> Deserialize<'de> for RateValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            PerSecond(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a rate such as \"50/s\" or \"300/m:20\"")
        })? {
            Raw::PerSecond(n) => n.to_string(),
            Raw::Text(text) => text,
        };
        text.parse()
            .map(RateValue)
            .map_err(serde::de::Error::custom)
    }
}

/// A loaded configuration file (or none).
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// The file, if one was found.
    pub path: Option<PathBuf>,
    text: String,
    /// Its values.
    pub values: FileValues,
}

impl ConfigFile {
    /// No file: every value comes from the command line, the environment or the defaults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses `text` as the file `path`.
    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        let values: FileValues = toml::from_str(&text).map_err(|e| {
            let span = e.span();
            let line = span.as_ref().map_or(0, |s| line_of(&text, s.start));
            let key = span.as_ref().and_then(|s| key_at(&text, s.start));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                key,
                message: friendly(e.message()),
            }
        })?;
        let file = Self {
            path: Some(path.to_owned()),
            text,
            values,
        };
        if let Some(password) = &file.values.password {
            return Err(file.invalid(
                password,
                "password",
                "a password in the configuration file is refused (anyone who can read the \
                 file, or its repository, has it). Use PSFLEET_PASSWORD, password-file = \
                 \"FILE\" (mode 600) or the prompt",
            ));
        }
        Ok(file)
    }

    /// The line of a value in the file (from 1).
    pub fn line<T>(&self, value: &Spanned<T>) -> usize {
        line_of(&self.text, value.span().start)
    }

    /// An error about `value` of `key`.
    pub fn invalid<T>(
        &self,
        value: &Spanned<T>,
        key: &str,
        message: impl fmt::Display,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone().unwrap_or_default(),
            line: self.line(value),
            key: Some(key.to_owned()),
            message: message.to_string(),
        }
    }

    /// A path from the file: relative ones are relative to the file's directory.
    pub fn path_value(&self, path: &Path) -> PathBuf {
        match self.path.as_deref().and_then(Path::parent) {
            Some(dir) if path.is_relative() && !dir.as_os_str().is_empty() => dir.join(path),
            _ => path.to_owned(),
        }
    }
}

/// Where the configuration file is looked for, in order, given `--config`, the working
/// directory and the environment.
pub fn candidates(
    explicit: Option<&Path>,
    cwd: &Path,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Vec<PathBuf> {
    if let Some(explicit) = explicit {
        return vec![explicit.to_owned()];
    }
    let mut list = vec![cwd.join(FILE_NAME)];
    let config_home = env("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            env("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        });
    if let Some(dir) = config_home {
        list.push(dir.join("psfleet").join(FILE_NAME));
    }
    list
}

/// Finds and loads the configuration file (see the module documentation).
pub fn discover(
    explicit: Option<&Path>,
    cwd: &Path,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<ConfigFile, ConfigError> {
    for path in candidates(explicit, cwd, env) {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => return load(&path),
            Ok(_) | Err(_) if explicit.is_some() => {
                return Err(ConfigError::NotFound { path });
            }
            _ => {}
        }
    }
    Ok(ConfigFile::none())
}

/// Loads one file.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    use std::io::Read as _;
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    parse_bytes(path, bytes)
}

/// Reads `bytes` as the file `path`: at most 1 MiB, UTF-8 with an optional byte-order mark,
/// then [`ConfigFile::parse`]. (The fuzz target `config` drives this.)
pub fn parse_bytes(path: &Path, bytes: Vec<u8>) -> Result<ConfigFile, ConfigError> {
    if bytes.len() as u64 > MAX_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of_bytes(e.as_bytes(), e.utf8_error().valid_up_to()),
        key: None,
        message: "the file is not UTF-8; save it as UTF-8".into(),
    })?;
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    ConfigFile::parse(path, text)
}

/// The line (from 1) holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    line_of_bytes(text.as_bytes(), offset)
}

fn line_of_bytes(bytes: &[u8], offset: usize) -> usize {
    let end = offset.min(bytes.len());
    bytes
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// The key of the `key = value` line holding byte `offset`, if the line has that shape.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plain.then(|| key.to_owned())
}

/// Rewrites serde's messages where they do not help (the unknown-key one lists every key).
fn friendly(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let mut text = format!("unknown key `{name}`");
        if let Some(close) = closest_key(name) {
            text.push_str(&format!(" (did you mean `{close}`?)"));
        }
        text.push_str("; the keys are the long option names, listed in docs/cli.md");
        return text;
    }
    message.to_owned()
}

/// The known key nearest to `name` (at most 3 edits away; `_` counts as `-`).
fn closest_key(name: &str) -> Option<&'static str> {
    let name = name.replace('_', "-");
    KEYS.iter()
        .map(|k| (edit_distance(&name, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (keys are short ASCII; `name` is cut to 64 bytes).
fn edit_distance(a: &str, b: &str) -> usize {
    let a = &a.as_bytes()[..a.len().min(64)];
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let left = row.get(j).copied().unwrap_or(usize::MAX);
            let value = (above.saturating_add(1))
                .min(left.saturating_add(1))
                .min(prev.saturating_add(cost));
            prev = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("/etc/x/psfleet.toml"), text.to_owned())
    }

    #[test]
    fn values_parse_with_their_lines() {
        let file = parse(
            "# comment\nforks = 64\nuse-ssl = true\nrate = \"50/s:5\"\ntimeout = \"2m\"\n\
             inventory = [\"a.ini\", \"/abs/b.csv\"]\nresolve = [\"srv1=10.0.0.1\"]\n\
             connect-timeout = 12\nauthentication = \"kerberos\"\n",
        )
        .unwrap();
        let v = &file.values;
        let forks = v.forks.as_ref().unwrap();
        assert_eq!(*forks.get_ref(), 64);
        assert_eq!(file.line(forks), 2);
        assert_eq!(file.line(v.timeout.as_ref().unwrap()), 5);
        assert_eq!(v.rate.as_ref().unwrap().get_ref().0.to_string(), "50/s:5");
        assert_eq!(
            v.connect_timeout.as_ref().unwrap().get_ref().0,
            std::time::Duration::from_secs(12)
        );
        assert_eq!(
            *v.authentication.as_ref().unwrap().get_ref(),
            AuthMethod::Kerberos
        );
        let inv = v.inventory.clone().unwrap().into_inner().into_vec();
        assert_eq!(
            file.path_value(Path::new(&inv[0])),
            Path::new("/etc/x/a.ini")
        );
        assert_eq!(file.path_value(Path::new(&inv[1])), Path::new("/abs/b.csv"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let err = parse("forks = 64\n\nport = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/x/psfleet.toml:3: key `port`: "),
            "{err}"
        );
        let err = parse("forks = 64\nprot = 5986\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "/etc/x/psfleet.toml:2: key `prot`: unknown key `prot` (did you mean `port`?); the \
             keys are the long option names, listed in docs/cli.md"
        );
        let err = parse("rate = \"50/x\"\n").unwrap_err().to_string();
        assert!(
            err.starts_with("/etc/x/psfleet.toml:1: key `rate`: invalid rate"),
            "{err}"
        );
        let err = parse("a\ntimeout = \"5 parsecs\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/x/psfleet.toml:1: "), "{err}");
        let err = parse("timeout = \"5 parsecs\"\n").unwrap_err().to_string();
        assert!(
            err.starts_with("/etc/x/psfleet.toml:1: key `timeout`: invalid duration"),
            "{err}"
        );
        let err = parse("authentication = \"digest\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1: key `authentication`: "), "{err}");
    }

    #[test]
    fn a_password_key_is_refused_without_echoing_it() {
        let err = parse("user = \"FLEET\\\\ops\"\npassword = \"hunter2\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/x/psfleet.toml:2: key `password`: "),
            "{err}"
        );
        assert!(err.contains("PSFLEET_PASSWORD"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn discovery_prefers_explicit_then_cwd_then_xdg() {
        let env = |k: &str| match k {
            "XDG_CONFIG_HOME" => Some(OsString::from("/cfg")),
            "HOME" => Some(OsString::from("/home/u")),
            _ => None,
        };
        let cwd = Path::new("/work");
        assert_eq!(
            candidates(None, cwd, &env),
            [
                PathBuf::from("/work/psfleet.toml"),
                PathBuf::from("/cfg/psfleet/psfleet.toml")
            ]
        );
        let home_only = |k: &str| (k == "HOME").then(|| OsString::from("/home/u"));
        assert_eq!(
            candidates(None, cwd, &home_only)[1],
            PathBuf::from("/home/u/.config/psfleet/psfleet.toml")
        );
        assert_eq!(
            candidates(Some(Path::new("x.toml")), cwd, &env),
            [PathBuf::from("x.toml")]
        );
        let err = discover(Some(Path::new("/nonexistent/p.toml")), cwd, &env).unwrap_err();
        assert!(matches!(err, ConfigError::NotFound { .. }), "{err}");
        let none = discover(None, Path::new("/nonexistent"), &|_| None).unwrap();
        assert!(none.path.is_none());
    }

    #[test]
    fn every_key_is_a_field() {
        for key in KEYS {
            let text = format!("{key} = 0\n");
            if let Err(ConfigError::Invalid { message, .. }) = parse(&text) {
                assert!(!message.starts_with("unknown key"), "{key}: {message}");
            }
        }
        assert_eq!(closest_key("use_ssl"), Some("use-ssl"));
        assert_eq!(closest_key("completely-different"), None);
    }
}
