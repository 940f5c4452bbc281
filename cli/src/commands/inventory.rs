//! `psfleet inventory list|check`: read inventories as `run` would, and show the hosts with
//! their effective settings (`list`) or only whether they are valid (`check`).

use std::fmt::Write as _;

use clap::{Args, Subcommand};

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::hosts::{self, LoadedHosts};
use crate::options::{ConnectionArgs, OutputFormat, SelectArgs};
use crate::settings::{ConnectionSettings, Selection};

/// `psfleet inventory` subcommands.
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// List the hosts (after --limit) with their URL, authentication, user and groups.
    List(InventoryArgs),
    /// Check the inventories: the first error with file and line, warnings, and a host count.
    Check(InventoryArgs),
}

/// Options of `inventory list` and `inventory check`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// The hosts.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Text table or one JSON object per host [default: text].
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// Connection settings the hosts' settings start from (port, scheme, authentication).
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs `psfleet inventory ...`.
pub fn execute(command: InventoryCommand, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let (args, list) = match command {
        InventoryCommand::List(args) => (args, true),
        InventoryCommand::Check(args) => (args, false),
    };
    let select = Selection::resolve(&args.select, ctx.layers())?;
    select.require_inventory()?;
    let connection = ConnectionSettings::resolve(&args.connection, ctx.layers())?;
    load_and_show(
        list,
        &select,
        &connection,
        args.output.unwrap_or(OutputFormat::Text),
        ctx,
    )
}

/// Loads and resolves the inventories; prints the hosts (`list`) or a count (`check`).
/// Warnings go to standard error; errors exit with the usage/inventory code.
pub fn load_and_show(
    list: bool,
    select: &Selection,
    connection: &ConnectionSettings,
    format: OutputFormat,
    ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    let loaded = hosts::load(select, connection)?;
    for warning in &loaded.warnings {
        ctx.sink.err(&format!("{warning}\n"));
    }
    let summary = format!(
        "{} hosts selected of {} in {} groups from {} ({} warning(s))",
        loaded.hosts.len(),
        loaded.inventory_hosts,
        loaded.groups,
        select.inventory.value.join(", "),
        loaded.warnings.len()
    );
    if !list {
        match format {
            OutputFormat::Text => ctx.sink.out(&format!("ok: {summary}\n")),
            OutputFormat::Json => ctx.sink.out(&format!(
                "{}\n",
                serde_json::json!({
                    "ok": true,
                    "hosts": loaded.hosts.len(),
                    "inventory_hosts": loaded.inventory_hosts,
                    "groups": loaded.groups,
                    "warnings": loaded.warnings,
                })
            )),
        };
        return Ok(Exit::Success);
    }
    match format {
        OutputFormat::Json => {
            let mut text = String::new();
            for host in &loaded.hosts {
                text.push_str(&hosts::host_json(host).to_string());
                text.push('\n');
            }
            ctx.sink.out(&text);
        }
        OutputFormat::Text => {
            ctx.sink.out(&table(&loaded));
            if !ctx.quiet() {
                ctx.sink.err(&format!("{summary}\n"));
            }
        }
    }
    Ok(Exit::Success)
}

/// The text table of `inventory list`.
pub fn table(loaded: &LoadedHosts) -> String {
    let width = |f: &dyn Fn(&psfleet_inventories::Host) -> usize, min: usize| {
        loaded.hosts.iter().map(f).max().unwrap_or(0).clamp(min, 60)
    };
    let name_w = width(&|h| h.name.chars().count(), 4);
    let url_w = width(&|h| h.url().chars().count(), 3);
    let user_w = width(&|h| h.user.as_deref().map_or(1, |u| u.chars().count()), 4);
    let mut s = format!(
        "{:<name_w$}  {:<url_w$}  {:<11}  {:<user_w$}  GROUPS\n",
        "HOST", "URL", "AUTH", "USER"
    );
    for h in &loaded.hosts {
        let groups: Vec<&str> = h
            .groups
            .iter()
            .map(String::as_str)
            .filter(|g| *g != "all")
            .collect();
        let _ = writeln!(
            s,
            "{:<name_w$}  {:<url_w$}  {:<11}  {:<user_w$}  {}",
            h.name,
            h.url(),
            h.authentication.to_string(),
            h.user.as_deref().unwrap_or("-"),
            groups.join(",")
        );
    }
    s
}
