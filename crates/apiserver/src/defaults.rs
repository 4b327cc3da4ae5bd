//! Kubernetes defaulting for the kinds rkube's daemons interpret, applied at admission so
//! that stored objects look as they would in Kubernetes (`kubectl get -o yaml` shows the same
//! defaulted fields).

use serde_json::{Value, json};

/// Fills `key` with `value` when absent or null.
fn default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// Fills `key` with `value` when absent, null or the empty string (Go's zero value for an
/// enum such as a strategy type, which upstream defaults too).
fn default_str(obj: &mut Value, key: &str, value: &str) {
    if obj.get(key).is_some_and(|v| v == "") {
        obj[key] = Value::Null;
    }
    default(obj, key, json!(value));
}

/// The object at `key`, created empty when absent.
fn child<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    default(obj, key, json!({}));
    &mut obj[key]
}

/// Applies the defaults of `group`/`kind` to an updated or patched `obj`, as upstream
/// defaults every object it decodes: a field an update or patch drops comes back with its
/// default, so controllers compare like with like (a Deployment's template against its
/// ReplicaSets'). What upstream sets only when creating is left out: a namespace's
/// `kubernetes` finalizer (the finalize subresource removes it) and a Job's generated
/// selector.
pub fn apply_update(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Namespace") => {}
        ("batch", "Job") => job_spec(child(obj, "spec")),
        _ => apply(group, kind, obj),
    }
}

/// Applies the defaults of `group`/`kind` to `obj` when it is created.
pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => pod_spec(child(obj, "spec")),
        ("", "Service") => service_spec(child(obj, "spec")),
        ("", "Namespace") => {
            let spec = child(obj, "spec");
            default(spec, "finalizers", json!(["kubernetes"]));
            default(child(obj, "status"), "phase", json!("Active"));
        }
        ("", "Secret") => {
            default(obj, "type", json!("Opaque"));
            merge_string_data(obj);
        }
        ("apps", "Deployment") => {
            let spec = child(obj, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = child(spec, "strategy");
            default_str(strategy, "type", "RollingUpdate");
            if strategy["type"] == "RollingUpdate" {
                let rolling = child(strategy, "rollingUpdate");
                default(rolling, "maxUnavailable", json!("25%"));
                default(rolling, "maxSurge", json!("25%"));
            }
            template(spec);
        }
        ("apps", "ReplicaSet") => {
            let spec = child(obj, "spec");
            default(spec, "replicas", json!(1));
            template(spec);
        }
        ("apps", "StatefulSet") => {
            let spec = child(obj, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(spec, "revisionHistoryLimit", json!(10));
            // Upstream's SetDefaults_StatefulSet: a missing type becomes RollingUpdate with a
            // rollingUpdate block; a partition is defaulted only in a block that exists (the
            // controller treats an explicit RollingUpdate without a block differently).
            let strategy = child(spec, "updateStrategy");
            let typed = strategy
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty());
            if !typed {
                strategy["type"] = json!("RollingUpdate");
                default(strategy, "rollingUpdate", json!({}));
            }
            if strategy["type"] == "RollingUpdate"
                && let Some(rolling) = strategy.get_mut("rollingUpdate").filter(|r| r.is_object())
            {
                default(rolling, "partition", json!(0));
            }
            let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
            default(retention, "whenDeleted", json!("Retain"));
            default(retention, "whenScaled", json!("Retain"));
            template(spec);
        }
        ("apps", "DaemonSet") => {
            let spec = child(obj, "spec");
            default(spec, "revisionHistoryLimit", json!(10));
            let strategy = child(spec, "updateStrategy");
            default_str(strategy, "type", "RollingUpdate");
            if strategy["type"] == "RollingUpdate" {
                let rolling = child(strategy, "rollingUpdate");
                default(rolling, "maxUnavailable", json!(1));
                default(rolling, "maxSurge", json!(0));
            }
            template(spec);
        }
        ("batch", "Job") => {
            job_selector(obj);
            job_spec(child(obj, "spec"));
        }
        ("batch", "CronJob") => {
            let spec = child(obj, "spec");
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            job_spec(child(child(spec, "jobTemplate"), "spec"));
        }
        _ => {}
    }
}

/// A Secret's write-only `stringData` merged into `data` (base64), as the Kubernetes
/// apiserver does on every write: stored Secrets never carry `stringData`.
fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    let data = child(obj, "data");
    if !data.is_object() {
        *data = json!({});
    }
    for (k, v) in string_data {
        let text = v.as_str().unwrap_or_default();
        data[k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

fn template(spec: &mut Value) {
    if let Some(template) = spec.get_mut("template").filter(|t| t.is_object()) {
        pod_spec(child(template, "spec"));
    }
}

/// Upstream's `generateSelector`: unless `manualSelector`, the template gets the Job's name
/// and uid as labels and the selector picks the uid (the object's uid is set by now).
fn job_selector(obj: &mut Value) {
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spec = child(obj, "spec");
    if spec["manualSelector"] == true || uid.is_empty() {
        return;
    }
    let labels = child(child(child(spec, "template"), "metadata"), "labels");
    for (key, value) in [
        ("controller-uid", &uid),
        ("batch.kubernetes.io/controller-uid", &uid),
        ("job-name", &name),
        ("batch.kubernetes.io/job-name", &name),
    ] {
        default(labels, key, json!(value));
    }
    if spec.get("selector").is_none_or(Value::is_null) {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
}

fn job_spec(spec: &mut Value) {
    let indexed = spec["completionMode"] == "Indexed";
    // Completions default to 1 only when neither is set: a Job with parallelism alone is a
    // work queue, done when any pod succeeds.
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec["completions"] = json!(1);
    }
    default(spec, "parallelism", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(
        spec,
        "completionMode",
        json!(if indexed { "Indexed" } else { "NonIndexed" }),
    );
    default(spec, "suspend", json!(false));
    if let Some(template) = spec.get_mut("template").filter(|t| t.is_object()) {
        pod_spec(child(template, "spec"));
    }
}

fn pod_spec(spec: &mut Value) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                container(c);
            }
        }
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or_default();
    let latest = image_tag(image).is_none_or(|tag| tag == "latest");
    default(
        c,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            default(p, "protocol", json!("TCP"));
        }
    }
}

/// The tag of an image reference, if it has one (a digest counts as pinned).
fn image_tag(image: &str) -> Option<&str> {
    if image.contains('@') {
        return Some("@digest");
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, tag)| tag)
}

fn service_spec(spec: &mut Value) {
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    if spec["type"] != "ExternalName" {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            default(p, "protocol", json!("TCP"));
            let port = p["port"].clone();
            default(p, "targetPort", port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let mut s =
            json!({"data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "yy", "c": "z"}});
        apply("", "Secret", &mut s);
        assert_eq!(s["data"], json!({"a": "eA==", "b": "eXk=", "c": "eg=="}));
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }

    #[test]
    fn pod_defaults_match_kubernetes() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "busybox"},
            {"name": "b", "image": "registry.local:5000/app:1.2"}
        ]}});
        apply("", "Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["schedulerName"], "default-scheduler");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
    }

    #[test]
    fn jobs_get_a_generated_selector_and_completions_only_without_parallelism() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u1"},
            "spec": {"parallelism": 3, "template": {"spec": {}}}});
        apply("batch", "Job", &mut job);
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
        );
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u1");
        assert!(job["spec"]["completions"].is_null(), "a work-queue job");
        let mut manual = json!({"metadata": {"name": "m", "uid": "u2"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        apply("batch", "Job", &mut manual);
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"a": "b"}})
        );
        assert_eq!(manual["spec"]["completions"], 1);
    }

    #[test]
    fn defaults_never_override_given_values() {
        let mut dep =
            json!({"spec": {"replicas": 0, "template": {"spec": {"restartPolicy": "Never"}}}});
        apply("apps", "Deployment", &mut dep);
        assert_eq!(dep["spec"]["replicas"], 0);
        assert_eq!(dep["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    }

    #[test]
    fn updates_are_defaulted_but_for_create_only_fields() {
        // A merge patch that replaced the containers list drops their defaults.
        let mut dep = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "registry.local/app:v2"}]}}}});
        apply_update("apps", "Deployment", &mut dep);
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");

        let mut ns = json!({"spec": {}});
        apply_update("", "Namespace", &mut ns);
        assert_eq!(
            ns,
            json!({"spec": {}}),
            "finalizers are only defaulted on create"
        );
        let mut job = json!({"metadata": {"name": "pi", "uid": "u1"},
            "spec": {"template": {"spec": {}}}});
        apply_update("batch", "Job", &mut job);
        assert!(job["spec"]["selector"].is_null(), "no selector generated");
        assert_eq!(job["spec"]["backoffLimit"], 6);
    }

    #[test]
    fn update_strategies_of_daemon_and_stateful_sets() {
        let mut ds = json!({"spec": {}});
        apply("apps", "DaemonSet", &mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        let mut ds = json!({"spec": {"updateStrategy": {"type": "OnDelete"}}});
        apply("apps", "DaemonSet", &mut ds);
        assert_eq!(ds["spec"]["updateStrategy"], json!({"type": "OnDelete"}));

        let mut sts = json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 2}}}});
        apply("apps", "StatefulSet", &mut sts);
        assert_eq!(
            sts["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}})
        );
        let mut sts = json!({"spec": {"updateStrategy": {"type": ""}}});
        apply("apps", "StatefulSet", &mut sts);
        assert_eq!(
            sts["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        let mut sts = json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}}});
        apply("apps", "StatefulSet", &mut sts);
        assert_eq!(
            sts["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate"}),
            "an explicit type without a block stays without one"
        );
        let mut dep = json!({"spec": {"strategy": {"type": ""}}});
        apply("apps", "Deployment", &mut dep);
        assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
    }

    #[test]
    fn service_target_port_defaults_to_port() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        apply("", "Service", &mut svc);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    }
}
