//! `pooler.toml`: the shape of the configuration, how it is loaded (TOML file, then
//! `LSNPOOL_SECTION__KEY` environment variables on top) and what makes it invalid.

mod load;
mod types;
mod validate;
pub use validate::ADMIN_DATABASES;

pub use load::{load, ConfigError};
pub use types::*;
