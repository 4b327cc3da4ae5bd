//! Printers of configuration kinds: config maps, secrets and service accounts.

use super::descriptions::*;
use super::object::Obj;
use super::{AGE, Column, NAME, Printer, age_cell, name_cell};
use serde_json::Value;

/// Config maps.
pub(super) const CONFIG_MAP: Printer = Printer {
    columns: &[NAME, Column::new("Data", "string", D_CM_DATA), AGE],
    cells: config_map_cells,
};

fn config_map_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    let entries = o.map_len(&["data"]) + o.map_len(&["binaryData"]);
    vec![name_cell(o), (entries as i64).into(), age_cell(o, now)]
}

/// Secrets.
pub(super) const SECRET: Printer = Printer {
    columns: &[
        NAME,
        Column::new("Type", "string", D_SECRET_TYPE),
        Column::new("Data", "string", D_SECRET_DATA),
        AGE,
    ],
    cells: secret_cells,
};

fn secret_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    vec![
        name_cell(o),
        o.str_or(&["type"], "Opaque").into(),
        (o.map_len(&["data"]) as i64).into(),
        age_cell(o, now),
    ]
}

/// Service accounts.
pub(super) const SERVICE_ACCOUNT: Printer = Printer {
    columns: &[NAME, Column::new("Secrets", "string", D_SA_SECRETS), AGE],
    cells: service_account_cells,
};

fn service_account_cells(o: Obj<'_>, now: i64) -> Vec<Value> {
    vec![
        name_cell(o),
        (o.list(&["secrets"]).len() as i64).into(),
        age_cell(o, now),
    ]
}
