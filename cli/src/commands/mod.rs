//! One module per command. Each has its clap `Args` and an `execute` that merges the
//! settings, validates them, and runs. Commands whose engine pieces are not in this build yet
//! validate everything they can and then call a clearly named function that returns
//! [`CliError::NotAvailable`](crate::exit::CliError::NotAvailable) (exit code 5): those are
//! the places to wire the engine in.

pub mod cleanup;
pub mod completions;
pub mod config;
pub mod demo;
pub mod diff;
pub mod doctor;
pub mod enter;
pub mod inventory;
pub mod report;
pub mod run;
pub mod runs;
pub mod sim;
pub mod sweep;

use crate::exit::CliError;

/// The error of a command whose engine pieces are not in this build.
pub fn not_available(command: &'static str, missing: &'static str) -> CliError {
    CliError::NotAvailable { command, missing }
}

/// Checks a host name given on the command line (`enter HOST`, `doctor HOST`): the
/// transport checks it fully (RFC 1123 or an IP address); this refuses what cannot be a
/// host at all, before anything else happens.
pub fn check_host_argument(host: &str) -> Result<(), CliError> {
    let host = host.trim();
    if host.is_empty() {
        return Err(CliError::usage("the host name is empty"));
    }
    if host.len() > 255 || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CliError::usage(format!(
            "{:?} is not a host name or address",
            host.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// The folder of `run` under `<state_dir>/runs` (a usage error names the runs folder when
/// there is no such run).
pub fn find_run(
    state_dir: &std::path::Path,
    run: &crate::options::RunRef,
) -> Result<std::path::PathBuf, CliError> {
    use crate::options::RunRef;
    use psfleet_engine::journal;
    let runs = state_dir.join(journal::RUNS_DIR);
    let dirs = journal::list_run_dirs(state_dir).map_err(|e| CliError::state_dir(state_dir, &e))?;
    let pick = match run {
        RunRef::Last => dirs.last(),
        RunRef::Previous => dirs.len().checked_sub(2).and_then(|i| dirs.get(i)),
        RunRef::Id(id) => dirs
            .iter()
            .find(|d| d.file_name().is_some_and(|n| n == id.as_str())),
    };
    pick.cloned().ok_or_else(|| match (run, dirs.len()) {
        (RunRef::Id(id), _) => CliError::usage(format!(
            "no run {id} in {} (`psfleet runs` lists them)",
            runs.display()
        )),
        (_, 0) => CliError::usage(format!("no runs in {} yet", runs.display())),
        _ => CliError::usage(format!(
            "there is no run before the last one in {}",
            runs.display()
        )),
    })
}

/// Reads a run back from its journal.
pub fn replay_run(dir: &std::path::Path) -> Result<psfleet_engine::journal::RunState, CliError> {
    let state = psfleet_engine::journal::Journal::replay(dir)
        .map_err(|e| CliError::Internal(format!("cannot read the run: {e}")))?;
    if let Some(torn) = &state.torn_tail {
        tracing::warn!(run = %state.meta.run_id, bytes = torn.bytes, "the journal ends in a torn line (ignored)");
    }
    if state.corrupt_lines > 0 {
        tracing::warn!(run = %state.meta.run_id, lines = state.corrupt_lines, "unreadable journal lines skipped");
    }
    Ok(state)
}
