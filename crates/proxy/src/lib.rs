//! Client sessions: the listener, login, cancel requests, and the transaction relay; the
//! state they share, its periodic upkeep, and the admin console.

mod admin;
mod auth_guard;
mod batch;
mod breaker;
mod budget;
mod causal;
mod cancel;
mod client_params;
mod controls;
mod db_flags;
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
mod rules;
mod session;
mod stats;
mod token_store;
mod topology;

pub use janitor::{spawn_janitor, STATS_PERIOD};
pub use listener::{serve, serve_unix};
pub use pooler::Pooler;
pub use topology::{Topology, TopologyError};
