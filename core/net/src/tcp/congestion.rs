//! Congestion control behind a small trait, with NewReno (RFC 5681, RFC 6582) and CUBIC
//! (RFC 9438).
//!
//! The socket owns loss detection and recovery (which bytes to retransmit, when recovery
//! ends); the controller only decides how large the congestion window is.

use core::fmt;
use core::time::Duration;

use erebus_sansio::Instant;

/// Which congestion controller a socket uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CongestionAlgorithm {
    /// CUBIC (RFC 9438), the default: it regains a large window quickly after a loss on a fast
    /// path.
    #[default]
    Cubic,
    /// NewReno (RFC 5681): additive increase, halving on loss.
    NewReno,
}

impl CongestionAlgorithm {
    /// A fresh controller of this kind for segments of `mss` bytes.
    pub fn build(self, mss: usize) -> Box<dyn CongestionController> {
        match self {
            Self::Cubic => Box::new(Cubic::new(mss)),
            Self::NewReno => Box::new(NewReno::new(mss)),
        }
    }
}

/// A congestion controller: the socket reports acknowledgments and losses, and sends no more
/// than [`window`](Self::window) bytes beyond what the peer has.
pub trait CongestionController: fmt::Debug + Send {
    /// The congestion window in bytes.
    fn window(&self) -> usize;

    /// The slow-start threshold in bytes (`usize::MAX` before the first loss).
    fn ssthresh(&self) -> usize;

    /// `acked` new bytes were acknowledged outside loss recovery; `srtt` is the smoothed RTT
    /// when known.
    fn on_ack(&mut self, now: Instant, acked: usize, srtt: Option<Duration>);

    /// Loss was detected by duplicate acknowledgments or SACK: reduce the window once for
    /// this recovery episode. `in_flight` is the data outstanding when it was detected.
    fn on_congestion_event(&mut self, now: Instant, in_flight: usize);

    /// The retransmission timer expired: collapse the window to one segment.
    fn on_rto(&mut self, now: Instant, in_flight: usize);

    /// The maximum segment size changed (after the handshake).
    fn set_mss(&mut self, mss: usize);
}

/// RFC 6928's initial window: ten segments.
fn initial_window(mss: usize) -> usize {
    10 * mss
}

/// Slow start with appropriate byte counting (RFC 3465, L = 2 segments).
fn slow_start_increase(acked: usize, mss: usize) -> usize {
    acked.min(2 * mss)
}

/// NewReno: slow start, then one segment per window of acknowledged bytes; half the flight
/// on loss.
#[derive(Clone, Debug)]
pub struct NewReno {
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    acked_in_avoidance: usize,
}

impl NewReno {
    /// A controller for segments of `mss` bytes, starting at the initial window.
    pub fn new(mss: usize) -> Self {
        let mss = mss.max(1);
        Self {
            mss,
            cwnd: initial_window(mss),
            ssthresh: usize::MAX,
            acked_in_avoidance: 0,
        }
    }
}

impl CongestionController for NewReno {
    fn window(&self) -> usize {
        self.cwnd
    }

    fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    fn on_ack(&mut self, _now: Instant, acked: usize, _srtt: Option<Duration>) {
        if self.cwnd < self.ssthresh {
            self.cwnd = self
                .cwnd
                .saturating_add(slow_start_increase(acked, self.mss));
        } else {
            self.acked_in_avoidance += acked;
            if self.acked_in_avoidance >= self.cwnd {
                self.acked_in_avoidance -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(self.mss);
            }
        }
    }

    fn on_congestion_event(&mut self, _now: Instant, in_flight: usize) {
        self.ssthresh = (in_flight / 2).max(2 * self.mss);
        self.cwnd = self.ssthresh;
        self.acked_in_avoidance = 0;
    }

    fn on_rto(&mut self, _now: Instant, in_flight: usize) {
        self.ssthresh = (in_flight / 2).max(2 * self.mss);
        self.cwnd = self.mss;
        self.acked_in_avoidance = 0;
    }

    fn set_mss(&mut self, mss: usize) {
        let mss = mss.max(1);
        if self.cwnd == initial_window(self.mss) {
            self.cwnd = initial_window(mss);
        }
        self.mss = mss;
    }
}

/// CUBIC's constant C, in segments per second cubed.
const CUBIC_C: f64 = 0.4;
/// CUBIC's multiplicative decrease factor.
const CUBIC_BETA: f64 = 0.7;

/// CUBIC (RFC 9438): the window grows as a cubic function of the time since the last loss,
/// centred on the window where that loss happened, with a Reno-friendly floor.
#[derive(Clone, Debug)]
pub struct Cubic {
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    /// The window before the last reduction, in segments (W_max).
    w_max: f64,
    /// Time from the epoch start to reach `w_max` again, in seconds (K).
    k: f64,
    /// When the current congestion-avoidance epoch started.
    epoch_start: Option<Instant>,
    /// The Reno-friendly estimate, in segments (W_est).
    w_est: f64,
}

impl Cubic {
    /// A controller for segments of `mss` bytes, starting at the initial window.
    pub fn new(mss: usize) -> Self {
        let mss = mss.max(1);
        Self {
            mss,
            cwnd: initial_window(mss),
            ssthresh: usize::MAX,
            w_max: 0.0,
            k: 0.0,
            epoch_start: None,
            w_est: 0.0,
        }
    }

    fn segments(&self, bytes: usize) -> f64 {
        bytes as f64 / self.mss as f64
    }

    fn reduce(&mut self) {
        let cwnd = self.segments(self.cwnd);
        // Fast convergence (RFC 9438 section 4.7): a flow whose W_max keeps falling releases
        // bandwidth for newer flows.
        self.w_max = if cwnd < self.w_max {
            cwnd * (1.0 + CUBIC_BETA) / 2.0
        } else {
            cwnd
        };
        self.ssthresh = ((cwnd * CUBIC_BETA * self.mss as f64) as usize).max(2 * self.mss);
        self.epoch_start = None;
    }
}

impl CongestionController for Cubic {
    fn window(&self) -> usize {
        self.cwnd
    }

    fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    fn on_ack(&mut self, now: Instant, acked: usize, srtt: Option<Duration>) {
        if self.cwnd < self.ssthresh {
            self.cwnd = self
                .cwnd
                .saturating_add(slow_start_increase(acked, self.mss));
            return;
        }
        let cwnd = self.segments(self.cwnd);
        let epoch_start = match self.epoch_start {
            Some(start) => start,
            None => {
                self.epoch_start = Some(now);
                if cwnd < self.w_max {
                    self.k = ((self.w_max - cwnd) / CUBIC_C).cbrt();
                } else {
                    self.k = 0.0;
                    self.w_max = cwnd;
                }
                self.w_est = cwnd;
                now
            }
        };
        let rtt = srtt.unwrap_or(Duration::from_millis(100)).as_secs_f64();
        let t = (now - epoch_start).as_secs_f64();
        let w_cubic = |t: f64| CUBIC_C * (t - self.k).powi(3) + self.w_max;

        // The Reno-friendly estimate (RFC 9438 section 4.3).
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        self.w_est += alpha * self.segments(acked) / cwnd;

        let new_cwnd = if w_cubic(t) < self.w_est {
            self.w_est
        } else {
            // Concave and convex regions (sections 4.4, 4.5): aim at W_cubic one RTT ahead,
            // never more than 1.5 times the current window.
            let target = w_cubic(t + rtt).clamp(cwnd, 1.5 * cwnd);
            cwnd + (target - cwnd) * self.segments(acked) / cwnd
        };
        let bytes = (new_cwnd * self.mss as f64) as usize;
        self.cwnd = bytes.max(self.cwnd).max(2 * self.mss);
    }

    fn on_congestion_event(&mut self, _now: Instant, _in_flight: usize) {
        self.reduce();
        self.cwnd = self.ssthresh;
    }

    fn on_rto(&mut self, _now: Instant, _in_flight: usize) {
        self.reduce();
        self.cwnd = self.mss;
    }

    fn set_mss(&mut self, mss: usize) {
        let mss = mss.max(1);
        if self.cwnd == initial_window(self.mss) {
            self.cwnd = initial_window(mss);
        }
        self.mss = mss;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    #[test]
    fn new_reno_slow_start_then_avoidance() {
        let mut cc = NewReno::new(MSS);
        let now = Instant::ZERO;
        assert_eq!(cc.window(), 10 * MSS);
        cc.on_ack(now, MSS, None);
        assert_eq!(cc.window(), 11 * MSS);
        cc.on_congestion_event(now, 20 * MSS);
        assert_eq!(cc.window(), 10 * MSS);
        assert_eq!(cc.ssthresh(), 10 * MSS);
        // Congestion avoidance: a whole window of acks adds one segment.
        for _ in 0..10 {
            cc.on_ack(now, MSS, None);
        }
        assert_eq!(cc.window(), 11 * MSS);
        cc.on_rto(now, 4 * MSS);
        assert_eq!(cc.window(), MSS);
        assert_eq!(cc.ssthresh(), 2 * MSS);
    }

    #[test]
    fn cubic_reduces_by_beta_and_regrows_to_w_max() {
        let mut cc = Cubic::new(MSS);
        let mut now = Instant::ZERO;
        for _ in 0..90 {
            cc.on_ack(now, MSS, None);
        }
        assert_eq!(cc.window(), 100 * MSS);
        cc.on_congestion_event(now, 100 * MSS);
        assert_eq!(cc.window(), 70 * MSS);
        // K = cbrt(30 / 0.4) ~ 4.2 s: then the window is back near W_max = 100. A long RTT
        // keeps the Reno-friendly estimate (half a segment per RTT) below the cubic curve.
        let srtt = Some(Duration::from_millis(200));
        let mut at_k = 0;
        for step in 0..200 {
            now += Duration::from_millis(200);
            for _ in 0..(cc.window() / MSS) {
                cc.on_ack(now, MSS, srtt);
            }
            if step == 20 {
                at_k = cc.window() / MSS;
            }
        }
        assert!((95..=110).contains(&at_k), "window at K: {at_k}");
        assert!(cc.window() > 150 * MSS, "convex growth: {}", cc.window());
    }

    #[test]
    fn cubic_fast_convergence_lowers_w_max() {
        let mut cc = Cubic::new(MSS);
        let now = Instant::ZERO;
        cc.on_congestion_event(now, 0);
        assert_eq!(cc.window(), 7 * MSS);
        cc.on_congestion_event(now, 0);
        // W_max was 10; the window is now 7 < 10, so W_max becomes 7 * 0.85.
        assert!((cc.w_max - 5.95).abs() < 1e-9);
        cc.on_rto(now, 0);
        assert_eq!(cc.window(), MSS);
    }
}
