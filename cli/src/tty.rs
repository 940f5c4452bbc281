//! Reading a password from the controlling terminal without echoing it.
//!
//! This is the only `unsafe` in psfleet: two libc calls (`tcgetattr`, `tcsetattr`) on the
//! file descriptor of `/dev/tty`, which this module opens and owns for the duration of the
//! prompt. The terminal is put in a non-canonical, no-echo, no-signal mode so that psfleet
//! reads each key itself: Ctrl-C and Ctrl-D cancel the prompt *after* the terminal settings
//! are restored (with signals on, a Ctrl-C would kill the process with echo still off), and
//! the settings are restored by a guard on every path out, errors included.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

/// The longest password accepted from the prompt (bytes).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// How a prompt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PromptOutcome {
    /// The line typed (without the newline).
    Entered(String),
    /// Ctrl-C or Ctrl-D on an empty line.
    Cancelled,
}

/// Something that can ask for a password (the terminal; tests pass a fake).
pub trait PasswordPrompt {
    /// Shows `text` and reads a password; `Ok(None)` when there is no terminal to ask on.
    fn ask(&mut self, text: &str) -> io::Result<Option<PromptOutcome>>;
}

/// The controlling terminal (`/dev/tty`), whatever standard input and output are: a
/// password prompt works inside `psfleet run -i - < hosts.txt | tee log`.
#[derive(Debug, Default)]
pub struct TerminalPrompt;

impl PasswordPrompt for TerminalPrompt {
    fn ask(&mut self, text: &str) -> io::Result<Option<PromptOutcome>> {
        let tty = match OpenOptions::new().read(true).write(true).open("/dev/tty") {
            Ok(tty) => tty,
            // ENXIO (no controlling terminal) and friends: nobody to ask.
            Err(_) => return Ok(None),
        };
        read_hidden(tty, text).map(Some)
    }
}

fn read_hidden(mut tty: File, text: &str) -> io::Result<PromptOutcome> {
    tty.write_all(text.as_bytes())?;
    tty.flush()?;
    let outcome = {
        let _guard = EchoOff::new(&tty)?;
        read_keys(&mut tty)
    };
    // The newline the user typed was not echoed.
    tty.write_all(b"\n")?;
    outcome
}

/// Reads keys until Enter: Backspace and Ctrl-U edit, Ctrl-C and Ctrl-D cancel.
fn read_keys(input: &mut impl Read) -> io::Result<PromptOutcome> {
    let mut line: Vec<u8> = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if input.read(&mut byte)? == 0 {
            return Ok(PromptOutcome::Cancelled);
        }
        match byte[0] {
            b'\r' | b'\n' => break,
            0x03 => return Ok(PromptOutcome::Cancelled),
            0x04 if line.is_empty() => return Ok(PromptOutcome::Cancelled),
            0x04 => break,
            0x7f | 0x08 => {
                // Drop the last character, not the last byte of a multi-byte one.
                while let Some(b) = line.pop() {
                    if b & 0xC0 != 0x80 {
                        break;
                    }
                }
            }
            0x15 => line.clear(),
            b if line.len() < MAX_PASSWORD_BYTES => line.push(b),
            _ => {}
        }
    }
    String::from_utf8(line)
        .map(PromptOutcome::Entered)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the password is not UTF-8"))
}

/// Terminal settings with echo, canonical mode and signals off; restored on drop.
struct EchoOff {
    fd: i32,
    saved: libc::termios,
}

impl EchoOff {
    fn new(tty: &File) -> io::Result<Self> {
        let fd = tty.as_raw_fd();
        // SAFETY: `termios` is a plain C struct for which all-zero bytes are a valid value;
        // tcgetattr overwrites it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is the open descriptor of `tty`, which outlives this guard (the
        // caller holds it), and `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG);
        quiet.c_cc[libc::VMIN] = 1;
        quiet.c_cc[libc::VTIME] = 0;
        // SAFETY: as above; `quiet` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: `fd` is still open (the File outlives the guard); `saved` came from
        // tcgetattr. A failure cannot be reported from drop; the terminal keeps the quiet
        // mode, as it would after a crash, and `stty sane` fixes it.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSAFLUSH, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(bytes: &[u8]) -> PromptOutcome {
        read_keys(&mut &bytes[..]).unwrap()
    }

    #[test]
    fn keys_edit_and_cancel_as_a_terminal_user_expects() {
        assert_eq!(keys(b"s3cret\r"), PromptOutcome::Entered("s3cret".into()));
        assert_eq!(
            keys(b"s3crex\x7ft\n"),
            PromptOutcome::Entered("s3cret".into())
        );
        assert_eq!(
            keys(b"wrong\x15right\r"),
            PromptOutcome::Entered("right".into())
        );
        assert_eq!(
            keys("pässx\x7f\x7f\x7fss\r".as_bytes()),
            PromptOutcome::Entered("päss".into())
        );
        assert_eq!(keys(b"abc\x03"), PromptOutcome::Cancelled);
        assert_eq!(keys(b"\x04"), PromptOutcome::Cancelled);
        assert_eq!(keys(b""), PromptOutcome::Cancelled);
        let long = vec![b'a'; MAX_PASSWORD_BYTES + 10];
        let mut input = long.clone();
        input.push(b'\r');
        match keys(&input) {
            PromptOutcome::Entered(p) => assert_eq!(p.len(), MAX_PASSWORD_BYTES),
            other => panic!("{other:?}"),
        }
    }
}
