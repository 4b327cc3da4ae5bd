//! The pod worker: one task per pod that drives the runtime toward the pod's spec —
//! volumes, sandbox, image pulls, init containers in order, containers with restart policy
//! and CrashLoopBackOff, probes, lifecycle hooks, graceful termination — and writes pod
//! status when it changes. It wakes on a new version of the pod, a poke (the runtime
//! relist or a prober saw a change) or its own timer (a back-off ending, a volume refresh).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Container, Pod};
use rkube_client::{Api, DeleteParams, Patch};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::NodeContext;
use super::probe::{self, Outcome, Probers, Target};
use super::spec::{self, Kind, Resolved, pod_key};
use super::status::{self, Inputs, Waiting};
use super::view::PodView;
use crate::runtime::{Runtime, RuntimeError, cri};

/// The first restart back-off (upstream: 10 s, doubling up to 5 minutes).
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest restart back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long a container must run for its back-off to be forgotten.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often configMap and secret volumes are rewritten from the API, by default
/// (`--sync-frequency`).
pub const VOLUME_REFRESH: Duration = Duration::from_secs(30);
/// How often a worker re-reads the runtime even without a poke (the relist pokes it on
/// every container change).
pub const RESYNC: Duration = Duration::from_secs(30);
/// How often a finished pod's worker looks again (it mostly waits for the deletion).
pub const FINISHED_RESYNC: Duration = Duration::from_secs(300);

/// Where a container starts: the sandbox id and config, the pod's volumes, and what the
/// runtime has for the pod.
type StartAt<'a> = (
    &'a str,
    &'a cri::PodSandboxConfig,
    Option<&'a crate::volumes::PodVolumes>,
    &'a PodView,
);

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay: Duration,
}

/// What a sync asks for next.
enum Next {
    /// Wake again after at most this long.
    After(Duration),
    /// The pod is gone: the worker ends.
    Done,
}

/// One pod's worker.
pub struct PodWorker<R: Runtime> {
    ctx: Arc<NodeContext<R>>,
    uid: String,
    pod: watch::Receiver<Option<Pod>>,
    poke: Arc<Notify>,
    /// Restart back-off per container name.
    backoff: HashMap<String, Backoff>,
    /// Image pull back-off per image: (delay, retry not before).
    image_backoff: HashMap<String, (Duration, Instant)>,
    waiting: HashMap<String, Waiting>,
    probers: HashMap<String, Probers>,
    last_status: Option<Value>,
    volumes_at: Option<Instant>,
    volumes: Option<crate::volumes::PodVolumes>,
    pod_ip: Option<String>,
    /// The last spec seen, for a pod that vanished from the API.
    last_pod: Option<Pod>,
    /// Container instances the kubelet stopped to restart them (failed liveness or
    /// startup probe, changed image): restarted whatever the restart policy says of
    /// their exit code.
    force_restart: std::collections::HashSet<String>,
    /// The pod's containers and sandboxes are gone after its deletion: only the
    /// confirming delete is left to do.
    cleaned_up: bool,
    /// The pod ran past its `activeDeadlineSeconds`.
    deadline_exceeded: bool,
}

impl<R: Runtime> PodWorker<R> {
    /// A worker for pod `uid`, fed by `pod` (None: the pod is gone from the API).
    pub fn new(
        ctx: Arc<NodeContext<R>>,
        uid: String,
        pod: watch::Receiver<Option<Pod>>,
        poke: Arc<Notify>,
    ) -> Self {
        Self {
            ctx,
            uid,
            pod,
            poke,
            backoff: HashMap::new(),
            image_backoff: HashMap::new(),
            waiting: HashMap::new(),
            probers: HashMap::new(),
            last_status: None,
            volumes_at: None,
            volumes: None,
            pod_ip: None,
            last_pod: None,
            force_restart: Default::default(),
            cleaned_up: false,
            deadline_exceeded: false,
        }
    }

    /// Runs until the pod is gone and cleaned up, or `shutdown` fires (containers are
    /// then left running for the next kubelet to adopt).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let pod = self.pod.borrow_and_update().clone();
            if pod.is_some() {
                self.last_pod = pod.clone();
            }
            let next = match self.sync(pod).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %e, "pod sync failed");
                    Next::After(Duration::from_secs(2))
                }
            };
            let wait = match next {
                Next::Done => return,
                Next::After(d) => d,
            };
            let deadline = Instant::now() + wait;
            loop {
                tokio::select! {
                    r = self.pod.changed() => {
                        if r.is_err() {
                            return;
                        }
                        // The kubelet's own status writes come back through the watch: only
                        // a change the sync acts on wakes it (as upstream's pod config
                        // source ignores status-only updates).
                        let relevant = match (&*self.pod.borrow(), &self.last_pod) {
                            (Some(new), Some(old)) => needs_sync(old, new),
                            _ => true,
                        };
                        if relevant {
                            break;
                        }
                    }
                    _ = self.poke.notified() => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = shutdown.changed() => return,
                }
            }
        }
    }

    fn name(&self) -> String {
        match &self.last_pod {
            Some(p) => {
                let (ns, name, _) = pod_key(p);
                format!("{ns}/{name}")
            }
            None => self.uid.clone(),
        }
    }

    async fn sync(&mut self, pod: Option<Pod>) -> Result<Next, RuntimeError> {
        let view = PodView::read(&self.ctx.runtime, &self.uid).await?;
        let Some(pod) = pod else {
            // Gone from the API (force-deleted, or deleted while the kubelet was down):
            // stop and remove everything without hooks.
            self.kill_all(&view, None, Duration::from_secs(2)).await;
            self.remove_all(&view).await;
            return Ok(Next::Done);
        };
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        if pod.metadata.deletion_timestamp.is_some() {
            return self.terminate(&pod, view).await;
        }
        if matches!(phase, "Succeeded" | "Failed") {
            // Finished: stop what still runs (freeing the pod IP) and wait for deletion.
            self.kill_all(&view, Some(&pod), Duration::from_secs(0))
                .await;
            for s in view
                .sandboxes
                .iter()
                .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            {
                let _ = self.ctx.runtime.stop_pod_sandbox(&s.id).await;
            }
            self.probers.clear();
            return Ok(Next::After(FINISHED_RESYNC));
        }
        self.sync_running(&pod, view).await
    }

    fn target(&self) -> Target {
        Target {
            pod_ip: self.pod_ip.clone().unwrap_or_default(),
            simulated: self.ctx.simulated,
        }
    }

    async fn sync_running(&mut self, pod: &Pod, mut view: PodView) -> Result<Next, RuntimeError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut wake = RESYNC;

        // activeDeadlineSeconds counts from the pod's start on the node.
        if let Some(deadline) = spec.active_deadline_seconds.filter(|d| *d >= 0) {
            let started = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.as_second())
                .unwrap_or_else(|| jiff::Timestamp::now().as_second());
            let left = started + deadline - jiff::Timestamp::now().as_second();
            if left <= 0 {
                tracing::info!(pod = %self.name(), "pod ran past its activeDeadlineSeconds");
                self.deadline_exceeded = true;
                self.probers.clear();
                self.kill_all(
                    &view,
                    Some(pod),
                    Duration::from_secs(
                        spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64
                    ),
                )
                .await;
                let view = PodView::read(&self.ctx.runtime, &self.uid).await?;
                self.write_status(pod, &view, true).await;
                return Ok(Next::After(Duration::from_secs(1)));
            }
            wake = wake.min(Duration::from_secs(left as u64));
        }

        // Volumes first: containers mount them.
        if !self.ctx.simulated
            && self
                .volumes_at
                .is_none_or(|t| t.elapsed() >= self.ctx.sync_frequency)
        {
            match crate::volumes::setup(&self.ctx.client, pod, &self.ctx.pods_dir).await {
                Ok(v) => {
                    self.volumes_at = Some(Instant::now());
                    self.volumes = Some(v);
                }
                Err(e) if self.volumes.is_none() => {
                    for c in &spec.containers {
                        self.waiting.insert(
                            c.name.clone(),
                            Waiting {
                                reason: "ContainerCreating".into(),
                                message: format!("MountVolume.SetUp failed: {e}"),
                            },
                        );
                    }
                    self.write_status(pod, &view, false).await;
                    return Ok(Next::After(Duration::from_secs(5)));
                }
                // Running containers keep the content they have until a refresh works,
                // tried again next period.
                Err(e) => {
                    self.volumes_at = Some(Instant::now());
                    tracing::warn!(pod = %self.name(), error = %e, "volume refresh failed");
                }
            }
        }
        let volumes = self.volumes.clone();

        // The sandbox.
        let sandbox = match view.ready_sandbox() {
            Some(s) => s.clone(),
            None => {
                // A sandbox that died takes its containers with it (upstream kills them and
                // starts over in a new sandbox); a pod whose containers all finished under
                // restartPolicy Never/OnFailure does not get a new one.
                let attempt = view.sandbox_attempt().map(|a| a + 1).unwrap_or(0);
                self.kill_all(&view, Some(pod), Duration::from_secs(2))
                    .await;
                // Old sandboxes are stopped, not removed: their containers keep the restart
                // counts and `--previous` logs (all are removed with the pod).
                for s in view
                    .sandboxes
                    .iter()
                    .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
                {
                    let _ = self.ctx.runtime.stop_pod_sandbox(&s.id).await;
                }
                if attempt > 0 && !view.instances.is_empty() && policy == "Never" {
                    // Upstream starts no new sandbox for a Never pod that already ran; its
                    // phase follows from how its containers ended.
                    let view = PodView::read(&self.ctx.runtime, &self.uid).await?;
                    self.write_status(pod, &view, false).await;
                    return Ok(Next::After(RESYNC));
                }
                // A new sandbox has a new IP.
                self.pod_ip = None;
                let config = spec::sandbox_config(&self.ctx.spec, pod, attempt);
                if !self.ctx.simulated {
                    let _ = tokio::fs::create_dir_all(&config.log_directory).await;
                }
                match self.ctx.runtime.run_pod_sandbox(config).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(pod = %self.name(), error = %e, "sandbox creation failed");
                        for c in &spec.containers {
                            self.waiting.insert(
                                c.name.clone(),
                                Waiting {
                                    reason: "ContainerCreating".into(),
                                    message: format!(
                                        "Failed to create pod sandbox: {}",
                                        e.message()
                                    ),
                                },
                            );
                        }
                        self.write_status(pod, &view, false).await;
                        return Ok(Next::After(Duration::from_secs(5)));
                    }
                }
                view = PodView::read(&self.ctx.runtime, &self.uid).await?;
                match view.ready_sandbox() {
                    Some(s) => s.clone(),
                    None => return Ok(Next::After(Duration::from_secs(1))),
                }
            }
        };
        if self.pod_ip.is_none() {
            self.pod_ip = self
                .ctx
                .runtime
                .pod_sandbox_status(&sandbox.id)
                .await
                .ok()
                .and_then(|s| status::sandbox_ip(&s))
                .or_else(|| (spec.host_network == Some(true)).then(|| self.ctx.host_ip.clone()));
        }
        let sandbox_config = spec::sandbox_config(
            &self.ctx.spec,
            pod,
            sandbox.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
        );

        // Where containers start: one sandbox, its config, the volumes, the runtime's view.
        let at: StartAt<'_> = (
            sandbox.id.as_str(),
            &sandbox_config,
            volumes.as_ref(),
            &view,
        );

        // Init containers, in order, each to completion in the current sandbox (a new
        // sandbox runs them again).
        let mut init_done = true;
        for c in spec.init_containers.iter().flatten() {
            let next_attempt = view.latest(&c.name).map_or(0, |i| i.attempt + 1);
            let current = view
                .latest(&c.name)
                .filter(|i| i.sandbox_id == sandbox.id)
                .cloned();
            match current {
                Some(i) if i.exited() && i.status.exit_code == 0 => {
                    self.waiting.remove(&c.name);
                    continue;
                }
                Some(i) if i.running() => {
                    init_done = false;
                    break;
                }
                Some(i) if i.state() == cri::ContainerState::ContainerCreated => {
                    init_done = false;
                    wake = wake.min(self.start_created(c, &i.id).await);
                    break;
                }
                Some(i) => {
                    init_done = false;
                    if policy == "Never" {
                        break;
                    }
                    if let Some(d) = self.backoff_wait(&c.name, i.finished_at(), i.ran()) {
                        wake = wake.min(d);
                        break;
                    }
                    self.start(pod, c, Kind::Init, next_attempt, at).await;
                    break;
                }
                None => {
                    init_done = false;
                    self.start(pod, c, Kind::Init, next_attempt, at).await;
                    break;
                }
            }
        }

        // Regular containers.
        if !init_done {
            for c in &spec.containers {
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "PodInitializing".into(),
                        message: String::new(),
                    },
                );
            }
        } else {
            for c in &spec.containers {
                let latest = view.latest(&c.name).cloned();
                match latest {
                    Some(i) if i.running() => {
                        self.waiting.remove(&c.name);
                        let stale = self
                            .probers
                            .get(&c.name)
                            .is_none_or(|p| p.container_id != i.id);
                        if stale {
                            let p = Probers::start(
                                self.ctx.runtime.clone(),
                                &i.id,
                                i.status.started_at,
                                c,
                                self.target(),
                                self.poke.clone(),
                            );
                            self.probers.insert(c.name.clone(), p);
                        }
                        let mut restart = self.probers.get(&c.name).and_then(|p| p.state().restart);
                        let image = c.image.clone().unwrap_or_default();
                        if restart.is_none() && !i.spec_image.is_empty() && i.spec_image != image {
                            restart = Some(format!(
                                "Container {} definition changed, will be restarted",
                                c.name
                            ));
                        }
                        if let Some(why) = restart {
                            tracing::info!(pod = %self.name(), container = %c.name, "{why}");
                            self.probers.remove(&c.name);
                            self.force_restart.insert(i.id.clone());
                            self.stop_container(pod, c, &i.id, None).await;
                            self.poke.notify_one();
                        }
                    }
                    Some(i) if i.state() == cri::ContainerState::ContainerCreated => {
                        wake = wake.min(self.start_created(c, &i.id).await);
                    }
                    Some(i) => {
                        let restart = self.force_restart.contains(&i.id)
                            || match policy.as_str() {
                                "Always" => true,
                                "OnFailure" => i.status.exit_code != 0,
                                _ => false,
                            };
                        if !restart {
                            self.waiting.remove(&c.name);
                            self.probers.remove(&c.name);
                            continue;
                        }
                        if let Some(d) = self.backoff_wait(&c.name, i.finished_at(), i.ran()) {
                            wake = wake.min(d);
                            continue;
                        }
                        self.start(pod, c, Kind::Regular, i.attempt + 1, at).await;
                        self.force_restart.remove(&i.id);
                    }
                    None => {
                        self.start(pod, c, Kind::Regular, 0, at).await;
                    }
                }
            }
        }

        // Image pull back-offs end on their own schedule.
        let now = Instant::now();
        for (_, until) in self.image_backoff.values().filter(|(_, u)| *u > now) {
            wake = wake.min(*until - now);
        }
        let view = PodView::read(&self.ctx.runtime, &self.uid).await?;
        self.write_status(pod, &view, false).await;
        if let Some(t) = self.volumes_at {
            wake = wake.min(self.ctx.sync_frequency.saturating_sub(t.elapsed()));
        }
        Ok(Next::After(wake.max(Duration::from_millis(100))))
    }

    /// Whether container `name`, which finished at `finished_at` after running `ran`, is
    /// still in back-off: the time left, and the CrashLoopBackOff reason recorded. Records
    /// the next delay when the restart may go ahead.
    fn backoff_wait(&mut self, name: &str, finished_at: i64, ran: Duration) -> Option<Duration> {
        if ran >= BACKOFF_RESET {
            self.backoff.remove(name);
        }
        let now = now_nanos();
        match self.backoff.get(name).copied() {
            Some(b) => {
                let until = finished_at + b.delay.as_nanos() as i64;
                if now < until {
                    let (ns, pod_name, uid) =
                        self.last_pod.as_ref().map(pod_key).unwrap_or(("", "", ""));
                    self.waiting.insert(
                        name.to_string(),
                        Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: format!(
                                "back-off {} restarting failed container={name} pod={pod_name}_{ns}({uid})",
                                format_delay(b.delay)
                            ),
                        },
                    );
                    return Some(Duration::from_nanos((until - now) as u64));
                }
                self.backoff.insert(
                    name.to_string(),
                    Backoff {
                        delay: (b.delay * 2).min(BACKOFF_MAX),
                    },
                );
            }
            None => {
                self.backoff.insert(
                    name.to_string(),
                    Backoff {
                        delay: BACKOFF_INITIAL,
                    },
                );
            }
        }
        None
    }

    /// Pulls the image if the policy says so; a waiting reason on failure.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &Container,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> Result<String, Waiting> {
        let image = c.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err(Waiting {
                reason: "InvalidImageName".into(),
                message: "container has no image".into(),
            });
        }
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains(':') {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = self.ctx.runtime.image_status(&image).await.ok().flatten();
        match (policy.as_str(), present) {
            ("Never", None) => {
                return Err(Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message: format!(
                        "Container image \"{image}\" is not present with pull policy of Never"
                    ),
                });
            }
            ("Never" | "IfNotPresent", Some(_)) => {
                self.image_backoff.remove(&image);
                return Ok(image);
            }
            _ => {}
        }
        if let Some((_, until)) = self.image_backoff.get(&image)
            && Instant::now() < *until
        {
            return Err(Waiting {
                reason: "ImagePullBackOff".into(),
                message: format!("Back-off pulling image \"{image}\""),
            });
        }
        let auth = if self.ctx.simulated {
            None
        } else {
            crate::pull_secrets::pull_auth(&self.ctx.client, pod, &image).await
        };
        match self
            .ctx
            .runtime
            .pull_image(&image, auth, sandbox_config.clone())
            .await
        {
            Ok(_) => {
                self.image_backoff.remove(&image);
                Ok(image)
            }
            Err(e) => {
                let delay = self
                    .image_backoff
                    .get(&image)
                    .map(|(d, _)| (*d * 2).min(BACKOFF_MAX))
                    .unwrap_or(BACKOFF_INITIAL);
                self.image_backoff
                    .insert(image.clone(), (delay, Instant::now() + delay));
                tracing::info!(pod = %self.name(), image, error = %e, "image pull failed");
                Err(Waiting {
                    reason: "ErrImagePull".into(),
                    message: format!(
                        "failed to pull and unpack image \"{image}\": {}",
                        e.message()
                    ),
                })
            }
        }
    }

    /// Starts a container that was created but never started (a kubelet died in between);
    /// when that fails it is removed and made again later. Returns when to look again.
    async fn start_created(&mut self, c: &Container, id: &str) -> Duration {
        if let Err(e) = self.ctx.runtime.start_container(id).await {
            tracing::warn!(pod = %self.name(), container = %c.name, error = %e, "start failed");
            let _ = self.ctx.runtime.remove_container(id).await;
            return Duration::from_secs(2);
        }
        Duration::from_millis(100)
    }

    /// Creates and starts instance `attempt` of container `c` in sandbox `at.0`.
    async fn start(&mut self, pod: &Pod, c: &Container, kind: Kind, attempt: u32, at: StartAt<'_>) {
        let (sandbox_id, sandbox_config, volumes, view) = at;
        let image = match self.ensure_image(pod, c, sandbox_config).await {
            Ok(i) => i,
            Err(w) => {
                self.waiting.insert(c.name.clone(), w);
                return;
            }
        };
        let config_error = |m: String| Waiting {
            reason: "CreateContainerConfigError".into(),
            message: m,
        };
        if let Err(m) = self.verify_non_root(pod, c, &image).await {
            self.waiting.insert(c.name.clone(), config_error(m));
            return;
        }
        let envs = if self.ctx.simulated {
            Vec::new()
        } else {
            match crate::env::container_env(
                &self.ctx.client,
                &self.with_ips(pod),
                c,
                &self.ctx.allocatable,
            )
            .await
            {
                Ok(e) => e,
                Err(e) => {
                    self.waiting
                        .insert(c.name.clone(), config_error(e.to_string()));
                    return;
                }
            }
        };
        let mounts = match volumes {
            Some(v) => match crate::volumes::container_mounts(pod, c, v) {
                Ok(m) => m,
                Err(e) => {
                    self.waiting
                        .insert(c.name.clone(), config_error(e.to_string()));
                    return;
                }
            },
            None => Vec::new(),
        };
        // Keep one dead instance per container for `kubectl logs --previous`.
        for old in view
            .instances
            .iter()
            .filter(|i| i.name == c.name && i.exited())
            .skip(1)
        {
            let _ = self.ctx.runtime.remove_container(&old.id).await;
        }
        let config = spec::container_config(
            pod,
            c,
            kind,
            attempt,
            Resolved {
                envs,
                mounts,
                image,
            },
            self.ctx.memory_capacity,
        );
        let id = match self
            .ctx
            .runtime
            .create_container(sandbox_id, config, sandbox_config.clone())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerError".into(),
                        message: e.message(),
                    },
                );
                return;
            }
        };
        if let Err(e) = self.ctx.runtime.start_container(&id).await {
            tracing::warn!(pod = %self.name(), container = %c.name, error = %e, "container start failed");
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "RunContainerError".into(),
                    message: e.message(),
                },
            );
            return;
        }
        self.waiting.remove(&c.name);
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let grace = Duration::from_secs(30);
            if let Outcome::Failure(m) =
                probe::run_hook(&self.ctx.runtime, &id, c, hook, &self.target(), grace).await
            {
                tracing::info!(pod = %self.name(), container = %c.name, message = %m, "postStart hook failed, killing the container");
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "PostStartHookError".into(),
                        message: m,
                    },
                );
                let _ = self
                    .ctx
                    .runtime
                    .stop_container(&id, Duration::from_secs(2))
                    .await;
            }
        }
    }

    /// Upstream's runAsNonRoot check: the container's user (its runAsUser, else the image's)
    /// must be known and not root.
    async fn verify_non_root(&self, pod: &Pod, c: &Container, image: &str) -> Result<(), String> {
        let psc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let csc = c.security_context.clone().unwrap_or_default();
        if csc.run_as_non_root.or(psc.run_as_non_root) != Some(true) || self.ctx.simulated {
            return Ok(());
        }
        let (ns, name, _) = pod_key(pod);
        let whose = format!("(pod: \"{name}_{ns}\", container: {})", c.name);
        match csc.run_as_user.or(psc.run_as_user) {
            Some(0) => {
                return Err(format!(
                    "container's runAsUser breaks non-root policy {whose}"
                ));
            }
            Some(_) => return Ok(()),
            None => {}
        }
        let img = self.ctx.runtime.image_status(image).await.ok().flatten();
        match img.as_ref().and_then(|i| i.uid.as_ref()).map(|u| u.value) {
            Some(0) | None if img.as_ref().is_none_or(|i| i.username.is_empty()) => Err(format!(
                "container has runAsNonRoot and image will run as root {whose}"
            )),
            Some(_) => Ok(()),
            _ => Err(format!(
                "container has runAsNonRoot and image has non-numeric user ({}), cannot verify user is non-root {whose}",
                img.map(|i| i.username).unwrap_or_default()
            )),
        }
    }

    /// The pod with the IPs it will have, for env fieldRefs.
    fn with_ips(&self, pod: &Pod) -> Pod {
        let mut p = pod.clone();
        let s = p.status.get_or_insert_with(Default::default);
        if let Some(ip) = &self.pod_ip {
            s.pod_ip = Some(ip.clone());
            s.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP { ip: ip.clone() }]);
        }
        s.host_ip = Some(self.ctx.host_ip.clone());
        s.host_ips = Some(vec![k8s_openapi::api::core::v1::HostIP {
            ip: self.ctx.host_ip.clone(),
        }]);
        p
    }

    /// Stops one container: preStop (within the grace period), then SIGTERM, then SIGKILL
    /// when the rest of the grace period is over.
    async fn stop_container(&self, pod: &Pod, c: &Container, id: &str, grace: Option<Duration>) {
        let grace = grace.unwrap_or_else(|| {
            Duration::from_secs(
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .max(0) as u64,
            )
        });
        let started = Instant::now();
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
            && !grace.is_zero()
            && let Outcome::Failure(m) =
                probe::run_hook(&self.ctx.runtime, id, c, hook, &self.target(), grace).await
        {
            tracing::info!(pod = %self.name(), container = %c.name, message = %m, "preStop hook failed");
        }
        // Upstream gives SIGTERM at least two seconds after the hook.
        let left = grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(2));
        if let Err(e) = self.ctx.runtime.stop_container(id, left).await
            && !e.is_not_found()
        {
            tracing::warn!(pod = %self.name(), container = %c.name, error = %e, "stop failed");
        }
    }

    /// Stops every running container of the pod concurrently (with hooks when the spec is
    /// known).
    async fn kill_all(&self, view: &PodView, pod: Option<&Pod>, grace: Duration) {
        let running: Vec<_> = view.instances.iter().filter(|i| !i.exited()).collect();
        let stops = running.iter().map(|i| async move {
            let container = pod.and_then(|p| {
                let s = p.spec.as_ref()?;
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .find(|c| c.name == i.name)
            });
            match (pod, container) {
                (Some(p), Some(c)) => self.stop_container(p, c, &i.id, Some(grace)).await,
                _ => {
                    let _ = self.ctx.runtime.stop_container(&i.id, grace).await;
                }
            }
        });
        futures::future::join_all(stops).await;
    }

    async fn remove_all(&self, view: &PodView) {
        for i in &view.instances {
            let _ = self.ctx.runtime.remove_container(&i.id).await;
        }
        for s in &view.sandboxes {
            let _ = self.ctx.runtime.stop_pod_sandbox(&s.id).await;
            let _ = self.ctx.runtime.remove_pod_sandbox(&s.id).await;
        }
        if !self.ctx.simulated {
            if let Err(e) = crate::volumes::teardown(&self.ctx.pods_dir, &self.uid).await {
                tracing::warn!(pod = %self.name(), error = %e, "volume teardown failed");
            }
            if let Some(p) = &self.last_pod {
                let _ = tokio::fs::remove_dir_all(spec::log_directory(&self.ctx.spec, p)).await;
            }
        }
    }

    /// A deleted pod: preStop, SIGTERM, the grace period, SIGKILL; the final status; then
    /// the confirming delete that removes the pod from the API.
    async fn terminate(&mut self, pod: &Pod, view: PodView) -> Result<Next, RuntimeError> {
        let grace_of = |p: &Pod| {
            Duration::from_secs(
                p.metadata
                    .deletion_grace_period_seconds
                    .or(p
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds))
                    .unwrap_or(30)
                    .max(0) as u64,
            )
        };
        if !self.cleaned_up {
            self.probers.clear();
            let mut grace = grace_of(pod);
            // A second delete with a shorter grace period (`--grace-period=1`, `--force`)
            // cuts the wait short, as upstream's pod workers do.
            let mut updates = self.pod.clone();
            loop {
                let view = PodView::read(&self.ctx.runtime, &self.uid).await?;
                let shorter = tokio::select! {
                    _ = self.kill_all(&view, Some(pod), grace) => None,
                    shorter = async {
                        loop {
                            if updates.changed().await.is_err() {
                                return std::future::pending::<Duration>().await;
                            }
                            let g = updates.borrow().as_ref().map(grace_of);
                            match g {
                                Some(g) if g < grace => return g,
                                Some(_) => {}
                                None => return Duration::ZERO,
                            }
                        }
                    } => Some(shorter),
                };
                match shorter {
                    Some(g) => grace = g,
                    None => break,
                }
            }
            for s in &view.sandboxes {
                let _ = self.ctx.runtime.stop_pod_sandbox(&s.id).await;
            }
            let view = PodView::read(&self.ctx.runtime, &self.uid).await?;
            self.write_status(pod, &view, true).await;
            self.remove_all(&view).await;
            self.cleaned_up = true;
        }
        let (ns, name, uid) = pod_key(pod);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        match api.delete(name, &DeleteParams::immediate().uid(uid)).await {
            // The watch's delete event (or a re-list without the pod) ends the worker.
            Ok(_) => Ok(Next::After(RESYNC)),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(Next::Done),
            Err(e) => {
                tracing::warn!(pod = %self.name(), error = %e, "confirming delete failed");
                Ok(Next::After(Duration::from_secs(1)))
            }
        }
    }

    async fn write_status(&mut self, pod: &Pod, view: &PodView, terminating: bool) {
        let probes: HashMap<String, (bool, bool)> = self
            .probers
            .iter()
            .map(|(name, p)| {
                let s = p.state();
                (name.clone(), (s.ready, s.started))
            })
            .collect();
        let now = now_rfc3339();
        let status = status::pod_status(&Inputs {
            pod,
            view,
            waiting: &self.waiting,
            probes: &probes,
            pod_ip: self.pod_ip.as_deref(),
            host_ip: &self.ctx.host_ip,
            runtime_name: &self.ctx.runtime_name,
            now: &now,
            terminating,
            deadline_exceeded: self.deadline_exceeded,
        });
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let (ns, name, _) = pod_key(pod);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        match api
            .patch_status(name, &Patch::Merge(json!({"status": status})))
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(pod = %self.name(), error = %e, "status update failed"),
        }
    }
}

/// Whether a new version of a pod asks for a sync: its spec, labels, annotations or
/// deletion changed, or (for pods with readiness gates) its conditions did.
fn needs_sync(old: &Pod, new: &Pod) -> bool {
    let (o, n) = (&old.metadata, &new.metadata);
    if o.deletion_timestamp != n.deletion_timestamp
        || o.deletion_grace_period_seconds != n.deletion_grace_period_seconds
        || o.labels != n.labels
        || o.annotations != n.annotations
        || old.spec != new.spec
    {
        return true;
    }
    let gated = new
        .spec
        .as_ref()
        .is_some_and(|s| s.readiness_gates.as_ref().is_some_and(|g| !g.is_empty()));
    let conditions = |p: &Pod| p.status.as_ref().and_then(|s| s.conditions.clone());
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    (gated && conditions(old) != conditions(new)) || phase(old) != phase(new)
}

fn format_delay(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_echoes_do_not_wake_the_worker() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "resourceVersion": "1"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"}
        }))
        .unwrap();
        let mut echo = pod.clone();
        echo.metadata.resource_version = Some("2".into());
        echo.status.as_mut().unwrap().message = Some("Failed to create pod sandbox: x".into());
        assert!(!needs_sync(&pod, &echo), "a status-only change");
        let mut deleted = pod.clone();
        deleted.metadata.deletion_grace_period_seconds = Some(30);
        assert!(needs_sync(&pod, &deleted));
        let mut image = pod.clone();
        image.spec.as_mut().unwrap().containers[0].image = Some("j".into());
        assert!(needs_sync(&pod, &image));
        let mut finished = pod.clone();
        finished.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(
            needs_sync(&pod, &finished),
            "a phase set elsewhere (eviction) is acted on"
        );
    }

    #[test]
    fn delays_read_like_upstream() {
        assert_eq!(format_delay(Duration::from_secs(10)), "10s");
        assert_eq!(format_delay(Duration::from_secs(160)), "2m40s");
        assert_eq!(format_delay(Duration::from_secs(300)), "5m0s");
    }
}
