//! Session tests: two sessions talking through the `Tunnel` trait, timers with scripted time,
//! tampering, replay and closing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Fault, IpNet, Overhead, TransportKind, TunnelEvent,
};
use erebus_sansio::{Instant, Seed, Tunnel, UnixTime, WallClock};
use proptest::prelude::*;

use super::*;
use crate::config::MssfixMode;
use crate::data::inband::{self, OccMessage, Payload};
use crate::data::{AuthAlg, CipherAlg, DataChannel};
use crate::keys::{KeyDirection, StaticKey};
use crate::replay::ReplayConfig;

const KEY: &str = include_str!("../../../../testvectors/captures/static-key/static.key");

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn mode(direction: KeyDirection) -> P2pMode {
    P2pMode::StaticKey(Box::new(StaticKeyMode {
        key: StaticKey::parse(KEY.as_bytes()).unwrap(),
        direction,
        cipher: CipherAlg::Aes256Cbc,
        auth: AuthAlg::Sha256,
    }))
}

fn config(server: bool, mode: P2pMode) -> P2pConfig {
    let (local, remote) = if server {
        (Ipv4Addr::new(10, 8, 0, 1), Ipv4Addr::new(10, 8, 0, 2))
    } else {
        (Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 1))
    };
    let mut config = P2pConfig::new(
        SocketAddr::from(([192, 0, 2, 1], 1194)),
        local,
        remote,
        mode,
        WallClock::new(Instant::ZERO, UnixTime::from_secs(1_800_000_000)),
    )
    .with_keepalive(Duration::from_secs(10), Duration::from_secs(60));
    config.explicit_exit_notify = 2;
    config
}

/// A client (`key-direction 1`) and a server (`0`) on the same key.
fn pair() -> (P2pSession, P2pSession) {
    let client = P2pSession::new(
        config(false, mode(KeyDirection::Inverse)),
        &Seed::from_byte(1),
        Instant::ZERO,
    )
    .unwrap();
    let server = P2pSession::new(
        config(true, mode(KeyDirection::Normal)),
        &Seed::from_byte(2),
        Instant::ZERO,
    )
    .unwrap();
    (client, server)
}

fn events(session: &mut P2pSession) -> Vec<TunnelEvent> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

/// Everything `from` wants to transmit at `now`.
fn transmit(from: &mut P2pSession, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1600];
    while let Some(result) = from.poll_transmit(now, &mut buf) {
        out.push(buf[..result.unwrap()].to_vec());
    }
    out
}

/// An IPv4-looking packet of `len` bytes.
fn ip_packet(len: usize, tag: u8) -> Vec<u8> {
    let mut packet = vec![tag; len];
    packet[0] = 0x45;
    packet
}

fn encapsulate(session: &mut P2pSession, now: Instant, inner: &[u8]) -> Vec<u8> {
    let Overhead { headroom, tailroom } = session.overhead();
    let mut buf = vec![0u8; headroom + inner.len() + tailroom];
    buf[headroom..headroom + inner.len()].copy_from_slice(inner);
    let outer = session
        .encapsulate(now, &mut buf, headroom..headroom + inner.len())
        .unwrap();
    buf[outer].to_vec()
}

fn decapsulate(
    session: &mut P2pSession,
    now: Instant,
    outer: &[u8],
) -> Result<Option<Vec<u8>>, DropReason> {
    let mut buf = outer.to_vec();
    Ok(match session.decapsulate(now, &mut buf)? {
        Decapsulated::Inner(range) => Some(buf[range].to_vec()),
        Decapsulated::Consumed => None,
    })
}

/// What the plaintext of an outer packet is, read by a session on the other key direction.
fn kind(outer: &[u8], direction: KeyDirection) -> &'static str {
    let mut reader = DataChannel::static_key(
        &StaticKey::parse(KEY.as_bytes())
            .unwrap()
            .directional(direction),
        CipherAlg::Aes256Cbc,
        AuthAlg::Sha256,
        ReplayConfig::default(),
        WallClock::new(Instant::ZERO, UnixTime::from_secs(0)),
        &Seed::from_byte(0),
    )
    .unwrap();
    let mut buf = outer.to_vec();
    let range = reader.open(Instant::ZERO, &mut buf).unwrap();
    match inband::classify(&buf[range]) {
        Payload::Ping => "ping",
        Payload::Occ(OccMessage::Request) => "occ-request",
        Payload::Occ(OccMessage::Reply(_)) => "occ-reply",
        Payload::Occ(OccMessage::Exit) => "occ-exit",
        Payload::Occ(_) => "occ-other",
        Payload::Packet => "packet",
    }
}

#[test]
fn mssfix_caps_the_mss_offered_through_a_point_to_point_tunnel() {
    let up_mss = |mssfix: Option<Mssfix>, transport: TransportKind| {
        let mut config = config(false, mode(KeyDirection::Inverse));
        config.mssfix = mssfix;
        config.transport = transport;
        let mut session = P2pSession::new(config, &Seed::from_byte(1), Instant::ZERO).unwrap();
        match events(&mut session).first() {
            Some(TunnelEvent::Up(config)) => config.tcp_mss,
            other => panic!("not up: {other:?}"),
        }
    };
    let payload_1300 = Some(Mssfix {
        size: Some(1300),
        mode: MssfixMode::Payload,
    });
    // AES-256-CBC with HMAC-SHA256: HMAC 32, IV 16 and packet id 8 ahead, padding up to 16
    // behind, then IPv4 and TCP headers (40).
    assert_eq!(
        up_mss(payload_1300, TransportKind::Udp),
        Some(1300 - 56 - 16 - 40)
    );
    // `mtu` counts the outer IPv4 and UDP or TCP headers (and the length prefix) as well.
    let mtu_1400 = Some(Mssfix {
        size: Some(1400),
        mode: MssfixMode::Mtu,
    });
    assert_eq!(
        up_mss(mtu_1400, TransportKind::Udp),
        Some(1400 - 28 - 56 - 16 - 40)
    );
    assert_eq!(
        up_mss(mtu_1400, TransportKind::TcpLengthPrefixed),
        Some(1400 - 42 - 56 - 16 - 40)
    );
    assert_eq!(up_mss(None, TransportKind::Udp), None, "no mssfix, no cap");
    let off = Some(Mssfix {
        size: Some(0),
        mode: MssfixMode::Payload,
    });
    assert_eq!(
        up_mss(off, TransportKind::Udp),
        None,
        "mssfix 0 turns it off"
    );
}

#[test]
fn up_at_once_with_the_ifconfig_and_a_startup_ping() {
    let (mut client, _) = pair();
    let up = events(&mut client);
    let expected = TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 2)), 32),
        gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1))),
        mtu: 1500,
        cipher: Some("AES-256-CBC/SHA256 (static key)".into()),
        ..TunnelConfig::default()
    };
    assert_eq!(up, vec![TunnelEvent::Up(expected.clone())]);
    assert!(expected.routes_to(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1))));
    let transport = client.transport().unwrap();
    assert_eq!(transport.kind, TransportKind::Udp);
    assert_eq!(
        (transport.host.as_str(), transport.port),
        ("192.0.2.1", 1194)
    );
    assert_eq!(
        client.overhead(),
        Overhead {
            headroom: 56,
            tailroom: 16
        }
    );
    // The first transmit is the start-up ping, and data may flow before anything arrives from
    // the server.
    let out = transmit(&mut client, Instant::ZERO);
    assert_eq!(out.len(), 1);
    assert_eq!(kind(&out[0], KeyDirection::Normal), "ping");
    let sent = encapsulate(&mut client, Instant::ZERO, &ip_packet(60, 1));
    assert_eq!(sent.len(), 32 + 16 + 80);
    assert_eq!(kind(&sent, KeyDirection::Normal), "packet");
}

#[test]
fn two_sessions_exchange_packets_and_options() {
    let (mut client, mut server) = pair();
    events(&mut client);
    events(&mut server);
    // Start-up pings both ways.
    for packet in transmit(&mut client, Instant::ZERO) {
        assert_eq!(decapsulate(&mut server, Instant::ZERO, &packet), Ok(None));
    }
    for packet in transmit(&mut server, Instant::ZERO) {
        assert_eq!(decapsulate(&mut client, Instant::ZERO, &packet), Ok(None));
    }
    // Inner packets both ways, unchanged.
    for n in 0..20u8 {
        let now = Instant::from_millis(100 * u64::from(n));
        let up = ip_packet(40 + usize::from(n) * 50, n);
        let outer = encapsulate(&mut client, now, &up);
        assert_eq!(decapsulate(&mut server, now, &outer), Ok(Some(up)));
        let down = ip_packet(1500 - usize::from(n), n);
        let outer = encapsulate(&mut server, now, &down);
        assert_eq!(decapsulate(&mut client, now, &outer), Ok(Some(down)));
    }
    // At 10 s both ask for options and answer each other.
    for _ in 0..3 {
        for packet in transmit(&mut client, secs(10)) {
            decapsulate(&mut server, secs(10), &packet).unwrap();
        }
        for packet in transmit(&mut server, secs(10)) {
            decapsulate(&mut client, secs(10), &packet).unwrap();
        }
    }
    assert_eq!(client.peer_options_match(), Some(true));
    assert_eq!(server.peer_options_match(), Some(true));
    assert_eq!(client.stats().occ_requests_sent, 1);
    assert_eq!(client.stats().occ_replies_sent, 1);
    assert_eq!(client.stats().packets_received, 20);
    assert_eq!(server.stats().packets_received, 20);
    assert_eq!(
        client.stats().drops.total() + server.stats().drops.total(),
        0
    );
}

#[test]
fn tampered_and_replayed_packets_do_not_disturb_the_session() {
    let (mut client, mut server) = pair();
    let first = encapsulate(&mut client, Instant::ZERO, &ip_packet(100, 7));
    // One bit flipped in the HMAC, in the IV, in the ciphertext.
    for at in [5, 40, 90] {
        let mut bad = first.clone();
        bad[at] ^= 0x80;
        assert_eq!(
            decapsulate(&mut server, Instant::ZERO, &bad),
            Err(DropReason::Unauthentic)
        );
    }
    assert_eq!(
        decapsulate(&mut server, Instant::ZERO, &first[..40]),
        Err(DropReason::Unauthentic)
    );
    assert_eq!(
        decapsulate(&mut server, Instant::ZERO, &first[..20]),
        Err(DropReason::Malformed)
    );
    assert_eq!(
        decapsulate(&mut server, Instant::ZERO, &first),
        Ok(Some(ip_packet(100, 7)))
    );
    assert_eq!(
        decapsulate(&mut server, Instant::ZERO, &first),
        Err(DropReason::Replayed)
    );
    // Out of order inside the window is fine; each still only once.
    let a = encapsulate(&mut client, Instant::ZERO, &ip_packet(30, 1));
    let b = encapsulate(&mut client, Instant::ZERO, &ip_packet(30, 2));
    assert_eq!(
        decapsulate(&mut server, Instant::ZERO, &b),
        Ok(Some(ip_packet(30, 2)))
    );
    assert_eq!(
        decapsulate(&mut server, Instant::ZERO, &a),
        Ok(Some(ip_packet(30, 1)))
    );
    assert_eq!(
        decapsulate(&mut server, Instant::ZERO, &a),
        Err(DropReason::Replayed)
    );
    let stats = server.stats();
    assert_eq!(stats.drops.get(DropReason::Unauthentic), 4);
    assert_eq!(stats.drops.get(DropReason::Malformed), 1);
    assert_eq!(stats.drops.get(DropReason::Replayed), 2);
    assert_eq!(stats.packets_received, 3);
    // Drops do not count as life signs for ping-restart: only the three authentic packets do.
    let c = encapsulate(&mut client, secs(1), &ip_packet(30, 3));
    assert_eq!(
        decapsulate(&mut server, secs(1), &c),
        Ok(Some(ip_packet(30, 3)))
    );
}

#[test]
fn ping_follows_send_idleness() {
    let (mut client, _) = pair();
    events(&mut client);
    assert_eq!(
        transmit(&mut client, Instant::ZERO).len(),
        1,
        "start-up ping"
    );
    assert_eq!(client.poll_timeout(), Some((secs(10), "occ-request")));
    // Sending data at 5 s postpones the ping to 15 s.
    encapsulate(&mut client, secs(5), &ip_packet(40, 0));
    client.handle_timeout(secs(10));
    let at_ten = transmit(&mut client, secs(10));
    assert_eq!(at_ten.len(), 1);
    assert_eq!(kind(&at_ten[0], KeyDirection::Normal), "occ-request");
    // The OCC request itself counts as sending: next ping 10 s after it.
    assert_eq!(client.poll_timeout(), Some((secs(20), "occ-request")));
    assert!(transmit(&mut client, secs(19)).is_empty());
    let at_twenty = transmit(&mut client, secs(20));
    assert_eq!(at_twenty.len(), 1, "one packet resets the ping timer");
    assert_eq!(kind(&at_twenty[0], KeyDirection::Normal), "occ-request");
    assert_eq!(client.stats().pings_sent, 1);
}

#[test]
fn pings_every_interval_when_idle_and_occ_gives_up() {
    let (mut client, mut server) = pair();
    let mut kinds = Vec::new();
    let mut now = Instant::ZERO;
    // Drive the client from its own deadlines for 200 s. The server never answers the OCC
    // requests but sends a packet every 30 s, so ping-restart (60 s) stays quiet.
    let mut next_server_packet = Instant::ZERO;
    while now < secs(200) {
        if now >= next_server_packet {
            let outer = encapsulate(&mut server, now, &ip_packet(40, 0));
            decapsulate(&mut client, now, &outer).unwrap();
            next_server_packet = now + Duration::from_secs(30);
        }
        client.handle_timeout(now);
        for packet in transmit(&mut client, now) {
            kinds.push((now.as_millis() / 1000, kind(&packet, KeyDirection::Normal)));
        }
        let (deadline, _) = client.poll_timeout().unwrap();
        now = deadline
            .min(next_server_packet)
            .max(now + Duration::from_millis(1));
    }
    let requests: Vec<u64> = kinds
        .iter()
        .filter(|(_, k)| *k == "occ-request")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(requests, (1..=11).map(|n| n * 10).collect::<Vec<_>>());
    // Any packet sent resets the ping timer: pings only at start and once the requests stop.
    let pings: Vec<u64> = kinds
        .iter()
        .filter(|(_, k)| *k == "ping")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(pings, vec![0, 120, 130, 140, 150, 160, 170, 180, 190]);
    assert!(
        events(&mut client)
            .iter()
            .all(|e| matches!(e, TunnelEvent::Up(_)))
    );
    assert_eq!(client.stats().restarts, 0);
}

#[test]
fn ping_restart_ends_the_session_and_the_next_one_is_accepted() {
    let (mut client, mut server) = pair();
    events(&mut client);
    for packet in transmit(&mut client, Instant::ZERO) {
        decapsulate(&mut server, Instant::ZERO, &packet).unwrap();
    }
    client.handle_timeout(secs(25));
    assert!(events(&mut client).is_empty());
    // A packet from the server at 30 s pushes the limit from 60 s to 90 s.
    let outer = encapsulate(&mut server, secs(30), &ip_packet(40, 0));
    decapsulate(&mut client, secs(30), &outer).unwrap();
    client.handle_timeout(secs(60));
    client.handle_timeout(secs(89));
    assert!(events(&mut client).is_empty());
    // Tampered packets are not life signs.
    let mut bad = encapsulate(&mut server, secs(80), &ip_packet(40, 0));
    bad[0] ^= 1;
    assert!(decapsulate(&mut client, secs(80), &bad).is_err());
    client.handle_timeout(secs(90));
    let restart = events(&mut client);
    match &restart[..] {
        [TunnelEvent::Down(failure)] => {
            assert_eq!(failure.fault, Fault::Timeout);
            assert!(failure.message.contains("ping-restart"), "{failure}");
        }
        other => panic!("expected Down, got {other:?}"),
    }
    assert!(client.is_down());
    assert_eq!(client.transport(), None);
    assert_eq!(client.stats().restarts, 1);
    // The next session, as a supervisor builds it: a start-up ping again, with packet id 1
    // and a later time, which the server (still holding the old window) accepts.
    let mut next = P2pSession::new(
        config(false, mode(KeyDirection::Inverse)),
        &Seed::from_byte(3),
        secs(90),
    )
    .unwrap();
    events(&mut next);
    let again = transmit(&mut next, secs(90));
    assert_eq!(again.len(), 1);
    assert_eq!(decapsulate(&mut server, secs(90), &again[0]), Ok(None));
    assert_eq!(next.data_channel().last_sent().map(|p| p.id), Some(1));
    let data = encapsulate(&mut next, secs(91), &ip_packet(50, 9));
    assert_eq!(
        decapsulate(&mut server, secs(91), &data),
        Ok(Some(ip_packet(50, 9)))
    );
}

#[test]
fn close_sends_exit_notifications_then_goes_down() {
    let (mut client, mut server) = pair();
    events(&mut client);
    events(&mut server);
    transmit(&mut client, Instant::ZERO);
    client.close(secs(5));
    assert_eq!(
        client.encapsulate(secs(5), &mut [0u8; 200], 56..100),
        Err(DropReason::NotReady)
    );
    let mut exits = Vec::new();
    let mut now = secs(5);
    while !client.is_down() {
        client.handle_timeout(now);
        exits.extend(transmit(&mut client, now).into_iter().map(|p| (now, p)));
        match client.poll_timeout() {
            Some((deadline, _)) => now = deadline,
            None => break,
        }
    }
    assert_eq!(
        exits.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![secs(5), secs(6)],
        "one OCC_EXIT a second for explicit-exit-notify 2"
    );
    let down = events(&mut client);
    assert!(
        matches!(&down[..], [TunnelEvent::Down(f)] if f.fault == Fault::Closed),
        "{down:?}"
    );
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(
        decapsulate(&mut client, secs(8), &[0u8; 80]),
        Err(DropReason::NotReady)
    );
    // The server takes the exit as the peer leaving: its session ends, for a supervisor to
    // start the next.
    assert_eq!(decapsulate(&mut server, secs(5), &exits[0].1), Ok(None));
    let restart = events(&mut server);
    assert!(
        matches!(&restart[..], [TunnelEvent::Down(f)] if f.fault == Fault::Closed),
        "{restart:?}"
    );
}

#[test]
fn close_over_tcp_or_without_notification_is_immediate() {
    let mut tcp_config = config(false, mode(KeyDirection::Inverse));
    tcp_config.transport = TransportKind::TcpLengthPrefixed;
    let mut tcp = P2pSession::new(tcp_config.clone(), &Seed::from_byte(1), Instant::ZERO).unwrap();
    events(&mut tcp);
    tcp.close(secs(1));
    assert!(tcp.is_down());
    assert!(matches!(&events(&mut tcp)[..], [TunnelEvent::Down(_)]));
    assert!(transmit(&mut tcp, secs(1)).is_empty());
    // Over TCP the options string names the stream and the link MTU counts the length prefix.
    assert!(
        tcp_config
            .options_string(false)
            .contains("link-mtu 1574,tun-mtu 1500,proto TCPv4_CLIENT")
    );
    assert!(
        tcp_config
            .options_string(true)
            .contains("proto TCPv4_SERVER")
    );

    // A responder (a tcp-server) says so, and expects its initiator's own string.
    let mut server_config = config(true, mode(KeyDirection::Normal));
    server_config.transport = TransportKind::TcpLengthPrefixed;
    server_config.responder = true;
    assert!(
        server_config
            .options_string(false)
            .contains("proto TCPv4_SERVER")
    );
    let mut client_config = config(false, mode(KeyDirection::Inverse));
    client_config.transport = TransportKind::TcpLengthPrefixed;
    assert_eq!(
        server_config.options_string(true),
        client_config.options_string(false)
    );
    assert_eq!(
        client_config.options_string(true),
        server_config.options_string(false)
    );

    let mut quiet_config = config(false, P2pMode::Plaintext);
    quiet_config.explicit_exit_notify = 0;
    let mut quiet = P2pSession::new(quiet_config, &Seed::from_byte(1), Instant::ZERO).unwrap();
    quiet.close(Instant::ZERO);
    assert!(quiet.is_down());
}

#[test]
fn oversized_inner_packets_and_small_buffers() {
    let (mut client, _) = pair();
    let mut buf = vec![0u8; 56 + 1501 + 16];
    assert_eq!(
        client.encapsulate(Instant::ZERO, &mut buf, 56..56 + 1501),
        Err(DropReason::Malformed)
    );
    assert_eq!(
        client.encapsulate(Instant::ZERO, &mut buf, 10..100),
        Err(DropReason::Malformed)
    );
    // A transmit buffer too small keeps the packet queued and says how much is needed.
    let mut small = [0u8; 40];
    assert_eq!(
        client.poll_transmit(Instant::ZERO, &mut small),
        Some(Err(56 + 16 + 16))
    );
    assert_eq!(transmit(&mut client, Instant::ZERO).len(), 1);
}

#[test]
fn options_strings_for_other_algorithms() {
    let mut cfg = config(false, mode(KeyDirection::Bidirectional));
    if let P2pMode::StaticKey(m) = &mut cfg.mode {
        m.cipher = CipherAlg::None;
        m.auth = AuthAlg::Sha1;
    }
    cfg.tun_mtu = 1400;
    assert_eq!(
        cfg.options_string(false),
        "V4,dev-type tun,link-mtu 1428,tun-mtu 1400,proto UDPv4,ifconfig 10.8.0.1 10.8.0.2,\
         cipher [null-cipher],auth SHA1,keysize 0,secret"
    );
    if let P2pMode::StaticKey(m) = &mut cfg.mode {
        m.cipher = CipherAlg::Aes128Cbc;
        m.auth = AuthAlg::None;
    }
    assert_eq!(
        cfg.options_string(true),
        "V4,dev-type tun,link-mtu 1440,tun-mtu 1400,proto UDPv4,ifconfig 10.8.0.2 10.8.0.1,\
         cipher AES-128-CBC,auth [null-digest],keysize 128,secret"
    );
    cfg.tun_mtu = 99;
    assert_eq!(
        P2pSession::new(cfg, &Seed::from_byte(1), Instant::ZERO).unwrap_err(),
        P2pError::TunMtuTooSmall(99)
    );
}

#[test]
fn plaintext_sessions_talk_to_each_other() {
    let mut client = P2pSession::new(
        config(false, P2pMode::Plaintext),
        &Seed::from_byte(1),
        Instant::ZERO,
    )
    .unwrap();
    let mut server = P2pSession::new(
        config(true, P2pMode::Plaintext),
        &Seed::from_byte(2),
        Instant::ZERO,
    )
    .unwrap();
    let ping = transmit(&mut client, Instant::ZERO);
    assert_eq!(ping, vec![inband::PING_MAGIC.to_vec()]);
    assert_eq!(decapsulate(&mut server, Instant::ZERO, &ping[0]), Ok(None));
    let packet = ip_packet(300, 3);
    let outer = encapsulate(&mut client, Instant::ZERO, &packet);
    assert_eq!(outer, packet);
    assert_eq!(
        decapsulate(&mut server, Instant::ZERO, &outer),
        Ok(Some(packet.clone()))
    );
    // Plaintext has no replay protection: the same packet passes twice, as in OpenVPN.
    assert_eq!(
        decapsulate(&mut server, Instant::ZERO, &outer),
        Ok(Some(packet))
    );
    assert_eq!(server.stats().pings_received, 1);
}

#[test]
fn time_never_goes_backwards() {
    let (mut client, mut server) = pair();
    events(&mut client);
    let outer = encapsulate(&mut server, secs(100), &ip_packet(40, 1));
    decapsulate(&mut client, secs(100), &outer).unwrap();
    // At 100 s the overdue OCC request goes out; it also counts as the ping.
    let sent = transmit(&mut client, secs(100));
    assert_eq!(sent.len(), 1);
    assert_eq!(kind(&sent[0], KeyDirection::Normal), "occ-request");
    // An earlier `now` is taken as 100 s: nothing is due again before 110 s.
    assert!(transmit(&mut client, secs(50)).is_empty());
    encapsulate(&mut client, secs(30), &ip_packet(40, 2));
    assert_eq!(client.poll_timeout(), Some((secs(110), "occ-request")));
    client.handle_timeout(secs(20));
    assert!(events(&mut client).is_empty());
}

proptest! {
    #[test]
    fn decapsulate_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), plaintext in any::<bool>()) {
        let mut session = if plaintext {
            P2pSession::new(config(false, P2pMode::Plaintext), &Seed::from_byte(1), Instant::ZERO).unwrap()
        } else {
            pair().0
        };
        let mut buf = bytes.clone();
        match session.decapsulate(Instant::ZERO, &mut buf) {
            Ok(Decapsulated::Inner(range)) => prop_assert!(range.end <= buf.len()),
            Ok(Decapsulated::Consumed) => {}
            Err(reason) => {
                prop_assert!(!plaintext || bytes.is_empty());
                prop_assert_eq!(session.stats().drops.get(reason), 1);
            }
        }
    }
}
