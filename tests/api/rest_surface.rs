//! The broker's REST surface at its edges, over real HTTP against a broker on
//! port 0: page links and page bounds, `/stats`, batch publish bodies,
//! `X-Ably-ClientId`, channel status and msgpack answers. What ably-js does
//! on the happy path is proved in tests/e2e/rest-surface.test.mjs.

use ably_tokend::broker::Limits;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

struct Rest {
    client: reqwest::Client,
    base: String,
    broker: TestBroker,
}

impl Rest {
    async fn start() -> Rest {
        let broker = spawn_broker(Limits::default()).await;
        Rest {
            client: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{}", broker.port),
            broker,
        }
    }

    /// A request with the API key (Basic auth, allowed from loopback).
    fn with_key(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header(
                "authorization",
                format!("Basic {}", STANDARD.encode(API_KEY)),
            )
    }

    /// A request with a JWT for `capability` and `client_id`.
    fn with_token(
        &self,
        method: reqwest::Method,
        path: &str,
        capability: &str,
        client_id: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let token = self.broker.jwt(capability, client_id, 60_000, now_ms());
        self.client
            .request(method, format!("{}{path}", self.base))
            .header(
                "authorization",
                format!("Bearer {}", STANDARD.encode(token)),
            )
    }
}

/// The status, the Ably error code and message of a refused request, checked
/// to be in Ably's shape (body and headers agree).
async fn refusal(request: reqwest::RequestBuilder) -> (u16, u64, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/json");
    let header_code: u64 = response.headers()["x-ably-errorcode"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["statusCode"], status, "{body}");
    assert_eq!(error["code"], header_code, "{body}");
    (
        status,
        header_code,
        error["message"].as_str().unwrap().to_string(),
    )
}

async fn ok_json(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap();
    assert!(status < 300, "{status}: {body}");
    (status, headers, body)
}

use reqwest::Method;

#[actix_web::test]
async fn history_pages_carry_first_current_and_next_links_with_every_parameter() {
    let rest = Rest::start().await;
    for n in 0..3 {
        ok_json(
            rest.with_key(Method::POST, "/channels/room/messages")
                .json(&json!({"name": "n", "data": n})),
        )
        .await;
    }
    let (_, headers, page) = ok_json(rest.with_key(
        Method::GET,
        "/channels/room/messages?limit=2&direction=forwards&start=0&end=99999999999999",
    ))
    .await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    let link = headers["link"].to_str().unwrap();
    let links: Vec<&str> = link.split(", ").collect();
    let query = "limit=2&direction=forwards&start=0&end=99999999999999";
    assert_eq!(links[0], format!("<./messages?{query}>; rel=\"first\""));
    assert_eq!(links[1], format!("<./messages?{query}>; rel=\"current\""));
    let next = links[2]
        .strip_prefix(&format!("<./messages?{query}&cursor="))
        .and_then(|rest| rest.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("a next link: {link}"));
    let cursor: u64 = next.parse().unwrap();

    // The last page: first and current, no next; current names its cursor.
    let (_, headers, page) = ok_json(rest.with_key(
        Method::GET,
        &format!("/channels/room/messages?{query}&cursor={cursor}"),
    ))
    .await;
    assert_eq!(page[0]["data"], 2);
    let link = headers["link"].to_str().unwrap();
    assert!(!link.contains("rel=\"next\""), "{link}");
    assert!(
        link.contains(&format!(
            "<./messages?{query}&cursor={cursor}>; rel=\"current\""
        )),
        "{link}"
    );

    // Presence history links to ./history, which ably-js asks of the same path.
    let (_, headers, page) =
        ok_json(rest.with_key(Method::GET, "/channels/room/presence/history")).await;
    assert_eq!(page, json!([]));
    assert!(headers["link"]
        .to_str()
        .unwrap()
        .starts_with("<./history?limit=100&direction=backwards>; rel=\"first\""));
}

#[actix_web::test]
async fn page_queries_out_of_bounds_are_refused_with_40003() {
    let rest = Rest::start().await;
    for path in [
        "/channels/room/messages?limit=0",
        "/channels/room/messages?limit=1001",
        "/channels/room/messages?limit=ten",
        "/channels/room/messages?direction=sideways",
        "/channels/room/messages?start=10&end=5",
        "/channels/room/presence/history?limit=1001",
        "/channels/room/presence/history?cursor=-1",
        "/stats?limit=0",
        "/stats?unit=fortnight",
    ] {
        let (status, code, message) = refusal(rest.with_key(Method::GET, path)).await;
        assert_eq!((status, code), (400, 40003), "{path}: {message}");
    }
    // Presence history needs the history capability, as message history does.
    let (status, code, _) = refusal(rest.with_token(
        Method::GET,
        "/channels/room/presence/history",
        r#"{"room":["subscribe","presence"]}"#,
        Some("u"),
    ))
    .await;
    assert_eq!((status, code), (401, 40160));
}

#[actix_web::test]
async fn stats_answers_an_empty_page_to_a_caller_with_the_stats_capability() {
    let rest = Rest::start().await;
    let (_, headers, body) = ok_json(rest.with_token(
        Method::GET,
        "/stats?unit=day&limit=5&direction=forwards",
        r#"{"room":["subscribe"],"*":["stats"]}"#,
        None,
    ))
    .await;
    assert_eq!(body, json!([]));
    assert_eq!(
        headers["link"],
        "<./stats?limit=5&direction=forwards>; rel=\"first\", \
         <./stats?limit=5&direction=forwards>; rel=\"current\""
    );
    let response = rest
        .client
        .get(format!("{}/stats", rest.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Any other operation, even on every channel, is not enough.
    for capability in [
        r#"{"room":["subscribe"]}"#,
        r#"{"*":["publish","subscribe","history","presence"]}"#,
    ] {
        let (status, code, message) =
            refusal(rest.with_token(Method::GET, "/stats", capability, None)).await;
        assert_eq!((status, code), (401, 40160), "{capability}: {message}");
        assert!(message.contains("stats"), "{message}");
    }
}

#[actix_web::test]
async fn batch_publish_bodies_are_checked_before_anything_is_published() {
    let rest = Rest::start().await;
    let message = json!({"name": "m", "data": "x"});
    let many_channels: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let bad_bodies = [
        json!("a string"),
        json!([]),
        json!({"messages": [message]}),
        json!({"channels": [], "messages": [message]}),
        json!({"channels": [7], "messages": [message]}),
        json!({"channels": ["room"]}),
        json!({"channels": ["room"], "messages": []}),
        json!({"channels": ["room"], "messages": [1]}),
        json!({"channels": many_channels, "messages": [message]}),
        json!([{"channels": ["room"], "messages": [message]}, {"channels": "room", "messages": "x"}]),
    ];
    for body in bad_bodies {
        let (status, code, message) =
            refusal(rest.with_key(Method::POST, "/messages").json(&body)).await;
        assert_eq!((status, code), (400, 40000), "{body}: {message}");
    }
    // A malformed body is not JSON at all.
    let (status, code, _) = refusal(
        rest.with_key(Method::POST, "/messages")
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!((status, code), (400, 40000));
    // Nothing of the refused batches reached the channel.
    let (_, _, history) = ok_json(rest.with_key(Method::GET, "/channels/room/messages")).await;
    assert_eq!(history, json!([]));
}

#[actix_web::test]
async fn batch_publish_fails_channel_by_channel_with_each_ones_error() {
    let rest = Rest::start().await;
    let capability = r#"{"room":["publish"],"room:*":["publish"]}"#;
    let big = "x".repeat(70_000);
    let body = json!([
        {"channels": ["room", "elsewhere", "", "room:a"], "messages": [{"name": "m", "data": "hi"}]},
        {"channels": "room:b", "messages": {"name": "big", "data": big}},
        {"channels": ["room:c"], "messages": [{"name": "m", "clientId": "bob"}]},
    ]);
    let (status, _, answers) = ok_json(
        rest.with_token(Method::POST, "/messages", capability, Some("alice"))
            .json(&body),
    )
    .await;
    assert_eq!(status, 201);
    let codes = |spec: &Value| -> Vec<(String, u64)> {
        spec["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["channel"].as_str().unwrap().to_string(),
                    r["error"]["code"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    assert_eq!(
        codes(&answers[0]),
        vec![
            ("room".into(), 0),
            ("elsewhere".into(), 40160),
            ("".into(), 40010),
            ("room:a".into(), 0)
        ]
    );
    assert_eq!(answers[0]["successCount"], 2);
    assert_eq!(answers[0]["failureCount"], 2);
    assert_eq!(codes(&answers[1]), vec![("room:b".into(), 40009)]);
    assert_eq!(codes(&answers[2]), vec![("room:c".into(), 40012)]);
    let ok = &answers[0]["results"][0];
    assert_eq!(
        ok["serials"],
        json!([format!("{}:0", ok["messageId"].as_str().unwrap())])
    );
    // What succeeded is stored, under the token's clientId.
    let (_, _, history) = ok_json(rest.with_key(Method::GET, "/channels/room:a/messages")).await;
    assert_eq!(history[0]["clientId"], "alice");
    assert_eq!(
        history[0]["id"],
        format!(
            "{}:0",
            answers[0]["results"][3]["messageId"].as_str().unwrap()
        )
    );
    let (_, _, history) = ok_json(rest.with_key(Method::GET, "/channels/room:b/messages")).await;
    assert_eq!(history, json!([]));
}

#[actix_web::test]
async fn x_ably_client_id_identifies_a_key_client_and_must_match_a_token() {
    let rest = Rest::start().await;
    let publish = |request: reqwest::RequestBuilder, client_id: &str| {
        request
            .header("x-ably-clientid", client_id.to_string())
            .json(&json!({"name": "m"}))
    };
    let bot = STANDARD.encode("bot ✓");
    ok_json(publish(
        rest.with_key(Method::POST, "/channels/room/messages"),
        &bot,
    ))
    .await;
    let (_, _, history) = ok_json(rest.with_key(Method::GET, "/channels/room/messages")).await;
    assert_eq!(history[0]["clientId"], "bot ✓");

    // The header is bounded and must be base64 of a clientId.
    for bad in [
        "not base64!".to_string(),
        STANDARD.encode("*"),
        String::new(),
        STANDARD.encode([0xff, 0xfe]),
        "A".repeat(1025),
    ] {
        let (status, code, _) = refusal(publish(
            rest.with_key(Method::POST, "/channels/room/messages"),
            &bad,
        ))
        .await;
        assert_eq!((status, code), (400, 40000), "{bad:?}");
    }

    // A token's own clientId may be repeated; another one is refused.
    let capability = r#"{"room":["publish"]}"#;
    ok_json(publish(
        rest.with_token(
            Method::POST,
            "/channels/room/messages",
            capability,
            Some("alice"),
        ),
        &STANDARD.encode("alice"),
    ))
    .await;
    let (status, code, _) = refusal(publish(
        rest.with_token(
            Method::POST,
            "/channels/room/messages",
            capability,
            Some("alice"),
        ),
        &STANDARD.encode("bob"),
    ))
    .await;
    assert_eq!((status, code), (401, 40102));
    // A token without a clientId cannot take one either.
    let (status, code, _) = refusal(publish(
        rest.with_token(Method::POST, "/channels/room/messages", capability, None),
        &STANDARD.encode("bob"),
    ))
    .await;
    assert_eq!((status, code), (401, 40102));
}

#[actix_web::test]
async fn channel_status_needs_channel_metadata_and_counts_nothing_for_an_idle_channel() {
    let rest = Rest::start().await;
    let (_, _, body) = ok_json(rest.with_token(
        Method::GET,
        "/channels/room",
        r#"{"room":["channel-metadata"]}"#,
        None,
    ))
    .await;
    assert_eq!(
        body,
        json!({"channelId": "room", "status": {"isActive": false, "occupancy": {"metrics": {
            "connections": 0, "presenceConnections": 0, "presenceMembers": 0,
            "presenceSubscribers": 0, "publishers": 0, "subscribers": 0,
        }}}})
    );
    let (status, code, _) = refusal(rest.with_token(
        Method::GET,
        "/channels/room",
        r#"{"room":["subscribe","publish","presence","history"]}"#,
        None,
    ))
    .await;
    assert_eq!((status, code), (401, 40160));
}

#[actix_web::test]
async fn every_route_answers_msgpack_when_asked() {
    let rest = Rest::start().await;
    let msgpack = |request: reqwest::RequestBuilder| async move {
        let response = request
            .header("accept", "application/x-msgpack")
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(response.headers()["content-type"], "application/x-msgpack");
        let bytes = response.bytes().await.unwrap();
        rmp_serde::from_slice::<Value>(&bytes).unwrap()
    };
    let time = msgpack(rest.client.get(format!("{}/time", rest.base))).await;
    assert!(time[0].as_u64().unwrap() >= now_ms() - 5_000);
    let published = msgpack(
        rest.with_key(Method::POST, "/channels/room/messages")
            .json(&json!({"name": "m"})),
    )
    .await;
    assert_eq!(published["channel"], "room");
    let batch = msgpack(
        rest.with_key(Method::POST, "/messages")
            .json(&json!({"channels": ["room"], "messages": [{"name": "b"}]})),
    )
    .await;
    // A lone spec object is answered with its per-channel results, flat.
    assert_eq!(batch[0]["channel"], "room");
    assert!(batch[0]["messageId"].is_string(), "{batch}");
    let history = msgpack(rest.with_key(Method::GET, "/channels/room/messages")).await;
    assert_eq!(history[0]["name"], "b");
    for path in [
        "/channels/room/presence",
        "/channels/room/presence/history",
        "/stats",
    ] {
        assert_eq!(msgpack(rest.with_key(Method::GET, path)).await, json!([]));
    }
    let status = msgpack(rest.with_key(Method::GET, "/channels/room")).await;
    assert_eq!(status["channelId"], "room");
    // And JSON otherwise, /time included.
    let (_, headers, time) = ok_json(rest.client.get(format!("{}/time", rest.base))).await;
    assert_eq!(headers["content-type"], "application/json");
    assert!(time[0].is_u64());
    // The idle timeout is said, as the sidecar says it (src/keep_alive.rs).
    assert_eq!(headers["keep-alive"], "timeout=75");
}
