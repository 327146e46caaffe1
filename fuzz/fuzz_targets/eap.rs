//! `cargo fuzz run eap`: see fuzz/README.md and [`erebus_fuzz::eap`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::eap::run(data));
