//! `erebus-ping`'s machine: ICMP echo requests written as raw IPv4 packets straight into a
//! tunnel, and the replies read straight out of it. No TCP/IP stack is involved, so it checks
//! the tunnel alone: handshake, encryption, framing and the server's routing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use erebus_sansio::io::{Event, Input, InputError, Output, TransportEvent};
use erebus_sansio::tunnel::{
    Decapsulated, Failure, Fault, TransportKind, TransportSpec, Tunnel, TunnelEvent,
};
use erebus_sansio::{Driven, Instant};
use erebus_wire::IpProtocol;
use erebus_wire::icmp::{IcmpPacket, IcmpRepr};
use erebus_wire::ipv4::{self, Ipv4Packet, Ipv4Repr};

use crate::framing;
use crate::link::Link;

/// The data every request carries, so a reply can be told from anything else.
const PAYLOAD: &[u8] = b"erebus-ping-0123456789abcdef";

/// One echo reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The request's sequence number.
    pub seq: u16,
    /// Time from request to reply.
    pub rtt: Duration,
}

/// Sends `count` echo requests to `target` through a tunnel, one per `interval`, and collects
/// the replies; reports [`Event::Down`] when done: fault `Closed` when at least one reply came
/// back (as `ping` exits 0 then), `Timeout` when none did.
#[derive(Debug)]
pub struct PingProbe<T> {
    tunnel: T,
    /// The transport the inputs are about.
    link: Link,
    rx: Vec<u8>,
    target: Ipv4Addr,
    source: Option<Ipv4Addr>,
    count: u16,
    interval: Duration,
    wait: Duration,
    ident: u16,
    sent: BTreeMap<u16, Instant>,
    next_seq: u16,
    next_send: Instant,
    replies: Vec<Reply>,
    events: Vec<Event>,
    finished: bool,
    now: Instant,
}

impl<T: Tunnel> PingProbe<T> {
    /// A probe over `tunnel`. `ident` tells our replies from other traffic; `wait` is how long
    /// to wait for replies after the last request.
    pub fn new(
        tunnel: T,
        target: Ipv4Addr,
        count: u16,
        interval: Duration,
        wait: Duration,
        ident: u16,
        now: Instant,
    ) -> Self {
        Self {
            tunnel,
            link: Link::default(),
            rx: vec![0; 65_535],
            target,
            source: None,
            count,
            interval,
            wait,
            ident,
            sent: BTreeMap::new(),
            next_seq: 1,
            next_send: now,
            replies: Vec::new(),
            events: Vec::new(),
            finished: false,
            now,
        }
    }

    /// The replies received so far, in arrival order.
    pub fn replies(&self) -> &[Reply] {
        &self.replies
    }

    /// How many requests went out.
    pub fn requests_sent(&self) -> u16 {
        self.next_seq - 1
    }

    fn kind(&self) -> TransportKind {
        self.tunnel
            .transport()
            .map_or(TransportKind::Udp, |spec| spec.kind)
    }

    fn frame_len(&self) -> usize {
        self.kind().prefix_len()
    }

    /// Forgets the old transport when the tunnel asks for another.
    fn sync_transport(&mut self) {
        self.link.follow(self.tunnel.transport());
    }

    /// Handles the decrypted inner packet at `rx[range]` (both transports decrypt in `rx`).
    fn inner_packet(&mut self, range: core::ops::Range<usize>) {
        let Some(packet) = self.rx.get(range) else {
            return;
        };
        let Ok(ip_packet) = Ipv4Packet::new_checked(packet) else {
            return;
        };
        let Ok(ip) = Ipv4Repr::parse(&ip_packet) else {
            return;
        };
        if ip.protocol != IpProtocol::Icmp || ip.src_addr != self.target {
            return;
        }
        let Ok(icmp) = IcmpPacket::new_checked(ip_packet.payload()) else {
            return;
        };
        if let Ok(IcmpRepr::EchoReply {
            ident,
            seq_no,
            data,
        }) = IcmpRepr::parse(&icmp)
            && ident == self.ident
            && data == PAYLOAD
            && let Some(sent) = self.sent.remove(&seq_no)
        {
            self.replies.push(Reply {
                seq: seq_no,
                rtt: self.now - sent,
            });
        }
    }

    fn finish_if_done(&mut self) {
        if self.finished {
            return;
        }
        let all_sent = self.requests_sent() >= self.count;
        let all_answered = all_sent && self.sent.is_empty();
        let gave_up = all_sent && self.now >= self.next_send + self.wait;
        if all_answered || gave_up {
            self.finished = true;
            let received = self.replies.len();
            let failure = if received > 0 {
                Failure::new(Fault::Closed, format!("{received}/{} replies", self.count))
            } else {
                Failure::new(
                    Fault::Timeout,
                    format!("{received}/{} replies from {}", self.count, self.target),
                )
            };
            self.events.push(Event::Down(failure));
        }
    }

    /// Writes the next echo request, encapsulated, into `buf`; returns the outer range.
    fn request(&mut self, buf: &mut [u8]) -> Option<core::ops::Range<usize>> {
        let source = self.source?;
        let seq = self.next_seq;
        let icmp = IcmpRepr::EchoRequest {
            ident: self.ident,
            seq_no: seq,
            data: PAYLOAD,
        };
        let ip = Ipv4Repr {
            src_addr: source,
            dst_addr: self.target,
            protocol: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            ttl: 64,
        };
        let frame = self.frame_len();
        let start = frame + self.tunnel.overhead().headroom;
        let end = start + ip.buffer_len();
        let inner = buf.get_mut(start..end)?;
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut *inner));
        icmp.emit(&mut IcmpPacket::new_unchecked(
            inner.get_mut(ipv4::HEADER_LEN..)?,
        ));
        let headroom = self.tunnel.overhead().headroom;
        let outer = self
            .tunnel
            .encapsulate(
                self.now,
                buf.get_mut(frame..)?,
                headroom..headroom + ip.buffer_len(),
            )
            .ok()?;
        if frame > 0 {
            framing::write_prefix(buf.get_mut(outer.start..)?, outer.len())?;
        }
        self.sent.insert(seq, self.now);
        self.next_seq += 1;
        self.next_send = self.now + self.interval;
        Some(outer.start..outer.end + frame)
    }
}

impl<T: Tunnel> Driven for PingProbe<T> {
    fn transport(&self) -> Option<&TransportSpec> {
        if self.finished {
            return None;
        }
        self.tunnel.transport()
    }

    fn handle_input(&mut self, input: Input<'_>) -> Result<(), InputError> {
        self.now = self.now.max(input.now());
        self.sync_transport();
        match input {
            Input::Timeout { .. } => self.tunnel.handle_timeout(self.now),
            Input::Close { .. } => {
                self.next_seq = self.count + 1;
                self.wait = Duration::ZERO;
            }
            Input::Transport {
                event: TransportEvent::Connected { remote },
                ..
            } => {
                if self.link.connect(remote) {
                    self.tunnel.transport_connected(self.now, remote);
                }
            }
            Input::Transport {
                event: TransportEvent::Data { from, .. },
                ..
            } if !self.link.is_server(from) => {}
            Input::Transport {
                event: TransportEvent::Data { bytes, .. },
                ..
            } => match self.kind() {
                TransportKind::Udp => {
                    if let Some(packet) = self.rx.get_mut(..bytes.len()) {
                        packet.copy_from_slice(bytes);
                        if let Ok(Decapsulated::Inner(range)) =
                            self.tunnel.decapsulate(self.now, packet)
                        {
                            self.inner_packet(range);
                        }
                    }
                }
                TransportKind::TcpLengthPrefixed => {
                    self.link.deframer().push(bytes);
                    while let Ok(Some(frame)) = self.link.deframer().next_frame() {
                        let len = frame.len();
                        if let Some(copy) = self.rx.get_mut(..len) {
                            copy.copy_from_slice(frame);
                            if let Ok(Decapsulated::Inner(range)) =
                                self.tunnel.decapsulate(self.now, copy)
                            {
                                self.inner_packet(range);
                            }
                        }
                    }
                }
            },
            Input::Transport {
                event: TransportEvent::Closed { error },
                ..
            } => {
                if self.link.close() {
                    self.tunnel.transport_closed(self.now, error);
                }
            }
            Input::Local { .. } => {}
        }
        Ok(())
    }

    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Output<'b> {
        if let Some(event) = self.events.pop() {
            return Output::Event(event);
        }
        while let Some(event) = self.tunnel.poll_event() {
            match event {
                TunnelEvent::Up(config) => self.source = config.local_ipv4(),
                TunnelEvent::Down(failure) => {
                    self.finished = true;
                    return Output::Event(Event::Down(failure));
                }
                _ => {}
            }
        }
        self.sync_transport();
        let Some(to) = self.link.remote() else {
            return Output::Timeout(self.deadline());
        };
        let frame = self.frame_len();
        let control = match buf.get_mut(frame..) {
            Some(room) => self.tunnel.poll_transmit(self.now, room),
            None => None,
        };
        match control {
            Some(Ok(len)) => {
                if frame > 0 && framing::write_prefix(buf, len).is_none() {
                    return Output::Timeout(Some(self.now));
                }
                return Output::Transmit {
                    to,
                    bytes: buf.get(..frame + len).unwrap_or_default(),
                };
            }
            Some(Err(needed)) => {
                return Output::BufferTooSmall {
                    needed: needed + frame,
                };
            }
            None => {}
        }
        if !self.finished
            && self.requests_sent() < self.count
            && self.now >= self.next_send
            && let Some(range) = self.request(buf)
        {
            return Output::Transmit {
                to,
                bytes: buf.get(range).unwrap_or_default(),
            };
        }
        self.finish_if_done();
        if let Some(event) = self.events.pop() {
            return Output::Event(event);
        }
        Output::Timeout(self.deadline())
    }
}

impl<T: Tunnel> PingProbe<T> {
    fn deadline(&self) -> Option<Instant> {
        let mut deadline = self.tunnel.poll_timeout().map(|(t, _)| t);
        let ping_deadline = if self.requests_sent() < self.count {
            self.next_send
        } else {
            self.next_send + self.wait
        };
        deadline = Some(deadline.map_or(ping_deadline, |d| d.min(ping_deadline)));
        deadline.map(|d| d.max(self.now))
    }
}
