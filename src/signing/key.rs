//! The Ably API key, parsed once at the edge. Its secret never reaches `Debug`,
//! `Display` or serialisation. A key carries the capability it may grant
//! (Ably's key capability, https://ably.com/docs/auth/capabilities): every
//! token signed with it is narrowed to that.

use std::fmt;
use std::str::FromStr;

use crate::capability::Capability;

/// What a key may grant when its configuration names no capability: every
/// operation on every ordinary channel, as an unrestricted Ably key.
pub(crate) const UNRESTRICTED: &str = r#"{"*":["*"]}"#;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    // The message never echoes the input: it may hold a real secret.
    #[error("an Ably API key has the form appId.keyId:secret ({0})")]
    Malformed(&'static str),
}

/// The secret half of an API key. Deliberately has no `Display`, and its
/// `Debug` prints a placeholder.
#[derive(Clone)]
pub(crate) struct KeySecret(String);

impl KeySecret {
    pub(crate) fn new(secret: String) -> KeySecret {
        KeySecret(secret)
    }

    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

/// `appId.keyId:secret`; the name (`appId.keyId`) is public, the secret is not.
#[derive(Clone, Debug)]
pub struct ApiKey {
    name: String,
    secret: KeySecret,
    capability: Capability,
}

impl ApiKey {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn secret(&self) -> &KeySecret {
        &self.secret
    }

    /// What tokens signed with this key may be granted at most.
    pub(crate) fn capability(&self) -> &Capability {
        &self.capability
    }

    /// The same key restricted to `capability`.
    pub fn with_capability(self, capability: Capability) -> ApiKey {
        ApiKey { capability, ..self }
    }

    /// The whole `name:secret` text, for the rare places that must hand the key
    /// to something else (printing the `dev` stack's generated key).
    pub(crate) fn expose_whole(&self) -> String {
        format!("{}:{}", self.name, self.secret.0)
    }
}

impl FromStr for ApiKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, secret) = s
            .split_once(':')
            .ok_or(KeyError::Malformed("no ':' between name and secret"))?;
        let (app_id, key_id) = name
            .split_once('.')
            .ok_or(KeyError::Malformed("no '.' between appId and keyId"))?;
        if app_id.is_empty() || key_id.is_empty() || key_id.contains('.') {
            return Err(KeyError::Malformed("appId and keyId must be non-empty"));
        }
        if secret.is_empty() {
            return Err(KeyError::Malformed("the secret is empty"));
        }
        let printable = |t: &str| t.chars().all(|c| c.is_ascii_graphic());
        if !printable(name) || !printable(secret) {
            return Err(KeyError::Malformed(
                "only printable ASCII without spaces is allowed",
            ));
        }
        Ok(ApiKey {
            name: name.to_string(),
            secret: KeySecret(secret.to_string()),
            capability: unrestricted(),
        })
    }
}

fn unrestricted() -> Capability {
    Capability::parse_json(UNRESTRICTED).expect("the unrestricted capability parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_secret() {
        let key: ApiKey = "appId.keyId:keySecret".parse().unwrap();
        assert_eq!(key.name(), "appId.keyId");
        assert_eq!(key.secret().expose(), b"keySecret");
        assert_eq!(key.capability().to_canonical_json(), UNRESTRICTED);
        let narrow = Capability::parse_json(r#"{"orders:*":["publish"]}"#).unwrap();
        let key = key.with_capability(narrow.clone());
        assert_eq!(key.capability(), &narrow);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key: ApiKey = "appId.keyId:hunter2-very-secret".parse().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("appId.keyId"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        for bad in [
            "",
            "nocolon",
            "app:secret",
            ".key:secret",
            "app.key:",
            "a.b.c:s",
            "a.b:s s",
        ] {
            let err = bad.parse::<ApiKey>().unwrap_err();
            assert!(!err.to_string().contains("secret s"), "{bad:?}");
        }
    }
}
