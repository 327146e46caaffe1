//! When to try again: the retry rules a configuration sets, and the backoff they give.

use core::time::Duration;

use erebus_sansio::SeededRng;
use erebus_sansio::tunnel::TransportKind;

/// One server to try: a `remote` line or a `<connection>` block of an OpenVPN profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// Its position in the configuration (the protocol builds the session for it by this).
    pub index: usize,
    /// The host name or address literal, resolved again for every attempt.
    pub host: String,
    /// The port.
    pub port: u16,
    /// UDP or TCP.
    pub kind: TransportKind,
    /// The wait before the next attempt after a failed one (`connect-retry n`).
    pub retry_delay: Duration,
    /// The most the wait grows to (`connect-retry n max`).
    pub max_retry_delay: Duration,
    /// How long an attempt may go without a word from the server before the next server is
    /// tried (`server-poll-timeout`).
    pub poll_timeout: Duration,
}

impl Remote {
    /// OpenVPN's `connect-retry` default.
    pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
    /// OpenVPN's `connect-retry` maximum default.
    pub const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
    /// OpenVPN's `server-poll-timeout` default.
    pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(120);
}

/// The rules across all servers. The default is OpenVPN's: every server for ever, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Try each server at most this many times in a row without success, then give up
    /// (`connect-retry-max`); `None`: for ever.
    pub max_tries_per_remote: Option<u32>,
    /// Keep retrying a server name that does not resolve for this long, then give up
    /// (`resolv-retry n`); `None`: for ever (`resolv-retry infinite`, OpenVPN's default).
    pub resolve_for: Option<Duration>,
    /// Try the servers in a random order, drawn once from the seed (`remote-random`).
    pub random_order: bool,
}

/// Failed attempts in a row, per server, before the wait starts doubling: OpenVPN slows down
/// "after 5 retries per remote".
pub const RETRIES_BEFORE_BACKOFF: u32 = 5;

/// The wait before the next attempt, after `failures` failed attempts in a row (1 for the
/// first) across `remotes` servers, for a server whose `connect-retry` is `base` up to `max`.
///
/// The wait is `base` for the first [`RETRIES_BEFORE_BACKOFF`] rounds through the list, then
/// doubles with each further failure, never beyond `max` (nor below `base`). Up to a quarter
/// more is added from `rng`, so that many clients cut off by one server restart do not all
/// come back in the same instant.
pub fn backoff(
    failures: u32,
    remotes: usize,
    base: Duration,
    max: Duration,
    rng: &mut SeededRng,
) -> Duration {
    let per_round = u32::try_from(remotes.max(1)).unwrap_or(u32::MAX);
    let free = RETRIES_BEFORE_BACKOFF.saturating_mul(per_round);
    let doublings = failures.saturating_sub(free).min(20);
    let cap = max.max(base);
    let wait = base.saturating_mul(1 << doublings).min(cap);
    let jitter_millis = u32::try_from(wait.as_millis() / 4).unwrap_or(u32::MAX);
    let jitter = Duration::from_millis(u64::from(rng.below(jitter_millis.saturating_add(1))));
    (wait + jitter).min(cap + cap / 4)
}

#[cfg(test)]
mod tests {
    use erebus_sansio::Seed;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn waits_start_at_the_base_and_double_after_five_rounds() {
        let mut rng = Seed::from_byte(1).rng();
        let max = Duration::from_secs(300);
        for failures in 1..=5 {
            let wait = backoff(failures, 1, SECOND, max, &mut rng);
            assert!(
                (SECOND..=SECOND * 5 / 4).contains(&wait),
                "{failures}: {wait:?}"
            );
        }
        let sixth = backoff(6, 1, SECOND, max, &mut rng);
        assert!((2 * SECOND..=SECOND * 10 / 4).contains(&sixth), "{sixth:?}");
        let seventh = backoff(7, 1, SECOND, max, &mut rng);
        assert!((4 * SECOND..=5 * SECOND).contains(&seventh), "{seventh:?}");
        // With two servers, ten failures are five rounds: still the base.
        let wait = backoff(10, 2, SECOND, max, &mut rng);
        assert!(wait <= SECOND * 5 / 4, "{wait:?}");
    }

    #[test]
    fn waits_never_pass_the_maximum_and_a_quarter() {
        let mut rng = Seed::from_byte(2).rng();
        let max = Duration::from_secs(8);
        for failures in 1..200 {
            let wait = backoff(failures, 1, SECOND, max, &mut rng);
            assert!(
                wait >= SECOND && wait <= max + max / 4,
                "{failures}: {wait:?}"
            );
        }
        assert!(backoff(u32::MAX, 3, SECOND, max, &mut rng) >= max);
        // A maximum below the base means the base.
        let wait = backoff(100, 1, 5 * SECOND, SECOND, &mut rng);
        assert!(
            (5 * SECOND..=5 * SECOND * 5 / 4).contains(&wait),
            "{wait:?}"
        );
    }

    #[test]
    fn the_jitter_is_seeded() {
        let draw = |byte| {
            let mut rng = Seed::from_byte(byte).rng();
            (1..40)
                .map(|f| backoff(f, 1, SECOND, Duration::from_secs(60), &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
