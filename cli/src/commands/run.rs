//! `psfleet run`: a PowerShell script (a file, `-` for standard input, or inline with `-c`)
//! over PSRP, or a cmd command over WinRS (`--cmd`), on every host of the inventory.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use psfleet_core::psrp::client::ScriptSpec;
use psfleet_engine::fleet::RunKind;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ConnectionArgs, FleetArgs, OutputArgs};
use crate::settings::{ConnectionSettings, FleetSettings, OutputSettings};

/// The largest script accepted (PSRP fragments it; 4 MiB is far beyond any real script).
pub const MAX_SCRIPT_BYTES: u64 = 4 * 1024 * 1024;

/// Most `--argument` values.
pub const MAX_ARGUMENTS: usize = 1024;

/// `psfleet run` options.
#[derive(Debug, Args)]
// The work is required, except with `--resume` alone, which recalls the resumed run's.
#[command(group(ArgGroup::new("work").args(["file", "script", "cmd"])))]
pub struct RunArgs {
    /// PowerShell script file to run on every host (Invoke-Command -FilePath); `-` reads
    /// it from standard input.
    #[arg(value_name = "SCRIPT_FILE")]
    pub file: Option<PathBuf>,
    /// The script itself, inline (Invoke-Command -ScriptBlock).
    #[arg(short = 'c', long = "script", value_name = "SCRIPT")]
    pub script: Option<String>,
    /// A cmd.exe command line to run over WinRS instead of PowerShell (as winrs.exe does).
    #[arg(long, value_name = "COMMAND")]
    pub cmd: Option<String>,
    /// A value for the script's parameters, in order (Invoke-Command -ArgumentList);
    /// repeatable. Values reach the script as strings: cast them in its param() block.
    #[arg(
        long = "argument",
        value_name = "VALUE",
        conflicts_with = "cmd",
        allow_hyphen_values = true
    )]
    pub arguments: Vec<String>,
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

/// What runs on each host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// A PowerShell script over PSRP.
    Script {
        /// The script text.
        text: String,
        /// Where it came from (`-c`, a file, standard input), for the run header.
        source: String,
        /// `--argument` values, in order.
        arguments: Vec<String>,
    },
    /// A cmd command over WinRS.
    Cmd {
        /// The command line.
        command: String,
    },
}

/// Everything `run` needs, validated.
#[derive(Debug)]
pub struct RunRequest {
    /// Connection settings.
    pub connection: ConnectionSettings,
    /// Fleet settings.
    pub fleet: FleetSettings,
    /// Output settings.
    pub output: OutputSettings,
    /// What runs.
    pub work: Work,
}

/// Runs `psfleet run`.
pub fn execute(args: RunArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let connection = ConnectionSettings::resolve(&args.connection, ctx.layers())?;
    let fleet = FleetSettings::resolve(&args.fleet, ctx.layers())?;
    let output = OutputSettings::resolve(&args.output, ctx.layers())?;
    fleet.select.require_inventory()?;
    let stdin_taken = fleet.select.reads_stdin();
    let given = args.file.is_some() || args.script.is_some() || args.cmd.is_some();
    let work = match &fleet.resume {
        Some(from) if !given => recalled_work(&args, ctx.global.state_dir()?, from)?,
        _ => work_from(&args, stdin_taken, &mut std::io::stdin().lock())?,
    };
    ctx.global.state_dir()?;
    run_on_fleet(
        RunRequest {
            connection,
            fleet,
            output,
            work,
        },
        ctx,
    )
}

/// `--resume RUN` with no script or command: the run's own script and arguments (or
/// command), from its `run.json`.
fn recalled_work(
    args: &RunArgs,
    state_dir: &Path,
    from: &crate::options::ResumeFrom,
) -> Result<Work, CliError> {
    if !args.arguments.is_empty() {
        return Err(CliError::usage(
            "--argument without a script: --resume alone continues the run with its own \
             script and arguments; give the script with its arguments, or neither",
        ));
    }
    let recalled = crate::fleet_run::recall_work(state_dir, from)?;
    Ok(match recalled.job {
        psfleet_engine::record::JobKind::Cmd => Work::Cmd {
            command: recalled.text,
        },
        _ => Work::Script {
            text: recalled.text,
            source: format!("run {}", recalled.run_id),
            arguments: recalled.arguments,
        },
    })
}

/// Loads the inventory, gets the password, and runs the work on every host through the
/// engine's fleet runner ([`crate::fleet_run::run_fleet`]).
pub fn run_on_fleet(request: RunRequest, ctx: &Context<'_>) -> Result<Exit, CliError> {
    let kind = match request.work {
        Work::Script {
            text, arguments, ..
        } => RunKind::Script(
            arguments
                .into_iter()
                .fold(ScriptSpec::new(text), ScriptSpec::with_argument),
        ),
        // The whole command line goes as the command, as winrs.exe sends it.
        Work::Cmd { command } => RunKind::Cmd {
            command,
            arguments: Vec::new(),
        },
    };
    crate::fleet_run::run_fleet(
        kind,
        "psfleet run",
        &request.connection,
        &request.fleet,
        &request.output,
        ctx,
    )
}

/// The work `args` ask for; a script file is read (`-`: from `stdin`, unless the inventory
/// is read from there).
pub fn work_from(
    args: &RunArgs,
    stdin_taken: bool,
    stdin: &mut dyn std::io::Read,
) -> Result<Work, CliError> {
    if args.arguments.len() > MAX_ARGUMENTS {
        return Err(CliError::usage(format!(
            "at most {MAX_ARGUMENTS} --argument values"
        )));
    }
    if let Some(command) = &args.cmd {
        if command.trim().is_empty() {
            return Err(CliError::usage("--cmd: the command is empty"));
        }
        return Ok(Work::Cmd {
            command: command.clone(),
        });
    }
    let (text, source) = match (&args.script, &args.file) {
        (Some(inline), _) => (inline.clone(), "-c".to_owned()),
        (None, Some(path)) if path == Path::new("-") => {
            if stdin_taken {
                return Err(CliError::usage(
                    "the script and the inventory cannot both come from standard input (-)",
                ));
            }
            (
                decode_script(read_bounded(stdin, "standard input")?, "standard input")?,
                "<stdin>".to_owned(),
            )
        }
        (None, Some(path)) => {
            let file = std::fs::File::open(path).map_err(|e| {
                CliError::usage(format!("{}: cannot read the script: {e}", path.display()))
            })?;
            let name = path.display().to_string();
            (
                decode_script(read_bounded(&mut &file, &name)?, &name)?,
                name,
            )
        }
        (None, None) => {
            return Err(CliError::usage(
                "give a script file, -c SCRIPT or --cmd COMMAND (or --resume RUN alone, to \
                 continue a run with its own script)",
            ));
        }
    };
    if text.trim().is_empty() {
        return Err(CliError::usage(format!("the script ({source}) is empty")));
    }
    Ok(Work::Script {
        text,
        source,
        arguments: args.arguments.clone(),
    })
}

fn read_bounded(reader: &mut dyn std::io::Read, name: &str) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_SCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::usage(format!("{name}: cannot read the script: {e}")))?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(CliError::usage(format!(
            "{name}: the script is larger than {} MiB",
            MAX_SCRIPT_BYTES / 1024 / 1024
        )));
    }
    Ok(bytes)
}

/// Script bytes to text: UTF-8 (with or without a byte-order mark) or UTF-16 with a
/// byte-order mark, the encodings Windows editors save .ps1 files in.
pub fn decode_script(bytes: Vec<u8>, name: &str) -> Result<String, CliError> {
    let utf16 = |le: bool, body: &[u8]| -> Result<String, CliError> {
        if !body.len().is_multiple_of(2) {
            return Err(CliError::usage(format!(
                "{name}: the UTF-16 script has an odd length"
            )));
        }
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|p| {
                if le {
                    u16::from_le_bytes([p[0], p[1]])
                } else {
                    u16::from_be_bytes([p[0], p[1]])
                }
            })
            .collect();
        String::from_utf16(&units)
            .map_err(|_| CliError::usage(format!("{name}: the script is not valid UTF-16")))
    };
    match bytes.as_slice() {
        [0xEF, 0xBB, 0xBF, rest @ ..] => {
            String::from_utf8(rest.to_vec()).map_err(|e| not_utf8(name, &e))
        }
        [0xFF, 0xFE, rest @ ..] => utf16(true, rest),
        [0xFE, 0xFF, rest @ ..] => utf16(false, rest),
        _ => String::from_utf8(bytes).map_err(|e| not_utf8(name, &e)),
    }
}

fn not_utf8(name: &str, e: &std::string::FromUtf8Error) -> CliError {
    let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1;
    CliError::usage(format!(
        "{name}:{line}: the script is neither UTF-8 nor UTF-16 with a byte-order mark; save it as UTF-8"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(file: Option<&str>, script: Option<&str>, cmd: Option<&str>) -> RunArgs {
        RunArgs {
            file: file.map(PathBuf::from),
            script: script.map(str::to_owned),
            cmd: cmd.map(str::to_owned),
            arguments: vec!["a".into(), "-1".into()],
            connection: ConnectionArgs::default(),
            fleet: FleetArgs::default(),
            output: OutputArgs::default(),
        }
    }

    #[test]
    fn scripts_come_from_inline_stdin_or_files() {
        let w = work_from(&args(None, Some("Get-Date"), None), false, &mut &b""[..]).unwrap();
        assert_eq!(
            w,
            Work::Script {
                text: "Get-Date".into(),
                source: "-c".into(),
                arguments: vec!["a".into(), "-1".into()]
            }
        );
        let w = work_from(
            &args(Some("-"), None, None),
            false,
            &mut &b"\xEF\xBB\xBFhostname"[..],
        )
        .unwrap();
        assert!(matches!(w, Work::Script { ref text, .. } if text == "hostname"));
        let err = work_from(&args(Some("-"), None, None), true, &mut &b"x"[..]).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot both come from standard input")
        );
        let w = work_from(
            &args(None, None, Some("ipconfig /all")),
            false,
            &mut &b""[..],
        )
        .unwrap();
        assert_eq!(
            w,
            Work::Cmd {
                command: "ipconfig /all".into()
            }
        );
        let err = work_from(&args(None, Some("  "), None), false, &mut &b""[..]).unwrap_err();
        assert_eq!(err.exit(), Exit::Usage);
        let err = work_from(
            &args(Some("/nonexistent/x.ps1"), None, None),
            false,
            &mut &b""[..],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/x.ps1: cannot read the script"),
            "{err}"
        );
    }

    #[test]
    fn windows_encodings_are_decoded() {
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("Get-Process | ö".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode_script(utf16le, "x").unwrap(), "Get-Process | ö");
        let utf16be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("dir".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(decode_script(utf16be, "x").unwrap(), "dir");
        let err = decode_script(b"ok\nline2 \xE9t\xE9\n".to_vec(), "s.ps1").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("s.ps1:2: the script is neither UTF-8"),
            "{err}"
        );
        let big = vec![b'#'; MAX_SCRIPT_BYTES as usize + 1];
        assert!(
            read_bounded(&mut &big[..], "big")
                .unwrap_err()
                .to_string()
                .contains("larger than 4 MiB")
        );
    }
}
