//! Printers of storage kinds: persistent volumes, persistent volume claims and storage
//! classes.

use super::descriptions::*;
use super::format::{access_modes, quantity};
use super::object::Obj;
use super::{AGE, Column, NAME, Printer, age_cell, name_cell};
use serde_json::Value;

/// The annotation that predates `storageClassName` and still wins over it.
const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";
/// The annotation that marks the default storage class.
const IS_DEFAULT_STORAGE_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// Its beta spelling, still honoured.
const BETA_IS_DEFAULT_STORAGE_CLASS_ANNOTATION: &str =
    "storageclass.beta.kubernetes.io/is-default-class";

/// Persistent volumes.
pub(super) const PERSISTENT_VOLUME: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Capacity", "string", D_PV_CAPACITY),
        Column::new("Access Modes", "string", D_PV_ACCESS),
        Column::new("Reclaim Policy", "string", D_PV_RECLAIM),
        Column::new("Status", "string", D_PV_PHASE),
        Column::new("Claim", "string", D_PV_CLAIM),
        Column::new("StorageClass", "string", "StorageClass of the pv"),
        Column::new(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pv",
        ),
        Column::new("Reason", "string", D_PV_REASON),
        AGE,
        Column::wide("VolumeMode", "string", D_PV_MODE),
    ],
    cells: persistent_volume_cells,
};

fn persistent_volume_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let claim = o.at(&["spec", "claimRef"]);
    let claim = if claim.present() {
        format!("{}/{}", claim.str(&["namespace"]), claim.str(&["name"]))
    } else {
        String::new()
    };
    let phase = if o.deleting() {
        "Terminating"
    } else {
        o.str_or(&["status", "phase"], "Pending")
    };
    let class = o
        .annotation(BETA_STORAGE_CLASS_ANNOTATION)
        .unwrap_or_else(|| o.str(&["spec", "storageClassName"]));
    vec![
        name_cell(o),
        quantity(o.get(&["spec", "capacity", "storage"]), "0").into(),
        access_modes(o.list(&["spec", "accessModes"])).into(),
        o.str_or(&["spec", "persistentVolumeReclaimPolicy"], "Retain")
            .into(),
        phase.into(),
        claim.into(),
        class.into(),
        o.opt_str(&["spec", "volumeAttributesClassName"])
            .unwrap_or("<unset>")
            .into(),
        o.str(&["status", "reason"]).into(),
        age_cell(o, now),
        o.str_or(&["spec", "volumeMode"], "Filesystem").into(),
    ]
}

/// Persistent volume claims.
pub(super) const PERSISTENT_VOLUME_CLAIM: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Status", "string", D_PVC_PHASE),
        Column::new("Volume", "string", D_PVC_VOLUME),
        Column::new("Capacity", "string", D_PVC_CAPACITY),
        Column::new("Access Modes", "string", D_PVC_ACCESS),
        Column::new("StorageClass", "string", "StorageClass of the pvc"),
        Column::new(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pvc",
        ),
        AGE,
        Column::wide("VolumeMode", "string", D_PVC_MODE),
    ],
    cells: persistent_volume_claim_cells,
};

fn persistent_volume_claim_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let phase = if o.deleting() {
        "Terminating"
    } else {
        o.str_or(&["status", "phase"], "Pending")
    };
    let volume = o.str(&["spec", "volumeName"]);
    // Capacity and access modes only show once the claim is bound to a volume.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(o.get(&["status", "capacity", "storage"]), "0"),
            access_modes(o.list(&["status", "accessModes"])),
        )
    };
    let class = o
        .annotation(BETA_STORAGE_CLASS_ANNOTATION)
        .or_else(|| o.opt_str(&["spec", "storageClassName"]))
        .unwrap_or("");
    vec![
        name_cell(o),
        phase.into(),
        volume.into(),
        capacity.into(),
        modes.into(),
        class.into(),
        o.opt_str(&["spec", "volumeAttributesClassName"])
            .unwrap_or("<unset>")
            .into(),
        age_cell(o, now),
        o.str_or(&["spec", "volumeMode"], "Filesystem").into(),
    ]
}

/// Storage classes.
pub(super) const STORAGE_CLASS: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Provisioner", "string", D_SC_PROVISIONER),
        Column::new("ReclaimPolicy", "string", D_SC_RECLAIM),
        Column::new("VolumeBindingMode", "string", D_SC_BINDING),
        Column::new("AllowVolumeExpansion", "string", D_SC_EXPANSION),
        AGE,
    ],
    cells: storage_class_cells,
};

fn storage_class_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let is_default = [
        IS_DEFAULT_STORAGE_CLASS_ANNOTATION,
        BETA_IS_DEFAULT_STORAGE_CLASS_ANNOTATION,
    ]
    .iter()
    .any(|a| o.annotation(a) == Some("true"));
    let mut name = o.name().to_string();
    if is_default {
        name.push_str(" (default)");
    }
    vec![
        name.into(),
        o.str(&["provisioner"]).into(),
        o.str_or(&["reclaimPolicy"], "Delete").into(),
        o.str_or(&["volumeBindingMode"], "Immediate").into(),
        o.bool(&["allowVolumeExpansion"]).into(),
        age_cell(o, now),
    ]
}
