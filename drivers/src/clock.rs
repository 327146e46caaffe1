//! The driver's clock and seed: the two inputs core may not produce itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erebus_sansio::{Instant, Seed, UnixTime, WallClock};

/// Reads the operating system's clocks and converts them into core's time types.
///
/// The monotonic timeline starts at zero when the clock is created, so recorded sessions carry
/// small, readable timestamps.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
    unix_at_start: UnixTime,
}

impl Clock {
    /// Starts a clock whose epoch is now.
    pub fn start() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self {
            start: std::time::Instant::now(),
            unix_at_start: anchor(since_epoch),
        }
    }

    /// The current monotonic time.
    pub fn now(&self) -> Instant {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(micros)
    }

    /// The wall clock anchored at this clock's start, for the protocols that need wall time.
    pub fn wall_clock(&self) -> WallClock {
        WallClock::new(Instant::ZERO, self.unix_at_start)
    }

    /// How long from now until `deadline`, or zero if it has passed.
    pub fn until(&self, deadline: Instant) -> Duration {
        deadline.saturating_duration_since(self.now())
    }
}

/// The whole-second anchor for a wall clock started `since_epoch` after the Unix epoch.
///
/// Rounded up: the wall clock adds whole elapsed seconds to this, so rounded down it would lag
/// real time by up to a second, and a certificate made a moment ago would look not valid yet.
/// Rounded up it runs at most a second ahead.
fn anchor(since_epoch: Duration) -> UnixTime {
    UnixTime::from_secs(since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0))
}

/// A fresh 32-byte seed from the operating system's random source.
///
/// # Errors
///
/// Fails only when the operating system cannot provide randomness.
pub fn os_seed() -> anyhow::Result<Seed> {
    let mut bytes = [0u8; Seed::LEN];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(Seed::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_from_zero() {
        let clock = Clock::start();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a < Instant::from_secs(60));
        assert_eq!(clock.until(Instant::ZERO), Duration::ZERO);
    }

    #[test]
    fn wall_time_never_lags_the_system_clock() {
        // Every start fraction against every elapsed fraction, including the exact seconds
        // where rounding could go either way.
        let fractions = [0, 1, 250_000_000, 500_000_000, 999_999_999];
        for start_nanos in fractions {
            let since_epoch = Duration::new(1_796_667_616, start_nanos);
            let wall = WallClock::new(Instant::ZERO, anchor(since_epoch));
            for elapsed_secs in [0, 1, 59, 3_600] {
                for elapsed_nanos in fractions {
                    let elapsed = Duration::new(elapsed_secs, elapsed_nanos);
                    let real = (since_epoch + elapsed).as_secs();
                    let micros = u64::try_from(elapsed.as_micros()).unwrap();
                    let shown = wall.at(Instant::from_micros(micros)).as_secs();
                    assert!(
                        shown >= real && shown <= real + 1,
                        "started at {since_epoch:?}, {elapsed:?} later: shows {shown}, real {real}"
                    );
                }
            }
        }
    }

    #[test]
    fn os_seeds_differ() {
        assert_ne!(os_seed().unwrap(), os_seed().unwrap());
    }
}
