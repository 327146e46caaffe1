//! Known-answer tests against sessions captured between a stock OpenVPN 2.6.14 client and
//! server (testvectors/captures/static-key and plaintext).

use std::net::{Ipv4Addr, SocketAddr};

use erebus_sansio::tunnel::{Decapsulated, DropReason, TunnelEvent};
use erebus_sansio::{Instant, Seed, Tunnel, UnixTime, WallClock};

use super::{P2pConfig, P2pMode, P2pSession, StaticKeyMode};
use crate::data::inband::{self, OccMessage, Payload};
use crate::data::{AuthAlg, CipherAlg, DataChannel};
use crate::keys::{KeyDirection, StaticKey};
use crate::replay::ReplayConfig;

const STATIC_WIRE: &[u8] = include_bytes!("../../../../testvectors/captures/static-key/wire.pcap");
const STATIC_TUN: &[u8] = include_bytes!("../../../../testvectors/captures/static-key/tun.pcap");
const STATIC_KEY: &str = include_str!("../../../../testvectors/captures/static-key/static.key");
const PLAIN_WIRE: &[u8] = include_bytes!("../../../../testvectors/captures/plaintext/wire.pcap");
const PLAIN_TUN: &[u8] = include_bytes!("../../../../testvectors/captures/plaintext/tun.pcap");

/// One captured record: microseconds since the first record, and the link-layer frame.
struct Record {
    micros: u64,
    data: Vec<u8>,
}

/// A minimal reader for little-endian microsecond pcap files.
fn read_pcap(bytes: &[u8]) -> (u32, Vec<Record>) {
    assert_eq!(bytes[..4], [0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let link_type = u32_at(20);
    let mut records = Vec::new();
    let mut at = 24;
    let mut first = None;
    while at + 16 <= bytes.len() {
        let micros = u64::from(u32_at(at)) * 1_000_000 + u64::from(u32_at(at + 4));
        let len = u32_at(at + 8) as usize;
        let first = *first.get_or_insert(micros);
        records.push(Record {
            micros: micros - first,
            data: bytes[at + 16..at + 16 + len].to_vec(),
        });
        at += 16 + len;
    }
    (link_type, records)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

/// The OpenVPN datagrams of a wire capture (Ethernet, IPv4, UDP port 1194), in order.
fn datagrams(pcap: &[u8]) -> Vec<(u64, Dir, Vec<u8>)> {
    let (link_type, records) = read_pcap(pcap);
    assert_eq!(link_type, 1, "Ethernet");
    records
        .into_iter()
        .filter_map(|r| {
            let frame = &r.data;
            if frame.get(12..14)? != [0x08, 0x00] {
                return None;
            }
            let ip = &frame[14..];
            if ip[0] >> 4 != 4 || ip[9] != 17 {
                return None;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let udp = &ip[ihl..];
            let dst = u16::from_be_bytes([udp[2], udp[3]]);
            let src = u16::from_be_bytes([udp[0], udp[1]]);
            let dir = match (src, dst) {
                (_, 1194) => Dir::ClientToServer,
                (1194, _) => Dir::ServerToClient,
                _ => return None,
            };
            let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            Some((r.micros, dir, udp[8..udp_len].to_vec()))
        })
        .collect()
}

/// The IP packets of a tun capture (raw IP link type).
fn tun_packets(pcap: &[u8]) -> Vec<Vec<u8>> {
    let (link_type, records) = read_pcap(pcap);
    assert_eq!(link_type, 101, "raw IP");
    records.into_iter().map(|r| r.data).collect()
}

/// Whether `decrypted` is `tun` except inside the TCP options, which `mssfix` in the sending
/// OpenVPN rewrites for SYN segments.
fn same_but_tcp_options(decrypted: &[u8], tun: &[u8]) -> bool {
    if decrypted.len() != tun.len() || decrypted.len() < 40 || decrypted[9] != 6 {
        return false;
    }
    let ihl = usize::from(decrypted[0] & 0x0f) * 4;
    let options_start = ihl + 20;
    let options_end = ihl + usize::from(decrypted[ihl + 12] >> 4) * 4;
    // The IPv4 header and TCP header up to the checksum must agree; the checksum covers the
    // options and changes with them.
    decrypted[..ihl + 16] == tun[..ihl + 16]
        && decrypted[options_end..] == tun[options_end..]
        && options_end > options_start
}

fn static_key() -> StaticKey {
    StaticKey::parse(STATIC_KEY.as_bytes()).unwrap()
}

/// The wall clock of the capture's client: its packet-id time was 0x6b020ae7.
fn capture_clock() -> WallClock {
    WallClock::new(Instant::ZERO, UnixTime::from_secs(0x6b02_0ae7))
}

fn static_channel(direction: KeyDirection) -> DataChannel {
    DataChannel::static_key(
        &static_key().directional(direction),
        CipherAlg::Aes256Cbc,
        AuthAlg::Sha256,
        ReplayConfig::default(),
        capture_clock(),
        &Seed::from_byte(3),
    )
    .unwrap()
}

/// The capture's client profile: `ifconfig 10.8.0.2 10.8.0.1`, `keepalive 10 60`,
/// `explicit-exit-notify 1`, and for static-key `key-direction 1`, AES-256-CBC, SHA256.
fn client_config(mode: P2pMode) -> P2pConfig {
    let mut config = P2pConfig::new(
        SocketAddr::from(([10, 99, 0, 1], 1194)),
        Ipv4Addr::new(10, 8, 0, 2),
        Ipv4Addr::new(10, 8, 0, 1),
        mode,
        capture_clock(),
    )
    .with_keepalive(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(60),
    );
    config.explicit_exit_notify = 1;
    config
}

fn static_mode(direction: KeyDirection) -> P2pMode {
    P2pMode::StaticKey(Box::new(StaticKeyMode {
        key: static_key(),
        direction,
        cipher: CipherAlg::Aes256Cbc,
        auth: AuthAlg::Sha256,
    }))
}

fn open(channel: &mut DataChannel, packet: &[u8]) -> Vec<u8> {
    let mut buf = packet.to_vec();
    let range = channel.open(Instant::ZERO, &mut buf).unwrap();
    buf[range].to_vec()
}

fn occ_reply_string(payload: &[u8]) -> Option<String> {
    match inband::classify(payload) {
        Payload::Occ(OccMessage::Reply(options)) => {
            Some(String::from_utf8(options.to_vec()).unwrap())
        }
        _ => None,
    }
}

#[test]
fn static_key_capture_decrypts_to_the_tun_packets() {
    let wire = datagrams(STATIC_WIRE);
    let tun = tun_packets(STATIC_TUN);
    assert_eq!(wire.len(), 21);
    // The server (`secret static.key 0`) opens what the client sent and vice versa.
    let mut server_view = static_channel(KeyDirection::Normal);
    let mut client_view = static_channel(KeyDirection::Inverse);
    let mut inner = Vec::new();
    let mut kinds = Vec::new();
    for (_, dir, packet) in &wire {
        let payload = match dir {
            Dir::ClientToServer => open(&mut server_view, packet),
            Dir::ServerToClient => open(&mut client_view, packet),
        };
        match inband::classify(&payload) {
            Payload::Ping => kinds.push("ping"),
            Payload::Occ(OccMessage::Request) => kinds.push("occ-request"),
            Payload::Occ(OccMessage::Reply(_)) => kinds.push("occ-reply"),
            Payload::Occ(OccMessage::Exit) => kinds.push("occ-exit"),
            Payload::Occ(other) => panic!("unexpected {other:?}"),
            Payload::Packet => {
                kinds.push("ip");
                inner.push((*dir, payload));
            }
        }
    }
    assert_eq!(
        kinds[..7],
        [
            "ping",
            "ping",
            "occ-request",
            "occ-reply",
            "ip",
            "occ-request",
            "occ-reply"
        ]
    );
    assert_eq!(kinds.last(), Some(&"occ-exit"));
    // Packet ids: the client's run 1..=12; the server's start at 2 (its start-up ping went
    // nowhere) and end at 10.
    assert_eq!(server_view.debug_highest_id(), 12);
    assert_eq!(client_view.debug_highest_id(), 10);

    assert_eq!(inner.len(), 14);
    assert_eq!(tun.len(), 14);
    let mut exact = 0;
    for (_, packet) in &inner {
        assert_eq!(packet[0] >> 4, 4, "IPv4");
        if tun.contains(packet) {
            exact += 1;
        } else {
            assert!(
                tun.iter().any(|t| same_but_tcp_options(packet, t)),
                "decrypted packet not in tun capture"
            );
        }
    }
    assert_eq!(exact, 12, "two SYNs differ only by the MSS option");
    // Among them a TCP segment carrying the HTTP request, and the DNS query over UDP.
    assert!(inner.iter().any(|(dir, p)| {
        *dir == Dir::ClientToServer && p[9] == 6 && p.windows(5).any(|w| w == b"GET /")
    }));
    assert!(
        inner
            .iter()
            .any(|(_, p)| p[9] == 17 && p[22..24] == [0, 53])
    );
}

#[test]
fn our_options_strings_equal_the_captured_ones() {
    let wire = datagrams(STATIC_WIRE);
    let mut server_view = static_channel(KeyDirection::Normal);
    let mut client_view = static_channel(KeyDirection::Inverse);
    let mut client_string = None;
    let mut server_string = None;
    for (_, dir, packet) in &wire {
        match dir {
            Dir::ClientToServer => {
                if let Some(s) = occ_reply_string(&open(&mut server_view, packet)) {
                    client_string = Some(s);
                }
            }
            Dir::ServerToClient => {
                if let Some(s) = occ_reply_string(&open(&mut client_view, packet)) {
                    server_string = Some(s);
                }
            }
        }
    }
    let config = client_config(static_mode(KeyDirection::Inverse));
    assert_eq!(
        client_string.as_deref(),
        Some(
            "V4,dev-type tun,link-mtu 1572,tun-mtu 1500,proto UDPv4,ifconfig 10.8.0.1 10.8.0.2,\
             keydir 1,cipher AES-256-CBC,auth SHA256,keysize 256,secret"
        )
    );
    assert_eq!(Some(config.options_string(false)), client_string);
    assert_eq!(Some(config.options_string(true)), server_string);

    let plain = datagrams(PLAIN_WIRE);
    let plain_config = client_config(P2pMode::Plaintext);
    let client_plain = plain.iter().find_map(|(_, dir, p)| {
        (*dir == Dir::ClientToServer)
            .then(|| occ_reply_string(p))
            .flatten()
    });
    let server_plain = plain.iter().find_map(|(_, dir, p)| {
        (*dir == Dir::ServerToClient)
            .then(|| occ_reply_string(p))
            .flatten()
    });
    assert_eq!(Some(plain_config.options_string(false)), client_plain);
    assert_eq!(Some(plain_config.options_string(true)), server_plain);
}

/// Feeds the server's side of a capture to a client session with the capture's timing, and
/// checks what the session makes of each packet.
#[test]
fn client_session_consumes_the_servers_static_key_traffic() {
    let wire = datagrams(STATIC_WIRE);
    let tun = tun_packets(STATIC_TUN);
    let mut session = P2pSession::new(
        client_config(static_mode(KeyDirection::Inverse)),
        &Seed::from_byte(9),
        Instant::ZERO,
    )
    .unwrap();
    assert!(matches!(session.poll_event(), Some(TunnelEvent::Up(_))));
    let mut out = vec![0u8; 2048];
    // The start-up ping goes out at once, as the stock client's did.
    let ping_len = session
        .poll_transmit(Instant::ZERO, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(ping_len, 80);
    let mut server_view = static_channel(KeyDirection::Normal);
    assert_eq!(open(&mut server_view, &out[..ping_len]), inband::PING_MAGIC);

    let mut inner = 0;
    for (micros, dir, packet) in &wire {
        if *dir != Dir::ServerToClient {
            continue;
        }
        let now = Instant::from_micros(*micros);
        let mut buf = packet.clone();
        match session.decapsulate(now, &mut buf).unwrap() {
            Decapsulated::Inner(range) => {
                inner += 1;
                let packet = &buf[range];
                assert!(
                    tun.iter()
                        .any(|t| t == packet || same_but_tcp_options(packet, t))
                );
            }
            Decapsulated::Consumed => {}
        }
        // Answer whatever the packet asked for.
        while let Some(Ok(len)) = session.poll_transmit(now, &mut out) {
            let payload = open(&mut server_view, &out[..len]);
            if let Some(options) = occ_reply_string(&payload) {
                assert_eq!(options, session.options_string());
            }
        }
    }
    assert_eq!(inner, 6);
    assert_eq!(session.peer_options_match(), Some(true));
    let stats = session.stats();
    assert_eq!(stats.pings_received, 1);
    assert_eq!(stats.occ_replies_sent, 1);
    assert_eq!(stats.packets_received, 6);
    assert_eq!(stats.drops.total(), 0);

    // Replaying the whole server side: every packet is refused and counted, none changes state.
    for (micros, dir, packet) in &wire {
        if *dir == Dir::ServerToClient {
            let mut buf = packet.clone();
            assert_eq!(
                session.decapsulate(Instant::from_micros(*micros + 1), &mut buf),
                Err(DropReason::Replayed)
            );
        }
    }
    assert_eq!(session.stats().drops.get(DropReason::Replayed), 9);
    // The client's own packets (the other key slot) are not authentic to it.
    let (_, _, first) = &wire[0];
    let mut buf = first.clone();
    assert_eq!(
        session.decapsulate(Instant::from_secs(11), &mut buf),
        Err(DropReason::Unauthentic)
    );
}

#[test]
fn plaintext_capture_passes_through_unchanged() {
    let wire = datagrams(PLAIN_WIRE);
    let tun = tun_packets(PLAIN_TUN);
    let mut session = P2pSession::new(
        client_config(P2pMode::Plaintext),
        &Seed::from_byte(9),
        Instant::ZERO,
    )
    .unwrap();
    assert_eq!(session.overhead().total(), 0);
    let mut out = vec![0u8; 2048];
    // The start-up ping is the captured client's first datagram, byte for byte.
    let first_c2s = &wire
        .iter()
        .find(|(_, d, _)| *d == Dir::ClientToServer)
        .unwrap()
        .2;
    let len = session
        .poll_transmit(Instant::ZERO, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(&out[..len], &first_c2s[..]);

    let mut inner = 0;
    let mut replies = 0;
    for (micros, dir, packet) in &wire {
        let now = Instant::from_micros(*micros);
        let mut buf = packet.clone();
        if *dir == Dir::ServerToClient {
            match session.decapsulate(now, &mut buf).unwrap() {
                Decapsulated::Inner(range) => {
                    assert_eq!(range, 0..packet.len());
                    assert_eq!(&buf, packet, "unchanged");
                    assert!(
                        tun.contains(packet) || tun.iter().any(|t| same_but_tcp_options(packet, t))
                    );
                    inner += 1;
                }
                Decapsulated::Consumed => {}
            }
            while let Some(Ok(len)) = session.poll_transmit(now, &mut out) {
                if occ_reply_string(&out[..len]).is_some() {
                    // The captured client answered the server's OCC_REQUEST with this same reply.
                    let reply = wire
                        .iter()
                        .find(|(_, d, p)| {
                            *d == Dir::ClientToServer && occ_reply_string(p).is_some()
                        })
                        .unwrap();
                    assert_eq!(&out[..len], &reply.2[..]);
                    replies += 1;
                }
            }
        } else {
            // The client's own inner packets go out unchanged.
            if packet[0] >> 4 == 4 {
                let range = session.encapsulate(now, &mut buf, 0..packet.len()).unwrap();
                assert_eq!(range, 0..packet.len());
                assert_eq!(&buf, packet);
            }
        }
    }
    assert_eq!(inner, 6);
    assert_eq!(replies, 1);
    assert_eq!(session.peer_options_match(), Some(true));

    // Closing sends the same single OCC_EXIT the stock client sent.
    let last = &wire.last().unwrap();
    assert_eq!(last.1, Dir::ClientToServer);
    let close_at = Instant::from_micros(last.0);
    session.close(close_at);
    let len = session.poll_transmit(close_at, &mut out).unwrap().unwrap();
    assert_eq!(&out[..len], &last.2[..]);
    assert_eq!(session.poll_transmit(close_at, &mut out), None);
}

impl DataChannel {
    fn debug_highest_id(&self) -> u32 {
        self.debug_highest().id
    }
}
