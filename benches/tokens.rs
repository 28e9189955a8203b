//! Criterion benchmarks for the per-request work: verifying the session JWT
//! or opening an Auth.js / NextAuth session cookie, applying the policy, and
//! signing. Run with both crypto backends to compare:
//!   cargo bench --bench tokens
//!   cargo bench --bench tokens --no-default-features --features rust-crypto
//! The identity figures beside RS256, in one run:
//!   cargo bench --bench tokens -- "verify_session_jwt/RS256|session_cookie/"

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use ably_tokend::capability::Capability;
use ably_tokend::policy::{Asked, ClaimPointer, Policy, Request};
use ably_tokend::signing::{new_nonce, sign_ably_jwt, sign_token_request, ApiKey, Grant};
use ably_tokend::upstream::authjs;
use ably_tokend::upstream::jwks::KeySet;
use ably_tokend::upstream::jws;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand::TryRngCore;
use serde_json::json;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn session_token(alg: Algorithm, pem: &str) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let header = json!({"alg": format!("{alg:?}"), "kid": "k", "typ": "JWT"});
    let claims = json!({"iss": "https://clerk.example.test", "sub": "user_2xYz", "exp": 4_000_000_000u64, "iat": 1_700_000_000, "sid": "sess_1", "metadata": {"role": "support"}});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, alg).unwrap();
    format!("{input}.{sig}")
}

fn verification(c: &mut Criterion) {
    let backend = if cfg!(feature = "aws-lc") {
        "aws-lc"
    } else {
        "rust-crypto"
    };
    for (name, alg, fixture_name) in [
        ("RS256", Algorithm::RS256, "rsa1"),
        ("ES256", Algorithm::ES256, "ec1"),
        ("EdDSA", Algorithm::EdDSA, "ed1"),
    ] {
        let token = session_token(alg, &fixture(&format!("{fixture_name}.pem")));
        let mut jwk: serde_json::Value =
            serde_json::from_str(&fixture(&format!("{fixture_name}.jwk.json"))).unwrap();
        jwk["kid"] = json!("k");
        let set = KeySet::parse(json!({"keys": [jwk.clone()]}).to_string().as_bytes()).unwrap();
        // The service's path: the key parsed once per JWKS key (always aws-lc).
        c.bench_function(&format!("verify_session_jwt/{name}/parsed-key"), |b| {
            b.iter(|| {
                let parsed = jws::parse(black_box(&token)).unwrap();
                let key = set.find(parsed.kid.as_deref(), alg).unwrap();
                assert!(key.verify(alg, parsed.signing_input.as_bytes(), parsed.signature));
                parsed.claims
            })
        });
        // For comparison: jsonwebtoken building the key on every call, with
        // the crate's crypto backend.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        c.bench_function(
            &format!("verify_session_jwt/{name}/jsonwebtoken-{backend}"),
            |b| {
                b.iter(|| {
                    let parsed = jws::parse(black_box(&token)).unwrap();
                    let ok = jsonwebtoken::crypto::verify(
                        parsed.signature,
                        parsed.signing_input.as_bytes(),
                        &key,
                        alg,
                    )
                    .unwrap();
                    assert!(ok);
                    parsed.claims
                })
            },
        );
    }
}

/// The secret `tests/fixtures/authjs_v5.cookie` and `nextauth_v4.cookie`
/// were encrypted with, by @auth/core 0.41.1's and next-auth 4.24.15's own
/// `encode` (a typical session: name, email, picture, sub, role; `exp` 20
/// years out).
const BENCH_AUTH_SECRET: &str = "bench-auth-secret-0123456789abcdef0123456789";

/// An Auth.js v5 and a NextAuth v4 cookie as the sidecar opens them: the
/// compact JWE parsed and its header checked, the tag checked and the
/// ciphertext decrypted with the key derived at start-up, the claims parsed
/// into a JSON map, and the claims the verifier reads looked up. The key
/// derivation (HKDF) happens once per issuer, not per call, so it is outside.
fn session_cookies(c: &mut Criterion) {
    let backend = if cfg!(feature = "aws-lc") {
        "aws-lc"
    } else {
        "rust-crypto"
    };
    let cookies = [
        "authjs.session-token".to_string(),
        "next-auth.session-token".to_string(),
    ];
    let keys = authjs::Keys::derive(&[BENCH_AUTH_SECRET.as_bytes()], &cookies);
    for (name, fixture_name, cookie) in [
        ("authjs_v5", "authjs_v5.cookie", &cookies[0]),
        ("nextauth_v4", "nextauth_v4.cookie", &cookies[1]),
    ] {
        let value = fixture(fixture_name).trim().to_string();
        c.bench_function(&format!("session_cookie/{name}/{backend}"), |b| {
            b.iter(|| {
                let claims = authjs::decrypt(black_box(&value), cookie, &keys).unwrap();
                let exp = claims.get("exp").and_then(|e| e.as_i64()).unwrap();
                assert!(exp > 1_700_000_000);
                assert!(claims.get("sub").is_some_and(|s| s.is_string()));
                claims
            })
        });
    }
}

fn policy_and_signing(c: &mut Criterion) {
    let policy = Policy::parse(
        Path::new("policies/default.toml"),
        &fixture("../../policies/default.toml"),
    )
    .unwrap();
    let claims = json!({"sub": "user_2xYz", "metadata": {"role": "support"}});
    let roles: ClaimPointer = "/metadata/role".parse().unwrap();
    let sub: ClaimPointer = "/sub".parse().unwrap();
    let asked = Asked::default();
    let request = Request {
        claims: &claims,
        roles_claim: &roles,
        client_id_claim: &sub,
        asked: &asked,
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(86400),
    };
    c.bench_function("policy_evaluate/customer+support", |b| {
        b.iter(|| policy.evaluate(black_box(&request)).unwrap())
    });

    let key: ApiKey = "appId.keyId:keySecret".parse().unwrap();
    let capability = policy.evaluate(&request).unwrap().capability;
    let grant = Grant {
        capability: &capability,
        client_id: Some("user_2xYz"),
        ttl_ms: 3_600_000,
        issued_ms: 1_700_000_000_000,
    };
    c.bench_function("sign/token_request (with nonce)", |b| {
        b.iter(|| sign_token_request(&key, black_box(&grant), new_nonce()))
    });
    // The nonce's 16 random bytes: from rand's thread-local CSPRNG (in use),
    // against a getrandom system call per nonce (before), in the same run.
    c.bench_function("nonce/new_nonce (thread-local CSPRNG)", |b| {
        b.iter(new_nonce)
    });
    c.bench_function("nonce/16 bytes from the OS (getrandom)", |b| {
        b.iter(|| {
            let mut bytes = [0u8; 16];
            rand::rngs::OsRng.try_fill_bytes(&mut bytes).unwrap();
            black_box(bytes)
        })
    });
    c.bench_function("sign/ably_jwt", |b| {
        b.iter(|| sign_ably_jwt(&key, black_box(&grant)))
    });
    c.bench_function("capability/canonical_json", |b| {
        b.iter(|| black_box(&capability).to_canonical_json())
    });
    let asked =
        Capability::parse_json(r#"{"orders:42:status":["publish","subscribe"],"admin":["*"]}"#)
            .unwrap();
    c.bench_function("capability/narrow", |b| {
        b.iter(|| black_box(&asked).narrowed_by(&capability))
    });
}

/// The TokenRequest mac's HMAC-SHA256 through the sha2 crate (what
/// `signing::hmac_sha256` uses) and through aws-lc, on a mac input of the
/// size a one-role grant gives.
fn hmac_backends(c: &mut Criterion) {
    use hmac::{Hmac, Mac};
    let secret = b"keySecretkeySecretkeySecret";
    let input = "appId.keyId\n3600000\n{\"announcements\":[\"subscribe\"],\"orders:user_2xYz:*\":[\"history\",\"presence\",\"subscribe\"]}\nuser_2xYz\n1700000000000\n0123456789abcdef0123456789abcdef\n";
    c.bench_function("hmac_sha256/sha2-crate", |b| {
        b.iter(|| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
            mac.update(black_box(input.as_bytes()));
            mac.finalize().into_bytes()
        })
    });
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    c.bench_function("hmac_sha256/aws-lc", |b| {
        b.iter(|| aws_lc_rs::hmac::sign(&key, black_box(input.as_bytes())))
    });
    c.bench_function("hmac_sha256/aws-lc with key set-up", |b| {
        b.iter(|| {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
            aws_lc_rs::hmac::sign(&key, black_box(input.as_bytes()))
        })
    });
}

criterion_group!(
    benches,
    verification,
    session_cookies,
    policy_and_signing,
    hmac_backends
);
criterion_main!(benches);
