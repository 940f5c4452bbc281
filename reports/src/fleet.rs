//! The fleet configuration summary of a sweep: each host's WinRM service settings (from the
//! `facts` the sweep journaled) with the risky ones flagged, as `config.csv` and a section of
//! the HTML report.
//!
//! Risky settings, and why (seed 003, the WinRM security guidance):
//! - `Basic` enabled: the password travels base64-encoded, readable on HTTP;
//! - `AllowUnencrypted` true: message bodies may travel in clear text;
//! - `CbtHardeningLevel` None: no channel binding, so HTTPS authentication can be relayed;
//! - HTTP-only listeners: no HTTPS listener to fall back on;
//! - `MaxShellsPerUser` below [`LOW_SHELL_QUOTA`]: parallel jobs on the host hit the quota
//!   (the Windows default is 30).

use std::collections::BTreeMap;
use std::io::Write;

use psfleet_engine::cache::{HostFacts, ServiceConfig};

use crate::ReportError;

/// A MaxShellsPerUser below this is flagged as low.
pub const LOW_SHELL_QUOTA: u32 = 5;

/// A risky setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Risk {
    /// Basic authentication is enabled on the service.
    BasicEnabled,
    /// AllowUnencrypted is true.
    AllowUnencrypted,
    /// CbtHardeningLevel is None.
    NoChannelBinding,
    /// Only HTTP listeners.
    HttpOnly,
    /// MaxShellsPerUser below [`LOW_SHELL_QUOTA`].
    LowShellQuota,
}

impl Risk {
    /// Every risk, in report order.
    pub const ALL: [Risk; 5] = [
        Risk::BasicEnabled,
        Risk::AllowUnencrypted,
        Risk::NoChannelBinding,
        Risk::HttpOnly,
        Risk::LowShellQuota,
    ];

    /// The stable name (CSV `risks` column, HTML).
    pub fn name(self) -> &'static str {
        match self {
            Risk::BasicEnabled => "basic_enabled",
            Risk::AllowUnencrypted => "allow_unencrypted",
            Risk::NoChannelBinding => "cbt_none",
            Risk::HttpOnly => "http_only",
            Risk::LowShellQuota => "low_shell_quota",
        }
    }

    /// What it means and what to do, for the report.
    pub fn advice(self) -> &'static str {
        match self {
            Risk::BasicEnabled => {
                "Basic authentication is enabled: the password is sent base64-encoded. Disable \
                 it (winrm set winrm/config/service/auth @{Basic=\"false\"}) unless a tool needs it \
                 over HTTPS."
            }
            Risk::AllowUnencrypted => {
                "AllowUnencrypted is true: bodies may travel in clear text. Set it to false \
                 (winrm set winrm/config/service @{AllowUnencrypted=\"false\"})."
            }
            Risk::NoChannelBinding => {
                "CbtHardeningLevel is None: HTTPS authentication is not bound to the TLS channel. \
                 Use Relaxed or Strict."
            }
            Risk::HttpOnly => {
                "Only HTTP listeners: add an HTTPS listener with a certificate for the host's name."
            }
            Risk::LowShellQuota => {
                "MaxShellsPerUser is low: parallel jobs on this host wait for shell slots. Raise \
                 it (winrm set winrm/config/winrs @{MaxShellsPerUser=\"30\"}) if that matters."
            }
        }
    }
}

/// The risks of one host's facts.
pub fn risks(facts: &HostFacts) -> Vec<Risk> {
    let mut out = Vec::new();
    if let Some(s) = &facts.service {
        if s.auth.get("Basic").copied().unwrap_or(false) {
            out.push(Risk::BasicEnabled);
        }
        if s.allow_unencrypted == Some(true) {
            out.push(Risk::AllowUnencrypted);
        }
        if s.cbt_hardening_level
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case("none"))
        {
            out.push(Risk::NoChannelBinding);
        }
        if !s.listeners.is_empty()
            && s.listeners
                .iter()
                .all(|l| l.to_ascii_uppercase().starts_with("HTTP:"))
        {
            out.push(Risk::HttpOnly);
        }
    }
    if facts
        .max_shells_per_user
        .is_some_and(|n| n < LOW_SHELL_QUOTA)
    {
        out.push(Risk::LowShellQuota);
    }
    out
}

/// The hosts that have a service configuration, by host name.
pub fn configured(facts: &BTreeMap<String, HostFacts>) -> Vec<(&str, &HostFacts, &ServiceConfig)> {
    facts
        .iter()
        .filter_map(|(h, f)| f.service.as_ref().map(|s| (h.as_str(), f, s)))
        .collect()
}

/// The columns of `config.csv`, in order.
pub const CONFIG_COLUMNS: [&str; 9] = [
    "host",
    "auth_enabled",
    "allow_unencrypted",
    "cbt_hardening_level",
    "listeners",
    "max_shells_per_user",
    "max_envelope_size_kb",
    "powershell_version",
    "risks",
];

/// Writes `config.csv`: one row per host with a service configuration. Lists inside a cell
/// are separated by spaces.
pub fn write_csv<W: Write>(out: W, facts: &BTreeMap<String, HostFacts>) -> Result<(), ReportError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CONFIG_COLUMNS)?;
    for (host, f, s) in configured(facts) {
        let auth: Vec<&str> = s
            .auth
            .iter()
            .filter(|(_, on)| **on)
            .map(|(m, _)| m.as_str())
            .collect();
        let risks: Vec<&str> = risks(f).into_iter().map(Risk::name).collect();
        w.write_record([
            host.to_owned(),
            auth.join(" "),
            s.allow_unencrypted
                .map(|b| b.to_string())
                .unwrap_or_default(),
            s.cbt_hardening_level.clone().unwrap_or_default(),
            s.listeners.join(" "),
            f.max_shells_per_user
                .map(|n| n.to_string())
                .unwrap_or_default(),
            s.max_envelope_size_kb
                .map(|n| n.to_string())
                .unwrap_or_default(),
            f.powershell_version.clone().unwrap_or_default(),
            risks.join(" "),
        ])?;
    }
    w.flush().map_err(|source| ReportError::Io {
        what: "config CSV".into(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn host(
        basic: bool,
        unencrypted: bool,
        cbt: &str,
        listeners: &[&str],
        shells: u32,
    ) -> HostFacts {
        HostFacts {
            max_shells_per_user: Some(shells),
            powershell_version: Some("5.1".into()),
            service: Some(ServiceConfig {
                auth: BTreeMap::from([
                    ("Basic".into(), basic),
                    ("Kerberos".into(), true),
                    ("Negotiate".into(), true),
                ]),
                allow_unencrypted: Some(unencrypted),
                cbt_hardening_level: Some(cbt.into()),
                listeners: listeners.iter().map(|l| (*l).to_owned()).collect(),
                max_envelope_size_kb: Some(500),
            }),
            ..HostFacts::default()
        }
    }

    #[test]
    fn risky_settings_are_flagged_and_written() {
        let facts = BTreeMap::from([
            (
                "good".to_string(),
                host(false, false, "Relaxed", &["HTTP:5985", "HTTPS:5986"], 30),
            ),
            (
                "bad".to_string(),
                host(true, true, "None", &["HTTP:5985"], 2),
            ),
            ("unknown".to_string(), HostFacts::default()),
        ]);
        assert!(risks(&facts["good"]).is_empty());
        assert_eq!(risks(&facts["bad"]), Risk::ALL.to_vec());
        assert!(risks(&facts["unknown"]).is_empty());
        let mut out = Vec::new();
        write_csv(&mut out, &facts).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], CONFIG_COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "bad,Basic Kerberos Negotiate,true,None,HTTP:5985,2,500,5.1,\
             basic_enabled allow_unencrypted cbt_none http_only low_shell_quota"
        );
        assert_eq!(
            lines[2],
            "good,Kerberos Negotiate,false,Relaxed,HTTP:5985 HTTPS:5986,30,500,5.1,"
        );
    }
}
