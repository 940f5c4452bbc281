//! `psfleet doctor HOST`: a step-by-step diagnosis: name validity, DNS, TCP to 5985/5986,
//! TLS chain and name, Identify, offered schemes, authentication, configuration name,
//! quotas. Each step passes or names the documented reason (bucket) and the fix.

use std::net::IpAddr;
use std::sync::Arc;

use clap::Args;
use psfleet_engine::doctor::DoctorTarget;
use psfleet_engine::ops::ClientOptions;
use psfleet_engine::target::{Endpoint, Scheme, TargetError};
use psfleet_inventories::Address;

use crate::cli::Context;
use crate::exit::{CliError, Exit};
use crate::options::{ConnectionArgs, HostInventoryArgs, OutputFormat};
use crate::settings::{ConnectionSettings, Selection};

/// `psfleet doctor` options.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The host (a name from the inventory with -i, or any name or address).
    #[arg(value_name = "HOST")]
    pub host: String,
    /// An inventory to take the host's settings from (optional).
    #[command(flatten)]
    pub inventory: HostInventoryArgs,
    /// Connection options.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Each step as it ends (text), or the whole diagnosis as one JSON object at the end
    /// (json: steps with their buckets and fixes, and the facts learned) [default: text].
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

/// Runs `psfleet doctor`.
pub fn execute(args: DoctorArgs, ctx: &Context<'_>) -> Result<Exit, CliError> {
    super::check_host_argument(&args.host)?;
    let connection = ConnectionSettings::resolve(&args.connection, ctx.layers())?;
    let select = Selection::resolve(&args.inventory.select(), ctx.layers())?;
    let format = args.output.unwrap_or(OutputFormat::Text);
    diagnose(&args.host, &connection, &select, format, ctx)
}

/// Runs the diagnosis steps and prints each one's verdict as it ends (text) or the whole
/// diagnosis at the end (json); exits 0 when no step failed, 2 when one did (docs/doctor.md).
pub fn diagnose(
    host: &str,
    connection: &ConnectionSettings,
    select: &Selection,
    format: OutputFormat,
    ctx: &Context<'_>,
) -> Result<Exit, CliError> {
    let one = one_host(host, connection, select, ctx)?;
    let runtime = runtime()?;
    let diagnosis = runtime.block_on(psfleet_engine::doctor::diagnose(
        &one.doctor_target(),
        &one.options,
        |step| {
            if format == OutputFormat::Text {
                ctx.sink.out(&format!("{step}\n"));
            }
        },
    ));
    runtime.shutdown_background();
    if format == OutputFormat::Json {
        let json = serde_json::to_string(&diagnosis)
            .map_err(|e| CliError::Internal(format!("encoding the diagnosis as JSON: {e}")))?;
        ctx.sink.out(&format!("{json}\n"));
    }
    Ok(if diagnosis.passed() {
        Exit::Success
    } else {
        Exit::HostsFailed
    })
}

/// The one host `enter` and `doctor` work on: where to connect, and the client options
/// (credential included) a run would use for it.
#[derive(Debug)]
pub struct OneHost {
    /// The name to connect by (checked by the transport, or by the doctor's first step).
    pub host: String,
    /// The inventory's IP address for it, if any.
    pub address: Option<IpAddr>,
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// The port.
    pub port: u16,
    /// The listener path.
    pub path: String,
    /// The client options.
    pub options: ClientOptions,
}

impl OneHost {
    /// The doctor's target.
    pub fn doctor_target(&self) -> DoctorTarget {
        DoctorTarget {
            host: self.host.clone(),
            address: self.address,
            scheme: self.scheme,
            port: Some(self.port),
            path: Some(self.path.clone()),
        }
    }

    /// The endpoint (the host name checked as the Windows client checks it).
    pub fn endpoint(&self) -> Result<Endpoint, TargetError> {
        Endpoint::new(&self.host, self.scheme)?
            .with_port(self.port)
            .with_path(&self.path)
    }
}

/// HOST from the inventories when some are given (it must be in them: its settings, user
/// and password reference apply), else from the connection options alone; then the
/// credential (`PSFLEET_PASSWORD`, a password file or the prompt) and the client options.
pub fn one_host(
    host: &str,
    connection: &ConnectionSettings,
    select: &Selection,
    ctx: &Context<'_>,
) -> Result<OneHost, CliError> {
    let mut prompt = crate::tty::TerminalPrompt;
    if select.inventory.value.is_empty() {
        let credentials = crate::credentials::obtain(connection, ctx.env, &mut prompt)?;
        return Ok(OneHost {
            host: host.trim().to_owned(),
            address: None,
            scheme: if connection.use_ssl.value {
                Scheme::Https
            } else {
                Scheme::Http
            },
            port: connection.port().value,
            path: format!("/{}", connection.url_prefix.value.trim_matches('/')),
            options: crate::client::client_options(connection, credentials.credential)?,
        });
    }
    let loaded = crate::hosts::load(select, connection)?;
    let found = loaded
        .hosts
        .into_iter()
        .find(|h| h.name.eq_ignore_ascii_case(host.trim()))
        .ok_or_else(|| CliError::Inventory(format!("{host} is not in the inventory")))?;
    // As a run builds the options of its first host (crate::fleet_run).
    let credentials = crate::credentials::CredentialCache::default().for_host(
        &found,
        connection,
        ctx.env,
        &mut prompt,
    )?;
    let base = Arc::new(crate::client::client_options(
        connection,
        credentials.credential,
    )?);
    let options = match crate::client::for_host(&base, connection, &found, None)? {
        Some(own) => (*own).clone(),
        None => (*base).clone(),
    };
    let (name, address) = match &found.address {
        Some(Address::Ip(ip)) => (found.name.clone(), Some(*ip)),
        Some(Address::Name(name)) => (name.clone(), None),
        None => (found.name.clone(), None),
    };
    Ok(OneHost {
        host: name,
        address,
        scheme: match found.scheme {
            psfleet_inventories::Scheme::Http => Scheme::Http,
            psfleet_inventories::Scheme::Https => Scheme::Https,
        },
        port: found.port,
        path: found.path.clone(),
        options,
    })
}

/// The runtime `enter` and `doctor` run on.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("cannot start the runtime", e))
}
