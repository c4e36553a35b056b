//! RFC 8058 one-click unsubscribe over plain HTTP on the gRPC port: `POST /unsubscribe/{token}`
//! with the body `List-Unsubscribe=One-Click`, which mail clients send when a person presses
//! "unsubscribe". No cookie, no login, no redirect: the token is the whole credential, the
//! answer is 200 with a line of text. A GET (a person following the link, or a mail scanner
//! prefetching it) never unsubscribes: it answers with a page holding a button that POSTs.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State as Shared};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tutela_policy::methods::UNSUBSCRIBE_PATH;
use tutela_policy::{Error, TokenCall};

use super::{ONE_CLICK, Subscriptions};

/// The route's template, `/unsubscribe/{token}`: what logs and spans may name it by (the token
/// is a credential).
pub fn route() -> String {
    format!("{UNSUBSCRIBE_PATH}{{token}}")
}

/// The routes to merge into the server's router, under the prefix the guard lets through (the
/// token in the path authorises the call).
pub fn router(subs: Subscriptions) -> Router {
    Router::new()
        .route(&route(), post(one_click).get(landing))
        .with_state(subs)
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn one_click(
    Shared(subs): Shared<Subscriptions>,
    Path(token): Path<String>,
    Extension(call): Extension<TokenCall>,
    body: Bytes,
) -> Response {
    // RFC 8058 says the body is `List-Unsubscribe=One-Click`; an empty body (a plain form or
    // a client that drops it) is accepted too, since the token alone authorises the action.
    let body = String::from_utf8_lossy(&body);
    let body = body.trim();
    if !body.is_empty() && body != ONE_CLICK {
        return text(
            StatusCode::BAD_REQUEST,
            "expected the body List-Unsubscribe=One-Click\n",
        );
    }
    match subs.unsubscribe_with_token(&token, &call).await {
        Ok(_) => text(StatusCode::OK, "You are unsubscribed.\n"),
        Err(Error::Unauthenticated(_) | Error::NotFound(_)) => text(
            StatusCode::NOT_FOUND,
            "This unsubscribe link is not valid.\n",
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unsubscribing is unavailable right now; please try again.\n",
        ),
    }
}

async fn landing(Path(token): Path<String>, Extension(call): Extension<TokenCall>) -> Response {
    // The guard audits every call on this path; this one shows a page and changes nothing.
    call.noted("unsubscribe page shown");
    // The token is base64url: nothing in it needs escaping, but anything else is refused
    // rather than echoed into HTML.
    if token.is_empty()
        || token.len() > 128
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return text(
            StatusCode::NOT_FOUND,
            "This unsubscribe link is not valid.\n",
        );
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
         <body><form method=\"post\" action=\"{UNSUBSCRIBE_PATH}{token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form></body></html>"
    );
    let mut response = (StatusCode::OK, page).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
