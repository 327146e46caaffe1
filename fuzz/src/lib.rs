//! The fuzz harnesses of erebus-ipsec, erebus-openvpn (both roles), erebus-net,
//! erebus-proxy and erebus-server, one module per cargo-fuzz target (`fuzz_targets/`).
//!
//! Each module's `run` takes the fuzzer's bytes and must never panic unless the library does
//! (or breaks an invariant the harness checks). The targets are one-line wrappers, so `cargo
//! test` here replays the corpus through exactly the same code without libFuzzer.

#![forbid(unsafe_code)]

pub mod client_seeds;
pub mod eap;
pub mod esp_open;
pub mod exit_dns;
pub mod ike_payloads;
pub mod ipsec_session;
pub mod net_dns;
pub mod net_stack;
pub mod net_tcp;
pub mod ovpn_client_session;
pub mod ovpn_common;
pub mod ovpn_keymethod;
pub mod ovpn_profile;
pub mod ovpn_push;
pub mod ovpn_seeds;
pub mod ovpn_server_session;
pub mod proxy;
pub mod seeds;
pub mod serve;
pub mod serve_rules;
pub mod server_conf;
pub mod swanctl;

/// The framing several targets use to split one input into many: records of a tag byte, a
/// big-endian `u16` length and that many bytes (fewer for a last record cut short).
#[derive(Clone, Debug)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    /// The records of `bytes`.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Appends one record to `out` (for building seeds).
    pub fn encode(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
        let len = u16::try_from(body.len()).expect("a record body fits 64 KiB");
        out.push(tag);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.rest.split_first()?;
        let len = match rest {
            [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => rest.len(),
        };
        let rest = rest.get(2..).unwrap_or_default();
        let (body, tail) = rest.split_at(len.min(rest.len()));
        self.rest = tail;
        Some((tag, body))
    }
}
