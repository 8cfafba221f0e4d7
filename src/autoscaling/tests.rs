//! The controller over a real database, with fakes of the instances and the target groups.

use std::path::Path;
use std::time::{Duration, Instant};

use super::model::{HealthCheckType, Metric, ScalingPolicy};
use super::refresh::{Preferences, RefreshStatus};
use super::schedule::ScheduledAction;
use super::targets::fake::FakeTargetGroups;
use super::*;
use crate::daemon::compute::fake::FakeCompute;
use crate::state::db::Database;

const TG: &str = "arn:tg";

struct World {
    compute: Arc<FakeCompute>,
    targets: Arc<FakeTargetGroups>,
    groups: AutoScalingGroups,
    template: String,
    db: Arc<Database>,
}

impl World {
    fn new(dir: &Path) -> Self {
        let db = Arc::new(Database::open(&dir.join("nuage.db")).unwrap());
        let compute = Arc::new(FakeCompute::default());
        let targets = Arc::new(FakeTargetGroups::default());
        targets.add(TG);
        let template = compute.add_template("web", &["ami-1", "ami-2"]);
        let groups = AutoScalingGroups::new(db.clone(), compute.clone(), targets.clone(), "r");
        Self { compute, targets, groups, template, db }
    }

    /// The same database and instances seen by a new service, as after a restart.
    fn restarted(&self) -> AutoScalingGroups {
        AutoScalingGroups::new(self.db.clone(), self.compute.clone(), self.targets.clone(), "r")
    }

    fn create(&self, min: u32, max: u32, desired: u32, version: VersionSpec) -> Group {
        let spec = GroupSpec {
            name: "web".into(),
            min_size: min,
            max_size: max,
            desired_capacity: Some(desired),
            subnets: vec!["subnet-a".into(), "subnet-b".into()],
            target_group_arns: vec![TG.into()],
            health_check_type: HealthCheckType::Elb,
            ..GroupSpec::default()
        };
        self.groups.create_group(&spec, &Which::Id(self.template.clone()), version).unwrap()
    }

    fn members(&self) -> Vec<Tagged<InstanceRecord>> {
        self.compute.instances_tagged(GROUP_TAG, Some("web")).unwrap()
    }

    fn ids(&self) -> Vec<String> {
        self.members().into_iter().map(|m| m.record.id).collect()
    }

    fn passes(&self, n: usize) {
        for _ in 0..n {
            self.groups.reconcile().unwrap();
        }
    }

    fn descriptions(&self) -> Vec<String> {
        let mut found: Vec<String> =
            self.groups.activities(Some("web")).unwrap().into_iter().map(|a| a.description).collect();
        found.reverse();
        found
    }
}

#[test]
fn a_group_launches_its_desired_capacity_tagged_and_registers_it() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(1, 4, 3, VersionSpec::Latest);
    world.passes(2);
    let members = world.members();
    assert_eq!(members.len(), 3);
    for member in &members {
        let tag = |key: &str| member.tags.iter().find(|t| t.key == key).map(|t| t.value.clone());
        assert_eq!(tag(GROUP_TAG).as_deref(), Some("web"));
        assert_eq!(tag(TEMPLATE_VERSION_TAG).as_deref(), Some("2"), "$Latest");
        assert_eq!(member.record.image_id, "ami-2");
    }
    let subnets: Vec<&str> = members.iter().map(|m| m.record.subnet_id.as_str()).collect();
    assert_eq!(subnets, ["subnet-a", "subnet-b", "subnet-a"], "spread over the subnets");
    let mut registered = world.targets.registered(TG);
    registered.sort();
    let mut ids = world.ids();
    ids.sort();
    assert_eq!(registered, ids);
    assert_eq!(world.descriptions().len(), 3);
    assert!(world.descriptions().iter().all(|d| d.starts_with("Launching a new EC2 instance: i-")));

    world.passes(3);
    assert_eq!(world.members().len(), 3, "a level-triggered loop launches nothing more");
    // A service started afresh on the same record counts the same instances.
    world.restarted().reconcile().unwrap();
    assert_eq!(world.members().len(), 3, "nothing is launched twice");
}

#[test]
fn stopped_and_unhealthy_instances_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(2, 4, 2, VersionSpec::Latest);
    world.passes(2);
    let ids = world.ids();
    world.compute.set_state(&ids[0], InstanceState::Stopped);
    world.targets.set_health(TG, &ids[1], TargetHealth::Unhealthy);
    world.passes(1);
    let live = world.ids();
    assert!(!live.contains(&ids[0]), "the stopped one is terminated at once");
    assert!(live.contains(&ids[1]), "the unhealthy one drains first");
    assert_eq!(live.len(), 3, "both replaced; one still draining");
    let view = world.groups.describe(&[]).unwrap().remove(0);
    let states: Vec<(&str, &str)> = view
        .instances
        .iter()
        .filter(|i| i.instance_id == ids[1])
        .map(|i| (i.lifecycle_state, i.health_status))
        .collect();
    assert_eq!(states, [("Terminating", "Unhealthy")]);

    world.targets.finish_draining();
    world.passes(2);
    let live = world.ids();
    assert_eq!(live.len(), 2);
    assert!(!live.contains(&ids[1]));
    assert!(world.groups.read().unwrap().groups[0].leaving.is_empty(), "gone instances are forgotten");
    let activities = world.groups.activities(Some("web")).unwrap();
    let causes: Vec<&str> = activities.iter().map(|a| a.cause.as_str()).collect();
    assert!(causes.iter().any(|c| c.contains("EC2 health check")), "{causes:?}");
    assert!(causes.iter().any(|c| c.contains("ELB system health check")), "{causes:?}");
}

#[test]
fn scale_in_lets_the_oldest_version_go_after_draining() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(0, 4, 1, VersionSpec::Number(1));
    world.passes(2);
    let old = world.ids().remove(0);
    let newer = Some((Which::Name("web".into()), VersionSpec::Latest));
    world
        .groups
        .update_group("web", newer, GroupUpdate { desired_capacity: Some(2), ..GroupUpdate::default() })
        .unwrap();
    world.passes(2);
    assert_eq!(world.ids().len(), 2);
    world.groups.set_desired_capacity("web", 1).unwrap();
    world.passes(1);
    assert!(world.targets.registered(TG).iter().all(|id| *id != old), "deregistered first");
    assert!(world.ids().contains(&old), "still draining");
    world.targets.finish_draining();
    world.passes(1);
    let left = world.ids();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], old, "version 1 went, version 2 stays");
}

#[test]
fn a_crash_after_deciding_to_let_go_finishes_the_job_without_launching_more() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(0, 4, 2, VersionSpec::Latest);
    world.passes(2);
    let ids = world.ids();
    // As if a daemon recorded the decision and died before acting on it.
    let leaving = [model::Leaving {
        instance_id: ids[0].clone(),
        since: now(),
        cause: "scale in".into(),
        unhealthy: false,
    }];
    world
        .groups
        .change(|a| a.set_desired_capacity("web", 1).and_then(|()| a.start_leaving("web", &leaving)))
        .unwrap();
    let restarted = world.restarted();
    restarted.reconcile().unwrap();
    world.targets.finish_draining();
    restarted.reconcile().unwrap();
    restarted.reconcile().unwrap();
    assert_eq!(world.ids(), [ids[1].clone()]);
}

#[test]
fn terminating_an_instance_replaces_it_unless_the_capacity_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(1, 4, 2, VersionSpec::Latest);
    world.passes(2);
    let ids = world.ids();
    assert_eq!(world.groups.terminate_instance(&ids[0], false).unwrap(), "web");
    world.passes(1);
    world.targets.finish_draining();
    world.passes(2);
    assert_eq!(world.ids().len(), 2, "replaced");
    assert!(!world.ids().contains(&ids[0]));
    world.groups.terminate_instance(&ids[1], true).unwrap();
    world.passes(1);
    world.targets.finish_draining();
    world.passes(2);
    assert_eq!(world.ids().len(), 1);
    assert_eq!(world.groups.read().unwrap().groups[0].desired_capacity, 1);
    let last = world.ids().remove(0);
    let err = world.groups.terminate_instance(&last, true).unwrap_err();
    assert!(matches!(err, AutoScalingError::Validation(_)), "at the min: {err}");
    let err = world.groups.terminate_instance("i-00000000000000000", false).unwrap_err();
    assert!(err.to_string().contains("not in an Auto Scaling group"), "{err}");
}

#[test]
fn protected_instances_survive_scale_in() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(0, 4, 2, VersionSpec::Latest);
    world.passes(2);
    let ids = world.ids();
    world.groups.set_protection("web", &ids, true).unwrap();
    let err = world.groups.set_protection("web", &["i-00000000000000000".into()], true).unwrap_err();
    assert!(err.to_string().contains("not in Auto Scaling group"), "{err}");
    world.groups.set_desired_capacity("web", 0).unwrap();
    world.passes(2);
    assert_eq!(world.ids().len(), 2, "both protected");
    world.groups.set_protection("web", &ids[..1], false).unwrap();
    world.passes(1);
    world.targets.finish_draining();
    world.passes(1);
    assert_eq!(world.ids(), [ids[1].clone()]);
}

#[test]
fn a_group_with_instances_is_deleted_only_by_force() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(1, 2, 2, VersionSpec::Latest);
    world.passes(2);
    let err = world.groups.delete_group("web", false).unwrap_err();
    assert!(matches!(err, AutoScalingError::ResourceInUse(_)), "{err}");
    assert_eq!(world.groups.read().unwrap().groups.len(), 1);
    world.groups.delete_group("web", true).unwrap();
    world.passes(1);
    world.targets.finish_draining();
    world.passes(2);
    assert!(world.ids().is_empty());
    assert!(world.groups.read().unwrap().groups.is_empty(), "the group goes once its instances have");
    let err = world.groups.set_desired_capacity("web", 1).unwrap_err();
    assert!(matches!(err, AutoScalingError::GroupNotFound(_)), "{err}");
}

#[test]
fn bad_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    let spec = |min, max, desired, tgs: &[&str]| GroupSpec {
        name: "web".into(),
        min_size: min,
        max_size: max,
        desired_capacity: desired,
        target_group_arns: tgs.iter().map(|t| (*t).to_owned()).collect(),
        ..GroupSpec::default()
    };
    let template = Which::Id(world.template.clone());
    let refused = [
        world.groups.create_group(&spec(2, 1, None, &[]), &template, VersionSpec::Latest),
        world.groups.create_group(&spec(0, 2, Some(3), &[]), &template, VersionSpec::Latest),
        world.groups.create_group(&spec(0, 2, None, &["arn:nope"]), &template, VersionSpec::Latest),
        world.groups.create_group(&spec(0, 2, None, &[]), &Which::Name("nope".into()), VersionSpec::Latest),
        world.groups.create_group(&spec(0, 2, None, &[]), &template, VersionSpec::Number(3)),
    ];
    for result in refused {
        assert!(matches!(result, Err(AutoScalingError::Validation(_))), "{result:?}");
    }
    assert_eq!(world.groups.read().unwrap(), AutoScaling::default());
    world.passes(1);
    assert!(world.compute.live_instances().unwrap().is_empty());
}

fn requests_policy(name: &str, target: f64, cooldown: u32) -> ScalingPolicy {
    ScalingPolicy {
        name: name.into(),
        arn: String::new(),
        metric: Metric::RequestCountPerTarget(TG.into()),
        target_value: target,
        disable_scale_in: false,
        estimated_instance_warmup: Some(0),
        scale_in_cooldown: cooldown,
    }
}

#[test]
fn target_tracking_scales_out_at_once_and_in_after_the_cooldown_when_all_policies_agree() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(1, 4, 1, VersionSpec::Latest);
    world.passes(2);
    let first = world.ids().remove(0);
    world.groups.put_policy("web", requests_policy("requests", 60.0, 30)).unwrap();
    let cpu = ScalingPolicy { metric: Metric::AverageCpuUtilization, ..requests_policy("cpu", 50.0, 30) };
    world.groups.put_policy("web", cpu).unwrap();
    let desired = || world.groups.read().unwrap().groups[0].desired_capacity;
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    world.targets.set_requests(TG, &[(&first, 0)]);
    world.groups.reconcile_at(at(0)).unwrap();
    world.targets.set_requests(TG, &[(&first, 100)]);
    world.groups.reconcile_at(at(5)).unwrap();
    assert_eq!(desired(), 1, "5 s of samples are too few to act on");
    world.groups.reconcile_at(at(10)).unwrap();
    assert_eq!(desired(), 4, "600 requests a minute at 60 per target: as many as the max allows");
    let last = world.groups.activities(Some("web")).unwrap().remove(0);
    assert_eq!(last.description, "Setting the desired capacity to 4");
    assert!(
        last.cause.contains("ALBRequestCountPerTarget at 600.0 (target 60) and asked for 10"),
        "{}",
        last.cause
    );
    for s in 11..14 {
        world.groups.reconcile_at(at(s)).unwrap();
    }
    assert_eq!(world.ids().len(), 4);

    // The load stops: the requests policy asks for less once the old requests leave the
    // window, but the CPU policy (no reading: no CPU figures) holds.
    for s in 14..120 {
        world.groups.reconcile_at(at(s)).unwrap();
    }
    assert_eq!(desired(), 4, "one policy holds");
    world.groups.delete_policy("web", "cpu").unwrap();
    world.groups.reconcile_at(at(120)).unwrap();
    assert_eq!(desired(), 1, "below its target for longer than the cooldown: down to the min");

    let err = world.groups.put_policy("web", requests_policy("bad", 0.0, 30)).unwrap_err();
    assert!(matches!(err, AutoScalingError::Validation(_)), "{err}");
    let elsewhere = ScalingPolicy {
        metric: Metric::RequestCountPerTarget("arn:other".into()),
        ..requests_policy("x", 1.0, 0)
    };
    assert!(world.groups.put_policy("web", elsewhere).is_err(), "not one of the group's target groups");
    assert_eq!(world.groups.read().unwrap().groups[0].policies.len(), 1);
}

#[test]
fn cpu_tracking_counts_only_warm_instances() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(1, 6, 2, VersionSpec::Latest);
    world.passes(2);
    let ids = world.ids();
    let cpu = ScalingPolicy { metric: Metric::AverageCpuUtilization, ..requests_policy("cpu", 50.0, 30) };
    world.groups.put_policy("web", cpu).unwrap();
    let start = Instant::now();
    for (s, seconds) in [(0, 0.0), (10, 9.0)] {
        for id in &ids {
            world.compute.set_cpu_seconds(id, seconds);
        }
        world.groups.reconcile_at(start + Duration::from_secs(s)).unwrap();
    }
    // 90 % on each of 2 warm instances at a 50 % target: 4.
    assert_eq!(world.groups.read().unwrap().groups[0].desired_capacity, 4);
}

fn scheduled(name: &str, next_run: u64, recurrence: Option<&str>) -> ScheduledAction {
    ScheduledAction {
        name: name.into(),
        arn: String::new(),
        start_time: None,
        end_time: None,
        recurrence: recurrence.map(str::to_owned),
        min_size: None,
        max_size: None,
        desired_capacity: Some(3),
        next_run: Some(next_run),
    }
}

#[test]
fn scheduled_actions_fire_once_each_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(1, 4, 1, VersionSpec::Latest);
    let past = now() - 5;
    // Due already, as if the daemon had been down when they came.
    world.groups.change(|a| a.put_scheduled_action("web", scheduled("grow", past, None))).unwrap();
    let every_minute = scheduled("minutely", past, Some("* * * * *"));
    world.groups.change(|a| a.put_scheduled_action("web", every_minute.clone())).unwrap();
    let too_big = ScheduledAction { min_size: Some(5), ..scheduled("too-big", past, None) };
    world.groups.change(|a| a.put_scheduled_action("web", too_big.clone())).unwrap();
    world.passes(1);
    world.restarted().reconcile().unwrap();
    world.passes(2);
    let group = world.groups.read().unwrap().groups.remove(0);
    assert_eq!((group.min_size, group.max_size, group.desired_capacity), (1, 4, 3));
    assert_eq!(world.ids().len(), 3);
    let left: Vec<&str> = group.scheduled.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(left, ["minutely"], "one-off actions go once they ran");
    assert!(group.scheduled[0].next_run.unwrap() > now(), "the recurring one waits for its next minute");
    let activities = world.groups.activities(Some("web")).unwrap();
    let executed: Vec<&Activity> =
        activities.iter().filter(|a| a.description.starts_with("Executing scheduled action")).collect();
    assert_eq!(executed.len(), 3, "each fired once: {executed:?}");
    let refused = executed.iter().find(|a| a.description.ends_with("too-big")).unwrap();
    assert_eq!(refused.status, ActivityStatus::Failed);
    assert!(refused.status_message.contains("min size 5"), "{}", refused.status_message);
    let grew = executed.iter().find(|a| a.description.ends_with("grow")).unwrap();
    assert!(grew.cause.contains("changing the desired capacity from 1 to 3"), "{}", grew.cause);

    // Through the service: checked, listed, deleted.
    let in_the_past =
        ScheduledAction { start_time: Some(now() - 60), next_run: None, ..scheduled("late", 0, None) };
    assert!(matches!(
        world.groups.put_scheduled_action("web", in_the_past),
        Err(AutoScalingError::Validation(_))
    ));
    let nightly = ScheduledAction { next_run: None, ..scheduled("nightly", 0, Some("0 2 * * *")) };
    assert!(matches!(
        world.groups.put_scheduled_action("nope", nightly.clone()),
        Err(AutoScalingError::GroupNotFound(_))
    ));
    world.groups.put_scheduled_action("web", nightly).unwrap();
    let listed = world.groups.scheduled_actions(Some("web")).unwrap();
    let nightly = listed.iter().find(|(_, a)| a.name == "nightly").unwrap();
    assert!(
        nightly.1.arn.contains(":scheduledUpdateGroupAction:")
            && nightly.1.next_run.unwrap() % 86_400 == 7200
    );
    world.groups.delete_scheduled_action("web", "nightly").unwrap();
    assert!(world.groups.delete_scheduled_action("web", "nightly").is_err());
}

/// Passes until `done` or 40 passes, draining what leaves; checks after each that at least
/// `min_ready` targets stay registered.
fn roll(world: &World, min_ready: usize, done: impl Fn() -> bool) {
    for _ in 0..40 {
        world.passes(1);
        assert!(
            world.targets.registered(TG).len() >= min_ready,
            "too few in service: {:?}",
            world.targets.registered(TG)
        );
        world.targets.finish_draining();
        if done() {
            return;
        }
    }
    panic!("not done after 40 passes: {:?}", world.groups.read().unwrap());
}

fn refresh_status(world: &World) -> RefreshStatus {
    world.groups.refreshes("web", &[]).unwrap()[0].status
}

fn images(world: &World) -> Vec<String> {
    let mut images: Vec<String> = world.members().into_iter().map(|m| m.record.image_id).collect();
    images.sort();
    images
}

#[test]
fn an_instance_refresh_rolls_the_group_batch_by_batch() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(1, 4, 2, VersionSpec::Number(1));
    world.passes(2);
    assert_eq!(images(&world), ["ami-1", "ami-1"]);
    let preferences =
        Preferences { min_healthy_percentage: 50, instance_warmup: Some(0), ..Preferences::default() };
    let to_2 = Some((Which::Id(world.template.clone()), VersionSpec::Number(2)));
    let id = world.groups.start_refresh("web", preferences.clone(), to_2.clone()).unwrap();
    let err = world.groups.start_refresh("web", preferences.clone(), to_2).unwrap_err();
    assert!(matches!(err, AutoScalingError::RefreshInProgress(_)), "{err}");
    let refresh = world.groups.refreshes("web", std::slice::from_ref(&id)).unwrap().remove(0);
    assert_eq!(
        (refresh.status, refresh.total, refresh.percentage_complete()),
        (RefreshStatus::InProgress, 2, 0)
    );

    roll(&world, 1, || refresh_status(&world) != RefreshStatus::InProgress);
    assert_eq!(refresh_status(&world), RefreshStatus::Successful);
    assert_eq!(images(&world), ["ami-2", "ami-2"]);
    let group = world.groups.read().unwrap().groups.remove(0);
    assert_eq!(
        group.template.version,
        VersionSpec::Number(2),
        "the desired configuration is the group's now"
    );
    assert_eq!(world.groups.refreshes("web", &[]).unwrap()[0].percentage_complete(), 100);
    let causes: Vec<String> =
        world.groups.activities(Some("web")).unwrap().into_iter().map(|a| a.cause).collect();
    assert!(causes.iter().any(|c| c.contains(&format!("instance refresh {id}"))), "{causes:?}");

    // Without a desired configuration every instance is replaced, from the same version.
    let before = world.ids();
    world.groups.start_refresh("web", preferences, None).unwrap();
    roll(&world, 1, || refresh_status(&world) != RefreshStatus::InProgress);
    assert_eq!(refresh_status(&world), RefreshStatus::Successful);
    assert!(world.ids().iter().all(|id| !before.contains(id)), "all replaced");
    let err = world.groups.rollback_refresh("web").unwrap_err();
    assert!(matches!(err, AutoScalingError::NoActiveRefresh(_)), "{err}");
}

#[test]
fn a_new_version_failing_its_health_checks_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(1, 4, 2, VersionSpec::Number(1));
    world.passes(2);
    let old = world.ids();
    let preferences = Preferences {
        min_healthy_percentage: 50,
        instance_warmup: Some(0),
        auto_rollback: true,
        ..Preferences::default()
    };
    let to_2 = Some((Which::Id(world.template.clone()), VersionSpec::Number(2)));
    world.groups.start_refresh("web", preferences, to_2).unwrap();
    // Every instance of version 2 fails its health checks once registered.
    let fail_new = || {
        for m in world.members().into_iter().filter(|m| m.record.image_id == "ami-2") {
            world.targets.set_health(TG, &m.record.id, TargetHealth::Unhealthy);
        }
    };
    for _ in 0..6 {
        world.passes(1);
        fail_new();
        world.targets.finish_draining();
    }
    let refresh = world.groups.refreshes("web", &[]).unwrap().remove(0);
    assert!(refresh.status_reason.contains("failed its health check"), "{refresh:?}");
    roll(&world, 1, || refresh_status(&world) == RefreshStatus::RollbackSuccessful);
    assert_eq!(images(&world), ["ami-1", "ami-1"], "back on version 1");
    assert!(world.ids().contains(&old[1]), "the instance never replaced stays");
    let group = world.groups.read().unwrap().groups.remove(0);
    assert_eq!(group.template.version, VersionSpec::Number(1));
}

#[test]
fn a_cancelled_refresh_replaces_no_more_and_one_without_a_desired_configuration_cannot_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path());
    world.create(1, 4, 3, VersionSpec::Number(1));
    world.passes(2);
    let preferences =
        Preferences { min_healthy_percentage: 60, instance_warmup: Some(0), ..Preferences::default() };
    world.groups.start_refresh("web", preferences, None).unwrap();
    let err = world.groups.rollback_refresh("web").unwrap_err();
    assert!(matches!(err, AutoScalingError::Irreversible(_)), "{err}");
    world.passes(1);
    world.groups.cancel_refresh("web").unwrap();
    assert_eq!(refresh_status(&world), RefreshStatus::Cancelled);
    let err = world.groups.cancel_refresh("web").unwrap_err();
    assert!(matches!(err, AutoScalingError::NoActiveRefresh(_)), "{err}");
    let survivors = world.ids();
    for _ in 0..6 {
        world.passes(1);
        world.targets.finish_draining();
    }
    assert_eq!(world.ids().len(), 3);
    let kept = world.ids().iter().filter(|id| survivors.contains(id)).count();
    assert_eq!(kept, 2, "the one taken before the cancel was replaced, no other");
}
