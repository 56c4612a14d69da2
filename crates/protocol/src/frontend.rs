//! Messages from a client (or from the pooler playing one): views of the ones the pooler
//! inspects or rewrites, and builders for the ones it sends itself.

use crate::backend::{message, put_cstr};
use crate::frame::{read_cstr, HEADER_LEN};
use crate::startup::{CANCEL_REQUEST, PROTOCOL_3_0, SSL_REQUEST};
use bytes::{BufMut, BytesMut};

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const DESCRIBE: u8 = b'D';
pub const EXECUTE: u8 = b'E';
pub const CLOSE: u8 = b'C';
pub const SYNC: u8 = b'S';
pub const FLUSH: u8 = b'H';
pub const TERMINATE: u8 = b'X';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';
pub const FUNCTION_CALL: u8 = b'F';
pub const PASSWORD: u8 = b'p';

/// Whether PostgreSQL accepts a message with this tag from a logged-in client (PostgresMain's
/// dispatch). CopyData/CopyDone/CopyFail are accepted everywhere: outside COPY the server
/// ignores them. Anything else (an unknown tag, a PasswordMessage, a second startup packet,
/// whose length's high byte reads as tag 0) makes it close the connection with 08P01, so the
/// pooler must refuse it itself: forwarded, it would kill a server connection other clients
/// borrow next.
pub fn is_accepted_after_login(tag: u8) -> bool {
    matches!(
        tag,
        QUERY | PARSE | BIND | DESCRIBE | EXECUTE | CLOSE | SYNC | FLUSH | TERMINATE | FUNCTION_CALL | COPY_DATA | COPY_DONE | COPY_FAIL
    )
}

/// The error PostgreSQL gives for a tag [`is_accepted_after_login`] refuses.
pub fn invalid_message_type(tag: u8) -> String {
    format!("invalid frontend message type {tag}")
}

/// Query text of a simple Query (without its NUL).
pub fn parse_query(frame: &[u8]) -> Option<&[u8]> {
    let mut pos = HEADER_LEN;
    read_cstr(frame, &mut pos)
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseMsg<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    /// Everything after the name: query text, its NUL and the parameter types. Two Parse
    /// messages with equal `body` prepare the same statement, whatever they are called.
    pub body: &'a [u8],
}

pub fn parse_parse(frame: &[u8]) -> Option<ParseMsg<'_>> {
    let mut pos = HEADER_LEN;
    let name = read_cstr(frame, &mut pos)?;
    let body = &frame[pos..];
    let query = read_cstr(frame, &mut pos)?;
    Some(ParseMsg { name, query, body })
}

#[derive(Debug, PartialEq, Eq)]
pub struct BindMsg<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Parameter formats and values, result formats: passed on untouched.
    pub rest: &'a [u8],
}

pub fn parse_bind(frame: &[u8]) -> Option<BindMsg<'_>> {
    let mut pos = HEADER_LEN;
    let portal = read_cstr(frame, &mut pos)?;
    let statement = read_cstr(frame, &mut pos)?;
    Some(BindMsg { portal, statement, rest: &frame[pos..] })
}

/// Describe and Close share a layout: kind ('S' statement, 'P' portal) and a name.
pub fn parse_target(frame: &[u8]) -> Option<(u8, &[u8])> {
    let kind = *frame.get(HEADER_LEN)?;
    let mut pos = HEADER_LEN + 1;
    Some((kind, read_cstr(frame, &mut pos)?))
}

/// The portal an Execute runs.
pub fn parse_execute(frame: &[u8]) -> Option<&[u8]> {
    let mut pos = HEADER_LEN;
    read_cstr(frame, &mut pos)
}

pub fn startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let start = buf.len();
    buf.put_i32(0);
    buf.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(buf, k.as_bytes());
        put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - start) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Asks a server to switch to TLS; it answers one byte, `S` or `N`.
pub fn ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(SSL_REQUEST);
}

pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_i32(16);
    buf.put_i32(CANCEL_REQUEST);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

pub fn password(buf: &mut BytesMut, password: &[u8]) {
    message(buf, PASSWORD, |b| put_cstr(b, password));
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    message(buf, PASSWORD, |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    message(buf, PASSWORD, |b| b.put_slice(data));
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, QUERY, |b| put_cstr(b, sql.as_bytes()));
}

/// A Parse naming the statement `name`, with the query and parameter types of `body`.
pub fn parse_with_body(buf: &mut BytesMut, name: &[u8], body: &[u8]) {
    message(buf, PARSE, |b| {
        put_cstr(b, name);
        b.put_slice(body);
    });
}

pub fn bind_renamed(buf: &mut BytesMut, bind: &BindMsg<'_>, statement: &[u8]) {
    message(buf, BIND, |b| {
        put_cstr(b, bind.portal);
        put_cstr(b, statement);
        b.put_slice(bind.rest);
    });
}

pub fn target(buf: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    message(buf, tag, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    });
}

/// Bind (unnamed portal, no parameters, text results), Execute and Sync of `statement`:
/// running a prepared statement without parsing or planning it again.
pub fn execute_prepared(buf: &mut BytesMut, statement: &[u8]) {
    message(buf, BIND, |b| {
        put_cstr(b, b"");
        put_cstr(b, statement);
        b.put_i16(0); // parameter formats
        b.put_i16(0); // parameters
        b.put_i16(0); // result formats: all text
    });
    message(buf, EXECUTE, |b| {
        put_cstr(b, b"");
        b.put_i32(0); // no row limit
    });
    sync(buf);
}

pub fn sync(buf: &mut BytesMut) {
    message(buf, SYNC, |_| {});
}

pub fn terminate(buf: &mut BytesMut) {
    message(buf, TERMINATE, |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_body_is_name_independent() {
        let mut a = BytesMut::new();
        parse_with_body(&mut a, b"s1", b"SELECT $1\0\0\x01\0\0\0\x17");
        let mut b = BytesMut::new();
        parse_with_body(&mut b, b"other", b"SELECT $1\0\0\x01\0\0\0\x17");
        let (pa, pb) = (parse_parse(&a).unwrap(), parse_parse(&b).unwrap());
        assert_eq!(pa.name, b"s1");
        assert_eq!(pa.query, b"SELECT $1");
        assert_eq!(pa.body, pb.body);
    }

    #[test]
    fn bind_rename_keeps_parameters() {
        let mut orig = BytesMut::new();
        message(&mut orig, BIND, |b| {
            put_cstr(b, b"");
            put_cstr(b, b"client_stmt");
            b.put_slice(b"\0\0\0\x01\0\0\0\x011\0\0");
        });
        let bind = parse_bind(&orig).unwrap();
        assert_eq!(bind.statement, b"client_stmt");
        let mut renamed = BytesMut::new();
        bind_renamed(&mut renamed, &bind, b"lsnpool_7");
        let again = parse_bind(&renamed).unwrap();
        assert_eq!(again.statement, b"lsnpool_7");
        assert_eq!(again.rest, bind.rest);
    }

    #[test]
    fn malformed_views_are_none() {
        assert_eq!(parse_query(b"Q\0\0\0\x05"), None);
        assert_eq!(parse_parse(b"P\0\0\0\x06a"), None);
        assert_eq!(parse_target(b"D\0\0\0\x04"), None);
    }
}
