use crate::types::Config;
use crate::validate::validate;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<figment::Error>,
    },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), problem: problem.into() }
    }
}

/// Reads `path`, then `LSNPOOL_SECTION__KEY` variables on top (e.g.
/// `LSNPOOL_POOLER__LISTEN=0.0.0.0:6432`), and validates the result.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    from_figment(
        Figment::new().merge(Toml::file_exact(path)).merge(env_overrides()),
        &path.display().to_string(),
    )
}

fn env_overrides() -> Env {
    // Only `SECTION__KEY` names: `LSNPOOL_CONFIG` and friends belong to the CLI.
    Env::prefixed("LSNPOOL_").filter(|k| k.as_str().contains("__")).split("__")
}

pub(crate) fn from_figment(figment: Figment, origin: &str) -> Result<Config, ConfigError> {
    let config: Config = figment
        .extract()
        .map_err(|e| ConfigError::Parse { path: origin.to_string(), source: Box::new(e) })?;
    validate(&config)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    const GOOD: &str = r#"
        [pooler]
        listen = "127.0.0.1:6432"
        query_wait_timeout = "2s"

        [routing]
        lsn_poll_interval = "5ms"

        [[users]]
        name = "postgres"
        password = "postgres"

        [clusters.appdb]
        primary = "127.0.0.1:55432"
        replicas = ["127.0.0.1:55433"]
        aliases = { app_primary = "strong", app_read = "bounded" }
    "#;

    #[test]
    fn loads_toml_and_env_overrides() {
        Jail::expect_with(|jail| {
            jail.create_file("pooler.toml", GOOD)?;
            jail.set_env("LSNPOOL_POOLER__DEFAULT_POOL_SIZE", "7");
            jail.set_env("LSNPOOL_ROUTING__CONSISTENCY", "eventual");
            jail.set_env("LSNPOOL_CONFIG", "ignored.toml");
            let c = load(Path::new("pooler.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.pooler.default_pool_size, 7);
            assert_eq!(c.pooler.query_wait_timeout, std::time::Duration::from_secs(2));
            assert_eq!(c.routing.consistency, lsnpool_router::Consistency::Eventual);
            assert_eq!(c.clusters["appdb"].server_database("appdb"), "appdb");
            Ok(())
        });
    }

    #[test]
    fn nodes_without_roles_and_the_old_keys_as_a_hint() {
        Jail::expect_with(|jail| {
            let nodes = GOOD
                .replace("primary = \"127.0.0.1:55432\"\n", "")
                .replace("replicas = [\"127.0.0.1:55433\"]", "nodes = [\"127.0.0.1:55433\", \"127.0.0.1:55432\"]");
            jail.create_file("pooler.toml", &nodes)?;
            let c = load(Path::new("pooler.toml")).map_err(|e| e.to_string())?;
            let (specs, hint) = c.clusters["appdb"].node_specs();
            let addrs: Vec<&str> = specs.iter().map(|s| s.addr.as_str()).collect();
            assert_eq!((addrs, hint), (vec!["127.0.0.1:55433", "127.0.0.1:55432"], 0));
            assert_eq!(c.routing.failover_detect, std::time::Duration::from_secs(2));
            jail.create_file("pooler.toml", &GOOD.replace("replicas = [", "nodes = [\"127.0.0.1:55432\", \"127.0.0.1:55434\"]\nreplicas = ["))?;
            let c = load(Path::new("pooler.toml")).map_err(|e| e.to_string())?;
            let (specs, hint) = c.clusters["appdb"].node_specs();
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            assert_eq!((names, hint), (vec!["replica0", "primary", "node1"], 1));
            Ok(())
        });
        let msg = error_for(&GOOD.replace("primary = \"127.0.0.1:55432\"\n", ""));
        assert!(msg.contains("clusters.appdb.nodes"), "{msg}");
    }

    fn error_for(toml: &str) -> String {
        let mut msg = String::new();
        Jail::expect_with(|jail| {
            jail.create_file("pooler.toml", toml)?;
            msg = load(Path::new("pooler.toml")).expect_err("config should be rejected").to_string();
            Ok(())
        });
        msg
    }

    #[test]
    fn names_the_key_of_a_bad_value() {
        let msg = error_for(&GOOD.replace("\"2s\"", "\"soon\""));
        assert!(msg.contains("query_wait_timeout"), "{msg}");
        let msg = error_for(&GOOD.replace("\"bounded\"", "\"fast\""));
        assert!(msg.contains("app_read"), "{msg}");
    }

    #[test]
    fn a_unix_socket_dir_must_be_absolute_and_short_enough() {
        let msg = error_for(&GOOD.replace("[pooler]", "[pooler]\nunix_socket_dir = \"tmp\""));
        assert!(msg.contains("pooler.unix_socket_dir") && msg.contains("absolute"), "{msg}");
        let long = format!("/{}", "d".repeat(100));
        let msg = error_for(&GOOD.replace("[pooler]", &format!("[pooler]\nunix_socket_dir = \"{long}\"")));
        assert!(msg.contains("too long"), "{msg}");
        Jail::expect_with(|jail| {
            jail.create_file("pooler.toml", &GOOD.replace("[pooler]", "[pooler]\nunix_socket_dir = \"/tmp\""))?;
            let c = load(Path::new("pooler.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.pooler.unix_socket_dir, "/tmp");
            Ok(())
        });
    }

    #[test]
    fn names_an_unknown_key() {
        let msg = error_for(&GOOD.replace("[routing]", "[routing]\nlsn_pol_interval = \"1ms\""));
        assert!(msg.contains("lsn_pol_interval"), "{msg}");
    }

    #[test]
    fn rejects_inconsistent_values() {
        let msg = error_for(&GOOD.replace("127.0.0.1:55432", "localhost"));
        assert!(msg.contains("clusters.appdb.primary"), "{msg}");
        let msg = error_for(&GOOD.replace("app_read", "appdb"));
        assert!(msg.contains("clusters.appdb.aliases.appdb"), "{msg}");
        let msg = error_for(&GOOD.replace("listen = \"127.0.0.1:6432\"", "listen = \"6432\""));
        assert!(msg.contains("pooler.listen"), "{msg}");
        let msg = error_for(&GOOD.replace("[pooler]", "[pooler]\ndefault_pool_size = 0"));
        assert!(msg.contains("pooler.default_pool_size"), "{msg}");
    }

    const RULE: &str = r#"
        [[rules]]
        name = "payments"
        database = "appdb"
        match = '(?i)^\s*select\b.*\bfrom\s+accounts\b'
        consistency = "strong"
        critical = true
    "#;

    #[test]
    fn rules_aliases_and_controls_load() {
        let toml = format!(
            "{}\n{RULE}\n[[rules]]\nname = \"inventory\"\nmatch = \"stock\"\nmax_replica_lag = \"500ms\"\n",
            GOOD.replace("app_read = \"bounded\"", "app_read = \"bounded\", inv = { consistency = \"bounded\", max_replica_lag = \"250ms\" }")
                .replace("replicas = [", "primary_read_pool_size = 3\n        replicas = [")
                .replace("[routing]", "[routing]\nenabled = false\ndegrade = true\nbreaker_window = \"2s\"")
        );
        Jail::expect_with(|jail| {
            jail.create_file("pooler.toml", &toml)?;
            let c = load(Path::new("pooler.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.rules.len(), 2);
            assert!(c.rules[0].critical && c.rules[0].consistency == Some(lsnpool_router::Consistency::Strong));
            assert_eq!(c.rules[1].max_replica_lag, Some(std::time::Duration::from_millis(500)));
            let cl = &c.clusters["appdb"];
            assert_eq!(cl.primary_read_pool_size, Some(3));
            assert_eq!(cl.aliases["inv"].max_replica_lag(), Some(std::time::Duration::from_millis(250)));
            assert_eq!(cl.aliases["app_read"].consistency(), lsnpool_router::Consistency::Bounded);
            assert!(!c.routing.enabled && c.routing.degrade);
            assert_eq!(c.routing.breaker_window, std::time::Duration::from_secs(2));
            Ok(())
        });
    }

    #[test]
    fn a_bad_rule_is_named_with_its_problem() {
        let msg = error_for(&format!("{GOOD}{}", RULE.replace("accounts\\b'", "(accounts'")));
        assert!(msg.contains("rules[0].match") && msg.contains("payments") && msg.contains("unclosed group"), "{msg}");
        let msg = error_for(&format!("{GOOD}{}", RULE.replace("appdb", "nodb")));
        assert!(msg.contains("rules[0].database") && msg.contains("nodb"), "{msg}");
        let msg = error_for(&format!("{GOOD}{}", RULE.replace("consistency = \"strong\"", "")));
        assert!(msg.contains("rules[0].consistency"), "{msg}");
        let msg = error_for(&format!("{GOOD}{RULE}{RULE}"));
        assert!(msg.contains("rules[1].name"), "{msg}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = load(Path::new("/nonexistent/pooler.toml")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/pooler.toml"), "{e}");
    }
}
