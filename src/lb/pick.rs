//! Which target takes the next request or connection: a pure function of what each
//! target is doing, so every rule of it is unit-tested.
//!
//! - Only healthy targets get new work; when none is healthy, every target that is not
//!   draining does (ALB's fail-open: a balancer whose checks are wrong keeps serving).
//! - A draining target never gets new work.
//! - `least_outstanding_requests` takes the target with the fewest in flight; among
//!   equals, the one after the last pick, so ties rotate. `round_robin` takes each in turn.

use super::config::Algorithm;

/// What the picker knows of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// It passed its health checks.
    pub healthy: bool,
    /// It is deregistered and draining.
    pub draining: bool,
    /// Requests or connections in flight to it.
    pub outstanding: u64,
}

/// The index of the target to use among `candidates`, or `None` when none may take work.
/// `cursor` is the group's rotation, advanced past the pick.
pub fn pick(candidates: &[Candidate], algorithm: Algorithm, cursor: &mut usize) -> Option<usize> {
    let any_healthy = candidates.iter().any(|c| c.healthy && !c.draining);
    let eligible = |c: &Candidate| !c.draining && (c.healthy || !any_healthy);
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    let start = *cursor % n;
    // Visit every target once, starting at the cursor, so equals are taken in turn.
    let order = (0..n).map(|i| (start + i) % n).filter(|&i| eligible(&candidates[i]));
    let chosen = match algorithm {
        Algorithm::RoundRobin => order.into_iter().next(),
        // min_by_key keeps the first of equals, which is the one nearest the cursor.
        Algorithm::LeastOutstandingRequests => order.min_by_key(|&i| candidates[i].outstanding),
    }?;
    *cursor = chosen + 1;
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(outstanding: u64) -> Candidate {
        Candidate { healthy: true, draining: false, outstanding }
    }

    fn down(outstanding: u64) -> Candidate {
        Candidate { healthy: false, draining: false, outstanding }
    }

    fn picks(candidates: &[Candidate], algorithm: Algorithm, times: usize) -> Vec<usize> {
        let mut cursor = 0;
        (0..times).filter_map(|_| pick(candidates, algorithm, &mut cursor)).collect()
    }

    #[test]
    fn least_outstanding_takes_the_least_busy() {
        let targets = [up(3), up(1), up(2)];
        assert_eq!(picks(&targets, Algorithm::LeastOutstandingRequests, 3), [1, 1, 1]);
    }

    #[test]
    fn equals_are_taken_in_turn() {
        let targets = [up(0), up(5), up(0), up(0)];
        assert_eq!(picks(&targets, Algorithm::LeastOutstandingRequests, 6), [0, 2, 3, 0, 2, 3]);
        assert_eq!(picks(&targets, Algorithm::RoundRobin, 5), [0, 1, 2, 3, 0]);
    }

    #[test]
    fn unhealthy_targets_get_nothing_while_one_is_healthy() {
        let targets = [down(0), up(9), down(0)];
        assert_eq!(picks(&targets, Algorithm::LeastOutstandingRequests, 3), [1, 1, 1]);
        assert_eq!(picks(&targets, Algorithm::RoundRobin, 3), [1, 1, 1]);
    }

    #[test]
    fn with_none_healthy_it_fails_open_to_all() {
        let targets = [down(2), down(1)];
        assert_eq!(picks(&targets, Algorithm::LeastOutstandingRequests, 2), [1, 1]);
        assert_eq!(picks(&targets, Algorithm::RoundRobin, 4), [0, 1, 0, 1]);
    }

    #[test]
    fn draining_targets_never_get_new_work() {
        let draining = Candidate { healthy: true, draining: true, outstanding: 0 };
        let targets = [draining, up(7)];
        assert_eq!(picks(&targets, Algorithm::LeastOutstandingRequests, 3), [1, 1, 1]);
        // Not even when the rest are unhealthy: fail-open is for registered targets.
        let targets = [draining, down(7)];
        assert_eq!(picks(&targets, Algorithm::RoundRobin, 2), [1, 1]);
        assert_eq!(picks(&[draining], Algorithm::RoundRobin, 1), Vec::<usize>::new());
        assert_eq!(picks(&[], Algorithm::LeastOutstandingRequests, 1), Vec::<usize>::new());
    }

    #[test]
    fn a_cursor_past_the_end_still_picks() {
        let mut cursor = 17;
        assert_eq!(pick(&[up(0), up(0)], Algorithm::RoundRobin, &mut cursor), Some(1));
        assert_eq!(cursor, 2);
    }
}
