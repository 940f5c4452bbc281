//! psfleet's one integration-test binary (one link step for every integration test).
//!
//! Modules by area:
//! - `conformance`: the protocol core against recorded Windows traffic.
//! - `fuzz_replay`: the committed fuzz corpus and crash regressions, replayed on stable.
//! - `inventories`: the example inventories, PyYAML's reading of the YAML one, malformed inputs.
//! - `psrpcore_xcheck`: the PSRP codec against psrpcore, in both directions.
//! - `transport`: the engine's NTLM/Negotiate HTTP transport against pyspnego and sspi.

mod conformance;
mod fuzz_replay;
mod inventories;
mod psrpcore_xcheck;
mod transport;
