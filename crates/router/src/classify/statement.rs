//! Classifies one statement from its tokens.
//!
//! Most statements are decided by their first keyword. Queries (SELECT, WITH, VALUES, TABLE and
//! the queries inside EXPLAIN, COPY and DECLARE) are scanned to their end for what makes a query
//! write: a locking clause, `INTO`, a data-modifying CTE, a writing function. The default for
//! anything not recognised is [`StatementClass::Write`].

use super::keywords::{function_kind, keyword, FunctionKind, Kw};
use super::lexer::{Kind, Lexer, Token};
use super::{parse_consistency, Deallocate, LsnpoolSetting, PoolerCommand, StatementClass};

/// Sub-statements nest (EXPLAIN, DECLARE, COPY (query), CTEs). Deeper than this is not real SQL:
/// the statement is a write, and the recursion cannot exhaust the stack.
const MAX_NESTING: u8 = 24;

/// What one statement needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Out {
    pub class: StatementClass,
    pub calls_functions: bool,
    pub deallocate: Option<Deallocate>,
    /// COMMIT/ROLLBACK AND CHAIN.
    pub chain: bool,
    /// Ends the transaction without being a Commit or Rollback (PREPARE TRANSACTION).
    pub ends_transaction: bool,
    /// The modes a BEGIN or SET TRANSACTION gave the current transaction, so that a SET
    /// TRANSACTION right after BEGIN in the same Query can be folded into it.
    pub tx_modes: Option<TxModes>,
}

/// Transaction modes as far as routing cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxModes {
    /// READ ONLY (true) or READ WRITE (false), if given.
    pub read_only: Option<bool>,
    /// ISOLATION LEVEL SERIALIZABLE, or a snapshot import: needs the primary.
    pub needs_primary: bool,
}

impl Out {
    fn class(class: StatementClass) -> Out {
        Out {
            class,
            calls_functions: false,
            deallocate: None,
            chain: false,
            ends_transaction: false,
            tx_modes: None,
        }
    }

    fn with_modes(class: StatementClass, modes: TxModes) -> Out {
        Out {
            tx_modes: Some(modes),
            ..Out::class(class)
        }
    }
}

const WRITE: Out = Out {
    class: StatementClass::Write,
    calls_functions: false,
    deallocate: None,
    chain: false,
    ends_transaction: false,
    tx_modes: None,
};

/// A statement's view of the token stream: `next`/`peek` return None at its end, which is a `;`,
/// the end of the text, an unterminated literal, or (for a parenthesised sub-statement) the `)`
/// that closes it. None of these is consumed. Tracks the parenthesis depth.
pub(crate) struct Stmt<'l, 'a> {
    lx: &'l mut Lexer<'a>,
    nested: bool,
    depth: u32,
    /// A `)` with no `(` at the top level: a syntax error, so a write.
    pub malformed: bool,
}

impl<'l, 'a> Stmt<'l, 'a> {
    pub fn top(lx: &'l mut Lexer<'a>) -> Self {
        Stmt {
            lx,
            nested: false,
            depth: 0,
            malformed: false,
        }
    }

    pub fn peek(&mut self) -> Option<Token> {
        let t = self.lx.peek();
        match t.kind {
            Kind::Semi | Kind::Eof | Kind::Unterminated => None,
            Kind::RParen if self.nested && self.depth == 0 => None,
            _ => Some(t),
        }
    }

    pub fn next(&mut self) -> Option<Token> {
        let t = self.peek()?;
        self.lx.next();
        match t.kind {
            Kind::LParen => self.depth += 1,
            Kind::RParen if self.depth == 0 => self.malformed = true,
            Kind::RParen => self.depth -= 1,
            _ => {}
        }
        Some(t)
    }

    /// The two tokens after the current position, ignoring statement boundaries.
    fn peek2(&self) -> (Token, Token) {
        let mut ahead = self.lx.clone();
        (ahead.next(), ahead.next())
    }

    fn text(&self, t: Token) -> &'a [u8] {
        self.lx.text(t)
    }

    fn kw(&self, t: Token) -> Option<Kw> {
        if t.kind == Kind::Word {
            keyword(self.text(t))
        } else {
            None
        }
    }

    fn peek_kind(&mut self) -> Option<Kind> {
        self.peek().map(|t| t.kind)
    }

    fn peek_kw(&mut self) -> Option<Kw> {
        let t = self.peek()?;
        self.kw(t)
    }

    fn eat_kw(&mut self, kw: Kw) -> bool {
        if self.peek_kw() == Some(kw) {
            self.next();
            true
        } else {
            false
        }
    }

    fn eat(&mut self, kind: Kind) -> bool {
        if self.peek_kind() == Some(kind) {
            self.next();
            true
        } else {
            false
        }
    }

    /// Some `(` is still open.
    pub fn unclosed(&self) -> bool {
        self.depth > 0
    }

    pub fn skip_rest(&mut self) {
        while self.next().is_some() {}
    }

    /// Skips a parenthesised group; the next token must be its `(`.
    fn skip_group(&mut self) {
        let depth = self.depth;
        if self.eat(Kind::LParen) {
            while self.depth > depth && self.next().is_some() {}
        }
    }

    /// Classifies the sub-statement that starts here and ends at the `)` closing the group we
    /// are in (left unconsumed).
    fn sub_statement(&mut self, level: u8) -> Out {
        let mut inner = Stmt {
            lx: &mut *self.lx,
            nested: true,
            depth: 0,
            malformed: false,
        };
        let out = statement(&mut inner, level + 1);
        inner.skip_rest();
        out
    }
}

fn is_name(t: Token) -> bool {
    matches!(t.kind, Kind::Word | Kind::QuotedIdent)
}

/// The text of a quoted identifier or string without its prefix and quotes (`U&"x"` → `x`,
/// `E'x'` → `x`, `$q$x$q$` → `x`). Doubled quotes are left doubled.
fn unquote(text: &[u8], kind: Kind) -> &[u8] {
    match kind {
        Kind::QuotedIdent | Kind::Str => {
            let quote = if kind == Kind::Str { b'\'' } else { b'"' };
            let open = text.iter().position(|&b| b == quote).map_or(0, |i| i + 1);
            text.get(open..text.len().saturating_sub(1)).unwrap_or(&[])
        }
        Kind::DollarStr => {
            let tag = text.iter().skip(1).position(|&b| b == b'$').map_or(0, |i| i + 2);
            text.get(tag..text.len().saturating_sub(tag)).unwrap_or(&[])
        }
        _ => text,
    }
}

/// Classifies the statement at the start of `st` and consumes it.
pub(crate) fn statement(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    let Some(first) = st.next() else {
        return WRITE; // an empty sub-statement, e.g. `EXPLAIN;`
    };
    if level > MAX_NESTING {
        st.skip_rest();
        return WRITE;
    }
    let out = match first.kind {
        Kind::LParen => query(st, level, Prev::LParen),
        Kind::Word => by_keyword(st, first, level),
        _ => WRITE,
    };
    st.skip_rest();
    out
}

fn by_keyword(st: &mut Stmt<'_, '_>, first: Token, level: u8) -> Out {
    use StatementClass as C;
    let Some(kw) = st.kw(first) else { return WRITE };
    match kw {
        Kw::Select | Kw::Values | Kw::Table => query(st, level, Prev::Other),
        Kw::With => with_query(st, level),
        Kw::Show => show(st),
        Kw::Explain => explain(st, level),
        Kw::Copy => copy(st, level),
        Kw::Begin => begin(st),
        Kw::Start if st.eat_kw(Kw::Transaction) => begin(st),
        Kw::Commit => commit(st, true),
        Kw::End => commit(st, false),
        Kw::Rollback => rollback(st, true),
        Kw::Abort => rollback(st, false),
        // Cursors live and die with the transaction, wherever it runs.
        Kw::Savepoint | Kw::Release | Kw::Fetch | Kw::Move | Kw::Close => Out::class(C::TransactionNeutral),
        Kw::Set => set(st),
        Kw::Reset => Out::class(reset(st)),
        Kw::Discard => discard(st),
        Kw::Deallocate => deallocate(st),
        Kw::Listen | Kw::Unlisten | Kw::Load | Kw::Execute => Out::class(C::Session),
        Kw::Prepare => prepare(st),
        Kw::Declare => declare(st, level),
        Kw::Create => create(st),
        _ => WRITE,
    }
}

// ---------------------------------------------------------------------------------------------
// Queries

/// What came before the current token, as far as telling a function call apart matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prev {
    /// `::`: a type name follows (`x::numeric(10,2)`).
    Cast,
    /// `AS`: an alias or a type follows (`AS t(a, b)`, `CAST(x AS numeric(10,2))`).
    As,
    /// `)`: only an alias with a column list can follow (`generate_series(1,3) g(n)`).
    RParen,
    LParen,
    /// `.`: a field name, never a keyword.
    Dot,
    Other,
}

#[derive(Default)]
struct Scan {
    write: bool,
    calls_functions: bool,
}

impl Scan {
    fn add(&mut self, out: Out) {
        self.calls_functions |= out.calls_functions;
        if out.class != StatementClass::Read {
            self.write = true;
        }
    }

    fn out(&self) -> Out {
        let class = if self.write {
            StatementClass::Write
        } else {
            StatementClass::Read
        };
        Out {
            calls_functions: self.calls_functions,
            ..Out::class(class)
        }
    }
}

/// SELECT / VALUES / TABLE / `(`: scans the rest of the query.
fn query(st: &mut Stmt<'_, '_>, level: u8, prev: Prev) -> Out {
    let mut scan = Scan::default();
    scan_query(st, &mut scan, prev, level);
    scan.out()
}

fn scan_query(st: &mut Stmt<'_, '_>, scan: &mut Scan, mut prev: Prev, level: u8) {
    while let Some(t) = st.next() {
        prev = match t.kind {
            Kind::Word | Kind::QuotedIdent => query_word(st, t, prev, scan, level),
            Kind::Cast => Prev::Cast,
            Kind::LParen => Prev::LParen,
            Kind::RParen => Prev::RParen,
            Kind::Dot => Prev::Dot,
            _ => Prev::Other,
        };
    }
}

/// A word inside a query: a keyword that makes it write, or a (qualified) name that may be a
/// function call.
fn query_word(st: &mut Stmt<'_, '_>, first: Token, ctx: Prev, scan: &mut Scan, level: u8) -> Prev {
    if ctx == Prev::Dot {
        return Prev::Other; // `t.update`: a column
    }
    // After AS a keyword is an alias (`SELECT 1 AS update`); only the call check below applies.
    let kw = if ctx == Prev::As { None } else { st.kw(first) };
    match kw {
        // INSERT/UPDATE/DELETE/MERGE inside a query: a data-modifying CTE or a subquery that
        // is not a plain SELECT. INTO: SELECT ... INTO creates a table.
        Some(Kw::Insert | Kw::Update | Kw::Delete | Kw::Merge | Kw::Into) => {
            scan.write = true;
            return Prev::Other;
        }
        // FOR UPDATE / FOR SHARE / FOR NO KEY UPDATE / FOR KEY SHARE: row locks need the primary.
        Some(Kw::For) => {
            if matches!(st.peek_kw(), Some(Kw::Update | Kw::Share | Kw::No | Kw::Key)) {
                scan.write = true;
            }
            return Prev::Other;
        }
        Some(Kw::As) => return Prev::As,
        // `(WITH x AS (...) SELECT ...)`: a nested WITH, parsed like a top-level one so that
        // its CTE names are not taken for function calls.
        Some(Kw::With) if ctx == Prev::LParen => {
            let out = with_query_nested(st, level);
            scan.add(out);
            return Prev::Other;
        }
        _ => {}
    }
    let mut qualifier = None;
    let mut name = first;
    while st.peek_kind() == Some(Kind::Dot) {
        let (_, after) = st.peek2();
        if !is_name(after) {
            break; // `t.*`
        }
        st.next();
        qualifier = Some(name);
        match st.next() {
            Some(part) => name = part,
            None => break,
        }
    }
    if st.peek_kind() == Some(Kind::LParen) {
        // After `::`, `AS` or `)` a name before `(` is a type (`numeric(10,2)`) or an alias with
        // a column list (`g(n)`), not a call; a writing function's name still counts.
        let type_or_alias = matches!(ctx, Prev::Cast | Prev::As | Prev::RParen);
        function_call(st, qualifier, name, type_or_alias, scan);
    }
    Prev::Other
}

/// `WITH` just after a `(`: the nested query ends at the matching `)`.
fn with_query_nested(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    if level > MAX_NESTING {
        return WRITE;
    }
    let mut inner = Stmt {
        lx: &mut *st.lx,
        nested: true,
        depth: 0,
        malformed: false,
    };
    let out = with_query(&mut inner, level + 1);
    inner.skip_rest();
    out
}

fn function_call(st: &Stmt<'_, '_>, qualifier: Option<Token>, name: Token, type_or_alias: bool, scan: &mut Scan) {
    let folded = name.kind == Kind::Word;
    let text = unquote(st.text(name), name.kind);
    let builtin_scope = match qualifier {
        None => true,
        Some(q) => unquote(st.text(q), q.kind).eq_ignore_ascii_case(b"pg_catalog"),
    };
    match function_kind(text, folded, builtin_scope) {
        FunctionKind::Writes => scan.write = true,
        FunctionKind::Unknown if !type_or_alias => scan.calls_functions = true,
        FunctionKind::Unknown | FunctionKind::NotAFunction | FunctionKind::ReadOnly => {}
    }
}

/// `WITH [RECURSIVE] name [(cols)] AS [[NOT] MATERIALIZED] (stmt) [SEARCH ...] [CYCLE ...], ...
/// main_stmt`: a read only if every CTE and the main statement are reads.
fn with_query(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    let mut scan = Scan::default();
    st.eat_kw(Kw::Recursive);
    loop {
        if !st.next().is_some_and(is_name) {
            return WRITE;
        }
        if st.peek_kind() == Some(Kind::LParen) {
            st.skip_group();
        }
        if !st.eat_kw(Kw::As) {
            return WRITE;
        }
        st.eat_kw(Kw::Not);
        st.eat_kw(Kw::Materialized);
        if !st.eat(Kind::LParen) {
            return WRITE;
        }
        let cte = st.sub_statement(level);
        if !st.eat(Kind::RParen) {
            return WRITE;
        }
        scan.add(cte);
        // SEARCH {BREADTH|DEPTH} FIRST BY a, b SET col / CYCLE a, b SET col [TO v DEFAULT d] USING col
        if st.eat_kw(Kw::Search) {
            skip_past(st, Kw::Set);
            st.next();
        }
        if st.eat_kw(Kw::Cycle) {
            skip_past(st, Kw::Using);
            st.next();
        }
        if !st.eat(Kind::Comma) {
            break;
        }
    }
    scan.add(statement(st, level + 1));
    scan.out()
}

fn skip_past(st: &mut Stmt<'_, '_>, kw: Kw) {
    while let Some(t) = st.next() {
        if st.kw(t) == Some(kw) {
            return;
        }
    }
}

/// `EXPLAIN [ANALYZE] [VERBOSE] stmt` / `EXPLAIN (option [value], ...) stmt`: a read if the
/// statement is one. Without ANALYZE nothing runs, so its function calls do not count.
fn explain(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    let mut analyze = false;
    if st.eat(Kind::LParen) {
        analyze = explain_options(st);
        if !st.eat(Kind::RParen) {
            return WRITE;
        }
    } else {
        loop {
            match st.peek_kw() {
                Some(Kw::Analyze | Kw::Analyse) => analyze = true,
                Some(Kw::Verbose) => {}
                _ => break,
            }
            st.next();
        }
    }
    let inner = statement(st, level + 1);
    if inner.class != StatementClass::Read {
        return WRITE;
    }
    Out {
        calls_functions: analyze && inner.calls_functions,
        ..Out::class(StatementClass::Read)
    }
}

/// The options up to the closing `)` (left unconsumed): is ANALYZE on?
fn explain_options(st: &mut Stmt<'_, '_>) -> bool {
    let mut analyze = false;
    let mut opts = Stmt {
        lx: &mut *st.lx,
        nested: true,
        depth: 0,
        malformed: false,
    };
    while let Some(name) = opts.next() {
        let is_analyze = matches!(opts.kw(name), Some(Kw::Analyze | Kw::Analyse));
        let mut on = true;
        while let Some(t) = opts.next() {
            if t.kind == Kind::Comma && opts.depth == 0 {
                break;
            }
            on &= !is_false(unquote(opts.text(t), t.kind));
        }
        analyze |= is_analyze && on;
    }
    analyze
}

/// A boolean option value that turns the option off.
fn is_false(v: &[u8]) -> bool {
    [&b"false"[..], b"off", b"0", b"no"]
        .iter()
        .any(|f| v.eq_ignore_ascii_case(f))
}

/// `COPY table [(cols)] TO STDOUT` and `COPY (query) TO STDOUT` read; `COPY ... FROM` writes,
/// and so does `COPY ... TO 'file'|PROGRAM` (a file on the server that runs it).
fn copy(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    let mut out = Out::class(StatementClass::Read);
    if st.eat(Kind::LParen) {
        let inner = st.sub_statement(level);
        if !st.eat(Kind::RParen) || inner.class != StatementClass::Read {
            return WRITE;
        }
        out.calls_functions = inner.calls_functions;
    } else {
        st.eat_kw(Kw::Binary); // pre-7.3 syntax, still accepted
        if !skip_qualified_name(st) {
            return WRITE;
        }
        if st.peek_kind() == Some(Kind::LParen) {
            st.skip_group();
        }
    }
    if st.eat_kw(Kw::To) && st.eat_kw(Kw::Stdout) {
        out
    } else {
        WRITE
    }
}

fn skip_qualified_name(st: &mut Stmt<'_, '_>) -> bool {
    if !st.next().is_some_and(is_name) {
        return false;
    }
    while st.eat(Kind::Dot) {
        if !st.next().is_some_and(is_name) {
            return false;
        }
    }
    true
}

/// `DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR [WITH|WITHOUT HOLD] FOR
/// query`. A cursor WITH HOLD outlives its transaction: session state.
fn declare(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    if !st.next().is_some_and(is_name) {
        return WRITE;
    }
    loop {
        match st.next() {
            Some(t) if st.kw(t) == Some(Kw::Cursor) => break,
            Some(_) => {}
            None => return WRITE,
        }
    }
    let mut hold = false;
    if st.eat_kw(Kw::With) {
        hold = st.eat_kw(Kw::Hold);
    } else if st.eat_kw(Kw::Without) {
        st.eat_kw(Kw::Hold);
    }
    if !st.eat_kw(Kw::For) {
        return WRITE;
    }
    let inner = statement(st, level + 1);
    if inner.class != StatementClass::Read {
        return WRITE;
    }
    let class = if hold {
        StatementClass::Session
    } else {
        StatementClass::TransactionNeutral
    };
    Out {
        calls_functions: inner.calls_functions,
        ..Out::class(class)
    }
}

/// CREATE: a write. Only its extent needs care: a `CREATE [OR REPLACE] FUNCTION|PROCEDURE` with
/// a `BEGIN ATOMIC ... END` body has `;` inside. psql's heuristic: count BEGIN (and CASE inside
/// one) against END, outside parentheses.
fn create(st: &mut Stmt<'_, '_>) -> Out {
    if st.eat_kw(Kw::Or) {
        st.eat_kw(Kw::Replace);
    }
    if !matches!(st.peek_kw(), Some(Kw::Function | Kw::Procedure)) {
        return WRITE;
    }
    let mut blocks = 0u32;
    loop {
        match st.next() {
            Some(t) if st.depth == 0 => match st.kw(t) {
                Some(Kw::Begin) => blocks += 1,
                Some(Kw::Case) if blocks > 0 => blocks += 1,
                Some(Kw::End) => blocks = blocks.saturating_sub(1),
                _ => {}
            },
            Some(_) => {}
            None if blocks > 0 && st.lx.peek().kind == Kind::Semi => {
                st.lx.next();
            }
            None => return WRITE,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transaction control

#[derive(Default)]
struct Modes {
    /// READ ONLY (true) or READ WRITE (false), the last one given.
    read_only: Option<bool>,
    /// ISOLATION LEVEL SERIALIZABLE: a hot standby refuses it ("cannot use serializable mode in
    /// a hot standby"), so such a transaction needs the primary even when READ ONLY.
    serializable: bool,
    /// SET TRANSACTION SNAPSHOT: a snapshot exported on one server cannot be imported on another.
    snapshot: bool,
}

fn transaction_modes(st: &mut Stmt<'_, '_>) -> Modes {
    let mut m = Modes::default();
    while let Some(t) = st.next() {
        match st.kw(t) {
            Some(Kw::Read) => match st.peek_kw() {
                Some(Kw::Only) => m.read_only = Some(true),
                Some(Kw::Write) => m.read_only = Some(false),
                _ => {}
            },
            Some(Kw::Serializable) => m.serializable = true,
            Some(Kw::Snapshot) => m.snapshot = true,
            _ => {}
        }
    }
    m
}

impl Modes {
    fn tx(&self) -> TxModes {
        TxModes {
            read_only: self.read_only,
            needs_primary: self.serializable || self.snapshot,
        }
    }
}

impl TxModes {
    /// A transaction with these modes may run on a replica.
    pub fn replica_ok(&self) -> bool {
        self.read_only == Some(true) && !self.needs_primary
    }
}

/// `BEGIN [WORK|TRANSACTION] [modes]`, `START TRANSACTION [modes]`.
fn begin(st: &mut Stmt<'_, '_>) -> Out {
    if !st.eat_kw(Kw::Work) {
        st.eat_kw(Kw::Transaction);
    }
    let modes = transaction_modes(st).tx();
    Out::with_modes(
        StatementClass::Begin {
            read_only: modes.replica_ok(),
        },
        modes,
    )
}

/// `COMMIT|END [WORK|TRANSACTION] [AND [NO] CHAIN]`; `COMMIT PREPARED 'gid'` is a write.
fn commit(st: &mut Stmt<'_, '_>, prepared_allowed: bool) -> Out {
    if prepared_allowed && st.peek_kw() == Some(Kw::Prepared) {
        return WRITE;
    }
    if !st.eat_kw(Kw::Work) {
        st.eat_kw(Kw::Transaction);
    }
    Out {
        chain: and_chain(st),
        ..Out::class(StatementClass::Commit)
    }
}

/// `ROLLBACK|ABORT [WORK|TRANSACTION] [AND [NO] CHAIN]`; `ROLLBACK [WORK] TO [SAVEPOINT] s` keeps
/// the transaction; `ROLLBACK PREPARED 'gid'` is a write.
fn rollback(st: &mut Stmt<'_, '_>, prepared_allowed: bool) -> Out {
    if prepared_allowed && st.peek_kw() == Some(Kw::Prepared) {
        return WRITE;
    }
    if !st.eat_kw(Kw::Work) {
        st.eat_kw(Kw::Transaction);
    }
    if st.peek_kw() == Some(Kw::To) {
        return Out::class(StatementClass::TransactionNeutral);
    }
    Out {
        chain: and_chain(st),
        ..Out::class(StatementClass::Rollback)
    }
}

fn and_chain(st: &mut Stmt<'_, '_>) -> bool {
    st.eat_kw(Kw::And) && !st.eat_kw(Kw::No) && st.peek_kw() == Some(Kw::Chain)
}

/// `PREPARE TRANSACTION 'gid'` ends the transaction (a write); `PREPARE name AS stmt` creates
/// session state.
fn prepare(st: &mut Stmt<'_, '_>) -> Out {
    let (a, b) = st.peek2();
    if a.kind == Kind::Word && st.text(a).eq_ignore_ascii_case(b"transaction") && b.kind == Kind::Str {
        return Out {
            ends_transaction: true,
            ..WRITE
        };
    }
    Out::class(StatementClass::Session)
}

// ---------------------------------------------------------------------------------------------
// Settings

/// The parameter names the classifier treats specially.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Param {
    /// `lsnpool.consistency`: answered by the pooler.
    LsnpoolConsistency,
    /// The pooler's other settings (`lsnpool.session_key`, …).
    Lsnpool(LsnpoolSetting),
    /// `transaction_read_only`: the same as SET TRANSACTION READ ONLY / READ WRITE.
    TransactionReadOnly,
    /// `transaction_isolation`: matters only when SERIALIZABLE.
    TransactionIsolation,
    Other,
}

/// Reads a (possibly qualified, possibly quoted) parameter name. GUC names ignore case.
fn param_name(st: &mut Stmt<'_, '_>) -> Param {
    let Some(first) = st.next() else { return Param::Other };
    if !is_name(first) {
        return Param::Other;
    }
    let first_text = unquote(st.text(first), first.kind);
    if !st.eat(Kind::Dot) {
        let quoted_lsnpool = first.kind == Kind::QuotedIdent
            && first_text.get(..b"lsnpool.".len()).is_some_and(|p| p.eq_ignore_ascii_case(b"lsnpool."));
        let suffix = first_text.get(b"lsnpool.".len()..).unwrap_or_default();
        return if quoted_lsnpool && suffix.eq_ignore_ascii_case(b"consistency") {
            Param::LsnpoolConsistency
        } else if let Some(p) = LsnpoolSetting::by_suffix(suffix).filter(|_| quoted_lsnpool) {
            Param::Lsnpool(p)
        } else if first_text.eq_ignore_ascii_case(b"transaction_read_only") {
            Param::TransactionReadOnly
        } else if first_text.eq_ignore_ascii_case(b"transaction_isolation") {
            Param::TransactionIsolation
        } else {
            Param::Other
        };
    }
    let Some(second) = st.next() else { return Param::Other };
    if !(is_name(second) && first_text.eq_ignore_ascii_case(b"lsnpool") && st.peek_kind() != Some(Kind::Dot)) {
        return Param::Other;
    }
    let suffix = unquote(st.text(second), second.kind);
    if suffix.eq_ignore_ascii_case(b"consistency") {
        Param::LsnpoolConsistency
    } else {
        LsnpoolSetting::by_suffix(suffix).map_or(Param::Other, Param::Lsnpool)
    }
}

/// The value of `SET name {TO|=} value`: one token's unquoted text, or the raw text of several
/// (so an unquoted `read-your-writes` reads as written). None if there is no value.
struct Value<'a> {
    text: &'a [u8],
    is_default: bool,
}

fn set_value<'a>(st: &mut Stmt<'_, 'a>) -> Option<Value<'a>> {
    let op = st.next()?;
    if !(st.text(op) == b"=" || st.kw(op) == Some(Kw::To)) {
        return None;
    }
    let first = st.next()?;
    let mut last = first;
    while let Some(t) = st.next() {
        last = t;
    }
    if first == last {
        let text = unquote(st.text(first), first.kind);
        let is_default = st.kw(first) == Some(Kw::Default);
        return Some(Value { text, is_default });
    }
    let text = st.lx.src().get(first.range().start..last.range().end).unwrap_or(&[]);
    Some(Value {
        text,
        is_default: false,
    })
}

/// `SET [SESSION|LOCAL] ...`.
fn set(st: &mut Stmt<'_, '_>) -> Out {
    use StatementClass as C;
    let mut local = false;
    match st.peek_kw() {
        Some(Kw::Session) => {
            st.next();
            match st.peek_kw() {
                // SET SESSION CHARACTERISTICS AS TRANSACTION modes: the session's default, so
                // it is not folded into a preceding BEGIN (no tx_modes).
                Some(Kw::Characteristics) => {
                    st.next();
                    let modes = transaction_modes(st);
                    return Out::class(set_transaction(&modes, C::Session));
                }
                Some(Kw::Authorization) => return Out::class(C::Session),
                _ => {}
            }
        }
        Some(Kw::Local) => {
            st.next();
            local = true;
        }
        _ => {}
    }
    match st.peek_kw() {
        Some(Kw::Transaction) => {
            st.next();
            let modes = transaction_modes(st);
            return Out::with_modes(set_transaction(&modes, C::TransactionNeutral), modes.tx());
        }
        Some(Kw::Constraints) => return Out::class(C::TransactionNeutral),
        _ => {}
    }
    match param_name(st) {
        // SET LOCAL lsnpool.consistency is answered like SET: the pooler has no per-transaction
        // level (see PoolerCommand::SetConsistency).
        Param::LsnpoolConsistency => Out::class(C::Pooler(match set_value(st) {
            None => PoolerCommand::InvalidConsistency,
            Some(v) if v.is_default => PoolerCommand::ResetConsistency,
            Some(v) => {
                parse_consistency(v.text).map_or(PoolerCommand::InvalidConsistency, PoolerCommand::SetConsistency)
            }
        })),
        Param::Lsnpool(p) => {
            let src = st.lx.src();
            Out::class(C::Pooler(set_lsnpool(p, set_value(st), src)))
        }
        Param::TransactionReadOnly => match set_value(st).map(|v| bool_value(v.text)) {
            Some(Some(read_only)) => Out::with_modes(
                C::SetTransaction { read_only },
                TxModes {
                    read_only: Some(read_only),
                    needs_primary: false,
                },
            ),
            _ => WRITE,
        },
        Param::TransactionIsolation => match set_value(st) {
            Some(v) if v.text.eq_ignore_ascii_case(b"serializable") => Out::with_modes(
                C::SetTransaction { read_only: false },
                TxModes {
                    read_only: None,
                    needs_primary: true,
                },
            ),
            _ => Out::class(C::TransactionNeutral),
        },
        Param::Other if local => Out::class(C::TransactionNeutral),
        Param::Other => Out::class(C::Session),
    }
}

/// `SET lsnpool.<p> = value`; a key's value is named by its place in `src`.
fn set_lsnpool(p: LsnpoolSetting, v: Option<Value<'_>>, src: &[u8]) -> PoolerCommand {
    let Some(v) = v else { return PoolerCommand::Invalid(p) };
    if v.is_default {
        return PoolerCommand::Reset(p);
    }
    match p {
        LsnpoolSetting::SessionKey => {
            let start = (v.text.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize);
            match (u32::try_from(start), u32::try_from(start + v.text.len())) {
                (Ok(start), Ok(end)) if !v.text.is_empty() && start as usize <= src.len() => PoolerCommand::SetSessionKey { start, end },
                _ => PoolerCommand::Invalid(p),
            }
        }
        LsnpoolSetting::ReportCommitLsn => bool_value(v.text).map_or(PoolerCommand::Invalid(p), PoolerCommand::SetReportCommitLsn),
        LsnpoolSetting::MinLsn => crate::Lsn::from_text(v.text.trim_ascii())
            .map_or(PoolerCommand::Invalid(p), PoolerCommand::SetMinLsn),
    }
}

/// SET TRANSACTION / SET SESSION CHARACTERISTICS AS TRANSACTION; `otherwise` when the modes say
/// nothing about read-only-ness.
fn set_transaction(m: &Modes, otherwise: StatementClass) -> StatementClass {
    if m.snapshot {
        StatementClass::Write
    } else if m.serializable {
        StatementClass::SetTransaction { read_only: false }
    } else if let Some(read_only) = m.read_only {
        StatementClass::SetTransaction { read_only }
    } else {
        otherwise
    }
}

fn bool_value(v: &[u8]) -> Option<bool> {
    if [&b"on"[..], b"true", b"yes", b"1"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
    {
        Some(true)
    } else if is_false(v) {
        Some(false)
    } else {
        None
    }
}

/// `SHOW name`: a read, except `SHOW lsnpool.consistency`.
fn show(st: &mut Stmt<'_, '_>) -> Out {
    match param_name(st) {
        Param::LsnpoolConsistency if st.peek().is_none() => return Out::class(StatementClass::Pooler(PoolerCommand::ShowConsistency)),
        Param::Lsnpool(p) if st.peek().is_none() => return Out::class(StatementClass::Pooler(PoolerCommand::Show(p))),
        _ => {}
    }
    Out::class(StatementClass::Read)
}

/// `RESET name|ALL`: session state, except `RESET lsnpool.consistency`.
fn reset(st: &mut Stmt<'_, '_>) -> StatementClass {
    match param_name(st) {
        Param::LsnpoolConsistency if st.peek().is_none() => return StatementClass::Pooler(PoolerCommand::ResetConsistency),
        Param::Lsnpool(p) if st.peek().is_none() => return StatementClass::Pooler(PoolerCommand::Reset(p)),
        _ => {}
    }
    StatementClass::Session
}

// ---------------------------------------------------------------------------------------------
// Prepared statements

/// `DISCARD ALL` drops every prepared statement too.
fn discard(st: &mut Stmt<'_, '_>) -> Out {
    let all = st.eat_kw(Kw::All) && st.peek().is_none();
    Out {
        deallocate: all.then_some(Deallocate::All),
        ..Out::class(StatementClass::Session)
    }
}

/// `DEALLOCATE [PREPARE] name|ALL`.
fn deallocate(st: &mut Stmt<'_, '_>) -> Out {
    let mut target = st.next();
    // `DEALLOCATE prepare` deallocates a statement named "prepare".
    if let Some(t) = target {
        if st.kw(t) == Some(Kw::Prepare) && st.peek().is_some() {
            target = st.next();
        }
    }
    let deallocate = match target {
        Some(t) if st.kw(t) == Some(Kw::All) => Some(Deallocate::All),
        Some(t) if is_name(t) => Some(Deallocate::Named {
            start: t.start as usize,
            end: t.end as usize,
        }),
        _ => None,
    };
    Out {
        deallocate,
        ..Out::class(StatementClass::Session)
    }
}
