//! erebus drivers: the only place where erebus touches the operating system.
//!
//! A driver supplies what the sans-IO core must not take for itself: sockets, a clock and a
//! random seed. It never looks at protocol state; it translates I/O and nothing else.

#![forbid(unsafe_code)]

pub mod clock;

pub use clock::{Clock, os_seed};
