//! `ably-tokend broker --sandbox`: the local-sandbox contract ably-js's test
//! suite provisions its apps through (ably-js
//! `test/common/modules/testapp_manager.js`), over real HTTP.

use std::process::Command;

use ably_tokend::broker::{Limits, Sandbox, SandboxError, SANDBOX_MAX_APPS, SANDBOX_MAX_BODY};
use ably_tokend::clock;
use ably_tokend::config::BrokerSettings;
use serde_json::{json, Value};

use crate::helpers::*;

/// The `post_apps` object of ably-common's `test-resources/test-app-setup.json`
/// (keys, namespaces and one presence fixture channel), as ably-js posts it.
fn post_apps() -> Value {
    json!({
        "limits": { "presence": { "maxMembers": 250 } },
        "keys": [
            {},
            { "capability": "{ \"cansubscribe:*\":[\"subscribe\"], \"canpublish:*\":[\"publish\"], \"canpublish:andpresence\":[\"presence\",\"publish\"], \"pushenabled:*\":[\"publish\",\"subscribe\",\"push-subscribe\"], \"pushenabled:admin:*\":[\"publish\",\"subscribe\",\"push-admin\"] }" },
            { "capability": "{ \"channel0\":[\"publish\"], \"channel1\":[\"publish\"], \"channel2\":[\"publish\", \"subscribe\"], \"channel3\":[\"subscribe\"], \"channel4\":[\"presence\", \"publish\", \"subscribe\"], \"channel5\":[\"presence\"], \"channel6\":[\"*\"] }" },
            { "capability": "{ \"*\":[\"subscribe\"] }" },
            { "revocableTokens": true },
            { "capability": "{ \"[*]*\":[\"*\"] }" }
        ],
        "namespaces": [
            { "id": "persisted", "persisted": true },
            { "id": "pushenabled", "pushEnabled": true },
            { "id": "mutable", "mutableMessages": true }
        ],
        "channels": [{
            "name": "persisted:presence_fixtures",
            "presence": [
                { "clientId": "client_bool", "data": "true" },
                { "clientId": "client_decoded", "data": "{\"example\":{\"json\":\"Object\"}}", "encoding": "json" },
                { "clientId": "client_encoded", "data": "HO4cYSP8LybPYBPZPHQOtuD53yrD3YV3NBoTEYBh4U0N1QXHbtkfsDfTspKeLQFt", "encoding": "json/utf-8/cipher+aes-128-cbc/base64" }
            ]
        }]
    })
}

struct TestSandbox {
    port: u16,
    http: reqwest::Client,
}

impl TestSandbox {
    async fn spawn() -> TestSandbox {
        init_test_logging();
        let sandbox = Sandbox::build(
            "127.0.0.1:0".parse().unwrap(),
            BrokerSettings::default(),
            clock::system(),
            Limits::default(),
        )
        .unwrap();
        let port = sandbox.port();
        actix_web::rt::spawn(sandbox.run_until_stopped());
        TestSandbox {
            port,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn create(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/apps"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn create_app(&self) -> Value {
        let response = self.create(&post_apps()).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn delete(&self, app_id: &str, key: Option<&str>) -> reqwest::Response {
        let mut request = self.http.delete(self.url(&format!("/apps/{app_id}")));
        if let Some(key) = key {
            let (name, secret) = key.split_once(':').unwrap();
            request = request.basic_auth(name, Some(secret));
        }
        request.send().await.unwrap()
    }
}

/// A request to the app's own broker, with Basic auth of `key`.
fn at_app(app: &Value, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
    let (name, secret) = key.split_once(':').unwrap();
    reqwest::Client::new()
        .request(
            method,
            format!(
                "http://{}:{}{path}",
                app["endpoint"].as_str().unwrap(),
                app["port"]
            ),
        )
        .basic_auth(name, Some(secret))
}

fn key_str(app: &Value, i: usize) -> String {
    app["keys"][i]["keyStr"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn post_apps_answers_what_ably_js_reads_and_the_app_holds_its_keys_and_fixtures() {
    let sandbox = TestSandbox::spawn().await;
    let app = sandbox.create_app().await;

    // testapp_manager.js checks the counts, then routes clients to endpoint:port.
    let keys = app["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 6, "{app}");
    assert_eq!(app["namespaces"].as_array().unwrap().len(), 3);
    assert_eq!(
        app["namespaces"][2],
        json!({"id": "mutable", "mutableMessages": true})
    );
    assert_eq!(app["endpoint"], "127.0.0.1");
    assert_eq!(app["tls"], false);
    let port = app["port"].as_u64().unwrap();
    assert!(port > 0 && port != u64::from(sandbox.port), "{app}");
    let app_id = app["appId"].as_str().unwrap();
    for key in keys {
        let name = key["keyName"].as_str().unwrap();
        assert!(name.starts_with(&format!("{app_id}.")), "{key}");
        assert_eq!(
            key["keyStr"].as_str().unwrap(),
            format!("{name}:{}", key["keySecret"].as_str().unwrap())
        );
    }
    // Same order as asked; capability strings canonical, the default unrestricted.
    assert_eq!(keys[0]["capability"], r#"{"*":["*"]}"#);
    assert_eq!(keys[3]["capability"], r#"{"*":["subscribe"]}"#);
    assert_eq!(keys[5]["capability"], r#"{"[*]*":["*"]}"#);
    assert_eq!(keys[4]["revocableTokens"], true);
    assert_eq!(keys[1]["revocableTokens"], false);
    let parsed: Value = serde_json::from_str(keys[2]["capability"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["channel3"], json!(["subscribe"]));

    // The app's broker holds the keys with their capabilities.
    let restricted = key_str(&app, 2);
    let published = at_app(
        &app,
        reqwest::Method::POST,
        "/channels/channel0/messages",
        &restricted,
    )
    .json(&json!({"name": "n", "data": "inside"}))
    .send()
    .await
    .unwrap();
    assert_eq!(published.status(), 201);
    let refused = at_app(
        &app,
        reqwest::Method::POST,
        "/channels/channel3/messages",
        &restricted,
    )
    .json(&json!({"name": "n", "data": "outside"}))
    .send()
    .await
    .unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40160, "{body}");

    // The fixture's members are present, with data and encoding as given.
    let members: Value = at_app(
        &app,
        reqwest::Method::GET,
        "/channels/persisted:presence_fixtures/presence",
        &key_str(&app, 0),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 3, "{members:?}");
    let decoded = members
        .iter()
        .find(|m| m["clientId"] == "client_decoded")
        .unwrap();
    assert_eq!(decoded["data"], r#"{"example":{"json":"Object"}}"#);
    assert_eq!(decoded["encoding"], "json");
    assert_eq!(decoded["action"], 1, "PRESENT");

    // A key of another app is unknown here: apps are isolated.
    let other = sandbox.create_app().await;
    assert_ne!(other["port"], app["port"]);
    let foreign = at_app(
        &app,
        reqwest::Method::GET,
        "/channels/x/messages",
        &key_str(&other, 0),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(foreign.status(), 401);
}

#[actix_web::test]
async fn delete_needs_the_first_key_and_stops_the_apps_broker() {
    let sandbox = TestSandbox::spawn().await;
    let app = sandbox.create_app().await;
    let app_id = app["appId"].as_str().unwrap();

    let unknown = sandbox.delete("nosuch", Some(&key_str(&app, 0))).await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40400, "{body}");

    for wrong in [
        None,
        Some(key_str(&app, 1)),
        Some(format!("{app_id}.x:guess")),
    ] {
        let response = sandbox.delete(app_id, wrong.as_deref()).await;
        assert_eq!(response.status(), 401, "{wrong:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], 40101, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("first key"),
            "{body}"
        );
    }
    // Refused deletes left the app working.
    let time = at_app(&app, reqwest::Method::GET, "/time", &key_str(&app, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(time.status(), 200);

    let deleted = sandbox.delete(app_id, Some(&key_str(&app, 0))).await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let gone = at_app(&app, reqwest::Method::GET, "/time", &key_str(&app, 0))
        .send()
        .await;
    assert!(
        gone.is_err(),
        "the app's broker no longer listens: {gone:?}"
    );
    let again = sandbox.delete(app_id, Some(&key_str(&app, 0))).await;
    assert_eq!(again.status(), 404);
}

#[actix_web::test]
async fn post_stats_is_accepted_from_an_apps_first_key_only() {
    let sandbox = TestSandbox::spawn().await;
    let app = sandbox.create_app().await;
    let stats = json!([{ "intervalId": "2024-01-01:00:00", "inbound": { "realtime": { "messages": { "count": 50 } } } }]);
    let post = |key: Option<String>| {
        let mut request = sandbox.http.post(sandbox.url("/stats")).json(&stats);
        if let Some(key) = key {
            let (name, secret) = key
                .split_once(':')
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .unwrap();
            request = request.basic_auth(name, Some(secret));
        }
        request.send()
    };
    let anonymous = post(None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40101, "{body}");
    assert_eq!(post(Some(key_str(&app, 1))).await.unwrap().status(), 401);
    assert_eq!(post(Some(key_str(&app, 0))).await.unwrap().status(), 201);
    let not_json = sandbox
        .http
        .post(sandbox.url("/stats"))
        .basic_auth(
            app["keys"][0]["keyName"].as_str().unwrap(),
            app["keys"][0]["keySecret"].as_str(),
        )
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    // Not kept: the app's /stats is an empty page (README, "Conformance").
    let page: Value = at_app(&app, reqwest::Method::GET, "/stats", &key_str(&app, 0))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page, json!([]));
}

#[actix_web::test]
async fn post_apps_refuses_bodies_it_cannot_honour_with_a_reason() {
    let sandbox = TestSandbox::spawn().await;
    let cases = [
        (json!({"keys": "six"}), "post_apps"),
        (
            json!({"keys": [{"capability": "{\"a\":[\"fly\"]}"}]}),
            "keys[0].capability",
        ),
        (
            json!({"channels": [{"name": "c", "presence": [{"clientId": ""}]}]}),
            "presence[0].clientId",
        ),
        (json!({"keys": vec![json!({}); 17]}), "at most 16 keys"),
    ];
    for (body, reason) in cases {
        let response = sandbox.create(&body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], 40000, "{error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(reason),
            "{reason}: {error}"
        );
    }
    let huge = json!({"keys": [{}], "pad": "x".repeat(SANDBOX_MAX_BODY)});
    assert_eq!(sandbox.create(&huge).await.status(), 413);
    let wrong_route = sandbox.http.get(sandbox.url("/apps")).send().await.unwrap();
    assert_eq!(wrong_route.status(), 404);
    let body: Value = wrong_route.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST /apps"),
        "{body}"
    );
}

#[actix_web::test]
async fn the_number_of_apps_is_bounded_and_delete_frees_a_place() {
    let sandbox = TestSandbox::spawn().await;
    let small = json!({"keys": [{}]});
    let mut apps = Vec::new();
    for _ in 0..SANDBOX_MAX_APPS {
        let response = sandbox.create(&small).await;
        assert_eq!(response.status(), 201);
        apps.push(response.json::<Value>().await.unwrap());
    }
    let refused = sandbox.create(&small).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DELETE"),
        "{body}"
    );
    let first = &apps[0];
    let deleted = sandbox
        .delete(first["appId"].as_str().unwrap(), Some(&key_str(first, 0)))
        .await;
    assert!(deleted.status().is_success());
    assert_eq!(sandbox.create(&small).await.status(), 201);
}

#[actix_web::test]
async fn the_sandbox_refuses_a_non_loopback_address() {
    let refused = Sandbox::build(
        "0.0.0.0:0".parse().unwrap(),
        BrokerSettings::default(),
        clock::system(),
        Limits::default(),
    );
    assert!(matches!(refused, Err(SandboxError::NotLoopback(_))));

    let out = Command::new(env!("CARGO_BIN_EXE_ably-tokend"))
        .args(["broker", "--sandbox", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loopback only") && stderr.contains("0.0.0.0:0"),
        "{stderr}"
    );
    // --bind belongs to --sandbox; a plain broker reads its [broker] bind.
    let usage = Command::new(env!("CARGO_BIN_EXE_ably-tokend"))
        .args(["broker", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

// What the first conformance run found in connection setup (COMPATIBILITY.md).

#[actix_web::test]
async fn a_wildcard_token_connection_is_told_its_client_id_is_the_wildcard() {
    // ably-js test/realtime/init.test.js `init_usetokenauth_defaulttokenparams_wildcard`
    // reads `auth.clientId` as `*` once connected (RSA7b4): it takes it from
    // CONNECTED's connectionDetails.
    let broker = spawn_broker(Limits::default()).await;
    let token = broker.jwt(r#"{"*":["*"]}"#, Some("*"), 60_000, now_ms());
    let mut socket = broker.connect(&format!("access_token={token}")).await;
    let connected = socket.next().await;
    assert_eq!(connected["action"], 4, "{connected}");
    assert_eq!(
        connected["connectionDetails"]["clientId"], "*",
        "{connected}"
    );
    // Connecting as someone in particular on that token names them instead.
    let mut named = broker
        .connect(&format!("access_token={token}&clientId=alice"))
        .await;
    let connected = named.next().await;
    assert_eq!(
        connected["connectionDetails"]["clientId"], "alice",
        "{connected}"
    );
    // A token with no clientId leaves it null, as before.
    let anonymous = broker.jwt(r#"{"*":["*"]}"#, None, 60_000, now_ms());
    let mut socket = broker.connect(&format!("access_token={anonymous}")).await;
    let connected = socket.next().await;
    assert_eq!(
        connected["connectionDetails"]["clientId"],
        Value::Null,
        "{connected}"
    );
}
