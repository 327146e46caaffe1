//! One peer's OpenVPN session, whichever way the server meets its peers: a TLS client's
//! [`ServerSession`], or the single static-key peer's [`P2pSession`] (the same session erebus's
//! client runs, acting as the responder). The composer sees one set of methods.

use std::ops::Range;

use erebus_openvpn::config::SecretString;
use erebus_openvpn::p2p::P2pSession;
use erebus_openvpn::server::{ServerSession, ServerSessionEvent};
use erebus_sansio::tunnel::{Decapsulated, DropReason, Failure, TunnelEvent};
use erebus_sansio::{Instant, Tunnel};

/// A peer's session.
pub(crate) enum Session {
    /// A TLS client of a multi-client server (boxed, as is the other: sessions are large,
    /// and moved between the client table and the departing list).
    Tls(Box<ServerSession>),
    /// The static-key point-to-point peer.
    StaticKey(Box<P2pSession>),
}

/// What a session tells the composer.
pub(crate) enum SessionEvent {
    /// A TLS client sent a username and password: answer with [`Session::auth_verdict`].
    Authenticate {
        username: String,
        password: SecretString,
    },
    /// Data flows; the peer's name if it has one (common name or username).
    Up { name: Option<String> },
    /// The session is over; always the last event.
    Down(Failure),
}

impl Session {
    /// Opens an outer packet in place.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        packet: &mut [u8],
    ) -> Result<Decapsulated, DropReason> {
        match self {
            Self::Tls(session) => session.receive(now, packet),
            Self::StaticKey(session) => session.decapsulate(now, packet),
        }
    }

    /// Seals `buf[payload]`, an inner packet with room before and after it; the outer packet's
    /// range within `buf`, or `None` when the session cannot send it (not up, too large).
    pub(crate) fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<Range<usize>> {
        match self {
            Self::Tls(session) => session.encapsulate(now, buf, payload).ok(),
            Self::StaticKey(session) => session.encapsulate(now, buf, payload).ok(),
        }
    }

    /// The next control packet (or ping), written at the start of `buf`: its length.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        match self {
            Self::Tls(session) => session.poll_transmit(now, buf),
            // The composer's buffer always has room for a whole packet; a control packet that
            // does not fit waits (it cannot happen with the sizes the composer uses).
            Self::StaticKey(session) => session.poll_transmit(now, buf)?.ok(),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::Tls(session) => session.handle_timeout(now),
            Self::StaticKey(session) => session.handle_timeout(now),
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::Tls(session) => session.poll_timeout(),
            Self::StaticKey(session) => session.poll_timeout().map(|(at, _)| at),
        }
    }

    pub(crate) fn poll_event(&mut self) -> Option<SessionEvent> {
        match self {
            Self::Tls(session) => Some(match session.poll_event()? {
                ServerSessionEvent::Authenticate {
                    username, password, ..
                } => SessionEvent::Authenticate { username, password },
                ServerSessionEvent::Up {
                    common_name,
                    username,
                    ..
                } => SessionEvent::Up {
                    name: common_name.or(username),
                },
                ServerSessionEvent::Down(reason) => SessionEvent::Down(reason),
            }),
            Self::StaticKey(session) => loop {
                match session.poll_event()? {
                    TunnelEvent::Up(_) => return Some(SessionEvent::Up { name: None }),
                    TunnelEvent::Down(reason) => return Some(SessionEvent::Down(reason)),
                    _ => {}
                }
            },
        }
    }

    /// Starts closing: a TLS session says goodbye (`restart`: the client should come back),
    /// a static-key one sends its exit notifications.
    pub(crate) fn close(&mut self, now: Instant, restart: bool) {
        match self {
            Self::Tls(session) => session.close(now, restart),
            Self::StaticKey(session) => session.close(now),
        }
    }

    /// The TLS client's session id; a static-key session has none.
    pub(crate) fn client_session_id(&self) -> Option<erebus_openvpn::packet::SessionId> {
        match self {
            Self::Tls(session) => session.client_session_id(),
            Self::StaticKey(_) => None,
        }
    }

    /// The answer to [`SessionEvent::Authenticate`]; a static-key session never asks.
    pub(crate) fn auth_verdict(&mut self, now: Instant, verdict: Result<(), String>) {
        if let Self::Tls(session) = self {
            session.auth_verdict(now, verdict);
        }
    }
}
