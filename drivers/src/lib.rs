//! erebus drivers: the only place where erebus touches the operating system.
//!
//! A driver supplies what the sans-IO core must not take for itself: sockets, a clock and a
//! random seed. It never looks at protocol state, and names no protocol: it translates I/O and
//! nothing else. What every runtime shares (feeding, draining, recording, following the
//! session) is the [`pump`]; a runtime adds only its sockets. Three drivers run the same
//! [`erebus_sansio::Driven`] machine: [`mio_driver`] (one thread, one poll),
//! [`smol_driver`] (one async task) and [`thread_driver`] (blocking sockets and a thread
//! each: the worked example of porting erebus to another event loop).

#![forbid(unsafe_code)]

pub mod clock;
pub mod connector;
pub mod datagrams;
pub mod demo;
pub mod mio_driver;
pub mod pump;
pub mod record;
pub mod replay;
pub mod serve;
pub mod session;
pub mod smol_driver;
pub mod thread_driver;
pub mod tun;

pub use clock::{Clock, os_seed};
