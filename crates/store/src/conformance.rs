//! The conformance suite every [`Store`] backend must pass.
//!
//! Each check is an async function over a fresh store; [`conformance_tests!`] turns them into
//! `#[tokio::test]`s for one backend. Backends' own test files invoke the macro.
//!
//! [`conformance_tests!`]: crate::conformance_tests

use crate::{Error, EventKind, Revision, Store, ValueFn};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// How long a check waits for an expected watch event before it fails.
const WAIT: Duration = Duration::from_secs(10);

/// A value function that stores `text` as is.
pub fn value(text: &str) -> ValueFn {
    let bytes = Bytes::copy_from_slice(text.as_bytes());
    Box::new(move |_| bytes)
}

/// A value function that stores the write's revision, to check what the store passes it.
pub fn revision_value() -> ValueFn {
    Box::new(|rev| Bytes::from(rev.to_string()))
}

async fn next_event(stream: &mut crate::WatchStream, what: &str) -> crate::Event {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("waiting for {what}: watch failed: {e}"),
        Ok(None) => panic!("waiting for {what}: watch ended"),
        Err(_) => panic!("waiting for {what}: no event within {WAIT:?}"),
    }
}

/// Create, get and list; a second create of the same key fails and changes nothing.
pub async fn create_get_list(store: Arc<dyn Store>) {
    let a = store
        .create("/r/pods/ns/a", value("A"))
        .await
        .expect("create a");
    let b = store
        .create("/r/pods/ns/b", value("B"))
        .await
        .expect("create b");
    store
        .create("/r/pods/nsx/c", value("C"))
        .await
        .expect("create c");
    assert!(b.mod_revision > a.mod_revision, "revisions increase");
    assert_eq!(a.create_revision, a.mod_revision);
    let got = store
        .get("/r/pods/ns/a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got, a);
    assert_eq!(&got.value[..], b"A");
    let before = store.revision();
    let err = store.create("/r/pods/ns/a", value("A2")).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "got {err:?}");
    assert_eq!(
        store.revision(),
        before,
        "a failed create takes no revision"
    );
    let (list, rev) = store.list("/r/pods/ns/").await.expect("list");
    let keys: Vec<_> = list.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        ["/r/pods/ns/a", "/r/pods/ns/b"],
        "prefix ns/ excludes nsx/"
    );
    assert_eq!(rev, before);
    assert_eq!(store.get("/r/pods/ns/zz").await.expect("get"), None);
}

/// The value function is called with the write's own revision.
pub async fn value_sees_its_revision(store: Arc<dyn Store>) {
    let rec = store
        .create("/r/x/a", revision_value())
        .await
        .expect("create");
    assert_eq!(rec.value, Bytes::from(rec.mod_revision.to_string()));
    let rec2 = store
        .update("/r/x/a", None, revision_value())
        .await
        .expect("update");
    assert_eq!(rec2.value, Bytes::from(rec2.mod_revision.to_string()));
    let stored = store.get("/r/x/a").await.expect("get").expect("present");
    assert_eq!(stored, rec2);
}

/// Updates compare-and-swap on the revision; update of a missing key fails.
pub async fn update_compare_and_swap(store: Arc<dyn Store>) {
    let first = store
        .create("/r/cm/ns/a", value("1"))
        .await
        .expect("create");
    let second = store
        .update("/r/cm/ns/a", Some(first.mod_revision), value("2"))
        .await
        .expect("update at current revision");
    assert_eq!(second.create_revision, first.create_revision);
    assert!(second.mod_revision > first.mod_revision);
    let err = store
        .update("/r/cm/ns/a", Some(first.mod_revision), value("3"))
        .await
        .unwrap_err();
    match err {
        Error::Conflict {
            expected, actual, ..
        } => {
            assert_eq!(expected, first.mod_revision);
            assert_eq!(actual, second.mod_revision);
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    let now = store
        .get("/r/cm/ns/a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(&now.value[..], b"2", "a conflicting update changes nothing");
    let err = store
        .update("/r/cm/ns/zz", None, value("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "got {err:?}");
    store
        .update("/r/cm/ns/a", None, value("4"))
        .await
        .expect("unconditional update");
}

/// Delete returns the last value, honours the precondition, and frees the key.
pub async fn delete(store: Arc<dyn Store>) {
    let rec = store.create("/r/s/a", value("v")).await.expect("create");
    let err = store
        .delete("/r/s/a", Some(rec.mod_revision + 100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "got {err:?}");
    let gone = store
        .delete("/r/s/a", Some(rec.mod_revision))
        .await
        .expect("delete");
    assert_eq!(&gone.value[..], b"v");
    assert!(gone.mod_revision > rec.mod_revision);
    assert_eq!(store.revision(), gone.mod_revision);
    assert_eq!(store.get("/r/s/a").await.expect("get"), None);
    let err = store.delete("/r/s/a", None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "got {err:?}");
    let again = store.create("/r/s/a", value("w")).await.expect("re-create");
    assert!(again.create_revision > gone.mod_revision);
}

/// Many concurrent writers: every write gets its own revision, none is lost.
pub async fn concurrent_writes(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for t in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..25 {
                let rec = store
                    .create(&format!("/r/c/{t}/{i}"), value("x"))
                    .await
                    .expect("create");
                revs.push(rec.mod_revision);
            }
            revs
        }));
    }
    let mut all: Vec<Revision> = Vec::new();
    for task in tasks {
        let revs = task.await.expect("task");
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "per-writer order");
        all.extend(revs);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 32 * 25, "every write has a distinct revision");
    let (list, _) = store.list("/r/c/").await.expect("list");
    assert_eq!(list.len(), 32 * 25);
    assert_eq!(store.revision(), *all.last().expect("some"));
}

/// A watch from a past revision replays exactly the later events under the prefix, then
/// delivers live ones, in revision order.
pub async fn watch_replays_then_goes_live(store: Arc<dyn Store>) {
    let a = store.create("/r/w/ns/a", value("1")).await.expect("create");
    store
        .create("/r/other/b", value("x"))
        .await
        .expect("create");
    let a2 = store
        .update("/r/w/ns/a", None, value("2"))
        .await
        .expect("update");
    let d = store.delete("/r/w/ns/a", None).await.expect("delete");
    let mut stream = store.watch("/r/w/", a.mod_revision).expect("watch");
    let e1 = next_event(&mut stream, "replayed update").await;
    assert_eq!((e1.kind, e1.revision), (EventKind::Update, a2.mod_revision));
    assert_eq!(&e1.value[..], b"2");
    let e2 = next_event(&mut stream, "replayed delete").await;
    assert_eq!((e2.kind, e2.revision), (EventKind::Delete, d.mod_revision));
    assert_eq!(&e2.value[..], b"2", "a delete event carries the last value");
    let live = store.create("/r/w/ns/c", value("3")).await.expect("create");
    store
        .create("/r/other/d", value("x"))
        .await
        .expect("create");
    let e3 = next_event(&mut stream, "live create").await;
    assert_eq!(
        (e3.kind, e3.revision),
        (EventKind::Create, live.mod_revision)
    );
    assert_eq!(e3.key, "/r/w/ns/c");
}

/// Writes racing with the start of a watch are seen exactly once each, in order.
pub async fn watch_has_no_gap_under_writes(store: Arc<dyn Store>) {
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .create(&format!("/r/g/{i}"), value("x"))
                    .await
                    .expect("create");
            }
        })
    };
    // Start watching somewhere in the middle of the writes.
    while store.revision() < 50 {
        tokio::task::yield_now().await;
    }
    let mut stream = store.watch("/r/g/", 0).expect("watch");
    let mut seen = Vec::new();
    while seen.len() < 200 {
        let ev = next_event(&mut stream, &format!("event {}", seen.len() + 1)).await;
        seen.push(ev.revision);
    }
    writer.await.expect("writer");
    let expected: Vec<Revision> = (1..=200).collect();
    assert_eq!(seen, expected, "each write exactly once, in revision order");
}

/// Compaction: a watch below the floor fails with Expired; at or above it replays; objects stay.
pub async fn compaction(store: Arc<dyn Store>) {
    for i in 0..20 {
        store
            .create(&format!("/r/k/{i}"), value("x"))
            .await
            .expect("create");
    }
    store.compact(10).await.expect("compact");
    assert_eq!(store.compacted(), 10);
    match store.watch("/r/k/", 5) {
        Err(Error::Expired {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (5, 10)),
        Err(e) => panic!("watch below floor: expected Expired, got {e}"),
        Ok(_) => panic!("watch below floor: expected Expired, got a stream"),
    }
    let mut stream = store.watch("/r/k/", 10).expect("watch at floor");
    let first = next_event(&mut stream, "first event after floor").await;
    assert_eq!(first.revision, 11);
    let (list, _) = store.list("/r/k/").await.expect("list");
    assert_eq!(list.len(), 20, "compaction keeps objects");
    store.compact(1_000).await.expect("compact past head");
    assert_eq!(
        store.compacted(),
        20,
        "floor is clamped to the current revision"
    );
    store.compact(3).await.expect("compact below floor");
    assert_eq!(store.compacted(), 20, "the floor never moves back");
}

/// Compaction of more than one batch (1,000 entries) runs while writers keep writing, and
/// neither loses anything.
pub async fn compaction_beside_writers(store: Arc<dyn Store>) {
    const WRITES: u64 = 3_000;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..WRITES {
                store
                    .create(&format!("/r/cw/{i}"), value("x"))
                    .await
                    .expect("create during compaction");
            }
        })
    };
    while store.revision() < 2_500 {
        tokio::task::yield_now().await;
    }
    let before = store.revision();
    store.compact(before).await.expect("compact");
    assert!(store.compacted() >= 2_500, "compacted past two batches");
    writer.await.expect("writer");
    let (list, rev) = store.list("/r/cw/").await.expect("list");
    assert_eq!(list.len() as u64, WRITES);
    assert_eq!(rev, WRITES);
    let floor = store.compacted();
    let mut stream = store.watch("/r/cw/", floor).expect("watch from floor");
    if floor < WRITES {
        let ev = next_event(&mut stream, "first event after floor").await;
        assert_eq!(ev.revision, floor + 1);
    }
}

/// Defines one `#[tokio::test]` per conformance check for a backend; `$make` is an
/// expression giving `(Arc<dyn Store>, guard)` where the guard keeps the backend's resources
/// (a temp dir) alive for the test.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            create_get_list,
            value_sees_its_revision,
            update_compare_and_swap,
            delete,
            concurrent_writes,
            watch_replays_then_goes_live,
            watch_has_no_gap_under_writes,
            compaction,
            compaction_beside_writers,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

/// The model of [`model_check`]: key → (value, mod revision).
type Model = std::collections::BTreeMap<String, (String, Revision)>;

/// One step of [`model_check`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Create key number `0`.
    Create(u8),
    /// Update key number `0`, with the model's current revision as precondition if `1`, or a
    /// stale one if `2` is also set.
    Update(u8, bool, bool),
    /// Delete key number `0`.
    Delete(u8),
    /// Compact to the current revision minus `0`.
    Compact(u8),
}

/// Runs `ops` against `store` and a model: every result, every revision, the final list, and
/// a replay of the change log from the compaction floor applied to the state at the floor,
/// must agree. Revisions must increase by exactly one per successful write.
pub async fn model_check(store: Arc<dyn Store>, ops: Vec<Op>) {
    let mut model = Model::new();
    let mut revision: Revision = store.revision();
    let mut history: Vec<(Revision, Model)> = vec![(revision, model.clone())];
    for (step, op) in ops.into_iter().enumerate() {
        let text = format!("v{step}");
        match op {
            Op::Create(k) => {
                let key = format!("/m/{k}");
                let result = store.create(&key, value(&text)).await;
                if let std::collections::btree_map::Entry::Vacant(slot) = model.entry(key) {
                    let rec = result.expect("create of an absent key");
                    revision += 1;
                    assert_eq!(rec.mod_revision, revision, "step {step}: next revision");
                    slot.insert((text, revision));
                } else {
                    assert!(
                        matches!(result, Err(Error::AlreadyExists { .. })),
                        "step {step}: {result:?}"
                    );
                }
            }
            Op::Update(k, conditional, stale) => {
                let key = format!("/m/{k}");
                let current = model.get(&key).map(|(_, r)| *r);
                let expected = match (conditional, current) {
                    (true, Some(r)) if stale => Some(r.saturating_sub(1)),
                    (true, Some(r)) => Some(r),
                    (true, None) => Some(1),
                    (false, _) => None,
                };
                let result = store.update(&key, expected, value(&text)).await;
                match current {
                    None => assert!(
                        matches!(result, Err(Error::NotFound { .. })),
                        "step {step}: {result:?}"
                    ),
                    Some(r) if expected.is_some_and(|e| e != r) => {
                        assert!(
                            matches!(result, Err(Error::Conflict { .. })),
                            "step {step}: {result:?}"
                        )
                    }
                    Some(_) => {
                        let rec = result.expect("update");
                        revision += 1;
                        assert_eq!(rec.mod_revision, revision, "step {step}: next revision");
                        model.insert(key, (text, revision));
                    }
                }
            }
            Op::Delete(k) => {
                let key = format!("/m/{k}");
                let result = store.delete(&key, None).await;
                if model.remove(&key).is_some() {
                    revision += 1;
                    assert_eq!(
                        result.expect("delete").mod_revision,
                        revision,
                        "step {step}"
                    );
                } else {
                    assert!(
                        matches!(result, Err(Error::NotFound { .. })),
                        "step {step}: {result:?}"
                    );
                }
            }
            Op::Compact(back) => {
                store
                    .compact(revision.saturating_sub(u64::from(back)))
                    .await
                    .expect("compact");
            }
        }
        assert_eq!(store.revision(), revision, "step {step}: store revision");
        history.push((revision, model.clone()));
    }
    let (list, rev) = store.list("/m/").await.expect("list");
    assert_eq!(rev, revision);
    let listed: Model = list
        .into_iter()
        .map(|r| {
            let text = String::from_utf8_lossy(&r.value).into_owned();
            (r.key, (text, r.mod_revision))
        })
        .collect();
    assert_eq!(listed, model, "list equals the model");

    // Replay: the state at the floor plus the events after it equals the final state.
    let floor = store.compacted();
    let mut state = history
        .iter()
        .rev()
        .find(|(r, _)| *r <= floor)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    let mut stream = store.watch("/m/", floor).expect("watch from the floor");
    let mut last = floor;
    while last < revision {
        let ev = next_event(&mut stream, "replayed event").await;
        assert!(ev.revision > last, "replay in revision order");
        last = ev.revision;
        match ev.kind {
            EventKind::Delete => {
                state.remove(&ev.key);
            }
            _ => {
                let text = String::from_utf8_lossy(&ev.value).into_owned();
                state.insert(ev.key, (text, ev.revision));
            }
        }
    }
    assert_eq!(state, model, "replay from the floor equals the state");
}
