//! `cargo fuzz run server_conf`: see fuzz/README.md and [`erebus_fuzz::server_conf`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::server_conf::run(data));
