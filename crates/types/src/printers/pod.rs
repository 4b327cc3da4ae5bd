//! The pod printer (`printPod`): readiness, the aggregate status that `kubectl get pods`
//! shows (init progress, waiting and termination reasons, `Terminating`), restarts with the
//! time of the last one, and the wide node and network columns.

use super::descriptions::{D_POD_GATES, D_POD_IP, D_POD_NODE, D_POD_NOMINATED};
use super::object::{Obj, each};
use super::time::{Timestamp, since};
use super::{AGE, Column, NAME, Printer, age_cell, name_cell};
use serde_json::Value;
use std::collections::BTreeSet;

/// `node.NodeUnreachablePodReason`: the reason the node lifecycle controller gives pods of
/// unreachable nodes.
const NODE_UNREACHABLE_POD_REASON: &str = "NodeLost";

/// Pods.
pub(super) const POD: Printer = Printer {
    columns: &[
        NAME,
        Column::new(
            "Ready",
            "string",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        Column::new(
            "Status",
            "string",
            "The aggregate status of the containers in this pod.",
        ),
        Column::new(
            "Restarts",
            "string",
            "The number of times the containers in this pod have been restarted and when the \
             last container in this pod has restarted.",
        ),
        AGE,
        Column::wide("IP", "string", D_POD_IP),
        Column::wide("Node", "string", D_POD_NODE),
        Column::wide("Nominated Node", "string", D_POD_NOMINATED),
        Column::wide("Readiness Gates", "string", D_POD_GATES),
    ],
    cells: pod_cells,
};

/// The later of two optional instants (`None` is Go's zero time, before everything).
fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    a.max(b.filter(|t| !t.is_zero()))
}

/// `lastState.terminated.finishedAt` of a container status, if it terminated before.
fn last_termination(c: Obj<'_>) -> Option<Timestamp> {
    c.time(&["lastState", "terminated", "finishedAt"])
}

/// The status text of a terminated container without a reason: `Signal:N` or `ExitCode:N`.
fn exit_text(terminated: Obj<'_>) -> String {
    match terminated.int(&["signal"]) {
        0 => format!("ExitCode:{}", terminated.int(&["exitCode"])),
        signal => format!("Signal:{signal}"),
    }
}

/// Whether the first condition of `type_` has status `True`.
fn condition_true(conditions: &[Value], type_: &str) -> bool {
    each(conditions)
        .find(|c| c.str(&["type"]) == type_)
        .is_some_and(|c| c.str(&["status"]) == "True")
}

/// The cells of `printPod`.
fn pod_cells(pod: Obj<'_>, now: i64) -> Vec<Value> {
    let (ready, total, status, restarts) = pod_status(pod, now);
    // Upstream reads PodIPs, which conversion from v1 fills from podIP when they disagree.
    let mut ip = pod.str(&["status", "podIP"]);
    if ip.is_empty() {
        ip = pod
            .list(&["status", "podIPs"])
            .first()
            .map_or("", |i| Obj(i).str(&["ip"]));
    }
    let none_if_empty = |s: &str| -> Value { if s.is_empty() { "<none>" } else { s }.into() };
    let gates = pod.list(&["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = pod.list(&["status", "conditions"]);
        let true_conditions = each(gates)
            .filter(|g| condition_true(conditions, g.str(&["conditionType"])))
            .count();
        format!("{true_conditions}/{}", gates.len())
    };
    vec![
        name_cell(pod),
        format!("{ready}/{total}").into(),
        status.into(),
        restarts.into(),
        age_cell(pod, now),
        none_if_empty(ip),
        none_if_empty(pod.str(&["spec", "nodeName"])),
        none_if_empty(pod.str(&["status", "nominatedNodeName"])),
        readiness_gates.into(),
    ]
}

/// Ready containers, counted containers, the status text and the restarts text of a pod,
/// exactly as `printPod` derives them.
fn pod_status(pod: Obj<'_>, now: i64) -> (usize, usize, String, String) {
    let init_specs = pod.list(&["spec", "initContainers"]);
    // Sidecars (init containers with restartPolicy Always) count as containers.
    let sidecars: BTreeSet<&str> = each(init_specs)
        .filter(|c| c.str(&["restartPolicy"]) == "Always")
        .map(|c| c.str(&["name"]))
        .collect();
    let mut total = pod.list(&["spec", "containers"]).len();
    total += each(init_specs)
        .filter(|c| c.str(&["restartPolicy"]) == "Always")
        .count();

    let phase = pod.str(&["status", "phase"]);
    let status_reason = pod.str(&["status", "reason"]);
    let mut reason = if status_reason.is_empty() {
        phase.to_string()
    } else {
        status_reason.to_string()
    };
    let conditions = pod.list(&["status", "conditions"]);
    for c in each(conditions) {
        if c.str(&["type"]) == "PodScheduled" && c.str(&["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;
    let mut initializing = false;
    for (i, c) in each(pod.list(&["status", "initContainerStatuses"])).enumerate() {
        restarts += c.int(&["restartCount"]);
        last_restart = later(last_restart, last_termination(c));
        let is_sidecar = sidecars.contains(c.str(&["name"]));
        if is_sidecar {
            sidecar_restarts += c.int(&["restartCount"]);
            last_sidecar_restart = later(last_sidecar_restart, last_termination(c));
        }
        let terminated = c.at(&["state", "terminated"]);
        let waiting_reason = c.str(&["state", "waiting", "reason"]);
        if terminated.present() && terminated.int(&["exitCode"]) == 0 {
            continue;
        }
        if is_sidecar && c.bool(&["started"]) {
            if c.bool(&["ready"]) {
                ready += 1;
            }
            continue;
        }
        if terminated.present() {
            // Initialization failed.
            reason = match terminated.str(&["reason"]) {
                "" => format!("Init:{}", exit_text(terminated)),
                r => format!("Init:{r}"),
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in each(pod.list(&["status", "containerStatuses"])).rev() {
            restarts += c.int(&["restartCount"]);
            last_restart = later(last_restart, last_termination(c));
            let waiting_reason = c.str(&["state", "waiting", "reason"]);
            let terminated = c.at(&["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if terminated.present() {
                reason = match terminated.str(&["reason"]) {
                    "" => exit_text(terminated),
                    r => r.to_string(),
                };
            } else if c.bool(&["ready"]) && c.has(&["state", "running"]) {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose completed containers leave one still running is not "Completed".
        if reason == "Completed" && has_running {
            reason = if condition_true_any(conditions, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if pod.deleting() && status_reason == NODE_UNREACHABLE_POD_REASON {
        reason = "Unknown".to_string();
    } else if pod.deleting() && !matches!(phase, "Failed" | "Succeeded") {
        reason = "Terminating".to_string();
    }

    let restarts_text = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(at), now)),
        _ => restarts.to_string(),
    };
    (ready, total, reason, restarts_text)
}

/// `hasPodReadyCondition`: whether any condition of `type_` has status `True`.
fn condition_true_any(conditions: &[Value], type_: &str) -> bool {
    each(conditions).any(|c| c.str(&["type"]) == type_ && c.str(&["status"]) == "True")
}
