//! psfleet: the command-line tool. One module per subcommand; `main` only parses the
//! command line and hands over.

mod sim_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run an Invoke-Command style PowerShell script across a Windows fleet over WinRM.
#[derive(Debug, Parser)]
#[command(name = "psfleet", version, about)]
struct Cli {
    /// The command to run.
    #[command(subcommand)]
    command: Command,
}

/// psfleet's subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Start a simulated Windows fleet on loopback addresses and write its inventory.
    Sim(sim_cmd::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PSFLEET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Sim(args) => sim_cmd::main(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
