//! A PostgreSQL lexer that finds token boundaries and nothing more.
//!
//! It follows `src/backend/parser/scan.l` closely enough that a keyword is only ever seen where
//! the server would see one: never inside a string, a dollar-quoted body, a quoted identifier or
//! a comment. It works on bytes (the Query text may be in any client encoding, and arbitrary input
//! must never panic), never allocates, and reports an unterminated literal or comment as a
//! [`Kind::Unterminated`] token, after which it only returns [`Kind::Eof`].

/// What a token is. Only the distinctions the classifier needs are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An unquoted identifier or keyword.
    Word,
    /// `"..."` or `U&"..."`.
    QuotedIdent,
    /// `'...'`, `E'...'`, `N'...'`, `U&'...'`, `B'...'`, `X'...'`.
    Str,
    /// `$$...$$` or `$tag$...$tag$`.
    DollarStr,
    Number,
    /// `$1`.
    Param,
    LParen,
    RParen,
    Comma,
    Semi,
    Dot,
    /// `::`.
    Cast,
    /// A run of operator characters, e.g. `=`, `->>`, `@>`.
    Op,
    /// Anything else (`[`, `]`, `:`, a lone `$`, stray bytes).
    Other,
    /// An unterminated string, quoted identifier, dollar quote or block comment. The server
    /// rejects such text; the classifier treats it as a write.
    Unterminated,
    Eof,
}

/// Offsets are u32 to keep a token at 12 bytes, which is returned in registers: the classifier
/// refuses texts of 4 GiB or more (PostgreSQL's messages stop at 1 GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: u32,
    pub end: u32,
}

impl Token {
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Texts this long or longer are not lexed (see [`Token`]).
pub(crate) const MAX_LEN: usize = u32::MAX as usize;

/// The lexer state is just a position, so it is `Clone`: cloning it is how the classifier looks
/// more than one token ahead.
#[derive(Clone)]
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Lex `'...'` as with `standard_conforming_strings = off` (backslash escapes in plain strings).
    legacy_strings: bool,
    peeked: Option<Token>,
    /// A plain `'...'` string contained a backslash, so the text might lex differently under
    /// `standard_conforming_strings = off`; the classifier then lexes it that way too.
    pub saw_plain_backslash: bool,
    /// An [`Kind::Unterminated`] token was produced.
    pub failed: bool,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// `ident_start` in scan.l: bytes >= 0x80 are letters, whatever the encoding.
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// `ident_cont` without `$`: the characters of a dollar-quote tag.
fn is_dollar_tag_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

/// `op_chars` in scan.l.
fn is_op_char(b: u8) -> bool {
    matches!(
        b,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a [u8], legacy_strings: bool) -> Self {
        Lexer {
            src,
            pos: 0,
            legacy_strings,
            peeked: None,
            saw_plain_backslash: false,
            failed: false,
        }
    }

    pub fn src(&self) -> &'a [u8] {
        self.src
    }

    /// The bytes of a token (empty for out-of-range spans, which cannot happen).
    pub fn text(&self, t: Token) -> &'a [u8] {
        self.src.get(t.range()).unwrap_or(&[])
    }

    pub fn peek(&mut self) -> Token {
        match self.peeked {
            Some(t) => t,
            None => {
                let t = self.lex();
                self.peeked = Some(t);
                t
            }
        }
    }

    pub fn next(&mut self) -> Token {
        match self.peeked.take() {
            Some(t) => t,
            None => self.lex(),
        }
    }

    /// The byte at `i`, or 0 past the end (0 matches none of the characters the lexer looks for).
    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    fn lex(&mut self) -> Token {
        if self.failed {
            return self.token(Kind::Eof, self.src.len(), self.src.len());
        }
        if !self.skip_trivia() {
            return self.unterminated(self.pos);
        }
        let start = self.pos;
        let Some(&b) = self.src.get(start) else {
            return self.token(Kind::Eof, start, start);
        };
        let next = self.at(start + 1);
        match b {
            b'\'' => self.string(start, start + 1, self.legacy_strings, true),
            b'"' => self.quoted_ident(start, start + 1),
            b'$' => self.dollar(start),
            b'0'..=b'9' => self.number(start),
            b'.' if next.is_ascii_digit() => self.number(start),
            b'.' => self.single(Kind::Dot, start),
            b'(' => self.single(Kind::LParen, start),
            b')' => self.single(Kind::RParen, start),
            b',' => self.single(Kind::Comma, start),
            b';' => self.single(Kind::Semi, start),
            b':' if next == b':' => {
                self.pos = start + 2;
                self.token(Kind::Cast, start, start + 2)
            }
            b'e' | b'E' if next == b'\'' => self.string(start, start + 2, true, false),
            // National character strings follow the plain-string rules.
            b'n' | b'N' if next == b'\'' => self.string(start, start + 2, self.legacy_strings, true),
            // Bit strings hold only digits: no escapes.
            b'b' | b'B' | b'x' | b'X' if next == b'\'' => self.string(start, start + 2, false, false),
            // U&'...' is lexed as a standard-conforming string (the server refuses it otherwise).
            b'u' | b'U' if next == b'&' && self.at(start + 2) == b'\'' => self.string(start, start + 3, false, false),
            b'u' | b'U' if next == b'&' && self.at(start + 2) == b'"' => self.quoted_ident(start, start + 3),
            _ if is_ident_start(b) => self.word(start),
            _ if is_op_char(b) => self.operator(start),
            _ => self.single(Kind::Other, start),
        }
    }

    fn token(&self, kind: Kind, start: usize, end: usize) -> Token {
        // Texts of MAX_LEN or more are refused before lexing, so these never truncate.
        Token {
            kind,
            start: start as u32,
            end: end as u32,
        }
    }

    fn single(&mut self, kind: Kind, start: usize) -> Token {
        self.pos = start + 1;
        self.token(kind, start, start + 1)
    }

    fn unterminated(&mut self, start: usize) -> Token {
        self.failed = true;
        self.pos = self.src.len();
        self.token(Kind::Unterminated, start, self.src.len())
    }

    /// Skips whitespace and comments. False on an unterminated block comment.
    fn skip_trivia(&mut self) -> bool {
        loop {
            let b = self.at(self.pos);
            if self.pos < self.src.len() && is_space(b) {
                self.pos += 1;
            } else if b == b'-' && self.at(self.pos + 1) == b'-' {
                self.pos = line_comment_end(self.src, self.pos);
            } else if b == b'/' && self.at(self.pos + 1) == b'*' {
                match block_comment_end(self.src, self.pos) {
                    Some(end) => self.pos = end,
                    None => return false,
                }
            } else {
                return true;
            }
        }
    }

    /// A quoted string whose body starts at `body`. `backslash` makes `\` escape the next byte
    /// (E'...' always; '...' under standard_conforming_strings = off). `plain` marks the strings
    /// whose lexing depends on that setting, to notice a backslash in them.
    fn string(&mut self, start: usize, body: usize, backslash: bool, plain: bool) -> Token {
        let mut i = body;
        while i < self.src.len() {
            match self.src[i] {
                b'\\' if backslash => i += 2,
                b'\\' => {
                    if plain {
                        self.saw_plain_backslash = true;
                    }
                    i += 1;
                }
                // '' is a quote inside the string; anything else after the quote ends it.
                b'\'' if self.at(i + 1) == b'\'' => i += 2,
                b'\'' => {
                    self.pos = i + 1;
                    return self.token(Kind::Str, start, i + 1);
                }
                _ => i += 1,
            }
        }
        self.unterminated(start)
    }

    fn quoted_ident(&mut self, start: usize, body: usize) -> Token {
        let mut i = body;
        while i < self.src.len() {
            if self.src[i] == b'"' {
                if self.at(i + 1) == b'"' {
                    i += 2;
                    continue;
                }
                self.pos = i + 1;
                return self.token(Kind::QuotedIdent, start, i + 1);
            }
            i += 1;
        }
        self.unterminated(start)
    }

    /// `$1` (a parameter), `$tag$...$tag$` / `$$...$$` (a dollar-quoted string) or a lone `$`.
    fn dollar(&mut self, start: usize) -> Token {
        let mut i = start + 1;
        if self.at(i).is_ascii_digit() {
            while self.at(i).is_ascii_digit() {
                i += 1;
            }
            self.pos = i;
            return self.token(Kind::Param, start, i);
        }
        if is_ident_start(self.at(i)) && i < self.src.len() {
            while i < self.src.len() && is_dollar_tag_cont(self.src[i]) {
                i += 1;
            }
        }
        if self.at(i) != b'$' || i >= self.src.len() {
            return self.single(Kind::Other, start);
        }
        let tag = &self.src[start..=i];
        let body = i + 1;
        match find(self.src, body, tag) {
            Some(close) => {
                let end = close + tag.len();
                self.pos = end;
                self.token(Kind::DollarStr, start, end)
            }
            None => self.unterminated(start),
        }
    }

    /// A number: `42`, `1_000`, `1.5e-3`, `.5`, `0x1F`. Letters right after it are left for the
    /// next token, as PostgreSQL before 15 did (`SELECT 1INTO t` is a SELECT INTO there; 15 and
    /// later reject it), so no keyword can hide inside a number.
    fn number(&mut self, start: usize) -> Token {
        let digits = |lx: &Self, mut i: usize, hex: bool| {
            while lx.at(i).is_ascii_digit() || lx.at(i) == b'_' || (hex && lx.at(i).is_ascii_hexdigit()) {
                i += 1;
            }
            i
        };
        let mut i = start;
        if self.at(i) == b'0'
            && matches!(self.at(i + 1), b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
            && self.at(i + 2).is_ascii_hexdigit()
        {
            i = digits(self, i + 2, true);
        } else {
            i = digits(self, i, false);
            if self.at(i) == b'.' && self.at(i + 1) != b'.' {
                i = digits(self, i + 1, false);
            }
            let e = self.at(i);
            let sign = matches!(self.at(i + 1), b'+' | b'-');
            if (e == b'e' || e == b'E') && self.at(i + 1 + usize::from(sign)).is_ascii_digit() {
                i = digits(self, i + 1 + usize::from(sign), false);
            }
        }
        self.pos = i.max(start + 1);
        self.token(Kind::Number, start, self.pos)
    }

    fn word(&mut self, start: usize) -> Token {
        let mut i = start + 1;
        while i < self.src.len() && is_ident_cont(self.src[i]) {
            i += 1;
        }
        self.pos = i;
        self.token(Kind::Word, start, i)
    }

    /// A run of operator characters. As in scan.l, `--` and `/*` inside the run start a comment.
    fn operator(&mut self, start: usize) -> Token {
        let mut i = start + 1;
        while i < self.src.len() && is_op_char(self.src[i]) {
            let b = self.src[i];
            let n = self.at(i + 1);
            if (b == b'-' && n == b'-') || (b == b'/' && n == b'*') {
                break;
            }
            i += 1;
        }
        self.pos = i;
        self.token(Kind::Op, start, i)
    }
}

/// The end of a `--` comment that starts at `start` (the newline itself is whitespace).
fn line_comment_end(src: &[u8], start: usize) -> usize {
    let mut i = start + 2;
    while i < src.len() && src[i] != b'\n' && src[i] != b'\r' {
        i += 1;
    }
    i
}

/// The end of a (nested) `/* */` comment that starts at `start`, or None if unterminated.
fn block_comment_end(src: &[u8], start: usize) -> Option<usize> {
    let mut depth = 1usize;
    let mut i = start + 2;
    while i + 1 < src.len() {
        match (src[i], src[i + 1]) {
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// Where `needle` next occurs in `hay` at or after `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        if hay[i] == first && hay[i..].starts_with(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Calls `f` with the body of every comment before the first token (where pooler hints live).
/// Stops at the first token or at an unterminated comment.
pub(crate) fn for_each_leading_comment(src: &[u8], mut f: impl FnMut(&[u8])) {
    let mut i = 0;
    while i < src.len() {
        let b = src[i];
        let n = src.get(i + 1).copied().unwrap_or(0);
        if is_space(b) {
            i += 1;
        } else if b == b'-' && n == b'-' {
            let end = line_comment_end(src, i);
            f(src.get(i + 2..end).unwrap_or(&[]));
            i = end;
        } else if b == b'/' && n == b'*' {
            let Some(end) = block_comment_end(src, i) else { return };
            f(src.get(i + 2..end - 2).unwrap_or(&[]));
            i = end;
        } else {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, String)> {
        let mut lx = Lexer::new(sql.as_bytes(), false);
        let mut out = Vec::new();
        loop {
            let t = lx.next();
            if t.kind == Kind::Eof {
                return out;
            }
            out.push((t.kind, String::from_utf8_lossy(lx.text(t)).into_owned()));
        }
    }

    #[test]
    fn lexes_literals_and_comments() {
        use Kind::*;
        let k = |s: &str| kinds(s).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            k("SELECT 'a''b', E'c\\'d', $$x;y$$, $t$ $$ $t$, $1"),
            [Word, Str, Comma, Str, Comma, DollarStr, Comma, DollarStr, Comma, Param]
        );
        assert_eq!(k("a$b$ $$"), [Word, Unterminated]);
        assert_eq!(
            k("\"in\"\"sert\" U&\"x\" U&'y' B'1' X'f' n'z'"),
            [QuotedIdent, QuotedIdent, Str, Str, Str, Str]
        );
        assert_eq!(k("1--c\n+/* a /* b */ c */2"), [Number, Op, Number]);
        assert_eq!(k("x::int->>'a'@>b"), [Word, Cast, Word, Op, Str, Op, Word]);
        assert_eq!(k("'open"), [Unterminated]);
        assert_eq!(k("/* open /* */"), [Unterminated]);
        assert_eq!(
            k("$ 1.5e3 .5 t.c 1e-5 0x1F"),
            [Other, Number, Number, Word, Dot, Word, Number, Number]
        );
        assert_eq!(k("1into"), [Number, Word]);
        assert_eq!(k("a*/*c*/b"), [Word, Op, Word]);
    }

    #[test]
    fn legacy_strings_honour_backslashes() {
        let mut lx = Lexer::new(b"'a\\'b'", false);
        assert_eq!(lx.next().kind, Kind::Str);
        assert!(lx.saw_plain_backslash);
        let mut lx = Lexer::new(b"'a\\'b'", true);
        assert_eq!(lx.next().kind, Kind::Str);
        assert_eq!(lx.next().kind, Kind::Eof);
    }

    #[test]
    fn leading_comments() {
        let mut seen = Vec::new();
        for_each_leading_comment(b" -- one\n/* two /* three */ */ SELECT /* four */", |c| {
            seen.push(String::from_utf8_lossy(c).into_owned())
        });
        assert_eq!(seen, [" one", " two /* three */ "]);
    }
}
