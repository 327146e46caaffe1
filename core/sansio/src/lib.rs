//! The sans-IO contract of erebus.
//!
//! Every protocol in erebus (the OpenVPN control and data channels, the IPsec SAs, IKEv2 and
//! the user-space TCP/IP stack) is a pure state machine. It never opens a socket, reads a
//! clock, sleeps, spawns a thread or asks the operating system for randomness. Drivers do
//! those things and hand the results in. This crate holds what every state machine and every
//! driver share:
//!
//! - [`time`]: the [`Instant`] type, built from integers, and wall time ([`UnixTime`]) as a
//!   separate input;
//! - [`rng`]: the [`Seed`] given at construction and the [`SeededRng`] drawn from it, with one
//!   child seed per component;
//! - [`tunnel`]: the [`Tunnel`] trait that OpenVPN and IPsec implement, and the
//!   [`TunnelConfig`] they both produce;
//! - [`io`]: the driver-facing contract, [`Input`], [`Output`] and [`Driven`];
//! - [`journal`]: the recorded inputs of a session, for replay.
//!
//! # The rule: mutate, drain to the deadline, mutate
//!
//! A driver runs a state machine in a loop:
//!
//! 1. **Mutate**: pass exactly one [`Input`] to [`Driven::handle_input`]. Every input carries
//!    `now`, the driver's monotonic clock read when the input happened.
//! 2. **Drain**: call [`Driven::poll_output`] repeatedly and act on each [`Output`] (send a
//!    datagram, write to a local connection, report an event) until it returns
//!    [`Output::Timeout`]. That output is always last, and carries the next deadline.
//! 3. **Wait** for a socket to become ready or the deadline to pass, and go back to 1; when
//!    only the deadline passed, the input is [`Input::Timeout`].
//!
//! Never apply a second mutation before the drain reached `Timeout`: outputs produced by the
//! first would be interleaved with the second's, and a recorded session would no longer
//! replay. Decide whether the deadline passed by comparing the clock with it, not by whether a
//! timer fired.
//!
//! # Determinism
//!
//! Given the same seed, configuration and sequence of inputs (with their `now`), a state
//! machine produces the same outputs, byte for byte. This is what lets a session recorded by a
//! driver be replayed in a test. Core code therefore iterates no hash maps in an order that
//! matters, and takes all randomness from a [`SeededRng`].
//!
//! # Errors
//!
//! A bad packet from the network is a counted drop ([`DropReason`]) that changes no state. A
//! failed session is an event carrying a [`Failure`] whose [`Fault`] says who is to blame.
//!
//! [`Instant`]: time::Instant
//! [`UnixTime`]: time::UnixTime
//! [`Seed`]: rng::Seed
//! [`SeededRng`]: rng::SeededRng
//! [`Tunnel`]: tunnel::Tunnel
//! [`TunnelConfig`]: tunnel::TunnelConfig
//! [`Input`]: io::Input
//! [`Output`]: io::Output
//! [`Driven`]: io::Driven
//! [`Driven::handle_input`]: io::Driven::handle_input
//! [`Driven::poll_output`]: io::Driven::poll_output
//! [`Output::Timeout`]: io::Output::Timeout
//! [`Input::Timeout`]: io::Input::Timeout
//! [`DropReason`]: tunnel::DropReason
//! [`Failure`]: tunnel::Failure
//! [`Fault`]: tunnel::Fault

#![forbid(unsafe_code)]

pub mod io;
pub mod journal;
pub mod rng;
pub mod serve;
pub mod time;
pub mod tunnel;

pub use io::{Driven, Input, Output};
pub use rng::{Seed, SeededRng};
pub use serve::{ServeDriven, ServeInput, ServeOutput};
pub use time::{Instant, UnixTime, WallClock};
pub use tunnel::{Tunnel, TunnelConfig};
