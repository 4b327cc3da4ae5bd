//! The watcher: list, then watch from the list's resourceVersion, forever.
//!
//! [`watcher`] turns an [`Api`] into an endless stream of [`Event`]s that a cache can apply
//! in order and end up equal to the server's state. It is a state machine:
//!
//! ```text
//! Empty ──Init──▶ Listing ⇄ Page ──InitApply…──InitDone──▶ Listed ──▶ Watching ──Apply/Delete…
//!   ▲                                                         ▲           │
//!   └──────────────────────── 410 Expired ────────────────────┼───────────┤
//!                                       stream ended / failed └───────────┘
//! ```
//!
//! - The first list (paginated) is bracketed by `Init` and `InitDone`, so a cache can build
//!   the new state aside and swap it in whole.
//! - A watch that ends or fails is reopened from the last resourceVersion seen (from objects
//!   and BOOKMARKs), without listing again.
//! - A 410 Expired (on opening the watch, as an ERROR event, or on a list page) means that
//!   revision is gone: the watcher lists again from scratch.
//! - Failures are `Err` items and the stream carries on at the next poll; it never ends by
//!   itself. Waiting between attempts is the job of a wrapper such as
//!   [`WatchStreamExt::default_backoff`](crate::WatchStreamExt::default_backoff).

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::api::{Api, ObjectList, WatchEvent};
use crate::error::{Error, Result};
use crate::params::{ListParams, WatchParams};

/// A watch stream closed sooner than this without an object event counts as a failure, so
/// that a server closing every watch at once does not make the watcher spin.
const QUICK_CLOSE: Duration = Duration::from_secs(1);

/// What the watcher selects and how it talks to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Only objects whose labels match.
    pub label_selector: Option<String>,
    /// Only objects whose fields match, e.g. `spec.nodeName=node-1`.
    pub field_selector: Option<String>,
    /// Objects per list page; `None` lists everything in one response. Default 500.
    pub page_size: Option<u32>,
    /// Ask the server to close each watch after this many seconds; `None`: its default.
    pub timeout_seconds: Option<u32>,
    /// Ask for BOOKMARK events, so a resumed watch starts from a recent revision. Default on.
    pub bookmarks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            label_selector: None,
            field_selector: None,
            page_size: Some(500),
            timeout_seconds: None,
            bookmarks: true,
        }
    }
}

impl Config {
    /// Selects by labels.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_string());
        self
    }

    /// Selects by fields.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_string());
        self
    }

    /// Lists in pages of `size` objects (`0`: all at once).
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size).filter(|&s| s > 0);
        self
    }

    /// Asks the server to close each watch after `seconds`.
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// Turns BOOKMARK events off.
    pub fn disable_bookmarks(mut self) -> Self {
        self.bookmarks = false;
        self
    }

    fn list_params(&self, continue_token: Option<&str>) -> ListParams {
        ListParams {
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            limit: self.page_size,
            continue_token: continue_token.map(str::to_string),
            resource_version: None,
            resource_version_match: None,
        }
    }

    fn watch_params(&self) -> WatchParams {
        WatchParams {
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            allow_bookmarks: self.bookmarks,
            timeout_seconds: self.timeout_seconds,
        }
    }
}

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<K> {
    /// A (re-)list starts; the objects that follow until `InitDone` are the whole state.
    Init,
    /// One object of the list.
    InitApply(K),
    /// The list is complete; whatever a cache had that was not in it is gone.
    InitDone,
    /// An object was created or changed.
    Apply(K),
    /// An object was deleted; this is its last state.
    Delete(K),
}

impl<K> Event<K> {
    /// The object of an `Apply` or `InitApply`.
    pub fn into_iter_applied(self) -> impl Iterator<Item = K> {
        match self {
            Event::Apply(obj) | Event::InitApply(obj) => Some(obj),
            Event::Init | Event::InitDone | Event::Delete(_) => None,
        }
        .into_iter()
    }

    /// The object of an `Apply`, `InitApply` or `Delete`.
    pub fn into_iter_touched(self) -> impl Iterator<Item = K> {
        self.into_object().into_iter()
    }

    /// The object this event carries, if any.
    pub fn object(&self) -> Option<&K> {
        match self {
            Event::Apply(obj) | Event::InitApply(obj) | Event::Delete(obj) => Some(obj),
            Event::Init | Event::InitDone => None,
        }
    }

    /// Like [`Event::object`], by value.
    pub fn into_object(self) -> Option<K> {
        match self {
            Event::Apply(obj) | Event::InitApply(obj) | Event::Delete(obj) => Some(obj),
            Event::Init | Event::InitDone => None,
        }
    }

    /// The same event with its object changed by `f`.
    pub fn map<U>(self, f: impl FnOnce(K) -> U) -> Event<U> {
        match self {
            Event::Init => Event::Init,
            Event::InitApply(obj) => Event::InitApply(f(obj)),
            Event::InitDone => Event::InitDone,
            Event::Apply(obj) => Event::Apply(f(obj)),
            Event::Delete(obj) => Event::Delete(f(obj)),
        }
    }
}

/// `obj` without `metadata.managedFields`, for caches: server-side apply's bookkeeping is
/// often the largest part of an object's metadata, and no controller or scheduler reads it
/// (client-go's `TransformStripManagedFields`). Use as `event.map(strip_managed_fields)`.
pub fn strip_managed_fields<K: k8s_openapi::Metadata<Ty = ObjectMeta>>(mut obj: K) -> K {
    obj.metadata_mut().managed_fields = None;
    obj
}

/// A kind that can be listed, watched and cached: what [`watcher`], the reflector and the
/// daemons' informers need of an object type, spelled once.
pub trait Watched:
    k8s_openapi::Metadata<Ty = ObjectMeta>
    + k8s_openapi::Resource
    + Serialize
    + DeserializeOwned
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: k8s_openapi::Metadata<Ty = ObjectMeta>
        + k8s_openapi::Resource
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Watches `api` as the module documentation describes: an endless stream of events and
/// errors. Wrap it in a backoff before use, e.g. `watcher(api, cfg).default_backoff()`.
pub fn watcher<K>(api: Api<K>, config: Config) -> impl Stream<Item = Result<Event<K>>> + Send
where
    K: k8s_openapi::Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static,
{
    watch_source(api, config)
}

/// Where a watcher gets lists and watches from: an [`Api`], or a script in tests.
pub(crate) trait ListWatch<K>: Send + Sync + 'static {
    /// One page of the list.
    fn list(&self, params: &ListParams) -> impl Future<Output = Result<ObjectList<K>>> + Send;

    /// A watch from `resource_version`.
    fn watch(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> impl Future<Output = Result<BoxStream<'static, Result<WatchEvent<K>>>>> + Send;
}

impl<K> ListWatch<K> for Api<K>
where
    K: Serialize + DeserializeOwned + Send + 'static,
{
    fn list(&self, params: &ListParams) -> impl Future<Output = Result<ObjectList<K>>> + Send {
        Api::list(self, params)
    }

    async fn watch(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent<K>>>> {
        Ok(Api::watch(self, params, resource_version).await?.boxed())
    }
}

/// The watcher's states; see the module documentation.
enum State<K> {
    /// Nothing listed yet, or the last revision expired.
    Empty,
    /// The next step fetches a list page (`None`: the first).
    Listing { continue_token: Option<String> },
    /// Handing out the objects of a page.
    Page {
        objects: VecDeque<K>,
        continue_token: Option<String>,
        resource_version: String,
    },
    /// The list is complete; the next step opens a watch from `resource_version`.
    Listed { resource_version: String },
    /// A watch is open.
    Watching {
        resource_version: String,
        stream: BoxStream<'static, Result<WatchEvent<K>>>,
        opened: Instant,
        saw_objects: bool,
    },
}

pub(crate) fn watch_source<K, S>(
    source: S,
    config: Config,
) -> impl Stream<Item = Result<Event<K>>> + Send
where
    S: ListWatch<K>,
    K: k8s_openapi::Metadata<Ty = ObjectMeta> + Send + 'static,
{
    futures::stream::unfold(
        (source, config, State::Empty),
        |(source, config, mut state)| async move {
            loop {
                let (item, next) = step(&source, &config, state).await;
                state = next;
                if let Some(item) = item {
                    return Some((item, (source, config, state)));
                }
            }
        },
    )
}

/// One transition: the item to yield, if any, and the next state.
async fn step<K, S>(
    source: &S,
    config: &Config,
    state: State<K>,
) -> (Option<Result<Event<K>>>, State<K>)
where
    S: ListWatch<K>,
    K: k8s_openapi::Metadata<Ty = ObjectMeta> + Send + 'static,
{
    match state {
        State::Empty => (
            Some(Ok(Event::Init)),
            State::Listing {
                continue_token: None,
            },
        ),

        State::Listing { continue_token } => {
            let params = config.list_params(continue_token.as_deref());
            match source.list(&params).await {
                Ok(list) => (
                    None,
                    State::Page {
                        objects: list.items.into(),
                        continue_token: Some(list.continue_token).filter(|t| !t.is_empty()),
                        resource_version: list.resource_version,
                    },
                ),
                // The continue token's revision is gone: the list starts over.
                Err(err) if err.is_expired() => (Some(Err(err)), State::Empty),
                Err(err) => (Some(Err(err)), State::Listing { continue_token }),
            }
        }

        State::Page {
            mut objects,
            continue_token,
            resource_version,
        } => match (objects.pop_front(), continue_token) {
            (Some(obj), continue_token) => (
                Some(Ok(Event::InitApply(obj))),
                State::Page {
                    objects,
                    continue_token,
                    resource_version,
                },
            ),
            (None, Some(token)) => (
                None,
                State::Listing {
                    continue_token: Some(token),
                },
            ),
            (None, None) => (
                Some(Ok(Event::InitDone)),
                State::Listed { resource_version },
            ),
        },

        State::Listed { resource_version } => {
            match source
                .watch(&config.watch_params(), &resource_version)
                .await
            {
                Ok(stream) => (
                    None,
                    State::Watching {
                        resource_version,
                        stream,
                        opened: Instant::now(),
                        saw_objects: false,
                    },
                ),
                Err(err) if err.is_expired() => (Some(Err(err)), State::Empty),
                Err(err) => (Some(Err(err)), State::Listed { resource_version }),
            }
        }

        State::Watching {
            mut resource_version,
            mut stream,
            opened,
            mut saw_objects,
        } => {
            let item = match stream.next().await {
                Some(Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj))) => {
                    saw_objects = true;
                    advance(&mut resource_version, &obj);
                    Some(Ok(Event::Apply(obj)))
                }
                Some(Ok(WatchEvent::Deleted(obj))) => {
                    saw_objects = true;
                    advance(&mut resource_version, &obj);
                    Some(Ok(Event::Delete(obj)))
                }
                Some(Ok(WatchEvent::Bookmark {
                    resource_version: rv,
                })) => {
                    if !rv.is_empty() {
                        resource_version = rv;
                    }
                    None
                }
                Some(Ok(WatchEvent::Error(err))) => {
                    let err = Error::from(err);
                    if err.is_expired() {
                        return (Some(Err(err)), State::Empty);
                    }
                    // The server closes the stream after an ERROR event; if it does not,
                    // the watch carries on.
                    Some(Err(err))
                }
                Some(Err(err)) if err.is_expired() => return (Some(Err(err)), State::Empty),
                // One bad event: report it and read on, the stream itself is fine.
                Some(Err(err @ (Error::Decode(_) | Error::UnknownEventType(_)))) => Some(Err(err)),
                // The stream broke (connection lost, server restarted): watch again.
                Some(Err(err)) => return (Some(Err(err)), State::Listed { resource_version }),
                None => {
                    let item = (!saw_objects && opened.elapsed() < QUICK_CLOSE)
                        .then_some(Err(Error::WatchEnded));
                    return (item, State::Listed { resource_version });
                }
            };
            (
                item,
                State::Watching {
                    resource_version,
                    stream,
                    opened,
                    saw_objects,
                },
            )
        }
    }
}

/// Moves the watch's resourceVersion on to `obj`'s.
fn advance<K: k8s_openapi::Metadata<Ty = ObjectMeta>>(resource_version: &mut String, obj: &K) {
    if let Some(rv) = obj
        .metadata()
        .resource_version
        .as_ref()
        .filter(|rv| !rv.is_empty())
    {
        resource_version.clone_from(rv);
    }
}

#[cfg(test)]
mod tests;
