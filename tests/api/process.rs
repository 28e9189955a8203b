//! The real binary as ops run it: logs that never hold a secret, SIGHUP
//! reloads, and SIGTERM during in-flight requests.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const ISSUER_SECRET: &str = "dev-issuer-secret-0123456789abcdefXYZ";

struct Running {
    child: Child,
    base: String,
    /// The config file's directory, removed after the child is killed.
    _dir: TempDir,
}

/// A test that fails half-way must not leave the binary running.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts `ably-tokend serve` with JSON logs on a free port.
async fn serve(jwks: &JwksServer, policy: &std::path::Path, extra: &str) -> Running {
    let dir = tempdir("process");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("ably-tokend.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [server]
            bind = "127.0.0.1:{port}"
            shutdown_timeout = "10s"
            {extra}
            [ably]
            api_key = "{API_KEY}"
            [[issuers]]
            name = "clerk"
            issuer = "{CLERK_ISS}"
            jwks_url = "{url}"
            roles_claim = "/metadata/role"
            [[issuers]]
            name = "dev"
            issuer = "dev-issuer"
            secret = "{ISSUER_SECRET}"
            [policy]
            path = {policy:?}
            watch = false
            [log]
            format = "json"
            "#,
            url = jwks.url(),
            policy = policy.display().to_string(),
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ably-tokend"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("ABLY_API_KEY")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let running = Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let health = format!("{}/healthz", running.base);
    let client = reqwest::Client::new();
    eventually("ably-tokend serve to start", || async {
        client.get(&health).send().await.is_ok()
    })
    .await;
    running
}

async fn finish(mut running: Running) -> (Option<i32>, String, String) {
    let status = wait_for("ably-tokend to exit", || {
        std::future::ready(running.child.try_wait().unwrap())
    })
    .await;
    let out = read_all(running.child.stdout.take());
    let err = read_all(running.child.stderr.take());
    (status.code(), out, err)
}

/// All that is left to read from a child's piped stdout or stderr.
fn read_all(pipe: Option<impl Read>) -> String {
    let mut text = String::new();
    pipe.unwrap().read_to_string(&mut text).unwrap();
    text
}

#[actix_web::test]
async fn logs_have_one_line_per_request_and_never_a_secret_or_token() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let policy = scratch_file("logs", "policy.toml", TEST_POLICY);
    let running = serve(&jwks, &policy, "").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/ably-token", running.base);
    let session = key.sign(clerk_header(), &clerk_claims("user_42", Some("support")));
    let expired = {
        let mut claims = clerk_claims("user_43", None);
        claims["exp"] = serde_json::json!(now() - 60);
        key.sign(clerk_header(), &claims)
    };
    let forged = format!("{}x", &session[..session.len() - 1]);
    let mut issued = Vec::new();
    for token in [&session, &expired, &forged] {
        let response = client.get(&url).bearer_auth(token).send().await.unwrap();
        issued.push(response.text().await.unwrap());
    }
    client
        .get(format!("{}?format=jwt", url))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    client
        .get(&url)
        .header("cookie", format!("__session={session}"))
        .send()
        .await
        .unwrap();
    signal(&running.child, "TERM");
    let (code, out, err) = finish(running).await;
    assert_eq!(code, Some(0), "stderr: {err}");

    let request_lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "ably_tokend::request")
        .collect();
    // Five token requests; the start-up /healthz polls log at debug.
    assert_eq!(request_lines.len(), 5, "one line per request\n{out}");
    let first = &request_lines[0];
    assert_eq!(first["route"], "/api/ably-token");
    assert_eq!(first["status"], 200);
    assert_eq!(first["reason"], "issued");
    assert_eq!(first["sub"], "user_42");
    assert_eq!(first["sid"], "sess_user_42");
    assert!(first["jti"].as_str().unwrap().starts_with("jti_user_42"));
    assert!(first["request_id"].as_str().unwrap().len() >= 32);
    assert!(first["latency_ms"].as_f64().unwrap() > 0.0);
    let reasons: Vec<&str> = request_lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"session_token_expired"), "{reasons:?}");
    assert!(reasons.contains(&"signature_invalid"), "{reasons:?}");

    let all = format!("{out}\n{err}");
    let signature = session.rsplit('.').next().unwrap();
    let mac = serde_json::from_str::<Value>(&issued[0]).unwrap()["mac"]
        .as_str()
        .unwrap()
        .to_string();
    for secret in [
        KEY_SECRET,
        ISSUER_SECRET,
        session.as_str(),
        signature,
        expired.as_str(),
        forged.as_str(),
        mac.as_str(),
    ] {
        assert!(
            !all.contains(secret),
            "the logs hold a secret or token: {secret:.12}…"
        );
    }
}

#[actix_web::test]
async fn sighup_reloads_the_policy() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let policy = scratch_file("sighup", "policy.toml", TEST_POLICY);
    let running = serve(&jwks, &policy, "").await;
    let client = reqwest::Client::new();
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let ask = || async {
        let r: Value = send_json(
            client
                .get(format!("{}/api/ably-token", running.base))
                .bearer_auth(&session),
        )
        .await;
        r["capability"].as_str().unwrap().to_string()
    };
    assert!(ask().await.contains("orders:user_1:*"));
    std::fs::write(
        &policy,
        "version = 1\ndefault_roles = [\"c\"]\n[roles.c]\ncapabilities = [{ channel = \"lobby\", operations = [\"subscribe\"] }]\n",
    )
    .unwrap();
    signal(&running.child, "HUP");
    eventually("the reloaded policy's capability", || async {
        ask().await == r#"{"lobby":["subscribe"]}"#
    })
    .await;
    signal(&running.child, "TERM");
    let (code, out, _) = finish(running).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("policy reloaded"), "{out}");
}

#[actix_web::test]
async fn sigterm_lets_in_flight_requests_finish_and_exits_0() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    // The first JWKS fetch takes 1.5 s: requests are in flight when SIGTERM comes.
    jwks.set_delay(Duration::from_millis(1500));
    let policy = scratch_file("sigterm", "policy.toml", TEST_POLICY);
    let running = serve(&jwks, &policy, "").await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let client = reqwest::Client::new();
    let url = format!("{}/api/ably-token", running.base);
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let request = client.get(&url).bearer_auth(&session).send();
            actix_web::rt::spawn(request)
        })
        .collect();
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    signal(&running.child, "TERM");
    for request in in_flight {
        let response = request
            .await
            .unwrap()
            .expect("the in-flight request completed");
        let body = ok_json(response).await;
        assert_eq!(body["clientId"], "user_1");
    }
    // New connections are refused once it is stopping.
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let (code, _, err) = finish(running).await;
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(
        client.get(&url).send().await.is_err(),
        "the port is closed after exit"
    );
}

/// A long `server.keep_alive` does not lengthen a shutdown: on SIGTERM an
/// idle keep-alive connection is closed at once, not after
/// `shutdown_timeout` (10 s here), and the process exits 0.
#[actix_web::test]
async fn sigterm_closes_idle_keep_alive_connections_at_once() {
    use std::io::{Read, Write};
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let policy = scratch_file("sigterm-idle", "policy.toml", TEST_POLICY);
    let running = serve(&jwks, &policy, "keep_alive = \"1h\"").await;
    let addr = running.base.trim_start_matches("http://").to_string();
    let idle = actix_web::rt::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 2048];
        let n = stream.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        assert!(String::from_utf8_lossy(&buf[..n]).contains("keep-alive: timeout=3600"));
        stream
    })
    .await
    .unwrap();
    signal(&running.child, "TERM");
    // Half the shutdown timeout: the connection must be closed well before.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let closed = actix_web::rt::task::spawn_blocking(move || {
        let mut idle = idle;
        let mut buf = [0u8; 64];
        idle.read(&mut buf)
    })
    .await
    .unwrap();
    assert!(
        matches!(closed, Ok(0)),
        "the idle connection was not closed on SIGTERM: {closed:?}"
    );
    let (code, _, err) = finish(running).await;
    assert_eq!(code, Some(0), "stderr: {err}");
}
