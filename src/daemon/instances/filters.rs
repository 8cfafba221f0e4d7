//! DescribeInstances' filters.

use crate::state::instance::InstanceRecord;

/// An EC2-style filter of DescribeInstances: the instances whose attribute `name` has one
/// of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// One of [`FILTER_NAMES`].
    pub name: String,
    /// Any of these matches.
    pub values: Vec<String>,
}

/// The filters DescribeInstances knows, by EC2's names.
pub const FILTER_NAMES: [&str; 7] = [
    "instance-id",
    "instance-state-name",
    "image-id",
    "instance-type",
    "subnet-id",
    "private-ip-address",
    "key-name",
];

impl Filter {
    /// The attribute of `record` the filter looks at.
    pub(super) fn attribute(&self, record: &InstanceRecord) -> String {
        match self.name.as_str() {
            "instance-id" => record.id.clone(),
            "instance-state-name" => record.state.as_str().to_owned(),
            "image-id" => record.image_id.clone(),
            "instance-type" => record.instance_type.clone(),
            "subnet-id" => record.subnet_id.clone(),
            "private-ip-address" => record.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            "key-name" => record.key_name.clone(),
            // Names are checked before filtering.
            _ => String::new(),
        }
    }
}
