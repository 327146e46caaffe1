//! The whole client path in memory, shared by the zero-allocation test and the client-path
//! benchmark: erebus's client over an OpenVPN static-key tunnel (AES-256-CBC, HMAC-SHA256) to a
//! peer that is the same point-to-point session in the other key direction, with a user-space
//! stack behind it standing in for the private network.
//!
//! A static-key session has no handshake, so the tunnel is up at once and no server process is
//! needed. A local connection on a port-forward listener becomes a TCP connection through the
//! tunnel to the peer's stack; then bytes flow both ways: local stream bytes into inner IP
//! packets into outer datagrams, and outer datagrams back into inner packets into stream bytes
//! for the local connection.
//!
//! The link delivers at once and the clock moves on a little every round. Only the client's
//! own calls are counted by [`ClientPath::client_allocations`], so the peer and the harness,
//! which are not under test, may allocate as they like.

#![allow(dead_code)] // The test and the benchmark each use a different part.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use erebus_alloc_counter::thread_allocations;
use erebus_client::{Client, ClientConfig};
use erebus_net::{RecvError, SocketHandle, Stack, TcpConfig};
use erebus_openvpn::data::{AuthAlg, CipherAlg};
use erebus_openvpn::keys::KeyDirection;
use erebus_openvpn::{P2pConfig, P2pMode, P2pSession, StaticKey, StaticKeyMode};
use erebus_proxy::{FrontEnd, Host, ProxyConfig};
use erebus_sansio::io::{
    ConnId, Event, Input, ListenerId, LocalAction, LocalEvent, Output, TransportEvent,
};
use erebus_sansio::tunnel::{Decapsulated, IpNet, Tunnel, TunnelConfig};
use erebus_sansio::{Driven, Instant, Seed, UnixTime, WallClock};

pub(crate) const SERVER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 1194);
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const PORT: u16 = 80;
const CONN: ConnId = ConnId(1);
/// Bytes of one local read: about one full-size TCP segment's payload through the tunnel.
pub(crate) const CHUNK: usize = 1300;
/// Virtual time between two rounds.
const TICK: Duration = Duration::from_micros(20);

fn p2p_config(local: Ipv4Addr, remote: Ipv4Addr, direction: KeyDirection) -> P2pConfig {
    let key: [u8; 256] = core::array::from_fn(|i| (i as u8).wrapping_mul(13) ^ 0x3c);
    let mode = StaticKeyMode {
        key: StaticKey::from_bytes(&key),
        direction,
        cipher: CipherAlg::Aes256Cbc,
        auth: AuthAlg::Sha256,
    };
    let remote_addr = if direction == KeyDirection::Inverse {
        SERVER
    } else {
        CLIENT
    };
    let wall = WallClock::new(Instant::ZERO, UnixTime::from_secs(1_800_000_000));
    P2pConfig::new(
        remote_addr,
        local,
        remote,
        P2pMode::StaticKey(Box::new(mode)),
        wall,
    )
}

/// The client, the peer and the private network's stack, and the bytes in flight.
pub(crate) struct ClientPath {
    pub(crate) client: Client<P2pSession>,
    peer: P2pSession,
    peer_stack: Stack,
    peer_socket: SocketHandle,
    pub(crate) now: Instant,
    /// Outer datagrams on their way to the peer, and to the client.
    to_peer: VecDeque<Vec<u8>>,
    pub(crate) to_client: VecDeque<Vec<u8>>,
    /// Heap allocations made inside the client's own calls.
    pub(crate) client_allocations: u64,
    /// Stream bytes the peer's application received (upload) and the local connection was
    /// given (download).
    pub(crate) uploaded: u64,
    pub(crate) downloaded: u64,
    /// Datagrams the client sent.
    pub(crate) transmitted: u64,
    /// The client asked the local connection to stop reading for now.
    pub(crate) upload_paused: bool,
    /// Datagram buffers to reuse, so that the harness allocates nothing in steady state either
    /// and a benchmark times the client, not the harness.
    spare: Vec<Vec<u8>>,
    buf: Vec<u8>,
    peer_buf: Vec<u8>,
    payload: Vec<u8>,
}

impl ClientPath {
    /// Everything connected: the tunnel up, and the local connection's TCP connection through
    /// it established.
    pub(crate) fn new() -> Self {
        let seed = Seed::from_byte(3);
        let now = Instant::ZERO;
        let tunnel = P2pSession::new(
            p2p_config(CLIENT_IP, PEER_IP, KeyDirection::Inverse),
            &seed.child("client tunnel"),
            now,
        )
        .expect("valid p2p configuration");
        let mut peer = P2pSession::new(
            p2p_config(PEER_IP, CLIENT_IP, KeyDirection::Normal),
            &seed.child("peer tunnel"),
            now,
        )
        .expect("valid p2p configuration");
        peer.transport_connected(now, CLIENT);
        let mut peer_stack = Stack::new(
            &TunnelConfig {
                ipv4: IpNet::new(IpAddr::V4(PEER_IP), 24),
                mtu: 1500,
                ..TunnelConfig::default()
            },
            TcpConfig::default(),
            &seed.child("peer stack"),
        );
        let peer_socket = peer_stack.listen(PORT).expect("listen");
        let client = Client::new(
            tunnel,
            ClientConfig {
                listeners: vec![FrontEnd::Forward {
                    host: Host::Ip(IpAddr::V4(PEER_IP)),
                    port: PORT,
                }],
                proxy: ProxyConfig::default(),
                tcp: TcpConfig::default(),
                dns_servers: Vec::new(),
                tunnel_wait: Duration::from_secs(30),
                limits: erebus_client::Limits::default(),
            },
            &seed.child("client"),
            now,
        );
        let mut path = Self {
            client,
            peer,
            peer_stack,
            peer_socket,
            now,
            to_peer: VecDeque::new(),
            to_client: VecDeque::new(),
            client_allocations: 0,
            uploaded: 0,
            downloaded: 0,
            transmitted: 0,
            upload_paused: false,
            spare: Vec::new(),
            buf: vec![0; 70_000],
            peer_buf: vec![0; 2048],
            payload: vec![0x5a; 64 * 1024],
        };
        path.drain_client();
        path.client_input(Input::Transport {
            now,
            event: TransportEvent::Connected { remote: SERVER },
        });
        path.client_input(Input::Local {
            now,
            conn: CONN,
            event: LocalEvent::Accepted {
                listener: ListenerId(0),
            },
        });
        for _ in 0..50 {
            path.round(false, false);
        }
        let socket = path
            .peer_stack
            .socket_mut(path.peer_socket)
            .expect("peer socket");
        assert!(socket.may_send(), "the connection through the tunnel is up");
        path
    }

    /// Applies one input to the client, counting its allocations.
    pub(crate) fn client_input(&mut self, input: Input<'_>) {
        let before = thread_allocations();
        let result = self.client.handle_input(input);
        self.client_allocations += thread_allocations() - before;
        result.expect("the client accepts the input");
    }

    /// Drains the client's outputs, counting the allocations of its own calls.
    pub(crate) fn drain_client(&mut self) {
        loop {
            let before = thread_allocations();
            let output = self.client.poll_output(&mut self.buf);
            self.client_allocations += thread_allocations() - before;
            match output {
                Output::Transmit { to, bytes } => {
                    assert_eq!(to, SERVER);
                    self.transmitted += 1;
                    let datagram = Self::datagram(&mut self.spare, bytes);
                    self.to_peer.push_back(datagram);
                }
                Output::Local { conn, action } => {
                    assert_eq!(conn, CONN);
                    match action {
                        LocalAction::Write(bytes) => self.downloaded += bytes.len() as u64,
                        LocalAction::PauseReading => self.upload_paused = true,
                        LocalAction::ResumeReading => self.upload_paused = false,
                        LocalAction::Shutdown | LocalAction::Close => {
                            panic!("the local connection was closed")
                        }
                    }
                }
                Output::Event(Event::Down(failure)) => panic!("the client went down: {failure}"),
                Output::Event(_) => {}
                Output::BufferTooSmall { needed } => panic!("a {needed}-byte output"),
                Output::Timeout(deadline) => {
                    if deadline.is_some_and(|at| at <= self.now) {
                        self.client_input(Input::Timeout { now: self.now });
                        continue;
                    }
                    return;
                }
            }
        }
    }

    /// One local read of [`CHUNK`] bytes into the client.
    pub(crate) fn upload_chunk(&mut self) {
        let payload = std::mem::take(&mut self.payload);
        self.client_input(Input::Local {
            now: self.now,
            conn: CONN,
            event: LocalEvent::Data(&payload[..CHUNK]),
        });
        self.payload = payload;
    }

    /// One outer datagram from the peer into the client.
    pub(crate) fn deliver_to_client(&mut self, datagram: &[u8]) {
        self.client_input(Input::Transport {
            now: self.now,
            event: TransportEvent::Data {
                from: SERVER,
                bytes: datagram,
            },
        });
    }

    /// The peer's side of a round: everything the client sent goes through the peer's tunnel
    /// into its stack, its application reads the upload and writes the download (when
    /// `download`), and what its stack sends goes back through its tunnel towards the client.
    pub(crate) fn run_peer(&mut self, download: bool) {
        let now = self.now;
        while let Some(mut datagram) = self.to_peer.pop_front() {
            match self.peer.decapsulate(now, &mut datagram) {
                Ok(Decapsulated::Inner(inner)) => self
                    .peer_stack
                    .ingress(now, &datagram[inner])
                    .expect("valid inner packet"),
                Ok(Decapsulated::Consumed) => {}
                Err(reason) => panic!("the peer dropped a datagram: {reason:?}"),
            }
            self.spare.push(datagram);
        }
        if self.peer.poll_timeout().is_some_and(|(at, _)| at <= now) {
            self.peer.handle_timeout(now);
        }
        let socket = self
            .peer_stack
            .socket_mut(self.peer_socket)
            .expect("peer socket");
        loop {
            match socket.recv(&mut self.buf) {
                Ok(0) | Err(RecvError::InvalidState | RecvError::Finished) => break,
                Ok(n) => self.uploaded += n as u64,
            }
        }
        if download && socket.may_send() {
            let _ = socket.send(&self.payload).expect("open for sending");
        }
        while let Some(Ok(len)) = self.peer.poll_transmit(now, &mut self.peer_buf) {
            let datagram = Self::datagram(&mut self.spare, &self.peer_buf[..len]);
            self.to_client.push_back(datagram);
        }
        let overhead = self.peer.overhead();
        loop {
            let end = self.peer_buf.len() - overhead.tailroom;
            let Some(len) = self
                .peer_stack
                .poll_egress(now, &mut self.peer_buf[overhead.headroom..end])
            else {
                break;
            };
            let inner = overhead.headroom..overhead.headroom + len;
            let outer = self
                .peer
                .encapsulate(now, &mut self.peer_buf, inner)
                .expect("the peer's tunnel is up");
            let datagram = Self::datagram(&mut self.spare, &self.peer_buf[outer]);
            self.to_client.push_back(datagram);
        }
        while self.peer.poll_event().is_some() {}
    }

    /// One round of everything: the client reads a chunk (when `upload` and not paused), the
    /// peer runs, and what it sent reaches the client.
    pub(crate) fn round(&mut self, upload: bool, download: bool) {
        self.tick();
        if upload && !self.upload_paused {
            self.upload_chunk();
        }
        self.drain_client();
        self.run_peer(download);
        self.deliver_all_to_client();
    }

    /// Delivers every datagram on its way to the client, draining the client after each.
    pub(crate) fn deliver_all_to_client(&mut self) {
        while let Some(datagram) = self.to_client.pop_front() {
            self.deliver_to_client(&datagram);
            self.drain_client();
            self.spare.push(datagram);
        }
    }

    /// Returns a delivered datagram's buffer for reuse.
    pub(crate) fn recycle(&mut self, datagram: Vec<u8>) {
        self.spare.push(datagram);
    }

    /// A buffer holding a copy of `bytes`, reused when one is spare.
    fn datagram(spare: &mut Vec<Vec<u8>>, bytes: &[u8]) -> Vec<u8> {
        let mut datagram = spare.pop().unwrap_or_default();
        datagram.clear();
        datagram.extend_from_slice(bytes);
        datagram
    }

    /// Advances the clock by one round's tick.
    pub(crate) fn tick(&mut self) {
        self.now += TICK;
    }
}

/// Bytes each way before counting: the handshake and slow start have sized every queue.
const WARM_UP: u64 = 2 << 20;
/// Bytes each way while counting.
const COUNTED: u64 = 8 << 20;
/// Bound on rounds, so that a stalled transfer fails instead of hanging.
const MAX_ROUNDS: u64 = 1_000_000;

/// Moves [`WARM_UP`] bytes each way, then [`COUNTED`] more, and panics unless the client made
/// no heap allocation while moving the latter (with the counting allocator installed).
pub(crate) fn steady_state_allocates_nothing() {
    assert!(erebus_alloc_counter::is_installed());
    let mut path = ClientPath::new();
    let mut rounds = 0;
    let mut run_until = |path: &mut ClientPath, bytes: u64| {
        while path.uploaded < bytes || path.downloaded < bytes {
            rounds += 1;
            assert!(rounds < MAX_ROUNDS, "the transfer stalled");
            path.round(path.uploaded < bytes, path.downloaded < bytes);
        }
    };
    run_until(&mut path, WARM_UP);

    let (allocations, uploaded, downloaded, transmitted) = (
        path.client_allocations,
        path.uploaded,
        path.downloaded,
        path.transmitted,
    );
    run_until(&mut path, WARM_UP + COUNTED);
    let allocations = path.client_allocations - allocations;
    let uploaded = path.uploaded - uploaded;
    let downloaded = path.downloaded - downloaded;
    let transmitted = path.transmitted - transmitted;
    assert!(
        transmitted > 5000 && uploaded > COUNTED / 2 && downloaded > COUNTED / 2,
        "the window saw the bulk of the transfer: {transmitted} datagrams sent, \
         {uploaded} bytes up, {downloaded} bytes down"
    );
    assert_eq!(
        allocations, 0,
        "the client allocated while sending {transmitted} datagrams ({uploaded} bytes up, \
         {downloaded} bytes down)"
    );
}
