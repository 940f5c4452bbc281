//! Shared helpers for psfleet's integration tests: where the reference material lives, and
//! the recorded Windows traffic loaded into typed records.

pub mod corpus;
pub mod shared;
