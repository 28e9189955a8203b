//! Upstream identity: verifies the caller's session JWT against the issuer it
//! names, with that issuer's keys and algorithms, and returns its claims.

pub(crate) mod introspection;
pub mod jwks;
pub(crate) mod jwks_cache;
pub mod jws;
pub(crate) mod lookup;
pub(crate) mod lookup_cache;
pub(crate) mod session_endpoint;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::clock::SharedClock;
use crate::config::{IssuerSettings, KeySource};
pub(crate) use jwks_cache::{CacheStatus, JwksCache, Readiness};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no session token: send Authorization: Bearer <token> or the session cookie")]
    Missing,
    #[error("the session token is larger than 8 KiB")]
    TokenTooLarge,
    #[error("the session token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the session token is not accepted: {0}")]
    Unsupported(&'static str),
    #[error("the session token's issuer is not configured here")]
    IssuerUnknown,
    #[error("the session token's algorithm is not allowed for its issuer")]
    AlgorithmNotAllowed,
    #[error("the session token is signed by a key the issuer does not publish")]
    KeyUnknown,
    #[error("the session token's signature is invalid")]
    BadSignature,
    #[error("the session token has expired")]
    Expired,
    #[error("the session token is not valid yet")]
    NotYetValid,
    #[error("the session token was issued in the future")]
    IssuedInFuture,
    #[error("the session token's {0} claim is missing or malformed")]
    BadClaim(&'static str),
    #[error("the session token is not meant for this audience")]
    AudienceMismatch,
    #[error("the session token's authorized party (azp) is not allowed")]
    AuthorizedPartyRejected,
    #[error("the signing keys of issuer {issuer:?} are unavailable")]
    KeysUnavailable { issuer: String },
    #[error("the session is not valid for issuer {issuer:?}: sign in again")]
    SessionInvalid { issuer: String },
    #[error("issuer {issuer:?} could not be asked about the session: try again later")]
    SessionUpstreamUnavailable { issuer: String },
}

impl UpstreamError {
    /// The stable name used in responses, logs and metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Missing => "session_token_missing",
            UpstreamError::TokenTooLarge => "session_token_too_large",
            UpstreamError::Malformed(_) => "session_token_malformed",
            UpstreamError::Unsupported(_) => "session_token_unsupported",
            UpstreamError::IssuerUnknown => "issuer_unknown",
            UpstreamError::AlgorithmNotAllowed => "algorithm_not_allowed",
            UpstreamError::KeyUnknown => "signing_key_unknown",
            UpstreamError::BadSignature => "signature_invalid",
            UpstreamError::Expired => "session_token_expired",
            UpstreamError::NotYetValid => "session_token_not_yet_valid",
            UpstreamError::IssuedInFuture => "session_token_issued_in_future",
            UpstreamError::BadClaim(_) => "session_token_claims_invalid",
            UpstreamError::AudienceMismatch => "audience_mismatch",
            UpstreamError::AuthorizedPartyRejected => "authorized_party_rejected",
            UpstreamError::KeysUnavailable { .. } => "jwks_unavailable",
            UpstreamError::SessionInvalid { .. } => "session_invalid",
            UpstreamError::SessionUpstreamUnavailable { .. } => "session_upstream_unavailable",
        }
    }
}

/// A verified session: whose it is, and every claim for the policy to read.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) issuer: Arc<IssuerSettings>,
    pub(crate) claims: Value,
    /// For logs; the policy reads the client id from its configured claim.
    pub(crate) sub: Option<String>,
    pub(crate) sid: Option<String>,
    pub(crate) jti: Option<String>,
}

enum Keys {
    Jwks(Arc<JwksCache>),
    Secret(DecodingKey),
}

struct Issuer {
    settings: Arc<IssuerSettings>,
    keys: Keys,
}

pub(crate) struct Verifier {
    by_iss: HashMap<String, Issuer>,
    clock: SharedClock,
}

impl Verifier {
    pub(crate) fn new(issuers: &[IssuerSettings], clock: SharedClock) -> Verifier {
        let client = reqwest::Client::builder()
            .user_agent(concat!("ably-tokend/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // A redirect must never downgrade https to http: whoever sits on
                // the plain-text path could then hand us signing keys.
                let downgrade = attempt.url().scheme() != "https"
                    && attempt.previous().iter().any(|u| u.scheme() == "https");
                if downgrade {
                    attempt.error("the JWKS endpoint redirected from https to plain http")
                } else if attempt.previous().len() > 3 {
                    attempt.error("the JWKS endpoint redirected more than 3 times")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .expect("the HTTP client builds with static settings");
        let by_iss = issuers
            .iter()
            .map(|settings| {
                let keys = match &settings.keys {
                    KeySource::Jwks(jwks) => {
                        let mut jwks = jwks.clone();
                        jwks.timeout = jwks.timeout.max(std::time::Duration::from_millis(1));
                        Keys::Jwks(JwksCache::new(
                            &settings.name,
                            jwks,
                            client.clone(),
                            clock.clone(),
                        ))
                    }
                    KeySource::Secret(secret) => {
                        Keys::Secret(DecodingKey::from_secret(secret.expose()))
                    }
                };
                (
                    settings.issuer.clone(),
                    Issuer {
                        settings: Arc::new(settings.clone()),
                        keys,
                    },
                )
            })
            .collect();
        Verifier { by_iss, clock }
    }

    /// Starts fetching every issuer's JWKS without waiting for it.
    pub(crate) fn prefetch(&self) {
        for issuer in self.by_iss.values() {
            if let Keys::Jwks(cache) = &issuer.keys {
                cache.prefetch();
            }
        }
    }

    /// Each JWKS issuer's name and cache status.
    pub(crate) fn jwks_status(&self) -> Vec<(String, CacheStatus)> {
        let mut out: Vec<(String, CacheStatus)> = self
            .by_iss
            .values()
            .filter_map(|issuer| match &issuer.keys {
                Keys::Jwks(cache) => Some((issuer.settings.name.clone(), cache.status())),
                Keys::Secret(_) => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Session, UpstreamError> {
        let token = jws::parse(token)?;
        let iss = match token.claims.get("iss") {
            Some(Value::String(iss)) => iss.as_str(),
            Some(_) => return Err(UpstreamError::BadClaim("iss")),
            None => return Err(UpstreamError::IssuerUnknown),
        };
        let issuer = self.by_iss.get(iss).ok_or(UpstreamError::IssuerUnknown)?;
        // The algorithm list comes from configuration; the token's alg only
        // selects among it. `none` and every HS alg on a JWKS issuer fail here.
        let alg = Algorithm::from_str(&token.alg)
            .ok()
            .filter(|alg| issuer.settings.algorithms.contains(alg))
            .ok_or(UpstreamError::AlgorithmNotAllowed)?;
        let verified = match &issuer.keys {
            Keys::Jwks(cache) => {
                let key = cache.find(token.kid.as_deref(), alg).await?;
                jsonwebtoken::crypto::verify(
                    token.signature,
                    token.signing_input.as_bytes(),
                    &key.key,
                    alg,
                )
            }
            Keys::Secret(key) => jsonwebtoken::crypto::verify(
                token.signature,
                token.signing_input.as_bytes(),
                key,
                alg,
            ),
        };
        if !verified.unwrap_or(false) {
            return Err(UpstreamError::BadSignature);
        }
        check_claims(&token.claims, &issuer.settings, self.clock.now_secs())?;
        let text = |name: &str| {
            token
                .claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if token.claims.get("sub").is_some_and(|s| !s.is_string()) {
            return Err(UpstreamError::BadClaim("sub"));
        }
        Ok(Session {
            issuer: issuer.settings.clone(),
            sid: text("sid"),
            jti: text("jti"),
            sub: text("sub"),
            claims: Value::Object(token.claims),
        })
    }
}

/// NumericDate claims must be integers: a string or fractional `exp` is a
/// type confusion waiting to happen (CVE-2026-25537), so it is refused.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, UpstreamError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(UpstreamError::BadClaim(name)),
        Some(_) => Err(UpstreamError::BadClaim(name)),
    }
}

fn check_claims(
    claims: &Map<String, Value>,
    issuer: &IssuerSettings,
    now: u64,
) -> Result<(), UpstreamError> {
    let now = now as i64;
    let leeway = issuer.leeway.as_secs() as i64;
    let exp = numeric_date(claims, "exp")?.ok_or(UpstreamError::BadClaim("exp"))?;
    if now - leeway >= exp {
        return Err(UpstreamError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if now + leeway < nbf {
            return Err(UpstreamError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_date(claims, "iat")? {
        if iat > now + leeway {
            return Err(UpstreamError::IssuedInFuture);
        }
    }
    if !issuer.audiences.is_empty() {
        let matches = |aud: &str| issuer.audiences.iter().any(|a| a == aud);
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => matches(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(matches),
            _ => false,
        };
        if !ok {
            return Err(UpstreamError::AudienceMismatch);
        }
    }
    match claims.get("azp") {
        None => {}
        Some(Value::String(azp)) => {
            let allowed = issuer.authorized_parties.is_empty()
                || issuer.authorized_parties.iter().any(|p| p == azp);
            if !allowed {
                return Err(UpstreamError::AuthorizedPartyRejected);
            }
        }
        Some(_) => return Err(UpstreamError::BadClaim("azp")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Settings;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn settings(extra: &str) -> Settings {
        Settings::from_toml(&format!(
            r#"
            [ably]
            api_key = "a.b:c"
            [[issuers]]
            name = "dev"
            issuer = "dev-issuer"
            secret = "{SECRET}"
            {extra}
            "#
        ))
        .unwrap()
    }

    fn verifier(extra: &str) -> Verifier {
        Verifier::new(&settings(extra).issuers, ManualClock::at_ms(NOW * 1000))
    }

    fn mint(header: Value, claims: Value, secret: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{input}.{sig}")
    }

    fn claims() -> Value {
        json!({"iss": "dev-issuer", "sub": "user-1", "exp": NOW + 60, "iat": NOW, "sid": "sess_1"})
    }

    fn hs256() -> Value {
        json!({"alg": "HS256", "typ": "JWT"})
    }

    async fn reason(v: &Verifier, token: &str) -> &'static str {
        v.verify(token).await.unwrap_err().reason()
    }

    #[tokio::test]
    async fn a_valid_token_yields_its_claims() {
        let v = verifier("");
        let session = v.verify(&mint(hs256(), claims(), SECRET)).await.unwrap();
        assert_eq!(session.sub.as_deref(), Some("user-1"));
        assert_eq!(session.sid.as_deref(), Some("sess_1"));
        assert_eq!(session.claims["iat"], NOW);
    }

    #[tokio::test]
    async fn alg_none_and_unlisted_algorithms_are_refused() {
        let v = verifier("");
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let none = format!("{}.{body}.x", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(reason(&v, &none).await, "algorithm_not_allowed");
        let none_empty = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(reason(&v, &none_empty).await, "session_token_malformed");
        let hs512 = mint(json!({"alg": "HS512"}), claims(), SECRET);
        assert_eq!(reason(&v, &hs512).await, "algorithm_not_allowed");
    }

    #[tokio::test]
    async fn wrong_secret_is_a_bad_signature() {
        let v = verifier("");
        let t = mint(hs256(), claims(), "another-secret-another-secret-xx");
        assert_eq!(reason(&v, &t).await, "signature_invalid");
    }

    #[tokio::test]
    async fn time_claims_honour_the_leeway() {
        let v = verifier("");
        let mut c = claims();
        c["exp"] = json!(NOW - 4);
        assert!(v.verify(&mint(hs256(), c.clone(), SECRET)).await.is_ok());
        c["exp"] = json!(NOW - 5);
        assert_eq!(
            reason(&v, &mint(hs256(), c, SECRET)).await,
            "session_token_expired"
        );
        let mut c = claims();
        c["nbf"] = json!(NOW + 6);
        assert_eq!(
            reason(&v, &mint(hs256(), c, SECRET)).await,
            "session_token_not_yet_valid"
        );
        let mut c = claims();
        c["iat"] = json!(NOW + 6);
        assert_eq!(
            reason(&v, &mint(hs256(), c, SECRET)).await,
            "session_token_issued_in_future"
        );
    }

    #[tokio::test]
    async fn string_float_and_missing_exp_are_refused() {
        let v = verifier("");
        for exp in [json!("9999999999"), json!(9999999999.5), Value::Null] {
            let mut c = claims();
            c["exp"] = exp.clone();
            assert_eq!(
                reason(&v, &mint(hs256(), c, SECRET)).await,
                "session_token_claims_invalid",
                "exp = {exp}"
            );
        }
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            reason(&v, &mint(hs256(), c, SECRET)).await,
            "session_token_claims_invalid"
        );
        let mut c = claims();
        c["nbf"] = json!("0");
        assert_eq!(
            reason(&v, &mint(hs256(), c, SECRET)).await,
            "session_token_claims_invalid"
        );
    }

    #[tokio::test]
    async fn audience_and_authorized_party_are_checked_when_configured() {
        let v = verifier("audiences = [\"https://api.example.com\"]\nauthorized_parties = [\"https://app.example.com\"]");
        let mut c = claims();
        c["aud"] = json!(["https://api.example.com", "https://tenant/userinfo"]);
        c["azp"] = json!("https://app.example.com");
        assert!(v.verify(&mint(hs256(), c.clone(), SECRET)).await.is_ok());
        c["azp"] = json!("https://evil.example.com");
        assert_eq!(
            reason(&v, &mint(hs256(), c.clone(), SECRET)).await,
            "authorized_party_rejected"
        );
        c["azp"] = json!("https://app.example.com");
        c["aud"] = json!("https://other.example.com");
        assert_eq!(
            reason(&v, &mint(hs256(), c.clone(), SECRET)).await,
            "audience_mismatch"
        );
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            reason(&v, &mint(hs256(), c, SECRET)).await,
            "audience_mismatch"
        );
    }

    #[tokio::test]
    async fn unknown_issuer_and_non_string_sub_are_refused() {
        let v = verifier("");
        let mut c = claims();
        c["iss"] = json!("dev-issuer/");
        assert_eq!(
            reason(&v, &mint(hs256(), c, SECRET)).await,
            "issuer_unknown"
        );
        let mut c = claims();
        c["sub"] = json!(42);
        assert_eq!(
            reason(&v, &mint(hs256(), c, SECRET)).await,
            "session_token_claims_invalid"
        );
    }
}
