//! Routing: which node serves a client's next transaction.
//!
//! Everything here is pure (no sockets, no clocks read implicitly) so the decision can be unit
//! tested and benchmarked on its own.

mod classify;
mod client_lsns;
mod consistency;
mod decide;
mod lsn;
mod route;

pub use client_lsns::{ClientLsns, Need, Outside};
pub use consistency::Consistency;
pub use decide::{decide, required_lsn, Decision, PrimaryReason, ReplicaView, Request, RoutingMode};
pub use lsn::Lsn;
pub use route::{NodeId, Route};
pub use classify::{classify, classify_bytes, deallocations, leading_directives, Classification, Deallocate, Directives, Hint, LsnpoolSetting, PoolerCommand, StatementClass};
