//! The WinRS cmd shell's commands (MS-WSMV 3.1.4.11-3.1.4.14; wire-facts 2.4).
//!
//! A Command is recorded and runs when its input is complete: on a Send with `End="true"`,
//! or on the first Receive (clients that send no stdin go straight to Receive). Its output
//! is released when the command's simulated duration has passed, base64 `rsp:Stream`
//! chunks sized to the client's MaxEnvelopeSize, then the empty `End="true"` streams and
//! `CommandState` Done with the exit code (R:test_winrs_standard); a response cut short by
//! the envelope says `CommandState` Running (R:test_winrs_operation_timeout).

use std::collections::BTreeMap;
use std::time::Duration;

use psfleet_core::wsman::{CommandState, CommandStateInfo, ReceiveResponse, ReceivedStream};
use uuid::Uuid;

use super::output::ReceiveBudget;
use super::script::PlannedCmd;

/// Commands one cmd shell keeps; more get a quota fault.
pub(super) const MAX_COMMANDS: usize = 64;

/// Largest stdin one command buffers (bytes); more is refused as an invalid parameter.
pub(super) const MAX_STDIN: usize = 16 * 1024 * 1024;

/// `STATUS_CONTROL_C_EXIT`: the exit code of a process stopped by Ctrl+C.
pub(super) const CTRL_C_EXIT: i64 = -1_073_741_510;

/// Why a WinRS operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmdRefusal {
    /// No such command (or finished and received).
    UnknownCommand,
    /// Too many commands or too much stdin.
    TooMuch,
}

/// A command ready to run outside the host lock.
#[derive(Debug, Clone)]
pub(super) struct CmdJob {
    /// The CommandId.
    pub command_id: Uuid,
    /// `rsp:Command`.
    pub command: String,
    /// `rsp:Arguments`.
    pub arguments: Vec<String>,
    /// stdin received.
    pub stdin: Vec<u8>,
}

/// What a Receive found.
#[derive(Debug)]
pub(super) enum CmdReceive {
    /// Output (and, when `done`, the final state).
    Data(ReceiveResponse),
    /// Not finished; output is due at this time.
    NotYet(Duration),
    /// The command must run first: run this job, then receive again.
    Run(CmdJob),
    /// Another request is running it; ask again shortly.
    Starting,
}

/// The commands of a cmd shell.
#[derive(Debug, Default)]
pub(super) struct CmdShell {
    commands: BTreeMap<Uuid, CmdCommand>,
}

#[derive(Debug)]
struct CmdCommand {
    command: String,
    arguments: Vec<String>,
    stdin: Vec<u8>,
    phase: CmdPhase,
}

#[derive(Debug)]
enum CmdPhase {
    /// Waiting for its input or first Receive.
    Pending,
    /// Handed to the interpreter.
    Starting,
    /// Output is released at `done_at`.
    Finished {
        done_at: Duration,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        stdout_sent: usize,
        stderr_sent: usize,
        exit_code: i64,
    },
    /// Done was sent to the client.
    Delivered,
}

impl CmdShell {
    /// Records a command.
    pub(super) fn command(
        &mut self,
        id: Uuid,
        command: String,
        arguments: Vec<String>,
    ) -> Result<(), CmdRefusal> {
        if self.commands.len() >= MAX_COMMANDS {
            self.commands
                .retain(|_, c| !matches!(c.phase, CmdPhase::Delivered));
            if self.commands.len() >= MAX_COMMANDS {
                return Err(CmdRefusal::TooMuch);
            }
        }
        self.commands.insert(
            id,
            CmdCommand {
                command,
                arguments,
                stdin: Vec::new(),
                phase: CmdPhase::Pending,
            },
        );
        Ok(())
    }

    /// stdin for a command; returns the job to run once `end` closes the input.
    pub(super) fn send(
        &mut self,
        id: Uuid,
        data: &[u8],
        end: bool,
    ) -> Result<Option<CmdJob>, CmdRefusal> {
        let command = self
            .commands
            .get_mut(&id)
            .ok_or(CmdRefusal::UnknownCommand)?;
        if !matches!(command.phase, CmdPhase::Pending) {
            // Input after the process ended is dropped, as a closed pipe drops it.
            return Ok(None);
        }
        if command.stdin.len().saturating_add(data.len()) > MAX_STDIN {
            return Err(CmdRefusal::TooMuch);
        }
        command.stdin.extend_from_slice(data);
        Ok(end.then(|| start(id, command)))
    }

    /// Installs a job's result, its output due `duration` after `started_at`.
    pub(super) fn install(&mut self, id: Uuid, result: PlannedCmd, started_at: Duration) {
        let Some(command) = self.commands.get_mut(&id) else {
            return;
        };
        if !matches!(command.phase, CmdPhase::Starting) {
            return;
        }
        command.phase = CmdPhase::Finished {
            done_at: started_at.saturating_add(result.duration),
            stdout: result.stdout,
            stderr: result.stderr,
            stdout_sent: 0,
            stderr_sent: 0,
            exit_code: result.exit_code,
        };
    }

    /// Receive for a command; `streams` are the names the client asked for.
    pub(super) fn receive(
        &mut self,
        id: Uuid,
        streams: &[String],
        now: Duration,
        budget: &mut ReceiveBudget,
    ) -> Result<CmdReceive, CmdRefusal> {
        let command = self
            .commands
            .get_mut(&id)
            .ok_or(CmdRefusal::UnknownCommand)?;
        let CmdPhase::Finished {
            done_at,
            stdout,
            stderr,
            stdout_sent,
            stderr_sent,
            exit_code,
        } = &mut command.phase
        else {
            return match command.phase {
                CmdPhase::Pending => Ok(CmdReceive::Run(start(id, command))),
                CmdPhase::Starting => Ok(CmdReceive::Starting),
                _ => Err(CmdRefusal::UnknownCommand),
            };
        };
        if now < *done_at {
            return Ok(CmdReceive::NotYet(*done_at));
        }
        let wants = |name: &str| streams.is_empty() || streams.iter().any(|s| s == name);
        let mut out = Vec::new();
        for (name, data, sent) in [
            ("stdout", &*stdout, &mut *stdout_sent),
            ("stderr", &*stderr, &mut *stderr_sent),
        ] {
            if !wants(name) {
                *sent = data.len();
                continue;
            }
            let rest = data.get(*sent..).unwrap_or_default();
            let take = rest.len().min(budget.stream_capacity());
            if take == 0 {
                continue;
            }
            budget.charge(take);
            out.push(ReceivedStream {
                name: name.to_owned(),
                command_id: Some(id),
                end: false,
                data: rest.get(..take).unwrap_or_default().to_vec(),
            });
            *sent += take;
        }
        let all_sent = *stdout_sent >= stdout.len() && *stderr_sent >= stderr.len();
        let state = if all_sent && budget.fits_empty_streams(2) {
            for name in ["stdout", "stderr"].into_iter().filter(|n| wants(n)) {
                out.push(ReceivedStream {
                    name: name.to_owned(),
                    command_id: Some(id),
                    end: true,
                    data: Vec::new(),
                });
            }
            let code = *exit_code;
            command.phase = CmdPhase::Delivered;
            CommandStateInfo {
                command_id: Some(id),
                state: CommandState::Done,
                exit_code: Some(code),
            }
        } else {
            CommandStateInfo {
                command_id: Some(id),
                state: CommandState::Running,
                exit_code: None,
            }
        };
        Ok(CmdReceive::Data(ReceiveResponse {
            streams: out,
            command_state: Some(state),
        }))
    }

    /// Ctrl+C or Ctrl+Break: a command whose output is not due yet ends now with
    /// `STATUS_CONTROL_C_EXIT`; a pending one ends without running.
    pub(super) fn interrupt(&mut self, id: Uuid, now: Duration) -> Result<(), CmdRefusal> {
        let command = self
            .commands
            .get_mut(&id)
            .ok_or(CmdRefusal::UnknownCommand)?;
        match &mut command.phase {
            CmdPhase::Finished {
                done_at, exit_code, ..
            } if now < *done_at => {
                *done_at = now;
                *exit_code = CTRL_C_EXIT;
            }
            CmdPhase::Pending | CmdPhase::Starting => {
                command.phase = CmdPhase::Finished {
                    done_at: now,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    stdout_sent: 0,
                    stderr_sent: 0,
                    exit_code: CTRL_C_EXIT,
                };
            }
            _ => {}
        }
        Ok(())
    }

    /// Terminate: forgets the command (pywinrm's cleanup after Done).
    pub(super) fn terminate(&mut self, id: Uuid) -> Result<(), CmdRefusal> {
        self.commands
            .remove(&id)
            .map(|_| ())
            .ok_or(CmdRefusal::UnknownCommand)
    }

    /// The commands still running or unread, with their command lines (for Enumerate).
    pub(super) fn listing(&self) -> Vec<(Uuid, String)> {
        self.commands
            .iter()
            .filter(|(_, c)| !matches!(c.phase, CmdPhase::Delivered))
            .map(|(id, c)| {
                let mut line = c.command.clone();
                for a in &c.arguments {
                    line.push(' ');
                    line.push_str(a);
                }
                (*id, line)
            })
            .collect()
    }
}

fn start(id: Uuid, command: &mut CmdCommand) -> CmdJob {
    command.phase = CmdPhase::Starting;
    CmdJob {
        command_id: id,
        command: command.command.clone(),
        arguments: command.arguments.clone(),
        stdin: std::mem::take(&mut command.stdin),
    }
}
