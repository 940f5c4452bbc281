//! The canonical JSON rendering of a CLIXML value, as `tests/python/psrpcore_xcheck.py`
//! defines it (its module docstring, "Canonical rendering of CLIXML"), computed from
//! psfleet's own model so the two implementations can be compared value by value.
//!
//! Primitives are `{"t": tag, "v": value}`; objects are `{"t": "Obj", "types", "tostring",
//! "props", "ms", "coll", "list", "dict", "inner"}`. A `<Ref>` resolves to the same
//! `Arc<PsObject>` in psfleet's model and is rendered in full, as psrpcore does.

use base64::Engine as _;
use psfleet_core::psrp::clixml::{Content, Float, Property, PsObject, Value};
use serde_json::{Value as Json, json};

/// Deeper nesting is refused (the script's `MAX_RENDER_DEPTH`).
pub const MAX_RENDER_DEPTH: usize = 100;

/// Why a value has no canonical rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// Objects nest deeper than [`MAX_RENDER_DEPTH`].
    TooDeep,
    /// A `Sg`/`Db` text that is not a number (tag, text).
    BadFloat(&'static str, String),
    /// A `Version` text that is not two to four numbers.
    BadVersion(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooDeep => write!(f, "objects nest deeper than {MAX_RENDER_DEPTH}"),
            Self::BadFloat(tag, text) => write!(f, "<{tag}> text {text:?} is not a number"),
            Self::BadVersion(text) => write!(f, "<Version> text {text:?} is not a version"),
        }
    }
}

/// The canonical rendering of `value`.
pub fn render(value: &Value) -> Result<Json, RenderError> {
    render_at(value, 0)
}

fn render_at(value: &Value, depth: usize) -> Result<Json, RenderError> {
    if depth > MAX_RENDER_DEPTH {
        return Err(RenderError::TooDeep);
    }
    render_value(value, depth)
}

fn prim(tag: &str, v: Json) -> Json {
    json!({"t": tag, "v": v})
}

/// A JSON number for a finite double, the script's strings for the others.
fn float_json(v: f64) -> Json {
    if v.is_nan() {
        Json::from("NaN")
    } else if v.is_infinite() {
        Json::from(if v > 0.0 { "INF" } else { "-INF" })
    } else {
        serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number)
    }
}

fn float_value(tag: &'static str, f: &Float) -> Result<f64, RenderError> {
    f.value()
        .ok_or_else(|| RenderError::BadFloat(tag, f.as_str().to_owned()))
}

fn render_value(value: &Value, depth: usize) -> Result<Json, RenderError> {
    let tag = value.tag();
    Ok(match value {
        Value::Nil => prim(tag, Json::Null),
        Value::String(s) | Value::Uri(s) | Value::Xml(s) | Value::ScriptBlock(s) => {
            prim(tag, Json::from(s.as_str()))
        }
        Value::Char(c) => prim(tag, Json::from(*c)),
        Value::Bool(b) => prim(tag, Json::from(*b)),
        Value::DateTime(t) => prim(tag, Json::from(t.as_str())),
        Value::Duration(t) => prim(tag, Json::from(t.as_str())),
        Value::Decimal(t) => prim(tag, Json::from(t.as_str())),
        Value::SecureString(t) => prim(tag, Json::from(t.as_str())),
        Value::U8(v) => prim(tag, Json::from(*v)),
        Value::I8(v) => prim(tag, Json::from(*v)),
        Value::U16(v) => prim(tag, Json::from(*v)),
        Value::I16(v) => prim(tag, Json::from(*v)),
        Value::U32(v) => prim(tag, Json::from(*v)),
        Value::I32(v) => prim(tag, Json::from(*v)),
        Value::U64(v) => prim(tag, Json::from(*v)),
        Value::I64(v) => prim(tag, Json::from(*v)),
        Value::Double(f) => prim(tag, float_json(float_value(tag, f)?)),
        Value::Single(f) => {
            // The script's rule: the f32, formatted with Display, read as an f64.
            let v = float_value(tag, f)?;
            let single = v as f32;
            let widened = if single.is_finite() {
                single.to_string().parse::<f64>().unwrap_or(v)
            } else {
                f64::from(single)
            };
            prim(tag, float_json(widened))
        }
        Value::Bytes(b) => prim(
            tag,
            Json::from(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        Value::Guid(g) => prim(tag, Json::from(g.hyphenated().to_string())),
        Value::Version(v) => {
            let parts = v
                .components()
                .ok_or_else(|| RenderError::BadVersion(v.as_str().to_owned()))?;
            let text: Vec<String> = parts.iter().map(u32::to_string).collect();
            prim(tag, Json::from(text.join(".")))
        }
        Value::Object(o) => render_object(o, depth)?,
    })
}

/// Properties as `[name, value]` pairs; a repeated name keeps its first position and its
/// last value (psrpcore keeps one property per name).
fn render_props(props: &[Property], depth: usize) -> Result<Json, RenderError> {
    let mut out: Vec<(String, Json)> = Vec::with_capacity(props.len());
    for prop in props {
        let value = render_at(&prop.value, depth + 1)?;
        match out.iter_mut().find(|(name, _)| *name == prop.name) {
            Some(slot) => slot.1 = value,
            None => out.push((prop.name.clone(), value)),
        }
    }
    Ok(Json::Array(
        out.into_iter()
            .map(|(name, value)| json!([name, value]))
            .collect(),
    ))
}

fn render_items(items: &[Value], depth: usize) -> Result<Json, RenderError> {
    items
        .iter()
        .map(|v| render_at(v, depth + 1))
        .collect::<Result<Vec<_>, _>>()
        .map(Json::Array)
}

fn render_object(o: &PsObject, depth: usize) -> Result<Json, RenderError> {
    let (coll, list, dict, inner) = match &o.content {
        Content::None => (Json::Null, Json::Null, Json::Null, Json::Null),
        Content::Value(v) => (Json::Null, Json::Null, Json::Null, render_at(v, depth + 1)?),
        Content::List(items) => (
            "LST".into(),
            render_items(items, depth)?,
            Json::Null,
            Json::Null,
        ),
        Content::Enumerable(items) => (
            "IE".into(),
            render_items(items, depth)?,
            Json::Null,
            Json::Null,
        ),
        Content::Stack(items) => (
            "STK".into(),
            render_items(items, depth)?,
            Json::Null,
            Json::Null,
        ),
        Content::Queue(items) => (
            "QUE".into(),
            render_items(items, depth)?,
            Json::Null,
            Json::Null,
        ),
        Content::Dictionary(entries) => {
            // psrpcore keys a dict by the key's value: a repeated key keeps its first
            // position and its last value.
            let mut out: Vec<(Json, Json)> = Vec::with_capacity(entries.len());
            for entry in entries {
                let key = render_at(&entry.key, depth + 1)?;
                let value = render_at(&entry.value, depth + 1)?;
                match out.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value,
                    None => out.push((key, value)),
                }
            }
            let dict = out.into_iter().map(|(k, v)| json!([k, v])).collect();
            ("DCT".into(), Json::Null, Json::Array(dict), Json::Null)
        }
    };
    Ok(json!({
        "t": "Obj",
        "types": o.type_names(),
        "tostring": o.to_string,
        "props": render_props(&o.adapted, depth)?,
        "ms": render_props(&o.extended, depth)?,
        "coll": coll,
        "list": list,
        "dict": dict,
        "inner": inner,
    }))
}

/// Wire property `name` of a rendered object (extended first, then adapted), as the
/// script's `_rendered_prop`; `null` when absent or not an object.
pub fn rendered_prop(rendered: &Json, name: &str) -> Json {
    if rendered.get("t").and_then(Json::as_str) != Some("Obj") {
        return Json::Null;
    }
    for group in ["ms", "props"] {
        if let Some(props) = rendered.get(group).and_then(Json::as_array) {
            for pair in props {
                if pair.get(0).and_then(Json::as_str) == Some(name) {
                    return pair.get(1).cloned().unwrap_or(Json::Null);
                }
            }
        }
    }
    Json::Null
}

#[cfg(test)]
mod tests {
    use super::*;
    use psfleet_core::psrp::clixml::{self, DictEntry, Version};

    #[test]
    fn renders_primitives_and_objects_as_the_script_does() {
        assert_eq!(
            render(&Value::Single(Float::from_text("0.1"))).unwrap(),
            json!({"t": "Sg", "v": 0.1})
        );
        assert_eq!(
            render(&Value::Double(Float::from_text("-INF"))).unwrap(),
            json!({"t": "Db", "v": "-INF"})
        );
        assert_eq!(
            render(&Value::Version(Version::from_text("01.2.003"))).unwrap(),
            json!({"t": "Version", "v": "1.2.3"})
        );
        let value = clixml::from_bytes(
            b"<Obj RefId=\"0\"><TN RefId=\"0\"><T>A</T></TN><ToString>x</ToString><I32>3</I32>\
              <MS><S N=\"k\">1</S><S N=\"k\">2</S></MS></Obj>",
        )
        .unwrap();
        assert_eq!(
            render(&value).unwrap(),
            json!({"t": "Obj", "types": ["A"], "tostring": "x", "props": [],
                   "ms": [["k", {"t": "S", "v": "2"}]], "coll": null, "list": null,
                   "dict": null, "inner": {"t": "I32", "v": 3}})
        );
        let dict = Value::dictionary(
            &["H"],
            vec![
                DictEntry {
                    key: "a".into(),
                    value: 1.into(),
                },
                DictEntry {
                    key: "a".into(),
                    value: 2.into(),
                },
            ],
        );
        let rendered = render(&dict).unwrap();
        assert_eq!(
            rendered["dict"],
            json!([[{"t": "S", "v": "a"}, {"t": "I32", "v": 2}]])
        );
        assert_eq!(rendered["coll"], json!("DCT"));
    }
}
