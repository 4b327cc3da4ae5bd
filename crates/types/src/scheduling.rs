//! Where a pod may run, as pure functions of API objects, shared by the scheduler and the
//! controllers that place or evict pods themselves (DaemonSet, node lifecycle): whether a
//! toleration tolerates a taint (upstream's `Toleration.ToleratesTaint` and
//! `component-helpers/scheduling/corev1`'s `TolerationsTolerateTaint`) and whether a node
//! matches a pod's node selector and node affinity ([`node_affinity`]).

use k8s_openapi::api::core::v1::{Taint, Toleration};

pub mod node_affinity;

/// Whether `toleration` tolerates `taint` (upstream's `Toleration.ToleratesTaint`): an empty
/// effect matches every effect, an empty key matches every key, and the operator (`Equal`
/// when unset) compares the values (`Exists` matches any value). An unknown operator
/// tolerates nothing.
#[inline]
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint` (upstream's `TolerationsTolerateTaint`).
#[inline]
pub fn tolerations_tolerate(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_SCHEDULE: &str = "NoSchedule";
    const NO_EXECUTE: &str = "NoExecute";
    const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
    const EFFECTS: [&str; 3] = [NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE];

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.to_string(),
            value: (!value.is_empty()).then(|| value.to_string()),
            effect: effect.to_string(),
            time_added: None,
        }
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(operator),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: None,
        }
    }

    #[test]
    fn equal_operator_compares_key_value_and_effect() {
        let t = taint("dedicated", "gpu", NO_SCHEDULE);
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", NO_SCHEDULE),
            &t
        ));
        // The operator defaults to Equal.
        assert!(tolerates(
            &toleration("dedicated", "", "gpu", NO_SCHEDULE),
            &t
        ));
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "cpu", NO_SCHEDULE),
            &t
        ));
        assert!(!tolerates(
            &toleration("other", "Equal", "gpu", NO_SCHEDULE),
            &t
        ));
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "gpu", NO_EXECUTE),
            &t
        ));
    }

    #[test]
    fn exists_with_empty_key_tolerates_every_taint() {
        let everything = toleration("", "Exists", "", "");
        for effect in EFFECTS {
            assert!(tolerates(&everything, &taint("a", "b", effect)));
            assert!(tolerates(&everything, &taint("c", "", effect)));
        }
        // Exists with an empty key but an effect tolerates every key of that effect only.
        let no_exec = toleration("", "Exists", "", NO_EXECUTE);
        assert!(tolerates(&no_exec, &taint("a", "b", NO_EXECUTE)));
        assert!(!tolerates(&no_exec, &taint("a", "b", NO_SCHEDULE)));
    }

    #[test]
    fn empty_effect_tolerates_all_effects_of_the_key() {
        let t = toleration("k", "Exists", "", "");
        for effect in EFFECTS {
            assert!(tolerates(&t, &taint("k", "v", effect)));
        }
        assert!(!tolerates(&t, &taint("other", "v", NO_SCHEDULE)));
        // Equal with an empty effect: every effect of the key with that value.
        let db = toleration("dedicated", "Equal", "db", "");
        for effect in EFFECTS {
            assert!(tolerates(&db, &taint("dedicated", "db", effect)));
            assert!(!tolerates(&db, &taint("dedicated", "web", effect)));
        }
    }

    #[test]
    fn exists_ignores_the_value() {
        let t = toleration("node.kubernetes.io/unreachable", "Exists", "", NO_EXECUTE);
        assert!(tolerates(
            &t,
            &taint("node.kubernetes.io/unreachable", "", NO_EXECUTE)
        ));
        assert!(tolerates(
            &t,
            &taint("node.kubernetes.io/unreachable", "x", NO_EXECUTE)
        ));
        assert!(!tolerates(
            &t,
            &taint("node.kubernetes.io/unreachable", "", NO_SCHEDULE)
        ));
    }

    #[test]
    fn equal_with_empty_value_matches_a_taint_without_value() {
        let t = toleration("k", "Equal", "", NO_SCHEDULE);
        assert!(tolerates(&t, &taint("k", "", NO_SCHEDULE)));
        assert!(!tolerates(&t, &taint("k", "v", NO_SCHEDULE)));
    }

    #[test]
    fn unknown_operator_tolerates_nothing() {
        for operator in ["Gt", "Lt", "exists", "NotEqual"] {
            assert!(!tolerates(
                &toleration("k", operator, "1", ""),
                &taint("k", "1", NO_SCHEDULE)
            ));
        }
    }

    #[test]
    fn no_execute_cases_of_the_node_lifecycle_controller() {
        let unreachable = taint("node.kubernetes.io/unreachable", "", NO_EXECUTE);
        let dedicated = taint("dedicated", "db", NO_EXECUTE);
        let cases = [
            (
                toleration("node.kubernetes.io/unreachable", "Exists", "", NO_EXECUTE),
                &unreachable,
                true,
            ),
            (
                toleration("node.kubernetes.io/unreachable", "Exists", "", NO_SCHEDULE),
                &unreachable,
                false,
            ),
            (toleration("", "Exists", "", ""), &dedicated, true),
            (toleration("", "Exists", "", NO_EXECUTE), &dedicated, true),
            (toleration("dedicated", "Equal", "db", ""), &dedicated, true),
            (
                toleration("dedicated", "", "db", NO_EXECUTE),
                &dedicated,
                true,
            ),
            (
                toleration("dedicated", "Equal", "web", ""),
                &dedicated,
                false,
            ),
            (toleration("other", "Exists", "", ""), &dedicated, false),
            (toleration("dedicated", "Lt", "db", ""), &dedicated, false),
        ];
        for (tol, taint, want) in cases {
            assert_eq!(tolerates(&tol, taint), want, "{tol:?} vs {taint:?}");
        }
    }

    #[test]
    fn any_toleration_of_a_list_suffices() {
        let t = taint("k", "v", NO_SCHEDULE);
        assert!(!tolerations_tolerate(&[], &t));
        assert!(!tolerations_tolerate(
            &[toleration("other", "Exists", "", "")],
            &t
        ));
        assert!(tolerations_tolerate(
            &[
                toleration("other", "Exists", "", ""),
                toleration("k", "Equal", "v", NO_SCHEDULE),
            ],
            &t
        ));
    }
}
