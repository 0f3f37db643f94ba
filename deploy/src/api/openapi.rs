//! The OpenAPI 3.0 document, built from the route table ([`super::routes::operations`]) and
//! the JSON schemas of the API types (schemars, in its OpenAPI 3.0 mode).

use super::routes::Operation;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

/// Makes the schema of a type (a `$ref` for named types) with a generator.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`.
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// What the document says about one operation.
#[derive(Default)]
pub struct Doc {
    path_params: Vec<(&'static str, &'static str)>,
    headers: Vec<(&'static str, &'static str)>,
    query: Option<SchemaFn>,
    body: Option<SchemaFn>,
    successes: Vec<(u16, SchemaFn)>,
    errors: &'static [u16],
}

impl Doc {
    /// Nothing yet.
    pub fn new() -> Self {
        Doc::default()
    }

    /// An optional request header.
    pub fn header(mut self, name: &'static str, description: &'static str) -> Self {
        self.headers.push((name, description));
        self
    }

    /// A path parameter.
    pub fn path(mut self, name: &'static str, description: &'static str) -> Self {
        self.path_params.push((name, description));
        self
    }

    /// Query parameters: the properties of an object type.
    pub fn query(mut self, s: SchemaFn) -> Self {
        self.query = Some(s);
        self
    }

    /// The JSON request body.
    pub fn body(mut self, s: SchemaFn) -> Self {
        self.body = Some(s);
        self
    }

    /// 200 with this body.
    pub fn ok(mut self, s: SchemaFn) -> Self {
        self.successes.push((200, s));
        self
    }

    /// 201 with this body.
    pub fn created(mut self, s: SchemaFn) -> Self {
        self.successes.push((201, s));
        self
    }

    /// Error statuses besides 401, 500 and 503 (which every protected route may answer).
    pub fn errors(mut self, statuses: &'static [u16]) -> Self {
        self.errors = statuses;
        self
    }
}

fn error_reason(status: u16) -> &'static str {
    match status {
        400 => "Malformed request (e.g. `malformed_json`).",
        401 => "Missing or wrong bearer token (`unauthorized`).",
        404 => "Not found (`not_found`, `unknown_workflow`, `unknown_task`).",
        409 => "Conflicts with the current state (`idempotency_conflict`, `already_ended`).",
        413 => "Body too large (`body_too_large`).",
        415 => "Body is not `application/json` (`unsupported_media_type`).",
        422 => "The input does not match (`invalid_input`).",
        503 => "The store is unavailable (`store_unavailable`).",
        _ => "Internal error (`internal`).",
    }
}

/// The document for `ops`.
pub fn document(ops: &[Operation]) -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let error_ref = schema::<super::types::ErrorBody>(&mut g);
    let mut paths = Map::new();
    for op in ops {
        let mut parameters = Vec::new();
        for (name, description) in &op.doc.path_params {
            parameters.push(json!({
                "name": name, "in": "path", "required": true,
                "description": description, "schema": {"type": "string"}
            }));
        }
        for (name, description) in &op.doc.headers {
            parameters.push(json!({
                "name": name, "in": "header", "required": false,
                "description": description, "schema": {"type": "string", "minLength": 1, "maxLength": 255}
            }));
        }
        if let Some(query) = op.doc.query {
            let root = query(&mut SchemaSettings::openapi3().into_generator());
            let props = root
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (name, mut prop) in props {
                let description = prop
                    .as_object_mut()
                    .and_then(|p| p.remove("description"))
                    .unwrap_or(Value::String(String::new()));
                parameters.push(json!({
                    "name": name, "in": "query", "required": false,
                    "description": description, "schema": prop
                }));
            }
        }
        let mut operation = Map::new();
        operation.insert("operationId".into(), json!(op.id));
        operation.insert("summary".into(), json!(op.summary));
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = op.doc.body {
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": body(&mut g)}}}),
            );
        }
        let mut responses = Map::new();
        for (status, response) in &op.doc.successes {
            let description = if *status == 201 {
                "Created."
            } else {
                "Success."
            };
            responses.insert(
                status.to_string(),
                json!({"description": description,
                       "content": {"application/json": {"schema": response(&mut g)}}}),
            );
        }
        let mut statuses: Vec<u16> = op.doc.errors.to_vec();
        if !op.public {
            statuses.extend([401, 503]);
        }
        statuses.push(500);
        for status in statuses {
            responses.insert(
                status.to_string(),
                json!({"description": error_reason(status),
                       "content": {"application/json": {"schema": error_ref}}}),
            );
        }
        operation.insert("responses".into(), Value::Object(responses));
        if op.public {
            operation.insert("security".into(), json!([]));
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(methods) = entry.as_object_mut() {
            methods.insert(
                op.method.as_str().to_ascii_lowercase(),
                Value::Object(operation),
            );
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Cairn node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit and inspect runs, browse, explain and evict the task cache, manage schedules. Every error is JSON: {\"error\": {\"code\", \"message\"}}."
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}]
    })
}
