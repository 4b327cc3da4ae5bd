//! Durability: every write acknowledged before a SIGKILL is there after a restart, and
//! resourceVersions keep increasing.

use rkube_rpc::ResourcesClient;
use rkube_rpc::v1::{self, ResourceRef};
use rkube_testing::ApiserverProcess;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

const CLIENTS: usize = 8;
/// Writes acknowledged (across all clients) before the kill.
const KILL_AFTER: usize = 600;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rkube-apiserver"))
}

fn cms() -> Option<ResourceRef> {
    Some(ResourceRef::new("", "v1", "configmaps", "default"))
}

/// The last acknowledged state of each object a client wrote: (generation of data, rv).
type Acked = HashMap<String, (u64, u64)>;

async fn writer(
    mut c: ResourcesClient<tonic::transport::Channel>,
    id: usize,
    acked_total: Arc<AtomicUsize>,
    enough: Arc<Notify>,
) -> Acked {
    let mut acked = Acked::new();
    for i in 0.. {
        let name = format!("w{id}-{i}");
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": "0"}});
        let Ok(resp) = c
            .create(v1::CreateRequest {
                resource: cms(),
                object: serde_json::to_vec(&body).expect("json").into(),
                ..Default::default()
            })
            .await
        else {
            return acked;
        };
        let created: Value = serde_json::from_slice(&resp.into_inner().object).expect("json");
        let rv: u64 = created["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .parse()
            .expect("numeric");
        acked.insert(name.clone(), (0, rv));
        if acked_total.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
            enough.notify_one();
        }
        let mut updated = created.clone();
        updated["data"]["v"] = "1".into();
        let Ok(resp) = c
            .update(v1::UpdateRequest {
                resource: cms(),
                name: name.clone(),
                object: serde_json::to_vec(&updated).expect("json").into(),
                ..Default::default()
            })
            .await
        else {
            return acked;
        };
        let after: Value = serde_json::from_slice(&resp.into_inner().object).expect("json");
        let rv2: u64 = after["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .parse()
            .expect("numeric");
        assert!(rv2 > rv, "update rv {rv2} after create rv {rv}");
        acked.insert(name, (1, rv2));
        if acked_total.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
            enough.notify_one();
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ApiserverProcess::spawn(binary(), dir.path(), &[])
        .await
        .expect("start apiserver");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(server.grpc().await.expect("client"));
    }

    let total = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let writers: Vec<_> = (0..CLIENTS)
        .zip(clients)
        .map(|(id, c)| tokio::spawn(writer(c, id, total.clone(), enough.clone())))
        .collect();
    enough.notified().await;
    server.kill().await.expect("SIGKILL");

    let mut acked = Acked::new();
    for w in writers {
        acked.extend(w.await.expect("writer task"));
    }
    let acked_writes = total.load(Ordering::SeqCst);
    assert!(
        acked_writes >= KILL_AFTER,
        "{acked_writes} writes acknowledged"
    );
    let max_acked_rv = acked
        .values()
        .map(|(_, rv)| *rv)
        .max()
        .expect("some writes");

    let server = ApiserverProcess::spawn(binary(), dir.path(), &[])
        .await
        .expect("restart apiserver");
    let mut c = server.grpc().await.expect("connect");
    let list = c
        .list(v1::ListRequest {
            resource: cms(),
            options: None,
        })
        .await
        .expect("list after restart")
        .into_inner();
    let stored: HashMap<String, Value> = list
        .items
        .iter()
        .map(|b| {
            let v: Value = serde_json::from_slice(b).expect("json");
            (v["metadata"]["name"].as_str().expect("name").to_string(), v)
        })
        .collect();
    for (name, (version, rv)) in &acked {
        let obj = stored
            .get(name)
            .unwrap_or_else(|| panic!("acknowledged object {name} (rv {rv}) lost after SIGKILL"));
        let data: u64 = obj["data"]["v"]
            .as_str()
            .expect("data")
            .parse()
            .expect("numeric");
        let stored_rv: u64 = obj["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .parse()
            .expect("numeric");
        assert!(
            data >= *version && stored_rv >= *rv,
            "{name}: acknowledged v={version} rv={rv}, found v={data} rv={stored_rv}"
        );
    }

    let body =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-restart"}});
    let resp = c
        .create(v1::CreateRequest {
            resource: cms(),
            object: serde_json::to_vec(&body).expect("json").into(),
            ..Default::default()
        })
        .await
        .expect("create after restart")
        .into_inner();
    let created: Value = serde_json::from_slice(&resp.object).expect("json");
    let rv: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("numeric");
    let max_stored = stored
        .values()
        .map(|v| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .expect("rv")
                .parse::<u64>()
                .expect("numeric")
        })
        .max()
        .expect("objects");
    assert!(
        rv > max_stored && rv > max_acked_rv,
        "rv {rv} after restart must exceed {max_stored} and {max_acked_rv}"
    );
    let status = server.terminate().await.expect("SIGTERM");
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}
