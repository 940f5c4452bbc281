//! The commands of the subset: parameter binding (names, unambiguous prefixes, aliases,
//! switches, positions, the common parameters) and each cmdlet's behaviour.
//!
//! Commands that take pipeline input and must see it item by item (Where-Object,
//! ForEach-Object, Select-Object, Sort-Object, Measure-Object, Out-Null, Out-String) are
//! [`Stage`]s; any other command later in a pipeline receives its input when the input is
//! complete.

use std::rc::Rc;
use std::time::Duration;

use psfleet_core::psrp::clixml::{Property, Value};
use psfleet_core::psrp::messages::{
    ERROR_CATEGORY_NAMES, InformationalKind, ProgressRecord, ProgressRecordType,
};

use super::eval::{Action, Engine, Flow, R, collapse};
use super::objects;
use super::ops;
use super::records::{self, CmdletError, WriteErrorSpec};
use super::syntax::{Arg, Block, Command, CommandName};
use super::values::{Val, has_wildcards, to_number, to_str, truthy, wildcard_match};
use super::{ScriptEvent, cmd};

/// A parameter: its name, aliases, and the type named in binding errors (`None` for a
/// switch).
struct Param {
    name: &'static str,
    aliases: &'static [&'static str],
    kind: Option<&'static str>,
}

const fn p(name: &'static str, kind: &'static str) -> Param {
    Param {
        name,
        aliases: &[],
        kind: Some(kind),
    }
}

const fn pa(name: &'static str, aliases: &'static [&'static str], kind: &'static str) -> Param {
    Param {
        name,
        aliases,
        kind: Some(kind),
    }
}

const fn sw(name: &'static str) -> Param {
    Param {
        name,
        aliases: &[],
        kind: None,
    }
}

/// A command's binding facts.
struct Spec {
    name: &'static str,
    /// .NET type (the suffix of binding errors' FullyQualifiedErrorId).
    type_name: &'static str,
    params: &'static [Param],
    /// Parameters bound by position, in order; `Rest` takes all remaining values.
    positions: &'static [&'static str],
    rest: bool,
}

const COMMON: &[Param] = &[
    pa(
        "ErrorAction",
        &["ea"],
        "System.Management.Automation.ActionPreference",
    ),
    pa(
        "WarningAction",
        &["wa"],
        "System.Management.Automation.ActionPreference",
    ),
    pa(
        "InformationAction",
        &["infa"],
        "System.Management.Automation.ActionPreference",
    ),
    Param {
        name: "Verbose",
        aliases: &["vb"],
        kind: None,
    },
    Param {
        name: "Debug",
        aliases: &["db"],
        kind: None,
    },
    pa("ErrorVariable", &["ev"], "System.String"),
    pa("WarningVariable", &["wv"], "System.String"),
    pa("InformationVariable", &["iv"], "System.String"),
    pa("OutVariable", &["ov"], "System.String"),
    pa("OutBuffer", &["ob"], "System.Int32"),
    pa("PipelineVariable", &["pv"], "System.String"),
];

const OBJ: &str = "System.Object";
const OBJS: &str = "System.Object[]";
const STR: &str = "System.String";
const STRS: &str = "System.String[]";
const INT: &str = "System.Int32";

const WHERE_OPS: [&str; 30] = [
    "EQ",
    "CEQ",
    "NE",
    "CNE",
    "GT",
    "CGT",
    "GE",
    "CGE",
    "LT",
    "CLT",
    "LE",
    "CLE",
    "Like",
    "CLike",
    "NotLike",
    "CNotLike",
    "Match",
    "CMatch",
    "NotMatch",
    "CNotMatch",
    "Contains",
    "CContains",
    "NotContains",
    "CNotContains",
    "In",
    "CIn",
    "NotIn",
    "CNotIn",
    "Is",
    "IsNot",
];

const SPECS: &[Spec] = &[
    Spec {
        name: "Write-Output",
        type_name: "Microsoft.PowerShell.Commands.WriteOutputCommand",
        params: &[
            p("InputObject", "System.Management.Automation.PSObject[]"),
            sw("NoEnumerate"),
        ],
        positions: &["InputObject"],
        rest: true,
    },
    Spec {
        name: "Write-Host",
        type_name: "Microsoft.PowerShell.Commands.WriteHostCommand",
        params: &[
            pa("Object", &["Msg", "Message"], OBJ),
            sw("NoNewline"),
            p("Separator", OBJ),
            p("ForegroundColor", "System.ConsoleColor"),
            p("BackgroundColor", "System.ConsoleColor"),
        ],
        positions: &["Object"],
        rest: true,
    },
    Spec {
        name: "Write-Error",
        type_name: "Microsoft.PowerShell.Commands.WriteErrorCommand",
        params: &[
            pa("Message", &["Msg"], STR),
            p("Category", "System.Management.Automation.ErrorCategory"),
            p("ErrorId", STR),
            p("TargetObject", OBJ),
            p("Exception", "System.Exception"),
            p("ErrorRecord", "System.Management.Automation.ErrorRecord"),
            p("RecommendedAction", STR),
            pa("CategoryActivity", &["Activity"], STR),
            pa("CategoryReason", &["Reason"], STR),
            pa("CategoryTargetName", &["TargetName"], STR),
            pa("CategoryTargetType", &["TargetType"], STR),
        ],
        positions: &["Message"],
        rest: false,
    },
    Spec {
        name: "Write-Warning",
        type_name: "Microsoft.PowerShell.Commands.WriteWarningCommand",
        params: &[pa("Message", &["Msg"], STR)],
        positions: &["Message"],
        rest: false,
    },
    Spec {
        name: "Write-Verbose",
        type_name: "Microsoft.PowerShell.Commands.WriteVerboseCommand",
        params: &[pa("Message", &["Msg"], STR)],
        positions: &["Message"],
        rest: false,
    },
    Spec {
        name: "Write-Debug",
        type_name: "Microsoft.PowerShell.Commands.WriteDebugCommand",
        params: &[pa("Message", &["Msg"], STR)],
        positions: &["Message"],
        rest: false,
    },
    Spec {
        name: "Write-Information",
        type_name: "Microsoft.PowerShell.Commands.WriteInformationCommand",
        params: &[pa("MessageData", &["Msg", "Message"], OBJ), p("Tags", STRS)],
        positions: &["MessageData", "Tags"],
        rest: false,
    },
    Spec {
        name: "Write-Progress",
        type_name: "Microsoft.PowerShell.Commands.WriteProgressCommand",
        params: &[
            p("Activity", STR),
            p("Status", STR),
            p("Id", INT),
            p("PercentComplete", INT),
            p("SecondsRemaining", INT),
            p("CurrentOperation", STR),
            p("ParentId", INT),
            sw("Completed"),
            p("SourceId", INT),
        ],
        positions: &["Activity", "Status", "Id"],
        rest: false,
    },
    Spec {
        name: "Start-Sleep",
        type_name: "Microsoft.PowerShell.Commands.StartSleepCommand",
        params: &[pa("Seconds", &["s"], INT), pa("Milliseconds", &["ms"], INT)],
        positions: &["Seconds"],
        rest: false,
    },
    Spec {
        name: "Get-Date",
        type_name: "Microsoft.PowerShell.Commands.GetDateCommand",
        params: &[
            pa("Date", &["LastWriteTime"], "System.DateTime"),
            p("Format", STR),
            p("UFormat", STR),
            p(
                "DisplayHint",
                "Microsoft.PowerShell.Commands.DisplayHintType",
            ),
        ],
        positions: &["Date"],
        rest: false,
    },
    Spec {
        name: "Get-Service",
        type_name: "Microsoft.PowerShell.Commands.GetServiceCommand",
        params: &[
            pa("Name", &["ServiceName"], STRS),
            p("DisplayName", STRS),
            p("Include", STRS),
            p("Exclude", STRS),
            pa("ComputerName", &["Cn"], STRS),
            pa("DependentServices", &["DS"], "switch"),
            pa("RequiredServices", &["SDO", "ServicesDependedOn"], "switch"),
            p("InputObject", "System.ServiceProcess.ServiceController[]"),
        ],
        positions: &["Name"],
        rest: false,
    },
    Spec {
        name: "Get-HotFix",
        type_name: "Microsoft.PowerShell.Commands.GetHotFixCommand",
        params: &[
            pa("Id", &["HFID"], STRS),
            p("Description", STRS),
            pa("ComputerName", &["CN", "__Server", "IPAddress"], STRS),
            p("Credential", "System.Management.Automation.PSCredential"),
        ],
        positions: &["Id"],
        rest: false,
    },
    Spec {
        name: "Get-CimInstance",
        type_name: "Microsoft.Management.Infrastructure.CimCmdlets.GetCimInstanceCommand",
        params: &[
            pa("ClassName", &["Class"], STR),
            p("Namespace", STR),
            p("Filter", STR),
            p("Query", STR),
            pa("ComputerName", &["CN", "ServerName"], STRS),
            pa("Property", &["SelectProperties"], STRS),
            sw("KeyOnly"),
            sw("Shallow"),
            p("OperationTimeoutSec", "System.UInt32"),
        ],
        positions: &["ClassName"],
        rest: false,
    },
    Spec {
        name: "Get-WmiObject",
        type_name: "Microsoft.PowerShell.Commands.GetWmiObjectCommand",
        params: &[
            p("Class", STR),
            pa("Namespace", &["NS"], STR),
            p("Filter", STR),
            p("Query", STR),
            pa("ComputerName", &["Cn"], STRS),
            p("Property", STRS),
        ],
        positions: &["Class", "Property"],
        rest: false,
    },
    Spec {
        name: "Select-Object",
        type_name: "Microsoft.PowerShell.Commands.SelectObjectCommand",
        params: &[
            p("Property", OBJS),
            p("First", INT),
            p("Last", INT),
            p("Skip", INT),
            p("ExpandProperty", STR),
            sw("Unique"),
            p("ExcludeProperty", STRS),
            p("Index", "System.Int32[]"),
            p("InputObject", "System.Management.Automation.PSObject"),
        ],
        positions: &["Property"],
        rest: false,
    },
    Spec {
        name: "Where-Object",
        type_name: "Microsoft.PowerShell.Commands.WhereObjectCommand",
        params: &[
            p("FilterScript", "System.Management.Automation.ScriptBlock"),
            p("Property", STR),
            p("Value", OBJ),
            p("InputObject", "System.Management.Automation.PSObject"),
            sw("EQ"),
            sw("CEQ"),
            sw("NE"),
            sw("CNE"),
            sw("GT"),
            sw("CGT"),
            sw("GE"),
            sw("CGE"),
            sw("LT"),
            sw("CLT"),
            sw("LE"),
            sw("CLE"),
            sw("Like"),
            sw("CLike"),
            sw("NotLike"),
            sw("CNotLike"),
            sw("Match"),
            sw("CMatch"),
            sw("NotMatch"),
            sw("CNotMatch"),
            sw("Contains"),
            sw("CContains"),
            sw("NotContains"),
            sw("CNotContains"),
            sw("In"),
            sw("CIn"),
            sw("NotIn"),
            sw("CNotIn"),
            sw("Is"),
            sw("IsNot"),
        ],
        positions: &["FilterScript", "Value"],
        rest: false,
    },
    Spec {
        name: "ForEach-Object",
        type_name: "Microsoft.PowerShell.Commands.ForEachObjectCommand",
        params: &[
            p("Process", "System.Management.Automation.ScriptBlock[]"),
            p("Begin", "System.Management.Automation.ScriptBlock"),
            p("End", "System.Management.Automation.ScriptBlock"),
            p("MemberName", STR),
            pa("ArgumentList", &["Args"], OBJS),
            p("InputObject", "System.Management.Automation.PSObject"),
        ],
        positions: &["Process"],
        rest: true,
    },
    Spec {
        name: "Measure-Object",
        type_name: "Microsoft.PowerShell.Commands.MeasureObjectCommand",
        params: &[
            p("Property", STRS),
            sw("Sum"),
            sw("Average"),
            sw("Maximum"),
            sw("Minimum"),
            sw("Line"),
            sw("Word"),
            sw("Character"),
            sw("IgnoreWhiteSpace"),
            p("InputObject", "System.Management.Automation.PSObject"),
        ],
        positions: &["Property"],
        rest: false,
    },
    Spec {
        name: "Sort-Object",
        type_name: "Microsoft.PowerShell.Commands.SortObjectCommand",
        params: &[
            p("Property", OBJS),
            sw("Descending"),
            sw("Unique"),
            sw("CaseSensitive"),
            p("Culture", STR),
            p("InputObject", "System.Management.Automation.PSObject"),
        ],
        positions: &["Property"],
        rest: false,
    },
    Spec {
        name: "Out-Null",
        type_name: "Microsoft.PowerShell.Commands.OutNullCommand",
        params: &[p("InputObject", "System.Management.Automation.PSObject")],
        positions: &[],
        rest: false,
    },
    Spec {
        name: "Out-String",
        type_name: "Microsoft.PowerShell.Commands.OutStringCommand",
        params: &[
            sw("Stream"),
            p("Width", INT),
            p("InputObject", "System.Management.Automation.PSObject"),
        ],
        positions: &[],
        rest: false,
    },
    Spec {
        name: "Out-Default",
        type_name: "Microsoft.PowerShell.Commands.OutDefaultCommand",
        params: &[
            p("InputObject", "System.Management.Automation.PSObject"),
            sw("Transcript"),
        ],
        positions: &[],
        rest: false,
    },
    Spec {
        name: "Set-Variable",
        type_name: "Microsoft.PowerShell.Commands.SetVariableCommand",
        params: &[
            p("Name", STRS),
            p("Value", OBJ),
            sw("PassThru"),
            p("Scope", STR),
            p("Option", OBJ),
        ],
        positions: &["Name", "Value"],
        rest: false,
    },
    Spec {
        name: "Get-Variable",
        type_name: "Microsoft.PowerShell.Commands.GetVariableCommand",
        params: &[p("Name", STRS), sw("ValueOnly"), p("Scope", STR)],
        positions: &["Name"],
        rest: false,
    },
    Spec {
        name: "Invoke-Expression",
        type_name: "Microsoft.PowerShell.Commands.InvokeExpressionCommand",
        params: &[p("Command", STR)],
        positions: &["Command"],
        rest: false,
    },
    Spec {
        name: "New-Object",
        type_name: "Microsoft.PowerShell.Commands.NewObjectCommand",
        params: &[
            p("TypeName", STR),
            pa("ArgumentList", &["Args"], OBJS),
            p("Property", "System.Collections.IDictionary"),
        ],
        positions: &["TypeName", "ArgumentList"],
        rest: false,
    },
];

/// Alias (lower case) to command name.
const ALIASES: [(&str, &str); 18] = [
    ("iex", "Invoke-Expression"),
    ("echo", "Write-Output"),
    ("write", "Write-Output"),
    ("gsv", "Get-Service"),
    ("?", "Where-Object"),
    ("where", "Where-Object"),
    ("%", "ForEach-Object"),
    ("foreach", "ForEach-Object"),
    ("select", "Select-Object"),
    ("sort", "Sort-Object"),
    ("measure", "Measure-Object"),
    ("sleep", "Start-Sleep"),
    ("gwmi", "Get-WmiObject"),
    ("gcim", "Get-CimInstance"),
    ("oh", "Out-Default"),
    ("out-host", "Out-Default"),
    ("set", "Set-Variable"),
    ("sv", "Set-Variable"),
];

/// Native programs the subset runs (on the simulated host's `Path`).
const NATIVES: [&str; 4] = ["hostname", "whoami", "ipconfig", "cmd"];

fn spec(name: &str) -> Option<&'static Spec> {
    let lower = name.to_ascii_lowercase();
    let resolved = ALIASES
        .iter()
        .find(|(a, _)| *a == lower)
        .map_or(name, |(_, n)| *n);
    SPECS.iter().find(|s| s.name.eq_ignore_ascii_case(resolved))
}

/// Arguments bound to a command.
#[derive(Default)]
pub(crate) struct Bound {
    named: Vec<(&'static str, Val)>,
    positional: Vec<Val>,
}

impl Bound {
    fn get(&self, name: &str) -> Option<&Val> {
        self.named
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some_and(truthy)
    }

    fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(to_str)
    }

    fn action(&self) -> Option<Action> {
        self.text("ErrorAction").and_then(|t| Action::parse(&t))
    }
}

fn binding_error(e: &mut Engine<'_>, spec: &Spec, message: String, fqid: &str) -> Flow {
    let (start, end) = e.cur;
    let record =
        records::parameter_binding(message, fqid, spec.name, spec.type_name, e.site(start, end));
    e.fail(record)
}

/// Finds a parameter by name, alias or unambiguous prefix (PowerShell's binder rules);
/// `Err` carries the candidates when there are none or several.
fn resolve_param(spec: &'static Spec, name: &str) -> Result<&'static Param, Vec<&'static str>> {
    let all = || spec.params.iter().chain(COMMON.iter());
    if let Some(p) = all().find(|p| {
        p.name.eq_ignore_ascii_case(name) || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }) {
        return Ok(p);
    }
    let lower = name.to_ascii_lowercase();
    let matches: Vec<&'static Param> = all()
        .filter(|p| p.name.to_ascii_lowercase().starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        many => Err(many.iter().map(|p| p.name).collect()),
    }
}

/// Binds a command's arguments.
fn bind(e: &mut Engine<'_>, spec: &'static Spec, args: &[Arg]) -> R<Bound> {
    let mut bound = Bound::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        match arg {
            Arg::Value(expr) => {
                let v = e.eval(expr)?;
                bound.positional.push(v);
            }
            Arg::Splat(name) => match e.var(name).unwrap_or_else(Val::null) {
                Val::Table(t) => {
                    for (k, v) in t.entries {
                        let key = k.display_text().into_owned();
                        match resolve_param(spec, &key) {
                            Ok(p) => bound.named.push((p.name, v)),
                            Err(_) => {
                                return Err(binding_error(
                                    e,
                                    spec,
                                    format!(
                                        "A parameter cannot be found that matches parameter name '{key}'."
                                    ),
                                    "NamedParameterNotFound",
                                ));
                            }
                        }
                    }
                }
                other => bound.positional.extend(other.enumerate()),
            },
            Arg::Param { name, value } => {
                let param = match resolve_param(spec, name) {
                    Ok(p) => p,
                    Err(candidates) if candidates.is_empty() => {
                        return Err(binding_error(
                            e,
                            spec,
                            format!(
                                "A parameter cannot be found that matches parameter name '{name}'."
                            ),
                            "NamedParameterNotFound",
                        ));
                    }
                    Err(candidates) => {
                        return Err(binding_error(
                            e,
                            spec,
                            format!(
                                "Parameter cannot be processed because the parameter name '{name}' is ambiguous. Possible matches include: -{}.",
                                candidates.join(" -")
                            ),
                            "AmbiguousParameter",
                        ));
                    }
                };
                let v = match (value, param.kind) {
                    (Some(expr), _) => e.eval(expr)?,
                    (None, None) | (None, Some("switch")) => Val::bool(true),
                    (None, Some(kind)) => match args.get(i) {
                        Some(Arg::Value(expr)) => {
                            i += 1;
                            e.eval(expr)?
                        }
                        _ => {
                            return Err(binding_error(
                                e,
                                spec,
                                format!(
                                    "Missing an argument for parameter '{}'. Specify a parameter of type '{kind}' and try again.",
                                    param.name
                                ),
                                "MissingArgument",
                            ));
                        }
                    },
                };
                bound.named.push((param.name, v));
            }
        }
    }
    // Assign positional values to the positional parameters not bound by name.
    let mut free = spec
        .positions
        .iter()
        .filter(|n| bound.get(n).is_none())
        .copied()
        .collect::<Vec<_>>()
        .into_iter();
    let positional = std::mem::take(&mut bound.positional);
    let mut rest = Vec::new();
    for v in positional {
        match free.next() {
            Some(name) => bound.named.push((name, v)),
            None => rest.push(v),
        }
    }
    if !rest.is_empty() {
        if spec.rest {
            bound.positional = rest;
        } else {
            let arg = to_str(&rest[0]);
            return Err(binding_error(
                e,
                spec,
                format!("A positional parameter cannot be found that accepts argument '{arg}'."),
                "PositionalParameterNotFound",
            ));
        }
    }
    Ok(bound)
}

/// Runs a command; its output goes to the engine's current output.
pub(crate) fn invoke(e: &mut Engine<'_>, c: &Command, input: Option<Vec<Val>>) -> R<()> {
    let saved = std::mem::replace(&mut e.cur, (c.start, c.end));
    let r = invoke_inner(e, c, input);
    e.cur = saved;
    r
}

fn invoke_inner(e: &mut Engine<'_>, c: &Command, input: Option<Vec<Val>>) -> R<()> {
    let name = match e.command_name(&c.name)? {
        Ok(name) => name,
        Err(Val::Block(block)) => return call_function(e, &block, &c.args, input),
        Err(_) => return Ok(()),
    };
    if let Some(block) = e.function(&name) {
        return call_function(e, &block, &c.args, input);
    }
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_suffix(".exe").unwrap_or(&lower);
    let bare = bare.rsplit(['\\', '/']).next().unwrap_or(bare);
    if NATIVES.contains(&bare) && (bare == lower || lower.ends_with(".exe")) {
        return native(e, bare, c);
    }
    let Some(spec) = spec(&name) else {
        let (start, end) = (c.start, c.end);
        let record = records::command_not_found(&name, e.site(start, end));
        return Err(e.fail(record));
    };
    let bound = bind(e, spec, &c.args)?;
    match spec.name {
        "Select-Object" | "Where-Object" | "ForEach-Object" | "Sort-Object" | "Measure-Object"
        | "Out-Null" | "Out-String" | "Out-Default" => {
            let mut stage = Stage::from_bound(e, spec, c, bound)?;
            let items = match (input, stage.input_object.take()) {
                (Some(items), _) => items,
                (None, Some(v)) => vec![v],
                (None, None) => Vec::new(),
            };
            let mut stages = vec![stage];
            for item in items {
                if e.drive(&mut stages, item)? {
                    break;
                }
            }
            if let Some(stage) = stages.first_mut() {
                for o in stage.end(e, true)? {
                    e.emit(o);
                }
            }
            Ok(())
        }
        _ => run_cmdlet(e, spec, bound, input),
    }
}

/// Calls a script block or function with command-style arguments.
fn call_function(
    e: &mut Engine<'_>,
    block: &Rc<Block>,
    args: &[Arg],
    input: Option<Vec<Val>>,
) -> R<()> {
    let mut positional = Vec::new();
    let mut named = Vec::new();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        match arg {
            Arg::Value(expr) => positional.push(e.eval(expr)?),
            Arg::Splat(name) => match e.var(name).unwrap_or_else(Val::null) {
                Val::Table(t) => named.extend(
                    t.entries
                        .into_iter()
                        .map(|(k, v)| (k.display_text().into_owned(), v)),
                ),
                other => positional.extend(other.enumerate()),
            },
            Arg::Param { name, value } => {
                let decl = block
                    .params
                    .iter()
                    .find(|p| p.name.eq_ignore_ascii_case(name));
                let is_switch = decl.is_some_and(|p| p.type_name.as_deref() == Some("switch"));
                let v = match value {
                    Some(expr) => e.eval(expr)?,
                    None if is_switch || decl.is_none() => Val::bool(true),
                    None => match args.get(i) {
                        Some(Arg::Value(expr)) => {
                            i += 1;
                            e.eval(expr)?
                        }
                        _ => Val::bool(true),
                    },
                };
                let canonical = decl.map_or_else(|| name.clone(), |p| p.name.clone());
                named.push((canonical, v));
            }
        }
    }
    e.call_block(block, positional, named, Some(input.unwrap_or_default()))
}

/// The native programs: their stdout lines are output strings, their stderr lines error
/// records, and `$LASTEXITCODE` their exit code.
fn native(e: &mut Engine<'_>, program: &str, c: &Command) -> R<()> {
    let mut args = Vec::new();
    for a in &c.args {
        match a {
            Arg::Param { name, value } => {
                let mut s = format!("-{name}");
                if let Some(v) = value {
                    s.push(':');
                    s.push_str(&to_str(&e.eval(v)?));
                }
                args.push(s);
            }
            other => {
                if let Some(v) = e.eval_arg(other)? {
                    args.extend(v.enumerate().iter().map(to_str));
                }
            }
        }
    }
    let run = match program {
        "cmd" => cmd::run_cmd("cmd.exe", &args, &[], e.host, &e.facts.user),
        other => cmd::run_cmd(other, &args, &[], e.host, &e.facts.user),
    };
    e.sleep(run.duration.saturating_sub(e.host.script.extra_duration));
    for line in text_lines(&run.stdout) {
        e.emit(Val::str(line));
    }
    for line in text_lines(&run.stderr) {
        let (start, end) = (c.start, c.end);
        let record = records::runtime_error(
            line.clone(),
            "NativeCommandError",
            0,
            &line,
            e.site(start, end),
        );
        e.write_error(record, None)?;
    }
    e.set_var("LASTEXITCODE", Val::int(i64::from(run.exit_code)));
    if run.exit_code != 0 {
        e.last_ok = false;
    }
    Ok(())
}

/// Output bytes as PowerShell reads a native program's output: lines without their CRLF.
fn text_lines(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

fn category_value(name: &str) -> i32 {
    ERROR_CATEGORY_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name.trim()))
        .and_then(|i| i32::try_from(i).ok())
        .unwrap_or(0)
}

/// `ConsoleColor` by name.
fn console_color(name: &str) -> Option<Value> {
    const COLORS: [&str; 16] = [
        "Black",
        "DarkBlue",
        "DarkGreen",
        "DarkCyan",
        "DarkRed",
        "DarkMagenta",
        "DarkYellow",
        "Gray",
        "DarkGray",
        "Blue",
        "Green",
        "Cyan",
        "Red",
        "Magenta",
        "Yellow",
        "White",
    ];
    COLORS
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name.trim()))
        .map(|i| Value::enumeration("System.ConsoleColor", COLORS[i], i as i32))
}

fn seconds_arg(e: &mut Engine<'_>, spec: &Spec, name: &str, v: &Val) -> R<i64> {
    let n = match to_number(v) {
        Some(n) => n.as_f64().round_ties_even(),
        None => {
            let text = to_str(v);
            return Err(binding_error(
                e,
                spec,
                format!(
                    "Cannot bind parameter '{name}'. Cannot convert value \"{text}\" to type \"System.Int32\". Error: \"Input string was not in a correct format.\""
                ),
                "CannotConvertArgumentNoMessage",
            ));
        }
    };
    if n < 0.0 {
        return Err(binding_error(
            e,
            spec,
            format!(
                "Cannot validate argument on parameter '{name}'. The {n} argument is less than the minimum allowed range of 0. Supply an argument that is greater than or equal to 0 and then try the command again."
            ),
            "ParameterArgumentValidationError",
        ));
    }
    Ok(n.min(f64::from(i32::MAX)) as i64)
}

fn run_cmdlet(e: &mut Engine<'_>, spec: &'static Spec, b: Bound, input: Option<Vec<Val>>) -> R<()> {
    let (start, end) = e.cur;
    // The script text is shared, so the site does not hold the engine.
    let script = Rc::clone(&e.script);
    let site = records::Site {
        script: &script,
        start,
        end,
    };
    match spec.name {
        "Write-Output" => {
            let mut values = Vec::new();
            if let Some(v) = b.get("InputObject") {
                values.push(v.clone());
            }
            values.extend(b.positional.iter().cloned());
            values.extend(input.unwrap_or_default());
            for v in values {
                if b.has("NoEnumerate") {
                    e.emit(v);
                } else {
                    for item in v.enumerate() {
                        e.emit(item);
                    }
                }
            }
        }
        "Write-Host" => {
            let sep = b.text("Separator").unwrap_or_else(|| " ".to_owned());
            let mut objects: Vec<Val> = b.get("Object").into_iter().cloned().collect();
            objects.extend(b.positional.iter().cloned());
            let groups: Vec<Vec<Val>> = match input {
                Some(items) if objects.is_empty() => items.into_iter().map(|i| vec![i]).collect(),
                _ => vec![objects],
            };
            let mut colors = [None, None];
            for (i, name) in ["ForegroundColor", "BackgroundColor"].iter().enumerate() {
                if let Some(v) = b.get(name) {
                    let text = to_str(v);
                    match console_color(&text) {
                        Some(c) => colors[i] = Some(c),
                        None => {
                            return Err(binding_error(
                                e,
                                spec,
                                format!(
                                    "Cannot bind parameter '{name}'. Cannot convert value \"{text}\" to type \"System.ConsoleColor\". Error: \"Unable to match the identifier name {text} to a valid enumerator name. Specify one of the following enumerator names and try again:\r\nBlack, DarkBlue, DarkGreen, DarkCyan, DarkRed, DarkMagenta, DarkYellow, Gray, DarkGray, Blue, Green, Cyan, Red, Magenta, Yellow, White\""
                                ),
                                "CannotConvertArgumentNoMessage",
                            ));
                        }
                    }
                }
            }
            for group in groups {
                let text = group
                    .iter()
                    .flat_map(|v| v.items())
                    .map(|v| to_str(&v))
                    .collect::<Vec<_>>()
                    .join(&sep);
                let data = records::host_message(
                    &text,
                    b.has("NoNewline"),
                    colors[0].clone(),
                    colors[1].clone(),
                );
                let record = information(e, data, "Write-Host", vec!["PSHOST".to_owned()]);
                e.record(ScriptEvent::Information(record));
            }
        }
        "Write-Error" => {
            let messages: Vec<String> = match (b.text("Message"), input) {
                (Some(m), _) => vec![m],
                (None, Some(items)) => items.iter().map(to_str).collect(),
                (None, None) => match b.get("Exception") {
                    Some(x) => vec![to_str(&ops::member(x, "Message"))],
                    None => vec![String::new()],
                },
            };
            for message in messages {
                let record = records::write_error(
                    WriteErrorSpec {
                        message,
                        error_id: b.text("ErrorId"),
                        category: b.text("Category").map_or(0, |c| category_value(&c)),
                        target: b.get("TargetObject").map(Val::to_clixml),
                    },
                    site,
                );
                e.write_error(record, b.action())?;
            }
        }
        "Write-Warning" | "Write-Verbose" | "Write-Debug" => {
            let (kind, forced) = match spec.name {
                "Write-Warning" => (
                    InformationalKind::Warning,
                    b.text("WarningAction")
                        .is_some_and(|a| a.eq_ignore_ascii_case("continue")),
                ),
                "Write-Verbose" => (InformationalKind::Verbose, b.has("Verbose")),
                _ => (InformationalKind::Debug, b.has("Debug")),
            };
            if kind == InformationalKind::Warning
                && b.text("WarningAction")
                    .and_then(|a| Action::parse(&a))
                    .is_some_and(|a| matches!(a, Action::SilentlyContinue | Action::Ignore))
            {
                return Ok(());
            }
            let messages: Vec<String> = match (b.text("Message"), input) {
                (Some(m), _) => vec![m],
                (None, Some(items)) => items.iter().map(to_str).collect(),
                (None, None) => vec![String::new()],
            };
            for m in messages {
                e.informational(kind, m, forced)?;
            }
        }
        "Write-Information" => {
            if b.text("InformationAction")
                .is_some_and(|a| a.eq_ignore_ascii_case("ignore"))
            {
                return Ok(());
            }
            let data = b
                .get("MessageData")
                .cloned()
                .or_else(|| input.map(collapse))
                .unwrap_or_else(Val::null);
            let tags = b
                .get("Tags")
                .map(|t| t.items().iter().map(to_str).collect())
                .unwrap_or_default();
            let record = information(e, data.to_clixml(), "Write-Information", tags);
            e.record(ScriptEvent::Information(record));
        }
        "Write-Progress" => {
            if e.pref("ProgressPreference") != Action::Continue {
                return Ok(());
            }
            let int = |name: &str, default: i32| {
                b.get(name)
                    .and_then(to_number)
                    .map_or(default, |n| n.as_f64() as i32)
            };
            let Some(activity) = b.text("Activity") else {
                return Err(binding_error(
                    e,
                    spec,
                    "Cannot process command because of one or more missing mandatory parameters: Activity.".into(),
                    "MissingMandatoryParameter",
                ));
            };
            let record = ProgressRecord {
                activity,
                activity_id: int("Id", 0),
                status_description: b.text("Status").unwrap_or_else(|| "Processing".to_owned()),
                current_operation: b.text("CurrentOperation"),
                parent_activity_id: int("ParentId", -1),
                percent_complete: int("PercentComplete", -1),
                seconds_remaining: int("SecondsRemaining", -1),
                record_type: if b.has("Completed") {
                    ProgressRecordType::Completed
                } else {
                    ProgressRecordType::Processing
                },
            };
            e.record(ScriptEvent::Progress(record));
        }
        "Start-Sleep" => {
            let ms = match (b.get("Seconds").cloned(), b.get("Milliseconds").cloned()) {
                (Some(s), None) => seconds_arg(e, spec, "Seconds", &s)?.saturating_mul(1000),
                (None, Some(m)) => seconds_arg(e, spec, "Milliseconds", &m)?,
                (Some(_), Some(_)) => {
                    return Err(binding_error(
                        e,
                        spec,
                        "Parameter set cannot be resolved using the specified named parameters."
                            .into(),
                        "AmbiguousParameterSet",
                    ));
                }
                (None, None) => match input.as_ref().and_then(|i| i.first()) {
                    Some(v) => seconds_arg(e, spec, "Seconds", &v.clone())?.saturating_mul(1000),
                    None => {
                        return Err(binding_error(
                            e,
                            spec,
                            "Parameter set cannot be resolved using the specified named parameters.".into(),
                            "AmbiguousParameterSet",
                        ));
                    }
                },
            };
            e.sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        }
        "Get-Date" => {
            let m = match b.get("Date") {
                Some(v) => {
                    let v = ops::cast(e, "datetime", v.clone(), start, end)?;
                    match &v {
                        Val::V(Value::DateTime(d)) => {
                            super::values::Moment::parse(d).unwrap_or_else(|| e.now())
                        }
                        _ => e.now(),
                    }
                }
                None => e.now(),
            };
            if let Some(f) = b.text("Format") {
                e.emit(Val::str(super::values::format_moment(m, &f)));
            } else if let Some(f) = b.text("UFormat") {
                e.emit(Val::str(uformat(m, &f)));
            } else {
                e.emit(Val::V(objects::get_date(m)));
            }
        }
        "Get-Service" => get_service(e, spec, &b, input)?,
        "Get-HotFix" => {
            let ids: Vec<String> = match (b.get("Id"), input) {
                (Some(v), _) => v.items().iter().map(to_str).collect(),
                (None, Some(items)) => items.iter().map(to_str).collect(),
                (None, None) => Vec::new(),
            };
            let computer = e.facts.computer.clone();
            let mut all: Vec<(String, String, String)> = e.host.data.hotfixes.clone();
            if let Some(pattern) = b.text("Description") {
                all.retain(|(_, d, _)| wildcard_match(&pattern, d, false));
            }
            if ids.is_empty() {
                for (id, desc, on) in &all {
                    e.emit(Val::V(objects::hotfix(id, desc, on, &computer)));
                }
                return Ok(());
            }
            for id in ids {
                match all.iter().find(|(h, _, _)| h.eq_ignore_ascii_case(&id)) {
                    Some((h, desc, on)) => e.emit(Val::V(objects::hotfix(h, desc, on, &computer))),
                    None => {
                        let record = records::cmdlet_error(
                            CmdletError {
                                message: "Cannot find the requested hotfix on the 'localhost' computer. Verify the input and run the command again.".into(),
                                fqid: "GetHotFixNoEntriesFound",
                                command: spec.name,
                                command_type: spec.type_name,
                                category: 13,
                                exception_types: &["System.ArgumentException", "System.SystemException", "System.Exception", "System.Object"],
                                target: id,
                            },
                            site,
                        );
                        e.write_error(record, b.action())?;
                    }
                }
            }
        }
        "Get-CimInstance" | "Get-WmiObject" => {
            let wmi = spec.name == "Get-WmiObject";
            let class = b
                .text(if wmi { "Class" } else { "ClassName" })
                .or_else(|| b.text("Query").and_then(|q| query_class(&q)))
                .unwrap_or_default();
            let namespace = b
                .text("Namespace")
                .unwrap_or_else(|| "root\\cimv2".to_owned());
            let ns_ok = namespace
                .replace('/', "\\")
                .trim_start_matches('\\')
                .eq_ignore_ascii_case("root\\cimv2");
            let now = e.now();
            let found: Option<Vec<Value>> = match (ns_ok, class.to_ascii_lowercase().as_str()) {
                (true, "win32_operatingsystem") => Some(vec![if wmi {
                    objects::os_wmi(e.host, &e.facts, now)
                } else {
                    objects::os_cim(e.host, &e.facts, now)
                }]),
                (true, "win32_quickfixengineering") if wmi => Some(
                    e.host
                        .data
                        .hotfixes
                        .iter()
                        .map(|(id, d, on)| objects::hotfix(id, d, on, &e.facts.computer))
                        .collect(),
                ),
                _ => None,
            };
            match found {
                Some(items) => {
                    for v in items {
                        e.emit(Val::V(v));
                    }
                }
                None => {
                    let record = if wmi {
                        records::cmdlet_error(
                            CmdletError {
                                message: if ns_ok {
                                    "Invalid class ".to_owned()
                                } else {
                                    "Invalid namespace ".to_owned()
                                },
                                fqid: "GetWMIManagementException",
                                command: spec.name,
                                command_type: spec.type_name,
                                category: 9,
                                exception_types: &[
                                    "System.Management.ManagementException",
                                    "System.SystemException",
                                    "System.Exception",
                                    "System.Object",
                                ],
                                target: String::new(),
                            },
                            site,
                        )
                    } else {
                        let ns = namespace.replace('\\', "/");
                        records::cmdlet_error(
                            CmdletError {
                                message: if ns_ok {
                                    "Invalid class ".to_owned()
                                } else {
                                    "Invalid namespace ".to_owned()
                                },
                                fqid: if ns_ok {
                                    "HRESULT 0x80041010"
                                } else {
                                    "HRESULT 0x8004100e"
                                },
                                command: spec.name,
                                command_type: spec.type_name,
                                category: if ns_ok { 10 } else { 13 },
                                exception_types: &[
                                    "Microsoft.Management.Infrastructure.CimException",
                                    "System.SystemException",
                                    "System.Exception",
                                    "System.Object",
                                ],
                                target: format!("{ns}:{class}"),
                            },
                            site,
                        )
                    };
                    e.write_error(record, b.action())?;
                }
            }
        }
        "Set-Variable" => {
            let value = b
                .get("Value")
                .cloned()
                .or_else(|| input.map(collapse))
                .unwrap_or_else(Val::null);
            for name in b.get("Name").map(Val::items).unwrap_or_default() {
                e.set_var(&to_str(&name), value.clone());
            }
            if b.has("PassThru") {
                e.emit(value);
            }
        }
        "Get-Variable" => {
            for name in b.get("Name").map(Val::items).unwrap_or_default() {
                let name = to_str(&name);
                match e.var(&name) {
                    Some(v) if b.has("ValueOnly") => e.emit(v),
                    Some(v) => e.emit(Val::V(super::values::object(
                        &["System.Management.Automation.PSVariable", "System.Object"],
                        Some(name.clone()),
                        vec![
                            Property::new("Name", name.as_str()),
                            Property::new("Value", v.to_clixml()),
                        ],
                        Vec::new(),
                    ))),
                    None => {
                        let record = records::cmdlet_error(
                            CmdletError {
                                message: format!("Cannot find a variable with the name '{name}'."),
                                fqid: "VariableNotFound",
                                command: spec.name,
                                command_type: spec.type_name,
                                category: 13,
                                exception_types: &[
                                    "System.Management.Automation.ItemNotFoundException",
                                    "System.Management.Automation.SessionStateException",
                                    "System.Management.Automation.RuntimeException",
                                    "System.SystemException",
                                    "System.Exception",
                                    "System.Object",
                                ],
                                target: name,
                            },
                            site,
                        );
                        e.write_error(record, b.action())?;
                    }
                }
            }
        }
        "Invoke-Expression" => {
            let text = match (b.text("Command"), input) {
                (Some(t), _) => t,
                (None, Some(items)) => items.iter().map(to_str).collect::<Vec<_>>().join("\n"),
                (None, None) => String::new(),
            };
            match super::syntax::parse_script(&text) {
                Err(pe) => {
                    let mut record = records::parse_error(&text, &pe);
                    record.fully_qualified_error_id =
                        format!("{},{}", record.fully_qualified_error_id, spec.type_name);
                    return Err(e.fail(record));
                }
                Ok(block) => {
                    // The expression runs in the caller's scope; its positions point into
                    // its own text.
                    let saved = std::mem::replace(&mut e.script, Rc::from(text.as_str()));
                    let r = e.exec_all(&block.body);
                    e.script = saved;
                    r?;
                }
            }
        }
        "New-Object" => {
            let type_name = b.text("TypeName").unwrap_or_default();
            let t = type_name.to_ascii_lowercase();
            let t = t.trim_start_matches("system.management.automation.");
            match t {
                "psobject" | "pscustomobject" | "object" | "system.object" => {
                    let props = match b.get("Property") {
                        Some(Val::Table(table)) => table
                            .entries
                            .iter()
                            .map(|(k, v)| {
                                Property::new(k.display_text().into_owned(), v.to_clixml())
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    e.emit(Val::V(objects::custom_object(None, props)));
                }
                "hashtable" | "system.collections.hashtable" => {
                    e.emit(Val::Table(Default::default()))
                }
                _ => {
                    let record = records::cmdlet_error(
                        CmdletError {
                            message: format!(
                                "Cannot find type [{type_name}]: verify that the assembly containing this type is loaded."
                            ),
                            fqid: "TypeNotFound",
                            command: spec.name,
                            command_type: spec.type_name,
                            category: 9,
                            exception_types: &[
                                "System.Management.Automation.PSArgumentException",
                                "System.ArgumentException",
                                "System.SystemException",
                                "System.Exception",
                                "System.Object",
                            ],
                            target: String::new(),
                        },
                        site,
                    );
                    return Err(e.fail(record));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The class of a WQL `SELECT ... FROM <class> [WHERE ...]`.
fn query_class(query: &str) -> Option<String> {
    let lower = query.to_ascii_lowercase();
    let at = lower.find(" from ")? + 6;
    query
        .get(at..)?
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

fn information(
    e: &Engine<'_>,
    data: Value,
    source: &str,
    tags: Vec<String>,
) -> psfleet_core::psrp::messages::InformationRecord {
    let origin = records::Origin {
        user: &e.facts.user,
        computer: &e.facts.computer,
        process_id: e.facts.process_id,
    };
    records::information(data, source, tags, e.now().to_datetime(), &origin)
}

/// `Get-Date -UFormat` (the common specifiers).
fn uformat(m: super::values::Moment, f: &str) -> String {
    let mut out = String::new();
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = match chars.next() {
            Some('Y') => "yyyy",
            Some('y') => "yy",
            Some('m') => "MM",
            Some('d') => "dd",
            Some('H') => "HH",
            Some('M') => "mm",
            Some('S') => "ss",
            Some('A') => "dddd",
            Some('a') => "ddd",
            Some('B') => "MMMM",
            Some('b') | Some('h') => "MMM",
            Some('p') => "tt",
            Some('I') => "hh",
            Some('Z') => "zz",
            Some('%') => {
                out.push('%');
                continue;
            }
            Some(other) => {
                out.push(other);
                continue;
            }
            None => break,
        };
        out.push_str(&super::values::format_moment(m, spec));
    }
    out
}

fn get_service(
    e: &mut Engine<'_>,
    spec: &'static Spec,
    b: &Bound,
    input: Option<Vec<Val>>,
) -> R<()> {
    let (start, end) = e.cur;
    // The script text is shared, so the site does not hold the engine.
    let script = Rc::clone(&e.script);
    let site = records::Site {
        script: &script,
        start,
        end,
    };
    let mut all: Vec<(String, String, String)> = objects::services(e.host)
        .map(|(n, d, s)| (n.to_owned(), d.to_owned(), s.to_owned()))
        .collect();
    all.sort_by_key(|(n, _, _)| n.to_ascii_lowercase());
    let by_display = b.get("DisplayName").is_some();
    let patterns: Vec<String> = match (b.get("Name").or(b.get("DisplayName")), input) {
        (Some(v), _) => v.items().iter().map(to_str).collect(),
        (None, Some(items)) => items
            .iter()
            .map(|i| match ops::member(i, "Name") {
                n if !n.is_null() => to_str(&n),
                _ => to_str(i),
            })
            .collect(),
        (None, None) => Vec::new(),
    };
    let include: Vec<String> = b
        .get("Include")
        .map(|v| v.items().iter().map(to_str).collect())
        .unwrap_or_default();
    let exclude: Vec<String> = b
        .get("Exclude")
        .map(|v| v.items().iter().map(to_str).collect())
        .unwrap_or_default();
    let keep = |name: &str| {
        (include.is_empty() || include.iter().any(|p| wildcard_match(p, name, false)))
            && !exclude.iter().any(|p| wildcard_match(p, name, false))
    };
    if patterns.is_empty() {
        for (n, d, s) in &all {
            if keep(n) {
                e.emit(Val::V(objects::service(n, d, s)));
            }
        }
        return Ok(());
    }
    for pattern in patterns {
        let mut found = false;
        for (n, d, s) in &all {
            let key = if by_display { d } else { n };
            if has_wildcards(&pattern) {
                if wildcard_match(&pattern, key, false) && keep(n) {
                    found = true;
                    e.emit(Val::V(objects::service(n, d, s)));
                }
            } else if key.eq_ignore_ascii_case(&pattern) {
                found = true;
                if keep(n) {
                    // Windows keeps the name as the caller typed it (R:test_psrp_multiple_commands).
                    let shown = if by_display {
                        n.as_str()
                    } else {
                        pattern.as_str()
                    };
                    e.emit(Val::V(objects::service(shown, d, s)));
                }
            }
        }
        if !found && !has_wildcards(&pattern) {
            let (message, fqid) = if by_display {
                (
                    format!("Cannot find any service with display name '{pattern}'."),
                    "NoServiceFoundForGivenDisplayName",
                )
            } else {
                (
                    format!("Cannot find any service with service name '{pattern}'."),
                    "NoServiceFoundForGivenName",
                )
            };
            let record = records::cmdlet_error(
                CmdletError {
                    message,
                    fqid,
                    command: spec.name,
                    command_type: spec.type_name,
                    category: 13,
                    exception_types: &[
                        "Microsoft.PowerShell.Commands.ServiceCommandException",
                        "System.SystemException",
                        "System.Exception",
                        "System.Object",
                    ],
                    target: pattern,
                },
                site,
            );
            e.write_error(record, b.action())?;
        }
    }
    Ok(())
}

// ===== Pipeline stages =====

/// A property selector: a name or wildcard, or a calculated property.
#[derive(Clone)]
enum Selector {
    Name(String),
    Calculated { name: String, expr: CalcExpr },
}

#[derive(Clone)]
enum CalcExpr {
    Block(Rc<Block>),
    Name(String),
}

fn selectors(v: Option<&Val>) -> Vec<(Selector, bool)> {
    let Some(v) = v else {
        return Vec::new();
    };
    v.items()
        .into_iter()
        .map(|item| match item {
            Val::Table(t) => {
                let key = |names: &[&str]| {
                    t.entries
                        .iter()
                        .find(|(k, _)| {
                            let k = k.display_text().to_ascii_lowercase();
                            names.iter().any(|n| {
                                n.starts_with(&k)
                                    && !k.is_empty()
                                    && (k.len() > 1 || names.contains(&k.as_str()))
                            })
                        })
                        .map(|(_, v)| v.clone())
                };
                let expr = match key(&["expression", "e"]) {
                    Some(Val::Block(b)) => CalcExpr::Block(b),
                    Some(other) => CalcExpr::Name(to_str(&other)),
                    None => CalcExpr::Name(String::new()),
                };
                let name = key(&["name", "n", "label", "l"])
                    .map(|v| to_str(&v))
                    .unwrap_or_else(|| match &expr {
                        CalcExpr::Name(n) => n.clone(),
                        CalcExpr::Block(b) => b.text.trim().to_owned(),
                    });
                let desc = key(&["descending", "d"]).is_some_and(|v| truthy(&v));
                (Selector::Calculated { name, expr }, desc)
            }
            Val::Block(b) => (
                Selector::Calculated {
                    name: b.text.trim().to_owned(),
                    expr: CalcExpr::Block(b),
                },
                false,
            ),
            other => (Selector::Name(to_str(&other)), false),
        })
        .collect()
}

fn calc(e: &mut Engine<'_>, expr: &CalcExpr, item: &Val) -> R<Val> {
    match expr {
        CalcExpr::Block(b) => {
            let out = e.run_filter(b, item.clone())?;
            Ok(collapse(out))
        }
        CalcExpr::Name(n) => Ok(ops::member(item, n)),
    }
}

/// The "Selected.<type>" object for one input item.
fn select_item(
    e: &mut Engine<'_>,
    sel: &[(Selector, bool)],
    exclude: &[String],
    item: &Val,
) -> R<Val> {
    let mut props: Vec<Property> = Vec::new();
    let all = ops::all_properties(item);
    for (s, _) in sel {
        match s {
            Selector::Name(pattern) if has_wildcards(pattern) => {
                for (name, v) in &all {
                    if wildcard_match(pattern, name, false)
                        && !props.iter().any(|p| p.name.eq_ignore_ascii_case(name))
                    {
                        props.push(Property::new(name.clone(), v.to_clixml()));
                    }
                }
            }
            Selector::Name(name) => {
                let actual = all
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map_or_else(|| name.clone(), |(n, _)| n.clone());
                let v = ops::member(item, name);
                props.push(Property::new(actual, v.to_clixml()));
            }
            Selector::Calculated { name, expr } => {
                let v = calc(e, expr, item)?;
                props.push(Property::new(name.clone(), v.to_clixml()));
            }
        }
    }
    props.retain(|p| !exclude.iter().any(|x| wildcard_match(x, &p.name, false)));
    let type_name = format!("Selected.{}", base_type_name(item));
    Ok(Val::V(objects::custom_object(Some(&type_name), props)))
}

fn base_type_name(item: &Val) -> String {
    match item {
        Val::V(Value::Object(o)) if !o.type_names().is_empty() => {
            let t = o.type_names().first().cloned().unwrap_or_default();
            t.strip_prefix("Selected.").map_or(t.clone(), str::to_owned)
        }
        other => other.type_name(),
    }
}

/// The Where-Object filter.
enum Filter {
    Script(Rc<Block>),
    Compare {
        property: String,
        op: Option<(super::syntax::CmpOp, bool)>,
        negate_is: Option<bool>,
        value: Val,
    },
}

enum StageKind {
    Where(Filter),
    ForEach {
        process: Vec<Rc<Block>>,
        end: Option<Rc<Block>>,
        member: Option<(String, Vec<Val>)>,
    },
    Select {
        props: Vec<(Selector, bool)>,
        exclude: Vec<String>,
        expand: Option<String>,
        first: Option<usize>,
        last: Option<usize>,
        skip: usize,
        unique: bool,
        index: Option<Vec<usize>>,
        seen: usize,
        emitted: usize,
        buffer: Vec<Val>,
        keys: std::collections::HashSet<Vec<u8>>,
    },
    Sort {
        keys: Vec<(Selector, bool)>,
        descending: bool,
        unique: bool,
        case: bool,
        buffer: Vec<Val>,
    },
    Measure {
        property: Option<String>,
        sum: bool,
        average: bool,
        maximum: bool,
        minimum: bool,
        items: Vec<Val>,
    },
    OutNull,
    OutString {
        stream: bool,
        buffer: Vec<Val>,
    },
    OutDefault,
    Generic {
        buffer: Vec<Val>,
    },
}

/// One pipeline stage after the first element.
pub(crate) struct Stage<'p> {
    command: &'p Command,
    kind: StageKind,
    input_object: Option<Val>,
    done: bool,
}

impl<'p> Stage<'p> {
    /// Binds a stage's arguments (once, before any input flows).
    pub(crate) fn prepare(e: &mut Engine<'_>, c: &'p Command) -> R<Self> {
        let saved = std::mem::replace(&mut e.cur, (c.start, c.end));
        let r = Self::prepare_inner(e, c);
        e.cur = saved;
        r
    }

    fn prepare_inner(e: &mut Engine<'_>, c: &'p Command) -> R<Self> {
        let name = match &c.name {
            CommandName::Word(w) => Some(w.clone()),
            CommandName::Expr(_) => None,
        };
        let builtin = name
            .as_deref()
            .filter(|n| e.function(n).is_none())
            .and_then(spec)
            .filter(|s| {
                matches!(
                    s.name,
                    "Select-Object"
                        | "Where-Object"
                        | "ForEach-Object"
                        | "Sort-Object"
                        | "Measure-Object"
                        | "Out-Null"
                        | "Out-String"
                        | "Out-Default"
                )
            });
        match builtin {
            Some(spec) => {
                let bound = bind(e, spec, &c.args)?;
                Self::from_bound(e, spec, c, bound)
            }
            None => Ok(Self {
                command: c,
                kind: StageKind::Generic { buffer: Vec::new() },
                input_object: None,
                done: false,
            }),
        }
    }

    fn from_bound(e: &mut Engine<'_>, spec: &'static Spec, c: &'p Command, b: Bound) -> R<Self> {
        let count = |name: &str| {
            b.get(name)
                .and_then(to_number)
                .map(|n| n.as_f64().max(0.0) as usize)
        };
        let kind = match spec.name {
            "Where-Object" => {
                let filter = match b.get("FilterScript") {
                    Some(Val::Block(block)) => Filter::Script(Rc::clone(block)),
                    Some(other) => {
                        let op = WHERE_OPS.iter().find(|o| b.has(o)).copied();
                        let (cmp, negate_is) = match op.map(str::to_ascii_lowercase).as_deref() {
                            Some("is") => (None, Some(false)),
                            Some("isnot") => (None, Some(true)),
                            Some(o) => {
                                let (case, base) = match o.strip_prefix('c') {
                                    Some(rest) if rest != "ontains" => (true, rest.to_owned()),
                                    _ => (false, o.to_owned()),
                                };
                                let cmp = match base.as_str() {
                                    "eq" => super::syntax::CmpOp::Eq,
                                    "ne" => super::syntax::CmpOp::Ne,
                                    "gt" => super::syntax::CmpOp::Gt,
                                    "ge" => super::syntax::CmpOp::Ge,
                                    "lt" => super::syntax::CmpOp::Lt,
                                    "le" => super::syntax::CmpOp::Le,
                                    "like" => super::syntax::CmpOp::Like,
                                    "notlike" => super::syntax::CmpOp::NotLike,
                                    "match" => super::syntax::CmpOp::Match,
                                    "notmatch" => super::syntax::CmpOp::NotMatch,
                                    "contains" => super::syntax::CmpOp::Contains,
                                    "notcontains" => super::syntax::CmpOp::NotContains,
                                    "in" => super::syntax::CmpOp::In,
                                    _ => super::syntax::CmpOp::NotIn,
                                };
                                (Some((cmp, case)), None)
                            }
                            None => (None, None),
                        };
                        Filter::Compare {
                            property: to_str(other),
                            op: cmp,
                            negate_is,
                            value: b.get("Value").cloned().unwrap_or_else(|| Val::bool(true)),
                        }
                    }
                    None => match b.text("Property") {
                        Some(prop) => {
                            let op = WHERE_OPS.iter().find(|o| b.has(o)).copied();
                            let cmp = op.and_then(|o| match o.to_ascii_lowercase().as_str() {
                                "eq" => Some((super::syntax::CmpOp::Eq, false)),
                                "ne" => Some((super::syntax::CmpOp::Ne, false)),
                                "like" => Some((super::syntax::CmpOp::Like, false)),
                                "match" => Some((super::syntax::CmpOp::Match, false)),
                                "gt" => Some((super::syntax::CmpOp::Gt, false)),
                                "lt" => Some((super::syntax::CmpOp::Lt, false)),
                                "ge" => Some((super::syntax::CmpOp::Ge, false)),
                                "le" => Some((super::syntax::CmpOp::Le, false)),
                                "notlike" => Some((super::syntax::CmpOp::NotLike, false)),
                                "notmatch" => Some((super::syntax::CmpOp::NotMatch, false)),
                                _ => None,
                            });
                            Filter::Compare {
                                property: prop,
                                op: cmp,
                                negate_is: None,
                                value: b.get("Value").cloned().unwrap_or_else(|| Val::bool(true)),
                            }
                        }
                        None => {
                            return Err(binding_error(
                                e,
                                spec,
                                "Cannot process command because of one or more missing mandatory parameters: FilterScript.".into(),
                                "MissingMandatoryParameter",
                            ));
                        }
                    },
                };
                StageKind::Where(filter)
            }
            "ForEach-Object" => {
                let mut blocks: Vec<Val> = b.get("Process").map(Val::items).unwrap_or_default();
                blocks.extend(b.positional.iter().cloned());
                let member = b.text("MemberName").or_else(|| match blocks.first() {
                    Some(Val::Block(_)) | None => None,
                    Some(other) => Some(to_str(other)),
                });
                let mut block_list: Vec<Rc<Block>> = blocks
                    .iter()
                    .filter_map(|v| match v {
                        Val::Block(b) => Some(Rc::clone(b)),
                        _ => None,
                    })
                    .collect();
                let mut begin = match b.get("Begin") {
                    Some(Val::Block(x)) => Some(Rc::clone(x)),
                    _ => None,
                };
                let mut end = match b.get("End") {
                    Some(Val::Block(x)) => Some(Rc::clone(x)),
                    _ => None,
                };
                if block_list.len() >= 2 && begin.is_none() {
                    begin = Some(block_list.remove(0));
                }
                if block_list.len() >= 2 && end.is_none() {
                    end = block_list.pop();
                }
                if let Some(begin) = begin {
                    let out = e.capture(|e| e.exec_all(&begin.body))?;
                    for o in out {
                        e.emit(o);
                    }
                }
                let args = if member.is_some() {
                    b.positional.iter().skip(1).cloned().collect()
                } else {
                    Vec::new()
                };
                StageKind::ForEach {
                    process: block_list,
                    end,
                    member: member
                        .filter(|_| {
                            b.get("MemberName").is_some()
                                || !matches!(blocks.first(), Some(Val::Block(_)))
                        })
                        .map(|m| (m, args)),
                }
            }
            "Select-Object" => StageKind::Select {
                props: selectors(b.get("Property")),
                exclude: b
                    .get("ExcludeProperty")
                    .map(|v| v.items().iter().map(to_str).collect())
                    .unwrap_or_default(),
                expand: b.text("ExpandProperty"),
                first: count("First"),
                last: count("Last"),
                skip: count("Skip").unwrap_or(0),
                unique: b.has("Unique"),
                index: b.get("Index").map(|v| {
                    v.items()
                        .iter()
                        .filter_map(to_number)
                        .map(|n| n.as_f64().max(0.0) as usize)
                        .collect()
                }),
                seen: 0,
                emitted: 0,
                buffer: Vec::new(),
                keys: std::collections::HashSet::new(),
            },
            "Sort-Object" => StageKind::Sort {
                keys: selectors(b.get("Property")),
                descending: b.has("Descending"),
                unique: b.has("Unique"),
                case: b.has("CaseSensitive"),
                buffer: Vec::new(),
            },
            "Measure-Object" => StageKind::Measure {
                property: b
                    .get("Property")
                    .map(|v| v.items().iter().map(to_str).collect::<Vec<_>>().join(",")),
                sum: b.has("Sum"),
                average: b.has("Average"),
                maximum: b.has("Maximum"),
                minimum: b.has("Minimum"),
                items: Vec::new(),
            },
            "Out-Null" => StageKind::OutNull,
            "Out-String" => StageKind::OutString {
                stream: b.has("Stream"),
                buffer: Vec::new(),
            },
            _ => StageKind::OutDefault,
        };
        Ok(Self {
            command: c,
            kind,
            input_object: b.get("InputObject").cloned(),
            done: false,
        })
    }

    /// True when the stage wants no more input (`Select-Object -First`).
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// Processes one input item; `last` when no stage follows (outputs then go straight to
    /// the output stream, keeping their virtual timestamps).
    pub(crate) fn process(&mut self, e: &mut Engine<'_>, item: Val, last: bool) -> R<Vec<Val>> {
        let saved = std::mem::replace(&mut e.cur, (self.command.start, self.command.end));
        let r = self.process_inner(e, item, last);
        e.cur = saved;
        r
    }

    fn process_inner(&mut self, e: &mut Engine<'_>, item: Val, last: bool) -> R<Vec<Val>> {
        match &mut self.kind {
            StageKind::Where(filter) => {
                let keep = match filter {
                    Filter::Script(block) => {
                        let block = Rc::clone(block);
                        let out = e.run_filter(&block, item.clone())?;
                        truthy(&collapse(out))
                    }
                    Filter::Compare {
                        property,
                        op,
                        negate_is,
                        value,
                    } => {
                        let v = ops::member(&item, property);
                        match (op, negate_is) {
                            (Some((cmp, case)), _) => {
                                let (start, end) = e.cur;
                                match cmp {
                                    super::syntax::CmpOp::Contains
                                    | super::syntax::CmpOp::NotContains => {
                                        let found =
                                            v.items().iter().any(|i| ops::equals(i, value, *case));
                                        found == (*cmp == super::syntax::CmpOp::Contains)
                                    }
                                    super::syntax::CmpOp::In | super::syntax::CmpOp::NotIn => {
                                        let found =
                                            value.items().iter().any(|i| ops::equals(&v, i, *case));
                                        found == (*cmp == super::syntax::CmpOp::In)
                                    }
                                    _ => ops::scalar_compare(
                                        e, *cmp, *case, &v, value, false, start, end,
                                    )?,
                                }
                            }
                            (None, Some(negate)) => {
                                let t = to_str(value);
                                let full = ops::full_type_name(t.trim_matches(['[', ']']));
                                let is = v.type_name().eq_ignore_ascii_case(&full);
                                is != *negate
                            }
                            (None, None) => truthy(&v),
                        }
                    }
                };
                Ok(if keep { vec![item] } else { Vec::new() })
            }
            StageKind::ForEach {
                process, member, ..
            } => {
                if let Some((name, args)) = member {
                    let (name, args) = (name.clone(), args.clone());
                    let v = ops::member(&item, &name);
                    if v.is_null() && !args.is_empty() || (v.is_null() && has_method(&item, &name))
                    {
                        return Ok(vec![ops::method(e, item, &name, args)?]);
                    }
                    return Ok(v.enumerate());
                }
                let blocks = process.clone();
                let mut out = Vec::new();
                for block in blocks {
                    if last {
                        e.with_item(item.clone(), |e| match e.exec_all(&block.body) {
                            Err(Flow::Return) => Ok(()),
                            other => other,
                        })?;
                    } else {
                        out.extend(
                            e.run_filter(&block, item.clone())?
                                .into_iter()
                                .flat_map(Val::enumerate),
                        );
                    }
                }
                Ok(out)
            }
            StageKind::Select {
                props,
                exclude,
                expand,
                first,
                last: last_n,
                skip,
                unique,
                index,
                seen,
                emitted,
                buffer,
                keys,
            } => {
                let position = *seen;
                *seen += 1;
                if let Some(index) = index {
                    if !index.contains(&position) {
                        return Ok(Vec::new());
                    }
                } else if position < *skip {
                    return Ok(Vec::new());
                }
                let mut outs = Vec::new();
                let shaped = if let Some(name) = expand.clone() {
                    ops::member(&item, &name).enumerate()
                } else if props.is_empty() {
                    vec![item]
                } else {
                    let (p, x) = (props.clone(), exclude.clone());
                    vec![select_item(e, &p, &x, &item)?]
                };
                for v in shaped {
                    if *unique && !keys.insert(psfleet_core::psrp::clixml::to_bytes(&v.to_clixml()))
                    {
                        continue;
                    }
                    if last_n.is_some() {
                        buffer.push(v.clone());
                    }
                    if last_n.is_none() {
                        outs.push(v);
                        *emitted += 1;
                    }
                }
                if let Some(f) = first
                    && *emitted >= *f
                {
                    outs.truncate(outs.len().saturating_sub(*emitted - *f));
                    self.done = true;
                }
                if let Some(max) = index.as_ref().and_then(|i| i.iter().max())
                    && position >= *max
                {
                    self.done = true;
                }
                Ok(outs)
            }
            StageKind::Sort { buffer, .. }
            | StageKind::OutString { buffer, .. }
            | StageKind::Generic { buffer } => {
                buffer.push(item);
                Ok(Vec::new())
            }
            StageKind::Measure { items, .. } => {
                items.push(item);
                Ok(Vec::new())
            }
            StageKind::OutNull => Ok(Vec::new()),
            StageKind::OutDefault => Ok(vec![item]),
        }
    }

    /// Ends the stage: buffered stages produce their output now.
    pub(crate) fn end(&mut self, e: &mut Engine<'_>, last: bool) -> R<Vec<Val>> {
        let saved = std::mem::replace(&mut e.cur, (self.command.start, self.command.end));
        let r = self.end_inner(e, last);
        e.cur = saved;
        r
    }

    fn end_inner(&mut self, e: &mut Engine<'_>, last: bool) -> R<Vec<Val>> {
        match &mut self.kind {
            StageKind::ForEach {
                end: Some(block), ..
            } => {
                let block = Rc::clone(block);
                if last {
                    e.exec_all(&block.body)?;
                    Ok(Vec::new())
                } else {
                    e.capture(|e| e.exec_all(&block.body))
                }
            }
            StageKind::Select {
                last: Some(n),
                buffer,
                ..
            } => {
                let skip = buffer.len().saturating_sub(*n);
                Ok(buffer.drain(..).skip(skip).collect())
            }
            StageKind::Sort {
                keys,
                descending,
                unique,
                case,
                buffer,
            } => {
                let items = std::mem::take(buffer);
                let keys = keys.clone();
                let mut keyed = Vec::with_capacity(items.len());
                for item in items {
                    let mut k = Vec::with_capacity(keys.len().max(1));
                    if keys.is_empty() {
                        k.push(item.clone());
                    }
                    for (s, _) in &keys {
                        k.push(match s {
                            Selector::Name(n) => ops::member(&item, n),
                            Selector::Calculated { expr, .. } => calc(e, expr, &item)?,
                        });
                    }
                    keyed.push((k, item));
                }
                let desc_flags: Vec<bool> = if keys.is_empty() {
                    vec![*descending]
                } else {
                    keys.iter().map(|(_, d)| *d != *descending).collect()
                };
                let case = *case;
                keyed.sort_by(|(a, _), (b, _)| {
                    for (i, (x, y)) in a.iter().zip(b).enumerate() {
                        let o = ops::ordering(x, y, case).unwrap_or(std::cmp::Ordering::Equal);
                        let o = if desc_flags.get(i).copied().unwrap_or(false) {
                            o.reverse()
                        } else {
                            o
                        };
                        if o != std::cmp::Ordering::Equal {
                            return o;
                        }
                    }
                    std::cmp::Ordering::Equal
                });
                if *unique {
                    keyed.dedup_by(|(a, _), (b, _)| {
                        a.iter().zip(b.iter()).all(|(x, y)| ops::equals(x, y, case))
                    });
                }
                Ok(keyed.into_iter().map(|(_, v)| v).collect())
            }
            StageKind::Measure {
                property,
                sum,
                average,
                maximum,
                minimum,
                items,
            } => {
                let values: Vec<Val> = match property {
                    Some(p) => items
                        .iter()
                        .map(|i| ops::member(i, p))
                        .filter(|v| !v.is_null())
                        .collect(),
                    None => items.iter().filter(|v| !v.is_null()).cloned().collect(),
                };
                let nums: Vec<f64> = values
                    .iter()
                    .filter_map(to_number)
                    .map(|n| n.as_f64())
                    .collect();
                let total: f64 = nums.iter().sum();
                let count = i32::try_from(values.len()).unwrap_or(i32::MAX);
                let pick = |f: fn(f64, f64) -> f64| nums.iter().copied().reduce(f);
                Ok(vec![Val::V(objects::measure_info(
                    count,
                    sum.then_some(total)
                        .or(average.then_some(total))
                        .filter(|_| *sum),
                    average.then(|| {
                        if nums.is_empty() {
                            0.0
                        } else {
                            total / nums.len() as f64
                        }
                    }),
                    if *maximum { pick(f64::max) } else { None },
                    if *minimum { pick(f64::min) } else { None },
                    property.as_deref(),
                ))])
            }
            StageKind::OutString { stream, buffer } => {
                let values: Vec<Value> = buffer
                    .drain(..)
                    .map(|v| objects::to_wire(v.to_clixml()))
                    .collect();
                let text = super::text::render(&values);
                if *stream {
                    Ok(text
                        .split("\r\n")
                        .map(|l| Val::str(l.to_owned()))
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .skip_while(|v| to_str(v).is_empty())
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect())
                } else {
                    Ok(vec![Val::str(text)])
                }
            }
            StageKind::Generic { buffer } => {
                let input = std::mem::take(buffer);
                let c = self.command;
                if last {
                    invoke(e, c, Some(input))?;
                    Ok(Vec::new())
                } else {
                    e.capture(|e| invoke(e, c, Some(input)))
                }
            }
            _ => Ok(Vec::new()),
        }
    }
}

fn has_method(item: &Val, name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(item, Val::V(Value::String(_)))
        && matches!(
            lower.as_str(),
            "toupper"
                | "tolower"
                | "trim"
                | "trimstart"
                | "trimend"
                | "tostring"
                | "toupperinvariant"
                | "tolowerinvariant"
        )
}
