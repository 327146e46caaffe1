//! `exit_dns`: the bytes are a datagram a client sends to the exit's DNS relay, read by
//! [`dns::read_query`]. A query to resolve is answered with addresses of both families, with
//! none, NXDOMAIN and SERVFAIL; every answer, and every immediate reply, must parse with
//! [`Message::parse`] as a response with the query's identifier and (for answers) its one
//! question and only records of the asked family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use erebus_server::dns::{self, Request};
use erebus_wire::dns::{Message, RecordData, RecordType};

/// Addresses "the host resolved": two of each family.
const ADDRS: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// The harness.
pub fn run(data: &[u8]) {
    let id = data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match dns::read_query(data) {
        Request::Drop => {}
        Request::Reply(reply) => {
            let message = Message::parse(&reply)
                .unwrap_or_else(|e| panic!("the relay's reply does not parse: {e:?}"));
            let header = message.header();
            assert!(header.is_response());
            assert_eq!(Some(header.id()), id);
        }
        Request::Resolve(query) => {
            assert!(!query.name.is_empty());
            assert!(matches!(query.qtype, RecordType::A | RecordType::Aaaa));
            let _ = format!("{query:?}");
            let question = Message::parse(data).expect("a query the relay read parses");
            let asked = question.questions().next().expect("its question");
            for (addrs, rcode) in [(&ADDRS[..], 0), (&[][..], 0)] {
                let answer = query.answer(addrs);
                let message = check_answer(&answer, id, rcode);
                let q = message.questions().next().expect("the question");
                assert!(q.name == asked.name, "the answer's question name differs");
                assert_eq!(q.qtype, asked.qtype);
                let mut count = 0;
                for record in message.answers() {
                    count += 1;
                    match (&record.data, query.qtype) {
                        (RecordData::A(_), RecordType::A)
                        | (RecordData::Aaaa(_), RecordType::Aaaa) => {}
                        (other, qtype) => panic!("{other:?} in an answer to {qtype:?}"),
                    }
                    assert!(record.name == asked.name, "the record's owner differs");
                }
                assert_eq!(count, if addrs.is_empty() { 0 } else { 2 });
                assert_eq!(usize::from(message.header().answer_count()), count);
            }
            check_answer(&query.not_found(), id, 3);
            check_answer(&query.server_failure(), id, 2);
        }
    }
}

fn check_answer(answer: &[u8], id: Option<u16>, rcode: u8) -> Message<'_> {
    let message = Message::parse(answer)
        .unwrap_or_else(|e| panic!("the relay's answer does not parse: {e:?}"));
    let header = message.header();
    assert!(header.is_response());
    assert_eq!(Some(header.id()), id);
    assert_eq!(header.rcode(), rcode);
    assert_eq!(header.question_count(), 1);
    message
}
