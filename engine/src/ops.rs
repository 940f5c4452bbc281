//! The WinRM operations on one host, as async calls on a [`HostClient`]: Identify, the
//! config Get, shell enumeration and deletion, a cmd command (WinRS) and a PowerShell
//! script with arguments (PSRP, the Invoke-Command path), with structured results.
//!
//! A [`HostClient`] keeps one authenticated keep-alive [`Connection`] and reuses it for every
//! operation; when a request fails the connection is dropped and the next request opens
//! (and authenticates) a new one. The pre-send checks of `target` run when the client is
//! made, before any packet.
//!
//! `run_cmd` and `run_script` drive the sans-IO machines of `psfleet_core`
//! ([`CommandRun`], [`ScriptRun`]). A run can be stopped by its [`RunControl`]: a
//! cancellation future or a deadline. Stopping sends the machine's stop signal (WinRS
//! ctrl_c, PSRP `powershell/signal/ctrl_c`) and then Delete, on a fresh connection when the
//! interrupted request left the old one unusable, all within
//! [`ClientOptions::cleanup_timeout`] (5 s by default). Whatever happens, a shell that was
//! created is deleted, or its id is returned as leaked ([`RunError::leaked_shell`],
//! [`CmdResult::leaked_shell`]) so the engine can record it and reap it later.
//!
//! PowerShell output objects are rendered to JSON ([`clixml_to_json`]) and annotated like
//! Invoke-Command's (wire-facts 4.6): `PSComputerName`, `RunspaceId`, `PSShowComputerName`.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use psfleet_core::ids::IdGenerator;
use psfleet_core::psrp::client::{
    PipelineOutcome, PsrpClientError, PsrpEvent, PsrpSettings, ScriptRun, ScriptSpec,
};
use psfleet_core::psrp::clixml::{Content, PsObject, Value};
use psfleet_core::psrp::messages::{
    ErrorRecord, InformationRecord, ProgressRecord, ProtocolVersion,
};
use psfleet_core::taxonomy::Bucket;
use psfleet_core::winrs::{CommandRun, CommandSpec, ShellSettings, WinrsError, WinrsEvent};
use psfleet_core::wsman::{
    Action, Enumerate, EnumerationItem, GetResponse, IdentifyRequest, IdentifyResponse, Pull,
    Request, RequestBody, RequestHeader, Response, ResponseBody, ShellInfo, WinrmConfig,
    WsmanError, resources,
};
use ring::rand::SecureRandom as _;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::auth::{ClientCertificate, Credential};
use crate::error::ClientError;
use crate::http::{self, AuthMethod, Connection, ConnectionConfig, Encryption};
use crate::target::{self, ClientPolicy, Endpoint, Resolver};
use crate::tls::TlsClient;

/// Default time allowed for stopping a run: the stop signal and the Delete together.
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The `wsman:MaxElements` of a shell enumeration (pypsrp's value).
const ENUMERATE_MAX_ELEMENTS: u32 = 32_000;

/// Most Pull requests one enumeration may take.
const MAX_PULLS: usize = 1_000;

/// Deepest CLIXML nesting rendered as JSON structure; deeper values become their text.
const MAX_JSON_DEPTH: usize = 64;

/// Most redirections followed for one request when [`ClientOptions::allow_redirection`] is
/// on (PowerShell's `MaximumConnectionRedirectionCount` default).
pub const MAX_REDIRECTIONS: usize = 5;

/// The time a Receive may be held open must leave the request this much of its timeout.
const OPERATION_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// Settings shared by every host of a run (build once, share through an `Arc`).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How to authenticate.
    pub auth: AuthMethod,
    /// Who to authenticate as.
    pub credential: Credential,
    /// Message encryption.
    pub encryption: Encryption,
    /// Trusted hosts and AllowUnencrypted, for the pre-send checks.
    pub policy: ClientPolicy,
    /// The TLS client for HTTPS hosts (`None`: system roots, full verification).
    pub tls: Option<TlsClient>,
    /// The client certificate of [`AuthMethod::Certificate`] (see
    /// [`ClientOptions::with_client_certificate`]).
    pub client_certificate: Option<Arc<ClientCertificate>>,
    /// KDC, realm and SPN settings (Kerberos, and Negotiate trying Kerberos first).
    pub kerberos: crate::kerberos::KerberosOptions,
    /// Name resolution overrides and timeout.
    pub resolver: Arc<Resolver>,
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// One request and its response.
    pub request_timeout: Duration,
    /// WS-Man `OperationTimeout` of Receive (kept below the request timeout).
    pub operation_timeout: Duration,
    /// `wsman:MaxEnvelopeSize`.
    pub max_envelope_size: u32,
    /// Ceiling on one response body; the limit applied is the smaller of this and the
    /// bound derived from `max_envelope_size` ([`Self::effective_max_response_bytes`]).
    pub max_response_bytes: usize,
    /// Follow HTTP redirections (up to [`MAX_REDIRECTIONS`] per request), as
    /// `-AllowRedirection`. Off by default: a redirection is then the typed error
    /// [`http::TransportError::Redirected`] and nothing is sent to the new address.
    pub allow_redirection: bool,
    /// Largest PSRP message accepted from a host, and most bytes of partly received
    /// messages held for it (`PsrpSettings::max_received_message_bytes`, 16 MiB).
    pub max_received_message_bytes: usize,
    /// The PowerShell session configuration (`Microsoft.PowerShell`).
    pub configuration_name: String,
    /// `WINRS_CODEPAGE` of cmd shells (65001: UTF-8 output).
    pub codepage: Option<u32>,
    /// Time allowed to stop and delete a shell after a cancellation, a deadline or a
    /// failure.
    pub cleanup_timeout: Duration,
}

impl ClientOptions {
    /// Options with the defaults: encryption auto, no trusted hosts, unencrypted traffic
    /// not allowed, system roots, 30 s connect and request timeouts, 20 s operation
    /// timeout, 150 KiB envelopes, Microsoft.PowerShell, UTF-8 cmd output.
    pub fn new(auth: impl Into<AuthMethod>, credential: Credential) -> Self {
        Self {
            auth: auth.into(),
            credential,
            encryption: Encryption::Auto,
            policy: ClientPolicy::default(),
            tls: None,
            client_certificate: None,
            kerberos: crate::kerberos::KerberosOptions::default(),
            resolver: Arc::new(Resolver::default()),
            connect_timeout: http::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: http::DEFAULT_REQUEST_TIMEOUT,
            operation_timeout: psfleet_core::wsman::DEFAULT_OPERATION_TIMEOUT,
            max_envelope_size: psfleet_core::wsman::DEFAULT_MAX_ENVELOPE_SIZE,
            max_response_bytes: http::DEFAULT_MAX_RESPONSE_BYTES,
            allow_redirection: false,
            max_received_message_bytes:
                psfleet_core::psrp::client::DEFAULT_MAX_RECEIVED_MESSAGE_BYTES,
            configuration_name: resources::DEFAULT_CONFIGURATION_NAME.to_owned(),
            codepage: Some(65001),
            cleanup_timeout: DEFAULT_CLEANUP_TIMEOUT,
        }
    }

    /// The response body limit actually applied: [`Self::max_response_bytes`], or less when
    /// the envelope size asked for allows less ([`http::response_limit_for_envelope`]).
    pub fn effective_max_response_bytes(&self) -> usize {
        self.max_response_bytes
            .min(http::response_limit_for_envelope(self.max_envelope_size))
    }

    /// Certificate authentication with `certificate` (HTTPS only): it is presented in the
    /// TLS handshake and every request carries the WS-Man `https/mutual` header. The
    /// credential's password is never sent; its user name (the account the certificate
    /// maps to) only labels errors.
    pub fn with_client_certificate(mut self, certificate: ClientCertificate) -> Self {
        self.auth = AuthMethod::Certificate;
        self.client_certificate = Some(Arc::new(certificate));
        self
    }

    /// The OperationTimeout actually sent: the configured one, cut so that a held Receive
    /// is answered (with the TimedOut fault) before the request timeout fires.
    pub fn effective_operation_timeout(&self) -> Duration {
        let ceiling = self
            .request_timeout
            .saturating_sub(OPERATION_TIMEOUT_MARGIN)
            .max(self.request_timeout / 2);
        self.operation_timeout
            .min(ceiling)
            .max(Duration::from_secs(1))
    }
}

/// What may stop a run early, what the engine is told as it goes (shells created and
/// deleted), and how much output it keeps.
#[derive(Default)]
pub struct RunControl {
    cancel: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    deadline: Option<Instant>,
    shell_hook: Option<ShellHook>,
    limit: Option<OutputLimit>,
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("cancellable", &self.cancel.is_some())
            .field("deadline", &self.deadline)
            .field("shell_hook", &self.shell_hook.is_some())
            .field("limit", &self.limit)
            .finish()
    }
}

/// A shell a run created or deleted, reported the moment the host confirms it, so the engine
/// can journal it before the run goes on (a crash then leaves a leak the reaper knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellEvent {
    /// The shell exists, or may: the host returned its ShellId (WinRS), or a PowerShell
    /// run is about to send a Create naming its own ShellId (MS-PSRP 3.1.4.1), which is
    /// reported first so that a Create whose reply is lost still leaves an id to delete.
    Created {
        /// The shell.
        shell_id: Uuid,
        /// Its resource URI: the one a Delete must use (wire-facts 1.12).
        resource_uri: String,
    },
    /// The host confirmed the Delete.
    Deleted {
        /// The shell.
        shell_id: Uuid,
    },
}

/// Called with every [`ShellEvent`]; the run sends its next request only once the returned
/// future completes (so a journal write is durable before the shell is used). An error
/// means the shell could not be recorded: the run then never uses it (a Create not sent
/// yet is not sent; a shell that exists is deleted) and stops with
/// [`ClientError::NotRecorded`].
pub type ShellHook = Box<
    dyn FnMut(ShellEvent) -> Pin<Box<dyn Future<Output = Result<(), ShellNotRecorded>> + Send>>
        + Send,
>;

/// Why a [`ShellHook`] could not record a shell (the state store's error, as text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShellNotRecorded(pub String);

/// How much output a run keeps; the rest is counted ([`ScriptResult::dropped`],
/// [`CmdResult::dropped_bytes`]), so memory stays bounded whatever the script writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimit {
    /// Most records kept per PowerShell stream (output objects, errors, warnings, ...).
    pub records: usize,
    /// Most bytes kept of cmd stdout, and of stderr.
    pub bytes: usize,
}

impl RunControl {
    /// Nothing stops the run but its own end.
    pub fn none() -> Self {
        Self::default()
    }

    /// The run stops when `cancelled` completes.
    pub fn with_cancel(mut self, cancelled: impl Future<Output = ()> + Send + 'static) -> Self {
        self.cancel = Some(Box::pin(cancelled));
        self
    }

    /// The run stops when `flag` becomes true (or its sender is dropped while false:
    /// then it can never be cancelled, and is not).
    pub fn with_watch(self, mut flag: tokio::sync::watch::Receiver<bool>) -> Self {
        self.with_cancel(async move {
            if flag.wait_for(|cancelled| *cancelled).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }

    /// The run stops at `deadline` ([`ClientError::Timeout`]).
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// `hook` is told of every shell created and deleted, and awaited before the run goes
    /// on.
    pub fn with_shell_hook(mut self, hook: ShellHook) -> Self {
        self.shell_hook = Some(hook);
        self
    }

    /// Keeps at most `limit` of the output; the rest is counted.
    pub fn with_output_limit(mut self, limit: OutputLimit) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// Time spent, for the run record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Durations {
    /// Opening and authenticating connections during the run (zero when the kept-alive
    /// connection was reused; over HTTPS with NTLM it includes the first request, which
    /// rides on the authenticating leg).
    #[serde(rename = "connect_ms", serialize_with = "millis")]
    pub connect: Duration,
    /// From the first request to the end of the run, cleanup included.
    #[serde(rename = "total_ms", serialize_with = "millis")]
    pub total: Duration,
    /// WS-Man requests sent.
    pub requests: u32,
    /// Connections opened.
    pub connections: u32,
}

/// The result of a cmd command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdResult {
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// Its exit code (`rsp:ExitCode`).
    pub exit_code: i64,
    /// Bytes of stdout and stderr dropped by the [`OutputLimit`].
    pub dropped_bytes: u64,
    /// A shell that could not be deleted (Delete failed), if any.
    pub leaked_shell: Option<Uuid>,
    /// Time spent.
    pub durations: Durations,
}

impl CmdResult {
    /// ScriptFailed when the command exited non-zero.
    pub fn bucket(&self) -> Option<Bucket> {
        (self.exit_code != 0).then_some(Bucket::ScriptFailed)
    }
}

/// The result of a PowerShell script: every stream, and how the pipeline ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptResult {
    /// Output objects as JSON, objects annotated like Invoke-Command's.
    pub output: Vec<serde_json::Value>,
    /// Non-terminating errors (Write-Error and friends).
    pub errors: Vec<ErrorInfo>,
    /// Write-Warning messages.
    pub warnings: Vec<String>,
    /// Write-Verbose messages.
    pub verbose: Vec<String>,
    /// Write-Debug messages.
    pub debug: Vec<String>,
    /// Write-Information / Write-Host records.
    pub information: Vec<InformationEntry>,
    /// Write-Progress records.
    pub progress: Vec<ProgressEntry>,
    /// Records dropped by the [`OutputLimit`], all streams together.
    pub dropped: u64,
    /// `Completed`, `Failed` or `Stopped`.
    pub pipeline_state: String,
    /// The terminating error of a Failed pipeline.
    pub error_record: Option<ErrorInfo>,
    /// `$PSVersionTable.PSVersion` of the host, when it sent one.
    pub ps_version: Option<String>,
    /// The `PSComputerName` the output carries.
    pub computer_name: String,
    /// The runspace pool (shell) the script ran in.
    pub runspace_id: Option<String>,
    /// A shell that could not be deleted, if any.
    pub leaked_shell: Option<String>,
    /// Time spent.
    pub durations: Durations,
}

impl ScriptResult {
    /// ScriptFailed when the pipeline ended Failed (a terminating error).
    pub fn bucket(&self) -> Option<Bucket> {
        (self.pipeline_state == "Failed").then_some(Bucket::ScriptFailed)
    }
}

/// A PowerShell error record, reduced to what a report shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorInfo {
    /// The message a console shows.
    pub message: String,
    /// `FullyQualifiedErrorId`.
    pub fully_qualified_error_id: String,
    /// The category name (`NotSpecified`, `ObjectNotFound`, ...).
    pub category: Option<String>,
    /// `ErrorCategory_Message`.
    pub category_message: Option<String>,
    /// `ErrorCategory_TargetName`.
    pub target_name: Option<String>,
    /// The exception's most derived type name.
    pub exception_type: Option<String>,
    /// The exception's message.
    pub exception_message: Option<String>,
    /// The script position (`At line:1 char:1 ...`).
    pub position: Option<String>,
    /// `ErrorDetails_ScriptStackTrace`.
    pub script_stack_trace: Option<String>,
}

impl From<&ErrorRecord> for ErrorInfo {
    fn from(record: &ErrorRecord) -> Self {
        Self {
            message: record.message.clone(),
            fully_qualified_error_id: record.fully_qualified_error_id.clone(),
            category: record.category_name().map(str::to_owned),
            category_message: record.category_message.clone(),
            target_name: record.target_name.clone(),
            exception_type: record.exception_type_names.first().cloned(),
            exception_message: record.exception_message.clone(),
            position: record
                .invocation
                .as_ref()
                .and_then(|i| i.position_message.clone()),
            script_stack_trace: record.script_stack_trace.clone(),
        }
    }
}

/// One Write-Information / Write-Host record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InformationEntry {
    /// `MessageData` as JSON.
    pub message: serde_json::Value,
    /// `Source` (`Write-Host`, `Write-Information`, ...).
    pub source: Option<String>,
    /// `Tags`.
    pub tags: Vec<String>,
    /// `TimeGenerated`, as the host wrote it.
    pub time_generated: Option<String>,
}

impl From<&InformationRecord> for InformationEntry {
    fn from(record: &InformationRecord) -> Self {
        Self {
            message: clixml_to_json(&record.message_data),
            source: record.source.clone(),
            tags: record.tags.clone(),
            time_generated: record.time_generated.as_ref().map(ToString::to_string),
        }
    }
}

/// One Write-Progress record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressEntry {
    /// `Activity`.
    pub activity: String,
    /// `StatusDescription`.
    pub status: String,
    /// `PercentComplete` (-1 unknown).
    pub percent_complete: i32,
    /// `Processing` or `Completed`.
    pub record_type: String,
}

impl From<&ProgressRecord> for ProgressEntry {
    fn from(record: &ProgressRecord) -> Self {
        Self {
            activity: record.activity.clone(),
            status: record.status_description.clone(),
            percent_complete: record.percent_complete,
            record_type: record.record_type.name().to_owned(),
        }
    }
}

/// A run that did not produce a result.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RunError {
    /// What went wrong first.
    #[source]
    pub error: ClientError,
    /// A created shell that was not confirmed deleted (record it; reap it later).
    pub leaked_shell: Option<Uuid>,
    /// Time spent.
    pub durations: Durations,
}

/// A client for one host: its endpoint, the shared options, and a kept-alive connection.
pub struct HostClient {
    endpoint: Endpoint,
    address: Option<IpAddr>,
    options: Arc<ClientOptions>,
    conn: Option<Connection>,
    ids: RandomIds,
    session_id: Uuid,
    offered: Vec<String>,
    connect_time: Duration,
    requests: u32,
    connections: u32,
    gate: Option<Arc<dyn http::ConnectGate>>,
}

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostClient")
            .field("endpoint", &self.endpoint)
            .field("address", &self.address)
            .field("connected", &self.conn.is_some())
            .field("offered", &self.offered)
            .finish_non_exhaustive()
    }
}

impl HostClient {
    /// A client for `endpoint`. Runs the Windows client's pre-send checks (trusted hosts
    /// for IP targets, unencrypted Basic); nothing is sent yet.
    pub fn new(endpoint: Endpoint, options: Arc<ClientOptions>) -> Result<Self, ClientError> {
        let mut ids = RandomIds::new();
        let session_id = ids.next_id();
        let client = Self {
            endpoint,
            address: None,
            options,
            conn: None,
            ids,
            session_id,
            offered: Vec::new(),
            connect_time: Duration::ZERO,
            requests: 0,
            connections: 0,
            gate: None,
        };
        let config = client.connection_config();
        target::check_before_send(
            &client.endpoint,
            &client.options.auth,
            config.plaintext_over_http(),
            &client.options.policy,
        )?;
        Ok(client)
    }

    /// Connects to `address` instead of resolving the host name (the inventory address).
    pub fn with_address(mut self, address: IpAddr) -> Self {
        self.address = Some(address);
        self
    }

    /// Passes every new connection of this client through `gate` (the scheduler's rate
    /// limits and forks, docs/scheduling.md); a kept-alive connection passes it once.
    pub fn with_connect_gate(mut self, gate: Arc<dyn http::ConnectGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The shared options.
    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The `wsmv:SessionId` of every request this client sends.
    pub(crate) fn session_id(&self) -> Uuid {
        self.session_id
    }

    /// The schemes the host offered in its last 401 (a host fact): from the exchange that
    /// authenticated the connection, or from the 401 that refused it.
    pub fn offered_schemes(&self) -> &[String] {
        &self.offered
    }

    /// Whether the open connection authenticated with Kerberos (Kerberos, or Negotiate
    /// that chose Kerberos over NTLM); `None` when no connection is open.
    pub fn uses_kerberos(&self) -> Option<bool> {
        self.conn.as_ref().map(Connection::uses_kerberos)
    }

    /// The address of the open connection, if any.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.conn.as_ref().map(Connection::peer_addr)
    }

    /// Opens and authenticates the connection now (operations do it when needed).
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.connection().await.map(drop)
    }

    /// Closes the kept-alive connection.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// `wsmid:Identify`: authenticated on the kept-alive connection, or unauthenticated
    /// (`WSMANIDENTIFY: unauthenticated`) on a connection of its own, as `Test-WSMan`.
    pub async fn identify(&mut self, authenticated: bool) -> Result<IdentifyResponse, ClientError> {
        let body = IdentifyRequest.to_xml();
        let reply = if authenticated {
            self.send_xml(&body).await?
        } else {
            self.requests += 1;
            http::identify_unauthenticated(&self.connection_config(), &body).await?
        };
        IdentifyResponse::parse(&reply.body).map_err(|error| match error {
            WsmanError::Fault(fault) => ClientError::Fault {
                operation: "Identify".to_owned(),
                fault,
            },
            other => protocol("Identify", other),
        })
    }

    /// WS-Transfer Get of `winrm/config` (quotas, MaxEnvelopeSizekb, auth settings).
    pub async fn get_config(&mut self) -> Result<WinrmConfig, ClientError> {
        let header = self.header(Action::Get, resources::CONFIG);
        let response = self
            .exchange(Request::new(header, RequestBody::Get), "Get")
            .await?;
        match response.body {
            ResponseBody::GetResponse(GetResponse::Config(config)) => Ok(config),
            other => Err(unexpected("Get", &other)),
        }
    }

    /// The shells the user has open on the host (Enumerate and Pull of the shell
    /// resource, R:test_psrp_disconnect_runspaces).
    pub async fn enumerate_shells(&mut self) -> Result<Vec<ShellInfo>, ClientError> {
        let header = self.header(Action::Enumerate, resources::SHELLS);
        let body = RequestBody::Enumerate(Enumerate {
            optimize: true,
            max_elements: Some(ENUMERATE_MAX_ELEMENTS),
            filter: None,
        });
        let mut batch = match self
            .exchange(Request::new(header, body), "Enumerate")
            .await?
            .body
        {
            ResponseBody::EnumerateResponse(batch) => batch,
            other => return Err(unexpected("Enumerate", &other)),
        };
        let mut shells = Vec::new();
        for _ in 0..MAX_PULLS {
            shells.extend(batch.items.into_iter().filter_map(|item| match item {
                EnumerationItem::Shell(shell) => Some(*shell),
                _ => None,
            }));
            let context = match batch.context {
                Some(context) if !batch.end_of_sequence && !context.is_empty() => context,
                _ => return Ok(shells),
            };
            let header = self.header(Action::Pull, resources::SHELLS);
            let body = RequestBody::Pull(Pull {
                context,
                max_elements: Some(ENUMERATE_MAX_ELEMENTS),
            });
            batch = match self
                .exchange(Request::new(header, body), "Pull")
                .await?
                .body
            {
                ResponseBody::PullResponse(batch) => batch,
                other => return Err(unexpected("Pull", &other)),
            };
        }
        Err(ClientError::Protocol {
            operation: "Pull".to_owned(),
            detail: format!("the enumeration did not end after {MAX_PULLS} pulls"),
        })
    }

    /// Deletes a shell with its own resource URI (a PowerShell shell deleted with the cmd
    /// URI stays open, wire-facts 1.12).
    pub async fn delete_shell(
        &mut self,
        shell_id: Uuid,
        resource_uri: &str,
    ) -> Result<(), ClientError> {
        let header = self
            .header(Action::Delete, resource_uri)
            .with_shell_id(&shell_id);
        match self
            .exchange(Request::new(header, RequestBody::Delete), "Delete")
            .await?
            .body
        {
            ResponseBody::DeleteResponse => Ok(()),
            other => Err(unexpected("Delete", &other)),
        }
    }

    /// Runs `command` with `arguments` in a new cmd shell, writes `stdin` (if not empty)
    /// and returns stdout, stderr and the exit code.
    pub async fn run_cmd(
        &mut self,
        command: &str,
        arguments: &[String],
        stdin: &[u8],
        control: RunControl,
    ) -> Result<CmdResult, RunError> {
        let start = self.mark();
        let url = self.endpoint.url();
        let settings = ShellSettings {
            session_id: Some(self.session_id),
            max_envelope_size: self.options.max_envelope_size,
            operation_timeout: self.options.effective_operation_timeout(),
            codepage: self.options.codepage,
            ..ShellSettings::new(url)
        };
        let spec = CommandSpec {
            command: command.to_owned(),
            arguments: arguments.to_vec(),
            stdin: if stdin.is_empty() {
                Vec::new()
            } else {
                vec![stdin.to_vec()]
            },
        };
        let (run, first) = CommandRun::start(settings, spec, &mut self.ids);
        let mut runner = CmdRunner {
            run,
            stdout: Vec::new(),
            stderr: Vec::new(),
            limit: control.limit.map_or(usize::MAX, |l| l.bytes),
            dropped_bytes: 0,
            exit_code: None,
            track: ShellTrack::new(resources::CMD_SHELL),
            outcome: None,
        };
        let stopped = self.drive(&mut runner, first, control).await;
        let durations = self.durations_since(&start);
        let leaked_shell = runner.track.leaked();
        let error = stopped.or_else(|| match runner.outcome.take() {
            Some(Ok(_)) => None,
            Some(Err(error)) => Some(winrs_error(error)),
            None => Some(ClientError::Protocol {
                operation: "Receive".to_owned(),
                detail: "the run ended without an outcome".to_owned(),
            }),
        });
        match (error, runner.exit_code) {
            (None, Some(exit_code)) => Ok(CmdResult {
                stdout: runner.stdout,
                stderr: runner.stderr,
                exit_code,
                dropped_bytes: runner.dropped_bytes,
                leaked_shell,
                durations,
            }),
            (error, _) => Err(RunError {
                error: error.unwrap_or_else(|| ClientError::Protocol {
                    operation: "Receive".to_owned(),
                    detail: "the command ended without an exit code".to_owned(),
                }),
                leaked_shell,
                durations,
            }),
        }
    }

    /// Runs a PowerShell script with its arguments in a new runspace pool and returns
    /// every stream and how the pipeline ended.
    pub async fn run_script(
        &mut self,
        spec: ScriptSpec,
        control: RunControl,
    ) -> Result<ScriptResult, RunError> {
        let start = self.mark();
        let settings = PsrpSettings {
            configuration_name: self.options.configuration_name.clone(),
            session_id: Some(self.session_id),
            max_envelope_size: self.options.max_envelope_size,
            operation_timeout: self.options.effective_operation_timeout(),
            protocol_version: ProtocolVersion::V2_3,
            max_received_message_bytes: self.options.max_received_message_bytes,
            ..PsrpSettings::new(self.endpoint.url())
        };
        let resource_uri = format!(
            "{}{}",
            resources::POWERSHELL_PREFIX,
            self.options.configuration_name
        );
        let (run, first) = ScriptRun::start(settings, spec, &mut self.ids);
        let mut runner = ScriptRunner {
            run,
            acc: ScriptAcc {
                limit: control.limit.map_or(usize::MAX, |l| l.records),
                ..ScriptAcc::default()
            },
            track: ShellTrack::new(&resource_uri),
            outcome: None,
        };
        if let Some(shell_id) = runner.run.pending_shell() {
            runner.track.created(shell_id);
        }
        let stopped = self.drive(&mut runner, first, control).await;
        let durations = self.durations_since(&start);
        let leaked_shell = runner.track.leaked();
        let error = stopped.or_else(|| match &runner.outcome {
            Some(Ok(_)) => None,
            Some(Err(error)) => Some(psrp_error(error.clone())),
            None => Some(ClientError::Protocol {
                operation: "Receive".to_owned(),
                detail: "the run ended without an outcome".to_owned(),
            }),
        });
        match (error, runner.outcome) {
            (None, Some(Ok(outcome))) => Ok(runner.acc.into_result(
                outcome,
                &self.endpoint.host.to_string(),
                runner.track.created,
                leaked_shell,
                durations,
            )),
            (error, _) => Err(RunError {
                error: error.unwrap_or_else(|| ClientError::Protocol {
                    operation: "Receive".to_owned(),
                    detail: "the pipeline ended without a state".to_owned(),
                }),
                leaked_shell,
                durations,
            }),
        }
    }

    // ----- private -----

    pub(crate) fn connection_config(&self) -> ConnectionConfig {
        let mut config = connection_config_for(&self.endpoint, &self.options, self.address);
        config.gate.clone_from(&self.gate);
        config
    }

    /// The kept-alive connection, opened (and authenticated) when there is none or the
    /// last one became unusable.
    async fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        if !self.conn.as_ref().is_some_and(Connection::is_usable) {
            self.conn = None;
            let started = Instant::now();
            self.connections += 1;
            let result = Connection::connect(&self.connection_config()).await;
            self.connect_time += started.elapsed();
            let conn = match result {
                Ok(conn) => conn,
                Err(error) => {
                    self.note_offered(&error);
                    return Err(error.into());
                }
            };
            if !conn.offered_schemes().is_empty() {
                self.offered = conn.offered_schemes().to_vec();
            }
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or(ClientError::Transport(http::TransportError::Unusable))
    }

    /// Opens a new connection whose authenticating leg can carry `xml` (over HTTPS with raw
    /// NTLM: one round trip fewer, BENCHMARKS.md "Round trips per host") and sends it; the
    /// connect time then includes that first request.
    async fn connect_and_send(&mut self, xml: &[u8]) -> Result<http::Reply, ClientError> {
        self.conn = None;
        let started = Instant::now();
        self.connections += 1;
        let result = Connection::connect_and_send(&self.connection_config(), xml).await;
        self.connect_time += started.elapsed();
        match result {
            Ok((conn, reply)) => {
                self.requests += 1;
                if !conn.offered_schemes().is_empty() {
                    self.offered = conn.offered_schemes().to_vec();
                }
                self.conn = Some(conn);
                Ok(reply)
            }
            Err(error) => {
                self.note_offered(&error);
                Err(error.into())
            }
        }
    }

    /// Keeps the connection after a successful send, drops it after a failed one.
    fn keep_or_drop(
        &mut self,
        sent: Result<http::Reply, http::TransportError>,
    ) -> Result<http::Reply, ClientError> {
        match sent {
            Ok(reply) => Ok(reply),
            Err(error) => {
                self.note_offered(&error);
                self.conn = None;
                Err(error.into())
            }
        }
    }

    /// Keeps the schemes a refusing 401 offered as the host's fact.
    fn note_offered(&mut self, error: &http::TransportError) {
        if let http::TransportError::MechanismNotOffered { offered, .. }
        | http::TransportError::CredentialsRejected { offered, .. }
        | http::TransportError::HttpStatus { offered, .. } = error
            && !offered.is_empty()
        {
            self.offered.clone_from(offered);
        }
    }

    /// Sends one request and parses the reply (a fault is returned as a response body).
    pub(crate) async fn send_request(
        &mut self,
        request: &Request,
        operation: &'static str,
    ) -> Result<Response, ClientError> {
        let reply = self.send_xml(&request.to_xml()).await?;
        Response::parse(&reply.body).map_err(|e| protocol(operation, e))
    }

    /// Sends one envelope on the kept-alive connection (opening one when needed), following
    /// redirections when [`ClientOptions::allow_redirection`] is on.
    async fn send_xml(&mut self, xml: &[u8]) -> Result<http::Reply, ClientError> {
        let mut followed = 0;
        loop {
            let reuse = self.conn.as_ref().is_some_and(Connection::is_usable);
            let result = if reuse || !self.connection_config().can_carry_first_request() {
                match self.connection().await {
                    Ok(conn) => {
                        let sent = conn.send(xml).await;
                        self.requests += 1;
                        self.keep_or_drop(sent)
                    }
                    Err(error) => Err(error),
                }
            } else {
                self.connect_and_send(xml).await
            };
            match result {
                Err(ClientError::Transport(http::TransportError::Redirected {
                    location: Some(location),
                    ..
                })) if self.options.allow_redirection && followed < MAX_REDIRECTIONS => {
                    followed += 1;
                    self.follow_redirection(&location)?;
                }
                other => return other,
            }
        }
    }

    /// Points the client at a redirection's `Location` (absolute, or a path on the same
    /// host) after the pre-send checks pass for it; the inventory address no longer
    /// applies. The next request opens (and authenticates) a new connection.
    fn follow_redirection(&mut self, location: &str) -> Result<(), ClientError> {
        let endpoint = if location.starts_with('/') {
            self.endpoint.clone().with_path(location)?
        } else {
            Endpoint::parse_uri(location)?
        };
        let mut config = ConnectionConfig::for_endpoint(
            &endpoint,
            self.options.auth,
            self.options.credential.clone(),
        );
        config.encryption = self.options.encryption;
        target::check_before_send(
            &endpoint,
            &self.options.auth,
            config.plaintext_over_http(),
            &self.options.policy,
        )?;
        tracing::debug!(from = %self.endpoint, to = %endpoint, "following a redirection");
        if endpoint.host != self.endpoint.host {
            self.address = None;
        }
        self.endpoint = endpoint;
        self.conn = None;
        Ok(())
    }

    /// Sends one request and turns a fault into [`ClientError::Fault`].
    async fn exchange(
        &mut self,
        request: Request,
        operation: &'static str,
    ) -> Result<Response, ClientError> {
        let response = self.send_request(&request, operation).await?;
        if response.header.relates_to != Some(request.header.message_id) {
            return Err(ClientError::Protocol {
                operation: operation.to_owned(),
                detail: format!(
                    "the reply relates to {:?}, not to request {}",
                    response.header.relates_to, request.header.message_id
                ),
            });
        }
        match response.body {
            ResponseBody::Fault(fault) => Err(ClientError::Fault {
                operation: operation.to_owned(),
                fault: Box::new(fault),
            }),
            _ => Ok(response),
        }
    }

    fn header(&mut self, action: Action, resource_uri: &str) -> RequestHeader {
        RequestHeader::new(
            action,
            self.endpoint.url(),
            resource_uri,
            self.ids.next_id(),
        )
        .with_session_id(self.session_id)
        .with_max_envelope_size(self.options.max_envelope_size)
        .with_operation_timeout(self.options.effective_operation_timeout())
    }

    /// Drives a run to its end. Returns the error that stopped it early (cancellation,
    /// deadline, transport failure, unparsable reply), if any; the machine's own outcome
    /// stays in the runner.
    async fn drive<R: Runner>(
        &mut self,
        runner: &mut R,
        first: Box<Request>,
        control: RunControl,
    ) -> Option<ClientError> {
        let RunControl {
            mut cancel,
            deadline,
            mut shell_hook,
            limit: _,
        } = control;
        let started = Instant::now();
        let cleanup_timeout = self.options.cleanup_timeout;
        let mut stopped: Option<ClientError> = None;
        let mut cleanup_deadline: Option<Instant> = None;
        let mut request = first;
        // Shells known before the first request (a PowerShell run's own ShellId) are
        // journaled before the Create can make them; one that cannot be is never created.
        if let Err(error) = report_shells(runner, &mut shell_hook).await {
            let reason = error.to_string();
            let _ = runner.abandon(reason.clone(), &mut self.ids);
            let _ = report_shells(runner, &mut shell_hook).await;
            return Some(ClientError::NotRecorded { reason });
        }
        loop {
            // A stop that came while a Create was in flight: the Create's response is awaited
            // first (it may carry a ShellId the host already made), then the run stops.
            let mut late: Option<Interrupt> = None;
            let creates_shell = matches!(request.header.action, Action::Create);
            let operation = operation_name(&request.header.action);
            // Cleanup requests (Signal, Delete) the machine sends itself are not
            // interrupted: they are what a stop would send anyway.
            let interruptible = cleanup_deadline.is_none()
                && !matches!(request.header.action, Action::Signal | Action::Delete);
            let outcome = if let Some(limit) = cleanup_deadline {
                match tokio::time::timeout_at(limit, self.send_request(&request, operation)).await {
                    Ok(result) => result.map_err(Interrupt::Failed),
                    Err(_) => Err(Interrupt::CleanupTimedOut),
                }
            } else if interruptible {
                let send = self.send_request(&request, operation);
                tokio::pin!(send);
                let raced = tokio::select! {
                    biased;
                    () = cancelled(&mut cancel) => Err(Interrupt::Cancelled),
                    () = deadline_passed(deadline) => Err(Interrupt::Deadline),
                    result = &mut send => Ok(result),
                };
                match raced {
                    Ok(result) => result.map_err(Interrupt::Failed),
                    // Dropping a Create in flight would leak the shell the host may have
                    // made: wait (bounded) for its ShellId so the stop can delete it.
                    Err(interrupt) if creates_shell => {
                        match tokio::time::timeout(cleanup_timeout, &mut send).await {
                            Ok(Ok(response)) => {
                                late = Some(interrupt);
                                Ok(response)
                            }
                            _ => Err(interrupt),
                        }
                    }
                    Err(interrupt) => Err(interrupt),
                }
            } else {
                self.send_request(&request, operation)
                    .await
                    .map_err(Interrupt::Failed)
            };
            let next = match outcome {
                Ok(response) => {
                    let next = runner.handle(response, &mut self.ids);
                    match (late.take(), next) {
                        (Some(interrupt), Next::Send(_)) => {
                            let error = interruption(interrupt, &mut cancel, started);
                            let reason = error.to_string();
                            stopped.get_or_insert(error);
                            cleanup_deadline
                                .get_or_insert_with(|| Instant::now() + cleanup_timeout);
                            runner.abort(reason, &mut self.ids)
                        }
                        (Some(interrupt), Next::Done) => {
                            let error = interruption(interrupt, &mut cancel, started);
                            stopped.get_or_insert(error);
                            Next::Done
                        }
                        (None, next) => next,
                    }
                }
                Err(Interrupt::CleanupTimedOut) => {
                    // The shell may stay open: the track reports it as leaked.
                    self.conn = None;
                    tracing::debug!(endpoint = %self.endpoint, "cleanup timed out");
                    return stopped.or(Some(ClientError::Timeout {
                        elapsed: started.elapsed(),
                    }));
                }
                Err(interrupt) => {
                    let error = interruption(interrupt, &mut cancel, started);
                    // An interrupted send left the connection mid-request (and a sealed
                    // message may have used a sequence number): clean up on a new one.
                    if !matches!(error, ClientError::Protocol { .. }) {
                        self.conn = None;
                    }
                    let reason = error.to_string();
                    let create_never_arrived = creates_shell && !may_have_reached_host(&error);
                    stopped.get_or_insert(error);
                    cleanup_deadline
                        .get_or_insert_with(|| Instant::now() + self.options.cleanup_timeout);
                    if create_never_arrived {
                        runner.abandon(reason, &mut self.ids)
                    } else {
                        runner.abort(reason, &mut self.ids)
                    }
                }
            };
            // Shells created or deleted by that step are reported before anything else is
            // sent (a created shell is journaled before it runs anything); a shell that
            // cannot be recorded is deleted at once rather than used.
            let next = match report_shells(runner, &mut shell_hook).await {
                Err(error) if cleanup_deadline.is_none() && matches!(next, Next::Send(_)) => {
                    let reason = error.to_string();
                    stopped.get_or_insert(ClientError::NotRecorded {
                        reason: reason.clone(),
                    });
                    cleanup_deadline.get_or_insert_with(|| Instant::now() + cleanup_timeout);
                    runner.abort(reason, &mut self.ids)
                }
                _ => next,
            };
            match next {
                Next::Send(next) => request = next,
                Next::Done => return stopped,
            }
        }
    }

    fn mark(&self) -> (Instant, Duration, u32, u32) {
        (
            Instant::now(),
            self.connect_time,
            self.requests,
            self.connections,
        )
    }

    fn durations_since(&self, start: &(Instant, Duration, u32, u32)) -> Durations {
        Durations {
            connect: self.connect_time.saturating_sub(start.1),
            total: start.0.elapsed(),
            requests: self.requests.saturating_sub(start.2),
            connections: self.connections.saturating_sub(start.3),
        }
    }
}

/// Renders a CLIXML value as JSON, the way `ConvertTo-Json` shows deserialized objects:
/// property bags as objects (adapted then extended properties), lists as arrays,
/// dictionaries as objects keyed by the key's text, enums as their number, numbers as
/// numbers, and dates, durations, versions and GUIDs as their text. Byte arrays are base64
/// text, secure strings their type name; nesting deeper than 64 becomes the value's text.
pub fn clixml_to_json(value: &Value) -> serde_json::Value {
    to_json(value, 0)
}

/// Adds Invoke-Command's note properties to an output object (wire-facts 4.6):
/// `PSComputerName`, `RunspaceId` and `PSShowComputerName`. Scalars and arrays stay bare,
/// as PowerShell 7's `ConvertTo-Json` renders strings and numbers that carry them.
pub fn annotate(value: &mut serde_json::Value, computer_name: &str, runspace_id: Option<&str>) {
    if let serde_json::Value::Object(map) = value {
        map.insert(
            "PSComputerName".to_owned(),
            serde_json::Value::String(computer_name.to_owned()),
        );
        map.insert(
            "RunspaceId".to_owned(),
            runspace_id.map_or(serde_json::Value::Null, |id| {
                serde_json::Value::String(id.to_owned())
            }),
        );
        map.insert(
            "PSShowComputerName".to_owned(),
            serde_json::Value::Bool(true),
        );
    }
}

/// The connection settings of a client for `endpoint` with `options`, connecting to
/// `address` when given (what every connection of a [`HostClient`] uses; the doctor's
/// probes use the same).
pub(crate) fn connection_config_for(
    endpoint: &Endpoint,
    options: &ClientOptions,
    address: Option<IpAddr>,
) -> ConnectionConfig {
    let mut config =
        ConnectionConfig::for_endpoint(endpoint, options.auth, options.credential.clone());
    config.encryption = options.encryption;
    config.tls = options.tls.clone();
    config.client_certificate = options.client_certificate.clone();
    config.kerberos = options.kerberos.clone();
    config.resolver = Arc::clone(&options.resolver);
    config.address = address;
    config.connect_timeout = options.connect_timeout;
    config.request_timeout = options.request_timeout;
    config.max_response_bytes = options.effective_max_response_bytes();
    config
}

/// Fresh random GUIDs (v4) from the system's secure generator.
pub(crate) struct RandomIds {
    rng: ring::rand::SystemRandom,
    fallback: u64,
}

impl RandomIds {
    pub(crate) fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            rng: ring::rand::SystemRandom::new(),
            fallback: seed ^ u64::from(std::process::id()),
        }
    }
}

impl IdGenerator for RandomIds {
    fn next_id(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        if self.rng.fill(&mut bytes).is_err() {
            // The OS generator failed (it does not in practice): SplitMix64 keeps the ids
            // unique within the process, which is all WS-Man needs of them.
            for half in bytes.chunks_mut(8) {
                self.fallback = self.fallback.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.fallback;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                half.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
            }
        }
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// Why a request was not answered normally.
enum Interrupt {
    Cancelled,
    Deadline,
    CleanupTimedOut,
    Failed(ClientError),
}

/// What a runner wants next.
enum Next {
    Send(Box<Request>),
    Done,
}

/// A core state machine behind a common face, collecting its events.
trait Runner {
    fn handle(&mut self, response: Response, ids: &mut RandomIds) -> Next;
    /// Stops the run and cleans up whatever may exist on the host.
    fn abort(&mut self, reason: String, ids: &mut RandomIds) -> Next;
    /// Stops a run whose outstanding Create never reached the host.
    fn abandon(&mut self, reason: String, ids: &mut RandomIds) -> Next {
        self.abort(reason, ids)
    }
    fn track(&mut self) -> &mut ShellTrack;
}

/// Whether the run's shell exists and was deleted, from the machine's events, and the
/// [`ShellEvent`]s not yet reported.
#[derive(Debug, Default)]
struct ShellTrack {
    resource_uri: String,
    created: Option<Uuid>,
    deleted: bool,
    /// At most two: one run creates one shell and deletes it once.
    events: Vec<ShellEvent>,
}

impl ShellTrack {
    fn new(resource_uri: &str) -> Self {
        Self {
            resource_uri: resource_uri.to_owned(),
            ..Self::default()
        }
    }

    fn created(&mut self, shell_id: Uuid) {
        if self.created == Some(shell_id) {
            // Reported before the Create went out; the reply only confirms it.
            return;
        }
        self.created = Some(shell_id);
        self.events.push(ShellEvent::Created {
            shell_id,
            resource_uri: self.resource_uri.clone(),
        });
    }

    fn deleted(&mut self, shell_id: Uuid) {
        self.deleted = true;
        self.events.push(ShellEvent::Deleted { shell_id });
    }

    fn take_events(&mut self) -> Vec<ShellEvent> {
        std::mem::take(&mut self.events)
    }

    fn leaked(&self) -> Option<Uuid> {
        self.created.filter(|_| !self.deleted)
    }
}

/// Appends `item` unless `items` holds `limit` already; then it is counted in `dropped`.
fn keep<T>(items: &mut Vec<T>, item: T, limit: usize, dropped: &mut u64) {
    if items.len() < limit {
        items.push(item);
    } else {
        *dropped = dropped.saturating_add(1);
    }
}

/// Appends what fits of `data` under `limit` bytes; the rest is counted in `dropped`.
fn keep_bytes(buffer: &mut Vec<u8>, data: &[u8], limit: usize, dropped: &mut u64) {
    let room = limit.saturating_sub(buffer.len()).min(data.len());
    buffer.extend_from_slice(data.get(..room).unwrap_or_default());
    let rest = u64::try_from(data.len() - room).unwrap_or(u64::MAX);
    *dropped = dropped.saturating_add(rest);
}

struct CmdRunner {
    run: CommandRun,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Most bytes kept of stdout, and of stderr.
    limit: usize,
    dropped_bytes: u64,
    exit_code: Option<i64>,
    track: ShellTrack,
    outcome: Option<Result<i64, WinrsError>>,
}

impl CmdRunner {
    fn next(&mut self, step: psfleet_core::winrs::Step) -> Next {
        while let Some(event) = self.run.poll_event() {
            match event {
                WinrsEvent::ShellCreated { shell_id } => self.track.created(shell_id),
                WinrsEvent::ShellDeleted { shell_id } => self.track.deleted(shell_id),
                WinrsEvent::Stdout(data) => {
                    keep_bytes(&mut self.stdout, &data, self.limit, &mut self.dropped_bytes);
                }
                WinrsEvent::Stderr(data) => {
                    keep_bytes(&mut self.stderr, &data, self.limit, &mut self.dropped_bytes);
                }
                WinrsEvent::Exited { exit_code } => self.exit_code = Some(exit_code),
                WinrsEvent::CleanupFailed { shell_id, error } => {
                    tracing::debug!(%shell_id, %error, "cmd shell cleanup failed");
                }
                WinrsEvent::CommandStarted { .. } => {}
            }
        }
        match step {
            psfleet_core::winrs::Step::Send(request) => Next::Send(request),
            psfleet_core::winrs::Step::Finished(outcome) => {
                self.outcome = Some(outcome);
                Next::Done
            }
        }
    }
}

impl Runner for CmdRunner {
    fn handle(&mut self, response: Response, ids: &mut RandomIds) -> Next {
        let step = self.run.handle(response, ids);
        self.next(step)
    }

    fn abort(&mut self, reason: String, ids: &mut RandomIds) -> Next {
        let step = self.run.abort(WinrsError::Aborted(reason), ids);
        self.next(step)
    }
    fn track(&mut self) -> &mut ShellTrack {
        &mut self.track
    }
}

/// The streams of a script run, as they arrive.
#[derive(Debug, Default)]
struct ScriptAcc {
    /// Most records kept per stream.
    limit: usize,
    dropped: u64,
    output: Vec<Value>,
    errors: Vec<ErrorInfo>,
    warnings: Vec<String>,
    verbose: Vec<String>,
    debug: Vec<String>,
    information: Vec<InformationEntry>,
    progress: Vec<ProgressEntry>,
    ps_version: Option<String>,
}

impl ScriptAcc {
    fn into_result(
        self,
        outcome: PipelineOutcome,
        computer_name: &str,
        shell: Option<Uuid>,
        leaked_shell: Option<Uuid>,
        durations: Durations,
    ) -> ScriptResult {
        let runspace_id = shell.map(|id| id.hyphenated().to_string());
        let output = self
            .output
            .iter()
            .map(|value| {
                let mut json = clixml_to_json(value);
                annotate(&mut json, computer_name, runspace_id.as_deref());
                json
            })
            .collect();
        ScriptResult {
            output,
            errors: self.errors,
            warnings: self.warnings,
            verbose: self.verbose,
            debug: self.debug,
            information: self.information,
            progress: self.progress,
            dropped: self.dropped,
            pipeline_state: outcome.state.name().to_owned(),
            error_record: outcome.error.as_deref().map(ErrorInfo::from),
            ps_version: self.ps_version,
            computer_name: computer_name.to_owned(),
            runspace_id,
            leaked_shell: leaked_shell.map(|id| id.hyphenated().to_string()),
            durations,
        }
    }
}

struct ScriptRunner {
    run: ScriptRun,
    acc: ScriptAcc,
    track: ShellTrack,
    outcome: Option<Result<PipelineOutcome, PsrpClientError>>,
}

impl ScriptRunner {
    fn next(&mut self, step: psfleet_core::psrp::client::Step) -> Next {
        while let Some(event) = self.run.poll_event() {
            match event {
                PsrpEvent::ShellCreated { shell_id } => self.track.created(shell_id),
                PsrpEvent::ShellDeleted { shell_id } => self.track.deleted(shell_id),
                PsrpEvent::PsVersionTable(table) => {
                    self.acc.ps_version = table.ps_version.map(|v| v.to_string());
                }
                PsrpEvent::Output(value) => {
                    let acc = &mut self.acc;
                    keep(&mut acc.output, value, acc.limit, &mut acc.dropped);
                }
                PsrpEvent::Error(record) => {
                    let acc = &mut self.acc;
                    let info = ErrorInfo::from(&*record);
                    keep(&mut acc.errors, info, acc.limit, &mut acc.dropped);
                }
                PsrpEvent::Warning(record) => {
                    let acc = &mut self.acc;
                    keep(
                        &mut acc.warnings,
                        record.message,
                        acc.limit,
                        &mut acc.dropped,
                    );
                }
                PsrpEvent::Verbose(record) => {
                    let acc = &mut self.acc;
                    keep(
                        &mut acc.verbose,
                        record.message,
                        acc.limit,
                        &mut acc.dropped,
                    );
                }
                PsrpEvent::Debug(record) => {
                    let acc = &mut self.acc;
                    keep(&mut acc.debug, record.message, acc.limit, &mut acc.dropped);
                }
                PsrpEvent::Information(record) => {
                    let acc = &mut self.acc;
                    let entry = InformationEntry::from(&*record);
                    keep(&mut acc.information, entry, acc.limit, &mut acc.dropped);
                }
                PsrpEvent::Progress(record) => {
                    let acc = &mut self.acc;
                    let entry = ProgressEntry::from(&*record);
                    keep(&mut acc.progress, entry, acc.limit, &mut acc.dropped);
                }
                PsrpEvent::CleanupFailed { shell_id, error } => {
                    tracing::debug!(%shell_id, %error, "PowerShell shell cleanup failed");
                }
                PsrpEvent::PipelineStarted { .. } | PsrpEvent::PipelineState { .. } => {}
            }
        }
        match step {
            psfleet_core::psrp::client::Step::Send(request) => Next::Send(request),
            psfleet_core::psrp::client::Step::Finished(outcome) => {
                self.outcome = Some(outcome);
                Next::Done
            }
        }
    }
}

impl Runner for ScriptRunner {
    fn handle(&mut self, response: Response, ids: &mut RandomIds) -> Next {
        let step = self.run.handle(response, ids);
        self.next(step)
    }

    fn abort(&mut self, reason: String, ids: &mut RandomIds) -> Next {
        let step = self.run.abort(PsrpClientError::Aborted(reason), ids);
        self.next(step)
    }

    fn abandon(&mut self, reason: String, ids: &mut RandomIds) -> Next {
        // The id reported before the Create names no shell: close the record.
        if let Some(shell_id) = self.run.pending_shell() {
            self.track.deleted(shell_id);
        }
        let step = self.run.abandon(PsrpClientError::Aborted(reason), ids);
        self.next(step)
    }

    fn track(&mut self) -> &mut ShellTrack {
        &mut self.track
    }
}

/// Whether a request that failed with `error` may have been received and acted on (see
/// [`TransportError::may_have_reached_server`]); a pre-send refusal never was.
fn may_have_reached_host(error: &ClientError) -> bool {
    match error {
        ClientError::Target(_) => false,
        ClientError::Transport(transport) => transport.may_have_reached_server(),
        _ => true,
    }
}

/// Passes the shell events a step produced to the hook, in order; the first error is
/// returned after every event was offered (a later Deleted still closes its record).
async fn report_shells<R: Runner>(
    runner: &mut R,
    hook: &mut Option<ShellHook>,
) -> Result<(), ShellNotRecorded> {
    let mut first_error = None;
    for event in runner.track().take_events() {
        if let Some(hook) = hook.as_mut()
            && let Err(error) = hook(event).await
        {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The error a stop reports; a fired cancellation is disarmed (it fires once).
fn interruption(
    interrupt: Interrupt,
    cancel: &mut Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    started: Instant,
) -> ClientError {
    match interrupt {
        Interrupt::Cancelled => {
            *cancel = None;
            ClientError::Cancelled
        }
        Interrupt::Deadline => ClientError::Timeout {
            elapsed: started.elapsed(),
        },
        Interrupt::Failed(error) => error,
        Interrupt::CleanupTimedOut => ClientError::Cancelled,
    }
}

/// Completes when the run is cancelled; never without a cancellation future.
async fn cancelled(cancel: &mut Option<Pin<Box<dyn Future<Output = ()> + Send>>>) {
    match cancel {
        Some(future) => future.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Completes at the deadline; never without one.
async fn deadline_passed(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn operation_name(action: &Action) -> &'static str {
    match action {
        Action::Create => "Create",
        Action::Command => "Command",
        Action::Send => "Send",
        Action::Receive => "Receive",
        Action::Signal => "Signal",
        Action::Delete => "Delete",
        Action::Get => "Get",
        Action::Enumerate => "Enumerate",
        Action::Pull => "Pull",
        _ => "request",
    }
}

fn protocol(operation: &str, error: WsmanError) -> ClientError {
    ClientError::Protocol {
        operation: operation.to_owned(),
        detail: error.to_string(),
    }
}

fn unexpected(operation: &str, body: &ResponseBody) -> ClientError {
    if let ResponseBody::Fault(fault) = body {
        return ClientError::Fault {
            operation: operation.to_owned(),
            fault: Box::new(fault.clone()),
        };
    }
    ClientError::Protocol {
        operation: operation.to_owned(),
        detail: format!(
            "unexpected reply {}",
            body.action()
                .map_or("(untyped)".to_owned(), |a| a.uri().to_owned())
        ),
    }
}

fn winrs_error(error: WinrsError) -> ClientError {
    match error {
        WinrsError::Fault { operation, fault } => ClientError::Fault {
            operation: format!("{operation:?}"),
            fault,
        },
        other => ClientError::Protocol {
            operation: "WinRS".to_owned(),
            detail: other.to_string(),
        },
    }
}

pub(crate) fn psrp_error(error: PsrpClientError) -> ClientError {
    match error {
        PsrpClientError::Fault { operation, fault } => ClientError::Fault {
            operation: format!("{operation:?}"),
            fault,
        },
        PsrpClientError::PoolFailed { state, error } => ClientError::PoolBroken {
            state: state.name().to_owned(),
            error: error.as_deref().map(|e| Box::new(ErrorInfo::from(e))),
        },
        other => ClientError::Protocol {
            operation: "PSRP".to_owned(),
            detail: other.to_string(),
        },
    }
}

fn to_json(value: &Value, depth: usize) -> serde_json::Value {
    use serde_json::Value as J;
    if depth > MAX_JSON_DEPTH {
        return J::String(value.display_text().into_owned());
    }
    let float = |text: String, v: Option<f64>| {
        v.and_then(serde_json::Number::from_f64)
            .map_or(J::String(text), J::Number)
    };
    match value {
        Value::Nil => J::Null,
        Value::String(s) | Value::Uri(s) | Value::Xml(s) | Value::ScriptBlock(s) => {
            J::String(s.clone())
        }
        Value::Char(_) => J::String(value.display_text().into_owned()),
        Value::Bool(b) => J::Bool(*b),
        Value::U8(n) => J::from(*n),
        Value::I8(n) => J::from(*n),
        Value::U16(n) => J::from(*n),
        Value::I16(n) => J::from(*n),
        Value::U32(n) => J::from(*n),
        Value::I32(n) => J::from(*n),
        Value::U64(n) => J::from(*n),
        Value::I64(n) => J::from(*n),
        Value::Single(f) | Value::Double(f) => float(f.to_string(), f.value()),
        Value::Decimal(d) => float(d.to_string(), d.to_f64()),
        Value::DateTime(d) => J::String(d.to_string()),
        Value::Duration(d) => J::String(d.to_string()),
        Value::Version(v) => J::String(v.to_string()),
        Value::Bytes(b) => J::String(BASE64.encode(b)),
        Value::Guid(g) => J::String(g.hyphenated().to_string()),
        Value::SecureString(_) => J::String("System.Security.SecureString".to_owned()),
        Value::Object(object) => object_to_json(object, depth),
    }
}

fn object_to_json(object: &PsObject, depth: usize) -> serde_json::Value {
    use serde_json::Value as J;
    let items = |items: &[Value]| J::Array(items.iter().map(|v| to_json(v, depth + 1)).collect());
    match &object.content {
        Content::List(v) | Content::Enumerable(v) | Content::Queue(v) | Content::Stack(v) => {
            return items(v);
        }
        Content::Dictionary(entries) => {
            return J::Object(
                entries
                    .iter()
                    .map(|e| {
                        (
                            e.key.display_text().into_owned(),
                            to_json(&e.value, depth + 1),
                        )
                    })
                    .collect(),
            );
        }
        // An enum is its number (ConvertTo-Json's default); a primitive with note
        // properties is the primitive.
        Content::Value(inner) => return to_json(inner, depth + 1),
        Content::None => {}
    }
    let properties: serde_json::Map<String, J> = object
        .adapted
        .iter()
        .chain(&object.extended)
        .map(|p| (p.name.clone(), to_json(&p.value, depth + 1)))
        .collect();
    if properties.is_empty()
        && let Some(text) = &object.to_string
    {
        return J::String(text.clone());
    }
    J::Object(properties)
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use psfleet_core::psrp::clixml::{self, DictEntry, Property};
    use serde_json::json;

    #[test]
    fn clixml_renders_like_convert_to_json() {
        let service = Value::object(PsObject {
            type_names: Some(clixml::type_names_of(&[
                "Deserialized.System.ServiceProcess.ServiceController",
                "Deserialized.System.Object",
            ])),
            to_string: Some("System.ServiceProcess.ServiceController".into()),
            content: Content::None,
            adapted: vec![
                Property::new("Name", "WinRM"),
                Property::new(
                    "Status",
                    Value::enumeration(
                        "System.ServiceProcess.ServiceControllerStatus",
                        "Running",
                        4,
                    ),
                ),
                Property::new("CanStop", true),
            ],
            extended: vec![Property::new(
                "Tags",
                Value::list(&["System.Object[]"], vec!["a".into(), 7.into()]),
            )],
        });
        assert_eq!(
            clixml_to_json(&service),
            json!({"Name": "WinRM", "Status": 4, "CanStop": true, "Tags": ["a", 7]})
        );
        let table = Value::dictionary(
            &["System.Collections.Hashtable", "System.Object"],
            vec![DictEntry {
                key: "k".into(),
                value: Value::I64(-3),
            }],
        );
        assert_eq!(clixml_to_json(&table), json!({"k": -3}));
        assert_eq!(clixml_to_json(&Value::Nil), json!(null));
        assert_eq!(clixml_to_json(&Value::Char(0x41)), json!("A"));
        assert_eq!(
            clixml_to_json(&Value::Bytes(vec![1, 2, 255])),
            json!("AQL/")
        );
        assert_eq!(
            clixml_to_json(&Value::Double(clixml::Float::from_f64(1.5))),
            json!(1.5)
        );
        assert_eq!(
            clixml_to_json(&Value::Double(clixml::Float::from_text("INF"))),
            json!("INF")
        );
        assert_eq!(
            clixml_to_json(&Value::Guid(Uuid::from_u128(1))),
            json!("00000000-0000-0000-0000-000000000001")
        );
        let bare = Value::object(PsObject {
            to_string: Some("text only".into()),
            ..PsObject::default()
        });
        assert_eq!(clixml_to_json(&bare), json!("text only"));
    }

    #[test]
    fn deep_nesting_is_cut_to_text() {
        let mut value = Value::from("leaf");
        for _ in 0..200 {
            value = Value::list(&["System.Object[]"], vec![value]);
        }
        let json = clixml_to_json(&value);
        let mut depth = 0;
        let mut at = &json;
        while let serde_json::Value::Array(items) = at {
            depth += 1;
            at = &items[0];
        }
        assert!(depth <= MAX_JSON_DEPTH + 1, "{depth}");
        assert!(at.is_string());
    }

    #[test]
    fn annotations_go_on_objects_only() {
        let mut object = json!({"Name": "x"});
        annotate(&mut object, "srv1.fleet.test", Some("abc"));
        assert_eq!(
            object,
            json!({"Name": "x", "PSComputerName": "srv1.fleet.test", "RunspaceId": "abc", "PSShowComputerName": true})
        );
        let mut scalar = json!("x");
        annotate(&mut scalar, "srv1", None);
        assert_eq!(scalar, json!("x"));
    }

    #[test]
    fn output_limits_keep_the_start_and_count_the_rest() {
        let mut items = Vec::new();
        let mut dropped = 0;
        for i in 0..5 {
            keep(&mut items, i, 3, &mut dropped);
        }
        assert_eq!((items, dropped), (vec![0, 1, 2], 2));
        let mut buffer = Vec::new();
        let mut dropped = 0;
        keep_bytes(&mut buffer, b"hello", 3, &mut dropped);
        keep_bytes(&mut buffer, b"world", 3, &mut dropped);
        assert_eq!((buffer.as_slice(), dropped), (&b"hel"[..], 7));
        let mut track = ShellTrack::new(resources::CMD_SHELL);
        track.created(Uuid::from_u128(7));
        track.deleted(Uuid::from_u128(7));
        assert_eq!(track.leaked(), None);
        assert_eq!(
            track.take_events(),
            [
                ShellEvent::Created {
                    shell_id: Uuid::from_u128(7),
                    resource_uri: resources::CMD_SHELL.to_owned()
                },
                ShellEvent::Deleted {
                    shell_id: Uuid::from_u128(7)
                }
            ]
        );
        assert!(track.take_events().is_empty());
    }

    #[test]
    fn random_ids_are_v4_and_distinct() {
        let mut ids = RandomIds::new();
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 4);
    }

    #[test]
    fn operation_timeout_stays_below_the_request_timeout() {
        let credential = Credential::new("alice", "pw").unwrap();
        let mut options = ClientOptions::new(AuthMethod::Basic, credential);
        assert_eq!(
            options.effective_operation_timeout(),
            Duration::from_secs(20)
        );
        options.request_timeout = Duration::from_secs(10);
        assert_eq!(
            options.effective_operation_timeout(),
            Duration::from_secs(5)
        );
        options.request_timeout = Duration::from_secs(4);
        assert_eq!(
            options.effective_operation_timeout(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn pre_send_checks_run_when_the_client_is_made() {
        let credential = Credential::new("alice", "pw").unwrap();
        let options = Arc::new(ClientOptions::new(
            crate::auth::Mechanism::Negotiate,
            credential.clone(),
        ));
        let ip = Endpoint::new("10.0.0.5", target::Scheme::Http).unwrap();
        let error = HostClient::new(ip, Arc::clone(&options)).unwrap_err();
        assert_eq!(error.bucket(), Some(Bucket::InvalidHostIpAddress));
        let basic = Arc::new(ClientOptions::new(AuthMethod::Basic, credential));
        let name = Endpoint::new("web01", target::Scheme::Http).unwrap();
        let error = HostClient::new(name, basic).unwrap_err();
        assert_eq!(error.bucket(), Some(Bucket::ClientAuthenticationDisabled));
    }
}
