//! Digests: the 128-bit xxh3 digest every key, signature and input is identified by, and the
//! length-prefixed hashing that computes them. Below both the key layout (`keys.rs`) and the
//! catalog, so neither reaches into the other for it.

use serde::{Deserialize, Serialize};
use std::fmt;
use xxhash_rust::xxh3::Xxh3;

/// A 128-bit xxh3 digest, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub u128);

impl Digest {
    /// Big-endian bytes, the form stored in keys.
    pub fn to_bytes(&self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// From 16 big-endian bytes.
    pub fn from_slice(b: &[u8]) -> Option<Digest> {
        Some(Digest(u128::from_be_bytes(b.try_into().ok()?)))
    }

    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Option<Digest> {
        // Digits only: `from_str_radix` alone would take a leading `+`.
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u128::from_str_radix(s, 16).ok().map(Digest))?
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// 32 hex digits in human-readable formats (JSON), 16 raw bytes in binary ones (MessagePack):
/// stored records carry the compact form, APIs the readable one.
impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_bytes(&self.to_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest: 16 bytes or 32 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                Digest::from_hex(s).ok_or_else(|| E::custom("expected 32 hex digits"))
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Digest, E> {
                Digest::from_slice(b).ok_or_else(|| E::custom("expected 16 bytes"))
            }
        }
        // A visitor, not `String` or `Vec`: decoding a digest allocates nothing.
        if d.is_human_readable() {
            d.deserialize_str(Visitor)
        } else {
            d.deserialize_bytes(Visitor)
        }
    }
}

/// Incremental hashing of length-prefixed components: no two sequences of components hash the
/// same bytes, whatever the components contain.
pub(crate) struct Hasher(Xxh3);

impl Hasher {
    pub(crate) fn new(domain_tag: &str) -> Self {
        let mut h = Hasher(Xxh3::new());
        h.put(domain_tag.as_bytes());
        h
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    pub(crate) fn finish(self) -> Digest {
        Digest(self.0.digest128())
    }
}
