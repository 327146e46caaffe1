//! The OpenVPN client protocol, sans-IO.

#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod data;
pub mod keys;
pub mod p2p;
pub mod packet;
pub mod replay;
pub mod server;
pub mod setup;
pub mod tls;
pub mod tls_session;

pub use data::DataChannel;
pub use keys::StaticKey;
pub use p2p::{P2pConfig, P2pMode, P2pSession, StaticKeyMode};
pub use tls_session::{TlsConfig, TlsSession};
