//! IPv6 headers (RFC 8200).
//!
//! [`Ipv6Packet`] is the fixed 40-byte header and its payload; [`Ipv6Repr`] is the part a
//! user-space stack acts on. Extension headers sit at the start of the payload:
//! [`skip_extension_headers`] walks past the ones a host may ignore to find the upper-layer
//! protocol, and refuses fragments with [`Error::Unsupported`].

use std::net::Ipv6Addr;

use crate::{Error, IpProtocol, Result};

/// The length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// Byte positions of the header fields.
mod field {
    use core::ops::Range;

    pub(super) const VER_TC_FLOW: Range<usize> = 0..4;
    pub(super) const PAYLOAD_LEN: Range<usize> = 4..6;
    pub(super) const NEXT_HEADER: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Range<usize> = 8..24;
    pub(super) const DST_ADDR: Range<usize> = 24..40;
}

/// Extension header numbers (the IANA "IPv6 Extension Header Types" that matter here).
mod ext {
    pub(super) const HOP_BY_HOP: u8 = 0;
    pub(super) const ROUTING: u8 = 43;
    pub(super) const FRAGMENT: u8 = 44;
    pub(super) const DESTINATION_OPTIONS: u8 = 60;
}

/// A read/write view of an IPv6 packet in a buffer.
///
/// Build it with [`Ipv6Packet::new_checked`] for untrusted bytes: after that no accessor can
/// panic. [`Ipv6Packet::new_unchecked`] is for emitting into a buffer of a known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic until [`Self::check_len`]
    /// has passed.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer and checks that the header and the payload length fit it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header and the payload it announces. Bytes past
    /// the payload (link padding) are allowed and ignored.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        let bytes = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    fn read_addr(&self, range: core::ops::Range<usize>) -> Ipv6Addr {
        let mut octets = [0; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[range]);
        Ipv6Addr::from(octets)
    }

    /// The version field (6 for a valid packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        ((self.first_word() >> 20) & 0xFF) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000F_FFFF
    }

    /// The length of everything after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        let bytes = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        u16::from_be_bytes([bytes[0], bytes[1]])
    }

    /// The type of the header after the fixed one: an extension header or the upper layer.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        self.read_addr(field::SRC_ADDR)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.read_addr(field::DST_ADDR)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// Everything after the fixed header, up to the payload length: link padding is not
    /// included.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// The upper-layer protocol and its bytes, past any extension headers a host may skip;
    /// see [`skip_extension_headers`].
    pub fn upper_layer(&self) -> Result<(IpProtocol, &'a [u8])> {
        let payload = self.payload();
        let (protocol, offset) = skip_extension_headers(self.next_header(), payload)?;
        let upper = payload.get(offset..).ok_or(Error::Truncated)?;
        Ok((protocol, upper))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn write_first_word(&mut self, word: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the version field.
    pub fn set_version(&mut self, version: u8) {
        let word = (self.first_word() & 0x0FFF_FFFF) | (u32::from(version & 0x0F) << 28);
        self.write_first_word(word);
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, class: u8) {
        let word = (self.first_word() & 0xF00F_FFFF) | (u32::from(class) << 20);
        self.write_first_word(word);
    }

    /// Sets the flow label; only its low 20 bits are kept.
    pub fn set_flow_label(&mut self, label: u32) {
        let word = (self.first_word() & 0xFFF0_0000) | (label & 0x000F_FFFF);
        self.write_first_word(word);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, next_header: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header.into();
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload up to the payload length, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Finds the upper-layer protocol of an IPv6 payload and the offset at which it starts.
///
/// `next_header` is the fixed header's field and `payload` what follows the fixed header.
/// Hop-by-hop options (only allowed first), routing and destination options headers are
/// skipped. A fragment header gives [`Error::Unsupported`]. Any other number, including
/// "no next header" (59), is returned as the upper layer. The loop ends because every
/// extension header is at least 8 bytes long.
pub fn skip_extension_headers(
    next_header: IpProtocol,
    payload: &[u8],
) -> Result<(IpProtocol, usize)> {
    let mut protocol = next_header;
    let mut offset = 0;
    loop {
        match u8::from(protocol) {
            ext::FRAGMENT => return Err(Error::Unsupported),
            ext::HOP_BY_HOP if offset != 0 => return Err(Error::Malformed),
            ext::HOP_BY_HOP | ext::ROUTING | ext::DESTINATION_OPTIONS => {
                let header = payload.get(offset..offset + 2).ok_or(Error::Truncated)?;
                // The length counts 8-byte units after the first eight bytes.
                let len = (usize::from(header[1]) + 1) * 8;
                if payload.len() < offset + len {
                    return Err(Error::Truncated);
                }
                protocol = IpProtocol::from(header[0]);
                offset += len;
            }
            _ => return Ok((protocol, offset)),
        }
    }
}

/// The fields of an IPv6 fixed header that a user-space stack acts on.
///
/// `next_header` is the fixed header's own field: when extension headers follow, it names the
/// first of them. Use [`Ipv6Packet::upper_layer`] to reach the transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Where the packet comes from.
    pub src_addr: Ipv6Addr,
    /// Where the packet goes.
    pub dst_addr: Ipv6Addr,
    /// The type of the header after the fixed one.
    pub next_header: IpProtocol,
    /// The length of everything after the fixed header, in bytes.
    pub payload_len: usize,
    /// The hop limit.
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// The largest payload the header can describe (jumbograms are not supported).
    pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize;

    /// Validates a packet and reads its fixed header. Checks the lengths again, so a view
    /// made with `new_unchecked` is safe too, and the version.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv6Packet<&T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
        })
    }

    /// The length of the header [`Self::emit`] writes.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole packet: fixed header and payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the fixed header into the start of `packet`, with traffic class and flow label
    /// 0. The payload is left alone; write it through [`Ipv6Packet::payload_mut`].
    ///
    /// The buffer must be at least [`Self::buffer_len`] long, and `payload_len` at most
    /// [`Self::MAX_PAYLOAD_LEN`] (a larger value is clamped to it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        debug_assert!(self.payload_len <= Self::MAX_PAYLOAD_LEN);
        packet.write_first_word(6 << 28);
        packet.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ICMPv6 echo request to ::1, captured on the loopback interface.
    static ECHO_REQUEST: [u8; 55] = [
        0x60, 0x07, 0x07, 0xe7, 0x00, 0x0f, 0x3a, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x80, 0x00, 0xd5, 0x76, 0x43,
        0x21, 0x00, 0x07, 0x76, 0x36, 0x20, 0x70, 0x69, 0x6e, 0x67,
    ];

    const ECHO_PAYLOAD: &[u8] = b"\x80\x00\xd5\x76\x43\x21\x00\x07v6 ping";

    fn echo_repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: Ipv6Addr::LOCALHOST,
            dst_addr: Ipv6Addr::LOCALHOST,
            next_header: IpProtocol::Icmpv6,
            payload_len: 15,
            hop_limit: 64,
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = Ipv6Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0);
        assert_eq!(packet.flow_label(), 0x707e7);
        assert_eq!(packet.payload_len(), 15);
        assert_eq!(packet.next_header(), IpProtocol::Icmpv6);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), Ipv6Addr::LOCALHOST);
        assert_eq!(packet.dst_addr(), Ipv6Addr::LOCALHOST);
        assert_eq!(packet.payload(), ECHO_PAYLOAD);
        assert_eq!(packet.upper_layer(), Ok((IpProtocol::Icmpv6, ECHO_PAYLOAD)));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xA5; 55];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(6);
        packet.set_traffic_class(0);
        packet.set_flow_label(0x707e7);
        packet.set_payload_len(15);
        packet.set_next_header(IpProtocol::Icmpv6);
        packet.set_hop_limit(64);
        packet.set_src_addr(Ipv6Addr::LOCALHOST);
        packet.set_dst_addr(Ipv6Addr::LOCALHOST);
        packet.payload_mut().copy_from_slice(ECHO_PAYLOAD);
        assert_eq!(bytes, ECHO_REQUEST);
    }

    #[test]
    fn traffic_class_and_flow_label_do_not_overlap() {
        let mut bytes = [0u8; 40];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(6);
        packet.set_traffic_class(0xB8);
        packet.set_flow_label(0xFFFF_FFFF);
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xB8);
        assert_eq!(packet.flow_label(), 0xF_FFFF);
        packet.set_flow_label(0);
        assert_eq!(packet.traffic_class(), 0xB8);
    }

    #[test]
    fn test_check_len() {
        assert_eq!(
            Ipv6Packet::new_checked(&ECHO_REQUEST[..39]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&ECHO_REQUEST[..54]).unwrap_err(),
            Error::Truncated
        );
        assert!(Ipv6Packet::new_checked(&ECHO_REQUEST[..40]).is_err());
    }

    #[test]
    fn test_parse() {
        let packet = Ipv6Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&packet), Ok(echo_repr()));

        let mut padded = [0u8; 64];
        padded[..55].copy_from_slice(&ECHO_REQUEST);
        let packet = Ipv6Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload(), ECHO_PAYLOAD);
        assert_eq!(Ipv6Repr::parse(&packet), Ok(echo_repr()));

        let mut version = ECHO_REQUEST;
        version[0] = 0x40;
        let packet = Ipv6Packet::new_checked(&version[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&packet), Err(Error::Malformed));
        let packet = Ipv6Packet::new_unchecked(&ECHO_REQUEST[..50]);
        assert_eq!(Ipv6Repr::parse(&packet), Err(Error::Truncated));
    }

    #[test]
    fn test_emit() {
        let mut bytes = [0xA5; 55];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        echo_repr().emit(&mut packet);
        packet.payload_mut().copy_from_slice(ECHO_PAYLOAD);
        // The capture differs from the emitted header only in its flow label.
        packet.set_flow_label(0x707e7);
        assert_eq!(bytes, ECHO_REQUEST);
    }

    #[test]
    fn test_buffer_len() {
        assert_eq!(echo_repr().header_len(), HEADER_LEN);
        assert_eq!(echo_repr().buffer_len(), ECHO_REQUEST.len());
    }

    /// Hop-by-hop options (8 bytes: a PadN option), then destination options (16 bytes), then
    /// 4 bytes of UDP-ish upper layer.
    const EXTENSIONS: [u8; 28] = [
        60, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop, next: destination options
        17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // destination options, next: UDP
        0xab, 0xcd, 0x00, 0x35,
    ];

    #[test]
    fn extension_headers_are_skipped() {
        let hop_by_hop = IpProtocol::from(ext::HOP_BY_HOP);
        assert_eq!(
            skip_extension_headers(hop_by_hop, &EXTENSIONS),
            Ok((IpProtocol::Udp, 24))
        );
        assert_eq!(
            skip_extension_headers(IpProtocol::Tcp, &EXTENSIONS),
            Ok((IpProtocol::Tcp, 0))
        );
        assert_eq!(
            skip_extension_headers(IpProtocol::Unknown(59), &[]),
            Ok((IpProtocol::Unknown(59), 0))
        );

        let mut bytes = [0u8; 40 + 28];
        let repr = Ipv6Repr {
            next_header: hop_by_hop,
            payload_len: 28,
            ..echo_repr()
        };
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(&EXTENSIONS);
        let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&packet), Ok(repr));
        assert_eq!(
            packet.upper_layer(),
            Ok((IpProtocol::Udp, &EXTENSIONS[24..]))
        );
    }

    #[test]
    fn extension_header_errors() {
        let hop_by_hop = IpProtocol::from(ext::HOP_BY_HOP);
        // The destination options header claims 16 bytes but only 12 are there.
        assert_eq!(
            skip_extension_headers(hop_by_hop, &EXTENSIONS[..20]),
            Err(Error::Truncated)
        );
        assert_eq!(
            skip_extension_headers(hop_by_hop, &EXTENSIONS[..1]),
            Err(Error::Truncated)
        );
        let fragment = [17, 0, 0, 1, 0, 0, 0, 42];
        assert_eq!(
            skip_extension_headers(IpProtocol::from(ext::FRAGMENT), &fragment),
            Err(Error::Unsupported)
        );
        // A fragment header behind a routing header is found too.
        let routed = [44, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 1, 0, 0, 0, 42];
        assert_eq!(
            skip_extension_headers(IpProtocol::from(ext::ROUTING), &routed),
            Err(Error::Unsupported)
        );
        // Hop-by-hop options anywhere but first are not allowed.
        let late_hop_by_hop = [0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            skip_extension_headers(IpProtocol::from(ext::ROUTING), &late_hop_by_hop),
            Err(Error::Malformed)
        );
    }

    fn arb_repr() -> impl Strategy<Value = Ipv6Repr> {
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            0..1500usize,
            any::<u8>(),
        )
            .prop_map(|(src, dst, next_header, payload_len, hop_limit)| Ipv6Repr {
                src_addr: src.into(),
                dst_addr: dst.into(),
                next_header: next_header.into(),
                payload_len,
                hop_limit,
            })
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_identity(repr in arb_repr(), fill: u8) {
            let mut bytes = vec![fill; repr.buffer_len()];
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut bytes[..]));
            let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&packet), Ok(repr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            if let Ok(packet) = Ipv6Packet::new_checked(&bytes[..]) {
                let _ = (packet.payload(), packet.flow_label(), packet.traffic_class());
                let _ = Ipv6Repr::parse(&packet);
                let _ = packet.upper_layer();
            }
            let _ = Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&bytes[..]));
        }

        #[test]
        fn arbitrary_extension_headers_never_panic(
            next_header: u8,
            payload in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            if let Ok((_, offset)) = skip_extension_headers(next_header.into(), &payload) {
                prop_assert!(offset <= payload.len());
            }
        }
    }
}
