//! Time as the state machines see it.
//!
//! Core never reads a clock. Drivers read their monotonic clock once per input and pass the
//! result in as an [`Instant`]; tests and replays build instants from plain integers. Wall time,
//! which only a few protocol details need (tls-auth replay timestamps, certificate validity), is
//! a separate input: [`UnixTime`].

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point on a monotonic timeline, in microseconds since an arbitrary epoch chosen by the
/// driver.
///
/// Unlike `std::time::Instant` it can be constructed from a number, prints the same way on
/// every run, and maps directly onto pcap timestamps, which is what deterministic replay needs.
/// Arithmetic saturates instead of panicking: a state machine fed a bogus time must not crash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The epoch of the timeline.
    pub const ZERO: Self = Self { micros: 0 };
    /// The latest representable instant; useful as "never".
    pub const MAX: Self = Self { micros: u64::MAX };

    /// Builds an instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// Builds an instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self {
            micros: millis.saturating_mul(1_000),
        }
    }

    /// Builds an instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            micros: secs.saturating_mul(1_000_000),
        }
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Milliseconds since the epoch, rounded down.
    pub const fn as_millis(self) -> u64 {
        self.micros / 1_000
    }

    /// Time elapsed since `earlier`, or zero when `earlier` is later than `self`.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }

    /// `self + duration`, or `None` past the end of the timeline.
    pub fn checked_add(self, duration: Duration) -> Option<Self> {
        let add = u64::try_from(duration.as_micros()).ok()?;
        self.micros.checked_add(add).map(Self::from_micros)
    }

    /// `self - duration`, or `None` before the epoch.
    pub fn checked_sub(self, duration: Duration) -> Option<Self> {
        let sub = u64::try_from(duration.as_micros()).ok()?;
        self.micros.checked_sub(sub).map(Self::from_micros)
    }
}

impl Add<Duration> for Instant {
    type Output = Self;

    /// Saturates at [`Instant::MAX`].
    fn add(self, rhs: Duration) -> Self {
        self.checked_add(rhs).unwrap_or(Self::MAX)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Duration> for Instant {
    type Output = Self;

    /// Saturates at [`Instant::ZERO`].
    fn sub(self, rhs: Duration) -> Self {
        self.checked_sub(rhs).unwrap_or(Self::ZERO)
    }
}

impl Sub for Instant {
    type Output = Duration;

    /// Saturates at zero, like [`Instant::saturating_duration_since`].
    fn sub(self, rhs: Self) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Wall-clock time: seconds since the Unix epoch, passed in by the driver where a protocol
/// needs it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct UnixTime {
    secs: u64,
}

impl UnixTime {
    /// Builds a wall-clock time from seconds since 1970-01-01T00:00:00Z.
    pub const fn from_secs(secs: u64) -> Self {
        Self { secs }
    }

    /// Seconds since the Unix epoch.
    pub const fn as_secs(self) -> u64 {
        self.secs
    }
}

/// Converts monotonic instants into wall-clock time from one reading taken at start-up.
///
/// Protocols that need wall time derive it as `unix_at_start + (now - start)`, so a session
/// stays replayable from its monotonic inputs alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    start: Instant,
    unix_at_start: UnixTime,
}

impl WallClock {
    /// Anchors the wall clock: at monotonic `start` it was `unix_at_start`.
    pub const fn new(start: Instant, unix_at_start: UnixTime) -> Self {
        Self {
            start,
            unix_at_start,
        }
    }

    /// The wall-clock time at monotonic `now`. Instants before the anchor map to the anchor.
    pub fn at(&self, now: Instant) -> UnixTime {
        let elapsed = now.saturating_duration_since(self.start).as_secs();
        UnixTime::from_secs(self.unix_at_start.secs.saturating_add(elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_agree() {
        assert_eq!(Instant::from_secs(2), Instant::from_millis(2_000));
        assert_eq!(Instant::from_millis(3), Instant::from_micros(3_000));
        assert_eq!(Instant::from_micros(1_234_567).as_millis(), 1_234);
    }

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::ZERO - Instant::from_secs(5), Duration::ZERO);
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::MAX);
        assert_eq!(
            Instant::from_secs(5) - Instant::from_secs(2),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn debug_is_stable_text() {
        assert_eq!(
            format!("{:?}", Instant::from_micros(12_000_345)),
            "12.000345s"
        );
    }

    #[test]
    fn wall_clock_follows_monotonic_time() {
        let clock = WallClock::new(Instant::from_secs(100), UnixTime::from_secs(1_700_000_000));
        assert_eq!(clock.at(Instant::from_secs(100)).as_secs(), 1_700_000_000);
        assert_eq!(
            clock.at(Instant::from_millis(161_900)).as_secs(),
            1_700_000_061
        );
        assert_eq!(clock.at(Instant::ZERO).as_secs(), 1_700_000_000);
    }
}
