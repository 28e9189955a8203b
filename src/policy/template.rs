//! Channel templates such as `orders:{clientId}:*` and `org:{claim:/o/id}:*`,
//! and the rule that keeps substitution from widening a grant.

use serde_json::Value;

use super::ClaimPointer;
use crate::capability::{CapabilityError, ChannelPattern};

/// Longest value inserted into a pattern.
pub(crate) const MAX_VALUE_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    ClientId,
    Claim(ClaimPointer),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelTemplate {
    raw: String,
    parts: Vec<Part>,
}

/// Why a value could not be inserted; never the value itself when it might
/// be long or hostile, only what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RejectedValue {
    #[error("{0} is missing")]
    Missing(String),
    #[error("{0} is not a string")]
    NotAString(String),
    #[error("{0} is empty")]
    Empty(String),
    #[error("{0} is longer than {MAX_VALUE_LEN} bytes")]
    TooLong(String),
    #[error("{0} holds a character that changes the pattern's meaning (* : [ ] , whitespace or control)")]
    Unsafe(String),
}

/// The values a request fills templates with.
pub(crate) struct Values<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) claims: &'a Value,
}

impl ChannelTemplate {
    pub(crate) fn parse(raw: &str) -> Result<ChannelTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err("has a '}' without a '{'".into());
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or("has a '{' without a '}'")? + open;
            let name = &rest[open + 1..close];
            let part = if name == "clientId" {
                Part::ClientId
            } else if let Some(pointer) = name.strip_prefix("claim:") {
                Part::Claim(pointer.parse().map_err(|e| format!("{{{name}}}: {e}"))?)
            } else {
                return Err(format!(
                    "{{{name}}} is not a template variable: use {{clientId}} or {{claim:/json/pointer}}"
                ));
            };
            parts.push(part);
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        let template = ChannelTemplate {
            raw: raw.to_string(),
            parts,
        };
        // A placeholder that satisfies the substitution rule shows whether
        // the template can ever yield a valid pattern. Only the reason is
        // kept: the caller names the template as written, while the error's
        // pattern is the placeholder's rendering of it.
        template.render_with(|_| Ok("x")).map_err(|e| match e {
            Rendered::Pattern(CapabilityError::InvalidPattern(_, why)) => why.to_string(),
            Rendered::Pattern(e) => e.to_string(),
            Rendered::Value(e) => e.to_string(),
        })?;
        Ok(template)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.raw
    }

    #[cfg(test)]
    fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    pub(crate) fn render(&self, values: &Values<'_>) -> Result<ChannelPattern, Rendered> {
        self.render_with(|part| match part {
            Part::ClientId => check_text(|| "{clientId}".into(), values.client_id),
            Part::Claim(pointer) => check(
                || format!("{{claim:{}}}", pointer.as_str()),
                pointer.lookup(values.claims),
            ),
            Part::Literal(_) => unreachable!("literals are copied, not looked up"),
        })
    }

    fn render_with<'v>(
        &self,
        mut lookup: impl FnMut(&Part) -> Result<&'v str, RejectedValue>,
    ) -> Result<ChannelPattern, Rendered> {
        let mut out = String::with_capacity(self.raw.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                other => out.push_str(lookup(other).map_err(Rendered::Value)?),
            }
        }
        ChannelPattern::parse(&out).map_err(Rendered::Pattern)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rendered {
    Value(RejectedValue),
    Pattern(CapabilityError),
}

/// The safe-substitution rule: a value must be a non-empty string of bounded
/// length with nothing that a channel pattern gives meaning to. `name`, the
/// placeholder for the error, is only built when a value is refused.
fn check(name: impl FnOnce() -> String, value: Option<&Value>) -> Result<&str, RejectedValue> {
    match value {
        None | Some(Value::Null) => Err(RejectedValue::Missing(name())),
        Some(Value::String(text)) => check_text(name, text),
        Some(_) => Err(RejectedValue::NotAString(name())),
    }
}

fn check_text(name: impl FnOnce() -> String, text: &str) -> Result<&str, RejectedValue> {
    if text.is_empty() {
        return Err(RejectedValue::Empty(name()));
    }
    if text.len() > MAX_VALUE_LEN {
        return Err(RejectedValue::TooLong(name()));
    }
    if text.chars().any(|c| {
        matches!(c, '*' | ':' | '[' | ']' | ',' | '{' | '}') || c.is_whitespace() || c.is_control()
    }) {
        return Err(RejectedValue::Unsafe(name()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, client_id: &str, claims: Value) -> Result<String, Rendered> {
        ChannelTemplate::parse(t)
            .unwrap()
            .render(&Values {
                client_id,
                claims: &claims,
            })
            .map(|p| p.as_str().to_string())
    }

    #[test]
    fn substitutes_client_id_and_claims() {
        assert_eq!(
            render("orders:{clientId}:*", "user_1", json!({})).unwrap(),
            "orders:user_1:*"
        );
        assert_eq!(
            render(
                "org:{claim:/o/id}:{clientId}",
                "u",
                json!({"o": {"id": "org_9"}})
            )
            .unwrap(),
            "org:org_9:u"
        );
    }

    #[test]
    fn values_that_would_widen_the_grant_are_rejected() {
        for hostile in ["*", "a:*", "[x]", "", "a b", "a,b", "x\n", "{clientId}"] {
            let r = render("orders:{clientId}:*", hostile, json!({}));
            assert!(
                matches!(r, Err(Rendered::Value(_))),
                "{hostile:?} gave {r:?}"
            );
        }
        let long = "a".repeat(MAX_VALUE_LEN + 1);
        assert!(matches!(
            render("orders:{clientId}", &long, json!({})),
            Err(Rendered::Value(RejectedValue::TooLong(_)))
        ));
    }

    #[test]
    fn double_colon_templates_render_the_spaces_channels() {
        assert_eq!(
            render("{clientId}::$space", "user_1", json!({})).unwrap(),
            "user_1::$space"
        );
        assert_eq!(
            render("{clientId}::*", "user_1", json!({})).unwrap(),
            "user_1::*"
        );
        assert_eq!(
            render("board:{claim:/team}::$cursors", "u", json!({"team": "t1"})).unwrap(),
            "board:t1::$cursors"
        );
        // A value still never adds a segment, a wildcard or a qualifier.
        for hostile in ["a:", ":", "a::b", "*", "a:*", "[meta]a", ""] {
            let r = render("{clientId}::$space", hostile, json!({}));
            assert!(
                matches!(r, Err(Rendered::Value(_))),
                "{hostile:?} gave {r:?}"
            );
        }
    }

    #[test]
    fn claims_must_be_present_non_empty_strings() {
        let t = "org:{claim:/org_id}:*";
        assert!(matches!(
            render(t, "u", json!({})),
            Err(Rendered::Value(RejectedValue::Missing(_)))
        ));
        assert!(matches!(
            render(t, "u", json!({"org_id": 7})),
            Err(Rendered::Value(RejectedValue::NotAString(_)))
        ));
        assert!(matches!(
            render(t, "u", json!({"org_id": null})),
            Err(Rendered::Value(RejectedValue::Missing(_)))
        ));
        assert!(matches!(
            render(t, "u", json!({"org_id": ""})),
            Err(Rendered::Value(RejectedValue::Empty(_)))
        ));
    }

    #[test]
    fn templates_are_checked_at_load() {
        assert!(ChannelTemplate::parse("orders:{clientId}*").is_err());
        assert!(ChannelTemplate::parse("orders:{user}").is_err());
        assert!(ChannelTemplate::parse("orders:{clientId").is_err());
        assert!(ChannelTemplate::parse("orders:clientId}").is_err());
        assert!(ChannelTemplate::parse("orders:{claim:sub}").is_err());
        assert!(ChannelTemplate::parse("orders:{clientId}:").is_err());
        assert!(ChannelTemplate::parse("::{clientId}").is_err());
        assert!(ChannelTemplate::parse("orders::{clientId}").is_ok());
        assert!(ChannelTemplate::parse("orders:{clientId}:*").is_ok());
        assert!(ChannelTemplate::parse("announcements").unwrap().is_static());
    }
}
