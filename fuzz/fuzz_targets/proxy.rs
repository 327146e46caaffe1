//! `cargo fuzz run proxy`: see fuzz/README.md and [`erebus_fuzz::proxy`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::proxy::run(data));
