//! rkube-proxy: programs Services and EndpointSlices into nftables, as upstream
//! kube-proxy's nftables mode does.
//!
//! - [`model`]: a Service and its EndpointSlices as the proxy sees them (pure).
//! - [`ruleset`]: the nftables program for them, as a full sync or a difference (pure).
//! - [`nft`]: running `nft -f -`, listing and deleting the table.
//! - [`cache`]: Services and EndpointSlices from the watches, and what changed.
//! - [`proxier`]: one sync, full or partial, and the deletion of unused chains.
//! - [`metrics`]: the Prometheus metrics.
//! - [`daemon`]: the watches, the batching sync loop, health and metrics endpoints.
//! - [`netns`]: a throw-away network namespace for tests and benchmarks.
//! - [`testbed`]: a node and its pods in such namespaces, wired as a CNI plugin would.
//!
//! IPv4 only: one table, `table ip rkube-proxy`; nothing outside it is ever touched.

pub mod cache;
pub mod daemon;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod nft;
pub mod proxier;
pub mod ruleset;
pub mod testbed;
