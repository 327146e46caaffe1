//! The reliability layer of the control channel (OpenVPN's `reliable.c`): message ids,
//! acknowledgements, retransmission and in-order delivery, for one key id in both directions.
//!
//! Every control packet except `P_ACK_V1` carries a message id. Each key id numbers its packets
//! from 0 (the hard or soft reset) upwards, separately per direction; a retransmission reuses
//! its id. The rules, as OpenVPN 2.6 applies them:
//!
//! - **Sending**: at most [`SEND_WINDOW`] ids between the oldest unacknowledged packet and the
//!   next new one. A packet goes out at once, then again after [`INITIAL_TIMEOUT`], doubling
//!   each time (2, 4, 8, ... s: sends at t, t+2, t+6, t+14, ...), until acknowledged. When
//!   [`FAST_RETRANSMIT_ACKS`] acknowledgements arrive for later packets while one is still
//!   unacknowledged, it is resent at once.
//! - **Receiving**: ids in `next..next + RECEIVE_WINDOW` are buffered and delivered in order
//!   ([`Reliable::take_in_order`]); an id already received or below `next` is a duplicate that
//!   is acknowledged again but not delivered; an id beyond the window is dropped unacknowledged,
//!   so the peer resends it later.
//! - **Acknowledging**: selective, one id at a time. Ids not yet acknowledged go first, newest
//!   first; the rest of the room is filled with the most recently acknowledged ids, so a lost
//!   acknowledgement is repaired by the next packet. Up to [`MAX_PIGGYBACK_ACKS`] ride on a
//!   packet with a message id, up to [`AckList::MAX`] on a `P_ACK_V1`.
//!
//! The layer knows nothing about session ids, wrapping or TLS: the session builds packets from
//! what it hands out ([`Reliable::next_due`], [`Reliable::ack_list`]) and reports back what it
//! sent ([`Reliable::sent`], [`Reliable::acks_sent`]). It is shared by the client session and
//! the test server that stands in for OpenVPN.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use erebus_sansio::Instant;

use crate::packet::{AckList, Opcode};

/// The most packets in flight (`TLS_RELIABLE_N_SEND_BUFFERS`).
pub const SEND_WINDOW: u32 = 6;
/// How far ahead of the next expected id packets are buffered (`TLS_RELIABLE_N_REC_BUFFERS`).
pub const RECEIVE_WINDOW: u32 = 12;
/// The most acknowledgements piggybacked on a packet with a message id (`CONTROL_SEND_ACK_MAX`).
pub const MAX_PIGGYBACK_ACKS: usize = 4;
/// The first retransmission timeout (`--tls-timeout`'s default).
pub const INITIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Acknowledgements of later packets that trigger an early retransmission (`N_ACK_RETRANSMIT`).
pub const FAST_RETRANSMIT_ACKS: u8 = 3;
/// The most recently acknowledged ids remembered for repeating (`RELIABLE_ACK_SIZE`).
const RECENT_ACKS: usize = AckList::MAX;
/// Bound on ids waiting to be acknowledged; more are forgotten (the peer resends them).
const MAX_PENDING_ACKS: usize = 2 * RECEIVE_WINDOW as usize;

/// A packet waiting for its acknowledgement.
#[derive(Clone, Debug)]
struct Unacked {
    id: u32,
    opcode: Opcode,
    payload: Vec<u8>,
    next_try: Instant,
    timeout: Duration,
    transmissions: u32,
    later_acks: u8,
}

/// A packet to put on the wire now: its message id, opcode and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The message id.
    pub message_id: u32,
    /// The opcode (a reset or `P_CONTROL_V1`).
    pub opcode: Opcode,
    /// The payload (TLS bytes; empty for resets).
    pub payload: &'a [u8],
    /// Whether this is a retransmission.
    pub retransmission: bool,
}

/// What [`Reliable::receive`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// New: buffered for in-order delivery and queued for acknowledgement.
    New,
    /// Seen before: acknowledged again, not delivered again.
    Duplicate,
    /// Beyond the receive window: dropped without acknowledgement.
    OutOfWindow,
}

/// Counters of one key id's reliability layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReliableStats {
    /// Packets sent for the first time.
    pub sent: u64,
    /// Retransmissions.
    pub retransmitted: u64,
    /// New packets received.
    pub received: u64,
    /// Duplicates received.
    pub duplicates: u64,
    /// Packets dropped as beyond the receive window.
    pub out_of_window: u64,
}

/// The reliability layer of one key id. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct Reliable {
    initial_timeout: Duration,
    next_send_id: u32,
    /// Ordered by id.
    unacked: VecDeque<Unacked>,
    next_receive_id: u32,
    received: BTreeMap<u32, (Opcode, Vec<u8>)>,
    /// Ids received and not yet acknowledged, oldest first.
    pending_acks: VecDeque<u32>,
    /// Ids acknowledged lately, newest first.
    recent_acks: VecDeque<u32>,
    stats: ReliableStats,
}

impl Default for Reliable {
    fn default() -> Self {
        Self::new(INITIAL_TIMEOUT)
    }
}

impl Reliable {
    /// A fresh layer: both directions start at message id 0. `initial_timeout` is
    /// `--tls-timeout` (2 s by default).
    pub fn new(initial_timeout: Duration) -> Self {
        Self {
            initial_timeout: initial_timeout.max(Duration::from_millis(1)),
            next_send_id: 0,
            unacked: VecDeque::new(),
            next_receive_id: 0,
            received: BTreeMap::new(),
            pending_acks: VecDeque::new(),
            recent_acks: VecDeque::new(),
            stats: ReliableStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> ReliableStats {
        self.stats
    }

    /// Whether a new packet fits the send window.
    pub fn can_queue(&self) -> bool {
        self.unacked
            .front()
            .is_none_or(|oldest| self.next_send_id.wrapping_sub(oldest.id) < SEND_WINDOW)
    }

    /// Queues a new packet, to be sent at `now`; returns its message id, or `None` when the send
    /// window is full.
    pub fn queue(&mut self, opcode: Opcode, payload: Vec<u8>, now: Instant) -> Option<u32> {
        if !self.can_queue() {
            return None;
        }
        let id = self.next_send_id;
        self.next_send_id = id.wrapping_add(1);
        self.unacked.push_back(Unacked {
            id,
            opcode,
            payload,
            next_try: now,
            timeout: self.initial_timeout,
            transmissions: 0,
            later_acks: 0,
        });
        Some(id)
    }

    /// Whether every packet sent so far was acknowledged.
    pub fn all_acknowledged(&self) -> bool {
        self.unacked.is_empty()
    }

    /// The message id of the newest packet still waiting for its acknowledgement.
    pub fn newest_unacknowledged(&self) -> Option<u32> {
        self.unacked.back().map(|p| p.id)
    }

    /// Whether the packet with message id `id` was acknowledged (or never queued).
    pub fn is_acknowledged(&self, id: u32) -> bool {
        !self.unacked.iter().any(|p| p.id == id)
    }

    /// Takes the peer's acknowledgements; returns how many of our packets they released.
    pub fn acknowledge(&mut self, ids: &[u32], now: Instant) -> usize {
        let before = self.unacked.len();
        let mut highest = None;
        for &id in ids {
            if let Some(pos) = self.unacked.iter().position(|p| p.id == id) {
                self.unacked.remove(pos);
                highest = Some(highest.map_or(id, |h: u32| h.max(id)));
            }
        }
        if let Some(highest) = highest {
            // Later packets got through while these did not: after a few such signs, assume
            // the earlier one was lost rather than slow.
            for packet in self.unacked.iter_mut().filter(|p| p.id < highest) {
                packet.later_acks = packet.later_acks.saturating_add(1);
                if packet.later_acks >= FAST_RETRANSMIT_ACKS && packet.transmissions > 0 {
                    packet.next_try = now;
                    packet.later_acks = 0;
                }
            }
        }
        before - self.unacked.len()
    }

    /// The packet to send at `now`, if one is due: the lowest id whose time has come.
    pub fn next_due(&self, now: Instant) -> Option<Outgoing<'_>> {
        self.unacked
            .iter()
            .find(|p| p.next_try <= now)
            .map(|p| Outgoing {
                message_id: p.id,
                opcode: p.opcode,
                payload: &p.payload,
                retransmission: p.transmissions > 0,
            })
    }

    /// Records that the packet `id` went out at `now`: the next try is one timeout later, and
    /// the timeout doubles.
    pub fn sent(&mut self, id: u32, now: Instant) {
        if let Some(packet) = self.unacked.iter_mut().find(|p| p.id == id) {
            if packet.transmissions == 0 {
                self.stats.sent += 1;
            } else {
                self.stats.retransmitted += 1;
            }
            packet.transmissions = packet.transmissions.saturating_add(1);
            packet.next_try = now + packet.timeout;
            packet.timeout = packet.timeout.saturating_mul(2);
            packet.later_acks = 0;
        }
    }

    /// Makes every unacknowledged packet due at `now` (OpenVPN's `reliable_schedule_now`, done
    /// when the peer's reset shows it is there).
    pub fn retransmit_now(&mut self, now: Instant) {
        for packet in &mut self.unacked {
            if packet.transmissions > 0 {
                packet.next_try = now;
            }
        }
    }

    /// When a packet is next due, if any is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.unacked.iter().map(|p| p.next_try).min()
    }

    /// Takes a received packet with message id `id`.
    pub fn receive(&mut self, id: u32, opcode: Opcode, payload: &[u8]) -> Received {
        let ahead = id.wrapping_sub(self.next_receive_id);
        if ahead >= RECEIVE_WINDOW {
            // Below the window (a duplicate) wraps to a huge distance; tell them apart by how
            // far behind it is.
            if self.next_receive_id.wrapping_sub(id) <= u32::MAX / 2 {
                self.stats.duplicates += 1;
                self.queue_ack(id);
                return Received::Duplicate;
            }
            self.stats.out_of_window += 1;
            return Received::OutOfWindow;
        }
        self.queue_ack(id);
        if self.received.contains_key(&id) {
            self.stats.duplicates += 1;
            return Received::Duplicate;
        }
        self.stats.received += 1;
        self.received.insert(id, (opcode, payload.to_vec()));
        Received::New
    }

    fn queue_ack(&mut self, id: u32) {
        if self.pending_acks.contains(&id) {
            return;
        }
        if self.pending_acks.len() >= MAX_PENDING_ACKS {
            self.pending_acks.pop_front();
        }
        self.pending_acks.push_back(id);
    }

    /// The next packet in message-id order, once it has arrived.
    pub fn take_in_order(&mut self) -> Option<(Opcode, Vec<u8>)> {
        let packet = self.received.remove(&self.next_receive_id)?;
        self.next_receive_id = self.next_receive_id.wrapping_add(1);
        Some(packet)
    }

    /// The next message id expected from the peer.
    pub fn next_receive_id(&self) -> u32 {
        self.next_receive_id
    }

    /// Whether received packets wait for an acknowledgement.
    pub fn has_pending_acks(&self) -> bool {
        !self.pending_acks.is_empty()
    }

    /// The acknowledgements to put on the next packet, at most `max`: the pending ones newest
    /// first, then recently acknowledged ones. Nothing changes until [`Reliable::acks_sent`].
    pub fn ack_list(&self, max: usize) -> AckList {
        let mut list = AckList::new();
        let max = max.min(AckList::MAX);
        for &id in self
            .pending_acks
            .iter()
            .rev()
            .chain(self.recent_acks.iter())
        {
            if list.len() >= max {
                break;
            }
            if !list.as_slice().contains(&id) {
                list.push(id);
            }
        }
        list
    }

    /// Records that `list` went out: its pending ids become recently acknowledged ones.
    pub fn acks_sent(&mut self, list: &AckList) {
        for &id in list.as_slice().iter().rev() {
            if let Some(pos) = self.pending_acks.iter().position(|&p| p == id) {
                self.pending_acks.remove(pos);
            }
            if let Some(pos) = self.recent_acks.iter().position(|&p| p == id) {
                self.recent_acks.remove(pos);
            }
            self.recent_acks.push_front(id);
        }
        self.recent_acks.truncate(RECENT_ACKS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    #[test]
    fn reliable_numbers_from_zero_and_backs_off_exponentially() {
        let mut r = Reliable::default();
        assert_eq!(
            r.queue(Opcode::ControlHardResetClientV2, vec![], at(0)),
            Some(0)
        );
        let mut sends = Vec::new();
        let mut now = at(0);
        while now < at(40) {
            if let Some(out) = r.next_due(now) {
                assert_eq!(out.message_id, 0);
                assert_eq!(out.retransmission, !sends.is_empty());
                sends.push(now.as_millis() / 1000);
                r.sent(0, now);
            }
            now = r.poll_timeout().unwrap();
        }
        // t, t+2, t+6, t+14, t+30: OpenVPN's schedule.
        assert_eq!(sends, [0, 2, 6, 14, 30]);
        assert_eq!(r.stats().sent, 1);
        assert_eq!(r.stats().retransmitted, 4);
        assert_eq!(r.acknowledge(&[0], now), 1);
        assert!(r.all_acknowledged());
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.next_due(at(100)), None);
    }

    #[test]
    fn reliable_send_window_is_six() {
        let mut r = Reliable::default();
        for id in 0..6 {
            assert_eq!(r.queue(Opcode::ControlV1, vec![id as u8], at(0)), Some(id));
        }
        assert!(!r.can_queue());
        assert_eq!(r.queue(Opcode::ControlV1, vec![], at(0)), None);
        // Acknowledging a later packet does not open the window: the oldest holds it.
        r.acknowledge(&[3], at(0));
        assert!(!r.can_queue());
        r.acknowledge(&[0], at(0));
        assert_eq!(r.queue(Opcode::ControlV1, vec![], at(0)), Some(6));
        assert!(!r.can_queue());
    }

    #[test]
    fn reliable_fast_retransmit_after_three_later_acks() {
        let mut r = Reliable::default();
        for _ in 0..5 {
            r.queue(Opcode::ControlV1, vec![], at(0));
        }
        for id in 0..5 {
            r.sent(id, at(0));
        }
        assert_eq!(r.next_due(at(1)), None);
        r.acknowledge(&[1], at(1));
        r.acknowledge(&[2], at(1));
        assert_eq!(r.next_due(at(1)), None);
        r.acknowledge(&[3], at(1));
        assert_eq!(r.next_due(at(1)).map(|o| o.message_id), Some(0));
    }

    #[test]
    fn reliable_delivers_in_order_and_reacks_duplicates() {
        let mut r = Reliable::default();
        assert_eq!(r.receive(1, Opcode::ControlV1, b"b"), Received::New);
        assert_eq!(r.take_in_order(), None);
        assert_eq!(
            r.receive(0, Opcode::ControlHardResetServerV2, b""),
            Received::New
        );
        assert_eq!(r.receive(1, Opcode::ControlV1, b"b"), Received::Duplicate);
        assert_eq!(
            r.take_in_order(),
            Some((Opcode::ControlHardResetServerV2, vec![]))
        );
        assert_eq!(r.take_in_order(), Some((Opcode::ControlV1, b"b".to_vec())));
        assert_eq!(r.take_in_order(), None);
        // Newest first, each once.
        assert_eq!(r.ack_list(8).as_slice(), &[0, 1]);
        let list = r.ack_list(MAX_PIGGYBACK_ACKS);
        r.acks_sent(&list);
        assert!(!r.has_pending_acks());
        // Already delivered: acknowledged again.
        assert_eq!(r.receive(0, Opcode::ControlV1, b""), Received::Duplicate);
        assert_eq!(r.ack_list(1).as_slice(), &[0]);
        // Beyond the window: dropped without acknowledgement.
        assert_eq!(
            r.receive(2 + 12, Opcode::ControlV1, b""),
            Received::OutOfWindow
        );
        assert_eq!(r.receive(2 + 11, Opcode::ControlV1, b""), Received::New);
        assert_eq!(r.stats().out_of_window, 1);
    }

    #[test]
    fn reliable_ack_lists_repeat_recent_ids() {
        let mut r = Reliable::default();
        for id in 0..6 {
            r.receive(id, Opcode::ControlV1, b"x");
            let list = r.ack_list(MAX_PIGGYBACK_ACKS);
            r.acks_sent(&list);
        }
        r.receive(6, Opcode::ControlV1, b"x");
        // The new id first, then the most recent ones, as the captures show ([5,4,3,2,...]).
        assert_eq!(r.ack_list(4).as_slice(), &[6, 5, 4, 3]);
        assert_eq!(r.ack_list(8).as_slice(), &[6, 5, 4, 3, 2, 1, 0]);
    }

    proptest! {
        /// Whatever order and duplication packets arrive in, delivery is in order and complete.
        #[test]
        fn reliable_in_order_delivery(order in proptest::collection::vec(0u32..12, 0..60)) {
            let mut r = Reliable::default();
            let mut delivered = Vec::new();
            for id in order {
                r.receive(id, Opcode::ControlV1, &id.to_be_bytes());
                while let Some((_, payload)) = r.take_in_order() {
                    delivered.push(u32::from_be_bytes(payload.try_into().unwrap()));
                }
            }
            let expected: Vec<u32> = (0..delivered.len() as u32).collect();
            prop_assert_eq!(delivered, expected);
            prop_assert!(r.ack_list(8).len() <= 8);
        }
    }
}
