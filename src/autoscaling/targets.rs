//! What a group needs of the load balancers: its target groups' targets and their health,
//! and registering and deregistering its instances. The load balancing service answers
//! through the same calls the API makes; unit tests put a fake in its place.

use super::AutoScalingError;
use crate::balancer::{BalancerError, Balancers};
use crate::lb::config::TargetHealth;

/// The load balancers, as a group drives them.
pub trait TargetGroups: Send + Sync {
    /// Fails unless every target group in `arns` exists.
    fn check(&self, arns: &[String]) -> Result<(), AutoScalingError>;
    /// Each target of group `arn`, as (instance id, health).
    fn targets(&self, arn: &str) -> Result<Vec<(String, TargetHealth)>, AutoScalingError>;
    /// The requests each target of group `arn` was sent, by instance, counting up since
    /// its balancer started (none: no balancer serves the group).
    fn request_counts(&self, arn: &str) -> Result<Vec<(String, u64)>, AutoScalingError>;
    /// Registers instances `ids` on the group's port.
    fn register(&self, arn: &str, ids: &[String]) -> Result<(), AutoScalingError>;
    /// Deregisters them: each drains for the group's deregistration delay.
    fn deregister(&self, arn: &str, ids: &[String]) -> Result<(), AutoScalingError>;
}

fn refused(error: BalancerError) -> AutoScalingError {
    match error {
        BalancerError::Daemon(e) => AutoScalingError::Daemon(e),
        BalancerError::State(e) => AutoScalingError::State(e),
        other => AutoScalingError::Validation(other.to_string()),
    }
}

fn on_group_port(ids: &[String]) -> Vec<(String, Option<u16>)> {
    ids.iter().map(|id| (id.clone(), None)).collect()
}

impl TargetGroups for Balancers {
    fn check(&self, arns: &[String]) -> Result<(), AutoScalingError> {
        let balancing = self.read().map_err(refused)?;
        for arn in arns {
            balancing.target_group(arn).map_err(refused)?;
        }
        Ok(())
    }

    fn targets(&self, arn: &str) -> Result<Vec<(String, TargetHealth)>, AutoScalingError> {
        let health = self.target_health(arn).map_err(refused)?;
        Ok(health.into_iter().map(|h| (h.instance_id, h.state)).collect())
    }

    fn request_counts(&self, arn: &str) -> Result<Vec<(String, u64)>, AutoScalingError> {
        Ok(self
            .statuses()
            .into_iter()
            .flat_map(|(_, status)| status.target_groups)
            .filter(|group| group.id == arn)
            .flat_map(|group| group.targets)
            .map(|target| (target.id, target.counters.requests))
            .collect())
    }

    fn register(&self, arn: &str, ids: &[String]) -> Result<(), AutoScalingError> {
        self.register_targets(arn, &on_group_port(ids)).map_err(refused)
    }

    fn deregister(&self, arn: &str, ids: &[String]) -> Result<(), AutoScalingError> {
        self.deregister_targets(arn, &on_group_port(ids)).map_err(refused)
    }
}

/// In-memory target groups for the controller's unit tests: a registered target is
/// healthy unless the test says otherwise; a deregistered one drains until the test
/// ends its draining.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// The fake.
    #[derive(Default)]
    pub(crate) struct FakeTargetGroups {
        groups: Mutex<BTreeMap<String, Vec<(String, TargetHealth)>>>,
        requests: Mutex<BTreeMap<String, Vec<(String, u64)>>>,
    }

    impl FakeTargetGroups {
        fn groups(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<(String, TargetHealth)>>> {
            self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// Makes target group `arn`.
        pub(crate) fn add(&self, arn: &str) {
            self.groups().insert(arn.into(), Vec::new());
        }

        /// Sets the health the group reports for `id`.
        pub(crate) fn set_health(&self, arn: &str, id: &str, health: TargetHealth) {
            if let Some(target) = self.groups().get_mut(arn).and_then(|g| g.iter_mut().find(|t| t.0 == id)) {
                target.1 = health;
            }
        }

        /// Sets the request counters group `arn` reports.
        pub(crate) fn set_requests(&self, arn: &str, counts: &[(&str, u64)]) {
            let counts = counts.iter().map(|(id, n)| ((*id).to_owned(), *n)).collect();
            self.requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(arn.into(), counts);
        }

        /// Ends every draining target's draining.
        pub(crate) fn finish_draining(&self) {
            for targets in self.groups().values_mut() {
                targets.retain(|t| t.1 != TargetHealth::Draining);
            }
        }

        /// The ids registered (not draining) in `arn`.
        pub(crate) fn registered(&self, arn: &str) -> Vec<String> {
            let groups = self.groups();
            let targets = groups.get(arn).into_iter().flatten();
            targets.filter(|t| t.1 != TargetHealth::Draining).map(|t| t.0.clone()).collect()
        }
    }

    impl TargetGroups for FakeTargetGroups {
        fn check(&self, arns: &[String]) -> Result<(), AutoScalingError> {
            match arns.iter().find(|arn| !self.groups().contains_key(*arn)) {
                Some(arn) => Err(AutoScalingError::Validation(format!("target group {arn} does not exist"))),
                None => Ok(()),
            }
        }

        fn targets(&self, arn: &str) -> Result<Vec<(String, TargetHealth)>, AutoScalingError> {
            Ok(self.groups().get(arn).cloned().unwrap_or_default())
        }

        fn request_counts(&self, arn: &str) -> Result<Vec<(String, u64)>, AutoScalingError> {
            let requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Ok(requests.get(arn).cloned().unwrap_or_default())
        }

        fn register(&self, arn: &str, ids: &[String]) -> Result<(), AutoScalingError> {
            let mut groups = self.groups();
            let targets = groups.entry(arn.into()).or_default();
            for id in ids {
                targets.retain(|t| &t.0 != id);
                targets.push((id.clone(), TargetHealth::Healthy));
            }
            Ok(())
        }

        fn deregister(&self, arn: &str, ids: &[String]) -> Result<(), AutoScalingError> {
            for target in self.groups().entry(arn.into()).or_default() {
                if ids.contains(&target.0) {
                    target.1 = TargetHealth::Draining;
                }
            }
            Ok(())
        }
    }
}
