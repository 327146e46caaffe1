//! IPsec for erebus: an IKEv2 initiator (RFC 7296) and ESP tunnel-mode SAs (RFC 4303) carried
//! in UDP (RFC 3948), as a sans-IO [`Tunnel`](erebus_sansio::Tunnel), configured from a
//! strongSwan `swanctl.conf`.

#![forbid(unsafe_code)]

pub mod cert;
pub mod config;
pub mod crypto;
pub mod eap;
pub mod esp;
pub mod ike;
pub mod mschapv2;
pub mod proposal;
pub mod session;
pub mod swanctl;
pub mod wire;

pub use session::{IpsecSession, SessionConfig, SessionStats};
