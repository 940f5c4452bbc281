//! CLIXML, the PowerShell object serialization used for every PSRP message body
//! (MS-PSRP 2.2.5).
//!
//! The model is a plain public tree that other crates can walk and render:
//!
//! - [`Value`]: one serialized value. Primitives (MS-PSRP 2.2.5.1) map to one variant each
//!   (`S` -> [`Value::String`], `I32` -> [`Value::I32`], ...); `<Obj>` maps to
//!   [`Value::Object`] holding an `Arc<PsObject>`; `<Ref>` back-references resolve to the
//!   *same* `Arc`, so shared subtrees are never copied and the tree is `Send + Sync`.
//! - [`PsObject`]: a complex object (MS-PSRP 2.2.5.2): type names (`TN`/`TNRef`), an
//!   optional `ToString`, an optional [`Content`] (an enum's or extended primitive's inner
//!   value, or a `LST`/`IE`/`QUE`/`STK` list, or a `DCT` dictionary), adapted properties
//!   (`Props`) and extended properties (`MS`). Enums are objects whose type names include
//!   `System.Enum`, with a `ToString` name and an `I32` content value.
//!
//! Text whose exact form matters for a faithful re-serialization is kept as text with
//! typed accessors: [`DateTime`], [`Duration`], [`Decimal`], [`Version`] and [`Float`].
//! Strings are decoded from the `_xHHHH_` escapes (wire-facts 4.5) when read and encoded
//! again when written.
//!
//! [`from_bytes`] reads untrusted bytes under [`Limits`] (depth and node count, enforced
//! by `core::xml` without recursion); unknown elements are an error that names them.
//! [`to_bytes`] writes a value the way PowerShell does: `RefId`s for objects and type-name
//! lists numbered from 0 in document order, `<Ref>` for an object (the same `Arc`) seen
//! before, `<TNRef>` for a type-name list seen before. The writer is iterative, so even a
//! very deep value built in code cannot overflow the stack.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use uuid::Uuid;

use crate::xml::{self, Element, Node, XmlError, XmlWriter};

/// Namespace of `<Objs>` documents (Export-Clixml files and `#< CLIXML` stderr); PSRP
/// message bodies use no namespace.
pub const OBJS_NAMESPACE: &str = "http://schemas.microsoft.com/powershell/2004/04";

/// A list of type names, most derived first (`TN`), shared between objects of one type.
pub type TypeNames = Arc<[String]>;

/// One CLIXML value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `<Nil />`: null (MS-PSRP 2.2.5.1.20).
    Nil,
    /// `<S>`: string, unescaped (2.2.5.1.1).
    String(String),
    /// `<C>`: a UTF-16 code unit, written as its number (2.2.5.1.2).
    Char(u16),
    /// `<B>`: boolean (2.2.5.1.3).
    Bool(bool),
    /// `<DT>`: date and time, text kept exact (2.2.5.1.4).
    DateTime(DateTime),
    /// `<TS>`: duration, text kept exact (2.2.5.1.5).
    Duration(Duration),
    /// `<By>`: unsigned byte (2.2.5.1.6).
    U8(u8),
    /// `<SB>`: signed byte (2.2.5.1.7).
    I8(i8),
    /// `<U16>` (2.2.5.1.8).
    U16(u16),
    /// `<I16>` (2.2.5.1.9).
    I16(i16),
    /// `<U32>` (2.2.5.1.10).
    U32(u32),
    /// `<I32>` (2.2.5.1.11).
    I32(i32),
    /// `<U64>` (2.2.5.1.12).
    U64(u64),
    /// `<I64>` (2.2.5.1.13).
    I64(i64),
    /// `<Sg>`: single-precision float, text kept exact (2.2.5.1.14).
    Single(Float),
    /// `<Db>`: double-precision float, text kept exact (2.2.5.1.15).
    Double(Float),
    /// `<D>`: decimal, text kept exact (2.2.5.1.16).
    Decimal(Decimal),
    /// `<BA>`: byte array, base64 on the wire (2.2.5.1.17).
    Bytes(Vec<u8>),
    /// `<G>`: GUID (2.2.5.1.18).
    Guid(Uuid),
    /// `<URI>`: URI, unescaped (2.2.5.1.19).
    Uri(String),
    /// `<Version>`: version, text kept exact (2.2.5.1.21).
    Version(Version),
    /// `<XD>`: XML document text, unescaped (2.2.5.1.22).
    Xml(String),
    /// `<SBK>`: script block text, unescaped (2.2.5.1.23).
    ScriptBlock(String),
    /// `<SS>`: secure string: the base64 text of the session-key-encrypted bytes
    /// (2.2.5.1.24), kept as written.
    SecureString(String),
    /// `<Obj>` (or a `<Ref>` to one): a complex object (2.2.5.2).
    Object(Arc<PsObject>),
}

/// A complex object (MS-PSRP 2.2.5.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PsObject {
    /// Type names, most derived first (`TN`/`TNRef`, 2.2.5.2.3); `None` when absent.
    pub type_names: Option<TypeNames>,
    /// The `ToString` text (2.2.5.2.4), unescaped.
    pub to_string: Option<String>,
    /// An inner value or a collection (MS-PSRP 2.2.5.2).
    pub content: Content,
    /// Adapted properties, `<Props>` (2.2.5.2.8), in document order.
    pub adapted: Vec<Property>,
    /// Extended properties, `<MS>` (2.2.5.2.9), in document order.
    pub extended: Vec<Property>,
}

/// What an object holds besides its properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Content {
    /// Nothing (a plain property bag).
    #[default]
    None,
    /// A primitive: an enum's value or an extended primitive's value (a string with note
    /// properties, for example). Never an [`Value::Object`].
    Value(Value),
    /// `<LST>`: list (arrays, `List<T>`, `ArrayList`...).
    List(Vec<Value>),
    /// `<IE>`: other enumerables, written like a list.
    Enumerable(Vec<Value>),
    /// `<QUE>`: queue.
    Queue(Vec<Value>),
    /// `<STK>`: stack.
    Stack(Vec<Value>),
    /// `<DCT>`: dictionary of `<En>` entries.
    Dictionary(Vec<DictEntry>),
}

/// One dictionary entry (`<En>` with children named `Key` and `Value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictEntry {
    /// The key.
    pub key: Value,
    /// The value.
    pub value: Value,
}

/// A named property (the element's `N` attribute, unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Property name.
    pub name: String,
    /// Property value.
    pub value: Value,
}

/// Bounds for reading untrusted CLIXML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum element nesting depth (the root element is depth 1). The value reader
    /// recurses a few frames per level, so keep this at most a few hundred on default
    /// thread stacks.
    pub max_depth: usize,
    /// Maximum number of element and text nodes.
    pub max_nodes: usize,
}

impl Default for Limits {
    /// 100 levels and 2,000,000 nodes: the deepest recorded payload (a
    /// GET_COMMAND_METADATA reply) nests far less; a 64 MiB message cannot hold more
    /// nodes than that without being mostly markup.
    fn default() -> Self {
        Self {
            max_depth: 100,
            max_nodes: 2_000_000,
        }
    }
}

/// Why CLIXML could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClixmlError {
    /// The bytes are not acceptable XML (or exceed the depth or node limits).
    #[error("CLIXML is not acceptable XML: {0}")]
    Xml(#[from] XmlError),
    /// An element that is not part of CLIXML.
    #[error("unknown CLIXML element <{0}>")]
    UnknownElement(String),
    /// A CLIXML element where it is not allowed (for example `<MS>` outside `<Obj>`).
    #[error("CLIXML element <{element}> is not allowed inside <{parent}>")]
    MisplacedElement {
        /// The element found.
        element: String,
        /// Where it was found.
        parent: String,
    },
    /// An element appears twice where only one is allowed (two `<MS>`, two contents...).
    #[error("<{parent}> has more than one <{element}>")]
    Duplicate {
        /// The repeated element (or "content" for a second value or collection).
        element: String,
        /// The object it belongs to.
        parent: String,
    },
    /// A required attribute is missing.
    #[error("<{element}> lacks the {attribute} attribute")]
    MissingAttribute {
        /// The element.
        element: String,
        /// The attribute.
        attribute: &'static str,
    },
    /// A primitive's text does not parse as its type.
    #[error("invalid <{element}> value {text:?}")]
    InvalidValue {
        /// The element.
        element: String,
        /// The offending text (cut to 64 characters).
        text: String,
    },
    /// Non-whitespace text where only elements are allowed.
    #[error("unexpected text inside <{0}>")]
    UnexpectedText(String),
    /// A `<Ref>` to a RefId never defined.
    #[error("<Ref> to unknown RefId {0:?}")]
    UnknownRef(String),
    /// A `<Ref>` to an object that is still being read (a cycle).
    #[error("<Ref> to RefId {0:?} refers to an enclosing object (a cycle)")]
    RefCycle(String),
    /// A RefId defined twice.
    #[error("RefId {0:?} is defined twice")]
    DuplicateRefId(String),
    /// A `<TNRef>` to a type-name list never defined.
    #[error("<TNRef> to unknown RefId {0:?}")]
    UnknownTypeRef(String),
    /// A `<DCT>` entry without a `Key` or `Value` child.
    #[error("dictionary entry lacks its {0} element")]
    IncompleteEntry(&'static str),
    /// Nesting deeper than [`Limits::max_depth`] (in an element tree built elsewhere).
    #[error("CLIXML nests deeper than {0} levels")]
    TooDeep(usize),
    /// A document where one value was expected has no element, or an `<Objs>` document
    /// has the wrong root.
    #[error("expected a CLIXML value, found <{0}>")]
    NotAValue(String),
}

// ===== Value =====

impl Value {
    /// A `<S>` value.
    pub fn string(s: impl Into<String>) -> Self {
        Self::String(s.into())
    }

    /// Wraps an object.
    pub fn object(object: PsObject) -> Self {
        Self::Object(Arc::new(object))
    }

    /// An enum value: `<Obj><TN>type, System.Enum, System.ValueType, System.Object</TN>
    /// <ToString>name</ToString><I32>value</I32></Obj>` (wire-facts 4.5).
    pub fn enumeration(type_name: &str, name: &str, value: i32) -> Self {
        Self::object(PsObject {
            type_names: Some(enum_type_names(type_name)),
            to_string: Some(name.to_owned()),
            content: Content::Value(Value::I32(value)),
            ..PsObject::default()
        })
    }

    /// An object with only extended properties (`<Obj><MS>...</MS></Obj>`), the shape of
    /// most PSRP message bodies.
    pub fn extended(properties: Vec<Property>) -> Self {
        Self::object(PsObject {
            extended: properties,
            ..PsObject::default()
        })
    }

    /// A `<LST>` object with the given type names.
    pub fn list(type_names: &[&str], items: Vec<Value>) -> Self {
        Self::object(PsObject {
            type_names: Some(type_names_of(type_names)),
            content: Content::List(items),
            ..PsObject::default()
        })
    }

    /// A `<DCT>` object with the given type names.
    pub fn dictionary(type_names: &[&str], entries: Vec<DictEntry>) -> Self {
        Self::object(PsObject {
            type_names: Some(type_names_of(type_names)),
            content: Content::Dictionary(entries),
            ..PsObject::default()
        })
    }

    /// The CLIXML element name of this value (`"S"`, `"I32"`, `"Obj"`...).
    pub fn tag(&self) -> &'static str {
        match self {
            Self::Nil => "Nil",
            Self::String(_) => "S",
            Self::Char(_) => "C",
            Self::Bool(_) => "B",
            Self::DateTime(_) => "DT",
            Self::Duration(_) => "TS",
            Self::U8(_) => "By",
            Self::I8(_) => "SB",
            Self::U16(_) => "U16",
            Self::I16(_) => "I16",
            Self::U32(_) => "U32",
            Self::I32(_) => "I32",
            Self::U64(_) => "U64",
            Self::I64(_) => "I64",
            Self::Single(_) => "Sg",
            Self::Double(_) => "Db",
            Self::Decimal(_) => "D",
            Self::Bytes(_) => "BA",
            Self::Guid(_) => "G",
            Self::Uri(_) => "URI",
            Self::Version(_) => "Version",
            Self::Xml(_) => "XD",
            Self::ScriptBlock(_) => "SBK",
            Self::SecureString(_) => "SS",
            Self::Object(_) => "Obj",
        }
    }

    /// True for `<Nil />`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Self::Nil)
    }

    /// The primitive this value stands for: itself, or the inner value of an extended
    /// primitive or enum object.
    pub fn primitive(&self) -> &Value {
        match self {
            Self::Object(o) => match &o.content {
                Content::Value(v) => v,
                _ => self,
            },
            _ => self,
        }
    }

    /// The text of a `S`, `URI`, `XD` or `SBK` value (looking through extended
    /// primitives).
    pub fn as_str(&self) -> Option<&str> {
        match self.primitive() {
            Self::String(s) | Self::Uri(s) | Self::Xml(s) | Self::ScriptBlock(s) => Some(s),
            _ => None,
        }
    }

    /// A `B` value.
    pub fn as_bool(&self) -> Option<bool> {
        match self.primitive() {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An `I32` value, or an enum's value.
    pub fn as_i32(&self) -> Option<i32> {
        match self.primitive() {
            Self::I32(v) => Some(*v),
            _ => None,
        }
    }

    /// Any integer value that fits in an `i64` (`By` through `I64`, `U64` when small).
    pub fn as_i64(&self) -> Option<i64> {
        match self.primitive() {
            Self::U8(v) => Some(i64::from(*v)),
            Self::I8(v) => Some(i64::from(*v)),
            Self::U16(v) => Some(i64::from(*v)),
            Self::I16(v) => Some(i64::from(*v)),
            Self::U32(v) => Some(i64::from(*v)),
            Self::I32(v) => Some(i64::from(*v)),
            Self::I64(v) => Some(*v),
            Self::U64(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// A `Version` value.
    pub fn as_version(&self) -> Option<&Version> {
        match self.primitive() {
            Self::Version(v) => Some(v),
            _ => None,
        }
    }

    /// A `DT` value.
    pub fn as_datetime(&self) -> Option<&DateTime> {
        match self.primitive() {
            Self::DateTime(v) => Some(v),
            _ => None,
        }
    }

    /// The object of an `Obj` value.
    pub fn as_object(&self) -> Option<&PsObject> {
        match self {
            Self::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The items of a list-like object (`LST`, `IE`, `QUE`, `STK`).
    pub fn as_list(&self) -> Option<&[Value]> {
        self.as_object().and_then(PsObject::list)
    }

    /// A short human-readable text: strings as they are, numbers and other primitives in
    /// their CLIXML text form, objects by their `ToString` (or inner value), `Nil` empty.
    pub fn display_text(&self) -> Cow<'_, str> {
        match self {
            Self::Nil => Cow::Borrowed(""),
            Self::String(s) | Self::Uri(s) | Self::Xml(s) | Self::ScriptBlock(s) => {
                Cow::Borrowed(s)
            }
            Self::Char(c) => Cow::Owned(
                char::from_u32(u32::from(*c))
                    .unwrap_or('\u{fffd}')
                    .to_string(),
            ),
            Self::Object(o) => match (&o.to_string, &o.content) {
                (Some(s), _) => Cow::Borrowed(s),
                (None, Content::Value(v)) => v.display_text(),
                (None, _) => Cow::Owned(o.type_names().first().cloned().unwrap_or_default()),
            },
            other => primitive_text(other).unwrap_or_default(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Self::I32(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::I64(v)
    }
}

impl From<PsObject> for Value {
    fn from(o: PsObject) -> Self {
        Self::object(o)
    }
}

// ===== PsObject =====

impl PsObject {
    /// The type names, or an empty slice.
    pub fn type_names(&self) -> &[String] {
        self.type_names.as_deref().unwrap_or(&[])
    }

    /// True when `name` is one of the type names.
    pub fn is_type(&self, name: &str) -> bool {
        self.type_names().iter().any(|t| t == name)
    }

    /// True for an enum value (type names include `System.Enum`).
    pub fn is_enum(&self) -> bool {
        self.is_type("System.Enum")
    }

    /// A property by name, searching extended properties (`MS`) first, then adapted
    /// properties (`Props`). An exact match wins; otherwise names compare ignoring ASCII
    /// case, as PowerShell's member lookup does (pypsrp writes SET_MAX_RUNSPACES' call id
    /// as `CI`, MS-PSRP 2.2.2.6 and psrpcore as `ci`, and Windows reads either).
    pub fn property(&self, name: &str) -> Option<&Value> {
        let mut all = self.extended.iter().chain(&self.adapted);
        all.clone()
            .find(|p| p.name == name)
            .or_else(|| all.find(|p| p.name.eq_ignore_ascii_case(name)))
            .map(|p| &p.value)
    }

    /// All properties, extended first then adapted.
    pub fn properties(&self) -> impl Iterator<Item = &Property> {
        self.extended.iter().chain(&self.adapted)
    }

    /// The items of a `LST`, `IE`, `QUE` or `STK`.
    pub fn list(&self) -> Option<&[Value]> {
        match &self.content {
            Content::List(v) | Content::Enumerable(v) | Content::Queue(v) | Content::Stack(v) => {
                Some(v)
            }
            _ => None,
        }
    }

    /// The entries of a `DCT`.
    pub fn dictionary(&self) -> Option<&[DictEntry]> {
        match &self.content {
            Content::Dictionary(d) => Some(d),
            _ => None,
        }
    }

    /// The value of the first dictionary entry whose key is the string `key`.
    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        self.dictionary()?
            .iter()
            .find(|e| e.key.as_str() == Some(key))
            .map(|e| &e.value)
    }
}

impl Property {
    /// A property.
    pub fn new(name: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Type names `[type_name, System.Enum, System.ValueType, System.Object]`, the list every
/// enum carries (wire-facts 4.5).
pub fn enum_type_names(type_name: &str) -> TypeNames {
    /// The lists of the enumerations PSRP messages carry are built once and shared (an
    /// `Arc` clone instead of five allocations per value, issue 7); the writer compares
    /// type-name lists by content, so sharing changes no byte written.
    macro_rules! shared {
        ($($known:literal)*) => {
            match type_name {
                $($known => {
                    static NAMES: LazyLock<TypeNames> = LazyLock::new(|| build($known));
                    return Arc::clone(&NAMES);
                })*
                _ => {}
            }
        };
    }
    fn build(type_name: &str) -> TypeNames {
        type_names_of(&[
            type_name,
            "System.Enum",
            "System.ValueType",
            "System.Object",
        ])
    }
    shared! {
        "System.Management.Automation.Runspaces.RunspacePoolState"
        "System.Management.Automation.PSInvocationState"
        "System.Management.Automation.Runspaces.PSThreadOptions"
        "System.Management.Automation.Runspaces.ApartmentState"
        "System.Management.Automation.Runspaces.PipelineResultTypes"
        "System.Management.Automation.ProgressRecordType"
        "System.Management.Automation.CommandOrigin"
        "System.Management.Automation.Runspaces.RemoteStreamOptions"
        "System.Management.Automation.Remoting.RemoteHostMethodId"
        "System.Management.Automation.CommandTypes"
        "System.Management.Automation.SessionStateEntryVisibility"
    }
    build(type_name)
}

/// Builds a shared type-name list.
pub fn type_names_of(names: &[&str]) -> TypeNames {
    names.iter().map(|s| (*s).to_owned()).collect()
}

// ===== Text-preserving primitives =====

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Wraps text as written on the wire (not validated; the typed accessors
            /// return `None` when it does not parse).
            pub fn from_text(text: impl Into<String>) -> Self {
                Self(text.into())
            }

            /// The text as written on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type! {
    /// A `DT` value: .NET `DateTime` in XML round-trip form
    /// (`2018-06-13T23:46:28.00516+00:00`).
    DateTime
}
text_type! {
    /// A `TS` value: .NET `TimeSpan` as an XML duration (`PT9.0269026S`, `P1DT2H`).
    Duration
}
text_type! {
    /// A `D` value: .NET `Decimal` text (`1.5`).
    Decimal
}
text_type! {
    /// A `Version` value: two to four dot-separated numbers (`5.1.14393.2248`).
    Version
}
text_type! {
    /// A `Sg` or `Db` value: float text in .NET round-trip form (`1.5`, `1E+20`, `INF`).
    Float
}

/// The parts of a [`DateTime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTimeParts {
    /// Year.
    pub year: u16,
    /// Month, 1-12.
    pub month: u8,
    /// Day, 1-31.
    pub day: u8,
    /// Hour, 0-23.
    pub hour: u8,
    /// Minute.
    pub minute: u8,
    /// Second.
    pub second: u8,
    /// Fraction of a second in 100-nanosecond ticks (0 - 9,999,999).
    pub ticks: u32,
    /// Offset from UTC.
    pub offset: DateTimeOffset,
}

/// How a [`DateTime`] relates to UTC (.NET `DateTimeKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateTimeOffset {
    /// No zone given (`DateTimeKind.Unspecified`).
    Unspecified,
    /// `Z`: UTC.
    Utc,
    /// `+hh:mm` / `-hh:mm`: local time with this offset in minutes.
    Minutes(i16),
}

impl DateTime {
    /// Builds the text PowerShell writes for these parts (fraction without trailing
    /// zeros, omitted when zero).
    pub fn from_parts(p: DateTimeParts) -> Self {
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            p.year, p.month, p.day, p.hour, p.minute, p.second
        );
        if p.ticks > 0 {
            let fraction = format!("{:07}", p.ticks % 10_000_000);
            s.push('.');
            s.push_str(fraction.trim_end_matches('0'));
        }
        match p.offset {
            DateTimeOffset::Unspecified => {}
            DateTimeOffset::Utc => s.push('Z'),
            DateTimeOffset::Minutes(m) => {
                let sign = if m < 0 { '-' } else { '+' };
                let m = m.unsigned_abs();
                let _ = write!(s, "{sign}{:02}:{:02}", m / 60, m % 60);
            }
        }
        Self(s)
    }

    /// Parses the text into its parts.
    pub fn parts(&self) -> Option<DateTimeParts> {
        let s = self.0.trim();
        let b = s.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<u32> {
            let t = s.get(range)?;
            if t.bytes().all(|c| c.is_ascii_digit()) {
                t.parse().ok()
            } else {
                None
            }
        };
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || b.get(10) != Some(&b'T') {
            return None;
        }
        if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return None;
        }
        if second > 60 {
            return None;
        }
        let mut rest = s.get(19..)?;
        let mut ticks = 0u32;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let text = frac.get(..digits)?;
            // .NET writes at most 7 digits; keep the first 7 of anything longer.
            let seven: String = text.chars().chain(std::iter::repeat('0')).take(7).collect();
            ticks = seven.parse().ok()?;
            rest = frac.get(digits..)?;
        }
        let offset = match rest {
            "" => DateTimeOffset::Unspecified,
            "Z" => DateTimeOffset::Utc,
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1i16,
                    b'-' => -1,
                    _ => return None,
                };
                let (h, m) = rest.get(1..)?.split_once(':')?;
                if h.len() != 2 || m.len() != 2 {
                    return None;
                }
                let h: i16 = h.parse().ok()?;
                let m: i16 = m.parse().ok()?;
                if h > 14 || m > 59 {
                    return None;
                }
                DateTimeOffset::Minutes(sign * (h * 60 + m))
            }
        };
        Some(DateTimeParts {
            year: u16::try_from(year).ok()?,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            ticks,
            offset,
        })
    }
}

/// 100-nanosecond ticks per second (.NET `TimeSpan.TicksPerSecond`).
pub const TICKS_PER_SECOND: i64 = 10_000_000;

impl Duration {
    /// Builds the text .NET writes for a `TimeSpan` of `ticks` 100-ns units
    /// (`XmlConvert.ToString(TimeSpan)`: `PT0S`, `PT1.5S`, `P1DT2H`, `-PT1M`).
    pub fn from_ticks(ticks: i64) -> Self {
        let negative = ticks < 0;
        let mut rest = ticks.unsigned_abs();
        let per_day = 864_000_000_000u64;
        let days = rest / per_day;
        rest %= per_day;
        let mut s = String::new();
        if negative {
            s.push('-');
        }
        s.push('P');
        if days > 0 {
            let _ = write!(s, "{days}D");
        }
        if rest > 0 || days == 0 {
            s.push('T');
            let hours = rest / 36_000_000_000;
            rest %= 36_000_000_000;
            let minutes = rest / 600_000_000;
            rest %= 600_000_000;
            if hours > 0 {
                let _ = write!(s, "{hours}H");
            }
            if minutes > 0 {
                let _ = write!(s, "{minutes}M");
            }
            if rest > 0 || (hours == 0 && minutes == 0) {
                let whole = rest / 10_000_000;
                let frac = rest % 10_000_000;
                let _ = write!(s, "{whole}");
                if frac > 0 {
                    let f = format!("{frac:07}");
                    s.push('.');
                    s.push_str(f.trim_end_matches('0'));
                }
                s.push('S');
            }
        }
        Self(s)
    }

    /// The duration in 100-nanosecond ticks (days, hours, minutes and seconds; years and
    /// months are refused as .NET does).
    pub fn ticks(&self) -> Option<i64> {
        let s = self.0.trim();
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let s = s.strip_prefix('P')?;
        let (date, time) = match s.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        if date.is_empty() && time.is_none_or(str::is_empty) {
            return None;
        }
        let mut total: i64 = 0;
        if !date.is_empty() {
            let days = date.strip_suffix('D')?;
            total = checked_digits(days)?.checked_mul(864_000_000_000)?;
        }
        if let Some(mut t) = time {
            if t.is_empty() {
                return None;
            }
            for (unit, ticks) in [('H', 36_000_000_000i64), ('M', 600_000_000)] {
                if let Some((n, rest)) = t.split_once(unit) {
                    total = total.checked_add(checked_digits(n)?.checked_mul(ticks)?)?;
                    t = rest;
                }
            }
            if !t.is_empty() {
                let secs = t.strip_suffix('S')?;
                let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
                let whole = if whole.is_empty() {
                    0
                } else {
                    checked_digits(whole)?
                };
                total = total.checked_add(whole.checked_mul(TICKS_PER_SECOND)?)?;
                if !frac.is_empty() {
                    if !frac.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    let seven: String =
                        frac.chars().chain(std::iter::repeat('0')).take(7).collect();
                    total = total.checked_add(seven.parse::<i64>().ok()?)?;
                }
            }
        }
        Some(if negative { -total } else { total })
    }
}

fn checked_digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Decimal {
    /// The value as a float (approximate).
    pub fn to_f64(&self) -> Option<f64> {
        self.0.trim().parse().ok()
    }
}

impl Version {
    /// A version from its components (`major.minor[.build[.revision]]`).
    pub fn new(major: u32, minor: u32, build: Option<u32>, revision: Option<u32>) -> Self {
        let mut s = format!("{major}.{minor}");
        if let Some(b) = build {
            let _ = write!(s, ".{b}");
            if let Some(r) = revision {
                let _ = write!(s, ".{r}");
            }
        }
        Self(s)
    }

    /// Parses and validates version text.
    pub fn parse(text: &str) -> Option<Self> {
        let v = Self(text.to_owned());
        v.components().map(|_| v)
    }

    /// The two to four components.
    pub fn components(&self) -> Option<Vec<u32>> {
        let parts: Vec<u32> = self
            .0
            .trim()
            .split('.')
            .map(|p| {
                if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse().ok()
                } else {
                    None
                }
            })
            .collect::<Option<_>>()?;
        (2..=4).contains(&parts.len()).then_some(parts)
    }

    /// `(major, minor)`.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let c = self.components()?;
        Some((*c.first()?, *c.get(1)?))
    }
}

impl Float {
    /// The text .NET writes for a double (`XmlConvert.ToString(double)`: shortest
    /// round-trip digits, exponent form below 1E-04 and from 1E+15, `INF`, `-INF`, `NaN`).
    pub fn from_f64(v: f64) -> Self {
        Self(format_float(v, format!("{v:e}")))
    }

    /// The text .NET writes for a single.
    pub fn from_f32(v: f32) -> Self {
        Self(format_float(f64::from(v), format!("{v:e}")))
    }

    /// The value (`INF`, `-INF` and `NaN` included).
    pub fn value(&self) -> Option<f64> {
        match self.0.trim() {
            "INF" | "Infinity" => Some(f64::INFINITY),
            "-INF" | "-Infinity" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            t => {
                if t.bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                    && !t.is_empty()
                {
                    t.parse().ok()
                } else {
                    None
                }
            }
        }
    }
}

fn format_float(v: f64, sci: String) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "INF".into() } else { "-INF".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // `sci` is Rust's shortest round-trip form, e.g. "-1.2345e3".
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::from(sign);
    if !(-4..15).contains(&exp) {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "E{esign}{:02}", exp.unsigned_abs());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            let (int, frac) = digits.split_at(int_len);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    }
    out
}

// ===== String escaping =====

/// Escapes a string the way PowerShell's serializer does (wire-facts 4.5, psrpcore
/// `_serialize_string`): C0 controls, DEL and C1 controls, and both halves of every
/// surrogate pair become `_xHHHH_` (upper-case hex of the UTF-16 code unit), and an
/// underscore followed by `x` or `X` becomes `_x005F_` so that a literal `_x` survives.
pub fn encode_string(s: &str) -> Cow<'_, str> {
    let needs = s
        .chars()
        .zip(s.chars().skip(1).map(Some).chain([None]))
        .any(|(c, next)| needs_escape(c) || (c == '_' && matches!(next, Some('x' | 'X'))));
    if !needs {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '_' && matches!(chars.peek(), Some('x' | 'X')) {
            out.push_str("_x005F_");
        } else if needs_escape(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "_x{unit:04X}_");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    let v = u32::from(c);
    v <= 0x1F || (0x7F..=0x9F).contains(&v) || v > 0xFFFF
}

/// Undoes [`encode_string`]: decodes `_xHHHH_` (a UTF-16 code unit, surrogate pairs
/// joined) and `_xHHHHHHHH_` (a code point), with `x` in either case, as .NET
/// `XmlConvert.DecodeName` does. A lone surrogate becomes U+FFFD; anything that is not a
/// complete escape is kept as written.
pub fn decode_string(s: &str) -> Cow<'_, str> {
    if !s.contains("_x") && !s.contains("_X") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut pending_high: Option<u16> = None;
    let mut rest = s;
    while !rest.is_empty() {
        if let Some((unit_or_cp, len)) = parse_escape(rest) {
            rest = rest.get(len..).unwrap_or("");
            match unit_or_cp {
                Escaped::Unit(u) => {
                    if (0xD800..0xDC00).contains(&u) {
                        if pending_high.replace(u).is_some() {
                            out.push('\u{fffd}');
                        }
                        continue;
                    }
                    if (0xDC00..0xE000).contains(&u) {
                        match pending_high.take() {
                            Some(h) => {
                                let cp = 0x10000
                                    + ((u32::from(h) - 0xD800) << 10)
                                    + (u32::from(u) - 0xDC00);
                                out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                            }
                            None => out.push('\u{fffd}'),
                        }
                        continue;
                    }
                    flush_high(&mut out, &mut pending_high);
                    out.push(char::from_u32(u32::from(u)).unwrap_or('\u{fffd}'));
                }
                Escaped::CodePoint(c) => {
                    flush_high(&mut out, &mut pending_high);
                    out.push(c);
                }
            }
            continue;
        }
        flush_high(&mut out, &mut pending_high);
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    flush_high(&mut out, &mut pending_high);
    Cow::Owned(out)
}

enum Escaped {
    Unit(u16),
    CodePoint(char),
}

fn flush_high(out: &mut String, pending: &mut Option<u16>) {
    if pending.take().is_some() {
        out.push('\u{fffd}');
    }
}

/// Recognises `_xHHHH_` or `_xHHHHHHHH_` at the start of `s`; returns it and its length.
fn parse_escape(s: &str) -> Option<(Escaped, usize)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'_') || !matches!(b.get(1), Some(b'x' | b'X')) {
        return None;
    }
    let hex_len = |n: usize| {
        b.get(2..2 + n)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    };
    if hex_len(4) && b.get(6) == Some(&b'_') {
        let unit = u16::from_str_radix(s.get(2..6)?, 16).ok()?;
        return Some((Escaped::Unit(unit), 7));
    }
    if hex_len(8) && b.get(10) == Some(&b'_') {
        let cp = u32::from_str_radix(s.get(2..10)?, 16).ok()?;
        // .NET leaves out-of-range code points undecoded; a BMP value is one code unit.
        if cp < 0x10000 {
            return Some((Escaped::Unit(cp as u16), 11));
        }
        return char::from_u32(cp).map(|c| (Escaped::CodePoint(c), 11));
    }
    None
}

// ===== Reading =====

/// Reads one CLIXML value from bytes (a leading UTF-8 BOM is skipped) with the default
/// [`Limits`].
pub fn from_bytes(bytes: &[u8]) -> Result<Value, ClixmlError> {
    from_bytes_with(bytes, Limits::default())
}

/// Reads one CLIXML value from bytes with the given limits.
pub fn from_bytes_with(bytes: &[u8], limits: Limits) -> Result<Value, ClixmlError> {
    let root = xml::parse_with(
        bytes,
        xml::Limits {
            max_depth: limits.max_depth,
            max_nodes: limits.max_nodes,
        },
    )?;
    from_element_with(&root, limits)
}

/// Reads one CLIXML value from an element already parsed (for example the
/// `<Obj>` of a PSRP message), with the default [`Limits`].
pub fn from_element(element: &Element) -> Result<Value, ClixmlError> {
    from_element_with(element, Limits::default())
}

/// Reads one CLIXML value from an element with the given limits.
pub fn from_element_with(element: &Element, limits: Limits) -> Result<Value, ClixmlError> {
    Reader::new(limits).value(element, 1)
}

/// Reads an `<Objs>` document (Export-Clixml output, or the body of a `#< CLIXML`
/// stderr stream) into its values. Each top-level value has its own RefId scope, as in
/// PowerShell.
pub fn from_objs_document(bytes: &[u8]) -> Result<Vec<Value>, ClixmlError> {
    let limits = Limits::default();
    let root = xml::parse_with(
        bytes,
        xml::Limits {
            max_depth: limits.max_depth,
            max_nodes: limits.max_nodes,
        },
    )?;
    if root.name != "Objs" || !known_namespace(&root) {
        return Err(ClixmlError::NotAValue(root.name.to_string()));
    }
    let mut values = Vec::new();
    for child in element_children(&root)? {
        values.push(Reader::new(limits).value(child, 2)?);
    }
    Ok(values)
}

/// Writes a value as a CLIXML document (no XML declaration, no BOM).
pub fn to_bytes(value: &Value) -> Vec<u8> {
    let mut w = XmlWriter::new();
    write_value(&mut w, value, None);
    w.into_bytes()
}

/// Writes a value into a larger document, with an optional property name (`N`). RefIds
/// and type-name ids start at 0 for each call.
pub fn write_value(w: &mut XmlWriter, value: &Value, name: Option<&str>) {
    Writer::default().write(w, value, name);
}

/// Writes an `<Objs>` document holding `values` (the Export-Clixml form).
pub fn to_objs_document(values: &[Value]) -> Vec<u8> {
    let mut w = XmlWriter::new();
    w.start("Objs", &[("Version", "1.1.0.1"), ("xmlns", OBJS_NAMESPACE)]);
    for v in values {
        write_value(&mut w, v, None);
    }
    w.end("Objs");
    w.into_bytes()
}

fn known_namespace(e: &Element) -> bool {
    e.ns.is_empty() || e.ns == OBJS_NAMESPACE
}

/// The element children of `e`; text other than whitespace is an error.
fn element_children(e: &Element) -> Result<Vec<&Element>, ClixmlError> {
    let mut out = Vec::with_capacity(e.children.len());
    for child in &e.children {
        match child {
            Node::Element(c) => out.push(c),
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Text(_) => return Err(ClixmlError::UnexpectedText(e.name.to_string())),
        }
    }
    Ok(out)
}

struct Reader<'a> {
    limits: Limits,
    objects: HashMap<&'a str, Arc<PsObject>>,
    building: Vec<&'a str>,
    type_names: HashMap<&'a str, TypeNames>,
}

impl<'a> Reader<'a> {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            objects: HashMap::new(),
            building: Vec::new(),
            type_names: HashMap::new(),
        }
    }

    fn value(&mut self, e: &'a Element, depth: usize) -> Result<Value, ClixmlError> {
        if depth > self.limits.max_depth {
            return Err(ClixmlError::TooDeep(self.limits.max_depth));
        }
        if !known_namespace(e) {
            return Err(ClixmlError::UnknownElement(format!(
                "{{{}}}{}",
                e.ns, e.name
            )));
        }
        match e.name.as_ref() {
            "Obj" => self.object(e, depth).map(Value::Object),
            "Ref" => {
                let id = require_attr(e, "RefId")?;
                if let Some(o) = self.objects.get(id) {
                    Ok(Value::Object(Arc::clone(o)))
                } else if self.building.contains(&id) {
                    Err(ClixmlError::RefCycle(id.to_owned()))
                } else {
                    Err(ClixmlError::UnknownRef(id.to_owned()))
                }
            }
            _ => primitive(e),
        }
    }

    fn object(&mut self, e: &'a Element, depth: usize) -> Result<Arc<PsObject>, ClixmlError> {
        let ref_id = e.attr("RefId");
        if let Some(id) = ref_id {
            if self.objects.contains_key(id) || self.building.contains(&id) {
                return Err(ClixmlError::DuplicateRefId(id.to_owned()));
            }
            self.building.push(id);
        }
        let object = self.object_body(e, depth);
        if ref_id.is_some() {
            self.building.pop();
        }
        let object = Arc::new(object?);
        if let Some(id) = ref_id {
            self.objects.insert(id, Arc::clone(&object));
        }
        Ok(object)
    }

    fn object_body(&mut self, e: &'a Element, depth: usize) -> Result<PsObject, ClixmlError> {
        let mut object = PsObject::default();
        let mut seen_tn = false;
        let mut seen_props = false;
        let mut seen_ms = false;
        let dup = |element: &str| ClixmlError::Duplicate {
            element: element.to_owned(),
            parent: "Obj".to_owned(),
        };
        for child in element_children(e)? {
            if !known_namespace(child) {
                return Err(ClixmlError::UnknownElement(child.name.to_string()));
            }
            let name = child.name.as_ref();
            match name {
                "TN" | "TNRef" => {
                    if std::mem::replace(&mut seen_tn, true) {
                        return Err(dup("TN"));
                    }
                    object.type_names = Some(self.type_names(child)?);
                }
                "ToString" => {
                    if object.to_string.is_some() {
                        return Err(dup(name));
                    }
                    no_child_elements(child)?;
                    object.to_string = Some(decode_string(&child.text()).into_owned());
                }
                "Props" | "MS" => {
                    let seen = if name == "MS" {
                        &mut seen_ms
                    } else {
                        &mut seen_props
                    };
                    if std::mem::replace(seen, true) {
                        return Err(dup(name));
                    }
                    let props = self.properties(child, depth + 1)?;
                    if name == "MS" {
                        object.extended = props;
                    } else {
                        object.adapted = props;
                    }
                }
                "LST" | "IE" | "QUE" | "STK" | "DCT" => {
                    if object.content != Content::None {
                        return Err(dup("content"));
                    }
                    object.content = self.collection(child, depth + 1)?;
                }
                "Obj" | "Ref" | "En" | "T" | "Objs" => {
                    return Err(ClixmlError::MisplacedElement {
                        element: name.to_owned(),
                        parent: "Obj".to_owned(),
                    });
                }
                _ => {
                    if object.content != Content::None {
                        return Err(dup("content"));
                    }
                    object.content = Content::Value(primitive(child)?);
                }
            }
        }
        Ok(object)
    }

    fn type_names(&mut self, e: &'a Element) -> Result<TypeNames, ClixmlError> {
        let id = require_attr(e, "RefId")?;
        if e.name == "TNRef" {
            no_child_elements(e)?;
            return self
                .type_names
                .get(id)
                .cloned()
                .ok_or_else(|| ClixmlError::UnknownTypeRef(id.to_owned()));
        }
        let mut names = Vec::new();
        for t in element_children(e)? {
            if t.name != "T" || !known_namespace(t) {
                return Err(misplaced(t, "TN"));
            }
            no_child_elements(t)?;
            names.push(decode_string(&t.text()).into_owned());
        }
        let names: TypeNames = names.into();
        if self.type_names.insert(id, Arc::clone(&names)).is_some() {
            return Err(ClixmlError::DuplicateRefId(id.to_owned()));
        }
        Ok(names)
    }

    fn properties(&mut self, e: &'a Element, depth: usize) -> Result<Vec<Property>, ClixmlError> {
        let children = element_children(e)?;
        let mut props = Vec::with_capacity(children.len());
        for child in children {
            check_value_tag(child, &e.name)?;
            let name = require_attr(child, "N")?;
            props.push(Property {
                name: decode_string(name).into_owned(),
                value: self.value(child, depth + 1)?,
            });
        }
        Ok(props)
    }

    fn collection(&mut self, e: &'a Element, depth: usize) -> Result<Content, ClixmlError> {
        let children = element_children(e)?;
        if e.name == "DCT" {
            let mut entries = Vec::with_capacity(children.len());
            for en in children {
                if en.name != "En" || !known_namespace(en) {
                    return Err(misplaced(en, "DCT"));
                }
                let mut key = None;
                let mut value = None;
                for part in element_children(en)? {
                    check_value_tag(part, "En")?;
                    let slot = match part.attr("N") {
                        Some("Key") => &mut key,
                        Some("Value") => &mut value,
                        _ => {
                            return Err(ClixmlError::MissingAttribute {
                                element: part.name.to_string(),
                                attribute: "N=\"Key\" or N=\"Value\"",
                            });
                        }
                    };
                    if slot.is_some() {
                        return Err(ClixmlError::Duplicate {
                            element: part.attr("N").unwrap_or_default().to_owned(),
                            parent: "En".to_owned(),
                        });
                    }
                    *slot = Some(self.value(part, depth + 2)?);
                }
                entries.push(DictEntry {
                    key: key.ok_or(ClixmlError::IncompleteEntry("Key"))?,
                    value: value.ok_or(ClixmlError::IncompleteEntry("Value"))?,
                });
            }
            return Ok(Content::Dictionary(entries));
        }
        let mut items = Vec::with_capacity(children.len());
        for child in children {
            check_value_tag(child, &e.name)?;
            items.push(self.value(child, depth + 1)?);
        }
        Ok(match e.name.as_ref() {
            "IE" => Content::Enumerable(items),
            "QUE" => Content::Queue(items),
            "STK" => Content::Stack(items),
            _ => Content::List(items),
        })
    }
}

/// Element names that stand for a value.
const VALUE_TAGS: &[&str] = &[
    "Nil", "S", "C", "B", "DT", "TS", "By", "SB", "U16", "I16", "U32", "I32", "U64", "I64", "Sg",
    "Db", "D", "BA", "G", "URI", "Version", "XD", "SBK", "SS", "Obj", "Ref",
];

/// Structural CLIXML element names (known, but not values).
const STRUCTURE_TAGS: &[&str] = &[
    "TN", "TNRef", "T", "ToString", "Props", "MS", "LST", "IE", "QUE", "STK", "DCT", "En", "Objs",
];

fn check_value_tag(e: &Element, parent: &str) -> Result<(), ClixmlError> {
    if known_namespace(e) && VALUE_TAGS.contains(&e.name.as_ref()) {
        Ok(())
    } else {
        Err(misplaced(e, parent))
    }
}

fn misplaced(e: &Element, parent: &str) -> ClixmlError {
    if known_namespace(e) && STRUCTURE_TAGS.contains(&e.name.as_ref())
        || VALUE_TAGS.contains(&e.name.as_ref())
    {
        ClixmlError::MisplacedElement {
            element: e.name.to_string(),
            parent: parent.to_owned(),
        }
    } else {
        ClixmlError::UnknownElement(e.name.to_string())
    }
}

fn require_attr<'e>(e: &'e Element, attribute: &'static str) -> Result<&'e str, ClixmlError> {
    e.attr(attribute)
        .ok_or_else(|| ClixmlError::MissingAttribute {
            element: e.name.to_string(),
            attribute,
        })
}

fn no_child_elements(e: &Element) -> Result<(), ClixmlError> {
    match e.elements().next() {
        Some(child) => Err(misplaced(child, &e.name)),
        None => Ok(()),
    }
}

fn invalid(e: &Element, text: &str) -> ClixmlError {
    ClixmlError::InvalidValue {
        element: e.name.to_string(),
        text: text.chars().take(64).collect(),
    }
}

fn parse_num<T: std::str::FromStr>(e: &Element, text: &str) -> Result<T, ClixmlError> {
    let t = text.trim();
    // Rust accepts a leading '+', .NET XmlConvert does too; nothing else differs for
    // plain decimal integers.
    t.parse().map_err(|_| invalid(e, text))
}

/// Reads a primitive element (anything but `Obj`/`Ref`).
fn primitive(e: &Element) -> Result<Value, ClixmlError> {
    if !known_namespace(e) || !VALUE_TAGS.contains(&e.name.as_ref()) {
        return Err(misplaced(e, "value"));
    }
    no_child_elements(e)?;
    let text = e.text();
    let text = text.as_ref();
    Ok(match e.name.as_ref() {
        "Nil" => Value::Nil,
        "S" => Value::String(decode_string(text).into_owned()),
        "URI" => Value::Uri(decode_string(text).into_owned()),
        "XD" => Value::Xml(decode_string(text).into_owned()),
        "SBK" => Value::ScriptBlock(decode_string(text).into_owned()),
        "SS" => Value::SecureString(text.to_owned()),
        "C" => Value::Char(parse_num(e, text)?),
        "B" => match text.trim() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(invalid(e, text)),
        },
        "DT" => Value::DateTime(DateTime(text.to_owned())),
        "TS" => Value::Duration(Duration(text.to_owned())),
        "D" => Value::Decimal(Decimal(text.to_owned())),
        "Version" => match Version::parse(text) {
            Some(v) => Value::Version(v),
            None => return Err(invalid(e, text)),
        },
        "Sg" | "Db" => {
            let f = Float(text.to_owned());
            if f.value().is_none() {
                return Err(invalid(e, text));
            }
            if e.name == "Sg" {
                Value::Single(f)
            } else {
                Value::Double(f)
            }
        }
        "By" => Value::U8(parse_num(e, text)?),
        "SB" => Value::I8(parse_num(e, text)?),
        "U16" => Value::U16(parse_num(e, text)?),
        "I16" => Value::I16(parse_num(e, text)?),
        "U32" => Value::U32(parse_num(e, text)?),
        "I32" => Value::I32(parse_num(e, text)?),
        "U64" => Value::U64(parse_num(e, text)?),
        "I64" => Value::I64(parse_num(e, text)?),
        "BA" => {
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
                Ok(bytes) => Value::Bytes(bytes),
                Err(_) => return Err(invalid(e, text)),
            }
        }
        "G" => match Uuid::parse_str(text.trim()) {
            Ok(g) => Value::Guid(g),
            Err(_) => return Err(invalid(e, text)),
        },
        // Obj and Ref are handled by the reader.
        other => {
            return Err(ClixmlError::MisplacedElement {
                element: other.to_owned(),
                parent: "Obj".to_owned(),
            });
        }
    })
}

/// The CLIXML text of a primitive (None for `Nil` and objects); borrowed where the value
/// already holds its wire text.
fn primitive_text(v: &Value) -> Option<Cow<'_, str>> {
    let owned = |text: String| Some(Cow::Owned(text));
    match v {
        Value::Nil | Value::Object(_) => None,
        Value::String(s) | Value::Uri(s) | Value::Xml(s) | Value::ScriptBlock(s) => {
            Some(encode_string(s))
        }
        Value::SecureString(s) => Some(Cow::Borrowed(s)),
        Value::Char(c) => owned(c.to_string()),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::DateTime(t) => Some(Cow::Borrowed(&t.0)),
        Value::Duration(t) => Some(Cow::Borrowed(&t.0)),
        Value::Decimal(t) => Some(Cow::Borrowed(&t.0)),
        Value::Version(t) => Some(Cow::Borrowed(&t.0)),
        Value::Single(t) | Value::Double(t) => Some(Cow::Borrowed(&t.0)),
        Value::U8(n) => owned(n.to_string()),
        Value::I8(n) => owned(n.to_string()),
        Value::U16(n) => owned(n.to_string()),
        Value::I16(n) => owned(n.to_string()),
        Value::U32(n) => owned(n.to_string()),
        Value::I32(n) => owned(n.to_string()),
        Value::U64(n) => owned(n.to_string()),
        Value::I64(n) => owned(n.to_string()),
        Value::Bytes(b) => owned(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Guid(g) => owned(g.hyphenated().to_string()),
    }
}

// ===== Writing =====

/// Pending work for the iterative writer.
enum Step<'a> {
    Value(&'a Value, Option<&'a str>),
    Open(&'static str),
    Close(&'static str),
    Empty(&'static str),
}

#[derive(Default)]
struct Writer<'a> {
    ref_ids: HashMap<*const PsObject, usize>,
    type_ids: HashMap<&'a [String], usize>,
}

impl<'a> Writer<'a> {
    fn write(&mut self, w: &mut XmlWriter, value: &'a Value, name: Option<&'a str>) {
        let mut stack = vec![Step::Value(value, name)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Open(tag) => {
                    w.start(tag, &[]);
                }
                Step::Close(tag) => {
                    w.end(tag);
                }
                Step::Empty(tag) => {
                    w.empty(tag, &[]);
                }
                Step::Value(value, name) => self.write_one(w, value, name, &mut stack),
            }
        }
    }

    fn write_one(
        &mut self,
        w: &mut XmlWriter,
        value: &'a Value,
        name: Option<&'a str>,
        stack: &mut Vec<Step<'a>>,
    ) {
        let encoded_name = name.map(encode_string);
        // `N` then `RefId`, at most; a fixed array spares a Vec per value.
        let mut attrs: [(&str, &str); 2] = [("", ""); 2];
        let mut count = 0;
        if let Some(n) = &encoded_name {
            attrs[0] = ("N", n);
            count = 1;
        }
        let Value::Object(object) = value else {
            let attrs = attrs.get(..count).unwrap_or_default();
            match primitive_text(value) {
                Some(text) if !text.is_empty() => {
                    w.text_element(value.tag(), attrs, &text);
                }
                _ => {
                    w.empty(value.tag(), attrs);
                }
            }
            return;
        };
        let ptr = Arc::as_ptr(object);
        let mut digits = [0u8; 20];
        if let Some(&id) = self.ref_ids.get(&ptr) {
            attrs[count] = ("RefId", xml::decimal(id as u64, &mut digits));
            w.empty("Ref", attrs.get(..=count).unwrap_or_default());
            return;
        }
        let id = self.ref_ids.len();
        self.ref_ids.insert(ptr, id);
        attrs[count] = ("RefId", xml::decimal(id as u64, &mut digits));
        let attrs = attrs.get(..=count).unwrap_or_default();
        let o: &'a PsObject = object;
        let has_body = o.type_names.is_some()
            || o.to_string.is_some()
            || o.content != Content::None
            || !o.adapted.is_empty()
            || !o.extended.is_empty();
        if !has_body {
            w.empty("Obj", attrs);
            return;
        }
        w.start("Obj", attrs);
        if let Some(names) = &o.type_names {
            let key: &'a [String] = names;
            let mut digits = [0u8; 20];
            match self.type_ids.get(key) {
                Some(&tn) => {
                    w.empty("TNRef", &[("RefId", xml::decimal(tn as u64, &mut digits))]);
                }
                None => {
                    let tn = self.type_ids.len();
                    self.type_ids.insert(key, tn);
                    if names.is_empty() {
                        w.empty("TN", &[("RefId", xml::decimal(tn as u64, &mut digits))]);
                    } else {
                        w.start("TN", &[("RefId", xml::decimal(tn as u64, &mut digits))]);
                        for t in names.iter() {
                            w.text_element("T", &[], &encode_string(t));
                        }
                        w.end("TN");
                    }
                }
            }
        }
        if let Some(s) = &o.to_string {
            let s = encode_string(s);
            if s.is_empty() {
                w.empty("ToString", &[]);
            } else {
                w.text_element("ToString", &[], &s);
            }
        }
        // Children that may nest are pushed in reverse so they pop in document order.
        stack.push(Step::Close("Obj"));
        push_properties(stack, "MS", &o.extended);
        push_properties(stack, "Props", &o.adapted);
        match &o.content {
            Content::None => {}
            Content::Value(v) => stack.push(Step::Value(v, None)),
            Content::List(items) => push_items(stack, "LST", items),
            Content::Enumerable(items) => push_items(stack, "IE", items),
            Content::Queue(items) => push_items(stack, "QUE", items),
            Content::Stack(items) => push_items(stack, "STK", items),
            Content::Dictionary(entries) => {
                if entries.is_empty() {
                    stack.push(Step::Empty("DCT"));
                } else {
                    stack.push(Step::Close("DCT"));
                    for entry in entries.iter().rev() {
                        stack.push(Step::Close("En"));
                        stack.push(Step::Value(&entry.value, Some("Value")));
                        stack.push(Step::Value(&entry.key, Some("Key")));
                        stack.push(Step::Open("En"));
                    }
                    stack.push(Step::Open("DCT"));
                }
            }
        }
    }
}

fn push_properties<'a>(stack: &mut Vec<Step<'a>>, tag: &'static str, props: &'a [Property]) {
    if props.is_empty() {
        return;
    }
    stack.push(Step::Close(tag));
    for p in props.iter().rev() {
        stack.push(Step::Value(&p.value, Some(&p.name)));
    }
    stack.push(Step::Open(tag));
}

fn push_items<'a>(stack: &mut Vec<Step<'a>>, tag: &'static str, items: &'a [Value]) {
    if items.is_empty() {
        stack.push(Step::Empty(tag));
        return;
    }
    stack.push(Step::Close(tag));
    for item in items.iter().rev() {
        stack.push(Step::Value(item, None));
    }
    stack.push(Step::Open(tag));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(doc: &str) -> Value {
        let value = from_bytes(doc.as_bytes()).unwrap();
        let again = to_bytes(&value);
        assert_eq!(
            xml::parse(&again).unwrap(),
            xml::parse(doc.as_bytes()).unwrap(),
            "re-serialized: {}",
            String::from_utf8_lossy(&again)
        );
        value
    }

    #[test]
    fn values_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Value>();
        send_sync::<PsObject>();
    }

    #[test]
    fn escapes_like_powershell() {
        assert_eq!(encode_string("plain text"), "plain text");
        assert_eq!(encode_string("a\r\nb"), "a_x000D__x000A_b");
        assert_eq!(encode_string("tab\there"), "tab_x0009_here");
        assert_eq!(
            encode_string("_x and _X but _y"),
            "_x005F_x and _x005F_X but _y"
        );
        assert_eq!(encode_string("_x000A_"), "_x005F_x000A_");
        assert_eq!(encode_string("\u{7f}\u{85}\u{a0}"), "_x007F__x0085_\u{a0}");
        assert_eq!(encode_string("smile 😀"), "smile _xD83D__xDE00_");
        assert_eq!(encode_string("é ü 中"), "é ü 中");
        for s in [
            "a\r\nb",
            "_x005F_",
            "😀_x",
            "x_",
            "_",
            "\u{0}\u{1f}",
            "_X1234_",
        ] {
            assert_eq!(decode_string(&encode_string(s)), s, "{s:?}");
        }
    }

    #[test]
    fn unescapes_every_form() {
        assert_eq!(decode_string("line_x000A_next"), "line\nnext");
        assert_eq!(decode_string("_X000a_"), "\n");
        assert_eq!(decode_string("_xD83D__xDE00_"), "😀");
        assert_eq!(decode_string("_x0001F600_"), "😀");
        // Lone surrogates cannot live in a Rust string.
        assert_eq!(decode_string("a_xD83D_b"), "a\u{fffd}b");
        assert_eq!(decode_string("_xDE00_"), "\u{fffd}");
        // Not escapes: kept as written.
        assert_eq!(
            decode_string("_x12_ _xZZZZ_ _x1234"),
            "_x12_ _xZZZZ_ _x1234"
        );
        assert_eq!(decode_string("_x005F_x000A_"), "_x000A_");
    }

    #[test]
    fn reads_every_primitive() {
        let doc = concat!(
            r#"<Obj RefId="0"><MS>"#,
            r#"<Nil N="nil" /><S N="s">a_x000A_b</S><C N="c">97</C><B N="b">true</B>"#,
            r#"<DT N="dt">2018-06-13T23:46:28.00516+00:00</DT><TS N="ts">PT9.0269026S</TS>"#,
            r#"<By N="by">255</By><SB N="sb">-128</SB><U16 N="u16">65535</U16><I16 N="i16">-1</I16>"#,
            r#"<U32 N="u32">4294967295</U32><I32 N="i32">-2147483648</I32>"#,
            r#"<U64 N="u64">18446744073709551615</U64><I64 N="i64">-9</I64>"#,
            r#"<Sg N="sg">1.5</Sg><Db N="db">1E+20</Db><D N="d">79228162514264337593543950335</D>"#,
            r#"<BA N="ba">AQID</BA><G N="g">792e5b37-4505-47ef-b7d2-8711bb7affa8</G>"#,
            r#"<URI N="uri">http://x/a_x005F_xb</URI><Version N="v">5.1.14393.2248</Version>"#,
            r#"<XD N="xd">&lt;a/&gt;</XD><SBK N="sbk">$a = 1</SBK><SS N="ss">AAEC</SS>"#,
            r#"</MS></Obj>"#
        );
        let value = round_trip(doc);
        let o = value.as_object().unwrap();
        assert!(o.property("nil").unwrap().is_nil());
        assert_eq!(o.property("s").unwrap().as_str(), Some("a\nb"));
        assert_eq!(o.property("c"), Some(&Value::Char(97)));
        assert_eq!(o.property("b").unwrap().as_bool(), Some(true));
        let dt = o
            .property("dt")
            .unwrap()
            .as_datetime()
            .unwrap()
            .parts()
            .unwrap();
        assert_eq!(
            (dt.year, dt.month, dt.second, dt.ticks),
            (2018, 6, 28, 51_600)
        );
        assert_eq!(dt.offset, DateTimeOffset::Minutes(0));
        match o.property("ts") {
            Some(Value::Duration(d)) => assert_eq!(d.ticks(), Some(90_269_026)),
            other => panic!("{other:?}"),
        }
        assert_eq!(o.property("i32").unwrap().as_i32(), Some(i32::MIN));
        assert_eq!(o.property("u64"), Some(&Value::U64(u64::MAX)));
        match o.property("db") {
            Some(Value::Double(f)) => assert_eq!(f.value(), Some(1e20)),
            other => panic!("{other:?}"),
        }
        assert_eq!(o.property("ba"), Some(&Value::Bytes(vec![1, 2, 3])));
        assert_eq!(o.property("uri").unwrap().as_str(), Some("http://x/a_xb"));
        assert_eq!(
            o.property("v").unwrap().as_version().unwrap().components(),
            Some(vec![5, 1, 14393, 2248])
        );
        assert_eq!(o.property("xd").unwrap().as_str(), Some("<a/>"));
    }

    #[test]
    fn rejects_bad_primitive_text() {
        for doc in [
            "<I32>12x</I32>",
            "<B>yes</B>",
            "<By>256</By>",
            "<G>nope</G>",
            "<Version>1</Version>",
            "<Db>one</Db>",
            "<BA>!!</BA>",
        ] {
            assert!(
                matches!(
                    from_bytes(doc.as_bytes()),
                    Err(ClixmlError::InvalidValue { .. })
                ),
                "{doc}"
            );
        }
    }

    #[test]
    fn shares_referenced_objects_and_type_names() {
        let doc = concat!(
            r#"<Obj RefId="0"><TN RefId="0"><T>Outer</T><T>System.Object</T></TN><MS>"#,
            r#"<Obj N="a" RefId="1"><TN RefId="1"><T>Inner</T></TN><LST><I32>1</I32></LST></Obj>"#,
            r#"<Ref N="b" RefId="1" />"#,
            r#"<Obj N="c" RefId="2"><TNRef RefId="1" /><LST /></Obj>"#,
            r#"</MS></Obj>"#
        );
        let value = round_trip(doc);
        let o = value.as_object().unwrap();
        assert_eq!(o.type_names(), ["Outer", "System.Object"]);
        let (Some(Value::Object(a)), Some(Value::Object(b))) = (o.property("a"), o.property("b"))
        else {
            panic!("a and b are objects");
        };
        assert!(Arc::ptr_eq(a, b));
        assert_eq!(a.list(), Some(&[Value::I32(1)][..]));
        let c = o.property("c").unwrap().as_object().unwrap();
        assert!(Arc::ptr_eq(
            c.type_names.as_ref().unwrap(),
            a.type_names.as_ref().unwrap()
        ));
    }

    #[test]
    fn reads_enums_dictionaries_and_extended_primitives() {
        let doc = concat!(
            r#"<Obj RefId="0"><MS>"#,
            r#"<Obj N="e" RefId="1"><TN RefId="0"><T>X.State</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>Opened</ToString><I32>2</I32></Obj>"#,
            r#"<Obj N="d" RefId="2"><TN RefId="1"><T>System.Collections.Hashtable</T><T>System.Object</T></TN><DCT><En><S N="Key">k</S><I32 N="Value">5</I32></En><En><I32 N="Key">0</I32><Nil N="Value" /></En></DCT></Obj>"#,
            r#"<Obj N="x" RefId="3"><S>text</S><MS><S N="note">n</S></MS></Obj>"#,
            r#"<Obj N="q" RefId="4"><QUE><S>1</S></QUE></Obj><Obj N="st" RefId="5"><STK /></Obj><Obj N="ie" RefId="6"><IE><B>false</B></IE></Obj>"#,
            r#"</MS><Props><S N="adapted">a</S><S N="shadowed">props</S></Props></Obj>"#
        );
        let value = from_bytes(doc.as_bytes()).unwrap();
        let o = value.as_object().unwrap();
        let e = o.property("e").unwrap();
        assert!(e.as_object().unwrap().is_enum());
        assert_eq!(e.as_i32(), Some(2));
        assert_eq!(e.display_text(), "Opened");
        let d = o.property("d").unwrap().as_object().unwrap();
        assert_eq!(d.dict_get("k"), Some(&Value::I32(5)));
        assert_eq!(d.dictionary().unwrap().len(), 2);
        let x = o.property("x").unwrap();
        assert_eq!(x.as_str(), Some("text"));
        assert_eq!(
            x.as_object().unwrap().property("note").unwrap().as_str(),
            Some("n")
        );
        assert_eq!(o.property("adapted").unwrap().as_str(), Some("a"));
        assert!(matches!(
            o.property("q").unwrap().as_object().unwrap().content,
            Content::Queue(_)
        ));
        // Re-serialization puts Props before MS, as PowerShell does.
        let again = String::from_utf8(to_bytes(&value)).unwrap();
        assert!(again.find("<Props>").unwrap() < again.find("<MS>").unwrap());
        assert_eq!(from_bytes(again.as_bytes()).unwrap(), value);
    }

    #[test]
    fn rejects_unknown_and_misplaced_elements() {
        assert_eq!(
            from_bytes(b"<Obj RefId=\"0\"><Foo /></Obj>"),
            Err(ClixmlError::UnknownElement("Foo".into()))
        );
        assert_eq!(
            from_bytes(b"<Obj RefId=\"0\"><MS><Bar N=\"x\" /></MS></Obj>"),
            Err(ClixmlError::UnknownElement("Bar".into()))
        );
        assert_eq!(
            from_bytes(b"<PR />"),
            Err(ClixmlError::UnknownElement("PR".into()))
        );
        assert!(matches!(
            from_bytes(b"<MS />"),
            Err(ClixmlError::MisplacedElement { .. })
        ));
        assert!(matches!(
            from_bytes(b"<Obj RefId=\"0\"><MS /><MS /></Obj>"),
            Err(ClixmlError::Duplicate { .. })
        ));
        assert!(matches!(
            from_bytes(b"<Obj RefId=\"0\"><MS><S>no name</S></MS></Obj>"),
            Err(ClixmlError::MissingAttribute { attribute: "N", .. })
        ));
        assert!(matches!(
            from_bytes(b"<Obj RefId=\"0\"><DCT><En><S N=\"Key\">k</S></En></DCT></Obj>"),
            Err(ClixmlError::IncompleteEntry("Value"))
        ));
        assert_eq!(
            from_bytes(b"<Obj RefId=\"0\"><TNRef RefId=\"3\" /></Obj>"),
            Err(ClixmlError::UnknownTypeRef("3".into()))
        );
        assert_eq!(
            from_bytes(b"<Obj RefId=\"0\"><LST>text</LST></Obj>"),
            Err(ClixmlError::UnexpectedText("LST".into()))
        );
    }

    #[test]
    fn rejects_ref_cycles_and_unknown_refs() {
        assert_eq!(
            from_bytes(b"<Obj RefId=\"0\"><MS><Ref N=\"me\" RefId=\"0\" /></MS></Obj>"),
            Err(ClixmlError::RefCycle("0".into()))
        );
        assert_eq!(
            from_bytes(b"<Obj RefId=\"0\"><MS><Ref N=\"x\" RefId=\"7\" /></MS></Obj>"),
            Err(ClixmlError::UnknownRef("7".into()))
        );
        assert_eq!(
            from_bytes(b"<Obj RefId=\"0\"><MS><Obj N=\"a\" RefId=\"0\" /></MS></Obj>"),
            Err(ClixmlError::DuplicateRefId("0".into()))
        );
    }

    #[test]
    fn bounds_depth_without_overflowing_the_stack() {
        let depth = 50_000;
        let doc = "<Obj RefId=\"0\"><LST>".repeat(depth) + &"</LST></Obj>".repeat(depth);
        assert_eq!(
            from_bytes(doc.as_bytes()),
            Err(ClixmlError::Xml(XmlError::TooDeep(100)))
        );
        let limits = Limits {
            max_depth: 100,
            max_nodes: 10,
        };
        let wide = format!("<Obj RefId=\"0\"><LST>{}</LST></Obj>", "<Nil />".repeat(20));
        assert_eq!(
            from_bytes_with(wide.as_bytes(), limits),
            Err(ClixmlError::Xml(XmlError::TooManyNodes(10)))
        );
    }

    #[test]
    fn ref_bomb_stays_linear() {
        // Each object refers to the previous one twice: 2^40 paths, 41 objects.
        let mut doc = String::from("<Obj RefId=\"0\"><LST><I32>1</I32></LST></Obj>");
        let mut body = String::new();
        for i in 1..=40 {
            body.push_str(&format!(
                "<Obj RefId=\"{i}\"><LST><Ref RefId=\"{}\" /><Ref RefId=\"{}\" /></LST></Obj>",
                i - 1,
                i - 1
            ));
        }
        doc = format!("<Obj RefId=\"root\"><LST>{doc}{body}</LST></Obj>");
        let value = from_bytes(doc.as_bytes()).unwrap();
        let out = to_bytes(&value);
        assert!(out.len() < doc.len() * 2, "{} bytes", out.len());
        assert_eq!(xml::parse(&out).unwrap().elements().count(), 1);
    }

    #[test]
    fn ref_ids_are_decimal() {
        // Shared enumeration type names are equal to freshly built ones.
        let shared = enum_type_names("System.Management.Automation.CommandOrigin");
        assert_eq!(
            *shared,
            *type_names_of(&[
                "System.Management.Automation.CommandOrigin",
                "System.Enum",
                "System.ValueType",
                "System.Object"
            ])
        );
    }

    #[test]
    fn writer_numbers_refs_in_document_order_and_handles_depth() {
        let shared = Arc::new(PsObject {
            type_names: Some(type_names_of(&["T.A", "System.Object"])),
            content: Content::List(vec![]),
            ..PsObject::default()
        });
        let value = Value::extended(vec![
            Property::new("first", Value::Object(Arc::clone(&shared))),
            Property::new("again", Value::Object(Arc::clone(&shared))),
            Property::new("e", Value::enumeration("T.E", "One", 1)),
            Property::new("_x name", "v"),
        ]);
        let out = String::from_utf8(to_bytes(&value)).unwrap();
        assert_eq!(
            out,
            concat!(
                r#"<Obj RefId="0"><MS>"#,
                r#"<Obj N="first" RefId="1"><TN RefId="0"><T>T.A</T><T>System.Object</T></TN><LST/></Obj>"#,
                r#"<Ref N="again" RefId="1"/>"#,
                r#"<Obj N="e" RefId="2"><TN RefId="1"><T>T.E</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>One</ToString><I32>1</I32></Obj>"#,
                r#"<S N="_x005F_x name">v</S>"#,
                r#"</MS></Obj>"#
            )
        );
        // Deep values built in code are written without recursion.
        let nest = |levels: usize| {
            let mut v = Value::Nil;
            for _ in 0..levels {
                v = Value::list(&["L"], vec![v]);
            }
            v
        };
        let deep = to_bytes(&nest(5_000));
        assert_eq!(
            String::from_utf8_lossy(&deep).matches("<LST>").count(),
            5_000
        );
        assert!(deep.ends_with(b"</LST></Obj>"));
        // The reader recurses (bounded by Limits::max_depth); within the default it reads
        // back what the writer wrote.
        let shallow = nest(45);
        assert_eq!(from_bytes(&to_bytes(&shallow)).unwrap(), shallow);
    }

    #[test]
    fn tolerates_bom_whitespace_and_objs_documents() {
        let value = from_bytes(
            b"\xEF\xBB\xBF<Obj RefId=\"0\">\n  <MS>\n    <S N=\"a\"> x </S>\n  </MS>\n</Obj>",
        )
        .unwrap();
        assert_eq!(
            value.as_object().unwrap().property("a").unwrap().as_str(),
            Some(" x ")
        );
        let objs = to_objs_document(&[Value::from("one"), Value::I32(2)]);
        assert_eq!(
            from_objs_document(&objs).unwrap(),
            vec![Value::from("one"), Value::I32(2)]
        );
    }

    #[test]
    fn typed_text_values() {
        assert_eq!(Float::from_f64(1.5).as_str(), "1.5");
        assert_eq!(Float::from_f64(1e20).as_str(), "1E+20");
        assert_eq!(Float::from_f64(-0.0001).as_str(), "-0.0001");
        assert_eq!(Float::from_f64(0.00001).as_str(), "1E-05");
        assert_eq!(
            Float::from_f64(123_456_789_012_345.0).as_str(),
            "123456789012345"
        );
        assert_eq!(Float::from_f64(1.0).as_str(), "1");
        assert_eq!(Float::from_f64(f64::NEG_INFINITY).as_str(), "-INF");
        assert_eq!(Float::from_f32(0.1).as_str(), "0.1");
        assert!(Float::from_text("NaN").value().unwrap().is_nan());
        assert_eq!(Duration::from_ticks(0).as_str(), "PT0S");
        assert_eq!(Duration::from_ticks(15_000_000).as_str(), "PT1.5S");
        assert_eq!(Duration::from_ticks(936_000_000_000).as_str(), "P1DT2H");
        assert_eq!(Duration::from_ticks(-600_000_000).as_str(), "-PT1M");
        for ticks in [0, 1, 90_269_026, 936_000_000_000, -600_000_000] {
            assert_eq!(Duration::from_ticks(ticks).ticks(), Some(ticks));
        }
        assert_eq!(Duration::from_text("P1Y").ticks(), None);
        let parts = DateTimeParts {
            year: 2018,
            month: 6,
            day: 13,
            hour: 23,
            minute: 46,
            second: 28,
            ticks: 51_600,
            offset: DateTimeOffset::Minutes(0),
        };
        let dt = DateTime::from_parts(parts);
        assert_eq!(dt.as_str(), "2018-06-13T23:46:28.00516+00:00");
        assert_eq!(dt.parts(), Some(parts));
        assert_eq!(
            DateTime::from_text("2020-01-02T03:04:05Z")
                .parts()
                .unwrap()
                .offset,
            DateTimeOffset::Utc
        );
        assert_eq!(DateTime::from_text("2020-13-02T03:04:05").parts(), None);
        assert_eq!(Version::new(2, 3, None, None).as_str(), "2.3");
        assert_eq!(
            Version::parse("1.1.0.1").unwrap().major_minor(),
            Some((1, 1))
        );
        assert_eq!(Version::parse("7.4.0-preview"), None);
    }
}
