//! One realtime connection: the WebSocket loop from CONNECTED to CLOSED.
//! Frames from the client are parsed at the edge (`inbound`) and handled in
//! order; frames for it arrive through a bounded outbox, beside heartbeats
//! and the token's expiry. Whatever way the loop ends, dropping the
//! connection's `Membership` cleans up after it.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, ProtocolError};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::time::Sleep;

use super::auth::Credentials;
use super::continuity::Registration;
use super::filter::Filter;
use super::hub::{
    sync_frame, Backlog, Catchup, ChannelLimitReached, ChannelLimits, Claim, Filtered, Frame,
    Outbox, PresenceChange, Subscriber,
};
use super::inbound::{AttachOptions, ConnectParams, Continue, Inbound, Rewind, MAX_REWIND};
use super::message::{
    may_attach, message_size, parse_channel_name, random_id, resolve_client_id, speaker,
    stored_message, supplied_id, ChannelName,
};
use super::protocol::{self, action, flag, AblyError, Encoded, Format, SharedFrame};
use super::BrokerState;
use crate::capability::{OpSet, Operation};

pub(crate) const CONNECTION_STATE_TTL_MS: u64 = 120_000;
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
/// How long before its token expires a connection is asked to re-authenticate.
const AUTH_LEAD_MS: u64 = 30_000;

/// When to send AUTH (RTN22: the client then re-authenticates in band, RTC8)
/// to a connection whose token expires at `expires_ms`, seen at `now_ms`: 30 s
/// before it expires, and never when less than that is left. A short token is
/// not asked to renew: it is DISCONNECTED with 40142 at expiry and the client
/// renews and resumes (RSA4b1), which is what ably-js's own suite expects of
/// Ably with 5 s tokens (test/realtime/auth.test.js `auth_token_expires`,
/// `auth_tokenDetails_expiry_with_authcallback`: a disconnection with 40142,
/// not an in-band renewal).
fn reauth_due_ms(now_ms: u64, expires_ms: u64) -> Option<u64> {
    let due = expires_ms.checked_sub(AUTH_LEAD_MS)?;
    (due > now_ms).then_some(due)
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

/// What a handled frame leaves the connection to do.
enum Flow {
    Continue,
    /// Close the socket after the frames already sent.
    Close,
}

/// What the loop does after an event.
enum Step {
    Continue,
    /// Stop; with an error, send it as a fatal ERROR first.
    Stop(Option<AblyError>),
}

/// The channels a connection takes part in, and what the broker needs to
/// let its client resume. Dropping it is the connection's clean-up, on every
/// way out of `run`, a panic included: its subscriptions end, its members
/// leave (at once after CLOSE or a fatal error, else once the presence grace
/// is over, see `liveness`), and the broker remembers the connection so a
/// client that resumes within the connection-state TTL keeps its id and its
/// members (RTN15b, RTN15c6).
struct Membership {
    state: Arc<BrokerState>,
    id: String,
    key: String,
    client_id: Option<String>,
    /// The connection as `BrokerState::sessions` knows it while open.
    registration: Registration,
    attached: HashMap<String, OpSet>,
    /// The modes asked for on attach (RTL4l), for channels that asked.
    requested_modes: HashMap<String, u64>,
    /// Channels attached with `delta: "vcdiff"` (RTL18).
    deltas: HashSet<String>,
    /// The derived channels among `attached` (`[filter=…]<channel>`), each
    /// with the channel it derives from.
    derived: HashMap<String, String>,
    presence_channels: HashSet<String>,
    /// The client closed the connection (CLOSE), or it failed: its members
    /// leave now instead of after the grace.
    leave_at_once: bool,
}

impl Membership {
    fn holds(&self, channel: &str) -> bool {
        self.attached.contains_key(channel) || self.presence_channels.contains(channel)
    }

    /// What attaching to, or entering presence on, `channel` adds to the
    /// channel limits. A channel attached and present counts twice.
    fn claim(&self, channel: &str) -> Claim {
        if self.holds(channel) {
            Claim::Held
        } else {
            Claim::New {
                holding: self.attached.len() + self.presence_channels.len(),
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let hub = &self.state.hub;
        for channel in self.attached.keys() {
            if let Some(base) = self.derived.get(channel) {
                hub.detach_filtered(base, &self.id, channel);
            } else if !self.presence_channels.contains(channel) {
                hub.unsubscribe(channel, &self.id);
            }
        }
        let present: Vec<String> = self.presence_channels.drain().collect();
        let lingering = !self.leave_at_once
            && !present.is_empty()
            && self
                .state
                .departures
                .schedule(&self.id, present.clone(), hub.now_ms());
        for channel in &present {
            if lingering {
                hub.drop_subscriber(channel, &self.id);
            } else {
                hub.unsubscribe(channel, &self.id);
            }
        }
        // Last: a resume taking this connection over waits for this, so it
        // subscribes under the same id only once these subscriptions ended.
        self.state.sessions.close(
            &self.key,
            &self.id,
            self.client_id.as_deref(),
            &self.registration,
        );
        tracing::debug!(connection = %self.id, "realtime connection closed");
    }
}

struct Connection {
    membership: Membership,
    params: ConnectParams,
    credentials: Credentials,
    outbox: Outbox,
    session: actix_ws::Session,
    state: Arc<BrokerState>,
    /// When the client was last heard from (any frame, a pong included), on
    /// the broker's clock.
    heard_ms: u64,
}

impl Connection {
    fn id(&self) -> &str {
        &self.membership.id
    }

    fn limits(&self) -> ChannelLimits {
        ChannelLimits {
            max_channels: self.state.limits.max_channels,
            per_connection: self.state.limits.max_channels_per_connection,
        }
    }

    /// The modes granted on `channel` (RTL4l, TR3q–TR3x): those asked for,
    /// or the default ones when none were, that the capability allows.
    fn granted_modes(&self, channel: &str, ops: OpSet) -> u64 {
        let mut allowed = 0;
        for (op, modes) in [
            (Operation::Publish, flag::PUBLISH),
            (Operation::Presence, flag::PRESENCE),
            (
                Operation::Subscribe,
                flag::SUBSCRIBE | flag::PRESENCE_SUBSCRIBE,
            ),
            (Operation::AnnotationPublish, flag::ANNOTATION_PUBLISH),
            (Operation::AnnotationSubscribe, flag::ANNOTATION_SUBSCRIBE),
            (Operation::ObjectSubscribe, flag::OBJECT_SUBSCRIBE),
            (Operation::ObjectPublish, flag::OBJECT_PUBLISH),
        ] {
            if ops.allows(op) {
                allowed |= modes;
            }
        }
        let requested = self.membership.requested_modes.get(channel).copied();
        allowed & requested.unwrap_or(AttachOptions::DEFAULT_MODES)
    }

    /// How the channel's frames reach this connection under `modes`: not at
    /// all without SUBSCRIBE and PRESENCE_SUBSCRIBE; messages as deltas on
    /// a channel attached with `delta: "vcdiff"`.
    fn subscriber(&self, channel: &str, modes: u64) -> Option<Subscriber> {
        let messages = modes & flag::SUBSCRIBE != 0;
        let presence = modes & flag::PRESENCE_SUBSCRIBE != 0;
        (messages || presence).then(|| Subscriber {
            outbox: self.outbox.clone(),
            echo: self.params.echo,
            messages,
            presence,
            delta: self
                .membership
                .deltas
                .contains(channel)
                .then(Default::default),
        })
    }

    async fn send(&mut self, frame: &Value) -> Result<(), actix_ws::Closed> {
        let encoded = protocol::encode(frame, self.params.format);
        write(&mut self.session, encoded, self.state.limits.send_timeout).await
    }

    async fn send_shared(&mut self, frame: &SharedFrame) -> Result<(), actix_ws::Closed> {
        let encoded = frame.encoded(self.params.format);
        write(&mut self.session, encoded, self.state.limits.send_timeout).await
    }

    fn connected_frame(&self) -> Value {
        // A connection on a wildcard token with no clientId of its own is
        // told `*`, which ably-js then reports as `auth.clientId` (RSA7b4).
        let client_id = self.membership.client_id.as_deref().or(self
            .credentials
            .client_id
            .as_deref()
            .filter(|c| *c == "*"));
        json!({
            "action": action::CONNECTED,
            "connectionId": self.membership.id,
            "connectionDetails": {
                "clientId": client_id,
                "connectionKey": self.membership.key,
                "connectionStateTtl": CONNECTION_STATE_TTL_MS,
                "maxIdleInterval": self.state.timings.max_idle_interval.as_millis() as u64,
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

    async fn fatal(&mut self, error: AblyError) -> Result<(), actix_ws::Closed> {
        self.send(&json!({"action": action::ERROR, "error": error.to_value()}))
            .await
    }

    /// Sends DISCONNECTED with the reason (RTN15h): the client reconnects.
    async fn disconnect(&mut self, error: AblyError) -> Step {
        let _ = self
            .send(&json!({"action": action::DISCONNECTED, "error": error.to_value()}))
            .await;
        Step::Stop(None)
    }

    fn ops(&self, channel: &str) -> OpSet {
        self.credentials.capability.ops_for_channel(channel)
    }

    fn limit_error(&self) -> AblyError {
        let limits = &self.state.limits;
        AblyError::new(
            90021,
            400,
            format!(
                "channel limit reached ({} per connection, {} in the broker)",
                limits.max_channels_per_connection, limits.max_channels
            ),
        )
    }

    async fn handle(&mut self, inbound: Inbound) -> Result<Flow, actix_ws::Closed> {
        match inbound {
            Inbound::Heartbeat { id } => {
                let mut reply = json!({"action": action::HEARTBEAT});
                if let Some(id) = id {
                    reply["id"] = id;
                }
                self.send(&reply).await?;
            }
            Inbound::Close => {
                self.membership.leave_at_once = true;
                self.state
                    .sessions
                    .retire(&self.membership.key, &self.membership.id);
                self.send(&json!({"action": action::CLOSED})).await?;
                return Ok(Flow::Close);
            }
            Inbound::Disconnect => return Ok(Flow::Close),
            Inbound::Attach {
                channel: Some(channel),
                options: Ok(options),
            } => self.attach(&channel, options).await?,
            Inbound::Attach {
                channel: Some(channel),
                options: Err(error),
            } => self.channel_error(&channel, error.into()).await?,
            Inbound::Attach { channel: None, .. } => {
                self.channel_error("", AblyError::new(40000, 400, "ATTACH needs a channel"))
                    .await?
            }
            Inbound::Detach {
                channel: Some(channel),
            } => self.detach(channel).await?,
            Inbound::Message {
                serial,
                channel,
                messages,
            } => self.publish(serial, channel, messages).await?,
            Inbound::Presence {
                serial,
                channel,
                presence,
            } => self.presence(serial, channel, presence).await?,
            Inbound::Sync {
                channel: Some(channel),
            } => self.sync(&channel).await?,
            Inbound::Detach { channel: None } | Inbound::Sync { channel: None } => {}
            Inbound::Auth { access_token } => return self.reauthenticate(&access_token).await,
            Inbound::Other(other) => {
                tracing::debug!(connection = %self.id(), action = other, "ignored an unknown protocol action")
            }
            Inbound::Unsupported { action, serial } => {
                self.nack(serial, unsupported(action)).await?
            }
        }
        Ok(Flow::Continue)
    }

    async fn attach(
        &mut self,
        channel: &str,
        options: AttachOptions,
    ) -> Result<(), actix_ws::Closed> {
        let filter = match parse_channel_name(channel) {
            Ok(ChannelName::Plain) => None,
            Ok(ChannelName::Filtered { base, filter }) => Some((base.to_string(), filter)),
            Err(why) => {
                return self
                    .channel_error(channel, AblyError::new(40010, 400, why))
                    .await
            }
        };
        if let Some((base, filter)) = filter {
            return self.attach_filtered(channel, base, filter, options).await;
        }
        let ops = self.ops(channel);
        if !may_attach(ops) {
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
        let already = self.membership.attached.contains_key(channel);
        let previous_modes = match options.modes {
            Some(modes) => self
                .membership
                .requested_modes
                .insert(channel.to_string(), modes),
            None => self.membership.requested_modes.remove(channel),
        };
        let had_delta = if options.delta {
            !self.membership.deltas.insert(channel.to_string())
        } else {
            self.membership.deltas.remove(channel)
        };
        let modes = self.granted_modes(channel, ops);
        // A reattach with the channelSerial last seen (RTL4c1) continues
        // from it; a channel attached on this connection all along has
        // nothing to catch up. Rewind applies to a first attach only, not to
        // a resume or a reattach (https://ably.com/docs/channels/options/rewind),
        // and delivers at most MAX_REWIND messages.
        let catchup = match (&options.channel_serial, &options.rewind) {
            _ if already => Catchup::Nothing,
            (Some(serial), _) => Catchup::Resume(serial.clone()),
            (None, Some(_)) if options.resume => Catchup::Nothing,
            (None, Some((rewind, _))) => Catchup::Rewind(match *rewind {
                Rewind::Count(n) => Backlog {
                    limit: n.min(MAX_REWIND) as usize,
                    since: None,
                },
                Rewind::WithinMs(ms) => Backlog {
                    limit: MAX_REWIND as usize,
                    since: Some(self.state.hub.now_ms().saturating_sub(ms)),
                },
            }),
            (None, None) => Catchup::Nothing,
        };
        let attached = self.state.hub.attach(
            channel,
            self.id(),
            self.membership.claim(channel),
            self.limits(),
            self.subscriber(channel, modes),
            catchup,
        );
        let Ok(attached) = attached else {
            match previous_modes {
                Some(modes) => self
                    .membership
                    .requested_modes
                    .insert(channel.to_string(), modes),
                None => self.membership.requested_modes.remove(channel),
            };
            if had_delta {
                self.membership.deltas.insert(channel.to_string());
            } else {
                self.membership.deltas.remove(channel);
            }
            let error = AblyError::new(
                90021,
                400,
                format!(
                    "a connection may attach at most {} channels",
                    self.state.limits.max_channels_per_connection
                ),
            );
            return self.channel_error(channel, error).await;
        };
        self.membership.attached.insert(channel.to_string(), ops);
        // The ATTACHED flags (TR3): the modes granted (RTL4m), whether a
        // SYNC follows, whether a backlog follows (RTL2i).
        let mut flags = modes;
        if !attached.members.is_empty() {
            flags |= flag::HAS_PRESENCE;
        }
        if !attached.backlog.is_empty() && !attached.resumed {
            flags |= flag::HAS_BACKLOG;
        }
        // RESUMED: continuity kept (RTL2f), so ably-js emits no `update`
        // and keeps its attachSerial (RTL15c). Without it after a reattach,
        // the client knows messages may have been missed.
        if already || attached.resumed {
            flags |= flag::RESUMED;
        }
        // The channel's serial now (RTL15b): ably-js sends it back when it
        // reattaches (RTL4c1) and bounds `untilAttach` history by it (RTL10b).
        let mut frame = json!({"action": action::ATTACHED, "channel": channel, "flags": flags, "channelSerial": attached.serial});
        // The params recognised and validated (RTL4k1); others are ignored.
        let mut params = serde_json::Map::new();
        if let Some((_, text)) = &options.rewind {
            params.insert("rewind".into(), json!(text));
        }
        if let Some(text) = &options.modes_param {
            params.insert("modes".into(), json!(text));
        }
        if options.delta {
            params.insert("delta".into(), json!("vcdiff"));
        }
        if !params.is_empty() {
            frame["params"] = Value::Object(params);
        }
        self.send(&frame).await?;
        // A rewind's messages, or what a resume missed, before live ones:
        // live frames wait in the outbox until this returns.
        for frame in attached.backlog {
            self.send(&frame).await?;
        }
        if !attached.members.is_empty() && !already {
            self.send(&sync_frame(channel, attached.members, &random_id(8)))
                .await?;
        }
        Ok(())
    }

    /// Attaches to a derived channel (`[filter=…]<base>`,
    /// <https://ably.com/docs/pub-sub/advanced#subscription-filters>): with
    /// `subscribe` on the derived name (`[*]*`, the one such grant this
    /// broker's capabilities can express; Ably also takes `[filter]<base>`
    /// and `[*]<base>`, <https://ably.com/docs/pub-sub/advanced#filter-capabilities>),
    /// messages only, no rewind, deltas, presence or continuity.
    async fn attach_filtered(
        &mut self,
        channel: &str,
        base: String,
        filter: Filter,
        options: AttachOptions,
    ) -> Result<(), actix_ws::Closed> {
        let ops = self.ops(channel);
        if !ops.allows(Operation::Subscribe) {
            let why = format!(
                "channel {channel:?}: a subscription filter needs the subscribe capability on \
                 [*]* (Ably also accepts [filter]{base} and [*]{base}, which this broker's \
                 capabilities do not express; \
                 https://ably.com/docs/pub-sub/advanced#filter-capabilities)"
            );
            return self
                .channel_error(channel, AblyError::new(40160, 401, why))
                .await;
        }
        let unsupported = if options.rewind.is_some() {
            Some("rewind is")
        } else if options.delta {
            Some("deltas are")
        } else {
            None
        };
        if let Some(what) = unsupported {
            let why = format!(
                "channel {channel:?}: {what} not supported with a subscription filter \
                 (https://ably.com/docs/pub-sub/advanced#filter-capabilities)"
            );
            return self
                .channel_error(channel, AblyError::new(40000, 400, why))
                .await;
        }
        let already = self.membership.attached.contains_key(channel);
        // Only SUBSCRIBE can be granted on a derived channel.
        let modes = options.modes.unwrap_or(AttachOptions::DEFAULT_MODES) & flag::SUBSCRIBE;
        if modes == 0 {
            self.state.hub.detach_filtered(&base, self.id(), channel);
        } else {
            let filtered = Filtered {
                outbox: self.outbox.clone(),
                echo: self.params.echo,
                name: Arc::from(channel),
                filter: Arc::new(filter),
            };
            let claim = self.membership.claim(channel);
            let limits = self.limits();
            let id = self.membership.id.clone();
            if self
                .state
                .hub
                .attach_filtered(&base, &id, claim, limits, filtered)
                .is_err()
            {
                let error = self.limit_error();
                return self.channel_error(channel, error).await;
            }
        }
        self.membership.attached.insert(channel.to_string(), ops);
        self.membership.derived.insert(channel.to_string(), base);
        // No channelSerial and, after a reattach that was not already
        // attached here, no RESUMED: what was published meanwhile is not
        // replayed on a derived channel (ably-js then reports the channel
        // `update`d with `resumed: false`, RTL2f).
        let mut flags = modes;
        if already {
            flags |= flag::RESUMED;
        }
        self.send(&json!({"action": action::ATTACHED, "channel": channel, "flags": flags}))
            .await
    }

    async fn detach(&mut self, channel: String) -> Result<(), actix_ws::Closed> {
        self.membership.attached.remove(&channel);
        self.membership.requested_modes.remove(&channel);
        self.membership.deltas.remove(&channel);
        self.membership.presence_channels.remove(&channel);
        match self.membership.derived.remove(&channel) {
            Some(base) => self.state.hub.detach_filtered(&base, self.id(), &channel),
            None => self.state.hub.unsubscribe(&channel, self.id()),
        }
        self.send(&json!({"action": action::DETACHED, "channel": channel}))
            .await
    }

    async fn sync(&mut self, channel: &str) -> Result<(), actix_ws::Closed> {
        // The capability in force now, not the one at attach time, and the
        // PRESENCE_SUBSCRIBE mode.
        if self.membership.attached.contains_key(channel)
            && !self.membership.derived.contains_key(channel)
            && self.granted_modes(channel, self.ops(channel)) & flag::PRESENCE_SUBSCRIBE != 0
        {
            let members = self.state.hub.members(channel);
            self.send(&sync_frame(channel, members, &random_id(8)))
                .await?;
        }
        Ok(())
    }

    /// The channel of a MESSAGE or PRESENCE frame and what using it claims,
    /// once the name, the limits and the capability allow `op` there;
    /// otherwise the NACK is sent here and None returned.
    async fn target(
        &mut self,
        serial: u64,
        channel: Option<String>,
        op: Operation,
    ) -> Result<Option<(String, Claim)>, actix_ws::Closed> {
        let Some(channel) = channel else {
            self.nack(
                serial,
                AblyError::new(40000, 400, "the frame needs a channel"),
            )
            .await?;
            return Ok(None);
        };
        match parse_channel_name(&channel) {
            Ok(ChannelName::Plain) => {}
            // Derived channels "support only subscribe"
            // (https://ably.com/docs/pub-sub/advanced#filter-subscribe).
            Ok(ChannelName::Filtered { base, .. }) => {
                let why = format!(
                    "channel {channel:?} has a subscription filter, and a filtered channel is \
                     subscribe-only: {op} on {base:?} instead \
                     (https://ably.com/docs/pub-sub/advanced#filter-subscribe)"
                );
                self.nack(serial, AblyError::new(40160, 401, why)).await?;
                return Ok(None);
            }
            Err(why) => {
                self.nack(serial, AblyError::new(40010, 400, why)).await?;
                return Ok(None);
            }
        }
        // Entering presence holds the channel; publishing does not.
        let claim = match self.membership.claim(&channel) {
            claim @ Claim::New { .. } if op == Operation::Presence => claim,
            _ => Claim::Visit,
        };
        if !self.state.hub.admits(&channel, claim, self.limits()) {
            let error = self.limit_error();
            self.nack(serial, error).await?;
            return Ok(None);
        }
        if !self.ops(&channel).allows(op) {
            let why = format!("channel {channel:?}: the token's capability does not permit {op}");
            self.nack(serial, AblyError::new(40160, 401, why)).await?;
            return Ok(None);
        }
        // On a channel attached with modes that leave `op` out (RTL4l),
        // the operation is refused as Ably refuses it: 40160.
        let mode = match op {
            Operation::Publish => flag::PUBLISH,
            _ => flag::PRESENCE,
        };
        if let Some(&ops) = self.membership.attached.get(&channel) {
            if self.granted_modes(&channel, ops) & mode == 0 {
                let why =
                    format!(
                    "channel {channel:?} was attached without the {} mode: attach with it to {op}",
                    if mode == flag::PUBLISH { "publish" } else { "presence" }
                );
                self.nack(serial, AblyError::new(40160, 401, why)).await?;
                return Ok(None);
            }
        }
        Ok(Some((channel, claim)))
    }

    async fn publish(
        &mut self,
        serial: u64,
        channel: Option<String>,
        items: Vec<Value>,
    ) -> Result<(), actix_ws::Closed> {
        let Some((channel, _)) = self.target(serial, channel, Operation::Publish).await? else {
            return Ok(());
        };
        if items.is_empty() || items.len() > 1000 {
            return self
                .nack(
                    serial,
                    AblyError::new(40000, 400, "MESSAGE needs 1 to 1000 messages"),
                )
                .await;
        }
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
            let client_id = match speaker(
                self.membership.client_id.as_deref(),
                &self.credentials,
                item.get("clientId"),
            ) {
                Ok(client_id) => client_id,
                Err(e) => return self.nack(serial, e).await,
            };
            messages.push(stored_message(
                item,
                format!("{}:{serial}:{i}", self.id()),
                client_id,
                Some(self.id()),
                now,
            ));
        }
        let supplied: Vec<bool> = items.iter().map(|i| supplied_id(i).is_some()).collect();
        let delivery = json!({
            "action": action::MESSAGE,
            "channel": channel,
            "id": format!("{}:{serial}", self.id()),
            "connectionId": self.id(),
            "timestamp": now,
            "messages": messages,
        });
        let published = self.state.hub.publish(
            &channel,
            delivery,
            &supplied,
            Some(self.id()),
            Some(self.limits()),
        );
        match published {
            // A duplicate of a message published within the idempotency
            // window is acknowledged too, not delivered again (RSL1k,
            // https://ably.com/docs/pub-sub/advanced#idempotency).
            Ok(_) => self.ack(serial).await,
            Err(ChannelLimitReached) => {
                let error = self.limit_error();
                self.nack(serial, error).await
            }
        }
    }

    async fn presence(
        &mut self,
        serial: u64,
        channel: Option<String>,
        items: Vec<Value>,
    ) -> Result<(), actix_ws::Closed> {
        let Some((channel, claim)) = self.target(serial, channel, Operation::Presence).await?
        else {
            return Ok(());
        };
        if items.is_empty() {
            return self
                .nack(
                    serial,
                    AblyError::new(40000, 400, "PRESENCE needs presence messages"),
                )
                .await;
        }
        let mut changes = Vec::with_capacity(items.len());
        for item in &items {
            let client_id = match speaker(
                self.membership.client_id.as_deref(),
                &self.credentials,
                item.get("clientId"),
            ) {
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
                extras: item.get("extras").filter(|e| e.is_object()).cloned(),
                id: item.get("id").and_then(Value::as_str).map(str::to_string),
            });
        }
        let applied = self.state.hub.presence(
            &channel,
            self.id(),
            &format!("{}:{serial}", self.id()),
            changes,
            claim,
            self.limits(),
        );
        match applied {
            Ok(()) => {
                self.membership.presence_channels.insert(channel);
                self.ack(serial).await
            }
            Err(ChannelLimitReached) => {
                let error = self.limit_error();
                self.nack(serial, error).await
            }
        }
    }

    /// After re-authentication: every channel gets exactly what the new
    /// capability allows. Channels it no longer permits fail with 40160;
    /// delivery stops where `subscribe` went, members leave where `presence`
    /// went, and delivery starts where `subscribe` arrived.
    async fn apply_capability(&mut self) -> Result<(), actix_ws::Closed> {
        let channels: HashSet<String> = self
            .membership
            .attached
            .keys()
            .chain(self.membership.presence_channels.iter())
            .cloned()
            .collect();
        for channel in channels {
            let ops = self.ops(&channel);
            if let Some(base) = self.membership.derived.get(&channel).cloned() {
                if ops.allows(Operation::Subscribe) {
                    self.membership.attached.insert(channel, ops);
                } else {
                    self.membership.attached.remove(&channel);
                    self.membership.derived.remove(&channel);
                    self.state.hub.detach_filtered(&base, self.id(), &channel);
                    let error =
                        AblyError::new(40160, 401, "the new token does not permit this channel");
                    self.channel_error(&channel, error).await?;
                }
                continue;
            }
            if !may_attach(ops) {
                let was_attached = self.membership.attached.remove(&channel).is_some();
                self.membership.requested_modes.remove(&channel);
                self.membership.deltas.remove(&channel);
                self.membership.presence_channels.remove(&channel);
                self.state.hub.unsubscribe(&channel, self.id());
                if was_attached {
                    let error =
                        AblyError::new(40160, 401, "the new token does not permit this channel");
                    self.channel_error(&channel, error).await?;
                }
                continue;
            }
            if let Some(before) = self.membership.attached.get(&channel).copied() {
                let delivered = |modes: u64| modes & (flag::SUBSCRIBE | flag::PRESENCE_SUBSCRIBE);
                let (was, now) = (
                    delivered(self.granted_modes(&channel, before)),
                    delivered(self.granted_modes(&channel, ops)),
                );
                if was != now {
                    match self.subscriber(&channel, now) {
                        Some(subscriber) => {
                            self.state.hub.subscribe(&channel, self.id(), subscriber)
                        }
                        None => self.state.hub.drop_subscriber(&channel, self.id()),
                    }
                }
                self.membership.attached.insert(channel.clone(), ops);
            }
            // After delivery stopped: a client that lost `subscribe` does not
            // hear its own member leave.
            if !ops.allows(Operation::Presence)
                && self.membership.presence_channels.remove(&channel)
            {
                self.state.hub.leave(&channel, self.id());
            }
        }
        Ok(())
    }

    /// An AUTH frame with a new token (RTC8a): the connection continues with
    /// the new capability, or fails if the token does not authenticate or is
    /// for another clientId.
    async fn reauthenticate(&mut self, token: &str) -> Result<Flow, actix_ws::Closed> {
        let result = self.state.auth.authenticate_token(token).and_then(|creds| {
            let client_id = resolve_client_id(&creds, self.membership.client_id.as_deref(), false)?;
            if client_id != self.membership.client_id {
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
                self.membership.leave_at_once = true;
                self.fatal(error).await?;
                Ok(Flow::Close)
            }
        }
    }

    /// A WebSocket message from the client.
    async fn receive(
        &mut self,
        incoming: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Step {
        self.heard_ms = self.state.hub.now_ms();
        let (bytes, format) = match incoming {
            Some(Ok(AggregatedMessage::Text(text))) => (text.into_bytes(), Format::Json),
            Some(Ok(AggregatedMessage::Binary(bytes))) => (bytes, Format::MsgPack),
            Some(Ok(AggregatedMessage::Ping(payload))) => {
                let deadline = self.state.limits.send_timeout;
                let ponged = tokio::time::timeout(deadline, self.session.pong(&payload)).await;
                return match ponged {
                    Ok(Ok(())) => Step::Continue,
                    _ => Step::Stop(None),
                };
            }
            Some(Ok(AggregatedMessage::Pong(_))) => return Step::Continue,
            Some(Ok(AggregatedMessage::Close(_))) | None => return Step::Stop(None),
            // The transport broke under the frames (a reset, an end without
            // a close frame): the network, not the client, so it may resume.
            Some(Err(ProtocolError::Io(error))) if transport_failed(&error) => {
                tracing::debug!(connection = %self.id(), %error, "the transport broke");
                return Step::Stop(None);
            }
            Some(Err(error)) => {
                return Step::Stop(Some(AblyError::new(
                    40000,
                    400,
                    format!("WebSocket protocol error: {error}"),
                )))
            }
        };
        let inbound = match Inbound::parse(&bytes, format) {
            Ok(inbound) => inbound,
            Err(error) => return Step::Stop(Some(error.into())),
        };
        match self.handle(inbound).await {
            Ok(Flow::Continue) => Step::Continue,
            Ok(Flow::Close) | Err(_) => Step::Stop(None),
        }
    }

    /// A WebSocket ping on every tick, which keeps proxies from idling the
    /// socket out; a HEARTBEAT too when the client asked for them (RTN23b).
    /// Every live client answers the pings (a WebSocket endpoint must pong,
    /// RFC 6455 §5.5.2, ably-js's `heartbeats=true` clients included), so a
    /// connection silent past the idle timeout is dead: it is closed, and its
    /// members wait out the presence grace.
    async fn heartbeat(&mut self) -> Step {
        let silent = self.state.hub.now_ms().saturating_sub(self.heard_ms);
        if silent > self.state.timings.idle_timeout_ms() {
            tracing::debug!(connection = %self.id(), silent_ms = silent, "closing a connection that went silent");
            let error = AblyError::new(
                80003,
                408,
                format!("nothing heard from the client in {silent} ms; the connection is taken for dead"),
            );
            let frame = json!({"action": action::DISCONNECTED, "error": error.to_value()});
            let _ = tokio::time::timeout(Duration::from_secs(1), self.send(&frame)).await;
            return Step::Stop(None);
        }
        let deadline = self.state.limits.send_timeout;
        if !matches!(
            tokio::time::timeout(deadline, self.session.ping(b"")).await,
            Ok(Ok(()))
        ) {
            return Step::Stop(None);
        }
        if self.params.heartbeats
            && self
                .send(&json!({"action": action::HEARTBEAT}))
                .await
                .is_err()
        {
            return Step::Stop(None);
        }
        Step::Continue
    }

    /// Points the expiry timer at the credentials' expiry, and the AUTH
    /// request timer 30 s before it (`reauth_due_ms`), when the expiry changed
    /// (at the start, and after re-authentication). Returns `None` when nothing
    /// changed, else whether an AUTH request is now to be sent.
    fn arm_expiry(
        &self,
        armed: &mut Option<u64>,
        expiry: Pin<&mut Sleep>,
        reauth: Pin<&mut Sleep>,
    ) -> Option<bool> {
        if self.credentials.expires_ms == *armed {
            return None;
        }
        *armed = self.credentials.expires_ms;
        let Some(at) = *armed else {
            return Some(false);
        };
        let now = self.state.hub.now_ms();
        // A JWT may name any exp; a year out is as good as never.
        let after = |ms: u64| tokio::time::Instant::now() + Duration::from_millis(ms.min(YEAR_MS));
        expiry.reset(after(at.saturating_sub(now)));
        let due = reauth_due_ms(now, at);
        if let Some(due) = due {
            reauth.reset(after(due - now));
        }
        Some(due.is_some())
    }

    /// The connection's loop, after CONNECTED: returns when it ends, with the
    /// error to send first if it ends in one.
    async fn serve(
        &mut self,
        mut stream: AggregatedMessageStream,
        mut outbox: mpsc::Receiver<Frame>,
        lagged: Arc<Notify>,
    ) -> Option<AblyError> {
        let mut heartbeat = tokio::time::interval(self.state.timings.ping_every());
        heartbeat.tick().await;
        let expiry = tokio::time::sleep(Duration::from_millis(YEAR_MS));
        tokio::pin!(expiry);
        let reauth = tokio::time::sleep(Duration::from_millis(YEAR_MS));
        tokio::pin!(reauth);
        let mut armed = None;
        // Whether this token's AUTH request is still to be sent (once per token).
        let mut reauth_pending = false;
        let mut stopping = self.state.stopping();
        let taken_over = self.membership.registration.stop.clone();
        loop {
            if let Some(pending) = self.arm_expiry(&mut armed, expiry.as_mut(), reauth.as_mut()) {
                reauth_pending = pending;
            }
            let step = tokio::select! {
                incoming = stream.recv() => self.receive(incoming).await,
                Some(frame) = outbox.recv() => match self.send_shared(&frame).await {
                    Ok(()) => Step::Continue,
                    Err(_) => Step::Stop(None),
                },
                _ = heartbeat.tick() => self.heartbeat().await,
                _ = &mut reauth, if reauth_pending => {
                    reauth_pending = false;
                    match self.send(&json!({"action": action::AUTH})).await {
                        Ok(()) => Step::Continue,
                        Err(_) => Step::Stop(None),
                    }
                }
                _ = &mut expiry, if armed.is_some() => {
                    self.disconnect(AblyError::new(40142, 401, "token expired")).await
                }
                // A resume of this connection arrived on a new transport
                // (RTN15b): this one is the client's past, end it quietly.
                _ = taken_over.notified() => {
                    tracing::debug!(connection = %self.id(), "taken over by a resume");
                    Step::Stop(None)
                }
                _ = stopping.wait_for(|stop| *stop) => {
                    self.disconnect(AblyError::new(80003, 503, "the broker is shutting down; reconnect later")).await
                }
                _ = lagged.notified() => {
                    let error = AblyError::new(80020, 429, format!(
                        "this connection fell more than {} messages behind and was dropped; reconnect to continue",
                        self.state.limits.outbox_frames
                    ));
                    self.disconnect(error).await
                }
            };
            if let Step::Stop(error) = step {
                return error;
            }
        }
    }
}

/// Why a resume or recover got a new connection: the error its CONNECTED
/// carries (RTN15c7), which ably-js sets as `connection.errorReason` and the
/// `connected` state change's `reason`.
fn not_continued(asked: &Continue) -> AblyError {
    let ttl_s = CONNECTION_STATE_TTL_MS / 1000;
    match asked {
        Continue::Resume(_) => AblyError::new(
            80008,
            400,
            format!("unable to resume the connection: it is unknown to this broker or closed more than {ttl_s} s ago; this is a new connection"),
        ),
        Continue::Recover(_) => AblyError::new(
            80018,
            400,
            format!("unable to recover the connection: the recovery key's connection is unknown to this broker or closed more than {ttl_s} s ago; this is a new connection"),
        ),
    }
}

/// Whether a WebSocket read error is the transport failing (actix-ws wraps
/// the payload's errors), rather than a frame the client got wrong.
fn transport_failed(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<actix_web::error::PayloadError>())
}

/// The NACK error for a protocol action the broker does not implement.
fn unsupported(action: u64) -> AblyError {
    let what = match action {
        19 => "OBJECT (LiveObjects)",
        21 => "ANNOTATION (message annotations)",
        _ => "this action",
    };
    AblyError::new(
        40000,
        400,
        format!("protocol action {action}, {what}, is not supported by this broker; see the README's \"What it does not do\""),
    )
}

/// Answers a client that may not connect with one frame, then closes.
async fn refuse(
    mut session: actix_ws::Session,
    format: Format,
    deadline: Duration,
    act: u64,
    error: AblyError,
) {
    let frame = json!({"action": act, "error": error.to_value()});
    let _ = write(&mut session, protocol::encode(&frame, format), deadline).await;
    close(session).await;
}

/// Runs one connection to its end. `credentials` is the outcome of the
/// connect-time authentication: on failure the client gets the error as a
/// frame (ably-js ignores HTTP errors on the upgrade).
pub(crate) async fn run(
    session: actix_ws::Session,
    stream: actix_ws::MessageStream,
    state: Arc<BrokerState>,
    params: ConnectParams,
    credentials: Result<(Credentials, Option<String>), AblyError>,
) {
    let (format, deadline) = (params.format, state.limits.send_timeout);
    let (credentials, client_id) = match credentials {
        Ok(c) => c,
        Err(error) => {
            // Token errors make the client renew and reconnect (RTN15h2);
            // others fail it.
            let act = if error.is_token_error() {
                action::DISCONNECTED
            } else {
                action::ERROR
            };
            return refuse(session, format, deadline, act, error).await;
        }
    };
    // A resume (RTN15b) or recover (RTN16k) of a connection the broker
    // still remembers keeps its id with a new key (RTN15c6, RTN16d: "the
    // connection ID [is] the same but the key [is] updated"; the old key
    // continues nothing once taken); anything else
    // is a new connection, told why when it asked to continue (RTN15c7,
    // RTN16l). Taken before admission: a connection taken over frees its slot.
    let continued = match &params.continues {
        Some(asked) => Some((
            asked.clone(),
            state.sessions.take(asked.key(), client_id.as_deref()).await,
        )),
        None => None,
    };
    let Some(_slot) = state.admit() else {
        let error = AblyError::new(42910, 429, "the broker has reached its connection limit");
        return refuse(session, format, deadline, action::ERROR, error).await;
    };
    let (tx, outbox) = mpsc::channel(state.limits.outbox_frames);
    let lagged = Arc::new(Notify::new());
    let (id, key, continue_error) = match continued {
        Some((_, Some(id))) => (id.clone(), format!("{}-{id}", random_id(8)), None),
        failed => {
            let id = random_id(12);
            let error = failed.map(|(asked, _)| not_continued(&asked));
            (id.clone(), format!("{}-{id}", random_id(8)), error)
        }
    };
    let registration = state.sessions.open(&key, &id, client_id.as_deref());
    // A resumed connection's members, still present within the grace, are
    // its own again: no leave, and they leave when it ends. (`take` above
    // waited for a taken-over transport's clean-up, which scheduled them.)
    let present = state.departures.adopt(&id);
    let mut conn = Connection {
        membership: Membership {
            state: state.clone(),
            id,
            key,
            client_id,
            registration,
            attached: HashMap::new(),
            requested_modes: HashMap::new(),
            deltas: HashSet::new(),
            derived: HashMap::new(),
            presence_channels: present.into_iter().collect(),
            leave_at_once: false,
        },
        params,
        credentials,
        outbox: Outbox {
            tx,
            lagged: lagged.clone(),
            lagging: Arc::new(AtomicBool::new(false)),
        },
        session: session.clone(),
        heard_ms: state.hub.now_ms(),
        state: state.clone(),
    };
    tracing::debug!(connection = %conn.id(), client_id = ?conn.membership.client_id, "realtime connection opened");
    let stream = stream
        .max_frame_size(state.limits.max_frame_size)
        .aggregate_continuations()
        .max_continuation_size(state.limits.max_frame_size);
    let mut connected = conn.connected_frame();
    if let Some(error) = continue_error {
        connected["error"] = error.to_value();
    }
    if conn.send(&connected).await.is_ok() {
        if let Some(error) = conn.serve(stream, outbox, lagged).await {
            conn.membership.leave_at_once = true;
            let _ = conn.fatal(error).await;
        }
    }
    // The clean-up: subscriptions end, members leave, the id is remembered.
    drop(conn);
    close(session).await;
}

#[cfg(test)]
mod reauth_tests {
    use super::reauth_due_ms;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn a_token_is_asked_to_renew_30_seconds_before_it_expires() {
        let hour = NOW + 3_600_000;
        assert_eq!(reauth_due_ms(NOW, hour), Some(hour - 30_000));
        assert_eq!(reauth_due_ms(NOW, NOW + 35_000), Some(NOW + 5_000));
    }

    #[test]
    fn a_token_with_30_seconds_or_less_left_is_not_asked() {
        assert_eq!(reauth_due_ms(NOW, NOW + 30_000), None);
        assert_eq!(reauth_due_ms(NOW, NOW + 5_000), None);
        assert_eq!(reauth_due_ms(NOW, NOW), None);
        assert_eq!(reauth_due_ms(NOW, NOW - 5), None);
        assert_eq!(reauth_due_ms(NOW, 10), None);
    }
}
