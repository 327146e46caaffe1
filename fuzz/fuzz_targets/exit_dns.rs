//! `cargo fuzz run exit_dns`: see fuzz/README.md and [`erebus_fuzz::exit_dns`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::exit_dns::run(data));
