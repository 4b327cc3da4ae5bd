//! Cell formatting shared by several printers, each a port of the Kubernetes helper it names:
//! label maps and selectors, container lists, quantities, booleans and "+ N more" lists.

use super::object::{Obj, each};
use crate::quantity::Quantity;
use crate::selector::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

/// `labels.FormatLabels`: `k1=v1,k2=v2` sorted by key, `<none>` when empty.
pub(crate) fn format_labels(o: Obj<'_>, path: &[&str]) -> String {
    let labels = o.string_map(path);
    if labels.is_empty() {
        return "<none>".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: `""` for an absent selector (which selects
/// nothing) or an empty one (which selects everything), `None` when the selector is invalid.
pub(crate) fn selector_string(sel: Option<&Value>) -> Option<String> {
    let Some(sel) = sel else {
        return Some(String::new());
    };
    let sel: metav1::LabelSelector = serde_json::from_value(sel.clone()).ok()?;
    LabelSelector::from_api(&sel).ok().map(|s| s.to_string())
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when it is empty, `<error>`
/// when it is invalid.
pub(crate) fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        None => "<error>".to_string(),
        Some(s) if s.is_empty() => "<none>".to_string(),
        Some(s) => s,
    }
}

/// `layoutContainerCells`: container names and images, each comma-joined.
pub(crate) fn layout_containers(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = each(containers).map(|c| c.str(&["name"])).collect();
    let images: Vec<&str> = each(containers).map(|c| c.str(&["image"])).collect();
    (names.join(","), images.join(","))
}

/// `Quantity.String()`: the canonical form (`1024Mi` prints as `1Gi`); `missing` when the
/// quantity is absent (`"0"` for a zero value, `"<nil>"` for a nil pointer). A value that
/// does not parse prints as written.
pub(crate) fn quantity(v: Option<&Value>, missing: &str) -> String {
    match v {
        None => missing.to_string(),
        Some(Value::String(s)) => Quantity::parse(s).map_or_else(|_| s.clone(), |q| q.to_string()),
        Some(Value::Number(n)) => {
            let s = n.to_string();
            Quantity::parse(&s).map_or(s, |q| q.to_string())
        }
        Some(other) => other.to_string(),
    }
}

/// `intstr.IntOrString.String()`.
pub(crate) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `printBool`: `True` or `False`.
pub(crate) fn print_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// `listWithMoreString`: the first `max` items comma-joined, `" + N more..."` when there are
/// more, `<unset>` when there are none.
pub(crate) fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count.saturating_sub(max));
    }
    if ret.is_empty() {
        return "<unset>".to_string();
    }
    ret
}

/// `helper.GetAccessModesAsString`: `RWO,ROX,RWX,RWOP` in that order, each at most once.
pub(crate) fn access_modes(modes: &[Value]) -> String {
    let has = |mode: &str| modes.iter().any(|m| m.as_str() == Some(mode));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The sorted, deduplicated IPs (or else hostnames) of load-balancer ingress points, comma
/// joined, as `loadBalancerStatusStringer` prints them for wide output (which the API server
/// always asks for).
pub(crate) fn load_balancer_ingress(ingress: &[Value]) -> String {
    let points: std::collections::BTreeSet<&str> = each(ingress)
        .filter_map(|i| match (i.str(&["ip"]), i.str(&["hostname"])) {
            ("", "") => None,
            ("", host) => Some(host),
            (ip, _) => Some(ip),
        })
        .collect();
    points.into_iter().collect::<Vec<_>>().join(",")
}
