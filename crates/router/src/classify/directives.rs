//! Directives in a statement's leading comments that name what it must see: a session key
//! and a commit token (issue 10). Kept apart from the routing [`Hint`](super::Hint), which is
//! one word; these carry values.

use super::{find_ignore_case, hint_word, lexer};

/// What a statement's leading comments carry for the pooler besides its [`Hint`]:
/// `/* lsnpool:session_key=user:42 */`, `/* lsnpool:min_lsn=0/16B3748 */`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// The key is `sql[start..end]`.
    pub session_key: Option<(u32, u32)>,
    pub min_lsn: Option<crate::Lsn>,
}

/// The session key and commit token in the comments before the first token, if any. Cheap
/// when there are none: only leading comments are looked at.
pub fn leading_directives(sql: &[u8]) -> Directives {
    let mut d = Directives::default();
    lexer::for_each_leading_comment(sql, |body| {
        let mut rest = body;
        while let Some(at) = find_ignore_case(rest, b"lsnpool:") {
            rest = rest.get(at + b"lsnpool:".len()..).unwrap_or(&[]);
            let word = hint_word(rest);
            let value = rest.get(word.len()..).and_then(|v| v.strip_prefix(b"=")).unwrap_or(&[]);
            // A key runs to the next blank or the comment's end; it may hold ':' and '/'.
            let end = value.iter().position(|b| b.is_ascii_whitespace() || *b == b'*').unwrap_or(value.len());
            let value = value.get(..end).unwrap_or(&[]);
            if value.is_empty() {
                continue;
            }
            if word.eq_ignore_ascii_case(b"session_key") {
                let start = (value.as_ptr() as usize).wrapping_sub(sql.as_ptr() as usize);
                if let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(start + value.len())) {
                    d.session_key = Some((s, e));
                }
            } else if word.eq_ignore_ascii_case(b"min_lsn") {
                d.min_lsn = crate::Lsn::from_text(value).or(d.min_lsn);
            }
        }
    });
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_token_from_comments() {
        let sql = b"/* lsnpool:session_key=user:42 lsnpool:min_lsn=0/16B3748 */ SELECT 1";
        let d = leading_directives(sql);
        let (s, e) = d.session_key.unwrap();
        assert_eq!(&sql[s as usize..e as usize], b"user:42");
        assert_eq!(d.min_lsn, Some(crate::Lsn(0x16B3748)));
        assert_eq!(leading_directives(b"SELECT 1 /* lsnpool:session_key=x */"), Directives::default());
    }
}
