//! What a rendered template bills for, read from its resources: the NAT gateways and addresses,
//! databases, instances, worker groups and the things billed by use (buckets, queues, secrets,
//! log groups). Only the template is read, so the figures follow what would be deployed.

use serde_yaml::Value;

use super::CostError;

/// Everything in a template that costs money, by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// NAT gateways (logical ids).
    pub nat_gateways: Vec<String>,
    /// Elastic IPs (logical ids).
    pub elastic_ips: Vec<String>,
    /// RDS instances outside an Aurora cluster.
    pub rds_instances: Vec<RdsInstance>,
    /// Aurora Serverless v2 clusters.
    pub aurora_clusters: Vec<AuroraCluster>,
    /// Standalone EC2 instances (the manager).
    pub instances: Vec<Instance>,
    /// Auto Scaling groups (the workers).
    pub groups: Vec<Group>,
    /// S3 buckets (logical ids).
    pub buckets: Vec<String>,
    /// SQS queues (logical ids).
    pub queues: Vec<String>,
    /// Secrets Manager secrets, the databases' managed master secrets included (logical ids).
    pub secrets: Vec<String>,
    /// CloudWatch log groups (logical ids).
    pub log_groups: Vec<String>,
}

/// An RDS instance.
#[derive(Debug, Clone, PartialEq)]
pub struct RdsInstance {
    /// Logical id.
    pub id: String,
    /// Instance class.
    pub class: String,
    /// Standby in a second zone.
    pub multi_az: bool,
    /// Allocated storage in GB.
    pub storage_gb: f64,
}

/// An Aurora Serverless v2 cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct AuroraCluster {
    /// Logical id.
    pub id: String,
    /// Least capacity in ACUs (0: pauses when idle).
    pub min_acu: f64,
    /// Most capacity in ACUs.
    pub max_acu: f64,
    /// Idle seconds before it pauses, when it can.
    pub pause_after_seconds: Option<f64>,
    /// Its `db.serverless` instances.
    pub instances: usize,
}

/// A standalone EC2 instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Logical id.
    pub id: String,
    /// Instance type.
    pub kind: String,
    /// Root volume size in GB.
    pub volume_gb: f64,
    /// Has a public IPv4 address.
    pub public_ip: bool,
}

/// An Auto Scaling group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Logical id.
    pub id: String,
    /// Least instances (what runs while idle).
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// Instance types, in order of preference.
    pub kinds: Vec<String>,
    /// Runs on spot capacity (no on-demand share above the base).
    pub spot: bool,
    /// Each instance's volume in GB (its launch template's).
    pub volume_gb: f64,
    /// Each instance has a public IPv4 address (its launch template's).
    pub public_ip: bool,
}

fn bad(id: &str, message: impl Into<String>) -> CostError {
    CostError::Template { resource: id.to_owned(), message: message.into() }
}

/// A number written as a number or as text (CloudFormation takes both).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&str> {
    value.as_str()
}

/// The logical id a `!Ref X` (or `{Ref: X}`) names.
fn reference(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "!Ref" || tagged.tag == "Ref" => tagged.value.as_str(),
        Value::Mapping(map) => map.get("Ref").and_then(Value::as_str),
        _ => None,
    }
}

/// The size of the first EBS volume of a block device mapping list (0 without one).
fn volume_gb(mappings: &Value) -> f64 {
    mappings.as_sequence().and_then(|list| list.iter().find_map(|m| number(&m["Ebs"]["VolumeSize"]))).unwrap_or(0.0)
}

/// A network interface list asks for a public address.
fn public_ip(interfaces: &Value) -> bool {
    interfaces
        .as_sequence()
        .is_some_and(|list| list.iter().any(|i| i["AssociatePublicIpAddress"].as_bool() == Some(true)))
}

impl Inventory {
    /// Reads a rendered template's resources.
    pub fn of_template(template: &str) -> Result<Self, CostError> {
        let parsed: Value = serde_yaml::from_str(template).map_err(|e| bad("(template)", e.to_string()))?;
        let resources =
            parsed.get("Resources").and_then(Value::as_mapping).ok_or_else(|| bad("(template)", "no Resources"))?;
        let mut inventory = Inventory::default();
        for (id, resource) in resources {
            let id = id.as_str().unwrap_or_default().to_owned();
            let kind = resource.get("Type").and_then(Value::as_str).unwrap_or_default();
            let properties = &resource["Properties"];
            match kind {
                "AWS::EC2::NatGateway" => inventory.nat_gateways.push(id),
                "AWS::EC2::EIP" => inventory.elastic_ips.push(id),
                "AWS::S3::Bucket" => inventory.buckets.push(id),
                "AWS::SQS::Queue" => inventory.queues.push(id),
                "AWS::SecretsManager::Secret" => inventory.secrets.push(id),
                "AWS::Logs::LogGroup" => inventory.log_groups.push(id),
                "AWS::RDS::DBInstance" => inventory.add_rds_instance(&id, properties)?,
                "AWS::RDS::DBCluster" => inventory.add_aurora_cluster(&id, properties)?,
                "AWS::EC2::Instance" => {
                    let kind = text(&properties["InstanceType"]).ok_or_else(|| bad(&id, "no InstanceType"))?;
                    inventory.instances.push(Instance {
                        id: id.clone(),
                        kind: kind.to_owned(),
                        volume_gb: volume_gb(&properties["BlockDeviceMappings"]),
                        public_ip: public_ip(&properties["NetworkInterfaces"]),
                    });
                }
                "AWS::AutoScaling::AutoScalingGroup" => {
                    let group = group(&id, properties, resources)?;
                    inventory.groups.push(group);
                }
                _ => {}
            }
        }
        // Aurora's instances belong to their clusters, which are priced by capacity.
        for cluster in &mut inventory.aurora_clusters {
            cluster.instances = resources
                .values()
                .filter(|r| reference(&r["Properties"]["DBClusterIdentifier"]) == Some(cluster.id.as_str()))
                .count();
        }
        Ok(inventory)
    }

    fn add_rds_instance(&mut self, id: &str, properties: &Value) -> Result<(), CostError> {
        if properties.get("DBClusterIdentifier").is_some() {
            return Ok(()); // a cluster member: priced with its cluster
        }
        let class = text(&properties["DBInstanceClass"]).ok_or_else(|| bad(id, "no DBInstanceClass"))?;
        let storage_gb = number(&properties["AllocatedStorage"]).ok_or_else(|| bad(id, "no AllocatedStorage"))?;
        if properties.get("ManageMasterUserPassword").and_then(Value::as_bool) == Some(true) {
            self.secrets.push(format!("{id} (master secret)"));
        }
        self.rds_instances.push(RdsInstance {
            id: id.to_owned(),
            class: class.to_owned(),
            multi_az: properties["MultiAZ"].as_bool().unwrap_or(false),
            storage_gb,
        });
        Ok(())
    }

    fn add_aurora_cluster(&mut self, id: &str, properties: &Value) -> Result<(), CostError> {
        let scaling = &properties["ServerlessV2ScalingConfiguration"];
        let (Some(min_acu), Some(max_acu)) = (number(&scaling["MinCapacity"]), number(&scaling["MaxCapacity"])) else {
            return Err(bad(id, "only Aurora Serverless v2 clusters (ServerlessV2ScalingConfiguration) are priced"));
        };
        if properties.get("ManageMasterUserPassword").and_then(Value::as_bool) == Some(true) {
            self.secrets.push(format!("{id} (master secret)"));
        }
        self.aurora_clusters.push(AuroraCluster {
            id: id.to_owned(),
            min_acu,
            max_acu,
            pause_after_seconds: (min_acu == 0.0).then(|| number(&scaling["SecondsUntilAutoPause"]).unwrap_or(300.0)),
            instances: 0,
        });
        Ok(())
    }
}

/// A worker group with its launch template's volume and address.
fn group(id: &str, properties: &Value, resources: &serde_yaml::Mapping) -> Result<Group, CostError> {
    let min = number(&properties["MinSize"]).ok_or_else(|| bad(id, "no MinSize"))? as u32;
    let max = number(&properties["MaxSize"]).ok_or_else(|| bad(id, "no MaxSize"))? as u32;
    let policy = &properties["MixedInstancesPolicy"];
    let specification = &policy["LaunchTemplate"]["LaunchTemplateSpecification"];
    let kinds: Vec<String> = policy["LaunchTemplate"]["Overrides"]
        .as_sequence()
        .map(|list| list.iter().filter_map(|o| text(&o["InstanceType"]).map(str::to_owned)).collect())
        .unwrap_or_default();
    if kinds.is_empty() {
        return Err(bad(id, "no instance types (MixedInstancesPolicy.LaunchTemplate.Overrides)"));
    }
    let on_demand_percent = number(&policy["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"]);
    let template_id = reference(&specification["LaunchTemplateId"])
        .ok_or_else(|| bad(id, "its launch template is not a !Ref to one in this template"))?;
    let data = &resources
        .get(template_id)
        .ok_or_else(|| bad(id, format!("launch template {template_id} is not in the template")))?["Properties"]
        ["LaunchTemplateData"];
    Ok(Group {
        id: id.to_owned(),
        min,
        max,
        kinds,
        spot: on_demand_percent == Some(0.0),
        volume_gb: volume_gb(&data["BlockDeviceMappings"]),
        public_ip: public_ip(&data["NetworkInterfaces"]),
    })
}
