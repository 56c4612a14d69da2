//! Routing: which node serves a client's next transaction.
//!
//! Everything here is pure (no sockets, no clocks read implicitly) so the decision can be unit
//! tested and benchmarked on its own.

mod consistency;
mod lsn;
mod route;

pub use consistency::Consistency;
pub use lsn::Lsn;
pub use route::{NodeId, Route};
