//! Channel state shared by every connection and the REST API: subscribers,
//! presence members and bounded history. Everything is in memory; a channel
//! with no subscribers, no members and no history left is forgotten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Notify};

use super::protocol::{action, presence_action, SharedFrame};
use crate::clock::SharedClock;

/// A frame queued for one connection; shared by every recipient.
pub type Frame = Arc<SharedFrame>;

/// How a connection is reached: a bounded queue, and a signal raised when
/// the queue overflows so the connection can be dropped rather than grow.
#[derive(Clone)]
pub struct Outbox {
    pub tx: mpsc::Sender<Frame>,
    pub lagged: Arc<Notify>,
    pub lagging: Arc<AtomicBool>,
}

impl Outbox {
    fn deliver(&self, frame: &Frame) {
        if self.tx.try_send(frame.clone()).is_err() && !self.lagging.swap(true, Ordering::SeqCst) {
            self.lagged.notify_one();
        }
    }
}

struct Subscriber {
    outbox: Outbox,
    echo: bool,
}

#[derive(Clone)]
struct Member {
    client_id: String,
    connection_id: String,
    data: Option<Value>,
    encoding: Option<Value>,
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
        v
    }
}

struct Stored {
    seq: u64,
    timestamp: u64,
    message: Value,
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<String, Subscriber>,
    /// Keyed by (clientId, connectionId), as ably-js keys its presence map.
    members: BTreeMap<(String, String), Member>,
    history: VecDeque<Stored>,
}

impl Channel {
    fn is_forgettable(&self) -> bool {
        self.subscribers.is_empty() && self.members.is_empty() && self.history.is_empty()
    }

    fn broadcast(&self, frame: &Frame, from: Option<&str>) -> u64 {
        let mut sent = 0;
        for (id, subscriber) in &self.subscribers {
            if !subscriber.echo && Some(id.as_str()) == from {
                continue;
            }
            subscriber.outbox.deliver(frame);
            sent += 1;
        }
        sent
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub max_messages: usize,
    pub max_age: Duration,
}

/// A presence change asked for by a connection.
pub struct PresenceChange {
    pub action: u64,
    pub client_id: String,
    pub data: Option<Value>,
    pub encoding: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backwards,
    Forwards,
}

#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub limit: usize,
    pub direction: Direction,
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// Continue after this sequence number (pagination cursor).
    pub cursor: Option<u64>,
}

pub struct HistoryPage {
    pub messages: Vec<Value>,
    /// The cursor for the next page, when there is one.
    pub next: Option<u64>,
}

pub struct Hub {
    channels: Mutex<HashMap<String, Channel>>,
    limits: HistoryLimits,
    seq: AtomicU64,
    deliveries: AtomicU64,
    clock: SharedClock,
}

impl Hub {
    pub fn new(limits: HistoryLimits, clock: SharedClock) -> Hub {
        Hub {
            channels: Mutex::new(HashMap::new()),
            limits,
            seq: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            clock,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn channel_count(&self) -> usize {
        self.lock().len()
    }

    /// Messages published since start (their history sequence numbers).
    pub fn messages_published(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Frames queued to subscribers since start.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self, channel: &str, connection_id: &str, outbox: Outbox, echo: bool) {
        self.lock()
            .entry(channel.to_string())
            .or_default()
            .subscribers
            .insert(connection_id.to_string(), Subscriber { outbox, echo });
    }

    /// Removes the connection from a channel: it stops receiving, and its
    /// members leave (as Ably does on detach).
    pub fn unsubscribe(&self, channel: &str, connection_id: &str) {
        self.update(channel, |hub, state| {
            state.subscribers.remove(connection_id);
            hub.leave_all(channel, state, connection_id);
        });
    }

    /// Stops delivering to the connection, keeping its presence.
    pub fn drop_subscriber(&self, channel: &str, connection_id: &str) {
        self.update(channel, |_, state| {
            state.subscribers.remove(connection_id);
        });
    }

    /// Makes the connection's members leave, keeping its subscription.
    pub fn leave(&self, channel: &str, connection_id: &str) {
        self.update(channel, |hub, state| {
            hub.leave_all(channel, state, connection_id)
        });
    }

    pub fn holds(&self, channel: &str) -> bool {
        self.lock().contains_key(channel)
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
        let frame = Arc::new(SharedFrame::new(json!({
            "action": action::PRESENCE,
            "channel": channel,
            "id": format!("leave-{connection_id}-{now}"),
            "connectionId": connection_id,
            "timestamp": now,
            "presence": items,
        })));
        state.broadcast(&frame, None);
    }

    /// Publishes messages (already given ids, clientIds and timestamps) to the
    /// channel's subscribers and its history.
    pub fn publish(&self, channel: &str, frame: Value, from: Option<&str>) {
        let messages = frame
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let frame = Arc::new(SharedFrame::new(frame));
        let now = self.now_ms();
        let mut channels = self.lock();
        let state = channels.entry(channel.to_string()).or_default();
        let sent = state.broadcast(&frame, from);
        self.deliveries.fetch_add(sent, Ordering::Relaxed);
        for message in messages {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            state.history.push_back(Stored {
                seq,
                timestamp: now,
                message,
            });
        }
        self.prune(state, now);
    }

    fn prune(&self, state: &mut Channel, now: u64) {
        while state.history.len() > self.limits.max_messages {
            state.history.pop_front();
        }
        let oldest = now.saturating_sub(self.limits.max_age.as_millis() as u64);
        while state.history.front().is_some_and(|m| m.timestamp < oldest) {
            state.history.pop_front();
        }
    }

    /// Applies presence changes from one connection and broadcasts them.
    /// `id_base` is `connId:msgSerial`; each item gets `:index`.
    pub fn presence(
        &self,
        channel: &str,
        connection_id: &str,
        id_base: &str,
        changes: Vec<PresenceChange>,
    ) {
        let now = self.now_ms();
        let mut channels = self.lock();
        let state = channels.entry(channel.to_string()).or_default();
        let mut items = Vec::with_capacity(changes.len());
        for (i, change) in changes.into_iter().enumerate() {
            let key = (change.client_id.clone(), connection_id.to_string());
            let present = state.members.contains_key(&key);
            let member = Member {
                client_id: change.client_id,
                connection_id: connection_id.to_string(),
                data: change.data,
                encoding: change.encoding,
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
            return;
        }
        let frame = Arc::new(SharedFrame::new(json!({
            "action": action::PRESENCE,
            "channel": channel,
            "id": id_base,
            "connectionId": connection_id,
            "timestamp": now,
            "presence": items,
        })));
        let sent = state.broadcast(&frame, None);
        self.deliveries.fetch_add(sent, Ordering::Relaxed);
    }

    /// The current members as PRESENT entries, for SYNC and REST.
    pub fn members(&self, channel: &str) -> Vec<Value> {
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

    pub fn has_members(&self, channel: &str) -> bool {
        self.lock()
            .get(channel)
            .is_some_and(|s| !s.members.is_empty())
    }

    pub fn history(&self, channel: &str, query: &HistoryQuery) -> HistoryPage {
        let now = self.now_ms();
        let mut channels = self.lock();
        let Some(state) = channels.get_mut(channel) else {
            return HistoryPage {
                messages: Vec::new(),
                next: None,
            };
        };
        self.prune(state, now);
        let in_range = |m: &&Stored| {
            query.start.is_none_or(|s| m.timestamp >= s)
                && query.end.is_none_or(|e| m.timestamp <= e)
        };
        let mut selected: Vec<&Stored> = match query.direction {
            Direction::Backwards => state
                .history
                .iter()
                .rev()
                .filter(|m| query.cursor.is_none_or(|c| m.seq < c))
                .filter(in_range)
                .take(query.limit + 1)
                .collect(),
            Direction::Forwards => state
                .history
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
            messages: selected.into_iter().map(|m| m.message.clone()).collect(),
        }
    }

    /// Drops history past its age and forgets empty channels.
    pub fn sweep(&self) {
        let now = self.now_ms();
        let mut channels = self.lock();
        for state in channels.values_mut() {
            self.prune(state, now);
        }
        channels.retain(|_, state| !state.is_forgettable());
    }
}

/// The presence SYNC frame for a channel: one frame, empty cursor (done).
pub fn sync_frame(channel: &str, members: Vec<Value>, sync_id: &str) -> Value {
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

    fn message_frame(n: u64) -> Value {
        json!({"action": 15, "channel": "c", "messages": [{"name": "m", "data": n}]})
    }

    #[test]
    fn history_is_bounded_by_count_and_age_and_empty_channels_are_forgotten() {
        let (hub, clock) = hub(3);
        for n in 0..5 {
            hub.publish("c", message_frame(n), None);
        }
        let query = HistoryQuery {
            limit: 10,
            direction: Direction::Backwards,
            start: None,
            end: None,
            cursor: None,
        };
        let page = hub.history("c", &query);
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
    fn history_pages_with_a_cursor() {
        let (hub, _clock) = hub(100);
        for n in 0..5 {
            hub.publish("c", message_frame(n), None);
        }
        let mut query = HistoryQuery {
            limit: 2,
            direction: Direction::Forwards,
            start: None,
            end: None,
            cursor: None,
        };
        let mut seen = Vec::new();
        loop {
            let page = hub.history("c", &query);
            seen.extend(page.messages.iter().map(|m| m["data"].as_u64().unwrap()));
            match page.next {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_full_outbox_marks_the_subscriber_as_lagging_instead_of_growing() {
        let (hub, _clock) = hub(10);
        let (slow, _rx) = outbox(2);
        hub.subscribe("c", "conn-1", slow.clone(), true);
        for n in 0..5 {
            hub.publish("c", message_frame(n), None);
        }
        assert!(slow.lagging.load(Ordering::SeqCst));
    }

    #[test]
    fn echo_false_skips_the_publisher() {
        let (hub, _clock) = hub(10);
        let (me, mut my_rx) = outbox(10);
        let (other, mut other_rx) = outbox(10);
        hub.subscribe("c", "me", me, false);
        hub.subscribe("c", "other", other, true);
        hub.publish("c", message_frame(1), Some("me"));
        assert!(my_rx.try_recv().is_err());
        assert_eq!(other_rx.try_recv().unwrap()["messages"][0]["data"], 1);
    }

    #[test]
    fn presence_enter_update_leave_and_leave_on_unsubscribe() {
        let (hub, _clock) = hub(10);
        let (watcher, mut rx) = outbox(10);
        hub.subscribe("c", "w", watcher, true);
        let change = |action: u64, data: &str| PresenceChange {
            action,
            client_id: "alice".into(),
            data: Some(json!(data)),
            encoding: None,
        };
        hub.presence(
            "c",
            "a1",
            "a1:0",
            vec![change(presence_action::ENTER, "hi")],
        );
        hub.presence(
            "c",
            "a1",
            "a1:1",
            vec![change(presence_action::ENTER, "again")],
        );
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
}
