//! The objects the subset's cmdlets return, built from a host's [`HostSpec`] and shaped as
//! Windows PowerShell 5.1 serializes them.
//!
//! - `Get-Service`: `System.ServiceProcess.ServiceController` exactly as recorded
//!   (R:test_psrp_multiple_commands: adapted properties, `Name` and `RequiredServices` in the
//!   member set, `RequiredServices` a reference to `ServicesDependedOn`, and `Status`,
//!   `ServiceType`, `StartType` written as strings because the default serialization depth
//!   of 1 leaves no depth for the enums). Inside the script they stay enums, so
//!   `Select-Object Status` outputs a real `ServiceControllerStatus`.
//! - `Get-HotFix`: WMI `Win32_QuickFixEngineering` management objects.
//! - `Get-CimInstance Win32_OperatingSystem`: a CIM instance; `Get-WmiObject`: the WMI
//!   management object (dates as DMTF strings, as WMI returns them).
//! - `$PSVersionTable`, `Get-Date`, `Measure-Object`.

use psfleet_core::psrp::clixml::{self, Content, DateTime, Property, PsObject, Value, Version};
use psfleet_core::psrp::messages::PsVersionTable;

use super::values::{Moment, Table, Val, object};
use crate::host::HostSpec;

/// Simulated uptime at the start of every script: `Get-Date` is `LastBootUpTime` plus this
/// plus the script's virtual elapsed time (no wall clock, so runs are reproducible).
pub(crate) const UPTIME_TICKS: i64 = 864_000_000_000; // one day

/// Where the simulated clock starts when a host's `last_boot` does not parse.
const FALLBACK_BOOT: &str = "2024-01-01T00:00:00+00:00";

/// Facts about the host the script runs on.
#[derive(Debug, Clone)]
pub(crate) struct HostFacts {
    pub computer: String,
    pub user: String,
    pub boot: Moment,
    pub process_id: u32,
}

impl HostFacts {
    pub(crate) fn new(host: &HostSpec, user: &str) -> Self {
        let user = user.rsplit('\\').next().unwrap_or(user).to_owned();
        let boot = Moment::parse(&DateTime::from_text(host.os.last_boot.clone()))
            .or_else(|| Moment::parse(&DateTime::from_text(FALLBACK_BOOT)))
            .unwrap_or(Moment {
                ticks: 0,
                offset: 0,
            });
        Self {
            computer: host.os.computer_name.clone(),
            user,
            boot,
            process_id: process_id(&host.name),
        }
    }
}

/// A stable, plausible process id for a host's wsmprovhost (a multiple of 4, as Windows
/// hands them out).
fn process_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    1000 + (h % 15_000) / 4 * 4
}

// ===== Get-Service =====

const SERVICE_TYPES: [&str; 4] = [
    "System.ServiceProcess.ServiceController",
    "System.ComponentModel.Component",
    "System.MarshalByRefObject",
    "System.Object",
];

/// `ServiceControllerStatus` name and value for a status string from the host data.
fn service_status(status: &str) -> (&'static str, i32) {
    const STATES: [(&str, i32); 7] = [
        ("Stopped", 1),
        ("StartPending", 2),
        ("StopPending", 3),
        ("Running", 4),
        ("ContinuePending", 5),
        ("PausePending", 6),
        ("Paused", 7),
    ];
    STATES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(status.trim()))
        .copied()
        .unwrap_or(("Stopped", 1))
}

/// Services Windows knows to depend on others (for `ServicesDependedOn`).
fn dependencies(name: &str) -> &'static [&'static str] {
    match name.to_ascii_lowercase().as_str() {
        "winrm" => &["RPCSS", "HTTP"],
        "spooler" => &["RPCSS", "http"],
        "lanmanserver" => &["SamSS", "Srv2"],
        "dnscache" => &["nsi", "Tdx"],
        _ => &[],
    }
}

/// One service as the script sees it (`name` as the caller wrote it, as Windows does).
pub(crate) fn service(name: &str, display: &str, status: &str) -> Value {
    let (status_name, status_value) = service_status(status);
    let running = status_value == 4;
    let (start_name, start_value) = if running {
        ("Automatic", 2)
    } else {
        ("Manual", 3)
    };
    let depends_on = Value::list(
        &[
            "System.ServiceProcess.ServiceController[]",
            "System.Array",
            "System.Object",
        ],
        dependencies(name)
            .iter()
            .map(|d| Value::String((*d).to_owned()))
            .collect(),
    );
    let dependents = Value::list(
        &[
            "System.ServiceProcess.ServiceController[]",
            "System.Array",
            "System.Object",
        ],
        Vec::new(),
    );
    let own_process = matches!(name.to_ascii_lowercase().as_str(), "winrm" | "spooler");
    let (type_name, type_value) = if own_process {
        ("Win32OwnProcess", 16)
    } else {
        ("Win32ShareProcess", 32)
    };
    object(
        &SERVICE_TYPES,
        Some(name.to_owned()),
        vec![
            Property::new("CanPauseAndContinue", false),
            Property::new("CanShutdown", running),
            Property::new("CanStop", running),
            Property::new("DisplayName", display),
            Property::new("DependentServices", dependents),
            Property::new("MachineName", "."),
            Property::new("ServiceName", name),
            Property::new("ServicesDependedOn", depends_on.clone()),
            Property::new("ServiceHandle", "SafeServiceHandle"),
            Property::new(
                "Status",
                Value::enumeration(
                    "System.ServiceProcess.ServiceControllerStatus",
                    status_name,
                    status_value,
                ),
            ),
            Property::new(
                "ServiceType",
                Value::enumeration("System.ServiceProcess.ServiceType", type_name, type_value),
            ),
            Property::new(
                "StartType",
                Value::enumeration(
                    "System.ServiceProcess.ServiceStartMode",
                    start_name,
                    start_value,
                ),
            ),
            Property::new("Site", Value::Nil),
            Property::new("Container", Value::Nil),
        ],
        vec![
            Property::new("Name", name),
            // The same list object: written as a <Ref> to ServicesDependedOn, as recorded.
            Property::new("RequiredServices", depends_on),
        ],
    )
}

/// The host's services, in the order of the host data.
pub(crate) fn services(host: &HostSpec) -> impl Iterator<Item = (&str, &str, &str)> {
    host.data
        .services
        .iter()
        .map(|(n, d, s)| (n.as_str(), d.as_str(), s.as_str()))
}

/// The value as it goes on the wire: top-level .NET objects are serialized at depth 1, so
/// their enum-valued adapted properties become strings (R:test_psrp_multiple_commands).
pub(crate) fn to_wire(value: Value) -> Value {
    let Value::Object(o) = &value else {
        return value;
    };
    if !o.is_type("System.ServiceProcess.ServiceController") {
        return value;
    }
    let mut copy = PsObject::clone(o);
    for p in &mut copy.adapted {
        if let Value::Object(inner) = &p.value
            && inner.is_enum()
        {
            p.value = Value::String(inner.to_string.clone().unwrap_or_default());
        }
    }
    // Keep RequiredServices pointing at the (unchanged) ServicesDependedOn list.
    Value::object(copy)
}

// ===== WMI and CIM =====

fn wmi_types(class: &str, ancestors: &[&str]) -> Vec<String> {
    let mut t = vec![format!(
        "System.Management.ManagementObject#root\\cimv2\\{class}"
    )];
    t.extend(
        ancestors
            .iter()
            .map(|a| format!("System.Management.ManagementObject#root\\cimv2\\{a}")),
    );
    t.push(format!("System.Management.ManagementObject#{class}"));
    t.extend(
        ancestors
            .iter()
            .map(|a| format!("System.Management.ManagementObject#{a}")),
    );
    t.extend(
        [
            "System.Management.ManagementObject",
            "System.Management.ManagementBaseObject",
            "System.ComponentModel.Component",
            "System.MarshalByRefObject",
            "System.Object",
        ]
        .map(str::to_owned),
    );
    t
}

fn string_array(items: &[&str]) -> Value {
    Value::list(
        &["System.String[]", "System.Array", "System.Object"],
        items
            .iter()
            .map(|s| Value::String((*s).to_owned()))
            .collect(),
    )
}

/// WMI system properties (`__GENUS` ... `__PATH`).
fn wmi_system_properties(
    class: &str,
    superclass: &str,
    derivation: &[&str],
    relpath: &str,
    property_count: i32,
    computer: &str,
) -> Vec<Property> {
    vec![
        Property::new("__GENUS", 2),
        Property::new("__CLASS", class),
        Property::new("__SUPERCLASS", superclass),
        Property::new("__DYNASTY", "CIM_ManagedSystemElement"),
        Property::new("__RELPATH", relpath),
        Property::new("__PROPERTY_COUNT", property_count),
        Property::new("__DERIVATION", string_array(derivation)),
        Property::new("__SERVER", computer),
        Property::new("__NAMESPACE", "root\\cimv2"),
        Property::new("__PATH", format!("\\\\{computer}\\root\\cimv2:{relpath}")),
    ]
}

/// A date in WMI's DMTF form (`20240501080000.000000+000`).
fn dmtf(m: Moment) -> String {
    let (y, mo, d, h, mi, s, frac) = m.fields();
    let sign = if m.offset < 0 { '-' } else { '+' };
    format!(
        "{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}.{:06}{sign}{:03}",
        frac / 10,
        m.offset.unsigned_abs()
    )
}

/// One hot fix as `Get-HotFix` returns it.
pub(crate) fn hotfix(id: &str, description: &str, installed_on: &str, computer: &str) -> Value {
    let relpath = format!("Win32_QuickFixEngineering.HotFixID=\"{id}\",ServicePackInEffect=\"\"");
    let types = wmi_types(
        "Win32_QuickFixEngineering",
        &["CIM_LogicalElement", "CIM_ManagedSystemElement"],
    );
    let installed = install_date(installed_on);
    let mut adapted = wmi_system_properties(
        "Win32_QuickFixEngineering",
        "CIM_LogicalElement",
        &["CIM_LogicalElement", "CIM_ManagedSystemElement"],
        &relpath,
        11,
        computer,
    );
    let kb = id.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    adapted.extend([
        Property::new(
            "Caption",
            format!("http://support.microsoft.com/?kbid={kb}"),
        ),
        Property::new("CSName", computer),
        Property::new("Description", description),
        Property::new("FixComments", ""),
        Property::new("HotFixID", id),
        Property::new("InstallDate", Value::Nil),
        Property::new("InstalledBy", "NT AUTHORITY\\SYSTEM"),
        Property::new("Name", Value::Nil),
        Property::new("ServicePackInEffect", ""),
        Property::new("Status", Value::Nil),
    ]);
    Value::object(PsObject {
        type_names: Some(types.into_iter().collect()),
        to_string: Some(format!("\\\\{computer}\\root\\cimv2:{relpath}")),
        content: Content::None,
        adapted,
        extended: vec![
            Property::new("PSComputerName", computer),
            Property::new(
                "InstalledOn",
                installed.map_or(Value::Nil, |m| Value::DateTime(m.to_datetime())),
            ),
        ],
    })
}

/// Reads a host-data install date (`2024-01-10` or a full ISO date) as local midnight.
fn install_date(text: &str) -> Option<Moment> {
    let t = text.trim();
    let full = if t.len() == 10 {
        format!("{t}T00:00:00+00:00")
    } else {
        t.to_owned()
    };
    Moment::parse(&DateTime::from_text(full))
}

/// The operating-system facts both `Win32_OperatingSystem` forms share.
struct OsFacts {
    caption: String,
    version: String,
    build: String,
    computer: String,
    memory_kb: u64,
    boot: Moment,
    now: Moment,
}

impl OsFacts {
    fn new(host: &HostSpec, facts: &HostFacts, now: Moment) -> Self {
        let version = host.os.version.clone();
        let build = version.rsplit('.').next().unwrap_or("").to_owned();
        Self {
            caption: host.os.caption.clone(),
            version,
            build,
            computer: facts.computer.clone(),
            memory_kb: host.data.memory_kb,
            boot: facts.boot,
            now,
        }
    }

    /// The class properties, with dates converted by `date`.
    fn properties(&self, date: impl Fn(Moment) -> Value) -> Vec<Property> {
        let free = self.memory_kb / 2;
        let install = Moment {
            ticks: self.boot.ticks.saturating_sub(90 * 864_000_000_000),
            offset: self.boot.offset,
        };
        vec![
            Property::new("BootDevice", "\\Device\\HarddiskVolume1"),
            Property::new("BuildNumber", self.build.as_str()),
            Property::new("BuildType", "Multiprocessor Free"),
            Property::new("Caption", self.caption.as_str()),
            Property::new("CodeSet", "1252"),
            Property::new("CountryCode", "1"),
            Property::new("CSDVersion", Value::Nil),
            Property::new("CSName", self.computer.as_str()),
            Property::new("CurrentTimeZone", Value::I16(0)),
            Property::new("FreePhysicalMemory", Value::U64(free)),
            Property::new("InstallDate", date(install)),
            Property::new("LastBootUpTime", date(self.boot)),
            Property::new("LocalDateTime", date(self.now)),
            Property::new("Locale", "0409"),
            Property::new("Manufacturer", "Microsoft Corporation"),
            Property::new(
                "Name",
                format!(
                    "{}|C:\\Windows|\\Device\\Harddisk0\\Partition2",
                    self.caption
                ),
            ),
            Property::new("NumberOfProcesses", Value::U32(64)),
            Property::new("NumberOfUsers", Value::U32(1)),
            Property::new("OSArchitecture", "64-bit"),
            Property::new("OSLanguage", Value::U32(1033)),
            Property::new("OSType", Value::U16(18)),
            Property::new("ProductType", Value::U32(3)),
            Property::new("ServicePackMajorVersion", Value::U16(0)),
            Property::new("ServicePackMinorVersion", Value::U16(0)),
            Property::new("SystemDirectory", "C:\\Windows\\system32"),
            Property::new("SystemDrive", "C:"),
            Property::new(
                "TotalVirtualMemorySize",
                Value::U64(self.memory_kb + self.memory_kb / 4),
            ),
            Property::new("TotalVisibleMemorySize", Value::U64(self.memory_kb)),
            Property::new("Version", self.version.as_str()),
            Property::new("WindowsDirectory", "C:\\Windows"),
        ]
    }
}

/// `Get-CimInstance Win32_OperatingSystem`.
pub(crate) fn os_cim(host: &HostSpec, facts: &HostFacts, now: Moment) -> Value {
    let os = OsFacts::new(host, facts, now);
    let mut adapted = os.properties(|m| Value::DateTime(m.to_datetime()));
    adapted.extend([
        Property::new("CimClass", "root/cimv2:Win32_OperatingSystem"),
        Property::new(
            "CimInstanceProperties",
            Value::list(
                &[
                    "Microsoft.Management.Infrastructure.Internal.Data.CimPropertiesCollection",
                    "System.Object",
                ],
                Vec::new(),
            ),
        ),
        Property::new(
            "CimSystemProperties",
            "Microsoft.Management.Infrastructure.CimSystemProperties",
        ),
    ]);
    let prefix = "Microsoft.Management.Infrastructure.CimInstance#";
    let types: Vec<String> = [
        "root/cimv2/Win32_OperatingSystem",
        "root/cimv2/CIM_OperatingSystem",
        "root/cimv2/CIM_LogicalElement",
        "root/cimv2/CIM_ManagedSystemElement",
        "Win32_OperatingSystem",
        "CIM_OperatingSystem",
        "CIM_LogicalElement",
        "CIM_ManagedSystemElement",
    ]
    .iter()
    .map(|t| format!("{prefix}{t}"))
    .chain([
        "Microsoft.Management.Infrastructure.CimInstance".to_owned(),
        "System.Object".to_owned(),
    ])
    .collect();
    Value::object(PsObject {
        type_names: Some(types.into_iter().collect()),
        to_string: Some(format!("Win32_OperatingSystem: {}", os.caption)),
        content: Content::None,
        adapted,
        extended: vec![Property::new("PSComputerName", Value::Nil)],
    })
}

/// `Get-WmiObject Win32_OperatingSystem`.
pub(crate) fn os_wmi(host: &HostSpec, facts: &HostFacts, now: Moment) -> Value {
    let os = OsFacts::new(host, facts, now);
    let derivation = [
        "CIM_OperatingSystem",
        "CIM_LogicalElement",
        "CIM_ManagedSystemElement",
    ];
    let mut adapted = wmi_system_properties(
        "Win32_OperatingSystem",
        "CIM_OperatingSystem",
        &derivation,
        "Win32_OperatingSystem=@",
        64,
        &os.computer,
    );
    adapted.extend(os.properties(|m| Value::String(dmtf(m))));
    Value::object(PsObject {
        type_names: Some(
            wmi_types("Win32_OperatingSystem", &derivation)
                .into_iter()
                .collect(),
        ),
        to_string: Some(format!(
            "\\\\{}\\root\\cimv2:Win32_OperatingSystem=@",
            os.computer
        )),
        content: Content::None,
        adapted,
        extended: vec![Property::new("PSComputerName", os.computer.as_str())],
    })
}

// ===== $PSVersionTable, Get-Date, Measure-Object =====

/// The host's `$PSVersionTable` (Windows PowerShell 5.1 layout, versions from the host).
pub(crate) fn version_table(host: &HostSpec) -> PsVersionTable {
    let mut t = PsVersionTable::windows_powershell_5_1();
    let ps = Version::from_text(host.powershell.version.clone());
    let revision = ps.components().and_then(|c| c.get(3).copied()).unwrap_or(0);
    t.build_version = Some(Version::from_text(format!(
        "{}.{revision}",
        host.os.version
    )));
    if ps.components().is_some() {
        t.ps_compatible_versions = ["1.0", "2.0", "3.0", "4.0", "5.0"]
            .into_iter()
            .map(Version::from_text)
            .chain([ps.clone()])
            .collect();
        t.ps_version = Some(ps);
    }
    t.ps_remoting_protocol_version =
        Some(Version::from_text(host.powershell.protocol_version.clone()));
    t
}

/// `$PSVersionTable` as a script sees it: a `PSVersionHashTable`.
pub(crate) fn version_table_val(host: &HostSpec) -> Val {
    let value = version_table(host).to_clixml();
    let entries = value
        .as_object()
        .and_then(PsObject::dictionary)
        .map(|d| {
            d.iter()
                .map(|e| (e.key.clone(), Val::V(e.value.clone())))
                .collect()
        })
        .unwrap_or_default();
    Val::Table(Table {
        entries,
        ordered: false,
        type_name: Some("System.Management.Automation.PSVersionHashTable".to_owned()),
    })
}

/// `Get-Date`: a DateTime carrying the `DisplayHint` note property.
pub(crate) fn get_date(m: Moment) -> Value {
    Value::object(PsObject {
        type_names: None,
        to_string: None,
        content: Content::Value(Value::DateTime(m.to_datetime())),
        adapted: Vec::new(),
        extended: vec![Property::new(
            "DisplayHint",
            Value::enumeration(
                "Microsoft.PowerShell.Commands.DisplayHintType",
                "DateTime",
                2,
            ),
        )],
    })
}

/// `Measure-Object`'s `GenericMeasureInfo`.
pub(crate) fn measure_info(
    count: i32,
    sum: Option<f64>,
    average: Option<f64>,
    maximum: Option<f64>,
    minimum: Option<f64>,
    property: Option<&str>,
) -> Value {
    let num = |v: Option<f64>| v.map_or(Value::Nil, |d| Value::Double(clixml::Float::from_f64(d)));
    object(
        &[
            "Microsoft.PowerShell.Commands.GenericMeasureInfo",
            "Microsoft.PowerShell.Commands.MeasureInfo",
            "System.Object",
        ],
        Some("Microsoft.PowerShell.Commands.GenericMeasureInfo".to_owned()),
        vec![
            Property::new("Count", count),
            Property::new("Average", num(average)),
            Property::new("Sum", num(sum)),
            Property::new("Maximum", num(maximum)),
            Property::new("Minimum", num(minimum)),
            Property::new("Property", property.map_or(Value::Nil, Value::from)),
        ],
        Vec::new(),
    )
}

/// A `[pscustomobject]` or `Select-Object` result: type names, note properties only.
pub(crate) fn custom_object(first_type: Option<&str>, props: Vec<Property>) -> Value {
    let mut types = Vec::new();
    if let Some(t) = first_type {
        types.push(t);
    }
    types.extend([
        "System.Management.Automation.PSCustomObject",
        "System.Object",
    ]);
    object(&types, None, Vec::new(), props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_serializes_as_recorded() {
        // R:test_psrp_multiple_commands, `Get-Service -Name winrm`.
        let expected = r#"<Obj RefId="0"><TN RefId="0"><T>System.ServiceProcess.ServiceController</T><T>System.ComponentModel.Component</T><T>System.MarshalByRefObject</T><T>System.Object</T></TN><ToString>winrm</ToString><Props><B N="CanPauseAndContinue">false</B><B N="CanShutdown">true</B><B N="CanStop">true</B><S N="DisplayName">Windows Remote Management (WS-Management)</S><Obj N="DependentServices" RefId="1"><TN RefId="1"><T>System.ServiceProcess.ServiceController[]</T><T>System.Array</T><T>System.Object</T></TN><LST /></Obj><S N="MachineName">.</S><S N="ServiceName">winrm</S><Obj N="ServicesDependedOn" RefId="2"><TNRef RefId="1" /><LST><S>RPCSS</S><S>HTTP</S></LST></Obj><S N="ServiceHandle">SafeServiceHandle</S><S N="Status">Running</S><S N="ServiceType">Win32OwnProcess</S><S N="StartType">Automatic</S><Nil N="Site" /><Nil N="Container" /></Props><MS><S N="Name">winrm</S><Ref N="RequiredServices" RefId="2" /></MS></Obj>"#;
        let v = to_wire(service(
            "winrm",
            "Windows Remote Management (WS-Management)",
            "Running",
        ));
        let got = String::from_utf8(clixml::to_bytes(&v)).unwrap();
        // The recording writes empty elements as `<X />`, the core writer as `<X/>`.
        assert_eq!(got, expected.replace(" />", "/>"));
        assert_eq!(clixml::from_bytes(expected.as_bytes()).unwrap(), v);
    }

    #[test]
    fn service_status_stays_an_enum_inside_the_script() {
        let v = service("Spooler", "Print Spooler", "stopped");
        let o = v.as_object().unwrap();
        let status = o.property("Status").unwrap();
        assert_eq!(status.as_i32(), Some(1));
        assert_eq!(status.display_text(), "Stopped");
        assert_eq!(o.property("StartType").unwrap().display_text(), "Manual");
    }

    #[test]
    fn dmtf_dates_and_hotfix_fields() {
        let m = Moment::parse(&DateTime::from_text("2024-05-01T08:00:00.5+00:00")).unwrap();
        assert_eq!(dmtf(m), "20240501080000.500000+000");
        let h = hotfix("KB5034441", "Security Update", "2024-01-10", "SRV0001");
        let o = h.as_object().unwrap();
        assert_eq!(
            o.property("HotFixID").and_then(Value::as_str),
            Some("KB5034441")
        );
        assert_eq!(
            o.property("Caption").and_then(Value::as_str),
            Some("http://support.microsoft.com/?kbid=5034441")
        );
        assert_eq!(
            o.property("InstalledOn")
                .and_then(Value::as_datetime)
                .map(DateTime::as_str),
            Some("2024-01-10T00:00:00+00:00")
        );
        assert_eq!(
            o.to_string.as_deref(),
            Some(
                "\\\\SRV0001\\root\\cimv2:Win32_QuickFixEngineering.HotFixID=\"KB5034441\",ServicePackInEffect=\"\""
            )
        );
    }

    #[test]
    fn get_date_carries_display_hint() {
        let m = Moment::parse(&DateTime::from_text("2024-05-02T08:00:00+00:00")).unwrap();
        let got = String::from_utf8(clixml::to_bytes(&get_date(m))).unwrap();
        assert_eq!(
            got,
            r#"<Obj RefId="0"><DT>2024-05-02T08:00:00+00:00</DT><MS><Obj N="DisplayHint" RefId="1"><TN RefId="0"><T>Microsoft.PowerShell.Commands.DisplayHintType</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>DateTime</ToString><I32>2</I32></Obj></MS></Obj>"#
        );
    }

    #[test]
    fn process_ids_are_stable_multiples_of_four() {
        let a = process_id("srv0001.fleet.test");
        assert_eq!(a, process_id("srv0001.fleet.test"));
        assert_eq!(a % 4, 0);
        assert!((1000..16_000).contains(&a));
    }
}
