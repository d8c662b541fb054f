//! Provisioning for batchgrid: per-environment configuration, to be rendered to CloudFormation
//! and deployed, diffed and torn down.
//!
//! - [`environment`]: `environments/base.yaml` deep-merged with one environment's overrides,
//!   `${VAR}` expanded, checked strictly (file, line and key on every error) into a validated
//!   [`environment::Environment`] before anything is rendered or sent.

pub mod aws;
pub mod cost;
pub mod deploy;
pub mod environment;
pub mod image;
pub mod park;
pub mod preflight;
pub mod render;

/// Where the rendered template for an environment is written, relative to the project root.
pub fn render_path(environment: &str) -> std::path::PathBuf {
    std::path::Path::new("build").join(environment).join("template.yaml")
}
