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
///
/// The components of a cache key are short (names, digests, lengths): they are gathered in a
/// buffer and hashed in one pass, which costs a fraction of xxh3's streaming state (a 192-byte
/// secret copied in, an update per piece). Past [`HASH_BUFFER`] bytes (a large input value)
/// the hasher streams instead. Both give the same digest: xxh3's streaming form hashes exactly
/// what its one-shot form hashes over the concatenated bytes.
pub(crate) struct Hasher {
    buffer: Vec<u8>,
    stream: Option<Box<Xxh3>>,
}

/// Bytes gathered before a [`Hasher`] streams.
const HASH_BUFFER: usize = 1024;

impl Hasher {
    pub(crate) fn new(domain_tag: &str) -> Self {
        let mut h = Hasher {
            // Room for a cache key of a few inputs: growing the buffer (a reallocation and a
            // copy) costs more than the hash.
            buffer: Vec::with_capacity(256),
            stream: None,
        };
        h.put(domain_tag.as_bytes());
        h
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let len = (bytes.len() as u64).to_be_bytes();
        if self.stream.is_none() && self.buffer.len() + len.len() + bytes.len() <= HASH_BUFFER {
            self.buffer.extend_from_slice(&len);
            self.buffer.extend_from_slice(bytes);
            return;
        }
        let stream = self.stream.get_or_insert_with(|| {
            let mut stream = Box::new(Xxh3::new());
            stream.update(&self.buffer);
            stream
        });
        self.buffer.clear();
        stream.update(&len);
        stream.update(bytes);
    }

    pub(crate) fn finish(self) -> Digest {
        Digest(match self.stream {
            Some(stream) => stream.digest128(),
            None => xxhash_rust::xxh3::xxh3_128(&self.buffer),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`Hasher`] must equal: xxh3's streaming state fed every length and component.
    fn streamed(tag: &str, parts: &[Vec<u8>]) -> Digest {
        let mut h = Xxh3::new();
        for part in std::iter::once(tag.as_bytes()).chain(parts.iter().map(Vec::as_slice)) {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Digest(h.digest128())
    }

    #[test]
    fn the_buffered_hash_is_the_streamed_hash_at_every_size() {
        // Across xxh3's own thresholds (16, 128, 240 bytes), the buffer's bound, and past it in
        // one component or after many.
        let sizes = [
            0, 1, 7, 8, 15, 16, 17, 100, 128, 200, 240, 241, 500, 1000, 1024, 5000,
        ];
        for &size in &sizes {
            for count in [1, 2, 3, 40] {
                let parts: Vec<Vec<u8>> = (0..count)
                    .map(|i| (0..size).map(|b| (b * 31 + i * 7) as u8).collect())
                    .collect();
                let mut h = Hasher::new("cairn.test");
                for p in &parts {
                    h.put(p);
                }
                assert_eq!(
                    h.finish(),
                    streamed("cairn.test", &parts),
                    "{count} components of {size} bytes"
                );
            }
        }
    }
}
