use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{constant_time_eq, hmac_sha256, ApiKey, Grant, KeySecret};

/// An Ably TokenRequest as ably-js's `createTokenRequest` produces it. The
/// client exchanges it at Ably (or the embedded broker) for a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    pub(crate) key_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ttl: Option<u64>,
    /// The capability as JSON *text*: the exact bytes the mac covers.
    #[serde(default)]
    pub(crate) capability: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_id: Option<String>,
    pub(crate) timestamp: u64,
    pub(crate) nonce: String,
    pub(crate) mac: String,
}

/// A nonce of 32 hex characters (128 random bits) from `rand::rng()`: ChaCha12
/// seeded, and periodically reseeded, from the operating system's CSPRNG, so
/// unpredictable like the OS's own bytes without a `getrandom` system call per
/// token request (one of two per request before; BENCHMARKS.md, "Per-request
/// cost").
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut nonce = String::with_capacity(2 * bytes.len());
    for b in bytes {
        nonce.push(char::from(HEX[usize::from(b >> 4)]));
        nonce.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    nonce
}

/// HMAC-SHA256 over `keyName\nttl\ncapability\nclientId\ntimestamp\nnonce\n`,
/// an absent field written as the empty string; standard padded base64.
pub(crate) fn token_request_mac(
    secret: &KeySecret,
    key_name: &str,
    ttl: Option<u64>,
    capability: &str,
    client_id: Option<&str>,
    timestamp: u64,
    nonce: &str,
) -> String {
    let ttl = ttl.map(|t| t.to_string()).unwrap_or_default();
    let timestamp = timestamp.to_string();
    let nl: &[u8] = b"\n";
    let digest = hmac_sha256(
        secret.expose(),
        &[
            key_name.as_bytes(),
            nl,
            ttl.as_bytes(),
            nl,
            capability.as_bytes(),
            nl,
            client_id.unwrap_or("").as_bytes(),
            nl,
            timestamp.as_bytes(),
            nl,
            nonce.as_bytes(),
            nl,
        ],
    );
    STANDARD.encode(digest)
}

pub fn sign_token_request(key: &ApiKey, grant: &Grant<'_>, nonce: String) -> TokenRequest {
    let capability = grant.capability.to_canonical_json();
    let mac = token_request_mac(
        key.secret(),
        key.name(),
        Some(grant.ttl_ms),
        &capability,
        grant.client_id,
        grant.issued_ms,
        &nonce,
    );
    TokenRequest {
        key_name: key.name().to_string(),
        ttl: Some(grant.ttl_ms),
        capability,
        client_id: grant.client_id.map(str::to_string),
        timestamp: grant.issued_ms,
        nonce,
        mac,
    }
}

/// Recomputes the mac with `secret` and compares in constant time.
#[must_use]
pub(crate) fn verify_token_request_mac(request: &TokenRequest, secret: &KeySecret) -> bool {
    let expected = token_request_mac(
        secret,
        &request.key_name,
        request.ttl,
        &request.capability,
        request.client_id.as_deref(),
        request.timestamp,
        &request.nonce,
    );
    constant_time_eq(expected.as_bytes(), request.mac.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Capability;

    fn key() -> ApiKey {
        "appId.keyId:keySecret".parse().unwrap()
    }

    // Three check values computed by the `ably` npm client 2.28.0's
    // createTokenRequest with a fixed timestamp and nonce (Python's hmac agrees).
    #[test]
    fn mac_matches_ably_js_with_every_field() {
        let mac = token_request_mac(
            key().secret(),
            "appId.keyId",
            Some(3_600_000),
            r#"{"*":["*"]}"#,
            Some("user-1"),
            1_700_000_000_000,
            "0123456789abcdef",
        );
        assert_eq!(mac, "2SjJRhzaY2sNhgOieu2xrB0nG9vfUiF/sfekbAxcI2I=");
    }

    #[test]
    fn mac_matches_ably_js_with_absent_fields() {
        let mac = token_request_mac(
            key().secret(),
            "appId.keyId",
            None,
            "",
            None,
            1_700_000_000_000,
            "0123456789abcdef",
        );
        assert_eq!(mac, "hof9jY3Ir8CZuMxMW/MEF7NHdZ61VWK2ByjCJDseUO0=");
    }

    #[test]
    fn signed_request_uses_canonical_capability() {
        let capability = Capability::parse_json(
            r#"{"orders:user-1:*":["subscribe","presence","history"],"announcements":["subscribe"]}"#,
        )
        .unwrap();
        let grant = Grant {
            capability: &capability,
            client_id: Some("user-1"),
            ttl_ms: 3_600_000,
            issued_ms: 1_700_000_000_000,
        };
        let request = sign_token_request(&key(), &grant, "0123456789abcdef".into());
        assert_eq!(
            request.capability,
            r#"{"announcements":["subscribe"],"orders:user-1:*":["history","presence","subscribe"]}"#
        );
        assert_eq!(request.mac, "iE8R3fxd6LyH2Qa81GVdV7Dq/ylhOV4hkqV+HaMtCXA=");
        assert!(verify_token_request_mac(&request, key().secret()));
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["keyName"], "appId.keyId");
        assert_eq!(json["ttl"], 3_600_000);
        assert_eq!(json["timestamp"], 1_700_000_000_000u64);
        assert_eq!(json["clientId"], "user-1");
        assert!(json["capability"].is_string());
    }

    #[test]
    fn tampering_with_any_field_breaks_the_mac() {
        let capability = Capability::parse_json(r#"{"a":["subscribe"]}"#).unwrap();
        let grant = Grant {
            capability: &capability,
            client_id: Some("u"),
            ttl_ms: 1000,
            issued_ms: 1,
        };
        let good = sign_token_request(&key(), &grant, new_nonce());
        let mut bad = good.clone();
        bad.capability = r#"{"*":["*"]}"#.into();
        assert!(!verify_token_request_mac(&bad, key().secret()));
        let mut bad = good.clone();
        bad.client_id = Some("v".into());
        assert!(!verify_token_request_mac(&bad, key().secret()));
        let other: ApiKey = "appId.keyId:other".parse().unwrap();
        assert!(!verify_token_request_mac(&good, other.secret()));
    }

    #[test]
    fn nonces_are_long_and_distinct() {
        let a = new_nonce();
        let b = new_nonce();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
    }
}
