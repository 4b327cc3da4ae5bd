//! Pod status from what the runtime shows and what the worker remembers: phase (upstream's
//! `getPhase`), conditions, container statuses with their waiting reasons, pod IP, host IP
//! and start time. Pure: the worker writes the result only when it differs from the last.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::view::{Instance, PodView};
use crate::runtime::cri;

/// Why a container is not running, as the worker decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// `ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`, ...
    pub reason: String,
    /// The details.
    pub message: String,
}

/// Everything besides the runtime view that status needs.
pub struct Inputs<'a> {
    /// The pod as the API has it.
    pub pod: &'a Pod,
    /// The runtime's objects for the pod.
    pub view: &'a PodView,
    /// Waiting reasons per container name.
    pub waiting: &'a HashMap<String, Waiting>,
    /// Readiness and start per container name (from the probers).
    pub probes: &'a HashMap<String, (bool, bool)>,
    /// The sandbox's IP.
    pub pod_ip: Option<&'a str>,
    /// The node's IP.
    pub host_ip: &'a str,
    /// `containerd`.
    pub runtime_name: &'a str,
    /// Now, RFC 3339.
    pub now: &'a str,
    /// The pod is being torn down (deleted or finished): nothing is ready.
    pub terminating: bool,
    /// The pod ran longer than its `activeDeadlineSeconds`: it fails.
    pub deadline_exceeded: bool,
}

fn rfc3339(nanos: i64) -> Option<String> {
    if nanos <= 0 {
        return None;
    }
    jiff::Timestamp::from_nanosecond(nanos as i128)
        .ok()
        .map(|t| {
            t.round(jiff::Unit::Second)
                .unwrap_or(t)
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
}

fn terminated(i: &Instance, runtime: &str) -> Value {
    let s = &i.status;
    let reason = if !s.reason.is_empty() {
        s.reason.clone()
    } else if s.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    let mut t = json!({
        "exitCode": s.exit_code,
        "reason": reason,
        "startedAt": rfc3339(s.started_at),
        "finishedAt": rfc3339(s.finished_at),
        "containerID": format!("{runtime}://{}", i.id),
    });
    if !s.message.is_empty() {
        t["message"] = json!(s.message);
    }
    t
}

/// What one container's status says, for the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Running,
    /// Never ran yet.
    Waiting,
    /// Terminated with this exit code (possibly waiting to restart).
    Exited(i32),
}

fn container_status(c: &Container, inputs: &Inputs<'_>) -> (Value, Seen, bool) {
    let latest = inputs.view.latest(&c.name);
    let waiting = inputs.waiting.get(&c.name);
    let (ready_probe, started_probe) = inputs
        .probes
        .get(&c.name)
        .copied()
        .unwrap_or((false, false));
    let rt = inputs.runtime_name;
    let mut s = json!({
        "name": c.name,
        "image": c.image.clone().unwrap_or_default(),
        "imageID": latest.map(|i| i.status.image_ref.clone()).unwrap_or_default(),
        "restartCount": latest.map(|i| i.attempt).unwrap_or(0),
        "ready": false,
        "started": false,
        "state": {"waiting": {"reason": "ContainerCreating"}},
    });
    if let Some(i) = latest {
        s["containerID"] = json!(format!("{rt}://{}", i.id));
    }
    let seen;
    match latest {
        Some(i) if i.running() => {
            s["state"] = json!({"running": {"startedAt": rfc3339(i.status.started_at)}});
            s["started"] = json!(started_probe);
            s["ready"] = json!(ready_probe && started_probe && !inputs.terminating);
            if let Some(prev) = inputs.view.previous(&c.name).filter(|p| p.exited()) {
                s["lastState"] = json!({"terminated": terminated(prev, rt)});
            }
            seen = Seen::Running;
        }
        Some(i) if i.exited() => {
            let t = terminated(i, rt);
            match waiting {
                Some(w) => {
                    s["state"] = json!({"waiting": {"reason": w.reason, "message": w.message}});
                    s["lastState"] = json!({"terminated": t});
                }
                None => s["state"] = json!({"terminated": t}),
            }
            seen = Seen::Exited(i.status.exit_code);
        }
        _ => {
            if let Some(w) = waiting {
                s["state"] = json!({"waiting": {"reason": w.reason, "message": w.message}});
            }
            seen = Seen::Waiting;
        }
    }
    if let Some(w) = s["state"]["waiting"].as_object_mut()
        && w.get("message").is_some_and(|m| m.as_str() == Some(""))
    {
        w.remove("message");
    }
    let ready = s["ready"] == json!(true);
    (s, seen, ready)
}

fn condition(
    t: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    pod: &Pod,
    now: &str,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == t));
    let transition = match previous {
        Some(p) if p.status == status => p
            .last_transition_time
            .as_ref()
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| now.to_string()),
        _ => now.to_string(),
    };
    let mut c = json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": transition});
    if !ok {
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
    }
    c
}

/// The conditions the kubelet owns; others (PodScheduled, DisruptionTarget, ...) are kept.
pub const OWNED_CONDITIONS: &[&str] = &[
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

/// The pod status to write (the `status` object).
pub fn pod_status(inputs: &Inputs<'_>) -> Value {
    let pod = inputs.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let now = inputs.now;

    let mut init_statuses = Vec::new();
    let mut init_done = true;
    let mut init_failed = false;
    let mut incomplete = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        let (mut s, seen, _) = container_status(c, inputs);
        let done = matches!(seen, Seen::Exited(0)) && !inputs.waiting.contains_key(&c.name);
        if done {
            s["ready"] = json!(true);
        } else {
            init_done = false;
            incomplete.push(c.name.clone());
            if matches!(seen, Seen::Exited(code) if code != 0) && policy == "Never" {
                init_failed = true;
            }
        }
        init_statuses.push(s);
    }

    let mut statuses = Vec::new();
    let mut unready = Vec::new();
    let (mut running, mut waiting, mut succeeded, mut failed) = (0, 0, 0, 0);
    for c in &spec.containers {
        let (s, seen, ready) = container_status(c, inputs);
        if !ready {
            unready.push(c.name.clone());
        }
        match seen {
            Seen::Running => running += 1,
            Seen::Waiting => waiting += 1,
            Seen::Exited(0) => succeeded += 1,
            Seen::Exited(_) => failed += 1,
        }
        statuses.push(s);
    }

    let stopped = succeeded + failed;
    let phase = if init_failed {
        "Failed"
    } else if !init_done || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            "Always" => "Running",
            "OnFailure" if failed > 0 => "Running",
            "OnFailure" => "Succeeded",
            _ if failed > 0 => "Failed",
            _ => "Succeeded",
        }
    } else {
        "Pending"
    };
    // A deleted pod whose containers all stopped ends Succeeded or Failed whatever its
    // restart policy (upstream's terminal phase for pods being deleted).
    let phase = if inputs.terminating && running == 0 && stopped > 0 {
        if failed == 0 { "Succeeded" } else { "Failed" }
    } else {
        phase
    };
    let phase = if inputs.deadline_exceeded {
        "Failed"
    } else {
        phase
    };
    // A terminal phase never goes back.
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some(p @ ("Succeeded" | "Failed")) => p,
        _ => phase,
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");

    let list = |names: &[String]| format!("[{}]", names.join(" "));
    let ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let containers_ready = unready.is_empty() && !inputs.terminating;
    // Readiness gates: conditions others set that Ready waits for.
    let gates_missing: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .filter(|g| {
            !pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == g.condition_type && c.status == "True")
                })
        })
        .map(|g| g.condition_type.clone())
        .collect();
    let (pod_ready, ready_reason_pod, ready_message) = if !containers_ready {
        (
            false,
            ready_reason,
            (!terminal).then(|| format!("containers with unready status: {}", list(&unready))),
        )
    } else if let Some(gate) = gates_missing.first() {
        (
            false,
            "ReadinessGatesNotReady",
            Some(format!(
                "corresponding condition of pod readiness gate \"{gate}\" does not exist."
            )),
        )
    } else {
        (true, ready_reason, None)
    };
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            inputs.view.ready_sandbox().is_some() && !terminal,
            None,
            None,
            pod,
            now,
        ),
        condition(
            "Initialized",
            init_done,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: {}",
                list(&incomplete)
            )),
            pod,
            now,
        ),
        condition(
            "ContainersReady",
            containers_ready,
            Some(ready_reason),
            (!terminal).then(|| format!("containers with unready status: {}", list(&unready))),
            pod,
            now,
        ),
        condition(
            "Ready",
            pod_ready,
            Some(ready_reason_pod),
            ready_message,
            pod,
            now,
        ),
    ];
    for c in pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if !OWNED_CONDITIONS.contains(&c.type_.as_str()) {
            conditions.push(serde_json::to_value(c).unwrap_or(Value::Null));
        }
    }

    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| now.to_string());
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": inputs.host_ip,
        "hostIPs": [{"ip": inputs.host_ip}],
        "startTime": start_time,
        "qosClass": super::spec::qos_class(pod),
        "containerStatuses": statuses,
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if inputs.deadline_exceeded {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!("Pod was active on the node longer than the specified deadline");
    }
    if let Some(ip) = inputs.pod_ip.filter(|ip| !ip.is_empty()) {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    } else if let Some(old) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) {
        // A stopped sandbox has no IP any more; the pod keeps reporting the one it had.
        status["podIP"] = json!(old);
        status["podIPs"] = json!([{"ip": old}]);
    }
    status
}

/// The sandbox IP from its status.
pub fn sandbox_ip(s: &cri::PodSandboxStatus) -> Option<String> {
    s.network
        .as_ref()
        .map(|n| n.ip.clone())
        .filter(|ip| !ip.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cri::ContainerState;

    fn instance(name: &str, attempt: u32, state: ContainerState, exit: i32) -> Instance {
        Instance {
            id: format!("{name}-{attempt}"),
            name: name.into(),
            attempt,
            sandbox_id: "s".into(),
            spec_image: String::new(),
            status: cri::ContainerStatus {
                state: state as i32,
                exit_code: exit,
                started_at: 1_700_000_000_000_000_000,
                finished_at: if state == ContainerState::ContainerExited {
                    1_700_000_001_000_000_000
                } else {
                    0
                },
                ..Default::default()
            },
        }
    }

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]}}))
        .unwrap()
    }

    fn status(pod: &Pod, instances: Vec<Instance>, waiting: HashMap<String, Waiting>) -> Value {
        let view = PodView {
            sandboxes: vec![],
            instances,
        };
        let probes = HashMap::from([
            ("a".to_string(), (true, true)),
            ("b".to_string(), (true, true)),
        ]);
        pod_status(&Inputs {
            pod,
            view: &view,
            waiting: &waiting,
            probes: &probes,
            pod_ip: Some("10.0.0.2"),
            host_ip: "192.168.1.1",
            runtime_name: "containerd",
            now: "2026-01-01T00:00:00Z",
            terminating: false,
            deadline_exceeded: false,
        })
    }

    #[test]
    fn phases_follow_upstream() {
        use ContainerState::*;
        let p = pod("Always");
        assert_eq!(status(&p, vec![], HashMap::new())["phase"], "Pending");
        let both = vec![
            instance("a", 0, ContainerRunning, 0),
            instance("b", 0, ContainerRunning, 0),
        ];
        let s = status(&p, both, HashMap::new());
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["conditions"][3]["type"], "Ready");
        assert_eq!(s["conditions"][3]["status"], "True");
        assert_eq!(s["podIP"], "10.0.0.2");

        let crash = vec![
            instance("a", 3, ContainerExited, 1),
            instance("b", 0, ContainerRunning, 0),
        ];
        let w = HashMap::from([(
            "a".to_string(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off".into(),
            },
        )]);
        let s = status(&p, crash, w);
        assert_eq!(s["phase"], "Running");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        assert_eq!(
            s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            1
        );
        assert_eq!(s["containerStatuses"][0]["restartCount"], 3);
        assert_eq!(s["conditions"][3]["status"], "False");
        assert_eq!(
            s["conditions"][3]["message"],
            "containers with unready status: [a]"
        );

        let never = pod("Never");
        let done = vec![
            instance("a", 0, ContainerExited, 0),
            instance("b", 0, ContainerExited, 2),
        ];
        let s = status(&never, done.clone(), HashMap::new());
        assert_eq!(s["phase"], "Failed");
        assert_eq!(
            s["containerStatuses"][1]["state"]["terminated"]["reason"],
            "Error"
        );
        assert_eq!(
            status(&pod("OnFailure"), done, HashMap::new())["phase"],
            "Running"
        );
        let ok = vec![
            instance("a", 0, ContainerExited, 0),
            instance("b", 0, ContainerExited, 0),
        ];
        let s = status(&never, ok, HashMap::new());
        assert_eq!(s["phase"], "Succeeded");
        assert_eq!(s["conditions"][3]["reason"], "PodCompleted");
    }

    #[test]
    fn deleted_pods_end_in_a_terminal_phase_that_never_goes_back() {
        use ContainerState::*;
        let p = pod("Always");
        let view = PodView {
            sandboxes: vec![],
            instances: vec![
                instance("a", 0, ContainerExited, 0),
                instance("b", 0, ContainerExited, 137),
            ],
        };
        let none = HashMap::new();
        let probes = none_probes();
        let s = pod_status(&Inputs {
            pod: &p,
            view: &view,
            waiting: &none,
            probes: &probes,
            pod_ip: None,
            host_ip: "h",
            runtime_name: "containerd",
            now: "2026-01-01T00:00:00Z",
            terminating: true,
            deadline_exceeded: false,
        });
        assert_eq!(
            s["phase"], "Failed",
            "a SIGKILLed container fails a deleted pod"
        );
        // Once terminal, an empty runtime view (containers removed) keeps the phase.
        let mut done = pod("Always");
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        let empty = PodView::default();
        let s = pod_status(&Inputs {
            pod: &done,
            view: &empty,
            waiting: &none,
            probes: &probes,
            pod_ip: None,
            host_ip: "h",
            runtime_name: "containerd",
            now: "2026-01-01T00:00:00Z",
            terminating: true,
            deadline_exceeded: false,
        });
        assert_eq!(s["phase"], "Succeeded");
    }

    fn none_probes() -> HashMap<String, (bool, bool)> {
        HashMap::new()
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        use ContainerState::*;
        let mut p = pod("Always");
        p.spec.as_mut().unwrap().readiness_gates = Some(vec![
            serde_json::from_value(json!({"conditionType": "example.com/lb"})).unwrap(),
        ]);
        let both = vec![
            instance("a", 0, ContainerRunning, 0),
            instance("b", 0, ContainerRunning, 0),
        ];
        let s = status(&p, both.clone(), HashMap::new());
        let ready = |s: &Value| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap()
                .clone()
        };
        assert_eq!(ready(&s)["status"], "False");
        assert_eq!(ready(&s)["reason"], "ReadinessGatesNotReady");
        p.status = Some(
            serde_json::from_value(json!({"conditions": [
            {"type": "example.com/lb", "status": "True"}]}))
            .unwrap(),
        );
        let s = status(&p, both, HashMap::new());
        assert_eq!(ready(&s)["status"], "True");
        assert!(
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "example.com/lb")
        );
    }

    #[test]
    fn transition_times_survive_unchanged_conditions() {
        let mut p = pod("Always");
        p.status = Some(serde_json::from_value(json!({"conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]})).unwrap());
        let s = status(&p, vec![], HashMap::new());
        let conds = s["conditions"].as_array().unwrap();
        let init = conds.iter().find(|c| c["type"] == "Initialized").unwrap();
        assert_eq!(init["lastTransitionTime"], "2025-01-01T00:00:00Z");
        assert!(
            conds.iter().any(|c| c["type"] == "PodScheduled"),
            "foreign conditions are kept"
        );
    }
}
