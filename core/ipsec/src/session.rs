//! An IPsec session as a [`Tunnel`]: the IKEv2 initiator that sets up one IKE SA and its
//! CHILD_SA with a strongSwan-style road-warrior server, then carries inner packets in ESP over
//! UDP, answering the server's liveness checks, rekeys and deletes.
//!
//! The session talks to one server address over one UDP socket. It starts on the configured
//! port (500 by default, without the non-ESP marker) and moves to 4500 once IKE_SA_INIT is
//! answered (RFC 7296 §2.23): its [`Tunnel::transport`] then names port 4500 and the
//! supervisor opens a new socket there. It always claims to be behind a NAT, so that the server
//! encapsulates ESP in UDP: an unprivileged client cannot receive raw ESP.

use core::ops::Range;
use core::time::Duration;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use erebus_sansio::io::TransportError;
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Failure, Fault, IpNet, Overhead, TransportKind, TransportSpec,
    Tunnel, TunnelConfig, TunnelEvent,
};
use erebus_sansio::{Instant, Seed, SeededRng, WallClock};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::cert::{IkeId, LocalSigner, ServerCheck};
use crate::config::{AuthMethod, Connection};
use crate::crypto::{Aead, KeyExchange, SecretBytes};
use crate::eap::{EapError, EapMschapv2Peer, EapStep};
use crate::esp::{self, Inbound, Outbound};
use crate::ike::{IkeKeys, IkeSa, Outstanding, Purpose, RETRANSMIT_SENDS, retransmit_wait};
use crate::proposal::{DhGroup, Encr, Integ, Prf, Proposal};
use crate::wire::{
    self, Header, Notify, TrafficSelector, Transform, WireProposal, cp, exchange, notify, payload,
    protocol, transform,
};

/// The IKE port that needs no marker.
pub const IKE_PORT: u16 = 500;
/// The NAT-T port every message moves to.
pub const NAT_T_PORT: u16 = 4500;
/// The inner MTU: what fits a 1500-byte path after IPv4, UDP, ESP and the AEAD (strongSwan's
/// TUN uses the same).
pub const INNER_MTU: u16 = 1400;
/// CERT and CERTREQ encoding: an X.509 certificate (signature).
const CERT_X509_SIGNATURE: u8 = 4;
/// AUTH method: shared key message integrity code (PSK, or the EAP MSK).
const AUTH_SHARED_KEY: u8 = 2;
/// AUTH method: digital signature (RFC 7427).
const AUTH_DIGITAL_SIGNATURE: u8 = 14;
/// Nonce length (strongSwan's).
const NONCE_LEN: usize = 32;
/// Idle time after which a NAT keepalive goes out (RFC 3948 §4).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// The liveness check erebus runs when the configuration sets none, so that a proxy left
/// running notices a server that went away.
pub const DEFAULT_DPD_DELAY: Duration = Duration::from_secs(30);
/// The most fragments one message may have (strongSwan sends a few; more is an attack on
/// memory).
const MAX_FRAGMENTS: u16 = 32;
/// The longest IKE message sent whole once the server takes fragments: a 1280-byte IP
/// datagram (strongSwan's `fragment_size`) less the IPv4 and UDP headers and the marker.
const MAX_MESSAGE: usize = 1280 - 20 - 8 - 4;
/// Sends of a liveness check before the server counts as gone (about 24 s).
const DPD_SENDS: u32 = 4;
/// How long a DELETE on shutdown may wait for its answer.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Retries of IKE_SA_INIT after COOKIE or INVALID_KE_PAYLOAD.
const MAX_INIT_RETRIES: u32 = 5;

/// What a session is built from.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The connection, with its secrets.
    pub connection: Connection,
    /// The server's resolved address, with the configured port.
    pub server: SocketAddr,
    /// For certificate validity.
    pub wall_clock: WallClock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// IKE_SA_INIT sent.
    Init,
    /// IKE_AUTH rounds.
    Auth,
    /// The CHILD_SA carries traffic.
    Up,
    /// Our DELETE is out.
    Closing,
    /// Over.
    Down,
}

/// One direction pair of ESP.
#[derive(Debug)]
struct ChildSa {
    inbound: Inbound,
    outbound: Outbound,
    /// Selectors of the remote side, from the server's TSr (what we may send to).
    remote_ts: Vec<TrafficSelector>,
    /// When it was installed: its rekey is due `rekey_time` later.
    established: Instant,
}

/// What the IKE_SA_INIT exchange keeps until the keys exist.
#[derive(Debug)]
struct InitState {
    kx: KeyExchange,
    ni: Vec<u8>,
    cookie: Option<Vec<u8>>,
    retries: u32,
    group: DhGroup,
    /// The NAT_DETECTION_SOURCE_IP hash, once drawn.
    fake_source: Option<[u8; 20]>,
}

/// What IKE_AUTH needs: both IKE_SA_INIT messages and nonces.
#[derive(Default)]
struct AuthState {
    message1: Vec<u8>,
    message2: Vec<u8>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// Our inbound SPI offered for the first CHILD_SA.
    child_spi: u32,
    /// IDi' (type, reserved, data) as sent.
    idi: Vec<u8>,
    /// The MSK once EAP succeeded.
    msk: Option<SecretBytes>,
    /// The server's AUTH has been verified (EAP: in the first response).
    server_verified: bool,
    /// IDr' as the server sent it.
    idr: Vec<u8>,
    /// The EAP-MSCHAPv2 peer, for `local.auth = eap-mschapv2`.
    eap: Option<EapMschapv2Peer>,
}

/// The fragments of one message (RFC 7383), keyed by SA (old or current), message ID and
/// direction.
#[derive(Debug)]
struct Reassembly {
    key: (bool, u32, bool),
    first: u8,
    parts: Vec<Option<Vec<u8>>>,
}

/// A rekey of ours in flight.
#[derive(Debug)]
enum PendingRekey {
    /// CREATE_CHILD_SA for the CHILD_SA.
    Child {
        new_spi: u32,
        ni: Vec<u8>,
        kx: Option<KeyExchange>,
    },
    /// CREATE_CHILD_SA for the IKE SA.
    Ike {
        new_spi: u64,
        ni: Vec<u8>,
        kx: KeyExchange,
    },
}

/// Counters of what the session saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// IKE messages sent, retransmissions included.
    pub ike_sent: u64,
    /// IKE messages accepted.
    pub ike_received: u64,
    /// Retransmissions of our requests.
    pub retransmits: u64,
    /// Liveness checks the server sent us.
    pub dpd_answered: u64,
    /// CHILD_SA rekeys completed (either side).
    pub child_rekeys: u64,
    /// IKE_SA rekeys completed (either side).
    pub ike_rekeys: u64,
    /// NAT keepalives sent.
    pub keepalives: u64,
    /// ESP packets dropped.
    pub esp_dropped: u64,
    /// Authentic ESP packets from outside the CHILD_SA's traffic selectors, dropped.
    pub outside_selectors: u64,
}

/// An IKEv2/ESP session. See the [module documentation](self).
pub struct IpsecSession {
    config: SessionConfig,
    transport: TransportSpec,
    server: SocketAddr,
    rng: SeededRng,
    now: Instant,
    phase: Phase,
    ike: IkeSa,
    old_ike: Option<IkeSa>,
    init: Option<InitState>,
    auth: AuthState,
    child: Option<ChildSa>,
    old_child: Option<ChildSa>,
    /// Our requests waiting for the window (one outstanding at a time).
    queued: VecDeque<Purpose>,
    /// Datagrams to send, without the marker.
    out: VecDeque<Vec<u8>>,
    events: VecDeque<TunnelEvent>,
    last_heard: Instant,
    last_sent: Instant,
    close_deadline: Option<Instant>,
    dpd_delay: Duration,
    server_hashes: Vec<u16>,
    tunnel_config: Option<TunnelConfig>,
    child_proposals: Vec<Proposal>,
    rekey: Option<PendingRekey>,
    /// The server announced IKEV2_FRAGMENTATION_SUPPORTED.
    server_fragments: bool,
    /// Fragments of the message being reassembled.
    reassembly: Option<Reassembly>,
    /// When our rekey of the IKE SA is due.
    ike_rekey_at: Option<Instant>,
    /// Trust anchors and identity for a certificate-authenticated server.
    server_check: Option<ServerCheck>,
    /// Our certificate and key for `local.auth = pubkey`.
    signer: Option<LocalSigner>,
    stats: SessionStats,
}

impl core::fmt::Debug for IpsecSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IpsecSession")
            .field("server", &self.server)
            .field("phase", &self.phase)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The transforms of a configured proposal that this build can do, as wire transforms of
/// one proposal, or `None` when nothing usable is left.
fn wire_transforms(p: &Proposal, ike: bool) -> Option<Vec<Transform>> {
    let mut out = Vec::new();
    // ESP is AEAD only here; IKE also takes AES-CBC with an HMAC-SHA2 integrity algorithm.
    let cbc_ok = ike && !p.integ.is_empty();
    for e in p.encr.iter().filter(|e| e.is_aead() || cbc_ok) {
        out.push(Transform {
            kind: transform::ENCR,
            id: e.id(),
            key_bits: e.key_bits_attribute(),
        });
    }
    if out.is_empty() {
        return None;
    }
    if ike {
        if p.prf.is_empty() {
            return None;
        }
        if p.encr.iter().any(|e| !e.is_aead()) {
            for integ in &p.integ {
                out.push(Transform {
                    kind: transform::INTEG,
                    id: integ.id(),
                    key_bits: None,
                });
            }
        }
        for prf in &p.prf {
            out.push(Transform {
                kind: transform::PRF,
                id: prf.id(),
                key_bits: None,
            });
        }
    }
    let groups: Vec<_> = p.dh.iter().filter(|g| KeyExchange::supports(**g)).collect();
    if ike && groups.is_empty() {
        return None;
    }
    if !ike && !p.dh.is_empty() && groups.is_empty() {
        return None;
    }
    for g in groups {
        out.push(Transform {
            kind: transform::KE,
            id: g.id(),
            key_bits: None,
        });
    }
    if !ike {
        if p.esn.iter().all(|esn| *esn) && !p.esn.is_empty() {
            return None;
        }
        out.push(Transform {
            kind: transform::ESN,
            id: 0,
            key_bits: None,
        });
    }
    Some(out)
}

fn encr_of(t: &Transform) -> Option<Encr> {
    match (t.id, t.key_bits) {
        (20, Some(bits @ (128 | 256))) => Some(Encr::AesGcm16 { bits }),
        (28, None) => Some(Encr::ChaCha20Poly1305),
        (12, Some(bits @ (128 | 256))) => Some(Encr::AesCbc { bits }),
        _ => None,
    }
}

fn integ_of(id: u16) -> Option<Integ> {
    match id {
        12 => Some(Integ::HmacSha256_128),
        13 => Some(Integ::HmacSha384_192),
        14 => Some(Integ::HmacSha512_256),
        _ => None,
    }
}

fn prf_of(id: u16) -> Option<Prf> {
    match id {
        5 => Some(Prf::HmacSha256),
        6 => Some(Prf::HmacSha384),
        7 => Some(Prf::HmacSha512),
        _ => None,
    }
}

/// What the peer chose: one of each transform type.
#[derive(Clone, Copy, Debug)]
struct Chosen {
    encr: Encr,
    prf: Option<Prf>,
    integ: Option<Integ>,
    dh: Option<DhGroup>,
}

/// Checks that `chosen` (the peer's single proposal) is within what we offered.
fn accept_choice(chosen: &WireProposal, offered: &[WireProposal]) -> Option<Chosen> {
    let offer = offered.iter().find(|p| p.number == chosen.number)?;
    let mut encr = None;
    let mut prf = None;
    let mut integ = None;
    let mut dh = None;
    for t in &chosen.transforms {
        if !offer.transforms.contains(t) {
            return None;
        }
        match t.kind {
            transform::ENCR => encr = encr_of(t),
            transform::PRF => prf = prf_of(t.id),
            transform::INTEG => integ = integ_of(t.id),
            transform::KE => dh = DhGroup::from_id(t.id),
            transform::ESN if t.id != 0 => return None,
            _ => {}
        }
    }
    let encr = encr?;
    if !encr.is_aead() && integ.is_none() {
        return None;
    }
    Some(Chosen {
        encr,
        prf,
        integ,
        dh,
    })
}

/// Picks from the server's `offered` proposals (its rekey request) the first that one of
/// ours accepts; returns our answer proposal (its number, our transforms) and the choice.
fn choose_from(
    offered: &[WireProposal],
    ours: &[Vec<Transform>],
    protocol_id: u8,
) -> Option<(WireProposal, Chosen)> {
    for theirs in offered.iter().filter(|p| p.protocol == protocol_id) {
        for mine in ours {
            let mut picked = Vec::new();
            for kind in [
                transform::ENCR,
                transform::PRF,
                transform::INTEG,
                transform::KE,
                transform::ESN,
            ] {
                let their_kind: Vec<_> = theirs
                    .transforms
                    .iter()
                    .filter(|t| t.kind == kind)
                    .collect();
                let my_kind: Vec<_> = mine.iter().filter(|t| t.kind == kind).collect();
                match (their_kind.is_empty(), my_kind.is_empty()) {
                    (true, true) => continue,
                    (false, false) => {
                        if let Some(t) = my_kind.iter().find(|t| their_kind.contains(t)) {
                            picked.push(**t);
                        } else {
                            picked.clear();
                            break;
                        }
                    }
                    _ => {
                        picked.clear();
                        break;
                    }
                }
            }
            if picked.is_empty() {
                continue;
            }
            let answer = WireProposal {
                number: theirs.number,
                protocol: protocol_id,
                spi: theirs.spi.clone(),
                transforms: picked,
            };
            if let Some(chosen) = accept_choice(&answer, core::slice::from_ref(&answer)) {
                return Some((answer, chosen));
            }
        }
    }
    None
}

/// The ID payload body (type, 3 reserved bytes, data) for a configured identity, by
/// strongSwan's rules.
pub fn id_payload(text: &str) -> Vec<u8> {
    let id = IkeId::from_config(text);
    let mut out = vec![id.id_type(), 0, 0, 0];
    out.extend_from_slice(&id.data());
    out
}

fn ke_body(group: DhGroup, kx: &KeyExchange) -> Vec<u8> {
    let mut body = group.id().to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&kx.public());
    body
}

fn ts_to_nets(selectors: &[TrafficSelector]) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for ts in selectors {
        // Cover the range with the largest aligned blocks.
        let mut start = u64::from(u32::from(ts.start));
        let end = u64::from(u32::from(ts.end));
        while start <= end {
            let mut size = if start == 0 {
                1u64 << 32
            } else {
                1u64 << start.trailing_zeros().min(32)
            };
            while start + size - 1 > end {
                size >>= 1;
            }
            let prefix = 32 - size.trailing_zeros() as u8;
            if let Some(net) = IpNet::new(IpAddr::V4(Ipv4Addr::from(start as u32)), prefix) {
                nets.push(net);
            }
            start += size;
            if nets.len() > 64 {
                break;
            }
        }
    }
    nets
}

fn net_to_ts(net: &IpNet) -> Option<TrafficSelector> {
    let IpAddr::V4(addr) = net.addr() else {
        return None;
    };
    let bits = u32::from(net.prefix());
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    let start = u32::from(addr) & mask;
    Some(TrafficSelector {
        start: Ipv4Addr::from(start),
        end: Ipv4Addr::from(start | !mask),
        ..TrafficSelector::ANY
    })
}

impl IpsecSession {
    /// A session to `config.server`, whose first message goes out once the transport is
    /// connected.
    ///
    /// # Errors
    ///
    /// A sentence when the configuration cannot make a session (no usable proposal, a
    /// missing identity or secret).
    pub fn new(config: SessionConfig, seed: &Seed, now: Instant) -> Result<Self, String> {
        let conn = &config.connection;
        if conn.local.id.is_none() {
            return Err(format!(
                "connection '{}': local.id is not set; erebus cannot use its own address as \
                 its identity: set local.id",
                conn.name
            ));
        }
        match conn.local.auth {
            AuthMethod::Psk if conn.psk.is_none() => {
                return Err(format!("connection '{}': no PSK in secrets", conn.name));
            }
            _ => {}
        }
        let child_proposals = conn
            .children
            .first()
            .map(|c| c.esp_proposals.clone())
            .ok_or_else(|| format!("connection '{}' has no children", conn.name))?;
        if !child_proposals
            .iter()
            .any(|p| wire_transforms(p, false).is_some())
        {
            return Err(format!(
                "connection '{}': no ESP proposal erebus supports (it does AES-GCM-16 and \
                 ChaCha20-Poly1305)",
                conn.name
            ));
        }
        let first_group = conn
            .proposals
            .iter()
            .filter(|p| wire_transforms(p, true).is_some())
            .flat_map(|p| p.dh.iter().copied())
            .find(|g| KeyExchange::supports(*g))
            .ok_or_else(|| {
                format!(
                    "connection '{}': no IKE proposal erebus supports (it does AES-GCM-16 or \
                     ChaCha20-Poly1305 with HMAC-SHA2 PRFs and Curve25519)",
                    conn.name
                )
            })?;
        let server_check = match conn.remote.auth {
            AuthMethod::Pubkey | AuthMethod::EapMschapv2 => {
                let cas: Vec<&[u8]> = conn.remote.cacerts.iter().map(|c| c.expose()).collect();
                let expected = conn.remote.id.as_deref().map(IkeId::from_config);
                Some(
                    ServerCheck::new(&cas, expected.as_ref())
                        .map_err(|e| format!("connection '{}': remote.cacerts: {e}", conn.name))?,
                )
            }
            AuthMethod::Psk => None,
        };
        let signer = match conn.local.auth {
            AuthMethod::Pubkey => {
                let certs: Vec<&[u8]> = conn.local.certs.iter().map(|c| c.expose()).collect();
                let key = conn.local.private_key.as_ref().ok_or_else(|| {
                    format!("connection '{}': no private key for local.certs", conn.name)
                })?;
                Some(
                    LocalSigner::new(&certs, key.expose())
                        .map_err(|e| format!("connection '{}': local.certs: {e}", conn.name))?,
                )
            }
            _ => None,
        };
        let eap = match conn.local.auth {
            AuthMethod::EapMschapv2 => {
                let password = conn.eap_password.as_ref().ok_or_else(|| {
                    format!("connection '{}': no EAP password in secrets", conn.name)
                })?;
                let identity = conn
                    .local
                    .eap_id
                    .as_deref()
                    .or(conn.local.id.as_deref())
                    .unwrap_or_default();
                Some(EapMschapv2Peer::new(identity.as_bytes(), password.expose()))
            }
            _ => None,
        };
        let mut rng = seed.child("ipsec.session").rng();
        let spi_i = loop {
            let spi = rng.next_u64();
            if spi != 0 {
                break spi;
            }
        };
        let dpd_delay = if conn.dpd_delay.is_zero() {
            DEFAULT_DPD_DELAY
        } else {
            conn.dpd_delay
        };
        let transport = TransportSpec {
            attempt: 0,
            host: config.server.ip().to_string(),
            port: config.server.port(),
            kind: TransportKind::Udp,
        };
        let kx = KeyExchange::new(first_group, rng.array())
            .ok_or_else(|| format!("key exchange group {first_group} is not available"))?;
        let mut ni = vec![0; NONCE_LEN];
        rng.fill(&mut ni);
        let mut session = Self {
            server: config.server,
            config,
            transport,
            rng,
            now,
            phase: Phase::Init,
            ike: IkeSa::new(spi_i, Prf::HmacSha256, Encr::AesGcm16 { bits: 256 }),
            old_ike: None,
            init: Some(InitState {
                kx,
                ni,
                cookie: None,
                retries: 0,
                group: first_group,
                fake_source: None,
            }),
            auth: AuthState {
                eap,
                ..AuthState::default()
            },
            child: None,
            old_child: None,
            queued: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            last_heard: now,
            last_sent: now,
            close_deadline: None,
            dpd_delay,
            server_hashes: Vec::new(),
            tunnel_config: None,
            child_proposals,
            rekey: None,
            server_fragments: false,
            reassembly: None,
            ike_rekey_at: None,
            server_check,
            signer,
            stats: SessionStats::default(),
        };
        session.send_init();
        Ok(session)
    }

    /// The session's counters.
    pub const fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The IKE SA's SPIs (initiator's, responder's), for tests and status.
    pub const fn ike_spis(&self) -> (u64, u64) {
        (self.ike.spi_i, self.ike.spi_r)
    }

    /// Whether we are the original initiator of the current IKE SA.
    pub const fn is_original_initiator(&self) -> bool {
        self.ike.we_initiated
    }

    /// Our and the server's SPI of the current CHILD_SA.
    pub fn child_spis(&self) -> Option<(u32, u32)> {
        self.child
            .as_ref()
            .map(|c| (c.inbound.spi(), c.outbound.spi()))
    }

    fn marker(&self) -> bool {
        self.transport.port != IKE_PORT
    }

    fn fail(&mut self, fault: Fault, message: impl Into<String>) {
        if self.phase == Phase::Down {
            return;
        }
        let message = message.into();
        tracing::debug!(?fault, %message, "ipsec session down");
        self.phase = Phase::Down;
        self.out.clear();
        self.events
            .push_back(TunnelEvent::Down(Failure::new(fault, message)));
    }

    fn random_spi32(&mut self) -> u32 {
        loop {
            let spi = self.rng.next_u32();
            // 1..255 are reserved (RFC 4303 §2.1).
            if spi > 255 {
                return spi;
            }
        }
    }

    fn nonce(&mut self) -> Vec<u8> {
        let mut n = vec![0; NONCE_LEN];
        self.rng.fill(&mut n);
        n
    }

    fn ike_offer(&self, spi: &[u8], group: DhGroup) -> Vec<WireProposal> {
        let mut out = Vec::new();
        for p in &self.config.connection.proposals {
            let Some(mut transforms) = wire_transforms(p, true) else {
                continue;
            };
            // Only the group of our KE can be accepted without another round trip; the others
            // would be answered with INVALID_KE_PAYLOAD, which we handle, so keep them all but
            // put ours first.
            transforms.sort_by_key(|t| (t.kind, t.kind == transform::KE && t.id != group.id()));
            out.push(WireProposal {
                number: u8::try_from(out.len() + 1).unwrap_or(u8::MAX),
                protocol: protocol::IKE,
                spi: spi.to_vec(),
                transforms,
            });
        }
        out
    }

    fn esp_offer(&self, spi: u32, pfs: Option<DhGroup>) -> Vec<WireProposal> {
        let mut out = Vec::new();
        for p in &self.child_proposals {
            let Some(mut transforms) = wire_transforms(p, false) else {
                continue;
            };
            match pfs {
                // In IKE_AUTH the first CHILD_SA uses the IKE key exchange: no KE transform.
                None => transforms.retain(|t| t.kind != transform::KE),
                Some(group) => {
                    if transforms.iter().any(|t| t.kind == transform::KE) {
                        transforms.retain(|t| t.kind != transform::KE || t.id == group.id());
                    }
                }
            }
            out.push(WireProposal {
                number: u8::try_from(out.len() + 1).unwrap_or(u8::MAX),
                protocol: protocol::ESP,
                spi: spi.to_be_bytes().to_vec(),
                transforms,
            });
        }
        out
    }

    fn nat_hash(&self, ip: IpAddr, port: u16) -> [u8; 20] {
        let mut h = Sha1::new();
        h.update(self.ike.spi_i.to_be_bytes());
        h.update(self.ike.spi_r.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.update(port.to_be_bytes());
        h.finalize().into()
    }

    // ----- IKE_SA_INIT -----

    fn send_init(&mut self) {
        let Some(init) = &self.init else { return };
        let group = init.group;
        let mut payloads: Vec<(u8, Vec<u8>)> = Vec::new();
        if let Some(cookie) = &init.cookie {
            payloads.push((
                payload::NOTIFY,
                Notify::encode(0, &[], notify::COOKIE, cookie),
            ));
        }
        let offer = self.ike_offer(&[], group);
        payloads.push((payload::SA, wire::encode_sa(&offer)));
        let mut ke = group.id().to_be_bytes().to_vec();
        ke.extend_from_slice(&[0, 0]);
        ke.extend_from_slice(&init.kx.public());
        payloads.push((payload::KE, ke));
        payloads.push((payload::NONCE, init.ni.clone()));
        // A source hash over an address that is not ours: the server concludes we are behind
        // a NAT and encapsulates ESP in UDP, which is all an unprivileged socket can receive.
        // Drawn once: a retry after COOKIE must repeat every payload unchanged (RFC 7296 §2.6).
        let source = match init.fake_source {
            Some(source) => source,
            None => {
                let mut fake = [0u8; 4];
                self.rng.fill(&mut fake);
                let fake_port = (self.rng.next_u32() & 0xffff) as u16;
                self.nat_hash(IpAddr::V4(Ipv4Addr::from(fake)), fake_port)
            }
        };
        if let Some(init) = self.init.as_mut() {
            init.fake_source = Some(source);
        }
        let destination = self.nat_hash(self.server.ip(), self.transport.port);
        payloads.push((
            payload::NOTIFY,
            Notify::encode(0, &[], notify::NAT_DETECTION_SOURCE_IP, &source),
        ));
        payloads.push((
            payload::NOTIFY,
            Notify::encode(0, &[], notify::NAT_DETECTION_DESTINATION_IP, &destination),
        ));
        payloads.push((
            payload::NOTIFY,
            Notify::encode(0, &[], notify::IKEV2_FRAGMENTATION_SUPPORTED, &[]),
        ));
        payloads.push((
            payload::NOTIFY,
            Notify::encode(
                0,
                &[],
                notify::SIGNATURE_HASH_ALGORITHMS,
                &[0, 2, 0, 3, 0, 4, 0, 5],
            ),
        ));
        let mut body = Vec::new();
        wire::write_chain(&mut body, &payloads);
        let mut msg = Vec::with_capacity(wire::HEADER_LEN + body.len());
        Header {
            spi_i: self.ike.spi_i,
            spi_r: 0,
            next_payload: payloads.first().map_or(0, |p| p.0),
            exchange: exchange::IKE_SA_INIT,
            flags: self.ike.flags(false),
            message_id: 0,
            length: u32::try_from(wire::HEADER_LEN + body.len()).unwrap_or(0),
        }
        .write(&mut msg);
        msg.extend_from_slice(&body);
        self.auth.message1.clone_from(&msg);
        self.ike.next_request = 1;
        self.start_request(0, Purpose::Init, vec![msg]);
    }

    fn start_request(&mut self, id: u32, purpose: Purpose, datagrams: Vec<Vec<u8>>) {
        for d in &datagrams {
            self.out.push_back(d.clone());
        }
        self.stats.ike_sent += datagrams.len() as u64;
        self.ike.outstanding = Some(Outstanding {
            id,
            purpose,
            datagrams,
            retransmit_at: self.now + retransmit_wait(1),
            sends: 1,
        });
    }

    fn on_init_response(&mut self, msg: &[u8], header: &Header) -> Result<(), DropReason> {
        let chain = wire::split_chain(
            header.next_payload,
            msg.get(wire::HEADER_LEN..).unwrap_or_default(),
        )
        .map_err(|_| DropReason::Malformed)?;
        let Some(init) = self.init.as_mut() else {
            return Err(DropReason::NotReady);
        };
        let mut sa = None;
        let mut ke = None;
        let mut nr = None;
        for p in &chain {
            match p.kind {
                payload::NOTIFY => {
                    let n = Notify::parse(p.body).map_err(|_| DropReason::Malformed)?;
                    match n.kind {
                        notify::COOKIE => {
                            if init.retries >= MAX_INIT_RETRIES {
                                self.fail(
                                    Fault::PeerMisbehaved,
                                    "the server keeps asking for a cookie",
                                );
                                return Ok(());
                            }
                            init.retries += 1;
                            init.cookie = Some(n.data.to_vec());
                            self.ike.outstanding = None;
                            self.send_init();
                            return Ok(());
                        }
                        notify::INVALID_KE_PAYLOAD => {
                            let wanted = n
                                .data
                                .get(..2)
                                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                                .and_then(DhGroup::from_id);
                            let offered = self
                                .config
                                .connection
                                .proposals
                                .iter()
                                .any(|p| wanted.is_some_and(|g| p.dh.contains(&g)));
                            match wanted {
                                Some(group)
                                    if offered
                                        && KeyExchange::supports(group)
                                        && init.retries < MAX_INIT_RETRIES =>
                                {
                                    init.retries += 1;
                                    init.group = group;
                                    let random = self.rng.array();
                                    if let (Some(init), Some(kx)) =
                                        (self.init.as_mut(), KeyExchange::new(group, random))
                                    {
                                        init.kx = kx;
                                    }
                                    self.ike.outstanding = None;
                                    self.send_init();
                                }
                                _ => self.fail(
                                    Fault::PeerIncompatible,
                                    "the server wants a key exchange group erebus cannot offer \
                                     (INVALID_KE_PAYLOAD)",
                                ),
                            }
                            return Ok(());
                        }
                        kind if kind < 16384 => {
                            let name = notify::name(kind);
                            let fault = if kind == notify::NO_PROPOSAL_CHOSEN {
                                Fault::PeerIncompatible
                            } else {
                                Fault::PeerMisbehaved
                            };
                            self.fail(fault, format!("the server refused IKE_SA_INIT: {name}"));
                            return Ok(());
                        }
                        notify::IKEV2_FRAGMENTATION_SUPPORTED => self.server_fragments = true,
                        notify::SIGNATURE_HASH_ALGORITHMS => {
                            self.server_hashes = n
                                .data
                                .chunks_exact(2)
                                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                                .collect();
                        }
                        _ => {}
                    }
                }
                payload::SA => {
                    sa = Some(wire::decode_sa(p.body).map_err(|_| DropReason::Malformed)?)
                }
                payload::KE => ke = Some(p.body),
                payload::NONCE => nr = Some(p.body),
                _ if p.critical => {
                    self.fail(
                        Fault::PeerIncompatible,
                        "the server sent a critical payload erebus does not know",
                    );
                    return Ok(());
                }
                _ => {}
            }
        }
        let (Some(sa), Some(ke), Some(nr)) = (sa, ke, nr) else {
            return Err(DropReason::Malformed);
        };
        if !(16..=256).contains(&nr.len()) || header.spi_r == 0 {
            return Err(DropReason::Malformed);
        }
        let Some(init) = self.init.as_ref() else {
            return Err(DropReason::NotReady);
        };
        let offer = self.ike_offer(&[], init.group);
        let Some(chosen) = sa
            .first()
            .filter(|_| sa.len() == 1)
            .and_then(|p| accept_choice(p, &offer))
        else {
            self.fail(
                Fault::PeerMisbehaved,
                "the server chose an IKE proposal erebus did not offer",
            );
            return Ok(());
        };
        let (Some(prf), Some(group)) = (chosen.prf, chosen.dh) else {
            self.fail(
                Fault::PeerMisbehaved,
                "the server's IKE proposal lacks a PRF or a group",
            );
            return Ok(());
        };
        let ke_group = ke.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        if group != init.group || ke_group != Some(group.id()) {
            return Err(DropReason::Malformed);
        }
        let Some(shared) = init.kx.shared(ke.get(4..).unwrap_or_default()) else {
            self.fail(
                Fault::PeerMisbehaved,
                "the server's key exchange value is invalid",
            );
            return Ok(());
        };
        let ni = init.ni.clone();
        let skeyseed = prf.compute(&[&ni[..], nr].concat(), &[&shared]);
        let Some(keys) = IkeKeys::derive_suite(
            prf,
            chosen.encr,
            chosen.integ,
            &skeyseed,
            &ni,
            nr,
            self.ike.spi_i,
            header.spi_r,
        ) else {
            self.fail(Fault::PeerMisbehaved, "cannot derive the IKE keys");
            return Ok(());
        };
        self.ike.spi_r = header.spi_r;
        self.ike.prf = prf;
        self.ike.encr = chosen.encr;
        self.ike.keys = Some(keys);
        self.ike.outstanding = None;
        self.auth.message2 = msg.to_vec();
        self.auth.ni = ni;
        self.auth.nr = nr.to_vec();
        self.init = None;
        self.phase = Phase::Auth;
        tracing::debug!(encr = %chosen.encr, %prf, %group, "IKE_SA_INIT done");
        if self.transport.port == IKE_PORT {
            // Float to 4500 (RFC 7296 §2.23): the supervisor opens a socket there.
            self.transport.port = NAT_T_PORT;
            self.server.set_port(NAT_T_PORT);
        }
        self.send_auth_first();
        Ok(())
    }

    // ----- IKE_AUTH -----

    fn auth_octets(&self, message: &[u8], nonce: &[u8], key: &[u8], id: &[u8]) -> Vec<u8> {
        let mac = self.ike.prf.compute(key, &[id]);
        [message, nonce, &mac[..]].concat()
    }

    fn shared_key_auth(&self, secret: &[u8], octets: &[u8]) -> SecretBytes {
        let pad = self.ike.prf.compute(secret, &[b"Key Pad for IKEv2"]);
        self.ike.prf.compute(&pad, &[octets])
    }

    fn send_auth_first(&mut self) {
        let conn = self.config.connection.clone();
        let Some(local_id) = conn.local.id.as_deref() else {
            return;
        };
        let idi = id_payload(local_id);
        self.auth.idi.clone_from(&idi);
        let child_spi = self.random_spi32();
        self.auth.child_spi = child_spi;
        let mut payloads: Vec<(u8, Vec<u8>)> = vec![(payload::IDI, idi.clone())];
        if let Some(signer) = &self.signer {
            let mut cert = vec![CERT_X509_SIGNATURE];
            cert.extend_from_slice(signer.certificate_der());
            payloads.push((payload::CERT, cert));
            for intermediate in signer.intermediates_der() {
                let mut cert = vec![CERT_X509_SIGNATURE];
                cert.extend_from_slice(intermediate);
                payloads.push((payload::CERT, cert));
            }
        }
        payloads.push((
            payload::NOTIFY,
            Notify::encode(0, &[], notify::INITIAL_CONTACT, &[]),
        ));
        if let Some(check) = &self.server_check {
            // strongSwan sends its certificate only when asked: a CERTREQ naming our CAs asks.
            let mut req = vec![CERT_X509_SIGNATURE];
            for keyid in check.ca_keyids() {
                req.extend_from_slice(&keyid);
            }
            payloads.push((payload::CERTREQ, req));
        }
        if let Some(remote_id) = conn.remote.id.as_deref() {
            payloads.push((payload::IDR, id_payload(remote_id)));
        }
        let Some(keys) = self.ike.keys.as_ref() else {
            return;
        };
        let octets = self.auth_octets(&self.auth.message1, &self.auth.nr, &keys.sk_pi, &idi);
        match conn.local.auth {
            AuthMethod::Psk => {
                let psk = conn
                    .psk
                    .as_ref()
                    .map(|s| s.expose().to_vec())
                    .unwrap_or_default();
                let auth = self.shared_key_auth(&psk, &octets);
                let mut body = vec![AUTH_SHARED_KEY, 0, 0, 0];
                body.extend_from_slice(&auth);
                payloads.push((payload::AUTH, body));
            }
            AuthMethod::Pubkey => {
                let Some(signer) = &self.signer else {
                    return;
                };
                match signer.sign_auth(&self.server_hashes, &octets) {
                    Ok(data) => {
                        let mut body = vec![AUTH_DIGITAL_SIGNATURE, 0, 0, 0];
                        body.extend_from_slice(&data);
                        payloads.push((payload::AUTH, body));
                    }
                    Err(e) => {
                        return self.fail(
                            Fault::PeerIncompatible,
                            format!("cannot sign our AUTH: {e}"),
                        );
                    }
                }
            }
            // No AUTH: the server starts EAP (RFC 7296 §2.16).
            AuthMethod::EapMschapv2 => {}
        }
        let vip = conn.vips.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let address = if vip.is_unspecified() {
            Vec::new()
        } else {
            vip.octets().to_vec()
        };
        payloads.push((
            payload::CP,
            wire::encode_cp(
                cp::REQUEST,
                &[(cp::IP4_ADDRESS, address), (cp::IP4_DNS, Vec::new())],
            ),
        ));
        payloads.push((
            payload::SA,
            wire::encode_sa(&self.esp_offer(child_spi, None)),
        ));
        payloads.push((payload::TSI, wire::encode_ts(&[TrafficSelector::ANY])));
        payloads.push((payload::TSR, wire::encode_ts(&self.requested_remote_ts())));
        self.send_request(exchange::IKE_AUTH, Purpose::Auth, &payloads);
    }

    fn requested_remote_ts(&self) -> Vec<TrafficSelector> {
        let ts: Vec<_> = self
            .config
            .connection
            .children
            .first()
            .map(|c| c.remote_ts.iter().filter_map(net_to_ts).collect())
            .unwrap_or_default();
        if ts.is_empty() {
            vec![TrafficSelector::ANY]
        } else {
            ts
        }
    }

    /// Sends a request on the current IKE SA.
    fn send_request(&mut self, exchange_type: u8, purpose: Purpose, payloads: &[(u8, Vec<u8>)]) {
        let id = self.ike.next_request;
        let Some(datagrams) = self.seal_message(false, exchange_type, false, id, payloads) else {
            return self.fail(Fault::PeerMisbehaved, "cannot encrypt an IKE message");
        };
        self.ike.next_request = id.wrapping_add(1);
        self.start_request(id, purpose, datagrams);
    }

    fn on_auth_response(&mut self, first: u8, inner: &[u8]) -> Result<(), DropReason> {
        let chain = wire::split_chain(first, inner).map_err(|_| DropReason::Malformed)?;
        let mut idr = None;
        let mut auth = None;
        let mut certs: Vec<&[u8]> = Vec::new();
        let mut eap = None;
        let mut sa = None;
        let mut tsi = None;
        let mut tsr = None;
        let mut cfg = None;
        let mut error = None;
        for p in &chain {
            match p.kind {
                payload::IDR => idr = Some(p.body),
                payload::AUTH => auth = Some(p.body),
                payload::CERT if p.body.first() == Some(&CERT_X509_SIGNATURE) => {
                    certs.push(p.body.get(1..).unwrap_or_default());
                }
                payload::EAP => eap = Some(p.body),
                payload::SA => {
                    sa = Some(wire::decode_sa(p.body).map_err(|_| DropReason::Malformed)?);
                }
                payload::TSI => {
                    tsi = Some(wire::decode_ts(p.body).map_err(|_| DropReason::Malformed)?);
                }
                payload::TSR => {
                    tsr = Some(wire::decode_ts(p.body).map_err(|_| DropReason::Malformed)?);
                }
                payload::CP => {
                    cfg = Some(wire::decode_cp(p.body).map_err(|_| DropReason::Malformed)?);
                }
                payload::NOTIFY => {
                    let n = Notify::parse(p.body).map_err(|_| DropReason::Malformed)?;
                    if n.kind < 16384 && error.is_none() {
                        error = Some(n.kind);
                    }
                }
                _ if p.critical => {
                    self.fail(
                        Fault::PeerIncompatible,
                        "the server sent a critical payload erebus does not know",
                    );
                    return Ok(());
                }
                _ => {}
            }
        }
        if error == Some(notify::AUTHENTICATION_FAILED) {
            let what = match self.config.connection.local.auth {
                AuthMethod::Psk => "check the PSK and local.id",
                AuthMethod::EapMschapv2 => "check the EAP identity and password",
                AuthMethod::Pubkey => "check our certificate and local.id",
            };
            self.fail(
                Fault::Auth,
                format!("the server refused our authentication (AUTHENTICATION_FAILED): {what}"),
            );
            return Ok(());
        }
        if !self.auth.server_verified {
            let (Some(idr), Some(auth)) = (idr, auth) else {
                if let Some(kind) = error {
                    self.fail(
                        Fault::PeerMisbehaved,
                        format!("the server refused IKE_AUTH: {}", notify::name(kind)),
                    );
                    return Ok(());
                }
                return Err(DropReason::Malformed);
            };
            self.verify_server(idr, auth, &certs);
            if self.phase == Phase::Down {
                return Ok(());
            }
            self.auth.idr = idr.to_vec();
        } else if self.auth.msk.is_some() {
            // The last round of EAP: the server's AUTH from the MSK.
            let Some(auth) = auth else {
                return Err(DropReason::Malformed);
            };
            let Some(keys) = self.ike.keys.as_ref() else {
                return Err(DropReason::NotReady);
            };
            let octets = self.auth_octets(
                &self.auth.message2,
                &self.auth.ni,
                &keys.sk_pr,
                &self.auth.idr,
            );
            let msk = self.auth.msk.clone().unwrap_or_default();
            let expected = self.shared_key_auth(&msk, &octets);
            let data = auth.get(4..).unwrap_or_default();
            if auth.first() != Some(&AUTH_SHARED_KEY)
                || !bool::from(expected.as_slice().ct_eq(data))
            {
                self.fail(Fault::Auth, "the server's AUTH after EAP does not verify");
                return Ok(());
            }
        }
        if self.config.connection.local.auth == AuthMethod::EapMschapv2 && self.auth.msk.is_none() {
            let Some(packet) = eap else {
                self.fail(Fault::PeerMisbehaved, "the server did not start EAP");
                return Ok(());
            };
            return self.on_eap(packet);
        }
        if let Some(kind) = error {
            self.fail(
                Fault::PeerIncompatible,
                format!("the server set up no CHILD_SA: {}", notify::name(kind)),
            );
            return Ok(());
        }
        let (Some(sa), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            self.fail(
                Fault::PeerMisbehaved,
                "the server's IKE_AUTH answer has no CHILD_SA",
            );
            return Ok(());
        };
        let offer = self.esp_offer(self.auth.child_spi, None);
        let Some((chosen, their_spi)) = sa
            .first()
            .filter(|_| sa.len() == 1)
            .and_then(|p| Some((accept_choice(p, &offer)?, p.spi.clone())))
        else {
            self.fail(
                Fault::PeerMisbehaved,
                "the server chose an ESP proposal erebus did not offer",
            );
            return Ok(());
        };
        let Ok(their_spi) = <[u8; 4]>::try_from(their_spi.as_slice()).map(u32::from_be_bytes)
        else {
            return Err(DropReason::Malformed);
        };
        let Some(keys) = self.ike.keys.as_ref() else {
            return Err(DropReason::NotReady);
        };
        let seed = [&self.auth.ni[..], &self.auth.nr[..]];
        let Some(child) = self.make_child(
            &keys.sk_d.clone(),
            &seed,
            true,
            chosen.encr,
            self.auth.child_spi,
            their_spi,
            tsr,
        ) else {
            self.fail(Fault::PeerMisbehaved, "cannot derive the ESP keys");
            return Ok(());
        };
        let mut config = TunnelConfig {
            mtu: INNER_MTU,
            cipher: Some(chosen.encr.to_string()),
            ..TunnelConfig::default()
        };
        if let Some((_, attributes)) = cfg {
            for (kind, value) in attributes {
                let Ok(octets) = <[u8; 4]>::try_from(value) else {
                    continue;
                };
                let addr = Ipv4Addr::from(octets);
                match kind {
                    cp::IP4_ADDRESS if config.ipv4.is_none() => {
                        config.ipv4 = Some(IpNet::host(IpAddr::V4(addr)));
                    }
                    cp::IP4_DNS => config.dns_servers.push(IpAddr::V4(addr)),
                    _ => {}
                }
            }
        }
        if config.ipv4.is_none() {
            // No virtual IP: our address is what the server narrowed TSi to, if a single one.
            if let Some(ts) = tsi.first().filter(|ts| ts.start == ts.end) {
                config.ipv4 = Some(IpNet::host(IpAddr::V4(ts.start)));
            } else {
                self.fail(
                    Fault::PeerIncompatible,
                    "the server assigned no virtual IP (set vips = 0.0.0.0 and a pool on the server)",
                );
                return Ok(());
            }
        }
        config.routes = ts_to_nets(&child.remote_ts);
        self.child = Some(child);
        self.phase = Phase::Up;
        self.ike_rekey_at = self.after(self.config.connection.rekey_time);
        self.auth = AuthState::default();
        self.tunnel_config = Some(config.clone());
        self.events.push_back(TunnelEvent::Up(config));
        Ok(())
    }

    fn on_eap(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        let challenge: [u8; 16] = self.rng.array();
        let Some(peer) = self.auth.eap.as_mut() else {
            self.fail(Fault::Config, "no EAP password");
            return Ok(());
        };
        match peer.handle(packet, challenge) {
            Ok(EapStep::Respond(answer)) => {
                self.send_request(exchange::IKE_AUTH, Purpose::Auth, &[(payload::EAP, answer)]);
            }
            Ok(EapStep::Success) => {
                let msk = SecretBytes::new(peer.msk().unwrap_or_default().to_vec());
                let Some(keys) = self.ike.keys.as_ref() else {
                    return Err(DropReason::NotReady);
                };
                let octets = self.auth_octets(
                    &self.auth.message1,
                    &self.auth.nr,
                    &keys.sk_pi,
                    &self.auth.idi,
                );
                let auth = self.shared_key_auth(&msk, &octets);
                self.auth.msk = Some(msk);
                let mut body = vec![AUTH_SHARED_KEY, 0, 0, 0];
                body.extend_from_slice(&auth);
                self.send_request(exchange::IKE_AUTH, Purpose::Auth, &[(payload::AUTH, body)]);
            }
            Err(error @ (EapError::Failure(_) | EapError::AuthenticatorMismatch)) => {
                self.fail(Fault::Auth, format!("EAP-MSCHAPv2: {error}"));
            }
            Err(error) => self.fail(Fault::PeerMisbehaved, format!("EAP-MSCHAPv2: {error}")),
        }
        Ok(())
    }

    /// Checks the server's identity and its AUTH from the first IKE_AUTH response; fails the
    /// session when they do not hold.
    fn verify_server(&mut self, idr: &[u8], auth: &[u8], certs: &[&[u8]]) {
        let conn = &self.config.connection;
        let Some(keys) = self.ike.keys.as_ref() else {
            return;
        };
        let octets = self.auth_octets(&self.auth.message2, &self.auth.ni, &keys.sk_pr, idr);
        let method = auth.first().copied().unwrap_or(0);
        let data = auth.get(4..).unwrap_or_default();
        let outcome: Result<(), String> = match conn.remote.auth {
            AuthMethod::Psk => {
                let id_ok = conn
                    .remote
                    .id
                    .as_deref()
                    .is_none_or(|expected| id_payload(expected) == idr);
                let psk = conn
                    .psk
                    .as_ref()
                    .map(|s| s.expose().to_vec())
                    .unwrap_or_default();
                let expected = self.shared_key_auth(&psk, &octets);
                if !id_ok {
                    Err(format!(
                        "the server's identity is not '{}' (remote.id)",
                        conn.remote.id.as_deref().unwrap_or_default()
                    ))
                } else if method != AUTH_SHARED_KEY {
                    Err(format!(
                        "the server authenticated with AUTH method {method}, but remote.auth is psk"
                    ))
                } else if !bool::from(expected.as_slice().ct_eq(data)) {
                    Err("the server's AUTH does not verify: it does not know our PSK".into())
                } else {
                    Ok(())
                }
            }
            AuthMethod::Pubkey | AuthMethod::EapMschapv2 => {
                let now_unix = self.config.wall_clock.at(self.now).as_secs();
                match (&self.server_check, certs.split_first()) {
                    (None, _) => {
                        Err("no CA to check the server's certificate (remote.cacerts)".into())
                    }
                    (Some(_), None) => Err(
                        "the server sent no certificate, though we asked for one (CERTREQ)".into(),
                    ),
                    (Some(check), Some((end_entity, intermediates))) => {
                        let id = IkeId::parse(
                            idr.first().copied().unwrap_or(0),
                            idr.get(4..).unwrap_or_default(),
                        );
                        id.and_then(|id| check.verify(end_entity, intermediates, &id, now_unix))
                            .and_then(|peer| peer.verify_auth(method, data, &octets))
                            .map_err(|e| e.to_string())
                    }
                }
            }
        };
        match outcome {
            Ok(()) => self.auth.server_verified = true,
            Err(message) => self.fail(Fault::Auth, message),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn make_child(
        &self,
        sk_d: &[u8],
        seed: &[&[u8]],
        we_initiated_exchange: bool,
        encr: Encr,
        our_spi: u32,
        their_spi: u32,
        remote_ts: Vec<TrafficSelector>,
    ) -> Option<ChildSa> {
        let len = encr.keymat_len();
        let keymat = self.ike.prf.plus(sk_d, seed, 2 * len);
        let first = Aead::new(encr, keymat.get(..len)?)?;
        let second = Aead::new(encr, keymat.get(len..2 * len)?)?;
        // Keys for the exchange initiator's direction come first (RFC 7296 §2.17).
        let (out_key, in_key) = if we_initiated_exchange {
            (first, second)
        } else {
            (second, first)
        };
        Some(ChildSa {
            inbound: Inbound::new(our_spi, in_key, self.replay_window()),
            outbound: Outbound::new(their_spi, out_key),
            remote_ts,
            established: self.now,
        })
    }

    // ----- after IKE_AUTH -----

    fn respond(&mut self, old: bool, exchange_type: u8, id: u32, payloads: &[(u8, Vec<u8>)]) {
        let Some(datagrams) = self.seal_message(old, exchange_type, true, id, payloads) else {
            return;
        };
        let Some(sa) = self.sa_mut(old) else {
            return;
        };
        sa.expected_peer_request = id.wrapping_add(1);
        sa.last_response = Some((id, datagrams.clone()));
        self.stats.ike_sent += datagrams.len() as u64;
        self.out.extend(datagrams);
    }

    fn on_request(
        &mut self,
        old: bool,
        header: &Header,
        first: u8,
        inner: &[u8],
    ) -> Result<(), DropReason> {
        let chain = wire::split_chain(first, inner).map_err(|_| DropReason::Malformed)?;
        let id = header.message_id;
        match header.exchange {
            exchange::INFORMATIONAL => {
                let mut answer: Vec<(u8, Vec<u8>)> = Vec::new();
                let mut ike_deleted = false;
                for p in &chain {
                    if p.kind != payload::DELETE {
                        continue;
                    }
                    let (proto, spis) =
                        wire::decode_delete(p.body).map_err(|_| DropReason::Malformed)?;
                    if proto == protocol::IKE {
                        ike_deleted = true;
                    } else if proto == protocol::ESP {
                        let mut ours = Vec::new();
                        for spi in spis {
                            let Ok(spi) =
                                <[u8; 4]>::try_from(spi.as_slice()).map(u32::from_be_bytes)
                            else {
                                continue;
                            };
                            if self
                                .old_child
                                .as_ref()
                                .is_some_and(|c| c.outbound.spi() == spi)
                            {
                                if let Some(c) = self.old_child.take() {
                                    ours.push(c.inbound.spi().to_be_bytes());
                                }
                            } else if self.child.as_ref().is_some_and(|c| c.outbound.spi() == spi)
                                && let Some(c) = self.child.take()
                            {
                                ours.push(c.inbound.spi().to_be_bytes());
                            }
                        }
                        if !ours.is_empty() {
                            let refs: Vec<&[u8]> = ours.iter().map(|s| &s[..]).collect();
                            answer
                                .push((payload::DELETE, wire::encode_delete(protocol::ESP, &refs)));
                        }
                    }
                }
                if chain.is_empty() {
                    self.stats.dpd_answered += 1;
                }
                self.respond(old, exchange::INFORMATIONAL, id, &answer);
                if ike_deleted {
                    if old {
                        self.old_ike = None;
                    } else {
                        self.fail(Fault::Closed, "the server closed the IKE SA");
                    }
                } else if self.child.is_none() && self.phase == Phase::Up {
                    self.fail(Fault::Closed, "the server deleted the CHILD_SA");
                }
            }
            exchange::CREATE_CHILD_SA if !old => self.on_create_child(id, &chain)?,
            _ => {
                // Nothing else is expected of a client: answer so the server's window moves.
                self.respond(
                    old,
                    header.exchange,
                    id,
                    &[(
                        payload::NOTIFY,
                        Notify::encode(0, &[], notify::NO_PROPOSAL_CHOSEN, &[]),
                    )],
                );
            }
        }
        Ok(())
    }

    fn on_create_child(
        &mut self,
        id: u32,
        chain: &[wire::RawPayload<'_>],
    ) -> Result<(), DropReason> {
        let mut rekey_spi = None;
        let mut sa = None;
        let mut ni = None;
        let mut ke = None;
        let mut tsi = None;
        let mut tsr = None;
        for p in chain {
            match p.kind {
                payload::NOTIFY => {
                    let n = Notify::parse(p.body).map_err(|_| DropReason::Malformed)?;
                    if n.kind == notify::REKEY_SA {
                        rekey_spi = <[u8; 4]>::try_from(n.spi).ok().map(u32::from_be_bytes);
                    }
                }
                payload::SA => {
                    sa = Some(wire::decode_sa(p.body).map_err(|_| DropReason::Malformed)?)
                }
                payload::NONCE => ni = Some(p.body.to_vec()),
                payload::KE => ke = Some(p.body.to_vec()),
                payload::TSI => tsi = Some(p.body.to_vec()),
                payload::TSR => tsr = Some(p.body.to_vec()),
                _ => {}
            }
        }
        let (Some(sa), Some(ni)) = (sa, ni) else {
            return Err(DropReason::Malformed);
        };
        let refuse = |this: &mut Self, kind: u16| {
            this.respond(
                false,
                exchange::CREATE_CHILD_SA,
                id,
                &[(payload::NOTIFY, Notify::encode(0, &[], kind, &[]))],
            );
            Ok(())
        };
        if self.rekey.is_some() {
            // Our own rekey is in flight: the server retries after it (RFC 7296 §2.25).
            return refuse(self, notify::TEMPORARY_FAILURE);
        }
        let is_ike = sa.iter().any(|p| p.protocol == protocol::IKE);
        let nr = self.nonce();
        if is_ike {
            let ours: Vec<Vec<Transform>> = self
                .config
                .connection
                .proposals
                .iter()
                .filter_map(|p| wire_transforms(p, true))
                .collect();
            let Some((mut answer, chosen)) = choose_from(&sa, &ours, protocol::IKE) else {
                return refuse(self, notify::NO_PROPOSAL_CHOSEN);
            };
            let (Some(prf), Some(group), Some(ke)) = (chosen.prf, chosen.dh, ke) else {
                return refuse(self, notify::INVALID_SYNTAX);
            };
            let their_spi = <[u8; 8]>::try_from(answer.spi.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| DropReason::Malformed)?;
            if ke.get(..2) != Some(&group.id().to_be_bytes()[..]) {
                return self.respond_invalid_ke(id, group);
            }
            let Some(kx) = KeyExchange::new(group, self.rng.array()) else {
                return refuse(self, notify::NO_PROPOSAL_CHOSEN);
            };
            let Some(shared) = kx.shared(ke.get(4..).unwrap_or_default()) else {
                return refuse(self, notify::INVALID_SYNTAX);
            };
            let our_spi = self.rng.next_u64() | 1;
            answer.spi = our_spi.to_be_bytes().to_vec();
            let mut ke_out = group.id().to_be_bytes().to_vec();
            ke_out.extend_from_slice(&[0, 0]);
            ke_out.extend_from_slice(&kx.public());
            self.respond(
                false,
                exchange::CREATE_CHILD_SA,
                id,
                &[
                    (payload::SA, wire::encode_sa(&[answer])),
                    (payload::NONCE, nr.clone()),
                    (payload::KE, ke_out),
                ],
            );
            // The server started the rekey: it is the original initiator of the new SA.
            let Some(old_keys) = self.ike.keys.as_ref() else {
                return Err(DropReason::NotReady);
            };
            let old_prf = self.ike.prf;
            let skeyseed = old_prf.compute(&old_keys.sk_d, &[&shared, &ni, &nr]);
            let Some(keys) = IkeKeys::derive_suite(
                old_prf,
                chosen.encr,
                chosen.integ,
                &skeyseed,
                &ni,
                &nr,
                their_spi,
                our_spi,
            ) else {
                return Err(DropReason::Malformed);
            };
            let _ = prf;
            let mut new_sa = IkeSa::new(their_spi, old_prf, chosen.encr);
            new_sa.spi_r = our_spi;
            new_sa.we_initiated = false;
            new_sa.keys = Some(keys);
            let old = core::mem::replace(&mut self.ike, new_sa);
            self.old_ike = Some(old);
            self.stats.ike_rekeys += 1;
            self.ike_rekey_at = self.after(self.config.connection.rekey_time);
            tracing::debug!("IKE SA rekeyed by the server");
            return Ok(());
        }
        let Some(old_spi) = rekey_spi else {
            return refuse(self, notify::NO_ADDITIONAL_SAS);
        };
        if self
            .child
            .as_ref()
            .is_none_or(|c| c.outbound.spi() != old_spi)
        {
            return refuse(self, notify::CHILD_SA_NOT_FOUND);
        }
        let new_spi = self.random_spi32();
        let ours: Vec<Vec<Transform>> = self
            .esp_offer(new_spi, None)
            .into_iter()
            .map(|p| p.transforms)
            .collect();
        let with_pfs: Vec<Vec<Transform>> = self
            .child_proposals
            .iter()
            .filter_map(|p| wire_transforms(p, false))
            .filter(|t| t.iter().any(|t| t.kind == transform::KE))
            .collect();
        // Prefer what the server offers first among ours, PFS or not.
        let candidates: Vec<Vec<Transform>> = with_pfs.into_iter().chain(ours).collect();
        let Some((mut answer, chosen)) = choose_from(&sa, &candidates, protocol::ESP) else {
            return refuse(self, notify::NO_PROPOSAL_CHOSEN);
        };
        let their_spi = <[u8; 4]>::try_from(answer.spi.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| DropReason::Malformed)?;
        answer.spi = new_spi.to_be_bytes().to_vec();
        let mut reply = vec![
            (payload::SA, wire::encode_sa(&[answer])),
            (payload::NONCE, nr.clone()),
        ];
        let mut shared = None;
        if let Some(group) = chosen.dh {
            let Some(ke) = ke.filter(|k| k.get(..2) == Some(&group.id().to_be_bytes()[..])) else {
                return self.respond_invalid_ke(id, group);
            };
            let Some(kx) = KeyExchange::new(group, self.rng.array()) else {
                return refuse(self, notify::NO_PROPOSAL_CHOSEN);
            };
            shared = Some(
                kx.shared(ke.get(4..).unwrap_or_default())
                    .ok_or(DropReason::Malformed)?,
            );
            let mut ke_out = group.id().to_be_bytes().to_vec();
            ke_out.extend_from_slice(&[0, 0]);
            ke_out.extend_from_slice(&kx.public());
            reply.push((payload::KE, ke_out));
        }
        // TSi/TSr as the requester wrote them: its view, which the answer repeats.
        let (Some(tsi), Some(tsr)) = (tsi, tsr) else {
            return Err(DropReason::Malformed);
        };
        let remote_ts = wire::decode_ts(&tsi).map_err(|_| DropReason::Malformed)?;
        reply.push((payload::TSI, tsi));
        reply.push((payload::TSR, tsr));
        let Some(sk_d) = self.ike.keys.as_ref().map(|k| k.sk_d.clone()) else {
            return Err(DropReason::NotReady);
        };
        let mut seed: Vec<&[u8]> = Vec::new();
        if let Some(s) = &shared {
            seed.push(s);
        }
        seed.push(&ni);
        seed.push(&nr);
        let Some(child) = self.make_child(
            &sk_d,
            &seed,
            false,
            chosen.encr,
            new_spi,
            their_spi,
            remote_ts,
        ) else {
            return Err(DropReason::Malformed);
        };
        self.respond(false, exchange::CREATE_CHILD_SA, id, &reply);
        let old = self.child.replace(child);
        self.old_child = old;
        self.stats.child_rekeys += 1;
        tracing::debug!("CHILD_SA rekeyed by the server");
        Ok(())
    }

    fn respond_invalid_ke(&mut self, id: u32, group: DhGroup) -> Result<(), DropReason> {
        self.respond(
            false,
            exchange::CREATE_CHILD_SA,
            id,
            &[(
                payload::NOTIFY,
                Notify::encode(
                    0,
                    &[],
                    notify::INVALID_KE_PAYLOAD,
                    &group.id().to_be_bytes(),
                ),
            )],
        );
        Ok(())
    }

    fn on_response(
        &mut self,
        old: bool,
        purpose: Purpose,
        first: u8,
        inner: &[u8],
    ) -> Result<(), DropReason> {
        match purpose {
            Purpose::Auth => self.on_auth_response(first, inner),
            Purpose::RekeyChild => self.on_child_rekeyed(first, inner),
            Purpose::RekeyIke => self.on_ike_rekeyed(first, inner),
            Purpose::DeleteOldChild => {
                self.old_child = None;
                Ok(())
            }
            Purpose::Close => {
                self.fail(Fault::Closed, "the session was closed");
                Ok(())
            }
            Purpose::DeleteOldIke if old => {
                self.old_ike = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The first child's `replay_window`.
    fn replay_window(&self) -> u32 {
        self.config
            .connection
            .children
            .first()
            .map_or(crate::config::DEFAULT_REPLAY_WINDOW, |c| c.replay_window)
    }

    fn after(&self, wait: Duration) -> Option<Instant> {
        (!wait.is_zero()).then(|| self.now + wait)
    }

    fn child_rekey_at(&self) -> Option<Instant> {
        let rekey_time = self.config.connection.children.first()?.rekey_time;
        let child = self.child.as_ref()?;
        (!rekey_time.is_zero()).then(|| child.established + rekey_time)
    }

    fn our_ts(&self) -> Vec<TrafficSelector> {
        match self
            .tunnel_config
            .as_ref()
            .and_then(TunnelConfig::local_ipv4)
        {
            Some(vip) => vec![TrafficSelector {
                start: vip,
                end: vip,
                ..TrafficSelector::ANY
            }],
            None => vec![TrafficSelector::ANY],
        }
    }

    /// The PFS group of our ESP proposals, if they ask for one.
    fn pfs_group(&self) -> Option<DhGroup> {
        self.child_proposals
            .iter()
            .filter(|p| wire_transforms(p, false).is_some())
            .flat_map(|p| p.dh.iter().copied())
            .find(|g| KeyExchange::supports(*g))
    }

    fn start_child_rekey(&mut self) {
        let Some(old_spi) = self.child.as_ref().map(|c| c.inbound.spi()) else {
            return self.pump_requests();
        };
        let remote_ts = self
            .child
            .as_ref()
            .map(|c| c.remote_ts.clone())
            .unwrap_or_default();
        let new_spi = self.random_spi32();
        let ni = self.nonce();
        let group = self.pfs_group();
        let kx = group.and_then(|g| KeyExchange::new(g, self.rng.array()));
        let mut payloads = vec![
            (
                payload::NOTIFY,
                Notify::encode(protocol::ESP, &old_spi.to_be_bytes(), notify::REKEY_SA, &[]),
            ),
            (
                payload::SA,
                wire::encode_sa(&self.esp_offer(new_spi, group)),
            ),
            (payload::NONCE, ni.clone()),
        ];
        if let (Some(kx), Some(group)) = (&kx, group) {
            payloads.push((payload::KE, ke_body(group, kx)));
        }
        payloads.push((payload::TSI, wire::encode_ts(&self.our_ts())));
        payloads.push((payload::TSR, wire::encode_ts(&remote_ts)));
        self.rekey = Some(PendingRekey::Child { new_spi, ni, kx });
        self.send_request(exchange::CREATE_CHILD_SA, Purpose::RekeyChild, &payloads);
    }

    fn start_ike_rekey(&mut self) {
        let Some(group) = self
            .config
            .connection
            .proposals
            .iter()
            .filter(|p| wire_transforms(p, true).is_some())
            .flat_map(|p| p.dh.iter().copied())
            .find(|g| KeyExchange::supports(*g))
        else {
            return self.pump_requests();
        };
        let Some(kx) = KeyExchange::new(group, self.rng.array()) else {
            return self.pump_requests();
        };
        let new_spi = self.rng.next_u64() | 1;
        let ni = self.nonce();
        let payloads = vec![
            (
                payload::SA,
                wire::encode_sa(&self.ike_offer(&new_spi.to_be_bytes(), group)),
            ),
            (payload::NONCE, ni.clone()),
            (payload::KE, ke_body(group, &kx)),
        ];
        self.rekey = Some(PendingRekey::Ike { new_spi, ni, kx });
        self.send_request(exchange::CREATE_CHILD_SA, Purpose::RekeyIke, &payloads);
    }

    /// A refused or failed rekey of ours is tried again a little later.
    fn rekey_refused(&mut self, what: &str, reason: &str) {
        tracing::debug!("the server refused our {what} rekey: {reason}; trying again in 30 s");
        self.rekey = None;
        let retry = self.now + Duration::from_secs(30);
        match what {
            "IKE" => self.ike_rekey_at = Some(retry),
            _ => {
                if let (Some(child), Some(rekey_time)) = (
                    self.child.as_mut(),
                    self.config
                        .connection
                        .children
                        .first()
                        .map(|c| c.rekey_time),
                ) {
                    // Move the due time 30 s ahead.
                    child.established = retry.checked_sub(rekey_time).unwrap_or(child.established);
                }
            }
        }
    }

    fn on_child_rekeyed(&mut self, first: u8, inner: &[u8]) -> Result<(), DropReason> {
        let chain = wire::split_chain(first, inner).map_err(|_| DropReason::Malformed)?;
        let Some(PendingRekey::Child { new_spi, ni, kx }) = self.rekey.take() else {
            return Ok(());
        };
        let mut sa = None;
        let mut nr = None;
        let mut ke = None;
        let mut tsr = None;
        for p in &chain {
            match p.kind {
                payload::NOTIFY => {
                    let n = Notify::parse(p.body).map_err(|_| DropReason::Malformed)?;
                    if n.kind < 16384 {
                        self.rekey_refused("CHILD_SA", &notify::name(n.kind));
                        return Ok(());
                    }
                }
                payload::SA => {
                    sa = Some(wire::decode_sa(p.body).map_err(|_| DropReason::Malformed)?)
                }
                payload::NONCE => nr = Some(p.body.to_vec()),
                payload::KE => ke = Some(p.body.to_vec()),
                payload::TSR => {
                    tsr = Some(wire::decode_ts(p.body).map_err(|_| DropReason::Malformed)?)
                }
                _ => {}
            }
        }
        let group = kx.as_ref().map(KeyExchange::group);
        let offer = self.esp_offer(new_spi, group);
        let chosen = sa
            .as_ref()
            .filter(|sa| sa.len() == 1)
            .and_then(|sa| sa.first())
            .and_then(|p| Some((accept_choice(p, &offer)?, p.spi.clone())));
        let (Some((chosen, their_spi)), Some(nr)) = (chosen, nr) else {
            self.rekey_refused("CHILD_SA", "an answer erebus cannot use");
            return Ok(());
        };
        let Ok(their_spi) = <[u8; 4]>::try_from(their_spi.as_slice()).map(u32::from_be_bytes)
        else {
            return Err(DropReason::Malformed);
        };
        let mut shared = None;
        if let (Some(g), Some(kx)) = (chosen.dh, kx.as_ref()) {
            let value = ke
                .as_ref()
                .filter(|k| k.get(..2) == Some(&g.id().to_be_bytes()[..]))
                .and_then(|k| kx.shared(k.get(4..).unwrap_or_default()));
            let Some(value) = value else {
                self.rekey_refused("CHILD_SA", "a bad key exchange value");
                return Ok(());
            };
            shared = Some(value);
        }
        let remote_ts = tsr
            .filter(|ts| !ts.is_empty())
            .or_else(|| self.child.as_ref().map(|c| c.remote_ts.clone()))
            .unwrap_or_default();
        let Some(sk_d) = self.ike.keys.as_ref().map(|k| k.sk_d.clone()) else {
            return Err(DropReason::NotReady);
        };
        let mut seed: Vec<&[u8]> = Vec::new();
        if let Some(s) = &shared {
            seed.push(s);
        }
        seed.push(&ni);
        seed.push(&nr);
        let Some(child) = self.make_child(
            &sk_d,
            &seed,
            true,
            chosen.encr,
            new_spi,
            their_spi,
            remote_ts,
        ) else {
            return Err(DropReason::Malformed);
        };
        // New traffic goes out on the new SA at once; the old one still receives what is in
        // flight until it is deleted.
        self.old_child = self.child.replace(child);
        self.stats.child_rekeys += 1;
        tracing::debug!("CHILD_SA rekeyed by us");
        self.queued.push_back(Purpose::DeleteOldChild);
        Ok(())
    }

    fn on_ike_rekeyed(&mut self, first: u8, inner: &[u8]) -> Result<(), DropReason> {
        let chain = wire::split_chain(first, inner).map_err(|_| DropReason::Malformed)?;
        let Some(PendingRekey::Ike { new_spi, ni, kx }) = self.rekey.take() else {
            return Ok(());
        };
        let mut sa = None;
        let mut nr = None;
        let mut ke = None;
        for p in &chain {
            match p.kind {
                payload::NOTIFY => {
                    let n = Notify::parse(p.body).map_err(|_| DropReason::Malformed)?;
                    if n.kind < 16384 {
                        self.rekey_refused("IKE", &notify::name(n.kind));
                        return Ok(());
                    }
                }
                payload::SA => {
                    sa = Some(wire::decode_sa(p.body).map_err(|_| DropReason::Malformed)?)
                }
                payload::NONCE => nr = Some(p.body.to_vec()),
                payload::KE => ke = Some(p.body.to_vec()),
                _ => {}
            }
        }
        let group = kx.group();
        let offer = self.ike_offer(&new_spi.to_be_bytes(), group);
        let chosen = sa
            .as_ref()
            .filter(|sa| sa.len() == 1)
            .and_then(|sa| sa.first())
            .and_then(|p| Some((accept_choice(p, &offer)?, p.spi.clone())));
        let (Some((chosen, their_spi)), Some(nr), Some(ke)) = (chosen, nr, ke) else {
            self.rekey_refused("IKE", "an answer erebus cannot use");
            return Ok(());
        };
        let Ok(their_spi) = <[u8; 8]>::try_from(their_spi.as_slice()).map(u64::from_be_bytes)
        else {
            return Err(DropReason::Malformed);
        };
        let shared = (chosen.dh == Some(group)
            && ke.get(..2) == Some(&group.id().to_be_bytes()[..]))
        .then(|| kx.shared(ke.get(4..).unwrap_or_default()))
        .flatten();
        let Some(shared) = shared else {
            self.rekey_refused("IKE", "a bad key exchange value");
            return Ok(());
        };
        let Some(old_keys) = self.ike.keys.as_ref() else {
            return Err(DropReason::NotReady);
        };
        // RFC 7296 §2.18 with the old SA's PRF, as strongSwan does for prf+ too.
        let prf = self.ike.prf;
        let skeyseed = prf.compute(&old_keys.sk_d, &[&shared, &ni, &nr]);
        let Some(keys) = IkeKeys::derive_suite(
            prf,
            chosen.encr,
            chosen.integ,
            &skeyseed,
            &ni,
            &nr,
            new_spi,
            their_spi,
        ) else {
            return Err(DropReason::Malformed);
        };
        let mut new_sa = IkeSa::new(new_spi, prf, chosen.encr);
        new_sa.spi_r = their_spi;
        new_sa.keys = Some(keys);
        let old = core::mem::replace(&mut self.ike, new_sa);
        self.old_ike = Some(old);
        self.stats.ike_rekeys += 1;
        self.ike_rekey_at = self.after(self.config.connection.rekey_time);
        tracing::debug!("IKE SA rekeyed by us");
        self.delete_old_ike();
        Ok(())
    }

    /// Sends the DELETE of the IKE SA a rekey replaced, on that SA.
    fn delete_old_ike(&mut self) {
        let Some(old) = self.old_ike.as_ref() else {
            return;
        };
        if old.outstanding.is_some() {
            return;
        }
        let id = old.next_request;
        let delete = [(payload::DELETE, wire::encode_delete(protocol::IKE, &[]))];
        let Some(datagrams) = self.seal_message(true, exchange::INFORMATIONAL, false, id, &delete)
        else {
            return;
        };
        let retransmit_at = self.now + retransmit_wait(1);
        let Some(old) = self.old_ike.as_mut() else {
            return;
        };
        old.next_request = id.wrapping_add(1);
        old.outstanding = Some(Outstanding {
            id,
            purpose: Purpose::DeleteOldIke,
            datagrams: datagrams.clone(),
            retransmit_at,
            sends: 1,
        });
        self.stats.ike_sent += datagrams.len() as u64;
        self.out.extend(datagrams);
    }

    /// Handles one IKE message (the marker already stripped).
    fn handle_ike(&mut self, msg: &[u8]) -> Result<(), DropReason> {
        let header = Header::parse(msg).map_err(|_| DropReason::Malformed)?;
        if self.phase == Phase::Init {
            let ours = header.spi_i == self.ike.spi_i
                && header.exchange == exchange::IKE_SA_INIT
                && header.is_response()
                && header.message_id == 0
                && self
                    .ike
                    .outstanding
                    .as_ref()
                    .is_some_and(|o| o.purpose == Purpose::Init);
            if !ours {
                return Err(DropReason::UnknownKey);
            }
            self.last_heard = self.now;
            self.stats.ike_received += 1;
            return self.on_init_response(msg, &header);
        }
        let old = if self.ike.owns(&header) {
            false
        } else if self.old_ike.as_ref().is_some_and(|sa| sa.owns(&header)) {
            true
        } else {
            return Err(DropReason::UnknownKey);
        };
        let sa = self.sa(old).ok_or(DropReason::UnknownKey)?;
        // The peer's I flag must be the opposite of ours.
        let peer_initiator = header.flags & wire::flags::INITIATOR != 0;
        if peer_initiator == sa.we_initiated {
            return Err(DropReason::Malformed);
        }
        if header.is_response() {
            let Some(purpose) = sa
                .outstanding
                .as_ref()
                .filter(|o| o.id == header.message_id)
                .map(|o| o.purpose)
            else {
                return Err(DropReason::Replayed);
            };
            let Some((first, inner)) = self.open_any(old, msg, &header)? else {
                return Ok(());
            };
            if let Some(sa) = self.sa_mut(old) {
                sa.outstanding = None;
            }
            self.last_heard = self.now;
            self.stats.ike_received += 1;
            self.on_response(old, purpose, first, &inner)?;
            self.pump_requests();
            return Ok(());
        }
        if header.message_id.wrapping_add(1) == sa.expected_peer_request {
            let cached = sa
                .last_response
                .as_ref()
                .filter(|(id, _)| *id == header.message_id)
                .map(|(_, datagrams)| datagrams.clone());
            let Some(datagrams) = cached else {
                return Err(DropReason::Replayed);
            };
            // A retransmitted request, if authentic: resend our answer as it was, once per
            // retransmission (on its first fragment).
            let first_part = match header.next_payload {
                payload::SKF => sa
                    .open_fragment(msg, &header)
                    .map(|f| f.number == 1)
                    .map_err(|_| DropReason::Unauthentic)?,
                _ => sa
                    .open(msg, &header)
                    .map(|_| true)
                    .map_err(|_| DropReason::Unauthentic)?,
            };
            if first_part {
                self.stats.ike_sent += datagrams.len() as u64;
                self.out.extend(datagrams);
            }
            return Ok(());
        }
        if header.message_id != sa.expected_peer_request {
            return Err(DropReason::Replayed);
        }
        let Some((first, inner)) = self.open_any(old, msg, &header)? else {
            return Ok(());
        };
        self.last_heard = self.now;
        self.stats.ike_received += 1;
        self.on_request(old, &header, first, &inner)?;
        self.pump_requests();
        Ok(())
    }

    fn sa(&self, old: bool) -> Option<&IkeSa> {
        if old {
            self.old_ike.as_ref()
        } else {
            Some(&self.ike)
        }
    }

    fn sa_mut(&mut self, old: bool) -> Option<&mut IkeSa> {
        if old {
            self.old_ike.as_mut()
        } else {
            Some(&mut self.ike)
        }
    }

    /// Decrypts an SK message, or collects an SKF fragment: `None` until the last fragment of
    /// a message arrived, then the reassembled inner chain (RFC 7383 §2.6).
    fn open_any(
        &mut self,
        old: bool,
        msg: &[u8],
        header: &Header,
    ) -> Result<Option<(u8, Vec<u8>)>, DropReason> {
        let sa = self.sa(old).ok_or(DropReason::UnknownKey)?;
        if header.next_payload != payload::SKF {
            return sa
                .open(msg, header)
                .map(Some)
                .map_err(|_| DropReason::Unauthentic);
        }
        let fragment = sa
            .open_fragment(msg, header)
            .map_err(|_| DropReason::Unauthentic)?;
        if fragment.total > MAX_FRAGMENTS {
            return Err(DropReason::Malformed);
        }
        let key = (old, header.message_id, header.is_response());
        let fresh = self
            .reassembly
            .as_ref()
            .is_none_or(|r| r.key != key || r.parts.len() != usize::from(fragment.total));
        if fresh {
            self.reassembly = Some(Reassembly {
                key,
                first: 0,
                parts: vec![None; usize::from(fragment.total)],
            });
        }
        let Some(reassembly) = self.reassembly.as_mut() else {
            return Ok(None);
        };
        if fragment.number == 1 {
            reassembly.first = fragment.first;
        }
        if let Some(slot) = reassembly.parts.get_mut(usize::from(fragment.number) - 1) {
            *slot = Some(fragment.plain);
        }
        if reassembly.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let Some(done) = self.reassembly.take() else {
            return Ok(None);
        };
        let inner: Vec<u8> = done.parts.into_iter().flatten().flatten().collect();
        Ok(Some((done.first, inner)))
    }

    /// Encrypts a message of ours into one datagram, or into fragments when the server
    /// takes them and it would not fit one (RFC 7383).
    fn seal_message(
        &mut self,
        old: bool,
        exchange_type: u8,
        response: bool,
        id: u32,
        payloads: &[(u8, Vec<u8>)],
    ) -> Option<Vec<Vec<u8>>> {
        let mut inner = Vec::new();
        wire::write_chain(&mut inner, payloads);
        let first = payloads.first().map_or(0, |p| p.0);
        let fragments = self.server_fragments;
        let sa = self.sa_mut(old)?;
        if fragments {
            sa.seal_fragments(exchange_type, response, id, first, &inner, MAX_MESSAGE)
        } else {
            sa.seal(exchange_type, response, id, first, &inner)
                .map(|msg| vec![msg])
        }
    }

    /// Starts queued requests when the window is free.
    fn pump_requests(&mut self) {
        if self.phase != Phase::Up && self.phase != Phase::Closing {
            return;
        }
        if self.ike.outstanding.is_some() {
            return;
        }
        let Some(purpose) = self.queued.pop_front() else {
            return;
        };
        match purpose {
            Purpose::Dpd => self.send_request(exchange::INFORMATIONAL, Purpose::Dpd, &[]),
            Purpose::RekeyChild => self.start_child_rekey(),
            Purpose::RekeyIke => self.start_ike_rekey(),
            Purpose::DeleteOldChild => {
                if let Some(old) = &self.old_child {
                    let spi = old.inbound.spi().to_be_bytes();
                    self.send_request(
                        exchange::INFORMATIONAL,
                        Purpose::DeleteOldChild,
                        &[(payload::DELETE, wire::encode_delete(protocol::ESP, &[&spi]))],
                    );
                } else {
                    self.pump_requests();
                }
            }
            Purpose::DeleteOldIke => self.delete_old_ike(),
            Purpose::Close => self.send_request(
                exchange::INFORMATIONAL,
                Purpose::Close,
                &[(payload::DELETE, wire::encode_delete(protocol::IKE, &[]))],
            ),
            _ => {}
        }
    }

    fn retransmit(&mut self) {
        let now = self.now;
        if let Some(old) = self.old_ike.as_mut()
            && let Some(o) = old.outstanding.as_mut()
            && now >= o.retransmit_at
        {
            if o.sends >= RETRANSMIT_SENDS {
                // The server no longer answers on the old SA: it is gone anyway.
                self.old_ike = None;
            } else {
                o.sends += 1;
                o.retransmit_at = now + retransmit_wait(o.sends);
                self.out.extend(o.datagrams.iter().cloned());
                self.stats.retransmits += 1;
            }
        }
        let purpose_and_sends = self
            .ike
            .outstanding
            .as_ref()
            .map(|o| (o.purpose, o.sends, o.retransmit_at));
        let Some((purpose, sends, at)) = purpose_and_sends else {
            return;
        };
        if now < at {
            return;
        }
        // A liveness check gives up sooner: a proxy should learn of a dead server in seconds.
        let limit = if purpose == Purpose::Dpd {
            DPD_SENDS
        } else {
            RETRANSMIT_SENDS
        };
        if sends >= limit {
            let what = match purpose {
                Purpose::Init => "IKE_SA_INIT",
                Purpose::Auth => "IKE_AUTH",
                Purpose::Dpd => "a liveness check",
                Purpose::Close => {
                    self.fail(Fault::Closed, "the session was closed");
                    return;
                }
                _ => "a request",
            };
            self.fail(
                Fault::Timeout,
                format!("{}: no answer to {what} after {sends} tries", self.server),
            );
            return;
        }
        if let Some(o) = self.ike.outstanding.as_mut() {
            o.sends += 1;
            o.retransmit_at = now + retransmit_wait(o.sends);
            for d in &o.datagrams {
                self.out.push_back(d.clone());
            }
            self.stats.ike_sent += o.datagrams.len() as u64;
            self.stats.retransmits += 1;
        }
    }
}

impl Tunnel for IpsecSession {
    fn transport(&self) -> Option<&TransportSpec> {
        (self.phase != Phase::Down).then_some(&self.transport)
    }

    fn overhead(&self) -> Overhead {
        Overhead {
            headroom: esp::HEADROOM,
            tailroom: esp::TAILROOM,
        }
    }

    fn transport_connected(&mut self, now: Instant, _remote: SocketAddr) {
        self.now = self.now.max(now);
    }

    fn transport_closed(&mut self, now: Instant, error: TransportError) {
        self.now = self.now.max(now);
        self.fail(Fault::Timeout, format!("{}: {error}", self.transport));
    }

    fn decapsulate(&mut self, now: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        self.now = self.now.max(now);
        if self.phase == Phase::Down {
            return Err(DropReason::NotReady);
        }
        if !self.marker() {
            self.handle_ike(packet)?;
            return Ok(Decapsulated::Consumed);
        }
        if packet == [0xff] {
            // A NAT keepalive proves nothing about the peer (RFC 3948 §4).
            return Ok(Decapsulated::Consumed);
        }
        if packet.len() >= 4 && packet[..4] == [0, 0, 0, 0] {
            self.handle_ike(&packet[4..])?;
            return Ok(Decapsulated::Consumed);
        }
        if packet.len() < 8 {
            return Err(DropReason::Malformed);
        }
        let spi = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        let result = match (&mut self.child, &mut self.old_child) {
            (Some(c), _) if c.inbound.spi() == spi => c.inbound.open(packet),
            (_, Some(c)) if c.inbound.spi() == spi => c.inbound.open(packet),
            _ => Err(DropReason::UnknownKey),
        };
        match result {
            Ok(Some(inner)) => {
                // Authentic, so the server is alive; but only packets from the networks the
                // CHILD_SA covers may enter (RFC 4301 §5.2, the inbound policy check).
                self.last_heard = self.now;
                let source = packet
                    .get(inner.start..inner.end)
                    .filter(|ip| ip.first().map(|b| b >> 4) == Some(4))
                    .and_then(|ip| ip.get(12..16))
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(Ipv4Addr::from);
                let allowed = self.child.as_ref().map_or(&[][..], |c| &c.remote_ts[..]);
                if let Some(source) = source
                    && !allowed.is_empty()
                    && !allowed.iter().any(|ts| ts.contains(source))
                {
                    self.stats.outside_selectors += 1;
                    return Err(DropReason::Unsupported);
                }
                Ok(Decapsulated::Inner(inner))
            }
            Ok(None) => {
                self.last_heard = self.now;
                Ok(Decapsulated::Consumed)
            }
            Err(reason) => {
                self.stats.esp_dropped += 1;
                Err(reason)
            }
        }
    }

    fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        self.now = self.now.max(now);
        if self.phase != Phase::Up {
            return Err(DropReason::NotReady);
        }
        let child = self.child.as_mut().ok_or(DropReason::NotReady)?;
        let outer = child.outbound.seal(buf, inner)?;
        self.last_sent = self.now;
        Ok(outer)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.phase == Phase::Down {
            return;
        }
        if let Some(deadline) = self.close_deadline
            && self.now >= deadline
        {
            return self.fail(Fault::Closed, "the session was closed");
        }
        self.retransmit();
        if self.phase == Phase::Up {
            if self.now.saturating_duration_since(self.last_heard) >= self.dpd_delay
                && self.ike.outstanding.is_none()
                && !self.queued.contains(&Purpose::Dpd)
            {
                self.queued.push_back(Purpose::Dpd);
                self.pump_requests();
            }
            if self.rekey.is_none()
                && !self.queued.contains(&Purpose::RekeyChild)
                && self.child_rekey_at().is_some_and(|at| self.now >= at)
            {
                self.queued.push_back(Purpose::RekeyChild);
                self.pump_requests();
            }
            if self.ike_rekey_at.is_some_and(|at| self.now >= at) {
                self.ike_rekey_at = None;
                self.queued.push_back(Purpose::RekeyIke);
                self.pump_requests();
            }
            if self.now.saturating_duration_since(self.last_sent) >= KEEPALIVE_INTERVAL
                && self.marker()
            {
                self.out.push_back(vec![0xff]);
                self.stats.keepalives += 1;
            }
        }
    }

    fn close(&mut self, now: Instant) {
        self.now = self.now.max(now);
        match self.phase {
            Phase::Up => {
                self.phase = Phase::Closing;
                self.close_deadline = Some(self.now + CLOSE_WAIT);
                // Whatever is in flight, the DELETE goes next.
                self.queued.clear();
                self.queued.push_back(Purpose::Close);
                if self.ike.outstanding.is_some() {
                    self.ike.outstanding = None;
                }
                self.pump_requests();
            }
            Phase::Closing | Phase::Down => {}
            Phase::Init | Phase::Auth => self.fail(Fault::Closed, "the session was closed"),
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Result<usize, usize>> {
        self.now = self.now.max(now);
        let datagram = self.out.front()?;
        let keepalive = datagram.as_slice() == [0xff];
        let marker = if self.marker() && !keepalive { 4 } else { 0 };
        let needed = marker + datagram.len();
        if buf.len() < needed {
            return Some(Err(needed));
        }
        buf[..marker].fill(0);
        buf[marker..needed].copy_from_slice(datagram);
        self.out.pop_front();
        self.last_sent = self.now;
        Some(Ok(needed))
    }

    fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        if self.phase == Phase::Down {
            return None;
        }
        let mut best: Option<(Instant, &'static str)> = None;
        let mut consider = |at: Instant, why: &'static str| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, why));
            }
        };
        if let Some(o) = &self.ike.outstanding {
            consider(o.retransmit_at, "IKE retransmission");
        }
        if let Some(deadline) = self.close_deadline {
            consider(deadline, "DELETE answer");
        }
        if self.phase == Phase::Up {
            if self.ike.outstanding.is_none() {
                consider(self.last_heard + self.dpd_delay, "liveness check");
            }
            if self.marker() {
                consider(self.last_sent + KEEPALIVE_INTERVAL, "NAT keepalive");
            }
            if self.rekey.is_none()
                && let Some(at) = self.child_rekey_at()
            {
                consider(at, "CHILD_SA rekey");
            }
            if let Some(at) = self.ike_rekey_at {
                consider(at, "IKE_SA rekey");
            }
        }
        if let Some(o) = self.old_ike.as_ref().and_then(|sa| sa.outstanding.as_ref()) {
            consider(o.retransmit_at, "IKE retransmission (old SA)");
        }
        best
    }
}
