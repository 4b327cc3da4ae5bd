//! The event printer (`printEvent`), for `core/v1` events and for `events.k8s.io/v1` events,
//! which upstream converts to the same internal type (and so prints the same way) after
//! renaming their fields.

use super::descriptions::*;
use super::object::Obj;
use super::time::since;
use super::{Column, Printer, name_cell};
use serde_json::Value;

/// The columns of both event kinds.
const EVENT_COLUMNS: &[Column] = &[
    Column::new("Last Seen", "string", D_EV_LAST),
    Column::new("Type", "string", D_EV_TYPE),
    Column::new("Reason", "string", D_EV_REASON),
    Column::new("Object", "string", D_EV_OBJECT),
    Column::wide("Subobject", "string", D_EV_FIELD_PATH),
    Column::wide("Source", "string", D_EV_SOURCE),
    Column::new("Message", "string", D_EV_MESSAGE),
    Column::wide("First Seen", "string", D_EV_FIRST),
    Column::wide("Count", "string", D_EV_COUNT),
    Column::wide("Name", "string", D_NAME).with_format("name"),
];

/// `core/v1` events.
pub(super) const EVENT: Printer = Printer {
    columns: EVENT_COLUMNS,
    cells: core_event_cells,
};

/// `events.k8s.io/v1` events.
pub(super) const EVENTS_K8S_IO_EVENT: Printer = Printer {
    columns: EVENT_COLUMNS,
    cells: events_k8s_io_event_cells,
};

/// Where an event API version keeps the fields the printer reads.
struct EventFields {
    involved_object: &'static str,
    source: &'static str,
    message: &'static str,
    first_timestamp: &'static str,
    last_timestamp: &'static str,
    count: &'static str,
    reporting_controller: &'static str,
}

/// `core/v1` field names.
const CORE: EventFields = EventFields {
    involved_object: "involvedObject",
    source: "source",
    message: "message",
    first_timestamp: "firstTimestamp",
    last_timestamp: "lastTimestamp",
    count: "count",
    reporting_controller: "reportingComponent",
};

/// `events.k8s.io/v1` field names, as its conversion to the internal event maps them.
const EVENTS_K8S_IO: EventFields = EventFields {
    involved_object: "regarding",
    source: "deprecatedSource",
    message: "note",
    first_timestamp: "deprecatedFirstTimestamp",
    last_timestamp: "deprecatedLastTimestamp",
    count: "deprecatedCount",
    reporting_controller: "reportingController",
};

fn core_event_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    event_cells(o, now, &CORE)
}

fn events_k8s_io_event_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    event_cells(o, now, &EVENTS_K8S_IO)
}

fn event_cells(o: Obj<'_>, now: i64, f: &EventFields) -> Vec<Value> {
    let first_seen = match o.time(&[f.first_timestamp]).filter(|t| !t.is_zero()) {
        Some(first) => since(Some(first), now),
        None => since(o.time(&["eventTime"]), now),
    };
    let mut last_seen = match o.time(&[f.last_timestamp]).filter(|t| !t.is_zero()) {
        Some(last) => since(Some(last), now),
        None => first_seen.clone(),
    };
    let mut count = o.int(&[f.count]);
    if o.has(&["series"]) {
        last_seen = since(o.time(&["series", "lastObservedTime"]), now);
        count = o.int(&["series", "count"]);
    } else if count == 0 {
        // Singleton events of the new API have no count.
        count = 1;
    }
    let involved = o.at(&[f.involved_object]);
    let kind = involved.str(&["kind"]).to_lowercase();
    let target = match involved.str(&["name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    // formatEventSource: component (or reporting controller), then host (or reporting
    // instance) after ", " when there is one.
    let first_non_empty = |a: &'static str, b: &str| -> String {
        match o.str(&[f.source, a]) {
            "" => o.str(&[b]).to_string(),
            s => s.to_string(),
        }
    };
    let component = first_non_empty("component", f.reporting_controller);
    let instance = first_non_empty("host", "reportingInstance");
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        last_seen.into(),
        o.str(&["type"]).into(),
        o.str(&["reason"]).into(),
        target.into(),
        involved.str(&["fieldPath"]).into(),
        source.into(),
        o.str(&[f.message]).trim().into(),
        first_seen.into(),
        count.into(),
        name_cell(o),
    ]
}
