//! Polling on demand: a node's poller polls back to back while someone waits on it.
//!
//! The interval poll (10 ms by default) is too slow for a read that needs a commit made a
//! millisecond ago: a streaming replica has replayed it within a millisecond, but the monitor
//! would only notice at its next tick. Waiting readers register here; while any is registered
//! the poller skips its interval and polls again as soon as the previous poll is answered, so
//! every waiter is served by the first poll that starts after it arrived, and one poll serves
//! all the waiters that arrived before it was sent. Nobody waiting: the interval alone, as
//! before, so idle clusters cost nothing more.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Demand {
    /// Readers waiting for a fresh poll of this node right now.
    waiters: AtomicU32,
    /// Wakes the poller out of its interval sleep (a stored permit if it is mid-poll).
    wake: Notify,
    /// Polls sent so far; a poll's number is taken before its query is sent.
    started: AtomicU64,
    /// The number of the last poll whose answer is published.
    done: AtomicU64,
    /// Signalled after each published poll.
    pub(crate) polled: Notify,
}

/// Registers a waiter until dropped.
#[derive(Debug)]
pub(crate) struct Waiting<'a> {
    demand: &'a Demand,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.demand.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Demand {
    /// Asks the poller to poll now and keep polling while the guard lives.
    pub(crate) fn wait(&self) -> Waiting<'_> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
        Waiting { demand: self }
    }

    pub(crate) fn wanted(&self) -> bool {
        self.waiters.load(Ordering::Acquire) > 0
    }

    /// The poller's interval sleep, cut short by a waiter.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The first poll sent after this call: its number.
    pub(crate) fn next_poll(&self) -> u64 {
        self.started.load(Ordering::Acquire) + 1
    }

    /// The poller is about to send a poll; returns its number.
    pub(crate) fn start_poll(&self) -> u64 {
        self.started.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Poll `n`'s answer is published.
    pub(crate) fn finish_poll(&self, n: u64) {
        self.done.fetch_max(n, Ordering::AcqRel);
        self.polled.notify_waiters();
    }

    pub(crate) fn polled_since(&self, n: u64) -> bool {
        self.done.load(Ordering::Acquire) >= n
    }
}
