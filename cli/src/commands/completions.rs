//! `psfleet completions SHELL`: a completion script on standard output.
//!
//! bash: `psfleet completions bash > ~/.local/share/bash-completion/completions/psfleet`;
//! zsh: into a directory of `$fpath` as `_psfleet`; fish:
//! `~/.config/fish/completions/psfleet.fish`; PowerShell: `psfleet completions powershell |
//! Out-String | Invoke-Expression` in `$PROFILE`.

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use crate::cli::{Cli, Context};
use crate::exit::{CliError, Exit};

/// `psfleet completions` options.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Runs `psfleet completions`.
pub fn execute(args: CompletionsArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let script = script(args.shell);
    if !ctx.sink.out(&script) {
        return Err(CliError::Internal(
            "cannot write the completion script to standard output".into(),
        ));
    }
    Ok(Exit::Success)
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "psfleet", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell] {
            let s = script(shell);
            for word in [
                "run",
                "sweep",
                "doctor",
                "use-ssl",
                "forks",
                "password-file",
            ] {
                assert!(s.contains(word), "{shell}: {word}");
            }
        }
    }
}
