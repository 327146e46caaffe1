//! Packet formats as zero-copy views and emitters.
//!
//! Each format has a view over borrowed bytes whose constructor checks the length, so no
//! accessor can panic afterwards, and a representation that parses from a view and emits into
//! a caller's buffer. Bad bytes give an [`Error`], never a panic.
//!
//! Building a UDP datagram over IPv4 in one buffer, then reading it back:
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use erebus_wire::ipv4::{Ipv4Packet, Ipv4Repr};
//! use erebus_wire::udp::{UdpPacket, UdpRepr};
//! use erebus_wire::IpProtocol;
//!
//! let (src, dst) = (Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 1));
//! let udp = UdpRepr { src_port: 40000, dst_port: 53 };
//! let ip = Ipv4Repr {
//!     src_addr: src,
//!     dst_addr: dst,
//!     protocol: IpProtocol::Udp,
//!     payload_len: udp.buffer_len(5),
//!     ttl: 64,
//! };
//! let mut buf = vec![0; ip.buffer_len()];
//! let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
//! ip.emit(&mut packet);
//! let mut datagram = UdpPacket::new_unchecked(packet.payload_mut());
//! udp.emit(&mut datagram, src.into(), dst.into(), 5, |payload| {
//!     payload.copy_from_slice(b"hello")
//! });
//!
//! let packet = Ipv4Packet::new_checked(&buf[..])?;
//! let ip = Ipv4Repr::parse(&packet)?;
//! let datagram = UdpPacket::new_checked(packet.payload())?;
//! let udp = UdpRepr::parse(&datagram, IpAddr::V4(ip.src_addr), IpAddr::V4(ip.dst_addr))?;
//! assert_eq!((udp.dst_port, datagram.payload()), (53, &b"hello"[..]));
//! # Ok::<(), erebus_wire::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod checksum;
pub mod dns;
pub mod icmp;
mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use ip::{IpProtocol, IpVersion, ip_version};

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
