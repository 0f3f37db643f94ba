//! Cache keys: project, domain, task name, cache version, task signature and input values,
//! hashed with xxh3-128 over a length-prefixed encoding of every component.
//!
//! The key keeps each component's digest beside the final one, so a miss can be explained by
//! the component that differs from the nearest stored entry.

use super::canonical::to_canonical_msgpack;
use super::signature::{PreparedSignature, TaskSignature};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A type that supplies its own cache hash instead of its encoding (Flyte's `HashMethod`): a
/// file handle hashed by content, a data frame by a fingerprint.
pub trait CacheHash {
    /// Bytes that are equal exactly when the value should hit the same cache entry.
    fn cache_hash(&self) -> Vec<u8>;
}

/// The named input values of one call.
#[derive(Debug, Clone, Default)]
pub struct KeyInputs {
    values: BTreeMap<String, Digest>,
    ignored: BTreeSet<String>,
}

impl KeyInputs {
    /// No inputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds input `name` by its canonical MessagePack encoding.
    pub fn add<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<&mut Self> {
        let bytes = to_canonical_msgpack(value).map_err(|e| match e {
            Error::InvalidInput { reason, .. } => Error::InvalidInput {
                what: format!("input {name:?}"),
                reason,
            },
            other => other,
        })?;
        Ok(self.add_digest(name, "msgpack", &bytes))
    }

    /// Adds input `name` by the hash its type supplies.
    pub fn add_hashed<T: CacheHash + ?Sized>(&mut self, name: &str, value: &T) -> &mut Self {
        self.add_digest(name, "hash", &value.cache_hash())
    }

    fn add_digest(&mut self, name: &str, kind: &str, bytes: &[u8]) -> &mut Self {
        let mut h = Hasher::new("cairn.input.v1");
        h.put(kind.as_bytes());
        h.put(bytes);
        self.values.insert(name.to_string(), h.finish());
        self
    }

    /// Leaves input `name` out of the key (Flyte's `cache_ignore_input_vars`).
    pub fn ignore(&mut self, name: &str) -> &mut Self {
        self.ignored.insert(name.to_string());
        self
    }
}

/// Everything that identifies one cached output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// Project: entries are never shared across projects.
    pub project: String,
    /// Domain (development, staging, production…): never shared across domains.
    pub domain: String,
    /// Task name.
    pub task: String,
    /// Cache version; bumping it invalidates.
    pub version: String,
    /// Digest of the task signature.
    pub signature: Digest,
    /// Digest of each input that is part of the key, sorted by name.
    pub inputs: Vec<(String, Digest)>,
    /// The key: digest of all the above (and of the journal slot, for journal keys).
    pub digest: Digest,
    /// Set for the journal key of an uncached call inside a durable run: the entry keeps the
    /// call's outcome for replays of that run only, and never appears in cache listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalSlot>,
}

/// Where a journal entry belongs: which run, and which occurrence of its call (the `n`-th call
/// of the same task with the same inputs in that run, counted from 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JournalSlot {
    /// The run.
    pub run: String,
    /// The occurrence.
    pub occurrence: u32,
}

fn check_name(field: &str, value: &str) -> Result<()> {
    crate::names::check(field, value)
}

impl CacheKey {
    /// The key of a call of the task with `signature`, at `version`, in `project`/`domain`.
    pub fn new(
        project: &str,
        domain: &str,
        signature: &TaskSignature,
        version: &str,
        inputs: &KeyInputs,
    ) -> Result<CacheKey> {
        Self::prepared(project, domain, &signature.prepare(), version, inputs)
    }

    /// [`CacheKey::new`] with the signature already hashed.
    pub fn prepared(
        project: &str,
        domain: &str,
        signature: &PreparedSignature,
        version: &str,
        inputs: &KeyInputs,
    ) -> Result<CacheKey> {
        check_name("project", project)?;
        check_name("domain", domain)?;
        check_name("task name", &signature.name)?;
        check_name("cache version", version)?;
        // Both sides are sorted sets already: checked without building another.
        let declared = &signature.inputs;
        for name in inputs.values.keys().chain(inputs.ignored.iter()) {
            if !declared.contains(name) {
                return Err(Error::InvalidInput {
                    what: format!("input {name:?}"),
                    reason: format!("task {:?} has no such input", signature.name),
                });
            }
        }
        for name in declared {
            if !inputs.values.contains_key(name) && !inputs.ignored.contains(name) {
                return Err(Error::InvalidInput {
                    what: format!("input {name:?}"),
                    reason: format!("missing in a call of task {:?}", signature.name),
                });
            }
        }
        let sig = signature.digest;
        let kept: Vec<(String, Digest)> = inputs
            .values
            .iter()
            .filter(|(n, _)| !inputs.ignored.contains(*n))
            .map(|(n, d)| (n.clone(), *d))
            .collect();
        let mut h = Hasher::new("cairn.cache-key.v1");
        h.put(project.as_bytes());
        h.put(domain.as_bytes());
        h.put(signature.name.as_bytes());
        h.put(version.as_bytes());
        h.put(&sig.to_bytes());
        h.put(&(kept.len() as u64).to_be_bytes());
        for (name, d) in &kept {
            h.put(name.as_bytes());
            h.put(&d.to_bytes());
        }
        Ok(CacheKey {
            project: project.to_string(),
            domain: domain.to_string(),
            task: signature.name.clone(),
            version: version.to_string(),
            signature: sig,
            inputs: kept,
            digest: h.finish(),
            journal: None,
        })
    }

    /// The journal key of the `occurrence`-th call (from 0) with this key's task and inputs in
    /// run `run`: deterministic whatever order concurrent calls arrive in, and distinct from
    /// every cache key and from every other run's.
    pub fn journal(&self, run: &str, occurrence: u32) -> CacheKey {
        let mut h = Hasher::new("cairn.journal.v1");
        h.put(run.as_bytes());
        h.put(&self.digest.to_bytes());
        h.put(&occurrence.to_be_bytes());
        CacheKey {
            digest: h.finish(),
            journal: Some(JournalSlot {
                run: run.to_string(),
                occurrence,
            }),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::signature::TypeDesc;
    use super::*;
    use proptest::prelude::*;
    use schemars::JsonSchema;
    use std::collections::HashMap;

    #[derive(Serialize, JsonSchema)]
    struct PointV1 {
        x: i64,
        y: i64,
    }

    mod v2 {
        use super::*;
        /// Same name, one more field.
        #[derive(Serialize, JsonSchema)]
        pub(super) struct PointV1 {
            pub x: i64,
            pub y: i64,
            pub z: i64,
        }
    }

    mod renamed {
        use super::*;
        /// Same name, a field renamed.
        #[derive(Serialize, JsonSchema)]
        pub(super) struct PointV1 {
            pub x: i64,
            pub why: i64,
        }
    }

    mod documented {
        use super::*;
        /// Same fields, with doc comments: prose is not structure.
        #[derive(Serialize, JsonSchema)]
        pub(super) struct PointV1 {
            /// The abscissa.
            pub x: i64,
            /// The ordinate.
            pub y: i64,
        }
    }

    fn square() -> TaskSignature {
        TaskSignature::new("square", TypeDesc::of::<i64>()).input("n", TypeDesc::of::<i64>())
    }

    fn square_key(project: &str, domain: &str, version: &str, n: i64) -> CacheKey {
        let mut inputs = KeyInputs::new();
        inputs.add("n", &n).unwrap();
        CacheKey::new(project, domain, &square(), version, &inputs).unwrap()
    }

    /// Pinned key digests: if one of these changes, every stored cache entry is orphaned. Change
    /// them only together with the `cairn.*.v1` tags in this file.
    #[test]
    fn golden_vectors() {
        assert_eq!(
            square_key("flytesnacks", "development", "1.0", 2)
                .digest
                .to_string(),
            "c691fac3436d2492527733c95e08a68c"
        );
        assert_eq!(
            square().digest().to_string(),
            "ee0a06f2f8906ea4d683c43cc878c556"
        );
        let sig = TaskSignature::new("join", TypeDesc::named("string"))
            .input("words", TypeDesc::named("map<string,int>"))
            .input("sep", TypeDesc::named("string"));
        let mut inputs = KeyInputs::new();
        inputs
            .add("words", &BTreeMap::from([("a", 1), ("b", 2)]))
            .unwrap()
            .add("sep", ", ")
            .unwrap();
        assert_eq!(
            CacheKey::new("p", "d", &sig, "v1", &inputs)
                .unwrap()
                .digest
                .to_string(),
            "fa0c62b23f11770b5d8194cd407c27a5"
        );
        assert_eq!(
            TypeDesc::of::<i64>().as_str(),
            r#"{"format":"int64","title":"int64","type":"integer"}"#
        );
    }

    #[test]
    fn digests_are_hex_for_people_and_bytes_on_disk() {
        let d = Digest(0x00ff_0000_0000_0000_0000_0000_0000_0001);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, "\"00ff0000000000000000000000000001\"");
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let packed = rmp_serde::to_vec(&d).unwrap();
        assert_eq!(packed.len(), 18, "bin 8 header + 16 bytes");
        assert_eq!(rmp_serde::from_slice::<Digest>(&packed).unwrap(), d);
    }

    #[test]
    fn signature_is_structural() {
        let of = |t: TypeDesc| {
            TaskSignature::new("f", TypeDesc::of::<()>())
                .input("p", t)
                .digest()
        };
        let base = of(TypeDesc::of::<PointV1>());
        assert_ne!(base, of(TypeDesc::of::<v2::PointV1>()), "a field added");
        assert_ne!(
            base,
            of(TypeDesc::of::<renamed::PointV1>()),
            "a field renamed"
        );
        assert_eq!(
            base,
            of(TypeDesc::of::<documented::PointV1>()),
            "doc comments only"
        );
        assert_ne!(
            of(TypeDesc::of::<i64>()),
            of(TypeDesc::of::<i32>()),
            "a type changed"
        );
        let out = |t: TypeDesc| {
            TaskSignature::new("f", t)
                .input("p", TypeDesc::of::<i64>())
                .digest()
        };
        assert_ne!(
            out(TypeDesc::of::<i64>()),
            out(TypeDesc::of::<(i64, i64)>()),
            "the output changed"
        );
        let renamed_input =
            TaskSignature::new("f", TypeDesc::of::<()>()).input("q", TypeDesc::of::<PointV1>());
        assert_ne!(base, renamed_input.digest(), "an input renamed");
    }

    #[test]
    fn inputs_must_match_the_signature() {
        let mut extra = KeyInputs::new();
        extra.add("n", &1).unwrap().add("m", &2).unwrap();
        let err = CacheKey::new("p", "d", &square(), "1", &extra).unwrap_err();
        assert!(err.to_string().contains("\"m\""), "{err}");
        let err = CacheKey::new("p", "d", &square(), "1", &KeyInputs::new()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let mut ok = KeyInputs::new();
        ok.add("n", &1).unwrap();
        let err = CacheKey::new("", "d", &square(), "1", &ok).unwrap_err();
        assert!(err.to_string().contains("project"), "{err}");
    }

    struct File {
        path: String,
        content: Vec<u8>,
    }

    impl CacheHash for File {
        fn cache_hash(&self) -> Vec<u8> {
            self.content.clone()
        }
    }

    #[test]
    fn a_type_can_supply_its_own_hash() {
        let sig =
            TaskSignature::new("wc", TypeDesc::of::<u64>()).input("f", TypeDesc::named("file"));
        let key = |f: &File| {
            let mut i = KeyInputs::new();
            i.add_hashed("f", f);
            CacheKey::new("p", "d", &sig, "1", &i).unwrap().digest
        };
        let a = File {
            path: "/a".into(),
            content: b"hello".to_vec(),
        };
        let b = File {
            path: "/b".into(),
            content: b"hello".to_vec(),
        };
        let c = File {
            path: "/a".into(),
            content: b"bye".to_vec(),
        };
        assert_ne!(a.path, b.path);
        assert_eq!(key(&a), key(&b), "same content, same key");
        assert_ne!(key(&a), key(&c), "content changed");
    }

    proptest! {
        #[test]
        fn stable_under_map_reordering(entries in proptest::collection::vec((".{0,8}", any::<i64>()), 0..40)) {
            let sig = TaskSignature::new("t", TypeDesc::named("()")).input("m", TypeDesc::named("map"));
            let mut forward: HashMap<String, i64> = HashMap::new();
            for (k, v) in &entries {
                forward.entry(k.clone()).or_insert(*v);
            }
            // The same contents, inserted in the opposite order into a map of another capacity
            // (and, being a new `HashMap`, another random hash seed).
            let mut pairs: Vec<(String, i64)> = forward.iter().map(|(k, v)| (k.clone(), *v)).collect();
            pairs.reverse();
            let mut backward: HashMap<String, i64> = HashMap::with_capacity(1);
            backward.extend(pairs);
            let mut a = KeyInputs::new();
            a.add("m", &forward).unwrap();
            let mut b = KeyInputs::new();
            b.add("m", &backward).unwrap();
            prop_assert_eq!(
                CacheKey::new("p", "d", &sig, "1", &a).unwrap().digest,
                CacheKey::new("p", "d", &sig, "1", &b).unwrap().digest
            );
        }

        #[test]
        fn every_component_changes_the_key(
            project in "[a-z]{1,6}", domain in "[a-z]{1,6}", version in "[0-9.]{1,4}",
            n in any::<i64>(), m in any::<i64>(), field in 0usize..5,
        ) {
            prop_assume!(n != m);
            let base = square_key(&project, &domain, &version, n);
            let changed = match field {
                0 => square_key(&format!("{project}x"), &domain, &version, n),
                1 => square_key(&project, &format!("{domain}x"), &version, n),
                2 => square_key(&project, &domain, &format!("{version}x"), n),
                3 => square_key(&project, &domain, &version, m),
                _ => {
                    let sig = TaskSignature::new("square", TypeDesc::of::<i32>()).input("n", TypeDesc::of::<i64>());
                    let mut i = KeyInputs::new();
                    i.add("n", &n).unwrap();
                    CacheKey::new(&project, &domain, &sig, &version, &i).unwrap()
                }
            };
            prop_assert_ne!(base.digest, changed.digest);
            prop_assert_eq!(base.digest, square_key(&project, &domain, &version, n).digest);
        }

        #[test]
        fn ignored_inputs_do_not_change_the_key(n in any::<i64>(), a in ".*", b in ".*") {
            let sig = TaskSignature::new("t", TypeDesc::of::<i64>())
                .input("n", TypeDesc::of::<i64>())
                .input("log_level", TypeDesc::of::<String>());
            let key = |level: &str| {
                let mut i = KeyInputs::new();
                i.add("n", &n).unwrap().add("log_level", level).unwrap().ignore("log_level");
                CacheKey::new("p", "d", &sig, "1", &i).unwrap()
            };
            prop_assert_eq!(key(&a).digest, key(&b).digest);
            prop_assert_eq!(key(&a).inputs.len(), 1);
        }

        #[test]
        fn component_boundaries_are_unambiguous(a in "[a-z]{0,5}", b in "[a-z]{0,5}") {
            // ("ab", "c") and ("a", "bc") must not collide: every component is length-prefixed.
            prop_assume!(!a.is_empty() && !b.is_empty());
            let joined = format!("{a}{b}");
            let k1 = CacheKey::new(&joined, "d", &square(), "1", &{ let mut i = KeyInputs::new(); i.add("n", &1).unwrap(); i }).unwrap();
            let k2 = CacheKey::new(&a, &format!("{b}d"), &square(), "1", &{ let mut i = KeyInputs::new(); i.add("n", &1).unwrap(); i }).unwrap();
            prop_assert_ne!(k1.digest, k2.digest);
        }
    }
}
