use std::fmt;
use std::str::FromStr;

/// A WAL position. Ordered, so "has replica X replayed up to the client's commit" is `>=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    /// The text form a server sends (`pg_lsn` as text, e.g. a DataRow column): the one place
    /// a server's answer becomes an `Lsn`.
    pub fn from_text(text: &[u8]) -> Option<Lsn> {
        std::str::from_utf8(text).ok()?.parse().ok()
    }
}

impl fmt::Display for Lsn {
    // PostgreSQL's own text form, `16/B374D848`, so logs and the admin console match psql.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseLsnError;

impl fmt::Display for ParseLsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an LSN: expected two hexadecimal numbers separated by '/'")
    }
}

impl std::error::Error for ParseLsnError {}

impl FromStr for Lsn {
    type Err = ParseLsnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s.trim().split_once('/').ok_or(ParseLsnError)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| ParseLsnError)?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| ParseLsnError)?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_postgres_text_form() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::ZERO);
    }

    #[test]
    fn reads_a_servers_text() {
        assert_eq!(Lsn::from_text(b"16/B374D848"), Some(Lsn(0x16_B374_D848)));
        assert_eq!(Lsn::from_text(b"\xff/1"), None);
        assert_eq!(Lsn::from_text(b""), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!("".parse::<Lsn>().is_err());
        assert!("16".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
        assert!("1/100000000".parse::<Lsn>().is_err());
    }

    #[test]
    fn orders_by_position() {
        assert!("1/0".parse::<Lsn>().unwrap() > "0/FFFFFFFF".parse::<Lsn>().unwrap());
    }
}
