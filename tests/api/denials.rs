use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn missing_session_token_is_401_and_says_how_to_send_one() {
    let (_key, _jwks, app) = clerk_app().await;
    let body = assert_error(
        app.get("/api/ably-token").await,
        401,
        "session_token_missing",
    )
    .await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
}

#[actix_web::test]
async fn expired_session_token_is_rejected_with_401() {
    let (key, _jwks, app) = clerk_app().await;
    let mut claims = clerk_claims("user_1", None);
    claims["exp"] = json!(now() - 6);
    claims["iat"] = json!(now() - 66);
    let response = app
        .get_token("/api/ably-token", &key.sign(clerk_header(), &claims))
        .await;
    assert_error(response, 401, "session_token_expired").await;
}

#[actix_web::test]
async fn token_from_an_unconfigured_issuer_is_rejected() {
    let (key, _jwks, app) = clerk_app().await;
    let mut claims = clerk_claims("user_1", None);
    claims["iss"] = json!("https://clerk.example.test/");
    let response = app
        .get_token("/api/ably-token", &key.sign(clerk_header(), &claims))
        .await;
    assert_error(response, 401, "issuer_unknown").await;
}

#[actix_web::test]
async fn clerk_azp_outside_the_allowed_origins_is_rejected() {
    let (key, _jwks, app) = clerk_app().await;
    let mut claims = clerk_claims("user_1", None);
    claims["azp"] = json!("https://evil.example");
    let response = app
        .get_token("/api/ably-token", &key.sign(clerk_header(), &claims))
        .await;
    assert_error(response, 401, "authorized_party_rejected").await;
}

#[actix_web::test]
async fn auth0_token_for_another_audience_is_rejected() {
    let key = TestKey::rsa("rsa2", "auth0-rsa");
    let (_jwks, app) = app_trusting(&[&key], Issuers::auth0).await;
    let mut claims = auth0_claims("auth0|1", &["support"]);
    claims["aud"] = json!("https://other-api.example.com");
    let response = app
        .get_token("/api/ably-token", &key.sign(json!({}), &claims))
        .await;
    assert_error(response, 401, "audience_mismatch").await;
}

#[actix_web::test]
async fn hostile_subjects_never_widen_a_grant() {
    let (key, _jwks, app) = clerk_app().await;
    for sub in ["*", "a:*", "[x]", "", "orders:*"] {
        let session = key.sign(clerk_header(), &clerk_claims(sub, None));
        let response = app.get_token("/api/ably-token", &session).await;
        let body = assert_error(response, 403, "template_value_rejected").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("orders:{clientId}:*"),
            "{sub:?}: {body}"
        );
    }
}

#[actix_web::test]
async fn a_user_whose_roles_are_all_undefined_is_forbidden() {
    let key = TestKey::rsa("rsa1", "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let policy = r#"
        version = 1
        [roles.support]
        capabilities = [{ channel = "orders:*", operations = ["subscribe"] }]
    "#;
    let config = config_text(&Issuers::clerk(&jwks), "");
    let app = TestApp::spawn_with(&config, policy).await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", Some("guest")));
    let body = assert_error(
        app.get_token("/api/ably-token", &session).await,
        403,
        "no_role",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("guest"));
}

#[actix_web::test]
async fn requested_capability_outside_the_grant_is_403_naming_it() {
    let (key, _jwks, app) = clerk_app().await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let asked = r#"{"orders:*":["publish"]}"#;
    let response = app
        .get_token(
            &format!("/api/ably-token?capability={}", urlencode(asked)),
            &session,
        )
        .await;
    let body = assert_error(response, 403, "capability_not_granted").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains(asked),
        "{body}"
    );
}

#[actix_web::test]
async fn requested_client_id_other_than_the_users_is_403() {
    let (key, _jwks, app) = clerk_app().await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let response = app
        .get_token("/api/ably-token?clientId=user_2", &session)
        .await;
    assert_error(response, 403, "client_id_mismatch").await;
}

#[actix_web::test]
async fn malformed_parameters_are_400_with_the_field_named() {
    let (key, _jwks, app) = clerk_app().await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let cases = [
        ("/api/ably-token?ttl=soon", "invalid_ttl", "ttl"),
        ("/api/ably-token?ttl=0", "invalid_ttl", "ttl"),
        (
            "/api/ably-token?capability=%7Bnot",
            "invalid_capability",
            "capability",
        ),
        (
            "/api/ably-token?capability=%7B%22a%22%3A%5B%22fly%22%5D%7D",
            "invalid_capability",
            "fly",
        ),
        ("/api/ably-token?format=xml", "invalid_format", "xml"),
    ];
    for (path, reason, mention) in cases {
        let body = assert_error(app.get_token(path, &session).await, 400, reason).await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains(mention),
            "{path}: {body}"
        );
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
