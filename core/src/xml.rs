//! A small owned XML tree over quick-xml, with namespaces resolved, and a writer.
//!
//! Every XML document psfleet reads (SOAP envelopes, CLIXML, the WinRM config) goes
//! through [`parse`], which enforces [`Limits`] so that data from the network cannot make
//! the parser recurse or allocate without bound. DTDs are refused outright: WinRM never
//! sends one and entity expansion is a classic attack (issue 8, hostile servers).
//!
//! Every XML document psfleet writes goes through [`XmlWriter`]: names are written as
//! given (with the prefix the caller chose) and all text and attribute values are escaped
//! by quick-xml. No SOAP is built with `format!`.

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::events::attributes::Attribute as RawAttribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::reader::NsReader;

/// Namespace URI of the `xml:` prefix, which is bound without a declaration.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Namespace URI of `xmlns` declarations, which no element or attribute may be in.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The bytes are not UTF-8.
    #[error("document is not valid UTF-8 (at byte {0})")]
    InvalidUtf8(usize),
    /// quick-xml rejected the document.
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset the reader had reached.
        position: u64,
        /// quick-xml's description.
        message: String,
    },
    /// The document has a DTD (`<!DOCTYPE`), which is never accepted.
    #[error("document type declarations are not accepted")]
    DoctypeRefused,
    /// An entity other than the five predefined ones or a character reference.
    #[error("unknown entity reference &{0};")]
    UnknownEntity(String),
    /// A prefix was used without being declared.
    #[error("undeclared namespace prefix {0:?}")]
    UnknownPrefix(String),
    /// Elements nest deeper than [`Limits::max_depth`].
    #[error("elements nest deeper than {0} levels")]
    TooDeep(usize),
    /// More nodes than [`Limits::max_nodes`].
    #[error("document has more than {0} nodes")]
    TooManyNodes(usize),
    /// No root element, or content after it.
    #[error("document must have exactly one root element")]
    NoSingleRoot,
}

/// Bounds applied while parsing untrusted XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum element nesting depth (the root is depth 1).
    pub max_depth: usize,
    /// Maximum number of element and text nodes.
    pub max_nodes: usize,
}

impl Limits {
    /// Bounds for SOAP envelopes and the WinRM config: generous for real traffic (the
    /// deepest recorded envelope nests 9 levels), small enough to refuse hostile input.
    pub const SOAP: Self = Self {
        max_depth: 64,
        max_nodes: 1_000_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::SOAP
    }
}

/// A name, prefix or namespace URI in a parsed tree: borrowed from a static table for the
/// WS-Man, WinRM and CLIXML vocabulary (no allocation per element, issue 7), owned for
/// anything else.
pub type Name = Cow<'static, str>;

/// An element with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Namespace URI, empty when the name is not in a namespace.
    pub ns: Name,
    /// Local name (no prefix).
    pub name: Name,
    /// The prefix as written in the source document (empty for none). Informational only:
    /// comparisons of meaning use `ns` and `name`.
    pub prefix: Name,
    /// Attributes in document order, without `xmlns` declarations.
    pub attrs: Vec<Attribute>,
    /// Child nodes in document order.
    pub children: Vec<Node>,
}

/// An attribute with its namespace resolved (unprefixed attributes have no namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Namespace URI, empty for an unprefixed attribute.
    pub ns: Name,
    /// Local name.
    pub name: Name,
    /// Unescaped value.
    pub value: String,
}

/// A child node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (entities and character references already resolved).
    Text(String),
}

impl Element {
    /// True when this element has the given namespace and local name.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this namespace and local name.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(ns, name))
    }

    /// All child elements with this namespace and local name.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.is(ns, name))
    }

    /// Follows a path of (namespace, local name) steps through first matching children.
    pub fn path(&self, steps: &[(&str, &str)]) -> Option<&Element> {
        let mut at = self;
        for (ns, name) in steps {
            at = at.child(ns, name)?;
        }
        Some(at)
    }

    /// The concatenated text of the direct text children.
    pub fn text(&self) -> Cow<'_, str> {
        let mut texts = self.children.iter().filter_map(|n| match n {
            Node::Text(t) => Some(t.as_str()),
            Node::Element(_) => None,
        });
        match (texts.next(), texts.next()) {
            (None, _) => Cow::Borrowed(""),
            (Some(one), None) => Cow::Borrowed(one),
            (Some(a), Some(b)) => {
                let mut s = String::from(a);
                s.push_str(b);
                texts.for_each(|t| s.push_str(t));
                Cow::Owned(s)
            }
        }
    }

    /// The value of an unprefixed attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attr_ns("", name)
    }

    /// The value of an attribute in a namespace (`""` for unprefixed).
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name && a.ns == ns)
            .map(|a| a.value.as_str())
    }

    /// Writes this element (and its subtree) with the prefixes it was read with. Used to
    /// re-emit a subtree verbatim (for example a fault detail kept as evidence); the
    /// namespace declarations needed are added on this element.
    pub fn write_to(&self, w: &mut XmlWriter) {
        let mut declared: Vec<(String, String)> = Vec::new();
        self.write_inner(w, &mut declared);
    }

    fn qname(prefix: &str, name: &str) -> String {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}:{name}")
        }
    }

    /// Declares `prefix` -> `ns` unless it is already bound that way; returns the
    /// `xmlns` attribute to add when a declaration is needed.
    fn declare(
        prefix: &str,
        ns: &str,
        declared: &mut Vec<(String, String)>,
    ) -> Option<(String, String)> {
        if ns == XML_NS {
            return None;
        }
        // Nothing declared means no namespace. An unprefixed element in no namespace
        // inside a default-namespace scope needs `xmlns=""` (fuzz/regressions/xml).
        let bound = declared.iter().rev().find(|(p, _)| p == prefix);
        if bound.map_or("", |(_, n)| n.as_str()) == ns {
            return None;
        }
        declared.push((prefix.to_owned(), ns.to_owned()));
        let key = if prefix.is_empty() {
            "xmlns".to_owned()
        } else {
            format!("xmlns:{prefix}")
        };
        Some((key, ns.to_owned()))
    }

    /// The prefix to write an attribute in namespace `ns` with: one whose binding in scope
    /// is `ns`, else a fresh `nsN` that nothing in scope binds, so that declaring it can
    /// neither duplicate a declaration on this element nor rebind a prefix in use
    /// (`<ns0:a xmlns:ns0="urn:A" xmlns:b="urn:B" b:x="1"/>`, fuzz/regressions/xml).
    fn attribute_prefix(ns: &str, declared: &[(String, String)]) -> String {
        let bound_to = |prefix: &str| {
            declared
                .iter()
                .rev()
                .find(|(p, _)| p == prefix)
                .map(|(_, n)| n.as_str())
        };
        if let Some((p, _)) = declared
            .iter()
            .rev()
            .find(|(p, n)| n == ns && !p.is_empty() && bound_to(p) == Some(ns))
        {
            return p.clone();
        }
        // One of declared.len() + 1 candidates is always free, so the default is never used.
        (0..=declared.len())
            .map(|n| format!("ns{n}"))
            .find(|p| bound_to(p).is_none())
            .unwrap_or_default()
    }

    fn write_inner(&self, w: &mut XmlWriter, declared: &mut Vec<(String, String)>) {
        let depth = declared.len();
        let mut attrs: Vec<(String, String)> = Vec::new();
        attrs.extend(Self::declare(&self.prefix, &self.ns, declared));
        for a in &self.attrs {
            let prefix = if a.ns.is_empty() {
                String::new()
            } else if a.ns == XML_NS {
                "xml".to_owned()
            } else {
                let p = Self::attribute_prefix(&a.ns, declared);
                attrs.extend(Self::declare(&p, &a.ns, declared));
                p
            };
            attrs.push((Self::qname(&prefix, &a.name), a.value.clone()));
        }
        let name = Self::qname(&self.prefix, &self.name);
        let attr_refs: Vec<(&str, &str)> = attrs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if self.children.is_empty() {
            w.empty(&name, &attr_refs);
        } else {
            w.start(&name, &attr_refs);
            for child in &self.children {
                match child {
                    Node::Element(e) => e.write_inner(w, declared),
                    Node::Text(t) => {
                        w.text(t);
                    }
                }
            }
            w.end(&name);
        }
        declared.truncate(depth);
    }
}

/// Parses a whole document into its root element with the default [`Limits`].
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    parse_with(input, Limits::default())
}

/// Parses a whole document into its root element.
///
/// A leading UTF-8 byte-order mark is skipped (Windows prefixes PSRP payloads with one,
/// MS-PSRP 2.2.5). Comments, processing instructions and the XML declaration are dropped.
pub fn parse_with(input: &[u8], limits: Limits) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(input).map_err(|e| XmlError::InvalidUtf8(e.valid_up_to()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut nodes = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| XmlError::Malformed {
            position: reader.buffer_position(),
            message: e.to_string(),
        })?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) => {
                nodes += 1;
                if nodes > limits.max_nodes {
                    return Err(XmlError::TooManyNodes(limits.max_nodes));
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                if root.is_some() {
                    return Err(XmlError::NoSingleRoot);
                }
                let element = open_element(&reader, &start)?;
                if empty {
                    close_element(element, &mut stack, &mut root);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                // quick-xml checks that end names match start names.
                if let Some(element) = stack.pop() {
                    close_element(element, &mut stack, &mut root);
                }
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content(), &mut nodes, limits)?,
            Event::CData(c) => {
                push_text(&mut stack, &c.xml10_content(), &mut nodes, limits)?;
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        _ => return Err(XmlError::UnknownEntity(r.to_string())),
                    }
                } else {
                    match &*r {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(XmlError::UnknownEntity(other.to_owned())),
                    }
                };
                push_text(
                    &mut stack,
                    resolved.encode_utf8(&mut [0; 4]),
                    &mut nodes,
                    limits,
                )?;
            }
            Event::DocType(_) => return Err(XmlError::DoctypeRefused),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    match (root, stack.is_empty()) {
        (Some(root), true) => Ok(root),
        _ => Err(XmlError::NoSingleRoot),
    }
}

/// The namespace a name with `prefix` resolved to. The reserved namespaces can be reached
/// only through the `xml` prefix (Namespaces in XML 1.0 section 3): quick-xml checks the
/// raw declaration, so `xmlns="...namespac&#101;"` would otherwise put an unprefixed name
/// in the `xml:` namespace, which write_to cannot express (fuzz/regressions/xml).
fn namespace_of(
    resolved: ResolveResult<'_>,
    prefix: Option<&str>,
    position: u64,
) -> Result<Name, XmlError> {
    match resolved {
        ResolveResult::Bound(ns) => {
            let ns = normalize_namespace(ns.into_inner(), position)?;
            if (ns == XML_NS && prefix != Some("xml")) || ns == XMLNS_NS {
                return Err(XmlError::Malformed {
                    position,
                    message: format!("the reserved namespace {ns} is bound to another prefix"),
                });
            }
            Ok(ns)
        }
        ResolveResult::Unbound => Ok(Name::Borrowed("")),
        ResolveResult::Unknown(prefix) => Err(XmlError::UnknownPrefix(prefix)),
    }
}

/// The namespace name of an `xmlns` declaration, with references expanded and whitespace
/// normalized like any other attribute value. quick-xml's resolver hands out the raw text
/// (`urn:a&amp;b`), so without this `write_to`, which escapes the value it writes, would
/// change the namespace of what it re-emits (found by fuzzing, `fuzz/regressions/xml`).
fn normalize_namespace(raw: &str, position: u64) -> Result<Name, XmlError> {
    let declaration = RawAttribute {
        key: QName("xmlns"),
        value: Cow::Borrowed(raw),
    };
    declaration
        .normalized_value(XmlVersion::Implicit1_0)
        .map(|value| interned(&value))
        .map_err(|e| XmlError::Malformed {
            position,
            message: format!("namespace name {raw:?}: {e}"),
        })
}

fn open_element(reader: &NsReader<&[u8]>, start: &BytesStart<'_>) -> Result<Element, XmlError> {
    let qname = start.name();
    // quick-xml does not check names: it reads `< />` as an element without one, and binds
    // an element prefix `xmlns`, which Namespaces in XML 1.0 section 3 forbids. Neither
    // tree could be written back (fuzz/regressions/xml).
    check_name(qname, reader)?;
    if qname.prefix().is_some_and(|p| p.as_ref() == "xmlns") {
        return Err(XmlError::Malformed {
            position: reader.buffer_position(),
            message: "element with the reserved prefix xmlns".to_owned(),
        });
    }
    let (resolved, _) = reader.resolver().resolve_element(qname);
    let mut element = Element {
        ns: namespace_of(
            resolved,
            qname.prefix().as_ref().map(AsRef::as_ref),
            reader.buffer_position(),
        )?,
        name: interned(qname.local_name().as_ref()),
        prefix: qname
            .prefix()
            .map_or(Name::Borrowed(""), |p| interned(p.as_ref())),
        attrs: Vec::new(),
        children: Vec::new(),
    };
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed {
            position: reader.buffer_position(),
            message: e.to_string(),
        })?;
        let key = attr.key;
        check_name(key, reader)?;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let (ns, local) = reader.resolver().resolve_attribute(key);
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| XmlError::Malformed {
                position: reader.buffer_position(),
                message: e.to_string(),
            })?;
        element.attrs.push(Attribute {
            ns: namespace_of(
                ns,
                key.prefix().as_ref().map(AsRef::as_ref),
                reader.buffer_position(),
            )?,
            name: interned(local.as_ref()),
            value: value.into_owned(),
        });
    }
    Ok(element)
}

/// `text` as a [`Name`]: borrowed when it is one of the names every WS-Man envelope and
/// CLIXML payload repeats (recorded traffic, `../shared/conformance`), else owned.
fn interned(text: &str) -> Name {
    match known_name(text) {
        Some(known) => Name::Borrowed(known),
        None => Name::Owned(text.to_owned()),
    }
}

/// Declares `known_name`, the static table behind [`interned`].
macro_rules! known_names {
    ($($name:literal)*) => {
        /// The static copy of `text` when the table has it.
        fn known_name(text: &str) -> Option<&'static str> {
            match text {
                $($name => Some($name),)*
                _ => None,
            }
        }
    };
}

known_names! {
    // Namespace URIs (wsman::names::ns, MS-PSRP 2.2.5 CLIXML, XML itself).
    "http://www.w3.org/2003/05/soap-envelope"
    "http://schemas.xmlsoap.org/ws/2004/08/addressing"
    "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
    "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
    "http://schemas.xmlsoap.org/ws/2004/09/transfer"
    "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
    "http://schemas.xmlsoap.org/ws/2004/08/eventing"
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
    "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
    "http://schemas.microsoft.com/wbem/wsman/1/config"
    "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"
    "http://schemas.microsoft.com/powershell"
    "http://schemas.microsoft.com/powershell/2004/04"
    "http://www.w3.org/XML/1998/namespace"
    // Prefixes Windows and the Python clients write.
    "s" "a" "w" "x" "p" "f" "n" "b" "e" "m" "rsp" "wsa" "wsman" "wsmv" "wsen" "cfg" "xml"
    // SOAP, WS-Addressing, WS-Management and WinRS elements.
    "Envelope" "Header" "Body" "Action" "MessageID" "To" "RelatesTo" "ReplyTo" "Address"
    "ResourceURI" "ResourceUri" "SelectorSet" "Selector" "OptionSet" "Option" "DataLocale"
    "Locale" "MaxEnvelopeSize" "OperationTimeout" "SessionId" "ActivityId" "OperationID"
    "SequenceId" "ResourceCreated" "ReferenceParameters" "Shell" "ShellId" "Name"
    "InputStreams" "OutputStreams" "IdleTimeOut" "MaxIdleTimeOut" "Owner" "ClientIP"
    "ProcessId" "ShellRunTime" "ShellInactivity" "CompressionMode" "ProfileLoaded"
    "Encoding" "BufferMode" "State" "creationXml" "connectXml" "connectResponseXml"
    "Receive" "ReceiveResponse" "DesiredStream" "Stream" "CommandState" "ExitCode"
    "CommandLine" "Command" "CommandId" "CommandResponse" "Arguments" "Send"
    "SendResponse" "Signal" "SignalResponse" "Code" "Connect" "ConnectResponse"
    "Disconnect" "Reconnect" "Environment" "Variable" "Enumerate" "EnumerateResponse"
    "EnumerationContext" "EndOfSequence" "Items" "Pull" "PullResponse" "OptimizeEnumeration"
    "MaxElements" "Fault" "Subcode" "Value" "Reason" "Text" "Detail" "WSManFault"
    "Message" "ProviderFault" "FaultDetail" "IdentifyResponse" "ProtocolVersion"
    "ProductVendor" "ProductVersion" "SecurityProfiles" "SecurityProfileName"
    // Attributes.
    "mustUnderstand" "lang" "MustComply" "End" "Unit" "EndUnit" "Machine" "Dialect"
    "SequenceID" "Sequence" "N" "RefId" "Version"
    // CLIXML (MS-PSRP 2.2.5).
    "Objs" "Obj" "MS" "Props" "TN" "TNRef" "T" "ToString" "Ref" "LST" "DCT" "IE" "STK"
    "QUE" "En" "Key" "Nil" "S" "C" "B" "DT" "TS" "By" "SB" "U8" "I16" "U16" "I32" "U32"
    "I64" "U64" "Sg" "Db" "D" "BA" "G" "URI" "XD" "SBK" "SS" "PR"
}

/// Refuses a qualified name that is not `NCName` or `NCName:NCName` (Namespaces in XML 1.0
/// section 4). quick-xml takes any run of bytes up to `=`, `>` or a space as a name, so
/// `"ln=""` would make an attribute named `"ln` that no writer can write back
/// (fuzz/regressions/xml).
fn check_name(name: QName<'_>, reader: &NsReader<&[u8]>) -> Result<(), XmlError> {
    let raw: &str = name.as_ref();
    let valid = match raw.split_once(':') {
        Some((prefix, local)) => is_ncname(prefix) && is_ncname(local),
        None => is_ncname(raw),
    };
    if valid {
        Ok(())
    } else {
        Err(XmlError::Malformed {
            position: reader.buffer_position(),
            message: format!("{raw:?} is not an XML name"),
        })
    }
}

/// An XML 1.0 (fifth edition) `Name`, productions 4, 4a and 5, without colons.
fn is_ncname(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
}

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

fn close_element(element: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(element)),
        None => *root = Some(element),
    }
}

/// Appends text to the open element, merging with a preceding text node (entity
/// references arrive as separate events).
fn push_text(
    stack: &mut [Element],
    text: &str,
    nodes: &mut usize,
    limits: Limits,
) -> Result<(), XmlError> {
    // An empty CDATA section carries no text; a node for it would not survive write_to
    // (fuzz/regressions/xml).
    if text.is_empty() {
        return Ok(());
    }
    let Some(parent) = stack.last_mut() else {
        // Text outside the root: only whitespace is allowed there.
        return if text.trim().is_empty() {
            Ok(())
        } else {
            Err(XmlError::NoSingleRoot)
        };
    };
    if let Some(Node::Text(prev)) = parent.children.last_mut() {
        prev.push_str(text);
        return Ok(());
    }
    *nodes += 1;
    if *nodes > limits.max_nodes {
        return Err(XmlError::TooManyNodes(limits.max_nodes));
    }
    parent.children.push(Node::Text(text.to_owned()));
    Ok(())
}

/// The decimal digits of `n`, written into `buf` without a temporary string (attribute
/// and element text on the writing hot path: RefIds, MaxEnvelopeSize). Twenty digits hold
/// any u64.
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        // n % 10 < 10, so the digit is ASCII.
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written from `at` on.
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

/// Writes XML into a byte buffer. Text and attribute values are escaped exactly as
/// quick-xml's writer escapes them (the same characters, the same references), straight
/// into the buffer: no allocation per element (issue 7, BENCHMARKS.md "Allocations").
///
/// Names are qualified names as they should appear (`"s:Envelope"`); declaring the
/// prefixes is the caller's job (as attributes of the element that introduces them).
pub struct XmlWriter {
    out: Vec<u8>,
}

impl std::fmt::Debug for XmlWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmlWriter")
            .field("len", &self.out.len())
            .finish()
    }
}

impl Default for XmlWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl XmlWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity),
        }
    }

    /// `<name a="v"` without the closing `>`.
    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        for (key, value) in attrs {
            self.out.push(b' ');
            self.out.extend_from_slice(key.as_bytes());
            self.out.extend_from_slice(b"=\"");
            escape_into(&mut self.out, value, true);
            self.out.push(b'"');
        }
    }

    /// Writes a start tag.
    pub fn start(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.open(name, attrs);
        self.out.push(b'>');
        self
    }

    /// Writes an end tag.
    pub fn end(&mut self, name: &str) -> &mut Self {
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'>');
        self
    }

    /// Writes an empty element (`<name a="v"/>`).
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.open(name, attrs);
        self.out.extend_from_slice(b"/>");
        self
    }

    /// Writes escaped character data.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_into(&mut self.out, text, false);
        self
    }

    /// Writes `<name attrs>text</name>`.
    pub fn text_element(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start(name, attrs).text(text).end(name)
    }

    /// Bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.out
    }

    /// The finished document.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}

/// Appends `raw` escaped as quick-xml escapes it: text with `quick_xml::escape::escape`
/// (`<`, `>`, `&`, `'`, `"` and `\r`); attribute values additionally `\n` and `\t`,
/// which attribute-value normalization would otherwise turn into spaces (XML 1.0 3.3.3).
fn escape_into(out: &mut Vec<u8>, raw: &str, attribute: bool) {
    let bytes = raw.as_bytes();
    let mut from = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let reference: &[u8] = match byte {
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'&' => b"&amp;",
            b'\'' => b"&apos;",
            b'"' => b"&quot;",
            b'\r' => b"&#13;",
            b'\n' if attribute => b"&#10;",
            b'\t' if attribute => b"&#9;",
            _ => continue,
        };
        // from <= at < bytes.len(): both come from this enumeration.
        out.extend_from_slice(&bytes[from..at]);
        out.extend_from_slice(reference);
        from = at + 1;
    }
    out.extend_from_slice(bytes.get(from..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits_match_to_string() {
        let mut buf = [0u8; 20];
        for n in [
            0u64,
            7,
            10,
            99,
            1234,
            153_600,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(decimal(n, &mut buf), n.to_string());
        }
    }

    #[test]
    fn resolves_namespaces_and_entities() {
        let doc = br#"<?xml version="1.0"?><s:E xmlns:s="urn:s" xmlns="urn:d" xml:lang="en"><s:A k="a&amp;b">x &lt; y&#65;</s:A><B/></s:E>"#;
        let root = parse(doc).unwrap();
        assert!(root.is("urn:s", "E"));
        assert_eq!(root.attr_ns(XML_NS, "lang"), Some("en"));
        let a = root.child("urn:s", "A").unwrap();
        assert_eq!(a.attr("k"), Some("a&b"));
        assert_eq!(a.text(), "x < yA");
        assert!(root.child("urn:d", "B").is_some());
    }

    #[test]
    fn refuses_doctype_and_unknown_entities() {
        let bomb = br#"<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>"#;
        assert_eq!(parse(bomb), Err(XmlError::DoctypeRefused));
        assert_eq!(
            parse(b"<x>&a;</x>"),
            Err(XmlError::UnknownEntity("a".into()))
        );
    }

    #[test]
    fn bounds_depth_without_recursing() {
        let deep = "<a>".repeat(10_000) + &"</a>".repeat(10_000);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep(64)));
    }

    #[test]
    fn rejects_invalid_utf8_and_trailing_roots() {
        assert!(matches!(
            parse(b"<a>\xff</a>"),
            Err(XmlError::InvalidUtf8(3))
        ));
        assert_eq!(parse(b"<a/><b/>"), Err(XmlError::NoSingleRoot));
        assert_eq!(parse(b"  "), Err(XmlError::NoSingleRoot));
        assert!(matches!(
            parse(b"<a><b></a>"),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(parse(b"<p:a/>"), Err(XmlError::UnknownPrefix(_))));
    }

    #[test]
    fn namespace_names_are_normalized_like_attribute_values() {
        // quick-xml resolves to the raw declaration text; the tree holds the value, so
        // write_to (which escapes) re-emits the same namespace (fuzz/regressions/xml).
        let root = parse(b"<a:r xmlns:a=\"urn:x&amp;y\" xmlns=\"\nurn:d\"><c/></a:r>").unwrap();
        assert_eq!(root.ns, "urn:x&y");
        assert_eq!(root.elements().next().unwrap().ns, " urn:d");
        let mut w = XmlWriter::new();
        root.write_to(&mut w);
        assert_eq!(parse(w.as_bytes()).unwrap(), root);
        assert!(matches!(
            parse(b"<a xmlns=\"urn:&bogus;\"/>"),
            Err(XmlError::Malformed { .. })
        ));
    }

    #[test]
    fn write_to_keeps_namespaces_where_prefixes_clash() {
        // Each broke the write_to round trip (fuzz/regressions/xml): an undeclared default
        // namespace, an attribute prefix equal to the generated `ns0`, a prefix rebound
        // in a child while the attribute needs the outer binding, an empty CDATA section.
        for doc in [
            &b"<root xmlns=\"t\"><d xmlns=\"\"></d></root>"[..],
            b"<ns0:a xmlns:ns0=\"urn:A\" xmlns:b=\"urn:B\" b:x=\"1\"/>",
            b"<a:r xmlns:a=\"urn:X\" a:k=\"1\"><a:c xmlns:a=\"urn:Y\" xmlns:b=\"urn:X\" b:k=\"2\"/></a:r>",
            b"<r><![CDATA[]]></r>",
        ] {
            let root = parse(doc).unwrap();
            let mut w = XmlWriter::new();
            root.write_to(&mut w);
            assert_eq!(parse(w.as_bytes()), Ok(root), "{}", String::from_utf8_lossy(doc));
        }
        assert!(parse(b"<r><![CDATA[]]></r>").unwrap().children.is_empty());
        let inner = parse(b"<root xmlns=\"t\"><d xmlns=\"\"/></root>").unwrap();
        assert_eq!(inner.elements().next().unwrap().ns, "");
    }

    #[test]
    fn refuses_names_that_are_not_xml_names() {
        assert!(matches!(parse(b"< />"), Err(XmlError::Malformed { .. })));
        assert!(matches!(
            parse(b"<xmlns:w/>"),
            Err(XmlError::Malformed { .. })
        ));
        // Reserved namespaces only through the xml prefix, however the declaration is spelt.
        for bad in [
            &b"<r xmlns=\"http://www.w3.org/XML/1998/namespace\"/>"[..],
            b"<p:r xmlns:p=\"http://www.w3.org/XML/1998/namespac&#101;\"/>",
            b"<r xmlns:p=\"http://www.w3.org/2000/xmlns&#47;\" p:a=\"1\"/>",
        ] {
            assert!(matches!(parse(bad), Err(XmlError::Malformed { .. })));
        }
        assert_eq!(parse(b"<xml:r/>").unwrap().ns, XML_NS);
        for bad in [
            &b"<a \"ln=\"\"/>"[..],
            b"<a:b:c xmlns:a=\"urn:a\"/>",
            b"<1a/>",
            b"<a :k=\"v\"/>",
            b"<a\0b/>",
        ] {
            let result = parse(bad);
            assert!(
                matches!(result, Err(XmlError::Malformed { .. })),
                "{}: {result:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let ok = parse("<é.x-1 ns\u{B7}2=\"v\" _a=\"w\"/>".as_bytes()).unwrap();
        assert_eq!(ok.name, "é.x-1");
        assert_eq!(ok.attr("ns\u{B7}2"), Some("v"));
    }

    /// The direct writer produces the bytes quick-xml's own writer produced before it.
    #[test]
    fn writer_escapes_as_quick_xml_does() {
        use quick_xml::events::{BytesEnd, BytesText};
        let nasty = "a<b>c&d'e\"f\rg\nh\ti é";
        let mut w = XmlWriter::new();
        w.start("s:E", &[("xmlns:s", "urn:s"), ("k", nasty)])
            .text_element("s:T", &[], nasty)
            .empty("s:Z", &[("z", "1")])
            .empty("s:Y", &[])
            .end("s:E");
        let mut q = quick_xml::Writer::new(Vec::new());
        let start = BytesStart::new("s:E").with_attributes([("xmlns:s", "urn:s"), ("k", nasty)]);
        q.write_event(Event::Start(start)).unwrap();
        q.write_event(Event::Start(BytesStart::new("s:T"))).unwrap();
        q.write_event(Event::Text(BytesText::new(nasty))).unwrap();
        q.write_event(Event::End(BytesEnd::new("s:T"))).unwrap();
        let z = BytesStart::new("s:Z").with_attributes([("z", "1")]);
        q.write_event(Event::Empty(z)).unwrap();
        q.write_event(Event::Empty(BytesStart::new("s:Y"))).unwrap();
        q.write_event(Event::End(BytesEnd::new("s:E"))).unwrap();
        assert_eq!(
            String::from_utf8(w.into_bytes()).unwrap(),
            String::from_utf8(q.into_inner()).unwrap()
        );
    }

    /// The WS-Man and CLIXML vocabulary comes out of the static table (no allocation per
    /// name); anything else is owned and still compares equal.
    #[test]
    fn known_names_are_borrowed_and_others_owned() {
        let doc = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Body><rsp:Stream Name="stdout" CommandId="1">x</rsp:Stream><q:Odd xmlns:q="urn:odd" q:attr="v"/></s:Body></s:Envelope>"#;
        let root = parse(doc).unwrap();
        let body = root.elements().next().unwrap();
        let stream = body.elements().next().unwrap();
        for name in [&root.name, &root.ns, &root.prefix, &stream.name, &stream.ns] {
            assert!(matches!(name, Cow::Borrowed(_)), "{name}");
        }
        assert!(
            stream
                .attrs
                .iter()
                .all(|a| matches!(a.name, Cow::Borrowed(_)))
        );
        assert_eq!(stream.attr("Name"), Some("stdout"));
        let odd = body.child("urn:odd", "Odd").unwrap();
        assert!(matches!(odd.name, Cow::Owned(_)) && matches!(odd.ns, Cow::Owned(_)));
        assert_eq!(odd.attr_ns("urn:odd", "attr"), Some("v"));
        assert_eq!(odd.prefix, "q");
    }

    #[test]
    fn writer_round_trips_through_parser() {
        let mut w = XmlWriter::new();
        w.start("s:E", &[("xmlns:s", "urn:s")])
            .text_element("s:T", &[("a", "1 & \"2\"")], "<text> & more")
            .empty("s:Z", &[])
            .end("s:E");
        let root = parse(w.as_bytes()).unwrap();
        let t = root.child("urn:s", "T").unwrap();
        assert_eq!(t.attr("a"), Some("1 & \"2\""));
        assert_eq!(t.text(), "<text> & more");
        let mut again = XmlWriter::new();
        root.write_to(&mut again);
        assert_eq!(parse(again.as_bytes()).unwrap(), root);
    }
}
