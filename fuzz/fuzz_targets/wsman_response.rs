//! WS-Man response and fault parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| psfleet_core::fuzzing::wsman_response(data));
