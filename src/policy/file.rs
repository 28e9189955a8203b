//! The policy file as written (TOML), with spans so errors can give a line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub(crate) version: Spanned<i64>,
    #[serde(default)]
    pub(crate) default_roles: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) roles: BTreeMap<Spanned<String>, RawRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) ttl: Option<Spanned<String>>,
    pub(crate) capabilities: Spanned<Vec<RawGrant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrant {
    pub(crate) channel: Spanned<String>,
    pub(crate) operations: Spanned<Vec<Spanned<String>>>,
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
