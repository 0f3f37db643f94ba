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
    if is_canonical(&raw) == Some(true) {
        return Ok(raw);
    }
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

/// Whether `bytes` (one MessagePack value) is already canonical: it has no map (which might need
/// sorting) and no NaN (which might need unifying). `None` if it is not well-formed. Lets scalars,
/// strings and sequences of them skip the decode and re-encode.
fn is_canonical(bytes: &[u8]) -> Option<bool> {
    let mut rest = bytes;
    let ok = scan(&mut rest)?;
    Some(ok && rest.is_empty())
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn be(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
}

/// Skips one value; `Some(false)` as soon as something needs normalizing.
fn scan(rest: &mut &[u8]) -> Option<bool> {
    let tag = *take(rest, 1)?.first()?;
    let skip = |rest: &mut &[u8], n: usize| take(rest, n).map(|_| true);
    match tag {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some(true),
        0x80..=0x8f | 0xde | 0xdf => Some(false),
        0x90..=0x9f => scan_items(rest, usize::from(tag & 0x0f)),
        0xdc => {
            let n = be(take(rest, 2)?);
            scan_items(rest, n)
        }
        0xdd => {
            let n = be(take(rest, 4)?);
            scan_items(rest, n)
        }
        0xa0..=0xbf => skip(rest, usize::from(tag & 0x1f)),
        0xc4 | 0xd9 => {
            let n = be(take(rest, 1)?);
            skip(rest, n)
        }
        0xc5 | 0xda => {
            let n = be(take(rest, 2)?);
            skip(rest, n)
        }
        0xc6 | 0xdb => {
            let n = be(take(rest, 4)?);
            skip(rest, n)
        }
        0xc7 => {
            let n = be(take(rest, 1)?);
            skip(rest, n + 1)
        }
        0xc8 => {
            let n = be(take(rest, 2)?);
            skip(rest, n + 1)
        }
        0xc9 => {
            let n = be(take(rest, 4)?);
            skip(rest, n + 1)
        }
        0xca => Some(!f32::from_be_bytes(take(rest, 4)?.try_into().ok()?).is_nan()),
        0xcb => Some(!f64::from_be_bytes(take(rest, 8)?.try_into().ok()?).is_nan()),
        0xcc | 0xd0 => skip(rest, 1),
        0xcd | 0xd1 => skip(rest, 2),
        0xce | 0xd2 => skip(rest, 4),
        0xcf | 0xd3 => skip(rest, 8),
        0xd4 => skip(rest, 2),
        0xd5 => skip(rest, 3),
        0xd6 => skip(rest, 5),
        0xd7 => skip(rest, 9),
        0xd8 => skip(rest, 17),
        _ => None,
    }
}

fn scan_items(rest: &mut &[u8], n: usize) -> Option<bool> {
    for _ in 0..n {
        if !scan(rest)? {
            return Some(false);
        }
    }
    Some(true)
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
    fn the_fast_path_agrees_with_the_full_normalization() {
        #[derive(serde::Serialize)]
        struct S {
            b: Vec<f64>,
            a: (i64, String, Option<u8>, bool),
        }
        let values: Vec<Vec<u8>> = vec![
            rmp_serde::to_vec_named(&42i64).unwrap(),
            rmp_serde::to_vec_named(&-7i8).unwrap(),
            rmp_serde::to_vec_named(&u64::MAX).unwrap(),
            rmp_serde::to_vec_named(&"x".repeat(300)).unwrap(),
            rmp_serde::to_vec_named(&vec![1.5f64, -0.0, f64::INFINITY]).unwrap(),
            rmp_serde::to_vec_named(&(1u8, vec![2u16; 20], "s")).unwrap(),
            rmp_serde::to_vec_named(&serde_bytes_like()).unwrap(),
            rmp_serde::to_vec_named(&S {
                b: vec![1.0, f64::NAN],
                a: (1, "y".into(), None, true),
            })
            .unwrap(),
            rmp_serde::to_vec_named(&vec![f32::NAN]).unwrap(),
        ];
        for raw in values {
            let mut parsed = rmpv::decode::read_value(&mut raw.as_slice()).unwrap();
            normalize(&mut parsed);
            let full = encoded(&parsed);
            if is_canonical(&raw) == Some(true) {
                assert_eq!(
                    raw, full,
                    "the fast path kept bytes the full path would change"
                );
            }
        }
        assert_eq!(
            is_canonical(&rmp_serde::to_vec_named(&7u32).unwrap()),
            Some(true)
        );
        assert_eq!(
            is_canonical(&rmp_serde::to_vec_named(&vec![f64::NAN]).unwrap()),
            Some(false)
        );
        assert_eq!(is_canonical(&[0x92, 0x01]), None, "truncated");
    }

    fn serde_bytes_like() -> Vec<u8> {
        (0..=255u8).collect()
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
