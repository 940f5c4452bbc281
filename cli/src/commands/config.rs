//! `psfleet config show|path`: the effective settings with the origin of each (command
//! line, environment variable, configuration file and line, or default), and which
//! configuration file is used.

use clap::{Args, Subcommand};

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ConnectionArgs, FleetArgs, OutputArgs};
use crate::settings::{ConnectionSettings, FleetSettings, OutputSettings, Row, opt_row, row};

/// `psfleet config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Every setting: `key = value  # origin`; options given here count as the command line.
    Show(Box<ShowArgs>),
    /// The configuration file in use, and the places searched.
    Path,
}

/// Options of `config show`: the options of `run`, to see what they would resolve to.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Connection options.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Fleet options.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `psfleet config ...`.
pub fn execute(command: ConfigCommand, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let text = match command {
        ConfigCommand::Show(args) => show(&args, ctx)?,
        ConfigCommand::Path => path(ctx),
    };
    ctx.sink.out(&text);
    Ok(Exit::Success)
}

fn show(args: &ShowArgs, ctx: &Context<'_>) -> Result<String, CliError> {
    let connection = ConnectionSettings::resolve(&args.connection, ctx.layers())?;
    let fleet = FleetSettings::resolve(&args.fleet, ctx.layers())?;
    let output = OutputSettings::resolve(&args.output, ctx.layers())?;
    let g = &ctx.global;
    let mut rows = vec![
        opt_row("state-dir", g.state_dir.as_ref()),
        row("color", &g.color),
        opt_row("log", g.log.as_ref()),
    ];
    rows.extend(connection.rows());
    rows.extend(fleet.rows());
    rows.extend(output.rows());
    let mut text = match &ctx.config.path {
        Some(path) => format!("# configuration file: {}\n", path.display()),
        None => "# configuration file: none\n".to_owned(),
    };
    for row in rows {
        text.push_str(&render(&row));
        text.push('\n');
    }
    Ok(text)
}

/// `key = value  # origin` (TOML, so the output can seed a psfleet.toml), or
/// `# key (not set)`.
fn render(row: &Row) -> String {
    match (&row.value, &row.origin) {
        (Some(value), Some(origin)) => format!("{} = {value}  # {origin}", row.key),
        _ => format!("# {} (not set)", row.key),
    }
}

fn path(ctx: &Context<'_>) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut text = match &ctx.config.path {
        Some(path) => format!("{}\n", path.display()),
        None => "none\n".to_owned(),
    };
    text.push_str("# searched, in order:\n");
    let explicit = ctx
        .matches
        .get_one::<std::path::PathBuf>("config")
        .map(|p| p.as_path());
    for candidate in crate::config::candidates(explicit, &cwd, ctx.env) {
        text.push_str(&format!("#   {}\n", candidate.display()));
    }
    text
}
