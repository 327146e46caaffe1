//! ICMP for IPv4 (RFC 792) and IPv6 (RFC 4443): echo, and the error messages a stack uses to
//! fail a pending connection.
//!
//! Both versions share one header layout (type, code, checksum, four message-specific bytes),
//! so one view, [`IcmpPacket`], serves both; [`IcmpRepr`] and [`Icmpv6Repr`] hold the messages
//! of each version. An ICMP message has no length field: it runs to the end of the IP payload,
//! so the view covers its whole buffer.
//!
//! Error messages quote the start of the datagram that caused them. [`OriginalIpv4`] and
//! [`OriginalIpv6`] read that quote leniently (its length fields describe the original
//! datagram, not the quote) so a stack can find the connection it concerns.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ipv4::{self, Ipv4Packet};
use crate::ipv6::{self, Ipv6Packet, skip_extension_headers};
use crate::{Error, IpProtocol, Result, checksum};

/// The length of the ICMP header, the message-specific word included.
pub const HEADER_LEN: usize = 8;

/// Byte positions of the header fields.
mod field {
    use core::ops::Range;

    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Range<usize> = 2..4;
    pub(super) const ECHO_IDENT: Range<usize> = 4..6;
    pub(super) const ECHO_SEQ_NO: Range<usize> = 6..8;
    pub(super) const NEXT_HOP_MTU: Range<usize> = 6..8;
    pub(super) const REST_OF_HEADER: Range<usize> = 4..8;
}

/// ICMPv4 message types handled here.
mod v4_type {
    pub(super) const ECHO_REPLY: u8 = 0;
    pub(super) const DST_UNREACHABLE: u8 = 3;
    pub(super) const ECHO_REQUEST: u8 = 8;
    pub(super) const TIME_EXCEEDED: u8 = 11;
}

/// ICMPv6 message types handled here.
mod v6_type {
    pub(super) const DST_UNREACHABLE: u8 = 1;
    pub(super) const PACKET_TOO_BIG: u8 = 2;
    pub(super) const TIME_EXCEEDED: u8 = 3;
    pub(super) const ECHO_REQUEST: u8 = 128;
    pub(super) const ECHO_REPLY: u8 = 129;
}

/// Codes of ICMPv4 "destination unreachable" (RFC 792, RFC 1812).
pub mod unreachable {
    /// No route to the network.
    pub const NET: u8 = 0;
    /// The host did not answer.
    pub const HOST: u8 = 1;
    /// The host does not speak the protocol.
    pub const PROTOCOL: u8 = 2;
    /// Nothing listens on the port.
    pub const PORT: u8 = 3;
    /// The datagram needs fragmenting but "don't fragment" is set; the next-hop MTU says how
    /// large a datagram may be (RFC 1191).
    pub const FRAGMENTATION_NEEDED: u8 = 4;
    /// A filter refused the datagram.
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Codes of ICMPv6 "destination unreachable" (RFC 4443 section 3.1).
pub mod unreachable_v6 {
    /// No route to the destination.
    pub const NO_ROUTE: u8 = 0;
    /// A filter refused the datagram.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// The source address is out of the destination's scope.
    pub const BEYOND_SCOPE: u8 = 2;
    /// The address could not be reached.
    pub const ADDRESS: u8 = 3;
    /// Nothing listens on the port.
    pub const PORT: u8 = 4;
}

/// A read/write view of an ICMP (v4 or v6) message in a buffer that holds exactly the message.
///
/// Build it with [`IcmpPacket::new_checked`] for untrusted bytes: after that no accessor can
/// panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic until [`Self::check_len`]
    /// has passed.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer and checks that it holds the header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
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

    /// The message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The identifier of an echo request or reply.
    pub fn echo_ident(&self) -> u16 {
        self.read_u16(field::ECHO_IDENT)
    }

    /// The sequence number of an echo request or reply.
    pub fn echo_seq_no(&self) -> u16 {
        self.read_u16(field::ECHO_SEQ_NO)
    }

    /// The next-hop MTU of an ICMPv4 "fragmentation needed" message.
    pub fn next_hop_mtu(&self) -> u16 {
        self.read_u16(field::NEXT_HOP_MTU)
    }

    /// The four message-specific bytes after the checksum, as one word (the MTU of an ICMPv6
    /// "packet too big", for example).
    pub fn rest_of_header(&self) -> u32 {
        let bytes = &self.buffer.as_ref()[field::REST_OF_HEADER];
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// Whether the ICMPv4 checksum (over the whole message) is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// Whether the ICMPv6 checksum (over the IPv6 pseudo-header and the whole message) is
    /// correct.
    pub fn verify_checksum_v6(&self, src_addr: Ipv6Addr, dst_addr: Ipv6Addr) -> bool {
        checksum::finish(v6_sum(src_addr, dst_addr, self.buffer.as_ref())) == 0
    }
}

/// The running sum of the IPv6 pseudo-header and an ICMPv6 message.
fn v6_sum(src_addr: Ipv6Addr, dst_addr: Ipv6Addr, message: &[u8]) -> u32 {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let sum = checksum::pseudo_header_v6(src_addr, dst_addr, IpProtocol::Icmpv6.into(), len);
    checksum::accumulate(sum, message)
}

impl<'a, T: AsRef<[u8]> + ?Sized> IcmpPacket<&'a T> {
    /// The bytes after the header: echo data, or the quoted datagram of an error message.
    pub fn data(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    fn write_u16(&mut self, range: core::ops::Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the message type.
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the message code.
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field to a given value; see [`Self::fill_checksum`].
    pub fn set_checksum(&mut self, value: u16) {
        self.write_u16(field::CHECKSUM, value);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, value: u16) {
        self.write_u16(field::ECHO_IDENT, value);
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq_no(&mut self, value: u16) {
        self.write_u16(field::ECHO_SEQ_NO, value);
    }

    /// Sets the next-hop MTU of an ICMPv4 "fragmentation needed" message.
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        self.write_u16(field::NEXT_HOP_MTU, value);
    }

    /// Sets the four message-specific bytes as one word.
    pub fn set_rest_of_header(&mut self, value: u32) {
        self.buffer.as_mut()[field::REST_OF_HEADER].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes the ICMPv4 checksum over the whole buffer and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(value);
    }

    /// Computes the ICMPv6 checksum over the pseudo-header and the whole buffer and stores it.
    pub fn fill_checksum_v6(&mut self, src_addr: Ipv6Addr, dst_addr: Ipv6Addr) {
        self.set_checksum(0);
        let value = checksum::finish(v6_sum(src_addr, dst_addr, self.buffer.as_ref()));
        self.set_checksum(value);
    }

    /// The bytes after the header, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IcmpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The start of the IPv4 datagram an ICMPv4 error is about, as quoted in the error.
///
/// The quote's header is read without checking its total length or checksum: the total length
/// describes the original datagram, which the quote cuts short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalIpv4<'a> {
    /// The original source: this host, for errors about what it sent.
    pub src_addr: Ipv4Addr,
    /// The original destination.
    pub dst_addr: Ipv4Addr,
    /// The original payload protocol.
    pub protocol: IpProtocol,
    /// The quoted start of the original payload (RFC 792 asks for at least eight bytes).
    pub transport: &'a [u8],
}

impl<'a> OriginalIpv4<'a> {
    /// Reads a quoted datagram. It must hold a whole IPv4 header (options included).
    pub fn parse(quote: &'a [u8]) -> Result<Self> {
        let header = Ipv4Packet::new_unchecked(quote);
        if quote.len() < ipv4::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if header.version() != 4 || usize::from(header.header_len()) < ipv4::HEADER_LEN {
            return Err(Error::Malformed);
        }
        let transport = quote
            .get(usize::from(header.header_len())..)
            .ok_or(Error::Truncated)?;
        Ok(Self {
            src_addr: header.src_addr(),
            dst_addr: header.dst_addr(),
            protocol: header.protocol(),
            transport,
        })
    }

    /// The original source and destination ports, when the quote is of TCP or UDP and holds
    /// them.
    pub fn ports(&self) -> Option<(u16, u16)> {
        quoted_ports(self.protocol, self.transport)
    }
}

/// The start of the IPv6 datagram an ICMPv6 error is about, as quoted in the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalIpv6<'a> {
    /// The original source: this host, for errors about what it sent.
    pub src_addr: Ipv6Addr,
    /// The original destination.
    pub dst_addr: Ipv6Addr,
    /// The original upper-layer protocol, past any extension headers.
    pub protocol: IpProtocol,
    /// The quoted start of the upper-layer bytes.
    pub transport: &'a [u8],
}

impl<'a> OriginalIpv6<'a> {
    /// Reads a quoted datagram: its fixed header, then the extension headers that fit in the
    /// quote. The payload length field is not checked against the quote.
    pub fn parse(quote: &'a [u8]) -> Result<Self> {
        let header = Ipv6Packet::new_unchecked(quote);
        let rest = quote.get(ipv6::HEADER_LEN..).ok_or(Error::Truncated)?;
        if header.version() != 6 {
            return Err(Error::Malformed);
        }
        let (protocol, offset) = skip_extension_headers(header.next_header(), rest)?;
        Ok(Self {
            src_addr: header.src_addr(),
            dst_addr: header.dst_addr(),
            protocol,
            transport: rest.get(offset..).ok_or(Error::Truncated)?,
        })
    }

    /// The original source and destination ports, when the quote is of TCP or UDP and holds
    /// them.
    pub fn ports(&self) -> Option<(u16, u16)> {
        quoted_ports(self.protocol, self.transport)
    }
}

/// The ports at the start of a TCP or UDP header (both put them in the first four bytes).
fn quoted_ports(protocol: IpProtocol, transport: &[u8]) -> Option<(u16, u16)> {
    match (protocol, transport) {
        (IpProtocol::Tcp | IpProtocol::Udp, [s0, s1, d0, d1, ..]) => Some((
            u16::from_be_bytes([*s0, *s1]),
            u16::from_be_bytes([*d0, *d1]),
        )),
        _ => None,
    }
}

/// An ICMPv4 message this crate understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpRepr<'a> {
    /// Echo request (ping).
    EchoRequest {
        /// Identifier, chosen by the sender to match replies.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data the reply must echo.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// The request's identifier.
        ident: u16,
        /// The request's sequence number.
        seq_no: u16,
        /// The request's data.
        data: &'a [u8],
    },
    /// Destination unreachable (type 3).
    DstUnreachable {
        /// Why; see [`unreachable`].
        code: u8,
        /// The largest datagram the next hop takes, for
        /// [`unreachable::FRAGMENTATION_NEEDED`]; 0 otherwise.
        next_hop_mtu: u16,
        /// The quoted original datagram; read it with [`OriginalIpv4::parse`].
        original: &'a [u8],
    },
    /// Time exceeded (type 11): code 0 for TTL, 1 for fragment reassembly.
    TimeExceeded {
        /// Which time ran out.
        code: u8,
        /// The quoted original datagram; read it with [`OriginalIpv4::parse`].
        original: &'a [u8],
    },
}

impl<'a> IcmpRepr<'a> {
    /// Validates an ICMPv4 message: its length (again), its checksum, a zero code on echo
    /// messages and a readable quote on errors. Other message types give
    /// [`Error::Unsupported`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &IcmpPacket<&'a T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Checksum);
        }
        let code = packet.msg_code();
        match packet.msg_type() {
            v4_type::ECHO_REQUEST | v4_type::ECHO_REPLY if code != 0 => Err(Error::Malformed),
            v4_type::ECHO_REQUEST => Ok(Self::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data: packet.data(),
            }),
            v4_type::ECHO_REPLY => Ok(Self::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data: packet.data(),
            }),
            v4_type::DST_UNREACHABLE => {
                OriginalIpv4::parse(packet.data())?;
                Ok(Self::DstUnreachable {
                    code,
                    next_hop_mtu: packet.next_hop_mtu(),
                    original: packet.data(),
                })
            }
            v4_type::TIME_EXCEEDED => {
                OriginalIpv4::parse(packet.data())?;
                Ok(Self::TimeExceeded {
                    code,
                    original: packet.data(),
                })
            }
            _ => Err(Error::Unsupported),
        }
    }

    /// The quoted datagram of an error message, or `None` for echo messages (or a quote that
    /// does not parse, which [`Self::parse`] never returns).
    pub fn original(&self) -> Option<OriginalIpv4<'a>> {
        match self {
            Self::DstUnreachable { original, .. } | Self::TimeExceeded { original, .. } => {
                OriginalIpv4::parse(original).ok()
            }
            Self::EchoRequest { .. } | Self::EchoReply { .. } => None,
        }
    }

    /// The length of the message [`Self::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::EchoRequest { data, .. } | Self::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Self::DstUnreachable { original, .. } | Self::TimeExceeded { original, .. } => {
                HEADER_LEN + original.len()
            }
        }
    }

    /// Writes the message, checksum included, into `packet`, whose buffer must be exactly
    /// [`Self::buffer_len`] long: the checksum covers the whole buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut IcmpPacket<T>) {
        let (msg_type, code, rest_of_header, data) = match *self {
            Self::EchoRequest {
                ident,
                seq_no,
                data,
            } => (v4_type::ECHO_REQUEST, 0, echo_word(ident, seq_no), data),
            Self::EchoReply {
                ident,
                seq_no,
                data,
            } => (v4_type::ECHO_REPLY, 0, echo_word(ident, seq_no), data),
            Self::DstUnreachable {
                code,
                next_hop_mtu,
                original,
            } => (
                v4_type::DST_UNREACHABLE,
                code,
                u32::from(next_hop_mtu),
                original,
            ),
            Self::TimeExceeded { code, original } => (v4_type::TIME_EXCEEDED, code, 0, original),
        };
        packet.set_msg_type(msg_type);
        packet.set_msg_code(code);
        packet.set_rest_of_header(rest_of_header);
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum();
    }
}

/// An ICMPv6 message this crate understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv6Repr<'a> {
    /// Echo request (ping).
    EchoRequest {
        /// Identifier, chosen by the sender to match replies.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data the reply must echo.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// The request's identifier.
        ident: u16,
        /// The request's sequence number.
        seq_no: u16,
        /// The request's data.
        data: &'a [u8],
    },
    /// Destination unreachable (type 1).
    DstUnreachable {
        /// Why; see [`unreachable_v6`].
        code: u8,
        /// The quoted original datagram; read it with [`OriginalIpv6::parse`].
        original: &'a [u8],
    },
    /// Packet too big (type 2): the path takes datagrams of at most `mtu` bytes.
    PacketTooBig {
        /// The MTU of the next hop.
        mtu: u32,
        /// The quoted original datagram; read it with [`OriginalIpv6::parse`].
        original: &'a [u8],
    },
    /// Time exceeded (type 3): code 0 for hop limit, 1 for fragment reassembly.
    TimeExceeded {
        /// Which time ran out.
        code: u8,
        /// The quoted original datagram; read it with [`OriginalIpv6::parse`].
        original: &'a [u8],
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// Validates an ICMPv6 message that travelled from `src_addr` to `dst_addr`: its length
    /// (again), its checksum over the pseudo-header, a zero code on echo messages and a fixed
    /// IPv6 header in the quote of errors. Other message types (neighbour discovery among
    /// them) give [`Error::Unsupported`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &IcmpPacket<&'a T>,
        src_addr: Ipv6Addr,
        dst_addr: Ipv6Addr,
    ) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum_v6(src_addr, dst_addr) {
            return Err(Error::Checksum);
        }
        let code = packet.msg_code();
        let original = packet.data();
        let check_quote = || {
            let header = Ipv6Packet::new_unchecked(original);
            if original.len() < ipv6::HEADER_LEN {
                Err(Error::Truncated)
            } else if header.version() != 6 {
                Err(Error::Malformed)
            } else {
                Ok(())
            }
        };
        match packet.msg_type() {
            v6_type::ECHO_REQUEST | v6_type::ECHO_REPLY if code != 0 => Err(Error::Malformed),
            v6_type::ECHO_REQUEST => Ok(Self::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data: packet.data(),
            }),
            v6_type::ECHO_REPLY => Ok(Self::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data: packet.data(),
            }),
            v6_type::DST_UNREACHABLE => {
                check_quote()?;
                Ok(Self::DstUnreachable { code, original })
            }
            v6_type::PACKET_TOO_BIG => {
                check_quote()?;
                Ok(Self::PacketTooBig {
                    mtu: packet.rest_of_header(),
                    original,
                })
            }
            v6_type::TIME_EXCEEDED => {
                check_quote()?;
                Ok(Self::TimeExceeded { code, original })
            }
            _ => Err(Error::Unsupported),
        }
    }

    /// The quoted datagram of an error message, or `None` for echo messages or a quote whose
    /// extension headers cannot be read.
    pub fn original(&self) -> Option<OriginalIpv6<'a>> {
        match self {
            Self::DstUnreachable { original, .. }
            | Self::PacketTooBig { original, .. }
            | Self::TimeExceeded { original, .. } => OriginalIpv6::parse(original).ok(),
            Self::EchoRequest { .. } | Self::EchoReply { .. } => None,
        }
    }

    /// The length of the message [`Self::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::EchoRequest { data, .. } | Self::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Self::DstUnreachable { original, .. }
            | Self::PacketTooBig { original, .. }
            | Self::TimeExceeded { original, .. } => HEADER_LEN + original.len(),
        }
    }

    /// Writes the message into `packet`, whose buffer must be exactly [`Self::buffer_len`]
    /// long, with the checksum over the pseudo-header of `src_addr` and `dst_addr`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut IcmpPacket<T>,
        src_addr: Ipv6Addr,
        dst_addr: Ipv6Addr,
    ) {
        let (msg_type, code, rest_of_header, data) = match *self {
            Self::EchoRequest {
                ident,
                seq_no,
                data,
            } => (v6_type::ECHO_REQUEST, 0, echo_word(ident, seq_no), data),
            Self::EchoReply {
                ident,
                seq_no,
                data,
            } => (v6_type::ECHO_REPLY, 0, echo_word(ident, seq_no), data),
            Self::DstUnreachable { code, original } => {
                (v6_type::DST_UNREACHABLE, code, 0, original)
            }
            Self::PacketTooBig { mtu, original } => (v6_type::PACKET_TOO_BIG, 0, mtu, original),
            Self::TimeExceeded { code, original } => (v6_type::TIME_EXCEEDED, code, 0, original),
        };
        packet.set_msg_type(msg_type);
        packet.set_msg_code(code);
        packet.set_rest_of_header(rest_of_header);
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum_v6(src_addr, dst_addr);
    }
}

/// The message-specific word of an echo message.
fn echo_word(ident: u16, seq_no: u16) -> u32 {
    (u32::from(ident) << 16) | u32::from(seq_no)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Messages captured on the loopback interface (the IP header stripped).

    /// An echo request to 127.0.0.1.
    static ECHO_REQUEST: [u8; 19] = [
        0x08, 0x00, 0xb4, 0xa3, 0x12, 0x34, 0x00, 0x01, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x20,
        0x70, 0x69, 0x6e, 0x67,
    ];

    /// The kernel's reply.
    static ECHO_REPLY: [u8; 19] = [
        0x00, 0x00, 0xbc, 0xa3, 0x12, 0x34, 0x00, 0x01, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x20,
        0x70, 0x69, 0x6e, 0x67,
    ];

    /// The kernel's "port unreachable" for a UDP datagram to 127.0.0.1:9, quoting all of it.
    static PORT_UNREACHABLE: [u8; 41] = [
        0x03, 0x03, 0x03, 0x95, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x21, 0xb1, 0xff, 0x40,
        0x00, 0x40, 0x11, 0x8a, 0xca, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0xb7, 0x5e,
        0x00, 0x09, 0x00, 0x0d, 0xfe, 0x20, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
    ];

    /// An ICMPv6 echo request to ::1.
    static ECHO_REQUEST_V6: [u8; 15] = [
        0x80, 0x00, 0xd5, 0x76, 0x43, 0x21, 0x00, 0x07, 0x76, 0x36, 0x20, 0x70, 0x69, 0x6e, 0x67,
    ];

    /// The kernel's reply.
    static ECHO_REPLY_V6: [u8; 15] = [
        0x81, 0x00, 0xd4, 0x76, 0x43, 0x21, 0x00, 0x07, 0x76, 0x36, 0x20, 0x70, 0x69, 0x6e, 0x67,
    ];

    /// The kernel's ICMPv6 "port unreachable" for a UDP datagram to [::1]:9.
    static PORT_UNREACHABLE_V6: [u8; 57] = [
        0x01, 0x04, 0x9e, 0xce, 0x00, 0x00, 0x00, 0x00, 0x60, 0x0a, 0xb4, 0x70, 0x00, 0x09, 0x11,
        0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0xc1, 0xc3, 0x00, 0x09, 0x00, 0x09, 0x00, 0x1c, 0x78,
    ];

    const LOOPBACK: Ipv6Addr = Ipv6Addr::LOCALHOST;

    fn echo_request() -> IcmpRepr<'static> {
        IcmpRepr::EchoRequest {
            ident: 0x1234,
            seq_no: 1,
            data: b"erebus ping",
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = IcmpPacket::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(packet.msg_type(), 8);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.checksum(), 0xb4a3);
        assert_eq!(packet.echo_ident(), 0x1234);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.rest_of_header(), 0x1234_0001);
        assert_eq!(packet.data(), b"erebus ping");
        assert!(packet.verify_checksum());

        let packet = IcmpPacket::new_checked(&PORT_UNREACHABLE[..]).unwrap();
        assert_eq!(packet.msg_type(), 3);
        assert_eq!(packet.msg_code(), unreachable::PORT);
        assert_eq!(packet.next_hop_mtu(), 0);
        assert_eq!(packet.data(), &PORT_UNREACHABLE[8..]);
        assert!(packet.verify_checksum());

        let packet = IcmpPacket::new_checked(&ECHO_REQUEST_V6[..]).unwrap();
        assert!(packet.verify_checksum_v6(LOOPBACK, LOOPBACK));
        assert!(!packet.verify_checksum());
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xA5; 19];
        let mut packet = IcmpPacket::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(8);
        packet.set_msg_code(0);
        packet.set_echo_ident(0x1234);
        packet.set_echo_seq_no(1);
        packet.data_mut().copy_from_slice(b"erebus ping");
        packet.fill_checksum();
        assert_eq!(bytes, ECHO_REQUEST);

        let mut bytes = [0xA5; 15];
        let mut packet = IcmpPacket::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(129);
        packet.set_msg_code(0);
        packet.set_rest_of_header(0x4321_0007);
        packet.data_mut().copy_from_slice(b"v6 ping");
        packet.fill_checksum_v6(LOOPBACK, LOOPBACK);
        assert_eq!(bytes, ECHO_REPLY_V6);
    }

    #[test]
    fn test_check_len() {
        assert_eq!(
            IcmpPacket::new_checked(&ECHO_REQUEST[..7]).unwrap_err(),
            Error::Truncated
        );
        assert!(IcmpPacket::new_checked(&ECHO_REQUEST[..8]).is_ok());
    }

    #[test]
    fn test_parse() {
        let packet = IcmpPacket::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(IcmpRepr::parse(&packet), Ok(echo_request()));
        let packet = IcmpPacket::new_checked(&ECHO_REPLY[..]).unwrap();
        assert_eq!(
            IcmpRepr::parse(&packet),
            Ok(IcmpRepr::EchoReply {
                ident: 0x1234,
                seq_no: 1,
                data: b"erebus ping",
            })
        );
        assert_eq!(IcmpRepr::parse(&packet).unwrap().original(), None);
    }

    #[test]
    fn port_unreachable_names_the_original_datagram() {
        let packet = IcmpPacket::new_checked(&PORT_UNREACHABLE[..]).unwrap();
        let repr = IcmpRepr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            IcmpRepr::DstUnreachable {
                code: unreachable::PORT,
                next_hop_mtu: 0,
                original: &PORT_UNREACHABLE[8..],
            }
        );
        let original = repr.original().unwrap();
        assert_eq!(original.src_addr, Ipv4Addr::LOCALHOST);
        assert_eq!(original.dst_addr, Ipv4Addr::LOCALHOST);
        assert_eq!(original.protocol, IpProtocol::Udp);
        assert_eq!(original.ports(), Some((46942, 9)));
        assert_eq!(&original.transport[8..], b"hello");
    }

    #[test]
    fn quote_of_eight_bytes_is_enough_and_less_than_a_header_is_not() {
        assert_eq!(
            OriginalIpv4::parse(&PORT_UNREACHABLE[8..36])
                .unwrap()
                .ports(),
            Some((46942, 9))
        );
        assert_eq!(
            OriginalIpv4::parse(&PORT_UNREACHABLE[8..27]),
            Err(Error::Truncated)
        );
        // A header whose length field runs past the quote.
        let mut long_header = PORT_UNREACHABLE;
        long_header[8] = 0x4F;
        assert_eq!(
            OriginalIpv4::parse(&long_header[8..]),
            Err(Error::Truncated)
        );
        // An ICMP error whose quote is not IPv4 is refused.
        let mut bytes = [0u8; 8 + 20];
        let repr = IcmpRepr::TimeExceeded {
            code: 0,
            original: &[0x60; 20],
        };
        repr.emit(&mut IcmpPacket::new_unchecked(&mut bytes[..]));
        let packet = IcmpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(IcmpRepr::parse(&packet), Err(Error::Malformed));
    }

    #[test]
    fn parse_rejects_bad_checksum_codes_and_unknown_types() {
        let mut corrupt = ECHO_REQUEST;
        corrupt[10] ^= 1;
        let packet = IcmpPacket::new_checked(&corrupt[..]).unwrap();
        assert_eq!(IcmpRepr::parse(&packet), Err(Error::Checksum));

        let mut odd_code = ECHO_REQUEST;
        let mut packet = IcmpPacket::new_unchecked(&mut odd_code[..]);
        packet.set_msg_code(1);
        packet.fill_checksum();
        let packet = IcmpPacket::new_checked(&odd_code[..]).unwrap();
        assert_eq!(IcmpRepr::parse(&packet), Err(Error::Malformed));

        // A timestamp request (type 13).
        let mut timestamp = [13, 0, 0, 0, 0, 1, 0, 2];
        IcmpPacket::new_unchecked(&mut timestamp[..]).fill_checksum();
        let packet = IcmpPacket::new_checked(&timestamp[..]).unwrap();
        assert_eq!(IcmpRepr::parse(&packet), Err(Error::Unsupported));
        let packet = IcmpPacket::new_unchecked(&ECHO_REQUEST[..4]);
        assert_eq!(IcmpRepr::parse(&packet), Err(Error::Truncated));
    }

    #[test]
    fn test_emit() {
        let mut bytes = [0xA5; 19];
        echo_request().emit(&mut IcmpPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, ECHO_REQUEST);

        let repr = IcmpRepr::DstUnreachable {
            code: unreachable::PORT,
            next_hop_mtu: 0,
            original: &PORT_UNREACHABLE[8..],
        };
        let mut bytes = [0xA5; 41];
        repr.emit(&mut IcmpPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PORT_UNREACHABLE);
    }

    #[test]
    fn test_buffer_len() {
        assert_eq!(echo_request().buffer_len(), ECHO_REQUEST.len());
        let repr = IcmpRepr::TimeExceeded {
            code: 0,
            original: &PORT_UNREACHABLE[8..],
        };
        assert_eq!(repr.buffer_len(), PORT_UNREACHABLE.len());
    }

    #[test]
    fn v6_parse_and_emit() {
        let request = Icmpv6Repr::EchoRequest {
            ident: 0x4321,
            seq_no: 7,
            data: b"v6 ping",
        };
        let packet = IcmpPacket::new_checked(&ECHO_REQUEST_V6[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&packet, LOOPBACK, LOOPBACK), Ok(request));
        let other = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(
            Icmpv6Repr::parse(&packet, other, LOOPBACK),
            Err(Error::Checksum)
        );

        let mut bytes = [0u8; 15];
        request.emit(
            &mut IcmpPacket::new_unchecked(&mut bytes[..]),
            LOOPBACK,
            LOOPBACK,
        );
        assert_eq!(bytes, ECHO_REQUEST_V6);
        assert_eq!(request.buffer_len(), 15);

        let packet = IcmpPacket::new_checked(&ECHO_REPLY_V6[..]).unwrap();
        assert!(matches!(
            Icmpv6Repr::parse(&packet, LOOPBACK, LOOPBACK),
            Ok(Icmpv6Repr::EchoReply {
                ident: 0x4321,
                seq_no: 7,
                ..
            })
        ));
    }

    #[test]
    fn v6_port_unreachable_names_the_original_datagram() {
        let packet = IcmpPacket::new_checked(&PORT_UNREACHABLE_V6[..]).unwrap();
        let repr = Icmpv6Repr::parse(&packet, LOOPBACK, LOOPBACK).unwrap();
        assert_eq!(
            repr,
            Icmpv6Repr::DstUnreachable {
                code: unreachable_v6::PORT,
                original: &PORT_UNREACHABLE_V6[8..],
            }
        );
        let original = repr.original().unwrap();
        assert_eq!(original.src_addr, LOOPBACK);
        assert_eq!(original.dst_addr, LOOPBACK);
        assert_eq!(original.protocol, IpProtocol::Udp);
        assert_eq!(original.ports(), Some((49603, 9)));

        let mut bytes = [0u8; 57];
        repr.emit(
            &mut IcmpPacket::new_unchecked(&mut bytes[..]),
            LOOPBACK,
            LOOPBACK,
        );
        assert_eq!(bytes, PORT_UNREACHABLE_V6);
    }

    #[test]
    fn v6_rejects_neighbour_discovery_and_short_quotes() {
        // A router solicitation (type 133) is well formed but not handled here.
        let mut solicitation = [133, 0, 0, 0, 0, 0, 0, 0];
        IcmpPacket::new_unchecked(&mut solicitation[..]).fill_checksum_v6(LOOPBACK, LOOPBACK);
        let packet = IcmpPacket::new_checked(&solicitation[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&packet, LOOPBACK, LOOPBACK),
            Err(Error::Unsupported)
        );

        let repr = Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            original: &PORT_UNREACHABLE_V6[8..40],
        };
        let mut bytes = [0u8; 40];
        repr.emit(
            &mut IcmpPacket::new_unchecked(&mut bytes[..]),
            LOOPBACK,
            LOOPBACK,
        );
        let packet = IcmpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&packet, LOOPBACK, LOOPBACK),
            Err(Error::Truncated)
        );
    }

    /// A quote: an IPv4 or IPv6 header of the given version and some transport bytes.
    fn arb_quote(version: u8) -> impl Strategy<Value = Vec<u8>> {
        let header_len = if version == 4 { 20 } else { 40 };
        proptest::collection::vec(any::<u8>(), header_len..header_len + 40).prop_map(
            move |mut bytes| {
                bytes[0] = if version == 4 { 0x45 } else { 0x60 };
                bytes
            },
        )
    }

    proptest! {
        #[test]
        fn v4_emit_then_parse_is_identity(
            kind in 0..4u8,
            code: u8,
            ident: u16,
            seq_no: u16,
            data in proptest::collection::vec(any::<u8>(), 0..64),
            quote in arb_quote(4),
        ) {
            let repr = match kind {
                0 => IcmpRepr::EchoRequest { ident, seq_no, data: &data },
                1 => IcmpRepr::EchoReply { ident, seq_no, data: &data },
                2 => IcmpRepr::DstUnreachable { code, next_hop_mtu: seq_no, original: &quote },
                _ => IcmpRepr::TimeExceeded { code, original: &quote },
            };
            let mut bytes = vec![0xA5; repr.buffer_len()];
            repr.emit(&mut IcmpPacket::new_unchecked(&mut bytes[..]));
            let packet = IcmpPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(IcmpRepr::parse(&packet), Ok(repr));
        }

        #[test]
        fn v6_emit_then_parse_is_identity(
            kind in 0..5u8,
            code: u8,
            ident: u16,
            seq_no: u16,
            mtu: u32,
            data in proptest::collection::vec(any::<u8>(), 0..64),
            quote in arb_quote(6),
            src: [u8; 16],
            dst: [u8; 16],
        ) {
            let repr = match kind {
                0 => Icmpv6Repr::EchoRequest { ident, seq_no, data: &data },
                1 => Icmpv6Repr::EchoReply { ident, seq_no, data: &data },
                2 => Icmpv6Repr::DstUnreachable { code, original: &quote },
                3 => Icmpv6Repr::PacketTooBig { mtu, original: &quote },
                _ => Icmpv6Repr::TimeExceeded { code, original: &quote },
            };
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut bytes = vec![0xA5; repr.buffer_len()];
            repr.emit(&mut IcmpPacket::new_unchecked(&mut bytes[..]), src, dst);
            let packet = IcmpPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Icmpv6Repr::parse(&packet, src, dst), Ok(repr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..96),
            v4_type in prop_oneof![Just(0u8), Just(3), Just(8), Just(11), any::<u8>()],
            v6_type in prop_oneof![Just(1u8), Just(2), Just(3), Just(128), Just(129)],
        ) {
            // Give the parsers known types and right checksums so that they reach the bodies.
            let mut v4 = bytes.clone();
            let mut v6 = bytes.clone();
            if v4.len() >= HEADER_LEN {
                v4[0] = v4_type;
                v6[0] = v6_type;
                v4[1] = 0;
                IcmpPacket::new_unchecked(&mut v4[..]).fill_checksum();
                IcmpPacket::new_unchecked(&mut v6[..]).fill_checksum_v6(LOOPBACK, LOOPBACK);
            }
            for candidate in [&bytes, &v4] {
                if let Ok(packet) = IcmpPacket::new_checked(&candidate[..])
                    && let Ok(repr) = IcmpRepr::parse(&packet)
                {
                    let _ = repr.original().map(|original| original.ports());
                }
            }
            for candidate in [&bytes, &v6] {
                if let Ok(packet) = IcmpPacket::new_checked(&candidate[..])
                    && let Ok(repr) = Icmpv6Repr::parse(&packet, LOOPBACK, LOOPBACK)
                {
                    let _ = repr.original().map(|original| original.ports());
                }
            }
            let _ = OriginalIpv4::parse(&bytes);
            let _ = OriginalIpv6::parse(&bytes);
        }
    }
}
