//! Revisions and the annotations that carry them: which revision each ReplicaSet is, the
//! revisions a reused ReplicaSet served before, the Deployment annotations copied onto its
//! ReplicaSets (`kubernetes.io/change-cause` among them), and which old ReplicaSets
//! `revisionHistoryLimit` lets go. `kubectl rollout history` and `kubectl rollout undo` read
//! exactly these annotations.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::warn;

use super::replicas::{by_creation, rs_actual, rs_replicas};

/// The revision of a ReplicaSet (and of its Deployment: the new ReplicaSet's).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The revisions a ReplicaSet served before it was rolled back to, comma-separated.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last sized.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's `spec.replicas + maxSurge` when the ReplicaSet was last sized.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// kubectl's client-side apply record; never copied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The extensions/v1beta1 rollback request; never copied.
const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// How long `revision-history` may grow (upstream: about 100 revisions).
pub const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Whether the Deployment annotation `key` stays off its ReplicaSets.
pub fn skip_copy_annotation(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED
            | REVISION
            | REVISION_HISTORY
            | DESIRED_REPLICAS
            | MAX_REPLICAS
            | DEPRECATED_ROLLBACK_TO
    )
}

/// The revision in `meta`'s annotations: 0 when absent, `None` when it does not parse.
pub fn revision(meta: &ObjectMeta) -> Option<i64> {
    match meta.annotations.as_ref().and_then(|a| a.get(REVISION)) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// The highest revision among `rss` (those that do not parse are skipped).
pub fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter()
        .filter_map(|rs| revision(&rs.metadata))
        .max()
        .unwrap_or(0)
        .max(0)
}

/// The Deployment's revision annotation.
pub fn deployment_revision(d: &Deployment) -> Option<&str> {
    d.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .map(String::as_str)
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    let value = rs.metadata.annotations.as_ref()?.get(key)?;
    value.parse().ok()
}

/// The desired-replicas annotation.
pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, DESIRED_REPLICAS)
}

/// The max-replicas annotation.
pub fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, MAX_REPLICAS)
}

/// Whether the desired- and max-replicas annotations differ from these values.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.as_ref();
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    get(DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || get(MAX_REPLICAS) != Some(max.to_string().as_str())
}

/// Sets the desired- and max-replicas annotations; whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut updated = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            updated = true;
        }
    }
    updated
}

/// Copies the Deployment's annotations, except the skipped ones, onto `rs`; whether
/// anything changed.
fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy_annotation(k) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Brings the new ReplicaSet's annotations up to date (upstream's
/// `SetNewReplicaSetAnnotations`): copies the Deployment's, raises its revision to
/// `new_revision` when lower, remembering the revision it had in `revision-history` (a
/// rollback to it), and for a ReplicaSet about to be created (`exists` false) sets the
/// replicas annotations. Whether anything changed.
pub fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    max_surge: i32,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old = annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                warn!(
                    replicaset = rs.metadata.name.as_deref().unwrap_or_default(),
                    revision = v,
                    "revision annotation is not a number, leaving it"
                );
                return false;
            }
        },
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            match append_history(&history, &old) {
                Some(h) => {
                    annotations.insert(REVISION_HISTORY.to_string(), h);
                }
                None => warn!(
                    replicaset = rs.metadata.name.as_deref().unwrap_or_default(),
                    limit = MAX_REVISION_HISTORY_CHARS,
                    "revision history full, not appending"
                ),
            }
        }
    }
    if !exists {
        let replicas = super::replicas::deployment_replicas(d);
        changed |= set_replicas_annotations(rs, replicas, replicas + max_surge);
    }
    changed
}

/// `history` with `old` appended, dropping the oldest entries to stay within
/// [`MAX_REVISION_HISTORY_CHARS`]; `None` when even that is not enough.
fn append_history(history: &str, old: &str) -> Option<String> {
    if history.is_empty() {
        return Some(old.to_string());
    }
    let entries: Vec<&str> = history.split(',').collect();
    let mut total = history.len() + old.len() + 1;
    let mut start = 0;
    while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
        total -= entries[start].len() + 1;
        start += 1;
    }
    if total > MAX_REVISION_HISTORY_CHARS {
        return None;
    }
    let mut kept = entries[start..].to_vec();
    kept.push(old);
    Some(kept.join(","))
}

/// The old ReplicaSets `revisionHistoryLimit` lets go (upstream's `cleanupDeployment`):
/// the lowest revisions beyond the limit, of those that have no replicas, no pods and whose
/// last change their controller has seen. Nothing when there is no limit.
pub fn replica_sets_to_clean_up<'a>(d: &Deployment, old: &'a [ReplicaSet]) -> Vec<&'a ReplicaSet> {
    let Some(limit) = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .filter(|l| *l != i32::MAX)
    else {
        return Vec::new();
    };
    let mut alive: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = alive.len() as i64 - i64::from(limit);
    if excess <= 0 {
        return Vec::new();
    }
    alive.sort_by(|a, b| {
        let rev = |rs: &ReplicaSet| revision(&rs.metadata).unwrap_or(0);
        rev(a).cmp(&rev(b)).then_with(|| by_creation(a, b))
    });
    alive
        .into_iter()
        .take(usize::try_from(excess).unwrap_or(usize::MAX))
        .filter(|rs| {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            rs_actual(rs) == 0
                && rs_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0) <= observed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::deployment::tests::{deployment, rs};

    fn with_revision(mut rs: ReplicaSet, rev: &str) -> ReplicaSet {
        rs.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REVISION.into(), rev.into());
        rs
    }

    fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
        rs.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    #[test]
    fn max_revision_skips_what_does_not_parse() {
        let a = with_revision(rs("a", 0, 0, "2026-01-01T00:00:00Z"), "3");
        let b = with_revision(rs("b", 0, 0, "2026-01-01T00:00:00Z"), "x");
        let c = rs("c", 0, 0, "2026-01-01T00:00:00Z");
        assert_eq!(max_revision([&a, &b, &c]), 3);
        assert_eq!(max_revision([] as [&ReplicaSet; 0]), 0);
    }

    #[test]
    fn a_new_replica_set_gets_revision_copied_annotations_and_sizes() {
        let mut d = deployment("web", 4);
        d.metadata.annotations = Some(BTreeMap::from([
            ("kubernetes.io/change-cause".into(), "set image v2".into()),
            (LAST_APPLIED.into(), "{}".into()),
            (REVISION.into(), "1".into()),
        ]));
        let mut new = rs("web-new", 0, 0, "2026-01-01T00:00:00Z");
        new.metadata.annotations = None;
        assert!(set_new_replica_set_annotations(&d, &mut new, 2, false, 1));
        assert_eq!(annotation(&new, REVISION), Some("2"));
        assert_eq!(
            annotation(&new, "kubernetes.io/change-cause"),
            Some("set image v2")
        );
        assert_eq!(annotation(&new, LAST_APPLIED), None);
        assert_eq!(annotation(&new, DESIRED_REPLICAS), Some("4"));
        assert_eq!(annotation(&new, MAX_REPLICAS), Some("5"));
        assert_eq!(annotation(&new, REVISION_HISTORY), None);
        assert!(
            !set_new_replica_set_annotations(&d, &mut new, 2, true, 1),
            "nothing to change the second time"
        );
    }

    #[test]
    fn a_reused_replica_set_remembers_its_revisions() {
        let d = deployment("web", 4);
        let mut old = with_revision(rs("web-v1", 0, 0, "2026-01-01T00:00:00Z"), "1");
        assert!(set_new_replica_set_annotations(&d, &mut old, 3, true, 1));
        assert_eq!(annotation(&old, REVISION), Some("3"));
        assert_eq!(annotation(&old, REVISION_HISTORY), Some("1"));
        assert!(set_new_replica_set_annotations(&d, &mut old, 5, true, 1));
        assert_eq!(annotation(&old, REVISION_HISTORY), Some("1,3"));
        assert!(
            !set_new_replica_set_annotations(&d, &mut old, 4, true, 1),
            "a revision never goes down"
        );
        assert_eq!(annotation(&old, REVISION), Some("5"));
        assert_eq!(
            annotation(&old, DESIRED_REPLICAS),
            None,
            "exists: sizes stay"
        );
    }

    #[test]
    fn revision_history_drops_the_oldest_when_full() {
        let long = vec!["1234"; 400].join(",");
        let appended = append_history(&long, "9").unwrap();
        assert!(appended.len() <= MAX_REVISION_HISTORY_CHARS);
        assert!(appended.ends_with(",9"));
        assert_eq!(append_history("", "7").as_deref(), Some("7"));
    }

    #[test]
    fn cleanup_keeps_the_newest_revisions_and_anything_with_pods() {
        let mut d = deployment("web", 1);
        d.spec.as_mut().unwrap().revision_history_limit = Some(2);
        let old: Vec<ReplicaSet> = (1..=5)
            .map(|i| {
                with_revision(
                    rs(&format!("web-{i}"), 0, 0, "2026-01-01T00:00:00Z"),
                    &i.to_string(),
                )
            })
            .collect();
        let names = |v: Vec<&ReplicaSet>| -> Vec<String> {
            v.iter().filter_map(|r| r.metadata.name.clone()).collect()
        };
        assert_eq!(
            names(replica_sets_to_clean_up(&d, &old)),
            ["web-1", "web-2", "web-3"]
        );
        let mut busy = old.clone();
        busy[0].status.as_mut().unwrap().replicas = 1; // pods still going away
        busy[1].spec.as_mut().unwrap().replicas = Some(1);
        busy[2].metadata.generation = Some(2); // scaled down, not yet observed
        assert!(replica_sets_to_clean_up(&d, &busy).is_empty());
        d.spec.as_mut().unwrap().revision_history_limit = None;
        assert!(replica_sets_to_clean_up(&d, &old).is_empty(), "no limit");
        d.spec.as_mut().unwrap().revision_history_limit = Some(0);
        assert_eq!(replica_sets_to_clean_up(&d, &old).len(), 5);
    }
}
