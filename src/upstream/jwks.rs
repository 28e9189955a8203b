//! A JSON Web Key Set parsed into verification keys. Keys that cannot be used
//! for signatures (`use: enc`, symmetric `oct`, unknown `kty` or curve, RSA
//! under 2048 bits, malformed parameters) are skipped one by one, so one odd
//! key never poisons the rest of the set.
//!
//! Each kept key is parsed into an aws-lc public key once, when the set is
//! read, for each algorithm it may verify; a request only checks a signature.
//! (Building the RSA key per call, as `jsonwebtoken::crypto::verify` does,
//! also rebuilds its Montgomery context: about 15 % of a verification, see
//! BENCHMARKS.md "Per-request cost".)

use std::sync::Arc;

use aws_lc_rs::signature::{self as aws, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
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
    /// The key parsed for each algorithm it accepts (one, or the six RSA
    /// ones when the JWK names none).
    parsed: Arc<[(Algorithm, ParsedPublicKey)]>,
}

impl VerifyKey {
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.accepts(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// Whether `signature` (base64url, as in a compact JWS) signs
    /// `signing_input` with this key under `alg`. An algorithm the key does
    /// not accept never verifies.
    pub fn verify(&self, alg: Algorithm, signing_input: &[u8], signature: &str) -> bool {
        let Some((_, key)) = self.parsed.iter().find(|(a, _)| *a == alg) else {
            return false;
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        key.verify_sig(signing_input, &signature).is_ok()
    }
}

/// Every asymmetric algorithm, for keys whose JWK names none.
const ASYMMETRIC: [Algorithm; 9] = {
    use Algorithm::*;
    [
        RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ]
};

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
    let (kind, public_key) = match field("kty") {
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
            (KeyKind::Rsa, PublicKey::Rsa { n, e })
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
            (kind, PublicKey::Ec(point))
        }
        Some("OKP") => {
            if field("crv") != Some("Ed25519") {
                return Err(format!("OKP curve {:?} is not supported", field("crv")));
            }
            let x = b64_field(jwk, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key has the wrong length".into());
            }
            (KeyKind::Ed25519, PublicKey::Ed25519(x))
        }
        Some("oct") => return Err("symmetric (oct) keys are never used from a JWKS".into()),
        other => return Err(format!("kty {other:?} is not supported")),
    };
    if let Some(alg) = alg {
        if !kind.accepts(alg) {
            return Err(format!("alg {alg:?} does not fit a {kind:?} key"));
        }
    }
    let algorithms = alg.as_ref().map_or(&ASYMMETRIC[..], std::slice::from_ref);
    let parsed = algorithms
        .iter()
        .filter(|a| kind.accepts(**a))
        .map(|&alg| Ok((alg, public_key.parse_for(alg)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(VerifyKey {
        kid,
        kind,
        alg,
        parsed: parsed.into(),
    })
}

/// A JWK's public key material, before aws-lc parses it.
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point, `04 || x || y`.
    Ec(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// The key parsed to verify `alg` signatures, with the aws-lc algorithm
    /// jsonwebtoken's aws-lc backend uses for it (RFC 7518 §3.1, RFC 8037 §3.1).
    fn parse_for(&self, alg: Algorithm) -> Result<ParsedPublicKey, String> {
        use Algorithm::*;
        let rsa = |n: &[u8], e: &[u8], params: &'static aws::RsaParameters| {
            RsaPublicKeyComponents { n, e }.to_parsed_public_key(params)
        };
        let parsed = match (self, alg) {
            (PublicKey::Rsa { n, e }, RS256) => rsa(n, e, &aws::RSA_PKCS1_2048_8192_SHA256),
            (PublicKey::Rsa { n, e }, RS384) => rsa(n, e, &aws::RSA_PKCS1_2048_8192_SHA384),
            (PublicKey::Rsa { n, e }, RS512) => rsa(n, e, &aws::RSA_PKCS1_2048_8192_SHA512),
            (PublicKey::Rsa { n, e }, PS256) => rsa(n, e, &aws::RSA_PSS_2048_8192_SHA256),
            (PublicKey::Rsa { n, e }, PS384) => rsa(n, e, &aws::RSA_PSS_2048_8192_SHA384),
            (PublicKey::Rsa { n, e }, PS512) => rsa(n, e, &aws::RSA_PSS_2048_8192_SHA512),
            (PublicKey::Ec(point), ES256) => {
                ParsedPublicKey::new(&aws::ECDSA_P256_SHA256_FIXED, point)
            }
            (PublicKey::Ec(point), ES384) => {
                ParsedPublicKey::new(&aws::ECDSA_P384_SHA384_FIXED, point)
            }
            (PublicKey::Ed25519(x), EdDSA) => ParsedPublicKey::new(&aws::ED25519, x),
            _ => return Err(format!("alg {alg:?} does not fit the key")),
        };
        parsed.map_err(|e| format!("the key is not usable for {alg:?} ({e})"))
    }
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

    fn sign(alg: Algorithm, pem: &str, input: &str) -> String {
        let pem = std::fs::read(format!(
            "{}/tests/fixtures/{pem}.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let key = match alg {
            Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap();
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, alg).unwrap()
    }

    #[test]
    fn keys_parsed_once_verify_each_algorithm_they_accept_and_nothing_else() {
        let doc = serde_json::json!({"keys": [
            with(fixture("rsa1"), serde_json::json!({"kid": "rsa"})),
            with(fixture("rsa2"), serde_json::json!({"kid": "rs256-only", "alg": "RS256"})),
            with(fixture("ec1"), serde_json::json!({"kid": "ec"})),
            with(fixture("ed1"), serde_json::json!({"kid": "ed"})),
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        let input = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0";
        for (kid, alg, pem) in [
            ("rsa", Algorithm::RS256, "rsa1"),
            ("rsa", Algorithm::RS512, "rsa1"),
            ("rsa", Algorithm::PS256, "rsa1"),
            ("rs256-only", Algorithm::RS256, "rsa2"),
            ("ec", Algorithm::ES256, "ec1"),
            ("ed", Algorithm::EdDSA, "ed1"),
        ] {
            let key = set.find(Some(kid), alg).unwrap();
            let sig = sign(alg, pem, input);
            assert!(key.verify(alg, input.as_bytes(), &sig), "{kid} {alg:?}");
            // Another input, another algorithm of the family, or a signature
            // that is not base64url: never valid.
            assert!(!key.verify(alg, b"eyJhbGciOiJSUzI1NiJ9.e30", &sig));
            let other = if alg == Algorithm::RS256 {
                Algorithm::RS384
            } else {
                Algorithm::RS256
            };
            assert!(
                !key.verify(other, input.as_bytes(), &sig),
                "{kid} {other:?}"
            );
            assert!(!key.verify(alg, input.as_bytes(), &format!("{sig}!")));
        }
        // A key pinned to RS256 is not parsed for PS256 at all, and a
        // signature by another RSA key fails.
        let pinned = set.find(Some("rs256-only"), Algorithm::RS256).unwrap();
        assert!(!pinned.verify(
            Algorithm::PS256,
            input.as_bytes(),
            &sign(Algorithm::PS256, "rsa2", input)
        ));
        assert!(!pinned.verify(
            Algorithm::RS256,
            input.as_bytes(),
            &sign(Algorithm::RS256, "rsa1", input)
        ));
        // No HMAC algorithm verifies with a public key, whatever the secret.
        let rsa = set.find(Some("rsa"), Algorithm::RS256).unwrap();
        let hs = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
            Algorithm::HS256,
        )
        .unwrap();
        assert!(!rsa.verify(Algorithm::HS256, input.as_bytes(), &hs));
    }

    #[test]
    fn an_ec_point_off_the_curve_is_skipped_when_the_set_is_read() {
        let mut ec = with(fixture("ec1"), serde_json::json!({"kid": "bad"}));
        ec["y"] = serde_json::json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
        let doc = serde_json::json!({"keys": [ec, fixture("rsa1")]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert!(
            set.skipped[0].contains("not usable for ES256"),
            "{:?}",
            set.skipped
        );
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
