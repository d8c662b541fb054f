//! Talking to AWS: the one place that builds SDK configuration (region, credential chain, the
//! emulator's endpoint override) and the request meter every client carries.
//!
//! The backends themselves live beside their embedded twins: [`crate::store::s3`],
//! [`crate::queue::sqs`] and [`crate::analytics::postgres`].

pub mod ec2;
pub mod https;
pub mod metering;
#[cfg(feature = "postgres")]
pub mod rds_iam;
pub mod secrets;
pub mod task_role;

use std::time::Duration;

pub use crate::metering::RequestMeter;

/// Most attempts per AWS call (throttling and 5xx are retried with backoff by the SDK).
const MAX_ATTEMPTS: u32 = 5;

/// The SDK configuration for `region`: the standard credential chain, and `AWS_ENDPOINT_URL`
/// (an emulator) when it is set.
pub async fn sdk_config(region: &str) -> aws_config::SdkConfig {
    aws_config::from_env()
        .region(aws_config::Region::new(region.to_owned()))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                // Long polls take 20 s; this bounds a hung connection, not a slow transfer.
                .read_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await
}

/// Whether an endpoint override is in force (an emulator, not AWS).
pub fn endpoint_override(config: &aws_config::SdkConfig) -> bool {
    config.endpoint_url().is_some()
}

/// The S3 client; path-style addressing under an endpoint override, as emulators need.
pub fn s3_client(config: &aws_config::SdkConfig, meter: &RequestMeter) -> aws_sdk_s3::Client {
    let builder = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(endpoint_override(config))
        .interceptor(metering::interceptor(meter));
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// The SQS client.
pub fn sqs_client(config: &aws_config::SdkConfig, meter: &RequestMeter) -> aws_sdk_sqs::Client {
    let builder = aws_sdk_sqs::config::Builder::from(config).interceptor(metering::interceptor(meter));
    aws_sdk_sqs::Client::from_conf(builder.build())
}

/// The Auto Scaling client.
pub fn autoscaling_client(config: &aws_config::SdkConfig, meter: &RequestMeter) -> aws_sdk_autoscaling::Client {
    let builder = aws_sdk_autoscaling::config::Builder::from(config).interceptor(metering::interceptor(meter));
    aws_sdk_autoscaling::Client::from_conf(builder.build())
}

/// The Secrets Manager client.
pub fn secrets_client(config: &aws_config::SdkConfig, meter: &RequestMeter) -> aws_sdk_secretsmanager::Client {
    let builder = aws_sdk_secretsmanager::config::Builder::from(config).interceptor(metering::interceptor(meter));
    aws_sdk_secretsmanager::Client::from_conf(builder.build())
}

/// The STS client (task roles).
pub fn sts_client(config: &aws_config::SdkConfig, meter: &RequestMeter) -> aws_sdk_sts::Client {
    let builder = aws_sdk_sts::config::Builder::from(config).interceptor(metering::interceptor(meter));
    aws_sdk_sts::Client::from_conf(builder.build())
}

/// An SDK error as one line with its causes (the SDK's own `Display` says only "service error").
pub fn error_text<E: std::error::Error>(error: &E) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(error).to_string()
}
