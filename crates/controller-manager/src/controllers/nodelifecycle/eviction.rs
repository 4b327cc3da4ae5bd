//! Taint-based eviction decisions (upstream's `pkg/controller/tainteviction`): when a pod on
//! a node with `NoExecute` taints must go.
//!
//! Each `NoExecute` taint is matched against the pod's tolerations (upstream's
//! `Toleration.ToleratesTaint`, from `rkube_types::scheduling`); the first toleration that
//! tolerates it decides, as upstream's `GetMatchingTolerations`:
//!
//! - no toleration tolerates it: the pod is evicted at once;
//! - the toleration has no `tolerationSeconds`: the taint is tolerated for good;
//! - it has `tolerationSeconds`: the pod may stay that long after the taint was added
//!   (its `timeAdded`; zero or negative seconds mean at once).
//!
//! The pod goes at the earliest of these moments. A pod that came to the node after the
//! taint counts from its own creation instead, so a pod is never evicted before it had its
//! full toleration (upstream counts from the moment its controller first saw the pod on the
//! tainted node, which it cannot remember across restarts).

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Taint, Toleration};
use rkube_types::scheduling::tolerates;

/// When a pod is to be evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Never: every taint is tolerated for good (or there is none).
    Never,
    /// Now: a taint is not tolerated.
    Now,
    /// At this moment, when the shortest toleration runs out.
    At(Timestamp),
}

/// When a pod with `tolerations`, created at `created`, must leave a node whose `NoExecute`
/// taints are `taints`, each with the moment it was added.
pub fn decide(
    tolerations: &[Toleration],
    taints: &[(Taint, Timestamp)],
    created: Option<Timestamp>,
) -> Eviction {
    let mut earliest: Option<Timestamp> = None;
    for (taint, added) in taints {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        let Some(seconds) = toleration.toleration_seconds else {
            continue;
        };
        if seconds <= 0 {
            return Eviction::Now;
        }
        let start = created.map_or(*added, |c| c.max(*added));
        let at = start
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MAX);
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    earliest.map_or(Eviction::Never, Eviction::At)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn taint(key: &str, value: Option<&str>) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: "NoExecute".into(),
            time_added: None,
        }
    }

    fn toleration(
        key: &str,
        operator: &str,
        value: &str,
        effect: &str,
        seconds: Option<i64>,
    ) -> Toleration {
        let opt = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        Toleration {
            key: opt(key),
            operator: opt(operator),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: seconds,
        }
    }

    #[test]
    fn eviction_times_follow_the_shortest_matching_toleration() {
        let added = t("2026-01-01T00:00:00Z");
        let created = Some(t("2025-12-31T00:00:00Z"));
        let unreachable = (taint("node.kubernetes.io/unreachable", None), added);
        let short = toleration(
            "node.kubernetes.io/unreachable",
            "Exists",
            "",
            "NoExecute",
            Some(2),
        );
        let forever = toleration("", "Exists", "", "", None);

        assert_eq!(
            decide(&[], &[], created),
            Eviction::Never,
            "no taint, no eviction"
        );
        assert_eq!(
            decide(&[], std::slice::from_ref(&unreachable), created),
            Eviction::Now
        );
        assert_eq!(
            decide(
                std::slice::from_ref(&short),
                std::slice::from_ref(&unreachable),
                created
            ),
            Eviction::At(t("2026-01-01T00:00:02Z"))
        );
        assert_eq!(
            decide(
                std::slice::from_ref(&forever),
                std::slice::from_ref(&unreachable),
                created
            ),
            Eviction::Never
        );
        // The first toleration that matches decides, as upstream.
        assert_eq!(
            decide(
                &[forever.clone(), short.clone()],
                std::slice::from_ref(&unreachable),
                created
            ),
            Eviction::Never
        );
        let zero = toleration(
            "node.kubernetes.io/unreachable",
            "Exists",
            "",
            "NoExecute",
            Some(0),
        );
        assert_eq!(
            decide(&[zero], std::slice::from_ref(&unreachable), created),
            Eviction::Now
        );

        // Two taints: the earliest deadline wins; one intolerable taint evicts at once.
        let not_ready = (
            taint("node.kubernetes.io/not-ready", None),
            t("2026-01-01T00:00:30Z"),
        );
        let not_ready_tol = toleration(
            "node.kubernetes.io/not-ready",
            "Exists",
            "",
            "NoExecute",
            Some(300),
        );
        assert_eq!(
            decide(
                &[short.clone(), not_ready_tol.clone()],
                &[unreachable.clone(), not_ready.clone()],
                created
            ),
            Eviction::At(t("2026-01-01T00:00:02Z"))
        );
        assert_eq!(
            decide(&[not_ready_tol], &[unreachable.clone(), not_ready], created),
            Eviction::Now
        );

        // A pod that arrived after the taint gets its full toleration.
        assert_eq!(
            decide(
                std::slice::from_ref(&short),
                &[unreachable],
                Some(t("2026-01-01T00:01:00Z"))
            ),
            Eviction::At(t("2026-01-01T00:01:02Z"))
        );
    }
}
