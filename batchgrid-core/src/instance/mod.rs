//! A worker on an instance of the grid's Auto Scaling group, behaving as AWS recommends for
//! queue workers:
//! - while it holds tasks its instance is protected from scale-in, and the protection is
//!   cleared once it has been idle a while (state changes only, rate-limited: the API is
//!   throttled per account);
//! - when the group terminates the instance (the termination lifecycle hook holds it in
//!   `Terminating:Wait`, which the instance metadata shows), it stops receiving, finishes or
//!   releases its tasks while sending lifecycle heartbeats, then completes the lifecycle action;
//! - when a spot interruption notice appears in the instance metadata (two minutes' warning),
//!   it releases what has not started at once and stops what is still running shortly before
//!   the interruption, so other workers pick those tasks up immediately.

pub mod cost;
pub mod metadata;
pub mod placement;
pub mod spot_price;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aws::error_text;
use crate::worker::{Worker, WorkerError, WorkerStats};
pub use metadata::{InstanceMetadata, MetadataError, SpotNotice};

/// Settings of the instance agent.
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    /// The group the instance belongs to (scale-in protection and lifecycle actions need it).
    pub group: Option<String>,
    /// The termination lifecycle hook's name.
    pub lifecycle_hook: Option<String>,
    /// How often the metadata is polled for a spot notice or a termination (AWS suggests 5 s).
    pub poll: Duration,
    /// Running tasks are stopped this long before a spot interruption, to release them in time.
    pub spot_margin: Duration,
    /// Fewest seconds between two scale-in protection calls.
    pub protection_interval: Duration,
    /// Idle time before protection is cleared (short idle gaps between tasks keep it).
    pub idle_grace: Duration,
    /// Lifecycle heartbeats while draining, well inside the hook's heartbeat timeout.
    pub lifecycle_heartbeat: Duration,
}

impl Default for InstanceSettings {
    fn default() -> Self {
        Self {
            group: None,
            lifecycle_hook: None,
            poll: Duration::from_secs(5),
            spot_margin: Duration::from_secs(20),
            protection_interval: Duration::from_secs(5),
            idle_grace: Duration::from_secs(30),
            lifecycle_heartbeat: Duration::from_secs(60),
        }
    }
}

/// Why the worker must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interruption {
    /// A spot interruption is coming in this long.
    Spot(Duration),
    /// The group is terminating the instance (scale-in, rebalancing, an unhealthy instance).
    Terminating,
    /// SIGTERM or another stop request.
    Signal,
}

/// Instance agent errors.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The instance metadata could not be read.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// An Auto Scaling call failed.
    #[error("auto scaling: {0}")]
    AutoScaling(String),
}

/// Watches the instance on a worker's behalf.
#[derive(Debug)]
pub struct InstanceAgent {
    metadata: InstanceMetadata,
    autoscaling: aws_sdk_autoscaling::Client,
    settings: InstanceSettings,
    instance_id: String,
}

impl InstanceAgent {
    /// An agent for this instance (its id is read from the metadata).
    pub async fn start(
        metadata: InstanceMetadata,
        autoscaling: aws_sdk_autoscaling::Client,
        settings: InstanceSettings,
    ) -> Result<Self, InstanceError> {
        let instance_id = metadata.instance_id().await?;
        Ok(Self { metadata, autoscaling, settings, instance_id })
    }

    /// The instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Resolves at the first spot notice or termination the metadata shows. Metadata errors
    /// are logged and polling goes on: a flaky read must not stop a worker.
    pub async fn next_interruption(&self) -> Interruption {
        loop {
            match self.metadata.spot_notice().await {
                Ok(Some(notice)) => {
                    tracing::warn!(action = %notice.action, in_secs = notice.remaining().as_secs(), "spot interruption notice");
                    return Interruption::Spot(notice.remaining());
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "reading the spot notice"),
            }
            if self.settings.group.is_some() {
                match self.metadata.target_lifecycle_state().await {
                    Ok(Some(state)) if state == "Terminated" => {
                        tracing::warn!("the group is terminating this instance");
                        return Interruption::Terminating;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "reading the target lifecycle state"),
                }
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    /// Sets or clears scale-in protection.
    pub async fn set_protection(&self, protected: bool) -> Result<(), InstanceError> {
        let Some(group) = &self.settings.group else { return Ok(()) };
        self.autoscaling
            .set_instance_protection()
            .auto_scaling_group_name(group)
            .instance_ids(&self.instance_id)
            .protected_from_scale_in(protected)
            .send()
            .await
            .map_err(|e| InstanceError::AutoScaling(error_text(&e)))?;
        tracing::info!(protected, "scale-in protection");
        Ok(())
    }

    /// Keeps scale-in protection in step with the worker until `stop` is notified, then clears it.
    pub async fn keep_protection(&self, worker: Arc<Worker>, stop: Arc<tokio::sync::Notify>) {
        let mut protected = false;
        let mut last_call: Option<Instant> = None;
        let mut idle_since: Option<Instant> = None;
        loop {
            let busy = worker.held_count() > 0;
            idle_since = if busy { None } else { idle_since.or(Some(Instant::now())) };
            let want =
                busy || (protected && idle_since.is_some_and(|since| since.elapsed() < self.settings.idle_grace));
            let may_call = last_call.is_none_or(|at| at.elapsed() >= self.settings.protection_interval);
            if want != protected && may_call {
                last_call = Some(Instant::now());
                match self.set_protection(want).await {
                    Ok(()) => protected = want,
                    Err(error) => tracing::warn!(%error, "could not change scale-in protection"),
                }
            }
            tokio::select! {
                () = stop.notified() => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        if protected {
            if let Err(error) = self.set_protection(false).await {
                tracing::warn!(%error, "could not clear scale-in protection");
            }
        }
    }

    /// Sends lifecycle heartbeats until `stop` is notified, so the hook's timeout does not end
    /// the drain early.
    pub async fn lifecycle_heartbeats(&self, stop: Arc<tokio::sync::Notify>) {
        let (Some(group), Some(hook)) = (&self.settings.group, &self.settings.lifecycle_hook) else { return };
        loop {
            tokio::select! {
                () = stop.notified() => return,
                () = tokio::time::sleep(self.settings.lifecycle_heartbeat) => {}
            }
            let sent = self
                .autoscaling
                .record_lifecycle_action_heartbeat()
                .auto_scaling_group_name(group)
                .lifecycle_hook_name(hook)
                .instance_id(&self.instance_id)
                .send()
                .await;
            if let Err(error) = sent {
                tracing::warn!(error = %error_text(&error), "lifecycle heartbeat failed");
            }
        }
    }

    /// Whether the group's termination lifecycle hook waits for this worker's drain.
    pub fn has_lifecycle_hook(&self) -> bool {
        self.settings.group.is_some() && self.settings.lifecycle_hook.is_some()
    }

    /// Asks the group to terminate this instance and lower its desired capacity (`worker
    /// drain`), so no replacement is launched; with a lifecycle hook, the hook then drains the
    /// worker as on any scale-in. `false` when the instance is in no group.
    pub async fn leave_group(&self) -> Result<bool, InstanceError> {
        if self.settings.group.is_none() {
            return Ok(false);
        }
        self.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&self.instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| InstanceError::AutoScaling(error_text(&e)))?;
        tracing::info!("drain requested: the instance leaves its group");
        Ok(true)
    }

    /// Tells the group the instance may terminate now.
    pub async fn complete_lifecycle(&self) -> Result<(), InstanceError> {
        let (Some(group), Some(hook)) = (&self.settings.group, &self.settings.lifecycle_hook) else { return Ok(()) };
        self.autoscaling
            .complete_lifecycle_action()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .instance_id(&self.instance_id)
            .lifecycle_action_result("CONTINUE")
            .send()
            .await
            .map_err(|e| InstanceError::AutoScaling(error_text(&e)))?;
        tracing::info!("lifecycle action completed");
        Ok(())
    }

    /// Runs `worker` until `signal` resolves or the instance is interrupted, then drains it
    /// as the interruption requires; returns why it stopped and the worker's statistics.
    pub async fn run_worker(
        self: Arc<Self>,
        worker: Arc<Worker>,
        signal: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(Interruption, WorkerStats), WorkerError> {
        let protection_stop = Arc::new(tokio::sync::Notify::new());
        let protection = {
            let (agent, worker, stop) = (self.clone(), worker.clone(), protection_stop.clone());
            tokio::spawn(async move { agent.keep_protection(worker, stop).await })
        };
        let heartbeat_stop = Arc::new(tokio::sync::Notify::new());
        let (reason_tx, reason_rx) = tokio::sync::oneshot::channel::<Interruption>();
        let shutdown = {
            let (agent, worker, heartbeat_stop) = (self.clone(), worker.clone(), heartbeat_stop.clone());
            async move {
                let reason = tokio::select! {
                    () = signal => Interruption::Signal,
                    reason = agent.next_interruption() => reason,
                };
                match &reason {
                    Interruption::Spot(remaining) => {
                        worker.drain_within(remaining.saturating_sub(agent.settings.spot_margin));
                    }
                    Interruption::Terminating => {
                        let agent = agent.clone();
                        tokio::spawn(async move { agent.lifecycle_heartbeats(heartbeat_stop).await });
                    }
                    Interruption::Signal => {}
                }
                let _ = reason_tx.send(reason);
            }
        };
        let stats = worker.run(shutdown).await;
        heartbeat_stop.notify_one();
        protection_stop.notify_one();
        let _ = protection.await;
        let reason = reason_rx.await.unwrap_or(Interruption::Signal);
        if reason == Interruption::Terminating {
            if let Err(error) = self.complete_lifecycle().await {
                tracing::error!(%error, "could not complete the lifecycle action; the hook's timeout will");
            }
        }
        Ok((reason, stats?))
    }
}
