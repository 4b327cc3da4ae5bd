//! The pod-template-hash: the short, name-safe hash of a Deployment's pod template that
//! names its ReplicaSets (`web-7d4b9c8f6`) and keeps their selectors apart.
//!
//! Upstream's `controller.ComputeHash` runs FNV-32a over a dump of the Go struct, adds the
//! Deployment's `collisionCount` (so a collision can be resolved by bumping it) and writes the
//! decimal value with `rand.SafeEncodeString`, which maps every digit to a consonant or a digit
//! that cannot spell words. rkube hashes the template's JSON instead of the Go dump (the exact
//! bytes cannot be reproduced outside Go and nothing depends on them); the rest is the same, so
//! names have upstream's alphabet and length.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label carrying the hash on ReplicaSets, their selectors and their pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Upstream's `rand.SafeEncodeString` alphabet: no vowels, no confusable characters.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const FNV32_OFFSET: u32 = 2_166_136_261;
const FNV32_PRIME: u32 = 16_777_619;

/// An FNV-1a 32-bit hasher (Go's `hash/fnv.New32a`).
#[derive(Debug, Clone, Copy)]
pub struct Fnv32a(u32);

impl Default for Fnv32a {
    fn default() -> Self {
        Fnv32a(FNV32_OFFSET)
    }
}

impl Fnv32a {
    /// Mixes `bytes` in.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(FNV32_PRIME);
        }
    }

    /// The hash so far.
    pub fn sum32(&self) -> u32 {
        self.0
    }
}

/// Maps every byte of `s` into the safe alphabet (upstream's `rand.SafeEncodeString`).
pub fn safe_encode_string(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The hash of `template` with `collision_count` mixed in, as upstream's `ComputeHash`:
/// FNV-32a, the count as eight little-endian bytes, the decimal value safely encoded.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hasher = Fnv32a::default();
    // Serializing a k8s-openapi value cannot fail: every map key is a string.
    hasher.write(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&count.to_le_bytes());
        hasher.write(&bytes);
    }
    safe_encode_string(&hasher.sum32().to_string())
}

/// Whether two pod templates are equal but for the pod-template-hash label (upstream's
/// `EqualIgnoreHash`); an empty label or annotation map equals an absent one.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    fn normalized(t: &PodTemplateSpec) -> PodTemplateSpec {
        let mut t = t.clone();
        if let Some(meta) = t.metadata.as_mut() {
            if let Some(labels) = meta.labels.as_mut() {
                labels.remove(POD_TEMPLATE_HASH_LABEL);
            }
            meta.labels = meta.labels.take().filter(|l| !l.is_empty());
            meta.annotations = meta.annotations.take().filter(|a| !a.is_empty());
        }
        if t.metadata
            .as_ref()
            .is_some_and(|m| *m == Default::default())
        {
            t.metadata = None;
        }
        t
    }
    normalized(a) == normalized(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn fnv(s: &str) -> u32 {
        let mut h = Fnv32a::default();
        h.write(s.as_bytes());
        h.sum32()
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv(""), 0x811c_9dc5);
        assert_eq!(fnv("a"), 0xe40c_292c);
        assert_eq!(fnv("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_maps_digits_like_upstream() {
        assert_eq!(safe_encode_string("0123456789"), "456789bcdf");
        assert_eq!(safe_encode_string(""), "");
    }

    #[test]
    fn hashes_are_stable_name_safe_and_move_with_template_and_collisions() {
        let v1 = template("registry.local/app:v1");
        let h = compute_hash(&v1, None);
        assert_eq!(h, compute_hash(&v1.clone(), None), "deterministic");
        assert!((1..=10).contains(&h.len()), "{h}");
        assert!(h.chars().all(|c| "456789bcdf".contains(c)), "{h}");
        assert_ne!(h, compute_hash(&template("registry.local/app:v2"), None));
        let bumped = compute_hash(&v1, Some(1));
        assert_ne!(h, bumped, "a collision count changes the hash");
        assert_ne!(bumped, compute_hash(&v1, Some(2)));
        assert_ne!(
            compute_hash(&v1, Some(0)),
            h,
            "a zero count is still mixed in, as upstream"
        );
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let a = template("registry.local/app:v1");
        let mut b = a.clone();
        b.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), "5d4b9c8f6".into());
        assert!(equal_ignore_hash(&a, &b));
        assert!(!equal_ignore_hash(&a, &template("registry.local/app:v2")));

        let mut bare = a.clone();
        bare.metadata = None;
        let mut empty = a.clone();
        empty.metadata = Some(ObjectMeta {
            labels: Some(BTreeMap::new()),
            annotations: Some(BTreeMap::new()),
            ..Default::default()
        });
        assert!(
            equal_ignore_hash(&bare, &empty),
            "empty maps equal absent ones"
        );
        assert!(!equal_ignore_hash(&a, &bare));
    }
}
