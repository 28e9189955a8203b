//! Configuration: one TOML file plus `ABLY_TOKEND_<SECTION>__<KEY>` environment
//! variables and `ABLY_API_KEY`, loaded once and turned into typed settings.
//! Every error names the field; no error or `Debug` output holds a secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::signing::{ApiKey, KeySecret};

pub const DEFAULT_CONFIG_FILE: &str = "ably-tokend.toml";
const ENV_PREFIX: &str = "ABLY_TOKEND";

/// Ably's own ceiling on a token's life (PROTOCOL §B, error 40003).
pub const ABLY_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

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
    pub server: ServerSettings,
    pub ably: AblySettings,
    pub issuers: Vec<IssuerSettings>,
    pub policy: PolicySettings,
    pub broker: BrokerSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub cors_allowed_origins: Vec<String>,
    /// Cookies that may carry the session token, in order of preference.
    pub session_cookies: Vec<String>,
    pub max_body_bytes: usize,
    /// Requests per second per client address; 0 turns the limit off.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub shutdown_timeout: Duration,
    pub workers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    TokenRequest,
    Jwt,
}

#[derive(Debug, Clone)]
pub struct AblySettings {
    /// Never empty; the first key signs, the others are accepted by the broker
    /// and by `token inspect` (key rotation).
    pub keys: Vec<ApiKey>,
    pub token_format: TokenFormat,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

impl AblySettings {
    pub fn signing_key(&self) -> &ApiKey {
        &self.keys[0]
    }
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Jwks(JwksSettings),
    /// HS256/384/512 shared secret, for development issuers.
    Secret(KeySecret),
}

#[derive(Debug, Clone)]
pub struct JwksSettings {
    pub url: reqwest::Url,
    pub cache_ttl: Duration,
    pub refetch_cooldown: Duration,
    pub stale_for: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub name: String,
    pub issuer: String,
    pub keys: KeySource,
    pub audiences: Vec<String>,
    pub authorized_parties: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub roles_claim: ClaimPointer,
    pub client_id_claim: ClaimPointer,
}

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub path: PathBuf,
    pub watch: bool,
}

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub bind: SocketAddr,
    pub history_max_messages: usize,
    pub history_max_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `ably_tokend=debug,info`.
    pub level: String,
}

/// An RFC 6901 JSON Pointer into the session token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPointer(String);

impl ClaimPointer {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn lookup<'v>(&self, claims: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        claims.pointer(&self.0)
    }
}

impl FromStr for ClaimPointer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.starts_with('/') {
            return Err(format!(
                "{s:?} is not a JSON Pointer: it must start with '/' (e.g. \"/sub\")"
            ));
        }
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "{s:?} is not a JSON Pointer: '~' must be followed by 0 or 1"
                ));
            }
        }
        Ok(ClaimPointer(s.to_string()))
    }
}

/// Parses `"90s"`, `"5m"`, `"1h"`.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            field,
            format!("{text:?} is not a duration like \"90s\", \"5m\" or \"1h\" ({e})"),
        )
    })
}

// ---- what the file and environment hold, before validation ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSettings {
    server: RawServer,
    ably: RawAbly,
    issuers: Vec<RawIssuer>,
    policy: RawPolicy,
    broker: RawBroker,
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    bind: String,
    cors_allowed_origins: Vec<String>,
    session_cookies: Vec<String>,
    max_body_bytes: usize,
    rate_limit_per_second: u32,
    rate_limit_burst: u32,
    shutdown_timeout: String,
    workers: usize,
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
            workers: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAbly {
    api_key: Option<String>,
    api_keys: Vec<String>,
    token_format: TokenFormat,
    default_ttl: String,
    max_ttl: String,
}

impl Default for RawAbly {
    fn default() -> Self {
        RawAbly {
            api_key: None,
            api_keys: Vec::new(),
            token_format: TokenFormat::TokenRequest,
            default_ttl: "1h".into(),
            max_ttl: "24h".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    name: String,
    issuer: String,
    jwks_url: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    authorized_parties: Vec<String>,
    algorithms: Option<Vec<String>>,
    #[serde(default = "default_leeway")]
    leeway: String,
    #[serde(default = "default_roles_claim")]
    roles_claim: String,
    #[serde(default = "default_client_id_claim")]
    client_id_claim: String,
    #[serde(default = "default_cache_ttl")]
    jwks_cache_ttl: String,
    #[serde(default = "default_cooldown")]
    jwks_refetch_cooldown: String,
    #[serde(default = "default_stale_for")]
    jwks_stale_for: String,
    #[serde(default = "default_timeout")]
    jwks_timeout: String,
}

fn default_leeway() -> String {
    "5s".into()
}
fn default_roles_claim() -> String {
    "/roles".into()
}
fn default_client_id_claim() -> String {
    "/sub".into()
}
fn default_cache_ttl() -> String {
    "10m".into()
}
fn default_cooldown() -> String {
    "30s".into()
}
fn default_stale_for() -> String {
    "24h".into()
}
fn default_timeout() -> String {
    "5s".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    path: String,
    watch: bool,
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
struct RawBroker {
    bind: String,
    history_max_messages: usize,
    history_max_age: String,
}

impl Default for RawBroker {
    fn default() -> Self {
        RawBroker {
            bind: "127.0.0.1:8081".into(),
            history_max_messages: 1000,
            history_max_age: "2m".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

impl Settings {
    /// The sidecar needs at least one issuer; the broker alone needs none.
    pub fn require_issuers(&self) -> Result<(), ConfigError> {
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
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let (file, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Settings::load_from(&file, required, &env)
    }

    /// Like `load`, with the environment passed in (tests).
    pub fn load_from(
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
        Settings::validate(raw)
    }

    /// Parses a configuration from TOML text alone (tests, `dev`).
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let raw: RawSettings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(scrub(e.to_string())))?;
        Settings::validate(raw)
    }

    fn validate(raw: RawSettings) -> Result<Settings, ConfigError> {
        let server = validate_server(raw.server)?;
        let ably = validate_ably(raw.ably)?;
        let mut issuers = Vec::with_capacity(raw.issuers.len());
        for (i, issuer) in raw.issuers.into_iter().enumerate() {
            let validated = validate_issuer(i, issuer)?;
            if issuers
                .iter()
                .any(|other: &IssuerSettings| other.issuer == validated.issuer)
            {
                return Err(invalid(
                    format!("issuers[{i}].issuer"),
                    format!("{:?} is configured twice", validated.issuer),
                ));
            }
            if issuers
                .iter()
                .any(|other: &IssuerSettings| other.name == validated.name)
            {
                return Err(invalid(
                    format!("issuers[{i}].name"),
                    format!("{:?} is used twice", validated.name),
                ));
            }
            issuers.push(validated);
        }
        let policy = PolicySettings {
            path: PathBuf::from(&raw.policy.path),
            watch: raw.policy.watch,
        };
        let broker = BrokerSettings {
            bind: parse_bind("broker.bind", &raw.broker.bind)?,
            history_max_messages: raw.broker.history_max_messages,
            history_max_age: parse_duration("broker.history_max_age", &raw.broker.history_max_age)?,
        };
        tracing_subscriber::EnvFilter::try_new(&raw.log.level)
            .map_err(|e| invalid("log.level", format!("{:?}: {e}", raw.log.level)))?;
        Ok(Settings {
            server,
            ably,
            issuers,
            policy,
            broker,
            log: LogSettings {
                format: raw.log.format,
                level: raw.log.level,
            },
        })
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

fn parse_bind(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not an address like \"127.0.0.1:8080\" or \"[::1]:8080\""),
        )
    })
}

fn validate_server(raw: RawServer) -> Result<ServerSettings, ConfigError> {
    for (i, origin) in raw.cors_allowed_origins.iter().enumerate() {
        let ok = reqwest::Url::parse(origin)
            .map(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.path() == "/"
                    && !origin.ends_with('/')
                    && u.query().is_none()
            })
            .unwrap_or(false);
        if !ok {
            return Err(invalid(
                format!("server.cors_allowed_origins[{i}]"),
                format!("{origin:?} is not an origin like \"https://app.example.com\""),
            ));
        }
    }
    for (i, cookie) in raw.session_cookies.iter().enumerate() {
        if cookie.is_empty()
            || !cookie
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(invalid(
                format!("server.session_cookies[{i}]"),
                format!("{cookie:?} is not a cookie name"),
            ));
        }
    }
    if raw.max_body_bytes == 0 || raw.max_body_bytes > 1024 * 1024 {
        return Err(invalid(
            "server.max_body_bytes",
            "must be between 1 and 1048576",
        ));
    }
    if raw.rate_limit_per_second > 0 && raw.rate_limit_burst == 0 {
        return Err(invalid(
            "server.rate_limit_burst",
            "must be at least 1 when rate_limit_per_second is set",
        ));
    }
    Ok(ServerSettings {
        bind: parse_bind("server.bind", &raw.bind)?,
        cors_allowed_origins: raw.cors_allowed_origins,
        session_cookies: raw.session_cookies,
        max_body_bytes: raw.max_body_bytes,
        rate_limit_per_second: raw.rate_limit_per_second,
        rate_limit_burst: raw.rate_limit_burst,
        shutdown_timeout: parse_duration("server.shutdown_timeout", &raw.shutdown_timeout)?,
        workers: raw.workers,
    })
}

fn validate_ably(raw: RawAbly) -> Result<AblySettings, ConfigError> {
    let mut keys = Vec::new();
    if let Some(key) = raw.api_key.as_deref().filter(|k| !k.trim().is_empty()) {
        keys.push(
            key.parse::<ApiKey>()
                .map_err(|e| invalid("ably.api_key", e.to_string()))?,
        );
    }
    for (i, key) in raw.api_keys.iter().enumerate() {
        let key = key
            .parse::<ApiKey>()
            .map_err(|e| invalid(format!("ably.api_keys[{i}]"), e.to_string()))?;
        if !keys.iter().any(|k: &ApiKey| k.name() == key.name()) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(invalid(
            "ably.api_key",
            "no Ably API key: set ABLY_API_KEY or ably.api_key (appId.keyId:secret)",
        ));
    }
    let default_ttl = parse_duration("ably.default_ttl", &raw.default_ttl)?;
    let max_ttl = parse_duration("ably.max_ttl", &raw.max_ttl)?;
    if max_ttl.is_zero() || max_ttl > ABLY_MAX_TTL {
        return Err(invalid(
            "ably.max_ttl",
            "must be more than 0 and at most 24h (Ably refuses longer tokens)",
        ));
    }
    if default_ttl.is_zero() || default_ttl > max_ttl {
        return Err(invalid(
            "ably.default_ttl",
            "must be more than 0 and at most ably.max_ttl",
        ));
    }
    Ok(AblySettings {
        keys,
        token_format: raw.token_format,
        default_ttl,
        max_ttl,
    })
}

const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const SYMMETRIC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

fn is_loopback_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn validate_issuer(i: usize, raw: RawIssuer) -> Result<IssuerSettings, ConfigError> {
    let at = |field: &str| format!("issuers[{i}].{field}");
    if raw.name.trim().is_empty() {
        return Err(invalid(at("name"), "must not be empty"));
    }
    if raw.issuer.trim().is_empty() {
        return Err(invalid(
            at("issuer"),
            "must not be empty: it is compared exactly with the token's iss",
        ));
    }
    let keys = match (raw.jwks_url, raw.secret) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                at("secret"),
                "set jwks_url or secret, not both (an issuer uses one kind of key)",
            ))
        }
        (None, None) => {
            return Err(invalid(
                at("jwks_url"),
                "set jwks_url (OIDC issuers) or secret (HS256 development issuer)",
            ))
        }
        (Some(url), None) => {
            let url = reqwest::Url::parse(&url)
                .map_err(|e| invalid(at("jwks_url"), format!("{url:?} is not a URL: {e}")))?;
            match url.scheme() {
                "https" => {}
                "http" if is_loopback_host(&url) => {}
                _ => {
                    return Err(invalid(
                        at("jwks_url"),
                        "must be https (plain http is allowed only on loopback)",
                    ))
                }
            }
            let jwks = JwksSettings {
                url,
                cache_ttl: parse_duration(&at("jwks_cache_ttl"), &raw.jwks_cache_ttl)?,
                refetch_cooldown: parse_duration(
                    &at("jwks_refetch_cooldown"),
                    &raw.jwks_refetch_cooldown,
                )?,
                stale_for: parse_duration(&at("jwks_stale_for"), &raw.jwks_stale_for)?,
                timeout: parse_duration(&at("jwks_timeout"), &raw.jwks_timeout)?,
            };
            let bounded =
                |field: &str, value: Duration, min: Duration, max: Duration, words: &str| {
                    if value < min || value > max {
                        Err(invalid(at(field), format!("must be {words}")))
                    } else {
                        Ok(())
                    }
                };
            let s = Duration::from_secs;
            bounded(
                "jwks_timeout",
                jwks.timeout,
                Duration::from_millis(1),
                s(60),
                "more than 0 and at most 60s",
            )?;
            bounded(
                "jwks_cache_ttl",
                jwks.cache_ttl,
                s(1),
                s(86_400),
                "between 1s and 24h",
            )?;
            // A cooldown of 0 would let forged kids trigger one fetch each.
            bounded(
                "jwks_refetch_cooldown",
                jwks.refetch_cooldown,
                s(1),
                s(3_600),
                "between 1s and 1h",
            )?;
            bounded(
                "jwks_stale_for",
                jwks.stale_for,
                s(0),
                s(30 * 86_400),
                "at most 30d",
            )?;
            KeySource::Jwks(jwks)
        }
        (None, Some(secret)) => {
            if secret.len() < 32 {
                return Err(invalid(
                    at("secret"),
                    "must be at least 32 bytes (HS256 keys shorter than the hash are guessable)",
                ));
            }
            KeySource::Secret(KeySecret::new(secret))
        }
    };
    let allowed = match keys {
        KeySource::Jwks(_) => ASYMMETRIC,
        KeySource::Secret(_) => SYMMETRIC,
    };
    let names = raw.algorithms.unwrap_or_else(|| match keys {
        KeySource::Jwks(_) => vec!["RS256".into()],
        KeySource::Secret(_) => vec!["HS256".into()],
    });
    if names.is_empty() {
        return Err(invalid(
            at("algorithms"),
            "must list at least one algorithm",
        ));
    }
    let mut algorithms = Vec::new();
    for (j, name) in names.iter().enumerate() {
        let alg = Algorithm::from_str(name)
            .ok()
            .filter(|a| allowed.contains(a));
        let Some(alg) = alg else {
            let kind = match keys {
                KeySource::Jwks(_) => "a JWKS issuer allows RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
                KeySource::Secret(_) => "a secret issuer allows HS256, HS384, HS512",
            };
            return Err(invalid(
                format!("issuers[{i}].algorithms[{j}]"),
                format!("{name:?} is not allowed: {kind}"),
            ));
        };
        algorithms.push(alg);
    }
    Ok(IssuerSettings {
        name: raw.name,
        issuer: raw.issuer,
        keys,
        audiences: raw.audiences,
        authorized_parties: raw.authorized_parties,
        algorithms,
        leeway: {
            let leeway = parse_duration(&at("leeway"), &raw.leeway)?;
            if leeway > Duration::from_secs(300) {
                return Err(invalid(
                    at("leeway"),
                    "must be at most 5m: clock skew larger than that is a broken clock",
                ));
            }
            leeway
        },
        roles_claim: raw
            .roles_claim
            .parse()
            .map_err(|e: String| invalid(at("roles_claim"), e))?,
        client_id_claim: raw
            .client_id_claim
            .parse()
            .map_err(|e: String| invalid(at("client_id_claim"), e))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [ably]
        api_key = "appId.keyId:topsecretvalue"
        [[issuers]]
        name = "clerk"
        issuer = "https://clerk.example.com"
        jwks_url = "https://clerk.example.com/.well-known/jwks.json"
    "#;

    fn err(text: &str) -> String {
        Settings::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let s = Settings::from_toml(MINIMAL).unwrap();
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.server.session_cookies, vec!["__session"]);
        assert_eq!(s.ably.default_ttl, Duration::from_secs(3600));
        assert_eq!(s.ably.max_ttl, ABLY_MAX_TTL);
        assert_eq!(s.ably.token_format, TokenFormat::TokenRequest);
        let issuer = &s.issuers[0];
        assert_eq!(issuer.algorithms, vec![Algorithm::RS256]);
        assert_eq!(issuer.leeway, Duration::from_secs(5));
        assert_eq!(issuer.client_id_claim.as_str(), "/sub");
        let KeySource::Jwks(jwks) = &issuer.keys else {
            panic!("expected a JWKS issuer")
        };
        assert_eq!(jwks.cache_ttl, Duration::from_secs(600));
        assert_eq!(jwks.refetch_cooldown, Duration::from_secs(30));
        assert_eq!(jwks.stale_for, Duration::from_secs(86400));
        assert_eq!(jwks.timeout, Duration::from_secs(5));
    }

    #[test]
    fn unknown_keys_are_errors_that_name_them() {
        let e = err(&format!("{MINIMAL}\n[policy]\npaht = \"x\""));
        assert!(e.contains("paht"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let e = err(&MINIMAL.replace(
            "https://clerk.example.com/.well",
            "http://clerk.example.com/.well",
        ));
        assert!(e.starts_with("issuers[0].jwks_url:"), "{e}");
        let e = err(&format!("{MINIMAL}\n[server]\nbind = \"nowhere\""));
        assert!(e.starts_with("server.bind:"), "{e}");
        let e = err(&MINIMAL.replace("[ably]", "[ably]\nmax_ttl = \"48h\""));
        assert!(e.starts_with("ably.max_ttl:"), "{e}");
        let e = err(&MINIMAL.replace("[ably]", "[ably]\ndefault_ttl = \"soon\""));
        assert!(e.starts_with("ably.default_ttl:"), "{e}");
        let e = err(&format!("{MINIMAL}algorithms = [\"HS256\"]"));
        assert!(e.starts_with("issuers[0].algorithms[0]:"), "{e}");
        let e = err(&format!("{MINIMAL}roles_claim = \"metadata.role\""));
        assert!(e.starts_with("issuers[0].roles_claim:"), "{e}");
    }

    #[test]
    fn jwks_timings_are_bounded() {
        let e = err(&format!("{MINIMAL}jwks_refetch_cooldown = \"0s\""));
        assert!(e.starts_with("issuers[0].jwks_refetch_cooldown:"), "{e}");
        let e = err(&format!("{MINIMAL}jwks_stale_for = \"500000000y\""));
        assert!(e.starts_with("issuers[0].jwks_stale_for:"), "{e}");
        let e = err(&format!("{MINIMAL}jwks_timeout = \"10m\""));
        assert!(e.starts_with("issuers[0].jwks_timeout:"), "{e}");
        let e = err(&format!("{MINIMAL}leeway = \"1h\""));
        assert!(e.starts_with("issuers[0].leeway:"), "{e}");
    }

    #[test]
    fn the_secret_never_appears_in_errors_or_debug() {
        let e = err(&MINIMAL.replace("appId.keyId:topsecretvalue", "appIdkeyId:topsecretvalue"));
        assert!(e.starts_with("ably.api_key:"), "{e}");
        assert!(!e.contains("topsecretvalue"), "{e}");
        let s = Settings::from_toml(MINIMAL).unwrap();
        assert!(!format!("{s:?}").contains("topsecretvalue"));
        let e = err(&MINIMAL.replace("[ably]", "[ably]\ntoken_format = 7"));
        assert!(!e.contains("topsecretvalue"), "{e}");
    }

    #[test]
    fn a_syntax_error_names_the_line_but_never_quotes_it() {
        for broken in [
            "[ably]\napi_key = \"appId.keyId:TOPSECRETVALUE\n",
            "[ably]\napi_key = \"appId.keyId:TOPSECRETVALUE\" x\n",
            "[ably]\napi_key = \"appId.keyId:TOPSECRETVALUE\"\napi_key = \"appId.keyId:TOPSECRETVALUE\"\n",
        ] {
            let e = err(broken);
            assert!(!e.contains("TOPSECRET"), "{e}");
            assert!(e.contains("line 2") || e.contains("line 3"), "{e}");
        }
    }

    #[test]
    fn missing_key_says_how_to_set_it() {
        let e = err(&MINIMAL.replace("api_key = \"appId.keyId:topsecretvalue\"", ""));
        assert!(e.contains("ABLY_API_KEY"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file_and_ably_api_key_is_honoured() {
        let dir = std::env::temp_dir().join(format!("tokend-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, MINIMAL).unwrap();
        let env = vec![
            (
                "ABLY_API_KEY".to_string(),
                "app.other:envsecret".to_string(),
            ),
            (
                "ABLY_TOKEND_SERVER__BIND".to_string(),
                "0.0.0.0:9999".to_string(),
            ),
            (
                "ABLY_TOKEND_ABLY__DEFAULT_TTL".to_string(),
                "15m".to_string(),
            ),
            (
                "ABLY_TOKEND_SERVER__CORS_ALLOWED_ORIGINS".to_string(),
                "https://a.example,https://b.example".to_string(),
            ),
        ];
        let s = Settings::load_from(&file, true, &env).unwrap();
        assert_eq!(s.server.bind.to_string(), "0.0.0.0:9999");
        assert_eq!(s.ably.default_ttl, Duration::from_secs(900));
        assert_eq!(s.ably.signing_key().name(), "app.other");
        assert_eq!(
            s.server.cors_allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
        let bad = vec![("ABLY_TOKEND_SERVER__BINDD".to_string(), "x".to_string())];
        let e = Settings::load_from(&file, true, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bindd"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn secret_issuers_need_a_long_secret_and_hs_algorithms() {
        let text = r#"
            [ably]
            api_key = "a.b:c"
            [[issuers]]
            name = "dev"
            issuer = "ably-tokend-dev"
            secret = "short"
        "#;
        assert!(err(text).starts_with("issuers[0].secret:"));
        let ok = text.replace("\"short\"", "\"0123456789abcdef0123456789abcdef\"");
        let s = Settings::from_toml(&ok).unwrap();
        assert_eq!(s.issuers[0].algorithms, vec![Algorithm::HS256]);
        let rs = format!("{ok}algorithms = [\"RS256\"]");
        assert!(err(&rs).starts_with("issuers[0].algorithms[0]:"));
    }

    #[test]
    fn claim_pointers_follow_rfc_6901() {
        assert!("/metadata/role".parse::<ClaimPointer>().is_ok());
        assert!("/https:~1~1example.com~1roles"
            .parse::<ClaimPointer>()
            .is_ok());
        assert!("role".parse::<ClaimPointer>().is_err());
        assert!("/a~2".parse::<ClaimPointer>().is_err());
        let p: ClaimPointer = "/https:~1~1example.com~1roles".parse().unwrap();
        let claims = serde_json::json!({"https://example.com/roles": ["admin"]});
        assert_eq!(p.lookup(&claims), Some(&serde_json::json!(["admin"])));
    }
}
