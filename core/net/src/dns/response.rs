//! What a response says about the question it answers.
//!
//! [`erebus_wire::dns::Message`] validates the header, question and answer sections. Two things
//! a stub resolver needs are outside what it reads, so they are read here with bounds-checked
//! helpers: the SOA record of the authority section, whose fields set how long a negative
//! answer may be cached (RFC 2308 section 5), and the question of a truncated response whose
//! answer section was cut mid-record, which must still be matched before falling back to TCP.

use std::net::IpAddr;

use erebus_wire::dns::{
    DnsPacket, HEADER_LEN, MAX_CNAME_CHAIN, Message, RecordData, RecordType, rcode,
};

use super::ResponseDrop;

/// The type number of an SOA record.
const TYPE_SOA: u16 = 6;

/// What a matching response means for the query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Addresses of the asked type at the end of the CNAME chain, and the smallest TTL of the
    /// records that led to them.
    Addresses { addresses: Vec<IpAddr>, ttl: u32 },
    /// The name exists but has no address of the asked type.
    NoData { negative_ttl: Option<u32> },
    /// The name does not exist.
    NxDomain { negative_ttl: Option<u32> },
    /// The answer did not fit the datagram: ask again over TCP.
    Truncated,
    /// The server could not or would not answer (SERVFAIL, REFUSED, FORMERR, NOTIMP, any other
    /// code, or an answer whose CNAME chain does not end).
    ServerFailure,
}

/// Checks that `bytes` is the response to the query `id` for `name` and `qtype`, and says what
/// it means. Anything that is not exactly that response is an error and must change nothing.
pub(super) fn interpret(
    bytes: &[u8],
    id: u16,
    name: &str,
    qtype: RecordType,
) -> Result<Verdict, ResponseDrop> {
    let header = DnsPacket::new_checked(bytes).map_err(|_| ResponseDrop::Malformed)?;
    let message = match Message::parse(bytes) {
        Ok(message) => message,
        // A truncated response may end in the middle of a record. Its question is still
        // whole, and matching it is all a fallback to TCP needs.
        Err(_) if header.is_truncated() => {
            return if truncated_question_matches(bytes, id, name, qtype) {
                Ok(Verdict::Truncated)
            } else {
                Err(ResponseDrop::Malformed)
            };
        }
        Err(_) => return Err(ResponseDrop::Malformed),
    };
    if !message.is_response_to(id, name, qtype) {
        return Err(ResponseDrop::Unsolicited);
    }
    if header.is_truncated() {
        return Ok(Verdict::Truncated);
    }
    match header.rcode() {
        rcode::NO_ERROR => Ok(answer(&message, bytes, qtype)),
        rcode::NAME_ERROR => Ok(Verdict::NxDomain {
            negative_ttl: soa_negative_ttl(bytes),
        }),
        _ => Ok(Verdict::ServerFailure),
    }
}

/// Follows the CNAME chain from the question's name and collects the addresses of `qtype` at
/// its end. Records for names off the chain are ignored: a server may only vouch for what it
/// was asked about.
fn answer(message: &Message<'_>, bytes: &[u8], qtype: RecordType) -> Verdict {
    let Some(question) = message.questions().next() else {
        return Verdict::ServerFailure;
    };
    let mut current = question.name;
    let mut ttl = u32::MAX;
    let mut ended = false;
    for _ in 0..=MAX_CNAME_CHAIN {
        let alias = message.answers().find_map(|record| match record.data {
            RecordData::Cname(target) if record.name == current => Some((target, record.ttl)),
            _ => None,
        });
        match alias {
            Some((target, alias_ttl)) => {
                ttl = ttl.min(alias_ttl);
                current = target;
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    if !ended {
        return Verdict::ServerFailure;
    }
    let mut addresses = Vec::new();
    for (addr, addr_ttl) in message.addresses_of(current) {
        let wanted = match qtype {
            RecordType::A => addr.is_ipv4(),
            RecordType::Aaaa => addr.is_ipv6(),
            RecordType::Cname | RecordType::Other(_) => false,
        };
        if wanted && !addresses.contains(&addr) {
            ttl = ttl.min(addr_ttl);
            addresses.push(addr);
        }
    }
    if addresses.is_empty() {
        Verdict::NoData {
            negative_ttl: soa_negative_ttl(bytes),
        }
    } else {
        Verdict::Addresses { addresses, ttl }
    }
}

/// Whether the header and first question of a truncated message, which may not parse past
/// them, are the response to the query `id` for `name` and `qtype`.
fn truncated_question_matches(bytes: &[u8], id: u16, name: &str, qtype: RecordType) -> bool {
    let Some(question_end) = skip_name(bytes, HEADER_LEN).and_then(|end| end.checked_add(4)) else {
        return false;
    };
    let Some(head) = bytes.get(..question_end) else {
        return false;
    };
    // Rebuild the message as its header and question alone, and match that.
    let mut head = head.to_vec();
    let mut header = DnsPacket::new_unchecked(&mut head[..]);
    header.set_answer_count(0);
    header.set_authority_count(0);
    header.set_additional_count(0);
    Message::parse(&head).is_ok_and(|message| message.is_response_to(id, name, qtype))
}

/// The position after the name at `pos`, without following compression pointers (a pointer
/// ends the name in place). `None` if the name runs past the end or uses a reserved label type.
fn skip_name(bytes: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let length = *bytes.get(pos)?;
        match length & 0xC0 {
            0x00 if length == 0 => return Some(pos + 1),
            0x00 => pos = pos.checked_add(1 + usize::from(length))?,
            0xC0 => {
                bytes.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
}

fn read_u16(bytes: &[u8], pos: usize) -> Option<u16> {
    let field = bytes.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_be_bytes([field[0], field[1]]))
}

fn read_u32(bytes: &[u8], pos: usize) -> Option<u32> {
    let field = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes([field[0], field[1], field[2], field[3]]))
}

/// How long a negative answer may be cached according to the first SOA record of the authority
/// section: the smaller of the record's TTL and its MINIMUM field (RFC 2308 section 5). `None`
/// when there is no readable SOA record.
pub(super) fn soa_negative_ttl(bytes: &[u8]) -> Option<u32> {
    let question_count = read_u16(bytes, 4)?;
    let answer_count = read_u16(bytes, 6)?;
    let authority_count = read_u16(bytes, 8)?;
    let mut pos = HEADER_LEN;
    for _ in 0..question_count {
        pos = skip_name(bytes, pos)?.checked_add(4)?;
    }
    for _ in 0..answer_count {
        pos = skip_record(bytes, pos)?;
    }
    for _ in 0..authority_count {
        let fixed = skip_name(bytes, pos)?;
        let rtype = read_u16(bytes, fixed)?;
        let ttl = read_u32(bytes, fixed + 4)?;
        let rdata_len = usize::from(read_u16(bytes, fixed + 8)?);
        let rdata_start = fixed + 10;
        let rdata_end = rdata_start.checked_add(rdata_len)?;
        if rtype == TYPE_SOA {
            let rdata = bytes.get(..rdata_end)?;
            // MNAME and RNAME, then SERIAL, REFRESH, RETRY, EXPIRE and MINIMUM.
            let rname = skip_name(rdata, rdata_start)?;
            let counters = skip_name(rdata, rname)?;
            let minimum = read_u32(rdata, counters.checked_add(16)?)?;
            // Top-bit TTLs count as zero (RFC 2181 section 8).
            let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
            return Some(ttl.min(minimum));
        }
        pos = rdata_end;
    }
    None
}

/// The position after the resource record at `pos`.
fn skip_record(bytes: &[u8], pos: usize) -> Option<usize> {
    let fixed = skip_name(bytes, pos)?;
    let rdata_len = usize::from(read_u16(bytes, fixed.checked_add(8)?)?);
    let end = fixed.checked_add(10)?.checked_add(rdata_len)?;
    (end <= bytes.len()).then_some(end)
}
