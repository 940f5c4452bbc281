//! The terminal psfleet writes to: standard output for results, standard error for logs and
//! progress. Every write goes through [`Console`], which hides the progress bars for the
//! moment of the write and draws them again after it, so neither a log line nor a result
//! line is lost under (or torn by) a bar. Without bars, a write is just a write.
//!
//! A closed standard output (`psfleet run ... | head`) stops result output quietly instead of
//! failing the run: the hosts' outcomes are in the journal regardless. Any other write error
//! (a full disk, an I/O error) stops result output too, and is kept
//! ([`Console::stdout_failure`]): the command ends with exit code 7 (`output`).

use std::io::{self, IsTerminal as _, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressDrawTarget};

use crate::options::ColorChoice;

/// Shared handle on stdout, stderr and the progress bars (cheap to clone).
#[derive(Clone)]
pub struct Console {
    bars: MultiProgress,
    stdout_closed: Arc<AtomicBool>,
    stdout_failure: Arc<Mutex<Option<(io::ErrorKind, String)>>>,
    color: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("bars_hidden", &self.bars.is_hidden())
            .field("color", &self.color)
            .finish()
    }
}

impl Console {
    /// A console with no bars drawn yet; `color` says whether standard error gets colours.
    pub fn new(color: bool) -> Self {
        Self {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            stdout_closed: Arc::new(AtomicBool::new(false)),
            stdout_failure: Arc::new(Mutex::new(None)),
            color,
        }
    }

    /// The bars (progress.rs adds its bars here and turns drawing on).
    pub fn bars(&self) -> &MultiProgress {
        &self.bars
    }

    /// Whether colours are on for standard error.
    pub fn color(&self) -> bool {
        self.color
    }

    /// Writes `bytes` to standard error with the bars out of the way.
    pub fn write_stderr(&self, bytes: &[u8]) {
        self.bars.suspend(|| {
            let mut err = io::stderr().lock();
            // Nothing sensible is left to report a failing stderr to.
            let _ = err.write_all(bytes).and_then(|()| err.flush());
        });
    }

    /// Writes a line to standard error.
    pub fn eprintln(&self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.write_stderr(&bytes);
    }

    /// Writes `bytes` to standard output with the bars out of the way. Returns false once
    /// standard output is closed (and stays quiet from then on).
    pub fn write_stdout(&self, bytes: &[u8]) -> bool {
        if self.stdout_closed.load(Ordering::Relaxed) {
            return false;
        }
        let result = self.bars.suspend(|| {
            let mut out = io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        });
        match result {
            Ok(()) => true,
            Err(e) => {
                if !self.stdout_closed.swap(true, Ordering::Relaxed) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        tracing::warn!(error = %e, "standard output is closed; results go to the journal only");
                    } else {
                        tracing::error!(error = %e, "standard output cannot be written; results go to the journal only");
                        if let Ok(mut failure) = self.stdout_failure.lock() {
                            *failure = Some((e.kind(), e.to_string()));
                        }
                    }
                }
                false
            }
        }
    }

    /// The error that stopped standard output, unless it was a closed pipe (`| head`, which
    /// is the reader's choice, not a failure).
    pub fn stdout_failure(&self) -> Option<io::Error> {
        let failure = self.stdout_failure.lock().ok()?;
        failure
            .as_ref()
            .map(|(kind, text)| io::Error::new(*kind, text.clone()))
    }
}

/// Where result lines and progress lines go: the console, or memory in tests.
#[derive(Clone, Debug)]
pub enum Sink {
    /// Standard output and standard error, around the bars.
    Console(Console),
    /// Captured lines (tests).
    #[cfg(test)]
    Memory(Arc<std::sync::Mutex<Captured>>),
}

/// Lines captured by [`Sink::Memory`].
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Captured {
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

impl Sink {
    /// Writes `text` to standard output; false once it is closed.
    pub fn out(&self, text: &str) -> bool {
        match self {
            Sink::Console(console) => console.write_stdout(text.as_bytes()),
            #[cfg(test)]
            Sink::Memory(m) => {
                if let Ok(mut m) = m.lock() {
                    m.out.push_str(text);
                }
                true
            }
        }
    }

    /// Writes `text` to standard error.
    pub fn err(&self, text: &str) {
        match self {
            Sink::Console(console) => console.write_stderr(text.as_bytes()),
            #[cfg(test)]
            Sink::Memory(m) => {
                if let Ok(mut m) = m.lock() {
                    m.err.push_str(text);
                }
            }
        }
    }

    /// The console, when writing to one.
    pub fn console(&self) -> Option<&Console> {
        match self {
            Sink::Console(console) => Some(console),
            #[cfg(test)]
            Sink::Memory(_) => None,
        }
    }

    /// Whether colours are on.
    pub fn color(&self) -> bool {
        self.console().is_some_and(Console::color)
    }

    /// The error that stopped standard output ([`Console::stdout_failure`]).
    pub fn stdout_failure(&self) -> Option<io::Error> {
        self.console().and_then(Console::stdout_failure)
    }
}

/// Whether to colour standard error: `--color`, then NO_COLOR (any non-empty value turns
/// colours off, <https://no-color.org>), then whether standard error is a terminal.
pub fn use_color(choice: ColorChoice, no_color: Option<&std::ffi::OsStr>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => no_color.is_none_or(|v| v.is_empty()) && io::stderr().is_terminal(),
    }
}

/// A `tracing` writer that hands each finished log event to the [`Console`] in one write.
#[derive(Clone, Debug)]
pub struct LogWriter {
    console: Console,
}

impl LogWriter {
    /// A writer onto `console`'s standard error.
    pub fn new(console: Console) -> Self {
        Self { console }
    }
}

/// One log event being formatted; written out when tracing drops it.
pub struct LogLine {
    console: Console,
    buf: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.console.write_stderr(&self.buf);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine {
            console: self.console.clone(),
            buf: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_and_choices_decide_colours() {
        assert!(use_color(ColorChoice::Always, Some("1".as_ref())));
        assert!(!use_color(ColorChoice::Never, None));
        // NO_COLOR set (non-empty) wins over a terminal in auto mode.
        assert!(!use_color(ColorChoice::Auto, Some("1".as_ref())));
    }
}
