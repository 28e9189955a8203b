//! One `[[issuers]]` table: its kind, where its keys or secrets come from,
//! which algorithms it may sign with, which cookies it owns, where its claims
//! are read, and how its timings are bounded.
//! Errors name the table by index: `issuers[2].jwks_url: ...`.

use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::raw::RawIssuer;
use super::remote::{self, RawIntrospection, RawSessionEndpoint};
use super::validate::EnvLookup;
use super::{
    invalid, parse_duration, AuthjsIssuer, ConfigError, CookieFormat, IntrospectionSettings,
    IssuerKind, IssuerSettings, JwksSettings, JwtIssuer, KeySource, NamedSecret,
    SessionEndpointSettings,
};
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

/// Shorter HMAC keys than the hash output are guessable (RFC 7518 §3.2);
/// the same floor holds for the secrets Auth.js derives its keys from.
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

pub(super) fn validate_issuer(
    i: usize,
    raw: RawIssuer,
    env: EnvLookup<'_>,
) -> Result<IssuerSettings, ConfigError> {
    let at = At(i);
    if raw.name.trim().is_empty() {
        return Err(invalid(at.field("name"), "must not be empty"));
    }
    let leeway = leeway(&at, &raw.leeway)?;
    let roles_claim = claim(&at, "roles_claim", &raw.roles_claim)?;
    let client_id_claim = claim(&at, "client_id_claim", &raw.client_id_claim)?;
    let mut cookies = cookies(&at, raw.cookies.as_deref())?;
    let kind = match raw.kind.as_deref() {
        None | Some("jwt") => {
            refuse(&at, "jwt", &remote_fields(&raw))?;
            IssuerKind::Jwt(Box::new(jwt_issuer(&at, &raw, &cookies)?))
        }
        Some("session_endpoint") => {
            let settings = session_endpoint_issuer(&at, i, &raw)?;
            // Its forward_cookies route requests to it like other kinds' cookies.
            cookies = settings.forward_cookies.clone();
            IssuerKind::SessionEndpoint(settings)
        }
        Some("introspection") => {
            IssuerKind::Introspection(introspection_issuer(&at, i, &raw, env)?)
        }
        Some("authjs") => {
            refuse(&at, "authjs", &remote_fields(&raw))?;
            if cookies.is_empty() {
                return Err(invalid(
                    at.field("cookies"),
                    "an authjs issuer reads sessions from cookies: list them, e.g. \
                     [\"authjs.session-token\", \"__Secure-authjs.session-token\"]",
                ));
            }
            IssuerKind::Authjs(authjs_issuer(&at, &raw, env)?)
        }
        Some(other) => {
            return Err(invalid(
                at.field("kind"),
                format!(
                    "{other:?} is not a kind of issuer: use \"jwt\", \"authjs\", \
                     \"session_endpoint\" or \"introspection\""
                ),
            ))
        }
    };
    Ok(IssuerSettings {
        name: raw.name,
        kind,
        cookies,
        leeway,
        roles_claim,
        client_id_claim,
    })
}

fn jwt_issuer(at: &At, raw: &RawIssuer, cookies: &[String]) -> Result<JwtIssuer, ConfigError> {
    if raw.secret_env.is_some() {
        return Err(invalid(
            at.field("secret_env"),
            "applies to kind = \"authjs\" only: a jwt issuer takes jwks_url or secret",
        ));
    }
    if raw.issuer.trim().is_empty() {
        return Err(invalid(
            at.field("issuer"),
            "must not be empty: it is compared exactly with the token's iss",
        ));
    }
    let keys = key_source(at, raw)?;
    let algorithms = algorithms(at, &keys, raw.algorithms.clone())?;
    let cookie_format = cookie_format(at, raw.cookie_format.as_deref(), cookies)?;
    Ok(JwtIssuer {
        issuer: raw.issuer.value.clone(),
        keys,
        audiences: raw.audiences.value.clone(),
        authorized_parties: raw.authorized_parties.value.clone(),
        algorithms,
        cookie_format,
    })
}

/// `"plain"` (the default) or `"supabase"`; only with `cookies` to apply to.
fn cookie_format(
    at: &At,
    format: Option<&str>,
    cookies: &[String],
) -> Result<CookieFormat, ConfigError> {
    let format = match format {
        None | Some("plain") => CookieFormat::Plain,
        Some("supabase") => CookieFormat::Supabase,
        Some(other) => {
            return Err(invalid(
                at.field("cookie_format"),
                format!(
                    "{other:?} is not a cookie format: use \"plain\" (the cookie holds the JWT) \
                     or \"supabase\" (@supabase/ssr's sb-<project-ref>-auth-token)"
                ),
            ))
        }
    };
    if format == CookieFormat::Supabase && cookies.is_empty() {
        return Err(invalid(
            at.field("cookie_format"),
            "\"supabase\" describes the issuer's cookies: list them in cookies, \
             e.g. [\"sb-your-project-ref-auth-token\"]",
        ));
    }
    Ok(format)
}

/// An Auth.js issuer's secrets, read from the environment now; the fields
/// of JWT issuers are errors here, so a table is never half one kind.
fn authjs_issuer(
    at: &At,
    raw: &RawIssuer,
    env: EnvLookup<'_>,
) -> Result<AuthjsIssuer, ConfigError> {
    let foreign = [
        ("issuer", raw.issuer.given),
        ("cookie_format", raw.cookie_format.is_some()),
        ("jwks_url", raw.jwks_url.is_some()),
        ("audiences", raw.audiences.given),
        ("authorized_parties", raw.authorized_parties.given),
        ("algorithms", raw.algorithms.is_some()),
        ("jwks_cache_ttl", raw.jwks_cache_ttl.given),
        ("jwks_refetch_cooldown", raw.jwks_refetch_cooldown.given),
        ("jwks_stale_for", raw.jwks_stale_for.given),
        ("jwks_timeout", raw.jwks_timeout.given),
    ];
    if raw.secret.is_some() {
        return Err(invalid(
            at.field("secret"),
            "an authjs issuer's secrets come from the environment only: \
             name the variables in secret_env (e.g. [\"AUTH_SECRET\"])",
        ));
    }
    if let Some((field, _)) = foreign.iter().find(|(_, set)| *set) {
        return Err(invalid(
            at.field(field),
            "does not apply to kind = \"authjs\" (its cookies are decrypted with the \
             secrets named in secret_env)",
        ));
    }
    let names = raw.secret_env.as_deref().unwrap_or_default();
    if names.is_empty() {
        return Err(invalid(
            at.field("secret_env"),
            "name the environment variables holding the app's AUTH_SECRET (newest first), \
             e.g. [\"AUTH_SECRET\"]",
        ));
    }
    let mut secrets: Vec<NamedSecret> = Vec::with_capacity(names.len());
    for (j, name) in names.iter().enumerate() {
        let field = at.field(&format!("secret_env[{j}]"));
        if name.trim().is_empty() {
            return Err(invalid(field, "must name an environment variable"));
        }
        if secrets.iter().any(|s| &s.env == name) {
            return Err(invalid(field, format!("{name} is listed twice")));
        }
        let value = env(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid(&field, format!("environment variable {name} is not set")))?;
        if value.len() < MIN_SECRET_BYTES {
            return Err(invalid(
                field,
                format!(
                    "environment variable {name} holds fewer than {MIN_SECRET_BYTES} bytes: \
                     generate a secret with `npx auth secret` or `openssl rand -base64 32`"
                ),
            ));
        }
        secrets.push(NamedSecret {
            env: name.clone(),
            secret: KeySecret::new(value),
        });
    }
    Ok(AuthjsIssuer { secrets })
}

/// The fields only `jwt` issuers take, and whether this table sets each.
fn jwt_fields(raw: &RawIssuer) -> [(&'static str, bool); 10] {
    [
        ("issuer", raw.issuer.given),
        ("jwks_url", raw.jwks_url.is_some()),
        ("secret", raw.secret.is_some()),
        ("audiences", raw.audiences.given),
        ("authorized_parties", raw.authorized_parties.given),
        ("algorithms", raw.algorithms.is_some()),
        ("jwks_cache_ttl", raw.jwks_cache_ttl.given),
        ("jwks_refetch_cooldown", raw.jwks_refetch_cooldown.given),
        ("jwks_stale_for", raw.jwks_stale_for.given),
        ("jwks_timeout", raw.jwks_timeout.given),
    ]
}

/// The fields only the look-up kinds take, and whether this table sets each.
fn remote_fields(raw: &RawIssuer) -> [(&'static str, bool); 8] {
    [
        ("url", raw.url.is_some()),
        ("forward_cookies", raw.forward_cookies.is_some()),
        ("forward_authorization", raw.forward_authorization.is_some()),
        ("expires_pointer", raw.expires_pointer.is_some()),
        ("cache_ttl", raw.cache_ttl.is_some()),
        ("timeout", raw.timeout.is_some()),
        ("client_id", raw.client_id.is_some()),
        ("client_secret_env", raw.client_secret_env.is_some()),
    ]
}

/// The first of `fields` this table sets is an error naming it: a table is
/// never half one kind.
fn refuse(at: &At, kind: &str, fields: &[(&'static str, bool)]) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(invalid(
            at.field(field),
            format!("does not apply to kind = \"{kind}\""),
        )),
        None => Ok(()),
    }
}

/// `leeway` on a look-up kind would be silently ignored: the endpoint decides
/// whether a session is live, and its expiry bounds the cache strictly.
fn no_leeway(at: &At, kind: &str, raw: &RawIssuer) -> Result<(), ConfigError> {
    if raw.leeway.given {
        return Err(invalid(
            at.field("leeway"),
            format!(
                "does not apply to kind = \"{kind}\": the endpoint decides whether the session \
                 is live, and the expiry it answers is read strictly, with no leeway"
            ),
        ));
    }
    Ok(())
}

/// `kind = "session_endpoint"`: the fields of other kinds refused, the rest
/// checked in `remote.rs` with the documented defaults.
fn session_endpoint_issuer(
    at: &At,
    i: usize,
    raw: &RawIssuer,
) -> Result<SessionEndpointSettings, ConfigError> {
    const KIND: &str = "session_endpoint";
    if raw.cookies.is_some() {
        return Err(invalid(
            at.field("cookies"),
            "does not apply to kind = \"session_endpoint\": name the cookies to forward in \
             forward_cookies",
        ));
    }
    refuse(at, KIND, &jwt_fields(raw))?;
    no_leeway(at, KIND, raw)?;
    refuse(
        at,
        KIND,
        &[
            ("secret_env", raw.secret_env.is_some()),
            ("client_id", raw.client_id.is_some()),
            ("client_secret_env", raw.client_secret_env.is_some()),
        ],
    )?;
    let defaults = RawSessionEndpoint::default();
    remote::session_endpoint(
        i,
        RawSessionEndpoint {
            url: raw.url.clone(),
            forward_cookies: raw.forward_cookies.clone().unwrap_or_default(),
            forward_authorization: raw.forward_authorization.unwrap_or_default(),
            expires_pointer: raw
                .expires_pointer
                .clone()
                .unwrap_or(defaults.expires_pointer),
            cache_ttl: raw.cache_ttl.clone().unwrap_or(defaults.cache_ttl),
            timeout: raw.timeout.clone().unwrap_or(defaults.timeout),
        },
    )
}

/// `kind = "introspection"`: as `session_endpoint_issuer`, with the client
/// secret read from the environment now.
fn introspection_issuer(
    at: &At,
    i: usize,
    raw: &RawIssuer,
    env: EnvLookup<'_>,
) -> Result<IntrospectionSettings, ConfigError> {
    const KIND: &str = "introspection";
    refuse(at, KIND, &jwt_fields(raw))?;
    no_leeway(at, KIND, raw)?;
    refuse(
        at,
        KIND,
        &[
            ("cookies", raw.cookies.is_some()),
            ("secret_env", raw.secret_env.is_some()),
            ("forward_cookies", raw.forward_cookies.is_some()),
            ("forward_authorization", raw.forward_authorization.is_some()),
            ("expires_pointer", raw.expires_pointer.is_some()),
        ],
    )?;
    let defaults = RawIntrospection::default();
    remote::introspection(
        i,
        RawIntrospection {
            url: raw.url.clone(),
            client_id: raw.client_id.clone(),
            client_secret_env: raw.client_secret_env.clone(),
            cache_ttl: raw.cache_ttl.clone().unwrap_or(defaults.cache_ttl),
            timeout: raw.timeout.clone().unwrap_or(defaults.timeout),
        },
        env,
    )
}

/// Cookie names (RFC 6265 §4.1.1 tokens, as browsers and Auth.js write
/// them), each once.
fn cookies(at: &At, names: Option<&[String]>) -> Result<Vec<String>, ConfigError> {
    let names = names.unwrap_or_default();
    for (j, name) in names.iter().enumerate() {
        let field = at.field(&format!("cookies[{j}]"));
        if !is_cookie_name(name) {
            return Err(invalid(field, format!("{name:?} is not a cookie name")));
        }
        if names[..j].contains(name) {
            return Err(invalid(field, format!("{name:?} is listed twice")));
        }
    }
    Ok(names.to_vec())
}

/// Letters, digits and `_-.`: what session cookies are named with.
pub(super) fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
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
