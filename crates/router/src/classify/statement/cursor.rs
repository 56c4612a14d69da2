//! A statement's view of the token stream, and the name helpers every statement uses.

use crate::classify::keywords::{keyword, Kw};
use crate::classify::lexer::{Kind, Lexer, Token};
use super::{statement, Out};

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

// `next`, `peek` and the token accessors are `#[inline]`: the query scan calls them per token from
// sibling modules, which may be compiled in other codegen units, where a plain function is not
// inlined (as they all were when the classifier was one file).
impl<'l, 'a> Stmt<'l, 'a> {
    pub fn top(lx: &'l mut Lexer<'a>) -> Self {
        Stmt {
            lx,
            nested: false,
            depth: 0,
            malformed: false,
        }
    }

    #[inline]
    pub fn peek(&mut self) -> Option<Token> {
        let t = self.lx.peek();
        match t.kind {
            Kind::Semi | Kind::Eof | Kind::Unterminated => None,
            Kind::RParen if self.nested && self.depth == 0 => None,
            _ => Some(t),
        }
    }

    #[inline]
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
    pub(super) fn peek2(&self) -> (Token, Token) {
        let mut ahead = self.lx.clone();
        (ahead.next(), ahead.next())
    }

    #[inline]
    pub(super) fn text(&self, t: Token) -> &'a [u8] {
        self.lx.text(t)
    }

    #[inline]
    pub(super) fn kw(&self, t: Token) -> Option<Kw> {
        if t.kind == Kind::Word {
            keyword(self.text(t))
        } else {
            None
        }
    }

    pub(super) fn peek_kind(&mut self) -> Option<Kind> {
        self.peek().map(|t| t.kind)
    }

    #[inline]
    pub(super) fn peek_kw(&mut self) -> Option<Kw> {
        let t = self.peek()?;
        self.kw(t)
    }

    pub(super) fn eat_kw(&mut self, kw: Kw) -> bool {
        if self.peek_kw() == Some(kw) {
            self.next();
            true
        } else {
            false
        }
    }

    pub(super) fn eat(&mut self, kind: Kind) -> bool {
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
    pub(super) fn skip_group(&mut self) {
        let depth = self.depth;
        if self.eat(Kind::LParen) {
            while self.depth > depth && self.next().is_some() {}
        }
    }

    /// The view of what is left of the group we are in: it ends at the `)` that closes the group
    /// (left unconsumed).
    pub(super) fn nested(&mut self) -> Stmt<'_, 'a> {
        Stmt {
            lx: &mut *self.lx,
            nested: true,
            depth: 0,
            malformed: false,
        }
    }

    /// Classifies the sub-statement that starts here and ends at the `)` closing the group we
    /// are in (left unconsumed).
    pub(super) fn sub_statement(&mut self, level: u8) -> Out {
        let mut inner = self.nested();
        let out = statement(&mut inner, level + 1);
        inner.skip_rest();
        out
    }

    /// Steps over a `;` that does not end the statement (one inside a `BEGIN ATOMIC` body): is
    /// the next token a `;`?
    pub(super) fn step_over_semi(&mut self) -> bool {
        if self.lx.peek().kind == Kind::Semi {
            self.lx.next();
            true
        } else {
            false
        }
    }

    /// The source text from the start of `first` to the end of `last`.
    /// The whole text being classified (to name a value by its place in it).
    pub(super) fn src(&self) -> &'a [u8] {
        self.lx.src()
    }

    pub(super) fn span(&self, first: Token, last: Token) -> &'a [u8] {
        self.lx.src().get(first.range().start..last.range().end).unwrap_or(&[])
    }
}

pub(super) fn is_name(t: Token) -> bool {
    matches!(t.kind, Kind::Word | Kind::QuotedIdent)
}

/// The text of a quoted identifier or string without its prefix and quotes (`U&"x"` → `x`,
/// `E'x'` → `x`, `$q$x$q$` → `x`). Doubled quotes are left doubled.
#[inline]
pub(super) fn unquote(text: &[u8], kind: Kind) -> &[u8] {
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
