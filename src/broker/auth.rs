//! Who a broker client is: TokenRequests exchanged for tokens, Ably JWTs,
//! and API keys (basic auth, loopback only). Failures carry Ably's codes so
//! clients react as they do against Ably: 4014x renews the token, anything
//! else fails the connection.
//!
//! Every credential is narrowed to its key's capability (Ably's key
//! capability, https://ably.com/docs/auth/capabilities): a TokenRequest
//! without a capability gets exactly the key's, one with a capability gets
//! its intersection with the key's (an empty intersection is 40160), an
//! Ably JWT likewise, and an API key connection gets the key's.
//!
//! Memory follows live state. Issued tokens are not stored: each is sealed
//! with a secret drawn when the broker starts (HMAC-SHA256, truncated to
//! 128 bits) and carries its expiry, clientId and capability, so a token
//! costs nothing once handed out. Seen nonces are kept only while a
//! TokenRequest with that nonce could still pass the timestamp check, in an
//! expiry-ordered index pruned on every request and by the broker's sweeper.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::TryRngCore;
use serde_json::{json, Value};

use super::protocol::AblyError;
use super::tables::GiveBack;
use crate::capability::Capability;
use crate::clock::SharedClock;
use crate::signing::{
    constant_time_eq, hmac_sha256, token_request_mac, verify_ably_jwt, ApiKey, JwtError,
};

/// Ably accepts a TokenRequest whose timestamp is within this of its clock
/// (error 40104 otherwise).
const TIMESTAMP_WINDOW_MS: u64 = 2 * 60 * 1000;
const DEFAULT_TTL_MS: u64 = 60 * 60 * 1000;
const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Nonces remembered at once. Each is forgotten once its TokenRequest's
/// timestamp leaves the window, so this bounds TokenRequests per ~2 minutes,
/// not over the broker's life.
const MAX_LIVE_NONCES: usize = 100_000;
/// Bytes of the sealed token's tag: a truncated HMAC-SHA256.
const TAG_LEN: usize = 16;
const TOKEN_VERSION: u8 = 1;

/// What an authenticated client may do, and until when.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) client_id: Option<String>,
    pub(crate) capability: Capability,
    /// None for API-key connections, which do not expire.
    pub(crate) expires_ms: Option<u64>,
}

/// Keys with an expiry, forgotten in expiry order: `prune` costs O(log n)
/// per entry it drops and nothing otherwise. A key is held as its 64-bit
/// digest under a per-process random key (SipHash, `RandomState`): no heap
/// allocation per entry, which at 78 000 live nonces (500 TokenRequests a
/// second, benches/soak) is what kept the allocator's heap fragmented. Two
/// keys sharing a digest (about 1 in 10^14 per request with 100 000
/// remembered) would refuse a fresh TokenRequest as a replay, never accept
/// a replayed one.
struct Expiring {
    digest: RandomState,
    expiry: HashMap<u64, u64>,
    by_expiry: BTreeSet<(u64, u64)>,
}

impl Default for Expiring {
    fn default() -> Self {
        Expiring {
            digest: RandomState::new(),
            expiry: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }
}

impl Expiring {
    /// Drops every entry whose expiry is before `now`.
    fn prune(&mut self, now: u64) {
        while let Some((expires, _)) = self.by_expiry.first() {
            if *expires >= now {
                break;
            }
            let (_, key) = self.by_expiry.pop_first().expect("first exists");
            self.expiry.remove(&key);
        }
    }

    fn digest(&self, key: &str) -> u64 {
        self.digest.hash_one(key)
    }

    fn contains(&self, key: &str) -> bool {
        self.expiry.contains_key(&self.digest(key))
    }

    fn insert(&mut self, key: &str, expires: u64) {
        let key = self.digest(key);
        if let Some(old) = self.expiry.insert(key, expires) {
            self.by_expiry.remove(&(old, key));
        }
        self.by_expiry.insert((expires, key));
    }

    /// Entries held: the larger of the map and its expiry index, which
    /// hold the same keys.
    fn len(&self) -> usize {
        self.expiry.len().max(self.by_expiry.len())
    }
}

pub(crate) struct BrokerAuth {
    keys: Vec<ApiKey>,
    clock: SharedClock,
    /// Seals issued tokens; drawn at start, so a restart invalidates them
    /// (40143, and clients renew).
    seal: [u8; 32],
    nonces: Mutex<Expiring>,
    max_nonces: usize,
}

fn bad_request(message: impl Into<String>) -> AblyError {
    AblyError::new(40000, 400, message)
}

fn unrecognised() -> AblyError {
    AblyError::new(40143, 401, "token unrecognised: request a new one")
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

/// `asked` narrowed to what `key` may grant; nothing left is 40160, as Ably
/// refuses a token request whose capability does not intersect its key's.
fn within_key(asked: &Capability, key: &ApiKey) -> Result<Capability, AblyError> {
    let narrowed = asked.narrowed_by(key.capability());
    if narrowed.is_empty() {
        return Err(AblyError::new(
            40160,
            401,
            format!(
                "capability {asked} is not permitted by key {}, whose capability is {}",
                key.name(),
                key.capability()
            ),
        ));
    }
    Ok(narrowed)
}

impl BrokerAuth {
    pub(crate) fn new(keys: Vec<ApiKey>, clock: SharedClock) -> BrokerAuth {
        let mut seal = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut seal)
            .expect("the operating system's random source is available");
        BrokerAuth {
            keys,
            clock,
            seal,
            nonces: Mutex::new(Expiring::default()),
            max_nonces: MAX_LIVE_NONCES,
        }
    }

    /// The same with a smaller nonce cap, so tests can reach it.
    #[cfg(test)]
    fn with_nonce_cap(mut self, cap: usize) -> BrokerAuth {
        self.max_nonces = cap;
        self
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
        if client_id.is_some_and(|c| c.len() > usize::from(u16::MAX)) {
            return Err(AblyError::new(
                40012,
                400,
                "clientId is longer than 65535 bytes",
            ));
        }
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
        self.remember_nonce(key_name, nonce, timestamp, now)?;
        let ttl = ttl.unwrap_or(DEFAULT_TTL_MS);
        if ttl == 0 || ttl > MAX_TTL_MS {
            return Err(AblyError::new(
                40003,
                400,
                "ttl must be more than 0 and at most 24 hours",
            ));
        }
        // No capability: exactly the key's (TK2b, RSA6).
        let capability = if capability_text.is_empty() {
            key.capability().clone()
        } else {
            let asked = Capability::parse_json(capability_text)
                .map_err(|e| bad_request(format!("capability: {e}")))?;
            within_key(&asked, key)?
        };
        let credentials = Credentials {
            client_id: client_id.map(str::to_string),
            capability,
            expires_ms: Some(now + ttl),
        };
        let token = self.seal(&credentials, now + ttl);
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

    /// Refuses a nonce seen while its TokenRequest could still be accepted,
    /// and remembers this one until `timestamp` leaves the window.
    fn remember_nonce(
        &self,
        key_name: &str,
        nonce: &str,
        timestamp: u64,
        now: u64,
    ) -> Result<(), AblyError> {
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        nonces.prune(now);
        let id = format!("{key_name}\n{nonce}");
        if nonces.contains(&id) {
            return Err(AblyError::new(
                40105,
                401,
                "nonce replayed: each token request must use a new nonce",
            ));
        }
        if nonces.len() >= self.max_nonces {
            return Err(AblyError::new(
                42910,
                429,
                format!(
                    "too many token requests: this broker accepts at most {} \
                     in 2 minutes; try again shortly",
                    self.max_nonces
                ),
            ));
        }
        nonces.insert(&id, timestamp + TIMESTAMP_WINDOW_MS);
        Ok(())
    }

    /// Forgets what has expired; the broker's sweeper calls it so an idle
    /// broker lets go too.
    pub(crate) fn sweep(&self) {
        let now = self.now_ms();
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        nonces.prune(now);
        // The expiry index is a B-tree: it frees its nodes as it empties.
        nonces.expiry.give_back_room();
    }

    /// The capacity of the nonce map.
    #[cfg(test)]
    pub(crate) fn nonce_room(&self) -> usize {
        self.nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expiry
            .capacity()
    }

    /// Nonces remembered now.
    pub(crate) fn live_nonces(&self) -> usize {
        self.nonces.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// tag ‖ version ‖ expires (u64 BE) ‖ clientId length (u16 BE) ‖
    /// clientId ‖ canonical capability JSON, base64url without padding.
    fn seal(&self, credentials: &Credentials, expires_ms: u64) -> String {
        let client_id = credentials.client_id.as_deref().unwrap_or("");
        let client_id_len =
            u16::try_from(client_id.len()).expect("clientIds are bounded well below 64 KiB");
        let capability = credentials.capability.to_canonical_json();
        let mut body = Vec::with_capacity(11 + client_id.len() + capability.len());
        body.push(TOKEN_VERSION);
        body.extend_from_slice(&expires_ms.to_be_bytes());
        body.extend_from_slice(&client_id_len.to_be_bytes());
        body.extend_from_slice(client_id.as_bytes());
        body.extend_from_slice(capability.as_bytes());
        let tag = hmac_sha256(&self.seal, &[&body]);
        let mut token = Vec::with_capacity(TAG_LEN + body.len());
        token.extend_from_slice(&tag[..TAG_LEN]);
        token.extend_from_slice(&body);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// A token from `seal`: 40143 unless this broker sealed it, 40142 once
    /// expired.
    fn unseal(&self, token: &str, now_ms: u64) -> Result<Credentials, AblyError> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| unrecognised())?;
        if bytes.len() < TAG_LEN + 11 {
            return Err(unrecognised());
        }
        let (tag, body) = bytes.split_at(TAG_LEN);
        let expected = hmac_sha256(&self.seal, &[body]);
        if !constant_time_eq(&expected[..TAG_LEN], tag) || body[0] != TOKEN_VERSION {
            return Err(unrecognised());
        }
        let expires_ms = u64::from_be_bytes(body[1..9].try_into().expect("8 bytes"));
        if expires_ms <= now_ms {
            return Err(AblyError::new(40142, 401, "token expired"));
        }
        let client_id_len = usize::from(u16::from_be_bytes([body[9], body[10]]));
        let rest = &body[11..];
        if rest.len() < client_id_len {
            return Err(unrecognised());
        }
        let (client_id, capability) = rest.split_at(client_id_len);
        let client_id = std::str::from_utf8(client_id).map_err(|_| unrecognised())?;
        let capability = std::str::from_utf8(capability)
            .ok()
            .and_then(|c| Capability::parse_json(c).ok())
            .ok_or_else(unrecognised)?;
        Ok(Credentials {
            client_id: (!client_id.is_empty()).then(|| client_id.to_string()),
            capability,
            expires_ms: Some(expires_ms),
        })
    }

    /// A token from `requestToken`, or an Ably JWT.
    pub(crate) fn authenticate_token(&self, token: &str) -> Result<Credentials, AblyError> {
        let now = self.now_ms();
        if token.contains('.') {
            return self.authenticate_jwt(token, now);
        }
        self.unseal(token, now)
    }

    fn authenticate_jwt(&self, token: &str, now_ms: u64) -> Result<Credentials, AblyError> {
        let invalid = |why: String| AblyError::new(40144, 401, format!("invalid JWT: {why}"));
        let (key, claims) = verify_ably_jwt(token, &self.keys).map_err(|e| match e {
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
        let asked = Capability::parse_json(&claims.capability)
            .map_err(|e| invalid(format!("x-ably-capability: {e}")))?;
        Ok(Credentials {
            client_id: claims.client_id.filter(|c| !c.is_empty()),
            capability: within_key(&asked, key)?,
            expires_ms: Some(claims.exp.saturating_mul(1000)),
        })
    }

    /// `key=appId.keyId:secret`: exactly the key's capability. Callers allow
    /// it only from loopback.
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
            capability: key.capability().clone(),
            expires_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Operation;
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

    fn restricted() -> (BrokerAuth, ApiKey, std::sync::Arc<ManualClock>) {
        let key: ApiKey = "app.orders:secret".parse().unwrap();
        let key = key.with_capability(
            Capability::parse_json(r#"{"orders:*":["publish","subscribe"]}"#).unwrap(),
        );
        let clock = ManualClock::at_ms(NOW);
        (
            BrokerAuth::new(vec![key.clone()], clock.clone()),
            key,
            clock,
        )
    }

    fn asking(key: &ApiKey, capability: Option<&str>) -> Value {
        let capability = capability.map(|c| Capability::parse_json(c).unwrap());
        let mut request = serde_json::to_value(sign_token_request(
            key,
            &Grant {
                capability: capability.as_ref().unwrap_or(key.capability()),
                client_id: None,
                ttl_ms: 60_000,
                issued_ms: NOW,
            },
            new_nonce(),
        ))
        .unwrap();
        if capability.is_none() {
            // As ably-js sends a TokenRequest without a capability: the
            // field absent and signed as "".
            request.as_object_mut().unwrap().remove("capability");
            request["mac"] = json!(token_request_mac(
                key.secret(),
                key.name(),
                Some(60_000),
                "",
                None,
                NOW,
                request["nonce"].as_str().unwrap(),
            ));
        }
        request
    }

    #[test]
    fn a_token_request_without_a_capability_gets_exactly_the_keys() {
        let (auth, key, _clock) = restricted();
        let details = auth.request_token(key.name(), &asking(&key, None)).unwrap();
        assert_eq!(
            details["capability"],
            r#"{"orders:*":["publish","subscribe"]}"#
        );
        let token = details["token"].as_str().unwrap();
        let creds = auth.authenticate_token(token).unwrap();
        assert_eq!(creds.capability, *key.capability());
        assert_eq!(creds.client_id, None);

        let (auth, key, _clock) = setup();
        let details = auth.request_token(key.name(), &asking(&key, None)).unwrap();
        assert_eq!(details["capability"], r#"{"*":["*"]}"#);
    }

    #[test]
    fn a_requested_capability_is_narrowed_to_the_keys() {
        let (auth, key, _clock) = restricted();
        let asked = r#"{"orders:1":["*"],"chat:*":["publish"],"*":["history","subscribe"]}"#;
        let details = auth
            .request_token(key.name(), &asking(&key, Some(asked)))
            .unwrap();
        assert_eq!(
            details["capability"],
            r#"{"orders:*":["subscribe"],"orders:1":["publish","subscribe"]}"#
        );
        let creds = auth
            .authenticate_token(details["token"].as_str().unwrap())
            .unwrap();
        assert!(creds.capability.allows("orders:1", Operation::Publish));
        assert!(!creds.capability.allows("chat:1", Operation::Publish));
        assert!(!creds.capability.allows("orders:2", Operation::Publish));

        let outside = asking(&key, Some(r#"{"chat:*":["publish"]}"#));
        let err = auth.request_token(key.name(), &outside).unwrap_err();
        assert_eq!((err.code, err.status), (40160, 401));
        assert!(err.message.contains("app.orders"), "{}", err.message);
        let no_ops = asking(&key, Some(r#"{"orders:1":["presence"]}"#));
        assert_eq!(
            auth.request_token(key.name(), &no_ops).unwrap_err().code,
            40160
        );
    }

    #[test]
    fn ably_jwts_and_api_keys_are_held_to_the_keys_capability() {
        let (auth, key, _clock) = restricted();
        let wide = Capability::parse_json(r#"{"*":["*"]}"#).unwrap();
        let jwt = sign_ably_jwt(
            &key,
            &Grant {
                capability: &wide,
                client_id: Some("bob"),
                ttl_ms: 10_000,
                issued_ms: NOW,
            },
        );
        let creds = auth.authenticate_token(&jwt).unwrap();
        assert_eq!(creds.capability, *key.capability());
        let elsewhere = Capability::parse_json(r#"{"chat:*":["*"]}"#).unwrap();
        let jwt = sign_ably_jwt(
            &key,
            &Grant {
                capability: &elsewhere,
                client_id: Some("bob"),
                ttl_ms: 10_000,
                issued_ms: NOW,
            },
        );
        assert_eq!(auth.authenticate_token(&jwt).unwrap_err().code, 40160);

        let creds = auth.authenticate_key("app.orders:secret").unwrap();
        assert_eq!(creds.capability, *key.capability());
        assert!(!creds.capability.allows("chat:1", Operation::Subscribe));
    }

    #[test]
    fn tokens_are_sealed_by_this_broker() {
        let (auth, key, _clock) = setup();
        let details = auth
            .request_token("app.key", &signed(&key, NOW, 60_000, new_nonce()))
            .unwrap();
        let token = details["token"].as_str().unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1; // the capability's closing brace
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(auth.authenticate_token(&tampered).unwrap_err().code, 40143);
        // Another broker (or this one after a restart) does not know it.
        let (other, _, _) = setup();
        assert_eq!(other.authenticate_token(token).unwrap_err().code, 40143);
        for junk in ["", "A", "not base64 at all!", &"A".repeat(400)] {
            assert_eq!(auth.authenticate_token(junk).unwrap_err().code, 40143);
        }
    }

    #[test]
    fn nonces_are_kept_for_the_timestamp_window_only() {
        let (auth, key, clock) = setup();
        let once = signed(&key, NOW, 60_000, new_nonce());
        auth.request_token("app.key", &once).unwrap();
        assert_eq!(auth.live_nonces(), 1);
        clock.advance_secs(119);
        auth.sweep();
        assert_eq!(auth.live_nonces(), 1);
        assert_eq!(
            auth.request_token("app.key", &once).unwrap_err().code,
            40105
        );
        clock.advance_secs(2);
        auth.sweep();
        assert_eq!(auth.live_nonces(), 0);
        // Forgotten, yet still refused: its timestamp is no longer current.
        assert_eq!(
            auth.request_token("app.key", &once).unwrap_err().code,
            40104
        );
    }

    #[test]
    fn a_long_churn_is_never_refused_and_memory_tracks_live_nonces() {
        const CAP: usize = 50;
        let (auth, key, clock) = setup();
        let auth = auth.with_nonce_cap(CAP);
        // 5000 requests, one every 3 s of simulated time: 100 times the cap
        // over ~4 hours, at most 41 inside any 2-minute window.
        for i in 0..5000 {
            let now = auth.now_ms();
            let details = auth
                .request_token("app.key", &signed(&key, now, 1000, new_nonce()))
                .unwrap_or_else(|e| panic!("request {i} refused: {e:?}"));
            assert!(details["token"].is_string());
            assert!(auth.live_nonces() <= 41, "{} live", auth.live_nonces());
            clock.advance_secs(3);
        }
        // A burst fills the cap, gets a clear 42910, and passes once the
        // window has moved on.
        let now = auth.now_ms();
        let mut refused = None;
        for _ in 0..CAP {
            if let Err(e) = auth.request_token("app.key", &signed(&key, now, 1000, new_nonce())) {
                refused = Some(e);
                break;
            }
        }
        let refused = refused.expect("the burst reaches the cap");
        assert_eq!((refused.code, refused.status), (42910, 429));
        assert!(
            refused.message.contains("at most 50"),
            "{}",
            refused.message
        );
        assert_eq!(auth.live_nonces(), CAP);
        clock.advance_secs(121);
        let now = auth.now_ms();
        auth.request_token("app.key", &signed(&key, now, 1000, new_nonce()))
            .unwrap();
        assert_eq!(auth.live_nonces(), 1);
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
