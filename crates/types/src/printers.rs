//! Server-side printing for `kubectl get`: the `meta.k8s.io/v1` Table the API server returns
//! for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! The columns and cells are those of Kubernetes 1.32's printers
//! (`pkg/printers/internalversion/printers.go`), so `kubectl get` output looks the same as
//! against upstream. Like the upstream API server, rows always carry the wide (`-o wide`)
//! cells; the client hides columns with priority 1 unless asked. Column names keep upstream's
//! spelling (`Name`, `Up-to-date`, `Port(s)`); kubectl upper-cases them.
//!
//! Kinds upstream serves without a printer (roles, cluster roles, limit ranges) get the
//! generic `Name` + `Created At` table; kinds this module does not know (custom resources)
//! get the custom-resource default, `Name` + `Age`.
//!
//! Cells are computed from the object's JSON with API defaults applied where Kubernetes would
//! have applied them on decode (e.g. a missing `spec.replicas` counts as 1), and a malformed
//! object prints its zero values rather than failing.

use crate::registry::ResourceInfo;
use serde_json::{Map, Value, json};

mod cluster;
mod config;
mod descriptions;
mod events;
mod format;
mod network;
mod object;
mod pod;
mod policy;
mod storage;
mod time;
mod workloads;

#[cfg(test)]
mod tests;

use descriptions::{D_CREATED, D_NAME};
use object::Obj;

/// One column of a Table (`meta.k8s.io/v1` `TableColumnDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Column {
    /// The header as Kubernetes spells it (`Name`, `Ready`, `Port(s)`); kubectl upper-cases it.
    pub name: &'static str,
    /// The cell type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: &'static str,
    /// `name` for the column holding the object name, `""` otherwise.
    pub format: &'static str,
    /// What the column shows, usually the API documentation of the field.
    pub description: &'static str,
    /// 0 for normal columns, 1 for those kubectl shows only with `-o wide`.
    pub priority: i32,
}

impl Column {
    /// A normal (priority 0) column.
    const fn new(name: &'static str, type_: &'static str, description: &'static str) -> Self {
        Column {
            name,
            type_,
            format: "",
            description,
            priority: 0,
        }
    }

    /// A column shown only with `-o wide` (priority 1).
    const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Self {
        Column {
            priority: 1,
            ..Column::new(name, type_, description)
        }
    }

    /// This column with the given `format`.
    const fn with_format(self, format: &'static str) -> Self {
        Column { format, ..self }
    }

    /// The `TableColumnDefinition` JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// The object-name column every printer starts with.
const NAME: Column = Column::new("Name", "string", D_NAME).with_format("name");
/// The creation-age column most printers have.
const AGE: Column = Column::new("Age", "string", D_CREATED);
/// Names of the containers of a pod template (wide).
const CONTAINERS: Column = Column::wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
/// Images of the containers of a pod template (wide).
const IMAGES: Column = Column::wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// What `rows[].object` of a Table holds (the `includeObject` parameter of `TableOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IncludeObject {
    /// No object (`"object": null`).
    None,
    /// The object's metadata as a `PartialObjectMetadata`; kubectl's default.
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter: `None`, `Metadata`, `Object`, or empty
    /// for the default (`Metadata`). Other values are a bad request upstream; `None` here.
    pub fn from_query(value: &str) -> Option<Self> {
        match value {
            "None" => Some(IncludeObject::None),
            "Metadata" | "" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// A resource's printer: its columns and how to compute one object's cells.
#[derive(Clone, Copy)]
struct Printer {
    /// The column definitions, in cell order.
    columns: &'static [Column],
    /// The cells of one object at a time (`now` in Unix seconds).
    cells: fn(Obj<'_>, i64) -> Vec<Value>,
}

/// The generic table of kinds Kubernetes serves without a printer
/// (`rest.NewDefaultTableConvertor`).
const DEFAULT_TABLE: Printer = Printer {
    columns: &[NAME, Column::new("Created At", "date", D_CREATED)],
    cells: default_cells,
};

/// The table of custom resources without printer columns: `Name` and an `Age` of type `date`.
const CUSTOM_RESOURCE_TABLE: Printer = Printer {
    columns: &[NAME, Column::new("Age", "date", D_CREATED)],
    cells: custom_resource_cells,
};

/// The printer of a resource, by API group and kind.
fn printer(info: &ResourceInfo) -> Printer {
    match (info.group, info.kind) {
        ("", "Pod") => pod::POD,
        ("", "PodTemplate") => workloads::POD_TEMPLATE,
        ("", "ReplicationController") => workloads::REPLICATION_CONTROLLER,
        ("apps", "ReplicaSet") => workloads::REPLICA_SET,
        ("apps", "Deployment") => workloads::DEPLOYMENT,
        ("apps", "StatefulSet") => workloads::STATEFUL_SET,
        ("apps", "DaemonSet") => workloads::DAEMON_SET,
        ("apps", "ControllerRevision") => workloads::CONTROLLER_REVISION,
        ("batch", "Job") => workloads::JOB,
        ("batch", "CronJob") => workloads::CRON_JOB,
        ("", "Service") => network::SERVICE,
        ("", "Endpoints") => network::ENDPOINTS,
        ("discovery.k8s.io", "EndpointSlice") => network::ENDPOINT_SLICE,
        ("networking.k8s.io", "Ingress") => network::INGRESS,
        ("networking.k8s.io", "IngressClass") => network::INGRESS_CLASS,
        ("networking.k8s.io", "NetworkPolicy") => network::NETWORK_POLICY,
        ("", "Node") => cluster::NODE,
        ("", "Namespace") => cluster::NAMESPACE,
        ("", "ConfigMap") => config::CONFIG_MAP,
        ("", "Secret") => config::SECRET,
        ("", "ServiceAccount") => config::SERVICE_ACCOUNT,
        ("", "ResourceQuota") => policy::RESOURCE_QUOTA,
        ("", "Event") => events::EVENT,
        ("events.k8s.io", "Event") => events::EVENTS_K8S_IO_EVENT,
        ("", "PersistentVolume") => storage::PERSISTENT_VOLUME,
        ("", "PersistentVolumeClaim") => storage::PERSISTENT_VOLUME_CLAIM,
        ("storage.k8s.io", "StorageClass") => storage::STORAGE_CLASS,
        ("coordination.k8s.io", "Lease") => cluster::LEASE,
        ("scheduling.k8s.io", "PriorityClass") => cluster::PRIORITY_CLASS,
        ("policy", "PodDisruptionBudget") => policy::POD_DISRUPTION_BUDGET,
        ("rbac.authorization.k8s.io", "RoleBinding") => cluster::ROLE_BINDING,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => cluster::CLUSTER_ROLE_BINDING,
        ("autoscaling", "HorizontalPodAutoscaler") => policy::HORIZONTAL_POD_AUTOSCALER,
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") | ("", "LimitRange") => DEFAULT_TABLE,
        _ => CUSTOM_RESOURCE_TABLE,
    }
}

/// The columns of a resource's Table, in cell order, wide (priority 1) ones included.
pub fn columns(info: &ResourceInfo) -> Vec<Column> {
    printer(info).columns.to_vec()
}

/// The cells of one object's row, in [`columns`] order (JSON strings, integers and booleans),
/// computed from its Kubernetes JSON. `now` is the current time in Unix seconds.
pub fn row(info: &ResourceInfo, obj: &Value, now: i64) -> Vec<Value> {
    (printer(info).cells)(Obj(obj), now)
}

/// Kubernetes' `duration.HumanDuration`, as AGE columns show it: seconds below two minutes
/// (`119s`), minutes and seconds below ten minutes (`3m5s`), minutes below three hours, hours
/// and minutes below eight hours, hours below two days, days and hours below eight days, days
/// below two years, years and days below eight years, then years. Up to one second negative
/// (clock skew) is `0s`; more is `<invalid>`.
pub fn human_duration(seconds: i64) -> String {
    time::human_duration_nanos(i128::from(seconds) * 1_000_000_000)
}

/// A whole `meta.k8s.io/v1` Table for `objects` (parsed Kubernetes JSON of `info`'s kind):
/// column definitions, one row per object with its cells, row conditions (completed pods)
/// and `object` as `include_object` asks, and list metadata from the arguments (empty
/// `resource_version` and `continue_token` are left out).
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    now: i64,
    include_object: IncludeObject,
    resource_version: &str,
    continue_token: &str,
    remaining: Option<i64>,
) -> Value {
    let printer = printer(info);
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), resource_version.into());
    }
    if !continue_token.is_empty() {
        metadata.insert("continue".into(), continue_token.into());
    }
    if let Some(remaining) = remaining {
        metadata.insert("remainingItemCount".into(), remaining.into());
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = Map::new();
            row.insert("cells".into(), (printer.cells)(Obj(obj), now).into());
            let conditions = row_conditions(info, Obj(obj));
            if !conditions.is_empty() {
                row.insert("conditions".into(), conditions.into());
            }
            row.insert("object".into(), row_object(info, obj, include_object));
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": printer.columns.iter().map(Column::to_json).collect::<Vec<_>>(),
        "rows": rows,
    })
}

/// `rows[].conditions`: upstream marks pods that have finished as `Completed`.
fn row_conditions(info: &ResourceInfo, obj: Obj<'_>) -> Vec<Value> {
    if (info.group, info.kind) != ("", "Pod") {
        return Vec::new();
    }
    let (reason, message) = match obj.str(&["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![json!({
        "type": "Completed",
        "status": "True",
        "reason": reason,
        "message": message,
    })]
}

/// `rows[].object` for `include`.
fn row_object(info: &ResourceInfo, obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        IncludeObject::Object => {
            let mut full = obj.clone();
            if let Some(map) = full.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| info.api_version().into());
                map.entry("kind").or_insert_with(|| info.kind.into());
            }
            full
        }
    }
}

/// The name cell.
fn name_cell(o: Obj<'_>) -> Value {
    o.name().into()
}

/// The age cell (`translateTimestampSince(creationTimestamp)`).
fn age_cell(o: Obj<'_>, now: i64) -> Value {
    time::since(o.created(), now).into()
}

/// Cells of [`DEFAULT_TABLE`]: name and the creation time in RFC 3339 (UTC), Go's zero time
/// when it is missing.
fn default_cells(o: Obj<'_>, _now: i64) -> Vec<Value> {
    let created = o.created().unwrap_or_else(time::Timestamp::zero);
    vec![name_cell(o), created.to_rfc3339().into()]
}

/// Cells of [`CUSTOM_RESOURCE_TABLE`]: name and age, `null` without a creation time.
fn custom_resource_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let age = match o.created() {
        Some(_) => age_cell(o, now),
        None => Value::Null,
    };
    vec![name_cell(o), age]
}
