//! Upstream identity: verifies the caller's session credential with the
//! issuer it belongs to and returns its claims. A JWT goes to the `jwt`
//! issuer its `iss` names, with that issuer's keys and algorithms; a cookie
//! goes to the issuer that lists it (`authjs` cookies are decrypted in
//! `authjs.rs`); a session endpoint's cookies and an opaque Bearer value are
//! looked up (`session_endpoint.rs`, `introspection.rs`). Every kind yields
//! the same `Session`.

pub mod authjs;
pub(crate) mod credential;
pub(crate) mod discovery;
pub(crate) mod introspection;
pub mod jwks;
pub(crate) mod jwks_cache;
pub mod jws;
pub(crate) mod lookup;
pub(crate) mod lookup_cache;
pub(crate) mod session_endpoint;
pub(crate) mod supabase;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::clock::SharedClock;
use crate::config::{IssuerKind, IssuerSettings, JwtIssuer, KeySource};
pub(crate) use credential::{Credential, IssuerCookie};
use introspection::Introspection;
pub(crate) use jwks_cache::{CacheStatus, DiscoveryStatus, JwksCache, Probe, Readiness};
pub(crate) use lookup_cache::LookupCounts;
use session_endpoint::SessionEndpoint;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no session token: send Authorization: Bearer <token> or the session cookie")]
    Missing,
    #[error("the session token is too large: {0}")]
    TokenTooLarge(&'static str),
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
            UpstreamError::TokenTooLarge(_) => "session_token_too_large",
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
    Authjs(authjs::Keys),
    SessionEndpoint(SessionEndpoint),
    Introspection(Introspection),
}

struct Issuer {
    settings: Arc<IssuerSettings>,
    keys: Keys,
}

pub(crate) struct Verifier {
    issuers: Vec<Issuer>,
    /// `iss` → index in `issuers`, for `jwt` issuers.
    by_iss: HashMap<String, usize>,
    /// `name` → index in `issuers`, for cookies.
    by_name: HashMap<String, usize>,
    clock: SharedClock,
}

impl Verifier {
    pub(crate) fn new(issuers: &[IssuerSettings], clock: SharedClock) -> Verifier {
        let client = jwks_cache::http_client();
        let lookup_client = lookup::client();
        let issuers: Vec<Issuer> = issuers
            .iter()
            .map(|settings| {
                let keys = match &settings.kind {
                    IssuerKind::Jwt(jwt) => match &jwt.keys {
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
                        KeySource::Discovery(jwks) => Keys::Jwks(JwksCache::discovering(
                            &settings.name,
                            &jwt.issuer,
                            jwks.clone(),
                            client.clone(),
                            clock.clone(),
                        )),
                        KeySource::Secret(secret) => {
                            Keys::Secret(DecodingKey::from_secret(secret.expose()))
                        }
                    },
                    IssuerKind::Authjs(authjs) => {
                        let secrets: Vec<&[u8]> =
                            authjs.secrets.iter().map(|s| s.secret.expose()).collect();
                        Keys::Authjs(authjs::Keys::derive(&secrets, &settings.cookies))
                    }
                    IssuerKind::SessionEndpoint(endpoint) => {
                        Keys::SessionEndpoint(SessionEndpoint::new(
                            &settings.name,
                            endpoint.clone(),
                            lookup_client.clone(),
                            clock.clone(),
                        ))
                    }
                    IssuerKind::Introspection(introspection) => {
                        Keys::Introspection(Introspection::new(
                            &settings.name,
                            introspection.clone(),
                            lookup_client.clone(),
                            clock.clone(),
                        ))
                    }
                };
                Issuer {
                    settings: Arc::new(settings.clone()),
                    keys,
                }
            })
            .collect();
        let by_iss = issuers
            .iter()
            .enumerate()
            .filter_map(|(i, issuer)| Some((issuer.settings.jwt()?.issuer.clone(), i)))
            .collect();
        let by_name = issuers
            .iter()
            .enumerate()
            .map(|(i, issuer)| (issuer.settings.name.clone(), i))
            .collect();
        Verifier {
            issuers,
            by_iss,
            by_name,
            clock,
        }
    }

    /// Starts fetching every issuer's JWKS without waiting for it.
    pub(crate) fn prefetch(&self) {
        for issuer in &self.issuers {
            if let Keys::Jwks(cache) = &issuer.keys {
                cache.prefetch();
            }
        }
    }

    /// Each JWKS issuer's name and cache status.
    pub(crate) fn jwks_status(&self) -> Vec<(String, CacheStatus)> {
        let mut out: Vec<(String, CacheStatus)> = self
            .issuers
            .iter()
            .filter_map(|issuer| match &issuer.keys {
                Keys::Jwks(cache) => Some((issuer.settings.name.clone(), cache.status())),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Each look-up issuer's name, kind and counts, by name.
    pub(crate) fn lookup_status(&self) -> Vec<(String, &'static str, LookupCounts)> {
        let mut out: Vec<(String, &'static str, LookupCounts)> = self
            .issuers
            .iter()
            .filter_map(|issuer| {
                let (kind, counts) = match &issuer.keys {
                    Keys::SessionEndpoint(e) => ("session_endpoint", e.counts()),
                    Keys::Introspection(i) => ("introspection", i.counts()),
                    _ => return None,
                };
                Some((issuer.settings.name.clone(), kind, counts))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Verifies `credential` with the issuer it belongs to.
    pub(crate) async fn authenticate(
        &self,
        credential: &Credential,
    ) -> Result<Session, UpstreamError> {
        match credential {
            Credential::Token(token) => self.verify_jwt(token, None).await,
            Credential::Cookie(cookie) => {
                let issuer = self.named(&cookie.issuer)?;
                match &issuer.keys {
                    Keys::Authjs(keys) => self.open_authjs(issuer, keys, cookie),
                    Keys::Jwks(_) | Keys::Secret(_) => {
                        self.verify_jwt(&cookie.value, Some(issuer)).await
                    }
                    // Routing sends a session endpoint's cookies as Forward.
                    Keys::SessionEndpoint(_) | Keys::Introspection(_) => {
                        Err(UpstreamError::IssuerUnknown)
                    }
                }
            }
            Credential::Opaque(bearer) => {
                let issuer = self.named(&bearer.issuer)?;
                let claims = match &issuer.keys {
                    Keys::Introspection(introspection) => {
                        introspection.look_up(&bearer.token).await?
                    }
                    Keys::SessionEndpoint(endpoint) => {
                        let forwarded = session_endpoint::Credentials {
                            cookies: Vec::new(),
                            authorization: Some(bearer.header.clone()),
                        };
                        endpoint.look_up(&forwarded).await?
                    }
                    _ => return Err(UpstreamError::IssuerUnknown),
                };
                looked_up(issuer, claims)
            }
            Credential::Forward(cookies) => {
                let issuer = self.named(&cookies.issuer)?;
                let Keys::SessionEndpoint(endpoint) = &issuer.keys else {
                    return Err(UpstreamError::IssuerUnknown);
                };
                let forwarded = session_endpoint::Credentials {
                    cookies: cookies.cookies.clone(),
                    authorization: None,
                };
                looked_up(issuer, endpoint.look_up(&forwarded).await?)
            }
        }
    }

    /// The issuer a cookie or an opaque Bearer value was routed to.
    fn named(&self, name: &str) -> Result<&Issuer, UpstreamError> {
        self.by_name
            .get(name)
            .map(|&i| &self.issuers[i])
            // Routes are built from the same settings; never a panic.
            .ok_or(UpstreamError::IssuerUnknown)
    }

    /// A signed JWT, for the issuer its `iss` names; when it came in a cookie
    /// an issuer lists, that must be the issuer named.
    async fn verify_jwt(
        &self,
        token: &str,
        expected: Option<&Issuer>,
    ) -> Result<Session, UpstreamError> {
        let token = jws::parse(token)?;
        let iss = match token.claims.get("iss") {
            Some(Value::String(iss)) => iss.as_str(),
            Some(_) => return Err(UpstreamError::BadClaim("iss")),
            None => return Err(UpstreamError::IssuerUnknown),
        };
        let issuer = self
            .by_iss
            .get(iss)
            .map(|&i| &self.issuers[i])
            .ok_or(UpstreamError::IssuerUnknown)?;
        if expected.is_some_and(|e| !Arc::ptr_eq(&e.settings, &issuer.settings)) {
            return Err(UpstreamError::IssuerUnknown);
        }
        let jwt = issuer.settings.jwt().ok_or(UpstreamError::IssuerUnknown)?;
        // The algorithm list comes from configuration; the token's alg only
        // selects among it. `none` and every HS alg on a JWKS issuer fail here.
        let alg = Algorithm::from_str(&token.alg)
            .ok()
            .filter(|alg| jwt.algorithms.contains(alg))
            .ok_or(UpstreamError::AlgorithmNotAllowed)?;
        let verified = match &issuer.keys {
            Keys::Jwks(cache) => {
                let key = cache.find(token.kid.as_deref(), alg).await?;
                key.verify(alg, token.signing_input.as_bytes(), token.signature)
            }
            Keys::Secret(key) => jsonwebtoken::crypto::verify(
                token.signature,
                token.signing_input.as_bytes(),
                key,
                alg,
            )
            .unwrap_or(false),
            // by_iss holds jwt issuers only.
            Keys::Authjs(_) | Keys::SessionEndpoint(_) | Keys::Introspection(_) => {
                return Err(UpstreamError::IssuerUnknown)
            }
        };
        if !verified {
            return Err(UpstreamError::BadSignature);
        }
        let rules = ClaimRules::of(&issuer.settings, Some(jwt));
        check_claims(&token.claims, &rules, self.clock.now_secs())?;
        session(issuer, token.claims)
    }

    /// An Auth.js / NextAuth session cookie, decrypted with the issuer's
    /// secrets, its claims checked as a JWT's are.
    fn open_authjs(
        &self,
        issuer: &Issuer,
        keys: &authjs::Keys,
        cookie: &IssuerCookie,
    ) -> Result<Session, UpstreamError> {
        let claims = authjs::decrypt(&cookie.value, &cookie.name, keys)?;
        let rules = ClaimRules::of(&issuer.settings, None);
        check_claims(&claims, &rules, self.clock.now_secs())?;
        session(issuer, claims)
    }
}

/// The `Session` for verified `claims`.
fn session(issuer: &Issuer, claims: Map<String, Value>) -> Result<Session, UpstreamError> {
    if claims.get("sub").is_some_and(|s| !s.is_string()) {
        return Err(UpstreamError::BadClaim("sub"));
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    Ok(Session {
        issuer: issuer.settings.clone(),
        sid: text("sid"),
        jti: text("jti"),
        sub: text("sub"),
        claims: Value::Object(claims),
    })
}

/// The `Session` for a look-up's answer: the whole JSON object is the
/// claims. Its expiry was already checked by the look-up (strictly, without
/// leeway); `sub`, `sid` and `jti` are read for logs when they are text.
fn looked_up(issuer: &Issuer, claims: Value) -> Result<Session, UpstreamError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    Ok(Session {
        issuer: issuer.settings.clone(),
        sid: text("sid"),
        jti: text("jti"),
        sub: text("sub"),
        claims,
    })
}

/// What `check_claims` holds a token to: the issuer's leeway, and for JWT
/// issuers its audiences and authorized parties.
struct ClaimRules<'a> {
    leeway: std::time::Duration,
    audiences: &'a [String],
    authorized_parties: &'a [String],
}

impl<'a> ClaimRules<'a> {
    fn of(settings: &IssuerSettings, jwt: Option<&'a JwtIssuer>) -> ClaimRules<'a> {
        ClaimRules {
            leeway: settings.leeway,
            audiences: jwt.map_or(&[][..], |j| &j.audiences),
            authorized_parties: jwt.map_or(&[][..], |j| &j.authorized_parties),
        }
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
    issuer: &ClaimRules<'_>,
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

/// For `benches/lookups.rs` only (not an API): one request's identity work,
/// from the raw headers through routing to the `Session`'s claims.
#[doc(hidden)]
pub mod benching {
    use super::credential::{credential, CookieRoutes};
    use super::Verifier;
    use crate::config::Settings;

    pub struct Identity {
        verifier: Verifier,
        settings: Settings,
    }

    impl Identity {
        pub fn new(settings: Settings) -> Identity {
            Identity {
                verifier: Verifier::new(&settings.issuers, crate::clock::system()),
                settings,
            }
        }

        /// The session's claims for a request with these headers, or the
        /// refusal's reason.
        pub async fn claims(
            &self,
            authorization: Option<&str>,
            cookie: &str,
        ) -> Result<serde_json::Value, &'static str> {
            let routes = CookieRoutes {
                issuers: &self.settings.issuers,
                session_cookies: &self.settings.server.session_cookies,
            };
            let credential = credential(authorization.map(str::as_bytes), [cookie], &routes)
                .map_err(|e| e.reason())?;
            let session = self
                .verifier
                .authenticate(&credential)
                .await
                .map_err(|e| e.reason())?;
            Ok(session.claims)
        }
    }
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
        v.verify_jwt(token, None).await.unwrap_err().reason()
    }

    #[tokio::test]
    async fn a_valid_token_yields_its_claims() {
        let v = verifier("");
        let session = v
            .verify_jwt(&mint(hs256(), claims(), SECRET), None)
            .await
            .unwrap();
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
        assert!(v
            .verify_jwt(&mint(hs256(), c.clone(), SECRET), None)
            .await
            .is_ok());
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
        assert!(v
            .verify_jwt(&mint(hs256(), c.clone(), SECRET), None)
            .await
            .is_ok());
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

#[cfg(test)]
mod cookie_tests {
    use super::authjs::mint;
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Settings;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const AUTH_SECRET: &str = "verifier-test-auth-secret-012345";

    fn verifier() -> Verifier {
        std::env::set_var("VERIFIER_TEST_AUTH_SECRET", AUTH_SECRET);
        let s = Settings::from_toml(
            r#"
            [ably]
            api_key = "a.b:c"
            [[issuers]]
            name = "dev"
            issuer = "dev-issuer"
            secret = "0123456789abcdef0123456789abcdef"
            cookies = ["dev-session"]
            [[issuers]]
            name = "other"
            issuer = "other-issuer"
            secret = "fedcba9876543210fedcba9876543210"
            [[issuers]]
            name = "app"
            kind = "authjs"
            secret_env = ["VERIFIER_TEST_AUTH_SECRET"]
            cookies = ["authjs.session-token", "next-auth.session-token"]
            roles_claim = "/role"
            "#,
        )
        .unwrap();
        Verifier::new(&s.issuers, ManualClock::at_ms(NOW * 1000))
    }

    fn cookie(issuer: &str, name: &str, value: String) -> Credential {
        Credential::Cookie(IssuerCookie {
            issuer: issuer.into(),
            name: name.into(),
            value,
        })
    }

    #[tokio::test]
    async fn authjs_cookies_yield_a_session_with_the_issuers_claim_pointers() {
        let v = verifier();
        let claims =
            json!({"sub": "u1", "role": "editor", "iat": NOW, "exp": NOW + 60, "jti": "j1"});
        for (name, value) in [
            (
                "authjs.session-token",
                mint::v5(&claims, AUTH_SECRET, "authjs.session-token"),
            ),
            ("next-auth.session-token", mint::v4(&claims, AUTH_SECRET)),
        ] {
            let s = v.authenticate(&cookie("app", name, value)).await.unwrap();
            assert_eq!(s.sub.as_deref(), Some("u1"));
            assert_eq!(s.jti.as_deref(), Some("j1"));
            assert_eq!(s.claims["role"], "editor");
            assert_eq!(s.issuer.roles_claim.as_str(), "/role");
        }
    }

    #[tokio::test]
    async fn authjs_time_claims_use_the_leeway_like_jwts() {
        let v = verifier();
        let at = |exp: u64, extra: Value| {
            let mut c = json!({"sub": "u1", "exp": exp});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            cookie(
                "app",
                "authjs.session-token",
                mint::v5(&c, AUTH_SECRET, "authjs.session-token"),
            )
        };
        let reason = |r: Result<Session, UpstreamError>| r.unwrap_err().reason();
        assert!(v.authenticate(&at(NOW - 4, json!({}))).await.is_ok());
        assert_eq!(
            reason(v.authenticate(&at(NOW - 5, json!({}))).await),
            "session_token_expired"
        );
        assert_eq!(
            reason(v.authenticate(&at(NOW + 60, json!({"nbf": NOW + 6}))).await),
            "session_token_not_yet_valid"
        );
        assert_eq!(
            reason(v.authenticate(&at(NOW + 60, json!({"iat": NOW + 6}))).await),
            "session_token_issued_in_future"
        );
        assert_eq!(
            reason(v.authenticate(&at(NOW + 60, json!({"sub": 7}))).await),
            "session_token_claims_invalid"
        );
        let no_exp = mint::v4(&json!({"sub": "u1"}), AUTH_SECRET);
        assert_eq!(
            reason(
                v.authenticate(&cookie("app", "next-auth.session-token", no_exp))
                    .await
            ),
            "session_token_claims_invalid"
        );
    }

    #[tokio::test]
    async fn a_jwt_cookie_is_for_the_issuer_that_lists_it() {
        let v = verifier();
        let mint_jwt = |iss: &str, secret: &str| {
            use base64::engine::general_purpose::URL_SAFE_NO_PAD;
            use base64::Engine;
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
                URL_SAFE_NO_PAD
                    .encode(json!({"iss": iss, "sub": "u", "exp": NOW + 60}).to_string())
            );
            let sig = jsonwebtoken::crypto::sign(
                input.as_bytes(),
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{input}.{sig}")
        };
        let own = mint_jwt("dev-issuer", "0123456789abcdef0123456789abcdef");
        assert!(v
            .authenticate(&cookie("dev", "dev-session", own.clone()))
            .await
            .is_ok());
        assert!(v.authenticate(&Credential::Token(own)).await.is_ok());
        // Validly signed by another configured issuer, but in dev's cookie.
        let other = mint_jwt("other-issuer", "fedcba9876543210fedcba9876543210");
        assert!(v
            .authenticate(&Credential::Token(other.clone()))
            .await
            .is_ok());
        let e = v
            .authenticate(&cookie("dev", "dev-session", other))
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "issuer_unknown");
        // An authjs cookie is never read as a JWT, nor a JWT as an authjs cookie.
        let jwe = mint::v5(
            &json!({"sub": "u", "exp": NOW + 60}),
            AUTH_SECRET,
            "authjs.session-token",
        );
        let e = v.authenticate(&Credential::Token(jwe)).await.unwrap_err();
        assert_eq!(e.reason(), "session_token_unsupported");
        let jwt = mint_jwt("dev-issuer", "0123456789abcdef0123456789abcdef");
        let e = v
            .authenticate(&cookie("app", "authjs.session-token", jwt))
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "session_token_malformed");
    }
}
