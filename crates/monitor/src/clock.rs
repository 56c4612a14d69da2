//! A process-wide monotonic clock in microseconds.
//!
//! `Instant` does not fit in an atomic, so poll times are kept as microseconds since one
//! process-wide start instant: a `u64` that readers on the hot path can load lock-free.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the process-wide start instant, never 0 (0 means "never" in the state).
pub fn monotonic_micros() -> u64 {
    let start = *START.get_or_init(Instant::now);
    // 2^64 µs is half a million years: the conversion cannot saturate in practice.
    u64::try_from(start.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// How long ago a `monotonic_micros()` stamp was; `None` for 0 ("never").
pub fn age_of(stamp_micros: u64) -> Option<Duration> {
    (stamp_micros != 0)
        .then(|| Duration::from_micros(monotonic_micros().saturating_sub(stamp_micros)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_monotonic_and_never_zero() {
        let a = monotonic_micros();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_micros();
        assert!(a >= 1);
        assert!(b >= a + 2000);
        assert_eq!(age_of(0), None);
        assert!(age_of(a).unwrap() >= Duration::from_millis(2));
    }
}
