//! The exit's DNS relay: a query a client sends to a DNS address the server pushed is
//! answered from the host's resolver (the driver resolves; this module reads the query and
//! writes the answer).
//!
//! Only what a stub resolver asks is answered with data: one question, class IN, type A or
//! AAAA. Another type gets an empty answer (NOERROR, no records), so the client moves on at
//! once; a name the host cannot resolve gets NXDOMAIN.

use std::net::IpAddr;

use erebus_wire::dns::{CLASS_IN, HEADER_LEN, Message, RecordType};

/// How long a client may cache an answer, in seconds: short, since the host's own view may
/// change.
pub const ANSWER_TTL: u32 = 60;

/// The flag bits of a response: QR, and RA (we recurse through the host).
const FLAG_RESPONSE: u16 = 0x8000;
const FLAG_RECURSION_DESIRED: u16 = 0x0100;
const FLAG_RECURSION_AVAILABLE: u16 = 0x0080;
/// Response codes (RFC 1035 section 4.1.1).
const RCODE_FORMERR: u16 = 1;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_NOTIMP: u16 = 4;

/// A query the relay understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The name asked about, without the trailing dot.
    pub name: String,
    /// What was asked: A, AAAA or another type (answered empty).
    pub qtype: RecordType,
    /// The query's bytes up to the end of its question, copied into the answer.
    head: Vec<u8>,
}

/// What to do with a datagram sent to the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Resolve the name with the host's resolver, then answer with [`Query::answer`].
    Resolve(Query),
    /// Answer at once with these bytes (an error, or an empty answer for a type we do not
    /// look up).
    Reply(Vec<u8>),
    /// Not a query we can answer at all (a response, garbage): drop it.
    Drop,
}

/// Reads one datagram sent to the relay.
pub fn read_query(bytes: &[u8]) -> Request {
    let Ok(message) = Message::parse(bytes) else {
        return match reply_head(bytes) {
            Some(head) => Request::Reply(error_reply(&head, RCODE_FORMERR)),
            None => Request::Drop,
        };
    };
    let header = message.header();
    if header.is_response() {
        return Request::Drop;
    }
    let mut questions = message.questions();
    let (Some(question), None) = (questions.next(), questions.next()) else {
        return Request::Reply(error_reply(&bytes[..HEADER_LEN], RCODE_FORMERR));
    };
    if header.opcode() != 0 {
        return Request::Reply(error_reply(&bytes[..HEADER_LEN], RCODE_NOTIMP));
    }
    let name = question.name.to_string();
    let name = name.trim_end_matches('.').to_owned();
    // The question ends where the answer section starts (the query has no answers).
    let question_end = HEADER_LEN + question_len(&bytes[HEADER_LEN..]);
    let query = Query {
        name,
        qtype: question.qtype,
        head: bytes[..question_end].to_vec(),
    };
    if question.qclass != CLASS_IN || !matches!(question.qtype, RecordType::A | RecordType::Aaaa) {
        return Request::Reply(query.answer(&[]));
    }
    if query.name.is_empty() {
        return Request::Reply(query.reply(RCODE_NXDOMAIN, &[]));
    }
    Request::Resolve(query)
}

/// The length of the one question at the start of `rest`: its name's labels, the root, the
/// type and the class. `rest` was validated by [`Message::parse`].
fn question_len(rest: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(&len) = rest.get(pos) {
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xC0 == 0xC0 {
            // A pointer ends the name (unusual in a question, but valid).
            pos += 2;
            break;
        }
        pos += 1 + usize::from(len);
    }
    (pos + 4).min(rest.len())
}

/// The identifier and flags of an unparsable query, when at least a header is there.
fn reply_head(bytes: &[u8]) -> Option<Vec<u8>> {
    let head = bytes.get(..HEADER_LEN)?;
    // A response, or anything whose QR bit is set, is never answered (no loops).
    (head[2] & 0x80 == 0).then(|| head.to_vec())
}

/// A header-only reply with `rcode`.
fn error_reply(head: &[u8], rcode: u16) -> Vec<u8> {
    let mut out = head.get(..HEADER_LEN).unwrap_or_default().to_vec();
    out.resize(HEADER_LEN, 0);
    let flags = u16::from_be_bytes([out[2], out[3]]);
    let flags = FLAG_RESPONSE | (flags & FLAG_RECURSION_DESIRED) | FLAG_RECURSION_AVAILABLE | rcode;
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..12].fill(0);
    out
}

impl Query {
    /// The answer carrying the addresses of the asked family from `addrs` (none of them: an
    /// empty answer). A name that did not resolve at all gets [`Query::not_found`] instead.
    pub fn answer(&self, addrs: &[IpAddr]) -> Vec<u8> {
        let records: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|addr| match self.qtype {
                RecordType::A => addr.is_ipv4(),
                RecordType::Aaaa => addr.is_ipv6(),
                _ => false,
            })
            .collect();
        self.reply(0, &records)
    }

    /// NXDOMAIN for a name the host could not resolve.
    pub fn not_found(&self) -> Vec<u8> {
        self.reply(RCODE_NXDOMAIN, &[])
    }

    /// SERVFAIL, when the relay cannot answer (too many queries waiting).
    pub fn server_failure(&self) -> Vec<u8> {
        self.reply(RCODE_SERVFAIL, &[])
    }

    fn reply(&self, rcode: u16, records: &[IpAddr]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + records.len() * 28);
        out.extend_from_slice(&self.head);
        let flags = u16::from_be_bytes([out[2], out[3]]);
        let flags =
            FLAG_RESPONSE | (flags & FLAG_RECURSION_DESIRED) | FLAG_RECURSION_AVAILABLE | rcode;
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        // One question, the answers, no authority or additional records (an EDNS OPT record in
        // the query is not echoed; a client without it in the answer falls back to 512 bytes,
        // which our answers fit).
        let count = u16::try_from(records.len()).unwrap_or(u16::MAX);
        out[4..6].copy_from_slice(&1u16.to_be_bytes());
        out[6..8].copy_from_slice(&count.to_be_bytes());
        out[8..12].fill(0);
        for addr in records.iter().take(usize::from(count)) {
            // The owner is the question's name, by a pointer to offset 12.
            out.extend_from_slice(&[0xC0, 0x0C]);
            let (rtype, data): (u16, Vec<u8>) = match addr {
                IpAddr::V4(v4) => (1, v4.octets().to_vec()),
                IpAddr::V6(v6) => (28, v6.octets().to_vec()),
            };
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ANSWER_TTL.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use erebus_wire::dns::{RecordData, emit_query, query_len};

    use super::*;

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut buf = vec![0; query_len(name).unwrap()];
        emit_query(&mut buf, 0x1234, name, qtype, true).unwrap();
        buf
    }

    #[test]
    fn a_query_is_resolved_and_answered_with_the_asked_family() {
        let bytes = query("intranet.example", RecordType::A);
        let Request::Resolve(query) = read_query(&bytes) else {
            panic!("not a lookup");
        };
        assert_eq!(query.name, "intranet.example");
        let addrs = [
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        ];
        let answer = query.answer(&addrs);
        let message = Message::parse(&answer).unwrap();
        assert!(message.is_response_to(0x1234, "intranet.example", RecordType::A));
        let records: Vec<_> = message.answers().collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].data, RecordData::A(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(records[0].ttl, ANSWER_TTL);
        assert_eq!(message.header().rcode(), 0);
        assert!(message.header().recursion_available());
    }

    #[test]
    fn unknown_names_get_nxdomain_and_other_types_an_empty_answer() {
        let Request::Resolve(lookup) = read_query(&query("nowhere.invalid", RecordType::Aaaa))
        else {
            panic!("not a lookup");
        };
        let reply = lookup.not_found();
        let message = Message::parse(&reply).unwrap();
        assert_eq!(message.header().rcode(), 3);
        let Request::Reply(reply) = read_query(&query("example.org", RecordType::Other(16))) else {
            panic!("TXT should be answered at once");
        };
        let message = Message::parse(&reply).unwrap();
        assert_eq!(message.header().rcode(), 0);
        assert_eq!(message.header().answer_count(), 0);
    }

    #[test]
    fn garbage_is_answered_formerr_or_dropped() {
        assert_eq!(read_query(&[1, 2, 3]), Request::Drop);
        let mut bad = query("example.org", RecordType::A);
        bad.truncate(HEADER_LEN + 3);
        let Request::Reply(reply) = read_query(&bad) else {
            panic!("a header deserves an answer");
        };
        assert_eq!(u16::from_be_bytes([reply[2], reply[3]]) & 0xF, 1);
        let mut response = query("example.org", RecordType::A);
        response[2] |= 0x80;
        assert_eq!(read_query(&response), Request::Drop);
    }

    proptest::proptest! {
        #[test]
        fn reading_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Request::Resolve(query) = read_query(&bytes) {
                let answer = query.answer(&[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
                Message::parse(&answer).unwrap();
            }
        }
    }
}
