//! Instance-hours the worker group used during a job, from the group's scaling activities, and
//! their cost at on-demand list prices (an upper bound for spot capacity, whose price varies).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_autoscaling::types::{Activity, ScalingActivityStatusCode};

use super::InstanceError;
use crate::aws::error_text;
use crate::manager::InstanceUsageSource;
pub use crate::report::InstanceUsage;

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

/// Instance-hours of `group` between `from` and `to` (Unix milliseconds), by instance type.
/// Terminated instances' types are no longer listed; they count as `default_type` (the group's
/// first choice).
pub async fn usage(
    client: &aws_sdk_autoscaling::Client,
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
    let mut types: HashMap<String, String> = HashMap::new();
    let mut running = Vec::new();
    for instance in groups.auto_scaling_groups().iter().flat_map(|g| g.instances()) {
        let Some(id) = instance.instance_id() else { continue };
        running.push(id.to_owned());
        if let Some(kind) = instance.instance_type().filter(|t| !t.is_empty()) {
            types.insert(id.to_owned(), kind.to_owned());
        }
    }
    Ok(summarize(lifetimes(&activities, &running, from, to), &types, default_type))
}

/// The worker group's activity as the manager's source of instance-hours.
#[derive(Debug, Clone)]
pub struct GroupActivity {
    /// The Auto Scaling client.
    pub client: aws_sdk_autoscaling::Client,
    /// The worker group.
    pub group: String,
    /// The type terminated instances are counted as.
    pub default_type: String,
}

#[async_trait]
impl InstanceUsageSource for GroupActivity {
    async fn usage(&self, from: i64, to: i64) -> Result<Vec<InstanceUsage>, String> {
        usage(&self.client, &self.group, &self.default_type, from, to).await.map_err(|e| e.to_string())
    }
}

fn summarize(
    spans: HashMap<String, (i64, i64)>,
    types: &HashMap<String, String>,
    default_type: &str,
) -> Vec<InstanceUsage> {
    let mut by_type: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for (id, (a, b)) in spans {
        let kind = types.get(&id).cloned().unwrap_or_else(|| default_type.to_owned());
        let entry = by_type.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += (b - a) as f64 / 3_600_000.0;
    }
    by_type
        .into_iter()
        .map(|(instance_type, (instances, hours))| InstanceUsage {
            cost_usd: hourly_price(&instance_type).map(|p| p * hours),
            instance_type,
            instances,
            hours,
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
        let usage = usage(&client, "grid", "m7g.large", 10 * HOUR, 14 * HOUR).await.expect("usage");
        assert_eq!(usage.len(), 2, "{usage:?}");
        let early = usage.iter().find(|u| u.instance_type == "m7g.large").expect("terminated one, default type");
        assert!((early.hours - 2.0).abs() < 1e-9, "hours 10 to 12: {early:?}");
        let late = usage.iter().find(|u| u.instance_type == "c7g.large").expect("running one");
        assert!((late.hours - (3.0 - 1.0 / 60.0)).abs() < 1e-9, "from its launch to the job's end: {late:?}");
        let cost = late.cost_usd.expect("priced");
        assert!((cost - 0.0725 * late.hours).abs() < 1e-9);
    }
}
