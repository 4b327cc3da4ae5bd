//! [`WatchStreamExt`]: adapters for watcher streams, in the order people chain them:
//! `watcher(api, cfg).default_backoff().reflect(writer).applied_objects()`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{Stream, TryStream};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::backoff::{ExponentialBackoff, StreamBackoff};
use crate::reflector::{Reflect, Writer, reflector};
use crate::watcher;

/// Adapters for streams of results, chiefly [`watcher`](crate::watcher::watcher) streams.
pub trait WatchStreamExt: Stream {
    /// Waits after each error before polling again: 100 ms, doubling up to 30 s, back to
    /// 100 ms after a success.
    fn default_backoff(self) -> StreamBackoff<Self>
    where
        Self: TryStream + Sized,
    {
        StreamBackoff::new(self, ExponentialBackoff::default())
    }

    /// Waits after each error as `backoff` says.
    fn backoff(self, backoff: ExponentialBackoff) -> StreamBackoff<Self>
    where
        Self: TryStream + Sized,
    {
        StreamBackoff::new(self, backoff)
    }

    /// Applies every event to `writer` as it passes (see [`reflector`]).
    fn reflect<K>(self, writer: Writer<K>) -> Reflect<Self, K>
    where
        Self: TryStream<Ok = watcher::Event<K>> + Sized,
        K: k8s_openapi::Metadata<Ty = ObjectMeta> + Clone,
    {
        reflector(writer, self)
    }

    /// Only the objects created or changed (`Apply`, `InitApply`), and the errors.
    fn applied_objects<K>(self) -> EventObjects<Self>
    where
        Self: TryStream<Ok = watcher::Event<K>> + Sized,
    {
        EventObjects {
            stream: Box::pin(self),
            deleted: false,
        }
    }

    /// The objects created, changed or deleted (`Apply`, `InitApply`, `Delete`), and the
    /// errors.
    fn touched_objects<K>(self) -> EventObjects<Self>
    where
        Self: TryStream<Ok = watcher::Event<K>> + Sized,
    {
        EventObjects {
            stream: Box::pin(self),
            deleted: true,
        }
    }
}

impl<S: Stream> WatchStreamExt for S {}

/// The stream of [`WatchStreamExt::applied_objects`] and
/// [`WatchStreamExt::touched_objects`].
pub struct EventObjects<S> {
    stream: Pin<Box<S>>,
    deleted: bool,
}

impl<S, K> Stream for EventObjects<S>
where
    S: TryStream<Ok = watcher::Event<K>>,
{
    type Item = Result<K, S::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let item = match ready!(this.stream.as_mut().try_poll_next(cx)) {
                None => None,
                Some(Err(err)) => Some(Err(err)),
                Some(Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj))) => {
                    Some(Ok(obj))
                }
                Some(Ok(watcher::Event::Delete(obj))) if this.deleted => Some(Ok(obj)),
                Some(Ok(_)) => continue,
            };
            return Poll::Ready(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use watcher::Event;

    fn cm(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.to_string());
        cm
    }

    fn events() -> Vec<Result<Event<ConfigMap>, &'static str>> {
        vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a"))),
            Ok(Event::InitDone),
            Err("boom"),
            Ok(Event::Apply(cm("b"))),
            Ok(Event::Delete(cm("a"))),
        ]
    }

    fn name(item: Result<ConfigMap, &str>) -> Result<String, &str> {
        item.map(|cm| cm.metadata.name.unwrap_or_default())
    }

    #[tokio::test]
    async fn applied_objects_skip_markers_and_deletes() {
        let items: Vec<_> = futures::stream::iter(events())
            .applied_objects()
            .map(name)
            .collect()
            .await;
        assert_eq!(
            items,
            [Ok("a".to_string()), Err("boom"), Ok("b".to_string())]
        );
    }

    #[tokio::test]
    async fn touched_objects_include_deletes() {
        let items: Vec<_> = futures::stream::iter(events())
            .touched_objects()
            .map(name)
            .collect()
            .await;
        assert_eq!(
            items,
            [
                Ok("a".to_string()),
                Err("boom"),
                Ok("b".to_string()),
                Ok("a".to_string())
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn adapters_chain() {
        let (writer, store) = crate::reflector::store::<ConfigMap>();
        let start = tokio::time::Instant::now();
        let items: Vec<_> = futures::stream::iter(events())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .collect()
            .await;
        assert_eq!(items.len(), 3);
        // One error: one 100 ms pause.
        assert_eq!(start.elapsed().as_millis(), 100);
        assert!(store.is_ready());
        assert_eq!(store.len(), 1);
        assert!(store.get_by("", "b").is_some());
    }
}
