//! The OpenAPI 3.0 document, built from the route table's [`Operation`]s
//! (`super::routes::operations`) and the JSON schemas of the API types (schemars, in its
//! OpenAPI 3.0 mode).

use super::AppState;
use axum::http::Method;
use axum::routing::MethodRouter;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

/// One route and its documentation.
pub struct Operation {
    /// HTTP method.
    pub method: Method,
    /// Path, with `{param}` segments.
    pub path: &'static str,
    /// `operationId`.
    pub id: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Served without a token.
    pub public: bool,
    /// Its documentation: parameters, body, answers.
    pub doc: Doc,
    /// The handler.
    pub handler: MethodRouter<AppState>,
}

pub(super) fn op(
    method: Method,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    doc: Doc,
    handler: MethodRouter<AppState>,
) -> Operation {
    Operation {
        method,
        path,
        id,
        summary,
        public: false,
        doc,
        handler,
    }
}

/// Makes the schema of a type (a `$ref` for named types) with a generator.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`.
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// A query parameter's schema: an absent parameter is how a query says "none", so the
/// `Option`'s null goes (OpenAPI 3.0 has no `null` type for a parameter's value).
fn query_value(mut prop: Value) -> Value {
    if let Some(obj) = prop.as_object_mut() {
        obj.remove("nullable");
        if obj.get("default") == Some(&Value::Null) {
            obj.remove("default");
        }
        if let Some(Value::Array(types)) = obj.get("type") {
            let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            if let [one] = kept.as_slice() {
                obj.insert("type".into(), one.clone());
            }
        }
        if let Some(Value::Array(any)) = obj.get("anyOf") {
            let kept: Vec<Value> = any
                .iter()
                .filter(|s| s.get("type").and_then(Value::as_str) != Some("null"))
                .cloned()
                .collect();
            if let [one] = kept.as_slice() {
                let description = obj.remove("description");
                let mut one = one.clone();
                if let (Some(d), Some(o)) = (description, one.as_object_mut()) {
                    o.insert("description".into(), d);
                }
                return one;
            }
        }
    }
    prop
}

/// What the document says about one operation.
#[derive(Default)]
pub struct Doc {
    path_params: Vec<(&'static str, &'static str, SchemaFn)>,
    headers: Vec<(&'static str, &'static str)>,
    query: Option<SchemaFn>,
    body: Option<SchemaFn>,
    successes: Vec<(u16, SchemaFn)>,
    /// 200 answers raw bytes (`application/octet-stream`), not JSON.
    bytes_ok: bool,
    errors: &'static [u16],
    links: Vec<(&'static str, &'static str, Value)>,
    description: Option<&'static str>,
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

    /// A path parameter and its schema.
    pub fn path(mut self, name: &'static str, description: &'static str, s: SchemaFn) -> Self {
        self.path_params.push((name, description, s));
        self
    }

    /// A link from this operation's successful answers to operation `to`, with its parameters
    /// as runtime expressions (`$response.body#/run_id`, `$request.path.name`).
    pub fn link(mut self, name: &'static str, to: &'static str, parameters: Value) -> Self {
        self.links.push((name, to, parameters));
        self
    }

    /// Rules the schemas cannot state (checked by the server: 422 when broken).
    pub fn rules(mut self, description: &'static str) -> Self {
        self.description = Some(description);
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

    /// 200 with raw bytes (`application/octet-stream`).
    pub fn ok_bytes(mut self) -> Self {
        self.bytes_ok = true;
        self
    }

    /// 201 with this body.
    pub fn created(mut self, s: SchemaFn) -> Self {
        self.successes.push((201, s));
        self
    }

    /// Error statuses besides those every operation of its shape may answer (see
    /// [`document`]).
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

/// The document for `ops`, as a node serves it: with bearer security only when the node
/// requires a token (`secured`).
///
/// Every operation lists every status it can answer: 500 always; 503 (store unavailable) on
/// protected routes; 401 on protected routes of a secured node; 400, 413, 415 and 422 with a
/// body; 422 with parameters; 404 with path parameters; and what the operation adds.
pub fn document(ops: &[Operation], secured: bool) -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let error_ref = schema::<super::types::ErrorBody>(&mut g);
    let mut paths = Map::new();
    for op in ops {
        let mut parameters = Vec::new();
        for (name, description, s) in &op.doc.path_params {
            parameters.push(json!({
                "name": name, "in": "path", "required": true,
                "description": description, "schema": s(&mut g)
            }));
        }
        for (name, description) in &op.doc.headers {
            parameters.push(json!({
                "name": name, "in": "header", "required": false,
                "description": description,
                "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"}
            }));
        }
        if let Some(query) = op.doc.query {
            let mut generator = SchemaSettings::openapi3().into_generator();
            let mut root: Value = query(&mut generator).into();
            // A named type comes back as a `$ref`: its parameters are its definition's properties.
            if let Some(name) = root
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
                && let Some(def) = generator.definitions().get(name)
            {
                root = def.clone();
            }
            let props = root
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let required: Vec<String> = root
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for (name, mut prop) in props {
                let is_required = required.contains(&name);
                let description = prop
                    .as_object_mut()
                    .and_then(|p| p.remove("description"))
                    .unwrap_or(Value::String(String::new()));
                parameters.push(json!({
                    "name": name, "in": "query", "required": is_required,
                    "description": description, "schema": query_value(prop)
                }));
            }
        }
        let mut operation = Map::new();
        operation.insert("operationId".into(), json!(op.id));
        operation.insert("summary".into(), json!(op.summary));
        if let Some(rules) = op.doc.description {
            operation.insert("description".into(), json!(rules));
        }
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
        let links: Map<String, Value> = op
            .doc
            .links
            .iter()
            .map(|(name, to, parameters)| {
                (
                    name.to_string(),
                    json!({"operationId": to, "parameters": parameters}),
                )
            })
            .collect();
        for (status, response) in &op.doc.successes {
            let description = if *status == 201 {
                "Created."
            } else {
                "Success."
            };
            let mut answer = json!({"description": description,
                   "content": {"application/json": {"schema": response(&mut g)}}});
            if !links.is_empty() {
                answer["links"] = Value::Object(links.clone());
            }
            responses.insert(status.to_string(), answer);
        }
        if op.doc.bytes_ok {
            responses.insert(
                "200".into(),
                json!({"description": "Success.",
                       "content": {"application/octet-stream":
                           {"schema": {"type": "string", "format": "binary"}}}}),
            );
        }
        let mut statuses: Vec<u16> = op.doc.errors.to_vec();
        if !op.public {
            statuses.push(503);
            if secured {
                statuses.push(401);
            }
        }
        if op.doc.body.is_some() {
            statuses.extend([400, 413, 415, 422]);
        }
        if op.doc.query.is_some() || !op.doc.path_params.is_empty() || !op.doc.headers.is_empty() {
            statuses.push(422);
        }
        if !op.doc.path_params.is_empty() {
            statuses.push(404);
        }
        statuses.push(500);
        statuses.sort_unstable();
        statuses.dedup();
        for status in statuses {
            responses.insert(
                status.to_string(),
                json!({"description": error_reason(status),
                       "content": {"application/json": {"schema": error_ref}}}),
            );
        }
        operation.insert("responses".into(), Value::Object(responses));
        if op.public && secured {
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
    let auth = if secured {
        "This node requires `Authorization: Bearer <token>` on every route but /v1/health, /v1/ready and /openapi.json."
    } else {
        "This node requires no token: a node listening on a loopback address without a token is open, and its document declares no security. A node with a token (required on any other address) declares bearer security."
    };
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Cairn node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Submit and inspect runs, browse, explain and evict the task cache, manage schedules. Every error is JSON: {{\"error\": {{\"code\", \"message\"}}}}. Names (projects, domains, tasks, versions, workflows, schedules, run and execution ids) are 1 to 255 characters without control characters. {auth}")
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
        },
    });
    if secured {
        doc["components"]["securitySchemes"] =
            json!({"bearer": {"type": "http", "scheme": "bearer"}});
        doc["security"] = json!([{"bearer": []}]);
    }
    doc
}
