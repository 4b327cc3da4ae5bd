//! YAML request bodies (`application/yaml`, server-side apply's `apply-patch+yaml`) as JSON,
//! with a budget: YAML aliases let a small document expand without bound (a "billion
//! laughs"), so the conversion counts what it builds and stops past a limit.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;

/// Bytes (of strings and keys) plus nodes a converted document may hold: four objects at the
/// size limit is more than any legitimate body expands to.
pub const EXPANSION_BUDGET: usize = 4 * rkube_rpc::MAX_OBJECT_BYTES;

/// Why a YAML body was refused.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Not YAML, or the document expands past [`EXPANSION_BUDGET`].
    #[error("{0}")]
    Invalid(#[from] serde_norway::Error),
}

/// Parses `body` as one YAML document into JSON, within [`EXPANSION_BUDGET`].
pub fn to_json(body: &[u8]) -> Result<Value, YamlError> {
    let budget = Cell::new(EXPANSION_BUDGET);
    let de = serde_norway::Deserializer::from_slice(body);
    Ok(Bounded { budget: &budget }.deserialize(de)?)
}

#[derive(Clone, Copy)]
struct Bounded<'a> {
    budget: &'a Cell<usize>,
}

impl Bounded<'_> {
    fn spend<E: serde::de::Error>(&self, amount: usize) -> Result<(), E> {
        match self.budget.get().checked_sub(amount.max(1)) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(
                "the YAML document expands past the size limit (aliases?)",
            )),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend(v.len())?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.spend(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        self.deserialize(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            self.spend(1)?;
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_ordinary_yaml() {
        let v = to_json(
            b"apiVersion: v1\nkind: ConfigMap\ndata:\n  a: \"1\"\n  b: [x, 2, true, null]\n",
        )
        .expect("valid");
        assert_eq!(v["kind"], "ConfigMap");
        assert_eq!(v["data"]["b"], serde_json::json!(["x", 2, true, null]));
    }

    #[test]
    fn an_alias_bomb_is_refused_not_expanded() {
        // A 100 KiB string aliased 1,000 times: 100 MiB if expanded, in a 110 KiB body
        // (few enough events that serde_norway's own repetition limit does not trigger).
        let mut doc = format!("big: &big \"{}\"\ncopies: [", "x".repeat(100 * 1024));
        doc.push_str(&vec!["*big"; 1000].join(", "));
        doc.push_str("]\n");
        let err = to_json(doc.as_bytes()).expect_err("bomb");
        assert!(err.to_string().contains("expands past"), "{err}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(to_json(b"a: [unclosed").is_err());
    }
}
