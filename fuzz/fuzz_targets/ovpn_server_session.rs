//! `cargo fuzz run ovpn_server_session`: see fuzz/README.md and [`erebus_fuzz::ovpn_server_session`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erebus_fuzz::ovpn_server_session::run(data));
