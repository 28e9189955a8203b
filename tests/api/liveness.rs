//! Presence liveness at its timing edges, over real WebSockets against a
//! broker whose clock the test moves (`ManualClock`): the presence grace of a
//! connection that dropped without CLOSE, a resume within it (RTN15b) with
//! ably-js's automatic re-entry (RTP17g), CLOSE and fatal errors leaving at
//! once, and the idle close past 1.5 × `maxIdleInterval` (CD2h, RTN23).
//! The Node suite (tests/e2e/liveness.test.mjs) proves the same with the
//! real client through a fault-injecting proxy.

use std::sync::Arc;
use std::time::Duration;

use ably_tokend::broker::{Broker, Limits};
use ably_tokend::clock::{Clock, ManualClock};
use ably_tokend::config::BrokerSettings;
use ably_tokend::signing::ApiKey;
use awc::ws::Message;
use futures_util::SinkExt;
use serde_json::{json, Value};

use crate::helpers::*;

const GRACE_MS: u64 = 15_000;
const EVERYTHING: &str = r#"{"*":["subscribe","publish","presence"]}"#;

struct Liveness {
    broker: TestBroker,
    clock: Arc<ManualClock>,
}

/// A broker on the test's clock, with `max_idle_interval` (long unless the
/// test is about it, so the sockets here, which never pong, stay open).
async fn spawn(max_idle_interval: Duration) -> Liveness {
    let clock = ManualClock::at_ms(now_ms());
    let key: ApiKey = API_KEY.parse().unwrap();
    let settings = BrokerSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        presence_grace: Duration::from_millis(GRACE_MS),
        max_idle_interval,
        ..BrokerSettings::default()
    };
    let broker = Broker::build(
        &settings,
        vec![key.clone()],
        clock.clone(),
        Limits::default(),
    )
    .unwrap();
    let (port, handle) = (broker.port(), broker.handle());
    actix_web::rt::spawn(broker.run_until_stopped());
    Liveness {
        broker: TestBroker { port, key, handle },
        clock,
    }
}

/// Ends a socket without CLOSE, as when a tab is killed or the network
/// drops, and gives the broker time to see it end before the clock moves.
async fn vanish(socket: Socket) {
    drop(socket);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
}

impl Liveness {
    /// Connects as `client_id`; returns the socket and its CONNECTED frame.
    async fn connect(&self, client_id: &str, resume: Option<&str>) -> (Socket, Value) {
        let token = self
            .broker
            .jwt(EVERYTHING, Some(client_id), 600_000, self.clock.now_ms());
        let resume = resume.map(|k| format!("&resume={k}")).unwrap_or_default();
        let mut socket = self
            .broker
            .connect(&format!("access_token={token}{resume}"))
            .await;
        let connected = socket.next().await;
        assert_eq!(connected["action"], 4, "{connected}");
        (socket, connected)
    }

    /// Moves the broker's clock and gives its departures task (polling every
    /// 100 ms) time to look.
    async fn advance(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn attach(socket: &mut Socket, channel: &str) -> Value {
    socket.send(json!({"action": 10, "channel": channel})).await;
    let attached = socket.next().await;
    assert_eq!(attached["action"], 11, "{attached}");
    attached
}

/// Sends PRESENCE with one item and returns the frames up to its ACK.
async fn presence(socket: &mut Socket, channel: &str, serial: u64, item: Value) -> Vec<Value> {
    socket
        .send(json!({"action": 14, "channel": channel, "msgSerial": serial, "presence": [item]}))
        .await;
    let mut frames = Vec::new();
    loop {
        let frame = socket.next().await;
        assert!(!frame.is_null(), "the socket closed before the ACK");
        if frame["action"] == 1 && frame["msgSerial"] == serial {
            return frames;
        }
        frames.push(frame);
    }
}

/// The id of the member a client just entered, from its own PRESENCE echo,
/// which may come before or after the ACK (`before_ack`).
async fn own_member_id(socket: &mut Socket, before_ack: Vec<Value>) -> String {
    let echo = match before_ack.into_iter().next() {
        Some(frame) => frame,
        None => socket.next().await,
    };
    assert_eq!(echo["action"], 14, "{echo}");
    echo["presence"][0]["id"].as_str().unwrap().to_string()
}

/// The next frame, which must be a PRESENCE with one item of `action`.
async fn presence_event(socket: &mut Socket, action: u64) -> Value {
    let frame = socket.next().await;
    assert_eq!(frame["action"], 14, "{frame}");
    let item = frame["presence"][0].clone();
    assert_eq!(item["action"], action, "{frame}");
    item
}

/// A watcher attached to `channel`: it is sent the channel's presence events.
async fn watcher(live: &Liveness, channel: &str) -> Socket {
    let (mut socket, _) = live.connect("watcher", None).await;
    attach(&mut socket, channel).await;
    socket
}

/// alice, present in "room": her socket, connection id and key (to resume
/// with), and the id of her member.
struct Alice {
    socket: Socket,
    connection_id: String,
    connection_key: String,
    member_id: String,
}

/// Connects alice, attaches "room" and enters it with `item`, which the
/// watcher sees as an ENTER.
async fn alice_enters(live: &Liveness, watcher: &mut Socket, item: Value) -> Alice {
    let (mut socket, connected) = live.connect("alice", None).await;
    let text = |field: &Value| field.as_str().unwrap().to_string();
    let connection_id = text(&connected["connectionId"]);
    let connection_key = text(&connected["connectionDetails"]["connectionKey"]);
    attach(&mut socket, "room").await;
    let own = presence(&mut socket, "room", 0, item).await;
    let member_id = own_member_id(&mut socket, own).await;
    presence_event(watcher, 2).await;
    Alice {
        socket,
        connection_id,
        connection_key,
        member_id,
    }
}

/// ably-js's automatic re-entry after a resume (RTP17g): an ENTER with the
/// member's data and the id of its latest event; the frames up to its ACK.
async fn re_enter(socket: &mut Socket, member_id: &str) -> Vec<Value> {
    presence(
        socket,
        "room",
        1,
        json!({"action": 2, "data": "here", "id": member_id}),
    )
    .await
}

#[actix_web::test]
async fn a_member_whose_connection_drops_stays_present_for_the_grace_then_leaves() {
    let live = spawn(Duration::from_secs(300)).await;
    let mut watcher = watcher(&live, "room").await;
    let (mut alice, connected) = live.connect("alice", None).await;
    let alice_id = connected["connectionId"].as_str().unwrap().to_string();
    attach(&mut alice, "room").await;
    presence(&mut alice, "room", 0, json!({"action": 2, "data": "here"})).await;
    let entered = presence_event(&mut watcher, 2).await;
    assert_eq!(entered["connectionId"], alice_id);

    vanish(alice).await;
    live.advance(GRACE_MS - 1).await;
    watcher.silent_for(300).await;
    // A late joiner still gets alice in the SYNC.
    let (mut late, _) = live.connect("late", None).await;
    let attached = attach(&mut late, "room").await;
    assert_eq!(attached["flags"].as_u64().unwrap() & 1, 1, "HAS_PRESENCE");
    let sync = late.next().await;
    assert_eq!(sync["action"], 16, "{sync}");
    assert_eq!(sync["presence"][0]["clientId"], "alice");
    assert_eq!(sync["presence"][0]["connectionId"], alice_id);

    live.advance(1).await;
    let left = presence_event(&mut watcher, 3).await;
    assert_eq!(left["clientId"], "alice");
    assert_eq!(left["connectionId"], alice_id);
    assert_eq!(left["data"], "here", "the leave carries the member's data");
    let late_left = presence_event(&mut late, 3).await;
    assert_eq!(late_left["clientId"], "alice");
}

#[actix_web::test]
async fn a_resume_within_the_grace_keeps_the_member_and_its_automatic_re_entry_is_silent() {
    let live = spawn(Duration::from_secs(300)).await;
    let mut watcher = watcher(&live, "room").await;
    let Alice {
        socket: alice,
        connection_id: alice_id,
        connection_key: key,
        member_id,
    } = alice_enters(
        &live,
        &mut watcher,
        json!({"action": 2, "data": "here", "extras": {"locks": ["l1"]}}),
    )
    .await;

    vanish(alice).await;
    live.advance(GRACE_MS - 1_000).await;
    let (mut alice, connected) = live.connect("alice", Some(&key)).await;
    assert_eq!(
        connected["connectionId"], alice_id,
        "the resume keeps the id"
    );
    attach(&mut alice, "room").await;
    assert_eq!(
        alice.next().await["action"],
        16,
        "the SYNC after the attach"
    );
    // ably-js re-enters with the id of the member's latest event (RTP17g):
    // nothing changed, so the others hear nothing and the extras stay.
    let frames = re_enter(&mut alice, &member_id).await;
    assert!(frames.is_empty(), "{frames:?}");
    alice.silent_for(300).await;
    live.advance(GRACE_MS * 4).await;
    watcher.silent_for(300).await;

    // The member is alice's again, once: a late joiner sees one, extras kept.
    let (mut late, _) = live.connect("late", None).await;
    attach(&mut late, "room").await;
    let sync = late.next().await;
    let members = sync["presence"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{sync}");
    assert_eq!(members[0]["connectionId"], alice_id);
    assert_eq!(members[0]["extras"], json!({"locks": ["l1"]}));

    // An ENTER that is not a re-entry of the current state is an update:
    // still one member, no enter.
    let own = presence(&mut alice, "room", 2, json!({"action": 2, "data": "back"})).await;
    own_member_id(&mut alice, own).await;
    let updated = presence_event(&mut watcher, 4).await;
    assert_eq!(updated["data"], "back");
    assert_eq!(updated["connectionId"], alice_id);

    // CLOSE: the member leaves at once, with no grace.
    alice.send(json!({"action": 7})).await;
    assert_eq!(alice.next().await["action"], 8);
    let left = presence_event(&mut watcher, 3).await;
    assert_eq!(left["connectionId"], alice_id);
}

/// The client saw its transport fail before the broker did (a frozen network
/// that came back before the idle close): the resume takes the old, still
/// open connection over (RTN15b), and its member never leaves.
#[actix_web::test]
async fn a_resume_that_takes_over_a_connection_still_open_keeps_its_member() {
    let live = spawn(Duration::from_secs(300)).await;
    let mut watcher = watcher(&live, "room").await;
    let Alice {
        socket: mut alice,
        connection_id: alice_id,
        connection_key: key,
        member_id,
    } = alice_enters(&live, &mut watcher, json!({"action": 2, "data": "here"})).await;

    // The old socket stays open; a second transport resumes it.
    let (mut again, connected) = live.connect("alice", Some(&key)).await;
    assert_eq!(
        connected["connectionId"], alice_id,
        "the resume keeps the id"
    );
    assert!(connected["error"].is_null(), "{connected}");
    let old = alice.next().await;
    assert!(
        old.is_null() || old["action"] != 4,
        "the old transport is ended, not served: {old}"
    );
    attach(&mut again, "room").await;
    assert_eq!(
        again.next().await["action"],
        16,
        "the SYNC after the attach"
    );
    let frames = re_enter(&mut again, &member_id).await;
    assert!(frames.is_empty(), "{frames:?}");
    live.advance(GRACE_MS * 2).await;
    watcher.silent_for(300).await;

    let (mut late, _) = live.connect("late", None).await;
    attach(&mut late, "room").await;
    let sync = late.next().await;
    let members = sync["presence"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{sync}");
    assert_eq!(members[0]["connectionId"], alice_id);
}

#[actix_web::test]
async fn a_resume_after_the_grace_finds_the_member_gone_and_its_re_entry_is_an_enter() {
    let live = spawn(Duration::from_secs(300)).await;
    let mut watcher = watcher(&live, "room").await;
    let Alice {
        socket: alice,
        connection_key: key,
        member_id,
        ..
    } = alice_enters(&live, &mut watcher, json!({"action": 2, "data": "here"})).await;
    vanish(alice).await;
    live.advance(GRACE_MS).await;
    presence_event(&mut watcher, 3).await;

    let (mut alice, _) = live.connect("alice", Some(&key)).await;
    attach(&mut alice, "room").await;
    re_enter(&mut alice, &member_id).await;
    let entered = presence_event(&mut watcher, 2).await;
    assert_eq!(entered["clientId"], "alice");
}

#[actix_web::test]
async fn a_connection_that_fails_leaves_at_once() {
    let live = spawn(Duration::from_secs(300)).await;
    let mut watcher = watcher(&live, "room").await;
    let (mut alice, _) = live.connect("alice", None).await;
    attach(&mut alice, "room").await;
    let own = presence(&mut alice, "room", 0, json!({"action": 2})).await;
    own_member_id(&mut alice, own).await;
    presence_event(&mut watcher, 2).await;
    alice.send_raw("{not json").await;
    assert_eq!(alice.next().await["action"], 9, "a fatal ERROR");
    let left = presence_event(&mut watcher, 3).await;
    assert_eq!(left["clientId"], "alice");
}

#[actix_web::test]
async fn a_silent_connection_is_closed_after_one_and_a_half_idle_intervals() {
    let live = spawn(Duration::from_millis(200)).await;
    let (mut quiet, connected) = live.connect("quiet", None).await;
    assert_eq!(connected["connectionDetails"]["maxIdleInterval"], 200);

    // Heard from at connect; silent for exactly the timeout: still open.
    live.advance(300).await;
    quiet.silent_for(300).await;
    live.advance(1).await;
    let disconnected = quiet.next().await;
    assert_eq!(disconnected["action"], 6, "{disconnected}");
    assert_eq!(disconnected["error"]["code"], 80003);
    assert_eq!(disconnected["error"]["statusCode"], 408);
    assert!(quiet.next().await.is_null(), "then the socket closes");
}

#[actix_web::test]
async fn frames_and_pongs_keep_a_connection_alive() {
    let live = spawn(Duration::from_millis(200)).await;
    let (mut talker, _) = live.connect("talker", None).await;
    for _ in 0..3 {
        live.advance(250).await;
        talker.send(json!({"action": 0, "id": "x"})).await;
        assert_eq!(talker.next().await["action"], 0, "the heartbeat answered");
    }
    for _ in 0..3 {
        live.advance(250).await;
        // What ably-js in Node sends: the ws library's answer to the pings.
        talker
            .framed
            .send(Message::Pong(Default::default()))
            .await
            .unwrap();
    }
    live.advance(250).await;
    talker.silent_for(300).await;
    talker.send(json!({"action": 0, "id": "y"})).await;
    assert_eq!(talker.next().await["action"], 0, "still connected");
}
