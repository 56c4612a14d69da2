//! Commands the pooler answers itself: `SET / RESET / SHOW lsnpool.consistency`.

use bytes::BytesMut;
use lsnpool_protocol::backend::{self, PoolerError, TxStatus};
use lsnpool_protocol::sqlstate;
use lsnpool_router::PoolerCommand;
use lsnpool_router::Consistency;

/// Applies `cmd` to the session's consistency and writes the reply a server would give.
pub fn answer(cmd: PoolerCommand, consistency: &mut Consistency, default: Consistency, out: &mut BytesMut, status: TxStatus) {
    execute(cmd, consistency, default, out, true);
    backend::ready_for_query(out, status);
}

/// The same command sent as Parse/Bind/[Describe]/Execute/Sync: each message gets the reply
/// PostgreSQL would give it.
pub fn answer_extended(
    cmd: PoolerCommand,
    describe: Option<u8>,
    consistency: &mut Consistency,
    default: Consistency,
    out: &mut BytesMut,
    status: TxStatus,
) {
    backend::parse_complete(out);
    backend::bind_complete(out);
    if let Some(kind) = describe {
        if kind == b'S' {
            backend::no_parameters(out);
        }
        match cmd {
            PoolerCommand::ShowConsistency => backend::row_description(out, &["lsnpool.consistency"]),
            _ => backend::no_data(out),
        }
    }
    // The row's description came with the Describe, if the client asked for one.
    execute(cmd, consistency, default, out, false);
    backend::ready_for_query(out, status);
}

fn execute(cmd: PoolerCommand, consistency: &mut Consistency, default: Consistency, out: &mut BytesMut, describe_row: bool) {
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
            if describe_row {
                backend::row_description(out, &["lsnpool.consistency"]);
            }
            backend::data_row(out, &[Some(consistency.as_str())]);
            backend::command_complete(out, "SHOW");
        }
        PoolerCommand::InvalidConsistency => {
            let e = PoolerError::error(sqlstate::INVALID_PARAMETER_VALUE, "invalid value for parameter \"lsnpool.consistency\"")
                .with_hint("valid values: strong, read-your-writes, global, bounded, eventual");
            backend::error_response(out, &e);
        }
    }
}
