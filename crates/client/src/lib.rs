//! The client library rkube's daemons use to talk to the apiserver over gRPC, and the
//! machinery controllers are built from.
//!
//! - [`Client`] and [`Api<K>`]: typed get, list, watch, create, replace, patch and delete of
//!   `k8s-openapi` objects.
//! - [`watcher()`]: a self-healing list + watch stream; [`WatchStreamExt`] adds backoff and
//!   more.
//! - [`reflector`]: a cache fed by a watcher, with one writer and cheap readers.
//! - [`WorkQueue`]: a deduplicating, rate-limited queue of keys that never hands one key to
//!   two workers.
//! - [`Controller`]: workers running a level-triggered `reconcile(key)` over a work queue,
//!   with graceful shutdown.
//! - [`LeaderElector`]: leader election over a `coordination.k8s.io/v1` Lease.
//! - [`Recorder`]: writes core/v1 Events about objects, aggregating repeats.
//!
//! ```no_run
//! use futures::StreamExt;
//! use k8s_openapi::api::core::v1::Pod;
//! use rkube_client::{Api, Client, ObjectRef, WatchStreamExt, WorkQueue, reflector, watcher};
//!
//! # async fn example() -> Result<(), rkube_client::Error> {
//! let client = Client::connect("http://127.0.0.1:6443").await?;
//! let pods: Api<Pod> = Api::all(client);
//! let (writer, store) = reflector::store();
//! let queue = WorkQueue::new();
//! let events = watcher(pods, watcher::Config::default())
//!     .default_backoff()
//!     .reflect(writer)
//!     .touched_objects();
//! futures::pin_mut!(events);
//! while let Some(Ok(pod)) = events.next().await {
//!     queue.add(ObjectRef::from_obj(&pod));
//! }
//! # let _ = store;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod backoff;
pub mod cli;
pub mod client;
pub mod config;
pub mod controller;
pub mod error;
pub mod events;
pub mod health;
pub mod leader;
pub mod object_ref;
pub mod params;
pub mod reflector;
pub mod stream_ext;
pub mod watcher;
pub mod workqueue;

pub use api::{Api, ObjectList, WatchEvent};
pub use backoff::{ExponentialBackoff, StreamBackoff};
pub use client::Client;
pub use config::ClientConfig;
pub use controller::{Action, Controller};
pub use error::{Error, Result};
pub use events::{EventType, Recorder, object_reference};
pub use leader::{LeaderElectionConfig, LeaderElector};
pub use object_ref::ObjectRef;
pub use params::{
    DeleteParams, ListParams, Patch, PostParams, PropagationPolicy, VersionMatch, WatchParams,
};
pub use reflector::{Store, Writer};
pub use stream_ext::WatchStreamExt;
pub use watcher::{Watched, watcher};
pub use workqueue::WorkQueue;
