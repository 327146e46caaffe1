//! What the whole-path simulations share: the seeded outer link and the checked byte streams.

#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::BTreeMap;
use std::time::Duration;

use erebus_sansio::{Instant, SeededRng};

/// Which way a datagram travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Way {
    ToServer,
    ToClient,
}

/// The outer link: a fixed delay, and seeded loss, duplication and reordering.
pub(crate) struct Link {
    /// A TCP connection: nothing lost, duplicated or reordered.
    reliable: bool,
    rng: SeededRng,
    in_flight: BTreeMap<(Instant, u64), (Way, Vec<u8>)>,
    sequence: u64,
    /// Datagrams (or stream chunks) handed to the link.
    pub(crate) sent: u64,
    /// Of those, how many it dropped.
    pub(crate) lost: u64,
}

impl Link {
    /// A lossy link (or a reliable one, for a TCP transport) drawing from `rng`.
    pub(crate) fn new(reliable: bool, rng: SeededRng) -> Self {
        Self {
            reliable,
            rng,
            in_flight: BTreeMap::new(),
            sequence: 0,
            sent: 0,
            lost: 0,
        }
    }

    const DELAY: Duration = Duration::from_millis(10);
    /// Per mille.
    const LOSS: u32 = 20;
    const DUPLICATION: u32 = 10;
    const REORDERING: u32 = 20;

    pub(crate) fn send(&mut self, now: Instant, way: Way, bytes: &[u8]) {
        self.sent += 1;
        if self.reliable {
            self.sequence += 1;
            let at = now.max(self.in_flight.keys().last().map_or(now, |k| k.0)) + Self::DELAY;
            self.in_flight
                .insert((at, self.sequence), (way, bytes.to_vec()));
            return;
        }
        if self.rng.below(1000) < Self::LOSS {
            self.lost += 1;
            return;
        }
        let copies = if self.rng.below(1000) < Self::DUPLICATION {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + Self::DELAY;
            if self.rng.below(1000) < Self::REORDERING {
                at += Duration::from_millis(u64::from(1 + self.rng.below(15)));
            }
            self.sequence += 1;
            self.in_flight
                .insert((at, self.sequence), (way, bytes.to_vec()));
        }
    }

    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(at, _)| *at)
    }

    pub(crate) fn take_due(&mut self, now: Instant) -> Option<(Way, Vec<u8>)> {
        let (&key, _) = self.in_flight.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.in_flight.remove(&key)
    }
}

/// A byte stream the test sends and checks: byte `i` is a function of `i` and a salt.
pub(crate) fn pattern_byte(salt: u8, index: u64) -> u8 {
    (index.wrapping_mul(2_654_435_761) >> 13) as u8 ^ salt
}

/// One direction of bulk data: what was sent, what arrived and whether it was right.
#[derive(Default)]
pub(crate) struct Stream {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) corrupt: bool,
    pub(crate) paused: bool,
    pub(crate) eof: bool,
}

impl Stream {
    pub(crate) fn next_chunk(&mut self, salt: u8, total: u64, len: usize) -> Vec<u8> {
        let len = (total - self.sent).min(len as u64);
        let chunk = (self.sent..self.sent + len)
            .map(|i| pattern_byte(salt, i))
            .collect();
        self.sent += len;
        chunk
    }

    pub(crate) fn check(&mut self, salt: u8, bytes: &[u8]) {
        for (offset, &byte) in bytes.iter().enumerate() {
            if byte != pattern_byte(salt, self.received + offset as u64) {
                self.corrupt = true;
            }
        }
        self.received += bytes.len() as u64;
    }
}

pub(crate) const UP_SALT: u8 = 0x5a;
pub(crate) const DOWN_SALT: u8 = 0xa5;
