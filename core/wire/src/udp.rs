//! UDP datagrams (RFC 768), with the checksum over the IPv4 or IPv6 pseudo-header.

use std::net::IpAddr;

use crate::{Error, IpProtocol, Result, checksum};

/// The length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// Byte positions of the header fields.
mod field {
    use core::ops::Range;

    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const CHECKSUM: Range<usize> = 6..8;
}

/// A read/write view of a UDP datagram in a buffer (the IP payload).
///
/// Build it with [`UdpPacket::new_checked`] for untrusted bytes: after that no accessor can
/// panic. [`UdpPacket::new_unchecked`] is for emitting into a buffer of a known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic until [`Self::check_len`]
    /// has passed.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer and checks that the header and the length field fit it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and the whole datagram its length field
    /// announces, and that the length covers at least the header.
    pub fn check_len(&self) -> Result<()> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            Err(Error::Malformed)
        } else if buffer_len < len {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, range: core::ops::Range<usize>) -> u16 {
        let bytes = &self.buffer.as_ref()[range];
        u16::from_be_bytes([bytes[0], bytes[1]])
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT)
    }

    /// The length of header and payload, in bytes.
    pub fn len(&self) -> u16 {
        self.read_u16(field::LENGTH)
    }

    /// Whether the datagram carries no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field; 0 means the sender computed none (allowed over IPv4 only).
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// Whether the checksum over the pseudo-header, header and payload is correct. A zero
    /// checksum field is not treated specially here; see [`UdpRepr::parse`].
    pub fn verify_checksum(&self, src_addr: IpAddr, dst_addr: IpAddr) -> bool {
        let datagram = &self.buffer.as_ref()[..usize::from(self.len())];
        checksum::finish(datagram_sum(src_addr, dst_addr, datagram)) == 0
    }
}

/// The running sum of the pseudo-header and a whole datagram.
fn datagram_sum(src_addr: IpAddr, dst_addr: IpAddr, datagram: &[u8]) -> u32 {
    let len = u32::try_from(datagram.len()).unwrap_or(u32::MAX);
    let sum = checksum::pseudo_header(src_addr, dst_addr, IpProtocol::Udp.into(), len);
    checksum::accumulate(sum, datagram)
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload, up to the length field: bytes past it are not included.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn write_u16(&mut self, range: core::ops::Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.write_u16(field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.write_u16(field::DST_PORT, port);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        self.write_u16(field::LENGTH, len);
    }

    /// Sets the checksum field to a given value; see [`Self::fill_checksum`].
    pub fn set_checksum(&mut self, value: u16) {
        self.write_u16(field::CHECKSUM, value);
    }

    /// Computes the checksum over the pseudo-header, header and payload, and stores it. A
    /// computed 0 is sent as 0xFFFF, because 0 on the wire means "no checksum".
    pub fn fill_checksum(&mut self, src_addr: IpAddr, dst_addr: IpAddr) {
        self.set_checksum(0);
        let datagram = &self.buffer.as_ref()[..usize::from(self.len())];
        let value = checksum::finish(datagram_sum(src_addr, dst_addr, datagram));
        self.set_checksum(if value == 0 { 0xFFFF } else { value });
    }

    /// The payload up to the length field, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A validated UDP header: the ports. The payload stays in the packet
/// ([`UdpPacket::payload`]) and is written in place by [`UdpRepr::emit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// The sender's port.
    pub src_port: u16,
    /// The receiver's port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// The largest payload the length field can describe.
    pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - HEADER_LEN;

    /// Validates a datagram that travelled from `src_addr` to `dst_addr`.
    ///
    /// Checks the lengths again (so a view made with `new_unchecked` is safe too) and the
    /// checksum. A zero checksum means "none" and is accepted over IPv4; IPv6 requires a
    /// checksum, so there it is [`Error::Checksum`]. Destination port 0 is reserved and gives
    /// [`Error::Malformed`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &UdpPacket<&T>,
        src_addr: IpAddr,
        dst_addr: IpAddr,
    ) -> Result<Self> {
        packet.check_len()?;
        if packet.dst_port() == 0 {
            return Err(Error::Malformed);
        }
        let checksum_optional = src_addr.is_ipv4() && dst_addr.is_ipv4();
        let checksum_absent = packet.checksum() == 0 && checksum_optional;
        if !checksum_absent && !packet.verify_checksum(src_addr, dst_addr) {
            return Err(Error::Checksum);
        }
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    /// The length of the header.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of a datagram with `payload_len` bytes of payload.
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        HEADER_LEN + payload_len
    }

    /// Writes a datagram into `packet`: the header, then the payload through `fill_payload`
    /// (which gets exactly `payload_len` bytes to write in place), then the checksum over the
    /// pseudo-header of `src_addr` and `dst_addr` (both of one family).
    ///
    /// The buffer must be at least [`Self::buffer_len`] long, and `payload_len` at most
    /// [`Self::MAX_PAYLOAD_LEN`] (a larger value is clamped to it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
        src_addr: IpAddr,
        dst_addr: IpAddr,
        payload_len: usize,
        fill_payload: impl FnOnce(&mut [u8]),
    ) {
        debug_assert!(payload_len <= Self::MAX_PAYLOAD_LEN);
        debug_assert_eq!(src_addr.is_ipv4(), dst_addr.is_ipv4());
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(u16::try_from(self.buffer_len(payload_len)).unwrap_or(u16::MAX));
        fill_payload(packet.payload_mut());
        packet.fill_checksum(src_addr, dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LOOPBACK_V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const LOOPBACK_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    // Datagrams captured on the loopback interface. The kernel leaves loopback UDP checksums
    // to (virtual) offload, so the capture held a partial sum; the checksum fields below hold
    // the full checksum instead, computed independently of this crate.

    /// "hello" from 127.0.0.1:46942 to 127.0.0.1:9.
    static HELLO_V4: [u8; 13] = [
        0xb7, 0x5e, 0x00, 0x09, 0x00, 0x0d, 0x06, 0x98, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
    ];

    /// "erebus udp" from 127.0.0.1:46942 to 127.0.0.1:57007.
    static EREBUS_V4: [u8; 18] = [
        0xb7, 0x5e, 0xde, 0xaf, 0x00, 0x12, 0xa6, 0x8b, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x20,
        0x75, 0x64, 0x70,
    ];

    /// "erebus v6" from [::1]:49603 to [::1]:34167.
    static EREBUS_V6: [u8; 17] = [
        0xc1, 0xc3, 0x85, 0x77, 0x00, 0x11, 0x21, 0xd1, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x20,
        0x76, 0x36,
    ];

    #[test]
    fn test_deconstruct() {
        let packet = UdpPacket::new_checked(&HELLO_V4[..]).unwrap();
        assert_eq!(packet.src_port(), 46942);
        assert_eq!(packet.dst_port(), 9);
        assert_eq!(packet.len(), 13);
        assert!(!packet.is_empty());
        assert_eq!(packet.checksum(), 0x0698);
        assert_eq!(packet.payload(), b"hello");
        assert!(packet.verify_checksum(LOOPBACK_V4, LOOPBACK_V4));
        assert!(!packet.verify_checksum(LOOPBACK_V4, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));

        let packet = UdpPacket::new_checked(&EREBUS_V6[..]).unwrap();
        assert_eq!(packet.payload(), b"erebus v6");
        assert!(packet.verify_checksum(LOOPBACK_V6, LOOPBACK_V6));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xA5; 13];
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(46942);
        packet.set_dst_port(9);
        packet.set_len(13);
        packet.payload_mut().copy_from_slice(b"hello");
        packet.fill_checksum(LOOPBACK_V4, LOOPBACK_V4);
        assert_eq!(bytes, HELLO_V4);
    }

    #[test]
    fn test_check_len() {
        assert_eq!(
            UdpPacket::new_checked(&HELLO_V4[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            UdpPacket::new_checked(&HELLO_V4[..12]).unwrap_err(),
            Error::Truncated
        );
        let mut short = HELLO_V4;
        short[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&short[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn test_parse() {
        let expected = [
            (&HELLO_V4[..], LOOPBACK_V4, 46942, 9),
            (&EREBUS_V4[..], LOOPBACK_V4, 46942, 57007),
            (&EREBUS_V6[..], LOOPBACK_V6, 49603, 34167),
        ];
        for (bytes, addr, src_port, dst_port) in expected {
            let packet = UdpPacket::new_checked(bytes).unwrap();
            assert_eq!(
                UdpRepr::parse(&packet, addr, addr),
                Ok(UdpRepr { src_port, dst_port })
            );
        }
    }

    #[test]
    fn parse_ignores_bytes_past_the_length() {
        let mut padded = [0u8; 20];
        padded[..13].copy_from_slice(&HELLO_V4);
        let packet = UdpPacket::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload(), b"hello");
        assert!(UdpRepr::parse(&packet, LOOPBACK_V4, LOOPBACK_V4).is_ok());
    }

    #[test]
    fn parse_checks_checksum() {
        let mut corrupt = HELLO_V4;
        corrupt[8] ^= 0x20;
        let packet = UdpPacket::new_checked(&corrupt[..]).unwrap();
        assert_eq!(
            UdpRepr::parse(&packet, LOOPBACK_V4, LOOPBACK_V4),
            Err(Error::Checksum)
        );
        // The right bytes under the wrong addresses fail too.
        let packet = UdpPacket::new_checked(&EREBUS_V6[..]).unwrap();
        let other = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
        assert_eq!(
            UdpRepr::parse(&packet, other, LOOPBACK_V6),
            Err(Error::Checksum)
        );
    }

    #[test]
    fn zero_checksum_means_none_over_ipv4_only() {
        let mut unchecked = HELLO_V4;
        unchecked[6] = 0;
        unchecked[7] = 0;
        unchecked[8] ^= 0x20;
        let packet = UdpPacket::new_checked(&unchecked[..]).unwrap();
        assert_eq!(
            UdpRepr::parse(&packet, LOOPBACK_V4, LOOPBACK_V4),
            Ok(UdpRepr {
                src_port: 46942,
                dst_port: 9
            })
        );
        assert_eq!(
            UdpRepr::parse(&packet, LOOPBACK_V6, LOOPBACK_V6),
            Err(Error::Checksum)
        );
    }

    #[test]
    fn destination_port_zero_is_malformed() {
        let repr = UdpRepr {
            src_port: 1,
            dst_port: 0,
        };
        let mut bytes = [0u8; 8];
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut bytes[..]),
            LOOPBACK_V4,
            LOOPBACK_V4,
            0,
            |_| {},
        );
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(packet.is_empty());
        assert_eq!(
            UdpRepr::parse(&packet, LOOPBACK_V4, LOOPBACK_V4),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn test_emit() {
        let repr = UdpRepr {
            src_port: 49603,
            dst_port: 34167,
        };
        let mut bytes = [0xA5; 17];
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet, LOOPBACK_V6, LOOPBACK_V6, 9, |payload| {
            payload.copy_from_slice(b"erebus v6");
        });
        assert_eq!(bytes, EREBUS_V6);
    }

    #[test]
    fn computed_zero_checksum_is_sent_as_ffff() {
        let repr = UdpRepr {
            src_port: 1,
            dst_port: 2,
        };
        let mut bytes = [0u8; 10];
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet, LOOPBACK_V4, LOOPBACK_V4, 2, |_| {});
        // Adding the checksum of the zero payload as a payload word makes the sum 0xFFFF,
        // whose complement is zero.
        let word = packet.checksum().to_be_bytes();
        repr.emit(&mut packet, LOOPBACK_V4, LOOPBACK_V4, 2, |payload| {
            payload.copy_from_slice(&word);
        });
        assert_eq!(packet.checksum(), 0xFFFF);
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(UdpRepr::parse(&packet, LOOPBACK_V4, LOOPBACK_V4).is_ok());
    }

    #[test]
    fn test_buffer_len() {
        let repr = UdpRepr {
            src_port: 46942,
            dst_port: 9,
        };
        assert_eq!(repr.header_len(), HEADER_LEN);
        assert_eq!(repr.buffer_len(5), HELLO_V4.len());
    }

    fn arb_addrs() -> impl Strategy<Value = (IpAddr, IpAddr)> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<[u8; 4]>())
                .prop_map(|(s, d)| (IpAddr::from(s), IpAddr::from(d))),
            (any::<[u8; 16]>(), any::<[u8; 16]>())
                .prop_map(|(s, d)| (IpAddr::from(s), IpAddr::from(d))),
        ]
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_identity(
            src_port: u16,
            dst_port in 1..=u16::MAX,
            (src, dst) in arb_addrs(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let repr = UdpRepr { src_port, dst_port };
            let mut bytes = vec![0xA5; repr.buffer_len(payload.len())];
            let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
            repr.emit(&mut packet, src, dst, payload.len(), |p| p.copy_from_slice(&payload));
            let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(UdpRepr::parse(&packet, src, dst), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            (src, dst) in arb_addrs(),
        ) {
            if let Ok(packet) = UdpPacket::new_checked(&bytes[..]) {
                let _ = packet.payload();
                let _ = UdpRepr::parse(&packet, src, dst);
            }
            let _ = UdpRepr::parse(&UdpPacket::new_unchecked(&bytes[..]), src, dst);
        }
    }
}
