use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

fn capability(request: &Value) -> Value {
    serde_json::from_str(request["capability"].as_str().unwrap()).unwrap()
}

#[actix_web::test]
async fn clerk_session_gets_a_token_request_with_the_policy_capability() {
    let key = TestKey::rsa("rsa1", "ins_2abcRSA");
    let (_jwks, app) = app_trusting(&[&key], Issuers::clerk).await;
    let session = key.sign(clerk_header(), &clerk_claims("user_2xYz", None));

    let before = now_ms();
    let response = app.get_token("/api/ably-token", &session).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    // Clients learn the idle timeout (src/keep_alive.rs).
    assert_eq!(response.headers()["keep-alive"], "timeout=75");
    let request: Value = response.json().await.unwrap();

    assert_eq!(request["keyName"], KEY_NAME);
    assert_eq!(request["clientId"], "user_2xYz");
    assert_eq!(request["ttl"], 3_600_000);
    assert_eq!(
        request["capability"],
        r#"{"announcements":["subscribe"],"orders:user_2xYz:*":["history","presence","subscribe"]}"#
    );
    let timestamp = request["timestamp"].as_u64().unwrap();
    assert!(
        timestamp >= before && timestamp <= now_ms(),
        "timestamp {timestamp}"
    );
    assert!(request["nonce"].as_str().unwrap().len() >= 16);
    assert_eq!(request["mac"], independent_mac(&request));
    let fields: Vec<&String> = request.as_object().unwrap().keys().collect();
    assert_eq!(fields.len(), 7, "fields: {fields:?}");
}

#[actix_web::test]
async fn clerk_support_role_merges_with_the_default_role_and_caps_the_ttl() {
    let key = TestKey::rsa("rsa1", "ins_2abcRSA");
    let (_jwks, app) = app_trusting(&[&key], Issuers::clerk).await;
    let session = key.sign(clerk_header(), &clerk_claims("user_agent", Some("support")));
    let request: Value = app
        .get_token("/api/ably-token", &session)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(request["ttl"], 900_000);
    assert_eq!(
        capability(&request),
        json!({
            "announcements": ["subscribe"],
            "orders:*": ["history", "presence", "publish", "subscribe"],
            "orders:user_agent:*": ["history", "presence", "subscribe"],
        })
    );
    assert_eq!(request["mac"], independent_mac(&request));
}

#[actix_web::test]
async fn auth0_session_gets_an_ably_jwt_that_verifies_independently() {
    let key = TestKey::rsa("rsa2", "auth0-rsa");
    let (_jwks, app) = app_trusting(&[&key], Issuers::auth0).await;
    let session = key.sign(
        json!({"typ": "JWT"}),
        &auth0_claims("auth0|65f0c0ffee", &["support", "auditor"]),
    );

    let before = now();
    let response = app.get_token("/api/ably-jwt", &session).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/jwt");
    let token = response.text().await.unwrap();
    let claims = independent_jwt_claims(&token);
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat >= before && iat <= now());
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 900);
    assert_eq!(claims["x-ably-clientId"], "auth0|65f0c0ffee");
    assert_eq!(
        claims["x-ably-capability"],
        r#"{"announcements":["subscribe"],"orders:*":["history","presence","publish","subscribe"],"orders:auth0|65f0c0ffee:*":["history","presence","subscribe"]}"#
    );
    assert_eq!(claims.as_object().unwrap().len(), 4);
}

#[actix_web::test]
async fn format_jwt_on_the_token_route_answers_a_jwt() {
    let (key, _jwks, app) = clerk_app().await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let response = app
        .get_token("/api/ably-token?format=jwt&ttl=60000", &session)
        .await;
    assert_eq!(response.headers()["content-type"], "application/jwt");
    let claims = independent_jwt_claims(&response.text().await.unwrap());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    assert_eq!(claims["x-ably-clientId"], "user_1");
}

#[actix_web::test]
async fn ec_and_ed25519_signed_sessions_are_accepted() {
    let ec = TestKey::ec("ec1", "ec-key");
    let ed = TestKey::ed("ed1", "ed-key");
    let (_jwks, app) = app_trusting(&[&ec, &ed], Issuers::oidc).await;
    for (key, sub) in [(&ec, "ec-user"), (&ed, "ed-user")] {
        let claims = json!({"iss": OIDC_ISS, "sub": sub, "exp": now() + 300, "iat": now(), "roles": ["org-admin"], "o": {"id": "org_7"}});
        let session = key.sign(json!({"typ": "JWT"}), &claims);
        let response = app.get_token("/api/ably-token", &session).await;
        assert_eq!(response.status(), 200, "{sub}");
        let request: Value = response.json().await.unwrap();
        assert_eq!(request["clientId"], sub);
        assert_eq!(
            capability(&request),
            json!({
                "announcements": ["subscribe"],
                "org:org_7:*": ["publish", "subscribe"],
                format!("orders:{sub}:*"): ["history", "presence", "subscribe"],
            })
        );
        assert_eq!(request["mac"], independent_mac(&request));
    }
}

#[actix_web::test]
async fn ably_js_post_form_parameters_narrow_the_grant() {
    let (key, _jwks, app) = clerk_app().await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", Some("support")));
    // ably-js with authMethod "POST" sends its token params form-encoded, plus rnd.
    let response = app
        .request(Method::POST, "/api/ably-token")
        .bearer_auth(&session)
        .form(&[
            (
                "capability",
                r#"{"orders:42:status":["publish","subscribe"],"admin":["*"]}"#,
            ),
            ("clientId", "user_1"),
            ("ttl", "600000"),
            ("rnd", "8726451"),
        ])
        .send()
        .await
        .unwrap();
    let request = ok_json(response).await;
    assert_eq!(
        request["capability"],
        r#"{"orders:42:status":["publish","subscribe"]}"#
    );
    assert_eq!(request["ttl"], 600_000);
    assert_eq!(request["clientId"], "user_1");
    assert_eq!(request["mac"], independent_mac(&request));
}

#[actix_web::test]
async fn json_body_parameters_are_read_too_and_ttl_is_lowered_to_the_cap() {
    let (key, _jwks, app) = clerk_app().await;
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let response = app
        .request(Method::POST, "/api/ably-token")
        .bearer_auth(&session)
        .json(
            &json!({"capability": {"orders:user_1:9": ["subscribe", "publish"]}, "ttl": 604800000}),
        )
        .send()
        .await
        .unwrap();
    let request = ok_json(response).await;
    assert_eq!(
        request["capability"],
        r#"{"orders:user_1:9":["subscribe"]}"#
    );
    assert_eq!(request["ttl"], 86_400_000);
}

#[actix_web::test]
async fn session_cookie_is_read_and_the_authorization_header_wins() {
    let (key, _jwks, app) = clerk_app().await;
    let alice = key.sign(clerk_header(), &clerk_claims("alice", None));
    let bob = key.sign(clerk_header(), &clerk_claims("bob", None));
    let url = format!("{}/api/ably-token", app.address);

    let cookie_only: Value = send_json(app.client.get(&url).header(
        "cookie",
        format!("theme=dark; __session={alice}; __client_uat=1700000000"),
    ))
    .await;
    assert_eq!(cookie_only["clientId"], "alice");

    let both: Value = send_json(
        app.client
            .get(&url)
            .bearer_auth(&bob)
            .header("cookie", format!("__session={alice}")),
    )
    .await;
    assert_eq!(both["clientId"], "bob");

    let bad_header = app
        .client
        .get(&url)
        .bearer_auth("not-a-jwt")
        .header("cookie", format!("__session={alice}"))
        .send()
        .await
        .unwrap();
    assert_error(bad_header, 401, "session_token_malformed").await;
}

#[actix_web::test]
async fn auth0_session_signed_with_an_ec_key_is_accepted() {
    let rsa = TestKey::rsa("rsa2", "auth0-rsa");
    let ec = TestKey::ec("ec1", "auth0-ec");
    let (_jwks, app) = app_trusting(&[&rsa, &ec], Issuers::auth0).await;
    let session = ec.sign(
        json!({"typ": "JWT"}),
        &auth0_claims("auth0|ec-user", &["support"]),
    );
    let response = app.get_token("/api/ably-token", &session).await;
    let request = ok_json(response).await;
    assert_eq!(request["clientId"], "auth0|ec-user");
    assert_eq!(request["ttl"], 900_000);
    assert_eq!(request["mac"], independent_mac(&request));
    // The same EC key may not be used as if it were the RSA one.
    let mut header = json!({"typ": "JWT", "alg": "RS256"});
    header["kid"] = json!("auth0-ec");
    let confused = ec.sign(header, &auth0_claims("auth0|ec-user", &["support"]));
    let response = app.get_token("/api/ably-token", &confused).await;
    assert_error(response, 401, "signing_key_unknown").await;
}
