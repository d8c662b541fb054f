//! Which type, zone and purchase option each instance of a job ran as, taken from the best
//! source that still knows: EC2 itself (it lists an instance until about an hour after it
//! ends), the group's list of its running instances, the zone its launch activity names, and
//! what the group's purchase policy buys.

use std::collections::HashMap;

use crate::aws::ec2::Ec2Instance;
use crate::report::Purchase;

/// One instance's type, zone and purchase option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Instance type.
    pub instance_type: String,
    /// Availability zone, where any source names it.
    pub zone: Option<String>,
    /// Spot or on-demand, where known.
    pub purchase: Purchase,
}

/// What the sources say of a job's instances.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// EC2's own record, by instance id.
    pub ec2: HashMap<String, Ec2Instance>,
    /// The group's running instances: type and zone, by instance id.
    pub group: HashMap<String, (Option<String>, Option<String>)>,
    /// The zone each instance's launch activity names, by instance id.
    pub launch_zones: HashMap<String, String>,
    /// What the group's policy buys, when it buys one kind only.
    pub group_purchase: Purchase,
    /// The group's first choice of type, for instances no source lists.
    pub default_type: String,
}

impl Known {
    /// Where instance `id` ran, from the best source that knows.
    pub fn place(&self, id: &str) -> Placement {
        if let Some(instance) = self.ec2.get(id) {
            let zone = instance.zone.clone().or_else(|| self.zone_elsewhere(id));
            let purchase = if instance.spot { Purchase::Spot } else { Purchase::OnDemand };
            return Placement { instance_type: instance.instance_type.clone(), zone, purchase };
        }
        let listed_type = self.group.get(id).and_then(|(kind, _)| kind.clone());
        Placement {
            instance_type: listed_type.unwrap_or_else(|| self.default_type.clone()),
            zone: self.zone_elsewhere(id),
            purchase: self.group_purchase,
        }
    }

    fn zone_elsewhere(&self, id: &str) -> Option<String> {
        self.group.get(id).and_then(|(_, zone)| zone.clone()).or_else(|| self.launch_zones.get(id).cloned())
    }
}

/// What a group buys: on-demand without a mixed-instances policy; with one, spot when nothing
/// is on-demand (no base, 0 % above it), on-demand at 100 % (EC2's default), else both.
pub fn policy_purchase(
    mixed: bool,
    on_demand_base: Option<i32>,
    on_demand_above_base_percent: Option<i32>,
) -> Purchase {
    if !mixed {
        return Purchase::OnDemand;
    }
    match (on_demand_base.unwrap_or(0), on_demand_above_base_percent.unwrap_or(100)) {
        (_, 100) => Purchase::OnDemand,
        (0, 0) => Purchase::Spot,
        _ => Purchase::Unknown,
    }
}

/// The zone a launch activity's details name: `{"Subnet ID":"subnet-…","Availability Zone":"us-east-1b"}`.
pub fn launch_zone(details: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(details).ok()?;
    value.get("Availability Zone")?.as_str().filter(|z| !z.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        let mut known = Known { default_type: "m7g.xlarge".into(), group_purchase: Purchase::Spot, ..Known::default() };
        known.ec2.insert(
            "i-ec2".into(),
            Ec2Instance { id: "i-ec2".into(), instance_type: "c7g.xlarge".into(), zone: None, spot: false },
        );
        known.group.insert("i-ec2".into(), (Some("ignored".into()), Some("us-east-1c".into())));
        known.group.insert("i-listed".into(), (Some("m7g.large".into()), Some("us-east-1a".into())));
        known.launch_zones.insert("i-gone".into(), "us-east-1b".into());
        known
    }

    #[test]
    fn ec2_is_believed_first_then_the_group_then_the_launch_activity() {
        let known = known();
        let ec2 = known.place("i-ec2");
        assert_eq!(
            ec2,
            Placement {
                instance_type: "c7g.xlarge".into(),
                zone: Some("us-east-1c".into()),
                purchase: Purchase::OnDemand
            },
            "EC2's type and purchase; the group's zone where EC2 gave none"
        );
        let listed = known.place("i-listed");
        assert_eq!(listed.instance_type, "m7g.large");
        assert_eq!(listed.zone.as_deref(), Some("us-east-1a"));
        assert_eq!(listed.purchase, Purchase::Spot, "the group's policy");
        let gone = known.place("i-gone");
        assert_eq!(gone.instance_type, "m7g.xlarge", "the group's first choice");
        assert_eq!(gone.zone.as_deref(), Some("us-east-1b"), "from its launch activity");
        assert_eq!(known.place("i-unknown").zone, None);
    }

    #[test]
    fn a_group_policy_buys_spot_on_demand_or_both() {
        assert_eq!(policy_purchase(false, None, None), Purchase::OnDemand);
        assert_eq!(policy_purchase(true, Some(0), Some(0)), Purchase::Spot);
        assert_eq!(policy_purchase(true, None, Some(0)), Purchase::Spot);
        assert_eq!(policy_purchase(true, Some(0), None), Purchase::OnDemand, "EC2's default is 100 % on-demand");
        assert_eq!(policy_purchase(true, Some(2), Some(0)), Purchase::Unknown);
        assert_eq!(policy_purchase(true, Some(0), Some(50)), Purchase::Unknown);
    }

    #[test]
    fn launch_activity_details_name_the_zone() {
        let details = r#"{"Subnet ID":"subnet-0abc","Availability Zone":"eu-west-1b"}"#;
        assert_eq!(launch_zone(details).as_deref(), Some("eu-west-1b"));
        assert_eq!(launch_zone("{}"), None);
        assert_eq!(launch_zone("not json"), None);
    }
}
