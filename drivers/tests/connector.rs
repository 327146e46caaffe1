//! Connectors open streams through a real `erebus_client::Client` run by each driver, with no
//! listening socket: the tunnel is a pass-through over loopback UDP, and the "private network"
//! behind it is a second user-space TCP/IP stack on a thread, with an echo server (port 7), a
//! tiny HTTP server (port 80) and a DNS server that knows `web.erebus.test`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

#[path = "../examples/hyper_client/rt.rs"]
mod rt;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use erebus::Clock;
use erebus::connector::add_internal_listener;
use erebus::mio_driver::MioDriver;
use erebus::smol_driver::SmolDriver;
use erebus_client::{Client, ClientConfig};
use erebus_net::{SocketHandle, Stack, State, TcpConfig};
use erebus_proxy::{FrontEnd, ProxyConfig};
use erebus_sansio::Instant;
use erebus_sansio::Seed;
use erebus_sansio::io::ListenerId;
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Failure, Fault, IpNet, Overhead, TransportKind, TransportSpec,
    Tunnel, TunnelConfig, TunnelEvent,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);
const NAME: &str = "web.erebus.test";
const ECHO_PORT: u16 = 7;
const HTTP_PORT: u16 = 80;
const PAGE: &str = "<html>hello from the private network</html>\n";

/// A tunnel that carries inner packets as they are, over UDP to `remote`, up at once.
struct PassThrough {
    spec: TransportSpec,
    up_sent: bool,
    closing: bool,
}

impl Tunnel for PassThrough {
    fn transport(&self) -> Option<&TransportSpec> {
        Some(&self.spec)
    }
    fn overhead(&self) -> Overhead {
        Overhead::default()
    }
    fn transport_connected(&mut self, _: Instant, _: SocketAddr) {}
    fn transport_closed(&mut self, _: Instant, _: erebus_sansio::io::TransportError) {}
    fn decapsulate(&mut self, _: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        Ok(Decapsulated::Inner(0..packet.len()))
    }
    fn encapsulate(
        &mut self,
        _: Instant,
        _: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        Ok(inner)
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn close(&mut self, _: Instant) {
        self.closing = true;
    }
    fn poll_transmit(&mut self, _: Instant, _: &mut [u8]) -> Option<Result<usize, usize>> {
        None
    }
    fn poll_event(&mut self) -> Option<TunnelEvent> {
        if self.closing {
            self.closing = false;
            return Some(TunnelEvent::Down(Failure::new(Fault::Closed, "closed")));
        }
        if self.up_sent {
            return None;
        }
        self.up_sent = true;
        Some(TunnelEvent::Up(TunnelConfig {
            ipv4: IpNet::new(IpAddr::V4(CLIENT_IP), 24),
            gateway: Some(IpAddr::V4(SERVER_IP)),
            mtu: 1500,
            ..TunnelConfig::default()
        }))
    }
    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        None
    }
}

/// One connection accepted by the private network's servers.
struct ServerConn {
    handle: SocketHandle,
    port: u16,
    request: Vec<u8>,
    pending: Vec<u8>,
    close_when_sent: bool,
    closed: bool,
}

/// The private network behind the tunnel, on its own thread.
struct PrivateNet {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Names the DNS server was asked for.
    queries: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl PrivateNet {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, queries) = (stop.clone(), queries.clone());
            std::thread::spawn(move || serve(&socket, &stop, &queries))
        };
        Self {
            addr,
            stop,
            queries,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(socket: &UdpSocket, stop: &AtomicBool, queries: &Mutex<Vec<String>>) {
    let clock = Clock::start();
    let config = TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(SERVER_IP), 24),
        mtu: 1500,
        ..TunnelConfig::default()
    };
    let mut stack = Stack::new(&config, TcpConfig::default(), &Seed::from_byte(9));
    stack.udp_bind(53).unwrap();
    let mut listeners: BTreeMap<u16, SocketHandle> = [ECHO_PORT, HTTP_PORT]
        .into_iter()
        .map(|port| (port, stack.listen(port).unwrap()))
        .collect();
    let mut conns: Vec<ServerConn> = Vec::new();
    let mut peer = None;
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                peer = Some(from);
                let _ = stack.ingress(clock.now(), &buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("private network socket: {e}"),
        }
        // A listener that took a connection becomes it; listen again for the next one.
        for (&port, listener) in &mut listeners {
            if stack.socket(*listener).unwrap().state() != State::Listen {
                conns.push(ServerConn {
                    handle: *listener,
                    port,
                    request: Vec::new(),
                    pending: Vec::new(),
                    close_when_sent: false,
                    closed: false,
                });
                *listener = stack.listen(port).unwrap();
            }
        }
        for conn in &mut conns {
            serve_conn(&mut stack, conn, &mut buf);
        }
        while let Some(query) = stack.udp_recv() {
            let (name, answer) = dns_answer(&query.payload);
            queries.lock().unwrap().push(name);
            let _ = stack.udp_send(53, query.remote, &answer);
        }
        let now = clock.now();
        while let Some(n) = stack.poll_egress(now, &mut buf) {
            if let Some(peer) = peer {
                let _ = socket.send_to(&buf[..n], peer);
            }
        }
    }
}

/// Port 7 echoes and closes after the client does; port 80 answers one request with `PAGE`.
fn serve_conn(stack: &mut Stack, conn: &mut ServerConn, buf: &mut [u8]) {
    let Some(socket) = stack.socket_mut(conn.handle) else {
        return;
    };
    if conn.closed {
        return;
    }
    if !conn.pending.is_empty()
        && let Ok(sent) = socket.send(&conn.pending)
    {
        conn.pending.drain(..sent);
    }
    while conn.pending.len() < 256 * 1024 {
        match socket.recv(buf) {
            Ok(0) => break,
            Ok(n) if conn.port == ECHO_PORT => conn.pending.extend_from_slice(&buf[..n]),
            Ok(n) => {
                conn.request.extend_from_slice(&buf[..n]);
                if conn.request.windows(4).any(|w| w == b"\r\n\r\n") && !conn.close_when_sent {
                    let head = String::from_utf8_lossy(&conn.request).into_owned();
                    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
                    conn.pending = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{PAGE}",
                        PAGE.len()
                    )
                    .into_bytes();
                    conn.close_when_sent = true;
                }
            }
            Err(_) => {
                // The client finished (or the connection failed): close after the echo.
                conn.close_when_sent = true;
                break;
            }
        }
    }
    if !conn.pending.is_empty()
        && let Ok(sent) = socket.send(&conn.pending)
    {
        conn.pending.drain(..sent);
    }
    if conn.close_when_sent && conn.pending.is_empty() {
        socket.close();
        conn.closed = true;
    }
}

/// Answers an A query for `NAME` with `SERVER_IP`, anything else with NXDOMAIN; returns the
/// name asked for and the answer.
fn dns_answer(query: &[u8]) -> (String, Vec<u8>) {
    let mut labels = Vec::new();
    let mut at = 12;
    while let Some(&len) = query.get(at)
        && len != 0
    {
        let label = &query[at + 1..at + 1 + usize::from(len)];
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + usize::from(len);
    }
    let name = labels.join(".");
    let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
    let known = name == NAME && qtype == 1;
    let mut response = query[..at + 5].to_vec();
    response[2] = 0x84 | (query[2] & 0x01);
    response[3] = if known { 0x80 } else { 0x83 };
    response[6..12].copy_from_slice(&[0, u8::from(known), 0, 0, 0, 0]);
    if known {
        response.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        response.extend_from_slice(&SERVER_IP.octets());
    }
    (name, response)
}

/// A client over the pass-through tunnel to `net`, with a SOCKS5 front end on `listeners[0]`
/// when `with_socks_listener`, and the internal front end after it.
fn client(net: &PrivateNet, with_socks_listener: bool) -> (Client<PassThrough>, ListenerId) {
    let mut config = ClientConfig {
        listeners: if with_socks_listener {
            vec![FrontEnd::Socks5]
        } else {
            Vec::new()
        },
        proxy: ProxyConfig::default(),
        tcp: TcpConfig::default(),
        dns_servers: vec![IpAddr::V4(SERVER_IP)],
        tunnel_wait: ClientConfig::DEFAULT_TUNNEL_WAIT,
        limits: erebus_client::Limits::default(),
    };
    let internal = add_internal_listener(&mut config);
    let tunnel = PassThrough {
        spec: TransportSpec::to_addr(net.addr, TransportKind::Udp),
        up_sent: false,
        closing: false,
    };
    let client = Client::new(tunnel, config, &Seed::from_byte(1), Instant::ZERO);
    (client, internal)
}

/// A recognisable payload of `len` bytes.
fn payload(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ salt.wrapping_mul(31))
        .collect()
}

/// Starts a mio driver on its own thread; returns its connector, one for a listener id the
/// client does not have, its stop handle, its TCP listener's address and its thread.
fn start_mio(
    net: &PrivateNet,
    with_socks_listener: bool,
) -> (
    erebus::mio_driver::Connector,
    erebus::mio_driver::Connector,
    erebus::mio_driver::StopHandle,
    Option<SocketAddr>,
    JoinHandle<Failure>,
) {
    let (client, internal) = client(net, with_socks_listener);
    let sockets: Vec<TcpListener> = if with_socks_listener {
        vec![TcpListener::bind("127.0.0.1:0").unwrap()]
    } else {
        Vec::new()
    };
    let socks = sockets.first().map(|l| l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut driver = MioDriver::new(client, Clock::start(), sockets).unwrap();
        let connectors = (driver.connector(internal), driver.connector(ListenerId(7)));
        tx.send((connectors, driver.stop_handle())).unwrap();
        driver.run().unwrap()
    });
    let ((connector, stray), stop) = rx.recv().unwrap();
    (connector, stray, stop, socks, thread)
}

#[test]
fn mio_connector_gives_blocking_streams_through_the_tunnel() {
    let net = PrivateNet::start();
    let (connector, _, stop, socks, driver) = start_mio(&net, true);
    connector.wait_until_up(Duration::from_secs(5)).unwrap();
    assert!(connector.is_up());

    // By name: resolved by the DNS server behind the tunnel, then echoed.
    let mut stream = connector.connect(NAME, ECHO_PORT).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"hello through the tunnel").unwrap();
    let mut echo = [0u8; 24];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello through the tunnel");
    // Half-closing reaches the server as a FIN; its close comes back as end of stream.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(
        net.queries().iter().any(|q| q == NAME),
        "{:?}",
        net.queries()
    );

    // Two threads at once, a megabyte each way per stream, by address: backpressure in both
    // directions through the Unix socket pairs.
    let workers: Vec<JoinHandle<()>> = (0..2u8)
        .map(|salt| {
            let connector = connector.clone();
            std::thread::spawn(move || {
                let data = payload(1 << 20, salt);
                let stream = connector.connect("10.8.0.1", ECHO_PORT).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut writer = stream.try_clone().unwrap();
                let sent = data.clone();
                let sender = std::thread::spawn(move || {
                    writer.write_all(&sent).unwrap();
                    writer.shutdown(std::net::Shutdown::Write).unwrap();
                });
                let mut got = Vec::new();
                (&stream).read_to_end(&mut got).unwrap();
                sender.join().unwrap();
                assert_eq!(got.len(), data.len());
                assert!(got == data, "stream {salt} corrupted");
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }

    // The same driver still serves its TCP listener (SOCKS5 by hand) next to the connector.
    let mut tcp = std::net::TcpStream::connect(socks.unwrap()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&[5, 1, 0]).unwrap();
    let mut reply = [0u8; 2];
    tcp.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [5, 0]);
    tcp.write_all(&[5, 1, 0, 1, 10, 8, 0, 1, 0, ECHO_PORT as u8])
        .unwrap();
    let mut reply = [0u8; 10];
    tcp.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "SOCKS5 success over the TCP listener");
    tcp.write_all(b"tcp too").unwrap();
    let mut echo = [0u8; 7];
    tcp.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"tcp too");

    stop.stop();
    assert_eq!(driver.join().unwrap().fault, Fault::Closed);
    drop(net);
}

#[test]
fn mio_connector_reports_failures_as_error_kinds() {
    let net = PrivateNet::start();
    let (connector, stray, stop, _, driver) = start_mio(&net, false);
    connector.wait_until_up(Duration::from_secs(5)).unwrap();

    let refused = connector.connect("10.8.0.1", 81).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    let unknown = connector.connect("nowhere.erebus.test", 80).unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound, "{unknown}");
    assert!(net.queries().iter().any(|q| q == "nowhere.erebus.test"));
    let unreachable = connector.connect("192.0.2.9", 80).unwrap_err();
    assert_eq!(
        unreachable.kind(),
        ErrorKind::HostUnreachable,
        "{unreachable}"
    );
    let invalid = connector.connect("10.8.0.1", 0).unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::InvalidInput);
    // A listener id the client does not know: the client closes the stream.
    let stray = stray.connect("10.8.0.1", ECHO_PORT).unwrap_err();
    assert_eq!(stray.kind(), ErrorKind::ConnectionAborted, "{stray}");

    // Once the session is over, connects fail at once instead of waiting.
    stop.stop();
    assert_eq!(driver.join().unwrap().fault, Fault::Closed);
    let after = connector.connect("10.8.0.1", ECHO_PORT).unwrap_err();
    assert_eq!(after.kind(), ErrorKind::NotConnected, "{after}");
    assert_eq!(
        connector
            .wait_until_up(Duration::from_secs(1))
            .unwrap_err()
            .kind(),
        ErrorKind::NotConnected
    );
}

#[test]
fn mio_connect_times_out_when_the_driver_does_not_run() {
    let net = PrivateNet::start();
    let (client, internal) = client(&net, false);
    let driver = MioDriver::new(client, Clock::start(), Vec::new()).unwrap();
    let connector = driver
        .connector(internal)
        .with_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let error = connector.connect("10.8.0.1", ECHO_PORT).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(driver);
    let error = connector.connect("10.8.0.1", ECHO_PORT).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotConnected, "{error}");
}

/// Runs `test` with a connector of a smol driver that runs on smol's executor.
fn with_smol<F>(net: &PrivateNet, test: impl FnOnce(erebus::smol_driver::Connector) -> F)
where
    F: Future<Output = ()>,
{
    let (client, internal) = client(net, false);
    let mut driver = SmolDriver::new(client, Clock::start(), Vec::new()).unwrap();
    let connector = driver.connector(internal);
    let stop = driver.stop_handle();
    smol::block_on(async move {
        let session = smol::spawn(async move { driver.run().await });
        test(connector).await;
        stop.stop();
        assert_eq!(session.await.unwrap().fault, Fault::Closed);
    });
}

#[test]
fn smol_connector_gives_async_streams_through_the_tunnel() {
    fn assert_futures_io<T: futures_io_traits::Both>(_: &T) {}
    mod futures_io_traits {
        /// `smol::io`'s traits are futures-io's.
        pub(crate) trait Both: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin {}
        impl<T: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin> Both for T {}
    }
    let net = PrivateNet::start();
    with_smol(&net, |connector| async move {
        connector.until_up().await.unwrap();
        assert!(connector.is_up());
        let mut stream = connector.connect(NAME, ECHO_PORT).await.unwrap();
        assert_futures_io(&stream);
        stream.write_all(b"async hello").await.unwrap();
        let mut echo = [0u8; 11];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"async hello");

        // Two streams at once, a megabyte each way, writing and reading concurrently.
        let transfers = (0..2u8).map(|salt| {
            let connector = connector.clone();
            smol::spawn(async move {
                let data = payload(1 << 20, salt);
                let stream = connector.connect("10.8.0.1", ECHO_PORT).await.unwrap();
                let stream = Arc::new(stream);
                let writer = {
                    let (stream, data) = (stream.clone(), data.clone());
                    smol::spawn(async move {
                        let mut stream = &*stream;
                        stream.write_all(&data).await.unwrap();
                        stream
                            .get_ref()
                            .shutdown(std::net::Shutdown::Write)
                            .unwrap();
                    })
                };
                let mut got = Vec::new();
                (&*stream).read_to_end(&mut got).await.unwrap();
                writer.await;
                assert_eq!(got.len(), data.len());
                assert!(got == data, "stream {salt} corrupted");
            })
        });
        for transfer in transfers.collect::<Vec<_>>() {
            transfer.await;
        }

        let refused = connector.connect("10.8.0.1", 81).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        let unknown = connector.connect("nowhere.erebus.test", 80).await;
        assert_eq!(unknown.unwrap_err().kind(), ErrorKind::NotFound);
    });
    assert!(net.queries().iter().any(|q| q == NAME));
}

#[test]
fn smol_connector_fails_once_the_driver_is_gone() {
    let net = PrivateNet::start();
    let (client, internal) = client(&net, false);
    let driver = SmolDriver::new(client, Clock::start(), Vec::new()).unwrap();
    let connector = driver
        .connector(internal)
        .with_timeout(Duration::from_millis(200));
    smol::block_on(async {
        let error = connector.connect("10.8.0.1", ECHO_PORT).await.unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::TimedOut,
            "driver not running: {error}"
        );
        drop(driver);
        let error = connector.connect("10.8.0.1", ECHO_PORT).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotConnected, "{error}");
        let error = connector.until_up().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotConnected, "{error}");
    });
}

/// hyper 1.x over a smol connector stream, through the example's runtime adapter.
#[test]
fn hyper_runs_over_a_smol_connector_stream() {
    let net = PrivateNet::start();
    with_smol(&net, |connector| async move {
        connector.until_up().await.unwrap();
        let stream = connector.connect(NAME, HTTP_PORT).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, String>(rt::FuturesIo::new(stream))
                .await
                .unwrap();
        let connection = smol::spawn(connection);
        let request = hyper::Request::get("/")
            .header(hyper::header::HOST, NAME)
            .body(String::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), hyper::StatusCode::OK);
        let body = rt::read_body(response.into_body()).await.unwrap();
        assert_eq!(body, PAGE.as_bytes());
        connection.await.unwrap();
    });
}
