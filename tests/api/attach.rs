//! ATTACH with params (RTL4k) and modes (RTL4l) over a real WebSocket: the
//! `rewind` backlog, its bounds and errors, and delivery by granted mode.

use ably_tokend::broker::Limits;
use serde_json::{json, Value};

use crate::helpers::*;

const HAS_PRESENCE: u64 = 1;
const HAS_BACKLOG: u64 = 1 << 1;
const RESUMED: u64 = 1 << 2;
const PRESENCE: u64 = 1 << 16;
const PUBLISH: u64 = 1 << 17;
const SUBSCRIBE: u64 = 1 << 18;
const PRESENCE_SUBSCRIBE: u64 = 1 << 19;
const ANNOTATION_PUBLISH: u64 = 1 << 21;

/// `GET /channels/{name}`'s occupancy metrics, with the API key.
async fn occupancy(broker: &TestBroker, channel: &str) -> Value {
    let body: Value = broker
        .with_key(reqwest::Method::GET, &format!("/channels/{channel}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["status"]["occupancy"]["metrics"].clone()
}

/// Publishes `data` as messages named `m` in one frame and waits for the ACK.
async fn publish(
    socket: &mut Socket,
    channel: &str,
    serial: u64,
    data: impl IntoIterator<Item = u64>,
) {
    let messages: Vec<Value> = data
        .into_iter()
        .map(|n| json!({"name": "m", "data": n}))
        .collect();
    socket
        .send(json!({"action": 15, "channel": channel, "msgSerial": serial, "messages": messages}))
        .await;
    let ack = socket.next().await;
    assert_eq!(ack["action"], 1, "{ack}");
}

/// The `data` of the next `n` frames, each a one-message MESSAGE.
async fn backlog(socket: &mut Socket, channel: &str, n: usize) -> Vec<u64> {
    let mut data = Vec::with_capacity(n);
    for _ in 0..n {
        let frame = socket.next().await;
        assert_eq!(
            (frame["action"].as_u64(), frame["channel"].as_str()),
            (Some(15), Some(channel)),
            "{frame}"
        );
        let messages = frame["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["name"], "m");
        assert!(
            messages[0]["id"].is_string() && messages[0]["timestamp"].is_u64(),
            "{frame}"
        );
        data.push(messages[0]["data"].as_u64().unwrap());
    }
    data
}

#[actix_web::test]
async fn rewind_by_count_delivers_the_newest_messages_in_order_then_live_ones() {
    let broker = spawn_broker(Limits::default()).await;
    let mut publisher = broker.connect_as(r#"{"*":["publish"]}"#, Some("p")).await;
    publish(&mut publisher, "news", 0, 0..5).await;
    let mut reader = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("r")).await;
    reader
        .send(json!({"action": 10, "channel": "news", "params": {"rewind": "3", "delta": "vcdiff", "unknown": "x"}}))
        .await;
    let attached = reader.next().await;
    assert_eq!(attached["action"], 11);
    assert_eq!(
        attached["flags"],
        SUBSCRIBE | PRESENCE_SUBSCRIBE | HAS_BACKLOG
    );
    // Only the params recognised and validated are echoed (RTL4k1).
    assert_eq!(
        attached["params"],
        json!({"rewind": "3", "delta": "vcdiff"})
    );
    assert_eq!(backlog(&mut reader, "news", 3).await, vec![2, 3, 4]);
    publish(&mut publisher, "news", 1, [5]).await;
    assert_eq!(backlog(&mut reader, "news", 1).await, vec![5]);

    // Attaching again is a reattach: RESUMED, no backlog, params echoed.
    reader
        .send(json!({"action": 10, "channel": "news", "params": {"rewind": "3"}}))
        .await;
    let again = reader.next().await;
    assert_eq!(
        again["flags"],
        SUBSCRIBE | PRESENCE_SUBSCRIBE | RESUMED,
        "{again}"
    );
    reader.silent_for(200).await;

    // A resume (RTL4c1: the ATTACH carries a channelSerial) gets no backlog.
    let mut resumer = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("r")).await;
    resumer
        .send(json!({"action": 10, "channel": "news", "channelSerial": "x:1", "params": {"rewind": "3"}}))
        .await;
    let resumed = resumer.next().await;
    assert_eq!(
        resumed["flags"],
        SUBSCRIBE | PRESENCE_SUBSCRIBE,
        "{resumed}"
    );
    resumer.silent_for(200).await;

    // Nothing to rewind: no HAS_BACKLOG, params still echoed.
    reader
        .send(json!({"action": 10, "channel": "empty", "params": {"rewind": "10"}}))
        .await;
    let empty = reader.next().await;
    assert_eq!(
        (empty["flags"].as_u64(), &empty["params"]),
        (
            Some(SUBSCRIBE | PRESENCE_SUBSCRIBE),
            &json!({"rewind": "10"})
        )
    );
    reader.silent_for(200).await;
}

#[actix_web::test]
async fn rewind_is_bounded_to_100_messages_and_by_time_to_what_is_recent() {
    let broker = spawn_broker(Limits::default()).await;
    let mut publisher = broker.connect_as(r#"{"*":["publish"]}"#, Some("p")).await;
    publish(&mut publisher, "busy", 0, 0..130).await;
    let mut reader = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("r")).await;
    reader
        .send(json!({"action": 10, "channel": "busy", "params": {"rewind": "1000"}}))
        .await;
    assert_eq!(
        reader.next().await["flags"].as_u64().unwrap() & HAS_BACKLOG,
        HAS_BACKLOG
    );
    assert_eq!(
        backlog(&mut reader, "busy", 100).await,
        (30..130).collect::<Vec<_>>()
    );
    reader.silent_for(200).await;

    // By time: everything of the last minute, capped the same way.
    let mut timed = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("t")).await;
    timed
        .send(json!({"action": 10, "channel": "busy", "params": {"rewind": "1m"}}))
        .await;
    let attached = timed.next().await;
    assert_eq!(attached["params"], json!({"rewind": "1m"}));
    assert_eq!(
        backlog(&mut timed, "busy", 100).await,
        (30..130).collect::<Vec<_>>()
    );
    // "0s" reaches back to nothing.
    publish(&mut publisher, "busy2", 1, [1]).await;
    actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    timed
        .send(json!({"action": 10, "channel": "busy2", "params": {"rewind": "0s"}}))
        .await;
    let attached = timed.next().await;
    assert_eq!(
        attached["flags"].as_u64().unwrap() & HAS_BACKLOG,
        0,
        "{attached}"
    );
    timed.silent_for(200).await;
}

#[actix_web::test]
async fn a_bad_rewind_fails_the_attach_with_40000_and_the_connection_goes_on() {
    let broker = spawn_broker(Limits::default()).await;
    let mut socket = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("u")).await;
    for (params, needle) in [
        (json!({"rewind": "ten"}), "invalid rewind \"ten\""),
        (json!({"rewind": "-1"}), "invalid rewind \"-1\""),
        (json!({"rewind": "1.5m"}), "invalid rewind \"1.5m\""),
        (
            json!({"rewind": true}),
            "params must be an object of strings",
        ),
        (
            json!({"modes": "publish,read"}),
            "invalid modes \"publish,read\"",
        ),
        (json!("rewind=3"), "params must be an object of strings"),
    ] {
        socket
            .send(json!({"action": 10, "channel": "room", "params": params}))
            .await;
        let error = socket.next().await;
        assert_eq!(
            (error["action"].as_u64(), error["channel"].as_str()),
            (Some(9), Some("room")),
            "{error}"
        );
        assert_eq!(error["error"]["code"], 40000);
        assert_eq!(error["error"]["statusCode"], 400);
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    // Not attached by the failed attempts, and the connection still works.
    socket
        .send(json!({"action": 10, "channel": "room", "params": {"rewind": "1"}}))
        .await;
    let attached = socket.next().await;
    assert_eq!(attached["action"], 11);
    assert_eq!(
        attached["flags"].as_u64().unwrap() & RESUMED,
        0,
        "{attached}"
    );
}

#[actix_web::test]
async fn requested_modes_are_intersected_with_the_capability_and_decide_delivery() {
    let broker = spawn_broker(Limits::default()).await;
    let mut publisher = broker
        .connect_as(r#"{"*":["publish","presence"]}"#, Some("p"))
        .await;
    publish(&mut publisher, "room", 0, [0]).await;
    let mut watcher = broker.connect_as(r#"{"*":["*"]}"#, Some("w")).await;
    publisher
        .send(json!({"action": 14, "channel": "room", "msgSerial": 1, "presence": [{"action": 2}]}))
        .await;
    assert_eq!(publisher.next().await["action"], 1);

    // Publish only: PUBLISH echoed, nothing delivered, no backlog, no SYNC.
    watcher
        .send(json!({"action": 10, "channel": "room", "flags": PUBLISH, "params": {"rewind": "5"}}))
        .await;
    let attached = watcher.next().await;
    assert_eq!(attached["flags"], PUBLISH, "{attached}");
    // Subscribe asked for where the capability has only publish and presence.
    let mut limited = broker
        .connect_as(r#"{"*":["publish","presence"]}"#, Some("l"))
        .await;
    limited
        .send(json!({"action": 10, "channel": "room", "flags": PUBLISH | SUBSCRIBE | PRESENCE}))
        .await;
    assert_eq!(limited.next().await["flags"], PUBLISH | PRESENCE);
    // Presence events only: the SYNC, then presence, never messages.
    let mut members = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("m")).await;
    members
        .send(json!({"action": 10, "channel": "room", "flags": PRESENCE_SUBSCRIBE, "params": {"rewind": "5"}}))
        .await;
    let attached = members.next().await;
    assert_eq!(
        attached["flags"],
        PRESENCE_SUBSCRIBE | HAS_PRESENCE,
        "{attached}"
    );
    assert_eq!(members.next().await["action"], 16);

    publish(&mut publisher, "room", 2, [1]).await;
    publisher
        .send(json!({"action": 14, "channel": "room", "msgSerial": 3, "presence": [{"action": 4, "data": "busy"}]}))
        .await;
    assert_eq!(publisher.next().await["action"], 1);
    let presence = members.next().await;
    assert_eq!(
        (
            presence["action"].as_u64(),
            presence["presence"][0]["data"].as_str()
        ),
        (Some(14), Some("busy")),
        "{presence}"
    );
    members.silent_for(200).await;
    watcher.silent_for(200).await;
    // The publish-only attachment still publishes.
    publish(&mut watcher, "room", 0, [2]).await;
    // Occupancy counts subscribers by granted mode: `members` gets presence
    // only, `watcher` and `limited` nothing (CHM2).
    let metrics = occupancy(&broker, "room").await;
    assert_eq!(
        (
            metrics["subscribers"].as_u64(),
            metrics["presenceSubscribers"].as_u64()
        ),
        (Some(0), Some(1)),
        "{metrics}"
    );

    // Without modes the capability decides, as before.
    watcher.send(json!({"action": 10, "channel": "room"})).await;
    let reattached = watcher.next().await;
    assert_eq!(
        reattached["flags"],
        PUBLISH
            | PRESENCE
            | SUBSCRIBE
            | PRESENCE_SUBSCRIBE
            | ANNOTATION_PUBLISH
            | HAS_PRESENCE
            | RESUMED,
        "{reattached}"
    );
    publish(&mut publisher, "room", 4, [3]).await;
    assert_eq!(backlog(&mut watcher, "room", 1).await, vec![3]);
}

#[actix_web::test]
async fn a_modes_param_wins_over_the_flags_is_echoed_and_its_modes_are_enforced() {
    let broker = spawn_broker(Limits::default()).await;
    let mut client = broker.connect_as(r#"{"*":["*"]}"#, Some("c")).await;
    // No modes asked: Ably's defaults, annotation_publish included (TB2d).
    client.send(json!({"action": 10, "channel": "plain"})).await;
    let attached = client.next().await;
    assert_eq!(
        attached["flags"],
        PRESENCE | PUBLISH | SUBSCRIBE | PRESENCE_SUBSCRIBE | ANNOTATION_PUBLISH,
        "{attached}"
    );
    assert!(attached.get("params").is_none(), "{attached}");
    // A capability without annotation-publish does not get the mode.
    let mut narrow = broker
        .connect_as(r#"{"*":["publish","subscribe"]}"#, Some("n"))
        .await;
    narrow.send(json!({"action": 10, "channel": "plain"})).await;
    assert_eq!(
        narrow.next().await["flags"],
        PUBLISH | SUBSCRIBE | PRESENCE_SUBSCRIBE
    );

    // `params.modes` decides over the flags (ably-js sends both when a
    // channel has `modes` and `params.modes`), and is echoed as sent.
    client
        .send(json!({"action": 10, "channel": "room", "flags": PUBLISH | PRESENCE_SUBSCRIBE, "params": {"modes": "subscribe"}}))
        .await;
    let attached = client.next().await;
    assert_eq!(attached["flags"], SUBSCRIBE, "{attached}");
    assert_eq!(attached["params"], json!({"modes": "subscribe"}));
    // Without the PUBLISH and PRESENCE modes, publishing and entering are
    // refused with 40160, saying which mode is missing.
    client
        .send(json!({"action": 15, "channel": "room", "msgSerial": 0, "messages": [{"data": "x"}]}))
        .await;
    let nack = client.next().await;
    assert_eq!(
        (nack["action"].as_u64(), nack["msgSerial"].as_u64()),
        (Some(2), Some(0)),
        "{nack}"
    );
    assert_eq!(nack["error"]["code"], 40160);
    assert_eq!(nack["error"]["statusCode"], 401);
    assert!(
        nack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without the publish mode"),
        "{nack}"
    );
    client
        .send(json!({"action": 14, "channel": "room", "msgSerial": 1, "presence": [{"action": 2}]}))
        .await;
    let nack = client.next().await;
    assert_eq!(
        (nack["action"].as_u64(), nack["error"]["code"].as_u64()),
        (Some(2), Some(40160)),
        "{nack}"
    );
    assert!(
        nack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without the presence mode"),
        "{nack}"
    );
    // The same client on a channel attached with default modes publishes.
    client
        .send(
            json!({"action": 15, "channel": "plain", "msgSerial": 2, "messages": [{"data": "x"}]}),
        )
        .await;
    assert_eq!(client.next().await["action"], 1);
    let echoed = client.next().await;
    assert_eq!(
        (echoed["action"].as_u64(), echoed["channel"].as_str()),
        (Some(15), Some("plain"))
    );

    // presence,subscribe: entering works, publishing does not.
    client
        .send(json!({"action": 10, "channel": "room", "params": {"modes": "presence,subscribe"}}))
        .await;
    let attached = client.next().await;
    assert_eq!(
        attached["flags"],
        PRESENCE | SUBSCRIBE | RESUMED,
        "{attached}"
    );
    assert_eq!(attached["params"], json!({"modes": "presence,subscribe"}));
    client
        .send(json!({"action": 14, "channel": "room", "msgSerial": 3, "presence": [{"action": 2}]}))
        .await;
    assert_eq!(client.next().await["action"], 1);
    client
        .send(json!({"action": 15, "channel": "room", "msgSerial": 4, "messages": [{"data": "x"}]}))
        .await;
    assert_eq!(client.next().await["error"]["code"], 40160);
}

#[actix_web::test]
async fn a_delta_subscriber_is_sent_vcdiff_deltas_against_the_previous_message() {
    let broker = spawn_broker(Limits::default()).await;
    let mut publisher = broker.connect_as(r#"{"*":["*"]}"#, Some("p")).await;
    publisher
        .send(json!({"action": 15, "channel": "prices", "msgSerial": 0, "messages": [{"data": "before"}]}))
        .await;
    assert_eq!(publisher.next().await["action"], 1);
    let mut deltas = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("d")).await;
    deltas
        .send(json!({"action": 10, "channel": "prices", "params": {"delta": "vcdiff"}}))
        .await;
    let attached = deltas.next().await;
    assert_eq!(attached["params"], json!({"delta": "vcdiff"}), "{attached}");
    let mut plain = broker.connect_as(r#"{"*":["subscribe"]}"#, Some("w")).await;
    plain.send(json!({"action": 10, "channel": "prices"})).await;
    assert_eq!(plain.next().await["action"], 11);

    let payloads = [
        r#"{"price":100,"item":"widget"}"#,
        r#"{"price":101,"item":"widget"}"#,
    ];
    for (serial, data) in payloads.iter().enumerate() {
        publisher
            .send(json!({"action": 15, "channel": "prices", "msgSerial": serial + 1, "messages": [{"data": data, "encoding": "json"}]}))
            .await;
        assert_eq!(publisher.next().await["action"], 1);
    }
    // The first message since the attach is sent whole: the subscriber
    // has no base yet (the message before it was never sent to it).
    let first = deltas.next().await;
    let first = &first["messages"][0];
    assert_eq!(
        (first["data"].as_str(), first["encoding"].as_str()),
        (Some(payloads[0]), Some("json")),
        "{first}"
    );
    assert!(first.get("extras").is_none(), "{first}");
    // The second is a delta from the first, named by its id (RTL20).
    let second = deltas.next().await;
    let second = &second["messages"][0];
    assert_eq!(second["encoding"], "json/utf-8/vcdiff/base64", "{second}");
    assert_eq!(
        second["extras"]["delta"],
        json!({"format": "vcdiff", "from": first["id"]})
    );
    use base64::Engine;
    let delta = base64::engine::general_purpose::STANDARD
        .decode(second["data"].as_str().unwrap())
        .unwrap();
    // RFC 3284's header, then a window with the whole previous payload as
    // its source segment.
    assert_eq!(
        &delta[..7],
        &[0xD6, 0xC3, 0xC4, 0, 0, 1, payloads[0].len() as u8]
    );
    assert!(delta.len() < payloads[1].len() + 20, "{delta:?}");
    // A subscriber that did not ask gets every message whole.
    for data in payloads {
        let frame = plain.next().await;
        assert_eq!(frame["messages"][0]["data"], data, "{frame}");
        assert!(frame["messages"][0].get("extras").is_none());
    }
    // History holds the messages as published.
    let page: Value = broker
        .with_key(
            reqwest::Method::GET,
            "/channels/prices/messages?direction=forwards",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["before", payloads[0], payloads[1]]);
}
