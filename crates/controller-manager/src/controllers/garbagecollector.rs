//! The garbage collector (upstream's `garbage-collector-controller`): deletes objects whose
//! owners are gone, and carries out foreground and orphan deletions.
//!
//! It watches the metadata of every kind (Events aside) and keeps an owner [`graph`] from
//! their `ownerReferences`. Handlers update the graph and queue the UIDs whose state may
//! have changed; `reconcile(uid)` then reads the object live and acts, level-triggered:
//!
//! - an object with `deletionTimestamp` and the `orphan` finalizer: its dependents lose
//!   their reference to it, then the finalizer goes;
//! - with `foregroundDeletion`: its dependents are deleted, and once none that blocks it
//!   (`blockOwnerDeletion`) is left the finalizer goes and the apiserver deletes it;
//! - any other object with owners: each owner is checked (a live read, since informers
//!   lag; confirmed absences are remembered by coordinates and UID) and [`decision`] says
//!   what to do: keep it, drop references to owners that are gone, or delete it (in the
//!   background, or in the foreground when its owner waits for it in the foreground).
//!
//! An owner named by a reference but never seen gets a virtual node, checked with a live
//! read: if it does not exist, its dependents are collected (dangling references).

pub mod decision;
pub mod graph;
mod patch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rkube_client::{
    Action, Api, Client, DeleteParams, ObjectRef, Patch, PropagationPolicy, WorkQueue,
};
use rkube_types::{Reason, ResourceInfo, registry};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::controllers::{self, Running};
use crate::error::{Error, Result};
use crate::informer::Change;
use crate::metadata::PartialObjectMeta;

use self::decision::{Decision, OwnerState, decide};
use self::graph::{FOREGROUND_FINALIZER, Graph, Identity, Node, ORPHAN_FINALIZER, has_finalizer};

/// Upstream's name of the controller.
pub const NAME: &str = "garbage-collector-controller";

/// How many confirmed-absent owners are remembered (upstream's absent owner cache: 500).
const ABSENT_CACHE_SIZE: usize = 1000;
/// How often a patch whose tests failed (the object changed) is recomputed and retried.
const PATCH_ATTEMPTS: usize = 5;
/// The first and the longest wait before an owner that exists but no informer has shown
/// is checked again.
const UNOBSERVED_RECHECK: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let collector = Arc::new(Collector {
        client: ctx.client.clone(),
        graph: Mutex::default(),
        absent: Mutex::default(),
        unobserved: Mutex::default(),
        queue: WorkQueue::new(),
    });
    macro_rules! watch_every_kind {
        ($($ty:ty),* $(,)?) => { $( watch::<$ty>(ctx, &collector); )* };
    }
    rkube_types::for_each_kind!(watch_every_kind);
    let queue = collector.queue.clone();
    controllers::run_queue(ctx, NAME, queue, move |key| {
        let collector = collector.clone();
        async move { collector.reconcile(&key.name).await }
    })
}

/// Feeds the metadata informer of `K` into the graph.
fn watch<K: k8s_openapi::Resource + 'static>(ctx: &Context, collector: &Arc<Collector>) {
    // Events are many, short-lived and never owners; upstream ignores them too.
    if K::KIND == "Event" {
        return;
    }
    let collector = collector.clone();
    ctx.informer::<PartialObjectMeta<K>>()
        .subscribe(move |change| collector.on_change::<K>(change));
}

/// The identity of an object of kind `K` with metadata `meta`.
fn identity_of<K: k8s_openapi::Resource>(meta: &ObjectMeta) -> Identity {
    Identity {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        namespace: meta.namespace.clone().filter(|ns| !ns.is_empty()),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
    }
}

/// The served resource of objects of `api_version` and `kind`; a reference may name
/// another version of the group than the one served.
pub fn resource_for(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    registry::lookup_kind(api_version, kind).or_else(|| {
        let group = graph::group_of(api_version);
        registry::all()
            .iter()
            .find(|r| r.group == group && r.kind == kind)
    })
}

/// Owners confirmed absent, by coordinates and UID, so a thousand pods of a deleted
/// ReplicaSet cost one read of it, not a thousand. A UID is never reused, so an entry never
/// goes stale; the oldest are dropped past the size.
#[derive(Debug, Default)]
struct AbsentOwners {
    keys: HashSet<String>,
    order: VecDeque<String>,
}

impl AbsentOwners {
    fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str, uid: &str) -> String {
        let namespace = if info.namespaced {
            namespace.unwrap_or_default()
        } else {
            ""
        };
        format!("{}/{}/{namespace}/{name}/{uid}", info.group, info.kind)
    }

    fn insert(&mut self, key: String) {
        if self.keys.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > ABSENT_CACHE_SIZE {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
    }

    fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }
}

struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    absent: Mutex<AbsentOwners>,
    /// How many times an owner that exists but was not observed has been checked.
    unobserved: Mutex<HashMap<String, u32>>,
    queue: WorkQueue<ObjectRef>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Collector {
    fn enqueue(&self, uids: impl IntoIterator<Item = String>) {
        for uid in uids {
            self.queue.add(ObjectRef::new(&uid));
        }
    }

    fn remember_absent(&self, identity: &Identity) {
        if let Some(info) = resource_for(&identity.api_version, &identity.kind) {
            lock(&self.absent).insert(AbsentOwners::key(
                info,
                identity.namespace.as_deref(),
                &identity.name,
                &identity.uid,
            ));
        }
    }

    /// An informer change of an object of kind `K`: updates the graph, queues what it says.
    fn on_change<K: k8s_openapi::Resource>(&self, change: &Change<PartialObjectMeta<K>>) {
        let mut queued = Vec::new();
        let mut gone = None;
        {
            let mut graph = lock(&self.graph);
            match change {
                Change::Added(obj) => {
                    queued = graph.observe(identity_of::<K>(&obj.metadata), &obj.metadata)
                }
                Change::Updated { old, new } => {
                    if old.metadata.uid != new.metadata.uid {
                        // Deleted and created again under the same name between two lists.
                        let old_id = identity_of::<K>(&old.metadata);
                        queued = graph.forget(&old_id.uid);
                        gone = Some(old_id);
                    }
                    queued.extend(graph.observe(identity_of::<K>(&new.metadata), &new.metadata));
                }
                Change::Deleted(obj) => {
                    let id = identity_of::<K>(&obj.metadata);
                    queued = graph.forget(&id.uid);
                    gone = Some(id);
                }
            }
        }
        if let Some(id) = gone {
            lock(&self.unobserved).remove(&id.uid);
            if !queued.is_empty() {
                self.remember_absent(&id);
            }
        }
        self.enqueue(queued);
    }

    fn api(&self, info: &ResourceInfo, namespace: Option<&str>) -> Api<PartialObjectMeta> {
        let namespace = if info.namespaced {
            namespace.unwrap_or_default()
        } else {
            ""
        };
        Api::dynamic(
            self.client.clone(),
            info.group,
            info.version,
            info.plural,
            namespace,
        )
    }

    fn resource(identity: &Identity) -> Result<&'static ResourceInfo> {
        resource_for(&identity.api_version, &identity.kind).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown kind {} {} of {identity}",
                identity.api_version, identity.kind
            ))
        })
    }

    /// A live read of the object `identity` names; `None` if it is not there (or another
    /// object by that name is).
    async fn get_live(&self, identity: &Identity) -> Result<Option<ObjectMeta>> {
        let info = Self::resource(identity)?;
        if info.namespaced && identity.namespace.is_none() {
            // A namespaced owner named by a cluster-scoped object: there is no such object
            // to find; its dependents are judged (and left alone) by their references.
            return Ok(None);
        }
        let found = self
            .api(info, identity.namespace.as_deref())
            .get_opt(&identity.name)
            .await?;
        Ok(found
            .map(|o| o.metadata)
            .filter(|m| m.uid.as_deref() == Some(identity.uid.as_str())))
    }

    async fn reconcile(&self, uid: &str) -> Result<Action> {
        let Some(node) = lock(&self.graph).node(uid).cloned() else {
            lock(&self.unobserved).remove(uid);
            return Ok(Action::Done);
        };
        let Some(latest) = self.get_live(&node.identity).await? else {
            // Gone, or never there: its dependents' references to it are dangling.
            debug!(object = %node.identity, "object not found, collecting its dependents");
            self.remember_absent(&node.identity);
            let queued = {
                let mut graph = lock(&self.graph);
                if node.observed {
                    graph.forget(uid)
                } else {
                    graph.absent(uid)
                }
            };
            lock(&self.unobserved).remove(uid);
            self.enqueue(queued);
            return Ok(Action::Done);
        };
        if !node.observed {
            if lock(&self.graph).node(uid).is_some_and(|n| n.observed) {
                return Ok(Action::Done);
            }
            // It exists but no informer has shown it yet: check again later.
            let mut unobserved = lock(&self.unobserved);
            let checks = unobserved.entry(uid.to_string()).or_insert(0);
            let delay = UNOBSERVED_RECHECK
                .0
                .saturating_mul(1 << (*checks).min(16))
                .min(UNOBSERVED_RECHECK.1);
            *checks += 1;
            return Ok(Action::RequeueAfter(delay));
        }
        lock(&self.unobserved).remove(uid);

        if latest.deletion_timestamp.is_some() {
            if has_finalizer(&latest, ORPHAN_FINALIZER) {
                self.orphan_dependents(&node).await?;
                self.remove_finalizer(&node.identity, ORPHAN_FINALIZER)
                    .await?;
            } else if has_finalizer(&latest, FOREGROUND_FINALIZER) {
                self.process_deleting_dependents(&node).await?;
            }
            // Otherwise it is on its way out; its dependents are looked at once it is gone.
            return Ok(Action::Done);
        }

        let owners = latest.owner_references.clone().unwrap_or_default();
        if owners.is_empty() {
            return Ok(Action::Done);
        }
        let mut states = Vec::with_capacity(owners.len());
        for owner in &owners {
            let state = self.owner_state(owner, &node.identity).await?;
            states.push((owner.uid.clone(), state));
        }
        let (has_dependents, dependent_waiting) = {
            let graph = lock(&self.graph);
            let dependents = graph.dependents(uid);
            (
                !dependents.is_empty(),
                dependents.iter().any(|d| d.deleting_dependents),
            )
        };
        let finalizers = latest.finalizers.clone().unwrap_or_default();
        match decide(&states, &finalizers, has_dependents, dependent_waiting) {
            Decision::Keep => {}
            Decision::RemoveReferences(uids) => {
                info!(object = %node.identity, owners = ?uids, "removing references to owners that are gone or waiting");
                self.remove_references(&node.identity, &uids).await?;
            }
            Decision::DeleteForeground { unblock } => {
                if unblock {
                    self.patch_meta(&node.identity, patch::unblock_references)
                        .await?;
                }
                info!(object = %node.identity, "deleting object in the foreground: its owner waits for it");
                self.delete(&node.identity, PropagationPolicy::Foreground)
                    .await?;
            }
            Decision::Delete(policy) => {
                info!(object = %node.identity, propagation = ?policy, "deleting object whose owners are gone");
                self.delete(&node.identity, policy).await?;
            }
        }
        Ok(Action::Done)
    }

    /// Whether the owner `owner` of `dependent` holds it, is gone, or waits for it.
    async fn owner_state(
        &self,
        owner: &OwnerReference,
        dependent: &Identity,
    ) -> Result<OwnerState> {
        let Some(info) = resource_for(&owner.api_version, &owner.kind) else {
            return Err(Error::Invalid(format!(
                "owner reference of {dependent} names unknown kind {} {}",
                owner.api_version, owner.kind
            )));
        };
        let namespace = match (info.namespaced, dependent.namespace.as_deref()) {
            (true, Some(ns)) => Some(ns),
            (true, None) => {
                warn!(object = %dependent, owner = %owner.name, kind = %owner.kind,
                    "cluster-scoped object names a namespaced owner, ignoring its references");
                return Ok(OwnerState::Invalid);
            }
            (false, _) => None,
        };
        let key = AbsentOwners::key(info, namespace, &owner.name, &owner.uid);
        if lock(&self.absent).contains(&key) {
            return Ok(OwnerState::Dangling);
        }
        // An observed owner that is not being deleted holds its dependents; anything that
        // would lead to a deletion is read live.
        if let Some(node) = lock(&self.graph).node(&owner.uid)
            && node.observed
            && node.identity.matches_reference(owner)
            && node.identity.namespace.as_deref() == namespace
            && !node.being_deleted
        {
            return Ok(OwnerState::Solid);
        }
        let found = self.api(info, namespace).get_opt(&owner.name).await?;
        Ok(match found {
            Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                if o.metadata.deletion_timestamp.is_some()
                    && has_finalizer(&o.metadata, FOREGROUND_FINALIZER)
                {
                    OwnerState::WaitingForDependents
                } else {
                    OwnerState::Solid
                }
            }
            _ => {
                lock(&self.absent).insert(key);
                OwnerState::Dangling
            }
        })
    }

    /// Foreground deletion of `owner`: its dependents are deleted; when none that blocks it
    /// is left, its finalizer goes (and the apiserver deletes it).
    async fn process_deleting_dependents(&self, owner: &Node) -> Result<()> {
        let uid = &owner.identity.uid;
        let (blocking, pending) = {
            let graph = lock(&self.graph);
            let blocking = graph.blocking_dependents(uid).len();
            let pending: Vec<String> = graph
                .dependents(uid)
                .iter()
                .filter(|d| !d.being_deleted)
                .map(|d| d.identity.uid.clone())
                .collect();
            (blocking, pending)
        };
        if blocking == 0 {
            info!(object = %owner.identity, "no dependents block the owner any more, finishing its foreground deletion");
            return self
                .remove_finalizer(&owner.identity, FOREGROUND_FINALIZER)
                .await;
        }
        debug!(object = %owner.identity, blocking, "waiting for dependents to be deleted");
        // Each dependent sees its owner waiting and deletes itself; the owner is queued
        // again as they go.
        self.enqueue(pending);
        Ok(())
    }

    /// Orphan deletion of `owner`: every dependent loses its reference to it.
    async fn orphan_dependents(&self, owner: &Node) -> Result<()> {
        let uid = owner.identity.uid.clone();
        let dependents: Vec<Identity> = lock(&self.graph)
            .dependents(&uid)
            .iter()
            .map(|d| d.identity.clone())
            .collect();
        let mut failed = Vec::new();
        for dependent in &dependents {
            if let Err(e) = self
                .remove_references(dependent, std::slice::from_ref(&uid))
                .await
            {
                failed.push(format!("{dependent}: {e}"));
            }
        }
        if !failed.is_empty() {
            return Err(Error::Invalid(format!(
                "orphaning the dependents of {}: {}",
                owner.identity,
                failed.join("; ")
            )));
        }
        info!(object = %owner.identity, dependents = dependents.len(), "orphaned dependents");
        Ok(())
    }

    async fn remove_references(&self, identity: &Identity, uids: &[String]) -> Result<()> {
        self.patch_meta(identity, |meta| patch::remove_references(meta, uids))
            .await
    }

    async fn remove_finalizer(&self, identity: &Identity, finalizer: &str) -> Result<()> {
        self.patch_meta(identity, |meta| patch::remove_finalizer(meta, finalizer))
            .await
    }

    /// Reads `identity` live and applies the JSON patch `make` computes from it (none: no
    /// change needed); retried when the object changed in between.
    async fn patch_meta(
        &self,
        identity: &Identity,
        make: impl Fn(&ObjectMeta) -> Option<Value>,
    ) -> Result<()> {
        let info = Self::resource(identity)?;
        let api = self.api(info, identity.namespace.as_deref());
        for _ in 0..PATCH_ATTEMPTS {
            let Some(meta) = self.get_live(identity).await? else {
                return Ok(());
            };
            let Some(body) = make(&meta) else {
                return Ok(());
            };
            match api.patch(&identity.name, &Patch::Json(body)).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_not_found() => return Ok(()),
                // A test failed or the write raced another: compute again.
                Err(e) if e.is_conflict() || e.reason() == Some(Reason::Invalid) => {
                    debug!(object = %identity, error = %e, "patch lost a race, retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Invalid(format!(
            "{identity} kept changing while being patched"
        )))
    }

    /// Deletes `identity` (that very UID) with `policy`.
    async fn delete(&self, identity: &Identity, policy: PropagationPolicy) -> Result<()> {
        let info = Self::resource(identity)?;
        let params = DeleteParams::default()
            .propagation(policy)
            .uid(&identity.uid);
        match self
            .api(info, identity.namespace.as_deref())
            .delete(&identity.name, &params)
            .await
        {
            Ok(_) => Ok(()),
            // Gone already, or replaced by another object of that name.
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_to_served_resources_whatever_the_version() {
        let info = resource_for("apps/v1", "ReplicaSet").expect("served");
        assert_eq!(info.plural, "replicasets");
        let info = resource_for("apps/v1beta2", "Deployment").expect("same group");
        assert_eq!((info.version, info.plural), ("v1", "deployments"));
        assert!(resource_for("example.com/v1", "Widget").is_none());
    }

    #[test]
    fn the_absent_cache_is_bounded_and_keyed_by_coordinates() {
        let rs = resource_for("apps/v1", "ReplicaSet").expect("served");
        let node = resource_for("v1", "Node").expect("served");
        let mut absent = AbsentOwners::default();
        absent.insert(AbsentOwners::key(rs, Some("a"), "web", "u1"));
        assert!(absent.contains(&AbsentOwners::key(rs, Some("a"), "web", "u1")));
        assert!(!absent.contains(&AbsentOwners::key(rs, Some("b"), "web", "u1")));
        // Cluster-scoped owners ignore the dependent's namespace.
        absent.insert(AbsentOwners::key(node, Some("a"), "n1", "u2"));
        assert!(absent.contains(&AbsentOwners::key(node, None, "n1", "u2")));
        for i in 0..ABSENT_CACHE_SIZE {
            absent.insert(format!("k{i}"));
        }
        assert_eq!(absent.keys.len(), ABSENT_CACHE_SIZE);
        assert!(!absent.contains(&AbsentOwners::key(rs, Some("a"), "web", "u1")));
    }

    #[tokio::test]
    async fn watches_the_metadata_of_every_kind_but_events() {
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let ctx = Context {
            client: Client::connect_lazy("http://127.0.0.1:1").expect("client"),
            informers: Arc::default(),
            clock: crate::Clock::system(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            settings: Arc::default(),
            stop,
        };
        let _running = start(&ctx);
        let kinds = ctx.informers.unsynced();
        assert_eq!(kinds.len(), registry::all().len() - 2, "{kinds:?}");
        assert!(!kinds.contains(&"Event"));
        assert!(kinds.contains(&"Pod") && kinds.contains(&"ClusterRole"));
    }

    fn collector() -> Collector {
        Collector {
            client: Client::connect_lazy("http://127.0.0.1:1").expect("client"),
            graph: Mutex::default(),
            absent: Mutex::default(),
            unobserved: Mutex::default(),
            queue: WorkQueue::new(),
        }
    }

    fn meta(name: &str, uid: &str, owners: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            owner_references: Some(owners),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_owner_seen_deleted_queues_its_dependents_and_is_remembered_absent() {
        use k8s_openapi::api::apps::v1::ReplicaSet;
        use k8s_openapi::api::core::v1::Pod;
        let c = collector();
        let rs = Arc::new(PartialObjectMeta::<ReplicaSet>::new(meta(
            "web",
            "rs1",
            vec![],
        )));
        c.on_change(&Change::Added(rs.clone()));
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web".into(),
            uid: "rs1".into(),
            ..Default::default()
        };
        let pod = PartialObjectMeta::<Pod>::new(meta("web-1", "pod1", vec![owner.clone()]));
        c.on_change(&Change::Added(Arc::new(pod)));
        assert!(
            c.queue.is_empty(),
            "a pod of a known ReplicaSet needs nothing"
        );

        c.on_change(&Change::Deleted(rs));
        assert_eq!(c.queue.len(), 1);
        assert_eq!(c.queue.get().await, Some(ObjectRef::new("pod1")));
        let dependent = lock(&c.graph).node("pod1").expect("pod").identity.clone();
        assert_eq!(
            c.owner_state(&owner, &dependent)
                .await
                .expect("no read needed"),
            OwnerState::Dangling
        );
    }
}
