//! IPsec behind the supervisor: a swanctl.conf connection with its secrets and files already
//! read, turned into one IKEv2 session per attempt.

use core::time::Duration;
use std::net::SocketAddr;

use erebus_ipsec::config::Connection;
use erebus_ipsec::{IpsecSession, SessionConfig};
use erebus_sansio::tunnel::{Failure, Fault, TransportKind};
use erebus_sansio::{Instant, Seed, WallClock};

use crate::retry::{Remote, RetryPolicy};
use crate::supervisor::Protocol;

/// How long an attempt may go without an authentic answer before the next server is tried.
/// The session's own retransmissions usually give up first.
const POLL_TIMEOUT: Duration = Duration::from_secs(60);

/// A swanctl.conf connection: builds an IKEv2 session for any of its servers.
#[derive(Debug)]
pub struct IpsecProtocol {
    connection: Connection,
}

impl IpsecProtocol {
    /// The protocol for `connection`.
    pub fn new(connection: Connection) -> Self {
        Self { connection }
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The servers of `remote_addrs`, in order, on `remote_port`.
    pub(crate) fn remotes(&self) -> Vec<Remote> {
        self.connection
            .remote_addrs
            .iter()
            .enumerate()
            .map(|(index, host)| Remote {
                index,
                host: host.clone(),
                port: self.connection.remote_port,
                kind: TransportKind::Udp,
                retry_delay: Remote::DEFAULT_RETRY_DELAY,
                max_retry_delay: Remote::DEFAULT_MAX_RETRY_DELAY,
                poll_timeout: POLL_TIMEOUT,
            })
            .collect()
    }

    /// `keyingtries`: 0 is for ever.
    pub(crate) fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_tries_per_remote: (self.connection.keyingtries > 0)
                .then_some(self.connection.keyingtries),
            resolve_for: None,
            random_order: false,
        }
    }

    fn build_session(
        &self,
        remote: SocketAddr,
        seed: &Seed,
        wall_clock: WallClock,
        now: Instant,
    ) -> Result<IpsecSession, String> {
        IpsecSession::new(
            SessionConfig {
                connection: self.connection.clone(),
                server: remote,
                wall_clock,
            },
            seed,
            now,
        )
    }

    /// Checks that a session can be built, so that a broken configuration is refused before
    /// anything is sent.
    pub(crate) fn check(&self, wall_clock: WallClock) -> Result<(), String> {
        let probe: SocketAddr = ([192, 0, 2, 1], self.connection.remote_port).into();
        self.build_session(probe, &Seed::from_byte(0), wall_clock, Instant::ZERO)
            .map(drop)
    }
}

impl Protocol for IpsecProtocol {
    type Tunnel = IpsecSession;

    fn build(
        &mut self,
        _index: usize,
        remote: SocketAddr,
        seed: &Seed,
        wall_clock: WallClock,
        now: Instant,
    ) -> Result<IpsecSession, Failure> {
        self.build_session(remote, seed, wall_clock, now)
            .map_err(|message| Failure::new(Fault::Config, message))
    }
}
