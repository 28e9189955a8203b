//! Configuration: one TOML file plus `ABLY_TOKEND_<SECTION>__<KEY>` environment
//! variables and `ABLY_API_KEY`, loaded once and turned into typed settings.
//! Every error names the field; no error or `Debug` output holds a secret.
//!
//! `raw.rs` holds what the file says (with the documented defaults),
//! `validate.rs` and `issuer.rs` turn it into the typed settings below.

mod issuer;
mod raw;
pub(crate) mod remote;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::policy::ClaimPointer;
use crate::signing::{ApiKey, KeySecret};
use raw::{RawAbly, RawBroker, RawIssuer, RawLog, RawPolicy, RawServer, RawSettings};

pub(crate) use issuer::is_loopback_host;
pub(crate) use remote::{IntrospectionSettings, SessionEndpointSettings};
pub(crate) use validate::check_cors_origins;

pub(crate) const DEFAULT_CONFIG_FILE: &str = "ably-tokend.toml";
const ENV_PREFIX: &str = "ABLY_TOKEND";

/// Ably's own ceiling on a token's life: a longer `ttl` is refused with
/// error 40003 "Excessive value for TTL" (https://ably.com/docs/errors/codes).
pub(crate) const ABLY_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) server: ServerSettings,
    pub(crate) ably: AblySettings,
    pub(crate) issuers: Vec<IssuerSettings>,
    pub(crate) policy: PolicySettings,
    pub(crate) broker: BrokerSettings,
    pub(crate) log: LogSettings,
}

#[derive(Debug, Clone)]
pub(crate) struct ServerSettings {
    pub(crate) bind: SocketAddr,
    pub(crate) cors_allowed_origins: Vec<String>,
    /// Cookies that may carry the session token, in order of preference.
    pub(crate) session_cookies: Vec<String>,
    pub(crate) max_body_bytes: usize,
    /// Requests per second per client address; 0 turns the limit off.
    pub(crate) rate_limit_per_second: u32,
    pub(crate) rate_limit_burst: u32,
    pub(crate) shutdown_timeout: Duration,
    /// How long an idle keep-alive connection is kept open; clients are told
    /// in a `Keep-Alive: timeout=` header (src/http/mod.rs).
    pub(crate) keep_alive: Duration,
    pub(crate) workers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TokenFormat {
    TokenRequest,
    Jwt,
}

#[derive(Debug, Clone)]
pub(crate) struct AblySettings {
    /// Never empty; the first key signs, the others are accepted by the broker
    /// and by `token inspect` (key rotation).
    pub(crate) keys: Vec<ApiKey>,
    pub(crate) token_format: TokenFormat,
    pub(crate) default_ttl: Duration,
    pub(crate) max_ttl: Duration,
}

impl AblySettings {
    /// One key that signs, with the documented token format and lifetimes.
    pub(crate) fn with_key(key: ApiKey) -> AblySettings {
        let (default_ttl, max_ttl) =
            validate::ttls(&RawAbly::default()).expect("the documented defaults are valid");
        AblySettings {
            keys: vec![key],
            token_format: RawAbly::default().token_format,
            default_ttl,
            max_ttl,
        }
    }

    pub(crate) fn signing_key(&self) -> &ApiKey {
        &self.keys[0]
    }
}

#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    Jwks(JwksSettings),
    /// OIDC discovery: `url` is the issuer's discovery document, whose
    /// `jwks_uri` names the key set; the timings are the key set's.
    Discovery(JwksSettings),
    /// HS256/384/512 shared secret, for development issuers.
    Secret(KeySecret),
}

#[derive(Debug, Clone)]
pub(crate) struct JwksSettings {
    pub(crate) url: reqwest::Url,
    pub(crate) cache_ttl: Duration,
    pub(crate) refetch_cooldown: Duration,
    pub(crate) stale_for: Duration,
    pub(crate) timeout: Duration,
}

/// One `[[issuers]]` table: what every kind shares (how its claims are read,
/// which cookies it owns), and what its kind needs.
#[derive(Debug, Clone)]
pub(crate) struct IssuerSettings {
    pub(crate) name: String,
    pub(crate) kind: IssuerKind,
    /// Cookies that carry this issuer's session, in order of preference
    /// (`forward_cookies` for a session endpoint); a cookie is listed by one
    /// issuer at most.
    pub(crate) cookies: Vec<String>,
    pub(crate) leeway: Duration,
    pub(crate) roles_claim: ClaimPointer,
    pub(crate) client_id_claim: ClaimPointer,
}

/// How an issuer's sessions are verified (`kind = ...` in the table).
#[derive(Debug, Clone)]
pub(crate) enum IssuerKind {
    /// Signed JWTs (JWS), by JWKS or shared secret.
    Jwt(Box<JwtIssuer>),
    /// Auth.js v5 / NextAuth v4 session cookies: JWTs encrypted (JWE) with a
    /// key derived from the app's secret.
    Authjs(AuthjsIssuer),
    /// Opaque sessions: the app's own session URL is asked who the caller is.
    SessionEndpoint(SessionEndpointSettings),
    /// Opaque access tokens: RFC 7662 token introspection.
    Introspection(IntrospectionSettings),
}

#[derive(Debug, Clone)]
pub(crate) struct JwtIssuer {
    /// Compared exactly with a token's `iss`.
    pub(crate) issuer: String,
    pub(crate) keys: KeySource,
    pub(crate) audiences: Vec<String>,
    pub(crate) authorized_parties: Vec<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    /// What this issuer's `cookies` hold.
    pub(crate) cookie_format: CookieFormat,
}

/// What a `jwt` issuer's cookies hold (`cookie_format = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieFormat {
    /// The JWT itself.
    Plain,
    /// @supabase/ssr's session cookie, whose `access_token` is the JWT
    /// (`upstream/supabase.rs`).
    Supabase,
}

#[derive(Debug, Clone)]
pub(crate) struct AuthjsIssuer {
    /// The app's secrets, newest first (rotation: each is tried in turn).
    pub(crate) secrets: Vec<NamedSecret>,
}

/// A secret read from the environment at start-up, with the variable's name
/// for messages. `Debug` never shows the value.
#[derive(Debug, Clone)]
pub(crate) struct NamedSecret {
    pub(crate) env: String,
    pub(crate) secret: KeySecret,
}

impl IssuerSettings {
    /// An issuer that signs with a shared secret (HS256), every other field
    /// at its documented default; checked as an `[[issuers]]` table would be.
    pub(crate) fn with_secret(
        name: &str,
        issuer: &str,
        secret: &str,
    ) -> Result<IssuerSettings, ConfigError> {
        issuer::validate_issuer(0, RawIssuer::with_secret(name, issuer, secret), &|_| None)
    }

    /// Whether a Bearer value that is not a JWT goes to this issuer: an
    /// introspection issuer, or a session endpoint that forwards Authorization.
    pub(crate) fn takes_opaque_bearer(&self) -> bool {
        match &self.kind {
            IssuerKind::Introspection(_) => true,
            IssuerKind::SessionEndpoint(s) => s.forward_authorization,
            IssuerKind::Jwt(_) | IssuerKind::Authjs(_) => false,
        }
    }

    /// The field its cookies are listed in, for messages.
    pub(crate) fn cookies_field(&self) -> &'static str {
        match &self.kind {
            IssuerKind::SessionEndpoint(_) => "forward_cookies",
            _ => "cookies",
        }
    }

    /// The JWT issuer's settings, if this is one.
    pub(crate) fn jwt(&self) -> Option<&JwtIssuer> {
        match &self.kind {
            IssuerKind::Jwt(jwt) => Some(jwt.as_ref()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PolicySettings {
    pub(crate) path: PathBuf,
    pub(crate) watch: bool,
}

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub bind: SocketAddr,
    pub history_max_messages: usize,
    pub history_max_age: Duration,
    /// How long the members of a connection that dropped without CLOSE stay
    /// present, so a client that resumes within it shows no leave/enter.
    pub presence_grace: Duration,
    /// Advertised as `maxIdleInterval` (CD2h): the broker pings at half of it,
    /// and closes a connection it has heard nothing from for 1.5 times it.
    pub max_idle_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub(crate) struct LogSettings {
    pub(crate) format: LogFormat,
    /// A tracing filter such as `info` or `ably_tokend=debug,info`.
    pub(crate) level: String,
}

// The defaults of each section are the documented ones a file that omits the
// section gets, so they come from `raw.rs` through the same validation.

impl Default for ServerSettings {
    fn default() -> Self {
        validate::server(RawServer::default()).expect("the documented defaults are valid")
    }
}

impl Default for PolicySettings {
    fn default() -> Self {
        validate::policy(RawPolicy::default())
    }
}

impl Default for BrokerSettings {
    fn default() -> Self {
        validate::broker(RawBroker::default()).expect("the documented defaults are valid")
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        validate::log(RawLog::default()).expect("the documented defaults are valid")
    }
}

/// Parses `"90s"`, `"5m"`, `"1h"`.
pub(crate) fn parse_duration(field: &str, text: &str) -> Result<Duration, ConfigError> {
    crate::duration::parse_duration(field, text).map_err(|e| invalid(e.field.clone(), e.reason()))
}

impl Settings {
    /// The sidecar needs at least one issuer; the broker alone needs none.
    pub(crate) fn require_issuers(&self) -> Result<(), ConfigError> {
        if self.issuers.is_empty() {
            return Err(invalid(
                "issuers",
                "no issuer is configured: add an [[issuers]] table (see README.md)",
            ));
        }
        Ok(())
    }

    /// Loads `path` (or `ably-tokend.toml` when present), then the environment.
    /// An explicitly named file must exist.
    pub(crate) fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let (file, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Settings::load_from(&file, required, &env)
    }

    /// Like `load`, with the environment passed in (tests).
    pub(crate) fn load_from(
        file: &Path,
        required: bool,
        env: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        if required && !file.exists() {
            return Err(ConfigError::Load(format!(
                "config file {} does not exist",
                file.display()
            )));
        }
        let env_source = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("server.cors_allowed_origins")
            .with_list_parse_key("server.session_cookies")
            .with_list_parse_key("ably.api_keys")
            .source(Some(env.iter().cloned().collect()));
        let api_key = env
            .iter()
            .find(|(k, _)| k == "ABLY_API_KEY")
            .map(|(_, v)| v.clone());
        let built = config::Config::builder()
            .add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(required),
            )
            .add_source(env_source)
            .set_override_option("ably.api_key", api_key)
            .map_err(|e| ConfigError::Load(e.to_string()))?
            .build()
            .map_err(|e| ConfigError::Load(scrub(e.to_string())))?;
        let raw: RawSettings = built
            .try_deserialize()
            .map_err(|e| ConfigError::Load(scrub(e.to_string())))?;
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        validate::settings(raw, &lookup)
    }

    /// Parses a configuration from TOML text alone (tests); `key_env` reads
    /// the process environment.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let raw: RawSettings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(scrub(e.to_string())))?;
        validate::settings(raw, &|name: &str| std::env::var(name).ok())
    }
}

/// The config and toml crates quote offending values, and a TOML syntax
/// error quotes the whole source line; a value may be a secret. Keep the
/// location and the reason, never the quoted text.
fn scrub(message: String) -> String {
    let kept: Vec<String> = message
        .lines()
        // Source snippets: "2 | api_key = ...", "  |", "  | ^^^".
        .filter(|line| !line.contains('|'))
        .map(|line| match line.find('"') {
            Some(i) => format!("{}<value hidden>", &line[..i]),
            None => line.to_string(),
        })
        .filter(|line| !line.trim().is_empty())
        .collect();
    kept.join(": ")
}

#[cfg(test)]
mod tests;
