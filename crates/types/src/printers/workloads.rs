//! Printers of the workload controllers and their templates: replication controllers,
//! replica sets, deployments, stateful sets, daemon sets, jobs, cron jobs, pod templates and
//! controller revisions.

use super::descriptions::*;
use super::format::{
    format_label_selector, format_labels, layout_containers, print_bool, selector_string,
};
use super::object::{Obj, each};
use super::time::{Timestamp, human_duration_nanos, since};
use super::{AGE, CONTAINERS, Column, IMAGES, NAME, Printer, age_cell, name_cell};
use serde_json::Value;

/// The ready-pods column of deployments and stateful sets.
const READY_OF_DESIRED: Column =
    Column::new("Ready", "string", "Number of the pod with ready state");

/// Pod templates.
pub(super) const POD_TEMPLATE: Printer = Printer {
    columns: &[
        NAME,
        Column::new(
            "Containers",
            "string",
            "Names of each container in the template.",
        ),
        Column::new(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        ),
        Column::new("Pod Labels", "string", "The labels for the pod template."),
    ],
    cells: pod_template_cells,
};

fn pod_template_cells(o: Obj<'_>, _now: i64) -> Vec<Value> {
    let (names, images) = layout_containers(o.list(&["template", "spec", "containers"]));
    vec![
        name_cell(o),
        names.into(),
        images.into(),
        format_labels(o, &["template", "metadata", "labels"]).into(),
    ]
}

/// Replication controllers.
pub(super) const REPLICATION_CONTROLLER: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Desired", "integer", D_RC_SPEC_REPLICAS),
        Column::new("Current", "integer", D_RC_STATUS_REPLICAS),
        Column::new("Ready", "integer", D_RC_READY),
        AGE,
        CONTAINERS,
        IMAGES,
        Column::wide("Selector", "string", D_RC_SELECTOR),
    ],
    cells: replication_controller_cells,
};

fn replication_controller_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let (names, images) = layout_containers(o.list(&["spec", "template", "spec", "containers"]));
    // Defaulting gives a controller without a selector its template's labels.
    let selector = if o.map_len(&["spec", "selector"]) == 0 {
        format_labels(o, &["spec", "template", "metadata", "labels"])
    } else {
        format_labels(o, &["spec", "selector"])
    };
    vec![
        name_cell(o),
        desired_replicas(o).into(),
        o.int(&["status", "replicas"]).into(),
        o.int(&["status", "readyReplicas"]).into(),
        age_cell(o, now),
        names.into(),
        images.into(),
        selector.into(),
    ]
}

/// `spec.replicas`, which defaults to 1.
fn desired_replicas(o: Obj<'_>) -> i64 {
    o.opt_int(&["spec", "replicas"]).unwrap_or(1)
}

/// Replica sets.
pub(super) const REPLICA_SET: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Desired", "integer", D_RS_SPEC_REPLICAS),
        Column::new("Current", "integer", D_RS_STATUS_REPLICAS),
        Column::new("Ready", "integer", D_RS_READY),
        AGE,
        CONTAINERS,
        IMAGES,
        Column::wide("Selector", "string", D_RS_SELECTOR),
    ],
    cells: replica_set_cells,
};

fn replica_set_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let (names, images) = layout_containers(o.list(&["spec", "template", "spec", "containers"]));
    vec![
        name_cell(o),
        desired_replicas(o).into(),
        o.int(&["status", "replicas"]).into(),
        o.int(&["status", "readyReplicas"]).into(),
        age_cell(o, now),
        names.into(),
        images.into(),
        format_label_selector(o.get(&["spec", "selector"])).into(),
    ]
}

/// Deployments.
pub(super) const DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        READY_OF_DESIRED,
        Column::new("Up-to-date", "string", D_DEPLOY_UPDATED),
        Column::new("Available", "string", D_DEPLOY_AVAILABLE),
        AGE,
        CONTAINERS,
        IMAGES,
        Column::wide("Selector", "string", D_DEPLOY_SELECTOR),
    ],
    cells: deployment_cells,
};

fn deployment_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let (names, images) = layout_containers(o.list(&["spec", "template", "spec", "containers"]));
    // Unlike the other workloads, an empty selector prints as "" here and a bad one as
    // "<invalid>".
    let selector =
        selector_string(o.get(&["spec", "selector"])).unwrap_or_else(|| "<invalid>".to_string());
    vec![
        name_cell(o),
        format!(
            "{}/{}",
            o.int(&["status", "readyReplicas"]),
            desired_replicas(o)
        )
        .into(),
        o.int(&["status", "updatedReplicas"]).into(),
        o.int(&["status", "availableReplicas"]).into(),
        age_cell(o, now),
        names.into(),
        images.into(),
        selector.into(),
    ]
}

/// Stateful sets.
pub(super) const STATEFUL_SET: Printer = Printer {
    columns: &[NAME, READY_OF_DESIRED, AGE, CONTAINERS, IMAGES],
    cells: stateful_set_cells,
};

fn stateful_set_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let (names, images) = layout_containers(o.list(&["spec", "template", "spec", "containers"]));
    vec![
        name_cell(o),
        format!(
            "{}/{}",
            o.int(&["status", "readyReplicas"]),
            desired_replicas(o)
        )
        .into(),
        age_cell(o, now),
        names.into(),
        images.into(),
    ]
}

/// Daemon sets.
pub(super) const DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Desired", "integer", D_DS_DESIRED),
        Column::new("Current", "integer", D_DS_CURRENT),
        Column::new("Ready", "integer", D_DS_READY),
        Column::new("Up-to-date", "integer", D_DS_UPDATED),
        Column::new("Available", "integer", D_DS_AVAILABLE),
        Column::new("Node Selector", "string", D_POD_NODE_SELECTOR),
        AGE,
        CONTAINERS,
        IMAGES,
        Column::wide("Selector", "string", D_DS_SELECTOR),
    ],
    cells: daemon_set_cells,
};

fn daemon_set_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let (names, images) = layout_containers(o.list(&["spec", "template", "spec", "containers"]));
    let status = o.at(&["status"]);
    vec![
        name_cell(o),
        status.int(&["desiredNumberScheduled"]).into(),
        status.int(&["currentNumberScheduled"]).into(),
        status.int(&["numberReady"]).into(),
        status.int(&["updatedNumberScheduled"]).into(),
        status.int(&["numberAvailable"]).into(),
        format_labels(o, &["spec", "template", "spec", "nodeSelector"]).into(),
        age_cell(o, now),
        names.into(),
        images.into(),
        format_label_selector(o.get(&["spec", "selector"])).into(),
    ]
}

/// Jobs.
pub(super) const JOB: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Status", "string", "Status of the job."),
        Column::new("Completions", "string", D_JOB_SUCCEEDED),
        Column::new("Duration", "string", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        Column::wide("Selector", "string", D_JOB_SELECTOR),
    ],
    cells: job_cells,
};

/// `hasJobCondition`: whether the first condition of `type_` has status `True`.
fn has_job_condition(o: Obj<'_>, type_: &str) -> bool {
    each(o.list(&["status", "conditions"]))
        .find(|c| c.str(&["type"]) == type_)
        .is_some_and(|c| c.str(&["status"]) == "True")
}

fn job_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let succeeded = o.int(&["status", "succeeded"]);
    let completions = match o.opt_int(&["spec", "completions"]) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match o.int(&["spec", "parallelism"]) {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        o.time(&["status", "startTime"]),
        o.time(&["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration_nanos(Timestamp::from_unix(now).nanos_since(&start)),
        (Some(start), Some(end)) => human_duration_nanos(end.nanos_since(&start)),
    };
    let status = if has_job_condition(o, "Complete") {
        "Complete"
    } else if has_job_condition(o, "Failed") {
        "Failed"
    } else if o.deleting() {
        "Terminating"
    } else if has_job_condition(o, "Suspended") {
        "Suspended"
    } else if has_job_condition(o, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = layout_containers(o.list(&["spec", "template", "spec", "containers"]));
    vec![
        name_cell(o),
        status.into(),
        completions.into(),
        duration.into(),
        age_cell(o, now),
        names.into(),
        images.into(),
        format_label_selector(o.get(&["spec", "selector"])).into(),
    ]
}

/// Cron jobs.
pub(super) const CRON_JOB: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Schedule", "string", D_CJ_SCHEDULE),
        Column::new("Timezone", "string", D_CJ_TIMEZONE),
        Column::new("Suspend", "boolean", D_CJ_SUSPEND),
        Column::new("Active", "integer", D_CJ_ACTIVE),
        Column::new("Last Schedule", "string", D_CJ_LAST),
        AGE,
        CONTAINERS,
        IMAGES,
        Column::wide("Selector", "string", D_JOB_SELECTOR),
    ],
    cells: cron_job_cells,
};

fn cron_job_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let last_schedule = if o.has(&["status", "lastScheduleTime"]) {
        since(o.time(&["status", "lastScheduleTime"]), now)
    } else {
        "<none>".to_string()
    };
    let job = o.at(&["spec", "jobTemplate", "spec"]);
    let (names, images) = layout_containers(job.list(&["template", "spec", "containers"]));
    vec![
        name_cell(o),
        o.str(&["spec", "schedule"]).into(),
        o.opt_str(&["spec", "timeZone"]).unwrap_or("<none>").into(),
        // `suspend` defaults to false.
        print_bool(o.bool(&["spec", "suspend"])).into(),
        (o.list(&["status", "active"]).len() as i64).into(),
        last_schedule.into(),
        age_cell(o, now),
        names.into(),
        images.into(),
        format_label_selector(job.get(&["selector"])).into(),
    ]
}

/// Controller revisions.
pub(super) const CONTROLLER_REVISION: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Controller", "string", "Controller of the object"),
        Column::new("Revision", "string", D_CR_REVISION),
        AGE,
    ],
    cells: controller_revision_cells,
};

fn controller_revision_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let controller = each(o.list(&["metadata", "ownerReferences"]))
        .find(|r| r.bool(&["controller"]))
        .map_or_else(|| "<none>".to_string(), controller_name);
    vec![
        name_cell(o),
        controller.into(),
        o.int(&["revision"]).into(),
        age_cell(o, now),
    ]
}

/// `formatResourceName(kind, name, true)` of a controller reference: `kind.group/name` in
/// lower case (`statefulset.apps/web`), or the bare name without group and kind.
fn controller_name(owner: Obj<'_>) -> String {
    let api_version = owner.str(&["apiVersion"]);
    let group = match api_version.split_once('/') {
        Some((group, _)) => group,
        None => "",
    };
    let kind = owner.str(&["kind"]);
    let name = owner.str(&["name"]);
    match (group, kind) {
        ("", "") => name.to_string(),
        ("", kind) => format!("{}/{name}", kind.to_lowercase()),
        (group, kind) => format!("{}.{}/{name}", kind.to_lowercase(), group.to_lowercase()),
    }
}
