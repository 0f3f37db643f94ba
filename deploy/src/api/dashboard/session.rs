//! Sessions, the token prompt and CSRF.
//!
//! - A node without a token gives every browser a session on its first page; a node with one
//!   asks for the token once (`/login`) and shows nothing, not even a run id, before.
//! - The session cookie is random (256 bits from the OS-seeded generator), HttpOnly and
//!   SameSite=Strict, and is remembered for 12 hours by this node only.
//! - Every form that changes state carries the session's CSRF token in a hidden field, and is
//!   refused (403) unless that field matches and the browser says the request came from this
//!   origin (`Origin`, `Sec-Fetch-Site`). SameSite alone is not enough: another port of the
//!   same host is the same *site*.

pub(crate) use super::Session;
use super::layout;
use crate::api::AppState;
use crate::api::error::ApiError;
use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "cairn_session";
/// How long a session lasts.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions remembered at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// Sessions of this node.
#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, (Session, Instant)>>,
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Session> {
        let live = self.live.lock();
        let (session, born) = live.get(id)?;
        (born.elapsed() < LIFETIME).then(|| session.clone())
    }

    /// A new session: its cookie value and itself.
    fn create(&self, signed_in: bool) -> (String, Session) {
        let id = random_hex();
        let session = Session {
            csrf: random_hex().into(),
            signed_in,
        };
        let mut live = self.live.lock();
        live.retain(|_, (_, born)| born.elapsed() < LIFETIME);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, (_, born))| *born)
                .map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), (session.clone(), Instant::now()));
        (id, session)
    }

    fn remove(&self, id: &str) {
        self.live.lock().remove(id);
    }
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

fn set_cookie(id: &str, https: bool) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if https { "; Secure" } else { "" }
    ))
    .expect("hex is a valid header value")
}

/// The request came from a page of this origin, as far as the browser tells: `Origin` (when
/// sent) names this host, and `Sec-Fetch-Site` (when sent) is `same-origin`.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err("the form was sent from another site");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin = origin.to_str().unwrap_or("");
        let matches = host
            .is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"));
        if !matches {
            return Err("the form's Origin is not this dashboard");
        }
    }
    Ok(())
}

/// A 403 page for a refused form.
fn refused(why: &str) -> Response {
    let body = layout::bare(
        "Refused",
        html! {
            h1 { "Refused" }
            p.error role="alert" { "This request was refused: " (why) ". Reload the page and submit the form again." }
        },
    );
    (StatusCode::FORBIDDEN, body).into_response()
}

/// Checks a state-changing form's CSRF field against the session: the refusal when it does
/// not match.
pub(super) fn csrf_refusal(session: &Session, given: &str) -> Option<Response> {
    (!crate::api::constant_time_eq(given.as_bytes(), session.csrf.as_bytes()))
        .then(|| refused("the form's CSRF token does not match this session"))
}

/// Lets a request through with its [`Session`] (in the request's extensions), or answers it:
/// the token prompt, or 403 for a change that did not come from this dashboard.
pub(super) async fn guard(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let reads = req.method() == Method::GET || req.method() == Method::HEAD;
    if !reads && let Err(why) = same_origin(req.headers()) {
        return refused(why);
    }
    let sessions = &app.dashboard.sessions;
    if let Some(session) = cookie_of(req.headers()).and_then(|id| sessions.get(&id)) {
        req.extensions_mut().insert(session);
        return with_headers(next.run(req).await);
    }
    if !reads {
        return refused("this browser has no session with this node");
    }
    if app.token.is_some() {
        // Nothing is shown without the token: the prompt, then back here.
        let path = req
            .uri()
            .path_and_query()
            .map_or("/runs", |p| p.as_str())
            .to_string();
        if req.headers().contains_key("hx-request") {
            return (StatusCode::UNAUTHORIZED, "sign in again").into_response();
        }
        return Redirect::to(&format!("/login?next={}", urlencode(&path))).into_response();
    }
    let (id, session) = sessions.create(false);
    req.extensions_mut().insert(session);
    let mut response = with_headers(next.run(req).await);
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(&id, app.dashboard.https));
    response
}

/// Headers of every page: no framing, scripts from this origin only.
fn with_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A local path to go back to (never another site: `//host` and `/\host` are refused).
pub(super) fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\") => {
            p.to_string()
        }
        _ => "/runs".to_string(),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

fn login_form(next: &str, problem: Option<&str>) -> maud::Markup {
    layout::bare(
        "Sign in",
        html! {
            h1 { "This node requires its token" }
            @if let Some(p) = problem { p.error role="alert" { (p) } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "API token (as given to cairn up with --token or --token-file)" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}

pub(super) async fn login_page(
    State(app): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    let next = local_path(q.next.as_deref());
    if app.token.is_none() {
        return Redirect::to(&next).into_response();
    }
    with_headers(login_form(&next, None).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

pub(super) async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(why) = same_origin(&headers) {
        return refused(why);
    }
    let next = local_path(form.next.as_deref());
    let Some(expected) = &app.token else {
        return Redirect::to(&next).into_response();
    };
    if !crate::api::constant_time_eq(form.token.as_bytes(), expected.as_bytes()) {
        let page = login_form(&next, Some("That is not this node's token."));
        return with_headers((StatusCode::UNAUTHORIZED, page).into_response());
    }
    let (id, _) = app.dashboard.sessions.create(true);
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(&id, app.dashboard.https));
    response
}

/// A form whose only field is its CSRF token (logout, cancel, pause, resume).
#[derive(serde::Deserialize)]
pub(super) struct CsrfForm {
    pub(super) csrf: String,
}

pub(super) async fn logout(
    State(app): State<AppState>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&session, &form.csrf) {
        return r;
    }
    if let Some(id) = cookie_of(&headers) {
        app.dashboard.sessions.remove(&id);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("cairn_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// An API error as a page, with its status.
pub(super) fn error_page(e: ApiError) -> Response {
    let body = layout::bare(
        "Error",
        html! {
            h1 { "Error" }
            p.error role="alert" { code { (e.code) } ": " (e.message) }
            p { a href="/runs" { "Back to runs" } }
        },
    );
    (e.status, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/runs/r1")), "/runs/r1");
        assert_eq!(local_path(Some("//evil.example")), "/runs");
        assert_eq!(local_path(Some("/\\evil.example")), "/runs");
        assert_eq!(local_path(Some("https://evil.example")), "/runs");
        assert_eq!(local_path(None), "/runs");
    }

    #[test]
    fn forms_from_another_origin_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7070"));
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7070"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9999"),
        );
        assert!(same_origin(&h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7070"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(same_origin(&h).is_err());
    }
}
