//! OIDC discovery over real loopback HTTP: an issuer with neither `jwks_url`
//! nor `secret` reads `{issuer}/.well-known/openid-configuration` and uses its
//! `jwks_uri`. Faults are tests: another issuer, garbage, 10 MB, redirect
//! loops, slow and refused servers, an insecure `jwks_uri`; stale keys and the
//! last good `jwks_uri` keep serving while discovery fails. Cache ages move
//! on a `ManualClock`; only HTTP timeouts run on real time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ably_tokend::clock::{ManualClock, SharedClock};
use ably_tokend::config::Settings;
use ably_tokend::http::Application;
use ably_tokend::policy::Policy;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::helpers::*;

/// How the discovery document is answered.
#[derive(Clone)]
pub enum DocMode {
    /// 200 with this body.
    Body(String),
    /// This status, empty body.
    Status(u16),
    /// 302 back to the same path, for ever.
    RedirectLoop,
}

#[derive(Clone)]
struct ProviderState {
    doc: Arc<Mutex<DocMode>>,
    doc_delay: Arc<Mutex<Duration>>,
    keys: Arc<Mutex<String>>,
    doc_fetches: Arc<AtomicUsize>,
    key_fetches: Arc<AtomicUsize>,
}

/// A stand-in for an identity provider's host on loopback: any path ending
/// in `/.well-known/openid-configuration` answers the discovery document,
/// every other path the key set. Both count their fetches.
pub struct ProviderServer {
    pub port: u16,
    state: ProviderState,
    server: LoopbackServer,
}

impl ProviderServer {
    pub async fn start(keys: &[&TestKey]) -> ProviderServer {
        let state = ProviderState {
            doc: Arc::new(Mutex::new(DocMode::Status(404))),
            doc_delay: Arc::new(Mutex::new(Duration::ZERO)),
            keys: Arc::new(Mutex::new(String::new())),
            doc_fetches: Arc::new(AtomicUsize::new(0)),
            key_fetches: Arc::new(AtomicUsize::new(0)),
        };
        let server = serve_on_loopback(state.clone(), |app| {
            app.default_service(web::to(serve));
        });
        let provider = ProviderServer {
            port: server.port,
            state,
            server,
        };
        provider.publish_keys(keys);
        provider
    }

    /// `http://127.0.0.1:PORT`, where the provider's `https://host` was.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn publish_keys(&self, keys: &[&TestKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
        *self.state.keys.lock().unwrap() = json!({ "keys": keys }).to_string();
    }

    /// A document naming `issuer` and `jwks_uri`, with the other fields a
    /// real one carries.
    pub fn publish_doc(&self, issuer: &str, jwks_uri: &str) {
        self.set_doc(DocMode::Body(
            json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/oauth/token"),
                "jwks_uri": jwks_uri,
                "response_types_supported": ["code", "id_token", "code id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })
            .to_string(),
        ));
    }

    pub fn set_doc(&self, mode: DocMode) {
        *self.state.doc.lock().unwrap() = mode;
    }

    pub fn set_doc_delay(&self, delay: Duration) {
        *self.state.doc_delay.lock().unwrap() = delay;
    }

    pub fn doc_fetches(&self) -> usize {
        self.state.doc_fetches.load(Ordering::SeqCst)
    }

    pub fn key_fetches(&self) -> usize {
        self.state.key_fetches.load(Ordering::SeqCst)
    }

    /// Stops answering: connections are refused from now on.
    pub async fn stop(&self) {
        self.server.stop().await;
    }
}

async fn serve(request: HttpRequest, state: web::Data<ProviderState>) -> HttpResponse {
    if request
        .path()
        .ends_with("/.well-known/openid-configuration")
    {
        state.doc_fetches.fetch_add(1, Ordering::SeqCst);
        let delay = *state.doc_delay.lock().unwrap();
        if !delay.is_zero() {
            actix_web::rt::time::sleep(delay).await;
        }
        let mode = state.doc.lock().unwrap().clone();
        return match mode {
            DocMode::Body(body) => HttpResponse::Ok()
                .content_type("application/json")
                .body(body),
            DocMode::Status(status) => {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
            }
            DocMode::RedirectLoop => HttpResponse::Found()
                .insert_header(("location", request.path().to_string()))
                .finish(),
        };
    }
    state.key_fetches.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.keys.lock().unwrap().clone())
}

/// The app on `clock` with `config` and the test policy.
pub fn spawn_app(config: &str, clock: SharedClock) -> TestApp {
    let settings = Settings::from_toml(config).unwrap();
    let policy = Policy::parse(std::path::Path::new("policies/test.toml"), TEST_POLICY).unwrap();
    TestApp::run(Application::build_with(settings, policy, clock).unwrap())
}

/// The app's configuration header (as in `helpers::config_text`) and `issuers`.
pub fn config_with(issuers: &str) -> String {
    config_text(&Issuers::default(), "") + issuers
}

/// One issuer found by discovery at `issuer`, with `extra` settings.
fn discovery_config(issuer: &str, extra: &str) -> String {
    config_with(&format!(
        r#"
        [[issuers]]
        name = "oidc"
        issuer = "{issuer}"
        roles_claim = "/roles"
        {extra}
        "#
    ))
}

fn claims(iss: &str, sub: &str) -> Value {
    let now = now();
    json!({"iss": iss, "sub": sub, "iat": now, "exp": now + 300, "roles": ["support"]})
}

fn header() -> Value {
    json!({"typ": "JWT"})
}

/// A provider at `http://127.0.0.1:PORT` publishing `key` through a correct
/// document, and the app discovering it on `clock`.
async fn discovered(key: &TestKey, extra: &str, clock: SharedClock) -> (ProviderServer, TestApp) {
    let provider = ProviderServer::start(&[key]).await;
    let base = provider.base();
    provider.publish_doc(&base, &format!("{base}/.well-known/jwks.json"));
    let app = spawn_app(&discovery_config(&base, extra), clock);
    (provider, app)
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

/// A token of the discovered issuer gets 503 `jwks_unavailable` naming it,
/// and `/readyz` is 503 with a reason naming it and containing `why`.
async fn assert_without_keys(app: &TestApp, iss: &str, key: &TestKey, why: &str) -> Value {
    let token = key.sign(header(), &claims(iss, "user_1"));
    let body = assert_error(
        app.get_token("/api/ably-token", &token).await,
        503,
        "jwks_unavailable",
    )
    .await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("oidc"),
        "{body}"
    );
    let body = assert_error(app.get("/readyz").await, 503, "not_ready").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("issuer \"oidc\""), "{message}");
    assert!(message.contains(why), "{message}");
    assert_eq!(body["issuers"][0]["ready"], false);
    let discovery = &body["issuers"][0]["discovery"];
    assert!(
        discovery["last_error"].as_str().unwrap().contains(why),
        "{body}"
    );
    assert!(discovery["failures"].as_u64().unwrap() >= 1, "{body}");
    let text = metrics(app).await;
    assert!(
        text.contains("ably_tokend_oidc_discovery_ok{issuer=\"oidc\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("ably_tokend_jwks_ready{issuer=\"oidc\"} 0"),
        "{text}"
    );
    body
}

#[actix_web::test]
async fn discovery_then_a_valid_rs256_token_is_accepted() {
    let key = TestKey::rsa("rsa1", "2025-01");
    let (provider, app) = discovered(&key, "", ably_tokend::clock::system()).await;
    let token = key.sign(header(), &claims(&provider.base(), "user_1"));
    let request = ok_json(app.get_token("/api/ably-token", &token).await).await;
    assert_eq!(request["clientId"], "user_1");
    assert!(
        request["capability"]
            .as_str()
            .unwrap()
            .contains("\"orders:*\""),
        "{request}"
    );
    assert_eq!(provider.doc_fetches(), 1);
    assert_eq!(provider.key_fetches(), 1);

    let ready = app.wait_until_ready().await;
    let discovery = &ready["issuers"][0]["discovery"];
    assert_eq!(
        discovery["document_url"],
        format!("{}/.well-known/openid-configuration", provider.base())
    );
    assert_eq!(
        discovery["jwks_uri"],
        format!("{}/.well-known/jwks.json", provider.base())
    );
    assert_eq!(discovery["last_error"], Value::Null);
    assert_eq!(ready["issuers"][0]["keys"], 1);
    let text = metrics(&app).await;
    for line in [
        "ably_tokend_oidc_discovery_fetches_total{issuer=\"oidc\"} 1",
        "ably_tokend_oidc_discovery_failures_total{issuer=\"oidc\"} 0",
        "ably_tokend_oidc_discovery_ok{issuer=\"oidc\"} 1",
        "ably_tokend_jwks_keys{issuer=\"oidc\"} 1",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    // A token signed by a key the set does not hold is still refused.
    let forger = TestKey::rsa("rsa2", "2025-01");
    let forged = forger.sign(header(), &claims(&provider.base(), "user_1"));
    assert_error(
        app.get_token("/api/ably-token", &forged).await,
        401,
        "signature_invalid",
    )
    .await;
}

#[actix_web::test]
async fn the_trailing_slash_of_the_issuer_is_kept_in_the_comparison_and_dropped_from_the_url() {
    // Auth0's issuers end in "/": the document is at issuer-without-slash +
    // /.well-known/openid-configuration and names the issuer with its slash.
    let key = TestKey::rsa("rsa1", "k1");
    let provider = ProviderServer::start(&[&key]).await;
    let iss = format!("{}/", provider.base());
    provider.publish_doc(&iss, &format!("{}/jwks", provider.base()));
    let app = spawn_app(&discovery_config(&iss, ""), ably_tokend::clock::system());
    let token = key.sign(header(), &claims(&iss, "user_1"));
    ok_json(app.get_token("/api/ably-token", &token).await).await;
    assert_eq!(provider.doc_fetches(), 1);
}

#[actix_web::test]
async fn rotation_via_discovery_follows_a_new_jwks_uri() {
    let old = TestKey::rsa("rsa1", "2024");
    let new = TestKey::ec("ec1", "2025");
    let (provider, app) = discovered(
        &old,
        r#"algorithms = ["RS256", "ES256"]"#,
        ably_tokend::clock::system(),
    )
    .await;
    let iss = provider.base();
    let token = old.sign(header(), &claims(&iss, "user_1"));
    ok_json(app.get_token("/api/ably-token", &token).await).await;

    // The provider moves its key set to another host with a new key.
    let moved = JwksServer::start(&[&new]).await;
    provider.publish_doc(&iss, &moved.url());
    let rotated = new.sign(header(), &claims(&iss, "user_2"));
    let request = ok_json(app.get_token("/api/ably-token", &rotated).await).await;
    assert_eq!(request["clientId"], "user_2");
    assert_eq!(provider.doc_fetches(), 2, "the unknown kid re-discovered");
    assert_eq!(moved.fetches(), 1);
    let ready = app.wait_until_ready().await;
    assert_eq!(ready["issuers"][0]["discovery"]["jwks_uri"], moved.url());
    // The old key is gone from the new set.
    assert_error(
        app.get_token("/api/ably-token", &token).await,
        401,
        "signing_key_unknown",
    )
    .await;
}

#[actix_web::test]
async fn a_document_naming_another_issuer_leaves_the_issuer_without_keys() {
    let key = TestKey::rsa("rsa1", "k1");
    let provider = ProviderServer::start(&[&key]).await;
    let iss = provider.base();
    provider.publish_doc(
        "https://evil.example",
        &format!("{iss}/.well-known/jwks.json"),
    );
    // Start-up does not fail on it.
    let app = spawn_app(&discovery_config(&iss, ""), ably_tokend::clock::system());
    let body = assert_without_keys(&app, &iss, &key, "names issuer \"https://evil.example\"").await;
    assert_eq!(provider.key_fetches(), 0, "its jwks_uri is never fetched");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&iss),
        "the reason names the document's URL: {body}"
    );
}

#[actix_web::test]
async fn garbage_oversized_and_failing_documents_leave_the_issuer_without_keys() {
    let key = TestKey::rsa("rsa1", "k1");
    let ten_mb = format!("{{\"issuer\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let cases: Vec<(DocMode, &str)> = vec![
        (
            DocMode::Body("{\"issuer\": \"http://127.0.0.1".into()),
            "not a JSON object",
        ),
        (
            DocMode::Body("<html>sign in</html>".into()),
            "not a JSON object",
        ),
        (DocMode::Body(ten_mb), "larger than 65536 bytes"),
        (DocMode::Status(500), "answered 500"),
        (DocMode::Status(404), "answered 404"),
    ];
    for (mode, why) in cases {
        let provider = ProviderServer::start(&[&key]).await;
        provider.set_doc(mode);
        let app = spawn_app(
            &discovery_config(&provider.base(), ""),
            ably_tokend::clock::system(),
        );
        assert_without_keys(&app, &provider.base(), &key, why).await;
        assert_eq!(provider.key_fetches(), 0);
        provider.stop().await;
    }
}

#[actix_web::test]
async fn a_jwks_uri_on_plain_http_off_loopback_is_refused() {
    let key = TestKey::rsa("rsa1", "k1");
    let provider = ProviderServer::start(&[&key]).await;
    let iss = provider.base();
    provider.publish_doc(&iss, "http://keys.example.com/.well-known/jwks.json");
    let app = spawn_app(&discovery_config(&iss, ""), ably_tokend::clock::system());
    assert_without_keys(
        &app,
        &iss,
        &key,
        "jwks_uri \"http://keys.example.com/.well-known/jwks.json\" must be https",
    )
    .await;
}

#[actix_web::test]
async fn a_redirect_loop_is_cut_off_after_three_redirects() {
    let key = TestKey::rsa("rsa1", "k1");
    let provider = ProviderServer::start(&[&key]).await;
    provider.set_doc(DocMode::RedirectLoop);
    let app = spawn_app(
        &discovery_config(&provider.base(), ""),
        ably_tokend::clock::system(),
    );
    assert_without_keys(&app, &provider.base(), &key, "redirected more than 3 times").await;
    // One request and three redirects per attempt, then it gives up.
    assert!(provider.doc_fetches() >= 4, "{}", provider.doc_fetches());
}

#[actix_web::test]
async fn a_slow_discovery_document_times_out_with_503() {
    let key = TestKey::rsa("rsa1", "k1");
    let provider = ProviderServer::start(&[&key]).await;
    let iss = provider.base();
    provider.publish_doc(&iss, &format!("{iss}/.well-known/jwks.json"));
    provider.set_doc_delay(Duration::from_secs(5));
    let app = spawn_app(
        &discovery_config(&iss, r#"jwks_timeout = "300ms""#),
        ably_tokend::clock::system(),
    );
    let started = std::time::Instant::now();
    assert_without_keys(&app, &iss, &key, "timed out").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the discovery fetch was not cut off"
    );
}

#[actix_web::test]
async fn a_refused_connection_leaves_the_issuer_without_keys() {
    let key = TestKey::rsa("rsa1", "k1");
    let provider = ProviderServer::start(&[&key]).await;
    let iss = provider.base();
    provider.stop().await;
    let app = spawn_app(&discovery_config(&iss, ""), ably_tokend::clock::system());
    assert_without_keys(&app, &iss, &key, "could not connect").await;
}

#[actix_web::test]
async fn cached_keys_outlive_a_whole_provider_outage_until_the_stale_bound() {
    let key = TestKey::rsa("rsa1", "k1");
    let clock = ManualClock::at_ms(now_ms());
    let (provider, app) = discovered(
        &key,
        r#"jwks_cache_ttl = "1s"
        jwks_refetch_cooldown = "1s"
        jwks_stale_for = "2s""#,
        clock.clone(),
    )
    .await;
    let iss = provider.base();
    app.wait_until_ready().await;
    provider.stop().await;

    // Past the TTL with discovery and keys down: the cached set still answers,
    // and the failed background refresh shows in /readyz without making it unready.
    clock.advance(Duration::from_millis(1300));
    let token = key.sign(header(), &claims(&iss, "user_1"));
    ok_json(app.get_token("/api/ably-token", &token).await).await;
    let ready = wait_for("the failed refresh to be reported", || async {
        let ready = app.wait_until_ready().await;
        let failed = ready["issuers"][0]["discovery"]["last_error"].is_string();
        failed.then_some(ready)
    })
    .await;
    assert!(
        ready["issuers"][0]["discovery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{ready}"
    );
    assert_eq!(ready["issuers"][0]["keys"], 1);

    // Past TTL + stale bound: no usable keys, and readiness says why.
    clock.advance(Duration::from_millis(2000));
    assert_without_keys(&app, &iss, &key, "could not connect").await;
}

#[actix_web::test]
async fn the_last_good_jwks_uri_keeps_serving_while_discovery_fails() {
    let old = TestKey::rsa("rsa1", "2024");
    let new = TestKey::rsa("rsa2", "2025");
    let (provider, app) = discovered(&old, "", ably_tokend::clock::system()).await;
    let iss = provider.base();
    ok_json(
        app.get_token("/api/ably-token", &old.sign(header(), &claims(&iss, "u1")))
            .await,
    )
    .await;

    // Discovery breaks, the key set rotates at the jwks_uri already known.
    provider.set_doc(DocMode::Status(503));
    provider.publish_keys(&[&old, &new]);
    let rotated = new.sign(header(), &claims(&iss, "user_2"));
    let request = ok_json(app.get_token("/api/ably-token", &rotated).await).await;
    assert_eq!(request["clientId"], "user_2");
    assert_eq!(provider.doc_fetches(), 2);
    assert_eq!(provider.key_fetches(), 2);
    let ready = app.wait_until_ready().await;
    let discovery = &ready["issuers"][0]["discovery"];
    assert!(
        discovery["last_error"]
            .as_str()
            .unwrap()
            .contains("answered 503"),
        "{ready}"
    );
    assert_eq!(
        discovery["jwks_uri"],
        format!("{iss}/.well-known/jwks.json")
    );
    let text = metrics(&app).await;
    assert!(
        text.contains("ably_tokend_oidc_discovery_failures_total{issuer=\"oidc\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ably_tokend_oidc_discovery_ok{issuer=\"oidc\"} 0"),
        "{text}"
    );
}

#[test]
fn an_issuer_without_keys_must_be_a_url_discovery_can_use() {
    for (issuer, why) in [
        ("my-dev-issuer", "\"my-dev-issuer\" is not a URL"),
        ("http://id.example.com", "must be https"),
    ] {
        let e = Settings::from_toml(&discovery_config(issuer, ""))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("issuers[0].issuer: "), "{e}");
        assert!(e.contains(why), "{e}");
        assert!(e.contains("/.well-known/openid-configuration"), "{e}");
    }
    // A loopback or https issuer loads; nothing is fetched until it serves.
    for issuer in ["https://id.example.com/", "http://localhost:8000/realms/r"] {
        Settings::from_toml(&discovery_config(issuer, "")).unwrap();
    }
}

#[actix_web::test]
async fn the_last_good_jwks_uri_is_kept_only_within_the_stale_bound() {
    let key = TestKey::rsa("rsa1", "k1");
    let clock = ManualClock::at_ms(now_ms());
    let (provider, app) = discovered(
        &key,
        r#"jwks_cache_ttl = "1s"
        jwks_refetch_cooldown = "1s"
        jwks_stale_for = "2s""#,
        clock.clone(),
    )
    .await;
    let iss = provider.base();
    app.wait_until_ready().await;
    assert_eq!(provider.key_fetches(), 1);
    provider.set_doc(DocMode::Status(503));
    let token = || key.sign(header(), &claims(&iss, "user_1"));

    // 1.3 s after the last good discovery (within ttl + stale_for = 3 s): the
    // background refresh still fetches the key set from the known jwks_uri.
    clock.advance(Duration::from_millis(1300));
    ok_json(app.get_token("/api/ably-token", &token()).await).await;
    eventually("the refresh from the last good jwks_uri", || async {
        provider.key_fetches() == 2
    })
    .await;

    // 3.5 s after it: the jwks_uri is no longer trusted, so the refresh
    // fails, while the keys fetched at 1.3 s still serve (stale until 4.3 s).
    clock.advance(Duration::from_millis(2200));
    ok_json(app.get_token("/api/ably-token", &token()).await).await;
    eventually("the failed refresh", || async {
        let ready = app.wait_until_ready().await;
        ready["issuers"][0]["failures"] == 1
    })
    .await;
    assert_eq!(provider.key_fetches(), 2, "the old jwks_uri was not used");

    // Past the stale bound of those keys: none left, and /readyz says why.
    clock.advance(Duration::from_millis(900));
    assert_without_keys(&app, &iss, &key, "answered 503").await;
    assert_eq!(provider.key_fetches(), 2);
}
