//! Scripted-segment tests: the peer is played by hand, one `TcpRepr` at a time, and every
//! segment the socket emits is checked exactly.

use super::congestion::CongestionAlgorithm;
use super::*;
use std::net::{Ipv4Addr, SocketAddrV4};

const LOCAL_PORT: u16 = 80;
const REMOTE_PORT: u16 = 49_500;
pub(super) const LOCAL_SEQ: SeqNumber = SeqNumber(10_000);
/// Close to the wrap, so every test also exercises modular sequence arithmetic.
pub(super) const REMOTE_SEQ: SeqNumber = SeqNumber(u32::MAX - 1_000);
pub(super) const BUF: usize = 64_000;
const MSS: usize = 1460;

pub(super) fn local() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), LOCAL_PORT))
}

pub(super) fn remote() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), REMOTE_PORT))
}

pub(super) fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// Plain TCP: no options beyond MSS, no delayed ACK, NewReno; tests switch features on.
pub(super) fn config() -> TcpConfig {
    TcpConfig {
        rx_buffer_size: BUF,
        tx_buffer_size: BUF,
        mss: MSS as u16,
        window_scaling: false,
        timestamps: false,
        sack: false,
        delayed_ack: None,
        quick_acks: 0,
        congestion: CongestionAlgorithm::NewReno,
        ..TcpConfig::default()
    }
}

/// Pins the initial sequence number, which otherwise comes from the seed.
fn force_iss(s: &mut TcpSocket) {
    s.iss = LOCAL_SEQ;
    s.snd_una = LOCAL_SEQ;
    s.snd_max = LOCAL_SEQ;
    s.rexmit_from = LOCAL_SEQ;
    s.lost_until = LOCAL_SEQ;
    s.recover = LOCAL_SEQ;
}

/// A segment from the peer.
pub(super) fn send_templ() -> TcpRepr<'static> {
    TcpRepr {
        src_port: REMOTE_PORT,
        dst_port: LOCAL_PORT,
        window_len: 64_000,
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1),
        ..TcpRepr::default()
    }
}

/// A segment from the socket.
pub(super) fn recv_templ() -> TcpRepr<'static> {
    TcpRepr {
        src_port: LOCAL_PORT,
        dst_port: REMOTE_PORT,
        window_len: BUF as u16,
        seq_number: LOCAL_SEQ + 1,
        ack_number: Some(REMOTE_SEQ + 1),
        ..TcpRepr::default()
    }
}

/// An emitted segment with its payload copied out of the socket's buffer.
#[derive(Debug, PartialEq, Eq)]
struct Out {
    repr: TcpRepr<'static>,
    payload: Vec<u8>,
}

fn out(repr: &TcpRepr<'_>) -> Out {
    Out {
        repr: TcpRepr {
            payload: &[],
            ..*repr
        },
        payload: repr.payload.to_vec(),
    }
}

pub(super) fn send(s: &mut TcpSocket, ms: u64, repr: &TcpRepr<'_>) {
    let reply = s.process(at(ms), remote(), local(), repr);
    assert_eq!(reply, None, "unexpected immediate reply");
}

fn recv_all(s: &mut TcpSocket, ms: u64) -> Vec<Out> {
    let mut outs = Vec::new();
    while let Some(o) = s.dispatch(at(ms), out) {
        outs.push(o);
        assert!(outs.len() < 1000, "dispatch does not stop");
    }
    outs
}

pub(super) fn expect(s: &mut TcpSocket, ms: u64, expected: &[TcpRepr<'_>]) {
    let got = recv_all(s, ms);
    let want: Vec<Out> = expected.iter().map(out).collect();
    assert_eq!(got, want, "at {ms} ms");
}

pub(super) fn expect_nothing(s: &mut TcpSocket, ms: u64) {
    expect(s, ms, &[]);
}

fn socket(config: TcpConfig) -> TcpSocket {
    TcpSocket::new(config, &Seed::from_byte(1))
}

fn syn_from_peer() -> TcpRepr<'static> {
    TcpRepr {
        control: TcpControl::Syn,
        seq_number: REMOTE_SEQ,
        ack_number: None,
        max_seg_size: Some(MSS as u16),
        ..send_templ()
    }
}

/// A socket that went through a passive open at time 0.
fn established_with(config: TcpConfig, syn: TcpRepr<'static>) -> TcpSocket {
    let mut s = socket(config);
    s.listen(local()).unwrap();
    send(&mut s, 0, &syn);
    force_iss(&mut s);
    let outs = recv_all(&mut s, 0);
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].repr.control, TcpControl::Syn);
    let mut ack = send_templ();
    if let Some(ts) = outs[0].repr.timestamp {
        ack.timestamp = Some(TcpTimestamp {
            tsval: 1,
            tsecr: ts.tsval,
        });
    }
    send(&mut s, 0, &ack);
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.take_events(), Events::CONNECTED | Events::WRITABLE);
    s
}

pub(super) fn established() -> TcpSocket {
    established_with(config(), syn_from_peer())
}

fn data_from_peer(offset: usize, payload: &'static [u8]) -> TcpRepr<'static> {
    TcpRepr {
        seq_number: REMOTE_SEQ + 1 + offset,
        payload,
        ..send_templ()
    }
}

fn ack_from_peer(ack_offset: usize) -> TcpRepr<'static> {
    TcpRepr {
        ack_number: Some(LOCAL_SEQ + 1 + ack_offset),
        ..send_templ()
    }
}

static BULK: [u8; 20 * MSS] = {
    let mut data = [0u8; 20 * MSS];
    let mut i = 0;
    while i < data.len() {
        data[i] = (i % 251) as u8;
        i += 1;
    }
    data
};

/// The segment carrying bulk bytes `from..to` (offsets in the send stream).
fn bulk_segment(from: usize, to: usize, last: bool) -> TcpRepr<'static> {
    TcpRepr {
        seq_number: LOCAL_SEQ + 1 + from,
        control: if last {
            TcpControl::Psh
        } else {
            TcpControl::None
        },
        payload: &BULK[from..to],
        ..recv_templ()
    }
}

// ---------------------------------------------------------------------------------------------
// Opening.

#[test]
fn active_open_three_way_handshake() {
    let mut s = socket(config());
    s.connect(at(0), local(), remote()).unwrap();
    force_iss(&mut s);
    assert_eq!(s.state(), State::SynSent);
    expect(
        &mut s,
        0,
        &[TcpRepr {
            control: TcpControl::Syn,
            seq_number: LOCAL_SEQ,
            ack_number: None,
            max_seg_size: Some(MSS as u16),
            ..recv_templ()
        }],
    );
    send(
        &mut s,
        10,
        &TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            ack_number: Some(LOCAL_SEQ + 1),
            max_seg_size: Some(1400),
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.take_events(), Events::CONNECTED | Events::WRITABLE);
    expect(&mut s, 10, &[recv_templ()]);
    // The handshake gave the first RTT sample.
    assert_eq!(s.smoothed_rtt(), Some(Duration::from_millis(10)));
    // Segments are sized by the peer's smaller MSS.
    s.send(&BULK[..2000]).unwrap();
    let outs = recv_all(&mut s, 10);
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0].payload.len(), 1400);
    assert_eq!(outs[1].payload.len(), 600);
}

#[test]
fn passive_open_three_way_handshake() {
    let mut s = socket(config());
    s.listen(local()).unwrap();
    assert!(s.accepts(remote(), local()));
    send(&mut s, 0, &syn_from_peer());
    force_iss(&mut s);
    assert_eq!(s.state(), State::SynReceived);
    let synack = TcpRepr {
        control: TcpControl::Syn,
        seq_number: LOCAL_SEQ,
        ack_number: Some(REMOTE_SEQ + 1),
        max_seg_size: Some(MSS as u16),
        ..recv_templ()
    };
    expect(&mut s, 0, &[synack]);
    // A repeated SYN means our SYN-ACK was lost: repeat it.
    send(&mut s, 5, &syn_from_peer());
    expect(&mut s, 5, &[synack]);
    send(&mut s, 20, &send_templ());
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.remote_endpoint(), Some(remote()));
    expect_nothing(&mut s, 20);
}

#[test]
fn simultaneous_open() {
    let mut s = socket(config());
    s.connect(at(0), local(), remote()).unwrap();
    force_iss(&mut s);
    assert_eq!(recv_all(&mut s, 0).len(), 1);
    send(&mut s, 5, &syn_from_peer());
    assert_eq!(s.state(), State::SynReceived);
    expect(
        &mut s,
        5,
        &[TcpRepr {
            control: TcpControl::Syn,
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            max_seg_size: Some(MSS as u16),
            ..recv_templ()
        }],
    );
    send(
        &mut s,
        10,
        &TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            ..send_templ()
        },
    );
    // Its SYN-ACK repeats the SYN we already have: acknowledge, then its ACK opens.
    send(&mut s, 11, &send_templ());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn syn_options_are_offered_and_negotiated() {
    let mut s = socket(TcpConfig {
        rx_buffer_size: 1 << 20,
        window_scaling: true,
        timestamps: true,
        sack: true,
        ..config()
    });
    s.connect(at(0), local(), remote()).unwrap();
    force_iss(&mut s);
    let syn = recv_all(&mut s, 0).remove(0).repr;
    assert_eq!(syn.window_scale, Some(5), "1 MiB needs a shift of 5");
    assert_eq!(syn.window_len, u16::MAX);
    assert!(syn.sack_permitted);
    let tsval = syn.timestamp.unwrap().tsval;
    send(
        &mut s,
        30,
        &TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            window_len: 1000,
            window_scale: Some(7),
            sack_permitted: true,
            max_seg_size: Some(MSS as u16),
            timestamp: Some(TcpTimestamp {
                tsval: 777,
                tsecr: tsval,
            }),
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.smoothed_rtt(), Some(Duration::from_millis(30)));
    // The SYN-ACK's window is not scaled; later ones are shifted by 7.
    assert_eq!(s.snd_wnd, 1000);
    let ack = recv_all(&mut s, 30).remove(0).repr;
    // The window starts at the initial one; autotuning grows it towards the 1 MiB buffer.
    assert_eq!(
        ack.window_len,
        (TcpConfig::INITIAL_RECEIVE_WINDOW >> 5) as u16
    );
    assert_eq!(
        ack.timestamp,
        Some(TcpTimestamp {
            tsval: tsval.wrapping_add(30),
            tsecr: 777
        })
    );
    send(
        &mut s,
        31,
        &TcpRepr {
            window_len: 1000,
            timestamp: Some(TcpTimestamp {
                tsval: 778,
                tsecr: 0,
            }),
            ..send_templ()
        },
    );
    assert_eq!(s.snd_wnd, 128_000);
    // Every data segment leaves room for the 12-byte timestamp option.
    s.send(&BULK[..MSS]).unwrap();
    let outs = recv_all(&mut s, 31);
    assert_eq!(outs[0].payload.len(), MSS - 12);
}

/// A window scale shift above 14 in a segment handed to `process` is taken as 14 (RFC 7323
/// section 2.3) instead of overflowing the window computation (found by the `net_tcp` fuzz
/// target: a SYN with shift 200, then an ACK, panicked with "attempt to shift left with
/// overflow").
#[test]
fn a_window_scale_above_14_is_taken_as_14() {
    let mut s = established_with(
        TcpConfig {
            window_scaling: true,
            ..config()
        },
        TcpRepr {
            window_scale: Some(200),
            ..syn_from_peer()
        },
    );
    send(
        &mut s,
        1,
        &TcpRepr {
            window_len: 3,
            ..send_templ()
        },
    );
    assert_eq!(s.snd_wnd, 3 << 14);
}

#[test]
fn peer_without_options_gets_none() {
    let s = established_with(
        TcpConfig {
            window_scaling: true,
            timestamps: true,
            sack: true,
            ..config()
        },
        syn_from_peer(),
    );
    assert!(!s.ws_enabled && !s.ts_enabled && !s.sack_enabled);
    assert_eq!(s.rcv_wscale, 0);
}

// ---------------------------------------------------------------------------------------------
// Data.

#[test]
fn sends_data_and_frees_buffer_on_ack() {
    let mut s = established();
    assert_eq!(s.send(b"abcdef"), Ok(6));
    assert_eq!(s.send_capacity(), BUF - 6);
    expect(
        &mut s,
        0,
        &[TcpRepr {
            control: TcpControl::Psh,
            payload: b"abcdef",
            ..recv_templ()
        }],
    );
    expect_nothing(&mut s, 0);
    send(&mut s, 10, &ack_from_peer(6));
    assert_eq!(s.send_queue(), 0);
    assert_eq!(s.take_events(), Events::WRITABLE);
    // Only the idle-release timer is left, set when data first moved and rearmed for a
    // second after it last did; then the empty buffer's storage is freed.
    assert_ne!(s.buffer_memory(), 0);
    assert_eq!(s.poll_at(), Some(at(1000)));
    expect_nothing(&mut s, 1000);
    assert_eq!(s.poll_at(), Some(at(1010)));
    expect_nothing(&mut s, 1009);
    assert_ne!(s.buffer_memory(), 0);
    expect_nothing(&mut s, 1010);
    assert_eq!(s.buffer_memory(), 0);
    assert_eq!(
        s.poll_at(),
        None,
        "nothing outstanding or to free, no timer"
    );
    // The capacity stays: the next data is queued as before.
    assert_eq!(s.send(b"ghi"), Ok(3));
    assert_eq!(s.send_capacity(), BUF - 3);
}

#[test]
fn the_send_buffer_grows_with_the_congestion_window() {
    const LIMIT: usize = 1 << 20;
    let mut s = established_with(
        TcpConfig {
            tx_buffer_size: LIMIT,
            ..config()
        },
        syn_from_peer(),
    );
    let capacity = |s: &TcpSocket| s.send_capacity() + s.send_queue();
    assert_eq!(capacity(&s), TcpConfig::INITIAL_SEND_BUFFER);
    let chunk = [0x5a; MSS];
    let mut sent = 0;
    let mut last = capacity(&s);
    for round in 1..=30 {
        let ms = 10 * round;
        while s.send(&chunk).unwrap() > 0 {}
        sent += recv_all(&mut s, ms)
            .iter()
            .map(|o| o.payload.len())
            .sum::<usize>();
        send(&mut s, ms + 5, &ack_from_peer(sent));
        // Twice the window, a power of two, never less than it started or more than the
        // configured size, and never smaller than before.
        let wanted = (2 * s.congestion_window()).next_power_of_two();
        let now = capacity(&s);
        assert_eq!(
            now,
            wanted
                .clamp(TcpConfig::INITIAL_SEND_BUFFER, LIMIT)
                .max(last),
            "round {round}: cwnd {}",
            s.congestion_window()
        );
        last = now;
    }
    assert!(last > TcpConfig::INITIAL_SEND_BUFFER, "it grew: {last}");
}

#[test]
fn a_read_receive_buffer_is_freed_a_second_after_data_last_came() {
    let mut s = established();
    send(&mut s, 100, &data_from_peer(0, b"hello"));
    recv_all(&mut s, 100);
    assert_ne!(s.buffer_memory(), 0);
    // Unread bytes keep the buffer, and no timer wakes for it.
    assert_eq!(s.poll_at(), None);
    expect_nothing(&mut s, 5000);
    assert_ne!(s.buffer_memory(), 0);
    let mut buf = [0u8; 8];
    assert_eq!(s.recv(&mut buf), Ok(5));
    // Read now, but data came at 100: the timer armed then still stands, and frees it.
    assert_eq!(s.poll_at(), Some(at(1100)));
    expect_nothing(&mut s, 5000);
    assert_eq!(s.buffer_memory(), 0);
    assert_eq!(s.poll_at(), None);
    // The next data is taken as before.
    send(&mut s, 6000, &data_from_peer(5, b"again"));
    assert_eq!(s.recv(&mut buf), Ok(5));
    assert_eq!(&buf[..5], b"again");
}

#[test]
fn send_accepts_only_what_fits() {
    let mut s = established();
    let big = vec![7u8; BUF + 100];
    assert_eq!(s.send(&big), Ok(BUF));
    assert!(!s.can_send());
    assert_eq!(s.send(b"x"), Ok(0));
}

#[test]
fn receives_data_and_acks_immediately_without_delay() {
    let mut s = established();
    send(&mut s, 0, &data_from_peer(0, b"hello"));
    assert_eq!(s.take_events(), Events::READABLE);
    expect(
        &mut s,
        0,
        &[TcpRepr {
            ack_number: Some(REMOTE_SEQ + 6),
            window_len: (BUF - 5) as u16,
            ..recv_templ()
        }],
    );
    let mut buf = [0u8; 16];
    assert_eq!(s.recv(&mut buf), Ok(5));
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(s.recv(&mut buf), Ok(0));
}

#[test]
fn delayed_ack_waits_40ms_or_for_a_stretch_of_full_segments() {
    let mut s = established_with(
        TcpConfig {
            delayed_ack: Some(Duration::from_millis(40)),
            ack_every: 4,
            ..config()
        },
        syn_from_peer(),
    );
    let ack = |upto: usize| TcpRepr {
        ack_number: Some(REMOTE_SEQ + 1 + upto),
        window_len: (BUF - upto) as u16,
        ..recv_templ()
    };
    send(&mut s, 0, &data_from_peer(0, b"abc"));
    expect_nothing(&mut s, 0);
    assert_eq!(s.poll_at(), Some(at(40)));
    expect_nothing(&mut s, 39);
    expect(&mut s, 40, &[ack(3)]);
    // Full segments, one drain after each: the fourth is acknowledged at once, with the
    // three before it.
    for i in 0..3 {
        send(&mut s, 100, &data_from_peer(3 + i * MSS, &BULK[..MSS]));
        expect_nothing(&mut s, 100);
    }
    assert_eq!(s.poll_at(), Some(at(140)));
    send(&mut s, 101, &data_from_peer(3 + 3 * MSS, &BULK[..MSS]));
    expect(&mut s, 101, &[ack(3 + 4 * MSS)]);
    assert_eq!(s.poll_at(), None);
    // Out-of-order data is acknowledged at once.
    send(&mut s, 200, &data_from_peer(20 * MSS, b"xyz"));
    expect(&mut s, 200, &[ack(3 + 4 * MSS)]);
}

#[test]
fn a_batch_of_segments_between_drains_gets_one_stretch_ack() {
    let mut s = established_with(
        TcpConfig {
            delayed_ack: Some(Duration::from_millis(40)),
            ack_every: 4,
            ..config()
        },
        syn_from_peer(),
    );
    let ack = |upto: usize| TcpRepr {
        ack_number: Some(REMOTE_SEQ + 1 + upto),
        window_len: (BUF - upto) as u16,
        ..recv_templ()
    };
    // Six full segments read from the transport in one go: the fourth makes the ACK due,
    // and it leaves after the batch, covering all six.
    for i in 0..6 {
        send(&mut s, 0, &data_from_peer(i * MSS, &BULK[..MSS]));
    }
    expect(&mut s, 0, &[ack(6 * MSS)]);
    // A batch that ends in a pushed segment is acknowledged when it is drained, full-sized
    // or not: its sender has nothing more queued and may be waiting.
    send(&mut s, 10, &data_from_peer(6 * MSS, &BULK[..MSS]));
    send(
        &mut s,
        10,
        &TcpRepr {
            control: TcpControl::Psh,
            ..data_from_peer(7 * MSS, &BULK[..MSS])
        },
    );
    expect(&mut s, 10, &[ack(8 * MSS)]);
    // Without PSH, a short stretch waits for the delayed-ACK timer.
    send(&mut s, 20, &data_from_peer(8 * MSS, &BULK[..MSS]));
    expect_nothing(&mut s, 20);
    expect(&mut s, 60, &[ack(9 * MSS)]);
}

#[test]
fn quick_acks_resume_once_a_hole_is_filled() {
    let mut s = established_with(
        TcpConfig {
            delayed_ack: Some(Duration::from_millis(40)),
            quick_acks: 2,
            ack_every: 4,
            ..config()
        },
        syn_from_peer(),
    );
    let ack = |upto: usize| TcpRepr {
        ack_number: Some(REMOTE_SEQ + 1 + upto),
        window_len: (BUF - upto) as u16,
        ..recv_templ()
    };
    // Spend the quick ACKs.
    send(&mut s, 0, &data_from_peer(0, &BULK[..MSS]));
    send(&mut s, 0, &data_from_peer(MSS, &BULK[..MSS]));
    expect(&mut s, 0, &[ack(2 * MSS)]);
    // A segment is lost; the one after it is acknowledged at once (a duplicate ACK).
    send(&mut s, 1, &data_from_peer(3 * MSS, &BULK[..MSS]));
    expect(&mut s, 1, &[ack(2 * MSS)]);
    // Its retransmission fills the hole: acknowledged at once.
    send(&mut s, 2, &data_from_peer(2 * MSS, &BULK[..MSS]));
    expect(&mut s, 2, &[ack(4 * MSS)]);
    // The sender comes back with a small window: its next segments are acknowledged at once
    // too, instead of waiting for a stretch.
    send(&mut s, 3, &data_from_peer(4 * MSS, &BULK[..MSS]));
    expect(&mut s, 3, &[ack(5 * MSS)]);
    // Then stretch ACKs again.
    send(&mut s, 4, &data_from_peer(5 * MSS, &BULK[..MSS]));
    expect_nothing(&mut s, 4);
}

#[test]
fn quick_acks_at_the_start_and_after_idle_then_delayed() {
    let mut s = established_with(
        TcpConfig {
            delayed_ack: Some(Duration::from_millis(40)),
            quick_acks: 2,
            ..config()
        },
        syn_from_peer(),
    );
    let ack = |upto: usize| TcpRepr {
        ack_number: Some(REMOTE_SEQ + 1 + upto),
        window_len: (BUF - upto) as u16,
        ..recv_templ()
    };
    // A response head, then its body: both acknowledged at once, so a peer holding its body
    // back for the head's ACK (Nagle) never waits for the delayed-ACK timer.
    send(&mut s, 0, &data_from_peer(0, b"head"));
    expect(&mut s, 0, &[ack(4)]);
    send(&mut s, 1, &data_from_peer(4, b"body"));
    expect(&mut s, 1, &[ack(8)]);
    // The quick ACKs are spent: back to delayed ACKs.
    send(&mut s, 2, &data_from_peer(8, b"more"));
    expect_nothing(&mut s, 2);
    expect(&mut s, 42, &[ack(12)]);
    // After longer than the RTO without data, quick ACKs again.
    send(&mut s, 1_500, &data_from_peer(12, b"next"));
    expect(&mut s, 1_500, &[ack(16)]);
    send(&mut s, 1_501, &data_from_peer(16, b"then"));
    expect(&mut s, 1_501, &[ack(20)]);
    // The short end of a write (PSH) is acknowledged at once: its sender may be holding the
    // next small segment back for this ACK.
    send(
        &mut s,
        1_502,
        &TcpRepr {
            control: TcpControl::Psh,
            ..data_from_peer(20, b"tail")
        },
    );
    expect(&mut s, 1_502, &[ack(24)]);
}

#[test]
fn out_of_order_segments_are_reassembled() {
    let mut s = established();
    send(&mut s, 0, &data_from_peer(6, b"ghi"));
    send(&mut s, 0, &data_from_peer(3, b"def"));
    assert_eq!(s.recv_queue(), 0);
    assert_eq!(s.ooo.len(), 1);
    // Overlapping retransmission of the start fills the hole.
    send(&mut s, 0, &data_from_peer(0, b"abcd"));
    assert_eq!(s.recv_queue(), 9);
    let mut buf = [0u8; 16];
    assert_eq!(s.recv(&mut buf), Ok(9));
    assert_eq!(&buf[..9], b"abcdefghi");
    let outs = recv_all(&mut s, 0);
    assert_eq!(outs.last().unwrap().repr.ack_number, Some(REMOTE_SEQ + 10));
}

#[test]
fn sack_blocks_report_out_of_order_data() {
    let mut s = established_with(
        TcpConfig {
            sack: true,
            ..config()
        },
        TcpRepr {
            sack_permitted: true,
            ..syn_from_peer()
        },
    );
    send(&mut s, 0, &data_from_peer(100, &BULK[..50]));
    let block = |from: usize, to: usize| {
        Some(SackBlock {
            left: REMOTE_SEQ + 1 + from,
            right: REMOTE_SEQ + 1 + to,
        })
    };
    expect(
        &mut s,
        0,
        &[TcpRepr {
            sack_ranges: [block(100, 150), None, None],
            ..recv_templ()
        }],
    );
    send(&mut s, 1, &data_from_peer(300, &BULK[..10]));
    // The block of the latest segment comes first.
    expect(
        &mut s,
        1,
        &[TcpRepr {
            sack_ranges: [block(300, 310), block(100, 150), None],
            ..recv_templ()
        }],
    );
    send(&mut s, 2, &data_from_peer(0, &BULK[..100]));
    expect(
        &mut s,
        2,
        &[TcpRepr {
            ack_number: Some(REMOTE_SEQ + 151),
            window_len: (BUF - 150) as u16,
            sack_ranges: [block(300, 310), None, None],
            ..recv_templ()
        }],
    );
}

/// A socket that agreed on SACK with the peer, and the block `from..to` of the peer's
/// stream as a SACK option entry.
fn sack_established() -> TcpSocket {
    established_with(
        TcpConfig {
            sack: true,
            ..config()
        },
        TcpRepr {
            sack_permitted: true,
            ..syn_from_peer()
        },
    )
}

/// The acknowledgment of everything below `ack_offset` (nothing read yet) with these SACK
/// blocks, given as offsets in the peer's stream.
fn sack_ack(ack_offset: usize, blocks: &[(usize, usize)]) -> TcpRepr<'static> {
    let mut sack_ranges = [None; MAX_SACK_BLOCKS];
    for (slot, &(from, to)) in sack_ranges.iter_mut().zip(blocks) {
        *slot = Some(SackBlock {
            left: REMOTE_SEQ + 1 + from,
            right: REMOTE_SEQ + 1 + to,
        });
    }
    TcpRepr {
        ack_number: Some(REMOTE_SEQ + 1 + ack_offset),
        window_len: (BUF - ack_offset) as u16,
        sack_ranges,
        ..recv_templ()
    }
}

/// Five holes: the blocks go out in the order of RFC 2018 section 4, the block of the
/// latest segment first and then the blocks reported most recently, never simply the
/// lowest ones.
#[test]
fn sack_blocks_follow_the_order_of_reporting_with_more_than_three_holes() {
    let mut s = sack_established();
    // (segment from, segment to, the blocks of its acknowledgment)
    type Step = (usize, usize, &'static [(usize, usize)]);
    let steps: [Step; 5] = [
        (100, 110, &[(100, 110)]),
        (200, 210, &[(200, 210), (100, 110)]),
        (300, 310, &[(300, 310), (200, 210), (100, 110)]),
        // The fourth block pushes out the oldest, not a middle one.
        (400, 410, &[(400, 410), (300, 310), (200, 210)]),
        (500, 510, &[(500, 510), (400, 410), (300, 310)]),
    ];
    for (ms, (from, to, blocks)) in (1..).zip(steps) {
        send(&mut s, ms, &data_from_peer(from, &BULK[from..to]));
        expect(&mut s, ms, &[sack_ack(0, blocks)]);
    }
    // Growing an older block brings it to the front at its new extent.
    send(&mut s, 6, &data_from_peer(310, &BULK[310..320]));
    expect(
        &mut s,
        6,
        &[sack_ack(0, &[(300, 320), (500, 510), (400, 410)])],
    );
    // A segment joining two blocks reports the joined block first; the two it absorbed
    // leave the history, and the room left goes to the next most recent one.
    send(&mut s, 7, &data_from_peer(410, &BULK[410..500]));
    expect(
        &mut s,
        7,
        &[sack_ack(0, &[(400, 510), (300, 320), (200, 210)])],
    );
    // A duplicate of bytes already held is reported first as well (the segment that
    // triggered the acknowledgment), though it adds nothing.
    send(&mut s, 8, &data_from_peer(200, &BULK[200..205]));
    expect(
        &mut s,
        8,
        &[sack_ack(0, &[(200, 210), (400, 510), (300, 320)])],
    );
    // Retransmissions fill the holes from the bottom: each block rcv_nxt passes leaves the
    // report, the others keep their order.
    send(&mut s, 9, &data_from_peer(0, &BULK[0..100]));
    expect(
        &mut s,
        9,
        &[sack_ack(110, &[(200, 210), (400, 510), (300, 320)])],
    );
    send(&mut s, 10, &data_from_peer(110, &BULK[110..200]));
    expect(&mut s, 10, &[sack_ack(210, &[(400, 510), (300, 320)])]);
    send(&mut s, 11, &data_from_peer(210, &BULK[210..300]));
    expect(&mut s, 11, &[sack_ack(320, &[(400, 510)])]);
    send(&mut s, 12, &data_from_peer(320, &BULK[320..400]));
    expect(&mut s, 12, &[sack_ack(510, &[])]);
}

/// One batch of input opens five holes before the socket gets to send: the first ACK
/// carries the latest block and the two before it, and a second follows at once with the
/// two older ones, so that no block goes unreported (the peer would send its bytes again).
#[test]
fn sack_blocks_opened_in_one_batch_are_all_reported() {
    let mut s = sack_established();
    for from in [100, 200, 300, 400, 500] {
        send(&mut s, 1, &data_from_peer(from, &BULK[from..from + 10]));
    }
    expect(
        &mut s,
        1,
        &[
            sack_ack(0, &[(500, 510), (400, 410), (300, 310)]),
            sack_ack(0, &[(500, 510), (200, 210), (100, 110)]),
        ],
    );
    // Every block was reported: the next ACK is in the order of RFC 2018 alone.
    send(&mut s, 2, &data_from_peer(600, &BULK[600..610]));
    expect(
        &mut s,
        2,
        &[sack_ack(0, &[(600, 610), (500, 510), (400, 410)])],
    );
    // Without SACK, out-of-order data brings one ACK, however many holes it opened.
    let mut plain = established();
    for from in [100, 200, 300, 400, 500] {
        send(&mut plain, 1, &data_from_peer(from, &BULK[from..from + 10]));
    }
    expect(&mut plain, 1, &[sack_ack(0, &[])]);
}

/// A bulk transfer that lost one segment in each of four places: while later segments keep
/// growing the newest block, every acknowledgment repeats the three latest blocks, so the
/// sender keeps hearing about the middle ones (and does not send their bytes again).
#[test]
fn sack_blocks_keep_repeating_middle_blocks_while_the_newest_grows() {
    let mut s = sack_established();
    let segment = 100;
    let lost = [2, 5, 8, 11];
    let mut ms = 0;
    for index in 0..16 {
        ms += 1;
        if lost.contains(&index) {
            continue;
        }
        let from = index * segment;
        send(
            &mut s,
            ms,
            &data_from_peer(from, &BULK[from..from + segment]),
        );
        let got = recv_all(&mut s, ms);
        assert_eq!(got.len(), 1, "one acknowledgment per segment");
        let blocks: Vec<(usize, usize)> = got[0]
            .repr
            .sack_ranges
            .iter()
            .flatten()
            .map(|block| {
                (
                    block.left.bytes_since(REMOTE_SEQ + 1),
                    block.right.bytes_since(REMOTE_SEQ + 1),
                )
            })
            .collect();
        let want: &[(usize, usize)] = match index {
            0 | 1 => &[],
            3 | 4 => &[(300, index * segment + segment)],
            6 | 7 => &[(600, index * segment + segment), (300, 500)],
            9 | 10 => &[(900, index * segment + segment), (600, 800), (300, 500)],
            // The lowest block has dropped out; the middle ones are still reported.
            _ => &[(1200, index * segment + segment), (900, 1100), (600, 800)],
        };
        assert_eq!(blocks, want, "acknowledgment of segment {index}");
    }
}

#[test]
fn window_update_after_the_application_reads() {
    let mut s = established_with(
        TcpConfig {
            rx_buffer_size: 4000,
            ..config()
        },
        syn_from_peer(),
    );
    send(&mut s, 0, &data_from_peer(0, &BULK[..1460]));
    send(&mut s, 0, &data_from_peer(1460, &BULK[1460..2920]));
    send(&mut s, 0, &data_from_peer(2920, &BULK[2920..4000]));
    let outs = recv_all(&mut s, 0);
    assert_eq!(outs.last().unwrap().repr.window_len, 0);
    // Data past the window is not taken.
    send(&mut s, 1, &data_from_peer(4000, b"zz"));
    assert_eq!(recv_all(&mut s, 1).len(), 1);
    assert_eq!(s.recv_queue(), 4000);
    // Reading a little does not reopen a silly window...
    let mut buf = [0u8; 4000];
    assert_eq!(s.recv(&mut buf[..100]), Ok(100));
    expect_nothing(&mut s, 2);
    // ...reading enough sends a window update.
    assert_eq!(s.recv(&mut buf[..3000]), Ok(3000));
    expect(
        &mut s,
        3,
        &[TcpRepr {
            ack_number: Some(REMOTE_SEQ + 4001),
            window_len: 3100,
            ..recv_templ()
        }],
    );
}

// ---------------------------------------------------------------------------------------------
// Retransmission.

#[test]
fn rto_retransmits_with_exponential_backoff() {
    let mut s = established();
    s.send(b"abc").unwrap();
    let seg = TcpRepr {
        control: TcpControl::Psh,
        payload: b"abc",
        ..recv_templ()
    };
    expect(&mut s, 0, &[seg]);
    // The handshake measured an RTT of 0, so the RTO is the 200 ms minimum.
    assert_eq!(s.poll_at(), Some(at(200)));
    expect_nothing(&mut s, 199);
    expect(&mut s, 200, &[seg]);
    assert_eq!(s.poll_at(), Some(at(600)));
    expect_nothing(&mut s, 599);
    expect(&mut s, 600, &[seg]);
    assert_eq!(s.poll_at(), Some(at(1400)));
    expect(&mut s, 1400, &[seg]);
    assert_eq!(s.stats().timeouts, 3);
    assert_eq!(s.congestion_window(), MSS);
    send(&mut s, 1500, &ack_from_peer(3));
    assert_eq!(s.retransmission_timeout(), Duration::from_millis(200));
    // No retransmission timer; with the empty buffers freed, no timer at all.
    s.release_idle_buffers();
    assert_eq!(s.poll_at(), None);
}

#[test]
fn karn_ignores_rtt_of_retransmitted_segments() {
    let mut s = established();
    assert_eq!(s.smoothed_rtt(), Some(Duration::ZERO));
    s.send(b"abc").unwrap();
    recv_all(&mut s, 0);
    assert_eq!(recv_all(&mut s, 200).len(), 1);
    // This ACK may be for the original or the copy: no sample.
    send(&mut s, 250, &ack_from_peer(3));
    assert_eq!(s.smoothed_rtt(), Some(Duration::ZERO));
    s.send(b"def").unwrap();
    recv_all(&mut s, 300);
    send(&mut s, 380, &ack_from_peer(6));
    assert_eq!(s.smoothed_rtt(), Some(Duration::from_millis(10)));
}

#[test]
fn too_many_retransmissions_abort_with_timeout() {
    let mut s = established_with(
        TcpConfig {
            max_retransmissions: 2,
            ..config()
        },
        syn_from_peer(),
    );
    s.send(b"abc").unwrap();
    recv_all(&mut s, 0);
    assert_eq!(recv_all(&mut s, 200).len(), 1);
    assert_eq!(recv_all(&mut s, 600).len(), 1);
    s.take_events();
    expect_nothing(&mut s, 1400);
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.error(), Some(ConnectionError::TimedOut));
    assert!(s.take_events().contains(Events::CLOSED));
    assert_eq!(s.send(b"x"), Err(SendError::InvalidState));
}

#[test]
fn syn_retransmissions_then_connect_timeout() {
    let mut s = socket(TcpConfig {
        max_syn_retransmissions: 2,
        ..config()
    });
    s.connect(at(0), local(), remote()).unwrap();
    assert_eq!(recv_all(&mut s, 0).len(), 1);
    assert_eq!(s.poll_at(), Some(at(1000)));
    assert_eq!(recv_all(&mut s, 1000).len(), 1);
    assert_eq!(s.poll_at(), Some(at(3000)));
    assert_eq!(recv_all(&mut s, 3000).len(), 1);
    assert_eq!(s.poll_at(), Some(at(7000)));
    expect_nothing(&mut s, 7000);
    assert_eq!(s.error(), Some(ConnectionError::TimedOut));
}

fn send_bulk(s: &mut TcpSocket, segments: usize) {
    s.send(&BULK[..segments * MSS]).unwrap();
    let outs = recv_all(s, 0);
    assert_eq!(outs.len(), segments);
}

#[test]
fn fast_retransmit_on_three_duplicate_acks_then_new_reno_partial_ack() {
    let mut s = established();
    send_bulk(&mut s, 6);
    send(&mut s, 10, &ack_from_peer(MSS));
    expect_nothing(&mut s, 10);
    // Segments 2 and 4 were lost; 3, 5 and 6 arrive and each produces a duplicate ACK.
    send(&mut s, 11, &ack_from_peer(MSS));
    send(&mut s, 11, &ack_from_peer(MSS));
    expect_nothing(&mut s, 11);
    send(&mut s, 12, &ack_from_peer(MSS));
    expect(&mut s, 12, &[bulk_segment(MSS, 2 * MSS, false)]);
    assert_eq!(s.stats().fast_recoveries, 1);
    // ssthresh is half of the five segments in flight.
    assert_eq!(s.congestion_window(), 5 * MSS / 2);
    // The retransmission fills the first hole; the ACK stops at the second: NewReno
    // retransmits it at once, without waiting for more duplicates.
    send(&mut s, 20, &ack_from_peer(3 * MSS));
    expect(&mut s, 20, &[bulk_segment(3 * MSS, 4 * MSS, false)]);
    send(&mut s, 30, &ack_from_peer(6 * MSS));
    assert!(!s.in_recovery);
    assert_eq!(s.send_queue(), 0);
    assert_eq!(s.stats().timeouts, 0);
}

#[test]
fn two_duplicate_acks_are_not_enough() {
    let mut s = established();
    send_bulk(&mut s, 4);
    send(&mut s, 10, &ack_from_peer(MSS));
    send(&mut s, 11, &ack_from_peer(MSS));
    send(&mut s, 11, &ack_from_peer(MSS));
    expect_nothing(&mut s, 11);
    // A window change is not a duplicate either.
    send(
        &mut s,
        11,
        &TcpRepr {
            window_len: 30_000,
            ..ack_from_peer(MSS)
        },
    );
    expect_nothing(&mut s, 11);
    assert_eq!(s.stats().fast_recoveries, 0);
}

#[test]
fn sack_scoreboard_retransmits_only_the_holes() {
    let mut s = established_with(
        TcpConfig {
            sack: true,
            ..config()
        },
        TcpRepr {
            sack_permitted: true,
            ..syn_from_peer()
        },
    );
    send_bulk(&mut s, 8);
    let sack = |blocks: &[(usize, usize)]| {
        let mut ranges = [None; MAX_SACK_BLOCKS];
        for (slot, &(from, to)) in ranges.iter_mut().zip(blocks) {
            *slot = Some(SackBlock {
                left: LOCAL_SEQ + 1 + from * MSS,
                right: LOCAL_SEQ + 1 + to * MSS,
            });
        }
        TcpRepr {
            sack_ranges: ranges,
            ..ack_from_peer(MSS)
        }
    };
    // Segments 2 and 5 were lost (numbered from 1). One SACK of two segments: not yet.
    send(&mut s, 10, &sack(&[(2, 4)]));
    expect_nothing(&mut s, 10);
    // Three segments SACKed: recovery starts and only the holes go out, lowest first.
    send(&mut s, 11, &sack(&[(5, 6), (2, 4)]));
    expect(
        &mut s,
        11,
        &[
            bulk_segment(MSS, 2 * MSS, false),
            bulk_segment(4 * MSS, 5 * MSS, false),
        ],
    );
    send(&mut s, 12, &sack(&[(5, 8), (2, 4)]));
    expect_nothing(&mut s, 12);
    assert_eq!(s.stats().retransmitted_segments, 2);
    send(&mut s, 20, &ack_from_peer(8 * MSS));
    assert!(!s.in_recovery);
    assert_eq!(s.send_queue(), 0);
}

#[test]
fn zero_window_is_probed_with_backoff() {
    let mut s = established();
    send(
        &mut s,
        0,
        &TcpRepr {
            window_len: 0,
            ..send_templ()
        },
    );
    s.send(b"abc").unwrap();
    expect_nothing(&mut s, 0);
    assert_eq!(s.poll_at(), Some(at(200)));
    let probe = TcpRepr {
        seq_number: LOCAL_SEQ,
        ..recv_templ()
    };
    expect(&mut s, 200, &[probe]);
    send(
        &mut s,
        210,
        &TcpRepr {
            window_len: 0,
            ..send_templ()
        },
    );
    assert_eq!(s.poll_at(), Some(at(600)));
    expect(&mut s, 600, &[probe]);
    assert_eq!(s.poll_at(), Some(at(1400)));
    assert_eq!(s.stats().window_probes, 2);
    // The window opens: the data goes at once.
    send(&mut s, 700, &send_templ());
    assert_eq!(s.poll_at(), Some(Instant::ZERO));
    expect(
        &mut s,
        700,
        &[TcpRepr {
            control: TcpControl::Psh,
            payload: b"abc",
            ..recv_templ()
        }],
    );
}

#[test]
fn small_window_is_not_filled_with_silly_segments() {
    let mut s = established();
    s.send(&BULK[..3 * MSS]).unwrap();
    recv_all(&mut s, 0);
    // The peer acknowledges everything but offers 100 bytes only.
    send(
        &mut s,
        10,
        &TcpRepr {
            window_len: 100,
            ..ack_from_peer(3 * MSS)
        },
    );
    s.send(&BULK[..MSS]).unwrap();
    expect_nothing(&mut s, 10);
    // The persist timer overrides the avoidance.
    let outs = recv_all(&mut s, 210);
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].payload.len(), 100);
}

// ---------------------------------------------------------------------------------------------
// Closing.

#[test]
fn active_close_fin_wait_time_wait() {
    let mut s = established();
    s.close();
    assert_eq!(s.state(), State::FinWait1);
    assert_eq!(s.send(b"x"), Err(SendError::InvalidState));
    let fin = TcpRepr {
        control: TcpControl::Fin,
        ..recv_templ()
    };
    expect(&mut s, 0, &[fin]);
    send(&mut s, 10, &ack_from_peer(1));
    assert_eq!(s.state(), State::FinWait2);
    // The peer can still send.
    send(
        &mut s,
        20,
        &TcpRepr {
            ack_number: Some(LOCAL_SEQ + 2),
            ..data_from_peer(0, b"late")
        },
    );
    let mut buf = [0u8; 8];
    assert_eq!(s.recv(&mut buf), Ok(4));
    recv_all(&mut s, 20);
    send(
        &mut s,
        30,
        &TcpRepr {
            control: TcpControl::Fin,
            seq_number: REMOTE_SEQ + 5,
            ..ack_from_peer(1)
        },
    );
    assert_eq!(s.state(), State::TimeWait);
    assert!(s.take_events().contains(Events::CLOSED));
    // The FIN takes a sequence number but no buffer space; the window's right edge stays.
    let last_ack = TcpRepr {
        seq_number: LOCAL_SEQ + 2,
        ack_number: Some(REMOTE_SEQ + 6),
        window_len: (BUF - 5) as u16,
        ..recv_templ()
    };
    expect(&mut s, 30, &[last_ack]);
    assert_eq!(s.recv(&mut buf), Err(RecvError::Finished));
    // A repeated FIN is acknowledged again and restarts the timer.
    send(
        &mut s,
        1000,
        &TcpRepr {
            control: TcpControl::Fin,
            seq_number: REMOTE_SEQ + 5,
            ..ack_from_peer(1)
        },
    );
    expect(&mut s, 1000, &[last_ack]);
    assert_eq!(s.poll_at(), Some(at(61_000)));
    expect_nothing(&mut s, 60_999);
    assert_eq!(s.state(), State::TimeWait);
    expect_nothing(&mut s, 61_000);
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.error(), None);
}

#[test]
fn passive_close_close_wait_last_ack() {
    let mut s = established();
    send(
        &mut s,
        0,
        &TcpRepr {
            control: TcpControl::Fin,
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::CloseWait);
    assert!(s.take_events().contains(Events::READABLE));
    assert_eq!(s.recv(&mut [0; 4]), Err(RecvError::Finished));
    expect(
        &mut s,
        0,
        &[TcpRepr {
            ack_number: Some(REMOTE_SEQ + 2),
            window_len: (BUF - 1) as u16,
            ..recv_templ()
        }],
    );
    // We may still send after the peer's FIN.
    s.send(b"bye").unwrap();
    s.close();
    assert_eq!(s.state(), State::LastAck);
    expect(
        &mut s,
        1,
        &[TcpRepr {
            control: TcpControl::Fin,
            ack_number: Some(REMOTE_SEQ + 2),
            window_len: (BUF - 1) as u16,
            payload: b"bye",
            ..recv_templ()
        }],
    );
    send(
        &mut s,
        10,
        &TcpRepr {
            seq_number: REMOTE_SEQ + 2,
            ..ack_from_peer(4)
        },
    );
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.error(), None);
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut s = established();
    s.close();
    recv_all(&mut s, 0);
    // The peer's FIN crosses ours: it does not acknowledge our FIN.
    send(
        &mut s,
        5,
        &TcpRepr {
            control: TcpControl::Fin,
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::Closing);
    expect(
        &mut s,
        5,
        &[TcpRepr {
            seq_number: LOCAL_SEQ + 2,
            ack_number: Some(REMOTE_SEQ + 2),
            window_len: (BUF - 1) as u16,
            ..recv_templ()
        }],
    );
    send(
        &mut s,
        10,
        &TcpRepr {
            seq_number: REMOTE_SEQ + 2,
            ..ack_from_peer(1)
        },
    );
    assert_eq!(s.state(), State::TimeWait);
}

#[test]
fn fin_with_ack_in_fin_wait_1_goes_straight_to_time_wait() {
    let mut s = established();
    s.close();
    recv_all(&mut s, 0);
    send(
        &mut s,
        5,
        &TcpRepr {
            control: TcpControl::Fin,
            ..ack_from_peer(1)
        },
    );
    assert_eq!(s.state(), State::TimeWait);
}

#[test]
fn lost_fin_is_retransmitted() {
    let mut s = established();
    s.send(b"ab").unwrap();
    s.close();
    let fin = TcpRepr {
        control: TcpControl::Fin,
        payload: b"ab",
        ..recv_templ()
    };
    expect(&mut s, 0, &[fin]);
    // The data arrived, the FIN did not; the ACK restarted the timer.
    send(&mut s, 10, &ack_from_peer(2));
    assert_eq!(s.state(), State::FinWait1);
    expect_nothing(&mut s, 209);
    expect(
        &mut s,
        210,
        &[TcpRepr {
            control: TcpControl::Fin,
            seq_number: LOCAL_SEQ + 3,
            ..recv_templ()
        }],
    );
    send(&mut s, 220, &ack_from_peer(3));
    assert_eq!(s.state(), State::FinWait2);
}

#[test]
fn close_in_syn_received_sends_fin_after_handshake() {
    let mut s = socket(config());
    s.listen(local()).unwrap();
    send(&mut s, 0, &syn_from_peer());
    force_iss(&mut s);
    recv_all(&mut s, 0);
    s.close();
    assert_eq!(s.state(), State::SynReceived);
    send(&mut s, 1, &send_templ());
    assert_eq!(s.state(), State::FinWait1);
    expect(
        &mut s,
        1,
        &[TcpRepr {
            control: TcpControl::Fin,
            ..recv_templ()
        }],
    );
}

#[test]
fn close_while_connecting_sends_fin_after_handshake() {
    let mut s = socket(config());
    s.connect(at(0), local(), remote()).unwrap();
    force_iss(&mut s);
    s.send(b"early").unwrap();
    s.close();
    assert_eq!(s.state(), State::SynSent);
    assert_eq!(recv_all(&mut s, 0).len(), 1);
    send(
        &mut s,
        10,
        &TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            max_seg_size: Some(MSS as u16),
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::FinWait1);
    expect(
        &mut s,
        10,
        &[TcpRepr {
            control: TcpControl::Fin,
            payload: b"early",
            ..recv_templ()
        }],
    );
}

#[test]
fn close_while_listening_closes_and_abort_cancels_a_connect() {
    let mut s = socket(config());
    s.listen(local()).unwrap();
    s.close();
    assert_eq!(s.state(), State::Closed);
    s.connect(at(0), local(), remote()).unwrap();
    recv_all(&mut s, 0);
    s.abort();
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.error(), Some(ConnectionError::Aborted));
    expect_nothing(&mut s, 0);
}

// ---------------------------------------------------------------------------------------------
// Resets and errors.

#[test]
fn rst_on_syn_means_refused() {
    let mut s = socket(config());
    s.connect(at(0), local(), remote()).unwrap();
    force_iss(&mut s);
    recv_all(&mut s, 0);
    send(
        &mut s,
        5,
        &TcpRepr {
            control: TcpControl::Rst,
            seq_number: SeqNumber(0),
            ack_number: Some(LOCAL_SEQ + 1),
            window_len: 0,
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.error(), Some(ConnectionError::Refused));
    assert!(s.take_events().contains(Events::CLOSED));
}

#[test]
fn syn_ack_with_bad_ack_is_answered_with_rst() {
    let mut s = socket(config());
    s.connect(at(0), local(), remote()).unwrap();
    force_iss(&mut s);
    recv_all(&mut s, 0);
    let reply = s.process(
        at(5),
        remote(),
        local(),
        &TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            ack_number: Some(LOCAL_SEQ + 100),
            ..send_templ()
        },
    );
    assert_eq!(
        reply,
        Some(TcpRepr {
            control: TcpControl::Rst,
            seq_number: LOCAL_SEQ + 100,
            ack_number: None,
            window_len: 0,
            ..recv_templ()
        })
    );
    assert_eq!(s.state(), State::SynSent);
}

#[test]
fn exact_rst_resets_and_inexact_rst_is_challenged() {
    let mut s = established();
    send(
        &mut s,
        5,
        &TcpRepr {
            control: TcpControl::Rst,
            seq_number: REMOTE_SEQ + 100,
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::Established);
    expect(&mut s, 5, &[recv_templ()]);
    send(
        &mut s,
        6,
        &TcpRepr {
            control: TcpControl::Rst,
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.error(), Some(ConnectionError::Reset));
    assert_eq!(s.recv(&mut [0; 4]), Err(RecvError::InvalidState));
}

#[test]
fn syn_in_established_gets_a_challenge_ack() {
    let mut s = established();
    send(
        &mut s,
        5,
        &TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ + 10,
            ack_number: None,
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::Established);
    expect(&mut s, 5, &[recv_templ()]);
}

#[test]
fn rst_in_syn_received_returns_to_listen() {
    let mut s = socket(config());
    s.listen(local()).unwrap();
    send(&mut s, 0, &syn_from_peer());
    force_iss(&mut s);
    recv_all(&mut s, 0);
    send(
        &mut s,
        1,
        &TcpRepr {
            control: TcpControl::Rst,
            ack_number: None,
            ..send_templ()
        },
    );
    assert_eq!(s.state(), State::Listen);
    assert_eq!(s.error(), None);
    expect_nothing(&mut s, 1);
}

#[test]
fn ack_to_listening_socket_is_reset() {
    let mut s = socket(config());
    s.listen(local()).unwrap();
    let reply = s.process(at(0), remote(), local(), &send_templ());
    assert_eq!(
        reply,
        Some(TcpRepr {
            control: TcpControl::Rst,
            seq_number: LOCAL_SEQ + 1,
            ack_number: None,
            window_len: 0,
            ..recv_templ()
        })
    );
    assert_eq!(s.state(), State::Listen);
}

#[test]
fn abort_sends_rst() {
    let mut s = established();
    s.abort();
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.error(), Some(ConnectionError::Aborted));
    expect(
        &mut s,
        0,
        &[TcpRepr {
            control: TcpControl::Rst,
            window_len: 0,
            ..recv_templ()
        }],
    );
    expect_nothing(&mut s, 0);
}

#[test]
fn unreachable_fails_a_pending_connect_only() {
    let mut s = socket(config());
    s.connect(at(0), local(), remote()).unwrap();
    recv_all(&mut s, 0);
    s.on_unreachable();
    assert_eq!(s.error(), Some(ConnectionError::Unreachable));
    let mut open = established();
    open.on_unreachable();
    assert_eq!(open.state(), State::Established);
}

#[test]
fn keepalive_probes_then_times_out() {
    let mut s = established_with(
        TcpConfig {
            keep_alive: Some(Duration::from_secs(10)),
            keep_alive_probes: 2,
            ..config()
        },
        syn_from_peer(),
    );
    send(&mut s, 0, &data_from_peer(0, b"x"));
    recv_all(&mut s, 0);
    assert_eq!(s.poll_at(), Some(at(10_000)));
    let probe = TcpRepr {
        seq_number: LOCAL_SEQ,
        ack_number: Some(REMOTE_SEQ + 2),
        window_len: (BUF - 1) as u16,
        ..recv_templ()
    };
    expect(&mut s, 10_000, &[probe]);
    // An answer resets the count.
    send(&mut s, 10_010, &data_from_peer(1, b""));
    assert_eq!(s.poll_at(), Some(at(20_010)));
    expect(&mut s, 20_010, &[probe]);
    expect(&mut s, 30_010, &[probe]);
    expect_nothing(&mut s, 40_010);
    assert_eq!(s.error(), Some(ConnectionError::TimedOut));
}

#[test]
fn segment_to_closed_socket_is_reset() {
    let mut s = socket(config());
    let reply = s.process(at(0), remote(), local(), &data_from_peer(0, b"abc"));
    assert_eq!(
        reply,
        Some(TcpRepr {
            control: TcpControl::Rst,
            seq_number: LOCAL_SEQ + 1,
            ack_number: None,
            window_len: 0,
            ..recv_templ()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Robustness.

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Segment {
            control: u8,
            seq_delta: i32,
            ack_delta: Option<i32>,
            window: u16,
            len: usize,
            sack: Option<(i32, u16)>,
            tsval: Option<u32>,
        },
        Send(usize),
        Recv(usize),
        Wait(u64),
        Close,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (
                0u8..5,
                prop_oneof![-3000i32..3000, -70_000i32..70_000],
                proptest::option::of(prop_oneof![-100i32..20_000, -70_000i32..70_000]),
                any::<u16>(),
                0usize..3000,
                proptest::option::of((-5000i32..70_000, any::<u16>())),
                proptest::option::of(any::<u32>()),
            )
                .prop_map(|(control, seq_delta, ack_delta, window, len, sack, tsval)| {
                    Step::Segment { control, seq_delta, ack_delta, window, len, sack, tsval }
                }),
            1 => (0usize..10_000).prop_map(Step::Send),
            1 => (0usize..10_000).prop_map(Step::Recv),
            1 => (0u64..5_000).prop_map(Step::Wait),
            1 => Just(Step::Close),
        ]
    }

    proptest! {
        /// Whatever the peer sends, in whatever order, the socket neither panics nor breaks
        /// its own bookkeeping, and `dispatch` always comes to an end.
        #[test]
        fn arbitrary_segments_never_break_the_socket(steps in proptest::collection::vec(step(), 1..60)) {
            let mut s = established_with(
                TcpConfig { sack: true, timestamps: true, window_scaling: true,
                            delayed_ack: Some(Duration::from_millis(40)), ..config() },
                TcpRepr {
                    sack_permitted: true,
                    window_scale: Some(3),
                    timestamp: Some(TcpTimestamp { tsval: 1, tsecr: 0 }),
                    ..syn_from_peer()
                },
            );
            let mut now = 0u64;
            let mut buf = vec![0u8; 10_000];
            for step in steps {
                match step {
                    Step::Segment { control, seq_delta, ack_delta, window, len, sack, tsval } => {
                        let control = [TcpControl::None, TcpControl::Psh, TcpControl::Syn,
                                       TcpControl::Fin, TcpControl::Rst][usize::from(control)];
                        let base_ack = s.snd_una;
                        let mut sack_ranges = [None; MAX_SACK_BLOCKS];
                        if let Some((left, len)) = sack {
                            let left = SeqNumber(base_ack.0.wrapping_add(left as u32));
                            sack_ranges[0] = Some(SackBlock { left, right: left + usize::from(len) });
                        }
                        let seg = TcpRepr {
                            control,
                            seq_number: SeqNumber(s.rcv_nxt.0.wrapping_add(seq_delta as u32)),
                            ack_number: ack_delta.map(|d| SeqNumber(base_ack.0.wrapping_add(d as u32))),
                            window_len: window,
                            payload: &BULK[..len],
                            sack_ranges,
                            timestamp: tsval.map(|tsval| TcpTimestamp { tsval, tsecr: 0 }),
                            ..send_templ()
                        };
                        let _ = s.process(at(now), remote(), local(), &seg);
                    }
                    Step::Send(n) => { let _ = s.send(&BULK[..n.min(BULK.len())]); }
                    Step::Recv(n) => { let _ = s.recv(&mut buf[..n]); }
                    Step::Wait(ms) => now += ms,
                    Step::Close => s.close(),
                }
                let mut emitted = 0;
                while let Some(len) = s.dispatch(at(now), |repr| repr.payload.len()) {
                    prop_assert!(len <= MSS);
                    emitted += 1;
                    prop_assert!(emitted < 10_000, "dispatch does not stop");
                }
                prop_assert!(s.snd_una <= s.snd_max);
                prop_assert!(s.tx.len() <= s.tx.capacity());
                prop_assert!(s.rx.len() <= s.rx.capacity());
                if let Some(at) = s.poll_at() {
                    // Nothing is ready to send right after a full drain.
                    prop_assert!(at != Instant::ZERO, "poll_at says now but dispatch is empty");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Receive-buffer autotuning and buffer memory.

static ZEROS: [u8; MSS] = [0; MSS];

/// Delivers `segments` full segments from stream offset `*offset` on, at `ms`.
fn deliver(s: &mut TcpSocket, ms: u64, offset: &mut usize, segments: usize) {
    for _ in 0..segments {
        let _ = s.process(at(ms), remote(), local(), &data_from_peer(*offset, &ZEROS));
        *offset += MSS;
    }
}

/// Rounds two seconds apart (longer than any RTT estimate here) in which the peer sends
/// `per_round` segments and the application reads `read_per_round` bytes; returns the receive
/// buffer's capacity after each round.
fn autotune_rounds(rounds: usize, per_round: usize, read_per_round: usize) -> Vec<usize> {
    let mut s = established_with(
        TcpConfig {
            rx_buffer_size: 1 << 20,
            ..config()
        },
        syn_from_peer(),
    );
    assert_eq!(
        s.receive_buffer_capacity(),
        TcpConfig::INITIAL_RECEIVE_WINDOW
    );
    let mut offset = 0;
    let mut buf = vec![0; 1 << 20];
    let mut capacities = Vec::new();
    for round in 0..rounds {
        let ms = 1000 + 2000 * round as u64;
        deliver(&mut s, ms, &mut offset, per_round);
        let mut read = 0;
        while read < read_per_round {
            let n = s.recv(&mut buf[..read_per_round - read]).unwrap();
            if n == 0 {
                break;
            }
            read += n;
        }
        let _ = recv_all(&mut s, ms);
        capacities.push(s.receive_buffer_capacity());
    }
    capacities
}

#[test]
fn receive_window_grows_while_the_application_keeps_up() {
    // 30 segments (43,800 bytes) a round, all read: more than half the window each time.
    let capacities = autotune_rounds(8, 30, 30 * MSS);
    assert_eq!(capacities[0], TcpConfig::INITIAL_RECEIVE_WINDOW);
    assert!(capacities.windows(2).all(|w| w[1] >= w[0]));
    assert!(
        capacities[2] > TcpConfig::INITIAL_RECEIVE_WINDOW,
        "no growth: {capacities:?}"
    );
    // It stops at the configured buffer size.
    let fast = autotune_rounds(20, 40, 40 * MSS);
    assert!(fast.iter().all(|&c| c <= 1 << 20));
}

#[test]
fn receive_window_stays_small_for_a_slow_reader() {
    // 10 segments a round, and only as much read: under half the window.
    let capacities = autotune_rounds(8, 10, 10 * MSS);
    assert!(
        capacities
            .iter()
            .all(|&c| c == TcpConfig::INITIAL_RECEIVE_WINDOW),
        "{capacities:?}"
    );
}

#[test]
fn buffers_grow_with_unread_data_and_are_freed_when_idle_or_reset() {
    let mut s = established_with(
        TcpConfig {
            rx_buffer_size: 1 << 20,
            tx_buffer_size: 1 << 20,
            ..config()
        },
        syn_from_peer(),
    );
    // Nothing is allocated before data comes.
    assert_eq!(s.buffer_memory(), 0);
    let mut offset = 0;
    deliver(&mut s, 10, &mut offset, 2);
    assert_eq!(s.buffer_memory(), RingBuffer::MIN_STORAGE);
    deliver(&mut s, 10, &mut offset, 20);
    let grown = s.buffer_memory();
    assert!((22 * MSS..=2 * 22 * MSS).contains(&grown), "{grown}");
    // Read promptly, the buffer does not grow further.
    let mut buf = vec![0; 1 << 16];
    while s.recv(&mut buf).unwrap() > 0 {}
    for _ in 0..20 {
        deliver(&mut s, 20, &mut offset, 2);
        while s.recv(&mut buf).unwrap() > 0 {}
    }
    assert_eq!(s.buffer_memory(), grown);
    assert_eq!(s.release_idle_buffers(), grown);
    assert_eq!(s.buffer_memory(), 0);
    // A queued send grows the send buffer; an abort frees everything.
    assert_eq!(s.send(&BULK).unwrap(), BULK.len());
    assert!(s.buffer_memory() >= BULK.len());
    s.abort();
    assert_eq!(s.buffer_memory(), 0);
}

#[test]
fn a_smaller_receive_share_closes_the_window_without_shrinking_it() {
    const SHARE: usize = 16 << 10;
    let mut s = established_with(
        TcpConfig {
            rx_buffer_size: 1 << 20,
            delayed_ack: None,
            ..config()
        },
        syn_from_peer(),
    );
    // The window promised so far (the initial 64 KiB) is kept when the share falls.
    s.set_receive_share(SHARE);
    let mut offset = 0;
    // Without window scaling the field stops at 65,535.
    let mut right_edge = TcpConfig::INITIAL_RECEIVE_WINDOW.min(usize::from(u16::MAX));
    let mut buf = vec![0; 1 << 16];
    let mut last_window = usize::MAX;
    for round in 0..30 {
        let ms = 10 + round;
        deliver(&mut s, ms, &mut offset, 4);
        // The application reads half of what it holds each round: data stays unread.
        let unread = s.recv_queue();
        let _ = s.recv(&mut buf[..unread / 2]).unwrap();
        for ack in recv_all(&mut s, ms) {
            let acked = ack.repr.ack_number.unwrap().bytes_since(REMOTE_SEQ + 1);
            let window = usize::from(ack.repr.window_len);
            assert!(
                acked + window >= right_edge,
                "round {round}: the right edge moved back from {right_edge} to {}",
                acked + window
            );
            right_edge = acked + window;
            last_window = window;
        }
    }
    // Once the old promise is used up, unread bytes plus the window stay within the share,
    // and the storage shrank to what the share needs.
    assert!(
        s.recv_queue() + last_window <= SHARE,
        "{} unread + window {last_window}",
        s.recv_queue()
    );
    assert!(s.buffer_memory() <= 2 * SHARE, "{}", s.buffer_memory());
}
