//! `kind = "session_endpoint"`: for opaque sessions (Auth.js database
//! sessions, Better Auth, Rails, Django …) the app itself is asked who the
//! caller is. Only the listed cookies (and Authorization, when the issuer
//! says so) are sent, a redirect is never followed, and the answer is bounded
//! in time and size before it is parsed. 200 with a JSON object is the
//! session, whose whole body becomes the claims; `null`, `{}`, 401, 403 and
//! any 3xx are refusals (401 `session_invalid`); anything else is the
//! upstream failing (503 `session_upstream_unavailable`), never a 500.

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, COOKIE};
use serde_json::Value;

use super::lookup::{self, read_expiry, Answer, ExpiryFormat};
use super::lookup_cache::{LookupCache, LookupCounts};
use super::UpstreamError;
use crate::clock::SharedClock;
use crate::config::SessionEndpointSettings;

/// What the caller sent that may be forwarded, as it came.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    /// Cookie name/value pairs in arrival order, chunks (`NAME.0`, `NAME.1` …) included.
    pub(crate) cookies: Vec<(String, String)>,
    /// The whole `Authorization` header value (`Bearer …`).
    pub(crate) authorization: Option<String>,
}

/// Never prints a cookie value or the Authorization header.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.cookies.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Credentials")
            .field("cookies", &names)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

pub(crate) struct SessionEndpoint {
    issuer: String,
    settings: SessionEndpointSettings,
    client: reqwest::Client,
    cache: LookupCache,
    clock: SharedClock,
}

/// The headers one look-up sends, built from the listed credentials only.
struct Forwarded {
    cookie: Option<HeaderValue>,
    authorization: Option<HeaderValue>,
}

impl SessionEndpoint {
    /// How its look-ups ended so far, and how many answers it holds.
    pub(crate) fn counts(&self) -> LookupCounts {
        self.cache.counts()
    }

    /// `client` should be [`lookup::client`] (it never follows redirects).
    pub(crate) fn new(
        issuer: &str,
        settings: SessionEndpointSettings,
        client: reqwest::Client,
        clock: SharedClock,
    ) -> SessionEndpoint {
        SessionEndpoint {
            issuer: issuer.to_string(),
            cache: LookupCache::new(settings.cache_ttl, clock.clone()),
            settings,
            client,
            clock,
        }
    }

    /// The session's claims: the whole JSON object the endpoint answered.
    pub(crate) async fn look_up(&self, credentials: &Credentials) -> Result<Value, UpstreamError> {
        let forwarded = self.forwarded(credentials)?;
        let key = lookup::key(&[
            b"cookie",
            forwarded.cookie.as_ref().map_or(&b""[..], |v| v.as_bytes()),
            b"authorization",
            forwarded
                .authorization
                .as_ref()
                .map_or(&b""[..], |v| v.as_bytes()),
        ]);
        self.cache
            .get_or_fetch(key, || self.fetch(forwarded))
            .await
            .map(|claims| Value::clone(&claims))
            .map_err(|e| e.into_upstream(&self.issuer))
    }

    /// Keeps the listed cookies (and their chunks) and, if the issuer asks
    /// for it, the Authorization header; nothing else ever leaves.
    fn forwarded(&self, credentials: &Credentials) -> Result<Forwarded, UpstreamError> {
        let listed = |name: &str| {
            self.settings.forward_cookies.iter().any(|listed| {
                name == listed
                    || name
                        .strip_prefix(listed.as_str())
                        .and_then(|rest| rest.strip_prefix('.'))
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        };
        let pairs: Vec<String> = credentials
            .cookies
            .iter()
            .filter(|(name, _)| listed(name))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let malformed = |_| UpstreamError::Malformed("a forwarded header holds invalid characters");
        let cookie = if pairs.is_empty() {
            None
        } else {
            Some(HeaderValue::from_str(&pairs.join("; ")).map_err(malformed)?)
        };
        let authorization = match &credentials.authorization {
            Some(value) if self.settings.forward_authorization => {
                Some(HeaderValue::from_str(value).map_err(malformed)?)
            }
            _ => None,
        };
        if cookie.is_none() && authorization.is_none() {
            return Err(UpstreamError::Missing);
        }
        Ok(Forwarded {
            cookie,
            authorization,
        })
    }

    async fn fetch(&self, forwarded: Forwarded) -> Answer {
        let mut request = self
            .client
            .get(self.settings.url.clone())
            .header(ACCEPT, "application/json");
        if let Some(cookie) = forwarded.cookie {
            request = request.header(COOKIE, cookie);
        }
        if let Some(authorization) = forwarded.authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let answer = match lookup::send(request, self.settings.timeout, "session endpoint").await {
            Ok((status, body)) => interpret(
                status,
                &body,
                self.settings.expires_pointer.as_str(),
                self.clock.now_ms(),
            ),
            Err(error) => Answer {
                claims: Err(error),
                expires_at_ms: None,
            },
        };
        answer.log_failure(
            &self.issuer,
            &self.settings.url,
            "the session endpoint",
            "the session",
        );
        answer
    }
}

/// What an answer means, from its status and (for a 200) its body.
pub(crate) fn interpret(status: u16, body: &[u8], expires_pointer: &str, now_ms: u64) -> Answer {
    match status {
        200 => interpret_body(body, expires_pointer, now_ms),
        300..=399 => Answer::refused(format!(
            "the session endpoint redirected ({status}), which means no session; not followed"
        )),
        401 | 403 => Answer::refused(format!("the session endpoint answered {status}")),
        _ => Answer::unavailable(format!("the session endpoint answered {status}")),
    }
}

/// A 200's body: a JSON object is the session, `null` (Auth.js v5) or `{}`
/// (NextAuth v4) is none, anything else is an endpoint that does not work.
pub(crate) fn interpret_body(body: &[u8], expires_pointer: &str, now_ms: u64) -> Answer {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => return Answer::unavailable("the session endpoint's answer is not JSON"),
    };
    match &value {
        Value::Null => Answer::refused("the session endpoint answered null: no session"),
        Value::Object(map) if map.is_empty() => {
            Answer::refused("the session endpoint answered {}: no session")
        }
        Value::Object(_) => {
            match read_expiry(
                value.pointer(expires_pointer),
                ExpiryFormat::SecondsOrRfc3339,
            ) {
                Ok(expires_at_ms) => Answer::session(value, expires_at_ms, now_ms),
                Err(why) => Answer::unavailable(format!("{why} (at {expires_pointer})")),
            }
        }
        _ => Answer::unavailable("the session endpoint's answer is not a JSON object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::remote::{session_endpoint, RawSessionEndpoint};
    use crate::upstream::lookup::testing::{capture_log, start, Reply, Server};
    use serde_json::json;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// 2023-11-14T22:13:20Z.
    const NOW_MS: u64 = 1_700_000_000_000;
    const COOKIE: &str = "authjs.session-token";

    fn auth_js_session(expires: &str) -> String {
        json!({
            "user": {"id": "user-1", "name": "Ada", "email": "ada@example.com", "role": "support"},
            "expires": expires
        })
        .to_string()
    }

    fn endpoint(
        server: &Server,
        tweak: impl FnOnce(&mut RawSessionEndpoint),
    ) -> (Arc<SessionEndpoint>, Arc<ManualClock>) {
        let mut raw = RawSessionEndpoint {
            url: Some(server.url("/api/auth/session")),
            forward_cookies: vec![COOKIE.into(), "__Secure-authjs.session-token".into()],
            ..RawSessionEndpoint::default()
        };
        tweak(&mut raw);
        let settings = session_endpoint(0, raw).unwrap();
        let clock = ManualClock::at_ms(NOW_MS);
        (
            Arc::new(SessionEndpoint::new(
                "app-session",
                settings,
                lookup::client(),
                clock.clone(),
            )),
            clock,
        )
    }

    fn cookies(pairs: &[(&str, &str)]) -> Credentials {
        Credentials {
            cookies: pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            authorization: None,
        }
    }

    fn session_cookie(value: &str) -> Credentials {
        cookies(&[(COOKIE, value)])
    }

    async fn reason(endpoint: &SessionEndpoint, credentials: &Credentials) -> &'static str {
        endpoint.look_up(credentials).await.unwrap_err().reason()
    }

    #[tokio::test]
    async fn a_valid_session_yields_the_whole_answer_as_claims() {
        let server = start(|_| Reply::json(200, auth_js_session("2023-12-14T22:13:20.000Z"))).await;
        let (endpoint, _) = endpoint(&server, |_| {});
        let claims = endpoint.look_up(&session_cookie("opaque-1")).await.unwrap();
        assert_eq!(claims["user"]["id"], "user-1");
        assert_eq!(claims["user"]["role"], "support");
        assert_eq!(claims["expires"], "2023-12-14T22:13:20.000Z");
        let request = server.last();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/api/auth/session");
        assert_eq!(request.header("accept"), Some("application/json"));
    }

    #[tokio::test]
    async fn only_the_listed_cookies_and_their_chunks_are_forwarded() {
        let server = start(|_| Reply::json(200, auth_js_session("2023-12-14T22:13:20Z"))).await;
        let (endpoint, _) = endpoint(&server, |_| {});
        let mut credentials = cookies(&[
            ("analytics", "track-me"),
            ("authjs.session-token.0", "part-a"),
            ("authjs.csrf-token", "csrf"),
            ("authjs.session-token.1", "part-b"),
            ("authjs.session-token.x", "not-a-chunk"),
            ("authjs.session-tokens", "lookalike"),
        ]);
        credentials.authorization = Some("Bearer not-asked-for".into());
        endpoint.look_up(&credentials).await.unwrap();
        let request = server.last();
        assert_eq!(
            request.header("cookie"),
            Some("authjs.session-token.0=part-a; authjs.session-token.1=part-b")
        );
        assert_eq!(request.header("authorization"), None, "not asked for");
        let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        for name in &names {
            assert!(
                ["host", "accept", "cookie", "user-agent"].contains(name),
                "sent {name}: {names:?}"
            );
        }
    }

    #[tokio::test]
    async fn authorization_is_forwarded_only_when_the_issuer_asks() {
        let server = start(|_| Reply::json(200, auth_js_session("2023-12-14T22:13:20Z"))).await;
        let (endpoint, _) = endpoint(&server, |raw| raw.forward_authorization = true);
        let credentials = Credentials {
            cookies: vec![("other".into(), "x".into())],
            authorization: Some("Bearer opaque-bearer".into()),
        };
        endpoint.look_up(&credentials).await.unwrap();
        let request = server.last();
        assert_eq!(
            request.header("authorization"),
            Some("Bearer opaque-bearer")
        );
        assert_eq!(request.header("cookie"), None, "an unlisted cookie stays");

        let (endpoint, _) = self::endpoint(&server, |_| {});
        let error = endpoint.look_up(&credentials).await.unwrap_err();
        assert_eq!(
            error.reason(),
            "session_token_missing",
            "nothing listed to forward"
        );
        assert_eq!(server.calls(), 1, "and nothing is sent");
    }

    #[tokio::test]
    async fn cookies_and_authorization_never_reach_the_log() {
        let (log, _guard) = capture_log();
        let answer = Arc::new(std::sync::Mutex::new(Reply::json(200, "null")));
        let scripted = answer.clone();
        let server = start(move |_| scripted.lock().unwrap().clone()).await;
        let (endpoint, clock) = endpoint(&server, |raw| raw.forward_authorization = true);
        let credentials = Credentials {
            cookies: vec![(COOKIE.into(), "cookie-value-7f3a".into())],
            authorization: Some("Bearer bearer-value-9c2e".into()),
        };
        for reply in [
            Reply::json(200, "null"),
            Reply::json(500, "cookie-value-7f3a"),
            Reply::json(200, auth_js_session("2023-12-14T22:13:20Z")),
        ] {
            *answer.lock().unwrap() = reply;
            clock.advance_secs(5);
            let _ = endpoint.look_up(&credentials).await;
            let _ = endpoint.look_up(&session_cookie("other-cookie-5d1b")).await;
        }
        assert!(format!("{credentials:?}").contains("<hidden>"));
        assert!(!format!("{credentials:?}").contains("cookie-value-7f3a"));
        let text = log.text();
        assert!(
            text.contains("session_invalid") && text.contains("session_upstream_unavailable"),
            "{text}"
        );
        for secret in [
            "cookie-value-7f3a",
            "bearer-value-9c2e",
            "other-cookie-5d1b",
        ] {
            assert!(!text.contains(secret), "{secret} is logged: {text}");
        }
    }

    #[tokio::test]
    async fn a_redirect_is_a_refusal_and_is_not_followed() {
        let server = start(|request| {
            if request.path == "/signin" {
                Reply::json(200, auth_js_session("2023-12-14T22:13:20Z"))
            } else {
                Reply::With(302, vec![("location", "/signin".into())], String::new())
            }
        })
        .await;
        let (endpoint, _) = endpoint(&server, |_| {});
        let error = endpoint.look_up(&session_cookie("v")).await.unwrap_err();
        assert_eq!(error.reason(), "session_invalid");
        assert_eq!(
            error.to_string(),
            "the session is not valid for issuer \"app-session\": sign in again"
        );
        assert_eq!(server.calls(), 1, "the Location was not fetched");
    }

    #[tokio::test]
    async fn null_empty_401_and_403_are_refusals() {
        for reply in [
            Reply::json(200, "null"),
            Reply::json(200, "{}"),
            Reply::json(401, "{}"),
            Reply::json(403, "forbidden"),
        ] {
            let server = start(move |_| reply.clone()).await;
            let (endpoint, _) = endpoint(&server, |_| {});
            assert_eq!(
                reason(&endpoint, &session_cookie("v")).await,
                "session_invalid"
            );
        }
    }

    #[tokio::test]
    async fn garbage_and_server_errors_are_the_upstream_failing() {
        for reply in [
            Reply::json(200, "<html>sign in</html>"),
            Reply::json(200, "[1, 2]"),
            Reply::json(200, r#"{"user": {"id": "u"}, "expires": "next week"}"#),
            Reply::json(500, "{}"),
            Reply::json(502, ""),
            Reply::json(404, "{}"),
            Reply::json(200, ""),
        ] {
            let server = start(move |_| reply.clone()).await;
            let (endpoint, _) = endpoint(&server, |_| {});
            let error = endpoint.look_up(&session_cookie("v")).await.unwrap_err();
            assert_eq!(error.reason(), "session_upstream_unavailable");
            assert_eq!(
                error.to_string(),
                "issuer \"app-session\" could not be asked about the session: try again later"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_the_upstream_failing() {
        let server = start(|_| Reply::json(200, "null")).await;
        let (endpoint, _) = endpoint(&server, |raw| {
            raw.url = Some("http://127.0.0.1:1/api/auth/session".into())
        });
        assert_eq!(
            reason(&endpoint, &session_cookie("v")).await,
            "session_upstream_unavailable"
        );
    }

    #[tokio::test]
    async fn a_stalled_endpoint_times_out_within_the_bound() {
        let server =
            start(|_| Reply::After(Duration::from_secs(30), Box::new(Reply::json(200, "null"))))
                .await;
        let (endpoint, _) = endpoint(&server, |raw| raw.timeout = "300ms".into());
        let started = Instant::now();
        assert_eq!(
            reason(&endpoint, &session_cookie("v")).await,
            "session_upstream_unavailable"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "took {took:?}"
        );
    }

    #[tokio::test]
    async fn a_ten_megabyte_answer_is_cut_off_unread() {
        for declared in [true, false] {
            let server = start(move |_| Reply::Huge {
                bytes: 10 * 1024 * 1024,
                declared,
            })
            .await;
            let (endpoint, _) = endpoint(&server, |_| {});
            assert_eq!(
                reason(&endpoint, &session_cookie("v")).await,
                "session_upstream_unavailable"
            );
            // The server notices the connection closing before it has sent it all.
            let mut seen = None;
            for _ in 0..200 {
                seen = *server.huge.lock().unwrap();
                if seen.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let (written, cut) = seen.expect("the server finished writing");
            assert!(
                cut,
                "declared={declared}: the server wrote all {written} bytes"
            );
            assert!(written < 10 * 1024 * 1024);
        }
    }

    #[tokio::test]
    async fn answers_are_cached_by_what_was_forwarded_never_past_the_session() {
        let server = start(|_| Reply::json(200, auth_js_session("2023-11-14T22:13:30Z"))).await;
        let (endpoint, clock) = endpoint(&server, |_| {});
        endpoint.look_up(&session_cookie("a")).await.unwrap();
        endpoint.look_up(&session_cookie("a")).await.unwrap();
        assert_eq!(server.calls(), 1, "a hit");
        endpoint.look_up(&session_cookie("b")).await.unwrap();
        assert_eq!(server.calls(), 2, "another session is another key");

        // The session expires 10 s from now, before cache_ttl (30 s).
        clock.advance(Duration::from_millis(9_999));
        endpoint.look_up(&session_cookie("a")).await.unwrap();
        assert_eq!(server.calls(), 2);
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            reason(&endpoint, &session_cookie("a")).await,
            "session_invalid"
        );
        assert_eq!(
            server.calls(),
            3,
            "asked again at the expiry, which has passed"
        );
    }

    #[tokio::test]
    async fn refusals_are_cached_five_seconds_and_failures_are_not() {
        let answer = Arc::new(std::sync::Mutex::new(Reply::json(200, "null")));
        let scripted = answer.clone();
        let server = start(move |_| scripted.lock().unwrap().clone()).await;
        let (endpoint, clock) = endpoint(&server, |_| {});
        assert_eq!(
            reason(&endpoint, &session_cookie("a")).await,
            "session_invalid"
        );
        *answer.lock().unwrap() = Reply::json(200, auth_js_session("2023-12-14T22:13:20Z"));
        clock.advance_secs(4);
        assert_eq!(
            reason(&endpoint, &session_cookie("a")).await,
            "session_invalid"
        );
        assert_eq!(server.calls(), 1);
        clock.advance_secs(1);
        assert!(endpoint.look_up(&session_cookie("a")).await.is_ok());
        assert_eq!(server.calls(), 2);

        *answer.lock().unwrap() = Reply::json(503, "");
        for _ in 0..2 {
            assert_eq!(
                reason(&endpoint, &session_cookie("down")).await,
                "session_upstream_unavailable"
            );
        }
        assert_eq!(server.calls(), 4, "a failure is asked again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_concurrent_look_ups_of_one_session_make_one_call() {
        let server = start(|_| {
            Reply::After(
                Duration::from_millis(300),
                Box::new(Reply::json(200, auth_js_session("2023-12-14T22:13:20Z"))),
            )
        })
        .await;
        let (endpoint, _) = endpoint(&server, |_| {});
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let endpoint = endpoint.clone();
            callers.spawn(async move { endpoint.look_up(&session_cookie("same")).await });
        }
        let mut answered = 0;
        while let Some(result) = callers.join_next().await {
            assert_eq!(result.unwrap().unwrap()["user"]["id"], "user-1");
            answered += 1;
        }
        assert_eq!(answered, 20);
        assert_eq!(server.calls(), 1);
    }

    /// `node tests/support/authjs-session/server.mjs`: a real `@auth/core`
    /// `Auth()` handler with database sessions; ended when dropped.
    struct AuthJs {
        child: std::process::Child,
        port: u16,
        cookie: (String, String),
    }

    impl AuthJs {
        fn start() -> AuthJs {
            use std::io::BufRead;
            use std::process::{Command, Stdio};
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/support/authjs-session");
            if !dir.join("node_modules/@auth/core").exists() {
                let status = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .status()
                    .expect("npm is needed for the @auth/core session-endpoint test (Node.js 20+)");
                assert!(status.success(), "npm ci in {} failed", dir.display());
            }
            let mut child = Command::new("node")
                .arg("server.mjs")
                .current_dir(&dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("node is needed for the @auth/core session-endpoint test (Node.js 20+)");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let started: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("server.mjs did not start ({e}): {line:?}"));
            AuthJs {
                child,
                port: started["port"].as_u64().unwrap() as u16,
                cookie: (
                    started["cookie"]["name"].as_str().unwrap().into(),
                    started["cookie"]["value"].as_str().unwrap().into(),
                ),
            }
        }
    }

    impl Drop for AuthJs {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn a_real_auth_js_handler_answers_for_a_database_session() {
        let authjs = AuthJs::start();
        let raw = RawSessionEndpoint {
            url: Some(format!("http://127.0.0.1:{}/api/auth/session", authjs.port)),
            forward_cookies: vec![COOKIE.into(), "__Secure-authjs.session-token".into()],
            ..RawSessionEndpoint::default()
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let clock = ManualClock::at_ms(now_ms);
        let endpoint = SessionEndpoint::new(
            "authjs-db",
            session_endpoint(0, raw).unwrap(),
            lookup::client(),
            clock.clone(),
        );
        let (name, value) = authjs.cookie.clone();
        assert_eq!(name, COOKIE);
        let signed_in = cookies(&[("analytics", "x"), (&name, &value)]);
        let claims = endpoint.look_up(&signed_in).await.unwrap();
        assert_eq!(claims["user"]["id"], "user-1");
        assert_eq!(claims["user"]["role"], "support");
        assert_eq!(claims["user"]["email"], "ada@example.com");
        let expires = lookup::rfc3339_ms(claims["expires"].as_str().unwrap()).unwrap();
        assert!(
            expires > now_ms + 29 * 86_400_000,
            "Auth.js's 30-day maxAge"
        );

        let tampered = cookies(&[(&name, &format!("{value}0"))]);
        assert_eq!(
            reason(&endpoint, &tampered).await,
            "session_invalid",
            "Auth.js answers null"
        );

        // Signed out elsewhere: the cached answer holds until cache_ttl, then the refusal shows.
        let revoked = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/test/revoke", authjs.port))
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 204);
        assert!(endpoint.look_up(&signed_in).await.is_ok(), "cached");
        clock.advance_secs(30);
        assert_eq!(reason(&endpoint, &signed_in).await, "session_invalid");
    }

    #[test]
    fn the_expiry_is_read_where_the_pointer_says() {
        let better_auth = json!({
            "session": {"id": "s1", "userId": "u1", "expiresAt": "2023-11-21T22:13:20.000Z"},
            "user": {"id": "u1", "role": "admin"}
        })
        .to_string();
        let answer = interpret_body(better_auth.as_bytes(), "/session/expiresAt", NOW_MS);
        assert_eq!(answer.expires_at_ms, Some(NOW_MS + 7 * 86_400_000));
        assert_eq!(answer.claims.unwrap()["user"]["role"], "admin");
        let answer = interpret_body(
            br#"{"user": {}, "expires": 1700000060}"#,
            "/expires",
            NOW_MS,
        );
        assert_eq!(answer.expires_at_ms, Some(NOW_MS + 60_000));
        let answer = interpret_body(br#"{"user": {}}"#, "/expires", NOW_MS);
        assert!(answer.claims.is_ok() && answer.expires_at_ms.is_none());
    }
}
