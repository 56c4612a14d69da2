//! Client sessions: the listener, login, cancel requests, and the transaction relay.

mod cancel;
mod client_params;
mod listener;
mod login;
mod prepared;
mod relay;
mod session;
mod topology;

pub use listener::{serve, Pooler};
pub use topology::{Topology, TopologyError};
