//! `ovpn_server_session`: a configuration byte (one of [`SESSION_CONFIGS`]), then steps
//! (tag, u16 length, bytes; see [`crate::Records`]) fed to one OpenVPN [`ServerSession`] over
//! UDP, built from the test PKI like `core/openvpn/src/server/tests.rs` does.
//!
//! Tags (modulo 8): 0 and 7, a packet from the client (first checked by
//! [`ServerSetup::is_initial_packet`] and [`ServerSetup::initial_session_id`], which must
//! agree, then [`ServerSession::receive`]); 1, the clock moves on by the body's big-endian
//! milliseconds (up to 4 bytes) and expired timers fire; 2, the next credential check is
//! answered with a refusal when the body's first bit is set (by default every
//! `Authenticate` is accepted at once); 3, [`ServerSession::renegotiate`]; 4,
//! [`ServerSession::close`]; 5, [`ServerSession::encapsulate`] of the body; 6, the clock
//! jumps to the session's next deadline. After each step the harness drains `poll_transmit`
//! and `poll_event` as the composer does: `Down` must be the last event, and `Up` comes once
//! per session at most before it.
//!
//! The seeds are client packets recorded from an erebus client ([`TlsSession`]) talking to
//! this very harness; the server is deterministic, so replaying them brings the session up.
//!
//! [`TlsSession`]: erebus_openvpn::tls_session::TlsSession

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use erebus_openvpn::server::{
    ClientLease, HEADROOM, ServerSession, ServerSessionEvent, ServerSetup, TAILROOM,
    TRANSMIT_BUF_LEN,
};
use erebus_sansio::tunnel::{Decapsulated, TransportKind};
use erebus_sansio::{Instant, Seed};

use crate::Records;
use crate::ovpn_common::{SESSION_CONFIGS, server_params, wall_clock};

/// Tags of the steps.
pub const RECEIVE: u8 = 0;
/// Advance the clock by the body's milliseconds.
pub const ADVANCE: u8 = 1;
/// Set the next credential verdict.
pub const VERDICT: u8 = 2;
/// Renegotiate.
pub const RENEGOTIATE: u8 = 3;
/// Close.
pub const CLOSE: u8 = 4;
/// Encapsulate the body.
pub const ENCAPSULATE: u8 = 5;
/// Jump to the next deadline.
pub const DEADLINE: u8 = 6;

/// The most packets or events drained after one step.
const DRAIN_LIMIT: usize = 256;

thread_local! {
    /// Building a setup parses PEM and checks the key: once per configuration and thread.
    static SETUPS: Vec<Arc<ServerSetup>> = SESSION_CONFIGS
        .iter()
        .map(|c| Arc::new(ServerSetup::new(server_params(c)).expect("the test server setup")))
        .collect();
}

/// The setup of configuration `config` (modulo their number).
pub fn setup(config: u8) -> Arc<ServerSetup> {
    SETUPS.with(|s| Arc::clone(&s[usize::from(config) % s.len()]))
}

/// The lease every session gets.
pub fn lease() -> ClientLease {
    ClientLease {
        ip: Ipv4Addr::new(10, 8, 0, 2),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        gateway: Ipv4Addr::new(10, 8, 0, 1),
        peer_id: 5,
    }
}

/// One server session and what it did.
pub struct Driver {
    /// The setup.
    pub setup: Arc<ServerSetup>,
    /// The session.
    pub session: ServerSession,
    /// The clock.
    pub now: Instant,
    /// Refuse the next credential check.
    pub refuse_next: bool,
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
    /// A fresh session of configuration `config`.
    pub fn new(config: u8) -> Self {
        let setup = setup(config);
        let session = ServerSession::new(
            Arc::clone(&setup),
            lease(),
            TransportKind::Udp,
            &Seed::from_byte(7),
            Instant::ZERO,
            wall_clock(),
        );
        Self {
            setup,
            session,
            now: Instant::ZERO,
            refuse_next: false,
            sent: Vec::new(),
            inner: 0,
            ups: 0,
            down: false,
            buf: vec![0; TRANSMIT_BUF_LEN],
        }
    }

    /// Runs one step, then drains.
    pub fn step(&mut self, tag: u8, body: &[u8]) {
        match tag % 8 {
            ADVANCE => {
                let mut ms = [0u8; 4];
                let n = body.len().min(4);
                ms[4 - n..].copy_from_slice(&body[..n]);
                self.now += Duration::from_millis(u64::from(u32::from_be_bytes(ms)));
                if self.session.poll_timeout().is_some_and(|at| at <= self.now) {
                    self.session.handle_timeout(self.now);
                }
            }
            VERDICT => self.refuse_next = body.first().is_some_and(|b| b & 1 == 1),
            RENEGOTIATE => self.session.renegotiate(self.now),
            CLOSE => self
                .session
                .close(self.now, body.first().is_some_and(|b| b & 1 == 1)),
            ENCAPSULATE => {
                let mut buf = vec![0u8; HEADROOM + body.len() + TAILROOM];
                let inner = HEADROOM..HEADROOM + body.len();
                buf[inner.clone()].copy_from_slice(body);
                if let Ok(outer) = self.session.encapsulate(self.now, &mut buf, inner) {
                    assert!(outer.end <= buf.len());
                    self.sent.push(buf[outer].to_vec());
                }
            }
            DEADLINE => {
                if let Some(at) = self.session.poll_timeout() {
                    self.now = self.now.max(at);
                    self.session.handle_timeout(self.now);
                }
            }
            _ => self.receive(body),
        }
        self.drain();
    }

    fn receive(&mut self, body: &[u8]) {
        let initial = self.setup.is_initial_packet(body);
        let id = self.setup.initial_session_id(body);
        assert_eq!(initial, id.is_some(), "is_initial_packet and initial_session_id");
        let mut packet = body.to_vec();
        if let Ok(Decapsulated::Inner(range)) = self.session.receive(self.now, &mut packet) {
            assert!(range.end <= packet.len());
            self.inner += 1;
        }
    }

    /// Drains packets and events as the composer does.
    pub fn drain(&mut self) {
        for _ in 0..DRAIN_LIMIT {
            let mut progress = false;
            if let Some(n) = self.session.poll_transmit(self.now, &mut self.buf) {
                assert!(n <= self.buf.len());
                self.sent.push(self.buf[..n].to_vec());
                progress = true;
            }
            if let Some(event) = self.session.poll_event() {
                assert!(!self.down, "an event after Down: {event:?}");
                match event {
                    ServerSessionEvent::Authenticate { .. } => {
                        let verdict = if std::mem::take(&mut self.refuse_next) {
                            Err("refused by the harness".to_owned())
                        } else {
                            Ok(())
                        };
                        self.session.auth_verdict(self.now, verdict);
                    }
                    ServerSessionEvent::Up { .. } => {
                        self.ups += 1;
                        assert!(self.session.is_up() || self.session.is_down());
                    }
                    ServerSessionEvent::Down(_) => self.down = true,
                }
                progress = true;
            }
            if !progress {
                break;
            }
        }
        let _ = self.session.stats();
        let _ = self.session.poll_timeout();
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
