//! psfleet-cli: the `psfleet` command line as a library (the binary's `main` calls
//! [`cli::run`]), so every piece is reachable from tests and from the lead's wiring.
//!
//! One module per concern:
//! [`options`] (clap option groups), [`config`] (psfleet.toml), [`settings`] (precedence),
//! [`credentials`] and [`tty`] (the password), [`hosts`] (inventories to hosts), [`client`] (settings to the engine's client options), [`exit`] (exit codes), [`console`] and
//! [`logging`] (stderr around the bars), [`progress`], [`output`], [`drive`] (the run loop), [`fleet_run`] (a job over the fleet through the engine's runner),
//! and [`commands`] (one module per command; `psfleet sim` is [`sim_cmd`], the simulator's). docs/cli.md documents the surface.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod console;
pub mod credentials;
pub mod drive;
pub mod exit;
pub mod fleet_run;
#[doc(hidden)]
pub mod fuzzing;
pub mod hosts;
pub mod logging;
pub mod options;
pub mod output;
pub mod progress;
pub mod settings;
pub mod sim_cmd;
pub mod tty;
