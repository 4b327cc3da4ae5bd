//! Printers of kinds that constrain or scale workloads: pod disruption budgets, horizontal
//! pod autoscalers and resource quotas.

use super::descriptions::*;
use super::format::{int_or_string, quantity};
use super::object::{Obj, each};
use super::{AGE, Column, NAME, Printer, age_cell, name_cell};
use serde_json::Value;

/// Pod disruption budgets.
pub(super) const POD_DISRUPTION_BUDGET: Printer = Printer {
    columns: &[
        NAME,
        Column::new(
            "Min Available",
            "string",
            "The minimum number of pods that must be available.",
        ),
        Column::new(
            "Max Unavailable",
            "string",
            "The maximum number of pods that may be unavailable.",
        ),
        Column::new(
            "Allowed Disruptions",
            "integer",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        AGE,
    ],
    cells: pod_disruption_budget_cells,
};

fn pod_disruption_budget_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let int_or_na = |field: &str| -> Value {
        o.get(&["spec", field])
            .map_or_else(|| "N/A".to_string(), int_or_string)
            .into()
    };
    vec![
        name_cell(o),
        int_or_na("minAvailable"),
        int_or_na("maxUnavailable"),
        o.int(&["status", "disruptionsAllowed"]).into(),
        age_cell(o, now),
    ]
}

/// Horizontal pod autoscalers.
pub(super) const HORIZONTAL_POD_AUTOSCALER: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Reference", "string", D_HPA_REF),
        Column::new("Targets", "string", D_HPA_METRICS),
        Column::new("MinPods", "string", D_HPA_MIN),
        Column::new("MaxPods", "string", D_HPA_MAX),
        Column::new("Replicas", "string", D_HPA_CURRENT),
        AGE,
    ],
    cells: horizontal_pod_autoscaler_cells,
};

fn horizontal_pod_autoscaler_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        o.str(&["spec", "scaleTargetRef", "kind"]),
        o.str(&["spec", "scaleTargetRef", "name"])
    );
    // minReplicas defaults to 1.
    let min_pods = o.opt_int(&["spec", "minReplicas"]).unwrap_or(1).to_string();
    vec![
        name_cell(o),
        reference.into(),
        format_hpa_metrics(
            o.list(&["spec", "metrics"]),
            o.list(&["status", "currentMetrics"]),
        )
        .into(),
        min_pods.into(),
        o.int(&["spec", "maxReplicas"]).into(),
        o.int(&["status", "currentReplicas"]).into(),
        age_cell(o, now),
    ]
}

/// How many metrics the Targets cell lists before `+ N more...`.
const MAX_METRICS: usize = 2;

/// `formatHPAMetrics`: `current/target` per metric (`cpu: 40%/80%`, `1k/2k (avg)`), with
/// `<unknown>` for metrics not measured yet and `<auto>` for a resource without target.
fn format_hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in each(specs).enumerate() {
        // The status of the same metric source, if the autoscaler reported one.
        let status_of = |field: &str| -> Option<Obj<'_>> {
            statuses
                .get(i)
                .map(|s| Obj(s).at(&[field]))
                .filter(Obj::present)
        };
        let unknown = || "<unknown>".to_string();
        let item = match spec.str(&["type"]) {
            type_ @ ("External" | "Object") => {
                let field = if type_ == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = spec.at(&[field, "target"]);
                let status = status_of(field);
                if target.has(&["averageValue"]) {
                    let current = status
                        .and_then(|s| s.get(&["current", "averageValue"]))
                        .map_or_else(unknown, |q| quantity(Some(q), "<nil>"));
                    let target = quantity(target.get(&["averageValue"]), "<nil>");
                    format!("{current}/{target} (avg)")
                } else {
                    let current = status
                        .map_or_else(unknown, |s| quantity(s.get(&["current", "value"]), "<nil>"));
                    format!("{current}/{}", quantity(target.get(&["value"]), "<nil>"))
                }
            }
            "Pods" => {
                let current = status_of("pods").map_or_else(unknown, |s| {
                    quantity(s.get(&["current", "averageValue"]), "<nil>")
                });
                let target = quantity(spec.get(&["pods", "target", "averageValue"]), "<nil>");
                format!("{current}/{target}")
            }
            type_ @ ("Resource" | "ContainerResource") => {
                let field = if type_ == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let source = spec.at(&[field]);
                let name = source.str(&["name"]);
                let target = source.at(&["target"]);
                let status = status_of(field);
                if target.has(&["averageValue"]) {
                    let current = status.map_or_else(unknown, |s| {
                        quantity(s.get(&["current", "averageValue"]), "<nil>")
                    });
                    let target = quantity(target.get(&["averageValue"]), "<nil>");
                    format!("{name}: {current}/{target}")
                } else {
                    let percent = |u: i64| format!("{u}%");
                    let current = status
                        .and_then(|s| s.opt_int(&["current", "averageUtilization"]))
                        .map_or_else(unknown, percent);
                    let target = target
                        .opt_int(&["averageUtilization"])
                        .map_or_else(|| "<auto>".to_string(), percent);
                    format!("{name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(item);
    }
    let count = list.len();
    if count > MAX_METRICS {
        list.truncate(MAX_METRICS);
        return format!("{} + {} more...", list.join(", "), count - MAX_METRICS);
    }
    list.join(", ")
}

/// Resource quotas.
pub(super) const RESOURCE_QUOTA: Printer = Printer {
    columns: &[
        NAME,
        Column::new(
            "Request",
            "string",
            "Request represents a minimum amount of cpu/memory that a container may consume.",
        ),
        Column::new(
            "Limit",
            "string",
            "Limits control the maximum amount of cpu/memory that a container may use \
             independent of contention on the node.",
        ),
        AGE,
    ],
    cells: resource_quota_cells,
};

/// `name: used/hard` for every hard limit, sorted by resource name; `limits.*` resources in
/// the Limit cell, all others in the Request cell.
fn resource_quota_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let mut resources: Vec<(&str, &Value)> = o
        .get(&["status", "hard"])
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    resources.sort_by(|a, b| a.0.cmp(b.0));
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for (resource, hard) in resources {
        let used = quantity(o.get(&["status", "used", resource]), "0");
        let entry = format!("{resource}: {used}/{}", quantity(Some(hard), "0"));
        let mut pieces = resource.split('.');
        if pieces.next() == Some("limits") && pieces.next().is_some() {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        name_cell(o),
        requests.join(", ").into(),
        limits.join(", ").into(),
        age_cell(o, now),
    ]
}
