//! `cargo fuzz run serve_rules`: see fuzz/README.md and [`erebus_fuzz::serve_rules`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::serve_rules::run(data));
