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
        // Rounded up: the wall clock adds whole elapsed seconds to this, so rounded down it
        // would lag real time by up to a second, and a certificate made a moment ago would
        // look not valid yet. Rounded up it runs at most a second ahead.
        let unix = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
        Self {
            start: std::time::Instant::now(),
            unix_at_start: UnixTime::from_secs(unix),
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
        let clock = Clock::start();
        for _ in 0..30 {
            let before = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let wall = clock.wall_clock().at(clock.now()).as_secs();
            assert!(
                wall >= before,
                "wall clock {wall} behind the system's {before}"
            );
            assert!(
                wall <= before + 2,
                "wall clock {wall} far ahead of {before}"
            );
            std::thread::sleep(Duration::from_millis(37));
        }
    }

    #[test]
    fn os_seeds_differ() {
        assert_ne!(os_seed().unwrap(), os_seed().unwrap());
    }
}
