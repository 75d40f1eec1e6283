//! Neighbours the slow path learnt or forgot, batched into snapshot rebuilds: held packets leave at once with the new
//! MAC, and the workers' snapshot follows within `every` (a rebuild costs a Maglev table per service, so a burst of
//! news is one rebuild, not one each).

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One change: the neighbour's new MAC, or `None` when it was forgotten.
pub(super) type Change = (IpAddr, Option<[u8; 6]>);

/// The batch waiting for its rebuild.
#[derive(Debug)]
pub(super) struct Learnt {
    pending: Vec<Change>,
    last: Instant,
    every: Duration,
    total: usize,
}

impl Learnt {
    /// Batches at most one rebuild per `every`, the first one allowed at once.
    pub(super) fn new(now: Instant, every: Duration) -> Self {
        Self { pending: Vec::new(), last: now.checked_sub(every).unwrap_or(now), every, total: 0 }
    }

    /// Add changes.
    pub(super) fn add(&mut self, changes: impl IntoIterator<Item = Change>) {
        self.pending.extend(changes);
    }

    /// The batch to apply now, if there is one and the last rebuild was at least `every` ago.
    pub(super) fn due(&mut self, now: Instant) -> Option<Vec<Change>> {
        if self.pending.is_empty() || now.duration_since(self.last) < self.every {
            return None;
        }
        self.last = now;
        self.total += self.pending.len();
        Some(std::mem::take(&mut self.pending))
    }

    /// Changes handed out so far.
    pub(super) fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(last: u8) -> Change {
        (IpAddr::from([198, 18, 2, last]), Some([2, 0, 0, 0, 0, last]))
    }

    #[test]
    fn news_is_batched_at_most_once_per_interval() {
        let t0 = Instant::now();
        let every = Duration::from_millis(20);
        let mut l = Learnt::new(t0, every);
        assert_eq!(l.due(t0), None, "nothing to apply");
        l.add([change(10)]);
        assert_eq!(l.due(t0), Some(vec![change(10)]), "the first news goes at once");
        l.add([change(11)]);
        l.add([change(12), (IpAddr::from([198, 18, 2, 13]), None)]);
        assert_eq!(l.due(t0 + Duration::from_millis(5)), None, "within 20 ms of the last rebuild: wait");
        let batch = l.due(t0 + every).unwrap();
        assert_eq!(batch.len(), 3, "one rebuild for the burst: {batch:?}");
        assert_eq!(l.due(t0 + every * 3), None);
        assert_eq!(l.total(), 4);
    }
}
