//! `ovpn_client_session`: a configuration byte (one of [`SESSION_CONFIGS`]: tls-crypt with a
//! client certificate, tls-auth with certificate and password, no wrapping with a password,
//! tls-crypt again), then steps (tag, u16 length, bytes; see [`crate::Records`]) fed to one
//! erebus OpenVPN client ([`TlsSession`]) over UDP after its transport connected, so its
//! first hard reset is out.
//!
//! Tags (modulo 8): 0 and 7, a datagram from the server: first through the packet parsers
//! ([`DataHeader::parse`], and [`ControlPacket::parse`] whose packet must write back to the
//! same bytes), then [`TlsSession::decapsulate`]; 1, the clock moves on by the body's
//! big-endian milliseconds (up to 4 bytes) and expired timers fire; 2, the clock jumps to the
//! session's next deadline; 3, [`TlsSession::encapsulate`] of the body; 4, `close`; 5,
//! [`TlsSession::renegotiate`]; 6, `transport_closed`. After each step the harness drains
//! `poll_transmit` and `poll_event` as a driver does: nothing comes after `Down`, and an
//! inner packet only comes out of an up session.
//!
//! The seeds are the packets of the server harness ([`crate::ovpn_server_session`]) answering
//! this very client, recorded: both sides are deterministic (fixed seeds, clock and PKI), so
//! replaying them brings the client up, through the reliability layer, the TLS handshake,
//! the key method exchange and PUSH_REPLY.

use std::net::SocketAddr;
use std::time::Duration;

use erebus_openvpn::packet::{ControlPacket, DataHeader};
use erebus_openvpn::tls_session::TlsSession;
use erebus_sansio::Instant;
use erebus_sansio::io::TransportError;
use erebus_sansio::tunnel::{Decapsulated, Tunnel, TunnelEvent};

use crate::Records;
use crate::ovpn_common::{SESSION_CONFIGS, client};

/// Tags of the steps.
pub const RECEIVE: u8 = 0;
/// Advance the clock by the body's milliseconds.
pub const ADVANCE: u8 = 1;
/// Jump to the next deadline.
pub const DEADLINE: u8 = 2;
/// Encapsulate the body.
pub const ENCAPSULATE: u8 = 3;
/// Close.
pub const CLOSE: u8 = 4;
/// Renegotiate.
pub const RENEGOTIATE: u8 = 5;
/// The transport failed.
pub const TRANSPORT_CLOSED: u8 = 6;

/// The server address the client talks to (never contacted).
pub const REMOTE: &str = "10.99.0.1:1194";
/// The seed byte of the client's randomness.
pub const CLIENT_SEED: u8 = 3;

/// The most packets or events drained after one step.
const DRAIN_LIMIT: usize = 256;

/// One client session and what it did.
pub struct Driver {
    /// The session.
    pub session: TlsSession,
    /// The clock.
    pub now: Instant,
    /// Every packet the session sent, in order (for seed building).
    pub sent: Vec<Vec<u8>>,
    /// Inner packets received.
    pub inner: usize,
    /// `Up` events.
    pub ups: usize,
    /// `Down` seen.
    pub down: bool,
    buf: Vec<u8>,
}

impl Driver {
    /// A client of configuration `config` whose transport just connected.
    pub fn new(config: u8) -> Self {
        let config = SESSION_CONFIGS[usize::from(config) % SESSION_CONFIGS.len()];
        let remote: SocketAddr = REMOTE.parse().expect("an address");
        let mut session = client(&config, remote, false, CLIENT_SEED);
        session.transport_connected(Instant::ZERO, remote);
        let mut driver = Self {
            session,
            now: Instant::ZERO,
            sent: Vec::new(),
            inner: 0,
            ups: 0,
            down: false,
            buf: vec![0; 4096],
        };
        driver.drain();
        driver
    }

    /// Runs one step, then drains.
    pub fn step(&mut self, tag: u8, body: &[u8]) {
        match tag % 8 {
            ADVANCE => {
                let mut ms = [0u8; 4];
                let n = body.len().min(4);
                ms[4 - n..].copy_from_slice(&body[..n]);
                self.now += Duration::from_millis(u64::from(u32::from_be_bytes(ms)));
                if self
                    .session
                    .poll_timeout()
                    .is_some_and(|(at, _)| at <= self.now)
                {
                    self.session.handle_timeout(self.now);
                }
            }
            DEADLINE => {
                if let Some((at, _)) = self.session.poll_timeout() {
                    self.now = self.now.max(at);
                    self.session.handle_timeout(self.now);
                }
            }
            ENCAPSULATE => {
                let overhead = self.session.overhead();
                let mut buf = vec![0u8; overhead.headroom + body.len() + overhead.tailroom];
                let inner = overhead.headroom..overhead.headroom + body.len();
                buf[inner.clone()].copy_from_slice(body);
                if let Ok(outer) = self.session.encapsulate(self.now, &mut buf, inner) {
                    assert!(outer.end <= buf.len());
                    self.sent.push(buf[outer].to_vec());
                }
            }
            CLOSE => self.session.close(self.now),
            RENEGOTIATE => self.session.renegotiate(self.now),
            TRANSPORT_CLOSED => self
                .session
                .transport_closed(self.now, TransportError::TimedOut),
            _ => self.receive(body),
        }
        self.drain();
    }

    fn receive(&mut self, body: &[u8]) {
        let _ = DataHeader::parse(body);
        if let Ok(packet) = ControlPacket::parse(body) {
            let mut out = vec![0u8; packet.encoded_len()];
            let n = packet.emit(&mut out).expect("a parsed packet writes back");
            assert_eq!(&out[..n], body, "a control packet writes back differently");
        }
        let mut packet = body.to_vec();
        if let Ok(Decapsulated::Inner(range)) = self.session.decapsulate(self.now, &mut packet) {
            assert!(range.end <= packet.len());
            assert!(self.ups > 0, "an inner packet before Up");
            self.inner += 1;
        }
    }

    /// Drains packets and events as a driver does.
    pub fn drain(&mut self) {
        for _ in 0..DRAIN_LIMIT {
            let mut progress = false;
            match self.session.poll_transmit(self.now, &mut self.buf) {
                Some(Ok(n)) => {
                    assert!(n <= self.buf.len());
                    self.sent.push(self.buf[..n].to_vec());
                    progress = true;
                }
                Some(Err(needed)) => {
                    assert!(needed > self.buf.len(), "asked for {needed} bytes");
                    self.buf.resize(needed, 0);
                    progress = true;
                }
                None => {}
            }
            if let Some(event) = self.session.poll_event() {
                assert!(!self.down, "an event after Down: {event:?}");
                match event {
                    TunnelEvent::Up(config) => {
                        self.ups += 1;
                        let _ = format!("{config:?}");
                    }
                    TunnelEvent::Down(_) => self.down = true,
                    _ => {}
                }
                progress = true;
            }
            if !progress {
                break;
            }
        }
        let _ = self.session.stats();
        let _ = self.session.poll_timeout();
        let _ = (self.session.is_up(), self.session.remote_session_id());
    }
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
