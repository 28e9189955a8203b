use super::*;
use serde_json::json;

const ORDERS: &str = include_str!("../../policies/default.toml");
const CHAT: &str = include_str!("../../policies/support-chat.toml");

fn policy(text: &str) -> Policy {
    Policy::parse(Path::new("policies/test.toml"), text).unwrap()
}

fn load_error(text: &str) -> String {
    Policy::parse(Path::new("policies/test.toml"), text)
        .unwrap_err()
        .to_string()
}

fn decide(p: &Policy, claims: Value, asked: Asked) -> Result<Decision, Denial> {
    let roles: ClaimPointer = "/metadata/role".parse().unwrap();
    let sub: ClaimPointer = "/sub".parse().unwrap();
    p.evaluate(&Request {
        claims: &claims,
        roles_claim: &roles,
        client_id_claim: &sub,
        asked: &asked,
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(86400),
    })
}

#[test]
fn customer_gets_their_own_orders_and_announcements() {
    let d = decide(&policy(ORDERS), json!({"sub": "user_1"}), Asked::default()).unwrap();
    assert_eq!(d.roles, vec!["customer"]);
    assert_eq!(d.client_id, "user_1");
    assert_eq!(
        d.capability.to_canonical_json(),
        r#"{"announcements":["subscribe"],"orders:user_1:*":["history","presence","subscribe"]}"#
    );
    assert_eq!(d.ttl, Duration::from_secs(3600));
}

#[test]
fn support_role_merges_with_default_and_caps_ttl() {
    let d = decide(
        &policy(ORDERS),
        json!({"sub": "agent_7", "metadata": {"role": "support"}}),
        Asked::default(),
    )
    .unwrap();
    assert_eq!(d.roles, vec!["customer", "support"]);
    assert_eq!(
        d.capability.to_canonical_json(),
        r#"{"announcements":["subscribe"],"orders:*":["history","presence","publish","subscribe"],"orders:agent_7:*":["history","presence","subscribe"]}"#
    );
    assert_eq!(d.ttl, Duration::from_secs(900));
}

#[test]
fn roles_claim_may_be_an_array_and_unknown_roles_are_ignored() {
    let d = decide(
        &policy(CHAT),
        json!({"sub": "s1", "metadata": {"role": ["solver", "wizard"]}}),
        Asked::default(),
    )
    .unwrap();
    assert_eq!(d.roles, vec!["customer", "solver"]);
    assert_eq!(
        d.capability.to_canonical_json(),
        r#"{"queue:*":["publish","subscribe"],"session:*":["history","presence","publish","subscribe"]}"#
    );
}

#[test]
fn hostile_subjects_never_widen_a_grant() {
    for sub in ["*", "a:*", "[x]", ""] {
        let denial = decide(&policy(ORDERS), json!({"sub": sub}), Asked::default()).unwrap_err();
        assert_eq!(denial.reason(), "template_value_rejected", "{sub:?}");
    }
    // Without a {clientId} template, a wildcard or empty client id is still refused.
    let p = policy(
        r#"
        version = 1
        default_roles = ["m"]
        [roles.m]
        capabilities = [{ channel = "lobby", operations = ["subscribe"] }]
        "#,
    );
    for sub in ["*", ""] {
        let denial = decide(&p, json!({"sub": sub}), Asked::default()).unwrap_err();
        assert_eq!(denial.reason(), "client_id_claim_invalid", "{sub:?}");
    }
    // A claim template (not the client id) with "*" is rejected by the template rule.
    let p = policy(
        r#"
        version = 1
        default_roles = ["m"]
        [roles.m]
        capabilities = [{ channel = "org:{claim:/org}:*", operations = ["subscribe"] }]
        "#,
    );
    let denial = decide(&p, json!({"sub": "u", "org": "*"}), Asked::default()).unwrap_err();
    assert_eq!(denial.reason(), "template_value_rejected");
    assert!(denial.to_string().contains("{claim:/org}"), "{denial}");
}

#[test]
fn no_role_is_denied() {
    let p = policy(
        r#"
        version = 1
        [roles.admin]
        capabilities = [{ channel = "*", operations = ["*"] }]
        "#,
    );
    let denial = decide(
        &p,
        json!({"sub": "u", "metadata": {"role": "guest"}}),
        Asked::default(),
    )
    .unwrap_err();
    assert_eq!(denial, Denial::NoRole(vec!["guest".into()]));
}

#[test]
fn requested_capability_clientid_and_ttl_only_narrow() {
    let p = policy(ORDERS);
    let asked = Asked {
        capability: Some(
            Capability::parse_json(r#"{"orders:user_1:42":["subscribe","publish"],"admin":["*"]}"#)
                .unwrap(),
        ),
        client_id: Some("user_1".into()),
        ttl: Some(Duration::from_secs(600)),
    };
    let d = decide(&p, json!({"sub": "user_1"}), asked).unwrap();
    assert_eq!(
        d.capability.to_canonical_json(),
        r#"{"orders:user_1:42":["subscribe"]}"#
    );
    assert_eq!(d.ttl, Duration::from_secs(600));

    let asked = Asked {
        ttl: Some(Duration::from_secs(7 * 86400)),
        ..Asked::default()
    };
    assert_eq!(
        decide(&p, json!({"sub": "u"}), asked).unwrap().ttl,
        Duration::from_secs(86400)
    );

    let asked = Asked {
        client_id: Some("someone_else".into()),
        ..Asked::default()
    };
    assert_eq!(
        decide(&p, json!({"sub": "u"}), asked).unwrap_err(),
        Denial::ClientIdMismatch
    );

    let asked = Asked {
        capability: Some(Capability::parse_json(r#"{"admin":["publish"]}"#).unwrap()),
        ..Asked::default()
    };
    let denial = decide(&p, json!({"sub": "u"}), asked).unwrap_err();
    assert_eq!(denial.reason(), "capability_not_granted");
    assert!(denial.to_string().contains(r#"{"admin":["publish"]}"#));
}

#[test]
fn load_errors_give_line_and_field_path() {
    let e = load_error(
        "version = 1\n[roles.support]\ncapabilities = [\n  { channel = \"orders:*\", operations = [\"subscribe\"] },\n  { channel = \"orders:**\", operations = [\"subscribe\"] },\n]\n",
    );
    assert!(
        e.starts_with("policies/test.toml:5: roles.support.capabilities[1].channel: \"orders:**\" is not a valid channel pattern"),
        "{e}"
    );
    let e = load_error("version = 1\n[roles.a]\ncapabilities = [{ channel = \"x\", operations = [\"subscribe\", \"publsh\"] }]\n");
    assert!(e.starts_with("policies/test.toml:3: roles.a.capabilities[0].operations[1]: \"publsh\" is not an Ably operation"), "{e}");
    let e = load_error("version = 1\n[roles.a]\ncapabilities = [{ channel = \"x\", operations = [\"*\", \"publish\"] }]\n");
    assert!(e.contains("roles.a.capabilities[0].operations"), "{e}");
    let e = load_error("version = 1\ndefault_roles = [\"nobody\"]\n");
    assert!(
        e.starts_with("policies/test.toml:2: default_roles[0]:"),
        "{e}"
    );
    let e = load_error("version = 2\n");
    assert!(e.starts_with("policies/test.toml:1: version:"), "{e}");
    let e = load_error("version = 1\n[roles.a]\nttl = \"soon\"\ncapabilities = [{ channel = \"x\", operations = [\"subscribe\"] }]\n");
    assert!(e.starts_with("policies/test.toml:3: roles.a.ttl:"), "{e}");
    let e = load_error("version = 1\n[roles.a]\nttl = \"1ms\"\ncapabilities = [{ channel = \"x\", operations = [\"subscribe\"] }]\n");
    assert!(
        e.starts_with("policies/test.toml:3: roles.a.ttl: must be at least 1s"),
        "{e}"
    );
    let e = load_error("version = 1\n[roles.a]\ncapabilites = []\n");
    assert!(e.contains("capabilites"), "{e}");
    let e = load_error("version = 1\n[roles.a]\ncapabilities = [{ channel = \"o:{user}\", operations = [\"subscribe\"] }]\n");
    assert!(e.contains("roles.a.capabilities[0].channel"), "{e}");
}

#[test]
fn shipped_policies_load() {
    policy(ORDERS);
    policy(CHAT);
}
