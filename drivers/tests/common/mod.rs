//! A tiny machine for driver tests: it relays bytes between local connections and the
//! transport (an echo server in the test), counts its timer ticks, and closes on request. It
//! knows nothing of VPNs; it only exercises what a driver must do.

#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use erebus_sansio::io::{
    ConnId, Event, Input, InputError, LocalAction, LocalEvent, Output, TransportEvent,
};
use erebus_sansio::tunnel::{Failure, Fault, TransportKind, TransportSpec};
use erebus_sansio::{Driven, Instant};

/// Relays local bytes to the transport and transport bytes to the newest local connection.
pub(crate) struct Relay {
    spec: TransportSpec,
    remote: SocketAddr,
    conn: Option<ConnId>,
    queued: VecDeque<Vec<u8>>,
    to_local: VecDeque<Vec<u8>>,
    ticks: u32,
    next_tick: Instant,
    closed: bool,
    /// Whether the transport reported `Connected`, to the echo server's address.
    pub(crate) connected: bool,
}

impl Relay {
    pub(crate) fn new(remote: SocketAddr, kind: TransportKind) -> Self {
        Self {
            spec: TransportSpec::to_addr(remote, kind),
            remote,
            conn: None,
            queued: VecDeque::new(),
            to_local: VecDeque::new(),
            ticks: 0,
            next_tick: Instant::ZERO,
            closed: false,
            connected: false,
        }
    }

    pub(crate) fn ticks(&self) -> u32 {
        self.ticks
    }
}

impl Driven for Relay {
    fn transport(&self) -> Option<&TransportSpec> {
        Some(&self.spec)
    }

    fn handle_input(&mut self, input: Input<'_>) -> Result<(), InputError> {
        match input {
            Input::Timeout { now } => {
                if now >= self.next_tick {
                    self.ticks += 1;
                    self.next_tick = now + Duration::from_millis(20);
                }
            }
            Input::Close { .. } => self.closed = true,
            Input::Transport { event, .. } => match event {
                TransportEvent::Connected { remote } => {
                    self.connected = remote == self.remote;
                }
                TransportEvent::Data { bytes, .. } => self.to_local.push_back(bytes.to_vec()),
                TransportEvent::Closed { .. } => {}
            },
            Input::Local { conn, event, .. } => match event {
                LocalEvent::Accepted { .. } => self.conn = Some(conn),
                LocalEvent::Data(bytes) => self.queued.push_back(bytes.to_vec()),
                _ => {}
            },
        }
        Ok(())
    }

    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Output<'b> {
        if self.closed {
            self.closed = false;
            return Output::Event(Event::Down(Failure::new(
                Fault::Closed,
                "closed on request",
            )));
        }
        if self.connected
            && let Some(bytes) = self.queued.pop_front()
        {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            return Output::Transmit {
                to: self.remote,
                bytes: &buf[..n],
            };
        }
        if let (Some(conn), Some(bytes)) = (self.conn, self.to_local.pop_front()) {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            return Output::Local {
                conn,
                action: LocalAction::Write(&buf[..n]),
            };
        }
        Output::Timeout(Some(self.next_tick))
    }
}

/// A UDP echo server on loopback, on a thread that ends when the test process does.
pub(crate) fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// A TCP echo server on loopback for one connection.
pub(crate) fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 65_536];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

/// Sends `message` through a local connection to `proxy` and reads the echo back.
pub(crate) fn round_trip(proxy: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut client = std::net::TcpStream::connect(proxy).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.write_all(message).unwrap();
    let mut got = vec![0; message.len()];
    client.read_exact(&mut got).unwrap();
    got
}

/// Feeds a recorded journal to `machine`, draining after each input as a driver does, and
/// returns every transmitted payload.
pub(crate) fn replay(journal: &[u8], machine: &mut impl Driven) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    let mut buf = vec![0u8; 65_536];
    for input in erebus_sansio::journal::JournalReader::new(journal).unwrap() {
        machine.handle_input(input.unwrap()).unwrap();
        loop {
            match machine.poll_output(&mut buf) {
                Output::Transmit { bytes, .. } => sent.push(bytes.to_vec()),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
    }
    sent
}

/// The payloads of the packets in a recorded pcap that were sent from `local_port`.
pub(crate) fn pcap_payloads(pcap: &[u8], header_len: usize, from_port: u16) -> Vec<Vec<u8>> {
    let mut reader = pcap_file::pcap::PcapReader::new(pcap).unwrap();
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let data = packet.unwrap().data.into_owned();
        let src_port = u16::from_be_bytes([data[20], data[21]]);
        if src_port == from_port {
            out.push(data[20 + header_len..].to_vec());
        }
    }
    out
}
