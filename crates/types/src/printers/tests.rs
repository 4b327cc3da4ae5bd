//! Tests of the printers: cells as Kubernetes 1.32 prints them for typical and edge-case
//! objects, the column/cell invariants of every registered resource, and the Table JSON.

use super::*;
use crate::registry;
use serde_json::json;

/// "Now" in every test: 2026-11-22T01:00:00Z.
const NOW: i64 = 1_795_309_200;

fn info(group: &str, kind: &str) -> &'static ResourceInfo {
    registry::all()
        .iter()
        .find(|r| r.group == group && r.kind == kind)
        .unwrap_or_else(|| panic!("{group}/{kind} is registered"))
}

/// The cells of `obj` by column name (upper-cased, as kubectl shows them).
fn cells(group: &str, kind: &str, obj: Value) -> Vec<(String, Value)> {
    let info = info(group, kind);
    let cols = columns(info);
    let row = row(info, &obj, NOW);
    assert_eq!(cols.len(), row.len(), "{kind}: one cell per column");
    cols.iter()
        .map(|c| c.name.to_uppercase())
        .zip(row)
        .collect()
}

/// The cell of one column.
fn cell(cells: &[(String, Value)], column: &str) -> Value {
    cells
        .iter()
        .find(|(name, _)| name == column)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no column {column} in {cells:?}"))
}

/// `n` seconds before [`NOW`] in RFC 3339.
fn ago(seconds: i64) -> String {
    time::Timestamp::from_unix(NOW - seconds).to_rfc3339()
}

fn pod(spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(300)},
        "spec": spec,
        "status": status,
    })
}

fn running(name: &str, ready: bool, restarts: i64) -> Value {
    json!({
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "state": {"running": {"startedAt": ago(200)}},
    })
}

#[test]
fn human_duration_matches_upstream_boundaries() {
    let cases: &[(i64, &str)] = &[
        (-5, "<invalid>"),
        (-2, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (59, "59s"),
        (60, "60s"),
        (119, "119s"),
        (120, "2m"),
        (121, "2m1s"),
        (185, "3m5s"),
        (599, "9m59s"),
        (600, "10m"),
        (659, "10m"),
        (10_799, "179m"),
        (10_800, "3h"),
        (10_860, "3h1m"),
        (28_799, "7h59m"),
        (28_800, "8h"),
        (172_799, "47h"),
        (172_800, "2d"),
        (176_400, "2d1h"),
        (691_199, "7d23h"),
        (691_200, "8d"),
        (730 * 86_400 - 1, "729d"),
        (730 * 86_400, "2y"),
        (731 * 86_400, "2y1d"),
        (8 * 365 * 86_400 - 86_400, "7y364d"),
        (8 * 365 * 86_400, "8y"),
        (20 * 365 * 86_400, "20y"),
    ];
    for &(seconds, want) in cases {
        assert_eq!(human_duration(seconds), want, "{seconds}s");
    }
    assert_eq!(
        human_duration(i64::MAX),
        format!("{}y", i64::MAX / 86_400 / 365)
    );
}

#[test]
fn pod_with_one_of_two_containers_ready_is_running() {
    let obj = pod(
        json!({"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"}),
        json!({
            "phase": "Running",
            "podIP": "10.0.0.5",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [running("a", true, 0), running("b", false, 0)],
        }),
    );
    let c = cells("", "Pod", obj);
    assert_eq!(cell(&c, "NAME"), "web");
    assert_eq!(cell(&c, "READY"), "1/2");
    assert_eq!(cell(&c, "STATUS"), "Running");
    assert_eq!(cell(&c, "RESTARTS"), "0");
    assert_eq!(cell(&c, "AGE"), "5m");
    assert_eq!(cell(&c, "IP"), "10.0.0.5");
    assert_eq!(cell(&c, "NODE"), "n1");
    assert_eq!(cell(&c, "NOMINATED NODE"), "<none>");
    assert_eq!(cell(&c, "READINESS GATES"), "<none>");
}

#[test]
fn crash_looping_pod_shows_waiting_reason_and_last_restart() {
    let obj = pod(
        json!({"containers": [{"name": "app"}]}),
        json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "app",
                "ready": false,
                "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                             "finishedAt": ago(185)}},
            }],
        }),
    );
    let c = cells("", "Pod", obj);
    assert_eq!(cell(&c, "READY"), "0/1");
    assert_eq!(cell(&c, "STATUS"), "CrashLoopBackOff");
    assert_eq!(cell(&c, "RESTARTS"), "5 (3m5s ago)");
}

#[test]
fn waiting_and_terminated_containers_name_the_status() {
    let status_of = |state: Value| {
        let obj = pod(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Pending", "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0, "state": state}
            ]}),
        );
        cell(&cells("", "Pod", obj), "STATUS")
    };
    assert_eq!(
        status_of(json!({"waiting": {"reason": "ContainerCreating"}})),
        "ContainerCreating"
    );
    assert_eq!(
        status_of(json!({"waiting": {"reason": "ErrImagePull"}})),
        "ErrImagePull"
    );
    assert_eq!(
        status_of(json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
        "Completed"
    );
    assert_eq!(
        status_of(json!({"terminated": {"exitCode": 2, "reason": "Error"}})),
        "Error"
    );
    assert_eq!(
        status_of(json!({"terminated": {"exitCode": 3}})),
        "ExitCode:3"
    );
    assert_eq!(
        status_of(json!({"terminated": {"exitCode": 137, "signal": 9}})),
        "Signal:9"
    );
    // A waiting container without a reason leaves the phase.
    assert_eq!(status_of(json!({"waiting": {}})), "Pending");
}

#[test]
fn terminating_pod() {
    let mut obj = pod(
        json!({"containers": [{"name": "app"}]}),
        json!({"phase": "Running", "containerStatuses": [running("app", true, 0)]}),
    );
    obj["metadata"]["deletionTimestamp"] = json!(ago(10));
    let c = cells("", "Pod", obj.clone());
    assert_eq!(cell(&c, "STATUS"), "Terminating");
    assert_eq!(cell(&c, "READY"), "1/1");

    // Pods of an unreachable node show Unknown instead.
    obj["status"]["reason"] = json!("NodeLost");
    assert_eq!(cell(&cells("", "Pod", obj.clone()), "STATUS"), "Unknown");

    // A finished pod being deleted keeps its final status.
    obj["status"] = json!({"phase": "Succeeded"});
    assert_eq!(cell(&cells("", "Pod", obj), "STATUS"), "Succeeded");
}

#[test]
fn init_containers_show_progress_and_failures() {
    let spec = json!({
        "initContainers": [{"name": "setup"}, {"name": "migrate"}],
        "containers": [{"name": "app"}],
    });
    let with_init = |statuses: Value| {
        let obj = pod(
            spec.clone(),
            json!({
                "phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "False"}],
                "initContainerStatuses": statuses,
                "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}}],
            }),
        );
        let c = cells("", "Pod", obj);
        (cell(&c, "STATUS"), cell(&c, "RESTARTS"), cell(&c, "READY"))
    };
    let done = json!({"name": "setup", "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});

    let (status, restarts, ready) = with_init(json!([
        {"name": "setup", "restartCount": 0, "state": {"running": {}}},
        {"name": "migrate", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
    ]));
    assert_eq!(
        (status, restarts, ready),
        (json!("Init:0/2"), json!("0"), json!("0/1"))
    );

    let (status, _, _) = with_init(json!([
        done,
        {"name": "migrate", "restartCount": 0, "state": {"running": {}}},
    ]));
    assert_eq!(status, "Init:1/2");

    let (status, restarts, _) = with_init(json!([
        done,
        {"name": "migrate", "restartCount": 3,
         "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}},
    ]));
    assert_eq!(status, "Init:CrashLoopBackOff");
    assert_eq!(restarts, "3 (30s ago)");

    let (status, _, _) = with_init(json!([
        {"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}},
    ]));
    assert_eq!(status, "Init:Error");

    let (status, _, _) = with_init(json!([
        {"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 7}}},
    ]));
    assert_eq!(status, "Init:ExitCode:7");
}

#[test]
fn sidecars_count_as_containers() {
    let obj = pod(
        json!({
            "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}],
        }),
        json!({
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"},
                           {"type": "Ready", "status": "True"}],
            "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true,
                "restartCount": 2, "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(7200)}}}],
            "containerStatuses": [running("app", true, 1)],
        }),
    );
    let c = cells("", "Pod", obj);
    assert_eq!(cell(&c, "READY"), "2/2");
    assert_eq!(cell(&c, "STATUS"), "Running");
    assert_eq!(cell(&c, "RESTARTS"), "3 (120m ago)");
}

#[test]
fn completed_container_beside_a_running_one() {
    let status = |ready_condition: &str| {
        let obj = pod(
            json!({"containers": [{"name": "job"}, {"name": "server"}]}),
            json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready_condition}],
                "containerStatuses": [
                    {"name": "job", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    running("server", true, 0),
                ],
            }),
        );
        cell(&cells("", "Pod", obj), "STATUS")
    };
    assert_eq!(status("True"), "Running");
    assert_eq!(status("False"), "NotReady");
}

#[test]
fn scheduling_gated_and_pending_pods() {
    let obj = pod(
        json!({"containers": [{"name": "app"}], "schedulingGates": [{"name": "wait"}],
               "readinessGates": [{"conditionType": "example.com/ready"}]}),
        json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
    );
    let c = cells("", "Pod", obj);
    assert_eq!(cell(&c, "STATUS"), "SchedulingGated");
    assert_eq!(cell(&c, "READY"), "0/1");
    assert_eq!(cell(&c, "IP"), "<none>");
    assert_eq!(cell(&c, "NODE"), "<none>");
    assert_eq!(cell(&c, "READINESS GATES"), "0/1");
}

#[test]
fn deployment_row() {
    let obj = json!({
        "metadata": {"name": "web", "creationTimestamp": ago(3 * 86_400 + 3600)},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"},
                         "matchExpressions": [{"key": "tier", "operator": "In",
                                               "values": ["front", "back"]}]},
            "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.27"},
                {"name": "sidecar", "image": "busybox"},
            ]}},
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    });
    let info = info("apps", "Deployment");
    let names: Vec<&str> = columns(info).iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(
        row(info, &obj, NOW),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("3d1h"),
            json!("nginx,sidecar"),
            json!("nginx:1.27,busybox"),
            json!("app=web,tier in (back,front)"),
        ]
    );
    // Missing replicas default to 1; a deployment without selector prints "".
    let bare = json!({"metadata": {"name": "x"}});
    let cells = row(info, &bare, NOW);
    assert_eq!(cells[1], "0/1");
    assert_eq!(cells[4], "<unknown>");
    assert_eq!(cells[7], "");
}

#[test]
fn replica_set_stateful_set_daemon_set_rows() {
    let template = json!({"spec": {"containers": [{"name": "c", "image": "i"}],
                                   "nodeSelector": {"disk": "ssd", "arch": "arm64"}}});
    let rs = cells(
        "apps",
        "ReplicaSet",
        json!({"metadata": {"name": "rs"}, "spec": {"replicas": 2, "template": template,
               "selector": {}}, "status": {"replicas": 2, "readyReplicas": 1}}),
    );
    assert_eq!(cell(&rs, "DESIRED"), 2);
    assert_eq!(cell(&rs, "CURRENT"), 2);
    assert_eq!(cell(&rs, "READY"), 1);
    assert_eq!(cell(&rs, "SELECTOR"), "<none>");

    let sts = cells(
        "apps",
        "StatefulSet",
        json!({"metadata": {"name": "db"}, "spec": {"replicas": 3, "template": template},
               "status": {"readyReplicas": 3}}),
    );
    assert_eq!(cell(&sts, "READY"), "3/3");
    assert_eq!(cell(&sts, "IMAGES"), "i");

    let ds = cells(
        "apps",
        "DaemonSet",
        json!({"metadata": {"name": "agent"}, "spec": {"template": template,
               "selector": {"matchLabels": {"app": "agent"}}},
               "status": {"desiredNumberScheduled": 4, "currentNumberScheduled": 4,
                          "numberReady": 3, "updatedNumberScheduled": 4, "numberAvailable": 3}}),
    );
    assert_eq!(cell(&ds, "DESIRED"), 4);
    assert_eq!(cell(&ds, "READY"), 3);
    assert_eq!(cell(&ds, "UP-TO-DATE"), 4);
    assert_eq!(cell(&ds, "AVAILABLE"), 3);
    assert_eq!(cell(&ds, "NODE SELECTOR"), "arch=arm64,disk=ssd");
    assert_eq!(cell(&ds, "SELECTOR"), "app=agent");
}

#[test]
fn service_ports_and_external_ips() {
    let svc = |spec: Value, status: Value| {
        cells(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": spec, "status": status}),
        )
    };
    let c = svc(
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                         {"port": 53, "protocol": "UDP"}],
               "selector": {"app": "web"}}),
        json!({}),
    );
    assert_eq!(cell(&c, "TYPE"), "NodePort");
    assert_eq!(cell(&c, "CLUSTER-IP"), "10.96.0.10");
    assert_eq!(cell(&c, "EXTERNAL-IP"), "<none>");
    assert_eq!(cell(&c, "PORT(S)"), "80:30080/TCP,53/UDP");
    assert_eq!(cell(&c, "SELECTOR"), "app=web");

    let c = svc(
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.11",
               "ports": [{"port": 443, "nodePort": 31443}], "externalIPs": ["192.0.2.9"]}),
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"},
                                            {"hostname": "lb.example.com"}]}}),
    );
    assert_eq!(
        cell(&c, "EXTERNAL-IP"),
        "203.0.113.7,lb.example.com,192.0.2.9"
    );
    assert_eq!(cell(&c, "PORT(S)"), "443:31443/TCP");
    assert_eq!(cell(&c, "SELECTOR"), "<none>");

    let c = svc(
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.12"}),
        json!({}),
    );
    assert_eq!(cell(&c, "EXTERNAL-IP"), "<pending>");
    assert_eq!(cell(&c, "PORT(S)"), "<none>");

    let c = svc(
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
        json!({}),
    );
    assert_eq!(cell(&c, "CLUSTER-IP"), "<none>");
    assert_eq!(cell(&c, "EXTERNAL-IP"), "db.example.com");

    let c = svc(
        json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
        json!({}),
    );
    assert_eq!(cell(&c, "TYPE"), "ClusterIP");
    assert_eq!(cell(&c, "CLUSTER-IP"), "None");
    assert_eq!(cell(&c, "PORT(S)"), "5432/TCP");
}

#[test]
fn node_status_and_roles() {
    let node = json!({
        "metadata": {"name": "n1", "creationTimestamp": ago(40 * 86_400), "labels": {
            "node-role.kubernetes.io/control-plane": "",
            "node-role.kubernetes.io/etcd": "true",
            "node-role.kubernetes.io/": "ignored",
            "kubernetes.io/role": "master",
            "kubernetes.io/hostname": "n1",
        }},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"},
                           {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "n1"},
                          {"type": "InternalIP", "address": "192.168.1.10"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12",
                         "kernelVersion": "6.1.0", "containerRuntimeVersion": ""},
        },
    });
    let c = cells("", "Node", node.clone());
    assert_eq!(cell(&c, "STATUS"), "Ready,SchedulingDisabled");
    assert_eq!(cell(&c, "ROLES"), "control-plane,etcd,master");
    assert_eq!(cell(&c, "AGE"), "40d");
    assert_eq!(cell(&c, "VERSION"), "v1.32.0");
    assert_eq!(cell(&c, "INTERNAL-IP"), "192.168.1.10");
    assert_eq!(cell(&c, "EXTERNAL-IP"), "<none>");
    assert_eq!(cell(&c, "OS-IMAGE"), "Debian GNU/Linux 12");
    assert_eq!(cell(&c, "CONTAINER-RUNTIME"), "<unknown>");

    let c = cells(
        "",
        "Node",
        json!({"metadata": {"name": "n2"},
               "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
    );
    assert_eq!(cell(&c, "STATUS"), "NotReady");
    assert_eq!(cell(&c, "ROLES"), "<none>");
    let c = cells("", "Node", json!({"metadata": {"name": "n3"}}));
    assert_eq!(cell(&c, "STATUS"), "Unknown");
}

#[test]
fn endpoints_list_three_then_count_the_rest() {
    let ep = |subsets: Value| {
        cell(
            &cells(
                "",
                "Endpoints",
                json!({"metadata": {"name": "e"}, "subsets": subsets}),
            ),
            "ENDPOINTS",
        )
    };
    assert_eq!(ep(json!(null)), "<none>");
    assert_eq!(
        ep(
            json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                   "ports": [{"port": 8080}]}])
        ),
        "10.0.0.1:8080,[fd00::1]:8080"
    );
    assert_eq!(
        ep(
            json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}],
                   "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}])
        ),
        "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 3 more..."
    );
    assert_eq!(ep(json!([{"addresses": [{"ip": "10.0.0.9"}]}])), "10.0.0.9");
    assert_eq!(ep(json!([{"notReadyAddresses": [{"ip": "10.0.0.9"}]}])), "");
}

#[test]
fn endpoint_slice_row() {
    let c = cells(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
               "ports": [{"name": "http", "port": 80}, {"name": "metrics"}, {}],
               "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]},
                             {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]}),
    );
    assert_eq!(cell(&c, "ADDRESSTYPE"), "IPv4");
    assert_eq!(cell(&c, "PORTS"), "80,metrics,*");
    assert_eq!(
        cell(&c, "ENDPOINTS"),
        "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."
    );
    let c = cells(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": {"name": "empty"}, "addressType": "IPv6"}),
    );
    assert_eq!(cell(&c, "PORTS"), "<unset>");
    assert_eq!(cell(&c, "ENDPOINTS"), "<unset>");
}

#[test]
fn core_events() {
    let ev = json!({
        "metadata": {"name": "web.17a", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container\n",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": ago(600),
        "lastTimestamp": ago(30),
        "count": 7,
        "type": "Warning",
    });
    let c = cells("", "Event", ev);
    let names: Vec<&str> = c.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT",
            "SOURCE",
            "MESSAGE",
            "FIRST SEEN",
            "COUNT",
            "NAME"
        ]
    );
    assert_eq!(cell(&c, "LAST SEEN"), "30s");
    assert_eq!(cell(&c, "TYPE"), "Warning");
    assert_eq!(cell(&c, "OBJECT"), "pod/web");
    assert_eq!(cell(&c, "SUBOBJECT"), "spec.containers{app}");
    assert_eq!(cell(&c, "SOURCE"), "kubelet, n1");
    assert_eq!(cell(&c, "MESSAGE"), "Back-off restarting failed container");
    assert_eq!(cell(&c, "FIRST SEEN"), "10m");
    assert_eq!(cell(&c, "COUNT"), 7);
    assert_eq!(cell(&c, "NAME"), "web.17a");

    // New-style events: eventTime, a series, and the reporting controller.
    let c = cells(
        "",
        "Event",
        json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Node"},
               "eventTime": "2026-11-22T00:50:00.000000Z", "reportingComponent": "scheduler",
               "series": {"count": 4, "lastObservedTime": ago(90)}}),
    );
    assert_eq!(cell(&c, "FIRST SEEN"), "10m");
    assert_eq!(cell(&c, "LAST SEEN"), "90s");
    assert_eq!(cell(&c, "COUNT"), 4);
    assert_eq!(cell(&c, "OBJECT"), "node");
    assert_eq!(cell(&c, "SOURCE"), "scheduler");
}

#[test]
fn events_k8s_io_events_print_like_core_events() {
    let c = cells(
        "events.k8s.io",
        "Event",
        json!({"metadata": {"name": "e3"},
               "regarding": {"kind": "Deployment", "name": "web"},
               "note": "Scaled up", "reason": "ScalingReplicaSet", "type": "Normal",
               "eventTime": ago(45), "reportingController": "deployment-controller",
               "reportingInstance": "cm-1"}),
    );
    assert_eq!(cell(&c, "LAST SEEN"), "45s");
    assert_eq!(cell(&c, "OBJECT"), "deployment/web");
    assert_eq!(cell(&c, "MESSAGE"), "Scaled up");
    assert_eq!(cell(&c, "SOURCE"), "deployment-controller, cm-1");
    assert_eq!(cell(&c, "COUNT"), 1);
}

#[test]
fn job_status_completions_and_duration() {
    let job = |spec: Value, status: Value| {
        cells(
            "batch",
            "Job",
            json!({"metadata": {"name": "j", "creationTimestamp": ago(3600)},
                   "spec": spec, "status": status}),
        )
    };
    let c = job(
        json!({"completions": 1, "parallelism": 1}),
        json!({"succeeded": 1, "startTime": ago(3600), "completionTime": ago(3540),
               "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                              {"type": "Complete", "status": "True"}]}),
    );
    assert_eq!(cell(&c, "STATUS"), "Complete");
    assert_eq!(cell(&c, "COMPLETIONS"), "1/1");
    assert_eq!(cell(&c, "DURATION"), "60s");

    let c = job(json!({"parallelism": 3}), json!({"startTime": ago(200)}));
    assert_eq!(cell(&c, "STATUS"), "Running");
    assert_eq!(cell(&c, "COMPLETIONS"), "0/1 of 3");
    assert_eq!(cell(&c, "DURATION"), "3m20s");

    let c = job(
        json!({"suspend": true}),
        json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
    );
    assert_eq!(cell(&c, "STATUS"), "Suspended");
    assert_eq!(cell(&c, "COMPLETIONS"), "0/1");
    assert_eq!(cell(&c, "DURATION"), "");

    let c = job(
        json!({}),
        json!({"conditions": [{"type": "FailureTarget", "status": "True"},
                              {"type": "Failed", "status": "True"}]}),
    );
    assert_eq!(cell(&c, "STATUS"), "Failed");
    let c = job(
        json!({}),
        json!({"conditions": [{"type": "Complete", "status": "False"}]}),
    );
    assert_eq!(cell(&c, "STATUS"), "Running");
}

#[test]
fn cron_job_row() {
    let c = cells(
        "batch",
        "CronJob",
        json!({"metadata": {"name": "nightly"},
               "spec": {"schedule": "0 3 * * *", "timeZone": "Etc/UTC",
                        "jobTemplate": {"spec": {"template": {"spec": {"containers": [
                            {"name": "backup", "image": "backup:1"}]}}}}},
               "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(7200)}}),
    );
    assert_eq!(cell(&c, "SCHEDULE"), "0 3 * * *");
    assert_eq!(cell(&c, "TIMEZONE"), "Etc/UTC");
    assert_eq!(cell(&c, "SUSPEND"), "False");
    assert_eq!(cell(&c, "ACTIVE"), 1);
    assert_eq!(cell(&c, "LAST SCHEDULE"), "120m");
    assert_eq!(cell(&c, "CONTAINERS"), "backup");
    assert_eq!(cell(&c, "SELECTOR"), "<none>");
    let c = cells(
        "batch",
        "CronJob",
        json!({"metadata": {"name": "n"}, "spec": {"suspend": true}}),
    );
    assert_eq!(cell(&c, "TIMEZONE"), "<none>");
    assert_eq!(cell(&c, "SUSPEND"), "True");
    assert_eq!(cell(&c, "LAST SCHEDULE"), "<none>");
}

#[test]
fn config_and_cluster_kinds() {
    let c = cells(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
    );
    assert_eq!(cell(&c, "DATA"), 3);
    let c = cells(
        "",
        "Secret",
        json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls",
               "data": {"tls.crt": "", "tls.key": ""}}),
    );
    assert_eq!(cell(&c, "TYPE"), "kubernetes.io/tls");
    assert_eq!(cell(&c, "DATA"), 2);
    let c = cells("", "Secret", json!({"metadata": {"name": "s"}}));
    assert_eq!(cell(&c, "TYPE"), "Opaque");
    let c = cells(
        "",
        "ServiceAccount",
        json!({"metadata": {"name": "default"}, "secrets": [{"name": "t"}]}),
    );
    assert_eq!(cell(&c, "SECRETS"), 1);
    let c = cells(
        "",
        "Namespace",
        json!({"metadata": {"name": "ns", "deletionTimestamp": ago(1)},
               "status": {"phase": "Terminating"}}),
    );
    assert_eq!(cell(&c, "STATUS"), "Terminating");
    let c = cells(
        "coordination.k8s.io",
        "Lease",
        json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "cp-1_abc"}}),
    );
    assert_eq!(cell(&c, "HOLDER"), "cp-1_abc");
    let c = cells(
        "scheduling.k8s.io",
        "PriorityClass",
        json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000,
               "globalDefault": false}),
    );
    assert_eq!(cell(&c, "VALUE"), 2_000_001_000i64);
    assert_eq!(cell(&c, "GLOBAL-DEFAULT"), false);
    assert_eq!(cell(&c, "PREEMPTIONPOLICY"), "PreemptLowerPriority");
}

#[test]
fn rbac_bindings_and_default_tables() {
    let c = cells(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        json!({"metadata": {"name": "admins"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "cluster-admin"},
               "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                            {"kind": "Group", "name": "system:masters"},
                            {"kind": "ServiceAccount", "namespace": "kube-system", "name": "ci"}]}),
    );
    assert_eq!(cell(&c, "ROLE"), "ClusterRole/cluster-admin");
    assert_eq!(cell(&c, "USERS"), "alice, bob");
    assert_eq!(cell(&c, "GROUPS"), "system:masters");
    assert_eq!(cell(&c, "SERVICEACCOUNTS"), "kube-system/ci");

    for (group, kind) in [
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("", "LimitRange"),
    ] {
        let c = cells(
            group,
            kind,
            json!({"metadata": {"name": "r", "creationTimestamp": "2026-11-21T10:30:00+01:00"}}),
        );
        assert_eq!(cell(&c, "CREATED AT"), "2026-11-21T09:30:00Z", "{kind}");
        let c = cells(group, kind, json!({"metadata": {"name": "r"}}));
        assert_eq!(cell(&c, "CREATED AT"), "0001-01-01T00:00:00Z", "{kind}");
        assert_eq!(columns(info(group, kind))[1].type_, "date");
    }
}

#[test]
fn storage_kinds() {
    let c = cells(
        "",
        "PersistentVolume",
        json!({"metadata": {"name": "pv1", "annotations": {
                   "volume.beta.kubernetes.io/storage-class": "old"}},
               "spec": {"capacity": {"storage": "1024Mi"},
                        "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                        "claimRef": {"namespace": "default", "name": "data"},
                        "storageClassName": "fast"},
               "status": {"phase": "Bound"}}),
    );
    assert_eq!(cell(&c, "CAPACITY"), "1Gi");
    assert_eq!(cell(&c, "ACCESS MODES"), "RWO,RWX");
    assert_eq!(cell(&c, "RECLAIM POLICY"), "Retain");
    assert_eq!(cell(&c, "STATUS"), "Bound");
    assert_eq!(cell(&c, "CLAIM"), "default/data");
    assert_eq!(cell(&c, "STORAGECLASS"), "old");
    assert_eq!(cell(&c, "VOLUMEATTRIBUTESCLASS"), "<unset>");
    assert_eq!(cell(&c, "VOLUMEMODE"), "Filesystem");

    let c = cells(
        "",
        "PersistentVolumeClaim",
        json!({"metadata": {"name": "data"},
               "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "5Gi"}}},
               "status": {"phase": "Pending"}}),
    );
    assert_eq!(cell(&c, "STATUS"), "Pending");
    assert_eq!(cell(&c, "VOLUME"), "");
    assert_eq!(cell(&c, "CAPACITY"), "");
    assert_eq!(cell(&c, "STORAGECLASS"), "fast");
    let c = cells(
        "",
        "PersistentVolumeClaim",
        json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv1"},
               "status": {"phase": "Bound", "capacity": {"storage": "5Gi"},
                          "accessModes": ["ReadWriteOncePod"]}}),
    );
    assert_eq!(cell(&c, "CAPACITY"), "5Gi");
    assert_eq!(cell(&c, "ACCESS MODES"), "RWOP");

    let c = cells(
        "storage.k8s.io",
        "StorageClass",
        json!({"metadata": {"name": "standard", "annotations": {
                   "storageclass.kubernetes.io/is-default-class": "true"}},
               "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}),
    );
    assert_eq!(cell(&c, "NAME"), "standard (default)");
    assert_eq!(cell(&c, "RECLAIMPOLICY"), "Delete");
    assert_eq!(cell(&c, "VOLUMEBINDINGMODE"), "WaitForFirstConsumer");
    assert_eq!(cell(&c, "ALLOWVOLUMEEXPANSION"), false);
}

#[test]
fn policy_kinds() {
    let c = cells(
        "policy",
        "PodDisruptionBudget",
        json!({"metadata": {"name": "pdb"}, "spec": {"minAvailable": "50%"},
               "status": {"disruptionsAllowed": 1}}),
    );
    assert_eq!(cell(&c, "MIN AVAILABLE"), "50%");
    assert_eq!(cell(&c, "MAX UNAVAILABLE"), "N/A");
    assert_eq!(cell(&c, "ALLOWED DISRUPTIONS"), 1);

    let c = cells(
        "autoscaling",
        "HorizontalPodAutoscaler",
        json!({"metadata": {"name": "web"},
               "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                        "maxReplicas": 10,
                        "metrics": [
                            {"type": "Resource", "resource": {"name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": 80}}},
                            {"type": "Pods", "pods": {"metric": {"name": "qps"},
                                "target": {"type": "AverageValue", "averageValue": "1000m"}}},
                            {"type": "External", "external": {"metric": {"name": "queue"},
                                "target": {"type": "Value", "value": "30"}}}]},
               "status": {"currentReplicas": 3, "currentMetrics": [
                   {"type": "Resource", "resource": {"name": "cpu",
                       "current": {"averageUtilization": 41, "averageValue": "205m"}}}]}}),
    );
    assert_eq!(cell(&c, "REFERENCE"), "Deployment/web");
    assert_eq!(cell(&c, "TARGETS"), "cpu: 41%/80%, <unknown>/1 + 1 more...");
    assert_eq!(cell(&c, "MINPODS"), "1");
    assert_eq!(cell(&c, "MAXPODS"), 10);
    assert_eq!(cell(&c, "REPLICAS"), 3);
    let c = cells(
        "autoscaling",
        "HorizontalPodAutoscaler",
        json!({"metadata": {"name": "idle"}, "spec": {"minReplicas": 2}}),
    );
    assert_eq!(cell(&c, "TARGETS"), "<none>");
    assert_eq!(cell(&c, "MINPODS"), "2");

    let c = cells(
        "",
        "ResourceQuota",
        json!({"metadata": {"name": "q"},
               "status": {"hard": {"requests.cpu": "2", "pods": "10", "limits.memory": "2Gi",
                                   "limits.cpu": "4000m"},
                          "used": {"requests.cpu": "500m", "pods": "3", "limits.cpu": "1"}}}),
    );
    assert_eq!(cell(&c, "REQUEST"), "pods: 3/10, requests.cpu: 500m/2");
    assert_eq!(cell(&c, "LIMIT"), "limits.cpu: 1/4, limits.memory: 0/2Gi");
}

#[test]
fn network_kinds() {
    let c = cells(
        "networking.k8s.io",
        "Ingress",
        json!({"metadata": {"name": "ing"},
               "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                        "rules": [{"host": "a.example.com"}, {}, {"host": "b.example.com"},
                                  {"host": "c.example.com"}, {"host": "d.example.com"}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.4"}]}}}),
    );
    assert_eq!(cell(&c, "CLASS"), "nginx");
    assert_eq!(
        cell(&c, "HOSTS"),
        "a.example.com,b.example.com,c.example.com + 2 more..."
    );
    assert_eq!(cell(&c, "ADDRESS"), "198.51.100.4");
    assert_eq!(cell(&c, "PORTS"), "80, 443");
    let c = cells(
        "networking.k8s.io",
        "Ingress",
        json!({"metadata": {"name": "ing"}, "spec": {"defaultBackend": {}}}),
    );
    assert_eq!(cell(&c, "CLASS"), "<none>");
    assert_eq!(cell(&c, "HOSTS"), "*");
    assert_eq!(cell(&c, "PORTS"), "80");

    let c = cells(
        "networking.k8s.io",
        "IngressClass",
        json!({"metadata": {"name": "nginx"},
               "spec": {"controller": "k8s.io/ingress-nginx",
                        "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters",
                                       "name": "external-lb"}}}),
    );
    assert_eq!(
        cell(&c, "PARAMETERS"),
        "IngressParameters.k8s.example.com/external-lb"
    );
    let c = cells(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}),
    );
    assert_eq!(cell(&c, "POD-SELECTOR"), "<none>");
}

#[test]
fn controller_revision_names_its_controller() {
    let c = cells(
        "apps",
        "ControllerRevision",
        json!({"metadata": {"name": "web-7d9f", "ownerReferences": [
                   {"apiVersion": "v1", "kind": "Pod", "name": "other"},
                   {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                    "controller": true}]},
               "revision": 4}),
    );
    assert_eq!(cell(&c, "CONTROLLER"), "statefulset.apps/web");
    assert_eq!(cell(&c, "REVISION"), 4);
    let c = cells(
        "apps",
        "ControllerRevision",
        json!({"metadata": {"name": "orphan"}, "revision": 1}),
    );
    assert_eq!(cell(&c, "CONTROLLER"), "<none>");
}

#[test]
fn every_resource_has_one_cell_per_column_even_for_garbage() {
    let garbage = [
        json!(null),
        json!({}),
        json!([1, 2]),
        json!("pod"),
        json!({"metadata": 5, "spec": [], "status": "x"}),
        json!({"metadata": {"name": 7, "creationTimestamp": "yesterday"},
               "spec": {"replicas": "three", "containers": {"a": 1}, "ports": [null, 3]},
               "status": {"containerStatuses": [null, {"state": {"terminated": 1}}],
                          "conditions": "none"}}),
    ];
    for info in registry::all() {
        let cols = columns(info);
        assert_eq!(
            cols[0].name,
            if info.kind == "Event" {
                "Last Seen"
            } else {
                "Name"
            }
        );
        assert!(
            cols.iter().filter(|c| c.format == "name").count() == 1,
            "{}: one name column",
            info.kind
        );
        for obj in &garbage {
            assert_eq!(row(info, obj, NOW).len(), cols.len(), "{} {obj}", info.kind);
        }
    }
}

#[test]
fn unknown_kinds_get_name_and_age() {
    let widget = ResourceInfo {
        group: "example.com",
        version: "v1",
        kind: "Widget",
        plural: "widgets",
        singular: "widget",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        categories: &[],
    };
    let cols = columns(&widget);
    assert_eq!(
        cols.iter().map(|c| (c.name, c.type_)).collect::<Vec<_>>(),
        [("Name", "string"), ("Age", "date")]
    );
    let obj = json!({"metadata": {"name": "w", "creationTimestamp": ago(90)}});
    assert_eq!(row(&widget, &obj, NOW), vec![json!("w"), json!("90s")]);
    assert_eq!(
        row(&widget, &json!({"metadata": {"name": "w"}}), NOW),
        vec![json!("w"), Value::Null]
    );
}

#[test]
fn table_json_has_the_meta_v1_shape() {
    let pods = vec![
        pod(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Running", "containerStatuses": [running("app", true, 0)]}),
        ),
        pod(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        ),
    ];
    let info = info("", "Pod");
    let t = table(info, &pods, NOW, IncludeObject::Metadata, "42", "", Some(3));
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        t["metadata"],
        json!({"resourceVersion": "42", "remainingItemCount": 3})
    );
    let defs = t["columnDefinitions"].as_array().unwrap();
    assert_eq!(defs.len(), 9);
    assert_eq!(
        defs[0],
        json!({"name": "Name", "type": "string", "format": "name",
               "description": descriptions::D_NAME, "priority": 0})
    );
    assert_eq!(defs[5]["name"], "IP");
    assert_eq!(defs[5]["priority"], 1);
    assert_eq!(defs[5]["format"], "");
    for def in defs {
        let keys: Vec<&str> = def
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 5, "{def}");
        for key in ["name", "type", "format", "description", "priority"] {
            assert!(def.get(key).is_some(), "{key} in {def}");
        }
    }
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0]["cells"],
        json!([
            "web", "1/1", "Running", "0", "5m", "<none>", "<none>", "<none>", "<none>"
        ])
    );
    assert!(rows[0].get("conditions").is_none());
    assert_eq!(
        rows[0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
               "metadata": pods[0]["metadata"]})
    );
    assert_eq!(rows[1]["cells"][2], "Completed");
    assert_eq!(
        rows[1]["conditions"],
        json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                "message": "The pod has completed successfully."}])
    );

    let t = table(
        info,
        &pods[..1],
        NOW,
        IncludeObject::Object,
        "",
        "next",
        None,
    );
    assert_eq!(t["metadata"], json!({"continue": "next"}));
    assert_eq!(t["rows"][0]["object"], pods[0]);
    let bare = json!({"metadata": {"name": "x"}});
    let t = table(
        info,
        std::slice::from_ref(&bare),
        NOW,
        IncludeObject::Object,
        "",
        "",
        None,
    );
    assert_eq!(t["rows"][0]["object"]["kind"], "Pod");
    assert_eq!(t["rows"][0]["object"]["apiVersion"], "v1");

    let t = table(info, &pods[..1], NOW, IncludeObject::None, "", "", None);
    assert_eq!(t["metadata"], json!({}));
    assert_eq!(t["rows"][0]["object"], Value::Null);

    let t = table(info, &[], NOW, IncludeObject::default(), "7", "", None);
    assert_eq!(t["rows"], json!([]));
    assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(9));
}

#[test]
fn include_object_parses_the_query_parameter() {
    assert_eq!(IncludeObject::from_query(""), Some(IncludeObject::Metadata));
    assert_eq!(
        IncludeObject::from_query("Metadata"),
        Some(IncludeObject::Metadata)
    );
    assert_eq!(IncludeObject::from_query("None"), Some(IncludeObject::None));
    assert_eq!(
        IncludeObject::from_query("Object"),
        Some(IncludeObject::Object)
    );
    assert_eq!(IncludeObject::from_query("object"), None);
}
