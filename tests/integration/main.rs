//! psfleet's one integration-test binary (one link step for every integration test).
//!
//! Modules by area:
//! - `auth_matrix`: every authentication method through the engine's `HostClient` against
//!   simulated hosts (and a real MIT KDC), successes and typed failures.
//! - `bad_input`: the `psfleet` binary against bad input: malformed inventories (nothing
//!   written to the state directory), conflicting options, an unusable state directory and
//!   full disks while writing reports and output, each with its exit code.
//! - `cli`: the `psfleet` binary: help, usage errors, the refused --password, configuration
//!   precedence, PSFLEET_* variables, completions.
//! - `client_ops`: the engine's operations (cmd, PowerShell, cancel, auth, typed errors) against
//!   simulated hosts.
//! - `conformance`: the protocol core against recorded Windows traffic.
//! - `crash`: five SIGKILL and five power-loss cycles of tests/crash/harness.py (the smoke
//!   size of scripts/crash-kill and scripts/crash-powerloss).
//! - `credssp`: CredSSP against the simulator's acceptor and pyspnego's.
//! - `doctor`: `psfleet doctor` steps against every failing class of the mixed fleet.
//! - `kerberos`: Kerberos against a real MIT KDC on 127.0.0.1 (scripts/kdc).
//! - `fleet_run`: the fleet runner (engine::fleet) against simulated fleets: buckets, quotas,
//!   deadlines, stop and resume, sweeps, cleanup.
//! - `hostile`: hostile servers (huge, endless and trickled replies, redirections, garbage TLS,
//!   endless challenges, DTDs, deep XML and CLIXML, invalid UTF-8, wrong RelatesTo) against the
//!   client: bucket, deadline, memory bound, healthy hosts unaffected.
//! - `fuzz_replay`: the committed fuzz corpus and crash regressions, replayed on stable.
//! - `inventories`: the example and simulator inventories, Python cross-checks (PyYAML, shlex,
//!   literal_eval, fnmatch), malformed inputs with file:line errors.
//! - `psrpcore_xcheck`: the PSRP codec against psrpcore, in both directions.
//! - `rate`: the global connection rate limit against the simulator's log of accepted
//!   connections (1,000 hosts at 50/s).
//! - `reports`: CSV, JSON lines and the HTML report (in headless Chromium).
//! - `secrets`: the password of a run in no argument, log, state file, report or output.
//! - `session`: interactive sessions (`psfleet enter`) driven through in-memory pipes.
//! - `sim_interop`: the simulator's WS-Man service against recorded Windows replies, pypsrp
//!   and pywinrm.
//! - `sim_network`: the simulator's HTTP(S) layer (http.sys behaviour, auth, TLS, failures).
//! - `state`: the run journal and sled cache under SIGKILL, resume, cache rebuild.
//! - `transport`: the engine's NTLM/Negotiate HTTP transport against pyspnego and sspi.

mod auth_matrix;
mod bad_input;
mod cli;
mod client_ops;
mod conformance;
mod crash;
mod credssp;
mod doctor;
mod fleet_run;
mod fuzz_replay;
mod hostile;
mod inventories;
mod kerberos;
mod psrpcore_xcheck;
mod rate;
mod reports;
mod secrets;
mod session;
mod sim_interop;
mod sim_network;
mod state;
mod transport;
