//! A tiny raw frontend: builds protocol messages byte by byte, logs in with SCRAM/md5/trust,
//! and reads backend messages with timeouts, for what tokio-postgres cannot express.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PROTOCOL_3_0: i32 = 196_608;
pub const PROTOCOL_3_2: i32 = 196_610;
pub const SSL_REQUEST: i32 = 80_877_103;

/// One backend message.
#[derive(Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tag {
            b'E' | b'N' => write!(f, "{}({} {})", self.tag as char, self.code().unwrap_or_default(), self.message().unwrap_or_default()),
            b'Z' => write!(f, "Z({})", self.body.first().map(|b| *b as char).unwrap_or('?')),
            b'D' => write!(f, "D({:?})", self.columns().iter().map(|c| c.as_ref().map(|v| short(v))).collect::<Vec<_>>()),
            b'C' => write!(f, "C({})", String::from_utf8_lossy(self.body.strip_suffix(&[0]).unwrap_or(&self.body))),
            t => write!(f, "{}[{}]", t as char, self.body.len()),
        }
    }
}

fn short(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    if s.len() > 40 {
        format!("{}…({} bytes)", &s[..40], v.len())
    } else {
        s.into_owned()
    }
}

impl Msg {
    /// A field of an ErrorResponse / NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&k, tail)) = rest.split_first() {
            if k == 0 {
                break;
            }
            let end = tail.iter().position(|b| *b == 0)?;
            if k == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    pub fn code(&self) -> Option<String> {
        self.field(b'C')
    }

    pub fn message(&self) -> Option<String> {
        self.field(b'M')
    }

    /// DataRow columns.
    pub fn columns(&self) -> Vec<Option<Vec<u8>>> {
        let b = &self.body;
        if self.tag != b'D' || b.len() < 2 {
            return Vec::new();
        }
        let n = i16::from_be_bytes([b[0], b[1]]) as usize;
        let mut pos = 2;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
            pos += 4;
            if len < 0 {
                out.push(None);
            } else {
                out.push(Some(b[pos..pos + len as usize].to_vec()));
                pos += len as usize;
            }
        }
        out
    }

    /// First column of a DataRow as text.
    pub fn text0(&self) -> Option<String> {
        self.columns().into_iter().next().flatten().map(|v| String::from_utf8_lossy(&v).into_owned())
    }
}

/// Frontend message builder.
#[derive(Default)]
pub struct Fe(pub Vec<u8>);

impl Fe {
    pub fn new() -> Fe {
        Fe(Vec::new())
    }

    fn msg(&mut self, tag: u8, body: &[u8]) -> &mut Self {
        self.0.push(tag);
        self.0.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        self.0.extend_from_slice(body);
        self
    }

    pub fn query(&mut self, sql: &str) -> &mut Self {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        self.msg(b'Q', &b)
    }

    pub fn parse(&mut self, name: &str, sql: &str, types: &[u32]) -> &mut Self {
        let mut b = Vec::with_capacity(sql.len() + name.len() + 8);
        cstr(&mut b, name);
        cstr(&mut b, sql);
        b.extend_from_slice(&(types.len() as i16).to_be_bytes());
        for t in types {
            b.extend_from_slice(&t.to_be_bytes());
        }
        self.msg(b'P', &b)
    }

    /// Bind with text parameters and text results.
    pub fn bind(&mut self, portal: &str, stmt: &str, params: &[Option<&[u8]>]) -> &mut Self {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        cstr(&mut b, stmt);
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        self.msg(b'B', &b)
    }

    pub fn describe_statement(&mut self, name: &str) -> &mut Self {
        let mut b = vec![b'S'];
        cstr(&mut b, name);
        self.msg(b'D', &b)
    }

    pub fn describe_portal(&mut self, name: &str) -> &mut Self {
        let mut b = vec![b'P'];
        cstr(&mut b, name);
        self.msg(b'D', &b)
    }

    pub fn close_statement(&mut self, name: &str) -> &mut Self {
        let mut b = vec![b'S'];
        cstr(&mut b, name);
        self.msg(b'C', &b)
    }

    pub fn execute(&mut self, portal: &str, max_rows: i32) -> &mut Self {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        b.extend_from_slice(&max_rows.to_be_bytes());
        self.msg(b'E', &b)
    }

    pub fn sync(&mut self) -> &mut Self {
        self.msg(b'S', &[])
    }

    pub fn flush(&mut self) -> &mut Self {
        self.msg(b'H', &[])
    }

    pub fn terminate(&mut self) -> &mut Self {
        self.msg(b'X', &[])
    }

    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

/// A startup packet with the given protocol code and parameters.
pub fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        cstr(&mut body, k);
        cstr(&mut body, v);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    p.extend_from_slice(&body);
    p
}

pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Messages received during login (ParameterStatus, BackendKeyData, ...).
    pub login_msgs: Vec<Msg>,
}

pub enum Read {
    Msg(Msg),
    Eof,
    Timeout,
}

impl Raw {
    pub async fn connect(port: u16) -> Raw {
        let stream = super::within(5.0, "TCP connect to lsnpool", TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("TCP connect to lsnpool");
        stream.set_nodelay(true).ok();
        Raw { stream, buf: Vec::new(), login_msgs: Vec::new() }
    }

    /// Logs in as `user` to `appdb` with protocol 3.0; panics unless the login succeeds.
    pub async fn login(port: u16, user: &str, password: &str) -> Raw {
        Self::login_with(port, PROTOCOL_3_0, &[("user", user), ("database", super::DB)], password)
            .await
            .unwrap_or_else(|e| panic!("raw login failed: {e:?}"))
    }

    /// Connects, sends the startup packet and authenticates. `Err` carries the ErrorResponse.
    pub async fn login_with(port: u16, version: i32, params: &[(&str, &str)], password: &str) -> Result<Raw, Msg> {
        let mut r = Raw::connect(port).await;
        r.send(&startup_packet(version, params)).await;
        let user = params.iter().find(|(k, _)| *k == "user").map(|(_, v)| *v).unwrap_or("");
        r.authenticate(user, password).await?;
        Ok(r)
    }

    /// Answers authentication requests until ReadyForQuery; keeps every other message.
    pub async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), Msg> {
        let mut scram: Option<lsnpool_auth::ScramClient> = None;
        loop {
            let m = self.recv().await;
            match m.tag {
                b'R' => {
                    let code = i32::from_be_bytes(m.body[..4].try_into().unwrap());
                    let data = &m.body[4..];
                    match code {
                        0 => {}
                        3 => {
                            let mut b = password.as_bytes().to_vec();
                            b.push(0);
                            self.send_msg(b'p', &b).await;
                        }
                        5 => {
                            let salt: [u8; 4] = data[..4].try_into().unwrap();
                            let mut b = lsnpool_auth::md5_password_message(user, password, salt).into_bytes();
                            b.push(0);
                            self.send_msg(b'p', &b).await;
                        }
                        10 => {
                            let mechs = String::from_utf8_lossy(data);
                            assert!(mechs.contains("SCRAM-SHA-256"), "SASL mechanisms offered: {mechs:?}");
                            let mut c = lsnpool_auth::ScramClient::new(password);
                            let first = c.client_first();
                            let mut b = b"SCRAM-SHA-256\0".to_vec();
                            b.extend_from_slice(&(first.len() as i32).to_be_bytes());
                            b.extend_from_slice(&first);
                            self.send_msg(b'p', &b).await;
                            scram = Some(c);
                        }
                        11 => {
                            let c = scram.as_mut().expect("SASLContinue without SASL");
                            let fin = c.server_first(data).expect("server-first-message");
                            self.send_msg(b'p', &fin).await;
                        }
                        12 => {
                            let c = scram.as_mut().expect("SASLFinal without SASL");
                            c.server_final(data).expect("server signature must verify");
                        }
                        other => panic!("unexpected authentication request {other}"),
                    }
                }
                b'E' => return Err(m),
                b'Z' => return Ok(()),
                _ => self.login_msgs.push(m),
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        super::within(30.0, "write to lsnpool", self.stream.write_all(bytes)).await.expect("write to lsnpool");
    }

    pub async fn send_fe(&mut self, fe: &mut Fe) {
        let b = fe.take();
        self.send(&b).await;
    }

    async fn send_msg(&mut self, tag: u8, body: &[u8]) {
        let mut f = Fe::new();
        f.msg(tag, body);
        self.send_fe(&mut f).await;
    }

    /// Reads one message, or EOF, or gives up after `limit`.
    pub async fn read(&mut self, limit: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let frame: Vec<u8> = self.buf.drain(..len + 1).collect();
                    return Read::Msg(Msg { tag: frame[0], body: frame[5..].to_vec() });
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Read::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Read::Eof,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads one message; panics on EOF or after 10 s.
    pub async fn recv(&mut self) -> Msg {
        match self.read(Duration::from_secs(10)).await {
            Read::Msg(m) => m,
            Read::Eof => panic!("lsnpool closed the connection unexpectedly"),
            Read::Timeout => panic!("no message from lsnpool within 10s (hang?)"),
        }
    }

    /// Reads raw bytes (e.g. the one-byte answer to SSLRequest).
    pub async fn read_byte(&mut self) -> Option<u8> {
        if !self.buf.is_empty() {
            return Some(self.buf.remove(0));
        }
        let mut b = [0u8; 1];
        match super::within(10.0, "one byte from lsnpool", self.stream.read(&mut b)).await {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut v = Vec::new();
        loop {
            let m = self.recv().await;
            let done = m.tag == b'Z';
            v.push(m);
            if done {
                return v;
            }
        }
    }

    /// Reads until the server closes the connection; panics if it stays open past `limit`.
    pub async fn until_eof(&mut self, limit: Duration) -> Vec<Msg> {
        let mut v = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Read::Msg(m) => v.push(m),
                Read::Eof => return v,
                Read::Timeout => panic!("connection still open after {limit:?}; got {v:?}"),
            }
        }
    }

    /// Runs a simple query and returns its messages up to ReadyForQuery.
    pub async fn simple(&mut self, sql: &str) -> Vec<Msg> {
        let mut f = Fe::new();
        f.query(sql);
        self.send_fe(&mut f).await;
        self.until_ready().await
    }
}

pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

pub fn first_error(msgs: &[Msg]) -> Option<&Msg> {
    msgs.iter().find(|m| m.tag == b'E')
}

/// Texts of the first column of each DataRow.
pub fn rows0(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().filter(|m| m.tag == b'D').filter_map(|m| m.text0()).collect()
}
