//! PSRP fragment reassembly.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| psfleet_core::fuzzing::psrp_fragments(data));
