//! Waiting for a replica to catch up (`lsn_wait_timeout`).
//!
//! Waiters sleep on the node's `Notify`, which the poller signals after a poll that advanced
//! the replay LSN or changed rotation: no busy loop, and a waiter wakes within microseconds of
//! the poll that saw the LSN.

use std::pin::pin;
use std::time::Duration;

use lsnpool_router::{Lsn, NodeId};
use tokio::time::Instant;

use crate::state::ClusterState;

impl ClusterState {
    /// Waits until replica `node` is in rotation and has replayed `lsn`.
    ///
    /// Returns `true` as soon as that holds (at once if it already does), `false` on timeout,
    /// for an unknown id, or as soon as the node is out of rotation (down or promoted): a node
    /// the router would not use is not worth waiting for.
    pub async fn wait_for_replay(&self, node: NodeId, lsn: Lsn, timeout: Duration) -> bool {
        let Some(n) = self.replica(node) else {
            return false;
        };
        if self.in_rotation(n) && n.lsn() >= lsn.0 {
            return true;
        }
        let deadline = Instant::now() + timeout;
        // Polls back to back while we wait: the first poll that sees `lsn` wakes us, not the
        // next interval tick.
        let _waiting = n.demand.wait();
        loop {
            let mut notified = pin!(n.changed.notified());
            // Register before checking: a poll that lands between the check and the await
            // would otherwise be missed (`notify_waiters` only wakes registered waiters).
            notified.as_mut().enable();
            if !self.in_rotation(n) {
                return false;
            }
            if n.lsn() >= lsn.0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// The primary's current WAL position as of now: the answer of the first primary poll
    /// sent after this call (asked for at once), shared with every caller that came before it
    /// was sent. `None` if no such poll is answered within `timeout` (the primary is down).
    pub async fn fresh_primary_lsn(&self, timeout: Duration) -> Option<Lsn> {
        let n = self.primary_node();
        let deadline = Instant::now() + timeout;
        let wanted = n.demand.next_poll();
        let _waiting = n.demand.wait();
        loop {
            let mut polled = pin!(n.demand.polled.notified());
            polled.as_mut().enable();
            if n.demand.polled_since(wanted) {
                return Some(Lsn(n.lsn()));
            }
            if tokio::time::timeout_at(deadline, polled).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until any replica in rotation has replayed `lsn`; returns the one with the least
    /// outstanding work among those that have, or `None` on timeout (or with no replicas).
    pub async fn wait_for_any_replay(&self, lsn: Lsn, timeout: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut notified = pin!(self.any_replica_changed.notified());
            notified.as_mut().enable();
            let best = self
                .replicas()
                .filter(|r| r.in_rotation && r.replay_lsn >= lsn)
                .min_by_key(|r| r.outstanding)
                .map(|r| r.node);
            if best.is_some() {
                return best;
            }
            if self.replica_count() == 0
                || tokio::time::timeout_at(deadline, notified).await.is_err()
            {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn up_state() -> Arc<ClusterState> {
        let s = Arc::new(ClusterState::new(
            "c",
            "p:1",
            &["r0:1".to_string(), "r1:1".to_string()],
        ));
        for id in [NodeId(0), NodeId(1)] {
            let n = s.replica(id).unwrap();
            s.record_replica_poll(n, true, 100, 0, 1);
        }
        s
    }

    #[tokio::test]
    async fn returns_at_once_when_already_replayed() {
        let s = up_state();
        assert!(s.wait_for_replay(NodeId(0), Lsn(100), Duration::ZERO).await);
        assert!(
            !s.wait_for_replay(NodeId(0), Lsn(101), Duration::from_millis(20))
                .await
        );
        assert!(
            !s.wait_for_replay(NodeId(9), Lsn(1), Duration::from_millis(20))
                .await
        );
    }

    #[tokio::test]
    async fn wakes_when_the_poller_advances() {
        let s = up_state();
        let s2 = s.clone();
        let t = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let n = s2.replica(NodeId(1)).unwrap();
            s2.record_replica_poll(n, true, 200, 0, 2);
        });
        let start = std::time::Instant::now();
        assert!(
            s.wait_for_replay(NodeId(1), Lsn(150), Duration::from_secs(5))
                .await
        );
        assert!(start.elapsed() < Duration::from_secs(1));
        t.await.unwrap();
        assert_eq!(
            s.wait_for_any_replay(Lsn(150), Duration::ZERO).await,
            Some(NodeId(1))
        );
        assert_eq!(
            s.wait_for_any_replay(Lsn(250), Duration::from_millis(10))
                .await,
            None
        );
    }

    #[tokio::test]
    async fn gives_up_when_the_node_goes_down() {
        let s = up_state();
        let s2 = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            s2.mark_down(s2.replica(NodeId(0)).unwrap());
        });
        let start = std::time::Instant::now();
        assert!(
            !s.wait_for_replay(NodeId(0), Lsn(150), Duration::from_secs(5))
                .await
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
