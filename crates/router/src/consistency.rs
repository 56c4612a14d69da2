use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// How fresh a read must be. See DESIGN.md, "Consistency levels".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Every statement on the primary.
    Strong,
    /// A replica only once it has replayed the primary's WAL position as of the read's
    /// arrival: even writes made outside lsnpool are seen.
    Linearizable,
    /// A replica only once it has replayed the client's own last commit (and last read).
    ReadYourWrites,
    /// Read-your-writes per session key (`lsnpool.session_key`), on any connection; an
    /// unkeyed read is `global`.
    Session,
    /// A replica only once it has replayed the newest commit the pooler has seen from anyone:
    /// the default, never stale whichever connection wrote.
    #[default]
    Global,
    /// Any replica within `max_replica_lag`.
    Bounded,
    /// Any healthy replica.
    Eventual,
}

impl Consistency {
    pub const ALL: [Consistency; 7] = [
        Consistency::Strong,
        Consistency::Linearizable,
        Consistency::ReadYourWrites,
        Consistency::Session,
        Consistency::Global,
        Consistency::Bounded,
        Consistency::Eventual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Strong => "strong",
            Consistency::Linearizable => "linearizable",
            Consistency::ReadYourWrites => "read-your-writes",
            Consistency::Session => "session",
            Consistency::Global => "global",
            Consistency::Bounded => "bounded",
            Consistency::Eventual => "eventual",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseConsistencyError(pub String);

impl fmt::Display for ParseConsistencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown consistency level \"{}\": expected one of strong, linearizable, read-your-writes, session, global, bounded, eventual",
            self.0
        )
    }
}

impl std::error::Error for ParseConsistencyError {}

impl FromStr for Consistency {
    type Err = ParseConsistencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Consistency::ALL
            .into_iter()
            .find(|c| c.as_str() == norm)
            .ok_or_else(|| ParseConsistencyError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_level_and_spelling() {
        for c in Consistency::ALL {
            assert_eq!(c.as_str().parse::<Consistency>().unwrap(), c);
        }
        assert_eq!("READ_YOUR_WRITES".parse::<Consistency>().unwrap(), Consistency::ReadYourWrites);
        assert!("fast".parse::<Consistency>().is_err());
    }
}
