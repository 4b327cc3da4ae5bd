//! The rkube API object model: Kubernetes types from `k8s-openapi`, the resource registry,
//! label and field selectors, quantities, validation and the Kubernetes `Status` error.
//!
//! This crate does no I/O and knows nothing of tokio, so every daemon and tool can use it.

pub use k8s_openapi;

pub mod cidr;
pub mod cron;
pub mod fields;
pub mod kinds;
pub mod normalize;
pub mod printers;
pub mod quantity;
pub mod registry;
pub mod scheduling;
pub mod selector;
pub mod status;
pub mod strategic;
pub mod validation;

pub use registry::ResourceInfo;
pub use status::{ApiError, Reason, StatusCause};
