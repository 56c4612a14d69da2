//! What the first batch of a transaction tells the router, read before any server is chosen.

use crate::prepared::ClientStatements;
use lsnpool_protocol::frame::Frames;
use lsnpool_protocol::frontend;
use lsnpool_router::{classify_bytes, Classification, Deallocate, Hint, PoolerCommand, StatementClass};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchInfo {
    /// Some statement must run on the primary.
    pub writes: bool,
    pub hint: Option<Hint>,
    /// The client declared the transaction read-only: a 25006 is its own error to see.
    pub read_only_txn: bool,
    /// The batch is one simple Query holding one pooler command: answered locally.
    pub pooler: Option<PoolerCommand>,
    /// The batch is one simple Query `DEALLOCATE name`: the byte range of the name.
    pub deallocate: Option<Deallocate>,
    /// The classification of the buffer's first frame when it is a simple Query, so the relay
    /// does not lex the same text a second time.
    pub first_query: Option<Classification>,
    /// The buffer starts with an unnamed Parse of one pooler command (drivers such as JDBC
    /// send SET through the extended protocol); [`extended_command`] checks the rest.
    pub parsed_pooler: Option<PoolerCommand>,
}

/// Reads the frames of the client's next implicit transaction (up to its first Sync or
/// Query). A Bind of a statement we never saw counts as a write: the safe side.
pub fn analyze(buf: &[u8], max_message_size: usize, statements: &ClientStatements) -> BatchInfo {
    let mut info = BatchInfo::default();
    let mut first_statement = true;
    let mut at_start = true;
    for (h, frame) in Frames::new(buf, max_message_size).map_while(Result::ok) {
        let class = match h.tag {
            frontend::QUERY => {
                let c = classify_bytes(frontend::parse_query(frame).unwrap_or_default());
                if at_start {
                    info.first_query = Some(c);
                }
                Some(c)
            }
            frontend::PARSE => frontend::parse_parse(frame).map(|p| classify_bytes(p.query)),
            frontend::BIND => match frontend::parse_bind(frame) {
                Some(b) if !b.statement.is_empty() => match statements.get(b.statement) {
                    Some(s) => Some(s.class),
                    None => {
                        info.writes = true;
                        None
                    }
                },
                _ => None,
            },
            frontend::FUNCTION_CALL => {
                info.writes = true;
                None
            }
            _ => None,
        };
        if let Some(c) = class {
            info.writes |= c.write;
            if first_statement {
                first_statement = false;
                info.hint = c.hint;
                info.read_only_txn = matches!(
                    c.first,
                    StatementClass::Begin { read_only: true } | StatementClass::SetTransaction { read_only: true }
                );
                if h.tag == frontend::PARSE && at_start && c.statements == 1 {
                    if let StatementClass::Pooler(cmd) = c.first {
                        info.parsed_pooler = Some(cmd);
                    }
                }
                if h.tag == frontend::QUERY && c.statements == 1 {
                    if let StatementClass::Pooler(cmd) = c.first {
                        info.pooler = Some(cmd);
                    }
                    if let Some(d @ Deallocate::Named { .. }) = c.deallocate {
                        info.deallocate = Some(d);
                    }
                }
            }
        }
        if h.tag == frontend::SYNC || h.tag == frontend::QUERY {
            break;
        }
        at_start = false;
    }
    info
}


/// A pooler command sent as Parse, Bind, an optional Describe, Execute and Sync, all of the
/// unnamed statement and portal and without parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedCommand {
    /// Bytes up to and including the Sync.
    pub len: usize,
    /// The Describe's kind (`S`tatement or `P`ortal), if the batch has one.
    pub describe: Option<u8>,
}

/// Whether the buffer starts with exactly such a batch (the Parse already classified as a
/// pooler command by [`analyze`]); anything else goes to a server as usual.
pub fn extended_command(buf: &[u8], max_message_size: usize) -> Option<ExtendedCommand> {
    let mut frames = Frames::new(buf, max_message_size).map_while(Result::ok);
    let mut len = 0;
    let (h, frame) = frames.next()?;
    let parse = frontend::parse_parse(frame).filter(|p| h.tag == frontend::PARSE && p.name.is_empty())?;
    // No parameter types: the body is the query, its NUL and a zero count.
    if parse.body.len() != parse.query.len() + 3 {
        return None;
    }
    len += h.frame_len;
    let (h, frame) = frames.next()?;
    frontend::parse_bind(frame).filter(|b| h.tag == frontend::BIND && b.portal.is_empty() && b.statement.is_empty())?;
    len += h.frame_len;
    let mut describe = None;
    let (mut h, mut frame) = frames.next()?;
    if h.tag == frontend::DESCRIBE {
        let (kind, name) = frontend::parse_target(frame)?;
        if !name.is_empty() {
            return None;
        }
        describe = Some(kind);
        len += h.frame_len;
        (h, frame) = frames.next()?;
    }
    let portal = frontend::parse_execute(frame).filter(|_| h.tag == frontend::EXECUTE)?;
    if !portal.is_empty() {
        return None;
    }
    len += h.frame_len;
    let (h, _) = frames.next()?;
    (h.tag == frontend::SYNC).then_some(ExtendedCommand { len: len + h.frame_len, describe })
}

/// Length of a batch made only of named Parses and its Sync (what PQprepare and
/// `pgbench -M prepared` send), which an idle client can have answered without a server.
pub fn parse_only(buf: &[u8], max_message_size: usize) -> Option<usize> {
    let mut len = 0;
    for (h, frame) in Frames::new(buf, max_message_size).map_while(Result::ok) {
        len += h.frame_len;
        match h.tag {
            frontend::SYNC if len > h.frame_len => return Some(len),
            frontend::PARSE if frontend::parse_parse(frame).is_some_and(|p| !p.name.is_empty()) => {}
            _ => return None,
        }
    }
    None
}
