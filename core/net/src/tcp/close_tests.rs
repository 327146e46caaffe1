//! The close paths of RFC 9293 section 3.10.7.4 ("SEGMENT ARRIVES", synchronized states),
//! state by state. Each of FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT, CLOSING, LAST-ACK and
//! TIME-WAIT is reached by a scripted exchange; then one segment from the peer, the exact
//! answer (or none) and the state that follows, as a table. The timers of the closing states
//! have their own tests below; the stack's record of connections removed in TIME-WAIT is
//! tested in `stack.rs`.
//!
//! Sequence numbers: no data is exchanged before the close, so our FIN is `LOCAL_SEQ + 1` and
//! the peer's FIN is `REMOTE_SEQ + 1`.
//!
//! Choices where the RFCs leave room, and what Linux does:
//!
//! - An exact RST (at RCV.NXT) closes every state, TIME-WAIT included: RFC 9293 says so, and
//!   Linux does the same by default (`tcp_rfc1337 = 0`). RFC 1337 suggests ignoring RSTs in
//!   TIME-WAIT against old duplicates killing it early ("TIME-WAIT assassination"); the hazard
//!   needs the same four-tuple reused within 2 MSL, and an inexact RST cannot do it anyway
//!   (RFC 5961: it gets a challenge ACK, as in every synchronized state).
//! - A SYN in any of these states gets a challenge ACK (RFC 5961 section 4). Linux takes a SYN
//!   above RCV.NXT in TIME-WAIT as a new connection (RFC 1122 section 4.2.2.13 allows it); a
//!   socket here is one connection, so the peer's retry after our challenge ACK, or the
//!   stack's TIME-WAIT record once the socket is gone, takes the new connection.
//! - Data after the peer's FIN is ignored and acknowledged with what we have: the peer then
//!   learns where we stand (RFC 9293 says to ignore it; any segment that is not acceptable,
//!   or not understood, is answered with an ACK).

use super::tests::{
    BUF, LOCAL_SEQ, REMOTE_SEQ, at, config, established, expect, expect_nothing, local, recv_templ,
    remote, send, send_templ,
};
use super::*;
use Answer::{Ack, AckOf, Nothing};
use ConnectionError::Reset;
use Peer::{AckOfFin, Data, Fin, OutOfWindow, Rst, RstInWindow, Syn};
use State::{CloseWait, Closed, Closing, FinWait1, FinWait2, LastAck, TimeWait};

/// A socket in one of the closing states, and where its sequence spaces stand.
struct Reached {
    socket: TcpSocket,
    /// When the state was reached (ms).
    ms: u64,
    /// SND.NXT: our next sequence number (after our FIN once that was sent).
    snd_nxt: SeqNumber,
    /// RCV.NXT: what we acknowledge (after the peer's FIN once that arrived).
    rcv_nxt: SeqNumber,
    /// What the peer's segments acknowledge of ours.
    peer_ack: SeqNumber,
    /// The window our segments advertise (the peer's FIN takes a sequence number, not buffer
    /// space, yet the right edge of the window never moves left).
    window: u16,
}

const OUR_FIN: SeqNumber = SeqNumber(LOCAL_SEQ.0 + 1);
const PEER_FIN: SeqNumber = SeqNumber(REMOTE_SEQ.0 + 1);

/// The peer's FIN, acknowledging `ack`.
fn fin_from_peer(ack: SeqNumber) -> TcpRepr<'static> {
    TcpRepr {
        control: TcpControl::Fin,
        seq_number: PEER_FIN,
        ack_number: Some(ack),
        ..send_templ()
    }
}

/// Our FIN, acknowledging `rcv_nxt` with `window`.
fn our_fin(rcv_nxt: SeqNumber, window: u16) -> TcpRepr<'static> {
    TcpRepr {
        control: TcpControl::Fin,
        seq_number: OUR_FIN,
        ack_number: Some(rcv_nxt),
        window_len: window,
        ..recv_templ()
    }
}

/// Our pure ACK.
fn our_ack(seq: SeqNumber, ack: SeqNumber, window: u16) -> TcpRepr<'static> {
    TcpRepr {
        seq_number: seq,
        ack_number: Some(ack),
        window_len: window,
        ..recv_templ()
    }
}

/// Reaches `state` by the usual exchange, checking every segment on the way.
fn reach(state: State) -> Reached {
    let full = BUF as u16;
    let after_fin = (BUF - 1) as u16;
    let mut reached = match state {
        // We close first; our FIN goes out at 0.
        FinWait1 => {
            let mut s = established();
            s.close();
            expect(&mut s, 0, &[our_fin(PEER_FIN, full)]);
            Reached {
                socket: s,
                ms: 0,
                snd_nxt: OUR_FIN + 1,
                rcv_nxt: PEER_FIN,
                peer_ack: OUR_FIN,
                window: full,
            }
        }
        // The peer acknowledges our FIN at 10.
        FinWait2 => {
            let mut c = reach(FinWait1);
            send(&mut c.socket, 10, &ack_of(OUR_FIN + 1));
            expect_nothing(&mut c.socket, 10);
            Reached {
                ms: 10,
                peer_ack: OUR_FIN + 1,
                ..c
            }
        }
        // The peer closes first, at 0; we acknowledge its FIN.
        CloseWait => {
            let mut s = established();
            send(&mut s, 0, &fin_from_peer(OUR_FIN));
            expect(&mut s, 0, &[our_ack(OUR_FIN, PEER_FIN + 1, after_fin)]);
            Reached {
                socket: s,
                ms: 0,
                snd_nxt: OUR_FIN,
                rcv_nxt: PEER_FIN + 1,
                peer_ack: OUR_FIN,
                window: after_fin,
            }
        }
        // Both close at once: the peer's FIN, sent before ours arrived, comes at 5.
        Closing => {
            let mut c = reach(FinWait1);
            send(&mut c.socket, 5, &fin_from_peer(OUR_FIN));
            expect(
                &mut c.socket,
                5,
                &[our_ack(OUR_FIN + 1, PEER_FIN + 1, after_fin)],
            );
            Reached {
                ms: 5,
                rcv_nxt: PEER_FIN + 1,
                window: after_fin,
                ..c
            }
        }
        // After the peer's FIN, we close at 1.
        LastAck => {
            let mut c = reach(CloseWait);
            c.socket.close();
            expect(&mut c.socket, 1, &[our_fin(PEER_FIN + 1, after_fin)]);
            Reached {
                ms: 1,
                snd_nxt: OUR_FIN + 1,
                ..c
            }
        }
        // In FIN-WAIT-2, the peer's FIN comes at 20.
        TimeWait => {
            let mut c = reach(FinWait2);
            send(&mut c.socket, 20, &fin_from_peer(OUR_FIN + 1));
            expect(
                &mut c.socket,
                20,
                &[our_ack(OUR_FIN + 1, PEER_FIN + 1, after_fin)],
            );
            Reached {
                ms: 20,
                rcv_nxt: PEER_FIN + 1,
                window: after_fin,
                ..c
            }
        }
        _ => unreachable!("not a closing state: {state}"),
    };
    assert_eq!(reached.socket.state(), state);
    reached.socket.take_events();
    reached
}

/// A pure ACK from the peer, acknowledging `ack`, at the peer's current sequence number.
fn ack_of(ack: SeqNumber) -> TcpRepr<'static> {
    TcpRepr {
        seq_number: PEER_FIN,
        ack_number: Some(ack),
        ..send_templ()
    }
}

/// What the peer sends, in terms of where the connection stands.
#[derive(Clone, Copy, Debug)]
enum Peer {
    /// Its FIN: the first one in FIN-WAIT-1 and FIN-WAIT-2, a retransmission in the states
    /// after it arrived.
    Fin,
    /// Four bytes at RCV.NXT (after its FIN, once that arrived).
    Data,
    /// A pure ACK of our FIN (of something never sent before our FIN went out).
    AckOfFin,
    /// One byte beyond the right edge of our window.
    OutOfWindow,
    /// A RST at RCV.NXT.
    Rst,
    /// A RST inside the window, not at RCV.NXT.
    RstInWindow,
    /// A SYN inside the window.
    Syn,
}

impl Reached {
    fn segment(&self, peer: Peer) -> TcpRepr<'static> {
        let at_rcv_nxt = TcpRepr {
            seq_number: self.rcv_nxt,
            ack_number: Some(self.peer_ack),
            ..send_templ()
        };
        match peer {
            Fin => fin_from_peer(self.peer_ack),
            Data => TcpRepr {
                payload: b"late",
                ..at_rcv_nxt
            },
            AckOfFin => TcpRepr {
                ack_number: Some(OUR_FIN + 1),
                ..at_rcv_nxt
            },
            OutOfWindow => TcpRepr {
                seq_number: self.rcv_nxt + (BUF + 1000),
                payload: b"x",
                ..at_rcv_nxt
            },
            Rst => TcpRepr {
                control: TcpControl::Rst,
                ..at_rcv_nxt
            },
            RstInWindow => TcpRepr {
                control: TcpControl::Rst,
                seq_number: self.rcv_nxt + 100,
                ..at_rcv_nxt
            },
            Syn => TcpRepr {
                control: TcpControl::Syn,
                seq_number: self.rcv_nxt + 10,
                ack_number: None,
                ..at_rcv_nxt
            },
        }
    }

    /// Our pure ACK once `taken` more sequence numbers were accepted.
    fn ack(&self, taken: usize) -> TcpRepr<'static> {
        our_ack(
            self.snd_nxt,
            self.rcv_nxt + taken,
            self.window - taken as u16,
        )
    }
}

/// The socket's answer.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Nothing at all (and never a RST).
    Nothing,
    /// A pure ACK of what we had (SEG.SEQ = SND.NXT, SEG.ACK = RCV.NXT).
    Ack,
    /// A pure ACK of that many more sequence numbers, now accepted (data is then readable).
    AckOf(usize),
}

/// (state, what the peer sends, the answer, the next state, the connection's error).
#[rustfmt::skip]
const CASES: &[(State, Peer, Answer, State, Option<ConnectionError>)] = &[
    // FIN-WAIT-1: our FIN is unacknowledged; the peer may still send.
    (FinWait1,  Fin,         AckOf(1), Closing,   None),
    (FinWait1,  Data,        AckOf(4), FinWait1,  None),
    (FinWait1,  AckOfFin,    Nothing,  FinWait2,  None),
    (FinWait1,  OutOfWindow, Ack,      FinWait1,  None),
    (FinWait1,  Rst,         Nothing,  Closed,    Some(Reset)),
    (FinWait1,  RstInWindow, Ack,      FinWait1,  None),
    (FinWait1,  Syn,         Ack,      FinWait1,  None),
    // FIN-WAIT-2: our FIN is acknowledged; the peer may still send.
    (FinWait2,  Fin,         AckOf(1), TimeWait,  None),
    (FinWait2,  Data,        AckOf(4), FinWait2,  None),
    (FinWait2,  AckOfFin,    Nothing,  FinWait2,  None),
    (FinWait2,  OutOfWindow, Ack,      FinWait2,  None),
    (FinWait2,  Rst,         Nothing,  Closed,    Some(Reset)),
    (FinWait2,  RstInWindow, Ack,      FinWait2,  None),
    (FinWait2,  Syn,         Ack,      FinWait2,  None),
    // CLOSE-WAIT: the peer's FIN arrived; we have not closed. An ACK of a FIN we never sent
    // acknowledges something not yet sent: answered with an ACK and dropped.
    (CloseWait, Fin,         Ack,      CloseWait, None),
    (CloseWait, Data,        Ack,      CloseWait, None),
    (CloseWait, AckOfFin,    Ack,      CloseWait, None),
    (CloseWait, OutOfWindow, Ack,      CloseWait, None),
    (CloseWait, Rst,         Nothing,  Closed,    Some(Reset)),
    (CloseWait, RstInWindow, Ack,      CloseWait, None),
    (CloseWait, Syn,         Ack,      CloseWait, None),
    // CLOSING: both FINs are out, ours is unacknowledged.
    (Closing,   Fin,         Ack,      Closing,   None),
    (Closing,   Data,        Ack,      Closing,   None),
    (Closing,   AckOfFin,    Nothing,  TimeWait,  None),
    (Closing,   OutOfWindow, Ack,      Closing,   None),
    (Closing,   Rst,         Nothing,  Closed,    None),
    (Closing,   RstInWindow, Ack,      Closing,   None),
    (Closing,   Syn,         Ack,      Closing,   None),
    // LAST-ACK: the peer closed first, our FIN is unacknowledged.
    (LastAck,   Fin,         Ack,      LastAck,   None),
    (LastAck,   Data,        Ack,      LastAck,   None),
    (LastAck,   AckOfFin,    Nothing,  Closed,    None),
    (LastAck,   OutOfWindow, Ack,      LastAck,   None),
    (LastAck,   Rst,         Nothing,  Closed,    None),
    (LastAck,   RstInWindow, Ack,      LastAck,   None),
    (LastAck,   Syn,         Ack,      LastAck,   None),
    // TIME-WAIT: both FINs acknowledged; only a lost final ACK may still need repeating.
    (TimeWait,  Fin,         Ack,      TimeWait,  None),
    (TimeWait,  Data,        Ack,      TimeWait,  None),
    (TimeWait,  AckOfFin,    Nothing,  TimeWait,  None),
    (TimeWait,  OutOfWindow, Ack,      TimeWait,  None),
    (TimeWait,  Rst,         Nothing,  Closed,    None),
    (TimeWait,  RstInWindow, Ack,      TimeWait,  None),
    (TimeWait,  Syn,         Ack,      TimeWait,  None),
];

#[test]
fn every_closing_state_answers_each_segment_as_rfc_9293_says() {
    for &(state, peer, answer, next, error) in CASES {
        let case = format!("{state} + {peer:?}");
        let mut c = reach(state);
        let ms = c.ms + 3;
        let segment = c.segment(peer);
        // `send` checks that no immediate reply (a RST) comes back.
        send(&mut c.socket, ms, &segment);
        let (want, readable) = match answer {
            Nothing => (vec![], 0),
            Ack => (vec![c.ack(0)], 0),
            AckOf(n) => (vec![c.ack(n)], segment.payload.len()),
        };
        let got: Vec<TcpRepr<'static>> = core::iter::from_fn(|| {
            c.socket.dispatch(at(ms), |repr| {
                assert!(repr.payload.is_empty(), "{case}: data sent");
                TcpRepr {
                    payload: &[],
                    ..*repr
                }
            })
        })
        .take(10)
        .collect();
        assert_eq!(got, want, "{case}: answer");
        assert_eq!(c.socket.state(), next, "{case}: next state");
        assert_eq!(c.socket.error(), error, "{case}: error");
        assert_eq!(c.socket.recv_queue(), readable, "{case}: readable bytes");
        if readable > 0 {
            let mut buf = [0u8; 8];
            assert_eq!(c.socket.recv(&mut buf), Ok(4), "{case}");
            assert_eq!(&buf[..4], b"late", "{case}");
        }
    }
}

#[test]
fn every_state_has_a_case_for_every_segment() {
    for state in [FinWait1, FinWait2, CloseWait, Closing, LastAck, TimeWait] {
        let peers: Vec<String> = CASES
            .iter()
            .filter(|case| case.0 == state)
            .map(|case| format!("{:?}", case.1))
            .collect();
        assert_eq!(
            peers,
            [
                "Fin",
                "Data",
                "AckOfFin",
                "OutOfWindow",
                "Rst",
                "RstInWindow",
                "Syn"
            ],
            "{state}"
        );
    }
}

/// The field defect this suite exists for: our FIN, the peer's FIN+ACK, and its FIN again
/// because our ACK was lost. Every repetition gets the same ACK, in every state a FIN can
/// reach, and never a RST.
#[test]
fn a_retransmitted_fin_is_acknowledged_again_in_every_state() {
    for state in [FinWait1, FinWait2, CloseWait, Closing, LastAck, TimeWait] {
        let mut c = reach(state);
        let fin = c.segment(Fin);
        let mut first = None;
        for (i, ms) in [c.ms + 1, c.ms + 50, c.ms + 100].into_iter().enumerate() {
            send(&mut c.socket, ms, &fin);
            let answer = c.socket.dispatch(at(ms), |repr| TcpRepr {
                payload: &[],
                ..*repr
            });
            assert!(answer.is_some(), "{state}: FIN {i} unanswered");
            assert_eq!(c.socket.dispatch(at(ms), |_| ()), None, "{state}");
            let answer = answer.unwrap();
            assert_eq!(answer.control, TcpControl::None, "{state}: FIN {i}");
            assert_eq!(answer.ack_number, Some(PEER_FIN + 1), "{state}: FIN {i}");
            let state_after = c.socket.state();
            match first {
                None => first = Some((answer, state_after)),
                Some(first) => assert_eq!((answer, state_after), first, "{state}: FIN {i}"),
            }
        }
        assert_eq!(c.socket.error(), None, "{state}");
    }
}

#[test]
fn a_retransmitted_fin_restarts_time_wait() {
    let mut c = reach(TimeWait);
    let time_wait = config().time_wait;
    assert_eq!(c.socket.poll_at(), Some(at(20) + time_wait));
    let fin = c.segment(Fin);
    let (data, ack, ack_of_fin) = (c.segment(Data), c.ack(0), c.segment(AckOfFin));
    send(&mut c.socket, 30_000, &fin);
    expect(&mut c.socket, 30_000, &[ack]);
    assert_eq!(c.socket.poll_at(), Some(at(30_000) + time_wait));
    // Another segment (data, a pure ACK) does not restart it: only the FIN, whose ACK may
    // have been lost, needs the full 2 MSL after it.
    send(&mut c.socket, 40_000, &data);
    expect(&mut c.socket, 40_000, &[ack]);
    send(&mut c.socket, 40_001, &ack_of_fin);
    expect_nothing(&mut c.socket, 40_001);
    assert_eq!(c.socket.poll_at(), Some(at(30_000) + time_wait));
    let end = 30_000 + time_wait.as_millis() as u64;
    expect_nothing(&mut c.socket, end - 1);
    assert_eq!(c.socket.state(), TimeWait);
    expect_nothing(&mut c.socket, end);
    assert_eq!(c.socket.state(), Closed);
    assert_eq!(c.socket.error(), None);
    assert_eq!(c.socket.poll_at(), None);
    // The connection is gone: its FIN now gets a RST (the stack's TIME-WAIT record covers
    // a socket removed early, not one that lived its 2 MSL out).
    let reply = c.socket.process(at(end + 1), remote(), local(), &fin);
    assert_eq!(reply.map(|r| r.control), Some(TcpControl::Rst));
}

/// Our FIN, unacknowledged in FIN-WAIT-1, CLOSING or LAST-ACK, is sent again at each
/// retransmission timeout, the timeout doubling up to `max_rto`, until
/// `max_retransmissions` went unanswered: then the connection is given up, with no RST
/// (the peer is not answering anyway).
#[test]
fn our_fin_is_retransmitted_with_backoff_then_the_connection_times_out() {
    let config = config();
    for state in [FinWait1, Closing, LastAck] {
        let mut c = reach(state);
        // Our FIN went out with the setup's first segment: at 0, or at 1 in LAST-ACK.
        let sent = if state == LastAck { 1 } else { 0 };
        let mut rto = c.socket.retransmission_timeout();
        assert_eq!(rto, config.min_rto, "{state}");
        let mut due = sent + rto.as_millis() as u64;
        for i in 0..config.max_retransmissions {
            expect_nothing(&mut c.socket, due - 1);
            expect(&mut c.socket, due, &[our_fin(c.rcv_nxt, c.window)]);
            assert_eq!(c.socket.state(), state, "{state}: retransmission {i}");
            rto = (rto * 2).min(config.max_rto);
            due += rto.as_millis() as u64;
        }
        assert_eq!(
            c.socket.stats().retransmitted_segments,
            u64::from(config.max_retransmissions)
        );
        expect_nothing(&mut c.socket, due - 1);
        assert_eq!(c.socket.state(), state, "{state}");
        expect_nothing(&mut c.socket, due);
        assert_eq!(c.socket.state(), Closed, "{state}");
        assert_eq!(c.socket.error(), Some(ConnectionError::TimedOut), "{state}");
        assert!(c.socket.take_events().contains(Events::CLOSED), "{state}");
    }
}

/// An ACK of the retransmitted FIN still completes the close.
#[test]
fn an_ack_of_a_retransmitted_fin_completes_the_close() {
    for (state, next) in [(FinWait1, FinWait2), (Closing, TimeWait), (LastAck, Closed)] {
        let mut c = reach(state);
        let due = c.ms + 200;
        expect(&mut c.socket, due, &[our_fin(c.rcv_nxt, c.window)]);
        let ack = c.segment(AckOfFin);
        send(&mut c.socket, due + 10, &ack);
        expect_nothing(&mut c.socket, due + 10);
        assert_eq!(c.socket.state(), next, "{state}");
        assert_eq!(c.socket.error(), None, "{state}");
    }
}

/// A half-closed connection the application still holds waits in FIN-WAIT-2 for as long as
/// the peer keeps its direction open, like a socket after `shutdown(SHUT_WR)`: no timer runs.
#[test]
fn fin_wait_2_lasts_while_the_application_holds_the_socket() {
    let mut c = reach(FinWait2);
    assert_eq!(c.socket.poll_at(), None);
    expect_nothing(&mut c.socket, 3_600_000);
    assert_eq!(c.socket.state(), FinWait2);
    let (data, ack) = (c.segment(Data), c.ack(4));
    send(&mut c.socket, 3_600_001, &data);
    expect(&mut c.socket, 3_600_001, &[ack]);
}

/// A released socket does not wait in FIN-WAIT-2 for ever: a peer that never closes its
/// direction would keep it (and whatever it sent, unread) for as long as it lives. The
/// timeout starts when our FIN is acknowledged, data does not restart it, and the socket
/// closes without a reset; the peer's next segment gets one.
#[test]
fn a_released_socket_leaves_fin_wait_2_after_the_timeout() {
    let timeout = config().fin_wait_2_timeout;
    assert_eq!(timeout, Duration::from_secs(60));
    let mut s = established();
    s.release(at(0));
    assert_eq!(s.state(), FinWait1);
    expect(&mut s, 0, &[our_fin(PEER_FIN, BUF as u16)]);
    send(&mut s, 10, &ack_of(OUR_FIN + 1));
    assert_eq!(s.state(), FinWait2);
    let end = 10 + timeout.as_millis() as u64;
    assert_eq!(s.poll_at(), Some(at(end)));
    let data = TcpRepr {
        payload: b"late",
        ..ack_of(OUR_FIN + 1)
    };
    send(&mut s, 30_000, &data);
    expect(
        &mut s,
        30_000,
        &[our_ack(OUR_FIN + 1, PEER_FIN + 4, (BUF - 4) as u16)],
    );
    expect_nothing(&mut s, end - 1);
    assert_eq!(s.state(), FinWait2);
    expect_nothing(&mut s, end);
    assert_eq!(s.state(), Closed);
    assert_eq!(s.error(), None);
    assert!(s.take_events().contains(Events::CLOSED));
    assert_eq!(s.poll_at(), None);
    let fin = TcpRepr {
        seq_number: PEER_FIN + 4,
        ..fin_from_peer(OUR_FIN + 1)
    };
    let reply = s.process(at(end + 1), remote(), local(), &fin);
    assert_eq!(reply.map(|r| r.control), Some(TcpControl::Rst));
}

/// Released in FIN-WAIT-2, the timeout counts from the release; the peer's FIN within it
/// leads to TIME-WAIT as usual, which then ends by itself.
#[test]
fn a_socket_released_in_fin_wait_2_still_completes_the_close() {
    let time_wait = config().time_wait;
    let mut c = reach(FinWait2);
    c.socket.release(at(1_000));
    assert_eq!(
        c.socket.poll_at(),
        Some(at(1_000) + config().fin_wait_2_timeout)
    );
    let (fin, ack) = (c.segment(Fin), c.ack(1));
    send(&mut c.socket, 2_000, &fin);
    assert_eq!(c.socket.state(), TimeWait);
    expect(&mut c.socket, 2_000, &[ack]);
    assert_eq!(c.socket.poll_at(), Some(at(2_000) + time_wait));
    expect_nothing(&mut c.socket, 61_000);
    assert_eq!(c.socket.state(), TimeWait);
    expect_nothing(&mut c.socket, 2_000 + time_wait.as_millis() as u64);
    assert_eq!(c.socket.state(), Closed);
}
