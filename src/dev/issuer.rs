//! The development issuer: mints HS256 session tokens that the `dev` stack's
//! sidecar accepts, so the token endpoint can be exercised with curl and no
//! identity provider.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::TryRngCore;
use serde_json::json;

use crate::config::IssuerSettings;
use crate::signing::hmac_sha256;

pub(crate) const DEV_ISSUER: &str = "ably-tokend-dev";

/// `bytes` random bytes as URL-safe base64 without padding.
pub(super) fn random_text(bytes: usize) -> String {
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

    /// The `[[issuers]]` entry that accepts what `mint` signs: roles from
    /// `/roles`, the client id from `/sub`.
    pub(crate) fn issuer_settings(&self) -> IssuerSettings {
        IssuerSettings::with_secret("dev", DEV_ISSUER, &self.secret)
            .expect("32 random bytes make a valid secret")
    }
}
