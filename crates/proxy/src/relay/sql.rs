//! What the relay reads in SQL text on its own, beyond the router's classification: cheap
//! byte scans whose false positives cost a round trip at most.

use lsnpool_router::{Classification, Deallocate};

/// What the relay reads in a statement's text beyond its classification: computed once per
/// simple Query or Parse, and kept with a named statement so its Executes cost nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextFlags {
    /// It may be a COPY (nothing may be sent behind its Execute); a false positive only costs
    /// the LSN capture a round trip.
    pub copy: bool,
    /// It may change the session through `set_config` (SET and RESET show in command tags);
    /// a false positive costs one round trip to read the session back.
    pub sets_config: bool,
    /// It may leave something on the server connection that its command tag does not show:
    /// a session advisory lock (`pg_advisory_lock` and kin), or a temporary table made by
    /// CREATE TEMP TABLE AS / SELECT INTO (tagged SELECT); a false positive costs one round
    /// trip.
    pub binds_session: bool,
}

impl TextFlags {
    /// One pass over the text for all the words below: the relay computes this for every
    /// simple Query, on the forward path, and a window scan per word cost five passes.
    pub fn of(sql: &[u8], class: &Classification) -> TextFlags {
        let mut flags = TextFlags::default();
        let mut temp = false;
        let at = |i: usize, word: &[u8]| sql.get(i..i + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word));
        for (i, b) in sql.iter().enumerate() {
            match b | 0x20 {
                b'c' => flags.copy |= at(i, b"copy"),
                b's' => flags.sets_config |= at(i, b"set_config"),
                b'a' => flags.binds_session |= at(i, b"advisory"),
                b't' => temp |= at(i, b"temp"),
                _ => {}
            }
        }
        // Only writes can make a temp table, so a read mentioning `temperature` costs nothing.
        flags.binds_session |= class.write && temp;
        flags
    }
}

/// DEALLOCATE ALL or DISCARD ALL anywhere in the text: the client's statements are gone.
pub(super) fn drops_all_statements(class: &Classification, sql: &[u8]) -> bool {
    match class.deallocate {
        Some(Deallocate::All) => true,
        Some(Deallocate::Several) => lsnpool_router::deallocations(sql).any(|d| d == Deallocate::All),
        _ => false,
    }
}

/// RESET ALL returns the server session's parameters to their startup values. (DISCARD ALL
/// and DEALLOCATE ALL are recognised by their command tags and the classifier; RESET ALL's
/// tag is a bare "RESET".)
pub(super) fn resets_all(sql: &[u8]) -> bool {
    let mut words = sql.split(|b| b.is_ascii_whitespace() || *b == b';').filter(|w| !w.is_empty());
    let is = |w: Option<&[u8]>, s: &str| w.is_some_and(|w| w.eq_ignore_ascii_case(s.as_bytes()));
    is(words.next(), "reset") && is(words.next(), "all")
}


#[cfg(test)]
mod tests {
    use super::TextFlags;
    use lsnpool_router::classify_bytes;

    fn flags(sql: &str) -> TextFlags {
        TextFlags::of(sql.as_bytes(), &classify_bytes(sql.as_bytes()))
    }

    #[test]
    fn finds_each_word_in_any_case_and_place() {
        assert_eq!(flags("SELECT abalance FROM pgbench_accounts WHERE aid = 1"), TextFlags::default());
        assert!(flags("CoPy t FROM STDIN").copy);
        assert!(flags("select 1; copy").copy);
        assert!(!flags("select 'cop'").copy);
        assert!(flags("SELECT pg_catalog.SET_CONFIG('a.b', '1', false)").sets_config);
        assert!(!flags("select set_confi").sets_config);
        assert!(flags("SELECT pg_advisory_lock(1)").binds_session);
        assert!(flags("select 'ADVISORY'").binds_session);
    }

    #[test]
    fn a_temp_table_binds_only_when_written() {
        assert!(flags("CREATE TEMP TABLE t AS SELECT 1").binds_session);
        assert!(flags("SELECT 1 INTO TEMPORARY t").binds_session);
        assert!(!flags("SELECT temperature FROM readings").binds_session);
    }
}
