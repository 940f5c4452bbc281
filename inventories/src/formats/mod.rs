//! The inventory formats, and telling them apart.

pub(crate) mod csv;
pub(crate) mod ini;
pub(crate) mod text;
pub(crate) mod yaml;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::ErrorKind;
use crate::hostpattern::constant;

/// An inventory format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A header row (`name,address,port,…,group`), then one host per row.
    Csv,
    /// One host per line, optional `:port`, `#` comments.
    Text,
    /// Ansible INI: `[group]`, `[group:vars]`, `[group:children]`, host variables on the line.
    Ini,
    /// Ansible YAML: `all:` / `hosts:` / `vars:` / `children:`.
    Yaml,
}

impl Format {
    /// The format a file name's extension says: `.csv`; `.txt`, `.list`; `.ini`, `.cfg`;
    /// `.yml`, `.yaml`, `.json`. `None` for anything else (then the content decides).
    pub fn from_extension(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Format::Csv),
            "txt" | "list" => Some(Format::Text),
            "ini" | "cfg" => Some(Format::Ini),
            "yml" | "yaml" | "json" => Some(Format::Yaml),
            _ => None,
        }
    }

    /// The format the content looks like, judged by its first line that is not blank or a
    /// comment: `---` or `name:` is YAML, `[group]` is INI, a header with a name column
    /// (`name`, `host`, `hostname`, `computername`) and a delimiter is CSV; a later host line
    /// with `key=value` is INI (hosts before any section); anything else is plain text.
    pub fn detect(text: &str) -> Format {
        let mut meaningful = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with(['#', ';']));
        let Some(first) = meaningful.next() else {
            return Format::Text;
        };
        if first == "---"
            || first.starts_with("%YAML")
            || first.starts_with('{')
            || YAML_KEY.is_match(first)
        {
            return Format::Yaml;
        }
        if INI_SECTION.is_match(first) {
            return Format::Ini;
        }
        let cells = first
            .split([',', ';', '\t'])
            .map(|c| c.trim().trim_matches('"').to_ascii_lowercase());
        if first.contains([',', ';', '\t'])
            && cells
                .into_iter()
                .any(|c| matches!(c.as_str(), "name" | "host" | "hostname" | "computername"))
        {
            return Format::Csv;
        }
        let has_assignment = |line: &str| {
            line.split_whitespace()
                .skip(1)
                .take_while(|t| !t.starts_with('#'))
                .any(|t| t.contains('='))
        };
        if has_assignment(first)
            || meaningful
                .take(10_000)
                .any(|l| INI_SECTION.is_match(l) || has_assignment(l))
        {
            return Format::Ini;
        }
        Format::Text
    }

    /// The name `--inventory-format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Text => "text",
            Format::Ini => "ini",
            Format::Yaml => "yaml",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = ErrorKind;

    /// `csv`, `text` (or `txt`, `list`), `ini`, `yaml` (or `yml`), ignoring case.
    fn from_str(s: &str) -> Result<Format, ErrorKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "text" | "txt" | "list" => Ok(Format::Text),
            "ini" => Ok(Format::Ini),
            "yaml" | "yml" => Ok(Format::Yaml),
            _ => Err(ErrorKind::UnknownFormat {
                given: crate::model::printable(s),
            }),
        }
    }
}

/// `name:` alone on a line (a top-level YAML key opening a mapping).
static YAML_KEY: LazyLock<Regex> = LazyLock::new(|| constant(r#"^[^\s#:,\[\]{}'"]+:\s*(?:#.*)?$"#));
/// An INI section header.
static INI_SECTION: LazyLock<Regex> =
    LazyLock::new(|| constant(r"^\[[^:\]\s]+(?::\w+)?\]\s*(?:#.*)?$"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_decide_first() {
        let f = |p: &str| Format::from_extension(Path::new(p));
        assert_eq!(f("fleet.CSV"), Some(Format::Csv));
        assert_eq!(f("hosts.txt"), Some(Format::Text));
        assert_eq!(f("hosts.list"), Some(Format::Text));
        assert_eq!(f("hosts.ini"), Some(Format::Ini));
        assert_eq!(f("ansible.cfg"), Some(Format::Ini));
        assert_eq!(f("inventory.yml"), Some(Format::Yaml));
        assert_eq!(f("inventory.yaml"), Some(Format::Yaml));
        assert_eq!(f("hosts"), None);
        assert_eq!(f("hosts.prod"), None);
    }

    #[test]
    fn content_decides_otherwise() {
        assert_eq!(Format::detect("# fleet\n[web]\nw1\n"), Format::Ini);
        assert_eq!(Format::detect("w0\n[web]\nw1\n"), Format::Ini);
        assert_eq!(Format::detect("w0 ansible_host=1.2.3.4\n"), Format::Ini);
        assert_eq!(Format::detect("---\nall:\n"), Format::Yaml);
        assert_eq!(Format::detect("all:\n  hosts:\n"), Format::Yaml);
        assert_eq!(Format::detect("{\"all\": {}}"), Format::Yaml);
        assert_eq!(Format::detect("Name,Port\nsrv1,5985\n"), Format::Csv);
        assert_eq!(Format::detect("hostname;port\nsrv1;5985\n"), Format::Csv);
        assert_eq!(
            Format::detect("srv1\nsrv2:5986\n[fe80::1]:5985\n"),
            Format::Text
        );
        assert_eq!(Format::detect(""), Format::Text);
    }

    #[test]
    fn names_parse_ignoring_case() {
        assert_eq!("YAML".parse::<Format>().unwrap(), Format::Yaml);
        assert_eq!("list".parse::<Format>().unwrap(), Format::Text);
        assert_eq!(
            "toml".parse::<Format>().unwrap_err().to_string(),
            "unknown inventory format 'toml'; use csv, text, ini or yaml"
        );
    }
}
