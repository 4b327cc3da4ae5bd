//! The owner graph: every object that owns or is owned, by UID, with its owners and its
//! dependents (upstream's `GraphBuilder` and `uidToNode`).
//!
//! Informer changes update it incrementally: [`Graph::observe`] for an object added or
//! changed, [`Graph::forget`] for one deleted. An owner named by a reference but not
//! observed (yet, or ever) gets a *virtual* node so its dependents can be found; it lives as
//! long as something references it. Every update returns the UIDs whose garbage-collection
//! state may have changed, for the caller to queue; the graph itself never calls the
//! apiserver, so decisions made from it are verified with live reads first.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The finalizer that holds an owner until its dependents are deleted (foreground deletion).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer that holds an owner until its dependents are orphaned.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// Where an object lives: its resource coordinates and UID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: String,
    /// `kind`, e.g. `ReplicaSet`.
    pub kind: String,
    /// The namespace; `None` for cluster-scoped objects (or an owner of unknown scope).
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
    /// The UID.
    pub uid: String,
}

impl Identity {
    /// The identity an owner reference names, from a dependent in `namespace` (a namespaced
    /// owner is in its dependent's namespace; a cluster-scoped one ignores it).
    pub fn of_reference(owner: &OwnerReference, namespace: Option<&str>) -> Self {
        Identity {
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
            namespace: namespace.map(str::to_string),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
        }
    }

    /// Whether `owner` names this object by the same kind and name (the group, not the
    /// version, has to match: a reference may use any served version).
    pub fn matches_reference(&self, owner: &OwnerReference) -> bool {
        group_of(&self.api_version) == group_of(&owner.api_version)
            && self.kind == owner.kind
            && self.name == owner.name
            && self.uid == owner.uid
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} ", self.api_version, self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{} ({})", self.name, self.uid)
    }
}

/// The group of an `apiVersion` (`""` for the core group).
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

/// One object of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the object is (for a virtual node: as its first dependent named it).
    pub identity: Identity,
    /// Whether an informer has shown the object; `false` for a virtual node.
    pub observed: bool,
    /// The object's owner references.
    pub owners: Vec<OwnerReference>,
    /// The UIDs of the objects that name this one as an owner.
    pub dependents: BTreeSet<String>,
    /// The object has a deletionTimestamp.
    pub being_deleted: bool,
    /// Being deleted in the foreground: it waits for its blocking dependents to go.
    pub deleting_dependents: bool,
    /// Being deleted with the orphan finalizer: its dependents are to be released.
    pub orphaning: bool,
    /// A virtual node known not to exist (seen deleted, or not found by a live read): a
    /// new dependent of it is dangling from the start.
    pub absent: bool,
}

impl Node {
    fn virtual_for(identity: Identity) -> Self {
        Node {
            identity,
            observed: false,
            owners: Vec::new(),
            dependents: BTreeSet::new(),
            being_deleted: false,
            deleting_dependents: false,
            orphaning: false,
            absent: false,
        }
    }

    /// This object's reference to the owner with `uid`, if it has one.
    pub fn reference_to(&self, uid: &str) -> Option<&OwnerReference> {
        self.owners.iter().find(|r| r.uid == uid)
    }
}

/// Whether `meta` carries `finalizer`.
pub fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_deref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// The owner graph.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

impl Graph {
    /// The node with `uid`.
    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// How many nodes (observed and virtual) the graph holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The dependents of `uid` that block its deletion (`blockOwnerDeletion: true` in their
    /// reference to it).
    pub fn blocking_dependents(&self, uid: &str) -> Vec<&Node> {
        let Some(owner) = self.nodes.get(uid) else {
            return Vec::new();
        };
        owner
            .dependents
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .filter(|d| {
                d.reference_to(uid)
                    .is_some_and(|r| r.block_owner_deletion == Some(true))
            })
            .collect()
    }

    /// The dependents of `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<&Node> {
        self.nodes
            .get(uid)
            .map(|n| {
                n.dependents
                    .iter()
                    .filter_map(|d| self.nodes.get(d))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records an object added or changed (`identity` from its kind, `meta` its metadata);
    /// returns the UIDs to look at again.
    pub fn observe(&mut self, identity: Identity, meta: &ObjectMeta) -> Vec<String> {
        let uid = identity.uid.clone();
        if uid.is_empty() {
            return Vec::new();
        }
        let mut queue = Vec::new();
        let new_owners: Vec<OwnerReference> = {
            // One reference per owner UID: a duplicate says nothing more.
            let mut seen = BTreeSet::new();
            meta.owner_references
                .iter()
                .flatten()
                .filter(|r| !r.uid.is_empty() && seen.insert(r.uid.clone()))
                .cloned()
                .collect()
        };
        let node = self
            .nodes
            .entry(uid.clone())
            .or_insert_with(|| Node::virtual_for(identity.clone()));
        let old_owners = std::mem::replace(&mut node.owners, new_owners.clone());
        let was_deleting_dependents = node.deleting_dependents;
        node.identity = identity.clone();
        node.observed = true;
        node.absent = false;
        node.being_deleted = meta.deletion_timestamp.is_some();
        node.deleting_dependents = node.being_deleted && has_finalizer(meta, FOREGROUND_FINALIZER);
        node.orphaning = node.being_deleted && has_finalizer(meta, ORPHAN_FINALIZER);
        let deleting_dependents = node.deleting_dependents;
        let orphaning = node.orphaning;

        // Owners this object no longer names: they may have been waiting for it.
        for old in &old_owners {
            if new_owners.iter().any(|r| r.uid == old.uid) {
                continue;
            }
            self.unlink(&old.uid, &uid, &mut queue);
        }
        for owner in &new_owners {
            match old_owners.iter().find(|r| r.uid == owner.uid) {
                // A changed reference (e.g. blockOwnerDeletion cleared) may unblock an
                // owner being deleted in the foreground.
                Some(old) if old != owner => {
                    if self
                        .nodes
                        .get(&owner.uid)
                        .is_some_and(|n| n.deleting_dependents)
                    {
                        queue.push(owner.uid.clone());
                    }
                }
                Some(_) => {}
                None => self.link(owner, &identity, &mut queue),
            }
        }
        // Being deleted with one of the collector's finalizers: its dependents are to be
        // orphaned or deleted first. Queued on the transition and whenever it changes.
        if orphaning || deleting_dependents {
            queue.push(uid.clone());
        }
        if deleting_dependents && !was_deleting_dependents {
            queue.extend(self.dependents_of(&uid));
        }
        queue
    }

    /// Records that the object with `uid` is gone (an informer saw it deleted, or a live
    /// read found it missing); returns the UIDs to look at again: its dependents, and owners
    /// waiting for it.
    pub fn forget(&mut self, uid: &str) -> Vec<String> {
        let Some(node) = self.nodes.get_mut(uid) else {
            return Vec::new();
        };
        let mut queue: Vec<String> = node.dependents.iter().cloned().collect();
        let owners = std::mem::take(&mut node.owners);
        node.observed = false;
        node.absent = true;
        node.being_deleted = false;
        node.deleting_dependents = false;
        node.orphaning = false;
        // With dependents left, the node stays as a virtual one so they can still be found
        // (and their references to it judged dangling); otherwise it goes.
        if node.dependents.is_empty() {
            self.nodes.remove(uid);
        }
        for owner in &owners {
            self.unlink(&owner.uid, uid, &mut queue);
        }
        queue
    }

    /// A virtual node confirmed absent by a live read: returns its dependents, to collect.
    pub fn absent(&mut self, uid: &str) -> Vec<String> {
        match self.nodes.get_mut(uid) {
            Some(node) if !node.observed => {
                node.absent = true;
                node.dependents.iter().cloned().collect()
            }
            _ => Vec::new(),
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.nodes
            .get(uid)
            .map(|n| n.dependents.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds `dependent` to the owner `owner` names, creating a virtual owner when unknown.
    fn link(&mut self, owner: &OwnerReference, dependent: &Identity, queue: &mut Vec<String>) {
        match self.nodes.get_mut(&owner.uid) {
            Some(node) => {
                node.dependents.insert(dependent.uid.clone());
                if node.deleting_dependents {
                    // A new dependent of an owner deleting its dependents: it is to go too.
                    queue.push(owner.uid.clone());
                }
                if node.absent {
                    // Its owner is known to be gone: it is dangling from the start.
                    queue.push(dependent.uid.clone());
                }
                if !node.identity.matches_reference(owner)
                    || (node.observed
                        && node.identity.namespace.is_some()
                        && node.identity.namespace != dependent.namespace)
                {
                    // The reference disagrees with what the owner is: the dependent's
                    // references are to be checked one by one.
                    queue.push(dependent.uid.clone());
                }
            }
            None => {
                let mut node = Node::virtual_for(Identity::of_reference(
                    owner,
                    dependent.namespace.as_deref(),
                ));
                node.dependents.insert(dependent.uid.clone());
                self.nodes.insert(owner.uid.clone(), node);
                // Is the owner there at all? A live read will tell.
                queue.push(owner.uid.clone());
            }
        }
    }

    /// Removes `dependent` from the dependents of `owner_uid`.
    fn unlink(&mut self, owner_uid: &str, dependent: &str, queue: &mut Vec<String>) {
        let Some(owner) = self.nodes.get_mut(owner_uid) else {
            return;
        };
        owner.dependents.remove(dependent);
        if owner.deleting_dependents {
            queue.push(owner_uid.to_string());
        }
        if !owner.observed && owner.dependents.is_empty() {
            self.nodes.remove(owner_uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn reference(kind: &str, name: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: if kind == "Deployment" || kind == "ReplicaSet" {
                "apps/v1".into()
            } else {
                "v1".into()
            },
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn object(
        kind: &str,
        name: &str,
        uid: &str,
        owners: Vec<OwnerReference>,
    ) -> (Identity, ObjectMeta) {
        let identity = Identity {
            api_version: if kind == "Deployment" || kind == "ReplicaSet" {
                "apps/v1".into()
            } else {
                "v1".into()
            },
            kind: kind.into(),
            namespace: Some("default".into()),
            name: name.into(),
            uid: uid.into(),
        };
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            owner_references: Some(owners).filter(|o| !o.is_empty()),
            ..Default::default()
        };
        (identity, meta)
    }

    fn deleting(mut meta: ObjectMeta, finalizer: &str) -> ObjectMeta {
        meta.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        meta.finalizers = Some(vec![finalizer.to_string()]);
        meta
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn a_dependent_before_its_owner_makes_a_virtual_owner_to_verify() {
        let mut graph = Graph::default();
        let (id, meta) = object(
            "Pod",
            "p",
            "pod1",
            vec![reference("ReplicaSet", "rs", "rs1", true)],
        );
        assert_eq!(
            graph.observe(id, &meta),
            ["rs1"],
            "the unknown owner is checked"
        );
        let owner = graph.node("rs1").expect("virtual owner");
        assert!(!owner.observed);
        assert_eq!(owner.identity.kind, "ReplicaSet");
        assert_eq!(owner.identity.namespace.as_deref(), Some("default"));
        assert!(owner.dependents.contains("pod1"));

        let (id, meta) = object("ReplicaSet", "rs", "rs1", vec![]);
        assert!(
            graph.observe(id, &meta).is_empty(),
            "an ordinary owner needs nothing"
        );
        assert!(graph.node("rs1").expect("owner").observed);
        assert!(
            graph
                .node("rs1")
                .expect("owner")
                .dependents
                .contains("pod1")
        );
    }

    #[test]
    fn a_deleted_owner_queues_its_dependents_and_becomes_virtual_while_referenced() {
        let mut graph = Graph::default();
        let (id, meta) = object("ReplicaSet", "rs", "rs1", vec![]);
        graph.observe(id, &meta);
        for i in 1..=2 {
            let (id, meta) = object(
                "Pod",
                &format!("p{i}"),
                &format!("pod{i}"),
                vec![reference("ReplicaSet", "rs", "rs1", true)],
            );
            assert!(graph.observe(id, &meta).is_empty());
        }
        assert_eq!(sorted(graph.forget("rs1")), ["pod1", "pod2"]);
        let owner = graph.node("rs1").expect("kept for its dependents");
        assert!(!owner.observed && owner.absent);

        // Dependents going away release the virtual node.
        graph.forget("pod1");
        assert!(graph.node("rs1").is_some());
        graph.forget("pod2");
        assert!(
            graph.node("rs1").is_none(),
            "nothing references it any more"
        );
        assert!(graph.is_empty());
    }

    #[test]
    fn references_added_and_removed_update_both_sides() {
        let mut graph = Graph::default();
        let (id, meta) = object("ConfigMap", "a", "a1", vec![]);
        graph.observe(id, &meta);
        let (id, meta) = object("ConfigMap", "b", "b1", vec![]);
        graph.observe(id, &meta);
        let (id, meta) = object(
            "Pod",
            "p",
            "pod1",
            vec![reference("ConfigMap", "a", "a1", false)],
        );
        graph.observe(id.clone(), &meta);
        assert!(graph.node("a1").expect("a").dependents.contains("pod1"));

        let (_, meta) = object(
            "Pod",
            "p",
            "pod1",
            vec![reference("ConfigMap", "b", "b1", false)],
        );
        graph.observe(id, &meta);
        assert!(graph.node("a1").expect("a").dependents.is_empty());
        assert!(graph.node("b1").expect("b").dependents.contains("pod1"));
        assert_eq!(graph.dependents("b1").len(), 1);
    }

    #[test]
    fn foreground_deletion_queues_the_owner_and_its_dependents_once_started() {
        let mut graph = Graph::default();
        let (rs, rs_meta) = object("ReplicaSet", "rs", "rs1", vec![]);
        graph.observe(rs.clone(), &rs_meta);
        let (id, meta) = object(
            "Pod",
            "p1",
            "pod1",
            vec![reference("ReplicaSet", "rs", "rs1", true)],
        );
        graph.observe(id, &meta);
        let (id, meta) = object(
            "Pod",
            "p2",
            "pod2",
            vec![reference("ReplicaSet", "rs", "rs1", false)],
        );
        graph.observe(id, &meta);

        let queued = graph.observe(rs.clone(), &deleting(rs_meta.clone(), FOREGROUND_FINALIZER));
        assert_eq!(sorted(queued), ["pod1", "pod2", "rs1"]);
        assert!(graph.node("rs1").expect("rs").deleting_dependents);
        let blocking: Vec<_> = graph
            .blocking_dependents("rs1")
            .iter()
            .map(|n| n.identity.uid.clone())
            .collect();
        assert_eq!(
            blocking,
            ["pod1"],
            "only blockOwnerDeletion dependents block"
        );

        // A later change of the owner queues only the owner.
        assert_eq!(
            graph.observe(rs, &deleting(rs_meta, FOREGROUND_FINALIZER)),
            ["rs1"]
        );
        // A blocking dependent going away wakes the waiting owner.
        assert!(graph.forget("pod1").contains(&"rs1".to_string()));
        assert!(graph.blocking_dependents("rs1").is_empty());
    }

    #[test]
    fn orphaning_queues_the_owner() {
        let mut graph = Graph::default();
        let (d, meta) = object("Deployment", "web", "d1", vec![]);
        graph.observe(d.clone(), &meta);
        let (id, rs) = object(
            "ReplicaSet",
            "web-1",
            "rs1",
            vec![reference("Deployment", "web", "d1", true)],
        );
        graph.observe(id, &rs);
        assert_eq!(graph.observe(d, &deleting(meta, ORPHAN_FINALIZER)), ["d1"]);
        assert!(graph.node("d1").expect("d").orphaning);
    }

    #[test]
    fn a_reference_that_disagrees_with_the_observed_owner_queues_the_dependent() {
        let mut graph = Graph::default();
        let (id, meta) = object("ConfigMap", "a", "a1", vec![]);
        graph.observe(id, &meta);
        // Same UID, wrong kind.
        let (id, meta) = object(
            "Pod",
            "p",
            "pod1",
            vec![reference("Service", "a", "a1", false)],
        );
        assert_eq!(graph.observe(id, &meta), ["pod1"]);
    }

    #[test]
    fn absent_virtual_owners_hand_back_their_dependents() {
        let mut graph = Graph::default();
        let (id, meta) = object(
            "Pod",
            "p",
            "pod1",
            vec![reference("ReplicaSet", "gone", "x1", true)],
        );
        graph.observe(id, &meta);
        assert_eq!(graph.absent("x1"), ["pod1"]);
        // Regression: a dependent added after its owner was found absent was never looked
        // at, so it outlived its owner.
        let (id, meta) = object(
            "Pod",
            "q",
            "pod2",
            vec![reference("ReplicaSet", "gone", "x1", true)],
        );
        assert_eq!(graph.observe(id, &meta), ["pod2"]);
        let (id, meta) = object("ConfigMap", "c", "c1", vec![]);
        graph.observe(id, &meta);
        assert!(
            graph.absent("c1").is_empty(),
            "an observed object is not absent"
        );
    }
}
