//! The DefaultTolerationSeconds admission plugin (upstream's
//! `plugin/pkg/admission/defaulttolerationseconds`): every new pod tolerates the
//! `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable` `NoExecute` taints
//! for 300 seconds, unless it already tolerates them. The apiserver's
//! `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`
//! change the two durations ([`Seconds`]).
//!
//! So when a node fails, its pods stay bound for five minutes (the node may come back) and
//! then the node lifecycle controller evicts them and their controllers replace them
//! elsewhere. A toleration counts as one for a taint when its key is the taint's or empty
//! and its effect is `NoExecute` or empty, whatever its operator, as upstream checks.
//!
//! Upstream also admits pod updates; rkube admits creates only, since a pod's tolerations
//! can only be added to after creation and the defaults are already there.

use serde_json::{Value, json};

/// The taint a node gets while its Ready condition is `False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint a node gets while its Ready condition is `Unknown`.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// How long the added tolerations last (upstream's `--default-not-ready-toleration-seconds`
/// and `--default-unreachable-toleration-seconds`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// How long the default tolerations last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds {
    /// For the not-ready taint.
    pub not_ready: i64,
    /// For the unreachable taint.
    pub unreachable: i64,
}

impl Default for Seconds {
    fn default() -> Self {
        Seconds {
            not_ready: DEFAULT_TOLERATION_SECONDS,
            unreachable: DEFAULT_TOLERATION_SECONDS,
        }
    }
}

/// Whether `toleration` covers the `NoExecute` taint `key`, as upstream decides it.
fn covers(toleration: &Value, key: &str) -> bool {
    let field = |name: &str| toleration.get(name).and_then(Value::as_str).unwrap_or("");
    let tkey = field("key");
    let effect = field("effect");
    (tkey == key || tkey.is_empty()) && (effect == "NoExecute" || effect.is_empty())
}

/// Adds the default not-ready and unreachable tolerations, lasting `seconds`, to the pod
/// `pod` (JSON) where it has none for them.
pub fn admit(pod: &mut Value, seconds: Seconds) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if tolerations.is_null() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else {
        // Not a list: validation refuses the pod.
        return;
    };
    for (key, seconds) in [
        (NOT_READY, seconds.not_ready),
        (UNREACHABLE, seconds.unreachable),
    ] {
        if !list.iter().any(|t| covers(t, key)) {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": seconds,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tolerations(pod: &Value) -> Vec<(String, Option<i64>)> {
        pod["spec"]["tolerations"]
            .as_array()
            .expect("tolerations")
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap_or("").to_string(),
                    t["tolerationSeconds"].as_i64(),
                )
            })
            .collect()
    }

    #[test]
    fn pods_without_tolerations_get_both_defaults() {
        let mut pod = json!({"spec": {"containers": [{"name": "c"}]}});
        admit(&mut pod, Seconds::default());
        assert_eq!(
            tolerations(&pod),
            [
                (NOT_READY.to_string(), Some(300)),
                (UNREACHABLE.to_string(), Some(300))
            ]
        );
        assert_eq!(pod["spec"]["tolerations"][0]["operator"], "Exists");
        assert_eq!(pod["spec"]["tolerations"][1]["effect"], "NoExecute");
        let mut null = json!({"spec": {"tolerations": null}});
        admit(&mut null, Seconds::default());
        assert_eq!(tolerations(&null).len(), 2);
    }

    #[test]
    fn existing_tolerations_for_the_taints_are_kept_and_not_doubled() {
        let mut pod = json!({"spec": {"tolerations": [
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2},
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"},
        ]}});
        admit(&mut pod, Seconds::default());
        assert_eq!(
            tolerations(&pod),
            [
                (UNREACHABLE.to_string(), Some(2)),
                ("dedicated".to_string(), None),
                (NOT_READY.to_string(), Some(300))
            ]
        );
        // An empty key or effect tolerates everything it names.
        let mut everything = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        admit(&mut everything, Seconds::default());
        assert_eq!(tolerations(&everything).len(), 1);
        let mut any_effect =
            json!({"spec": {"tolerations": [{"key": NOT_READY, "operator": "Exists"}]}});
        admit(&mut any_effect, Seconds::default());
        assert_eq!(
            tolerations(&any_effect),
            [
                (NOT_READY.to_string(), None),
                (UNREACHABLE.to_string(), Some(300))
            ]
        );
        // A NoSchedule toleration of the same key does not count.
        let mut no_schedule = json!({"spec": {"tolerations": [
            {"key": NOT_READY, "operator": "Exists", "effect": "NoSchedule"},
        ]}});
        admit(&mut no_schedule, Seconds::default());
        assert_eq!(tolerations(&no_schedule).len(), 3);
    }

    #[test]
    fn admit_uses_the_given_seconds_for_each_taint() {
        let mut pod = json!({"spec": {"containers": [{"name": "c"}]}});
        admit(
            &mut pod,
            Seconds {
                not_ready: 10,
                unreachable: 20,
            },
        );
        assert_eq!(
            tolerations(&pod),
            [
                (NOT_READY.to_string(), Some(10)),
                (UNREACHABLE.to_string(), Some(20))
            ]
        );
        // A pod's own toleration still wins over the configured default.
        let mut own = json!({"spec": {"tolerations": [
            {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 600},
        ]}});
        admit(
            &mut own,
            Seconds {
                not_ready: 10,
                unreachable: 20,
            },
        );
        assert_eq!(
            tolerations(&own),
            [
                (NOT_READY.to_string(), Some(600)),
                (UNREACHABLE.to_string(), Some(20))
            ]
        );
    }
}
