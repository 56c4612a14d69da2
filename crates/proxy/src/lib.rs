//! Client sessions: the listener, login, cancel requests, and the transaction relay.

mod admin;
mod batch;
mod cancel;
mod client_params;
mod lease;
mod listener;
mod local;
mod login;
mod prepared;
mod relay;
mod replicas;
mod routing;
mod session;
mod stats;
mod topology;

pub use listener::{serve, Pooler, STATS_PERIOD};
pub use topology::{Topology, TopologyError};
