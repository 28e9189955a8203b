//! Subscription filters at the broker over a real WebSocket: a connection
//! attached to `[filter=<base64>]chan` (what ably-js's
//! `channels.getDerived("chan", { filter })` attaches to) is sent the
//! messages of `chan` that pass the filter, in frames naming the derived
//! channel; it cannot publish or enter presence there; malformed filters,
//! missing capabilities, rewind and deltas are refused at attach.

use std::time::Duration;

use ably_tokend::broker::{Broker, Limits};
use ably_tokend::capability::Capability;
use ably_tokend::clock;
use ably_tokend::config::BrokerSettings;
use ably_tokend::signing::ApiKey;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

/// A broker whose key reaches qualified channels too (`[*]*`, as ably-js's
/// test app key 5 in ably-common's test-app-setup.json): an unrestricted
/// key (`*`) does not, so no token it signs reaches a derived channel.
async fn spawn_broker_qualified() -> TestBroker {
    let key: ApiKey = API_KEY.parse().unwrap();
    let key = key.with_capability(Capability::parse_json(EVERYTHING).unwrap());
    let settings = BrokerSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        history_max_messages: 100,
        history_max_age: Duration::from_secs(120),
        ..BrokerSettings::default()
    };
    let broker = Broker::build(
        &settings,
        vec![key.clone()],
        clock::system(),
        Limits::default(),
    )
    .unwrap();
    let (port, handle) = (broker.port(), broker.handle());
    actix_web::rt::spawn(broker.run_until_stopped());
    TestBroker { port, key, handle }
}

const EVERYTHING: &str = r#"{"[*]*":["*"]}"#;
/// The filter of ably-js's test "subscribes to filtered channel"
/// (test/realtime/message.test.js).
const FILTER: &str = "name == `\"filtered\"` && headers.number == `26095`";
const SUBSCRIBE: u64 = 1 << 18;
const RESUMED: u64 = 1 << 2;

fn derived(expression: &str, channel: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(expression);
    format!("[filter={encoded}]{channel}")
}

/// ably-js's test messages, with `data` saying which should pass.
fn messages() -> Value {
    json!([
        {"name": "filtered", "data": "pass 1", "extras": {"headers": {"name": "Lorem Choo", "number": 26095, "bool": true}}},
        {"name": "filtered", "data": "no extras"},
        {"name": "filtered", "data": "pass 2", "extras": {"headers": {"name": "John Bull", "number": 26095, "bool": false}}},
        {"name": "filtered", "data": "no headers", "extras": {}},
        {"name": "filtered", "data": "other number", "extras": {"headers": {"name": "John Bull", "number": 12345, "bool": false}}},
        {"name": "end", "data": "last"},
    ])
}

fn data(frame: &Value) -> Vec<&str> {
    frame["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect()
}

async fn attach(socket: &mut Socket, channel: &str) -> Value {
    socket.send(json!({"action": 10, "channel": channel})).await;
    socket.next().await
}

#[actix_web::test]
async fn a_filtered_attachment_is_sent_the_matching_messages_under_its_own_name() {
    let broker = spawn_broker_qualified().await;
    let mut alice = broker.connect_as(EVERYTHING, Some("alice")).await;
    let name = derived(FILTER, "chan");
    let attached = attach(&mut alice, &name).await;
    assert_eq!(attached["action"], 11, "{attached}");
    assert_eq!(attached["channel"], name.as_str());
    assert_eq!(
        attached["flags"], SUBSCRIBE,
        "subscribe is the only mode: {attached}"
    );
    assert!(attached.get("channelSerial").is_none(), "{attached}");
    assert_eq!(attach(&mut alice, "chan").await["action"], 11);

    let mut bob = broker.connect_as(EVERYTHING, Some("bob")).await;
    bob.send(json!({"action": 15, "channel": "chan", "msgSerial": 0, "messages": messages()}))
        .await;
    assert_eq!(
        bob.next().await["action"],
        1,
        "bob's publish is acknowledged"
    );

    // The derived channel's frame comes first.
    let filtered = alice.next().await;
    let plain = alice.next().await;
    assert_eq!(plain["channel"], "chan");
    assert_eq!(data(&plain).len(), 6);
    assert_eq!(filtered["action"], 15, "{filtered}");
    assert_eq!(filtered["channel"], name.as_str());
    assert_eq!(data(&filtered), ["pass 1", "pass 2"]);
    let first = &filtered["messages"][0];
    assert_eq!(
        first["extras"]["headers"]["name"], "Lorem Choo",
        "extras kept: {first}"
    );
    assert_eq!(first["clientId"], "bob");
    assert_eq!(filtered["connectionId"], plain["connectionId"]);
    // The message ids are those of the plain channel's frame.
    assert_eq!(first["id"], plain["messages"][0]["id"]);
    assert_eq!(filtered["messages"][1]["id"], plain["messages"][2]["id"]);

    // A publish nothing of which passes reaches the plain channel only.
    bob.send(json!({"action": 15, "channel": "chan", "msgSerial": 1, "messages": [{"name": "end", "data": "x"}]}))
        .await;
    assert_eq!(bob.next().await["action"], 1);
    assert_eq!(data(&alice.next().await), ["x"]);
    alice.silent_for(200).await;

    // After DETACH of the derived channel, the plain one still gets everything.
    alice.send(json!({"action": 12, "channel": name})).await;
    let detached = alice.next().await;
    assert_eq!(
        (detached["action"].as_u64(), detached["channel"].as_str()),
        (Some(13), Some(name.as_str()))
    );
    bob.send(json!({"action": 15, "channel": "chan", "msgSerial": 2, "messages": messages()}))
        .await;
    assert_eq!(bob.next().await["action"], 1);
    assert_eq!(alice.next().await["channel"], "chan");
    alice.silent_for(200).await;
}

#[actix_web::test]
async fn two_filters_on_one_connection_and_a_rest_publish() {
    let broker = spawn_broker_qualified().await;
    let mut alice = broker.connect_as(EVERYTHING, Some("alice")).await;
    let high = derived("headers.cost >= `50`", "prices");
    let low = derived("headers.cost < `50`", "prices");
    assert_eq!(attach(&mut alice, &high).await["action"], 11);
    assert_eq!(attach(&mut alice, &low).await["action"], 11);
    let response = broker
        .with_key(reqwest::Method::POST, "/channels/prices/messages")
        .json(&json!([
            {"data": "a", "extras": {"headers": {"cost": 10}}},
            {"data": "b", "extras": {"headers": {"cost": 90}}},
            {"data": "c", "extras": {"headers": {"cost": "50"}}},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut frames = [alice.next().await, alice.next().await];
    frames.sort_by_key(|f| f["channel"].as_str().unwrap().to_string());
    let by_name = |n: &str| frames.iter().find(|f| f["channel"] == n).unwrap();
    assert_eq!(data(by_name(&high)), ["b"], "a string is not a number");
    assert_eq!(data(by_name(&low)), ["a"]);
    alice.silent_for(200).await;
}

#[actix_web::test]
async fn publish_and_presence_on_a_filtered_channel_are_refused_with_40160() {
    let broker = spawn_broker_qualified().await;
    let mut alice = broker.connect_as(EVERYTHING, Some("alice")).await;
    let name = derived(FILTER, "chan");
    assert_eq!(attach(&mut alice, &name).await["action"], 11);
    alice
        .send(json!({"action": 15, "channel": name, "msgSerial": 0, "messages": [{"name": "filtered", "data": "x"}]}))
        .await;
    let nack = alice.next().await;
    assert_eq!(
        (nack["action"].as_u64(), nack["msgSerial"].as_u64()),
        (Some(2), Some(0)),
        "{nack}"
    );
    assert_eq!(
        (
            nack["error"]["code"].as_u64(),
            nack["error"]["statusCode"].as_u64()
        ),
        (Some(40160), Some(401))
    );
    let message = nack["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("subscribe-only") && message.contains("publish on \"chan\""),
        "{message}"
    );

    alice
        .send(json!({"action": 14, "channel": name, "msgSerial": 1, "presence": [{"action": 2, "data": "hi"}]}))
        .await;
    let nack = alice.next().await;
    assert_eq!(
        (nack["action"].as_u64(), nack["error"]["code"].as_u64()),
        (Some(2), Some(40160)),
        "{nack}"
    );
    assert!(nack["error"]["message"]
        .as_str()
        .unwrap()
        .contains("presence on \"chan\""));

    // Nothing was published or entered: the plain channel is empty.
    assert_eq!(
        attach(&mut alice, "chan").await["flags"].as_u64().unwrap() & 1,
        0,
        "no members"
    );
    alice.silent_for(200).await;
}

#[actix_web::test]
async fn malformed_filters_fail_the_attach_with_40010() {
    let broker = spawn_broker_qualified().await;
    let mut alice = broker.connect_as(EVERYTHING, Some("alice")).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let oversized = format!("name == '{}'", "x".repeat(1100));
    for (name, says) in [
        ("[filter=%%%]chan".to_string(), "not base64"),
        (
            derived("data == 'x'", "chan"),
            "\"data\" cannot be filtered on",
        ),
        (derived("name == 'a' ||", "chan"), "at byte 14"),
        (derived("name = 'a'", "chan"), "use =="),
        (derived(&oversized, "chan"), "longer than 1024 bytes"),
        (
            derived(&format!("{}name{}", "(".repeat(40), ")".repeat(40)), "chan"),
            "more than 32 deep",
        ),
        (
            format!("[filter={}?rewind=1]chan", b64(FILTER)),
            "[filter=…?params]",
        ),
        (format!("[filter={}", b64(FILTER)), "not closed"),
        (derived(FILTER, ""), "must not be empty"),
        (derived(FILTER, "[meta]chan"), "must not start with '['"),
        ("[meta]chan".to_string(), "must not start with '['"),
    ] {
        let error = attach(&mut alice, &name).await;
        assert_eq!(
            (error["action"].as_u64(), error["channel"].as_str()),
            (Some(9), Some(name.as_str())),
            "{error}"
        );
        assert_eq!(
            (
                error["error"]["code"].as_u64(),
                error["error"]["statusCode"].as_u64()
            ),
            (Some(40010), Some(400)),
            "{error}"
        );
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(says),
            "{name}: {message} should say {says:?}"
        );
    }
    // The connection is still up.
    assert_eq!(
        attach(&mut alice, &derived(FILTER, "chan")).await["action"],
        11
    );
}

#[actix_web::test]
async fn a_filter_needs_subscribe_on_the_derived_name() {
    let broker = spawn_broker_qualified().await;
    let name = derived(FILTER, "chan");
    for capability in [
        r#"{"*":["*"]}"#,
        r#"{"chan":["subscribe"]}"#,
        r#"{"[*]*":["publish","presence"]}"#,
    ] {
        let mut socket = broker.connect_as(capability, Some("c")).await;
        let error = attach(&mut socket, &name).await;
        assert_eq!(
            (error["action"].as_u64(), error["error"]["code"].as_u64()),
            (Some(9), Some(40160)),
            "{capability}: {error}"
        );
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("[*]*") && message.contains("[filter]chan"),
            "{message}"
        );
    }
    let mut socket = broker
        .connect_as(r#"{"[*]*":["subscribe"]}"#, Some("c"))
        .await;
    assert_eq!(attach(&mut socket, &name).await["action"], 11);
}

#[actix_web::test]
async fn rewind_deltas_and_continuity_on_a_filtered_channel() {
    let broker = spawn_broker_qualified().await;
    let mut alice = broker.connect_as(EVERYTHING, Some("alice")).await;
    let name = derived(FILTER, "chan");
    for (params, says) in [
        (json!({"rewind": "1"}), "rewind is not supported"),
        (json!({"delta": "vcdiff"}), "deltas are not supported"),
    ] {
        alice
            .send(json!({"action": 10, "channel": name, "params": params}))
            .await;
        let error = alice.next().await;
        assert_eq!(
            (error["action"].as_u64(), error["error"]["code"].as_u64()),
            (Some(9), Some(40000)),
            "{error}"
        );
        assert!(
            error["error"]["message"].as_str().unwrap().contains(says),
            "{error}"
        );
    }
    // A messages published before the attach is not replayed to a reattach
    // that names a channelSerial: no RESUMED, no backlog.
    let mut bob = broker.connect_as(EVERYTHING, Some("bob")).await;
    bob.send(json!({"action": 15, "channel": "chan", "msgSerial": 0, "messages": messages()}))
        .await;
    assert_eq!(bob.next().await["action"], 1);
    alice
        .send(json!({"action": 10, "channel": name, "channelSerial": "0:0"}))
        .await;
    let attached = alice.next().await;
    assert_eq!(
        (attached["action"].as_u64(), attached["flags"].as_u64()),
        (Some(11), Some(SUBSCRIBE)),
        "{attached}"
    );
    alice.silent_for(200).await;
    // A reattach while attached keeps the attachment (RESUMED).
    let again = attach(&mut alice, &name).await;
    assert_eq!(again["flags"], SUBSCRIBE | RESUMED, "{again}");
    // Modes without SUBSCRIBE: attached, sent nothing.
    alice
        .send(json!({"action": 10, "channel": name, "flags": 1 << 17}))
        .await;
    assert_eq!(alice.next().await["flags"].as_u64().unwrap() & SUBSCRIBE, 0);
    bob.send(json!({"action": 15, "channel": "chan", "msgSerial": 1, "messages": messages()}))
        .await;
    assert_eq!(bob.next().await["action"], 1);
    alice.silent_for(200).await;
}

#[actix_web::test]
async fn rest_history_and_publish_of_a_filtered_channel_are_refused_with_40010() {
    let broker = spawn_broker_qualified().await;
    let name = derived(FILTER, "chan");
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let base = format!("/channels/{encoded}");
    for request in [
        broker.with_key(reqwest::Method::GET, &format!("{base}/messages")),
        broker.with_key(reqwest::Method::GET, &format!("{base}/presence/history")),
        broker
            .with_key(reqwest::Method::POST, &format!("{base}/messages"))
            .json(&json!({"name": "filtered"})),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], 40010, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("[filter=…] (subscription filters) only on a realtime attach"),
            "{message}"
        );
    }
}
