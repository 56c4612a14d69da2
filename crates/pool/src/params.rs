//! Session parameters that follow a client from one server connection to the next.
//!
//! A client's startup parameters (application_name, TimeZone, DateStyle, `-c` options…) are
//! the session it expects. A server connection remembers which of them it was given; when it
//! is lent to a client with different ones, lsnpool sets the difference first, and RESETs what
//! the previous client set but this one did not (RESET returns to the connection's startup
//! value). Names are stored lowercased: GUC names are case-insensitive.
//!
//! A client's own `SET`s (and `RESET`, `SET ROLE`, `SET SESSION AUTHORIZATION`,
//! `set_config(…, false)`) join its record too: after a transaction that may have changed its
//! session, the server is asked what its session now holds ([`ParamSync::session_query`]), and
//! that answer becomes both the client's record and the connection's. Asking the server, rather
//! than parsing the statements, gets rolled-back SETs, failed ones and every syntax right.

/// Reported parameters a client may change with SET: when the server reports a new value
/// during a client's transaction, it becomes part of that client's session.
const TRACKED_REPORTED: [&str; 6] =
    ["application_name", "client_encoding", "datestyle", "intervalstyle", "timezone", "standard_conforming_strings"];

pub fn is_tracked_reported(lowercase_name: &str) -> bool {
    TRACKED_REPORTED.contains(&lowercase_name)
}

/// Sorted `(lowercase name, value)` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamSync {
    params: Vec<(String, String)>,
}

/// What to run on a server connection before a client uses it.
#[derive(Debug, PartialEq, Eq)]
pub struct ParamSyncPlan {
    pub sql: String,
}

impl ParamSync {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut s = ParamSync::default();
        for (k, v) in pairs {
            s.set(&k, &v);
        }
        s
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.params.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A ParameterStatus the server sent: a reported parameter a client may SET becomes part
    /// of the session this record describes. Returns whether it did.
    pub fn learn_reported(&mut self, name: &[u8], value: &[u8]) -> bool {
        let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else { return false };
        let lower = name.to_ascii_lowercase();
        if !is_tracked_reported(&lower) {
            return false;
        }
        self.set(&lower, value);
        true
    }

    pub fn set(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match self.params.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => value.clone_into(&mut self.params[i].1),
            Err(i) => self.params.insert(i, (name, value.to_string())),
        }
    }

    /// A query whose one value lists what the server session holds beyond its startup state:
    /// every parameter whose source is `session`, the role, and the session authorization when
    /// it is not `login_user` (neither of the last two shows in pg_settings). Read by
    /// [`ParamSync::from_session_text`].
    pub fn session_query(login_user: &str) -> String {
        format!(
            "SELECT pg_catalog.string_agg(name || '=' || setting, E'\\x1e') FROM (\
             SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' \
             UNION ALL SELECT 'role', pg_catalog.current_setting('role') WHERE pg_catalog.current_setting('role') <> 'none' \
             UNION ALL SELECT 'session_authorization', pg_catalog.current_setting('session_authorization') \
             WHERE pg_catalog.current_setting('session_authorization') <> {}) s",
            quote_literal(login_user)
        )
    }

    /// The answer to [`ParamSync::session_query`] (NULL, for a session at its startup state, is
    /// an empty text).
    pub fn from_session_text(text: &[u8]) -> Option<ParamSync> {
        let text = std::str::from_utf8(text).ok()?;
        let pairs = text.split('\x1e').filter(|r| !r.is_empty()).map(|r| r.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())));
        pairs.collect::<Option<Vec<_>>>().map(ParamSync::new)
    }

    /// The statements that turn a server session holding `self` into one holding `want`;
    /// `None` when they already agree (the common case: no allocation).
    pub fn plan_towards(&self, want: &ParamSync) -> Option<ParamSyncPlan> {
        if self.params == want.params {
            return None;
        }
        let mut sets = Vec::new();
        // A new session authorization resets the role: it goes first.
        let auth_first = want.params.iter().filter(|(k, _)| k == "session_authorization");
        for (k, v) in auth_first.chain(want.params.iter().filter(|(k, _)| k != "session_authorization")) {
            if self.params.iter().all(|(sk, sv)| sk != k || sv != v) {
                sets.push(format!("pg_catalog.set_config({}, {}, false)", quote_literal(k), quote_literal(v)));
            }
        }
        let mut sql = String::new();
        for (k, _) in &self.params {
            if want.params.iter().all(|(wk, _)| wk != k) {
                sql.push_str("RESET ");
                sql.push_str(&quote_ident(k));
                sql.push(';');
            }
        }
        if !sets.is_empty() {
            // set_config, not SET: it parses list values like search_path the way a startup
            // parameter is parsed, where `SET x TO 'a, b'` would make one quoted element.
            sql.push_str("SELECT ");
            sql.push_str(&sets.join(", "));
        }
        Some(ParamSyncPlan { sql })
    }
}

fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> ParamSync {
        ParamSync::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn equal_sessions_need_nothing() {
        let a = p(&[("application_name", "pgbench"), ("TimeZone", "UTC")]);
        let b = p(&[("timezone", "UTC"), ("application_name", "pgbench")]);
        assert_eq!(a.plan_towards(&b), None);
    }

    #[test]
    fn sets_differences_and_resets_leftovers() {
        let server = p(&[("application_name", "old"), ("search_path", "x")]);
        let client = p(&[("application_name", "new'app"), ("DateStyle", "ISO, DMY")]);
        let plan = server.plan_towards(&client).unwrap();
        assert_eq!(
            plan.sql,
            "RESET \"search_path\";SELECT pg_catalog.set_config('application_name', 'new''app', false), \
             pg_catalog.set_config('datestyle', 'ISO, DMY', false)"
        );
    }

    #[test]
    fn session_authorization_is_set_before_the_role() {
        let client = p(&[("role", "r"), ("session_authorization", "u")]);
        let plan = ParamSync::default().plan_towards(&client).unwrap();
        assert_eq!(
            plan.sql,
            "SELECT pg_catalog.set_config('session_authorization', 'u', false), pg_catalog.set_config('role', 'r', false)"
        );
    }

    #[test]
    fn reads_the_servers_session() {
        let got = ParamSync::from_session_text(b"search_path=a, b\x1estatement_timeout=1234\x1erole=r").unwrap();
        assert_eq!(got, p(&[("search_path", "a, b"), ("statement_timeout", "1234"), ("role", "r")]));
        assert_eq!(ParamSync::from_session_text(b""), Some(ParamSync::default()));
        assert_eq!(ParamSync::from_session_text(b"noequals"), None);
        assert!(ParamSync::session_query("o'k").contains("<> 'o''k'"));
    }

    #[test]
    fn backslashes_use_escape_strings() {
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
    }
}
