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
use std::net::IpAddr;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use erebus_client::ClientConfig;
use erebus_proxy::FrontEnd;
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

/// Username and password for an internal front end when the client's
/// [`erebus_proxy::ProxyConfig::auth`] is set (RFC 1929).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: Vec<u8>,
    password: Vec<u8>,
}

impl Credentials {
    /// Credentials; each part must be 1 to 255 bytes.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an empty or longer part.
    pub fn new(username: impl Into<Vec<u8>>, password: impl Into<Vec<u8>>) -> io::Result<Self> {
        let (username, password) = (username.into(), password.into());
        for part in [&username, &password] {
            if part.is_empty() || part.len() > 255 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "SOCKS5 usernames and passwords are 1 to 255 bytes",
                ));
            }
        }
        Ok(Self { username, password })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &String::from_utf8_lossy(&self.username))
            .finish_non_exhaustive()
    }
}

const VERSION: u8 = 5;
const METHOD_NONE: u8 = 0x00;
const METHOD_USER_PASS: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const COMMAND_CONNECT: u8 = 1;
const ATYP_IPV4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_IPV6: u8 = 4;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// Send the greeting, read the method selection.
    Greeting,
    /// Send username and password, read the status.
    Auth,
    /// Send the CONNECT request, read the reply's first four bytes.
    Request,
    /// Read the length of the bound name in the reply.
    BoundNameLength,
    /// Read (and ignore) the bound address and port.
    BoundAddress(usize),
    Done,
}

/// The client side of a SOCKS5 `CONNECT` handshake, without I/O: the caller alternates
/// [`Handshake::next`] (bytes to write, then how many to read) and [`Handshake::feed`].
///
/// Reply codes become [`io::Error`]s of these kinds: 0x05 `ConnectionRefused`; 0x04
/// `NotFound` when the destination is a name (the front end reports a name that does not
/// resolve this way) and `HostUnreachable` for an address; 0x06 `TimedOut`; 0x03
/// `NetworkUnreachable` (the tunnel is not up); 0x02 `PermissionDenied`; anything else
/// `Other`.
#[derive(Debug)]
pub struct Handshake {
    step: Step,
    request: Vec<u8>,
    destination: String,
    by_name: bool,
    credentials: Option<Credentials>,
}

impl Handshake {
    /// A handshake for a stream to `host:port`. `host` is an IP address or a name (resolved
    /// by the tunnel's DNS, at most 255 bytes).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an empty or too long name, or port 0.
    pub fn new(host: &str, port: u16, credentials: Option<Credentials>) -> io::Result<Self> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
        if port == 0 {
            return Err(invalid("cannot connect to port 0"));
        }
        // An IPv6 address may come bracketed, as in URLs.
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let mut request = vec![VERSION, COMMAND_CONNECT, 0];
        let by_name = match bare.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                request.push(ATYP_IPV4);
                request.extend_from_slice(&ip.octets());
                false
            }
            Ok(IpAddr::V6(ip)) => {
                request.push(ATYP_IPV6);
                request.extend_from_slice(&ip.octets());
                false
            }
            Err(_) => {
                let name = host.as_bytes();
                let len = u8::try_from(name.len())
                    .ok()
                    .filter(|&len| len > 0)
                    .ok_or_else(|| invalid("a host name is 1 to 255 bytes"))?;
                request.extend_from_slice(&[ATYP_NAME, len]);
                request.extend_from_slice(name);
                true
            }
        };
        request.extend_from_slice(&port.to_be_bytes());
        Ok(Self {
            step: Step::Greeting,
            request,
            destination: format!("{host}:{port}"),
            by_name,
            credentials,
        })
    }

    /// What to do next: write the bytes (possibly none), then read exactly the given number
    /// of bytes and [`feed`](Self::feed) them. `None` once the stream is connected.
    pub fn next(&self) -> Option<(Vec<u8>, usize)> {
        match self.step {
            Step::Greeting => {
                let greeting = match self.credentials {
                    Some(_) => vec![VERSION, 2, METHOD_NONE, METHOD_USER_PASS],
                    None => vec![VERSION, 1, METHOD_NONE],
                };
                Some((greeting, 2))
            }
            Step::Auth => {
                let credentials = self.credentials.as_ref()?;
                let mut auth = vec![1];
                for part in [&credentials.username, &credentials.password] {
                    // `Credentials::new` bounds both parts to 255 bytes.
                    auth.push(u8::try_from(part.len()).unwrap_or(u8::MAX));
                    auth.extend_from_slice(part);
                }
                Some((auth, 2))
            }
            Step::Request => Some((self.request.clone(), 4)),
            Step::BoundNameLength => Some((Vec::new(), 1)),
            Step::BoundAddress(len) => Some((Vec::new(), len)),
            Step::Done => None,
        }
    }

    /// Takes the bytes [`next`](Self::next) asked for.
    ///
    /// # Errors
    ///
    /// The front end refused the connection (see the type's documentation for the kinds),
    /// or answered something that is not SOCKS5 ([`io::ErrorKind::InvalidData`]).
    pub fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        self.step = match (self.step, bytes) {
            (Step::Greeting, [VERSION, METHOD_NONE]) => Step::Request,
            (Step::Greeting, [VERSION, METHOD_USER_PASS]) if self.credentials.is_some() => {
                Step::Auth
            }
            (Step::Greeting, [VERSION, NO_ACCEPTABLE_METHOD]) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the internal SOCKS5 front end requires credentials",
                ));
            }
            (Step::Auth, [1, 0]) => Step::Request,
            (Step::Auth, [1, _]) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the internal SOCKS5 front end refused the credentials",
                ));
            }
            (Step::Request, [VERSION, 0, 0, atyp]) => match *atyp {
                ATYP_IPV4 => Step::BoundAddress(4 + 2),
                ATYP_IPV6 => Step::BoundAddress(16 + 2),
                ATYP_NAME => Step::BoundNameLength,
                _ => return Err(bad("SOCKS5 reply with an unknown address type")),
            },
            (Step::Request, [VERSION, code, 0, _]) => return Err(self.refusal(*code)),
            (Step::BoundNameLength, [len]) => Step::BoundAddress(usize::from(*len) + 2),
            (Step::BoundAddress(len), bound) if bound.len() == len => Step::Done,
            _ => return Err(bad("unexpected SOCKS5 answer from the internal front end")),
        };
        Ok(())
    }

    /// The error for reply `code`.
    fn refusal(&self, code: u8) -> io::Error {
        let destination = &self.destination;
        let (kind, why) = match code {
            0x05 => (io::ErrorKind::ConnectionRefused, "connection refused"),
            0x04 if self.by_name => (
                io::ErrorKind::NotFound,
                "the name does not resolve through the tunnel (or its host is unreachable)",
            ),
            0x04 => (io::ErrorKind::HostUnreachable, "host unreachable"),
            0x06 => (io::ErrorKind::TimedOut, "timed out"),
            0x03 => (io::ErrorKind::NetworkUnreachable, "the tunnel is not up"),
            0x02 => (io::ErrorKind::PermissionDenied, "not allowed"),
            _ => (io::ErrorKind::Other, "the connection failed"),
        };
        io::Error::new(kind, format!("{destination}: {why}"))
    }
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

    /// Runs `handshake` against a scripted front end: each answer is fed for the next read.
    fn run(mut handshake: Handshake, answers: &[&[u8]]) -> (Vec<Vec<u8>>, io::Result<()>) {
        let mut sent = Vec::new();
        let mut answers = answers.iter();
        while let Some((bytes, want)) = handshake.next() {
            sent.push(bytes);
            let answer = answers
                .next()
                .expect("the handshake read more than scripted");
            assert_eq!(answer.len(), want, "read size");
            if let Err(e) = handshake.feed(answer) {
                return (sent, Err(e));
            }
        }
        assert!(answers.next().is_none(), "the handshake stopped early");
        (sent, Ok(()))
    }

    #[test]
    fn name_request_carries_the_name_for_remote_resolution() {
        let handshake = Handshake::new("web.erebus.test", 8080, None).unwrap();
        let (sent, result) = run(
            handshake,
            &[&[5, 0], &[5, 0, 0, 1], &[10, 8, 0, 2, 0x9c, 0x40]],
        );
        result.unwrap();
        assert_eq!(sent[0], [5, 1, 0]);
        let mut request = vec![5, 1, 0, 3, 15];
        request.extend_from_slice(b"web.erebus.test");
        request.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(sent[1], request);
        assert!(
            sent[2].is_empty(),
            "reading the bound address sends nothing"
        );
    }

    #[test]
    fn addresses_use_their_own_address_types() {
        let (sent, result) = run(
            Handshake::new("10.8.0.1", 80, None).unwrap(),
            &[&[5, 0], &[5, 0, 0, 4], &[0; 18]],
        );
        result.unwrap();
        assert_eq!(sent[1], [5, 1, 0, 1, 10, 8, 0, 1, 0, 80]);
        let (sent, result) = run(
            Handshake::new("[fd00::1]", 443, None).unwrap(),
            &[&[5, 0], &[5, 0, 0, 3], &[3], b"abc\x01\xbb"],
        );
        result.unwrap();
        let mut expected = vec![5, 1, 0, 4, 0xfd, 0];
        expected.extend_from_slice(&[0; 13]);
        expected.extend_from_slice(&[1, 1, 0xbb]);
        assert_eq!(sent[1], expected);
    }

    #[test]
    fn reply_codes_become_error_kinds() {
        let cases: [(&str, u8, io::ErrorKind); 7] = [
            ("10.8.0.1", 5, io::ErrorKind::ConnectionRefused),
            ("10.8.0.9", 4, io::ErrorKind::HostUnreachable),
            ("nowhere.erebus.test", 4, io::ErrorKind::NotFound),
            ("10.8.0.1", 6, io::ErrorKind::TimedOut),
            ("10.8.0.1", 3, io::ErrorKind::NetworkUnreachable),
            ("10.8.0.1", 2, io::ErrorKind::PermissionDenied),
            ("10.8.0.1", 1, io::ErrorKind::Other),
        ];
        for (host, code, kind) in cases {
            let handshake = Handshake::new(host, 80, None).unwrap();
            let (_, result) = run(handshake, &[&[5, 0], &[5, code, 0, 1]]);
            let error = result.unwrap_err();
            assert_eq!(error.kind(), kind, "reply {code} for {host}");
            assert!(error.to_string().starts_with(&format!("{host}:80: ")));
        }
    }

    #[test]
    fn credentials_are_sent_when_the_front_end_asks() {
        let credentials = Credentials::new("user", "secret").unwrap();
        let handshake = Handshake::new("10.8.0.1", 80, Some(credentials.clone())).unwrap();
        let (sent, result) = run(
            handshake,
            &[&[5, 2], &[1, 0], &[5, 0, 0, 1], &[0, 0, 0, 0, 0, 0]],
        );
        result.unwrap();
        assert_eq!(sent[0], [5, 2, 0, 2]);
        assert_eq!(sent[1], b"\x01\x04user\x06secret");
        let handshake = Handshake::new("10.8.0.1", 80, Some(credentials)).unwrap();
        let (_, result) = run(handshake, &[&[5, 2], &[1, 1]]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        // Without credentials a front end that demands them is refused, not answered.
        let handshake = Handshake::new("10.8.0.1", 80, None).unwrap();
        let (_, result) = run(handshake, &[&[5, 0xff]]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        let handshake = Handshake::new("10.8.0.1", 80, None).unwrap();
        let (_, result) = run(handshake, &[&[5, 2]]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn bad_destinations_and_answers_are_errors() {
        let long = "a".repeat(256);
        for (host, port) in [("", 80), (long.as_str(), 80), ("10.8.0.1", 0)] {
            let error = Handshake::new(host, port, None).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(Handshake::new(&"a".repeat(255), 80, None).is_ok());
        let mut handshake = Handshake::new("10.8.0.1", 80, None).unwrap();
        assert_eq!(
            handshake.feed(b"HT").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(Credentials::new("", "x").is_err());
        assert!(Credentials::new("x", vec![b'p'; 256]).is_err());
    }

    #[test]
    fn internal_listener_is_appended_as_socks5() {
        let mut config = ClientConfig {
            listeners: vec![FrontEnd::Http],
            proxy: erebus_proxy::ProxyConfig::default(),
            tcp: erebus_net::tcp::TcpConfig::default(),
            dns_servers: Vec::new(),
            tunnel_wait: ClientConfig::DEFAULT_TUNNEL_WAIT,
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
