//! Writing the console's result sets.

use bytes::BytesMut;
use lsnpool_protocol::backend;
use std::fmt::Display;
use std::time::SystemTime;

/// Writes a SHOW result set: one row per item of `rows`, each column's name beside the
/// expression that fills it, so the column list cannot drift from the values. `let`s before
/// the columns compute what several columns share.
///
/// ```ignore
/// result_set!(out, dbs, |db| let s = &db.stats; { "database" => db.name, "reads" => s.reads });
/// ```
macro_rules! result_set {
    ($out:expr, $rows:expr, |$row:pat_param| $(let $var:pat = $init:expr;)* { $($col:literal => $val:expr),+ $(,)? }) => {{
        let out: &mut bytes::BytesMut = $out;
        lsnpool_protocol::backend::row_description(out, &[$($col),+]);
        for $row in $rows {
            $(let $var = $init;)*
            $crate::admin::table::data_row(out, &[$(&$val as &dyn std::fmt::Display),+]);
        }
        lsnpool_protocol::backend::command_complete(out, "SHOW");
    }};
}
pub(crate) use result_set;

/// One row of text values.
pub fn data_row(out: &mut BytesMut, values: &[&dyn Display]) {
    let text: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    let cells: Vec<Option<&str>> = text.iter().map(|t| Some(t.as_str())).collect();
    backend::data_row(out, &cells);
}

/// A result set whose columns are only known at run time (SHOW STATS and its variants).
pub fn dynamic(out: &mut BytesMut, columns: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    backend::row_description(out, columns);
    for row in rows {
        let cells: Vec<Option<&str>> = row.iter().map(|v| Some(v.as_str())).collect();
        backend::data_row(out, &cells);
    }
    backend::command_complete(out, "SHOW");
}

/// PgBouncer's timestamp format, e.g. `2024-05-01 12:34:56 UTC`.
pub fn epoch_text(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Civil date from days since the epoch (Howard Hinnant's algorithm): no chrono needed.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}
