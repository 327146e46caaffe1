//! The session supervisor: one [`Tunnel`] that lives as long as the user wants it, built from
//! a protocol's sessions that live as long as the server lets them.
//!
//! # Lifecycle
//!
//! ```text
//!          +--> Waiting --(deadline)--> Connecting --(session Up)--> Up
//!          |       ^                      |    |                      |
//!          |       +---- lost: backoff ---+    +--- fatal ---> Down <-+ fatal, or close
//!          |       +---------------- lost: backoff --------------------+
//! ```
//!
//! - **Connecting**: the supervisor asks for a transport to the next server
//!   ([`Tunnel::transport`] with a new [`TransportSpec::attempt`]); the driver resolves the
//!   server's name afresh and reports [`Tunnel::transport_connected`] with the address, and
//!   only then is the protocol's session built ([`Protocol::build`]) for that address.
//! - **Lost**: the session ended with a retryable [`Fault`] (ping-restart, the server's
//!   `RESTART`, a TCP reset or end of stream, a failed socket, hand-window), the transport
//!   failed or never connected, or the server said nothing within `server-poll-timeout`. The
//!   supervisor reports [`TunnelEvent::Reconnecting`] with the reason and the wait, and moves
//!   to the next server after a failed attempt (the same server after a session that was up).
//! - **Down**: for faults retrying cannot fix ([`Fault::is_retryable`]: credentials or
//!   certificate refused, configuration, incompatible server, `HALT`), when
//!   `connect-retry-max` or `resolv-retry` run out, or after [`Tunnel::close`].
//!
//! Waits grow as [`backoff`] says, with jitter from the supervisor's seed: a session replays
//! byte for byte, retries included.

use core::ops::Range;
use std::collections::VecDeque;
use std::net::SocketAddr;

use erebus_sansio::io::TransportError;
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Failure, Fault, Overhead, TransportSpec, Tunnel, TunnelEvent,
};
use erebus_sansio::{Instant, Seed, SeededRng, WallClock};

use crate::retry::{Remote, RetryPolicy, backoff};

/// A VPN protocol as the supervisor needs it: a factory of sessions, one per attempt.
pub trait Protocol {
    /// The protocol's session.
    type Tunnel: Tunnel;

    /// Builds the session for the configuration's server number `index` (a [`Remote::index`]),
    /// whose name resolved to `remote` for this attempt.
    ///
    /// # Errors
    ///
    /// A [`Failure`] (normally [`Fault::Config`]) when the configuration cannot make one.
    fn build(
        &mut self,
        index: usize,
        remote: SocketAddr,
        seed: &Seed,
        wall_clock: WallClock,
        now: Instant,
    ) -> Result<Self::Tunnel, Failure>;

    /// A session is discarded: keep what the next one should reuse (OpenVPN's pushed
    /// `auth-token`).
    fn retire(&mut self, tunnel: &Self::Tunnel) {
        let _ = tunnel;
    }
}

/// Counters of the supervisor's own work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SupervisorStats {
    /// Attempts started.
    pub attempts: u64,
    /// Sessions that came up.
    pub sessions_up: u64,
    /// Sessions and attempts lost and retried.
    pub reconnects: u64,
}

#[derive(Debug)]
enum State<T> {
    /// Between attempts: the next starts at `at`.
    Waiting { at: Instant },
    /// An attempt: the transport is being opened (no session yet) or the session is
    /// handshaking.
    Connecting {
        spec: TransportSpec,
        remote: Option<SocketAddr>,
        session: Option<T>,
        /// The server must have said something authentic by then.
        poll_deadline: Instant,
        heard: bool,
    },
    /// The session is up.
    Up {
        spec: TransportSpec,
        remote: SocketAddr,
        session: T,
    },
    /// Over for good.
    Down,
}

/// A [`Tunnel`] that connects, notices a lost session and builds the next one, for as long as
/// retrying can help. See the [module documentation](self).
#[derive(Debug)]
pub struct Supervisor<P: Protocol> {
    protocol: P,
    remotes: Vec<Remote>,
    policy: RetryPolicy,
    /// Server indices into `remotes`, in the order they are tried.
    order: Vec<usize>,
    /// The position in `order` of the server of the current or next attempt.
    cursor: usize,
    /// Attempts in a row without a session coming up, per position in `order`.
    tries: Vec<u32>,
    /// Failed attempts in a row, across servers, since the last session that came up.
    failures: u32,
    /// When the server's name first failed to resolve, in the current run of such failures.
    unresolved_since: Option<Instant>,
    state: State<P::Tunnel>,
    close_requested: bool,
    attempt: u64,
    seed: Seed,
    rng: SeededRng,
    wall_clock: WallClock,
    events: VecDeque<TunnelEvent>,
    now: Instant,
    stats: SupervisorStats,
}

impl<P: Protocol> Supervisor<P> {
    /// A supervisor of `protocol`'s sessions to `remotes` (tried in this order unless the
    /// policy says random), whose first attempt starts at `now`.
    ///
    /// # Panics
    ///
    /// Never; with no remotes the supervisor is down at once, with [`Fault::Config`].
    pub fn new(
        protocol: P,
        remotes: Vec<Remote>,
        policy: RetryPolicy,
        seed: &Seed,
        wall_clock: WallClock,
        now: Instant,
    ) -> Self {
        let mut rng = seed.child("supervisor.order").rng();
        let mut order: Vec<usize> = (0..remotes.len()).collect();
        if policy.random_order {
            // Fisher-Yates, drawn once, as OpenVPN shuffles its list once at start.
            for i in (1..order.len()).rev() {
                let j = rng.below(u32::try_from(i + 1).unwrap_or(u32::MAX)) as usize;
                order.swap(i, j);
            }
        }
        let mut supervisor = Self {
            protocol,
            tries: vec![0; remotes.len()],
            remotes,
            policy,
            order,
            cursor: 0,
            failures: 0,
            unresolved_since: None,
            state: State::Waiting { at: now },
            close_requested: false,
            attempt: 0,
            seed: seed.child("supervisor.sessions"),
            rng: seed.child("supervisor.jitter").rng(),
            wall_clock,
            events: VecDeque::new(),
            now,
            stats: SupervisorStats::default(),
        };
        if supervisor.remotes.is_empty() {
            supervisor.go_down(Failure::new(
                Fault::Config,
                "the configuration names no server to connect to",
            ));
        } else {
            supervisor.start_attempt();
        }
        supervisor
    }

    /// The session of the current attempt, if one was built.
    pub fn session(&self) -> Option<&P::Tunnel> {
        match &self.state {
            State::Connecting { session, .. } => session.as_ref(),
            State::Up { session, .. } => Some(session),
            State::Waiting { .. } | State::Down => None,
        }
    }

    /// The protocol, for what it kept across sessions.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// The servers, in configuration order.
    pub fn remotes(&self) -> &[Remote] {
        &self.remotes
    }

    /// The servers' indices in the order they are tried.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The supervisor's counters.
    pub fn stats(&self) -> SupervisorStats {
        self.stats
    }

    /// Whether the supervisor has stopped for good.
    pub fn is_down(&self) -> bool {
        matches!(self.state, State::Down)
    }

    /// Whether a session is up.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn session_mut(&mut self) -> Option<&mut P::Tunnel> {
        match &mut self.state {
            State::Connecting { session, .. } => session.as_mut(),
            State::Up { session, .. } => Some(session),
            State::Waiting { .. } | State::Down => None,
        }
    }

    fn current_remote(&self) -> Option<&Remote> {
        self.remotes.get(*self.order.get(self.cursor)?)
    }

    fn start_attempt(&mut self) {
        let Some(remote) = self.current_remote() else {
            return self.go_down(Failure::new(Fault::Config, "no server to connect to"));
        };
        let spec = TransportSpec {
            attempt: self.attempt + 1,
            host: remote.host.clone(),
            port: remote.port,
            kind: remote.kind,
        };
        let poll_deadline = self.now + remote.poll_timeout;
        self.attempt += 1;
        if let Some(tries) = self.tries.get_mut(self.cursor) {
            *tries = tries.saturating_add(1);
        }
        self.stats.attempts += 1;
        tracing::debug!(attempt = self.attempt, %spec, "connecting");
        self.events.push_back(TunnelEvent::Connecting(spec.clone()));
        self.state = State::Connecting {
            spec,
            remote: None,
            session: None,
            poll_deadline,
            heard: false,
        };
    }

    fn go_down(&mut self, failure: Failure) {
        if matches!(self.state, State::Down) {
            return;
        }
        self.retire_session();
        tracing::debug!(fault = ?failure.fault, reason = %failure, "down");
        self.state = State::Down;
        self.events.push_back(TunnelEvent::Down(failure));
    }

    fn retire_session(&mut self) {
        let state = core::mem::replace(&mut self.state, State::Down);
        match &state {
            State::Connecting {
                session: Some(session),
                ..
            }
            | State::Up { session, .. } => self.protocol.retire(session),
            _ => {}
        }
        self.state = state;
    }

    /// The current attempt or session ended with `failure`: start over after a wait, or stop
    /// when retrying cannot help or the limits ran out.
    fn lost(&mut self, failure: Failure, error: Option<TransportError>) {
        if self.close_requested {
            return self.go_down(Failure::new(Fault::Closed, "the session was closed"));
        }
        if !failure.fault.is_retryable() {
            return self.go_down(failure);
        }
        let was_up = matches!(self.state, State::Up { .. });
        if error == Some(TransportError::Unresolved) {
            let since = *self.unresolved_since.get_or_insert(self.now);
            if let Some(limit) = self.policy.resolve_for
                && self.now.saturating_duration_since(since) >= limit
            {
                return self.go_down(Failure::new(
                    Fault::Timeout,
                    format!(
                        "{failure}; gave up after resolv-retry ({} s)",
                        limit.as_secs()
                    ),
                ));
            }
        }
        if let Some(max) = self.policy.max_tries_per_remote
            && !was_up
            && self.tries.iter().all(|&tries| tries >= max)
        {
            return self.go_down(Failure::new(
                Fault::Timeout,
                format!(
                    "{failure}; gave up after trying every server {max} time{} \
                     (connect-retry-max)",
                    if max == 1 { "" } else { "s" }
                ),
            ));
        }
        self.retire_session();
        self.stats.reconnects += 1;
        self.failures = self.failures.saturating_add(1);
        if !was_up {
            // A failed attempt moves on to the next server; a session that was up is tried
            // again where it worked.
            self.cursor = (self.cursor + 1) % self.order.len().max(1);
        }
        let Some(remote) = self.current_remote() else {
            return self.go_down(failure);
        };
        let wait = backoff(
            self.failures,
            self.remotes.len(),
            remote.retry_delay,
            remote.max_retry_delay,
            &mut self.rng,
        );
        tracing::debug!(reason = %failure, ?wait, "reconnecting");
        self.events.push_back(TunnelEvent::Reconnecting {
            reason: failure,
            retry_in: wait,
        });
        self.state = State::Waiting {
            at: self.now + wait,
        };
    }

    /// A session that moves to another port of its server while connecting (IKEv2 floats
    /// from 500 to 4500 after IKE_SA_INIT) gets a new transport there: a new attempt number,
    /// so the driver opens a new socket, to the address already resolved.
    fn follow_session_port(&mut self) {
        let next_attempt = self.attempt + 1;
        let State::Connecting {
            spec,
            remote,
            session: Some(session),
            ..
        } = &mut self.state
        else {
            return;
        };
        let (Some(wanted), Some(addr)) = (session.transport(), *remote) else {
            return;
        };
        if wanted.port == spec.port {
            return;
        }
        *spec = TransportSpec {
            attempt: next_attempt,
            host: addr.ip().to_string(),
            port: wanted.port,
            kind: spec.kind,
        };
        *remote = None;
        self.attempt = next_attempt;
        tracing::debug!(attempt = self.attempt, %spec, "the session moves to another port");
        self.events.push_back(TunnelEvent::Connecting(spec.clone()));
    }

    /// Moves the session's events up, acting on those that change the lifecycle.
    fn pump_session_events(&mut self) {
        self.follow_session_port();
        loop {
            let Some(event) = self.session_mut().and_then(Tunnel::poll_event) else {
                return;
            };
            match event {
                TunnelEvent::Up(config) => {
                    let state = core::mem::replace(&mut self.state, State::Down);
                    self.state = match state {
                        State::Connecting {
                            spec,
                            remote: Some(remote),
                            session: Some(session),
                            ..
                        } => {
                            self.failures = 0;
                            self.unresolved_since = None;
                            self.tries.iter_mut().for_each(|tries| *tries = 0);
                            self.stats.sessions_up += 1;
                            State::Up {
                                spec,
                                remote,
                                session,
                            }
                        }
                        // A session already up reports a new configuration (p2p restart).
                        other => other,
                    };
                    self.events.push_back(TunnelEvent::Up(config));
                }
                TunnelEvent::Down(failure) => {
                    if failure.fault == Fault::Closed && self.close_requested {
                        return self.go_down(failure);
                    }
                    return self.lost(failure, None);
                }
                // A session's own lifecycle events are the supervisor's to make.
                _ => {}
            }
        }
    }

    /// The address the current attempt's transport connected to, once it did.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Connecting { remote, .. } => *remote,
            State::Up { remote, .. } => Some(*remote),
            State::Waiting { .. } | State::Down => None,
        }
    }
}

impl<P: Protocol> Tunnel for Supervisor<P> {
    fn transport(&self) -> Option<&TransportSpec> {
        match &self.state {
            State::Connecting { spec, .. } | State::Up { spec, .. } => Some(spec),
            State::Waiting { .. } | State::Down => None,
        }
    }

    fn overhead(&self) -> Overhead {
        self.session().map(Tunnel::overhead).unwrap_or_default()
    }

    fn transport_connected(&mut self, now: Instant, addr: SocketAddr) {
        let now = self.advance(now);
        let cursor = self.cursor;
        let index = self.order.get(cursor).copied().unwrap_or_default();
        let State::Connecting {
            remote, session, ..
        } = &mut self.state
        else {
            return;
        };
        if remote.is_some() {
            return;
        }
        *remote = Some(addr);
        self.unresolved_since = None;
        if let Some(moved) = session.as_mut() {
            // The session asked for this transport (another port of its server).
            moved.transport_connected(now, addr);
            self.pump_session_events();
            return;
        }
        let seed = self.seed.child(&format!("attempt.{}", self.attempt));
        match self
            .protocol
            .build(index, addr, &seed, self.wall_clock, now)
        {
            Ok(mut built) => {
                built.transport_connected(now, addr);
                *session = Some(built);
                self.pump_session_events();
            }
            Err(failure) => self.go_down(failure),
        }
    }

    fn transport_closed(&mut self, now: Instant, error: TransportError) {
        self.advance(now);
        let Some(spec) = self.transport().cloned() else {
            return;
        };
        let failure = Failure::new(Fault::Timeout, format!("{spec}: {error}"));
        self.lost(failure, Some(error));
    }

    fn decapsulate(&mut self, now: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        let now = self.advance(now);
        let result = match &mut self.state {
            State::Connecting {
                session: Some(session),
                heard,
                ..
            } => {
                let result = session.decapsulate(now, packet);
                *heard |= result.is_ok();
                result
            }
            State::Up { session, .. } => session.decapsulate(now, packet),
            _ => Err(DropReason::NotReady),
        };
        self.pump_session_events();
        result
    }

    fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        let now = self.advance(now);
        match &mut self.state {
            State::Up { session, .. } => session.encapsulate(now, buf, inner),
            _ => Err(DropReason::NotReady),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        let silent_spec = match &self.state {
            State::Waiting { at } if now >= *at => return self.start_attempt(),
            State::Connecting {
                spec,
                poll_deadline,
                heard: false,
                ..
            } if now >= *poll_deadline => Some(spec.clone()),
            _ => None,
        };
        if let Some(spec) = silent_spec {
            let seconds = self
                .current_remote()
                .map_or(0, |remote| remote.poll_timeout.as_secs());
            let failure = Failure::new(
                Fault::Timeout,
                format!("no answer from {spec} within server-poll-timeout ({seconds} s)"),
            );
            return self.lost(failure, None);
        }
        if let Some(session) = self.session_mut() {
            session.handle_timeout(now);
        }
        self.pump_session_events();
    }

    fn close(&mut self, now: Instant) {
        let now = self.advance(now);
        self.close_requested = true;
        match self.session_mut() {
            Some(session) => {
                session.close(now);
                self.pump_session_events();
            }
            None => self.go_down(Failure::new(Fault::Closed, "the session was closed")),
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Result<usize, usize>> {
        let now = self.advance(now);
        // Nothing leaves before the driver said where the transport goes.
        self.remote_addr()?;
        let transmit = self.session_mut()?.poll_transmit(now, buf);
        self.pump_session_events();
        transmit
    }

    fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.pump_session_events();
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        match &self.state {
            State::Waiting { at } => Some((*at, "next connection attempt")),
            State::Connecting {
                session,
                poll_deadline,
                heard,
                ..
            } => {
                let poll = (!heard).then_some((*poll_deadline, "server-poll-timeout"));
                let session = session.as_ref().and_then(Tunnel::poll_timeout);
                [poll, session]
                    .into_iter()
                    .flatten()
                    .min_by_key(|(t, _)| *t)
            }
            State::Up { session, .. } => session.poll_timeout(),
            State::Down => None,
        }
    }
}
