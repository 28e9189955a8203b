//! One realtime connection: the WebSocket loop from CONNECTED to CLOSED.
//! Frames from the client are handled in order; frames for it arrive through
//! a bounded outbox, beside heartbeats and the token's expiry.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix_ws::AggregatedMessage;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use super::auth::Credentials;
use super::hub::{sync_frame, Outbox, PresenceChange};
use super::protocol::{self, action, flag, AblyError, Encoded, Format, SharedFrame};
use super::BrokerState;
use crate::capability::{OpSet, Operation};

pub const CONNECTION_STATE_TTL_MS: u64 = 120_000;
pub const MAX_IDLE_INTERVAL_MS: u64 = 15_000;
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

/// What the client asked for in the WebSocket URL.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub format: Format,
    pub echo: bool,
    pub heartbeats: bool,
    pub client_id: Option<String>,
    /// The connection key of `resume=` or `recover=`.
    pub resume: Option<String>,
}

pub fn random_id(len: usize) -> String {
    use rand::rngs::OsRng;
    use rand::TryRngCore;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source is available");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Every write has a deadline: a client that stops reading fills the
/// socket, and the connection is then dropped instead of holding its slot.
async fn write(
    session: &mut actix_ws::Session,
    encoded: Encoded,
    deadline: Duration,
) -> Result<(), actix_ws::Closed> {
    let sent = match encoded {
        Encoded::Text(text) => tokio::time::timeout(deadline, session.text(text)).await,
        Encoded::Binary(bytes) => tokio::time::timeout(deadline, session.binary(bytes)).await,
    };
    sent.unwrap_or(Err(actix_ws::Closed))
}

async fn close(session: actix_ws::Session) {
    let _ = tokio::time::timeout(Duration::from_secs(1), session.close(None)).await;
}

enum Flow {
    Continue,
    /// Close the socket after the frames already sent.
    Close,
}

struct Connection {
    id: String,
    key: String,
    params: ConnectParams,
    client_id: Option<String>,
    credentials: Credentials,
    attached: HashMap<String, OpSet>,
    presence_channels: HashSet<String>,
    outbox: Outbox,
    session: actix_ws::Session,
    state: Arc<BrokerState>,
}

/// Which client id a connection has, given its credentials and what it asked for.
pub fn resolve_client_id(
    credentials: &Credentials,
    asked: Option<&str>,
    key_auth: bool,
) -> Result<Option<String>, AblyError> {
    let mismatch = || {
        AblyError::new(
            40102,
            401,
            "the clientId asked for does not match the credentials' clientId",
        )
    };
    match (credentials.client_id.as_deref(), asked) {
        (Some("*"), asked) => Ok(asked.map(str::to_string)),
        (Some(own), Some(asked)) if own != asked => Err(mismatch()),
        (Some(own), _) => Ok(Some(own.to_string())),
        (None, Some(asked)) if key_auth => Ok(Some(asked.to_string())),
        (None, Some(_)) => Err(mismatch()),
        (None, None) => Ok(None),
    }
}

impl Connection {
    async fn send(&mut self, frame: &Value) -> Result<(), actix_ws::Closed> {
        let encoded = protocol::encode(frame, self.params.format);
        write(&mut self.session, encoded, self.state.limits.send_timeout).await
    }

    async fn send_shared(&mut self, frame: &SharedFrame) -> Result<(), actix_ws::Closed> {
        let encoded = frame.encoded(self.params.format);
        write(&mut self.session, encoded, self.state.limits.send_timeout).await
    }

    fn connected_frame(&self) -> Value {
        json!({
            "action": action::CONNECTED,
            "connectionId": self.id,
            "connectionDetails": {
                "clientId": self.client_id,
                "connectionKey": self.key,
                "connectionStateTtl": CONNECTION_STATE_TTL_MS,
                "maxIdleInterval": MAX_IDLE_INTERVAL_MS,
                "maxMessageSize": self.state.limits.max_message_size,
                "maxFrameSize": self.state.limits.max_frame_size,
                "serverId": "ably-tokend-broker",
            },
        })
    }

    async fn channel_error(
        &mut self,
        channel: &str,
        error: AblyError,
    ) -> Result<(), actix_ws::Closed> {
        self.send(&json!({"action": action::ERROR, "channel": channel, "error": error.to_value()}))
            .await
    }

    async fn nack(&mut self, serial: u64, error: AblyError) -> Result<(), actix_ws::Closed> {
        self.send(&json!({"action": action::NACK, "msgSerial": serial, "count": 1, "error": error.to_value()}))
            .await
    }

    async fn ack(&mut self, serial: u64) -> Result<(), actix_ws::Closed> {
        self.send(&json!({"action": action::ACK, "msgSerial": serial, "count": 1}))
            .await
    }

    fn ops(&self, channel: &str) -> OpSet {
        self.credentials.capability.ops_for_channel(channel)
    }

    async fn handle(&mut self, frame: Value) -> Result<Flow, actix_ws::Closed> {
        let Ok(act) = protocol::action_of(&frame) else {
            self.fatal(AblyError::new(
                40000,
                400,
                "malformed protocol message: no numeric action",
            ))
            .await?;
            return Ok(Flow::Close);
        };
        let channel = frame
            .get("channel")
            .and_then(Value::as_str)
            .map(str::to_string);
        match act {
            action::HEARTBEAT => {
                let mut reply = json!({"action": action::HEARTBEAT});
                if let Some(id) = frame.get("id") {
                    reply["id"] = id.clone();
                }
                self.send(&reply).await?;
            }
            action::CLOSE => {
                self.send(&json!({"action": action::CLOSED})).await?;
                return Ok(Flow::Close);
            }
            action::DISCONNECT => return Ok(Flow::Close),
            action::ATTACH => match channel {
                Some(channel) => self.attach(&channel).await?,
                None => {
                    self.channel_error("", AblyError::new(40000, 400, "ATTACH needs a channel"))
                        .await?
                }
            },
            action::DETACH => {
                if let Some(channel) = channel {
                    self.attached.remove(&channel);
                    self.presence_channels.remove(&channel);
                    self.state.hub.unsubscribe(&channel, &self.id);
                    self.send(&json!({"action": action::DETACHED, "channel": channel}))
                        .await?;
                }
            }
            action::MESSAGE => self.publish(&frame, channel).await?,
            action::PRESENCE => self.presence(&frame, channel).await?,
            action::SYNC => {
                if let Some(channel) = channel {
                    // The capability in force now, not the one at attach time.
                    if self.attached.contains_key(&channel)
                        && self.ops(&channel).allows(Operation::Subscribe)
                    {
                        let members = self.state.hub.members(&channel);
                        self.send(&sync_frame(&channel, members, &random_id(8)))
                            .await?;
                    }
                }
            }
            action::AUTH => return self.reauthenticate(&frame).await,
            other => {
                tracing::debug!(connection = %self.id, action = other, "ignored an unknown protocol action")
            }
        }
        Ok(Flow::Continue)
    }

    async fn fatal(&mut self, error: AblyError) -> Result<(), actix_ws::Closed> {
        self.send(&json!({"action": action::ERROR, "error": error.to_value()}))
            .await
    }

    async fn attach(&mut self, channel: &str) -> Result<(), actix_ws::Closed> {
        if let Err(why) = valid_channel_name(channel) {
            return self
                .channel_error(channel, AblyError::new(40010, 400, why))
                .await;
        }
        let ops = self.ops(channel);
        let may_attach = [
            Operation::Subscribe,
            Operation::Publish,
            Operation::Presence,
        ]
        .iter()
        .any(|op| ops.allows(*op));
        if !may_attach {
            return self
                .channel_error(
                    channel,
                    AblyError::new(
                        40160,
                        401,
                        format!(
                            "channel {channel:?}: the token's capability does not permit attaching"
                        ),
                    ),
                )
                .await;
        }
        let already = self.attached.contains_key(channel);
        let limits = &self.state.limits;
        let over = self.attached.len() + self.presence_channels.len()
            >= limits.max_channels_per_connection
            || (!self.state.hub.holds(channel)
                && self.state.hub.channel_count() >= limits.max_channels);
        if !already && !self.presence_channels.contains(channel) && over {
            return self
                .channel_error(
                    channel,
                    AblyError::new(
                        90021,
                        400,
                        format!(
                            "a connection may attach at most {} channels",
                            self.state.limits.max_channels_per_connection
                        ),
                    ),
                )
                .await;
        }
        let subscribe = ops.allows(Operation::Subscribe);
        if subscribe {
            self.state
                .hub
                .subscribe(channel, &self.id, self.outbox.clone(), self.params.echo);
        } else {
            self.state.hub.drop_subscriber(channel, &self.id);
        }
        self.attached.insert(channel.to_string(), ops);
        let mut flags = 0;
        if ops.allows(Operation::Publish) {
            flags |= flag::PUBLISH;
        }
        if ops.allows(Operation::Presence) {
            flags |= flag::PRESENCE;
        }
        if subscribe {
            flags |= flag::SUBSCRIBE | flag::PRESENCE_SUBSCRIBE;
        }
        let members = if subscribe {
            self.state.hub.members(channel)
        } else {
            Vec::new()
        };
        if !members.is_empty() {
            flags |= flag::HAS_PRESENCE;
        }
        if already {
            flags |= flag::RESUMED;
        }
        self.send(&json!({"action": action::ATTACHED, "channel": channel, "flags": flags}))
            .await?;
        if !members.is_empty() && !already {
            self.send(&sync_frame(channel, members, &random_id(8)))
                .await?;
        }
        Ok(())
    }

    /// The client id a message or presence item speaks for, or why it may not.
    fn speaker(&self, asked: Option<&Value>) -> Result<Option<String>, AblyError> {
        let mismatch = |why: &str| AblyError::new(40012, 400, why.to_string());
        match (asked, &self.client_id) {
            (None | Some(Value::Null), own) => Ok(own.clone()),
            (Some(Value::String(asked)), Some(own)) if asked == own => Ok(Some(own.clone())),
            (Some(Value::String(_)), Some(_)) => {
                Err(mismatch("the message's clientId is not the connection's"))
            }
            // API keys and wildcard (`*`) tokens may speak for any client id.
            (Some(Value::String(asked)), None)
                if self.credentials.expires_ms.is_none()
                    || self.credentials.client_id.as_deref() == Some("*") =>
            {
                Ok(Some(asked.clone()))
            }
            (Some(Value::String(_)), None) => {
                Err(mismatch("an anonymous connection cannot name a clientId"))
            }
            (Some(_), _) => Err(mismatch("clientId must be a string")),
        }
    }

    /// The msgSerial and channel of a MESSAGE or PRESENCE frame, once the
    /// capability allows `op` there; otherwise the NACK is sent here. None
    /// means the frame has been answered (or has no serial to answer).
    async fn target(
        &mut self,
        frame: &Value,
        channel: Option<String>,
        op: Operation,
    ) -> Result<Option<(u64, String)>, actix_ws::Closed> {
        let Some(serial) = frame.get("msgSerial").and_then(Value::as_u64) else {
            // Without a serial nothing can be acknowledged: the client would wait forever.
            self.fatal(AblyError::new(
                40000,
                400,
                "MESSAGE and PRESENCE need a numeric msgSerial",
            ))
            .await?;
            return Err(actix_ws::Closed);
        };
        let Some(channel) = channel else {
            self.nack(
                serial,
                AblyError::new(40000, 400, "the frame needs a channel"),
            )
            .await?;
            return Ok(None);
        };
        if let Err(why) = valid_channel_name(&channel) {
            self.nack(serial, AblyError::new(40010, 400, why)).await?;
            return Ok(None);
        }
        let limits = &self.state.limits;
        let new_here =
            !self.attached.contains_key(&channel) && !self.presence_channels.contains(&channel);
        let too_many_here = op == Operation::Presence
            && new_here
            && self.attached.len() + self.presence_channels.len()
                >= limits.max_channels_per_connection;
        let too_many_overall = !self.state.hub.holds(&channel)
            && self.state.hub.channel_count() >= limits.max_channels;
        if too_many_here || too_many_overall {
            let why = format!(
                "channel limit reached ({} per connection, {} in the broker)",
                limits.max_channels_per_connection, limits.max_channels
            );
            self.nack(serial, AblyError::new(90021, 400, why)).await?;
            return Ok(None);
        }
        if !self.ops(&channel).allows(op) {
            let why = format!("channel {channel:?}: the token's capability does not permit {op}");
            self.nack(serial, AblyError::new(40160, 401, why)).await?;
            return Ok(None);
        }
        Ok(Some((serial, channel)))
    }

    async fn publish(
        &mut self,
        frame: &Value,
        channel: Option<String>,
    ) -> Result<(), actix_ws::Closed> {
        let Some((serial, channel)) = self.target(frame, channel, Operation::Publish).await? else {
            return Ok(());
        };
        let items = match frame.get("messages").and_then(Value::as_array) {
            Some(items) if !items.is_empty() && items.len() <= 1000 => items,
            _ => {
                return self
                    .nack(
                        serial,
                        AblyError::new(40000, 400, "MESSAGE needs 1 to 1000 messages"),
                    )
                    .await
            }
        };
        let size: usize = items.iter().map(message_size).sum();
        if size > self.state.limits.max_message_size {
            return self
                .nack(
                    serial,
                    AblyError::new(
                        40009,
                        400,
                        format!(
                            "maximum message length exceeded: {size} bytes, the limit is {}",
                            self.state.limits.max_message_size
                        ),
                    ),
                )
                .await;
        }
        let now = self.state.hub.now_ms();
        let mut messages = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let speaker = match self.speaker(item.get("clientId")) {
                Ok(s) => s,
                Err(e) => return self.nack(serial, e).await,
            };
            messages.push(stored_message(
                item,
                format!("{}:{serial}:{i}", self.id),
                speaker,
                Some(&self.id),
                now,
            ));
        }
        let delivery = json!({
            "action": action::MESSAGE,
            "channel": channel,
            "id": format!("{}:{serial}", self.id),
            "connectionId": self.id,
            "timestamp": now,
            "messages": messages,
        });
        self.state.hub.publish(&channel, delivery, Some(&self.id));
        self.ack(serial).await
    }

    async fn presence(
        &mut self,
        frame: &Value,
        channel: Option<String>,
    ) -> Result<(), actix_ws::Closed> {
        let Some((serial, channel)) = self.target(frame, channel, Operation::Presence).await?
        else {
            return Ok(());
        };
        let Some(items) = frame
            .get("presence")
            .and_then(Value::as_array)
            .filter(|i| !i.is_empty())
        else {
            return self
                .nack(
                    serial,
                    AblyError::new(40000, 400, "PRESENCE needs presence messages"),
                )
                .await;
        };
        let mut changes = Vec::with_capacity(items.len());
        for item in items {
            let client_id = match self.speaker(item.get("clientId")) {
                Ok(Some(id)) if id != "*" => id,
                Ok(_) => {
                    return self
                        .nack(
                            serial,
                            AblyError::new(
                                40012,
                                400,
                                "presence needs a clientId: the token has none",
                            ),
                        )
                        .await
                }
                Err(e) => return self.nack(serial, e).await,
            };
            let Some(action) = item
                .get("action")
                .and_then(Value::as_u64)
                .filter(|a| *a <= 4)
            else {
                return self
                    .nack(
                        serial,
                        AblyError::new(
                            40000,
                            400,
                            "a presence message needs an action from 0 to 4",
                        ),
                    )
                    .await;
            };
            if message_size(item) > self.state.limits.max_message_size {
                return self
                    .nack(
                        serial,
                        AblyError::new(40009, 400, "maximum message length exceeded"),
                    )
                    .await;
            }
            changes.push(PresenceChange {
                action,
                client_id,
                data: item.get("data").filter(|d| !d.is_null()).cloned(),
                encoding: item.get("encoding").filter(|e| !e.is_null()).cloned(),
            });
        }
        self.presence_channels.insert(channel.clone());
        self.state.hub.presence(
            &channel,
            &self.id,
            &format!("{}:{serial}", self.id),
            changes,
        );
        self.ack(serial).await
    }

    /// After re-authentication: every channel gets exactly what the new
    /// capability allows. Channels it no longer permits fail with 40160;
    /// delivery stops where `subscribe` went, members leave where `presence`
    /// went, and delivery starts where `subscribe` arrived.
    async fn apply_capability(&mut self) -> Result<(), actix_ws::Closed> {
        let channels: HashSet<String> = self
            .attached
            .keys()
            .chain(self.presence_channels.iter())
            .cloned()
            .collect();
        for channel in channels {
            let ops = self.ops(&channel);
            let may_attach = [
                Operation::Subscribe,
                Operation::Publish,
                Operation::Presence,
            ]
            .iter()
            .any(|op| ops.allows(*op));
            if !may_attach {
                let was_attached = self.attached.remove(&channel).is_some();
                self.presence_channels.remove(&channel);
                self.state.hub.unsubscribe(&channel, &self.id);
                if was_attached {
                    let error =
                        AblyError::new(40160, 401, "the new token does not permit this channel");
                    self.channel_error(&channel, error).await?;
                }
                continue;
            }
            if let Some(before) = self.attached.get(&channel).copied() {
                match (
                    before.allows(Operation::Subscribe),
                    ops.allows(Operation::Subscribe),
                ) {
                    (true, false) => self.state.hub.drop_subscriber(&channel, &self.id),
                    (false, true) => self.state.hub.subscribe(
                        &channel,
                        &self.id,
                        self.outbox.clone(),
                        self.params.echo,
                    ),
                    _ => {}
                }
                self.attached.insert(channel.clone(), ops);
            }
            // After delivery stopped: a client that lost `subscribe` does not
            // hear its own member leave.
            if !ops.allows(Operation::Presence) && self.presence_channels.remove(&channel) {
                self.state.hub.leave(&channel, &self.id);
            }
        }
        Ok(())
    }

    async fn reauthenticate(&mut self, frame: &Value) -> Result<Flow, actix_ws::Closed> {
        let token = frame
            .get("auth")
            .and_then(|a| a.get("accessToken"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let result = self.state.auth.authenticate_token(token).and_then(|creds| {
            let client_id = resolve_client_id(&creds, self.client_id.as_deref(), false)?;
            if client_id != self.client_id {
                return Err(AblyError::new(
                    40102,
                    401,
                    "the new token is for another clientId",
                ));
            }
            Ok(creds)
        });
        match result {
            Ok(credentials) => {
                self.credentials = credentials;
                self.apply_capability().await?;
                let connected = self.connected_frame();
                self.send(&connected).await?;
                Ok(Flow::Continue)
            }
            Err(error) => {
                self.fatal(error).await?;
                Ok(Flow::Close)
            }
        }
    }
}

/// The message as delivered and stored: id, clientId, connectionId and
/// timestamp filled in, data and encoding passed through untouched.
pub fn stored_message(
    item: &Value,
    default_id: String,
    client_id: Option<String>,
    connection_id: Option<&str>,
    now: u64,
) -> Value {
    let mut message = serde_json::Map::new();
    let id = item
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or(default_id);
    message.insert("id".into(), json!(id));
    for field in ["name", "data", "encoding"] {
        if let Some(v) = item.get(field).filter(|v| !v.is_null()) {
            message.insert(field.into(), v.clone());
        }
    }
    if let Some(extras) = item.get("extras").and_then(Value::as_object) {
        // A client-supplied delta marker would send ably-js into a re-attach loop.
        let mut extras = extras.clone();
        extras.remove("delta");
        if !extras.is_empty() {
            message.insert("extras".into(), Value::Object(extras));
        }
    }
    if let Some(client_id) = client_id {
        message.insert("clientId".into(), json!(client_id));
    }
    if let Some(connection_id) = connection_id {
        message.insert("connectionId".into(), json!(connection_id));
    }
    message.insert("timestamp".into(), json!(now));
    Value::Object(message)
}

/// Ably counts a message's name, data, clientId and extras against the limit.
pub fn message_size(item: &Value) -> usize {
    let text = |v: Option<&Value>| match v {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) => s.len(),
        Some(other) => other.to_string().len(),
    };
    text(item.get("id"))
        + text(item.get("name"))
        + text(item.get("data"))
        + text(item.get("clientId"))
        + text(item.get("extras"))
}

pub fn valid_channel_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a channel name must not be empty");
    }
    if name.len() > 512 {
        return Err("a channel name is at most 512 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("a channel name must not hold control characters");
    }
    Ok(())
}

/// Runs one connection to its end. `credentials` is the outcome of the
/// connect-time authentication: on failure the client gets the error as a
/// frame (ably-js ignores HTTP errors on the upgrade).
pub async fn run(
    mut session: actix_ws::Session,
    stream: actix_ws::MessageStream,
    state: Arc<BrokerState>,
    params: ConnectParams,
    credentials: Result<(Credentials, Option<String>), AblyError>,
) {
    let format = params.format;
    let deadline = state.limits.send_timeout;
    let send_now = |session: &mut actix_ws::Session, frame: Value| {
        let mut session = session.clone();
        async move {
            let _ = write(&mut session, protocol::encode(&frame, format), deadline).await;
        }
    };
    let (credentials, client_id) = match credentials {
        Ok(c) => c,
        Err(error) => {
            // Token errors make the client renew and reconnect; others fail it.
            let act = if error.is_token_error() {
                action::DISCONNECTED
            } else {
                action::ERROR
            };
            send_now(
                &mut session,
                json!({"action": act, "error": error.to_value()}),
            )
            .await;
            close(session).await;
            return;
        }
    };
    let Some(_slot) = state.admit() else {
        let error = AblyError::new(42910, 429, "the broker has reached its connection limit");
        send_now(
            &mut session,
            json!({"action": action::ERROR, "error": error.to_value()}),
        )
        .await;
        close(session).await;
        return;
    };
    let (tx, mut rx) = mpsc::channel(state.limits.outbox_frames);
    let lagged = Arc::new(Notify::new());
    let resumed = params.resume.as_deref().and_then(|key| {
        state
            .resumable(key, client_id.as_deref())
            .map(|id| (id, key.to_string()))
    });
    let (id, key) = resumed.unwrap_or_else(|| {
        let id = random_id(12);
        (id.clone(), format!("{}-{id}", random_id(8)))
    });
    let mut conn = Connection {
        key,
        id,
        params,
        client_id,
        credentials,
        attached: HashMap::new(),
        presence_channels: HashSet::new(),
        outbox: Outbox {
            tx,
            lagged: lagged.clone(),
            lagging: Arc::new(AtomicBool::new(false)),
        },
        session: session.clone(),
        state: state.clone(),
    };
    tracing::debug!(connection = %conn.id, client_id = ?conn.client_id, "realtime connection opened");
    let connected = conn.connected_frame();
    let mut stream = stream
        .max_frame_size(state.limits.max_frame_size)
        .aggregate_continuations()
        .max_continuation_size(state.limits.max_frame_size);
    if conn.send(&connected).await.is_err() {
        return;
    }
    let mut heartbeat = tokio::time::interval(Duration::from_millis(MAX_IDLE_INTERVAL_MS / 2));
    heartbeat.tick().await;
    let expiry = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(expiry);
    let mut expires_ms = None;
    let mut stopping = state.stopping();
    let end: Option<AblyError> = loop {
        if conn.credentials.expires_ms != expires_ms {
            expires_ms = conn.credentials.expires_ms;
            if let Some(at) = expires_ms {
                let left = at.saturating_sub(state.hub.now_ms());
                expiry
                    .as_mut()
                    // A JWT may name any exp; a year out is as good as never.
                    .reset(tokio::time::Instant::now() + Duration::from_millis(left.min(YEAR_MS)));
            }
        }
        tokio::select! {
            incoming = stream.recv() => {
                let (bytes, format) = match incoming {
                    Some(Ok(AggregatedMessage::Text(text))) => (text.into_bytes(), Format::Json),
                    Some(Ok(AggregatedMessage::Binary(bytes))) => (bytes, Format::MsgPack),
                    Some(Ok(AggregatedMessage::Ping(payload))) => {
                        if !matches!(tokio::time::timeout(state.limits.send_timeout, conn.session.pong(&payload)).await, Ok(Ok(()))) { break None; }
                        continue;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => continue,
                    Some(Ok(AggregatedMessage::Close(_))) | None => break None,
                    Some(Err(error)) => {
                        break Some(AblyError::new(40000, 400, format!("WebSocket protocol error: {error}")));
                    }
                };
                let frame = match protocol::decode(&bytes, format) {
                    Ok(frame) => frame,
                    Err(error) => break Some(AblyError::new(40000, 400, format!("malformed protocol message: {error}"))),
                };
                match conn.handle(frame).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close) | Err(_) => break None,
                }
            }
            Some(frame) = rx.recv() => {
                if conn.send_shared(&frame).await.is_err() { break None; }
            }
            _ = heartbeat.tick() => {
                if !matches!(tokio::time::timeout(state.limits.send_timeout, conn.session.ping(b"")).await, Ok(Ok(()))) { break None; }
                if conn.params.heartbeats && conn.send(&json!({"action": action::HEARTBEAT})).await.is_err() {
                    break None;
                }
            }
            _ = &mut expiry, if expires_ms.is_some() => {
                let error = AblyError::new(40142, 401, "token expired");
                let _ = conn.send(&json!({"action": action::DISCONNECTED, "error": error.to_value()})).await;
                break None;
            }
            _ = stopping.wait_for(|stop| *stop) => {
                let error = AblyError::new(80003, 503, "the broker is shutting down; reconnect later");
                let _ = conn.send(&json!({"action": action::DISCONNECTED, "error": error.to_value()})).await;
                break None;
            }
            _ = lagged.notified() => {
                let error = AblyError::new(80020, 429, format!(
                    "this connection fell more than {} messages behind and was dropped; reconnect to continue",
                    state.limits.outbox_frames
                ));
                let _ = conn.send(&json!({"action": action::DISCONNECTED, "error": error.to_value()})).await;
                break None;
            }
        }
    };
    if let Some(error) = end {
        let _ = conn.fatal(error).await;
    }
    for channel in conn.attached.keys().chain(conn.presence_channels.iter()) {
        state.hub.unsubscribe(channel, &conn.id);
    }
    state.remember_closed(&conn.key, &conn.id, conn.client_id.as_deref());
    tracing::debug!(connection = %conn.id, "realtime connection closed");
    close(session).await;
}
