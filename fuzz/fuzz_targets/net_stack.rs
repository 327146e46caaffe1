//! `cargo fuzz run net_stack`: see fuzz/README.md and [`erebus_fuzz::net_stack`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::net_stack::run(data));
