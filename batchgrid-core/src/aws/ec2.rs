//! Two read-only EC2 calls the job report prices instances with, `DescribeInstances` and
//! `DescribeSpotPriceHistory`, made over EC2's Query API (a form POST, an XML answer) and
//! signed with `aws-sigv4`, the SDK's own signer.
//!
//! Why not `aws-sdk-ec2`: that crate alone took 825 s of wall time (6.5 min of CPU) to compile
//! on the two-core CI machine, and `.ci/run` builds it three times (clippy, the test build, the
//! plain build), for two calls. The SDK's signer, XML reader and credential chain are reused,
//! so the only code here is the request's parameters and the answer's few fields.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_xml::decode::{try_data, Document, ScopedDecoder, XmlDecodeError};

use super::https::TlsError;
use crate::metering::RequestMeter;

/// The Query API version both calls are documented in.
const API_VERSION: &str = "2016-11-15";
/// Attempts per call: throttling, 5xx answers and broken connections are retried.
const ATTEMPTS: u32 = 3;
/// The first retry's wait; each later one doubles it.
const BACKOFF: Duration = Duration::from_millis(200);
/// Instance ids per `DescribeInstances` call: a filter takes at most 200 values.
const IDS_PER_CALL: usize = 200;
/// Pages read per call at most; a job's history is a few pages, so more means a loop.
const MAX_PAGES: usize = 50;
/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why an EC2 call failed.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// EC2 answered with an error (`UnauthorizedOperation` names a missing IAM permission).
    #[error("EC2 {action}: {code}: {message}")]
    Refused {
        /// The action called.
        action: &'static str,
        /// EC2's error code.
        code: String,
        /// EC2's message.
        message: String,
    },
    /// No answer came.
    #[error("EC2 {action}: {message}")]
    Unreachable {
        /// The action called.
        action: &'static str,
        /// What went wrong, with its causes.
        message: String,
    },
    /// The answer could not be read.
    #[error("EC2 {action}: unreadable answer: {message}")]
    Answer {
        /// The action called.
        action: &'static str,
        /// What was wrong with it.
        message: String,
    },
    /// The credential chain gave nothing.
    #[error("EC2: no AWS credentials: {0}")]
    Credentials(String),
    /// The request could not be signed.
    #[error("EC2: signing the request: {0}")]
    Sign(String),
    /// HTTPS could not be set up.
    #[error("EC2: {0}")]
    Tls(#[from] TlsError),
}

/// What EC2 says of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Instance {
    /// `i-…`.
    pub id: String,
    /// Its type.
    pub instance_type: String,
    /// Its availability zone.
    pub zone: Option<String>,
    /// A spot instance (EC2's `instanceLifecycle` is `spot`), else on-demand.
    pub spot: bool,
}

/// One change of the spot price of a type in a zone: in effect from `at_ms` to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotPriceChange {
    /// When it took effect, Unix milliseconds.
    pub at_ms: i64,
    /// US dollars per instance-hour.
    pub usd_per_hour: f64,
}

/// A client of EC2's Query API in one region.
#[derive(Debug, Clone)]
pub struct Ec2Client {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: Option<SharedCredentialsProvider>,
    meter: RequestMeter,
}

impl Ec2Client {
    /// A client with `config`'s region, credentials and endpoint override (an emulator),
    /// counting its requests in `meter`.
    pub fn new(config: &aws_config::SdkConfig, meter: &RequestMeter) -> Result<Self, Ec2Error> {
        let region = config.region().map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        let endpoint = match config.endpoint_url() {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => default_endpoint(&region),
        };
        let http = super::https::with_tls(reqwest::Client::builder().timeout(TIMEOUT))?
            .build()
            .map_err(|e| Ec2Error::Unreachable { action: "client", message: e.to_string() })?;
        Ok(Self { http, endpoint, region, credentials: config.credentials_provider(), meter: meter.clone() })
    }

    /// The instances among `ids` EC2 still knows (it forgets terminated ones after about an
    /// hour); unknown ids are left out, not an error.
    pub async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Ec2Instance>, Ec2Error> {
        const ACTION: &str = "DescribeInstances";
        let mut found = Vec::new();
        for chunk in ids.chunks(IDS_PER_CALL) {
            // A filter, not `InstanceId.N`: one id EC2 no longer knows fails the whole call.
            let mut params = vec![("Filter.1.Name".to_owned(), "instance-id".to_owned())];
            params.extend(chunk.iter().enumerate().map(|(i, id)| (format!("Filter.1.Value.{}", i + 1), id.clone())));
            let mut token = None;
            for _ in 0..MAX_PAGES {
                let mut page = params.clone();
                page.extend(token.take().map(|t| ("NextToken".to_owned(), t)));
                let answer = self.call(ACTION, &page).await?;
                let (instances, next) = parse_instances(&answer).map_err(unreadable(ACTION))?;
                found.extend(instances);
                match next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        }
        Ok(found)
    }

    /// The Linux spot price changes of `instance_type` in `zone` from `from_ms` to `to_ms`,
    /// oldest first, including the change in effect at `from_ms` (EC2 returns it).
    pub async fn spot_price_history(
        &self,
        instance_type: &str,
        zone: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SpotPriceChange>, Ec2Error> {
        const ACTION: &str = "DescribeSpotPriceHistory";
        let params = vec![
            ("InstanceType.1".to_owned(), instance_type.to_owned()),
            ("ProductDescription.1".to_owned(), "Linux/UNIX".to_owned()),
            ("AvailabilityZone".to_owned(), zone.to_owned()),
            ("StartTime".to_owned(), iso8601(from_ms)),
            ("EndTime".to_owned(), iso8601(to_ms)),
            ("MaxResults".to_owned(), "1000".to_owned()),
        ];
        let mut changes = Vec::new();
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let mut page = params.clone();
            page.extend(token.take().map(|t| ("NextToken".to_owned(), t)));
            let answer = self.call(ACTION, &page).await?;
            let (page_changes, next) = parse_spot_prices(&answer, instance_type, zone).map_err(unreadable(ACTION))?;
            changes.extend(page_changes);
            match next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        changes.sort_by_key(|c| c.at_ms);
        changes.dedup_by_key(|c| c.at_ms);
        Ok(changes)
    }

    /// One signed call, retried on throttling, 5xx and broken connections; the XML answer.
    async fn call(&self, action: &'static str, params: &[(String, String)]) -> Result<String, Ec2Error> {
        let mut form = format!("Action={action}&Version={API_VERSION}");
        for (name, value) in params {
            form.push('&');
            form.push_str(&encode(name));
            form.push('=');
            form.push_str(&encode(value));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(action, &form).await;
            let retry = match &outcome {
                Err(Ec2Error::Unreachable { .. }) => true,
                Err(Ec2Error::Refused { code, .. }) => retryable(code),
                _ => false,
            };
            if !retry || attempt >= ATTEMPTS {
                return outcome;
            }
            tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
        }
    }

    async fn attempt(&self, action: &'static str, form: &str) -> Result<String, Ec2Error> {
        let credentials = match &self.credentials {
            Some(provider) => {
                provider.provide_credentials().await.map_err(|e| Ec2Error::Credentials(super::error_text(&e)))?
            }
            None => return Err(Ec2Error::Credentials("no credential provider is configured".into())),
        };
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Ec2Error::Sign(e.to_string()))?
            .into();
        let url = format!("{}/", self.endpoint);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = [("content-type", content_type)];
        let signable =
            SignableRequest::new("POST", url.as_str(), headers.iter().copied(), SignableBody::Bytes(form.as_bytes()))
                .map_err(|e| Ec2Error::Sign(e.to_string()))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|e| Ec2Error::Sign(e.to_string()))?.into_parts();
        let mut request = self.http.post(&url).header("content-type", content_type).body(form.to_owned());
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        self.meter.record("EC2", action);
        let unreachable = |e: reqwest::Error| Ec2Error::Unreachable { action, message: error_chain(&e) };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(text);
        }
        let (code, message) = parse_error(&text).unwrap_or_else(|| {
            let code = if status.is_server_error() { "ServerError" } else { "HttpError" };
            (code.to_owned(), format!("HTTP {status}: {}", text.chars().take(300).collect::<String>()))
        });
        Err(Ec2Error::Refused { action, code, message })
    }
}

/// EC2's public endpoint in `region`.
fn default_endpoint(region: &str) -> String {
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("https://ec2.{region}.{suffix}")
}

/// Error codes worth another attempt.
fn retryable(code: &str) -> bool {
    matches!(code, "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "ServerError" | "InternalError")
        || code.eq_ignore_ascii_case("Unavailable")
}

/// Form encoding as SigV4 canonicalizes it: everything but `A-Z a-z 0-9 - _ . ~` escaped.
fn encode(value: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(value, SET).to_string()
}

/// `ms` as EC2 wants times: `2026-12-01T10:00:00Z`.
fn iso8601(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn unreadable(action: &'static str) -> impl Fn(XmlDecodeError) -> Ec2Error {
    move |e| Ec2Error::Answer { action, message: e.to_string() }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The text of the element `tag` is at.
fn text(tag: &mut ScopedDecoder<'_, '_>) -> Result<String, XmlDecodeError> {
    Ok(try_data(tag)?.trim().to_owned())
}

/// The instances of a `DescribeInstances` answer, and its next page's token.
fn parse_instances(xml: &str) -> Result<(Vec<Ec2Instance>, Option<String>), XmlDecodeError> {
    let mut document = Document::new(xml);
    let mut root = document.root_element()?;
    let (mut instances, mut next) = (Vec::new(), None);
    while let Some(mut tag) = root.next_tag() {
        if tag.start_el().matches("nextToken") {
            next = Some(text(&mut tag)?).filter(|t| !t.is_empty());
        } else if tag.start_el().matches("reservationSet") {
            while let Some(mut reservation) = tag.next_tag() {
                while let Some(mut field) = reservation.next_tag() {
                    if field.start_el().matches("instancesSet") {
                        while let Some(mut item) = field.next_tag() {
                            instances.extend(parse_instance(&mut item)?);
                        }
                    }
                }
            }
        }
    }
    Ok((instances, next))
}

fn parse_instance(item: &mut ScopedDecoder<'_, '_>) -> Result<Option<Ec2Instance>, XmlDecodeError> {
    let (mut id, mut instance_type, mut zone, mut spot) = (None, None, None, false);
    while let Some(mut field) = item.next_tag() {
        let name = field.start_el().local().to_owned();
        match name.as_str() {
            "instanceId" => id = Some(text(&mut field)?),
            "instanceType" => instance_type = Some(text(&mut field)?),
            "instanceLifecycle" => spot = text(&mut field)? == "spot",
            "placement" => {
                while let Some(mut placement) = field.next_tag() {
                    if placement.start_el().matches("availabilityZone") {
                        zone = Some(text(&mut placement)?).filter(|z| !z.is_empty());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(id.zip(instance_type).map(|(id, instance_type)| Ec2Instance { id, instance_type, zone, spot }))
}

/// The price changes of a `DescribeSpotPriceHistory` answer for `instance_type` in `zone`, and
/// its next page's token.
fn parse_spot_prices(
    xml: &str,
    instance_type: &str,
    zone: &str,
) -> Result<(Vec<SpotPriceChange>, Option<String>), XmlDecodeError> {
    let mut document = Document::new(xml);
    let mut root = document.root_element()?;
    let (mut changes, mut next) = (Vec::new(), None);
    while let Some(mut tag) = root.next_tag() {
        if tag.start_el().matches("nextToken") {
            next = Some(text(&mut tag)?).filter(|t| !t.is_empty());
        } else if tag.start_el().matches("spotPriceHistorySet") {
            while let Some(mut item) = tag.next_tag() {
                let (mut kind, mut place, mut price, mut at) = (None, None, None, None);
                while let Some(mut field) = item.next_tag() {
                    let name = field.start_el().local().to_owned();
                    match name.as_str() {
                        "instanceType" => kind = Some(text(&mut field)?),
                        "availabilityZone" => place = Some(text(&mut field)?),
                        "spotPrice" => {
                            let value = text(&mut field)?;
                            let parsed = value.parse::<f64>().ok().filter(|p| p.is_finite() && *p >= 0.0);
                            price = Some(parsed.ok_or_else(|| {
                                XmlDecodeError::custom(format!("spotPrice `{value}` is not a price"))
                            })?);
                        }
                        "timestamp" => {
                            let value = text(&mut field)?;
                            let parsed = chrono::DateTime::parse_from_rfc3339(&value).map_err(|e| {
                                XmlDecodeError::custom(format!("timestamp `{value}` is not a time: {e}"))
                            })?;
                            at = Some(parsed.timestamp_millis());
                        }
                        _ => {}
                    }
                }
                let wanted = kind.as_deref() == Some(instance_type) && place.as_deref() == Some(zone);
                if let (true, Some(usd_per_hour), Some(at_ms)) = (wanted, price, at) {
                    changes.push(SpotPriceChange { at_ms, usd_per_hour });
                }
            }
        }
    }
    Ok((changes, next))
}

/// The code and message of an EC2 error answer (`<Response><Errors><Error>…`).
fn parse_error(xml: &str) -> Option<(String, String)> {
    let mut document = Document::new(xml);
    let mut root = document.root_element().ok()?;
    while let Some(mut tag) = root.next_tag() {
        if !tag.start_el().matches("Errors") {
            continue;
        }
        while let Some(mut error) = tag.next_tag() {
            let (mut code, mut message) = (None, String::new());
            while let Some(mut field) = error.next_tag() {
                let name = field.start_el().local().to_owned();
                match name.as_str() {
                    "Code" => code = text(&mut field).ok(),
                    "Message" => message = text(&mut field).unwrap_or_default(),
                    _ => {}
                }
            }
            if let Some(code) = code {
                return Some((code, message));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
