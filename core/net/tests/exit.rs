//! Exit mode: a client stack (normal mode, 10.8.0.2) and an exit stack (exit mode, 10.8.0.1)
//! joined back to back by a deterministic link with a fixed delay. The client reaches
//! arbitrary destinations through the exit, which offers each flow to its caller.

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use erebus_net::{
    ConnectionError, Events, FlowRequest, IngressError, MAX_PENDING_FLOWS, RecvError, Refusal,
    SocketHandle, Stack, State, TcpConfig, UnreachableCode,
};
use erebus_sansio::tunnel::IpNet;
use erebus_sansio::{Instant, Seed, TunnelConfig};
use erebus_wire::IpProtocol;
use erebus_wire::icmp::{IcmpPacket, IcmpRepr};
use erebus_wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use erebus_wire::tcp::{SeqNumber, TcpControl, TcpPacket, TcpRepr};
use erebus_wire::udp::{UdpPacket, UdpRepr};
use proptest::prelude::*;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
const EXIT: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);
const MTU: usize = 1500;
const MIB: usize = 1 << 20;

fn client_tunnel() -> TunnelConfig {
    TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(CLIENT), 24),
        // redirect-gateway: everything goes through the tunnel.
        routes: vec![IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("default route")],
        mtu: MTU as u16,
        ..TunnelConfig::default()
    }
}

fn exit_tunnel() -> TunnelConfig {
    TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(EXIT), 24),
        mtu: MTU as u16,
        ..TunnelConfig::default()
    }
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

fn exit_stack(seed: u8) -> Stack {
    let mut exit = Stack::new(
        &exit_tunnel(),
        TcpConfig::default(),
        &Seed::from_byte(seed).child("exit"),
    );
    exit.set_exit_mode(true);
    exit
}

fn client_stack(seed: u8) -> Stack {
    Stack::new(
        &client_tunnel(),
        TcpConfig::default(),
        &Seed::from_byte(seed).child("client"),
    )
}

/// Which stack a packet goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum To {
    Client,
    Exit,
}

/// Both stacks and the link between them: every packet arrives `delay` after it left.
struct Net {
    client: Stack,
    exit: Stack,
    now: Instant,
    delay: Duration,
    in_flight: BTreeMap<(Instant, u64), (To, Vec<u8>)>,
    counter: u64,
    /// Every packet that went from the exit to the client, when recording.
    record: Option<Vec<Vec<u8>>>,
    /// Ingress errors, by side.
    drops: Vec<(To, IngressError)>,
}

impl Net {
    fn new(seed: u8) -> Self {
        Self {
            client: client_stack(seed),
            exit: exit_stack(seed),
            now: Instant::ZERO,
            delay: Duration::from_millis(5),
            in_flight: BTreeMap::new(),
            counter: 0,
            record: None,
            drops: Vec::new(),
        }
    }

    /// Sends what both stacks have to send.
    fn egress(&mut self) {
        let mut buf = [0u8; MTU];
        while let Some(len) = self.client.poll_egress(self.now, &mut buf) {
            self.counter += 1;
            self.in_flight.insert(
                (self.now + self.delay, self.counter),
                (To::Exit, buf[..len].to_vec()),
            );
        }
        while let Some(len) = self.exit.poll_egress(self.now, &mut buf) {
            self.counter += 1;
            if let Some(record) = &mut self.record {
                record.push(buf[..len].to_vec());
            }
            self.in_flight.insert(
                (self.now + self.delay, self.counter),
                (To::Client, buf[..len].to_vec()),
            );
        }
    }

    /// Delivers what is due now.
    fn deliver(&mut self) {
        while let Some((&key, _)) = self.in_flight.iter().next() {
            if key.0 > self.now {
                break;
            }
            let (to, packet) = self.in_flight.remove(&key).expect("due packet");
            let stack = match to {
                To::Client => &mut self.client,
                To::Exit => &mut self.exit,
            };
            if let Err(error) = stack.ingress(self.now, &packet) {
                self.drops.push((to, error));
            }
        }
    }

    /// One round: send, move time to the next event (not past `limit`), deliver. Returns
    /// false when nothing is left to happen before `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        self.egress();
        let next = [
            self.client.poll_timeout(),
            self.exit.poll_timeout(),
            self.in_flight.keys().next().map(|&(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return false;
        };
        if next > limit {
            self.now = limit;
            return false;
        }
        self.now = self.now.max(next);
        self.deliver();
        true
    }

    /// Runs until nothing happens before `now + span`, or `done` holds.
    fn run_for(&mut self, span: Duration, mut done: impl FnMut(&mut Self) -> bool) {
        let limit = self.now + span;
        let mut steps = 0u32;
        while !done(self) && self.step(limit) {
            steps += 1;
            assert!(steps < 1_000_000, "no progress");
        }
    }

    /// Runs until the exit offers `n` flows (or panics after `span`).
    fn flow_requests(&mut self, n: usize, span: Duration) -> Vec<FlowRequest> {
        let mut requests = Vec::new();
        self.run_for(span, |net| {
            while let Some(request) = net.exit.poll_flow_request() {
                requests.push(request);
            }
            requests.len() >= n
        });
        assert_eq!(requests.len(), n, "flow requests offered");
        requests
    }
}

/// One end of a transfer: sends `to_send`, then closes; checks what arrives.
struct End {
    handle: SocketHandle,
    to_send: Vec<u8>,
    sent: usize,
    expected: Vec<u8>,
    received: usize,
    got_fin: bool,
    closed: bool,
}

impl End {
    fn new(handle: SocketHandle, to_send: Vec<u8>, expected: Vec<u8>) -> Self {
        Self {
            handle,
            to_send,
            sent: 0,
            expected,
            received: 0,
            got_fin: false,
            closed: false,
        }
    }

    fn app(&mut self, stack: &mut Stack, buf: &mut [u8]) {
        let socket = stack.socket_mut(self.handle).expect("socket exists");
        if let Some(error) = socket.error() {
            panic!("connection failed: {error} ({socket:?})");
        }
        if socket.state() == State::SynSent || socket.state() == State::SynReceived {
            return;
        }
        if socket.may_send() && self.sent < self.to_send.len() {
            self.sent += socket.send(&self.to_send[self.sent..]).expect("open");
        }
        if self.sent == self.to_send.len() && !self.closed && socket.may_send() {
            socket.close();
            self.closed = true;
        }
        loop {
            match socket.recv(buf) {
                Ok(0) => break,
                Ok(n) => {
                    assert!(
                        buf[..n] == self.expected[self.received..self.received + n],
                        "corrupted bytes at offset {}",
                        self.received
                    );
                    self.received += n;
                }
                Err(RecvError::Finished) => {
                    self.got_fin = true;
                    break;
                }
                Err(RecvError::InvalidState) => break,
            }
        }
    }

    fn done(&self, stack: &Stack) -> bool {
        self.got_fin
            && self.received == self.expected.len()
            && stack
                .socket(self.handle)
                .is_some_and(|s| matches!(s.state(), State::TimeWait | State::Closed))
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    Seed::from_byte(seed).child("data").rng().fill(&mut bytes);
    bytes
}

fn parse_tcp(packet: &[u8]) -> Option<(Ipv4Repr, TcpRepr<'_>)> {
    let ip_packet = Ipv4Packet::new_checked(packet).ok()?;
    let ip = Ipv4Repr::parse(&ip_packet).ok()?;
    if ip.protocol != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip_packet.payload()).ok()?;
    let repr = TcpRepr::parse(&tcp, IpAddr::V4(ip.src_addr), IpAddr::V4(ip.dst_addr)).ok()?;
    Some((ip, repr))
}

/// An IPv4 packet carrying `tcp` from `src` to `dst`.
fn tcp_packet(src: SocketAddrV4, dst: SocketAddrV4, tcp: &TcpRepr<'_>) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        protocol: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        ttl: 64,
    };
    let mut packet = vec![0u8; ip.buffer_len()];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]));
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut packet[ipv4::HEADER_LEN..]),
        IpAddr::V4(*src.ip()),
        IpAddr::V4(*dst.ip()),
    );
    packet
}

fn syn(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> Vec<u8> {
    tcp_packet(
        src,
        dst,
        &TcpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            control: TcpControl::Syn,
            seq_number: SeqNumber(seq),
            window_len: 64_000,
            max_seg_size: Some(1460),
            ..TcpRepr::default()
        },
    )
}

/// An IPv4 packet carrying `icmp` from `src` to `dst`.
fn icmp_packet(src: Ipv4Addr, dst: Ipv4Addr, icmp: &IcmpRepr<'_>) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        ttl: 64,
    };
    let mut packet = vec![0u8; ip.buffer_len()];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]));
    icmp.emit(&mut IcmpPacket::new_unchecked(
        &mut packet[ipv4::HEADER_LEN..],
    ));
    packet
}

/// An IPv4 packet carrying a UDP datagram.
fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        protocol: IpProtocol::Udp,
        payload_len: udp.buffer_len(payload.len()),
        ttl: 64,
    };
    let mut packet = vec![0u8; ip.buffer_len()];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]));
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut packet[ipv4::HEADER_LEN..]),
        IpAddr::V4(*src.ip()),
        IpAddr::V4(*dst.ip()),
        payload.len(),
        |out| out.copy_from_slice(payload),
    );
    packet
}

#[test]
fn flows_to_any_destination_are_offered_accepted_and_carry_a_mib_each_way() {
    let mut net = Net::new(1);
    net.record = Some(Vec::new());
    let web = sa(Ipv4Addr::new(192, 0, 2, 7), 80);
    let local = sa(Ipv4Addr::LOCALHOST, 8080);
    let c1 = net.client.connect(net.now, web).unwrap();
    let c2 = net.client.connect(net.now, local).unwrap();
    let requests = net.flow_requests(2, Duration::from_millis(100));
    let locals: Vec<SocketAddr> = requests.iter().map(|r| r.local).collect();
    assert_eq!(locals, [web, local]);
    let c1_addr = net.client.socket(c1).unwrap().local_endpoint().unwrap();
    let c2_addr = net.client.socket(c2).unwrap().local_endpoint().unwrap();
    assert_eq!(requests[0].remote, c1_addr);
    assert_eq!(requests[1].remote, c2_addr);
    assert_eq!(net.exit.stats().flow_requests, 2);

    let mut requests = requests.into_iter();
    let e1 = net
        .exit
        .accept_flow(net.now, requests.next().unwrap())
        .unwrap();
    let e2 = net
        .exit
        .accept_flow(net.now, requests.next().unwrap())
        .unwrap();
    assert_eq!(net.exit.pending_flows(), 0);
    net.run_for(Duration::from_millis(100), |net| {
        [c1, c2]
            .iter()
            .all(|&h| net.client.socket(h).unwrap().state() == State::Established)
            && [e1, e2]
                .iter()
                .all(|&h| net.exit.socket(h).unwrap().state() == State::Established)
    });
    for handle in [c1, c2] {
        assert_eq!(
            net.client.socket(handle).unwrap().state(),
            State::Established
        );
    }

    // The SYN-ACKs come from the destinations and carry the options the client offered.
    let record = net.record.take().unwrap();
    let synacks: Vec<_> = record
        .iter()
        .filter_map(|p| parse_tcp(p))
        .filter(|(_, t)| t.control == TcpControl::Syn)
        .map(|(ip, t)| {
            (
                SocketAddr::V4(SocketAddrV4::new(ip.src_addr, t.src_port)),
                t,
            )
        })
        .collect();
    assert_eq!(synacks.len(), 2);
    assert_eq!(synacks[0].0, web);
    assert_eq!(synacks[1].0, local);
    for (_, t) in &synacks {
        assert!(t.ack_number.is_some());
        assert_eq!(t.max_seg_size, Some(1460));
        assert!(t.window_scale.is_some() && t.sack_permitted && t.timestamp.is_some());
    }

    // The exit's sockets report the connection like any accepted one.
    let mut connected = Vec::new();
    while let Some((handle, events)) = net.exit.poll_event() {
        if events.contains(Events::CONNECTED) {
            connected.push(handle);
        }
    }
    assert_eq!(connected, [e1, e2]);
    assert_eq!(net.exit.socket(e1).unwrap().local_endpoint(), Some(web));
    assert_eq!(net.exit.socket(e2).unwrap().local_endpoint(), Some(local));

    // A new tunnel configuration (after a reconnect) leaves exit sockets alone.
    net.exit.set_tunnel_config(&exit_tunnel());

    let up = pattern(1, MIB);
    let down = pattern(2, MIB);
    let mut ends = [
        (To::Client, End::new(c1, up.clone(), down.clone())),
        (To::Exit, End::new(e1, down.clone(), up.clone())),
        (To::Client, End::new(c2, down.clone(), up.clone())),
        (To::Exit, End::new(e2, up, down)),
    ];
    let mut buf = vec![0u8; 256 * 1024];
    net.run_for(Duration::from_secs(60), |net| {
        for (side, end) in &mut ends {
            let stack = match side {
                To::Client => &mut net.client,
                To::Exit => &mut net.exit,
            };
            end.app(stack, &mut buf);
        }
        ends.iter().all(|(side, end)| match side {
            To::Client => end.done(&net.client),
            To::Exit => end.done(&net.exit),
        })
    });
    for (side, end) in &ends {
        let stack = match side {
            To::Client => &net.client,
            To::Exit => &net.exit,
        };
        assert!(end.done(stack), "{side:?} {:?}", stack.socket(end.handle));
        assert_eq!(stack.socket(end.handle).unwrap().error(), None);
    }
    // Removing the exit's sockets goes through the usual close paths: nothing is reset.
    net.exit.remove(e1);
    net.exit.remove(e2);
    net.run_for(Duration::from_secs(1), |_| false);
    assert_eq!(net.client.stats().resets_sent, 0);
    assert_eq!(net.exit.stats().resets_sent, 0);
    assert!(net.drops.is_empty(), "{:?}", net.drops);
}

#[test]
fn a_retransmitted_syn_is_not_offered_twice() {
    let mut net = Net::new(2);
    let dst = sa(Ipv4Addr::new(198, 51, 100, 1), 443);
    let handle = net.client.connect(net.now, dst).unwrap();
    let request = net.flow_requests(1, Duration::from_millis(100)).remove(0);
    // The caller takes its time (a slow upstream connect): the client retransmits its SYN
    // after one second, then after three.
    net.run_for(Duration::from_millis(3500), |net| {
        assert_eq!(net.exit.poll_flow_request(), None);
        false
    });
    let retransmitted = net
        .client
        .socket(handle)
        .unwrap()
        .stats()
        .retransmitted_segments;
    assert_eq!(retransmitted, 2);
    assert_eq!(net.exit.stats().flow_syns_absorbed, 2);
    assert_eq!(net.exit.stats().flow_requests, 1);
    assert_eq!(net.exit.pending_flows(), 1);
    net.exit.accept_flow(net.now, request.clone()).unwrap();
    net.run_for(Duration::from_millis(100), |net| {
        net.client.socket(handle).unwrap().state() == State::Established
    });
    assert_eq!(
        net.client.socket(handle).unwrap().state(),
        State::Established
    );
    // Accepting it again fails: the socket exists.
    assert!(net.exit.accept_flow(net.now, request).is_err());
}

#[test]
fn a_flow_refused_with_a_reset_is_refused_at_the_client() {
    let mut net = Net::new(3);
    let handle = net
        .client
        .connect(net.now, sa(Ipv4Addr::new(192, 0, 2, 9), 25))
        .unwrap();
    let request = net.flow_requests(1, Duration::from_millis(100)).remove(0);
    net.exit.refuse_flow(request, Refusal::Reset);
    assert_eq!(net.exit.pending_flows(), 0);
    let start = net.now;
    net.run_for(Duration::from_secs(5), |net| {
        net.client.socket(handle).unwrap().error().is_some()
    });
    let socket = net.client.socket(handle).unwrap();
    assert_eq!(socket.error(), Some(ConnectionError::Refused));
    assert!(net.now - start < Duration::from_millis(20));
    assert_eq!(socket.stats().retransmitted_segments, 0);
}

#[test]
fn a_flow_refused_as_unreachable_fails_the_connect_at_once() {
    for (n, code) in [
        UnreachableCode::Net,
        UnreachableCode::Host,
        UnreachableCode::Port,
        UnreachableCode::AdminProhibited,
    ]
    .into_iter()
    .enumerate()
    {
        let mut net = Net::new(4 + n as u8);
        net.record = Some(Vec::new());
        let dst = Ipv4Addr::new(203, 0, 113, 5);
        let handle = net.client.connect(net.now, sa(dst, 8443)).unwrap();
        let request = net.flow_requests(1, Duration::from_millis(100)).remove(0);
        net.exit
            .refuse_flow(request.clone(), Refusal::Unreachable(code));
        let start = net.now;
        net.run_for(Duration::from_secs(5), |net| {
            net.client.socket(handle).unwrap().error().is_some()
        });
        let socket = net.client.socket(handle).unwrap();
        assert_eq!(
            socket.error(),
            Some(ConnectionError::Unreachable),
            "{code:?}"
        );
        assert!(net.now - start < Duration::from_millis(20));
        assert_eq!(socket.stats().retransmitted_segments, 0);
        assert_eq!(net.exit.stats().icmp_unreachable_sent, 1);
        assert!(net.drops.is_empty(), "{:?}", net.drops);

        // What Linux routers and hosts do: port unreachable from the destination, the
        // others from the router; the quote names the SYN.
        let record = net.record.take().unwrap();
        assert_eq!(record.len(), 1);
        let ip_packet = Ipv4Packet::new_checked(&record[0][..]).unwrap();
        let ip = Ipv4Repr::parse(&ip_packet).unwrap();
        let expected_src = if code == UnreachableCode::Port {
            dst
        } else {
            EXIT
        };
        assert_eq!((ip.src_addr, ip.dst_addr), (expected_src, CLIENT));
        let icmp = IcmpRepr::parse(&IcmpPacket::new_checked(ip_packet.payload()).unwrap()).unwrap();
        let IcmpRepr::DstUnreachable { code: got, .. } = icmp else {
            panic!("{icmp:?}");
        };
        assert_eq!(got, code.code());
        let original = icmp.original().unwrap();
        assert_eq!(
            (original.src_addr, original.dst_addr, original.protocol),
            (CLIENT, dst, IpProtocol::Tcp)
        );
        let client_port = request.remote.port();
        assert_eq!(original.ports(), Some((client_port, 8443)));
        assert_eq!(original.transport.len(), 8);
    }
}

#[test]
fn pending_flows_are_bounded_and_extra_syns_are_reset() {
    let mut net = Net::new(9);
    let extra = 10;
    let total = MAX_PENDING_FLOWS + extra;
    let handles: Vec<SocketHandle> = (0..total)
        .map(|i| {
            let dst = Ipv4Addr::new(192, 0, 2, (i % 200) as u8 + 1);
            net.client
                .connect(net.now, sa(dst, 1000 + i as u16))
                .unwrap()
        })
        .collect();
    net.run_for(Duration::from_millis(50), |_| false);
    assert_eq!(net.exit.pending_flows(), MAX_PENDING_FLOWS);
    assert_eq!(net.exit.stats().flows_overflowed, extra as u64);
    let refused = handles
        .iter()
        .filter(|&&h| net.client.socket(h).unwrap().error() == Some(ConnectionError::Refused))
        .count();
    assert_eq!(refused, extra);
    let mut offered = 0;
    while net.exit.poll_flow_request().is_some() {
        offered += 1;
    }
    assert_eq!(offered, MAX_PENDING_FLOWS);
    // Offered but unanswered requests still count: one more SYN is reset.
    let late = net
        .client
        .connect(net.now, sa(Ipv4Addr::new(192, 0, 2, 250), 9))
        .unwrap();
    net.run_for(Duration::from_millis(50), |_| false);
    assert_eq!(
        net.client.socket(late).unwrap().error(),
        Some(ConnectionError::Refused)
    );
    assert_eq!(net.exit.pending_flows(), MAX_PENDING_FLOWS);
    assert_eq!(net.exit.poll_flow_request(), None);
}

#[test]
fn udp_to_any_destination_is_delivered_answered_and_refused() {
    let mut net = Net::new(10);
    let dns = sa(Ipv4Addr::new(192, 0, 2, 53), 53);
    net.client.udp_bind(5353).unwrap();
    net.client.udp_send(5353, dns, b"query").unwrap();
    net.run_for(Duration::from_millis(50), |_| false);
    let datagram = net.exit.udp_recv().expect("delivered without a bound port");
    assert_eq!(datagram.local, dns);
    assert_eq!(datagram.local_port, 53);
    assert_eq!(datagram.remote, sa(CLIENT, 5353));
    assert_eq!(datagram.payload, b"query");
    net.exit
        .udp_send_from(datagram.local, datagram.remote, b"answer")
        .unwrap();
    net.run_for(Duration::from_millis(50), |_| false);
    let answer = net.client.udp_recv().unwrap();
    assert_eq!((answer.remote, answer.local_port), (dns, 5353));
    assert_eq!(answer.local, sa(CLIENT, 5353));
    assert_eq!(answer.payload, b"answer");

    // A refusal: an ICMP port unreachable from the destination, quoting the datagram.
    net.record = Some(Vec::new());
    net.exit.udp_refuse(&datagram, UnreachableCode::Port);
    net.run_for(Duration::from_millis(50), |_| false);
    let record = net.record.take().unwrap();
    assert_eq!(record.len(), 1);
    let ip_packet = Ipv4Packet::new_checked(&record[0][..]).unwrap();
    let ip = Ipv4Repr::parse(&ip_packet).unwrap();
    assert_eq!((ip.src_addr, ip.dst_addr), (ip_of(dns), CLIENT));
    let icmp = IcmpRepr::parse(&IcmpPacket::new_checked(ip_packet.payload()).unwrap()).unwrap();
    let original = icmp.original().unwrap();
    assert_eq!(
        (original.src_addr, original.dst_addr, original.protocol),
        (CLIENT, ip_of(dns), IpProtocol::Udp)
    );
    assert_eq!(original.ports(), Some((5353, 53)));
    // The client's stack parses it (it has no use for UDP errors: not malformed, merely
    // not consumed).
    assert_eq!(net.drops, [(To::Client, IngressError::Unsupported)]);

    // Sending from a non-unicast address is refused.
    assert!(
        net.exit
            .udp_send_from(sa(Ipv4Addr::BROADCAST, 53), sa(CLIENT, 5353), b"x")
            .is_err()
    );
}

fn ip_of(addr: SocketAddr) -> Ipv4Addr {
    match addr {
        SocketAddr::V4(v4) => *v4.ip(),
        SocketAddr::V6(_) => unreachable!(),
    }
}

#[test]
fn without_exit_mode_foreign_flows_are_dropped_as_before() {
    let mut exit = exit_stack(11);
    exit.set_exit_mode(false);
    assert!(!exit.exit_mode());
    let client = SocketAddrV4::new(CLIENT, 40_000);
    let foreign = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 80);
    assert_eq!(
        exit.ingress(Instant::ZERO, &syn(client, foreign, 1)),
        Err(IngressError::NotForUs)
    );
    assert_eq!(
        exit.ingress(Instant::ZERO, &udp_packet(client, foreign, b"x")),
        Err(IngressError::NotForUs)
    );
    let mut buf = [0u8; MTU];
    assert_eq!(exit.poll_egress(Instant::ZERO, &mut buf), None);
    assert_eq!(exit.poll_flow_request(), None);
    // A SYN to our own closed port is reset, and UDP to an unbound port dropped, as ever.
    let ours = SocketAddrV4::new(EXIT, 80);
    exit.ingress(Instant::ZERO, &syn(client, ours, 1)).unwrap();
    let len = exit.poll_egress(Instant::ZERO, &mut buf).unwrap();
    assert_eq!(parse_tcp(&buf[..len]).unwrap().1.control, TcpControl::Rst);
    assert_eq!(
        exit.ingress(Instant::ZERO, &udp_packet(client, ours, b"x")),
        Err(IngressError::UdpNotDelivered)
    );
    assert_eq!(exit.poll_flow_request(), None);
    assert_eq!(exit.udp_recv(), None);
}

#[test]
fn in_exit_mode_our_own_sockets_keep_precedence() {
    let mut exit = exit_stack(12);
    let listener = exit.listen(80).unwrap();
    exit.udp_bind(53).unwrap();
    let client = SocketAddrV4::new(CLIENT, 40_000);
    // Port 80 of a foreign host is a flow, port 80 of ours goes to the listener.
    exit.ingress(
        Instant::ZERO,
        &syn(
            client,
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80),
            7,
        ),
    )
    .unwrap();
    exit.ingress(Instant::ZERO, &syn(client, SocketAddrV4::new(EXIT, 80), 9))
        .unwrap();
    assert_eq!(exit.socket(listener).unwrap().state(), State::SynReceived);
    let request = exit.poll_flow_request().unwrap();
    assert_eq!(request.local, sa(Ipv4Addr::new(192, 0, 2, 1), 80));
    assert_eq!(exit.poll_flow_request(), None);
    // A closed port of our own address is offered too (the caller may refuse it).
    exit.ingress(Instant::ZERO, &syn(client, SocketAddrV4::new(EXIT, 22), 11))
        .unwrap();
    assert_eq!(exit.poll_flow_request().unwrap().local, sa(EXIT, 22));
    exit.ingress(
        Instant::ZERO,
        &udp_packet(client, SocketAddrV4::new(EXIT, 53), b"q"),
    )
    .unwrap();
    assert_eq!(exit.udp_recv().unwrap().local, sa(EXIT, 53));
}

#[test]
fn echo_requests_to_other_hosts_get_no_reply_in_exit_mode() {
    let mut exit = exit_stack(13);
    let request = IcmpRepr::EchoRequest {
        ident: 7,
        seq_no: 1,
        data: b"are you there",
    };
    let foreign = Ipv4Addr::new(192, 0, 2, 7);
    assert_eq!(
        exit.ingress(Instant::ZERO, &icmp_packet(CLIENT, foreign, &request)),
        Err(IngressError::NotForUs)
    );
    let mut buf = [0u8; MTU];
    assert_eq!(exit.poll_egress(Instant::ZERO, &mut buf), None);
    assert_eq!(exit.stats().exit_echo_dropped, 1);
    assert_eq!(exit.stats().echo_rx, 0);
    // We still answer for ourselves.
    exit.ingress(Instant::ZERO, &icmp_packet(CLIENT, EXIT, &request))
        .unwrap();
    let len = exit.poll_egress(Instant::ZERO, &mut buf).unwrap();
    let ip = Ipv4Repr::parse(&Ipv4Packet::new_checked(&buf[..len]).unwrap()).unwrap();
    assert_eq!((ip.src_addr, ip.dst_addr), (EXIT, CLIENT));
}

#[test]
fn broadcast_multicast_and_unspecified_addresses_are_never_flows() {
    let mut exit = exit_stack(14);
    let client = SocketAddrV4::new(CLIENT, 40_000);
    for dst in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 251),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(10, 8, 0, 255),
    ] {
        let dst = SocketAddrV4::new(dst, 80);
        assert_eq!(
            exit.ingress(Instant::ZERO, &syn(client, dst, 1)),
            Err(IngressError::NotForUs),
            "{dst}"
        );
        assert_eq!(
            exit.ingress(Instant::ZERO, &udp_packet(client, dst, b"x")),
            Err(IngressError::NotForUs),
            "{dst}"
        );
    }
    let foreign = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 80);
    for src in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(239, 1, 2, 3),
        Ipv4Addr::UNSPECIFIED,
    ] {
        let src = SocketAddrV4::new(src, 5000);
        assert_eq!(
            exit.ingress(Instant::ZERO, &syn(src, foreign, 1)),
            Err(IngressError::Unsupported),
            "{src}"
        );
    }
    let mut buf = [0u8; MTU];
    assert_eq!(exit.poll_egress(Instant::ZERO, &mut buf), None);
    assert_eq!(exit.poll_flow_request(), None);
    assert_eq!(exit.udp_recv(), None);
    assert_eq!(exit.pending_flows(), 0);
}

#[test]
fn a_client_reset_withdraws_its_request_and_a_stale_one_is_offered_again() {
    let mut exit = exit_stack(15);
    let client = SocketAddrV4::new(CLIENT, 40_000);
    let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 80);
    exit.ingress(Instant::ZERO, &syn(client, dst, 1)).unwrap();
    assert_eq!(exit.pending_flows(), 1);
    let rst = TcpRepr {
        src_port: client.port(),
        dst_port: dst.port(),
        control: TcpControl::Rst,
        seq_number: SeqNumber(2),
        ..TcpRepr::default()
    };
    exit.ingress(Instant::ZERO, &tcp_packet(client, dst, &rst))
        .unwrap();
    assert_eq!(exit.pending_flows(), 0);
    assert_eq!(exit.poll_flow_request(), None);
    // Offered, never answered: after a minute the next SYN makes a new request.
    exit.ingress(Instant::ZERO, &syn(client, dst, 5)).unwrap();
    let first = exit.poll_flow_request().unwrap();
    exit.ingress(Instant::from_secs(30), &syn(client, dst, 5))
        .unwrap();
    assert_eq!(exit.poll_flow_request(), None);
    exit.ingress(Instant::from_secs(61), &syn(client, dst, 5))
        .unwrap();
    let second = exit.poll_flow_request().unwrap();
    assert_eq!(first, second);
    assert_eq!(exit.pending_flows(), 1);
}

#[test]
fn an_accepted_flow_the_client_resets_fails_with_reset() {
    let mut net = Net::new(16);
    let handle = net
        .client
        .connect(net.now, sa(Ipv4Addr::new(192, 0, 2, 7), 80))
        .unwrap();
    let request = net.flow_requests(1, Duration::from_millis(100)).remove(0);
    // The client gives up before the answer.
    net.client.remove(handle);
    let exit_handle = net.exit.accept_flow(net.now, request).unwrap();
    net.run_for(Duration::from_millis(100), |net| {
        net.exit.socket(exit_handle).unwrap().error().is_some()
    });
    assert_eq!(
        net.exit.socket(exit_handle).unwrap().error(),
        Some(ConnectionError::Reset)
    );
    assert_eq!(net.exit.socket(exit_handle).unwrap().state(), State::Closed);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random bytes never panic an exit-mode stack.
    #[test]
    fn random_bytes_never_panic(packets in prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..100), 1..50)) {
        let mut exit = exit_stack(20);
        let mut buf = [0u8; MTU];
        for (i, packet) in packets.iter().enumerate() {
            let mut packet = packet.clone();
            // Often make it look like IPv4 so that the parsers get further.
            if i % 2 == 0 && !packet.is_empty() {
                packet[0] = 0x45;
            }
            let _ = exit.ingress(Instant::from_millis(i as u64), &packet);
            while exit.poll_egress(Instant::from_millis(i as u64), &mut buf).is_some() {}
            while exit.poll_flow_request().is_some() {}
            prop_assert!(exit.pending_flows() <= MAX_PENDING_FLOWS);
        }
    }

    /// Well-formed TCP, UDP and ICMP packets with random addresses, ports, flags and
    /// mutations never panic and never create more than the bounded number of requests.
    #[test]
    fn random_packets_keep_flow_requests_bounded(
        seeds in prop::collection::vec(
            (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(), 0u8..6, any::<u32>(),
             prop::option::of((0usize..80, any::<u8>()))),
            300..400),
    ) {
        let mut exit = exit_stack(21);
        let mut buf = [0u8; MTU];
        let mut offered = 0usize;
        for (i, (src, dst, sport, dport, kind, seq, flip)) in seeds.into_iter().enumerate() {
            let src = SocketAddrV4::new(Ipv4Addr::from(src), sport.max(1));
            let dst = SocketAddrV4::new(Ipv4Addr::from(dst), dport.max(1));
            let mut packet = match kind {
                0..=2 => syn(src, dst, seq),
                3 => tcp_packet(src, dst, &TcpRepr {
                    src_port: src.port(),
                    dst_port: dst.port(),
                    control: TcpControl::None,
                    seq_number: SeqNumber(seq),
                    ack_number: Some(SeqNumber(seq ^ 0x5555)),
                    window_len: 100,
                    payload: b"data",
                    ..TcpRepr::default()
                }),
                4 => udp_packet(src, dst, &seq.to_be_bytes()),
                _ => icmp_packet(*src.ip(), *dst.ip(), &IcmpRepr::EchoRequest {
                    ident: 1,
                    seq_no: 1,
                    data: b"x",
                }),
            };
            if let Some((at, byte)) = flip
                && let Some(b) = packet.get_mut(at)
            {
                *b ^= byte;
            }
            let now = Instant::from_millis(i as u64);
            let _ = exit.ingress(now, &packet);
            while exit.poll_egress(now, &mut buf).is_some() {}
            // Offer but never answer half of them.
            if i % 2 == 0 && exit.poll_flow_request().is_some() {
                offered += 1;
            }
            prop_assert!(exit.pending_flows() <= MAX_PENDING_FLOWS);
        }
        while exit.poll_flow_request().is_some() {
            offered += 1;
        }
        // Nothing was answered and nothing expired: every offer is still pending.
        prop_assert!(offered <= MAX_PENDING_FLOWS);
        prop_assert!(exit.pending_flows() <= MAX_PENDING_FLOWS);
    }
}

#[test]
fn an_icmp_error_about_an_exit_socket_reaches_it() {
    let mut exit = exit_stack(17);
    let client = SocketAddrV4::new(CLIENT, 40_000);
    let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 80);
    exit.ingress(Instant::ZERO, &syn(client, dst, 1)).unwrap();
    let request = exit.poll_flow_request().unwrap();
    let handle = exit.accept_flow(Instant::ZERO, request).unwrap();
    let mut buf = [0u8; MTU];
    let len = exit.poll_egress(Instant::ZERO, &mut buf).unwrap();
    let (ip, synack) = parse_tcp(&buf[..len]).unwrap();
    assert_eq!((ip.src_addr, ip.dst_addr), (*dst.ip(), CLIENT));
    assert_eq!(synack.ack_number, Some(SeqNumber(2)));
    // The client's host says the port is gone: the half-open exit socket fails.
    let icmp = IcmpRepr::DstUnreachable {
        code: erebus_wire::icmp::unreachable::PORT,
        next_hop_mtu: 0,
        original: &buf[..ipv4::HEADER_LEN + 8],
    };
    exit.ingress(Instant::ZERO, &icmp_packet(CLIENT, *dst.ip(), &icmp))
        .unwrap();
    assert_eq!(
        exit.socket(handle).unwrap().error(),
        Some(ConnectionError::Unreachable)
    );
}
