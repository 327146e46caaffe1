//! The resolver's cache: answers by name and record type, positive and negative, each until
//! its TTL runs out.
//!
//! The cache is bounded. When it is full, expired entries go first, then the entry that would
//! expire soonest: it is the one worth least, and picking it needs no usage tracking.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use erebus_sansio::Instant;
use erebus_wire::dns::RecordType;

/// A name, lower-cased and without the trailing dot, and the record type asked for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CacheKey {
    name: String,
    qtype: RecordType,
}

/// What the servers said about a name and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Cached {
    /// The addresses at the end of the CNAME chain; never empty.
    Addresses(Vec<IpAddr>),
    /// The name exists but has no record of this type (NODATA).
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
}

/// A bounded cache of answers.
#[derive(Debug)]
pub(super) struct Cache {
    capacity: usize,
    entries: BTreeMap<CacheKey, (Instant, Cached)>,
    /// The same entries ordered by expiry, to find the expired and the soonest-expiring.
    by_expiry: BTreeSet<(Instant, CacheKey)>,
}

impl Cache {
    /// An empty cache that holds at most `capacity` entries (none when zero).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// The answer for `name` (already lower-cased) and `qtype`, if one is still valid at `now`.
    pub(super) fn get(&self, now: Instant, name: &str, qtype: RecordType) -> Option<&Cached> {
        let key = CacheKey {
            name: name.to_owned(),
            qtype,
        };
        self.entries
            .get(&key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, value)| value)
    }

    /// Stores `value` for `name` and `qtype` until `expires`, replacing any older answer.
    pub(super) fn insert(
        &mut self,
        now: Instant,
        name: &str,
        qtype: RecordType,
        expires: Instant,
        value: Cached,
    ) {
        if self.capacity == 0 || expires <= now {
            return;
        }
        let key = CacheKey {
            name: name.to_owned(),
            qtype,
        };
        if let Some((old_expiry, _)) = self.entries.remove(&key) {
            self.by_expiry.remove(&(old_expiry, key.clone()));
        }
        self.remove_expired(now);
        while self.entries.len() >= self.capacity {
            let Some((_, soonest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&soonest);
        }
        self.by_expiry.insert((expires, key.clone()));
        self.entries.insert(key, (expires, value));
    }

    /// Drops every entry.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.by_expiry.clear();
    }

    /// The number of entries, expired ones included until they are swept.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn remove_expired(&mut self, now: Instant) {
        while let Some((expires, _)) = self.by_expiry.first() {
            if *expires > now {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(last: u8) -> Cached {
        Cached::Addresses(vec![IpAddr::from([10, 0, 0, last])])
    }

    #[test]
    fn entries_expire() {
        let mut cache = Cache::new(4);
        let t0 = Instant::from_secs(10);
        cache.insert(
            t0,
            "a.corp",
            RecordType::A,
            Instant::from_secs(20),
            addresses(1),
        );
        assert_eq!(
            cache.get(Instant::from_secs(19), "a.corp", RecordType::A),
            Some(&addresses(1))
        );
        assert_eq!(
            cache.get(Instant::from_secs(19), "a.corp", RecordType::Aaaa),
            None
        );
        assert_eq!(
            cache.get(Instant::from_secs(20), "a.corp", RecordType::A),
            None
        );
    }

    #[test]
    fn full_cache_evicts_expired_then_soonest_expiring() {
        let mut cache = Cache::new(2);
        let t0 = Instant::ZERO;
        cache.insert(
            t0,
            "long",
            RecordType::A,
            Instant::from_secs(100),
            addresses(1),
        );
        cache.insert(
            t0,
            "short",
            RecordType::A,
            Instant::from_secs(5),
            addresses(2),
        );
        // Full: "short" expires first, so it goes.
        cache.insert(
            t0,
            "mid",
            RecordType::A,
            Instant::from_secs(50),
            Cached::NxDomain,
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(t0, "short", RecordType::A), None);
        assert_eq!(cache.get(t0, "long", RecordType::A), Some(&addresses(1)));
        assert_eq!(cache.get(t0, "mid", RecordType::A), Some(&Cached::NxDomain));

        // At 60 s "mid" has expired and is swept before anything valid is evicted.
        let later = Instant::from_secs(60);
        cache.insert(
            later,
            "new",
            RecordType::A,
            Instant::from_secs(70),
            Cached::NoData,
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(later, "long", RecordType::A), Some(&addresses(1)));
        assert_eq!(
            cache.get(later, "new", RecordType::A),
            Some(&Cached::NoData)
        );
    }

    #[test]
    fn replacing_an_entry_keeps_one_copy() {
        let mut cache = Cache::new(2);
        let t0 = Instant::ZERO;
        cache.insert(t0, "a", RecordType::A, Instant::from_secs(5), addresses(1));
        cache.insert(t0, "a", RecordType::A, Instant::from_secs(9), addresses(2));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.by_expiry.len(), 1);
        assert_eq!(
            cache.get(Instant::from_secs(6), "a", RecordType::A),
            Some(&addresses(2))
        );
    }

    #[test]
    fn zero_capacity_and_zero_ttl_store_nothing() {
        let mut cache = Cache::new(0);
        cache.insert(
            Instant::ZERO,
            "a",
            RecordType::A,
            Instant::from_secs(5),
            addresses(1),
        );
        assert_eq!(cache.len(), 0);
        let mut cache = Cache::new(3);
        cache.insert(
            Instant::from_secs(5),
            "a",
            RecordType::A,
            Instant::from_secs(5),
            addresses(1),
        );
        assert_eq!(cache.len(), 0);
        cache.insert(
            Instant::ZERO,
            "b",
            RecordType::A,
            Instant::from_secs(5),
            addresses(1),
        );
        cache.clear();
        assert_eq!(cache.len(), 0);
        assert!(cache.by_expiry.is_empty());
    }
}
