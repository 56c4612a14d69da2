//! Prepared statements that exist on one server connection.
//!
//! Clients' named statements are mapped onto server statements named `lsnpool_<id>`, shared by
//! every client that prepares the same text and parameter types, so `pgbench -M prepared` with
//! 50 clients prepares each statement once per server connection, not once per client.

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatementId(pub u64);

impl StatementId {
    /// Ids are never reused, so a statement we lost track of can't collide with a new one.
    pub fn next() -> StatementId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        StatementId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The server-side name (`lsnpool_<id>`), on the stack: renaming a Bind allocates nothing.
#[derive(Clone, Copy)]
pub struct StatementName {
    bytes: [u8; 28],
    len: usize,
}

impl StatementName {
    pub fn new(id: StatementId) -> StatementName {
        let mut bytes = [0u8; 28];
        bytes[..8].copy_from_slice(b"lsnpool_");
        let mut digits = [0u8; 20];
        let mut n = id.0;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let d = &digits[i..];
        bytes[8..8 + d.len()].copy_from_slice(d);
        StatementName { bytes, len: 8 + d.len() }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Appends the server-side name (`lsnpool_<id>`) without allocating.
pub fn statement_name(buf: &mut BytesMut, id: StatementId) {
    buf.put_slice(StatementName::new(id).as_bytes());
}

struct Entry {
    body: Bytes,
    id: StatementId,
    last_used: u64,
    /// The schema epoch when it was prepared.
    epoch: u64,
}

/// Counts schema changes seen through this lsnpool (DROP, ALTER, a rolled-back CREATE) that
/// may leave a prepared statement stale: its parameter types fixed at Parse may name a type
/// that is gone (`cache lookup failed for type N`), or its result type changed. PostgreSQL
/// re-plans a stale statement by itself, but not its parameter types, and a shared server
/// statement prepared before the change would reach a client that prepared after it. One
/// counter for the process: schema changes are rare, and a false alarm costs a re-Parse.
static SCHEMA_EPOCH: AtomicU64 = AtomicU64::new(0);

pub fn schema_epoch() -> u64 {
    SCHEMA_EPOCH.load(Ordering::Acquire)
}

/// A schema change was seen: server statements prepared before now are not reused for
/// client statements prepared after it.
pub fn schema_changed() {
    SCHEMA_EPOCH.fetch_add(1, Ordering::AcqRel);
    metrics::counter!("lsnpool_schema_changes_total").increment(1);
}

/// What a lookup found for a client statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached {
    /// Prepared on this connection no earlier than the client's statement: use it.
    Fresh(StatementId),
    /// Prepared before a schema change the client's statement came after: forgotten here;
    /// the caller Closes it on the server and prepares afresh.
    Stale(StatementId),
    Missing,
}

/// The pooler's own commit-LSN statement on one server connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaptureStatement {
    #[default]
    Unprepared,
    Ready(StatementId),
    /// May or may not exist any more (an error in its segment, a DISCARD ALL that may have
    /// run before or after it was prepared): Close it, then prepare a new one.
    Stale(StatementId),
}

#[derive(Default)]
pub struct StatementCache {
    by_hash: HashMap<u64, Entry>,
    tick: u64,
    /// The pooler's own commit-LSN query. Kept apart from clients' statements: never
    /// evicted, and never leaked (a statement in doubt is Closed before the next Parse).
    capture: CaptureStatement,
}

impl StatementCache {
    /// The server statement preparing `body` (hash precomputed by the caller), if any.
    pub fn get(&mut self, hash: u64, body: &Bytes) -> Option<StatementId> {
        self.tick += 1;
        let e = self.by_hash.get_mut(&hash)?;
        if e.body != *body {
            return None;
        }
        e.last_used = self.tick;
        Some(e.id)
    }

    /// Like [`StatementCache::get`], for a client statement prepared at schema epoch
    /// `since`: a server statement prepared before that is stale.
    pub fn lookup(&mut self, hash: u64, body: &Bytes, since: u64) -> Cached {
        self.tick += 1;
        let Some(e) = self.by_hash.get_mut(&hash) else { return Cached::Missing };
        if e.body != *body {
            return Cached::Missing;
        }
        if e.epoch < since {
            let id = e.id;
            self.by_hash.remove(&hash);
            return Cached::Stale(id);
        }
        e.last_used = self.tick;
        Cached::Fresh(e.id)
    }

    pub fn insert(&mut self, hash: u64, body: Bytes, id: StatementId) {
        self.tick += 1;
        self.by_hash.insert(hash, Entry { body, id, last_used: self.tick, epoch: schema_epoch() });
    }

    /// The statement's Parse failed: the server never created it.
    pub fn forget(&mut self, hash: u64) {
        self.by_hash.remove(&hash);
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Forgets the least recently used statements beyond `cap`, returning them so the caller
    /// can Close them on the server. Called only between transactions, so no pipeline in
    /// flight can lose a statement it is about to Bind.
    pub fn evict_over(&mut self, cap: usize) -> Vec<StatementId> {
        if self.by_hash.len() <= cap {
            return Vec::new();
        }
        let mut entries: Vec<(u64, u64)> = self.by_hash.iter().map(|(h, e)| (e.last_used, *h)).collect();
        entries.sort_unstable();
        let excess = self.by_hash.len() - cap;
        entries[..excess].iter().filter_map(|(_, h)| self.by_hash.remove(h)).map(|e| e.id).collect()
    }

    /// After DISCARD ALL / DEALLOCATE ALL ran on the server.
    /// (The capture statement may have been prepared after the DISCARD ran, in the same flight.)
    pub fn clear(&mut self) {
        self.by_hash.clear();
        self.capture_in_doubt();
    }

    pub fn capture(&self) -> CaptureStatement {
        self.capture
    }

    pub fn set_capture(&mut self, c: CaptureStatement) {
        self.capture = c;
    }

    /// The capture statement may be gone: an error answered it, or statements were dropped.
    pub fn capture_in_doubt(&mut self) {
        if let CaptureStatement::Ready(id) = self.capture {
            self.capture = CaptureStatement::Stale(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_decimal() {
        let mut b = BytesMut::new();
        statement_name(&mut b, StatementId(0));
        statement_name(&mut b, StatementId(1234567));
        assert_eq!(&b[..], b"lsnpool_0lsnpool_1234567");
        assert_eq!(StatementName::new(StatementId(u64::MAX)).as_bytes(), b"lsnpool_18446744073709551615");
    }

    #[test]
    fn lookup_checks_the_body_not_just_the_hash() {
        let mut c = StatementCache::default();
        c.insert(7, Bytes::from_static(b"SELECT 1\0\0\0"), StatementId(1));
        assert_eq!(c.get(7, &Bytes::from_static(b"SELECT 1\0\0\0")), Some(StatementId(1)));
        assert_eq!(c.get(7, &Bytes::from_static(b"SELECT 2\0\0\0")), None);
        assert_eq!(c.get(8, &Bytes::from_static(b"SELECT 1\0\0\0")), None);
    }

    #[test]
    fn a_statement_prepared_before_a_schema_change_is_stale_for_later_clients() {
        let mut c = StatementCache::default();
        let body = Bytes::from_static(b"SELECT $1::t\0\0\0");
        c.insert(1, body.clone(), StatementId(1));
        let before = schema_epoch();
        assert_eq!(c.lookup(1, &body, before), Cached::Fresh(StatementId(1)));
        schema_changed();
        // A client statement from before the change still gets it (as it would directly).
        assert_eq!(c.lookup(1, &body, before), Cached::Fresh(StatementId(1)));
        assert_eq!(c.lookup(1, &body, schema_epoch()), Cached::Stale(StatementId(1)));
        assert_eq!(c.lookup(1, &body, schema_epoch()), Cached::Missing, "forgotten once stale");
    }

    #[test]
    fn evicts_least_recently_used() {
        let mut c = StatementCache::default();
        for i in 0..5u64 {
            c.insert(i, Bytes::from(vec![i as u8]), StatementId(i));
        }
        c.get(0, &Bytes::from(vec![0u8]));
        let evicted = c.evict_over(3);
        assert_eq!(evicted, vec![StatementId(1), StatementId(2)]);
        assert_eq!(c.len(), 3);
        assert!(c.evict_over(3).is_empty());
    }
}
