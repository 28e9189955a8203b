//! The HTTP surface: health, readiness, limits, CORS, unknown routes.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn healthz_and_readyz_report_state() {
    let (_key, _jwks, app) = clerk_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["cache-control"], "no-store");
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    let ready = app.wait_until_ready().await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["issuers"][0]["name"], "clerk");
    assert_eq!(ready["issuers"][0]["keys"], 1);
    assert_eq!(ready["issuers"][0]["ready"], true);
}

#[actix_web::test]
async fn readyz_is_503_while_an_issuer_has_no_keys() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    jwks.publish_raw(json!({"keys": []}));
    let app = TestApp::spawn(Issuers::clerk(&jwks)).await;
    let body = wait_for("/readyz to report the fetch's error", || async {
        let response = app.get("/readyz").await;
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        body["issuers"][0]["last_error"].is_string().then_some(body)
    })
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no usable signing key"),
        "{body}"
    );
}

#[actix_web::test]
async fn oversized_body_is_413_in_ablys_shape() {
    let (key, _jwks, app) = clerk_app().await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let response = app
        .request(Method::POST, "/api/ably-token")
        .bearer_auth(&session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("rnd={}", "1".repeat(20_000)))
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "body_too_large").await;
    let response = app
        .request(Method::POST, "/api/ably-token")
        .bearer_auth(&session)
        .header("content-type", "text/xml")
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "unsupported_content_type").await;
}

#[actix_web::test]
async fn requests_over_the_rate_limit_get_429_but_probes_do_not() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let config = config_text(&Issuers::clerk(&jwks), "").replace(
        "rate_limit_per_second = 0",
        "rate_limit_per_second = 1\nrate_limit_burst = 3",
    );
    let app = TestApp::spawn_with(&config, TEST_POLICY).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get("/api/ably-token").await.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[401, 401, 401]);
    assert_eq!(statuses[4], 429);
    assert_error(app.get("/api/ably-token").await, 429, "rate_limited").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[actix_web::test]
async fn cors_preflight_is_answered_only_for_configured_origins() {
    let (_key, _jwks, app) = clerk_app().await;
    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, "/api/ably-token")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight(APP_ORIGIN).await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], APP_ORIGIN);
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let denied = preflight("https://evil.example").await.unwrap();
    assert!(denied
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_ne!(denied.status(), 200);
}

#[actix_web::test]
async fn unknown_routes_and_methods_get_ably_shaped_errors() {
    let (_key, _jwks, app) = clerk_app().await;
    assert_error(app.get("/api/ably-tokens").await, 404, "not_found").await;
    let response = app
        .request(Method::DELETE, "/api/ably-token")
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "method_not_allowed").await;
    assert_error(app.get("/dev/session").await, 404, "not_found").await;
    // Without the dev issuer the path is unknown, whatever the method.
    let response = app
        .request(Method::POST, "/dev/session")
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
}

#[actix_web::test]
async fn the_dev_stack_mints_sessions_the_sidecar_accepts() {
    use ably_tokend::dev::{DevOptions, DevStack};
    let stack = DevStack::build(DevOptions {
        policy: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default.toml").into()),
        ..DevOptions::default()
    })
    .unwrap();
    let base = stack.sidecar_url();
    let issuer = stack.issuer().clone();
    let broker = format!("http://127.0.0.1:{}", stack.broker_port());
    actix_web::rt::spawn(stack.run_until_stopped());
    let client = reqwest::Client::new();
    let time = client.get(format!("{broker}/time")).send().await.unwrap();
    assert_eq!(time.status(), 200, "the broker runs beside the sidecar");

    let minted = client
        .get(format!("{base}/dev/session?sub=alice&roles=support"))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 200);
    assert!(minted.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let session = minted.text().await.unwrap();
    let request: Value = send_json(
        client
            .get(format!("{base}/api/ably-token"))
            .bearer_auth(&session),
    )
    .await;
    assert_eq!(request["clientId"], "alice");
    assert_eq!(
        request["ttl"], 900_000,
        "the support role's 15m cap applies"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let minted_here = issuer.mint("bob", &["support".to_string()], now, 60);
    let request: Value = send_json(
        client
            .get(format!("{base}/api/ably-token"))
            .bearer_auth(&minted_here),
    )
    .await;
    assert_eq!(request["clientId"], "bob");

    let bad = client
        .get(format!("{base}/dev/session?ttl=-1"))
        .send()
        .await
        .unwrap();
    assert_error(bad, 400, "invalid_query").await;

    // A wrong method on /dev/session is refused like on every other route.
    let wrong_method = client
        .post(format!("{base}/dev/session?sub=alice"))
        .send()
        .await
        .unwrap();
    assert_error(wrong_method, 405, "method_not_allowed").await;
}

/// Sends one request on `stream` and reads one answer (one read: the
/// answers here are small), or "" once the server has closed it.
fn exchange(mut stream: std::net::TcpStream) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut buf = [0u8; 2048];
    let n = stream.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    (stream, answer)
}

/// An idle connection stays open for `server.keep_alive` and no longer, and
/// every answer says how long (src/keep_alive.rs): clients that honour the
/// hint close first, and those that do not (Node's agent without a timeout,
/// ably-js's) meet a close only after that long idle.
#[actix_web::test]
async fn idle_connections_are_kept_for_server_keep_alive_and_answers_say_so() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let default = TestApp::spawn(Issuers::clerk(&jwks)).await;
    let answer = default.get("/healthz").await;
    assert_eq!(answer.headers()["keep-alive"], "timeout=75");

    let config = config_text(&Issuers::clerk(&jwks), "keep_alive = \"2s\"");
    let app = TestApp::spawn_with(&config, TEST_POLICY).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    let stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let in_thread = |stream| async move {
        actix_web::rt::task::spawn_blocking(move || exchange(stream))
            .await
            .unwrap()
    };
    let (stream, first) = in_thread(stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first
            .to_ascii_lowercase()
            .contains("keep-alive: timeout=2\r\n"),
        "{first}"
    );
    // Idle for less than the timeout: the same connection answers again.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(1_000)).await;
    let (stream, second) = in_thread(stream).await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "closed after 1 s idle: {second:?}"
    );
    // Idle for longer: the server has closed it.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(3_000)).await;
    let (_stream, third) = in_thread(stream).await;
    assert_eq!(third, "", "still open after 3 s idle with keep_alive = 2s");
}
