//! From what the file says to typed settings. Sections are checked in file
//! order and each error names the field it is about (`server.bind: ...`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::issuer::validate_issuer;
use super::raw::{RawAbly, RawBroker, RawKey, RawLog, RawPolicy, RawServer, RawSettings};
use super::{
    invalid, parse_duration, AblySettings, BrokerSettings, ConfigError, IssuerSettings,
    LogSettings, PolicySettings, ServerSettings, Settings, ABLY_MAX_TTL,
};
use crate::capability::Capability;
use crate::signing::ApiKey;

/// Reads one environment variable (`[[ably.keys]] key_env`, `[[issuers]]
/// secret_env`); the process
/// environment when loading, a fixed list in tests.
pub(super) type EnvLookup<'e> = &'e dyn Fn(&str) -> Option<String>;

/// Largest request body the sidecar can be told to accept.
const MAX_BODY_BYTES_LIMIT: usize = 1024 * 1024;

/// Longest `broker.presence_grace`: the connection-state TTL (CD2f), past
/// which a client cannot resume the connection its members belong to.
const MAX_PRESENCE_GRACE: Duration = Duration::from_secs(120);
/// Bounds of `broker.max_idle_interval`: ably-js waits that long plus
/// `realtimeRequestTimeout` for a sign of life (RTN23a), so much shorter
/// would make the broker ping constantly and much longer would leave dead
/// members present for minutes.
const MIN_IDLE_INTERVAL: Duration = Duration::from_millis(100);
const MAX_IDLE_INTERVAL: Duration = Duration::from_secs(300);
/// Bounds of `server.keep_alive`.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(3600);

pub(super) fn settings(raw: RawSettings, env: EnvLookup<'_>) -> Result<Settings, ConfigError> {
    let server = server(raw.server)?;
    let ably = ably(raw.ably, env)?;
    let mut issuers = Vec::with_capacity(raw.issuers.len());
    for (i, issuer) in raw.issuers.into_iter().enumerate() {
        let validated = validate_issuer(i, issuer, env)?;
        check_unique(i, &issuers, &validated)?;
        issuers.push(validated);
    }
    Ok(Settings {
        server,
        ably,
        issuers,
        policy: policy(raw.policy),
        broker: broker(raw.broker)?,
        log: log(raw.log)?,
    })
}

/// Tokens name their issuer and the logs and metrics name the table, so
/// neither may be ambiguous.
fn check_unique(
    i: usize,
    earlier: &[IssuerSettings],
    issuer: &IssuerSettings,
) -> Result<(), ConfigError> {
    if let Some(jwt) = issuer.jwt() {
        if earlier
            .iter()
            .any(|other| other.jwt().is_some_and(|o| o.issuer == jwt.issuer))
        {
            return Err(invalid(
                format!("issuers[{i}].issuer"),
                format!("{:?} is configured twice", jwt.issuer),
            ));
        }
    }
    // A Bearer value that is not a JWT goes to the one issuer that takes it.
    if issuer.takes_opaque_bearer() {
        if let Some(k) = earlier.iter().position(IssuerSettings::takes_opaque_bearer) {
            let field = match issuer.kind {
                super::IssuerKind::Introspection(_) => "kind",
                _ => "forward_authorization",
            };
            return Err(invalid(
                format!("issuers[{i}].{field}"),
                format!(
                    "issuers[{k}] already takes Bearer values that are not JWTs: at most one \
                     issuer may (an introspection issuer, or a session_endpoint with \
                     forward_authorization = true)"
                ),
            ));
        }
    }
    // A cookie is routed to the one issuer that lists it.
    for (j, cookie) in issuer.cookies.iter().enumerate() {
        if let Some(k) = earlier.iter().position(|o| o.cookies.contains(cookie)) {
            return Err(invalid(
                format!("issuers[{i}].{}[{j}]", issuer.cookies_field()),
                format!(
                    "{cookie:?} is already listed by issuers[{k}]: a cookie belongs to one issuer"
                ),
            ));
        }
    }
    if earlier.iter().any(|other| other.name == issuer.name) {
        return Err(invalid(
            format!("issuers[{i}].name"),
            format!("{:?} is used twice", issuer.name),
        ));
    }
    Ok(())
}

fn parse_bind(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not an address like \"127.0.0.1:8080\" or \"[::1]:8080\""),
        )
    })
}

/// Each entry must be a bare origin (`scheme://host[:port]`), the form a
/// browser sends in `Origin` and the CORS layer compares exactly.
pub(crate) fn check_cors_origins(origins: &[String]) -> Result<(), ConfigError> {
    for (i, origin) in origins.iter().enumerate() {
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
    Ok(())
}

pub(super) fn server(raw: RawServer) -> Result<ServerSettings, ConfigError> {
    check_cors_origins(&raw.cors_allowed_origins)?;
    for (i, cookie) in raw.session_cookies.iter().enumerate() {
        if !super::issuer::is_cookie_name(cookie) {
            return Err(invalid(
                format!("server.session_cookies[{i}]"),
                format!("{cookie:?} is not a cookie name"),
            ));
        }
    }
    if raw.max_body_bytes == 0 || raw.max_body_bytes > MAX_BODY_BYTES_LIMIT {
        return Err(invalid(
            "server.max_body_bytes",
            format!("must be between 1 and {MAX_BODY_BYTES_LIMIT}"),
        ));
    }
    if raw.rate_limit_per_second > 0 && raw.rate_limit_burst == 0 {
        return Err(invalid(
            "server.rate_limit_burst",
            "must be at least 1 when rate_limit_per_second is set",
        ));
    }
    let keep_alive = parse_duration("server.keep_alive", &raw.keep_alive)?;
    if !(MIN_KEEP_ALIVE..=MAX_KEEP_ALIVE).contains(&keep_alive) {
        return Err(invalid(
            "server.keep_alive",
            "must be between 1s and 1h: clients are told it in whole seconds, and an idle \
             connection held longer only holds a socket",
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
        keep_alive,
        workers: raw.workers,
    })
}

pub(super) fn ably(mut raw: RawAbly, env: EnvLookup<'_>) -> Result<AblySettings, ConfigError> {
    let tables = std::mem::take(&mut raw.keys);
    let api_key = raw.api_key.as_deref().filter(|k| !k.trim().is_empty());
    if !tables.is_empty() && (api_key.is_some() || !raw.api_keys.is_empty()) {
        // Merging would leave it unclear which key signs and what the
        // others may grant, so one form is used at a time.
        return Err(invalid(
            "ably.keys",
            "cannot be combined with ably.api_key, ably.api_keys or ABLY_API_KEY: \
             list every key as an [[ably.keys]] table (the first signs) and unset the others",
        ));
    }
    let mut keys = Vec::new();
    if let Some(key) = api_key {
        keys.push(
            key.parse::<ApiKey>()
                .map_err(|e| invalid("ably.api_key", e.to_string()))?,
        );
    }
    for (i, key) in raw.api_keys.iter().enumerate() {
        let key = key
            .parse::<ApiKey>()
            .map_err(|e| invalid(format!("ably.api_keys[{i}]"), e.to_string()))?;
        // The same key named twice (file and ABLY_API_KEY) is one key.
        if !keys.iter().any(|k: &ApiKey| k.name() == key.name()) {
            keys.push(key);
        }
    }
    for (i, table) in tables.into_iter().enumerate() {
        let key = key_table(i, table, env)?;
        if keys.iter().any(|k: &ApiKey| k.name() == key.name()) {
            return Err(invalid(
                format!("ably.keys[{i}]"),
                format!("key {} is listed twice", key.name()),
            ));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(invalid(
            "ably.api_key",
            "no Ably API key: set ABLY_API_KEY or ably.api_key (appId.keyId:secret), \
             or add an [[ably.keys]] table",
        ));
    }
    let (default_ttl, max_ttl) = ttls(&raw)?;
    Ok(AblySettings {
        keys,
        token_format: raw.token_format,
        default_ttl,
        max_ttl,
    })
}

/// One `[[ably.keys]]` table. Errors name the field and never the key text
/// or the variable's value.
fn key_table(i: usize, raw: RawKey, env: EnvLookup<'_>) -> Result<ApiKey, ConfigError> {
    let field = |name: &str| format!("ably.keys[{i}].{name}");
    let key = match (raw.key, raw.key_env) {
        (Some(text), None) => text
            .parse::<ApiKey>()
            .map_err(|e| invalid(field("key"), e.to_string()))?,
        (None, Some(var)) => {
            let text = env(&var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                invalid(
                    field("key_env"),
                    format!("the environment variable {var} is not set"),
                )
            })?;
            text.parse::<ApiKey>().map_err(|e| {
                invalid(
                    field("key_env"),
                    format!("the environment variable {var} does not hold a key: {e}"),
                )
            })?
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!("ably.keys[{i}]"),
                "set key or key_env, not both",
            ))
        }
        (None, None) => {
            return Err(invalid(
                format!("ably.keys[{i}]"),
                "set key_env (the name of an environment variable holding the key) or key",
            ))
        }
    };
    let Some(grants) = raw.capability else {
        return Ok(key);
    };
    let value = serde_json::to_value(grants).expect("a map of lists of strings is JSON");
    let capability =
        Capability::from_value(&value).map_err(|e| invalid(field("capability"), e.to_string()))?;
    Ok(key.with_capability(capability))
}

/// `(default_ttl, max_ttl)`: both more than 0, the default within the
/// maximum and the maximum within Ably's own.
pub(super) fn ttls(raw: &RawAbly) -> Result<(Duration, Duration), ConfigError> {
    let default_ttl = parse_duration("ably.default_ttl", &raw.default_ttl)?;
    let max_ttl = parse_duration("ably.max_ttl", &raw.max_ttl)?;
    if max_ttl.is_zero() || max_ttl > ABLY_MAX_TTL {
        return Err(invalid(
            "ably.max_ttl",
            format!(
                "must be more than 0 and at most {}h (Ably refuses longer tokens)",
                ABLY_MAX_TTL.as_secs() / 3600
            ),
        ));
    }
    if default_ttl.is_zero() || default_ttl > max_ttl {
        return Err(invalid(
            "ably.default_ttl",
            "must be more than 0 and at most ably.max_ttl",
        ));
    }
    Ok((default_ttl, max_ttl))
}

pub(super) fn policy(raw: RawPolicy) -> PolicySettings {
    PolicySettings {
        path: PathBuf::from(&raw.path),
        watch: raw.watch,
    }
}

/// A duration within `[min, max]`, or an error naming the field and the bounds.
fn bounded(field: &str, text: &str, min: Duration, max: Duration) -> Result<Duration, ConfigError> {
    let value = parse_duration(field, text)?;
    if value < min || value > max {
        return Err(invalid(
            field,
            format!(
                "{text:?} is out of range: it must be from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(value)
}

pub(super) fn broker(raw: RawBroker) -> Result<BrokerSettings, ConfigError> {
    Ok(BrokerSettings {
        bind: parse_bind("broker.bind", &raw.bind)?,
        history_max_messages: raw.history_max_messages,
        history_max_age: parse_duration("broker.history_max_age", &raw.history_max_age)?,
        presence_grace: bounded(
            "broker.presence_grace",
            &raw.presence_grace,
            Duration::ZERO,
            MAX_PRESENCE_GRACE,
        )?,
        max_idle_interval: bounded(
            "broker.max_idle_interval",
            &raw.max_idle_interval,
            MIN_IDLE_INTERVAL,
            MAX_IDLE_INTERVAL,
        )?,
    })
}

pub(super) fn log(raw: RawLog) -> Result<LogSettings, ConfigError> {
    // Checked here so that a typo is a configuration error, not a silent
    // fallback when logging starts.
    tracing_subscriber::EnvFilter::try_new(&raw.level)
        .map_err(|e| invalid("log.level", format!("{:?}: {e}", raw.level)))?;
    Ok(LogSettings {
        format: raw.format,
        level: raw.level,
    })
}
