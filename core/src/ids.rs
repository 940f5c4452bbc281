//! Identifiers, supplied by the caller.
//!
//! core never makes random ids: every MessageID, ShellId (= PSRP RunspacePool id) and
//! CommandId (= PSRP pipeline id) comes from an [`IdGenerator`] the caller passes in. The
//! engine uses random v4 ids; tests use [`SequentialIds`] so that output is deterministic.

use uuid::Uuid;

/// A source of fresh GUIDs.
pub trait IdGenerator {
    /// Returns a GUID not returned before.
    fn next_id(&mut self) -> Uuid;
}

/// Deterministic ids `00000000-0000-0000-0000-000000000001`, `...0002`, ... for tests and
/// replay. Starts after `start`.
#[derive(Debug, Clone, Default)]
pub struct SequentialIds {
    last: u128,
}

impl SequentialIds {
    /// Ids counting up from `start + 1`.
    pub fn starting_after(start: u128) -> Self {
        Self { last: start }
    }
}

impl IdGenerator for SequentialIds {
    fn next_id(&mut self) -> Uuid {
        self.last = self.last.wrapping_add(1);
        Uuid::from_u128(self.last)
    }
}

impl<F: FnMut() -> Uuid> IdGenerator for F {
    fn next_id(&mut self) -> Uuid {
        self()
    }
}

/// Formats a GUID the way Windows writes ShellId, CommandId and MessageID values:
/// hyphenated, upper case (MS-WSMV 2.2.4.37; every recorded response uses upper case).
pub fn upper(id: &Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_upper(&mut buf).to_owned()
}

/// Formats a WS-Addressing MessageID: `uuid:` followed by the upper-case GUID.
pub fn message_id(id: &Uuid) -> String {
    format!("uuid:{}", upper(id))
}

/// Parses a GUID written with or without a `uuid:` prefix, in either case.
pub fn parse(text: &str) -> Option<Uuid> {
    let t = text.trim();
    let t = t
        .strip_prefix("uuid:")
        .or_else(|| t.strip_prefix("UUID:"))
        .unwrap_or(t);
    Uuid::parse_str(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_format_like_windows() {
        let mut ids = SequentialIds::default();
        let first = ids.next_id();
        assert_eq!(upper(&first), "00000000-0000-0000-0000-000000000001");
        let id = Uuid::from_u128(0xfc40e3cd_53e9_4315_b486_6d538b25d1f5);
        assert_eq!(message_id(&id), "uuid:FC40E3CD-53E9-4315-B486-6D538B25D1F5");
        assert_eq!(parse("uuid:fc40e3cd-53e9-4315-b486-6d538b25d1f5"), Some(id));
        assert_eq!(parse("not-a-guid"), None);
    }
}
