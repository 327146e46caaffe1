//! Scripted tests of the resolver: hand-built responses at scripted instants.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use erebus_sansio::{Instant, Seed, TunnelConfig};
use erebus_wire::dns::{DnsPacket, HEADER_LEN, Message, RecordType, rcode};
use proptest::prelude::*;

use super::*;

const S1: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1));
const S2: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 8, 0, 2));

fn server(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, DNS_PORT)
}

fn tunnel(servers: &[IpAddr], search: &[&str]) -> TunnelConfig {
    TunnelConfig {
        dns_servers: servers.to_vec(),
        search_domains: search.iter().map(|s| (*s).to_owned()).collect(),
        ..TunnelConfig::default()
    }
}

fn resolver_with(servers: &[IpAddr], search: &[&str], options: ResolverOptions) -> Resolver {
    Resolver::new(&tunnel(servers, search), options, &Seed::from_byte(7))
}

fn resolver(servers: &[IpAddr], search: &[&str]) -> Resolver {
    resolver_with(servers, search, ResolverOptions::default())
}

fn ms(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The DNS message of a transmit, without the TCP length prefix.
fn message_of(tx: &DnsTransmit) -> &[u8] {
    match tx.transport {
        DnsTransport::Udp => &tx.bytes,
        DnsTransport::Tcp => &tx.bytes[2..],
    }
}

/// The question of a transmit: name in text form (without the trailing dot) and type.
fn question(tx: &DnsTransmit) -> (String, RecordType) {
    let message = Message::parse(message_of(tx)).unwrap();
    assert_eq!(message.header().id(), tx.id);
    assert!(!message.header().is_response());
    assert!(message.header().recursion_desired());
    let q = message.questions().next().unwrap();
    let name = q.name.to_string();
    (name.trim_end_matches('.').to_owned(), q.qtype)
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

fn record(owner: &str, rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut out = encode_name(owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
    out
}

/// Builds the response to a transmitted query.
struct Reply {
    head: Vec<u8>,
    rcode: u8,
    truncated: bool,
    answers: Vec<Vec<u8>>,
    authority: Vec<Vec<u8>>,
}

fn reply(tx: &DnsTransmit) -> Reply {
    Reply {
        head: message_of(tx).to_vec(),
        rcode: rcode::NO_ERROR,
        truncated: false,
        answers: Vec::new(),
        authority: Vec::new(),
    }
}

impl Reply {
    fn rcode(mut self, rcode: u8) -> Self {
        self.rcode = rcode;
        self
    }

    fn truncated(mut self) -> Self {
        self.truncated = true;
        self
    }

    fn a(mut self, owner: &str, ttl: u32, addr: [u8; 4]) -> Self {
        self.answers.push(record(owner, 1, ttl, &addr));
        self
    }

    fn aaaa(mut self, owner: &str, ttl: u32, addr: Ipv6Addr) -> Self {
        self.answers.push(record(owner, 28, ttl, &addr.octets()));
        self
    }

    fn cname(mut self, owner: &str, ttl: u32, target: &str) -> Self {
        self.answers
            .push(record(owner, 5, ttl, &encode_name(target)));
        self
    }

    fn soa(mut self, zone: &str, ttl: u32, minimum: u32) -> Self {
        let mut rdata = encode_name(&format!("ns.{zone}"));
        rdata.extend_from_slice(&encode_name(&format!("hostmaster.{zone}")));
        for value in [1, 3_600, 600, 86_400, minimum] {
            rdata.extend_from_slice(&u32::to_be_bytes(value));
        }
        self.authority.push(record(zone, 6, ttl, &rdata));
        self
    }

    fn build(self) -> Vec<u8> {
        let mut out = self.head;
        let mut header = DnsPacket::new_unchecked(&mut out[..]);
        header.set_response(true);
        header.set_recursion_available(true);
        header.set_rcode(self.rcode);
        header.set_truncated(self.truncated);
        header.set_answer_count(self.answers.len() as u16);
        header.set_authority_count(self.authority.len() as u16);
        for part in self.answers.iter().chain(&self.authority) {
            out.extend_from_slice(part);
        }
        out
    }

    fn frame(self) -> Vec<u8> {
        let message = self.build();
        let mut out = (message.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&message);
        out
    }
}

/// Hands `bytes` to the resolver as the UDP answer to `tx`.
fn answer(r: &mut Resolver, now: Instant, tx: &DnsTransmit, bytes: &[u8]) {
    r.handle_udp_response(now, tx.server, tx.local_port, bytes)
        .unwrap();
}

fn transmit(r: &mut Resolver, now: Instant) -> DnsTransmit {
    r.poll_transmit(now).expect("a query to send")
}

fn result(r: &mut Resolver) -> (LookupId, Result<Addresses, ResolveError>) {
    r.poll_result().expect("a finished lookup")
}

#[test]
fn a_lookup() {
    let mut r = resolver(&[S1, S2], &[]);
    let id = r.resolve(ms(0), "Intranet.Corp.", Family::V4).unwrap();
    assert!(r.poll_result().is_none());
    let tx = transmit(&mut r, ms(0));
    assert!(r.poll_transmit(ms(0)).is_none());
    assert_eq!(tx.server, server(S1));
    assert_eq!(tx.transport, DnsTransport::Udp);
    assert!(
        ResolverOptions::default()
            .source_ports
            .contains(&tx.local_port)
    );
    assert!(r.is_listening_on(tx.local_port));
    assert_eq!(question(&tx), ("intranet.corp".to_owned(), RecordType::A));
    assert_eq!(r.poll_timeout(), Some(ms(2_000)));

    let bytes = reply(&tx)
        .a("intranet.corp", 300, [10, 1, 0, 5])
        .a("intranet.corp", 300, [10, 1, 0, 6])
        .a("intranet.corp", 300, [10, 1, 0, 5])
        .build();
    answer(&mut r, ms(40), &tx, &bytes);
    assert_eq!(
        result(&mut r),
        (id, Ok(vec![v4(10, 1, 0, 5), v4(10, 1, 0, 6)]))
    );
    assert!(r.poll_result().is_none());
    assert!(r.poll_transmit(ms(40)).is_none());
    assert_eq!(r.poll_timeout(), None);
    assert!(!r.is_listening_on(tx.local_port));
    assert_eq!(r.lookups_in_progress(), 0);
}

#[test]
fn aaaa_lookup_ignores_other_families() {
    let mut r = resolver(&[S1], &[]);
    let id = r.resolve(ms(0), "v6.corp", Family::V6).unwrap();
    let tx = transmit(&mut r, ms(0));
    assert_eq!(question(&tx), ("v6.corp".to_owned(), RecordType::Aaaa));
    let addr: Ipv6Addr = "fd00::42".parse().unwrap();
    // An A record in an AAAA answer is not what was asked for.
    let bytes = reply(&tx)
        .a("v6.corp", 60, [10, 0, 0, 1])
        .aaaa("v6.corp", 60, addr)
        .build();
    answer(&mut r, ms(10), &tx, &bytes);
    assert_eq!(result(&mut r), (id, Ok(vec![IpAddr::V6(addr)])));
}

#[test]
fn both_families_ask_in_parallel_and_list_ipv4_first() {
    let mut r = resolver(&[S1], &[]);
    let id = r.resolve(ms(0), "dual.corp", Family::Both).unwrap();
    let tx_a = transmit(&mut r, ms(0));
    let tx_aaaa = transmit(&mut r, ms(0));
    assert!(r.poll_transmit(ms(0)).is_none());
    assert_eq!(question(&tx_a).1, RecordType::A);
    assert_eq!(question(&tx_aaaa).1, RecordType::Aaaa);
    assert_ne!(tx_a.id, tx_aaaa.id);

    let addr6: Ipv6Addr = "fd00::7".parse().unwrap();
    answer(
        &mut r,
        ms(5),
        &tx_aaaa,
        &reply(&tx_aaaa).aaaa("dual.corp", 60, addr6).build(),
    );
    assert!(r.poll_result().is_none(), "waits for the A query");
    answer(
        &mut r,
        ms(6),
        &tx_a,
        &reply(&tx_a).a("dual.corp", 60, [10, 0, 0, 7]).build(),
    );
    assert_eq!(
        result(&mut r),
        (id, Ok(vec![v4(10, 0, 0, 7), IpAddr::V6(addr6)]))
    );

    // One family without addresses still gives the other.
    let id = r.resolve(ms(10), "v4only.corp", Family::Both).unwrap();
    let tx_a = transmit(&mut r, ms(10));
    let tx_aaaa = transmit(&mut r, ms(10));
    answer(
        &mut r,
        ms(11),
        &tx_a,
        &reply(&tx_a).a("v4only.corp", 60, [10, 0, 0, 8]).build(),
    );
    answer(
        &mut r,
        ms(12),
        &tx_aaaa,
        &reply(&tx_aaaa).soa("corp", 60, 60).build(),
    );
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 0, 0, 8)])));
}

#[test]
fn cname_chain_is_followed_and_off_chain_records_ignored() {
    let mut r = resolver(&[S1], &[]);
    let id = r.resolve(ms(0), "www.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    let bytes = reply(&tx)
        .cname("www.corp", 300, "edge.corp")
        .a("evil.example", 300, [6, 6, 6, 6])
        .cname("EDGE.corp", 30, "origin.cdn.corp")
        .a("origin.cdn.corp", 300, [10, 2, 0, 1])
        .build();
    answer(&mut r, ms(0), &tx, &bytes);
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 2, 0, 1)])));

    // Cached for the shortest TTL along the chain: 30 s.
    let id = r.resolve(ms(29_999), "www.corp", Family::V4).unwrap();
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 2, 0, 1)])));
    r.resolve(ms(30_000), "www.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_none());
    assert!(r.poll_transmit(ms(30_000)).is_some());
}

#[test]
fn cname_loop_is_a_server_failure() {
    let mut r = resolver(&[S1, S2], &[]);
    let id = r.resolve(ms(0), "loop.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    let bytes = reply(&tx)
        .cname("loop.corp", 60, "pool.corp")
        .cname("pool.corp", 60, "loop.corp")
        .build();
    answer(&mut r, ms(1), &tx, &bytes);
    // The next server gets its chance at once.
    let tx2 = transmit(&mut r, ms(1));
    assert_eq!(tx2.server, server(S2));
    answer(
        &mut r,
        ms(2),
        &tx2,
        &reply(&tx2).a("loop.corp", 60, [10, 0, 0, 9]).build(),
    );
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 0, 0, 9)])));
}

/// Answers every query of the lookup with NXDOMAIN and returns the names asked, in order.
fn names_asked(r: &mut Resolver, now: Instant) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(tx) = r.poll_transmit(now) {
        names.push(question(&tx).0);
        answer(r, now, &tx, &reply(&tx).rcode(rcode::NAME_ERROR).build());
    }
    names
}

#[test]
fn search_domains_follow_ndots() {
    let search = ["corp.example", "Example.NET."];
    let mut r = resolver(&[S1], &search);
    assert_eq!(r.search_domains(), ["corp.example", "example.net"]);

    // No dot, fewer than ndots = 1: search domains first, the name itself last.
    let id = r.resolve(ms(0), "intranet", Family::V4).unwrap();
    assert_eq!(
        names_asked(&mut r, ms(0)),
        ["intranet.corp.example", "intranet.example.net", "intranet"]
    );
    assert_eq!(result(&mut r), (id, Err(ResolveError::NameNotFound)));

    // One dot: the name itself first.
    let id = r.resolve(ms(0), "build01.lab", Family::V4).unwrap();
    assert_eq!(
        names_asked(&mut r, ms(0)),
        [
            "build01.lab",
            "build01.lab.corp.example",
            "build01.lab.example.net"
        ]
    );
    assert_eq!(result(&mut r), (id, Err(ResolveError::NameNotFound)));

    // A trailing dot: only the name itself.
    let id = r.resolve(ms(0), "build02.lab.", Family::V4).unwrap();
    assert_eq!(names_asked(&mut r, ms(0)), ["build02.lab"]);
    assert_eq!(result(&mut r), (id, Err(ResolveError::NameNotFound)));

    // ndots = 2: one dot is not enough to go first.
    let options = ResolverOptions {
        ndots: 2,
        ..ResolverOptions::default()
    };
    let mut r = resolver_with(&[S1], &search, options);
    r.resolve(ms(0), "build03.lab", Family::V4).unwrap();
    assert_eq!(
        names_asked(&mut r, ms(0)),
        [
            "build03.lab.corp.example",
            "build03.lab.example.net",
            "build03.lab"
        ]
    );
}

#[test]
fn search_stops_at_the_first_name_with_addresses() {
    let mut r = resolver(&[S1], &["corp.example", "example.net"]);
    let id = r.resolve(ms(0), "wiki", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    assert_eq!(question(&tx).0, "wiki.corp.example");
    answer(
        &mut r,
        ms(1),
        &tx,
        &reply(&tx).rcode(rcode::NAME_ERROR).build(),
    );
    let tx = transmit(&mut r, ms(1));
    assert_eq!(question(&tx).0, "wiki.example.net");
    answer(
        &mut r,
        ms(2),
        &tx,
        &reply(&tx).a("wiki.example.net", 60, [10, 3, 0, 1]).build(),
    );
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 3, 0, 1)])));
    assert!(r.poll_transmit(ms(2)).is_none());

    // Asked again, both candidates come from the cache: the NXDOMAIN and the answer.
    let id = r.resolve(ms(3), "wiki", Family::V4).unwrap();
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 3, 0, 1)])));
    assert!(r.poll_transmit(ms(3)).is_none());
}

#[test]
fn nodata_anywhere_beats_not_found() {
    let mut r = resolver(&[S1], &["corp.example"]);
    let id = r.resolve(ms(0), "printer", Family::V6).unwrap();
    let tx = transmit(&mut r, ms(0));
    assert_eq!(question(&tx).0, "printer.corp.example");
    // The name exists, without AAAA.
    answer(
        &mut r,
        ms(1),
        &tx,
        &reply(&tx).soa("corp.example", 60, 60).build(),
    );
    let tx = transmit(&mut r, ms(1));
    assert_eq!(question(&tx).0, "printer");
    answer(
        &mut r,
        ms(2),
        &tx,
        &reply(&tx).rcode(rcode::NAME_ERROR).build(),
    );
    assert_eq!(result(&mut r), (id, Err(ResolveError::NoAddresses)));
}

#[test]
fn cache_hit_and_ttl_expiry() {
    let mut r = resolver(&[S1], &[]);
    r.resolve(ms(1_000), "db.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(1_000));
    answer(
        &mut r,
        ms(1_000),
        &tx,
        &reply(&tx).a("db.corp", 60, [10, 4, 0, 1]).build(),
    );
    assert_eq!(result(&mut r).1, Ok(vec![v4(10, 4, 0, 1)]));

    // Within the TTL: answered at once, nothing sent, even with different case.
    let id = r.resolve(ms(60_999), "DB.corp.", Family::V4).unwrap();
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 4, 0, 1)])));
    assert!(r.poll_transmit(ms(60_999)).is_none());
    // The AAAA side was never asked, so a dual lookup still queries it.
    r.resolve(ms(60_999), "db.corp", Family::Both).unwrap();
    let tx = transmit(&mut r, ms(60_999));
    assert_eq!(question(&tx).1, RecordType::Aaaa);
    assert!(r.poll_transmit(ms(60_999)).is_none());
    answer(&mut r, ms(60_999), &tx, &reply(&tx).build());
    assert_eq!(result(&mut r).1, Ok(vec![v4(10, 4, 0, 1)]));

    // At expiry: asked again.
    r.resolve(ms(61_000), "db.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_none());
    assert_eq!(question(&transmit(&mut r, ms(61_000))).0, "db.corp");
}

#[test]
fn ttls_are_clamped() {
    let options = ResolverOptions {
        min_ttl: Duration::from_secs(5),
        max_ttl: Duration::from_secs(10),
        ..ResolverOptions::default()
    };
    let mut r = resolver_with(&[S1], &[], options);
    r.resolve(ms(0), "zero.corp", Family::V4).unwrap();
    r.resolve(ms(0), "day.corp", Family::V4).unwrap();
    let tx_zero = transmit(&mut r, ms(0));
    let tx_day = transmit(&mut r, ms(0));
    answer(
        &mut r,
        ms(0),
        &tx_zero,
        &reply(&tx_zero).a("zero.corp", 0, [10, 0, 0, 1]).build(),
    );
    answer(
        &mut r,
        ms(0),
        &tx_day,
        &reply(&tx_day).a("day.corp", 86_400, [10, 0, 0, 2]).build(),
    );
    assert_eq!(result(&mut r).1, Ok(vec![v4(10, 0, 0, 1)]));
    assert_eq!(result(&mut r).1, Ok(vec![v4(10, 0, 0, 2)]));

    r.resolve(ms(4_999), "zero.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_some(), "TTL 0 raised to 5 s");
    r.resolve(ms(5_000), "zero.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_none());
    r.resolve(ms(9_999), "day.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_some());
    r.resolve(ms(10_000), "day.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_none(), "a day cut to 10 s");
}

#[test]
fn nxdomain_is_cached_for_the_soa_minimum() {
    let mut r = resolver(&[S1], &[]);
    let id = r.resolve(ms(0), "gone.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    // RFC 2308: the smaller of the SOA's TTL (60) and MINIMUM (30).
    let bytes = reply(&tx)
        .rcode(rcode::NAME_ERROR)
        .soa("corp", 60, 30)
        .build();
    answer(&mut r, ms(0), &tx, &bytes);
    assert_eq!(result(&mut r), (id, Err(ResolveError::NameNotFound)));

    // NXDOMAIN covers every type.
    let id = r.resolve(ms(29_999), "gone.corp", Family::Both).unwrap();
    assert_eq!(result(&mut r), (id, Err(ResolveError::NameNotFound)));
    assert!(r.poll_transmit(ms(29_999)).is_none());

    r.resolve(ms(30_000), "gone.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_none());
    let tx = transmit(&mut r, ms(30_000));
    // Without an SOA: the default of 10 s.
    answer(
        &mut r,
        ms(30_000),
        &tx,
        &reply(&tx).rcode(rcode::NAME_ERROR).build(),
    );
    assert_eq!(result(&mut r).1, Err(ResolveError::NameNotFound));
    r.resolve(ms(39_999), "gone.corp", Family::V4).unwrap();
    assert_eq!(result(&mut r).1, Err(ResolveError::NameNotFound));
    r.resolve(ms(40_000), "gone.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_none());
}

#[test]
fn negative_ttl_is_capped() {
    let mut r = resolver(&[S1], &[]);
    r.resolve(ms(0), "gone.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    let bytes = reply(&tx)
        .rcode(rcode::NAME_ERROR)
        .soa("corp", 86_400, 86_400)
        .build();
    answer(&mut r, ms(0), &tx, &bytes);
    assert_eq!(result(&mut r).1, Err(ResolveError::NameNotFound));
    r.resolve(ms(299_999), "gone.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_some());
    r.resolve(ms(300_000), "gone.corp", Family::V4).unwrap();
    assert!(r.poll_result().is_none());
}

#[test]
fn timeouts_retry_across_servers_with_backoff() {
    let mut r = resolver(&[S1, S2], &[]);
    let id = r.resolve(ms(0), "slow.corp", Family::V4).unwrap();
    // Round 0 waits 2 s per server, round 1 4 s.
    let plan = [
        (0, S1, 2_000),
        (2_000, S2, 4_000),
        (4_000, S1, 8_000),
        (8_000, S2, 12_000),
    ];
    let mut sent = Vec::new();
    for (at, to, deadline) in plan {
        let tx = transmit(&mut r, ms(at));
        assert_eq!(tx.server, server(to), "at {at} ms");
        assert_eq!(question(&tx).0, "slow.corp");
        assert!(r.poll_transmit(ms(at)).is_none());
        assert_eq!(r.poll_timeout(), Some(ms(deadline)));
        // Early: nothing happens.
        r.handle_timeout(ms(deadline - 1));
        assert!(r.poll_transmit(ms(deadline - 1)).is_none());
        assert!(r.poll_result().is_none());
        r.handle_timeout(ms(deadline));
        sent.push(tx);
    }
    assert_eq!(result(&mut r), (id, Err(ResolveError::Timeout)));
    assert_eq!(r.poll_timeout(), None);
    let mut ids: Vec<u16> = sent.iter().map(|tx| tx.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each attempt has its own id");
}

#[test]
fn a_late_answer_from_an_earlier_attempt_counts() {
    let mut r = resolver(&[S1, S2], &[]);
    let id = r.resolve(ms(0), "late.corp", Family::V4).unwrap();
    let first = transmit(&mut r, ms(0));
    r.handle_timeout(ms(2_000));
    let second = transmit(&mut r, ms(2_000));
    assert_eq!(second.server, server(S2));
    answer(
        &mut r,
        ms(2_500),
        &first,
        &reply(&first).a("late.corp", 60, [10, 5, 0, 1]).build(),
    );
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 5, 0, 1)])));
    assert_eq!(r.poll_timeout(), None);
    // The second server's answer, now late, is unsolicited.
    let late = reply(&second).a("late.corp", 60, [10, 5, 0, 2]).build();
    assert_eq!(
        r.handle_udp_response(ms(2_600), second.server, second.local_port, &late),
        Err(ResponseDrop::Unsolicited)
    );
}

#[test]
fn servfail_and_refused_move_to_the_next_server_at_once() {
    let mut r = resolver(&[S1, S2], &[]);
    let id = r.resolve(ms(0), "flaky.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    answer(
        &mut r,
        ms(10),
        &tx,
        &reply(&tx).rcode(rcode::SERVER_FAILURE).build(),
    );
    let tx = transmit(&mut r, ms(10));
    assert_eq!(tx.server, server(S2));
    assert_eq!(r.poll_timeout(), Some(ms(2_010)));
    answer(
        &mut r,
        ms(20),
        &tx,
        &reply(&tx).a("flaky.corp", 60, [10, 6, 0, 1]).build(),
    );
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 6, 0, 1)])));

    // Every server refusing ends the lookup without waiting for a timeout, and a server that
    // refused is not asked again in the next round.
    let id = r.resolve(ms(100), "secret.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(100));
    assert_eq!(tx.server, server(S1));
    answer(
        &mut r,
        ms(101),
        &tx,
        &reply(&tx).rcode(rcode::REFUSED).build(),
    );
    let tx = transmit(&mut r, ms(101));
    assert_eq!(tx.server, server(S2));
    r.handle_timeout(ms(2_101));
    let tx = transmit(&mut r, ms(2_101));
    assert_eq!(tx.server, server(S2), "S1 refused: round 1 skips it");
    answer(
        &mut r,
        ms(2_102),
        &tx,
        &reply(&tx).rcode(rcode::SERVER_FAILURE).build(),
    );
    assert_eq!(result(&mut r), (id, Err(ResolveError::ServerFailure)));
    assert!(r.poll_transmit(ms(2_102)).is_none());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn server_failure_moves_to_the_next_search_candidate() {
    let mut r = resolver(&[S1], &["corp.example"]);
    let id = r.resolve(ms(0), "app", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    assert_eq!(question(&tx).0, "app.corp.example");
    answer(
        &mut r,
        ms(1),
        &tx,
        &reply(&tx).rcode(rcode::SERVER_FAILURE).build(),
    );
    let tx = transmit(&mut r, ms(1));
    assert_eq!(question(&tx).0, "app");
    answer(
        &mut r,
        ms(2),
        &tx,
        &reply(&tx).rcode(rcode::NAME_ERROR).build(),
    );
    assert_eq!(result(&mut r), (id, Err(ResolveError::ServerFailure)));
}

#[test]
fn truncation_falls_back_to_tcp_on_the_same_server() {
    let mut r = resolver(&[S1, S2], &[]);
    let id = r.resolve(ms(0), "big.corp", Family::V4).unwrap();
    let udp = transmit(&mut r, ms(0));
    // Cut in the middle of the second record, as some servers do.
    let mut cut = reply(&udp)
        .truncated()
        .a("big.corp", 60, [10, 7, 0, 1])
        .a("big.corp", 60, [10, 7, 0, 2])
        .build();
    cut.truncate(cut.len() - 3);
    answer(&mut r, ms(10), &udp, &cut);
    assert!(r.poll_result().is_none());

    let tcp = transmit(&mut r, ms(10));
    assert_eq!(tcp.server, server(S1));
    assert_eq!(tcp.transport, DnsTransport::Tcp);
    assert_eq!(question(&tcp), ("big.corp".to_owned(), RecordType::A));
    assert_eq!(
        usize::from(u16::from_be_bytes([tcp.bytes[0], tcp.bytes[1]])),
        tcp.bytes.len() - 2
    );
    assert_eq!(tcp_frame_len(&tcp.bytes), Some(tcp.bytes.len()));
    assert_eq!(r.poll_timeout(), Some(ms(2_010)));

    // The same response over UDP is no answer to the TCP query.
    let full = reply(&tcp)
        .a("big.corp", 60, [10, 7, 0, 1])
        .a("big.corp", 60, [10, 7, 0, 2]);
    let frame = full.frame();
    assert_eq!(
        r.handle_udp_response(ms(20), tcp.server, tcp.local_port, &frame[2..]),
        Err(ResponseDrop::Unsolicited)
    );
    // A frame whose length does not match is malformed.
    assert_eq!(
        r.handle_tcp_response(ms(20), tcp.server, &frame[..frame.len() - 1]),
        Err(ResponseDrop::Malformed)
    );
    r.handle_tcp_response(ms(20), tcp.server, &frame).unwrap();
    assert_eq!(
        result(&mut r),
        (id, Ok(vec![v4(10, 7, 0, 1), v4(10, 7, 0, 2)]))
    );
}

#[test]
fn failed_tcp_connection_moves_on() {
    let mut r = resolver(&[S1, S2], &[]);
    r.resolve(ms(0), "big.corp", Family::V4).unwrap();
    let udp = transmit(&mut r, ms(0));
    answer(&mut r, ms(1), &udp, &reply(&udp).truncated().build());
    let tcp = transmit(&mut r, ms(1));
    assert_eq!(tcp.transport, DnsTransport::Tcp);
    assert!(!r.handle_tcp_failure(ms(2), tcp.server, tcp.id.wrapping_add(1)));
    assert!(r.handle_tcp_failure(ms(2), tcp.server, tcp.id));
    let next = transmit(&mut r, ms(2));
    assert_eq!(next.server, server(S2));
    assert_eq!(next.transport, DnsTransport::Udp);

    // A truncated answer over TCP is a failure of that server.
    answer(&mut r, ms(3), &next, &reply(&next).truncated().build());
    let tcp = transmit(&mut r, ms(3));
    assert_eq!((tcp.server, tcp.transport), (server(S2), DnsTransport::Tcp));
    r.handle_tcp_response(ms(4), tcp.server, &reply(&tcp).truncated().frame())
        .unwrap();
    let again = transmit(&mut r, ms(4));
    assert_eq!(
        (again.server, again.transport),
        (server(S1), DnsTransport::Udp)
    );
}

#[test]
fn mismatched_responses_are_dropped() {
    let mut r = resolver(&[S1, S2], &[]);
    let id = r.resolve(ms(0), "target.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    let good = reply(&tx).a("target.corp", 60, [10, 8, 8, 8]).build();
    let forged = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        edit(&mut bytes);
        bytes
    };
    let wrong_id = forged(&|b| b[1] ^= 1);
    let not_response = forged(&|b| b[2] &= 0x7F);
    // "target.corq": another name, same length.
    let wrong_name = forged(&|b| b[HEADER_LEN + 11] = b'q');
    let qtype_at = HEADER_LEN + encode_name("target.corp").len() + 1;
    let wrong_type = forged(&|b| b[qtype_at] = 28);
    let deliveries: Vec<(SocketAddr, u16, &[u8], ResponseDrop)> = vec![
        (
            tx.server,
            tx.local_port,
            &wrong_id,
            ResponseDrop::Unsolicited,
        ),
        (
            tx.server,
            tx.local_port,
            &not_response,
            ResponseDrop::Unsolicited,
        ),
        (
            tx.server,
            tx.local_port,
            &wrong_name,
            ResponseDrop::Unsolicited,
        ),
        (
            tx.server,
            tx.local_port,
            &wrong_type,
            ResponseDrop::Unsolicited,
        ),
        (server(S2), tx.local_port, &good, ResponseDrop::Unsolicited),
        (
            SocketAddr::new(S1, 5353),
            tx.local_port,
            &good,
            ResponseDrop::Unsolicited,
        ),
        (
            tx.server,
            tx.local_port.wrapping_add(1),
            &good,
            ResponseDrop::Unsolicited,
        ),
        (
            tx.server,
            tx.local_port,
            &good[..good.len() - 1],
            ResponseDrop::Malformed,
        ),
        (
            tx.server,
            tx.local_port,
            &good[..1],
            ResponseDrop::Malformed,
        ),
    ];
    for (from, port, bytes, why) in deliveries {
        assert_eq!(
            r.handle_udp_response(ms(5), from, port, bytes),
            Err(why),
            "{from} {port}"
        );
    }
    assert_eq!(
        r.handle_tcp_response(ms(5), tx.server, &reply(&tx).frame()),
        Err(ResponseDrop::Unsolicited)
    );
    assert!(r.poll_result().is_none());
    assert!(r.poll_transmit(ms(5)).is_none());
    assert_eq!(r.poll_timeout(), Some(ms(2_000)));

    answer(&mut r, ms(6), &tx, &good);
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 8, 8, 8)])));
    assert_eq!(
        r.handle_udp_response(ms(7), tx.server, tx.local_port, &good),
        Err(ResponseDrop::Unsolicited)
    );
}

#[test]
fn ip_literals_and_special_names_never_query() {
    // No DNS servers at all: none of these needs one.
    let mut r = resolver(&[], &["corp.example"]);
    let cases: Vec<(&str, Family, Result<Addresses, ResolveError>)> = vec![
        ("10.1.2.3", Family::V6, Ok(vec![v4(10, 1, 2, 3)])),
        ("fd00::1", Family::V4, Ok(vec!["fd00::1".parse().unwrap()])),
        (
            "[fd00::2]",
            Family::Both,
            Ok(vec!["fd00::2".parse().unwrap()]),
        ),
        ("localhost", Family::V4, Ok(vec![v4(127, 0, 0, 1)])),
        (
            "LOCALHOST.",
            Family::V6,
            Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]),
        ),
        (
            "db.localhost",
            Family::Both,
            Ok(vec![v4(127, 0, 0, 1), IpAddr::V6(Ipv6Addr::LOCALHOST)]),
        ),
        ("x.invalid", Family::V4, Err(ResolveError::NameNotFound)),
        ("hidden.onion", Family::V4, Err(ResolveError::NameNotFound)),
    ];
    for (name, family, expected) in cases {
        let id = r.resolve(ms(0), name, family).unwrap();
        assert_eq!(result(&mut r), (id, expected), "{name}");
        assert!(r.poll_transmit(ms(0)).is_none(), "{name}");
    }
    // "notlocalhost" is an ordinary name, and needs a server.
    assert_eq!(
        r.resolve(ms(0), "notlocalhost", Family::V4),
        Err(ResolveError::NoServers)
    );
    assert_eq!(r.lookups_in_progress(), 0);
}

#[test]
fn invalid_names_are_refused() {
    let mut r = resolver(&[S1], &[]);
    let long_label = "a".repeat(64);
    let long_name = ["abcdefghij"; 26].join(".");
    for name in [
        "",
        ".",
        "a..b",
        ".corp",
        "bad name",
        "t\u{e4}st.corp",
        &long_label,
        &long_name,
    ] {
        assert_eq!(
            r.resolve(ms(0), name, Family::V4),
            Err(ResolveError::InvalidName),
            "{name:?}"
        );
    }
    assert!(r.poll_transmit(ms(0)).is_none());
    assert!(r.poll_result().is_none());
}

#[test]
fn search_candidates_over_the_length_limit_are_skipped() {
    let long_domain = ["abcdefghi"; 20].join(".");
    let mut r = resolver(&[S1], &[&long_domain]);
    let name = ["host"; 30].join(".");
    assert!(name.len() + long_domain.len() > 253);
    r.resolve(ms(0), &name, Family::V4).unwrap();
    assert_eq!(names_asked(&mut r, ms(0)), [name]);
}

#[test]
fn same_seed_same_queries() {
    fn script(seed: u8) -> Vec<DnsTransmit> {
        let mut r = Resolver::new(
            &tunnel(&[S1, S2], &["corp.example"]),
            ResolverOptions::default(),
            &Seed::from_byte(seed),
        );
        let mut sent = Vec::new();
        r.resolve(ms(0), "alpha", Family::Both).unwrap();
        r.resolve(ms(0), "beta.corp", Family::V4).unwrap();
        while let Some(tx) = r.poll_transmit(ms(0)) {
            sent.push(tx);
        }
        r.handle_timeout(ms(2_000));
        while let Some(tx) = r.poll_transmit(ms(2_000)) {
            sent.push(tx);
        }
        sent
    }
    let first = script(1);
    assert_eq!(first.len(), 6);
    assert_eq!(first, script(1));
    let other = script(2);
    assert_ne!(
        first
            .iter()
            .map(|tx| (tx.id, tx.local_port))
            .collect::<Vec<_>>(),
        other
            .iter()
            .map(|tx| (tx.id, tx.local_port))
            .collect::<Vec<_>>()
    );
    // Same questions, same servers; only the random fields differ.
    for (a, b) in first.iter().zip(&other) {
        assert_eq!((a.server, question(a)), (b.server, question(b)));
    }
}

#[test]
fn cancel_stops_a_lookup() {
    let mut r = resolver(&[S1], &[]);
    let id = r.resolve(ms(0), "gone.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    assert!(r.cancel(id));
    assert!(!r.cancel(id));
    assert_eq!(r.poll_timeout(), None);
    assert!(r.poll_transmit(ms(0)).is_none());
    let bytes = reply(&tx).a("gone.corp", 60, [10, 0, 0, 1]).build();
    assert_eq!(
        r.handle_udp_response(ms(1), tx.server, tx.local_port, &bytes),
        Err(ResponseDrop::Unsolicited)
    );
    assert!(r.poll_result().is_none());

    // A result already waiting is withdrawn too.
    let id = r.resolve(ms(2), "10.0.0.1", Family::V4).unwrap();
    assert!(r.cancel(id));
    assert!(r.poll_result().is_none());
}

#[test]
fn new_servers_restart_queries_and_empty_the_cache() {
    let mut r = resolver(&[S1], &[]);
    r.resolve(ms(0), "cached.corp", Family::V4).unwrap();
    let tx = transmit(&mut r, ms(0));
    answer(
        &mut r,
        ms(0),
        &tx,
        &reply(&tx).a("cached.corp", 600, [10, 0, 0, 1]).build(),
    );
    assert_eq!(result(&mut r).1, Ok(vec![v4(10, 0, 0, 1)]));

    let id = r.resolve(ms(1), "pending.corp", Family::V4).unwrap();
    let old = transmit(&mut r, ms(1));
    // The same servers again (a reconnect): nothing changes.
    r.set_tunnel_config(&tunnel(&[S1], &[]));
    assert!(r.poll_transmit(ms(1)).is_none());

    r.set_tunnel_config(&tunnel(&[S2], &[]));
    assert_eq!(r.servers(), [server(S2)]);
    let new = transmit(&mut r, ms(2));
    assert_eq!(new.server, server(S2));
    assert_eq!(question(&new).0, "pending.corp");
    let stale = reply(&old).a("pending.corp", 60, [10, 0, 0, 2]).build();
    assert_eq!(
        r.handle_udp_response(ms(3), old.server, old.local_port, &stale),
        Err(ResponseDrop::Unsolicited)
    );
    answer(
        &mut r,
        ms(3),
        &new,
        &reply(&new).a("pending.corp", 60, [10, 0, 0, 3]).build(),
    );
    assert_eq!(result(&mut r), (id, Ok(vec![v4(10, 0, 0, 3)])));

    r.resolve(ms(4), "cached.corp", Family::V4).unwrap();
    assert!(
        r.poll_result().is_none(),
        "the cache went with the old servers"
    );

    // No servers left: lookups in progress fail.
    let pending = r.resolve(ms(5), "more.corp", Family::V4).unwrap();
    r.set_tunnel_config(&tunnel(&[], &[]));
    let mut failed: Vec<_> = std::iter::from_fn(|| r.poll_result()).collect();
    failed.sort_by_key(|(id, _)| *id);
    assert_eq!(failed.len(), 2);
    assert!(failed.contains(&(pending, Err(ResolveError::NoServers))));
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn lookups_are_bounded() {
    let options = ResolverOptions {
        max_lookups: 2,
        ..ResolverOptions::default()
    };
    let mut r = resolver_with(&[S1], &[], options);
    r.resolve(ms(0), "a.corp", Family::V4).unwrap();
    r.resolve(ms(0), "b.corp", Family::V4).unwrap();
    assert_eq!(
        r.resolve(ms(0), "c.corp", Family::V4),
        Err(ResolveError::TooManyLookups)
    );
    // Literals hold no lookup and still work.
    assert!(r.resolve(ms(0), "10.0.0.1", Family::V4).is_ok());
}

#[test]
fn servers_are_deduplicated_and_use_the_configured_port() {
    let options = ResolverOptions {
        server_port: 5353,
        ..ResolverOptions::default()
    };
    let r = resolver_with(
        &[S1, S1, IpAddr::V4(Ipv4Addr::UNSPECIFIED), S2],
        &[],
        options,
    );
    assert_eq!(
        r.servers(),
        [SocketAddr::new(S1, 5353), SocketAddr::new(S2, 5353)]
    );
}

#[test]
fn tcp_frames_are_delimited() {
    assert_eq!(tcp_frame_len(&[]), None);
    assert_eq!(tcp_frame_len(&[0]), None);
    assert_eq!(tcp_frame_len(&[0, 3, 1, 2]), None);
    assert_eq!(tcp_frame_len(&[0, 3, 1, 2, 3]), Some(5));
    assert_eq!(tcp_frame_len(&[0, 3, 1, 2, 3, 9]), Some(5));
}

/// Bytes that answer the query `tx` in their first bytes (id and question), whatever follows.
fn answers_question(tx: &DnsTransmit, bytes: &[u8]) -> bool {
    let query = message_of(tx);
    bytes.len() >= query.len()
        && bytes[..2] == query[..2]
        && bytes[HEADER_LEN..query.len()].eq_ignore_ascii_case(&query[HEADER_LEN..])
}

/// A piece of a response body: random bytes, or a record that is well formed or nearly so,
/// owned by the question's name (compressed or not) or another, of the types the resolver
/// reads and some it does not.
fn body_chunk() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        prop::sample::select(vec![1u16, 5, 28, 6, 99]),
        prop::sample::select(vec![0u8, 1, 2]),
        any::<bool>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(rtype, owner, well_formed, ttl, mut rdata)| {
            let mut out = match owner {
                0 => vec![0xC0, 0x0C],
                1 => encode_name("target.corp.example"),
                _ => encode_name("other.corp.example"),
            };
            if well_formed {
                match rtype {
                    1 => rdata.resize(4, 10),
                    28 => rdata.resize(16, 0xfd),
                    5 => rdata = encode_name("alias.corp.example"),
                    _ => {}
                }
            }
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(&rdata);
            out
        });
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..40),
        3 => record,
    ]
}

/// Either bytes from nowhere, or the query's id and question under random flags and counts
/// followed by record-shaped chunks, which reach deeper into the resolver.
#[derive(Clone, Debug)]
enum Response {
    Random(Vec<u8>),
    Shaped {
        response: bool,
        truncated: bool,
        rcode: u8,
        answers: u16,
        authority: u16,
        body: Vec<Vec<u8>>,
    },
}

fn arbitrary_response() -> impl Strategy<Value = Response> {
    let shaped = (
        proptest::bool::weighted(0.9),
        proptest::bool::weighted(0.2),
        prop::sample::select(vec![0u8, 0, 0, 2, 3, 3, 5, 1, 4, 9]),
        0u16..5,
        0u16..3,
        proptest::collection::vec(body_chunk(), 0..5),
    )
        .prop_map(
            |(response, truncated, rcode, answers, authority, body)| Response::Shaped {
                response,
                truncated,
                rcode,
                answers,
                authority,
                body,
            },
        );
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Response::Random),
        4 => shaped,
    ]
}

fn response_bytes(tx: &DnsTransmit, response: Response) -> Vec<u8> {
    match response {
        Response::Random(bytes) => bytes,
        Response::Shaped {
            response,
            truncated,
            rcode,
            answers,
            authority,
            body,
        } => {
            let mut bytes = message_of(tx).to_vec();
            let mut header = DnsPacket::new_unchecked(&mut bytes[..]);
            header.set_response(response);
            header.set_truncated(truncated);
            header.set_rcode(rcode);
            header.set_answer_count(answers);
            header.set_authority_count(authority);
            for chunk in body {
                bytes.extend_from_slice(&chunk);
            }
            bytes
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_responses_never_panic_or_complete_unmatched(
        response in arbitrary_response(),
    ) {
        let mut r = resolver(&[S1, S2], &["corp.example"]);
        let id = r.resolve(ms(0), "target", Family::V4).unwrap();
        let tx = transmit(&mut r, ms(0));
        let bytes = response_bytes(&tx, response);
        let outcome = r.handle_udp_response(ms(1), tx.server, tx.local_port, &bytes);
        let finished = r.poll_result();
        let next = r.poll_transmit(ms(1));
        let moved = finished.is_some() || next.is_some();
        if outcome.is_err() {
            // A dropped response changes nothing.
            prop_assert!(!moved);
            prop_assert_eq!(r.poll_timeout(), Some(ms(2_000)));
        } else {
            // Only the response to the query moves it on.
            prop_assert!(moved);
            prop_assert!(answers_question(&tx, &bytes));
            prop_assert!(DnsPacket::new_checked(&bytes[..]).unwrap().is_response());
        }
        if let Some((done, Ok(addresses))) = &finished {
            prop_assert_eq!(*done, id);
            prop_assert!(!addresses.is_empty());
            prop_assert!(addresses.iter().all(IpAddr::is_ipv4));
        }
        // Whatever happened, the same bytes over TCP are not an answer to a UDP query.
        let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&bytes);
        prop_assert!(r.handle_tcp_response(ms(2), tx.server, &frame).is_err());
    }
}
