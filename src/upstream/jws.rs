//! Compact JWS parsing with the defences of RFC 8725 that do not need a key:
//! size cap before parsing, exactly three parts, no nested or encrypted
//! tokens, no `crit`. Header fields that point at other keys (`jku`, `x5u`,
//! `jwk`, `x5c`) are never read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::UpstreamError;

/// Larger session tokens are refused before any parsing.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The third part, still base64url.
    pub signature: &'a str,
}

pub fn parse(token: &str) -> Result<UnverifiedToken<'_>, UpstreamError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(UpstreamError::TokenTooLarge("a JWT is at most 8 KiB"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    match parts.len() {
        3 => {}
        5 => {
            return Err(UpstreamError::Unsupported(
                "encrypted (JWE) tokens are not accepted",
            ))
        }
        _ => {
            return Err(UpstreamError::Malformed(
                "a JWT has three dot-separated parts",
            ))
        }
    }
    let header = decode_object(parts[0]).ok_or(UpstreamError::Malformed(
        "the header is not base64url-encoded JSON object",
    ))?;
    if header.contains_key("crit") {
        return Err(UpstreamError::Unsupported(
            "the token lists critical header extensions (crit), none of which are understood",
        ));
    }
    if header.contains_key("enc") {
        return Err(UpstreamError::Unsupported(
            "encrypted (JWE) tokens are not accepted",
        ));
    }
    if let Some(cty) = header.get("cty") {
        let nested = cty
            .as_str()
            .map(|c| c.eq_ignore_ascii_case("JWT"))
            .unwrap_or(true);
        if nested {
            return Err(UpstreamError::Unsupported(
                "nested tokens (cty: JWT) are not accepted",
            ));
        }
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(UpstreamError::Malformed("the header has no alg")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(UpstreamError::Malformed("the header's kid is not a string")),
    };
    let claims = decode_object(parts[1]).ok_or(UpstreamError::Malformed(
        "the payload is not base64url-encoded JSON object",
    ))?;
    if parts[2].is_empty() {
        return Err(UpstreamError::Malformed("the token has no signature"));
    }
    let signing_input = &token[..parts[0].len() + 1 + parts[1].len()];
    Ok(UnverifiedToken {
        alg,
        kid,
        claims,
        signing_input,
        signature: parts[2],
    })
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn token(header: Value, claims: Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    #[test]
    fn reads_alg_kid_and_claims_and_tolerates_integer_header_fields() {
        let t = token(
            serde_json::json!({"alg": "RS256", "kid": "k1", "typ": "JWT", "oiat": 1700000000, "cat": "cl_B7d4PD111AAA"}),
            serde_json::json!({"sub": "user_1"}),
        );
        let parsed = parse(&t).unwrap();
        assert_eq!(parsed.alg, "RS256");
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims["sub"], "user_1");
        assert_eq!(parsed.signature, "c2ln");
        assert!(t.starts_with(parsed.signing_input));
    }

    #[test]
    fn refuses_oversized_tokens_before_parsing() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(parse(&big), Err(UpstreamError::TokenTooLarge(_))));
    }

    #[test]
    fn refuses_crit_nested_and_encrypted_tokens() {
        let claims = serde_json::json!({});
        let crit = token(
            serde_json::json!({"alg": "RS256", "crit": ["exp"]}),
            claims.clone(),
        );
        assert!(matches!(parse(&crit), Err(UpstreamError::Unsupported(_))));
        let nested = token(
            serde_json::json!({"alg": "RS256", "cty": "jwt"}),
            claims.clone(),
        );
        assert!(matches!(parse(&nested), Err(UpstreamError::Unsupported(_))));
        assert!(matches!(
            parse("a.b.c.d.e"),
            Err(UpstreamError::Unsupported(_))
        ));
        assert!(matches!(parse("a.b"), Err(UpstreamError::Malformed(_))));
        assert!(matches!(parse("a.b.c.d"), Err(UpstreamError::Malformed(_))));
    }

    #[test]
    fn refuses_non_object_parts_and_missing_alg() {
        let no_alg = token(serde_json::json!({"kid": "k"}), serde_json::json!({}));
        assert!(matches!(parse(&no_alg), Err(UpstreamError::Malformed(_))));
        let arr = format!(
            "{}.{}.c2ln",
            b64(&serde_json::json!({"alg":"RS256"})),
            b64(&serde_json::json!([1]))
        );
        assert!(matches!(parse(&arr), Err(UpstreamError::Malformed(_))));
        let unsigned = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg":"none"})),
            b64(&serde_json::json!({}))
        );
        assert!(matches!(parse(&unsigned), Err(UpstreamError::Malformed(_))));
    }
}
