//! `cargo fuzz run esp_open`: see fuzz/README.md and [`erebus_fuzz::esp_open`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::esp_open::run(data));
