//! The seeds of the client-side targets (`ovpn_client_session`, `ovpn_push`, `ovpn_profile`,
//! `net_stack`, `net_dns`, `net_tcp`, `proxy`), built from the project's test material: the
//! profiles under `testvectors/profiles/`, a client session recorded against the server
//! harness, DNS responses, packets and segments written here.

use std::path::Path;

use erebus_wire::dns::{RecordType, emit_query, query_len};

use crate::ovpn_client_session::{self as client, Driver as ClientDriver};
use crate::ovpn_common::{CA, CLIENT_CERT, CLIENT_KEY, SESSION_CONFIGS, TA_KEY, TC_KEY};
use crate::ovpn_server_session::{self as server, Driver as ServerDriver};
use crate::seeds::Seed;
use crate::{Records, net_dns, net_stack, net_tcp, proxy};

/// A target input: the configuration byte, then the steps.
fn input(config: u8, steps: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![config];
    for (tag, body) in steps {
        Records::encode(&mut out, *tag, body);
    }
    out
}

fn ms(millis: u32) -> Vec<u8> {
    millis.to_be_bytes().to_vec()
}

// ----------------------------------------------------------------------------------------
// ovpn_client_session

/// Records the server harness's packets as it answers the client of configuration `config`
/// until both are up; then inner packets both ways and `extra` client steps, each followed
/// by the exchange it causes.
pub fn recorded_client(config: u8, extra: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut client = ClientDriver::new(config);
    let mut server = ServerDriver::new(config);
    let mut out = vec![config];
    let (mut to_server, mut to_client) = (0, 0);
    let exchange = |client: &mut ClientDriver,
                    server: &mut ServerDriver,
                    out: &mut Vec<u8>,
                    to_server: &mut usize,
                    to_client: &mut usize| {
        let mut progress = false;
        while *to_server < client.sent.len() {
            let packet = client.sent[*to_server].clone();
            *to_server += 1;
            server.step(server::RECEIVE, &packet);
            progress = true;
        }
        while *to_client < server.sent.len() {
            let packet = server.sent[*to_client].clone();
            *to_client += 1;
            Records::encode(out, client::RECEIVE, &packet);
            client.step(client::RECEIVE, &packet);
            progress = true;
        }
        progress
    };
    for round in 0..300 {
        let progress = exchange(
            &mut client,
            &mut server,
            &mut out,
            &mut to_server,
            &mut to_client,
        );
        if client.ups == 1 && server.ups == 1 {
            break;
        }
        if !progress {
            Records::encode(&mut out, client::ADVANCE, &ms(500));
            client.step(client::ADVANCE, &ms(500));
            server.step(server::ADVANCE, &ms(500));
        }
        assert!(round < 299, "the recorded client does not come up");
    }
    for index in 0..2u8 {
        let inner = [
            0x45, 0, 0, 28, index, 0, 0, 0, 64, 17, 0, 0, 10, 8, 0, 1, 10, 8, 0, 2,
        ];
        server.step(server::ENCAPSULATE, &inner);
        exchange(
            &mut client,
            &mut server,
            &mut out,
            &mut to_server,
            &mut to_client,
        );
        Records::encode(&mut out, client::ENCAPSULATE, &inner);
        client.step(client::ENCAPSULATE, &inner);
    }
    for (tag, body) in extra {
        Records::encode(&mut out, *tag, body);
        client.step(*tag, body);
        if *tag == client::ADVANCE {
            server.step(server::ADVANCE, body);
        }
        for _ in 0..16 {
            if !exchange(
                &mut client,
                &mut server,
                &mut out,
                &mut to_server,
                &mut to_client,
            ) {
                break;
            }
        }
    }
    out
}

/// Seeds of `ovpn_client_session`.
pub fn ovpn_client_session() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for config in 0..SESSION_CONFIGS.len() as u8 {
        seeds.push((format!("up-{config}.client"), recorded_client(config, &[])));
    }
    seeds.push((
        "renegotiate.client".to_owned(),
        recorded_client(
            0,
            &[
                (client::RENEGOTIATE, Vec::new()),
                (client::ADVANCE, ms(1000)),
                (client::DEADLINE, Vec::new()),
            ],
        ),
    ));
    seeds.push((
        "close.client".to_owned(),
        recorded_client(
            2,
            &[
                (client::ADVANCE, ms(11_000)),
                (client::CLOSE, Vec::new()),
                (client::DEADLINE, Vec::new()),
            ],
        ),
    ));
    seeds.push((
        "keepalive-timeout.client".to_owned(),
        recorded_client(
            1,
            &[
                (client::DEADLINE, Vec::new()),
                (client::ADVANCE, ms(130_000)),
                (client::DEADLINE, Vec::new()),
            ],
        ),
    ));
    // Broken: without wrapping (configuration 2), hand-written control packets reach the
    // reliability layer as they are.
    let driver = ClientDriver::new(2);
    let ours = driver.session.local_session_id().0;
    let theirs = [0x5a; 8];
    let mut reset = vec![8 << 3];
    reset.extend_from_slice(&theirs);
    reset.push(1);
    reset.extend_from_slice(&0u32.to_be_bytes());
    reset.extend_from_slice(&ours);
    reset.extend_from_slice(&0u32.to_be_bytes());
    let mut ack = vec![5 << 3];
    ack.extend_from_slice(&theirs);
    ack.push(2);
    ack.extend_from_slice(&1u32.to_be_bytes());
    ack.extend_from_slice(&7u32.to_be_bytes());
    ack.extend_from_slice(&ours);
    let mut tls = vec![4 << 3];
    tls.extend_from_slice(&theirs);
    tls.push(0);
    tls.extend_from_slice(&1u32.to_be_bytes());
    tls.extend_from_slice(&[0x16, 3, 3, 0, 4, 2, 0, 0, 0]);
    seeds.push((
        "hand-reset.client".to_owned(),
        input(
            2,
            &[
                (client::RECEIVE, reset.clone()),
                (client::RECEIVE, ack),
                (client::RECEIVE, tls),
                (client::RECEIVE, reset[..5].to_vec()),
                (client::RECEIVE, vec![0x48, 0, 0, 5, 1, 2, 3, 4]),
                (client::ADVANCE, ms(2000)),
                (client::DEADLINE, Vec::new()),
                (client::TRANSPORT_CLOSED, Vec::new()),
            ],
        ),
    ));
    seeds
}

// ----------------------------------------------------------------------------------------
// ovpn_push

/// Seeds of `ovpn_push`.
pub fn ovpn_push() -> Vec<Seed> {
    let texts: [(&str, &str); 8] = [
        (
            "subnet.push",
            "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,\
             ifconfig 10.8.0.2 255.255.255.0,route 10.0.0.0 255.0.0.0,\
             dhcp-option DNS 10.8.0.1,dhcp-option DOMAIN corp.example,peer-id 0,\
             cipher AES-256-GCM,protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500\0",
        ),
        (
            "continued.push",
            "PUSH_REPLY,route 10.1.0.0 255.255.0.0,route 192.168.7.0 255.255.255.0 10.8.0.9 5,\
             push-continuation 2\0PUSH_REPLY,topology net30,ifconfig 10.8.0.6 10.8.0.5,\
             ifconfig-ipv6 fd00::1000/64 fd00::1,route-ipv6 2001:db8::/32,\
             redirect-gateway def1 bypass-dhcp ipv6,dhcp-option DNS6 fd00::53,\
             dhcp-option DOMAIN-SEARCH a.example,key-derivation tls-ekm,push-continuation 1\0",
        ),
        (
            "p2p-compress.push",
            "PUSH_REPLY,topology p2p,ifconfig 10.9.0.2 10.9.0.1,compress stub-v2,comp-lzo no,\
             auth-token SESS_ID_AT_0123456789abcdef,auth-token-user YWxpY2U=,\
             explicit-exit-notify 3,ping-exit 120,route-gateway dhcp,\
             redirect-gateway local autolocal block-local bypass-dns\r\n\0",
        ),
        (
            "messages.push",
            "AUTH_PENDING,timeout 60\0INFO_PRE,WEB_AUTH::https://example.invalid/auth\0\
             INFO,hello\0RESTART,[PN]server restarting\0HALT,bye\0EXIT\0AUTH_FAILED\0\
             AUTH_FAILED,TEMP[backoff 30,advance remote]: try later\0\
             AUTH_FAILED,SESSION:expired\0UNKNOWN_MESSAGE\0",
        ),
        (
            "bad-values.push",
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.0.255.0\0\
             PUSH_REPLY,route 10.0.0.0 300.0.0.0\0PUSH_REPLY,peer-id x\0\
             PUSH_REPLY,ping -1,tun-mtu 99999999999\0PUSH_REPLY,dhcp-option DNS\0",
        ),
        (
            "filtered.push",
            "PUSH_REPLY,route 10.2.0.0 255.255.0.0,redirect-gateway def1,\
             ifconfig 10.8.0.10 255.255.255.0,dhcp-option DOMAIN bad\0",
        ),
        (
            "odd-bytes.push",
            "PUSH_REPLY,,  ,route\t10.3.0.0 255.255.0.0\r\n\0\x01\x02PUSH_REPLY\0\0\0PUSH_RE",
        ),
        (
            "never-ends.push",
            "PUSH_REPLY,push-continuation 2\0PUSH_REPLY,push-continuation 2\0",
        ),
    ];
    let mut seeds = Vec::new();
    for (selector, (name, text)) in texts.iter().enumerate() {
        let mut bytes = vec![(selector as u8 % 3) | 0x80];
        bytes.extend_from_slice(text.as_bytes());
        seeds.push(((*name).to_owned(), bytes));
    }
    seeds
}

// ----------------------------------------------------------------------------------------
// ovpn_profile

/// Seeds of `ovpn_profile`.
pub fn ovpn_profile() -> Vec<Seed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testvectors/profiles");
    let mut seeds = Vec::new();
    for dir in [root.clone(), root.join("bad")] {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("testvectors/profiles")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "ovpn"))
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            let prefix = if dir == root { "" } else { "bad-" };
            seeds.push((
                format!("{prefix}{name}"),
                std::fs::read(&path).expect("a profile"),
            ));
        }
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let (ca, cert, key) = (text(CA), text(CLIENT_CERT), text(CLIENT_KEY));
    seeds.push((
        "inline-tls-crypt.ovpn".to_owned(),
        format!(
            "client\ndev tun\nproto udp\nremote vpn.example.com 1194\nremote-cert-tls server\n\
             verify-x509-name server.erebus.test name\ndata-ciphers AES-256-GCM:CHACHA20-POLY1305\n\
             auth-user-pass\n<ca>\n{ca}</ca>\n<cert>\n{cert}</cert>\n<key>\n{key}</key>\n\
             <tls-crypt>\n{}</tls-crypt>\n<auth-user-pass>\nalice\nwonderland\n</auth-user-pass>\n",
            text(TC_KEY)
        )
        .into_bytes(),
    ));
    seeds.push((
        "inline-tls-auth-blocks.ovpn".to_owned(),
        format!(
            "client\r\ndev tun\r\nremote-random\r\n<connection>\r\nremote 192.0.2.1 1194 udp\r\n\
             </connection>\r\n<connection>\r\nremote 192.0.2.2 443 tcp-client\r\n\
             tls-auth ta.key 1\r\n</connection>\r\nkey-direction 1\r\n<tls-auth>\r\n{}</tls-auth>\r\n\
             <ca>\r\n{ca}</ca>\r\nauth-user-pass creds.txt\r\npull-filter ignore \"route\"\r\nauth SHA256\r\n",
            text(TA_KEY)
        )
        .into_bytes(),
    ));
    seeds.push((
        "broken-inline.ovpn".to_owned(),
        format!(
            "client\nremote 192.0.2.1\n<ca>\n{}\n</ca>\n<tls-crypt>\n-----BEGIN OpenVPN Static key V1-----\n\
             00112233\n</tls-crypt>\n<key>\n",
            &ca[..ca.len() / 2]
        )
        .into_bytes(),
    ));
    seeds
}

// ----------------------------------------------------------------------------------------
// net_stack

/// An IPv4 packet from the peer to us (checksums left to the `FIXED` step).
fn ipv4(protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, protocol, 0, 0];
    packet.extend_from_slice(&net_stack::PEER_V4.octets());
    packet.extend_from_slice(&net_stack::LOCAL_V4.octets());
    packet.extend_from_slice(l4);
    net_stack::fix_checksums(&mut packet);
    packet
}

/// A TCP header and payload.
fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    let offset = ((20 + options.len()) / 4) as u8;
    l4.extend_from_slice(&[offset << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(options);
    l4.extend_from_slice(payload);
    l4
}

/// Seeds of `net_stack`.
pub fn net_stack() -> Vec<Seed> {
    let (syn, ack, psh, fin, rst) = (0x02, 0x10, 0x08, 0x01, 0x04);
    let mss = [2, 4, 0x05, 0x78, 1, 3, 3, 7, 4, 2, 0, 0];
    let ok = |p: Vec<u8>| (net_stack::FIXED, p);
    let mut seeds = Vec::new();
    // A client connects to our listener, sends a request, gets data back, closes.
    let iss = 5000u32;
    let steps = vec![
        ok(ipv4(
            6,
            &tcp(33000, net_stack::LISTEN_PORT, iss, 0, syn, &mss, &[]),
        )),
        // The SYN-ACK's sequence number is the stack's: the ACK below guesses, the fuzzer fixes.
        ok(ipv4(
            6,
            &tcp(33000, net_stack::LISTEN_PORT, iss + 1, 1, ack, &[], &[]),
        )),
        ok(ipv4(
            6,
            &tcp(
                33000,
                net_stack::LISTEN_PORT,
                iss + 1,
                1,
                ack | psh,
                &[],
                b"GET / HTTP/1.1\r\n\r\n",
            ),
        )),
        (net_stack::SOCKET, [vec![0, 1], vec![]].concat()),
        (
            net_stack::SOCKET,
            [vec![0, 0], b"HTTP/1.1 200 OK\r\n\r\n".to_vec()].concat(),
        ),
        ok(ipv4(
            6,
            &tcp(
                33000,
                net_stack::LISTEN_PORT,
                iss + 19,
                1,
                ack | fin,
                &[],
                &[],
            ),
        )),
        (net_stack::ADVANCE, ms(250)),
        (net_stack::SOCKET, vec![0, 2]),
        (net_stack::ADVANCE, ms(61_000)),
    ];
    seeds.push(("listener.stack".to_owned(), input(0, &steps)));
    // UDP, ICMP echo and errors, IPv6, junk.
    let mut udp = vec![0x00, 0x35, 0x14, 0xe9, 0, 0, 0, 0];
    udp.extend_from_slice(b"\x12\x34\x81\x80 a datagram");
    let echo = [8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
    let mut unreachable = vec![3, 3, 0, 0, 0, 0, 0, 0];
    unreachable.extend_from_slice(&ipv4(17, &[0x14, 0xe9, 0, 53, 0, 8, 0, 0])[..28]);
    let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
    v6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend_from_slice(&net_stack::LOCAL_V6.octets());
    v6.extend_from_slice(&[0, 53, 0x14, 0xe9, 0, 12, 0, 0, 1, 2, 3, 4]);
    let mut v6_icmp = v6[..40].to_vec();
    v6_icmp[6] = 58;
    v6_icmp.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    net_stack::fix_checksums(&mut v6);
    net_stack::fix_checksums(&mut v6_icmp);
    let mut fragment = ipv4(17, &udp);
    fragment[6] = 0x20;
    let steps = vec![
        (net_stack::UDP_SEND, b"a query".to_vec()),
        ok(ipv4(17, &udp)),
        ok(ipv4(1, &echo)),
        ok(ipv4(1, &unreachable)),
        ok(v6),
        ok(v6_icmp),
        (net_stack::INGRESS, fragment),
        (net_stack::INGRESS, vec![0x45, 0, 0, 20]),
        (
            net_stack::INGRESS,
            ipv4(6, &tcp(80, 49152, 1, 1, rst, &[], &[])),
        ),
        (net_stack::ADVANCE, ms(3000)),
    ];
    seeds.push(("udp-icmp-v6.stack".to_owned(), input(0, &steps)));
    // Exit mode: SYNs to elsewhere become flows, accepted or refused.
    let mut elsewhere = ipv4(6, &tcp(34000, 443, 9000, 0, syn, &mss, &[]));
    elsewhere[16..20].copy_from_slice(&[93, 184, 216, 34]);
    elsewhere[12..16].copy_from_slice(&[10, 8, 0, 7]);
    net_stack::fix_checksums(&mut elsewhere);
    let mut data = ipv4(6, &tcp(34000, 443, 9001, 1, ack | psh, &[], b"hello"));
    data[16..20].copy_from_slice(&[93, 184, 216, 34]);
    data[12..16].copy_from_slice(&[10, 8, 0, 7]);
    net_stack::fix_checksums(&mut data);
    let mut udp_elsewhere = ipv4(17, &udp);
    udp_elsewhere[16..20].copy_from_slice(&[8, 8, 8, 8]);
    net_stack::fix_checksums(&mut udp_elsewhere);
    let steps = vec![
        ok(elsewhere.clone()),
        ok(data),
        ok(udp_elsewhere),
        (net_stack::ADVANCE, ms(1000)),
        ok(elsewhere),
    ];
    seeds.push(("exit-accept.stack".to_owned(), input(1, &steps)));
    seeds.push(("exit-refuse.stack".to_owned(), input(3, &steps)));
    seeds
}

// ----------------------------------------------------------------------------------------
// net_dns

/// A DNS response for `name` and `qtype` (id 0, the harness writes the query's): `rcode`,
/// `answers` as (type, rdata) with the question's name, and an SOA in the authority section
/// when `soa` is set.
pub fn dns_response(
    name: &str,
    qtype: RecordType,
    rcode: u8,
    answers: &[(u16, Vec<u8>)],
    soa: bool,
) -> Vec<u8> {
    let mut query = vec![0; query_len(name).expect("a name")];
    emit_query(&mut query, 0, name, qtype, false).expect("a query");
    // The query has the header and the question: make it a response with answers.
    query[2] = 0x81;
    query[3] = 0x80 | rcode;
    query[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
    query[8..10].copy_from_slice(&u16::from(soa).to_be_bytes());
    for (rtype, rdata) in answers {
        query.extend_from_slice(&[0xc0, 12]);
        query.extend_from_slice(&rtype.to_be_bytes());
        query.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]);
        query.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        query.extend_from_slice(rdata);
    }
    if soa {
        let mut rdata = vec![2, b'n', b's', 0xc0, 12, 4, b'h', b'o', b's', b't', 0xc0, 12];
        for value in [1u32, 3600, 600, 86_400, 300] {
            rdata.extend_from_slice(&value.to_be_bytes());
        }
        query.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0x0e, 0x10]);
        query.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        query.extend_from_slice(&rdata);
    }
    query
}

/// A name in wire form.
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// Seeds of `net_dns`.
pub fn net_dns() -> Vec<Seed> {
    let a = |o: [u8; 4]| (1u16, o.to_vec());
    let aaaa = |last: u8| {
        let mut v = vec![0x20, 0x01, 0x0d, 0xb8];
        v.extend_from_slice(&[0; 11]);
        v.push(last);
        (28u16, v)
    };
    let name = "www.example.com";
    let mut seeds = Vec::new();
    // Family V4, the first name: an answer with two addresses.
    let answer = dns_response(
        name,
        RecordType::A,
        0,
        &[a([192, 0, 2, 1]), a([192, 0, 2, 2])],
        false,
    );
    seeds.push(("a.dns".to_owned(), input(0, &[(net_dns::UDP, answer)])));
    // Both families: A and AAAA, the AAAA through a CNAME.
    let cname = wire_name("cdn.example.net");
    let mut aaaa_answer = dns_response(name, RecordType::Aaaa, 0, &[(5, cname), aaaa(1)], false);
    // The AAAA's owner should be the CNAME target; leave the question's name: the fuzzer moves it.
    aaaa_answer.truncate(aaaa_answer.len());
    let steps = vec![
        (
            net_dns::UDP | 8,
            dns_response(name, RecordType::A, 0, &[a([198, 51, 100, 7])], false),
        ),
        (net_dns::UDP, aaaa_answer),
        (net_dns::RESOLVE, b"www.example.com".to_vec()),
    ];
    seeds.push(("both-cname.dns".to_owned(), input(2, &steps)));
    // A search-domain name: NXDOMAIN with an SOA, then the name itself has no data.
    let steps = vec![
        (
            net_dns::UDP,
            dns_response("intranet.corp.example", RecordType::A, 3, &[], true),
        ),
        (
            net_dns::UDP,
            dns_response("intranet", RecordType::A, 0, &[], true),
        ),
        (net_dns::ADVANCE, ms(5000)),
    ];
    seeds.push(("search-nxdomain.dns".to_owned(), input(4, &steps)));
    // Truncated over UDP, then the answer over TCP; a failing TCP connection.
    let mut truncated = dns_response(name, RecordType::A, 0, &[], false);
    truncated[2] |= 0x02;
    let steps = vec![
        (net_dns::UDP, truncated.clone()),
        (
            net_dns::TCP,
            dns_response(name, RecordType::A, 0, &[a([203, 0, 113, 5])], false),
        ),
        (net_dns::RESOLVE, b"\x00other.example".to_vec()),
        (net_dns::UDP, truncated),
        (net_dns::TCP_FAILURE, Vec::new()),
        (net_dns::ADVANCE, ms(20_000)),
    ];
    seeds.push(("truncated-tcp.dns".to_owned(), input(0, &steps)));
    // Failures and timeouts: SERVFAIL, REFUSED, nothing at all; junk; cancel.
    let steps = vec![
        (
            net_dns::UDP,
            dns_response(name, RecordType::Aaaa, 2, &[], false),
        ),
        (net_dns::UDP_RAW, b"\x00\x01\x81\x80".to_vec()),
        (
            net_dns::UDP,
            dns_response(name, RecordType::Aaaa, 5, &[], false),
        ),
        (net_dns::ADVANCE, ms(2500)),
        (net_dns::ADVANCE, ms(9000)),
        (net_dns::RESOLVE, b"\x01[fd00::1]".to_vec()),
        (net_dns::RESOLVE, b"\x02a..b".to_vec()),
        (net_dns::CANCEL, Vec::new()),
    ];
    seeds.push(("failures.dns".to_owned(), input(1, &steps)));
    seeds
}

// ----------------------------------------------------------------------------------------
// net_tcp

/// A `net_tcp` segment body: control (with ACK and raw bits), offsets, window, options,
/// payload length (see [`net_tcp::segment`]).
pub fn seg(control: u8, seq: u32, ack: u32, options: u8, payload_len: u16) -> Vec<u8> {
    let mut body = vec![control];
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend_from_slice(&ack.to_be_bytes());
    body.extend_from_slice(&0xffffu16.to_be_bytes());
    body.push(options);
    body.push(7);
    body.extend_from_slice(&1400u16.to_be_bytes());
    body.extend_from_slice(&[0, 1, 0, 100]);
    body.extend_from_slice(&payload_len.to_be_bytes());
    body
}

/// Seeds of `net_tcp`.
pub fn net_tcp() -> Vec<Seed> {
    let (none, psh, syn, fin, rst, ack) = (0u8, 1u8, 2u8, 3u8, 4u8, 8u8);
    let syn_options = 0x0f;
    let mut seeds = Vec::new();
    // Active open: SYN-ACK, data both ways, loss and retransmission, FIN both ways.
    let steps = vec![
        (net_tcp::SEGMENT, seg(syn | ack, 0, 1, syn_options, 0)),
        (net_tcp::SEND, vec![0; 3000]),
        (net_tcp::SEGMENT, seg(psh | ack, 1, 1, 8, 500)),
        (net_tcp::RECV, vec![255]),
        (net_tcp::SEGMENT, seg(ack, 1001, 1461, 8, 500)),
        (net_tcp::SEGMENT, seg(ack, 501, 1461, 8 | 0x10, 500)),
        (net_tcp::RECV, vec![40]),
        (net_tcp::ADVANCE, ms(1500)),
        (net_tcp::SEGMENT, seg(ack, 1501, 3001, 8, 0)),
        (net_tcp::CLOSE, Vec::new()),
        (net_tcp::SEGMENT, seg(fin | ack, 1501, 3002, 8, 0)),
        (net_tcp::ADVANCE, ms(130_000)),
    ];
    seeds.push(("active.tcp".to_owned(), input(0, &steps)));
    // Passive open without options, small buffers: window full, zero window, probes.
    let steps = vec![
        (net_tcp::SEGMENT, seg(syn, 0, 0, 2, 0)),
        (net_tcp::SEGMENT, seg(ack, 1, 1, 0, 0)),
        (net_tcp::SEGMENT, seg(ack, 1, 1, 0, 1460)),
        (net_tcp::SEGMENT, seg(ack, 1461, 1, 0, 1460)),
        (net_tcp::SEGMENT, seg(ack, 2921, 1, 0, 1460)),
        (net_tcp::SEND, vec![0; 8000]),
        (net_tcp::ADVANCE, ms(300)),
        (net_tcp::RECV, vec![100]),
        (net_tcp::SEGMENT, seg(ack, 4381, 1001, 0, 0)),
        (net_tcp::ADVANCE, ms(5000)),
        (net_tcp::RELEASE, vec![1]),
        (net_tcp::SEGMENT, seg(fin | ack, 4381, 2001, 0, 0)),
        (net_tcp::RECV, vec![255]),
        (net_tcp::CLOSE, Vec::new()),
    ];
    seeds.push(("passive-small.tcp".to_owned(), input(0x2f, &steps)));
    // Resets, out-of-window segments, raw payloads, unreachable, abort.
    let steps = vec![
        (net_tcp::SEGMENT, seg(syn | ack, 0, 1, syn_options, 0)),
        (net_tcp::SEGMENT, seg(none | ack, 100_000, 1, 8, 10)),
        (net_tcp::SEGMENT, seg(rst, 5, 0, 0, 0)),
        (
            net_tcp::SEGMENT,
            [seg(0x10 | psh | ack, 1, 1, 8, 0), b"raw bytes".to_vec()].concat(),
        ),
        (net_tcp::UNREACHABLE, Vec::new()),
        (net_tcp::SEGMENT, seg(syn, 0, 0, syn_options, 0)),
        (net_tcp::ABORT, Vec::new()),
        (net_tcp::SEGMENT, seg(rst | ack, 1, 1, 0, 0)),
    ];
    seeds.push(("resets.tcp".to_owned(), input(0xc0, &steps)));
    // Timeouts: SYN retransmissions until the attempt fails.
    let steps = vec![
        (net_tcp::ADVANCE, ms(1000)),
        (net_tcp::ADVANCE, ms(3000)),
        (net_tcp::ADVANCE, ms(60_000)),
        (net_tcp::ADVANCE, ms(600_000)),
    ];
    seeds.push(("syn-timeout.tcp".to_owned(), input(0x40, &steps)));
    seeds
}

// ----------------------------------------------------------------------------------------
// proxy

/// Seeds of `proxy`.
pub fn proxy() -> Vec<Seed> {
    let up = (proxy::CONNECTED, vec![10, 8, 0, 2, 0xc3, 0x50]);
    let mut seeds = Vec::new();
    // HTTP CONNECT, then bytes both ways and closes.
    let steps = vec![
        (
            proxy::CLIENT,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
        ),
        up.clone(),
        (proxy::CLIENT, b"\x16\x03\x01 tls".to_vec()),
        (proxy::UPSTREAM, b"\x16\x03\x03 server".to_vec()),
        (proxy::CLIENT_EOF, Vec::new()),
        (proxy::UPSTREAM_EOF, Vec::new()),
    ];
    seeds.push(("connect.http".to_owned(), input(0, &steps)));
    // Absolute-form GET with a body and keep-alive, a second request to another host, chunked.
    let steps = vec![
        (
            proxy::CLIENT,
            b"POST http://example.com/form?a=1 HTTP/1.1\r\nHost: example.com\r\n\
              Content-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
                .to_vec(),
        ),
        up.clone(),
        (
            proxy::UPSTREAM,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
        (
            proxy::CLIENT,
            b"GET http://[2001:db8::1]:8080/x HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\
              Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_vec(),
        ),
        up.clone(),
        (
            proxy::UPSTREAM,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n".to_vec(),
        ),
        (proxy::ADVANCE, ms(70_000)),
    ];
    seeds.push(("absolute-keepalive.http".to_owned(), input(0, &steps)));
    // With credentials: refused, then accepted; a failing upstream; a slow client.
    let steps = vec![
        (proxy::CLIENT, b"CONNECT 10.0.0.1:22 HTTP/1.1\r\n\r\n".to_vec()),
        (
            proxy::CLIENT,
            b"CONNECT 10.0.0.1:22 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n\r\n"
                .to_vec(),
        ),
        (proxy::FAILED, vec![0]),
    ];
    seeds.push(("auth.http".to_owned(), input(0x0a, &steps)));
    // Broken heads: a request line too long, bad methods, header folding, a head cut short.
    let steps = vec![
        (
            proxy::CLIENT,
            [
                b"GET http://a/".as_slice(),
                &[b'a'; 200],
                b" HTTP/1.1\r\n\r\n",
            ]
            .concat(),
        ),
        (
            proxy::CLIENT,
            b"G\x00T / HTTP/1.1\r\n X: y\r\n\r\n".to_vec(),
        ),
        (proxy::CLIENT, b"CONNECT [::1 HTTP/1.0\r\n".to_vec()),
        (proxy::ADVANCE, ms(31_000)),
    ];
    seeds.push(("broken.http".to_owned(), input(0x04, &steps)));
    // SOCKS5: no auth, CONNECT by name, data both ways.
    let steps = vec![
        (proxy::CLIENT, vec![5, 1, 0]),
        (
            proxy::CLIENT,
            [&[5u8, 1, 0, 3, 11][..], b"example.com", &[1, 187]].concat(),
        ),
        up.clone(),
        (proxy::CLIENT, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (proxy::UPSTREAM, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        (proxy::UPSTREAM_EOF, Vec::new()),
    ];
    seeds.push(("connect-name.socks5".to_owned(), input(1, &steps)));
    // SOCKS5 with username/password, IPv4 and IPv6 requests, one refused.
    let mut auth = vec![1, 5];
    auth.extend_from_slice(b"alice");
    auth.push(10);
    auth.extend_from_slice(b"wonderland");
    let steps = vec![
        (
            proxy::CLIENT,
            [vec![5, 2, 0, 2], auth, vec![5, 1, 0, 1, 10, 0, 0, 1, 0, 22]].concat(),
        ),
        (proxy::FAILED, vec![1]),
    ];
    seeds.push(("userpass-ipv4.socks5".to_owned(), input(3, &steps)));
    let mut v6 = vec![5, 1, 0, 4];
    v6.extend_from_slice(&[
        0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0xbb,
    ]);
    let steps = vec![
        (proxy::CLIENT, vec![5, 1, 2]),
        (
            proxy::CLIENT,
            vec![1, 5, b'a', b'l', b'i', b'c', b'e', 3, b'b', b'a', b'd'],
        ),
        (proxy::CLIENT, vec![5, 1, 0]),
        (proxy::CLIENT, v6),
        up,
    ];
    seeds.push(("wrong-pass-ipv6.socks5".to_owned(), input(0x0b, &steps)));
    // Broken: SOCKS4, BIND, UDP ASSOCIATE, bad address type.
    let steps = vec![(proxy::CLIENT, vec![4, 1, 0, 80, 10, 0, 0, 1, 0])];
    seeds.push(("socks4.socks5".to_owned(), input(1, &steps)));
    let steps = vec![
        (proxy::CLIENT, vec![5, 1, 0]),
        (proxy::CLIENT, vec![5, 2, 0, 1, 0, 0, 0, 0, 0, 0]),
    ];
    seeds.push(("bind.socks5".to_owned(), input(1, &steps)));
    let steps = vec![(proxy::CLIENT, vec![5, 1, 0, 5, 3, 0, 9, 1, 2, 3])];
    seeds.push(("bad-atyp.socks5".to_owned(), input(5, &steps)));
    seeds
}

/// Every client-side target with its seeds.
pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("ovpn_client_session", ovpn_client_session()),
        ("ovpn_push", ovpn_push()),
        ("ovpn_profile", ovpn_profile()),
        ("net_stack", net_stack()),
        ("net_dns", net_dns()),
        ("net_tcp", net_tcp()),
        ("proxy", proxy()),
    ]
}
