//! The recorded Windows traffic in `shared/conformance/pypsrp-recorded` (pypsrp's test
//! recordings, MIT), loaded as typed exchanges.
//!
//! Each file is YAML: `messages:` is a list of `{request, response}` decrypted SOAP strings,
//! optionally with `transport_error: {protocol, code}` (the response came with that HTTP
//! status: always a fault), `http_error: true` (the connection failed; no response),
//! `timeout: N` (the client gave up waiting) and `overrides` (fields pypsrp's harness
//! rewrites before comparing the request).

use std::path::Path;

use serde::Deserialize;

/// One recorded file.
#[derive(Debug, Clone)]
pub struct Recording {
    /// File name without directory, e.g. `test_winrs_standard.yml`.
    pub name: String,
    /// The exchanges, in order.
    pub exchanges: Vec<Exchange>,
}

/// One request and what Windows answered.
#[derive(Debug, Clone, Deserialize)]
pub struct Exchange {
    /// The SOAP envelope the client sent.
    pub request: String,
    /// The SOAP envelope Windows answered with; `None` when the connection failed.
    pub response: Option<String>,
    /// HTTP-level error the response arrived with (a fault is always HTTP 500).
    pub transport_error: Option<TransportError>,
    /// The connection failed and no response exists.
    #[serde(default)]
    pub http_error: bool,
    /// The client stopped waiting after this many seconds.
    pub timeout: Option<u32>,
    /// Request fields pypsrp's harness rewrites before comparing (the recording was made
    /// with a deliberately wrong value, e.g. a bogus CommandId in R:test_winrs_bad_cmd_id).
    #[serde(default)]
    pub overrides: Vec<Override>,
}

/// One rewritten request field.
#[derive(Debug, Clone, Deserialize)]
pub struct Override {
    /// Element path below the envelope, e.g. `s:Body/rsp:Receive/rsp:DesiredStream`.
    pub path: String,
    /// Attributes set on that element.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// `transport_error` of an exchange.
#[derive(Debug, Clone, Deserialize)]
pub struct TransportError {
    /// Always `http` in the corpus.
    pub protocol: String,
    /// HTTP status.
    pub code: u16,
}

#[derive(Deserialize)]
struct File {
    messages: Vec<Exchange>,
}

/// Loads every `*.yml` recording under `dir`, sorted by name.
///
/// # Panics
/// When a file cannot be read or parsed: the corpus is fixed test input.
pub fn load_dir(dir: &Path) -> Vec<Recording> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let file: File = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            Recording {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                exchanges: file.messages,
            }
        })
        .collect()
}

/// Loads the whole corpus from the shared directory.
pub fn load(shared: &Path) -> Vec<Recording> {
    load_dir(&shared.join("conformance/pypsrp-recorded"))
}
