//! OpenVPN's TLS server mode for one client: the server's half of the control channel (the
//! reliability layer, TLS as the server, key method 2, authentication, the push) and the data
//! channel with that client, as a sans-IO state machine.
//!
//! A server holds one [`ServerSetup`] (certificate, key, client CA, tls-auth/tls-crypt key,
//! ciphers, push options), built once and shared in an `Arc`, and one [`ServerSession`] per
//! client address. The layer above (the composer) owns sockets, the address pool and routing.
//!
//! # The sequence, as a 2.6 server
//!
//! 1. The client's `P_CONTROL_HARD_RESET_CLIENT_V2` (its payload, such as 2.6's
//!    `EARLY_NEG_START` TLV, is ignored) is answered with `P_CONTROL_HARD_RESET_SERVER_V2`
//!    acknowledging it. A retransmitted reset is acknowledged again; it starts nothing new.
//!    [`ServerSetup::is_initial_packet`] tells whether a packet from an unknown address is
//!    such a reset that passes tls-auth/tls-crypt, before a session is created for it.
//! 2. TLS as the server over `P_CONTROL_V1`, with a client certificate verified against
//!    `client_ca_pem` when one is given. A refused certificate ends the session with
//!    [`Fault::Auth`] (the TLS alert still goes out once).
//! 3. Key method 2: the client's message (options, username, password, peer-info) is read,
//!    the data cipher negotiated (the first of [`ServerParams::data_ciphers`] the client lists
//!    in `IV_CIPHERS`, OpenVPN 2.6's `ncp_get_best_cipher`), and the server's message sent at
//!    once, as a 2.6 server does while authentication may still be pending.
//! 4. Authentication: with a username sent or required, [`ServerSessionEvent::Authenticate`]
//!    and [`ServerSession::auth_verdict`]. A refusal (or no common cipher) sends
//!    `AUTH_FAILED[,reason]` and ends the session once the client acknowledged it, or after
//!    [`AUTH_FAILED_GRACE`]; a stock client prints `AUTH_FAILED` and exits.
//! 5. The push: right after authentication for clients announcing `IV_PROTO` `REQUEST_PUSH`,
//!    else on `PUSH_REQUEST`. Its options follow OpenVPN 2.6's `push.c` order: the configured
//!    `push` options, `route-gateway`, `topology subnet`, `ping`/`ping-restart` (keepalive),
//!    then per client `ifconfig`, `peer-id` (`IV_PROTO` `DATA_V2`), `cipher` (NCP clients),
//!    `protocol-flags cc-exit tls-ekm` (or `key-derivation tls-ekm` without `cc-exit`), and
//!    `tun-mtu` (clients sending `IV_MTU`). Replies longer than OpenVPN's bundle are split
//!    with `push-continuation 2`/`1`. Data keys come from the TLS exporter when the client
//!    announces `TLS_KEY_EXPORT`, else from the legacy PRF. [`ServerSessionEvent::Up`].
//!    A `PUSH_REQUEST` repeated within 30 s of the reply is ignored (2.6's
//!    `sent_push_reply_expiry`); a later one gets the same reply again.
//!
//! Everything up to the push must happen within `hand_window` of the session's start.
//!
//! # Keepalive, renegotiation, ending
//!
//! - With `keepalive (ping, restart)`, the server pushes `ping` and `ping-restart`, pings the
//!   client when it sent nothing for `ping`, and ends a client silent for `2 × restart` with
//!   [`Fault::Timeout`], as OpenVPN's `keepalive` on a server does.
//! - Renegotiation by the client (`P_CONTROL_SOFT_RESET_V1` under the next key id) or by the
//!   server (`reneg`, [`ServerSession::renegotiate`], or data packet ids near exhaustion).
//!   The new data key is accepted on receive at once and used for sending when the client
//!   sends with it, or `hand_window` after the renegotiation began; the old key stays a lame
//!   duck for [`crate::tls_session::DEFAULT_TRAN_WINDOW`]. A renegotiation that does not
//!   finish within `hand_window` ends the session. The username and common name must stay
//!   the same; credentials are not verified again.
//! - The client's `EXIT` message or `OCC_EXIT`: [`Fault::Closed`]. [`ServerSession::close`]:
//!   `RESTART` or `HALT` to the client, then down once acknowledged (or after
//!   [`CLOSE_GRACE`]).
//!
//! [`ServerSessionEvent::Down`] is always the last event. After it, drain
//! [`ServerSession::poll_transmit`] once more: it may hold a final TLS alert or the
//! acknowledgement of the client's `EXIT`, sent once, never retransmitted.
//!
//! # Buffers
//!
//! [`ServerSession::encapsulate`] needs [`HEADROOM`] bytes before and [`TAILROOM`] after the
//! inner packet (any cipher, `P_DATA_V2`); [`ServerSession::poll_transmit`] needs a buffer of
//! at least [`TRANSMIT_BUF_LEN`]. Over TCP the composer adds the 2-byte length prefix itself.
//! A `P_DATA_V2` packet names its session by peer id ([`data_v2_peer_id`]): a client that
//! floats to a new address is found by it, and its new address is confirmed once
//! [`ServerSession::receive`] accepts the packet (`Ok`).

mod keymethod;
#[cfg(test)]
mod tests;
mod tls;

pub use keymethod::{
    ClientKeyMessage, ClientMessageError, PeerInfo, encode_server_message, parse_client_message,
};

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use erebus_sansio::tunnel::{Decapsulated, DropReason, Failure, Fault, TransportKind};
use erebus_sansio::{Instant, Seed, SeededRng, WallClock};
use zeroize::{Zeroize, Zeroizing};

use crate::config::KeyDirection;
use crate::config::{Digest, SecretString};
use crate::control::keymethod::{ServerKeySource, iv_proto};
use crate::control::prf::{EKM_LABEL, Key2};
use crate::control::push;
use crate::control::reliable::{MAX_PIGGYBACK_ACKS, Reliable};
use crate::control::wrap::{ControlWrap, ReplayId, TlsAuth, TlsCrypt};
use crate::data::inband::{self, OccMessage, Payload};
use crate::data::{DataChannel, DataCipher, DataConfig, DataKeys, DropCounts, Key2Role, SealError};
use crate::packet::{
    AckList, ControlBody, ControlPacket, DataHeader, KeyId, Opcode, OpcodeByte, PeerId, SessionId,
};
use crate::replay::{PacketId, ReplayConfig, ReplayWindow};
use crate::tls::{TlsProvider, WallTime};
use crate::tls_session::{DEFAULT_HAND_WINDOW, DEFAULT_TRAN_WINDOW, TLS_MTU};

use self::tls::{ServerTls, ServerTlsMaterial};

/// Bytes [`ServerSession::encapsulate`] needs before the inner packet: the `P_DATA_V2` header
/// and the largest cipher layout (CBC with HMAC-SHA512: 64 + 16 + 4).
pub const HEADROOM: usize = DataHeader::V2_LEN + 64 + 16 + 4;
/// Bytes [`ServerSession::encapsulate`] needs after the inner packet (CBC padding).
pub const TAILROOM: usize = 16;
/// The smallest buffer [`ServerSession::poll_transmit`] writes into.
pub const TRANSMIT_BUF_LEN: usize = 1600;
/// How long the session waits for the client to acknowledge `AUTH_FAILED` (OpenVPN's
/// `scheduled_exit_interval`).
pub const AUTH_FAILED_GRACE: Duration = Duration::from_secs(5);
/// How long [`ServerSession::close`] waits for the client to acknowledge `RESTART`/`HALT`.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// A `PUSH_REQUEST` this soon after the last reply is ignored (`sent_push_reply_expiry`).
pub const PUSH_REPLY_EXPIRY: Duration = Duration::from_secs(30);
/// OpenVPN's `PUSH_BUNDLE_SIZE`.
const PUSH_BUNDLE_SIZE: usize = 1024;
/// Room `send_push_reply` keeps free in a bundle for `push-continuation`.
const PUSH_BUNDLE_EXTRA: usize = 84;
/// The reason OpenVPN 2.6 gives a client it shares no data cipher with.
const NO_SHARED_CIPHER: &str = "Data channel cipher negotiation failed (no shared cipher)";

/// The control-channel wrapping key of the server.
#[derive(Clone)]
pub enum WrapKey {
    /// No wrapping.
    None,
    /// `tls-auth`: HMAC over every control packet.
    TlsAuth {
        /// The 256 bytes of the static key file (cipher 0, HMAC 0, cipher 1, HMAC 1).
        key: Zeroizing<[u8; 256]>,
        /// `key-direction` (or the argument of `tls-auth`): `Some(0)` on a server, `None`
        /// for a bidirectional key.
        direction: Option<u8>,
        /// The `auth` digest (SHA1 unless configured).
        digest: Digest,
    },
    /// `tls-crypt`: every control packet encrypted and authenticated.
    TlsCrypt {
        /// The 256 bytes of the static key file.
        key: Zeroizing<[u8; 256]>,
    },
}

impl core::fmt::Debug for WrapKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::TlsAuth {
                direction, digest, ..
            } => f
                .debug_struct("TlsAuth")
                .field("direction", direction)
                .field("digest", digest)
                .finish_non_exhaustive(),
            Self::TlsCrypt { .. } => f.debug_struct("TlsCrypt").finish_non_exhaustive(),
        }
    }
}

/// Everything the server's sessions share, as given.
#[derive(Clone)]
pub struct ServerParams {
    /// The server's certificate chain, PEM, leaf first.
    pub cert_chain_pem: Vec<u8>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Zeroizing<Vec<u8>>,
    /// `Some`: clients must present a certificate chaining to this PEM CA; `None`: no client
    /// certificate is asked for (then `require_user_pass` must be set).
    pub client_ca_pem: Option<Vec<u8>>,
    /// Clients must send a username and password in key method 2.
    pub require_user_pass: bool,
    /// tls-auth, tls-crypt or nothing.
    pub wrap: WrapKey,
    /// `data-ciphers`, in the server's order of preference.
    pub data_ciphers: Vec<DataCipher>,
    /// Extra options pushed verbatim, in order (`route ...`, `dhcp-option DNS ...`).
    pub push: Vec<String>,
    /// `keepalive ping restart`: pushed as `ping`/`ping-restart`; the server pings every
    /// `ping` and drops a client silent for `2 × restart`.
    pub keepalive: Option<(Duration, Duration)>,
    /// `reneg-sec` on the server side; `None` never.
    pub reneg: Option<Duration>,
    /// `hand-window` (60 s by default).
    pub hand_window: Duration,
    /// `tun-mtu` (1500 by default), pushed to clients that send `IV_MTU`.
    pub tun_mtu: u16,
}

impl core::fmt::Debug for ServerParams {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerParams")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("require_user_pass", &self.require_user_pass)
            .field("wrap", &self.wrap)
            .field("data_ciphers", &self.data_ciphers)
            .field("push", &self.push)
            .field("keepalive", &self.keepalive)
            .field("reneg", &self.reneg)
            .field("hand_window", &self.hand_window)
            .field("tun_mtu", &self.tun_mtu)
            .finish_non_exhaustive()
    }
}

impl ServerParams {
    /// Parameters with OpenVPN's defaults: no wrapping, AES-256-GCM, AES-128-GCM and
    /// ChaCha20-Poly1305, no push options, no keepalive, no server-side renegotiation,
    /// `hand-window 60`, `tun-mtu 1500`.
    pub fn new(
        cert_chain_pem: Vec<u8>,
        key_pem: Zeroizing<Vec<u8>>,
        client_ca_pem: Option<Vec<u8>>,
    ) -> Self {
        use crate::data::AeadAlg;
        Self {
            cert_chain_pem,
            key_pem,
            client_ca_pem,
            require_user_pass: false,
            wrap: WrapKey::None,
            data_ciphers: vec![
                DataCipher::Aead(AeadAlg::Aes256Gcm),
                DataCipher::Aead(AeadAlg::Aes128Gcm),
                DataCipher::Aead(AeadAlg::ChaCha20Poly1305),
            ],
            push: Vec::new(),
            keepalive: None,
            reneg: None,
            hand_window: DEFAULT_HAND_WINDOW,
            tun_mtu: 1500,
        }
    }
}

/// Why a [`ServerSetup`] cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerSetupError {
    /// The certificate, key or client CA cannot be used.
    #[error("server TLS material: {0}")]
    Tls(String),
    /// Neither a client CA nor username/password: anyone could connect.
    #[error(
        "clients would be unauthenticated: give a client CA or require a username and password"
    )]
    NoClientAuthentication,
    /// `data_ciphers` is empty.
    #[error("no data cipher is configured")]
    NoDataCiphers,
    /// A push option OpenVPN would refuse.
    #[error("push option '{option}': {reason}")]
    BadPushOption {
        /// The option.
        option: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A tls-auth key direction other than 0 or 1.
    #[error("tls-auth key direction {0}: must be 0 or 1")]
    BadKeyDirection(u8),
    /// tls-auth with `auth none`.
    #[error("tls-auth needs an HMAC digest; `auth none` leaves none")]
    TlsAuthWithoutDigest,
    /// A zero keepalive interval or hand window, or a tun-mtu below OpenVPN's floor.
    #[error("{0}")]
    BadTiming(&'static str),
}

/// What all sessions of one server share. Build it once and hold it in an `Arc`.
#[derive(Debug)]
pub struct ServerSetup {
    tls: ServerTlsMaterial,
    wrap: ControlWrap,
    tls_auth_keydir: Option<u8>,
    require_user_pass: bool,
    data_ciphers: Vec<DataCipher>,
    push: Vec<String>,
    keepalive: Option<(Duration, Duration)>,
    reneg: Option<Duration>,
    hand_window: Duration,
    tun_mtu: u16,
}

impl ServerSetup {
    /// Loads the certificate, key and client CA and checks the parameters.
    ///
    /// # Errors
    ///
    /// [`ServerSetupError`] naming what is wrong: unreadable PEM, a key not matching the
    /// certificate, no client authentication at all, a push option with a comma, ...
    pub fn new(params: ServerParams) -> Result<Self, ServerSetupError> {
        let tls = ServerTlsMaterial::new(
            &params.cert_chain_pem,
            &params.key_pem,
            params.client_ca_pem.as_deref(),
        )
        .map_err(ServerSetupError::Tls)?;
        if !tls.requires_client_cert() && !params.require_user_pass {
            return Err(ServerSetupError::NoClientAuthentication);
        }
        if params.data_ciphers.is_empty() {
            return Err(ServerSetupError::NoDataCiphers);
        }
        for option in &params.push {
            let reason = if option.contains(',') {
                Some("OpenVPN refuses commas in pushed options")
            } else if option.is_empty() {
                Some("empty")
            } else if option.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
                Some("only printable ASCII can be pushed")
            } else if option.len() >= PUSH_BUNDLE_SIZE - PUSH_BUNDLE_EXTRA - 12 {
                Some("too long for a PUSH_REPLY")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ServerSetupError::BadPushOption {
                    option: option.clone(),
                    reason,
                });
            }
        }
        if params.hand_window.is_zero() {
            return Err(ServerSetupError::BadTiming("hand-window must not be zero"));
        }
        if params
            .keepalive
            .is_some_and(|(ping, restart)| ping.as_secs() == 0 || restart.as_secs() == 0)
        {
            return Err(ServerSetupError::BadTiming(
                "keepalive intervals must be at least one second",
            ));
        }
        if params.tun_mtu < 576 {
            return Err(ServerSetupError::BadTiming("tun-mtu must be at least 576"));
        }
        let (wrap, tls_auth_keydir) = match &params.wrap {
            WrapKey::None => (ControlWrap::None, None),
            WrapKey::TlsCrypt { key } => (ControlWrap::Crypt(TlsCrypt::server(key)), None),
            WrapKey::TlsAuth {
                key,
                direction,
                digest,
            } => {
                let dir = match direction {
                    None => None,
                    Some(0) => Some(KeyDirection::Normal),
                    Some(1) => Some(KeyDirection::Inverse),
                    Some(other) => return Err(ServerSetupError::BadKeyDirection(*other)),
                };
                let auth = TlsAuth::new(key, dir, *digest)
                    .map_err(|_| ServerSetupError::TlsAuthWithoutDigest)?;
                (ControlWrap::Auth(auth), Some(direction.unwrap_or(u8::MAX)))
            }
        };
        Ok(Self {
            tls,
            wrap,
            tls_auth_keydir,
            require_user_pass: params.require_user_pass,
            data_ciphers: params.data_ciphers,
            push: params.push,
            keepalive: params.keepalive,
            reneg: params.reneg.filter(|d| !d.is_zero()),
            hand_window: params.hand_window,
            tun_mtu: params.tun_mtu,
        })
    }

    /// Whether `packet`, from an address without a session, is a client's hard reset
    /// (`P_CONTROL_HARD_RESET_CLIENT_V2`, key id 0, message id 0) that passes the
    /// tls-auth/tls-crypt check. Cheap, and changes nothing; junk gets no session.
    pub fn is_initial_packet(&self, packet: &[u8]) -> bool {
        self.initial_session_id(packet).is_some()
    }

    /// The client's session id when `packet` is an initial packet
    /// ([`ServerSetup::is_initial_packet`]). A known address sending an initial packet with
    /// another session id than its session's ([`ServerSession::client_session_id`]) has
    /// restarted: the composer replaces its session.
    pub fn initial_session_id(&self, packet: &[u8]) -> Option<SessionId> {
        let op = OpcodeByte::parse(*packet.first()?).ok()?;
        if op.opcode != Opcode::ControlHardResetClientV2 || op.key_id != KeyId::ZERO {
            return None;
        }
        let mut copy = [0u8; TRANSMIT_BUF_LEN];
        let copy = copy.get_mut(..packet.len())?;
        copy.copy_from_slice(packet);
        let (_, len) = self.wrap.unwrap(copy).ok()?;
        let control = ControlPacket::parse(copy.get(..len)?).ok()?;
        (control.op.opcode == Opcode::ControlHardResetClientV2
            && control.body.acks.is_empty()
            && control.body.message_id == Some(0))
        .then_some(control.session_id)
    }

    /// The options string of the server's key-method message, as a 2.6 server writes it
    /// (`V4,dev-type tun,link-mtu N,tun-mtu N,proto UDPv4,[keydir 0,]auth SHA1,keysize 128,
    /// [tls-auth,]key-method 2,tls-server`).
    fn options_string(&self, transport: TransportKind) -> String {
        let tcp = transport == TransportKind::TcpLengthPrefixed;
        // The link-mtu of 2.6's placeholder BF-CBC/SHA1 layout, as its OCC string has it.
        let link_mtu = u32::from(self.tun_mtu) + 41 + if tcp { 2 } else { 0 };
        let proto = if tcp { "TCPv4_SERVER" } else { "UDPv4" };
        let mut out = format!(
            "V4,dev-type tun,link-mtu {link_mtu},tun-mtu {},proto {proto}",
            self.tun_mtu
        );
        if let Some(dir) = self.tls_auth_keydir.filter(|d| *d <= 1) {
            out.push_str(&format!(",keydir {dir}"));
        }
        out.push_str(",auth SHA1,keysize 128");
        if self.tls_auth_keydir.is_some() {
            out.push_str(",tls-auth");
        }
        out.push_str(",key-method 2,tls-server");
        out
    }
}

/// What the composer assigned to one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientLease {
    /// The client's tunnel address (`ifconfig ip netmask`).
    pub ip: Ipv4Addr,
    /// The tunnel subnet's netmask.
    pub netmask: Ipv4Addr,
    /// The server's tunnel address (`route-gateway`).
    pub gateway: Ipv4Addr,
    /// The 24-bit peer id (`peer-id`, `P_DATA_V2`), unique among the server's sessions.
    pub peer_id: u32,
}

/// What a session tells the composer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerSessionEvent {
    /// The client sent a username (and password): answer with [`ServerSession::auth_verdict`].
    /// Nothing is pushed before the answer. Emitted at most once per session.
    Authenticate {
        /// The username.
        username: String,
        /// The password (or a token), redacted in `Debug`.
        password: SecretString,
        /// The common name of the client's certificate, if it presented one.
        common_name: Option<String>,
    },
    /// The push went out and data flows.
    Up {
        /// The negotiated data cipher.
        cipher: DataCipher,
        /// The common name of the client's certificate, if any.
        common_name: Option<String>,
        /// The username, if one was sent.
        username: Option<String>,
        /// The client's peer-info text.
        peer_info: String,
    },
    /// The session is over; always the last event.
    Down(Failure),
}

/// Why [`ServerSession::encapsulate`] produced nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncapError {
    /// The session is not up (handshaking, closing or down).
    #[error("the session is not up")]
    NotUp,
    /// The inner packet is larger than `tun-mtu`, or empty.
    #[error("an inner packet of {len} bytes does not fit tun-mtu {mtu}")]
    BadSize {
        /// Its length.
        len: usize,
        /// The tunnel MTU.
        mtu: u16,
    },
    /// Too little headroom or tailroom around the packet ([`HEADROOM`], [`TAILROOM`]).
    #[error("not enough room around the inner packet")]
    NoRoom,
    /// The data key's packet ids are exhausted; a renegotiation is under way.
    #[error("the data key is exhausted; renegotiating")]
    KeyExhausted,
}

/// Counters of a server session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerSessionStats {
    /// Control packets with a message id sent for the first time.
    pub control_sent: u64,
    /// Control packets retransmitted.
    pub control_retransmitted: u64,
    /// `P_ACK_V1` packets sent.
    pub acks_sent: u64,
    /// Control packets received and accepted.
    pub control_received: u64,
    /// Control packets whose tls-auth/tls-crypt check failed.
    pub control_unauthentic: u64,
    /// Inner packets sealed.
    pub packets_sent: u64,
    /// Inner packets handed up.
    pub packets_received: u64,
    /// Keepalive pings sent.
    pub pings_sent: u64,
    /// Keepalive pings received.
    pub pings_received: u64,
    /// PUSH_REPLY bundles sent.
    pub push_replies_sent: u64,
    /// Renegotiations completed (new data keys installed).
    pub renegotiations: u64,
    /// Outer packets dropped, by reason.
    pub drops: DropCounts,
}

/// Where the session stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Up,
    /// A last control message (`AUTH_FAILED`, `RESTART`, `HALT`) is on its way; down with
    /// `failure` once it is acknowledged or at `until`.
    Closing {
        until: Instant,
        failure: Failure,
    },
    Down,
}

/// Where authentication stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Auth {
    /// No key-method message yet.
    Waiting,
    /// [`ServerSessionEvent::Authenticate`] sent; no verdict yet.
    Pending,
    Granted,
    /// Refused; `sent` once `AUTH_FAILED` is queued.
    Refused {
        reason: String,
        sent: bool,
    },
}

/// The data channel's parameters, settled by the first key-method message.
#[derive(Clone, Copy, Debug)]
struct Negotiated {
    data: DataConfig,
    ekm: bool,
    request_push: bool,
    cc_exit: bool,
}

/// The control channel of one key id.
struct KeyState {
    key_id: KeyId,
    reliable: Reliable,
    tls: ServerTls,
    reset_seen: bool,
    tls_out: Vec<u8>,
    plaintext: Vec<u8>,
    server_keys: ServerKeySource,
    client_keys: Option<crate::control::keymethod::ClientKeySource>,
    key_method_sent: bool,
    data_installed: bool,
    started: Instant,
    deadline: Instant,
}

impl core::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyState")
            .field("key_id", &self.key_id.get())
            .field("key_method_sent", &self.key_method_sent)
            .field("data_installed", &self.data_installed)
            .finish_non_exhaustive()
    }
}

impl Drop for KeyState {
    fn drop(&mut self) {
        self.plaintext.zeroize();
    }
}

/// What the in-band sender has due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InBand {
    OccReply,
    Ping,
}

/// One client's session on the server. See the [module documentation](self).
#[derive(Debug)]
pub struct ServerSession {
    setup: Arc<ServerSetup>,
    lease: ClientLease,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    wall_time: WallTime,
    wall_clock: WallClock,
    rng: SeededRng,
    data_seed: Seed,
    options: String,
    local_sid: SessionId,
    remote_sid: Option<SessionId>,
    replay_sent: u32,
    replay_time: u32,
    replay_in: ReplayWindow,
    max_payload: usize,
    /// The current key state first, then the one being negotiated, if any.
    keys: Vec<KeyState>,
    data: DataKeys,
    negotiated: Option<Negotiated>,
    auth: Auth,
    username: Option<String>,
    common_name: Option<String>,
    peer_info: String,
    push_requested: bool,
    pushed_at: Option<Instant>,
    phase: Phase,
    ping: Option<Duration>,
    ping_restart: Option<Duration>,
    last_sent: Instant,
    last_received: Instant,
    reneg_at: Option<Instant>,
    promote_at: Option<Instant>,
    occ_reply_pending: bool,
    final_flush: bool,
    events: VecDeque<ServerSessionEvent>,
    stats: ServerSessionStats,
    now: Instant,
}

/// The name a data cipher has in `IV_CIPHERS` and in the pushed `cipher`.
fn cipher_name(cipher: DataCipher) -> &'static str {
    match cipher {
        DataCipher::Aead(alg) => alg.openvpn_name(),
        DataCipher::CbcHmac { cipher, .. } => cipher.openvpn_name(),
    }
}

/// OpenVPN 2.6's `ncp_get_best_cipher`: the first server cipher in the client's NCP list, or
/// equal to the `cipher` of its options string when it sends no `IV_CIPHERS`.
fn select_cipher(
    server: &[DataCipher],
    peer: &PeerInfo,
    client_options: &str,
) -> Option<DataCipher> {
    let list = peer.ncp_list();
    let remote = if peer.ciphers.is_some() {
        None
    } else {
        keymethod::options_cipher(client_options)
    };
    server.iter().copied().find(|c| {
        let name = cipher_name(*c);
        list.iter().any(|l| l.eq_ignore_ascii_case(name))
            || remote.is_some_and(|r| r.eq_ignore_ascii_case(name))
    })
}

/// Splits `options` into PUSH_REPLY messages as 2.6's `send_push_reply` does.
fn push_bundles(options: &[String]) -> Vec<String> {
    let safe_cap = PUSH_BUNDLE_SIZE - PUSH_BUNDLE_EXTRA;
    let mut bundles = Vec::new();
    let mut buf = String::from("PUSH_REPLY");
    let mut multi = false;
    for option in options {
        if buf.len() + option.len() >= safe_cap {
            buf.push_str(",push-continuation 2");
            bundles.push(core::mem::replace(&mut buf, String::from("PUSH_REPLY")));
            multi = true;
        }
        buf.push(',');
        buf.push_str(option);
    }
    if multi {
        buf.push_str(",push-continuation 1");
    }
    bundles.push(buf);
    bundles
}

impl ServerSession {
    /// A session for a client whose first packet (an initial packet,
    /// [`ServerSetup::is_initial_packet`]) is about to be given to
    /// [`ServerSession::receive`]. Every random choice (session id, key-method randoms, TLS)
    /// comes from `seed`, so a run replays byte for byte; `wall` gives certificate validity
    /// and the replay ids of wrapped control packets.
    pub fn new(
        setup: Arc<ServerSetup>,
        lease: ClientLease,
        transport: TransportKind,
        seed: &Seed,
        now: Instant,
        wall: WallClock,
    ) -> Self {
        let provider = TlsProvider::new(seed);
        provider.wall_time().set(wall.at(now));
        let mut rng = seed.child("openvpn.server.session").rng();
        let local_sid = loop {
            let sid = SessionId(rng.array());
            if sid.is_defined() {
                break sid;
            }
        };
        let tls_config = setup.tls.config(&provider);
        // Unknown address family: leave room for IPv6.
        let max_payload = TLS_MTU
            .saturating_sub(48 + transport.prefix_len() + setup.wrap.overhead())
            .saturating_sub(ControlPacket::HEADER_LEN + 1 + 4 * MAX_PIGGYBACK_ACKS + 8 + 4)
            .max(64);
        let (ping, ping_restart) = match setup.keepalive {
            Some((ping, restart)) => (Some(ping), Some(restart * 2)),
            None => (None, None),
        };
        let mut session = Self {
            options: setup.options_string(transport),
            lease,
            tls_config: None,
            wall_time: provider.wall_time().clone(),
            wall_clock: wall,
            rng,
            data_seed: seed.child("openvpn.server.data"),
            local_sid,
            remote_sid: None,
            replay_sent: 0,
            replay_time: u32::try_from(wall.at(now).as_secs()).unwrap_or(u32::MAX),
            replay_in: ReplayWindow::new(ReplayConfig::default()),
            max_payload,
            keys: Vec::with_capacity(2),
            data: DataKeys::new(),
            negotiated: None,
            auth: Auth::Waiting,
            username: None,
            common_name: None,
            peer_info: String::new(),
            push_requested: false,
            pushed_at: None,
            phase: Phase::Handshaking,
            ping,
            ping_restart,
            last_sent: now,
            last_received: now,
            reneg_at: None,
            promote_at: None,
            occ_reply_pending: false,
            final_flush: false,
            events: VecDeque::new(),
            stats: ServerSessionStats::default(),
            now,
            setup,
        };
        match tls_config {
            Ok(config) => {
                session.tls_config = Some(config);
                match session.new_key_state(KeyId::ZERO, Opcode::ControlHardResetServerV2, now) {
                    Ok(ks) => session.keys.push(ks),
                    Err(failure) => session.fail(failure),
                }
            }
            Err(failure) => session.fail(failure),
        }
        session
    }

    fn new_key_state(
        &mut self,
        key_id: KeyId,
        reset: Opcode,
        now: Instant,
    ) -> Result<KeyState, Failure> {
        let config = self
            .tls_config
            .as_ref()
            .ok_or_else(|| Failure::new(Fault::Config, "no TLS configuration"))?;
        let tls = ServerTls::new(config, self.wall_time.clone())?;
        let mut reliable = Reliable::default();
        reliable.queue(reset, Vec::new(), now);
        Ok(KeyState {
            key_id,
            reliable,
            tls,
            reset_seen: false,
            tls_out: Vec::new(),
            plaintext: Vec::new(),
            server_keys: ServerKeySource {
                random1: self.rng.array(),
                random2: self.rng.array(),
            },
            client_keys: None,
            key_method_sent: false,
            data_installed: false,
            started: now,
            deadline: now + self.setup.hand_window,
        })
    }

    // ---- accessors ----

    /// The client's peer id (from its lease).
    pub fn peer_id(&self) -> u32 {
        self.lease.peer_id
    }

    /// The client's lease.
    pub fn lease(&self) -> &ClientLease {
        &self.lease
    }

    /// Whether data flows.
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Whether the session has ended ([`ServerSessionEvent::Down`] was emitted).
    pub fn is_down(&self) -> bool {
        self.phase == Phase::Down
    }

    /// The session's counters.
    pub fn stats(&self) -> ServerSessionStats {
        let mut stats = self.stats;
        stats.drops = stats.drops.merged(&self.data.drops());
        for ks in &self.keys {
            let r = ks.reliable.stats();
            stats.control_sent += r.sent;
            stats.control_retransmitted += r.retransmitted;
        }
        stats
    }

    /// The common name of the client's certificate, once verified.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The username the client sent, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The negotiated data cipher, once the client's key-method message arrived.
    pub fn cipher(&self) -> Option<DataCipher> {
        self.negotiated.map(|n| n.data.cipher)
    }

    /// The client's control-channel session id, once its reset arrived.
    pub fn client_session_id(&self) -> Option<SessionId> {
        self.remote_sid
    }

    /// The server's control-channel session id for this client.
    pub fn local_session_id(&self) -> SessionId {
        self.local_sid
    }

    /// The client's peer-info text, once its key-method message arrived.
    pub fn peer_info(&self) -> &str {
        &self.peer_info
    }

    /// The key id data packets are sent with.
    pub fn data_key_id(&self) -> Option<KeyId> {
        self.data.primary_key_id()
    }

    /// The key id of the previous data key while it is still accepted.
    pub fn lame_duck_key_id(&self) -> Option<KeyId> {
        self.data.lame_duck_key_id()
    }

    /// Whether a renegotiation is under way.
    pub fn is_renegotiating(&self) -> bool {
        self.keys.len() > 1
    }

    /// Starts a renegotiation from the server side now, as `reneg` would. Ignored unless
    /// the session is up and no renegotiation is running.
    pub fn renegotiate(&mut self, now: Instant) {
        let now = self.advance(now);
        self.start_renegotiation(now);
    }

    // ---- internals ----

    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn fail(&mut self, failure: Failure) {
        if self.phase == Phase::Down {
            return;
        }
        tracing::debug!(
            peer_id = self.lease.peer_id,
            fault = ?failure.fault,
            message = %failure.message,
            "server session down"
        );
        self.phase = Phase::Down;
        self.data.clear();
        self.final_flush = true;
        self.events.push_back(ServerSessionEvent::Down(failure));
    }

    fn start_renegotiation(&mut self, now: Instant) {
        if self.phase != Phase::Up || self.keys.len() != 1 {
            return;
        }
        let Some(key_id) = self.keys.first().map(|k| k.key_id.next()) else {
            return;
        };
        match self.new_key_state(key_id, Opcode::ControlSoftResetV1, now) {
            Ok(ks) => {
                tracing::debug!(key_id = key_id.get(), "server renegotiates");
                self.reneg_at = None;
                self.keys.push(ks);
            }
            Err(failure) => self.fail(failure),
        }
    }

    /// Queues a NUL-terminated control message on the current key's TLS session.
    fn send_control_message(&mut self, text: &str) -> Result<(), Failure> {
        let ks = self
            .keys
            .first_mut()
            .ok_or_else(|| Failure::new(Fault::Config, "no key state"))?;
        let mut message = Vec::with_capacity(text.len() + 1);
        message.extend_from_slice(text.as_bytes());
        message.push(0);
        ks.tls.send_plaintext(&message)
    }

    /// Moves every key state forward after an input.
    fn progress(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.keys.len() {
            if self.phase == Phase::Down {
                return;
            }
            let key_id = self.keys.get(index).map(|k| k.key_id);
            if let Err(failure) = self.progress_key(index, now) {
                self.fail(failure);
                return;
            }
            // A finished renegotiation retires the old key state: index 0 is the new one.
            if self.keys.get(index).map(|k| k.key_id) == key_id {
                index += 1;
            }
        }
        if let Phase::Closing { failure, .. } = &self.phase
            && let Some(ks) = self.keys.first()
            && ks.tls_out.is_empty()
            && ks.reliable.all_acknowledged()
        {
            let failure = failure.clone();
            self.fail(failure);
        }
    }

    fn progress_key(&mut self, index: usize, now: Instant) -> Result<(), Failure> {
        let Some(ks) = self.keys.get_mut(index) else {
            return Ok(());
        };
        ks.tls.take_plaintext(&mut ks.plaintext);
        let mut hello = None;
        if ks.client_keys.is_none() && !ks.plaintext.is_empty() {
            match parse_client_message(&ks.plaintext) {
                Ok(Some((message, used))) => {
                    if let Some(consumed) = ks.plaintext.get_mut(..used) {
                        consumed.zeroize();
                    }
                    ks.plaintext.drain(..used.min(ks.plaintext.len()));
                    ks.client_keys = Some(message.key_source.clone());
                    hello = Some(message);
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::new(Fault::PeerMisbehaved, e.to_string())),
            }
        }
        let messages = if ks.client_keys.is_some() {
            push::split_messages(&mut ks.plaintext)
        } else {
            Vec::new()
        };
        if ks.plaintext.len() > push::MAX_MESSAGE_LEN * 4 {
            return Err(Failure::new(
                Fault::PeerMisbehaved,
                "the client sent control-channel text without a terminating NUL",
            ));
        }
        let peer_closed = ks.tls.peer_closed();
        if let Some(message) = hello {
            self.client_hello(index, message)?;
        }
        self.send_key_method(index, now)?;
        for message in messages {
            self.client_message(&message, now)?;
            if matches!(self.phase, Phase::Down) {
                return Ok(());
            }
        }
        if index == 0 && self.keys.first().is_some_and(|k| k.key_method_sent) {
            self.after_key_method(now)?;
        }
        if peer_closed && self.phase == Phase::Handshaking {
            return Err(Failure::new(
                Fault::PeerMisbehaved,
                "the client closed TLS before the key exchange completed",
            ));
        }
        self.cut_tls(now);
        Ok(())
    }

    /// Cuts pending TLS output of every key state into control packets.
    fn cut_tls(&mut self, now: Instant) {
        let max_payload = self.max_payload;
        for ks in &mut self.keys {
            ks.tls.take_tls(&mut ks.tls_out);
            while !ks.tls_out.is_empty() && ks.reliable.can_queue() {
                let take = ks.tls_out.len().min(max_payload);
                let chunk: Vec<u8> = ks.tls_out.drain(..take).collect();
                ks.reliable.queue(Opcode::ControlV1, chunk, now);
            }
        }
    }

    /// The client's key-method message of key state `index`.
    fn client_hello(&mut self, index: usize, message: ClientKeyMessage) -> Result<(), Failure> {
        let common_name = self.keys.get(index).and_then(|k| k.tls.common_name());
        let username = (!message.username.is_empty()).then(|| message.username.clone());
        if self.negotiated.is_some() {
            // A renegotiation: the same client must come back.
            if username != self.username || common_name != self.common_name {
                return Err(Failure::new(
                    Fault::Auth,
                    "the client's username or certificate common name changed in a \
                     renegotiation",
                ));
            }
            return Ok(());
        }
        let peer = PeerInfo::parse(&message.peer_info);
        tracing::debug!(
            options = %message.options,
            peer_info = %message.peer_info.replace('\n', " "),
            "client key-method message"
        );
        self.peer_info = message.peer_info.clone();
        self.username = username;
        self.common_name = common_name.clone();
        let cipher = select_cipher(&self.setup.data_ciphers, &peer, &message.options);
        let Some(cipher) = cipher else {
            self.auth = Auth::Refused {
                reason: NO_SHARED_CIPHER.to_owned(),
                sent: false,
            };
            return Ok(());
        };
        let data_v2 = peer.proto & iv_proto::DATA_V2 != 0;
        let mut data = DataConfig::new(cipher);
        if data_v2 {
            data.peer_id = Some(PeerId::new(self.lease.peer_id).ok_or_else(|| {
                Failure::new(
                    Fault::Config,
                    format!("peer id {} is not a 24-bit value", self.lease.peer_id),
                )
            })?);
        }
        self.negotiated = Some(Negotiated {
            data,
            ekm: peer.proto & iv_proto::TLS_KEY_EXPORT != 0,
            request_push: peer.proto & iv_proto::REQUEST_PUSH != 0,
            cc_exit: peer.proto & iv_proto::CC_EXIT_NOTIFY != 0,
        });
        if self.setup.require_user_pass && message.username.is_empty() {
            self.auth = Auth::Refused {
                reason: String::new(),
                sent: false,
            };
            tracing::debug!("the client sent no username although one is required");
        } else if self.setup.require_user_pass || !message.username.is_empty() {
            self.auth = Auth::Pending;
            self.events.push_back(ServerSessionEvent::Authenticate {
                username: message.username.clone(),
                password: SecretString::new(message.password.as_str().to_owned()),
                common_name,
            });
        } else {
            self.auth = Auth::Granted;
        }
        Ok(())
    }

    /// Sends the server's key-method message of key state `index` once the client's arrived
    /// and TLS finished; a renegotiated key then gets its data key.
    fn send_key_method(&mut self, index: usize, now: Instant) -> Result<(), Failure> {
        let options = self.options.clone();
        let Some(ks) = self.keys.get_mut(index) else {
            return Ok(());
        };
        if ks.key_method_sent || ks.client_keys.is_none() || ks.tls.is_handshaking() {
            return Ok(());
        }
        let mut out = Vec::new();
        encode_server_message(&ks.server_keys, &options, &mut out);
        let sent = ks.tls.send_plaintext(&out);
        out.zeroize();
        sent?;
        ks.key_method_sent = true;
        if index > 0 && self.negotiated.is_some() {
            self.install_data_key(index, false)?;
            // The new key state becomes the current one.
            let old = self.keys.remove(0);
            let r = old.reliable.stats();
            self.stats.control_sent += r.sent;
            self.stats.control_retransmitted += r.retransmitted;
            self.stats.renegotiations += 1;
            let started = self.keys.first().map_or(now, |k| k.started);
            self.promote_at = Some((started + self.setup.hand_window).max(now));
            if self.data.needs_rekey() {
                self.promote(now);
            }
            self.reneg_at = self.setup.reneg.map(|d| now + d);
        }
        Ok(())
    }

    /// Key 0 after its key-method message: AUTH_FAILED or the push, when due.
    fn after_key_method(&mut self, now: Instant) -> Result<(), Failure> {
        match &self.auth {
            Auth::Refused {
                reason,
                sent: false,
            } => {
                let reason = reason.clone();
                let text = if reason.is_empty() {
                    "AUTH_FAILED".to_owned()
                } else {
                    format!("AUTH_FAILED,{reason}")
                };
                self.send_control_message(&text)?;
                self.auth = Auth::Refused {
                    reason: reason.clone(),
                    sent: true,
                };
                let detail = if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                };
                let fault = if reason == NO_SHARED_CIPHER {
                    Fault::PeerIncompatible
                } else {
                    Fault::Auth
                };
                self.phase = Phase::Closing {
                    until: now + AUTH_FAILED_GRACE,
                    failure: Failure::new(
                        fault,
                        format!("the client was refused (AUTH_FAILED{detail})"),
                    ),
                };
                Ok(())
            }
            Auth::Granted if self.phase == Phase::Handshaking => {
                let asked = self.push_requested || self.negotiated.is_some_and(|n| n.request_push);
                if asked {
                    self.push(now)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Installs key 0's data key (once) and sends the push.
    fn push(&mut self, now: Instant) -> Result<(), Failure> {
        let Some(negotiated) = self.negotiated else {
            return Ok(());
        };
        if self.keys.first().is_some_and(|k| !k.data_installed) {
            self.install_data_key(0, true)?;
        }
        for bundle in push_bundles(&self.push_options(negotiated)) {
            self.send_control_message(&bundle)?;
            self.stats.push_replies_sent += 1;
        }
        self.pushed_at = Some(now);
        self.push_requested = false;
        if self.phase == Phase::Handshaking {
            self.phase = Phase::Up;
            self.last_received = now;
            self.last_sent = now;
            self.reneg_at = self
                .setup
                .reneg
                .map(|d| self.keys.first().map_or(now, |k| k.started) + d);
            tracing::debug!(peer_id = self.lease.peer_id, cipher = %negotiated.data.cipher.label(), "client up");
            self.events.push_back(ServerSessionEvent::Up {
                cipher: negotiated.data.cipher,
                common_name: self.common_name.clone(),
                username: self.username.clone(),
                peer_info: self.peer_info.clone(),
            });
        }
        Ok(())
    }

    /// The options of this client's PUSH_REPLY, in 2.6's order.
    fn push_options(&self, negotiated: Negotiated) -> Vec<String> {
        let setup = &self.setup;
        let peer = PeerInfo::parse(&self.peer_info);
        let mut options = setup.push.clone();
        options.push(format!("route-gateway {}", self.lease.gateway));
        options.push("topology subnet".to_owned());
        if let Some((ping, restart)) = setup.keepalive {
            options.push(format!("ping {}", ping.as_secs()));
            options.push(format!("ping-restart {}", restart.as_secs()));
        }
        options.push(format!("ifconfig {} {}", self.lease.ip, self.lease.netmask));
        if let Some(peer_id) = negotiated.data.peer_id {
            options.push(format!("peer-id {}", peer_id.get()));
        }
        if peer.supports_ncp() {
            options.push(format!("cipher {}", cipher_name(negotiated.data.cipher)));
        }
        let mut flags = String::new();
        if negotiated.cc_exit {
            flags.push_str(" cc-exit");
            if negotiated.ekm {
                flags.push_str(" tls-ekm");
            }
        } else if negotiated.ekm {
            options.push("key-derivation tls-ekm".to_owned());
        }
        if !flags.is_empty() {
            options.push(format!("protocol-flags{flags}"));
        }
        if peer.mtu.is_some() {
            options.push(format!("tun-mtu {}", setup.tun_mtu));
        }
        options
    }

    /// Derives the data key of key state `index` and installs it: as the only key (key 0)
    /// or as the secondary one (a renegotiation).
    fn install_data_key(&mut self, index: usize, first: bool) -> Result<(), Failure> {
        let negotiated = self
            .negotiated
            .ok_or_else(|| Failure::new(Fault::PeerMisbehaved, "no data cipher negotiated"))?;
        let (client_sid, server_sid) = (self.remote_sid.unwrap_or_default(), self.local_sid);
        let ks = self
            .keys
            .get_mut(index)
            .ok_or_else(|| Failure::new(Fault::Config, "no key state for the data key"))?;
        let key2 = if negotiated.ekm {
            let mut bytes = Zeroizing::new([0u8; Key2::LEN]);
            ks.tls.export_keying_material(EKM_LABEL, bytes.as_mut())?;
            Key2::from_bytes(*bytes)
        } else {
            let client = ks.client_keys.as_ref().ok_or_else(|| {
                Failure::new(Fault::PeerMisbehaved, "no client key-method message")
            })?;
            Key2::from_legacy_prf(client, &ks.server_keys, client_sid.0, server_sid.0)
        };
        let channel = DataChannel::from_key2(
            key2.as_bytes(),
            Key2Role::Server,
            ks.key_id,
            &negotiated.data,
            &self.data_seed,
        )
        .map_err(|e| Failure::new(Fault::PeerMisbehaved, e.to_string()))?;
        ks.data_installed = true;
        let installed = if first {
            self.data.set_primary(channel)
        } else {
            self.data.install_secondary(channel)
        };
        installed.map_err(|e| Failure::new(Fault::Config, e.to_string()))
    }

    fn promote(&mut self, now: Instant) {
        if self.data.secondary_key_id().is_some() {
            let _ = self.data.promote(now + DEFAULT_TRAN_WINDOW);
            tracing::debug!(key_id = ?self.data.primary_key_id(), "server sends with the new key");
        }
        self.promote_at = None;
    }

    /// A text control message from the client.
    fn client_message(&mut self, text: &str, now: Instant) -> Result<(), Failure> {
        if text == "PUSH_REQUEST" {
            match self.phase {
                Phase::Handshaking => self.push_requested = true,
                Phase::Up
                    if self
                        .pushed_at
                        .is_none_or(|at| now >= at + PUSH_REPLY_EXPIRY) =>
                {
                    self.push(now)?;
                }
                _ => {}
            }
        } else if text == "EXIT" {
            self.fail(Failure::new(
                Fault::Closed,
                "the client disconnected (EXIT)",
            ));
        } else {
            tracing::debug!(message = %text, "control message from the client ignored");
        }
        Ok(())
    }

    // ---- input ----

    /// Processes one outer packet from the client: a UDP datagram, or one packet of the TCP
    /// stream without its length prefix. Data packets are decrypted in place: an inner IP
    /// packet comes back as [`Decapsulated::Inner`] with its range in `packet`; control
    /// packets, pings and OCC messages as [`Decapsulated::Consumed`] (poll for what they
    /// caused).
    ///
    /// # Errors
    ///
    /// The [`DropReason`] of a packet that changed nothing: malformed, unauthentic,
    /// replayed, for an unknown key or session, or before the session can take it.
    pub fn receive(&mut self, now: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        let now = self.advance(now);
        let result = if self.phase == Phase::Down {
            Err(DropReason::NotReady)
        } else {
            match packet.first().map(|&b| OpcodeByte::parse(b)) {
                None | Some(Err(_)) => Err(DropReason::Malformed),
                Some(Ok(op)) if op.opcode.is_data() => return self.receive_data(now, packet),
                Some(Ok(_)) => self.receive_control(now, packet),
            }
        };
        if let Err(reason) = result {
            self.stats.drops.record(reason);
        }
        result
    }

    fn receive_control(
        &mut self,
        now: Instant,
        packet: &mut [u8],
    ) -> Result<Decapsulated, DropReason> {
        let (replay, len) = self.setup.wrap.unwrap(packet).map_err(|_| {
            self.stats.control_unauthentic += 1;
            DropReason::Unauthentic
        })?;
        let plain = packet.get(..len).ok_or(DropReason::Malformed)?;
        let control = ControlPacket::parse(plain).map_err(|_| DropReason::Malformed)?;
        let replay = replay.map(|r| PacketId {
            id: r.packet_id,
            time: r.time,
        });
        if let Some(pid) = replay {
            self.replay_in
                .check(pid, now)
                .map_err(|_| DropReason::Replayed)?;
        }
        let opcode = control.op.opcode;
        let key_id = control.op.key_id;
        match opcode {
            Opcode::ControlHardResetClientV2
            | Opcode::ControlSoftResetV1
            | Opcode::ControlV1
            | Opcode::AckV1 => {}
            _ => return Err(DropReason::Unsupported),
        }
        if opcode == Opcode::ControlHardResetClientV2 && key_id != KeyId::ZERO {
            return Err(DropReason::Malformed);
        }
        match self.remote_sid {
            None if opcode == Opcode::ControlHardResetClientV2 => {}
            None => return Err(DropReason::NotReady),
            Some(sid) if sid == control.session_id => {}
            Some(_) => return Err(DropReason::UnknownKey),
        }
        if !control.body.acks.is_empty() && control.body.remote_session_id != Some(self.local_sid) {
            return Err(DropReason::UnknownKey);
        }
        let index = match self.keys.iter().position(|k| k.key_id == key_id) {
            Some(index) => index,
            None if opcode == Opcode::ControlSoftResetV1
                && self.phase == Phase::Up
                && self.keys.len() == 1
                && self.keys.first().is_some_and(|k| k.key_id.next() == key_id) =>
            {
                // The client renegotiates: answer with our own soft reset under its key id.
                let ks = self
                    .new_key_state(key_id, Opcode::ControlSoftResetV1, now)
                    .map_err(|_| DropReason::NotReady)?;
                tracing::debug!(key_id = key_id.get(), "the client renegotiates");
                self.reneg_at = None;
                self.keys.push(ks);
                self.keys.len() - 1
            }
            None => return Err(DropReason::UnknownKey),
        };
        // Accepted: from here on the packet changes state.
        if let Some(pid) = replay {
            self.replay_in.commit(pid, now);
        }
        if self.remote_sid.is_none() {
            self.remote_sid = Some(control.session_id);
        }
        self.last_received = now;
        self.stats.control_received += 1;
        let unix_now = self.wall_clock.at(now);
        let mut tls_error = None;
        if let Some(ks) = self.keys.get_mut(index) {
            ks.reliable.acknowledge(control.body.acks.as_slice(), now);
            if let Some(id) = control.body.message_id {
                ks.reliable.receive(id, opcode, control.body.payload);
            }
            while let Some((opcode, payload)) = ks.reliable.take_in_order() {
                match opcode {
                    Opcode::ControlHardResetClientV2 | Opcode::ControlSoftResetV1 => {
                        ks.reset_seen = true;
                    }
                    Opcode::ControlV1 if ks.reset_seen => {
                        if let Err(e) = ks.tls.feed(unix_now, &payload) {
                            tls_error = Some(e);
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(failure) = tls_error {
            // The alert goes out in the final flush.
            self.cut_tls(now);
            self.fail(failure);
            return Ok(Decapsulated::Consumed);
        }
        self.progress(now);
        Ok(Decapsulated::Consumed)
    }

    fn receive_data(
        &mut self,
        now: Instant,
        packet: &mut [u8],
    ) -> Result<Decapsulated, DropReason> {
        if !matches!(self.phase, Phase::Up | Phase::Closing { .. }) {
            self.stats.drops.record(DropReason::NotReady);
            return Err(DropReason::NotReady);
        }
        let key_id = packet.first().and_then(|b| KeyId::new(b & 7));
        let payload = self.data.open(now, packet)?;
        self.last_received = now;
        if key_id.is_some() && key_id == self.data.secondary_key_id() {
            // The client sends with the new key: so do we.
            self.promote(now);
        }
        match inband::classify(packet.get(payload.clone()).unwrap_or_default()) {
            Payload::Ping => {
                self.stats.pings_received += 1;
                Ok(Decapsulated::Consumed)
            }
            Payload::Occ(OccMessage::Request) => {
                self.occ_reply_pending = true;
                Ok(Decapsulated::Consumed)
            }
            Payload::Occ(OccMessage::Exit) => {
                self.fail(Failure::new(
                    Fault::Closed,
                    "the client disconnected (OCC_EXIT)",
                ));
                Ok(Decapsulated::Consumed)
            }
            Payload::Occ(_) => Ok(Decapsulated::Consumed),
            Payload::Packet => {
                self.stats.packets_received += 1;
                Ok(Decapsulated::Inner(payload))
            }
        }
    }

    /// Answers [`ServerSessionEvent::Authenticate`]: `Ok` lets the client in (the push
    /// follows), `Err(reason)` sends `AUTH_FAILED,reason` and ends the session once it is
    /// delivered (or after [`AUTH_FAILED_GRACE`]). Ignored when no verdict is awaited.
    pub fn auth_verdict(&mut self, now: Instant, verdict: Result<(), String>) {
        let now = self.advance(now);
        if self.auth != Auth::Pending || self.phase == Phase::Down {
            return;
        }
        self.auth = match verdict {
            Ok(()) => Auth::Granted,
            Err(reason) => Auth::Refused {
                // A comma or NUL would cut the message short on the client.
                reason: reason.replace(['\0', '\r', '\n'], " "),
                sent: false,
            },
        };
        if self.keys.first().is_some_and(|k| k.key_method_sent)
            && let Err(failure) = self.after_key_method(now)
        {
            self.fail(failure);
        }
        self.progress(now);
    }

    /// Ends the session because the server shuts down: `RESTART` (`restart`, clients
    /// reconnect) or `HALT` (they exit) over the control channel, then
    /// [`ServerSessionEvent::Down`] with [`Fault::Closed`] once the client acknowledged it or
    /// after [`CLOSE_GRACE`]. Before the push, the session ends at once.
    pub fn close(&mut self, now: Instant, restart: bool) {
        let now = self.advance(now);
        match self.phase {
            Phase::Up => {}
            Phase::Handshaking => {
                return self.fail(Failure::new(
                    Fault::Closed,
                    "the server closed the session before the client was up",
                ));
            }
            Phase::Closing { .. } | Phase::Down => return,
        }
        let text = if restart { "RESTART" } else { "HALT" };
        if let Err(failure) = self.send_control_message(text) {
            return self.fail(failure);
        }
        self.phase = Phase::Closing {
            until: now + CLOSE_GRACE,
            failure: Failure::new(
                Fault::Closed,
                format!("the server closed the session ({text})"),
            ),
        };
        self.data.clear();
        self.progress(now);
    }

    // ---- output ----

    /// Seals the inner packet at `buf[payload]` in place for the client and returns the
    /// outer packet's range. `payload` must leave [`HEADROOM`] bytes before it and
    /// [`TAILROOM`] after it in `buf`. Allocates nothing.
    ///
    /// # Errors
    ///
    /// [`EncapError`]: not up, a packet over `tun-mtu`, too little room, or an exhausted key.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Result<Range<usize>, EncapError> {
        let now = self.advance(now);
        if self.phase != Phase::Up {
            return Err(EncapError::NotUp);
        }
        if payload.is_empty() || payload.len() > usize::from(self.setup.tun_mtu) {
            return Err(EncapError::BadSize {
                len: payload.len(),
                mtu: self.setup.tun_mtu,
            });
        }
        let outer = self.data.seal(now, buf, payload).map_err(|e| match e {
            SealError::NoRoom | SealError::Empty => EncapError::NoRoom,
            SealError::PacketIdExhausted => EncapError::KeyExhausted,
            _ => EncapError::NotUp,
        });
        if self.data.needs_rekey() {
            self.start_renegotiation(now);
            self.progress(now);
        }
        let outer = outer?;
        self.last_sent = now;
        self.stats.packets_sent += 1;
        Ok(outer)
    }

    /// The next control packet of key state `index`, written into `buf`.
    fn transmit_control(&mut self, index: usize, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let local = self.local_sid;
        let remote = self.remote_sid?;
        let final_flush = self.phase == Phase::Down;
        let ks = self.keys.get_mut(index)?;
        let message = ks
            .reliable
            .next_due(now)
            .filter(|m| !final_flush || !m.retransmission);
        let max_acks = match message {
            Some(_) => MAX_PIGGYBACK_ACKS,
            None if ks.reliable.has_pending_acks() => AckList::MAX,
            None => return None,
        };
        let acks = ks.reliable.ack_list(max_acks);
        let packet = ControlPacket {
            op: OpcodeByte {
                opcode: message.map_or(Opcode::AckV1, |m| m.opcode),
                key_id: ks.key_id,
            },
            session_id: local,
            body: ControlBody {
                acks,
                remote_session_id: (!acks.is_empty()).then_some(remote),
                message_id: message.map(|m| m.message_id),
                payload: message.map_or(&[][..], |m| m.payload),
            },
        };
        let plain_len = packet.encoded_len();
        if buf.len() < plain_len + self.setup.wrap.overhead() {
            tracing::warn!(
                len = buf.len(),
                needed = plain_len + self.setup.wrap.overhead(),
                "poll_transmit buffer too small"
            );
            return None;
        }
        packet.emit(buf).ok()?;
        let replay = ReplayId {
            packet_id: self.replay_sent.wrapping_add(1),
            time: self.replay_time,
        };
        let len = self.setup.wrap.wrap(replay, buf, plain_len).ok()?;
        self.replay_sent = replay.packet_id;
        match message.map(|m| m.message_id) {
            Some(id) => ks.reliable.sent(id, now),
            None => self.stats.acks_sent += 1,
        }
        ks.reliable.acks_sent(&acks);
        self.last_sent = now;
        Some(len)
    }

    fn ping_due(&self) -> Option<Instant> {
        (self.phase == Phase::Up)
            .then_some(self.ping)
            .flatten()
            .map(|ping| self.last_sent + ping)
    }

    fn due_in_band(&self, now: Instant) -> Option<InBand> {
        if self.phase != Phase::Up || !self.data.is_ready() {
            return None;
        }
        if self.occ_reply_pending {
            Some(InBand::OccReply)
        } else if self.ping_due().is_some_and(|at| now >= at) {
            Some(InBand::Ping)
        } else {
            None
        }
    }

    fn transmit_in_band(&mut self, kind: InBand, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let overhead = self.data.overhead()?;
        let payload_len = match kind {
            InBand::OccReply => inband::occ_reply_len(self.options.as_bytes()),
            InBand::Ping => inband::PING_MAGIC.len(),
        };
        if buf.len() < overhead.headroom + payload_len + overhead.tailroom {
            return None;
        }
        let payload = buf.get_mut(overhead.headroom..)?;
        let written = match kind {
            InBand::OccReply => inband::write_occ_reply(payload, self.options.as_bytes()),
            InBand::Ping => inband::write_ping(payload),
        }?;
        let outer = self
            .data
            .seal(now, buf, overhead.headroom..overhead.headroom + written)
            .ok()?;
        let len = outer.len();
        buf.copy_within(outer, 0);
        self.last_sent = now;
        match kind {
            InBand::OccReply => self.occ_reply_pending = false,
            InBand::Ping => self.stats.pings_sent += 1,
        }
        Some(len)
    }

    /// The next packet for the client (control packets, acknowledgements, pings, OCC
    /// replies), written at the start of `buf` (at least [`TRANSMIT_BUF_LEN`] bytes); returns
    /// its length, or `None` when nothing is due. Call until `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let now = self.advance(now);
        if self.phase == Phase::Down && !self.final_flush {
            return None;
        }
        for index in 0..self.keys.len() {
            if let Some(len) = self.transmit_control(index, now, buf) {
                return Some(len);
            }
        }
        if self.phase == Phase::Down {
            self.final_flush = false;
            return None;
        }
        let kind = self.due_in_band(now)?;
        self.transmit_in_band(kind, now, buf)
    }

    /// Acts on timers due at `now`: retransmissions are picked up by
    /// [`ServerSession::poll_transmit`]; hand-window, ping-restart, key transition,
    /// renegotiation and grace periods are handled here.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        if self.phase == Phase::Down {
            return;
        }
        self.data.handle_timeout(now);
        if self.phase == Phase::Handshaking
            && let Some(ks) = self.keys.first()
            && now >= ks.deadline
        {
            let what = match self.auth {
                Auth::Pending => "no authentication verdict",
                _ if ks.key_method_sent => "the client asked for no push",
                _ => "the client did not complete the TLS handshake and key exchange",
            };
            return self.fail(Failure::new(
                Fault::Timeout,
                format!(
                    "{what} within hand-window ({} s)",
                    self.setup.hand_window.as_secs()
                ),
            ));
        }
        if let Some(next) = self.keys.get(1)
            && now >= next.deadline
        {
            return self.fail(Failure::new(
                Fault::Timeout,
                format!(
                    "the renegotiation of key {} did not complete within hand-window ({} s)",
                    next.key_id.get(),
                    self.setup.hand_window.as_secs()
                ),
            ));
        }
        if let Phase::Closing { until, failure } = &self.phase
            && now >= *until
        {
            let failure = failure.clone();
            return self.fail(failure);
        }
        if matches!(self.phase, Phase::Up)
            && let Some(limit) = self.ping_restart
            && now >= self.last_received + limit
        {
            return self.fail(Failure::new(
                Fault::Timeout,
                format!(
                    "nothing received from the client for {} s (ping-restart)",
                    limit.as_secs()
                ),
            ));
        }
        if self.promote_at.is_some_and(|at| now >= at) {
            self.promote(now);
        }
        if self.reneg_at.is_some_and(|at| now >= at) || self.data.needs_rekey() {
            self.reneg_at = None;
            self.start_renegotiation(now);
        }
        self.progress(now);
    }

    /// The next time [`ServerSession::handle_timeout`] (or [`ServerSession::poll_transmit`])
    /// has something to do; `None` once the session is down.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Down {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        // Nothing can be sent before the client's reset named its session.
        if self.remote_sid.is_some() {
            for ks in &self.keys {
                consider(ks.reliable.poll_timeout());
                consider(ks.reliable.has_pending_acks().then_some(self.now));
            }
        }
        if self.phase == Phase::Handshaking {
            consider(self.keys.first().map(|k| k.deadline));
        }
        consider(self.keys.get(1).map(|k| k.deadline));
        consider(self.ping_due());
        consider((self.occ_reply_pending && self.phase == Phase::Up).then_some(self.now));
        if self.phase == Phase::Up {
            consider(self.ping_restart.map(|limit| self.last_received + limit));
            consider(self.reneg_at);
        }
        if let Phase::Closing { until, .. } = &self.phase {
            consider(Some(*until));
        }
        consider(self.promote_at);
        consider(self.data.poll_timeout());
        next
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ServerSessionEvent> {
        self.events.pop_front()
    }
}

/// The peer id a `P_DATA_V2` packet names, for finding its session (for instance after the
/// client floated to a new address); `None` for anything else.
pub fn data_v2_peer_id(packet: &[u8]) -> Option<u32> {
    match DataHeader::parse(packet).ok()? {
        DataHeader::V2 { peer_id, .. } => Some(peer_id.get()),
        DataHeader::V1 { .. } => None,
    }
}
