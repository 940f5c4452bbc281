//! `core::xml::parse`, and the write_to round trip of what it accepts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| psfleet_core::fuzzing::xml(data));
