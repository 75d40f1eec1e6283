//! Admission of new flows while a worker is saturated, so that a flood of new flows (a SYN flood) cannot take the core
//! from the flows already tracked.
//!
//! Recording a new flow costs several times forwarding a tracked one (a lookup that misses, a Maglev pick, an insert
//! that may evict, the reverse index: `edgelb-perf --new` against the established figure). On a core the traffic
//! saturates, every nanosecond spent on one packet is one another packet waits for, so a flood of new flows at line
//! rate would leave the tracked flows a fraction of their rate, the rest lost at the receive ring without regard to
//! what it was. A worker is *saturated* while its polls bring full receive bursts ([`SATURATED_AFTER`] in a row:
//! packets are waiting in the ring; a poll that runs several full bursts of a port counts each). While saturated, it
//! admits new flows at up to `limit` a second (a token bucket [`BUCKET_MS`] deep, filled once a poll on the
//! pipeline's millisecond clock); the rest are dropped, counted under [`super::DropReason::Overload`]: a SYN in stage
//! 1, before its flow lookup; any other new flow (UDP, TCP picked up mid-flow) once its lookup missed, before anything
//! is recorded. Their clients retry: a TCP SYN is sent again after a second. Below saturation there is no limit, and a
//! limit of 0 (the default) turns the guard off.
//!
//! The guard cannot tell a legitimate SYN from a flood's; what it keeps is the flows already tracked, at the cost of
//! new ones only while the core cannot carry everything. `edgelb-perf --new-percent 50 --new-flow-limit 100000`
//! (perf/README.md): the established flows kept 0.60 of their rate, against 0.17 without the limit.

/// Full receive bursts in a row after which a worker counts as saturated.
pub const SATURATED_AFTER: u32 = 4;

/// Depth of the token bucket, in milliseconds of the limit.
pub const BUCKET_MS: u64 = 10;

/// A worker's admission of new flows (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// New flows a second admitted while saturated (0: no limit).
    limit: u32,
    /// Full receive bursts in a row.
    full_streak: u32,
    /// Whether the worker is saturated now (never with no limit).
    saturated: bool,
    /// Tokens, in thousandths of a flow (a flow costs 1000; a millisecond adds `limit`).
    tokens: u64,
    /// The pipeline clock (ms) the bucket was last filled at.
    filled_at: u32,
}

impl Admission {
    /// The guard with `limit` new flows a second while saturated (0: off). The bucket starts full.
    pub fn new(limit: u32) -> Self {
        Self { limit, tokens: Self::depth(limit), ..Self::default() }
    }

    /// The bucket's depth in thousandths of a flow: [`BUCKET_MS`] of the limit, and one whole flow at least (below 100
    /// a second, 10 ms of the limit is less than one, and a bucket that never held a whole token would admit nothing).
    fn depth(limit: u32) -> u64 {
        (u64::from(limit) * BUCKET_MS).max(if limit > 0 { 1000 } else { 0 })
    }

    /// Whether the worker counts as saturated now.
    pub fn saturated(&self) -> bool {
        self.saturated
    }

    /// A poll at `now` (ms) received packets: `full` whole bursts in a row from one port (more packets were waiting
    /// after each; 0: none was full). The bucket fills here, once a poll, so that stage 1 can read it
    /// ([`Admission::refusing`]).
    #[inline]
    pub fn observe(&mut self, full: u32, now: u32) {
        self.full_streak = if full > 0 { self.full_streak.saturating_add(full) } else { 0 };
        self.saturated = self.limit > 0 && self.full_streak >= SATURATED_AFTER;
        let dt = now.wrapping_sub(self.filled_at);
        if dt > 0 {
            self.filled_at = now;
            let add = u64::from(dt.min(BUCKET_MS as u32)) * u64::from(self.limit);
            self.tokens = (self.tokens + add).min(Self::depth(self.limit));
        }
    }

    /// The worker found no packets: not saturated.
    #[inline]
    pub fn idle(&mut self) {
        self.full_streak = 0;
        self.saturated = false;
    }

    /// Whether a new flow may be recorded now: always below saturation; while saturated, when a token is left (it is
    /// spent).
    #[inline]
    pub fn admit(&mut self) -> bool {
        if !self.saturated {
            return true;
        }
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether [`Admission::admit`] would refuse a new flow now. Stage 1 asks, to drop a SYN before its lookup.
    #[inline(always)]
    pub fn refusing(&self) -> bool {
        self.saturated && self.tokens < 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saturate(a: &mut Admission, now: u32) {
        for _ in 0..SATURATED_AFTER {
            a.observe(1, now);
        }
    }

    fn admitted(a: &mut Admission, tries: usize) -> usize {
        (0..tries).filter(|_| a.admit()).count()
    }

    #[test]
    fn unsaturated_admits_everything() {
        let mut a = Admission::new(1000);
        for _ in 0..SATURATED_AFTER - 1 {
            a.observe(1, 5);
        }
        assert!(!a.saturated() && !a.refusing());
        assert_eq!(admitted(&mut a, 100_000), 100_000);
        // A poll without a full burst ends the streak.
        a.observe(0, 5);
        a.observe(1, 5);
        assert!(!a.saturated());
    }

    /// A poll that ran several full bursts of a port counts each: the streak is of bursts, not polls.
    #[test]
    fn a_poll_of_several_full_bursts_counts_each() {
        let mut a = Admission::new(1000);
        a.observe(SATURATED_AFTER - 1, 5);
        assert!(!a.saturated());
        a.observe(1, 5);
        assert!(a.saturated());
        a.observe(0, 5);
        assert!(!a.saturated());
        a.observe(SATURATED_AFTER, 5);
        assert!(a.saturated());
    }

    #[test]
    fn saturated_admits_the_bucket_then_the_rate() {
        let mut a = Admission::new(2000);
        saturate(&mut a, 0);
        assert!(a.saturated() && !a.refusing());
        // The bucket starts full: 10 ms of 2000/s = 20 flows.
        assert_eq!(admitted(&mut a, 100), 20);
        assert!(a.refusing());
        // Each millisecond brings 2 flows, added once a poll.
        a.observe(1, 1);
        assert!(!a.refusing());
        assert_eq!(admitted(&mut a, 100), 2);
        a.observe(1, 1);
        assert_eq!(admitted(&mut a, 100), 0);
        a.observe(1, 4);
        assert_eq!(admitted(&mut a, 100), 6);
        // A long pause refills no more than the bucket's depth.
        a.observe(1, 60_000);
        assert_eq!(admitted(&mut a, 100), 20);
        // Over a second at a steady rate, the bucket empty at its start: the limit.
        let mut n = 0;
        for t in 60_001..61_001u32 {
            a.observe(1, t);
            n += admitted(&mut a, 50);
        }
        assert_eq!(n, 2000);
        // Idle: no limit again.
        a.idle();
        assert!(!a.refusing());
        assert_eq!(admitted(&mut a, 1000), 1000);
    }

    /// Small limits: the bucket holds one flow at least (below 100 a second, 10 ms of the limit is less than one).
    #[test]
    fn small_limits_still_admit_their_rate() {
        for (limit, bucket) in [(300, 3), (20, 1)] {
            let mut a = Admission::new(limit);
            saturate(&mut a, 0);
            let mut n = admitted(&mut a, 10);
            assert_eq!(n, bucket, "limit {limit}");
            for t in 1..=1000u32 {
                a.observe(1, t);
                n += admitted(&mut a, 1);
            }
            assert_eq!(n, bucket + limit as usize, "limit {limit}");
        }
    }

    #[test]
    fn off_never_saturates() {
        let mut a = Admission::new(0);
        for t in 0..100 {
            a.observe(1, t);
        }
        assert!(!a.saturated() && !a.refusing());
        assert_eq!(admitted(&mut a, 10_000), 10_000);
    }

    #[test]
    fn the_clock_wrapping_refills() {
        let mut a = Admission::new(1000);
        a.filled_at = u32::MAX - 3;
        saturate(&mut a, u32::MAX);
        assert_eq!(admitted(&mut a, 100), 10);
        a.observe(1, 1);
        assert_eq!(admitted(&mut a, 100), 2);
    }
}
