//! Node health: when a node last showed a sign of life, and what its conditions become when
//! it has been silent for too long (upstream's `tryUpdateNodeHealth`).
//!
//! A node is alive while its kubelet renews the node's Lease in `kube-node-lease` or posts
//! its `Ready` condition with a new `lastHeartbeatTime`. As upstream, the controller does not
//! compare those timestamps with its own clock (the kubelet's clock may be skewed): it
//! remembers when *it* last saw either of them change (the probe time) and declares the node
//! silent once `node_monitor_grace_period` has passed since, or `node_startup_grace_period`
//! for a node that never posted a `Ready` condition (counted from its creation). A node first
//! seen after a controller restart gets a full grace period from that moment.
//!
//! A silent node's kubelet-posted conditions (`Ready`, `MemoryPressure`, `DiskPressure`,
//! `PIDPressure`) all become `Unknown`; `NetworkUnavailable` is left alone, as upstream does,
//! because the network plugin, not the kubelet, posts it.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::context::Settings;

/// The conditions a kubelet posts and the controller turns `Unknown` when it goes silent.
pub const KUBELET_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Reason of a condition the controller turned `Unknown`.
pub const REASON_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
/// Message of a condition the controller turned `Unknown`.
pub const MESSAGE_STATUS_UNKNOWN: &str = "Kubelet stopped posting node status.";
/// Reason of a condition the kubelet never posted, added `Unknown` by the controller.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
/// Message of a condition the kubelet never posted.
pub const MESSAGE_NEVER_UPDATED: &str = "Kubelet never posted node status.";

/// What the controller remembers about one node's heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// When (on the controller's clock) the node last showed a sign of life.
    pub probe: Timestamp,
    /// The `lastHeartbeatTime` of the `Ready` condition when last seen; `None` when the node
    /// had no `Ready` condition (or it had no heartbeat time).
    heartbeat: Option<Timestamp>,
    /// Whether the node had a `Ready` condition when last seen.
    had_ready: bool,
    /// The Lease's `renewTime` when last seen.
    renew: Option<Timestamp>,
}

/// The condition of type `type_` of `node`.
pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status of the node's `Ready` condition (`True`, `False`, `Unknown`), if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// When the node's `Ready` condition last changed status, if known.
pub fn ready_transition(node: &Node) -> Option<Timestamp> {
    condition(node, "Ready")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

fn lease_renew_time(lease: Option<&Lease>) -> Option<Timestamp> {
    lease?.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

/// Updates the saved health of `node` with what it shows now: its `Ready` heartbeat and its
/// Lease. `now` is the controller's clock.
pub fn observe(
    saved: Option<&Health>,
    node: &Node,
    lease: Option<&Lease>,
    now: Timestamp,
) -> Health {
    let ready = condition(node, "Ready");
    let heartbeat = ready.and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    let mut health = match saved {
        // A node that never posted status is counted from its creation, so it gets the
        // startup grace period once, not again after every controller restart.
        None if ready.is_none() => Health {
            probe: node
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(now, |t| t.0),
            heartbeat,
            had_ready: false,
            renew: None,
        },
        None => Health {
            probe: now,
            heartbeat,
            had_ready: true,
            renew: None,
        },
        // The kubelet posted its first status, or the status lost its Ready condition.
        Some(saved) if saved.had_ready != ready.is_some() => Health {
            probe: now,
            heartbeat,
            had_ready: ready.is_some(),
            renew: saved.renew,
        },
        Some(saved) if ready.is_some() && saved.heartbeat != heartbeat => Health {
            probe: now,
            heartbeat,
            had_ready: true,
            renew: saved.renew,
        },
        Some(saved) => saved.clone(),
    };
    if let Some(renew) = lease_renew_time(lease)
        && health.renew.is_none_or(|seen| seen < renew)
    {
        health.renew = Some(renew);
        health.probe = now;
    }
    health
}

/// How long `node` may stay silent: the startup grace period while it never posted a
/// `Ready` condition, the monitor grace period after.
pub fn grace_period(node: &Node, settings: &Settings) -> Duration {
    if condition(node, "Ready").is_none() {
        settings.node_startup_grace_period
    } else {
        settings.node_monitor_grace_period
    }
}

/// The moment a node with `health` counts as silent.
pub fn deadline(health: &Health, grace: Duration) -> Timestamp {
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    health.probe.checked_add(grace).unwrap_or(Timestamp::MAX)
}

/// The node's conditions once it has gone silent at `now`: every kubelet condition
/// `Unknown` (those it never posted added as such); `None` when they already are.
pub fn silent_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NodeCondition {
                    type_: type_.to_string(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some(MESSAGE_NEVER_UPDATED.into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_STATUS_UNKNOWN.into());
                c.message = Some(MESSAGE_STATUS_UNKNOWN.into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed.then_some(conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use crate::clock::Clock;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn node(heartbeat: Option<&str>) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        node.metadata.creation_timestamp = Some(Time(t("2026-01-01T00:00:00Z")));
        let conditions = heartbeat.map(|hb| {
            vec![
                NodeCondition {
                    type_: "MemoryPressure".into(),
                    status: "False".into(),
                    last_heartbeat_time: Some(Time(t(hb))),
                    ..Default::default()
                },
                NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: Some("KubeletReady".into()),
                    last_heartbeat_time: Some(Time(t(hb))),
                    last_transition_time: Some(Time(t(hb))),
                    ..Default::default()
                },
            ]
        });
        node.status = Some(NodeStatus {
            conditions,
            ..Default::default()
        });
        node
    }

    fn lease(renew: &str) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(t(renew))),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn settings() -> Settings {
        Settings {
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            ..Settings::default()
        }
    }

    /// The verdict the controller reaches at the clock's time.
    fn silent(health: &Health, node: &Node, clock: &Clock) -> bool {
        clock.now() >= deadline(health, grace_period(node, &settings()))
    }

    #[test]
    fn lease_renewals_keep_a_node_alive_and_their_absence_makes_it_silent() {
        let clock = Clock::manual(t("2026-01-01T00:10:00Z"));
        // The Ready heartbeat never moves: only the Lease shows the node is alive.
        let n = node(Some("2026-01-01T00:00:05Z"));
        let mut health = observe(None, &n, Some(&lease("2026-01-01T00:09:59Z")), clock.now());
        assert_eq!(
            health.probe,
            clock.now(),
            "first sight counts as a sign of life"
        );
        for i in 1..=10 {
            clock.advance(Duration::from_secs(30));
            let renew = format!("2026-01-01T00:{:02}:00Z", 10 + i);
            health = observe(Some(&health), &n, Some(&lease(&renew)), clock.now());
            assert!(!silent(&health, &n, &clock), "renewed at {renew}");
        }
        // The kubelet dies: the same Lease is seen again and again.
        let last = lease("2026-01-01T00:20:00Z");
        clock.advance(Duration::from_secs(39));
        health = observe(Some(&health), &n, Some(&last), clock.now());
        assert!(
            !silent(&health, &n, &clock),
            "39 s of silence is within the grace"
        );
        clock.advance(Duration::from_secs(1));
        health = observe(Some(&health), &n, Some(&last), clock.now());
        assert!(
            silent(&health, &n, &clock),
            "40 s of silence is the grace period"
        );
    }

    #[test]
    fn ready_heartbeats_count_without_a_lease_and_old_leases_do_not() {
        let clock = Clock::manual(t("2026-01-01T01:00:00Z"));
        let mut health = observe(None, &node(Some("2026-01-01T00:59:00Z")), None, clock.now());
        clock.advance(Duration::from_secs(30));
        let n = node(Some("2026-01-01T01:00:25Z"));
        health = observe(Some(&health), &n, None, clock.now());
        assert_eq!(
            health.probe,
            clock.now(),
            "a new heartbeat is a sign of life"
        );
        clock.advance(Duration::from_secs(30));
        let lease_seen = observe(
            Some(&health),
            &n,
            Some(&lease("2026-01-01T00:00:00Z")),
            clock.now(),
        );
        assert_eq!(
            lease_seen.probe,
            clock.now(),
            "a Lease seen first counts once"
        );
        clock.advance(Duration::from_secs(30));
        let again = observe(
            Some(&lease_seen),
            &n,
            Some(&lease("2026-01-01T00:00:00Z")),
            clock.now(),
        );
        assert_eq!(
            again.probe, lease_seen.probe,
            "an unchanged Lease is no heartbeat"
        );
        clock.advance(Duration::from_secs(10));
        assert!(
            silent(&again, &n, &clock),
            "40 s after the Lease was first seen"
        );
    }

    #[test]
    fn a_node_that_never_posted_status_gets_the_startup_grace_from_its_creation() {
        let n = node(None);
        let clock = Clock::manual(t("2026-01-01T00:00:59Z"));
        let health = observe(None, &n, None, clock.now());
        assert_eq!(health.probe, t("2026-01-01T00:00:00Z"));
        assert_eq!(grace_period(&n, &settings()), Duration::from_secs(60));
        assert!(!silent(&health, &n, &clock));
        clock.advance(Duration::from_secs(1));
        assert!(silent(&health, &n, &clock));
        // Posting status for the first time is a sign of life.
        let posted = node(Some("2026-01-01T00:00:10Z"));
        let health = observe(Some(&health), &posted, None, clock.now());
        assert_eq!(health.probe, clock.now());
    }

    #[test]
    fn silent_nodes_get_every_kubelet_condition_unknown_once() {
        let now = t("2026-01-01T00:05:00Z");
        let n = node(Some("2026-01-01T00:00:05Z"));
        let conditions = silent_conditions(&n, now).expect("conditions change");
        let by_type = |type_: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == type_)
                .unwrap_or_else(|| panic!("{type_} missing"))
                .clone()
        };
        let ready = by_type("Ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(REASON_STATUS_UNKNOWN));
        assert_eq!(ready.message.as_deref(), Some(MESSAGE_STATUS_UNKNOWN));
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time(t("2026-01-01T00:00:05Z"))),
            "the kubelet's last heartbeat stays"
        );
        assert_eq!(by_type("MemoryPressure").status, "Unknown");
        let disk = by_type("DiskPressure");
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_deref()),
            ("Unknown", Some(REASON_NEVER_UPDATED))
        );
        assert_eq!(by_type("PIDPressure").status, "Unknown");

        let mut unknown = n.clone();
        unknown.status.as_mut().expect("status").conditions = Some(conditions);
        assert_eq!(
            silent_conditions(&unknown, now),
            None,
            "nothing left to change"
        );
    }
}
