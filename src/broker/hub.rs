//! Channel state shared by every connection and the REST API: subscribers,
//! presence members, and bounded message and presence history. Everything is
//! in memory; a channel with no subscribers, no members and no history left
//! is forgotten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Notify};

use super::continuity::Serials;
use super::delta;
use super::filter::Filter;
use super::message::RecentIds;
use super::protocol::{action, presence_action, SharedFrame};
use super::tables::GiveBack;
use crate::clock::SharedClock;

/// A frame queued for one connection; shared by every recipient.
pub(crate) type Frame = Arc<SharedFrame>;

/// How a connection is reached: a bounded queue, and a signal raised when
/// the queue overflows so the connection can be dropped rather than grow.
#[derive(Clone)]
pub(crate) struct Outbox {
    pub(crate) tx: mpsc::Sender<Frame>,
    pub(crate) lagged: Arc<Notify>,
    pub(crate) lagging: Arc<AtomicBool>,
}

impl Outbox {
    fn deliver(&self, frame: &Frame) {
        if self.tx.try_send(frame.clone()).is_err() && !self.lagging.swap(true, Ordering::SeqCst) {
            self.lagged.notify_one();
        }
    }
}

/// A connection's subscription to a channel.
pub(crate) struct Subscriber {
    pub(crate) outbox: Outbox,
    /// Whether it hears its own messages (RTN2b).
    pub(crate) echo: bool,
    /// Whether it is sent messages (the SUBSCRIBE mode, TR3s) and presence
    /// events (PRESENCE_SUBSCRIBE, TR3t): the modes granted on attach (RTL4l).
    pub(crate) messages: bool,
    pub(crate) presence: bool,
    /// Present when it asked for deltas (`params: { delta: 'vcdiff' }`):
    /// what it was sent last, which decides whether a delta can reach it.
    pub(crate) delta: Option<delta::Cursor>,
}

impl Subscriber {
    fn wants(&self, frame: &Frame) -> bool {
        match frame.get("action").and_then(Value::as_u64) {
            Some(action::MESSAGE) => self.messages,
            Some(action::PRESENCE) => self.presence,
            _ => true,
        }
    }
}

/// A connection's attachment to a derived channel of a channel
/// (`[filter=…]<channel>`, <https://ably.com/docs/pub-sub/advanced#subscription-filters>):
/// it is sent the channel's messages that its filter passes, in frames
/// named after the derived channel. Messages only: no presence, no deltas.
pub(crate) struct Filtered {
    pub(crate) outbox: Outbox,
    /// Whether it hears its own messages (RTN2b).
    pub(crate) echo: bool,
    /// The derived channel's full name, which its frames carry.
    pub(crate) name: Arc<str>,
    pub(crate) filter: Arc<Filter>,
}

#[derive(Clone)]
struct Member {
    client_id: String,
    connection_id: String,
    data: Option<Value>,
    encoding: Option<Value>,
    /// Kept with the member and sent wherever it is (TP3i): the Spaces SDK
    /// keeps its locks here.
    extras: Option<Value>,
    id: String,
    timestamp: u64,
}

impl Member {
    fn to_value(&self, action: u64) -> Value {
        let mut v = json!({
            "action": action,
            "clientId": self.client_id,
            "connectionId": self.connection_id,
            "id": self.id,
            "timestamp": self.timestamp,
        });
        if let Some(data) = &self.data {
            v["data"] = data.clone();
        }
        if let Some(encoding) = &self.encoding {
            v["encoding"] = encoding.clone();
        }
        if let Some(extras) = &self.extras {
            v["extras"] = extras.clone();
        }
        v
    }
}

/// A message or presence event as history keeps it. The event is kept as
/// its JSON text, parsed again only when a resume, a rewind or a history
/// page reads it: history is written on every publish and read rarely, and
/// the text is a third of the size of the `Value` tree it came from (see
/// BENCHMARKS.md, memory per channel), which is most of what a busy broker
/// holds for its 2-minute windows. One allocation per entry: the fewer
/// small blocks live for 2 minutes among short-lived ones, the less the
/// allocator's heap fragments under churn (benches/soak).
struct Stored {
    /// The event's serial (see `continuity`): history's order, its page
    /// cursor, and where a resume continues from.
    seq: u64,
    timestamp: u64,
    json: Box<str>,
}

impl Stored {
    fn new(seq: u64, timestamp: u64, event: &Value) -> Stored {
        Stored {
            seq,
            timestamp,
            json: event.to_string().into_boxed_str(),
        }
    }

    /// The event as it was stored.
    fn event(&self) -> Value {
        serde_json::from_str(&self.json).expect("history holds the JSON text of a Value")
    }
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<String, Subscriber>,
    /// Attachments to derived channels of this one, by (connection id,
    /// derived channel name): a connection may hold several filters.
    filtered: HashMap<(String, String), Filtered>,
    /// Keyed by (clientId, connectionId), as ably-js keys its presence map.
    members: BTreeMap<(String, String), Member>,
    history: VecDeque<Stored>,
    /// Enter, update and leave events as broadcast (RSP4), bounded as
    /// message history is.
    presence_history: VecDeque<Stored>,
    /// Client-supplied message ids published within the idempotency window
    /// (RSL1k), so a retried publish is delivered and stored once.
    recent_ids: RecentIds,
    /// The serial of the channel's newest event, or of the broker when the
    /// channel state was created: the channelSerial of ATTACHED (RTL15b).
    last: u64,
    /// Every event of this channel after serial `since` is still held in
    /// `history` and `presence_history`, so a resume from any serial in
    /// `since..=last` can be honoured (RTL4c1). Rises as entries are pruned.
    since: u64,
    /// The newest message, as the base of the next delta, while a
    /// subscriber asked for deltas.
    delta_base: Option<delta::Base>,
}

impl Channel {
    /// A channel's state, created when the broker's newest serial is `serial`.
    fn starting_at(serial: u64) -> Channel {
        Channel {
            last: serial,
            since: serial,
            ..Channel::default()
        }
    }

    fn is_forgettable(&self) -> bool {
        self.subscribers.is_empty()
            && self.filtered.is_empty()
            && self.members.is_empty()
            && self.history.is_empty()
            && self.presence_history.is_empty()
            && self.recent_ids.is_empty()
    }

    /// Records broadcast presence events in the channel's presence history,
    /// each with the next serial.
    fn record_presence(&mut self, items: &[Value], serial: &AtomicU64, now: u64) {
        for item in items {
            self.last = serial.fetch_add(1, Ordering::Relaxed) + 1;
            self.presence_history
                .push_back(Stored::new(self.last, now, item));
        }
    }

    fn broadcast(&self, frame: &Frame, from: Option<&str>) -> u64 {
        let mut sent = 0;
        for (id, subscriber) in &self.subscribers {
            if (!subscriber.echo && Some(id.as_str()) == from) || !subscriber.wants(frame) {
                continue;
            }
            subscriber.outbox.deliver(frame);
            sent += 1;
        }
        sent
    }

    /// Sends each derived channel's subscribers the messages of `frame` its
    /// filter passes, in a frame named after the derived channel (nothing
    /// when none passes). Each derived channel's frame is built once and
    /// shared. It carries no channelSerial: a derived channel keeps no
    /// continuity of its own.
    fn broadcast_filtered(&self, frame: &Value, from: Option<&str>) -> u64 {
        if self.filtered.is_empty() {
            return 0;
        }
        let Some(messages) = frame.get("messages").and_then(Value::as_array) else {
            return 0;
        };
        let mut frames: HashMap<&str, Option<Frame>> = HashMap::new();
        let mut sent = 0;
        for ((id, _), subscriber) in &self.filtered {
            if !subscriber.echo && Some(id.as_str()) == from {
                continue;
            }
            let derived = frames.entry(&subscriber.name).or_insert_with(|| {
                let passed: Vec<Value> = messages
                    .iter()
                    .filter(|m| subscriber.filter.matches(m))
                    .cloned()
                    .collect();
                (!passed.is_empty()).then(|| {
                    let mut derived = json!({
                        "action": action::MESSAGE,
                        "channel": &*subscriber.name,
                        "messages": passed,
                    });
                    for key in ["id", "connectionId", "timestamp"] {
                        if let Some(value) = frame.get(key) {
                            derived[key] = value.clone();
                        }
                    }
                    Arc::new(SharedFrame::new(derived))
                })
            });
            if let Some(derived) = derived {
                subscriber.outbox.deliver(derived);
                sent += 1;
            }
        }
        sent
    }

    /// Broadcasts a MESSAGE frame: as published, or to a delta subscriber
    /// that was sent the previous message, with payloads as deltas (RTL20).
    fn broadcast_messages(&mut self, frame: &Frame, from: Option<&str>) -> u64 {
        let base = self.delta_base.take();
        if !self.subscribers.values().any(|s| s.delta.is_some()) {
            return self.broadcast(frame, from);
        }
        let base_id = base.as_ref().map(|b| b.id().to_string());
        let encoded = delta::encode_frame(frame, base);
        self.delta_base = encoded.next;
        let deltas = encoded.frame.map(|f| Arc::new(SharedFrame::new(f)));
        let last_id = frame
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| m.last())
            .and_then(|m| m.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut sent = 0;
        for (id, subscriber) in &mut self.subscribers {
            if (!subscriber.echo && Some(id.as_str()) == from) || !subscriber.messages {
                continue;
            }
            let chosen = match (&mut subscriber.delta, &deltas) {
                // A frame whose first message is whole suits anyone.
                (Some(cursor), Some(deltas)) if base_id.is_none() || cursor.last == base_id => {
                    cursor.last.clone_from(&last_id);
                    deltas
                }
                (Some(cursor), _) => {
                    cursor.last.clone_from(&last_id);
                    frame
                }
                (None, _) => frame,
            };
            subscriber.outbox.deliver(chosen);
            sent += 1;
        }
        sent
    }
}

/// How many channels the broker holds state for, and one connection holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelLimits {
    pub(crate) max_channels: usize,
    pub(crate) per_connection: usize,
}

/// What taking part in a channel adds to the counts the limits bound. The
/// connection's own task is the only one that changes what it holds, so the
/// count it passes in is exact; the broker-wide count is read under the
/// hub's lock, with the change, so concurrent clients cannot overshoot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The connection holds the channel already: no limit applies.
    Held,
    /// The channel would be new to the connection, which holds `holding`
    /// others: both limits apply.
    New { holding: usize },
    /// The connection uses the channel without holding it (a publish), or
    /// holds it already but may create its state: the broker's limit applies.
    Visit,
}

/// A channel limit would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelLimitReached;

#[derive(Debug, Clone, Copy)]
pub(crate) struct HistoryLimits {
    pub(crate) max_messages: usize,
    pub(crate) max_age: Duration,
}

/// What an attaching subscriber is sent from history before live messages
/// (a rewind): at most `limit` of the newest messages, none older than
/// `since` (ms) when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backlog {
    pub(crate) limit: usize,
    pub(crate) since: Option<u64>,
}

/// What an attaching subscriber is sent before live events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Catchup {
    Nothing,
    /// A rewind: messages from history (RTL4k, TB2d).
    Rewind(Backlog),
    /// A reattach with the channelSerial the client last saw (RTL4c1): every
    /// message and presence event after it, when the broker still holds
    /// them all.
    Resume(String),
}

/// What an attach returns: the members for the SYNC (when presence is
/// delivered), the frames to send before live ones (oldest first), whether
/// a resume was honoured, and the channel's serial for ATTACHED.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Attached {
    pub(crate) members: Vec<Value>,
    pub(crate) backlog: Vec<Value>,
    pub(crate) resumed: bool,
    pub(crate) serial: String,
}

/// A presence change asked for by a connection.
pub(crate) struct PresenceChange {
    pub(crate) action: u64,
    pub(crate) client_id: String,
    pub(crate) data: Option<Value>,
    pub(crate) encoding: Option<Value>,
    pub(crate) extras: Option<Value>,
    /// The id the client set, which only an automatic re-entry does (RTP17g).
    pub(crate) id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Backwards,
    Forwards,
}

#[derive(Debug, Clone)]
pub(crate) struct HistoryQuery {
    pub(crate) limit: usize,
    pub(crate) direction: Direction,
    pub(crate) start: Option<u64>,
    pub(crate) end: Option<u64>,
    /// Continue after this sequence number (pagination cursor).
    pub(crate) cursor: Option<u64>,
    /// Only events up to this serial (RTL10b `untilAttach`).
    pub(crate) until: Option<u64>,
}

pub(crate) struct HistoryPage {
    pub(crate) messages: Vec<Value>,
    /// The cursor for the next page, when there is one.
    pub(crate) next: Option<u64>,
}

/// Which of a channel's histories a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HistoryKind {
    Messages,
    Presence,
}

/// Who is on a channel now, for `GET /channels/{name}` (CHD2, CHO2, CHM2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Occupancy {
    /// Connections subscribed or present.
    pub(crate) connections: usize,
    /// Connections the channel's messages are delivered to (SUBSCRIBE mode).
    pub(crate) subscribers: usize,
    /// Connections its presence events are delivered to (PRESENCE_SUBSCRIBE).
    pub(crate) presence_subscribers: usize,
    pub(crate) presence_members: usize,
    /// Connections with at least one member present.
    pub(crate) presence_connections: usize,
}

/// The sizes of what the hub holds, summed over its channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HubTables {
    pub(crate) channels: usize,
    pub(crate) subscribers: usize,
    pub(crate) filtered: usize,
    pub(crate) presence_members: usize,
    pub(crate) messages_held: usize,
    pub(crate) presence_events_held: usize,
    pub(crate) idempotency_ids: usize,
    pub(crate) delta_bases: usize,
}

pub(crate) struct Hub {
    channels: Mutex<HashMap<String, Channel>>,
    limits: HistoryLimits,
    /// Messages published (a metric).
    seq: AtomicU64,
    /// The newest serial issued, to a message or a presence event of any
    /// channel; only advanced under the channels' lock, so each channel's
    /// events are numbered in the order they happen.
    serial: AtomicU64,
    serials: Serials,
    deliveries: AtomicU64,
    clock: SharedClock,
}

impl Hub {
    pub(crate) fn new(limits: HistoryLimits, clock: SharedClock) -> Hub {
        Hub {
            channels: Mutex::new(HashMap::new()),
            limits,
            seq: AtomicU64::new(0),
            serial: AtomicU64::new(0),
            serials: Serials::new(super::message::random_id(8)),
            deliveries: AtomicU64::new(0),
            clock,
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn channel_count(&self) -> usize {
        self.lock().len()
    }

    /// What the channels hold now, summed over them, read under one lock.
    pub(crate) fn tables(&self) -> HubTables {
        let channels = self.lock();
        let mut tables = HubTables {
            channels: channels.len(),
            ..HubTables::default()
        };
        for state in channels.values() {
            tables.subscribers += state.subscribers.len();
            tables.filtered += state.filtered.len();
            tables.presence_members += state.members.len();
            tables.messages_held += state.history.len();
            tables.presence_events_held += state.presence_history.len();
            tables.idempotency_ids += state.recent_ids.len();
            tables.delta_bases += usize::from(state.delta_base.is_some());
        }
        tables
    }

    /// Messages published since start.
    pub(crate) fn messages_published(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// The sequence number of a serial this broker issued (for REST
    /// history's `fromSerial`); `None` for any other text.
    pub(crate) fn parse_serial(&self, text: &str) -> Option<u64> {
        self.serials.parse(text)
    }

    /// The state of `channel`, created if the broker holds none.
    fn open<'a>(
        &self,
        channels: &'a mut HashMap<String, Channel>,
        channel: &str,
    ) -> &'a mut Channel {
        channels
            .entry(channel.to_string())
            .or_insert_with(|| Channel::starting_at(self.serial.load(Ordering::Relaxed)))
    }

    /// Frames queued to subscribers since start.
    pub(crate) fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    pub(crate) fn subscribe(&self, channel: &str, connection_id: &str, subscriber: Subscriber) {
        self.open(&mut self.lock(), channel)
            .subscribers
            .insert(connection_id.to_string(), subscriber);
    }

    /// Whether `claim` fits the limits, given the channels held now.
    fn refuses(
        channels: &HashMap<String, Channel>,
        channel: &str,
        claim: Claim,
        limits: ChannelLimits,
    ) -> bool {
        let broker_full =
            || !channels.contains_key(channel) && channels.len() >= limits.max_channels;
        match claim {
            Claim::Held => false,
            Claim::New { holding } => holding >= limits.per_connection || broker_full(),
            Claim::Visit => broker_full(),
        }
    }

    /// Whether `claim` fits the limits now: for answering in order before
    /// the change is made (which checks again).
    pub(crate) fn admits(&self, channel: &str, claim: Claim, limits: ChannelLimits) -> bool {
        !Hub::refuses(&self.lock(), channel, claim, limits)
    }

    /// Attaches a connection (RTL4): checks the limits, then subscribes it
    /// (`Some`) or stops delivery to it (`None`: neither messages nor
    /// presence), all under one lock. Returns the members a presence
    /// subscriber is sent in a SYNC, and what `catchup` asks for (a rewind's
    /// messages, or what a resume missed); read under the same lock as the
    /// subscription starts, so no event falls between the two or arrives in
    /// both.
    pub(crate) fn attach(
        &self,
        channel: &str,
        connection_id: &str,
        claim: Claim,
        limits: ChannelLimits,
        subscriber: Option<Subscriber>,
        catchup: Catchup,
    ) -> Result<Attached, ChannelLimitReached> {
        let now = self.now_ms();
        let mut channels = self.lock();
        if Hub::refuses(&channels, channel, claim, limits) {
            return Err(ChannelLimitReached);
        }
        match subscriber {
            Some(subscriber) => {
                let state = self.open(&mut channels, channel);
                self.prune(state, now);
                let mut attached = Attached {
                    serial: self.serials.format(state.last),
                    ..Attached::default()
                };
                if subscriber.presence {
                    attached.members = state
                        .members
                        .values()
                        .map(|m| m.to_value(presence_action::PRESENT))
                        .collect();
                }
                match catchup {
                    Catchup::Nothing => {}
                    Catchup::Rewind(backlog) => {
                        if subscriber.messages {
                            attached.backlog = Hub::backlog(channel, state, backlog);
                        }
                    }
                    Catchup::Resume(serial) => {
                        if let Some(from) = self.resumable(state, &serial) {
                            attached.resumed = true;
                            attached.backlog =
                                self.missed(channel, state, from, connection_id, &subscriber);
                        }
                    }
                }
                state
                    .subscribers
                    .insert(connection_id.to_string(), subscriber);
                Ok(attached)
            }
            None => {
                let mut attached = Attached::default();
                match channels.get_mut(channel) {
                    Some(state) => {
                        if let Catchup::Resume(serial) = &catchup {
                            attached.resumed = self.resumable(state, serial).is_some();
                        }
                        attached.serial = self.serials.format(state.last);
                        state.subscribers.remove(connection_id);
                        if state.is_forgettable() {
                            channels.remove(channel);
                        }
                    }
                    None => {
                        let newest = self.serial.load(Ordering::Relaxed);
                        if let Catchup::Resume(serial) = &catchup {
                            attached.resumed = self.serials.parse(serial) == Some(newest);
                        }
                        attached.serial = self.serials.format(newest);
                    }
                }
                Ok(attached)
            }
        }
    }

    /// Attaches a connection to a derived channel of `channel` (see
    /// [`Filtered`]), within the same limits as an attach, or replaces its
    /// filter there on a reattach.
    pub(crate) fn attach_filtered(
        &self,
        channel: &str,
        connection_id: &str,
        claim: Claim,
        limits: ChannelLimits,
        filtered: Filtered,
    ) -> Result<(), ChannelLimitReached> {
        let mut channels = self.lock();
        if Hub::refuses(&channels, channel, claim, limits) {
            return Err(ChannelLimitReached);
        }
        let key = (connection_id.to_string(), filtered.name.to_string());
        self.open(&mut channels, channel)
            .filtered
            .insert(key, filtered);
        Ok(())
    }

    /// Ends a connection's attachment to the derived channel `name` of
    /// `channel`.
    pub(crate) fn detach_filtered(&self, channel: &str, connection_id: &str, name: &str) {
        self.update(channel, |_, state| {
            state
                .filtered
                .remove(&(connection_id.to_string(), name.to_string()));
        });
    }

    /// The serial a resume continues after, when the channel still holds
    /// every event since it: one this broker issued, no older than what
    /// pruning dropped, no newer than the channel's newest.
    fn resumable(&self, state: &Channel, serial: &str) -> Option<u64> {
        self.serials
            .parse(serial)
            .filter(|from| (state.since..=state.last).contains(from))
    }

    /// The newest `backlog.limit` messages since `backlog.since`, oldest
    /// first, each in a MESSAGE frame of its own. Without a channelSerial:
    /// the client's stays the one ATTACHED gave it.
    fn backlog(channel: &str, state: &Channel, backlog: Backlog) -> Vec<Value> {
        let mut frames: Vec<Value> = state
            .history
            .iter()
            .rev()
            .take_while(|m| backlog.since.is_none_or(|since| m.timestamp >= since))
            .take(backlog.limit)
            .map(
                |m| json!({"action": action::MESSAGE, "channel": channel, "messages": [m.event()]}),
            )
            .collect();
        frames.reverse();
        frames
    }

    /// The messages and presence events after serial `from` that the
    /// subscriber would have been sent live, in order, each in a frame with
    /// its channelSerial (RTL15b).
    fn missed(
        &self,
        channel: &str,
        state: &Channel,
        from: u64,
        connection_id: &str,
        subscriber: &Subscriber,
    ) -> Vec<Value> {
        let after = |history: &VecDeque<Stored>| history.partition_point(|m| m.seq <= from);
        let own = |event: &Value| {
            event.get("connectionId").and_then(Value::as_str) == Some(connection_id)
        };
        let mut events: Vec<(u64, Value)> = Vec::new();
        if subscriber.messages {
            for m in state.history.range(after(&state.history)..) {
                let event = m.event();
                if subscriber.echo || !own(&event) {
                    let frame = json!({
                        "action": action::MESSAGE,
                        "channel": channel,
                        "channelSerial": self.serials.format(m.seq),
                        "messages": [event],
                    });
                    events.push((m.seq, frame));
                }
            }
        }
        if subscriber.presence {
            for m in state
                .presence_history
                .range(after(&state.presence_history)..)
            {
                // An id for the frame that is not the connection's own: a
                // synthesized leave (which has none) stays ordered by its
                // timestamp, as when it was broadcast.
                let frame = json!({
                    "action": action::PRESENCE,
                    "channel": channel,
                    "id": format!("replay-{}", m.seq),
                    "channelSerial": self.serials.format(m.seq),
                    "presence": [m.event()],
                });
                events.push((m.seq, frame));
            }
        }
        events.sort_by_key(|(seq, _)| *seq);
        events.into_iter().map(|(_, frame)| frame).collect()
    }

    /// Removes the connection from a channel: it stops receiving, and its
    /// members leave (as Ably does on detach).
    pub(crate) fn unsubscribe(&self, channel: &str, connection_id: &str) {
        self.update(channel, |hub, state| {
            state.subscribers.remove(connection_id);
            hub.leave_all(channel, state, connection_id);
        });
    }

    /// Stops delivering to the connection, keeping its presence.
    pub(crate) fn drop_subscriber(&self, channel: &str, connection_id: &str) {
        self.update(channel, |_, state| {
            state.subscribers.remove(connection_id);
        });
    }

    /// Makes the connection's members leave, keeping its subscription.
    pub(crate) fn leave(&self, channel: &str, connection_id: &str) {
        self.update(channel, |hub, state| {
            hub.leave_all(channel, state, connection_id)
        });
    }

    fn update(&self, channel: &str, change: impl FnOnce(&Hub, &mut Channel)) {
        let mut channels = self.lock();
        if let Some(state) = channels.get_mut(channel) {
            change(self, state);
            if state.is_forgettable() {
                channels.remove(channel);
            }
        }
    }

    fn leave_all(&self, channel: &str, state: &mut Channel, connection_id: &str) {
        let leaving: Vec<Member> = state
            .members
            .values()
            .filter(|m| m.connection_id == connection_id)
            .cloned()
            .collect();
        if leaving.is_empty() {
            return;
        }
        let now = self.now_ms();
        let mut items = Vec::with_capacity(leaving.len());
        for member in &leaving {
            state
                .members
                .remove(&(member.client_id.clone(), member.connection_id.clone()));
            let mut v = member.to_value(presence_action::LEAVE);
            v["timestamp"] = json!(now);
            // No id of the connection's own: ably-js then orders this
            // synthesized leave by timestamp, after the member's last event.
            if let Some(obj) = v.as_object_mut() {
                obj.remove("id");
            }
            items.push(v);
        }
        state.record_presence(&items, &self.serial, now);
        self.prune(state, now);
        let frame = Arc::new(SharedFrame::new(json!({
            "action": action::PRESENCE,
            "channel": channel,
            "channelSerial": self.serials.format(state.last),
            "id": format!("leave-{connection_id}-{now}"),
            "connectionId": connection_id,
            "timestamp": now,
            "presence": items,
        })));
        state.broadcast(&frame, None);
    }

    /// Publishes messages (already given ids, clientIds and timestamps) to the
    /// channel's subscribers and its history. With `limits`, a channel the
    /// broker does not hold is created only within them.
    ///
    /// `supplied[i]` says whether message `i` carries the client's own id
    /// (RSL1k2, RSL1k3, TM2a). Such an id already published on this channel
    /// within the idempotency window makes that message a duplicate: it is
    /// neither delivered nor stored again, and the publish still succeeds,
    /// as Ably acknowledges a duplicate without re-delivering it
    /// (<https://ably.com/docs/pub-sub/advanced#idempotency>). Returns how
    /// many messages were new.
    pub(crate) fn publish(
        &self,
        channel: &str,
        mut frame: Value,
        supplied: &[bool],
        from: Option<&str>,
        limits: Option<ChannelLimits>,
    ) -> Result<usize, ChannelLimitReached> {
        let now = self.now_ms();
        let mut channels = self.lock();
        if limits.is_some_and(|limits| Hub::refuses(&channels, channel, Claim::Visit, limits)) {
            return Err(ChannelLimitReached);
        }
        let state = self.open(&mut channels, channel);
        let messages: Vec<Value> = frame
            .get_mut("messages")
            .and_then(Value::as_array_mut)
            .map(std::mem::take)
            .unwrap_or_default();
        let fresh: Vec<Value> = messages
            .into_iter()
            .enumerate()
            .filter(
                |(i, message)| match message.get("id").and_then(Value::as_str) {
                    Some(id) if supplied.get(*i).copied().unwrap_or(false) => {
                        state.recent_ids.first_time(id, now)
                    }
                    _ => true,
                },
            )
            .map(|(_, message)| message)
            .collect();
        let published = fresh.len();
        if published > 0 {
            self.seq.fetch_add(published as u64, Ordering::Relaxed);
            // Each message has a serial; the frame carries its last (RTL15b).
            for message in &fresh {
                state.last = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
                state
                    .history
                    .push_back(Stored::new(state.last, now, message));
            }
            frame["messages"] = Value::Array(fresh);
            frame["channelSerial"] = json!(self.serials.format(state.last));
            let frame = Arc::new(SharedFrame::new(frame));
            // Derived channels first: a connection attached to both reads
            // the filtered frame before the plain one, so a client that
            // waits for the plain channel's last message (as ably-js's
            // test "subscribes to filtered channel" does) has both.
            let sent =
                state.broadcast_filtered(&frame, from) + state.broadcast_messages(&frame, from);
            self.deliveries.fetch_add(sent, Ordering::Relaxed);
        }
        self.prune(state, now);
        if state.is_forgettable() {
            channels.remove(channel);
        }
        Ok(published)
    }

    fn prune(&self, state: &mut Channel, now: u64) {
        state.recent_ids.prune(now);
        let oldest = now.saturating_sub(self.limits.max_age.as_millis() as u64);
        for history in [&mut state.history, &mut state.presence_history] {
            // What is dropped can no longer be replayed: a resume must now
            // continue after it.
            while history.len() > self.limits.max_messages
                || history.front().is_some_and(|m| m.timestamp < oldest)
            {
                if let Some(dropped) = history.pop_front() {
                    state.since = state.since.max(dropped.seq);
                }
            }
        }
    }

    /// Applies presence changes from one connection and broadcasts them,
    /// once `claim` fits the limits. `id_base` is `connId:msgSerial`; each
    /// item gets `:index`.
    pub(crate) fn presence(
        &self,
        channel: &str,
        connection_id: &str,
        id_base: &str,
        changes: Vec<PresenceChange>,
        claim: Claim,
        limits: ChannelLimits,
    ) -> Result<(), ChannelLimitReached> {
        let now = self.now_ms();
        let mut channels = self.lock();
        if Hub::refuses(&channels, channel, claim, limits) {
            return Err(ChannelLimitReached);
        }
        let state = self.open(&mut channels, channel);
        let mut items = Vec::with_capacity(changes.len());
        for (i, change) in changes.into_iter().enumerate() {
            let key = (change.client_id.clone(), connection_id.to_string());
            // An automatic re-entry (RTP17g) carries the id of the member's
            // latest event: when that is still the member's state, the
            // re-entry changes nothing, and the others hear nothing.
            let current = state.members.get(&key);
            if change.action != presence_action::LEAVE
                && change.id.is_some()
                && change.id.as_deref() == current.map(|m| m.id.as_str())
            {
                continue;
            }
            let present = current.is_some();
            let member = Member {
                client_id: change.client_id,
                connection_id: connection_id.to_string(),
                data: change.data,
                encoding: change.encoding,
                extras: change.extras,
                id: format!("{id_base}:{i}"),
                timestamp: now,
            };
            let action = match change.action {
                presence_action::LEAVE => {
                    if state.members.remove(&key).is_none() {
                        continue;
                    }
                    presence_action::LEAVE
                }
                presence_action::ENTER | presence_action::PRESENT if present => {
                    state.members.insert(key, member.clone());
                    presence_action::UPDATE
                }
                presence_action::UPDATE if !present => {
                    state.members.insert(key, member.clone());
                    presence_action::ENTER
                }
                other => {
                    state.members.insert(key, member.clone());
                    if other == presence_action::PRESENT {
                        presence_action::ENTER
                    } else {
                        other
                    }
                }
            };
            items.push(member.to_value(action));
        }
        if items.is_empty() {
            return Ok(());
        }
        state.record_presence(&items, &self.serial, now);
        self.prune(state, now);
        let frame = Arc::new(SharedFrame::new(json!({
            "action": action::PRESENCE,
            "channel": channel,
            "channelSerial": self.serials.format(state.last),
            "id": id_base,
            "connectionId": connection_id,
            "timestamp": now,
            "presence": items,
        })));
        let sent = state.broadcast(&frame, None);
        self.deliveries.fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }

    /// The current members as PRESENT entries, for SYNC and REST.
    pub(crate) fn members(&self, channel: &str) -> Vec<Value> {
        self.lock()
            .get(channel)
            .map(|state| {
                state
                    .members
                    .values()
                    .map(|m| m.to_value(presence_action::PRESENT))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[cfg(test)]
    fn has_members(&self, channel: &str) -> bool {
        self.lock()
            .get(channel)
            .is_some_and(|s| !s.members.is_empty())
    }

    /// Who is on the channel now; `None` when the broker holds no state for it.
    pub(crate) fn occupancy(&self, channel: &str) -> Option<Occupancy> {
        let channels = self.lock();
        let state = channels.get(channel)?;
        let present: std::collections::HashSet<&str> = state
            .members
            .values()
            .map(|m| m.connection_id.as_str())
            .collect();
        let connections = state
            .subscribers
            .keys()
            .map(String::as_str)
            .chain(present.iter().copied())
            .collect::<std::collections::HashSet<&str>>()
            .len();
        Some(Occupancy {
            connections,
            subscribers: state.subscribers.values().filter(|s| s.messages).count(),
            presence_subscribers: state.subscribers.values().filter(|s| s.presence).count(),
            presence_members: state.members.len(),
            presence_connections: present.len(),
        })
    }

    pub(crate) fn history(
        &self,
        channel: &str,
        kind: HistoryKind,
        query: &HistoryQuery,
    ) -> HistoryPage {
        let now = self.now_ms();
        let mut channels = self.lock();
        let Some(state) = channels.get_mut(channel) else {
            return HistoryPage {
                messages: Vec::new(),
                next: None,
            };
        };
        self.prune(state, now);
        let history = match kind {
            HistoryKind::Messages => &state.history,
            HistoryKind::Presence => &state.presence_history,
        };
        let in_range = |m: &&Stored| {
            query.start.is_none_or(|s| m.timestamp >= s)
                && query.end.is_none_or(|e| m.timestamp <= e)
                && query.until.is_none_or(|u| m.seq <= u)
        };
        let mut selected: Vec<&Stored> = match query.direction {
            Direction::Backwards => history
                .iter()
                .rev()
                .filter(|m| query.cursor.is_none_or(|c| m.seq < c))
                .filter(in_range)
                .take(query.limit + 1)
                .collect(),
            Direction::Forwards => history
                .iter()
                .filter(|m| query.cursor.is_none_or(|c| m.seq > c))
                .filter(in_range)
                .take(query.limit + 1)
                .collect(),
        };
        let more = selected.len() > query.limit;
        selected.truncate(query.limit);
        HistoryPage {
            next: if more {
                selected.last().map(|m| m.seq)
            } else {
                None
            },
            messages: selected.into_iter().map(Stored::event).collect(),
        }
    }

    /// Drops history past its age, forgets empty channels, and gives back
    /// the room a burst left the tables.
    pub(crate) fn sweep(&self) {
        let now = self.now_ms();
        let mut channels = self.lock();
        for state in channels.values_mut() {
            self.prune(state, now);
            state.subscribers.give_back_room();
            state.filtered.give_back_room();
            state.history.give_back_room();
            state.presence_history.give_back_room();
            state.recent_ids.give_back_room();
        }
        channels.retain(|_, state| !state.is_forgettable());
        channels.give_back_room();
    }

    /// The capacities of the channel map and of the channels' tables.
    #[cfg(test)]
    pub(crate) fn room(&self) -> (usize, usize) {
        let channels = self.lock();
        let within = channels
            .values()
            .map(|s| {
                s.subscribers.capacity()
                    + s.filtered.capacity()
                    + s.history.capacity()
                    + s.presence_history.capacity()
                    + s.recent_ids.room()
            })
            .sum();
        (channels.capacity(), within)
    }
}

/// The presence SYNC frame for a channel: one frame, empty cursor (done).
pub(crate) fn sync_frame(channel: &str, members: Vec<Value>, sync_id: &str) -> Value {
    let mut frame = Map::new();
    frame.insert("action".into(), json!(action::SYNC));
    frame.insert("channel".into(), json!(channel));
    frame.insert("channelSerial".into(), json!(format!("{sync_id}:")));
    frame.insert("presence".into(), Value::Array(members));
    Value::Object(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn hub(max_messages: usize) -> (Hub, Arc<ManualClock>) {
        let clock = ManualClock::at_ms(1_000_000);
        let limits = HistoryLimits {
            max_messages,
            max_age: Duration::from_secs(120),
        };
        (Hub::new(limits, clock.clone()), clock)
    }

    fn outbox(capacity: usize) -> (Outbox, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Outbox {
                tx,
                lagged: Arc::new(Notify::new()),
                lagging: Arc::new(AtomicBool::new(false)),
            },
            rx,
        )
    }

    const LIMITS: ChannelLimits = ChannelLimits {
        max_channels: 100,
        per_connection: 10,
    };

    fn message_frame(n: u64) -> Value {
        json!({"action": 15, "channel": "c", "messages": [{"name": "m", "data": n}]})
    }

    #[test]
    fn history_is_bounded_by_count_and_age_and_empty_channels_are_forgotten() {
        let (hub, clock) = hub(3);
        for n in 0..5 {
            hub.publish("c", message_frame(n), &[], None, None).unwrap();
        }
        let query = HistoryQuery {
            limit: 10,
            direction: Direction::Backwards,
            start: None,
            end: None,
            cursor: None,
            until: None,
        };
        let page = hub.history("c", HistoryKind::Messages, &query);
        let data: Vec<u64> = page
            .messages
            .iter()
            .map(|m| m["data"].as_u64().unwrap())
            .collect();
        assert_eq!(data, vec![4, 3, 2]);
        clock.advance_secs(121);
        hub.sweep();
        assert_eq!(hub.channel_count(), 0);
    }

    #[test]
    fn a_derived_channel_is_sent_what_its_filter_passes_under_its_own_name() {
        let (hub, _clock) = hub(10);
        let (plain, mut plain_rx) = outbox(10);
        let (derived, mut derived_rx) = outbox(10);
        hub.subscribe(
            "c",
            "conn-1",
            Subscriber {
                outbox: plain,
                echo: true,
                messages: true,
                presence: true,
                delta: None,
            },
        );
        let filtered = |outbox: Outbox, echo: bool| Filtered {
            outbox,
            echo,
            name: Arc::from("[filter=x]c"),
            filter: Arc::new(Filter::parse("headers.n == `1`").unwrap()),
        };
        hub.attach_filtered(
            "c",
            "conn-1",
            Claim::New { holding: 1 },
            LIMITS,
            filtered(derived.clone(), true),
        )
        .unwrap();
        let frame = json!({
            "action": 15, "channel": "c", "id": "p:0", "connectionId": "p", "timestamp": 5,
            "messages": [
                {"id": "p:0:0", "name": "a", "extras": {"headers": {"n": 1}}},
                {"id": "p:0:1", "name": "b"},
                {"id": "p:0:2", "name": "c", "extras": {"headers": {"n": 1}}},
            ],
        });
        hub.publish("c", frame, &[], Some("p"), None).unwrap();
        let got = derived_rx.try_recv().unwrap();
        assert_eq!(got["channel"], "[filter=x]c");
        assert_eq!(
            (&got["id"], &got["connectionId"], &got["timestamp"]),
            (&json!("p:0"), &json!("p"), &json!(5))
        );
        let names: Vec<&str> = got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "c"]);
        assert!(got.get("channelSerial").is_none(), "{}", **got);
        assert_eq!(
            plain_rx.try_recv().unwrap()["messages"]
                .as_array()
                .unwrap()
                .len(),
            3
        );

        // Nothing that passes: no frame at all.
        hub.publish(
            "c",
            json!({"action": 15, "messages": [{"name": "b"}]}),
            &[],
            None,
            None,
        )
        .unwrap();
        assert!(derived_rx.try_recv().is_err());
        assert_eq!(plain_rx.try_recv().unwrap()["messages"][0]["name"], "b");

        // echo: false skips the connection's own messages.
        hub.attach_filtered("c", "conn-1", Claim::Held, LIMITS, filtered(derived, false))
            .unwrap();
        let own =
            json!({"action": 15, "messages": [{"name": "a", "extras": {"headers": {"n": 1}}}]});
        hub.publish("c", own.clone(), &[], Some("conn-1"), None)
            .unwrap();
        assert!(derived_rx.try_recv().is_err());
        hub.publish("c", own, &[], Some("other"), None).unwrap();
        assert!(derived_rx.try_recv().is_ok());

        // Detaching the plain channel leaves the derived one, and the other way round.
        hub.unsubscribe("c", "conn-1");
        hub.publish(
            "c",
            json!({"action": 15, "messages": [{"name": "a", "extras": {"headers": {"n": 1}}}]}),
            &[],
            None,
            None,
        )
        .unwrap();
        assert!(derived_rx.try_recv().is_ok());
        hub.detach_filtered("c", "conn-1", "[filter=x]c");
        hub.publish(
            "c",
            json!({"action": 15, "messages": [{"name": "a", "extras": {"headers": {"n": 1}}}]}),
            &[],
            None,
            None,
        )
        .unwrap();
        assert!(derived_rx.try_recv().is_err());
    }

    #[test]
    fn a_derived_channel_holds_the_channel_limits_and_the_channel_state() {
        let (hub, _clock) = hub(0);
        let (derived, _rx) = outbox(10);
        let filtered = || Filtered {
            outbox: derived.clone(),
            echo: true,
            name: Arc::from("[filter=x]c"),
            filter: Arc::new(Filter::parse("name").unwrap()),
        };
        let full = ChannelLimits {
            max_channels: 100,
            per_connection: 1,
        };
        assert_eq!(
            hub.attach_filtered("c", "conn-1", Claim::New { holding: 1 }, full, filtered()),
            Err(ChannelLimitReached)
        );
        assert_eq!(hub.channel_count(), 0);
        hub.attach_filtered("c", "conn-1", Claim::New { holding: 0 }, full, filtered())
            .unwrap();
        hub.sweep();
        assert_eq!(
            hub.channel_count(),
            1,
            "the derived attachment keeps the channel"
        );
        hub.detach_filtered("c", "conn-1", "[filter=x]c");
        assert_eq!(hub.channel_count(), 0);
    }

    #[test]
    fn history_pages_with_a_cursor() {
        let (hub, _clock) = hub(100);
        for n in 0..5 {
            hub.publish("c", message_frame(n), &[], None, None).unwrap();
        }
        let mut query = HistoryQuery {
            limit: 2,
            direction: Direction::Forwards,
            start: None,
            end: None,
            cursor: None,
            until: None,
        };
        let mut seen = Vec::new();
        loop {
            let page = hub.history("c", HistoryKind::Messages, &query);
            seen.extend(page.messages.iter().map(|m| m["data"].as_u64().unwrap()));
            match page.next {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }

    fn with_ids(channel: &str, ids: &[&str]) -> Value {
        let messages: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "name": "m", "data": id}))
            .collect();
        json!({"action": 15, "channel": channel, "messages": messages})
    }

    fn history_ids(hub: &Hub, channel: &str) -> Vec<String> {
        let query = HistoryQuery {
            limit: 100,
            direction: Direction::Forwards,
            start: None,
            end: None,
            cursor: None,
            until: None,
        };
        hub.history(channel, HistoryKind::Messages, &query)
            .messages
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn delivered_ids(rx: &mut mpsc::Receiver<Frame>) -> Vec<String> {
        let mut ids = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            for m in frame["messages"].as_array().unwrap() {
                ids.push(m["id"].as_str().unwrap().to_string());
            }
        }
        ids
    }

    #[test]
    fn a_client_supplied_id_is_delivered_and_stored_once_per_channel_within_the_window() {
        let (hub, clock) = hub(100);
        let (inbox, mut rx) = outbox(10);
        hub.subscribe(
            "c",
            "s",
            Subscriber {
                outbox: inbox,
                echo: true,
                messages: true,
                presence: true,
                delta: None,
            },
        );
        assert_eq!(
            hub.publish("c", with_ids("c", &["x"]), &[true], None, None),
            Ok(1)
        );
        // The retry succeeds and publishes nothing.
        assert_eq!(
            hub.publish("c", with_ids("c", &["x"]), &[true], None, None),
            Ok(0)
        );
        assert_eq!(delivered_ids(&mut rx), vec!["x"]);
        assert_eq!(history_ids(&hub, "c"), vec!["x"]);
        assert_eq!(hub.messages_published(), 1);
        // Another channel has its own ids.
        assert_eq!(
            hub.publish("d", with_ids("d", &["x"]), &[true], None, None),
            Ok(1)
        );
        // A publish overlapping an earlier one delivers only the new ids.
        assert_eq!(
            hub.publish("c", with_ids("c", &["x", "y"]), &[true, true], None, None),
            Ok(1)
        );
        assert_eq!(delivered_ids(&mut rx), vec!["y"]);
        // Ids the broker gave (not the client's) are never compared.
        assert_eq!(
            hub.publish("c", with_ids("c", &["y"]), &[false], None, None),
            Ok(1)
        );
        rx.try_recv().unwrap();
        // Two minutes after the first publish the id is new again.
        clock.advance(Duration::from_millis(119_999));
        assert_eq!(
            hub.publish("c", with_ids("c", &["x"]), &[true], None, None),
            Ok(0)
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            hub.publish("c", with_ids("c", &["x"]), &[true], None, None),
            Ok(1)
        );
        assert_eq!(delivered_ids(&mut rx), vec!["x"]);
        assert_eq!(history_ids(&hub, "c"), vec!["x", "y", "y", "x"]);
    }

    #[test]
    fn remembered_ids_keep_a_channel_only_until_they_expire() {
        // No history kept: only the remembered id holds the channel.
        let (hub, clock) = hub(0);
        hub.publish("c", with_ids("c", &["x"]), &[true], None, None)
            .unwrap();
        hub.sweep();
        assert_eq!(hub.channel_count(), 1, "the id is remembered");
        assert_eq!(
            hub.publish("c", with_ids("c", &["x"]), &[true], None, None),
            Ok(0)
        );
        clock.advance_secs(120);
        hub.sweep();
        assert_eq!(
            hub.channel_count(),
            0,
            "expired ids are pruned by the sweep"
        );
        assert_eq!(
            hub.publish("c", with_ids("c", &["x"]), &[true], None, None),
            Ok(1)
        );
    }

    #[test]
    fn a_full_outbox_marks_the_subscriber_as_lagging_instead_of_growing() {
        let (hub, _clock) = hub(10);
        let (slow, _rx) = outbox(2);
        hub.subscribe(
            "c",
            "conn-1",
            Subscriber {
                outbox: slow.clone(),
                echo: true,
                messages: true,
                presence: true,
                delta: None,
            },
        );
        for n in 0..5 {
            hub.publish("c", message_frame(n), &[], None, None).unwrap();
        }
        assert!(slow.lagging.load(Ordering::SeqCst));
    }

    #[test]
    fn echo_false_skips_the_publisher() {
        let (hub, _clock) = hub(10);
        let (me, mut my_rx) = outbox(10);
        let (other, mut other_rx) = outbox(10);
        hub.subscribe(
            "c",
            "me",
            Subscriber {
                outbox: me,
                echo: false,
                messages: true,
                presence: true,
                delta: None,
            },
        );
        hub.subscribe(
            "c",
            "other",
            Subscriber {
                outbox: other,
                echo: true,
                messages: true,
                presence: true,
                delta: None,
            },
        );
        hub.publish("c", message_frame(1), &[], Some("me"), None)
            .unwrap();
        assert!(my_rx.try_recv().is_err());
        assert_eq!(other_rx.try_recv().unwrap()["messages"][0]["data"], 1);
    }

    #[test]
    fn presence_enter_update_leave_and_leave_on_unsubscribe() {
        let (hub, _clock) = hub(10);
        let (watcher, mut rx) = outbox(10);
        hub.subscribe(
            "c",
            "w",
            Subscriber {
                outbox: watcher,
                echo: true,
                messages: true,
                presence: true,
                delta: None,
            },
        );
        let change = |action: u64, data: &str| PresenceChange {
            action,
            client_id: "alice".into(),
            data: Some(json!(data)),
            encoding: None,
            extras: None,
            id: None,
        };
        hub.presence(
            "c",
            "a1",
            "a1:0",
            vec![change(presence_action::ENTER, "hi")],
            Claim::Held,
            LIMITS,
        )
        .unwrap();
        hub.presence(
            "c",
            "a1",
            "a1:1",
            vec![change(presence_action::ENTER, "again")],
            Claim::Held,
            LIMITS,
        )
        .unwrap();
        let enter = rx.try_recv().unwrap();
        assert_eq!(enter["presence"][0]["action"], presence_action::ENTER);
        assert_eq!(enter["presence"][0]["id"], "a1:0:0");
        assert_eq!(
            rx.try_recv().unwrap()["presence"][0]["action"],
            presence_action::UPDATE
        );
        assert_eq!(hub.members("c")[0]["data"], "again");
        hub.unsubscribe("c", "a1");
        let leave = rx.try_recv().unwrap();
        assert_eq!(leave["presence"][0]["action"], presence_action::LEAVE);
        assert_eq!(leave["presence"][0]["clientId"], "alice");
        assert!(!hub.has_members("c"));
    }

    fn presence_history(hub: &Hub, direction: Direction) -> Vec<(u64, Value)> {
        let query = HistoryQuery {
            limit: 100,
            direction,
            start: None,
            end: None,
            cursor: None,
            until: None,
        };
        hub.history("c", HistoryKind::Presence, &query)
            .messages
            .into_iter()
            .map(|p| (p["action"].as_u64().unwrap(), p["data"].clone()))
            .collect()
    }

    #[test]
    fn extras_stay_with_the_member_and_presence_history_records_every_event() {
        let (hub, _clock) = hub(10);
        let change = |action: u64, data: &str, extras: Option<Value>| PresenceChange {
            action,
            client_id: "alice".into(),
            data: Some(json!(data)),
            encoding: None,
            extras,
            id: None,
        };
        let lock = json!({"locks": [{"id": "seat-1"}]});
        for (serial, c) in [
            change(presence_action::ENTER, "a", Some(lock.clone())),
            change(presence_action::UPDATE, "b", None),
        ]
        .into_iter()
        .enumerate()
        {
            hub.presence(
                "c",
                "a1",
                &format!("a1:{serial}"),
                vec![c],
                Claim::Held,
                LIMITS,
            )
            .unwrap();
        }
        // An update without extras replaces them, as it replaces data.
        assert_eq!(hub.members("c")[0].get("extras"), None);
        hub.presence(
            "c",
            "a1",
            "a1:2",
            vec![change(presence_action::UPDATE, "c", Some(lock.clone()))],
            Claim::Held,
            LIMITS,
        )
        .unwrap();
        assert_eq!(hub.members("c")[0]["extras"], lock);
        // A leave on close is recorded too, and is the newest.
        hub.leave("c", "a1");
        assert_eq!(
            presence_history(&hub, Direction::Forwards),
            vec![
                (presence_action::ENTER, json!("a")),
                (presence_action::UPDATE, json!("b")),
                (presence_action::UPDATE, json!("c")),
                (presence_action::LEAVE, json!("c")),
            ]
        );
        // Message history and its counter are untouched.
        assert_eq!(hub.messages_published(), 0);
        let query = HistoryQuery {
            limit: 10,
            direction: Direction::Backwards,
            start: None,
            end: None,
            cursor: None,
            until: None,
        };
        assert!(hub
            .history("c", HistoryKind::Messages, &query)
            .messages
            .is_empty());
    }

    #[test]
    fn presence_history_is_bounded_like_message_history_and_then_forgotten() {
        let (hub, clock) = hub(3);
        for n in 0..5u64 {
            let change = PresenceChange {
                action: presence_action::UPDATE,
                client_id: "alice".into(),
                data: Some(json!(n.to_string())),
                encoding: None,
                extras: None,
                id: None,
            };
            hub.presence(
                "c",
                "a1",
                &format!("a1:{n}"),
                vec![change],
                Claim::Held,
                LIMITS,
            )
            .unwrap();
        }
        let kept: Vec<Value> = presence_history(&hub, Direction::Backwards)
            .into_iter()
            .map(|(_, data)| data)
            .collect();
        assert_eq!(kept, vec![json!("4"), json!("3"), json!("2")]);
        hub.leave("c", "a1");
        clock.advance_secs(121);
        hub.sweep();
        assert_eq!(
            hub.channel_count(),
            0,
            "old presence history lets the channel go"
        );
    }

    #[test]
    fn occupancy_counts_subscribers_members_and_their_connections() {
        let (hub, _clock) = hub(10);
        assert_eq!(hub.occupancy("c"), None);
        for id in ["s1", "s2"] {
            hub.subscribe(
                "c",
                id,
                Subscriber {
                    outbox: outbox(10).0,
                    echo: true,
                    messages: true,
                    presence: true,
                    delta: None,
                },
            );
        }
        let enter = |client: &str| PresenceChange {
            action: presence_action::ENTER,
            client_id: client.into(),
            data: None,
            encoding: None,
            extras: None,
            id: None,
        };
        // s1 is also present with two members; p1 is present only.
        hub.presence(
            "c",
            "s1",
            "s1:0",
            vec![enter("a"), enter("b")],
            Claim::Held,
            LIMITS,
        )
        .unwrap();
        hub.presence("c", "p1", "p1:0", vec![enter("a")], Claim::Held, LIMITS)
            .unwrap();
        assert_eq!(
            hub.occupancy("c"),
            Some(Occupancy {
                connections: 3,
                subscribers: 2,
                presence_subscribers: 2,
                presence_members: 3,
                presence_connections: 2,
            })
        );
    }

    #[test]
    fn attach_holds_the_broker_and_connection_limits() {
        let (hub, _clock) = hub(10);
        let limits = ChannelLimits {
            max_channels: 3,
            per_connection: 2,
        };
        let subscriber = || Subscriber {
            outbox: outbox(10).0,
            echo: true,
            messages: true,
            presence: true,
            delta: None,
        };
        let attach = |channel: &str, connection: &str, holding: usize| {
            hub.attach(
                channel,
                connection,
                Claim::New { holding },
                limits,
                Some(subscriber()),
                Catchup::Nothing,
            )
        };
        // One connection: up to its own limit, then refused.
        assert!(attach("a", "c1", 0).is_ok());
        assert!(attach("b", "c1", 1).is_ok());
        assert_eq!(attach("c", "c1", 2), Err(ChannelLimitReached));
        // Another: up to the broker's limit, then refused; a channel the
        // broker holds already still fits.
        assert!(attach("c", "c2", 0).is_ok());
        assert_eq!(attach("d", "c2", 1), Err(ChannelLimitReached));
        assert!(attach("a", "c2", 1).is_ok());
        assert_eq!(hub.channel_count(), 3);
        // Re-attaching a channel the connection holds is not limited.
        assert!(hub
            .attach(
                "a",
                "c1",
                Claim::Held,
                limits,
                Some(subscriber()),
                Catchup::Nothing
            )
            .is_ok());
        // Publishing cannot create a channel past the broker's limit.
        assert_eq!(
            hub.publish("e", message_frame(0), &[], None, Some(limits)),
            Err(ChannelLimitReached)
        );
        assert_eq!(hub.channel_count(), 3);
    }

    #[test]
    fn concurrent_attaches_never_overshoot_the_broker_limit() {
        let (hub, _clock) = hub(10);
        let hub = Arc::new(hub);
        let limits = ChannelLimits {
            max_channels: 50,
            per_connection: 1_000,
        };
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|i| {
                            hub.attach(
                                &format!("t{t}-{i}"),
                                &format!("conn-{t}"),
                                Claim::New { holding: *i },
                                limits,
                                Some(Subscriber {
                                    outbox: outbox(1).0,
                                    echo: true,
                                    messages: true,
                                    presence: true,
                                    delta: None,
                                }),
                                Catchup::Nothing,
                            )
                            .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        let attached: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(attached, 50);
        assert_eq!(hub.channel_count(), 50);
    }

    #[test]
    fn a_backlog_is_read_with_the_subscription_and_modes_filter_delivery() {
        let (hub, clock) = hub(100);
        for n in 0..5 {
            hub.publish("c", message_frame(n), &[], None, None).unwrap();
            clock.advance_secs(10);
        }
        let data = |frames: &[Value]| -> Vec<u64> {
            frames
                .iter()
                .map(|f| f["messages"][0]["data"].as_u64().unwrap())
                .collect()
        };
        let subscribe = |id: &str, messages: bool, presence: bool, backlog: Option<Backlog>| {
            let (tx, rx) = outbox(10);
            let attached = hub
                .attach(
                    "c",
                    id,
                    Claim::New { holding: 0 },
                    LIMITS,
                    Some(Subscriber {
                        outbox: tx,
                        echo: true,
                        messages,
                        presence,
                        delta: None,
                    }),
                    backlog.map_or(Catchup::Nothing, Catchup::Rewind),
                )
                .unwrap();
            (attached, rx)
        };
        // The newest three, oldest first.
        let (attached, _rx1) = subscribe(
            "a",
            true,
            true,
            Some(Backlog {
                limit: 3,
                since: None,
            }),
        );
        assert_eq!(data(&attached.backlog), vec![2, 3, 4]);
        // Those of the last 25 s (now is 50 s after the first).
        let since = Some(hub.now_ms() - 25_000);
        let (attached, _rx2) = subscribe("b", true, true, Some(Backlog { limit: 100, since }));
        assert_eq!(data(&attached.backlog), vec![3, 4]);
        // No backlog without messages delivered; no members without presence.
        let (attached, mut presence_only) = subscribe(
            "p",
            false,
            true,
            Some(Backlog {
                limit: 3,
                since: None,
            }),
        );
        assert!(attached.backlog.is_empty());
        let (_, mut messages_only) = subscribe("m", true, false, None);
        hub.publish("c", message_frame(9), &[], None, None).unwrap();
        hub.presence(
            "c",
            "x",
            "x:0",
            vec![PresenceChange {
                action: presence_action::ENTER,
                client_id: "u".into(),
                data: None,
                encoding: None,
                extras: None,
                id: None,
            }],
            Claim::New { holding: 0 },
            LIMITS,
        )
        .unwrap();
        let first = |rx: &mut mpsc::Receiver<Frame>| rx.try_recv().unwrap()["action"].as_u64();
        assert_eq!(first(&mut messages_only), Some(action::MESSAGE));
        assert!(
            messages_only.try_recv().is_err(),
            "no presence without PRESENCE_SUBSCRIBE"
        );
        assert_eq!(first(&mut presence_only), Some(action::PRESENCE));
        assert!(
            presence_only.try_recv().is_err(),
            "no message without SUBSCRIBE"
        );
        let (attached, _rx3) = subscribe("late", false, true, None);
        assert_eq!(attached.members.len(), 1);
        let (attached, _rx4) = subscribe("late2", true, false, None);
        assert!(attached.members.is_empty());
    }

    /// Attaches `id` to "c" with `catchup`, as a subscriber of messages and
    /// presence (`echo` as given).
    fn attach_with(hub: &Hub, id: &str, echo: bool, catchup: Catchup) -> Attached {
        hub.attach(
            "c",
            id,
            Claim::New { holding: 0 },
            LIMITS,
            Some(Subscriber {
                outbox: outbox(100).0,
                echo,
                messages: true,
                presence: true,
                delta: None,
            }),
            catchup,
        )
        .unwrap()
    }

    fn enter(hub: &Hub, connection: &str, client: &str) {
        let change = PresenceChange {
            action: presence_action::ENTER,
            client_id: client.into(),
            data: None,
            encoding: None,
            extras: None,
            id: None,
        };
        hub.presence(
            "c",
            connection,
            &format!("{connection}:0"),
            vec![change],
            Claim::Held,
            LIMITS,
        )
        .unwrap();
    }

    #[test]
    fn a_resume_gets_every_event_after_its_serial_in_order_and_then_none_twice() {
        let (hub, _clock) = hub(100);
        let (watcher, mut rx) = outbox(100);
        hub.subscribe(
            "c",
            "w",
            Subscriber {
                outbox: watcher,
                echo: true,
                messages: true,
                presence: true,
                delta: None,
            },
        );
        let first = attach_with(&hub, "a", true, Catchup::Nothing);
        hub.publish("c", message_frame(1), &[], None, None).unwrap();
        enter(&hub, "x", "xavier");
        hub.publish("c", message_frame(2), &[], None, None).unwrap();
        // Every live frame carries a serial, rising, and the last is the channel's.
        let live: Vec<String> = (0..3)
            .map(|_| {
                rx.try_recv().unwrap()["channelSerial"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(
            first.serial < live[0] && live[0] < live[1] && live[1] < live[2],
            "{live:?}"
        );
        // From the first ATTACHED's serial: all three, in order.
        let resumed = attach_with(&hub, "a", true, Catchup::Resume(first.serial.clone()));
        assert!(resumed.resumed);
        assert_eq!(
            resumed.serial, live[2],
            "ATTACHED carries the channel's newest serial"
        );
        let kinds: Vec<(u64, String)> = resumed
            .backlog
            .iter()
            .map(|f| {
                (
                    f["action"].as_u64().unwrap(),
                    f["channelSerial"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (action::MESSAGE, live[0].clone()),
                (action::PRESENCE, live[1].clone()),
                (action::MESSAGE, live[2].clone())
            ]
        );
        assert_eq!(resumed.backlog[1]["presence"][0]["clientId"], "xavier");
        // From the middle: only what came after it.
        let later = attach_with(&hub, "b", true, Catchup::Resume(live[1].clone()));
        assert_eq!(later.backlog.len(), 1);
        assert_eq!(later.backlog[0]["messages"][0]["data"], 2);
        // From the newest: resumed with nothing to send.
        let current = attach_with(&hub, "c2", true, Catchup::Resume(live[2].clone()));
        assert!(current.resumed && current.backlog.is_empty());
    }

    #[test]
    fn serials_the_broker_no_longer_holds_or_never_issued_are_not_resumed() {
        let (hub, _clock) = hub(2);
        let first = attach_with(&hub, "a", true, Catchup::Nothing);
        for n in 0..3 {
            hub.publish("c", message_frame(n), &[], None, None).unwrap();
        }
        // Three published, two kept: the first message is gone, so a resume
        // from before it cannot be honoured.
        let stale = attach_with(&hub, "a", true, Catchup::Resume(first.serial));
        assert!(!stale.resumed);
        assert!(stale.backlog.is_empty());
        for unknown in ["attach:3", "", "zzzzzzzz:0000000000000001"] {
            let attached = attach_with(&hub, "b", true, Catchup::Resume(unknown.into()));
            assert!(!attached.resumed, "{unknown}");
        }
        // A serial newer than the channel's (another channel's) is not this channel's.
        hub.publish("other", message_frame(9), &[], None, None)
            .unwrap();
        let newer = hub.serials.format(hub.serial.load(Ordering::Relaxed));
        assert!(!attach_with(&hub, "b", true, Catchup::Resume(newer)).resumed);
    }

    #[test]
    fn a_replay_skips_what_live_delivery_would_have_skipped() {
        let (hub, _clock) = hub(100);
        let first = attach_with(&hub, "me", false, Catchup::Nothing);
        let mut own = message_frame(1);
        own["messages"][0]["connectionId"] = json!("me");
        hub.publish("c", own, &[], Some("me"), None).unwrap();
        hub.publish("c", message_frame(2), &[], None, None).unwrap();
        // echo=false: not its own message.
        let resumed = attach_with(&hub, "me", false, Catchup::Resume(first.serial.clone()));
        let data: Vec<Value> = resumed
            .backlog
            .iter()
            .map(|f| f["messages"][0]["data"].clone())
            .collect();
        assert_eq!(data, vec![json!(2)]);
        // Presence only: no messages.
        let presence_only = hub
            .attach(
                "c",
                "p",
                Claim::New { holding: 0 },
                LIMITS,
                Some(Subscriber {
                    outbox: outbox(10).0,
                    echo: true,
                    messages: false,
                    presence: true,
                    delta: None,
                }),
                Catchup::Resume(first.serial),
            )
            .unwrap();
        assert!(presence_only.resumed && presence_only.backlog.is_empty());
    }

    #[test]
    fn untilattach_history_ends_at_the_attach_serial() {
        let (hub, _clock) = hub(100);
        hub.publish("c", message_frame(1), &[], None, None).unwrap();
        let attached = attach_with(&hub, "a", true, Catchup::Nothing);
        hub.publish("c", message_frame(2), &[], None, None).unwrap();
        let query = HistoryQuery {
            limit: 10,
            direction: Direction::Backwards,
            start: None,
            end: None,
            cursor: None,
            until: hub.parse_serial(&attached.serial),
        };
        let page = hub.history("c", HistoryKind::Messages, &query);
        let data: Vec<Value> = page.messages.iter().map(|m| m["data"].clone()).collect();
        assert_eq!(data, vec![json!(1)]);
    }
}
