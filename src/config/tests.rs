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
    assert_eq!(s.server.keep_alive, Duration::from_secs(75));
    assert_eq!(s.ably.default_ttl, Duration::from_secs(3600));
    assert_eq!(s.ably.max_ttl, ABLY_MAX_TTL);
    assert_eq!(s.ably.token_format, TokenFormat::TokenRequest);
    let issuer = &s.issuers[0];
    assert_eq!(issuer.leeway, Duration::from_secs(5));
    assert_eq!(issuer.client_id_claim.as_str(), "/sub");
    assert!(issuer.cookies.is_empty());
    let jwt = issuer.jwt().expect("kind defaults to jwt");
    assert_eq!(jwt.algorithms, vec![Algorithm::RS256]);
    let KeySource::Jwks(jwks) = &jwt.keys else {
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
    assert_eq!(
        s.issuers[0].jwt().unwrap().algorithms,
        vec![Algorithm::HS256]
    );
    let rs = format!("{ok}algorithms = [\"RS256\"]");
    assert!(err(&rs).starts_with("issuers[0].algorithms[0]:"));
}

#[test]
fn limits_in_messages_read_as_before() {
    assert_eq!(
        err(&MINIMAL.replace("[ably]", "[ably]\nmax_ttl = \"48h\"")),
        "ably.max_ttl: must be more than 0 and at most 24h (Ably refuses longer tokens)"
    );
    assert_eq!(
        err(&format!("{MINIMAL}leeway = \"6m\"")),
        "issuers[0].leeway: must be at most 5m: clock skew larger than that is a broken clock"
    );
    assert_eq!(
        err(&format!("{MINIMAL}\n[server]\nmax_body_bytes = 0")),
        "server.max_body_bytes: must be between 1 and 1048576"
    );
    for keep_alive in ["500ms", "2h"] {
        assert_eq!(
            err(&format!(
                "{MINIMAL}\n[server]\nkeep_alive = \"{keep_alive}\""
            )),
            "server.keep_alive: must be between 1s and 1h: clients are told it in whole seconds, \
             and an idle connection held longer only holds a socket"
        );
    }
    let secret = MINIMAL.replace(
        "jwks_url = \"https://clerk.example.com/.well-known/jwks.json\"",
        "secret = \"short\"",
    );
    assert_eq!(
        err(&secret),
        "issuers[0].secret: must be at least 32 bytes (HS256 keys shorter than the hash are guessable)"
    );
}

#[test]
fn settings_built_in_code_match_a_file_with_the_same_values() {
    let secret = "0123456789abcdef0123456789abcdef";
    let file = Settings::from_toml(&format!(
        r#"
        [ably]
        api_key = "appId.keyId:topsecretvalue"
        [[issuers]]
        name = "dev"
        issuer = "ably-tokend-dev"
        secret = "{secret}"
        "#
    ))
    .unwrap();
    let built = Settings {
        server: ServerSettings::default(),
        ably: AblySettings::with_key("appId.keyId:topsecretvalue".parse().unwrap()),
        issuers: vec![IssuerSettings::with_secret("dev", "ably-tokend-dev", secret).unwrap()],
        policy: PolicySettings::default(),
        broker: BrokerSettings::default(),
        log: LogSettings::default(),
    };
    // Debug shows every field but secrets; compare secrets by hand.
    assert_eq!(format!("{built:?}"), format!("{file:?}"));
    let (KeySource::Secret(a), KeySource::Secret(b)) = (
        &built.issuers[0].jwt().unwrap().keys,
        &file.issuers[0].jwt().unwrap().keys,
    ) else {
        panic!("expected secret issuers")
    };
    assert_eq!(a.expose(), b.expose());
    assert!(IssuerSettings::with_secret("dev", "ably-tokend-dev", "short").is_err());
}

#[test]
fn cors_origins_are_checked_alone() {
    assert!(check_cors_origins(&["https://app.example.com".into()]).is_ok());
    let e = check_cors_origins(&["https://a.example".into(), "https://b.example/".into()])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("server.cors_allowed_origins[1]:"), "{e}");
}

const KEYS: &str = r#"
    [[ably.keys]]
    key_env = "BACKEND_KEY"
    capability = { "orders:*" = ["publish"], "Chat.Room:*" = ["subscribe", "presence"] }
    [[ably.keys]]
    key = "app.second:secondsecret"
"#;

/// `text` as a config file loaded with `env`.
fn load_with_env(name: &str, text: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
    let dir = std::env::temp_dir().join(format!("tokend-keys-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, text).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let result = Settings::load_from(&file, true, &env).map_err(|e| e.to_string());
    std::fs::remove_dir_all(&dir).ok();
    result
}

#[test]
fn keys_tables_carry_capabilities_and_the_first_signs() {
    let s = load_with_env("ok", KEYS, &[("BACKEND_KEY", "app.first:firstsecret")]).unwrap();
    let names: Vec<&str> = s.ably.keys.iter().map(|k| k.name()).collect();
    assert_eq!(names, ["app.first", "app.second"]);
    assert_eq!(s.ably.signing_key().name(), "app.first");
    assert_eq!(s.ably.signing_key().secret().expose(), b"firstsecret");
    // Channel names keep their case and dots.
    assert_eq!(
        s.ably.signing_key().capability().to_canonical_json(),
        r#"{"Chat.Room:*":["presence","subscribe"],"orders:*":["publish"]}"#
    );
    assert_eq!(
        s.ably.keys[1].capability().to_canonical_json(),
        r#"{"*":["*"]}"#
    );
}

#[test]
fn keys_tables_name_the_field_and_never_the_secret() {
    let missing = load_with_env("missing", KEYS, &[]).unwrap_err();
    assert_eq!(
        missing,
        "ably.keys[0].key_env: the environment variable BACKEND_KEY is not set"
    );
    let bad = load_with_env("bad", KEYS, &[("BACKEND_KEY", "hunter2-no-colon")]).unwrap_err();
    assert!(bad.starts_with("ably.keys[0].key_env: "), "{bad}");
    assert!(!bad.contains("hunter2"), "{bad}");
    let env = [("BACKEND_KEY", "app.first:firstsecret")];
    let cases = [
        (
            KEYS.replace(r#""orders:*" = ["publish"]"#, r#""orders:*" = ["publsh"]"#),
            "ably.keys[0].capability: ",
        ),
        (
            KEYS.replace(r#""orders:*" = ["publish"]"#, r#""orders**" = ["publish"]"#),
            "ably.keys[0].capability: ",
        ),
        (
            format!("{KEYS}\n[[ably.keys]]\nkey = \"app.third:s\"\ncapability = {{}}"),
            "ably.keys[2].capability: ",
        ),
        (
            KEYS.replace("app.second:secondsecret", "app.first:othersecret"),
            "ably.keys[1]: key app.first is listed twice",
        ),
        (
            KEYS.replace("key = \"app.second", "key_env = \"X\"\nkey = \"app.second"),
            "ably.keys[1]: set key or key_env, not both",
        ),
        (
            KEYS.replace("key = \"app.second:secondsecret\"", ""),
            "ably.keys[1]: set key_env",
        ),
        (
            KEYS.replace("app.second:secondsecret", "app.second:"),
            "ably.keys[1].key: ",
        ),
        (
            format!("[ably]\napi_key = \"app.x:xsecret\"\n{KEYS}"),
            "ably.keys: cannot be combined with ably.api_key",
        ),
    ];
    for (text, expected) in cases {
        let e = load_with_env("case", &text, &env).unwrap_err();
        assert!(e.starts_with(expected), "{expected:?}: {e}");
        for secret in ["firstsecret", "secondsecret", "othersecret", "xsecret"] {
            assert!(!e.contains(secret), "{e}");
        }
    }
    // ABLY_API_KEY counts as ably.api_key.
    let e = load_with_env(
        "env",
        KEYS,
        &[
            ("BACKEND_KEY", "app.first:firstsecret"),
            ("ABLY_API_KEY", "app.x:xs"),
        ],
    )
    .unwrap_err();
    assert!(e.contains("ABLY_API_KEY"), "{e}");
}

#[test]
fn broker_liveness_settings_default_to_ablys_and_are_bounded() {
    let s = Settings::from_toml(MINIMAL).unwrap();
    assert_eq!(s.broker.presence_grace, Duration::from_secs(15));
    assert_eq!(s.broker.max_idle_interval, Duration::from_secs(15));
    let s = Settings::from_toml(&format!(
        "{MINIMAL}\n[broker]\npresence_grace = \"0s\"\nmax_idle_interval = \"500ms\""
    ))
    .unwrap();
    assert_eq!(s.broker.presence_grace, Duration::ZERO);
    assert_eq!(s.broker.max_idle_interval, Duration::from_millis(500));
    let e = err(&format!("{MINIMAL}\n[broker]\npresence_grace = \"3m\""));
    assert_eq!(
        e,
        "broker.presence_grace: \"3m\" is out of range: it must be from 0s to 2m"
    );
    let e = err(&format!(
        "{MINIMAL}\n[broker]\nmax_idle_interval = \"10ms\""
    ));
    assert_eq!(
        e,
        "broker.max_idle_interval: \"10ms\" is out of range: it must be from 100ms to 5m"
    );
    let e = err(&format!(
        "{MINIMAL}\n[broker]\nmax_idle_interval = \"often\""
    ));
    assert!(e.starts_with("broker.max_idle_interval:"), "{e}");
}

const AUTHJS: &str = r#"
    [ably]
    api_key = "appId.keyId:topsecretvalue"
    [[issuers]]
    name = "clerk"
    issuer = "https://clerk.example.com"
    jwks_url = "https://clerk.example.com/.well-known/jwks.json"
    [[issuers]]
    name = "app"
    kind = "authjs"
    secret_env = ["AUTH_SECRET", "AUTH_SECRET_1"]
    cookies = ["authjs.session-token", "__Secure-authjs.session-token"]
    roles_claim = "/role"
"#;

const AUTH_SECRET: &str = "this-is-the-app-auth-secret-0123";
const AUTH_SECRET_1: &str = "this-was-the-app-auth-secret-old";

fn authjs(text: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    load_with_env(&format!("authjs-{n}"), text, env)
}

fn both_secrets() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AUTH_SECRET", AUTH_SECRET),
        ("AUTH_SECRET_1", AUTH_SECRET_1),
    ]
}

#[test]
fn authjs_issuers_read_their_secrets_from_the_environment_in_order() {
    let s = authjs(AUTHJS, &both_secrets()).unwrap();
    let issuer = &s.issuers[1];
    assert_eq!(
        issuer.cookies,
        vec!["authjs.session-token", "__Secure-authjs.session-token"]
    );
    assert_eq!(issuer.leeway, Duration::from_secs(5));
    assert_eq!(issuer.roles_claim.as_str(), "/role");
    let IssuerKind::Authjs(authjs) = &issuer.kind else {
        panic!("expected an authjs issuer")
    };
    let names: Vec<&str> = authjs.secrets.iter().map(|s| s.env.as_str()).collect();
    assert_eq!(names, vec!["AUTH_SECRET", "AUTH_SECRET_1"]);
    assert_eq!(authjs.secrets[1].secret.expose(), AUTH_SECRET_1.as_bytes());
    let debug = format!("{s:?}");
    assert!(
        !debug.contains(AUTH_SECRET) && !debug.contains(AUTH_SECRET_1),
        "{debug}"
    );
}

#[test]
fn authjs_errors_name_the_field_and_never_the_secret() {
    let only_new = [("AUTH_SECRET", AUTH_SECRET)];
    assert_eq!(
        authjs(AUTHJS, &only_new).unwrap_err(),
        "issuers[1].secret_env[1]: environment variable AUTH_SECRET_1 is not set"
    );
    let short = [
        ("AUTH_SECRET", "short-secret"),
        ("AUTH_SECRET_1", AUTH_SECRET_1),
    ];
    let e = authjs(AUTHJS, &short).unwrap_err();
    assert!(
        e.starts_with(
            "issuers[1].secret_env[0]: environment variable AUTH_SECRET holds fewer than 32 bytes"
        ),
        "{e}"
    );
    assert!(!e.contains("short-secret"), "{e}");
    let cases = [
        ("kind = \"authjs\"", "kind = \"auth.js\"", "issuers[1].kind: \"auth.js\" is not a kind of issuer"),
        ("roles_claim", "issuer = \"x\"\nroles_claim", "issuers[1].issuer: does not apply to kind = \"authjs\""),
        ("roles_claim", "jwks_url = \"https://x.example/jwks\"\nroles_claim", "issuers[1].jwks_url: does not apply"),
        ("roles_claim", "jwks_timeout = \"5s\"\nroles_claim", "issuers[1].jwks_timeout: does not apply"),
        ("roles_claim", "algorithms = [\"RS256\"]\nroles_claim", "issuers[1].algorithms: does not apply"),
        ("roles_claim", "audiences = []\nroles_claim", "issuers[1].audiences: does not apply"),
        ("roles_claim", "secret = \"0123456789abcdef0123456789abcdef\"\nroles_claim", "issuers[1].secret: an authjs issuer's secrets come from the environment only"),
        ("secret_env = [\"AUTH_SECRET\", \"AUTH_SECRET_1\"]", "secret_env = []", "issuers[1].secret_env: name the environment variables"),
        ("secret_env = [\"AUTH_SECRET\", \"AUTH_SECRET_1\"]", "", "issuers[1].secret_env: name the environment variables"),
        ("\"AUTH_SECRET_1\"]", "\"AUTH_SECRET\"]", "issuers[1].secret_env[1]: AUTH_SECRET is listed twice"),
        ("cookies = [\"authjs.session-token\", \"__Secure-authjs.session-token\"]", "", "issuers[1].cookies: an authjs issuer reads sessions from cookies"),
        ("\"__Secure-authjs.session-token\"]", "\"a b\"]", "issuers[1].cookies[1]: \"a b\" is not a cookie name"),
        ("\"__Secure-authjs.session-token\"]", "\"authjs.session-token\"]", "issuers[1].cookies[1]: \"authjs.session-token\" is listed twice"),
        // secret_env on a jwt issuer
        ("jwks_url = \"https", "secret_env = [\"AUTH_SECRET\"]\njwks_url = \"https", "issuers[0].secret_env: applies to kind = \"authjs\" only"),
        // a cookie listed by two issuers
        ("jwks_url = \"https", "cookies = [\"__Secure-authjs.session-token\"]\njwks_url = \"https", "issuers[1].cookies[1]: \"__Secure-authjs.session-token\" is already listed by issuers[0]"),
    ];
    for (from, to, expected) in cases {
        let text = AUTHJS.replacen(from, to, 1);
        let e = authjs(&text, &both_secrets()).unwrap_err();
        assert!(e.starts_with(expected), "{from} → {to}: {e}");
        assert!(
            !e.contains(AUTH_SECRET) && !e.contains(AUTH_SECRET_1),
            "{e}"
        );
    }
}

#[test]
fn jwt_issuers_may_list_cookies_and_still_need_an_issuer() {
    let text = MINIMAL.replace("jwks_url", "cookies = [\"sb-abcd-auth-token\"]\njwks_url");
    let s = Settings::from_toml(&text).unwrap();
    assert_eq!(s.issuers[0].cookies, vec!["sb-abcd-auth-token"]);
    let e = err(&MINIMAL.replace("issuer = \"https://clerk.example.com\"", ""));
    assert!(e.starts_with("issuers[0].issuer: must not be empty"), "{e}");
    let e = err(&MINIMAL.replace("jwks_url", "kind = \"jwt\"\nkind2 = 1\njwks_url"));
    assert!(e.contains("kind2"), "{e}");
}
