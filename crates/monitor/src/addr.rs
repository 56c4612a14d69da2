//! `host:port` as written in the configuration.

/// Splits `host:port` (`[::1]:5432` for IPv6). The config crate validates addresses at load
/// time; this is the same rule, so a bad address here is a programming error reported once by
/// the poller rather than a panic.
pub(crate) fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_addresses() {
        assert_eq!(
            split_host_port("127.0.0.1:55432"),
            Some(("127.0.0.1", 55432))
        );
        assert_eq!(
            split_host_port("db.example:5432"),
            Some(("db.example", 5432))
        );
        assert_eq!(split_host_port("[::1]:5432"), Some(("::1", 5432)));
        assert_eq!(split_host_port("localhost"), None);
        assert_eq!(split_host_port(":5432"), None);
        assert_eq!(split_host_port("h:0"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }
}
