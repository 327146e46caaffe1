//! `proxy`: a configuration byte, then steps (tag, u16 length, bytes; see [`crate::Records`])
//! fed to one [`ProxyConn`], the sans-IO front end of a local proxy connection. Its parsers
//! are what the client's bytes reach first: HTTP/1.1 request heads (CONNECT, absolute-form
//! requests, `Proxy-Authorization: Basic`, chunked and sized bodies, keep-alive), response
//! heads from the upstream, and the SOCKS5 greeting, username/password sub-negotiation and
//! request.
//!
//! Configuration bits: 0, SOCKS5 (else HTTP); 1, credentials required (`alice` /
//! `wonderland`); 2, a 64-byte buffer and short head limits; 3, the client reads only a few
//! bytes at a time. Tags (modulo 8): 0 and 7, bytes from the client; 1, the client closes
//! its side; 2, the upstream connects (when a `Connect` is pending; bytes 0-5 an IPv4 local
//! address and port when present); 3, the upstream fails (the first byte picks why); 4,
//! bytes from the upstream; 5, the upstream closes its side; 6, the clock moves on by the
//! body's big-endian milliseconds (up to 4 bytes) and timers fire.
//!
//! After each step the harness drains as a driver does (actions, then the output both ways)
//! and checks the contract of the crate documentation: a `Connect` is answered before another
//! comes and is released by exactly one `CloseUpstream`, `CloseClient` comes exactly once and
//! last, and a closed connection produces nothing more.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use erebus_proxy::{Action, FrontEnd, Instant, ProxyAuth, ProxyConfig, ProxyConn, UpstreamFailure};

use crate::Records;

/// Tags of the steps.
pub const CLIENT: u8 = 0;
/// The client's end of stream.
pub const CLIENT_EOF: u8 = 1;
/// The upstream connected.
pub const CONNECTED: u8 = 2;
/// The upstream failed.
pub const FAILED: u8 = 3;
/// Bytes from the upstream.
pub const UPSTREAM: u8 = 4;
/// The upstream's end of stream.
pub const UPSTREAM_EOF: u8 = 5;
/// Advance the clock.
pub const ADVANCE: u8 = 6;

/// The most drain rounds after one step.
const DRAIN_LIMIT: usize = 256;

/// What the configuration byte selects.
pub fn config(byte: u8) -> (FrontEnd, ProxyConfig) {
    let front = if byte & 1 == 1 {
        FrontEnd::Socks5
    } else {
        FrontEnd::Http
    };
    let mut config = ProxyConfig {
        idle_timeout: Some(Duration::from_secs(300)),
        ..ProxyConfig::default()
    };
    if byte & 2 != 0 {
        config.auth = Some(ProxyAuth::new("alice", "wonderland").expect("valid credentials"));
    }
    if byte & 4 != 0 {
        config.buffer_size = 64;
        config.max_request_head = 512;
        config.max_request_line = 128;
        config.max_response_head = 256;
    }
    (front, config)
}

/// One connection and what it did.
pub struct Driver {
    /// The connection.
    pub conn: ProxyConn,
    /// The clock.
    pub now: Instant,
    /// `Connect` actions seen.
    pub connects: usize,
    /// `CloseUpstream` actions seen.
    pub upstream_closes: usize,
    /// A `Connect` waits for its answer.
    pub connect_pending: bool,
    /// `CloseClient` seen.
    pub closed: bool,
    /// Everything written to the client.
    pub to_client: Vec<u8>,
    /// Everything written to the upstream.
    pub to_upstream: Vec<u8>,
    slow_client: bool,
}

impl Driver {
    /// A connection of configuration `config`.
    pub fn new(byte: u8) -> Self {
        let (front, config) = config(byte);
        let conn = ProxyConn::new(Instant::ZERO, front, Arc::new(config));
        let mut driver = Self {
            conn,
            now: Instant::ZERO,
            connects: 0,
            upstream_closes: 0,
            connect_pending: false,
            closed: false,
            to_client: Vec::new(),
            to_upstream: Vec::new(),
            slow_client: byte & 8 != 0,
        };
        driver.drain();
        driver
    }

    /// Runs one step, then drains.
    pub fn step(&mut self, tag: u8, body: &[u8]) {
        let now = self.now;
        match tag % 8 {
            CLIENT_EOF => self.conn.on_client_eof(now),
            CONNECTED => {
                if self.connect_pending {
                    self.connect_pending = false;
                    let local = (body.len() >= 6).then(|| {
                        let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                        SocketAddr::V4(SocketAddrV4::new(
                            ip,
                            u16::from_be_bytes([body[4], body[5]]),
                        ))
                    });
                    self.conn.on_upstream_connected(now, local);
                }
            }
            FAILED => {
                if self.connects > self.upstream_closes {
                    self.connect_pending = false;
                    let failure = match body.first().copied().unwrap_or(0) % 8 {
                        0 => UpstreamFailure::Refused,
                        1 => UpstreamFailure::Unreachable,
                        2 => UpstreamFailure::Timeout,
                        3 => UpstreamFailure::TunnelDown,
                        4 => UpstreamFailure::NameNotFound,
                        5 => UpstreamFailure::NotAllowed,
                        6 => UpstreamFailure::Reset,
                        _ => UpstreamFailure::Other,
                    };
                    self.conn.on_upstream_failed(now, failure);
                }
            }
            UPSTREAM => {
                if self.connects > self.upstream_closes && !self.connect_pending {
                    self.conn.on_upstream_data(now, body);
                }
            }
            UPSTREAM_EOF => {
                if self.connects > self.upstream_closes && !self.connect_pending {
                    self.conn.on_upstream_eof(now);
                }
            }
            ADVANCE => {
                let mut ms = [0u8; 4];
                let n = body.len().min(4);
                ms[4 - n..].copy_from_slice(&body[..n]);
                self.now += Duration::from_millis(u64::from(u32::from_be_bytes(ms)));
                if self.conn.poll_timeout().is_some_and(|at| at <= self.now) {
                    self.conn.handle_timeout(self.now);
                }
            }
            _ => self.conn.on_client_data(now, body),
        }
        self.drain();
    }

    /// Drains actions and output as a driver does.
    pub fn drain(&mut self) {
        for _ in 0..DRAIN_LIMIT {
            while let Some(action) = self.conn.poll_action() {
                assert!(!self.closed, "{action:?} after CloseClient");
                match action {
                    Action::Connect { host, port } => {
                        assert_eq!(
                            self.connects, self.upstream_closes,
                            "a second Connect before CloseUpstream"
                        );
                        let _ = (host.to_string(), port);
                        self.connects += 1;
                        self.connect_pending = true;
                    }
                    Action::CloseUpstream => {
                        assert_eq!(
                            self.connects,
                            self.upstream_closes + 1,
                            "CloseUpstream twice"
                        );
                        self.upstream_closes += 1;
                        self.connect_pending = false;
                    }
                    Action::CloseClient => {
                        self.closed = true;
                        assert!(self.conn.is_closed());
                    }
                    Action::ShutdownUpstream
                    | Action::PauseClient
                    | Action::ResumeClient
                    | Action::PauseUpstream
                    | Action::ResumeUpstream
                    | Action::ShutdownClient => {}
                }
            }
            let mut moved = false;
            let client = self.conn.client_output();
            let n = if self.slow_client {
                client.len().min(7)
            } else {
                client.len()
            };
            if n > 0 {
                assert!(!self.closed, "output for a closed client");
                self.to_client.extend_from_slice(&client[..n]);
                self.conn.advance_client(self.now, n);
                moved = true;
            }
            let upstream = self.conn.upstream_output();
            if !upstream.is_empty() {
                assert!(
                    self.connects > self.upstream_closes && !self.connect_pending,
                    "upstream output without an open stream"
                );
                let n = upstream.len();
                self.to_upstream.extend_from_slice(upstream);
                self.conn.advance_upstream(self.now, n);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        if self.closed {
            assert!(self.conn.client_output().is_empty());
        }
        let _ = (
            self.conn.client_backlog(),
            self.conn.upstream_room(),
            self.conn.upstream_backlog(),
            self.conn.poll_timeout(),
        );
        if self.to_client.len() > 1 << 16 {
            self.to_client.clear();
        }
        if self.to_upstream.len() > 1 << 16 {
            self.to_upstream.clear();
        }
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
