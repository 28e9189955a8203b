//! Issuer kinds and cookie routing through the real app: a cookie listed by
//! a `jwt` issuer carries that issuer's JWT only, listing cookies on issuers
//! replaces `[server] session_cookies`, and the Bearer header still wins.
//! (Auth.js and NextAuth cookies from the real libraries: tests/identity.)

use serde_json::json;

use crate::helpers::*;

async fn app_with_clerk_cookie(jwks: &JwksServer) -> TestApp {
    let issuers = Issuers {
        clerk: Some(jwks),
        auth0: Some(jwks),
        ..Default::default()
    };
    let config = config_text(&issuers, "session_cookies = [\"__session\"]").replacen(
        "name = \"clerk\"",
        "name = \"clerk\"\n            cookies = [\"clerk_token\"]",
        1,
    );
    TestApp::spawn_with(&config, TEST_POLICY).await
}

#[actix_web::test]
async fn a_jwt_issuers_cookie_carries_that_issuers_tokens_only() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = app_with_clerk_cookie(&jwks).await;
    let url = format!("{}/api/ably-token", app.address);
    let clerk = key.sign(clerk_header(), &clerk_claims("alice", None));
    let auth0 = key.sign(json!({"typ": "JWT"}), &auth0_claims("auth0|bob", &[]));

    let ok: serde_json::Value = send_json(
        app.client
            .get(&url)
            .header("cookie", format!("x=1; clerk_token={clerk}")),
    )
    .await;
    assert_eq!(ok["clientId"], "alice");
    // Validly signed and from a configured issuer, but not the one that lists the cookie.
    let other = app
        .client
        .get(&url)
        .header("cookie", format!("clerk_token={auth0}"))
        .send()
        .await
        .unwrap();
    assert_error(other, 401, "issuer_unknown").await;
    // As a Bearer token it is routed by its iss and accepted.
    let bearer: serde_json::Value = send_json(app.client.get(&url).bearer_auth(&auth0)).await;
    assert_eq!(bearer["clientId"], "auth0|bob");
    jwks.stop().await;
}

#[actix_web::test]
async fn issuer_cookies_replace_server_session_cookies() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = app_with_clerk_cookie(&jwks).await;
    let url = format!("{}/api/ably-token", app.address);
    let clerk = key.sign(clerk_header(), &clerk_claims("alice", None));
    let legacy = app
        .client
        .get(&url)
        .header("cookie", format!("__session={clerk}"))
        .send()
        .await
        .unwrap();
    let body = assert_error(legacy, 401, "session_token_missing").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session cookie"),
        "{body}"
    );
    // Chunked JWT cookies are joined too.
    let (a, b) = clerk.split_at(clerk.len() / 2);
    let joined: serde_json::Value = send_json(
        app.client
            .get(&url)
            .header("cookie", format!("clerk_token.1={b}; clerk_token.0={a}")),
    )
    .await;
    assert_eq!(joined["clientId"], "alice");
    jwks.stop().await;
}
