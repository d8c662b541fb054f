//! The batchgrid runtime: what runs on the grid's machines, and on a laptop.
//!
//! - [`spec`]: job files, parsed strictly and validated.
//! - [`store`], [`queue`], [`analytics`]: the three backend traits, each with a written contract
//!   and an embedded implementation (a directory, SQLite, SQLite); the AWS ones (S3, SQS,
//!   PostgreSQL) implement the same traits.
//! - [`split`]: cuts input into first-stage tasks, streaming; [`manifest`]: input lists.
//! - [`task`]: the queue message and the deterministic object key layout.
//! - [`processor`]: what a task runs: a command, or a Rust [`processor::Processor`] registered
//!   by name.
//! - [`manager`]: submits, splits, schedules, tracks and completes jobs.
//! - [`worker`]: receives tasks, runs them with a heartbeat, records and acknowledges them;
//!   [`drain`]: an operator's request that one worker stop taking tasks and exit.
//! - [`report`]: the end-of-job report.
//! - [`grid`]: the backends of one grid, and the embedded grid under a state directory.
//! - [`smoke`]: the tiny job `batchgrid smoke` runs after a deploy, and the check of its results.
//! - [`task_role`]: short-lived credentials of the environment's task role, for tasks.
//! - [`scaling`]: sizes the worker group from the work (the manager drives it on AWS).
//! - [`schedule`]: cron schedules in IANA zones on business calendars, evaluated on a given clock.
//!
//! Delivery is at least once; effects are exactly once: results have deterministic keys and
//! progress is an upsert per (job, stage, task).

pub mod analytics;
#[cfg(feature = "aws")]
pub mod aws;
pub mod byte_range;
pub mod chart;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod db;
pub mod drain;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod grid;
#[cfg(feature = "aws")]
pub mod instance;
pub mod manager;
pub mod manifest;
pub mod metering;
pub mod processor;
pub mod queue;
pub mod report;
pub mod scaling;
pub mod schedule;
pub mod scratch;
pub mod secret;
pub mod service;
pub mod smoke;
pub mod spec;
pub mod split;
pub mod store;
pub mod task;
pub mod task_role;
pub mod worker;
