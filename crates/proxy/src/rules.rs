//! Query rules made live: the compiled set with its hit counters (`LiveRules`, one per
//! topology, swapped by RELOAD), and a session's view of it (`SessionRules`), which finds the
//! rule of a batch.
//!
//! A named statement's rule is matched once and cached in its `ClientStatement`, tagged with
//! the rule set's generation: an Execute costs one atomic load, and a RELOAD that changes the
//! rules is seen by the next transaction.

use crate::pooler::Pooler;
use crate::prepared::{ClientStatement, ClientStatements};
use crate::topology::Database;
use lsnpool_protocol::frame::Frames;
use lsnpool_protocol::frontend;
use lsnpool_router::{RuleAction, RuleError, RuleId, RuleScope, RuleSet, RuleSpec};
use metrics::Counter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Each build's generation; 0 is never used, so a fresh statement's cache (0) never matches.
static GENERATION: AtomicU64 = AtomicU64::new(1);

pub struct LiveRules {
    pub set: RuleSet,
    /// Per rule, kept across RELOAD by rule name.
    hits: Vec<Arc<AtomicU64>>,
    counters: Vec<Counter>,
    pub generation: u64,
}

impl LiveRules {
    /// Compiles `specs`, keeping the hit counts of `old`'s rules of the same names.
    pub fn build(specs: Vec<RuleSpec>, old: Option<&LiveRules>) -> Result<LiveRules, RuleError> {
        let set = RuleSet::new(specs)?;
        let hits = set
            .specs()
            .iter()
            .map(|s| old.and_then(|o| o.hits_of(&s.name)).unwrap_or_default())
            .collect();
        let counters = set.specs().iter().map(|s| metrics::counter!("lsnpool_rule_hits_total", "rule" => s.name.clone())).collect();
        Ok(LiveRules { set, hits, counters, generation: GENERATION.fetch_add(1, Ordering::Relaxed) })
    }

    fn hits_of(&self, name: &str) -> Option<Arc<AtomicU64>> {
        self.set.specs().iter().position(|s| s.name == name).and_then(|i| self.hits.get(i).cloned())
    }

    /// The rules with their hit counts, for SHOW RULES.
    pub fn rows(&self) -> impl Iterator<Item = (&RuleSpec, u64)> {
        self.set.specs().iter().zip(&self.hits).map(|(s, h)| (s, h.load(Ordering::Relaxed)))
    }

    fn hit(&self, id: RuleId) -> Option<RuleAction> {
        let i = usize::from(id.0);
        self.hits.get(i)?.fetch_add(1, Ordering::Relaxed);
        self.counters.get(i)?.increment(1);
        self.set.get(id).map(|s| s.action)
    }
}

/// One session's rules: the set current at its last transaction.
pub struct SessionRules {
    live: Arc<LiveRules>,
}

impl SessionRules {
    pub fn new(live: Arc<LiveRules>) -> SessionRules {
        SessionRules { live }
    }

    /// The action of the first rule that matches the batch's statements (Query text, Parse
    /// text, a Bind's named statement) sent by `user` on `db`, counting the hit. The pooler's
    /// rule set is taken only when its generation differs from the one this session holds.
    pub fn for_batch(
        &mut self,
        pooler: &Pooler,
        db: &Database,
        user: &str,
        buf: &[u8],
        max_message_size: usize,
        statements: &ClientStatements,
    ) -> Option<RuleAction> {
        if self.live.generation != pooler.rules_generation() {
            self.live = pooler.topology().rules.clone();
        }
        if self.live.set.is_empty() {
            return None;
        }
        let scope = &RuleScope { database: &db.name, cluster: &db.cluster, user };
        let set = &self.live.set;
        for (h, frame) in Frames::new(buf, max_message_size).map_while(Result::ok) {
            let id = match h.tag {
                frontend::QUERY => frontend::parse_query(frame).and_then(|q| set.first_match(q, scope)),
                frontend::PARSE => frontend::parse_parse(frame).and_then(|p| set.first_match(p.query, scope)),
                frontend::BIND => match frontend::parse_bind(frame) {
                    Some(b) if !b.statement.is_empty() => statements.get(b.statement).and_then(|s| self.cached(s, scope)),
                    _ => None,
                },
                _ => None,
            };
            if let Some(id) = id {
                return self.live.hit(id);
            }
            if h.tag == frontend::SYNC || h.tag == frontend::QUERY {
                break;
            }
        }
        None
    }

    /// A named statement's rule: matched once per rule set, then read from its cache.
    fn cached(&self, stmt: &ClientStatement, scope: &RuleScope<'_>) -> Option<RuleId> {
        let generation = self.live.generation;
        if let Some(cached) = unpack(stmt.rule.load(Ordering::Relaxed), generation) {
            return cached;
        }
        let query = stmt.body.split(|&b| b == 0).next().unwrap_or_default();
        let id = self.live.set.first_match(query, scope);
        stmt.rule.store(pack(generation, id), Ordering::Relaxed);
        id
    }
}

/// A statement's cached rule: the generation in the high 48 bits, the rule's index + 1 in the
/// low 16 (0: no rule matched).
fn pack(generation: u64, id: Option<RuleId>) -> u64 {
    (generation << 16) | id.map_or(0, |r| u64::from(r.0) + 1)
}

fn unpack(cached: u64, generation: u64) -> Option<Option<RuleId>> {
    if cached >> 16 != generation & 0xFFFF_FFFF_FFFF {
        return None;
    }
    let low = (cached & 0xFFFF) as u16;
    Some(low.checked_sub(1).map(RuleId))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsnpool_router::Consistency;

    #[test]
    fn the_cache_is_tagged_with_its_generation() {
        assert_eq!(unpack(pack(7, Some(RuleId(3))), 7), Some(Some(RuleId(3))));
        assert_eq!(unpack(pack(7, None), 7), Some(None));
        assert_eq!(unpack(pack(7, Some(RuleId(3))), 8), None);
        assert_eq!(unpack(0, 1), None, "a fresh statement is not cached");
    }

    fn spec(name: &str, pattern: &str) -> RuleSpec {
        let action = RuleAction { consistency: Some(Consistency::Strong), max_lag: None, critical: true };
        RuleSpec { name: name.into(), database: None, user: None, pattern: pattern.into(), action }
    }

    #[test]
    fn hits_survive_a_rebuild_by_name() {
        let a = LiveRules::build(vec![spec("payments", "accounts")], None).unwrap();
        assert!(a.hit(RuleId(0)).is_some());
        let b = LiveRules::build(vec![spec("other", "x"), spec("payments", "accounts")], Some(&a)).unwrap();
        let rows: Vec<_> = b.rows().map(|(s, n)| (s.name.clone(), n)).collect();
        assert_eq!(rows, vec![("other".to_string(), 0), ("payments".to_string(), 1)]);
        assert_ne!(a.generation, b.generation);
    }
}
