//! Canonical MessagePack: the bytes of an input value that go into its cache key.
//!
//! A value is serialized with `rmp-serde` (structs as maps with field names, so reordering a
//! struct's fields does not change the bytes), then normalized:
//! - map entries are sorted by the bytes of their encoded keys, so a `HashMap` gives the same
//!   bytes whatever its iteration order;
//! - every NaN becomes the one quiet NaN of its width, so NaNs with different payloads share a key.
//!
//! `0.0` and `-0.0` stay different (a task may tell them apart, e.g. by dividing by them): they
//! are different keys, which costs at most a cache miss and never gives a wrong hit. Integers are
//! encoded in their shortest form by value, so `5u8` and `5i64` encode alike; their *types*
//! differ in the task signature, which is part of the key too.

use crate::error::{Error, Result};
use rmpv::Value;
use serde::Serialize;

/// The canonical MessagePack bytes of `value`.
pub fn to_canonical_msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let raw = rmp_serde::to_vec_named(value).map_err(|e| Error::InvalidInput {
        what: "cache key input".into(),
        reason: format!("cannot be encoded as MessagePack: {e}"),
    })?;
    let mut parsed = rmpv::decode::read_value(&mut raw.as_slice()).map_err(|e| Error::Corrupt {
        what: "re-read of a freshly encoded input".into(),
        detail: e.to_string(),
    })?;
    normalize(&mut parsed);
    let mut out = Vec::with_capacity(raw.len());
    rmpv::encode::write_value(&mut out, &parsed).map_err(|e| Error::Corrupt {
        what: "canonical input".into(),
        detail: e.to_string(),
    })?;
    Ok(out)
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut buf, v);
    buf
}

fn normalize(v: &mut Value) {
    match v {
        Value::F32(f) if f.is_nan() => *f = f32::NAN,
        Value::F64(f) if f.is_nan() => *f = f64::NAN,
        Value::Array(items) => items.iter_mut().for_each(normalize),
        Value::Map(entries) => {
            for (k, val) in entries.iter_mut() {
                normalize(k);
                normalize(val);
            }
            entries.sort_by_cached_key(|(k, _)| encoded(k));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn maps_encode_alike_whatever_their_order() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..100 {
            a.insert(format!("k{i}"), i);
        }
        for i in (0..100).rev() {
            b.insert(format!("k{i}"), i);
        }
        let sorted: BTreeMap<_, _> = a.clone().into_iter().collect();
        let ca = to_canonical_msgpack(&a).unwrap();
        assert_eq!(ca, to_canonical_msgpack(&b).unwrap());
        assert_eq!(ca, to_canonical_msgpack(&sorted).unwrap());
    }

    #[test]
    fn nans_share_bytes_but_signed_zeros_do_not() {
        let odd_nan = f64::from_bits(0x7ff8_0000_0000_0001);
        assert_eq!(
            to_canonical_msgpack(&odd_nan).unwrap(),
            to_canonical_msgpack(&f64::NAN).unwrap()
        );
        assert_ne!(
            to_canonical_msgpack(&0.0f64).unwrap(),
            to_canonical_msgpack(&-0.0f64).unwrap()
        );
    }
}
