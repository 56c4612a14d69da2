//! What the relay reads in SQL text on its own, beyond the router's classification: cheap
//! byte scans whose false positives cost a round trip at most.

use lsnpool_router::{Classification, Deallocate};

/// What the relay reads in a statement's text beyond its classification: computed once per
/// simple Query or Parse, and kept with a named statement so its Executes cost nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextFlags {
    /// It may be a COPY (nothing may be sent behind its Execute).
    pub copy: bool,
    /// It may change the session through `set_config` (SET and RESET show in command tags).
    pub sets_config: bool,
    /// It may leave something on the server connection that its command tag does not show.
    pub binds_session: bool,
}

impl TextFlags {
    pub fn of(sql: &[u8], class: &Classification) -> TextFlags {
        TextFlags { copy: mentions_copy(sql), sets_config: mentions_set_config(sql), binds_session: may_bind_session(sql, class.write) }
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

/// Could this text run a COPY? A false positive only costs the LSN capture a round trip.
pub(crate) fn mentions_copy(sql: &[u8]) -> bool {
    sql.windows(4).any(|w| w.eq_ignore_ascii_case(b"copy"))
}

/// RESET ALL returns the server session's parameters to their startup values. (DISCARD ALL
/// and DEALLOCATE ALL are recognised by their command tags and the classifier; RESET ALL's
/// tag is a bare "RESET".)
pub(super) fn resets_all(sql: &[u8]) -> bool {
    let mut words = sql.split(|b| b.is_ascii_whitespace() || *b == b';').filter(|w| !w.is_empty());
    let is = |w: Option<&[u8]>, s: &str| w.is_some_and(|w| w.eq_ignore_ascii_case(s.as_bytes()));
    is(words.next(), "reset") && is(words.next(), "all")
}

/// Could this text leave something on the server connection that the command tag does not
/// show: a session advisory lock (`pg_advisory_lock` and kin), or a temporary table made by
/// CREATE TEMP TABLE AS / SELECT INTO (tagged SELECT)? Only writes can make a temp table, so a
/// read mentioning `temperature` costs nothing; a false positive costs one round trip.
fn may_bind_session(sql: &[u8], writes: bool) -> bool {
    let has = |word: &[u8]| sql.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word));
    has(b"advisory") || (writes && has(b"temp"))
}

/// Could this text change the session through `set_config`? (SET and RESET are seen by their
/// command tags.) A false positive costs one round trip to read the session back.
fn mentions_set_config(sql: &[u8]) -> bool {
    sql.windows(10).any(|w| w.eq_ignore_ascii_case(b"set_config"))
}
