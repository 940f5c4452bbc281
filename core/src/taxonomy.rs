//! The failure taxonomy: every failed host lands in exactly one [`Bucket`].
//!
//! The first twelve are the documented PSRemotingException reasons (seed
//! `000_74a46ac39a283a9d.txt`); their message formats follow that document. The rest come from
//! the WinRM troubleshooting guide (seed `003_fb94af06dd3b4673.txt`) and what the wire shows
//! (`wire-facts.md` sections 1 and 6). The names are a stable interface: report columns, the
//! JSON output and exit codes use [`Bucket::name`], so a variant is never renamed or reused.

use std::fmt;
use std::str::FromStr;

/// The documented reason a host failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// Authenticated, but the account may not use the endpoint (WS-Man fault 5), or the
    /// mechanism is disabled on the host's WinRM service (no acceptable scheme offered).
    AccessDenied,
    /// The mechanism asked for is unavailable on this client (for example Kerberos without a
    /// KDC or realm configured).
    ClientAuthenticationDisabled,
    /// The host name has characters no host name may have (checked before any packet).
    HostContainsInvalidCharacters,
    /// TLS certificate verification failed (chain, name, validity or pinned thumbprint).
    InvalidCertificate,
    /// The server rejected the credentials after a complete authentication exchange.
    InvalidCredentials,
    /// The host name could not be resolved.
    InvalidDns,
    /// The credentials' domain or Kerberos realm is unavailable (no KDC for the realm).
    InvalidDomain,
    /// An IP-address target that is invalid or not in the trusted-hosts list (the Windows
    /// TrustedHosts rule for non-Kerberos authentication over HTTP).
    InvalidHostIpAddress,
    /// The host is not reachable on the network (connect timed out, no route).
    InvalidHostName,
    /// Nothing listens on the port (connection refused), or the listener wants TLS.
    InvalidPort,
    /// The host requires TLS: plain HTTP reached a TLS listener and the connection was closed.
    InvalidProtocol,
    /// The session configuration (ConfigurationName) is not registered or denies network logons
    /// (WS-Man fault 2150858811).
    InvalidPsConfiguration,
    /// A WinRM quota (MaxShellsPerUser, MaxConcurrentOperationsPerUser, MaxConcurrentUsers, …)
    /// still refused the work after the scheduler's requeues ran out.
    QuotaExceeded,
    /// The per-host deadline expired (or the host accepted the connection and never answered).
    Timeout,
    /// The host refused a plaintext body after authentication (AllowUnencrypted=false).
    EncryptionRequired,
    /// The runspace could not open because builtin modules failed to load.
    ModuleLoadFailure,
    /// The script raised a terminating error (pipeline Failed), or the cmd command exited non-zero.
    ScriptFailed,
    /// Any other WS-Man fault or HTTP error from the service (including 413 envelope too large).
    ServiceError,
    /// A malformed or unexpected response: the peer does not speak WinRM as Windows does.
    ProtocolError,
    /// The host was in flight when the run was stopped or the process died.
    Interrupted,
}

impl Bucket {
    /// Every bucket, in the documented order.
    pub const ALL: [Bucket; 20] = [
        Bucket::AccessDenied,
        Bucket::ClientAuthenticationDisabled,
        Bucket::HostContainsInvalidCharacters,
        Bucket::InvalidCertificate,
        Bucket::InvalidCredentials,
        Bucket::InvalidDns,
        Bucket::InvalidDomain,
        Bucket::InvalidHostIpAddress,
        Bucket::InvalidHostName,
        Bucket::InvalidPort,
        Bucket::InvalidProtocol,
        Bucket::InvalidPsConfiguration,
        Bucket::QuotaExceeded,
        Bucket::Timeout,
        Bucket::EncryptionRequired,
        Bucket::ModuleLoadFailure,
        Bucket::ScriptFailed,
        Bucket::ServiceError,
        Bucket::ProtocolError,
        Bucket::Interrupted,
    ];

    /// The stable name used in reports, JSON and inventories (the documented reason names).
    pub fn name(self) -> &'static str {
        match self {
            Bucket::AccessDenied => "AccessDenied",
            Bucket::ClientAuthenticationDisabled => "ClientAuthenticationDisabled",
            Bucket::HostContainsInvalidCharacters => "HostContainsInvalidCharacters",
            Bucket::InvalidCertificate => "InvalidCertificate",
            Bucket::InvalidCredentials => "InvalidCredentials",
            Bucket::InvalidDns => "InvalidDNS",
            Bucket::InvalidDomain => "InvalidDomain",
            Bucket::InvalidHostIpAddress => "InvalidHostIPAddress",
            Bucket::InvalidHostName => "InvalidHostName",
            Bucket::InvalidPort => "InvalidPort",
            Bucket::InvalidProtocol => "InvalidProtocol",
            Bucket::InvalidPsConfiguration => "InvalidPSConfiguration",
            Bucket::QuotaExceeded => "QuotaExceeded",
            Bucket::Timeout => "Timeout",
            Bucket::EncryptionRequired => "EncryptionRequired",
            Bucket::ModuleLoadFailure => "ModuleLoadFailure",
            Bucket::ScriptFailed => "ScriptFailed",
            Bucket::ServiceError => "ServiceError",
            Bucket::ProtocolError => "ProtocolError",
            Bucket::Interrupted => "Interrupted",
        }
    }

    /// Whether this is one of the twelve documented PSRemotingException reasons.
    pub fn is_remoting_reason(self) -> bool {
        (self as usize) < 12
    }

    /// The documented message for `host`, with `detail` (the mechanism, port, domain or
    /// configuration name the format asks for; empty where the format has none).
    pub fn message(self, host: &str, detail: &str) -> String {
        let denied = format!("Access denied to the 'Host' (\"{host}\").");
        match self {
            Bucket::AccessDenied if detail.is_empty() => denied,
            Bucket::AccessDenied => {
                format!("{denied} {detail} Authentication is disabled on the Host's WinRM service.")
            }
            Bucket::ClientAuthenticationDisabled => format!(
                "{denied} {} Authentication is disabled on the WinRM client on this machine.",
                or(detail, "Kerberos")
            ),
            Bucket::HostContainsInvalidCharacters => format!(
                "Invalid 'Host' (\"{host}\") provided. The 'Host' has been provided a hostname \
                 that contains invalid characters."
            ),
            Bucket::InvalidCertificate => {
                format!(
                    "{denied} The host's TLS certificate was rejected: {}.",
                    or(detail, "?")
                )
            }
            Bucket::InvalidCredentials => format!(
                "{denied} The 'Username' or 'Password' provided is incorrect, or requires a \
                 'Domain'."
            ),
            Bucket::InvalidDns => format!(
                "{denied} The 'Host' has been provided a hostname that could not be resolved."
            ),
            Bucket::InvalidDomain => {
                format!("{denied} The 'Domain' (\"{detail}\") is unavailable on the network.")
            }
            Bucket::InvalidHostIpAddress => format!(
                "{denied} The 'Host' has been provided an IP address which is either invalid or \
                 has not been added to the trusted hosts list of this client."
            ),
            Bucket::InvalidHostName => {
                format!("{denied} The 'Host' provided is unavailable on the network.")
            }
            Bucket::InvalidPort => format!(
                "{denied} The 'Host' is either not running, not listening on 'Port' {}, or \
                 requires communication over SSL.",
                or(detail, "?")
            ),
            Bucket::InvalidProtocol => {
                format!("{denied} The 'Host' requires communication over SSL.")
            }
            Bucket::InvalidPsConfiguration => format!(
                "{denied} The 'PSConfiguration' (\"{detail}\") has not been configured on the \
                 'Host'."
            ),
            Bucket::QuotaExceeded => {
                format!(
                    "The 'Host' (\"{host}\") refused the work with a quota: {}",
                    or(detail, "?")
                )
            }
            Bucket::Timeout => {
                format!(
                    "The 'Host' (\"{host}\") did not finish in time: {}",
                    or(detail, "?")
                )
            }
            Bucket::EncryptionRequired => format!(
                "The 'Host' (\"{host}\") refused an unencrypted message (AllowUnencrypted is \
                 false)."
            ),
            Bucket::ModuleLoadFailure => format!(
                "The 'Host' (\"{host}\") could not open a PowerShell runspace: builtin modules \
                 failed to load. {detail}"
            ),
            Bucket::ScriptFailed => {
                format!(
                    "The script failed on the 'Host' (\"{host}\"): {}",
                    or(detail, "?")
                )
            }
            Bucket::ServiceError => {
                format!("The WinRM service on the 'Host' (\"{host}\") returned an error: {detail}")
            }
            Bucket::ProtocolError => format!(
                "The 'Host' (\"{host}\") sent a response psfleet cannot accept: {}",
                or(detail, "?")
            ),
            Bucket::Interrupted => format!(
                "The run stopped while the 'Host' (\"{host}\") was in flight; its outcome is \
                 unknown."
            ),
        }
        .trim_end()
        .to_owned()
    }

    /// How to fix it, written for an operator of this tool.
    pub fn how_to_fix(self) -> &'static str {
        match self {
            Bucket::AccessDenied => {
                "Use an account in the host's Administrators or Remote Management Users group (or \
                 one the session configuration's permissions allow), or enable the mechanism on \
                 the host (winrm set winrm/config/service/auth) or pick one it offers with \
                 --authentication."
            }
            Bucket::ClientAuthenticationDisabled => {
                "Configure Kerberos on this machine (krb5.conf or --kdc and a realm in the user \
                 name), or use --authentication negotiate or ntlm."
            }
            Bucket::HostContainsInvalidCharacters => {
                "Fix the host name in the inventory: letters, digits, '-' and '.' only (RFC 1123), \
                 or an IP address."
            }
            Bucket::InvalidCertificate => {
                "Install a certificate on the host that is issued for its name by a CA you trust, \
                 pass that CA with --ca-file, or connect by the name the certificate carries. \
                 --skip-ca-check / --skip-cn-check exist for lab hosts only."
            }
            Bucket::InvalidCredentials => {
                "Check the user name, password and domain (DOMAIN\\user or user@REALM). The \
                 password comes from PSFLEET_PASSWORD, --password-file or the prompt."
            }
            Bucket::InvalidDns => {
                "Check the name in DNS, or give the address in the inventory (address column or \
                 ansible_host) or with --resolve NAME=IP."
            }
            Bucket::InvalidDomain => {
                "Check the realm in the user name and that a KDC for it is reachable (krb5.conf, \
                 KRB5_CONFIG or --kdc)."
            }
            Bucket::InvalidHostIpAddress => {
                "Address the host by name with Kerberos, use HTTPS, or add the address to the \
                 trusted hosts patterns (--trusted-hosts), as TrustedHosts does on Windows."
            }
            Bucket::InvalidHostName => {
                "Check that the host is up and that no firewall drops TCP to the WinRM port \
                 (5985 for HTTP, 5986 for HTTPS)."
            }
            Bucket::InvalidPort => {
                "Check the port and scheme: run 'winrm quickconfig' on the host for an HTTP \
                 listener on 5985, or use --use-ssl for 5986."
            }
            Bucket::InvalidProtocol => {
                "The host listens for HTTPS only on that port: use --use-ssl (port 5986)."
            }
            Bucket::InvalidPsConfiguration => {
                "Use a configuration the host has (Get-PSSessionConfiguration on the host), or \
                 register it; Enable-PSRemoting restores Microsoft.PowerShell."
            }
            Bucket::QuotaExceeded => {
                "Lower --forks or the jobs per host, reap leaked shells with 'psfleet cleanup', \
                 or raise MaxShellsPerUser / MaxConcurrentOperationsPerUser on the host \
                 (winrm set winrm/config/winrs)."
            }
            Bucket::Timeout => {
                "Raise --timeout if the script is slow, or check the host: it accepted the \
                 connection but did not answer in time."
            }
            Bucket::EncryptionRequired => {
                "Use message encryption (--encryption auto, with NTLM, Negotiate or Kerberos over \
                 HTTP) or HTTPS; do not set AllowUnencrypted=true on the host."
            }
            Bucket::ModuleLoadFailure => {
                "Repair the PowerShell installation on the host (builtin modules under \
                 $PSHOME\\Modules) and check PSModulePath in the machine environment."
            }
            Bucket::ScriptFailed => {
                "Read the error record in the report and fix the script or the host state it \
                 expects."
            }
            Bucket::ServiceError => {
                "Read the WS-Man fault code and message in the report; check the WinRM service \
                 on the host (winrm get winrm/config)."
            }
            Bucket::ProtocolError => {
                "Check that the address points at a Windows WinRM listener and not a proxy or \
                 another service; rerun with -v to see the exchange."
            }
            Bucket::Interrupted => {
                "Rerun with --resume --rerun-interrupted to run these hosts again; check the host \
                 for work the interrupted script may have left half done."
            }
        }
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure bucket {0:?} (expected one of the documented names, e.g. AccessDenied)")]
pub struct UnknownBucket(pub String);

impl FromStr for Bucket {
    type Err = UnknownBucket;

    /// Accepts the stable names, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bucket::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownBucket(s.to_owned()))
    }
}

fn or<'a>(detail: &'a str, fallback: &'a str) -> &'a str {
    if detail.is_empty() { fallback } else { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for bucket in Bucket::ALL {
            assert!(
                seen.insert(bucket.name()),
                "duplicate name {}",
                bucket.name()
            );
            assert_eq!(bucket.name().parse::<Bucket>(), Ok(bucket));
            assert_eq!(bucket.name().to_lowercase().parse::<Bucket>(), Ok(bucket));
        }
        assert_eq!("Nope".parse::<Bucket>(), Err(UnknownBucket("Nope".into())));
    }

    #[test]
    fn the_twelve_remoting_reasons_come_first() {
        let reasons: Vec<_> = Bucket::ALL
            .into_iter()
            .filter(|b| b.is_remoting_reason())
            .collect();
        assert_eq!(reasons.len(), 12);
        assert_eq!(reasons[11], Bucket::InvalidPsConfiguration);
        assert!(!Bucket::QuotaExceeded.is_remoting_reason());
    }

    #[test]
    fn messages_follow_the_documented_formats() {
        assert_eq!(
            Bucket::InvalidPort.message("srv1", "5985"),
            "Access denied to the 'Host' (\"srv1\"). The 'Host' is either not running, not \
             listening on 'Port' 5985, or requires communication over SSL."
        );
        assert_eq!(
            Bucket::AccessDenied.message("srv1", "Negotiate"),
            "Access denied to the 'Host' (\"srv1\"). Negotiate Authentication is disabled on the \
             Host's WinRM service."
        );
        assert_eq!(
            Bucket::AccessDenied.message("srv1", ""),
            "Access denied to the 'Host' (\"srv1\")."
        );
        assert!(
            Bucket::InvalidPsConfiguration
                .message("h", "JEA.Maintenance")
                .contains("'PSConfiguration' (\"JEA.Maintenance\") has not been configured")
        );
        for bucket in Bucket::ALL {
            assert!(
                bucket.message("h", "d").contains("\"h\""),
                "{bucket} names the host"
            );
            assert!(bucket.how_to_fix().len() > 40, "{bucket} has a fix");
        }
    }
}
