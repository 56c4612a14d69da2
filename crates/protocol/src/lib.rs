//! The PostgreSQL v3 wire protocol as the pooler needs it.
//!
//! The relay path moves raw bytes: it reads a message header (1-byte tag + i32 length) and
//! forwards the frame untouched. Only the few messages the pooler must look inside (Query and
//! Parse text, Bind/Describe/Close names, ReadyForQuery status, ErrorResponse SQLSTATE,
//! ParameterStatus) are decoded, through zero-copy views over the frame. pgwire's decoders
//! allocate owned Strings, cap some sizes and decode text lossily, so they are not used here.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod startup;

pub use frame::{FrameError, Header};
