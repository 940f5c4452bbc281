//! `rsp:Shell` as the server describes a shell: in CreateResponse, in a shell Get and in
//! Enumerate items (MS-WSMV 2.2.4.37).

use std::time::Duration;

use uuid::Uuid;

use super::WsmanError;
use super::duration;
use super::names::ns;
use super::request::{EnvironmentVariable, parse_environment, write_environment};
use super::util::{
    child_text, guid, opt_child, parse_duration, parse_number, parse_uuid, split_streams, write_opt,
};
use crate::xml::{Element, XmlWriter};

/// A shell as Windows describes it. Every field is optional: cmd shells omit the PSRP
/// fields (R:test_winrs_standard), and only a shell Get or Enumerate adds MemoryUsed and
/// ChildProcesses (R:test_psrp_is_alive_state_disconnected). Written in Windows' order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellInfo {
    /// `rsp:ShellId`.
    pub shell_id: Option<Uuid>,
    /// `rsp:Name`.
    pub name: Option<String>,
    /// `rsp:ResourceUri`.
    pub resource_uri: Option<String>,
    /// `rsp:Owner`, e.g. `WIN-NNMU24VVKJ0\vagrant`.
    pub owner: Option<String>,
    /// `rsp:ClientIP`.
    pub client_ip: Option<String>,
    /// `rsp:ProcessId` of the plugin host (PSRP shells).
    pub process_id: Option<u32>,
    /// `rsp:Environment` (R:test_winrs_environment).
    pub environment: Vec<EnvironmentVariable>,
    /// `rsp:WorkingDirectory` (R:test_winrs_extra_opts).
    pub working_directory: Option<String>,
    /// `rsp:Lifetime`.
    pub lifetime: Option<Duration>,
    /// `rsp:IdleTimeOut`, written `PT7200.000S`.
    pub idle_timeout: Option<Duration>,
    /// `rsp:InputStreams`.
    pub input_streams: Option<Vec<String>>,
    /// `rsp:OutputStreams`.
    pub output_streams: Option<Vec<String>>,
    /// `rsp:MaxIdleTimeOut`, written `PT2147483.647S`.
    pub max_idle_timeout: Option<Duration>,
    /// `rsp:Locale`.
    pub locale: Option<String>,
    /// `rsp:DataLocale`.
    pub data_locale: Option<String>,
    /// `rsp:CompressionMode`, e.g. `NoCompression`.
    pub compression_mode: Option<String>,
    /// `rsp:ProfileLoaded` (`Yes`/`No`).
    pub profile_loaded: Option<bool>,
    /// `rsp:Encoding`, e.g. `UTF8`.
    pub encoding: Option<String>,
    /// `rsp:BufferMode`, e.g. `Block`.
    pub buffer_mode: Option<String>,
    /// `rsp:State`.
    pub state: Option<ShellState>,
    /// `rsp:ShellRunTime`, written `P0DT0H0M9S`.
    pub shell_run_time: Option<Duration>,
    /// `rsp:ShellInactivity`, written like [`ShellInfo::shell_run_time`].
    pub shell_inactivity: Option<Duration>,
    /// `rsp:MemoryUsed` as Windows writes it, e.g. `46MB`.
    pub memory_used: Option<String>,
    /// `rsp:ChildProcesses`.
    pub child_processes: Option<u32>,
}

/// `rsp:State` of a shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ShellState {
    /// `Connected`.
    Connected,
    /// `Disconnected`: the shell survives but must be reconnected (wire-facts 1.12).
    Disconnected,
    /// Any other state text.
    Other(String),
}

impl ShellState {
    /// The state for its text.
    pub fn from_text(text: &str) -> Self {
        match text.trim() {
            "Connected" => ShellState::Connected,
            "Disconnected" => ShellState::Disconnected,
            other => ShellState::Other(other.to_owned()),
        }
    }

    /// The state text.
    pub fn as_str(&self) -> &str {
        match self {
            ShellState::Connected => "Connected",
            ShellState::Disconnected => "Disconnected",
            ShellState::Other(text) => text,
        }
    }
}

impl ShellInfo {
    pub(crate) fn parse(shell: &Element) -> Result<Self, WsmanError> {
        let s = ns::SHELL;
        let streams = |name| child_text(shell, s, name).map(|t| split_streams(&t));
        let dur = |name, field| opt_child(shell, s, name, |t| parse_duration(t, field));
        Ok(Self {
            shell_id: opt_child(shell, s, "ShellId", |t| {
                parse_uuid(t, "rsp:Shell/rsp:ShellId")
            })?,
            name: child_text(shell, s, "Name"),
            resource_uri: child_text(shell, s, "ResourceUri"),
            owner: child_text(shell, s, "Owner"),
            client_ip: child_text(shell, s, "ClientIP"),
            process_id: opt_child(shell, s, "ProcessId", |t| {
                parse_number(t, "rsp:Shell/rsp:ProcessId")
            })?,
            environment: match shell.child(s, "Environment") {
                Some(env) => parse_environment(env)?,
                None => Vec::new(),
            },
            working_directory: child_text(shell, s, "WorkingDirectory"),
            lifetime: dur("Lifetime", "rsp:Shell/rsp:Lifetime")?,
            idle_timeout: dur("IdleTimeOut", "rsp:Shell/rsp:IdleTimeOut")?,
            input_streams: streams("InputStreams"),
            output_streams: streams("OutputStreams"),
            max_idle_timeout: dur("MaxIdleTimeOut", "rsp:Shell/rsp:MaxIdleTimeOut")?,
            locale: child_text(shell, s, "Locale"),
            data_locale: child_text(shell, s, "DataLocale"),
            compression_mode: child_text(shell, s, "CompressionMode"),
            profile_loaded: opt_child(shell, s, "ProfileLoaded", |t| match t.trim() {
                v if v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("true") => Ok(true),
                v if v.eq_ignore_ascii_case("no") || v.eq_ignore_ascii_case("false") => Ok(false),
                _ => Err(super::util::invalid("rsp:Shell/rsp:ProfileLoaded", t)),
            })?,
            encoding: child_text(shell, s, "Encoding"),
            buffer_mode: child_text(shell, s, "BufferMode"),
            state: child_text(shell, s, "State").map(|t| ShellState::from_text(&t)),
            shell_run_time: dur("ShellRunTime", "rsp:Shell/rsp:ShellRunTime")?,
            shell_inactivity: dur("ShellInactivity", "rsp:Shell/rsp:ShellInactivity")?,
            memory_used: child_text(shell, s, "MemoryUsed"),
            child_processes: opt_child(shell, s, "ChildProcesses", |t| {
                parse_number(t, "rsp:Shell/rsp:ChildProcesses")
            })?,
        })
    }

    /// Writes `<rsp:Shell xmlns:rsp=...>` (Windows re-declares `rsp` on it).
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.start("rsp:Shell", &[("xmlns:rsp", ns::SHELL)]);
        let id = self.shell_id.map(|id| guid(&id));
        write_opt(w, "rsp:ShellId", id.as_deref());
        write_opt(w, "rsp:Name", self.name.as_deref());
        write_opt(w, "rsp:ResourceUri", self.resource_uri.as_deref());
        write_opt(w, "rsp:Owner", self.owner.as_deref());
        write_opt(w, "rsp:ClientIP", self.client_ip.as_deref());
        let pid = self.process_id.map(|p| p.to_string());
        write_opt(w, "rsp:ProcessId", pid.as_deref());
        write_environment(w, &self.environment);
        write_opt(w, "rsp:WorkingDirectory", self.working_directory.as_deref());
        let millis = |d: Option<Duration>| d.map(duration::format_millis);
        write_opt(w, "rsp:Lifetime", millis(self.lifetime).as_deref());
        write_opt(w, "rsp:IdleTimeOut", millis(self.idle_timeout).as_deref());
        let input = self.input_streams.as_ref().map(|s| s.join(" "));
        write_opt(w, "rsp:InputStreams", input.as_deref());
        let output = self.output_streams.as_ref().map(|s| s.join(" "));
        write_opt(w, "rsp:OutputStreams", output.as_deref());
        write_opt(
            w,
            "rsp:MaxIdleTimeOut",
            millis(self.max_idle_timeout).as_deref(),
        );
        write_opt(w, "rsp:Locale", self.locale.as_deref());
        write_opt(w, "rsp:DataLocale", self.data_locale.as_deref());
        write_opt(w, "rsp:CompressionMode", self.compression_mode.as_deref());
        let profile = self.profile_loaded.map(|p| if p { "Yes" } else { "No" });
        write_opt(w, "rsp:ProfileLoaded", profile);
        write_opt(w, "rsp:Encoding", self.encoding.as_deref());
        write_opt(w, "rsp:BufferMode", self.buffer_mode.as_deref());
        write_opt(w, "rsp:State", self.state.as_ref().map(ShellState::as_str));
        let dhms = |d: Option<Duration>| d.map(duration::format_dhms);
        write_opt(w, "rsp:ShellRunTime", dhms(self.shell_run_time).as_deref());
        write_opt(
            w,
            "rsp:ShellInactivity",
            dhms(self.shell_inactivity).as_deref(),
        );
        write_opt(w, "rsp:MemoryUsed", self.memory_used.as_deref());
        let children = self.child_processes.map(|c| c.to_string());
        write_opt(w, "rsp:ChildProcesses", children.as_deref());
        w.end("rsp:Shell");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_state_and_profile_spellings() {
        assert_eq!(ShellState::from_text("Connected"), ShellState::Connected);
        assert_eq!(ShellState::from_text("Odd").as_str(), "Odd");
        let doc = format!(
            r#"<rsp:Shell xmlns:rsp="{}"><rsp:ProfileLoaded>No</rsp:ProfileLoaded><rsp:ProcessId>12</rsp:ProcessId></rsp:Shell>"#,
            ns::SHELL
        );
        let shell = ShellInfo::parse(&crate::xml::parse(doc.as_bytes()).unwrap()).unwrap();
        assert_eq!(shell.profile_loaded, Some(false));
        assert_eq!(shell.process_id, Some(12));
        let bad = doc.replace(">No<", ">Perhaps<");
        assert!(matches!(
            ShellInfo::parse(&crate::xml::parse(bad.as_bytes()).unwrap()),
            Err(WsmanError::InvalidValue {
                field: "rsp:Shell/rsp:ProfileLoaded",
                ..
            })
        ));
        let bad = doc.replace(">12<", ">-12<");
        assert!(ShellInfo::parse(&crate::xml::parse(bad.as_bytes()).unwrap()).is_err());
    }
}
