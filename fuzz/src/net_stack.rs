//! `net_stack`: a configuration byte, then steps (tag, u16 length, bytes; see
//! [`crate::Records`]) fed to one user-space [`Stack`] with the tunnel addresses 10.8.0.2/24
//! and fd00::2/64, a listener on port 8080, a connection to 10.8.0.1:80 and UDP port 5353
//! bound. Configuration bit 0 turns exit mode on (every SYN to elsewhere is a flow request,
//! accepted or refused as bit 1 says).
//!
//! Tags (modulo 8): 0, the body as an inner packet for [`Stack::ingress`]; 1, the body as a
//! packet whose lengths and checksums the harness fixes first (IPv4 total length and header
//! checksum, IPv6 payload length, TCP/UDP/ICMP/ICMPv6 checksums), so mutated headers and
//! payloads get past the checksum checks; 2, the clock moves on by the body's big-endian
//! milliseconds (up to 4 bytes); 3, a socket call on the socket the first byte picks: `send`
//! of the rest, `recv`, `close` or `abort` by the second byte; 4, `udp_send` of the body
//! from port 5353 to 10.8.0.1:53; 5, `listen` again on port 8080. After each step the harness
//! drains `poll_egress` (every packet must fit the MTU and be IPv4 with a valid header
//! checksum), `poll_event`, `udp_recv` (datagrams are sometimes refused with an ICMP error) and
//! the flow requests, as the client and the exit do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use erebus_net::{Refusal, SocketHandle, Stack, TcpConfig, UnreachableCode};
use erebus_sansio::tunnel::IpNet;
use erebus_sansio::{Instant, Seed, TunnelConfig};
use erebus_wire::checksum;

/// Tags of the steps.
pub const INGRESS: u8 = 0;
/// Ingress with lengths and checksums fixed.
pub const FIXED: u8 = 1;
/// Advance the clock.
pub const ADVANCE: u8 = 2;
/// A socket call.
pub const SOCKET: u8 = 3;
/// A UDP datagram out.
pub const UDP_SEND: u8 = 4;
/// Listen again.
pub const LISTEN: u8 = 5;

/// Our tunnel address.
pub const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
/// The peer of the tunnel (gateway and DNS server).
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);
/// Our IPv6 tunnel address.
pub const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// The listening port.
pub const LISTEN_PORT: u16 = 8080;
/// The bound UDP port.
pub const UDP_PORT: u16 = 5353;
/// The tunnel MTU.
pub const MTU: u16 = 1400;

/// The most packets drained after one step.
const DRAIN_LIMIT: usize = 512;

/// The tunnel the stack runs on.
pub fn tunnel() -> TunnelConfig {
    TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(LOCAL_V4), 24),
        ipv6: IpNet::new(IpAddr::V6(LOCAL_V6), 64),
        gateway: Some(IpAddr::V4(PEER_V4)),
        routes: vec![IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("a route")],
        dns_servers: vec![IpAddr::V4(PEER_V4)],
        mtu: MTU,
        ..TunnelConfig::default()
    }
}

/// One stack and what it did.
pub struct Driver {
    /// The stack.
    pub stack: Stack,
    /// The clock.
    pub now: Instant,
    /// Sockets opened (for the socket step).
    pub sockets: Vec<SocketHandle>,
    /// Every packet the stack sent, in order (for seed building).
    pub sent: Vec<Vec<u8>>,
    /// Bytes received by `recv`.
    pub received: usize,
    /// Flows accepted.
    pub flows: usize,
    accept_flows: bool,
    buf: Vec<u8>,
}

impl Driver {
    /// A stack of configuration `config`.
    pub fn new(config: u8) -> Self {
        let tcp = TcpConfig {
            mss: TcpConfig::mss_for_ipv4_mtu(MTU),
            ..TcpConfig::default()
        };
        let mut stack = Stack::new(&tunnel(), tcp, &Seed::from_byte(11));
        stack.set_exit_mode(config & 1 == 1);
        let mut sockets = Vec::new();
        if let Ok(handle) = stack.listen(LISTEN_PORT) {
            sockets.push(handle);
        }
        if let Ok(handle) = stack.connect(Instant::ZERO, SocketAddr::new(PEER_V4.into(), 80)) {
            sockets.push(handle);
        }
        stack.udp_bind(UDP_PORT).expect("a free UDP port");
        let mut driver = Self {
            stack,
            now: Instant::ZERO,
            sockets,
            sent: Vec::new(),
            received: 0,
            flows: 0,
            accept_flows: config & 2 == 0,
            buf: vec![0; 65_536],
        };
        driver.drain();
        driver
    }

    /// Runs one step, then drains.
    pub fn step(&mut self, tag: u8, body: &[u8]) {
        match tag % 8 {
            FIXED => {
                let mut packet = body.to_vec();
                fix_checksums(&mut packet);
                let _ = self.stack.ingress(self.now, &packet);
            }
            ADVANCE => {
                let mut ms = [0u8; 4];
                let n = body.len().min(4);
                ms[4 - n..].copy_from_slice(&body[..n]);
                self.now += Duration::from_millis(u64::from(u32::from_be_bytes(ms)));
            }
            SOCKET => self.socket_call(body),
            UDP_SEND => {
                let _ = self
                    .stack
                    .udp_send(UDP_PORT, SocketAddr::new(PEER_V4.into(), 53), body);
            }
            LISTEN => {
                if let Ok(handle) = self.stack.listen(LISTEN_PORT) {
                    self.sockets.push(handle);
                }
            }
            _ => {
                let _ = self.stack.ingress(self.now, body);
            }
        }
        self.drain();
    }

    fn socket_call(&mut self, body: &[u8]) {
        let pick = body.first().copied().unwrap_or(0);
        let op = body.get(1).copied().unwrap_or(0);
        let data = body.get(2..).unwrap_or_default();
        let Some(&handle) = self
            .sockets
            .get(usize::from(pick) % self.sockets.len().max(1))
        else {
            return;
        };
        let Some(socket) = self.stack.socket_mut(handle) else {
            return;
        };
        match op % 4 {
            0 => {
                if let Ok(n) = socket.send(data) {
                    assert!(n <= data.len());
                }
            }
            1 => {
                let mut buf = vec![0u8; usize::from(op) * 64 + 1];
                if let Ok(n) = socket.recv(&mut buf) {
                    assert!(n <= buf.len());
                    self.received += n;
                }
            }
            2 => socket.close(),
            _ => socket.abort(),
        }
    }

    /// Drains packets, events, datagrams and flow requests.
    pub fn drain(&mut self) {
        for _ in 0..DRAIN_LIMIT {
            let Some(n) = self.stack.poll_egress(self.now, &mut self.buf) else {
                break;
            };
            assert!(
                n <= usize::from(MTU),
                "a {n}-byte packet on a {MTU}-byte tunnel"
            );
            let packet = &self.buf[..n];
            assert_eq!(packet.first().map(|b| b >> 4), Some(4), "not IPv4");
            let ihl = usize::from(packet[0] & 0xf) * 4;
            assert!(ihl >= 20 && ihl <= n, "header length {ihl} of {n}");
            assert_eq!(
                checksum::checksum(&packet[..ihl]),
                0,
                "IPv4 header checksum"
            );
            self.sent.push(packet.to_vec());
        }
        while let Some((handle, events)) = self.stack.poll_event() {
            let _ = events.is_empty();
            if !self.sockets.contains(&handle) {
                self.sockets.push(handle);
            }
        }
        while let Some(datagram) = self.stack.udp_recv() {
            if datagram.payload.first().is_some_and(|b| b & 1 == 1) {
                self.stack.udp_refuse(&datagram, UnreachableCode::Port);
            }
        }
        while let Some(request) = self.stack.poll_flow_request() {
            if self.accept_flows {
                if let Ok(handle) = self.stack.accept_flow(self.now, request) {
                    self.sockets.push(handle);
                    self.flows += 1;
                }
            } else {
                self.stack.refuse_flow(request, Refusal::Reset);
            }
        }
        let _ = self.stack.poll_timeout();
        let _ = self.stack.pending_flows();
    }
}

/// Fixes the lengths and checksums of an IPv4 or IPv6 packet in place (what the harness's
/// `FIXED` step does), so that a mutated packet passes the checks and reaches the sockets.
pub fn fix_checksums(packet: &mut [u8]) {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let ihl = (usize::from(packet[0] & 0xf) * 4).clamp(20, packet.len());
            let total = u16::try_from(packet.len()).unwrap_or(u16::MAX);
            packet[2..4].copy_from_slice(&total.to_be_bytes());
            packet[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum::checksum(&packet[..ihl]);
            packet[10..12].copy_from_slice(&sum.to_be_bytes());
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff != 0;
            if fragment {
                return;
            }
            let src = Ipv4Addr::from([packet[12], packet[13], packet[14], packet[15]]);
            let dst = Ipv4Addr::from([packet[16], packet[17], packet[18], packet[19]]);
            let protocol = packet[9];
            let (_, l4) = packet.split_at_mut(ihl);
            let length = u16::try_from(l4.len()).unwrap_or(u16::MAX);
            let pseudo = checksum::pseudo_header_v4(src, dst, protocol, length);
            match protocol {
                6 => fix_l4(l4, 16, pseudo),
                17 => {
                    if l4.len() >= 8 {
                        l4[4..6].copy_from_slice(&length.to_be_bytes());
                    }
                    fix_l4(l4, 6, pseudo);
                }
                1 => fix_l4(l4, 2, 0),
                _ => {}
            }
        }
        Some(6) if packet.len() >= 40 => {
            let payload = u16::try_from(packet.len() - 40).unwrap_or(u16::MAX);
            packet[4..6].copy_from_slice(&payload.to_be_bytes());
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).expect("16 bytes"));
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).expect("16 bytes"));
            let next = packet[6];
            let (_, l4) = packet.split_at_mut(40);
            let pseudo = checksum::pseudo_header_v6(src, dst, next, u32::from(payload));
            match next {
                6 => fix_l4(l4, 16, pseudo),
                17 => {
                    if l4.len() >= 8 {
                        l4[4..6].copy_from_slice(&payload.to_be_bytes());
                    }
                    fix_l4(l4, 6, pseudo);
                }
                58 => fix_l4(l4, 2, pseudo),
                _ => {}
            }
        }
        _ => {}
    }
}

/// Writes the checksum of `l4` (with the pseudo-header's running sum) at `at`.
fn fix_l4(l4: &mut [u8], at: usize, pseudo: u32) {
    if l4.len() < at + 2 {
        return;
    }
    l4[at..at + 2].copy_from_slice(&[0, 0]);
    let sum = checksum::finish(checksum::accumulate(pseudo, l4));
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// The harness.
pub fn run(data: &[u8]) {
    let Some((&config, records)) = data.split_first() else {
        return;
    };
    let mut driver = Driver::new(config);
    for (tag, body) in crate::Records::new(records) {
        driver.step(tag, body);
    }
}
