//! What the first batch of a transaction tells the router, read before any server is chosen.

use crate::prepared::ClientStatements;
use lsnpool_protocol::frame::Frames;
use lsnpool_protocol::frontend;
use lsnpool_router::{classify_bytes, leading_directives, Classification, Deallocate, Hint, Lsn, PoolerCommand, RuleAction, StatementClass};

/// Classifications of a batch's Query and Parse frames by their offset in the client's read
/// buffer: the first few only, inline (a batch rarely holds more), so nothing is allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Classified {
    entries: [(u32, Option<Classification>); 4],
    len: usize,
}

impl Classified {
    fn push(&mut self, offset: usize, class: Classification) {
        if let (Some(slot), Ok(offset)) = (self.entries.get_mut(self.len), u32::try_from(offset)) {
            *slot = (offset, Some(class));
            self.len += 1;
        }
    }

    /// The classification of the frame at `offset`, if the batch analysis made it.
    pub fn at(&self, offset: usize) -> Option<Classification> {
        self.entries[..self.len].iter().find(|(o, _)| *o as usize == offset).and_then(|(_, c)| *c)
    }
}

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
    /// The classifications made here, by frame offset, so the relay does not lex the same
    /// text a second time.
    pub classified: Classified,
    /// The batch is only named Parses and their Sync (what PQprepare and `pgbench -M
    /// prepared` send): its length. An idle client can have it answered without a server.
    pub parse_only: Option<usize>,
    /// The buffer starts with an unnamed Parse of one pooler command (drivers such as JDBC
    /// send SET through the extended protocol); [`extended_command`] checks the rest.
    pub parsed_pooler: Option<PoolerCommand>,
    /// What the first query rule matching the batch asks for (set by the session's
    /// `SessionRules`, not by `analyze`).
    pub rule: Option<RuleAction>,
    /// `/* lsnpool:session_key=… */` on the first statement: the key is `buf[start..end]`.
    pub session_key: Option<(usize, usize)>,
    /// `/* lsnpool:min_lsn=… */` on the first statement.
    pub min_lsn: Option<Lsn>,
}

/// Reads the frames of the client's next implicit transaction (up to its first Sync or
/// Query). A Bind of a statement we never saw counts as a write: the safe side.
pub fn analyze(buf: &[u8], max_message_size: usize, statements: &ClientStatements) -> BatchInfo {
    let mut info = BatchInfo::default();
    let mut first_statement = true;
    let mut at_start = true;
    let mut offset = 0;
    // Still only named Parses: a Sync then ends a batch that needs no server.
    let mut only_named_parses = true;
    for (h, frame) in Frames::new(buf, max_message_size).map_while(Result::ok) {
        let start = offset;
        offset += h.frame_len;
        let class = match h.tag {
            frontend::QUERY => {
                let text = frontend::parse_query(frame).unwrap_or_default();
                if first_statement {
                    directives(&mut info, buf, text);
                }
                let c = classify_bytes(text);
                info.classified.push(start, c);
                Some(c)
            }
            frontend::PARSE => {
                let parse = frontend::parse_parse(frame);
                only_named_parses &= parse.as_ref().is_some_and(|p| !p.name.is_empty());
                parse.map(|p| {
                    if first_statement {
                        directives(&mut info, buf, p.query);
                    }
                    let c = classify_bytes(p.query);
                    info.classified.push(start, c);
                    c
                })
            }
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
        only_named_parses &= h.tag == frontend::PARSE || h.tag == frontend::SYNC;
        if h.tag == frontend::SYNC && only_named_parses && start > 0 {
            info.parse_only = Some(offset);
        }
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
                if h.tag == frontend::QUERY && at_start && c.statements == 1 {
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

/// The session key and token in the leading comments of `text` (a slice of `buf`).
fn directives(info: &mut BatchInfo, buf: &[u8], text: &[u8]) {
    let d = leading_directives(text);
    let base = (text.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    info.session_key = d.session_key.map(|(s, e)| (base + s as usize, base + e as usize)).filter(|(_, e)| *e <= buf.len());
    info.min_lsn = d.min_lsn;
}

/// A pooler command sent as Parse, Bind, an optional Describe, Execute and Sync, all of the
/// unnamed statement and portal, without parameters and with text results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedCommand {
    /// Bytes up to and including the Sync.
    pub len: usize,
    /// The Describe's kind (`S`tatement or `P`ortal), if the batch has one.
    pub describe: Option<u8>,
}

/// What follows an unnamed Parse of a pooler command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extended {
    /// The whole batch, in a shape the pooler answers itself.
    Answer(ExtendedCommand),
    /// Its Sync has not arrived yet.
    Incomplete,
    /// Another shape (a Flush, parameters, binary results, a row limit...): the server would
    /// take the setting as a meaningless placeholder, so it is refused instead.
    Other,
}

/// Reads the batch at the start of `buf`, whose first frame [`analyze`] found to be an unnamed
/// Parse of the pooler command `cmd`.
pub fn extended_command(buf: &[u8], max_message_size: usize, cmd: PoolerCommand) -> Extended {
    let show = cmd.shows().is_some();
    let mut frames = Frames::new(buf, max_message_size);
    let mut len = 0;
    let mut describe = None;
    let mut step = 0; // 0 Parse, 1 Bind, 2 Describe or Execute, 3 Sync
    loop {
        let (h, frame) = match frames.next() {
            Some(Ok(f)) => f,
            // A length no frame can have: waiting for "the rest" would wait forever (found by
            // tests/fuzz_wire.rs); refused, the session then meets the bad frame and closes.
            Some(Err(_)) => return Extended::Other,
            None => return Extended::Incomplete,
        };
        len += h.frame_len;
        let ok = match (step, h.tag) {
            // No parameter types: the body is the query, its NUL and a zero count.
            (0, frontend::PARSE) => frontend::parse_parse(frame).is_some_and(|p| p.name.is_empty() && p.body.len() == p.query.len() + 3),
            (1, frontend::BIND) => frontend::parse_bind(frame).is_some_and(|b| b.portal.is_empty() && b.statement.is_empty() && no_params_text_results(b.rest)),
            (2, frontend::DESCRIBE) if describe.is_none() => match frontend::parse_target(frame) {
                Some((kind @ (b'S' | b'P'), name)) if name.is_empty() => {
                    describe = Some(kind);
                    step -= 1; // an Execute still follows
                    true
                }
                _ => false,
            },
            (2, frontend::EXECUTE) => frontend::parse_execute(frame).is_some_and(|portal| portal.is_empty())
                // A row limit would suspend SHOW's portal; SET and RESET return no rows.
                && (!show || frame.get(frame.len().saturating_sub(4)..).is_some_and(|n| n == [0, 0, 0, 0])),
            (3, frontend::SYNC) => return Extended::Answer(ExtendedCommand { len, describe }),
            _ => false,
        };
        if !ok {
            return Extended::Other;
        }
        step += 1;
    }
}

/// A Bind's tail (after portal and statement names): no parameters, text results only.
fn no_params_text_results(rest: &[u8]) -> bool {
    let i16_at = |pos: usize| rest.get(pos..pos + 2).map(|b| i16::from_be_bytes([b[0], b[1]]));
    let Some(formats) = i16_at(0) else { return false };
    let Ok(formats) = usize::try_from(formats) else { return false };
    let pos = 2 + 2 * formats;
    if i16_at(pos) != Some(0) {
        return false; // parameters
    }
    let Some(results) = i16_at(pos + 2).and_then(|n| usize::try_from(n).ok()) else { return false };
    (0..results).all(|i| i16_at(pos + 4 + 2 * i) == Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
        let body = [sql.as_bytes(), b"\0\0\0"].concat();
        frontend::parse_with_body(buf, name.as_bytes(), &body);
    }

    #[test]
    fn classifies_each_frame_once_by_offset() {
        let mut buf = BytesMut::new();
        parse(&mut buf, "", "SELECT 1");
        let second = buf.len();
        parse(&mut buf, "s", "UPDATE t SET a = 1");
        frontend::sync(&mut buf);
        let info = analyze(&buf, 1 << 20, &ClientStatements::default());
        assert!(info.writes);
        assert!(info.classified.at(0).is_some_and(|c| !c.write));
        assert!(info.classified.at(second).is_some_and(|c| c.write));
        assert_eq!(info.classified.at(1), None);
        assert_eq!(info.parse_only, None, "an unnamed Parse needs a server");
    }

    /// Found by tests/fuzz_wire.rs: a frame with an impossible length after the Parse read as
    /// "the rest has not arrived yet", and the session waited for it forever.
    #[test]
    fn a_bad_frame_after_an_extended_command_is_not_incomplete() {
        let mut buf = BytesMut::new();
        parse(&mut buf, "", "SET lsnpool.consistency = 'strong'");
        let cmd = analyze(&buf, 1 << 20, &ClientStatements::default()).parsed_pooler.expect("a pooler command");
        assert_eq!(extended_command(&buf, 1 << 20, cmd), Extended::Incomplete);
        buf.extend_from_slice(&[b'P', 0, 0, 0, 3]);
        assert_eq!(extended_command(&buf, 1 << 20, cmd), Extended::Other);
    }

    #[test]
    fn named_parses_and_sync_need_no_server() {
        let mut buf = BytesMut::new();
        parse(&mut buf, "a", "SELECT 1");
        parse(&mut buf, "b", "SELECT 2");
        frontend::sync(&mut buf);
        let len = buf.len();
        frontend::query(&mut buf, "SELECT 3");
        let info = analyze(&buf, 1 << 20, &ClientStatements::default());
        assert_eq!(info.parse_only, Some(len));
        let mut lone_sync = BytesMut::new();
        frontend::sync(&mut lone_sync);
        assert_eq!(analyze(&lone_sync, 1 << 20, &ClientStatements::default()).parse_only, None);
    }
}

#[cfg(test)]
mod fuzz;
