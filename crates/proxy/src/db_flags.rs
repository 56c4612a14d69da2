//! A set of database names something is switched on for (`*`: every database): PAUSE and the
//! routing kill switch. Asking costs one atomic load while the set is empty, the usual case.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct DbFlags {
    any: AtomicBool,
    names: Mutex<HashSet<String>>,
}

impl DbFlags {
    /// Flags `db`, or every database.
    pub fn set(&self, db: Option<&str>) {
        if let Ok(mut names) = self.names.lock() {
            names.insert(db.unwrap_or("*").to_string());
            self.any.store(true, Ordering::Release);
        }
    }

    /// Unflags `db`; `None` unflags everything.
    pub fn clear(&self, db: Option<&str>) {
        if let Ok(mut names) = self.names.lock() {
            match db {
                Some(d) => {
                    names.remove(d);
                }
                None => names.clear(),
            }
            self.any.store(!names.is_empty(), Ordering::Release);
        }
    }

    /// Whether any of `names` is flagged, or every database is.
    pub fn contains_any(&self, names: &[&str]) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        self.names.lock().map(|set| set.contains("*") || names.iter().any(|n| set.contains(*n))).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_wildcard() {
        let f = DbFlags::default();
        assert!(!f.contains_any(&["appdb"]));
        f.set(Some("appdb"));
        assert!(f.contains_any(&["app_read", "appdb"]) && !f.contains_any(&["other"]));
        f.set(None);
        assert!(f.contains_any(&["other"]));
        f.clear(None);
        assert!(!f.contains_any(&["appdb"]));
    }
}
