//! `kind = "introspection"`: RFC 7662 OAuth 2.0 token introspection for
//! opaque access tokens. The token is POSTed as a form (RFC 7662 §2.1) with
//! HTTP Basic client authentication (RFC 6749 §2.3.1); `active: true` is the
//! session and the whole answer its claims (§2.2), `active: false` a refusal
//! (401 `session_invalid`). The endpoint refusing our own client credentials
//! (401/403) is a misconfiguration: logged as an error, answered 503
//! `session_upstream_unavailable` like any other failure. Same time, size and
//! redirect bounds as the session endpoint; never cached past `exp`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::Value;

use super::lookup::{self, read_expiry, Answer, ExpiryFormat};
use super::lookup_cache::{LookupCache, LookupCounts};
use super::UpstreamError;
use crate::clock::SharedClock;
use crate::config::IntrospectionSettings;

pub(crate) struct Introspection {
    issuer: String,
    settings: IntrospectionSettings,
    /// `Basic base64(urlencode(client_id):urlencode(secret))`, built once.
    basic: reqwest::header::HeaderValue,
    client: reqwest::Client,
    cache: LookupCache,
    clock: SharedClock,
}

impl Introspection {
    /// How its look-ups ended so far, and how many answers it holds.
    pub(crate) fn counts(&self) -> LookupCounts {
        self.cache.counts()
    }

    /// `client` should be [`lookup::client`] (it never follows redirects).
    pub(crate) fn new(
        issuer: &str,
        settings: IntrospectionSettings,
        client: reqwest::Client,
        clock: SharedClock,
    ) -> Introspection {
        // RFC 6749 §2.3.1: both are form-urlencoded before they are joined.
        let encode = |bytes: &[u8]| url::form_urlencoded::byte_serialize(bytes).collect::<String>();
        let credentials = format!(
            "{}:{}",
            encode(settings.client_id.as_bytes()),
            encode(settings.client_secret.expose())
        );
        let mut basic = reqwest::header::HeaderValue::from_str(&format!(
            "Basic {}",
            STANDARD.encode(credentials)
        ))
        .expect("base64 is a valid header value");
        basic.set_sensitive(true);
        Introspection {
            issuer: issuer.to_string(),
            cache: LookupCache::new(settings.cache_ttl, clock.clone()),
            basic,
            settings,
            client,
            clock,
        }
    }

    /// The token's claims: the whole introspection answer.
    pub(crate) async fn look_up(&self, token: &str) -> Result<Value, UpstreamError> {
        if token.is_empty() {
            return Err(UpstreamError::Missing);
        }
        let key = lookup::key(&[b"token", token.as_bytes()]);
        self.cache
            .get_or_fetch(key, || self.fetch(token))
            .await
            .map(|claims| Value::clone(&claims))
            .map_err(|e| e.into_upstream(&self.issuer))
    }

    async fn fetch(&self, token: &str) -> Answer {
        let request = self
            .client
            .post(self.settings.url.clone())
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, self.basic.clone())
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        let answer = match lookup::send(request, self.settings.timeout, "introspection endpoint")
            .await
        {
            Ok((401 | 403, _)) => {
                tracing::error!(
                    issuer = %self.issuer,
                    reason = "session_upstream_unavailable",
                    url = %self.settings.url,
                    client_id = %self.settings.client_id,
                    client_secret_env = %self.settings.client_secret_env,
                    "the introspection endpoint refused this sidecar's client credentials: a misconfiguration; check client_id and the secret in the variable client_secret_env names"
                );
                return Answer::unavailable(
                    "the introspection endpoint refused our client credentials",
                );
            }
            Ok((status, body)) => interpret(status, &body, self.clock.now_ms()),
            Err(error) => Answer {
                claims: Err(error),
                expires_at_ms: None,
            },
        };
        answer.log_failure(
            &self.issuer,
            &self.settings.url,
            "the introspection endpoint",
            "the token",
        );
        answer
    }
}

/// What an introspection answer means, from its status and (for a 200) body.
/// 401/403 are handled before this (they are about our credentials).
pub(crate) fn interpret(status: u16, body: &[u8], now_ms: u64) -> Answer {
    if status != 200 {
        // A redirect is not followed: the endpoint is misconfigured, the token is not at fault.
        return Answer::unavailable(format!("the introspection endpoint answered {status}"));
    }
    interpret_body(body, now_ms)
}

/// A 200's body (RFC 7662 §2.2): an object whose `active` is a boolean.
pub(crate) fn interpret_body(body: &[u8], now_ms: u64) -> Answer {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => return Answer::unavailable("the introspection answer is not JSON"),
    };
    match value.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Answer::refused("the token is not active"),
        _ => {
            return Answer::unavailable(
                "the introspection answer has no boolean \"active\" (RFC 7662 §2.2)",
            )
        }
    }
    match read_expiry(value.get("exp"), ExpiryFormat::Seconds) {
        Ok(expires_at_ms) => Answer::session(value, expires_at_ms, now_ms),
        Err(why) => Answer::unavailable(format!("{why} (exp)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::remote::{introspection, RawIntrospection};
    use crate::upstream::lookup::testing::{capture_log, start, Reply, Server};
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Duration;

    const NOW_MS: u64 = 1_700_000_000_000;
    const NOW: u64 = NOW_MS / 1000;
    const SECRET: &str = "intro-secret-9f8e7d6c";

    fn introspector(server: &Server) -> (Introspection, Arc<ManualClock>) {
        let raw = RawIntrospection {
            url: Some(server.url("/oauth2/introspect")),
            client_id: Some("ably-tokend".into()),
            client_secret_env: Some("INTROSPECTION_CLIENT_SECRET".into()),
            ..RawIntrospection::default()
        };
        let env = |name: &str| (name == "INTROSPECTION_CLIENT_SECRET").then(|| SECRET.to_string());
        let settings = introspection(0, raw, &env).unwrap();
        let clock = ManualClock::at_ms(NOW_MS);
        (
            Introspection::new("hydra", settings, lookup::client(), clock.clone()),
            clock,
        )
    }

    fn active(exp: u64) -> Reply {
        Reply::json(
            200,
            json!({"active": true, "sub": "user-7", "client_id": "web", "scope": "openid", "exp": exp, "role": "admin"})
                .to_string(),
        )
    }

    #[tokio::test]
    async fn an_active_token_yields_the_answer_as_claims() {
        let server = start(|_| active(NOW + 60)).await;
        let (introspection, _) = introspector(&server);
        let claims = introspection.look_up("opaque.token/+=").await.unwrap();
        assert_eq!(claims["sub"], "user-7");
        assert_eq!(claims["role"], "admin");
        let request = server.last();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/oauth2/introspect");
        assert_eq!(
            request.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            request.body,
            "token=opaque.token%2F%2B%3D&token_type_hint=access_token"
        );
        let expected = format!("Basic {}", STANDARD.encode(format!("ably-tokend:{SECRET}")));
        assert_eq!(request.header("authorization"), Some(expected.as_str()));
    }

    #[tokio::test]
    async fn an_inactive_token_is_refused() {
        let server = start(|_| Reply::json(200, r#"{"active": false}"#)).await;
        let (introspection, _) = introspector(&server);
        let error = introspection.look_up("t").await.unwrap_err();
        assert_eq!(error.reason(), "session_invalid");
        assert_eq!(
            error.to_string(),
            "the session is not valid for issuer \"hydra\": sign in again"
        );
    }

    #[tokio::test]
    async fn our_credentials_refused_is_a_logged_misconfiguration_without_the_secret() {
        let (log, _guard) = capture_log();
        for status in [401, 403] {
            let server = start(move |_| Reply::json(status, r#"{"error":"invalid_client"}"#)).await;
            let (introspection, _) = introspector(&server);
            let error = introspection.look_up("the-users-token").await.unwrap_err();
            assert_eq!(error.reason(), "session_upstream_unavailable");
            // Not cached: the next look-up asks again.
            introspection.look_up("the-users-token").await.unwrap_err();
            assert_eq!(server.calls(), 2);
        }
        let text = log.text();
        assert!(text.contains("ERROR"), "{text}");
        assert!(text.contains("misconfiguration"), "{text}");
        assert!(text.contains("INTROSPECTION_CLIENT_SECRET"), "{text}");
        assert!(!text.contains(SECRET), "the secret is logged: {text}");
        assert!(!text.contains(&STANDARD.encode(format!("ably-tokend:{SECRET}"))));
        assert!(
            !text.contains("the-users-token"),
            "the token is logged: {text}"
        );
    }

    #[tokio::test]
    async fn garbage_errors_and_redirects_are_the_upstream_failing() {
        for reply in [
            Reply::json(200, "not json"),
            Reply::json(200, r#"{"sub": "no active"}"#),
            Reply::json(200, r#"{"active": "true"}"#),
            Reply::json(200, r#"{"active": true, "exp": "1700000060"}"#),
            Reply::json(500, "{}"),
            Reply::With(302, vec![("location", "/elsewhere".into())], String::new()),
            Reply::Huge {
                bytes: 10 * 1024 * 1024,
                declared: true,
            },
        ] {
            let server = start(move |_| reply.clone()).await;
            let (introspection, _) = introspector(&server);
            assert_eq!(
                introspection.look_up("t").await.unwrap_err().reason(),
                "session_upstream_unavailable"
            );
            assert_eq!(server.calls(), 1);
        }
    }

    #[tokio::test]
    async fn an_answer_is_never_cached_past_exp() {
        let server = start(|_| active(NOW + 10)).await;
        let (introspection, clock) = introspector(&server);
        introspection.look_up("t").await.unwrap();
        clock.advance(Duration::from_millis(9_999));
        introspection.look_up("t").await.unwrap();
        assert_eq!(server.calls(), 1, "cached until exp");
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            introspection.look_up("t").await.unwrap_err().reason(),
            "session_invalid",
            "asked again at exp, and active with an exp passed is refused"
        );
        assert_eq!(server.calls(), 2);
    }

    #[tokio::test]
    async fn a_stalled_endpoint_times_out() {
        let server =
            start(|_| Reply::After(Duration::from_secs(30), Box::new(active(NOW + 60)))).await;
        let raw = RawIntrospection {
            url: Some(server.url("/i")),
            client_id: Some("c".into()),
            client_secret_env: Some("S".into()),
            timeout: "200ms".into(),
            ..RawIntrospection::default()
        };
        let settings = introspection(0, raw, &|_| Some("s".into())).unwrap();
        let introspection = Introspection::new(
            "hydra",
            settings,
            lookup::client(),
            ManualClock::at_ms(NOW_MS),
        );
        let started = std::time::Instant::now();
        assert_eq!(
            introspection.look_up("t").await.unwrap_err().reason(),
            "session_upstream_unavailable"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn client_credentials_are_form_encoded_before_basic() {
        let raw = RawIntrospection {
            url: Some("https://auth.example.com/i".into()),
            client_id: Some("my client".into()),
            client_secret_env: Some("S".into()),
            ..RawIntrospection::default()
        };
        let settings = introspection(0, raw, &|_| Some("a:b&c".into())).unwrap();
        let i = Introspection::new("x", settings, lookup::client(), ManualClock::at_ms(0));
        let expected = format!("Basic {}", STANDARD.encode("my+client:a%3Ab%26c"));
        assert_eq!(i.basic.to_str().unwrap(), expected);
        assert!(i.basic.is_sensitive());
    }
}
