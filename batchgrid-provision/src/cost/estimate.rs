//! Prices an [`Inventory`] with one region's list prices: a month deployed and idle, a month
//! parked, stored data per GB-month, and each running worker per hour.

use serde::Serialize;

use super::inventory::Inventory;
use super::prices::{PriceTable, RegionPrices};
use super::CostError;

/// The least capacity an Aurora Serverless v2 instance runs at while it is not paused.
pub const AURORA_AWAKE_ACU: f64 = 0.5;

/// One itemised monthly figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// The resource (logical id or a group of them).
    pub item: String,
    /// How the figure is made (quantity × unit price).
    pub detail: String,
    /// US dollars a month.
    pub monthly: f64,
}

/// A price per GB-month of stored data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    /// What is stored.
    pub item: String,
    /// US dollars per GB-month.
    pub per_gb_month: f64,
    /// The most GB it can hold, when the template bounds it.
    pub at_most_gb: Option<f64>,
}

/// What one running worker of a type costs an hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRate {
    /// The group.
    pub group: String,
    /// The instance type.
    pub kind: String,
    /// The group runs spot capacity.
    pub spot: bool,
    /// The instance on demand, per hour.
    pub on_demand_hourly: f64,
    /// The instance on spot, the band's low end.
    pub spot_low_hourly: f64,
    /// The instance on spot, the band's high end.
    pub spot_high_hourly: f64,
    /// Its volume and public address, per hour, on top.
    pub extras_hourly: f64,
    /// Most instances of the group.
    pub max: u32,
}

impl WorkerRate {
    /// The hourly range the group's purchase option gives (on demand: one figure), extras in.
    pub fn hourly_range(&self) -> (f64, f64) {
        if self.spot {
            (self.spot_low_hourly + self.extras_hourly, self.spot_high_hourly + self.extras_hourly)
        } else {
            let hourly = self.on_demand_hourly + self.extras_hourly;
            (hourly, hourly)
        }
    }
}

/// An environment's cost at list prices.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// The region priced.
    pub region: String,
    /// The price table's date.
    pub prices_date: String,
    /// A month deployed with no work (worker groups at their minimum).
    pub idle: Vec<Line>,
    /// A month deployed with a serverless database that never pauses (kept awake by jobs,
    /// workers, or readers of the dashboard and API): the extra over `idle`.
    pub idle_database_awake: Option<Line>,
    /// A month parked (no instance, database, NAT gateway or address): fixed charges.
    pub parked: Vec<Line>,
    /// Stored data, deployed or parked, per GB-month.
    pub stored_data: Vec<Rate>,
    /// Each running worker, per hour.
    pub workers: Vec<WorkerRate>,
    /// What is billed by use and not counted.
    pub not_counted: Vec<String>,
}

impl Estimate {
    /// A month deployed and idle.
    pub fn idle_monthly(&self) -> f64 {
        // A fold from +0: an empty f64 sum is -0, which prints as `-0.00`.
        self.idle.iter().fold(0.0, |sum, l| sum + l.monthly)
    }

    /// A month parked, stored data aside.
    pub fn parked_monthly(&self) -> f64 {
        self.parked.iter().fold(0.0, |sum, l| sum + l.monthly)
    }
}

/// A unit price with up to four decimals and at least two: `$0.048`, `$0.40`, `$0.0046`.
fn money(value: f64) -> String {
    let text = format!("{value:.4}");
    let trimmed = text.trim_end_matches('0');
    let decimals = trimmed.split_once('.').map_or(0, |(_, d)| d.len());
    format!("${trimmed}{}", "0".repeat(2usize.saturating_sub(decimals)))
}

/// Prices `inventory` in `region`.
pub fn estimate(inventory: &Inventory, table: &PriceTable, region: &str) -> Result<Estimate, CostError> {
    let prices = table.region(region)?;
    let hours = table.hours_per_month;
    let mut idle = Vec::new();
    let mut stored_data = Vec::new();
    let mut idle_database_awake = None;
    let line = |item: &str, detail: String, monthly: f64| Line { item: item.to_owned(), detail, monthly };

    for id in &inventory.nat_gateways {
        let rate = prices.nat_gateway_hourly;
        idle.push(line(id, format!("NAT gateway, {hours} h × {}", money(rate)), hours * rate));
    }
    for id in &inventory.elastic_ips {
        let rate = prices.public_ipv4_hourly;
        idle.push(line(id, format!("Elastic IP (public IPv4), {hours} h × {}", money(rate)), hours * rate));
    }
    for db in &inventory.rds_instances {
        let copies = if db.multi_az { 2.0 } else { 1.0 };
        let az = if db.multi_az { "Multi-AZ (×2)" } else { "single-AZ" };
        let rate = prices.rds(&db.class, region, &db.id)?;
        idle.push(line(&db.id, format!("{} {az}, {hours} h × {}", db.class, money(rate)), copies * hours * rate));
        let storage = prices.rds_gp3_gb_month;
        idle.push(line(
            &format!("{} storage", db.id),
            format!("{} GB gp3 {az} × {}", db.storage_gb, money(storage)),
            copies * db.storage_gb * storage,
        ));
        stored_data.push(Rate {
            item: format!("{} snapshot while parked", db.id),
            per_gb_month: prices.rds_snapshot_gb_month,
            at_most_gb: Some(db.storage_gb),
        });
    }
    for cluster in &inventory.aurora_clusters {
        let rate = prices.aurora_acu_hourly;
        let instances = cluster.instances.max(1) as f64;
        match cluster.pause_after_seconds {
            Some(seconds) => {
                idle.push(line(
                    &cluster.id,
                    format!(
                        "Aurora Serverless v2, paused when idle (0 ACU after {seconds} s without a connection; up to {} ACU)",
                        cluster.max_acu
                    ),
                    0.0,
                ));
                idle_database_awake = Some(line(
                    &cluster.id,
                    format!("awake at its least, {instances} × {AURORA_AWAKE_ACU} ACU × {hours} h × {}", money(rate)),
                    instances * AURORA_AWAKE_ACU * hours * rate,
                ));
            }
            None => idle.push(line(
                &cluster.id,
                format!("Aurora Serverless v2, {instances} × {} ACU × {hours} h × {}", cluster.min_acu, money(rate)),
                instances * cluster.min_acu * hours * rate,
            )),
        }
        stored_data.push(Rate {
            item: format!("{} storage while deployed", cluster.id),
            per_gb_month: prices.aurora_storage_gb_month,
            at_most_gb: None,
        });
        stored_data.push(Rate {
            item: format!("{} snapshot while parked", cluster.id),
            per_gb_month: prices.aurora_snapshot_gb_month,
            at_most_gb: None,
        });
    }
    for instance in &inventory.instances {
        let rate = prices.ec2(&instance.kind, region, &instance.id)?;
        idle.push(line(&instance.id, format!("{}, {hours} h × {}", instance.kind, money(rate)), hours * rate));
        idle.push(line(
            &format!("{} volume", instance.id),
            format!("{} GB gp3 × {}", instance.volume_gb, money(prices.ebs_gp3_gb_month)),
            instance.volume_gb * prices.ebs_gp3_gb_month,
        ));
        if instance.public_ip {
            let rate = prices.public_ipv4_hourly;
            idle.push(line(
                &format!("{} address", instance.id),
                format!("public IPv4, {hours} h × {}", money(rate)),
                hours * rate,
            ));
        }
    }
    let mut workers = Vec::new();
    for group in &inventory.groups {
        for kind in &group.kinds {
            workers.push(worker_rate(group, kind, table, prices, region)?);
        }
        // At rest the group runs min_size instances of its first type.
        let first = workers.iter().rev().find(|w| w.group == group.id && w.kind == group.kinds[0]);
        let (_, high) = first.map(WorkerRate::hourly_range).unwrap_or((0.0, 0.0));
        let purchase = if group.spot { "spot, high end" } else { "on demand" };
        idle.push(line(
            &group.id,
            format!("{} at rest (min_size) × {} {purchase} × {hours} h", group.min, group.kinds[0]),
            f64::from(group.min) * high * hours,
        ));
    }
    if !inventory.secrets.is_empty() {
        let count = inventory.secrets.len();
        idle.push(line(
            "secrets",
            format!(
                "{count} Secrets Manager secret(s) × {} ({})",
                money(prices.secret_month),
                inventory.secrets.join(", ")
            ),
            count as f64 * prices.secret_month,
        ));
    }
    if !inventory.buckets.is_empty() {
        stored_data.push(Rate {
            item: format!("S3 Standard ({})", inventory.buckets.join(", ")),
            per_gb_month: prices.s3_standard_gb_month,
            at_most_gb: None,
        });
    }
    let mut not_counted = vec![
        format!(
            "S3 and SQS requests (SQS: the first million a month free, then $0.40 a million; {} queue(s))",
            inventory.queues.len()
        ),
        format!("CloudWatch Logs ingestion, {} per GB", money(prices.logs_ingested_gb)),
        "data transfer out of AWS".to_owned(),
        "the image stack (make image): Image Builder's build instance while it builds, and its bucket".to_owned(),
    ];
    if !inventory.nat_gateways.is_empty() {
        not_counted.insert(0, format!("NAT gateway traffic, {} per GB processed", money(prices.nat_gateway_gb)));
    }
    Ok(Estimate {
        region: region.to_owned(),
        prices_date: table.date.clone(),
        idle,
        idle_database_awake,
        // Parked keeps only data: buckets and the database's snapshot (stored data).
        parked: Vec::new(),
        stored_data,
        workers,
        not_counted,
    })
}

fn worker_rate(
    group: &super::inventory::Group,
    kind: &str,
    table: &PriceTable,
    prices: &RegionPrices,
    region: &str,
) -> Result<WorkerRate, CostError> {
    let on_demand = prices.ec2(kind, region, &group.id)?;
    let volume = group.volume_gb * prices.ebs_gp3_gb_month / table.hours_per_month;
    let address = if group.public_ip { prices.public_ipv4_hourly } else { 0.0 };
    Ok(WorkerRate {
        group: group.id.clone(),
        kind: kind.to_owned(),
        spot: group.spot,
        on_demand_hourly: on_demand,
        spot_low_hourly: on_demand * table.spot_fraction.low,
        spot_high_hourly: on_demand * table.spot_fraction.high,
        extras_hourly: volume + address,
        max: group.max,
    })
}
