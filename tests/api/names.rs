//! Channel names and `::` capabilities at the broker, over a real WebSocket
//! and real HTTP: Ably's naming rules answered with 40010 and status 400,
//! and the Spaces SDK's `<space>::$space` / `<space>::$cursors` channels
//! allowed by `::` patterns and nothing wider.

use ably_tokend::broker::Limits;
use serde_json::{json, Value};

use crate::helpers::*;

/// Names Ably refuses (<https://ably.com/docs/channels>), with a word of
/// the reason the broker gives.
const REFUSED: &[(&str, &str)] = &[
    (":board", "start with ':'"),
    ("[meta]log", "start with '['"),
    ("[?rewind=1]board", "start with '['"),
    ("board\nspace", "line break"),
    ("board\u{2028}space", "line break"),
];

fn assert_40010(error: &Value, why: &str) {
    assert_eq!(error["code"], 40010, "{error}");
    assert_eq!(error["statusCode"], 400, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("invalid channel name"), "{message}");
    assert!(message.contains(why), "{message} should say {why:?}");
}

#[actix_web::test]
async fn realtime_refuses_ablys_invalid_names_with_40010() {
    let broker = spawn_broker(Limits::default()).await;
    let mut socket = broker.connect_as(r#"{"[*]*":["*"]}"#, Some("u")).await;
    for (i, (name, why)) in REFUSED.iter().enumerate() {
        socket.send(json!({"action": 10, "channel": name})).await;
        let error = socket.next().await;
        assert_eq!(error["action"], 9, "attach {name:?}: {error}");
        assert_eq!(error["channel"], *name);
        assert_40010(&error["error"], why);

        socket
            .send(
                json!({"action": 15, "channel": name, "msgSerial": i, "messages": [{"data": "x"}]}),
            )
            .await;
        let nack = socket.next().await;
        assert_eq!(nack["action"], 2, "publish to {name:?}: {nack}");
        assert_eq!(nack["msgSerial"], i);
        assert_40010(&nack["error"], why);
    }
    // The connection is still usable, and allowed names attach.
    for name in ["board::$space", "private:a:b", "caf\u{e9} \u{1F600}"] {
        socket.send(json!({"action": 10, "channel": name})).await;
        let attached = socket.next().await;
        assert_eq!(attached["action"], 11, "attach {name:?}: {attached}");
        assert_eq!(attached["channel"], name);
    }
}

#[actix_web::test]
async fn rest_refuses_ablys_invalid_names_with_40010() {
    let broker = spawn_broker(Limits::default()).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", broker.port);
    for (name, why) in REFUSED {
        let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let response = client
            .post(format!("{base}/channels/{encoded}/messages"))
            .json(&json!({"data": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{name:?}");
        assert_eq!(response.headers()["x-ably-errorcode"], "40010");
        let body: Value = response.json().await.unwrap();
        assert_40010(&body["error"], why);
    }
}

#[actix_web::test]
async fn a_space_scoped_token_reaches_its_spaces_channels_and_no_others() {
    let broker = spawn_broker(Limits::default()).await;
    let mut socket = broker
        .connect_as(
            r#"{"board::*":["presence","publish","subscribe"],"lobby:*":["subscribe"]}"#,
            Some("u"),
        )
        .await;
    for name in ["board::$space", "board::$cursors", "lobby::$space"] {
        socket.send(json!({"action": 10, "channel": name})).await;
        let attached = socket.next().await;
        assert_eq!(attached["action"], 11, "attach {name:?}: {attached}");
    }
    socket
        .send(json!({"action": 15, "channel": "board::$cursors", "msgSerial": 0, "messages": [{"name": "cursorUpdate", "data": "{}"}]}))
        .await;
    // The echo of our own message and the ACK, in either order.
    let mut frames = [socket.next().await, socket.next().await];
    frames.sort_by_key(|f| f["action"].as_u64());
    assert_eq!(frames[0], json!({"action": 1, "msgSerial": 0, "count": 1}));
    assert_eq!(frames[1]["action"], 15);
    assert_eq!(frames[1]["channel"], "board::$cursors");

    // `board::*` is the space named "board", not the namespace `board:`.
    for name in ["board:other::$space", "boards::$space", "board"] {
        socket.send(json!({"action": 10, "channel": name})).await;
        let refused = socket.next().await;
        assert_eq!(refused["action"], 9, "attach {name:?}: {refused}");
        assert_eq!(refused["error"]["code"], 40160, "{refused}");
    }
    socket
        .send(json!({"action": 15, "channel": "lobby::$cursors", "msgSerial": 1, "messages": [{"data": "x"}]}))
        .await;
    let nack = socket.next().await;
    assert_eq!(nack["action"], 2, "{nack}");
    assert_eq!(nack["error"]["code"], 40160, "{nack}");
}
