//! The status conditions a terminating namespace reports about its content, with upstream's
//! types, reasons and messages (`pkg/controller/namespace/deletion/status_condition_utils.go`).
//!
//! Each pass of the controller over the namespace's content produces [`ContentTotals`];
//! [`desired`] turns them into one condition per type (`True` with the problem, or `False`
//! with the all-clear), and [`merge`] writes them into the namespace's conditions, moving
//! `lastTransitionTime` only when a status flips.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NamespaceCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Discovery of the resources to delete failed for some groups.
pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
/// Some legacy group versions could not be parsed.
pub const GROUP_VERSION_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
/// Deleting some resource types failed.
pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
/// Objects are left in the namespace.
pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
/// Objects left in the namespace carry finalizers.
pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The condition types the controller keeps, in upstream's order.
pub const TYPES: [&str; 5] = [
    DISCOVERY_FAILURE,
    GROUP_VERSION_PARSING_FAILURE,
    CONTENT_FAILURE,
    CONTENT_REMAINING,
    FINALIZERS_REMAINING,
];

/// The reason and message of a condition type when nothing is wrong.
fn ok(kind: &str) -> (&'static str, &'static str) {
    match kind {
        DISCOVERY_FAILURE => (
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        GROUP_VERSION_PARSING_FAILURE => (
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        CONTENT_FAILURE => (
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        _ => ("ContentRemoved", "All content successfully removed"),
    }
}

/// What one pass over a namespace's content found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContentTotals {
    /// Objects left, by (plural, group) of their resource.
    pub remaining: BTreeMap<(String, String), usize>,
    /// Objects left, by finalizer they carry.
    pub finalizers: BTreeMap<String, usize>,
    /// Why deleting some resource types failed, one message each.
    pub delete_errors: Vec<String>,
    /// Why discovering the resources failed, if it did.
    pub discovery_error: Option<String>,
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &Time,
) -> NamespaceCondition {
    NamespaceCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_transition_time: Some(now.clone()),
    }
}

/// One condition per type in [`TYPES`] for what `totals` found.
pub fn desired(totals: &ContentTotals, now: &Time) -> Vec<NamespaceCondition> {
    TYPES
        .iter()
        .map(|&kind| {
            let failing = match kind {
                DISCOVERY_FAILURE => totals
                    .discovery_error
                    .as_ref()
                    .map(|e| ("DiscoveryFailed", e.clone())),
                CONTENT_FAILURE if !totals.delete_errors.is_empty() => {
                    let mut messages = totals.delete_errors.clone();
                    messages.sort();
                    Some((
                        "ContentDeletionFailed",
                        format!(
                            "Failed to delete all resource types, {} remaining: {}",
                            messages.len(),
                            messages.join(", ")
                        ),
                    ))
                }
                CONTENT_REMAINING if totals.remaining.values().any(|n| *n > 0) => {
                    let mut left: Vec<String> = totals
                        .remaining
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|((plural, group), n)| {
                            format!("{plural}.{group} has {n} resource instances")
                        })
                        .collect();
                    left.sort();
                    Some((
                        "SomeResourcesRemain",
                        format!("Some resources are remaining: {}", left.join(", ")),
                    ))
                }
                FINALIZERS_REMAINING if totals.finalizers.values().any(|n| *n > 0) => {
                    let mut left: Vec<String> = totals
                        .finalizers
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(f, n)| format!("{f} in {n} resource instances"))
                        .collect();
                    left.sort();
                    Some((
                        "SomeFinalizerRemain",
                        format!("Some finalizers are remaining: {}", left.join(", ")),
                    ))
                }
                _ => None,
            };
            match failing {
                Some((reason, message)) => condition(kind, "True", reason, message, now),
                None => {
                    let (reason, message) = ok(kind);
                    condition(kind, "False", reason, message.to_string(), now)
                }
            }
        })
        .collect()
}

/// Writes `desired` into `current`: new types are added; a changed status, reason or
/// message is updated, with a new transition time only when the status flips. Returns
/// whether anything changed.
pub fn merge(current: &mut Vec<NamespaceCondition>, desired: Vec<NamespaceCondition>) -> bool {
    let mut changed = false;
    for new in desired {
        match current.iter_mut().find(|c| c.type_ == new.type_) {
            None => {
                current.push(new);
                changed = true;
            }
            Some(old) => {
                if old.status != new.status
                    || old.reason != new.reason
                    || old.message != new.message
                {
                    if old.status != new.status {
                        old.last_transition_time = new.last_transition_time;
                    }
                    old.status = new.status;
                    old.reason = new.reason;
                    old.message = new.message;
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).expect("time"))
    }

    fn find<'a>(conditions: &'a [NamespaceCondition], kind: &str) -> &'a NamespaceCondition {
        conditions.iter().find(|c| c.type_ == kind).expect(kind)
    }

    #[test]
    fn clean_content_reports_every_condition_false_with_upstreams_words() {
        let conditions = desired(&ContentTotals::default(), &at(1));
        assert_eq!(conditions.len(), 5);
        assert!(conditions.iter().all(|c| c.status == "False"));
        let c = find(&conditions, CONTENT_FAILURE);
        assert_eq!(c.reason.as_deref(), Some("ContentDeleted"));
        assert_eq!(
            c.message.as_deref(),
            Some("All content successfully deleted, may be waiting on finalization")
        );
        assert_eq!(
            find(&conditions, DISCOVERY_FAILURE).message.as_deref(),
            Some("All resources successfully discovered")
        );
        assert_eq!(
            find(&conditions, FINALIZERS_REMAINING).reason.as_deref(),
            Some("ContentRemoved")
        );
    }

    #[test]
    fn remaining_content_and_finalizers_are_listed_sorted() {
        let mut totals = ContentTotals::default();
        totals.remaining.insert(("pods".into(), String::new()), 3);
        totals
            .remaining
            .insert(("deployments".into(), "apps".into()), 1);
        totals.finalizers.insert("example.com/b".into(), 2);
        totals.finalizers.insert("example.com/a".into(), 1);
        let conditions = desired(&totals, &at(1));
        let remaining = find(&conditions, CONTENT_REMAINING);
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some(
                "Some resources are remaining: deployments.apps has 1 resource instances, pods. has 3 resource instances"
            )
        );
        let finalizers = find(&conditions, FINALIZERS_REMAINING);
        assert_eq!(finalizers.reason.as_deref(), Some("SomeFinalizerRemain"));
        assert_eq!(
            finalizers.message.as_deref(),
            Some(
                "Some finalizers are remaining: example.com/a in 1 resource instances, example.com/b in 2 resource instances"
            )
        );
    }

    #[test]
    fn delete_errors_and_discovery_failures_are_reported() {
        let totals = ContentTotals {
            delete_errors: vec!["b failed".into(), "a failed".into()],
            discovery_error: Some("Discovery failed for some groups, 1 failing: x".into()),
            ..Default::default()
        };
        let conditions = desired(&totals, &at(1));
        let failure = find(&conditions, CONTENT_FAILURE);
        assert_eq!(failure.status, "True");
        assert_eq!(failure.reason.as_deref(), Some("ContentDeletionFailed"));
        assert_eq!(
            failure.message.as_deref(),
            Some("Failed to delete all resource types, 2 remaining: a failed, b failed")
        );
        let discovery = find(&conditions, DISCOVERY_FAILURE);
        assert_eq!(discovery.reason.as_deref(), Some("DiscoveryFailed"));
    }

    #[test]
    fn merging_moves_the_transition_time_only_when_the_status_flips() {
        let mut current = Vec::new();
        let mut totals = ContentTotals::default();
        totals.remaining.insert(("pods".into(), String::new()), 2);
        assert!(merge(&mut current, desired(&totals, &at(1))));
        assert!(
            !merge(&mut current, desired(&totals, &at(2))),
            "nothing new"
        );

        totals.remaining.insert(("pods".into(), String::new()), 1);
        assert!(
            merge(&mut current, desired(&totals, &at(3))),
            "the message changed"
        );
        let c = find(&current, CONTENT_REMAINING);
        assert_eq!(c.last_transition_time, Some(at(1)), "still True since 1");

        assert!(merge(
            &mut current,
            desired(&ContentTotals::default(), &at(4))
        ));
        let c = find(&current, CONTENT_REMAINING);
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.clone()),
            ("False", Some(at(4)))
        );
        assert_eq!(current.len(), 5);
    }
}
