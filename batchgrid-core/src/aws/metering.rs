//! The SDK interceptor that feeds a [`RequestMeter`]: each transmitted attempt is counted (a
//! retried call is billed twice, so it is counted twice).

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::metering::RequestMeter;

/// The interceptor to register on a client's configuration.
pub fn interceptor(meter: &RequestMeter) -> SharedInterceptor {
    SharedInterceptor::new(CountingInterceptor { meter: meter.clone() })
}

#[derive(Debug)]
struct CountingInterceptor {
    meter: RequestMeter,
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "batchgrid-request-meter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        match cfg.load::<Metadata>() {
            Some(metadata) => self.meter.record(metadata.service(), metadata.name()),
            None => self.meter.record("unknown", "unknown"),
        }
        Ok(())
    }
}
