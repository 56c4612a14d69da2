//! Server connections and their pools: one deadpool pool per (cluster, user, node).

mod addr;
mod manager;
mod params;
pub mod registry;
mod server;
mod statements;

pub use addr::ServerAddr;
pub use manager::{NodePool, PoolSettings, ServerManager, ServerTarget, ServerTls};
pub use params::{is_tracked_reported, ParamSync, ParamSyncPlan};
pub use server::{InternalReply, ServerConn, ServerError, ServerKey};
pub use statements::{schema_changed, schema_epoch, statement_name, Cached, CaptureStatement, StatementCache, StatementId, StatementName};
