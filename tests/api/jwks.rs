//! JWKS caching over real HTTP: rotation, unknown-kid floods, outages,
//! timeouts and Cache-Control. The cache ages on a `ManualClock` the tests
//! advance; nothing sleeps to wait for expiry.

use std::sync::Arc;
use std::time::Duration;

use ably_tokend::clock::ManualClock;
use serde_json::Value;

use crate::helpers::*;

/// The app trusting `jwks` as Clerk with `jwks_extra` settings, on a clock the
/// test advances.
async fn app_on_manual_clock(jwks: &JwksServer, jwks_extra: &str) -> (Arc<ManualClock>, TestApp) {
    let clock = ManualClock::at_ms(now_ms());
    let issuers = Issuers {
        jwks_extra,
        ..Issuers::clerk(jwks)
    };
    let app = TestApp::spawn_with_clock(issuers, clock.clone()).await;
    (clock, app)
}

#[actix_web::test]
async fn rotated_key_is_accepted_after_one_refetch() {
    let old = TestKey::rsa("rsa1", "2024-key");
    let new = TestKey::rsa("rsa2", "2025-key");
    let (jwks, app) = app_trusting(&[&old], Issuers::clerk).await;
    let session = old.sign(clerk_header(), &clerk_claims("user_1", None));
    assert_eq!(
        app.get_token("/api/ably-token", &session).await.status(),
        200
    );
    let fetched = jwks.fetches();
    assert_eq!(fetched, 1);

    // The issuer rotates: the new key is published, tokens are signed with it.
    jwks.publish(&[&old, &new]);
    let rotated = new.sign(clerk_header(), &clerk_claims("user_2", None));
    let response = app.get_token("/api/ably-token", &rotated).await;
    let request = ok_json(response).await;
    assert_eq!(request["clientId"], "user_2");
    assert_eq!(jwks.fetches(), fetched + 1);
    // Both keys now verify without further fetches.
    assert_eq!(
        app.get_token("/api/ably-token", &session).await.status(),
        200
    );
    assert_eq!(
        app.get_token("/api/ably-token", &rotated).await.status(),
        200
    );
    assert_eq!(jwks.fetches(), fetched + 1);
}

#[actix_web::test]
async fn a_flood_of_unknown_kids_causes_at_most_one_fetch_per_cooldown() {
    let key = TestKey::rsa("rsa1", "real");
    let (jwks, app) = app_trusting(&[&key], Issuers::clerk).await;
    app.wait_until_ready().await;
    let baseline = jwks.fetches();

    let forger = TestKey::rsa("rsa2", "unused");
    let mut requests = Vec::new();
    for i in 0..40 {
        let mut header = clerk_header();
        header["kid"] = serde_json::json!(format!("made-up-{i}"));
        let token = forger.sign(header, &clerk_claims("user_1", None));
        let client = app.client.clone();
        let url = format!("{}/api/ably-token", app.address);
        requests.push(async move { client.get(url).bearer_auth(token).send().await.unwrap() });
    }
    let responses = futures_util::future::join_all(requests).await;
    for response in responses {
        assert_error(response, 401, "signing_key_unknown").await;
    }
    assert_eq!(
        jwks.fetches(),
        baseline + 1,
        "concurrent misses collapse into one fetch"
    );

    // Within the cooldown (30 s by default) no further fetch happens at all.
    let mut header = clerk_header();
    header["kid"] = serde_json::json!("yet-another");
    let token = forger.sign(header, &clerk_claims("user_1", None));
    assert_error(
        app.get_token("/api/ably-token", &token).await,
        401,
        "signing_key_unknown",
    )
    .await;
    assert_eq!(jwks.fetches(), baseline + 1);
}

#[actix_web::test]
async fn cached_keys_outlive_an_outage_until_the_stale_bound() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (clock, app) = app_on_manual_clock(
        &jwks,
        r#"jwks_cache_ttl = "1s"
            jwks_refetch_cooldown = "1s"
            jwks_stale_for = "2s""#,
    )
    .await;
    app.wait_until_ready().await;
    jwks.stop().await;

    // Past the cache TTL, with the endpoint down: cached keys keep working.
    clock.advance(Duration::from_millis(1300));
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    assert_eq!(
        app.get_token("/api/ably-token", &session).await.status(),
        200
    );
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");

    // Past TTL + stale bound: no usable keys, and readiness says why.
    clock.advance(Duration::from_millis(2000));
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let body = assert_error(
        app.get_token("/api/ably-token", &session).await,
        503,
        "jwks_unavailable",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("clerk"));
    let body = assert_error(app.get("/readyz").await, 503, "not_ready").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("clerk"),
        "{body}"
    );
    assert_eq!(body["issuers"][0]["ready"], false);
    assert!(body["issuers"][0]["failures"].as_u64().unwrap() >= 1);
}

#[actix_web::test]
async fn a_slow_jwks_endpoint_times_out_with_503() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_delay(Duration::from_secs(5));
    let app = TestApp::spawn(Issuers {
        jwks_extra: r#"jwks_timeout = "300ms""#,
        ..Issuers::clerk(&jwks)
    })
    .await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let started = std::time::Instant::now();
    assert_error(
        app.get_token("/api/ably-token", &session).await,
        503,
        "jwks_unavailable",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the fetch was not cut off"
    );
    let body = assert_error(app.get("/readyz").await, 503, "not_ready").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{body}"
    );
}

#[actix_web::test]
async fn cache_control_max_age_shortens_the_cache() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_cache_control("public, max-age=1");
    let (clock, app) = app_on_manual_clock(&jwks, r#"jwks_refetch_cooldown = "1s""#).await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    assert_eq!(
        app.get_token("/api/ably-token", &session).await.status(),
        200
    );
    assert_eq!(jwks.fetches(), 1);
    clock.advance(Duration::from_millis(1200));
    // The stale set still answers at once and a refresh runs behind it.
    assert_eq!(
        app.get_token("/api/ably-token", &session).await.status(),
        200
    );
    eventually("the background refresh", || async { jwks.fetches() == 2 }).await;
    assert_eq!(jwks.fetches(), 2);
}
