//! Where a request's session credential comes from, decided once at the
//! edge: `Authorization: Bearer` (only that scheme), else the first listed
//! cookie present. A Bearer JWT (three base64url parts, RFC 7515 §7.1) goes
//! to the `jwt` issuer its `iss` names; a Bearer value that is not a JWT goes
//! to the one issuer that takes opaque tokens (`introspection`, or a
//! `session_endpoint` with `forward_authorization = true`; configuration
//! allows one at most), and is read as a JWT when there is none. A cookie
//! listed by an issuer (`cookies`, or a session endpoint's `forward_cookies`)
//! goes to that issuer; with no issuer listing cookies, `[server]
//! session_cookies` hold plain JWTs routed by their `iss`. The header wins
//! when both are present, and a bad header is never rescued by a good cookie.
//!
//! Long values are split by Auth.js into `NAME.0`, `NAME.1`, … (its
//! `SessionStore` in @auth/core `src/lib/utils/cookie.ts`; @supabase/ssr's
//! `createChunks` names them the same way); they are joined in order when
//! `NAME` is listed. Every size is bounded before anything is copied. A
//! `cookie_format = "supabase"` issuer's cookie is opened here
//! (`supabase.rs`) and its access token routed on as that issuer's JWT.

use super::authjs::MAX_COOKIE_BYTES;
use super::jws::MAX_TOKEN_BYTES;
use super::{supabase, UpstreamError};
use crate::config::{CookieFormat, IssuerKind, IssuerSettings};

/// More chunks than this are refused (8 × ~4 KB is past any real session).
pub(crate) const MAX_CHUNKS: usize = 8;

/// The session credential of one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A JWT from `Authorization: Bearer` or a `[server] session_cookies`
    /// cookie, for the issuer its `iss` names.
    Token(String),
    /// A cookie listed by an issuer, for that issuer.
    Cookie(IssuerCookie),
    /// A Bearer value that is not a JWT, for the issuer that takes them.
    Opaque(OpaqueBearer),
    /// A session endpoint's cookies, to be forwarded as they came.
    Forward(ForwardCookies),
}

#[derive(PartialEq, Eq)]
pub(crate) struct OpaqueBearer {
    /// The `name` of the issuer that takes opaque Bearer values.
    pub(crate) issuer: String,
    /// The token alone (for introspection).
    pub(crate) token: String,
    /// The whole `Authorization` value as it came (for a session endpoint).
    pub(crate) header: String,
}

#[derive(PartialEq, Eq)]
pub(crate) struct ForwardCookies {
    /// The `name` of the session-endpoint issuer that lists the cookies.
    pub(crate) issuer: String,
    /// Every pair of a listed cookie or its chunks, in arrival order, values
    /// as they came.
    pub(crate) cookies: Vec<(String, String)>,
}

/// Never prints the token.
impl std::fmt::Debug for OpaqueBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaqueBearer")
            .field("issuer", &self.issuer)
            .field("token_bytes", &self.token.len())
            .finish()
    }
}

/// Never prints a cookie value.
impl std::fmt::Debug for ForwardCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.cookies.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ForwardCookies")
            .field("issuer", &self.issuer)
            .field("cookies", &names)
            .finish()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct IssuerCookie {
    /// The `name` of the issuer that lists the cookie.
    pub(crate) issuer: String,
    /// The listed name, without a chunk suffix.
    pub(crate) name: String,
    /// The value, chunks joined; for a `cookie_format = "supabase"` issuer,
    /// the access token inside it.
    pub(crate) value: String,
}

/// Where cookies are looked for: each issuer's `cookies`, in configuration
/// order, or `[server] session_cookies` when no issuer lists any.
pub(crate) struct CookieRoutes<'a> {
    pub(crate) issuers: &'a [IssuerSettings],
    pub(crate) session_cookies: &'a [String],
}

impl CookieRoutes<'_> {
    /// `(cookie, Some(issuer))` for issuer cookies, `(cookie, None)` for
    /// session cookies routed by `iss`.
    fn each(&self) -> Vec<(&str, Option<&IssuerSettings>)> {
        let listed: Vec<(&str, Option<&IssuerSettings>)> = self
            .issuers
            .iter()
            .flat_map(|i| i.cookies.iter().map(move |c| (c.as_str(), Some(i))))
            .collect();
        if !listed.is_empty() {
            return listed;
        }
        self.session_cookies
            .iter()
            .map(|c| (c.as_str(), None))
            .collect()
    }
}

/// The request's credential from its `Authorization` value and `Cookie`
/// header values.
pub(crate) fn credential<'h>(
    authorization: Option<&[u8]>,
    cookie_headers: impl IntoIterator<Item = &'h str> + Clone,
    routes: &CookieRoutes<'_>,
) -> Result<Credential, UpstreamError> {
    if let Some(value) = authorization {
        if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
            if value.len() > 7 + MAX_TOKEN_BYTES + 64 {
                return Err(UpstreamError::TokenTooLarge("a JWT is at most 8 KiB"));
            }
            let header = std::str::from_utf8(value)
                .map_err(|_| UpstreamError::Malformed("the bearer token is not text"))?;
            let token = header[7..].trim();
            if !token.is_empty() && !is_jwt_shaped(token) {
                if token.len() > MAX_TOKEN_BYTES {
                    return Err(UpstreamError::TokenTooLarge(
                        "a Bearer token is at most 8 KiB",
                    ));
                }
                if let Some(issuer) = routes.issuers.iter().find(|i| i.takes_opaque_bearer()) {
                    return Ok(Credential::Opaque(OpaqueBearer {
                        issuer: issuer.name.clone(),
                        token: token.to_string(),
                        header: header.to_string(),
                    }));
                }
            }
            return checked_jwt(token).map(Credential::Token);
        }
        // Another scheme (Basic, say) is not ours: fall through to cookies.
    }
    for (name, issuer) in routes.each() {
        let Some(value) = cookie(cookie_headers.clone(), name)? else {
            continue;
        };
        return match issuer {
            None => checked_jwt(&value).map(Credential::Token),
            Some(issuer) if matches!(issuer.kind, IssuerKind::SessionEndpoint(_)) => {
                forwarded(cookie_headers, issuer).map(Credential::Forward)
            }
            Some(issuer) => {
                let supabase = issuer
                    .jwt()
                    .is_some_and(|j| j.cookie_format == CookieFormat::Supabase);
                let value = if supabase {
                    supabase::access_token(&value)?
                } else {
                    value
                };
                Ok(Credential::Cookie(IssuerCookie {
                    issuer: issuer.name.clone(),
                    name: name.to_string(),
                    value,
                }))
            }
        };
    }
    Err(UpstreamError::Missing)
}

/// Three parts of base64url text, the first two not empty: the compact
/// serialization of a JWS (RFC 7515 §7.1). Anything else is not a JWT.
fn is_jwt_shaped(token: &str) -> bool {
    let mut parts = token.split('.');
    let b64url = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(h), Some(p), Some(s), None)
            if !h.is_empty() && !p.is_empty() && b64url(h) && b64url(p) && b64url(s)
    )
}

/// The pairs of every cookie `issuer` lists and of their chunks, in arrival
/// order and as they came (a session endpoint reads them itself), at most
/// 32 KiB together.
fn forwarded<'h>(
    headers: impl IntoIterator<Item = &'h str>,
    issuer: &IssuerSettings,
) -> Result<ForwardCookies, UpstreamError> {
    let listed = |name: &str| {
        issuer
            .cookies
            .iter()
            .any(|c| name == c || chunk_index(name, c).is_some())
    };
    let mut total = 0usize;
    let mut cookies = Vec::new();
    for header in headers {
        for pair in header.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if value.is_empty() || !listed(name) {
                continue;
            }
            total += name.len() + value.len();
            if total > MAX_COOKIE_BYTES {
                return Err(UpstreamError::TokenTooLarge(
                    "a session cookie is at most 32 KiB",
                ));
            }
            cookies.push((name.to_string(), value.to_string()));
        }
    }
    Ok(ForwardCookies {
        issuer: issuer.name.clone(),
        cookies,
    })
}

fn checked_jwt(token: &str) -> Result<String, UpstreamError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(UpstreamError::TokenTooLarge("a JWT is at most 8 KiB"));
    }
    if token.is_empty() {
        return Err(UpstreamError::Missing);
    }
    Ok(token.to_string())
}

/// Each `name=value` pair of the Cookie headers, value unquoted (RFC 6265
/// §4.2.1 and §5.4). Pairs without `=` are skipped: they are not ours to judge.
fn pairs<'h>(
    headers: impl IntoIterator<Item = &'h str>,
) -> impl Iterator<Item = (&'h str, &'h str)> {
    headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim(), v))
        })
}

/// `NAME.<n>`'s chunk index: a decimal number without leading zeros.
fn chunk_index(cookie: &str, name: &str) -> Option<usize> {
    let suffix = cookie.strip_prefix(name)?.strip_prefix('.')?;
    let canonical = !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_digit())
        && (suffix == "0" || !suffix.starts_with('0'));
    if !canonical {
        return None;
    }
    // An index too large for usize is past MAX_CHUNKS all the same.
    Some(suffix.parse().unwrap_or(usize::MAX))
}

/// The value of cookie `name`, whole or joined from its chunks; `None` when
/// neither is present (or the value is empty). Where a browser sends one name
/// twice, the first is used (RFC 6265 §5.4 lists more specific paths first).
pub(crate) fn cookie<'h>(
    headers: impl IntoIterator<Item = &'h str> + Clone,
    name: &str,
) -> Result<Option<String>, UpstreamError> {
    let whole = pairs(headers.clone()).find(|(k, v)| *k == name && !v.is_empty());
    let mut chunks: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
    let mut any_chunk = false;
    for (k, v) in pairs(headers) {
        let Some(index) = chunk_index(k, name) else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        if index >= MAX_CHUNKS {
            return Err(UpstreamError::TokenTooLarge(
                "a session cookie is split into at most 8 chunks",
            ));
        }
        any_chunk = true;
        chunks[index].get_or_insert(v);
    }
    match (whole, any_chunk) {
        (None, false) => Ok(None),
        (Some((_, v)), false) => {
            if v.len() > MAX_COOKIE_BYTES {
                return Err(UpstreamError::TokenTooLarge(
                    "a session cookie is at most 32 KiB",
                ));
            }
            Ok(Some(v.to_string()))
        }
        (Some(_), true) => Err(UpstreamError::Malformed(
            "the session cookie is present both whole and in chunks",
        )),
        (None, true) => {
            let count = chunks.iter().take_while(|c| c.is_some()).count();
            if chunks[count..].iter().any(Option::is_some) || count == 0 {
                return Err(UpstreamError::Malformed(
                    "the session cookie's chunks are not numbered 0, 1, 2, … without a gap",
                ));
            }
            let total: usize = chunks[..count].iter().flatten().map(|c| c.len()).sum();
            if total > MAX_COOKIE_BYTES {
                return Err(UpstreamError::TokenTooLarge(
                    "a session cookie is at most 32 KiB",
                ));
            }
            let mut joined = String::with_capacity(total);
            for chunk in chunks[..count].iter().flatten() {
                joined.push_str(chunk);
            }
            Ok(Some(joined))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn settings(extra: &str) -> Settings {
        std::env::set_var("CREDENTIAL_TEST_SECRET", "a-32-byte-secret-for-authjs-test");
        Settings::from_toml(&format!(
            r#"
            [ably]
            api_key = "a.b:c"
            [server]
            session_cookies = ["__session"]
            [[issuers]]
            name = "dev"
            issuer = "dev-issuer"
            secret = "0123456789abcdef0123456789abcdef"
            {extra}
            "#
        ))
        .unwrap()
    }

    const AUTHJS: &str = r#"
        [[issuers]]
        name = "app"
        kind = "authjs"
        secret_env = ["CREDENTIAL_TEST_SECRET"]
        cookies = ["authjs.session-token", "__Secure-authjs.session-token"]
    "#;

    fn get(s: &Settings, auth: Option<&str>, cookies: &[&str]) -> Result<Credential, &'static str> {
        let routes = CookieRoutes {
            issuers: &s.issuers,
            session_cookies: &s.server.session_cookies,
        };
        credential(auth.map(str::as_bytes), cookies.iter().copied(), &routes)
            .map_err(|e| e.reason())
    }

    fn issuer_cookie(name: &str, value: &str) -> Credential {
        Credential::Cookie(IssuerCookie {
            issuer: "app".into(),
            name: name.into(),
            value: value.into(),
        })
    }

    #[test]
    fn bearer_wins_and_other_schemes_are_ignored() {
        let s = settings(AUTHJS);
        let c = ["authjs.session-token=abc"];
        assert_eq!(
            get(&s, Some("Bearer x.y.z"), &c),
            Ok(Credential::Token("x.y.z".into()))
        );
        assert_eq!(
            get(&s, Some("bearer  x.y.z "), &c),
            Ok(Credential::Token("x.y.z".into()))
        );
        assert_eq!(
            get(&s, Some("Basic dXNlcjpwYXNz"), &c),
            Ok(issuer_cookie("authjs.session-token", "abc"))
        );
        // A bad header is not rescued by a good cookie.
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(get(&s, Some(&huge), &c), Err("session_token_too_large"));
        assert_eq!(
            get(&s, Some("Bearer    "), &c),
            Err("session_token_missing")
        );
    }

    #[test]
    fn issuer_cookies_replace_session_cookies_and_keep_their_order() {
        let s = settings(AUTHJS);
        // __session is not consulted once an issuer lists cookies.
        assert_eq!(
            get(&s, None, &["__session=a.b.c"]),
            Err("session_token_missing")
        );
        let both = ["__Secure-authjs.session-token=second; authjs.session-token=first"];
        assert_eq!(
            get(&s, None, &both),
            Ok(issuer_cookie("authjs.session-token", "first"))
        );
        let legacy = settings("");
        assert_eq!(
            get(&legacy, None, &["x=1; __session=\"a.b.c\""]),
            Ok(Credential::Token("a.b.c".into()))
        );
        assert_eq!(get(&legacy, None, &[]), Err("session_token_missing"));
    }

    #[test]
    fn chunks_are_joined_in_order() {
        let s = settings(AUTHJS);
        let c = [
            "authjs.session-token.1=BBB; other=1",
            "authjs.session-token.0=AAA; authjs.session-token.2=CC",
        ];
        assert_eq!(
            get(&s, None, &c),
            Ok(issuer_cookie("authjs.session-token", "AAABBBCC"))
        );
        // Not chunks of ours: other suffixes, leading zeros, other prefixes.
        let c = ["authjs.session-token.x=1; authjs.session-token.01=2; authjs.session-tokens.0=3; authjs.session-token=W"];
        assert_eq!(
            get(&s, None, &c),
            Ok(issuer_cookie("authjs.session-token", "W"))
        );
    }

    #[test]
    fn gaps_too_many_chunks_and_oversize_are_refused() {
        let s = settings(AUTHJS);
        let n = "authjs.session-token";
        assert_eq!(
            get(&s, None, &[&format!("{n}.0=a; {n}.2=c")]),
            Err("session_token_malformed")
        );
        assert_eq!(
            get(&s, None, &[&format!("{n}.1=b")]),
            Err("session_token_malformed")
        );
        assert_eq!(
            get(&s, None, &[&format!("{n}=w; {n}.0=a")]),
            Err("session_token_malformed")
        );
        let nine: Vec<String> = (0..9).map(|i| format!("{n}.{i}=x")).collect();
        assert_eq!(
            get(&s, None, &[&nine.join("; ")]),
            Err("session_token_too_large")
        );
        let far = format!("{n}.0=a; {n}.99999999999999999999999=b");
        assert_eq!(get(&s, None, &[&far]), Err("session_token_too_large"));
        let big = "x".repeat(5 * 1024);
        let seven: Vec<String> = (0..7).map(|i| format!("{n}.{i}={big}")).collect();
        assert_eq!(
            get(&s, None, &[&seven.join("; ")]),
            Err("session_token_too_large")
        );
        let whole = format!("{n}={}", "x".repeat(MAX_COOKIE_BYTES + 1));
        assert_eq!(get(&s, None, &[&whole]), Err("session_token_too_large"));
        let eight: Vec<String> = (0..8).map(|i| format!("{n}.{i}=x")).collect();
        assert_eq!(
            get(&s, None, &[&eight.join("; ")]),
            Ok(issuer_cookie(n, "xxxxxxxx"))
        );
    }

    const LOOKUPS: &str = r#"
        [[issuers]]
        name = "app-session"
        kind = "session_endpoint"
        url = "http://127.0.0.1:3000/api/auth/session"
        forward_cookies = ["authjs.session-token", "other"]
        [[issuers]]
        name = "hydra"
        kind = "introspection"
        url = "http://127.0.0.1:4444/oauth2/introspect"
        client_id = "ably-tokend"
        client_secret_env = "CREDENTIAL_TEST_SECRET"
    "#;

    fn opaque(token: &str, header: &str) -> Credential {
        Credential::Opaque(OpaqueBearer {
            issuer: "hydra".into(),
            token: token.into(),
            header: header.into(),
        })
    }

    #[test]
    fn a_bearer_that_is_not_a_jwt_goes_to_the_issuer_that_takes_them() {
        let s = settings(LOOKUPS);
        let c = ["authjs.session-token=abc"];
        assert_eq!(
            get(&s, Some("Bearer ory_at_opaque-Value~1"), &c),
            Ok(opaque(
                "ory_at_opaque-Value~1",
                "Bearer ory_at_opaque-Value~1"
            ))
        );
        // Four or five parts (a JWE), padding, an empty payload: not JWTs.
        for token in ["a.b.c.d.e", "ab.cd=.ef", "ab..ef", "abc"] {
            let header = format!("bearer {token}");
            assert_eq!(get(&s, Some(&header), &[]), Ok(opaque(token, &header)));
        }
        // A JWT still goes by its iss, whatever the cookies.
        assert_eq!(
            get(&s, Some("Bearer eyJh.eyJp.c2ln"), &c),
            Ok(Credential::Token("eyJh.eyJp.c2ln".into()))
        );
        assert_eq!(
            get(&s, Some("Bearer ab.cd."), &c),
            Ok(Credential::Token("ab.cd.".into()))
        );
        // Without such an issuer a non-JWT is read as a JWT (and refused there).
        let plain = settings(AUTHJS);
        assert_eq!(
            get(&plain, Some("Bearer opaque"), &[]),
            Ok(Credential::Token("opaque".into()))
        );
        // Empty and oversized values are refused before routing.
        assert_eq!(get(&s, Some("Bearer  "), &c), Err("session_token_missing"));
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(get(&s, Some(&huge), &c), Err("session_token_too_large"));
    }

    #[test]
    fn a_session_endpoints_cookies_are_forwarded_as_they_came() {
        let s = settings(LOOKUPS);
        let forwarded = |cookies: &[(&str, &str)]| {
            Credential::Forward(ForwardCookies {
                issuer: "app-session".into(),
                cookies: cookies
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            })
        };
        assert_eq!(
            get(
                &s,
                None,
                &[
                    "theme=dark; authjs.session-token.1=B; other=\"q\"",
                    "authjs.session-token.0=A; tracking=x"
                ]
            ),
            Ok(forwarded(&[
                ("authjs.session-token.1", "B"),
                ("other", "\"q\""),
                ("authjs.session-token.0", "A")
            ]))
        );
        // The Authorization header of another scheme stays behind.
        assert_eq!(
            get(&s, Some("Basic dXNlcjpwYXNz"), &["other=1"]),
            Ok(forwarded(&[("other", "1")]))
        );
        // Only unlisted cookies: no credential.
        assert_eq!(
            get(&s, None, &["theme=dark; __session=a.b.c"]),
            Err("session_token_missing")
        );
        let big = format!("other={}", "x".repeat(MAX_COOKIE_BYTES));
        assert_eq!(get(&s, None, &[&big]), Err("session_token_too_large"));
    }
}
