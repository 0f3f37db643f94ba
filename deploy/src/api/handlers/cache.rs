//! The cache: list, read, evict, verify and explain entries.

use super::{ApiResult, page_size};
use crate::api::AppState;
use crate::api::error::{ApiError, Json, Path, Query};
use crate::api::types::*;
use crate::api::views;
use axum::extract::State;
use axum::http::StatusCode;
use cairn_engine::catalog::{Digest, EvictScope};

pub(in crate::api) async fn list_entries(
    State(app): State<AppState>,
    Query(q): Query<EntriesQuery>,
) -> ApiResult<EntryPage> {
    if q.version.is_some() && q.task.is_none() {
        return Err(ApiError::invalid("`version` needs `task`"));
    }
    let project = q.project.as_deref().unwrap_or("default");
    let domain = q.domain.as_deref().unwrap_or("development");
    let page = app
        .node
        .catalog()
        .list_entries(
            project,
            domain,
            q.task.as_deref(),
            q.version.as_deref(),
            page_size(q.limit)?,
            q.cursor.as_deref(),
        )
        .await?;
    Ok(axum::Json(EntryPage {
        entries: page.entries.iter().map(views::entry).collect(),
        corrupt: views::corrupt(&page.corrupt),
        next: page.next,
    }))
}

pub(in crate::api) async fn stats(
    State(app): State<AppState>,
    Query(q): Query<StatsQuery>,
) -> ApiResult<TaskStatsInfo> {
    let project = q.project.as_deref().unwrap_or("default");
    let domain = q.domain.as_deref().unwrap_or("development");
    let stats = app
        .node
        .catalog()
        .task_stats(project, domain, &q.task)
        .await?;
    Ok(axum::Json(views::task_stats(
        project, domain, &q.task, &stats,
    )))
}

fn parse_key(key: &str) -> Result<Digest, ApiError> {
    Digest::from_hex(key)
        .ok_or_else(|| ApiError::invalid(format!("cache key {key:?} is not 32 hexadecimal digits")))
}

pub(in crate::api) async fn get_entry(
    State(app): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<EntryDetail> {
    let digest = parse_key(&key)?;
    let hit = app
        .node
        .catalog()
        .entry(&digest)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cache entry {key}")))?;
    // The output decodes only with the task's types; a node without the task shows its size.
    let output = app
        .node
        .registry()
        .get(&hit.meta.key.task)
        .and_then(|t| t.output_to_json(&hit.output).ok());
    Ok(axum::Json(EntryDetail {
        entry: views::entry(&hit.meta),
        output,
    }))
}

pub(in crate::api) async fn get_blob(
    State(app): State<AppState>,
    Path(digest): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use tokio::io::AsyncReadExt;
    let d: cairn_engine::blobs::BlobDigest = digest.parse().map_err(|_| {
        ApiError::invalid(format!(
            "blob digest {digest:?} is not 64 hexadecimal digits"
        ))
    })?;
    let blobs = app.node.catalog().blobs();
    let size = blobs
        .size(&d)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no blob {d} in the store")))?;
    // Written into one end of a pipe a page of chunks at a time, read from the other as the
    // body: a large blob is never held whole in memory.
    let (reader, writer) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        if let Err(e) = blobs.write_to(&d, writer).await {
            tracing::warn!(error = %e, blob = %d, "a blob's transfer stopped");
        }
    });
    let stream = futures::stream::unfold(reader, |mut reader| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    });
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
        .header(axum::http::header::CONTENT_LENGTH, size)
        .body(axum::body::Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

pub(in crate::api) async fn evict(
    State(app): State<AppState>,
    Json(req): Json<EvictRequest>,
) -> ApiResult<EvictResult> {
    let scope = match req {
        EvictRequest::Key { key } => EvictScope::Key(parse_key(&key)?),
        EvictRequest::Task {
            project,
            domain,
            task,
            version,
        } => EvictScope::Task {
            project,
            domain,
            task,
            version,
        },
        EvictRequest::ProjectDomain { project, domain } => {
            EvictScope::ProjectDomain { project, domain }
        }
        EvictRequest::Execution { execution } => EvictScope::Execution(execution),
    };
    let evicted = app.node.catalog().evict(&scope).await?;
    Ok(axum::Json(EvictResult { evicted }))
}

pub(in crate::api) async fn verify(
    State(app): State<AppState>,
    Json(req): Json<VerifyRequest>,
) -> ApiResult<VerifyResult> {
    let report = app
        .node
        .catalog()
        .verify(&req.project, &req.domain, req.task.as_deref(), req.repair)
        .await?;
    Ok(axum::Json(VerifyResult {
        checked: report.checked,
        corrupt: views::corrupt(&report.corrupt),
        repaired: report.repaired,
    }))
}

pub(in crate::api) async fn explain(
    State(app): State<AppState>,
    Json(req): Json<ExplainRequest>,
) -> ApiResult<Explanation> {
    // Names were checked as the body was read (`types.rs`).
    let task = app.node.registry().get(&req.task).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_task",
            format!("unknown task {:?} (not registered on this node)", req.task),
        )
    })?;
    let key = task.key_for_json(&req.project, &req.domain, &req.input)?;
    let catalog = app.node.catalog();
    let explanation = catalog.explain(&key).await?;
    // What the task can say about each changed input of the nearest entries (the files a
    // command task's input changed in), from their stored outputs.
    let mut details = Vec::new();
    if let cairn_engine::catalog::Explanation::Miss { nearest, .. } = &explanation {
        for d in nearest {
            let changed: Vec<String> = d
                .inputs
                .iter()
                .filter_map(|i| match i {
                    cairn_engine::catalog::InputDiff::Changed(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            let mut described = std::collections::BTreeMap::new();
            if !changed.is_empty()
                && let Some(stored) = catalog.entry(&d.entry).await?
            {
                let said = task
                    .describe_changes(&req.input, &stored.output, &changed)
                    .await;
                for (name, detail) in changed.into_iter().zip(said) {
                    if let Some(detail) = detail {
                        described.insert(name, detail);
                    }
                }
            }
            details.push(described);
        }
    }
    Ok(axum::Json(views::explanation(&key, &explanation, &details)))
}
