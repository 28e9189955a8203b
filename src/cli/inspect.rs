//! `token inspect`: decode a TokenRequest, an Ably JWT, an upstream JWT or an
//! Auth.js / NextAuth session cookie, show what it grants in words, and
//! verify it when given the key (or, for a cookie, the secret's variable).

use std::io::Read;
use std::process::ExitCode;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Args;
use serde_json::Value;

use super::{words, Failure};
use crate::capability::Capability;
use crate::clock::{Clock, SystemClock};
use crate::signing::{verify_ably_jwt, verify_token_request_mac, ApiKey, TokenRequest};
use crate::upstream::jwks::KeySet;

#[derive(Args)]
pub(crate) struct InspectArgs {
    /// The token, TokenRequest JSON, or - to read standard input.
    token: String,
    /// Ably API key to verify a TokenRequest's mac or an Ably JWT's signature
    /// (or ABLY_API_KEY).
    #[arg(long, env = "ABLY_API_KEY", hide_env_values = true)]
    key: Option<String>,
    /// A JWKS file to verify an upstream JWT's signature with.
    #[arg(long)]
    jwks: Option<std::path::PathBuf>,
    /// For an Auth.js / NextAuth session cookie: the environment variable
    /// holding the app's secret (AUTH_SECRET); repeat to try several. The
    /// secret itself is never printed.
    #[arg(long, value_name = "NAME")]
    secret_env: Vec<String>,
    /// The cookie the value came from (Auth.js v5 derives its key from it).
    #[arg(long, value_name = "NAME", default_value = "authjs.session-token")]
    cookie_name: String,
}

pub(crate) fn inspect(args: InspectArgs) -> Result<ExitCode, Failure> {
    let mut text = args.token.clone();
    if text == "-" {
        text.clear();
        std::io::stdin()
            .take(1024 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| Failure(format!("reading standard input: {e}")))?;
    }
    let text = text.trim();
    let key = args
        .key
        .as_deref()
        .map(|k| {
            k.parse::<ApiKey>()
                .map_err(|e| Failure(format!("--key: {e}")))
        })
        .transpose()?;
    let now = SystemClock.now_secs() as i64;
    if text.starts_with('{') {
        return token_request(text, key.as_ref(), now);
    }
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() == 5 {
        return authjs_cookie(text, &args.secret_env, &args.cookie_name, now);
    }
    if parts.len() != 3 {
        return Err(Failure(
            "not a TokenRequest (JSON), a JWT (three dot-separated parts) nor an Auth.js cookie \
             (five); an opaque Ably token cannot be decoded"
                .into(),
        ));
    }
    let decode = |part: &str, what: &str| -> Result<Value, Failure> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| Failure(format!("the JWT {what} is not base64url")))?;
        serde_json::from_slice(&bytes).map_err(|_| Failure(format!("the JWT {what} is not JSON")))
    };
    let header = decode(parts[0], "header")?;
    let claims = decode(parts[1], "payload")?;
    if claims.get("x-ably-capability").is_some() {
        ably_jwt(text, &header, &claims, key.as_ref(), now)
    } else {
        upstream_jwt(text, &header, &claims, args.jwks.as_deref(), now)
    }
}

fn show_capability(text: &str) {
    match Capability::parse_json(text) {
        Ok(cap) => {
            println!("capability:");
            for (pattern, ops) in cap.iter() {
                println!("  {pattern}: {}", ops.names().join(", "));
            }
        }
        Err(e) => println!("capability:  {text} (INVALID: {e})"),
    }
}

fn token_request(text: &str, key: Option<&ApiKey>, now: i64) -> Result<ExitCode, Failure> {
    let request: TokenRequest =
        serde_json::from_str(text).map_err(|e| Failure(format!("not a TokenRequest: {e}")))?;
    println!("kind:        Ably TokenRequest");
    println!("keyName:     {}", request.key_name);
    println!(
        "clientId:    {}",
        request.client_id.as_deref().unwrap_or("(none)")
    );
    show_capability(&request.capability);
    match request.ttl {
        Some(ttl) => println!("ttl:         {}", words::duration_ms(ttl)),
        None => println!("ttl:         (Ably's default, 1h)"),
    }
    println!(
        "timestamp:   {} (Ably accepts it for 2 minutes)",
        words::time((request.timestamp / 1000) as i64, now)
    );
    println!("nonce:       {}", request.nonce);
    verdict(key.map(|key| {
        if key.name() != request.key_name {
            Err(format!(
                "signed by {}, not by {}",
                request.key_name,
                key.name()
            ))
        } else if verify_token_request_mac(&request, key.secret()) {
            Ok("mac verified with the key".to_string())
        } else {
            Err("the mac does not match the key".to_string())
        }
    }))
}

fn ably_jwt(
    text: &str,
    header: &Value,
    claims: &Value,
    key: Option<&ApiKey>,
    now: i64,
) -> Result<ExitCode, Failure> {
    println!("kind:        Ably JWT");
    println!("alg/kid:     {} / {}", header["alg"], header["kid"]);
    println!(
        "clientId:    {}",
        claims["x-ably-clientId"].as_str().unwrap_or("(none)")
    );
    show_capability(claims["x-ably-capability"].as_str().unwrap_or(""));
    times(claims, now);
    verdict(key.map(|key| {
        verify_ably_jwt(text, std::slice::from_ref(key))
            .map(|_| "signature verified with the key".to_string())
            .map_err(|e| e.to_string())
    }))
}

fn upstream_jwt(
    text: &str,
    header: &Value,
    claims: &Value,
    jwks: Option<&std::path::Path>,
    now: i64,
) -> Result<ExitCode, Failure> {
    println!("kind:        session JWT (upstream issuer)");
    println!("header:      {header}");
    for name in ["iss", "sub", "aud", "azp", "sid", "jti"] {
        if let Some(v) = claims.get(name) {
            println!("{:<12} {}", format!("{name}:"), v);
        }
    }
    times(claims, now);
    println!(
        "claims:      {}",
        serde_json::to_string_pretty(claims).unwrap_or_default()
    );
    verdict(jwks.map(|path| -> Result<String, String> {
        let body = std::fs::read(path).map_err(|e| format!("--jwks {}: {e}", path.display()))?;
        let set = KeySet::parse(&body).map_err(|e| e.to_string())?;
        let token = crate::upstream::jws::parse(text).map_err(|e| e.to_string())?;
        let alg: jsonwebtoken::Algorithm = token
            .alg
            .parse()
            .map_err(|_| format!("alg {:?} is not supported", token.alg))?;
        let key = set
            .find(token.kid.as_deref(), alg)
            .ok_or_else(|| format!("no key in the JWKS for kid {:?} and {alg:?}", token.kid))?;
        if key.verify(alg, token.signing_input.as_bytes(), token.signature) {
            Ok(format!("signature verified with JWKS key {:?}", key.kid))
        } else {
            Err("the signature does not match the JWKS key".into())
        }
    }))
}

/// An Auth.js v5 / NextAuth v4 session cookie: the header is readable as
/// is; the claims only with the secret, tried variable by variable.
fn authjs_cookie(
    text: &str,
    secret_env: &[String],
    cookie: &str,
    now: i64,
) -> Result<ExitCode, Failure> {
    use crate::upstream::authjs;

    let header = text
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .ok_or_else(|| Failure("the encrypted token's header is not base64url JSON".into()))?;
    let version = match header["enc"].as_str() {
        Some("A256CBC-HS512") => "Auth.js v5",
        Some("A256GCM") => "NextAuth v4",
        _ => "not one Auth.js or NextAuth writes",
    };
    println!("kind:        encrypted session cookie ({version})");
    println!("header:      {header}");
    if secret_env.is_empty() {
        println!("verified:    no (pass --secret-env NAME, the variable holding AUTH_SECRET, to decrypt)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("cookie:      {cookie} (Auth.js v5 derives its key from the name)");
    let mut last = None;
    for name in secret_env {
        let secret = std::env::var(name)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Failure(format!(
                    "--secret-env: environment variable {name} is not set"
                ))
            })?;
        let keys = authjs::Keys::derive(&[secret.as_bytes()], &[cookie.to_string()]);
        match authjs::decrypt(text, cookie, &keys) {
            Ok(claims) => {
                let claims = Value::Object(claims);
                for field in ["sub", "name", "email", "jti"] {
                    if let Some(v) = claims.get(field) {
                        println!("{:<12} {}", format!("{field}:"), v);
                    }
                }
                times(&claims, now);
                println!(
                    "claims:      {}",
                    serde_json::to_string_pretty(&claims).unwrap_or_default()
                );
                return verdict(Some(Ok(format!("decrypted with the secret in {name}"))));
            }
            Err(e) => last = Some(e),
        }
    }
    let why = match last {
        Some(crate::upstream::UpstreamError::BadSignature) => format!(
            "no secret in {} opens it (another secret, or another cookie name: --cookie-name)",
            secret_env.join(", ")
        ),
        Some(e) => e.to_string(),
        None => "nothing was tried".into(),
    };
    verdict(Some(Err(why)))
}

fn times(claims: &Value, now: i64) {
    for name in ["iat", "nbf", "exp"] {
        match claims.get(name) {
            None => {}
            Some(Value::Number(n)) if n.as_i64().is_some() => {
                println!(
                    "{:<12} {}",
                    format!("{name}:"),
                    words::time(n.as_i64().unwrap_or(0), now)
                );
            }
            Some(other) => println!(
                "{:<12} {other} (NOT A WHOLE NUMBER: refused by ably-tokend)",
                format!("{name}:")
            ),
        }
    }
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
        if exp <= now {
            println!("status:      EXPIRED");
        }
    }
}

fn verdict(check: Option<Result<String, String>>) -> Result<ExitCode, Failure> {
    match check {
        None => {
            println!("verified:    no (pass --key or --jwks to verify)");
            Ok(ExitCode::SUCCESS)
        }
        Some(Ok(how)) => {
            println!("verified:    yes, {how}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(why)) => {
            println!("verified:    NO: {why}");
            Ok(ExitCode::from(1))
        }
    }
}
