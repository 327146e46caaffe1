//! Properties of every front end under arbitrary input: no panics, nothing after the end, the
//! contract with the driver and the layer below kept, buffers bounded, and (with an idle
//! timeout configured) no connection left hanging.

use std::sync::Arc;
use std::time::Duration;

use erebus_proxy::{
    Action, FrontEnd, Host, Instant, ProxyAuth, ProxyConfig, ProxyConn, UpstreamFailure,
};
use proptest::collection::vec;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Event {
    ClientData(Vec<u8>),
    ClientEof,
    ClientReset,
    Connected,
    Failed(UpstreamFailure),
    UpstreamData(Vec<u8>),
    UpstreamEof,
    Advance(u64),
    DrainClient(usize),
    DrainUpstream(usize),
}

/// The upstream stream as a well-behaved layer below sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stream {
    None,
    Pending,
    Up { eof: bool },
    Dead,
}

const BUFFER: usize = 256;
const MAX_HEAD: usize = 1024;
const MAX_CHUNK: usize = 4 * 128;

fn config(idle: bool) -> ProxyConfig {
    ProxyConfig {
        buffer_size: BUFFER,
        max_request_head: MAX_HEAD,
        max_request_line: 512,
        max_response_head: MAX_HEAD,
        idle_timeout: idle.then(|| Duration::from_secs(300)),
        ..ProxyConfig::default()
    }
}

/// Drives one connection like a correct driver and layer below would, checking the contract
/// after every step.
struct Checker {
    conn: ProxyConn,
    now: Instant,
    stream: Stream,
    client_paused: bool,
    upstream_paused: bool,
    client_eof: bool,
    client_shut: bool,
    upstream_shut: bool,
    closed: bool,
    log: Vec<Action>,
    client_bytes: Vec<u8>,
    upstream_bytes: Vec<u8>,
}

impl Checker {
    fn new(front: FrontEnd, config: ProxyConfig) -> Self {
        let now = Instant::from_secs(1);
        let mut checker = Self {
            conn: ProxyConn::new(now, front, Arc::new(config)),
            now,
            stream: Stream::None,
            client_paused: false,
            upstream_paused: false,
            client_eof: false,
            client_shut: false,
            upstream_shut: false,
            closed: false,
            log: Vec::new(),
            client_bytes: Vec::new(),
            upstream_bytes: Vec::new(),
        };
        checker.actions();
        checker
    }

    fn actions(&mut self) {
        while let Some(action) = self.conn.poll_action() {
            assert!(!self.closed, "{action:?} after CloseClient");
            match &action {
                Action::Connect { .. } => {
                    assert_eq!(self.stream, Stream::None, "Connect while a stream is open");
                    self.stream = Stream::Pending;
                    self.upstream_shut = false;
                    self.upstream_paused = false;
                }
                Action::CloseUpstream => {
                    assert_ne!(self.stream, Stream::None, "CloseUpstream without a stream");
                    self.stream = Stream::None;
                }
                Action::ShutdownUpstream => {
                    assert!(matches!(self.stream, Stream::Up { .. }));
                    assert!(!self.upstream_shut, "ShutdownUpstream twice");
                    self.upstream_shut = true;
                }
                Action::PauseClient => {
                    assert!(!self.client_paused, "PauseClient twice");
                    self.client_paused = true;
                }
                Action::ResumeClient => {
                    assert!(self.client_paused, "ResumeClient while not paused");
                    self.client_paused = false;
                }
                Action::PauseUpstream => {
                    assert!(matches!(self.stream, Stream::Up { .. }));
                    assert!(!self.upstream_paused, "PauseUpstream twice");
                    self.upstream_paused = true;
                }
                Action::ResumeUpstream => {
                    assert!(self.upstream_paused, "ResumeUpstream while not paused");
                    self.upstream_paused = false;
                }
                Action::ShutdownClient => {
                    assert!(!self.client_shut, "ShutdownClient twice");
                    assert!(
                        self.conn.client_output().is_empty(),
                        "ShutdownClient before flushing"
                    );
                    self.client_shut = true;
                }
                Action::CloseClient => {
                    assert_eq!(self.stream, Stream::None, "CloseClient with a stream open");
                    self.closed = true;
                }
            }
            self.log.push(action);
        }
        self.check_outputs();
    }

    fn check_outputs(&self) {
        let client = self.conn.client_output();
        let upstream = self.conn.upstream_output();
        if self.closed {
            assert!(self.conn.is_closed());
            assert!(
                client.is_empty() && upstream.is_empty(),
                "output after close"
            );
            assert_eq!(self.conn.poll_timeout(), None);
        }
        if self.client_shut {
            assert!(client.is_empty(), "client bytes after ShutdownClient");
        }
        if !upstream.is_empty() {
            assert!(
                matches!(self.stream, Stream::Up { .. }),
                "upstream bytes without an open stream"
            );
            assert!(!self.upstream_shut, "upstream bytes after ShutdownUpstream");
        }
        // A driver that honours pauses never sees the queues grow far past the buffer size.
        let bound = BUFFER + 2 * MAX_HEAD + 2 * MAX_CHUNK;
        assert!(
            self.conn.upstream_backlog() <= bound,
            "upstream backlog {}",
            self.conn.upstream_backlog()
        );
        assert!(
            self.conn.client_backlog() <= bound,
            "client backlog {}",
            self.conn.client_backlog()
        );
    }

    fn apply(&mut self, event: &Event) {
        let now = self.now;
        match event {
            Event::ClientData(bytes) => {
                if self.client_paused || self.client_eof {
                    return;
                }
                self.conn.on_client_data(now, bytes);
            }
            Event::ClientEof => {
                if self.client_eof {
                    return;
                }
                self.client_eof = true;
                self.conn.on_client_eof(now);
            }
            Event::ClientReset => {
                self.client_eof = true;
                self.conn.on_client_reset(now);
            }
            Event::Connected => {
                if self.stream != Stream::Pending {
                    return;
                }
                self.stream = Stream::Up { eof: false };
                let local = "10.8.0.2:40000".parse().ok();
                self.conn.on_upstream_connected(now, local);
            }
            Event::Failed(failure) => {
                if !matches!(self.stream, Stream::Pending | Stream::Up { .. }) {
                    return;
                }
                self.stream = Stream::Dead;
                self.conn.on_upstream_failed(now, *failure);
            }
            Event::UpstreamData(bytes) => {
                if self.stream != (Stream::Up { eof: false }) || self.upstream_paused {
                    return;
                }
                self.conn.on_upstream_data(now, bytes);
            }
            Event::UpstreamEof => {
                if self.stream != (Stream::Up { eof: false }) {
                    return;
                }
                self.stream = Stream::Up { eof: true };
                self.conn.on_upstream_eof(now);
            }
            Event::Advance(millis) => {
                self.now += Duration::from_millis(*millis);
                self.conn.handle_timeout(self.now);
            }
            Event::DrainClient(n) => {
                let n = (*n).min(self.conn.client_output().len());
                self.client_bytes
                    .extend_from_slice(&self.conn.client_output()[..n]);
                self.conn.advance_client(now, n);
            }
            Event::DrainUpstream(n) => {
                let n = (*n).min(self.conn.upstream_output().len());
                self.upstream_bytes
                    .extend_from_slice(&self.conn.upstream_output()[..n]);
                self.conn.advance_upstream(now, n);
            }
        }
        self.actions();
    }

    /// Leaves the connection alone but for draining both sides and firing its deadlines; with
    /// an idle timeout configured it must end.
    fn run_to_the_end(&mut self) {
        for _ in 0..64 {
            for _ in 0..64 {
                let before = (
                    self.conn.client_output().len(),
                    self.conn.upstream_output().len(),
                );
                self.apply(&Event::DrainClient(usize::MAX));
                self.apply(&Event::DrainUpstream(usize::MAX));
                if before == (0, 0) {
                    break;
                }
            }
            if self.closed {
                return;
            }
            let deadline = self
                .conn
                .poll_timeout()
                .expect("with an idle timeout every state has a deadline");
            self.now = self.now.max(deadline);
            self.conn.handle_timeout(self.now);
            self.actions();
        }
        panic!("the connection never ended: {:?}", self.log);
    }
}

fn chunk(fragments: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        1 => vec(any::<u8>(), 0..16),
        12 => proptest::sample::select(fragments).prop_map(<[u8]>::to_vec),
    ];
    vec(fragment, 1..4).prop_map(|parts| parts.concat())
}

const HTTP_CLIENT: &[&[u8]] = &[
    b"GET http://a.corp/ HTTP/1.1\r\n\r\n",
    b"GET http://b.corp:8080/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"HEAD http://a.corp/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"CONNECT a.corp:443 HTTP/1.1\r\n\r\n",
    b"POST http://b.corp/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"PUT http://a.corp/ HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    b"GET http://ws.corp/ HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET http://a.corp/ HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"0\r\nX-T: 1\r\n\r\n",
    b"hello",
    b"\r\n",
    b"GET http://a.corp/",
    b" HTTP/1.1\r\nHost: x\r\n",
];

const HTTP_UPSTREAM: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
];

const SOCKS_CLIENT: &[&[u8]] = &[
    &[5, 1, 0],
    &[5, 2, 0, 2],
    &[
        1, 5, b'a', b'l', b'i', b'c', b'e', 6, b's', b'3', b'c', b'r', b'e', b't',
    ],
    &[5, 1, 0, 1, 10, 0, 0, 7, 0, 80],
    &[5, 1, 0, 3, 6, b'a', b'.', b'c', b'o', b'r', b'p', 0, 22],
    &[5, 2, 0, 1, 10, 0, 0, 7, 0, 80],
    b"data",
];

fn events(
    client: impl Strategy<Value = Vec<u8>>,
    upstream: impl Strategy<Value = Vec<u8>>,
) -> impl Strategy<Value = Vec<Event>> {
    let failure = proptest::sample::select(vec![
        UpstreamFailure::Refused,
        UpstreamFailure::Unreachable,
        UpstreamFailure::Timeout,
        UpstreamFailure::TunnelDown,
        UpstreamFailure::NameNotFound,
        UpstreamFailure::NotAllowed,
        UpstreamFailure::Reset,
        UpstreamFailure::Other,
    ]);
    let event = prop_oneof![
        8 => client.prop_map(Event::ClientData),
        1 => Just(Event::ClientEof),
        1 => Just(Event::ClientReset),
        4 => Just(Event::Connected),
        1 => failure.prop_map(Event::Failed),
        8 => upstream.prop_map(Event::UpstreamData),
        1 => Just(Event::UpstreamEof),
        2 => prop_oneof![4 => 0u64..2_000, 1 => 0u64..200_000].prop_map(Event::Advance),
        4 => (0usize..600).prop_map(Event::DrainClient),
        4 => (0usize..600).prop_map(Event::DrainUpstream),
    ];
    vec(event, 0..60)
}

fn fronts() -> impl Strategy<Value = FrontEnd> {
    prop_oneof![
        Just(FrontEnd::Http),
        Just(FrontEnd::Socks5),
        Just(FrontEnd::Forward {
            host: Host::Name("git.corp".into()),
            port: 22
        }),
    ]
}

fn run(
    front: &FrontEnd,
    auth: bool,
    idle: bool,
    events: &[Event],
) -> (Vec<Action>, Vec<u8>, Vec<u8>) {
    let mut config = config(idle);
    if auth {
        config.auth = ProxyAuth::new("alice", "s3cret").ok();
    }
    let mut checker = Checker::new(front.clone(), config);
    for event in events {
        checker.apply(event);
    }
    if idle {
        checker.run_to_the_end();
    }
    (checker.log, checker.client_bytes, checker.upstream_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes from both sides, in any order with any timing: no panic, and the
    /// contract holds at every step.
    #[test]
    fn arbitrary_bytes_keep_the_contract(
        front in fronts(),
        auth in any::<bool>(),
        events in events(vec(any::<u8>(), 0..128), vec(any::<u8>(), 0..128)),
    ) {
        run(&front, auth, false, &events);
    }

    /// Mostly well-formed HTTP on both sides reaches the deep states; the contract still holds
    /// and, with an idle timeout, every connection ends on its own.
    #[test]
    fn http_sessions_keep_the_contract_and_end(
        auth in any::<bool>(),
        events in events(chunk(HTTP_CLIENT), chunk(HTTP_UPSTREAM)),
    ) {
        run(&FrontEnd::Http, auth, true, &events);
    }

    /// The same for SOCKS5 handshakes and relays.
    #[test]
    fn socks5_sessions_keep_the_contract_and_end(
        auth in any::<bool>(),
        events in events(chunk(SOCKS_CLIENT), vec(any::<u8>(), 0..128)),
    ) {
        run(&FrontEnd::Socks5, auth, true, &events);
    }

    /// Every front end, left alone with an idle timeout configured, ends.
    #[test]
    fn nothing_hangs(
        front in fronts(),
        events in events(vec(any::<u8>(), 0..128), vec(any::<u8>(), 0..128)),
    ) {
        run(&front, false, true, &events);
    }

    /// The same inputs give the same outputs, byte for byte.
    #[test]
    fn sessions_are_deterministic(
        front in fronts(),
        events in events(chunk(HTTP_CLIENT), chunk(HTTP_UPSTREAM)),
    ) {
        prop_assert_eq!(run(&front, false, false, &events), run(&front, false, false, &events));
    }
}

/// One request of a well-formed keep-alive session and the response it gets.
#[derive(Clone, Debug)]
struct Exchange {
    host: &'static str,
    request: u8,
    response: u8,
}

impl Exchange {
    /// What the client sends, and what the upstream must receive.
    fn request(&self) -> (Vec<u8>, Vec<u8>) {
        let host = self.host;
        let (head, body, framing) = match self.request % 3 {
            0 => ("GET", "", String::new()),
            1 => ("POST", "hello world", "Content-Length: 11\r\n".to_owned()),
            _ => (
                "PUT",
                "4;x=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Sum: 9\r\n\r\n",
                "Transfer-Encoding: chunked\r\n".to_owned(),
            ),
        };
        let sent = format!(
            "{head} http://{host}/r HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n{framing}\r\n{body}"
        );
        let received = format!("{head} /r HTTP/1.1\r\nHost: {host}\r\n{framing}\r\n{body}");
        // Content-Length is written after the other fields.
        let received = if self.request % 3 == 1 {
            format!("{head} /r HTTP/1.1\r\nHost: {host}\r\nContent-Length: 11\r\n\r\n{body}")
        } else {
            received
        };
        (sent.into_bytes(), received.into_bytes())
    }

    /// What the upstream sends; the client receives it unchanged.
    fn response(&self) -> Vec<u8> {
        match self.response % 4 {
            0 => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            1 => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nX-T: 1\r\n\r\n".to_vec(),
            2 => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        }
    }
}

fn exchanges() -> impl Strategy<Value = Vec<Exchange>> {
    let exchange = (
        proptest::sample::select(vec!["a.corp", "b.corp"]),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(|(host, request, response)| Exchange {
            host,
            request,
            response,
        });
    vec(exchange, 1..6)
}

/// Feeds `bytes` in pieces of the given sizes (cycled).
fn feed(bytes: &[u8], sizes: &[usize], mut send: impl FnMut(&[u8])) {
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let size = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(bytes.len())
            .max(1);
        let end = (at + size).min(bytes.len());
        send(&bytes[at..end]);
        at = end;
        i += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A keep-alive session to one or two hosts, with every byte stream split anywhere and the
    /// requests optionally pipelined: each request reaches the upstream rewritten, each
    /// response reaches the client unchanged and in order, and a stream is opened only when
    /// the host changes.
    #[test]
    fn keep_alive_sessions_arrive_intact(
        session in exchanges(),
        client_sizes in vec(1usize..40, 1..8),
        upstream_sizes in vec(1usize..40, 1..8),
        pipelined in any::<bool>(),
    ) {
        let mut checker = Checker::new(FrontEnd::Http, ProxyConfig::default());
        let drain = |checker: &mut Checker| {
            checker.apply(&Event::DrainClient(usize::MAX));
            checker.apply(&Event::DrainUpstream(usize::MAX));
        };
        if pipelined {
            let all: Vec<u8> = session.iter().flat_map(|e| e.request().0).collect();
            feed(&all, &client_sizes, |piece| checker.apply(&Event::ClientData(piece.to_vec())));
        }
        let mut expected_client = Vec::new();
        let mut expected_connects = 0;
        let mut previous_host = None;
        for exchange in &session {
            let (sent, received) = exchange.request();
            if !pipelined {
                feed(&sent, &client_sizes, |piece| {
                    checker.apply(&Event::ClientData(piece.to_vec()));
                    drain(&mut checker);
                });
            }
            if previous_host != Some(exchange.host) {
                expected_connects += 1;
                previous_host = Some(exchange.host);
            }
            checker.apply(&Event::Connected);
            drain(&mut checker);
            let forwarded = std::mem::take(&mut checker.upstream_bytes);
            prop_assert_eq!(
                String::from_utf8_lossy(&forwarded),
                String::from_utf8_lossy(&received)
            );
            let response = exchange.response();
            feed(&response, &upstream_sizes, |piece| {
                checker.apply(&Event::UpstreamData(piece.to_vec()));
                drain(&mut checker);
            });
            expected_client.extend_from_slice(&response);
        }
        prop_assert_eq!(
            String::from_utf8_lossy(&checker.client_bytes),
            String::from_utf8_lossy(&expected_client)
        );
        let connects = checker.log.iter().filter(|a| matches!(a, Action::Connect { .. })).count();
        prop_assert_eq!(connects, expected_connects);
        prop_assert!(!checker.closed);
    }
}
