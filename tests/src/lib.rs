//! Shared helpers for psfleet's integration tests: where the reference material lives, and
//! the recorded Windows traffic loaded into typed records.

// Test support: failing loudly on broken fixtures is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod canonical;
pub mod corpus;
pub mod fleet;
pub mod kdc;
pub mod shared;
