//! Namespace, action, resource, signal and command-state URIs, and the enums over them.

/// XML namespace URIs (wire-facts section 0 conventions; MS-WSMV 2.2.1).
pub mod ns {
    /// SOAP 1.2 envelope (`s`).
    pub const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
    /// WS-Addressing 2004/08 (`wsa` in requests, `a` in Windows responses).
    pub const ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
    /// DMTF WS-Management (`wsman` in requests, `w` in responses).
    pub const WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
    /// Microsoft WS-Management extensions (`wsmv` in requests, `p` in responses).
    pub const WSMV: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
    /// WS-Transfer (`x`).
    pub const TRANSFER: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
    /// WS-Enumeration (`wsen` in requests, `n` in responses).
    pub const ENUMERATION: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration";
    /// WS-Eventing (`e`), declared on Windows fault envelopes.
    pub const EVENTING: &str = "http://schemas.xmlsoap.org/ws/2004/08/eventing";
    /// Windows Remote Shell (`rsp`).
    pub const SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
    /// Windows WS-Management fault detail (`f`).
    pub const WSMAN_FAULT: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";
    /// WinRM configuration (`cfg`).
    pub const CONFIG: &str = "http://schemas.microsoft.com/wbem/wsman/1/config";
    /// WS-Management identity (`wsmid`), MS-WSMV 3.1.4.1.23.
    pub const IDENTITY: &str = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd";
    /// PowerShell remoting payload elements (`creationXml`, `connectXml`, ...), MS-PSRP 3.1.5.
    pub const POWERSHELL: &str = "http://schemas.microsoft.com/powershell";
}

/// Action URIs (`wsa:Action`) of every request and response in the corpus.
pub mod actions {
    /// WS-Transfer Create (shell creation).
    pub const CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
    /// Reply to [`CREATE`].
    pub const CREATE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse";
    /// WS-Transfer Get (config, shell status).
    pub const GET: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get";
    /// Reply to [`GET`].
    pub const GET_RESPONSE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse";
    /// WS-Transfer Delete (shell deletion).
    pub const DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
    /// Reply to [`DELETE`].
    pub const DELETE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse";
    /// WS-Enumeration Enumerate (list shells or commands).
    pub const ENUMERATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate";
    /// Reply to [`ENUMERATE`].
    pub const ENUMERATE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse";
    /// WS-Enumeration Pull (next batch of an enumeration).
    pub const PULL: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull";
    /// Reply to [`PULL`].
    pub const PULL_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/enumeration/PullResponse";
    /// Start a command in a shell (MS-WSMV 3.1.4.11).
    pub const COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
    /// Reply to [`COMMAND`].
    pub const COMMAND_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse";
    /// Send input (MS-WSMV 3.1.4.13).
    pub const SEND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send";
    /// Reply to [`SEND`].
    pub const SEND_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse";
    /// Receive output (MS-WSMV 3.1.4.14).
    pub const RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
    /// Reply to [`RECEIVE`].
    pub const RECEIVE_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse";
    /// Signal a command (MS-WSMV 3.1.4.12).
    pub const SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
    /// Reply to [`SIGNAL`].
    pub const SIGNAL_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse";
    /// Disconnect a shell (MS-WSMV 3.1.4.16).
    pub const DISCONNECT: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Disconnect";
    /// Reply to [`DISCONNECT`].
    pub const DISCONNECT_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/DisconnectResponse";
    /// Reconnect a disconnected shell from the same client (MS-WSMV 3.1.4.17).
    pub const RECONNECT: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Reconnect";
    /// Reply to [`RECONNECT`].
    pub const RECONNECT_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReconnectResponse";
    /// Connect to a disconnected shell or command (MS-WSMV 3.1.4.18).
    pub const CONNECT: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Connect";
    /// Reply to [`CONNECT`].
    pub const CONNECT_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ConnectResponse";
    /// Action of a WS-Management fault (wire-facts 2.6).
    pub const WSMAN_FAULT: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault";
    /// Action of a WS-Addressing fault, used for header errors
    /// (R:test_psrp_is_alive_other_wsman_error).
    pub const ADDRESSING_FAULT: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault";
}

/// Resource URIs (`wsman:ResourceURI`) and other fixed URIs.
pub mod resources {
    /// The WinRS cmd shell (wire-facts 2.4).
    pub const CMD_SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";
    /// All shells of the user, for Enumerate and shell status Get (wire-facts 2.5).
    pub const SHELLS: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
    /// The WinRM configuration (wire-facts 2.3).
    pub const CONFIG: &str = "http://schemas.microsoft.com/wbem/wsman/1/config";
    /// Prefix of PowerShell session configurations; see [`powershell`].
    pub const POWERSHELL_PREFIX: &str = "http://schemas.microsoft.com/powershell/";
    /// The default PowerShell session configuration.
    pub const DEFAULT_CONFIGURATION_NAME: &str = "Microsoft.PowerShell";
    /// `wsa:To` / `wsa:Address` of anonymous replies.
    pub const ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
    /// Dialect of a selector filter in Enumerate (R:test_psrp_disconnect_runspaces).
    pub const SELECTOR_FILTER_DIALECT: &str =
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/SelectorFilter";
    /// `w:FaultDetail` of an unknown shell or command id (R:test_winrs_bad_cmd_id).
    pub const FAULT_DETAIL_UNEXPECTED_SELECTORS: &str =
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors";
    /// `w:FaultDetail` of an invalid value (R:test_winrs_fail_poll_process).
    pub const FAULT_DETAIL_INVALID_VALUE: &str =
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue";
    /// `w:FaultDetail` of an unknown resource URI (DSP0226 fault detail; not recorded).
    pub const FAULT_DETAIL_INVALID_RESOURCE_URI: &str =
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidResourceURI";
    /// `wsmid:ProtocolVersion` of WS-Management 1.x (wire-facts 2.2).
    pub const PROTOCOL_VERSION: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";

    /// `wsmid:SecurityProfileName`: Basic over HTTP (wire-facts 2.2).
    pub const SECURITY_PROFILE_HTTP_BASIC: &str =
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/http/basic";
    /// `wsmid:SecurityProfileName`: SPNEGO/Kerberos over HTTP (wire-facts 2.2).
    pub const SECURITY_PROFILE_HTTP_SPNEGO_KERBEROS: &str =
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/http/spnego-kerberos";
    /// `wsmid:SecurityProfileName`: Basic over HTTPS.
    pub const SECURITY_PROFILE_HTTPS_BASIC: &str =
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/basic";
    /// `wsmid:SecurityProfileName`: SPNEGO/Kerberos over HTTPS.
    pub const SECURITY_PROFILE_HTTPS_SPNEGO_KERBEROS: &str =
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/spnego-kerberos";
    /// Client-certificate authentication (also the `Authorization` header value pypsrp
    /// sends for certificate auth, wire-facts 3).
    pub const SECURITY_PROFILE_HTTPS_MUTUAL: &str =
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual";

    /// The resource URI of a PowerShell session configuration, e.g.
    /// `http://schemas.microsoft.com/powershell/Microsoft.PowerShell` (wire-facts 2.5).
    pub fn powershell(configuration_name: &str) -> String {
        let mut uri = String::with_capacity(POWERSHELL_PREFIX.len() + configuration_name.len());
        uri.push_str(POWERSHELL_PREFIX);
        uri.push_str(configuration_name);
        uri
    }
}

/// Signal codes (`rsp:Code`, MS-WSMV 2.2.4.38).
pub mod signals {
    /// Terminate, capital T as pypsrp sends it (R:test_psrp_multiple_invocations).
    pub const TERMINATE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate";
    /// Terminate, lower case as pywinrm and WinRb send it; Windows accepts both.
    pub const TERMINATE_LOWERCASE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate";
    /// Ctrl+C for a cmd command.
    pub const CTRL_C: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c";
    /// Ctrl+Break for a cmd command.
    pub const CTRL_BREAK: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_break";
    /// Stop a PowerShell pipeline (R:test_psrp_nested_command).
    pub const PS_CTRL_C: &str = "powershell/signal/ctrl_c";
}

/// `rsp:CommandState/@State` URIs (wire-facts 2.4).
pub mod command_states {
    /// The command finished; `rsp:ExitCode` follows.
    pub const DONE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done";
    /// The command is running.
    pub const RUNNING: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running";
    /// The command waits (e.g. for host-call input, R:test_psrp_pshost_ui_mocked_methods).
    pub const PENDING: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Pending";
}

/// A `wsa:Action` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// [`actions::CREATE`].
    Create,
    /// [`actions::CREATE_RESPONSE`].
    CreateResponse,
    /// [`actions::GET`].
    Get,
    /// [`actions::GET_RESPONSE`].
    GetResponse,
    /// [`actions::DELETE`].
    Delete,
    /// [`actions::DELETE_RESPONSE`].
    DeleteResponse,
    /// [`actions::ENUMERATE`].
    Enumerate,
    /// [`actions::ENUMERATE_RESPONSE`].
    EnumerateResponse,
    /// [`actions::PULL`].
    Pull,
    /// [`actions::PULL_RESPONSE`].
    PullResponse,
    /// [`actions::COMMAND`].
    Command,
    /// [`actions::COMMAND_RESPONSE`].
    CommandResponse,
    /// [`actions::SEND`].
    Send,
    /// [`actions::SEND_RESPONSE`].
    SendResponse,
    /// [`actions::RECEIVE`].
    Receive,
    /// [`actions::RECEIVE_RESPONSE`].
    ReceiveResponse,
    /// [`actions::SIGNAL`].
    Signal,
    /// [`actions::SIGNAL_RESPONSE`].
    SignalResponse,
    /// [`actions::DISCONNECT`].
    Disconnect,
    /// [`actions::DISCONNECT_RESPONSE`].
    DisconnectResponse,
    /// [`actions::RECONNECT`].
    Reconnect,
    /// [`actions::RECONNECT_RESPONSE`].
    ReconnectResponse,
    /// [`actions::CONNECT`].
    Connect,
    /// [`actions::CONNECT_RESPONSE`].
    ConnectResponse,
    /// [`actions::WSMAN_FAULT`].
    WsmanFault,
    /// [`actions::ADDRESSING_FAULT`].
    AddressingFault,
    /// Any other action URI, kept verbatim.
    Other(String),
}

const ACTION_TABLE: [(&str, Action); 26] = [
    (actions::CREATE, Action::Create),
    (actions::CREATE_RESPONSE, Action::CreateResponse),
    (actions::GET, Action::Get),
    (actions::GET_RESPONSE, Action::GetResponse),
    (actions::DELETE, Action::Delete),
    (actions::DELETE_RESPONSE, Action::DeleteResponse),
    (actions::ENUMERATE, Action::Enumerate),
    (actions::ENUMERATE_RESPONSE, Action::EnumerateResponse),
    (actions::PULL, Action::Pull),
    (actions::PULL_RESPONSE, Action::PullResponse),
    (actions::COMMAND, Action::Command),
    (actions::COMMAND_RESPONSE, Action::CommandResponse),
    (actions::SEND, Action::Send),
    (actions::SEND_RESPONSE, Action::SendResponse),
    (actions::RECEIVE, Action::Receive),
    (actions::RECEIVE_RESPONSE, Action::ReceiveResponse),
    (actions::SIGNAL, Action::Signal),
    (actions::SIGNAL_RESPONSE, Action::SignalResponse),
    (actions::DISCONNECT, Action::Disconnect),
    (actions::DISCONNECT_RESPONSE, Action::DisconnectResponse),
    (actions::RECONNECT, Action::Reconnect),
    (actions::RECONNECT_RESPONSE, Action::ReconnectResponse),
    (actions::CONNECT, Action::Connect),
    (actions::CONNECT_RESPONSE, Action::ConnectResponse),
    (actions::WSMAN_FAULT, Action::WsmanFault),
    (actions::ADDRESSING_FAULT, Action::AddressingFault),
];

impl Action {
    /// The action for a URI; unknown URIs become [`Action::Other`].
    pub fn from_uri(uri: &str) -> Self {
        let uri = uri.trim();
        ACTION_TABLE
            .iter()
            .find(|(u, _)| *u == uri)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| Action::Other(uri.to_owned()))
    }

    /// The action URI.
    pub fn uri(&self) -> &str {
        if let Action::Other(uri) = self {
            return uri;
        }
        ACTION_TABLE
            .iter()
            .find(|(_, a)| a == self)
            .map(|(u, _)| *u)
            .unwrap_or_default()
    }

    /// The reply action Windows sends for this request action, if it has one.
    pub fn response(&self) -> Option<Action> {
        Some(match self {
            Action::Create => Action::CreateResponse,
            Action::Get => Action::GetResponse,
            Action::Delete => Action::DeleteResponse,
            Action::Enumerate => Action::EnumerateResponse,
            Action::Pull => Action::PullResponse,
            Action::Command => Action::CommandResponse,
            Action::Send => Action::SendResponse,
            Action::Receive => Action::ReceiveResponse,
            Action::Signal => Action::SignalResponse,
            Action::Disconnect => Action::DisconnectResponse,
            Action::Reconnect => Action::ReconnectResponse,
            Action::Connect => Action::ConnectResponse,
            _ => return None,
        })
    }

    /// True for the WS-Management and WS-Addressing fault actions.
    pub fn is_fault(&self) -> bool {
        matches!(self, Action::WsmanFault | Action::AddressingFault)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.uri())
    }
}

/// A signal code (`rsp:Signal/rsp:Code`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SignalCode {
    /// [`signals::TERMINATE`] (capital T, pypsrp).
    Terminate,
    /// [`signals::TERMINATE_LOWERCASE`] (pywinrm, WinRb).
    TerminateLowercase,
    /// [`signals::CTRL_C`].
    CtrlC,
    /// [`signals::CTRL_BREAK`].
    CtrlBreak,
    /// [`signals::PS_CTRL_C`]: stop a PowerShell pipeline.
    PsCtrlC,
    /// Any other code, verbatim.
    Other(String),
}

impl SignalCode {
    /// The code for a URI; unknown codes become [`SignalCode::Other`].
    pub fn from_uri(uri: &str) -> Self {
        match uri.trim() {
            signals::TERMINATE => SignalCode::Terminate,
            signals::TERMINATE_LOWERCASE => SignalCode::TerminateLowercase,
            signals::CTRL_C => SignalCode::CtrlC,
            signals::CTRL_BREAK => SignalCode::CtrlBreak,
            signals::PS_CTRL_C => SignalCode::PsCtrlC,
            other => SignalCode::Other(other.to_owned()),
        }
    }

    /// The code URI as written on the wire.
    pub fn uri(&self) -> &str {
        match self {
            SignalCode::Terminate => signals::TERMINATE,
            SignalCode::TerminateLowercase => signals::TERMINATE_LOWERCASE,
            SignalCode::CtrlC => signals::CTRL_C,
            SignalCode::CtrlBreak => signals::CTRL_BREAK,
            SignalCode::PsCtrlC => signals::PS_CTRL_C,
            SignalCode::Other(uri) => uri,
        }
    }

    /// True for either spelling of terminate.
    pub fn is_terminate(&self) -> bool {
        matches!(self, SignalCode::Terminate | SignalCode::TerminateLowercase)
    }
}

/// The state of a command (`rsp:CommandState/@State`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CommandState {
    /// [`command_states::DONE`].
    Done,
    /// [`command_states::RUNNING`].
    Running,
    /// [`command_states::PENDING`].
    Pending,
    /// Any other state URI, verbatim.
    Other(String),
}

impl CommandState {
    /// The state for a URI; unknown states become [`CommandState::Other`].
    pub fn from_uri(uri: &str) -> Self {
        match uri.trim() {
            command_states::DONE => CommandState::Done,
            command_states::RUNNING => CommandState::Running,
            command_states::PENDING => CommandState::Pending,
            other => CommandState::Other(other.to_owned()),
        }
    }

    /// The state URI as written on the wire.
    pub fn uri(&self) -> &str {
        match self {
            CommandState::Done => command_states::DONE,
            CommandState::Running => command_states::RUNNING,
            CommandState::Pending => command_states::PENDING,
            CommandState::Other(uri) => uri,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_uris() {
        for (uri, action) in ACTION_TABLE.iter() {
            assert_eq!(&Action::from_uri(uri), action);
            assert_eq!(action.uri(), *uri);
        }
        let other = Action::from_uri("urn:custom");
        assert_eq!(other, Action::Other("urn:custom".into()));
        assert_eq!(other.uri(), "urn:custom");
        assert_eq!(Action::Receive.response(), Some(Action::ReceiveResponse));
        assert_eq!(Action::ReceiveResponse.response(), None);
        assert!(Action::AddressingFault.is_fault());
    }

    #[test]
    fn signal_and_state_codes_keep_their_spelling() {
        assert_eq!(
            SignalCode::from_uri(signals::TERMINATE),
            SignalCode::Terminate
        );
        assert_eq!(
            SignalCode::from_uri(signals::TERMINATE_LOWERCASE).uri(),
            signals::TERMINATE_LOWERCASE
        );
        assert!(SignalCode::TerminateLowercase.is_terminate());
        assert!(!SignalCode::PsCtrlC.is_terminate());
        assert_eq!(
            SignalCode::from_uri("powershell/signal/ctrl_c"),
            SignalCode::PsCtrlC
        );
        assert_eq!(
            CommandState::from_uri(command_states::PENDING),
            CommandState::Pending
        );
        assert_eq!(CommandState::from_uri("x").uri(), "x");
        assert_eq!(
            resources::powershell("JEARole"),
            "http://schemas.microsoft.com/powershell/JEARole"
        );
    }
}
