//! `cargo fuzz run net_dns`: see fuzz/README.md and [`erebus_fuzz::net_dns`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::net_dns::run(data));
