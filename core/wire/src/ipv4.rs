//! IPv4 headers (RFC 791).
//!
//! [`Ipv4Packet`] reads and writes every header field in place; [`Ipv4Repr`] is the part a
//! user-space stack acts on. Fragments are recognised but not reassembled here: the view
//! exposes the fragment fields and [`Ipv4Repr::parse`] refuses fragments with
//! [`Error::Unsupported`], so reassembly stays the stack's decision.

use std::net::Ipv4Addr;

use crate::{Error, IpProtocol, Result, checksum};

/// The length of a header without options.
pub const HEADER_LEN: usize = 20;

/// Byte positions of the header fields.
mod field {
    use core::ops::Range;

    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const TOTAL_LEN: Range<usize> = 2..4;
    pub(super) const IDENT: Range<usize> = 4..6;
    pub(super) const FLAGS_FRAG: Range<usize> = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Range<usize> = 10..12;
    pub(super) const SRC_ADDR: Range<usize> = 12..16;
    pub(super) const DST_ADDR: Range<usize> = 16..20;
}

/// The "don't fragment" bit in the flags and fragment offset word.
const FLAG_DONT_FRAG: u16 = 0x4000;
/// The "more fragments" bit in the flags and fragment offset word.
const FLAG_MORE_FRAGS: u16 = 0x2000;
/// The fragment offset, in units of 8 bytes, in the flags and fragment offset word.
const FRAG_OFFSET_MASK: u16 = 0x1FFF;

/// A read/write view of an IPv4 packet in a buffer.
///
/// Build it with [`Ipv4Packet::new_checked`] for untrusted bytes: after that no accessor can
/// panic. [`Ipv4Packet::new_unchecked`] is for emitting into a buffer of a known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic until [`Self::check_len`]
    /// has passed.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer and checks that every length field fits it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header, the header length and the total length,
    /// and that those lengths are consistent. Bytes past the total length (link padding) are
    /// allowed and ignored.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        let total_len = usize::from(self.total_len());
        if header_len < HEADER_LEN || total_len < header_len {
            Err(Error::Malformed)
        } else if len < total_len {
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

    fn read_addr(&self, range: core::ops::Range<usize>) -> Ipv4Addr {
        let bytes = &self.buffer.as_ref()[range];
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
    }

    /// The version field (4 for a valid packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes, options included.
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0F) * 4
    }

    /// The differentiated services code point and ECN bits, as one byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The length of header and payload, in bytes.
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::TOTAL_LEN)
    }

    /// The identification shared by the fragments of one datagram.
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT)
    }

    /// Whether the "don't fragment" flag is set.
    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG) & FLAG_DONT_FRAG != 0
    }

    /// Whether the "more fragments" flag is set.
    pub fn more_frags(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG) & FLAG_MORE_FRAGS != 0
    }

    /// The offset of this fragment's payload in the original datagram, in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.read_u16(field::FLAGS_FRAG) & FRAG_OFFSET_MASK) << 3
    }

    /// Whether this packet is a fragment of a larger datagram (not the only piece).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// The time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        self.read_addr(field::SRC_ADDR)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.read_addr(field::DST_ADDR)
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        let header = &self.buffer.as_ref()[..usize::from(self.header_len())];
        checksum::checksum(header) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The header options, between the fixed header and the payload.
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.header_len())]
    }

    /// The payload, up to the total length: link padding after it is not included.
    pub fn payload(&self) -> &'a [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn write_u16(&mut self, range: core::ops::Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

    fn write_flags_frag(&mut self, word: u16) {
        self.write_u16(field::FLAGS_FRAG, word);
    }

    /// Sets the version field.
    pub fn set_version(&mut self, version: u8) {
        let byte = &mut self.buffer.as_mut()[field::VER_IHL];
        *byte = (*byte & 0x0F) | (version << 4);
    }

    /// Sets the header length in bytes; it must be a multiple of 4 between 20 and 60.
    pub fn set_header_len(&mut self, len: u8) {
        let byte = &mut self.buffer.as_mut()[field::VER_IHL];
        *byte = (*byte & 0xF0) | ((len / 4) & 0x0F);
    }

    /// Sets the DSCP and ECN byte.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, len: u16) {
        self.write_u16(field::TOTAL_LEN, len);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u16) {
        self.write_u16(field::IDENT, ident);
    }

    /// Clears all three flag bits (the reserved bit included), keeping the fragment offset.
    pub fn clear_flags(&mut self) {
        let word = self.read_u16(field::FLAGS_FRAG) & FRAG_OFFSET_MASK;
        self.write_flags_frag(word);
    }

    /// Sets or clears the "don't fragment" flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        let word = self.read_u16(field::FLAGS_FRAG) & !FLAG_DONT_FRAG;
        self.write_flags_frag(if value { word | FLAG_DONT_FRAG } else { word });
    }

    /// Sets or clears the "more fragments" flag.
    pub fn set_more_frags(&mut self, value: bool) {
        let word = self.read_u16(field::FLAGS_FRAG) & !FLAG_MORE_FRAGS;
        self.write_flags_frag(if value { word | FLAG_MORE_FRAGS } else { word });
    }

    /// Sets the fragment offset in bytes; it must be a multiple of 8.
    pub fn set_frag_offset(&mut self, offset: u16) {
        let word = self.read_u16(field::FLAGS_FRAG) & !FRAG_OFFSET_MASK;
        self.write_flags_frag(word | ((offset >> 3) & FRAG_OFFSET_MASK));
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the payload protocol.
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.into();
    }

    /// Sets the checksum field to a given value; see [`Self::fill_checksum`].
    pub fn set_checksum(&mut self, value: u16) {
        self.write_u16(field::CHECKSUM, value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum and stores it; call it after the last header change.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header = &self.buffer.as_ref()[..usize::from(self.header_len())];
        let sum = checksum::checksum(header);
        self.set_checksum(sum);
    }

    /// The header options, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The payload up to the total length, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an IPv4 header that a user-space stack acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Where the packet comes from.
    pub src_addr: Ipv4Addr,
    /// Where the packet goes.
    pub dst_addr: Ipv4Addr,
    /// The protocol of the payload.
    pub protocol: IpProtocol,
    /// The payload length in bytes (the total length minus the header).
    pub payload_len: usize,
    /// The time to live.
    pub ttl: u8,
}

impl Ipv4Repr {
    /// The largest payload a header can describe.
    pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - HEADER_LEN;

    /// Validates a packet and reads its header.
    ///
    /// Checks the lengths (again, so a view made with `new_unchecked` is safe too), the version
    /// and the header checksum. Options are skipped. Fragments give [`Error::Unsupported`]:
    /// reassemble them from the view's fragment fields first.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv4Packet<&T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::Malformed);
        }
        if !packet.verify_checksum() {
            return Err(Error::Checksum);
        }
        if packet.is_fragment() {
            return Err(Error::Unsupported);
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len() - u16::from(packet.header_len())),
            ttl: packet.ttl(),
        })
    }

    /// The length of the header [`Self::emit`] writes.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole packet: header and payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header without options into the start of `packet`: "don't fragment"
    /// set, identification 0, DSCP/ECN 0, and a correct checksum. The payload is left alone;
    /// write it through [`Ipv4Packet::payload_mut`]. To change a header field afterwards (the
    /// identification, say), use its setter and then [`Ipv4Packet::fill_checksum`].
    ///
    /// The buffer must be at least [`Self::buffer_len`] long, and `payload_len` at most
    /// [`Self::MAX_PAYLOAD_LEN`] (a larger value is clamped to it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        debug_assert!(self.payload_len <= Self::MAX_PAYLOAD_LEN);
        let total_len = u16::try_from(self.buffer_len()).unwrap_or(u16::MAX);
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN as u8);
        packet.set_dscp_ecn(0);
        packet.set_total_len(total_len);
        packet.set_ident(0);
        packet.write_flags_frag(FLAG_DONT_FRAG);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ICMP echo request to 127.0.0.1, captured on the loopback interface.
    static ECHO_REQUEST: [u8; 39] = [
        0x45, 0x00, 0x00, 0x27, 0x20, 0x45, 0x40, 0x00, 0x40, 0x01, 0x1c, 0x8f, 0x7f, 0x00, 0x00,
        0x01, 0x7f, 0x00, 0x00, 0x01, 0x08, 0x00, 0xb4, 0xa3, 0x12, 0x34, 0x00, 0x01, 0x65, 0x72,
        0x65, 0x62, 0x75, 0x73, 0x20, 0x70, 0x69, 0x6e, 0x67,
    ];

    /// The kernel's reply to it: note the clear "don't fragment" flag and the new ident.
    static ECHO_REPLY: [u8; 39] = [
        0x45, 0x00, 0x00, 0x27, 0x20, 0x46, 0x00, 0x00, 0x40, 0x01, 0x5c, 0x8e, 0x7f, 0x00, 0x00,
        0x01, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x00, 0xbc, 0xa3, 0x12, 0x34, 0x00, 0x01, 0x65, 0x72,
        0x65, 0x62, 0x75, 0x73, 0x20, 0x70, 0x69, 0x6e, 0x67,
    ];

    const ECHO_PAYLOAD: &[u8] = b"\x08\x00\xb4\xa3\x12\x34\x00\x01erebus ping";

    fn loopback() -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 1)
    }

    fn echo_repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: loopback(),
            dst_addr: loopback(),
            protocol: IpProtocol::Icmp,
            payload_len: 19,
            ttl: 64,
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = Ipv4Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp_ecn(), 0);
        assert_eq!(packet.total_len(), 39);
        assert_eq!(packet.ident(), 0x2045);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), IpProtocol::Icmp);
        assert_eq!(packet.checksum(), 0x1c8f);
        assert_eq!(packet.src_addr(), loopback());
        assert_eq!(packet.dst_addr(), loopback());
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload(), ECHO_PAYLOAD);
        assert!(packet.verify_checksum());

        let reply = Ipv4Packet::new_checked(&ECHO_REPLY[..]).unwrap();
        assert!(!reply.dont_frag());
        assert_eq!(reply.ident(), 0x2046);
        assert!(reply.verify_checksum());
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xA5; 39];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_dscp_ecn(0);
        packet.set_total_len(39);
        packet.set_ident(0x2045);
        packet.clear_flags();
        packet.set_frag_offset(0);
        packet.set_dont_frag(true);
        packet.set_ttl(64);
        packet.set_protocol(IpProtocol::Icmp);
        packet.set_src_addr(loopback());
        packet.set_dst_addr(loopback());
        packet.payload_mut().copy_from_slice(ECHO_PAYLOAD);
        packet.fill_checksum();
        assert_eq!(bytes, ECHO_REQUEST);
    }

    #[test]
    fn fragment_fields_round_trip() {
        let mut bytes = ECHO_REQUEST;
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_dont_frag(false);
        packet.set_more_frags(true);
        packet.set_frag_offset(1480);
        assert!(!packet.dont_frag());
        assert!(packet.more_frags());
        assert_eq!(packet.frag_offset(), 1480);
        assert!(packet.is_fragment());
        packet.set_more_frags(false);
        assert_eq!(packet.frag_offset(), 1480);
        assert!(packet.is_fragment());
    }

    #[test]
    fn test_check_len() {
        assert_eq!(
            Ipv4Packet::new_checked(&ECHO_REQUEST[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv4Packet::new_checked(&ECHO_REQUEST[..38]).unwrap_err(),
            Error::Truncated
        );
        let mut short_header = ECHO_REQUEST;
        short_header[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&short_header[..]).unwrap_err(),
            Error::Malformed
        );
        let mut header_past_total = ECHO_REQUEST;
        header_past_total[3] = 19;
        assert_eq!(
            Ipv4Packet::new_checked(&header_past_total[..]).unwrap_err(),
            Error::Malformed
        );
        let mut long_header = ECHO_REQUEST;
        long_header[0] = 0x4F;
        assert_eq!(
            Ipv4Packet::new_checked(&long_header[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn test_parse() {
        let packet = Ipv4Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet), Ok(echo_repr()));
    }

    #[test]
    fn parse_ignores_link_padding() {
        let mut padded = [0u8; 60];
        padded[..39].copy_from_slice(&ECHO_REQUEST);
        let packet = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload(), ECHO_PAYLOAD);
        assert_eq!(Ipv4Repr::parse(&packet), Ok(echo_repr()));
    }

    #[test]
    fn parse_skips_options() {
        // The request with a 4-byte option (three no-ops and an end of list) inserted.
        let mut bytes = [0u8; 43];
        bytes[..20].copy_from_slice(&ECHO_REQUEST[..20]);
        bytes[20..24].copy_from_slice(&[1, 1, 1, 0]);
        bytes[24..].copy_from_slice(ECHO_PAYLOAD);
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_header_len(24);
        packet.set_total_len(43);
        packet.fill_checksum();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.options(), &[1, 1, 1, 0]);
        assert_eq!(packet.payload(), ECHO_PAYLOAD);
        assert_eq!(Ipv4Repr::parse(&packet), Ok(echo_repr()));
    }

    #[test]
    fn parse_rejects_bad_checksum_version_and_fragments() {
        let mut bad_sum = ECHO_REQUEST;
        bad_sum[11] ^= 1;
        let packet = Ipv4Packet::new_checked(&bad_sum[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet), Err(Error::Checksum));

        let mut version = ECHO_REQUEST;
        let mut packet = Ipv4Packet::new_unchecked(&mut version[..]);
        packet.set_version(5);
        packet.fill_checksum();
        let packet = Ipv4Packet::new_checked(&version[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet), Err(Error::Malformed));

        for (more, offset) in [(true, 0), (false, 8), (true, 1480)] {
            let mut fragment = ECHO_REQUEST;
            let mut packet = Ipv4Packet::new_unchecked(&mut fragment[..]);
            packet.set_more_frags(more);
            packet.set_frag_offset(offset);
            packet.fill_checksum();
            let packet = Ipv4Packet::new_checked(&fragment[..]).unwrap();
            assert_eq!(Ipv4Repr::parse(&packet), Err(Error::Unsupported));
        }
    }

    #[test]
    fn parse_checks_lengths_of_unchecked_views() {
        let packet = Ipv4Packet::new_unchecked(&ECHO_REQUEST[..30]);
        assert_eq!(Ipv4Repr::parse(&packet), Err(Error::Truncated));
    }

    #[test]
    fn test_emit() {
        let repr = echo_repr();
        let mut bytes = [0xA5; 39];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(ECHO_PAYLOAD);
        // The emitted header differs from the capture only in the identification.
        packet.set_ident(0x2045);
        packet.fill_checksum();
        assert_eq!(bytes, ECHO_REQUEST);
    }

    #[test]
    fn emit_writes_ident_zero_and_dont_frag() {
        let mut bytes = [0xFF; 39];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        echo_repr().emit(&mut packet);
        assert_eq!(packet.ident(), 0);
        assert!(packet.dont_frag());
        assert!(!packet.is_fragment());
        assert_eq!(packet.dscp_ecn(), 0);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn test_buffer_len() {
        assert_eq!(echo_repr().header_len(), HEADER_LEN);
        assert_eq!(echo_repr().buffer_len(), ECHO_REQUEST.len());
    }

    fn arb_repr() -> impl Strategy<Value = Ipv4Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0..1500usize,
            any::<u8>(),
        )
            .prop_map(|(src, dst, protocol, payload_len, ttl)| Ipv4Repr {
                src_addr: src.into(),
                dst_addr: dst.into(),
                protocol: protocol.into(),
                payload_len,
                ttl,
            })
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_identity(repr in arb_repr(), fill: u8) {
            let mut bytes = vec![fill; repr.buffer_len()];
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut bytes[..]));
            let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&packet), Ok(repr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(packet) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (packet.options(), packet.payload(), packet.frag_offset());
                let _ = Ipv4Repr::parse(&packet);
            }
            let _ = Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..]));
        }
    }
}
