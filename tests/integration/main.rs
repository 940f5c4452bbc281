//! psfleet's one integration-test binary (one link step for every integration test).
//!
//! Modules by area:
//! - `conformance`: the protocol core against recorded Windows traffic.
//! - `fuzz_replay`: the committed fuzz corpus and crash regressions, replayed on stable.

mod conformance;
mod fuzz_replay;
