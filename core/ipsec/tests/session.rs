//! The IKEv2 session's first exchange against scripted answers: what it sends, how it
//! retries after COOKIE and INVALID_KE_PAYLOAD, how it retransmits and when it gives up.
//! (The full exchanges run against strongSwan in drivers/tests/ipsec_e2e.rs.)

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use erebus_ipsec::session::{IpsecSession, SessionConfig};
use erebus_ipsec::swanctl;
use erebus_ipsec::wire::{self, Header, Notify, exchange, flags, notify, payload};
use erebus_sansio::tunnel::{Fault, Tunnel, TunnelEvent};
use erebus_sansio::{Instant, Seed, UnixTime, WallClock};
use zeroize::Zeroizing;

const CONFIG: &str = "connections {
    home {
        remote_addrs = 192.0.2.1
        vips = 0.0.0.0
        proposals = aes256gcm16-prfsha256-x25519-ecp256
        local {
            auth = psk
            id = client@example.test
        }
        remote {
            auth = psk
            id = vpn.example.test
        }
        children {
            net {
                remote_ts = 10.98.0.0/24
            }
        }
    }
}
secrets {
    ike-home {
        id = client@example.test
        secret = not-a-real-secret
    }
}
";

fn server() -> SocketAddr {
    "192.0.2.1:500".parse().unwrap()
}

fn new_session(seed: u8) -> IpsecSession {
    let mut no_files = |path: &Path| -> Result<Zeroizing<Vec<u8>>, String> {
        Err(format!("{}: no files here", path.display()))
    };
    let (connection, _) =
        swanctl::load(CONFIG.as_bytes(), "swanctl.conf", None, &mut no_files).unwrap();
    let config = SessionConfig {
        connection,
        server: server(),
        wall_clock: WallClock::new(Instant::ZERO, UnixTime::from_secs(1_800_000_000)),
    };
    let mut session = IpsecSession::new(config, &Seed::from_byte(seed), Instant::ZERO).unwrap();
    session.transport_connected(Instant::ZERO, server());
    session
}

fn transmit(session: &mut IpsecSession, now: Instant) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let len = session.poll_transmit(now, &mut buf)?.unwrap();
    buf.truncate(len);
    Some(buf)
}

/// The payload types of an unencrypted message, in order, and the first notify's type.
fn payload_types(msg: &[u8]) -> Vec<u8> {
    let header = Header::parse(msg).unwrap();
    wire::split_chain(header.next_payload, &msg[wire::HEADER_LEN..])
        .unwrap()
        .iter()
        .map(|p| p.kind)
        .collect()
}

fn notify_types(msg: &[u8]) -> Vec<u16> {
    let header = Header::parse(msg).unwrap();
    wire::split_chain(header.next_payload, &msg[wire::HEADER_LEN..])
        .unwrap()
        .iter()
        .filter(|p| p.kind == payload::NOTIFY)
        .map(|p| Notify::parse(p.body).unwrap().kind)
        .collect()
}

/// A response to IKE_SA_INIT that holds only `notify` with `data`.
fn notify_response(request: &[u8], kind: u16, data: &[u8]) -> Vec<u8> {
    let request = Header::parse(request).unwrap();
    let mut body = Vec::new();
    wire::write_chain(
        &mut body,
        &[(payload::NOTIFY, Notify::encode(0, &[], kind, data))],
    );
    let mut msg = Vec::new();
    Header {
        spi_i: request.spi_i,
        spi_r: 0,
        next_payload: payload::NOTIFY,
        exchange: exchange::IKE_SA_INIT,
        flags: flags::RESPONSE,
        message_id: 0,
        length: (wire::HEADER_LEN + body.len()) as u32,
    }
    .write(&mut msg);
    msg.extend_from_slice(&body);
    msg
}

#[test]
fn the_first_message_forces_encapsulation_and_offers_fragments() {
    let mut session = new_session(1);
    let init = transmit(&mut session, Instant::ZERO).unwrap();
    let header = Header::parse(&init).unwrap();
    assert_eq!(header.exchange, exchange::IKE_SA_INIT);
    assert_eq!(header.flags, flags::INITIATOR);
    assert_eq!(header.spi_r, 0);
    assert_eq!(
        payload_types(&init),
        [
            payload::SA,
            payload::KE,
            payload::NONCE,
            payload::NOTIFY,
            payload::NOTIFY,
            payload::NOTIFY,
            payload::NOTIFY
        ]
    );
    assert_eq!(
        notify_types(&init),
        [
            notify::NAT_DETECTION_SOURCE_IP,
            notify::NAT_DETECTION_DESTINATION_IP,
            notify::IKEV2_FRAGMENTATION_SUPPORTED,
            notify::SIGNATURE_HASH_ALGORITHMS
        ]
    );
    // The same seed gives the same bytes: a session replays.
    assert_eq!(transmit(&mut new_session(1), Instant::ZERO).unwrap(), init);
    assert_ne!(transmit(&mut new_session(2), Instant::ZERO).unwrap(), init);
}

#[test]
fn a_cookie_is_echoed_first_with_the_same_spi_and_nonce() {
    let mut session = new_session(1);
    let init = transmit(&mut session, Instant::ZERO).unwrap();
    let mut answer = notify_response(&init, notify::COOKIE, b"a cookie from the server");
    session.decapsulate(Instant::ZERO, &mut answer).unwrap();
    let again = transmit(&mut session, Instant::ZERO).unwrap();
    assert_eq!(
        Header::parse(&again).unwrap().spi_i,
        Header::parse(&init).unwrap().spi_i
    );
    assert_eq!(notify_types(&again)[0], notify::COOKIE);
    let header = Header::parse(&again).unwrap();
    let chain = wire::split_chain(header.next_payload, &again[wire::HEADER_LEN..]).unwrap();
    assert_eq!(
        Notify::parse(chain[0].body).unwrap().data,
        b"a cookie from the server"
    );
    // Everything after the cookie is the first request again.
    let first = Header::parse(&init).unwrap();
    let rest_then = wire::split_chain(first.next_payload, &init[wire::HEADER_LEN..]).unwrap();
    assert_eq!(chain[1..], rest_then[..]);
}

#[test]
fn invalid_ke_payload_starts_over_with_the_group_asked_for() {
    let mut session = new_session(1);
    let init = transmit(&mut session, Instant::ZERO).unwrap();
    let ke_group = |msg: &[u8]| {
        let header = Header::parse(msg).unwrap();
        let chain = wire::split_chain(header.next_payload, &msg[wire::HEADER_LEN..]).unwrap();
        let ke = chain.iter().find(|p| p.kind == payload::KE).unwrap().body;
        u16::from_be_bytes([ke[0], ke[1]])
    };
    assert_eq!(ke_group(&init), 31);
    let mut answer = notify_response(&init, notify::INVALID_KE_PAYLOAD, &19u16.to_be_bytes());
    session.decapsulate(Instant::ZERO, &mut answer).unwrap();
    let again = transmit(&mut session, Instant::ZERO).unwrap();
    assert_eq!(ke_group(&again), 19, "ECP-256, as the server asked");
    // A group we did not offer ends the session: nothing can be agreed.
    let mut refused = notify_response(&again, notify::INVALID_KE_PAYLOAD, &14u16.to_be_bytes());
    session.decapsulate(Instant::ZERO, &mut refused).unwrap();
    let down = std::iter::from_fn(|| session.poll_event()).last();
    assert!(
        matches!(&down, Some(TunnelEvent::Down(f)) if f.fault == Fault::PeerIncompatible),
        "{down:?}"
    );
}

#[test]
fn an_unanswered_request_is_retransmitted_unchanged_then_given_up() {
    let mut session = new_session(3);
    let init = transmit(&mut session, Instant::ZERO).unwrap();
    let mut sends = vec![Duration::ZERO];
    let down = loop {
        let (now, _) = session.poll_timeout().expect("a timer");
        session.handle_timeout(now);
        while let Some(again) = transmit(&mut session, now) {
            assert_eq!(again, init, "a retransmission is the same bytes");
            sends.push(now.saturating_duration_since(Instant::ZERO));
        }
        if let Some(event) = std::iter::from_fn(|| session.poll_event()).last() {
            break event;
        }
        assert!(
            now < Instant::ZERO + Duration::from_secs(300),
            "never gave up"
        );
    };
    assert!(
        matches!(&down, TunnelEvent::Down(f) if f.fault == Fault::Timeout),
        "{down:?}"
    );
    // Five sends with a growing wait (2 s, then times 1.8).
    let secs: Vec<f64> = sends.iter().map(Duration::as_secs_f64).collect();
    assert_eq!(secs.len(), 5, "{secs:?}");
    for pair in secs.windows(3) {
        assert!(pair[2] - pair[1] > pair[1] - pair[0], "{secs:?}");
    }
    assert!((secs[1] - 2.0).abs() < 0.01, "{secs:?}");
}

#[test]
fn garbage_from_the_network_is_dropped_without_changing_anything() {
    let mut session = new_session(4);
    let init = transmit(&mut session, Instant::ZERO).unwrap();
    for len in 0..64 {
        let mut junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let _ = session.decapsulate(Instant::ZERO, &mut junk);
    }
    // A truncated or bit-flipped copy of a real answer is refused as well.
    let answer = notify_response(&init, notify::COOKIE, b"c");
    for cut in 0..answer.len() {
        let _ = session.decapsulate(Instant::ZERO, &mut answer[..cut].to_vec());
    }
    assert!(
        transmit(&mut session, Instant::ZERO).is_none(),
        "nothing was answered"
    );
    assert!(session.poll_event().is_none());
}
