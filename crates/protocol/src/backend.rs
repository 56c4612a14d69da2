//! Messages from a server (or from the pooler playing one): builders, and views of the few
//! the pooler inspects.

use crate::frame::{read_cstr, read_i32, HEADER_LEN};
use bytes::{BufMut, BytesMut};

pub const AUTHENTICATION: u8 = b'R';
pub const PARAMETER_STATUS: u8 = b'S';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const NOTIFICATION_RESPONSE: u8 = b'A';
pub const PARSE_COMPLETE: u8 = b'1';
pub const BIND_COMPLETE: u8 = b'2';
pub const NO_DATA: u8 = b'n';
pub const PARAMETER_DESCRIPTION: u8 = b't';
pub const CLOSE_COMPLETE: u8 = b'3';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const DATA_ROW: u8 = b'D';
pub const ROW_DESCRIPTION: u8 = b'T';
pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
pub const COPY_IN_RESPONSE: u8 = b'G';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_BOTH_RESPONSE: u8 = b'W';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';

/// Transaction status carried by ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// Writes one tagged message whose body `fill` appends, fixing up the length afterwards.
#[inline]
pub fn message(buf: &mut BytesMut, tag: u8, fill: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u8(tag);
    buf.put_i32(0);
    fill(buf);
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

pub fn auth_ok(buf: &mut BytesMut) {
    message(buf, AUTHENTICATION, |b| b.put_i32(0));
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, AUTHENTICATION, |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, AUTHENTICATION, |b| {
        b.put_i32(10);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, AUTHENTICATION, |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, AUTHENTICATION, |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: TxStatus) {
    message(buf, READY_FOR_QUERY, |b| b.put_u8(status.byte()));
}

pub fn parse_complete(buf: &mut BytesMut) {
    message(buf, PARSE_COMPLETE, |_| {});
}

pub fn bind_complete(buf: &mut BytesMut) {
    message(buf, BIND_COMPLETE, |_| {});
}

pub fn no_data(buf: &mut BytesMut) {
    message(buf, NO_DATA, |_| {});
}

/// ParameterDescription of a statement without parameters.
pub fn no_parameters(buf: &mut BytesMut) {
    message(buf, PARAMETER_DESCRIPTION, |b| b.put_i16(0));
}

pub fn close_complete(buf: &mut BytesMut) {
    message(buf, CLOSE_COMPLETE, |_| {});
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, COMMAND_COMPLETE, |b| put_cstr(b, tag.as_bytes()));
}

pub fn empty_query_response(buf: &mut BytesMut) {
    message(buf, EMPTY_QUERY_RESPONSE, |_| {});
}

/// RowDescription of text columns (type `text`, format text), as the pooler's own answers use.
pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    message(buf, ROW_DESCRIPTION, |b| {
        b.put_i16(columns.len() as i16);
        for c in columns {
            put_cstr(b, c.as_bytes());
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(25); // text
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
    });
}

pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    message(buf, DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// An error or notice the pooler raises itself.
#[derive(Clone, Debug)]
pub struct PoolerError<'a> {
    pub severity: &'a str,
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

impl<'a> PoolerError<'a> {
    pub fn error(code: &'a str, message: &'a str) -> Self {
        PoolerError { severity: "ERROR", code, message, detail: None, hint: None }
    }

    pub fn fatal(code: &'a str, message: &'a str) -> Self {
        PoolerError { severity: "FATAL", ..Self::error(code, message) }
    }

    pub fn with_hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }

    pub fn with_detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }
}

pub fn error_response(buf: &mut BytesMut, e: &PoolerError<'_>) {
    fields_message(buf, ERROR_RESPONSE, e);
}

pub fn notice_response(buf: &mut BytesMut, e: &PoolerError<'_>) {
    fields_message(buf, NOTICE_RESPONSE, e);
}

fn fields_message(buf: &mut BytesMut, tag: u8, e: &PoolerError<'_>) {
    message(buf, tag, |b| {
        for (field, value) in [
            (b'S', Some(e.severity)),
            (b'V', Some(e.severity)),
            (b'C', Some(e.code)),
            (b'M', Some(e.message)),
            (b'D', e.detail),
            (b'H', e.hint),
        ] {
            if let Some(v) = value {
                b.put_u8(field);
                put_cstr(b, v.as_bytes());
            }
        }
        b.put_u8(0);
    });
}

/// NegotiateProtocolVersion: the newest version spoken (major << 16 | minor) and the `_pq_.`
/// options not recognised.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_version: i32, unknown_options: &[&str]) {
    message(buf, NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(newest_version);
        b.put_i32(unknown_options.len() as i32);
        for o in unknown_options {
            put_cstr(b, o.as_bytes());
        }
    });
}

/// The fields of an ErrorResponse or NoticeResponse a pooler cares about.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    pub severity: &'a [u8],
    pub code: &'a [u8],
    pub message: &'a [u8],
}

pub fn parse_error_fields(frame: &[u8]) -> ErrorFields<'_> {
    let mut out = ErrorFields::default();
    let mut pos = HEADER_LEN;
    while let Some(&field) = frame.get(pos) {
        if field == 0 {
            break;
        }
        pos += 1;
        let Some(value) = read_cstr(frame, &mut pos) else { break };
        match field {
            b'V' => out.severity = value,
            b'S' if out.severity.is_empty() => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            _ => {}
        }
    }
    out
}

pub fn parse_parameter_status(frame: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut pos = HEADER_LEN;
    let name = read_cstr(frame, &mut pos)?;
    let value = read_cstr(frame, &mut pos)?;
    Some((name, value))
}

pub fn parse_ready_for_query(frame: &[u8]) -> Option<TxStatus> {
    TxStatus::from_byte(*frame.get(HEADER_LEN)?)
}

pub fn parse_backend_key_data(frame: &[u8]) -> Option<(i32, i32)> {
    let mut pos = HEADER_LEN;
    Some((read_i32(frame, &mut pos)?, read_i32(frame, &mut pos)?))
}

/// An Authentication request: its code and the bytes after it (salt, SASL data…).
pub fn parse_authentication(frame: &[u8]) -> Option<(i32, &[u8])> {
    let mut pos = HEADER_LEN;
    let code = read_i32(frame, &mut pos)?;
    Some((code, &frame[pos..]))
}

/// The first DataRow column as bytes (`None` for NULL), for the pooler's own tiny queries.
pub fn first_column(frame: &[u8]) -> Option<Option<&[u8]>> {
    let mut pos = HEADER_LEN + 2;
    let len = read_i32(frame, &mut pos)?;
    if len < 0 {
        return Some(None);
    }
    frame.get(pos..pos + len as usize).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, &PoolerError::fatal("28P01", "password authentication failed").with_hint("check it"));
        assert_eq!(buf[0], b'E');
        let f = parse_error_fields(&buf);
        assert_eq!(f.code, b"28P01");
        assert_eq!(f.severity, b"FATAL");
        assert_eq!(f.message, b"password authentication failed");
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        assert_eq!(len + 1, buf.len());
    }

    #[test]
    fn views_of_small_messages() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, TxStatus::InTransaction);
        assert_eq!(parse_ready_for_query(&buf), Some(TxStatus::InTransaction));
        let mut buf = BytesMut::new();
        parameter_status(&mut buf, "TimeZone", "UTC");
        assert_eq!(parse_parameter_status(&buf), Some((&b"TimeZone"[..], &b"UTC"[..])));
        let mut buf = BytesMut::new();
        backend_key_data(&mut buf, 42, -7);
        assert_eq!(parse_backend_key_data(&buf), Some((42, -7)));
        let mut buf = BytesMut::new();
        data_row(&mut buf, &[Some("0/16B3748"), None]);
        assert_eq!(first_column(&buf), Some(Some(&b"0/16B3748"[..])));
    }

    #[test]
    fn truncated_frames_do_not_panic() {
        assert_eq!(parse_ready_for_query(b"Z\0\0\0\x04"), None);
        assert_eq!(parse_backend_key_data(b"K\0\0\0\x0c\0\0"), None);
        assert_eq!(parse_error_fields(b"E\0\0\0\x08CXX").code, b"");
        assert_eq!(first_column(b"D\0\0\0\x0a\0\x01\0\0\0\x09ab"), None);
    }
}
