//! Every table the broker keeps that grows with connections, channels,
//! messages, tokens or ids, with what frees its entries; their sizes, read
//! for `/metrics` (`metrics.rs`) and by the churn test below, which proves
//! that each one empties once what it holds has expired.
//!
//! | table | grows with | freed |
//! |---|---|---|
//! | `BrokerState::connections` (a count) | admitted connections | the connection task's `Slot` drops |
//! | `Sessions` open (`continuity.rs`) | open connections | CLOSE (`retire`), else the connection's clean-up (`Membership::drop`) |
//! | `Sessions` closed | closed connections, for resume (RTN15b) and recover (RTN16k) | a resume or recover taking it, or the connection-state TTL (120 s), pruned on every close, take and sweep |
//! | `Sessions` expiry queue | closes | its entry's TTL, whether or not a resume took the entry first |
//! | `Departures` (`liveness.rs`) | connections that dropped without CLOSE while present | the resume that adopts the members, or the presence grace (15 s), when the departures task makes them leave |
//! | `BrokerAuth` nonces and their expiry index (`auth.rs`) | TokenRequests exchanged | the TokenRequest's timestamp leaving the 2-minute window, pruned on every request and sweep |
//! | `Hub` channels (`hub.rs`) | channels used | the change that leaves a channel with no subscribers, derived attachments, members, history or ids, else the sweep once its history and ids expired |
//! | a channel's subscribers | attached connections | DETACH, the connection's clean-up, a capability without subscribe |
//! | a channel's derived attachments (`[filter=…]`) | filtered attachments | DETACH, the connection's clean-up |
//! | a channel's presence members | ENTER | LEAVE, DETACH, CLOSE, the end of the presence grace |
//! | a channel's message and presence history | events | `history_max_messages` and `history_max_age`, pruned on every event, read and sweep |
//! | a channel's idempotency ids (`message.rs`, `RecentIds`) | client-supplied message ids (RSL1k) | the 2-minute window, pruned on every publish and sweep |
//! | a channel's delta base (`delta.rs`) | a publish while a subscriber asked for deltas | the channel's own state going |
//!
//! A connection's own maps (`Membership`: attached channels, modes, deltas,
//! derived channels, presence channels) live in its task and go with it.
//! Issued tokens are not stored (`auth.rs`). The sandbox's apps
//! (`sandbox.rs`) are bounded by `MAX_APPS` and leave on DELETE.
//!
//! An emptied table still holds the room of its busiest moment: the sweep
//! gives it back (`GiveBack`) for every table above, each channel's
//! included.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};

use super::hub::HubTables;

/// Room a table keeps however empty it gets: small enough not to matter,
/// large enough that a quiet table is not reallocated on every sweep.
const KEPT_ROOM: usize = 64;

/// A collection that can give back the room a burst left it. Rust's hash
/// maps, sets and deques never shrink on their own: after a burst of
/// connections or TokenRequests has expired, a table is empty but keeps the
/// capacity of its busiest moment (for the nonces of 60 000 TokenRequests in
/// 2 minutes, a map of 2^17 slots, ~4 MB) until the broker stops.
pub(crate) trait GiveBack {
    /// Shrinks to twice what it holds (at least `KEPT_ROOM`) once it holds
    /// under a quarter of its capacity, so a table that is filling again is
    /// not shrunk and regrown on every sweep.
    fn give_back_room(&mut self);
}

fn room_to_keep(len: usize, capacity: usize) -> Option<usize> {
    (capacity > KEPT_ROOM && len < capacity / 4).then(|| (len * 2).max(KEPT_ROOM))
}

impl<K: Eq + Hash, V, S: BuildHasher> GiveBack for HashMap<K, V, S> {
    fn give_back_room(&mut self) {
        if let Some(keep) = room_to_keep(self.len(), self.capacity()) {
            self.shrink_to(keep);
        }
    }
}

impl<T: Eq + Hash, S: BuildHasher> GiveBack for HashSet<T, S> {
    fn give_back_room(&mut self) {
        if let Some(keep) = room_to_keep(self.len(), self.capacity()) {
            self.shrink_to(keep);
        }
    }
}

impl<T> GiveBack for VecDeque<T> {
    fn give_back_room(&mut self) {
        if let Some(keep) = room_to_keep(self.len(), self.capacity()) {
            self.shrink_to(keep);
        }
    }
}

/// The sizes of the broker's tables at one moment (each read under its own
/// lock, so a table's size is exact and the set of them nearly so).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tables {
    pub(crate) connections: usize,
    pub(crate) open_sessions: usize,
    /// Closed connections that may still be resumed or recovered.
    pub(crate) resumable: usize,
    pub(crate) resumable_expiry: usize,
    pub(crate) presence_departures: usize,
    pub(crate) token_nonces: usize,
    pub(crate) hub: HubTables,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use actix_codec::Framed;
    use awc::ws::{Codec, Frame, Message};
    use awc::BoxedSocket;
    use base64::Engine;
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};

    use super::*;
    use crate::broker::protocol::{action, presence_action};
    use crate::broker::{Broker, BrokerState, Limits};
    use crate::capability::Capability;
    use crate::clock::{Clock, ManualClock};
    use crate::config::BrokerSettings;
    use crate::signing::{new_nonce, sign_token_request, ApiKey, Grant};

    const KEY: &str = "app.churn:secret-for-the-churn-test";
    /// Plain channels and derived (`[filter=…]`) ones alike.
    const EVERYTHING: &str = r#"{"[*]*":["*"]}"#;
    const CONNECTIONS: usize = 24;
    const TOKEN_REQUESTS_ONLY: usize = 40;
    const GRACE: Duration = Duration::from_secs(15);

    struct Churn {
        state: Arc<BrokerState>,
        clock: Arc<ManualClock>,
        key: ApiKey,
        port: u16,
        http: reqwest::Client,
    }

    type Socket = Framed<BoxedSocket, Codec>;

    impl Churn {
        async fn start() -> Churn {
            let clock = ManualClock::at_ms(1_700_000_000_000);
            let key: ApiKey = KEY.parse().unwrap();
            let key = key.with_capability(Capability::parse_json(EVERYTHING).unwrap());
            let settings = BrokerSettings {
                bind: "127.0.0.1:0".parse().unwrap(),
                history_max_messages: 100,
                history_max_age: Duration::from_secs(120),
                presence_grace: GRACE,
                // Heartbeats tick in real time: none within the test.
                max_idle_interval: Duration::from_secs(600),
            };
            let broker = Broker::build(
                &settings,
                vec![key.clone()],
                clock.clone(),
                Limits::default(),
            )
            .unwrap();
            let (state, port) = (broker.state.clone(), broker.port());
            actix_web::rt::spawn(broker.run_until_stopped());
            Churn {
                state,
                clock,
                key,
                port,
                http: reqwest::Client::new(),
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        /// A TokenRequest signed now, exchanged at the broker's requestToken.
        async fn token(&self, client_id: &str) -> String {
            let capability = Capability::parse_json(EVERYTHING).unwrap();
            let request = sign_token_request(
                &self.key,
                &Grant {
                    capability: &capability,
                    client_id: Some(client_id),
                    ttl_ms: 3_600_000,
                    issued_ms: self.clock.now_ms(),
                },
                new_nonce(),
            );
            let response = self
                .http
                .post(self.url("/keys/app.churn/requestToken"))
                .json(&request)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let details: Value = response.json().await.unwrap();
            details["token"].as_str().unwrap().to_string()
        }

        /// Connects with `token` (resuming `resume`); the socket and CONNECTED.
        async fn connect(&self, token: &str, resume: Option<&str>) -> (Socket, Value) {
            let resume = resume.map(|k| format!("&resume={k}")).unwrap_or_default();
            let url = format!(
                "ws://127.0.0.1:{}/?format=json&access_token={token}{resume}",
                self.port
            );
            let (_, mut socket) = awc::Client::new().ws(url).connect().await.unwrap();
            let connected = expect(&mut socket, action::CONNECTED, None).await;
            (socket, connected)
        }

        /// A REST publish with the key (loopback), with the client's own id.
        async fn rest_publish(&self, channel: &str, id: &str) {
            let basic = base64::engine::general_purpose::STANDARD.encode(KEY);
            let response = self
                .http
                .post(self.url(&format!("/channels/{channel}/messages")))
                .header("authorization", format!("Basic {basic}"))
                .json(&json!({"id": id, "name": "rest", "data": "x"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "{:?}", response.text().await);
        }

        /// The broker's own `/metrics`, as `name value` pairs.
        async fn metrics(&self) -> Vec<(String, i64)> {
            let text = self
                .http
                .get(self.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| line.split_once(' '))
                .map(|(name, value)| (name.to_string(), value.parse().unwrap()))
                .collect()
        }

        /// Waits (in real time: connection tasks and the departures task
        /// run on their own) until `done` holds of the tables.
        async fn until(&self, what: &str, done: impl Fn(&Tables) -> bool) {
            for _ in 0..100 {
                if done(&self.state.tables()) {
                    return;
                }
                actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{what}: {:?}", self.state.tables());
        }
    }

    async fn send(socket: &mut Socket, frame: Value) {
        socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    /// The next frame with `act` (on `channel`, when given), skipping others
    /// (messages and presence of other connections interleave).
    async fn expect(socket: &mut Socket, act: u64, channel: Option<&str>) -> Value {
        loop {
            let next = actix_web::rt::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .expect("a frame within 5 s");
            let frame: Value = match next {
                Some(Ok(Frame::Text(bytes))) => serde_json::from_slice(&bytes).unwrap(),
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
                other => panic!("waiting for action {act}: {other:?}"),
            };
            assert!(
                frame["action"] != action::ERROR && frame["action"] != action::NACK,
                "{frame}"
            );
            if frame["action"] == act && channel.is_none_or(|c| frame["channel"] == c) {
                return frame;
            }
        }
    }

    async fn attach(socket: &mut Socket, channel: &str, params: Value) {
        send(
            socket,
            json!({"action": action::ATTACH, "channel": channel, "params": params}),
        )
        .await;
        expect(socket, action::ATTACHED, Some(channel)).await;
    }

    async fn acked(socket: &mut Socket, frame: Value) {
        let serial = frame["msgSerial"].clone();
        send(socket, frame).await;
        let ack = expect(socket, action::ACK, None).await;
        assert_eq!(ack["msgSerial"], serial);
    }

    fn derived(channel: &str) -> String {
        let filter = base64::engine::general_purpose::STANDARD.encode("name == `\"tick\"`");
        format!("[filter={filter}]{channel}")
    }

    /// Connection `i`'s whole life up to its close: three channels (one
    /// shared, its own, and a derived channel or deltas), presence, a
    /// publish with the client's own id (sent twice) and one without.
    async fn take_part(socket: &mut Socket, i: usize) {
        let own = format!("own-{i}");
        attach(socket, "shared", json!({})).await;
        attach(socket, &own, json!({})).await;
        if i.is_multiple_of(2) {
            attach(socket, &derived("shared"), json!({})).await;
        } else {
            attach(socket, "deltas", json!({"delta": "vcdiff"})).await;
        }
        let enter = json!({"action": presence_action::ENTER, "data": {"n": i}});
        acked(
            socket,
            json!({"action": action::PRESENCE, "channel": "shared", "msgSerial": 0, "presence": [enter]}),
        )
        .await;
        let with_id = json!({"id": format!("idem-{i}"), "name": "tick", "data": i});
        for serial in [1, 2] {
            acked(
                socket,
                json!({"action": action::MESSAGE, "channel": own, "msgSerial": serial, "messages": [with_id]}),
            )
            .await;
        }
        let to = if i.is_multiple_of(2) {
            "shared"
        } else {
            "deltas"
        };
        acked(
            socket,
            json!({"action": action::MESSAGE, "channel": to, "msgSerial": 3, "messages": [{"name": "tick", "data": format!("tick {i}")}]}),
        )
        .await;
    }

    /// A burst fills every table (5 000 connections closed, TokenRequests,
    /// dropped connections' departures, channels with their own ids, and
    /// one channel that stays, with 5 000 ids and subscribers come and
    /// gone): once it has expired, the sweep leaves the tables empty and
    /// gives back their room, so a burst does not hold memory for good.
    #[actix_web::test]
    async fn once_a_burst_has_expired_the_sweep_gives_its_room_back() {
        use crate::broker::hub::{Outbox, Subscriber};
        const BURST: usize = 5_000;
        let churn = Churn::start().await;
        let state = &churn.state;
        let capability = Capability::parse_json(EVERYTHING).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let outbox = Outbox {
            tx,
            lagged: Arc::default(),
            lagging: Arc::default(),
        };
        let subscriber = || Subscriber {
            outbox: outbox.clone(),
            echo: true,
            messages: true,
            presence: false,
            delta: None,
        };
        state.hub.subscribe("busy", "stays", subscriber());
        let now = churn.clock.now_ms();
        for i in 0..BURST {
            let (key, id) = (format!("key-{i}"), format!("id-{i}"));
            let registration = state.sessions.open(&key, &id, None);
            state.sessions.close(&key, &id, None, &registration);
            let grant = Grant {
                capability: &capability,
                client_id: None,
                ttl_ms: 60_000,
                issued_ms: now,
            };
            let request = serde_json::to_value(sign_token_request(&churn.key, &grant, new_nonce()));
            state
                .auth
                .request_token("app.churn", &request.unwrap())
                .unwrap();
            assert!(state.departures.schedule(&id, vec!["gone".into()], now));
            let message = json!({"action": action::MESSAGE, "messages": [{"id": id, "data": "x"}]});
            for channel in [format!("c-{i}"), "busy".to_string()] {
                state
                    .hub
                    .publish(&channel, message.clone(), &[true], None, None)
                    .unwrap();
            }
            state.hub.subscribe("busy", &id, subscriber());
            state.hub.drop_subscriber("busy", &id);
        }
        let room = |state: &BrokerState| {
            let (channels, within) = state.hub.room();
            let [live, closed, expiry] = state.sessions.room();
            [
                ("channels", channels),
                ("within channels", within),
                ("open sessions", live),
                ("closed sessions", closed),
                ("session expiry", expiry),
                ("nonces", state.auth.nonce_room()),
                ("departures", state.departures.room()),
            ]
        };
        let burst = room(state);
        for (table, capacity) in burst {
            if table != "open sessions" {
                assert!(capacity >= BURST, "{table}: {burst:?}");
            }
        }

        churn.clock.advance(GRACE + Duration::from_secs(1));
        churn
            .until("the departures done", |t| t.presence_departures == 0)
            .await;
        churn.clock.advance_secs(121);
        state.sweep();
        let after = state.tables();
        assert_eq!(
            (after.hub.channels, after.hub.subscribers),
            (1, 1),
            "busy stays: {after:?}"
        );
        let emptied = Tables {
            hub: HubTables {
                channels: 0,
                subscribers: 0,
                ..after.hub
            },
            ..after
        };
        assert_eq!(emptied, Tables::default());
        let kept = room(state);
        for (table, capacity) in kept {
            assert!(capacity <= 4 * KEPT_ROOM, "{table}: {kept:?}");
        }
    }

    /// Connections come and go (CLOSE, a dropped transport, a dropped
    /// transport then resumed and closed) after attaching, entering presence
    /// and publishing with and without their own ids, besides TokenRequests
    /// and REST publishes: once every window has passed (the presence grace,
    /// then 2 minutes for nonces, resumable connections, history and ids),
    /// a sweep leaves every table empty, channels included.
    #[actix_web::test]
    async fn after_churn_every_table_empties_once_its_window_has_passed() {
        let churn = Churn::start().await;
        for i in 0..TOKEN_REQUESTS_ONLY {
            churn.token(&format!("unused-{i}")).await;
        }
        let mut sockets = Vec::new();
        for i in 0..CONNECTIONS {
            let token = churn.token(&format!("user-{i}")).await;
            let (mut socket, connected) = churn.connect(&token, None).await;
            take_part(&mut socket, i).await;
            let key = connected["connectionDetails"]["connectionKey"]
                .as_str()
                .unwrap()
                .to_string();
            sockets.push((socket, token, key));
        }
        for i in 0..4 {
            churn.rest_publish(&format!("rest-{i}"), "rest-id").await;
        }

        let live = churn.state.tables();
        let shared_subscribers = CONNECTIONS;
        assert_eq!(live.connections, CONNECTIONS, "{live:?}");
        assert_eq!(live.open_sessions, CONNECTIONS, "{live:?}");
        assert_eq!(live.token_nonces, TOKEN_REQUESTS_ONLY + CONNECTIONS);
        // shared, own-i, deltas, rest-i.
        assert_eq!(live.hub.channels, 1 + CONNECTIONS + 1 + 4, "{live:?}");
        assert_eq!(
            live.hub.subscribers,
            shared_subscribers + CONNECTIONS + CONNECTIONS / 2,
            "{live:?}"
        );
        assert_eq!(live.hub.filtered, CONNECTIONS / 2, "{live:?}");
        assert_eq!(live.hub.presence_members, CONNECTIONS, "{live:?}");
        assert_eq!(live.hub.idempotency_ids, CONNECTIONS + 4, "{live:?}");
        assert_eq!(live.hub.messages_held, 2 * CONNECTIONS + 4, "{live:?}");
        assert_eq!(live.hub.presence_events_held, CONNECTIONS, "{live:?}");
        assert_eq!(live.hub.delta_bases, 1, "{live:?}");
        let gauges = churn.metrics().await;
        for (name, value) in [
            ("connections", CONNECTIONS),
            ("channels", live.hub.channels),
            ("resumable_connections", 0),
            ("token_nonces", TOKEN_REQUESTS_ONLY + CONNECTIONS),
            ("idempotency_ids", CONNECTIONS + 4),
            ("presence_departures", 0),
            ("presence_members", CONNECTIONS),
            ("history_messages", 2 * CONNECTIONS + 4),
            ("presence_history_events", CONNECTIONS),
        ] {
            let name = format!("ably_tokend_broker_{name}");
            assert!(
                gauges.contains(&(name.clone(), value as i64)),
                "{name} {value} in {gauges:?}"
            );
        }

        // Close: a third with CLOSE, a third by dropping the transport, a
        // third resumed (then CLOSE), half of them after dropping the
        // transport and half taking over one still open (RTN15b).
        let (mut resumes, mut taken_over) = (Vec::new(), Vec::new());
        for (i, (mut socket, token, key)) in sockets.into_iter().enumerate() {
            match i % 3 {
                0 => {
                    send(&mut socket, json!({"action": action::CLOSE})).await;
                    expect(&mut socket, action::CLOSED, None).await;
                }
                1 => drop(socket),
                _ if i.is_multiple_of(2) => {
                    taken_over.push(socket);
                    resumes.push((token, key));
                }
                _ => {
                    drop(socket);
                    resumes.push((token, key));
                }
            }
        }
        let still_open = taken_over.len();
        churn
            .until("the dropped transports seen", |t| {
                t.open_sessions == still_open
            })
            .await;
        for (token, key) in resumes {
            let (mut socket, connected) = churn.connect(&token, Some(&key)).await;
            assert!(connected.get("error").is_none(), "resumed: {connected}");
            send(&mut socket, json!({"action": action::CLOSE})).await;
            expect(&mut socket, action::CLOSED, None).await;
        }
        drop(taken_over);
        churn
            .until("every connection ended", |t| {
                t.connections == 0 && t.open_sessions == 0
            })
            .await;
        let closed = churn.state.tables();
        // Every close is remembered, CLOSE included; the entries the
        // resumes took went, and the resumed connections' own closes came.
        assert_eq!(closed.resumable, CONNECTIONS, "{closed:?}");
        assert_eq!(closed.resumable_expiry, CONNECTIONS + CONNECTIONS / 3);
        assert_eq!(closed.presence_departures, CONNECTIONS / 3, "{closed:?}");
        assert_eq!(closed.hub.presence_members, CONNECTIONS / 3, "{closed:?}");
        assert_eq!(closed.hub.subscribers + closed.hub.filtered, 0);
        let gauges = churn.metrics().await;
        for (name, value) in [
            ("resumable_connections", CONNECTIONS),
            ("presence_departures", CONNECTIONS / 3),
        ] {
            let name = format!("ably_tokend_broker_{name}");
            assert!(
                gauges.contains(&(name.clone(), value as i64)),
                "{name} {value} in {gauges:?}"
            );
        }

        // The grace passes: the dropped connections' members leave.
        churn.clock.advance(GRACE + Duration::from_secs(1));
        churn
            .until("the departures done", |t| {
                t.presence_departures == 0 && t.hub.presence_members == 0
            })
            .await;
        churn.state.sweep();
        let within = churn.state.tables();
        assert!(
            within.resumable > 0
                && within.token_nonces > 0
                && within.hub.channels > 0
                && within.hub.idempotency_ids > 0,
            "held within the 2-minute windows: {within:?}"
        );

        // Two minutes (and a little) after the last event: nothing is left.
        churn.clock.advance_secs(121);
        churn.state.sweep();
        assert_eq!(churn.state.tables(), Tables::default());
        let gauges = churn.metrics().await;
        let held: Vec<_> = gauges
            .iter()
            .filter(|(name, value)| !name.ends_with("_total") && *value != 0)
            .collect();
        assert!(held.is_empty(), "every gauge at 0: {held:?}");
        assert!(gauges.len() >= 9, "{gauges:?}");
    }
}
