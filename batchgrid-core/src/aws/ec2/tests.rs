use std::sync::{Arc, Mutex};

use aws_credential_types::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A `DescribeInstances` answer as EC2 sends it (trimmed): nested `item`s in groups, tags and
/// network interfaces must not be taken for instances.
const INSTANCES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>8f7724cf-496f-496e-8fe3-example</requestId>
  <reservationSet>
    <item>
      <reservationId>r-1234567890abcdef0</reservationId>
      <groupSet/>
      <instancesSet>
        <item>
          <instanceId>i-0spot</instanceId>
          <imageId>ami-0abcdef1234567890</imageId>
          <instanceState><code>16</code><name>running</name></instanceState>
          <instanceType>m7g.xlarge</instanceType>
          <placement><availabilityZone>us-east-1b</availabilityZone><tenancy>default</tenancy></placement>
          <groupSet><item><groupId>sg-1</groupId><groupName>workers</groupName></item></groupSet>
          <instanceLifecycle>spot</instanceLifecycle>
          <tagSet><item><key>aws:autoscaling:groupName</key><value>grid-workers</value></item></tagSet>
          <networkInterfaceSet><item><networkInterfaceId>eni-1</networkInterfaceId>
            <privateIpAddressesSet><item><privateIpAddress>10.0.0.5</privateIpAddress></item></privateIpAddressesSet>
          </item></networkInterfaceSet>
        </item>
        <item>
          <instanceId>i-0ondemand</instanceId>
          <instanceState><code>48</code><name>terminated</name></instanceState>
          <instanceType>c7g.large</instanceType>
          <placement><availabilityZone>us-east-1a</availabilityZone></placement>
        </item>
      </instancesSet>
    </item>
  </reservationSet>
  <nextToken>page-2</nextToken>
</DescribeInstancesResponse>"#;

/// The example answer of EC2's API reference, with a change in another zone and type added.
const PRICES: &str = r#"<DescribeSpotPriceHistoryResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
  <spotPriceHistorySet>
    <item>
      <instanceType>m7g.xlarge</instanceType>
      <productDescription>Linux/UNIX</productDescription>
      <spotPrice>0.064100</spotPrice>
      <timestamp>2026-11-30T14:10:07.000Z</timestamp>
      <availabilityZone>us-east-1b</availabilityZone>
    </item>
    <item>
      <instanceType>m7g.xlarge</instanceType>
      <productDescription>Linux/UNIX</productDescription>
      <spotPrice>0.071000</spotPrice>
      <timestamp>2026-11-30T14:10:07.000Z</timestamp>
      <availabilityZone>us-east-1c</availabilityZone>
    </item>
    <item>
      <instanceType>m7g.xlarge</instanceType>
      <productDescription>Linux/UNIX</productDescription>
      <spotPrice>0.060000</spotPrice>
      <timestamp>2026-11-30T09:00:00Z</timestamp>
      <availabilityZone>us-east-1b</availabilityZone>
    </item>
  </spotPriceHistorySet>
  <nextToken/>
</DescribeSpotPriceHistoryResponse>"#;

const UNAUTHORIZED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>ab12</RequestID></Response>"#;

#[test]
fn instances_are_read_with_their_type_zone_and_purchase() {
    let (instances, next) = parse_instances(INSTANCES).expect("parsed");
    assert_eq!(
        instances,
        vec![
            Ec2Instance {
                id: "i-0spot".into(),
                instance_type: "m7g.xlarge".into(),
                zone: Some("us-east-1b".into()),
                spot: true
            },
            Ec2Instance {
                id: "i-0ondemand".into(),
                instance_type: "c7g.large".into(),
                zone: Some("us-east-1a".into()),
                spot: false
            },
        ]
    );
    assert_eq!(next.as_deref(), Some("page-2"));
}

#[test]
fn spot_prices_of_the_asked_zone_are_read_and_an_empty_token_ends_the_pages() {
    let (changes, next) = parse_spot_prices(PRICES, "m7g.xlarge", "us-east-1b").expect("parsed");
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).expect("time").timestamp_millis();
    assert_eq!(
        changes,
        vec![
            SpotPriceChange { at_ms: at("2026-11-30T14:10:07Z"), usd_per_hour: 0.0641 },
            SpotPriceChange { at_ms: at("2026-11-30T09:00:00Z"), usd_per_hour: 0.06 },
        ]
    );
    assert_eq!(next, None);
}

#[test]
fn a_price_that_is_no_number_is_an_error_not_a_zero() {
    let broken = PRICES.replace("0.064100", "n/a");
    let error = parse_spot_prices(&broken, "m7g.xlarge", "us-east-1b").expect_err("refused");
    assert!(error.to_string().contains("`n/a`"), "{error}");
}

#[test]
fn error_answers_give_their_code_and_message() {
    let (code, message) = parse_error(UNAUTHORIZED).expect("an error");
    assert_eq!(code, "UnauthorizedOperation");
    assert!(message.starts_with("You are not authorized"), "{message}");
    assert_eq!(parse_error(PRICES), None);
}

#[test]
fn times_and_parameters_are_written_as_ec2_reads_them() {
    assert_eq!(iso8601(1_764_583_200_000), "2025-12-01T10:00:00Z");
    assert_eq!(encode("Linux/UNIX (Amazon VPC)"), "Linux%2FUNIX%20%28Amazon%20VPC%29");
    assert_eq!(default_endpoint("eu-west-1"), "https://ec2.eu-west-1.amazonaws.com");
    assert_eq!(default_endpoint("cn-north-1"), "https://ec2.cn-north-1.amazonaws.com.cn");
}

/// One request as the loopback server saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: String,
}

/// A loopback HTTP server answering each request with the next of `answers` (status, body),
/// recording what it was sent.
async fn server(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        for (status, answer) in answers {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // The head, then as many body bytes as it announces.
            let (head, body) = loop {
                let Ok(n) = socket.read(&mut buffer).await else { return };
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let head = text[..end].to_owned();
                    let length = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if text.len() >= end + 4 + length || n == 0 {
                        break (head, text[end + 4..].to_owned());
                    }
                }
            };
            record.lock().expect("lock").push(Seen { head, body });
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    (endpoint, seen)
}

async fn client(endpoint: &str, meter: &RequestMeter) -> Ec2Client {
    let config = aws_config::SdkConfig::builder()
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            "test",
        )))
        .build();
    Ec2Client::new(&config, meter).expect("client")
}

#[tokio::test]
async fn a_call_is_a_signed_form_post_and_its_answer_is_read() {
    let (endpoint, seen) = server(vec![(200, PRICES)]).await;
    let meter = RequestMeter::new();
    let ec2 = client(&endpoint, &meter).await;
    let changes = ec2.spot_price_history("m7g.xlarge", "us-east-1b", 1_764_583_200_000, 1_764_586_800_000).await;
    assert_eq!(changes.expect("prices").len(), 2);
    let seen = seen.lock().expect("lock")[0].clone();
    assert!(seen.head.starts_with("POST / HTTP/1.1"), "{}", seen.head);
    let head = seen.head.to_ascii_lowercase();
    assert!(
        head.contains("authorization: aws4-hmac-sha256 credential=akidexample/")
            && head.contains("/us-east-1/ec2/aws4_request"),
        "signed for EC2 in the region: {}",
        seen.head
    );
    assert!(head.contains("x-amz-date:"), "{}", seen.head);
    assert!(head.contains("content-type: application/x-www-form-urlencoded"), "{}", seen.head);
    for part in [
        "Action=DescribeSpotPriceHistory",
        "Version=2016-11-15",
        "InstanceType.1=m7g.xlarge",
        "ProductDescription.1=Linux%2FUNIX",
        "AvailabilityZone=us-east-1b",
        "StartTime=2025-12-01T10%3A00%3A00Z",
        "EndTime=2025-12-01T11%3A00%3A00Z",
    ] {
        assert!(seen.body.split('&').any(|p| p == part), "{part} in {}", seen.body);
    }
    assert_eq!(meter.total_for("EC2"), 1);
}

#[tokio::test]
async fn throttling_is_retried_and_a_refusal_is_not() {
    let throttled = r#"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>slow down</Message></Error></Errors></Response>"#;
    let (endpoint, _) = server(vec![(503, throttled), (200, INSTANCES), (403, UNAUTHORIZED)]).await;
    let meter = RequestMeter::new();
    let ec2 = client(&endpoint, &meter).await;
    // The first page names a second one, which is refused: the refusal is the answer.
    let error = ec2.describe_instances(&["i-0spot".into()]).await.expect_err("refused");
    assert!(matches!(&error, Ec2Error::Refused { code, .. } if code == "UnauthorizedOperation"), "{error}");
    assert_eq!(meter.total_for("EC2"), 3, "throttled once, then two pages");
}
