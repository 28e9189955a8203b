//! Operating the sidecar: metrics, policy hot reload (also under load and
//! through a ConfigMap-style symlink swap), and the broker's shutdown frame.

use std::path::Path;
use std::time::Duration;

use ably_tokend::config::Settings;
use ably_tokend::http::Application;
use serde_json::Value;

use crate::helpers::*;

const POLICY_V1: &str = r#"
version = 1
default_roles = ["customer"]
[roles.customer]
capabilities = [{ channel = "announcements", operations = ["subscribe"] }]
"#;

const POLICY_V2: &str = r#"
version = 1
default_roles = ["customer"]
[roles.customer]
capabilities = [{ channel = "announcements", operations = ["subscribe", "history"] }]
"#;

const POLICY_BROKEN: &str = r#"
version = 1
default_roles = ["customer"]
[roles.customer]
capabilities = [{ channel = "announcements", operations = ["subscribe", "histroy"] }]
"#;

/// An app whose policy is the file at `policy` (watched).
async fn app_with_policy_file(jwks: &JwksServer, policy: &Path) -> TestApp {
    let config = config_text(&Issuers::clerk(jwks), "")
        + &format!(
            "\n[policy]\npath = {:?}\nwatch = true\n",
            policy.display().to_string()
        );
    let settings = Settings::from_toml(&config).unwrap();
    TestApp::run(Application::build(settings).unwrap())
}

/// A Clerk key's JWKS, the app trusting it and watching the policy file at
/// `policy`, and a session of `user_1`'s signed by that key.
async fn app_watching(policy: &Path) -> (JwksServer, TestApp, String) {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = app_with_policy_file(&jwks, policy).await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    (jwks, app, session)
}

async fn capability(app: &TestApp, session: &str) -> String {
    let response = app.get_token("/api/ably-token", session).await;
    let request = ok_json(response).await;
    request["capability"].as_str().unwrap().to_string()
}

/// Replaces `path`'s content atomically, as editors and ConfigMaps do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[actix_web::test]
async fn metrics_report_requests_tokens_jwks_and_policy() {
    let (key, _jwks, app) = clerk_app().await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", Some("support")));
    assert_eq!(
        app.get_token("/api/ably-token", &session).await.status(),
        200
    );
    assert_eq!(app.get_token("/api/ably-jwt", &session).await.status(), 200);
    let stranger = key.sign(clerk_header(), &clerk_claims("user_2", Some("wizard")));
    assert_eq!(
        app.get_token("/api/ably-token", &stranger).await.status(),
        200
    );
    assert_eq!(app.get("/api/ably-token").await.status(), 401);
    assert_eq!(app.get("/no/such/path").await.status(), 404);

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for line in [
        r#"ably_tokend_requests_total{route="/api/ably-token",status="200",reason="issued"} 2"#,
        r#"ably_tokend_requests_total{route="/api/ably-jwt",status="200",reason="issued"} 1"#,
        r#"ably_tokend_requests_total{route="/api/ably-token",status="401",reason="session_token_missing"} 1"#,
        r#"ably_tokend_requests_total{route="other",status="404",reason="not_found"} 1"#,
        r#"ably_tokend_tokens_issued_total{role="support",format="token_request"} 1"#,
        r#"ably_tokend_tokens_issued_total{role="support",format="jwt"} 1"#,
        r#"ably_tokend_tokens_issued_total{role="customer",format="token_request"} 2"#,
        "ably_tokend_ignored_roles_total 1",
        r#"ably_tokend_jwks_fetches_total{issuer="clerk"} 1"#,
        r#"ably_tokend_jwks_fetch_failures_total{issuer="clerk"} 0"#,
        r#"ably_tokend_jwks_keys{issuer="clerk"} 1"#,
        r#"ably_tokend_jwks_ready{issuer="clerk"} 1"#,
        "ably_tokend_policy_healthy 1",
        "ably_tokend_policy_roles 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.contains(r#"ably_tokend_request_duration_seconds_count{route="/api/ably-token"} 3"#),
        "{text}"
    );
    assert!(!text.contains("no/such/path"));
}

#[actix_web::test]
async fn a_changed_policy_file_is_applied_and_a_broken_one_refused() {
    let policy = scratch_file("reload", "policy.toml", POLICY_V1);
    let (_jwks, app, session) = app_watching(&policy).await;
    assert_eq!(
        capability(&app, &session).await,
        r#"{"announcements":["subscribe"]}"#
    );

    replace(&policy, POLICY_V2);
    eventually("the new policy", || async {
        capability(&app, &session).await.contains("history")
    })
    .await;

    replace(&policy, POLICY_BROKEN);
    eventually("the refusal in /readyz", || async {
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        ready["policy"]["reload_error"].is_string()
    })
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(
        ready.status(),
        200,
        "the previous policy keeps serving, so the pod stays ready"
    );
    let ready: Value = ready.json().await.unwrap();
    let error = ready["policy"]["reload_error"].as_str().unwrap();
    assert!(
        error.contains("policy.toml:5: roles.customer.capabilities[0].operations[1]: \"histroy\" is not an Ably operation"),
        "{error}"
    );
    assert_eq!(
        capability(&app, &session).await,
        r#"{"announcements":["history","subscribe"]}"#
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ably_tokend_policy_healthy 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ably_tokend_policy_reloads_total{outcome="refused"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ably_tokend_policy_reloads_total{outcome="applied"} 1"#),
        "{metrics}"
    );

    replace(&policy, POLICY_V1);
    eventually("recovery", || async {
        !capability(&app, &session).await.contains("history")
    })
    .await;
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert!(ready["policy"]["reload_error"].is_null());
}

#[actix_web::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    // Kubernetes mounts policy.toml -> ..data/policy.toml, ..data -> ..2026_v1,
    // and updates by pointing ..data at a new directory in one rename.
    let dir = tempdir("configmap");
    for (version, text) in [("..v1", POLICY_V1), ("..v2", POLICY_V2)] {
        std::fs::create_dir_all(dir.join(version)).unwrap();
        std::fs::write(dir.join(version).join("policy.toml"), text).unwrap();
    }
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/policy.toml", dir.join("policy.toml")).unwrap();
    let (_jwks, app, session) = app_watching(&dir.join("policy.toml")).await;
    assert_eq!(
        capability(&app, &session).await,
        r#"{"announcements":["subscribe"]}"#
    );

    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    eventually("the swapped policy", || async {
        capability(&app, &session).await.contains("history")
    })
    .await;
}

#[actix_web::test]
async fn reloading_under_load_fails_no_request_and_switches_once() {
    let policy = scratch_file("reload-load", "policy.toml", POLICY_V1);
    let (_jwks, app, session) = app_watching(&policy).await;
    assert_eq!(
        capability(&app, &session).await,
        r#"{"announcements":["subscribe"]}"#
    );

    let client = app.client.clone();
    let url = format!("{}/api/ably-token", app.address);
    let token = session.clone();
    // A bounded load loop: 4 concurrent requesters for at most 6 s.
    let load = actix_web::rt::spawn(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        let mut answers: Vec<(u128, String)> = Vec::new();
        let mut failures = 0;
        while std::time::Instant::now() < deadline {
            let batch = (0..4).map(|_| {
                let client = client.clone();
                let url = url.clone();
                let token = token.clone();
                async move {
                    let response = client.get(url).bearer_auth(token).send().await;
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos();
                    match response {
                        Ok(r) if r.status() == 200 => {
                            let body: Value = r.json().await.unwrap();
                            Ok((at, body["capability"].as_str().unwrap().to_string()))
                        }
                        _ => Err(()),
                    }
                }
            });
            for result in futures_util::future::join_all(batch).await {
                match result {
                    Ok(answer) => answers.push(answer),
                    Err(()) => failures += 1,
                }
            }
        }
        (answers, failures)
    });
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    replace(&policy, POLICY_V2);
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    replace(&policy, POLICY_BROKEN);
    let (mut answers, failures) = load.await.unwrap();
    assert_eq!(failures, 0, "no request failed during the reloads");
    answers.sort();
    let switches = answers.windows(2).filter(|w| w[0].1 != w[1].1).count();
    assert_eq!(switches, 1, "answers switched exactly once");
    assert!(answers.first().unwrap().1 == r#"{"announcements":["subscribe"]}"#);
    assert!(answers.last().unwrap().1 == r#"{"announcements":["history","subscribe"]}"#);
    assert!(
        answers.len() > 50,
        "the load loop ran: {} answers",
        answers.len()
    );
}

#[actix_web::test]
async fn broker_connections_get_disconnected_when_it_stops() {
    let TestBroker { port, handle, .. } =
        spawn_broker(ably_tokend::broker::Limits::default()).await;
    let url = format!("ws://127.0.0.1:{port}/?format=json&key={API_KEY}&clientId=c");
    let mut socket = Socket::connect(&url).await;
    assert_eq!(socket.next().await["action"], 4);
    handle.disconnect_all();
    let frame = socket.next().await;
    assert_eq!(frame["action"], 6);
    assert_eq!(frame["error"]["code"], 80003);
    assert_eq!(frame["error"]["statusCode"], 503);
}
