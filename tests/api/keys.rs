//! Keys with capabilities (`[[ably.keys]]`): what the sidecar signs and what
//! the broker grants is never more than the key's capability.

use std::time::Duration;

use ably_tokend::broker::{Broker, Limits};
use ably_tokend::capability::Capability;
use ably_tokend::clock;
use ably_tokend::config::BrokerSettings;
use ably_tokend::signing::{sign_token_request, ApiKey, Grant};
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

/// The app's config with the test key given as an `[[ably.keys]]` table
/// restricted to `capability` (TOML inline table).
fn config_with_key_capability(jwks: &JwksServer, capability: &str) -> String {
    config_text(&Issuers::clerk(jwks), "").replace(
        &format!("api_key = \"{API_KEY}\""),
        &format!("[[ably.keys]]\nkey = \"{API_KEY}\"\ncapability = {capability}"),
    )
}

#[actix_web::test]
async fn the_sidecar_narrows_what_the_policy_grants_to_the_signing_keys_capability() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let config = config_with_key_capability(&jwks, r#"{ "orders:*" = ["publish", "subscribe"] }"#);
    let app = TestApp::spawn_with(&config, TEST_POLICY).await;
    let session = key.sign(clerk_header(), &clerk_claims("user_agent", Some("support")));
    // The policy grants announcements, orders:* (four operations) and
    // orders:user_agent:*; the key allows publish and subscribe on orders:*.
    let narrowed = r#"{"orders:*":["publish","subscribe"],"orders:user_agent:*":["subscribe"]}"#;

    let request = ok_json(app.get_token("/api/ably-token", &session).await).await;
    assert_eq!(request["keyName"], KEY_NAME);
    assert_eq!(request["capability"], narrowed);
    assert_eq!(request["mac"], independent_mac(&request));

    let response = app.get_token("/api/ably-jwt", &session).await;
    assert_eq!(response.status(), 200);
    let claims = independent_jwt_claims(&response.text().await.unwrap());
    assert_eq!(claims["x-ably-capability"], narrowed);
    assert_eq!(claims["x-ably-clientId"], "user_agent");

    // A client can still narrow further, never widen.
    let asked = app
        .request(
            reqwest::Method::GET,
            "/api/ably-token?capability=%7B%22orders%3A1%22%3A%5B%22publish%22%2C%22history%22%5D%7D",
        )
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    let request = ok_json(asked).await;
    assert_eq!(request["capability"], r#"{"orders:1":["publish"]}"#);
    assert_eq!(request["mac"], independent_mac(&request));
}

#[actix_web::test]
async fn a_grant_the_signing_key_cannot_hold_is_a_403_naming_the_key() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let config = config_with_key_capability(&jwks, r#"{ "billing:*" = ["*"] }"#);
    let app = TestApp::spawn_with(&config, TEST_POLICY).await;
    let session = key.sign(clerk_header(), &clerk_claims("user_2xYz", None));
    for path in ["/api/ably-token", "/api/ably-jwt"] {
        let body = assert_error(
            app.get_token(path, &session).await,
            403,
            "outside_key_capability",
        )
        .await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(KEY_NAME), "{message}");
        assert!(message.contains(r#"{"billing:*":["*"]}"#), "{message}");
        assert!(message.contains("announcements"), "{message}");
        assert!(!message.contains(KEY_SECRET), "{message}");
    }
}

fn restricted_key() -> ApiKey {
    let key: ApiKey = API_KEY.parse().unwrap();
    key.with_capability(Capability::parse_json(r#"{"orders:*":["publish","subscribe"]}"#).unwrap())
}

async fn broker_with(key: ApiKey) -> String {
    init_test_logging();
    let settings = BrokerSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        history_max_messages: 100,
        history_max_age: Duration::from_secs(120),
        ..BrokerSettings::default()
    };
    let broker = Broker::build(&settings, vec![key], clock::system(), Limits::default()).unwrap();
    let base = format!("http://127.0.0.1:{}", broker.port());
    actix_web::rt::spawn(broker.run_until_stopped());
    base
}

/// A TokenRequest as ably-js's `createTokenRequest` makes it, with
/// `capability` (JSON text) or none.
fn token_request(key: &ApiKey, capability: Option<&str>) -> Value {
    let parsed = Capability::parse_json(capability.unwrap_or(r#"{"*":["*"]}"#)).unwrap();
    let mut request = serde_json::to_value(sign_token_request(
        key,
        &Grant {
            capability: &parsed,
            client_id: None,
            ttl_ms: 60_000,
            issued_ms: now_ms(),
        },
        ably_tokend::signing::new_nonce(),
    ))
    .unwrap();
    if capability.is_none() {
        request["capability"] = json!("");
        request["mac"] = json!(independent_mac(&request));
        request.as_object_mut().unwrap().remove("capability");
    }
    request
}

#[actix_web::test]
async fn the_broker_holds_tokens_and_key_connections_to_the_keys_capability() {
    let key = restricted_key();
    let base = broker_with(key.clone()).await;
    let client = reqwest::Client::new();
    let exchange = |request: Value| {
        client
            .post(format!("{base}/keys/{KEY_NAME}/requestToken"))
            .json(&request)
            .send()
    };

    // No capability: exactly the key's.
    let details: Value = ok_json(exchange(token_request(&key, None)).await.unwrap()).await;
    assert_eq!(
        details["capability"],
        r#"{"orders:*":["publish","subscribe"]}"#
    );
    // A wider one: narrowed to the key's.
    let asked = r#"{"*":["*"],"orders:1":["history","publish"]}"#;
    let details: Value = ok_json(exchange(token_request(&key, Some(asked))).await.unwrap()).await;
    assert_eq!(
        details["capability"],
        r#"{"orders:*":["publish","subscribe"],"orders:1":["publish"]}"#
    );
    let token = details["token"].as_str().unwrap().to_string();
    // One outside it: 40160.
    let outside = exchange(token_request(&key, Some(r#"{"chat:*":["publish"]}"#)))
        .await
        .unwrap();
    assert_eq!(outside.status(), 401);
    let body: Value = outside.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40160);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(KEY_NAME),
        "{body}"
    );

    // The token and the key itself publish inside, not outside.
    let bearer = base64::engine::general_purpose::STANDARD.encode(&token);
    let publish =
        |auth: reqwest::RequestBuilder| auth.json(&json!({"name": "n", "data": "d"})).send();
    for (channel, expected) in [("orders:1", 201), ("chat:1", 401)] {
        let url = format!("{base}/channels/{channel}/messages");
        let by_token = publish(
            client
                .post(&url)
                .header("authorization", format!("Bearer {bearer}")),
        )
        .await
        .unwrap();
        assert_eq!(by_token.status(), expected, "token on {channel}");
        let by_key = publish(client.post(&url).basic_auth(KEY_NAME, Some(KEY_SECRET)))
            .await
            .unwrap();
        assert_eq!(by_key.status(), expected, "key on {channel}");
        if expected == 401 {
            let body: Value = by_key.json().await.unwrap();
            assert_eq!(body["error"]["code"], 40160, "{body}");
        }
    }

    // Over a WebSocket with the key: attaching outside fails with 40160.
    let port = base.rsplit(':').next().unwrap();
    let mut socket =
        Socket::connect(&format!("ws://127.0.0.1:{port}/?format=json&key={API_KEY}")).await;
    assert_eq!(socket.next().await["action"], 4);
    socket
        .send(json!({"action": 10, "channel": "chat:1"}))
        .await;
    let error = socket.next().await;
    assert_eq!(error["action"], 9, "{error}");
    assert_eq!(error["error"]["code"], 40160, "{error}");
    socket
        .send(json!({"action": 10, "channel": "orders:1"}))
        .await;
    let attached = socket.next().await;
    assert_eq!(attached["action"], 11, "{attached}");
}
