//! `ably-tokend dev`: a zero-setup local stack on loopback. A generated API
//! key, and a development issuer that mints HS256 session tokens so that the
//! token endpoint can be exercised with curl and no identity provider.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::TryRngCore;
use serde_json::json;

use crate::config::Settings;
use crate::signing::hmac_sha256;

pub const DEV_ISSUER: &str = "ably-tokend-dev";

fn random_text(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng
        .try_fill_bytes(&mut buf)
        .expect("the operating system's random source is available");
    URL_SAFE_NO_PAD.encode(buf)
}

/// Mints session tokens the `dev` issuer accepts.
#[derive(Clone)]
pub struct DevIssuer {
    secret: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevIssuer(<secret redacted>)")
    }
}

impl DevIssuer {
    pub fn generate() -> DevIssuer {
        DevIssuer {
            secret: random_text(32),
        }
    }

    /// An HS256 session token for `sub` with `roles`, valid for `ttl_secs`.
    pub fn mint(&self, sub: &str, roles: &[String], now_secs: u64, ttl_secs: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = json!({
            "iss": DEV_ISSUER,
            "sub": sub,
            "roles": roles,
            "iat": now_secs,
            "exp": now_secs + ttl_secs,
            "sid": format!("dev_{}", random_text(9)),
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let signature =
            URL_SAFE_NO_PAD.encode(hmac_sha256(self.secret.as_bytes(), &[input.as_bytes()]));
        format!("{input}.{signature}")
    }

    /// Settings for the dev stack: loopback only, a fresh key, this issuer.
    pub fn settings(
        &self,
        port: u16,
        policy_path: &str,
        cors_origins: &[String],
    ) -> Result<Settings, crate::config::ConfigError> {
        let key = format!(
            "dev.{}:{}",
            random_text(6).replace(['-', '_'], "x"),
            random_text(24)
        );
        let text = format!(
            r#"
            [server]
            bind = "127.0.0.1:{port}"
            rate_limit_per_second = 0
            cors_allowed_origins = {origins}
            [ably]
            api_key = "{key}"
            [[issuers]]
            name = "dev"
            issuer = "{DEV_ISSUER}"
            secret = "{secret}"
            roles_claim = "/roles"
            [policy]
            path = {policy_path:?}
            watch = {watch}
            [log]
            format = "pretty"
            "#,
            secret = self.secret,
            origins = serde_json::to_string(cors_origins).expect("strings serialise"),
            // Edits to the policy file apply while `dev` runs.
            watch = std::path::Path::new(policy_path).exists(),
        );
        Settings::from_toml(&text)
    }
}
