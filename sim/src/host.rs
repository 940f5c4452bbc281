//! What one simulated host is: every setting a profile class can give it, resolved to plain
//! data. The profile loader (`profile`) produces `HostSpec`s; the network layer (`server`,
//! `auth`) and the WS-Man service (`service`) only read them.

use std::net::Ipv4Addr;
use std::time::Duration;

use psfleet_core::taxonomy::Bucket;
use psfleet_core::wsman::WinrmConfig;

/// One simulated Windows host.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Host name written to the inventory, e.g. `srv0001.fleet.test` (`.invalid` when the
    /// class makes it unresolvable).
    pub name: String,
    /// The loopback address its listeners bind (always inside 127.0.0.0/8).
    pub address: Ipv4Addr,
    /// The profile class it came from.
    pub class: String,
    /// The outcome a correct client must report for the default job (the inventory column).
    pub expected: Expected,
    /// Listeners and network behaviour.
    pub network: NetworkSpec,
    /// Authentication and encryption settings of the WinRM service.
    pub auth: AuthSpec,
    /// Local accounts (the same list for every host of a fleet unless a class overrides it).
    pub accounts: Vec<Account>,
    /// The WinRM configuration (quotas, MaxEnvelopeSizekb, auth flags) served by the config
    /// Get and enforced by the service.
    pub winrm: WinrmConfig,
    /// Registered PowerShell session configurations (`Microsoft.PowerShell` and JEA names).
    /// Empty after Disable-PSRemoting-like states is expressed by `remoting_enabled`.
    pub configurations: Vec<String>,
    /// False: the session configurations deny network logons (Disable-PSRemoting); PSRP
    /// Create answers Access is denied.
    pub remoting_enabled: bool,
    /// Operating system facts (Identify, Win32_OperatingSystem, $PSVersionTable.BuildVersion).
    pub os: OsInfo,
    /// PowerShell facts.
    pub powershell: PowerShellInfo,
    /// Script-level behaviour.
    pub script: ScriptBehaviour,
    /// Data the PowerShell subset returns (Get-Service, Get-HotFix, …).
    pub data: HostData,
}

/// The outcome the inventory says a host should produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The default job succeeds.
    Succeeded,
    /// The default job fails in this bucket.
    Failed(Bucket),
}

/// Listener and link behaviour.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    /// HTTP listener port (5985), if any.
    pub http_port: Option<u16>,
    /// HTTPS listener port (5986), if any.
    pub https_port: Option<u16>,
    /// The certificate the HTTPS listener presents.
    pub certificate: CertificateKind,
    /// Accepts connections and never answers.
    pub blackhole: bool,
    /// Added before every response.
    pub latency: Duration,
    /// Uniform extra delay in `[0, jitter]` per response (seeded).
    pub jitter: Duration,
    /// Probability that a response is cut off by a connection reset.
    pub reset_probability: f64,
    /// Probability that a request is answered with HTTP 500 and an empty body.
    pub empty_500_probability: f64,
}

/// Which certificate an HTTPS listener presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateKind {
    /// Issued by the simulator CA for the host's name and address.
    Valid,
    /// Self-signed for the host's name.
    SelfSigned,
    /// Issued by the simulator CA for another name.
    WrongName,
    /// Issued by the simulator CA, expired.
    Expired,
}

/// Authentication settings of the WinRM service (winrm/config/service/auth).
#[derive(Debug, Clone)]
pub struct AuthSpec {
    /// Offer `Basic realm="WSMAN"`.
    pub basic: bool,
    /// Offer `Negotiate` (NTLM inside SPNEGO, or Kerberos when a KDC is configured).
    pub negotiate: bool,
    /// Offer `Kerberos` (only meaningful with a keytab).
    pub kerberos: bool,
    /// Offer `CredSSP`.
    pub credssp: bool,
    /// Accept TLS client certificates mapped to an account.
    pub certificate: bool,
    /// AllowUnencrypted: accept plaintext bodies over HTTP after authentication.
    pub allow_unencrypted: bool,
    /// CbtHardeningLevel: `None`, `Relaxed` or `Strict`.
    pub cbt_hardening: String,
}

/// A local account.
#[derive(Debug, Clone)]
pub struct Account {
    /// User name (matched case-insensitively, with or without a `DOMAIN\` prefix).
    pub name: String,
    /// Password.
    pub password: String,
    /// Member of Administrators: may use the default session configurations; non-admins get
    /// the Access is denied fault (MS-WSMV fault 5) on Create.
    pub admin: bool,
}

/// Operating system facts.
#[derive(Debug, Clone)]
pub struct OsInfo {
    /// e.g. `Microsoft Windows Server 2019 Datacenter`.
    pub caption: String,
    /// e.g. `10.0.17763`.
    pub version: String,
    /// Identify's ProductVersion, e.g. `OS: 10.0.17763 SP: 0.0 Stack: 3.0`.
    pub identify_product_version: String,
    /// The NetBIOS computer name ($env:COMPUTERNAME, hostname).
    pub computer_name: String,
    /// Last boot time, as an ISO 8601 string.
    pub last_boot: String,
}

/// PowerShell facts.
#[derive(Debug, Clone)]
pub struct PowerShellInfo {
    /// $PSVersionTable.PSVersion, e.g. `5.1.17763.1`.
    pub version: String,
    /// PSRP protocol version the server announces (`2.3`).
    pub protocol_version: String,
    /// Builtin modules fail to load: runspace pool opens Broken (wire-facts 1.13).
    pub modules_fail: bool,
}

/// Script-level behaviour.
#[derive(Debug, Clone)]
pub struct ScriptBehaviour {
    /// Extra time every script takes (slow hosts).
    pub extra_duration: Duration,
    /// Every script ends with a terminating error (pipeline Failed).
    pub always_fail: bool,
}

/// Per-host data the PowerShell subset serves.
#[derive(Debug, Clone, Default)]
pub struct HostData {
    /// Services: (Name, DisplayName, Status).
    pub services: Vec<(String, String, String)>,
    /// Hot fixes: (HotFixID, Description, InstalledOn ISO date).
    pub hotfixes: Vec<(String, String, String)>,
    /// Total physical memory in KiB (Win32_OperatingSystem.TotalVisibleMemorySize).
    pub memory_kb: u64,
}
