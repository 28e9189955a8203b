//! The REST side of the broker: `/time`, token requests, publish, history and
//! presence. Answers in the client's format (`Accept: application/x-msgpack`
//! or JSON); errors always in Ably's JSON shape with its headers.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::auth::Credentials;
use super::hub::{Direction, HistoryQuery};
use super::message::{
    identified_by, message_size, random_id, speaker, stored_message, valid_channel_name,
};
use super::protocol::{self, action, AblyError, Format};
use super::BrokerState;
use crate::capability::Operation;

pub(crate) const MAX_REST_BODY: usize = 1024 * 1024;

impl actix_web::ResponseError for AblyError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST)
    }

    fn error_response(&self) -> HttpResponse {
        crate::ably_error::ErrorResponse::new(self.status_code(), self.code, &self.message).render()
    }
}

fn response_format(req: &HttpRequest) -> Format {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/x-msgpack") {
        Format::MsgPack
    } else {
        Format::Json
    }
}

fn respond(req: &HttpRequest, status: StatusCode, body: &Value) -> HttpResponse {
    let format = response_format(req);
    let content_type = match format {
        Format::MsgPack => "application/x-msgpack",
        Format::Json => "application/json",
    };
    HttpResponse::build(status)
        .insert_header(("content-type", content_type))
        .body(protocol::encode_bytes(body, format))
}

fn body_value(req: &HttpRequest, body: &[u8]) -> Result<Value, AblyError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = if content_type.starts_with("application/x-msgpack") {
        Format::MsgPack
    } else {
        Format::Json
    };
    protocol::decode(body, format)
        .map_err(|e| AblyError::new(40000, 400, format!("the request body is malformed: {e}")))
}

/// Credentials from `Authorization`: Basic with the key (loopback only), or
/// Bearer with a token (ably-js base64-encodes it; a raw token works too).
fn authenticate(req: &HttpRequest, state: &BrokerState) -> Result<Credentials, AblyError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            AblyError::new(
                40101,
                401,
                "no credentials: send Authorization: Basic (key) or Bearer (token)",
            )
        })?;
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        if !req.peer_addr().is_some_and(|a| a.ip().is_loopback()) {
            return Err(AblyError::new(
                40101,
                401,
                "basic (API key) auth is accepted only from loopback",
            ));
        }
        let decoded = STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| AblyError::new(40101, 401, "malformed basic credentials"))?;
        return state.auth.authenticate_key(&decoded);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let value = value.trim();
        let decoded = STANDARD
            .decode(value)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        return match decoded {
            Some(token) => state.auth.authenticate_token(&token).or_else(|e| {
                // Only fall back to the raw value when it was never base64.
                state.auth.authenticate_token(value).map_err(|_| e)
            }),
            None => state.auth.authenticate_token(value),
        };
    }
    Err(AblyError::new(
        40101,
        401,
        "unsupported authorization scheme",
    ))
}

fn require(credentials: &Credentials, channel: &str, op: Operation) -> Result<(), AblyError> {
    if credentials.capability.allows(channel, op) {
        Ok(())
    } else {
        Err(AblyError::new(
            40160,
            401,
            format!("channel {channel:?}: the capability does not permit {op}"),
        ))
    }
}

pub(crate) async fn time(state: web::Data<BrokerState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("content-type", "application/json"))
        .body(format!("[{}]", state.hub.now_ms()))
}

pub(crate) async fn request_token(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    let value = body_value(&req, &body)?;
    let details = state.auth.request_token(&path.into_inner(), &value)?;
    // ably-js parses TokenDetails as JSON whatever format it uses elsewhere.
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "application/json"))
        .body(details.to_string()))
}

pub(crate) async fn publish(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    let channel = path.into_inner();
    valid_channel_name(&channel).map_err(|why| AblyError::new(40010, 400, why))?;
    let credentials = authenticate(&req, &state)?;
    require(&credentials, &channel, Operation::Publish)?;
    let items = match body_value(&req, &body)? {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(AblyError::new(
                40000,
                400,
                "the body must be a message or an array of messages",
            ))
        }
    };
    if items.is_empty() || items.len() > 1000 {
        return Err(AblyError::new(
            40000,
            400,
            "publish 1 to 1000 messages at a time",
        ));
    }
    let size: usize = items.iter().map(message_size).sum();
    if size > state.limits.max_message_size {
        return Err(AblyError::new(
            40009,
            400,
            format!("maximum message length exceeded: {size} bytes"),
        ));
    }
    let now = state.hub.now_ms();
    let base = format!("rest-{}", random_id(12));
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let client_id = speaker(
            identified_by(&credentials),
            &credentials,
            item.get("clientId"),
        )?;
        messages.push(stored_message(
            item,
            format!("{base}:{i}"),
            client_id,
            None,
            now,
        ));
    }
    let serials: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
    let delivery = json!({
        "action": action::MESSAGE,
        "channel": channel,
        "id": base,
        "timestamp": now,
        "messages": messages,
    });
    // REST publishes are not bound by the channel limits, as before.
    state
        .hub
        .publish(&channel, delivery, None, None)
        .expect("without limits a publish is always admitted");
    Ok(respond(
        &req,
        StatusCode::CREATED,
        &json!({"channel": channel, "serials": serials}),
    ))
}

#[derive(serde::Deserialize)]
pub(crate) struct HistoryParams {
    limit: Option<String>,
    direction: Option<String>,
    start: Option<String>,
    end: Option<String>,
    cursor: Option<String>,
}

fn parse_number(value: &Option<String>, name: &str) -> Result<Option<u64>, AblyError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| AblyError::new(40003, 400, format!("{name} must be a whole number")))
        })
        .transpose()
}

pub(crate) async fn history(
    req: HttpRequest,
    path: web::Path<String>,
    params: web::Query<HistoryParams>,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    let channel = path.into_inner();
    let credentials = authenticate(&req, &state)?;
    require(&credentials, &channel, Operation::History)?;
    let limit = parse_number(&params.limit, "limit")?.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(AblyError::new(
            40003,
            400,
            "limit must be between 1 and 1000",
        ));
    }
    let direction = match params.direction.as_deref() {
        None | Some("") | Some("backwards") => Direction::Backwards,
        Some("forwards") => Direction::Forwards,
        Some(other) => {
            return Err(AblyError::new(
                40003,
                400,
                format!("direction {other:?} is neither backwards nor forwards"),
            ))
        }
    };
    let query = HistoryQuery {
        limit: limit as usize,
        direction,
        start: parse_number(&params.start, "start")?,
        end: parse_number(&params.end, "end")?,
        cursor: parse_number(&params.cursor, "cursor")?,
    };
    let page = state.hub.history(&channel, &query);
    let mut response = respond(&req, StatusCode::OK, &Value::Array(page.messages));
    if let Some(cursor) = page.next {
        // ably-js reuses only the query string of a `./messages?…` link, so it
        // carries every parameter.
        let mut link = format!(
            "./messages?limit={limit}&direction={}&cursor={cursor}",
            match direction {
                Direction::Backwards => "backwards",
                Direction::Forwards => "forwards",
            }
        );
        if let Some(start) = query.start {
            link.push_str(&format!("&start={start}"));
        }
        if let Some(end) = query.end {
            link.push_str(&format!("&end={end}"));
        }
        response.headers_mut().insert(
            header::LINK,
            header::HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")).expect("ASCII link"),
        );
    }
    Ok(response)
}

pub(crate) async fn presence(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    let channel = path.into_inner();
    let credentials = authenticate(&req, &state)?;
    require(&credentials, &channel, Operation::Subscribe)?;
    Ok(respond(
        &req,
        StatusCode::OK,
        &Value::Array(state.hub.members(&channel)),
    ))
}

pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    let path: String = req.path().chars().take(200).collect();
    actix_web::ResponseError::error_response(&AblyError::new(
        40400,
        404,
        format!("no broker route {} {path}", req.method()),
    ))
}
