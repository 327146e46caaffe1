//! Streams through the tunnel for programs that use erebus as a library, with no listening
//! socket.
//!
//! Both drivers offer a connector ([`crate::mio_driver::Connector`],
//! [`crate::smol_driver::Connector`]) whose `connect(host, port)` returns a stream to
//! `host:port` inside the private network. It works without touching the client: the client
//! gets one more SOCKS5 front end that no socket listens on ([`add_internal_listener`]); a
//! connect makes a Unix socket pair, hands one end to the driver as if that front end's
//! listener had accepted it, performs the SOCKS5 `CONNECT` handshake on the other end and
//! returns that end. Names travel in the request (address type "domain name"), so they are
//! resolved by the tunnel's DNS servers, never by the host's resolver. The stream then carries
//! the upstream's bytes and nothing else.
//!
//! ```no_run
//! # use erebus_client::ClientConfig;
//! # fn config() -> ClientConfig { unimplemented!() }
//! let mut config: ClientConfig = config();
//! // Before `Client::new`: the front end that connectors use.
//! let internal = erebus::connector::add_internal_listener(&mut config);
//! // ... build the client and the driver, then `driver.connector(internal)`.
//! # let _ = internal;
//! ```
//!
//! The failures the front end reports become [`io::Error`]s (see [`Handshake`] for the
//! mapping): a refused port is [`io::ErrorKind::ConnectionRefused`], an unknown name
//! [`io::ErrorKind::NotFound`], an unreachable address [`io::ErrorKind::HostUnreachable`], a
//! timeout [`io::ErrorKind::TimedOut`] and a tunnel that is not up
//! [`io::ErrorKind::NetworkUnreachable`].

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use erebus_client::ClientConfig;
use erebus_proxy::FrontEnd;
/// The client side of the internal SOCKS5 handshake: protocol logic, so it lives with the
/// front ends in `erebus-proxy`.
pub use erebus_proxy::socks5_client::{Credentials, Handshake};
use erebus_sansio::io::{Event, ListenerId};
use smol::channel::{Receiver, Sender, bounded};

/// How long a connect waits for the SOCKS5 answer unless told otherwise. The front end answers
/// once the upstream connected or failed, which its own connect timeout bounds; this only
/// guards against a driver that no longer runs.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Appends the SOCKS5 front end that connectors hand their streams to, and returns its
/// listener id (give it to the driver's `connector`). No socket listens on it: pass the
/// driver only the sockets of the other front ends.
pub fn add_internal_listener(config: &mut ClientConfig) -> ListenerId {
    let id = ListenerId(u32::try_from(config.listeners.len()).unwrap_or(u32::MAX));
    config.listeners.push(FrontEnd::Socks5);
    id
}

/// Whether a handshake error means the driver closed the stream: the client drops
/// connections of listeners it was not configured with.
pub(crate) fn closed_early(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// What connectors know about the session, updated by the driver from the machine's events.
#[derive(Debug, Default)]
pub(crate) struct SessionWatch {
    state: Mutex<WatchState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct WatchState {
    up: bool,
    /// Why the session or the driver ended; connects fail at once from then on.
    ended: Option<String>,
    /// Async waiters, told by dropping their sender.
    waiters: Vec<Sender<()>>,
}

impl SessionWatch {
    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows one machine event.
    pub(crate) fn observe(&self, event: &Event) {
        let mut state = self.lock();
        match event {
            Event::Connected(_) => state.up = true,
            Event::Reconnecting { .. } => state.up = false,
            Event::Down(failure) => {
                state.up = false;
                state.ended = Some(format!("the session ended: {failure}"));
            }
            _ => return,
        }
        state.waiters.clear();
        drop(state);
        self.changed.notify_all();
    }

    /// The driver is gone: nothing will serve connects any more.
    pub(crate) fn driver_gone(&self) {
        let mut state = self.lock();
        state.up = false;
        if state.ended.is_none() {
            state.ended = Some("the driver was dropped".to_owned());
        }
        state.waiters.clear();
        drop(state);
        self.changed.notify_all();
    }

    /// A refusal from the internal front end, told as the tunnel being down when it is: the
    /// front end answers a general failure after waiting in vain for the tunnel.
    pub(crate) fn explain(&self, error: io::Error) -> io::Error {
        if error.kind() == io::ErrorKind::Other && !self.is_up() {
            return io::Error::new(
                io::ErrorKind::NetworkUnreachable,
                format!("{error} (the tunnel is not up)"),
            );
        }
        error
    }

    /// Fails when connects can no longer be served.
    pub(crate) fn check_running(&self) -> io::Result<()> {
        match &self.lock().ended {
            Some(why) => Err(io::Error::new(io::ErrorKind::NotConnected, why.clone())),
            None => Ok(()),
        }
    }

    /// Whether the tunnel is up now.
    pub(crate) fn is_up(&self) -> bool {
        self.lock().up
    }

    /// Blocks until the tunnel is up.
    pub(crate) fn wait_up(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if state.up {
                return Ok(());
            }
            if let Some(why) = &state.ended {
                return Err(io::Error::new(io::ErrorKind::NotConnected, why.clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the tunnel did not come up in time",
                ));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until the tunnel is up, asynchronously.
    pub(crate) async fn until_up(&self) -> io::Result<()> {
        loop {
            let wake: Receiver<()> = {
                let mut state = self.lock();
                if state.up {
                    return Ok(());
                }
                if let Some(why) = &state.ended {
                    return Err(io::Error::new(io::ErrorKind::NotConnected, why.clone()));
                }
                let (tx, rx) = bounded(1);
                state.waiters.push(tx);
                rx
            };
            // Ends with an error when the sender is dropped: the state changed.
            let _ = wake.recv().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    #[test]
    fn internal_listener_is_appended_as_socks5() {
        let mut config = ClientConfig {
            listeners: vec![FrontEnd::Http],
            proxy: erebus_proxy::ProxyConfig::default(),
            tcp: erebus_net::tcp::TcpConfig::default(),
            dns_servers: Vec::new(),
            tunnel_wait: ClientConfig::DEFAULT_TUNNEL_WAIT,
            limits: erebus_client::Limits::default(),
        };
        assert_eq!(add_internal_listener(&mut config), ListenerId(1));
        assert_eq!(config.listeners, [FrontEnd::Http, FrontEnd::Socks5]);
    }

    #[test]
    fn watch_follows_the_session() {
        use erebus_sansio::tunnel::{Failure, Fault, TunnelConfig};
        let watch = SessionWatch::default();
        assert_eq!(
            watch.wait_up(Duration::from_millis(20)).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        let waiter = {
            let watch = std::sync::Arc::new(watch);
            let w = watch.clone();
            let thread = std::thread::spawn(move || w.wait_up(Duration::from_secs(10)));
            std::thread::sleep(Duration::from_millis(20));
            watch.observe(&Event::Connected(TunnelConfig::default()));
            thread.join().unwrap().unwrap();
            assert!(watch.is_up());
            smol::block_on(watch.until_up()).unwrap();
            watch
        };
        waiter.observe(&Event::Reconnecting {
            reason: Failure::new(Fault::Timeout, "lost"),
            retry_in: Duration::from_secs(1),
        });
        assert!(!waiter.is_up());
        waiter.check_running().unwrap();
        let task = {
            let w = waiter.clone();
            std::thread::spawn(move || smol::block_on(w.until_up()))
        };
        std::thread::sleep(Duration::from_millis(20));
        waiter.observe(&Event::Down(Failure::new(Fault::Closed, "bye")));
        assert_eq!(
            task.join().unwrap().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        assert_eq!(
            waiter.check_running().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
    }
}
