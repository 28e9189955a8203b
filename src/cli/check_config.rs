//! `ably-tokend check-config`: for operators before a rollout. Loads the
//! configuration (errors name the field) and the policy, then tries every
//! issuer once, the way the sidecar would, and prints one line per issuer
//! saying what works or why not. Exit 0 only when everything works.
//!
//! Each way an issuer gets its keys (and each issuer kind to come) has its
//! one arm in [`check_issuer`]; the rest of the command is shared.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Failure;
use crate::clock;
use crate::config::{
    CookieFormat, IssuerKind, IssuerSettings, JwtIssuer, KeySource, SessionEndpointSettings,
    Settings,
};
use crate::policy::Policy;
use crate::upstream::lookup::{self, LookupError};
use crate::upstream::{jwks_cache, JwksCache, Probe};

/// What trying one issuer found.
enum Verdict {
    Works(String),
    Fails(String),
}

pub(crate) fn check_config(config: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let settings = Settings::load(config.as_deref())
        .and_then(|s| s.require_issuers().map(|()| s))
        .map_err(|e| Failure(format!("configuration: {e}")))?;
    let shown = config.map_or_else(
        || crate::config::DEFAULT_CONFIG_FILE.to_string(),
        |p| p.display().to_string(),
    );
    println!(
        "config   {shown}: ok ({} issuer{})",
        settings.issuers.len(),
        plural(settings.issuers.len())
    );
    let mut failed = 0;
    match Policy::load(&settings.policy.path) {
        Ok(policy) => println!(
            "policy   {}: ok ({} roles)",
            settings.policy.path.display(),
            policy.role_names().count()
        ),
        Err(e) => {
            println!("policy   FAIL {e}");
            failed += 1;
        }
    }
    let verdicts = actix_web::rt::System::new().block_on(async {
        let client = jwks_cache::http_client();
        let mut out = Vec::new();
        for issuer in &settings.issuers {
            out.push(check_issuer(issuer, &client).await);
        }
        out
    });
    let width = settings
        .issuers
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0);
    for (issuer, verdict) in settings.issuers.iter().zip(&verdicts) {
        let (mark, text) = match verdict {
            Verdict::Works(text) => ("ok  ", text),
            Verdict::Fails(text) => {
                failed += 1;
                ("FAIL", text)
            }
        };
        println!("issuer   {mark} {:width$}  {text}", issuer.name);
    }
    Ok(if failed == 0 {
        println!("everything works");
        ExitCode::SUCCESS
    } else {
        println!("{failed} problem{} found", plural(failed));
        ExitCode::from(1)
    })
}

/// Tries one issuer once. A new kind of issuer adds its arm here.
async fn check_issuer(issuer: &IssuerSettings, client: &reqwest::Client) -> Verdict {
    match &issuer.kind {
        IssuerKind::Jwt(jwt) => match check_jwt(&issuer.name, jwt, client).await {
            Verdict::Works(text) => Verdict::Works(text + &jwt_cookies(issuer, jwt)),
            Verdict::Fails(text) => Verdict::Fails(text + &jwt_cookies(issuer, jwt)),
        },
        // Start-up already refused a missing or short secret: what is left
        // to say is how many there are to try.
        IssuerKind::Authjs(authjs) => Verdict::Works(format!(
            "Auth.js secrets present ({}); reads cookies {} as Auth.js / NextAuth encrypted \
             session tokens (JWE)",
            authjs
                .secrets
                .iter()
                .map(|s| s.env.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            cookie_names(&issuer.cookies)
        )),
        IssuerKind::SessionEndpoint(endpoint) => {
            match reachable(&endpoint.url, endpoint.timeout).await {
                Ok(answer) => Verdict::Works(format!(
                    "session endpoint {} reachable: GET without cookies answered {answer}; \
                     forwards {}",
                    endpoint.url,
                    forwarded(endpoint)
                )),
                Err(why) => Verdict::Fails(format!("session endpoint {}: {why}", endpoint.url)),
            }
        }
        // No token is sent: a real one would be spent on a check.
        IssuerKind::Introspection(introspection) => {
            match reachable(&introspection.url, introspection.timeout).await {
                Ok(answer) => Verdict::Works(format!(
                    "introspection endpoint {} reachable: GET without a token answered {answer}; \
                     client {} with the secret in {} (present)",
                    introspection.url, introspection.client_id, introspection.client_secret_env
                )),
                Err(why) => Verdict::Fails(format!(
                    "introspection endpoint {}: {why}",
                    introspection.url
                )),
            }
        }
    }
}

/// One GET without credentials: any HTTP answer means the endpoint is there
/// (what it was is said); a refused connection or a timeout is a failure.
async fn reachable(url: &reqwest::Url, timeout: std::time::Duration) -> Result<String, String> {
    let request = lookup::client()
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json");
    match lookup::send(request, timeout, "endpoint").await {
        Ok((200, body)) => {
            let body = String::from_utf8_lossy(&body);
            Ok(match body.trim() {
                "null" | "{}" => format!("200 {} (no session, as expected)", body.trim()),
                _ => "200".to_string(),
            })
        }
        Ok((status, _)) => Ok(status.to_string()),
        Err(LookupError::Unavailable(why) | LookupError::Refused(why)) => Err(why),
    }
}

/// Which cookies a jwt issuer reads and what they hold; empty when it reads
/// Bearer tokens only.
fn jwt_cookies(issuer: &IssuerSettings, jwt: &JwtIssuer) -> String {
    if issuer.cookies.is_empty() {
        return String::new();
    }
    let format = match jwt.cookie_format {
        CookieFormat::Plain => "holding the JWT itself (cookie_format \"plain\")",
        CookieFormat::Supabase => {
            "as @supabase/ssr sessions (cookie_format \"supabase\": \"base64-\" and base64url \
             JSON, or the JSON itself), verifying their access_token"
        }
    };
    format!("; reads cookies {} {format}", cookie_names(&issuer.cookies))
}

/// `a, b (or their chunks NAME.0, NAME.1, …)`: every cookie issuer joins chunks.
fn cookie_names(cookies: &[String]) -> String {
    let they = if cookies.len() == 1 { "its" } else { "their" };
    format!(
        "{} (or {they} chunks NAME.0, NAME.1, …)",
        cookies.join(", ")
    )
}

fn forwarded(endpoint: &SessionEndpointSettings) -> String {
    let mut what: Vec<String> = endpoint.forward_cookies.clone();
    if endpoint.forward_authorization {
        what.push("Authorization".into());
    }
    what.join(", ")
}

async fn check_jwt(name: &str, issuer: &JwtIssuer, client: &reqwest::Client) -> Verdict {
    let cache = match &issuer.keys {
        KeySource::Secret(_) => {
            return Verdict::Works(format!(
                "shared secret present ({})",
                names(&issuer.algorithms)
            ))
        }
        KeySource::Jwks(jwks) => {
            JwksCache::new(name, jwks.clone(), client.clone(), clock::system())
        }
        KeySource::Discovery(jwks) => JwksCache::discovering(
            name,
            &issuer.issuer,
            jwks.clone(),
            client.clone(),
            clock::system(),
        ),
    };
    let how = match &issuer.keys {
        KeySource::Discovery(jwks) => format!("discovery {} -> jwks_uri ", jwks.url),
        _ => "jwks ".to_string(),
    };
    match cache.probe().await {
        Ok(probe) => key_set_verdict(issuer, &how, &probe),
        Err(why) => Verdict::Fails(why),
    }
}

/// Works when at least one published key fits an algorithm the issuer allows.
fn key_set_verdict(issuer: &JwtIssuer, how: &str, probe: &Probe) -> Verdict {
    let keys: Vec<String> = probe
        .keys
        .keys
        .iter()
        .map(|key| {
            let kid = key.kid.as_deref().unwrap_or("(no kid)");
            let algs: Vec<_> = issuer
                .algorithms
                .iter()
                .filter(|alg| key.accepts(**alg))
                .collect();
            if algs.is_empty() {
                format!("{kid} (fits no allowed algorithm)")
            } else {
                format!("{kid} {}", names(algs))
            }
        })
        .collect();
    let usable = probe
        .keys
        .keys
        .iter()
        .any(|key| issuer.algorithms.iter().any(|alg| key.accepts(*alg)));
    let count = probe.keys.keys.len();
    let mut text = format!(
        "{how}{}: {count} key{} ({})",
        probe.jwks_uri,
        plural(count),
        keys.join(", ")
    );
    if !probe.keys.skipped.is_empty() {
        text += &format!(", {} skipped", probe.keys.skipped.len());
    }
    if usable {
        Verdict::Works(text)
    } else {
        Verdict::Fails(format!(
            "{text}: no key fits the issuer's algorithms ({})",
            names(&issuer.algorithms)
        ))
    }
}

fn names<'a>(algs: impl IntoIterator<Item = &'a jsonwebtoken::Algorithm>) -> String {
    algs.into_iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
