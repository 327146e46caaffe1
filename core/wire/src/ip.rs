//! What IPv4 and IPv6 share: the protocol numbers of the payload and the version nibble.

use crate::{Error, Result};

/// The protocol carried in an IP payload: the IPv4 `protocol` field or the IPv6 `next header`.
///
/// Numbers this crate parses have their own variant; every other number is kept in
/// [`IpProtocol::Unknown`]. [`From<u8>`] never builds `Unknown` for a number that has a variant,
/// so two values compare equal exactly when their numbers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpProtocol {
    /// ICMP for IPv4 (1).
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP for IPv6 (58).
    Icmpv6,
    /// Any other protocol number.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(number: u8) -> Self {
        match number {
            1 => Self::Icmp,
            6 => Self::Tcp,
            17 => Self::Udp,
            58 => Self::Icmpv6,
            other => Self::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(protocol: IpProtocol) -> Self {
        match protocol {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Unknown(other) => other,
        }
    }
}

/// The IP version of a packet, read from its first nibble.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Tells an IPv4 packet from an IPv6 one, as a tunnel carrying both must before parsing.
///
/// An empty buffer is [`Error::Truncated`]; any version other than 4 or 6 is
/// [`Error::Unsupported`].
pub fn ip_version(packet: &[u8]) -> Result<IpVersion> {
    let first = packet.first().ok_or(Error::Truncated)?;
    match first >> 4 {
        4 => Ok(IpVersion::V4),
        6 => Ok(IpVersion::V6),
        _ => Err(Error::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_protocol_numbers() {
        assert_eq!(IpProtocol::from(1), IpProtocol::Icmp);
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
        assert_eq!(IpProtocol::from(58), IpProtocol::Icmpv6);
        assert_eq!(IpProtocol::from(50), IpProtocol::Unknown(50));
        assert_eq!(u8::from(IpProtocol::Udp), 17);
    }

    #[test]
    fn version_of_real_headers() {
        assert_eq!(ip_version(&[0x45, 0x00]), Ok(IpVersion::V4));
        assert_eq!(ip_version(&[0x60, 0x0d]), Ok(IpVersion::V6));
        assert_eq!(ip_version(&[0x50]), Err(Error::Unsupported));
        assert_eq!(ip_version(&[]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn protocol_number_round_trips(number: u8) {
            prop_assert_eq!(u8::from(IpProtocol::from(number)), number);
        }
    }
}
