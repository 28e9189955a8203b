//! `GET /dev/session?sub=alice&roles=support`: a session token from the
//! development issuer, served only by `ably-tokend dev` (loopback).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::routes::Route;
use super::AppState;

#[derive(Deserialize)]
pub(crate) struct SessionQuery {
    sub: Option<String>,
    /// Comma-separated role names.
    roles: Option<String>,
    /// Lifetime in seconds (default 3600).
    ttl: Option<u64>,
}

pub(crate) async fn mint(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Parsed here rather than by an extractor, so a bad query gets Ably's error shape.
    let query = web::Query::<SessionQuery>::from_query(req.query_string()).map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "use /dev/session?sub=NAME&roles=a,b&ttl=SECONDS (ttl a whole number)",
        )
    })?;
    let issuer = state
        .dev_issuer
        .as_ref()
        .ok_or_else(|| ApiError::NotFound(Route::DevSession.path().into()))?;
    let sub = query.sub.clone().unwrap_or_else(|| "dev-user".into());
    if sub.is_empty() || sub.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "sub must be 1 to 256 bytes",
        ));
    }
    let roles: Vec<String> = query
        .roles
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    let ttl = query.ttl.unwrap_or(3600).clamp(1, 86400);
    let token = issuer.mint(&sub, &roles, state.clock.now_secs(), ttl);
    Ok(HttpResponse::Ok().content_type("text/plain").body(token))
}
