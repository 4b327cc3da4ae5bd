//! `rkube-kubelet`: runs the pods bound to a node as real containers through containerd's
//! CRI, keeps them as their specs say, and reports node and pod status; or, in hollow mode,
//! does the same for many simulated nodes over a simulated runtime.

pub mod cni;
pub mod cri;
pub mod daemon;
pub mod env;
pub mod health;
pub mod hollow;
pub mod network;
pub mod node;
pub mod pods;
pub mod pull_secrets;
pub mod runtime;
pub mod server;
pub mod volumes;
