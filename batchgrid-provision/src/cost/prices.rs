//! The checked-in price table (`prices/aws-YYYY-MM.yaml`): list prices per region, with the
//! date and sources they were read from. Compiled into the binary; never fetched.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::CostError;

/// The table this build prices with.
pub const TABLE: &str = include_str!("../../prices/aws-2026-12.yaml");
/// Its path in the repository, for messages.
pub const TABLE_PATH: &str = "batchgrid-provision/prices/aws-2026-12.yaml";

/// A price table: where its figures come from, and the prices per region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// The day the figures were read from the sources.
    pub date: String,
    /// The public price lists and pages the figures come from.
    pub sources: Vec<String>,
    /// Hours in a month (730, as AWS's calculator counts).
    pub hours_per_month: f64,
    /// Spot capacity as a share of the on-demand price.
    pub spot_fraction: SpotBand,
    /// Prices per region code.
    pub regions: BTreeMap<String, RegionPrices>,
}

/// The share of the on-demand price spot capacity usually costs.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotBand {
    /// The cheapest usual share.
    pub low: f64,
    /// The dearest usual share.
    pub high: f64,
}

/// One region's list prices, in US dollars.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPrices {
    /// EC2 on-demand per instance-hour, by instance type.
    pub ec2_hourly: BTreeMap<String, f64>,
    /// A public IPv4 address per hour.
    pub public_ipv4_hourly: f64,
    /// EBS gp3 per GB-month.
    pub ebs_gp3_gb_month: f64,
    /// A NAT gateway per hour.
    pub nat_gateway_hourly: f64,
    /// A NAT gateway per GB processed.
    pub nat_gateway_gb: f64,
    /// RDS for PostgreSQL single-AZ per instance-hour, by class.
    pub rds_hourly: BTreeMap<String, f64>,
    /// RDS gp3 storage, single-AZ, per GB-month.
    pub rds_gp3_gb_month: f64,
    /// RDS snapshot storage per GB-month.
    pub rds_snapshot_gb_month: f64,
    /// Aurora Serverless v2 per ACU-hour.
    pub aurora_acu_hourly: f64,
    /// Aurora storage per GB-month.
    pub aurora_storage_gb_month: f64,
    /// Aurora snapshot storage per GB-month.
    pub aurora_snapshot_gb_month: f64,
    /// S3 Standard per GB-month.
    pub s3_standard_gb_month: f64,
    /// A Secrets Manager secret per month.
    pub secret_month: f64,
    /// CloudWatch Logs per GB ingested.
    pub logs_ingested_gb: f64,
}

impl PriceTable {
    /// The table compiled into this build.
    pub fn builtin() -> Result<Self, CostError> {
        Self::parse(TABLE, TABLE_PATH)
    }

    /// Parses a table; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CostError> {
        serde_yaml::from_str(text).map_err(|e| CostError::Table { origin: origin.to_owned(), message: e.to_string() })
    }

    /// One region's prices, or an error naming the region and the regions the table has.
    pub fn region(&self, region: &str) -> Result<&RegionPrices, CostError> {
        self.regions.get(region).ok_or_else(|| CostError::UnknownRegion {
            region: region.to_owned(),
            known: self.regions.keys().cloned().collect::<Vec<_>>().join(", "),
            date: self.date.clone(),
        })
    }
}

impl RegionPrices {
    /// On-demand hourly price of an EC2 instance type.
    pub fn ec2(&self, kind: &str, region: &str, resource: &str) -> Result<f64, CostError> {
        self.ec2_hourly.get(kind).copied().ok_or_else(|| CostError::UnknownPrice {
            what: format!("EC2 instance type `{kind}`"),
            region: region.to_owned(),
            resource: resource.to_owned(),
        })
    }

    /// Single-AZ hourly price of an RDS class.
    pub fn rds(&self, class: &str, region: &str, resource: &str) -> Result<f64, CostError> {
        self.rds_hourly.get(class).copied().ok_or_else(|| CostError::UnknownPrice {
            what: format!("RDS class `{class}`"),
            region: region.to_owned(),
            resource: resource.to_owned(),
        })
    }
}
