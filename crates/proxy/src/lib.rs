//! Client sessions: the listener, login, cancel requests, and the transaction relay; the
//! state they share, its periodic upkeep, and the admin console.

mod admin;
mod batch;
mod causal;
mod cancel;
mod client_params;
mod clients;
mod janitor;
mod lease;
mod listener;
mod local;
mod login;
mod pooler;
mod prepared;
mod relay;
mod replicas;
mod routing;
mod session;
mod stats;
mod token_store;
mod topology;

pub use janitor::{spawn_janitor, STATS_PERIOD};
pub use listener::serve;
pub use pooler::Pooler;
pub use topology::{Topology, TopologyError};
