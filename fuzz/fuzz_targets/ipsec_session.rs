//! `cargo fuzz run ipsec_session`: see fuzz/README.md and [`erebus_fuzz::ipsec_session`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::ipsec_session::run(data));
