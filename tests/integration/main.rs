//! psfleet's one integration-test binary (one link step for every integration test).
//!
//! Modules by area:
//! - `conformance`: the protocol core against recorded Windows traffic.

mod conformance;
