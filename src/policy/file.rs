//! The policy file as written (TOML), with spans so errors can give a line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub version: Spanned<i64>,
    #[serde(default)]
    pub default_roles: Vec<Spanned<String>>,
    #[serde(default)]
    pub roles: BTreeMap<Spanned<String>, RawRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub ttl: Option<Spanned<String>>,
    pub capabilities: Spanned<Vec<RawGrant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    pub channel: Spanned<String>,
    pub operations: Spanned<Vec<Spanned<String>>>,
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
