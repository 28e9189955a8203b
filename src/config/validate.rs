//! From what the file says to typed settings. Sections are checked in file
//! order and each error names the field it is about (`server.bind: ...`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::issuer::validate_issuer;
use super::raw::{RawAbly, RawBroker, RawLog, RawPolicy, RawServer, RawSettings};
use super::{
    invalid, parse_duration, AblySettings, BrokerSettings, ConfigError, IssuerSettings,
    LogSettings, PolicySettings, ServerSettings, Settings, ABLY_MAX_TTL,
};
use crate::signing::ApiKey;

/// Largest request body the sidecar can be told to accept.
const MAX_BODY_BYTES_LIMIT: usize = 1024 * 1024;

pub(super) fn settings(raw: RawSettings) -> Result<Settings, ConfigError> {
    let server = server(raw.server)?;
    let ably = ably(raw.ably)?;
    let mut issuers = Vec::with_capacity(raw.issuers.len());
    for (i, issuer) in raw.issuers.into_iter().enumerate() {
        let validated = validate_issuer(i, issuer)?;
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
    if earlier.iter().any(|other| other.issuer == issuer.issuer) {
        return Err(invalid(
            format!("issuers[{i}].issuer"),
            format!("{:?} is configured twice", issuer.issuer),
        ));
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

pub(super) fn ably(raw: RawAbly) -> Result<AblySettings, ConfigError> {
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
        // The same key named twice (file and ABLY_API_KEY) is one key.
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
    let (default_ttl, max_ttl) = ttls(&raw)?;
    Ok(AblySettings {
        keys,
        token_format: raw.token_format,
        default_ttl,
        max_ttl,
    })
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

pub(super) fn broker(raw: RawBroker) -> Result<BrokerSettings, ConfigError> {
    Ok(BrokerSettings {
        bind: parse_bind("broker.bind", &raw.bind)?,
        history_max_messages: raw.history_max_messages,
        history_max_age: parse_duration("broker.history_max_age", &raw.history_max_age)?,
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
