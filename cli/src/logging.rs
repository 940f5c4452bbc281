//! Logging through `tracing` to standard error, around the progress bars (docs/cli.md,
//! "Logging").
//!
//! The level: `-q` errors only, default warnings, `-v` info, `-vv` debug for psfleet's own
//! crates (info for the libraries under them), `-vvv` everything. `PSFLEET_LOG` (or `log` in
//! psfleet.toml) takes a full `tracing` filter (`info,psfleet_engine=trace`) and applies when
//! the command line has no `-q`/`-v`. Colours follow [`crate::console::use_color`].
//!
//! Secrets: the password only exists inside `engine::auth::Credential`, whose `Debug` prints
//! `<redacted>`; nothing here or in the commands formats it.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::console::{Console, LogWriter};
use crate::exit::CliError;
use crate::settings::Setting;

/// The crates whose debug output `-vv` turns on.
const OWN_CRATES: &[&str] = &[
    "psfleet",
    "psfleet_core",
    "psfleet_engine",
    "psfleet_inventories",
    "psfleet_reports",
    "psfleet_sim",
];

/// How verbose the command line asked to be: `-q` is -1, each `-v` adds one.
pub fn verbosity(quiet: bool, verbose: u8) -> i8 {
    if quiet {
        -1
    } else {
        i8::try_from(verbose).unwrap_or(i8::MAX)
    }
}

/// The filter directives for a verbosity, or the configured filter when the command line
/// said nothing.
pub fn directives(verbosity: i8, configured: Option<&Setting<String>>) -> String {
    match (verbosity, configured) {
        (0, Some(filter)) => filter.value.clone(),
        (i8::MIN..=-1, _) => "error".into(),
        (0, None) => "warn".into(),
        (1, _) => "info".into(),
        (2, _) => {
            let mut d = String::from("info");
            for krate in OWN_CRATES {
                d.push_str(&format!(",{krate}=debug"));
            }
            d
        }
        _ => "trace".into(),
    }
}

/// Installs the subscriber: events go through `console` (so the bars step aside).
pub fn init(
    console: &Console,
    verbosity: i8,
    configured: Option<&Setting<String>>,
) -> Result<(), CliError> {
    let text = directives(verbosity, configured);
    let filter = EnvFilter::try_new(&text).map_err(|e| match configured {
        Some(setting) if verbosity == 0 => crate::settings::invalid(
            "log",
            setting,
            format!("not a tracing filter ({e}); e.g. info or warn,psfleet_engine=debug"),
        ),
        _ => CliError::Internal(format!("log filter {text:?}: {e}")),
    })?;
    let filter = filter.and(filter_fn(|meta| !holds_key_material(meta)));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(LogWriter::new(console.clone()))
        .with_ansi(console.color())
        .with_target(verbosity >= 2);
    // A second init (tests) keeps the first subscriber.
    let _ = if verbosity >= 2 {
        tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(layer.without_time().with_filter(filter))
            .try_init()
    };
    Ok(())
}

/// sspi's trace-level spans record Kerberos messages whole, keys included (the
/// authenticator's subkey, the AP-REP's, a TGS-REP's session key): never logged, whatever
/// the filter says. Its debug level and up carries no keys (sspi wraps them in `Secret`).
fn holds_key_material(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() == tracing::Level::TRACE
        && (meta.target() == "sspi" || meta.target().starts_with("sspi::"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Origin;

    #[test]
    fn command_line_verbosity_beats_the_configured_filter() {
        let configured = Setting {
            value: "psfleet_engine=trace".to_owned(),
            origin: Origin::Env("PSFLEET_LOG".into()),
        };
        assert_eq!(directives(0, Some(&configured)), "psfleet_engine=trace");
        assert_eq!(directives(0, None), "warn");
        assert_eq!(directives(-1, Some(&configured)), "error");
        assert_eq!(directives(1, Some(&configured)), "info");
        assert!(directives(2, None).contains("psfleet_engine=debug"));
        assert_eq!(directives(3, None), "trace");
        assert_eq!(verbosity(true, 3), -1);
        assert_eq!(verbosity(false, 2), 2);
        for v in -1..=3 {
            assert!(EnvFilter::try_new(directives(v, None)).is_ok());
        }
    }
}
