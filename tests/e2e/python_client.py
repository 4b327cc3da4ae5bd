"""The Python `kubernetes` client (a client written by others) against rkube-apiserver.

Usage: python_client.py KUBECONFIG. Prints one line per check and a closing
"N passed, N failed" line; exits non-zero on any failure.
"""

import json
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

passed = 0
failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok - {name}")
    else:
        failed += 1
        print(f"FAIL - {name}: {detail}")


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    ns = "py"

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    names = [n.metadata.name for n in core.list_namespace().items]
    check("create and list namespaces", ns in names and "default" in names, names)

    for name, tier in [("a1", "a"), ("a2", "a"), ("b1", "b")]:
        core.create_namespaced_config_map(
            ns,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=name, labels={"tier": tier}),
                data={"k": name},
            ),
        )
    tier_a = core.list_namespaced_config_map(ns, label_selector="tier=a").items
    check("list with a label selector", sorted(c.metadata.name for c in tier_a) == ["a1", "a2"], tier_a)
    by_name = core.list_namespaced_config_map(ns, field_selector="metadata.name=b1").items
    check("list with a field selector", [c.metadata.name for c in by_name] == ["b1"], by_name)
    # Following `continue` yields every object once; a server may answer a small list whole.
    names, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(ns, limit=2, _continue=token)
        pages += 1
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
    check("list with limit and continue", sorted(names) == ["a1", "a2", "b1"] and pages <= 2, (names, pages))

    patched = core.patch_namespaced_config_map("a1", ns, {"data": {"extra": "yes"}})
    check("patch (strategic merge from a dict)", patched.data == {"k": "a1", "extra": "yes"}, patched.data)
    patched = core.patch_namespaced_config_map(
        "a1", ns, [{"op": "replace", "path": "/data/k", "value": "changed"}]
    )
    check("patch (JSON patch from a list)", patched.data["k"] == "changed", patched.data)

    # Watch: an event for an object created while the watch is open.
    seen = []
    ready = threading.Event()

    def watcher():
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            ready.set()
            if event["object"].metadata.name == "late":
                w.stop()

    thread = threading.Thread(target=watcher)
    thread.start()
    ready.wait(10)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="late")))
    thread.join(15)
    check("watch sees a create", ("ADDED", "late") in seen, seen)

    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="c", image="docker.io/library/busybox:1.36")]
                ),
            ),
        ),
    )
    apps.create_namespaced_deployment(ns, deployment)
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 4}})
    scale = apps.read_namespaced_deployment_scale("web", ns)
    check("scale subresource", scale.spec.replicas == 4, scale)

    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="p"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="docker.io/library/busybox:1.36")]),
    )
    core.create_namespaced_pod(ns, pod)
    binding = client.V1Binding(
        metadata=client.V1ObjectMeta(name="p"), target=client.V1ObjectReference(kind="Node", name="node-1")
    )
    core.create_namespaced_binding(ns, binding, _preload_content=False)
    bound = core.read_namespaced_pod("p", ns)
    check("binding sets the node", bound.spec.node_name == "node-1", bound.spec.node_name)
    try:
        core.create_namespaced_binding(ns, binding, _preload_content=False)
        check("binding twice is a conflict", False, "no error")
    except ApiException as e:
        check("binding twice is a conflict", e.status == 409, e.status)

    core.create_namespaced_pod_eviction(
        "p", ns, client.V1Eviction(metadata=client.V1ObjectMeta(name="p", namespace=ns)), _preload_content=False
    )
    evicted = core.read_namespaced_pod("p", ns)
    check("eviction deletes gracefully", evicted.metadata.deletion_timestamp is not None, evicted.metadata)

    try:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name")))
        check("invalid name is refused", False, "no error")
    except ApiException as e:
        body = json.loads(e.body)
        check(
            "invalid name is refused with a 422 Status and field causes",
            e.status == 422 and body["details"]["causes"][0]["field"] == "metadata.name",
            e.body,
        )

    core.delete_namespaced_config_map("b1", ns)
    try:
        core.read_namespaced_config_map("b1", ns)
        check("delete", False, "still there")
    except ApiException as e:
        check("delete", e.status == 404, e.status)
    core.delete_collection_namespaced_config_map(ns, label_selector="tier=a")
    left = [c.metadata.name for c in core.list_namespaced_config_map(ns).items]
    check("delete collection by label", left == ["late"], left)

    print(f"python client: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
