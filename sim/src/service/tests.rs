//! The service driven by core's own client state machines (`winrs::CommandRun`,
//! `psrp::client::ScriptRun`) and by hand-built requests, on a simulated clock: every
//! `WaitUntil` advances the clock to the time asked for.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use psfleet_core::ids::{IdGenerator, SequentialIds};
use psfleet_core::psrp::client::{
    PsrpClientError, PsrpEvent, PsrpSettings, ScriptRun, ScriptSpec, Step as PsrpStep,
};
use psfleet_core::psrp::messages::{PsInvocationState, PsrpMessage, RunspacePoolState};
use psfleet_core::psrp::{Defragmenter, Value, receive_blob};
use psfleet_core::winrs::{CommandRun, CommandSpec, ShellSettings, Step, WinrsEvent};
use psfleet_core::wsman::{
    Action, CommandLine, CreateShell, Enumerate, FaultCode, GetResponse, Pull, Receive, Request,
    RequestBody, RequestHeader, Response, ResponseBody, SelectorFilter, Signal, SignalCode,
    WinrmConfig, resources,
};

use super::*;
use crate::host::{
    Account, AuthSpec, CertificateKind, Expected, HostData, HostSpec, NetworkSpec, OsInfo,
    PowerShellInfo, ScriptBehaviour,
};

const ENDPOINT: &str = "http://srv0001.fleet.test:5985/wsman";
const ADMIN: &str = "vagrant";
const OTHER_ADMIN: &str = "ops";
const NON_ADMIN: &str = "reader";

pub(super) fn host() -> HostSpec {
    let mut winrm = WinrmConfig::server_2016();
    if let Some(winrs) = winrm.winrs.as_mut() {
        winrs.max_shells_per_user = Some(5);
        winrs.idle_timeout_ms = Some(7_200_000);
    }
    HostSpec {
        name: "srv0001.fleet.test".to_owned(),
        address: Ipv4Addr::new(127, 0, 0, 11),
        class: "healthy".to_owned(),
        expected: Expected::Succeeded,
        network: NetworkSpec {
            http_port: Some(5985),
            https_port: None,
            certificate: CertificateKind::Valid,
            blackhole: false,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            reset_probability: 0.0,
            empty_500_probability: 0.0,
        },
        auth: AuthSpec {
            basic: false,
            negotiate: true,
            kerberos: false,
            credssp: false,
            certificate: false,
            allow_unencrypted: false,
            cbt_hardening: "Relaxed".to_owned(),
        },
        accounts: [(ADMIN, true), (OTHER_ADMIN, true), (NON_ADMIN, false)]
            .into_iter()
            .map(|(name, admin)| Account {
                name: name.to_owned(),
                password: "secret".to_owned(),
                admin,
            })
            .collect(),
        winrm,
        configurations: vec!["Microsoft.PowerShell".to_owned(), "JEARole".to_owned()],
        remoting_enabled: true,
        os: OsInfo {
            caption: "Microsoft Windows Server 2019 Datacenter".to_owned(),
            version: "10.0.17763".to_owned(),
            identify_product_version: "OS: 10.0.17763 SP: 0.0 Stack: 3.0".to_owned(),
            computer_name: "SRV0001".to_owned(),
            last_boot: "2026-01-01T00:00:00Z".to_owned(),
        },
        powershell: PowerShellInfo {
            version: "5.1.17763.1".to_owned(),
            protocol_version: "2.3".to_owned(),
            modules_fail: false,
        },
        script: ScriptBehaviour {
            extra_duration: Duration::ZERO,
            always_fail: false,
        },
        data: HostData::default(),
    }
}

fn service(spec: HostSpec) -> HostService {
    HostService::new(Arc::new(spec))
}

/// One request/response on the simulated clock, recording what went over the wire.
#[derive(Default)]
struct Wire {
    now: Duration,
    /// (action, HTTP status, response size, fault code, when answered)
    log: Vec<(Action, u16, usize, Option<u32>, Duration)>,
}

impl Wire {
    fn call(&mut self, service: &HostService, user: &str, request: &Request) -> Response {
        let body = request.to_xml();
        let received_at = self.now;
        for _ in 0..10_000 {
            match service.handle(&ServiceRequest {
                user,
                body: &body,
                received_at,
                now: self.now,
            }) {
                ServiceReply::Respond { status, body } => {
                    let response = Response::parse(&body).unwrap();
                    assert_eq!(status, response.http_status());
                    let code = response.fault().and_then(|f| f.code).map(|c| c.as_u32());
                    self.log.push((
                        request.header.action.clone(),
                        status,
                        body.len(),
                        code,
                        self.now,
                    ));
                    return response;
                }
                ServiceReply::WaitUntil(at) => {
                    assert!(at > self.now, "WaitUntil({at:?}) at {:?}", self.now);
                    self.now = at;
                }
            }
        }
        panic!("no answer after 10000 calls");
    }

    fn faults(&self, code: u32) -> usize {
        self.log.iter().filter(|e| e.3 == Some(code)).count()
    }
}

fn run_cmd(
    service: &HostService,
    wire: &mut Wire,
    command: &str,
) -> (
    Result<i64, psfleet_core::winrs::WinrsError>,
    Vec<u8>,
    Vec<u8>,
) {
    let mut ids = SequentialIds::starting_after(0x1000);
    let (mut run, first) = CommandRun::start(
        ShellSettings::new(ENDPOINT),
        CommandSpec {
            command: command.to_owned(),
            arguments: Vec::new(),
            stdin: Vec::new(),
        },
        &mut ids,
    );
    let mut request = *first;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let response = wire.call(service, ADMIN, &request);
        let step = run.handle(response, &mut ids);
        while let Some(event) = run.poll_event() {
            match event {
                WinrsEvent::Stdout(b) => stdout.extend(b),
                WinrsEvent::Stderr(b) => stderr.extend(b),
                _ => {}
            }
        }
        match step {
            Step::Send(next) => request = *next,
            Step::Finished(outcome) => return (outcome, stdout, stderr),
        }
    }
}

fn run_psrp(
    service: &HostService,
    wire: &mut Wire,
    user: &str,
    settings: PsrpSettings,
    spec: ScriptSpec,
) -> (
    Result<psfleet_core::psrp::client::PipelineOutcome, PsrpClientError>,
    Vec<PsrpEvent>,
) {
    let mut ids = SequentialIds::starting_after(0x2000);
    let (mut run, first) = ScriptRun::start(settings, spec, &mut ids);
    let mut request = *first;
    let mut events = Vec::new();
    for _ in 0..1000 {
        let response = wire.call(service, user, &request);
        let step = run.handle(response, &mut ids);
        while let Some(event) = run.poll_event() {
            events.push(event);
        }
        match step {
            PsrpStep::Send(next) => request = *next,
            PsrpStep::Finished(outcome) => return (outcome, events),
        }
    }
    panic!("run did not finish");
}

fn outputs(events: &[PsrpEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            PsrpEvent::Output(v) => Some(v.display_text().into_owned()),
            _ => None,
        })
        .collect()
}

fn header(action: Action, resource: &str, ids: &mut SequentialIds) -> RequestHeader {
    RequestHeader::new(action, ENDPOINT, resource, ids.next_id())
}

fn create_cmd(ids: &mut SequentialIds) -> Request {
    Request::new(
        header(Action::Create, resources::CMD_SHELL, ids),
        RequestBody::Create(CreateShell::cmd()),
    )
}

fn fault_code(response: &Response) -> Option<u32> {
    response.fault().and_then(|f| f.code).map(|c| c.as_u32())
}

fn created_id(response: &Response) -> Uuid {
    match &response.body {
        ResponseBody::CreateResponse(c) => c.shell_id().unwrap(),
        other => panic!("expected CreateResponse, got {other:?}"),
    }
}

// ===== WinRS =====

#[test]
fn winrs_command_run_gets_output_and_exit_codes_and_leaks_no_shell() {
    let service = service(host());
    let mut wire = Wire::default();
    let (outcome, stdout, stderr) = run_cmd(&service, &mut wire, "echo hello");
    assert_eq!(outcome, Ok(0));
    assert_eq!(stdout, b"hello\r\n");
    assert!(stderr.is_empty());
    let (outcome, _, _) = run_cmd(&service, &mut wire, "exit /b 3");
    assert_eq!(outcome, Ok(3));
    let (outcome, stdout, stderr) = run_cmd(&service, &mut wire, "nosuchtool");
    assert_eq!(outcome, Ok(1));
    assert!(stdout.is_empty());
    assert!(
        String::from_utf8(stderr)
            .unwrap()
            .starts_with("'nosuchtool' is not recognized")
    );
    let counters = service.counters();
    let mine = counters.users[ADMIN];
    assert_eq!(
        (mine.shells_created, mine.shells_deleted, mine.shells_open),
        (3, 3, 0)
    );
    assert_eq!(mine.cmd_executions, 3);
    assert_eq!(mine.max_concurrent_shells, 1);
    let actions: Vec<&Action> = wire.log.iter().take(5).map(|e| &e.0).collect();
    assert_eq!(
        actions,
        [
            &Action::Create,
            &Action::Command,
            &Action::Receive,
            &Action::Signal,
            &Action::Delete
        ]
    );
    assert!(wire.log.iter().all(|e| e.1 == 200));
}

#[test]
fn winrs_output_waits_for_the_command_and_is_chunked_to_the_envelope() {
    // A command whose output exceeds the client's envelope comes back over several
    // Receives, each within MaxEnvelopeSize, the last with Done.
    let service = service(host());
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0x3000);
    let shell = created_id(&wire.call(&service, ADMIN, &create_cmd(&mut ids)));
    let long = "x".repeat(20_000);
    let command = Request::new(
        header(Action::Command, resources::CMD_SHELL, &mut ids).with_shell_id(&shell),
        RequestBody::Command(CommandLine::cmd(format!("echo {long}&echo {long}"), vec![])),
    );
    let ResponseBody::CommandResponse(started) = wire.call(&service, ADMIN, &command).body else {
        panic!("no CommandResponse");
    };
    let mut stdout = Vec::new();
    let mut exit = None;
    let mut receives = 0;
    while exit.is_none() {
        receives += 1;
        let receive = Request::new(
            header(Action::Receive, resources::CMD_SHELL, &mut ids)
                .with_shell_id(&shell)
                .with_max_envelope_size(8192),
            RequestBody::Receive(Receive {
                command_id: Some(started.command_id),
                streams: vec!["stdout".into(), "stderr".into()],
            }),
        );
        let ResponseBody::ReceiveResponse(r) = wire.call(&service, ADMIN, &receive).body else {
            panic!("no ReceiveResponse");
        };
        for s in r.streams {
            stdout.extend(s.data);
        }
        let state = r.command_state.unwrap();
        if state.state == CommandState::Done {
            exit = state.exit_code;
        }
    }
    assert_eq!(exit, Some(0));
    assert_eq!(stdout.len(), 2 * (long.len() + 2));
    assert!(receives >= 6, "{receives} receives");
    let max = wire
        .log
        .iter()
        .filter(|e| e.0 == Action::Receive)
        .map(|e| e.2)
        .max()
        .unwrap();
    assert!(max <= 8192, "largest Receive response {max} bytes");
}

#[test]
fn winrs_output_comes_when_the_command_ends() {
    // powershell.exe takes as long as its script's virtual time: the Receive is held
    // until then, within its OperationTimeout.
    let service = service(host());
    let mut wire = Wire::default();
    let (outcome, stdout, _) = run_cmd(
        &service,
        &mut wire,
        "powershell.exe -Command \"Start-Sleep -Seconds 3; Write-Output done\"",
    );
    assert_eq!(outcome, Ok(0));
    assert_eq!(stdout, b"done\r\n");
    let receive_answered_at = wire
        .log
        .iter()
        .find(|e| e.0 == Action::Receive)
        .map(|e| e.4)
        .unwrap();
    assert_eq!(
        receive_answered_at,
        Duration::from_secs(3) + crate::powershell::CMD_START
    );
}

#[test]
fn winrs_receive_without_command_and_unknown_command_fault_like_windows() {
    let service = service(host());
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0x4000);
    let shell = created_id(&wire.call(&service, ADMIN, &create_cmd(&mut ids)));
    let receive = |ids: &mut SequentialIds, command_id| {
        Request::new(
            header(Action::Receive, resources::CMD_SHELL, ids).with_shell_id(&shell),
            RequestBody::Receive(Receive {
                command_id,
                streams: vec!["stdout".into()],
            }),
        )
    };
    let r = wire.call(&service, ADMIN, &receive(&mut ids, None));
    assert_eq!(fault_code(&r), Some(87));
    let r = wire.call(
        &service,
        ADMIN,
        &receive(&mut ids, Some(Uuid::from_u128(9))),
    );
    assert_eq!(fault_code(&r), Some(2_150_858_843));
    assert!(r.fault().unwrap().message.contains("command identifier"));
}

// ===== PSRP =====

#[test]
fn psrp_script_run_returns_every_stream_and_the_version_table() {
    let service = service(host());
    let mut wire = Wire::default();
    let script = "Write-Output 'first'\nWrite-Warning 'careful'\nWrite-Verbose 'v' -Verbose\nWrite-Error 'bad'\nWrite-Information 'note'\n$args[0]\n$env:COMPUTERNAME";
    let (outcome, events) = run_psrp(
        &service,
        &mut wire,
        ADMIN,
        PsrpSettings::new(ENDPOINT),
        ScriptSpec::new(script).with_argument("arg0"),
    );
    let outcome = outcome.unwrap();
    assert_eq!(outcome.state, PsInvocationState::Completed);
    assert_eq!(outputs(&events), ["first", "arg0", "SRV0001"]);
    let table = events
        .iter()
        .find_map(|e| match e {
            PsrpEvent::PsVersionTable(t) => Some(t.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(table.ps_version.unwrap().as_str(), "5.1.17763.1");
    assert_eq!(table.build_version.unwrap().as_str(), "10.0.17763.1");
    let warning = events.iter().find_map(|e| match e {
        PsrpEvent::Warning(w) => Some(w.message.clone()),
        _ => None,
    });
    assert_eq!(warning.as_deref(), Some("careful"));
    let error = events.iter().find_map(|e| match e {
        PsrpEvent::Error(e) => Some(e.message.clone()),
        _ => None,
    });
    assert_eq!(error.as_deref(), Some("bad"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PsrpEvent::Verbose(v) if v.message == "v"))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PsrpEvent::Information(i) if i.message_text() == "note"))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PsrpEvent::ShellDeleted { .. }))
    );
    let counters = service.counters();
    assert_eq!(counters.totals.script_executions, 1);
    assert_eq!(counters.totals.shells_open, 0);
    assert_eq!(counters.totals.shells_deleted, 1);
}

#[test]
fn psrp_terminating_error_fails_the_pipeline_and_broken_modules_break_the_pool() {
    let service1 = service(host());
    let mut wire = Wire::default();
    let (outcome, _) = run_psrp(
        &service1,
        &mut wire,
        ADMIN,
        PsrpSettings::new(ENDPOINT),
        ScriptSpec::new("Write-Output 1\nthrow 'it broke'"),
    );
    let outcome = outcome.unwrap();
    assert_eq!(outcome.state, PsInvocationState::Failed);
    assert_eq!(outcome.error.unwrap().message, "it broke");

    let mut spec = host();
    spec.powershell.modules_fail = true;
    let broken = service(spec);
    let (outcome, _) = run_psrp(
        &broken,
        &mut Wire::default(),
        ADMIN,
        PsrpSettings::new(ENDPOINT),
        ScriptSpec::new("Write-Output 1"),
    );
    match outcome {
        Err(PsrpClientError::PoolFailed { state, error }) => {
            assert_eq!(state, RunspacePoolState::Broken);
            assert_eq!(
                error.unwrap().fully_qualified_error_id,
                "ErrorLoadingModulesOnRunspaceOpen"
            );
        }
        other => panic!("expected a broken pool, got {other:?}"),
    }
    // The client deleted the broken pool's shell.
    assert_eq!(broken.counters().totals.shells_open, 0);
    assert_eq!(broken.counters().totals.script_executions, 0);
}

#[test]
fn psrp_small_envelope_splits_the_pipeline_both_ways_and_responses_fit() {
    // R:test_psrp_small_msg_size: MaxEnvelopeSize 32768. The CREATE_PIPELINE is larger than
    // one envelope (Command plus Sends) and so is the output (several Receives).
    let service = service(host());
    let mut wire = Wire::default();
    let big = "y".repeat(60_000);
    let mut settings = PsrpSettings::new(ENDPOINT);
    settings.max_envelope_size = 32_768;
    let script = format!("Write-Output '{big}'\nWrite-Output 'tail'\nWrite-Output 'end'");
    let (outcome, events) = run_psrp(
        &service,
        &mut wire,
        ADMIN,
        settings,
        ScriptSpec::new(script),
    );
    assert_eq!(outcome.unwrap().state, PsInvocationState::Completed);
    assert_eq!(outputs(&events), [big.as_str(), "tail", "end"]);
    let sends = wire.log.iter().filter(|e| e.0 == Action::Send).count();
    assert!(sends >= 2, "{sends} Sends");
    let receives: Vec<usize> = wire
        .log
        .iter()
        .filter(|e| e.0 == Action::Receive)
        .map(|e| e.2)
        .collect();
    assert!(receives.len() >= 4, "{receives:?}");
    assert!(receives.iter().all(|size| *size <= 32_768), "{receives:?}");
}

#[test]
fn psrp_receive_times_out_while_the_script_sleeps_then_output_arrives() {
    // R:test_psrp_long_running_cmdlet: TimedOut (2150858793) faults until output is due.
    let service = service(host());
    let mut wire = Wire::default();
    let mut settings = PsrpSettings::new(ENDPOINT);
    settings.operation_timeout = Duration::from_secs(20);
    let (outcome, events) = run_psrp(
        &service,
        &mut wire,
        ADMIN,
        settings,
        ScriptSpec::new("Start-Sleep -Seconds 50\nWrite-Output 'late'"),
    );
    assert_eq!(outcome.unwrap().state, PsInvocationState::Completed);
    assert_eq!(outputs(&events), ["late"]);
    assert_eq!(wire.faults(2_150_858_793), 2);
    let timeouts: Vec<Duration> = wire
        .log
        .iter()
        .filter(|e| e.3 == Some(2_150_858_793))
        .map(|e| e.4)
        .collect();
    assert_eq!(
        timeouts,
        [Duration::from_secs(20), Duration::from_secs(40)],
        "each TimedOut comes exactly OperationTimeout after its Receive arrived"
    );
    let output_at = wire
        .log
        .iter()
        .rfind(|e| e.0 == Action::Receive)
        .map(|e| e.4)
        .unwrap();
    assert_eq!(output_at, Duration::from_secs(50));
}

/// Opens a pool by hand and returns (shell id, request ids, wire).
fn open_pool(service: &HostService, wire: &mut Wire, ids: &mut SequentialIds) -> Uuid {
    let (run, create) = ScriptRun::start(PsrpSettings::new(ENDPOINT), ScriptSpec::new(""), ids);
    drop(run);
    let shell = created_id(&wire.call(service, ADMIN, &create));
    let receive = Request::new(
        header(
            Action::Receive,
            &resources::powershell("Microsoft.PowerShell"),
            ids,
        )
        .with_shell_id(&shell),
        RequestBody::Receive(Receive {
            command_id: None,
            streams: vec!["stdout".into()],
        }),
    );
    let mut defrag = Defragmenter::new();
    let mut types = Vec::new();
    for _ in 0..2 {
        let ResponseBody::ReceiveResponse(r) = wire.call(service, ADMIN, &receive).body else {
            panic!("pool did not answer");
        };
        for s in r.streams {
            for (raw, m) in receive_blob(&mut defrag, &s.data).unwrap() {
                // Server message data starts with a UTF-8 BOM (wire-facts 4.2).
                assert!(raw.data.starts_with(b"\xEF\xBB\xBF"), "{m:?}");
                types.push(m.message_type());
            }
        }
    }
    use psfleet_core::psrp::MessageType as T;
    assert_eq!(
        types,
        [
            T::SessionCapability,
            T::ApplicationPrivateData,
            T::RunspacePoolState
        ]
    );
    shell
}

#[test]
fn psrp_ctrl_c_stops_a_sleeping_pipeline() {
    let service = service(host());
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0x5000);
    let shell = open_pool(&service, &mut wire, &mut ids);
    let uri = resources::powershell("Microsoft.PowerShell");
    let pid = ids.next_id();
    let pipeline = psfleet_core::psrp::messages::CreatePipeline::script(
        "Write-Output 'before'\nStart-Sleep -Seconds 600\nWrite-Output 'after'",
        psfleet_core::psrp::messages::ProtocolVersion::V2_3,
    );
    let fragments = psfleet_core::psrp::fragment::encode_fragments(
        &psfleet_core::psrp::Fragmenter::starting_at(10)
            .fragment_message(&pipeline.encode(shell, pid), 100_000),
    );
    let command = Request::new(
        header(Action::Command, &uri, &mut ids).with_shell_id(&shell),
        RequestBody::Command(CommandLine::powershell(pid, &fragments)),
    );
    assert!(matches!(
        wire.call(&service, ADMIN, &command).body,
        ResponseBody::CommandResponse(_)
    ));
    let receive = |ids: &mut SequentialIds| {
        Request::new(
            header(Action::Receive, &uri, ids)
                .with_shell_id(&shell)
                .with_operation_timeout(Duration::from_secs(5)),
            RequestBody::Receive(Receive {
                command_id: Some(pid),
                streams: vec!["stdout".into()],
            }),
        )
    };
    let mut defrag = Defragmenter::new();
    let mut messages = Vec::new();
    let mut take = |r: Response, messages: &mut Vec<PsrpMessage>| {
        if let ResponseBody::ReceiveResponse(r) = r.body {
            for s in r.streams {
                messages.extend(
                    receive_blob(&mut defrag, &s.data)
                        .unwrap()
                        .into_iter()
                        .map(|(_, m)| m),
                );
            }
            r.command_state.map(|s| s.state)
        } else {
            None
        }
    };
    take(
        wire.call(&service, ADMIN, &receive(&mut ids)),
        &mut messages,
    );
    let r = wire.call(&service, ADMIN, &receive(&mut ids));
    assert_eq!(fault_code(&r), Some(2_150_858_793));
    let signal = Request::new(
        header(Action::Signal, &uri, &mut ids).with_shell_id(&shell),
        RequestBody::Signal(Signal {
            command_id: Some(pid),
            code: SignalCode::PsCtrlC,
        }),
    );
    assert_eq!(
        wire.call(&service, ADMIN, &signal).body,
        ResponseBody::SignalResponse
    );
    let state = take(
        wire.call(&service, ADMIN, &receive(&mut ids)),
        &mut messages,
    );
    assert_eq!(state, Some(CommandState::Done));
    let outputs: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            PsrpMessage::PipelineOutput(o) => Some(o.value.display_text().into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(outputs, ["before"]);
    let Some(PsrpMessage::PipelineState(last)) = messages.last() else {
        panic!("no PIPELINE_STATE: {messages:?}");
    };
    assert_eq!(last.state, PsInvocationState::Stopped);
    assert!(wire.now < Duration::from_secs(600));
    // The pipeline is finished and read: it is gone, Terminate then fails.
    let r = wire.call(&service, ADMIN, &receive(&mut ids));
    assert_eq!(fault_code(&r), Some(2_150_858_843));
}

#[test]
fn jea_endpoint_refuses_scripts_and_unknown_configurations_fault() {
    let service = service(host());
    let mut wire = Wire::default();
    let mut settings = PsrpSettings::new(ENDPOINT);
    settings.configuration_name = "JEARole".to_owned();
    let (outcome, _) = run_psrp(
        &service,
        &mut wire,
        ADMIN,
        settings,
        ScriptSpec::new("Write-Output 1"),
    );
    let outcome = outcome.unwrap();
    assert_eq!(outcome.state, PsInvocationState::Failed);
    assert_eq!(
        outcome.error.unwrap().fully_qualified_error_id,
        "ScriptsNotAllowed"
    );

    let mut settings = PsrpSettings::new(ENDPOINT);
    settings.configuration_name = "Microsoft.Exchange".to_owned();
    let (outcome, _) = run_psrp(&service, &mut wire, ADMIN, settings, ScriptSpec::new("1"));
    match outcome {
        Err(PsrpClientError::Fault { fault, .. }) => {
            assert_eq!(fault.code, Some(FaultCode::InvalidResourceUri));
            assert!(fault.message.contains(
                "The resource URI (http://schemas.microsoft.com/powershell/Microsoft.Exchange) was not found"
            ));
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    assert_eq!(service.counters().totals.shells_created, 1);
}

// ===== access and quotas =====

#[test]
fn non_admins_and_disabled_remoting_get_access_denied() {
    let service1 = service(host());
    let mut wire = Wire::default();
    let (outcome, _) = run_psrp(
        &service1,
        &mut wire,
        NON_ADMIN,
        PsrpSettings::new(ENDPOINT),
        ScriptSpec::new("1"),
    );
    let Err(PsrpClientError::Fault { fault, .. }) = outcome else {
        panic!("expected access denied");
    };
    assert_eq!(fault.code, Some(FaultCode::AccessDenied));
    assert_eq!(fault.message, "Access is denied. ");

    let mut spec = host();
    spec.remoting_enabled = false;
    let disabled = service(spec);
    let (outcome, _) = run_psrp(
        &disabled,
        &mut wire,
        ADMIN,
        PsrpSettings::new(ENDPOINT),
        ScriptSpec::new("1"),
    );
    assert!(
        matches!(outcome, Err(PsrpClientError::Fault { fault, .. }) if fault.code == Some(FaultCode::AccessDenied))
    );
    // Disable-PSRemoting changes the session configurations, not the WinRS plugin.
    let (outcome, _, _) = run_cmd(&disabled, &mut wire, "hostname");
    assert_eq!(outcome, Ok(0));
    // Reading the config needs an administrator too.
    let mut ids = SequentialIds::starting_after(0x6000);
    let get = Request::new(
        header(Action::Get, resources::CONFIG, &mut ids),
        RequestBody::Get,
    );
    let r = wire.call(&service1, NON_ADMIN, &get);
    assert_eq!(fault_code(&r), Some(5));
}

#[test]
fn max_shells_per_user_is_enforced_with_the_number_in_the_text() {
    let mut spec = host();
    spec.winrm.winrs.as_mut().unwrap().max_shells_per_user = Some(2);
    let service = service(spec);
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0x7000);
    let a = created_id(&wire.call(&service, ADMIN, &create_cmd(&mut ids)));
    let _b = created_id(&wire.call(&service, ADMIN, &create_cmd(&mut ids)));
    let r = wire.call(&service, ADMIN, &create_cmd(&mut ids));
    let f = r.fault().unwrap();
    assert_eq!(f.code, Some(FaultCode::QuotaMaxShells));
    assert_eq!(f.max_shells_quota(), Some(2));
    // Another user has a quota of their own.
    created_id(&wire.call(&service, OTHER_ADMIN, &create_cmd(&mut ids)));
    // Deleting one makes room again.
    let delete = Request::new(
        header(Action::Delete, resources::CMD_SHELL, &mut ids).with_shell_id(&a),
        RequestBody::Delete,
    );
    assert_eq!(
        wire.call(&service, ADMIN, &delete).body,
        ResponseBody::DeleteResponse
    );
    created_id(&wire.call(&service, ADMIN, &create_cmd(&mut ids)));
    let c = service.counters();
    assert_eq!(c.users[ADMIN].max_concurrent_shells, 2);
    assert_eq!(c.users[ADMIN].quota_faults, 1);
    assert_eq!(c.users[ADMIN].shells_open, 2);
    assert_eq!(c.totals.max_concurrent_shells, 3);
}

#[test]
fn max_concurrent_users_and_operations_are_enforced() {
    let mut spec = host();
    spec.winrm.winrs.as_mut().unwrap().max_concurrent_users = Some(1);
    spec.winrm
        .service
        .as_mut()
        .unwrap()
        .max_concurrent_operations_per_user = Some(1);
    let service = service(spec);
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0x8000);
    let shell = created_id(&wire.call(&service, ADMIN, &create_cmd(&mut ids)));
    let r = wire.call(&service, OTHER_ADMIN, &create_cmd(&mut ids));
    assert_eq!(fault_code(&r), Some(2_150_859_179));

    // A Receive held open counts as an operation in flight until it is answered.
    let command = Request::new(
        header(Action::Command, resources::CMD_SHELL, &mut ids).with_shell_id(&shell),
        RequestBody::Command(CommandLine::cmd(
            "powershell.exe -Command \"Start-Sleep -Seconds 1\"",
            vec![],
        )),
    );
    let ResponseBody::CommandResponse(started) = wire.call(&service, ADMIN, &command).body else {
        panic!()
    };
    // A Receive held open until the command ends a second later.
    let receive = Request::new(
        header(Action::Receive, resources::CMD_SHELL, &mut ids).with_shell_id(&shell),
        RequestBody::Receive(Receive {
            command_id: Some(started.command_id),
            streams: vec!["stdout".into()],
        }),
    );
    let held = receive.to_xml();
    let first = service.handle(&ServiceRequest {
        user: ADMIN,
        body: &held,
        received_at: Duration::ZERO,
        now: Duration::ZERO,
    });
    assert_eq!(
        first,
        ServiceReply::WaitUntil(Duration::from_secs(1) + crate::powershell::CMD_START)
    );
    let get = Request::new(
        header(Action::Get, resources::CONFIG, &mut ids),
        RequestBody::Get,
    );
    let r = wire.call(&service, ADMIN, &get);
    let f = r.fault().unwrap();
    assert_eq!(f.code, Some(FaultCode::QuotaMaxOperations));
    assert!(
        f.message
            .contains("maximum number of 1 concurrent operations")
    );
    // The held Receive itself is not refused when it calls back, and once it is
    // answered the next operation goes through.
    let again = service.handle(&ServiceRequest {
        user: ADMIN,
        body: &held,
        received_at: Duration::ZERO,
        now: Duration::from_secs(1) + crate::powershell::CMD_START,
    });
    assert!(matches!(again, ServiceReply::Respond { status: 200, .. }));
    assert!(matches!(
        wire.call(&service, ADMIN, &get).body,
        ResponseBody::GetResponse(_)
    ));
    assert_eq!(service.counters().totals.quota_faults, 2);
}

#[test]
fn idle_shells_expire_and_then_answer_shell_not_found() {
    let mut spec = host();
    spec.winrm.winrs.as_mut().unwrap().idle_timeout_ms = Some(60_000);
    let service = service(spec);
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0x9000);
    let response = wire.call(&service, ADMIN, &create_cmd(&mut ids));
    let ResponseBody::CreateResponse(created) = &response.body else {
        panic!()
    };
    assert_eq!(
        created.shell.as_ref().unwrap().idle_timeout,
        Some(Duration::from_secs(60))
    );
    let shell = created_id(&response);
    wire.now = Duration::from_secs(59);
    let command = |ids: &mut SequentialIds| {
        Request::new(
            header(Action::Command, resources::CMD_SHELL, ids).with_shell_id(&shell),
            RequestBody::Command(CommandLine::cmd("echo x", vec![])),
        )
    };
    assert!(matches!(
        wire.call(&service, ADMIN, &command(&mut ids)).body,
        ResponseBody::CommandResponse(_)
    ));
    wire.now = Duration::from_secs(59 + 61);
    let r = wire.call(&service, ADMIN, &command(&mut ids));
    assert_eq!(fault_code(&r), Some(2_150_858_843));
    assert!(
        r.fault()
            .unwrap()
            .message
            .contains("the shell was not found")
    );
    let c = service.counters();
    assert_eq!((c.totals.shells_open, c.totals.shells_expired), (0, 1));
}

#[test]
fn delete_needs_the_shells_own_resource_uri() {
    let service = service(host());
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0xA000);
    let shell = open_pool(&service, &mut wire, &mut ids);
    let delete = |uri: &str, ids: &mut SequentialIds| {
        Request::new(
            header(Action::Delete, uri, ids).with_shell_id(&shell),
            RequestBody::Delete,
        )
    };
    let r = wire.call(&service, ADMIN, &delete(resources::CMD_SHELL, &mut ids));
    assert_eq!(fault_code(&r), Some(2_150_858_843));
    assert_eq!(service.counters().totals.shells_open, 1);
    // Another user cannot see it either.
    let uri = resources::powershell("Microsoft.PowerShell");
    let r = wire.call(&service, OTHER_ADMIN, &delete(&uri, &mut ids));
    assert_eq!(fault_code(&r), Some(2_150_858_843));
    let r = wire.call(&service, ADMIN, &delete(&uri, &mut ids));
    assert_eq!(r.body, ResponseBody::DeleteResponse);
    assert_eq!(service.counters().totals.shells_open, 0);
}

// ===== config, enumeration, ids =====

#[test]
fn config_get_returns_the_hosts_real_quotas() {
    let mut spec = host();
    spec.winrm.max_envelope_size_kb = Some(150);
    spec.winrm.winrs.as_mut().unwrap().max_shells_per_user = Some(7);
    let expected = spec.winrm.clone();
    let service = service(spec);
    let mut ids = SequentialIds::starting_after(0xB000);
    let get = Request::new(
        header(Action::Get, resources::CONFIG, &mut ids),
        RequestBody::Get,
    );
    let r = Wire::default().call(&service, ADMIN, &get);
    assert_eq!(
        r.body,
        ResponseBody::GetResponse(GetResponse::Config(expected))
    );
    assert_eq!(r.header.relates_to, Some(get.header.message_id));
}

#[test]
fn enumerate_lists_the_users_shells_and_pull_pages_through_them() {
    let service = service(host());
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0xC000);
    let a = created_id(&wire.call(&service, ADMIN, &create_cmd(&mut ids)));
    let b = open_pool(&service, &mut wire, &mut ids);
    created_id(&wire.call(&service, OTHER_ADMIN, &create_cmd(&mut ids)));
    let enumerate = |optimize: bool, ids: &mut SequentialIds| {
        Request::new(
            header(Action::Enumerate, resources::SHELLS, ids),
            RequestBody::Enumerate(Enumerate {
                optimize,
                max_elements: Some(32_000),
                filter: None,
            }),
        )
    };
    let shell_ids = |batch: &psfleet_core::wsman::EnumerationBatch| -> Vec<Uuid> {
        batch
            .items
            .iter()
            .filter_map(|i| match i {
                EnumerationItem::Shell(s) => s.shell_id,
                _ => None,
            })
            .collect()
    };
    let ResponseBody::EnumerateResponse(batch) =
        wire.call(&service, ADMIN, &enumerate(true, &mut ids)).body
    else {
        panic!()
    };
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(shell_ids(&batch), expected);
    assert!(batch.end_of_sequence);
    // Without OptimizeEnumeration: a context, then Pull one at a time.
    let ResponseBody::EnumerateResponse(batch) =
        wire.call(&service, ADMIN, &enumerate(false, &mut ids)).body
    else {
        panic!()
    };
    let mut context = batch.context.unwrap();
    let mut pulled = Vec::new();
    for _ in 0..5 {
        let pull = Request::new(
            header(Action::Pull, resources::SHELLS, &mut ids),
            RequestBody::Pull(Pull {
                context: context.clone(),
                max_elements: None,
            }),
        );
        let ResponseBody::PullResponse(batch) = wire.call(&service, ADMIN, &pull).body else {
            panic!()
        };
        pulled.extend(shell_ids(&batch));
        match batch.context {
            Some(next) if !batch.end_of_sequence => context = next,
            _ => break,
        }
    }
    assert_eq!(pulled, expected);
    // A ShellId filter lists that shell's commands.
    let filtered = Request::new(
        header(Action::Enumerate, resources::SHELLS, &mut ids),
        RequestBody::Enumerate(Enumerate {
            optimize: true,
            max_elements: Some(32_000),
            filter: Some(SelectorFilter::shell(&a)),
        }),
    );
    let ResponseBody::EnumerateResponse(batch) = wire.call(&service, ADMIN, &filtered).body else {
        panic!()
    };
    assert!(batch.items.is_empty() && batch.end_of_sequence);
}

#[test]
fn shell_ids_are_deterministic_per_host_and_differ_between_hosts() {
    let ids_of = |spec: HostSpec| {
        let service = service(spec);
        let mut wire = Wire::default();
        let mut ids = SequentialIds::starting_after(0xD000);
        (0..3)
            .map(|_| created_id(&wire.call(&service, ADMIN, &create_cmd(&mut ids))))
            .collect::<Vec<_>>()
    };
    let first = ids_of(host());
    assert_eq!(first, ids_of(host()));
    let mut other = host();
    other.name = "srv0002.fleet.test".to_owned();
    let second = ids_of(other);
    assert!(first.iter().all(|id| !second.contains(id)));
    assert_eq!(first[0].get_version_num(), 4);
}

#[test]
fn unparsable_bodies_and_bad_timeouts_get_faults() {
    let service = service(host());
    let reply = service.handle(&ServiceRequest {
        user: ADMIN,
        body: b"<not-soap/>",
        received_at: Duration::ZERO,
        now: Duration::ZERO,
    });
    let ServiceReply::Respond { status, body } = reply else {
        panic!()
    };
    assert_eq!(status, 500);
    assert_eq!(fault_code(&Response::parse(&body).unwrap()), Some(87));
    let mut ids = SequentialIds::starting_after(0xE000);
    let mut request = create_cmd(&mut ids);
    request.header.operation_timeout = Some(psfleet_core::wsman::OperationTimeout::Invalid(
        "PT-1S".into(),
    ));
    let r = Wire::default().call(&service, ADMIN, &request);
    assert_eq!(fault_code(&r), Some(2_150_858_767));
    assert_eq!(service.counters().totals.shells_created, 0);
    let _ = Value::Nil;
}

#[test]
fn identify_lists_security_profiles_only_when_authenticated() {
    let mut spec = host();
    spec.auth.basic = true;
    let service = service(spec);
    let anonymous = psfleet_core::wsman::IdentifyResponse::parse(&service.identify()).unwrap();
    assert_eq!(anonymous.security_profiles, None);
    assert_eq!(
        anonymous.product_version.as_deref(),
        Some("OS: 10.0.17763 SP: 0.0 Stack: 3.0")
    );
    let reply = service.handle(&ServiceRequest {
        user: ADMIN,
        body: &psfleet_core::wsman::IdentifyRequest.to_xml(),
        received_at: Duration::ZERO,
        now: Duration::ZERO,
    });
    let ServiceReply::Respond { status: 200, body } = reply else {
        panic!("{reply:?}")
    };
    let authenticated = psfleet_core::wsman::IdentifyResponse::parse(&body).unwrap();
    assert_eq!(
        authenticated.security_profiles,
        Some(vec![
            resources::SECURITY_PROFILE_HTTP_BASIC.to_owned(),
            resources::SECURITY_PROFILE_HTTP_SPNEGO_KERBEROS.to_owned()
        ])
    );
}

#[test]
fn winrs_stdin_is_sent_before_the_command_runs() {
    let service = service(host());
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0xF000);
    let (mut run, first) = CommandRun::start(
        ShellSettings::new(ENDPOINT),
        CommandSpec {
            command: "echo".to_owned(),
            arguments: vec!["with".to_owned(), "input".to_owned()],
            // Two pieces, the second over MAX_STDIN_CHUNK: three Sends.
            stdin: vec![b"first line\r\n".to_vec(), vec![b'z'; 70_000]],
        },
        &mut ids,
    );
    let mut request = *first;
    let mut stdout = Vec::new();
    let outcome = loop {
        let response = wire.call(&service, ADMIN, &request);
        let step = run.handle(response, &mut ids);
        while let Some(event) = run.poll_event() {
            if let WinrsEvent::Stdout(b) = event {
                stdout.extend(b);
            }
        }
        match step {
            Step::Send(next) => request = *next,
            Step::Finished(outcome) => break outcome,
        }
    };
    assert_eq!(outcome, Ok(0));
    assert_eq!(stdout, b"with input\r\n");
    let sends = wire.log.iter().filter(|e| e.0 == Action::Send).count();
    assert_eq!(sends, 3);
    assert_eq!(service.counters().totals.cmd_executions, 1);
}

#[test]
fn psrp_pipeline_with_input_runs_when_its_input_ends() {
    use psfleet_core::psrp::messages::{CreatePipeline, PipelineInput, ProtocolVersion};
    let service = service(host());
    let mut wire = Wire::default();
    let mut ids = SequentialIds::starting_after(0xF100);
    let shell = open_pool(&service, &mut wire, &mut ids);
    let uri = resources::powershell("Microsoft.PowerShell");
    let pid = ids.next_id();
    let mut fragmenter = psfleet_core::psrp::Fragmenter::starting_at(3);
    let mut create = CreatePipeline::script("Write-Output 'ran'", ProtocolVersion::V2_3);
    create.no_input = false;
    let frags = |m: &psfleet_core::psrp::Message, f: &mut psfleet_core::psrp::Fragmenter| {
        psfleet_core::psrp::fragment::encode_fragments(&f.fragment_message(m, 100_000))
    };
    let command = Request::new(
        header(Action::Command, &uri, &mut ids).with_shell_id(&shell),
        RequestBody::Command(CommandLine::powershell(
            pid,
            &frags(&create.encode(shell, pid), &mut fragmenter),
        )),
    );
    wire.call(&service, ADMIN, &command);
    let send = |data: Vec<u8>, ids: &mut SequentialIds| {
        Request::new(
            header(Action::Send, &uri, ids).with_shell_id(&shell),
            RequestBody::Send(psfleet_core::wsman::Send {
                streams: vec![psfleet_core::wsman::SendStream {
                    name: "stdin".into(),
                    command_id: Some(pid),
                    end: None,
                    data,
                }],
            }),
        )
    };
    let receive = |ids: &mut SequentialIds| {
        Request::new(
            header(Action::Receive, &uri, ids)
                .with_shell_id(&shell)
                .with_operation_timeout(Duration::from_secs(2)),
            RequestBody::Receive(Receive {
                command_id: Some(pid),
                streams: vec!["stdout".into()],
            }),
        )
    };
    let input = PipelineInput {
        value: Value::String("in".into()),
    };
    let r = wire.call(
        &service,
        ADMIN,
        &send(frags(&input.encode(shell, pid), &mut fragmenter), &mut ids),
    );
    assert_eq!(r.body, ResponseBody::SendResponse);
    // Input still open: nothing runs, the Receive times out.
    let r = wire.call(&service, ADMIN, &receive(&mut ids));
    assert_eq!(fault_code(&r), Some(2_150_858_793));
    assert_eq!(service.counters().totals.script_executions, 0);
    let end = psfleet_core::psrp::messages::end_of_pipeline_input(shell, pid);
    wire.call(
        &service,
        ADMIN,
        &send(frags(&end, &mut fragmenter), &mut ids),
    );
    let ResponseBody::ReceiveResponse(r) = wire.call(&service, ADMIN, &receive(&mut ids)).body
    else {
        panic!("no output")
    };
    let mut defrag = Defragmenter::new();
    let outputs: Vec<String> = r
        .streams
        .iter()
        .flat_map(|s| receive_blob(&mut defrag, &s.data).unwrap())
        .filter_map(|(_, m)| match m {
            PsrpMessage::PipelineOutput(o) => Some(o.value.display_text().into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(outputs, ["ran"]);
    assert_eq!(r.command_state.unwrap().state, CommandState::Done);
    assert_eq!(service.counters().totals.script_executions, 1);
}

#[test]
fn concurrent_clients_never_exceed_the_shell_quota() {
    let mut spec = host();
    spec.winrm.winrs.as_mut().unwrap().max_shells_per_user = Some(3);
    let service = Arc::new(service(spec));
    let threads: Vec<_> = (0..8u128)
        .map(|t| {
            let service = Arc::clone(&service);
            std::thread::spawn(move || {
                let (mut ok, mut refused) = (0u64, 0u64);
                for i in 0..10u128 {
                    let mut wire = Wire::default();
                    let mut ids = SequentialIds::starting_after((t << 64) | (i << 32));
                    let (mut run, first) = ScriptRun::start(
                        PsrpSettings::new(ENDPOINT),
                        ScriptSpec::new("Write-Output 'x'\nStart-Sleep -Milliseconds 50"),
                        &mut ids,
                    );
                    let mut request = *first;
                    let outcome = loop {
                        let response = wire.call(&service, ADMIN, &request);
                        match run.handle(response, &mut ids) {
                            PsrpStep::Send(next) => request = *next,
                            PsrpStep::Finished(outcome) => break outcome,
                        }
                    };
                    match outcome {
                        Ok(o) if o.state == PsInvocationState::Completed => ok += 1,
                        Err(PsrpClientError::Fault { fault, .. })
                            if fault.code == Some(FaultCode::QuotaMaxShells) =>
                        {
                            refused += 1
                        }
                        other => panic!("unexpected outcome {other:?}"),
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let (ok, refused) = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(ok + refused, 80);
    let c = service.counters();
    assert!(c.totals.max_concurrent_shells <= 3, "{c:?}");
    assert_eq!(c.totals.shells_open, 0);
    assert_eq!(c.totals.shells_created, ok);
    assert_eq!(c.totals.quota_faults, refused);
    assert_eq!(c.totals.script_executions, ok);
    println!("concurrent clients: {ok} runs completed, {refused} refused by MaxShellsPerUser=3");
}
