//! ControllerRevision history, shared by the DaemonSet and StatefulSet controllers
//! (upstream's `pkg/controller/history`).
//!
//! A revision snapshots an owner's pod template as the strategic merge patch that restores
//! it — `{"spec":{"template":{…,"$patch":"replace"}}}` in `data` — with a `revision` number
//! that grows with every new template, the template's labels (so `kubectl rollout history`
//! and `rollout undo` find it with the owner's selector) and a controlling owner reference.
//! Its name is `<owner>-<hash>`, the hash being FNV-32 over the patch (and a collision count)
//! in upstream's "safe" alphabet. `kubectl rollout undo` reads a revision's `data` and patches
//! the owner with it; the controller then finds that the template equals an older revision
//! and gives that revision the next number instead of creating a new one.
//!
//! Old revisions are pruned down to `revisionHistoryLimit` (default 10), oldest first, never
//! deleting one that pods still run.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use rkube_client::{Api, Client, DeleteParams, Patch};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The label a DaemonSet's revisions and pods carry with the template hash, and a
/// StatefulSet's pods with their revision's name (upstream's
/// `apps.ControllerRevisionHashLabelKey`).
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The label `NewControllerRevision` puts on a revision with its hash (upstream's
/// `history.ControllerRevisionHashLabel`); StatefulSet revisions carry it.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// Revisions kept when `revisionHistoryLimit` is unset.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// How many names a revision creation tries before giving up on collisions.
const MAX_COLLISIONS: i32 = 100;

/// Upstream's `rand.SafeEncodeString` alphabet: no vowels, no look-alike digits, so hashes
/// never spell words.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1 (not 1a) over `bytes`, 32 bits, as Go's `hash/fnv.New32`.
pub fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |hash, b| {
        hash.wrapping_mul(16_777_619) ^ u32::from(*b)
    })
}

/// Maps every character of `s` into [`SAFE_ALPHABET`], as upstream's `SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.chars()
        .map(|c| char::from(SAFE_ALPHABET[(c as usize) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The hash of a revision's `data`, with `probe` (the owner's collision count) mixed in when
/// given, as upstream's `HashControllerRevision`.
pub fn hash_data(data: &Value, probe: Option<i32>) -> String {
    // Serializing a Value cannot fail; its maps are sorted, so equal data hash equally.
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if let Some(probe) = probe {
        bytes.extend_from_slice(probe.to_string().as_bytes());
    }
    safe_encode(&fnv32(&bytes).to_string())
}

/// `<prefix>-<hash>`, the prefix cut to 223 bytes so the name stays within 253.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let mut end = prefix.len().min(223);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash}", &prefix[..end])
}

/// The patch that restores `template`: `{"spec":{"template":{…,"$patch":"replace"}}}`, what
/// upstream's DaemonSet and StatefulSet controllers store (and kubectl applies on undo).
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut template {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The pod template a revision restores, if its `data` holds one.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision
        .data
        .as_ref()?
        .0
        .get("spec")?
        .get("template")?
        .clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// The revision's `data`, `null` when it has none.
pub fn data_of(revision: &ControllerRevision) -> &Value {
    revision.data.as_ref().map_or(&Value::Null, |d| &d.0)
}

/// Whether two revisions hold the same data (upstream's `EqualRevision`, comparing the
/// decoded JSON rather than bytes).
pub fn equal_data(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    data_of(a) == data_of(b)
}

/// Sorts revisions by number, then creation time, then name (upstream's
/// `SortControllerRevisions`).
pub fn sort_revisions(revisions: &mut [Arc<ControllerRevision>]) {
    revisions.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t =
                    |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// The number the next revision gets: one more than the last of `sorted`, or 1.
pub fn next_revision(sorted: &[Arc<ControllerRevision>]) -> i64 {
    sorted.last().map_or(1, |r| r.revision + 1)
}

/// The highest revision number of `revisions`, 0 when there are none.
pub fn max_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0)
}

/// Which of `sorted` (oldest first) to delete so that at most `excess` fewer remain: the
/// oldest ones `is_live` does not protect, up to `excess` of them.
pub fn prune(
    sorted: &[Arc<ControllerRevision>],
    excess: usize,
    is_live: impl Fn(&ControllerRevision) -> bool,
) -> Vec<Arc<ControllerRevision>> {
    sorted
        .iter()
        .filter(|r| !is_live(r))
        .take(excess)
        .cloned()
        .collect()
}

/// The effective `revisionHistoryLimit`.
pub fn history_limit(limit: Option<i32>) -> i32 {
    limit.unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
}

/// A revision of an owner (not created yet): `data`, number `revision`, the owner's
/// template labels plus `hash_label` set to the hash, the owner's annotations, and the name
/// `<owner>-<hash>`. `collision_count` is mixed into the hash when given.
pub struct Snapshot<'a> {
    /// The controlling reference to the owner.
    pub owner: OwnerReference,
    /// The owner's namespace.
    pub namespace: &'a str,
    /// The owner's pod template labels.
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// The owner's annotations (upstream copies them, so `kubernetes.io/change-cause` shows
    /// in `kubectl rollout history`).
    pub annotations: Option<&'a BTreeMap<String, String>>,
    /// The label that carries the hash.
    pub hash_label: &'static str,
    /// The patch that restores the template.
    pub data: Value,
    /// The revision number.
    pub revision: i64,
}

impl Snapshot<'_> {
    /// The revision object, named with `collision_count` mixed into the hash.
    pub fn build(&self, collision_count: Option<i32>) -> ControllerRevision {
        let hash = hash_data(&self.data, collision_count);
        let mut labels = self.labels.cloned().unwrap_or_default();
        labels.insert(self.hash_label.to_string(), hash.clone());
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(revision_name(&self.owner.name, &hash)),
                namespace: Some(self.namespace.to_string()),
                labels: Some(labels),
                annotations: self.annotations.filter(|a| !a.is_empty()).cloned(),
                owner_references: Some(vec![self.owner.clone()]),
                ..Default::default()
            },
            data: Some(RawExtension(self.data.clone())),
            revision: self.revision,
        }
    }
}

fn api(client: &Client, namespace: &str) -> Api<ControllerRevision> {
    Api::namespaced(client.clone(), namespace)
}

/// Creates `snapshot`, renaming it with a higher collision count each time its name is taken
/// by a revision with other data (upstream's `CreateControllerRevision`). Returns the revision
/// (an existing one with the same data counts) and leaves the count used in
/// `collision_count`.
pub async fn create(
    client: &Client,
    snapshot: &Snapshot<'_>,
    collision_count: &mut i32,
) -> Result<ControllerRevision> {
    let api = api(client, snapshot.namespace);
    for _ in 0..MAX_COLLISIONS {
        let revision = snapshot.build(Some(*collision_count));
        let name = revision.metadata.name.clone().unwrap_or_default();
        match api.create(&revision).await {
            Ok(created) => return Ok(created),
            Err(e) if e.is_already_exists() => {
                let existing = api.get(&name).await?;
                if data_of(&existing) == &snapshot.data {
                    return Ok(existing);
                }
                *collision_count = collision_count.saturating_add(1);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Invalid(format!(
        "no free controllerrevision name for {} after {MAX_COLLISIONS} collisions",
        snapshot.owner.name
    )))
}

/// Gives `revision` the number `number` (upstream's `UpdateControllerRevision`, used when a
/// template returns to an older revision).
pub async fn renumber(
    client: &Client,
    revision: &ControllerRevision,
    number: i64,
) -> Result<ControllerRevision> {
    if revision.revision == number {
        return Ok(revision.clone());
    }
    let namespace = revision.metadata.namespace.as_deref().unwrap_or_default();
    let name = revision.metadata.name.as_deref().unwrap_or_default();
    Ok(api(client, namespace)
        .patch(name, &Patch::Merge(json!({"revision": number})))
        .await?)
}

/// Deletes `revision`; one already gone counts as deleted.
pub async fn delete(client: &Client, revision: &ControllerRevision) -> Result<()> {
    let namespace = revision.metadata.namespace.as_deref().unwrap_or_default();
    let name = revision.metadata.name.as_deref().unwrap_or_default();
    match api(client, namespace)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn revision(name: &str, number: i64, data: Value) -> Arc<ControllerRevision> {
        Arc::new(ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(RawExtension(data)),
            revision: number,
        })
    }

    #[test]
    fn fnv32_is_go_fnv1() {
        // Reference values of Go's hash/fnv.New32 (FNV-1, 32 bit).
        assert_eq!(fnv32(b""), 0x811c_9dc5);
        assert_eq!(fnv32(b"a"), 0x050c_5d7e);
        assert_eq!(fnv32(b"foobar"), 0x31f0_b262);
    }

    #[test]
    fn safe_encoding_avoids_vowels_and_look_alikes() {
        let encoded = safe_encode("1234567890");
        assert_eq!(encoded.len(), 10);
        assert!(
            encoded.bytes().all(|b| SAFE_ALPHABET.contains(&b)),
            "{encoded}"
        );
        // '0' is 48 → 48 % 27 = 21 → '4'; '1' is 49 → 22 → '5'.
        assert_eq!(&safe_encode("01"), "45");
    }

    #[test]
    fn hashes_follow_the_data_and_the_collision_count() {
        let a = template_patch(&template("app:v1"));
        let b = template_patch(&template("app:v2"));
        assert_eq!(hash_data(&a, Some(0)), hash_data(&a.clone(), Some(0)));
        assert_ne!(hash_data(&a, Some(0)), hash_data(&b, Some(0)));
        assert_ne!(hash_data(&a, Some(0)), hash_data(&a, Some(1)));
        assert_ne!(hash_data(&a, None), hash_data(&a, Some(1)));
    }

    #[test]
    fn the_patch_replaces_the_template_and_reads_back() {
        let t = template("app:v1");
        let patch = template_patch(&t);
        assert_eq!(patch["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"][0]["image"],
            "app:v1"
        );
        let rev = revision("web-x", 1, patch);
        assert_eq!(template_of(&rev), Some(t));
    }

    #[test]
    fn snapshots_are_named_by_owner_and_hash_and_labelled() {
        let owner = OwnerReference {
            name: "web".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        };
        let t = template("app:v1");
        let snapshot = Snapshot {
            owner,
            namespace: "default",
            labels: t.metadata.as_ref().and_then(|m| m.labels.as_ref()),
            annotations: None,
            hash_label: HASH_LABEL,
            data: template_patch(&t),
            revision: 3,
        };
        let rev = snapshot.build(Some(0));
        let labels = rev.metadata.labels.clone().unwrap();
        let hash = labels[HASH_LABEL].clone();
        assert_eq!(rev.metadata.name, Some(format!("web-{hash}")));
        assert_eq!(labels["app"], "web");
        assert_eq!(rev.revision, 3);
        assert_ne!(snapshot.build(Some(1)).metadata.name, rev.metadata.name);
    }

    #[test]
    fn long_owner_names_are_cut_to_fit() {
        let long = "a".repeat(300);
        assert_eq!(revision_name(&long, "hash").len(), 223 + 5);
        assert_eq!(revision_name("web", "abc"), "web-abc");
    }

    #[test]
    fn sorting_numbering_and_pruning() {
        let mut revs = vec![
            revision("c", 3, json!(3)),
            revision("a", 1, json!(1)),
            revision("b", 2, json!(2)),
            revision("d", 4, json!(4)),
        ];
        sort_revisions(&mut revs);
        let names: Vec<_> = revs
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(next_revision(&revs), 5);
        assert_eq!(next_revision(&[]), 1);
        assert_eq!(max_revision(&revs), 4);
        // Two too many, and "a" is still run by a pod: "b" and "c" go.
        let gone = prune(&revs, 2, |r| r.metadata.name.as_deref() == Some("a"));
        let gone: Vec<_> = gone
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(gone, ["b", "c"]);
        assert!(prune(&revs, 0, |_| false).is_empty());
        assert!(equal_data(&revs[0], &revision("z", 9, json!(1))));
        assert!(!equal_data(&revs[0], &revs[1]));
        assert_eq!(history_limit(None), 10);
    }
}
