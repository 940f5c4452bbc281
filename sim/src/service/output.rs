//! Sizing Receive responses to the client's `wsman:MaxEnvelopeSize`, and the queue of PSRP
//! messages a shell or pipeline has for the client.
//!
//! Windows never answers a Receive with an envelope larger than the client's
//! MaxEnvelopeSize: it splits output over several Receives (R:test_psrp_small_msg_size,
//! wire-facts 1.14 and 7). [`ReceiveBudget`] measures the real response skeleton once per
//! Receive and charges each `rsp:Stream` its serialized cost (base64 plus the element).
//! [`Outbox`] releases messages by time and fragments them (MS-PSRP 2.2.4) into the
//! budget: one `rsp:Stream` per message as Windows writes them, a message larger than
//! [`MAX_FRAGMENT`] spans several fragments in the same stream, a message larger than the
//! budget continues in the next Receive.

use std::collections::VecDeque;
use std::time::Duration;

use psfleet_core::psrp::Message;
use psfleet_core::psrp::fragment::{FRAGMENT_HEADER_LEN, Fragment};
use psfleet_core::wsman::{
    CommandState, CommandStateInfo, ReceiveResponse, ReceivedStream, Response, ResponseBody,
};
use uuid::Uuid;

/// The smallest envelope the service sizes responses for: a client asking for less still
/// gets one fragment per response (Windows refuses such clients; none exists in practice).
pub(super) const MIN_ENVELOPE: usize = 4096;

/// Bytes left free in every response for what the skeleton measurement cannot see.
const SAFETY_MARGIN: usize = 64;

/// Largest fragment (header included) the service writes, so that large outputs show as
/// several fragments per stream to the client's reassembly.
pub(super) const MAX_FRAGMENT: usize = 16 * 1024;

/// What is left of one Receive response's MaxEnvelopeSize.
#[derive(Debug, Clone)]
pub(super) struct ReceiveBudget {
    remaining: usize,
    stream_overhead: usize,
}

impl ReceiveBudget {
    /// Measures the skeleton of a ReceiveResponse for `command_id` (with the widest
    /// CommandState and ExitCode) against `max_envelope` bytes.
    pub(super) fn new(max_envelope: usize, command_id: Option<Uuid>) -> Self {
        let skeleton = |streams: Vec<ReceivedStream>| {
            let body = ResponseBody::ReceiveResponse(ReceiveResponse {
                streams,
                command_state: Some(CommandStateInfo {
                    command_id,
                    state: CommandState::Running,
                    exit_code: Some(i64::MIN),
                }),
            });
            Response::reply(Uuid::nil(), Uuid::nil(), body)
                .to_xml()
                .len()
        };
        let empty = skeleton(Vec::new());
        let one = skeleton(vec![ReceivedStream {
            name: "stderr".to_owned(),
            command_id,
            end: true,
            data: Vec::new(),
        }]);
        Self {
            remaining: max_envelope
                .max(MIN_ENVELOPE)
                .saturating_sub(empty + SAFETY_MARGIN),
            stream_overhead: one.saturating_sub(empty),
        }
    }

    /// Raw bytes one more stream can carry (base64 takes 4 characters per 3 bytes).
    pub(super) fn stream_capacity(&self) -> usize {
        self.remaining.saturating_sub(self.stream_overhead) / 4 * 3
    }

    /// Charges a stream holding `raw` bytes.
    pub(super) fn charge(&mut self, raw: usize) {
        self.remaining = self
            .remaining
            .saturating_sub(self.stream_overhead + raw.div_ceil(3) * 4);
    }

    /// Whether `count` more empty streams fit.
    pub(super) fn fits_empty_streams(&self, count: usize) -> bool {
        self.remaining >= self.stream_overhead * count
    }
}

/// PSRP messages waiting for the client, in the order they were produced.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: VecDeque<Outgoing>,
}

#[derive(Debug)]
struct Outgoing {
    ready_at: Duration,
    object_id: u64,
    data: Vec<u8>,
    sent: usize,
    next_fragment: u64,
    terminal: bool,
    /// Starts a new Receive response: not sent together with what came before it.
    own_response: bool,
}

/// What one drain produced.
#[derive(Debug, Default)]
pub(super) struct Drained {
    /// The streams, one per message (or message part).
    pub streams: Vec<ReceivedStream>,
    /// The terminal message (a pipeline's final PIPELINE_STATE) went out completely.
    pub terminal_sent: bool,
}

impl Outbox {
    /// Queues `message`, ready at `ready_at` (never before the message queued before it:
    /// output keeps its order), numbered from the sender's object-id counter.
    pub(super) fn push(
        &mut self,
        ready_at: Duration,
        message: &Message,
        object_ids: &mut u64,
        terminal: bool,
    ) {
        self.push_message(ready_at, message, object_ids, terminal, false);
    }

    /// Like [`Outbox::push`], but the message goes out in a later Receive than the
    /// messages queued before it (Windows sends RUNSPACEPOOL_STATE after the capability
    /// exchange, R:test_psrp_open_runspace).
    pub(super) fn push_in_next_response(
        &mut self,
        ready_at: Duration,
        message: &Message,
        object_ids: &mut u64,
    ) {
        self.push_message(ready_at, message, object_ids, false, true);
    }

    fn push_message(
        &mut self,
        ready_at: Duration,
        message: &Message,
        object_ids: &mut u64,
        terminal: bool,
        own_response: bool,
    ) {
        let ready_at = self
            .queue
            .back()
            .map_or(ready_at, |last| last.ready_at.max(ready_at));
        let object_id = *object_ids;
        *object_ids = object_ids.wrapping_add(1);
        self.queue.push_back(Outgoing {
            ready_at,
            object_id,
            data: message.encode(),
            sent: 0,
            next_fragment: 0,
            terminal,
            own_response,
        });
    }

    /// When the next message becomes ready, if any is queued.
    pub(super) fn next_ready_at(&self) -> Option<Duration> {
        self.queue.front().map(|m| m.ready_at)
    }

    /// Whether anything is ready at `now`.
    pub(super) fn has_ready(&self, now: Duration) -> bool {
        self.next_ready_at().is_some_and(|at| at <= now)
    }

    /// Whether the terminal message is queued and ready at `now` (the pipeline finished).
    pub(super) fn terminal_ready(&self, now: Duration) -> bool {
        self.queue.iter().any(|m| m.terminal && m.ready_at <= now)
    }

    /// Drops every message not yet ready at `now` (a stopped pipeline produces no more).
    pub(super) fn discard_after(&mut self, now: Duration) {
        self.queue.retain(|m| m.ready_at <= now || m.sent > 0);
    }

    /// Fragments ready messages into streams that fit `budget`.
    pub(super) fn drain(
        &mut self,
        now: Duration,
        budget: &mut ReceiveBudget,
        command_id: Option<Uuid>,
    ) -> Drained {
        let mut out = Drained::default();
        while let Some(front) = self.queue.front_mut() {
            if front.ready_at > now || (front.own_response && !out.streams.is_empty()) {
                break;
            }
            let capacity = budget.stream_capacity();
            let mut raw = Vec::new();
            while front.sent < front.data.len() {
                let room = capacity.saturating_sub(raw.len());
                if room <= FRAGMENT_HEADER_LEN {
                    break;
                }
                let chunk = (front.data.len() - front.sent)
                    .min(MAX_FRAGMENT - FRAGMENT_HEADER_LEN)
                    .min(room - FRAGMENT_HEADER_LEN);
                let end = front.sent + chunk;
                Fragment {
                    object_id: front.object_id,
                    fragment_id: front.next_fragment,
                    start: front.sent == 0,
                    end: end == front.data.len(),
                    data: front.data.get(front.sent..end).unwrap_or_default().to_vec(),
                }
                .encode_into(&mut raw);
                front.sent = end;
                front.next_fragment += 1;
            }
            if raw.is_empty() {
                break;
            }
            budget.charge(raw.len());
            out.streams.push(ReceivedStream {
                name: "stdout".to_owned(),
                command_id,
                end: false,
                data: raw,
            });
            if front.sent < front.data.len() {
                break;
            }
            out.terminal_sent |= front.terminal;
            self.queue.pop_front();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use psfleet_core::psrp::fragment::decode_fragments;
    use psfleet_core::psrp::{Defragmenter, Destination, MessageType};

    fn message(len: usize) -> Message {
        Message::new(
            Destination::Client,
            MessageType::PipelineOutput,
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            vec![b'x'; len],
        )
    }

    #[test]
    fn drained_responses_fit_the_envelope_and_reassemble() {
        let command = Some(Uuid::from_u128(2));
        let mut outbox = Outbox::default();
        let mut ids = 1;
        let sizes = [10, 50_000, 300, 70_000];
        for (i, size) in sizes.iter().enumerate() {
            outbox.push(
                Duration::ZERO,
                &message(*size),
                &mut ids,
                i == sizes.len() - 1,
            );
        }
        let mut defrag = Defragmenter::new();
        let mut messages = Vec::new();
        let mut responses = 0;
        let mut max_fragments_per_stream = 0;
        let mut max_streams = 0;
        let mut terminal = false;
        while !terminal {
            responses += 1;
            assert!(responses < 100);
            let mut budget = ReceiveBudget::new(32_768, command);
            let drained = outbox.drain(Duration::ZERO, &mut budget, command);
            terminal = drained.terminal_sent;
            let body = ResponseBody::ReceiveResponse(ReceiveResponse {
                streams: drained.streams.clone(),
                command_state: Some(CommandStateInfo {
                    command_id: command,
                    state: CommandState::Done,
                    exit_code: Some(0),
                }),
            });
            let size = Response::reply(Uuid::nil(), Uuid::nil(), body)
                .to_xml()
                .len();
            assert!(size <= 32_768, "response of {size} bytes");
            max_streams = max_streams.max(drained.streams.len());
            for stream in &drained.streams {
                let fragments = decode_fragments(&stream.data).unwrap();
                max_fragments_per_stream = max_fragments_per_stream.max(fragments.len());
                assert!(fragments.iter().all(|f| f.encoded_len() <= MAX_FRAGMENT));
                messages.extend(defrag.push_blob(&stream.data).unwrap());
            }
        }
        let lengths: Vec<usize> = messages.iter().map(|m| m.len() - 40).collect();
        assert_eq!(lengths, sizes);
        assert!(responses >= 4, "{responses} responses");
        assert!(max_streams >= 2, "several streams per response");
        assert!(
            max_fragments_per_stream >= 2,
            "several fragments per stream"
        );
        assert!(outbox.next_ready_at().is_none());
    }

    #[test]
    fn messages_are_released_by_time_in_order() {
        let mut outbox = Outbox::default();
        let mut ids = 7;
        outbox.push(Duration::from_secs(2), &message(5), &mut ids, false);
        outbox.push(Duration::from_secs(1), &message(6), &mut ids, true);
        assert_eq!(outbox.next_ready_at(), Some(Duration::from_secs(2)));
        let mut budget = ReceiveBudget::new(153_600, None);
        assert!(
            outbox
                .drain(Duration::from_secs(1), &mut budget, None)
                .streams
                .is_empty()
        );
        assert!(outbox.terminal_ready(Duration::from_secs(2)));
        let drained = outbox.drain(Duration::from_secs(2), &mut budget, None);
        assert_eq!(drained.streams.len(), 2);
        assert!(drained.terminal_sent);
        outbox.push(Duration::ZERO, &message(1), &mut ids, false);
        outbox.push_in_next_response(Duration::ZERO, &message(2), &mut ids);
        let mut budget = ReceiveBudget::new(153_600, None);
        assert_eq!(
            outbox
                .drain(Duration::from_secs(3), &mut budget, None)
                .streams
                .len(),
            1
        );
        assert_eq!(
            outbox
                .drain(Duration::from_secs(3), &mut budget, None)
                .streams
                .len(),
            1
        );
        assert!(outbox.next_ready_at().is_none());
        let first = decode_fragments(&drained.streams[0].data).unwrap();
        assert_eq!(
            (first[0].object_id, first[0].start, first[0].end),
            (7, true, true)
        );
    }
}
