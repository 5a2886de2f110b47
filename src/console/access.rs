//! Who may read the console: loopback requests without a token, else the token as a bearer
//! header or the sign-in form's cookie (derived from it); the sign-in page.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{frame, html, page_html, Console};

/// The cookie the login form sets.
const COOKIE: &str = "chiso_console_token";

/// The sign-in cookie's value for `token`: derived from it, never the token itself (the cookie
/// is no bearer token for /status and /metrics, and is always a valid cookie value).
pub fn cookie_value(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("chiso console sign-in\n{token}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who is reading.
#[derive(Clone, Copy)]
pub(super) struct Reader {
    /// Gave the console's token (officer names are shown).
    pub(super) officer: bool,
}

/// The sign-in cookie's value, if the request carries one.
fn signed_in(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
        .next()
}

/// Whether the request names this machine (`127.0.0.1`, `localhost`, `[::1]`, any port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    matches!(name, "127.0.0.1" | "localhost" | "::1")
}

/// Every console route takes a `Reader`: the request is refused (421, 401, or sent to sign
/// in) before the handler runs when it may not read.
impl axum::extract::FromRequestParts<Arc<Console>> for Reader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Arc<Console>,
    ) -> Result<Reader, Response> {
        let headers = &parts.headers;
        if !console.any_host && !loopback_host(headers) {
            return Err((
                StatusCode::MISDIRECTED_REQUEST,
                "the console answers only requests to 127.0.0.1 or localhost without a token\n",
            )
                .into_response());
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let by_cookie = match (&console.cookie, signed_in(headers)) {
            (Some(expected), Some(given)) => {
                use sha2::{Digest, Sha256};
                Sha256::digest(expected.as_bytes()) == Sha256::digest(given.as_bytes())
            }
            _ => false,
        };
        let by_bearer = bearer.is_some() && console.daemon.authorised(bearer);
        if !(by_cookie || by_bearer || console.daemon.authorised(None)) {
            return Err(if wants_html(headers) {
                Redirect::to("/console/login").into_response()
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "a bearer token is required (CHISO_HTTP_TOKEN)\n",
                )
                    .into_response()
            });
        }
        Ok(Reader {
            officer: console.daemon.has_token() && (by_cookie || by_bearer),
        })
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

pub(super) async fn login_form(State(console): State<Arc<Console>>) -> Response {
    login_page(&console, false)
}

/// The sign-in page; `failed` after a wrong token (401).
fn login_page(console: &Console, failed: bool) -> Response {
    let body = page_html(
        console,
        "login.html",
        minijinja::context! {
            frame => minijinja::value::Serde(frame("Đăng nhập".into(), "login", console.published.mark())),
            failed => failed,
            token_set => console.daemon.has_token(),
        },
    );
    match body {
        Ok(b) if failed => (StatusCode::UNAUTHORIZED, html(b)).into_response(),
        Ok(b) => html(b),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "The console's sign-in page failed.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Lỗi nội bộ (internal error; the daemon's log says why).",
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
pub(super) struct Login {
    token: String,
}

pub(super) async fn login(State(console): State<Arc<Console>>, Form(f): Form<Login>) -> Response {
    let given = format!("Bearer {}", f.token);
    if let Some(value) = console
        .cookie
        .as_ref()
        .filter(|_| console.daemon.authorised(Some(&given)))
    {
        // Derived from the token (hex), sent back only to /console, never to a script.
        let cookie = format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict");
        let mut r = Redirect::to("/console/ranking").into_response();
        r.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).expect("hex is a valid header value"),
        );
        return r;
    }
    login_page(&console, true)
}
