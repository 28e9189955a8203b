//! One `[[issuers]]` table: where its keys come from, which algorithms it may
//! sign with, where its claims are read, and how its timings are bounded.
//! Errors name the table by index: `issuers[2].jwks_url: ...`.

use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::raw::RawIssuer;
use super::{invalid, parse_duration, ConfigError, IssuerSettings, JwksSettings, KeySource};
use crate::policy::ClaimPointer;
use crate::signing::KeySecret;

/// What a JWKS (public key) issuer may sign with.
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
/// What a shared-secret issuer may sign with.
const SYMMETRIC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Shorter HMAC keys than the hash output are guessable (RFC 7518 §3.2).
const MIN_SECRET_BYTES: usize = 32;
/// Clock skew larger than this is a broken clock, not skew.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Field paths inside the `i`th issuer table.
struct At(usize);

impl At {
    fn field(&self, field: &str) -> String {
        format!("issuers[{}].{field}", self.0)
    }
}

pub(super) fn validate_issuer(i: usize, raw: RawIssuer) -> Result<IssuerSettings, ConfigError> {
    let at = At(i);
    check_names(&at, &raw)?;
    let keys = key_source(&at, &raw)?;
    let algorithms = algorithms(&at, &keys, raw.algorithms)?;
    let leeway = leeway(&at, &raw.leeway)?;
    let roles_claim = claim(&at, "roles_claim", &raw.roles_claim)?;
    let client_id_claim = claim(&at, "client_id_claim", &raw.client_id_claim)?;
    Ok(IssuerSettings {
        name: raw.name,
        issuer: raw.issuer,
        keys,
        audiences: raw.audiences,
        authorized_parties: raw.authorized_parties,
        algorithms,
        leeway,
        roles_claim,
        client_id_claim,
    })
}

fn check_names(at: &At, raw: &RawIssuer) -> Result<(), ConfigError> {
    if raw.name.trim().is_empty() {
        return Err(invalid(at.field("name"), "must not be empty"));
    }
    if raw.issuer.trim().is_empty() {
        return Err(invalid(
            at.field("issuer"),
            "must not be empty: it is compared exactly with the token's iss",
        ));
    }
    Ok(())
}

/// At most one of `jwks_url` and `secret`; with neither, the key set is found
/// by OIDC discovery (OpenID Connect Discovery 1.0 §4) from the issuer.
fn key_source(at: &At, raw: &RawIssuer) -> Result<KeySource, ConfigError> {
    match (&raw.jwks_url, &raw.secret) {
        (Some(_), Some(_)) => Err(invalid(
            at.field("secret"),
            "set jwks_url or secret, not both (an issuer uses one kind of key)",
        )),
        (None, None) => {
            // §4: the document sits at the issuer with any trailing slash
            // removed, followed by /.well-known/openid-configuration.
            let url = format!(
                "{}/.well-known/openid-configuration",
                raw.issuer.trim_end_matches('/')
            );
            Ok(KeySource::Discovery(jwks(at, "issuer", &url, raw)?))
        }
        (Some(url), None) => Ok(KeySource::Jwks(jwks(at, "jwks_url", url, raw)?)),
        (None, Some(secret)) => {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(invalid(
                    at.field("secret"),
                    format!("must be at least {MIN_SECRET_BYTES} bytes (HS256 keys shorter than the hash are guessable)"),
                ));
            }
            Ok(KeySource::Secret(KeySecret::new(secret.clone())))
        }
    }
}

/// The key set's settings; `field` names where `url` came from (`jwks_url`,
/// or `issuer` for a discovery document).
fn jwks(at: &At, field: &str, url: &str, raw: &RawIssuer) -> Result<JwksSettings, ConfigError> {
    let discovery = if field == "issuer" {
        " (with neither jwks_url nor secret, OIDC discovery fetches {issuer}/.well-known/openid-configuration)"
    } else {
        ""
    };
    let url = reqwest::Url::parse(url).map_err(|e| {
        let shown = if discovery.is_empty() {
            url
        } else {
            &raw.issuer
        };
        invalid(
            at.field(field),
            format!("{shown:?} is not a URL: {e}{discovery}"),
        )
    })?;
    match url.scheme() {
        "https" => {}
        // A JWKS served by a process on this machine cannot be intercepted.
        "http" if is_loopback_host(&url) => {}
        _ => {
            return Err(invalid(
                at.field(field),
                format!("must be https (plain http is allowed only on loopback){discovery}"),
            ))
        }
    }
    let duration = |field: &str, text: &str| parse_duration(&at.field(field), text);
    let jwks = JwksSettings {
        url,
        cache_ttl: duration("jwks_cache_ttl", &raw.jwks_cache_ttl)?,
        refetch_cooldown: duration("jwks_refetch_cooldown", &raw.jwks_refetch_cooldown)?,
        stale_for: duration("jwks_stale_for", &raw.jwks_stale_for)?,
        timeout: duration("jwks_timeout", &raw.jwks_timeout)?,
    };
    check_jwks_timings(at, &jwks)?;
    Ok(jwks)
}

fn check_jwks_timings(at: &At, jwks: &JwksSettings) -> Result<(), ConfigError> {
    let bounded = |field: &str, value: Duration, min: Duration, max: Duration, words: &str| {
        if value < min || value > max {
            Err(invalid(at.field(field), format!("must be {words}")))
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
    )
}

/// Whether `url` names this machine, where plain http cannot be intercepted.
pub(crate) fn is_loopback_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// An explicit allow-list that matches the kind of key, so a token cannot
/// choose HS256 against a public key (RFC 8725 §3.1).
fn algorithms(
    at: &At,
    keys: &KeySource,
    names: Option<Vec<String>>,
) -> Result<Vec<Algorithm>, ConfigError> {
    let (allowed, default, kind) = match keys {
        KeySource::Jwks(_) | KeySource::Discovery(_) => (
            ASYMMETRIC,
            "RS256",
            "a JWKS issuer allows RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
        ),
        KeySource::Secret(_) => (
            SYMMETRIC,
            "HS256",
            "a secret issuer allows HS256, HS384, HS512",
        ),
    };
    let names = names.unwrap_or_else(|| vec![default.into()]);
    if names.is_empty() {
        return Err(invalid(
            at.field("algorithms"),
            "must list at least one algorithm",
        ));
    }
    names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            Algorithm::from_str(name)
                .ok()
                .filter(|a| allowed.contains(a))
                .ok_or_else(|| {
                    invalid(
                        at.field(&format!("algorithms[{j}]")),
                        format!("{name:?} is not allowed: {kind}"),
                    )
                })
        })
        .collect()
}

fn leeway(at: &At, text: &str) -> Result<Duration, ConfigError> {
    let leeway = parse_duration(&at.field("leeway"), text)?;
    if leeway > MAX_LEEWAY {
        return Err(invalid(
            at.field("leeway"),
            format!(
                "must be at most {}: clock skew larger than that is a broken clock",
                humantime::format_duration(MAX_LEEWAY)
            ),
        ));
    }
    Ok(leeway)
}

fn claim(at: &At, field: &str, text: &str) -> Result<ClaimPointer, ConfigError> {
    text.parse()
        .map_err(|e: String| invalid(at.field(field), e))
}
