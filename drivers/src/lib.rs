//! erebus drivers: the only place where erebus touches the operating system.
//!
//! A driver supplies what the sans-IO core must not take for itself: sockets, a clock and a
//! random seed. It never looks at protocol state; it translates I/O and nothing else. Two
//! drivers run the same [`erebus_sansio::Driven`] machine: [`mio_driver`] (one thread, one
//! poll) and [`smol_driver`] (one async task).

#![forbid(unsafe_code)]

pub mod clock;
pub mod connector;
pub mod mio_driver;
pub mod ping;
pub mod profile;
pub mod record;
pub mod replay;
pub mod session;
pub mod smol_driver;
pub mod tun;

pub use clock::{Clock, os_seed};
