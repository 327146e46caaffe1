//! Round-trip time estimation and the retransmission timeout (RFC 6298).

use core::time::Duration;

/// Smoothed RTT, its variation and the retransmission timeout derived from them, with
/// exponential backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    latest: Option<Duration>,
    min_rtt: Option<Duration>,
    base_rto: Duration,
    backoff: u32,
    min_rto: Duration,
    max_rto: Duration,
}

/// The clock granularity term G of RFC 6298: our timestamps tick in milliseconds.
const GRANULARITY: Duration = Duration::from_millis(1);

impl RttEstimator {
    /// An estimator with no sample yet: the timeout starts at `initial_rto`, and is kept
    /// within `min_rto..=max_rto`.
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            latest: None,
            min_rtt: None,
            base_rto: initial_rto.clamp(min_rto, max_rto),
            backoff: 0,
            min_rto,
            max_rto,
        }
    }

    /// The smoothed RTT, once there is a sample.
    pub const fn smoothed(&self) -> Option<Duration> {
        self.srtt
    }

    /// Feeds one RTT measurement (RFC 6298 section 2).
    pub fn sample(&mut self, rtt: Duration) {
        self.latest = Some(rtt);
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.base_rto =
            (srtt + (self.rttvar * 4).max(GRANULARITY)).clamp(self.min_rto, self.max_rto);
    }

    /// The smoothed RTT, once a sample exists.
    pub const fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The RTT variation.
    pub const fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// The smallest sample seen.
    pub const fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The latest sample.
    pub const fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// The current timeout, backoff included.
    pub fn rto(&self) -> Duration {
        let factor = 1u32.checked_shl(self.backoff).unwrap_or(u32::MAX);
        self.base_rto
            .checked_mul(factor)
            .unwrap_or(self.max_rto)
            .min(self.max_rto)
    }

    /// Doubles the timeout after it expired (RFC 6298 rule 5.5).
    pub fn back_off(&mut self) {
        if self.rto() < self.max_rto {
            self.backoff += 1;
        }
    }

    /// Forgets the backoff once new data is acknowledged.
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// How many times the timeout has been doubled.
    pub const fn backoff(&self) -> u32 {
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn follows_rfc6298() {
        let mut rtt = RttEstimator::new(ms(1000), ms(200), ms(60_000));
        assert_eq!(rtt.rto(), ms(1000));
        rtt.sample(ms(100));
        // SRTT = 100, RTTVAR = 50, RTO = 100 + 200 = 300.
        assert_eq!(rtt.rto(), ms(300));
        rtt.sample(ms(200));
        // RTTVAR = 3/4*50 + 1/4*100 = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5.
        assert_eq!(rtt.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(rtt.rto(), Duration::from_micros(112_500 + 250_000));
        assert_eq!(rtt.min_rtt(), Some(ms(100)));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut rtt = RttEstimator::new(ms(1000), ms(200), ms(5000));
        rtt.back_off();
        assert_eq!(rtt.rto(), ms(2000));
        rtt.back_off();
        rtt.back_off();
        assert_eq!(rtt.rto(), ms(5000));
        rtt.back_off();
        assert_eq!(rtt.rto(), ms(5000));
        rtt.reset_backoff();
        assert_eq!(rtt.rto(), ms(1000));
    }

    #[test]
    fn minimum_applies() {
        let mut rtt = RttEstimator::new(ms(1000), ms(200), ms(60_000));
        rtt.sample(ms(1));
        assert_eq!(rtt.rto(), ms(200));
    }
}
