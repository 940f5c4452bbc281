//! Inventories: every example under `inventories/examples/` loads into the hosts, groups and
//! connection settings it documents; the simulator's own CSV and YAML inventories read back
//! into the hosts it planned; independent Python readings agree (PyYAML walked with Ansible's
//! yaml-plugin rules for the YAML example, `shlex` and `ast.literal_eval` for INI host lines and
//! values, `fnmatch` for `--limit` globs; from the test venv, `$PSFLEET_PYTHON`); malformed
//! inventories in every format fail with `file:line` errors.

// Test code: failing loudly on a wrong value is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use psfleet_inventories::{
    Address, Authentication, CertValidation, Defaults, Format, Host, Inventory, Overrides, Pattern,
    Scheme, SecretRef, load, resolve,
};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../inventories/examples")
        .join(name)
}

/// Loads one example and resolves every host with psfleet's defaults, by name.
fn resolved(name: &str) -> (Inventory, BTreeMap<String, Host>) {
    let path = example(name);
    let inventory = load(&[path.to_str().unwrap()], None).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        inventory.warnings().is_empty(),
        "{:?}",
        inventory.warnings()
    );
    let hosts = resolve(&inventory, &Overrides::default(), &Defaults::default()).unwrap();
    let by_name = hosts.into_iter().map(|h| (h.name.clone(), h)).collect();
    (inventory, by_name)
}

fn env(name: &str) -> Option<SecretRef> {
    Some(SecretRef::Env(name.to_string()))
}

#[test]
fn csv_example_loads_as_documented() {
    let (inventory, hosts) = resolved("fleet.csv");
    assert_eq!(
        hosts.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "lab01.fleet.test",
            "srv0001.fleet.test",
            "srv0002.fleet.test",
            "srv0003.fleet.test"
        ]
    );
    let srv1 = &hosts["srv0001.fleet.test"];
    assert_eq!(
        srv1.address,
        Some(Address::Ip("127.0.0.11".parse().unwrap()))
    );
    assert_eq!(
        (srv1.scheme, srv1.port, srv1.authentication),
        (Scheme::Http, 5985, Authentication::Negotiate)
    );
    assert_eq!(srv1.user.as_deref(), Some("FLEET\\ops"));
    assert_eq!(srv1.password, env("FLEET_PASSWORD"));
    assert_eq!(srv1.groups, ["web", "prod", "all"]);
    assert_eq!(srv1.vars["owner"], "team-web");
    assert_eq!(srv1.vars["expected"], "Succeeded");
    assert_eq!(srv1.url(), "http://127.0.0.11:5985/wsman");
    assert_eq!(srv1.source.line, 6);
    let srv2 = &hosts["srv0002.fleet.test"];
    assert_eq!(
        (srv2.scheme, srv2.port, srv2.authentication),
        (Scheme::Https, 5986, Authentication::Ntlm)
    );
    let srv3 = &hosts["srv0003.fleet.test"];
    assert_eq!(
        (srv3.scheme, srv3.port, srv3.authentication),
        (Scheme::Http, 5985, Authentication::Kerberos)
    );
    assert_eq!(srv3.configuration_name, "JEA_Maintenance");
    assert_eq!(srv3.password, Some(SecretRef::KerberosCache));
    assert_eq!(srv3.groups, ["prod", "db", "all"]);
    assert_eq!(srv3.vars["expected"], "InvalidPSConfiguration");
    let lab = &hosts["lab01.fleet.test"];
    assert_eq!(
        (lab.address.clone(), lab.user.clone(), lab.password.clone()),
        (None, None, None)
    );
    assert_eq!(lab.configuration_name, "Microsoft.PowerShell");
    assert_eq!(lab.vars["owner"], "Doe, Jane");
    assert_eq!(
        inventory.group_hosts("prod").unwrap(),
        [
            "srv0001.fleet.test",
            "srv0002.fleet.test",
            "srv0003.fleet.test"
        ]
    );
}

#[test]
fn text_example_loads_as_documented() {
    let (inventory, hosts) = resolved("hosts.txt");
    let names: Vec<&str> = inventory.hosts().map(|h| h.name()).collect();
    assert_eq!(
        names,
        [
            "srv0001.fleet.test",
            "srv0002.fleet.test",
            "web01.fleet.test",
            "web02.fleet.test",
            "web03.fleet.test",
            "10.0.0.5",
            "fe80::10"
        ]
    );
    assert_eq!(
        (
            hosts["srv0001.fleet.test"].scheme,
            hosts["srv0001.fleet.test"].port
        ),
        (Scheme::Http, 5985)
    );
    assert_eq!(
        (
            hosts["srv0002.fleet.test"].scheme,
            hosts["srv0002.fleet.test"].port
        ),
        (Scheme::Https, 5986)
    );
    assert_eq!(hosts["fe80::10"].url(), "http://[fe80::10]:5985/wsman");
    assert!(hosts.values().all(|h| h.groups == ["ungrouped", "all"]));
    assert_eq!(
        inventory.host("web02.fleet.test").unwrap().location().line,
        4
    );
}

#[test]
fn ini_example_loads_as_documented() {
    let (inventory, hosts) = resolved("hosts.ini");
    assert_eq!(hosts.len(), 7);
    let jump = &hosts["jump.fleet.test"];
    assert_eq!(jump.address, Some(Address::Ip("10.0.0.2".parse().unwrap())));
    assert_eq!(jump.groups, ["ungrouped", "all"]);
    assert_eq!(
        (jump.authentication, jump.user.clone()),
        (Authentication::Negotiate, None)
    );
    for web in ["web01.fleet.test", "web02.fleet.test", "web03.fleet.test"] {
        let h = &hosts[web];
        assert_eq!(h.groups, ["web", "windows", "all"]);
        assert_eq!(h.user.as_deref(), Some("ops@FLEET.TEST"));
        assert_eq!(h.password, env("FLEET_PASSWORD"));
        assert_eq!(h.cert_validation, CertValidation::Ignore);
        assert_eq!(h.vars["maintenance_window"], "sun-02");
        assert_eq!(h.vars["ansible_connection"], "psrp");
    }
    let web4 = &hosts["web04.fleet.test"];
    assert_eq!(web4.url(), "https://10.0.0.14:5986/wsman");
    assert_eq!(web4.authentication, Authentication::Ntlm);
    let db1 = &hosts["db01.fleet.test"];
    assert_eq!(db1.configuration_name, "JEA_Maintenance");
    assert_eq!(
        (db1.authentication, db1.password.clone()),
        (Authentication::Kerberos, Some(SecretRef::KerberosCache))
    );
    assert_eq!(db1.vars["maintenance_window"], "sat-23");
    assert_eq!(db1.groups, ["db", "windows", "all"]);
    assert_eq!(
        (
            hosts["db02.fleet.test"].scheme,
            hosts["db02.fleet.test"].port
        ),
        (Scheme::Https, 5986)
    );
    assert_eq!(
        inventory.group_hosts("windows").unwrap(),
        [
            "web01.fleet.test",
            "web02.fleet.test",
            "web03.fleet.test",
            "web04.fleet.test",
            "db01.fleet.test",
            "db02.fleet.test"
        ]
    );
    let limited = Pattern::parse("windows:!db:&web0[!4]*").unwrap();
    assert_eq!(
        limited.matches(&inventory).unwrap(),
        ["web01.fleet.test", "web02.fleet.test", "web03.fleet.test"]
    );
}

#[test]
fn yaml_example_loads_as_documented() {
    let (inventory, hosts) = resolved("hosts.yml");
    assert_eq!(hosts.len(), 5);
    let jump = &hosts["jump.fleet.test"];
    assert_eq!(
        (jump.scheme, jump.port, jump.authentication),
        (Scheme::Https, 5986, Authentication::Negotiate)
    );
    assert_eq!(jump.groups, ["ungrouped", "all"]);
    let web1 = &hosts["web01.fleet.test"];
    assert_eq!(web1.authentication, Authentication::Ntlm);
    assert_eq!(web1.user.as_deref(), Some("FLEET\\ops"));
    assert_eq!(web1.password, env("FLEET_PASSWORD"));
    assert_eq!(web1.url(), "https://web01.fleet.test:5986/wsman");
    // web02 is in web and db (both depth 2): "web" sorts last, so it is the nearest group,
    // but only db sets the transport.
    let web2 = &hosts["web02.fleet.test"];
    assert_eq!(web2.groups, ["web", "db", "windows", "all"]);
    assert_eq!(web2.authentication, Authentication::Kerberos);
    assert_eq!(web2.password, Some(SecretRef::KerberosCache));
    assert_eq!(
        web2.address,
        Some(Address::Ip("10.0.0.12".parse().unwrap()))
    );
    assert_eq!(web2.vars["owner"], "team-web");
    assert_eq!(
        hosts["db01.fleet.test"].cert_validation,
        CertValidation::Ignore
    );
    let dc = &hosts["dc01.corp.test"];
    assert_eq!(
        (dc.scheme, dc.port, dc.authentication, dc.user.clone()),
        (Scheme::Http, 5985, Authentication::Negotiate, None)
    );
    assert_eq!(dc.groups, ["dc", "all"]);
    assert_eq!(
        inventory
            .host("dc01.corp.test")
            .unwrap()
            .location()
            .to_string(),
        format!("{}:32:9", example("hosts.yml").display())
    );
}

#[test]
fn several_sources_merge_into_one_inventory() {
    let sources = [example("hosts.ini"), example("hosts.yml")];
    let sources: Vec<&str> = sources.iter().map(|p| p.to_str().unwrap()).collect();
    let inventory = load(&sources, None).unwrap();
    // jump, web01..04, db01, db02 from INI; dc01 new from YAML; the rest merge.
    assert_eq!(inventory.len(), 8);
    assert_eq!(
        inventory.host_groups("web02.fleet.test").unwrap(),
        ["web", "db", "windows", "all"]
    );
    let hosts = resolve(
        &inventory,
        &Overrides {
            limit: Some(Pattern::parse("web02*").unwrap()),
            ..Default::default()
        },
        &Defaults::default(),
    )
    .unwrap();
    // The YAML (loaded second) set ansible_connection=winrm on all, the INI psrp on windows:
    // windows is nearer, so psrp names apply; the YAML's ansible_winrm_transport is ignored
    // and db's ansible_psrp_auth=kerberos (from the INI) decides.
    assert_eq!(hosts[0].vars["ansible_connection"], "psrp");
    assert_eq!(hosts[0].authentication, Authentication::Kerberos);
    assert_eq!(
        hosts[0].address,
        Some(Address::Ip("10.0.0.12".parse().unwrap()))
    );
}

/// Walks PyYAML's reading of a YAML inventory with Ansible's yaml-plugin rules: hosts per
/// group (descendants included), host variables and group variables, as JSON.
const PYYAML_WALK: &str = r#"
import json, sys, yaml
data = yaml.safe_load(open(sys.argv[1]))
direct, children, host_vars, group_vars = {"all": set(), "ungrouped": set()}, {}, {}, {}
def text(value):
    return "" if value is None else str(value)
def group(name, body):
    direct.setdefault(name, set())
    children.setdefault(name, [])
    if not isinstance(body, dict):
        return
    for key, value in body.items():
        if key == "vars":
            group_vars.setdefault(name, {}).update({k: text(v) for k, v in (value or {}).items()})
        elif key == "hosts":
            value = {value: None} if isinstance(value, str) else (value or {})
            for host, hv in value.items():
                direct[name].add(host)
                host_vars.setdefault(host, {}).update({k: text(v) for k, v in (hv or {}).items()})
        elif key == "children":
            for child, child_body in (value or {}).items():
                group(child, child_body)
                children[name].append(child)
for name, body in data.items():
    group(name, body)
def members(name):
    found = set(direct[name])
    for child in children.get(name, []):
        found |= members(child)
    return found
hosts = set(host_vars)
named = set().union(*[members(g) for g in direct if g not in ("all", "ungrouped")])
groups = {g: sorted(members(g)) for g in direct}
groups["all"] = sorted(hosts)
groups["ungrouped"] = sorted((hosts - named) | direct["ungrouped"])
print(json.dumps({"groups": groups, "host_vars": host_vars, "group_vars": group_vars}))
"#;

#[test]
fn yaml_example_agrees_with_pyyaml() {
    let Some(python) = python("yaml_example_agrees_with_pyyaml") else {
        return;
    };
    let path = example("hosts.yml");
    let output = Command::new(python)
        .arg("-c")
        .arg(PYYAML_WALK)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let inventory = load(&[path.to_str().unwrap()], Some(Format::Yaml)).unwrap();

    let their_groups = theirs["groups"].as_object().unwrap();
    let our_groups: BTreeSet<&str> = inventory.groups().map(|g| g.name()).collect();
    assert_eq!(
        our_groups,
        their_groups
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
    );
    let mut checked = 0;
    for (group, hosts) in their_groups {
        let mut ours: Vec<&str> = inventory.group_hosts(group).unwrap();
        ours.sort_unstable();
        let theirs: Vec<&str> = hosts
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert_eq!(ours, theirs, "hosts of group {group}");
        checked += theirs.len();
    }
    for (host, vars) in theirs["host_vars"].as_object().unwrap() {
        let ours: BTreeMap<&str, &str> = inventory
            .host(host)
            .unwrap()
            .vars()
            .iter()
            .map(|(k, v)| (k.as_str(), v.value.as_str()))
            .collect();
        let theirs: BTreeMap<&str, &str> = vars
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        assert_eq!(ours, theirs, "variables of host {host}");
    }
    for (group, vars) in theirs["group_vars"].as_object().unwrap() {
        let ours: BTreeMap<&str, &str> = inventory
            .group(group)
            .unwrap()
            .vars()
            .iter()
            .map(|(k, v)| (k.as_str(), v.value.as_str()))
            .collect();
        let theirs: BTreeMap<&str, &str> = vars
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        assert_eq!(ours, theirs, "variables of group {group}");
    }
    let _ = writeln!(
        std::io::stdout(),
        "inventories: yaml example agrees with PyYAML: {} groups, {checked} group memberships, {} hosts",
        their_groups.len(),
        inventory.len()
    );
}

#[test]
fn malformed_inventories_fail_with_file_and_line() {
    // (format, text, the line the error must name)
    let cases: &[(Format, &str, usize)] = &[
        (Format::Csv, "address,port\n1.2.3.4,5985\n", 1),
        (Format::Csv, "name,,port\n", 1),
        (Format::Csv, "name,hostname\nsrv1,srv1\n", 1),
        (Format::Csv, "name,port\nsrv1,5985\n\nsrv2,5985,extra\n", 4),
        (Format::Csv, "name,port\nsrv1\n", 2),
        (Format::Csv, "name,port\n# c\n,5985\n", 3),
        (Format::Csv, "name,password\nsrv1,hunter2\n", 2),
        (Format::Csv, "name,group\nsrv1,web:prod\n", 2),
        (Format::Csv, "name\nbad host\n", 2),
        (Format::Csv, "name,port\nsrv1,abc\n", 2),
        (Format::Csv, "name,ansible_connection\nsrv1,ssh\n", 2),
        (Format::Text, "srv1 ansible_port=1\n", 1),
        (Format::Text, "a\nsrv1,srv2\n", 2),
        (Format::Text, "a\nb\nsrv[1:\n", 3),
        (Format::Text, "srv1:0\n", 1),
        (Format::Text, "srv1:65536\n", 1),
        (Format::Text, "\n\nweb[5:1]\n", 3),
        (Format::Text, "web[01:1000]\n", 1),
        (Format::Text, "web[1:2:0]\n", 1),
        (Format::Text, "srv]1\n", 1),
        (Format::Text, "web[a:9]\n", 1),
        (Format::Ini, "[web:hosts2]\n", 1),
        (Format::Ini, "[web]\nw1\n[bad group]\n", 3),
        (Format::Ini, "[web]\nw1 ansible_port\n", 2),
        (Format::Ini, "[web]\nw1\n[web:vars]\nport 5986\n", 4),
        (Format::Ini, "[web:children]\nbad group\n", 2),
        (Format::Ini, "[web]\nw1 owner='Team A\n", 2),
        (Format::Ini, "[x]\nh\n[web:vars]\na=1\n", 3),
        (Format::Ini, "[web]\nw1\n[prod:children]\nweb\ndb\n", 5),
        (Format::Ini, "---\nall:\n", 1),
        (Format::Ini, "[web]\nw1:\n", 2),
        (
            Format::Ini,
            "[a:children]\nb\n[b:children]\na\n[a]\n[b]\n",
            4,
        ),
        (Format::Ini, "[web]\nw1 ansible_password=Secret1\n", 2),
        (Format::Ini, "[web]\nw1\n[web:vars]\nansible_port=http\n", 4),
        (Format::Yaml, "- srv1\n", 1),
        (Format::Yaml, "all:\n  hosts:\n    - srv1\n", 3),
        (Format::Yaml, "all:\n  vars: [a]\n", 2),
        (Format::Yaml, "all:\n  hosts:\n    srv1: [a]\n", 3),
        (
            Format::Yaml,
            "all:\n  hosts:\n    srv1:\n      ansible_password: Secret1\n",
            4,
        ),
        (Format::Yaml, "all:\n  hosts:\n    srv1:\n  bad: [\n", 5),
        (Format::Yaml, "all: {hosts: {a: }}\n---\nb: {}\n", 2),
        (Format::Yaml, "plugin: aws_ec2\n", 1),
        (
            Format::Yaml,
            "all:\n  children:\n    web:\n      hosts:\n        w[3:1]:\n",
            5,
        ),
        (
            Format::Yaml,
            "all:\n  children:\n    a:\n      children:\n        all:\n",
            5,
        ),
        (Format::Yaml, "x: *nope\n", 1),
        (
            Format::Yaml,
            "all:\n  hosts:\n    srv1:\n      ansible_winrm_scheme: ftp\n",
            4,
        ),
        (
            Format::Yaml,
            "all:\n  hosts:\n    srv1:\n      ansible_connection: local\n",
            4,
        ),
    ];
    let mut per_format: BTreeMap<&str, usize> = BTreeMap::new();
    for (format, text, line) in cases {
        let name = format!("bad.{}", format.name());
        let mut inventory = Inventory::default();
        let error = inventory
            .load_str(&name, text, Some(*format))
            .and_then(|()| {
                resolve(&inventory, &Overrides::default(), &Defaults::default()).map(|_| ())
            })
            .expect_err(text);
        let location = error
            .location()
            .unwrap_or_else(|| panic!("{text:?}: no location in {error}"));
        assert_eq!(
            (location.file.as_ref(), location.line),
            (name.as_str(), *line),
            "{text:?}: {error}"
        );
        assert!(
            error.to_string().starts_with(&format!("{name}:{line}")),
            "{error}"
        );
        *per_format.entry(format.name()).or_default() += 1;
    }
    assert!(per_format.values().all(|&n| n >= 10), "{per_format:?}");
    let _ = writeln!(
        std::io::stdout(),
        "inventories: malformed cases with file:line errors {per_format:?}"
    );
}

/// The venv interpreter from `PSFLEET_PYTHON`, or `None` after printing a skip line (a
/// failure under `CI=true`, where the venv is always there).
fn python(test: &str) -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("PSFLEET_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "{test}: PSFLEET_PYTHON is unset (scripts/test sets it); under CI=true this fails the run"
    );
    println!("{test}: skipped, PSFLEET_PYTHON is unset (run scripts/test to set up the venv)");
    None
}

/// `psfleet sim` writes `inventory.csv` and `inventory.yml` for its fleets; both must read
/// back into the hosts the simulator planned (every row of the `mixed` profile: every failure
/// bucket's class, odd names, JEA configurations, https, kerberos users).
#[test]
fn simulator_inventories_read_back_into_the_planned_hosts() {
    use psfleet_sim::profile::{PlanOptions, Profile, default_accounts};

    let accounts = default_accounts(7);
    let planned = Profile::load("mixed")
        .unwrap()
        .plan(&PlanOptions {
            hosts: 300,
            seed: 7,
            first_address: "127.20.0.1".parse().unwrap(),
            latency: None,
            accounts: &accounts,
        })
        .unwrap();
    let rows: Vec<_> = planned.into_iter().map(|p| p.row).collect();
    let csv = psfleet_sim::outputs::inventory_csv(&rows);
    let yaml = psfleet_sim::outputs::inventory_yaml(&rows);

    for (name, bytes, expected_var) in [
        ("inventory.csv", &csv, "expected"),
        ("inventory.yml", &yaml, "psfleet_expected"),
    ] {
        let mut inventory = Inventory::default();
        inventory
            .load_bytes(name, bytes, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let hosts = resolve(&inventory, &Overrides::default(), &Defaults::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hosts.len(), rows.len(), "{name}");
        // The YAML lists hosts class by class, the CSV in plan order: compare by name.
        let by_name: BTreeMap<&str, &Host> = hosts.iter().map(|h| (h.name.as_str(), h)).collect();
        for row in &rows {
            let what = format!("{name}: {}", row.name);
            let host = by_name
                .get(row.name.as_str())
                .unwrap_or_else(|| panic!("{what} missing"));
            assert_eq!(
                host.address,
                row.address.map(|a| Address::Ip(a.into())),
                "{what}"
            );
            assert_eq!(
                (host.scheme.as_str(), host.port),
                (row.scheme, row.port),
                "{what}"
            );
            assert_eq!(host.authentication.as_str(), row.authentication, "{what}");
            assert_eq!(host.configuration_name, row.configuration_name, "{what}");
            assert_eq!(host.user, row.user, "{what}");
            assert_eq!(host.groups, [row.group.as_str(), "all"], "{what}");
            assert_eq!(host.vars[expected_var], row.expected, "{what}");
        }
    }
    let classes: BTreeSet<&str> = rows.iter().map(|r| r.group.as_str()).collect();
    let _ = writeln!(
        std::io::stdout(),
        "inventories: simulator CSV and YAML inventories read back: {} hosts, {} classes",
        rows.len(),
        classes.len()
    );
}

/// Python's `shlex.split(comments=True)` and Ansible's `_parse_value` (`ast.literal_eval`,
/// falling back to the text) on the same inputs as psfleet's INI reader.
const PYTHON_INI: &str = r#"
import ast, json, shlex, sys, warnings
cases = json.load(sys.stdin)
out = {"split": [], "values": []}
for line in cases["lines"]:
    try:
        out["split"].append(shlex.split(line, comments=True))
    except ValueError:
        out["split"].append(None)
for raw in cases["values"]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = raw
    if value is None:
        out["values"].append("")
    elif isinstance(value, (str, bool, int)):
        out["values"].append(str(value))
    else:
        out["values"].append(None)  # floats, lists, dicts: psfleet keeps the text
print(json.dumps(out))
"#;

#[test]
fn ini_splitting_and_values_agree_with_python() {
    let Some(python) = python("ini_splitting_and_values_agree_with_python") else {
        return;
    };
    let lines = [
        "srv1",
        "srv1 a=1 b=2",
        "srv1 owner='Team A' note=\"x y\"",
        "srv1 x=1#comment",
        "srv1 x=1 # comment",
        "srv1 #all comment",
        "srv1 p=\"a\\\"b\" q='c\\d'",
        "srv1 p=\"back\\\\slash\" q=\"keep\\n\"",
        "srv1 r=a\\ b s=\\#x",
        "srv1 empty='' other=\"\"",
        "srv1 mix=a'b c'd\"e f\"",
        "srv1\tt=1\t\tu=2",
        "srv1 user=FLEET\\ops",
        "srv1 user='FLEET\\ops'",
        "srv1 bad='unclosed",
        "srv1 bad=\"unclosed",
        "srv1 trailing\\",
        "srv1 ünï=cödé",
        "srv1 x==y",
        "  srv1   spaced=  ",
    ];
    let values = [
        "5986",
        "'5986'",
        "\"quoted\"",
        "'03#pa33w0rd'",
        "0x1656",
        "0o17",
        "0b101",
        "1_000",
        "-5",
        "+7",
        "0755",
        "00",
        "True",
        "False",
        "None",
        "true",
        "ntlm",
        "10.0.0.1",
        "FLEET\\ops",
        "'a\\'b'",
        "'tab\\there'",
        "'x' 'y'",
        "http_port # c",
        "8080 # note",
        "'a # b' # c",
        "abc # note",
        "[1, 2]",
        "'",
        "\"",
        "",
    ];
    let input = serde_json::json!({ "lines": lines, "values": values });
    let mut child = Command::new(python)
        .arg("-c")
        .arg(PYTHON_INI)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    for (line, expected) in lines.iter().zip(theirs["split"].as_array().unwrap()) {
        let expected: Option<Vec<String>> = serde_json::from_value(expected.clone()).unwrap();
        assert_eq!(
            psfleet_inventories::fuzzing::ini_split(line),
            expected,
            "shlex.split({line:?})"
        );
    }
    let mut compared = 0;
    for (raw, expected) in values.iter().zip(theirs["values"].as_array().unwrap()) {
        // The :vars reading keeps comments after plain text, as literal_eval's fallback does.
        let ours = psfleet_inventories::fuzzing::ini_value(raw, true);
        match expected.as_str() {
            Some(expected) => {
                assert_eq!(ours, expected, "_parse_value({raw:?})");
                compared += 1;
            }
            None => assert_eq!(
                ours,
                raw.split(" #").next().unwrap_or(raw).trim(),
                "{raw:?}"
            ),
        }
    }
    let _ = writeln!(
        std::io::stdout(),
        "inventories: INI splitting agrees with shlex on {} lines, values with literal_eval on {compared}",
        lines.len()
    );
}

#[test]
fn limit_globs_agree_with_python_fnmatch() {
    let Some(python) = python("limit_globs_agree_with_python_fnmatch") else {
        return;
    };
    let globs = [
        "srv*",
        "srv00?",
        "web-??",
        "db[12]*",
        "x[!a-c]y",
        "*.corp.test",
        "[",
        "a[]b]c",
        "a[!]]c",
        "a[b",
        "**",
        "*[0-9]",
        "w*b*",
        "a.b",
        "a+b",
        "(x)",
        "[a-]z",
        "[-a]z",
        "a\\b",
        "ü*",
        "[!x]",
        "?",
    ];
    let names = [
        "srv001",
        "srv0010",
        "web-01",
        "db1x",
        "db3",
        "xdy",
        "xby",
        "dc1.corp.test",
        "corp.test",
        "[",
        "abc",
        "a]c",
        "a[b",
        "",
        "w1b2",
        "a.b",
        "axb",
        "a+b",
        "(x)",
        "-z",
        "az",
        "a\\b",
        "übung",
        "x",
        "y",
        "9",
    ];
    let script = "import fnmatch, json, sys\nc = json.load(sys.stdin)\nprint(json.dumps([[fnmatch.fnmatchcase(n, g) for n in c['names']] for g in c['globs']]))";
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::json!({ "globs": globs, "names": names });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let theirs: Vec<Vec<bool>> = serde_json::from_slice(&output.stdout).unwrap();
    let mut compared = 0;
    for (glob, row) in globs.iter().zip(&theirs) {
        for (name, expected) in names.iter().zip(row) {
            let ours = psfleet_inventories::fuzzing::glob_matches(glob, name);
            assert_eq!(ours, Some(*expected), "fnmatchcase({name:?}, {glob:?})");
            compared += 1;
        }
    }
    let _ = writeln!(
        std::io::stdout(),
        "inventories: --limit globs agree with fnmatch on {compared} pairs"
    );
}
