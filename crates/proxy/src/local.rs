//! Commands the pooler answers itself: `SET / RESET / SHOW` of `lsnpool.consistency`,
//! `lsnpool.session_key`, `lsnpool.report_commit_lsn` and `lsnpool.min_lsn`.

use crate::routing::ClientRouter;
use bytes::BytesMut;
use lsnpool_protocol::backend::{self, PoolerError, TxStatus};
use lsnpool_protocol::sqlstate;
use lsnpool_router::{Consistency, Lsn, LsnpoolSetting, PoolerCommand};

/// Applies `cmd` (classified from the query text `sql`) to the session and writes the reply a
/// server would give.
pub fn answer(cmd: PoolerCommand, sql: &[u8], router: &mut ClientRouter, default: Consistency, out: &mut BytesMut, status: TxStatus) {
    execute(cmd, sql, router, default, out, true);
    backend::ready_for_query(out, status);
}

/// The same command sent as Parse/Bind/[Describe]/Execute/Sync: each message gets the reply
/// PostgreSQL would give it.
pub fn answer_extended(
    cmd: PoolerCommand,
    sql: &[u8],
    describe: Option<u8>,
    router: &mut ClientRouter,
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
        match cmd.shows() {
            Some(column) => backend::row_description(out, &[column]),
            None => backend::no_data(out),
        }
    }
    // The row's description came with the Describe, if the client asked for one.
    execute(cmd, sql, router, default, out, false);
    backend::ready_for_query(out, status);
}

fn execute(cmd: PoolerCommand, sql: &[u8], router: &mut ClientRouter, default: Consistency, out: &mut BytesMut, describe_row: bool) {
    let show = |out: &mut BytesMut, value: &str| {
        if describe_row {
            backend::row_description(out, &[cmd.shows().unwrap_or_default()]);
        }
        backend::data_row(out, &[Some(value)]);
        backend::command_complete(out, "SHOW");
    };
    match cmd {
        PoolerCommand::SetConsistency(c) => {
            router.consistency = c;
            backend::command_complete(out, "SET");
        }
        PoolerCommand::ResetConsistency => {
            router.consistency = default;
            backend::command_complete(out, "RESET");
        }
        PoolerCommand::ShowConsistency => show(out, router.consistency.as_str()),
        PoolerCommand::InvalidConsistency => {
            let e = PoolerError::error(sqlstate::INVALID_PARAMETER_VALUE, "invalid value for parameter \"lsnpool.consistency\"")
                .with_hint("valid values: strong, linearizable, read-your-writes, session, global, bounded, eventual");
            backend::error_response(out, &e);
        }
        PoolerCommand::SetSessionKey { start, end } => {
            let key = sql.get(start as usize..end as usize).unwrap_or_default();
            router.causal.session_key = Some(String::from_utf8_lossy(key).into());
            backend::command_complete(out, "SET");
        }
        PoolerCommand::SetReportCommitLsn(on) => {
            router.causal.report_commit_lsn = on;
            backend::command_complete(out, "SET");
        }
        PoolerCommand::SetMinLsn(lsn) => {
            router.lsns_mut().set_token(lsn);
            backend::command_complete(out, "SET");
        }
        PoolerCommand::Reset(p) => {
            match p {
                LsnpoolSetting::SessionKey => router.causal.session_key = None,
                LsnpoolSetting::ReportCommitLsn => router.causal.report_commit_lsn = false,
                LsnpoolSetting::MinLsn => router.lsns_mut().set_token(Lsn::ZERO),
            }
            backend::command_complete(out, "RESET");
        }
        PoolerCommand::Show(p) => {
            let value = match p {
                LsnpoolSetting::SessionKey => router.causal.session_key.as_deref().unwrap_or("").to_string(),
                LsnpoolSetting::ReportCommitLsn => (if router.causal.report_commit_lsn { "on" } else { "off" }).to_string(),
                LsnpoolSetting::MinLsn => router.lsns_mut().token().to_string(),
            };
            show(out, &value);
        }
        PoolerCommand::Invalid(p) => {
            let msg = format!("invalid value for parameter \"{}\"", p.name());
            let hint = match p {
                LsnpoolSetting::SessionKey => "a non-empty string, e.g. 'user:42'",
                LsnpoolSetting::ReportCommitLsn => "valid values: on, off",
                LsnpoolSetting::MinLsn => "an LSN as PostgreSQL writes it, e.g. '0/16B3748'",
            };
            backend::error_response(out, &PoolerError::error(sqlstate::INVALID_PARAMETER_VALUE, &msg).with_hint(hint));
        }
    }
}
