//! A client of a node's HTTP API (what the `cairn` CLI uses), typed with [`crate::api::types`].

use crate::api::types::*;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a request gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached.
    #[error("cannot reach the node at {url}: {detail}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The node's TLS certificate is not trusted, or the client's TLS set-up (its `--ca`)
    /// does not load.
    #[error("TLS with the node at {url}: {detail}")]
    Tls {
        /// The URL asked.
        url: String,
        /// What failed, e.g. that the certificate's issuer is unknown (give `--ca`).
        detail: String,
    },
    /// The node answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error's stable code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The answer did not decode.
    #[error("unexpected answer from {url}: {detail}")]
    Decode {
        /// The URL asked.
        url: String,
        /// What did not decode.
        detail: String,
    },
}

/// Exit codes of the `cairn` CLI, which scripts can rely on.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The run (or the operation's subject) failed.
    pub const FAILED: u8 = 1;
    /// Bad usage or input refused by the node (4xx).
    pub const INVALID: u8 = 2;
    /// Not found (unknown run, workflow, task, entry, schedule).
    pub const NOT_FOUND: u8 = 3;
    /// Refused: missing or wrong token.
    pub const UNAUTHORIZED: u8 = 4;
    /// The node is unreachable or failing (5xx), or answered something unexpected.
    pub const UNAVAILABLE: u8 = 5;
}

impl ClientError {
    /// Whether trying again later may succeed: the node could not be reached, or answered
    /// that it (or its store) is unavailable.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Api { status, .. } => matches!(status, 502..=504),
            ClientError::Decode { .. } | ClientError::Tls { .. } => false,
        }
    }

    /// The CLI's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api { status: 404, .. } => exit::NOT_FOUND,
            ClientError::Api { status: 401, .. } => exit::UNAUTHORIZED,
            ClientError::Api { status, .. } if (400..500).contains(status) => exit::INVALID,
            _ => exit::UNAVAILABLE,
        }
    }
}

/// A node's API, typed: what the `cairn` CLI uses. A whole round trip against a node:
/// [`guide`](crate::guide#talking-to-a-node-clientclient).
///
/// ```no_run
/// # async fn demo() -> Result<(), cairn::client::ClientError> {
/// use cairn::client::Client;
///
/// let client = Client::new("https://cairn.internal:7070", Some("the-node-token".into()));
/// for node in client.nodes().await? {
///     println!("{} busy {}/{}", node.name, node.busy, node.concurrency);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:7070`), sending `token` if given.
    /// An `https://` node's certificate is verified against the system's trust store; see
    /// [`Client::with_ca`] for a private CA.
    pub fn new(base: impl Into<String>, token: Option<String>) -> Client {
        // Only a CA file can fail to load; the system's trust store cannot.
        Self::build(base, token, None).expect("the default TLS configuration builds")
    }

    /// A client of the node at `base` whose `https://` certificate must chain to a CA
    /// certificate in the PEM file `ca` (a private CA), sending `token` if given.
    pub fn with_ca(
        base: impl Into<String>,
        token: Option<String>,
        ca: &std::path::Path,
    ) -> Result<Client, ClientError> {
        Self::build(base, token, Some(ca))
    }

    fn build(
        base: impl Into<String>,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> Result<Client, ClientError> {
        let base = base.into().trim_end_matches('/').to_string();
        let invalid = |detail: String| ClientError::Tls {
            url: base.clone(),
            detail,
        };
        let tls = crate::tls::client_config(ca).map_err(invalid)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| invalid(error_chain(&e)))?;
        Ok(Client {
            base,
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        self.call_with(method, path, query, &[], body).await
    }

    async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&str, &str)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let (url, resp) = self.send(method, path, query, headers, body).await?;
        let bytes = body_of(&url, resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            detail: e.to_string(),
        })
    }

    /// Sends a request; a success answer comes back unread, an error answer as its
    /// [`ClientError::Api`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&str, &str)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(String, reqwest::Response), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).query(query);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| match tls_problem(&e) {
            Some(problem) => ClientError::Tls {
                url: url.clone(),
                detail: problem,
            },
            None => ClientError::Unreachable {
                url: url.clone(),
                detail: error_chain(&e),
            },
        })?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = body_of(&url, resp).await?;
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => ClientError::Api {
                    status: status.as_u16(),
                    code: body.error.code,
                    message: body.error.message,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                },
            });
        }
        Ok((url, resp))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        self.call(Method::GET, path, query, None::<&()>).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get("/v1/health", &[]).await
    }

    /// `GET /v1/ready`: whether the node's store answers.
    pub async fn ready(&self) -> Result<Health, ClientError> {
        self.get("/v1/ready", &[]).await
    }

    /// `GET /openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/openapi.json", &[]).await
    }

    /// `GET /v1/workflows`.
    pub async fn workflows(&self) -> Result<Vec<WorkflowInfo>, ClientError> {
        self.get("/v1/workflows", &[]).await
    }

    /// `POST /v1/runs`.
    pub async fn submit(&self, req: &SubmitRunRequest) -> Result<RunSummary, ClientError> {
        self.post("/v1/runs", req).await
    }

    /// `POST /v1/runs` with an `Idempotency-Key`: repeating it (after a timeout, say) returns
    /// the run the first request created instead of starting another.
    pub async fn submit_idempotent(
        &self,
        req: &SubmitRunRequest,
        key: &str,
    ) -> Result<RunSummary, ClientError> {
        self.call_with(
            Method::POST,
            "/v1/runs",
            &[],
            &[("Idempotency-Key", key)],
            Some(req),
        )
        .await
    }

    /// `POST /v1/runs/{run_id}/cancel`.
    pub async fn cancel(&self, run_id: &str) -> Result<RunSummary, ClientError> {
        self.post(&format!("/v1/runs/{}/cancel", segment(run_id)), &())
            .await
    }

    /// `GET /v1/runs/{run_id}`, waiting up to `wait` for it to end.
    pub async fn run(&self, run_id: &str, wait: Duration) -> Result<RunDetail, ClientError> {
        self.run_with(run_id, wait, true).await
    }

    /// [`Client::run`], with its calls listed or only counted (`calls = false`, for polling).
    pub async fn run_with(
        &self,
        run_id: &str,
        wait: Duration,
        calls: bool,
    ) -> Result<RunDetail, ClientError> {
        // A request waits at most a minute: longer waits are several requests.
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let this = left.min(Duration::from_secs(60));
            let query = [
                ("wait_ms", this.as_millis().to_string()),
                ("calls", calls.to_string()),
            ];
            let detail: RunDetail = self
                .get(&format!("/v1/runs/{}", segment(run_id)), &query)
                .await?;
            if detail.run.status.is_final() || left <= this {
                return Ok(detail);
            }
        }
    }

    /// `GET /v1/runs`.
    pub async fn runs(&self, q: &RunsQuery) -> Result<RunPage, ClientError> {
        let mut query = Vec::new();
        push(&mut query, "workflow", &q.workflow);
        push(&mut query, "project", &q.project);
        push(&mut query, "domain", &q.domain);
        push(&mut query, "status", &q.status.map(status_name));
        push(&mut query, "schedule", &q.schedule);
        push(&mut query, "limit", &q.limit);
        push(&mut query, "cursor", &q.cursor);
        self.get("/v1/runs", &query).await
    }

    /// `GET /v1/schedules`.
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>, ClientError> {
        self.get("/v1/schedules", &[]).await
    }

    /// `POST /v1/schedules/{name}/pause`.
    pub async fn pause(&self, name: &str) -> Result<ScheduleInfo, ClientError> {
        self.post(&format!("/v1/schedules/{}/pause", segment(name)), &())
            .await
    }

    /// `POST /v1/schedules/{name}/resume`.
    pub async fn resume(&self, name: &str) -> Result<ScheduleInfo, ClientError> {
        self.post(&format!("/v1/schedules/{}/resume", segment(name)), &())
            .await
    }

    /// `POST /v1/schedules/{name}/backfill`.
    pub async fn backfill(
        &self,
        name: &str,
        req: &BackfillRequest,
    ) -> Result<BackfillResult, ClientError> {
        self.post(&format!("/v1/schedules/{}/backfill", segment(name)), req)
            .await
    }

    /// `GET /v1/cache/entries`.
    pub async fn entries(&self, q: &EntriesQuery) -> Result<EntryPage, ClientError> {
        let mut query = Vec::new();
        push(&mut query, "project", &q.project);
        push(&mut query, "domain", &q.domain);
        push(&mut query, "task", &q.task);
        push(&mut query, "version", &q.version);
        push(&mut query, "limit", &q.limit);
        push(&mut query, "cursor", &q.cursor);
        self.get("/v1/cache/entries", &query).await
    }

    /// `GET /v1/cache/entries/{key}`.
    pub async fn entry(&self, key: &str) -> Result<EntryDetail, ClientError> {
        self.get(&format!("/v1/cache/entries/{}", segment(key)), &[])
            .await
    }

    /// `GET /v1/blobs/{digest}`: writes the blob to `out` as it arrives and checks it against
    /// its BLAKE3 digest (a mismatch, or a transfer the node ended early, is an error: discard
    /// what was written). Returns the size.
    pub async fn blob(
        &self,
        digest: &str,
        out: &mut (impl std::io::Write + ?Sized),
    ) -> Result<u64, ClientError> {
        let path = format!("/v1/blobs/{}", segment(digest));
        let (url, mut resp) = self.send(Method::GET, &path, &[], &[], None::<&()>).await?;
        let mut hasher = blake3::Hasher::new();
        let mut size: u64 = 0;
        let broken = |detail: String| ClientError::Unreachable {
            url: url.clone(),
            detail,
        };
        while let Some(chunk) = resp.chunk().await.map_err(|e| broken(error_chain(&e)))? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk)
                .map_err(|e| broken(format!("writing the blob: {e}")))?;
        }
        out.flush()
            .map_err(|e| broken(format!("writing the blob: {e}")))?;
        let got = hasher.finalize().to_hex();
        if !got.as_str().eq_ignore_ascii_case(digest) {
            return Err(ClientError::Decode {
                url,
                detail: format!("the {size} bytes received have digest {got}, not {digest}"),
            });
        }
        Ok(size)
    }

    /// `POST /v1/cache/evict`.
    pub async fn evict(&self, req: &EvictRequest) -> Result<EvictResult, ClientError> {
        self.post("/v1/cache/evict", req).await
    }

    /// `POST /v1/cache/verify`.
    pub async fn verify(&self, req: &VerifyRequest) -> Result<VerifyResult, ClientError> {
        self.post("/v1/cache/verify", req).await
    }

    /// `POST /v1/cache/explain`.
    pub async fn explain(&self, req: &ExplainRequest) -> Result<Explanation, ClientError> {
        self.post("/v1/cache/explain", req).await
    }

    /// `GET /v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClientError> {
        self.get("/v1/nodes", &[]).await
    }
}

fn push<T: ToString>(query: &mut Vec<(&'static str, String)>, name: &'static str, v: &Option<T>) {
    if let Some(v) = v {
        query.push((name, v.to_string()));
    }
}

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

/// Percent-encodes a path segment (run ids and schedule names are user-chosen).
/// The whole body of an answer from `url`.
async fn body_of(url: &str, resp: reqwest::Response) -> Result<axum::body::Bytes, ClientError> {
    resp.bytes().await.map_err(|e| ClientError::Unreachable {
        url: url.to_string(),
        detail: error_chain(&e),
    })
}

fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The certificate problem behind a failed request, if that is why it failed.
fn tls_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(rustls::Error::InvalidCertificate(why)) = err.downcast_ref::<rustls::Error>() {
            return Some(format!(
                "its certificate is not trusted ({why:?}): give --ca (CAIRN_CA) with the CA \
                 certificate that signed it"
            ));
        }
        // io::Error's source() skips the error it wraps: step into that one instead.
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
