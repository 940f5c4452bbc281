//! Text rendering for `powershell.exe` run inside the WinRS cmd shell: output objects as the
//! console host formats them (an approximation of Out-Default: strings and numbers as they
//! are, the default table views of services and hot fixes, tables or lists for custom
//! objects, `ToString` otherwise), and error records in Windows PowerShell 5.1's console
//! error format, or as the `#< CLIXML` stderr stream `-EncodedCommand` produces when stderr
//! is redirected (PowerShell/PowerShell#5912).

use psfleet_core::psrp::clixml::{self, Content, PsObject, Value};
use psfleet_core::psrp::messages::ErrorRecord;
use psfleet_core::xml::XmlWriter;

use super::values::{Moment, format_moment, value_to_str};

/// Renders output objects as console text (CRLF line endings).
pub(crate) fn render(values: &[Value]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < values.len() {
        let v = &values[i];
        match view_of(v) {
            View::Line => {
                out.push_str(&line_text(v));
                out.push_str("\r\n");
                i += 1;
            }
            View::Date(text) => {
                out.push_str("\r\n");
                out.push_str(&text);
                out.push_str("\r\n\r\n\r\n");
                i += 1;
            }
            View::Table(columns) => {
                let group = same_view(values, i, &columns);
                table(&mut out, &columns, &values[i..i + group]);
                i += group;
            }
            View::List(names) => {
                out.push_str("\r\n");
                let group = same_list(values, i, &names);
                for v in &values[i..i + group] {
                    list(&mut out, v, &names);
                }
                out.push_str("\r\n");
                i += group;
            }
        }
    }
    out
}

/// A column: header, property, fixed width (`None`: as wide as the data).
#[derive(Debug, Clone, PartialEq)]
struct Column {
    header: String,
    property: String,
    width: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum View {
    Line,
    Date(String),
    Table(Vec<Column>),
    List(Vec<String>),
}

fn col(header: &str, property: &str, width: Option<usize>) -> Column {
    Column {
        header: header.to_owned(),
        property: property.to_owned(),
        width,
    }
}

fn view_of(v: &Value) -> View {
    let Value::Object(o) = v else {
        return match v {
            Value::DateTime(d) => View::Date(date_long(d)),
            _ => View::Line,
        };
    };
    if let Content::Value(Value::DateTime(d)) = &o.content {
        return View::Date(date_long(d));
    }
    if o.is_enum() {
        return View::Line;
    }
    if o.is_type("System.ServiceProcess.ServiceController") {
        return View::Table(vec![
            col("Status", "Status", Some(8)),
            col("Name", "Name", Some(18)),
            col("DisplayName", "DisplayName", Some(38)),
        ]);
    }
    if o.is_type("System.Management.ManagementObject#root\\cimv2\\Win32_QuickFixEngineering") {
        return View::Table(vec![
            col("Source", "PSComputerName", Some(13)),
            col("Description", "Description", Some(15)),
            col("HotFixID", "HotFixID", Some(11)),
            col("InstalledBy", "InstalledBy", Some(20)),
            col("InstalledOn", "InstalledOn", None),
        ]);
    }
    if o.type_names()
        .iter()
        .any(|t| t.ends_with("Win32_OperatingSystem"))
    {
        return View::List(
            [
                "SystemDirectory",
                "Organization",
                "BuildNumber",
                "RegisteredUser",
                "SerialNumber",
                "Version",
            ]
            .map(str::to_owned)
            .to_vec(),
        );
    }
    if o.dictionary().is_some() {
        return View::Table(vec![col("Name", "Key", None), col("Value", "Value", None)]);
    }
    if o.list().is_some() || o.is_type(psfleet_core::psrp::messages::ERROR_RECORD_TYPE) {
        return View::Line;
    }
    let names: Vec<String> = o.properties().map(|p| p.name.clone()).collect();
    if o.is_type("System.Management.Automation.PSCustomObject") {
        if names.len() <= 4 {
            return View::Table(names.iter().map(|n| col(n, n, None)).collect());
        }
        return View::List(names);
    }
    if o.to_string.is_some() || names.is_empty() {
        return View::Line;
    }
    View::List(names)
}

fn same_view(values: &[Value], from: usize, columns: &[Column]) -> usize {
    values[from..]
        .iter()
        .take_while(|v| matches!(view_of(v), View::Table(c) if c == columns))
        .count()
        .max(1)
}

fn same_list(values: &[Value], from: usize, names: &[String]) -> usize {
    values[from..]
        .iter()
        .take_while(|v| matches!(view_of(v), View::List(n) if n == names))
        .count()
        .max(1)
}

fn date_long(d: &clixml::DateTime) -> String {
    Moment::parse(d).map_or_else(|| d.to_string(), |m| format_moment(m, "F"))
}

/// A value as it appears on its own line or in a table cell.
fn line_text(v: &Value) -> String {
    match v.primitive() {
        Value::DateTime(d) => {
            Moment::parse(d).map_or_else(|| d.to_string(), |m| format_moment(m, "G"))
        }
        _ => match v {
            Value::Object(o) if o.is_type(psfleet_core::psrp::messages::ERROR_RECORD_TYPE) => {
                ErrorRecord::from_clixml(v).map_or_else(
                    |_| value_to_str(v),
                    |r| error_text(&r).trim_end().to_owned(),
                )
            }
            Value::Object(o) if o.list().is_some() && o.to_string.is_none() => o
                .list()
                .map(|items| items.iter().map(line_text).collect::<Vec<_>>().join("\r\n"))
                .unwrap_or_default(),
            _ => value_to_str(v),
        },
    }
}

fn cell(o: &PsObject, property: &str) -> String {
    match o.property(property) {
        Some(Value::Object(inner)) if inner.list().is_some() && !inner.is_enum() => {
            let items: Vec<String> = inner.list().unwrap_or(&[]).iter().map(line_text).collect();
            format!("{{{}}}", items.join(", "))
        }
        Some(v) => line_text(v),
        None => String::new(),
    }
}

fn is_numeric(v: Option<&Value>) -> bool {
    v.is_some_and(|v| {
        !matches!(v, Value::Object(o) if o.is_enum())
            && super::values::number_of(v.primitive()).is_some()
            && !matches!(v.primitive(), Value::Bool(_))
    })
}

fn table(out: &mut String, columns: &[Column], rows: &[Value]) {
    let data: Vec<Vec<(String, bool)>> = rows
        .iter()
        .flat_map(|v| match v {
            Value::Object(o) if o.dictionary().is_some() => o
                .dictionary()
                .unwrap_or(&[])
                .iter()
                .map(|e| {
                    vec![
                        (line_text(&e.key), false),
                        (line_text(&e.value), is_numeric(Some(&e.value))),
                    ]
                })
                .collect::<Vec<_>>(),
            Value::Object(o) => vec![
                columns
                    .iter()
                    .map(|c| (cell(o, &c.property), is_numeric(o.property(&c.property))))
                    .collect(),
            ],
            other => vec![vec![(line_text(other), false)]],
        })
        .collect();
    let right: Vec<bool> = (0..columns.len())
        .map(|i| {
            let cells: Vec<&(String, bool)> = data
                .iter()
                .filter_map(|r| r.get(i))
                .filter(|c| !c.0.is_empty())
                .collect();
            !cells.is_empty() && cells.iter().all(|c| c.1)
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.width.unwrap_or_else(|| {
                data.iter()
                    .map(|r| r.get(i).map_or(0, |s| s.0.chars().count()))
                    .chain([c.header.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
        })
        .collect();
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, text) in cells.into_iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let count = text.chars().count();
            let text = if count > w && w > 3 {
                let cut: String = text.chars().take(w - 3).collect();
                format!("{cut}...")
            } else {
                text
            };
            let pad = " ".repeat(w.saturating_sub(text.chars().count()));
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&pad);
                s.push_str(&text);
            } else {
                s.push_str(&text);
                if i + 1 < n {
                    s.push_str(&pad);
                }
            }
            if i + 1 < n {
                s.push(' ');
            }
        }
        s.trim_end().to_owned()
    };
    out.push_str("\r\n");
    out.push_str(&line(columns.iter().map(|c| c.header.clone()).collect()));
    out.push_str("\r\n");
    out.push_str(&line(
        columns
            .iter()
            .map(|c| "-".repeat(c.header.chars().count()))
            .collect(),
    ));
    out.push_str("\r\n");
    for row in data {
        out.push_str(&line(row.into_iter().map(|c| c.0).collect()));
        out.push_str("\r\n");
    }
    out.push_str("\r\n\r\n");
}

fn list(out: &mut String, v: &Value, names: &[String]) {
    let Value::Object(o) = v else {
        return;
    };
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for n in names {
        let value = cell(o, n);
        out.push_str(format!("{n:<width$} : {value}").trim_end());
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
}

/// An error record in Windows PowerShell 5.1's console format (what powershell.exe writes
/// to stderr): `<command> : <message>`, the position, CategoryInfo and
/// FullyQualifiedErrorId, then a line holding one space.
pub(crate) fn error_text(r: &ErrorRecord) -> String {
    let mut s = String::new();
    let info = r.invocation.as_ref();
    let prefix = info
        .and_then(|i| i.my_command.clone())
        .filter(|c| !c.is_empty())
        .or_else(|| {
            (r.reason.as_deref() == Some("CommandNotFoundException"))
                .then(|| r.target_name.clone())
                .flatten()
        });
    if let Some(p) = prefix {
        s.push_str(&p);
        s.push_str(" : ");
    }
    s.push_str(&r.message);
    s.push_str("\r\n");
    if let Some(pos) = info
        .and_then(|i| i.position_message.as_deref())
        .filter(|p| !p.is_empty())
        && !r.message.starts_with(pos)
    {
        s.push_str(pos);
        s.push_str("\r\n");
    }
    if let Some(cat) = &r.category_message {
        s.push_str("    + CategoryInfo          : ");
        s.push_str(cat);
        s.push_str("\r\n");
    }
    s.push_str("    + FullyQualifiedErrorId : ");
    s.push_str(&r.fully_qualified_error_id);
    s.push_str("\r\n \r\n");
    s
}

/// The `#< CLIXML` form of error text: one `<S S="Error">` per line (line breaks escaped).
pub(crate) fn clixml_stderr(lines: &[String]) -> Vec<u8> {
    let mut w = XmlWriter::new();
    w.start(
        "Objs",
        &[("Version", "1.1.0.1"), ("xmlns", clixml::OBJS_NAMESPACE)],
    );
    for line in lines {
        let text = format!("{line}\r\n");
        w.text_element("S", &[("S", "Error")], &clixml::encode_string(&text));
    }
    w.end("Objs");
    let mut out = b"#< CLIXML\r\n".to_vec();
    out.extend(w.into_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::powershell::objects;

    #[test]
    fn services_render_in_the_default_table_view() {
        let values = vec![
            objects::to_wire(objects::service(
                "WinRM",
                "Windows Remote Management (WS-Management)",
                "Running",
            )),
            objects::to_wire(objects::service("Spooler", "Print Spooler", "Stopped")),
        ];
        assert_eq!(
            render(&values),
            "\r\nStatus   Name               DisplayName\r\n------   ----               -----------\r\nRunning  WinRM              Windows Remote Management (WS-Manag...\r\nStopped  Spooler            Print Spooler\r\n\r\n\r\n"
        );
    }

    #[test]
    fn strings_numbers_and_custom_objects() {
        let obj = objects::custom_object(
            None,
            vec![
                psfleet_core::psrp::clixml::Property::new("Name", "a"),
                psfleet_core::psrp::clixml::Property::new("Count", 12),
            ],
        );
        let text = render(&[Value::from("hi"), Value::I32(5), obj]);
        assert_eq!(
            text,
            "hi\r\n5\r\n\r\nName Count\r\n---- -----\r\na       12\r\n\r\n\r\n"
        );
    }

    #[test]
    fn clixml_stderr_escapes_line_breaks() {
        let bytes = clixml_stderr(&["boom".to_owned()]);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">boom_x000D__x000A_</S></Objs>"
        );
    }
}
