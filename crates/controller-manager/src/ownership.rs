//! Controller references: who owns an object, and the adoption and release of objects by
//! selector (upstream's `ControllerRefManager`).
//!
//! A workload controller (ReplicaSet, Job, DaemonSet, StatefulSet, Deployment over its
//! ReplicaSets) owns the objects whose `ownerReferences` name it with `controller: true`.
//! Each reconcile claims the candidates in its namespace: it keeps what it owns and still
//! matches its selector, adopts orphans that match (unless it is being deleted), and
//! releases what it owns but no longer matches. Both adoption and release are JSON patches
//! that first test the object's `uid` and `resourceVersion`, so a concurrent change makes
//! the patch fail instead of overwriting it.
//!
//! The owner seen in the cache may already be gone or being deleted (an orphaning delete
//! releases the dependents, and a cached owner that adopted them again would undo it), so
//! before its first adoption in a claim the owner is read live from the apiserver, and
//! adopts nothing if it has gone, been replaced or started deleting (upstream's
//! `RecheckDeletionTimestamp`).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rkube_client::{Api, Client, Patch};
use rkube_types::selector::LabelSelector;
use serde_json::json;

use crate::error::Result;
use crate::informer::Object;
use crate::metadata::PartialObjectMeta;

/// The owner reference that names `meta`'s controller, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controlling owner reference to `owner` (`controller` and `blockOwnerDeletion` set, as
/// upstream's controllers write them).
pub fn owner_reference<K: Object>(owner: &K) -> OwnerReference {
    let meta = owner.metadata();
    OwnerReference {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `meta`'s controller is the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_ref(meta).is_some_and(|r| r.uid == uid)
}

/// The owner a controller claims for: its reference, whether it is being deleted, and its
/// selector.
#[derive(Debug, Clone)]
pub struct Claimant {
    /// The controlling reference written on adopted objects.
    pub owner: OwnerReference,
    /// An owner being deleted adopts nothing.
    pub deleting: bool,
    /// What the owner selects.
    pub selector: LabelSelector,
    /// Where the owner lives: group, version, plural resource and namespace, for the live
    /// read before adopting.
    resource: (&'static str, &'static str, &'static str, String),
}

impl Claimant {
    /// A claimant for `owner` selecting with `selector`.
    pub fn new<K: Object>(owner: &K, selector: LabelSelector) -> Self {
        Claimant {
            owner: owner_reference(owner),
            deleting: owner.metadata().deletion_timestamp.is_some(),
            selector,
            resource: (
                K::GROUP,
                K::VERSION,
                K::URL_PATH_SEGMENT,
                owner.metadata().namespace.clone().unwrap_or_default(),
            ),
        }
    }

    /// Whether the owner, read live, is still the same object and not being deleted.
    async fn can_adopt(&self, client: &Client) -> Result<bool> {
        let (group, version, plural, namespace) = &self.resource;
        let api: Api<PartialObjectMeta> =
            Api::dynamic(client.clone(), group, version, plural, namespace);
        Ok(match api.get_opt(&self.owner.name).await? {
            Some(live) => {
                live.metadata.uid.as_deref() == Some(self.owner.uid.as_str())
                    && live.metadata.deletion_timestamp.is_none()
            }
            None => false,
        })
    }

    /// Claims `candidates` (objects of the owner's namespace): returns those the owner
    /// controls after adopting matching orphans and releasing owned objects that stopped
    /// matching. An object that changed under a patch is left out this time; the change
    /// brings the owner back.
    pub async fn claim<K: Object>(
        &self,
        client: &Client,
        candidates: Vec<Arc<K>>,
    ) -> Result<Vec<Arc<K>>> {
        let mut claimed = Vec::with_capacity(candidates.len());
        // Checked live once, before the first adoption.
        let mut can_adopt = None;
        for obj in candidates {
            let meta = obj.metadata();
            let matches = match &meta.labels {
                Some(labels) => self.selector.matches(labels),
                None => self.selector.matches(&Default::default()),
            };
            match controller_ref(meta) {
                Some(r) if r.uid == self.owner.uid => {
                    if matches {
                        claimed.push(obj);
                    } else if !self.deleting && meta.deletion_timestamp.is_none() {
                        // An owner being deleted neither keeps nor releases what it
                        // stopped selecting.
                        release(client, &*obj, &self.owner.uid).await?;
                    }
                }
                Some(_) => {}
                None if matches && !self.deleting && meta.deletion_timestamp.is_none() => {
                    let allowed = match can_adopt {
                        Some(allowed) => allowed,
                        None => *can_adopt.insert(self.can_adopt(client).await?),
                    };
                    if !allowed {
                        continue;
                    }
                    if let Some(adopted) = adopt(client, &*obj, &self.owner).await? {
                        claimed.push(Arc::new(adopted));
                    }
                }
                None => {}
            }
        }
        Ok(claimed)
    }
}

fn api_for<K: Object>(client: &Client, meta: &ObjectMeta) -> Api<K> {
    Api::dynamic(
        client.clone(),
        K::GROUP,
        K::VERSION,
        K::URL_PATH_SEGMENT,
        meta.namespace.as_deref().unwrap_or_default(),
    )
}

/// Adds `owner` as the controller of `obj`; `None` when `obj` changed or went away first.
pub async fn adopt<K: Object>(
    client: &Client,
    obj: &K,
    owner: &OwnerReference,
) -> Result<Option<K>> {
    let meta = obj.metadata();
    let mut refs = meta.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner.uid);
    refs.push(owner.clone());
    guarded_patch(client, obj, json!(refs)).await
}

/// Removes the owner with `uid` from `obj`'s references.
pub async fn release<K: Object>(client: &Client, obj: &K, uid: &str) -> Result<Option<K>> {
    let mut refs = obj.metadata().owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != uid);
    guarded_patch(client, obj, json!(refs)).await
}

/// Replaces `obj`'s owner references if it is still the same object at the same version.
async fn guarded_patch<K: Object>(
    client: &Client,
    obj: &K,
    refs: serde_json::Value,
) -> Result<Option<K>> {
    let meta = obj.metadata();
    let name = meta.name.as_deref().unwrap_or_default();
    // A resourceVersion in a patch is a precondition: any change since answers 409.
    let patch = Patch::Merge(json!({
        "metadata": {"resourceVersion": meta.resource_version, "ownerReferences": refs},
    }));
    match api_for::<K>(client, meta).patch(name, &patch).await {
        Ok(patched) => Ok(Some(patched)),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;

    #[test]
    fn owner_references_name_the_controller() {
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some("web-1".into());
        rs.metadata.uid = Some("u1".into());
        let r = owner_reference(&rs);
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str()),
            ("apps/v1", "ReplicaSet")
        );
        assert_eq!(r.controller, Some(true));
        let meta = ObjectMeta {
            owner_references: Some(vec![
                OwnerReference {
                    uid: "other".into(),
                    ..Default::default()
                },
                r,
            ]),
            ..Default::default()
        };
        assert!(is_controlled_by(&meta, "u1"));
        assert!(!is_controlled_by(&meta, "other"), "not the controller");
    }
}
