//! Counting every AWS request a process makes, by service and operation, and pricing them at
//! list prices. The AWS clients count through an interceptor ([`crate::aws::metering`]); the
//! embedded backends make no requests. Processes publish their cumulative counts to the
//! analytics store, where the manager sums them into the job report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::analytics::RequestCount;

/// Request counts of one process, shared by every client built with it. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RequestMeter {
    counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
}

impl RequestMeter {
    /// A meter with nothing counted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request.
    pub fn record(&self, service: &str, operation: &str) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry((service.to_owned(), operation.to_owned())).or_default() += 1;
        }
    }

    /// Counts so far, sorted by service then operation.
    pub fn snapshot(&self) -> Vec<RequestCount> {
        let counts = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        counts.into_iter().map(|((service, operation), count)| RequestCount { service, operation, count }).collect()
    }

    /// Requests of one service so far.
    pub fn total_for(&self, service: &str) -> u64 {
        self.snapshot().iter().filter(|c| c.service == service).map(|c| c.count).sum()
    }
}

/// What a task-hour of compute costs on the worker group: its instance type's hourly list
/// price shared by the tasks one instance runs at once. The dashboard's "cost so far" is a
/// job's task time at this rate; capacity left idle is not attributed to any job (the report
/// at the end has the group's instance-hours as used).
#[derive(Debug, Clone, PartialEq)]
pub struct ComputePrice {
    /// The worker instance type.
    pub instance_type: String,
    /// Its on-demand list price, US dollars per hour.
    pub hourly_usd: f64,
    /// Tasks one instance runs at once.
    pub tasks_per_instance: u32,
}

impl ComputePrice {
    /// The cost of `task_ms` milliseconds of task time.
    pub fn cost_of(&self, task_ms: u64) -> f64 {
        task_ms as f64 / 3_600_000.0 * self.hourly_usd / f64::from(self.tasks_per_instance.max(1))
    }
}

/// A list price: US dollars per request of a service's operations.
#[derive(Debug, Clone, Copy)]
pub struct Price {
    /// Service name as the SDK names it (`S3`, `SQS`).
    pub service: &'static str,
    /// Operations this price applies to; empty means every other operation of the service.
    pub operations: &'static [&'static str],
    /// Dollars per request.
    pub usd_per_request: f64,
}

/// List prices (us-east-1, standard tiers, before free tiers), most specific first. SQS bills
/// each 64 KiB of a request's payload as one request; task messages stay far below that.
pub const PRICES: &[Price] = &[
    // S3 Standard: PUT, COPY, POST and LIST cost $0.005 per 1,000; DELETE is free; GET and every
    // other request $0.0004 per 1,000.
    Price {
        service: "S3",
        operations: &[
            "PutObject",
            "CopyObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "ListObjectsV2",
            "ListObjectVersions",
            "ListBuckets",
        ],
        usd_per_request: 0.005 / 1000.0,
    },
    Price {
        service: "S3",
        operations: &["DeleteObject", "DeleteObjects", "AbortMultipartUpload"],
        usd_per_request: 0.0,
    },
    Price { service: "S3", operations: &[], usd_per_request: 0.0004 / 1000.0 },
    // SQS standard queues: $0.40 per million requests.
    Price { service: "SQS", operations: &[], usd_per_request: 0.40 / 1_000_000.0 },
    // Secrets Manager: $0.05 per 10,000 API calls.
    Price { service: "Secrets Manager", operations: &[], usd_per_request: 0.05 / 10_000.0 },
];

/// The list price of one request, or `None` for services without request charges here
/// (CloudFormation, Auto Scaling and EC2 API calls are free).
pub fn price_of(service: &str, operation: &str) -> Option<f64> {
    PRICES
        .iter()
        .find(|p| p.service == service && (p.operations.is_empty() || p.operations.contains(&operation)))
        .map(|p| p.usd_per_request)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_task_hour_costs_its_share_of_an_instance_hour() {
        let price = ComputePrice { instance_type: "m7g.xlarge".into(), hourly_usd: 0.1632, tasks_per_instance: 4 };
        // Ten task-hours on instances running four tasks at once: 2.5 instance-hours.
        assert!((price.cost_of(36_000_000) - 2.5 * 0.1632).abs() < 1e-9);
        let unshared = ComputePrice { tasks_per_instance: 0, ..price };
        assert!((unshared.cost_of(3_600_000) - 0.1632).abs() < 1e-9, "zero tasks per instance counts as one");
    }

    use super::*;

    #[test]
    fn prices_pick_the_most_specific_rule() {
        let per_thousand = |service, operation| price_of(service, operation).map(|p| (p * 1e9).round() / 1e6);
        assert_eq!(per_thousand("S3", "PutObject"), Some(0.005));
        assert_eq!(per_thousand("S3", "GetObject"), Some(0.0004));
        assert_eq!(per_thousand("S3", "DeleteObjects"), Some(0.0));
        assert_eq!(per_thousand("SQS", "ReceiveMessage"), Some(0.0004));
        assert_eq!(price_of("CloudFormation", "CreateStack"), None);
    }
}
