//! TCP segments (RFC 9293) with the options erebus speaks: MSS, window scale and timestamps
//! (RFC 7323), SACK-permitted and SACK blocks (RFC 2018).
//!
//! [`TcpPacket`] is a zero-copy view over a segment; after [`TcpPacket::new_checked`] no
//! accessor can panic. [`TcpRepr`] is the parsed, validated form: [`TcpRepr::parse`] checks the
//! checksum over the pseudo-header, and [`TcpRepr::emit`] writes a segment, options, payload
//! and checksum into a buffer of exactly [`TcpRepr::buffer_len`] bytes. Nothing allocates.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use std::net::IpAddr;

use crate::checksum;
use crate::{Error, Result};

/// The IP protocol number of TCP.
const PROTOCOL_TCP: u8 = 6;

/// A TCP sequence number: 32-bit arithmetic modulo 2^32, compared per RFC 9293 section 3.4.
///
/// `a < b` means "`a` comes before `b`" when the two are less than 2^31 apart, which holds for
/// every pair a connection compares (windows are far smaller). This is not a total order, so
/// `SeqNumber` implements `PartialOrd` only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// The signed distance from `earlier` to `self`: positive when `self` comes after it.
    pub const fn distance_from(self, earlier: Self) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// The number of sequence numbers from `earlier` up to `self`, or 0 when `self` does not
    /// come after `earlier`.
    pub fn bytes_since(self, earlier: Self) -> usize {
        usize::try_from(self.distance_from(earlier).max(0)).unwrap_or(0)
    }

    /// The later of two sequence numbers.
    pub fn max(self, other: Self) -> Self {
        if self.distance_from(other) >= 0 {
            self
        } else {
            other
        }
    }

    /// The earlier of two sequence numbers.
    pub fn min(self, other: Self) -> Self {
        if self.distance_from(other) <= 0 {
            self
        } else {
            other
        }
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.distance_from(*other).cmp(&0))
    }
}

impl Add<usize> for SeqNumber {
    type Output = Self;

    /// Advances by `rhs` modulo 2^32 (only the low 32 bits of `rhs` matter).
    fn add(self, rhs: usize) -> Self {
        Self(self.0.wrapping_add(rhs as u32))
    }
}

impl AddAssign<usize> for SeqNumber {
    fn add_assign(&mut self, rhs: usize) {
        *self = *self + rhs;
    }
}

impl Sub<usize> for SeqNumber {
    type Output = Self;

    fn sub(self, rhs: usize) -> Self {
        Self(self.0.wrapping_sub(rhs as u32))
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

mod field {
    use core::ops::Range;

    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
    pub(super) const SEQ_NUM: Range<usize> = 4..8;
    pub(super) const ACK_NUM: Range<usize> = 8..12;
    pub(super) const DATA_OFFSET: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: Range<usize> = 14..16;
    pub(super) const CHECKSUM: Range<usize> = 16..18;
    pub(super) const URGENT: Range<usize> = 18..20;
}

/// The length of a TCP header without options.
pub const HEADER_LEN: usize = 20;
/// The longest TCP header: a data offset of 15 words.
pub const MAX_HEADER_LEN: usize = 60;
/// The most option bytes a header can carry.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;
/// The most SACK blocks a [`TcpRepr`] carries (three fit next to a timestamp option).
pub const MAX_SACK_BLOCKS: usize = 3;

/// The flag bits of the TCP header (byte 13).
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

/// Option kinds.
mod kind {
    pub(super) const END: u8 = 0;
    pub(super) const NOP: u8 = 1;
    pub(super) const MSS: u8 = 2;
    pub(super) const WINDOW_SCALE: u8 = 3;
    pub(super) const SACK_PERMITTED: u8 = 4;
    pub(super) const SACK: u8 = 5;
    pub(super) const TIMESTAMP: u8 = 8;
}

/// A zero-copy view of a TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checking anything; accessors may panic until
    /// [`check_len`](Self::check_len) has succeeded. Use it to emit into a buffer you sized
    /// with [`TcpRepr::buffer_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` and checks that it holds a whole header with its options.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] or [`Error::Malformed`], see [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header and the options its data offset claims.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] when the buffer is shorter than the header, [`Error::Malformed`]
    /// when the data offset is below five words.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len < header_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, range: core::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[range];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn read_u32(&self, range: core::ops::Range<usize>) -> u32 {
        let b = &self.buffer.as_ref()[range];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT)
    }

    /// The sequence number.
    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(self.read_u32(field::SEQ_NUM))
    }

    /// The acknowledgment number (meaningful only with the ACK flag).
    pub fn ack_number(&self) -> SeqNumber {
        SeqNumber(self.read_u32(field::ACK_NUM))
    }

    /// The header length in bytes, from the data offset field.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The flag byte (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the FIN flag is set.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// Whether the SYN flag is set.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// Whether the RST flag is set.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// Whether the PSH flag is set.
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// Whether the ACK flag is set.
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// Whether the URG flag is set.
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// The raw (unscaled) window field.
    pub fn window_len(&self) -> u16 {
        self.read_u16(field::WINDOW)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        self.read_u16(field::URGENT)
    }

    /// The option bytes between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The number of sequence numbers the segment occupies: its payload plus one for SYN and
    /// one for FIN.
    pub fn segment_len(&self) -> usize {
        self.payload().len() + usize::from(self.syn()) + usize::from(self.fin())
    }

    /// Whether the checksum verifies over the pseudo-header of `src` and `dst`.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let data = self.buffer.as_ref();
        let Ok(len) = u32::try_from(data.len()) else {
            return false;
        };
        let sum = checksum::pseudo_header(src, dst, PROTOCOL_TCP, len);
        checksum::finish(checksum::accumulate(sum, data)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn write_u16(&mut self, range: core::ops::Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

    fn write_u32(&mut self, range: core::ops::Range<usize>, value: u32) {
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

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, seq: SeqNumber) {
        self.write_u32(field::SEQ_NUM, seq.0);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, ack: SeqNumber) {
        self.write_u32(field::ACK_NUM, ack.0);
    }

    /// Sets the header length in bytes; it must be a multiple of four between 20 and 60.
    pub fn set_header_len(&mut self, len: usize) {
        let words = (len / 4).min(15) as u8;
        let byte = &mut self.buffer.as_mut()[field::DATA_OFFSET];
        *byte = (words << 4) | (*byte & 0x0f);
    }

    /// Sets the flag byte (see [`flags`]) and clears the reserved bits next to it.
    pub fn set_flags(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[field::DATA_OFFSET] &= 0xf0;
        data[field::FLAGS] = value;
    }

    /// Sets the raw window field.
    pub fn set_window_len(&mut self, window: u16) {
        self.write_u16(field::WINDOW, window);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.write_u16(field::CHECKSUM, checksum);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, urgent: u16) {
        self.write_u16(field::URGENT, urgent);
    }

    /// The option bytes, for writing; the header length must already be set.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..header_len]
    }

    /// The payload, for writing; the header length must already be set.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }

    /// Computes and stores the checksum over the pseudo-header of `src` and `dst`.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let sum = checksum::pseudo_header(src, dst, PROTOCOL_TCP, len);
        let value = checksum::finish(checksum::accumulate(sum, data));
        self.set_checksum(value);
    }
}

/// One SACK block: the peer holds the bytes `left..right` (RFC 2018).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SackBlock {
    /// The first sequence number of the block.
    pub left: SeqNumber,
    /// The sequence number just after the block.
    pub right: SeqNumber,
}

/// The timestamp option (RFC 7323 section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TcpTimestamp {
    /// The sender's clock when it sent the segment.
    pub tsval: u32,
    /// The most recent `tsval` the sender received (0 on a SYN).
    pub tsecr: u32,
}

/// One option as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of the option list.
    EndOfList,
    /// Padding.
    NoOperation,
    /// The largest segment the sender accepts.
    MaxSegmentSize(u16),
    /// The sender's window shift count.
    WindowScale(u8),
    /// The sender understands SACK.
    SackPermitted,
    /// Up to four SACK blocks; only the first [`MAX_SACK_BLOCKS`] are kept.
    SackRange([Option<SackBlock>; MAX_SACK_BLOCKS]),
    /// A timestamp.
    Timestamp(TcpTimestamp),
    /// An option this crate does not interpret.
    Unknown {
        /// The option kind.
        kind: u8,
        /// The option's data after kind and length.
        data: &'a [u8],
    },
}

impl<'a> TcpOption<'a> {
    /// Parses the first option of `buffer` and returns it with the bytes after it.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] when the option runs past the end of `buffer`, [`Error::Malformed`]
    /// when its length field is impossible or wrong for its kind.
    pub fn parse(buffer: &'a [u8]) -> Result<(&'a [u8], Self)> {
        let (&kind, rest) = buffer.split_first().ok_or(Error::Truncated)?;
        match kind {
            kind::END => return Ok((&[], Self::EndOfList)),
            kind::NOP => return Ok((rest, Self::NoOperation)),
            _ => {}
        }
        let (&len, _) = rest.split_first().ok_or(Error::Truncated)?;
        let len = usize::from(len);
        if len < 2 {
            return Err(Error::Malformed);
        }
        let whole = buffer.get(..len).ok_or(Error::Truncated)?;
        let data = &whole[2..];
        let rest = &buffer[len..];
        let option = match (kind, data.len()) {
            (kind::MSS, 2) => Self::MaxSegmentSize(u16::from_be_bytes([data[0], data[1]])),
            (kind::WINDOW_SCALE, 1) => Self::WindowScale(data[0]),
            (kind::SACK_PERMITTED, 0) => Self::SackPermitted,
            (kind::SACK, n) if n % 8 == 0 && (8..=32).contains(&n) => {
                let mut blocks = [None; MAX_SACK_BLOCKS];
                for (slot, chunk) in blocks.iter_mut().zip(data.chunks_exact(8)) {
                    *slot = Some(SackBlock {
                        left: SeqNumber(u32::from_be_bytes([
                            chunk[0], chunk[1], chunk[2], chunk[3],
                        ])),
                        right: SeqNumber(u32::from_be_bytes([
                            chunk[4], chunk[5], chunk[6], chunk[7],
                        ])),
                    });
                }
                Self::SackRange(blocks)
            }
            (kind::TIMESTAMP, 8) => Self::Timestamp(TcpTimestamp {
                tsval: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                tsecr: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            }),
            (kind::MSS | kind::WINDOW_SCALE | kind::SACK_PERMITTED | kind::SACK, _)
            | (kind::TIMESTAMP, _) => return Err(Error::Malformed),
            (kind, _) => Self::Unknown { kind, data },
        };
        Ok((rest, option))
    }
}

/// What a segment does besides carrying data and acknowledgments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TcpControl {
    /// Nothing.
    #[default]
    None,
    /// PSH: deliver promptly. Carries no sequence number.
    Psh,
    /// SYN: open, occupying one sequence number.
    Syn,
    /// FIN: close, occupying one sequence number after the payload.
    Fin,
    /// RST: reset the connection.
    Rst,
}

impl TcpControl {
    /// Sequence numbers the control occupies.
    pub const fn len(self) -> usize {
        match self {
            Self::Syn | Self::Fin => 1,
            Self::None | Self::Psh | Self::Rst => 0,
        }
    }

    /// Whether the control occupies no sequence number.
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// A parsed TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpRepr<'a> {
    /// The sender's port.
    pub src_port: u16,
    /// The receiver's port.
    pub dst_port: u16,
    /// SYN, FIN, RST, PSH or none.
    pub control: TcpControl,
    /// The sequence number of the first byte (or of the SYN).
    pub seq_number: SeqNumber,
    /// The acknowledgment number, present exactly when the ACK flag is set.
    pub ack_number: Option<SeqNumber>,
    /// The raw 16-bit window field; the receiver shifts it by the scale agreed on.
    pub window_len: u16,
    /// The window scale option (SYN only).
    pub window_scale: Option<u8>,
    /// The MSS option (SYN only).
    pub max_seg_size: Option<u16>,
    /// The SACK-permitted option (SYN only).
    pub sack_permitted: bool,
    /// SACK blocks, most recent first; unused slots are `None`.
    pub sack_ranges: [Option<SackBlock>; MAX_SACK_BLOCKS],
    /// The timestamp option.
    pub timestamp: Option<TcpTimestamp>,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Parses a segment that arrived from `src` to `dst`, verifying its checksum.
    ///
    /// # Errors
    ///
    /// [`Error::Checksum`] when the checksum fails, [`Error::Malformed`] for a zero port,
    /// an impossible flag combination or a bad option, [`Error::Truncated`] for a short
    /// segment or option.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &TcpPacket<&'a T>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        Self::parse_unverified(packet)
    }

    /// Parses a segment without checking its checksum (for a caller that already did).
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse), without [`Error::Checksum`].
    pub fn parse_unverified<T: AsRef<[u8]> + ?Sized>(packet: &TcpPacket<&'a T>) -> Result<Self> {
        packet.check_len()?;
        if packet.src_port() == 0 || packet.dst_port() == 0 {
            return Err(Error::Malformed);
        }
        let control = match (packet.syn(), packet.fin(), packet.rst()) {
            (false, false, false) if packet.psh() => TcpControl::Psh,
            (false, false, false) => TcpControl::None,
            (true, false, false) => TcpControl::Syn,
            (false, true, false) => TcpControl::Fin,
            (false, false, true) => TcpControl::Rst,
            _ => return Err(Error::Malformed),
        };
        let mut repr = Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            control,
            seq_number: packet.seq_number(),
            ack_number: packet.ack().then(|| packet.ack_number()),
            window_len: packet.window_len(),
            payload: packet_payload(packet),
            ..Self::default()
        };
        let mut options = packet_options(packet);
        while !options.is_empty() {
            let (rest, option) = TcpOption::parse(options)?;
            match option {
                TcpOption::EndOfList => break,
                TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
                TcpOption::MaxSegmentSize(mss) => repr.max_seg_size = Some(mss),
                // RFC 7323 section 2.3: a shift above 14 is treated as 14.
                TcpOption::WindowScale(shift) => repr.window_scale = Some(shift.min(14)),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::SackRange(blocks) => repr.sack_ranges = blocks,
                TcpOption::Timestamp(ts) => repr.timestamp = Some(ts),
            }
            options = rest;
        }
        Ok(repr)
    }

    /// The number of SACK blocks that are set and fit next to the other options.
    fn sack_blocks_emitted(&self) -> usize {
        let wanted = self.sack_ranges.iter().flatten().count();
        let room = MAX_OPTIONS_LEN.saturating_sub(self.fixed_options_len() + 4) / 8;
        wanted.min(room)
    }

    /// Option bytes other than SACK blocks, each padded to a multiple of four.
    fn fixed_options_len(&self) -> usize {
        let mut len = 0;
        if self.max_seg_size.is_some() {
            len += 4;
        }
        if self.window_scale.is_some() {
            len += 4;
        }
        match (self.sack_permitted, self.timestamp.is_some()) {
            (_, true) => len += 12,
            (true, false) => len += 4,
            (false, false) => {}
        }
        len
    }

    /// The length of the options as emitted (a multiple of four, at most 40).
    pub fn options_len(&self) -> usize {
        let blocks = self.sack_blocks_emitted();
        let sack = if blocks > 0 { 4 + 8 * blocks } else { 0 };
        (self.fixed_options_len() + sack).min(MAX_OPTIONS_LEN)
    }

    /// The header length as emitted.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len()
    }

    /// The length of the whole segment as emitted.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Sequence numbers the segment occupies.
    pub fn segment_len(&self) -> usize {
        self.payload.len() + self.control.len()
    }

    /// Writes the segment into `packet`, whose buffer must be exactly
    /// [`buffer_len`](Self::buffer_len) bytes, and fills the checksum for `src` to `dst`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut TcpPacket<&mut T>,
        src: IpAddr,
        dst: IpAddr,
    ) {
        self.emit_header(packet);
        packet.payload_mut()[..self.payload.len()].copy_from_slice(self.payload);
        packet.fill_checksum(src, dst);
    }

    /// Writes the header and options only, leaving the payload bytes (after
    /// [`header_len`](Self::header_len)) to the caller, who then calls
    /// [`TcpPacket::fill_checksum`].
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut TcpPacket<&mut T>,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number.unwrap_or_default());
        packet.set_header_len(self.header_len());
        let mut flag_bits = match self.control {
            TcpControl::None => 0,
            TcpControl::Psh => flags::PSH,
            TcpControl::Syn => flags::SYN,
            TcpControl::Fin => flags::FIN,
            TcpControl::Rst => flags::RST,
        };
        if self.ack_number.is_some() {
            flag_bits |= flags::ACK;
        }
        packet.set_flags(flag_bits);
        packet.set_window_len(self.window_len);
        packet.set_checksum(0);
        packet.set_urgent_at(0);

        let blocks = self.sack_blocks_emitted();
        let options = packet.options_mut();
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            options[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        if let Some(mss) = self.max_seg_size {
            let [hi, lo] = mss.to_be_bytes();
            put(&[kind::MSS, 4, hi, lo]);
        }
        if let Some(shift) = self.window_scale {
            put(&[kind::NOP, kind::WINDOW_SCALE, 3, shift]);
        }
        match (self.sack_permitted, self.timestamp) {
            (sack, Some(ts)) => {
                if sack {
                    put(&[kind::SACK_PERMITTED, 2]);
                } else {
                    put(&[kind::NOP, kind::NOP]);
                }
                put(&[kind::TIMESTAMP, 10]);
                put(&ts.tsval.to_be_bytes());
                put(&ts.tsecr.to_be_bytes());
            }
            (true, None) => put(&[kind::NOP, kind::NOP, kind::SACK_PERMITTED, 2]),
            (false, None) => {}
        }
        if blocks > 0 {
            put(&[kind::NOP, kind::NOP, kind::SACK, (2 + 8 * blocks) as u8]);
            for block in self.sack_ranges.iter().flatten().take(blocks) {
                put(&block.left.0.to_be_bytes());
                put(&block.right.0.to_be_bytes());
            }
        }
    }
}

fn packet_payload<'a, T: AsRef<[u8]> + ?Sized>(packet: &TcpPacket<&'a T>) -> &'a [u8] {
    let data: &'a [u8] = packet.buffer.as_ref();
    data.get(packet.header_len()..).unwrap_or(&[])
}

fn packet_options<'a, T: AsRef<[u8]> + ?Sized>(packet: &TcpPacket<&'a T>) -> &'a [u8] {
    let data: &'a [u8] = packet.buffer.as_ref();
    data.get(HEADER_LEN..packet.header_len()).unwrap_or(&[])
}

impl fmt::Display for TcpRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TCP {}>{}", self.src_port, self.dst_port)?;
        match self.control {
            TcpControl::Syn => f.write_str(" SYN")?,
            TcpControl::Fin => f.write_str(" FIN")?,
            TcpControl::Rst => f.write_str(" RST")?,
            TcpControl::Psh => f.write_str(" PSH")?,
            TcpControl::None => {}
        }
        write!(f, " seq={}", self.seq_number)?;
        if let Some(ack) = self.ack_number {
            write!(f, " ack={ack}")?;
        }
        write!(f, " win={} len={}", self.window_len, self.payload.len())?;
        if let Some(mss) = self.max_seg_size {
            write!(f, " mss={mss}")?;
        }
        for block in self.sack_ranges.iter().flatten() {
            write!(f, " sack={}..{}", block.left, block.right)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));

    /// A SYN from 49152 to 80 with MSS 1460, SACK-permitted, timestamp, NOP, window scale 7;
    /// the layout Linux uses. The checksum is filled in with the `checksum` module.
    fn syn_bytes() -> Vec<u8> {
        let mut bytes = vec![
            0xc0, 0x00, 0x00, 0x50, // ports
            0x01, 0x02, 0x03, 0x04, // seq
            0x00, 0x00, 0x00, 0x00, // ack
            0xa0, 0x02, 0xfa, 0xf0, // offset 10 words, SYN, window 64240
            0x00, 0x00, 0x00, 0x00, // checksum, urgent
            0x02, 0x04, 0x05, 0xb4, // MSS 1460
            0x04, 0x02, // SACK permitted
            0x08, 0x0a, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, // TS 4096, 0
            0x01, // NOP
            0x03, 0x03, 0x07, // WS 7
        ];
        let sum = checksum::pseudo_header(SRC, DST, 6, bytes.len() as u32);
        let value = checksum::finish(checksum::accumulate(sum, &bytes));
        bytes[16..18].copy_from_slice(&value.to_be_bytes());
        bytes
    }

    #[test]
    fn deconstruct_linux_syn() {
        let bytes = syn_bytes();
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.src_port(), 49152);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.seq_number(), SeqNumber(0x0102_0304));
        assert_eq!(packet.header_len(), 40);
        assert!(packet.syn() && !packet.ack() && !packet.fin());
        assert_eq!(packet.window_len(), 64240);
        assert_eq!(packet.segment_len(), 1);
        assert!(packet.verify_checksum(SRC, DST));
        assert!(!packet.verify_checksum(DST, DST));
        let repr = TcpRepr::parse(&packet, SRC, DST).unwrap();
        assert_eq!(repr.control, TcpControl::Syn);
        assert_eq!(repr.ack_number, None);
        assert_eq!(repr.max_seg_size, Some(1460));
        assert_eq!(repr.window_scale, Some(7));
        assert!(repr.sack_permitted);
        assert_eq!(
            repr.timestamp,
            Some(TcpTimestamp {
                tsval: 4096,
                tsecr: 0
            })
        );
        assert!(repr.payload.is_empty());
    }

    #[test]
    fn bad_checksum_is_rejected() {
        let mut bytes = syn_bytes();
        bytes[5] ^= 1;
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(TcpRepr::parse(&packet, SRC, DST), Err(Error::Checksum));
    }

    #[test]
    fn check_len_rejects_short_and_bad_offset() {
        assert_eq!(
            TcpPacket::new_checked(&[0u8; 19][..]).err(),
            Some(Error::Truncated)
        );
        let mut bytes = [0u8; 20];
        bytes[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&bytes[..]).err(),
            Some(Error::Malformed)
        );
        bytes[12] = 0x60;
        assert_eq!(
            TcpPacket::new_checked(&bytes[..]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn options_tolerate_nop_and_unknown_but_reject_truncation() {
        let (rest, option) = TcpOption::parse(&[1, 2, 4, 5, 0xb4]).unwrap();
        assert_eq!(option, TcpOption::NoOperation);
        assert_eq!(
            TcpOption::parse(rest).unwrap().1,
            TcpOption::MaxSegmentSize(1460)
        );
        let (rest, option) = TcpOption::parse(&[0x22, 4, 9, 9, 1]).unwrap();
        assert_eq!(
            option,
            TcpOption::Unknown {
                kind: 0x22,
                data: &[9, 9]
            }
        );
        assert_eq!(rest, &[1]);
        assert_eq!(TcpOption::parse(&[2, 4, 5]), Err(Error::Truncated));
        assert_eq!(TcpOption::parse(&[2]), Err(Error::Truncated));
        assert_eq!(TcpOption::parse(&[0x22, 1]), Err(Error::Malformed));
        assert_eq!(TcpOption::parse(&[2, 5, 5, 0xb4, 0]), Err(Error::Malformed));
        assert_eq!(
            TcpOption::parse(&[5, 9, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::Malformed)
        );
        assert_eq!(TcpOption::parse(&[8, 10, 0, 0]), Err(Error::Truncated));
    }

    #[test]
    fn four_sack_blocks_keep_the_first_three() {
        let mut option = vec![5u8, 34];
        for i in 0..4u32 {
            option.extend_from_slice(&(i * 100).to_be_bytes());
            option.extend_from_slice(&(i * 100 + 50).to_be_bytes());
        }
        let (_, parsed) = TcpOption::parse(&option).unwrap();
        let TcpOption::SackRange(blocks) = parsed else {
            panic!("not a SACK option: {parsed:?}");
        };
        assert_eq!(
            blocks[2],
            Some(SackBlock {
                left: SeqNumber(200),
                right: SeqNumber(250)
            })
        );
    }

    #[test]
    fn emit_matches_reference_layout_for_data_with_sack() {
        let payload = b"hello";
        let repr = TcpRepr {
            src_port: 80,
            dst_port: 49152,
            control: TcpControl::Psh,
            seq_number: SeqNumber(10),
            ack_number: Some(SeqNumber(20)),
            window_len: 512,
            timestamp: Some(TcpTimestamp { tsval: 1, tsecr: 2 }),
            sack_ranges: [
                Some(SackBlock {
                    left: SeqNumber(30),
                    right: SeqNumber(40),
                }),
                None,
                None,
            ],
            payload,
            ..TcpRepr::default()
        };
        assert_eq!(repr.header_len(), 20 + 12 + 12);
        let mut buf = vec![0xffu8; repr.buffer_len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), SRC, DST);
        assert_eq!(&buf[12..14], &[0xb0, 0x18]);
        assert_eq!(
            &buf[20..44],
            &[
                1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 10, 0, 0, 0, 30, 0, 0, 0, 40
            ]
        );
        assert_eq!(&buf[44..], payload);
        let packet = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(TcpRepr::parse(&packet, SRC, DST).unwrap(), repr);
    }

    #[test]
    fn sack_blocks_are_cut_to_fit_forty_bytes() {
        let block = Some(SackBlock {
            left: SeqNumber(1),
            right: SeqNumber(2),
        });
        let repr = TcpRepr {
            src_port: 1,
            dst_port: 2,
            max_seg_size: Some(1000),
            window_scale: Some(3),
            timestamp: Some(TcpTimestamp::default()),
            sack_ranges: [block; 3],
            ..TcpRepr::default()
        };
        assert!(repr.header_len() <= MAX_HEADER_LEN);
        assert_eq!(repr.sack_blocks_emitted(), 2);
    }

    #[test]
    fn seq_number_wraps() {
        let a = SeqNumber(u32::MAX - 1);
        let b = a + 4;
        assert_eq!(b, SeqNumber(2));
        assert!(a < b);
        assert!(b > a);
        assert_eq!(b.distance_from(a), 4);
        assert_eq!(a.distance_from(b), -4);
        assert_eq!(b.bytes_since(a), 4);
        assert_eq!(a.bytes_since(b), 0);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
        assert_eq!(b - 4, a);
    }

    fn arb_block() -> impl Strategy<Value = Option<SackBlock>> {
        proptest::option::of((any::<u32>(), any::<u32>()).prop_map(|(l, r)| SackBlock {
            left: SeqNumber(l),
            right: SeqNumber(r),
        }))
    }

    prop_compose! {
        fn arb_repr()(
            src_port in 1u16..,
            dst_port in 1u16..,
            control in prop_oneof![
                Just(TcpControl::None), Just(TcpControl::Psh), Just(TcpControl::Syn),
                Just(TcpControl::Fin), Just(TcpControl::Rst),
            ],
            seq in any::<u32>(),
            ack in proptest::option::of(any::<u32>()),
            window_len in any::<u16>(),
            window_scale in proptest::option::of(0u8..=14),
            max_seg_size in proptest::option::of(any::<u16>()),
            sack_permitted in any::<bool>(),
            blocks in proptest::collection::vec(arb_block(), 3),
            timestamp in proptest::option::of((any::<u32>(), any::<u32>())),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) -> (TcpRepr<'static>, Vec<u8>) {
            // Blocks are emitted in order and the unset ones skipped, so the parse of an emitted
            // repr has its set blocks first and only as many as fit.
            let mut sack_ranges = [None; MAX_SACK_BLOCKS];
            for (slot, block) in sack_ranges.iter_mut().zip(blocks.into_iter().flatten()) {
                *slot = Some(block);
            }
            let repr = TcpRepr {
                src_port, dst_port, control,
                seq_number: SeqNumber(seq),
                ack_number: ack.map(SeqNumber),
                window_len, window_scale, max_seg_size, sack_permitted, sack_ranges,
                timestamp: timestamp.map(|(tsval, tsecr)| TcpTimestamp { tsval, tsecr }),
                payload: &[],
            };
            (repr, payload)
        }
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_identity((repr, payload) in arb_repr()) {
            let mut repr = TcpRepr { payload: &payload, ..repr };
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), SRC, DST);
            let packet = TcpPacket::new_checked(&buf[..]).unwrap();
            let parsed = TcpRepr::parse(&packet, SRC, DST).unwrap();
            let kept = repr.sack_blocks_emitted();
            for slot in repr.sack_ranges.iter_mut().skip(kept) {
                *slot = None;
            }
            prop_assert_eq!(parsed, repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(packet) = TcpPacket::new_checked(&bytes[..]) {
                let _ = packet.segment_len();
                let _ = TcpRepr::parse_unverified(&packet);
                let _ = TcpRepr::parse(&packet, SRC, DST);
            }
        }

        #[test]
        fn arbitrary_options_never_panic(
            header in proptest::collection::vec(any::<u8>(), 20),
            options in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut bytes = header;
            let words = (20 + options.len()).div_ceil(4);
            bytes[12] = (words as u8) << 4;
            bytes.extend_from_slice(&options);
            bytes.resize(words * 4, 0);
            let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
            let _ = TcpRepr::parse_unverified(&packet);
        }
    }
}
