//! Where the password comes from: never the command line (docs/cli.md, "Credentials").
//!
//! 1. `--password-file FILE` given on the command line;
//! 2. a host's reference in the inventory (`env:NAME`, `file:PATH`, `prompt`, or
//!    `kerberos-cache`: no password, the TGT of the Kerberos ticket cache `kinit` filled,
//!    `$KRB5CCNAME` or `/tmp/krb5cc_<uid>`; [`CredentialCache::for_host`]);
//! 3. the `PSFLEET_PASSWORD` environment variable;
//! 4. `password-file` from `PSFLEET_PASSWORD_FILE` or the configuration file;
//! 5. for Kerberos and Negotiate, the ticket cache when it holds a current TGT for the user
//!    (what Invoke-Command does with the logon session's tickets);
//! 6. a prompt on the terminal (no echo), when the method needs a password and there is one.
//!
//! A password file must not be readable or writable by group or others (as ssh insists for
//! keys): a file anyone can read is a password anyone has. `--password` on the command line
//! is refused before anything else is parsed, without repeating the value, because argv is
//! visible to every user of the machine (`ps`, /proc) and lands in shell history.
//!
//! The password only ever lives in an [`engine::auth::Credential`](Credential), whose `Debug`
//! is redacted.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use psfleet_engine::auth::Credential;
use psfleet_engine::ticket_cache::{TicketCache, TicketCacheError};
use psfleet_inventories::SecretRef;

use crate::options::{AuthMethod, PasswordNeed};
use crate::settings::{ConnectionSettings, Origin};
use crate::tty::{PasswordPrompt, PromptOutcome};

/// The largest password file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The explanation printed when a password is given on the command line.
pub const PASSWORD_ON_COMMAND_LINE: &str = "\
a password on the command line is refused: every user of this machine can read it (ps, \
/proc) and it stays in your shell history. Give it one of three ways:
  1. the PSFLEET_PASSWORD environment variable (export it from a secret store, e.g. \
PSFLEET_PASSWORD=\"$(pass show fleet)\");
  2. --password-file FILE: the first line of FILE, which must not be readable by group or \
others (chmod 600 FILE);
  3. nothing: psfleet asks on the terminal, without echo.";

/// Where the password came from (for a log line; never the password itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `PSFLEET_PASSWORD`.
    Env,
    /// Another environment variable, named by an inventory reference (`env:NAME`).
    EnvVar(String),
    /// A password file.
    File(PathBuf),
    /// The terminal prompt.
    Prompt,
    /// No password: the TGT of this Kerberos ticket cache.
    TicketCache(PathBuf),
}

/// What the connection will authenticate with.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user and password, when the method uses them (`None`: certificate
    /// authentication).
    pub credential: Option<Credential>,
    /// Where the password came from.
    pub source: Option<PasswordSource>,
}

/// Why no usable credential could be put together.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// `--password` was on the command line.
    #[error("{PASSWORD_ON_COMMAND_LINE}")]
    OnCommandLine,
    /// The method needs a user name and none was given.
    #[error(
        "--authentication {method} needs a user: give --user DOMAIN\\user (or user@REALM), \
         PSFLEET_USER, or `user` in psfleet.toml"
    )]
    NoUser {
        /// The method.
        method: &'static str,
    },
    /// The password file is readable or writable by group or others.
    #[error(
        "{path}: the password file has mode {mode:04o}, so group or others can read or write \
         it; run `chmod 600 {path}`",
        path = .path.display()
    )]
    FileTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The password file could not be read.
    #[error("{path}: cannot read the password file: {source}", path = .path.display())]
    FileRead {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The password file's first line is empty, or the file is not UTF-8.
    #[error("{path}: the password file {problem}", path = .path.display())]
    FileContent {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: &'static str,
    },
    /// No password was given, and there is no terminal to ask on.
    #[error(
        "a password is needed for {user}, and there is no terminal to ask on: set \
         PSFLEET_PASSWORD or give --password-file FILE"
    )]
    NoTerminal {
        /// The user.
        user: String,
    },
    /// The prompt was cancelled (Ctrl-C or Ctrl-D).
    #[error("the password prompt was cancelled")]
    Cancelled,
    /// The terminal could not be read.
    #[error("cannot read the password from the terminal: {0}")]
    Prompt(#[source] std::io::Error),
    /// The ticket cache cannot be used (missing, unreadable, expired, no TGT).
    #[error(transparent)]
    TicketCache(#[from] TicketCacheError),
    /// `kerberos-cache` with a method that needs a password.
    #[error(
        "the password reference kerberos-cache works with --authentication kerberos or \
         negotiate, not {method}: a ticket cache holds Kerberos tickets, not a password"
    )]
    TicketCacheMethod {
        /// The method.
        method: &'static str,
    },
    /// The ticket cache belongs to another user than the one configured.
    #[error(
        "{path}: the ticket cache holds tickets for {principal}, but the user is {user}; run \
         `kinit {user}` or drop the user setting",
        path = .path.display()
    )]
    TicketCacheUser {
        /// The cache.
        path: PathBuf,
        /// Its principal.
        principal: String,
        /// The configured user.
        user: String,
    },
    /// An inventory's `env:NAME` reference names a variable that is not set.
    #[error("the inventory's password reference env:{name} names an unset environment variable")]
    EnvNotSet {
        /// The variable.
        name: String,
    },
    /// A host's credential could not be put together.
    #[error("{host}: {source}")]
    ForHost {
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: Box<CredentialError>,
    },
    /// The user name is not one Windows accepts.
    #[error("--user: {0}")]
    InvalidUser(#[source] psfleet_engine::auth::AuthError),
}

/// Whether argv holds a password: a password option (`--password`, `--password=...`), or an
/// extra variable named like a password (`-e ansible_password=...`). Looked for before clap
/// parses anything, so that no error message can echo the value. Values of `--argument`,
/// `-c/--script` and `--cmd`, and everything after `--`, are data, not options.
pub fn password_on_command_line(args: &[OsString]) -> bool {
    let secret_var = |assignment: &str| {
        assignment
            .split_once('=')
            .is_some_and(|(name, _)| psfleet_inventories::is_secret_name(name.trim()))
    };
    let mut previous: Option<&str> = None;
    for arg in args.iter().skip(1) {
        let Some(text) = arg.to_str() else {
            previous = None;
            continue;
        };
        match previous {
            Some("--argument" | "-c" | "--script" | "--cmd") => {
                previous = None;
                continue;
            }
            Some("-e" | "--extra-var") if secret_var(text) => return true,
            _ => {}
        }
        if text == "--" {
            return false;
        }
        if text == "--password" || text.starts_with("--password=") {
            return true;
        }
        if let Some(rest) = text
            .strip_prefix("--extra-var=")
            .or_else(|| text.strip_prefix("-e"))
            && secret_var(rest)
        {
            return true;
        }
        previous = Some(text);
    }
    false
}

/// Puts together the credential `conn` asks for, reading the password from the first
/// source that has one (see the module documentation).
pub fn obtain(
    conn: &ConnectionSettings,
    env: &dyn Fn(&str) -> Option<OsString>,
    prompt: &mut dyn PasswordPrompt,
) -> Result<Credentials, CredentialError> {
    let cli_file = conn
        .password_file
        .as_ref()
        .filter(|f| f.origin == Origin::CommandLine)
        .map(|f| SecretRef::File(f.value.clone()));
    obtain_for(
        conn.authentication.value,
        conn.user.as_ref().map(|u| u.value.as_str()),
        cli_file.as_ref(),
        conn,
        env,
        prompt,
    )
}

/// The credential of one inventory host: its method and user as resolved (command line,
/// inventory, defaults), and its password reference when it has one (`--password-file` on
/// the command line, or the inventory's `env:`/`file:`/`prompt`/`kerberos-cache`); without
/// one, `PSFLEET_PASSWORD`, then the configured `password-file`, then the prompt.
pub fn obtain_for(
    method: AuthMethod,
    user: Option<&str>,
    secret: Option<&SecretRef>,
    conn: &ConnectionSettings,
    env: &dyn Fn(&str) -> Option<OsString>,
    prompt: &mut dyn PasswordPrompt,
) -> Result<Credentials, CredentialError> {
    let none = || Credentials {
        credential: None,
        source: None,
    };
    let need = method.password();
    if need == PasswordNeed::Never {
        return Ok(none());
    }
    if secret == Some(&SecretRef::KerberosCache) {
        if !matches!(method, AuthMethod::Kerberos | AuthMethod::Negotiate) {
            return Err(CredentialError::TicketCacheMethod {
                method: method.name(),
            });
        }
        return from_ticket_cache(user, env);
    }
    let user = match user {
        Some(user) => user.to_owned(),
        None => {
            return Err(CredentialError::NoUser {
                method: method.name(),
            });
        }
    };
    let ask = |prompt: &mut dyn PasswordPrompt| {
        let text = format!("Password for {user}: ");
        match prompt.ask(&text) {
            Ok(Some(PromptOutcome::Entered(p))) => Ok((p, PasswordSource::Prompt)),
            Ok(Some(PromptOutcome::Cancelled)) => Err(CredentialError::Cancelled),
            Ok(None) => Err(CredentialError::NoTerminal { user: user.clone() }),
            Err(e) => Err(CredentialError::Prompt(e)),
        }
    };
    let from_file =
        |path: &Path| read_password_file(path).map(|p| (p, PasswordSource::File(path.to_owned())));
    let from_env = |name: &str| -> Result<Option<(String, PasswordSource)>, CredentialError> {
        match env(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(value) => value
                .into_string()
                .map(|text| Some((text, PasswordSource::EnvVar(name.to_owned()))))
                .map_err(|_| CredentialError::FileContent {
                    path: PathBuf::from(format!("${name}")),
                    problem: "is not UTF-8",
                }),
        }
    };
    let found = match secret {
        Some(SecretRef::File(path)) => Some(from_file(path)?),
        Some(SecretRef::Env(name)) => {
            Some(from_env(name)?.ok_or_else(|| CredentialError::EnvNotSet { name: name.clone() })?)
        }
        Some(SecretRef::Prompt) => Some(ask(prompt)?),
        Some(SecretRef::KerberosCache) => return from_ticket_cache(Some(&user), env),
        None => match from_env("PSFLEET_PASSWORD")? {
            Some((text, _)) => Some((text, PasswordSource::Env)),
            None => match &conn.password_file {
                Some(file) => Some(from_file(&file.value)?),
                None => None,
            },
        },
    };
    if found.is_none()
        && matches!(method, AuthMethod::Kerberos | AuthMethod::Negotiate)
        && let Ok(credentials) = from_ticket_cache(Some(&user), env)
    {
        return Ok(credentials);
    }
    let (password, source) = match found {
        Some(found) => found,
        None => ask(prompt)?,
    };
    let credential = Credential::new(&user, password).map_err(CredentialError::InvalidUser)?;
    Ok(Credentials {
        credential: Some(credential),
        source: Some(source),
    })
}

/// The credential of the ticket cache `$KRB5CCNAME` (else `/tmp/krb5cc_<uid>`) names,
/// checked now (readable, a current AES TGT, the configured user's) so that a missing
/// `kinit` stops the run before any host is touched.
fn from_ticket_cache(
    user: Option<&str>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Credentials, CredentialError> {
    let path = TicketCache::default_path(|name| env(name).and_then(|v| v.into_string().ok()))?;
    let cache = TicketCache::read(&path)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    cache.tgt(now)?;
    if let Some(user) = user {
        let wanted = Credential::new(user, String::new()).map_err(CredentialError::InvalidUser)?;
        if !cache.belongs_to(wanted.username()) {
            return Err(CredentialError::TicketCacheUser {
                path,
                principal: cache.principal.to_string(),
                user: user.to_owned(),
            });
        }
    }
    let credential = Credential::from_ticket_cache(cache).map_err(CredentialError::InvalidUser)?;
    Ok(Credentials {
        credential: Some(credential),
        source: Some(PasswordSource::TicketCache(path)),
    })
}

/// The method of an inventory host, as psfleet's option value.
pub fn method_of(authentication: psfleet_inventories::Authentication) -> AuthMethod {
    use psfleet_inventories::Authentication as A;
    match authentication {
        A::Basic => AuthMethod::Basic,
        A::Ntlm => AuthMethod::Ntlm,
        A::Negotiate => AuthMethod::Negotiate,
        A::Kerberos => AuthMethod::Kerberos,
        A::CredSsp => AuthMethod::Credssp,
        A::Certificate => AuthMethod::Certificate,
    }
}

/// Credentials for many hosts, each distinct (method, user, reference) put together once:
/// a fleet with one account prompts once, a fleet with two accounts twice.
#[derive(Debug, Default)]
pub struct CredentialCache {
    known: std::collections::HashMap<(AuthMethod, Option<String>, Option<SecretRef>), Credentials>,
}

impl CredentialCache {
    /// The credential of `host` (see [`obtain_for`]).
    pub fn for_host(
        &mut self,
        host: &psfleet_inventories::Host,
        conn: &ConnectionSettings,
        env: &dyn Fn(&str) -> Option<OsString>,
        prompt: &mut dyn PasswordPrompt,
    ) -> Result<Credentials, CredentialError> {
        let key = (
            method_of(host.authentication),
            host.user.clone(),
            host.password.clone(),
        );
        if let Some(found) = self.known.get(&key) {
            return Ok(found.clone());
        }
        let found = obtain_for(key.0, key.1.as_deref(), key.2.as_ref(), conn, env, prompt)
            .map_err(|e| CredentialError::ForHost {
                host: host.name.clone(),
                source: Box::new(e),
            })?;
        self.known.insert(key, found.clone());
        Ok(found)
    }

    /// Distinct credentials put together so far.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// The first line of a password file, after checking its permissions.
pub fn read_password_file(path: &Path) -> Result<String, CredentialError> {
    use std::os::unix::fs::PermissionsExt as _;
    let read_err = |source| CredentialError::FileRead {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(CredentialError::FileTooOpen {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let text = String::from_utf8(bytes).map_err(|_| CredentialError::FileContent {
        path: path.to_owned(),
        problem: "is not UTF-8",
    })?;
    let line = text.lines().next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(CredentialError::FileContent {
            path: path.to_owned(),
            problem: "has an empty first line",
        });
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::settings::Setting;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("psfleet")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn password_options_are_found_before_parsing() {
        assert!(password_on_command_line(&argv(&["run", "--password", "x"])));
        assert!(password_on_command_line(&argv(&["--password=x", "run"])));
        assert!(!password_on_command_line(&argv(&[
            "run",
            "--password-file",
            "f"
        ])));
        assert!(!password_on_command_line(&argv(&[
            "run",
            "--argument",
            "--password"
        ])));
        assert!(!password_on_command_line(&argv(&[
            "run",
            "-c",
            "x",
            "--",
            "--password"
        ])));
        assert!(password_on_command_line(&argv(&[
            "run",
            "-e",
            "ansible_password=x"
        ])));
        assert!(password_on_command_line(&argv(&[
            "run",
            "-eansible_winrm_pass=x"
        ])));
        assert!(password_on_command_line(&argv(&[
            "run",
            "--extra-var=db_pwd=x"
        ])));
        assert!(!password_on_command_line(&argv(&[
            "run",
            "-e",
            "owner=ops"
        ])));
        assert!(!password_on_command_line(&argv(&[
            "run",
            "--argument",
            "-e",
            "x"
        ])));
        assert!(!password_on_command_line(&argv(&[
            "run",
            "--cmd",
            "--password"
        ])));
    }

    struct Fake(Option<PromptOutcome>, usize);
    impl PasswordPrompt for Fake {
        fn ask(&mut self, text: &str) -> std::io::Result<Option<PromptOutcome>> {
            assert!(text.starts_with("Password for "), "{text}");
            self.1 += 1;
            Ok(self.0.take())
        }
    }

    fn conn(
        method: AuthMethod,
        user: Option<&str>,
        file: Option<(PathBuf, Origin)>,
    ) -> ConnectionSettings {
        let args = crate::options::ConnectionArgs::default();
        let matches = clap::ArgMatches::default();
        let cfg = crate::config::ConfigFile::none();
        let mut c =
            ConnectionSettings::resolve(&args, crate::settings::Layers::new(&matches, &cfg))
                .unwrap();
        c.authentication = Setting::default_value(method);
        c.user = user.map(|u| Setting::default_value(u.to_owned()));
        c.password_file = file.map(|(value, origin)| Setting { value, origin });
        c
    }

    fn temp_file(name: &str, text: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("psfleet-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn sources_are_taken_in_the_documented_order() {
        let file = temp_file("pw-order", "from-file\nsecond line\n", 0o600);
        let env_pw = |k: &str| (k == "PSFLEET_PASSWORD").then(|| OsString::from("from-env"));
        let no_env = |_: &str| None;
        let mut never = Fake(None, 0);

        // A file on the command line beats the environment.
        let c = conn(
            AuthMethod::Ntlm,
            Some("FLEET\\ops"),
            Some((file.clone(), Origin::CommandLine)),
        );
        let got = obtain(&c, &env_pw, &mut never).unwrap();
        assert_eq!(got.source, Some(PasswordSource::File(file.clone())));
        // The environment beats a file from the configuration.
        let from_cfg = Origin::File {
            path: "/x".into(),
            line: 1,
        };
        let c = conn(
            AuthMethod::Ntlm,
            Some("FLEET\\ops"),
            Some((file.clone(), from_cfg)),
        );
        let got = obtain(&c, &env_pw, &mut never).unwrap();
        assert_eq!(got.source, Some(PasswordSource::Env));
        let debug = format!("{:?}", got.credential.unwrap());
        assert!(!debug.contains("from-env"), "{debug}");
        // No environment: the configured file.
        let got = obtain(&c, &no_env, &mut never).unwrap();
        assert_eq!(got.source, Some(PasswordSource::File(file)));
        assert_eq!(never.1, 0, "no prompt while another source has a password");
        // Nothing: the prompt.
        let c = conn(AuthMethod::Negotiate, Some("ops@FLEET.TEST"), None);
        let mut typed = Fake(Some(PromptOutcome::Entered("typed".into())), 0);
        let got = obtain(&c, &no_env, &mut typed).unwrap();
        assert_eq!((got.source, typed.1), (Some(PasswordSource::Prompt), 1));
        // No terminal: a clear error.
        let err = obtain(&c, &no_env, &mut Fake(None, 0)).unwrap_err();
        assert!(err.to_string().contains("set PSFLEET_PASSWORD"), "{err}");
        let err = obtain(&c, &no_env, &mut Fake(Some(PromptOutcome::Cancelled), 0)).unwrap_err();
        assert!(matches!(err, CredentialError::Cancelled));
    }

    #[test]
    fn inventory_references_beat_the_environment_and_prompt_once_per_account() {
        let file = temp_file("pw-inv", "from-inventory-file\n", 0o600);
        let env = |k: &str| match k {
            "PSFLEET_PASSWORD" => Some(OsString::from("from-env")),
            "WEB_PW" => Some(OsString::from("from-web-pw")),
            _ => None,
        };
        let c = conn(AuthMethod::Ntlm, None, None);
        let mut inv = psfleet_inventories::Inventory::default();
        let text = format!(
            "[web]\nweb1 ansible_user=ops ansible_password=env:WEB_PW\n\
             web2 ansible_user=ops ansible_password=file:{}\n\
             web3 ansible_user=ops\nweb4 ansible_user=ops\n\
             web5 ansible_user=ops ansible_password=prompt\n\
             web6 ansible_user=ops ansible_password=env:UNSET_PW\n",
            file.display()
        );
        inv.load_str("hosts.ini", &text, None).unwrap();
        let defaults = psfleet_inventories::Defaults {
            authentication: psfleet_inventories::Authentication::Ntlm,
            ..Default::default()
        };
        let hosts = psfleet_inventories::resolve(&inv, &Default::default(), &defaults).unwrap();
        let mut cache = CredentialCache::default();
        let mut typed = Fake(Some(PromptOutcome::Entered("typed".into())), 0);
        let sources: Vec<Option<PasswordSource>> = hosts[..5]
            .iter()
            .map(|h| cache.for_host(h, &c, &env, &mut typed).unwrap().source)
            .collect();
        assert_eq!(
            sources,
            [
                Some(PasswordSource::EnvVar("WEB_PW".into())),
                Some(PasswordSource::File(file)),
                Some(PasswordSource::Env),
                Some(PasswordSource::Env),
                Some(PasswordSource::Prompt),
            ]
        );
        assert_eq!(
            (cache.len(), typed.1),
            (4, 1),
            "web3 and web4 share one credential"
        );
        let err = cache
            .for_host(&hosts[5], &c, &env, &mut typed)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "web6: the inventory's password reference env:UNSET_PW names an unset environment variable"
        );
    }

    #[test]
    fn methods_without_passwords_never_prompt() {
        let no_env = |_: &str| None;
        let mut never = Fake(None, 0);
        let c = conn(AuthMethod::Certificate, None, None);
        assert!(
            obtain(&c, &no_env, &mut never)
                .unwrap()
                .credential
                .is_none()
        );
        assert_eq!(never.1, 0);
        let c = conn(AuthMethod::Basic, None, None);
        let err = obtain(&c, &no_env, &mut never).unwrap_err();
        // Kerberos needs the password too: the engine asks the KDC with it.
        let k = conn(AuthMethod::Kerberos, Some("ops@FLEET.TEST"), None);
        let mut typed = Fake(Some(PromptOutcome::Entered("typed".into())), 0);
        assert!(
            obtain(&k, &no_env, &mut typed)
                .unwrap()
                .credential
                .is_some()
        );
        assert_eq!(typed.1, 1);
        assert!(
            err.to_string()
                .starts_with("--authentication basic needs a user"),
            "{err}"
        );
    }

    #[test]
    fn password_files_must_be_private_and_non_empty() {
        let open = temp_file("pw-open", "s3cret\n", 0o644);
        let err = read_password_file(&open).unwrap_err().to_string();
        assert!(err.contains("has mode 0644"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let group_w = temp_file("pw-gw", "s3cret\n", 0o620);
        assert!(matches!(
            read_password_file(&group_w),
            Err(CredentialError::FileTooOpen { mode: 0o620, .. })
        ));
        let crlf = temp_file("pw-crlf", "s3cret\r\n", 0o400);
        assert_eq!(read_password_file(&crlf).unwrap(), "s3cret");
        let empty = temp_file("pw-empty", "\nx\n", 0o600);
        assert!(
            read_password_file(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty first line")
        );
        let missing = std::env::temp_dir().join("psfleet-no-such-password-file");
        assert!(matches!(
            read_password_file(&missing),
            Err(CredentialError::FileRead { .. })
        ));
    }
}
