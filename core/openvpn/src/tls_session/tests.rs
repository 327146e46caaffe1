//! Whole sessions against the fake server, through an in-memory link with seeded loss,
//! reordering and duplication, in virtual time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use erebus_sansio::tunnel::{Decapsulated, DropReason, Fault, TunnelEvent};
use erebus_sansio::{Instant, Seed, SeededRng, Tunnel, UnixTime, WallClock};

use super::fake_server::{
    CA, CLIENT_CERT, CLIENT_KEY, FakeServer, NOW_UNIX, OTHER_CA, ServerBehaviour,
};
use super::*;
use crate::config::{Credentials, Profile};
use crate::control::wrap::{TlsAuth, TlsCrypt};
use crate::data::AeadAlg;
use crate::setup::{TlsMaterials, TlsSetupError, tls_config};

pub(crate) const TC_KEY: &[u8] = include_bytes!("../../../../testvectors/captures/tls-udp/tc.key");
pub(crate) const TA_KEY: &[u8] = include_bytes!("../../../../testvectors/captures/tls-auth/ta.key");

/// The 256 bytes of a static key file.
pub(crate) fn raw_key(text: &[u8]) -> [u8; 256] {
    use crate::keys::{KeySlotIndex, StaticKey};
    let key = StaticKey::parse(text).unwrap();
    let mut raw = [0u8; 256];
    for (i, index) in [KeySlotIndex::Zero, KeySlotIndex::One]
        .into_iter()
        .enumerate()
    {
        raw[i * 128..i * 128 + 64].copy_from_slice(key.slot(index).cipher_key());
        raw[i * 128 + 64..i * 128 + 128].copy_from_slice(key.slot(index).hmac_key());
    }
    raw
}

const PROFILE: &str = "client
dev tun
proto udp
remote 10.99.0.1 1194
remote-cert-tls server
verify-x509-name server.erebus.test name
data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305
explicit-exit-notify 1
ca ca.crt
cert client.crt
key client.key
tls-crypt tc.key
";

fn remote() -> SocketAddr {
    "10.99.0.1:1194".parse().unwrap()
}

fn wall_clock() -> WallClock {
    WallClock::new(Instant::ZERO, UnixTime::from_secs(NOW_UNIX))
}

/// The client configuration of `profile_text` through [`tls_config`], with the test PKI.
fn client_config(profile_text: &str, ca: &[u8], wrap_key: &[u8]) -> TlsConfig {
    let (profile, _) = Profile::parse(profile_text.as_bytes()).unwrap();
    let materials = TlsMaterials {
        ca: Some(ca),
        cert: Some(CLIENT_CERT),
        key: Some(CLIENT_KEY),
        tls_wrap_key: Some(wrap_key),
        ..TlsMaterials::default()
    };
    tls_config(&profile, 0, remote(), &materials, wall_clock()).unwrap()
}

/// A link that loses, duplicates and delays (hence reorders) packets, from a seed.
struct Link {
    rng: SeededRng,
    /// Per mille.
    loss: u32,
    /// Per mille.
    duplication: u32,
    latency: Duration,
    jitter_ms: u32,
    queue: BTreeMap<(Instant, u64), (bool, Vec<u8>)>,
    seq: u64,
    lost: u32,
}

impl Link {
    fn new(seed: u8) -> Self {
        Self {
            rng: Seed::from_byte(seed).rng(),
            loss: 0,
            duplication: 0,
            latency: Duration::from_millis(10),
            jitter_ms: 0,
            queue: BTreeMap::new(),
            seq: 0,
            lost: 0,
        }
    }

    fn lossy(seed: u8, loss: u32, duplication: u32, jitter_ms: u32) -> Self {
        Self {
            loss,
            duplication,
            jitter_ms,
            ..Self::new(seed)
        }
    }

    fn send(&mut self, now: Instant, to_server: bool, packet: Vec<u8>) {
        if self.rng.below(1000) < self.loss {
            self.lost += 1;
            return;
        }
        let copies = if self.rng.below(1000) < self.duplication {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay =
                self.latency + Duration::from_millis(u64::from(self.rng.below(self.jitter_ms + 1)));
            self.queue
                .insert((now + delay, self.seq), (to_server, packet.clone()));
            self.seq += 1;
        }
    }

    fn next(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(bool, Vec<u8>)> {
        let key = *self.queue.keys().next().filter(|(at, _)| *at <= now)?;
        self.queue.remove(&key)
    }
}

/// One call made on the client, for replaying a session from its inputs.
#[derive(Clone, Debug)]
enum Call {
    Decapsulate(Instant, Vec<u8>),
    Timeout(Instant),
    Transmit(Instant),
    Encapsulate(Instant, Vec<u8>),
    Close(Instant),
    Renegotiate(Instant),
}

/// Client, server and link, in virtual time.
struct World {
    now: Instant,
    client: TlsSession,
    server: FakeServer,
    link: Link,
    events: Vec<TunnelEvent>,
    client_inner: Vec<Vec<u8>>,
    client_drops: Vec<DropReason>,
    /// Every packet put on the link: (time, from the client, bytes).
    transcript: Vec<(Instant, bool, Vec<u8>)>,
    journal: Vec<Call>,
    /// What the client produced, in order (transmits and encapsulations).
    outputs: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl World {
    fn new(config: TlsConfig, behaviour: ServerBehaviour, link: Link, seed: u8) -> Self {
        let client = TlsSession::new(config, &Seed::from_byte(seed), Instant::ZERO).unwrap();
        let server = FakeServer::new(behaviour, &Seed::from_byte(seed ^ 0x80), Instant::ZERO);
        Self {
            now: Instant::ZERO,
            client,
            server,
            link,
            events: Vec::new(),
            client_inner: Vec::new(),
            client_drops: Vec::new(),
            transcript: Vec::new(),
            journal: Vec::new(),
            outputs: Vec::new(),
            buf: vec![0u8; 2048],
        }
    }

    fn standard(link: Link, seed: u8) -> Self {
        let config = client_config(PROFILE, CA, TC_KEY);
        let behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
        Self::new(config, behaviour, link, seed)
    }

    fn flush(&mut self) {
        loop {
            self.journal.push(Call::Transmit(self.now));
            match self.client.poll_transmit(self.now, &mut self.buf) {
                Some(Ok(n)) => {
                    let packet = self.buf[..n].to_vec();
                    self.outputs.push(packet.clone());
                    self.transcript.push((self.now, true, packet.clone()));
                    self.link.send(self.now, true, packet);
                }
                Some(Err(needed)) => panic!("poll_transmit wants {needed} bytes"),
                None => break,
            }
        }
        while let Some(event) = self.client.poll_event() {
            self.events.push(event);
        }
        while let Some(packet) = self.server.poll_transmit(self.now) {
            self.transcript.push((self.now, false, packet.clone()));
            self.link.send(self.now, false, packet);
        }
    }

    fn deliver_to_client(&mut self, mut packet: Vec<u8>) -> Result<Decapsulated, DropReason> {
        self.journal
            .push(Call::Decapsulate(self.now, packet.clone()));
        let result = self.client.decapsulate(self.now, &mut packet);
        match &result {
            Ok(Decapsulated::Inner(range)) => {
                self.client_inner.push(packet[range.clone()].to_vec())
            }
            Ok(Decapsulated::Consumed) => {}
            Err(reason) => self.client_drops.push(*reason),
        }
        result
    }

    /// Advances to the next event, not past `limit`; false when nothing is left to do before
    /// it.
    fn step(&mut self, limit: Instant) -> bool {
        self.flush();
        let next = [
            self.link.next(),
            self.client.poll_timeout().map(|(at, _)| at),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) if at <= limit => self.now = self.now.max(at),
            _ => {
                self.now = self.now.max(limit);
                return false;
            }
        }
        while let Some((to_server, packet)) = self.link.pop_due(self.now) {
            if to_server {
                self.server.receive(self.now, &packet);
            } else {
                let _ = self.deliver_to_client(packet);
            }
        }
        if self
            .client
            .poll_timeout()
            .is_some_and(|(at, _)| at <= self.now)
        {
            self.journal.push(Call::Timeout(self.now));
            self.client.handle_timeout(self.now);
        }
        self.server.handle_timeout(self.now);
        true
    }

    /// Runs until `done` holds or `limit` passes; returns whether `done` held.
    fn run_until(&mut self, limit: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..200_000 {
            self.flush();
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                self.flush();
                return done(self);
            }
        }
        panic!("the simulation does not settle");
    }

    fn run_for(&mut self, duration: Duration) {
        let limit = self.now + duration;
        self.run_until(limit, |_| false);
    }

    fn is_up(&self) -> bool {
        self.events.iter().any(|e| matches!(e, TunnelEvent::Up(_)))
    }

    fn down(&self) -> Option<&Failure> {
        self.events.iter().find_map(|e| match e {
            TunnelEvent::Down(failure) => Some(failure),
            _ => None,
        })
    }

    fn connect(&mut self) {
        assert!(
            self.run_until(Instant::from_secs(60), Self::is_up),
            "no Up: {:?}",
            self.events
        );
    }

    /// Encapsulates an inner packet on the client and puts it on the link.
    fn client_send(&mut self, payload: &[u8]) -> Result<(), DropReason> {
        self.journal
            .push(Call::Encapsulate(self.now, payload.to_vec()));
        let overhead = self.client.overhead();
        let mut buf = vec![0u8; overhead.headroom + payload.len() + overhead.tailroom];
        let inner = overhead.headroom..overhead.headroom + payload.len();
        buf[inner.clone()].copy_from_slice(payload);
        let outer = self.client.encapsulate(self.now, &mut buf, inner)?;
        let packet = buf[outer].to_vec();
        self.outputs.push(packet.clone());
        self.transcript.push((self.now, true, packet.clone()));
        self.link.send(self.now, true, packet);
        Ok(())
    }

    fn server_send(&mut self, payload: &[u8]) {
        assert!(self.server.send_data(self.now, payload));
    }
}

/// An inner "IP packet": IPv4 version nibble, then an index, so no in-band magic matches.
fn inner_packet(direction: u8, index: u32) -> Vec<u8> {
    let mut packet = vec![0x45, direction, 0, 40];
    packet.extend_from_slice(&index.to_be_bytes());
    packet.resize(60 + (index as usize % 200), 0xa5);
    packet
}

#[test]
fn tls_session_handshake_completes_and_data_flows_both_ways() {
    let mut world = World::standard(Link::new(1), 1);
    world.connect();
    let Some(TunnelEvent::Up(config)) = world.events.first() else {
        panic!("{:?}", world.events);
    };
    assert_eq!(config.local_ipv4(), Some("10.8.0.2".parse().unwrap()));
    assert_eq!(config.ipv4.unwrap().prefix(), 24);
    assert_eq!(config.gateway, Some("10.8.0.1".parse().unwrap()));
    assert_eq!(
        config.dns_servers,
        vec!["10.8.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(config.mtu, 1500);
    assert_eq!(
        world.client.data_cipher(),
        Some(DataCipher::Aead(AeadAlg::Aes256Gcm))
    );
    assert_eq!(world.client.data_key_id(), Some(KeyId::ZERO));
    // The server saw our key-method message: options string and peer-info as OpenVPN's.
    let hello = &world.server.hellos[0];
    assert_eq!(
        hello.options,
        "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,\
         key-method 2,tls-client"
    );
    assert!(
        hello.peer_info.contains("IV_PROTO=142\n"),
        "{}",
        hello.peer_info
    );
    assert!(hello.username.is_empty() && hello.password.is_empty());
    // Unasked push: no PUSH_REQUEST went out.
    assert!(world.server.messages.is_empty());
    assert_eq!(world.client.stats().push_requests_sent, 0);

    for i in 0..50 {
        world.client_send(&inner_packet(1, i)).unwrap();
        world.server_send(&inner_packet(2, i));
        world.run_for(Duration::from_millis(20));
    }
    world.run_for(Duration::from_secs(1));
    let sent_up: Vec<_> = (0..50).map(|i| inner_packet(1, i)).collect();
    let sent_down: Vec<_> = (0..50).map(|i| inner_packet(2, i)).collect();
    assert_eq!(world.server.inner, sent_up);
    assert_eq!(world.client_inner, sent_down);
    // Every outer data packet is P_DATA_V2 with peer-id 0 and key id 0.
    assert!(
        world
            .transcript
            .iter()
            .filter(|(_, from_client, p)| *from_client && p[0] >> 3 == 9)
            .all(|(_, _, p)| p[..4] == [0x48, 0, 0, 0])
    );
    assert!(world.client.overhead().headroom >= 4 + 4 + 16);
}

#[test]
fn tls_session_keepalive_pings_do_not_reach_the_stack() {
    let mut world = World::standard(Link::new(2), 2);
    world.connect();
    // The push says ping 10: silence on our side makes a ping every 10 s.
    world.run_for(Duration::from_secs(35));
    assert!(
        world.server.pings_received >= 3,
        "{}",
        world.server.pings_received
    );
    world.server_send(&inband::PING_MAGIC);
    world.run_for(Duration::from_secs(1));
    assert!(world.client_inner.is_empty());
    assert_eq!(world.client.stats().pings_received, 1);
    assert!(world.down().is_none());
}

#[test]
fn tls_session_survives_loss_reordering_and_duplication() {
    for seed in [3u8, 4, 5] {
        // 25% loss, 10% duplication, up to 300 ms of jitter (so packets overtake each other).
        let mut world = World::standard(Link::lossy(seed, 250, 100, 300), seed);
        world.connect();
        let stats = world.client.stats();
        assert!(
            stats.control_retransmitted > 0,
            "seed {seed}: lost control packets must be retransmitted: {stats:?}"
        );
        assert!(world.link.lost > 0);
        // Data both ways once the link is clean again (data packets are not retransmitted).
        world.link.loss = 0;
        world.link.duplication = 0;
        for i in 0..20 {
            world.client_send(&inner_packet(1, i)).unwrap();
            world.server_send(&inner_packet(2, i));
            world.run_for(Duration::from_millis(50));
        }
        world.run_for(Duration::from_secs(1));
        let mut up = world.server.inner.clone();
        up.sort();
        let mut expected: Vec<_> = (0..20).map(|i| inner_packet(1, i)).collect();
        expected.sort();
        assert_eq!(up, expected, "seed {seed}");
        assert_eq!(world.client_inner.len(), 20, "seed {seed}");
        assert!(world.down().is_none());
    }
}

#[test]
fn tls_session_retransmits_lost_reset_on_openvpn_schedule() {
    let mut world = World::standard(Link::new(6), 6);
    // The server hears nothing for 10 s.
    world.link.loss = 1000;
    world.run_for(Duration::from_secs(10));
    let resets: Vec<u64> = world
        .transcript
        .iter()
        .filter(|(_, from_client, p)| *from_client && p[0] == 0x38)
        .map(|(at, _, _)| at.as_millis())
        .collect();
    assert_eq!(resets, [0, 2_000, 6_000]);
    world.link.loss = 0;
    world.connect();
    assert!(world.now < Instant::from_secs(20));
}

#[test]
fn tls_session_wrong_ca_ends_with_the_tls_fault_and_stops() {
    let config = client_config(PROFILE, OTHER_CA, TC_KEY);
    let behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    let mut world = World::new(config, behaviour, Link::new(7), 7);
    world.run_until(Instant::from_secs(60), |w| w.down().is_some());
    let failure = world.down().cloned().expect("down");
    // TlsError::fault() blames the certificate check on authentication.
    assert_eq!(failure.fault, Fault::Auth);
    assert!(
        failure.message.contains("not issued by the CA"),
        "{failure}"
    );
    assert!(!world.is_up());
    // No retry storm: nothing more to send, no timer.
    let sent = world.transcript.iter().filter(|(_, c, _)| *c).count();
    world.run_for(Duration::from_secs(120));
    assert_eq!(world.transcript.iter().filter(|(_, c, _)| *c).count(), sent);
    assert_eq!(world.client.poll_timeout(), None);
    assert!(world.client.is_down());
}

#[test]
fn tls_session_wrong_tls_crypt_key_times_out_without_retry_storm() {
    let config = client_config(PROFILE, CA, TC_KEY);
    // The server has another key: it cannot authenticate anything we send and stays silent.
    let behaviour = ServerBehaviour::tls_crypt(&raw_key(TA_KEY));
    let mut world = World::new(config, behaviour, Link::new(8), 8);
    world.run_until(Instant::from_secs(200), |w| w.down().is_some());
    let failure = world.down().cloned().expect("down");
    assert_eq!(failure.fault, Fault::Timeout);
    assert!(failure.message.contains("hand-window"), "{failure}");
    assert_eq!(world.now, Instant::from_secs(60));
    assert!(world.server.packets_dropped > 0);
    // 0, 2, 6, 14, 30 s: five resets in a minute, then silence.
    let sent: Vec<u64> = world
        .transcript
        .iter()
        .filter(|(_, c, _)| *c)
        .map(|(at, _, _)| at.as_millis() / 1000)
        .collect();
    assert_eq!(sent, [0, 2, 6, 14, 30]);
    world.run_for(Duration::from_secs(300));
    assert_eq!(world.transcript.iter().filter(|(_, c, _)| *c).count(), 5);
}

#[test]
fn tls_session_packets_under_another_key_point_at_the_key() {
    // The client has the tls-auth capture's key as its tls-crypt key; a server with the right
    // key answers, and all its packets fail our authentication.
    let config = client_config(PROFILE, CA, TA_KEY);
    let mut behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    behaviour.wrap = ControlWrap::Crypt(TlsCrypt::server(&raw_key(TC_KEY)));
    let mut world = World::new(config, behaviour, Link::new(9), 9);
    // Make the server answer regardless: feed it a reset made with its own key.
    let mut reset = {
        let mut probe = TlsSession::new(
            client_config(PROFILE, CA, TC_KEY),
            &Seed::from_byte(99),
            Instant::ZERO,
        )
        .unwrap();
        let mut buf = [0u8; 512];
        let n = probe
            .poll_transmit(Instant::ZERO, &mut buf)
            .unwrap()
            .unwrap();
        buf[..n].to_vec()
    };
    world.server.receive(Instant::ZERO, &reset);
    reset.clear();
    world.run_until(Instant::from_secs(200), |w| w.down().is_some());
    let failure = world.down().cloned().expect("down");
    assert_eq!(failure.fault, Fault::Config);
    assert!(
        failure.message.contains("tls-crypt key differs"),
        "{failure}"
    );
    assert!(world.client.stats().control_unauthentic > 0);
    assert!(
        world
            .client_drops
            .iter()
            .all(|r| *r == DropReason::Unauthentic)
    );
}

#[test]
fn tls_session_auth_failed_is_an_auth_fault() {
    let config = client_config(PROFILE, CA, TC_KEY);
    let mut behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    behaviour.auth_failed = Some("user refused".into());
    let mut world = World::new(config, behaviour, Link::new(10), 10);
    world.run_until(Instant::from_secs(60), |w| w.down().is_some());
    let failure = world.down().cloned().expect("down");
    assert_eq!(failure.fault, Fault::Auth);
    assert!(
        failure.message.contains("AUTH_FAILED: user refused"),
        "{failure}"
    );
    assert!(!world.is_up());
    let sent = world.transcript.iter().filter(|(_, c, _)| *c).count();
    world.run_for(Duration::from_secs(300));
    assert_eq!(world.transcript.iter().filter(|(_, c, _)| *c).count(), sent);
    assert_eq!(world.client.poll_timeout(), None);
    // Nothing can be sent any more.
    assert_eq!(
        world.client_send(&inner_packet(1, 0)),
        Err(DropReason::NotReady)
    );
}

#[test]
fn tls_session_cipher_outside_data_ciphers_is_peer_incompatible() {
    let profile = PROFILE.replace(
        "data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
        "data-ciphers AES-128-GCM",
    );
    let config = client_config(&profile, CA, TC_KEY);
    let behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    let mut world = World::new(config, behaviour, Link::new(11), 11);
    world.run_until(Instant::from_secs(60), |w| w.down().is_some());
    let failure = world.down().cloned().expect("down");
    assert_eq!(failure.fault, Fault::PeerIncompatible);
    assert!(failure.message.contains("AES-256-GCM"), "{failure}");
}

#[test]
fn tls_session_asks_for_the_push_when_the_server_waits() {
    let config = client_config(PROFILE, CA, TC_KEY);
    let mut behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    behaviour.push_unasked = false;
    let mut world = World::new(config, behaviour, Link::new(12), 12);
    world.connect();
    assert_eq!(world.server.messages, ["PUSH_REQUEST"]);
    assert_eq!(world.client.stats().push_requests_sent, 1);
    assert!(world.now >= Instant::from_secs(1) && world.now < Instant::from_secs(2));
}

#[test]
fn tls_session_push_request_repeats_then_times_out() {
    let config = client_config(PROFILE, CA, TC_KEY);
    let mut behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    behaviour.push_unasked = false;
    behaviour.ignore_push_requests = true;
    let mut world = World::new(config, behaviour, Link::new(13), 13);
    world.run_until(Instant::from_secs(100), |w| w.down().is_some());
    let failure = world.down().cloned().expect("down");
    assert_eq!(failure.fault, Fault::Timeout);
    assert!(failure.message.contains("PUSH_REQUEST"), "{failure}");
    // At ~1 s after the key exchange, then every 5 s until the 60 s hand-window.
    let requests = world.client.stats().push_requests_sent;
    assert_eq!(world.server.messages.len() as u64, requests);
    assert_eq!(requests, 12, "{requests}");
    assert_eq!(world.now, Instant::from_secs(60));
}

#[test]
fn tls_session_close_sends_exit_over_the_control_channel() {
    let mut world = World::standard(Link::new(14), 14);
    world.connect();
    world.journal.push(Call::Close(world.now));
    world.client.close(world.now);
    world.run_until(world.now + Duration::from_secs(5), |w| w.down().is_some());
    assert_eq!(world.server.messages, ["EXIT"]);
    let failure = world.down().cloned().expect("down");
    assert_eq!(failure.fault, Fault::Closed);
    // Done as soon as the EXIT was acknowledged, not after the whole second.
    assert!(world.now < Instant::from_secs(5));
}

#[test]
fn tls_session_close_without_cc_exit_sends_occ_exit() {
    let config = client_config(PROFILE, CA, TC_KEY);
    let mut behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    behaviour.push = behaviour
        .push
        .replace("protocol-flags cc-exit tls-ekm", "key-derivation tls-ekm");
    let mut world = World::new(config, behaviour, Link::new(15), 15);
    world.connect();
    let start = world.now;
    world.client.close(world.now);
    world.run_until(world.now + Duration::from_secs(5), |w| w.down().is_some());
    assert_eq!(world.down().map(|f| f.fault), Some(Fault::Closed));
    assert!(world.server.messages.is_empty());
    // One OCC_EXIT (explicit-exit-notify 1), sealed like any data packet.
    let exits = world
        .transcript
        .iter()
        .filter(|(at, c, p)| *c && *at >= start && p[0] == 0x48)
        .count();
    assert_eq!(exits, 1);
    assert_eq!(world.now, start + Duration::from_secs(1));
}

#[test]
fn tls_session_server_restart_and_halt_end_the_session() {
    // RESTART asks for a new session (a supervisor starts one); HALT says not to come back.
    for (message, expected, fault) in [
        (
            "RESTART,[N]server restarting",
            "RESTART: server restarting",
            Fault::Closed,
        ),
        ("HALT,maintenance", "HALT: maintenance", Fault::Halted),
    ] {
        let mut world = World::standard(Link::new(16), 16);
        world.connect();
        world.server.send_message(world.now, message);
        world.run_until(world.now + Duration::from_secs(5), |w| w.down().is_some());
        let failure = world.down().cloned().expect("down");
        assert_eq!(failure.fault, fault);
        assert_eq!(failure.fault.is_retryable(), fault == Fault::Closed);
        assert!(failure.message.contains(expected), "{failure}");
    }
}

#[test]
fn tls_session_ping_restart_is_a_timeout() {
    let mut world = World::standard(Link::new(17), 17);
    world.connect();
    let up_at = world.now;
    // The server goes away.
    world.link.loss = 1000;
    world.run_until(world.now + Duration::from_secs(100), |w| w.down().is_some());
    let failure = world.down().cloned().expect("down");
    assert_eq!(failure.fault, Fault::Timeout);
    assert!(failure.message.contains("ping-restart"), "{failure}");
    // The push said ping-restart 60.
    assert_eq!(world.now - up_at, Duration::from_secs(60));
}

/// Sends one packet each way every 100 ms for `duration`, numbering from `*next`.
fn traffic(world: &mut World, next: &mut u32, duration: Duration) {
    let end = world.now + duration;
    while world.now < end {
        world.client_send(&inner_packet(1, *next)).unwrap();
        world.server_send(&inner_packet(2, *next));
        *next += 1;
        world.run_for(Duration::from_millis(100));
    }
}

fn renegotiation(server_starts: bool, seed: u8) {
    let mut world = World::standard(Link::lossy(seed, 0, 0, 30), seed);
    world.connect();
    let mut next = 0;
    traffic(&mut world, &mut next, Duration::from_secs(3));
    if server_starts {
        world.server.renegotiate(world.now);
    } else {
        world.client.renegotiate(world.now);
    }
    assert!(world.client.is_renegotiating() || server_starts);
    traffic(&mut world, &mut next, Duration::from_secs(15));
    world.run_for(Duration::from_secs(1));
    assert!(!world.client.is_renegotiating());
    assert_eq!(world.client.stats().renegotiations, 1);
    assert_eq!(world.client.data_key_id(), KeyId::new(1));
    assert_eq!(world.client.lame_duck_key_id(), Some(KeyId::ZERO));
    assert_eq!(world.server.control_key_id(), KeyId::new(1));
    // No data packet lost, in either direction, across the key change.
    let mut up = world.server.inner.clone();
    up.sort();
    let mut expected: Vec<_> = (0..next).map(|i| inner_packet(1, i)).collect();
    expected.sort();
    assert_eq!(up, expected);
    let mut down = world.client_inner.clone();
    down.sort();
    let mut expected: Vec<_> = (0..next).map(|i| inner_packet(2, i)).collect();
    expected.sort();
    assert_eq!(down, expected);
    // Both keys carried data from us.
    assert!(world.server.inner_key_ids.contains(&0));
    assert!(world.server.inner_key_ids.contains(&1));
    // The second key exchange sent a fresh key-method message; no second push request.
    assert_eq!(world.server.hellos.len(), 2);
    assert!(world.server.messages.is_empty());
    assert!(world.down().is_none());
    assert_eq!(world.events.len(), 1);
}

#[test]
fn tls_session_renegotiation_started_by_the_server_loses_no_data() {
    renegotiation(true, 18);
}

#[test]
fn tls_session_renegotiation_started_by_the_client_loses_no_data() {
    renegotiation(false, 19);
}

#[test]
fn tls_session_reneg_sec_renegotiates_and_old_key_packets_decrypt_as_lame_duck() {
    let mut config = client_config(PROFILE, CA, TC_KEY);
    config.reneg_sec = Some(Duration::from_secs(30));
    config.tran_window = Duration::from_secs(20);
    let behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    let mut world = World::new(config, behaviour, Link::new(20), 20);
    world.connect();
    let mut next = 0;
    traffic(&mut world, &mut next, Duration::from_secs(2));
    // reneg-sec: the client starts on its own.
    world.run_until(Instant::from_secs(60), |w| w.client.is_renegotiating());
    assert!(world.now >= Instant::from_secs(30));
    world.run_until(Instant::from_secs(90), |w| !w.client.is_renegotiating());
    // The new key is accepted but the server still sends on the old one (for 5 s here).
    assert_eq!(world.client.data_key_id(), Some(KeyId::ZERO));
    let held = world.server.seal_data(world.now, &inner_packet(3, 1));
    assert_eq!(held[0], 0x48);
    traffic(&mut world, &mut next, Duration::from_secs(8));
    assert_eq!(world.client.data_key_id(), KeyId::new(1));
    assert_eq!(world.client.lame_duck_key_id(), Some(KeyId::ZERO));
    // A late packet under the old key still decrypts.
    assert!(matches!(
        world.deliver_to_client(held.clone()),
        Ok(Decapsulated::Inner(_))
    ));
    assert_eq!(world.client_inner.last(), Some(&inner_packet(3, 1)));
    // After tran-window (20 s from the switch) the old key is gone; the next renegotiation
    // (30 s after the last) has not started yet.
    traffic(&mut world, &mut next, Duration::from_secs(19));
    assert_eq!(world.client.data_key_id(), KeyId::new(1));
    assert_eq!(world.client.lame_duck_key_id(), None);
    let mut late = held;
    late[7] ^= 1; // another packet id, so it is not a replay
    assert_eq!(world.deliver_to_client(late), Err(DropReason::UnknownKey));
    assert!(world.down().is_none());
    assert!(world.client.stats().renegotiations >= 1);
}

/// Replays `journal` into a fresh client built like the original; returns what it produced.
fn replay(config: TlsConfig, seed: u8, journal: &[Call]) -> Vec<Vec<u8>> {
    let mut client = TlsSession::new(config, &Seed::from_byte(seed), Instant::ZERO).unwrap();
    let mut outputs = Vec::new();
    let mut buf = vec![0u8; 2048];
    for call in journal {
        match call {
            Call::Decapsulate(at, packet) => {
                let _ = client.decapsulate(*at, &mut packet.clone());
            }
            Call::Timeout(at) => client.handle_timeout(*at),
            Call::Transmit(at) => {
                if let Some(Ok(n)) = client.poll_transmit(*at, &mut buf) {
                    outputs.push(buf[..n].to_vec());
                }
            }
            Call::Encapsulate(at, payload) => {
                let overhead = client.overhead();
                let mut out = vec![0u8; overhead.headroom + payload.len() + overhead.tailroom];
                let inner = overhead.headroom..overhead.headroom + payload.len();
                out[inner.clone()].copy_from_slice(payload);
                if let Ok(range) = client.encapsulate(*at, &mut out, inner) {
                    outputs.push(out[range].to_vec());
                }
            }
            Call::Close(at) => client.close(*at),
            Call::Renegotiate(at) => client.renegotiate(*at),
        }
    }
    outputs
}

#[test]
fn tls_session_same_seed_same_transcript() {
    same_seed_same_transcript(false);
}

/// The client's CertificateVerify signature (RSA-PSS here) draws from the seed too.
#[test]
fn tls_session_with_a_client_certificate_same_seed_same_transcript() {
    same_seed_same_transcript(true);
}

/// Every random byte the client uses comes from its seed, so its packets are a function of
/// the seed and its inputs, with or without a client certificate.
fn same_seed_same_transcript(with_cert: bool) {
    let config_for = || {
        let mut config = client_config(PROFILE, CA, TC_KEY);
        if !with_cert {
            config.client_credentials = None;
        }
        config
    };
    let run = |client_seed: u8| {
        let config = config_for();
        assert_eq!(config.client_credentials.is_some(), with_cert);
        let mut behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
        behaviour.require_client_cert = with_cert;
        let mut world = World::new(
            config,
            behaviour,
            Link::lossy(21, 150, 50, 200),
            client_seed,
        );
        world.connect();
        for i in 0..10 {
            world.client_send(&inner_packet(1, i)).unwrap();
            world.run_for(Duration::from_millis(30));
        }
        world.journal.push(Call::Renegotiate(world.now));
        world.client.renegotiate(world.now);
        world.run_for(Duration::from_secs(20));
        assert_eq!(world.client.stats().renegotiations, 1);
        world.journal.push(Call::Close(world.now));
        world.client.close(world.now);
        world.run_for(Duration::from_secs(2));
        world
    };
    let first = run(22);
    let config = config_for();
    let replayed = replay(config.clone(), 22, &first.journal);
    assert!(first.outputs.len() >= 20, "{} outputs", first.outputs.len());
    assert_eq!(
        replayed, first.outputs,
        "the same inputs must give the same bytes"
    );
    // Another seed: other session id, other TLS randoms, other bytes from the first packet on.
    let other = replay(config, 23, &first.journal);
    assert_ne!(other.first(), first.outputs.first());
    // Two live runs with the same seed agree on the client's first flight.
    let second = run(22);
    assert_eq!(second.outputs[..2], first.outputs[..2]);
}

#[test]
fn tls_session_over_tls_auth_with_credentials_and_prf_keys() {
    let profile = "client
dev tun
proto udp
remote 10.99.0.1 1194
remote-cert-tls server
auth SHA512
auth-user-pass
key-direction 1
data-ciphers CHACHA20-POLY1305
ca ca.crt
tls-auth ta.key
";
    let (parsed, _) = Profile::parse(profile.as_bytes()).unwrap();
    let credentials = Credentials::parse(b"erebus\nhunter2-erebus\n").unwrap();
    let materials = TlsMaterials {
        ca: Some(CA),
        tls_wrap_key: Some(TA_KEY),
        user_pass: Some(&credentials),
        ..TlsMaterials::default()
    };
    let config = tls_config(&parsed, 0, remote(), &materials, wall_clock()).unwrap();
    assert!(config.client_credentials.is_none());
    let mut behaviour = ServerBehaviour::tls_crypt(&raw_key(TA_KEY));
    behaviour.wrap = ControlWrap::Auth(
        TlsAuth::new(
            &raw_key(TA_KEY),
            Some(crate::config::KeyDirection::Normal),
            crate::config::Digest::Sha512,
        )
        .unwrap(),
    );
    behaviour.require_client_cert = false;
    behaviour.ekm = false;
    behaviour.cipher = DataCipher::Aead(AeadAlg::ChaCha20Poly1305);
    behaviour.push = "route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,\
                      ifconfig 10.8.0.2 255.255.255.0,peer-id 3,cipher CHACHA20-POLY1305,\
                      auth-token SESS_token,protocol-flags cc-exit"
        .into();
    behaviour.peer_id = Some(3);
    let mut world = World::new(config, behaviour, Link::lossy(24, 100, 0, 50), 24);
    world.connect();
    assert_eq!(world.server.hellos[0].username, "erebus");
    assert_eq!(world.server.hellos[0].password, "hunter2-erebus");
    world.client_send(&inner_packet(1, 7)).unwrap();
    world.server_send(&inner_packet(2, 7));
    world.run_for(Duration::from_secs(1));
    assert_eq!(world.server.inner, [inner_packet(1, 7)]);
    assert_eq!(world.client_inner, [inner_packet(2, 7)]);
    // peer-id 3 in every data header.
    assert!(
        world
            .transcript
            .iter()
            .filter(|(_, c, p)| *c && p[0] >> 3 == 9)
            .all(|(_, _, p)| p[..4] == [0x48, 0, 0, 3])
    );
    // A renegotiation authenticates with the pushed token instead of the password.
    world.link.loss = 0;
    world.client.renegotiate(world.now);
    world.run_until(world.now + Duration::from_secs(30), |w| {
        !w.client.is_renegotiating()
    });
    assert_eq!(world.server.hellos.len(), 2);
    assert_eq!(world.server.hellos[1].username, "erebus");
    assert_eq!(world.server.hellos[1].password, "SESS_token");
}

/// The token of an earlier session is refused (it expired, or the server restarted with
/// another token secret): the session ends with a fault a supervisor retries, not an
/// authentication failure, and forgets the token so that the next session sends the password.
/// Only a refused password is the end.
#[test]
fn tls_session_refused_auth_token_is_dropped_and_retried() {
    let credentials = Credentials::parse(b"erebus\nhunter2-erebus\n").unwrap();
    let config = |token: Option<&str>| {
        let mut config = client_config(PROFILE, CA, TC_KEY);
        config.user_pass = Some(credentials.clone());
        config.auth_token = token.map(|t| SecretString::new(t.to_owned()));
        config
    };
    let mut behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    behaviour.auth_failed = Some("SESSION: token expired".into());

    let mut world = World::new(
        config(Some("SESS_old")),
        behaviour.clone(),
        Link::new(31),
        31,
    );
    world.run_until(Instant::from_secs(60), |w| w.down().is_some());
    assert_eq!(world.server.hellos[0].username, "erebus");
    assert_eq!(world.server.hellos[0].password, "SESS_old");
    let failure = world.down().cloned().expect("down");
    assert_eq!(failure.fault, Fault::Closed, "{failure}");
    assert!(failure.fault.is_retryable());
    assert!(failure.message.contains("auth-token"), "{failure}");
    assert!(
        world.client.auth_token().is_none(),
        "the refused token is kept"
    );

    // The next session starts without it and sends the password; refused, that is final.
    let mut world = World::new(config(None), behaviour, Link::new(32), 32);
    world.run_until(Instant::from_secs(60), |w| w.down().is_some());
    assert_eq!(world.server.hellos[0].password, "hunter2-erebus");
    assert_eq!(world.down().map(|f| f.fault), Some(Fault::Auth));
}

#[test]
fn tls_session_over_tcp_transport() {
    let profile = PROFILE.replace("proto udp", "proto tcp-client");
    let config = client_config(&profile, CA, TC_KEY);
    assert_eq!(config.transport, TransportKind::TcpLengthPrefixed);
    let behaviour = ServerBehaviour::tls_crypt(&raw_key(TC_KEY));
    let mut world = World::new(config, behaviour, Link::new(25), 25);
    world.connect();
    let hello = &world.server.hellos[0];
    assert!(
        hello.options.contains("proto TCPv4_CLIENT"),
        "{}",
        hello.options
    );
    world.client_send(&inner_packet(1, 1)).unwrap();
    world.run_for(Duration::from_millis(100));
    assert_eq!(world.server.inner.len(), 1);
    // Over TCP, close needs no notification.
    world.client.close(world.now);
    world.flush();
    assert_eq!(world.down().map(|f| f.fault), Some(Fault::Closed));
}

#[test]
fn tls_session_control_packets_stay_within_the_tls_mtu() {
    let mut world = World::standard(Link::new(26), 26);
    world.connect();
    let largest = world
        .transcript
        .iter()
        .filter(|(_, c, _)| *c)
        .map(|(_, _, p)| p.len())
        .max()
        .unwrap();
    // 1250 bytes of IP datagram: 1222 of UDP payload over IPv4.
    assert!(largest <= 1250 - 28, "{largest}");
    // Our client certificate makes a flight larger than one packet.
    assert!(largest > 1000, "{largest}");
}

#[test]
fn tls_session_drops_garbage_without_changing_state() {
    let mut world = World::standard(Link::new(27), 27);
    world.connect();
    let before = world.client.stats();
    for packet in [
        vec![],
        vec![0xff],
        vec![0x20; 5],
        vec![0x48, 0, 0, 0, 1, 2, 3],
        vec![0x38; 80],
    ] {
        assert!(world.deliver_to_client(packet).is_err());
    }
    // A replayed control packet from the server.
    let replayed = world
        .transcript
        .iter()
        .find(|(_, c, p)| !*c && p[0] == 0x20)
        .map(|(_, _, p)| p.clone())
        .unwrap();
    assert_eq!(world.deliver_to_client(replayed), Err(DropReason::Replayed));
    let after = world.client.stats();
    assert_eq!(after.control_received, before.control_received);
    assert!(world.down().is_none());
    world.client_send(&inner_packet(1, 1)).unwrap();
    world.run_for(Duration::from_millis(100));
    assert_eq!(world.server.inner.len(), 1);
}

#[test]
fn tls_session_refuses_data_before_up() {
    let mut world = World::standard(Link::new(28), 28);
    assert_eq!(
        world.client_send(&inner_packet(1, 0)),
        Err(DropReason::NotReady)
    );
    world.connect();
    assert!(world.client_send(&inner_packet(1, 0)).is_ok());
    let too_big = vec![0x45; 1501];
    assert_eq!(world.client_send(&too_big), Err(DropReason::Malformed));
}

#[test]
fn tls_setup_checks_what_the_profile_needs() {
    let (profile, _) = Profile::parse(PROFILE.as_bytes()).unwrap();
    let with =
        |materials: TlsMaterials<'_>| tls_config(&profile, 0, remote(), &materials, wall_clock());
    let full = TlsMaterials {
        ca: Some(CA),
        cert: Some(CLIENT_CERT),
        key: Some(CLIENT_KEY),
        tls_wrap_key: Some(TC_KEY),
        ..TlsMaterials::default()
    };
    let config = with(full).unwrap();
    assert!(matches!(config.wrap, ControlWrap::Crypt(_)));
    assert_eq!(config.explicit_exit_notify, 1);
    assert!(matches!(
        with(TlsMaterials { ca: None, ..full }),
        Err(TlsSetupError::MissingCa)
    ));
    assert!(matches!(
        with(TlsMaterials { key: None, ..full }),
        Err(TlsSetupError::MissingCertOrKey)
    ));
    assert!(matches!(
        with(TlsMaterials {
            tls_wrap_key: Some(b"garbage"),
            ..full
        }),
        Err(TlsSetupError::BadTlsWrapKey(_))
    ));
    assert!(matches!(
        with(TlsMaterials {
            ca: Some(b"not pem"),
            ..full
        }),
        Err(TlsSetupError::Credentials(_))
    ));
    let (with_auth, _) = Profile::parse(format!("{PROFILE}auth-user-pass\n").as_bytes()).unwrap();
    assert!(matches!(
        tls_config(&with_auth, 0, remote(), &full, wall_clock()),
        Err(TlsSetupError::MissingCredentials)
    ));
    let (p2p, _) = Profile::parse(b"remote 10.0.0.1\nifconfig 10.8.0.2 10.8.0.1\n").unwrap();
    assert!(matches!(
        tls_config(&p2p, 0, remote(), &full, wall_clock()),
        Err(TlsSetupError::NotTls)
    ));
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    /// A client without control-channel wrapping, so random bytes reach the packet parser and
    /// the session checks instead of failing authentication.
    fn unwrapped_client() -> TlsSession {
        let text = "client\nremote 10.99.0.1 1194\nca ca.crt\nauth-user-pass\n";
        let (profile, _) = Profile::parse(text.as_bytes()).unwrap();
        let policy = ServerPolicy::new(CA).unwrap();
        let config = TlsConfig::new(profile, remote(), policy, wall_clock());
        TlsSession::new(config, &Seed::from_byte(30), Instant::ZERO).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary packets never panic a connecting session, and a rejected one changes
        /// nothing: the reset stays due on the same schedule.
        #[test]
        fn tls_session_arbitrary_packets_never_panic(
            packets in proptest::collection::vec(
                (0u8..=0x5f, proptest::collection::vec(any::<u8>(), 0..80)),
                1..20,
            ),
        ) {
            let mut client = unwrapped_client();
            let mut buf = [0u8; 1500];
            client.poll_transmit(Instant::ZERO, &mut buf).unwrap().unwrap();
            for (first, rest) in packets {
                let mut packet = vec![first];
                packet.extend_from_slice(&rest);
                let _ = client.decapsulate(Instant::from_millis(10), &mut packet);
                let _ = client.poll_transmit(Instant::from_millis(10), &mut buf);
                while client.poll_event().is_some() {}
            }
            prop_assert!(client.poll_timeout().is_some() || client.is_down());
        }
    }

    #[test]
    fn tls_session_arbitrary_packets_after_up_never_panic() {
        let mut world = World::standard(Link::new(31), 31);
        world.connect();
        let mut rng = Seed::from_byte(32).rng();
        for _ in 0..2000 {
            let len = rng.below(120) as usize;
            let mut packet = vec![0u8; len];
            rng.fill(&mut packet);
            if let Some(first) = packet.first_mut() {
                // Mostly opcodes that exist, with any key id.
                *first = (*first % 0x60).max(0x08);
            }
            let _ = world.deliver_to_client(packet);
        }
        // Unauthentic garbage cannot end the session or stop the data.
        assert!(world.down().is_none());
        world.client_send(&inner_packet(1, 1)).unwrap();
        world.run_for(Duration::from_millis(100));
        assert_eq!(world.server.inner.len(), 1);
    }
}
