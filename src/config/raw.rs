//! What the file and environment hold, before validation: every field as
//! written, with the documented defaults. `validate.rs` turns these into the
//! typed settings in `mod.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{LogFormat, TokenFormat};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSettings {
    pub(crate) server: RawServer,
    pub(crate) ably: RawAbly,
    pub(crate) issuers: Vec<RawIssuer>,
    pub(crate) policy: RawPolicy,
    pub(crate) broker: RawBroker,
    pub(crate) log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(crate) bind: String,
    pub(crate) cors_allowed_origins: Vec<String>,
    pub(crate) session_cookies: Vec<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) rate_limit_per_second: u32,
    pub(crate) rate_limit_burst: u32,
    pub(crate) shutdown_timeout: String,
    pub(crate) keep_alive: String,
    pub(crate) workers: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            bind: "127.0.0.1:8080".into(),
            cors_allowed_origins: Vec::new(),
            session_cookies: vec!["__session".into()],
            max_body_bytes: 16 * 1024,
            // Behind a proxy every request shares one address, so this is a
            // ceiling for the whole sidecar, not a per-user quota.
            rate_limit_per_second: 1000,
            rate_limit_burst: 2000,
            shutdown_timeout: "10s".into(),
            keep_alive: "75s".into(),
            workers: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAbly {
    pub(crate) api_key: Option<String>,
    pub(crate) api_keys: Vec<String>,
    pub(crate) keys: Vec<RawKey>,
    pub(crate) token_format: TokenFormat,
    pub(crate) default_ttl: String,
    pub(crate) max_ttl: String,
}

impl Default for RawAbly {
    fn default() -> Self {
        RawAbly {
            api_key: None,
            api_keys: Vec::new(),
            keys: Vec::new(),
            token_format: TokenFormat::TokenRequest,
            default_ttl: "1h".into(),
            max_ttl: "24h".into(),
        }
    }
}

/// One `[[ably.keys]]` table: a key (inline or named by an environment
/// variable) and the capability it may grant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(crate) key: Option<String>,
    pub(crate) key_env: Option<String>,
    /// Channel pattern → operations, as in a capability's JSON.
    pub(crate) capability: Option<BTreeMap<String, Vec<String>>>,
}

/// A field with a default that remembers whether the file set it, so a key
/// that does not belong to an issuer's kind is an error even when its value
/// is the default. Reads as the value it holds.
#[derive(Clone, Debug, Default)]
pub(super) struct Given<T> {
    pub(crate) value: T,
    pub(crate) given: bool,
}

impl<T> Given<T> {
    fn default_to(value: T) -> Given<T> {
        Given {
            value,
            given: false,
        }
    }
}

impl<T> std::ops::Deref for Given<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Given<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|value| Given { value, given: true })
    }
}

/// One `[[issuers]]` table. Which fields apply depends on `kind`; the
/// others must be absent (checked in `issuer.rs`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    pub(crate) name: String,
    /// `"jwt"` (the default), `"authjs"`, `"session_endpoint"` or `"introspection"`.
    pub(crate) kind: Option<String>,
    /// Cookies that carry this issuer's session (jwt and authjs kinds).
    pub(crate) cookies: Option<Vec<String>>,
    /// What a jwt issuer's cookies hold: `"plain"` (the JWT, the default) or
    /// `"supabase"` (@supabase/ssr's session cookie).
    pub(crate) cookie_format: Option<String>,
    #[serde(default)]
    pub(crate) issuer: Given<String>,
    pub(crate) jwks_url: Option<String>,
    pub(crate) secret: Option<String>,
    /// Names of environment variables holding secrets, newest first (authjs).
    pub(crate) secret_env: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) audiences: Given<Vec<String>>,
    #[serde(default)]
    pub(crate) authorized_parties: Given<Vec<String>>,
    pub(crate) algorithms: Option<Vec<String>>,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (jwt and authjs kinds).
    #[serde(default = "default_leeway")]
    pub(crate) leeway: Given<String>,
    #[serde(default = "default_roles_claim")]
    pub(crate) roles_claim: String,
    #[serde(default = "default_client_id_claim")]
    pub(crate) client_id_claim: String,
    #[serde(default = "default_cache_ttl")]
    pub(crate) jwks_cache_ttl: Given<String>,
    #[serde(default = "default_cooldown")]
    pub(crate) jwks_refetch_cooldown: Given<String>,
    #[serde(default = "default_stale_for")]
    pub(crate) jwks_stale_for: Given<String>,
    #[serde(default = "default_timeout")]
    pub(crate) jwks_timeout: Given<String>,
    // The look-up kinds' fields (`session_endpoint`, `introspection`),
    // checked in `remote.rs`; absent means the documented default.
    pub(crate) url: Option<String>,
    pub(crate) forward_cookies: Option<Vec<String>>,
    pub(crate) forward_authorization: Option<bool>,
    pub(crate) expires_pointer: Option<String>,
    pub(crate) cache_ttl: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret_env: Option<String>,
}

impl RawIssuer {
    /// An `[[issuers]]` entry with a shared secret and every other field
    /// left at its default, as if the file named only these three.
    pub(crate) fn with_secret(name: &str, issuer: &str, secret: &str) -> RawIssuer {
        RawIssuer {
            name: name.into(),
            kind: None,
            cookies: None,
            cookie_format: None,
            issuer: Given {
                value: issuer.into(),
                given: true,
            },
            jwks_url: None,
            secret: Some(secret.into()),
            secret_env: None,
            audiences: Given::default(),
            authorized_parties: Given::default(),
            algorithms: None,
            leeway: default_leeway(),
            roles_claim: default_roles_claim(),
            client_id_claim: default_client_id_claim(),
            jwks_cache_ttl: default_cache_ttl(),
            jwks_refetch_cooldown: default_cooldown(),
            jwks_stale_for: default_stale_for(),
            jwks_timeout: default_timeout(),
            url: None,
            forward_cookies: None,
            forward_authorization: None,
            expires_pointer: None,
            cache_ttl: None,
            timeout: None,
            client_id: None,
            client_secret_env: None,
        }
    }
}

fn default_leeway() -> Given<String> {
    Given::default_to("5s".into())
}
fn default_roles_claim() -> String {
    "/roles".into()
}
fn default_client_id_claim() -> String {
    "/sub".into()
}
fn default_cache_ttl() -> Given<String> {
    Given::default_to("10m".into())
}
fn default_cooldown() -> Given<String> {
    Given::default_to("30s".into())
}
fn default_stale_for() -> Given<String> {
    Given::default_to("24h".into())
}
fn default_timeout() -> Given<String> {
    Given::default_to("5s".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPolicy {
    pub(crate) path: String,
    pub(crate) watch: bool,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            path: "policies/default.toml".into(),
            watch: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBroker {
    pub(crate) bind: String,
    pub(crate) history_max_messages: usize,
    pub(crate) history_max_age: String,
    pub(crate) presence_grace: String,
    pub(crate) max_idle_interval: String,
}

impl Default for RawBroker {
    fn default() -> Self {
        RawBroker {
            bind: "127.0.0.1:8081".into(),
            history_max_messages: 1000,
            history_max_age: "2m".into(),
            presence_grace: "15s".into(),
            max_idle_interval: "15s".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(crate) format: LogFormat,
    pub(crate) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}
