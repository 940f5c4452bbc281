//! Kerberos ticket caches and the in-process AS of `kerberos-cache` credentials
//! (psfleet_cli::fuzzing::ticket_cache).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| psfleet_cli::fuzzing::ticket_cache(data));
