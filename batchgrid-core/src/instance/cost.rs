//! Instance-hours the worker group used during a job, from the group's scaling activities, and
//! their cost as billed: spot instances at the spot price history of their type and zone (EC2
//! bills spot per second at the price of the moment), on-demand ones at list prices.
//!
//! Where EC2 can no longer say how an instance was bought or where it ran (it forgets
//! terminated instances after about an hour), the group's policy and launch activities fill
//! in; a spot instance whose price history cannot be read is priced at the on-demand list
//! price and the report says it is an upper bound.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_autoscaling::types::{Activity, AutoScalingGroup, ScalingActivityStatusCode};

use super::placement::{launch_zone, policy_purchase, Known, Placement};
use super::spot_price::PriceSteps;
use super::InstanceError;
use crate::aws::ec2::{Ec2Client, Ec2Instance, SpotPriceChange};
use crate::aws::error_text;
use crate::manager::InstanceUsageSource;
pub use crate::report::InstanceUsage;
use crate::report::{PricedBy, Purchase};

/// On-demand Linux list prices in us-east-1, US dollars per hour, for the families grids use.
pub const HOURLY_PRICES: &[(&str, f64)] = &[
    ("t4g.small", 0.0168),
    ("t4g.medium", 0.0336),
    ("t4g.large", 0.0672),
    ("t3.large", 0.0832),
    ("m7g.large", 0.0816),
    ("m7g.xlarge", 0.1632),
    ("m7g.2xlarge", 0.3264),
    ("c7g.large", 0.0725),
    ("c7g.xlarge", 0.145),
    ("c7g.2xlarge", 0.29),
    ("r7g.large", 0.1071),
    ("m6i.large", 0.096),
    ("m7i.large", 0.1008),
    ("c6i.large", 0.085),
    ("c7i.large", 0.0893),
];

/// The hourly list price of an instance type, where known.
pub fn hourly_price(instance_type: &str) -> Option<f64> {
    HOURLY_PRICES.iter().find(|(t, _)| *t == instance_type).map(|(_, p)| *p)
}

/// Where an instance id appears in an activity's description ("Launching a new EC2 instance:
/// i-0abc", "Terminating EC2 instance: i-0abc - Waiting For Spot Instance Request Fulfillment").
fn instance_in(description: &str) -> Option<&str> {
    let start = description.find("i-")?;
    let id = &description[start..];
    let end = id.find(|c: char| !c.is_ascii_alphanumeric() && c != '-').unwrap_or(id.len());
    Some(&id[..end])
}

fn millis(time: Option<&aws_sdk_autoscaling::primitives::DateTime>) -> Option<i64> {
    time.and_then(|t| t.to_millis().ok())
}

/// Instance lifetimes from activities, clipped to `[from, to]` (Unix milliseconds): instance id
/// to (launched, terminated). Instances with no launch activity but `running` now count from
/// `from`.
fn lifetimes(activities: &[Activity], running: &[String], from: i64, to: i64) -> HashMap<String, (i64, i64)> {
    let mut spans: HashMap<String, (i64, i64)> = HashMap::new();
    for activity in activities {
        if activity.status_code() != Some(&ScalingActivityStatusCode::Successful)
            && activity.status_code() != Some(&ScalingActivityStatusCode::InProgress)
        {
            continue;
        }
        let Some(description) = activity.description() else { continue };
        let Some(id) = instance_in(description) else { continue };
        let start = millis(activity.start_time()).unwrap_or(from);
        let end = millis(activity.end_time()).unwrap_or(to);
        let span = spans.entry(id.to_owned()).or_insert((i64::MIN, i64::MAX));
        if description.starts_with("Launching") {
            span.0 = end.min(to);
        } else if description.starts_with("Terminating") {
            span.1 = end.max(start);
        }
    }
    for id in running {
        spans.entry(id.clone()).or_insert((i64::MIN, i64::MAX));
    }
    spans
        .into_iter()
        .filter_map(|(id, (launched, terminated))| {
            let (a, b) = (launched.max(from), terminated.min(to));
            (b > a).then_some((id, (a, b)))
        })
        .collect()
}

/// What EC2 can say of a job's instances: where and how they ran, and spot prices.
#[async_trait]
pub trait Ec2Facts: Send + Sync + std::fmt::Debug {
    /// The instances among `ids` EC2 still lists.
    async fn instances(&self, ids: &[String]) -> Result<Vec<Ec2Instance>, String>;
    /// The spot price changes of `instance_type` in `zone` from `from_ms` to `to_ms`.
    async fn spot_prices(
        &self,
        instance_type: &str,
        zone: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SpotPriceChange>, String>;
}

#[async_trait]
impl Ec2Facts for Ec2Client {
    async fn instances(&self, ids: &[String]) -> Result<Vec<Ec2Instance>, String> {
        self.describe_instances(ids).await.map_err(|e| e.to_string())
    }

    async fn spot_prices(
        &self,
        instance_type: &str,
        zone: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SpotPriceChange>, String> {
        self.spot_price_history(instance_type, zone, from_ms, to_ms).await.map_err(|e| e.to_string())
    }
}

/// Instance-hours of `group` between `from` and `to` (Unix milliseconds), by instance type,
/// zone and purchase option, priced as billed where `ec2` can say how. Terminated instances
/// no source lists count as `default_type` (the group's first choice).
pub async fn usage(
    client: &aws_sdk_autoscaling::Client,
    ec2: Option<&dyn Ec2Facts>,
    group: &str,
    default_type: &str,
    from: i64,
    to: i64,
) -> Result<Vec<InstanceUsage>, InstanceError> {
    let fail = |e: String| InstanceError::AutoScaling(e);
    let mut activities = Vec::new();
    let mut pages = client.describe_scaling_activities().auto_scaling_group_name(group).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| fail(error_text(&e)))?;
        let done = page.activities().iter().any(|a| millis(a.start_time()).is_some_and(|t| t < from - 86_400_000));
        activities.extend(page.activities().iter().cloned());
        // Activities come newest first; a day before the job is far enough back.
        if done {
            break;
        }
    }
    let groups = client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .map_err(|e| fail(error_text(&e)))?;
    let mut known = Known { default_type: default_type.to_owned(), ..Known::default() };
    let mut running = Vec::new();
    for listed in groups.auto_scaling_groups() {
        known.group_purchase = group_purchase(listed);
        for instance in listed.instances() {
            let Some(id) = instance.instance_id() else { continue };
            running.push(id.to_owned());
            let kind = instance.instance_type().filter(|t| !t.is_empty()).map(str::to_owned);
            let zone = instance.availability_zone().filter(|z| !z.is_empty()).map(str::to_owned);
            known.group.insert(id.to_owned(), (kind, zone));
        }
    }
    known.launch_zones = launch_zones(&activities);
    let spans = lifetimes(&activities, &running, from, to);
    let Some(ec2) = ec2 else {
        return Ok(summarize(&spans, &known, &HashMap::new()));
    };
    let ids: Vec<String> = spans.keys().cloned().collect();
    match ec2.instances(&ids).await {
        Ok(instances) => known.ec2 = instances.into_iter().map(|i| (i.id.clone(), i)).collect(),
        // The group's own records still price the job, at worst as an upper bound.
        Err(error) => tracing::warn!(%error, "EC2 does not describe the job's instances; using the group's records"),
    }
    let prices = spot_prices(ec2, &spans, &known).await;
    Ok(summarize(&spans, &known, &prices))
}

/// What the group's mixed-instances policy buys.
fn group_purchase(group: &AutoScalingGroup) -> Purchase {
    match group.mixed_instances_policy().and_then(|policy| policy.instances_distribution()) {
        Some(distribution) => policy_purchase(
            true,
            distribution.on_demand_base_capacity(),
            distribution.on_demand_percentage_above_base_capacity(),
        ),
        None => policy_purchase(group.mixed_instances_policy().is_some(), None, None),
    }
}

/// The zones launch activities name, by instance id.
fn launch_zones(activities: &[Activity]) -> HashMap<String, String> {
    activities
        .iter()
        .filter(|a| a.description().is_some_and(|d| d.starts_with("Launching")))
        .filter_map(|a| Some((instance_in(a.description()?)?.to_owned(), launch_zone(a.details()?)?)))
        .collect()
}

/// Spot price steps for each (type, zone) that spot instances ran in, over the time any of
/// them ran; a pair whose history cannot be read is left out (and priced as an upper bound).
async fn spot_prices(
    ec2: &dyn Ec2Facts,
    spans: &HashMap<String, (i64, i64)>,
    known: &Known,
) -> HashMap<(String, String), PriceSteps> {
    let mut windows: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for (id, &(a, b)) in spans {
        let Placement { instance_type, zone, purchase } = known.place(id);
        if let (Purchase::Spot, Some(zone)) = (purchase, zone) {
            let window = windows.entry((instance_type, zone)).or_insert((a, b));
            *window = (window.0.min(a), window.1.max(b));
        }
    }
    let mut prices = HashMap::new();
    for ((instance_type, zone), (a, b)) in windows {
        match ec2.spot_prices(&instance_type, &zone, a, b).await {
            Ok(changes) => match PriceSteps::new(changes) {
                Some(steps) => {
                    prices.insert((instance_type, zone), steps);
                }
                None => {
                    tracing::warn!(%instance_type, %zone, "no spot price history; priced at the on-demand list price")
                }
            },
            Err(error) => {
                tracing::warn!(%instance_type, %zone, %error, "spot price history unreadable; priced at the on-demand list price")
            }
        }
    }
    prices
}

/// The worker group's activity as the manager's source of instance-hours.
#[derive(Debug, Clone)]
pub struct GroupActivity {
    /// The Auto Scaling client.
    pub client: aws_sdk_autoscaling::Client,
    /// EC2, for how and where instances ran and spot prices; without it everything is priced
    /// at on-demand list prices.
    pub ec2: Option<std::sync::Arc<dyn Ec2Facts>>,
    /// The worker group.
    pub group: String,
    /// The type terminated instances are counted as.
    pub default_type: String,
}

#[async_trait]
impl InstanceUsageSource for GroupActivity {
    async fn usage(&self, from: i64, to: i64) -> Result<Vec<InstanceUsage>, String> {
        usage(&self.client, self.ec2.as_deref(), &self.group, &self.default_type, from, to)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Instance-hours and cost by type, zone and purchase option.
fn summarize(
    spans: &HashMap<String, (i64, i64)>,
    known: &Known,
    prices: &HashMap<(String, String), PriceSteps>,
) -> Vec<InstanceUsage> {
    type Key = (String, Option<String>, Purchase, PricedBy);
    let mut lines: BTreeMap<Key, (u64, f64, Option<f64>)> = BTreeMap::new();
    for (id, &(a, b)) in spans {
        let Placement { instance_type, zone, purchase } = known.place(id);
        let hours = (b - a) as f64 / 3_600_000.0;
        let steps = zone.as_ref().and_then(|z| prices.get(&(instance_type.clone(), z.clone())));
        let (priced_by, cost) = match (purchase, steps) {
            (Purchase::Spot, Some(steps)) => (PricedBy::SpotHistory, Some(steps.cost(a, b))),
            (Purchase::OnDemand, _) => (PricedBy::OnDemandList, hourly_price(&instance_type).map(|p| p * hours)),
            _ => (PricedBy::OnDemandUpperBound, hourly_price(&instance_type).map(|p| p * hours)),
        };
        let line = lines.entry((instance_type, zone, purchase, priced_by)).or_insert((0, 0.0, Some(0.0)));
        line.0 += 1;
        line.1 += hours;
        line.2 = line.2.zip(cost).map(|(sum, cost)| sum + cost);
    }
    lines
        .into_iter()
        .map(|((instance_type, zone, purchase, priced_by), (instances, hours, cost_usd))| InstanceUsage {
            instance_type,
            zone,
            purchase,
            instances,
            hours,
            cost_usd,
            priced_by,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
    use aws_sdk_autoscaling::operation::describe_scaling_activities::DescribeScalingActivitiesOutput;
    use aws_sdk_autoscaling::primitives::DateTime;
    use aws_sdk_autoscaling::types::{AutoScalingGroup, Instance, LifecycleState};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;

    const HOUR: i64 = 3_600_000;

    fn activity(description: &str, start: i64, end: Option<i64>) -> Activity {
        Activity::builder()
            .activity_id(description)
            .auto_scaling_group_name("grid")
            .cause("test")
            .description(description)
            .start_time(DateTime::from_millis(start))
            .set_end_time(end.map(DateTime::from_millis))
            .status_code(if end.is_some() {
                ScalingActivityStatusCode::Successful
            } else {
                ScalingActivityStatusCode::InProgress
            })
            .build()
    }

    #[test]
    fn instance_ids_in_descriptions() {
        assert_eq!(instance_in("Launching a new EC2 instance: i-0abc123"), Some("i-0abc123"));
        assert_eq!(instance_in("Terminating EC2 instance: i-0abc - Waiting"), Some("i-0abc"));
        assert_eq!(instance_in("Changing desired capacity"), None);
    }

    /// Two instances: one launched before the job and terminated in its middle, one launched
    /// during it and still running; the job ran from hour 10 to hour 14.
    #[tokio::test]
    async fn hours_inside_the_job_are_counted_and_priced() {
        let activities = vec![
            activity("Launching a new EC2 instance: i-late", 11 * HOUR, Some(11 * HOUR + 60_000)),
            activity("Terminating EC2 instance: i-early", 12 * HOUR, Some(12 * HOUR)),
            activity("Launching a new EC2 instance: i-early", 2 * HOUR, Some(2 * HOUR)),
        ];
        let scaling = mock!(aws_sdk_autoscaling::Client::describe_scaling_activities).then_output(move || {
            DescribeScalingActivitiesOutput::builder().set_activities(Some(activities.clone())).build()
        });
        let group = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
            let instance = Instance::builder()
                .instance_id("i-late")
                .instance_type("c7g.large")
                .availability_zone("eu-west-1a")
                .lifecycle_state(LifecycleState::InService)
                .health_status("Healthy")
                .protected_from_scale_in(false)
                .build();
            let group = AutoScalingGroup::builder()
                .auto_scaling_group_name("grid")
                .min_size(0)
                .max_size(2)
                .desired_capacity(1)
                .default_cooldown(300)
                .availability_zones("eu-west-1a")
                .health_check_type("EC2")
                .created_time(DateTime::from_millis(0))
                .instances(instance)
                .build();
            DescribeAutoScalingGroupsOutput::builder().auto_scaling_groups(group).build()
        });
        let client = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&scaling, &group]);
        let usage = usage(&client, None, "grid", "m7g.large", 10 * HOUR, 14 * HOUR).await.expect("usage");
        assert_eq!(usage.len(), 2, "{usage:?}");
        let early = usage.iter().find(|u| u.instance_type == "m7g.large").expect("terminated one, default type");
        assert!((early.hours - 2.0).abs() < 1e-9, "hours 10 to 12: {early:?}");
        let late = usage.iter().find(|u| u.instance_type == "c7g.large").expect("running one");
        assert!((late.hours - (3.0 - 1.0 / 60.0)).abs() < 1e-9, "from its launch to the job's end: {late:?}");
        let cost = late.cost_usd.expect("priced");
        assert!((cost - 0.0725 * late.hours).abs() < 1e-9);
    }

    /// EC2 as scripted: the instances it still lists, and spot prices by zone (a zone left out
    /// fails, as an unreadable history does).
    #[derive(Debug)]
    struct ScriptedEc2 {
        instances: Vec<Ec2Instance>,
        prices: Vec<(&'static str, Vec<SpotPriceChange>)>,
    }

    #[async_trait]
    impl Ec2Facts for ScriptedEc2 {
        async fn instances(&self, ids: &[String]) -> Result<Vec<Ec2Instance>, String> {
            Ok(self.instances.iter().filter(|i| ids.contains(&i.id)).cloned().collect())
        }

        async fn spot_prices(&self, kind: &str, zone: &str, _: i64, _: i64) -> Result<Vec<SpotPriceChange>, String> {
            assert_eq!(kind, "m7g.xlarge", "only spot instances' histories are read");
            let found = self.prices.iter().find(|(z, _)| *z == zone);
            found.map(|(_, changes)| changes.clone()).ok_or_else(|| format!("UnauthorizedOperation in {zone}"))
        }
    }

    /// A spot group (no on-demand base, 0 % above it) whose instances ran as the job's report
    /// must price them: one EC2 still lists as spot, one it has forgotten (its zone from its
    /// launch activity, its purchase from the policy), one on-demand, and one spot in a zone
    /// whose history cannot be read.
    #[tokio::test]
    async fn spot_instances_are_priced_from_the_history_of_their_zone() {
        let launch = |id: &str, zone: &str, at: i64| {
            let mut launched = activity(&format!("Launching a new EC2 instance: {id}"), at, Some(at));
            launched.details = Some(format!(r#"{{"Subnet ID":"subnet-1","Availability Zone":"{zone}"}}"#));
            launched
        };
        let activities = vec![
            activity("Terminating EC2 instance: i-forgotten", 12 * HOUR, Some(12 * HOUR)),
            launch("i-listed", "us-east-1b", 10 * HOUR),
            launch("i-forgotten", "us-east-1b", 10 * HOUR),
            launch("i-ondemand", "us-east-1a", 10 * HOUR),
            launch("i-nohistory", "us-east-1c", 13 * HOUR),
        ];
        let scaling = mock!(aws_sdk_autoscaling::Client::describe_scaling_activities).then_output(move || {
            DescribeScalingActivitiesOutput::builder().set_activities(Some(activities.clone())).build()
        });
        let group = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
            let distribution = aws_sdk_autoscaling::types::InstancesDistribution::builder()
                .on_demand_base_capacity(0)
                .on_demand_percentage_above_base_capacity(0)
                .build();
            let policy = aws_sdk_autoscaling::types::MixedInstancesPolicy::builder()
                .instances_distribution(distribution)
                .build();
            let group = AutoScalingGroup::builder()
                .auto_scaling_group_name("grid")
                .min_size(0)
                .max_size(4)
                .desired_capacity(3)
                .default_cooldown(300)
                .availability_zones("us-east-1a")
                .health_check_type("EC2")
                .created_time(DateTime::from_millis(0))
                .mixed_instances_policy(policy)
                .build();
            DescribeAutoScalingGroupsOutput::builder().auto_scaling_groups(group).build()
        });
        let client = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&scaling, &group]);
        let instance = |id: &str, zone: &str, spot: bool| Ec2Instance {
            id: id.into(),
            instance_type: "m7g.xlarge".into(),
            zone: Some(zone.into()),
            spot,
        };
        let ec2 = ScriptedEc2 {
            instances: vec![
                instance("i-listed", "us-east-1b", true),
                instance("i-ondemand", "us-east-1a", false),
                instance("i-nohistory", "us-east-1c", true),
            ],
            // 0.05 until hour 11, then 0.07.
            prices: vec![(
                "us-east-1b",
                vec![
                    SpotPriceChange { at_ms: 9 * HOUR, usd_per_hour: 0.05 },
                    SpotPriceChange { at_ms: 11 * HOUR, usd_per_hour: 0.07 },
                ],
            )],
        };
        let usage = usage(&client, Some(&ec2), "grid", "m7g.xlarge", 10 * HOUR, 14 * HOUR).await.expect("usage");
        let line = |zone: &str| usage.iter().find(|u| u.zone.as_deref() == Some(zone)).expect(zone).clone();

        // i-listed: hours 10 to 14 (1 h at 0.05, 3 h at 0.07); i-forgotten: 10 to 12 (1 h each).
        let spot = line("us-east-1b");
        assert_eq!((spot.purchase, spot.priced_by, spot.instances), (Purchase::Spot, PricedBy::SpotHistory, 2));
        let by_hand = (0.05 + 3.0 * 0.07) + (0.05 + 0.07);
        assert!((spot.hours - 6.0).abs() < 1e-9 && (spot.cost_usd.expect("priced") - by_hand).abs() < 1e-9, "{spot:?}");

        let on_demand = line("us-east-1a");
        assert_eq!((on_demand.purchase, on_demand.priced_by), (Purchase::OnDemand, PricedBy::OnDemandList));
        assert!((on_demand.cost_usd.expect("priced") - 4.0 * 0.1632).abs() < 1e-9, "{on_demand:?}");

        let unread = line("us-east-1c");
        assert_eq!((unread.purchase, unread.priced_by), (Purchase::Spot, PricedBy::OnDemandUpperBound));
        assert!((unread.cost_usd.expect("priced") - 0.1632).abs() < 1e-9, "hour 13 to 14: {unread:?}");
    }
}
