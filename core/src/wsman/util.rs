//! Small readers and writers shared by the message modules.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

use super::WsmanError;
use super::duration;
use super::names::ns;
use crate::xml::{Element, XmlWriter};

/// Longest offending value kept in an error (hostile input must not bloat errors).
const MAX_ERROR_VALUE: usize = 64;

/// The parsed envelope: header and body elements.
pub(crate) struct Envelope<'a> {
    pub(crate) root: &'a Element,
    pub(crate) header: Option<&'a Element>,
    pub(crate) body: &'a Element,
}

/// Checks the root is `s:Envelope` and finds `s:Header` and `s:Body`.
pub(crate) fn envelope(root: &Element) -> Result<Envelope<'_>, WsmanError> {
    if !root.is(ns::SOAP, "Envelope") {
        return Err(WsmanError::NotAnEnvelope {
            ns: cut(&root.ns),
            name: cut(&root.name),
        });
    }
    let body = root
        .child(ns::SOAP, "Body")
        .ok_or(WsmanError::MissingElement("s:Envelope/s:Body"))?;
    Ok(Envelope {
        root,
        header: root.child(ns::SOAP, "Header"),
        body,
    })
}

/// `{ns}name` of the first body element, or `nothing`, for error messages.
pub(crate) fn describe_first(body: &Element) -> String {
    match body.elements().next() {
        Some(e) => cut(&format!("{{{}}}{}", e.ns, e.name)),
        None => "nothing".to_owned(),
    }
}

pub(crate) fn cut(text: &str) -> String {
    text.chars().take(MAX_ERROR_VALUE).collect()
}

pub(crate) fn invalid(field: &'static str, value: &str) -> WsmanError {
    WsmanError::InvalidValue {
        field,
        value: cut(value),
    }
}

pub(crate) fn required<'a>(
    parent: &'a Element,
    ns: &str,
    name: &str,
    path: &'static str,
) -> Result<&'a Element, WsmanError> {
    parent
        .child(ns, name)
        .ok_or(WsmanError::MissingElement(path))
}

pub(crate) fn required_attr<'a>(
    e: &'a Element,
    attribute: &'static str,
    element: &'static str,
) -> Result<&'a str, WsmanError> {
    e.attr(attribute)
        .ok_or(WsmanError::MissingAttribute { element, attribute })
}

/// The text of an optional child element.
pub(crate) fn child_text(parent: &Element, ns: &str, name: &str) -> Option<String> {
    parent.child(ns, name).map(|e| e.text().into_owned())
}

pub(crate) fn parse_uuid(text: &str, field: &'static str) -> Result<Uuid, WsmanError> {
    crate::ids::parse(text).ok_or_else(|| invalid(field, text))
}

pub(crate) fn parse_number<T: FromStr>(text: &str, field: &'static str) -> Result<T, WsmanError> {
    text.trim().parse().map_err(|_| invalid(field, text))
}

/// xs:boolean plus the capitalised spellings .NET and Python write (`True`, `FALSE`).
pub(crate) fn parse_bool(text: &str, field: &'static str) -> Result<bool, WsmanError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("true") || t == "1" {
        Ok(true)
    } else if t.eq_ignore_ascii_case("false") || t == "0" {
        Ok(false)
    } else {
        Err(invalid(field, text))
    }
}

pub(crate) fn parse_duration(text: &str, field: &'static str) -> Result<Duration, WsmanError> {
    duration::parse(text).ok_or_else(|| invalid(field, text))
}

pub(crate) fn opt_child<T>(
    parent: &Element,
    ns: &str,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, WsmanError>,
) -> Result<Option<T>, WsmanError> {
    parent.child(ns, name).map(|e| parse(&e.text())).transpose()
}

pub(crate) fn decode_base64(text: &str, field: &'static str) -> Result<Vec<u8>, WsmanError> {
    STANDARD
        .decode(text.trim())
        .map_err(|_| WsmanError::InvalidBase64(field))
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Space-separated stream names (`stdin pr`, `stdout stderr`).
pub(crate) fn split_streams(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Writes `<name attrs>text</name>`, or `<name attrs/>` when the text is empty, which is
/// how both pypsrp (`<rsp:Command />`) and Windows (`<rsp:ConnectResponse/>`) write empty
/// elements.
pub(crate) fn write_text(w: &mut XmlWriter, name: &str, attrs: &[(&str, &str)], text: &str) {
    if text.is_empty() {
        w.empty(name, attrs);
    } else {
        w.text_element(name, attrs, text);
    }
}

/// Writes `<name>text</name>` when the value is present.
pub(crate) fn write_opt(w: &mut XmlWriter, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        write_text(w, name, &[], v);
    }
}

/// The upper-case GUID text Windows uses for ids (MS-WSMV 2.2.4.37).
pub(crate) fn guid(id: &Uuid) -> String {
    crate::ids::upper(id)
}

/// `True` / `False`, as pypsrp writes booleans in requests (Python `str(bool)`).
pub(crate) fn py_bool(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// `true` / `false`, as Windows writes booleans.
pub(crate) fn xs_bool(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}
