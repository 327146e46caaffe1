//! Packet ids: the sending counter and the receiving replay window of OpenVPN's `packet_id.c`.
//!
//! A packet id is a 32-bit counter, optionally followed by a 32-bit time (the "long form" used
//! by static-key mode and the tls-auth/tls-crypt wrappers). The sender increments the counter
//! before each packet, so the first id is 1. The receiver keeps the highest id and time seen and
//! a window of the last `window` ids:
//!
//! - id 0 is always refused;
//! - a time older than the highest time is refused, a newer time starts a new window;
//! - with the same time, a higher id is accepted, an id more than `window` behind the highest is
//!   refused, and an id inside the window is accepted once;
//! - an id inside the window is also refused once it is "expired": when some packet at least as
//!   new as it arrived more than `time_backtrack` ago. A late packet is therefore accepted only
//!   for about `time_backtrack` after newer ones arrived.
//!
//! Checking ([`ReplayWindow::check`]) changes nothing; the caller commits
//! ([`ReplayWindow::commit`]) only after the packet authenticated, so forged packets cannot move
//! the window.
//!
//! OpenVPN expires entries in a sweep at most every 5 seconds; this window evaluates expiry at
//! check time instead, which refuses a late packet up to 5 seconds earlier than OpenVPN would
//! and never accepts one OpenVPN would refuse.

use core::time::Duration;

use erebus_sansio::Instant;

/// A packet id as carried on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PacketId {
    /// The counter, starting at 1.
    pub id: u32,
    /// The sender's start time in Unix seconds (long form), or 0 (short form).
    pub time: u32,
}

/// Whether a packet id carries a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketIdForm {
    /// The counter only: 4 bytes (TLS-mode data channel).
    Short,
    /// Counter then time: 8 bytes (static-key mode, tls-auth, tls-crypt).
    Long,
}

impl PacketIdForm {
    /// Bytes on the wire.
    pub const fn len(self) -> usize {
        match self {
            Self::Short => 4,
            Self::Long => 8,
        }
    }

    /// Always false; present for symmetry with [`PacketIdForm::len`].
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Reads a packet id from the start of `bytes`, or `None` when they are too short.
    pub fn read(self, bytes: &[u8]) -> Option<PacketId> {
        let id = u32::from_be_bytes(*bytes.first_chunk::<4>()?);
        let time = match self {
            Self::Short => 0,
            Self::Long => u32::from_be_bytes(*bytes.get(4..)?.first_chunk::<4>()?),
        };
        Some(PacketId { id, time })
    }

    /// Writes `pid` at the start of `out`; returns false (writing nothing) when it is too short.
    pub fn write(self, pid: PacketId, out: &mut [u8]) -> bool {
        let Some(dst) = out.get_mut(..self.len()) else {
            return false;
        };
        let (id, time) = dst.split_at_mut(4);
        id.copy_from_slice(&pid.id.to_be_bytes());
        time.copy_from_slice(&pid.time.to_be_bytes()[..time.len()]);
        true
    }
}

/// The sending side: hands out 1, 2, 3, ... with a time fixed at the first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketIdSender {
    form: PacketIdForm,
    last: PacketId,
    /// The earliest time the first long-form packet may carry.
    min_time: u32,
}

impl PacketIdSender {
    /// A counter that has sent nothing yet.
    pub const fn new(form: PacketIdForm) -> Self {
        Self {
            form,
            last: PacketId { id: 0, time: 0 },
            min_time: 0,
        }
    }

    /// A fresh counter for a restarted session whose time is later than this one's.
    ///
    /// OpenVPN restarts with the wall-clock time, so two starts within one second reuse the time
    /// and the peer, which may still hold the old window, refuses id 1 as a replay. Taking at
    /// least the old time plus one avoids that; the peer only compares times, so this is
    /// indistinguishable from a later start.
    pub fn restarted(&self) -> Self {
        let min_time = if self.last.time == 0 {
            self.min_time
        } else {
            self.last.time.saturating_add(1)
        };
        Self {
            form: self.form,
            last: PacketId { id: 0, time: 0 },
            min_time,
        }
    }

    /// The form this counter writes.
    pub const fn form(&self) -> PacketIdForm {
        self.form
    }

    /// The last id handed out (id 0 before the first packet).
    pub const fn last(&self) -> PacketId {
        self.last
    }

    /// The id for the next packet, with `unix_now` (seconds) fixing the time at the first one.
    /// `None` once the counter is exhausted: the short form never wraps; the long form wraps to
    /// 1 only when `unix_now` is later than its time, as OpenVPN does.
    pub fn next(&mut self, unix_now: u32) -> Option<PacketId> {
        if self.form == PacketIdForm::Long && self.last.id == 0 && self.last.time == 0 {
            self.last.time = unix_now.max(self.min_time);
        }
        if self.last.id == u32::MAX {
            if self.form == PacketIdForm::Short || unix_now <= self.last.time {
                return None;
            }
            self.last.time = unix_now;
            self.last.id = 0;
        }
        self.last.id += 1;
        Some(self.last)
    }
}

/// Why [`ReplayWindow::check`] refused a packet id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Id 0, which no sender uses.
    #[error("packet id 0")]
    ZeroId,
    /// Already received.
    #[error("packet id already received")]
    Replayed,
    /// Further behind the highest id than the window reaches.
    #[error("packet id too far behind the window")]
    TooOld,
    /// Inside the window but newer packets arrived more than the time tolerance ago.
    #[error("packet id expired from the window")]
    Expired,
    /// A time older than the highest time seen.
    #[error("packet time went backwards")]
    TimeBacktrack,
    /// Out of sequence in the strict mode (window 0).
    #[error("packet id out of sequence")]
    OutOfSequence,
}

/// The receive window's parameters (`--replay-window n t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplayConfig {
    /// How many ids behind the highest one are still accepted once (`0..=65536`, default 64).
    /// 0 selects OpenVPN's strict mode: every id must be exactly one more than the last.
    pub window: u32,
    /// How long after a newer packet arrived an older one is still accepted (default 15 s, at
    /// most 600 s); zero disables expiry.
    pub time_backtrack: Duration,
}

impl ReplayConfig {
    /// The largest window OpenVPN allows.
    pub const MAX_WINDOW: u32 = 65_536;
    /// The largest time tolerance OpenVPN allows.
    pub const MAX_TIME_BACKTRACK: Duration = Duration::from_secs(600);
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            window: 64,
            time_backtrack: Duration::from_secs(15),
        }
    }
}

/// The receiving side: OpenVPN's sliding replay window (`struct packet_id_rec`).
///
/// The window is a ring of arrival times, one per id from `highest - len + 1` to `highest`,
/// allocated once at construction.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    window: u32,
    time_backtrack: Duration,
    /// Highest time seen.
    time: u32,
    /// Highest id seen (the id of ring entry 0).
    id: u32,
    /// Arrival time of each id; entry `i` (counted from `head` backwards) is id `self.id - i`.
    ring: Box<[Option<Instant>]>,
    head: usize,
    len: usize,
}

impl ReplayWindow {
    /// An empty window; `config` is clamped to OpenVPN's limits.
    pub fn new(config: ReplayConfig) -> Self {
        let window = config.window.min(ReplayConfig::MAX_WINDOW);
        Self {
            window,
            time_backtrack: config.time_backtrack.min(ReplayConfig::MAX_TIME_BACKTRACK),
            time: 0,
            id: 0,
            ring: vec![None; window as usize].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    /// The parameters in force (after clamping).
    pub const fn config(&self) -> ReplayConfig {
        ReplayConfig {
            window: self.window,
            time_backtrack: self.time_backtrack,
        }
    }

    /// The highest packet id committed so far (id 0 before the first).
    pub const fn highest(&self) -> PacketId {
        PacketId {
            id: self.id,
            time: self.time,
        }
    }

    /// Entry `back` ids behind the highest, when inside the window.
    fn entry(&self, back: u32) -> Option<Option<Instant>> {
        let back = usize::try_from(back).ok()?;
        if back >= self.len {
            return None;
        }
        let index = (self.head + self.ring.len() - back) % self.ring.len();
        self.ring.get(index).copied()
    }

    fn entry_mut(&mut self, back: u32) -> Option<&mut Option<Instant>> {
        let back = usize::try_from(back).ok()?;
        if back >= self.len {
            return None;
        }
        let index = (self.head + self.ring.len() - back) % self.ring.len();
        self.ring.get_mut(index)
    }

    fn push(&mut self, arrival: Option<Instant>) {
        if self.ring.is_empty() {
            return;
        }
        self.head = (self.head + 1) % self.ring.len();
        if let Some(slot) = self.ring.get_mut(self.head) {
            *slot = arrival;
        }
        self.len = (self.len + 1).min(self.ring.len());
    }

    /// Whether `pid` would be accepted at `now`. Changes nothing.
    ///
    /// # Errors
    ///
    /// The [`ReplayError`] saying why the id is refused.
    pub fn check(&self, pid: PacketId, now: Instant) -> Result<(), ReplayError> {
        if pid.id == 0 {
            return Err(ReplayError::ZeroId);
        }
        if pid.time < self.time {
            return Err(ReplayError::TimeBacktrack);
        }
        if pid.time > self.time {
            return if self.window == 0 && pid.id != 1 {
                Err(ReplayError::OutOfSequence)
            } else {
                Ok(())
            };
        }
        if self.window == 0 {
            return if self.id == 0 || pid.id == self.id.wrapping_add(1) {
                Ok(())
            } else {
                Err(ReplayError::OutOfSequence)
            };
        }
        if pid.id > self.id {
            return Ok(());
        }
        let back = self.id - pid.id;
        match self.entry(back) {
            None => Err(ReplayError::TooOld),
            Some(Some(_)) => Err(ReplayError::Replayed),
            Some(None) if self.expired(back, now) => Err(ReplayError::Expired),
            Some(None) => Ok(()),
        }
    }

    /// Whether some id at most `back` behind the highest arrived longer ago than the time
    /// tolerance: OpenVPN's reap marks that entry and every older one expired.
    fn expired(&self, back: u32, now: Instant) -> bool {
        if self.time_backtrack.is_zero() {
            return false;
        }
        (0..=back).any(|newer| {
            matches!(self.entry(newer), Some(Some(arrival))
                if arrival + self.time_backtrack < now)
        })
    }

    /// Records `pid` as received at `now`. Call only after [`ReplayWindow::check`] accepted it
    /// and the packet authenticated.
    pub fn commit(&mut self, pid: PacketId, now: Instant) {
        if self.window == 0 {
            self.time = pid.time;
            self.id = pid.id;
            return;
        }
        if self.len == 0
            || pid.time > self.time
            || (pid.id >= self.window && pid.id - self.window > self.id)
        {
            // A new time, or a jump beyond the window: start a fresh window that ends at `pid`.
            self.time = pid.time;
            self.id = pid.id.saturating_sub(self.window);
            self.len = 0;
        }
        while self.id < pid.id {
            self.push(None);
            self.id += 1;
        }
        let back = self.id - pid.id;
        if let Some(slot) = self.entry_mut(back) {
            *slot = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pid(id: u32, time: u32) -> PacketId {
        PacketId { id, time }
    }

    fn accept(window: &mut ReplayWindow, p: PacketId, now: Instant) -> Result<(), ReplayError> {
        window.check(p, now)?;
        window.commit(p, now);
        Ok(())
    }

    const T0: Instant = Instant::from_secs(100);

    #[test]
    fn sender_counts_from_one_with_fixed_time() {
        let mut sender = PacketIdSender::new(PacketIdForm::Long);
        assert_eq!(sender.next(1000), Some(pid(1, 1000)));
        assert_eq!(sender.next(1005), Some(pid(2, 1000)));
        let mut short = PacketIdSender::new(PacketIdForm::Short);
        assert_eq!(short.next(1000), Some(pid(1, 0)));
        assert_eq!(short.next(1000), Some(pid(2, 0)));
    }

    #[test]
    fn sender_wraps_only_long_form_with_newer_time() {
        let mut short = PacketIdSender::new(PacketIdForm::Short);
        short.last.id = u32::MAX;
        assert_eq!(short.next(5), None);
        let mut long = PacketIdSender::new(PacketIdForm::Long);
        long.next(1000);
        long.last.id = u32::MAX;
        assert_eq!(long.next(1000), None);
        assert_eq!(long.next(1001), Some(pid(1, 1001)));
    }

    #[test]
    fn restarted_sender_uses_a_later_time() {
        let mut sender = PacketIdSender::new(PacketIdForm::Long);
        sender.next(1000);
        let mut again = sender.restarted();
        assert_eq!(again.next(1000), Some(pid(1, 1001)));
        let mut later = sender.restarted();
        assert_eq!(later.next(2000), Some(pid(1, 2000)));
    }

    #[test]
    fn packet_id_wire_forms() {
        let mut out = [0u8; 8];
        assert!(PacketIdForm::Long.write(pid(1, 0x6b02_0ae7), &mut out));
        assert_eq!(out, [0, 0, 0, 1, 0x6b, 0x02, 0x0a, 0xe7]);
        assert_eq!(PacketIdForm::Long.read(&out), Some(pid(1, 0x6b02_0ae7)));
        assert_eq!(PacketIdForm::Short.read(&out), Some(pid(1, 0)));
        assert_eq!(PacketIdForm::Long.read(&out[..7]), None);
        assert!(!PacketIdForm::Long.write(pid(1, 1), &mut out[..7]));
    }

    #[test]
    fn first_packet_may_have_any_nonzero_id() {
        // The captured p2p server's first packet on the wire carried id 2.
        let mut window = ReplayWindow::new(ReplayConfig::default());
        assert_eq!(window.check(pid(0, 5), T0), Err(ReplayError::ZeroId));
        accept(&mut window, pid(2, 5), T0).unwrap();
        accept(&mut window, pid(1, 5), T0).unwrap();
        assert_eq!(
            accept(&mut window, pid(1, 5), T0),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            accept(&mut window, pid(2, 5), T0),
            Err(ReplayError::Replayed)
        );
        accept(&mut window, pid(3, 5), T0).unwrap();
    }

    #[test]
    fn window_edges() {
        let mut window = ReplayWindow::new(ReplayConfig::default());
        accept(&mut window, pid(100, 7), T0).unwrap();
        // 64 entries: ids 37..=100. 37 is the oldest still tracked.
        accept(&mut window, pid(37, 7), T0).unwrap();
        assert_eq!(window.check(pid(36, 7), T0), Err(ReplayError::TooOld));
        // A jump further than the window starts afresh; the ids just below it become acceptable.
        accept(&mut window, pid(1000, 7), T0).unwrap();
        accept(&mut window, pid(999, 7), T0).unwrap();
        assert_eq!(window.check(pid(936, 7), T0), Err(ReplayError::TooOld));
        accept(&mut window, pid(937, 7), T0).unwrap();
        assert_eq!(window.check(pid(101, 7), T0), Err(ReplayError::TooOld));
    }

    #[test]
    fn newer_time_resets_the_window_and_older_time_is_refused() {
        let mut window = ReplayWindow::new(ReplayConfig::default());
        accept(&mut window, pid(50, 7), T0).unwrap();
        // The peer restarted: new time, ids from 1 again.
        accept(&mut window, pid(1, 8), T0).unwrap();
        accept(&mut window, pid(2, 8), T0).unwrap();
        assert_eq!(
            window.check(pid(51, 7), T0),
            Err(ReplayError::TimeBacktrack)
        );
        assert_eq!(
            accept(&mut window, pid(1, 8), T0),
            Err(ReplayError::Replayed)
        );
        assert_eq!(window.highest(), pid(2, 8));
    }

    #[test]
    fn late_packets_expire_after_time_backtrack() {
        let mut window = ReplayWindow::new(ReplayConfig::default());
        accept(&mut window, pid(1, 7), T0).unwrap();
        accept(&mut window, pid(3, 7), T0).unwrap();
        // Id 2 is late but inside the window and the tolerance.
        assert_eq!(
            window.check(pid(2, 7), T0 + Duration::from_secs(15)),
            Ok(())
        );
        // Newer packets arrived more than 15 s ago: id 2 is expired now.
        assert_eq!(
            window.check(pid(2, 7), T0 + Duration::from_secs(16)),
            Err(ReplayError::Expired)
        );
        // A fresh packet arriving later does not revive it.
        accept(&mut window, pid(4, 7), T0 + Duration::from_secs(20)).unwrap();
        assert_eq!(
            window.check(pid(2, 7), T0 + Duration::from_secs(20)),
            Err(ReplayError::Expired)
        );
        // But a gap left by the fresh one is still fine for a while.
        accept(&mut window, pid(6, 7), T0 + Duration::from_secs(20)).unwrap();
        assert_eq!(
            window.check(pid(5, 7), T0 + Duration::from_secs(30)),
            Ok(())
        );
        // Without a time tolerance nothing expires.
        let mut forever = ReplayWindow::new(ReplayConfig {
            window: 64,
            time_backtrack: Duration::ZERO,
        });
        accept(&mut forever, pid(1, 7), T0).unwrap();
        accept(&mut forever, pid(3, 7), T0).unwrap();
        assert_eq!(
            forever.check(pid(2, 7), T0 + Duration::from_secs(10_000)),
            Ok(())
        );
    }

    #[test]
    fn strict_mode_needs_consecutive_ids() {
        let mut window = ReplayWindow::new(ReplayConfig {
            window: 0,
            time_backtrack: Duration::ZERO,
        });
        accept(&mut window, pid(5, 0), T0).unwrap();
        assert_eq!(
            accept(&mut window, pid(7, 0), T0),
            Err(ReplayError::OutOfSequence)
        );
        accept(&mut window, pid(6, 0), T0).unwrap();
        assert_eq!(
            accept(&mut window, pid(6, 0), T0),
            Err(ReplayError::OutOfSequence)
        );
        assert_eq!(
            accept(&mut window, pid(2, 1), T0),
            Err(ReplayError::OutOfSequence)
        );
        accept(&mut window, pid(1, 1), T0).unwrap();
    }

    #[test]
    fn check_alone_changes_nothing() {
        let mut window = ReplayWindow::new(ReplayConfig::default());
        accept(&mut window, pid(10, 7), T0).unwrap();
        let before = window.clone();
        for id in 0..100 {
            let _ = window.check(pid(id, 7), T0);
            let _ = window.check(pid(id, 9), T0);
        }
        assert_eq!(window.highest(), before.highest());
        assert_eq!(window.ring, before.ring);
    }

    proptest! {
        #[test]
        fn never_accepts_an_id_twice(
            ids in proptest::collection::vec(1u32..200, 1..300),
            times in proptest::collection::vec(0u32..3, 300),
        ) {
            let mut window = ReplayWindow::new(ReplayConfig::default());
            let mut accepted = std::collections::BTreeSet::new();
            for (n, id) in ids.iter().enumerate() {
                let p = pid(*id, times[n]);
                let now = T0 + Duration::from_millis(n as u64);
                if accept(&mut window, p, now).is_ok() {
                    prop_assert!(accepted.insert((p.time, p.id)), "accepted {:?} twice", p);
                }
            }
        }

        #[test]
        fn accepts_every_fresh_in_window_id_in_any_order(
            order in Just((1u32..=64).collect::<Vec<_>>()).prop_shuffle(),
            base in 0u32..1_000_000,
        ) {
            let mut window = ReplayWindow::new(ReplayConfig::default());
            for (n, offset) in order.iter().enumerate() {
                let now = T0 + Duration::from_millis(n as u64);
                prop_assert_eq!(accept(&mut window, pid(base + offset, 3), now), Ok(()));
            }
            for offset in &order {
                prop_assert_eq!(
                    window.check(pid(base + offset, 3), T0),
                    Err(ReplayError::Replayed)
                );
            }
        }

        #[test]
        fn accepts_reordering_within_the_window(
            blocks in proptest::collection::vec(
                Just((0u32..64).collect::<Vec<_>>()).prop_shuffle(),
                1..8,
            ),
        ) {
            // A stream reordered only inside blocks of 64 consecutive ids never falls behind the
            // window: every packet is accepted exactly once.
            let mut window = ReplayWindow::new(ReplayConfig::default());
            let mut n = 0u64;
            for (block, order) in blocks.iter().enumerate() {
                for offset in order {
                    let id = 1 + block as u32 * 64 + offset;
                    let now = T0 + Duration::from_millis(n);
                    n += 1;
                    prop_assert_eq!(accept(&mut window, pid(id, 1), now), Ok(()), "id {}", id);
                }
            }
        }
    }
}
