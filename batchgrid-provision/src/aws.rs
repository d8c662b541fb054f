//! The one place that builds AWS configuration, so endpoints and credentials cannot diverge
//! between clients: the standard credential chain and region, and an endpoint override (for the
//! local emulator) from `AWS_ENDPOINT_URL`, with path-style S3 addressing when it is set.

/// The SDK configuration for `region`, honouring `AWS_ENDPOINT_URL` and the credential chain.
pub async fn sdk_config(region: &str) -> aws_config::SdkConfig {
    aws_config::from_env().region(aws_config::Region::new(region.to_owned())).load().await
}

/// Whether an endpoint override is in force (an emulator, not AWS).
pub fn endpoint_override(config: &aws_config::SdkConfig) -> bool {
    config.endpoint_url().is_some()
}

/// The CloudFormation client.
pub fn cloudformation(config: &aws_config::SdkConfig) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::new(config)
}

/// The S3 client; path-style addressing under an endpoint override, as emulators need.
pub fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let builder = aws_sdk_s3::config::Builder::from(config).force_path_style(endpoint_override(config));
    aws_sdk_s3::Client::from_conf(builder.build())
}
