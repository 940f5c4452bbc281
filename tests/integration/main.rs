//! psfleet's one integration-test binary (one link step for every integration test).
//!
//! Modules by area:
//! - `conformance`: the protocol core against recorded Windows traffic.
//! - `transport`: the engine's NTLM/Negotiate HTTP transport against pyspnego and sspi.

mod conformance;
mod transport;
