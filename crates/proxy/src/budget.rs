//! The primary read budget (`primary_read_pool_size`): a semaphore per cluster whose permits
//! reads hold for as long as their lease on a primary connection, so reads can never hold
//! every primary connection and writes always find one.
//!
//! RELOAD resizes it in place: sessions that logged in before share it with those after. A
//! shrink forgets free permits at once and the rest as they come back (`debt`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct ReadBudget {
    sem: Arc<Semaphore>,
    /// The configured size; 0: no limit (reads take no permit).
    size: AtomicUsize,
    /// Permits that exist (free or held); changed only by `resize`.
    capacity: Mutex<usize>,
    /// Permits to forget when they come back, after a shrink.
    debt: AtomicUsize,
}

/// One read's place in the budget; given back (or forgotten, after a shrink) when dropped.
pub struct ReadPermit {
    permit: Option<OwnedSemaphorePermit>,
    budget: Arc<ReadBudget>,
}

impl Drop for ReadPermit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        let owed = self.budget.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1)).is_ok();
        if owed {
            permit.forget();
        }
    }
}

impl Default for ReadBudget {
    fn default() -> Self {
        ReadBudget { sem: Arc::new(Semaphore::new(0)), size: AtomicUsize::new(0), capacity: Mutex::new(0), debt: AtomicUsize::new(0) }
    }
}

impl ReadBudget {
    /// `size` 0: unlimited.
    pub fn resize(&self, size: usize) {
        let Ok(mut capacity) = self.capacity.lock() else { return };
        self.size.store(size, Ordering::Release);
        if size > *capacity {
            // Permits still owed from an earlier shrink are simply kept.
            let mut add = size - *capacity;
            while add > 0 {
                match self.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1)) {
                    Ok(_) => add -= 1,
                    Err(_) => break,
                }
            }
            self.sem.add_permits(add);
        } else if size < *capacity {
            let excess = *capacity - size;
            let forgotten = self.sem.forget_permits(excess);
            self.debt.fetch_add(excess - forgotten, Ordering::AcqRel);
        }
        *capacity = size;
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    pub fn is_limited(&self) -> bool {
        self.size() > 0
    }

    /// Reads holding a permit now.
    pub fn in_use(&self) -> usize {
        self.size().saturating_sub(self.sem.available_permits())
    }

    /// A permit now, or `None` when the budget is spent.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ReadPermit> {
        let permit = self.sem.clone().try_acquire_owned().ok()?;
        Some(ReadPermit { permit: Some(permit), budget: self.clone() })
    }

    /// Waits for a permit (cancel-safe: dropping the future leaves the queue).
    pub async fn acquire(self: &Arc<Self>) -> Option<ReadPermit> {
        let permit = self.sem.clone().acquire_owned().await.ok()?;
        Some(ReadPermit { permit: Some(permit), budget: self.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget of `n` with every permit held.
    fn spent(n: usize) -> (Arc<ReadBudget>, Vec<ReadPermit>) {
        let b = Arc::new(ReadBudget::default());
        b.resize(n);
        let held = (0..n).map(|_| b.try_acquire().expect("a free permit")).collect();
        (b, held)
    }

    #[test]
    fn permits_are_capped_and_come_back() {
        let b = Arc::new(ReadBudget::default());
        b.resize(2);
        let p1 = b.try_acquire().unwrap();
        let _p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none());
        assert_eq!(b.in_use(), 2);
        drop(p1);
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn a_shrink_forgets_held_permits_as_they_come_back() {
        let (b, held) = spent(3);
        b.resize(1);
        drop(held);
        let p = b.try_acquire().expect("one permit left");
        assert!(b.try_acquire().is_none(), "the budget is 1 now");
        drop(p);
        b.resize(4);
        let all: Vec<_> = (0..4).map(|_| b.try_acquire()).collect();
        assert!(all.iter().all(Option::is_some));
        assert!(b.try_acquire().is_none());
    }

    #[test]
    fn growing_while_permits_are_owed_settles_the_debt_first() {
        let (b, held) = spent(2);
        b.resize(0); // unlimited: both owed
        b.resize(2);
        drop(held);
        let again: Vec<_> = (0..3).map(|_| b.try_acquire()).collect();
        assert_eq!(again.iter().filter(|p| p.is_some()).count(), 2);
    }
}
