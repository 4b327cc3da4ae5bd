//! The watcher's state machine against scripted lists and watches.

use std::sync::{Arc, Mutex};

use futures::stream;
use k8s_openapi::api::core::v1::ConfigMap;
use rkube_types::{ApiError, Reason};

use super::*;
use crate::client::Client;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    List {
        continue_token: Option<String>,
        limit: Option<u32>,
    },
    Watch {
        resource_version: String,
    },
}

type WatchStream = BoxStream<'static, Result<WatchEvent<ConfigMap>>>;

/// Answers lists and watches from a script and records the calls; when the script runs out,
/// lists fail and watches stay open and silent.
#[derive(Clone, Default)]
struct Script {
    lists: Arc<Mutex<VecDeque<Result<ObjectList<ConfigMap>>>>>,
    watches: Arc<Mutex<VecDeque<Result<WatchStream>>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Script {
    fn list(self, items: &[ConfigMap], continue_token: &str, rv: &str) -> Self {
        self.lists.lock().unwrap().push_back(Ok(ObjectList {
            items: items.to_vec(),
            resource_version: rv.to_string(),
            continue_token: continue_token.to_string(),
            remaining_item_count: None,
        }));
        self
    }

    fn list_err(self, err: Error) -> Self {
        self.lists.lock().unwrap().push_back(Err(err));
        self
    }

    /// A watch that delivers `events` at once, then ends.
    fn watch(self, events: Vec<Result<WatchEvent<ConfigMap>>>) -> Self {
        self.watch_stream(stream::iter(events).boxed())
    }

    fn watch_stream(self, stream: WatchStream) -> Self {
        self.watches.lock().unwrap().push_back(Ok(stream));
        self
    }

    fn watch_err(self, err: Error) -> Self {
        self.watches.lock().unwrap().push_back(Err(err));
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl ListWatch<ConfigMap> for Script {
    async fn list(&self, params: &ListParams) -> Result<ObjectList<ConfigMap>> {
        self.calls.lock().unwrap().push(Call::List {
            continue_token: params.continue_token.clone(),
            limit: params.limit,
        });
        let next = self.lists.lock().unwrap().pop_front();
        next.unwrap_or_else(
            || Err(ApiError::new(Reason::ServiceUnavailable, "script ended").into()),
        )
    }

    async fn watch(
        &self,
        _params: &WatchParams,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent<ConfigMap>>>> {
        self.calls.lock().unwrap().push(Call::Watch {
            resource_version: resource_version.to_string(),
        });
        let next = self.watches.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Ok(stream::pending().boxed()))
    }
}

fn cm(name: &str, rv: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.metadata.namespace = Some("default".to_string());
    cm.metadata.resource_version = Some(rv.to_string());
    cm
}

fn list_call(continue_token: Option<&str>) -> Call {
    Call::List {
        continue_token: continue_token.map(str::to_string),
        limit: Some(500),
    }
}

fn watch_call(rv: &str) -> Call {
    Call::Watch {
        resource_version: rv.to_string(),
    }
}

fn expired() -> Error {
    ApiError::expired("too old resource version").into()
}

fn unavailable() -> Error {
    ApiError::new(Reason::ServiceUnavailable, "connection reset").into()
}

/// Takes `n` items from the watcher over `script`, as `Ok` events or error reasons.
async fn take(script: &Script, config: Config, n: usize) -> Vec<Result<Event<ConfigMap>, String>> {
    watch_source(script.clone(), config)
        .take(n)
        .map(|item| item.map_err(|e| format!("{e}")))
        .collect()
        .await
}

fn is_err(item: &Result<Event<ConfigMap>, String>, what: &str) -> bool {
    matches!(item, Err(e) if e.contains(what))
}

#[tokio::test(start_paused = true)]
async fn lists_pages_then_watches_from_the_list_revision() {
    let script = Script::default()
        .list(&[cm("a", "3")], "t1", "10")
        .list(&[cm("b", "4")], "", "10")
        .watch(vec![
            Ok(WatchEvent::Added(cm("c", "11"))),
            Ok(WatchEvent::Bookmark {
                resource_version: "15".into(),
            }),
            Ok(WatchEvent::Modified(cm("a", "16"))),
            Ok(WatchEvent::Deleted(cm("b", "17"))),
        ])
        .watch(vec![Ok(WatchEvent::Added(cm("d", "18")))]);

    let items = take(&script, Config::default(), 8).await;
    assert_eq!(
        items,
        vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a", "3"))),
            Ok(Event::InitApply(cm("b", "4"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(cm("c", "11"))),
            Ok(Event::Apply(cm("a", "16"))),
            Ok(Event::Delete(cm("b", "17"))),
            Ok(Event::Apply(cm("d", "18"))),
        ]
    );
    // The stream ended after events: resumed from the last revision, no second list.
    assert_eq!(
        script.calls(),
        vec![
            list_call(None),
            list_call(Some("t1")),
            watch_call("10"),
            watch_call("17"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn resumes_from_the_last_bookmark() {
    let script = Script::default()
        .list(&[], "", "5")
        .watch(vec![Ok(WatchEvent::Bookmark {
            resource_version: "20".into(),
        })])
        .watch(vec![Ok(WatchEvent::Added(cm("x", "21")))]);

    let items = take(&script, Config::default(), 4).await;
    assert_eq!(items[..2], [Ok(Event::Init), Ok(Event::InitDone)]);
    // Closed at once with no objects: reported, so that backoff applies.
    assert!(is_err(&items[2], "ended without events"), "{items:?}");
    assert_eq!(items[3], Ok(Event::Apply(cm("x", "21"))));
    assert_eq!(
        script.calls(),
        vec![list_call(None), watch_call("5"), watch_call("20")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_watch_closed_after_its_timeout_is_reopened_quietly() {
    let idle = stream::once(tokio::time::sleep(Duration::from_secs(300)))
        .filter_map(|()| async { None })
        .boxed();
    let script = Script::default()
        .list(&[], "", "5")
        .watch_stream(idle)
        .watch(vec![Ok(WatchEvent::Added(cm("x", "6")))]);

    let items = take(&script, Config::default(), 3).await;
    assert_eq!(
        items,
        vec![
            Ok(Event::Init),
            Ok(Event::InitDone),
            Ok(Event::Apply(cm("x", "6")))
        ]
    );
    assert_eq!(
        script.calls(),
        vec![list_call(None), watch_call("5"), watch_call("5")]
    );
}

#[tokio::test(start_paused = true)]
async fn expired_error_event_relists() {
    let script = Script::default()
        .list(&[cm("a", "3")], "", "10")
        .watch(vec![
            Ok(WatchEvent::Added(cm("b", "11"))),
            Ok(WatchEvent::Error(ApiError::expired(
                "too old resource version: 11 (40)",
            ))),
        ])
        .list(&[cm("b", "41")], "", "42");

    let items = take(&script, Config::default(), 8).await;
    assert_eq!(
        items[..5],
        [
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a", "3"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(cm("b", "11"))),
            Err("410 (Expired): too old resource version: 11 (40)".to_string()),
        ]
    );
    assert_eq!(
        items[5..],
        [
            Ok(Event::Init),
            Ok(Event::InitApply(cm("b", "41"))),
            Ok(Event::InitDone),
        ]
    );
    assert_eq!(
        script.calls(),
        vec![list_call(None), watch_call("10"), list_call(None)]
    );
}

#[tokio::test(start_paused = true)]
async fn expired_on_watch_start_relists() {
    let script = Script::default()
        .list(&[], "", "10")
        .watch_err(expired())
        .list(&[], "", "50")
        .watch(vec![Ok(WatchEvent::Added(cm("a", "51")))]);

    let items = take(&script, Config::default(), 6).await;
    assert!(is_err(&items[2], "Expired"), "{items:?}");
    assert_eq!(
        items[3..],
        [
            Ok(Event::Init),
            Ok(Event::InitDone),
            Ok(Event::Apply(cm("a", "51"))),
        ]
    );
    assert_eq!(
        script.calls(),
        vec![
            list_call(None),
            watch_call("10"),
            list_call(None),
            watch_call("50")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn other_watch_start_errors_retry_the_watch_without_listing() {
    let script = Script::default()
        .list(&[], "", "10")
        .watch_err(unavailable())
        .watch(vec![Ok(WatchEvent::Added(cm("a", "11")))]);

    let items = take(&script, Config::default(), 4).await;
    assert!(is_err(&items[2], "connection reset"), "{items:?}");
    assert_eq!(items[3], Ok(Event::Apply(cm("a", "11"))));
    assert_eq!(
        script.calls(),
        vec![list_call(None), watch_call("10"), watch_call("10")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_broken_stream_is_reopened_from_the_last_revision() {
    let script = Script::default()
        .list(&[], "", "10")
        .watch(vec![
            Ok(WatchEvent::Added(cm("a", "12"))),
            Err(unavailable()),
            // Never read: the stream is dropped after the failure.
            Ok(WatchEvent::Added(cm("lost", "13"))),
        ])
        .watch(vec![Ok(WatchEvent::Modified(cm("a", "14")))]);

    let items = take(&script, Config::default(), 5).await;
    assert_eq!(items[2], Ok(Event::Apply(cm("a", "12"))));
    assert!(is_err(&items[3], "connection reset"), "{items:?}");
    assert_eq!(items[4], Ok(Event::Apply(cm("a", "14"))));
    assert_eq!(
        script.calls(),
        vec![list_call(None), watch_call("10"), watch_call("12")]
    );
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_event_is_reported_and_the_watch_reads_on() {
    let bad = serde_json::from_str::<ConfigMap>("{").expect_err("bad json");
    let script = Script::default().list(&[], "", "10").watch(vec![
        Err(Error::Decode(bad)),
        Ok(WatchEvent::Added(cm("a", "11"))),
    ]);

    let items = take(&script, Config::default(), 4).await;
    assert!(is_err(&items[2], "decoding"), "{items:?}");
    assert_eq!(items[3], Ok(Event::Apply(cm("a", "11"))));
    assert_eq!(script.calls(), vec![list_call(None), watch_call("10")]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_page_is_retried_and_an_expired_token_restarts_the_list() {
    let script = Script::default()
        .list(&[cm("a", "1")], "t1", "10")
        .list_err(unavailable())
        .list_err(expired())
        .list(&[cm("a", "1"), cm("b", "2")], "", "20");

    let items = take(&script, Config::default(), 8).await;
    assert_eq!(
        items[..2],
        [Ok(Event::Init), Ok(Event::InitApply(cm("a", "1")))]
    );
    assert!(is_err(&items[2], "connection reset"), "{items:?}");
    assert!(is_err(&items[3], "Expired"), "{items:?}");
    assert_eq!(
        items[4..],
        [
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a", "1"))),
            Ok(Event::InitApply(cm("b", "2"))),
            Ok(Event::InitDone),
        ]
    );
    assert_eq!(
        script.calls(),
        vec![
            list_call(None),
            list_call(Some("t1")),
            list_call(Some("t1")),
            list_call(None),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn config_reaches_the_list_calls() {
    let script = Script::default().list(&[], "", "1");
    let _ = take(&script, Config::default().page_size(0).labels("app=web"), 2).await;
    assert_eq!(
        script.calls()[0],
        Call::List {
            continue_token: None,
            limit: None
        }
    );
    let params = Config::default()
        .fields("spec.nodeName=n1")
        .timeout(60)
        .watch_params();
    assert_eq!(params.field_selector.as_deref(), Some("spec.nodeName=n1"));
    assert_eq!(params.timeout_seconds, Some(60));
    assert!(params.allow_bookmarks);
    assert!(
        !Config::default()
            .disable_bookmarks()
            .watch_params()
            .allow_bookmarks
    );
}

#[test]
fn event_helpers_hand_out_objects() {
    assert_eq!(Event::Apply(1).into_iter_applied().collect::<Vec<_>>(), [1]);
    assert_eq!(
        Event::InitApply(2).into_iter_applied().collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(Event::Delete(3).into_iter_applied().count(), 0);
    assert_eq!(
        Event::Delete(3).into_iter_touched().collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(Event::<i32>::Init.into_iter_touched().count(), 0);
    assert_eq!(Event::<i32>::InitDone.object(), None);
    assert_eq!(Event::Apply(4).map(|n| n * 10), Event::Apply(40));
}

#[tokio::test]
async fn a_watcher_without_a_server_keeps_reporting_errors() {
    let client = Client::connect_lazy("http://127.0.0.1:1").expect("client");
    let api: Api<ConfigMap> = Api::all(client);
    let items: Vec<_> = watcher(api, Config::default()).take(3).collect().await;
    assert!(matches!(items[0], Ok(Event::Init)));
    for item in &items[1..] {
        let err = item.as_ref().expect_err("nothing listens on port 1");
        assert_eq!(err.reason(), Some(Reason::ServiceUnavailable), "{err}");
    }
}
