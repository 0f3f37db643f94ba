//! Static files, embedded in the binary: htmx 2.0.4 (0BSD, `deploy/assets/`, pinned by its
//! SHA-256 in a test), the stylesheet and the dashboard's own script.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The htmx release embedded (its file name carries the version, so it can be cached forever).
pub(super) const HTMX: &str = "/assets/htmx-2.0.4.min.js";
/// The stylesheet's path.
pub(super) const CSS: &str = "/assets/dashboard.css";
/// The script's path.
pub(super) const JS: &str = "/assets/dashboard.js";

const FILES: [(&str, &str, &str); 3] = [
    (
        "htmx-2.0.4.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/htmx-2.0.4.min.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../../../assets/dashboard.css"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/dashboard.js"),
    ),
];

pub(super) async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((name, mime, body)) => {
            // htmx's name is versioned; the others change with the binary.
            let cache = if name.starts_with("htmx-") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [
                    (header::CONTENT_TYPE, *mime),
                    (header::CACHE_CONTROL, cache),
                ],
                *body,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::FILES;
    use sha2::Digest;

    /// The embedded htmx is the release it claims to be (SHA-256 of htmx.org@2.0.4's
    /// `dist/htmx.min.js` from the npm registry).
    #[test]
    fn htmx_is_the_pinned_release() {
        let digest = sha2::Sha256::digest(FILES[0].2.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447"
        );
    }
}
