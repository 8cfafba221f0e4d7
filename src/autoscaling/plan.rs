//! One group's next steps, decided from what is recorded and what is seen, with no side
//! effect: the reconcile loop carries a [`Plan`] out, and unit tests check every decision.

use std::collections::BTreeMap;

use super::model::{Group, HealthCheckType, Leaving};
use crate::state::instance::InstanceState;

/// Launches one pass makes for a group (the next pass makes the rest).
pub const MAX_LAUNCHES_PER_PASS: usize = 10;

/// A group's instance as the reconcile loop sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The instance.
    pub id: String,
    /// Its state.
    pub state: InstanceState,
    /// When it was launched (seconds since the epoch).
    pub launch_time: u64,
    /// The launch template it was launched from (none: not known).
    pub template_id: Option<String>,
    /// The launch template version it was launched from (none: not known).
    pub version: Option<u32>,
    /// Its subnet.
    pub subnet: String,
    /// Its vCPUs.
    pub vcpus: u32,
    /// The CPU seconds its VMM has used (none: unknown).
    pub cpu_seconds: Option<f64>,
    /// Registered (not draining) in each of the group's target groups.
    pub registered_in_all: bool,
    /// Registered (not draining) in at least one.
    pub registered_in_any: bool,
    /// Healthy in each of the group's target groups.
    pub healthy_in_all: bool,
    /// Draining in at least one.
    pub draining: bool,
    /// A target group says it is unhealthy.
    pub elb_unhealthy: bool,
}

/// What to do for one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Members to start letting go of, recorded before anything is done to them.
    pub leave: Vec<Leaving>,
    /// Instances to launch, by subnet (empty: the template's).
    pub launch: Vec<String>,
    /// The capacity the launches bring the group from.
    pub launch_from: u32,
    /// Members to register in the group's target groups.
    pub register: Vec<String>,
    /// Leaving members to deregister.
    pub deregister: Vec<String>,
    /// Leaving members, drained, to terminate.
    pub terminate: Vec<String>,
    /// Recorded instances that no longer exist.
    pub gone: Vec<String>,
    /// The group has no instance left.
    pub empty: bool,
}

/// Why an in-service member is unhealthy, if it is.
pub fn unhealthy(group: &Group, member: &Member, now: u64) -> Option<&'static str> {
    if !matches!(member.state, InstanceState::Pending | InstanceState::Running) {
        return Some("an EC2 health check indicating it has been terminated or stopped");
    }
    let graced = now >= member.launch_time.saturating_add(u64::from(group.health_check_grace_seconds));
    (group.health_check_type == HealthCheckType::Elb && graced && member.elb_unhealthy)
        .then_some("an ELB system health check failure")
}

/// The order scale-in takes members in: unprotected only (unless the group is being
/// deleted), the oldest launch template version first, then the oldest instance.
pub(super) fn scale_in_order<'a>(group: &Group, members: &[&'a Member]) -> Vec<&'a Member> {
    let mut candidates: Vec<&Member> =
        members.iter().copied().filter(|m| group.deleting || !group.protected.contains(&m.id)).collect();
    candidates.sort_by_key(|m| (m.version.unwrap_or(0), m.launch_time, m.id.clone()));
    candidates
}

/// The subnets `count` new instances go to: each to the one with the fewest in service.
fn subnets_for(group: &Group, in_service: &[&Member], count: usize) -> Vec<String> {
    if group.subnets.is_empty() {
        return vec![String::new(); count];
    }
    let mut load: BTreeMap<&str, usize> = group.subnets.iter().map(|s| (s.as_str(), 0)).collect();
    for member in in_service {
        if let Some(n) = load.get_mut(member.subnet.as_str()) {
            *n += 1;
        }
    }
    (0..count)
        .map(|_| {
            let subnet = group
                .subnets
                .iter()
                .min_by_key(|s| load.get(s.as_str()).copied().unwrap_or(0))
                .cloned()
                .unwrap_or_default();
            if let Some(n) = load.get_mut(subnet.as_str()) {
                *n += 1;
            }
            subnet
        })
        .collect()
}

/// What group `group` should do next, given its live `members`.
pub fn plan(group: &Group, members: &[Member], now: u64) -> Plan {
    let mut plan = Plan {
        gone: group
            .leaving
            .iter()
            .map(|l| &l.instance_id)
            .chain(&group.protected)
            .filter(|id| !members.iter().any(|m| &m.id == *id))
            .cloned()
            .collect(),
        empty: members.is_empty(),
        ..Plan::default()
    };
    plan.gone.sort();
    plan.gone.dedup();

    let mut in_service: Vec<&Member> = Vec::new();
    for member in members {
        if group.is_leaving(&member.id) {
            continue;
        }
        match unhealthy(group, member, now) {
            Some(why) => plan.leave.push(Leaving {
                instance_id: member.id.clone(),
                since: now,
                cause: format!("An instance was taken out of service in response to {why}."),
                unhealthy: true,
            }),
            None => in_service.push(member),
        }
    }

    let count = u32::try_from(in_service.len()).unwrap_or(u32::MAX);
    let desired = group.desired_capacity;
    if count < desired {
        let wanted = usize::try_from(desired - count).unwrap_or(usize::MAX).min(MAX_LAUNCHES_PER_PASS);
        plan.launch = subnets_for(group, &in_service, wanted);
        plan.launch_from = count;
    } else if count > desired {
        let surplus = usize::try_from(count - desired).unwrap_or(usize::MAX);
        let cause = if group.deleting {
            "An instance was taken out of service because the group is being deleted.".to_owned()
        } else {
            format!(
                "An instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from {count} to {desired}."
            )
        };
        let victims = scale_in_order(group, &in_service);
        for victim in victims.into_iter().take(surplus) {
            plan.leave.push(Leaving {
                instance_id: victim.id.clone(),
                since: now,
                cause: cause.clone(),
                unhealthy: false,
            });
            in_service.retain(|m| m.id != victim.id);
        }
    }

    if !group.target_group_arns.is_empty() {
        plan.register = in_service
            .iter()
            .filter(|m| m.state == InstanceState::Running && !m.registered_in_all)
            .map(|m| m.id.clone())
            .collect();
    }

    let leaving = members
        .iter()
        .filter(|m| group.is_leaving(&m.id) || plan.leave.iter().any(|l| l.instance_id == m.id));
    for member in leaving {
        if member.registered_in_any {
            plan.deregister.push(member.id.clone());
        }
        // A running instance finishes what it serves first; one not running has nothing
        // to finish.
        let drained =
            member.state != InstanceState::Running || (!member.registered_in_any && !member.draining);
        let ending = matches!(member.state, InstanceState::ShuttingDown | InstanceState::Terminated);
        if drained && !ending {
            plan.terminate.push(member.id.clone());
        }
    }
    plan
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::autoscaling::model::TemplateRef;
    use crate::daemon::templates::VersionSpec;

    /// A group of ELB health (grace 60 s) over two subnets and one target group.
    pub(crate) fn group(desired: u32) -> Group {
        Group {
            name: "web".into(),
            arn: String::new(),
            created: 0,
            template: TemplateRef { id: "lt-1".into(), name: "web".into(), version: VersionSpec::Latest },
            min_size: 0,
            max_size: 10,
            desired_capacity: desired,
            subnets: vec!["subnet-a".into(), "subnet-b".into()],
            target_group_arns: vec!["tg".into()],
            health_check_type: HealthCheckType::Elb,
            health_check_grace_seconds: 60,
            default_instance_warmup: None,
            new_instances_protected_from_scale_in: false,
            protected: BTreeSet::new(),
            leaving: Vec::new(),
            deleting: false,
            policies: Vec::new(),
            scheduled: Vec::new(),
        }
    }

    /// A running member of template `lt-1`, registered and healthy.
    pub(crate) fn member(id: &str, version: u32, launched: u64, subnet: &str) -> Member {
        Member {
            id: id.into(),
            state: InstanceState::Running,
            launch_time: launched,
            template_id: Some("lt-1".into()),
            version: Some(version),
            subnet: subnet.into(),
            vcpus: 1,
            cpu_seconds: None,
            registered_in_all: true,
            registered_in_any: true,
            healthy_in_all: true,
            draining: false,
            elb_unhealthy: false,
        }
    }

    fn leaving_ids(plan: &Plan) -> Vec<&str> {
        plan.leave.iter().map(|l| l.instance_id.as_str()).collect()
    }

    #[test]
    fn a_short_group_launches_into_its_emptiest_subnets() {
        let members = [member("i-1", 1, 0, "subnet-a")];
        let plan = plan(&group(4), &members, 100);
        assert_eq!(plan.launch, ["subnet-b", "subnet-a", "subnet-b"]);
        assert_eq!(plan.launch_from, 1);
        assert!(plan.leave.is_empty() && plan.terminate.is_empty());
        let many = super::plan(&group(50), &[], 0);
        assert_eq!(many.launch.len(), MAX_LAUNCHES_PER_PASS, "a pass launches a bounded number");
    }

    #[test]
    fn scale_in_takes_unprotected_then_oldest_version_then_oldest_instance() {
        let mut g = group(2);
        g.protected.insert("i-old".into());
        let members = [
            member("i-old", 1, 0, "subnet-a"),
            member("i-v1-late", 1, 50, "subnet-a"),
            member("i-v2-early", 2, 10, "subnet-b"),
            member("i-v1-early", 1, 20, "subnet-b"),
            member("i-v2-late", 2, 60, "subnet-a"),
        ];
        let plan = plan(&g, &members, 100);
        assert_eq!(leaving_ids(&plan), ["i-v1-early", "i-v1-late", "i-v2-early"]);
        assert!(plan.launch.is_empty());
        let mut deregistered = plan.deregister.clone();
        deregistered.sort();
        assert_eq!(deregistered, ["i-v1-early", "i-v1-late", "i-v2-early"], "each is deregistered first");
        assert!(plan.terminate.is_empty(), "running and still registered: not yet");

        g.protected.extend(members.iter().map(|m| m.id.clone()));
        assert!(super::plan(&g, &members, 100).leave.is_empty(), "protected instances are never scaled in");
    }

    #[test]
    fn unhealthy_members_are_replaced_elb_health_only_after_the_grace_period() {
        let g = group(3);
        let mut stopped = member("i-stopped", 1, 0, "subnet-a");
        stopped.state = InstanceState::Stopped;
        let mut failing = member("i-failing", 1, 0, "subnet-b");
        failing.elb_unhealthy = true;
        let mut new = member("i-new", 1, 90, "subnet-b");
        new.elb_unhealthy = true;
        let members = [stopped, failing, new];
        let plan = plan(&g, &members, 100);
        assert_eq!(leaving_ids(&plan), ["i-stopped", "i-failing"], "i-new is within its grace period");
        assert!(plan.leave[0].cause.contains("EC2 health check"));
        assert!(plan.leave[1].cause.contains("ELB"));
        assert_eq!(plan.launch.len(), 2, "replaced in the same pass");
        assert_eq!(plan.terminate, ["i-stopped"], "a stopped instance has nothing to drain");

        let mut ec2_only = g.clone();
        ec2_only.health_check_type = HealthCheckType::Ec2;
        assert_eq!(leaving_ids(&super::plan(&ec2_only, &members, 100)), ["i-stopped"]);
    }

    #[test]
    fn leaving_members_drain_then_terminate_and_are_forgotten_once_gone() {
        let mut g = group(1);
        for id in ["i-registered", "i-draining", "i-drained", "i-gone"] {
            g.leaving.push(Leaving {
                instance_id: id.into(),
                since: 0,
                cause: String::new(),
                unhealthy: false,
            });
        }
        let mut draining = member("i-draining", 1, 0, "subnet-a");
        (draining.registered_in_any, draining.registered_in_all, draining.draining) = (false, false, true);
        let mut drained = member("i-drained", 1, 0, "subnet-a");
        (drained.registered_in_any, drained.registered_in_all) = (false, false);
        let members =
            [member("i-keep", 1, 0, "subnet-a"), member("i-registered", 1, 0, "subnet-a"), draining, drained];
        let plan = plan(&g, &members, 100);
        assert_eq!(plan.deregister, ["i-registered"]);
        assert_eq!(plan.terminate, ["i-drained"]);
        assert_eq!(plan.gone, ["i-gone"]);
        assert!(plan.launch.is_empty() && plan.leave.is_empty(), "leaving members do not count, i-keep does");
    }

    #[test]
    fn running_members_join_the_target_groups() {
        let mut pending = member("i-pending", 1, 0, "subnet-a");
        pending.state = InstanceState::Pending;
        (pending.registered_in_all, pending.registered_in_any) = (false, false);
        let mut new = member("i-new", 1, 0, "subnet-b");
        (new.registered_in_all, new.registered_in_any) = (false, false);
        let plan = plan(&group(2), &[pending, new], 0);
        assert_eq!(plan.register, ["i-new"], "registered once running");
        let mut no_groups = group(2);
        no_groups.target_group_arns.clear();
        assert!(super::plan(&no_groups, &[member("i-1", 1, 0, "subnet-a")], 0).register.is_empty());
    }

    #[test]
    fn a_group_being_deleted_lets_everything_go() {
        let mut g = group(0);
        g.deleting = true;
        g.protected.insert("i-1".into());
        let plan = plan(&g, &[member("i-1", 1, 0, "subnet-a")], 0);
        assert_eq!(leaving_ids(&plan), ["i-1"], "protection does not keep an instance of a deleted group");
        assert!(plan.leave[0].cause.contains("being deleted"));
        assert!(!plan.empty);
    }
}
