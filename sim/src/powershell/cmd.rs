//! The cmd.exe command set of the WinRS shell.
//!
//! The WinRS service runs a command through `cmd.exe /c` unless `WINRS_SKIP_CMD_SHELL` is
//! set, so `rsp:Command` and its `rsp:Arguments` are joined with spaces and read as one cmd
//! line (wire-facts 2.4; pywinrm sends `ipconfig` + `/all`, pypsrp `cmd.exe` + `/c` +
//! `echo` + `hi`). Supported: `&`, `&&`, `||`, `%VAR%` expansion, and the commands
//! `hostname`, `whoami`, `echo`, `ipconfig`, `ver`, `set`, `cd`, `rem`, `exit [/b] [N]`,
//! `cmd [/c ...]` and `powershell[.exe]` (which runs the PowerShell subset). Output uses CRLF.
//!
//! An unknown command writes cmd's "is not recognized" message to stderr and sets
//! `%ERRORLEVEL%` to 9009; the process exit code of `cmd /c` for it is 1 (observed:
//! nodejs/node#36855, where `execSync` of a missing command through `cmd.exe /d /s /c`
//! reports status 1 on Windows 10).

use std::time::Duration;

use base64::Engine as _;

use super::objects::HostFacts;
use super::text;
use super::{CmdRun, ScriptEnd, ScriptEvent, ScriptInvocation};
use crate::host::HostSpec;

/// How long starting cmd.exe and running a built-in command takes (virtual, so that even
/// `echo` is still running when the first Receive arrives, as on Windows).
pub(crate) const CMD_START: Duration = Duration::from_millis(5);

/// Deepest `cmd /c cmd /c ...` nesting followed.
const MAX_NESTING: usize = 8;
/// Most commands one line may chain.
const MAX_COMMANDS: usize = 1_000;

/// Runs a WinRS command (see [`super::run_cmd`]).
pub(crate) fn run_cmd(
    command_line: &str,
    arguments: &[String],
    stdin: &[u8],
    host: &HostSpec,
    user: &str,
) -> CmdRun {
    let mut line = command_line.trim().to_owned();
    for a in arguments {
        line.push(' ');
        line.push_str(a);
    }
    let facts = HostFacts::new(host, user);
    let mut shell = Shell {
        host,
        user,
        env: super::eval::environment(&facts),
        facts,
        stdout: Vec::new(),
        stderr: Vec::new(),
        errorlevel: 0,
        duration: Duration::ZERO,
        exited: false,
        stdin,
        depth: 0,
    };
    let code = shell.run_line(&line);
    CmdRun {
        stdout: shell.stdout,
        stderr: shell.stderr,
        exit_code: code,
        duration: CMD_START + shell.duration + host.script.extra_duration,
    }
}

struct Shell<'a> {
    host: &'a HostSpec,
    user: &'a str,
    facts: HostFacts,
    env: Vec<(String, String)>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    errorlevel: i32,
    duration: Duration,
    exited: bool,
    stdin: &'a [u8],
    depth: usize,
}

/// How two commands on a line are joined.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Join {
    Always,
    IfOk,
    IfFailed,
}

/// Splits a cmd line at unquoted `&`, `&&` and `||`.
fn split_commands(line: &str) -> Vec<(Join, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut join = Join::Always;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '^' if !quoted => {
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            '&' | '|' if !quoted => {
                let next_join = if chars.peek() == Some(&c) {
                    chars.next();
                    if c == '&' { Join::IfOk } else { Join::IfFailed }
                } else if c == '&' {
                    Join::Always
                } else {
                    // A pipe: the subset runs the left side only.
                    current.push(c);
                    continue;
                };
                out.push((join, std::mem::take(&mut current)));
                join = next_join;
            }
            _ => current.push(c),
        }
        if out.len() >= MAX_COMMANDS {
            break;
        }
    }
    out.push((join, current));
    out
}

/// Splits arguments as `CommandLineToArgvW` does (quotes group, `\"` is a quote).
pub(crate) fn split_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut quoted = false;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let mut n = 0;
            while chars.get(i + n) == Some(&'\\') {
                n += 1;
            }
            if chars.get(i + n) == Some(&'"') {
                cur.extend(std::iter::repeat_n('\\', n / 2));
                if n % 2 == 1 {
                    cur.push('"');
                    i += n + 1;
                } else {
                    i += n;
                }
            } else {
                cur.extend(std::iter::repeat_n('\\', n));
                i += n;
            }
            in_arg = true;
            continue;
        }
        if c == '"' {
            quoted = !quoted;
            in_arg = true;
        } else if c.is_whitespace() && !quoted {
            if in_arg {
                args.push(std::mem::take(&mut cur));
                in_arg = false;
            }
        } else {
            cur.push(c);
            in_arg = true;
        }
        i += 1;
    }
    if in_arg {
        args.push(cur);
    }
    args
}

/// The first word of a command (quotes removed) and the rest of the line as written.
fn first_word(s: &str) -> (String, &str) {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        return match rest.find('"') {
            Some(i) => (rest[..i].to_owned(), &rest[i + 1..]),
            None => (rest.to_owned(), ""),
        };
    }
    let end = s
        .find(|c: char| c.is_whitespace() || c == '/' && !s.starts_with('/'))
        .unwrap_or(s.len());
    // `echo.` and `echo/`: the word ends at the punctuation.
    let end = s[..end]
        .find(['.', '('])
        .filter(|i| s[..*i].eq_ignore_ascii_case("echo"))
        .unwrap_or(end);
    (s[..end].to_owned(), &s[end..])
}

impl Shell<'_> {
    fn out(&mut self, text: &str) {
        self.stdout.extend_from_slice(text.as_bytes());
    }

    fn err(&mut self, text: &str) {
        self.stderr.extend_from_slice(text.as_bytes());
    }

    fn env_get(&self, name: &str) -> Option<String> {
        if name.eq_ignore_ascii_case("errorlevel") {
            return Some(self.errorlevel.to_string());
        }
        if name.eq_ignore_ascii_case("cd") {
            return Some(format!("C:\\Users\\{}", self.facts.user));
        }
        self.env
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// `%NAME%` expansion (unknown names stay as written, as in `cmd /c`).
    fn expand(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            match after.find('%') {
                Some(j) if j > 0 => match self.env_get(&after[..j]) {
                    Some(v) => {
                        out.push_str(&v);
                        rest = &after[j + 1..];
                    }
                    None => {
                        out.push('%');
                        rest = after;
                    }
                },
                _ => {
                    out.push('%');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Runs a line; returns the process exit code.
    fn run_line(&mut self, line: &str) -> i32 {
        let mut last_not_found = false;
        for (join, command) in split_commands(line) {
            if self.exited {
                break;
            }
            let run = match join {
                Join::Always => true,
                Join::IfOk => self.errorlevel == 0,
                Join::IfFailed => self.errorlevel != 0,
            };
            if !run || command.trim().is_empty() {
                continue;
            }
            last_not_found = false;
            let expanded = self.expand(&command);
            if !self.run_command(&expanded) {
                last_not_found = true;
            }
        }
        if last_not_found && !self.exited {
            1
        } else {
            self.errorlevel
        }
    }

    /// Runs one command; false when the command was not found.
    fn run_command(&mut self, command: &str) -> bool {
        let trimmed = command.trim_start();
        let (word, rest) = first_word(trimmed);
        let lower = word.to_ascii_lowercase();
        let program = lower
            .rsplit(['\\', '/'])
            .next()
            .unwrap_or(&lower)
            .to_owned();
        let program = program.strip_suffix(".exe").unwrap_or(&program).to_owned();
        let builtin = !lower.contains(['\\', '/']) && !lower.ends_with(".exe");
        self.errorlevel = 0;
        match program.as_str() {
            "echo" if builtin => self.echo(rest),
            "rem" if builtin => {}
            "ver" if builtin => {
                let build = format!("{}.1", self.host.os.version);
                self.out(&format!("\r\nMicrosoft Windows [Version {build}]\r\n"));
            }
            "cd" | "chdir" if builtin => {
                let dir = format!("C:\\Users\\{}\r\n", self.facts.user);
                self.out(&dir);
            }
            "set" if builtin => self.set(rest.trim()),
            "exit" if builtin => {
                let args: Vec<&str> = rest.split_whitespace().collect();
                let (b, code) = match args.as_slice() {
                    [flag, n, ..] if flag.eq_ignore_ascii_case("/b") => (true, n.parse().ok()),
                    [flag] if flag.eq_ignore_ascii_case("/b") => (true, None),
                    [n, ..] => (false, n.parse().ok()),
                    [] => (false, None),
                };
                self.errorlevel = code.unwrap_or(if b { self.errorlevel } else { 0 });
                self.exited = true;
            }
            "hostname" => {
                let name = format!("{}\r\n", self.facts.computer);
                self.out(&name);
            }
            "whoami" => {
                let who =
                    format!("{}\\{}\r\n", self.facts.computer, self.facts.user).to_lowercase();
                self.out(&who);
            }
            "ipconfig" => {
                let text = ipconfig(self.host);
                self.out(&text);
            }
            "cmd" => self.nested_cmd(rest),
            "powershell" => self.powershell(rest),
            _ => {
                self.err(&format!(
                    "'{word}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
                ));
                self.errorlevel = 9009;
                return false;
            }
        }
        true
    }

    fn echo(&mut self, rest: &str) {
        // `echo.`/`echo/`/`echo(` print an empty line or the text after the punctuation.
        if let Some(text) = rest.strip_prefix(['.', '(', '/']) {
            let text = format!("{text}\r\n");
            self.out(&text);
            return;
        }
        let text = rest.strip_prefix(' ').unwrap_or(rest);
        if text.trim().is_empty() {
            self.out("ECHO is on.\r\n");
            return;
        }
        if text.trim().eq_ignore_ascii_case("on") || text.trim().eq_ignore_ascii_case("off") {
            return;
        }
        let text = format!("{text}\r\n");
        self.out(&text);
    }

    fn set(&mut self, arg: &str) {
        if let Some((k, v)) = arg.split_once('=') {
            let k = k.trim().to_owned();
            self.env.retain(|(name, _)| !name.eq_ignore_ascii_case(&k));
            if !v.is_empty() {
                self.env.push((k, v.to_owned()));
                self.env.sort_by_key(|(n, _)| n.to_ascii_lowercase());
            }
            return;
        }
        let prefix = arg.to_ascii_lowercase();
        let lines: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with(&prefix))
            .map(|(k, v)| format!("{k}={v}\r\n"))
            .collect();
        if lines.is_empty() {
            self.err(&format!("Environment variable {arg} not defined\r\n"));
            self.errorlevel = 1;
            return;
        }
        for l in lines {
            self.out(&l);
        }
    }

    fn nested_cmd(&mut self, rest: &str) {
        if self.depth >= MAX_NESTING {
            return;
        }
        let mut s = rest.trim_start();
        let mut strip_quotes = false;
        let mut run = None;
        while let Some(switch) = s.strip_prefix('/') {
            let end = switch.find(char::is_whitespace).unwrap_or(switch.len());
            let flag = switch[..end].to_ascii_lowercase();
            let after = switch[end..].trim_start();
            match flag.as_str() {
                "c" | "k" => {
                    run = Some(after);
                    break;
                }
                "s" => strip_quotes = true,
                _ => {}
            }
            s = after;
        }
        let Some(mut line) = run.map(str::to_owned) else {
            // An interactive cmd reads its commands from stdin.
            let input = String::from_utf8_lossy(self.stdin).into_owned();
            self.depth += 1;
            for l in input.lines().take(MAX_COMMANDS) {
                if self.exited {
                    break;
                }
                self.run_line(l);
            }
            self.depth -= 1;
            return;
        };
        if (strip_quotes || line.starts_with('"')) && line.starts_with('"') {
            line.remove(0);
            if let Some(i) = line.rfind('"') {
                line.remove(i);
            }
        }
        self.depth += 1;
        let code = self.run_line(&line);
        self.depth -= 1;
        self.exited = false;
        self.errorlevel = code;
    }

    fn powershell(&mut self, rest: &str) {
        let args = split_args(rest);
        let mut script: Option<String> = None;
        let mut encoded = false;
        let mut i = 0;
        while let Some(a) = args.get(i) {
            i += 1;
            if a == "-" {
                script = Some(String::from_utf8_lossy(self.stdin).into_owned());
                break;
            }
            let Some(name) = a.strip_prefix(['-', '/']) else {
                script = Some(args[i - 1..].join(" "));
                break;
            };
            let lower = name.to_ascii_lowercase();
            let is = |full: &str, min: usize| lower.len() >= min && full.starts_with(&lower);
            if lower == "ec" || is("encodedcommand", 1) && !is("executionpolicy", 2) {
                let Some(b64) = args.get(i) else {
                    self.err("Cannot process the command because -EncodedCommand requires an argument.\r\n");
                    self.errorlevel = 1;
                    return;
                };
                match decode_utf16_base64(b64) {
                    Some(s) => script = Some(s),
                    None => {
                        self.err("Cannot process the command because the value specified with -EncodedCommand is not properly encoded. The value must be Base64 encoded.\r\n");
                        self.errorlevel = 1;
                        return;
                    }
                }
                encoded = true;
                break;
            } else if is("command", 1) {
                let rest = args.get(i..).unwrap_or(&[]).join(" ");
                script = Some(if rest == "-" {
                    String::from_utf8_lossy(self.stdin).into_owned()
                } else {
                    rest
                });
                break;
            } else if lower == "ep"
                || is("executionpolicy", 2)
                || is("inputformat", 2)
                || is("outputformat", 1)
                || is("windowstyle", 1)
                || is("version", 1)
                || is("configurationname", 6)
                || is("psconsolefile", 3)
            {
                i += 1;
            } else if is("noprofile", 3)
                || is("noninteractive", 4)
                || is("nologo", 3)
                || is("noexit", 3)
                || is("sta", 3)
                || is("mta", 3)
            {
            } else if is("file", 1) {
                let file = args.get(i).cloned().unwrap_or_default();
                self.err(&format!(
                    "The argument '{file}' to the -File parameter does not exist. Provide the path to an existing '.ps1' file as an argument to the -File parameter.\r\n"
                ));
                self.errorlevel = 4294770688u32 as i32;
                return;
            } else {
                // An unknown switch starts the command text, as powershell.exe does.
                script = Some(args[i - 1..].join(" "));
                break;
            }
        }
        let Some(script) = script else {
            // No command: an interactive shell reading stdin.
            let input = String::from_utf8_lossy(self.stdin).into_owned();
            self.run_ps(&input, false);
            return;
        };
        self.run_ps(&script, encoded);
    }

    /// Runs a script and renders its streams as powershell.exe does with redirected
    /// output.
    fn run_ps(&mut self, script: &str, encoded: bool) {
        let inv = ScriptInvocation {
            script,
            arguments: &[],
            named: &[],
            input: &[],
            host: self.host,
            user: self.user,
        };
        let (run, last_ok) = super::run_with_state(&inv);
        let mut error_lines: Vec<String> = Vec::new();
        let mut pending = Vec::new();
        let flush = |shell: &mut Self, pending: &mut Vec<psfleet_core::psrp::clixml::Value>| {
            if !pending.is_empty() {
                let text = text::render(pending);
                shell.out(&text);
                pending.clear();
            }
        };
        for e in &run.events {
            match &e.event {
                ScriptEvent::Output(v) => pending.push(v.clone()),
                ScriptEvent::Information(r) if r.source.as_deref() == Some("Write-Host") => {
                    flush(self, &mut pending);
                    let no_newline = r
                        .message_data
                        .as_object()
                        .and_then(|o| o.property("NoNewLine"))
                        .and_then(psfleet_core::psrp::clixml::Value::as_bool)
                        .unwrap_or(false);
                    let mut t = r.message_text();
                    // Write-Host ends its line with LF, not CRLF (R:test_winrs_no_cmd_shell).
                    if !no_newline {
                        t.push('\n');
                    }
                    self.out(&t);
                }
                ScriptEvent::Warning(r) => {
                    flush(self, &mut pending);
                    self.out(&format!("WARNING: {}\r\n", r.message));
                }
                ScriptEvent::Verbose(r) => {
                    flush(self, &mut pending);
                    self.out(&format!("VERBOSE: {}\r\n", r.message));
                }
                ScriptEvent::Debug(r) => {
                    flush(self, &mut pending);
                    self.out(&format!("DEBUG: {}\r\n", r.message));
                }
                ScriptEvent::Error(r) => {
                    flush(self, &mut pending);
                    let t = text::error_text(r);
                    if encoded {
                        error_lines
                            .extend(t.trim_end_matches("\r\n").split("\r\n").map(str::to_owned));
                    } else {
                        self.err(&t);
                    }
                }
                ScriptEvent::Information(_) | ScriptEvent::Progress(_) => {}
            }
        }
        flush(self, &mut pending);
        let code = match (&run.end, run.exit_code) {
            (_, Some(code)) => code,
            (ScriptEnd::Failed { error, .. }, None) => {
                let t = text::error_text(error);
                if encoded {
                    error_lines.extend(t.trim_end_matches("\r\n").split("\r\n").map(str::to_owned));
                } else {
                    self.err(&t);
                }
                1
            }
            (ScriptEnd::Completed { .. }, None) => i32::from(!last_ok),
        };
        if encoded && !error_lines.is_empty() {
            let bytes = text::clixml_stderr(&error_lines);
            self.stderr.extend(bytes);
        }
        self.duration += run.end.at().saturating_sub(self.host.script.extra_duration);
        self.errorlevel = code;
    }
}

/// Decodes `-EncodedCommand`: base64 of UTF-16LE.
pub(crate) fn decode_utf16_base64(b64: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    if bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// `ipconfig` for a host with one adapter holding its address.
pub(crate) fn ipconfig(host: &HostSpec) -> String {
    let [a, b, c, d] = host.address.octets();
    let suffix = host.name.split_once('.').map_or("", |(_, s)| s);
    let link_local = format!(
        "fe80::{:x}:{:x}:{:x}:{:x}%{}",
        0x1000 + u16::from(a),
        0x2000 + u16::from(b),
        0x3000 + u16::from(c),
        0x4000 + u16::from(d),
        4 + u16::from(d) % 8
    );
    format!(
        "\r\nWindows IP Configuration\r\n\r\n\r\nEthernet adapter Ethernet:\r\n\r\n   Connection-specific DNS Suffix  . : {suffix}\r\n   Link-local IPv6 Address . . . . . : {link_local}\r\n   IPv4 Address. . . . . . . . . . . : {}\r\n   Subnet Mask . . . . . . . . . . . : 255.0.0.0\r\n   Default Gateway . . . . . . . . . : \r\n",
        host.address
    )
}
