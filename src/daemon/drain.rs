//! The SIGTERM drain as a clock-driven state machine: new flows are refused while tracked ones finish; the drain ends
//! when the workers' census finds no flow in use (established TCP, UDP or other flows still tracked), or at `timeout`
//! with some left. A silent connection is waited for as long as it is tracked: the drain never ends on a quiet spell.
//! It lasts at least [`MIN_DRAIN`], even with nothing tracked, so that BGP peers hear GRACEFUL_SHUTDOWN and VRRP
//! backups take the VIPs over before the exit withdraws them.

use edgelb_dataplane::pipeline::FlowCensus;
use std::time::{Duration, Instant};

/// The shortest drain: time for the hand-over (GRACEFUL_SHUTDOWN, VRRP priority 0, Leases released) to be heard.
pub(super) const MIN_DRAIN: Duration = Duration::from_secs(1);

/// Where a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DrainState {
    /// Flows in use remain (or no census has answered yet).
    Draining,
    /// No flow in use: stop.
    Drained,
    /// `timeout` reached with flows still in use: stop anyway.
    TimedOut,
}

/// A drain in progress.
#[derive(Debug, Clone)]
pub(super) struct Drain {
    started: Instant,
    timeout: Duration,
    last: Option<FlowCensus>,
}

impl Drain {
    /// A drain starting at `now`.
    pub(super) fn start(now: Instant, timeout: Duration) -> Self {
        Self { started: now, timeout, last: None }
    }

    /// How long it waits at most.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The last census that answered.
    pub(super) fn last(&self) -> Option<FlowCensus> {
        self.last
    }

    /// Where it stands at `now`, for the API.
    pub(super) fn progress(&self, now: Instant) -> edgelb_controlplane::store::DrainProgress {
        edgelb_controlplane::store::DrainProgress {
            elapsed: now.duration_since(self.started),
            timeout: self.timeout,
            census: self.last.unwrap_or_default(),
        }
    }

    /// The drain at `now`, given the workers' census (`None`: it did not answer; the drain waits on).
    pub(super) fn observe(&mut self, now: Instant, census: Option<FlowCensus>) -> DrainState {
        if let Some(c) = census {
            self.last = Some(c);
            if c.in_use() == 0 && now.duration_since(self.started) >= MIN_DRAIN.min(self.timeout) {
                return DrainState::Drained;
            }
        }
        if now.duration_since(self.started) >= self.timeout {
            DrainState::TimedOut
        } else {
            DrainState::Draining
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn established(n: u64) -> Option<FlowCensus> {
        Some(FlowCensus { established: n, ..Default::default() })
    }

    #[test]
    fn a_silent_established_flow_holds_the_drain_until_it_ends() {
        let t0 = Instant::now();
        let mut d = Drain::start(t0, TIMEOUT);
        // No packet for 20 s, the flow still tracked: still draining.
        assert_eq!(d.observe(t0 + Duration::from_secs(20), established(1)), DrainState::Draining);
        // The connection closed (FIN): closing and half-open flows are not waited for.
        let closed = FlowCensus { closing: 1, half_open: 3, ..Default::default() };
        assert_eq!(d.observe(t0 + Duration::from_secs(21), Some(closed)), DrainState::Drained);
        assert_eq!(d.last(), Some(closed));
    }

    #[test]
    fn nothing_tracked_still_drains_for_the_minimum_so_peers_hear_of_it() {
        let t0 = Instant::now();
        let mut d = Drain::start(t0, TIMEOUT);
        let none = Some(FlowCensus::default());
        assert_eq!(d.observe(t0 + Duration::from_millis(100), none), DrainState::Draining);
        assert_eq!(d.observe(t0 + MIN_DRAIN, none), DrainState::Drained);
    }

    #[test]
    fn udp_flows_are_waited_for_until_they_expire() {
        let t0 = Instant::now();
        let mut d = Drain::start(t0, TIMEOUT);
        let udp = Some(FlowCensus { udp: 2, ..Default::default() });
        assert_eq!(d.observe(t0 + Duration::from_secs(1), udp), DrainState::Draining);
        assert_eq!(d.observe(t0 + Duration::from_secs(2), Some(FlowCensus::default())), DrainState::Drained);
    }

    #[test]
    fn flows_in_use_or_a_silent_census_stop_at_the_timeout() {
        let t0 = Instant::now();
        let mut d = Drain::start(t0, TIMEOUT);
        assert_eq!(d.observe(t0 + Duration::from_secs(29), None), DrainState::Draining);
        assert_eq!(d.observe(t0 + TIMEOUT, established(5)), DrainState::TimedOut);
        assert_eq!(d.timeout(), TIMEOUT);
    }
}
