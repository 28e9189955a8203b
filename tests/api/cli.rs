//! The command line, run as a user would run it.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::*;

fn tokend(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ably-tokend"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("ABLY_API_KEY")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn policy_check_accepts_the_shipped_policies() {
    let out = tokend(&[
        "policy",
        "check",
        "policies/default.toml",
        "policies/support-chat.toml",
        "policies/spaces-board.toml",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ok: policies/default.toml (2 roles)\nok: policies/support-chat.toml (2 roles)\nok: policies/spaces-board.toml (2 roles)\n"
    );
}

#[test]
fn policy_check_reports_file_line_and_field_and_exits_1() {
    let (bad, err) = policy_check_exits_1(
        "bad.toml",
        "version = 1\n[roles.support]\ncapabilities = [\n  { channel = \"orders:**\", operations = [\"subscribe\"] },\n]\n",
    );
    assert!(
        err.starts_with(&format!(
            "{}:4: roles.support.capabilities[0].channel: \"orders:**\" is not a valid channel pattern",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn policy_check_says_why_a_pattern_is_invalid_once_on_one_line() {
    let (bad, err) = policy_check_exits_1(
        "colon.toml",
        "version = 1\n[roles.board]\ncapabilities = [{ channel = \"board:\", operations = [\"subscribe\"] }]\n",
    );
    assert_eq!(
        err,
        format!(
            "{}:3: roles.board.capabilities[0].channel: \"board:\" is not a valid channel pattern: it ends with ':'; write ':*' for every channel under it\n",
            bad.display()
        )
    );
}

#[test]
fn policy_test_runs_the_shipped_policy_tests() {
    let out = tokend(&["policy", "test", "policies"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("  ok    a sub of * cannot widen orders:{clientId}:*"),
        "{text}"
    );
    assert!(
        text.lines().last().unwrap().ends_with(" passed, 0 failed"),
        "{text}"
    );
    let passed: usize = text
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(passed >= 19, "{text}");
    assert!(
        text.contains("  ok    a sub holding :: cannot reach another user's scratch space"),
        "{text}"
    );
}

#[test]
fn policy_test_reports_each_failure_and_exits_1() {
    let dir = tempdir();
    std::fs::copy("policies/default.toml", dir.join("default.toml")).unwrap();
    std::fs::write(
        dir.join("default.tests.toml"),
        r#"
        policy = "default.toml"
        [[case]]
        name = "right"
        claims = { sub = "u1" }
        client_id = "u1"
        [[case]]
        name = "wrong capability"
        claims = { sub = "u1" }
        capability = { "orders:*" = ["publish"] }
        [[case]]
        name = "wrong denial"
        claims = { sub = "*" }
        denied = "no_role"
        "#,
    )
    .unwrap();
    let out = tokend(&["policy", "test", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("  ok    right"), "{text}");
    assert!(text.contains(r#"  FAIL  wrong capability: capability: expected {"orders:*":["publish"]}, got {"announcements":["subscribe"],"orders:u1:*":["history","presence","subscribe"]}"#), "{text}");
    assert!(
        text.contains(
            r#"  FAIL  wrong denial: expected denial "no_role", got "template_value_rejected""#
        ),
        "{text}"
    );
    assert!(text.ends_with("1 passed, 2 failed\n"), "{text}");
}

#[test]
fn policy_explain_shows_roles_rules_and_the_capability() {
    let out = explain_default_policy(
        r#"{"sub":"agent_7","metadata":{"role":"support"}}"#,
        &["--roles-claim", "/metadata/role"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("result:        GRANTED"), "{text}");
    assert!(
        text.contains("orders:{clientId}:*  ->  orders:agent_7:*"),
        "{text}"
    );
    assert!(text.contains("ttl:           15m"), "{text}");
    assert!(text.contains(r#"capability:    {"announcements":["subscribe"],"orders:*":["history","presence","publish","subscribe"],"orders:agent_7:*":["history","presence","subscribe"]}"#), "{text}");
}

#[test]
fn policy_explain_says_why_a_user_is_denied_and_exits_1() {
    let out = explain_default_policy(r#"{"sub":"a:*"}"#, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("DENIED (template_value_rejected)"), "{text}");
    assert!(text.contains("REJECTED"), "{text}");
}

#[test]
fn token_request_signs_and_token_inspect_verifies() {
    let out = token_request(
        r#"{"chat:*":["subscribe"]}"#,
        &["--client-id", "alice", "--ttl", "30m"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let request: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(request["ttl"], 1_800_000);
    assert_eq!(request["clientId"], "alice");
    assert_eq!(request["mac"], independent_mac(&request));
    let text = request.to_string();

    let ok = tokend(&["token", "inspect", &text, "--key", API_KEY]);
    assert!(ok.status.success());
    let shown = stdout(&ok);
    assert!(shown.contains("kind:        Ably TokenRequest"), "{shown}");
    assert!(shown.contains("chat:*: subscribe"), "{shown}");
    assert!(shown.contains("ttl:         30m"), "{shown}");
    assert!(shown.contains("verified:    yes"), "{shown}");

    let bad = tokend(&["token", "inspect", &text, "--key", "appId.keyId:wrong"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("verified:    NO: the mac does not match the key"));
}

#[test]
fn token_inspect_decodes_an_ably_jwt_in_words() {
    let out = token_request(r#"{"*":["*"]}"#, &["--jwt"]);
    let jwt = stdout(&out).trim().to_string();
    let claims = independent_jwt_claims(&jwt);
    assert_eq!(claims["x-ably-capability"], r#"{"*":["*"]}"#);
    let shown = tokend(&["token", "inspect", &jwt, "--key", API_KEY]);
    let text = stdout(&shown);
    assert!(shown.status.success(), "{text}");
    assert!(text.contains("kind:        Ably JWT"), "{text}");
    assert!(
        text.contains("(in 1h)") || text.contains("(in 59m"),
        "{text}"
    );
    assert!(text.contains("verified:    yes"), "{text}");
}

#[test]
fn token_inspect_verifies_an_upstream_jwt_against_a_jwks_file() {
    let key = TestKey::rsa("rsa1", "k1");
    let session = key.sign(clerk_header(), &clerk_claims("user_1", None));
    let jwks = scratch_file(
        "cli",
        "jwks.json",
        &serde_json::json!({"keys": [key.jwk()]}).to_string(),
    );
    let out = tokend(&["token", "inspect", &session, "--jwks", path(&jwks)]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("session JWT"), "{text}");
    assert!(text.contains(r#"sub:         "user_1""#), "{text}");
    assert!(
        text.contains("verified:    yes, signature verified with JWKS key"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(tokend(&["policy", "explain"]).status.code(), Some(2));
    assert_eq!(tokend(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn serve_with_a_bad_config_names_the_field_and_hides_the_secret() {
    let config = scratch_file(
        "cli",
        "bad.toml",
        "[ably]\napi_key = \"appIdkeyId:hunter2-secret\"\n[[issuers]]\nname = \"x\"\nissuer = \"x\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    );
    let out = tokend(&["serve", "--config", path(&config)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ably.api_key:"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!stdout(&out).contains("hunter2"));
}

#[test]
fn help_never_shows_a_secret_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_ably-tokend"))
        .args(["token", "request", "--help"])
        .env("ABLY_API_KEY", "appId.keyId:hunter2-secret")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
}

/// A scratch directory for this file's tests (the shared helper, tagged "cli"),
/// removed when dropped.
fn tempdir() -> TempDir {
    crate::helpers::tempdir("cli")
}

/// `policy explain` of the shipped default policy for a user with `claims`.
fn explain_default_policy(claims: &str, more_args: &[&str]) -> Output {
    let mut args = vec![
        "policy",
        "explain",
        "--policy",
        "policies/default.toml",
        "--claims",
        claims,
    ];
    args.extend_from_slice(more_args);
    tokend(&args)
}

/// `token request` signed with the tests' API key for `capability`.
fn token_request(capability: &str, more_args: &[&str]) -> Output {
    let mut args = vec![
        "token",
        "request",
        "--key",
        API_KEY,
        "--capability",
        capability,
    ];
    args.extend_from_slice(more_args);
    tokend(&args)
}

/// Writes `policy` to a scratch file called `name`, runs `policy check` on it,
/// asserts that it exits 1 and returns the file and what it said on stderr.
fn policy_check_exits_1(name: &str, policy: &str) -> (ScratchFile, String) {
    let file = scratch_file("cli", name, policy);
    let out = tokend(&["policy", "check", path(&file)]);
    assert_eq!(out.status.code(), Some(1));
    (file, stderr(&out))
}

/// `file` as a command-line argument.
fn path(file: &Path) -> &str {
    file.to_str().unwrap()
}
