//! Supabase's session cookie, as `@supabase/ssr` writes it: the cookie
//! `sb-<project-ref>-auth-token` holds the auth-js session JSON
//! (`access_token`, `refresh_token`, `expires_at`, `user`, …), and its
//! `access_token` is the JWT the issuer then verifies as usual.
//!
//! - `cookieEncoding: "base64url"` (the default since @supabase/ssr 0.4):
//!   `base64-` followed by the session JSON in base64url
//!   (`stringToBase64URL` in @supabase/ssr `src/utils/base64url.ts`, no
//!   padding; `src/cookies.ts` adds the prefix).
//! - `cookieEncoding: "raw"` and the versions before 0.4: the JSON itself,
//!   percent-encoded by the cookie serializer (`encodeURIComponent`, from
//!   the `cookie` package's `serialize`).
//!
//! Either may be split into `NAME.0`, `NAME.1`, … (`createChunks` in
//! `src/utils/chunker.ts`); `credential.rs` joins the chunks before this
//! module sees the value. Only `access_token` is read: the refresh token and
//! the user object are never kept. This parses; the JWT is verified by the
//! issuer it came for.

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::Deserialize;

use super::authjs::MAX_COOKIE_BYTES;
use super::jws::MAX_TOKEN_BYTES;
use super::UpstreamError;

/// What @supabase/ssr puts before the base64url text.
const BASE64_PREFIX: &str = "base64-";

/// base64url as @supabase/ssr's `stringFromBase64URL` reads it: padding is
/// not required, and bits past the last whole byte are not checked (trailing
/// `=`, which it skips, are stripped first).
const LENIENT_BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The one field of auth-js's session JSON the sidecar reads; the others
/// (refresh token, user, provider tokens) are skipped unread.
#[derive(Deserialize)]
struct StoredSession {
    access_token: Option<String>,
}

/// The access token (a JWT) inside a Supabase session cookie's value,
/// chunks already joined.
pub(crate) fn access_token(value: &str) -> Result<String, UpstreamError> {
    let json = session_json(value)?;
    // An object only: serde would also fill the struct from an array, which
    // is the older auth-helpers' `[access_token, refresh_token, …]` cookie.
    let not_a_session =
        || UpstreamError::Malformed("the Supabase session cookie does not hold a session object");
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(not_a_session());
    }
    let session: StoredSession = serde_json::from_slice(&json).map_err(|_| not_a_session())?;
    let token = session.access_token.unwrap_or_default();
    if token.is_empty() {
        return Err(UpstreamError::Malformed(
            "the Supabase session cookie has no access_token",
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(UpstreamError::TokenTooLarge("a JWT is at most 8 KiB"));
    }
    Ok(token)
}

/// The cookie's JSON text, still unparsed: base64url after `base64-`,
/// percent-encoded otherwise. The size is checked first.
pub(crate) fn session_json(value: &str) -> Result<Vec<u8>, UpstreamError> {
    if value.len() > MAX_COOKIE_BYTES {
        return Err(UpstreamError::TokenTooLarge(
            "a session cookie is at most 32 KiB",
        ));
    }
    match value.strip_prefix(BASE64_PREFIX) {
        Some(encoded) => LENIENT_BASE64URL
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| {
                UpstreamError::Malformed(
                    "the Supabase session cookie is not base64url after base64-",
                )
            }),
        None => percent_decode(value).ok_or(UpstreamError::Malformed(
            "the Supabase session cookie is neither base64- nor percent-encoded JSON",
        )),
    }
}

/// `%XX` escapes decoded (RFC 3986 §2.1), as `decodeURIComponent` does; any
/// other byte is kept. `None` for a broken escape. The output is never longer
/// than the input.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Supabase session cookies for tests, encoded as @supabase/ssr encodes
/// them (the Node identity suite uses the library itself).
#[cfg(test)]
pub(crate) mod mint {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::{json, Value};

    /// The session JSON auth-js stores around `access_token`.
    pub(crate) fn session(access_token: &str) -> Value {
        json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": 3600,
            "expires_at": 1_700_003_600,
            "refresh_token": "v1.refresh-token-never-read",
            "user": {"id": "8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e", "aud": "authenticated",
                     "app_metadata": {"provider": "email", "roles": ["support"]}},
        })
    }

    /// `base64-` + base64url(JSON), the default encoding.
    pub(crate) fn base64(session: &Value) -> String {
        format!("base64-{}", URL_SAFE_NO_PAD.encode(session.to_string()))
    }

    /// The JSON percent-encoded as `encodeURIComponent` does (`cookieEncoding:
    /// "raw"`, and @supabase/ssr before 0.4).
    pub(crate) fn raw(session: &Value) -> String {
        let mut out = String::new();
        for b in session.to_string().bytes() {
            if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::mint;
    use super::*;
    use serde_json::json;

    const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln";

    fn reason(value: &str) -> &'static str {
        access_token(value).unwrap_err().reason()
    }

    #[test]
    fn both_encodings_yield_the_access_token() {
        let session = mint::session(JWT);
        assert_eq!(access_token(&mint::base64(&session)).unwrap(), JWT);
        assert_eq!(access_token(&mint::raw(&session)).unwrap(), JWT);
        // @supabase/ssr's decoder ignores padding and trailing bits; so does this.
        let padded = format!("{}==", mint::base64(&json!({"access_token": JWT})));
        assert_eq!(access_token(&padded).unwrap(), JWT);
        // Raw JSON a browser would never send unencoded still parses.
        assert_eq!(
            access_token(&json!({"access_token": JWT}).to_string()).unwrap(),
            JWT
        );
    }

    #[test]
    fn non_ascii_user_metadata_round_trips() {
        let mut session = mint::session(JWT);
        session["user"]["user_metadata"] = json!({"name": "Zoë 🚀"});
        assert_eq!(access_token(&mint::base64(&session)).unwrap(), JWT);
        assert_eq!(access_token(&mint::raw(&session)).unwrap(), JWT);
    }

    #[test]
    fn malformed_values_are_refused_with_a_reason() {
        for (value, why) in [
            ("base64-!!!", "not base64url"),
            ("base64-", "empty JSON"),
            ("%7B%22access_token%22%3A", "cut-off JSON"),
            ("%ZZ", "broken escape"),
            ("%7", "short escape"),
            ("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln", "a bare JWT"),
        ] {
            assert_eq!(reason(value), "session_token_malformed", "{why}");
        }
        for session in [
            json!({}),
            json!({"access_token": ""}),
            json!({"access_token": 7}),
            json!({"access_token": null}),
            json!([JWT]),
            json!(JWT),
        ] {
            assert_eq!(
                reason(&mint::base64(&session)),
                "session_token_malformed",
                "{session}"
            );
        }
        let message = access_token(&mint::base64(&json!({}))).unwrap_err();
        assert!(message.to_string().contains("no access_token"), "{message}");
        // A duplicated field is ambiguous, so refused.
        let dup = format!(
            "base64-{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
                r#"{{"access_token":"{JWT}","access_token":"x.y.z"}}"#
            ))
        );
        assert_eq!(reason(&dup), "session_token_malformed");
    }

    #[test]
    fn sizes_are_bounded_before_decoding() {
        let huge = format!("base64-{}", "A".repeat(MAX_COOKIE_BYTES));
        assert_eq!(reason(&huge), "session_token_too_large");
        let long = mint::base64(&mint::session(&"a".repeat(MAX_TOKEN_BYTES + 1)));
        assert!(long.len() < MAX_COOKIE_BYTES);
        assert_eq!(reason(&long), "session_token_too_large");
        let limit = mint::base64(&mint::session(&"a".repeat(MAX_TOKEN_BYTES)));
        assert_eq!(access_token(&limit).unwrap().len(), MAX_TOKEN_BYTES);
    }
}

/// `cookie_format` in configuration, and a Supabase cookie from the Cookie
/// header through `credential.rs` to a verified `Session`.
#[cfg(test)]
mod routing_tests {
    use super::mint;
    use crate::clock::ManualClock;
    use crate::config::Settings;
    use crate::upstream::credential::{credential, CookieRoutes};
    use crate::upstream::{Credential, Verifier};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::{json, Value};

    const NOW: u64 = 1_700_000_000;
    /// A project's legacy JWT secret (HS256).
    const JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";
    const ISS: &str = "https://abcdefghijklmnop.supabase.co/auth/v1";
    const COOKIE: &str = "sb-abcdefghijklmnop-auth-token";

    fn settings(issuer_table: &str) -> Result<Settings, String> {
        Settings::from_toml(&format!(
            "[ably]\napi_key = \"a.b:c\"\n[[issuers]]\n{issuer_table}"
        ))
        .map_err(|e| e.to_string())
    }

    fn supabase() -> Settings {
        settings(&format!(
            r#"
            name = "supabase"
            issuer = "{ISS}"
            secret = "{JWT_SECRET}"
            audiences = ["authenticated"]
            cookies = ["{COOKIE}"]
            cookie_format = "supabase"
            roles_claim = "/app_metadata/roles"
            "#
        ))
        .unwrap()
    }

    /// An access token as Supabase Auth issues it (legacy HS256 secret).
    fn access_token(claims: Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{input}.{sig}")
    }

    fn claims() -> Value {
        json!({
            "iss": ISS, "sub": "8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e", "aud": "authenticated",
            "exp": NOW + 3600, "iat": NOW, "role": "authenticated", "session_id": "s1",
            "app_metadata": {"provider": "email", "roles": ["support"]}, "is_anonymous": false,
        })
    }

    fn route(s: &Settings, header: &str) -> Result<Credential, &'static str> {
        let routes = CookieRoutes {
            issuers: &s.issuers,
            session_cookies: &s.server.session_cookies,
        };
        credential(None, std::iter::once(header), &routes).map_err(|e| e.reason())
    }

    async fn authenticate(s: &Settings, header: &str) -> Result<Value, &'static str> {
        let credential = route(s, header)?;
        let v = Verifier::new(&s.issuers, ManualClock::at_ms(NOW * 1000));
        v.authenticate(&credential)
            .await
            .map(|session| session.claims)
            .map_err(|e| e.reason())
    }

    #[tokio::test]
    async fn a_supabase_cookie_whole_or_chunked_yields_the_access_tokens_claims() {
        let s = supabase();
        let token = access_token(claims());
        let value = mint::base64(&mint::session(&token));
        let session = authenticate(&s, &format!("{COOKIE}={value}"))
            .await
            .unwrap();
        assert_eq!(session["sub"], "8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e");
        assert_eq!(session["app_metadata"]["roles"], json!(["support"]));
        // What is routed on is the access token, not the cookie.
        match route(&s, &format!("{COOKIE}={value}")).unwrap() {
            Credential::Cookie(c) => assert_eq!(c.value, token),
            other => panic!("{other:?}"),
        }
        // Split the way @supabase/ssr's createChunks does: on the encoded text.
        let (a, b) = value.split_at(value.len() / 2);
        let chunked = format!("other=1; {COOKIE}.1={b}; {COOKIE}.0={a}");
        assert_eq!(
            authenticate(&s, &chunked).await.unwrap()["sub"],
            session["sub"]
        );
        let raw = mint::raw(&mint::session(&token));
        assert_eq!(
            authenticate(&s, &format!("{COOKIE}={raw}")).await.unwrap()["sub"],
            session["sub"]
        );
    }

    #[tokio::test]
    async fn the_access_token_is_verified_as_the_issuers_jwt() {
        let s = supabase();
        let cookie = |claims: Value| {
            format!(
                "{COOKIE}={}",
                mint::base64(&mint::session(&access_token(claims)))
            )
        };
        let mut expired = claims();
        expired["exp"] = json!(NOW - 60);
        assert_eq!(
            authenticate(&s, &cookie(expired)).await,
            Err("session_token_expired")
        );
        let mut anon = claims();
        anon["aud"] = json!("anon");
        assert_eq!(
            authenticate(&s, &cookie(anon)).await,
            Err("audience_mismatch")
        );
        let mut other_project = claims();
        other_project["iss"] = json!("https://zzzzzzzzzzzzzzzz.supabase.co/auth/v1");
        assert_eq!(
            authenticate(&s, &cookie(other_project)).await,
            Err("issuer_unknown")
        );
        // A bare JWT in a Supabase cookie is not what @supabase/ssr writes.
        assert_eq!(
            route(&s, &format!("{COOKIE}={}", access_token(claims()))),
            Err("session_token_malformed")
        );
        assert_eq!(
            route(&s, &format!("{COOKIE}=base64-%%%")),
            Err("session_token_malformed")
        );
        // A plain-format issuer's cookie is still the JWT itself.
        let plain = settings(&format!(
            "name = \"p\"\nissuer = \"{ISS}\"\nsecret = \"{JWT_SECRET}\"\ncookies = [\"{COOKIE}\"]"
        ))
        .unwrap();
        let token = access_token(claims());
        assert!(authenticate(&plain, &format!("{COOKIE}={token}"))
            .await
            .is_ok());
    }

    #[test]
    fn cookie_format_is_checked_and_named_in_errors() {
        let base = format!("name = \"s\"\nissuer = \"{ISS}\"\nsecret = \"{JWT_SECRET}\"\n");
        let e = settings(&format!("{base}cookie_format = \"supabase\"")).unwrap_err();
        assert!(
            e.starts_with("issuers[0].cookie_format: \"supabase\" describes the issuer's cookies"),
            "{e}"
        );
        let e = settings(&format!(
            "{base}cookies = [\"{COOKIE}\"]\ncookie_format = \"base64\""
        ))
        .unwrap_err();
        assert!(
            e.starts_with("issuers[0].cookie_format: \"base64\" is not a cookie format"),
            "{e}"
        );
        std::env::set_var("SUPABASE_TEST_AUTH_SECRET", JWT_SECRET);
        let e = settings(
            "name = \"a\"\nkind = \"authjs\"\nsecret_env = [\"SUPABASE_TEST_AUTH_SECRET\"]\n\
             cookies = [\"authjs.session-token\"]\ncookie_format = \"supabase\"",
        )
        .unwrap_err();
        assert!(
            e.starts_with("issuers[0].cookie_format: does not apply to kind = \"authjs\""),
            "{e}"
        );
        let plain = settings(&format!("{base}cookie_format = \"plain\"")).unwrap();
        assert_eq!(
            plain.issuers[0].jwt().unwrap().cookie_format,
            crate::config::CookieFormat::Plain
        );
    }
}
