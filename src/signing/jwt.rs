use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{constant_time_eq, hmac_sha256, ApiKey, Grant, KeySecret};

/// The claims of an Ably JWT (Ably docs, "Token authentication: Ably JWT";
/// the `x-ably-` prefix is reserved). Times are in seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AblyJwtClaims {
    pub(crate) iat: u64,
    pub(crate) exp: u64,
    /// Capability JSON as a string, not an object: Ably requires the text.
    #[serde(rename = "x-ably-capability")]
    pub(crate) capability: String,
    #[serde(
        rename = "x-ably-clientId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) client_id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum JwtError {
    #[error("not a JWT: {0}")]
    Malformed(&'static str),
    #[error("the JWT header must be HS256 with a kid naming the key")]
    BadHeader,
    #[error("the JWT is signed by key {0:?}, not by a key configured here")]
    UnknownKey(String),
    #[error("the JWT signature does not match the key")]
    BadSignature,
    #[error("the JWT claims are missing or malformed: {0}")]
    BadClaims(String),
}

#[derive(Serialize)]
struct Header<'a> {
    typ: &'static str,
    alg: &'static str,
    kid: &'a str,
}

/// Signs an Ably JWT: header `{"typ":"JWT","alg":"HS256","kid":keyName}`.
pub fn sign_ably_jwt(key: &ApiKey, grant: &Grant<'_>) -> String {
    let iat = grant.issued_ms / 1000;
    // Ably reads whole seconds; round the lifetime up so a sub-second ttl still
    // yields a token that is valid when issued.
    let exp = iat + grant.ttl_ms.div_ceil(1000).max(1);
    let claims = AblyJwtClaims {
        iat,
        exp,
        capability: grant.capability.to_canonical_json(),
        client_id: grant.client_id.map(str::to_string),
    };
    let header = Header {
        typ: "JWT",
        alg: "HS256",
        kid: key.name(),
    };
    let mut token = String::with_capacity(512);
    URL_SAFE_NO_PAD.encode_string(
        serde_json::to_vec(&header).expect("header serialises"),
        &mut token,
    );
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(
        serde_json::to_vec(&claims).expect("claims serialise"),
        &mut token,
    );
    let signature = hmac_sha256(key.secret().expose(), &[token.as_bytes()]);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

#[derive(Deserialize)]
struct IncomingHeader {
    alg: String,
    kid: Option<String>,
}

/// The key name (`kid`) of an Ably JWT, read without verifying anything.
pub(crate) fn ably_jwt_key_name(token: &str) -> Result<String, JwtError> {
    let header = token
        .split('.')
        .next()
        .ok_or(JwtError::Malformed("no header"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed("header is not base64url"))?;
    let header: IncomingHeader =
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("header is not JSON"))?;
    if header.alg != "HS256" {
        return Err(JwtError::BadHeader);
    }
    header.kid.ok_or(JwtError::BadHeader)
}

/// Verifies an Ably JWT against the configured keys (the `kid` picks one) and
/// returns its claims. Expiry is the caller's business: it owns the clock.
pub(crate) fn verify_ably_jwt<'k>(
    token: &str,
    keys: &'k [ApiKey],
) -> Result<(&'k ApiKey, AblyJwtClaims), JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("a JWT has three dot-separated parts"));
    };
    let kid = ably_jwt_key_name(token)?;
    let key = keys
        .iter()
        .find(|k| k.name() == kid)
        .ok_or(JwtError::UnknownKey(kid))?;
    let given = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let signed_len = header.len() + 1 + payload.len();
    if !verify_hs256(key.secret(), &token.as_bytes()[..signed_len], &given) {
        return Err(JwtError::BadSignature);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| JwtError::Malformed("payload is not base64url"))?;
    let claims: AblyJwtClaims =
        serde_json::from_slice(&bytes).map_err(|e| JwtError::BadClaims(e.to_string()))?;
    Ok((key, claims))
}

fn verify_hs256(secret: &KeySecret, message: &[u8], signature: &[u8]) -> bool {
    let expected = hmac_sha256(secret.expose(), &[message]);
    constant_time_eq(&expected, signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Capability;

    #[test]
    fn ably_jwt_has_the_shape_ably_requires() {
        let key: ApiKey = "appId.keyId:keySecret".parse().unwrap();
        let capability = Capability::parse_json(r#"{"chat:*":["subscribe","publish"]}"#).unwrap();
        let grant = Grant {
            capability: &capability,
            client_id: Some("user-1"),
            ttl_ms: 3_600_000,
            issued_ms: 1_700_000_000_123,
        };
        let token = sign_ably_jwt(&key, &grant);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"typ": "JWT", "alg": "HS256", "kid": "appId.keyId"})
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
                "x-ably-capability": r#"{"chat:*":["publish","subscribe"]}"#,
                "x-ably-clientId": "user-1",
            })
        );
        // Independently recomputed HS256 over header.payload.
        let expected = hmac_sha256(
            b"keySecret",
            &[format!("{}.{}", parts[0], parts[1]).as_bytes()],
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap(), expected);

        let keys = [key];
        let (used, verified) = verify_ably_jwt(&token, &keys).unwrap();
        assert_eq!(used.name(), "appId.keyId");
        assert_eq!(verified.client_id.as_deref(), Some("user-1"));
    }

    #[test]
    fn verification_refuses_other_keys_and_tampering() {
        let key: ApiKey = "appId.keyId:keySecret".parse().unwrap();
        let capability = Capability::parse_json(r#"{"*":["*"]}"#).unwrap();
        let grant = Grant {
            capability: &capability,
            client_id: None,
            ttl_ms: 1000,
            issued_ms: 0,
        };
        let token = sign_ably_jwt(&key, &grant);
        let wrong: ApiKey = "appId.keyId:other".parse().unwrap();
        assert_eq!(
            verify_ably_jwt(&token, &[wrong]).unwrap_err(),
            JwtError::BadSignature
        );
        let elsewhere: ApiKey = "appId.otherKey:keySecret".parse().unwrap();
        assert!(matches!(
            verify_ably_jwt(&token, &[elsewhere]),
            Err(JwtError::UnknownKey(_))
        ));
        let mut tampered = token.clone();
        tampered.push('A');
        assert!(verify_ably_jwt(&tampered, &[key]).is_err());
    }
}
