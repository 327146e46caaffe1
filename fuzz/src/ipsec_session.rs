//! `ipsec_session`: a whole [`IpsecSession`] talking to the fuzzer.
//!
//! The session is built from a small PSK connection loaded with [`swanctl::load`], connected,
//! and drained, so that its IKE_SA_INIT is out. Then the input drives it. Its first byte picks
//! one of [`CONFIGS`]; the rest are [`Records`](crate::Records), each one step of the server
//! (or of the clock). After every step the harness drains [`Tunnel::poll_transmit`] and
//! [`Tunnel::poll_event`] as a driver does, and calls [`Tunnel::transport_connected`] when the
//! session asks for a new transport (the float to port 4500).
//!
//! A fuzzer cannot compute a Diffie-Hellman exchange or a MAC, so besides raw datagrams the
//! harness can play a responder that holds keys ([`Responder`]), and the fuzzer chooses what
//! it says. The record's tag (modulo 8) is the step:
//!
//! - [`RAW`]: the body is a datagram from the server, given to [`Tunnel::decapsulate`] as is
//!   (with the non-ESP marker on port 4500 if the fuzzer wrote one);
//! - [`PATCHED`]: an IKE message whose SPIs (SPIr once there is one) and message ID the
//!   harness copies from the session's last message and request, and whose length field it
//!   sets; the marker is added on port 4500;
//! - [`INIT`]: the harness answers the session's last IKE_SA_INIT with a valid response (the
//!   first offered proposal, its own key exchange value and nonce) and derives the IKE SA's
//!   keys; body byte 0 adds notifies (see [`init_flags`]), bytes 1.. an extra notify;
//! - [`SEALED`]: `exchange | flags | first payload type | inner chain`: the harness encrypts
//!   the chain in an SK payload (or SKF fragments) of the IKE SA it negotiated, as a response
//!   to the session's last request or as a request of its own (see [`sealed_flags`]); with
//!   [`sealed_flags::FIX_AUTH`] it writes the correct PSK AUTH payload for the chain's IDr,
//!   with [`sealed_flags::FILL_KE`] its own key exchange value. The harness decrypts what the
//!   session sends on these SAs and follows CREATE_CHILD_SA exchanges (either side's, of a
//!   CHILD_SA or of the IKE SA), so it keeps talking after rekeys;
//! - [`ESP`]: the body is an inner packet, sealed into ESP with the keys of the session's
//!   current CHILD_SA (the one IKE_AUTH set up, or a rekeyed one the harness followed);
//! - [`TIME`]: the clock moves on (body: big-endian milliseconds, up to 4 bytes; empty: to the
//!   session's next deadline), then [`Tunnel::handle_timeout`];
//! - [`CLOSE`]: the session is closed ([`Tunnel::close`]);
//! - [`ENCAPSULATE`]: the body is an inner packet for [`Tunnel::encapsulate`].
//!
//! Everything the session sends must be well-formed: every IKE message it sends parses.

use std::net::SocketAddr;
use std::sync::OnceLock;

use erebus_ipsec::config::Connection;
use erebus_ipsec::crypto::{Aead, KeyExchange};
use erebus_ipsec::esp::{HEADROOM, Outbound, TAILROOM};
use erebus_ipsec::ike::{IkeKeys, IkeSa};
use erebus_ipsec::proposal::{DhGroup, Encr, Integ, Prf};
use erebus_ipsec::swanctl;
use erebus_ipsec::wire::{
    self, HEADER_LEN, Header, Notify, Transform, WireProposal, exchange, flags, notify, payload,
    protocol, transform,
};
use erebus_ipsec::{IpsecSession, SessionConfig};
use erebus_sansio::tunnel::{TransportSpec, Tunnel, TunnelEvent};
use erebus_sansio::{Instant, Seed, UnixTime, WallClock};

use crate::Records;

/// A datagram from the server, as is.
pub const RAW: u8 = 0;
/// An IKE message with the session's SPIs and message ID written in.
pub const PATCHED: u8 = 1;
/// A valid IKE_SA_INIT response from the harness's responder.
pub const INIT: u8 = 2;
/// An inner payload chain the responder encrypts.
pub const SEALED: u8 = 3;
/// An inner packet the responder seals into ESP.
pub const ESP: u8 = 4;
/// The clock moves on.
pub const TIME: u8 = 5;
/// The session is closed.
pub const CLOSE: u8 = 6;
/// An inner packet to send.
pub const ENCAPSULATE: u8 = 7;

/// Bits of an [`INIT`] body's first byte.
pub mod init_flags {
    /// Add IKEV2_FRAGMENTATION_SUPPORTED: the session then fragments what it sends.
    pub const FRAGMENTATION: u8 = 0x01;
    /// Add SIGNATURE_HASH_ALGORITHMS.
    pub const HASHES: u8 = 0x02;
    /// Answer with a COOKIE (bytes 1.. are the cookie) instead.
    pub const COOKIE: u8 = 0x04;
    /// Answer with INVALID_KE_PAYLOAD (bytes 1..3 are the group) instead.
    pub const INVALID_KE: u8 = 0x08;
}

/// Bits of a [`SEALED`] body's second byte.
pub mod sealed_flags {
    /// A response to the session's last request (else a request of the responder's).
    pub const RESPONSE: u8 = 0x01;
    /// Write the correct PSK AUTH for the chain's IDr (an AUTH payload is added if missing).
    pub const FIX_AUTH: u8 = 0x02;
    /// Split into SKF fragments of at most [`super::FRAGMENT_SIZE`] bytes.
    pub const FRAGMENTS: u8 = 0x04;
    /// A request with the message ID of the responder's previous request (a retransmission).
    pub const PREVIOUS_ID: u8 = 0x08;
    /// On the IKE SA that the last IKE rekey replaced (if there was one).
    pub const OLD_SA: u8 = 0x10;
    /// Write the responder's own key exchange value into the chain's KE payload (for the
    /// group its first two bytes name), so that the harness can follow a rekey with PFS or of
    /// the IKE SA.
    pub const FILL_KE: u8 = 0x20;
}

/// The size of the fragments [`sealed_flags::FRAGMENTS`] asks for.
pub const FRAGMENT_SIZE: usize = 180;

/// The server.
pub const SERVER: [u8; 4] = [198, 51, 100, 1];
/// The PSK of every configuration.
pub const PSK: &str = "fuzzing-psk-not-secret";
/// The responder's IKE SPI.
pub const RESPONDER_SPI: u64 = 0x5253_5053_4649_5a5a;
/// The responder's nonce.
pub const RESPONDER_NONCE: [u8; 32] = [0x4e; 32];
/// The responder's key exchange randomness.
const RESPONDER_KE_RANDOM: [u8; 32] = [0x52; 32];

/// The configurations the first byte picks from: IKE proposal, ESP proposal, extra
/// connection options.
pub const CONFIGS: &[(&str, &str, &str)] = &[
    ("aes256gcm16-prfsha256-x25519", "aes256gcm16", ""),
    ("aes128-sha256-ecp256", "aes128gcm16", "rekey_time = 20m\n"),
    (
        "chacha20poly1305-prfsha512-x25519",
        "chacha20poly1305",
        "remote_port = 4500\ndpd_delay = 10s\n",
    ),
];

/// The swanctl.conf of configuration `index` (modulo the number of them).
pub fn config_text(index: u8) -> String {
    let (ike, esp, extra) = CONFIGS[usize::from(index) % CONFIGS.len()];
    format!(
        "connections {{\n\
         \tfuzz {{\n\
         \t\tremote_addrs = 198.51.100.1\n\
         \t\tvips = 0.0.0.0\n\
         \t\tproposals = {ike}\n\
         \t\t{extra}\
         \t\tlocal {{\n\t\t\tauth = psk\n\t\t\tid = client@example.test\n\t\t}}\n\
         \t\tremote {{\n\t\t\tauth = psk\n\t\t\tid = vpn.example.test\n\t\t}}\n\
         \t\tchildren {{\n\t\t\tnet {{\n\t\t\t\tremote_ts = 10.99.0.0/24\n\
         \t\t\t\tesp_proposals = {esp}\n\t\t\t}}\n\t\t}}\n\
         \t}}\n\
         }}\n\
         secrets {{\n\tike-fuzz {{\n\t\tid = client@example.test\n\t\tsecret = \"{PSK}\"\n\t}}\n}}\n"
    )
}

/// The connection of configuration `index`, loaded once.
pub fn connection(index: u8) -> Connection {
    static LOADED: OnceLock<Vec<Connection>> = OnceLock::new();
    let all = LOADED.get_or_init(|| {
        (0..CONFIGS.len())
            .map(|i| load_connection(i as u8))
            .collect()
    });
    all[usize::from(index) % all.len()].clone()
}

fn load_connection(index: u8) -> Connection {
    let mut no_files = |path: &std::path::Path| Err(format!("{}: no such file", path.display()));
    let (connection, _) = swanctl::load(
        config_text(index).as_bytes(),
        "fuzz.conf",
        None,
        &mut no_files,
    )
    .expect("the fuzzing configuration loads");
    connection
}

/// The harness.
pub fn run(data: &[u8]) {
    let Some((&config, records)) = data.split_first() else {
        return;
    };
    let mut driver = Driver::new(config);
    for (tag, body) in Records::new(records) {
        driver.step(tag, body);
    }
}

/// The responder the harness plays: the IKE SA it negotiated with the session, and the SAs
/// that rekeys made of it.
///
/// In its [`IkeSa`]s `next_request` is the ID of the responder's next request and
/// `expected_peer_request` one more than the ID of the session's last request.
pub struct Responder {
    sa: IkeSa,
    /// The SA a rekey replaced.
    old: Option<IkeSa>,
    ni: Vec<u8>,
    message2: Vec<u8>,
    /// SK_pr of the first IKE SA, for the PSK AUTH.
    sk_pr: Vec<u8>,
    /// The key of each CHILD_SA towards the session, by the session's inbound SPI.
    child_keys: Vec<(u32, Vec<u8>)>,
    /// The key of the CHILD_SA that IKE_AUTH sets up.
    first_child_key: Vec<u8>,
    /// ESP towards the session, for its inbound SPI.
    esp: Option<(u32, Outbound)>,
    /// The responder's side of a CREATE_CHILD_SA exchange in progress.
    ours: Option<Side>,
    /// The session's side of it.
    theirs: Option<Side>,
    /// The responder's key exchange of it ([`sealed_flags::FILL_KE`]).
    kx: Option<KeyExchange>,
    /// How many responses the session sent on the current IKE SA.
    pub responses: usize,
}

/// One side of a CREATE_CHILD_SA exchange.
#[derive(Clone, Debug)]
struct Side {
    /// Whether this side sent the request.
    initiator: bool,
    /// The first proposal of its SA payload.
    proposal: WireProposal,
    nonce: Vec<u8>,
    /// The KE payload's body.
    ke: Option<Vec<u8>>,
}

impl Side {
    fn parse(first: u8, inner: &[u8], initiator: bool) -> Option<Self> {
        let chain = wire::split_chain(first, inner).ok()?;
        let body = |kind: u8| chain.iter().find(|p| p.kind == kind).map(|p| p.body);
        Some(Self {
            initiator,
            proposal: wire::decode_sa(body(payload::SA)?)
                .ok()?
                .into_iter()
                .next()?,
            nonce: body(payload::NONCE)?.to_vec(),
            ke: body(payload::KE).map(<[u8]>::to_vec),
        })
    }
}

/// The session, the clock and what the harness saw the session send.
pub struct Driver {
    /// The session under test.
    pub session: IpsecSession,
    connection: Connection,
    now: Instant,
    spec: Option<TransportSpec>,
    buf: Vec<u8>,
    /// The session's last IKE_SA_INIT request (without the marker).
    init_request: Option<Vec<u8>>,
    /// The header of the last IKE message the session sent.
    last_sent: Option<Header>,
    /// The header of the last IKE request the session sent.
    last_request: Option<Header>,
    responder: Option<Responder>,
    /// How many times the session reported Up.
    pub ups: usize,
    /// Whether the session reported Down.
    pub down: bool,
    /// How many inner packets came out of decapsulate.
    pub inner_packets: usize,
    /// How many IKE_AUTH requests the session sent.
    pub auth_requests: usize,
}

impl Driver {
    /// A session of configuration `config`, connected, its first message sent.
    pub fn new(config: u8) -> Self {
        let connection = connection(config);
        let server = SocketAddr::from((SERVER, connection.remote_port));
        let wall_clock = WallClock::new(Instant::ZERO, UnixTime::from_secs(1_800_000_000));
        let session = IpsecSession::new(
            SessionConfig {
                connection: connection.clone(),
                server,
                wall_clock,
            },
            &Seed::from_byte(0x42),
            Instant::ZERO,
        )
        .expect("the fuzzing configuration makes a session");
        let mut driver = Self {
            session,
            connection,
            now: Instant::ZERO,
            spec: None,
            buf: vec![0; 2048],
            init_request: None,
            last_sent: None,
            last_request: None,
            responder: None,
            ups: 0,
            down: false,
            inner_packets: 0,
            auth_requests: 0,
        };
        driver.drain();
        assert!(driver.init_request.is_some(), "no IKE_SA_INIT went out");
        driver
    }

    /// How many responses the session sent on the harness's current IKE SA.
    pub fn responses(&self) -> usize {
        self.responder.as_ref().map_or(0, |r| r.responses)
    }

    /// The ESP cipher of the configuration.
    fn esp_encr(&self) -> Option<Encr> {
        self.connection
            .children
            .first()
            .and_then(|c| c.esp_proposals.first())
            .and_then(|p| p.encr.first())
            .copied()
    }

    /// Whether IKE messages carry the non-ESP marker now.
    fn marker(&self) -> bool {
        self.spec.as_ref().is_some_and(|s| s.port != 500)
    }

    /// One record of the input.
    pub fn step(&mut self, tag: u8, body: &[u8]) {
        match tag % 8 {
            RAW => self.deliver(body.to_vec()),
            PATCHED => self.patched(body),
            INIT => self.init(body),
            SEALED => self.sealed(body),
            ESP => self.esp(body),
            TIME => self.time(body),
            CLOSE => self.session.close(self.now),
            _ => self.encapsulate(body),
        }
        self.drain();
    }

    /// Hands one datagram to the session.
    fn deliver(&mut self, mut datagram: Vec<u8>) {
        let result = self.session.decapsulate(self.now, &mut datagram);
        if let Ok(erebus_sansio::tunnel::Decapsulated::Inner(range)) = result {
            assert!(range.start <= range.end && range.end <= datagram.len());
            self.inner_packets += 1;
        }
    }

    /// Hands one IKE message to the session, with the marker when it needs one.
    fn deliver_ike(&mut self, message: Vec<u8>) {
        if self.marker() {
            self.deliver([&[0u8; 4][..], &message].concat());
        } else {
            self.deliver(message);
        }
    }

    fn patched(&mut self, body: &[u8]) {
        let mut message = body.to_vec();
        if let Some(sent) = self.last_sent {
            // SPIr only once there is one (a response to IKE_SA_INIT brings its own).
            let n = if sent.spi_r == 0 { 8 } else { 16 };
            let spis = [sent.spi_i.to_be_bytes(), sent.spi_r.to_be_bytes()].concat();
            let n = message.len().min(n);
            message[..n].copy_from_slice(&spis[..n]);
        }
        if let Some(request) = self.last_request
            && message.len() >= 24
        {
            message[20..24].copy_from_slice(&request.message_id.to_be_bytes());
        }
        if message.len() >= HEADER_LEN {
            let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
            message[24..28].copy_from_slice(&len.to_be_bytes());
        }
        self.deliver_ike(message);
    }

    /// Answers the session's last IKE_SA_INIT.
    fn init(&mut self, body: &[u8]) {
        let Some(request) = self.init_request.clone() else {
            return;
        };
        let Some(parts) = InitRequest::parse(&request) else {
            return;
        };
        let bits = body.first().copied().unwrap_or(0);
        let extra = body.get(1..).unwrap_or_default();
        let mut payloads: Vec<(u8, Vec<u8>)> = Vec::new();
        if bits & init_flags::COOKIE != 0 {
            payloads.push((
                payload::NOTIFY,
                Notify::encode(0, &[], notify::COOKIE, extra),
            ));
            let message = init_response(parts.spi_i, 0, &payloads);
            return self.deliver_ike(message);
        }
        if bits & init_flags::INVALID_KE != 0 {
            let group = extra.get(..2).unwrap_or(&[0, 19]);
            payloads.push((
                payload::NOTIFY,
                Notify::encode(0, &[], notify::INVALID_KE_PAYLOAD, group),
            ));
            let message = init_response(parts.spi_i, 0, &payloads);
            return self.deliver_ike(message);
        }
        let Some(kx) = KeyExchange::new(parts.group, RESPONDER_KE_RANDOM) else {
            return;
        };
        let Some(shared) = kx.shared(&parts.ke) else {
            return;
        };
        payloads.push((
            payload::SA,
            wire::encode_sa(core::slice::from_ref(&parts.chosen)),
        ));
        let mut ke = parts.group.id().to_be_bytes().to_vec();
        ke.extend_from_slice(&[0, 0]);
        ke.extend_from_slice(&kx.public());
        payloads.push((payload::KE, ke));
        payloads.push((payload::NONCE, RESPONDER_NONCE.to_vec()));
        if bits & init_flags::FRAGMENTATION != 0 {
            payloads.push((
                payload::NOTIFY,
                Notify::encode(0, &[], notify::IKEV2_FRAGMENTATION_SUPPORTED, &[]),
            ));
        }
        if bits & init_flags::HASHES != 0 {
            payloads.push((
                payload::NOTIFY,
                Notify::encode(
                    0,
                    &[],
                    notify::SIGNATURE_HASH_ALGORITHMS,
                    &[0, 2, 0, 3, 0, 4],
                ),
            ));
        }
        if let [hi, lo, data @ ..] = extra {
            payloads.push((
                payload::NOTIFY,
                Notify::encode(0, &[], u16::from_be_bytes([*hi, *lo]), data),
            ));
        }
        let message = init_response(parts.spi_i, RESPONDER_SPI, &payloads);
        let ni = parts.nonce;
        let nr = RESPONDER_NONCE;
        let skeyseed = parts.prf.compute(&[&ni[..], &nr[..]].concat(), &[&shared]);
        let Some(keys) = IkeKeys::derive_suite(
            parts.prf,
            parts.encr,
            parts.integ,
            &skeyseed,
            &ni,
            &nr,
            parts.spi_i,
            RESPONDER_SPI,
        ) else {
            return;
        };
        // The first CHILD_SA's keys: prf+(SK_d, Ni | Nr), the session's direction first.
        let len = self.esp_encr().map_or(0, Encr::keymat_len);
        let keymat = parts.prf.plus(&keys.sk_d, &[&ni, &nr], 2 * len);
        let first_child_key = keymat.get(len..).unwrap_or_default().to_vec();
        let sk_pr = keys.sk_pr.to_vec();
        let mut sa = IkeSa::new(parts.spi_i, parts.prf, parts.encr);
        sa.spi_r = RESPONDER_SPI;
        sa.we_initiated = false;
        sa.keys = Some(keys);
        self.responder = Some(Responder {
            sa,
            old: None,
            ni,
            message2: message.clone(),
            sk_pr,
            child_keys: Vec::new(),
            first_child_key,
            esp: None,
            ours: None,
            theirs: None,
            kx: None,
            responses: 0,
        });
        self.deliver_ike(message);
    }

    fn sealed(&mut self, body: &[u8]) {
        let [exchange_type, bits, first, inner @ ..] = body else {
            return;
        };
        let (exchange_type, bits) = (*exchange_type, *bits);
        let psk = self
            .connection
            .psk
            .as_ref()
            .map(|s| s.expose().to_vec())
            .unwrap_or_default();
        let esp_encr = self.esp_encr();
        let Some(responder) = self.responder.as_mut() else {
            return;
        };
        let response = bits & sealed_flags::RESPONSE != 0;
        let use_old = bits & sealed_flags::OLD_SA != 0 && responder.old.is_some();
        let (first, mut inner) = if bits & sealed_flags::FIX_AUTH != 0 {
            responder
                .with_auth(&psk, *first, inner)
                .unwrap_or_else(|| (*first, inner.to_vec()))
        } else {
            (*first, inner.to_vec())
        };
        if bits & sealed_flags::FILL_KE != 0
            && let Some((filled, kx)) = fill_ke(first, &inner)
        {
            inner = filled;
            responder.kx = Some(kx);
        }
        if exchange_type == exchange::CREATE_CHILD_SA && !use_old {
            responder.ours = Side::parse(first, &inner, !response);
            if response {
                responder.complete(esp_encr);
            } else {
                responder.theirs = None;
            }
        }
        let sa = match responder.old.as_mut() {
            Some(old) if use_old => old,
            _ => &mut responder.sa,
        };
        let id = if response {
            sa.expected_peer_request.wrapping_sub(1)
        } else if bits & sealed_flags::PREVIOUS_ID != 0 {
            sa.next_request.wrapping_sub(1)
        } else {
            sa.next_request
        };
        let messages = if bits & sealed_flags::FRAGMENTS != 0 {
            sa.seal_fragments(exchange_type, response, id, first, &inner, FRAGMENT_SIZE)
        } else {
            sa.seal(exchange_type, response, id, first, &inner)
                .map(|m| vec![m])
        };
        for message in messages.unwrap_or_default() {
            self.deliver_ike(message);
        }
    }

    fn esp(&mut self, body: &[u8]) {
        let Some((inbound_spi, _)) = self.session.child_spis() else {
            return;
        };
        let Some(encr) = self.esp_encr() else {
            return;
        };
        let Some(responder) = self.responder.as_mut() else {
            return;
        };
        if responder
            .esp
            .as_ref()
            .is_none_or(|(spi, _)| *spi != inbound_spi)
        {
            // A rekeyed CHILD_SA the harness followed, else the first one.
            let key = responder
                .child_keys
                .iter()
                .rev()
                .find(|(spi, _)| *spi == inbound_spi)
                .map_or(&responder.first_child_key, |(_, key)| key);
            let Some(aead) = Aead::new(encr, key) else {
                return;
            };
            responder.esp = Some((inbound_spi, Outbound::new(inbound_spi, aead)));
        }
        let Some((_, outbound)) = responder.esp.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; HEADROOM + body.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + body.len()].copy_from_slice(body);
        if let Ok(outer) = outbound.seal(&mut buf, HEADROOM..HEADROOM + body.len()) {
            self.deliver(buf[outer].to_vec());
        }
    }

    fn time(&mut self, body: &[u8]) {
        if body.is_empty() {
            if let Some((at, _)) = self.session.poll_timeout() {
                self.now = self.now.max(at);
            }
        } else {
            let mut millis = [0u8; 8];
            let n = body.len().min(4);
            millis[8 - n..].copy_from_slice(&body[..n]);
            let millis = u64::from_be_bytes(millis);
            self.now = Instant::from_micros(self.now.as_micros().saturating_add(millis * 1000));
        }
        self.session.handle_timeout(self.now);
    }

    fn encapsulate(&mut self, inner: &[u8]) {
        let overhead = self.session.overhead();
        let mut buf = vec![0u8; overhead.headroom + inner.len() + overhead.tailroom];
        let range = overhead.headroom..overhead.headroom + inner.len();
        buf[range.clone()].copy_from_slice(inner);
        if let Ok(outer) = self.session.encapsulate(self.now, &mut buf, range) {
            assert!(outer.start <= outer.end && outer.end <= buf.len());
        }
    }

    /// Drains what the session sends and reports, as a driver does.
    pub fn drain(&mut self) {
        loop {
            let spec = self.session.transport().cloned();
            if spec.is_some() && spec != self.spec {
                let port = spec.as_ref().map_or(500, |s| s.port);
                self.spec = spec;
                self.session
                    .transport_connected(self.now, SocketAddr::from((SERVER, port)));
            }
            let marker = self.marker();
            match self.session.poll_transmit(self.now, &mut self.buf) {
                None => break,
                Some(Err(needed)) => {
                    assert!(needed > self.buf.len(), "asked for {needed} bytes again");
                    self.buf.resize(needed, 0);
                }
                Some(Ok(len)) => {
                    let datagram = self.buf[..len].to_vec();
                    self.sent(marker, &datagram);
                }
            }
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                TunnelEvent::Up(config) => {
                    assert!(!self.down, "Up after Down");
                    assert!(config.local_ipv4().is_some(), "Up without an address");
                    self.ups += 1;
                }
                TunnelEvent::Down(failure) => {
                    let _ = failure.to_string();
                    self.down = true;
                }
                _ => {}
            }
        }
        if self.down {
            assert!(self.session.transport().is_none(), "a transport after Down");
            assert!(
                self.session.poll_timeout().is_none(),
                "a deadline after Down"
            );
        }
    }

    /// Looks at one datagram the session sent.
    fn sent(&mut self, marker: bool, datagram: &[u8]) {
        let ike = if !marker {
            datagram
        } else if datagram == [0xff] {
            return;
        } else if let Some(ike) = datagram.strip_prefix(&[0u8; 4]) {
            ike
        } else {
            assert!(datagram.len() >= HEADROOM, "a short ESP packet");
            return;
        };
        let header =
            Header::parse(ike).expect("the session sent an IKE message that does not parse");
        if header.exchange == exchange::IKE_SA_INIT && !header.is_response() {
            self.init_request = Some(ike.to_vec());
        }
        let esp_encr = self.esp_encr();
        if let Some(responder) = self.responder.as_mut() {
            responder.observe(ike, &header, esp_encr);
        }
        if !header.is_response() {
            if header.exchange == exchange::IKE_AUTH {
                self.auth_requests += 1;
            }
            self.last_request = Some(header);
        }
        self.last_sent = Some(header);
    }
}

impl Responder {
    /// Follows the session's message numbers, and its side of a CREATE_CHILD_SA.
    fn observe(&mut self, message: &[u8], header: &Header, esp_encr: Option<Encr>) {
        let current = self.sa.owns(header);
        let sa = match self.old.as_mut() {
            _ if current => &mut self.sa,
            Some(old) if old.owns(header) => old,
            _ => return,
        };
        if header.is_response() {
            sa.next_request = header.message_id.wrapping_add(1);
            if current {
                self.responses += 1;
            }
        } else {
            sa.expected_peer_request = header.message_id.wrapping_add(1);
        }
        if !current || header.exchange != exchange::CREATE_CHILD_SA {
            return;
        }
        let Ok((first, inner)) = self.sa.open(message, header) else {
            return;
        };
        self.theirs = Side::parse(first, &inner, !header.is_response());
        if header.is_response() {
            self.complete(esp_encr);
        } else {
            self.ours = None;
        }
    }

    /// Both sides of a CREATE_CHILD_SA are known: derive what it made, as the session does
    /// (RFC 7296 §2.17 and §2.18, with the old SA's PRF).
    fn complete(&mut self, esp_encr: Option<Encr>) {
        let (Some(ours), Some(theirs)) = (self.ours.take(), self.theirs.take()) else {
            return;
        };
        let kx = self.kx.take();
        if ours.initiator == theirs.initiator || ours.proposal.protocol != theirs.proposal.protocol
        {
            return;
        }
        let (init, resp) = if ours.initiator {
            (&ours, &theirs)
        } else {
            (&theirs, &ours)
        };
        let shared = match (&kx, &theirs.ke) {
            (Some(kx), Some(ke)) => kx.shared(ke.get(4..).unwrap_or_default()),
            _ => None,
        };
        let prf = self.sa.prf;
        let Some(sk_d) = self.sa.keys.as_ref().map(|k| k.sk_d.to_vec()) else {
            return;
        };
        let mut seed: Vec<&[u8]> = Vec::new();
        if let Some(shared) = &shared {
            seed.push(shared);
        }
        seed.push(&init.nonce);
        seed.push(&resp.nonce);
        if theirs.proposal.protocol == protocol::ESP {
            let (Some(encr), Ok(spi)) = (esp_encr, <[u8; 4]>::try_from(&theirs.proposal.spi[..]))
            else {
                return;
            };
            let len = encr.keymat_len();
            let keymat = prf.plus(&sk_d, &seed, 2 * len);
            // The initiator's direction first: the session receives on the other one.
            let key = if theirs.initiator {
                keymat.get(len..)
            } else {
                keymat.get(..len)
            };
            self.child_keys
                .push((u32::from_be_bytes(spi), key.unwrap_or_default().to_vec()));
            return;
        }
        let (Some(shared), Some((encr, _, integ))) = (shared, suite_of(&resp.proposal)) else {
            return;
        };
        let (Ok(spi_i), Ok(spi_r)) = (
            <[u8; 8]>::try_from(&init.proposal.spi[..]),
            <[u8; 8]>::try_from(&resp.proposal.spi[..]),
        ) else {
            return;
        };
        let (spi_i, spi_r) = (u64::from_be_bytes(spi_i), u64::from_be_bytes(spi_r));
        let skeyseed = prf.compute(&sk_d, &[&shared, &init.nonce, &resp.nonce]);
        let Some(keys) = IkeKeys::derive_suite(
            prf,
            encr,
            integ,
            &skeyseed,
            &init.nonce,
            &resp.nonce,
            spi_i,
            spi_r,
        ) else {
            return;
        };
        let mut sa = IkeSa::new(spi_i, prf, encr);
        sa.spi_r = spi_r;
        sa.we_initiated = ours.initiator;
        sa.keys = Some(keys);
        self.old = Some(core::mem::replace(&mut self.sa, sa));
    }

    /// The chain with a correct PSK AUTH payload for its IDr (added after it if missing).
    fn with_auth(&self, psk: &[u8], first: u8, inner: &[u8]) -> Option<(u8, Vec<u8>)> {
        let chain = wire::split_chain(first, inner).ok()?;
        let mut payloads: Vec<(u8, Vec<u8>)> =
            chain.iter().map(|p| (p.kind, p.body.to_vec())).collect();
        let idr_at = payloads
            .iter()
            .position(|(kind, _)| *kind == payload::IDR)?;
        let prf = self.sa.prf;
        let id_mac = prf.compute(&self.sk_pr, &[&payloads[idr_at].1]);
        let octets = [&self.message2[..], &self.ni, &id_mac].concat();
        let pad = prf.compute(psk, &[b"Key Pad for IKEv2"]);
        let auth = prf.compute(&pad, &[&octets]);
        let mut body = vec![2, 0, 0, 0];
        body.extend_from_slice(&auth);
        match payloads.iter().position(|(kind, _)| *kind == payload::AUTH) {
            Some(at) => payloads[at].1 = body,
            None => payloads.insert(idr_at + 1, (payload::AUTH, body)),
        }
        let mut out = Vec::new();
        wire::write_chain(&mut out, &payloads);
        Some((payloads[0].0, out))
    }
}

/// What the harness needs of the session's IKE_SA_INIT.
struct InitRequest {
    spi_i: u64,
    nonce: Vec<u8>,
    ke: Vec<u8>,
    group: DhGroup,
    /// The answer: the first proposal, one transform of each type.
    chosen: WireProposal,
    encr: Encr,
    prf: Prf,
    integ: Option<Integ>,
}

impl InitRequest {
    fn parse(message: &[u8]) -> Option<Self> {
        let header = Header::parse(message).ok()?;
        let chain = wire::split_chain(header.next_payload, message.get(HEADER_LEN..)?).ok()?;
        let body = |kind: u8| chain.iter().find(|p| p.kind == kind).map(|p| p.body);
        let offer = wire::decode_sa(body(payload::SA)?).ok()?;
        let ke_body = body(payload::KE)?;
        let group = DhGroup::from_id(u16::from_be_bytes([*ke_body.first()?, *ke_body.get(1)?]))?;
        let first = offer.first()?;
        let pick = |kind: u8| first.transforms.iter().find(|t| t.kind == kind).copied();
        let encr_t = pick(transform::ENCR)?;
        let prf_t = pick(transform::PRF)?;
        let integ_t = pick(transform::INTEG);
        let ke_t = first
            .transforms
            .iter()
            .find(|t| t.kind == transform::KE && t.id == group.id())
            .copied()?;
        let (encr, prf, integ) = suite_of(first)?;
        let prf = prf?;
        let transforms: Vec<Transform> = [Some(encr_t), Some(prf_t), integ_t, Some(ke_t)]
            .into_iter()
            .flatten()
            .collect();
        Some(Self {
            spi_i: header.spi_i,
            nonce: body(payload::NONCE)?.to_vec(),
            ke: ke_body.get(4..)?.to_vec(),
            group,
            chosen: WireProposal {
                number: first.number,
                protocol: protocol::IKE,
                spi: Vec::new(),
                transforms,
            },
            encr,
            prf,
            integ,
        })
    }
}

/// The chain with the responder's public value in its KE payload, and the key exchange.
fn fill_ke(first: u8, inner: &[u8]) -> Option<(Vec<u8>, KeyExchange)> {
    let chain = wire::split_chain(first, inner).ok()?;
    let mut payloads: Vec<(u8, Vec<u8>)> =
        chain.iter().map(|p| (p.kind, p.body.to_vec())).collect();
    let (_, ke) = payloads.iter_mut().find(|(kind, _)| *kind == payload::KE)?;
    let group = DhGroup::from_id(u16::from_be_bytes([*ke.first()?, *ke.get(1)?]))?;
    let kx = KeyExchange::new(group, RESPONDER_KE_RANDOM)?;
    ke.truncate(4);
    ke.resize(4, 0);
    ke.extend_from_slice(&kx.public());
    let mut out = Vec::new();
    wire::write_chain(&mut out, &payloads);
    Some((out, kx))
}

/// The cipher, PRF and integrity algorithm of a proposal (the first of each).
fn suite_of(proposal: &WireProposal) -> Option<(Encr, Option<Prf>, Option<Integ>)> {
    let pick = |kind: u8| proposal.transforms.iter().find(|t| t.kind == kind);
    let encr = pick(transform::ENCR)?;
    let encr = match (encr.id, encr.key_bits) {
        (20, Some(bits)) => Encr::AesGcm16 { bits },
        (28, _) => Encr::ChaCha20Poly1305,
        (12, Some(bits)) => Encr::AesCbc { bits },
        _ => return None,
    };
    let prf = match pick(transform::PRF).map(|t| t.id) {
        None => None,
        Some(5) => Some(Prf::HmacSha256),
        Some(6) => Some(Prf::HmacSha384),
        Some(7) => Some(Prf::HmacSha512),
        Some(_) => return None,
    };
    let integ = match pick(transform::INTEG).map(|t| t.id) {
        None => None,
        Some(12) => Some(Integ::HmacSha256_128),
        Some(13) => Some(Integ::HmacSha384_192),
        Some(14) => Some(Integ::HmacSha512_256),
        Some(_) => return None,
    };
    Some((encr, prf, integ))
}

/// An IKE_SA_INIT response with `payloads`.
fn init_response(spi_i: u64, spi_r: u64, payloads: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut chain = Vec::new();
    wire::write_chain(&mut chain, payloads);
    let mut message = Vec::with_capacity(HEADER_LEN + chain.len());
    Header {
        spi_i,
        spi_r,
        next_payload: payloads.first().map_or(0, |p| p.0),
        exchange: exchange::IKE_SA_INIT,
        flags: flags::RESPONSE,
        message_id: 0,
        length: u32::try_from(HEADER_LEN + chain.len()).unwrap_or(u32::MAX),
    }
    .write(&mut message);
    message.extend_from_slice(&chain);
    message
}
