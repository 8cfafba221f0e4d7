//! DescribeInstances' own filter names, for the shared Describe.

use crate::daemon::describe::Describable;
use crate::state::instance::InstanceRecord;

impl Describable for InstanceRecord {
    const FILTERS: &'static [&'static str] = &[
        "instance-id",
        "instance-state-name",
        "image-id",
        "instance-type",
        "subnet-id",
        "private-ip-address",
        "key-name",
    ];

    fn id(&self) -> &str {
        &self.id
    }

    fn attribute(&self, name: &str) -> String {
        match name {
            "instance-id" => self.id.clone(),
            "instance-state-name" => self.state.as_str().to_owned(),
            "image-id" => self.image_id.clone(),
            "instance-type" => self.instance_type.clone(),
            "subnet-id" => self.subnet_id.clone(),
            "private-ip-address" => self.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            _ => self.key_name.clone(),
        }
    }
}
