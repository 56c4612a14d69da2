//! Session parameters that follow a client from one server connection to the next.
//!
//! A client's startup parameters (application_name, TimeZone, DateStyle, `-c` options…) are
//! the session it expects. A server connection remembers which of them it was given; when it
//! is lent to a client with different ones, lsnpool sets the difference first, and RESETs what
//! the previous client set but this one did not (RESET returns to the connection's startup
//! value). Names are stored lowercased: GUC names are case-insensitive.

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

    pub fn set(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match self.params.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => value.clone_into(&mut self.params[i].1),
            Err(i) => self.params.insert(i, (name, value.to_string())),
        }
    }

    /// The statements that turn a server session holding `self` into one holding `want`;
    /// `None` when they already agree (the common case: no allocation).
    pub fn plan_towards(&self, want: &ParamSync) -> Option<ParamSyncPlan> {
        if self.params == want.params {
            return None;
        }
        let mut sets = Vec::new();
        for (k, v) in &want.params {
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
    fn backslashes_use_escape_strings() {
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
    }
}
