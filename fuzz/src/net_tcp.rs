//! `net_tcp`: a configuration byte, then steps (tag, u16 length, bytes; see
//! [`crate::Records`]) fed to one [`TcpSocket`] between 10.0.0.2:40000 (the socket) and
//! 10.0.0.1:80 (the harness's peer), as parsed segments ([`TcpRepr`]) straight into
//! [`TcpSocket::process`], without the IP layer.
//!
//! Configuration bits: 0, the socket listens (else it connects); 1-3, window scaling,
//! timestamps and SACK off; 4, Nagle on; 5, 4 KiB buffers; 6, NewReno (else CUBIC); 7,
//! delayed ACKs off.
//!
//! Tags (modulo 8): 0, a segment (see [`segment`]: sequence and acknowledgement numbers are
//! offsets from the peer's and the socket's initial sequence numbers, so the fuzzer lands in
//! the windows); 1, the clock moves on by the body's big-endian milliseconds (up to 4 bytes);
//! 2, `send` of the body's length in bytes; 3, `recv` of up to 64 times the first byte plus
//! one; 4, `close`; 5, `abort`; 6, `on_unreachable`; 7, `release_idle_buffers` and a new
//! receive share. After each step the harness calls `dispatch` until it returns `None`.
//!
//! The data is the check: the peer's payload at sequence number `s` is [`pattern`]`(s)`, and
//! what the harness sends is the same pattern of the socket's stream, so every byte `recv`
//! returns must be the peer's pattern at its sequence number (counted from the SYN the socket
//! acknowledged), and every payload byte the socket
//! sends the pattern at its sequence number (retransmissions included), unless a segment
//! asked for raw fuzz bytes. Segments go out between the right ports, with an ACK after
//! the handshake, and never carry more than the MSS.

use std::net::SocketAddr;
use std::time::Duration;

use erebus_net::tcp::congestion::CongestionAlgorithm;
use erebus_net::{State, TcpConfig, TcpSocket};
use erebus_sansio::{Instant, Seed};
use erebus_wire::tcp::{SackBlock, SeqNumber, TcpControl, TcpRepr, TcpTimestamp};

use crate::Records;

/// Tags of the steps.
pub const SEGMENT: u8 = 0;
/// Advance the clock.
pub const ADVANCE: u8 = 1;
/// Send bytes.
pub const SEND: u8 = 2;
/// Receive bytes.
pub const RECV: u8 = 3;
/// Close.
pub const CLOSE: u8 = 4;
/// Abort.
pub const ABORT: u8 = 5;
/// An ICMP unreachable arrived.
pub const UNREACHABLE: u8 = 6;
/// Release idle buffers.
pub const RELEASE: u8 = 7;

/// The peer's initial sequence number.
pub const PEER_ISS: u32 = 1_000_000;
/// The MSS the socket is configured with.
pub const MSS: u16 = 1460;
/// The most segments drained after one step.
const DRAIN_LIMIT: usize = 512;
/// The largest payload of one harness segment or send.
const MAX_PAYLOAD: usize = 8192;

/// The byte at sequence number `seq` of either stream.
pub fn pattern(seq: u32) -> u8 {
    (seq.wrapping_mul(31) >> 3) as u8
}

/// The socket's address.
pub fn local() -> SocketAddr {
    "10.0.0.2:40000".parse().expect("an address")
}

/// The peer's address.
pub fn remote() -> SocketAddr {
    "10.0.0.1:80".parse().expect("an address")
}

/// One socket and what it did.
pub struct Driver {
    /// The socket.
    pub socket: TcpSocket,
    /// The clock.
    pub now: Instant,
    /// The socket's initial sequence number, once its SYN went out.
    pub iss: Option<u32>,
    /// The peer's initial sequence number the socket took, once it acknowledged it.
    pub irs: Option<u32>,
    /// The latest timestamp the socket sent.
    pub ts_recent: u32,
    /// Bytes received by `recv`.
    pub received: usize,
    /// Bytes the harness queued with `send`.
    pub queued: usize,
    /// Every segment the socket sent: control, sequence number, acknowledgement, payload length.
    pub sent: Vec<(TcpControl, u32, Option<u32>, usize)>,
    /// The payload check is off (a segment carried raw bytes).
    raw: bool,
}

impl Driver {
    /// A socket of configuration `config`.
    pub fn new(config: u8) -> Self {
        let small = config & 0x20 != 0;
        let tcp = TcpConfig {
            mss: MSS,
            window_scaling: config & 0x02 == 0,
            timestamps: config & 0x04 == 0,
            sack: config & 0x08 == 0,
            nagle: config & 0x10 != 0,
            rx_buffer_size: if small {
                4096
            } else {
                TcpConfig::default().rx_buffer_size
            },
            tx_buffer_size: if small {
                4096
            } else {
                TcpConfig::default().tx_buffer_size
            },
            congestion: if config & 0x40 != 0 {
                CongestionAlgorithm::NewReno
            } else {
                CongestionAlgorithm::Cubic
            },
            delayed_ack: if config & 0x80 != 0 {
                None
            } else {
                TcpConfig::default().delayed_ack
            },
            keep_alive: Some(Duration::from_secs(30)),
            ..TcpConfig::default()
        };
        let mut socket = TcpSocket::new(tcp, &Seed::from_byte(13));
        if config & 1 == 1 {
            socket.listen(local()).expect("listen");
        } else {
            socket
                .connect(Instant::ZERO, local(), remote())
                .expect("connect");
        }
        let mut driver = Self {
            socket,
            now: Instant::ZERO,
            iss: None,
            irs: None,
            ts_recent: 0,
            received: 0,
            queued: 0,
            sent: Vec::new(),
            raw: false,
        };
        driver.drain();
        driver
    }

    /// Runs one step, then drains.
    pub fn step(&mut self, tag: u8, body: &[u8]) {
        match tag % 8 {
            ADVANCE => {
                let mut ms = [0u8; 4];
                let n = body.len().min(4);
                ms[4 - n..].copy_from_slice(&body[..n]);
                self.now += Duration::from_millis(u64::from(u32::from_be_bytes(ms)));
            }
            SEND => {
                let len = body.len().min(MAX_PAYLOAD);
                // The socket's stream byte k sits at sequence number iss + 1 + k.
                let base = self.iss.unwrap_or(0).wrapping_add(1);
                let data: Vec<u8> = (0..len)
                    .map(|k| pattern(base.wrapping_add((self.queued + k) as u32)))
                    .collect();
                if let Ok(n) = self.socket.send(&data) {
                    assert!(n <= data.len());
                    if self.iss.is_none() && n > 0 {
                        // Queued before the SYN chose the numbers: the check cannot hold.
                        self.raw = true;
                    }
                    self.queued += n;
                }
            }
            RECV => {
                let mut buf = vec![0u8; usize::from(body.first().copied().unwrap_or(0)) * 64 + 1];
                if let Ok(n) = self.socket.recv(&mut buf) {
                    assert!(n <= buf.len());
                    if let (false, Some(irs)) = (self.raw, self.irs) {
                        for (k, &byte) in buf[..n].iter().enumerate() {
                            let seq = irs.wrapping_add(1).wrapping_add((self.received + k) as u32);
                            assert_eq!(byte, pattern(seq), "received byte {}", self.received + k);
                        }
                    }
                    self.received += n;
                }
            }
            CLOSE => self.socket.close(),
            ABORT => self.socket.abort(),
            UNREACHABLE => self.socket.on_unreachable(),
            RELEASE => {
                let _ = self.socket.release_idle_buffers();
                let share = usize::from(body.first().copied().unwrap_or(0)) << 12;
                self.socket.set_receive_share(share);
            }
            _ => {
                let seg = self.segment(body);
                let seg_repr = seg.repr(&seg.payload);
                if let Some(reply) = self.socket.process(self.now, remote(), local(), &seg_repr) {
                    self.check_out(&reply);
                }
            }
        }
        let _ = (
            self.socket.state(),
            self.socket.error(),
            self.socket.poll_at(),
        );
        self.drain();
    }

    /// Decodes a segment body (see [`segment`]).
    fn segment(&mut self, body: &[u8]) -> Segment {
        let seg = segment(body, self.iss.unwrap_or(0), self.now, self.ts_recent);
        if seg.raw {
            self.raw = true;
        }
        seg
    }

    fn check_out(&mut self, seg: &TcpRepr<'_>) {
        assert_eq!(seg.src_port, local().port());
        assert_eq!(seg.dst_port, remote().port());
        assert!(
            seg.payload.len() <= usize::from(MSS),
            "{} bytes",
            seg.payload.len()
        );
        if let Some(ts) = seg.timestamp {
            self.ts_recent = ts.tsval;
        }
        if seg.control == TcpControl::Syn {
            match self.iss {
                None => self.iss = Some(seg.seq_number.0),
                Some(iss) if iss != seg.seq_number.0 => {
                    // A new connection (a listener reset to listening): new numbers.
                    self.iss = Some(seg.seq_number.0);
                    self.raw = true;
                }
                Some(_) => {}
            }
        } else if !self.raw && !seg.payload.is_empty() {
            for (k, &byte) in seg.payload.iter().enumerate() {
                let seq = seg.seq_number.0.wrapping_add(k as u32);
                assert_eq!(byte, pattern(seq), "sent byte at {seq}");
            }
        }
        if seg.control != TcpControl::Rst && seg.control != TcpControl::Syn {
            assert!(seg.ack_number.is_some(), "a segment without ACK: {seg:?}");
        }
        if let (None, Some(ack), false) = (self.irs, seg.ack_number, seg.control == TcpControl::Rst)
        {
            // The first acknowledgement of the handshake names the peer's SYN it took: the
            // fuzzer chooses that SYN's sequence number.
            self.irs = Some(ack.0.wrapping_sub(1));
        }
        self.sent.push((
            seg.control,
            seg.seq_number.0,
            seg.ack_number.map(|a| a.0),
            seg.payload.len(),
        ));
        if self.sent.len() > 4096 {
            self.sent.drain(..2048);
        }
    }

    /// Calls `dispatch` until it returns `None`.
    pub fn drain(&mut self) {
        for _ in 0..DRAIN_LIMIT {
            let now = self.now;
            let Some(seg) = self.socket.dispatch(now, owned) else {
                break;
            };
            self.check_out(&seg.repr(&seg.payload));
        }
        let _ = self.socket.take_events();
        if self.socket.state() == State::Closed {
            assert!(self.socket.send(b"x").is_err(), "send on a closed socket");
        }
    }
}

/// A segment with its own payload.
pub struct Segment {
    /// The fields, payload empty.
    pub fields: TcpRepr<'static>,
    /// The payload.
    pub payload: Vec<u8>,
    /// The payload is the fuzzer's bytes, not the pattern.
    pub raw: bool,
}

impl Segment {
    /// The segment as a [`TcpRepr`] over `payload`.
    pub fn repr<'a>(&self, payload: &'a [u8]) -> TcpRepr<'a> {
        TcpRepr {
            payload,
            ..self.fields
        }
    }
}

fn owned(seg: &TcpRepr<'_>) -> Segment {
    Segment {
        fields: TcpRepr {
            payload: &[],
            ..*seg
        },
        payload: seg.payload.to_vec(),
        raw: false,
    }
}

/// Decodes a segment from the peer. Bytes: 0, control (low 3 bits modulo 5: none, PSH, SYN,
/// FIN, RST), bit 3 ACK present, bit 4 the payload is the raw bytes after the header; 1-4,
/// the sequence number as an offset from [`PEER_ISS`]; 5-8, the acknowledgement number as an
/// offset from the socket's `iss`; 9-10, the window; 11, options present (bit 0 window
/// scale, 1 MSS, 2 SACK permitted, 3 timestamp, 4 one SACK block); 12, the window scale;
/// 13-14, the MSS; 15-16 and 17-18, the SACK block's start (offset from `iss`) and length;
/// 19-20, the payload length (pattern bytes) unless raw. Missing bytes are zero.
pub fn segment(body: &[u8], iss: u32, now: Instant, ts_recent: u32) -> Segment {
    let byte = |i: usize| body.get(i).copied().unwrap_or(0);
    let u16_at = |i: usize| u16::from_be_bytes([byte(i), byte(i + 1)]);
    let u32_at = |i: usize| u32::from_be_bytes([byte(i), byte(i + 1), byte(i + 2), byte(i + 3)]);
    let control = match byte(0) & 7 {
        1 => TcpControl::Psh,
        2 => TcpControl::Syn,
        3 => TcpControl::Fin,
        4 => TcpControl::Rst,
        _ => TcpControl::None,
    };
    let seq = PEER_ISS.wrapping_add(u32_at(1));
    let ack = (byte(0) & 8 != 0).then(|| SeqNumber(iss.wrapping_add(u32_at(5))));
    let options = byte(11);
    let raw = byte(0) & 0x10 != 0;
    let payload: Vec<u8> = if raw {
        body.get(19..).unwrap_or_default().to_vec()
    } else {
        let len = usize::from(u16_at(19)).min(MAX_PAYLOAD);
        // A SYN's data starts one after its sequence number.
        let first = if control == TcpControl::Syn {
            seq.wrapping_add(1)
        } else {
            seq
        };
        (0..len)
            .map(|k| pattern(first.wrapping_add(k as u32)))
            .collect()
    };
    let mut sack_ranges = [None; 3];
    if options & 0x10 != 0 {
        let left = iss.wrapping_add(u32::from(u16_at(15)));
        sack_ranges[0] = Some(SackBlock {
            left: SeqNumber(left),
            right: SeqNumber(left.wrapping_add(u32::from(u16_at(17)))),
        });
    }
    let millis = now.saturating_duration_since(Instant::ZERO).as_millis();
    Segment {
        fields: TcpRepr {
            src_port: remote().port(),
            dst_port: local().port(),
            control,
            seq_number: SeqNumber(seq),
            ack_number: ack,
            window_len: u16_at(9),
            window_scale: (options & 1 != 0).then_some(byte(12)),
            max_seg_size: (options & 2 != 0).then_some(u16_at(13)),
            sack_permitted: options & 4 != 0,
            sack_ranges,
            timestamp: (options & 8 != 0).then_some(TcpTimestamp {
                tsval: millis as u32,
                tsecr: ts_recent,
            }),
            payload: &[],
        },
        payload,
        raw,
    }
}

/// The harness.
pub fn run(data: &[u8]) {
    let Some((&config, records)) = data.split_first() else {
        return;
    };
    let mut driver = Driver::new(config);
    for (tag, body) in Records::new(records) {
        driver.step(tag, body);
    }
}
