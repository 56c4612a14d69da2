//! The primary's circuit breaker as a pure state machine: fed the primary pool's load at each
//! evaluation (with the time, so tests need no clock), it says when to trip and when to close.
//! The proxy evaluates it periodically, logs and counts the transitions, and routes by it.

use std::time::{Duration, Instant};

/// The primary pool's load at one moment, summed over its users' pools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrimaryLoad {
    /// Clients waiting for a primary server connection.
    pub waiting: usize,
    /// How long the oldest of them has waited.
    pub max_wait: Duration,
    /// Every connection a pool may open is open and lent out.
    pub all_busy: bool,
}

/// When the breaker trips and closes (`routing.breaker_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerLimits {
    /// All busy this long trips it; healthy this long closes it.
    pub window: Duration,
    /// More waiting clients than this trips it (0: not a trigger).
    pub max_waiting: usize,
    /// A longer wait than this trips it (zero: not a trigger).
    pub max_wait: Duration,
}

impl BreakerLimits {
    /// Queued clients or a long wait: overloaded right now, whatever the window says.
    fn queue_too_long(&self, load: &PrimaryLoad) -> bool {
        (self.max_waiting > 0 && load.waiting > self.max_waiting) || (!self.max_wait.is_zero() && load.max_wait > self.max_wait)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breaker {
    open: bool,
    /// Since when every connection has been busy (None: some are free).
    busy_since: Option<Instant>,
    /// While open: since when the primary has looked healthy.
    healthy_since: Option<Instant>,
}

/// A change of state, for the log line and the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Tripped,
    Closed,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Takes the load observed at `now`; returns the transition it causes, if any.
    pub fn observe(&mut self, now: Instant, load: PrimaryLoad, limits: &BreakerLimits) -> Option<Transition> {
        self.busy_since = if load.all_busy { Some(self.busy_since.unwrap_or(now)) } else { None };
        let busy_too_long = self.busy_since.is_some_and(|t| now.saturating_duration_since(t) >= limits.window);
        let overloaded = limits.queue_too_long(&load) || busy_too_long;
        if !self.open {
            if overloaded {
                self.open = true;
                self.healthy_since = None;
                return Some(Transition::Tripped);
            }
            return None;
        }
        // Healthy means no queue and a free connection: merely not overloaded yet is not
        // enough to send the degraded reads back.
        if overloaded || load.all_busy || load.waiting > 0 {
            self.healthy_since = None;
            return None;
        }
        let since = *self.healthy_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= limits.window {
            self.open = false;
            self.healthy_since = None;
            return Some(Transition::Closed);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BreakerLimits = BreakerLimits { window: Duration::from_secs(10), max_waiting: 5, max_wait: Duration::from_secs(1) };

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    const BUSY: PrimaryLoad = PrimaryLoad { waiting: 0, max_wait: Duration::ZERO, all_busy: true };
    const IDLE: PrimaryLoad = PrimaryLoad { waiting: 0, max_wait: Duration::ZERO, all_busy: false };

    #[test]
    fn all_busy_for_a_window_trips_and_a_healthy_window_closes() {
        let (t0, mut b) = (Instant::now(), Breaker::default());
        assert_eq!(b.observe(t0, BUSY, &LIMITS), None);
        assert_eq!(b.observe(at(t0, 9), BUSY, &LIMITS), None, "not yet a window");
        assert_eq!(b.observe(at(t0, 10), BUSY, &LIMITS), Some(Transition::Tripped));
        assert!(b.is_open());
        assert_eq!(b.observe(at(t0, 11), IDLE, &LIMITS), None);
        assert_eq!(b.observe(at(t0, 15), BUSY, &LIMITS), None, "busy again: the healthy window restarts");
        assert_eq!(b.observe(at(t0, 16), IDLE, &LIMITS), None);
        assert_eq!(b.observe(at(t0, 25), IDLE, &LIMITS), None);
        assert_eq!(b.observe(at(t0, 26), IDLE, &LIMITS), Some(Transition::Closed));
        assert!(!b.is_open());
    }

    #[test]
    fn a_queue_or_a_long_wait_trips_at_once() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert_eq!(b.observe(t0, PrimaryLoad { waiting: 5, ..BUSY }, &LIMITS), None, "5 is the limit, not over it");
        assert_eq!(b.observe(t0, PrimaryLoad { waiting: 6, ..BUSY }, &LIMITS), Some(Transition::Tripped));
        let mut b = Breaker::default();
        let slow = PrimaryLoad { waiting: 1, max_wait: Duration::from_millis(1500), all_busy: true };
        assert_eq!(b.observe(t0, slow, &LIMITS), Some(Transition::Tripped));
    }

    #[test]
    fn zero_limits_are_no_trigger() {
        let limits = BreakerLimits { max_waiting: 0, max_wait: Duration::ZERO, ..LIMITS };
        let mut b = Breaker::default();
        let queue = PrimaryLoad { waiting: 1000, max_wait: Duration::from_secs(60), all_busy: false };
        assert_eq!(b.observe(Instant::now(), queue, &limits), None);
    }
}
