//! Fixtures and test harnesses for erebus: recorded sessions, known-answer vectors and the
//! cross-crate checks that keep core sans-IO. Not published.

#![forbid(unsafe_code)]

pub mod guard;
pub mod netns;
pub mod relay;
pub mod serve_netns;
pub mod strongswan;
pub mod tun_netns;
pub mod tun_stack;
