//! The in-process token store: session keys of one lsnpool instance.

use lsnpool_router::Lsn;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct EmbeddedStore {
    ttl: Duration,
    /// (cluster, key) → newest commit LSN and when it stops counting.
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    map: HashMap<(Box<str>, Box<str>), (Lsn, Instant)>,
    /// Size after the last sweep: the next sweep runs when the map has doubled, so expired
    /// keys cost amortised O(1) per insert and no timer.
    swept_at: usize,
}

impl EmbeddedStore {
    pub fn new(ttl: Duration) -> EmbeddedStore {
        EmbeddedStore { ttl, keys: Mutex::new(Keys::default()) }
    }

    /// The key's newest commit, ZERO when none is recorded or it expired.
    pub fn get(&self, cluster: &str, key: &str) -> Lsn {
        let Ok(k) = self.keys.lock() else { return Lsn::ZERO };
        // A tuple of borrowed strs cannot look up owned keys; one small allocation per keyed
        // read is cheaper than a second map level.
        match k.map.get(&(Box::from(cluster), Box::from(key))) {
            Some((lsn, until)) if *until > Instant::now() => *lsn,
            _ => Lsn::ZERO,
        }
    }

    /// Raises the key's commit LSN (never lowers it) and restarts its time to live.
    pub fn put(&self, cluster: &str, key: &str, lsn: Lsn) {
        let Ok(mut k) = self.keys.lock() else { return };
        let now = Instant::now();
        let until = now + self.ttl;
        let e = k.map.entry((Box::from(cluster), Box::from(key))).or_insert((Lsn::ZERO, until));
        // An expired entry's LSN no longer counts; a live one only grows.
        e.0 = if e.1 > now { e.0.max(lsn) } else { lsn };
        e.1 = until;
        if k.map.len() > (2 * k.swept_at).max(1024) {
            k.map.retain(|_, (_, until)| *until > now);
            k.swept_at = k.map.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_grow_and_expire() {
        let s = EmbeddedStore::new(Duration::from_millis(50));
        s.put("c", "user:1", Lsn(200));
        s.put("c", "user:1", Lsn(100));
        assert_eq!(s.get("c", "user:1"), Lsn(200));
        assert_eq!(s.get("other", "user:1"), Lsn::ZERO);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.get("c", "user:1"), Lsn::ZERO);
        s.put("c", "user:1", Lsn(50));
        assert_eq!(s.get("c", "user:1"), Lsn(50));
    }
}
