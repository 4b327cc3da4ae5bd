//! The store conformance suite, run against both backends, plus what only a disk can show.

use rkube_store::{MemoryStore, SledOptions, SledStore, Store};
use std::sync::Arc;

fn memory() -> (Arc<dyn Store>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

fn sled() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(&SledOptions::new(dir.path().join("db"))).expect("open sled");
    (Arc::new(store), dir)
}

mod memory_backend {
    rkube_store::conformance_tests!(super::memory());
}

mod sled_backend {
    rkube_store::conformance_tests!(super::sled());
}

/// Data, revision and compaction floor survive closing and reopening the database.
#[tokio::test]
async fn sled_reopen_keeps_state() {
    use rkube_store::conformance::value;
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = SledOptions::new(dir.path().join("db"));
    {
        let store = SledStore::open(&opts).expect("open");
        for i in 0..10 {
            store
                .create(&format!("/r/p/{i}"), value("v"))
                .await
                .expect("create");
        }
        store.delete("/r/p/3", None).await.expect("delete");
        store.compact(5).await.expect("compact");
    }
    let store = SledStore::open(&opts).expect("reopen");
    assert_eq!(store.revision(), 11);
    assert_eq!(store.compacted(), 5);
    let (list, _) = store.list("/r/p/").await.expect("list");
    assert_eq!(list.len(), 9);
    assert!(store.watch("/r/p/", 4).is_err(), "floor survives restart");
    let next = store.create("/r/p/new", value("v")).await.expect("create");
    assert_eq!(next.mod_revision, 12, "revisions continue after restart");
}

/// Values too large for a sled log segment go to blob files; they must read back after a
/// reopen like any other (and are fsynced by the flusher, see `disk_sync.rs`).
#[tokio::test]
async fn sled_large_values_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = SledOptions::new(dir.path().join("db"));
    let big = "b".repeat(1024 * 1024);
    {
        let store = SledStore::open(&opts).expect("open");
        store
            .create("/r/big/a", rkube_store::conformance::value(&big))
            .await
            .expect("create 1 MiB value");
    }
    let store = SledStore::open(&opts).expect("reopen");
    let rec = store.get("/r/big/a").await.expect("get").expect("present");
    assert_eq!(rec.value.len(), big.len());
    assert!(
        dir.path()
            .join("db")
            .join("blobs")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "a 1 MiB value is stored as a blob file"
    );
}

/// Group commit: concurrent writers share flushes, and every write is counted in one. A 5 ms
/// flush delay stands in for a slow disk, so the sharing does not depend on how fast this
/// machine's fsync is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_concurrent_writes_share_flushes() {
    use rkube_store::conformance::value;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = SledOptions::new(dir.path().join("db"));
    options.flush_delay = std::time::Duration::from_millis(5);
    let store = Arc::new(SledStore::open(&options).expect("open"));
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    store
                        .create(&format!("/r/gc/{t}/{i}"), value("x"))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let stats = store.flush_stats();
    assert_eq!(
        stats.writes,
        64 * 20,
        "every acknowledged write was flushed: {stats:?}"
    );
    // Each writer waits for its flush before its next write, so every flush after the first
    // carries the writes of (nearly) all 64 writers.
    assert!(
        stats.flushes <= stats.writes / 8,
        "64 concurrent writers should share flushes, got {stats:?}"
    );
}

mod model {
    use super::*;
    use proptest::prelude::*;
    use rkube_store::conformance::{Op, model_check};

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6).prop_map(Op::Create),
            4 => (0u8..6, any::<bool>(), any::<bool>()).prop_map(|(k, c, s)| Op::Update(k, c, s)),
            2 => (0u8..6).prop_map(Op::Delete),
            1 => (0u8..8).prop_map(Op::Compact),
        ]
    }

    fn run(make: impl Fn() -> (Arc<dyn Store>, Option<tempfile::TempDir>), ops: Vec<Op>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (store, _guard) = make();
            model_check(store, ops).await;
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn memory_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
            run(|| (memory().0, None), ops);
        }

        #[test]
        fn sled_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
            run(|| { let (s, d) = sled(); (s, Some(d)) }, ops);
        }
    }
}
