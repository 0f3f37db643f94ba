//! Task signatures: a task's name, its inputs' names and types and its output type, each type
//! described structurally (its JSON schema without prose, keys sorted), so that changing a
//! signature changes every key of the task and editing a doc comment changes none.

use crate::digest::{Digest, Hasher};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The structural description of a type: its JSON schema (schemars) with descriptions removed
/// and keys sorted. A struct gaining, losing or renaming a field, or a field changing type,
/// changes it; editing a doc comment does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeDesc(String);

impl TypeDesc {
    /// The description of `T`.
    pub fn of<T: JsonSchema + ?Sized>() -> TypeDesc {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
        let mut value = schema.to_value();
        strip_prose(&mut value);
        TypeDesc(canonical_json(&value))
    }

    /// A description given as text (for types described by hand, and tests).
    pub fn named(text: impl Into<String>) -> TypeDesc {
        TypeDesc(text.into())
    }

    /// The description's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn strip_prose(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for k in ["description", "$schema", "$comment", "examples"] {
                map.remove(k);
            }
            map.values_mut().for_each(strip_prose);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_prose),
        _ => {}
    }
}

/// JSON with object keys sorted, whatever `serde_json`'s map order is configured to be.
fn canonical_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, String> =
                map.iter().map(|(k, v)| (k, canonical_json(v))).collect();
            let fields: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k.clone())))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// A task's signature: its name, its inputs' names and types, its output type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSignature {
    /// The task name.
    pub name: String,
    /// Input names and types, in declaration order.
    pub inputs: Vec<(String, TypeDesc)>,
    /// The output type (of the `Ok` value, for tasks returning `Result`).
    pub output: TypeDesc,
}

impl TaskSignature {
    /// A signature with no inputs yet.
    pub fn new(name: impl Into<String>, output: TypeDesc) -> Self {
        TaskSignature {
            name: name.into(),
            inputs: Vec::new(),
            output,
        }
    }

    /// Adds an input.
    pub fn input(mut self, name: impl Into<String>, ty: TypeDesc) -> Self {
        self.inputs.push((name.into(), ty));
        self
    }

    /// The full-width digest of the signature.
    pub fn digest(&self) -> Digest {
        let mut h = Hasher::new("cairn.signature.v1");
        h.put(self.name.as_bytes());
        h.put(&(self.inputs.len() as u64).to_be_bytes());
        for (name, ty) in &self.inputs {
            h.put(name.as_bytes());
            h.put(ty.as_str().as_bytes());
        }
        h.put(self.output.as_str().as_bytes());
        h.finish()
    }
}

/// A signature hashed once, for computing many keys of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedSignature {
    /// The task name.
    pub name: String,
    /// The signature digest.
    pub digest: Digest,
    /// The declared input names.
    pub inputs: BTreeSet<String>,
}

impl TaskSignature {
    /// Hashes the signature once for [`super::CacheKey::prepared`].
    pub fn prepare(&self) -> PreparedSignature {
        PreparedSignature {
            name: self.name.clone(),
            digest: self.digest(),
            inputs: self.inputs.iter().map(|(n, _)| n.clone()).collect(),
        }
    }
}
