//! Printers of the networking kinds: services, endpoints, endpoint slices, ingresses,
//! ingress classes and network policies.

use super::descriptions::*;
use super::format::{format_label_selector, format_labels, list_with_more, load_balancer_ingress};
use super::object::{Obj, each};
use super::{AGE, Column, NAME, Printer, age_cell, name_cell};
use serde_json::Value;

/// How many endpoints, ports or hosts a cell lists before `+ N more...`.
const MAX_LISTED: usize = 3;

/// Services.
pub(super) const SERVICE: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Type", "string", D_SVC_TYPE),
        Column::new("Cluster-IP", "string", D_SVC_CLUSTER_IP),
        Column::new("External-IP", "string", D_SVC_EXTERNAL_IPS),
        Column::new("Port(s)", "string", D_SVC_PORTS),
        AGE,
        Column::wide("Selector", "string", D_SVC_SELECTOR),
    ],
    cells: service_cells,
};

fn service_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let type_ = o.str_or(&["spec", "type"], "ClusterIP");
    // Upstream reads clusterIPs, which conversion from v1 fills from clusterIP.
    let mut cluster_ip = o.str(&["spec", "clusterIP"]);
    if cluster_ip.is_empty() {
        cluster_ip = o
            .list(&["spec", "clusterIPs"])
            .first()
            .and_then(Value::as_str)
            .unwrap_or("");
    }
    if cluster_ip.is_empty() {
        cluster_ip = "<none>";
    }
    let mut ports = service_ports(o.list(&["spec", "ports"]));
    if ports.is_empty() {
        ports = "<none>".to_string();
    }
    vec![
        name_cell(o),
        type_.into(),
        cluster_ip.into(),
        service_external_ip(o, type_).into(),
        ports.into(),
        age_cell(o, now),
        format_labels(o, &["spec", "selector"]).into(),
    ]
}

/// `getServiceExternalIP` with wide output: external IPs, load-balancer ingress points,
/// `<pending>`, the external name, or `<none>`.
fn service_external_ip(o: Obj<'_>, type_: &str) -> String {
    let external: Vec<&str> = o
        .list(&["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match type_ {
        "ClusterIP" | "NodePort" if !external.is_empty() => external.join(","),
        "ClusterIP" | "NodePort" => "<none>".to_string(),
        "LoadBalancer" => {
            let lb = load_balancer_ingress(o.list(&["status", "loadBalancer", "ingress"]));
            if !external.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(','));
                }
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => o.str(&["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `makePortString`: `80/TCP` or `80:30080/TCP` per port, comma-joined.
fn service_ports(ports: &[Value]) -> String {
    each(ports)
        .map(|p| {
            let protocol = p.str_or(&["protocol"], "TCP");
            match p.int(&["nodePort"]) {
                node_port if node_port > 0 => {
                    format!("{}:{node_port}/{protocol}", p.int(&["port"]))
                }
                _ => format!("{}/{protocol}", p.int(&["port"])),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Endpoints.
pub(super) const ENDPOINTS: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Endpoints", "string", D_ENDPOINTS_SUBSETS),
        AGE,
    ],
    cells: endpoints_cells,
};

fn endpoints_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    vec![
        name_cell(o),
        format_endpoints(o.list(&["subsets"])).into(),
        age_cell(o, now),
    ]
}

/// `net.JoinHostPort`: IPv6 addresses in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `formatEndpoints` for all ports: `ip:port` per address and port (bare IPs for subsets
/// without ports), the first three then `+ N more...`, `<none>` without subsets.
fn format_endpoints(subsets: &[Value]) -> String {
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for subset in each(subsets) {
        let addresses = subset.list(&["addresses"]);
        let ports = subset.list(&["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for address in each(addresses) {
                if list.len() == MAX_LISTED {
                    more = true;
                    break;
                }
                list.push(address.str(&["ip"]).to_string());
            }
            continue;
        }
        for port in each(ports) {
            count += addresses.len();
            for address in each(addresses) {
                if list.len() == MAX_LISTED {
                    more = true;
                    break;
                }
                list.push(join_host_port(address.str(&["ip"]), port.int(&["port"])));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - MAX_LISTED)
    } else {
        ret
    }
}

/// Endpoint slices.
pub(super) const ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        NAME,
        Column::new("AddressType", "string", D_EPS_ADDRESS_TYPE),
        Column::new("Ports", "string", D_EPS_PORTS),
        Column::new("Endpoints", "string", D_EPS_ENDPOINTS),
        AGE,
    ],
    cells: endpoint_slice_cells,
};

fn endpoint_slice_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    // formatDiscoveryPorts: the port number, else its name, else "*".
    let ports: Vec<String> = each(o.list(&["ports"]))
        .map(|p| match (p.opt_int(&["port"]), p.opt_str(&["name"])) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    // formatDiscoveryEndpoints: every address of every endpoint.
    let addresses: Vec<String> = each(o.list(&["endpoints"]))
        .flat_map(|e| e.list(&["addresses"]).iter())
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    let listed = |all: &[String]| {
        let shown = &all[..all.len().min(MAX_LISTED)];
        list_with_more(shown, all.len() > MAX_LISTED, all.len(), MAX_LISTED)
    };
    vec![
        name_cell(o),
        o.str(&["addressType"]).into(),
        listed(&ports).into(),
        listed(&addresses).into(),
        age_cell(o, now),
    ]
}

/// Ingresses.
pub(super) const INGRESS: Printer = Printer {
    columns: &[
        NAME,
        Column::new(
            "Class",
            "string",
            "The name of the IngressClass resource that should be used for additional \
             configuration",
        ),
        Column::new(
            "Hosts",
            "string",
            "Hosts that incoming requests are matched against before the ingress rule",
        ),
        Column::new(
            "Address",
            "string",
            "Address is a list containing ingress points for the load-balancer",
        ),
        Column::new("Ports", "string", "Ports of TLS configurations that open"),
        AGE,
    ],
    cells: ingress_cells,
};

fn ingress_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let class = o.opt_str(&["spec", "ingressClassName"]).unwrap_or("<none>");
    let ports = if o.list(&["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name_cell(o),
        class.into(),
        format_hosts(o.list(&["spec", "rules"])).into(),
        load_balancer_ingress(o.list(&["status", "loadBalancer", "ingress"])).into(),
        ports.into(),
        age_cell(o, now),
    ]
}

/// `formatHosts`: the hosts of the first three rules that have one, `+ N more...` counting
/// all rules beyond three, `*` when no rule names a host.
fn format_hosts(rules: &[Value]) -> String {
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in each(rules) {
        if list.len() == MAX_LISTED {
            more = true;
        }
        let host = rule.str(&["host"]);
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", rules.len() - MAX_LISTED)
    } else {
        ret
    }
}

/// Ingress classes.
pub(super) const INGRESS_CLASS: Printer = Printer {
    columns: &[
        NAME,
        Column::new(
            "Controller",
            "string",
            "Controller that is responsible for handling this class",
        ),
        Column::new(
            "Parameters",
            "string",
            "A reference to a resource with additional parameters",
        ),
        AGE,
    ],
    cells: ingress_class_cells,
};

fn ingress_class_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let params = o.at(&["spec", "parameters"]);
    let parameters = if params.present() {
        let mut p = params.str(&["kind"]).to_string();
        if let Some(group) = params.opt_str(&["apiGroup"]) {
            p = format!("{p}.{group}");
        }
        format!("{p}/{}", params.str(&["name"]))
    } else {
        "<none>".to_string()
    };
    vec![
        name_cell(o),
        o.str(&["spec", "controller"]).into(),
        parameters.into(),
        age_cell(o, now),
    ]
}

/// Network policies.
pub(super) const NETWORK_POLICY: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Pod-Selector", "string", D_NETPOL_SELECTOR),
        AGE,
    ],
    cells: network_policy_cells,
};

fn network_policy_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    // podSelector is a struct, not a pointer: absent reads as the empty selector.
    let empty = Value::Object(Default::default());
    let selector = o.get(&["spec", "podSelector"]).unwrap_or(&empty);
    vec![
        name_cell(o),
        format_label_selector(Some(selector)).into(),
        age_cell(o, now),
    ]
}
