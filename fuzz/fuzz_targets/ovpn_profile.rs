//! `cargo fuzz run ovpn_profile`: see fuzz/README.md and [`erebus_fuzz::ovpn_profile`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::ovpn_profile::run(data));
