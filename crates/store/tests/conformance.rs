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
