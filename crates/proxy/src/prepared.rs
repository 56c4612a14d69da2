//! A client's named prepared statements, kept by the pooler so they can follow the client to
//! any server connection (see `lsnpool_pool::StatementCache` for the server side).

use crate::relay::TextFlags;
use bytes::Bytes;
use lsnpool_router::Classification;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

pub struct ClientStatement {
    /// Parse body (query, NUL, parameter types): what the server must prepare.
    pub body: Bytes,
    pub hash: u64,
    /// Classified once at Parse: every Execute of it routes without re-reading the text.
    pub class: Classification,
    /// Read from its text once at Parse, like `class`.
    pub flags: TextFlags,
    /// The query rule it matches, cached per rule set (see `rules::SessionRules`).
    pub rule: AtomicU64,
    /// The schema epoch at its Parse (`lsnpool_pool::schema_epoch`): a server statement
    /// prepared before it is not used for it.
    pub epoch: u64,
}

#[derive(Default)]
pub struct ClientStatements {
    by_name: HashMap<Bytes, ClientStatement>,
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&ClientStatement> {
        self.by_name.get(name)
    }

    pub fn insert(&mut self, name: &[u8], body: &[u8], class: Classification, flags: TextFlags) -> &ClientStatement {
        let stmt = ClientStatement { body: Bytes::copy_from_slice(body), hash: body_hash(body), class, flags, rule: AtomicU64::new(0), epoch: lsnpool_pool::schema_epoch() };
        let name = Bytes::copy_from_slice(name);
        self.by_name.insert(name.clone(), stmt);
        &self.by_name[&name]
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<ClientStatement> {
        self.by_name.remove(name)
    }

    /// Puts back a statement whose Close the server skipped.
    pub fn restore(&mut self, name: &[u8], stmt: ClientStatement) {
        self.by_name.insert(Bytes::copy_from_slice(name), stmt);
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }
}

/// A fast non-cryptographic hash (FxHash's mixing); equality of bodies is always checked too.
pub fn body_hash(body: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = body.len() as u64;
    let mut chunks = body.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_distinguishes_small_changes() {
        assert_ne!(body_hash(b"SELECT 1\0\0\0"), body_hash(b"SELECT 2\0\0\0"));
        assert_ne!(body_hash(b""), body_hash(b"\0"));
        assert_eq!(body_hash(b"same text"), body_hash(b"same text"));
    }

    #[test]
    fn names_map_to_bodies() {
        let mut s = ClientStatements::default();
        s.insert(b"s1", b"SELECT 1\0\0\0", lsnpool_router::classify("SELECT 1"), Default::default());
        assert_eq!(&s.get(b"s1").unwrap().body[..], b"SELECT 1\0\0\0");
        s.remove(b"s1");
        assert!(s.get(b"s1").is_none());
    }
}
