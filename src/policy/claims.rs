//! Where a policy reads the session token's claims: RFC 6901 JSON Pointers,
//! checked once when the issuer settings or the policy cases are loaded.

use std::str::FromStr;

/// An RFC 6901 JSON Pointer into the session token's claims, split into its
/// unescaped reference tokens when it is read so a lookup allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPointer {
    raw: String,
    tokens: Vec<String>,
}

impl ClaimPointer {
    pub(crate) fn as_str(&self) -> &str {
        &self.raw
    }

    /// What `serde_json::Value::pointer` finds for the same pointer.
    pub(crate) fn lookup<'v>(
        &self,
        claims: &'v serde_json::Value,
    ) -> Option<&'v serde_json::Value> {
        use serde_json::Value;
        self.tokens
            .iter()
            .try_fold(claims, |target, token| match target {
                Value::Object(map) => map.get(token),
                Value::Array(list) => array_index(token).and_then(|i| list.get(i)),
                _ => None,
            })
    }
}

/// An array index per RFC 6901 §4: decimal digits, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
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
        // RFC 6901 §4: "~1" becomes "/" before "~0" becomes "~".
        let tokens = s[1..]
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        Ok(ClaimPointer {
            raw: s.to_string(),
            tokens,
        })
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

    #[test]
    fn lookups_find_what_serde_json_pointer_finds() {
        let claims = serde_json::json!({
            "sub": "u1",
            "a/b": {"m~n": 1, "": "empty key"},
            "roles": ["r0", "r1", {"x": true}],
            "10": "ten",
            "nested": {"deep": {"er": [null, [7]]}},
        });
        for pointer in [
            "/sub",
            "/a~1b",
            "/a~1b/m~0n",
            "/a~1b/",
            "/roles",
            "/roles/0",
            "/roles/2/x",
            "/roles/01",
            "/roles/+1",
            "/roles/-",
            "/roles/3",
            "/roles/x",
            "/10",
            "/nested/deep/er/1/0",
            "/nested/deep/er/0",
            "/nested/deep/er/0/x",
            "/missing",
            "/sub/0",
            "/",
            "//",
            "/~01",
            "/a~1b~1m~0n",
        ] {
            let p: ClaimPointer = pointer.parse().unwrap();
            assert_eq!(p.lookup(&claims), claims.pointer(pointer), "{pointer}");
        }
    }
}
