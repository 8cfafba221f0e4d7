//! The one table from the daemon's typed errors to what a caller sees: a gRPC status code
//! and an EC2 error name, which starts the message (`InvalidVolume.NotFound: volume vol-…
//! does not exist`). Lower layers say what went wrong; only this table speaks EC2.
//! Failures of the host or of a VMM are `Internal` or `Unavailable`, never the caller's
//! fault.

use tonic::{Code, Status};

use crate::autoscaling::AutoScalingError;
use crate::balancer::{BalancerError, Cap};
use crate::daemon::keypairs::KeyPairError;
use crate::daemon::quotas::Quota;
use crate::daemon::templates::TemplateError;
use crate::daemon::DaemonError;
use crate::environments::EnvironmentsError;
use crate::net::NetError;
use crate::state::db::StateError;
use crate::store::{Resource, StoreError};

/// The EC2 name of a failure of the host itself.
const INTERNAL_ERROR: &str = "Server.InternalError";

/// The gRPC code and EC2 error name of `error`.
pub fn classify(error: &DaemonError) -> (Code, &'static str) {
    use Code::*;
    match error {
        DaemonError::InvalidParameter(_) => (InvalidArgument, "InvalidParameterValue"),
        DaemonError::IncorrectState(_) => (FailedPrecondition, "IncorrectState"),
        DaemonError::OperationNotPermitted(_) => (FailedPrecondition, "OperationNotPermitted"),
        DaemonError::LimitExceeded(_) => (ResourceExhausted, "LimitExceeded"),
        DaemonError::QuotaExceeded(quota, _) => (
            ResourceExhausted,
            match quota {
                Quota::Volume => "VolumeLimitExceeded",
                Quota::Instance => "InstanceLimitExceeded",
                Quota::Vcpu => "VcpuLimitExceeded",
                Quota::Memory => "InsufficientInstanceCapacity",
            },
        ),
        DaemonError::Internal(_) => (Internal, INTERNAL_ERROR),
        DaemonError::Store(e) => match e {
            StoreError::NotFound { resource: Resource::Image, .. } => (NotFound, "InvalidAMIID.NotFound"),
            StoreError::NotFound { resource: Resource::Volume, .. } => (NotFound, "InvalidVolume.NotFound"),
            StoreError::NotFound { resource: Resource::Snapshot, .. } => {
                (NotFound, "InvalidSnapshot.NotFound")
            }
            StoreError::InUse { resource: Resource::Image, .. } => (FailedPrecondition, "InvalidAMIID.InUse"),
            StoreError::InUse { resource: Resource::Volume, .. } => (FailedPrecondition, "VolumeInUse"),
            StoreError::InUse { resource: Resource::Snapshot, .. } => {
                (FailedPrecondition, "InvalidSnapshot.InUse")
            }
            StoreError::NotFound { resource: Resource::Bundle, .. } => (NotFound, "SourceBundleNotFound"),
            StoreError::InUse { resource: Resource::Bundle, .. } => (FailedPrecondition, "SourceBundleInUse"),
            StoreError::Attached { .. } => (FailedPrecondition, "IncorrectState"),
            StoreError::InvalidParameter(_) => (InvalidArgument, "InvalidParameterValue"),
            StoreError::BadImage(_) => (InvalidArgument, "InvalidImage"),
            StoreError::NoSpace(_) => (ResourceExhausted, "InsufficientStorage"),
            StoreError::Vmm { .. } => (Unavailable, "Unavailable"),
            StoreError::Io { .. } => (Internal, INTERNAL_ERROR),
        },
        DaemonError::State(e) => match e {
            StateError::NotFound(_) => (NotFound, "InvalidInstanceID.NotFound"),
            StateError::WrongState { .. } => (FailedPrecondition, "IncorrectInstanceState"),
            StateError::TagLimitExceeded(_) => (ResourceExhausted, "TagLimitExceeded"),
            StateError::Sqlite(_) | StateError::Corrupt(_) | StateError::File(_) => {
                (Internal, INTERNAL_ERROR)
            }
        },
        DaemonError::Net(e) => match e {
            NetError::NotFound(_) => (NotFound, "InvalidSubnetID.NotFound"),
            NetError::AllocationNotFound(_) => (NotFound, "InvalidAllocationID.NotFound"),
            NetError::InvalidParameter(_) => (InvalidArgument, "InvalidParameterValue"),
            NetError::Conflict(_) => (FailedPrecondition, "InvalidSubnet.Conflict"),
            NetError::AddressInUse(_) => (FailedPrecondition, "InvalidIPAddress.InUse"),
            NetError::DependencyViolation(_) => (FailedPrecondition, "DependencyViolation"),
            NetError::Exhausted(_) => (ResourceExhausted, "InsufficientFreeAddressesInSubnet"),
            NetError::AddressLimitExceeded(_) => (ResourceExhausted, "AddressLimitExceeded"),
            NetError::GroupNotFound(_) => (NotFound, "InvalidGroup.NotFound"),
            NetError::GroupDuplicate(_) => (AlreadyExists, "InvalidGroup.Duplicate"),
            NetError::PermissionDuplicate(_) => (AlreadyExists, "InvalidPermission.Duplicate"),
            NetError::PermissionNotFound(_) => (NotFound, "InvalidPermission.NotFound"),
            NetError::GroupLimit(_) => (ResourceExhausted, "SecurityGroupLimitExceeded"),
            NetError::RulesLimit(_) => (ResourceExhausted, "RulesPerSecurityGroupLimitExceeded"),
            NetError::GroupsPerInstanceLimit(_) => {
                (ResourceExhausted, "SecurityGroupsPerInstanceLimitExceeded")
            }
            NetError::CannotDelete(_) => (FailedPrecondition, "CannotDelete"),
            NetError::Command { .. } | NetError::Io { .. } => (Internal, INTERNAL_ERROR),
        },
        DaemonError::KeyPair(e) => match e {
            KeyPairError::NotFound(_) => (NotFound, "InvalidKeyPair.NotFound"),
            KeyPairError::Duplicate(_) => (AlreadyExists, "InvalidKeyPair.Duplicate"),
            KeyPairError::Format(_) => (InvalidArgument, "InvalidKey.Format"),
        },
        DaemonError::Template(e) => match e {
            TemplateError::IdNotFound(_) => (NotFound, "InvalidLaunchTemplateId.NotFound"),
            TemplateError::NameNotFound(_) => (NotFound, "InvalidLaunchTemplateName.NotFoundException"),
            TemplateError::Duplicate(_) => {
                (AlreadyExists, "InvalidLaunchTemplateName.AlreadyExistsException")
            }
            TemplateError::VersionNotFound(..) => (NotFound, "InvalidLaunchTemplateId.VersionNotFound"),
        },
    }
}

/// The gRPC code and ELB error name of a load balancing `error`.
pub fn classify_balancer(error: &BalancerError) -> (Code, &'static str) {
    use Code::*;
    match error {
        BalancerError::Validation(_) => (InvalidArgument, "ValidationError"),
        BalancerError::LoadBalancerNotFound(_) => (NotFound, "LoadBalancerNotFound"),
        BalancerError::TargetGroupNotFound(_) => (NotFound, "TargetGroupNotFound"),
        BalancerError::ListenerNotFound(_) => (NotFound, "ListenerNotFound"),
        BalancerError::DuplicateLoadBalancerName(_) => (AlreadyExists, "DuplicateLoadBalancerName"),
        BalancerError::DuplicateTargetGroupName(_) => (AlreadyExists, "DuplicateTargetGroupName"),
        BalancerError::DuplicateListener(_) => (AlreadyExists, "DuplicateListener"),
        BalancerError::IncompatibleProtocols(_) => (InvalidArgument, "IncompatibleProtocols"),
        BalancerError::TargetGroupAssociationLimit(_) => (FailedPrecondition, "TargetGroupAssociationLimit"),
        BalancerError::InvalidTarget(_) => (InvalidArgument, "InvalidTarget"),
        BalancerError::ResourceInUse(_) => (FailedPrecondition, "ResourceInUse"),
        BalancerError::AllocationIdNotFound(_) => (NotFound, "AllocationIdNotFound"),
        BalancerError::InvalidConfigurationRequest(_) => (FailedPrecondition, "InvalidConfigurationRequest"),
        BalancerError::TooMany(cap, _) => (
            ResourceExhausted,
            match cap {
                Cap::LoadBalancers => "TooManyLoadBalancers",
                Cap::TargetGroups => "TooManyTargetGroups",
                Cap::Listeners => "TooManyListeners",
                Cap::Targets => "TooManyTargets",
            },
        ),
        BalancerError::Daemon(e) => classify(e),
        BalancerError::State(_) => (Internal, INTERNAL_ERROR),
    }
}

/// The gRPC code and Auto Scaling error name of a group `error`.
pub fn classify_autoscaling(error: &AutoScalingError) -> (Code, &'static str) {
    use Code::*;
    match error {
        AutoScalingError::Validation(_) | AutoScalingError::Daemon(DaemonError::InvalidParameter(_)) => {
            (InvalidArgument, "ValidationError")
        }
        // AWS answers an unknown group with a ValidationError too.
        AutoScalingError::GroupNotFound(_) => (NotFound, "ValidationError"),
        AutoScalingError::AlreadyExists(_) => (AlreadyExists, "AlreadyExists"),
        AutoScalingError::ResourceInUse(_) => (FailedPrecondition, "ResourceInUse"),
        AutoScalingError::ScalingActivityInProgress(_) => (FailedPrecondition, "ScalingActivityInProgress"),
        AutoScalingError::LimitExceeded(_) => (ResourceExhausted, "LimitExceeded"),
        AutoScalingError::RefreshInProgress(_) => (FailedPrecondition, "InstanceRefreshInProgress"),
        AutoScalingError::NoActiveRefresh(_) => (FailedPrecondition, "ActiveInstanceRefreshNotFound"),
        AutoScalingError::Irreversible(_) => (FailedPrecondition, "IrreversibleInstanceRefresh"),
        AutoScalingError::Daemon(e) => classify(e),
        AutoScalingError::State(_) => (Internal, INTERNAL_ERROR),
    }
}

/// The gRPC code and Elastic Beanstalk error name of `error`.
pub fn classify_environments(error: &EnvironmentsError) -> (Code, &'static str) {
    use Code::*;
    match error {
        EnvironmentsError::InvalidParameter(_)
        | EnvironmentsError::Daemon(DaemonError::Store(
            StoreError::BadImage(_) | StoreError::InvalidParameter(_),
        )) => (InvalidArgument, "InvalidParameterValue"),
        EnvironmentsError::TooManyApplications(_) => (ResourceExhausted, "TooManyApplicationsException"),
        EnvironmentsError::TooManyApplicationVersions(_) => {
            (ResourceExhausted, "TooManyApplicationVersionsException")
        }
        EnvironmentsError::TooManyEnvironments(_) => (ResourceExhausted, "TooManyEnvironmentsException"),
        EnvironmentsError::Daemon(e) => classify(e),
        EnvironmentsError::State(_) => (Internal, INTERNAL_ERROR),
    }
}

impl From<EnvironmentsError> for Status {
    fn from(error: EnvironmentsError) -> Self {
        let (code, name) = classify_environments(&error);
        Status::new(code, format!("{name}: {error}"))
    }
}

impl From<AutoScalingError> for Status {
    fn from(error: AutoScalingError) -> Self {
        let (code, name) = classify_autoscaling(&error);
        Status::new(code, format!("{name}: {error}"))
    }
}

impl From<BalancerError> for Status {
    fn from(error: BalancerError) -> Self {
        let (code, name) = classify_balancer(&error);
        Status::new(code, format!("{name}: {error}"))
    }
}

impl From<DaemonError> for Status {
    fn from(error: DaemonError) -> Self {
        let (code, name) = classify(&error);
        Status::new(code, format!("{name}: {error}"))
    }
}

/// The status of a failure inside the API server itself (a task that panicked).
pub fn internal(error: &dyn std::fmt::Display) -> Status {
    Status::internal(format!("{INTERNAL_ERROR}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_the_ec2_name_and_host_failures_are_not_the_callers() {
        let status = Status::from(DaemonError::Store(StoreError::NotFound {
            resource: Resource::Volume,
            id: "vol-1".into(),
        }));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "InvalidVolume.NotFound: volume vol-1 does not exist");
        let vmm = Status::from(DaemonError::Store(StoreError::Vmm { step: "pause", message: "gone".into() }));
        assert_eq!(vmm.code(), Code::Unavailable);
        assert_eq!(vmm.message(), "Unavailable: the VMM could not pause the disk: gone");
        let internal = Status::from(DaemonError::Internal("cannot start".into()));
        assert_eq!(
            (internal.code(), internal.message()),
            (Code::Internal, "Server.InternalError: cannot start")
        );
    }
}
