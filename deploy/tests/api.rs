//! The HTTP API of a running node, driven over HTTP: bad input gets a JSON error naming it and
//! writes nothing, and the OpenAPI document validates and covers every route.

mod common;

use common::NodeProcess;
use serde_json::{Value, json};

async fn post(url: &str, body: reqwest::Body, content_type: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_input_is_refused_with_a_named_json_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    let runs = format!("{}/v1/runs", node.url);
    let json = "application/json";

    let cases: Vec<(&str, reqwest::Body, &str, u16, &str, &str)> = vec![
        (
            "malformed JSON",
            "{\"workflow\": ".into(),
            json,
            400,
            "malformed_json",
            "EOF",
        ),
        (
            "unknown workflow",
            json!({"workflow": "nope"}).to_string().into(),
            json,
            404,
            "unknown_workflow",
            "unknown workflow \"nope\"",
        ),
        (
            "input not matching the signature",
            json!({"workflow": "fan_out", "input": {"n": "many"}})
                .to_string()
                .into(),
            json,
            422,
            "invalid_input",
            "invalid type: string \"many\"",
        ),
        (
            "unknown input field",
            json!({"workflow": "fan_out", "input": {"n": 1, "extra": 2}})
                .to_string()
                .into(),
            json,
            422,
            "invalid_input",
            "unknown field `extra`",
        ),
        (
            "unknown request field",
            json!({"workflow": "fan_out", "inptu": {"n": 1}})
                .to_string()
                .into(),
            json,
            422,
            "invalid_input",
            "unknown field `inptu`",
        ),
        (
            "oversized body",
            json!({"workflow": "daily_report", "input": "x".repeat(2 << 20)})
                .to_string()
                .into(),
            json,
            413,
            "body_too_large",
            "length limit",
        ),
        (
            "input over the run record limit",
            json!({"workflow": "daily_report", "input": "x".repeat(1_500_000)})
                .to_string()
                .into(),
            json,
            413,
            "body_too_large",
            "at most 1048576",
        ),
        (
            "not JSON",
            "workflow=fan_out".into(),
            "text/plain",
            415,
            "unsupported_media_type",
            "application/json",
        ),
    ];
    for (what, body, content_type, status, code, message) in cases {
        let (got, err) = post(&runs, body, content_type).await;
        assert_eq!(got, status, "{what}: {err}");
        assert_eq!(err["error"]["code"], code, "{what}: {err}");
        let text = err["error"]["message"].as_str().unwrap();
        assert!(
            text.contains(message),
            "{what}: {text:?} should mention {message:?}"
        );
    }
    // Nothing was half-written: no run exists.
    let (status, page) = get(&runs).await;
    assert_eq!(status, 200);
    assert_eq!(page["runs"], json!([]));

    // Other bad inputs, elsewhere.
    let (status, err) = get(&format!("{}/v1/cache/entries/not-hex", node.url)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("invalid_input"))
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not-hex")
    );
    let (status, err) = get(&format!("{}/v1/runs?limit=many", node.url)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("invalid_input"))
    );
    let (status, err) = get(&format!("{}/v1/nowhere", node.url)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let explain = format!("{}/v1/cache/explain", node.url);
    let (status, err) = post(
        &explain,
        json!({"task": "slow_square", "input": {"n": 1}})
            .to_string()
            .into(),
        json,
    )
    .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input of task \"slow_square\""),
        "{err}"
    );
}

/// Every endpoint the API must have (issue 8); the document must list each.
const REQUIRED: &[(&str, &str)] = &[
    ("post", "/v1/runs"),
    ("get", "/v1/runs"),
    ("get", "/v1/runs/{run_id}"),
    ("get", "/v1/schedules"),
    ("post", "/v1/schedules/{name}/pause"),
    ("post", "/v1/schedules/{name}/resume"),
    ("post", "/v1/schedules/{name}/backfill"),
    ("get", "/v1/cache/entries"),
    ("get", "/v1/cache/entries/{key}"),
    ("post", "/v1/cache/evict"),
    ("post", "/v1/cache/explain"),
    ("get", "/v1/nodes"),
    ("get", "/v1/workflows"),
    ("get", "/v1/health"),
    ("get", "/v1/ready"),
    ("post", "/v1/runs/{run_id}/cancel"),
];

fn resolve_refs(value: &Value, doc: &Value, path: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let target = r.strip_prefix("#").and_then(|p| doc.pointer(p));
                assert!(target.is_some(), "{path}: dangling $ref {r}");
            }
            for (k, v) in map {
                resolve_refs(v, doc, &format!("{path}/{k}"));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                resolve_refs(v, doc, &format!("{path}/{i}"));
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_validates_and_every_route_is_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[
            "--store",
            "embedded:./data",
            "--token",
            "a-token-of-32-characters-or-so!!",
        ],
    );
    // Served without the token.
    let (status, doc) = get(&format!("{}/openapi.json", node.url)).await;
    assert_eq!(status, 200);

    // It is an OpenAPI 3.0 document (typed parse), and every reference resolves.
    let typed: openapiv3::OpenAPI = serde_json::from_value(doc.clone()).expect("valid OpenAPI 3.0");
    assert!(typed.openapi.starts_with("3.0"));
    resolve_refs(&doc, &doc, "");

    // Every required route is documented…
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in REQUIRED {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not in the document"
        );
    }
    // …every route the server has is in the document (the router is built from the same
    // table), and every documented route is served: it answers with something other than the
    // router's own 404 / 405.
    let served: Vec<(String, String)> = cairn::api::routes::operations()
        .iter()
        .map(|op| (op.method.as_str().to_ascii_lowercase(), op.path.to_string()))
        .collect();
    let mut sorted_documented = documented.clone();
    sorted_documented.sort();
    let mut sorted_served = served.clone();
    sorted_served.sort();
    assert_eq!(sorted_documented, sorted_served);
    let client = reqwest::Client::new();
    for (method, path) in &documented {
        let concrete = path
            .replace("{run_id}", "run-x")
            .replace("{name}", "s")
            .replace("{key}", "00");
        let req = match method.as_str() {
            "get" => client.get(format!("{}{concrete}", node.url)),
            "post" => client
                .post(format!("{}{concrete}", node.url))
                .json(&json!({})),
            other => panic!("unexpected method {other}"),
        };
        let resp = req.bearer_auth("t").send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("");
        assert!(
            !(status == 405 || (status == 404 && body["error"]["message"] == "no such route")),
            "{method} {path} is documented but not served ({status} {code})"
        );
        // Without the token, every route but the public ones is refused.
        let public = doc["paths"][path][method]["security"] == json!([]);
        let anon = match method.as_str() {
            "get" => client.get(format!("{}{concrete}", node.url)),
            _ => client
                .post(format!("{}{concrete}", node.url))
                .json(&json!({})),
        };
        let anon = anon.send().await.unwrap().status().as_u16();
        assert_eq!(
            anon == 401,
            !public,
            "{method} {path} without a token: {anon}"
        );
    }
}

/// A loopback node without a token is open, and its document says so: no security scheme, no
/// 401 answers; a node with a token declares bearer security (the test above).
#[tokio::test]
async fn an_open_node_documents_no_security() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    let (status, doc) = get(&format!("{}/openapi.json", node.url)).await;
    assert_eq!(status, 200);
    assert!(doc.get("security").is_none(), "{}", doc["security"]);
    assert!(doc["components"].get("securitySchemes").is_none());
    assert!(
        doc["info"]["description"]
            .as_str()
            .unwrap()
            .contains("requires no token")
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].get("401").is_none(),
                "{method} {path} documents a 401 on an open node"
            );
            // What every operation of its shape can answer is listed.
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("500"), "{method} {path}");
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(s), "{method} {path}: no {s}");
                }
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{method} {path}: no 404");
            }
        }
    }
    // A schema-valid run request links to reading and cancelling the run.
    let links = &doc["paths"]["/v1/runs"]["post"]["responses"]["201"]["links"];
    assert_eq!(links["getRun"]["operationId"], "getRun");
    assert_eq!(
        links["getRun"]["parameters"]["run_id"],
        "$response.body#/run_id"
    );
}

/// What the document states is what the server enforces (each of these was accepted before the
/// contract check): a body must be an object, names are never empty, pages and waits have
/// bounds, and cache keys are 32 hex digits, no sign.
#[tokio::test]
async fn the_documented_bounds_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    let u = &node.url;
    let json = "application/json";
    let refused = [
        post(&format!("{u}/v1/cache/verify"), "[]".into(), json).await,
        post(
            &format!("{u}/v1/runs"),
            r#"["sum_of_squares"]"#.into(),
            json,
        )
        .await,
        post(
            &format!("{u}/v1/cache/evict"),
            r#"{"scope": "project_domain", "project": "", "domain": ""}"#.into(),
            json,
        )
        .await,
        post(
            &format!("{u}/v1/cache/evict"),
            format!(r#"{{"scope": "key", "key": "+{}"}}"#, "0".repeat(31)).into(),
            json,
        )
        .await,
        get(&format!("{u}/v1/runs?limit=0")).await,
        get(&format!("{u}/v1/runs?limit=1001")).await,
        get(&format!("{u}/v1/cache/entries?limit=5000")).await,
        get(&format!("{u}/v1/runs/some-run?wait_ms=60001")).await,
    ];
    for (i, (status, body)) in refused.iter().enumerate() {
        assert_eq!(*status, 422, "case {i}: {body}");
        assert_eq!(body["error"]["code"], "invalid_input", "case {i}: {body}");
    }
    // The field is named.
    let message = refused[2].1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("domain: the name must not be empty"),
        "{message}"
    );
    // The bounds themselves pass.
    assert_eq!(get(&format!("{u}/v1/runs?limit=1000")).await.0, 200);
    assert_eq!(get(&format!("{u}/v1/runs/some-run?wait_ms=0")).await.0, 404);
}

#[tokio::test]
async fn a_run_can_be_polled_with_counts_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    let (status, run) = post(
        &format!("{}/v1/runs", node.url),
        json!({"workflow": "sum_of_squares", "input": 3})
            .to_string()
            .into(),
        "application/json",
    )
    .await;
    assert_eq!(status, 201, "{run}");
    let id = run["run_id"].as_str().unwrap();
    let (status, light) = get(&format!(
        "{}/v1/runs/{id}?wait_ms=30000&calls=false",
        node.url
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(light["status"], "succeeded");
    assert_eq!(light["counts"]["Populated"], 4);
    assert_eq!(light["calls"], json!([]));
    let (_, full) = get(&format!("{}/v1/runs/{id}", node.url)).await;
    assert_eq!(full["calls"].as_array().unwrap().len(), 4);
    assert_eq!(full["output"], 5);
}

#[tokio::test]
async fn task_stats_count_calls_and_an_execution_names_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (status, run) = post(
            &format!("{}/v1/runs", node.url),
            json!({"workflow": "sum_of_squares", "input": 3})
                .to_string()
                .into(),
            "application/json",
        )
        .await;
        assert_eq!(status, 201, "{run}");
        let id = run["run_id"].as_str().unwrap().to_string();
        let (_, done) = get(&format!("{}/v1/runs/{id}?wait_ms=30000", node.url)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        runs.push(done);
    }
    // square ran for 1..=3 in the first run and hit in the second.
    let (status, stats) = get(&format!("{}/v1/cache/stats?task=square", node.url)).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["entries"], 3, "{stats}");
    assert_eq!(stats["calls"]["Populated"], 3, "{stats}");
    assert_eq!(stats["calls"]["Hit"], 3, "{stats}");
    assert_eq!(stats["executions_avoided"], 3, "{stats}");
    assert_eq!(stats["hit_ratio"], 0.5, "{stats}");
    let (status, unknown) = get(&format!("{}/v1/cache/stats?task=nope", node.url)).await;
    assert_eq!((status, &unknown["entries"]), (200, &json!(0)));
    assert_eq!(unknown["hit_ratio"], Value::Null);

    // A call that ran its body names its run; one that hit did not run anything.
    let ran = runs[0]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["task"] == "square")
        .unwrap();
    let exec = ran["execution"].as_str().unwrap();
    let (status, info) = get(&format!("{}/v1/executions/{exec}", node.url)).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["run_id"], runs[0]["run_id"]);
    assert_eq!(info["call"]["execution"], exec);
    assert_eq!(info["call"]["status"], "Populated");
    let hit = runs[1]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "Hit")
        .unwrap();
    let (status, none) = get(&format!(
        "{}/v1/executions/{}",
        node.url,
        hit["execution"].as_str().unwrap()
    ))
    .await;
    assert_eq!(status, 404, "{none}");
}

/// Percent-encodes `s` for a path segment or a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Valid bodies of the operations that take one, by `operationId`; every string in them is
/// replaced by each hostile value in turn.
fn template(operation: &str) -> Option<Value> {
    Some(match operation {
        "submitRun" => {
            json!({"workflow": "sum_of_squares", "input": 3, "project": "p", "domain": "d"})
        }
        "backfillSchedule" => json!({"from_ms": 0, "to_ms": 1_000}),
        "evict" => {
            json!({"scope": "task", "project": "p", "domain": "d", "task": "square", "version": "1.0"})
        }
        "explain" => json!({"task": "square", "input": {"n": 3}, "project": "p", "domain": "d"}),
        _ => return None,
    })
}

/// Every way to put `bad` into one string of `body`.
fn variants(body: &Value, bad: &str) -> Vec<Value> {
    fn walk(v: &Value, bad: &str, out: &mut Vec<Value>, rebuild: &dyn Fn(Value) -> Value) {
        match v {
            Value::String(_) => out.push(rebuild(Value::String(bad.to_string()))),
            Value::Object(map) => {
                for (k, child) in map {
                    let k = k.clone();
                    let map = map.clone();
                    walk(child, bad, out, &|new| {
                        let mut m = map.clone();
                        m.insert(k.clone(), new);
                        rebuild(Value::Object(m))
                    });
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(body, bad, &mut out, &|v| v);
    out
}

/// Oversized and unusual names on every route of the OpenAPI document, in path parameters,
/// query parameters and body strings: every request gets an answer, never a 5xx, never a
/// dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_on_every_route_get_an_answer_and_never_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    let (_, doc) = get(&format!("{}/openapi.json", node.url)).await;
    let bad_values = [
        "x".repeat(100_000),
        "y".repeat(70_000),
        "é".repeat(300),
        String::new(),
        "\0".into(),
        "a\nb".into(),
        "../../etc/passwd".into(),
        "%00".into(),
        "🙂".into(),
        " ".into(),
        "-1".into(),
    ];
    let client = reqwest::Client::new();
    let mut requests = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            let params: Vec<&Value> = op["parameters"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            for bad in &bad_values {
                let mut url = format!("{}{path}", node.url);
                for p in params.iter().filter(|p| p["in"] == "path") {
                    let name = p["name"].as_str().unwrap();
                    url = url.replace(&format!("{{{name}}}"), &enc(bad));
                }
                let query: Vec<(String, String)> = params
                    .iter()
                    .filter(|p| p["in"] == "query")
                    .map(|p| (p["name"].as_str().unwrap().to_string(), bad.clone()))
                    .collect();
                let bodies = match template(id) {
                    Some(t) => variants(&t, bad),
                    None => vec![Value::Null],
                };
                for body in bodies {
                    let mut req = client
                        .request(method.to_uppercase().parse().unwrap(), &url)
                        .query(&query);
                    if !body.is_null() {
                        req = req.json(&body);
                    }
                    for p in params.iter().filter(|p| p["in"] == "header") {
                        if let Ok(v) = reqwest::header::HeaderValue::from_str(bad) {
                            req = req.header(p["name"].as_str().unwrap(), v);
                        }
                    }
                    requests += 1;
                    let shown: String = bad.chars().take(20).collect();
                    let shown = format!("{shown:?} ({} bytes)", bad.len());
                    let resp = match req.send().await {
                        Ok(resp) => resp,
                        // A URL the client itself will not build never reaches the node.
                        Err(e) if e.is_builder() => continue,
                        Err(e) => panic!("{method} {path} ({id}) with {shown}: no answer: {e}"),
                    };
                    let status = resp.status().as_u16();
                    let text: String = resp
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect();
                    assert!(
                        status < 500,
                        "{method} {path} ({id}) with {shown}: {status} {text}"
                    );
                }
            }
        }
    }
    assert!(requests > 200, "{requests} requests");
    // The node still answers.
    let (status, _) = get(&format!("{}/v1/health", node.url)).await;
    assert_eq!(status, 200);
}
