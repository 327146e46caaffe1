//! A user-space TCP/IP stack, sans-IO.
//!
//! It works at the IP level (no Ethernet, no ARP) under a VPN tunnel: inner IP packets in,
//! inner IP packets out, `now` passed in, caller-owned buffers.
//!
//! - [`tcp`]: the TCP socket as a pure state machine over parsed segments, with its
//!   congestion controllers and RTT estimator;
//! - [`stack`]: the IP-level [`Stack`] that owns the sockets, demultiplexes inner IPv4
//!   packets to them and writes their segments into the caller's buffers;
//! - [`ring`] and [`assembler`]: the fixed-size buffers it is built on.

#![forbid(unsafe_code)]

pub mod assembler;
pub mod dns;
pub mod ring;
mod schedule;
pub mod stack;
pub mod tcp;

pub use stack::{
    FlowRequest, IngressError, MAX_PENDING_FLOWS, Refusal, SocketHandle, Stack, StackError,
    StackStats, UdpDatagram, UnreachableCode,
};
pub use tcp::{
    ConnectError, ConnectionError, Events, ListenError, RecvError, SendError, State, TcpConfig,
    TcpSocket, TcpStats,
};
