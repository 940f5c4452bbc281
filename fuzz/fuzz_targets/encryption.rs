//! multipart/encrypted framing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| psfleet_core::fuzzing::encryption(data));
