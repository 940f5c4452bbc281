//! Plain-text inventory reader, then resolution and --limit patterns.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| psfleet_inventories::fuzzing::inventory_text(data));
