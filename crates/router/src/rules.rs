//! Operator query rules (`[[rules]]` in pooler.toml): a regex on the statement text that
//! overrides the routing of a critical path, ProxySQL's `mysql_query_rules` for lsnpool.
//!
//! Rules are tried in order and the first whose pattern, database and user all match wins.
//! Every pattern is compiled into one `RegexSet`, so a statement is scanned once whatever the
//! number of rules. Pure: no clocks, no counters (the proxy counts hits).

use crate::Consistency;
use regex::bytes::{RegexSet, RegexSetBuilder};
use std::fmt;
use std::time::Duration;

/// Only this much of a statement is matched: the linear-time regex engine keeps matching
/// cheap, but a multi-megabyte INSERT should not pay a scan per rule set for a rule that is
/// about its first words.
pub const MATCHED_PREFIX: usize = 64 * 1024;

/// Compiled programs above this size are refused (a pathological pattern fails the load
/// rather than the pooler's memory).
const SIZE_LIMIT: usize = 16 * 1024 * 1024;

/// What a matching rule does to the transaction's routing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleAction {
    /// The level the rule asks for; `None` with `max_lag` means `bounded`.
    pub consistency: Option<Consistency>,
    /// The path's own lag threshold (instead of the alias's or cluster's `max_replica_lag`).
    pub max_lag: Option<Duration>,
    /// Never degraded to a staler replica by the circuit breaker or the read budget.
    pub critical: bool,
}

impl RuleAction {
    /// The level the rule routes at, if it sets one.
    pub fn level(&self) -> Option<Consistency> {
        self.consistency.or(self.max_lag.map(|_| Consistency::Bounded))
    }
}

/// One rule as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub name: String,
    /// A cluster name (then its aliases too) or one alias; `None`: every database.
    pub database: Option<String>,
    pub user: Option<String>,
    pub pattern: String,
    pub action: RuleAction,
}

/// Which rule matched: an index into the set it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(pub u16);

/// Who sends the statement.
#[derive(Clone, Copy, Debug)]
pub struct RuleScope<'a> {
    /// The database name the client connected to (a cluster or an alias).
    pub database: &'a str,
    /// The cluster behind it.
    pub cluster: &'a str,
    pub user: &'a str,
}

/// A pattern that does not compile, named by its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub index: usize,
    pub name: String,
    pub problem: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule \"{}\": {}", self.name, self.problem)
    }
}

impl std::error::Error for RuleError {}

/// The rules, compiled.
#[derive(Clone, Debug)]
pub struct RuleSet {
    specs: Vec<RuleSpec>,
    set: RegexSet,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet { specs: Vec::new(), set: RegexSet::empty() }
    }
}

impl RuleSet {
    pub fn new(specs: Vec<RuleSpec>) -> Result<RuleSet, RuleError> {
        if specs.len() > usize::from(u16::MAX) {
            return Err(RuleError { index: usize::from(u16::MAX), name: String::new(), problem: "too many rules".into() });
        }
        // Compiled one by one first: the set's own error would not say whose pattern failed.
        for (index, s) in specs.iter().enumerate() {
            check_pattern(&s.pattern).map_err(|problem| RuleError { index, name: s.name.clone(), problem })?;
        }
        let set = RegexSetBuilder::new(specs.iter().map(|s| &s.pattern))
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| RuleError { index: 0, name: "(all rules together)".into(), problem: e.to_string() })?;
        Ok(RuleSet { specs, set })
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn specs(&self) -> &[RuleSpec] {
        &self.specs
    }

    pub fn get(&self, id: RuleId) -> Option<&RuleSpec> {
        self.specs.get(usize::from(id.0))
    }

    /// The first rule, in configuration order, that matches `text` sent by `scope`.
    pub fn first_match(&self, text: &[u8], scope: &RuleScope<'_>) -> Option<RuleId> {
        if self.specs.is_empty() {
            return None;
        }
        let text = &text[..text.len().min(MATCHED_PREFIX)];
        // Most statements match no rule: answered without building the set of matches (which
        // allocates).
        if !self.set.is_match(text) {
            return None;
        }
        let matches = self.set.matches(text);
        matches.iter().find(|&i| self.specs[i].applies_to(scope)).map(|i| RuleId(i as u16))
    }
}

impl RuleSpec {
    fn applies_to(&self, scope: &RuleScope<'_>) -> bool {
        let db_ok = self.database.as_deref().is_none_or(|d| d == scope.database || d == scope.cluster);
        db_ok && self.user.as_deref().is_none_or(|u| u == scope.user)
    }
}

/// Whether `pattern` compiles as a rule's regex; the error says why not.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    regex::bytes::RegexBuilder::new(pattern).size_limit(SIZE_LIMIT).build().map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, pattern: &str) -> RuleSpec {
        RuleSpec { name: name.into(), database: None, user: None, pattern: pattern.into(), action: RuleAction::default() }
    }

    const APP: RuleScope<'static> = RuleScope { database: "appdb", cluster: "appdb", user: "app" };

    #[test]
    fn first_match_in_order_wins() {
        let set = RuleSet::new(vec![
            rule("payments", r"(?i)^\s*select\b.*\bfrom\s+accounts\b"),
            rule("any_select", r"(?i)^\s*select\b"),
        ])
        .unwrap();
        assert_eq!(set.first_match(b"SELECT balance FROM accounts WHERE id = $1", &APP), Some(RuleId(0)));
        assert_eq!(set.first_match(b"  select * from orders", &APP), Some(RuleId(1)));
        assert_eq!(set.first_match(b"UPDATE accounts SET balance = 0", &APP), None);
    }

    #[test]
    fn database_and_user_narrow_a_rule() {
        let mut only_reports = rule("reports", "report");
        only_reports.database = Some("app_read".into());
        let mut cluster_wide = rule("cluster", "report");
        cluster_wide.database = Some("appdb".into());
        cluster_wide.user = Some("postgres".into());
        let set = RuleSet::new(vec![only_reports, cluster_wide]).unwrap();
        let alias = RuleScope { database: "app_read", cluster: "appdb", user: "app" };
        assert_eq!(set.first_match(b"select report", &alias), Some(RuleId(0)));
        assert_eq!(set.first_match(b"select report", &APP), None, "user app is not postgres");
        let admin = RuleScope { user: "postgres", ..APP };
        assert_eq!(set.first_match(b"select report", &admin), Some(RuleId(1)));
        let admin_on_alias = RuleScope { user: "postgres", ..alias };
        assert_eq!(set.first_match(b"select report", &admin_on_alias), Some(RuleId(0)));
    }

    #[test]
    fn a_bad_pattern_names_its_rule() {
        let e = RuleSet::new(vec![rule("fine", "a"), rule("broken", "select (")]).unwrap_err();
        assert_eq!((e.index, e.name.as_str()), (1, "broken"));
        assert!(e.to_string().contains("rule \"broken\""), "{e}");
        assert!(e.problem.contains("unclosed group"), "{e}");
    }

    #[test]
    fn a_lag_alone_means_bounded() {
        let a = RuleAction { max_lag: Some(Duration::from_millis(500)), ..RuleAction::default() };
        assert_eq!(a.level(), Some(Consistency::Bounded));
        let s = RuleAction { consistency: Some(Consistency::Strong), ..a };
        assert_eq!(s.level(), Some(Consistency::Strong));
        assert_eq!(RuleAction::default().level(), None);
    }

    #[test]
    fn empty_set_and_non_utf8_text() {
        assert_eq!(RuleSet::default().first_match(b"select", &APP), None);
        let set = RuleSet::new(vec![rule("bytes", "select")]).unwrap();
        assert_eq!(set.first_match(b"select '\xff'", &APP), Some(RuleId(0)));
    }
}
