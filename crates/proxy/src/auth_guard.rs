//! What a password guesser learns and how fast: an unknown user goes through the same
//! exchange as a known one (a decoy SCRAM verifier or md5 salt) and gets the same 28P01; and
//! failed logins are answered at most one per `auth_failure_delay` per client address.
//!
//! The delay is served in the failing client's own task (a sleep), so other clients, and
//! good logins from the same address, are not slowed. Failures from one address queue up:
//! the n-th concurrent one waits n delays, so opening many connections does not multiply an
//! attacker's guesses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Addresses remembered before the ones whose penalty is over are forgotten.
const PRUNE_ABOVE: usize = 4096;

pub struct AuthGuard {
    /// Per-process key of the decoy verifiers: stable for one user name within this process,
    /// unguessable from outside.
    decoy_key: [u8; 32],
    /// When each address's next failure may be answered.
    next_failure: Mutex<HashMap<IpAddr, Instant>>,
}

impl Default for AuthGuard {
    fn default() -> Self {
        AuthGuard { decoy_key: rand::random(), next_failure: Mutex::new(HashMap::new()) }
    }
}

impl AuthGuard {
    pub fn decoy_scram(&self, user: &str) -> lsnpool_auth::ScramVerifier {
        lsnpool_auth::ScramVerifier::decoy(user, &self.decoy_key)
    }

    /// Waits until this address's failed login may be answered.
    pub async fn delay_failure(&self, addr: IpAddr, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let Some(until) = self.reserve(addr, delay, Instant::now()) else { return };
        metrics::counter!("lsnpool_auth_failure_delays_total").increment(1);
        tokio::time::sleep_until(until).await;
    }

    /// Takes the address's next answer slot: `delay` after `now` or after the slot before it.
    fn reserve(&self, addr: IpAddr, delay: Duration, now: Instant) -> Option<Instant> {
        let mut next = self.next_failure.lock().ok()?;
        if next.len() > PRUNE_ABOVE {
            next.retain(|_, t| *t > now);
        }
        let slot = next.get(&addr).copied().filter(|t| *t > now).unwrap_or(now);
        let until = slot + delay;
        next.insert(addr, until);
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_from_one_address_queue_and_others_do_not_wait() {
        let g = AuthGuard::default();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let d = Duration::from_secs(1);
        let now = Instant::now();
        assert_eq!(g.reserve(a, d, now), Some(now + d));
        assert_eq!(g.reserve(a, d, now), Some(now + 2 * d));
        assert_eq!(g.reserve(b, d, now), Some(now + d));
        // Once the queue has drained, the next failure waits one delay again.
        let later = now + 5 * d;
        assert_eq!(g.reserve(a, d, later), Some(later + d));
    }

    #[test]
    fn decoys_are_stable_per_name_and_differ_between_names() {
        let g = AuthGuard::default();
        assert_eq!(g.decoy_scram("x").salt(), g.decoy_scram("x").salt());
        assert_ne!(g.decoy_scram("x").salt(), g.decoy_scram("y").salt());
        assert_ne!(AuthGuard::default().decoy_scram("x").salt(), g.decoy_scram("x").salt());
    }
}
