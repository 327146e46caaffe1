//! `cargo fuzz run ovpn_client_session`: see fuzz/README.md and [`erebus_fuzz::ovpn_client_session`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::ovpn_client_session::run(data));
