//! AWS clients for provisioning. The SDK configuration itself (region, credential chain, the
//! emulator's endpoint override, path-style S3) comes from `batchgrid_core::aws`, the one place
//! that builds it, so the deployer and the runtime cannot diverge.

pub use batchgrid_core::aws::{endpoint_override, sdk_config};

/// The CloudFormation client (only provisioning needs one).
pub fn cloudformation(config: &aws_config::SdkConfig) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::new(config)
}

/// The S3 client, built as the runtime builds it; deploy-time requests are not metered.
pub fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    batchgrid_core::aws::s3_client(config, &batchgrid_core::metering::RequestMeter::new())
}

/// The RDS client (only parking snapshots the database).
pub fn rds(config: &aws_config::SdkConfig) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::new(config)
}
