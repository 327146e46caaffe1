//! A user-space TCP/IP stack, sans-IO.
//!
//! It works at the IP level (no Ethernet, no ARP) under a VPN tunnel: inner IP packets in,
//! inner IP packets out, `now` passed in, caller-owned buffers.

#![forbid(unsafe_code)]
