//! `cargo fuzz run net_tcp`: see fuzz/README.md and [`erebus_fuzz::net_tcp`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::net_tcp::run(data));
