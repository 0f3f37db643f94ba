//! The API's handlers, one file per resource; the route table ([`super::routes`]) names them.

pub(super) mod cache;
pub(super) mod node;
pub(super) mod runs;
pub(super) mod schedules;

use super::error::ApiError;

pub(super) type ApiResult<T> = Result<axum::Json<T>, ApiError>;

/// Longest wait of `GET /v1/runs/{run_id}?wait_ms=`.
pub(super) const MAX_WAIT_MS: u64 = 60_000;

/// Largest page of a listing.
pub(super) const MAX_PAGE: usize = 1_000;

/// A listing's page size: 50 unless asked, 1 to [`MAX_PAGE`].
pub(super) fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid(format!(
            "limit is {n}; pages hold 1 to {MAX_PAGE} items"
        ))),
    }
}
