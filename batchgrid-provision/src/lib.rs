//! Provisioning for batchgrid: per-environment configuration rendered to CloudFormation and
//! deployed, diffed and torn down. The environment model, templates and the deployer arrive with
//! the provisioning issue; this crate holds the seam the CLI will call.

/// Where the rendered template for an environment is written, relative to the project root.
pub fn render_path(environment: &str) -> std::path::PathBuf {
    std::path::Path::new("build").join(environment).join("template.yaml")
}
