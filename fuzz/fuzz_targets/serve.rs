//! `cargo fuzz run serve`: see fuzz/README.md and [`erebus_fuzz::serve`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::serve::run(data));
