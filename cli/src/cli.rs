//! The command line (clap derive) and the path from argv to an exit code: refuse a password
//! in argv, parse, load the configuration file, set up logging, run the command, map its
//! error to an exit code (docs/cli.md).

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::{ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::commands;
use crate::config::{self, ConfigFile};
use crate::console::{Console, Sink};
use crate::credentials;
use crate::exit::{CliError, Exit};
use crate::logging;
use crate::options::ColorChoice;
use crate::settings::{GlobalSettings, Layers};

/// Exit codes, shown under `--help`.
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  every host succeeded
  2  the run finished and some hosts failed (see the summary or the report)
  3  the run was interrupted (continue it with --resume last)
  4  usage, configuration, credential or inventory error: nothing ran
  5  internal error (a psfleet bug, a feature not in this build)
  6  the state directory cannot be used (permissions, not a directory, read-only or
     full file system, locked by another psfleet): nothing ran
  7  reports or standard output could not be written (full disk, I/O error): the
     results are in the run's journal; `psfleet report RUN` writes them again

Configuration: psfleet.toml (--config, ./psfleet.toml, $XDG_CONFIG_HOME/psfleet/psfleet.toml)
and PSFLEET_* environment variables; the command line wins over both. See docs/cli.md.";

/// Run Invoke-Command style PowerShell scripts across a Windows fleet over WinRM, and say
/// host by host what happened and why.
#[derive(Debug, Parser)]
#[command(
    name = "psfleet",
    version,
    about,
    after_help = EXIT_CODES_HELP,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes (before or after the command name).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global")]
pub struct GlobalArgs {
    /// Configuration file [default: ./psfleet.toml, else
    /// $XDG_CONFIG_HOME/psfleet/psfleet.toml].
    #[arg(long, global = true, env = "PSFLEET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where runs, journals and the host cache live [default: $XDG_STATE_HOME/psfleet,
    /// else ~/.local/state/psfleet].
    #[arg(long, global = true, env = "PSFLEET_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); PSFLEET_LOG takes a full filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Errors only: no progress, no warnings, no summary on standard error.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colours on standard error [default: auto: on a terminal unless NO_COLOR is set].
    #[arg(
        long,
        global = true,
        env = "PSFLEET_COLOR",
        value_name = "WHEN",
        value_enum
    )]
    pub color: Option<ColorChoice>,
}

/// psfleet's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a PowerShell script (or a cmd command) on every host of the inventory.
    Run(commands::run::RunArgs),
    /// Check every host: resolve, connect, identify, authenticate, read its WinRM configuration.
    Sweep(commands::sweep::SweepArgs),
    /// An interactive PowerShell session on one host, like Enter-PSSession.
    Enter(commands::enter::EnterArgs),
    /// Diagnose one host step by step, naming the reason and the fix for the first failing step.
    Doctor(commands::doctor::DoctorArgs),
    /// Write the CSV, HTML or JSON report of a run from the state directory.
    Report(commands::report::ReportArgs),
    /// List the runs in the state directory.
    Runs(commands::runs::RunsArgs),
    /// Compare two runs: newly failing, recovered, bucket changed, output changed.
    Diff(commands::diff::DiffArgs),
    /// Delete shells left open on the hosts (leaked by crashed runs or other tools).
    Cleanup(commands::cleanup::CleanupArgs),
    /// Read an inventory: list its hosts with their settings, or check it.
    #[command(subcommand)]
    Inventory(commands::inventory::InventoryCommand),
    /// Start a simulated Windows fleet on loopback addresses (for tests and the demo).
    Sim(commands::sim::SimArgs),
    /// Start a simulated fleet, sweep it, run a script on it, and write both reports.
    Demo(commands::demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(commands::completions::CompletionsArgs),
    /// Show the effective settings and where each comes from, or the configuration file used.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
}

/// What a command runs with.
pub struct Context<'a> {
    /// The terminal.
    pub console: Console,
    /// Where results and progress lines go.
    pub sink: Sink,
    /// The loaded configuration file.
    pub config: &'a ConfigFile,
    /// The matches of the command that runs (the innermost subcommand).
    pub matches: &'a ArgMatches,
    /// Global settings.
    pub global: GlobalSettings,
    /// -q (-1) / -v count.
    pub verbosity: i8,
    /// The process environment.
    pub env: &'a dyn Fn(&str) -> Option<OsString>,
    /// Whether standard error is a terminal (progress bars).
    pub stderr_is_terminal: bool,
}

impl Context<'_> {
    /// The layers for merging this command's options.
    pub fn layers(&self) -> Layers<'_> {
        Layers::new(self.matches, self.config)
    }

    /// `-q` was given.
    pub fn quiet(&self) -> bool {
        self.verbosity < 0
    }
}

/// Runs psfleet with `args` (argv, program name first) in `cwd` and returns the exit code.
pub fn run(args: Vec<OsString>, cwd: &Path, env: &dyn Fn(&str) -> Option<OsString>) -> Exit {
    if credentials::password_on_command_line(&args) {
        eprintln!("psfleet: {}", credentials::PASSWORD_ON_COMMAND_LINE);
        return Exit::Usage;
    }
    let matches = match Cli::command().try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(e) => {
            // clap prints help and version to stdout, errors to stderr.
            let _ = e.print();
            if let Some(note) = env_note(&e, &args, env) {
                eprintln!("{note}");
            }
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Success,
                _ => Exit::Usage,
            };
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("psfleet: internal error: {e}");
            return Exit::Internal;
        }
    };
    let leaf = leaf(&matches);
    let config = match config::discover(cli.global.config.as_deref(), cwd, env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("psfleet: {e}");
            return Exit::Usage;
        }
    };
    let global = GlobalSettings::resolve(
        cli.global.state_dir.clone(),
        cli.global.color,
        Layers::new(leaf, &config),
        env,
    );
    let no_color = env("NO_COLOR");
    let console = Console::new(crate::console::use_color(
        global.color.value,
        no_color.as_deref(),
    ));
    let verbosity = logging::verbosity(cli.global.quiet, cli.global.verbose);
    if let Err(e) = logging::init(&console, verbosity, global.log.as_ref()) {
        eprintln!("psfleet: {e}");
        return e.exit();
    }
    let ctx = Context {
        sink: Sink::Console(console.clone()),
        console,
        config: &config,
        matches: leaf,
        global,
        verbosity,
        env,
        stderr_is_terminal: std::io::stderr().is_terminal(),
    };
    let report = |e: &CliError| {
        let label = if ctx.console.color() {
            "\x1b[31merror\x1b[0m"
        } else {
            "error"
        };
        ctx.console.eprintln(&format!("psfleet: {label}: {e}"));
        e.exit()
    };
    match dispatch(cli.command, &ctx) {
        // Standard output failed on the way (a full disk, an I/O error; not a closed pipe):
        // the command's own outcome was no worse than that, so exit 7 says so.
        Ok(exit) => match ctx.sink.stdout_failure() {
            Some(error) if exit.worst(Exit::Output) == Exit::Output => {
                report(&CliError::output("standard output", &error, None))
            }
            _ => exit,
        },
        Err(e) => report(&e),
    }
}

fn dispatch(command: Command, ctx: &Context<'_>) -> Result<Exit, CliError> {
    match command {
        Command::Run(args) => commands::run::execute(args, ctx),
        Command::Sweep(args) => commands::sweep::execute(args, ctx),
        Command::Enter(args) => commands::enter::execute(args, ctx),
        Command::Doctor(args) => commands::doctor::execute(args, ctx),
        Command::Report(args) => commands::report::execute(args, ctx),
        Command::Runs(args) => commands::runs::execute(args, ctx),
        Command::Diff(args) => commands::diff::execute(args, ctx),
        Command::Cleanup(args) => commands::cleanup::execute(args, ctx),
        Command::Inventory(command) => commands::inventory::execute(command, ctx),
        Command::Sim(args) => commands::sim::execute(args, ctx),
        Command::Demo(args) => commands::demo::execute(args, ctx),
        Command::Completions(args) => commands::completions::execute(args, ctx),
        Command::Config(command) => commands::config::execute(command, ctx),
    }
}

/// When clap refuses a value that came from an environment variable, clap's message names
/// the option only: say which variable it came from.
fn env_note(
    error: &clap::Error,
    args: &[OsString],
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split(['=', ' ', '[']).next()?;
    let on_command_line = args.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
    });
    let name = crate::settings::env_name(&long.replace('-', "_"));
    (!on_command_line && env(&name).is_some())
        .then(|| format!("note: the value comes from the environment variable {name}"))
}

/// The matches of the innermost subcommand (where the options that run live).
fn leaf(matches: &ArgMatches) -> &ArgMatches {
    let mut current = matches;
    // Subcommands nest at most two deep (`inventory list`); the loop ends at the leaf.
    while let Some((_, sub)) = current.subcommand() {
        current = sub;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every option with an environment variable follows the PSFLEET_<ID> rule
    /// (`settings::env_name`, which names the origin of env values).
    #[test]
    fn environment_variables_follow_the_naming_rule() {
        fn walk(cmd: &clap::Command, seen: &mut usize) {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env() {
                    assert_eq!(
                        env.to_str().unwrap(),
                        crate::settings::env_name(arg.get_id().as_str()),
                        "{} in {}",
                        arg.get_id(),
                        cmd.get_name()
                    );
                    *seen += 1;
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, seen);
            }
        }
        let mut seen = 0;
        walk(&Cli::command(), &mut seen);
        assert!(seen > 30, "{seen}");
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    /// docs/cli.md names every command, every long option, every environment variable and
    /// every configuration key (`psfleet sim`'s own options: docs/simulator.md, which the
    /// simulator's owners keep).
    #[test]
    fn docs_cover_the_whole_command_line() {
        let docs = include_str!("../../docs/cli.md");
        let sim_docs = include_str!("../../docs/simulator.md");
        fn walk(cmd: &clap::Command, path: &str, docs: &str, missing: &mut Vec<String>) {
            let sim_docs = include_str!("../../docs/simulator.md");
            let docs = if path == "psfleet sim" {
                sim_docs
            } else {
                docs
            };
            for arg in cmd.get_arguments() {
                if arg.is_global_set() && path != "psfleet" {
                    continue;
                }
                if let Some(long) = arg.get_long()
                    && !["help", "version"].contains(&long)
                    && !docs.contains(&format!("--{long}"))
                {
                    missing.push(format!("{path} --{long}"));
                }
                if let Some(env) = arg.get_env()
                    && !docs.contains(env.to_str().unwrap_or_default())
                {
                    missing.push(format!("{path} {env:?}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help"
                    && !docs.contains(&format!("`{}", name.trim_start_matches("psfleet ")))
                    && !docs.contains(&format!("psfleet {}", sub.get_name()))
                {
                    missing.push(name.clone());
                }
                walk(sub, &name, docs, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "psfleet", docs, &mut missing);
        for key in crate::config::KEYS {
            if !docs.contains(&format!("`{key}`")) {
                missing.push(format!("config key {key}"));
            }
        }
        assert!(sim_docs.contains("psfleet sim"));
        for var in ["PSFLEET_PASSWORD", "PSFLEET_LOG", "NO_COLOR"] {
            if !docs.contains(var) {
                missing.push(var.to_owned());
            }
        }
        assert!(missing.is_empty(), "docs/cli.md lacks: {missing:?}");
    }
}
