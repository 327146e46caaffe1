//! `cargo fuzz run swanctl`: see fuzz/README.md and [`erebus_fuzz::swanctl`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::swanctl::run(data));
