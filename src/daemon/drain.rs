//! The SIGTERM drain as a clock-driven state machine: new flows are refused while tracked ones finish; the drain ends
//! when the workers forwarded nothing for `idle`, or at `timeout` with traffic still flowing.

use std::time::{Duration, Instant};

/// Where a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DrainState {
    /// Traffic still flows (or has been quiet for less than `idle`).
    Draining,
    /// Nothing forwarded for `idle`: stop.
    Drained,
    /// `timeout` reached with traffic still flowing: stop anyway.
    TimedOut,
}

/// A drain in progress.
#[derive(Debug, Clone)]
pub(super) struct Drain {
    started: Instant,
    last_tx: u64,
    changed: Instant,
    idle: Duration,
    timeout: Duration,
}

impl Drain {
    /// A drain starting at `now`, with the workers' transmitted-packet count `tx` then.
    pub(super) fn start(now: Instant, tx: u64, idle: Duration, timeout: Duration) -> Self {
        Self { started: now, last_tx: tx, changed: now, idle, timeout }
    }

    /// How long it waits at most.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The drain at `now`, the workers having transmitted `tx` packets in all so far.
    pub(super) fn observe(&mut self, now: Instant, tx: u64) -> DrainState {
        if tx != self.last_tx {
            self.last_tx = tx;
            self.changed = now;
        }
        if now.duration_since(self.changed) >= self.idle {
            DrainState::Drained
        } else if now.duration_since(self.started) >= self.timeout {
            DrainState::TimedOut
        } else {
            DrainState::Draining
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_secs(30);

    #[test]
    fn quiet_for_the_idle_time_ends_the_drain() {
        let t0 = Instant::now();
        let mut d = Drain::start(t0, 100, IDLE, TIMEOUT);
        assert_eq!(d.observe(t0 + Duration::from_millis(999), 100), DrainState::Draining);
        assert_eq!(d.observe(t0 + IDLE, 100), DrainState::Drained);
    }

    #[test]
    fn traffic_restarts_the_idle_clock() {
        let t0 = Instant::now();
        let mut d = Drain::start(t0, 100, IDLE, TIMEOUT);
        assert_eq!(d.observe(t0 + Duration::from_millis(900), 101), DrainState::Draining);
        // 1.1 s after the start but only 200 ms after the last packet.
        assert_eq!(d.observe(t0 + Duration::from_millis(1100), 101), DrainState::Draining);
        assert_eq!(d.observe(t0 + Duration::from_millis(1900), 101), DrainState::Drained);
    }

    #[test]
    fn steady_traffic_stops_at_the_timeout() {
        let t0 = Instant::now();
        let mut d = Drain::start(t0, 0, IDLE, TIMEOUT);
        let mut state = DrainState::Draining;
        let mut tx = 0;
        let mut t = t0;
        while state == DrainState::Draining {
            t += Duration::from_millis(500);
            tx += 10;
            state = d.observe(t, tx);
        }
        assert_eq!((state, t.duration_since(t0)), (DrainState::TimedOut, TIMEOUT));
        assert_eq!(d.timeout(), TIMEOUT);
    }
}
