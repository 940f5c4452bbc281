//! psfleet: run Invoke-Command style PowerShell scripts across a Windows fleet over WinRM.
//! The command line lives in the `psfleet_cli` library (cli/src/lib.rs); docs/cli.md
//! documents it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cwd = std::env::current_dir().unwrap_or_default();
    psfleet_cli::cli::run(args, &cwd, &|name| std::env::var_os(name)).into()
}
