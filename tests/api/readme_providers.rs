//! README.md's "Identity providers" section, tested as written: each
//! provider's TOML block loads as configuration; with only its URLs rewritten
//! to a loopback server standing in for the provider's host, the sidecar
//! verifies a token shaped like that provider's (header, kid, alg, claims)
//! and reads the roles from where the block says they live.

use serde_json::{json, Value};

use crate::discovery::{config_with, spawn_app, ProviderServer};
use crate::helpers::*;

/// Each JWT provider's block, by its `### ` heading in the section.
fn readme_blocks() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("\n## Identity providers\n")
        .expect("README.md has an Identity providers section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    section
        .split("\n### ")
        .skip(1)
        // Marked blocks are run elsewhere: cookie-based providers by the Node
        // identity suite (cookies from the providers' own libraries), Better
        // Auth's session endpoint by session_kinds.rs.
        .filter(|part| !part.contains("<!-- identity-config:"))
        .map(|part| {
            let heading = part.lines().next().unwrap().trim().to_string();
            let open = part
                .find("```toml\n")
                .unwrap_or_else(|| panic!("{heading}: no ```toml block"));
            let body = &part[open + "```toml\n".len()..];
            let block = body[..body.find("```").unwrap()].to_string();
            (heading, block)
        })
        .collect()
}

/// A provider this test knows how to imitate.
struct Shape {
    /// The provider's URL prefixes, each rewritten to the loopback server.
    hosts: &'static [&'static str],
    /// Where a discovery document would put the key set, below the issuer.
    discovery_jwks_path: Option<&'static str>,
    key: fn() -> TestKey,
    header: fn(&TestKey) -> Value,
    /// Claims for `iss`, carrying the role "support" where the provider puts roles.
    claims: fn(iss: &str) -> Value,
    client_id: &'static str,
}

fn rsa(kid: &str) -> TestKey {
    TestKey::rsa("rsa1", kid)
}

fn shape(heading: &str) -> Shape {
    match heading {
        "Clerk" => Shape {
            hosts: &["https://your-app.clerk.accounts.dev"],
            discovery_jwks_path: None,
            key: || rsa("ins_2abcDEFghiJKLmnoPQRstuVWXyz"),
            header: |k| json!({"alg": "RS256", "kid": k.kid, "typ": "JWT", "cat": "cl_B7d4PD111AAA"}),
            claims: |iss| {
                let now = now();
                json!({
                    "azp": "https://app.example.com",
                    "exp": now + 60, "iat": now, "nbf": now - 10,
                    "iss": iss,
                    "jti": "3f5b2c1a9d8e7f6a5b4c",
                    "sid": "sess_2abcDEFghiJKLmno",
                    "sub": "user_2abcDEFghiJKLmno",
                    "v": 2,
                    "fva": [0, -1],
                    "metadata": {"role": "support"},
                })
            },
            client_id: "user_2abcDEFghiJKLmno",
        },
        "Auth0" => Shape {
            hosts: &["https://your-tenant.auth0.com"],
            discovery_jwks_path: Some(".well-known/jwks.json"),
            key: || rsa("QzBCMDRGNjQ2RkZBNUI5RDc0QkI1OTk2OUJDRjRFQUU"),
            header: |k| json!({"alg": "RS256", "typ": "JWT", "kid": k.kid}),
            claims: |iss| {
                let now = now();
                json!({
                    "https://example.com/roles": ["support"],
                    "iss": iss,
                    "sub": "auth0|65f1c2d3e4f5a6b7c8d9e0f1",
                    "aud": ["https://api.example.com", format!("{iss}userinfo")],
                    "iat": now, "exp": now + 86400,
                    "scope": "openid profile email",
                    "azp": "kbyuFDidLLm280LIwVFiazOqjO3ty8KH",
                })
            },
            client_id: "auth0|65f1c2d3e4f5a6b7c8d9e0f1",
        },
        "Firebase Authentication" => Shape {
            hosts: &[
                "https://securetoken.google.com",
                "https://www.googleapis.com",
            ],
            discovery_jwks_path: None,
            key: || rsa("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"),
            header: |k| json!({"alg": "RS256", "kid": k.kid, "typ": "JWT"}),
            claims: |iss| {
                let now = now();
                json!({
                    "roles": ["support"],
                    "iss": iss,
                    "aud": "your-project-id",
                    "auth_time": now - 100,
                    "user_id": "Xo9vQm3LkT2bN8rWc5yZaP4dE7f1",
                    "sub": "Xo9vQm3LkT2bN8rWc5yZaP4dE7f1",
                    "iat": now, "exp": now + 3600,
                    "email": "agent@example.com",
                    "email_verified": true,
                    "firebase": {"identities": {"email": ["agent@example.com"]}, "sign_in_provider": "password"},
                })
            },
            client_id: "Xo9vQm3LkT2bN8rWc5yZaP4dE7f1",
        },
        "Amazon Cognito" => Shape {
            hosts: &["https://cognito-idp.us-east-1.amazonaws.com"],
            discovery_jwks_path: Some("/.well-known/jwks.json"),
            key: || rsa("abcdEFGH1234ijklMNOP5678qrstUVWX9012yzAB34c="),
            header: |k| json!({"kid": k.kid, "alg": "RS256"}),
            claims: |iss| {
                let now = now();
                json!({
                    "sub": "94a8a4e8-2051-70b1-8f6e-0c1f2d3e4f5a",
                    "cognito:groups": ["support"],
                    "email_verified": true,
                    "iss": iss,
                    "cognito:username": "agent7",
                    "origin_jti": "b1c2d3e4-f5a6-7b8c-9d0e-1f2a3b4c5d6e",
                    "aud": "1example23456789abcdefghij",
                    "event_id": "c3d4e5f6-a7b8-9c0d-1e2f-3a4b5c6d7e8f",
                    "token_use": "id",
                    "auth_time": now - 100,
                    "exp": now + 3600, "iat": now,
                    "jti": "d4e5f6a7-b8c9-0d1e-2f3a-4b5c6d7e8f9a",
                    "email": "agent@example.com",
                })
            },
            client_id: "94a8a4e8-2051-70b1-8f6e-0c1f2d3e4f5a",
        },
        "Keycloak" => Shape {
            hosts: &["https://keycloak.example.com"],
            discovery_jwks_path: Some("/protocol/openid-connect/certs"),
            key: || rsa("7x2Q1b0r8WmJ3pLk9sVd4NcH6fGtYzAe5uIoBqRwXyE"),
            header: |k| json!({"alg": "RS256", "typ": "JWT", "kid": k.kid}),
            claims: |iss| {
                let now = now();
                json!({
                    "exp": now + 300, "iat": now,
                    "jti": "onrtac:5b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e",
                    "iss": iss,
                    "aud": "account",
                    "sub": "f1e2d3c4-b5a6-4789-9abc-def012345678",
                    "typ": "Bearer",
                    "azp": "my-app",
                    "sid": "a9b8c7d6-e5f4-4321-9876-543210fedcba",
                    "acr": "1",
                    "realm_access": {"roles": ["offline_access", "default-roles-myrealm", "support", "uma_authorization"]},
                    "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
                    "scope": "openid email profile",
                    "email_verified": true,
                    "preferred_username": "agent7",
                })
            },
            client_id: "f1e2d3c4-b5a6-4789-9abc-def012345678",
        },
        "Supabase (Bearer)" => Shape {
            hosts: &["https://your-project-ref.supabase.co"],
            discovery_jwks_path: None,
            key: || TestKey::ec("ec1", "5e9b1a2c-3d4f-4a5b-8c6d-7e8f9a0b1c2d"),
            header: |k| json!({"alg": "ES256", "kid": k.kid, "typ": "JWT"}),
            claims: |iss| {
                let now = now();
                json!({
                    "iss": iss,
                    "sub": "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
                    "aud": "authenticated",
                    "exp": now + 3600, "iat": now,
                    "email": "agent@example.com",
                    "phone": "",
                    "app_metadata": {"provider": "email", "providers": ["email"], "roles": ["support"]},
                    "user_metadata": {"email_verified": true},
                    "role": "authenticated",
                    "aal": "aal1",
                    "amr": [{"method": "password", "timestamp": now - 100}],
                    "session_id": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
                    "is_anonymous": false,
                })
            },
            client_id: "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
        },
        other => panic!("README.md names a provider this test does not know: {other}"),
    }
}

/// The value of `key = "…"` in a TOML block.
fn field(block: &str, key: &str) -> String {
    block
        .lines()
        .find_map(|line| {
            let (name, rest) = line.split_once('=')?;
            (name.trim() == key).then(|| rest.trim().split('"').nth(1).unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in {block}"))
}

#[actix_web::test]
async fn each_provider_block_in_the_readme_verifies_a_token_shaped_like_the_providers() {
    let blocks = readme_blocks();
    let names: Vec<&str> = blocks.iter().map(|(h, _)| h.as_str()).collect();
    for expected in [
        "Clerk",
        "Auth0",
        "Firebase Authentication",
        "Amazon Cognito",
        "Keycloak",
        "Supabase (Bearer)",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for (heading, block) in &blocks {
        // As written, with the provider's own URLs, the block is configuration.
        ably_tokend::config::Settings::from_toml(&config_with(block))
            .unwrap_or_else(|e| panic!("{heading}: {e}"));

        let shape = shape(heading);
        let key = (shape.key)();
        let provider = ProviderServer::start(&[&key]).await;
        let mut local = block.clone();
        for host in shape.hosts {
            assert!(local.contains(host), "{heading}: {host} not in the block");
            local = local.replace(host, &provider.base());
        }
        // Every URL the sidecar fetches or compares with `iss` now points here.
        let iss = field(&local, "issuer");
        assert!(iss.starts_with(&provider.base()), "{heading}: {local}");
        if local.contains("jwks_url") {
            assert!(
                field(&local, "jwks_url").starts_with(&provider.base()),
                "{heading}"
            );
        }
        if let Some(path) = shape.discovery_jwks_path {
            assert!(
                !local.contains("jwks_url"),
                "{heading} is documented with discovery"
            );
            provider.publish_doc(&iss, &format!("{iss}{path}"));
        }
        let app = spawn_app(&config_with(&local), ably_tokend::clock::system());
        let token = key.sign((shape.header)(&key), &(shape.claims)(&iss));
        let response = app.get_token("/api/ably-token", &token).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{heading}: {body}");
        assert_eq!(body["clientId"], shape.client_id, "{heading}: {body}");
        let capability: Value = serde_json::from_str(body["capability"].as_str().unwrap()).unwrap();
        assert_eq!(
            capability["orders:*"],
            json!(["history", "presence", "publish", "subscribe"]),
            "{heading}: the support role was read from the documented claim: {capability}"
        );
        assert_eq!(
            provider.doc_fetches(),
            usize::from(shape.discovery_jwks_path.is_some()),
            "{heading}"
        );
        assert!(provider.key_fetches() >= 1, "{heading}");
        provider.stop().await;
    }
}
