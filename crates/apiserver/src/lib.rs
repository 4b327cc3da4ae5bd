//! `rkube-apiserver`: the only owner of cluster state.
//!
//! It keeps Kubernetes objects in a [`rkube_store::Store`] (sled on disk by default), serves
//! lists and watches from per-resource watch caches, admits every write (system fields,
//! defaults, validation) and speaks the `rkube.v1.Resources` gRPC API, with `/healthz`,
//! `/readyz` and `/metrics` on the same listener.

pub mod caches;
pub mod defaults;
pub mod errors;
pub mod grpc;
pub mod kubelet_client;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod rest;
pub mod server;
pub mod ssa;
pub mod tls;
pub mod watch_cache;
pub mod yaml;

pub use server::{Options, Running, StartError, start};
