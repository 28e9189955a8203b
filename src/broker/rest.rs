//! The REST side of the broker: `/time`, token requests, publish (one
//! channel and batch), message and presence history, presence, channel
//! status and stats. Every answer is in the client's format
//! (`Accept: application/x-msgpack` or JSON); errors always in Ably's JSON
//! shape with its headers.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::auth::Credentials;
use super::hub::{Direction, HistoryKind, HistoryQuery};
use super::message::{
    identified_by, message_size, random_id, speaker, stored_message, supplied_id,
    valid_channel_name,
};
use super::protocol::{self, action, AblyError, Format};
use super::BrokerState;
use crate::capability::Operation;

pub(crate) const MAX_REST_BODY: usize = 1024 * 1024;

/// Most messages in one publish, to one channel or per batch spec.
const MAX_MESSAGES_PER_PUBLISH: usize = 1000;
/// Most channel publishes (specs × their channels) in one batch request.
pub(crate) const MAX_BATCH_PUBLISHES: usize = 100;
/// Longest `X-Ably-ClientId` header (base64) read.
const MAX_CLIENT_ID_HEADER: usize = 1024;
/// Most entries on one page of history or stats (RSL2b3, RSC6b3).
const MAX_PAGE: u64 = 1000;

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

/// Who a REST request speaks as: its credentials, and the clientId it is
/// identified by — the credentials', or the one a key-authenticated client
/// (or a wildcard token) names in `X-Ably-ClientId` (RSA7e2), base64 of UTF-8.
struct Caller {
    credentials: Credentials,
    identified: Option<String>,
}

fn caller(req: &HttpRequest, state: &BrokerState) -> Result<Caller, AblyError> {
    let credentials = authenticate(req, state)?;
    let own = identified_by(&credentials).map(str::to_string);
    let Some(header) = req.headers().get("x-ably-clientid") else {
        return Ok(Caller {
            credentials,
            identified: own,
        });
    };
    let malformed = || {
        AblyError::new(
            40000,
            400,
            "X-Ably-ClientId must be the clientId in base64 (UTF-8), at most 1024 characters",
        )
    };
    let header = header.to_str().map_err(|_| malformed())?.trim();
    if header.len() > MAX_CLIENT_ID_HEADER {
        return Err(malformed());
    }
    let asked = STANDARD
        .decode(header)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|c| !c.is_empty() && c != "*")
        .ok_or_else(malformed)?;
    let mismatch = || {
        AblyError::new(
            40102,
            401,
            format!("X-Ably-ClientId {asked:?} does not match the credentials' clientId"),
        )
    };
    let identified = match own {
        Some(own) if own == asked => own,
        Some(_) => return Err(mismatch()),
        // Only credentials that may assume any clientId may name one.
        None => speaker(None, &credentials, Some(&Value::String(asked.clone())))
            .map_err(|_| mismatch())?
            .unwrap_or(asked),
    };
    Ok(Caller {
        credentials,
        identified: Some(identified),
    })
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

pub(crate) async fn time(req: HttpRequest, state: web::Data<BrokerState>) -> HttpResponse {
    respond(&req, StatusCode::OK, &json!([state.hub.now_ms()]))
}

pub(crate) async fn request_token(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    let value = body_value(&req, &body)?;
    let details = state.auth.request_token(&path.into_inner(), &value)?;
    // ably-js asks for TokenDetails in JSON whatever format it uses elsewhere.
    Ok(respond(&req, StatusCode::OK, &details))
}

/// One message or an array of them, as a publish body holds them.
fn message_list(value: Value) -> Result<Vec<Value>, AblyError> {
    let items = match value {
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
    if items.is_empty() || items.len() > MAX_MESSAGES_PER_PUBLISH {
        return Err(AblyError::new(
            40000,
            400,
            format!("publish 1 to {MAX_MESSAGES_PER_PUBLISH} messages at a time"),
        ));
    }
    if !items.iter().all(Value::is_object) {
        return Err(AblyError::new(40000, 400, "each message must be an object"));
    }
    Ok(items)
}

/// What a publish to one channel answers (RSL1, BSP2): the id prefixed to
/// each message's id, and the messages' serials.
struct Published {
    message_id: String,
    serials: Vec<Value>,
}

/// Publishes `items` to `channel` as `caller`: the capability, the size
/// limit and the clientId rule single and batch publish share.
fn publish_to(
    state: &BrokerState,
    caller: &Caller,
    channel: &str,
    items: &[Value],
) -> Result<Published, AblyError> {
    valid_channel_name(channel).map_err(|why| AblyError::new(40010, 400, why))?;
    require(&caller.credentials, channel, Operation::Publish)?;
    let size: usize = items.iter().map(message_size).sum();
    if size > state.limits.max_message_size {
        return Err(AblyError::new(
            40009,
            400,
            format!(
                "maximum message length exceeded: {size} bytes, the limit is {}",
                state.limits.max_message_size
            ),
        ));
    }
    let now = state.hub.now_ms();
    let base = format!("rest-{}", random_id(12));
    let mut messages = Vec::with_capacity(items.len());
    // The connection each message is published on behalf of, if any.
    let mut on_behalf: Vec<Option<String>> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut client_id = speaker(
            caller.identified.as_deref(),
            &caller.credentials,
            item.get("clientId"),
        )?;
        let connection = behalf_of(state, item)?;
        if let Some(open) = &connection {
            client_id = attributed_client_id(client_id, open)?;
        }
        let connection_id = connection.map(|open| open.id);
        messages.push(stored_message(
            item,
            format!("{base}:{i}"),
            client_id,
            connection_id.as_deref(),
            now,
        ));
        on_behalf.push(connection_id);
    }
    let supplied: Vec<bool> = items.iter().map(|i| supplied_id(i).is_some()).collect();
    let serials: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
    // One delivery per run of messages on behalf of the same connection (or
    // none), in order, so echo suppression applies to exactly those.
    let mut start = 0;
    while start < messages.len() {
        let from = on_behalf[start].as_deref();
        let end = (start..messages.len())
            .find(|&i| on_behalf[i].as_deref() != from)
            .unwrap_or(messages.len());
        let delivery = json!({
            "action": action::MESSAGE,
            "channel": channel,
            "id": base,
            "timestamp": now,
            "messages": &messages[start..end],
        });
        // REST publishes are not bound by the channel limits, as before. A
        // retried publish whose ids the channel has seen within the
        // idempotency window answers as the first did, without delivering
        // again (RSL1k, https://ably.com/docs/pub-sub/advanced#idempotency).
        state
            .hub
            .publish(channel, delivery, &supplied[start..end], from, None)
            .expect("without limits a publish is always admitted");
        start = end;
    }
    Ok(Published {
        message_id: base,
        serials,
    })
}

/// Longest `connectionKey` read; the broker's keys are 21 characters.
const MAX_CONNECTION_KEY: usize = 256;

/// The open realtime connection a REST message is published on behalf of:
/// the one whose private key (`connection.key` in ably-js) the message
/// carries as `connectionKey` (TM2h). Like Ably, a key that names no open
/// connection refuses the publish with 40006
/// (ably/ably-common errors/codes/40006.md).
fn behalf_of(state: &BrokerState, item: &Value) -> Result<Option<super::Open>, AblyError> {
    let Some(key) = item.get("connectionKey").filter(|k| !k.is_null()) else {
        return Ok(None);
    };
    let invalid = || {
        AblyError::new(
            40006,
            400,
            "Malformed message; invalid connectionKey: it must be the connection.key of an open realtime connection to this broker",
        )
    };
    let key = key
        .as_str()
        .filter(|k| !k.is_empty() && k.len() <= MAX_CONNECTION_KEY)
        .ok_or_else(invalid)?;
    state.open_connection(key).map(Some).ok_or_else(invalid)
}

/// A message on behalf of a connection is that connection's: it carries the
/// connection's clientId, and may name no other (40006, as Ably refuses a
/// REST publisher and realtime client with different client ids).
fn attributed_client_id(
    client_id: Option<String>,
    open: &super::Open,
) -> Result<Option<String>, AblyError> {
    match (client_id, &open.client_id) {
        (Some(named), Some(own)) if &named != own => Err(AblyError::new(
            40006,
            400,
            format!(
                "Malformed message; mismatched clientId: {named:?} is not the clientId of the connection its connectionKey names"
            ),
        )),
        (named, own) => Ok(named.or_else(|| own.clone())),
    }
}

pub(crate) async fn publish(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    let channel = path.into_inner();
    valid_channel_name(&channel).map_err(|why| AblyError::new(40010, 400, why))?;
    let caller = caller(&req, &state)?;
    require(&caller.credentials, &channel, Operation::Publish)?;
    let items = message_list(body_value(&req, &body)?)?;
    let published = publish_to(&state, &caller, &channel, &items)?;
    Ok(respond(
        &req,
        StatusCode::CREATED,
        &json!({
            "channel": channel,
            "messageId": published.message_id,
            "serials": published.serials,
        }),
    ))
}

/// One `BatchPublishSpec` (BSP2): channels and the messages for each.
struct BatchSpec {
    channels: Vec<String>,
    messages: Vec<Value>,
}

/// A batch publish body (`POST /messages`, RSC22): one spec or an array of
/// them, each `{channels, messages}`; bounded before anything is published.
fn batch_specs(value: Value) -> Result<Vec<BatchSpec>, AblyError> {
    let bad = |why: String| AblyError::new(40000, 400, why);
    let specs = match value {
        Value::Array(specs) => specs,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(bad(
                "the body must be {channels, messages} or an array of them".into(),
            ))
        }
    };
    if specs.is_empty() {
        return Err(bad("a batch publish needs at least one spec".into()));
    }
    let mut parsed = Vec::with_capacity(specs.len());
    let mut publishes = 0usize;
    for (i, mut spec) in specs.into_iter().enumerate() {
        let channels = match spec.get_mut("channels").map(Value::take) {
            Some(Value::String(one)) => vec![one],
            Some(Value::Array(many)) => many
                .into_iter()
                .map(|c| match c {
                    Value::String(c) => Ok(c),
                    _ => Err(bad(format!("spec {i}: channels must be strings"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(bad(format!(
                    "spec {i}: channels must be a channel name or an array of them"
                )))
            }
        };
        if channels.is_empty() {
            return Err(bad(format!("spec {i}: channels is empty")));
        }
        publishes += channels.len();
        if publishes > MAX_BATCH_PUBLISHES {
            return Err(bad(format!(
                "a batch publish reaches at most {MAX_BATCH_PUBLISHES} channels in all"
            )));
        }
        let messages = spec
            .get_mut("messages")
            .map(Value::take)
            .ok_or_else(|| bad(format!("spec {i}: messages is missing")))
            .and_then(|m| message_list(m).map_err(|e| bad(format!("spec {i}: {}", e.message))))?;
        parsed.push(BatchSpec { channels, messages });
    }
    Ok(parsed)
}

/// `POST /messages` (RSC22, BSP2, BPR2, BPF2): every spec's messages to each
/// of its channels. A channel the caller may not publish to, or that the
/// messages do not fit, fails on its own with its error; the others publish.
/// An array of specs gets one `{successCount, failureCount, results}` each
/// (what ably-js's `batchPublish` sends and reads); a lone spec object gets
/// its flat array of per-channel results, as Ably answers it (ably-js
/// `test/rest/request.test.js`, `request_batch_api_success`).
pub(crate) async fn batch_publish(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    let caller = caller(&req, &state)?;
    let value = body_value(&req, &body)?;
    let lone_spec = value.is_object();
    let specs = batch_specs(value)?;
    let answers: Vec<Value> = specs
        .iter()
        .map(|spec| {
            let results: Vec<Value> = spec
                .channels
                .iter()
                .map(
                    |channel| match publish_to(&state, &caller, channel, &spec.messages) {
                        Ok(published) => json!({
                            "channel": channel,
                            "messageId": published.message_id,
                            "serials": published.serials,
                        }),
                        Err(error) => json!({"channel": channel, "error": error.to_value()}),
                    },
                )
                .collect();
            let failures = results.iter().filter(|r| r.get("error").is_some()).count();
            json!({
                "successCount": results.len() - failures,
                "failureCount": failures,
                "results": results,
            })
        })
        .collect();
    let answer = if lone_spec {
        let only = answers.into_iter().next();
        only.map(|mut a| a["results"].take()).unwrap_or_default()
    } else {
        Value::Array(answers)
    };
    Ok(respond(&req, StatusCode::CREATED, &answer))
}

#[derive(serde::Deserialize)]
pub(crate) struct HistoryParams {
    limit: Option<String>,
    direction: Option<String>,
    start: Option<String>,
    end: Option<String>,
    cursor: Option<String>,
    /// `untilAttach` as ably-js sends it (RTL10b): the channel's attachSerial.
    from_serial: Option<String>,
    #[serde(rename = "fromSerial")]
    from_serial_camel: Option<String>,
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

/// A page's query as parsed: what its links repeat.
struct PageQuery {
    limit: u64,
    direction: Direction,
    start: Option<u64>,
    end: Option<u64>,
    cursor: Option<u64>,
    /// Only events up to this channelSerial (RTL10b), as sent.
    from_serial: Option<String>,
}

impl PageQuery {
    fn parse(params: &HistoryParams) -> Result<PageQuery, AblyError> {
        let limit = parse_number(&params.limit, "limit")?.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(AblyError::new(
                40003,
                400,
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        let direction = match params.direction.as_deref() {
            None | Some("") | Some("backwards") => Direction::Backwards,
            Some("forwards") => Direction::Forwards,
            Some(other) => {
                let other: String = other.chars().take(40).collect();
                return Err(AblyError::new(
                    40003,
                    400,
                    format!("direction {other:?} is neither backwards nor forwards"),
                ));
            }
        };
        let query = PageQuery {
            limit,
            direction,
            start: parse_number(&params.start, "start")?,
            end: parse_number(&params.end, "end")?,
            cursor: parse_number(&params.cursor, "cursor")?,
            from_serial: params
                .from_serial
                .clone()
                .or_else(|| params.from_serial_camel.clone())
                .filter(|s| !s.is_empty()),
        };
        if let (Some(start), Some(end)) = (query.start, query.end) {
            if start > end {
                return Err(AblyError::new(40003, 400, "start must not be after end"));
            }
        }
        Ok(query)
    }

    /// The link to this query from cursor `cursor` (none: the first page).
    fn link(&self, resource: &str, cursor: Option<u64>) -> String {
        let direction = match self.direction {
            Direction::Backwards => "backwards",
            Direction::Forwards => "forwards",
        };
        let mut link = format!("./{resource}?limit={}&direction={direction}", self.limit);
        if let Some(start) = self.start {
            link.push_str(&format!("&start={start}"));
        }
        if let Some(end) = self.end {
            link.push_str(&format!("&end={end}"));
        }
        if let Some(serial) = &self.from_serial {
            let serial: String = url::form_urlencoded::byte_serialize(serial.as_bytes()).collect();
            link.push_str(&format!("&from_serial={serial}"));
        }
        if let Some(cursor) = cursor {
            link.push_str(&format!("&cursor={cursor}"));
        }
        link
    }

    /// The `Link` header of a page (TG1-TG4): `first`, `current` and, when
    /// there is more, `next`. ably-js keeps only a relative link's query
    /// string and requests it from the same path, so each link carries every
    /// parameter.
    fn links(&self, resource: &str, next: Option<u64>) -> header::HeaderValue {
        let mut links = vec![
            format!("<{}>; rel=\"first\"", self.link(resource, None)),
            format!("<{}>; rel=\"current\"", self.link(resource, self.cursor)),
        ];
        if let Some(next) = next {
            links.push(format!(
                "<{}>; rel=\"next\"",
                self.link(resource, Some(next))
            ));
        }
        header::HeaderValue::from_str(&links.join(", ")).expect("links are ASCII")
    }
}

/// One page of a channel's message or presence history, with its links.
fn history_page(
    req: &HttpRequest,
    state: &BrokerState,
    channel: &str,
    kind: HistoryKind,
    params: &HistoryParams,
) -> Result<HttpResponse, AblyError> {
    let credentials = authenticate(req, state)?;
    // Names Ably refuses have no history; nor has a derived channel
    // (`[filter=…]`), whose history Ably does not support
    // (https://ably.com/docs/pub-sub/advanced#filter-capabilities).
    valid_channel_name(channel).map_err(|why| AblyError::new(40010, 400, why))?;
    require(&credentials, channel, Operation::History)?;
    let query = PageQuery::parse(params)?;
    // `untilAttach` (RTL10b): only what was published up to the attach.
    let until = match &query.from_serial {
        None => None,
        Some(serial) => Some(state.hub.parse_serial(serial).ok_or_else(|| {
            AblyError::new(
                40000,
                400,
                "fromSerial is not a channelSerial of this broker run (was the broker restarted since the attach?); reattach the channel and try again",
            )
        })?),
    };
    let page = state.hub.history(
        channel,
        kind,
        &HistoryQuery {
            limit: query.limit as usize,
            direction: query.direction,
            start: query.start,
            end: query.end,
            cursor: query.cursor,
            until,
        },
    );
    let resource = match kind {
        HistoryKind::Messages => "messages",
        HistoryKind::Presence => "history",
    };
    let mut response = respond(req, StatusCode::OK, &Value::Array(page.messages));
    response
        .headers_mut()
        .insert(header::LINK, query.links(resource, page.next));
    Ok(response)
}

/// `GET /channels/{name}/messages` (RSL2).
pub(crate) async fn history(
    req: HttpRequest,
    path: web::Path<String>,
    params: web::Query<HistoryParams>,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    history_page(&req, &state, &path, HistoryKind::Messages, &params)
}

/// `GET /channels/{name}/presence/history` (RSP4): enter, update and leave
/// events, newest first unless `direction=forwards`.
pub(crate) async fn presence_history(
    req: HttpRequest,
    path: web::Path<String>,
    params: web::Query<HistoryParams>,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    history_page(&req, &state, &path, HistoryKind::Presence, &params)
}

#[derive(serde::Deserialize)]
pub(crate) struct StatsParams {
    #[serde(flatten)]
    page: HistoryParams,
    unit: Option<String>,
}

/// `GET /stats` (RSC6): the broker keeps no usage statistics, so every
/// query answers an empty page, with its links; the parameters are checked
/// as Ably checks them so a wrong call fails here as it would there. Reading
/// stats takes the `stats` operation (https://ably.com/docs/auth/capabilities),
/// which is not about a channel: granted on any resource, it is enough.
pub(crate) async fn stats(
    req: HttpRequest,
    params: web::Query<StatsParams>,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    let credentials = authenticate(&req, &state)?;
    if !credentials
        .capability
        .iter()
        .any(|(_, ops)| ops.allows(Operation::Stats))
    {
        return Err(AblyError::new(
            40160,
            401,
            "the capability does not permit stats: grant it on any resource, e.g. {\"*\":[\"stats\"]}",
        ));
    }
    let query = PageQuery::parse(&params.page)?;
    match params.unit.as_deref() {
        None | Some("" | "minute" | "hour" | "day" | "month") => {}
        Some(other) => {
            let other: String = other.chars().take(40).collect();
            return Err(AblyError::new(
                40003,
                400,
                format!("unit {other:?} is none of minute, hour, day, month"),
            ));
        }
    }
    let mut response = respond(&req, StatusCode::OK, &json!([]));
    response
        .headers_mut()
        .insert(header::LINK, query.links("stats", None));
    Ok(response)
}

/// `GET /channels/{name}` (RSL8, CHD2): whether the channel is active and
/// who is on it.
pub(crate) async fn channel_status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<BrokerState>,
) -> Result<HttpResponse, AblyError> {
    let channel = path.into_inner();
    valid_channel_name(&channel).map_err(|why| AblyError::new(40010, 400, why))?;
    let credentials = authenticate(&req, &state)?;
    require(&credentials, &channel, Operation::ChannelMetadata)?;
    let occupancy = state.hub.occupancy(&channel).unwrap_or_default();
    // Subscribers by granted mode (SUBSCRIBE, PRESENCE_SUBSCRIBE); the
    // broker does not track PUBLISH modes, so `publishers` counts subscribers.
    Ok(respond(
        &req,
        StatusCode::OK,
        &json!({
            "channelId": channel,
            "status": {
                "isActive": occupancy.connections > 0,
                "occupancy": {"metrics": {
                    "connections": occupancy.connections,
                    "presenceConnections": occupancy.presence_connections,
                    "presenceMembers": occupancy.presence_members,
                    "presenceSubscribers": occupancy.presence_subscribers,
                    "publishers": occupancy.subscribers,
                    "subscribers": occupancy.subscribers,
                }},
            },
        }),
    ))
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

/// Any other route: 404 40400, naming what the broker does not implement
/// when the path is one of Ably's (README, "What it does not do").
pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    let path: String = req.path().chars().take(200).collect();
    let why = if path.starts_with("/comet/") {
        ": the broker serves realtime over WebSocket only (no comet or long polling); drop the transports option"
    } else if path.starts_with("/push/") || path.ends_with("/push/subscriptions") {
        ": the broker does not implement push notifications"
    } else if path.ends_with("/annotations") {
        ": the broker does not implement message annotations"
    } else if path.starts_with("/channels/") && path.contains("/object") {
        ": the broker does not implement LiveObjects"
    } else {
        ""
    };
    actix_web::ResponseError::error_response(&AblyError::new(
        40400,
        404,
        format!("no broker route {} {path}{why}", req.method()),
    ))
}
