//! The edge of the token endpoints: the session token from the request, and
//! the parameters ably-js sends (`capability`, `clientId`, `ttl`, plus `format`)
//! from the query string or a form or JSON body, turned into typed values.

use std::time::Duration;

use actix_web::http::header;
use actix_web::HttpRequest;
use serde_json::Value;

use super::error::ApiError;
use crate::capability::Capability;
use crate::config::{Settings, TokenFormat, ABLY_MAX_TTL};
use crate::policy::Asked;
use crate::upstream::credential::{credential, CookieRoutes};
use crate::upstream::Credential;

/// The session credential: `Authorization: Bearer …` wins over cookies,
/// which are tried in the configured order (see `upstream::credential`).
pub(crate) fn session_credential(
    req: &HttpRequest,
    settings: &Settings,
) -> Result<Credential, ApiError> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    // Cookie headers that are not text hold no cookie of ours.
    let cookies = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok());
    let routes = CookieRoutes {
        issuers: &settings.issuers,
        session_cookies: &settings.server.session_cookies,
    };
    Ok(credential(authorization, cookies, &routes)?)
}

/// What the client asked for, and in which format it wants the answer.
#[derive(Debug, Default)]
pub(crate) struct TokenParams {
    pub(crate) asked: Asked,
    pub(crate) format: Option<TokenFormat>,
}

/// Merges query parameters with a form or JSON body; the body wins.
pub(crate) fn token_params(req: &HttpRequest, body: &[u8]) -> Result<TokenParams, ApiError> {
    let mut fields: Vec<(String, Value)> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    "the query string is not valid URL encoding",
                )
            })?
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
    if !body.is_empty() {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match content_type.as_str() {
            "application/x-www-form-urlencoded" => {
                let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
                    ApiError::bad_request("invalid_body", "the form body is not valid URL encoding")
                })?;
                fields.extend(form.into_iter().map(|(k, v)| (k, Value::String(v))));
            }
            "application/json" => {
                let Value::Object(map) = serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request("invalid_body", format!("the JSON body is malformed: {e}"))
                })?
                else {
                    return Err(ApiError::bad_request("invalid_body", "the JSON body must be an object"));
                };
                fields.extend(map);
            }
            other => {
                return Err(ApiError::bad_request(
                    "unsupported_content_type",
                    format!(
                        "content-type {other:?} is not accepted: send application/x-www-form-urlencoded or application/json"
                    ),
                ))
            }
        }
    }
    let mut params = TokenParams::default();
    // Later fields (the body) override earlier ones (the query).
    for (name, value) in fields {
        match name.as_str() {
            "capability" => params.asked.capability = capability(&value)?,
            "clientId" => params.asked.client_id = text(&value, "clientId")?,
            "ttl" => params.asked.ttl = ttl(&value)?,
            "format" => params.format = format(&value)?,
            // ably-js adds `rnd`, `timestamp` and the app's authParams.
            _ => {}
        }
    }
    Ok(params)
}

fn text(value: &Value, name: &str) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError::bad_request(
            "invalid_request",
            format!("{name} must be a string"),
        )),
    }
}

fn capability(value: &Value) -> Result<Option<Capability>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Capability::parse_json(s)
            .map(Some)
            .map_err(ApiError::invalid_capability),
        object @ Value::Object(_) => Capability::from_value(object)
            .map(Some)
            .map_err(ApiError::invalid_capability),
        _ => Err(ApiError::bad_request(
            "invalid_capability",
            "capability must be a JSON object or its text",
        )),
    }
}

fn ttl(value: &Value) -> Result<Option<Duration>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_ttl",
            "ttl must be a whole number of milliseconds between 1 and 86400000",
        )
    };
    let ms = match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::String(s) => s.trim().parse::<u64>().map_err(|_| bad())?,
        Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if ms == 0 {
        return Err(bad());
    }
    // Above Ably's ceiling is lowered to the allowed maximum later, as Ably
    // itself would refuse it; only absurd values are errors here.
    Ok(Some(Duration::from_millis(ms).min(ABLY_MAX_TTL * 365)))
}

fn format(value: &Value) -> Result<Option<TokenFormat>, ApiError> {
    if value.is_null() {
        return Ok(None);
    }
    match value.as_str() {
        Some("") => Ok(None),
        None => Err(ApiError::bad_request(
            "invalid_format",
            "format must be the string \"jwt\" or \"token_request\"",
        )),
        Some("jwt") => Ok(Some(TokenFormat::Jwt)),
        Some("token_request" | "tokenrequest" | "token-request") => {
            Ok(Some(TokenFormat::TokenRequest))
        }
        Some(other) => Err(ApiError::bad_request(
            "invalid_format",
            format!("format {other:?} is not known: use \"jwt\" or \"token_request\""),
        )),
    }
}
