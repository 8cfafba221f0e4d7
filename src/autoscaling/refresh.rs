//! Instance refresh (`start-instance-refresh`): a group rolled onto a launch template
//! version a batch at a time. Each pass takes out of service as many outdated instances as
//! keeps `MinHealthyPercentage` of the desired capacity ready (running, warmed up, and
//! healthy in every target group); the group's usual reconcile replaces them from the new
//! version. A new instance failing its health check, or failing to launch, fails the
//! refresh, which then rolls back to the version the group had, when asked to.
//!
//! What [`step`] decides is pure; the refresh's record says what is being rolled onto, so a
//! restarted daemon carries on where it was.

use serde::{Deserialize, Serialize};

use super::model::{Group, Leaving, TemplateRef};
use super::plan::{self, Member};
use crate::daemon::templates::VersionSpec;
use crate::state::instance::InstanceState;

/// Refreshes kept per group (the oldest finished go first).
pub const MAX_REFRESHES: usize = 50;
/// AWS's default minimum healthy percentage.
pub const DEFAULT_MIN_HEALTHY_PERCENTAGE: u32 = 90;

/// Where a refresh is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefreshStatus {
    /// Replacing instances.
    InProgress,
    /// Every instance is on the new version.
    Successful,
    /// It failed and was not rolled back.
    Failed,
    /// Stopped by a user: what was replaced stays.
    Cancelled,
    /// Going back to the version the group had.
    RollbackInProgress,
    /// Back on it.
    RollbackSuccessful,
}

impl RefreshStatus {
    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Successful => "Successful",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
            Self::RollbackInProgress => "RollbackInProgress",
            Self::RollbackSuccessful => "RollbackSuccessful",
        }
    }

    /// Still replacing instances.
    pub fn is_active(self) -> bool {
        matches!(self, Self::InProgress | Self::RollbackInProgress)
    }
}

/// How a refresh goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// The share of the desired capacity kept ready, in percent.
    pub min_healthy_percentage: u32,
    /// Seconds a new instance takes before it counts as ready (none: the group's default
    /// instance warmup, else its health check grace period).
    pub instance_warmup: Option<u32>,
    /// Instances already on the new version stay (otherwise every instance is replaced).
    pub skip_matching: bool,
    /// Roll back to the group's version when the refresh fails.
    pub auto_rollback: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            min_healthy_percentage: DEFAULT_MIN_HEALTHY_PERCENTAGE,
            instance_warmup: None,
            skip_matching: false,
            auto_rollback: false,
        }
    }
}

/// One instance refresh of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRefresh {
    /// Its id (a UUID, as AWS gives).
    pub id: String,
    /// The group.
    pub group: String,
    /// Where it is.
    pub status: RefreshStatus,
    /// Why it is there, in words.
    pub status_reason: String,
    /// When it started.
    pub start: u64,
    /// When it ended.
    pub end: Option<u64>,
    /// How it goes.
    pub preferences: Preferences,
    /// The version instances are replaced with, by number.
    pub target: TemplateRef,
    /// The desired configuration as asked (the group's template once it succeeds).
    pub desired: Option<TemplateRef>,
    /// The group's version when it started, by number: what a rollback returns to (none:
    /// no desired configuration was given, so nothing to go back to).
    pub previous: Option<TemplateRef>,
    /// Instances in service at the start, replaced whatever their version (empty with
    /// `skip_matching`).
    pub replace: Vec<String>,
    /// Instances to replace when it (or its rollback) started.
    pub total: u32,
    /// Instances still to replace, as of the last pass.
    pub remaining: u32,
}

impl InstanceRefresh {
    /// How far it is, in percent.
    pub fn percentage_complete(&self) -> u32 {
        match self.status {
            RefreshStatus::Successful | RefreshStatus::RollbackSuccessful => 100,
            _ if self.total == 0 => 0,
            _ => self.total.saturating_sub(self.remaining).saturating_mul(100) / self.total,
        }
    }

    /// Whether `member` still has to be replaced.
    fn outdated(&self, member: &Member) -> bool {
        let version = match self.target.version {
            VersionSpec::Number(n) => Some(n),
            _ => None,
        };
        self.replace.contains(&member.id)
            || member.template_id.as_deref() != Some(self.target.id.as_str())
            || member.version != version
    }

    /// Of `serving`, those it still has to replace: outdated and not protected (protected
    /// instances are left as they are, AWS's "Ignore").
    fn to_replace<'a>(&self, group: &Group, serving: &[&'a Member]) -> Vec<&'a Member> {
        serving.iter().copied().filter(|m| self.outdated(m) && !group.protected.contains(&m.id)).collect()
    }

    /// The members in service that it still has to replace.
    pub fn outdated_members<'a>(&self, group: &Group, members: &'a [Member], now: u64) -> Vec<&'a Member> {
        self.to_replace(group, &in_service(group, members, &[], now))
    }
}

/// What a refresh does next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Outdated instances to take out of service now.
    pub leave: Vec<Leaving>,
    /// Outdated instances left.
    pub remaining: u32,
    /// It is over.
    pub outcome: Option<Outcome>,
}

/// How a refresh ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every instance is on the target version, ready.
    Done,
    /// It failed, for the reason given.
    Failed(String),
}

/// Members neither leaving nor about to (`leaving_now`) nor unhealthy.
fn in_service<'a>(
    group: &Group,
    members: &'a [Member],
    leaving_now: &[Leaving],
    now: u64,
) -> Vec<&'a Member> {
    members
        .iter()
        .filter(|m| !group.is_leaving(&m.id) && !leaving_now.iter().any(|l| l.instance_id == m.id))
        .filter(|m| plan::unhealthy(group, m, now).is_none())
        .collect()
}

/// The next step of `refresh` for `group`, given its `members` and what the group's own
/// plan takes out of service this pass (`leaving_now`).
pub fn step(
    group: &Group,
    refresh: &InstanceRefresh,
    members: &[Member],
    leaving_now: &[Leaving],
    now: u64,
) -> Step {
    // A replacement of the new version failing its health check fails the refresh.
    let failed = leaving_now.iter().filter(|l| l.unhealthy).find_map(|l| {
        let member = members.iter().find(|m| m.id == l.instance_id)?;
        (!refresh.outdated(member))
            .then(|| format!("instance {} of the new version failed its health check", member.id))
    });
    if let Some(why) = failed {
        return Step { outcome: Some(Outcome::Failed(why)), ..Step::default() };
    }
    let warmup = refresh
        .preferences
        .instance_warmup
        .or(group.default_instance_warmup)
        .unwrap_or(group.health_check_grace_seconds);
    let ready = |m: &Member| {
        m.state == InstanceState::Running
            && m.launch_time.saturating_add(u64::from(warmup)) <= now
            && (group.target_group_arns.is_empty() || m.healthy_in_all)
    };
    let serving = in_service(group, members, leaving_now, now);
    let outdated = refresh.to_replace(group, &serving);
    let remaining = u32::try_from(outdated.len()).unwrap_or(u32::MAX);
    let desired = group.desired_capacity;
    let ready_count = u32::try_from(serving.iter().filter(|m| ready(m)).count()).unwrap_or(u32::MAX);
    if outdated.is_empty() {
        // Done once the replaced instances are gone too.
        let gone = serving.len() == members.len();
        let done = gone && ready_count >= desired && serving.iter().all(|m| ready(m));
        return Step { remaining, outcome: done.then_some(Outcome::Done), ..Step::default() };
    }
    let min_healthy =
        (u64::from(desired) * u64::from(refresh.preferences.min_healthy_percentage)).div_ceil(100);
    let min_healthy = u32::try_from(min_healthy).unwrap_or(u32::MAX);
    // At 100 % (or a group of one) it still goes one at a time, once everything is ready.
    let budget = match ready_count.checked_sub(min_healthy) {
        Some(spare) if spare > 0 => spare,
        _ if ready_count >= desired && desired > 0 => 1,
        _ => 0,
    };
    let cause = match refresh.status {
        RefreshStatus::RollbackInProgress => format!(
            "An instance was taken out of service in response to a rollback of instance refresh {}.",
            refresh.id
        ),
        _ => format!("An instance was taken out of service in response to instance refresh {}.", refresh.id),
    };
    let leave = plan::scale_in_order(group, &outdated)
        .into_iter()
        .take(usize::try_from(budget).unwrap_or(usize::MAX))
        .map(|m| Leaving { instance_id: m.id.clone(), since: now, cause: cause.clone(), unhealthy: false })
        .collect();
    Step { leave, remaining, outcome: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaling::plan::tests::group;

    fn member(id: &str, version: u32, launched: u64) -> Member {
        plan::tests::member(id, version, launched, "")
    }

    fn refresh(percent: u32) -> InstanceRefresh {
        InstanceRefresh {
            id: "r-1".into(),
            group: "web".into(),
            status: RefreshStatus::InProgress,
            status_reason: String::new(),
            start: 100,
            end: None,
            preferences: Preferences {
                min_healthy_percentage: percent,
                instance_warmup: Some(10),
                ..Preferences::default()
            },
            target: TemplateRef { id: "lt-1".into(), name: "web".into(), version: VersionSpec::Number(2) },
            desired: None,
            previous: None,
            replace: Vec::new(),
            total: 2,
            remaining: 2,
        }
    }

    fn taken(step: &Step) -> Vec<&str> {
        step.leave.iter().map(|l| l.instance_id.as_str()).collect()
    }

    #[test]
    fn a_refresh_keeps_the_min_healthy_share_ready() {
        let old = [member("i-a", 1, 0), member("i-b", 1, 5), member("i-c", 1, 10), member("i-d", 1, 15)];
        let step50 = step(&group(4), &refresh(50), &old, &[], 200);
        assert_eq!(taken(&step50), ["i-a", "i-b"], "half of four, oldest first");
        assert_eq!(step50.remaining, 4);
        assert_eq!(taken(&step(&group(4), &refresh(90), &old, &[], 200)), ["i-a"], "one at a time at 90 %");
        assert_eq!(taken(&step(&group(4), &refresh(100), &old, &[], 200)), ["i-a"], "one at a time at 100 %");
        assert_eq!(taken(&step(&group(4), &refresh(0), &old, &[], 200)).len(), 4);

        // One replaced, its replacement still warming: nothing more until it is ready.
        let mut g = group(2);
        g.leaving.push(Leaving {
            instance_id: "i-a".into(),
            since: 200,
            cause: String::new(),
            unhealthy: false,
        });
        let mut warming = member("i-new", 2, 205);
        let members = [member("i-a", 1, 0), member("i-b", 1, 5), warming.clone()];
        assert!(taken(&step(&g, &refresh(50), &members, &[], 210)).is_empty(), "within its warmup");
        assert!(taken(&step(&g, &refresh(50), &members, &[], 215)) == ["i-b"], "warmed up and healthy");
        warming.healthy_in_all = false;
        let members = [member("i-b", 1, 5), warming];
        assert!(
            taken(&step(&g, &refresh(50), &members, &[], 215)).is_empty(),
            "not yet healthy in its target group"
        );
    }

    #[test]
    fn a_refresh_ends_when_everything_is_on_the_new_version_and_ready() {
        let done = [member("i-x", 2, 150), member("i-y", 2, 160)];
        assert_eq!(step(&group(2), &refresh(50), &done, &[], 175).outcome, Some(Outcome::Done));
        assert_eq!(step(&group(2), &refresh(50), &done, &[], 165).outcome, None, "i-y still warming");
        assert_eq!(step(&group(3), &refresh(50), &done, &[], 175).outcome, None, "one short");

        let mut all = refresh(50);
        all.replace = vec!["i-x".into()];
        assert_eq!(
            taken(&step(&group(2), &all, &done, &[], 175)),
            ["i-x"],
            "without SkipMatching every instance goes"
        );

        let mut g = group(2);
        g.protected.insert("i-old".into());
        let members = [member("i-old", 1, 0), member("i-x", 2, 150)];
        assert_eq!(
            step(&g, &refresh(50), &members, &[], 200).outcome,
            Some(Outcome::Done),
            "protected: left alone"
        );
    }

    #[test]
    fn a_new_instance_failing_its_health_check_fails_the_refresh() {
        let mut bad = member("i-new", 2, 150);
        bad.elb_unhealthy = true;
        let members = [member("i-b", 1, 5), bad];
        let failing =
            [Leaving { instance_id: "i-new".into(), since: 200, cause: String::new(), unhealthy: true }];
        let outcome = step(&group(2), &refresh(50), &members, &failing, 200).outcome;
        assert!(matches!(outcome, Some(Outcome::Failed(why)) if why.contains("i-new")));
        let old_failing =
            [Leaving { instance_id: "i-b".into(), since: 200, cause: String::new(), unhealthy: true }];
        let outcome = step(&group(2), &refresh(50), &members, &old_failing, 200).outcome;
        assert_eq!(outcome, None, "an old instance failing is not the new version's fault");
    }
}
