//! Broker protocol edge cases that the ably client never triggers, over a
//! real WebSocket and real HTTP against a broker on port 0.

use std::time::Duration;

use ably_tokend::broker::Limits;
use awc::ws::Frame;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn a_malformed_frame_gets_an_error_and_the_socket_closes() {
    let broker = spawn_broker(Limits::default()).await;
    let mut socket = broker.connect_as(r#"{"*":["*"]}"#, Some("u")).await;
    socket.send_raw("{not json").await;
    let error = socket.next().await;
    assert_eq!(error["action"], 9);
    assert_eq!(error["error"]["code"], 40000);
    assert_eq!(error["error"]["statusCode"], 400);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("malformed"));
    assert_eq!(socket.next().await, Value::Null);
}

#[actix_web::test]
async fn unknown_actions_are_ignored_and_heartbeats_are_echoed() {
    let broker = spawn_broker(Limits::default()).await;
    let mut socket = broker.connect_as(r#"{"*":["*"]}"#, Some("u")).await;
    socket.send(json!({"action": 99, "future": true})).await;
    socket.send(json!({"action": 0, "id": "ping-1"})).await;
    assert_eq!(socket.next().await, json!({"action": 0, "id": "ping-1"}));
}

#[actix_web::test]
async fn frames_sent_before_connected_arrives_are_handled_after_it() {
    let broker = spawn_broker(Limits::default()).await;
    let token = broker.jwt(r#"{"room":["subscribe"]}"#, Some("u"), 60_000, now_ms());
    let mut socket = broker.connect(&format!("access_token={token}")).await;
    // Sent without waiting for CONNECTED.
    socket.send(json!({"action": 10, "channel": "room"})).await;
    let first = socket.next().await;
    assert_eq!(first["action"], 4);
    assert_eq!(first["connectionDetails"]["clientId"], "u");
    assert_eq!(first["connectionDetails"]["maxMessageSize"], 65536);
    let attached = socket.next().await;
    assert_eq!(attached["action"], 11);
    assert_eq!(attached["channel"], "room");
    let subscribe_modes = (1 << 18) | (1 << 19);
    assert_eq!(
        attached["flags"], subscribe_modes,
        "subscribe only: no publish or presence mode"
    );
}

#[actix_web::test]
async fn oversized_messages_are_nacked_with_40009() {
    let broker = spawn_broker(Limits::default()).await;
    let mut socket = broker.connect_as(r#"{"*":["*"]}"#, Some("u")).await;
    let big = "x".repeat(70_000);
    socket
        .send(json!({"action": 15, "channel": "c", "msgSerial": 0, "messages": [{"name": "n", "data": big}]}))
        .await;
    let nack = socket.next().await;
    assert_eq!(nack["action"], 2);
    assert_eq!(nack["msgSerial"], 0);
    assert_eq!(nack["count"], 1);
    assert_eq!(nack["error"]["code"], 40009);
    // The connection stays usable.
    socket.send(json!({"action": 15, "channel": "c", "msgSerial": 1, "messages": [{"name": "n", "data": "small"}]})).await;
    assert_eq!(
        socket.next().await,
        json!({"action": 1, "msgSerial": 1, "count": 1})
    );
}

#[actix_web::test]
async fn frames_over_the_frame_limit_close_the_connection_with_an_error() {
    let broker = spawn_broker(Limits {
        max_frame_size: 1024,
        ..Limits::default()
    })
    .await;
    let mut socket = broker.connect_as(r#"{"*":["*"]}"#, Some("u")).await;
    socket
        .send_raw(&format!("{{\"action\":0,\"id\":\"{}\"}}", "y".repeat(4096)))
        .await;
    let error = socket.next().await;
    assert_eq!(error["action"], 9, "{error}");
    assert_eq!(error["error"]["code"], 40000);
    assert_eq!(socket.next().await, Value::Null);
}

#[actix_web::test]
async fn an_attach_flood_is_cut_off_at_the_channel_limit() {
    let broker = spawn_broker(Limits {
        max_channels_per_connection: 5,
        ..Limits::default()
    })
    .await;
    let mut socket = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("u")).await;
    for i in 0..8 {
        socket
            .send(json!({"action": 10, "channel": format!("flood-{i}")}))
            .await;
    }
    let mut attached = 0;
    let mut refused = Vec::new();
    for _ in 0..8 {
        let frame = socket.next().await;
        match frame["action"].as_u64() {
            Some(11) => attached += 1,
            Some(9) => refused.push(frame["error"]["code"].as_u64().unwrap()),
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(attached, 5);
    assert_eq!(refused, vec![90021, 90021, 90021]);
}

#[actix_web::test]
async fn capabilities_are_enforced_with_40160() {
    let broker = spawn_broker(Limits::default()).await;
    let mut socket = broker
        .connect_as(r#"{"room":["subscribe"]}"#, Some("u"))
        .await;
    socket
        .send(json!({"action": 10, "channel": "secret"}))
        .await;
    let error = socket.next().await;
    assert_eq!(error["action"], 9);
    assert_eq!(error["channel"], "secret");
    assert_eq!(
        error["error"],
        json!({"code": 40160, "statusCode": 401, "message": error["error"]["message"]})
    );
    socket
        .send(json!({"action": 15, "channel": "room", "msgSerial": 0, "messages": [{"data": "x"}]}))
        .await;
    let nack = socket.next().await;
    assert_eq!(
        (nack["action"].as_u64(), nack["error"]["code"].as_u64()),
        (Some(2), Some(40160))
    );
    socket
        .send(json!({"action": 14, "channel": "room", "msgSerial": 1, "presence": [{"action": 2}]}))
        .await;
    let nack = socket.next().await;
    assert_eq!(
        (nack["action"].as_u64(), nack["error"]["code"].as_u64()),
        (Some(2), Some(40160))
    );
}

#[actix_web::test]
async fn bad_and_expired_credentials_get_ablys_codes_as_frames() {
    let broker = spawn_broker(Limits::default()).await;
    let mut wrong_key = broker.connect("key=appId.keyId:wrong").await;
    let error = wrong_key.next().await;
    assert_eq!(
        (error["action"].as_u64(), error["error"]["code"].as_u64()),
        (Some(9), Some(40101))
    );

    let mut nothing = broker.connect("").await;
    assert_eq!(nothing.next().await["error"]["code"], 40101);

    let expired = broker.jwt(r#"{"*":["*"]}"#, Some("u"), 1_000, now_ms() - 10_000);
    let mut socket = broker.connect(&format!("access_token={expired}")).await;
    let disconnected = socket.next().await;
    assert_eq!(
        disconnected["action"], 6,
        "token errors disconnect so the client renews"
    );
    assert_eq!(disconnected["error"]["code"], 40142);

    let mut socket = broker.connect("access_token=not-a-token-we-issued").await;
    assert_eq!(socket.next().await["error"]["code"], 40143);
}

#[actix_web::test]
async fn a_token_that_expires_mid_connection_gets_disconnected_40142() {
    let broker = spawn_broker(Limits::default()).await;
    let token = broker.jwt(r#"{"*":["*"]}"#, Some("u"), 1_500, now_ms());
    let mut socket = broker.connect(&format!("access_token={token}")).await;
    assert_eq!(socket.next().await["action"], 4);
    // With 30 s or less to live the token is not asked to renew first (no
    // AUTH, RTN22, as Ably does not ask): the next frame is the disconnection
    // at expiry.
    let disconnected = socket.next().await;
    assert_eq!(disconnected["action"], 6);
    assert_eq!(disconnected["error"]["code"], 40142);
}

#[actix_web::test]
async fn a_connection_asked_to_reauthenticate_carries_on_with_its_new_token() {
    let broker = spawn_broker(Limits::default()).await;
    // AUTH comes 30 s before expiry: within a second or so of connecting.
    let short = broker.jwt(r#"{"*":["*"]}"#, Some("u"), 31_200, now_ms());
    let mut socket = broker.connect(&format!("access_token={short}")).await;
    let connected = socket.next().await;
    assert_eq!(connected["action"], 4);
    assert_eq!(
        socket.next().await,
        json!({"action": 17}),
        "AUTH before expiry"
    );
    // 30 s before the token's own expiry (its `exp` is whole seconds, so
    // the exact instant depends on when in the second it was minted; the
    // timing rule itself is unit-tested in connection.rs).
    let exp_ms = jwt_exp_secs(&short) * 1000;
    assert!(
        now_ms() <= exp_ms - 29_000,
        "AUTH came at {} ms, later than 30 s before the token expires at {exp_ms} ms",
        now_ms()
    );

    // The client answers in band (RTC8a) with a token for the same clientId.
    let renewed = broker.jwt(r#"{"*":["*"]}"#, Some("u"), 60_000, now_ms());
    socket
        .send(json!({"action": 17, "auth": {"accessToken": renewed}}))
        .await;
    let again = socket.next().await;
    assert_eq!(again["action"], 4, "CONNECTED again: {again}");
    assert_eq!(again["connectionId"], connected["connectionId"]);
    // No second AUTH for the new token (it is asked 30 s before its own
    // expiry), and nothing else.
    socket.silent_for(1_500).await;
}

#[actix_web::test]
async fn msgpack_connections_get_binary_msgpack_frames() {
    let broker = spawn_broker(Limits::default()).await;
    let token = broker.jwt(r#"{"*":["*"]}"#, Some("u"), 60_000, now_ms());
    let url = format!(
        "ws://127.0.0.1:{}/?format=msgpack&access_token={token}",
        broker.port
    );
    let (_response, mut framed) = awc::Client::new().ws(url).connect().await.unwrap();
    let frame = framed.next().await.unwrap().unwrap();
    let Frame::Binary(bytes) = frame else {
        panic!("expected a binary frame, got {frame:?}")
    };
    let connected: Value = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(connected["action"], 4);
    assert_eq!(connected["connectionDetails"]["clientId"], "u");
}

#[actix_web::test]
async fn rest_errors_have_ablys_shape() {
    let broker = spawn_broker(Limits::default()).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", broker.port);
    let time: Vec<u64> = send_json(client.get(format!("{base}/time"))).await;
    assert!(time[0] >= now_ms() - 5_000);

    let token = broker.jwt(r#"{"room":["subscribe"]}"#, Some("u"), 60_000, now_ms());
    use base64::Engine;
    let bearer = base64::engine::general_purpose::STANDARD.encode(&token);
    let response = client
        .get(format!("{base}/channels/room/messages"))
        .header("authorization", format!("Bearer {bearer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-ably-errorcode"], "40160");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40160);
    assert_eq!(body["error"]["statusCode"], 401);

    let forged = json!({"keyName": KEY_NAME, "timestamp": now_ms(), "nonce": "0123456789abcdef0123", "mac": "AAAA", "capability": "{\"*\":[\"*\"]}"});
    let response = client
        .post(format!("{base}/keys/{KEY_NAME}/requestToken"))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40101);
}

#[actix_web::test]
async fn a_jwt_with_an_absurd_expiry_does_not_break_the_connection() {
    let broker = spawn_broker(Limits::default()).await;
    let token = broker.jwt(
        r#"{"*":["*"]}"#,
        Some("u"),
        u64::MAX - 1_000_000_000_000,
        now_ms(),
    );
    let mut socket = broker.connect(&format!("access_token={token}")).await;
    assert_eq!(socket.next().await["action"], 4);
    socket.send(json!({"action": 0, "id": "still-here"})).await;
    assert_eq!(
        socket.next().await,
        json!({"action": 0, "id": "still-here"})
    );
}

#[actix_web::test]
async fn a_narrower_token_in_band_stops_delivery_and_presence() {
    let broker = spawn_broker(Limits::default()).await;
    let mut alice = broker
        .connect_as(
            r#"{"room":["subscribe","publish","presence"]}"#,
            Some("alice"),
        )
        .await;
    let mut bob = broker
        .connect_as(r#"{"room":["publish","presence"]}"#, Some("bob"))
        .await;
    alice.send(json!({"action": 10, "channel": "room"})).await;
    assert_eq!(alice.next().await["action"], 11);
    alice.send(json!({"action": 14, "channel": "room", "msgSerial": 0, "presence": [{"action": 2, "data": "hi"}]})).await;
    // ACK, then her own presence event.
    let mut seen = vec![
        alice.next().await["action"].as_u64(),
        alice.next().await["action"].as_u64(),
    ];
    seen.sort();
    assert_eq!(seen, vec![Some(1), Some(14)]);

    let narrower = broker.jwt(r#"{"room":["publish"]}"#, Some("alice"), 60_000, now_ms());
    alice
        .send(json!({"action": 17, "auth": {"accessToken": narrower}}))
        .await;
    assert_eq!(
        alice.next().await["action"],
        4,
        "re-auth answered with CONNECTED"
    );

    bob.send(
        json!({"action": 15, "channel": "room", "msgSerial": 0, "messages": [{"data": "after"}]}),
    )
    .await;
    assert_eq!(bob.next().await["action"], 1);
    alice.silent_for(500).await;
    // Her member left with the presence capability.
    let rest = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/channels/room/presence",
            broker.port
        ))
        .basic_auth(KEY_NAME, Some(KEY_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.json::<Value>().await.unwrap(), json!([]));
    // A SYNC request is refused now too: nothing comes back.
    alice.send(json!({"action": 16, "channel": "room"})).await;
    alice.silent_for(300).await;
}

#[actix_web::test]
async fn presence_and_publish_cannot_get_around_the_channel_limits() {
    let broker = spawn_broker(Limits {
        max_channels_per_connection: 3,
        ..Limits::default()
    })
    .await;
    let mut socket = broker
        .connect_as(r#"{"*":["presence","publish"]}"#, Some("u"))
        .await;
    let mut codes = Vec::new();
    for i in 0..5u64 {
        socket
            .send(json!({"action": 14, "channel": format!("p-{i}"), "msgSerial": i, "presence": [{"action": 2}]}))
            .await;
        let reply = socket.next().await;
        codes.push(if reply["action"] == 1 {
            0
        } else {
            reply["error"]["code"].as_u64().unwrap()
        });
    }
    assert_eq!(codes, vec![0, 0, 0, 90021, 90021]);
    socket
        .send(json!({"action": 15, "channel": "", "msgSerial": 5, "messages": [{"data": "x"}]}))
        .await;
    let nack = socket.next().await;
    assert_eq!(
        (nack["action"].as_u64(), nack["error"]["code"].as_u64()),
        (Some(2), Some(40010))
    );
    socket
        .send(json!({"action": 15, "channel": "c", "messages": [{"data": "no serial"}]}))
        .await;
    let error = socket.next().await;
    assert_eq!(
        (error["action"].as_u64(), error["error"]["code"].as_u64()),
        (Some(9), Some(40000))
    );
}

#[actix_web::test]
async fn a_client_that_stops_reading_is_dropped() {
    let broker = spawn_broker(Limits {
        outbox_frames: 8,
        send_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    // The reader attaches, then never reads again.
    let mut reader = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("r")).await;
    reader.send(json!({"action": 10, "channel": "flood"})).await;
    assert_eq!(reader.next().await["action"], 11);
    let mut writer = broker.connect_as(r#"{"*":["publish"]}"#, Some("w")).await;
    let big = "z".repeat(60_000);
    for serial in 0..200u64 {
        writer
            .send(json!({"action": 15, "channel": "flood", "msgSerial": serial, "messages": [{"data": big}]}))
            .await;
        let _ack = writer.next().await;
    }
    let metrics = format!("http://127.0.0.1:{}/metrics", broker.port);
    eventually("only the writer to be left", || async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        let connections = text
            .lines()
            .find(|l| l.starts_with("ably_tokend_broker_connections "))
            .unwrap();
        connections == "ably_tokend_broker_connections 1"
    })
    .await;
    drop(reader);
}

#[actix_web::test]
async fn rest_and_realtime_apply_the_same_client_id_rule() {
    let broker = spawn_broker(Limits::default()).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", broker.port);
    use base64::Engine;
    let publish = |token: String, body: Value| {
        let bearer = base64::engine::general_purpose::STANDARD.encode(token);
        client
            .post(format!("{base}/channels/room/messages"))
            .header("authorization", format!("Bearer {bearer}"))
            .json(&body)
            .send()
    };
    let alice = broker.jwt(r#"{"room":["publish"]}"#, Some("alice"), 60_000, now_ms());
    let wildcard = broker.jwt(r#"{"room":["publish"]}"#, Some("*"), 60_000, now_ms());
    // REST: an identified client speaks only for itself, a wildcard token
    // for anyone, and a clientId must be a string.
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            publish(alice.clone(), json!({"clientId": "alice"}))
                .await
                .unwrap()
        ),
        201
    );
    assert_eq!(
        status(
            publish(alice.clone(), json!({"clientId": "bob"}))
                .await
                .unwrap()
        ),
        400
    );
    assert_eq!(
        status(
            publish(wildcard.clone(), json!({"clientId": "bob"}))
                .await
                .unwrap()
        ),
        201
    );
    let refused = publish(wildcard, json!({"clientId": 7})).await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()["x-ably-errorcode"], "40012");

    // Realtime: the same answers, as NACKs.
    let mut socket = broker
        .connect_as(r#"{"room":["publish"]}"#, Some("alice"))
        .await;
    let mut codes = Vec::new();
    for (serial, client_id) in [json!("alice"), json!("bob"), json!(7)]
        .into_iter()
        .enumerate()
    {
        socket
            .send(json!({"action": 15, "channel": "room", "msgSerial": serial, "messages": [{"clientId": client_id}]}))
            .await;
        let reply = socket.next().await;
        codes.push(reply["error"]["code"].as_u64().unwrap_or(0));
    }
    assert_eq!(codes, vec![0, 40012, 40012]);
}

#[actix_web::test]
async fn actions_the_broker_does_not_implement_are_nacked_when_they_expect_an_ack() {
    let broker = spawn_broker(Limits::default()).await;
    let mut socket = broker.connect_as(r#"{"*":["*"]}"#, Some("u")).await;
    // OBJECT (19, LiveObjects) and ANNOTATION (21) carry a msgSerial.
    for (action, what) in [(19, "OBJECT (LiveObjects)"), (21, "ANNOTATION")] {
        socket
            .send(json!({"action": action, "channel": "room", "msgSerial": action, "state": []}))
            .await;
        let nack = socket.next().await;
        assert_eq!(nack["action"], 2, "{nack}");
        assert_eq!(nack["msgSerial"], action);
        assert_eq!(nack["count"], 1);
        assert_eq!(nack["error"]["code"], 40000);
        let message = nack["error"]["message"].as_str().unwrap();
        assert!(message.contains(what), "{message}");
    }
    // One without a msgSerial is ignored, and the connection carries on.
    socket.send(json!({"action": 19, "channel": "room"})).await;
    socket.send(json!({"action": 10, "channel": "room"})).await;
    assert_eq!(socket.next().await["action"], 11);
}

/// The `exp` claim of a compact JWT, in seconds.
fn jwt_exp_secs(jwt: &str) -> u64 {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["exp"]
        .as_u64()
        .unwrap()
}
