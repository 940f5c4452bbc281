//! PSRP fragments (MS-PSRP 2.2.4): how a message is cut into pieces small enough for one
//! WS-Man envelope, and put back together.
//!
//! A fragment is a 21-byte big-endian header followed by a slice of a message:
//!
//! ```text
//! 0        8          16     17       21
//! ObjectId FragmentId  flags  length   blob...
//! ```
//!
//! flags bit 0 is Start, bit 1 is End (a message in one piece carries both). Several
//! fragments are simply concatenated inside one base64 `creationXml`, `rsp:Arguments` or
//! `rsp:Stream` value (`R:test_psrp_open_runspace`), and one message may span several
//! streams and several Receive responses (`R:test_client_fetch_file`).

use std::collections::BTreeMap;

/// Size of the fragment header (MS-PSRP 2.2.4).
pub const FRAGMENT_HEADER_LEN: usize = 21;

/// Bytes pypsrp and Windows-compatible clients leave free in every envelope on top of the
/// measured skeleton, for options and selectors the skeleton did not include
/// (pypsrp `wsman.py` `_calc_envelope_size`).
pub const ENVELOPE_PADDING: usize = 256;

const FLAG_START: u8 = 0x1;
const FLAG_END: u8 = 0x2;

/// One fragment of a PSRP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Identifies the message; a per-sender counter starting at 1.
    pub object_id: u64,
    /// Position of this fragment within its message, starting at 0.
    pub fragment_id: u64,
    /// First fragment of the message.
    pub start: bool,
    /// Last fragment of the message.
    pub end: bool,
    /// This fragment's slice of the message bytes.
    pub data: Vec<u8>,
}

/// Why fragment bytes could not be decoded or reassembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// Fewer than 21 bytes remain where a fragment header should start.
    #[error("truncated fragment header at byte {offset}: {available} of 21 bytes")]
    TruncatedHeader {
        /// Offset of the header within the blob.
        offset: usize,
        /// Bytes left in the blob.
        available: usize,
    },
    /// The header's length field points past the end of the blob.
    #[error(
        "fragment {object_id}/{fragment_id} declares {declared} bytes but only {available} remain"
    )]
    LengthBeyondBlob {
        /// Object id from the header.
        object_id: u64,
        /// Fragment id from the header.
        fragment_id: u64,
        /// Length the header declares.
        declared: u32,
        /// Bytes actually left.
        available: usize,
    },
    /// Reserved flag bits are set (MS-PSRP 2.2.4: they must be 0).
    #[error("fragment {object_id}/{fragment_id} has reserved flag bits set: {flags:#04x}")]
    ReservedFlags {
        /// Object id from the header.
        object_id: u64,
        /// Fragment id from the header.
        fragment_id: u64,
        /// The whole flags byte.
        flags: u8,
    },
    /// A fragment of an object whose start fragment was never seen.
    #[error("fragment {object_id}/{fragment_id} continues an object that was never started")]
    MissingStart {
        /// Object id.
        object_id: u64,
        /// Fragment id.
        fragment_id: u64,
    },
    /// A start fragment with a non-zero fragment id, or a second start for an object
    /// still being reassembled.
    #[error("unexpected start fragment {object_id}/{fragment_id}")]
    UnexpectedStart {
        /// Object id.
        object_id: u64,
        /// Fragment id.
        fragment_id: u64,
    },
    /// Fragment ids of one object are not consecutive.
    #[error("object {object_id}: expected fragment {expected}, got {got}")]
    FragmentIdGap {
        /// Object id.
        object_id: u64,
        /// The fragment id that should have come next.
        expected: u64,
        /// The fragment id that came.
        got: u64,
    },
    /// The reassembled message would exceed [`DefragmenterLimits::max_message_size`].
    #[error("object {object_id} exceeds the {limit}-byte message limit")]
    MessageTooLarge {
        /// Object id.
        object_id: u64,
        /// The limit in force.
        limit: usize,
    },
    /// More objects are partially reassembled than
    /// [`DefragmenterLimits::max_partial_objects`].
    #[error("more than {limit} messages are partially reassembled")]
    TooManyPartialObjects {
        /// The limit in force.
        limit: usize,
    },
    /// The partially reassembled messages together would exceed
    /// [`DefragmenterLimits::max_pending_bytes`].
    #[error("partially reassembled messages exceed {limit} bytes")]
    TooMuchPending {
        /// The limit in force.
        limit: usize,
    },
}

impl Fragment {
    /// Size of this fragment on the wire, header included.
    pub fn encoded_len(&self) -> usize {
        FRAGMENT_HEADER_LEN + self.data.len()
    }

    /// Appends the wire form of this fragment to `out`.
    ///
    /// The length field is 32 bits; [`Fragmenter`] never builds larger fragments.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut flags = 0u8;
        if self.start {
            flags |= FLAG_START;
        }
        if self.end {
            flags |= FLAG_END;
        }
        let len = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        out.reserve(self.encoded_len());
        out.extend_from_slice(&self.object_id.to_be_bytes());
        out.extend_from_slice(&self.fragment_id.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.data[..len as usize]);
    }

    /// The wire form of this fragment.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }
}

/// Concatenates the wire forms of `fragments` (the payload of one `rsp:Stream` etc.).
pub fn encode_fragments(fragments: &[Fragment]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fragments.iter().map(Fragment::encoded_len).sum());
    for fragment in fragments {
        fragment.encode_into(&mut out);
    }
    out
}

/// Groups fragments, in order, into blobs of at most `max_blob_size` bytes each (one blob
/// per `rsp:Stream`, `creationXml` or `rsp:Arguments`), the way pypsrp packs
/// SESSION_CAPABILITY and INIT_RUNSPACEPOOL into one `creationXml`
/// (`R:test_psrp_open_runspace`). A fragment larger than the maximum gets a blob of its own.
pub fn pack_fragments(fragments: &[Fragment], max_blob_size: usize) -> Vec<Vec<u8>> {
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for fragment in fragments {
        if !current.is_empty() && current.len() + fragment.encoded_len() > max_blob_size {
            blobs.push(std::mem::take(&mut current));
        }
        fragment.encode_into(&mut current);
    }
    if !current.is_empty() {
        blobs.push(current);
    }
    blobs
}

/// Splits a blob of concatenated fragments into its fragments. Checks each header on its
/// own; ordering across fragments is the [`Defragmenter`]'s job.
pub fn decode_fragments(blob: &[u8]) -> Result<Vec<Fragment>, FragmentError> {
    let mut fragments = Vec::new();
    let mut rest = blob;
    while !rest.is_empty() {
        let offset = blob.len() - rest.len();
        let (fragment, tail) = decode_one(rest, offset)?;
        fragments.push(fragment);
        rest = tail;
    }
    Ok(fragments)
}

/// The largest fragment, header included, that fits in one envelope of
/// `max_envelope_size` bytes, computed the way pypsrp does (`_calc_envelope_size`): take
/// away the size of an empty Send envelope (`envelope_overhead`, measured by the WS-Man
/// layer for the real endpoint and ids) and [`ENVELOPE_PADDING`], then convert the base64
/// budget to raw bytes (3 bytes per 4 characters, rounded down).
///
/// R:test_psrp_small_msg_size: MaxEnvelopeSize 32768 with a ~1410-byte skeleton gave
/// 23326-byte fragments.
pub fn max_fragment_size(max_envelope_size: usize, envelope_overhead: usize) -> usize {
    let budget =
        max_envelope_size.saturating_sub(envelope_overhead.saturating_add(ENVELOPE_PADDING));
    budget / 4 * 3 + (budget % 4) * 3 / 4
}

/// Splits messages into fragments, numbering objects per sender (MS-PSRP 2.2.4: object ids
/// start at 1 and increase by one per message; client and server count independently).
#[derive(Debug, Clone)]
pub struct Fragmenter {
    next_object_id: u64,
}

impl Default for Fragmenter {
    fn default() -> Self {
        Self::new()
    }
}

impl Fragmenter {
    /// A fragmenter whose first message gets object id 1.
    pub fn new() -> Self {
        Self { next_object_id: 1 }
    }

    /// A fragmenter whose next message gets `object_id` (to resume a sender's counter, for
    /// example after reconnecting).
    pub fn starting_at(object_id: u64) -> Self {
        Self {
            next_object_id: object_id,
        }
    }

    /// The object id the next message will get.
    pub fn next_object_id(&self) -> u64 {
        self.next_object_id
    }

    /// Encodes a message and splits it (see [`Self::fragment`]).
    pub fn fragment_message(
        &mut self,
        message: &super::message::Message,
        max_fragment_size: usize,
    ) -> Vec<Fragment> {
        self.fragment(&message.encode(), max_fragment_size)
    }

    /// Splits one encoded message into fragments of at most `max_fragment_size` bytes each,
    /// header included. An empty message still yields one fragment. A maximum too small to
    /// carry any data is raised to 22 bytes (one data byte per fragment).
    pub fn fragment(&mut self, message: &[u8], max_fragment_size: usize) -> Vec<Fragment> {
        let object_id = self.next_object_id;
        self.next_object_id = self.next_object_id.wrapping_add(1);
        // Keep every blob within the 32-bit length field.
        let max_blob = max_fragment_size
            .saturating_sub(FRAGMENT_HEADER_LEN)
            .clamp(1, u32::MAX as usize);
        if message.is_empty() {
            return vec![Fragment {
                object_id,
                fragment_id: 0,
                start: true,
                end: true,
                data: Vec::new(),
            }];
        }
        let count = message.len().div_ceil(max_blob);
        message
            .chunks(max_blob)
            .enumerate()
            .map(|(i, chunk)| Fragment {
                object_id,
                fragment_id: i as u64,
                start: i == 0,
                end: i + 1 == count,
                data: chunk.to_vec(),
            })
            .collect()
    }
}

/// Bounds on reassembly of untrusted fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefragmenterLimits {
    /// Largest message (header and data) accepted.
    pub max_message_size: usize,
    /// Most messages that may be partially reassembled at once.
    pub max_partial_objects: usize,
    /// Most bytes held by partially reassembled messages, all together: with the two
    /// limits above alone, a hostile sender could make a reader hold their product.
    pub max_pending_bytes: usize,
}

impl Default for DefragmenterLimits {
    /// 64 MiB per message and 64 partial messages: far above real traffic (the largest
    /// recorded message, a GET_COMMAND_METADATA reply, is a few hundred KiB).
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024 * 1024,
            max_partial_objects: 64,
            max_pending_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Reassembles messages from fragments arriving in any number of blobs, streams and
/// responses, with fragments of different objects interleaved.
///
/// Use one per sender (for a client: one for everything the server sends on a shell;
/// object ids are unique per sender across the pool and its pipelines
/// (`R:test_psrp_small_msg_size`)). After an error the state of the failing object is
/// dropped; the session should be treated as broken.
#[derive(Debug, Clone, Default)]
pub struct Defragmenter {
    limits: DefragmenterLimits,
    partial: BTreeMap<u64, Partial>,
    /// Bytes held in `partial`, all objects together.
    pending_bytes: usize,
}

#[derive(Debug, Clone)]
struct Partial {
    next_fragment_id: u64,
    data: Vec<u8>,
}

impl Defragmenter {
    /// A defragmenter with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A defragmenter with the given limits.
    pub fn with_limits(limits: DefragmenterLimits) -> Self {
        Self {
            limits,
            partial: BTreeMap::new(),
            pending_bytes: 0,
        }
    }

    /// Number of messages started but not yet complete.
    pub fn pending_objects(&self) -> usize {
        self.partial.len()
    }

    /// Feeds one blob of concatenated fragments; returns the messages it completed, in
    /// the order their end fragments appeared.
    pub fn push_blob(&mut self, blob: &[u8]) -> Result<Vec<Vec<u8>>, FragmentError> {
        let mut done = Vec::new();
        let mut rest = blob;
        while !rest.is_empty() {
            let offset = blob.len() - rest.len();
            let (fragment, tail) = decode_one(rest, offset)?;
            rest = tail;
            if let Some(message) = self.push_fragment(fragment)? {
                done.push(message);
            }
        }
        Ok(done)
    }

    /// Feeds one fragment; returns the message when this fragment completes it.
    pub fn push_fragment(&mut self, fragment: Fragment) -> Result<Option<Vec<u8>>, FragmentError> {
        let Fragment {
            object_id,
            fragment_id,
            start,
            end,
            data,
        } = fragment;
        if start {
            if fragment_id != 0 || self.partial.contains_key(&object_id) {
                self.drop_partial(object_id);
                return Err(FragmentError::UnexpectedStart {
                    object_id,
                    fragment_id,
                });
            }
            if data.len() > self.limits.max_message_size {
                return Err(FragmentError::MessageTooLarge {
                    object_id,
                    limit: self.limits.max_message_size,
                });
            }
            if end {
                return Ok(Some(data));
            }
            if self.partial.len() >= self.limits.max_partial_objects {
                return Err(FragmentError::TooManyPartialObjects {
                    limit: self.limits.max_partial_objects,
                });
            }
            if self.pending_bytes.saturating_add(data.len()) > self.limits.max_pending_bytes {
                return Err(FragmentError::TooMuchPending {
                    limit: self.limits.max_pending_bytes,
                });
            }
            self.pending_bytes += data.len();
            self.partial.insert(
                object_id,
                Partial {
                    next_fragment_id: 1,
                    data,
                },
            );
            return Ok(None);
        }
        let Some(partial) = self.partial.get_mut(&object_id) else {
            return Err(FragmentError::MissingStart {
                object_id,
                fragment_id,
            });
        };
        if fragment_id != partial.next_fragment_id {
            let expected = partial.next_fragment_id;
            self.drop_partial(object_id);
            return Err(FragmentError::FragmentIdGap {
                object_id,
                expected,
                got: fragment_id,
            });
        }
        if partial.data.len().saturating_add(data.len()) > self.limits.max_message_size {
            self.drop_partial(object_id);
            return Err(FragmentError::MessageTooLarge {
                object_id,
                limit: self.limits.max_message_size,
            });
        }
        if self.pending_bytes.saturating_add(data.len()) > self.limits.max_pending_bytes {
            self.drop_partial(object_id);
            return Err(FragmentError::TooMuchPending {
                limit: self.limits.max_pending_bytes,
            });
        }
        partial.data.extend_from_slice(&data);
        partial.next_fragment_id = partial.next_fragment_id.wrapping_add(1);
        self.pending_bytes += data.len();
        if end {
            return Ok(self.drop_partial(object_id).map(|p| p.data));
        }
        Ok(None)
    }

    /// Removes a partial message and its bytes from the pending count.
    fn drop_partial(&mut self, object_id: u64) -> Option<Partial> {
        let partial = self.partial.remove(&object_id)?;
        self.pending_bytes = self.pending_bytes.saturating_sub(partial.data.len());
        Some(partial)
    }
}

fn decode_one(input: &[u8], offset: usize) -> Result<(Fragment, &[u8]), FragmentError> {
    let Some((header, rest)) = input.split_first_chunk::<FRAGMENT_HEADER_LEN>() else {
        return Err(FragmentError::TruncatedHeader {
            offset,
            available: input.len(),
        });
    };
    let object_id = u64::from_be_bytes(array_at(header, 0));
    let fragment_id = u64::from_be_bytes(array_at(header, 8));
    let [flags] = array_at(header, 16);
    let declared = u32::from_be_bytes(array_at(header, 17));
    if flags & !(FLAG_START | FLAG_END) != 0 {
        return Err(FragmentError::ReservedFlags {
            object_id,
            fragment_id,
            flags,
        });
    }
    let Some((data, tail)) = rest.split_at_checked(declared as usize) else {
        return Err(FragmentError::LengthBeyondBlob {
            object_id,
            fragment_id,
            declared,
            available: rest.len(),
        });
    };
    Ok((
        Fragment {
            object_id,
            fragment_id,
            start: flags & FLAG_START != 0,
            end: flags & FLAG_END != 0,
            data: data.to_vec(),
        },
        tail,
    ))
}

/// Copies `N` bytes starting at `at` (zeros where `bytes` is too short; callers pass the
/// fixed 21-byte header, so that never happens).
fn array_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(object_id: u64, fragment_id: u64, start: bool, end: bool, data: &[u8]) -> Fragment {
        Fragment {
            object_id,
            fragment_id,
            start,
            end,
            data: data.to_vec(),
        }
    }

    #[test]
    fn header_layout_matches_recorded_creation_xml() {
        // R:test_psrp_open_runspace: creationXml starts AAAAAAAAAAEAAAAAAAAAAAMAAADH, i.e.
        // object 1, fragment 0, start+end, 199 bytes.
        let f = frag(1, 0, true, true, &[0xAA; 199]);
        let bytes = f.encode();
        assert_eq!(
            &bytes[..21],
            &[
                0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0xC7
            ]
        );
        assert_eq!(decode_fragments(&bytes).unwrap(), vec![f]);
    }

    #[test]
    fn splits_at_exact_boundaries() {
        let max = 21 + 10;
        let mut fragmenter = Fragmenter::new();
        let exact = fragmenter.fragment(&[7u8; 10], max);
        assert_eq!(exact, vec![frag(1, 0, true, true, &[7; 10])]);
        let over = fragmenter.fragment(&[8u8; 11], max);
        assert_eq!(
            over,
            vec![
                frag(2, 0, true, false, &[8; 10]),
                frag(2, 1, false, true, &[8])
            ]
        );
        let three = fragmenter.fragment(&[9u8; 30], max);
        assert_eq!(three.len(), 3);
        assert!(
            three
                .iter()
                .all(|f| f.encoded_len() <= max && f.object_id == 3)
        );
        assert_eq!(
            three.iter().map(|f| (f.start, f.end)).collect::<Vec<_>>(),
            vec![(true, false), (false, false), (false, true)]
        );
        let empty = fragmenter.fragment(&[], max);
        assert_eq!(empty, vec![frag(4, 0, true, true, &[])]);
        // A maximum that leaves no room for data still makes progress, one byte at a time.
        let tiny = fragmenter.fragment(b"ab", 5);
        assert_eq!(tiny.len(), 2);
        assert_eq!(fragmenter.next_object_id(), 6);
    }

    #[test]
    fn reassembles_interleaved_objects_across_blobs() {
        let mut fragmenter = Fragmenter::starting_at(5);
        let a: Vec<u8> = (0..100).collect();
        let b: Vec<u8> = (100..160).collect();
        let fa = fragmenter.fragment(&a, 21 + 40);
        let fb = fragmenter.fragment(&b, 21 + 25);
        assert_eq!((fa.len(), fb.len()), (3, 3));
        // Blob 1: a0 b0; blob 2: b1 a1 a2; blob 3: b2.
        let blob1 = encode_fragments(&[fa[0].clone(), fb[0].clone()]);
        let blob2 = encode_fragments(&[fb[1].clone(), fa[1].clone(), fa[2].clone()]);
        let blob3 = encode_fragments(&[fb[2].clone()]);
        let mut d = Defragmenter::new();
        assert!(d.push_blob(&blob1).unwrap().is_empty());
        assert_eq!(d.pending_objects(), 2);
        assert_eq!(d.push_blob(&blob2).unwrap(), vec![a]);
        assert_eq!(d.push_blob(&blob3).unwrap(), vec![b]);
        assert_eq!(d.pending_objects(), 0);
    }

    #[test]
    fn rejects_malformed_sequences() {
        let mut d = Defragmenter::new();
        assert_eq!(
            d.push_fragment(frag(1, 1, false, true, b"x")),
            Err(FragmentError::MissingStart {
                object_id: 1,
                fragment_id: 1
            })
        );
        assert_eq!(d.push_fragment(frag(1, 0, true, false, b"x")), Ok(None));
        assert_eq!(
            d.push_fragment(frag(1, 2, false, true, b"x")),
            Err(FragmentError::FragmentIdGap {
                object_id: 1,
                expected: 1,
                got: 2
            })
        );
        assert_eq!(d.pending_objects(), 0);
        assert_eq!(d.push_fragment(frag(2, 0, true, false, b"x")), Ok(None));
        assert_eq!(
            d.push_fragment(frag(2, 0, true, false, b"y")),
            Err(FragmentError::UnexpectedStart {
                object_id: 2,
                fragment_id: 0
            })
        );
        assert_eq!(
            d.push_fragment(frag(3, 4, true, true, b"z")),
            Err(FragmentError::UnexpectedStart {
                object_id: 3,
                fragment_id: 4
            })
        );
    }

    #[test]
    fn rejects_bad_headers() {
        let mut bytes = frag(1, 0, true, true, b"abc").encode();
        assert_eq!(
            decode_fragments(&bytes[..20]),
            Err(FragmentError::TruncatedHeader {
                offset: 0,
                available: 20
            })
        );
        bytes.pop();
        assert_eq!(
            decode_fragments(&bytes),
            Err(FragmentError::LengthBeyondBlob {
                object_id: 1,
                fragment_id: 0,
                declared: 3,
                available: 2
            })
        );
        let mut flagged = frag(1, 0, true, true, b"").encode();
        flagged[16] = 0x07;
        assert!(matches!(
            decode_fragments(&flagged),
            Err(FragmentError::ReservedFlags { flags: 0x07, .. })
        ));
        // A huge declared length is refused, not allocated.
        let mut huge = frag(1, 0, true, true, b"").encode();
        huge[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Defragmenter::new().push_blob(&huge),
            Err(FragmentError::LengthBeyondBlob { .. })
        ));
    }

    #[test]
    fn enforces_limits() {
        let limits = DefragmenterLimits {
            max_message_size: 8,
            max_partial_objects: 2,
            max_pending_bytes: 1024,
        };
        let mut d = Defragmenter::with_limits(limits);
        assert_eq!(d.push_fragment(frag(1, 0, true, false, b"12345")), Ok(None));
        assert_eq!(
            d.push_fragment(frag(1, 1, false, true, b"6789")),
            Err(FragmentError::MessageTooLarge {
                object_id: 1,
                limit: 8
            })
        );
        assert_eq!(d.push_fragment(frag(2, 0, true, false, b"a")), Ok(None));
        assert_eq!(d.push_fragment(frag(3, 0, true, false, b"b")), Ok(None));
        assert_eq!(
            d.push_fragment(frag(4, 0, true, false, b"c")),
            Err(FragmentError::TooManyPartialObjects { limit: 2 })
        );
        // Complete single-fragment messages need no slot.
        assert_eq!(
            d.push_fragment(frag(5, 0, true, true, b"d")),
            Ok(Some(b"d".to_vec()))
        );
    }

    #[test]
    fn bounds_the_bytes_of_all_partial_messages_together() {
        let limits = DefragmenterLimits {
            max_message_size: 8,
            max_partial_objects: 10,
            max_pending_bytes: 10,
        };
        let mut d = Defragmenter::with_limits(limits);
        assert_eq!(d.push_fragment(frag(1, 0, true, false, b"12345")), Ok(None));
        assert_eq!(d.push_fragment(frag(2, 0, true, false, b"abcd")), Ok(None));
        // Each object is within its 8 bytes, but together they would hold 11.
        assert_eq!(
            d.push_fragment(frag(2, 1, false, false, b"ef")),
            Err(FragmentError::TooMuchPending { limit: 10 })
        );
        assert_eq!(d.pending_objects(), 1);
        assert_eq!(
            d.push_fragment(frag(3, 0, true, false, b"xxxxxx")),
            Err(FragmentError::TooMuchPending { limit: 10 })
        );
        // Completing a message frees its bytes.
        assert_eq!(
            d.push_fragment(frag(1, 1, false, true, b"6")),
            Ok(Some(b"123456".to_vec()))
        );
        assert_eq!(
            d.push_fragment(frag(3, 0, true, false, b"xxxxxx")),
            Ok(None)
        );
    }

    #[test]
    fn packs_fragments_into_blobs() {
        let mut fragmenter = Fragmenter::new();
        let mut fragments = fragmenter.fragment(&[1u8; 30], 1000);
        fragments.extend(fragmenter.fragment(&[2u8; 30], 1000));
        fragments.extend(fragmenter.fragment(&[3u8; 100], 60));
        assert_eq!(fragments.len(), 5);
        let blobs = pack_fragments(&fragments, 110);
        assert_eq!(
            blobs.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![102, 60, 103]
        );
        let mut d = Defragmenter::new();
        let messages: Vec<Vec<u8>> = blobs.iter().flat_map(|b| d.push_blob(b).unwrap()).collect();
        assert_eq!(messages, vec![vec![1u8; 30], vec![2u8; 30], vec![3u8; 100]]);
    }

    #[test]
    fn envelope_budget_matches_pypsrp() {
        // R:test_psrp_small_msg_size: MaxEnvelopeSize 32768 -> 23326-byte fragments
        // (23305 data bytes) with pypsrp's ~1410-byte Send skeleton for that endpoint.
        assert_eq!(max_fragment_size(32768, 1410), 23326);
        // (153600 - 1410 - 256) * 3 / 4, rounded down.
        assert_eq!(max_fragment_size(153_600, 1410), 113_950);
        assert_eq!(max_fragment_size(1000, 2000), 0);
    }
}
