//! DNS messages (RFC 1035) as a stub resolver needs them: a query for one name and type, and
//! the question and answer sections of the response.
//!
//! [`emit_query`] writes a query into a caller's buffer. [`Message::parse`] validates a
//! response once, so iterating over its [`Question`]s and answer [`Record`]s afterwards cannot
//! fail; [`Message::canonical_name`] and [`Message::addresses_of`] follow a CNAME chain to the
//! addresses. Names stay where they are in the message ([`Name`] borrows it), compression
//! pointers included: nothing is copied or allocated.
//!
//! The framing of DNS over TCP (a two-byte length before each message) is left to the caller,
//! and so are the authority and additional sections, which a stub resolver does not need.
//!
//! Hostile input cannot make the parser loop: every compression pointer must point before the
//! start of the labels it was reached from, so each jump goes strictly backwards.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Error, Result};

/// The length of the message header.
pub const HEADER_LEN: usize = 12;

/// The longest name in text form, without the trailing dot (RFC 1035 section 2.3.4, which
/// allows 255 bytes on the wire).
pub const MAX_NAME_LEN: usize = 253;

/// The longest label.
pub const MAX_LABEL_LEN: usize = 63;

/// The longest name on the wire, length bytes and the root label included.
const MAX_WIRE_NAME_LEN: usize = 255;

/// How many compression pointers one name may follow. A name has at most 127 labels, so a
/// sensible encoder needs fewer; the cap bounds the work a hostile message can cause.
const MAX_POINTER_JUMPS: usize = 128;

/// How many CNAME records [`Message::canonical_name`] follows before giving up.
pub const MAX_CNAME_CHAIN: usize = 16;

/// The Internet class, the only one a stub resolver asks for.
pub const CLASS_IN: u16 = 1;

/// The opcode of a standard query.
pub const OPCODE_QUERY: u8 = 0;

/// Response codes (RFC 1035 section 4.1.1).
pub mod rcode {
    /// No error.
    pub const NO_ERROR: u8 = 0;
    /// The server could not interpret the query.
    pub const FORMAT_ERROR: u8 = 1;
    /// The server failed to answer.
    pub const SERVER_FAILURE: u8 = 2;
    /// The name does not exist (NXDOMAIN).
    pub const NAME_ERROR: u8 = 3;
    /// The server does not support this kind of query.
    pub const NOT_IMPLEMENTED: u8 = 4;
    /// The server refuses to answer.
    pub const REFUSED: u8 = 5;
}

/// Byte positions of the header fields.
mod field {
    use core::ops::Range;

    pub(super) const ID: Range<usize> = 0..2;
    pub(super) const FLAGS: Range<usize> = 2..4;
    pub(super) const QDCOUNT: Range<usize> = 4..6;
    pub(super) const ANCOUNT: Range<usize> = 6..8;
    pub(super) const NSCOUNT: Range<usize> = 8..10;
    pub(super) const ARCOUNT: Range<usize> = 10..12;
}

/// Bits of the flags word.
mod flag {
    pub(super) const RESPONSE: u16 = 0x8000;
    pub(super) const OPCODE_SHIFT: u16 = 11;
    pub(super) const OPCODE_MASK: u16 = 0x7800;
    pub(super) const AUTHORITATIVE: u16 = 0x0400;
    pub(super) const TRUNCATED: u16 = 0x0200;
    pub(super) const RECURSION_DESIRED: u16 = 0x0100;
    pub(super) const RECURSION_AVAILABLE: u16 = 0x0080;
    pub(super) const RCODE_MASK: u16 = 0x000F;
}

/// A record type (RFC 1035 section 3.2.2, RFC 3596).
///
/// Types this crate reads have their own variant; [`From<u16>`] never builds `Other` for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordType {
    /// An IPv4 address (1).
    A,
    /// An alias: the canonical name of the owner (5).
    Cname,
    /// An IPv6 address (28).
    Aaaa,
    /// Any other type.
    Other(u16),
}

impl From<u16> for RecordType {
    fn from(value: u16) -> Self {
        match value {
            1 => Self::A,
            5 => Self::Cname,
            28 => Self::Aaaa,
            other => Self::Other(other),
        }
    }
}

impl From<RecordType> for u16 {
    fn from(value: RecordType) -> Self {
        match value {
            RecordType::A => 1,
            RecordType::Cname => 5,
            RecordType::Aaaa => 28,
            RecordType::Other(other) => other,
        }
    }
}

/// A read/write view of a DNS message header in a buffer.
///
/// Build it with [`DnsPacket::new_checked`] for untrusted bytes: after that no accessor can
/// panic. The sections after the header are read through [`Message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DnsPacket<T> {
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

    /// Checks that the buffer holds the 12-byte header.
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

    /// The identifier that matches a response to its query.
    pub fn id(&self) -> u16 {
        self.read_u16(field::ID)
    }

    /// The whole flags word.
    pub fn flags(&self) -> u16 {
        self.read_u16(field::FLAGS)
    }

    /// Whether the message is a response (QR).
    pub fn is_response(&self) -> bool {
        self.flags() & flag::RESPONSE != 0
    }

    /// The kind of query; [`OPCODE_QUERY`] for a standard one.
    pub fn opcode(&self) -> u8 {
        ((self.flags() & flag::OPCODE_MASK) >> flag::OPCODE_SHIFT) as u8
    }

    /// Whether the answer comes from an authority for the name (AA).
    pub fn is_authoritative(&self) -> bool {
        self.flags() & flag::AUTHORITATIVE != 0
    }

    /// Whether the message was cut to fit the transport (TC): ask again over TCP.
    pub fn is_truncated(&self) -> bool {
        self.flags() & flag::TRUNCATED != 0
    }

    /// Whether the query asks the server to recurse (RD).
    pub fn recursion_desired(&self) -> bool {
        self.flags() & flag::RECURSION_DESIRED != 0
    }

    /// Whether the server offers recursion (RA).
    pub fn recursion_available(&self) -> bool {
        self.flags() & flag::RECURSION_AVAILABLE != 0
    }

    /// The response code; see [`rcode`].
    pub fn rcode(&self) -> u8 {
        (self.flags() & flag::RCODE_MASK) as u8
    }

    /// The number of questions.
    pub fn question_count(&self) -> u16 {
        self.read_u16(field::QDCOUNT)
    }

    /// The number of answer records.
    pub fn answer_count(&self) -> u16 {
        self.read_u16(field::ANCOUNT)
    }

    /// The number of authority records.
    pub fn authority_count(&self) -> u16 {
        self.read_u16(field::NSCOUNT)
    }

    /// The number of additional records.
    pub fn additional_count(&self) -> u16 {
        self.read_u16(field::ARCOUNT)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DnsPacket<T> {
    fn write_u16(&mut self, range: core::ops::Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

    fn set_flag(&mut self, bit: u16, value: bool) {
        let flags = self.flags() & !bit;
        self.set_flags(if value { flags | bit } else { flags });
    }

    /// Sets the identifier.
    pub fn set_id(&mut self, id: u16) {
        self.write_u16(field::ID, id);
    }

    /// Sets the whole flags word.
    pub fn set_flags(&mut self, flags: u16) {
        self.write_u16(field::FLAGS, flags);
    }

    /// Marks the message as a response or a query.
    pub fn set_response(&mut self, value: bool) {
        self.set_flag(flag::RESPONSE, value);
    }

    /// Sets the opcode (four bits).
    pub fn set_opcode(&mut self, opcode: u8) {
        let flags = self.flags() & !flag::OPCODE_MASK;
        let bits = (u16::from(opcode) << flag::OPCODE_SHIFT) & flag::OPCODE_MASK;
        self.set_flags(flags | bits);
    }

    /// Sets the authoritative-answer flag.
    pub fn set_authoritative(&mut self, value: bool) {
        self.set_flag(flag::AUTHORITATIVE, value);
    }

    /// Sets the truncation flag.
    pub fn set_truncated(&mut self, value: bool) {
        self.set_flag(flag::TRUNCATED, value);
    }

    /// Sets the recursion-desired flag.
    pub fn set_recursion_desired(&mut self, value: bool) {
        self.set_flag(flag::RECURSION_DESIRED, value);
    }

    /// Sets the recursion-available flag.
    pub fn set_recursion_available(&mut self, value: bool) {
        self.set_flag(flag::RECURSION_AVAILABLE, value);
    }

    /// Sets the response code (four bits).
    pub fn set_rcode(&mut self, rcode: u8) {
        let flags = self.flags() & !flag::RCODE_MASK;
        self.set_flags(flags | (u16::from(rcode) & flag::RCODE_MASK));
    }

    /// Sets the number of questions.
    pub fn set_question_count(&mut self, count: u16) {
        self.write_u16(field::QDCOUNT, count);
    }

    /// Sets the number of answer records.
    pub fn set_answer_count(&mut self, count: u16) {
        self.write_u16(field::ANCOUNT, count);
    }

    /// Sets the number of authority records.
    pub fn set_authority_count(&mut self, count: u16) {
        self.write_u16(field::NSCOUNT, count);
    }

    /// Sets the number of additional records.
    pub fn set_additional_count(&mut self, count: u16) {
        self.write_u16(field::ARCOUNT, count);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for DnsPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The labels of a name given as text, after validation: "www.example.com" or
/// "www.example.com." (the trailing dot marks the root and is optional). Each label holds
/// 1 to 63 printable ASCII characters, and the name at most 253. Names in other scripts must
/// be converted to their ASCII (punycode) form first. Backslash escapes are not interpreted.
fn text_labels(name: &str) -> Result<core::str::Split<'_, char>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::Malformed);
    }
    let valid_label = |label: &str| {
        (1..=MAX_LABEL_LEN).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_graphic())
    };
    if !name.split('.').all(valid_label) {
        return Err(Error::Malformed);
    }
    Ok(name.split('.'))
}

/// The length of a query for `name`, or [`Error::Malformed`] if the name is not valid (see
/// [`emit_query`]).
pub fn query_len(name: &str) -> Result<usize> {
    let labels = text_labels(name)?;
    let name_len: usize = labels.map(|label| label.len() + 1).sum::<usize>() + 1;
    // The question's type and class follow the name.
    Ok(HEADER_LEN + name_len + 4)
}

/// Writes a standard query for one name and record type (class IN) into the start of `buf`
/// and returns its length.
///
/// The name is text such as "intranet.corp" or "intranet.corp.": labels of 1 to 63 printable
/// ASCII characters separated by dots, at most 253 characters without the optional trailing
/// dot. Anything else is [`Error::Malformed`]; a buffer shorter than [`query_len`] is
/// [`Error::Truncated`]. Over TCP, the caller puts the two-byte length in front.
pub fn emit_query(
    buf: &mut [u8],
    id: u16,
    name: &str,
    qtype: RecordType,
    recursion_desired: bool,
) -> Result<usize> {
    let len = query_len(name)?;
    let message = buf.get_mut(..len).ok_or(Error::Truncated)?;
    message.fill(0);
    let mut header = DnsPacket::new_unchecked(&mut *message);
    header.set_id(id);
    header.set_opcode(OPCODE_QUERY);
    header.set_recursion_desired(recursion_desired);
    header.set_question_count(1);

    let mut pos = HEADER_LEN;
    for label in text_labels(name)? {
        // The label length fits a byte: text_labels checked it against MAX_LABEL_LEN.
        message[pos] = label.len() as u8;
        message[pos + 1..pos + 1 + label.len()].copy_from_slice(label.as_bytes());
        pos += 1 + label.len();
    }
    // The root label, already zero, then type and class.
    pos += 1;
    message[pos..pos + 2].copy_from_slice(&u16::from(qtype).to_be_bytes());
    message[pos + 2..pos + 4].copy_from_slice(&CLASS_IN.to_be_bytes());
    Ok(len)
}

/// A domain name inside a message, possibly compressed, validated when the message was
/// parsed.
///
/// Names compare equal (`==`, [`Name::eq_text`]) ignoring ASCII case, as DNS does. `Display`
/// writes the dotted text form with a trailing dot, escaping dots and unprintable bytes in
/// labels the way zone files do (`\.`, `\DDD`).
#[derive(Clone, Copy)]
pub struct Name<'a> {
    message: &'a [u8],
    start: usize,
}

/// What follows a length byte: a label of that length, the end of the name, or a pointer.
enum LabelHead {
    Label(usize),
    End,
    Pointer(usize),
}

/// Reads the length byte (and pointer byte) at `pos`.
fn label_head(message: &[u8], pos: usize) -> Result<LabelHead> {
    let first = *message.get(pos).ok_or(Error::Truncated)?;
    match first & 0xC0 {
        0x00 if first == 0 => Ok(LabelHead::End),
        0x00 => Ok(LabelHead::Label(usize::from(first))),
        0xC0 => {
            let second = *message.get(pos + 1).ok_or(Error::Truncated)?;
            Ok(LabelHead::Pointer(usize::from(u16::from_be_bytes([
                first & 0x3F,
                second,
            ]))))
        }
        // 0x40 (extended label types, retired by RFC 6891) and 0x80 are not in use.
        _ => Err(Error::Malformed),
    }
}

impl<'a> Name<'a> {
    /// Validates the name at `start` and returns it with the position just after its bytes in
    /// place (after the first pointer, if any).
    ///
    /// A pointer must point into the message body before the labels that led to it: that
    /// rules out loops (each jump lands strictly lower) and matches what encoders do, which is
    /// to point at names written earlier. At most [`MAX_POINTER_JUMPS`] are followed.
    fn parse(message: &'a [u8], start: usize) -> Result<(Self, usize)> {
        let mut pos = start;
        let mut lowest_start = start;
        let mut jumps = 0;
        let mut end = None;
        let mut wire_len = 0;
        loop {
            match label_head(message, pos)? {
                LabelHead::End => {
                    let name = Self { message, start };
                    return Ok((name, end.unwrap_or(pos + 1)));
                }
                LabelHead::Label(len) => {
                    wire_len += 1 + len;
                    // The root label's byte is still to come.
                    if wire_len + 1 > MAX_WIRE_NAME_LEN {
                        return Err(Error::Malformed);
                    }
                    if message.len() < pos + 1 + len {
                        return Err(Error::Truncated);
                    }
                    pos += 1 + len;
                }
                LabelHead::Pointer(target) => {
                    jumps += 1;
                    if target < HEADER_LEN || target >= lowest_start || jumps > MAX_POINTER_JUMPS {
                        return Err(Error::Malformed);
                    }
                    end.get_or_insert(pos + 2);
                    lowest_start = target;
                    pos = target;
                }
            }
        }
    }

    /// Finds the end in place of a name that [`Name::parse`] has already validated, without
    /// following pointers: iterating over a parsed message then costs no more than its length.
    fn skip(message: &'a [u8], start: usize) -> Result<(Self, usize)> {
        let mut pos = start;
        loop {
            match label_head(message, pos)? {
                LabelHead::End => return Ok((Self { message, start }, pos + 1)),
                LabelHead::Pointer(_) => return Ok((Self { message, start }, pos + 2)),
                LabelHead::Label(len) => pos += 1 + len,
            }
        }
    }

    /// The labels, from the leftmost, without the empty root label.
    pub fn labels(&self) -> Labels<'a> {
        Labels {
            message: self.message,
            pos: self.start,
            steps_left: MAX_WIRE_NAME_LEN + MAX_POINTER_JUMPS,
        }
    }

    /// Whether this is the root name (no labels).
    pub fn is_root(&self) -> bool {
        self.labels().next().is_none()
    }

    /// Whether the name equals `text` ("www.example.com", with or without the trailing dot),
    /// ignoring ASCII case. Backslash escapes in `text` are not interpreted.
    pub fn eq_text(&self, text: &str) -> bool {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return self.is_root();
        }
        let mut ours = self.labels();
        for theirs in text.split('.') {
            match ours.next() {
                Some(label) if label.eq_ignore_ascii_case(theirs.as_bytes()) => {}
                _ => return false,
            }
        }
        ours.next().is_none()
    }
}

impl PartialEq for Name<'_> {
    fn eq(&self, other: &Self) -> bool {
        let mut theirs = other.labels();
        for label in self.labels() {
            match theirs.next() {
                Some(other_label) if label.eq_ignore_ascii_case(other_label) => {}
                _ => return false,
            }
        }
        theirs.next().is_none()
    }
}

impl Eq for Name<'_> {}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for label in self.labels() {
            any = true;
            for &byte in label {
                match byte {
                    b'.' | b'\\' => write!(f, "\\{}", char::from(byte))?,
                    _ if byte.is_ascii_graphic() => write!(f, "{}", char::from(byte))?,
                    _ => write!(f, "\\{byte:03}")?,
                }
            }
            f.write_str(".")?;
        }
        if !any {
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// The labels of a [`Name`], following compression pointers.
#[derive(Clone, Debug)]
pub struct Labels<'a> {
    message: &'a [u8],
    pos: usize,
    /// A bound on the walk. [`Name::parse`] already proved it ends; this keeps the iterator
    /// finite without relying on that.
    steps_left: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            self.steps_left = self.steps_left.checked_sub(1)?;
            match label_head(self.message, self.pos).ok()? {
                LabelHead::End => {
                    self.steps_left = 0;
                    return None;
                }
                LabelHead::Label(len) => {
                    let label = self.message.get(self.pos + 1..self.pos + 1 + len)?;
                    self.pos += 1 + len;
                    return Some(label);
                }
                LabelHead::Pointer(target) => self.pos = target,
            }
        }
    }
}

/// Reads a name at a position: [`Name::parse`] or [`Name::skip`].
type NameReader<'a> = fn(&'a [u8], usize) -> Result<(Name<'a>, usize)>;

/// A question: the name and type asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question<'a> {
    /// The name asked about.
    pub name: Name<'a>,
    /// The record type asked for.
    pub qtype: RecordType,
    /// The class; [`CLASS_IN`] in practice.
    pub qclass: u16,
}

impl<'a> Question<'a> {
    /// Reads the question at `pos` with `read_name` ([`Name::parse`] to validate,
    /// [`Name::skip`] once validated); returns it and the position after it.
    fn parse(message: &'a [u8], pos: usize, read_name: NameReader<'a>) -> Result<(Self, usize)> {
        let (name, end) = read_name(message, pos)?;
        let fixed = message.get(end..end + 4).ok_or(Error::Truncated)?;
        let question = Self {
            name,
            qtype: RecordType::from(u16::from_be_bytes([fixed[0], fixed[1]])),
            qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        };
        Ok((question, end + 4))
    }
}

/// The data of a record, typed for the types a stub resolver follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordData<'a> {
    /// An IPv4 address (type A, class IN).
    A(Ipv4Addr),
    /// An IPv6 address (type AAAA, class IN).
    Aaaa(Ipv6Addr),
    /// The canonical name of the owner (type CNAME, class IN).
    Cname(Name<'a>),
    /// Any other record; the raw data is in [`Record::rdata`].
    Other,
}

/// A resource record from the answer section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The owner name.
    pub name: Name<'a>,
    /// The record type.
    pub rtype: RecordType,
    /// The class; [`CLASS_IN`] in practice.
    pub class: u16,
    /// How long the record may be cached, in seconds. Values with the top bit set count as
    /// zero (RFC 2181 section 8).
    pub ttl: u32,
    /// The raw record data (names in it may point elsewhere in the message).
    pub rdata: &'a [u8],
    /// The record data, typed.
    pub data: RecordData<'a>,
}

impl<'a> Record<'a> {
    /// Reads the record at `pos` with `read_name` ([`Name::parse`] to validate, [`Name::skip`]
    /// once validated); returns it and the position after it. The data of A, AAAA and CNAME
    /// records in class IN is checked.
    fn parse(message: &'a [u8], pos: usize, read_name: NameReader<'a>) -> Result<(Self, usize)> {
        let (name, end) = read_name(message, pos)?;
        let fixed = message.get(end..end + 10).ok_or(Error::Truncated)?;
        let rtype = RecordType::from(u16::from_be_bytes([fixed[0], fixed[1]]));
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let raw_ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdata_len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata_start = end + 10;
        let rdata_end = rdata_start + rdata_len;
        let rdata = message
            .get(rdata_start..rdata_end)
            .ok_or(Error::Truncated)?;
        let data = match (rtype, class) {
            (RecordType::A, CLASS_IN) => {
                let octets: [u8; 4] = rdata.try_into().map_err(|_| Error::Malformed)?;
                RecordData::A(Ipv4Addr::from(octets))
            }
            (RecordType::Aaaa, CLASS_IN) => {
                let octets: [u8; 16] = rdata.try_into().map_err(|_| Error::Malformed)?;
                RecordData::Aaaa(Ipv6Addr::from(octets))
            }
            (RecordType::Cname, CLASS_IN) => {
                let (target, target_end) = read_name(message, rdata_start)?;
                if target_end != rdata_end {
                    return Err(Error::Malformed);
                }
                RecordData::Cname(target)
            }
            _ => RecordData::Other,
        };
        let record = Self {
            name,
            rtype,
            class,
            ttl: if raw_ttl > i32::MAX as u32 {
                0
            } else {
                raw_ttl
            },
            rdata,
            data,
        };
        Ok((record, rdata_end))
    }
}

/// A parsed DNS message: its header, and its question and answer sections, validated.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    header: DnsPacket<&'a [u8]>,
    answers_start: usize,
}

impl<'a> Message<'a> {
    /// Validates the header, every question and every answer record. The authority and
    /// additional sections are not read. Any error in the parts read fails the whole message.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let header = DnsPacket::new_checked(bytes)?;
        // Each item takes at least one byte, so these loops end within the message even when
        // the counts are hostile.
        let mut pos = HEADER_LEN;
        for _ in 0..header.question_count() {
            pos = Question::parse(bytes, pos, Name::parse)?.1;
        }
        let answers_start = pos;
        for _ in 0..header.answer_count() {
            pos = Record::parse(bytes, pos, Name::parse)?.1;
        }
        Ok(Self {
            header,
            answers_start,
        })
    }

    /// The header: identifier, flags and counts.
    pub fn header(&self) -> DnsPacket<&'a [u8]> {
        self.header
    }

    /// The questions.
    pub fn questions(&self) -> Questions<'a> {
        Questions {
            message: self.header.into_inner(),
            pos: HEADER_LEN,
            remaining: self.header.question_count(),
        }
    }

    /// The records of the answer section.
    pub fn answers(&self) -> Answers<'a> {
        Answers {
            message: self.header.into_inner(),
            pos: self.answers_start,
            remaining: self.header.answer_count(),
        }
    }

    /// Whether this is the response to the query [`emit_query`] wrote with `id`, `name` and
    /// `qtype`: a response, to a standard query, with that identifier and exactly that one
    /// question (name compared ignoring case, class IN). The response code is not checked.
    pub fn is_response_to(&self, id: u16, name: &str, qtype: RecordType) -> bool {
        let header = self.header;
        let mut questions = self.questions();
        let matches_question = questions
            .next()
            .is_some_and(|q| q.qtype == qtype && q.qclass == CLASS_IN && q.name.eq_text(name));
        header.is_response()
            && header.opcode() == OPCODE_QUERY
            && header.id() == id
            && header.question_count() == 1
            && matches_question
    }

    /// Follows CNAME records in the answer section from `name` to the name that owns the
    /// addresses (which is `name` itself when there is no CNAME for it).
    ///
    /// A chain longer than [`MAX_CNAME_CHAIN`] (a loop, say) is [`Error::Malformed`]. Each
    /// step scans the answer section once, so the work is bounded by the chain limit times
    /// the message length (times the name length for the comparisons).
    pub fn canonical_name(&self, name: Name<'a>) -> Result<Name<'a>> {
        let mut current = name;
        for _ in 0..=MAX_CNAME_CHAIN {
            let alias = self.answers().find_map(|record| match record.data {
                RecordData::Cname(target) if record.name == current => Some(target),
                _ => None,
            });
            match alias {
                Some(target) => current = target,
                None => return Ok(current),
            }
        }
        Err(Error::Malformed)
    }

    /// The A and AAAA records of `name` in the answer section, with their TTLs.
    pub fn addresses_of(&self, name: Name<'a>) -> impl Iterator<Item = (IpAddr, u32)> + 'a {
        self.answers().filter_map(move |record| {
            let addr = match record.data {
                RecordData::A(addr) => IpAddr::V4(addr),
                RecordData::Aaaa(addr) => IpAddr::V6(addr),
                RecordData::Cname(_) | RecordData::Other => return None,
            };
            (record.name == name).then_some((addr, record.ttl))
        })
    }
}

/// The questions of a [`Message`].
#[derive(Clone, Debug)]
pub struct Questions<'a> {
    message: &'a [u8],
    pos: usize,
    remaining: u16,
}

impl<'a> Iterator for Questions<'a> {
    type Item = Question<'a>;

    fn next(&mut self) -> Option<Question<'a>> {
        self.remaining = self.remaining.checked_sub(1)?;
        // Message::parse validated every question, so this cannot fail; stop if it did.
        let Ok((question, next)) = Question::parse(self.message, self.pos, Name::skip) else {
            self.remaining = 0;
            return None;
        };
        self.pos = next;
        Some(question)
    }
}

/// The answer records of a [`Message`].
#[derive(Clone, Debug)]
pub struct Answers<'a> {
    message: &'a [u8],
    pos: usize,
    remaining: u16,
}

impl<'a> Iterator for Answers<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        self.remaining = self.remaining.checked_sub(1)?;
        // Message::parse validated every record, so this cannot fail; stop if it did.
        let Ok((record, next)) = Record::parse(self.message, self.pos, Name::skip) else {
            self.remaining = 0;
            return None;
        };
        self.pos = next;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Queries and the answers of a dnsmasq 2.90 server on the loopback interface, set up with
    // www.erebus.test -> edge.erebus.test -> origin.cdn.test (CNAMEs) and origin.cdn.test
    // A 192.0.2.10, A 192.0.2.11, AAAA 2001:db8::10. It compresses owner names but writes
    // CNAME targets out in full.

    /// The query for www.erebus.test, type A, id 0x5eb1, recursion desired.
    static QUERY_A: [u8; 33] = [
        0x5e, 0xb1, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x77, 0x77,
        0x77, 0x06, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00,
        0x01, 0x00, 0x01,
    ];

    /// The response: two CNAMEs and two A records.
    static RESPONSE_A: [u8; 124] = [
        0x5e, 0xb1, 0x85, 0x80, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x77, 0x77,
        0x77, 0x06, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00,
        0x01, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12,
        0x04, 0x65, 0x64, 0x67, 0x65, 0x06, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x04, 0x74, 0x65,
        0x73, 0x74, 0x00, 0xc0, 0x2d, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11,
        0x06, 0x6f, 0x72, 0x69, 0x67, 0x69, 0x6e, 0x03, 0x63, 0x64, 0x6e, 0x04, 0x74, 0x65, 0x73,
        0x74, 0x00, 0xc0, 0x4b, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0xc0,
        0x00, 0x02, 0x0a, 0xc0, 0x4b, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
        0xc0, 0x00, 0x02, 0x0b,
    ];

    /// The query for www.erebus.test, type AAAA, id 0x5eb2.
    static QUERY_AAAA: [u8; 33] = [
        0x5e, 0xb2, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x77, 0x77,
        0x77, 0x06, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00,
        0x1c, 0x00, 0x01,
    ];

    /// The response: two CNAMEs and one AAAA record.
    static RESPONSE_AAAA: [u8; 120] = [
        0x5e, 0xb2, 0x85, 0x80, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x03, 0x77, 0x77,
        0x77, 0x06, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00,
        0x1c, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12,
        0x04, 0x65, 0x64, 0x67, 0x65, 0x06, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x04, 0x74, 0x65,
        0x73, 0x74, 0x00, 0xc0, 0x2d, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11,
        0x06, 0x6f, 0x72, 0x69, 0x67, 0x69, 0x6e, 0x03, 0x63, 0x64, 0x6e, 0x04, 0x74, 0x65, 0x73,
        0x74, 0x00, 0xc0, 0x4b, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x20,
        0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
    ];

    /// The answer to nothing.erebus.test (no upstream server configured): REFUSED.
    static RESPONSE_REFUSED: [u8; 37] = [
        0x5e, 0xb3, 0x81, 0x85, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x6e, 0x6f,
        0x74, 0x68, 0x69, 0x6e, 0x67, 0x06, 0x65, 0x72, 0x65, 0x62, 0x75, 0x73, 0x04, 0x74, 0x65,
        0x73, 0x74, 0x00, 0x00, 0x01, 0x00, 0x01,
    ];

    /// A response written the way most servers compress: the CNAME target is "cdn" and a
    /// pointer to "example.com" inside the question, and the A record's owner points into the
    /// CNAME's data. The CNAME's TTL has its top bit set, which counts as zero.
    static COMPRESSED_CNAME: [u8; 67] = [
        0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, // header
        3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0,
        0x00, 0x01, 0x00, 0x01, // question at 12: www.example.com A IN
        0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x80, 0x00, 0x00, 0x00, 0x00, 0x06, // CNAME
        3, b'c', b'd', b'n', 0xc0, 0x10, // at 45: cdn + pointer to example.com
        0xc0, 0x2d, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x04, // A, TTL 300
        93, 184, 216, 34,
    ];

    /// A message with one question whose name is `name`, type A, class IN.
    fn with_question_name(name: &[u8]) -> Vec<u8> {
        let mut message = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(name);
        message.extend_from_slice(&[0, 1, 0, 1]);
        message
    }

    #[test]
    fn test_emit_query() {
        let mut buf = [0xA5; 512];
        let len = emit_query(&mut buf, 0x5eb1, "www.erebus.test", RecordType::A, true).unwrap();
        assert_eq!(&buf[..len], &QUERY_A[..]);
        let len = emit_query(&mut buf, 0x5eb2, "www.erebus.test.", RecordType::Aaaa, true).unwrap();
        assert_eq!(&buf[..len], &QUERY_AAAA[..]);
        assert_eq!(query_len("www.erebus.test"), Ok(QUERY_A.len()));

        let len = emit_query(&mut buf, 7, "intranet.corp", RecordType::A, false).unwrap();
        let header = DnsPacket::new_checked(&buf[..len]).unwrap();
        assert!(!header.recursion_desired());
        assert!(!header.is_response());
    }

    #[test]
    fn emit_query_needs_room() {
        let mut buf = [0u8; 32];
        assert_eq!(
            emit_query(&mut buf, 1, "www.erebus.test", RecordType::A, true),
            Err(Error::Truncated)
        );
        let mut buf = [0u8; 33];
        assert_eq!(
            emit_query(&mut buf, 1, "www.erebus.test", RecordType::A, true),
            Ok(33)
        );
    }

    #[test]
    fn query_names_are_validated() {
        let label_63 = "a".repeat(63);
        let label_64 = "a".repeat(64);
        // Four labels of 63 and a dot between each: exactly 255 characters. Drop two to make
        // 253, the longest allowed.
        let name_255 = [label_63.as_str(); 4].join(".");
        let name_253 = &name_255[..253];
        let name_254 = format!("{name_253}a");
        let mut buf = [0u8; 512];
        for good in [
            "a",
            "intranet.corp.",
            "_sip._udp.example.com",
            &label_63,
            name_253,
        ] {
            assert!(
                emit_query(&mut buf, 1, good, RecordType::A, true).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a b.com",
            "ex\u{e4}mple.com",
            "tab\t.com",
            &label_64,
            &name_254,
        ] {
            assert_eq!(
                emit_query(&mut buf, 1, bad, RecordType::A, true),
                Err(Error::Malformed),
                "{bad}"
            );
        }
        // The longest name fits the wire limit of 255 bytes.
        assert_eq!(query_len(name_253), Ok(HEADER_LEN + 255 + 4));
    }

    #[test]
    fn test_deconstruct() {
        let header = DnsPacket::new_checked(&RESPONSE_A[..]).unwrap();
        assert_eq!(header.id(), 0x5eb1);
        assert_eq!(header.flags(), 0x8580);
        assert!(header.is_response());
        assert_eq!(header.opcode(), OPCODE_QUERY);
        assert!(header.is_authoritative());
        assert!(!header.is_truncated());
        assert!(header.recursion_desired());
        assert!(header.recursion_available());
        assert_eq!(header.rcode(), rcode::NO_ERROR);
        assert_eq!(header.question_count(), 1);
        assert_eq!(header.answer_count(), 4);
        assert_eq!(header.authority_count(), 0);
        assert_eq!(header.additional_count(), 0);

        let refused = DnsPacket::new_checked(&RESPONSE_REFUSED[..]).unwrap();
        assert_eq!(refused.rcode(), rcode::REFUSED);
        assert!(!refused.is_authoritative());
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xA5; HEADER_LEN];
        let mut header = DnsPacket::new_unchecked(&mut bytes[..]);
        header.set_flags(0);
        header.set_id(0x5eb1);
        header.set_response(true);
        header.set_opcode(OPCODE_QUERY);
        header.set_authoritative(true);
        header.set_truncated(false);
        header.set_recursion_desired(true);
        header.set_recursion_available(true);
        header.set_rcode(rcode::NO_ERROR);
        header.set_question_count(1);
        header.set_answer_count(4);
        header.set_authority_count(0);
        header.set_additional_count(0);
        assert_eq!(bytes, RESPONSE_A[..HEADER_LEN]);

        let mut header = DnsPacket::new_unchecked(&mut bytes[..]);
        header.set_opcode(0xF);
        header.set_rcode(rcode::NAME_ERROR);
        header.set_truncated(true);
        assert_eq!(header.opcode(), 0xF);
        assert_eq!(header.rcode(), rcode::NAME_ERROR);
        assert!(header.is_truncated());
        assert!(header.is_response() && header.recursion_available());
    }

    #[test]
    fn test_check_len() {
        assert_eq!(
            DnsPacket::new_checked(&RESPONSE_A[..11]).unwrap_err(),
            Error::Truncated
        );
        assert!(DnsPacket::new_checked(&RESPONSE_A[..12]).is_ok());
    }

    #[test]
    fn cname_chain_resolves_to_addresses() {
        let message = Message::parse(&RESPONSE_A).unwrap();
        assert!(message.is_response_to(0x5eb1, "www.erebus.test", RecordType::A));

        let questions: Vec<_> = message.questions().collect();
        assert_eq!(questions.len(), 1);
        assert!(questions[0].name.eq_text("www.erebus.test"));
        assert_eq!(questions[0].qtype, RecordType::A);
        assert_eq!(questions[0].qclass, CLASS_IN);

        let answers: Vec<_> = message.answers().collect();
        assert_eq!(answers.len(), 4);
        assert!(answers[0].name.eq_text("www.erebus.test"));
        assert_eq!(answers[0].rtype, RecordType::Cname);
        assert_eq!(answers[0].class, CLASS_IN);
        assert_eq!(answers[0].ttl, 0);
        let RecordData::Cname(edge) = answers[0].data else {
            panic!("not a CNAME: {:?}", answers[0]);
        };
        assert_eq!(edge.to_string(), "edge.erebus.test.");
        assert_eq!(answers[1].name, edge);
        assert!(
            matches!(answers[1].data, RecordData::Cname(origin) if origin.eq_text("origin.cdn.test"))
        );
        assert_eq!(answers[2].data, RecordData::A(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(answers[2].rdata, &[192, 0, 2, 10]);
        assert!(answers[2].name.eq_text("ORIGIN.cdn.test."));

        let canonical = message.canonical_name(questions[0].name).unwrap();
        assert_eq!(canonical.to_string(), "origin.cdn.test.");
        let addresses: Vec<_> = message.addresses_of(canonical).collect();
        assert_eq!(
            addresses,
            [
                (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 0),
                (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)), 0),
            ]
        );
        // The alias itself owns no addresses.
        assert_eq!(message.addresses_of(questions[0].name).count(), 0);
    }

    #[test]
    fn aaaa_response() {
        let message = Message::parse(&RESPONSE_AAAA).unwrap();
        assert!(message.is_response_to(0x5eb2, "WWW.Erebus.TEST.", RecordType::Aaaa));
        assert!(!message.is_response_to(0x5eb2, "www.erebus.test", RecordType::A));
        assert!(!message.is_response_to(0x5eb1, "www.erebus.test", RecordType::Aaaa));
        assert!(!message.is_response_to(0x5eb2, "erebus.test", RecordType::Aaaa));
        let question = message.questions().next().unwrap();
        let canonical = message.canonical_name(question.name).unwrap();
        let addresses: Vec<_> = message.addresses_of(canonical).collect();
        let expected: Ipv6Addr = "2001:db8::10".parse().unwrap();
        assert_eq!(addresses, [(IpAddr::V6(expected), 0)]);
    }

    #[test]
    fn refused_response_has_no_answers() {
        let message = Message::parse(&RESPONSE_REFUSED).unwrap();
        assert!(message.is_response_to(0x5eb3, "nothing.erebus.test", RecordType::A));
        assert_eq!(message.header().rcode(), rcode::REFUSED);
        assert_eq!(message.answers().count(), 0);
    }

    #[test]
    fn a_query_is_not_a_response() {
        let message = Message::parse(&QUERY_A).unwrap();
        assert!(!message.is_response_to(0x5eb1, "www.erebus.test", RecordType::A));
        assert!(
            message
                .questions()
                .next()
                .unwrap()
                .name
                .eq_text("www.erebus.test")
        );
    }

    #[test]
    fn compressed_cname_target() {
        let message = Message::parse(&COMPRESSED_CNAME).unwrap();
        let answers: Vec<_> = message.answers().collect();
        let RecordData::Cname(target) = answers[0].data else {
            panic!("not a CNAME: {:?}", answers[0]);
        };
        assert_eq!(target.to_string(), "cdn.example.com.");
        let labels: Vec<_> = target.labels().collect();
        assert_eq!(labels, [&b"cdn"[..], b"example", b"com"]);
        assert_eq!(
            answers[0].ttl, 0,
            "a TTL with the top bit set counts as zero"
        );
        assert_eq!(answers[1].name, target);
        assert_eq!(answers[1].ttl, 300);

        let question = message.questions().next().unwrap();
        let canonical = message.canonical_name(question.name).unwrap();
        let addresses: Vec<_> = message.addresses_of(canonical).collect();
        assert_eq!(
            addresses,
            [(IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)), 300)]
        );
    }

    #[test]
    fn every_truncation_of_a_response_is_an_error() {
        for len in 0..RESPONSE_A.len() {
            assert!(Message::parse(&RESPONSE_A[..len]).is_err(), "{len}");
        }
        for len in 0..COMPRESSED_CNAME.len() {
            assert!(Message::parse(&COMPRESSED_CNAME[..len]).is_err(), "{len}");
        }
    }

    #[test]
    fn pointer_loops_are_refused() {
        // A pointer to itself.
        let self_pointer = with_question_name(&[0xc0, 0x0c]);
        assert_eq!(Message::parse(&self_pointer).unwrap_err(), Error::Malformed);
        // A label, then a pointer back to that label: "a.a.a..." forever.
        let back_to_start = with_question_name(&[1, b'a', 0xc0, 0x0c]);
        assert_eq!(
            Message::parse(&back_to_start).unwrap_err(),
            Error::Malformed
        );
        // Two names pointing at each other: the second jump would go forwards.
        let mut two_names = with_question_name(&[1, b'a', 0xc0, 0x12, 0]);
        two_names[5] = 2;
        two_names.extend_from_slice(&[1, b'b', 0xc0, 0x0c, 0, 1, 0, 1]);
        assert_eq!(Message::parse(&two_names).unwrap_err(), Error::Malformed);
        // A forward pointer, and one into the header.
        let forward = with_question_name(&[0xc0, 0x0e, 0]);
        assert_eq!(Message::parse(&forward).unwrap_err(), Error::Malformed);
        let into_header = with_question_name(&[0xc0, 0x02]);
        assert_eq!(Message::parse(&into_header).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn cname_loops_are_refused() {
        // a.test CNAME b.test, b.test CNAME a.test.
        let mut message = with_question_name(&[1, b'a', 4, b't', b'e', b's', b't', 0]);
        message[7] = 2;
        // At 24: owner a.test (pointer to 12), data "b" + pointer to "test" at 14.
        message.extend_from_slice(&[0xc0, 0x0c, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'b', 0xc0, 14]);
        // Owner b.test (pointer to 36), data a.test (pointer to 12).
        message.extend_from_slice(&[0xc0, 36, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 0x0c]);
        let message = Message::parse(&message).unwrap();
        let question = message.questions().next().unwrap();
        assert_eq!(message.canonical_name(question.name), Err(Error::Malformed));
    }

    #[test]
    fn names_over_the_limits_are_refused() {
        // Label lengths with the top bits 01 or 10 are not lengths.
        for first in [0x40, 0x80] {
            let message = with_question_name(&[first, 0]);
            assert_eq!(Message::parse(&message).unwrap_err(), Error::Malformed);
        }
        // Three labels of 63 and one of 61, plus the root, make 255 bytes on the wire: the
        // most allowed. One more byte in the last label is too many.
        let mut long_name = Vec::new();
        for _ in 0..3 {
            long_name.push(63);
            long_name.extend_from_slice(&[b'a'; 63]);
        }
        let mut just_fits = long_name.clone();
        just_fits.push(61);
        just_fits.extend_from_slice(&[b'b'; 61]);
        just_fits.push(0);
        assert_eq!(just_fits.len(), 255);
        let message = with_question_name(&just_fits);
        let parsed = Message::parse(&message).unwrap();
        let name = parsed.questions().next().unwrap().name;
        assert_eq!(name.to_string().len(), MAX_NAME_LEN + 1);
        long_name.push(62);
        long_name.extend_from_slice(&[b'b'; 62]);
        long_name.push(0);
        assert_eq!(
            Message::parse(&with_question_name(&long_name)).unwrap_err(),
            Error::Malformed
        );
        // Pointers cannot be used to grow a name past the limit either: a second question
        // puts a 63-byte label in front of the longest name.
        let mut message = with_question_name(&just_fits);
        message[5] = 2;
        message.push(63);
        message.extend_from_slice(&[b'x'; 63]);
        message.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert_eq!(Message::parse(&message).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn record_data_is_checked() {
        // An A record with five bytes of data.
        let mut message = COMPRESSED_CNAME.to_vec();
        message[62] = 5;
        message.push(0);
        assert_eq!(Message::parse(&message).unwrap_err(), Error::Malformed);
        // A CNAME whose name runs past its data length.
        let mut message = COMPRESSED_CNAME.to_vec();
        message[44] = 5;
        assert!(Message::parse(&message).is_err());
        // Other classes and types are kept raw.
        let mut message = COMPRESSED_CNAME.to_vec();
        message[56] = 3; // class CHAOS
        let parsed = Message::parse(&message).unwrap();
        let record = parsed.answers().nth(1).unwrap();
        assert_eq!(record.data, RecordData::Other);
        assert_eq!(record.rdata, &[93, 184, 216, 34]);
    }

    #[test]
    fn names_display_with_escapes() {
        let message = with_question_name(&[3, b'a', b'.', 0x07, 2, b'\\', b'b', 0]);
        let message = Message::parse(&message).unwrap();
        let name = message.questions().next().unwrap().name;
        assert_eq!(name.to_string(), "a\\.\\007.\\\\b.");
        let root = with_question_name(&[0]);
        let root = Message::parse(&root).unwrap();
        let name = root.questions().next().unwrap().name;
        assert!(name.is_root());
        assert!(name.eq_text("."));
        assert_eq!(name.to_string(), ".");
    }

    #[test]
    fn record_types() {
        for (number, rtype) in [
            (1, RecordType::A),
            (5, RecordType::Cname),
            (28, RecordType::Aaaa),
        ] {
            assert_eq!(RecordType::from(number), rtype);
            assert_eq!(u16::from(rtype), number);
        }
        assert_eq!(RecordType::from(15), RecordType::Other(15));
    }

    /// A 64 KiB message (the most DNS over TCP carries) of 127 chained questions and
    /// thousands of records whose owners take 127 pointer jumps, all CNAMEs from the name to
    /// itself: parsing and chasing the chain finish, with an error.
    #[test]
    fn largest_hostile_message_finishes() {
        let mut message = vec![
            0u8, 1, 0x81, 0x80, 0, 128, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
        ];
        let mut previous = 12u16;
        for _ in 0..127 {
            let here = message.len() as u16;
            message.extend_from_slice(&(0xC000 | previous).to_be_bytes());
            message.extend_from_slice(&[0, 1, 0, 1]);
            previous = here;
        }
        let pointer = (0xC000 | previous).to_be_bytes();
        let mut count = 0u16;
        while message.len() + 14 <= usize::from(u16::MAX) {
            message.extend_from_slice(&pointer);
            message.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0, 60, 0, 2]);
            message.extend_from_slice(&pointer);
            count += 1;
        }
        message[6..8].copy_from_slice(&count.to_be_bytes());
        let parsed = Message::parse(&message).unwrap();
        assert_eq!(parsed.questions().count(), 128);
        let deepest = parsed.questions().last().unwrap().name;
        assert!(deepest.eq_text("a"));
        assert_eq!(parsed.answers().count(), usize::from(count));
        assert_eq!(parsed.canonical_name(deepest), Err(Error::Malformed));
        assert_eq!(parsed.addresses_of(deepest).count(), 0);
    }

    fn arb_name() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-zA-Z0-9_-]{1,63}", 1..5)
            .prop_map(|labels| labels.join("."))
            .prop_filter("names are at most 253 characters", |name| name.len() <= 253)
    }

    proptest! {
        #[test]
        fn emit_query_then_parse_is_identity(
            id: u16,
            name in arb_name(),
            qtype: u16,
            recursion_desired: bool,
        ) {
            let qtype = RecordType::from(qtype);
            let mut buf = [0u8; 512];
            let len = emit_query(&mut buf, id, &name, qtype, recursion_desired).unwrap();
            prop_assert_eq!(query_len(&name), Ok(len));
            let message = Message::parse(&buf[..len]).unwrap();
            let header = message.header();
            prop_assert_eq!(header.id(), id);
            prop_assert_eq!(header.recursion_desired(), recursion_desired);
            prop_assert!(!header.is_response());
            let questions: Vec<_> = message.questions().collect();
            prop_assert_eq!(questions.len(), 1);
            prop_assert!(questions[0].name.eq_text(&name));
            prop_assert_eq!(questions[0].name.to_string(), format!("{name}."));
            prop_assert_eq!(questions[0].qtype, qtype);
            prop_assert_eq!(questions[0].qclass, CLASS_IN);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            counts in any::<[u8; 4]>(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
            raw in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // Small counts give the parser a chance to get past the header.
            let mut message = vec![0x12, 0x34, 0x81, 0x80];
            for count in counts {
                message.extend_from_slice(&[0, count % 4]);
            }
            message.extend_from_slice(&body);
            for bytes in [&message, &raw] {
                let Ok(parsed) = Message::parse(bytes) else { continue };
                for question in parsed.questions() {
                    let _ = question.name.to_string();
                    let _ = parsed.canonical_name(question.name);
                    let _ = parsed.addresses_of(question.name).count();
                }
                for record in parsed.answers() {
                    let _ = (record.name.to_string(), record.name.labels().count());
                }
                let _ = parsed.is_response_to(0x1234, "a.b", RecordType::A);
            }
        }

        #[test]
        fn names_built_from_pointers_never_panic(
            body in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(0xc0u8), Just(0x0cu8), 0u8..4],
                0..128,
            ),
        ) {
            let message = with_question_name(&body);
            if let Ok(parsed) = Message::parse(&message) {
                for question in parsed.questions() {
                    prop_assert!(question.name.labels().count() <= 127);
                    let _ = question.name.to_string();
                }
            }
        }
    }
}
