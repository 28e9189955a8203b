//! A JSON Web Key Set parsed into verification keys. Keys that cannot be used
//! for signatures (`use: enc`, symmetric `oct`, unknown `kty` or curve, RSA
//! under 2048 bits, malformed parameters) are skipped one by one, so one odd
//! key never poisons the rest of the set.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Most keys read from one set; real issuers publish two or three.
pub(crate) const MAX_KEYS: usize = 64;
/// Largest JWKS document accepted.
pub(crate) const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// One algorithm family per key: the defence against RS/HS confusion.
    pub(crate) fn accepts(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

#[derive(Clone)]
pub struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) kind: KeyKind,
    /// The JWK's own `alg`, which further restricts the key when present.
    pub(crate) alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl VerifyKey {
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.accepts(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish()
    }
}

#[derive(Debug, Default)]
pub struct KeySet {
    pub(crate) keys: Vec<VerifyKey>,
    /// Why each skipped key was skipped, for logs.
    pub(crate) skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("the JWKS is not a JSON object with a \"keys\" array")]
    NotAKeySet,
    #[error("the JWKS holds no usable signing key ({0})")]
    NoUsableKeys(String),
}

impl KeySet {
    pub fn parse(body: &[u8]) -> Result<KeySet, JwksError> {
        let doc: Value = serde_json::from_slice(body).map_err(|_| JwksError::NotAKeySet)?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NotAKeySet)?;
        let mut set = KeySet::default();
        for (i, jwk) in keys.iter().take(MAX_KEYS).enumerate() {
            match parse_key(jwk) {
                Ok(key) => set.keys.push(key),
                Err(why) => set.skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if set.keys.is_empty() {
            let why = if set.skipped.is_empty() {
                "the set is empty".to_string()
            } else {
                set.skipped.join("; ")
            };
            return Err(JwksError::NoUsableKeys(why));
        }
        Ok(set)
    }

    /// The key to verify a token signed with `alg`, named by `kid`. Without a
    /// `kid`, only a set with exactly one key fit for `alg` answers.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&VerifyKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.accepts(alg)),
            None => {
                let mut fit = self.keys.iter().filter(|k| k.accepts(alg));
                match (fit.next(), fit.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }
    }

    #[cfg(test)]
    fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }
}

fn b64_field(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no {name}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("{name} is not base64url"))
}

fn parse_key(jwk: &Value) -> Result<VerifyKey, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(other) => return Err(format!("use {other} is not \"sig\"")),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o == "verify"));
        if !verifies {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("kid is not a string".into()),
    };
    let alg = match field("alg") {
        None => None,
        Some(a) => Some(
            a.parse::<Algorithm>()
                .map_err(|_| format!("alg {a:?} is not a signature algorithm"))?,
        ),
    };
    let (kind, key) = match field("kty") {
        Some("RSA") => {
            let n = b64_field(jwk, "n")?;
            let e = b64_field(jwk, "e")?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant * 8 < 2048 {
                return Err("RSA modulus is shorter than 2048 bits".into());
            }
            if e.is_empty() || e.len() > 8 {
                return Err("RSA exponent is malformed".into());
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        Some("EC") => {
            let (kind, len) = match field("crv") {
                Some("P-256") => (KeyKind::EcP256, 32),
                Some("P-384") => (KeyKind::EcP384, 48),
                other => return Err(format!("EC curve {other:?} is not supported")),
            };
            let x = b64_field(jwk, "x")?;
            let y = b64_field(jwk, "y")?;
            if x.len() != len || y.len() != len {
                return Err("EC coordinates have the wrong length".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (kind, DecodingKey::from_ec_der(&point))
        }
        Some("OKP") => {
            if field("crv") != Some("Ed25519") {
                return Err(format!("OKP curve {:?} is not supported", field("crv")));
            }
            let x = b64_field(jwk, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key has the wrong length".into());
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        Some("oct") => return Err("symmetric (oct) keys are never used from a JWKS".into()),
        other => return Err(format!("kty {other:?} is not supported")),
    };
    if let Some(alg) = alg {
        if !kind.accepts(alg) {
            return Err(format!("alg {alg:?} does not fit a {kind:?} key"));
        }
    }
    Ok(VerifyKey {
        kid,
        kind,
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/{name}.jwk.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn with(mut jwk: Value, extra: Value) -> Value {
        for (k, v) in extra.as_object().unwrap() {
            jwk[k] = v.clone();
        }
        jwk
    }

    #[test]
    fn odd_keys_are_skipped_without_poisoning_the_set() {
        let doc = serde_json::json!({"keys": [
            with(fixture("rsa1"), serde_json::json!({"kid": "enc", "use": "enc"})),
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "XYZ", "kid": "odd"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            with(fixture("rsa1"), serde_json::json!({"kid": "good", "use": "sig", "alg": "RS256"})),
            with(fixture("ec1"), serde_json::json!({"kid": "ec"})),
            with(fixture("ed1"), serde_json::json!({"kid": "ed"})),
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.kids(), vec!["good", "ec", "ed"]);
        assert_eq!(set.skipped.len(), 4);
        assert!(set.find(Some("good"), Algorithm::RS256).is_some());
        // The JWK's alg pins the key: RS256 only, even though PS256 is RSA too.
        assert!(set.find(Some("good"), Algorithm::PS256).is_none());
        assert!(set.find(Some("ec"), Algorithm::ES256).is_some());
        assert!(set.find(Some("ec"), Algorithm::RS256).is_none());
        assert!(set.find(Some("ed"), Algorithm::EdDSA).is_some());
        assert!(set.find(Some("enc"), Algorithm::RS256).is_none());
        assert!(set.find(Some("sym"), Algorithm::HS256).is_none());
    }

    #[test]
    fn a_set_with_nothing_usable_is_an_error() {
        let doc = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(matches!(
            KeySet::parse(doc.to_string().as_bytes()),
            Err(JwksError::NoUsableKeys(_))
        ));
        assert_eq!(KeySet::parse(b"[]").unwrap_err(), JwksError::NotAKeySet);
        assert_eq!(
            KeySet::parse(b"not json").unwrap_err(),
            JwksError::NotAKeySet
        );
    }

    #[test]
    fn short_rsa_keys_are_refused() {
        let doc = serde_json::json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"}]});
        assert!(KeySet::parse(doc.to_string().as_bytes()).is_err());
    }

    #[test]
    fn without_kid_only_a_single_fitting_key_answers() {
        let one = serde_json::json!({"keys": [fixture("rsa1"), fixture("ec1")]});
        let set = KeySet::parse(one.to_string().as_bytes()).unwrap();
        assert!(set.find(None, Algorithm::RS256).is_some());
        let two = serde_json::json!({"keys": [fixture("rsa1"), fixture("rsa2")]});
        let set = KeySet::parse(two.to_string().as_bytes()).unwrap();
        assert!(set.find(None, Algorithm::RS256).is_none());
    }
}
