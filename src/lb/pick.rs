//! Which target takes the next request or connection: a pure function of what each
//! target is doing, so every rule of it is unit-tested.
//!
//! - Only healthy targets get new work; when none is healthy, every target that is not
//!   draining does (ALB's fail-open: a balancer whose checks are wrong keeps serving).
//! - A draining target never gets new work.
//! - `least_outstanding_requests` takes the target with the fewest in flight; among
//!   equals, the one after the last pick, so ties rotate. `round_robin` takes each in turn.
//! - A target in slow start (healthy for less than the group's slow start duration) takes
//!   part in only its ramp's share of picks, so its share of new work grows linearly from
//!   nothing to full. Which picks those are follows a golden-ratio sequence over the turns:
//!   spread evenly, with no randomness. When every eligible target is ramping (a group
//!   coming back from no healthy target) none is held back.

use super::config::Algorithm;

/// A full share of work, per mille.
pub const FULL_RAMP: u16 = 1000;

/// What the picker knows of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// It passed its health checks.
    pub healthy: bool,
    /// It is deregistered and draining.
    pub draining: bool,
    /// Requests or connections in flight to it.
    pub outstanding: u64,
    /// Its share of picks while in slow start, per mille ([`FULL_RAMP`] once out of it).
    pub ramp: u16,
}

/// A group's place in its rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Where the next pick starts looking.
    pub next: usize,
    /// Picks made so far.
    pub turn: u64,
}

/// Whether a target ramped to `ramp` per mille takes part in pick number `turn`: true for
/// that share of turns, spread evenly (the fractional parts of `turn` × the golden ratio).
fn takes_part(ramp: u16, turn: u64) -> bool {
    let fraction = turn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    fraction * u64::from(FULL_RAMP) < u64::from(ramp) << 32
}

/// The index of the target to use among `candidates`, or `None` when none may take work.
/// `rotation` is the group's, advanced past the pick.
pub fn pick(candidates: &[Candidate], algorithm: Algorithm, rotation: &mut Rotation) -> Option<usize> {
    let any_healthy = candidates.iter().any(|c| c.healthy && !c.draining);
    let eligible = |c: &Candidate| !c.draining && (c.healthy || !any_healthy);
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    let turn = rotation.turn;
    rotation.turn = rotation.turn.wrapping_add(1);
    let any_full = candidates.iter().any(|c| eligible(c) && c.ramp >= FULL_RAMP);
    let takes_part =
        |c: &Candidate| eligible(c) && (!any_full || c.ramp >= FULL_RAMP || takes_part(c.ramp, turn));
    let start = rotation.next % n;
    // Visit every target once, starting at the cursor, so equals are taken in turn.
    let order = (0..n).map(|i| (start + i) % n).filter(|&i| takes_part(&candidates[i]));
    let chosen = match algorithm {
        Algorithm::RoundRobin => order.into_iter().next(),
        // min_by_key keeps the first of equals, which is the one nearest the cursor.
        Algorithm::LeastOutstandingRequests => order.min_by_key(|&i| candidates[i].outstanding),
    }?;
    rotation.next = chosen + 1;
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(outstanding: u64) -> Candidate {
        Candidate { healthy: true, draining: false, outstanding, ramp: FULL_RAMP }
    }

    fn down(outstanding: u64) -> Candidate {
        Candidate { healthy: false, ..up(outstanding) }
    }

    fn picks(candidates: &[Candidate], algorithm: Algorithm, times: usize) -> Vec<usize> {
        let mut rotation = Rotation::default();
        (0..times).filter_map(|_| pick(candidates, algorithm, &mut rotation)).collect()
    }

    /// A ramping target's share grows with its ramp, under both algorithms, from none to
    /// an equal one; alone, or beside only other ramping targets, it is not held back.
    #[test]
    fn a_target_in_slow_start_takes_its_ramps_share() {
        for algorithm in [Algorithm::RoundRobin, Algorithm::LeastOutstandingRequests] {
            let share = |ramp: u16| {
                let targets = [up(0), Candidate { ramp, ..up(0) }];
                let picks = picks(&targets, algorithm, 10_000);
                picks.iter().filter(|&&i| i == 1).count() as f64 / picks.len() as f64
            };
            let shares: Vec<f64> = [0, 100, 250, 500, 750, FULL_RAMP].into_iter().map(share).collect();
            assert_eq!(shares[0], 0.0, "{algorithm:?}: {shares:?}");
            assert!(shares.windows(2).all(|w| w[0] < w[1]), "{algorithm:?} grows: {shares:?}");
            assert!((shares[5] - 0.5).abs() < 0.01, "{algorithm:?} full is an equal share: {shares:?}");
            assert!((0.05..0.15).contains(&shares[1]), "{algorithm:?}: {shares:?}");
            let ramping = Candidate { ramp: 0, ..up(0) };
            assert_eq!(super::tests::picks(&[ramping, down(0)], algorithm, 3), [0, 0, 0], "{algorithm:?}");
            assert_eq!(super::tests::picks(&[ramping, ramping], algorithm, 2).len(), 2, "{algorithm:?}");
        }
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
        let draining = Candidate { draining: true, ..up(0) };
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
        let mut rotation = Rotation { next: 17, turn: 0 };
        assert_eq!(pick(&[up(0), up(0)], Algorithm::RoundRobin, &mut rotation), Some(1));
        assert_eq!(rotation, Rotation { next: 2, turn: 1 });
    }
}
