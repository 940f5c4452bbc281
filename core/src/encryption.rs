//! HTTP message-encryption framing: multipart/encrypted bodies (MS-WSMV 2.2.9.1).
//!
//! Over plain HTTP, WinRM refuses SOAP unless it is sealed with the session key of the
//! NTLM/Kerberos (SPNEGO, MS-WSMV 2.2.9.1.1), Kerberos (2.2.9.1.2) or CredSSP (2.2.9.1.3)
//! context that authenticated the connection. The sealed bytes travel in a two-part MIME
//! body, one block per message (per 16 KiB chunk for CredSSP):
//!
//! ```text
//! --Encrypted Boundary\r\n
//! \tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n
//! \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<n>\r\n
//! --Encrypted Boundary\r\n
//! \tContent-Type: application/octet-stream\r\n
//! <u32 LE header length><header><sealed payload>--Encrypted Boundary--\r\n
//! ```
//!
//! This module only does the framing. The cryptography sits behind [`MessageSealer`],
//! which the engine implements over sspi's `encrypt_message`/`decrypt_message` and the
//! simulator over its acceptor context. Both sides use the same two functions: a client
//! [`encrypt`]s requests and [`decrypt`]s responses, the simulator the other way round.

use std::borrow::Cow;
use std::fmt;

/// The MIME boundary Windows and every known client use (MS-WSMV 2.2.9.1.1.2).
pub const BOUNDARY: &str = "Encrypted Boundary";

/// CredSSP bodies longer than this are split into chunks of this size, each sealed in
/// its own block, and sent as `multipart/x-multi-encrypted` (MS-WSMV 2.2.9.1.3; pypsrp
/// and pywinrm `encryption.py` use the same 16 KiB).
pub const CREDSSP_CHUNK_SIZE: usize = 16 * 1024;

/// Largest accepted value of the `u32` header-length field. Real headers are 16 bytes
/// (NTLM signature), about 60 (RFC 4121 wrap token) or the TLS trailer length (16 to
/// about 64); anything near this bound is a lie, and is refused before any slicing.
pub const MAX_HEADER_LEN: usize = 4096;

/// Largest number of blocks [`decrypt`] accepts in one body (64 MiB of CredSSP chunks).
pub const MAX_PARTS: usize = 4096;

/// The media type of a single-block encrypted body.
const MULTIPART_ENCRYPTED: &str = "multipart/encrypted";
/// The media type of a chunked CredSSP body.
const MULTIPART_MULTI_ENCRYPTED: &str = "multipart/x-multi-encrypted";
/// The inner content type of the sealed part (MS-WSMV 2.2.9.1.1.2.2).
const OCTET_STREAM: &str = "application/octet-stream";
/// The longest header line accepted in the octet-stream part before the binary starts.
const MAX_DATA_HEADER_LINE: usize = 256;
/// The most header lines accepted in the octet-stream part before its Content-Type.
const MAX_DATA_HEADER_LINES: usize = 8;
/// Longest quoted text copied from input into an error.
const MAX_ERROR_TEXT: usize = 120;

/// The session-encryption protocol, named in the `protocol` parameter of the outer
/// Content-Type and in the first part of every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// SPNEGO (NTLM or Kerberos under the `Negotiate` scheme), MS-WSMV 2.2.9.1.1.
    Spnego,
    /// Kerberos under the `Kerberos` scheme, MS-WSMV 2.2.9.1.2.
    Kerberos,
    /// CredSSP (TLS records), MS-WSMV 2.2.9.1.3.
    CredSsp,
}

impl Protocol {
    /// The protocol's MIME type, as written in the `protocol` parameter and in the
    /// first part's `Content-Type`.
    pub const fn mime_type(self) -> &'static str {
        match self {
            Self::Spnego => "application/HTTP-SPNEGO-session-encrypted",
            Self::Kerberos => "application/HTTP-Kerberos-session-encrypted",
            Self::CredSsp => "application/HTTP-CredSSP-session-encrypted",
        }
    }

    /// The protocol named by a MIME type, compared case-insensitively (MIME types are
    /// case-insensitive, RFC 2045 5.1).
    pub fn from_mime_type(mime: &str) -> Option<Self> {
        [Self::Spnego, Self::Kerberos, Self::CredSsp]
            .into_iter()
            .find(|p| p.mime_type().eq_ignore_ascii_case(mime.trim()))
    }

    /// The outer HTTP `Content-Type` for a body of this protocol; `chunked` selects
    /// `multipart/x-multi-encrypted` (CredSSP bodies over [`CREDSSP_CHUNK_SIZE`]).
    pub fn content_type(self, chunked: bool) -> String {
        self.content_type_str(chunked).to_owned()
    }

    /// [`Protocol::content_type`] as a constant (an HTTP client can send it without
    /// copying): `{media};protocol="{mime type}";boundary="Encrypted Boundary"`.
    pub const fn content_type_str(self, chunked: bool) -> &'static str {
        match (self, chunked) {
            (Self::Spnego, false) => concat!(
                "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";",
                "boundary=\"Encrypted Boundary\""
            ),
            (Self::Spnego, true) => concat!(
                "multipart/x-multi-encrypted;",
                "protocol=\"application/HTTP-SPNEGO-session-encrypted\";",
                "boundary=\"Encrypted Boundary\""
            ),
            (Self::Kerberos, false) => concat!(
                "multipart/encrypted;protocol=\"application/HTTP-Kerberos-session-encrypted\";",
                "boundary=\"Encrypted Boundary\""
            ),
            (Self::Kerberos, true) => concat!(
                "multipart/x-multi-encrypted;",
                "protocol=\"application/HTTP-Kerberos-session-encrypted\";",
                "boundary=\"Encrypted Boundary\""
            ),
            (Self::CredSsp, false) => concat!(
                "multipart/encrypted;protocol=\"application/HTTP-CredSSP-session-encrypted\";",
                "boundary=\"Encrypted Boundary\""
            ),
            (Self::CredSsp, true) => concat!(
                "multipart/x-multi-encrypted;",
                "protocol=\"application/HTTP-CredSSP-session-encrypted\";",
                "boundary=\"Encrypted Boundary\""
            ),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime_type())
    }
}

/// What sealing one message (or CredSSP chunk) produced.
///
/// The framing writes `u32 LE header.len()`, then `header`, then `payload`. What goes in
/// each depends on the mechanism (MS-WSMV 2.2.9.1.1.2.2, 2.2.9.1.3):
/// - NTLM: `header` = the 16-byte message signature, `payload` = the RC4-sealed data.
/// - Kerberos: `header` = the RFC 4121 wrap-token header (the SSPI `SECBUFFER_TOKEN`),
///   `payload` = the encrypted data followed by any padding (RC4), with `padding` = the
///   number of padding bytes, which pypsrp adds to `Length` (`encryption.py`).
/// - CredSSP: the whole TLS record, split after its first *trailer-length* bytes:
///   `header` = `record[..trailer_len]`, `payload` = the rest, so that the length field
///   carries the TLS trailer length (16 for GCM suites) as Windows expects (pyspnego
///   `_credssp.py wrap_winrm`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sealed {
    /// The signature / token header / leading TLS bytes, announced by the length field.
    pub header: Vec<u8>,
    /// The sealed data (including any padding).
    pub payload: Vec<u8>,
    /// Padding bytes at the end of `payload` that count towards `Length`.
    pub padding: usize,
}

/// What unsealing one block produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsealed {
    /// The decrypted bytes, padding removed.
    pub plaintext: Vec<u8>,
    /// Padding bytes the mechanism removed (Kerberos RC4), which a peer may have counted
    /// in `Length`.
    pub padding: usize,
}

impl Unsealed {
    /// An unsealed block without padding (NTLM, AES Kerberos, CredSSP).
    pub fn new(plaintext: Vec<u8>) -> Self {
        Self {
            plaintext,
            padding: 0,
        }
    }
}

/// A security context able to seal and unseal WinRM messages; implemented by the engine
/// (client side) and the simulator (server side) on top of sspi.
///
/// Calls are made in wire order, one per block, so a sealer keeping sequence numbers
/// (NTLM, Kerberos) stays in step with its peer.
pub trait MessageSealer {
    /// Why sealing or unsealing failed (bad signature, wrong sequence number, ...).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Seals one message (or one CredSSP chunk). See [`Sealed`] for what goes where.
    fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, Self::Error>;

    /// Verifies and decrypts one block: `header` is the bytes announced by the length
    /// field, `payload` the rest of the octet-stream part.
    fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, Self::Error>;
}

/// An encrypted HTTP body and the `Content-Type` header to send with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedBody {
    /// The value of the HTTP `Content-Type` header.
    pub content_type: String,
    /// The body bytes (its length is the `Content-Length`).
    pub body: Vec<u8>,
}

/// Why a body could not be framed or unframed. `E` is the sealer's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError<E: std::error::Error + 'static> {
    /// The Content-Type is not `multipart/encrypted` or `multipart/x-multi-encrypted`.
    #[error("content type {0:?} is not an encrypted body")]
    NotEncrypted(String),
    /// The Content-Type names no `protocol`, or one this module does not know.
    #[error("unknown session-encryption protocol {0:?}")]
    UnknownProtocol(String),
    /// The Content-Type's parameters are malformed (for example an unterminated quote or
    /// an over-long boundary).
    #[error("malformed encrypted content type: {0}")]
    BadContentType(&'static str),
    /// A block names a different protocol from the Content-Type.
    #[error("block {part} is {found:?}, the content type says {expected}")]
    ProtocolMismatch {
        /// Zero-based block number.
        part: usize,
        /// The protocol of the Content-Type.
        expected: Protocol,
        /// What the block's Content-Type said.
        found: String,
    },
    /// The body does not start with a boundary line.
    #[error("body does not start with a --{BOUNDARY} line")]
    MissingBoundary,
    /// A block's header lines are malformed or lack a required header.
    #[error("block {part}: bad part header: {reason}")]
    BadPartHeader {
        /// Zero-based block number.
        part: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// Fewer than four bytes where the header-length field should be.
    #[error("block {part}: truncated before its header length field")]
    TruncatedSignatureLength {
        /// Zero-based block number.
        part: usize,
    },
    /// The header-length field exceeds [`MAX_HEADER_LEN`] or the bytes that follow.
    #[error("block {part}: header length {length} exceeds the data")]
    SignatureTooLong {
        /// Zero-based block number.
        part: usize,
        /// The announced header length.
        length: u32,
    },
    /// The body ends without the closing `--Encrypted Boundary--` line.
    #[error("body ends without the closing --{BOUNDARY}-- line")]
    MissingEndBoundary,
    /// More blocks than [`MAX_PARTS`].
    #[error("body has more than {MAX_PARTS} blocks")]
    TooManyParts,
    /// The decrypted length differs from `Length`: the message was truncated or tampered
    /// with (pypsrp and pywinrm `encryption.py` refuse it too).
    #[error("block {part}: decrypted {actual} bytes, Length says {expected}")]
    LengthMismatch {
        /// Zero-based block number.
        part: usize,
        /// `Length` from the OriginalContent header.
        expected: u64,
        /// Bytes the sealer returned (plus its padding).
        actual: u64,
    },
    /// A sealed header is longer than the `u32` length field can express.
    #[error("sealed header of {0} bytes does not fit the length field")]
    HeaderTooLong(usize),
    /// The sealer failed to seal.
    #[error("sealing failed")]
    Seal(#[source] E),
    /// The sealer failed to unseal a block (bad signature, wrong sequence, bad key).
    #[error("block {part}: unsealing failed")]
    Unseal {
        /// Zero-based block number.
        part: usize,
        /// The sealer's error.
        #[source]
        source: E,
    },
}

/// Seals `plaintext` (a SOAP envelope) into an encrypted body for `protocol`.
///
/// CredSSP messages longer than [`CREDSSP_CHUNK_SIZE`] become several blocks under
/// `multipart/x-multi-encrypted`; everything else is one block under
/// `multipart/encrypted`. The body always ends with `--Encrypted Boundary--\r\n`.
pub fn encrypt<S: MessageSealer + ?Sized>(
    sealer: &mut S,
    protocol: Protocol,
    plaintext: &[u8],
) -> Result<EncryptedBody, FramingError<S::Error>> {
    let chunked = protocol == Protocol::CredSsp && plaintext.len() > CREDSSP_CHUNK_SIZE;
    let chunk_size = if chunked {
        CREDSSP_CHUNK_SIZE
    } else {
        plaintext.len()
    };
    let blocks = plaintext.len().div_ceil(chunk_size.max(1)).max(1);
    // Framing adds about 200 bytes per block and the seal about its header.
    let mut body = Vec::with_capacity(plaintext.len() + blocks * 300 + 32);
    // One block per chunk; an empty message is one empty block.
    let mut rest = plaintext;
    loop {
        let (chunk, tail) = rest.split_at(rest.len().min(chunk_size));
        rest = tail;
        let sealed = sealer.seal(chunk).map_err(FramingError::Seal)?;
        let header_len = u32::try_from(sealed.header.len())
            .map_err(|_| FramingError::HeaderTooLong(sealed.header.len()))?;
        let length = chunk.len().saturating_add(sealed.padding);
        write_boundary(&mut body, false);
        write_header(&mut body, "Content-Type", protocol.mime_type());
        write_original_content(&mut body, length);
        write_boundary(&mut body, false);
        write_header(&mut body, "Content-Type", OCTET_STREAM);
        body.extend_from_slice(&header_len.to_le_bytes());
        body.extend_from_slice(&sealed.header);
        body.extend_from_slice(&sealed.payload);
        if rest.is_empty() {
            break;
        }
    }
    write_boundary(&mut body, true);
    Ok(EncryptedBody {
        content_type: protocol.content_type(chunked),
        body,
    })
}

/// Unseals an encrypted body, given the HTTP `Content-Type` it came with.
///
/// Parsing is lenient where real servers differ (Exchange writes `-- Encrypted Boundary`
/// with a space, pypsrp `encryption.py`; header names and MIME types compare
/// case-insensitively; extra whitespace and unknown headers are skipped) and strict
/// about everything that matters: each block must name the Content-Type's protocol,
/// every size read from the body is bounded before use, and each block's decrypted
/// length must equal its `Length` (with or without the sealer's padding: pypsrp counts
/// Kerberos padding, pywinrm does not). Blocks are unsealed in order and concatenated.
pub fn decrypt<S: MessageSealer + ?Sized>(
    sealer: &mut S,
    content_type: &str,
    body: &[u8],
) -> Result<Vec<u8>, FramingError<S::Error>> {
    let ct = parse_content_type(content_type)?;
    let boundary = ct.boundary.as_bytes();
    let mut pos = skip_while(body, 0, |b| b.is_ascii_whitespace());
    match match_delimiter(body, pos, boundary) {
        Some(d) if !d.closing => pos = d.end,
        _ => return Err(FramingError::MissingBoundary),
    }
    let mut plaintext = Vec::new();
    let mut part = 0usize;
    loop {
        if part >= MAX_PARTS {
            return Err(FramingError::TooManyParts);
        }
        // First part: the metadata headers, up to the next delimiter.
        let next = find_delimiter(body, pos, boundary).ok_or(FramingError::BadPartHeader {
            part,
            reason: "no octet-stream part follows the metadata part",
        })?;
        if next.closing {
            return Err(FramingError::BadPartHeader {
                part,
                reason: "no octet-stream part follows the metadata part",
            });
        }
        let expected = parse_metadata(body.get(pos..next.start).unwrap_or_default(), part)
            .and_then(|(found, length)| {
                if Protocol::from_mime_type(&found) == Some(ct.protocol) {
                    Ok(length)
                } else {
                    Err(FramingError::ProtocolMismatch {
                        part,
                        expected: ct.protocol,
                        found: truncate(&found),
                    })
                }
            })?;
        pos = skip_data_headers(body, next.end, part)?;

        // Second part: u32 LE header length, header, sealed payload, delimiter.
        let len_field: [u8; 4] = body
            .get(pos..pos.saturating_add(4))
            .and_then(|s| s.try_into().ok())
            .ok_or(FramingError::TruncatedSignatureLength { part })?;
        let header_len = u32::from_le_bytes(len_field);
        let header_start = pos + 4;
        let header_end = usize::try_from(header_len)
            .ok()
            .filter(|&n| n <= MAX_HEADER_LEN)
            .and_then(|n| header_start.checked_add(n))
            .filter(|&end| end <= body.len())
            .ok_or(FramingError::SignatureTooLong {
                part,
                length: header_len,
            })?;
        // The payload runs to the next delimiter. Searching from the header start (a
        // 16 to 64 byte binary blob) lets a header length that reaches past the
        // delimiter be reported as the lie it is.
        let end =
            find_delimiter(body, header_start, boundary).ok_or(FramingError::MissingEndBoundary)?;
        if header_end > end.start {
            return Err(FramingError::SignatureTooLong {
                part,
                length: header_len,
            });
        }
        let header = body.get(header_start..header_end).unwrap_or_default();
        let payload = body.get(header_end..end.start).unwrap_or_default();
        let unsealed = sealer
            .unseal(header, payload)
            .map_err(|source| FramingError::Unseal { part, source })?;
        let actual = unsealed.plaintext.len() as u64;
        let padded = actual.saturating_add(unsealed.padding as u64);
        if expected != actual && expected != padded {
            return Err(FramingError::LengthMismatch {
                part,
                expected,
                actual: padded,
            });
        }
        part += 1;
        if end.closing && plaintext.is_empty() {
            // One block (every non-CredSSP message): its plaintext is the message.
            return Ok(unsealed.plaintext);
        }
        plaintext.extend_from_slice(&unsealed.plaintext);
        if end.closing {
            return Ok(plaintext);
        }
        pos = end.end;
    }
}

/// The protocol of an encrypted body's `Content-Type`, or `None` when the body is not
/// encrypted (for example a plain `application/soap+xml` fault from a server that
/// refused to decrypt, or an unknown protocol).
pub fn is_encrypted_content_type(content_type: &str) -> Option<Protocol> {
    parse_content_type::<std::convert::Infallible>(content_type)
        .ok()
        .map(|ct| ct.protocol)
}

/// The parts of an encrypted body's Content-Type that matter.
struct EncryptedContentType<'a> {
    protocol: Protocol,
    boundary: Cow<'a, str>,
}

/// A boundary delimiter found in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delimiter {
    /// Offset of its leading `--`.
    start: usize,
    /// Offset just past its line end.
    end: usize,
    /// True for the closing `--boundary--`.
    closing: bool,
}

fn write_boundary(body: &mut Vec<u8>, closing: bool) {
    body.extend_from_slice(b"--");
    body.extend_from_slice(BOUNDARY.as_bytes());
    if closing {
        body.extend_from_slice(b"--");
    }
    body.extend_from_slice(b"\r\n");
}

/// Writes a part header line; MS-WSMV 2.2.9.1.1.2.1 requires the leading TAB.
fn write_header(body: &mut Vec<u8>, name: &str, value: &str) {
    body.push(b'\t');
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(b": ");
    body.extend_from_slice(value.as_bytes());
    body.extend_from_slice(b"\r\n");
}

/// Writes the `OriginalContent` part header (MS-WSMV 2.2.9.1.1.2.1) without a temporary
/// string.
fn write_original_content(body: &mut Vec<u8>, length: usize) {
    use std::io::Write as _;
    // Writing into a Vec<u8> cannot fail.
    let _ = write!(
        body,
        "\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={length}\r\n"
    );
}

/// Parses `multipart/encrypted;protocol="...";boundary="..."` (RFC 2045 5.1 syntax:
/// case-insensitive media type and parameter names, values quoted or not). Borrows from
/// the header: nothing is allocated unless a quoted value holds a backslash escape.
fn parse_content_type<E: std::error::Error>(
    content_type: &str,
) -> Result<EncryptedContentType<'_>, FramingError<E>> {
    let mut media = None;
    let mut protocol = None;
    let mut boundary = None;
    split_params(content_type, |name, value| {
        if media.is_none() {
            media = Some(name);
        } else if name.eq_ignore_ascii_case("protocol") {
            protocol = Some(value);
        } else if name.eq_ignore_ascii_case("boundary") {
            boundary = Some(value);
        }
    })?;
    let media = media.unwrap_or_default();
    if !media.eq_ignore_ascii_case(MULTIPART_ENCRYPTED)
        && !media.eq_ignore_ascii_case(MULTIPART_MULTI_ENCRYPTED)
    {
        return Err(FramingError::NotEncrypted(truncate(content_type)));
    }
    let protocol = protocol.unwrap_or_default();
    let protocol = Protocol::from_mime_type(&protocol)
        .ok_or_else(|| FramingError::UnknownProtocol(truncate(&protocol)))?;
    // RFC 2046 5.1.1: a boundary is 1 to 70 characters. A missing one is taken as the
    // boundary every implementation uses.
    let boundary = boundary.unwrap_or(Cow::Borrowed(BOUNDARY));
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(FramingError::BadContentType(
            "boundary must be 1 to 70 characters",
        ));
    }
    Ok(EncryptedContentType { protocol, boundary })
}

/// Splits a header value into `;`-separated `name=value` pairs and hands each to `each`
/// in order (the first item is the bare media type, given as a name with an empty
/// value), honouring quotes. Names and unquoted values are trimmed; a quoted value is
/// kept as written between its quotes, backslash escapes resolved, and whatever follows
/// its closing quote up to the next `;` is ignored.
fn split_params<'a, E: std::error::Error>(
    value: &'a str,
    mut each: impl FnMut(&'a str, Cow<'a, str>),
) -> Result<(), FramingError<E>> {
    // Every position below sits on an ASCII byte (`;`, `=`, `"`) or an end, so each
    // `get` is on a character boundary and never fails.
    let slice = |from: usize, to: usize| value.get(from..to).unwrap_or_default();
    let bytes = value.as_bytes();
    let mut pos = 0;
    loop {
        let start = pos;
        let mut equals: Option<usize> = None;
        let mut quoted = false;
        while let Some(&byte) = bytes.get(pos) {
            match byte {
                b';' => break,
                b'=' if equals.is_none() => equals = Some(pos),
                b'"' if equals.is_some_and(|eq| slice(eq + 1, pos).trim().is_empty()) => {
                    let (text, close) = read_quoted(value, pos + 1)
                        .ok_or(FramingError::BadContentType("unterminated quoted value"))?;
                    let name = slice(start, equals.unwrap_or(start)).trim();
                    each(name, text);
                    pos = bytes
                        .get(close..)
                        .and_then(|rest| rest.iter().position(|&b| b == b';'))
                        .map_or(bytes.len(), |at| close + at);
                    quoted = true;
                    break;
                }
                _ => {}
            }
            pos += 1;
        }
        if !quoted {
            let (name, text) = match equals {
                Some(eq) => (slice(start, eq), slice(eq + 1, pos).trim()),
                None => (slice(start, pos), ""),
            };
            if !name.trim().is_empty() || equals.is_some() {
                each(name.trim(), Cow::Borrowed(text));
            }
        }
        if pos >= bytes.len() {
            return Ok(());
        }
        pos += 1;
    }
}

/// The quoted value starting at `from` (just past its opening quote): its text with
/// backslash escapes resolved, and the offset of the closing quote; `None` when it is
/// not closed.
fn read_quoted(value: &str, from: usize) -> Option<(Cow<'_, str>, usize)> {
    let rest = value.get(from..)?;
    let mut owned: Option<String> = None;
    let mut segment = 0;
    let mut chars = rest.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                let tail = rest.get(segment..at).unwrap_or_default();
                let text = match owned {
                    None => Cow::Borrowed(tail),
                    Some(mut text) => {
                        text.push_str(tail);
                        Cow::Owned(text)
                    }
                };
                return Some((text, from + at));
            }
            '\\' => {
                let text = owned.get_or_insert_with(String::new);
                text.push_str(rest.get(segment..at).unwrap_or_default());
                match chars.next() {
                    Some((escaped_at, escaped)) => {
                        text.push(escaped);
                        segment = escaped_at + escaped.len_utf8();
                    }
                    None => segment = rest.len(),
                }
            }
            _ => {}
        }
    }
    None
}

/// Parses the metadata part: returns the block's protocol MIME type and `Length`.
/// Header lines may come in any order, with any indentation; unknown ones are skipped.
fn parse_metadata<E: std::error::Error>(
    bytes: &[u8],
    part: usize,
) -> Result<(String, u64), FramingError<E>> {
    let bad = |reason| FramingError::BadPartHeader { part, reason };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("metadata part is not text"))?;
    let mut protocol = None;
    let mut length = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(bad("header line without a colon"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("Content-Type") {
            let mime = value.split(';').next().unwrap_or_default().trim();
            protocol = Some(mime.to_owned());
        } else if name.eq_ignore_ascii_case("OriginalContent") {
            let param = value
                .split(';')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("Length"))
                .ok_or(bad("OriginalContent has no Length"))?;
            let digits = param.1.trim();
            // At most 19 digits always fits a u64, so `parse` cannot overflow.
            if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad("Length is not a decimal number"));
            }
            length = Some(
                digits
                    .parse::<u64>()
                    .map_err(|_| bad("Length is not a decimal number"))?,
            );
        }
    }
    let protocol = protocol.ok_or(bad("metadata part has no Content-Type"))?;
    let length = length.ok_or(bad("metadata part has no OriginalContent"))?;
    Ok((protocol, length))
}

/// Skips the header lines of the octet-stream part and returns where the binary data
/// starts: right after the line ending of `Content-Type: application/octet-stream`
/// (MS-WSMV 2.2.9.1.1.2.2 puts the length field immediately after it, with no blank
/// line). A few other header lines before it are tolerated.
fn skip_data_headers<E: std::error::Error>(
    body: &[u8],
    mut pos: usize,
    part: usize,
) -> Result<usize, FramingError<E>> {
    let bad = |reason| FramingError::BadPartHeader { part, reason };
    for _ in 0..MAX_DATA_HEADER_LINES {
        let rest = body.get(pos..).unwrap_or_default();
        let window = rest.get(..MAX_DATA_HEADER_LINE).unwrap_or(rest);
        let lf = window
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(bad("octet-stream part has no header line"))?;
        let line = window.get(..lf).unwrap_or_default();
        pos += lf + 1;
        let line = std::str::from_utf8(line)
            .map_err(|_| bad("octet-stream part header is not text"))?
            .trim();
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(bad("octet-stream part header without a colon"))?;
        if name.trim().eq_ignore_ascii_case("Content-Type") {
            if value.trim().eq_ignore_ascii_case(OCTET_STREAM) {
                return Ok(pos);
            }
            return Err(bad("second part is not application/octet-stream"));
        }
    }
    Err(bad("octet-stream part has no Content-Type"))
}

/// Finds the next boundary delimiter at or after `from`.
fn find_delimiter(body: &[u8], from: usize, boundary: &[u8]) -> Option<Delimiter> {
    let mut at = from;
    while let Some(offset) = body.get(at..)?.windows(2).position(|w| w == b"--") {
        let start = at + offset;
        if let Some(d) = match_delimiter(body, start, boundary) {
            return Some(d);
        }
        at = start + 1;
    }
    None
}

/// Matches `--[SP/HT]*boundary[--][SP/HT]*(CRLF|LF)` at `start`. The whitespace after the
/// dashes is the Exchange quirk (pypsrp `encryption.py`); the closing delimiter may also
/// end the body without a line ending.
fn match_delimiter(body: &[u8], start: usize, boundary: &[u8]) -> Option<Delimiter> {
    if body.get(start..start + 2)? != b"--" {
        return None;
    }
    let at = skip_while(body, start + 2, |b| b == b' ' || b == b'\t');
    if body.get(at..at + boundary.len())? != boundary {
        return None;
    }
    let mut at = at + boundary.len();
    let closing = body.get(at..at + 2) == Some(b"--".as_slice());
    if closing {
        at += 2;
    }
    at = skip_while(body, at, |b| b == b' ' || b == b'\t');
    let end = match body.get(at..) {
        Some([b'\r', b'\n', ..]) => at + 2,
        Some([b'\n', ..]) => at + 1,
        Some([]) if closing => at,
        _ => return None,
    };
    Some(Delimiter {
        start,
        end,
        closing,
    })
}

fn skip_while(body: &[u8], mut at: usize, keep: impl Fn(u8) -> bool) -> usize {
    while body.get(at).is_some_and(|&b| keep(b)) {
        at += 1;
    }
    at
}

/// Copies at most [`MAX_ERROR_TEXT`] characters of input into an error.
fn truncate(text: &str) -> String {
    text.chars().take(MAX_ERROR_TEXT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    #[error("toy sealer: {0}")]
    struct ToyError(&'static str);

    /// NTLM-shaped: a 16-byte "signature" (a counter and a checksum) and XOR data.
    #[derive(Default)]
    struct XorSealer {
        seq_out: u32,
        seq_in: u32,
    }

    const KEY: u8 = 0x5a;

    fn checksum(data: &[u8]) -> u32 {
        data.iter()
            .fold(0u32, |a, &b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
    }

    impl MessageSealer for XorSealer {
        type Error = ToyError;

        fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, ToyError> {
            let mut header = vec![1, 0, 0, 0];
            header.extend_from_slice(&checksum(plaintext).to_le_bytes());
            header.extend_from_slice(&[0; 4]);
            header.extend_from_slice(&self.seq_out.to_le_bytes());
            self.seq_out += 1;
            Ok(Sealed {
                header,
                payload: plaintext.iter().map(|b| b ^ KEY).collect(),
                padding: 0,
            })
        }

        fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, ToyError> {
            if header.len() != 16 {
                return Err(ToyError("signature is not 16 bytes"));
            }
            let plain: Vec<u8> = payload.iter().map(|b| b ^ KEY).collect();
            if header[4..8] != checksum(&plain).to_le_bytes() {
                return Err(ToyError("bad signature"));
            }
            if header[12..16] != self.seq_in.to_le_bytes() {
                return Err(ToyError("bad sequence number"));
            }
            self.seq_in += 1;
            Ok(Unsealed::new(plain))
        }
    }

    /// Kerberos-shaped: a 60-byte token header and data padded to 8 bytes (the RC4
    /// case, where padding counts towards `Length`).
    struct PaddingSealer;

    impl MessageSealer for PaddingSealer {
        type Error = ToyError;

        fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, ToyError> {
            let padding = 8 - plaintext.len() % 8;
            let mut payload: Vec<u8> = plaintext.iter().map(|b| b.rotate_left(3)).collect();
            payload.extend(std::iter::repeat_n(padding as u8, padding));
            let mut header = vec![0x05, 0x04, 0x06, 0xff];
            header.resize(60, 0xee);
            Ok(Sealed {
                header,
                payload,
                padding,
            })
        }

        fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, ToyError> {
            if header.len() != 60 || header[..4] != [0x05, 0x04, 0x06, 0xff] {
                return Err(ToyError("bad token header"));
            }
            let padding = usize::from(*payload.last().ok_or(ToyError("no padding"))?);
            if padding == 0 || padding > 8 || padding > payload.len() {
                return Err(ToyError("bad padding"));
            }
            let data = &payload[..payload.len() - padding];
            Ok(Unsealed {
                plaintext: data.iter().map(|b| b.rotate_right(3)).collect(),
                padding,
            })
        }
    }

    /// CredSSP-shaped: a fake TLS record (5-byte header, data, 16-byte tag) split after
    /// the trailer length (16), like pyspnego's `wrap_winrm`.
    struct TlsSealer;

    impl MessageSealer for TlsSealer {
        type Error = ToyError;

        fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, ToyError> {
            let mut record = vec![0x17, 0x03, 0x03];
            record.extend_from_slice(&((plaintext.len() + 16) as u16).to_be_bytes());
            record.extend(plaintext.iter().map(|b| !b));
            record.extend_from_slice(&[0xaa; 16]);
            let payload = record.split_off(16.min(record.len()));
            Ok(Sealed {
                header: record,
                payload,
                padding: 0,
            })
        }

        fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, ToyError> {
            let record = [header, payload].concat();
            if record.len() < 21 || record[..3] != [0x17, 0x03, 0x03] {
                return Err(ToyError("not a TLS record"));
            }
            let n = usize::from(u16::from_be_bytes([record[3], record[4]]));
            if n != record.len() - 5 || record[record.len() - 16..] != [0xaa; 16] {
                return Err(ToyError("bad TLS record"));
            }
            Ok(Unsealed::new(
                record[5..record.len() - 16].iter().map(|b| !b).collect(),
            ))
        }
    }

    const SOAP: &[u8] = b"<s:Envelope>hi</s:Envelope>";

    fn spnego_body() -> EncryptedBody {
        encrypt(&mut XorSealer::default(), Protocol::Spnego, SOAP).unwrap()
    }

    #[test]
    fn encrypt_writes_the_exact_spnego_framing() {
        let out = spnego_body();
        assert_eq!(
            out.content_type,
            "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";\
             boundary=\"Encrypted Boundary\""
        );
        let mut want = b"--Encrypted Boundary\r\n\
            \tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\
            \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=27\r\n\
            --Encrypted Boundary\r\n\
            \tContent-Type: application/octet-stream\r\n\
            \x10\x00\x00\x00"
            .to_vec();
        want.extend_from_slice(&[1, 0, 0, 0]);
        want.extend_from_slice(&checksum(SOAP).to_le_bytes());
        want.extend_from_slice(&[0; 8]);
        want.extend(SOAP.iter().map(|b| b ^ KEY));
        want.extend_from_slice(b"--Encrypted Boundary--\r\n");
        assert_eq!(out.body, want);
    }

    #[test]
    fn round_trips_all_three_protocols() {
        let out = spnego_body();
        let plain = decrypt(&mut XorSealer::default(), &out.content_type, &out.body).unwrap();
        assert_eq!(plain, SOAP);

        let out = encrypt(&mut PaddingSealer, Protocol::Kerberos, SOAP).unwrap();
        assert!(out.content_type.contains("HTTP-Kerberos-session-encrypted"));
        // pypsrp adds the Kerberos padding to Length: 27 + 5.
        let body = String::from_utf8_lossy(&out.body);
        assert!(body.contains("\tContent-Type: application/HTTP-Kerberos-session-encrypted\r\n"));
        assert!(body.contains(";Length=32\r\n"));
        let at = out
            .body
            .windows(4)
            .position(|w| w == [60, 0, 0, 0])
            .unwrap();
        assert_eq!(&out.body[at + 4..at + 8], &[0x05, 0x04, 0x06, 0xff]);
        assert_eq!(
            decrypt(&mut PaddingSealer, &out.content_type, &out.body).unwrap(),
            SOAP
        );

        let out = encrypt(&mut TlsSealer, Protocol::CredSsp, SOAP).unwrap();
        assert!(out.content_type.starts_with("multipart/encrypted;"));
        // The length field carries the TLS trailer length.
        let at = out
            .body
            .windows(4)
            .position(|w| w == [16, 0, 0, 0])
            .unwrap();
        assert_eq!(&out.body[at + 4..at + 7], &[0x17, 0x03, 0x03]);
        assert_eq!(
            decrypt(&mut TlsSealer, &out.content_type, &out.body).unwrap(),
            SOAP
        );
    }

    #[test]
    fn kerberos_length_without_padding_is_accepted_too() {
        // pywinrm writes Length without the padding; both must decrypt.
        let out = encrypt(&mut PaddingSealer, Protocol::Kerberos, SOAP).unwrap();
        let body = replace(&out.body, b";Length=32\r\n", b";Length=27\r\n");
        assert_eq!(
            decrypt(&mut PaddingSealer, &out.content_type, &body).unwrap(),
            SOAP
        );
        let body = replace(&out.body, b";Length=32\r\n", b";Length=28\r\n");
        assert!(matches!(
            decrypt(&mut PaddingSealer, &out.content_type, &body),
            Err(FramingError::LengthMismatch {
                part: 0,
                expected: 28,
                actual: 32
            })
        ));
    }

    #[test]
    fn credssp_chunks_at_16_kib() {
        let msg: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let out = encrypt(&mut TlsSealer, Protocol::CredSsp, &msg).unwrap();
        assert_eq!(
            out.content_type,
            "multipart/x-multi-encrypted;protocol=\"application/HTTP-CredSSP-session-encrypted\";\
             boundary=\"Encrypted Boundary\""
        );
        let body = String::from_utf8_lossy(&out.body);
        // 40000 = 16384 + 16384 + 7232: three blocks, two boundaries each, one closing.
        assert_eq!(body.matches("OriginalContent:").count(), 3);
        assert_eq!(body.matches(";Length=16384\r\n").count(), 2);
        assert_eq!(body.matches(";Length=7232\r\n").count(), 1);
        assert_eq!(body.matches("--Encrypted Boundary\r\n").count(), 6);
        assert!(out.body.ends_with(b"--Encrypted Boundary--\r\n"));
        assert_eq!(
            decrypt(&mut TlsSealer, &out.content_type, &out.body).unwrap(),
            msg
        );

        // Exactly 16 KiB stays a single block; other protocols never chunk.
        let exact = encrypt(&mut TlsSealer, Protocol::CredSsp, &msg[..16_384]).unwrap();
        assert!(exact.content_type.starts_with("multipart/encrypted;"));
        let big = encrypt(&mut XorSealer::default(), Protocol::Spnego, &msg).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&big.body)
                .matches("OriginalContent")
                .count(),
            1
        );
    }

    #[test]
    fn chunk_sequence_numbers_follow_wire_order() {
        // Multi-block bodies unseal in order, so sequence numbers line up.
        let mut tx = XorSealer::default();
        let msg = vec![7u8; 20_000];
        let mut sealed = Vec::new();
        for chunk in msg.chunks(CREDSSP_CHUNK_SIZE) {
            let one = encrypt(&mut tx, Protocol::Spnego, chunk).unwrap();
            let cut = one.body.len() - b"--Encrypted Boundary--\r\n".len();
            sealed.extend_from_slice(&one.body[..cut]);
        }
        sealed.extend_from_slice(b"--Encrypted Boundary--\r\n");
        let ct = Protocol::Spnego.content_type(true);
        assert_eq!(
            decrypt(&mut XorSealer::default(), &ct, &sealed).unwrap(),
            msg
        );
    }

    #[test]
    fn parses_the_exchange_quirk_and_loose_headers() {
        let out = spnego_body();
        let body = replace_all(&out.body, b"--Encrypted Boundary", b"-- Encrypted Boundary");
        assert_eq!(
            String::from_utf8_lossy(&body)
                .matches("-- Encrypted")
                .count(),
            3
        );
        assert_eq!(
            decrypt(&mut XorSealer::default(), &out.content_type, &body).unwrap(),
            SOAP
        );

        // Headers reordered, re-indented, re-cased; unquoted parameters; an extra header.
        let head = b"\r\n--Encrypted Boundary\r\n\
            \x20 OriginalContent:type=application/soap+xml; charset=UTF-8; length=27\r\n\
            content-type:  application/http-spnego-session-encrypted \r\n\
            --Encrypted Boundary\r\n\
            \tX-Extra: 1\r\n\
            \tCONTENT-TYPE: Application/Octet-Stream\r\n";
        let at = out
            .body
            .windows(4)
            .position(|w| w == [16, 0, 0, 0])
            .unwrap();
        let body = [head.as_slice(), &out.body[at..out.body.len() - 2]].concat();
        let ct = "Multipart/Encrypted; boundary=Encrypted Boundary; \
                  protocol=application/HTTP-SPNEGO-session-encrypted";
        assert_eq!(decrypt(&mut XorSealer::default(), ct, &body).unwrap(), SOAP);
    }

    /// The allocating splitter the borrowing one replaced (issue 7), kept as its oracle.
    fn reference_split(value: &str) -> Result<Vec<(String, String)>, FramingError<ToyError>> {
        let mut items = Vec::new();
        let mut chars = value.chars().peekable();
        loop {
            let mut name = String::new();
            let mut val = String::new();
            let mut in_value = false;
            while let Some(&c) = chars.peek() {
                match c {
                    ';' => break,
                    '=' if !in_value => {
                        in_value = true;
                        chars.next();
                    }
                    '"' if in_value && val.trim().is_empty() => {
                        chars.next();
                        val.clear();
                        let mut closed = false;
                        while let Some(q) = chars.next() {
                            match q {
                                '"' => {
                                    closed = true;
                                    break;
                                }
                                '\\' => val.extend(chars.next()),
                                other => val.push(other),
                            }
                        }
                        if !closed {
                            return Err(FramingError::BadContentType("unterminated quoted value"));
                        }
                        // Whatever follows the closing quote up to `;` is ignored.
                        while chars.peek().is_some_and(|&c| c != ';') {
                            chars.next();
                        }
                        items.push((name.trim().to_owned(), val));
                        name.clear();
                        val = String::new();
                        in_value = false;
                        break;
                    }
                    _ => {
                        if in_value {
                            val.push(c);
                        } else {
                            name.push(c);
                        }
                        chars.next();
                    }
                }
            }
            if !name.trim().is_empty() || in_value {
                items.push((name.trim().to_owned(), val.trim().to_owned()));
            }
            if chars.next().is_none() {
                return Ok(items);
            }
        }
    }

    /// The borrowing splitter gives exactly what the allocating one gave, errors included,
    /// on hand-picked headers and on every short string over the characters that matter.
    #[test]
    fn split_params_matches_the_allocating_splitter() {
        let split = |value: &str| -> Result<Vec<(String, String)>, FramingError<ToyError>> {
            let mut items = Vec::new();
            split_params(value, |n, v| items.push((n.to_owned(), v.into_owned())))?;
            Ok(items)
        };
        let mut cases: Vec<String> = [
            "",
            "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";boundary=\"Encrypted Boundary\"",
            "Multipart/Encrypted; boundary=Encrypted Boundary; protocol=application/x",
            " a = \"q\\\"x\\\\y\" junk ; b=\"\" ;c= \"é\\é\";;d",
            "a=\"unterminated",
            "a=\"ends with backslash\\",
            "=;=x;\"=\"v\";a==b=c; x = y \"z\"",
        ]
        .map(str::to_owned)
        .to_vec();
        let alphabet = ['a', ' ', ';', '=', '"', '\\', 'é'];
        let mut word = Vec::new();
        for len in 0..=5u32 {
            for mut n in 0..alphabet.len().pow(len) {
                word.clear();
                for _ in 0..len {
                    word.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                cases.push(word.iter().collect());
            }
        }
        for case in &cases {
            let got = split(case);
            let want = reference_split(case);
            match (&got, &want) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{case:?}"),
                (Err(FramingError::BadContentType(a)), Err(FramingError::BadContentType(b))) => {
                    assert_eq!(a, b, "{case:?}")
                }
                _ => panic!("{case:?}: {got:?} against {want:?}"),
            }
        }
        assert_eq!(cases.len(), 7 + 19_608);
    }

    #[test]
    fn constant_content_types_spell_out_the_parts() {
        for protocol in [Protocol::Spnego, Protocol::Kerberos, Protocol::CredSsp] {
            for chunked in [false, true] {
                let media = if chunked {
                    MULTIPART_MULTI_ENCRYPTED
                } else {
                    MULTIPART_ENCRYPTED
                };
                let built = format!(
                    "{media};protocol=\"{}\";boundary=\"{BOUNDARY}\"",
                    protocol.mime_type()
                );
                assert_eq!(protocol.content_type_str(chunked), built);
                assert_eq!(protocol.content_type(chunked), built);
            }
        }
    }

    #[test]
    fn content_type_detection() {
        let ct = Protocol::Kerberos.content_type(false);
        assert_eq!(is_encrypted_content_type(&ct), Some(Protocol::Kerberos));
        assert_eq!(
            is_encrypted_content_type(&Protocol::CredSsp.content_type(true)),
            Some(Protocol::CredSsp)
        );
        assert_eq!(
            is_encrypted_content_type("application/soap+xml;charset=UTF-8"),
            None
        );
        assert_eq!(
            is_encrypted_content_type("multipart/encrypted;protocol=\"application/x-foo\""),
            None
        );
        assert_eq!(
            is_encrypted_content_type("multipart/encrypted;protocol=\"a"),
            None
        );
    }

    #[test]
    fn content_type_errors_are_typed() {
        let out = spnego_body();
        let mut s = XorSealer::default();
        assert!(matches!(
            decrypt(&mut s, "application/soap+xml;charset=UTF-8", &out.body),
            Err(FramingError::NotEncrypted(_))
        ));
        assert!(matches!(
            decrypt(&mut s, "multipart/encrypted;boundary=\"Encrypted Boundary\"", &out.body),
            Err(FramingError::UnknownProtocol(p)) if p.is_empty()
        ));
        let kerberos = Protocol::Kerberos.content_type(false);
        assert!(matches!(
            decrypt(&mut s, &kerberos, &out.body),
            Err(FramingError::ProtocolMismatch { part: 0, expected: Protocol::Kerberos, found })
                if found == "application/HTTP-SPNEGO-session-encrypted"
        ));
        let long = format!(
            "multipart/encrypted;protocol=\"{}\";boundary=\"{}\"",
            Protocol::Spnego,
            "b".repeat(71)
        );
        assert!(matches!(
            decrypt(&mut s, &long, &out.body),
            Err(FramingError::BadContentType(_))
        ));
    }

    #[test]
    fn hostile_bodies_return_errors() {
        let out = spnego_body();
        let ct = &out.content_type;
        let dec = |body: &[u8]| decrypt(&mut XorSealer::default(), ct, body);

        // Every truncation is an error, never a panic or a short message.
        for cut in 0..out.body.len() - 2 {
            assert!(
                dec(&out.body[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        assert!(matches!(dec(b""), Err(FramingError::MissingBoundary)));
        assert!(matches!(
            dec(b"junk--Encrypted Boundary\r\n"),
            Err(FramingError::MissingBoundary)
        ));

        let end = out.body.len() - b"--Encrypted Boundary--\r\n".len();
        assert!(matches!(
            dec(&out.body[..end]),
            Err(FramingError::MissingEndBoundary)
        ));

        // Length lies.
        let body = replace(&out.body, b"Length=27", b"Length=26");
        assert!(matches!(
            dec(&body),
            Err(FramingError::LengthMismatch {
                part: 0,
                expected: 26,
                actual: 27
            })
        ));
        let body = replace(&out.body, b"Length=27", b"Length=99999999999999999999999");
        assert!(matches!(
            dec(&body),
            Err(FramingError::BadPartHeader { part: 0, .. })
        ));
        let body = replace(&out.body, b"Length=27", b"Length=-1");
        assert!(matches!(
            dec(&body),
            Err(FramingError::BadPartHeader { part: 0, .. })
        ));
        let body = replace(&out.body, b";Length=27", b"");
        assert!(matches!(
            dec(&body),
            Err(FramingError::BadPartHeader { part: 0, .. })
        ));

        // A huge or over-long signature length is refused before slicing.
        for field in [
            [0xff, 0xff, 0xff, 0xff],
            [0x00, 0x10, 0x00, 0x00],
            [0x40, 0, 0, 0],
        ] {
            let body = replace(
                &out.body,
                &[0x10, 0, 0, 0, 1, 0, 0, 0],
                &[field, [1, 0, 0, 0]].concat(),
            );
            assert!(
                matches!(
                    dec(&body),
                    Err(FramingError::SignatureTooLong { part: 0, .. })
                ),
                "{field:?}"
            );
        }
        // Signature length within bounds but pointing at the wrong bytes: the sealer says no.
        let body = replace(
            &out.body,
            &[0x10, 0, 0, 0, 1, 0, 0, 0],
            &[0x0c, 0, 0, 0, 1, 0, 0, 0],
        );
        assert!(matches!(
            dec(&body),
            Err(FramingError::Unseal {
                part: 0,
                source: ToyError("signature is not 16 bytes")
            })
        ));
        // A flipped ciphertext bit fails the signature.
        let mut body = out.body.clone();
        body[end - 1] ^= 1;
        assert!(matches!(
            dec(&body),
            Err(FramingError::Unseal {
                part: 0,
                source: ToyError("bad signature")
            })
        ));
        // The octet-stream part missing its header, or the wrong type.
        let body = replace(
            &out.body,
            b"\tContent-Type: application/octet-stream\r\n",
            b"",
        );
        assert!(matches!(
            dec(&body),
            Err(FramingError::BadPartHeader { part: 0, .. })
        ));
        let body = replace(&out.body, b"application/octet-stream", b"text/plain");
        assert!(matches!(
            dec(&body),
            Err(FramingError::BadPartHeader { part: 0, .. })
        ));
        // A metadata part closed right away.
        let body =
            b"--Encrypted Boundary\r\n\tOriginalContent: Length=1\r\n--Encrypted Boundary--\r\n";
        assert!(matches!(
            dec(body),
            Err(FramingError::BadPartHeader { part: 0, .. })
        ));
    }

    #[test]
    fn errors_in_later_blocks_name_the_block() {
        let msg = vec![1u8; 20_000];
        let out = encrypt(&mut TlsSealer, Protocol::CredSsp, &msg).unwrap();
        let body = replace(&out.body, b"Length=3616", b"Length=3615");
        assert!(matches!(
            decrypt(&mut TlsSealer, &out.content_type, &body),
            Err(FramingError::LengthMismatch {
                part: 1,
                expected: 3615,
                actual: 3616
            })
        ));
    }

    #[test]
    fn too_many_blocks_are_refused() {
        let one = encrypt(&mut TlsSealer, Protocol::CredSsp, b"x").unwrap();
        let block = &one.body[..one.body.len() - b"--Encrypted Boundary--\r\n".len()];
        let mut body = block.repeat(MAX_PARTS + 1);
        body.extend_from_slice(b"--Encrypted Boundary--\r\n");
        assert!(matches!(
            decrypt(&mut TlsSealer, &one.content_type, &body),
            Err(FramingError::TooManyParts)
        ));
        body.drain(..block.len());
        assert_eq!(
            decrypt(&mut TlsSealer, &one.content_type, &body).unwrap(),
            vec![b'x'; MAX_PARTS]
        );
    }

    #[test]
    fn empty_message_round_trips() {
        let out = encrypt(&mut XorSealer::default(), Protocol::Spnego, b"").unwrap();
        assert!(String::from_utf8_lossy(&out.body).contains(";Length=0\r\n"));
        assert_eq!(
            decrypt(&mut XorSealer::default(), &out.content_type, &out.body).unwrap(),
            b""
        );
    }

    /// Replaces every occurrence of `from` with `to`.
    fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < haystack.len() {
            if haystack[at..].starts_with(from) {
                out.extend_from_slice(to);
                at += from.len();
            } else {
                out.push(haystack[at]);
                at += 1;
            }
        }
        out
    }

    /// Replaces the first occurrence of `from` (which must exist) with `to`.
    fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = haystack
            .windows(from.len())
            .position(|w| w == from)
            .unwrap();
        [&haystack[..at], to, &haystack[at + from.len()..]].concat()
    }
}
