//! A client's session parameters from its startup packet.

use lsnpool_pool::ParamSync;
use lsnpool_protocol::startup::Startup;

/// Startup keys that are not session parameters.
const NOT_PARAMS: [&str; 4] = ["user", "database", "options", "replication"];

/// Parameters to apply on every server connection the client uses: the startup GUCs, plus
/// `-c name=value` / `--name=value` from `options`.
pub fn session_params(startup: &Startup) -> Result<ParamSync, String> {
    let mut pairs = Vec::new();
    for (k, v) in &startup.params {
        if NOT_PARAMS.contains(&k.as_str()) || k.starts_with("_pq_.") {
            continue;
        }
        pairs.push((k.clone(), v.clone()));
    }
    if let Some(options) = startup.param("options") {
        pairs.extend(parse_options(options)?);
    }
    // lsnpool's own settings are lsnpool's: a server would take them as placeholders.
    pairs.retain(|(k, _)| !is_lsnpool(k));
    Ok(ParamSync::new(pairs))
}

fn is_lsnpool(name: &str) -> bool {
    name.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("lsnpool."))
}

/// `lsnpool.report_commit_lsn` from the startup packet or its `options` (`-c name=on`).
pub fn reports_commit_lsn(startup: &Startup) -> bool {
    let from_options = startup.param("options").and_then(|o| parse_options(o).ok()).unwrap_or_default();
    let on = |v: &str| ["on", "true", "yes", "1"].iter().any(|t| v.trim().eq_ignore_ascii_case(t));
    startup
        .params
        .iter()
        .chain(from_options.iter())
        .filter(|(k, _)| k.eq_ignore_ascii_case("lsnpool.report_commit_lsn"))
        .next_back()
        .is_some_and(|(_, v)| on(v))
}

/// libpq's `options`: space-separated `-c name=value` or `--name=value`; `\ ` escapes a space.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next().ok_or_else(|| "options: \"-c\" needs name=value after it".to_string())?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_string()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_string()
        } else {
            return Err(format!("options: \"{w}\" is not supported; lsnpool accepts -c name=value and --name=value"));
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("options: \"{setting}\" should be name=value"))?;
        out.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(out)
}

/// What a client sees in ParameterStatus at login: the server's report, with the client's
/// own choices for the parameters it set.
pub fn reported_to_client(server: &[(String, String)], client: &ParamSync) -> Vec<(String, String)> {
    server
        .iter()
        .map(|(k, v)| match client.get(k) {
            Some(mine) if lsnpool_pool::is_tracked_reported(&k.to_ascii_lowercase()) => (k.clone(), mine.to_string()),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libpq_options() {
        let o = parse_options(r"-c statement_timeout=5s --search-path=a,b -c x=with\ space").unwrap();
        assert_eq!(
            o,
            vec![
                ("statement_timeout".into(), "5s".into()),
                ("search_path".into(), "a,b".into()),
                ("x".into(), "with space".into())
            ]
        );
        assert!(parse_options("-x").is_err());
        assert!(parse_options("-c").is_err());
        assert!(parse_options("-c novalue").is_err());
    }

    #[test]
    fn session_params_skip_identity_and_protocol_keys() {
        let s = Startup {
            minor: 0,
            params: vec![
                ("user".into(), "u".into()),
                ("database".into(), "d".into()),
                ("application_name".into(), "psql".into()),
                ("_pq_.x".into(), "1".into()),
                ("options".into(), "-c work_mem=64MB".into()),
            ],
        };
        let p = session_params(&s).unwrap();
        let got: Vec<_> = p.iter().collect();
        assert_eq!(got, vec![("application_name", "psql"), ("work_mem", "64MB")]);
    }
}
