//! The issuer kinds that ask another service who the caller is:
//! `session_endpoint` (the app's own session URL, for opaque sessions) and
//! `introspection` (RFC 7662 OAuth 2.0 token introspection). What the table
//! says (`Raw*`, with the documented defaults) is checked here into typed
//! settings; every error names the field (`issuers[1].url: ...`).

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, parse_duration, ConfigError};
use crate::policy::ClaimPointer;
use crate::signing::KeySecret;

/// Cookies one issuer may forward; a longer list is a mistake, not a need.
const MAX_FORWARD_COOKIES: usize = 16;
/// A look-up slower than this is an outage, whatever the setting says.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Revoking a session must take effect within this, however long the cache.
const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

/// `kind = "session_endpoint"` as written, with the documented defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct RawSessionEndpoint {
    pub(crate) url: Option<String>,
    pub(crate) forward_cookies: Vec<String>,
    pub(crate) forward_authorization: bool,
    pub(crate) expires_pointer: String,
    pub(crate) cache_ttl: String,
    pub(crate) timeout: String,
}

impl Default for RawSessionEndpoint {
    fn default() -> Self {
        RawSessionEndpoint {
            url: None,
            forward_cookies: Vec::new(),
            forward_authorization: false,
            // Auth.js answers `{user, expires}` with `expires` in RFC 3339.
            expires_pointer: "/expires".into(),
            cache_ttl: "30s".into(),
            timeout: "2s".into(),
        }
    }
}

/// `kind = "introspection"` as written, with the documented defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct RawIntrospection {
    pub(crate) url: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret_env: Option<String>,
    pub(crate) cache_ttl: String,
    pub(crate) timeout: String,
}

impl Default for RawIntrospection {
    fn default() -> Self {
        RawIntrospection {
            url: None,
            client_id: None,
            client_secret_env: None,
            cache_ttl: "30s".into(),
            timeout: "2s".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SessionEndpointSettings {
    pub(crate) url: reqwest::Url,
    /// Cookie names sent on (with their chunks `NAME.0`, `NAME.1` …); no other cookie is.
    pub(crate) forward_cookies: Vec<String>,
    pub(crate) forward_authorization: bool,
    /// Where the session's expiry is read in the answer (RFC 3339 text or seconds).
    pub(crate) expires_pointer: ClaimPointer,
    /// 0 turns caching off.
    pub(crate) cache_ttl: Duration,
    pub(crate) timeout: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct IntrospectionSettings {
    pub(crate) url: reqwest::Url,
    pub(crate) client_id: String,
    pub(crate) client_secret: KeySecret,
    /// The variable's name, for messages that must not hold the secret.
    pub(crate) client_secret_env: String,
    pub(crate) cache_ttl: Duration,
    pub(crate) timeout: Duration,
}

/// Field paths inside the `i`th issuer table.
struct At(usize);

impl At {
    fn field(&self, field: &str) -> String {
        format!("issuers[{}].{field}", self.0)
    }
}

/// Checks the `i`th `[[issuers]]` table of kind `session_endpoint`.
pub(crate) fn session_endpoint(
    i: usize,
    raw: RawSessionEndpoint,
) -> Result<SessionEndpointSettings, ConfigError> {
    let at = At(i);
    let url = url(&at, raw.url.as_deref())?;
    for (j, name) in raw.forward_cookies.iter().enumerate() {
        if !is_cookie_name(name) {
            return Err(invalid(
                at.field(&format!("forward_cookies[{j}]")),
                format!("{name:?} is not a cookie name (RFC 6265 §4.1.1: letters, digits and !#$%&'*+-.^_`|~)"),
            ));
        }
        if raw.forward_cookies[..j].contains(name) {
            return Err(invalid(
                at.field(&format!("forward_cookies[{j}]")),
                format!("{name:?} is listed twice"),
            ));
        }
    }
    if raw.forward_cookies.len() > MAX_FORWARD_COOKIES {
        return Err(invalid(
            at.field("forward_cookies"),
            format!("lists more than {MAX_FORWARD_COOKIES} cookies"),
        ));
    }
    if raw.forward_cookies.is_empty() && !raw.forward_authorization {
        return Err(invalid(
            at.field("forward_cookies"),
            "list the session cookies to forward, or set forward_authorization = true: otherwise nothing tells the endpoint whose session it is",
        ));
    }
    let expires_pointer = raw
        .expires_pointer
        .parse()
        .map_err(|e: String| invalid(at.field("expires_pointer"), e))?;
    Ok(SessionEndpointSettings {
        url,
        forward_cookies: raw.forward_cookies,
        forward_authorization: raw.forward_authorization,
        expires_pointer,
        cache_ttl: cache_ttl(&at, &raw.cache_ttl)?,
        timeout: timeout(&at, &raw.timeout)?,
    })
}

/// Checks the `i`th `[[issuers]]` table of kind `introspection`; the client
/// secret is read from the variable `client_secret_env` names.
pub(crate) fn introspection(
    i: usize,
    raw: RawIntrospection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IntrospectionSettings, ConfigError> {
    let at = At(i);
    let url = url(&at, raw.url.as_deref())?;
    let client_id = match raw.client_id {
        Some(id) if !id.trim().is_empty() => id,
        _ => {
            return Err(invalid(
                at.field("client_id"),
                "must name the client the introspection endpoint knows this sidecar as (RFC 7662 §2.1 requires client authentication)",
            ))
        }
    };
    let client_secret_env = match raw.client_secret_env {
        Some(name) if !name.trim().is_empty() => name,
        _ => {
            return Err(invalid(
                at.field("client_secret_env"),
                "must name the environment variable that holds the client secret (never the secret itself)",
            ))
        }
    };
    let client_secret = match env(&client_secret_env) {
        Some(secret) if !secret.is_empty() => KeySecret::new(secret),
        _ => {
            return Err(invalid(
                at.field("client_secret_env"),
                format!("the environment variable {client_secret_env} is not set or is empty"),
            ))
        }
    };
    Ok(IntrospectionSettings {
        url,
        client_id,
        client_secret,
        client_secret_env,
        cache_ttl: cache_ttl(&at, &raw.cache_ttl)?,
        timeout: timeout(&at, &raw.timeout)?,
    })
}

/// https, or plain http to this machine (which nothing on the way can read).
fn url(at: &At, text: Option<&str>) -> Result<reqwest::Url, ConfigError> {
    let text = text.ok_or_else(|| invalid(at.field("url"), "must be set"))?;
    let url = reqwest::Url::parse(text)
        .map_err(|e| invalid(at.field("url"), format!("{text:?} is not a URL: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(invalid(
                at.field("url"),
                "must be https or loopback http (session cookies and tokens are sent to it)",
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            at.field("url"),
            "must not carry credentials: URLs end up in logs (use client_secret_env)",
        ));
    }
    Ok(url)
}

fn timeout(at: &At, text: &str) -> Result<Duration, ConfigError> {
    let value = parse_duration(&at.field("timeout"), text)?;
    if value.is_zero() || value > MAX_TIMEOUT {
        return Err(invalid(
            at.field("timeout"),
            format!(
                "must be more than 0 and at most {}",
                humantime::format_duration(MAX_TIMEOUT)
            ),
        ));
    }
    Ok(value)
}

fn cache_ttl(at: &At, text: &str) -> Result<Duration, ConfigError> {
    let value = parse_duration(&at.field("cache_ttl"), text)?;
    if value > MAX_CACHE_TTL {
        return Err(invalid(
            at.field("cache_ttl"),
            format!(
                "must be at most {} (0s turns caching off): a signed-out session stays usable that long",
                humantime::format_duration(MAX_CACHE_TTL)
            ),
        ));
    }
    Ok(value)
}

/// An RFC 6265 §4.1.1 cookie-name (an RFC 2616 token).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(toml: &str) -> Result<SessionEndpointSettings, String> {
        let raw: RawSessionEndpoint = toml::from_str(toml).unwrap();
        session_endpoint(1, raw).map_err(|e| e.to_string())
    }

    fn introspect(toml: &str, env: &[(&str, &str)]) -> Result<IntrospectionSettings, String> {
        let raw: RawIntrospection = toml::from_str(toml).unwrap();
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        introspection(2, raw, &lookup).map_err(|e| e.to_string())
    }

    const SESSION: &str = r#"
        url = "http://127.0.0.1:3000/api/auth/session"
        forward_cookies = ["authjs.session-token", "__Secure-authjs.session-token"]
    "#;

    #[test]
    fn a_session_endpoint_gets_the_documented_defaults() {
        let s = session(SESSION).unwrap();
        assert_eq!(s.url.as_str(), "http://127.0.0.1:3000/api/auth/session");
        assert_eq!(s.forward_cookies.len(), 2);
        assert!(!s.forward_authorization);
        assert_eq!(s.expires_pointer.as_str(), "/expires");
        assert_eq!(s.cache_ttl, Duration::from_secs(30));
        assert_eq!(s.timeout, Duration::from_secs(2));
    }

    #[test]
    fn session_endpoint_errors_name_the_field() {
        let cases = [
            (
                r#"url = "http://app.example.com/s"
                   forward_cookies = ["a"]"#,
                "issuers[1].url: must be https or loopback http",
            ),
            (r#"forward_cookies = ["a"]"#, "issuers[1].url: must be set"),
            (
                r#"url = "https://u:p@app.example.com/s"
                   forward_cookies = ["a"]"#,
                "issuers[1].url: must not carry credentials",
            ),
            (
                r#"url = "https://app.example.com/s""#,
                "issuers[1].forward_cookies: list the session cookies",
            ),
            (
                r#"url = "https://app.example.com/s"
                   forward_cookies = ["ok", "bad name"]"#,
                "issuers[1].forward_cookies[1]: \"bad name\" is not a cookie name",
            ),
            (
                r#"url = "https://app.example.com/s"
                   forward_cookies = ["a", "a"]"#,
                "issuers[1].forward_cookies[1]: \"a\" is listed twice",
            ),
            (
                r#"url = "https://app.example.com/s"
                   forward_authorization = true
                   expires_pointer = "expires""#,
                "issuers[1].expires_pointer: \"expires\" is not a JSON Pointer",
            ),
            (
                r#"url = "https://app.example.com/s"
                   forward_authorization = true
                   timeout = "0s""#,
                "issuers[1].timeout: must be more than 0 and at most 30s",
            ),
            (
                r#"url = "https://app.example.com/s"
                   forward_authorization = true
                   timeout = "1m""#,
                "issuers[1].timeout: must be more than 0 and at most 30s",
            ),
            (
                r#"url = "https://app.example.com/s"
                   forward_authorization = true
                   cache_ttl = "2h""#,
                "issuers[1].cache_ttl: must be at most 1h",
            ),
            (
                r#"url = "https://app.example.com/s"
                   forward_authorization = true
                   cache_ttl = "soon""#,
                "issuers[1].cache_ttl: \"soon\" is not a duration",
            ),
        ];
        for (toml, expected) in cases {
            let error = session(toml).unwrap_err();
            assert!(error.starts_with(expected), "{toml}\n→ {error}");
        }
        // Authorization alone, https, caching off: all fine.
        let s = session(
            r#"url = "https://app.example.com/api/auth/get-session"
               forward_authorization = true
               cache_ttl = "0s""#,
        )
        .unwrap();
        assert!(s.cache_ttl.is_zero() && s.forward_cookies.is_empty());
        assert!(session(
            r#"url = "http://[::1]:3000/s"
               forward_cookies = ["a"]"#
        )
        .is_ok());
    }

    const INTROSPECTION: &str = r#"
        url = "https://auth.example.com/oauth2/introspect"
        client_id = "ably-tokend"
        client_secret_env = "INTROSPECTION_CLIENT_SECRET"
    "#;

    #[test]
    fn introspection_reads_its_secret_from_the_environment_only() {
        let s = introspect(
            INTROSPECTION,
            &[("INTROSPECTION_CLIENT_SECRET", "s3cr3t-value")],
        )
        .unwrap();
        assert_eq!(s.client_id, "ably-tokend");
        assert_eq!(s.client_secret.expose(), b"s3cr3t-value");
        assert_eq!(s.cache_ttl, Duration::from_secs(30));
        assert!(
            !format!("{s:?}").contains("s3cr3t-value"),
            "Debug hides the secret"
        );

        let error = introspect(INTROSPECTION, &[]).unwrap_err();
        assert_eq!(
            error,
            "issuers[2].client_secret_env: the environment variable INTROSPECTION_CLIENT_SECRET is not set or is empty"
        );
        let error = introspect(INTROSPECTION, &[("INTROSPECTION_CLIENT_SECRET", "")]).unwrap_err();
        assert!(error.contains("is not set or is empty"), "{error}");
        let error = introspect(
            r#"url = "https://auth.example.com/i"
               client_secret_env = "X""#,
            &[("X", "y")],
        )
        .unwrap_err();
        assert!(
            error.starts_with("issuers[2].client_id: must name"),
            "{error}"
        );
        let error = introspect(
            r#"url = "https://auth.example.com/i"
               client_id = "c""#,
            &[],
        )
        .unwrap_err();
        assert!(
            error.starts_with("issuers[2].client_secret_env: must name the environment variable"),
            "{error}"
        );
        let error = introspect(
            r#"url = "ftp://auth.example.com/i"
               client_id = "c"
               client_secret_env = "X""#,
            &[("X", "y")],
        )
        .unwrap_err();
        assert!(
            error.starts_with("issuers[2].url: must be https or loopback http"),
            "{error}"
        );
    }

    // Whole files: the kinds as `[[issuers]]` tables, beside a jwt issuer.

    const FILE: &str = r#"
        [ably]
        api_key = "a.b:c"
        [[issuers]]
        name = "clerk"
        issuer = "https://clerk.example.com"
        jwks_url = "https://clerk.example.com/.well-known/jwks.json"
        cookies = ["__session"]
        [[issuers]]
        name = "app-session"
        kind = "session_endpoint"
        url = "http://127.0.0.1:3000/api/auth/session"
        forward_cookies = ["authjs.session-token"]
        client_id_claim = "/user/id"
        cache_ttl = "10s"
        [[issuers]]
        name = "hydra"
        kind = "introspection"
        url = "https://auth.example.com/oauth2/introspect"
        client_id = "ably-tokend"
        client_secret_env = "REMOTE_TEST_CLIENT_SECRET"
    "#;

    fn load(text: &str) -> Result<crate::config::Settings, String> {
        let dir =
            std::env::temp_dir().join(format!("tokend-remote-{}-{:x}", std::process::id(), n()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, text).unwrap();
        let env = vec![(
            "REMOTE_TEST_CLIENT_SECRET".to_string(),
            "client-secret-value".to_string(),
        )];
        let result =
            crate::config::Settings::load_from(&file, true, &env).map_err(|e| e.to_string());
        std::fs::remove_dir_all(&dir).ok();
        result
    }

    fn n() -> usize {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn both_kinds_load_as_issuer_tables() {
        use crate::config::IssuerKind;
        let s = load(FILE).unwrap();
        let endpoint = &s.issuers[1];
        let IssuerKind::SessionEndpoint(settings) = &endpoint.kind else {
            panic!("a session endpoint")
        };
        assert_eq!(settings.cache_ttl, Duration::from_secs(10));
        assert_eq!(settings.timeout, Duration::from_secs(2));
        // forward_cookies route requests like other kinds' cookies.
        assert_eq!(endpoint.cookies, vec!["authjs.session-token"]);
        assert_eq!(endpoint.client_id_claim.as_str(), "/user/id");
        assert!(!endpoint.takes_opaque_bearer());
        let IssuerKind::Introspection(settings) = &s.issuers[2].kind else {
            panic!("an introspection issuer")
        };
        assert_eq!(settings.client_secret.expose(), b"client-secret-value");
        assert!(s.issuers[2].takes_opaque_bearer());
        assert!(s.issuers[2].cookies.is_empty());
        assert!(!format!("{s:?}").contains("client-secret-value"));
    }

    #[test]
    fn leeway_stays_a_jwt_field() {
        let s = load(&FILE.replacen(
            "cookies = [\"__session\"]",
            "cookies = [\"__session\"]\nleeway = \"30s\"",
            1,
        ))
        .unwrap();
        assert_eq!(s.issuers[0].leeway, Duration::from_secs(30));
    }

    #[test]
    fn fields_of_other_kinds_are_refused_naming_the_field() {
        let cases = [
            // A jwt field on a look-up kind, and the reverse.
            (
                "forward_cookies = [\"authjs.session-token\"]",
                "forward_cookies = [\"authjs.session-token\"]\njwks_url = \"https://x.example/j\"",
                "issuers[1].jwks_url: does not apply to kind = \"session_endpoint\"",
            ),
            (
                "forward_cookies = [\"authjs.session-token\"]",
                "cookies = [\"authjs.session-token\"]",
                "issuers[1].cookies: does not apply to kind = \"session_endpoint\": name the cookies to forward in forward_cookies",
            ),
            (
                "cache_ttl = \"10s\"",
                "client_id = \"x\"",
                "issuers[1].client_id: does not apply to kind = \"session_endpoint\"",
            ),
            (
                "client_id = \"ably-tokend\"",
                "client_id = \"ably-tokend\"\nforward_cookies = [\"a\"]",
                "issuers[2].forward_cookies: does not apply to kind = \"introspection\"",
            ),
            (
                "client_id = \"ably-tokend\"",
                "client_id = \"ably-tokend\"\nsecret = \"0123456789abcdef0123456789abcdef\"",
                "issuers[2].secret: does not apply to kind = \"introspection\"",
            ),
            (
                "cookies = [\"__session\"]",
                "cookies = [\"__session\"]\ntimeout = \"1s\"",
                "issuers[0].timeout: does not apply to kind = \"jwt\"",
            ),
            (
                "cookies = [\"__session\"]",
                "cookies = [\"__session\"]\nurl = \"https://x.example\"",
                "issuers[0].url: does not apply to kind = \"jwt\"",
            ),
            // leeway would be silently ignored by a look-up: refused.
            (
                "cache_ttl = \"10s\"",
                "cache_ttl = \"10s\"\nleeway = \"30s\"",
                "issuers[1].leeway: does not apply to kind = \"session_endpoint\": the endpoint \
                 decides whether the session is live, and the expiry it answers is read strictly, \
                 with no leeway",
            ),
            (
                "client_id = \"ably-tokend\"",
                "client_id = \"ably-tokend\"\nleeway = \"5s\"",
                "issuers[2].leeway: does not apply to kind = \"introspection\"",
            ),
            // Their own fields are checked with the table's index.
            (
                "cache_ttl = \"10s\"",
                "cache_ttl = \"2h\"",
                "issuers[1].cache_ttl: must be at most 1h",
            ),
            (
                "client_secret_env = \"REMOTE_TEST_CLIENT_SECRET\"",
                "client_secret_env = \"REMOTE_TEST_UNSET\"",
                "issuers[2].client_secret_env: the environment variable REMOTE_TEST_UNSET is not set or is empty",
            ),
            // A cookie belongs to one issuer, forward_cookies included.
            (
                "forward_cookies = [\"authjs.session-token\"]",
                "forward_cookies = [\"a\", \"__session\"]",
                "issuers[1].forward_cookies[1]: \"__session\" is already listed by issuers[0]: a cookie belongs to one issuer",
            ),
            // Two issuers that take opaque Bearer values would be ambiguous.
            (
                "cache_ttl = \"10s\"",
                "forward_authorization = true",
                "issuers[2].kind: issuers[1] already takes Bearer values that are not JWTs",
            ),
            (
                "kind = \"introspection\"",
                "kind = \"bearer\"",
                "issuers[2].kind: \"bearer\" is not a kind of issuer: use \"jwt\", \"authjs\", \"session_endpoint\" or \"introspection\"",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(FILE.contains(from), "{from}");
            let e = load(&FILE.replacen(from, to, 1)).unwrap_err();
            assert!(e.starts_with(expected), "{from} → {to}:\n{e}");
            assert!(!e.contains("client-secret-value"), "{e}");
        }
        // One session endpoint taking Authorization, with no introspection issuer, is fine.
        let one = FILE.replacen("cache_ttl = \"10s\"", "forward_authorization = true", 1);
        let one = &one[..one.find("[[issuers]]\n        name = \"hydra\"").unwrap()];
        assert!(load(one).unwrap().issuers[1].takes_opaque_bearer());
    }
}
