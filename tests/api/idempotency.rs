//! Idempotent publishing at its edges, over real HTTP and WebSocket against a
//! broker on port 0: a duplicate is still checked like any publish, an empty
//! id is no id, and REST and realtime share one channel's remembered ids.
//! What ably-js does is proved in tests/e2e/idempotency.test.mjs; expiry after
//! two minutes in src/broker/message.rs and src/broker/hub.rs (injected clock).

use ably_tokend::broker::Limits;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

async fn post(
    broker: &TestBroker,
    authorization: String,
    channel: &str,
    body: Value,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/channels/{channel}/messages",
            broker.port
        ))
        .header("authorization", authorization)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn key() -> String {
    format!("Basic {}", STANDARD.encode(API_KEY))
}

fn bearer(broker: &TestBroker, capability: &str, client_id: Option<&str>) -> String {
    let token = broker.jwt(capability, client_id, 60_000, now_ms());
    format!("Bearer {}", STANDARD.encode(token))
}

async fn history_ids(broker: &TestBroker, channel: &str) -> Vec<String> {
    let history: Value = send_json(
        reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/channels/{channel}/messages?direction=forwards",
                broker.port
            ))
            .header("authorization", key()),
    )
    .await;
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn a_rest_duplicate_answers_as_the_first_did_but_is_checked_like_any_publish() {
    let broker = spawn_broker(Limits::default()).await;
    let message = json!({"id": "order-1", "name": "status", "data": "paid"});
    let (status, first) = post(&broker, key(), "room", message.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["serials"], json!(["order-1"]));
    let (status, again) = post(&broker, key(), "room", message.clone()).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["serials"], first["serials"]);
    assert_eq!(again["channel"], "room");

    // A duplicate from a caller who may not publish, or may not name that
    // clientId, is refused as any publish is.
    let history_only = bearer(&broker, r#"{"room":["history"]}"#, Some("alice"));
    let (status, refused) = post(&broker, history_only, "room", message.clone()).await;
    assert_eq!(
        (status, refused["error"]["code"].clone()),
        (401, json!(40160))
    );
    let alice = bearer(&broker, r#"{"room":["publish"]}"#, Some("alice"));
    let mut as_bob = message.clone();
    as_bob["clientId"] = json!("bob");
    let (status, refused) = post(&broker, alice, "room", as_bob).await;
    assert_eq!(
        (status, refused["error"]["code"].clone()),
        (400, json!(40012))
    );

    // An empty id is no id: each such publish gets the broker's own.
    for _ in 0..2 {
        let (status, _) = post(&broker, key(), "room", json!({"id": "", "data": "x"})).await;
        assert_eq!(status, 201);
    }
    let ids = history_ids(&broker, "room").await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[0], "order-1");
    assert!(ids[1].starts_with("rest-") && ids[2].starts_with("rest-") && ids[1] != ids[2]);
}

#[actix_web::test]
async fn realtime_and_rest_share_a_channels_ids_and_every_repeat_is_acked() {
    let broker = spawn_broker(Limits::default()).await;
    let mut watcher = broker.connect_as(r#"{"*":["*"]}"#, Some("w")).await;
    watcher.send(json!({"action": 10, "channel": "room"})).await;
    assert_eq!(watcher.next().await["action"], 11);

    let (status, _) = post(&broker, key(), "room", json!({"id": "m-1", "data": "rest"})).await;
    assert_eq!(status, 201);
    let mut publisher = broker.connect_as(r#"{"*":["*"]}"#, Some("p")).await;
    for (serial, id) in ["m-1", "m-2", "m-2"].into_iter().enumerate() {
        publisher
            .send(json!({"action": 15, "channel": "room", "msgSerial": serial,
                         "messages": [{"id": id, "data": "realtime"}]}))
            .await;
        assert_eq!(
            publisher.next().await,
            json!({"action": 1, "msgSerial": serial, "count": 1}),
            "a repeat is acknowledged, not nacked"
        );
    }
    // A message without an id is never a duplicate.
    publisher
        .send(
            json!({"action": 15, "channel": "room", "msgSerial": 3, "messages": [{"data": "end"}]}),
        )
        .await;
    assert_eq!(publisher.next().await["action"], 1);

    let mut delivered = Vec::new();
    loop {
        let frame = watcher.next().await;
        assert_eq!(frame["action"], 15, "{frame}");
        let message = &frame["messages"][0];
        delivered.push((message["id"].clone(), message["data"].clone()));
        if message["data"] == "end" {
            break;
        }
    }
    assert_eq!(
        delivered[..2],
        [
            (json!("m-1"), json!("rest")),
            (json!("m-2"), json!("realtime"))
        ],
        "{delivered:?}"
    );
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    assert_eq!(history_ids(&broker, "room").await[..2], ["m-1", "m-2"]);
    assert_eq!(history_ids(&broker, "room").await.len(), 3);
}
