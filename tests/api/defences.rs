//! The RFC 8725 defences, each over real HTTP against a real JWKS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn alg_none_is_rejected() {
    let (_key, _jwks, app) = clerk_app().await;
    let claims = clerk_claims("user_1", None);
    for signature in ["", "AAAA"] {
        let token = format!(
            "{}.{}.{signature}",
            b64(&json!({"alg": "none", "kid": "k1"})),
            b64(&claims)
        );
        let response = app.get_token("/api/ably-token", &token).await;
        let reason = if signature.is_empty() {
            "session_token_malformed"
        } else {
            "algorithm_not_allowed"
        };
        assert_error(response, 401, reason).await;
    }
}

#[actix_web::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    // The classic confusion: an HS256 token whose HMAC key is the issuer's
    // public key, which an attacker knows.
    let (_key, _jwks, app) = clerk_app().await;
    let public_pem = fixture("rsa1.jwk.json");
    let token = sign_raw(
        &json!({"alg": "HS256", "kid": "k1"}),
        &clerk_claims("user_1", Some("support")),
        |input| {
            jsonwebtoken::crypto::sign(
                input,
                &EncodingKey::from_secret(public_pem.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap()
        },
    );
    assert_error(
        app.get_token("/api/ably-token", &token).await,
        401,
        "algorithm_not_allowed",
    )
    .await;
}

#[actix_web::test]
async fn crit_header_is_rejected() {
    let (key, _jwks, app) = clerk_app().await;
    let token = key.sign(
        json!({"crit": ["exp"], "exp": 1}),
        &clerk_claims("user_1", None),
    );
    assert_error(
        app.get_token("/api/ably-token", &token).await,
        401,
        "session_token_unsupported",
    )
    .await;
}

#[actix_web::test]
async fn jku_x5u_and_embedded_jwk_headers_are_never_followed() {
    let (_key, jwks, app) = clerk_app().await;
    // The attacker publishes their own key and points the token at it.
    let attacker = TestKey::rsa("rsa2", "k1");
    let attacker_jwks = JwksServer::start(&[&attacker]).await;
    let header = json!({
        "jku": attacker_jwks.url(),
        "x5u": attacker_jwks.url(),
        "jwk": attacker.jwk(),
    });
    let token = attacker.sign(header, &clerk_claims("user_1", Some("support")));
    assert_error(
        app.get_token("/api/ably-token", &token).await,
        401,
        "signature_invalid",
    )
    .await;
    assert_eq!(
        attacker_jwks.fetches(),
        0,
        "the attacker's JWKS was fetched"
    );
    assert!(jwks.fetches() >= 1);
}

#[actix_web::test]
async fn oversized_token_is_refused_before_parsing() {
    let (key, _jwks, app) = clerk_app().await;
    let mut claims = clerk_claims("user_1", None);
    claims["padding"] = json!("x".repeat(9 * 1024));
    let token = key.sign(clerk_header(), &claims);
    assert!(token.len() > 8 * 1024);
    assert_error(
        app.get_token("/api/ably-token", &token).await,
        401,
        "session_token_too_large",
    )
    .await;
}

#[actix_web::test]
async fn nested_and_encrypted_tokens_are_rejected() {
    let (key, _jwks, app) = clerk_app().await;
    let inner = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let nested = key.sign(json!({"cty": "JWT"}), &json!({"token": inner}));
    assert_error(
        app.get_token("/api/ably-token", &nested).await,
        401,
        "session_token_unsupported",
    )
    .await;
    let jwe = format!(
        "{}.AAAA.BBBB.CCCC.DDDD",
        b64(&json!({"alg": "RSA-OAEP", "enc": "A256GCM"}))
    );
    assert_error(
        app.get_token("/api/ably-token", &jwe).await,
        401,
        "session_token_unsupported",
    )
    .await;
}

#[actix_web::test]
async fn string_and_float_exp_are_rejected() {
    let (key, _jwks, app) = clerk_app().await;
    for exp in [json!((now() + 60).to_string()), json!(now() as f64 + 60.5)] {
        let mut claims = clerk_claims("user_1", None);
        claims["exp"] = exp.clone();
        let token = key.sign(clerk_header(), &claims);
        assert_error(
            app.get_token("/api/ably-token", &token).await,
            401,
            "session_token_claims_invalid",
        )
        .await;
    }
}

#[actix_web::test]
async fn enc_keys_and_unknown_key_types_are_skipped_without_poisoning_the_set() {
    let good = TestKey::rsa("rsa1", "good");
    let jwks = JwksServer::start(&[]).await;
    let mut enc = TestKey::rsa("rsa2", "enc").jwk();
    enc["use"] = json!("enc");
    jwks.publish_raw(json!({"keys": [
        enc,
        {"kty": "PQC", "kid": "future", "x": "AAAA"},
        {"kty": "oct", "kid": "sym", "k": URL_SAFE_NO_PAD.encode(b"secret")},
        good.jwk(),
    ]}));
    let app = TestApp::spawn(Issuers::clerk(&jwks)).await;
    let ok = good.sign(clerk_header(), &clerk_claims("user_1", None));
    assert_eq!(app.get_token("/api/ably-token", &ok).await.status(), 200);
    // A token naming the encryption key is refused even though its signature
    // would verify with it.
    let enc_signed =
        TestKey::rsa("rsa2", "enc").sign(clerk_header(), &clerk_claims("user_1", None));
    assert_error(
        app.get_token("/api/ably-token", &enc_signed).await,
        401,
        "signing_key_unknown",
    )
    .await;
}

#[actix_web::test]
async fn a_tampered_payload_fails_the_signature() {
    let (key, _jwks, app) = clerk_app().await;
    let token = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&clerk_claims("user_1", Some("support"))),
        parts[2]
    );
    assert_error(
        app.get_token("/api/ably-token", &forged).await,
        401,
        "signature_invalid",
    )
    .await;
}
