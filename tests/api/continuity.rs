//! Continuity over a real WebSocket: channel serials (RTL15b), resume
//! (RTN15b, RTN15c6/c7) and recover (RTN16k, RTN16l), the reattach that
//! continues from a channelSerial (RTL4c1), and how long a closed connection
//! stays resumable, on an injected clock.

use std::time::Duration;

use ably_tokend::broker::Limits;
use ably_tokend::clock::ManualClock;
use serde_json::{json, Value};

use crate::helpers::*;

const RESUMED: u64 = 1 << 2;
const EVERYONE: &str = r#"{"*":["publish","subscribe","presence"]}"#;

/// A JWT that outlives any clock a test advances.
fn long_token(broker: &TestBroker, client_id: &str) -> String {
    broker.jwt(EVERYONE, Some(client_id), 3_600_000, now_ms())
}

/// Connects with `query` after the token; returns the socket and CONNECTED.
async fn connect(broker: &TestBroker, token: &str, query: &str) -> (Socket, Value) {
    let mut socket = broker
        .connect(&format!("access_token={token}{query}"))
        .await;
    let connected = socket.next().await;
    assert_eq!(connected["action"], 4, "{connected}");
    (socket, connected)
}

/// Attaches `channel` (with `serial` as the RTL4c1 channelSerial); returns ATTACHED.
async fn attach(socket: &mut Socket, channel: &str, serial: Option<&str>) -> Value {
    let mut frame = json!({"action": 10, "channel": channel});
    if let Some(serial) = serial {
        frame["channelSerial"] = json!(serial);
    }
    socket.send(frame).await;
    let attached = socket.next().await;
    assert_eq!(
        (attached["action"].as_u64(), attached["channel"].as_str()),
        (Some(11), Some(channel)),
        "{attached}"
    );
    attached
}

async fn publish(socket: &mut Socket, channel: &str, serial: u64, data: &str) {
    socket
        .send(json!({"action": 15, "channel": channel, "msgSerial": serial, "messages": [{"name": "m", "data": data}]}))
        .await;
    let ack = socket.next().await;
    assert_eq!(ack["action"], 1, "{ack}");
}

/// Waits until the broker has no open connection: the closes it was sent
/// are recorded (a connection's slot is freed after it is remembered).
async fn all_closed(broker: &TestBroker) {
    let url = format!("http://127.0.0.1:{}/metrics", broker.port);
    eventually("every connection closed at the broker", || {
        let url = url.clone();
        async move {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            text.lines()
                .any(|l| l == "ably_tokend_broker_connections 0")
        }
    })
    .await;
}

fn serial(frame: &Value) -> String {
    frame["channelSerial"]
        .as_str()
        .unwrap_or_else(|| panic!("no channelSerial in {frame}"))
        .to_string()
}

#[actix_web::test]
async fn every_frame_carries_the_channels_serial_in_order() {
    let broker = spawn_broker(Limits::default()).await;
    let token = long_token(&broker, "sub");
    let (mut subscriber, _) = connect(&broker, &token, "").await;
    let attached = attach(&mut subscriber, "news", None).await;
    let mut publisher = broker.connect_as(EVERYONE, Some("pub")).await;
    let mut serials = vec![serial(&attached)];
    for n in 0..3 {
        publish(&mut publisher, "news", n, &n.to_string()).await;
        let frame = subscriber.next().await;
        assert_eq!(frame["action"], 15, "{frame}");
        serials.push(serial(&frame));
    }
    publisher
        .send(json!({"action": 14, "channel": "news", "msgSerial": 3, "presence": [{"action": 2, "data": "hi"}]}))
        .await;
    let presence = subscriber.next().await;
    assert_eq!(presence["action"], 14, "{presence}");
    serials.push(serial(&presence));
    let mut sorted = serials.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, serials, "strictly rising, as text too");
    // A second subscriber's ATTACHED carries the newest serial.
    let (mut late, _) = connect(&broker, &long_token(&broker, "late"), "").await;
    assert_eq!(serial(&attach(&mut late, "news", None).await), serials[4]);
}

#[actix_web::test]
async fn a_resume_keeps_the_connection_and_replays_what_it_missed_in_order() {
    let broker = spawn_broker(Limits::default()).await;
    let token = long_token(&broker, "alice");
    let (mut alice, connected) = connect(&broker, &token, "").await;
    let (id, key) = (
        connected["connectionId"].clone(),
        connected["connectionDetails"]["connectionKey"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let attached = attach(&mut alice, "room", None).await;
    let mut bob = broker.connect_as(EVERYONE, Some("bob")).await;
    publish(&mut bob, "room", 0, "seen").await;
    let seen = alice.next().await;
    assert_eq!(seen["messages"][0]["data"], "seen");
    let last_seen = serial(&seen);
    assert!(last_seen > serial(&attached));

    // The transport drops; bob publishes twice and enters meanwhile.
    drop(alice);
    publish(&mut bob, "room", 1, "missed-1").await;
    publish(&mut bob, "room", 2, "missed-2").await;
    bob.send(json!({"action": 14, "channel": "room", "msgSerial": 3, "presence": [{"action": 2, "data": "here"}]}))
        .await;
    assert_eq!(bob.next().await["action"], 1);

    let (mut alice, connected) = connect(&broker, &token, &format!("&resume={key}")).await;
    assert_eq!(
        connected["connectionId"], id,
        "the same connection (RTN15c6)"
    );
    assert!(connected.get("error").is_none(), "{connected}");
    // The same id with a new key (RTN16d, ably-js's `recover multiple
    // channels` checks it): the key just used continues nothing more.
    let new_key = connected["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap();
    assert_ne!(new_key, key);
    assert!(
        new_key.ends_with(&format!("-{}", id.as_str().unwrap())),
        "{new_key}"
    );
    let attached = attach(&mut alice, "room", Some(&last_seen)).await;
    assert_eq!(
        attached["flags"].as_u64().unwrap() & RESUMED,
        RESUMED,
        "{attached}"
    );
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(alice.next().await);
    }
    let summary: Vec<(u64, Value)> = replayed
        .iter()
        .map(|f| {
            let item = if f["action"] == 15 {
                &f["messages"][0]
            } else {
                &f["presence"][0]
            };
            (f["action"].as_u64().unwrap(), item["data"].clone())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (15, json!("missed-1")),
            (15, json!("missed-2")),
            (14, json!("here"))
        ]
    );
    assert_eq!(
        serial(&replayed[2]),
        serial(&attached),
        "caught up to ATTACHED's serial"
    );
    // bob is present: the SYNC follows the replay, then live messages.
    let sync = alice.next().await;
    assert_eq!(sync["action"], 16, "{sync}");
    publish(&mut bob, "room", 4, "live").await;
    let live = alice.next().await;
    assert_eq!(live["messages"][0]["data"], "live", "{live}");
    alice.silent_for(200).await;
}

#[actix_web::test]
async fn a_reattach_with_a_serial_the_broker_does_not_hold_is_not_resumed() {
    let broker = spawn_broker(Limits::default()).await;
    let mut publisher = broker.connect_as(EVERYONE, Some("pub")).await;
    publish(&mut publisher, "news", 0, "before").await;
    let (mut client, _) = connect(&broker, &long_token(&broker, "c"), "").await;
    for unknown in ["attach:1", "zzzzzzzz:0000000000000001", &"x".repeat(200)] {
        let attached = attach(&mut client, &format!("n{}", unknown.len()), Some(unknown)).await;
        assert_eq!(
            attached["flags"].as_u64().unwrap() & RESUMED,
            0,
            "{attached}"
        );
    }
    let attached = attach(&mut client, "news", Some("attach:1")).await;
    assert_eq!(
        attached["flags"].as_u64().unwrap() & RESUMED,
        0,
        "{attached}"
    );
    // Nothing replayed: the next frame is a live one.
    publish(&mut publisher, "news", 1, "after").await;
    assert_eq!(client.next().await["messages"][0]["data"], "after");
}

#[actix_web::test]
async fn an_unknown_resume_or_recover_gets_a_new_connection_and_the_reason() {
    let broker = spawn_broker(Limits::default()).await;
    let token = long_token(&broker, "alice");
    for (query, code) in [("&resume=nope-1", 80008), ("&recover=nope-2", 80018)] {
        let (_socket, connected) = connect(&broker, &token, query).await;
        assert_eq!(connected["error"]["code"], code, "{connected}");
        assert_eq!(connected["error"]["statusCode"], 400);
        assert!(
            connected["error"]["message"]
                .as_str()
                .unwrap()
                .contains("new connection"),
            "{connected}"
        );
        assert!(connected["connectionId"].is_string());
    }
}

#[actix_web::test]
async fn a_closed_connection_is_resumable_for_the_ttl_only_and_by_its_own_client() {
    let clock = ManualClock::at_ms(now_ms());
    let broker = spawn_broker_with_clock(Limits::default(), clock.clone()).await;
    let token = long_token(&broker, "alice");
    let key_of = |connected: &Value| {
        connected["connectionDetails"]["connectionKey"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Another client cannot resume alice's connection.
    let (socket, connected) = connect(&broker, &token, "").await;
    drop(socket);
    all_closed(&broker).await;
    let mallory = long_token(&broker, "mallory");
    let (_m, taken) = connect(
        &broker,
        &mallory,
        &format!("&resume={}", key_of(&connected)),
    )
    .await;
    assert_ne!(taken["connectionId"], connected["connectionId"]);
    assert_eq!(taken["error"]["code"], 80008);

    // Within the TTL: resumed (recover too, from a new process).
    drop(_m);
    let (socket, connected) = connect(&broker, &token, "").await;
    drop(socket);
    all_closed(&broker).await;
    clock.advance(Duration::from_secs(119));
    let (socket, again) =
        connect(&broker, &token, &format!("&recover={}", key_of(&connected))).await;
    assert_eq!(again["connectionId"], connected["connectionId"]);
    assert!(again.get("error").is_none(), "{again}");
    drop(socket);
    all_closed(&broker).await;

    // Past it: a new connection with the reason.
    clock.advance(Duration::from_secs(121));
    let (_socket, late) =
        connect(&broker, &token, &format!("&resume={}", key_of(&connected))).await;
    assert_ne!(late["connectionId"], connected["connectionId"]);
    assert_eq!(late["error"]["code"], 80008, "{late}");
}

#[actix_web::test]
async fn a_resume_takes_over_a_transport_the_broker_still_thinks_is_open() {
    let broker = spawn_broker(Limits::default()).await;
    let token = long_token(&broker, "alice");
    let (mut old, connected) = connect(&broker, &token, "").await;
    attach(&mut old, "room", None).await;
    let key = connected["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap()
        .to_string();
    // The client gave up on `old`, but it is still open at the broker.
    let (mut new, resumed) = connect(&broker, &token, &format!("&resume={key}")).await;
    assert_eq!(resumed["connectionId"], connected["connectionId"]);
    assert!(resumed.get("error").is_none(), "{resumed}");
    assert_eq!(old.next().await, Value::Null, "the old transport is closed");
    // The new transport receives the channel once it reattaches.
    attach(&mut new, "room", None).await;
    let mut bob = broker.connect_as(EVERYONE, Some("bob")).await;
    publish(&mut bob, "room", 0, "hello").await;
    assert_eq!(new.next().await["messages"][0]["data"], "hello");
}

#[actix_web::test]
async fn untilattach_history_is_bounded_by_the_serial_and_refuses_a_foreign_one() {
    let broker = spawn_broker(Limits::default()).await;
    let mut publisher = broker.connect_as(EVERYONE, Some("pub")).await;
    publish(&mut publisher, "log", 0, "one").await;
    let (mut reader, _) = connect(&broker, &long_token(&broker, "r"), "").await;
    let attach_serial = serial(&attach(&mut reader, "log", None).await);
    publish(&mut publisher, "log", 1, "two").await;
    let history = |query: String| {
        let request = broker.with_key(
            reqwest::Method::GET,
            &format!("/channels/log/messages?{query}"),
        );
        async move { request.send().await.unwrap() }
    };
    let response = history(format!("from_serial={attach_serial}")).await;
    assert_eq!(response.status(), 200);
    let link = response.headers()["link"].to_str().unwrap().to_string();
    assert!(
        link.contains(&format!(
            "from_serial={}",
            attach_serial.replace(':', "%3A")
        )),
        "every link keeps the bound: {link}"
    );
    let body: Value = response.json().await.unwrap();
    let data: Vec<&Value> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["data"])
        .collect();
    assert_eq!(data, vec![&json!("one")]);
    let camel: Value = history(format!("fromSerial={attach_serial}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(camel.as_array().unwrap().len(), 1);
    let refused = history("from_serial=zzzz:0000000000000001".into()).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40000);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reattach"),
        "{body}"
    );
}
