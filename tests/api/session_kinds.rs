//! `kind = "session_endpoint"` and `kind = "introspection"` through the real
//! app over HTTP, beside a JWKS issuer: a session endpoint and an RFC 7662
//! introspection endpoint served on loopback by the test, recording what
//! reached them. (The real `@auth/core` `Auth()` handler behind the binary:
//! tests/identity.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

const CLIENT_SECRET_ENV: &str = "SESSION_KINDS_TEST_CLIENT_SECRET";
const CLIENT_SECRET: &str = "introspection client secret/with:odd chars";

/// What one request to the upstream carried.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    cookie: Option<String>,
    authorization: Option<String>,
    body: String,
}

#[derive(Clone, Default)]
struct Upstream {
    /// Session token (the cookie's value, or a Bearer value) → the answer.
    sessions: Arc<Mutex<HashMap<String, Value>>>,
    /// Introspected token → the answer.
    tokens: Arc<Mutex<HashMap<String, Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    calls: Arc<AtomicUsize>,
}

/// A session endpoint shaped like Auth.js's `/api/auth/session` (`null` for
/// no session) and an introspection endpoint (RFC 7662 §2) on loopback.
struct UpstreamServer {
    port: u16,
    state: Upstream,
    server: LoopbackServer,
}

impl UpstreamServer {
    async fn start() -> UpstreamServer {
        let state = Upstream::default();
        let server = serve_on_loopback(state.clone(), |app| {
            app.route("/api/auth/session", web::get().to(session))
                .route("/api/auth/get-session", web::get().to(session))
                .route("/oauth2/introspect", web::post().to(introspect));
        });
        UpstreamServer {
            port: server.port,
            state,
            server,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn session(&self, token: &str, answer: Value) {
        self.state
            .sessions
            .lock()
            .unwrap()
            .insert(token.into(), answer);
    }

    fn token(&self, token: &str, answer: Value) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.into(), answer);
    }
}

fn record(state: &Upstream, req: &HttpRequest, body: &str) {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    state.calls.fetch_add(1, Ordering::SeqCst);
    state.seen.lock().unwrap().push(Seen {
        path: req.path().into(),
        cookie: header("cookie"),
        authorization: header("authorization"),
        body: body.into(),
    });
}

async fn session(state: web::Data<Upstream>, req: HttpRequest) -> HttpResponse {
    record(&state, &req, "");
    let token = req
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split("; ").find_map(|pair| {
                pair.strip_prefix("authjs.session-token=")
                    .or_else(|| pair.strip_prefix("better-auth.session_token="))
            })
        })
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        });
    let answer = token
        .and_then(|t| state.sessions.lock().unwrap().get(&t).cloned())
        .unwrap_or(Value::Null);
    HttpResponse::Ok().json(answer)
}

async fn introspect(state: web::Data<Upstream>, req: HttpRequest, body: String) -> HttpResponse {
    record(&state, &req, &body);
    // RFC 6749 §2.3.1: client id and secret form-urlencoded, then Basic.
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "ably-tokend:{}",
            url::form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect::<String>()
        ))
    );
    if req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        return HttpResponse::Unauthorized().json(json!({"error": "invalid_client"}));
    }
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap();
    let answer = state
        .tokens
        .lock()
        .unwrap()
        .get(&form["token"])
        .cloned()
        .unwrap_or(json!({"active": false}));
    HttpResponse::Ok().json(answer)
}

/// The app with a Clerk (JWKS) issuer, a session endpoint at `session_url`
/// and an introspection endpoint at `introspect_url`.
async fn app(jwks: &JwksServer, session_url: &str, introspect_url: &str) -> TestApp {
    std::env::set_var(CLIENT_SECRET_ENV, CLIENT_SECRET);
    let config = config_text(&Issuers::clerk(jwks), "")
        + &format!(
            r#"
            [[issuers]]
            name = "app-session"
            kind = "session_endpoint"
            url = "{session_url}"
            forward_cookies = ["authjs.session-token"]
            client_id_claim = "/user/id"
            roles_claim = "/user/role"
            [[issuers]]
            name = "hydra"
            kind = "introspection"
            url = "{introspect_url}"
            client_id = "ably-tokend"
            client_secret_env = "{CLIENT_SECRET_ENV}"
            client_id_claim = "/sub"
            roles_claim = "/role"
            "#
        );
    TestApp::spawn_with(&config, TEST_POLICY).await
}

async fn setup() -> (TestKey, JwksServer, UpstreamServer, TestApp) {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = UpstreamServer::start().await;
    let base = format!("http://127.0.0.1:{}", upstream.port);
    let app = app(
        &jwks,
        &format!("{base}/api/auth/session"),
        &format!("{base}/oauth2/introspect"),
    )
    .await;
    (key, jwks, upstream, app)
}

/// An Auth.js-shaped session answer: `{user, expires}`, expiry in RFC 3339.
fn authjs_session(id: &str, role: &str) -> Value {
    let expires = humantime::format_rfc3339_millis(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    json!({"user": {"id": id, "name": "Ada", "role": role}, "expires": expires.to_string()})
}

fn capability(token_request: &Value) -> Value {
    serde_json::from_str(token_request["capability"].as_str().unwrap()).unwrap()
}

#[actix_web::test]
async fn a_cookie_is_looked_up_at_the_session_endpoint_and_only_it_is_forwarded() {
    let (_key, jwks, upstream, app) = setup().await;
    upstream.session("db-session-1", authjs_session("u-42", "support"));
    let cookies = "theme=dark; authjs.session-token=db-session-1; __session=a.b.c";

    let first = ok_json(app.get_with_cookie("/api/ably-token", cookies).await).await;
    assert_eq!(first["clientId"], "u-42");
    assert_eq!(first["keyName"], KEY_NAME);
    let cap = capability(&first);
    // "support" from /user/role, and the default role's template with the clientId.
    assert_eq!(
        cap["orders:*"],
        json!(["history", "presence", "publish", "subscribe"])
    );
    assert_eq!(cap["announcements"], json!(["subscribe"]));
    assert_eq!(independent_mac(&first), first["mac"].as_str().unwrap());

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/auth/session");
    // Only the listed cookie went; no Authorization was made up.
    assert_eq!(
        seen[0].cookie.as_deref(),
        Some("authjs.session-token=db-session-1")
    );
    assert_eq!(seen[0].authorization, None);

    // Within cache_ttl the answer is reused: no second call.
    let again = ok_json(app.get_with_cookie("/api/ably-token", cookies).await).await;
    assert_eq!(again["clientId"], "u-42");
    assert_eq!(upstream.calls(), 1);

    // No session (`null`): 401 session_invalid, naming the issuer.
    let none = app
        .get_with_cookie("/api/ably-token", "authjs.session-token=signed-out")
        .await;
    let body = assert_error(none, 401, "session_invalid").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("app-session"),
        "{body}"
    );
    // An unlisted cookie alone is no credential, and nothing is asked.
    let unlisted = app
        .get_with_cookie("/api/ably-token", "theme=dark; next-auth.session-token=x")
        .await;
    assert_error(unlisted, 401, "session_token_missing").await;
    assert_eq!(upstream.calls(), 2);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"session_lookups_total{issuer="app-session",outcome="hit"} 1"#,
        r#"session_lookups_total{issuer="app-session",outcome="miss"} 1"#,
        r#"session_lookups_total{issuer="app-session",outcome="refused"} 1"#,
        r#"session_lookups_total{issuer="hydra",outcome="miss"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    jwks.stop().await;
    upstream.server.stop().await;
}

#[actix_web::test]
async fn a_bearer_that_is_not_a_jwt_is_introspected() {
    let (_key, jwks, upstream, app) = setup().await;
    upstream.token(
        "ory_at_live",
        json!({"active": true, "sub": "svc-7", "role": "support", "scope": "ably",
               "exp": now() + 600, "client_id": "mobile"}),
    );
    upstream.token(
        "ory_at_lapsed",
        json!({"active": true, "sub": "svc-8", "exp": now() - 1}),
    );
    let url = app.url("/api/ably-token");

    let live = ok_json(app.get_token("/api/ably-token", "ory_at_live").await).await;
    assert_eq!(live["clientId"], "svc-7");
    assert_eq!(
        capability(&live)["orders:*"],
        json!(["history", "presence", "publish", "subscribe"])
    );
    let seen = upstream.seen();
    assert_eq!(seen[0].path, "/oauth2/introspect");
    assert_eq!(
        seen[0].body,
        "token=ory_at_live&token_type_hint=access_token"
    );
    assert_eq!(seen[0].cookie, None);

    // An Ably JWT can be asked for as well.
    let jwt = app
        .client
        .get(app.url("/api/ably-jwt"))
        .bearer_auth("ory_at_live")
        .send()
        .await
        .unwrap();
    assert_eq!(jwt.status(), 200);
    let claims = independent_jwt_claims(&jwt.text().await.unwrap());
    assert_eq!(claims["x-ably-clientId"], "svc-7");

    for token in ["ory_at_unknown", "ory_at_lapsed"] {
        let refused = app.get_token("/api/ably-token", token).await;
        assert_error(refused, 401, "session_invalid").await;
    }
    // A refusal is not rescued by a good session cookie: the header wins.
    upstream.session("db-session-1", authjs_session("u-42", "support"));
    let header_wins = app
        .client
        .get(&url)
        .bearer_auth("ory_at_unknown")
        .header("cookie", "authjs.session-token=db-session-1")
        .send()
        .await
        .unwrap();
    assert_error(header_wins, 401, "session_invalid").await;
    assert!(upstream
        .seen()
        .iter()
        .all(|s| s.path == "/oauth2/introspect"));
    jwks.stop().await;
    upstream.server.stop().await;
}

#[actix_web::test]
async fn a_bearer_jwt_still_goes_to_its_jwt_issuer_and_wins_over_a_cookie() {
    let (key, jwks, upstream, app) = setup().await;
    upstream.session("db-session-1", authjs_session("u-42", "support"));
    let clerk = key.sign(clerk_header(), &clerk_claims("alice", None));
    let response = app
        .client
        .get(app.url("/api/ably-token"))
        .bearer_auth(&clerk)
        .header("cookie", "authjs.session-token=db-session-1")
        .send()
        .await
        .unwrap();
    let body = ok_json(response).await;
    assert_eq!(body["clientId"], "alice");
    assert_eq!(upstream.calls(), 0, "neither look-up was asked");
    // A JWT that fails is refused as a JWT, never introspected.
    let forged = format!("{}x", &clerk[..clerk.len() - 1]);
    let bad = app.get_token("/api/ably-token", &forged).await;
    assert_error(bad, 401, "signature_invalid").await;
    assert_eq!(upstream.calls(), 0);
    jwks.stop().await;
    upstream.server.stop().await;
}

#[actix_web::test]
async fn an_upstream_that_is_down_is_a_503_never_a_500() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    // A port that was just free: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{closed}");
    let app = app(
        &jwks,
        &format!("{base}/api/auth/session"),
        &format!("{base}/oauth2/introspect"),
    )
    .await;
    let by_cookie = app
        .get_with_cookie("/api/ably-token", "authjs.session-token=db-session-1")
        .await;
    let body = assert_error(by_cookie, 503, "session_upstream_unavailable").await;
    assert_eq!(body["error"]["code"], 50300);
    let by_bearer = app.get_token("/api/ably-token", "ory_at_live").await;
    assert_error(by_bearer, 503, "session_upstream_unavailable").await;
    // A failure is not cached: the next request asks again (and fails again).
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"session_lookups_total{issuer="hydra",outcome="unavailable"} 1"#),
        "{metrics}"
    );
    let again = app.get_token("/api/ably-token", "ory_at_live").await;
    assert_error(again, 503, "session_upstream_unavailable").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"session_lookups_total{issuer="hydra",outcome="unavailable"} 2"#),
        "{metrics}"
    );
    jwks.stop().await;
}

/// `ably-tokend check-config` as a process: one GET without credentials per
/// look-up issuer; any HTTP answer is reachable, a refused connection fails.
#[actix_web::test]
async fn check_config_says_whether_each_endpoint_answers() {
    let upstream = UpstreamServer::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempdir("check-config-kinds");
    std::fs::write(dir.join("policy.toml"), TEST_POLICY).unwrap();
    let config = |introspect_port: u16| {
        format!(
            r#"
            [ably]
            api_key = "{API_KEY}"
            [policy]
            path = "{policy}"
            [[issuers]]
            name = "app-session"
            kind = "session_endpoint"
            url = "http://127.0.0.1:{port}/api/auth/session"
            forward_cookies = ["authjs.session-token"]
            [[issuers]]
            name = "hydra"
            kind = "introspection"
            url = "http://127.0.0.1:{introspect_port}/oauth2/introspect"
            client_id = "ably-tokend"
            client_secret_env = "{CLIENT_SECRET_ENV}"
            "#,
            policy = dir.join("policy.toml").display(),
            port = upstream.port,
        )
    };
    let run = |text: String| {
        let file = dir.join("ably-tokend.toml");
        std::fs::write(&file, text).unwrap();
        actix_web::rt::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ably-tokend"))
                .arg("check-config")
                .arg("--config")
                .arg(&file)
                .env_remove("ABLY_API_KEY")
                .env(CLIENT_SECRET_ENV, CLIENT_SECRET)
                .output()
                .unwrap()
        })
    };
    let out = run(config(upstream.port)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    let port = upstream.port;
    assert!(
        stdout.contains(&format!(
            "issuer   ok   app-session  session endpoint http://127.0.0.1:{port}/api/auth/session reachable: \
             GET without cookies answered 200 null (no session, as expected); forwards authjs.session-token\n"
        )),
        "{stdout}"
    );
    // The test's endpoint answers a GET with 404 (it takes POST); reachable all the same.
    assert!(
        stdout.contains(&format!(
            "issuer   ok   hydra        introspection endpoint http://127.0.0.1:{port}/oauth2/introspect reachable: \
             GET without a token answered 404; client ably-tokend with the secret in {CLIENT_SECRET_ENV} (present)\n"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(CLIENT_SECRET));
    let seen = upstream.seen();
    assert_eq!(
        seen.len(),
        1,
        "the introspection endpoint was never POSTed to"
    );
    assert_eq!(seen[0].cookie, None);

    let out = run(config(closed)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "issuer   FAIL hydra        introspection endpoint http://127.0.0.1:{closed}/oauth2/introspect: could not connect to the endpoint\n"
        )),
        "{stdout}"
    );
    assert!(stdout.ends_with("1 problem found\n"), "{stdout}");
    upstream.server.stop().await;
}

/// The app's configuration (loopback, one worker, no rate limit, the test
/// key) around `issuers`, its `[[issuers]]` tables.
fn config_around(issuers: &str) -> String {
    format!(
        r#"
        [server]
        bind = "127.0.0.1:0"
        workers = 1
        rate_limit_per_second = 0
        [ably]
        api_key = "{API_KEY}"
        [log]
        level = "warn"
        {issuers}
        "#
    )
}

/// Better Auth's `bearer` plugin: the session token as `Authorization:
/// Bearer`, forwarded as it came when the session endpoint asks for it.
#[actix_web::test]
async fn a_session_endpoint_with_forward_authorization_takes_opaque_bearers() {
    let upstream = UpstreamServer::start().await;
    upstream.session("better-auth-token", authjs_session("u-9", "support"));
    let config = config_around(&format!(
        r#"
        [[issuers]]
        name = "better-auth"
        kind = "session_endpoint"
        url = "http://127.0.0.1:{port}/api/auth/session"
        forward_cookies = ["authjs.session-token"]
        forward_authorization = true
        client_id_claim = "/user/id"
        roles_claim = "/user/role"
        "#,
        port = upstream.port
    ));
    let app = TestApp::spawn_with(&config, TEST_POLICY).await;
    let body = ok_json(
        app.client
            .get(app.url("/api/ably-token"))
            .header("authorization", "Bearer better-auth-token")
            .header("cookie", "authjs.session-token=ignored; theme=dark")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["clientId"], "u-9");
    let seen = upstream.seen();
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer better-auth-token")
    );
    assert_eq!(seen[0].cookie, None, "the header decided: no cookie goes");
    upstream.server.stop().await;
}

/// README.md's Better Auth block as written, its URL pointed at an endpoint
/// answering as Better Auth's `get-session` does but with a session whose
/// `expiresAt` has passed: the real package (tests/identity/better-auth.test.mjs)
/// never answers that (it answers `null`), so only a stand-in can show that the
/// block's `expires_pointer` is read and an expired answer refused.
#[actix_web::test]
async fn the_readmes_better_auth_block_refuses_a_session_past_its_expires_at() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let marker = "<!-- identity-config: better-auth -->\n```toml\n";
    let at = readme
        .find(marker)
        .expect("README.md marks the Better Auth block")
        + marker.len();
    let block = &readme[at..at + readme[at..].find("```").unwrap()];
    let upstream = UpstreamServer::start().await;
    let block = block.replace(
        "http://127.0.0.1:3000/",
        &format!("http://127.0.0.1:{}/", upstream.port),
    );
    let config = config_around(&block);
    let app = TestApp::spawn_with(&config, TEST_POLICY).await;
    let live = humantime::format_rfc3339_millis(
        std::time::SystemTime::now() + std::time::Duration::from_secs(7 * 86400),
    )
    .to_string();
    for (cookie, expires_at) in [
        ("live.sig", live.as_str()),
        ("expired.sig", "2020-01-01T00:00:00.000Z"),
    ] {
        upstream.session(
            cookie,
            json!({"session": {"id": "s1", "userId": "ba-user-1", "expiresAt": expires_at},
                   "user": {"id": "ba-user-1", "role": "support"}}),
        );
    }
    // The same answer with a live expiresAt is accepted: the refusal below is the expiry.
    let body = ok_json(
        app.get_with_cookie("/api/ably-token", "better-auth.session_token=live.sig")
            .await,
    )
    .await;
    assert_eq!(body["clientId"], "ba-user-1");
    let expired = app
        .get_with_cookie("/api/ably-token", "better-auth.session_token=expired.sig")
        .await;
    assert_error(expired, 401, "session_invalid").await;
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "both were asked");
    assert_eq!(seen[1].path, "/api/auth/get-session");
    upstream.server.stop().await;
}
