//! The JSON patches the collector writes: dropping owner references, clearing
//! `blockOwnerDeletion`, removing a finalizer.
//!
//! Each patch first tests the object's `uid` and the list entry it touches, so it applies
//! only to the object and the list it was computed from; a concurrent change to anything
//! else (a pod's status, say) does not make it fail, unlike a resourceVersion precondition.
//! A failed test answers 422 and the caller reads the object again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

fn uid_test(meta: &ObjectMeta) -> Value {
    json!({"op": "test", "path": "/metadata/uid", "value": meta.uid.clone().unwrap_or_default()})
}

/// Removes the references to the owners with `uids`; `None` when there are none.
pub fn remove_references(meta: &ObjectMeta, uids: &[String]) -> Option<Value> {
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    let mut ops = vec![uid_test(meta)];
    // From the end, so earlier indexes stay valid.
    for (i, r) in refs.iter().enumerate().rev() {
        if uids.contains(&r.uid) {
            let path = format!("/metadata/ownerReferences/{i}");
            ops.push(json!({"op": "test", "path": format!("{path}/uid"), "value": r.uid}));
            ops.push(json!({"op": "remove", "path": path}));
        }
    }
    (ops.len() > 1).then_some(Value::Array(ops))
}

/// Sets `blockOwnerDeletion: false` on every reference that has it true; `None` when none
/// does.
pub fn unblock_references(meta: &ObjectMeta) -> Option<Value> {
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    let mut ops = vec![uid_test(meta)];
    for (i, r) in refs.iter().enumerate() {
        if r.block_owner_deletion == Some(true) {
            let path = format!("/metadata/ownerReferences/{i}");
            ops.push(json!({"op": "test", "path": format!("{path}/uid"), "value": r.uid}));
            ops.push(json!({"op": "replace", "path": format!("{path}/blockOwnerDeletion"), "value": false}));
        }
    }
    (ops.len() > 1).then_some(Value::Array(ops))
}

/// Removes `finalizer` from the object; `None` when it does not carry it.
pub fn remove_finalizer(meta: &ObjectMeta, finalizer: &str) -> Option<Value> {
    let finalizers = meta.finalizers.as_deref().unwrap_or_default();
    let mut ops = vec![uid_test(meta)];
    for (i, f) in finalizers.iter().enumerate().rev() {
        if f == finalizer {
            let path = format!("/metadata/finalizers/{i}");
            ops.push(json!({"op": "test", "path": path, "value": f}));
            ops.push(json!({"op": "remove", "path": path}));
        }
    }
    (ops.len() > 1).then_some(Value::Array(ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta() -> ObjectMeta {
        let owner = |uid: &str, block| OwnerReference {
            uid: uid.into(),
            kind: "ReplicaSet".into(),
            block_owner_deletion: Some(block),
            ..Default::default()
        };
        ObjectMeta {
            uid: Some("me".into()),
            owner_references: Some(vec![owner("a", true), owner("b", false), owner("c", true)]),
            finalizers: Some(vec!["x".into(), "orphan".into()]),
            ..Default::default()
        }
    }

    fn apply(meta: &ObjectMeta, patch: Value) -> ObjectMeta {
        let mut doc = json!({"metadata": meta});
        let patch: json_patch_lite::Patch = serde_json::from_value(patch).expect("patch");
        json_patch_lite::apply(&mut doc, &patch).expect("applies");
        serde_json::from_value(doc["metadata"].clone()).expect("metadata")
    }

    /// Just enough of RFC 6902 (test, remove, replace) to check the patches here.
    mod json_patch_lite {
        use serde_json::Value;

        pub type Patch = Vec<Value>;

        pub fn apply(doc: &mut Value, patch: &Patch) -> Result<(), String> {
            for op in patch {
                let path = op["path"].as_str().ok_or("no path")?;
                match op["op"].as_str() {
                    Some("test") => {
                        if doc.pointer(path) != Some(&op["value"]) {
                            return Err(format!("test failed at {path}"));
                        }
                    }
                    Some("replace") => {
                        *doc.pointer_mut(path).ok_or("no target")? = op["value"].clone();
                    }
                    Some("remove") => {
                        let (parent, last) = path.rsplit_once('/').ok_or("bad path")?;
                        let index: usize = last.parse().map_err(|_| "not an index")?;
                        doc.pointer_mut(parent)
                            .and_then(Value::as_array_mut)
                            .ok_or("no array")?
                            .remove(index);
                    }
                    other => return Err(format!("unsupported op {other:?}")),
                }
            }
            Ok(())
        }
    }

    #[test]
    fn removes_only_the_named_references() {
        let patched = apply(
            &meta(),
            remove_references(&meta(), &["a".into(), "c".into()]).unwrap(),
        );
        let left: Vec<_> = patched
            .owner_references
            .unwrap()
            .into_iter()
            .map(|r| r.uid)
            .collect();
        assert_eq!(left, ["b"]);
        assert!(remove_references(&meta(), &["zzz".into()]).is_none());
    }

    #[test]
    fn unblocks_every_blocking_reference() {
        let patched = apply(&meta(), unblock_references(&meta()).unwrap());
        assert!(
            patched
                .owner_references
                .unwrap()
                .iter()
                .all(|r| r.block_owner_deletion == Some(false))
        );
    }

    #[test]
    fn removes_a_finalizer_and_tests_the_uid() {
        let patch = remove_finalizer(&meta(), "orphan").unwrap();
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/metadata/uid", "value": "me"})
        );
        assert_eq!(apply(&meta(), patch).finalizers.unwrap(), ["x"]);
        assert!(remove_finalizer(&meta(), "foregroundDeletion").is_none());

        let mut other = meta();
        other.uid = Some("someone-else".into());
        let mut doc = json!({"metadata": other});
        let patch: json_patch_lite::Patch =
            serde_json::from_value(remove_finalizer(&meta(), "orphan").unwrap()).unwrap();
        assert!(
            json_patch_lite::apply(&mut doc, &patch).is_err(),
            "another object is left alone"
        );
    }
}
