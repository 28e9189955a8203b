//! `ably-tokend check-config`, run as a process against JWKS and discovery
//! servers on loopback: one line per issuer saying what works or why not,
//! exit 0 only when everything works.

use std::path::Path;
use std::process::Output;

use crate::discovery::{config_with, DocMode, ProviderServer};
use crate::helpers::*;

/// Runs the binary off the test's runtime thread, which serves the upstreams.
async fn check_config(config: &Path) -> Output {
    check_config_with_env(config, &[]).await
}

/// As `check_config`, with `env` set for the process (secrets named by `secret_env`).
async fn check_config_with_env(config: &Path, env: &[(&str, &str)]) -> Output {
    let config = config.to_path_buf();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ably-tokend"))
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .env_remove("ABLY_API_KEY")
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A config file with `issuers` and the test policy (or `policy`), in a fresh directory.
fn write_config(issuers: &str, policy: &str) -> ScratchFile {
    let dir = tempdir("check-config");
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    let text = config_with(issuers)
        + &format!(
            "\n[policy]\npath = \"{}\"\n",
            dir.join("policy.toml").display()
        );
    std::fs::write(dir.join("ably-tokend.toml"), text).unwrap();
    ScratchFile::in_dir(dir, "ably-tokend.toml")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[actix_web::test]
async fn every_issuer_that_works_gets_an_ok_line_and_exit_0() {
    let rsa = TestKey::rsa("rsa1", "k1");
    let ec = TestKey::ec("ec1", "k2");
    let jwks = JwksServer::start(&[&rsa, &ec]).await;
    let provider = ProviderServer::start(&[&rsa]).await;
    let iss = provider.base();
    provider.publish_doc(&iss, &format!("{iss}/.well-known/jwks.json"));
    let config = write_config(
        &format!(
            r#"
            [[issuers]]
            name = "clerk"
            issuer = "{CLERK_ISS}"
            jwks_url = "{jwks_url}"
            algorithms = ["RS256", "ES256"]
            [[issuers]]
            name = "oidc"
            issuer = "{iss}"
            [[issuers]]
            name = "dev"
            issuer = "dev-issuer"
            secret = "0123456789abcdef0123456789abcdef-secret"
            "#,
            jwks_url = jwks.url()
        ),
        TEST_POLICY,
    );
    let out = check_config(&config).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let policy = config.parent().unwrap().join("policy.toml");
    assert_eq!(
        stdout,
        format!(
            "config   {config}: ok (3 issuers)\n\
             policy   {policy}: ok (3 roles)\n\
             issuer   ok   clerk  jwks {jwks_url}: 2 keys (k1 RS256, k2 ES256)\n\
             issuer   ok   oidc   discovery {iss}/.well-known/openid-configuration -> jwks_uri {iss}/.well-known/jwks.json: 1 key (k1 RS256)\n\
             issuer   ok   dev    shared secret present (HS256)\n\
             everything works\n",
            config = config.display(),
            policy = policy.display(),
            jwks_url = jwks.url(),
        )
    );
    assert_eq!(jwks.fetches(), 1, "tried once");
    assert_eq!(provider.doc_fetches(), 1);
    assert_eq!(provider.key_fetches(), 1);
    assert!(
        !stdout.contains("0123456789abcdef"),
        "the secret is never printed"
    );
}

#[actix_web::test]
async fn each_failing_issuer_says_why_and_the_exit_status_is_1() {
    let rsa = TestKey::rsa("rsa1", "k1");
    let ec = TestKey::ec("ec1", "only-ec");
    let down = JwksServer::start(&[&rsa]).await;
    down.stop().await;
    let ec_only = JwksServer::start(&[&ec]).await;
    let provider = ProviderServer::start(&[&rsa]).await;
    let iss = provider.base();
    provider.publish_doc(
        "https://evil.example",
        &format!("{iss}/.well-known/jwks.json"),
    );
    let slow = ProviderServer::start(&[&rsa]).await;
    slow.set_doc(DocMode::RedirectLoop);
    let config = write_config(
        &format!(
            r#"
            [[issuers]]
            name = "down"
            issuer = "{CLERK_ISS}"
            jwks_url = "{down_url}"
            [[issuers]]
            name = "rsa-only"
            issuer = "{AUTH0_ISS}"
            jwks_url = "{ec_url}"
            [[issuers]]
            name = "other-iss"
            issuer = "{iss}"
            [[issuers]]
            name = "loop"
            issuer = "{loop_iss}"
            "#,
            down_url = down.url(),
            ec_url = ec_only.url(),
            loop_iss = slow.base(),
        ),
        "version = 1\n[roles.x]\ncapabilities = [{ channel = \"a:**\", operations = [\"subscribe\"] }]\n",
    );
    let out = check_config(&config).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    assert!(lines[0].ends_with(": ok (4 issuers)"), "{stdout}");
    assert!(lines[1].starts_with("policy   FAIL "), "{stdout}");
    assert!(
        lines[1].contains("roles.x.capabilities[0].channel"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("issuer   FAIL down       ")
            && lines[2].contains("could not connect to the server of the JWKS"),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("issuer   FAIL rsa-only   ")
            && lines[3].contains("1 key (only-ec (fits no allowed algorithm))")
            && lines[3].ends_with("no key fits the issuer's algorithms (RS256)"),
        "{stdout}"
    );
    assert!(
        lines[4].starts_with("issuer   FAIL other-iss  ")
            && lines[4].contains("names issuer \"https://evil.example\""),
        "{stdout}"
    );
    assert!(
        lines[5].starts_with("issuer   FAIL loop       ")
            && lines[5].contains("redirected more than 3 times"),
        "{stdout}"
    );
    assert_eq!(lines[6], "5 problems found");
    assert_eq!(provider.key_fetches(), 0);
}

/// Each cookie issuer's line says which cookies it reads and what they hold;
/// a Bearer-only issuer's line says nothing of cookies.
#[actix_web::test]
async fn cookie_issuers_say_which_cookies_they_read_and_in_what_format() {
    let ec = TestKey::ec("ec1", "k2");
    let jwks = JwksServer::start(&[&ec]).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let auth_secret = "check-config-auth-secret-0123456789abcdef";
    let config = write_config(
        &format!(
            r#"
            [[issuers]]
            name = "supabase"
            issuer = "https://ref.supabase.co/auth/v1"
            jwks_url = "{jwks_url}"
            algorithms = ["ES256"]
            cookies = ["sb-ref-auth-token"]
            cookie_format = "supabase"
            [[issuers]]
            name = "clerk"
            issuer = "https://clerk.example.com"
            jwks_url = "http://127.0.0.1:{closed}/jwks.json"
            cookies = ["__session"]
            [[issuers]]
            name = "dev"
            issuer = "dev-issuer"
            secret = "0123456789abcdef0123456789abcdef-secret"
            [[issuers]]
            name = "authjs"
            kind = "authjs"
            secret_env = ["CHECK_AUTH_SECRET"]
            cookies = ["authjs.session-token", "__Secure-authjs.session-token"]
            "#,
            jwks_url = jwks.url()
        ),
        TEST_POLICY,
    );
    let out = check_config_with_env(&config, &[("CHECK_AUTH_SECRET", auth_secret)]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[2],
        format!(
            "issuer   ok   supabase  jwks {jwks_url}: 1 key (k2 ES256); reads cookies \
             sb-ref-auth-token (or its chunks NAME.0, NAME.1, …) as @supabase/ssr sessions \
             (cookie_format \"supabase\": \"base64-\" and base64url JSON, or the JSON itself), \
             verifying their access_token",
            jwks_url = jwks.url()
        )
    );
    // A failing issuer still says what it would read.
    assert!(lines[3].starts_with("issuer   FAIL clerk     "), "{stdout}");
    assert!(
        lines[3].ends_with(
            "; reads cookies __session (or its chunks NAME.0, NAME.1, …) holding the JWT itself \
             (cookie_format \"plain\")"
        ),
        "{stdout}"
    );
    assert_eq!(
        lines[4],
        "issuer   ok   dev       shared secret present (HS256)"
    );
    assert_eq!(
        lines[5],
        "issuer   ok   authjs    Auth.js secrets present (CHECK_AUTH_SECRET); reads cookies \
         authjs.session-token, __Secure-authjs.session-token (or their chunks NAME.0, NAME.1, …) \
         as Auth.js / NextAuth encrypted session tokens (JWE)"
    );
    assert_eq!(lines[6], "1 problem found");
    assert!(!stdout.contains(auth_secret), "the secret is never printed");
}

#[actix_web::test]
async fn a_configuration_error_names_the_field_and_exits_1() {
    let config = write_config(
        r#"
        [[issuers]]
        name = "clerk"
        issuer = "https://clerk.example.com"
        jwks_url = "http://clerk.example.com/.well-known/jwks.json"
        "#,
        TEST_POLICY,
    );
    let out = check_config(&config).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "ably-tokend: configuration: issuers[0].jwks_url: must be https (plain http is allowed only on loopback)\n"
    );
    let empty = write_config("", TEST_POLICY);
    let out = check_config(&empty).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("issuers: no issuer is configured"),
        "{}",
        text(&out.stderr)
    );
}
