//! An environment's health as Beanstalk's basic health reports it: a colour from what its
//! target group's health checks say of its instances, and the causes in words.

use super::environment::{Environment, Status};
use crate::balancer::TargetHealthView;
use crate::lb::config::TargetHealth;

/// Beanstalk's colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// Every instance passes.
    Green,
    /// Some fail.
    Yellow,
    /// None serves.
    Red,
    /// Not known: launching, updating or terminating.
    Grey,
}

impl Colour {
    /// AWS's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Green => "Green",
            Self::Yellow => "Yellow",
            Self::Red => "Red",
            Self::Grey => "Grey",
        }
    }

    /// The enhanced-health status word for it.
    pub fn status(self) -> &'static str {
        match self {
            Self::Green => "Ok",
            Self::Yellow => "Warning",
            Self::Red => "Severe",
            Self::Grey => "Pending",
        }
    }
}

/// An environment's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The colour.
    pub colour: Colour,
    /// Why, in words (none when Green).
    pub causes: Vec<String>,
    /// Instances registered and not draining.
    pub instances: u32,
    /// Those passing their health checks.
    pub healthy: u32,
}

impl Health {
    /// `env`'s health, given its target group's `targets`.
    pub fn of(env: &Environment, targets: &[TargetHealthView]) -> Self {
        let serving: Vec<&TargetHealthView> =
            targets.iter().filter(|t| t.state != TargetHealth::Draining).collect();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let instances = count(serving.len());
        let healthy = count(serving.iter().filter(|t| t.state == TargetHealth::Healthy).count());
        let mut causes = Vec::new();
        let colour = match env.status {
            Status::Launching => {
                causes.push("The environment is launching.".into());
                Colour::Grey
            }
            Status::Terminating | Status::Terminated => {
                causes.push("The environment is terminating.".into());
                Colour::Grey
            }
            Status::Updating => {
                causes.push("A deployment is in progress.".into());
                Colour::Grey
            }
            Status::Ready if instances == 0 => {
                causes.push("No instance is registered with the load balancer.".into());
                Colour::Red
            }
            Status::Ready if healthy == instances => Colour::Green,
            Status::Ready => {
                causes
                    .push(format!("{} of {instances} instances failing health checks.", instances - healthy));
                if healthy == 0 {
                    Colour::Red
                } else {
                    Colour::Yellow
                }
            }
        };
        Self { colour, causes, instances, healthy }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environments::environment::Made;

    fn env(status: Status) -> Environment {
        Environment {
            id: "e-1".into(),
            name: "web".into(),
            arn: String::new(),
            application: "app".into(),
            version_label: "v1".into(),
            description: String::new(),
            settings: crate::environments::environment::tests::settings(),
            port: 8000,
            cname: String::new(),
            status,
            failure: None,
            made: Made::default(),
            deployment: None,
            created: 0,
            updated: 0,
        }
    }

    fn target(id: &str, state: TargetHealth) -> TargetHealthView {
        TargetHealthView {
            instance_id: id.into(),
            port: 5000,
            state,
            reason: None,
            description: String::new(),
        }
    }

    #[test]
    fn colours_follow_the_health_checks() {
        use TargetHealth::*;
        let ready = env(Status::Ready);
        let both = [target("i-1", Healthy), target("i-2", Healthy), target("i-3", Draining)];
        assert_eq!(Health::of(&ready, &both).colour, Colour::Green);
        let one = [target("i-1", Healthy), target("i-2", Unhealthy)];
        let health = Health::of(&ready, &one);
        assert_eq!(
            (health.colour, health.causes[0].as_str()),
            (Colour::Yellow, "1 of 2 instances failing health checks.")
        );
        assert_eq!(Health::of(&ready, &[target("i-2", Unhealthy)]).colour, Colour::Red);
        assert_eq!(Health::of(&ready, &[]).colour, Colour::Red);
        assert_eq!(Health::of(&env(Status::Launching), &both).colour, Colour::Grey);
    }
}
