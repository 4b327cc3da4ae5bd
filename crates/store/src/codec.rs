//! The byte layout of records and change-log entries in the sled backend.
//!
//! One sled tree holds everything, under one-byte prefixes, so that a write's object, log
//! entry and revision counter go to disk in one atomic batch:
//! - `o` + key → create revision (u64 BE), mod revision (u64 BE), value
//! - `l` + revision (u64 BE) → kind (u8), key length (u32 BE), key, value
//! - `m` + name → u64 BE (`revision`, `compacted`)

use crate::{Error, Event, EventKind, Record, Result, Revision};
use bytes::Bytes;

pub(crate) const OBJECT: u8 = b'o';
pub(crate) const LOG: u8 = b'l';
pub(crate) const META_REVISION: &[u8] = b"mrevision";
pub(crate) const META_COMPACTED: &[u8] = b"mcompacted";

pub(crate) fn object_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(OBJECT);
    k.extend_from_slice(key.as_bytes());
    k
}

pub(crate) fn log_key(revision: Revision) -> [u8; 9] {
    let mut k = [LOG; 9];
    k[1..].copy_from_slice(&revision.to_be_bytes());
    k
}

pub(crate) fn encode_object(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + value.len());
    v.extend_from_slice(&create.to_be_bytes());
    v.extend_from_slice(&modified.to_be_bytes());
    v.extend_from_slice(value);
    v
}

pub(crate) fn decode_object(key: &str, raw: &[u8]) -> Result<Record> {
    if raw.len() < 16 {
        return Err(Error::Corrupt(key.to_string()));
    }
    Ok(Record {
        key: key.to_string(),
        create_revision: u64_at(raw, 0),
        mod_revision: u64_at(raw, 8),
        value: Bytes::copy_from_slice(&raw[16..]),
    })
}

pub(crate) fn encode_event(kind: EventKind, key: &str, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + key.len() + value.len());
    v.push(match kind {
        EventKind::Create => 0,
        EventKind::Update => 1,
        EventKind::Delete => 2,
    });
    v.extend_from_slice(&(key.len() as u32).to_be_bytes());
    v.extend_from_slice(key.as_bytes());
    v.extend_from_slice(value);
    v
}

pub(crate) fn decode_event(revision: Revision, raw: &[u8]) -> Result<Event> {
    let corrupt = || Error::Corrupt(format!("log entry {revision}"));
    if raw.len() < 5 {
        return Err(corrupt());
    }
    let kind = match raw[0] {
        0 => EventKind::Create,
        1 => EventKind::Update,
        2 => EventKind::Delete,
        _ => return Err(corrupt()),
    };
    let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
    let key = raw.get(5..5 + len).ok_or_else(corrupt)?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt())?.to_string();
    Ok(Event {
        kind,
        revision,
        key,
        value: Bytes::copy_from_slice(&raw[5 + len..]),
    })
}

pub(crate) fn u64_at(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_be_bytes(b)
}

pub(crate) fn decode_u64(raw: Option<&[u8]>) -> u64 {
    match raw {
        Some(r) if r.len() == 8 => u64_at(r, 0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trip() {
        let raw = encode_event(EventKind::Update, "/registry/core/pods/a/b", b"{}");
        let ev = decode_event(7, &raw).expect("decodes");
        assert_eq!(ev.key, "/registry/core/pods/a/b");
        assert_eq!(ev.kind, EventKind::Update);
        assert_eq!(&ev.value[..], b"{}");
    }

    #[test]
    fn truncated_entries_are_corrupt_not_panics() {
        assert!(decode_event(1, &[1, 0, 0, 0, 9, b'a']).is_err());
        assert!(decode_object("k", &[0; 15]).is_err());
    }
}
