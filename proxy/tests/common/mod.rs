//! A driver for tests: feeds inputs into a `ProxyConn`, drains it completely after each, and
//! records what came out.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use erebus_proxy::{Action, FrontEnd, Host, Instant, ProxyConfig, ProxyConn, UpstreamFailure};

/// Everything a connection produced since the last `take`.
pub struct Harness {
    pub conn: ProxyConn,
    pub now: Instant,
    pub actions: Vec<Action>,
    pub client: Vec<u8>,
    pub upstream: Vec<u8>,
    /// When false the client does not read: its output stays queued.
    pub client_reads: bool,
    /// When false the upstream does not take bytes.
    pub upstream_reads: bool,
}

impl Harness {
    pub fn new(front: FrontEnd, config: ProxyConfig) -> Self {
        let now = Instant::from_secs(1000);
        let conn = ProxyConn::new(now, front, Arc::new(config));
        let mut harness = Self {
            conn,
            now,
            actions: Vec::new(),
            client: Vec::new(),
            upstream: Vec::new(),
            client_reads: true,
            upstream_reads: true,
        };
        harness.drain();
        harness
    }

    pub fn http() -> Self {
        Self::new(FrontEnd::Http, ProxyConfig::default())
    }

    pub fn drain(&mut self) {
        loop {
            let mut progress = false;
            while let Some(action) = self.conn.poll_action() {
                self.actions.push(action);
                progress = true;
            }
            if self.client_reads {
                let out = self.conn.client_output().to_vec();
                if !out.is_empty() {
                    self.client.extend_from_slice(&out);
                    self.conn.advance_client(self.now, out.len());
                    progress = true;
                }
            }
            if self.upstream_reads {
                let out = self.conn.upstream_output().to_vec();
                if !out.is_empty() {
                    self.upstream.extend_from_slice(&out);
                    self.conn.advance_upstream(self.now, out.len());
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
    }

    pub fn client_sends(&mut self, bytes: &[u8]) {
        self.conn.on_client_data(self.now, bytes);
        self.drain();
    }

    pub fn client_closes(&mut self) {
        self.conn.on_client_eof(self.now);
        self.drain();
    }

    pub fn connected(&mut self) {
        self.conn.on_upstream_connected(self.now, None);
        self.drain();
    }

    pub fn failed(&mut self, failure: UpstreamFailure) {
        self.conn.on_upstream_failed(self.now, failure);
        self.drain();
    }

    pub fn upstream_sends(&mut self, bytes: &[u8]) {
        self.conn.on_upstream_data(self.now, bytes);
        self.drain();
    }

    pub fn upstream_closes(&mut self) {
        self.conn.on_upstream_eof(self.now);
        self.drain();
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.conn.handle_timeout(self.now);
        self.drain();
    }

    /// Jumps to the connection's next deadline and fires it.
    pub fn fire_deadline(&mut self) {
        let deadline = self.conn.poll_timeout().expect("a deadline");
        self.now = deadline;
        self.conn.handle_timeout(self.now);
        self.drain();
    }

    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    pub fn take_client(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.client)
    }

    pub fn take_upstream(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.upstream)
    }

    pub fn client_text(&mut self) -> String {
        String::from_utf8(self.take_client()).expect("utf-8 output")
    }

    pub fn upstream_text(&mut self) -> String {
        String::from_utf8(self.take_upstream()).expect("utf-8 output")
    }
}

pub fn connect(host: &str, port: u16) -> Action {
    Action::Connect {
        host: Host::parse(host).expect("valid host"),
        port,
    }
}

pub fn name(host: &str) -> Host {
    Host::Name(host.to_owned())
}
