//! Criterion benchmark for a `session_endpoint` issuer's per-request cost
//! once its cache holds the session: the Cookie header routed, the listed
//! cookie picked out, the SHA-256 cache key, the cache hit and the `Session`
//! — no HTTP. Beside it, in the same run, the RS256 session-JWT verification
//! `benches/tokens.rs` measures, for comparison.
//!   cargo bench --bench lookups

use std::future::Future;
use std::hint::black_box;
use std::io::{Read, Write};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ably_tokend::config::Settings;
use ably_tokend::upstream::benching::Identity;
use ably_tokend::upstream::jwks::KeySet;
use ably_tokend::upstream::jws;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A session endpoint on loopback that answers one request (the miss that
/// warms the cache) with an Auth.js-shaped session, then goes away.
fn answer_once() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).unwrap();
        let body = json!({
            "user": {"id": "user-1", "name": "Ada", "email": "ada@example.com", "role": "support"},
            "expires": "2999-01-01T00:00:00.000Z",
        })
        .to_string();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    port
}

/// Polls a future that must not wait (a cache hit) to its end.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a cache hit waited"),
    }
}

fn session_endpoint_hit(c: &mut Criterion) {
    let port = answer_once();
    let settings = Settings::from_toml(&format!(
        r#"
        [ably]
        api_key = "appId.keyId:keySecret"
        [[issuers]]
        name = "app-session"
        kind = "session_endpoint"
        url = "http://127.0.0.1:{port}/api/auth/session"
        forward_cookies = ["authjs.session-token", "__Secure-authjs.session-token"]
        cache_ttl = "1h"
        client_id_claim = "/user/id"
        roles_claim = "/user/role"
        "#
    ))
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let identity = Identity::new(settings);
    // A browser's Cookie header: the session token among others.
    let cookie = "theme=dark; _ga=GA1.1.123456789.1700000000; \
                  authjs.session-token=4f9c2b7e1a8d3f6c5b0e9a7d2c4f8b1e6a3d9c0f7b2e5a8d1c4f7b0e3a6d9c2f; \
                  authjs.callback-url=http%3A%2F%2Flocalhost%3A3000";
    let first = runtime.block_on(identity.claims(None, cookie)).unwrap();
    assert_eq!(first["user"]["id"], "user-1");
    c.bench_function(
        "session_endpoint/cache_hit (route, key, hit, Session)",
        |b| b.iter(|| ready(identity.claims(None, black_box(cookie))).unwrap()),
    );
}

fn rs256_verify(c: &mut Criterion) {
    let key = EncodingKey::from_rsa_pem(fixture("rsa1.pem").as_bytes()).unwrap();
    let header = json!({"alg": "RS256", "kid": "k", "typ": "JWT"});
    let claims = json!({"iss": "https://clerk.example.test", "sub": "user_2xYz", "exp": 4_000_000_000u64, "iat": 1_700_000_000, "sid": "sess_1", "metadata": {"role": "support"}});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).unwrap();
    let token = format!("{input}.{signature}");
    let mut jwk: serde_json::Value = serde_json::from_str(&fixture("rsa1.jwk.json")).unwrap();
    jwk["kid"] = json!("k");
    let set = KeySet::parse(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
    c.bench_function("verify_session_jwt/RS256 (same run)", |b| {
        b.iter(|| {
            let parsed = jws::parse(black_box(&token)).unwrap();
            let key = set.find(parsed.kid.as_deref(), Algorithm::RS256).unwrap();
            // As the service verifies: the key parsed once (src/upstream/jwks.rs).
            assert!(key.verify(
                Algorithm::RS256,
                parsed.signing_input.as_bytes(),
                parsed.signature
            ));
            parsed.claims
        })
    });
}

criterion_group!(benches, session_endpoint_hit, rs256_verify);
criterion_main!(benches);
