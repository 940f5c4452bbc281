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

use crate::encryption::{self, MessageSealer, Protocol, Sealed, Unsealed};
use crate::psrp::messages::PsrpMessage;
use crate::psrp::{Defragmenter, Message, clixml};
use crate::wsman::{Request, Response};
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

/// `wsman::Request::parse` (what the simulator reads from clients). A request it accepts
/// must survive its own encoder: parse(to_xml(r)) == r.
pub fn wsman_request(data: &[u8]) {
    let Ok(request) = Request::parse(data) else {
        return;
    };
    let again = Request::parse(&request.to_xml());
    assert_eq!(
        again.as_ref(),
        Ok(&request),
        "request changed through to_xml"
    );
}

/// `wsman::Response::parse` (every reply and fault from a host). A response it accepts
/// must survive its own encoder: parse(to_xml(r)) == r.
pub fn wsman_response(data: &[u8]) {
    let Ok(response) = Response::parse(data) else {
        return;
    };
    let again = Response::parse(&response.to_xml());
    assert_eq!(
        again.as_ref(),
        Ok(&response),
        "response changed through to_xml"
    );
}

/// A sealer that seals nothing: the framing parser is what is under test.
struct ClearSealer;

impl MessageSealer for ClearSealer {
    type Error = std::convert::Infallible;

    fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, Self::Error> {
        Ok(Sealed {
            header: vec![0; 16],
            payload: plaintext.to_vec(),
            padding: 0,
        })
    }

    fn unseal(&mut self, _header: &[u8], payload: &[u8]) -> Result<Unsealed, Self::Error> {
        Ok(Unsealed::new(payload.to_vec()))
    }
}

/// `encryption::decrypt`, the multipart/encrypted framing parser, for each protocol's
/// content type (the first byte picks it). What it accepts must re-frame and decrypt to
/// the same plaintext.
pub fn encryption(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let protocol = match selector % 3 {
        0 => Protocol::Spnego,
        1 => Protocol::Kerberos,
        _ => Protocol::CredSsp,
    };
    let content_type = protocol.content_type(selector & 0x80 != 0);
    let Ok(plaintext) = encryption::decrypt(&mut ClearSealer, &content_type, body) else {
        return;
    };
    let framed = match encryption::encrypt(&mut ClearSealer, protocol, &plaintext) {
        Ok(framed) => framed,
        Err(e) => panic!("framing {} bytes failed: {e}", plaintext.len()),
    };
    let again = encryption::decrypt(&mut ClearSealer, &framed.content_type, &framed.body);
    assert_eq!(
        again.ok(),
        Some(plaintext),
        "plaintext changed through re-framing"
    );
}

/// `psrp::Defragmenter` on arbitrary blobs (the first byte says where to cut the input
/// into two blobs, as two rsp:Stream values would arrive). Every message it completes
/// must decode as a header or fail cleanly.
pub fn psrp_fragments(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(usize::from(cut).min(rest.len()));
    let mut defrag = Defragmenter::new();
    for blob in [first, second] {
        let Ok(messages) = defrag.push_blob(blob) else {
            return;
        };
        for bytes in messages {
            let _ = Message::decode(&bytes);
        }
    }
}

/// `psrp::Message::decode` and `PsrpMessage::decode`: the 40-byte header, the CLIXML body
/// and the typed message on top.
pub fn psrp_message(data: &[u8]) {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    assert_eq!(
        message.encode(),
        data,
        "message header did not re-encode byte for byte"
    );
    let _ = PsrpMessage::decode(&message);
}

/// `psrp::clixml::from_bytes`. A value it accepts must serialize and read back equal.
pub fn clixml(data: &[u8]) {
    let Ok(value) = clixml::from_bytes(data) else {
        return;
    };
    let written = clixml::to_bytes(&value);
    match clixml::from_bytes(&written) {
        Ok(again) => assert_eq!(again, value, "value changed through to_bytes"),
        Err(e) => panic!(
            "to_bytes produced CLIXML from_bytes refuses ({e}): {}",
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
