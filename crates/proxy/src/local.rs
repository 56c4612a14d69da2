//! Commands the pooler answers itself: `SET / RESET / SHOW lsnpool.consistency`.

use bytes::BytesMut;
use lsnpool_protocol::backend::{self, PoolerError, TxStatus};
use lsnpool_protocol::sqlstate;
use lsnpool_router::PoolerCommand;
use lsnpool_router::Consistency;

/// Applies `cmd` to the session's consistency and writes the reply a server would give.
pub fn answer(cmd: PoolerCommand, consistency: &mut Consistency, default: Consistency, out: &mut BytesMut, status: TxStatus) {
    match cmd {
        PoolerCommand::SetConsistency(c) => {
            *consistency = c;
            backend::command_complete(out, "SET");
        }
        PoolerCommand::ResetConsistency => {
            *consistency = default;
            backend::command_complete(out, "RESET");
        }
        PoolerCommand::ShowConsistency => {
            backend::row_description(out, &["lsnpool.consistency"]);
            backend::data_row(out, &[Some(consistency.as_str())]);
            backend::command_complete(out, "SHOW");
        }
        PoolerCommand::InvalidConsistency => {
            let e = PoolerError::error(sqlstate::INVALID_PARAMETER_VALUE, "invalid value for parameter \"lsnpool.consistency\"")
                .with_hint("valid values: strong, read-your-writes, global, bounded, eventual");
            backend::error_response(out, &e);
        }
    }
    backend::ready_for_query(out, status);
}
