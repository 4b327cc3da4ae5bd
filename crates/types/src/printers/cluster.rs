//! Printers of cluster-level kinds: nodes, namespaces, leases, priority classes and RBAC
//! bindings.

use super::descriptions::*;
use super::object::{Obj, each};
use super::{AGE, Column, NAME, Printer, age_cell, name_cell};
use serde_json::Value;
use std::collections::BTreeSet;

/// Label prefix that names a node role (`node-role.kubernetes.io/control-plane`).
const LABEL_NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
/// Older label whose value names a node role.
const NODE_LABEL_ROLE: &str = "kubernetes.io/role";

/// Nodes.
pub(super) const NODE: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Status", "string", "The status of the node"),
        Column::new("Roles", "string", "The roles of the node"),
        AGE,
        Column::new("Version", "string", D_NODE_KUBELET),
        Column::wide("Internal-IP", "string", D_NODE_ADDRESSES),
        Column::wide("External-IP", "string", D_NODE_ADDRESSES),
        Column::wide("OS-Image", "string", D_NODE_OS_IMAGE),
        Column::wide("Kernel-Version", "string", D_NODE_KERNEL),
        Column::wide("Container-Runtime", "string", D_NODE_RUNTIME),
    ],
    cells: node_cells,
};

fn node_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    // The last Ready condition wins, as upstream collects conditions into a map.
    let ready = each(o.list(&["status", "conditions"])).rfind(|c| c.str(&["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if c.str(&["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if o.bool(&["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    let roles = node_roles(o);
    let address = |type_: &str| -> Value {
        each(o.list(&["status", "addresses"]))
            .find(|a| a.str(&["type"]) == type_)
            .map_or("<none>", |a| a.str(&["address"]))
            .into()
    };
    let info = o.at(&["status", "nodeInfo"]);
    let or_unknown = |field: &str| -> Value { info.str_or(&[field], "<unknown>").into() };
    vec![
        name_cell(o),
        status.join(",").into(),
        if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles
        }
        .into(),
        age_cell(o, now),
        info.str(&["kubeletVersion"]).into(),
        address("InternalIP"),
        address("ExternalIP"),
        or_unknown("osImage"),
        or_unknown("kernelVersion"),
        or_unknown("containerRuntimeVersion"),
    ]
}

/// `findNodeRoles`: role names from `node-role.kubernetes.io/<role>` label keys and
/// `kubernetes.io/role=<role>` labels, sorted and comma-joined.
fn node_roles(o: Obj<'_>) -> String {
    let mut roles = BTreeSet::new();
    for (key, value) in o.string_map(&["metadata", "labels"]) {
        match key.strip_prefix(LABEL_NODE_ROLE_PREFIX) {
            Some(role) if !role.is_empty() => {
                roles.insert(role);
            }
            Some(_) => {}
            None if key == NODE_LABEL_ROLE && !value.is_empty() => {
                roles.insert(value);
            }
            None => {}
        }
    }
    roles.into_iter().collect::<Vec<_>>().join(",")
}

/// Namespaces.
pub(super) const NAMESPACE: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Status", "string", "The status of the namespace"),
        AGE,
    ],
    cells: namespace_cells,
};

fn namespace_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    vec![
        name_cell(o),
        o.str_or(&["status", "phase"], "Active").into(),
        age_cell(o, now),
    ]
}

/// Leases.
pub(super) const LEASE: Printer = Printer {
    columns: &[NAME, Column::new("Holder", "string", D_LEASE_HOLDER), AGE],
    cells: lease_cells,
};

fn lease_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    vec![
        name_cell(o),
        o.str(&["spec", "holderIdentity"]).into(),
        age_cell(o, now),
    ]
}

/// Priority classes.
pub(super) const PRIORITY_CLASS: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Value", "integer", D_PC_VALUE),
        Column::new("Global-Default", "boolean", D_PC_DEFAULT),
        AGE,
        Column::new("PreemptionPolicy", "string", D_PC_PREEMPTION),
    ],
    cells: priority_class_cells,
};

fn priority_class_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    vec![
        name_cell(o),
        o.int(&["value"]).into(),
        o.bool(&["globalDefault"]).into(),
        age_cell(o, now),
        o.str_or(&["preemptionPolicy"], "PreemptLowerPriority")
            .into(),
    ]
}

/// Role bindings.
pub(super) const ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Role", "string", D_RB_ROLE_REF),
        AGE,
        Column::wide("Users", "string", "Users in the roleBinding"),
        Column::wide("Groups", "string", "Groups in the roleBinding"),
        Column::wide(
            "ServiceAccounts",
            "string",
            "ServiceAccounts in the roleBinding",
        ),
    ],
    cells: binding_cells,
};

/// Cluster role bindings.
pub(super) const CLUSTER_ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Role", "string", D_CRB_ROLE_REF),
        AGE,
        Column::wide("Users", "string", "Users in the clusterRoleBinding"),
        Column::wide("Groups", "string", "Groups in the clusterRoleBinding"),
        Column::wide(
            "ServiceAccounts",
            "string",
            "ServiceAccounts in the clusterRoleBinding",
        ),
    ],
    cells: binding_cells,
};

/// Cells of role and cluster role bindings: `Kind/name` of the role, and the subjects by
/// kind (`rbac.SubjectsStrings`), service accounts as `namespace/name`.
fn binding_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for s in each(o.list(&["subjects"])) {
        match s.str(&["kind"]) {
            "ServiceAccount" => {
                service_accounts.push(format!("{}/{}", s.str(&["namespace"]), s.str(&["name"])))
            }
            "User" => users.push(s.str(&["name"]).to_string()),
            "Group" => groups.push(s.str(&["name"]).to_string()),
            _ => {}
        }
    }
    vec![
        name_cell(o),
        format!(
            "{}/{}",
            o.str(&["roleRef", "kind"]),
            o.str(&["roleRef", "name"])
        )
        .into(),
        age_cell(o, now),
        users.join(", ").into(),
        groups.join(", ").into(),
        service_accounts.join(", ").into(),
    ]
}
