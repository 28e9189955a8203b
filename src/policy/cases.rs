//! Policy test files (`*.tests.toml`, beside the policies): claims in,
//! expected capability / clientId / ttl or denial reason out. How ops review
//! a policy change before it ships: `ably-tokend policy test DIR`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{Asked, ClaimPointer, Policy, Request};
use crate::capability::Capability;
use crate::duration::parse_duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The policy under test, relative to the test file.
    policy: String,
    #[serde(default = "default_roles_claim")]
    roles_claim: String,
    #[serde(default = "default_client_id_claim")]
    client_id_claim: String,
    #[serde(default = "default_ttl")]
    default_ttl: String,
    #[serde(default = "max_ttl")]
    max_ttl: String,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

fn default_roles_claim() -> String {
    "/roles".into()
}
fn default_client_id_claim() -> String {
    "/sub".into()
}
fn default_ttl() -> String {
    "1h".into()
}
fn max_ttl() -> String {
    "24h".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    claims: toml::Value,
    /// What the client asks for: capability, client_id, ttl.
    #[serde(default)]
    ask: Option<AskSpec>,
    capability: Option<toml::Value>,
    client_id: Option<String>,
    ttl: Option<String>,
    /// The expected denial reason, e.g. "template_value_rejected".
    denied: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskSpec {
    capability: Option<toml::Value>,
    client_id: Option<String>,
    ttl: Option<String>,
}

/// One case's outcome.
pub(crate) struct CaseResult {
    pub(crate) name: String,
    /// None when it passed; else what differed.
    pub(crate) failure: Option<String>,
}

/// One test file's outcome; `error` when the file itself could not be run.
pub(crate) struct FileResult {
    pub(crate) file: PathBuf,
    pub(crate) policy: PathBuf,
    pub(crate) error: Option<String>,
    pub(crate) cases: Vec<CaseResult>,
}

fn json(value: &toml::Value) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The test files in `dir` (`*.tests.toml`), sorted.
pub(crate) fn find(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tests.toml"))
        .collect();
    files.sort();
    Ok(files)
}

pub(crate) fn run_file(file: &Path) -> FileResult {
    let mut result = FileResult {
        file: file.to_path_buf(),
        policy: PathBuf::new(),
        error: None,
        cases: Vec::new(),
    };
    let spec: TestFile = match std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|t| toml::from_str(&t).map_err(|e| e.message().to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            result.error = Some(format!("cannot read the test file: {e}"));
            return result;
        }
    };
    result.policy = file.parent().unwrap_or(Path::new(".")).join(&spec.policy);
    let setup = (|| -> Result<_, String> {
        let policy = Policy::load(&result.policy).map_err(|e| e.to_string())?;
        let roles: ClaimPointer = spec
            .roles_claim
            .parse()
            .map_err(|e| format!("roles_claim: {e}"))?;
        let sub: ClaimPointer = spec
            .client_id_claim
            .parse()
            .map_err(|e| format!("client_id_claim: {e}"))?;
        let default_ttl =
            parse_duration("default_ttl", &spec.default_ttl).map_err(|e| e.to_string())?;
        let max_ttl = parse_duration("max_ttl", &spec.max_ttl).map_err(|e| e.to_string())?;
        Ok((policy, roles, sub, default_ttl, max_ttl))
    })();
    let (policy, roles, sub, default_ttl, max_ttl) = match setup {
        Ok(s) => s,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    if spec.cases.is_empty() {
        result.error = Some("the file has no [[case]] tables".into());
        return result;
    }
    for case in &spec.cases {
        let failure = run_case(case, &policy, &roles, &sub, default_ttl, max_ttl).err();
        result.cases.push(CaseResult {
            name: case.name.clone(),
            failure,
        });
    }
    result
}

fn capability_of(value: &toml::Value, what: &str) -> Result<Capability, String> {
    Capability::from_value(&json(value)).map_err(|e| format!("{what}: {e}"))
}

fn run_case(
    case: &Case,
    policy: &Policy,
    roles: &ClaimPointer,
    sub: &ClaimPointer,
    default_ttl: Duration,
    max_ttl: Duration,
) -> Result<(), String> {
    let asked = match &case.ask {
        None => Asked::default(),
        Some(ask) => Asked {
            capability: ask
                .capability
                .as_ref()
                .map(|c| capability_of(c, "ask.capability"))
                .transpose()?,
            client_id: ask.client_id.clone(),
            ttl: ask
                .ttl
                .as_deref()
                .map(|t| parse_duration("ask.ttl", t).map_err(|e| e.to_string()))
                .transpose()?,
        },
    };
    let claims = json(&case.claims);
    let outcome = policy.evaluate(&Request {
        claims: &claims,
        roles_claim: roles,
        client_id_claim: sub,
        asked: &asked,
        default_ttl,
        max_ttl,
    });
    match (&case.denied, outcome) {
        (Some(expected), Err(denial)) if denial.reason() == expected => Ok(()),
        (Some(expected), Err(denial)) => Err(format!(
            "expected denial {expected:?}, got {:?}: {denial}",
            denial.reason()
        )),
        (Some(expected), Ok(decision)) => Err(format!(
            "expected denial {expected:?}, but it was granted {}",
            decision.capability.to_canonical_json()
        )),
        (None, Err(denial)) => Err(format!(
            "expected a grant, got denial {:?}: {denial}",
            denial.reason()
        )),
        (None, Ok(decision)) => {
            let mut problems = Vec::new();
            if let Some(expected) = &case.capability {
                let expected = capability_of(expected, "capability")?.to_canonical_json();
                let got = decision.capability.to_canonical_json();
                if expected != got {
                    problems.push(format!("capability: expected {expected}, got {got}"));
                }
            }
            if let Some(expected) = &case.client_id {
                if expected != &decision.client_id {
                    problems.push(format!(
                        "client_id: expected {expected:?}, got {:?}",
                        decision.client_id
                    ));
                }
            }
            if let Some(expected) = &case.ttl {
                let expected = parse_duration("ttl", expected).map_err(|e| e.to_string())?;
                if expected != decision.ttl {
                    problems.push(format!(
                        "ttl: expected {}, got {}",
                        humantime::format_duration(expected),
                        humantime::format_duration(decision.ttl)
                    ));
                }
            }
            if case.capability.is_none() && case.client_id.is_none() && case.ttl.is_none() {
                problems.push(
                    "the case expects nothing: give capability, client_id, ttl or denied".into(),
                );
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        }
    }
}
