//! `cargo fuzz run ike_payloads`: see fuzz/README.md and [`erebus_fuzz::ike_payloads`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::ike_payloads::run(data));
