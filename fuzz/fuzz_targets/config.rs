//! psfleet.toml: parsing and validation, and `config show`'s output read back
//! (psfleet_cli::fuzzing::config).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| psfleet_cli::fuzzing::config(data));
