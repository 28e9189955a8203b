//! Who a broker client is: TokenRequests exchanged for opaque tokens, Ably
//! JWTs, and API keys (basic auth, loopback only). Failures carry Ably's
//! codes so clients react as they do against Ably: 4014x renews the token,
//! anything else fails the connection.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::TryRngCore;
use serde_json::{json, Value};

use super::protocol::AblyError;
use crate::capability::Capability;
use crate::clock::SharedClock;
use crate::signing::{constant_time_eq, token_request_mac, verify_ably_jwt, ApiKey, JwtError};

/// Ably accepts a TokenRequest whose timestamp is within this of its clock.
const TIMESTAMP_WINDOW_MS: u64 = 2 * 60 * 1000;
const DEFAULT_TTL_MS: u64 = 60 * 60 * 1000;
const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Bounds on remembered tokens and nonces; expired entries go first.
const MAX_TOKENS: usize = 100_000;
const MAX_NONCES: usize = 100_000;

/// What an authenticated client may do, and until when.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) client_id: Option<String>,
    pub(crate) capability: Capability,
    /// None for API-key connections, which do not expire.
    pub(crate) expires_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Issued {
    credentials: Credentials,
    expires_ms: u64,
}

pub(crate) struct BrokerAuth {
    keys: Vec<ApiKey>,
    clock: SharedClock,
    tokens: Mutex<HashMap<String, Issued>>,
    nonces: Mutex<HashMap<String, u64>>,
}

fn bad_request(message: impl Into<String>) -> AblyError {
    AblyError::new(40000, 400, message)
}

fn number(value: Option<&Value>, name: &str) -> Result<Option<u64>, AblyError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| bad_request(format!("{name} must be a number"))),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad_request(format!("{name} must be a whole number"))),
        Some(_) => Err(bad_request(format!("{name} must be a number"))),
    }
}

fn text<'v>(value: Option<&'v Value>, name: &str) -> Result<Option<&'v str>, AblyError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad_request(format!("{name} must be a string"))),
    }
}

fn full_capability() -> Capability {
    Capability::parse_json(r#"{"[*]*":["*"]}"#).expect("static capability parses")
}

impl BrokerAuth {
    pub(crate) fn new(keys: Vec<ApiKey>, clock: SharedClock) -> BrokerAuth {
        BrokerAuth {
            keys,
            clock,
            tokens: Mutex::new(HashMap::new()),
            nonces: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn key(&self, name: &str) -> Result<&ApiKey, AblyError> {
        self.keys.iter().find(|k| k.name() == name).ok_or_else(|| {
            AblyError::new(
                40101,
                401,
                format!("no key named {name:?} is known to this broker"),
            )
        })
    }

    /// `POST /keys/{keyName}/requestToken` with a signed TokenRequest:
    /// returns TokenDetails.
    pub(crate) fn request_token(&self, key_name: &str, body: &Value) -> Result<Value, AblyError> {
        let body = body
            .as_object()
            .ok_or_else(|| bad_request("the token request must be a JSON object"))?;
        let named = text(body.get("keyName"), "keyName")?.unwrap_or(key_name);
        if named != key_name {
            return Err(AblyError::new(
                40101,
                401,
                "the token request's keyName does not match the URL",
            ));
        }
        let key = self.key(key_name)?;
        let mac = text(body.get("mac"), "mac")?
            .ok_or_else(|| AblyError::new(40101, 401, "the token request has no mac"))?;
        let nonce = text(body.get("nonce"), "nonce")?.unwrap_or("");
        if nonce.len() < 16 {
            return Err(bad_request("the nonce must be at least 16 characters"));
        }
        let timestamp = number(body.get("timestamp"), "timestamp")?
            .ok_or_else(|| bad_request("the token request has no timestamp"))?;
        let ttl = number(body.get("ttl"), "ttl")?;
        let capability_text = text(body.get("capability"), "capability")?.unwrap_or("");
        let client_id = text(body.get("clientId"), "clientId")?.filter(|c| !c.is_empty());
        let expected = token_request_mac(
            key.secret(),
            key_name,
            ttl,
            capability_text,
            client_id,
            timestamp,
            nonce,
        );
        if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
            return Err(AblyError::new(
                40101,
                401,
                "invalid mac: the token request was not signed by this key",
            ));
        }
        let now = self.now_ms();
        if now.abs_diff(timestamp) > TIMESTAMP_WINDOW_MS {
            return Err(AblyError::new(40104, 401, "timestamp not current: the token request is more than 2 minutes from the broker's clock"));
        }
        self.remember_nonce(key_name, nonce, now)?;
        let ttl = ttl.unwrap_or(DEFAULT_TTL_MS);
        if ttl == 0 || ttl > MAX_TTL_MS {
            return Err(AblyError::new(
                40003,
                400,
                "ttl must be more than 0 and at most 24 hours",
            ));
        }
        let capability = if capability_text.is_empty() {
            full_capability()
        } else {
            Capability::parse_json(capability_text)
                .map_err(|e| bad_request(format!("capability: {e}")))?
        };
        let credentials = Credentials {
            client_id: client_id.map(str::to_string),
            capability,
            expires_ms: Some(now + ttl),
        };
        let token = self.issue(credentials.clone(), now + ttl)?;
        let mut details = json!({
            "token": token,
            "keyName": key_name,
            "issued": now,
            "expires": now + ttl,
            "capability": credentials.capability.to_canonical_json(),
        });
        if let Some(client_id) = &credentials.client_id {
            details["clientId"] = json!(client_id);
        }
        Ok(details)
    }

    fn remember_nonce(&self, key_name: &str, nonce: &str, now: u64) -> Result<(), AblyError> {
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        if nonces.len() >= MAX_NONCES {
            nonces.retain(|_, expiry| *expiry > now);
            if nonces.len() >= MAX_NONCES {
                return Err(AblyError::new(
                    42910,
                    429,
                    "too many token requests: try again shortly",
                ));
            }
        }
        let id = format!("{key_name}\n{nonce}");
        if nonces.get(&id).is_some_and(|expiry| *expiry > now) {
            return Err(AblyError::new(
                40105,
                401,
                "nonce replayed: each token request must use a new nonce",
            ));
        }
        // A nonce only needs remembering while its timestamp could still be accepted.
        nonces.insert(id, now + 2 * TIMESTAMP_WINDOW_MS);
        Ok(())
    }

    fn issue(&self, credentials: Credentials, expires_ms: u64) -> Result<String, AblyError> {
        let mut bytes = [0u8; 24];
        OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random source is available");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= MAX_TOKENS {
            let now = self.now_ms();
            tokens.retain(|_, issued| issued.expires_ms > now);
            if tokens.len() >= MAX_TOKENS {
                return Err(AblyError::new(
                    42910,
                    429,
                    "too many live tokens on this broker",
                ));
            }
        }
        tokens.insert(
            token.clone(),
            Issued {
                credentials,
                expires_ms,
            },
        );
        Ok(token)
    }

    /// An opaque token from `requestToken`, or an Ably JWT.
    pub(crate) fn authenticate_token(&self, token: &str) -> Result<Credentials, AblyError> {
        let now = self.now_ms();
        if token.contains('.') {
            return self.authenticate_jwt(token, now);
        }
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let issued = tokens
            .get(token)
            .ok_or_else(|| AblyError::new(40143, 401, "token unrecognised: request a new one"))?;
        if issued.expires_ms <= now {
            return Err(AblyError::new(40142, 401, "token expired"));
        }
        Ok(issued.credentials.clone())
    }

    fn authenticate_jwt(&self, token: &str, now_ms: u64) -> Result<Credentials, AblyError> {
        let invalid = |why: String| AblyError::new(40144, 401, format!("invalid JWT: {why}"));
        let (_, claims) = verify_ably_jwt(token, &self.keys).map_err(|e| match e {
            JwtError::UnknownKey(_) => AblyError::new(40101, 401, e.to_string()),
            other => invalid(other.to_string()),
        })?;
        let now = now_ms / 1000;
        if claims.exp <= now {
            return Err(AblyError::new(40142, 401, "token expired"));
        }
        if claims.iat > now + 5 {
            return Err(invalid("iat is in the future".into()));
        }
        let capability = Capability::parse_json(&claims.capability)
            .map_err(|e| invalid(format!("x-ably-capability: {e}")))?;
        Ok(Credentials {
            client_id: claims.client_id.filter(|c| !c.is_empty()),
            capability,
            expires_ms: Some(claims.exp.saturating_mul(1000)),
        })
    }

    /// `key=appId.keyId:secret`: the whole key's capability. Callers allow it
    /// only from loopback.
    pub(crate) fn authenticate_key(&self, whole: &str) -> Result<Credentials, AblyError> {
        let given: ApiKey = whole.parse().map_err(|_| {
            AblyError::new(40101, 401, "the key is not of the form appId.keyId:secret")
        })?;
        let key = self.key(given.name())?;
        if !constant_time_eq(key.secret().expose(), given.secret().expose()) {
            return Err(AblyError::new(40101, 401, "invalid key secret"));
        }
        Ok(Credentials {
            client_id: None,
            capability: full_capability(),
            expires_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::signing::{new_nonce, sign_ably_jwt, sign_token_request, Grant};

    const NOW: u64 = 1_700_000_000_000;

    fn setup() -> (BrokerAuth, ApiKey, std::sync::Arc<ManualClock>) {
        let key: ApiKey = "app.key:secret".parse().unwrap();
        let clock = ManualClock::at_ms(NOW);
        (
            BrokerAuth::new(vec![key.clone()], clock.clone()),
            key,
            clock,
        )
    }

    fn signed(key: &ApiKey, timestamp: u64, ttl: u64, nonce: String) -> Value {
        let capability = Capability::parse_json(r#"{"chat:*":["subscribe"]}"#).unwrap();
        let grant = Grant {
            capability: &capability,
            client_id: Some("alice"),
            ttl_ms: ttl,
            issued_ms: timestamp,
        };
        serde_json::to_value(sign_token_request(key, &grant, nonce)).unwrap()
    }

    #[test]
    fn a_signed_request_becomes_a_token_that_authenticates() {
        let (auth, key, clock) = setup();
        let details = auth
            .request_token("app.key", &signed(&key, NOW, 60_000, new_nonce()))
            .unwrap();
        assert_eq!(details["clientId"], "alice");
        assert_eq!(details["expires"], NOW + 60_000);
        assert_eq!(details["capability"], r#"{"chat:*":["subscribe"]}"#);
        let token = details["token"].as_str().unwrap();
        let creds = auth.authenticate_token(token).unwrap();
        assert_eq!(creds.client_id.as_deref(), Some("alice"));
        clock.advance_secs(61);
        assert_eq!(auth.authenticate_token(token).unwrap_err().code, 40142);
        assert_eq!(auth.authenticate_token("nonsense").unwrap_err().code, 40143);
    }

    #[test]
    fn bad_mac_stale_timestamp_replayed_nonce_and_long_ttl_get_ablys_codes() {
        let (auth, key, _clock) = setup();
        let mut tampered = signed(&key, NOW, 60_000, new_nonce());
        tampered["capability"] = json!(r#"{"*":["*"]}"#);
        assert_eq!(
            auth.request_token("app.key", &tampered).unwrap_err().code,
            40101
        );
        let stale = signed(&key, NOW - 121_000, 60_000, new_nonce());
        assert_eq!(
            auth.request_token("app.key", &stale).unwrap_err().code,
            40104
        );
        let once = signed(&key, NOW, 60_000, new_nonce());
        auth.request_token("app.key", &once).unwrap();
        assert_eq!(
            auth.request_token("app.key", &once).unwrap_err().code,
            40105
        );
        let long = signed(&key, NOW, 25 * 3600 * 1000, new_nonce());
        assert_eq!(
            auth.request_token("app.key", &long).unwrap_err().code,
            40003
        );
        let other: ApiKey = "app.other:secret".parse().unwrap();
        assert_eq!(
            auth.request_token("app.other", &signed(&other, NOW, 1000, new_nonce()))
                .unwrap_err()
                .code,
            40101
        );
    }

    #[test]
    fn ably_jwts_authenticate_until_they_expire() {
        let (auth, key, clock) = setup();
        let capability = Capability::parse_json(r#"{"a":["publish"]}"#).unwrap();
        let grant = Grant {
            capability: &capability,
            client_id: Some("bob"),
            ttl_ms: 10_000,
            issued_ms: NOW,
        };
        let jwt = sign_ably_jwt(&key, &grant);
        assert_eq!(
            auth.authenticate_token(&jwt).unwrap().client_id.as_deref(),
            Some("bob")
        );
        let mut forged = jwt.clone();
        forged.pop();
        forged.push(if jwt.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(auth.authenticate_token(&forged).unwrap_err().code, 40144);
        clock.advance_secs(11);
        assert_eq!(auth.authenticate_token(&jwt).unwrap_err().code, 40142);
    }

    #[test]
    fn keys_authenticate_with_the_right_secret_only() {
        let (auth, _key, _clock) = setup();
        assert!(auth.authenticate_key("app.key:secret").is_ok());
        assert_eq!(
            auth.authenticate_key("app.key:wrong").unwrap_err().code,
            40101
        );
        assert_eq!(auth.authenticate_key("nokey").unwrap_err().code, 40101);
    }
}
