//! What every front end shares: the two bounded byte queues, the action queue, the state of the
//! upstream stream, half-closes, the lingering close and the flow-control decisions.

use std::collections::VecDeque;
use std::sync::Arc;

use erebus_sansio::Instant;

use crate::Action;
use crate::config::ProxyConfig;
use crate::host::Host;

/// The upstream stream, as far as the front end knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Upstream {
    /// No stream: never opened, or released with [`Action::CloseUpstream`].
    None,
    /// [`Action::Connect`] was emitted; the layer below has not answered yet.
    Connecting {
        /// When the attempt counts as timed out.
        deadline: Instant,
    },
    /// The stream is open.
    Connected,
    /// The attempt or the stream failed; the stream still has to be released.
    Failed,
}

/// Shared per-connection state. The front ends decide *what* to send; `Pipes` holds it,
/// enforces half-close order and decides when to pause either side.
#[derive(Debug)]
pub(crate) struct Pipes {
    pub(crate) config: Arc<ProxyConfig>,
    actions: VecDeque<Action>,
    to_client: VecDeque<u8>,
    to_upstream: VecDeque<u8>,
    pub(crate) upstream: Upstream,
    /// The client closed its sending side.
    pub(crate) client_eof: bool,
    /// Send `ShutdownClient` once `to_client` is flushed; accept no more bytes for the client.
    client_shutdown_wanted: bool,
    client_shut: bool,
    /// The upstream closed its sending side.
    pub(crate) upstream_eof: bool,
    upstream_shutdown_wanted: bool,
    upstream_shut: bool,
    client_paused: bool,
    upstream_paused: bool,
    /// Both directions are relayed verbatim (CONNECT, SOCKS5, forwards, WebSocket).
    pub(crate) relaying: bool,
    /// The connection is closing: the client's bytes are read and dropped until it closes or
    /// this deadline passes.
    linger_deadline: Option<Instant>,
    /// Last time a byte moved in either direction (for idle deadlines).
    pub(crate) last_activity: Instant,
    closed: bool,
}

impl Pipes {
    pub(crate) fn new(config: Arc<ProxyConfig>, now: Instant) -> Self {
        Self {
            config,
            actions: VecDeque::new(),
            to_client: VecDeque::new(),
            to_upstream: VecDeque::new(),
            upstream: Upstream::None,
            client_eof: false,
            client_shutdown_wanted: false,
            client_shut: false,
            upstream_eof: false,
            upstream_shutdown_wanted: false,
            upstream_shut: false,
            client_paused: false,
            upstream_paused: false,
            relaying: false,
            linger_deadline: None,
            last_activity: now,
            closed: false,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn is_lingering(&self) -> bool {
        self.linger_deadline.is_some()
    }

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(crate) fn client_output(&self) -> &[u8] {
        self.to_client.as_slices().0
    }

    pub(crate) fn upstream_output(&self) -> &[u8] {
        if self.upstream == Upstream::Connected && !self.upstream_shut {
            self.to_upstream.as_slices().0
        } else {
            &[]
        }
    }

    pub(crate) fn advance_client(&mut self, now: Instant, written: usize) {
        let written = written.min(self.to_client.len());
        if written > 0 {
            self.to_client.drain(..written);
            self.last_activity = now;
            // A client that reads is making progress: give it the full linger time again.
            if self.linger_deadline.is_some() {
                self.linger_deadline = Some(now + self.config.linger_timeout);
            }
        }
    }

    pub(crate) fn advance_upstream(&mut self, now: Instant, written: usize) {
        let written = written.min(self.upstream_output().len());
        if written > 0 {
            self.to_upstream.drain(..written);
            self.last_activity = now;
        }
    }

    /// Bytes queued for the upstream, including those held until it connects.
    pub(crate) fn upstream_backlog(&self) -> usize {
        self.to_upstream.len()
    }

    pub(crate) fn client_backlog(&self) -> usize {
        self.to_client.len()
    }

    /// Room left for the client before its queue holds a whole buffer.
    pub(crate) fn client_room(&self) -> usize {
        self.config
            .buffer_size
            .max(1)
            .saturating_sub(self.to_client.len())
    }

    /// Queues bytes for the client, unless its side is already being shut down.
    pub(crate) fn send_client(&mut self, bytes: &[u8]) {
        if !self.closed && !self.client_shutdown_wanted {
            self.to_client.extend(bytes);
        }
    }

    /// Queues bytes for the upstream; they leave once it is connected.
    pub(crate) fn send_upstream(&mut self, bytes: &[u8]) {
        if !self.closed && !self.upstream_shutdown_wanted && self.upstream != Upstream::None {
            self.to_upstream.extend(bytes);
        }
    }

    /// The queue for the upstream, for writers that format into it directly.
    pub(crate) fn upstream_queue(&mut self) -> &mut VecDeque<u8> {
        &mut self.to_upstream
    }

    /// The queue for the client, for writers that format into it directly.
    pub(crate) fn client_queue(&mut self) -> &mut VecDeque<u8> {
        &mut self.to_client
    }

    /// Asks the layer below for a stream, releasing any previous one first.
    pub(crate) fn connect(&mut self, now: Instant, host: Host, port: u16) {
        self.close_upstream();
        self.actions.push_back(Action::Connect { host, port });
        self.upstream = Upstream::Connecting {
            deadline: now + self.config.connect_timeout,
        };
        self.last_activity = now;
    }

    /// Whether the pending connection attempt has run out of time.
    pub(crate) fn connect_expired(&self, now: Instant) -> bool {
        matches!(self.upstream, Upstream::Connecting { deadline } if now >= deadline)
    }

    pub(crate) fn connect_deadline(&self) -> Option<Instant> {
        match self.upstream {
            Upstream::Connecting { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// Records the answer of the layer below; `false` when no attempt was pending.
    pub(crate) fn mark_connected(&mut self, now: Instant) -> bool {
        if matches!(self.upstream, Upstream::Connecting { .. }) {
            self.upstream = Upstream::Connected;
            self.last_activity = now;
            true
        } else {
            false
        }
    }

    /// Records a failure of the attempt or the stream; `false` when there was no stream.
    pub(crate) fn mark_failed(&mut self) -> bool {
        if matches!(
            self.upstream,
            Upstream::Connecting { .. } | Upstream::Connected
        ) {
            self.upstream = Upstream::Failed;
            true
        } else {
            false
        }
    }

    /// Releases the upstream stream, discarding anything not yet sent. Each `Connect` is matched
    /// by exactly one `CloseUpstream`.
    pub(crate) fn close_upstream(&mut self) {
        if self.upstream != Upstream::None {
            self.actions.push_back(Action::CloseUpstream);
            self.upstream = Upstream::None;
        }
        self.to_upstream.clear();
        self.upstream_eof = false;
        self.upstream_shutdown_wanted = false;
        self.upstream_shut = false;
        // Pausing applied to the released stream; the next one starts out read.
        self.upstream_paused = false;
    }

    /// Closes the client's side once everything queued for it has been written.
    pub(crate) fn shutdown_client_after_flush(&mut self) {
        self.client_shutdown_wanted = true;
    }

    /// Closes the upstream's sending side once everything queued for it has been written.
    pub(crate) fn shutdown_upstream_after_flush(&mut self) {
        self.upstream_shutdown_wanted = true;
    }

    /// Starts a graceful close: the upstream is released, what is queued for the client is
    /// flushed, its side is shut down, and the client's bytes are read and dropped until it
    /// closes too or the linger deadline passes.
    pub(crate) fn begin_linger(&mut self, now: Instant) {
        if self.closed || self.linger_deadline.is_some() {
            return;
        }
        self.close_upstream();
        self.relaying = false;
        self.shutdown_client_after_flush();
        self.linger_deadline = Some(now + self.config.linger_timeout);
    }

    /// Ends the connection now: releases the upstream, drops the client, discards everything.
    pub(crate) fn close(&mut self) {
        if self.closed {
            return;
        }
        self.close_upstream();
        self.actions.push_back(Action::CloseClient);
        self.to_client.clear();
        self.relaying = false;
        self.linger_deadline = None;
        self.closed = true;
    }

    /// The earliest deadline `Pipes` itself watches: lingering, and idle relays.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        if let Some(linger) = self.linger_deadline {
            return Some(linger);
        }
        if self.relaying {
            return self
                .config
                .idle_timeout
                .map(|idle| self.last_activity + idle);
        }
        None
    }

    /// Applies the deadlines `Pipes` watches; `true` when the connection was closed.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> bool {
        if self.closed {
            return true;
        }
        if self.linger_deadline.is_some_and(|deadline| now >= deadline) {
            self.close();
            return true;
        }
        if self.relaying
            && self
                .config
                .idle_timeout
                .is_some_and(|idle| now >= self.last_activity + idle)
        {
            self.close();
            return true;
        }
        false
    }

    /// Relay mode: the client's bytes go upstream verbatim.
    pub(crate) fn relay_client_data(&mut self, now: Instant, data: &[u8]) {
        self.last_activity = now;
        self.send_upstream(data);
    }

    /// Relay mode: the upstream's bytes go to the client verbatim.
    pub(crate) fn relay_upstream_data(&mut self, now: Instant, data: &[u8]) {
        self.last_activity = now;
        self.send_client(data);
    }

    /// Emits what has become due after an input: deferred half-closes, the end of a finished
    /// relay or linger, and pause/resume decisions. `client_backlog` is what the front end
    /// itself holds from the client without having consumed it, and `backlog_limit` where
    /// that should stop reading.
    pub(crate) fn settle(&mut self, client_backlog: usize, backlog_limit: usize) {
        if self.closed {
            return;
        }
        if self.client_shutdown_wanted && !self.client_shut && self.to_client.is_empty() {
            self.actions.push_back(Action::ShutdownClient);
            self.client_shut = true;
        }
        if self.upstream_shutdown_wanted
            && !self.upstream_shut
            && self.upstream == Upstream::Connected
            && self.to_upstream.is_empty()
        {
            self.actions.push_back(Action::ShutdownUpstream);
            self.upstream_shut = true;
        }
        let relay_done = self.relaying
            && self.client_eof
            && self.upstream_eof
            && self.client_shut
            && self.upstream_shut;
        let linger_done = self.linger_deadline.is_some() && self.client_eof && self.client_shut;
        if relay_done || linger_done {
            self.close();
            return;
        }
        self.update_flow(client_backlog, backlog_limit);
    }

    fn update_flow(&mut self, client_backlog: usize, backlog_limit: usize) {
        let high = self.config.buffer_size.max(1);
        let low = high / 2;
        let limit = backlog_limit.max(1);
        // The client is read unless its bytes have nowhere to go: the upstream queue is full,
        // or the front end is holding more than it will parse. A lingering connection is
        // always read so the client's close can be seen.
        let client_blocked =
            !self.is_lingering() && (self.to_upstream.len() > high || client_backlog > limit);
        let client_free =
            self.is_lingering() || (self.to_upstream.len() <= low && client_backlog <= limit / 2);
        if !self.client_eof {
            if !self.client_paused && client_blocked {
                self.client_paused = true;
                self.actions.push_back(Action::PauseClient);
            } else if self.client_paused && client_free {
                self.client_paused = false;
                self.actions.push_back(Action::ResumeClient);
            }
        }
        if self.upstream == Upstream::Connected && !self.upstream_eof {
            if !self.upstream_paused && self.to_client.len() > high {
                self.upstream_paused = true;
                self.actions.push_back(Action::PauseUpstream);
            } else if self.upstream_paused && self.to_client.len() <= low {
                self.upstream_paused = false;
                self.actions.push_back(Action::ResumeUpstream);
            }
        }
    }
}
