//! Deploy, diff, outputs and teardown through CloudFormation change sets.
//!
//! Deploy creates a change set (CREATE for a new stack, UPDATE otherwise, as the emulator
//! requires it explicit), shows it, asks before executing in a protected environment, executes
//! it, streams stack events until the stack settles, and returns the outputs. A change set with
//! no changes is success. A stack left in ROLLBACK_COMPLETE (a failed first create) cannot be
//! updated, so it is deleted and created again. Teardown empties the stack's buckets (every
//! version and delete marker) before deleting the stack, unless they are retained (a
//! protected environment), when it leaves them and their data alone.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{
    Capability, ChangeAction, ChangeSetStatus, ChangeSetType, Replacement, StackStatus, Tag,
};
use aws_sdk_cloudformation::Client;

/// Largest template CloudFormation accepts inline.
pub const MAX_INLINE_TEMPLATE: usize = 51_200;

/// Deployment errors. AWS errors are carried as text: no SDK types in this crate's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// An AWS call failed.
    #[error("{operation}: {message}")]
    Aws {
        /// The API operation.
        operation: &'static str,
        /// AWS's code and message.
        message: String,
    },
    /// The change set could not be created for a reason other than "no changes".
    #[error("change set failed: {0}")]
    ChangeSetFailed(String),
    /// The stack ended in a failed state; the reasons come from its events.
    #[error("stack {stack} ended {status}: {reasons}")]
    StackFailed {
        /// The stack.
        stack: String,
        /// Its final status.
        status: String,
        /// The failed resources and why.
        reasons: String,
    },
    /// The user declined the change set.
    #[error("not applied: the change set was declined")]
    Declined,
    /// The stack does not exist.
    #[error("stack {0} does not exist")]
    NoStack(String),
    /// The template is too large to send inline and no bucket was named for it.
    #[error("template is {0} bytes; CloudFormation takes at most {MAX_INLINE_TEMPLATE} inline: set `template_bucket` in the environment")]
    TemplateTooLarge(usize),
    /// Waiting took longer than allowed.
    #[error("gave up waiting for {0}")]
    Timeout(String),
    /// S3 refused to delete some objects (Object Lock, access denied): the bucket cannot be
    /// emptied, so the stack is left as it is.
    #[error("bucket {bucket}: could not delete {count} object(s): {objects}")]
    NotEmptied {
        /// The bucket.
        bucket: String,
        /// How many deletions failed.
        count: usize,
        /// The first keys (with version) and S3's code and message for each.
        objects: String,
    },
}

/// Keys named in a [`DeployError::NotEmptied`]; the rest are counted.
const NAMED_FAILURES: usize = 10;

/// What a teardown did with the stack's buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Objects and versions deleted from emptied buckets.
    pub removed: u64,
    /// Buckets left in place with their data (a protected environment's `Retain`).
    pub kept: Vec<String>,
}

/// What happens to the stack's buckets when it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buckets {
    /// Empty them (every version and delete marker) so the stack can delete them.
    Empty,
    /// Leave them and their data: the template retains them (protected environments).
    Keep,
}

fn aws<E: ProvideErrorMetadata + std::error::Error>(operation: &'static str) -> impl Fn(E) -> DeployError {
    move |error| DeployError::Aws { operation, message: error_message(&error) }
}

/// An AWS error as one line: its code and message, or without an AWS answer (no credentials,
/// no network) the cause chain, innermost last.
pub(crate) fn error_message<E: ProvideErrorMetadata + std::error::Error>(error: &E) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (_, Some(message)) => message.to_owned(),
        _ => {
            let mut chain = vec![error.to_string()];
            let mut source = error.source();
            while let Some(cause) = source {
                let text = cause.to_string();
                if chain.last() != Some(&text) {
                    chain.push(text);
                }
                source = cause.source();
            }
            chain.join(": ")
        }
    }
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChange {
    /// `add`, `modify`, `remove` or `replace`.
    pub action: &'static str,
    /// The template's name for the resource.
    pub logical_id: String,
    /// The resource type.
    pub resource_type: String,
}

impl std::fmt::Display for PlannedChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<8} {} ({})", self.action, self.logical_id, self.resource_type)
    }
}

/// A stack event worth showing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The resource.
    pub logical_id: String,
    /// Its new status.
    pub status: String,
    /// Why, for failures.
    pub reason: Option<String>,
}

/// A resource that no longer matches the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftedResource {
    /// The template's name for it.
    pub logical_id: String,
    /// Its type.
    pub resource_type: String,
    /// `MODIFIED` or `DELETED`.
    pub status: String,
}

/// The result of drift detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// `IN_SYNC`, `DRIFTED`, ...
    pub status: String,
    /// What drifted.
    pub resources: Vec<DriftedResource>,
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployOutcome {
    /// The stack already matched the template.
    Unchanged,
    /// The changes were applied.
    Applied(Vec<PlannedChange>),
}

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Stack name.
    pub stack: String,
    /// Template body.
    pub template: String,
    /// Stack-level tags.
    pub tags: BTreeMap<String, String>,
    /// Turn termination protection on.
    pub protected: bool,
}

/// Drives CloudFormation (and S3, to empty buckets) for one region.
#[derive(Debug, Clone)]
pub struct Deployer {
    cfn: Client,
    s3: aws_sdk_s3::Client,
    poll: Duration,
    max_polls: u32,
    template_bucket: Option<String>,
}

fn is_missing(error: &impl ProvideErrorMetadata) -> bool {
    error.message().is_some_and(|m| m.contains("does not exist"))
}

fn no_changes(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

fn terminal(status: &StackStatus) -> bool {
    let text = status.as_str();
    text.ends_with("_COMPLETE") || text.ends_with("_FAILED")
}

fn failed(status: &StackStatus) -> bool {
    let text = status.as_str();
    text.ends_with("_FAILED") || text.contains("ROLLBACK")
}

impl Deployer {
    /// A deployer with these clients, polling every `poll`.
    pub fn new(cfn: Client, s3: aws_sdk_s3::Client, poll: Duration) -> Self {
        Self { cfn, s3, poll, max_polls: 4 * 3600, template_bucket: None }
    }

    /// The S3 client (for the stack's buckets).
    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// Templates over [`MAX_INLINE_TEMPLATE`] are uploaded to `bucket` and passed by URL.
    pub fn with_template_bucket(mut self, bucket: Option<String>) -> Self {
        self.template_bucket = bucket.filter(|b| !b.is_empty());
        self
    }

    /// Uploads a large template and returns its URL (path-style, which CloudFormation accepts
    /// in every region).
    async fn upload_template(&self, stack: &str, template: &str) -> Result<String, DeployError> {
        let Some(bucket) = &self.template_bucket else {
            return Err(DeployError::TemplateTooLarge(template.len()));
        };
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        template.hash(&mut hasher);
        let key = format!("batchgrid/{stack}/template-{:016x}.yaml", hasher.finish());
        self.s3
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(template.as_bytes().to_vec().into())
            .send()
            .await
            .map_err(|e| aws("PutObject")(e.into_service_error()))?;
        let region = self.s3.config().region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".to_owned());
        Ok(format!("https://s3.{region}.amazonaws.com/{bucket}/{key}"))
    }

    /// The stack's status, or `None` when it does not exist.
    pub async fn status(&self, stack: &str) -> Result<Option<StackStatus>, DeployError> {
        match self.cfn.describe_stacks().stack_name(stack).send().await {
            Ok(out) => Ok(out.stacks().first().and_then(|s| s.stack_status().cloned())),
            Err(error) => {
                let error = error.into_service_error();
                if is_missing(&error) {
                    Ok(None)
                } else {
                    Err(aws("DescribeStacks")(error))
                }
            }
        }
    }

    /// The stack's outputs; where the stack reports none although `template` declares some (the
    /// local emulator does not compute outputs for stacks built from change sets), the outputs
    /// that are a plain `!Ref` are read from the stack's resources instead.
    pub async fn outputs_for(&self, stack: &str, template: &str) -> Result<BTreeMap<String, String>, DeployError> {
        let outputs = self.outputs(stack).await?;
        if !outputs.is_empty() {
            return Ok(outputs);
        }
        let parsed: serde_yaml::Value = serde_yaml::from_str(template).unwrap_or_default();
        let Some(declared) = parsed.get("Outputs").and_then(|o| o.as_mapping()) else { return Ok(outputs) };
        let resources = self.stack_resources(stack).await?;
        let physical: BTreeMap<&str, &str> =
            resources.iter().filter_map(|r| Some((r.logical_resource_id()?, r.physical_resource_id()?))).collect();
        let mut derived = BTreeMap::new();
        for (key, output) in declared {
            let referenced = match output.get("Value") {
                Some(serde_yaml::Value::Tagged(tagged)) if tagged.tag == "!Ref" => tagged.value.as_str(),
                _ => None,
            };
            if let (Some(key), Some(id)) = (key.as_str(), referenced.and_then(|r| physical.get(r))) {
                derived.insert(key.to_owned(), (*id).to_owned());
            }
        }
        Ok(derived)
    }

    /// The template the stack was last deployed with, as sent; `None` when there is no stack.
    pub async fn deployed_template(&self, stack: &str) -> Result<Option<String>, DeployError> {
        match self.cfn.get_template().stack_name(stack).send().await {
            Ok(out) => Ok(out.template_body().map(str::to_owned)),
            Err(error) => {
                let error = error.into_service_error();
                if is_missing(&error) {
                    Ok(None)
                } else {
                    Err(aws("GetTemplate")(error))
                }
            }
        }
    }

    /// The physical id of the stack's resource `logical_id`, or `None` when the stack has no
    /// such resource (a parked stack has no database).
    pub async fn physical_id(&self, stack: &str, logical_id: &str) -> Result<Option<String>, DeployError> {
        Ok(self
            .stack_resources(stack)
            .await?
            .iter()
            .find(|r| r.logical_resource_id() == Some(logical_id))
            .and_then(|r| r.physical_resource_id())
            .map(str::to_owned))
    }

    /// The stack's resources (DescribeStackResources).
    async fn stack_resources(
        &self,
        stack: &str,
    ) -> Result<Vec<aws_sdk_cloudformation::types::StackResource>, DeployError> {
        let described = self
            .cfn
            .describe_stack_resources()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| aws("DescribeStackResources")(e.into_service_error()))?;
        Ok(described.stack_resources.unwrap_or_default())
    }

    /// DescribeStacks for one stack; a missing stack is [`DeployError::NoStack`].
    async fn describe_stack(
        &self,
        stack: &str,
    ) -> Result<aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput, DeployError> {
        self.cfn.describe_stacks().stack_name(stack).send().await.map_err(|e| {
            let error = e.into_service_error();
            if is_missing(&error) {
                DeployError::NoStack(stack.to_owned())
            } else {
                aws("DescribeStacks")(error)
            }
        })
    }

    /// The stack's outputs as CloudFormation reports them.
    pub async fn outputs(&self, stack: &str) -> Result<BTreeMap<String, String>, DeployError> {
        let out = self.describe_stack(stack).await?;
        let mut outputs = BTreeMap::new();
        for output in out.stacks().first().map(|s| s.outputs()).unwrap_or_default() {
            if let (Some(key), Some(value)) = (output.output_key(), output.output_value()) {
                outputs.insert(key.to_owned(), value.to_owned());
            }
        }
        Ok(outputs)
    }

    /// Creates a change set and waits for it; `None` when it holds no changes (and is gone).
    async fn change_set(
        &self,
        request: &DeployRequest,
        kind: ChangeSetType,
    ) -> Result<Option<(String, Vec<PlannedChange>)>, DeployError> {
        let template_url = if request.template.len() > MAX_INLINE_TEMPLATE {
            Some(self.upload_template(&request.stack, &request.template).await?)
        } else {
            None
        };
        let name = format!(
            "batchgrid-{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
        );
        let tags: Vec<Tag> = request.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        self.cfn
            .create_change_set()
            .stack_name(&request.stack)
            .change_set_name(&name)
            .change_set_type(kind)
            .set_template_body(template_url.is_none().then(|| request.template.clone()))
            .set_template_url(template_url)
            .capabilities(Capability::CapabilityIam)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| aws("CreateChangeSet")(e.into_service_error()))?;
        for _ in 0..self.max_polls {
            let described = self
                .cfn
                .describe_change_set()
                .stack_name(&request.stack)
                .change_set_name(&name)
                .send()
                .await
                .map_err(|e| aws("DescribeChangeSet")(e.into_service_error()))?;
            match described.status() {
                Some(ChangeSetStatus::CreateComplete) => {
                    let changes = described
                        .changes()
                        .iter()
                        .filter_map(|c| c.resource_change())
                        .map(|rc| PlannedChange {
                            action: match (rc.action(), rc.replacement()) {
                                (Some(ChangeAction::Add), _) => "add",
                                (Some(ChangeAction::Remove), _) => "remove",
                                (_, Some(Replacement::True)) => "replace",
                                _ => "modify",
                            },
                            logical_id: rc.logical_resource_id().unwrap_or_default().to_owned(),
                            resource_type: rc.resource_type().unwrap_or_default().to_owned(),
                        })
                        .collect();
                    return Ok(Some((name, changes)));
                }
                Some(ChangeSetStatus::Failed) => {
                    let reason = described.status_reason().unwrap_or_default().to_owned();
                    let _ = self.cfn.delete_change_set().stack_name(&request.stack).change_set_name(&name).send().await;
                    if no_changes(&reason) {
                        return Ok(None);
                    }
                    return Err(DeployError::ChangeSetFailed(reason));
                }
                _ => tokio::time::sleep(self.poll).await,
            }
        }
        Err(DeployError::Timeout(format!("change set {name}")))
    }

    /// What a deploy would change, without changing anything.
    pub async fn diff(&self, request: &DeployRequest) -> Result<Vec<PlannedChange>, DeployError> {
        // A change set for a stack that does not exist would leave one in REVIEW_IN_PROGRESS:
        // a new stack simply adds every resource.
        if self.status(&request.stack).await?.is_none() {
            return Ok(self.plan_new(request));
        }
        match self.change_set(request, ChangeSetType::Update).await? {
            None => Ok(Vec::new()),
            Some((name, changes)) => {
                self.cfn
                    .delete_change_set()
                    .stack_name(&request.stack)
                    .change_set_name(&name)
                    .send()
                    .await
                    .map_err(|e| aws("DeleteChangeSet")(e.into_service_error()))?;
                Ok(changes)
            }
        }
    }

    /// A stack that does not exist yet would add every resource of the template.
    fn plan_new(&self, request: &DeployRequest) -> Vec<PlannedChange> {
        let parsed: serde_yaml::Value = serde_yaml::from_str(&request.template).unwrap_or_default();
        let mut changes = Vec::new();
        if let Some(resources) = parsed.get("Resources").and_then(|r| r.as_mapping()) {
            for (id, body) in resources {
                changes.push(PlannedChange {
                    action: "add",
                    logical_id: id.as_str().unwrap_or_default().to_owned(),
                    resource_type: body.get("Type").and_then(|t| t.as_str()).unwrap_or_default().to_owned(),
                });
            }
        }
        changes
    }

    /// Deploys: change set, confirmation, execution, events until settled, outputs.
    pub async fn deploy(
        &self,
        request: &DeployRequest,
        confirm: &mut dyn FnMut(&[PlannedChange]) -> bool,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(DeployOutcome, BTreeMap<String, String>), DeployError> {
        let mut status = self.status(&request.stack).await?;
        if status == Some(StackStatus::RollbackComplete) {
            // A failed first create leaves a stack that can only be deleted.
            on_event(&Event {
                logical_id: request.stack.clone(),
                status: "ROLLBACK_COMPLETE: deleting to create again".into(),
                reason: None,
            });
            self.delete_and_wait(&request.stack, on_event).await?;
            status = None;
        }
        let kind = if status.is_none() { ChangeSetType::Create } else { ChangeSetType::Update };
        let Some((name, changes)) = self.change_set(request, kind).await? else {
            return Ok((DeployOutcome::Unchanged, self.outputs_for(&request.stack, &request.template).await?));
        };
        if !confirm(&changes) {
            let _ = self.cfn.delete_change_set().stack_name(&request.stack).change_set_name(&name).send().await;
            return Err(DeployError::Declined);
        }
        let seen = self.event_ids(&request.stack).await;
        self.cfn
            .execute_change_set()
            .stack_name(&request.stack)
            .change_set_name(&name)
            .send()
            .await
            .map_err(|e| aws("ExecuteChangeSet")(e.into_service_error()))?;
        self.wait(&request.stack, seen, on_event).await?;
        if request.protected {
            self.cfn
                .update_termination_protection()
                .stack_name(&request.stack)
                .enable_termination_protection(true)
                .send()
                .await
                .map_err(|e| aws("UpdateTerminationProtection")(e.into_service_error()))?;
        }
        Ok((DeployOutcome::Applied(changes), self.outputs_for(&request.stack, &request.template).await?))
    }

    async fn event_ids(&self, stack: &str) -> HashSet<String> {
        match self.cfn.describe_stack_events().stack_name(stack).send().await {
            Ok(out) => out.stack_events().iter().filter_map(|e| e.event_id().map(str::to_owned)).collect(),
            Err(_) => HashSet::new(),
        }
    }

    /// Streams new events until the stack reaches a terminal status; fails with the reasons of
    /// failed resources when that status is a failure.
    async fn wait(
        &self,
        stack: &str,
        mut seen: HashSet<String>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(), DeployError> {
        let mut reasons: Vec<String> = Vec::new();
        for _ in 0..self.max_polls {
            if let Ok(out) = self.cfn.describe_stack_events().stack_name(stack).send().await {
                let mut fresh: Vec<_> =
                    out.stack_events().iter().filter(|e| e.event_id().is_some_and(|id| !seen.contains(id))).collect();
                fresh.reverse(); // Oldest first.
                for event in fresh {
                    seen.insert(event.event_id().unwrap_or_default().to_owned());
                    let status = event.resource_status().map(|s| s.as_str().to_owned()).unwrap_or_default();
                    let reason = event.resource_status_reason().map(str::to_owned);
                    if status.ends_with("_FAILED") {
                        if let Some(reason) = &reason {
                            reasons.push(format!("{}: {reason}", event.logical_resource_id().unwrap_or_default()));
                        }
                    }
                    on_event(&Event {
                        logical_id: event.logical_resource_id().unwrap_or_default().to_owned(),
                        status,
                        reason,
                    });
                }
            }
            match self.status(stack).await? {
                None => return Ok(()),
                Some(status) if terminal(&status) => {
                    if failed(&status) {
                        return Err(DeployError::StackFailed {
                            stack: stack.to_owned(),
                            status: status.as_str().to_owned(),
                            reasons: if reasons.is_empty() { "no reason given".into() } else { reasons.join("; ") },
                        });
                    }
                    return Ok(());
                }
                Some(_) => tokio::time::sleep(self.poll).await,
            }
        }
        Err(DeployError::Timeout(format!("stack {stack}")))
    }

    async fn delete_and_wait(&self, stack: &str, on_event: &mut dyn FnMut(&Event)) -> Result<(), DeployError> {
        let seen = self.event_ids(stack).await;
        self.cfn
            .delete_stack()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| aws("DeleteStack")(e.into_service_error()))?;
        // A deleted stack stops resolving by name, which `wait` takes as done.
        self.wait(stack, seen, on_event).await
    }

    /// Runs drift detection and reports the stack's status and each drifted resource.
    pub async fn drift(&self, stack: &str) -> Result<Drift, DeployError> {
        use aws_sdk_cloudformation::types::{StackDriftDetectionStatus, StackResourceDriftStatus};
        let started = self
            .cfn
            .detect_stack_drift()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| aws("DetectStackDrift")(e.into_service_error()))?;
        let id = started.stack_drift_detection_id().unwrap_or_default().to_owned();
        for _ in 0..self.max_polls {
            let status = self
                .cfn
                .describe_stack_drift_detection_status()
                .stack_drift_detection_id(&id)
                .send()
                .await
                .map_err(|e| aws("DescribeStackDriftDetectionStatus")(e.into_service_error()))?;
            match status.detection_status() {
                Some(StackDriftDetectionStatus::DetectionInProgress) | None => tokio::time::sleep(self.poll).await,
                Some(StackDriftDetectionStatus::DetectionFailed) => {
                    return Err(DeployError::Aws {
                        operation: "DetectStackDrift",
                        message: status.detection_status_reason().unwrap_or("detection failed").to_owned(),
                    })
                }
                _ => {
                    let drifts = self
                        .cfn
                        .describe_stack_resource_drifts()
                        .stack_name(stack)
                        .stack_resource_drift_status_filters(StackResourceDriftStatus::Modified)
                        .stack_resource_drift_status_filters(StackResourceDriftStatus::Deleted)
                        .send()
                        .await
                        .map_err(|e| aws("DescribeStackResourceDrifts")(e.into_service_error()))?;
                    let resources = drifts
                        .stack_resource_drifts()
                        .iter()
                        .map(|d| DriftedResource {
                            logical_id: d.logical_resource_id().unwrap_or_default().to_owned(),
                            resource_type: d.resource_type().unwrap_or_default().to_owned(),
                            status: d.stack_resource_drift_status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                        })
                        .collect();
                    let stack_status = status.stack_drift_status().map(|s| s.as_str().to_owned()).unwrap_or_default();
                    return Ok(Drift { status: stack_status, resources });
                }
            }
        }
        Err(DeployError::Timeout(format!("drift detection of {stack}")))
    }

    /// Deletes the stack. With [`Buckets::Empty`], `buckets` are emptied first (every version
    /// and delete marker); with [`Buckets::Keep`] they are left alone, data and all, for the
    /// template's `Retain` to keep them when the stack goes.
    pub async fn teardown(
        &self,
        stack: &str,
        buckets: &[String],
        policy: Buckets,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Teardown, DeployError> {
        let described = self.describe_stack(stack).await?;
        let Some(existing) = described.stacks().first() else {
            return Err(DeployError::NoStack(stack.to_owned()));
        };
        // A protected environment's stack has termination protection (deploy turns it on);
        // the caller asked for the teardown in so many words, so it comes off first.
        let termination_protected = existing.enable_termination_protection() == Some(true);
        let mut result = Teardown::default();
        for bucket in buckets {
            let status = match policy {
                Buckets::Keep => {
                    result.kept.push(bucket.clone());
                    "kept with its data (retained)".to_owned()
                }
                Buckets::Empty => {
                    let removed = self.empty_bucket(bucket).await?;
                    result.removed += removed;
                    format!("emptied ({removed} objects and versions)")
                }
            };
            on_event(&Event { logical_id: bucket.clone(), status, reason: None });
        }
        if termination_protected {
            self.cfn
                .update_termination_protection()
                .stack_name(stack)
                .enable_termination_protection(false)
                .send()
                .await
                .map_err(|e| aws("UpdateTerminationProtection")(e.into_service_error()))?;
            on_event(&Event {
                logical_id: stack.to_owned(),
                status: "termination protection off".into(),
                reason: None,
            });
        }
        self.delete_and_wait(stack, on_event).await?;
        Ok(result)
    }

    /// Deletes every version and delete marker, a page at a time. A page whose deletions
    /// S3 refuses (Object Lock, access denied) stops it with those keys: listing again would
    /// return the same keys forever.
    async fn empty_bucket(&self, bucket: &str) -> Result<u64, DeployError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let mut removed = 0;
        loop {
            let page = match self.s3.list_object_versions().bucket(bucket).max_keys(1000).send().await {
                Ok(page) => page,
                Err(error) => {
                    let error = error.into_service_error();
                    if error.code() == Some("NoSuchBucket") {
                        return Ok(removed);
                    }
                    return Err(aws("ListObjectVersions")(error));
                }
            };
            let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
            let markers = page.delete_markers().iter().map(|m| (m.key(), m.version_id()));
            let ids: Vec<ObjectIdentifier> = versions
                .chain(markers)
                .filter_map(|(key, version)| {
                    ObjectIdentifier::builder()
                        .key(key.unwrap_or_default())
                        .set_version_id(version.map(str::to_owned))
                        .build()
                        .ok()
                })
                .collect();
            if ids.is_empty() {
                return Ok(removed);
            }
            let asked = ids.len();
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| DeployError::Aws { operation: "DeleteObjects", message: e.to_string() })?;
            let out = self
                .s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| aws("DeleteObjects")(e.into_service_error()))?;
            // Quiet mode reports only the failures.
            let failures = out.errors();
            removed += (asked - failures.len().min(asked)) as u64;
            if !failures.is_empty() {
                return Err(not_emptied(bucket, failures));
            }
        }
    }
}

/// The error for a page of refused deletions: the first keys, each with its version and S3's
/// code and message.
fn not_emptied(bucket: &str, failures: &[aws_sdk_s3::types::Error]) -> DeployError {
    let mut objects: Vec<String> = failures
        .iter()
        .take(NAMED_FAILURES)
        .map(|f| {
            let version = f.version_id().map(|v| format!(" (version {v})")).unwrap_or_default();
            let code = f.code().unwrap_or("unknown error");
            let message = f.message().map(|m| format!(": {m}")).unwrap_or_default();
            format!("{}{version} {code}{message}", f.key().unwrap_or("?"))
        })
        .collect();
    if failures.len() > NAMED_FAILURES {
        objects.push(format!("and {} more", failures.len() - NAMED_FAILURES));
    }
    DeployError::NotEmptied { bucket: bucket.to_owned(), count: failures.len(), objects: objects.join("; ") }
}

#[cfg(test)]
pub(crate) mod tests;
