//! The SOCKS5 front end (RFC 1928, RFC 1929), driven with byte strings.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Harness, connect};
use erebus_proxy::{Action, FrontEnd, ProxyAuth, ProxyConfig, UpstreamFailure};

const GREETING_NO_AUTH: &[u8] = &[5, 1, 0];
const CONNECT_V4: &[u8] = &[5, 1, 0, 1, 10, 0, 0, 7, 0x01, 0xbb];
/// RSV, ATYP IPv4, BND.ADDR 0.0.0.0, BND.PORT 0.
const FAILURE_TAIL: [u8; 8] = [0, 1, 0, 0, 0, 0, 0, 0];

fn socks() -> Harness {
    Harness::new(FrontEnd::Socks5, ProxyConfig::default())
}

fn socks_auth() -> Harness {
    Harness::new(
        FrontEnd::Socks5,
        ProxyConfig {
            auth: Some(ProxyAuth::new("alice", "s3cret").expect("valid credentials")),
            ..ProxyConfig::default()
        },
    )
}

fn failure_reply(code: u8) -> Vec<u8> {
    let mut reply = vec![5, code];
    reply.extend_from_slice(&FAILURE_TAIL);
    reply
}

fn auth_request(user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut request = vec![1, user.len() as u8];
    request.extend_from_slice(user);
    request.push(pass.len() as u8);
    request.extend_from_slice(pass);
    request
}

#[test]
fn connect_to_ipv4_without_auth() {
    let mut h = socks();
    h.client_sends(GREETING_NO_AUTH);
    assert_eq!(h.take_client(), vec![5, 0]);
    h.client_sends(CONNECT_V4);
    assert_eq!(h.take_actions(), vec![connect("10.0.0.7", 443)]);
    assert!(h.take_client().is_empty());
    let bound: SocketAddr = "10.8.0.2:40000".parse().unwrap();
    h.conn.on_upstream_connected(h.now, Some(bound));
    h.drain();
    assert_eq!(h.take_client(), vec![5, 0, 0, 1, 10, 8, 0, 2, 0x9c, 0x40]);
    h.client_sends(b"ping");
    assert_eq!(h.take_upstream(), b"ping");
    h.upstream_sends(b"pong");
    assert_eq!(h.take_client(), b"pong");
    h.upstream_closes();
    assert_eq!(h.take_actions(), vec![Action::ShutdownClient]);
    h.client_closes();
    assert_eq!(
        h.take_actions(),
        vec![
            Action::ShutdownUpstream,
            Action::CloseUpstream,
            Action::CloseClient
        ]
    );
}

#[test]
fn connect_to_ipv6_reports_an_ipv6_bound_address() {
    let mut h = socks();
    h.client_sends(GREETING_NO_AUTH);
    h.take_client();
    let mut request = vec![5, 1, 0, 4];
    request.extend_from_slice(&"fd00::5".parse::<std::net::Ipv6Addr>().unwrap().octets());
    request.extend_from_slice(&22u16.to_be_bytes());
    h.client_sends(&request);
    assert_eq!(h.take_actions(), vec![connect("fd00::5", 22)]);
    let bound: SocketAddr = "[fd00::2]:5".parse().unwrap();
    h.conn.on_upstream_connected(h.now, Some(bound));
    h.drain();
    let mut expected = vec![5, 0, 0, 4];
    expected.extend_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    expected.extend_from_slice(&[0, 5]);
    assert_eq!(h.take_client(), expected);
}

#[test]
fn domain_names_are_passed_down_unresolved() {
    let mut h = socks();
    h.client_sends(GREETING_NO_AUTH);
    let mut request = vec![5, 1, 0, 3, 13];
    request.extend_from_slice(b"intranet.corp");
    request.extend_from_slice(&80u16.to_be_bytes());
    h.client_sends(&request);
    assert_eq!(h.take_actions(), vec![connect("intranet.corp", 80)]);
    h.connected();
    assert_eq!(h.take_client(), vec![5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn address_literals_in_domain_form_become_addresses() {
    let mut h = socks();
    h.client_sends(GREETING_NO_AUTH);
    let mut request = vec![5, 1, 0, 3, 8];
    request.extend_from_slice(b"10.1.2.3");
    request.extend_from_slice(&80u16.to_be_bytes());
    h.client_sends(&request);
    assert_eq!(h.take_actions(), vec![connect("10.1.2.3", 80)]);
}

#[test]
fn handshake_split_at_every_byte_and_all_in_one_read() {
    let mut all = GREETING_NO_AUTH.to_vec();
    all.extend_from_slice(CONNECT_V4);
    all.extend_from_slice(b"early data");
    for split in 0..=all.len() {
        let mut h = socks();
        h.client_sends(&all[..split]);
        h.client_sends(&all[split..]);
        assert_eq!(
            h.take_actions(),
            vec![connect("10.0.0.7", 443)],
            "split at {split}"
        );
        assert_eq!(h.take_client(), vec![5, 0]);
        h.connected();
        assert_eq!(h.take_client(), vec![5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(h.take_upstream(), b"early data", "split at {split}");
    }
    let mut h = socks();
    for byte in all.chunks(1) {
        h.client_sends(byte);
    }
    h.connected();
    assert_eq!(h.take_upstream(), b"early data");
}

#[test]
fn username_password_auth_succeeds() {
    let mut h = socks_auth();
    h.client_sends(&[5, 2, 0, 2]);
    assert_eq!(h.take_client(), vec![5, 2]);
    h.client_sends(&auth_request(b"alice", b"s3cret"));
    assert_eq!(h.take_client(), vec![1, 0]);
    h.client_sends(CONNECT_V4);
    assert_eq!(h.take_actions(), vec![connect("10.0.0.7", 443)]);
}

#[test]
fn wrong_credentials_are_refused_and_closed() {
    for (user, pass) in [
        (&b"alice"[..], &b"wrong"[..]),
        (b"bob", b"s3cret"),
        (b"", b""),
    ] {
        let mut h = socks_auth();
        let mut all = vec![5, 1, 2];
        all.extend_from_slice(&auth_request(user, pass));
        all.extend_from_slice(CONNECT_V4);
        h.client_sends(&all);
        assert_eq!(
            h.take_client(),
            vec![5, 2, 1, 1],
            "the request after is not read"
        );
        assert_eq!(h.take_actions(), vec![Action::ShutdownClient]);
        h.client_closes();
        assert_eq!(h.take_actions(), vec![Action::CloseClient]);
    }
}

#[test]
fn bad_auth_version_is_a_failure() {
    let mut h = socks_auth();
    h.client_sends(&[5, 1, 2, 5, 1, b'a', 1, b'b']);
    assert_eq!(h.take_client(), vec![5, 2, 1, 1]);
}

#[test]
fn auth_required_but_not_offered_is_no_acceptable_method() {
    let mut h = socks_auth();
    h.client_sends(&[5, 1, 0]);
    assert_eq!(h.take_client(), vec![5, 0xff]);
    assert_eq!(h.take_actions(), vec![Action::ShutdownClient]);
    let mut h = socks();
    h.client_sends(&[5, 2, 1, 3]);
    assert_eq!(
        h.take_client(),
        vec![5, 0xff],
        "GSSAPI and others are not offered"
    );
}

#[test]
fn credentials_offered_without_auth_configured_are_accepted() {
    let mut h = socks();
    h.client_sends(&[5, 1, 2]);
    assert_eq!(h.take_client(), vec![5, 2]);
    h.client_sends(&auth_request(b"any", b"thing"));
    assert_eq!(h.take_client(), vec![1, 0]);
    h.client_sends(CONNECT_V4);
    assert_eq!(h.take_actions(), vec![connect("10.0.0.7", 443)]);
}

#[test]
fn every_upstream_failure_maps_to_its_reply_code() {
    let cases = [
        (UpstreamFailure::Other, 0x01),
        (UpstreamFailure::Reset, 0x01),
        (UpstreamFailure::NotAllowed, 0x02),
        (UpstreamFailure::TunnelDown, 0x01),
        (UpstreamFailure::Unreachable, 0x04),
        (UpstreamFailure::NameNotFound, 0x04),
        (UpstreamFailure::Refused, 0x05),
        (UpstreamFailure::Timeout, 0x06),
    ];
    for (failure, code) in cases {
        let mut h = socks();
        h.client_sends(GREETING_NO_AUTH);
        h.client_sends(CONNECT_V4);
        h.take_client();
        h.take_actions();
        h.failed(failure);
        assert_eq!(h.take_client(), failure_reply(code), "{failure:?}");
        assert_eq!(
            h.take_actions(),
            vec![Action::CloseUpstream, Action::ShutdownClient]
        );
        h.client_closes();
        assert_eq!(h.take_actions(), vec![Action::CloseClient]);
    }
}

#[test]
fn connect_timeout_is_ttl_expired() {
    let mut h = socks();
    h.client_sends(GREETING_NO_AUTH);
    h.client_sends(CONNECT_V4);
    h.take_client();
    assert_eq!(h.conn.poll_timeout(), Some(h.now + Duration::from_secs(10)));
    h.fire_deadline();
    assert_eq!(h.take_client(), failure_reply(0x06));
    assert_eq!(
        h.take_actions(),
        vec![
            connect("10.0.0.7", 443),
            Action::CloseUpstream,
            Action::ShutdownClient
        ]
    );
}

#[test]
fn bind_and_udp_associate_are_not_supported() {
    for command in [2u8, 3, 9] {
        let mut h = socks();
        h.client_sends(GREETING_NO_AUTH);
        h.client_sends(&[5, command, 0, 1, 10, 0, 0, 7, 0, 53]);
        assert_eq!(h.take_client(), [vec![5, 0], failure_reply(0x07)].concat());
        assert_eq!(h.take_actions(), vec![Action::ShutdownClient]);
    }
}

#[test]
fn unknown_address_types_are_not_supported() {
    let mut h = socks();
    h.client_sends(GREETING_NO_AUTH);
    h.client_sends(&[5, 1, 0, 5, 1, 2, 3]);
    assert_eq!(h.take_client(), [vec![5, 0], failure_reply(0x08)].concat());
}

#[test]
fn port_zero_is_not_allowed() {
    let mut h = socks();
    h.client_sends(GREETING_NO_AUTH);
    h.client_sends(&[5, 1, 0, 1, 10, 0, 0, 7, 0, 0]);
    assert_eq!(h.take_client(), [vec![5, 0], failure_reply(0x02)].concat());
}

#[test]
fn invalid_names_are_host_unreachable() {
    for name in [&b""[..], b"bad name", b"a/b", b"\xff\xfe"] {
        let mut h = socks();
        h.client_sends(GREETING_NO_AUTH);
        let mut request = vec![5, 1, 0, 3, name.len() as u8];
        request.extend_from_slice(name);
        request.extend_from_slice(&[0, 80]);
        h.client_sends(&request);
        assert_eq!(
            h.take_client(),
            [vec![5, 0], failure_reply(0x04)].concat(),
            "{name:?}"
        );
        assert!(
            !h.take_actions()
                .iter()
                .any(|a| matches!(a, Action::Connect { .. }))
        );
    }
}

#[test]
fn wrong_request_version_is_a_general_failure() {
    let mut h = socks();
    h.client_sends(GREETING_NO_AUTH);
    h.client_sends(&[4, 1, 0, 1, 10, 0, 0, 7, 0, 80]);
    assert_eq!(h.take_client(), [vec![5, 0], failure_reply(0x01)].concat());
}

#[test]
fn not_socks5_closes_without_a_reply() {
    for greeting in [&[4u8, 1, 0, 80, 10, 0, 0, 1, 0][..], b"GET / HTTP/1.1\r\n"] {
        let mut h = socks();
        h.client_sends(greeting);
        assert!(h.take_client().is_empty());
        assert_eq!(h.take_actions(), vec![Action::CloseClient]);
        assert!(h.conn.is_closed());
    }
}

#[test]
fn stalled_handshake_is_closed_at_the_deadline() {
    let mut h = socks();
    h.client_sends(&[5, 1]);
    assert_eq!(h.conn.poll_timeout(), Some(h.now + Duration::from_secs(30)));
    h.advance(Duration::from_secs(29));
    assert!(h.take_actions().is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take_actions(), vec![Action::CloseClient]);
}

#[test]
fn client_closing_mid_handshake_closes() {
    let mut h = socks();
    h.client_sends(&[5, 1, 0, 5, 1]);
    h.client_closes();
    assert_eq!(h.take_actions(), vec![Action::CloseClient]);
}

#[test]
fn half_closed_client_still_gets_its_stream() {
    let mut h = socks();
    let mut all = GREETING_NO_AUTH.to_vec();
    all.extend_from_slice(CONNECT_V4);
    all.extend_from_slice(b"request");
    h.client_sends(&all);
    h.client_closes();
    h.take_actions();
    h.connected();
    assert_eq!(h.take_upstream(), b"request");
    assert_eq!(h.take_actions(), vec![Action::ShutdownUpstream]);
    h.upstream_sends(b"reply");
    h.upstream_closes();
    assert_eq!(
        h.take_client(),
        [vec![5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0], b"reply".to_vec()].concat()
    );
    assert_eq!(
        h.take_actions(),
        vec![
            Action::ShutdownClient,
            Action::CloseUpstream,
            Action::CloseClient
        ]
    );
}

#[test]
fn relay_backpressure_both_ways() {
    let mut h = Harness::new(
        FrontEnd::Socks5,
        ProxyConfig {
            buffer_size: 100,
            ..ProxyConfig::default()
        },
    );
    h.client_sends(GREETING_NO_AUTH);
    h.client_sends(CONNECT_V4);
    h.connected();
    h.take_actions();
    h.upstream_reads = false;
    h.client_sends(&[1; 101]);
    assert_eq!(h.take_actions(), vec![Action::PauseClient]);
    h.upstream_reads = true;
    h.drain();
    assert_eq!(h.take_actions(), vec![Action::ResumeClient]);
    h.client_reads = false;
    h.upstream_sends(&[2; 60]);
    assert!(h.take_actions().is_empty());
    h.upstream_sends(&[2; 60]);
    assert_eq!(h.take_actions(), vec![Action::PauseUpstream]);
    h.client_reads = true;
    h.drain();
    assert_eq!(h.take_actions(), vec![Action::ResumeUpstream]);
}

#[test]
fn idle_relay_closes_when_an_idle_timeout_is_set() {
    let mut h = Harness::new(
        FrontEnd::Socks5,
        ProxyConfig {
            idle_timeout: Some(Duration::from_secs(300)),
            ..ProxyConfig::default()
        },
    );
    h.client_sends(GREETING_NO_AUTH);
    h.client_sends(CONNECT_V4);
    h.connected();
    h.take_actions();
    h.advance(Duration::from_secs(200));
    h.client_sends(b"x");
    assert_eq!(
        h.conn.poll_timeout(),
        Some(h.now + Duration::from_secs(300))
    );
    h.fire_deadline();
    assert_eq!(
        h.take_actions(),
        vec![Action::CloseUpstream, Action::CloseClient]
    );
}
