//! Secrets only by reference.
//!
//! An inventory never holds a password: a variable named like one (`ansible_password`,
//! `ansible_winrm_pass`, `psfleet_password`, `db_pwd`, `client_secret`, …) must hold a
//! reference, which the CLI resolves when it connects. A literal value is refused with an error
//! naming the file, line and variable. The reference stays a reference here: nothing in this
//! crate reads the environment, a secret file or the terminal.

use std::fmt;
use std::path::PathBuf;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::ErrorKind;

/// Where a secret is to be found, resolved by the CLI when it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// `env:NAME`: the environment variable NAME.
    Env(String),
    /// `file:/path`: the first line of a file (a relative path is relative to the inventory
    /// file's directory once resolved into a [`crate::Host`]).
    File(PathBuf),
    /// `prompt`: ask on the terminal once per distinct user.
    Prompt,
    /// `kerberos-cache`: no password; use the Kerberos ticket cache (kinit beforehand).
    KerberosCache,
}

impl SecretRef {
    /// Parses `env:NAME`, `file:PATH`, `prompt` or `kerberos-cache`.
    pub fn parse(text: &str) -> Result<SecretRef, String> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix("env:") {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "'env:{name}' needs an environment variable name (letters, digits, '_'), like env:PSFLEET_PASSWORD"
                ));
            }
            return Ok(SecretRef::Env(name.to_string()));
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.trim().is_empty() {
                return Err("'file:' needs a path, like file:/etc/psfleet/password".to_string());
            }
            return Ok(SecretRef::File(PathBuf::from(path.trim())));
        }
        match text {
            "prompt" => Ok(SecretRef::Prompt),
            "kerberos-cache" => Ok(SecretRef::KerberosCache),
            _ => {
                Err("not a reference (env:NAME, file:/path, prompt or kerberos-cache)".to_string())
            }
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Prompt => f.write_str("prompt"),
            SecretRef::KerberosCache => f.write_str("kerberos-cache"),
        }
    }
}

/// Whether a variable name says it holds a secret: one of its words (split at `_`, `-`, `.`)
/// is password, passwd, pass, pwd, passphrase or secret, or it contains "password".
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("password")
        || lower
            .split(['_', '-', '.'])
            .any(|word| matches!(word, "pass" | "passwd" | "pwd" | "passphrase" | "secret"))
}

/// The value of a secret-named variable if it is a reference (Ansible's
/// `{{ lookup('env', 'X') }}` and `{{ lookup('file', 'p') }}` become `env:X` and `file:p`);
/// an error for anything else. An empty value means "not set".
pub(crate) fn checked_reference(name: &str, value: String) -> Result<String, ErrorKind> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed.starts_with("$ANSIBLE_VAULT;") {
        return Err(ErrorKind::VaultValue {
            variable: name.to_string(),
        });
    }
    if trimmed.contains("{{") {
        if let Some(captures) = LOOKUP.captures(trimmed)
            && let (Some(kind), Some(arg)) = (captures.get(1), captures.get(2))
        {
            let reference = format!("{}:{}", kind.as_str(), arg.as_str());
            return SecretRef::parse(&reference)
                .map(|_| reference)
                .map_err(|reason| ErrorKind::BadSecretReference {
                    variable: name.to_string(),
                    reason,
                });
        }
        return Err(ErrorKind::BadSecretReference {
            variable: name.to_string(),
            reason:
                "is a Jinja template, which psfleet does not evaluate; write a reference instead: \
                     env:NAME, file:/path, prompt or kerberos-cache"
                    .to_string(),
        });
    }
    let looks_like_reference = ["env:", "file:"].iter().any(|p| trimmed.starts_with(p));
    match SecretRef::parse(trimmed) {
        Ok(_) => Ok(trimmed.to_string()),
        Err(reason) if looks_like_reference => Err(ErrorKind::BadSecretReference {
            variable: name.to_string(),
            reason,
        }),
        Err(_) => Err(ErrorKind::PlaintextSecret {
            variable: name.to_string(),
        }),
    }
}

/// `{{ lookup('env', 'NAME') }}` (or `ansible.builtin.env`, `file`), the way Ansible
/// inventories take secrets from the environment.
static LOOKUP: LazyLock<Regex> = LazyLock::new(|| {
    // The pattern is a constant: it compiles, and tests exercise it.
    #[allow(clippy::expect_used)]
    Regex::new(
        r#"^\{\{\s*lookup\(\s*['"](?:ansible\.builtin\.)?(env|file)['"]\s*,\s*['"]([^'"]*)['"]\s*\)\s*\}\}$"#,
    )
    .expect("constant regex")
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_like_names_are_recognised() {
        for name in [
            "ansible_password",
            "ansible_winrm_pass",
            "ansible_winrm_password",
            "ansible_psrp_pass",
            "ansible_become_pass",
            "psfleet_password",
            "password",
            "Password",
            "db_pwd",
            "client-secret",
            "ssh.passphrase",
            "adminPassword",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "passport",
            "bypass_proxy",
            "expected",
            "ansible_user",
            "compass",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn references_pass_and_literals_are_refused() {
        let ok = |v: &str| checked_reference("ansible_password", v.to_string()).unwrap();
        assert_eq!(ok("env:WIN_PASS"), "env:WIN_PASS");
        assert_eq!(ok(" file:/etc/psfleet/pw "), "file:/etc/psfleet/pw");
        assert_eq!(ok("prompt"), "prompt");
        assert_eq!(ok("kerberos-cache"), "kerberos-cache");
        assert_eq!(ok(""), "");
        assert_eq!(ok("{{ lookup('env', 'WIN_PASS') }}"), "env:WIN_PASS");
        assert_eq!(
            ok("{{lookup(\"ansible.builtin.file\",\"pw.txt\")}}"),
            "file:pw.txt"
        );

        let err = |v: &str| checked_reference("ansible_password", v.to_string()).unwrap_err();
        assert_eq!(
            err("Sup3rS3cret!"),
            ErrorKind::PlaintextSecret {
                variable: "ansible_password".into()
            }
        );
        assert!(matches!(err("env:"), ErrorKind::BadSecretReference { .. }));
        assert!(matches!(
            err("env:1X"),
            ErrorKind::BadSecretReference { .. }
        ));
        assert!(matches!(
            err("{{ vault_win_password }}"),
            ErrorKind::BadSecretReference { .. }
        ));
        assert!(matches!(
            err("$ANSIBLE_VAULT;1.1;AES256\n6162"),
            ErrorKind::VaultValue { .. }
        ));
    }

    #[test]
    fn references_round_trip_through_display() {
        for text in ["env:A_B", "file:/x/y", "prompt", "kerberos-cache"] {
            assert_eq!(SecretRef::parse(text).unwrap().to_string(), text);
        }
    }
}
