//! The server session against erebus's own client ([`TlsSession`]), in memory and in virtual
//! time, over a link with seeded loss.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use erebus_sansio::tunnel::{Decapsulated, DropReason, Failure, Fault, TransportKind, TunnelEvent};
use erebus_sansio::{Instant, Seed, SeededRng, Tunnel, UnixTime, WallClock};
use zeroize::Zeroizing;

use super::*;
use crate::config::{Credentials, Profile};
use crate::data::AeadAlg;
use crate::keys::{KeySlotIndex, StaticKey};
use crate::setup::{TlsMaterials, tls_config};
use crate::tls_session::fake_server::{
    CA, CLIENT_CERT, CLIENT_KEY, NOW_UNIX, OTHER_CA, SERVER_CERT, SERVER_KEY,
};
use crate::tls_session::{TlsConfig, TlsSession};

const TC_KEY: &[u8] = include_bytes!("../../../../testvectors/captures/tls-udp/tc.key");
const TA_KEY: &[u8] = include_bytes!("../../../../testvectors/captures/tls-auth/ta.key");
const ED_CA: &[u8] = include_bytes!("../../../../testvectors/tls-pki/ed25519/ed-ca.crt");
const ED_SERVER_CERT: &[u8] =
    include_bytes!("../../../../testvectors/tls-pki/ed25519/ed-server.crt");
const ED_SERVER_KEY: &[u8] =
    include_bytes!("../../../../testvectors/tls-pki/ed25519/ed-server.key");
const ED_CLIENT_CERT: &[u8] =
    include_bytes!("../../../../testvectors/tls-pki/ed25519/ed-client.crt");
const ED_CLIENT_KEY: &[u8] =
    include_bytes!("../../../../testvectors/tls-pki/ed25519/ed-client.key");
/// A wall time inside the Ed25519 certificates' validity (and the RSA ones').
const ED_NOW_UNIX: u64 = 1_800_000_000;

/// The 256 bytes of a static key file.
fn raw_key(text: &[u8]) -> Zeroizing<[u8; 256]> {
    let key = StaticKey::parse(text).unwrap();
    let mut raw = Zeroizing::new([0u8; 256]);
    for (i, index) in [KeySlotIndex::Zero, KeySlotIndex::One]
        .into_iter()
        .enumerate()
    {
        raw[i * 128..i * 128 + 64].copy_from_slice(key.slot(index).cipher_key());
        raw[i * 128 + 64..i * 128 + 128].copy_from_slice(key.slot(index).hmac_key());
    }
    raw
}

fn remote() -> SocketAddr {
    "10.99.0.1:1194".parse().unwrap()
}

fn lease() -> ClientLease {
    ClientLease {
        ip: Ipv4Addr::new(10, 8, 0, 2),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        gateway: Ipv4Addr::new(10, 8, 0, 1),
        peer_id: 5,
    }
}

/// Server parameters with the RSA test PKI, trusting `client_ca`.
fn params(wrap: WrapKey, client_ca: Option<&[u8]>) -> ServerParams {
    let mut params = ServerParams::new(
        SERVER_CERT.to_vec(),
        Zeroizing::new(SERVER_KEY.to_vec()),
        client_ca.map(<[u8]>::to_vec),
    );
    params.wrap = wrap;
    params.push = vec![
        "route 10.0.0.0 255.0.0.0".into(),
        "dhcp-option DNS 10.8.0.1".into(),
    ];
    params.keepalive = Some((Duration::from_secs(10), Duration::from_secs(60)));
    params
}

fn tls_crypt() -> WrapKey {
    WrapKey::TlsCrypt {
        key: raw_key(TC_KEY),
    }
}

/// A client profile: the common lines plus `extra`.
fn profile(extra: &str) -> String {
    format!(
        "client\ndev tun\nproto udp\nremote 10.99.0.1 1194\nremote-cert-tls server\n\
         verify-x509-name server.erebus.test name\nexplicit-exit-notify 1\nca ca.crt\n{extra}"
    )
}

const CERT_TLS_CRYPT: &str = "data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n\
                              cert client.crt\nkey client.key\ntls-crypt tc.key\n";

struct ClientSpec<'a> {
    profile: String,
    ca: &'a [u8],
    cert: Option<(&'a [u8], &'a [u8])>,
    wrap_key: Option<&'a [u8]>,
    user_pass: Option<Credentials>,
    now_unix: u64,
}

impl<'a> ClientSpec<'a> {
    fn cert(extra: &str) -> Self {
        Self {
            profile: profile(extra),
            ca: CA,
            cert: Some((CLIENT_CERT, CLIENT_KEY)),
            wrap_key: Some(TC_KEY),
            user_pass: None,
            now_unix: NOW_UNIX,
        }
    }

    fn config(&self) -> TlsConfig {
        let (parsed, _) = Profile::parse(self.profile.as_bytes()).unwrap();
        let materials = TlsMaterials {
            ca: Some(self.ca),
            cert: self.cert.map(|c| c.0),
            key: self.cert.map(|c| c.1),
            tls_wrap_key: self.wrap_key,
            user_pass: self.user_pass.as_ref(),
            ..TlsMaterials::default()
        };
        let wall = WallClock::new(Instant::ZERO, UnixTime::from_secs(self.now_unix));
        tls_config(&parsed, 0, remote(), &materials, wall).unwrap()
    }
}

/// One call made on the server, for replaying a session from its inputs.
#[derive(Clone, Debug)]
enum Call {
    Receive(Instant, Vec<u8>),
    Timeout(Instant),
    Transmit(Instant),
    Encapsulate(Instant, Vec<u8>),
    Verdict(Instant, Result<(), String>),
    Renegotiate(Instant),
    Close(Instant, bool),
}

/// Client, server and a lossy link, in virtual time.
struct World {
    now: Instant,
    client: TlsSession,
    server: ServerSession,
    rng: SeededRng,
    /// Per mille.
    loss: u32,
    queue: BTreeMap<(Instant, u64), (bool, Vec<u8>)>,
    seq: u64,
    client_events: Vec<TunnelEvent>,
    server_events: Vec<ServerSessionEvent>,
    client_inner: Vec<Vec<u8>>,
    server_inner: Vec<Vec<u8>>,
    server_drops: Vec<DropReason>,
    /// Every packet the server produced, in order.
    server_outputs: Vec<Vec<u8>>,
    journal: Vec<Call>,
    /// The answer given to `Authenticate`, when answered automatically.
    verdict: Option<Result<(), String>>,
    buf: Vec<u8>,
}

fn new_server(setup: &Arc<ServerSetup>, seed: u8, now_unix: u64) -> ServerSession {
    ServerSession::new(
        Arc::clone(setup),
        lease(),
        TransportKind::Udp,
        &Seed::from_byte(seed),
        Instant::ZERO,
        WallClock::new(Instant::ZERO, UnixTime::from_secs(now_unix)),
    )
}

impl World {
    fn new(spec: &ClientSpec<'_>, params: ServerParams, seed: u8) -> Self {
        let setup = Arc::new(ServerSetup::new(params).unwrap());
        Self::with_setup(spec, &setup, seed)
    }

    fn with_setup(spec: &ClientSpec<'_>, setup: &Arc<ServerSetup>, seed: u8) -> Self {
        let client = TlsSession::new(spec.config(), &Seed::from_byte(seed), Instant::ZERO).unwrap();
        Self {
            now: Instant::ZERO,
            client,
            server: new_server(setup, seed ^ 0x80, spec.now_unix),
            rng: Seed::from_byte(seed ^ 0x40).rng(),
            loss: 0,
            queue: BTreeMap::new(),
            seq: 0,
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_inner: Vec::new(),
            server_inner: Vec::new(),
            server_drops: Vec::new(),
            server_outputs: Vec::new(),
            journal: Vec::new(),
            verdict: Some(Ok(())),
            buf: vec![0u8; TRANSMIT_BUF_LEN],
        }
    }

    fn send(&mut self, to_server: bool, packet: Vec<u8>) {
        if self.rng.below(1000) < self.loss {
            return;
        }
        let delay = Duration::from_millis(10 + u64::from(self.rng.below(20)));
        self.queue
            .insert((self.now + delay, self.seq), (to_server, packet));
        self.seq += 1;
    }

    fn flush(&mut self) {
        loop {
            let mut progress = false;
            while let Some(Ok(n)) = self.client.poll_transmit(self.now, &mut self.buf) {
                let packet = self.buf[..n].to_vec();
                self.send(true, packet);
                progress = true;
            }
            while let Some(event) = self.client.poll_event() {
                self.client_events.push(event);
            }
            loop {
                self.journal.push(Call::Transmit(self.now));
                let Some(n) = self.server.poll_transmit(self.now, &mut self.buf) else {
                    break;
                };
                let packet = self.buf[..n].to_vec();
                self.server_outputs.push(packet.clone());
                self.send(false, packet);
                progress = true;
            }
            while let Some(event) = self.server.poll_event() {
                if let (ServerSessionEvent::Authenticate { .. }, Some(verdict)) =
                    (&event, self.verdict.clone())
                {
                    self.journal.push(Call::Verdict(self.now, verdict.clone()));
                    self.server.auth_verdict(self.now, verdict);
                    progress = true;
                }
                self.server_events.push(event);
            }
            if !progress {
                break;
            }
        }
    }

    fn deliver(&mut self, to_server: bool, mut packet: Vec<u8>) {
        if to_server {
            self.journal.push(Call::Receive(self.now, packet.clone()));
            match self.server.receive(self.now, &mut packet) {
                Ok(Decapsulated::Inner(range)) => self.server_inner.push(packet[range].to_vec()),
                Ok(Decapsulated::Consumed) => {}
                Err(reason) => self.server_drops.push(reason),
            }
        } else if let Ok(Decapsulated::Inner(range)) =
            self.client.decapsulate(self.now, &mut packet)
        {
            self.client_inner.push(packet[range].to_vec());
        }
    }

    /// Advances to the next thing to do, not past `limit`; false when nothing is left before.
    fn step(&mut self, limit: Instant) -> bool {
        self.flush();
        let next = [
            self.queue.keys().next().map(|(at, _)| *at),
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
        while let Some(key) = self
            .queue
            .keys()
            .next()
            .copied()
            .filter(|(at, _)| *at <= self.now)
        {
            let (to_server, packet) = self.queue.remove(&key).unwrap();
            self.deliver(to_server, packet);
        }
        if self
            .client
            .poll_timeout()
            .is_some_and(|(at, _)| at <= self.now)
        {
            self.client.handle_timeout(self.now);
        }
        if self.server.poll_timeout().is_some_and(|at| at <= self.now) {
            self.journal.push(Call::Timeout(self.now));
            self.server.handle_timeout(self.now);
        }
        true
    }

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

    fn client_up(&self) -> Option<&erebus_sansio::TunnelConfig> {
        self.client_events.iter().find_map(|e| match e {
            TunnelEvent::Up(config) => Some(config),
            _ => None,
        })
    }

    fn client_down(&self) -> Option<&Failure> {
        self.client_events.iter().find_map(|e| match e {
            TunnelEvent::Down(failure) => Some(failure),
            _ => None,
        })
    }

    fn server_down(&self) -> Option<&Failure> {
        self.server_events.iter().find_map(|e| match e {
            ServerSessionEvent::Down(failure) => Some(failure),
            _ => None,
        })
    }

    fn connect(&mut self) {
        assert!(
            self.run_until(Instant::from_secs(60), |w| w.client_up().is_some()
                && w.server.is_up()),
            "no Up: client {:?}, server {:?}",
            self.client_events,
            self.server_events
        );
    }

    fn client_send(&mut self, payload: &[u8]) {
        let overhead = self.client.overhead();
        let mut buf = vec![0u8; overhead.headroom + payload.len() + overhead.tailroom];
        let inner = overhead.headroom..overhead.headroom + payload.len();
        buf[inner.clone()].copy_from_slice(payload);
        let outer = self.client.encapsulate(self.now, &mut buf, inner).unwrap();
        let packet = buf[outer].to_vec();
        self.send(true, packet);
    }

    fn server_send(&mut self, payload: &[u8]) {
        self.journal
            .push(Call::Encapsulate(self.now, payload.to_vec()));
        let mut buf = vec![0u8; HEADROOM + payload.len() + TAILROOM];
        let inner = HEADROOM..HEADROOM + payload.len();
        buf[inner.clone()].copy_from_slice(payload);
        let outer = self.server.encapsulate(self.now, &mut buf, inner).unwrap();
        let packet = buf[outer].to_vec();
        self.server_outputs.push(packet.clone());
        self.send(false, packet);
    }
}

/// An inner "IP packet": IPv4 version nibble, then an index, so no in-band magic matches.
fn inner_packet(direction: u8, index: u32) -> Vec<u8> {
    let mut packet = vec![0x45, direction, 0, 40];
    packet.extend_from_slice(&index.to_be_bytes());
    packet.resize(60 + (index as usize % 200), 0xa5);
    packet
}

/// Sends `count` packets each way, one every 50 ms.
fn traffic(world: &mut World, next: &mut u32, count: u32) {
    for _ in 0..count {
        world.client_send(&inner_packet(1, *next));
        world.server_send(&inner_packet(2, *next));
        *next += 1;
        world.run_for(Duration::from_millis(50));
    }
}

fn up_event(world: &World) -> (DataCipher, Option<String>, Option<String>) {
    world
        .server_events
        .iter()
        .find_map(|e| match e {
            ServerSessionEvent::Up {
                cipher,
                common_name,
                username,
                ..
            } => Some((*cipher, common_name.clone(), username.clone())),
            _ => None,
        })
        .expect("server Up")
}

#[test]
fn server_tls_crypt_with_client_certificate_pushes_and_carries_data() {
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let mut world = World::new(&spec, params(tls_crypt(), Some(CA)), 1);
    world.loss = 100;
    world.connect();
    world.loss = 0;
    let config = world.client_up().unwrap().clone();
    assert_eq!(config.local_ipv4(), Some(Ipv4Addr::new(10, 8, 0, 2)));
    assert_eq!(config.dns_servers, [IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1))]);
    assert!(config.routes_to(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))));
    assert_eq!(config.mtu, 1500);
    assert_eq!(config.cipher.as_deref(), Some("AES-256-GCM"));
    let (cipher, cn, user) = up_event(&world);
    assert_eq!(cipher, DataCipher::Aead(AeadAlg::Aes256Gcm));
    assert_eq!(cn.as_deref(), Some("client1"));
    assert_eq!(world.server.common_name(), Some("client1"));
    assert_eq!(user, None);
    assert!(
        !world
            .server_events
            .iter()
            .any(|e| matches!(e, ServerSessionEvent::Authenticate { .. }))
    );
    let mut next = 0;
    traffic(&mut world, &mut next, 20);
    world.run_for(Duration::from_millis(200));
    let sent_up: Vec<_> = (0..20).map(|i| inner_packet(1, i)).collect();
    let sent_down: Vec<_> = (0..20).map(|i| inner_packet(2, i)).collect();
    assert_eq!(world.server_inner, sent_up);
    assert_eq!(world.client_inner, sent_down);
    // P_DATA_V2 with peer id 5 from the server too.
    assert_eq!(
        data_v2_peer_id(world.server_outputs.last().unwrap()),
        Some(5)
    );
    // Pings keep an idle session alive on both ends.
    world.run_for(Duration::from_secs(300));
    assert!(world.server_down().is_none() && world.client_down().is_none());
    assert!(world.server.stats().pings_sent > 0 && world.server.stats().pings_received > 0);
    assert!(world.server_inner.len() == 20, "pings reach no stack");
}

#[test]
fn server_push_reply_follows_openvpn_order() {
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let world = World::new(&spec, params(tls_crypt(), Some(CA)), 2);
    let negotiated = Negotiated {
        data: {
            let mut d = DataConfig::new(DataCipher::Aead(AeadAlg::Aes256Gcm));
            d.peer_id = PeerId::new(5);
            d
        },
        ekm: true,
        request_push: true,
        cc_exit: true,
    };
    let mut server = world.server;
    server.peer_info = "IV_VER=2.6.14\nIV_MTU=1600\nIV_CIPHERS=AES-256-GCM\nIV_PROTO=990\n".into();
    assert_eq!(
        push_bundles(&server.push_options(negotiated)),
        [
            "PUSH_REPLY,route 10.0.0.0 255.0.0.0,dhcp-option DNS 10.8.0.1,route-gateway 10.8.0.1,\
          topology subnet,ping 10,ping-restart 60,ifconfig 10.8.0.2 255.255.255.0,peer-id 5,\
          cipher AES-256-GCM,protocol-flags cc-exit tls-ekm,tun-mtu 1500"
        ]
    );
    // Without cc-exit, tls-ekm is announced with key-derivation; no IV_MTU, no tun-mtu.
    server.peer_info = "IV_NCP=2\n".into();
    let mut old = negotiated;
    old.cc_exit = false;
    old.data.peer_id = None;
    let text = push_bundles(&server.push_options(old)).join("|");
    assert!(
        text.ends_with("cipher AES-256-GCM,key-derivation tls-ekm"),
        "{text}"
    );
    // Long replies are split as 2.6 splits them.
    let many: Vec<String> = (0..100)
        .map(|i| format!("route 10.{i}.0.0 255.255.0.0"))
        .collect();
    let bundles = push_bundles(&many);
    assert!(bundles.len() >= 3);
    for bundle in &bundles[..bundles.len() - 1] {
        assert!(bundle.len() < PUSH_BUNDLE_SIZE && bundle.ends_with(",push-continuation 2"));
    }
    assert!(bundles.last().unwrap().ends_with(",push-continuation 1"));
    let joined: Vec<&str> = bundles
        .iter()
        .flat_map(|b| b.split(',').skip(1))
        .filter(|o| !o.starts_with("push-continuation"))
        .collect();
    assert_eq!(joined, many.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn server_tls_auth_with_prf_keys_and_data_v1() {
    let spec = ClientSpec {
        wrap_key: Some(TA_KEY),
        ..ClientSpec::cert(
            "data-ciphers AES-128-GCM\ncert client.crt\nkey client.key\n\
                            tls-auth ta.key 1\n",
        )
    };
    let mut config = spec.config();
    // A client without DATA_V2, TLS_KEY_EXPORT and CC_EXIT_NOTIFY: P_DATA_V1, legacy PRF.
    config.peer_info.proto = iv_proto::REQUEST_PUSH;
    let wrap = WrapKey::TlsAuth {
        key: raw_key(TA_KEY),
        direction: Some(0),
        digest: Digest::Sha1,
    };
    let setup = Arc::new(ServerSetup::new(params(wrap, Some(CA))).unwrap());
    let mut world = World::with_setup(&spec, &setup, 3);
    world.client = TlsSession::new(config, &Seed::from_byte(3), Instant::ZERO).unwrap();
    world.loss = 100;
    world.connect();
    world.loss = 0;
    assert_eq!(up_event(&world).0, DataCipher::Aead(AeadAlg::Aes128Gcm));
    let mut next = 0;
    traffic(&mut world, &mut next, 5);
    world.run_for(Duration::from_millis(200));
    assert_eq!(world.server_inner.len(), 5);
    assert_eq!(world.client_inner.len(), 5);
    // No peer-id was pushed: P_DATA_V1 both ways.
    assert_eq!(data_v2_peer_id(world.server_outputs.last().unwrap()), None);
    assert_eq!(world.server_outputs.last().unwrap()[0] >> 3, 6);
    // The wrong tls-auth direction on the client: everything is unauthentic.
    let bad = Arc::new(
        ServerSetup::new(params(
            WrapKey::TlsAuth {
                key: raw_key(TA_KEY),
                direction: Some(1),
                digest: Digest::Sha1,
            },
            Some(CA),
        ))
        .unwrap(),
    );
    let mut world = World::with_setup(&spec, &bad, 4);
    world.run_for(Duration::from_secs(5));
    assert!(!world.server.is_up());
    assert!(world.server.stats().control_unauthentic > 0);
    assert!(world.server_outputs.is_empty());
}

fn user_pass_spec() -> ClientSpec<'static> {
    ClientSpec {
        profile: profile("auth-user-pass\ntls-crypt tc.key\n"),
        ca: CA,
        cert: None,
        wrap_key: Some(TC_KEY),
        user_pass: Some(Credentials::parse(b"alice\nwonderland\n").unwrap()),
        now_unix: NOW_UNIX,
    }
}

fn user_pass_params() -> ServerParams {
    let mut params = params(tls_crypt(), None);
    params.require_user_pass = true;
    params
}

#[test]
fn server_user_pass_accepted() {
    let mut world = World::new(&user_pass_spec(), user_pass_params(), 5);
    world.connect();
    let auth = world
        .server_events
        .iter()
        .find_map(|e| match e {
            ServerSessionEvent::Authenticate {
                username,
                password,
                common_name,
            } => Some((username.clone(), password.clone(), common_name.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(auth.0, "alice");
    assert_eq!(auth.1.expose(), "wonderland");
    assert_eq!(auth.2, None);
    assert!(!format!("{:?}", world.server_events).contains("wonderland"));
    assert_eq!(up_event(&world).2.as_deref(), Some("alice"));
    assert_eq!(world.server.username(), Some("alice"));
    let mut next = 0;
    traffic(&mut world, &mut next, 3);
    world.run_for(Duration::from_millis(200));
    assert_eq!(world.server_inner.len(), 3);
}

#[test]
fn server_user_pass_refused_sends_auth_failed() {
    let mut world = World::new(&user_pass_spec(), user_pass_params(), 6);
    world.verdict = Some(Err("bad password".into()));
    world.run_for(Duration::from_secs(10));
    let client = world.client_down().expect("client down");
    assert_eq!(client.fault, Fault::Auth);
    assert!(client.message.contains("AUTH_FAILED"), "{}", client.message);
    assert!(
        client.message.contains("bad password"),
        "{}",
        client.message
    );
    let server = world.server_down().expect("server down");
    assert_eq!(server.fault, Fault::Auth);
    assert!(matches!(
        world.server_events.last(),
        Some(ServerSessionEvent::Down(_))
    ));
    assert!(world.client_up().is_none() && !world.server.is_up());
    // A verdict that never comes: hand-window.
    let mut world = World::new(&user_pass_spec(), user_pass_params(), 7);
    world.verdict = None;
    world.run_for(Duration::from_secs(70));
    assert_eq!(world.server_down().unwrap().fault, Fault::Timeout);
}

#[test]
fn server_client_certificate_from_another_ca_is_an_auth_failure() {
    // The server trusts another CA than the one that signed the client's certificate.
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let mut world = World::new(&spec, params(tls_crypt(), Some(OTHER_CA)), 8);
    world.run_for(Duration::from_secs(10));
    let failure = world.server_down().expect("server down");
    assert_eq!(failure.fault, Fault::Auth);
    assert!(
        failure.message.contains("certificate"),
        "{}",
        failure.message
    );
    assert!(world.server.poll_timeout().is_none());
    // The alert reached the client, which blames its certificate.
    assert_eq!(world.client_down().map(|f| f.fault), Some(Fault::Auth));
    // A client without any certificate is refused too.
    let spec = user_pass_spec();
    let mut world = World::new(&spec, params(tls_crypt(), Some(CA)), 9);
    world.run_for(Duration::from_secs(10));
    assert_eq!(world.server_down().map(|f| f.fault), Some(Fault::Auth));
}

fn renegotiation(server_starts: bool, seed: u8) {
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let mut world = World::new(&spec, params(tls_crypt(), Some(CA)), seed);
    world.connect();
    let mut next = 0;
    traffic(&mut world, &mut next, 10);
    if server_starts {
        world.journal.push(Call::Renegotiate(world.now));
        world.server.renegotiate(world.now);
    } else {
        world.client.renegotiate(world.now);
    }
    assert!(world.server.is_renegotiating() || world.client.is_renegotiating());
    // Traffic all through the renegotiation and the key switch.
    traffic(&mut world, &mut next, 1300);
    world.run_for(Duration::from_millis(200));
    assert!(!world.server.is_renegotiating() && !world.client.is_renegotiating());
    assert_eq!(world.server.data_key_id(), KeyId::new(1));
    assert_eq!(world.client.data_key_id(), KeyId::new(1));
    assert_eq!(world.server.stats().renegotiations, 1);
    let sent_up: Vec<_> = (0..next).map(|i| inner_packet(1, i)).collect();
    let sent_down: Vec<_> = (0..next).map(|i| inner_packet(2, i)).collect();
    assert_eq!(world.server_inner, sent_up);
    assert_eq!(world.client_inner, sent_down);
    assert!(world.server_down().is_none() && world.client_down().is_none());
}

#[test]
fn server_renegotiation_started_by_the_client_loses_no_data() {
    renegotiation(false, 10);
}

#[test]
fn server_renegotiation_started_by_the_server_loses_no_data() {
    renegotiation(true, 11);
}

#[test]
fn server_reneg_sec_renegotiates_by_itself() {
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let mut params = params(tls_crypt(), Some(CA));
    params.reneg = Some(Duration::from_secs(120));
    let mut world = World::new(&spec, params, 12);
    world.connect();
    world.run_for(Duration::from_secs(400));
    assert!(world.server.stats().renegotiations >= 2);
    assert!(world.server_down().is_none() && world.client_down().is_none());
    let mut next = 0;
    traffic(&mut world, &mut next, 3);
    world.run_for(Duration::from_millis(200));
    assert_eq!(world.server_inner.len(), 3);
}

#[test]
fn server_ekm_and_legacy_prf_both_work() {
    for (proto, seed) in [(990, 13u8), (6, 14)] {
        let spec = ClientSpec::cert(CERT_TLS_CRYPT);
        let mut config = spec.config();
        config.peer_info.proto = proto;
        let mut world = World::new(&spec, params(tls_crypt(), Some(CA)), seed);
        world.client = TlsSession::new(config, &Seed::from_byte(seed), Instant::ZERO).unwrap();
        world.connect();
        assert_eq!(
            world.server.negotiated.unwrap().ekm,
            proto & iv_proto::TLS_KEY_EXPORT != 0
        );
        let mut next = 0;
        traffic(&mut world, &mut next, 3);
        world.run_for(Duration::from_millis(200));
        assert_eq!(world.server_inner.len(), 3, "IV_PROTO={proto}");
        assert_eq!(world.client_inner.len(), 3, "IV_PROTO={proto}");
    }
}

#[test]
fn server_ncp_picks_the_servers_first_cipher_the_client_supports() {
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let mut params = params(tls_crypt(), Some(CA));
    params.data_ciphers = vec![
        DataCipher::Aead(AeadAlg::ChaCha20Poly1305),
        DataCipher::Aead(AeadAlg::Aes256Gcm),
    ];
    let mut world = World::new(&spec, params, 15);
    world.connect();
    assert_eq!(
        up_event(&world).0,
        DataCipher::Aead(AeadAlg::ChaCha20Poly1305)
    );
    assert_eq!(
        world.client_up().unwrap().cipher.as_deref(),
        Some("CHACHA20-POLY1305")
    );
    let mut next = 0;
    traffic(&mut world, &mut next, 3);
    world.run_for(Duration::from_millis(200));
    assert_eq!(world.client_inner.len(), 3);
    // Nothing in common: AUTH_FAILED with 2.6's reason; the client blames the cipher.
    let spec = ClientSpec::cert(
        "data-ciphers AES-128-GCM\ncert client.crt\nkey client.key\ntls-crypt tc.key\n",
    );
    let mut params = self::params(tls_crypt(), Some(CA));
    params.data_ciphers = vec![DataCipher::Aead(AeadAlg::ChaCha20Poly1305)];
    let mut world = World::new(&spec, params, 16);
    world.run_for(Duration::from_secs(10));
    assert_eq!(
        world.client_down().map(|f| f.fault),
        Some(Fault::PeerIncompatible)
    );
    assert_eq!(
        world.server_down().map(|f| f.fault),
        Some(Fault::PeerIncompatible)
    );
}

#[test]
fn server_ncp_fallback_rules() {
    let gcm256 = DataCipher::Aead(AeadAlg::Aes256Gcm);
    let gcm128 = DataCipher::Aead(AeadAlg::Aes128Gcm);
    let chacha = DataCipher::Aead(AeadAlg::ChaCha20Poly1305);
    let server = [chacha, gcm128, gcm256];
    // IV_NCP=2 without IV_CIPHERS: the two GCM ciphers.
    let ncp2 = PeerInfo::parse("IV_NCP=2\n");
    assert_eq!(select_cipher(&server, &ncp2, ""), Some(gcm128));
    // No NCP at all: the options string's cipher when the server has it.
    let old = PeerInfo::parse("IV_VER=2.3.18\n");
    assert_eq!(
        select_cipher(&server, &old, "V4,cipher AES-256-GCM,auth SHA1"),
        Some(gcm256)
    );
    assert_eq!(select_cipher(&server, &old, "V4,cipher BF-CBC"), None);
    // IV_CIPHERS overrides the options string.
    let listed = PeerInfo::parse("IV_CIPHERS=AES-128-GCM\n");
    assert_eq!(
        select_cipher(&server, &listed, "V4,cipher AES-256-GCM"),
        Some(gcm128)
    );
}

#[test]
fn server_ping_restart_on_a_silent_client() {
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let mut world = World::new(&spec, params(tls_crypt(), Some(CA)), 17);
    world.connect();
    // The client vanishes: nothing it sends arrives any more.
    world.loss = 1000;
    world.run_for(Duration::from_secs(119));
    assert!(world.server_down().is_none());
    world.run_for(Duration::from_secs(2));
    let failure = world.server_down().expect("server down");
    assert_eq!(failure.fault, Fault::Timeout);
    assert!(failure.message.contains("120 s"), "{}", failure.message);
    assert!(world.server.poll_timeout().is_none());
}

#[test]
fn server_exit_from_the_client_ends_the_session() {
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let mut world = World::new(&spec, params(tls_crypt(), Some(CA)), 18);
    world.connect();
    world.client.close(world.now);
    world.run_for(Duration::from_millis(500));
    let failure = world.server_down().expect("server down");
    assert_eq!(failure.fault, Fault::Closed);
    assert!(failure.message.contains("EXIT"), "{}", failure.message);
    // The client got its EXIT acknowledged and finished before explicit-exit-notify ran out.
    assert_eq!(world.client_down().map(|f| f.fault), Some(Fault::Closed));
}

#[test]
fn server_close_sends_restart_or_halt() {
    for (restart, fault, seed) in [(true, Fault::Closed, 19u8), (false, Fault::Halted, 20)] {
        let spec = ClientSpec::cert(CERT_TLS_CRYPT);
        let mut world = World::new(&spec, params(tls_crypt(), Some(CA)), seed);
        world.connect();
        world.journal.push(Call::Close(world.now, restart));
        world.server.close(world.now, restart);
        world.run_for(Duration::from_secs(1));
        assert_eq!(world.client_down().map(|f| f.fault), Some(fault));
        // erebus's client acknowledges nothing once down: the server waits out its grace.
        world.run_for(CLOSE_GRACE);
        assert_eq!(world.server_down().map(|f| f.fault), Some(Fault::Closed));
    }
}

#[test]
fn server_retransmitted_reset_is_acknowledged_not_a_new_session() {
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let setup = Arc::new(ServerSetup::new(params(tls_crypt(), Some(CA))).unwrap());
    let mut client = TlsSession::new(spec.config(), &Seed::from_byte(21), Instant::ZERO).unwrap();
    let mut buf = vec![0u8; 2048];
    let n = client
        .poll_transmit(Instant::ZERO, &mut buf)
        .unwrap()
        .unwrap();
    let reset = buf[..n].to_vec();
    assert!(setup.is_initial_packet(&reset));
    assert!(!setup.is_initial_packet(&reset[..n - 1]));
    let mut tampered = reset.clone();
    tampered[n - 1] ^= 1;
    assert!(!setup.is_initial_packet(&tampered));
    let mut server = new_server(&setup, 22, NOW_UNIX);
    assert_eq!(
        server.receive(Instant::ZERO, &mut reset.clone()),
        Ok(Decapsulated::Consumed)
    );
    let n = server.poll_transmit(Instant::ZERO, &mut buf).unwrap();
    let first_reply = buf[..n].to_vec();
    assert!(server.poll_transmit(Instant::ZERO, &mut buf).is_none());
    // The same datagram again is a replay of the wrapped packet: dropped.
    assert_eq!(
        server.receive(Instant::ZERO, &mut reset.clone()),
        Err(DropReason::Replayed)
    );
    // The client's own retransmission (a new replay id) is acknowledged again.
    let at = Instant::from_secs(2);
    client.handle_timeout(at);
    let n = client.poll_transmit(at, &mut buf).unwrap().unwrap();
    let mut again = buf[..n].to_vec();
    assert_ne!(again, reset);
    assert_eq!(server.receive(at, &mut again), Ok(Decapsulated::Consumed));
    let n = server.poll_transmit(at, &mut buf).unwrap();
    assert!(n > 0);
    assert_eq!(server.client_session_id(), Some(client.local_session_id()));
    assert!(!first_reply.is_empty());
    // Another session id from the same address is not this session's.
    let mut other = TlsSession::new(spec.config(), &Seed::from_byte(23), Instant::ZERO).unwrap();
    let n = other
        .poll_transmit(Instant::ZERO, &mut buf)
        .unwrap()
        .unwrap();
    // (Its replay id repeats the first client's, so the replay window drops it first; the
    // composer compares `initial_session_id` before it gets here.)
    assert!(server.receive(at, &mut buf[..n].to_vec()).is_err());
    assert_ne!(
        setup.initial_session_id(&buf[..n]),
        server.client_session_id()
    );
}

#[test]
fn server_setup_refuses_bad_material() {
    let mut bad = params(tls_crypt(), Some(CA));
    bad.key_pem = Zeroizing::new(CLIENT_KEY.to_vec());
    let error = ServerSetup::new(bad).unwrap_err();
    assert!(error.to_string().contains("does not belong"), "{error}");
    let mut bad = params(tls_crypt(), Some(CA));
    bad.cert_chain_pem = b"not pem".to_vec();
    assert!(matches!(
        ServerSetup::new(bad),
        Err(ServerSetupError::Tls(_))
    ));
    let bad = params(tls_crypt(), None);
    assert_eq!(
        ServerSetup::new(bad).unwrap_err(),
        ServerSetupError::NoClientAuthentication
    );
    let mut bad = params(tls_crypt(), Some(CA));
    bad.push.push("route 1.2.3.0 255.255.255.0,evil".into());
    assert!(matches!(
        ServerSetup::new(bad),
        Err(ServerSetupError::BadPushOption { .. })
    ));
    let mut bad = params(tls_crypt(), Some(b"garbage"));
    bad.client_ca_pem = Some(b"no certificate here".to_vec());
    assert!(ServerSetup::new(bad).is_err());
}

#[test]
fn server_garbage_is_dropped_without_panic() {
    let spec = ClientSpec::cert(CERT_TLS_CRYPT);
    let mut world = World::new(&spec, params(tls_crypt(), Some(CA)), 24);
    world.connect();
    let mut rng = Seed::from_byte(25).rng();
    for len in 0..300usize {
        let mut packet = vec![0u8; len];
        rng.fill(&mut packet);
        for first in [0x48u8, 0x30, 0x38, 0x20, 0x28, 0x40, 0x50, 0xff] {
            if let Some(b) = packet.first_mut() {
                *b = first;
            }
            assert!(
                world
                    .server
                    .receive(world.now, &mut packet.clone())
                    .is_err()
            );
        }
    }
    // Truncations of real packets.
    let real = world.server_outputs.last().unwrap().clone();
    for cut in 0..real.len() {
        let _ = world.server.receive(world.now, &mut real[..cut].to_vec());
    }
    assert!(world.server.is_up());
    let mut next = 0;
    traffic(&mut world, &mut next, 2);
    world.run_for(Duration::from_millis(200));
    assert_eq!(world.server_inner.len(), 2);
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn server_arbitrary_packets_never_panic(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), 1..8),
            wrapped in any::<bool>(),
        ) {
            let wrap = if wrapped { tls_crypt() } else { WrapKey::None };
            let setup = Arc::new(ServerSetup::new(params(wrap, Some(CA))).unwrap());
            let mut server = new_server(&setup, 26, NOW_UNIX);
            let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
            for (i, packet) in packets.into_iter().enumerate() {
                let now = Instant::from_millis(i as u64 * 10);
                let _ = setup.is_initial_packet(&packet);
                let _ = server.receive(now, &mut packet.clone());
                server.handle_timeout(now);
                while server.poll_transmit(now, &mut buf).is_some() {}
                let _ = server.poll_timeout();
            }
        }
    }

    #[test]
    fn server_arbitrary_control_payloads_after_reset_never_panic() {
        // Unwrapped control packets of every kind with random bodies, after a real reset.
        let setup = Arc::new(ServerSetup::new(params(WrapKey::None, Some(CA))).unwrap());
        let spec = ClientSpec {
            wrap_key: None,
            ..ClientSpec::cert(CERT_TLS_CRYPT.replace("tls-crypt tc.key\n", "").as_str())
        };
        let mut client =
            TlsSession::new(spec.config(), &Seed::from_byte(27), Instant::ZERO).unwrap();
        let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
        let n = client
            .poll_transmit(Instant::ZERO, &mut buf)
            .unwrap()
            .unwrap();
        let mut server = new_server(&setup, 28, NOW_UNIX);
        server
            .receive(Instant::ZERO, &mut buf[..n].to_vec())
            .unwrap();
        let sid = client.local_session_id();
        let mut rng = Seed::from_byte(29).rng();
        for round in 0..3000u32 {
            let opcode = [1u8, 2, 3, 4, 5, 7, 8, 10, 11][(round % 9) as usize];
            let mut packet = vec![(opcode << 3) | (round as u8 % 3)];
            packet.extend_from_slice(&sid.0);
            let mut body = vec![0u8; rng.below(80) as usize];
            rng.fill(&mut body);
            packet.extend_from_slice(&body);
            let now = Instant::from_millis(u64::from(round));
            let _ = server.receive(now, &mut packet);
            server.handle_timeout(now);
            while server.poll_transmit(now, &mut buf).is_some() {}
        }
    }
}

/// Replays `journal` into a fresh server built like the original; returns what it produced.
fn replay(setup: &Arc<ServerSetup>, seed: u8, now_unix: u64, journal: &[Call]) -> Vec<Vec<u8>> {
    let mut server = new_server(setup, seed, now_unix);
    let mut outputs = Vec::new();
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    for call in journal {
        match call {
            Call::Receive(at, packet) => {
                let _ = server.receive(*at, &mut packet.clone());
            }
            Call::Timeout(at) => server.handle_timeout(*at),
            Call::Transmit(at) => {
                if let Some(n) = server.poll_transmit(*at, &mut buf) {
                    outputs.push(buf[..n].to_vec());
                }
            }
            Call::Encapsulate(at, payload) => {
                let mut out = vec![0u8; HEADROOM + payload.len() + TAILROOM];
                let inner = HEADROOM..HEADROOM + payload.len();
                out[inner.clone()].copy_from_slice(payload);
                if let Ok(range) = server.encapsulate(*at, &mut out, inner) {
                    outputs.push(out[range].to_vec());
                }
            }
            Call::Verdict(at, verdict) => server.auth_verdict(*at, verdict.clone()),
            Call::Renegotiate(at) => server.renegotiate(*at),
            Call::Close(at, restart) => server.close(*at, *restart),
        }
    }
    outputs
}

#[test]
fn server_same_seed_same_bytes() {
    // Ed25519 signs deterministically, so with these certificates every byte the server sends
    // is a function of its seed and its inputs.
    let spec = ClientSpec {
        ca: ED_CA,
        cert: Some((ED_CLIENT_CERT, ED_CLIENT_KEY)),
        now_unix: ED_NOW_UNIX,
        user_pass: Some(Credentials::parse(b"bob\nbuilder\n").unwrap()),
        ..ClientSpec::cert(&format!("{CERT_TLS_CRYPT}auth-user-pass\n"))
    };
    let mut params = params(tls_crypt(), Some(ED_CA));
    params.cert_chain_pem = ED_SERVER_CERT.to_vec();
    params.key_pem = Zeroizing::new(ED_SERVER_KEY.to_vec());
    params.require_user_pass = true;
    let setup = Arc::new(ServerSetup::new(params).unwrap());
    let run = |seed: u8| {
        let mut world = World::with_setup(&spec, &setup, seed);
        world.loss = 150;
        world.connect();
        world.loss = 0;
        let mut next = 0;
        traffic(&mut world, &mut next, 10);
        world.journal.push(Call::Renegotiate(world.now));
        world.server.renegotiate(world.now);
        traffic(&mut world, &mut next, 100);
        assert_eq!(world.server.stats().renegotiations, 1);
        world.journal.push(Call::Close(world.now, true));
        world.server.close(world.now, true);
        world.run_for(CLOSE_GRACE + Duration::from_secs(1));
        assert!(world.server_down().is_some());
        world
    };
    let first = run(30);
    assert_eq!(up_event(&first).1.as_deref(), Some("ed-client"));
    let replayed = replay(&setup, 30 ^ 0x80, ED_NOW_UNIX, &first.journal);
    assert!(first.server_outputs.len() >= 100);
    assert_eq!(replayed, first.server_outputs, "same inputs, same bytes");
    // Another seed: another session id, other bytes from the first packet on.
    let other = replay(&setup, 31, ED_NOW_UNIX, &first.journal);
    assert_ne!(other.first(), first.server_outputs.first());
    // Two live runs with the same seeds agree.
    let second = run(30);
    assert_eq!(second.server_outputs, first.server_outputs);
}
