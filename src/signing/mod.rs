//! Signing with the Ably API key secret: TokenRequests (Ably's "REST API Token
//! Request Spec", ably.com/docs/api/token-request-spec) and Ably JWTs (Ably's
//! "Ably JWT" token format: HS256, `kid` = key name, `x-ably-*` claims). Both
//! are pure functions of their inputs; time and the nonce are passed in so the
//! output can be checked byte for byte.

mod jwt;
mod key;
mod token_request;

pub use jwt::{sign_ably_jwt, AblyJwtClaims};
pub(crate) use jwt::{verify_ably_jwt, JwtError};
pub(crate) use key::KeySecret;
pub use key::{ApiKey, KeyError};
pub use token_request::{new_nonce, sign_token_request, TokenRequest};
pub(crate) use token_request::{token_request_mac, verify_token_request_mac};

use crate::capability::Capability;

/// What a token grants, independent of the format it is signed in.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    pub capability: &'a Capability,
    pub client_id: Option<&'a str>,
    pub ttl_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub issued_ms: u64,
}

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 of the concatenated parts.
pub(crate) fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time equality for secrets and MACs.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
