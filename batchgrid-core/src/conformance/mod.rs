//! Conformance suites: the trait contracts as executable checks, written once and run against
//! every implementation (embedded here; S3, SQS and PostgreSQL in their own crates' tests).
//! Enabled by the `conformance` feature. Each suite panics with a message naming the broken
//! rule, the way a test should.

pub mod admission;
pub mod analytics;
pub mod queue;
pub mod schedules;
pub mod store;
