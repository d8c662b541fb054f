//! End-to-end tests: the real `batchgrid` binary running whole jobs on the embedded grid, with
//! real worker processes, and the claims example checked against its single-process reference.

mod bad_input;
mod bootstrap;
mod chaining;
mod claims;
mod dashboard;
mod failures;
mod faults;
mod harness;
mod local_stack;
mod logs;
mod park;
mod provision;
mod report;
mod resume;
mod rotation;
mod sandbox;
mod schedule;
mod shutdown;
mod task_role;
mod task_sandbox;
mod worker_faults;
