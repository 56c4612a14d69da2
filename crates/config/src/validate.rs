use crate::load::ConfigError;
use crate::types::{AuthType, Config};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Database names the admin console answers to; no cluster or alias may take them.
pub const ADMIN_DATABASES: [&str; 2] = ["lsnpool", "pgbouncer"];

pub(crate) fn validate(c: &Config) -> Result<(), ConfigError> {
    let p = &c.pooler;
    if p.listen.parse::<SocketAddr>().is_err() {
        return Err(ConfigError::invalid("pooler.listen", format!("\"{}\" is not an ip:port address", p.listen)));
    }
    if !p.unix_socket_dir.is_empty() {
        if !p.unix_socket_dir.starts_with('/') {
            return Err(ConfigError::invalid("pooler.unix_socket_dir", format!("\"{}\" is not an absolute directory path", p.unix_socket_dir)));
        }
        // sun_path holds 108 bytes with its NUL; the socket's name adds 17 or fewer.
        if p.unix_socket_dir.len() + "/.s.PGSQL.65535".len() > 107 {
            return Err(ConfigError::invalid("pooler.unix_socket_dir", "too long for a Unix socket path (at most 92 bytes)"));
        }
    }
    if !p.metrics_listen.is_empty() && p.metrics_listen.parse::<SocketAddr>().is_err() {
        return Err(ConfigError::invalid(
            "pooler.metrics_listen",
            format!("\"{}\" is not an ip:port address (use \"\" to disable metrics)", p.metrics_listen),
        ));
    }
    if p.default_pool_size == 0 {
        return Err(ConfigError::invalid("pooler.default_pool_size", "must be at least 1"));
    }
    if p.min_pool_size > p.default_pool_size {
        return Err(ConfigError::invalid("pooler.min_pool_size", "must not exceed pooler.default_pool_size"));
    }
    if p.max_client_conn == 0 {
        return Err(ConfigError::invalid("pooler.max_client_conn", "must be at least 1"));
    }
    if p.max_message_size < 1024 {
        return Err(ConfigError::invalid("pooler.max_message_size", "must be at least 1024 bytes"));
    }
    if p.query_wait_timeout.is_zero() {
        return Err(ConfigError::invalid("pooler.query_wait_timeout", "must be greater than 0"));
    }
    if p.server_connect_timeout.is_zero() {
        return Err(ConfigError::invalid("pooler.server_connect_timeout", "must be greater than 0"));
    }
    if p.client_tls_mode != crate::types::ClientTlsMode::Disable {
        for (key, v) in [("pooler.client_tls_cert_file", &p.client_tls_cert_file), ("pooler.client_tls_key_file", &p.client_tls_key_file)] {
            if v.is_empty() {
                return Err(ConfigError::invalid(key, format!("needed with client_tls_mode = \"{}\"", p.client_tls_mode.as_str())));
            }
        }
    }
    if matches!(p.server_tls_mode, crate::types::ServerTlsMode::VerifyCa | crate::types::ServerTlsMode::VerifyFull) && p.server_tls_ca_file.is_empty() {
        return Err(ConfigError::invalid("pooler.server_tls_ca_file", format!("needed with server_tls_mode = \"{}\"", p.server_tls_mode.as_str())));
    }
    if c.routing.failover_detect.is_zero() {
        return Err(ConfigError::invalid("routing.failover_detect", "must be greater than 0"));
    }
    if c.routing.lsn_poll_interval.is_zero() {
        return Err(ConfigError::invalid("routing.lsn_poll_interval", "must be greater than 0"));
    }

    let store = c.routing.token_store.trim();
    if !(store.is_empty() || store == "embedded" || store.starts_with("redis://")) {
        return Err(ConfigError::invalid("routing.token_store", format!("\"{store}\" is neither \"embedded\" nor a redis://HOST:PORT address")));
    }
    if c.routing.token_store_timeout.is_zero() {
        return Err(ConfigError::invalid("routing.token_store_timeout", "must be greater than 0"));
    }

    if c.users.is_empty() {
        return Err(ConfigError::invalid("users", "define at least one [[users]] entry"));
    }
    for (i, u) in c.users.iter().enumerate() {
        if u.name.is_empty() {
            return Err(ConfigError::invalid(format!("users[{i}].name"), "must not be empty"));
        }
        if c.users[..i].iter().any(|o| o.name == u.name) {
            return Err(ConfigError::invalid(format!("users[{i}].name"), format!("user \"{}\" is defined twice", u.name)));
        }
        if p.auth_type != AuthType::Trust && u.password.is_none() {
            return Err(ConfigError::invalid(
                format!("users[{i}].password"),
                format!("user \"{}\" needs a password unless pooler.auth_type = \"trust\"", u.name),
            ));
        }
        if u.pool_size == Some(0) {
            return Err(ConfigError::invalid(format!("users[{i}].pool_size"), "must be at least 1"));
        }
    }

    if c.clusters.is_empty() {
        return Err(ConfigError::invalid("clusters", "define at least one [clusters.NAME] section"));
    }
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    for (name, cl) in &c.clusters {
        let key = format!("clusters.{name}");
        check_db_name(&mut names, name, &key)?;
        if cl.primary.is_empty() && cl.nodes.is_empty() {
            return Err(ConfigError::invalid(format!("{key}.nodes"), "list the cluster's nodes (`nodes = [\"host:port\", ...]`) or set `primary`"));
        }
        if !cl.primary.is_empty() {
            check_addr(&cl.primary, &format!("{key}.primary"))?;
        }
        for (i, r) in cl.replicas.iter().enumerate() {
            check_addr(r, &format!("{key}.replicas[{i}]"))?;
        }
        for (i, n) in cl.nodes.iter().enumerate() {
            check_addr(n, &format!("{key}.nodes[{i}]"))?;
        }
        for alias in cl.aliases.keys() {
            check_db_name(&mut names, alias, &format!("{key}.aliases.{alias}"))?;
        }
        if cl.pool_size == Some(0) {
            return Err(ConfigError::invalid(format!("{key}.pool_size"), "must be at least 1"));
        }
        if cl.primary_read_pool_size == Some(0) {
            return Err(ConfigError::invalid(format!("{key}.primary_read_pool_size"), "must be at least 1 (leave it unset for no limit)"));
        }
    }
    if c.routing.breaker_window.is_zero() {
        return Err(ConfigError::invalid("routing.breaker_window", "must be greater than 0"));
    }
    validate_rules(c, &names)
}

/// Each rule: a unique name, a pattern that compiles, something to do, and a database and
/// user that exist (a typo would silently never match).
fn validate_rules(c: &Config, databases: &BTreeMap<&str, String>) -> Result<(), ConfigError> {
    for (i, r) in c.rules.iter().enumerate() {
        let key = |field: &str| format!("rules[{i}].{field}");
        if r.name.is_empty() {
            return Err(ConfigError::invalid(key("name"), "must not be empty"));
        }
        if c.rules[..i].iter().any(|o| o.name == r.name) {
            return Err(ConfigError::invalid(key("name"), format!("rule \"{}\" is defined twice", r.name)));
        }
        if let Err(e) = lsnpool_router::check_pattern(&r.pattern) {
            return Err(ConfigError::invalid(key("match"), format!("rule \"{}\": bad regex: {e}", r.name)));
        }
        if r.consistency.is_none() && r.max_replica_lag.is_none() {
            return Err(ConfigError::invalid(
                key("consistency"),
                format!("rule \"{}\" must set consistency or max_replica_lag", r.name),
            ));
        }
        if let Some(db) = r.database.as_deref().filter(|d| !databases.contains_key(d)) {
            return Err(ConfigError::invalid(key("database"), format!("rule \"{}\": no cluster or alias is named \"{db}\"", r.name)));
        }
        if let Some(user) = r.user.as_deref().filter(|u| c.user(u).is_none()) {
            return Err(ConfigError::invalid(key("user"), format!("rule \"{}\": no [[users]] entry is named \"{user}\"", r.name)));
        }
    }
    Ok(())
}

fn check_db_name<'a>(seen: &mut BTreeMap<&'a str, String>, name: &'a str, key: &str) -> Result<(), ConfigError> {
    if ADMIN_DATABASES.contains(&name) {
        return Err(ConfigError::invalid(key, format!("\"{name}\" is the admin console's database name")));
    }
    if let Some(first) = seen.get(name) {
        return Err(ConfigError::invalid(key, format!("database name \"{name}\" is already used by {first}")));
    }
    seen.insert(name, key.to_string());
    Ok(())
}

/// `host:port`; the host is resolved when connecting, so names are allowed, and a host that
/// begins with `/` is the directory of the server's Unix-domain socket.
fn check_addr(addr: &str, key: &str) -> Result<(), ConfigError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, format!("\"{addr}\" is not a host:port address (or /socket/directory:port)")))
    }
}
