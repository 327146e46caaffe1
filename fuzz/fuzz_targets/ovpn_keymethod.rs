//! `cargo fuzz run ovpn_keymethod`: see fuzz/README.md and [`erebus_fuzz::ovpn_keymethod`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::ovpn_keymethod::run(data));
