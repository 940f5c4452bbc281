//! Fuzz-target bodies, one function per parser (not part of the supported API).
//!
//! Each function takes arbitrary bytes, drives one parser and, where it is cheap, checks
//! an invariant that must hold for every input the parser accepts. They are the single
//! place both callers use: the cargo-fuzz targets in `fuzz/fuzz_targets/` (one line each)
//! and the corpus replay in `tests/integration/fuzz_replay.rs`, which runs every committed
//! corpus and regression input through them on the stable toolchain. Errors returned by a
//! parser are fine; a panic (an invariant broken, or a bug inside the parser) is a finding.
//!
//! Adding a target is described in `docs/fuzzing.md`.

// A broken invariant must abort the run so that libFuzzer records the input; the asserts
// below are how these functions report a finding.
#![allow(clippy::panic)]

use crate::xml::{self, XmlWriter};

/// `core::xml::parse` on arbitrary bytes. For a document it accepts, the tree written back
/// with [`Element::write_to`] must parse again, to an equal tree: `write_to` re-emits
/// subtrees (fault details kept as evidence), so what it writes must mean what was read.
pub fn xml(data: &[u8]) {
    let Ok(tree) = xml::parse(data) else {
        return;
    };
    let mut writer = XmlWriter::with_capacity(data.len());
    tree.write_to(&mut writer);
    let written = writer.into_bytes();
    match xml::parse(&written) {
        Ok(again) => assert_eq!(
            again,
            tree,
            "tree changed through write_to; written: {}",
            String::from_utf8_lossy(&written)
        ),
        Err(e) => panic!(
            "write_to produced a document parse refuses ({e}): {}",
            String::from_utf8_lossy(&written)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Element;

    fn round_trip(tree: &Element) -> Result<Element, xml::XmlError> {
        let mut writer = XmlWriter::new();
        tree.write_to(&mut writer);
        xml::parse(writer.as_bytes())
    }

    #[test]
    fn xml_target_accepts_garbage_and_valid_documents() {
        // Errors are not findings: none of these may panic.
        xml(b"");
        xml(b"\xff\xfe<");
        xml(b"<a><b></a>");
        xml(br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>"#);
    }

    #[test]
    fn round_trip_keeps_namespaces_text_and_attributes() {
        let tree = xml::parse(
            br#"<s:E xmlns:s="urn:s" xmlns:a="urn:a" a:k="1 &amp; 2"><s:T>x &lt; y</s:T></s:E>"#,
        )
        .unwrap();
        let again = round_trip(&tree).unwrap();
        assert_eq!(again, tree);
        assert_eq!(again.attr_ns("urn:a", "k"), Some("1 & 2"));
    }
}
