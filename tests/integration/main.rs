//! psfleet's one integration-test binary (one link step for every integration test).
//!
//! Modules by area:
//! - `conformance`: the protocol core against recorded Windows traffic.
//! - `fuzz_replay`: the committed fuzz corpus and crash regressions, replayed on stable.
//! - `psrpcore_xcheck`: the PSRP codec against psrpcore, in both directions.
//! - `sim_network`: the simulator's HTTP(S) layer (http.sys behaviour, auth, TLS, failures).
//! - `transport`: the engine's NTLM/Negotiate HTTP transport against pyspnego and sspi.

mod conformance;
mod fuzz_replay;
mod psrpcore_xcheck;
mod sim_network;
mod transport;
