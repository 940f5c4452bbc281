//! psfleet-inventories: inventory files to validated host records. No network code.
//!
//! Formats: CSV, plain text, Ansible INI and Ansible YAML (see [`Format`] and
//! `docs/inventories.md`), from files or standard input (`-`). Several sources load into one
//! [`Inventory`] (`-i a -i b`): a host named twice is one host, its groups unioned.
//!
//! ```
//! use psfleet_inventories::{Defaults, Format, Inventory, Overrides, Pattern, resolve};
//!
//! let mut inventory = Inventory::default();
//! inventory.load_str("hosts.ini", "[web]\nsrv[1:2].fleet.test ansible_port=5986\n", None)?;
//! let overrides = Overrides { limit: Some(Pattern::parse("web:!srv2*")?), ..Default::default() };
//! let hosts = resolve(&inventory, &overrides, &Defaults::default())?;
//! assert_eq!(hosts.len(), 1);
//! assert_eq!(hosts[0].url(), "https://srv1.fleet.test:5986/wsman");
//! # Ok::<(), psfleet_inventories::InventoryError>(())
//! ```
//!
//! Every error names the file and line (and column where it helps) and says what to do.
//! Passwords are refused unless written as references (`env:NAME`, `file:/path`, `prompt`,
//! `kerberos-cache`): see [`SecretRef`].

mod error;
mod formats;
mod hostpattern;
mod model;
mod pattern;
mod resolve;
mod secrets;

#[doc(hidden)]
pub mod fuzzing;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

pub use error::{ErrorKind, InventoryError, Location, Warning};
pub use formats::Format;
pub use model::{Group, HostEntry, Inventory, Limits, Var};
pub use pattern::Pattern;
pub use resolve::{
    Address, Authentication, CertValidation, Defaults, Host, KNOWN_VARIABLES, Overrides, Scheme,
    resolve,
};
pub use secrets::{SecretRef, is_secret_name};

/// The name errors use for standard input.
pub const STDIN_NAME: &str = "<stdin>";

/// Loads inventory sources in order (`-` is standard input), each in `format` or, without one,
/// in the format its extension or content says.
pub fn load<S: AsRef<str>>(
    sources: &[S],
    format: Option<Format>,
) -> Result<Inventory, InventoryError> {
    let mut inventory = Inventory::default();
    for source in sources {
        let source = source.as_ref();
        if source == "-" {
            inventory.load_reader(STDIN_NAME, std::io::stdin().lock(), format)?;
        } else {
            inventory.load_file(Path::new(source), format)?;
        }
    }
    Ok(inventory)
}

impl Inventory {
    /// Loads one file. The format is `format`, else the extension's ([`Format::from_extension`]),
    /// else the content's ([`Format::detect`]). After an error the inventory is incomplete:
    /// discard it.
    pub fn load_file(&mut self, path: &Path, format: Option<Format>) -> Result<(), InventoryError> {
        let name: Arc<str> = Arc::from(path.display().to_string());
        let file = std::fs::File::open(path).map_err(|e| read_error(&name, &e))?;
        let format = format.or_else(|| Format::from_extension(path));
        self.load_reader(&name, file, format)
    }

    /// Loads from a reader (standard input, a pipe), named `name` in errors.
    pub fn load_reader(
        &mut self,
        name: &str,
        reader: impl Read,
        format: Option<Format>,
    ) -> Result<(), InventoryError> {
        let file: Arc<str> = Arc::from(name);
        let limit = self.limits().max_bytes;
        let mut bytes = Vec::new();
        reader
            .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| read_error(&file, &e))?;
        self.load_bytes(name, &bytes, format)
    }

    /// Loads bytes that must be UTF-8 (a byte-order mark is skipped).
    pub fn load_bytes(
        &mut self,
        name: &str,
        bytes: &[u8],
        format: Option<Format>,
    ) -> Result<(), InventoryError> {
        let file: Arc<str> = Arc::from(name);
        if bytes.len() > self.limits().max_bytes {
            return Err(InventoryError::at(
                Location::file(&file),
                ErrorKind::TooLarge {
                    limit: self.limits().max_bytes,
                },
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = bytes
                .get(..e.valid_up_to())
                .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
                + 1;
            InventoryError::at(Location::new(&file, line), ErrorKind::NotUtf8)
        })?;
        self.parse_text(&file, text, format)
    }

    /// Loads text, named `name` in errors.
    pub fn load_str(
        &mut self,
        name: &str,
        text: &str,
        format: Option<Format>,
    ) -> Result<(), InventoryError> {
        let file: Arc<str> = Arc::from(name);
        if text.len() > self.limits().max_bytes {
            return Err(InventoryError::at(
                Location::file(&file),
                ErrorKind::TooLarge {
                    limit: self.limits().max_bytes,
                },
            ));
        }
        self.parse_text(&file, text, format)
    }

    fn parse_text(
        &mut self,
        file: &Arc<str>,
        text: &str,
        format: Option<Format>,
    ) -> Result<(), InventoryError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        match format.unwrap_or_else(|| Format::detect(text)) {
            Format::Csv => formats::csv::parse(self, file, text),
            Format::Text => formats::text::parse(self, file, text),
            Format::Ini => formats::ini::parse(self, file, text),
            Format::Yaml => formats::yaml::parse(self, file, text),
        }
    }
}

fn read_error(file: &Arc<str>, error: &std::io::Error) -> InventoryError {
    InventoryError::at(
        Location::file(file),
        ErrorKind::Read {
            message: error.to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_checked_for_size_and_encoding() {
        let mut inv = Inventory::new(Limits {
            max_bytes: 10,
            ..Default::default()
        });
        let err = inv
            .load_bytes("big.txt", b"srv1\nsrv2\nsrv3\n", None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "big.txt: the inventory is larger than 10 bytes; split it into several files (-i a -i b)"
        );
        let mut inv = Inventory::default();
        let err = inv
            .load_bytes("latin1.txt", b"srv1\nsrv2\ncaf\xe9\n", None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "latin1.txt:3: the line is not valid UTF-8; save the inventory as UTF-8"
        );
        inv.load_bytes("bom.csv", "\u{feff}name,port\nsrv1,5986\n".as_bytes(), None)
            .unwrap();
        assert_eq!(
            inv.host("srv1").unwrap().vars()["psfleet_port"].value,
            "5986"
        );
    }

    #[test]
    fn readers_like_stdin_are_detected_by_content() {
        let mut inv = Inventory::default();
        inv.load_reader(
            STDIN_NAME,
            std::io::Cursor::new("all:\n  hosts:\n    y1:\n"),
            None,
        )
        .unwrap();
        inv.load_reader(
            STDIN_NAME,
            std::io::Cursor::new("hostname,port\nc1,5986\n"),
            None,
        )
        .unwrap();
        inv.load_reader(STDIN_NAME, std::io::Cursor::new("t1\nt2:5986\n"), None)
            .unwrap();
        let names: Vec<&str> = inv.hosts().map(HostEntry::name).collect();
        assert_eq!(names, ["y1", "c1", "t1", "t2"]);
        let err = inv
            .load_reader(STDIN_NAME, std::io::Cursor::new("[web]\nw1 x\n"), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "<stdin>:2: expected key=value host variable after the host name, got 'x'"
        );
    }

    #[test]
    fn files_pick_their_format_by_extension_then_content() {
        let dir = std::env::temp_dir().join(format!("psfleet-inv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A .txt file holding INI text is read as text, as its extension says.
        let txt = dir.join("hosts.txt");
        std::fs::write(&txt, "[web]\n").unwrap();
        let err = load(&[txt.to_str().unwrap()], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:1: host range in '[web]': a host range is [begin:end] or [begin:end:step]",
                txt.display()
            )
        );
        let bare = dir.join("hosts");
        std::fs::write(&bare, "[web]\nw1\n").unwrap();
        let inv = load(&[bare.to_str().unwrap()], None).unwrap();
        assert_eq!(inv.group_hosts("web").unwrap(), ["w1"]);
        let inv = load(&[txt.to_str().unwrap()], Some(Format::Ini)).unwrap();
        assert!(inv.group("web").is_some());
        let missing = dir.join("missing.ini");
        let err = load(&[missing.to_str().unwrap()], None).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{}: cannot read the inventory: ",
                missing.display()
            )),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
