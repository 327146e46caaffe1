//! `cargo fuzz run ovpn_push`: see fuzz/README.md and [`erebus_fuzz::ovpn_push`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::ovpn_push::run(data));
