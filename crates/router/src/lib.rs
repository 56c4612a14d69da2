//! Routing: which node serves a client's next transaction.
//!
//! Everything here is pure (no sockets, no clocks read implicitly) so the decision can be unit
//! tested and benchmarked on its own.

mod breaker;
mod classify;
mod client_lsns;
mod consistency;
mod controls;
mod decide;
mod lsn;
mod route;
mod rules;

pub use breaker::{Breaker, BreakerLimits, PrimaryLoad, Transition};
pub use client_lsns::{ClientLsns, Need, Outside};
pub use consistency::Consistency;
pub use controls::{degraded, is_primary_read};
pub use decide::{decide, in_rotation, required_lsn, Decision, PrimaryReason, ReplicaView, Request, RoutingMode};
pub use lsn::Lsn;
pub use route::{NodeId, Route};
pub use rules::{check_pattern, RuleAction, RuleError, RuleId, RuleScope, RuleSet, RuleSpec, MATCHED_PREFIX};
pub use classify::{classify, classify_bytes, deallocations, leading_directives, Classification, Deallocate, Directives, Hint, LsnpoolSetting, PoolerCommand, StatementClass};
