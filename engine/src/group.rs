//! Group commit for producers on other threads.
//!
//! A producer task on the shard is back with its next record before the flusher runs again,
//! so each fdatasync covers every producer. A producer thread is not: its acknowledgement
//! crosses threads, it wakes, and its next request crosses back, which takes longer than the
//! flusher needs to start the next sync. That sync then covers only the records that arrived
//! while the last one ran, and the producers split into two half-size groups that take turns
//! (measured: 16 foreign threads, Synced 1 KiB, 8.0 records per fdatasync against 15.7 from
//! 16 on-shard tasks, at the same number of fdatasyncs per second).
//!
//! So after a sync that released foreign producers, the next sync is held until as many
//! foreign appends have arrived as it released, or for at most `HOLD_SYNCS` times as long as
//! that sync took. Records are written meanwhile; only the fdatasync waits. Appends from
//! tasks on the shard are not counted, so they are never held.
//!
//! Measured (16 foreign threads, Synced 1 KiB, this 2-core VM, fdatasync ~200 µs): no hold,
//! 33-34k rec/s at 8.0 records per fdatasync; held up to one sync, 34-36k at 12; up to two,
//! 36-37k at 14.7. The producers' way back, not the wait, is then the limit: 16 threads
//! waking in turn on the one core the shard leaves them. One foreign producer is never held
//! (it is back before the next sync is due); 4 formed groups of 3.9 instead of 2.0 at the
//! same throughput, with p99 517 -> 668 µs in one run.

use std::time::{Duration, Instant};

/// A sync is held for at most this many times as long as the last one took...
const HOLD_SYNCS: u32 = 2;
/// ...and never longer than this, however long that was.
const MAX_HOLD: Duration = Duration::from_micros(500);

#[derive(Debug, Default)]
pub struct ForeignGroups {
    /// Synced appends from other threads, counted as they arrive.
    arrived: u64,
    /// `arrived` when the sync in flight, or the last one, started.
    at_sync_start: u64,
    /// Foreign appends that arrived before the sync in flight started: those it covers.
    in_sync: u64,
    /// The foreign appends the last completed sync released, and `arrived` at that moment.
    released: u64,
    at_release: u64,
    released_at: Option<Instant>,
    sync_started_at: Option<Instant>,
    last_sync: Duration,
    /// A hold since the last release was counted (`ShardStats::held_syncs`).
    counted: bool,
}

impl ForeignGroups {
    pub fn arrived(&mut self) {
        self.arrived += 1;
    }

    pub fn sync_started(&mut self, now: Instant) {
        self.in_sync = self.arrived - self.at_sync_start;
        self.at_sync_start = self.arrived;
        self.sync_started_at = Some(now);
    }

    pub fn sync_done(&mut self, now: Instant) {
        self.released = std::mem::take(&mut self.in_sync);
        self.at_release = self.arrived;
        self.released_at = Some(now);
        self.counted = false;
        if let Some(t) = self.sync_started_at.take() {
            self.last_sync = now.saturating_duration_since(t);
        }
    }

    /// True the first time it is called for a hold since the last sync completed.
    pub fn first_hold(&mut self) -> bool {
        !std::mem::replace(&mut self.counted, true)
    }

    /// How much longer the next sync should wait for the producers the last one released;
    /// `None` to start it now.
    pub fn hold(&self, now: Instant) -> Option<Duration> {
        let at = self.released_at?;
        debug_assert!(self.arrived >= self.at_release);
        if self.arrived - self.at_release >= self.released {
            return None;
        }
        let left = (self.last_sync * HOLD_SYNCS)
            .min(MAX_HOLD)
            .checked_sub(now.saturating_duration_since(at))?;
        (!left.is_zero()).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNC: Duration = Duration::from_micros(200);

    /// One sync that covers `n` foreign appends and takes `SYNC`; returns when it completed.
    fn sync_covering(g: &mut ForeignGroups, n: u64, start: Instant) -> Instant {
        for _ in 0..n {
            g.arrived();
        }
        g.sync_started(start);
        let done = start + SYNC;
        g.sync_done(done);
        done
    }

    #[test]
    fn no_foreign_producers_no_hold() {
        let mut g = ForeignGroups::default();
        let t = Instant::now();
        assert_eq!(g.hold(t), None, "before any sync");
        let done = sync_covering(&mut g, 0, t);
        assert_eq!(g.hold(done), None, "the last sync released nobody from another thread");
    }

    #[test]
    fn held_until_the_released_producers_are_back() {
        let mut g = ForeignGroups::default();
        let done = sync_covering(&mut g, 3, Instant::now());
        assert_eq!(g.hold(done), Some(SYNC * HOLD_SYNCS));
        g.arrived();
        g.arrived();
        let later = done + Duration::from_micros(50);
        assert_eq!(g.hold(later), Some(SYNC * HOLD_SYNCS - Duration::from_micros(50)));
        g.arrived();
        assert_eq!(g.hold(later), None, "all three are back");
    }

    #[test]
    fn held_no_longer_than_hold_syncs_times_the_last_sync() {
        let mut g = ForeignGroups::default();
        let done = sync_covering(&mut g, 4, Instant::now());
        let limit = SYNC * HOLD_SYNCS;
        assert!(g.hold(done + limit - Duration::from_micros(1)).is_some());
        assert_eq!(g.hold(done + limit), None);
        assert_eq!(g.hold(done + 10 * limit), None);
    }

    #[test]
    fn a_slow_sync_holds_at_most_max_hold() {
        let mut g = ForeignGroups::default();
        let t = Instant::now();
        g.arrived();
        g.sync_started(t);
        let done = t + Duration::from_millis(30);
        g.sync_done(done);
        assert_eq!(g.hold(done), Some(MAX_HOLD));
    }

    #[test]
    fn arrivals_during_a_sync_are_not_mistaken_for_the_released() {
        // Two half groups taking turns: A (2) is being synced while B (2) arrives. When A's
        // sync completes, B is already waiting, but A's producers are not back yet: hold.
        let mut g = ForeignGroups::default();
        let t = Instant::now();
        g.arrived();
        g.arrived();
        g.sync_started(t);
        g.arrived();
        g.arrived();
        let done = t + SYNC;
        g.sync_done(done);
        assert!(g.hold(done).is_some());
        g.arrived();
        g.arrived();
        assert_eq!(g.hold(done), None);
        // The next sync covers B and A together.
        g.sync_started(done);
        assert_eq!(g.in_sync, 4);
    }
}
