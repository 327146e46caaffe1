//! A bounded set of byte ranges, for out-of-order reassembly and the SACK scoreboard.
//!
//! Offsets are relative to a moving origin (the next expected byte on the receive side, the
//! oldest unacknowledged byte on the send side). The ranges live in a vector that grows only
//! when the number of holes reaches a new high (a connection that never loses a segment holds
//! none), up to [`MAX_RANGES`]; then a range that merges with none is refused, and the peer's
//! retransmission brings the bytes again later.

use core::ops::Range;

/// The most disjoint ranges tracked. A burst of queue drops on a fast path can open a few
/// hundred holes in one window; past this the bytes are simply dropped and arrive again.
pub const MAX_RANGES: usize = 256;

/// The range could not be recorded because every slot holds a disjoint range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyRanges;

/// Sorted, disjoint, non-adjacent half-open ranges `start..end` of offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembler {
    ranges: Vec<(u32, u32)>,
}

impl Default for Assembler {
    fn default() -> Self {
        Self::new()
    }
}

impl Assembler {
    /// An empty set.
    pub const fn new() -> Self {
        Self { ranges: Vec::new() }
    }

    /// Whether no range is recorded.
    pub const fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Forgets every range.
    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    /// The recorded ranges, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Range<u32>> + '_ {
        self.ranges.iter().map(|&(s, e)| s..e)
    }

    /// The number of disjoint ranges.
    pub const fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The end of the highest range, or 0.
    pub fn highest_end(&self) -> u32 {
        self.ranges.last().map_or(0, |&(_, end)| end)
    }

    /// Bytes covered in total.
    pub fn covered(&self) -> u64 {
        self.iter().map(|r| u64::from(r.end - r.start)).sum()
    }

    /// Bytes covered inside `range`.
    pub fn covered_in(&self, range: Range<u32>) -> u64 {
        self.iter()
            .map(|r| {
                let start = r.start.max(range.start);
                let end = r.end.min(range.end);
                u64::from(end.saturating_sub(start))
            })
            .sum()
    }

    /// Whether `offset` is covered.
    pub fn contains(&self, offset: u32) -> bool {
        self.iter().any(|r| r.contains(&offset))
    }

    /// The first stretch at or after `from` and below `limit` that no range covers.
    pub fn first_uncovered(&self, from: u32, limit: u32) -> Option<Range<u32>> {
        let mut at = from;
        for r in self.iter() {
            if at >= limit {
                return None;
            }
            if r.end <= at {
                continue;
            }
            if r.start > at {
                return Some(at..r.start.min(limit));
            }
            at = r.end;
        }
        (at < limit).then_some(at..limit)
    }

    /// Records `start..end`, merging it with the ranges it touches or overlaps.
    ///
    /// # Errors
    ///
    /// [`TooManyRanges`] when the range touches no recorded one and every slot is in use; the
    /// set is unchanged then.
    pub fn add(&mut self, start: u32, end: u32) -> Result<(), TooManyRanges> {
        if start >= end {
            return Ok(());
        }
        // First range that ends at or after `start` (it may merge), and the first that starts
        // after `end` (it may not).
        let count = self.ranges.len();
        let first = self
            .ranges
            .iter()
            .position(|&(_, e)| e >= start)
            .unwrap_or(count);
        let past = self.ranges[first..]
            .iter()
            .position(|&(s, _)| s > end)
            .map_or(count, |p| first + p);
        if first == past {
            if count == MAX_RANGES {
                return Err(TooManyRanges);
            }
            self.ranges.insert(first, (start, end));
            return Ok(());
        }
        let merged = (
            start.min(self.ranges[first].0),
            end.max(self.ranges[past - 1].1),
        );
        self.ranges[first] = merged;
        self.ranges.drain(first + 1..past);
        Ok(())
    }

    /// How many bytes from offset 0 are covered without a gap.
    pub fn front_len(&self) -> u32 {
        match self.ranges.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// Moves the origin forward by `amount`: ranges below it are dropped or trimmed, the
    /// rest shift down.
    pub fn advance(&mut self, amount: u32) {
        if amount == 0 {
            return;
        }
        self.ranges.retain_mut(|(s, e)| {
            if *e <= amount {
                return false;
            }
            *s = s.saturating_sub(amount);
            *e -= amount;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranges(a: &Assembler) -> Vec<(u32, u32)> {
        a.iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn merges_touching_and_overlapping() {
        let mut a = Assembler::new();
        a.add(10, 20).unwrap();
        a.add(30, 40).unwrap();
        assert_eq!(ranges(&a), [(10, 20), (30, 40)]);
        a.add(20, 25).unwrap();
        assert_eq!(ranges(&a), [(10, 25), (30, 40)]);
        a.add(5, 35).unwrap();
        assert_eq!(ranges(&a), [(5, 40)]);
        a.add(0, 2).unwrap();
        assert_eq!(a.front_len(), 2);
        assert_eq!(a.covered(), 37);
        assert_eq!(a.first_uncovered(0, 100), Some(2..5));
        assert_eq!(a.first_uncovered(6, 100), Some(40..100));
        assert_eq!(a.first_uncovered(6, 30), None);
        assert_eq!(a.covered_in(1..10), 6);
        a.advance(3);
        assert_eq!(ranges(&a), [(2, 37)]);
        a.advance(10);
        assert_eq!(ranges(&a), [(0, 27)]);
        assert_eq!(a.highest_end(), 27);
    }

    #[test]
    fn refuses_a_disjoint_range_when_full_but_merges_still() {
        let mut a = Assembler::new();
        for i in 0..MAX_RANGES as u32 {
            a.add(i * 10, i * 10 + 5).unwrap();
        }
        assert_eq!(a.add(100_000, 100_001), Err(TooManyRanges));
        assert_eq!(a.len(), MAX_RANGES);
        a.add(5, 10).unwrap();
        assert_eq!(a.len(), MAX_RANGES - 1);
        assert_eq!(a.front_len(), 15);
    }

    proptest! {
        /// The set always equals the union of what was added (when nothing was refused),
        /// checked against a bitmap.
        #[test]
        fn matches_a_bitmap(adds in proptest::collection::vec((0u32..200, 1u32..30), 0..40),
                            shift in 0u32..100) {
            let mut a = Assembler::new();
            let mut bits = vec![false; 256];
            for (start, len) in adds {
                if a.add(start, start + len).is_ok() {
                    for b in &mut bits[start as usize..(start + len) as usize] {
                        *b = true;
                    }
                }
            }
            a.advance(shift);
            let bits = &bits[shift as usize..];
            for (offset, &set) in bits.iter().enumerate() {
                prop_assert_eq!(a.contains(offset as u32), set);
            }
            let collected = ranges(&a);
            for pair in collected.windows(2) {
                prop_assert!(pair[0].1 < pair[1].0);
            }
        }
    }
}
