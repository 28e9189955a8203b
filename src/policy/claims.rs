//! Where a policy reads the session token's claims: RFC 6901 JSON Pointers,
//! checked once when the issuer settings or the policy cases are loaded.

use std::str::FromStr;

/// An RFC 6901 JSON Pointer into the session token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPointer(String);

impl ClaimPointer {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn lookup<'v>(
        &self,
        claims: &'v serde_json::Value,
    ) -> Option<&'v serde_json::Value> {
        claims.pointer(&self.0)
    }
}

impl FromStr for ClaimPointer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.starts_with('/') {
            return Err(format!(
                "{s:?} is not a JSON Pointer: it must start with '/' (e.g. \"/sub\")"
            ));
        }
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "{s:?} is not a JSON Pointer: '~' must be followed by 0 or 1"
                ));
            }
        }
        Ok(ClaimPointer(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_pointers_follow_rfc_6901() {
        assert!("/metadata/role".parse::<ClaimPointer>().is_ok());
        assert!("/https:~1~1example.com~1roles"
            .parse::<ClaimPointer>()
            .is_ok());
        assert!("role".parse::<ClaimPointer>().is_err());
        assert!("/a~2".parse::<ClaimPointer>().is_err());
        let p: ClaimPointer = "/https:~1~1example.com~1roles".parse().unwrap();
        let claims = serde_json::json!({"https://example.com/roles": ["admin"]});
        assert_eq!(p.lookup(&claims), Some(&serde_json::json!(["admin"])));
    }
}
