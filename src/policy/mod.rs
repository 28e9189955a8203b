//! The policy: roles (read from a claim) mapped to channel patterns and
//! operations. A file is compiled once into a `Policy` that answers requests
//! without re-parsing; every load error names the file, line and field path.

pub(crate) mod cases;
mod claims;
mod file;
mod store;
pub(crate) mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::capability::{Capability, OpSet, MAX_RESOURCES};
use crate::duration::parse_duration;
pub use claims::ClaimPointer;
use template::{ChannelTemplate, Rendered, Values};

pub(crate) use store::{ReloadOutcome, Store};

/// Largest policy file read.
pub(crate) const MAX_POLICY_BYTES: u64 = 1024 * 1024;
const MAX_ROLES: usize = 1000;
const MAX_GRANTS_PER_ROLE: usize = 100;
/// Most roles read from one token's claim.
const MAX_CLAIMED_ROLES: usize = 64;
const MAX_CLIENT_ID_LEN: usize = 256;

/// A load-time error: `file:line: field.path: reason`.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyError {
    pub(crate) file: PathBuf,
    pub(crate) line: Option<usize>,
    pub(crate) path: String,
    pub(crate) reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.reason)
    }
}

#[derive(Debug, Clone)]
struct Grant {
    template: ChannelTemplate,
    ops: OpSet,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) ttl: Option<Duration>,
    grants: Vec<Grant>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) source: PathBuf,
    default_roles: Vec<String>,
    roles: BTreeMap<String, Role>,
}

/// Why the policy refuses a signed-in user (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("no role of this user is defined in the policy (roles from the token: {0:?})")]
    NoRole(Vec<String>),
    #[error("the user's roles grant no capability")]
    RoleGrantsNothing,
    #[error("role {role:?}, channel {template:?}: {why}; the value is never inserted")]
    TemplateValueRejected {
        role: String,
        template: String,
        why: String,
    },
    #[error("the client id claim {claim} {why}")]
    ClientIdInvalid { claim: String, why: &'static str },
    #[error("the requested clientId is not the one this user is given")]
    ClientIdMismatch,
    #[error("the requested capability {asked} is not granted to this user")]
    CapabilityNotGranted { asked: String },
}

impl Denial {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Denial::NoRole(_) => "no_role",
            Denial::RoleGrantsNothing => "role_grants_nothing",
            Denial::TemplateValueRejected { .. } => "template_value_rejected",
            Denial::ClientIdInvalid { .. } => "client_id_claim_invalid",
            Denial::ClientIdMismatch => "client_id_mismatch",
            Denial::CapabilityNotGranted { .. } => "capability_not_granted",
        }
    }
}

/// What the client asked for; it can only narrow the grant.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub capability: Option<Capability>,
    pub client_id: Option<String>,
    pub ttl: Option<Duration>,
}

/// Everything the policy needs to answer one request.
pub struct Request<'a> {
    pub claims: &'a Value,
    pub roles_claim: &'a ClaimPointer,
    pub client_id_claim: &'a ClaimPointer,
    pub asked: &'a Asked,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Decision {
    /// Roles that are defined in the policy and applied, in policy order.
    pub roles: Vec<String>,
    /// How many roles the token named that the policy does not define.
    pub(crate) ignored_roles: usize,
    pub capability: Capability,
    pub client_id: String,
    pub ttl: Duration,
}

/// One capability rule as applied to a request.
#[derive(Debug, Clone)]
pub struct RuleTrace {
    pub(crate) role: String,
    pub(crate) template: String,
    /// The rendered pattern, or why a value was rejected.
    pub(crate) outcome: Result<String, String>,
    pub(crate) operations: Vec<&'static str>,
}

/// How a decision was reached, for `policy explain`.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub(crate) claimed_roles: Vec<String>,
    pub(crate) default_roles: Vec<String>,
    pub(crate) undefined_roles: Vec<String>,
    pub(crate) rules: Vec<RuleTrace>,
    pub(crate) granted: Option<Capability>,
    pub(crate) ttl_caps: Vec<(String, Duration)>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let error = |reason: String| PolicyError {
            file: path.to_path_buf(),
            line: None,
            path: String::new(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| error(format!("cannot read: {e}")))?;
        if meta.len() > MAX_POLICY_BYTES {
            return Err(error(format!("larger than {MAX_POLICY_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        Policy::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let at = |span: std::ops::Range<usize>, field: String, reason: String| PolicyError {
            file: path.to_path_buf(),
            line: Some(file::line_of(text, span.start)),
            path: field,
            reason,
        };
        let raw: file::RawPolicy = toml::from_str(text).map_err(|e| PolicyError {
            file: path.to_path_buf(),
            line: e.span().map(|s| file::line_of(text, s.start)),
            path: String::new(),
            reason: e.message().trim().to_string(),
        })?;
        if *raw.version.get_ref() != 1 {
            return Err(at(
                raw.version.span(),
                "version".into(),
                format!(
                    "{} is not a supported version (this build reads version 1)",
                    raw.version.get_ref()
                ),
            ));
        }
        if raw.roles.len() > MAX_ROLES {
            return Err(at(
                0..0,
                "roles".into(),
                format!("more than {MAX_ROLES} roles"),
            ));
        }
        let mut roles = BTreeMap::new();
        for (name, role) in &raw.roles {
            let role_path = format!("roles.{}", name.get_ref());
            if !valid_role_name(name.get_ref()) {
                return Err(at(
                    name.span(),
                    role_path,
                    "a role name is letters, digits, '_', '-', '.' or ':'".into(),
                ));
            }
            let ttl = match &role.ttl {
                None => None,
                Some(ttl) => {
                    let d = parse_duration(&format!("{role_path}.ttl"), ttl.get_ref())
                        .map_err(|e| at(ttl.span(), String::new(), e.to_string()))?;
                    if d < Duration::from_secs(1) {
                        return Err(at(
                            ttl.span(),
                            format!("{role_path}.ttl"),
                            "must be at least 1s (Ably counts token lifetimes in milliseconds)"
                                .into(),
                        ));
                    }
                    Some(d)
                }
            };
            let list = role.capabilities.get_ref();
            if list.is_empty() {
                return Err(at(
                    role.capabilities.span(),
                    format!("{role_path}.capabilities"),
                    "is empty: a role must grant something".into(),
                ));
            }
            if list.len() > MAX_GRANTS_PER_ROLE {
                return Err(at(
                    role.capabilities.span(),
                    format!("{role_path}.capabilities"),
                    format!("more than {MAX_GRANTS_PER_ROLE} entries"),
                ));
            }
            let mut grants = Vec::with_capacity(list.len());
            for (i, grant) in list.iter().enumerate() {
                let grant_path = format!("{role_path}.capabilities[{i}]");
                let template = ChannelTemplate::parse(grant.channel.get_ref()).map_err(|why| {
                    at(
                        grant.channel.span(),
                        format!("{grant_path}.channel"),
                        format!(
                            "{:?} is not a valid channel pattern: {why}",
                            grant.channel.get_ref()
                        ),
                    )
                })?;
                let names: Vec<&str> = grant
                    .operations
                    .get_ref()
                    .iter()
                    .map(|s| s.get_ref().as_str())
                    .collect();
                let ops = OpSet::parse(&names).map_err(|e| {
                    // Point at the offending operation when there is one.
                    let bad = grant
                        .operations
                        .get_ref()
                        .iter()
                        .enumerate()
                        .find(|(_, op)| {
                            op.get_ref() != "*"
                                && crate::capability::Operation::parse(op.get_ref()).is_none()
                        });
                    match bad {
                        Some((j, op)) => at(
                            op.span(),
                            format!("{grant_path}.operations[{j}]"),
                            e.to_string(),
                        ),
                        None => at(
                            grant.operations.span(),
                            format!("{grant_path}.operations"),
                            e.to_string(),
                        ),
                    }
                })?;
                grants.push(Grant { template, ops });
            }
            roles.insert(
                name.get_ref().clone(),
                Role {
                    name: name.get_ref().clone(),
                    description: role.description.clone(),
                    ttl,
                    grants,
                },
            );
        }
        let mut default_roles = Vec::new();
        for (i, role) in raw.default_roles.iter().enumerate() {
            if !roles.contains_key(role.get_ref()) {
                return Err(at(
                    role.span(),
                    format!("default_roles[{i}]"),
                    format!("{:?} is not defined under [roles]", role.get_ref()),
                ));
            }
            default_roles.push(role.get_ref().clone());
        }
        Ok(Policy {
            source: path.to_path_buf(),
            default_roles,
            roles,
        })
    }

    pub(crate) fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    pub(crate) fn role_names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    pub fn evaluate(&self, request: &Request<'_>) -> Result<Decision, Denial> {
        self.decide(request, None)
    }

    pub(crate) fn explain(&self, request: &Request<'_>) -> (Trace, Result<Decision, Denial>) {
        let mut trace = Trace::default();
        let result = self.decide(request, Some(&mut trace));
        (trace, result)
    }

    fn decide(
        &self,
        request: &Request<'_>,
        mut trace: Option<&mut Trace>,
    ) -> Result<Decision, Denial> {
        let claimed = claimed_roles(request.roles_claim.lookup(request.claims));
        let mut applied: Vec<&Role> = Vec::new();
        let mut undefined = Vec::new();
        for name in self.default_roles.iter().chain(claimed.iter()) {
            match self.roles.get(name) {
                Some(role) if !applied.iter().any(|r| r.name == role.name) => applied.push(role),
                Some(_) => {}
                None => undefined.push(name.clone()),
            }
        }
        if let Some(t) = trace.as_deref_mut() {
            t.claimed_roles = claimed.clone();
            t.default_roles = self.default_roles.clone();
            t.undefined_roles = undefined.clone();
        }
        if !undefined.is_empty() {
            tracing::debug!(roles = ?undefined, "roles not defined in the policy are ignored");
        }
        if applied.is_empty() {
            return Err(Denial::NoRole(claimed));
        }
        // Templates are rendered before the client id is judged, so a hostile
        // value is reported as the template rejection it would cause.
        let raw_client_id = match request.client_id_claim.lookup(request.claims) {
            Some(Value::String(id)) => id.as_str(),
            _ => "",
        };
        let values = Values {
            client_id: raw_client_id,
            claims: request.claims,
        };
        let mut granted = Capability::new();
        for role in &applied {
            for grant in &role.grants {
                let rendered = grant.template.render(&values);
                if let Some(t) = trace.as_deref_mut() {
                    t.rules.push(RuleTrace {
                        role: role.name.clone(),
                        template: grant.template.as_str().to_string(),
                        outcome: rendered
                            .as_ref()
                            .map(|p| p.as_str().to_string())
                            .map_err(|e| describe(e.clone())),
                        operations: grant.ops.names(),
                    });
                }
                match rendered {
                    Ok(pattern) => granted.grant(pattern, grant.ops),
                    Err(e) => {
                        return Err(Denial::TemplateValueRejected {
                            role: role.name.clone(),
                            template: grant.template.as_str().to_string(),
                            why: describe(e),
                        })
                    }
                }
            }
        }
        if let Some(t) = trace {
            t.granted = Some(granted.clone());
            t.ttl_caps = applied
                .iter()
                .filter_map(|r| r.ttl.map(|d| (r.name.clone(), d)))
                .collect();
        }
        if granted.is_empty() {
            return Err(Denial::RoleGrantsNothing);
        }
        let client_id = client_id(request)?;
        if granted.len() > MAX_RESOURCES {
            tracing::warn!(
                resources = granted.len(),
                "capability is larger than Ably accepts"
            );
        }
        if let Some(asked) = &request.asked.client_id {
            if asked != &client_id {
                return Err(Denial::ClientIdMismatch);
            }
        }
        let capability = match &request.asked.capability {
            None => granted,
            Some(asked) => {
                let narrowed = asked.narrowed_by(&granted);
                if narrowed.is_empty() {
                    let mut shown = asked.to_canonical_json();
                    if let Some((cut, _)) = shown.char_indices().nth(200) {
                        shown.truncate(cut);
                        shown.push('…');
                    }
                    return Err(Denial::CapabilityNotGranted { asked: shown });
                }
                narrowed
            }
        };
        let cap = applied
            .iter()
            .filter_map(|r| r.ttl)
            .fold(request.max_ttl, Duration::min);
        let ttl = request.asked.ttl.unwrap_or(request.default_ttl).min(cap);
        Ok(Decision {
            roles: applied.iter().map(|r| r.name.clone()).collect(),
            ignored_roles: undefined.len(),
            capability,
            client_id,
            ttl,
        })
    }
}

fn describe(e: Rendered) -> String {
    match e {
        Rendered::Value(v) => v.to_string(),
        Rendered::Pattern(p) => p.to_string(),
    }
}

fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
}

fn claimed_roles(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(role)) => vec![role.clone()],
        Some(Value::Array(roles)) => roles
            .iter()
            .filter_map(Value::as_str)
            .take(MAX_CLAIMED_ROLES)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn client_id(request: &Request<'_>) -> Result<String, Denial> {
    let invalid = |why| Denial::ClientIdInvalid {
        claim: request.client_id_claim.as_str().to_string(),
        why,
    };
    let id = match request.client_id_claim.lookup(request.claims) {
        Some(Value::String(id)) => id,
        Some(_) => return Err(invalid("is not a string")),
        None => return Err(invalid("is missing")),
    };
    if id.is_empty() {
        return Err(invalid("is empty"));
    }
    // Ably reads "*" as "any client id": a user must never be given it.
    if id == "*" {
        return Err(invalid("is the wildcard \"*\""));
    }
    if id.len() > MAX_CLIENT_ID_LEN {
        return Err(invalid("is longer than 256 bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid("holds control characters"));
    }
    Ok(id.clone())
}

#[cfg(test)]
mod tests;
