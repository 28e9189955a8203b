//! Auth.js v5 and NextAuth v4 session cookies: JWTs encrypted as compact JWE
//! (RFC 7516 §7.1) with `alg: dir` and a key derived from the app's secret.
//!
//! - v5 (`@auth/core` `jwt.encode`): `enc: A256CBC-HS512`, 64-byte key =
//!   HKDF-SHA256(secret, salt = cookie name, info = `Auth.js Generated
//!   Encryption Key (<cookie name>)`) — see @auth/core `src/jwt.ts`.
//! - v4 (`next-auth/jwt` `encode`): `enc: A256GCM`, 32-byte key =
//!   HKDF-SHA256(secret, salt = "", info = `NextAuth.js Generated Encryption
//!   Key`) — see next-auth v4 `src/jwt/index.ts`.
//!
//! Nothing else is accepted: another `alg` or `enc`, `zip`, `crit` or any
//! other header field is refused before a key is tried. Sizes are checked
//! before decoding; every secret is tried in turn (rotation); a value none of
//! them opens is `signature_invalid`. The caller checks the claims.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_256};
use aws_lc_rs::hkdf::{KeyType, Salt, HKDF_SHA256};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::UpstreamError;

/// A joined session cookie larger than this is refused before decoding
/// (Auth.js splits at about 4 KB per cookie; 8 chunks fit).
pub(crate) const MAX_COOKIE_BYTES: usize = 32 * 1024;
/// A protected header longer than this is not one Auth.js wrote.
const MAX_HEADER_BYTES: usize = 1024;

const CBC_IV_BYTES: usize = 16;
const CBC_TAG_BYTES: usize = 32;
const GCM_IV_BYTES: usize = 12;
const GCM_TAG_BYTES: usize = 16;

/// The content encryptions Auth.js and NextAuth write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enc {
    /// Auth.js v5.
    A256CbcHs512,
    /// NextAuth v4.
    A256Gcm,
}

/// An A256CBC-HS512 key (RFC 7518 §5.2.2.1): the first half authenticates,
/// the second encrypts.
struct CbcKey {
    mac: hmac::Key,
    enc: [u8; 32],
}

/// The keys one issuer opens cookies with: per listed cookie name (v5 salts
/// with it) and per secret, in the secrets' order.
pub struct Keys {
    v5: Vec<(String, Vec<CbcKey>)>,
    v4: Vec<LessSafeKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "authjs::Keys({} secrets, {} cookie names)",
            self.v4.len(),
            self.v5.len()
        )
    }
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 (RFC 5869) with `len` bytes of output.
fn hkdf(secret: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) {
    let prk = Salt::new(HKDF_SHA256, salt).extract(secret);
    let info = [info];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF-SHA256 gives up to 8160 bytes; 64 are asked");
}

impl Keys {
    /// Derives every key once, at start-up.
    pub fn derive(secrets: &[&[u8]], cookies: &[String]) -> Keys {
        let v5 = cookies
            .iter()
            .map(|cookie| {
                let info = format!("Auth.js Generated Encryption Key ({cookie})");
                let keys = secrets
                    .iter()
                    .map(|secret| {
                        let mut key = [0u8; 64];
                        hkdf(secret, cookie.as_bytes(), info.as_bytes(), &mut key);
                        let mut enc = [0u8; 32];
                        enc.copy_from_slice(&key[32..]);
                        CbcKey {
                            mac: hmac::Key::new(hmac::HMAC_SHA512, &key[..32]),
                            enc,
                        }
                    })
                    .collect();
                (cookie.clone(), keys)
            })
            .collect();
        let v4 = secrets
            .iter()
            .map(|secret| {
                let mut key = [0u8; 32];
                hkdf(
                    secret,
                    b"",
                    b"NextAuth.js Generated Encryption Key",
                    &mut key,
                );
                LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte AES-256-GCM key"),
                )
            })
            .collect();
        Keys { v5, v4 }
    }
}

/// A compact JWE that passed every check that needs no key.
struct Parsed<'a> {
    enc: Enc,
    /// The first part as sent: the AAD (RFC 7516 §5.2 step 14).
    aad: &'a str,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

/// Decrypts the session cookie `value` that arrived under `cookie` (without
/// a chunk suffix) and returns its claims, unchecked.
pub fn decrypt(
    value: &str,
    cookie: &str,
    keys: &Keys,
) -> Result<Map<String, Value>, UpstreamError> {
    let jwe = parse(value)?;
    let plaintext = match jwe.enc {
        Enc::A256CbcHs512 => {
            let cbc = keys
                .v5
                .iter()
                .find(|(name, _)| name == cookie)
                .map(|(_, keys)| keys.as_slice())
                .unwrap_or_default();
            cbc.iter().find_map(|key| open_cbc(key, &jwe))
        }
        Enc::A256Gcm => keys.v4.iter().find_map(|key| open_gcm(key, &jwe)),
    }
    .ok_or(UpstreamError::BadSignature)?;
    match serde_json::from_slice(&plaintext) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(UpstreamError::Malformed(
            "the decrypted session cookie is not a JSON object",
        )),
    }
}

fn parse(value: &str) -> Result<Parsed<'_>, UpstreamError> {
    if value.len() > MAX_COOKIE_BYTES {
        return Err(UpstreamError::TokenTooLarge(
            "a session cookie is at most 32 KiB",
        ));
    }
    let parts: Vec<&str> = value.splitn(6, '.').collect();
    let [header, encrypted_key, iv, ciphertext, tag] = parts[..] else {
        return Err(UpstreamError::Malformed(
            "an Auth.js session cookie is an encrypted token (JWE) of five dot-separated parts",
        ));
    };
    if header.len() > MAX_HEADER_BYTES {
        return Err(UpstreamError::Malformed("the JWE header is too long"));
    }
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(UpstreamError::Malformed(
            "the JWE header is not base64url-encoded JSON object",
        ))?;
    let enc = check_header(&header)?;
    // `dir` uses the shared key as is: the encrypted key is empty (RFC 7516 §5.1 step 6).
    if !encrypted_key.is_empty() {
        return Err(UpstreamError::Malformed(
            "alg dir carries no encrypted key, but this token has one",
        ));
    }
    let (iv_len, tag_len) = match enc {
        Enc::A256CbcHs512 => (CBC_IV_BYTES, CBC_TAG_BYTES),
        Enc::A256Gcm => (GCM_IV_BYTES, GCM_TAG_BYTES),
    };
    let bytes = |part: &str, len: Option<usize>, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .filter(|b| len.is_none_or(|len| b.len() == len))
            .ok_or(UpstreamError::Malformed(what))
    };
    let iv = bytes(
        iv,
        Some(iv_len),
        "the JWE initialization vector is malformed",
    )?;
    let tag = bytes(
        tag,
        Some(tag_len),
        "the JWE authentication tag is malformed",
    )?;
    let ciphertext = bytes(ciphertext, None, "the JWE ciphertext is malformed")?;
    if enc == Enc::A256CbcHs512 && (ciphertext.is_empty() || ciphertext.len() % 16 != 0) {
        return Err(UpstreamError::Malformed(
            "the JWE ciphertext is not whole AES blocks",
        ));
    }
    let aad = &value[..value.find('.').expect("five parts have dots")];
    Ok(Parsed {
        enc,
        aad,
        iv,
        ciphertext,
        tag,
    })
}

/// `alg: dir`, `enc` one of the two Auth.js writes, an optional string `kid`
/// (v5 writes the key's thumbprint) and `typ: JWT`; nothing else, so `zip`,
/// `crit` and key-pointing fields are refused (RFC 8725 §3.1, §3.10).
fn check_header(header: &Map<String, Value>) -> Result<Enc, UpstreamError> {
    if header.get("alg").and_then(Value::as_str) != Some("dir") {
        return Err(UpstreamError::AlgorithmNotAllowed);
    }
    let enc = match header.get("enc").and_then(Value::as_str) {
        Some("A256CBC-HS512") => Enc::A256CbcHs512,
        Some("A256GCM") => Enc::A256Gcm,
        _ => return Err(UpstreamError::AlgorithmNotAllowed),
    };
    for (name, value) in header {
        let fine = match name.as_str() {
            "alg" | "enc" => true,
            "kid" => value.is_string(),
            "typ" => value
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("JWT")),
            _ => false,
        };
        if !fine {
            return Err(UpstreamError::Unsupported(
                "the session cookie's JWE header has a field Auth.js does not write \
                 (zip, crit and key references are refused)",
            ));
        }
    }
    Ok(enc)
}

/// RFC 7518 §5.2.2.2: the tag is the first 32 bytes of HMAC-SHA-512 over
/// AAD ‖ IV ‖ ciphertext ‖ AL (the AAD's length in bits, 64-bit big-endian),
/// compared in constant time before anything is decrypted.
fn open_cbc(key: &CbcKey, jwe: &Parsed<'_>) -> Option<Vec<u8>> {
    let mut mac = hmac::Context::with_key(&key.mac);
    mac.update(jwe.aad.as_bytes());
    mac.update(&jwe.iv);
    mac.update(&jwe.ciphertext);
    mac.update(&((jwe.aad.len() as u64) * 8).to_be_bytes());
    let full = mac.sign();
    aws_lc_rs::constant_time::verify_slices_are_equal(&full.as_ref()[..CBC_TAG_BYTES], &jwe.tag)
        .ok()?;
    let cipher = PaddedBlockDecryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(&AES_256, &key.enc).expect("a 32-byte AES-256 key"),
    )
    .expect("CBC with PKCS#7 padding is supported");
    let iv: [u8; CBC_IV_BYTES] = jwe.iv.as_slice().try_into().ok()?;
    let mut buffer = jwe.ciphertext.clone();
    // The tag held, so a padding error is the issuer's, not an attacker's.
    let plaintext = cipher
        .decrypt(&mut buffer, DecryptionContext::Iv128(FixedLength::from(iv)))
        .ok()?;
    Some(plaintext.to_vec())
}

/// AES-256-GCM (RFC 7518 §5.3) with the AAD as above; the tag is checked by
/// the AEAD before any plaintext is returned.
fn open_gcm(key: &LessSafeKey, jwe: &Parsed<'_>) -> Option<Vec<u8>> {
    let nonce = Nonce::try_assume_unique_for_key(&jwe.iv).ok()?;
    let mut buffer = Vec::with_capacity(jwe.ciphertext.len() + jwe.tag.len());
    buffer.extend_from_slice(&jwe.ciphertext);
    buffer.extend_from_slice(&jwe.tag);
    let plaintext = key
        .open_in_place(nonce, Aad::from(jwe.aad.as_bytes()), &mut buffer)
        .ok()?;
    Some(plaintext.to_vec())
}

/// Builds cookies the way Auth.js and NextAuth do, for tests and fuzz seeds.
#[cfg(test)]
pub(crate) mod mint {
    use super::*;
    use aws_lc_rs::cipher::{EncryptionContext, PaddedBlockEncryptingKey};

    pub(crate) fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A v5 cookie: A256CBC-HS512 under the key for `salt`, with `header`.
    pub(crate) fn v5_with(header: &Value, claims: &Value, secret: &str, salt: &str) -> String {
        let info = format!("Auth.js Generated Encryption Key ({salt})");
        let mut key = [0u8; 64];
        hkdf(
            secret.as_bytes(),
            salt.as_bytes(),
            info.as_bytes(),
            &mut key,
        );
        let aad = b64(header.to_string().as_bytes());
        let iv = [7u8; 16];
        let cipher = PaddedBlockEncryptingKey::cbc_pkcs7(
            UnboundCipherKey::new(&AES_256, &key[32..]).unwrap(),
        )
        .unwrap();
        let mut buffer = claims.to_string().into_bytes();
        cipher
            .less_safe_encrypt(&mut buffer, EncryptionContext::Iv128(FixedLength::from(iv)))
            .unwrap();
        let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA512, &key[..32]));
        mac.update(aad.as_bytes());
        mac.update(&iv);
        mac.update(&buffer);
        mac.update(&((aad.len() as u64) * 8).to_be_bytes());
        let tag = mac.sign();
        format!(
            "{aad}..{}.{}.{}",
            b64(&iv),
            b64(&buffer),
            b64(&tag.as_ref()[..32])
        )
    }

    pub(crate) fn v5(claims: &Value, secret: &str, salt: &str) -> String {
        let header = serde_json::json!({"alg": "dir", "enc": "A256CBC-HS512", "kid": "k"});
        v5_with(&header, claims, secret, salt)
    }

    /// A v4 cookie: A256GCM under NextAuth's key, with `header`.
    pub(crate) fn v4_with(header: &Value, claims: &Value, secret: &str) -> String {
        let mut key = [0u8; 32];
        hkdf(
            secret.as_bytes(),
            b"",
            b"NextAuth.js Generated Encryption Key",
            &mut key,
        );
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let aad = b64(header.to_string().as_bytes());
        let iv = [9u8; 12];
        let mut buffer = claims.to_string().into_bytes();
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(aad.as_bytes()),
                &mut buffer,
            )
            .unwrap();
        format!("{aad}..{}.{}.{}", b64(&iv), b64(&buffer), b64(tag.as_ref()))
    }

    pub(crate) fn v4(claims: &Value, secret: &str) -> String {
        v4_with(
            &serde_json::json!({"alg": "dir", "enc": "A256GCM"}),
            claims,
            secret,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::mint::*;
    use super::*;
    use serde_json::json;

    const SECRET: &str = "a-32-byte-secret-for-authjs-test";
    const OLD: &str = "the-previous-secret-still-in-use";
    const COOKIE: &str = "authjs.session-token";

    fn keys(secrets: &[&str]) -> Keys {
        let secrets: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
        Keys::derive(
            &secrets,
            &[COOKIE.to_string(), "__Secure-authjs.session-token".into()],
        )
    }

    fn claims() -> Value {
        json!({"sub": "user-1", "role": "editor", "exp": 2_000_000_000u64})
    }

    fn reason(value: &str, keys: &Keys) -> &'static str {
        decrypt(value, COOKIE, keys).unwrap_err().reason()
    }

    /// Flips one bit of part `index` (0-based) of a compact JWE.
    fn flip(value: &str, index: usize) -> String {
        let mut parts: Vec<String> = value.split('.').map(String::from).collect();
        let mut bytes = URL_SAFE_NO_PAD.decode(&parts[index]).unwrap();
        bytes[0] ^= 1;
        parts[index] = b64(&bytes);
        parts.join(".")
    }

    #[test]
    fn v5_and_v4_cookies_open_with_the_right_keys() {
        let k = keys(&[SECRET]);
        assert_eq!(
            decrypt(&v5(&claims(), SECRET, COOKIE), COOKIE, &k).unwrap()["role"],
            "editor"
        );
        let secure = "__Secure-authjs.session-token";
        let c = v5(&claims(), SECRET, secure);
        assert_eq!(decrypt(&c, secure, &k).unwrap()["sub"], "user-1");
        assert_eq!(
            decrypt(&v4(&claims(), SECRET), "next-auth.session-token", &k).unwrap()["sub"],
            "user-1"
        );
    }

    #[test]
    fn a_rotated_secret_listed_second_still_opens_old_cookies() {
        let k = keys(&[SECRET, OLD]);
        assert!(decrypt(&v5(&claims(), OLD, COOKIE), COOKIE, &k).is_ok());
        assert!(decrypt(&v4(&claims(), OLD), COOKIE, &k).is_ok());
        assert_eq!(
            reason(&v5(&claims(), OLD, COOKIE), &keys(&[SECRET])),
            "signature_invalid"
        );
    }

    #[test]
    fn a_wrong_secret_or_another_cookie_name_as_salt_is_a_bad_signature() {
        let k = keys(&[SECRET]);
        let wrong = "another-secret-of-thirty-two-byt";
        assert_eq!(
            reason(&v5(&claims(), wrong, COOKIE), &k),
            "signature_invalid"
        );
        assert_eq!(reason(&v4(&claims(), wrong), &k), "signature_invalid");
        let other_salt = v5(&claims(), SECRET, "__Secure-authjs.session-token");
        assert_eq!(reason(&other_salt, &k), "signature_invalid");
        // A cookie name the issuer does not list has no keys at all.
        assert_eq!(
            decrypt(&v5(&claims(), SECRET, "x"), "x", &k)
                .unwrap_err()
                .reason(),
            "signature_invalid"
        );
    }

    #[test]
    fn tampering_with_any_part_is_refused() {
        let k = keys(&[SECRET]);
        for cookie in [v5(&claims(), SECRET, COOKIE), v4(&claims(), SECRET)] {
            // iv, ciphertext, tag
            for part in [2, 3, 4] {
                assert_eq!(
                    reason(&flip(&cookie, part), &k),
                    "signature_invalid",
                    "part {part}"
                );
            }
            // The header is the AAD: an equivalent header re-encoded fails the tag.
            let mut parts: Vec<&str> = cookie.split('.').collect();
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
            let mut header = header.as_object().unwrap().clone();
            header.insert("typ".into(), json!("JWT"));
            let reencoded = b64(Value::Object(header).to_string().as_bytes());
            parts[0] = &reencoded;
            assert_eq!(reason(&parts.join("."), &k), "signature_invalid");
            // A truncated tag is malformed before any key is tried.
            let truncated = &cookie[..cookie.len() - 4];
            assert_eq!(reason(truncated, &k), "session_token_malformed");
        }
    }

    #[test]
    fn other_algorithms_and_header_fields_are_refused_before_decrypting() {
        let k = keys(&[SECRET]);
        let with = |header: Value| v5_with(&header, &claims(), SECRET, COOKIE);
        for header in [
            json!({"alg": "A256KW", "enc": "A256CBC-HS512"}),
            json!({"alg": "RSA-OAEP", "enc": "A256GCM"}),
            json!({"alg": "none", "enc": "A256CBC-HS512"}),
            json!({"alg": "dir", "enc": "A128CBC-HS256"}),
            json!({"alg": "dir", "enc": "A128GCM"}),
            json!({"alg": "dir"}),
            json!({"enc": "A256GCM"}),
        ] {
            assert_eq!(
                reason(&with(header.clone()), &k),
                "algorithm_not_allowed",
                "{header}"
            );
        }
        for header in [
            json!({"alg": "dir", "enc": "A256CBC-HS512", "zip": "DEF"}),
            json!({"alg": "dir", "enc": "A256CBC-HS512", "crit": ["exp"]}),
            json!({"alg": "dir", "enc": "A256CBC-HS512", "jku": "https://evil.example"}),
            json!({"alg": "dir", "enc": "A256CBC-HS512", "cty": "JWT"}),
            json!({"alg": "dir", "enc": "A256CBC-HS512", "kid": 7}),
        ] {
            assert_eq!(
                reason(&with(header.clone()), &k),
                "session_token_unsupported",
                "{header}"
            );
        }
    }

    #[test]
    fn shapes_and_sizes_are_checked_before_any_key() {
        let k = keys(&[SECRET]);
        let cookie = v5(&claims(), SECRET, COOKIE);
        assert_eq!(
            reason(&"a".repeat(MAX_COOKIE_BYTES + 1), &k),
            "session_token_too_large"
        );
        for bad in [
            "a.b.c",
            "a.b.c.d",
            "a.b.c.d.e.f",
            "",
            &format!("{cookie}.x"),
            // an encrypted key with alg dir
            &cookie.replacen("..", ".AAAA.", 1),
        ] {
            assert_eq!(reason(bad, &k), "session_token_malformed", "{bad}");
        }
        // A plain JWT where an encrypted cookie is expected.
        let jwt = format!("{}.{}.sig", b64(br#"{"alg":"HS256"}"#), b64(b"{}"));
        assert_eq!(reason(&jwt, &k), "session_token_malformed");
        // Ciphertext that is not whole blocks.
        let mut parts: Vec<String> = cookie.split('.').map(String::from).collect();
        parts[3] = b64(&[1, 2, 3]);
        assert_eq!(reason(&parts.join("."), &k), "session_token_malformed");
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_malformed() {
        let k = keys(&[SECRET]);
        let header = json!({"alg": "dir", "enc": "A256GCM"});
        assert_eq!(
            reason(&v4_with(&header, &json!([1, 2]), SECRET), &k),
            "session_token_malformed"
        );
    }
}
