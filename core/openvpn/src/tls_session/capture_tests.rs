//! The control packets of real OpenVPN 2.6.14 sessions (testvectors/captures): our client's
//! first packet has the stock client's layout, and the server's packets unwrap and parse.

use erebus_sansio::tunnel::DropReason;
use erebus_sansio::{Instant, Seed, Tunnel, UnixTime, WallClock};

use super::TlsSession;
use super::tests::{TA_KEY, TC_KEY, raw_key};
use crate::config::{Digest, KeyDirection, Material, Profile};
use crate::control::wrap::{ControlWrap, TlsAuth, TlsCrypt};
use crate::packet::{ControlPacket, Opcode, SessionId};
use crate::setup::{TlsMaterials, tls_config};

const TLS_UDP_PROFILE: &str = include_str!("../../../../testvectors/captures/tls-udp/client.ovpn");
const TLS_UDP_PACKETS: &str =
    include_str!("../../../../testvectors/captures/tls-udp/control-packets.txt");
const TLS_AUTH_PACKETS: &str =
    include_str!("../../../../testvectors/captures/tls-auth/control-packets.txt");
const LEGACY_PACKETS: &str =
    include_str!("../../../../testvectors/captures/tls-legacy-prf/control-packets.txt");
const LEGACY_KEY: &[u8] = include_bytes!("../../../../testvectors/captures/tls-legacy-prf/tc.key");

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// (from the client, packet) for every line of a `control-packets.txt`.
fn packets(text: &str) -> Vec<(bool, Vec<u8>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (dir, hex) = l.split_once(' ').unwrap();
            (dir == "c2s", unhex(hex.trim()))
        })
        .collect()
}

fn inline(material: &Option<Material>) -> &[u8] {
    match material {
        Some(Material::Inline(bytes)) => bytes.expose(),
        other => panic!("expected inline material, got {other:?}"),
    }
}

/// The capture's own client profile, with its inline PKI and the capture's tls-crypt key.
fn capture_client() -> TlsSession {
    let (profile, _) = Profile::parse(TLS_UDP_PROFILE.as_bytes()).unwrap();
    let materials = TlsMaterials {
        ca: Some(inline(&profile.ca)),
        cert: Some(inline(&profile.cert)),
        key: Some(inline(&profile.key)),
        tls_wrap_key: Some(TC_KEY),
        ..TlsMaterials::default()
    };
    let clock = WallClock::new(Instant::ZERO, UnixTime::from_secs(1_790_000_000));
    let remote = "10.99.0.1:1194".parse().unwrap();
    let config = tls_config(&profile, 0, remote, &materials, clock).unwrap();
    TlsSession::new(config, &Seed::from_byte(1), Instant::ZERO).unwrap()
}

#[test]
fn capture_our_hard_reset_has_the_stock_clients_layout() {
    let captured = packets(TLS_UDP_PACKETS);
    let (from_client, theirs) = &captured[0];
    assert!(from_client);
    let mut client = capture_client();
    let mut buf = [0u8; 1500];
    let n = client
        .poll_transmit(Instant::ZERO, &mut buf)
        .unwrap()
        .unwrap();
    let ours = buf[..n].to_vec();
    assert_eq!(ours.len(), theirs.len(), "54 bytes with tls-crypt");
    assert_eq!(ours[0], theirs[0], "0x38: HARD_RESET_CLIENT_V2, key id 0");
    // Both unwrap with the server's side of the key into the same 14-byte shape.
    let server = TlsCrypt::server(&raw_key(TC_KEY));
    let mut ours_plain = ours;
    let (our_replay, our_len) = server.unwrap(&mut ours_plain).unwrap();
    let mut theirs_plain = theirs.clone();
    let (their_replay, their_len) = server.unwrap(&mut theirs_plain).unwrap();
    assert_eq!(our_len, 14);
    assert_eq!(their_len, 14);
    assert_eq!(our_replay.packet_id, 1);
    assert_eq!(their_replay.packet_id, 1);
    assert_eq!(our_replay.time, 1_790_000_000);
    assert_eq!(
        ours_plain[9..14],
        theirs_plain[9..14],
        "no ACKs, message id 0"
    );
    let parsed = ControlPacket::parse(&ours_plain[..14]).unwrap();
    assert_eq!(parsed.session_id, client.local_session_id());
    assert!(parsed.session_id.is_defined());
    // A retransmission two seconds later reuses message id 0 with a new replay id.
    assert_eq!(client.poll_transmit(Instant::ZERO, &mut buf), None);
    let n = client
        .poll_transmit(Instant::from_secs(2), &mut buf)
        .unwrap()
        .unwrap();
    let (replay, len) = server.unwrap(&mut buf[..n]).unwrap();
    assert_eq!(replay.packet_id, 2);
    assert_eq!(buf[..len], ours_plain[..14]);
}

/// Unwraps every server packet of a capture with the client's key and checks the control
/// channel's invariants.
fn check_server_packets(text: &str, wrap: &ControlWrap) -> usize {
    let captured = packets(text);
    let client_sid = {
        // The client's session id, from its reset (bytes 1..9 are never encrypted).
        let (_, reset) = &captured[0];
        SessionId(reset[1..9].try_into().unwrap())
    };
    let mut server_sid = None;
    let mut last_replay = 0;
    let mut message_ids = Vec::new();
    let mut checked = 0;
    for (from_client, packet) in captured.iter().filter(|(c, _)| !c) {
        assert!(!from_client);
        let mut packet = packet.clone();
        if packet[0] >> 3 == 9 {
            continue;
        }
        let (replay, len) = wrap.unwrap(&mut packet).unwrap();
        let replay = replay.unwrap();
        // Replay ids only go up (1 for the stateless reset, then the session's own).
        assert!(replay.packet_id > last_replay, "{replay:?}");
        last_replay = replay.packet_id;
        let control = ControlPacket::parse(&packet[..len]).unwrap();
        assert_eq!(
            *server_sid.get_or_insert(control.session_id),
            control.session_id
        );
        if !control.body.acks.is_empty() {
            assert_eq!(control.body.remote_session_id, Some(client_sid));
            assert!(control.body.acks.len() <= 8);
        }
        match control.op.opcode {
            Opcode::ControlHardResetServerV2 => {
                assert_eq!(control.body.message_id, Some(0));
                assert_eq!(control.body.acks.as_slice(), &[0]);
            }
            Opcode::ControlV1 => {
                assert!(control.body.acks.len() <= 4);
                message_ids.push(control.body.message_id.unwrap());
            }
            Opcode::AckV1 => assert_eq!(control.body.message_id, None),
            other => panic!("unexpected {other:?}"),
        }
        checked += 1;
    }
    // P_CONTROL_V1 message ids run 1, 2, 3, ... after the reset's 0.
    let expected: Vec<u32> = (1..=message_ids.len() as u32).collect();
    assert_eq!(message_ids, expected);
    checked
}

#[test]
fn capture_server_packets_unwrap_and_parse_tls_crypt() {
    let wrap = ControlWrap::Crypt(TlsCrypt::client(&raw_key(TC_KEY)));
    assert!(check_server_packets(TLS_UDP_PACKETS, &wrap) >= 4);
    let legacy = ControlWrap::Crypt(TlsCrypt::client(&raw_key(LEGACY_KEY)));
    assert!(check_server_packets(LEGACY_PACKETS, &legacy) >= 4);
}

#[test]
fn capture_server_packets_unwrap_and_parse_tls_auth_sha512() {
    let wrap = ControlWrap::Auth(
        TlsAuth::new(
            &raw_key(TA_KEY),
            Some(KeyDirection::Inverse),
            Digest::Sha512,
        )
        .unwrap(),
    );
    assert!(check_server_packets(TLS_AUTH_PACKETS, &wrap) >= 4);
}

#[test]
fn capture_server_reset_for_another_session_is_ignored() {
    let captured = packets(TLS_UDP_PACKETS);
    let (_, server_reset) = captured.iter().find(|(c, _)| !c).unwrap();
    let mut client = capture_client();
    let mut buf = [0u8; 1500];
    client
        .poll_transmit(Instant::ZERO, &mut buf)
        .unwrap()
        .unwrap();
    // Authentic (our key) but it acknowledges the captured client's session, not ours.
    let mut packet = server_reset.clone();
    assert_eq!(
        client.decapsulate(Instant::from_millis(5), &mut packet),
        Err(DropReason::UnknownKey)
    );
    assert_eq!(client.remote_session_id(), None);
    // Still waiting to retransmit the reset, and nothing else to send.
    assert_eq!(
        client.poll_transmit(Instant::from_millis(5), &mut buf),
        None
    );
    assert_eq!(
        client.poll_timeout().map(|(at, _)| at),
        Some(Instant::from_secs(2))
    );
}
