//! The OpenVPN client protocol, sans-IO.

#![forbid(unsafe_code)]

pub mod config;
pub mod data;
pub mod keys;
pub mod p2p;
pub mod packet;
pub mod replay;
