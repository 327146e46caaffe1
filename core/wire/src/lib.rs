//! Packet formats as zero-copy views and emitters.
//!
//! Each format has a view over borrowed bytes whose constructor checks the length, so no
//! accessor can panic afterwards, and a representation that parses from a view and emits into
//! a caller's buffer. Bad bytes give an [`Error`], never a panic.

#![forbid(unsafe_code)]

pub mod checksum;
pub mod dns;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

/// Why bytes could not be parsed as a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the header or the length fields claim.
    #[error("packet truncated")]
    Truncated,
    /// A field holds a value the format does not allow.
    #[error("malformed packet")]
    Malformed,
    /// A checksum did not verify.
    #[error("bad checksum")]
    Checksum,
    /// A well-formed packet of a kind this crate does not handle.
    #[error("unsupported packet")]
    Unsupported,
}

/// The result of parsing.
pub type Result<T> = core::result::Result<T, Error>;
