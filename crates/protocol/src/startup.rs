//! The untagged first packet of a connection: `len: i32, code: i32, payload`.

use crate::frame::read_cstr;

pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
pub const PROTOCOL_3_0: i32 = 196_608;

/// Startup packets are small; PostgreSQL itself refuses any over 10 000 bytes.
pub const MAX_STARTUP_LEN: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
    Startup(Startup),
}

#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct Startup {
    /// Requested minor version of protocol 3 (3.2 gets NegotiateProtocolVersion down to 3.0).
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("invalid length {0} of startup packet")]
    BadLength(i32),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
}

/// Length of the packet at the start of `buf`, once its four length bytes are there.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, StartupError> {
    let Some(b) = buf.get(..4) else { return Ok(None) };
    let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if len < 8 || len as usize > MAX_STARTUP_LEN {
        return Err(StartupError::BadLength(len));
    }
    Ok(Some(len as usize))
}

/// Parses one whole packet (as delimited by [`packet_len`]).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    let code = i32::from_be_bytes(
        packet.get(4..8).ok_or(StartupError::Malformed("shorter than 8 bytes"))?.try_into().map_err(|_| StartupError::Malformed("length"))?,
    );
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            let mut pos = 8;
            let pid = crate::frame::read_i32(packet, &mut pos).ok_or(StartupError::Malformed("cancel request too short"))?;
            let secret = crate::frame::read_i32(packet, &mut pos).ok_or(StartupError::Malformed("cancel request too short"))?;
            Ok(StartupPacket::Cancel { pid, secret })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            Ok(StartupPacket::Startup(Startup { minor, params: parse_params(&packet[8..])? }))
        }
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let mut pos = 0;
        let key = read_cstr(body, &mut pos).ok_or(StartupError::Malformed("missing terminator"))?;
        if key.is_empty() {
            // PostgreSQL refuses bytes after the terminator ("expected terminator as last
            // byte"); accepting them would let a client smuggle bytes past the parser.
            if pos != body.len() {
                return Err(StartupError::Malformed("expected terminator as last byte"));
            }
            return Ok(params);
        }
        let value = read_cstr(body, &mut pos).ok_or(StartupError::Malformed("parameter without value"))?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| StartupError::Malformed("parameter name is not UTF-8"))?;
        let value = String::from_utf8(value.to_vec()).map_err(|_| StartupError::Malformed("parameter value is not UTF-8"))?;
        params.push((key, value));
        body = &body[pos..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend;
    use bytes::BytesMut;

    #[test]
    fn round_trips_a_startup_message() {
        let mut buf = BytesMut::new();
        frontend::startup(&mut buf, &[("user", "alice"), ("database", "appdb")]);
        assert_eq!(packet_len(&buf).unwrap(), Some(buf.len()));
        let StartupPacket::Startup(s) = parse(&buf).unwrap() else { panic!() };
        assert_eq!(s.minor, 0);
        assert_eq!(s.param("user"), Some("alice"));
        assert_eq!(s.param("database"), Some("appdb"));
    }

    #[test]
    fn recognises_special_requests() {
        let ssl = [0, 0, 0, 8, 4, 210, 22, 47];
        assert_eq!(parse(&ssl).unwrap(), StartupPacket::SslRequest);
        let cancel = [0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 7, 0, 0, 0, 9];
        assert_eq!(parse(&cancel).unwrap(), StartupPacket::Cancel { pid: 7, secret: 9 });
    }

    #[test]
    fn rejects_garbage() {
        assert!(packet_len(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(packet_len(&[0, 0, 0, 2]).is_err());
        assert!(matches!(parse(&[0, 0, 0, 8, 0, 2, 0, 0]), Err(StartupError::UnsupportedProtocol { major: 2, .. })));
        assert!(parse(&[0, 0, 0, 12, 0, 3, 0, 0, b'u', 0, b'x', b'y']).is_err());
    }

    /// Found by fuzz_startup_refuses_junk_parameters: bytes after the terminating NUL were
    /// ignored; PostgreSQL refuses the packet.
    #[test]
    fn refuses_bytes_after_the_terminator() {
        assert_eq!(parse(&[0, 0, 0, 10, 0, 3, 0, 0, 0, 0]), Err(StartupError::Malformed("expected terminator as last byte")));
        assert!(parse(&[0, 0, 0, 14, 0, 3, 0, 0, b'u', 0, b'a', 0, 0, b'x']).is_err());
        assert!(matches!(parse(&[0, 0, 0, 13, 0, 3, 0, 0, b'u', 0, b'a', 0, 0]), Ok(StartupPacket::Startup(_))));
    }
}
