//! OIDC discovery (OpenID Connect Discovery 1.0 §4): an issuer configured
//! with neither `jwks_url` nor `secret` names its key set in the document at
//! `{issuer without trailing slash}/.well-known/openid-configuration`.
//!
//! The document is fetched with the key set's HTTP client (same timeout and
//! redirect rules), its size bounded before it is parsed; its `issuer` must be
//! identical to the configured one (§4.3), and its `jwks_uri` must follow
//! `jwks_url`'s rules: https, or plain http on loopback only.
//! `jwks_cache.rs` decides when to call it and keeps the last good answer.

use std::time::Duration;

use serde::Deserialize;

use super::jwks_cache::get_bounded;
use crate::config::is_loopback_host;

/// Real documents are a few KiB (Keycloak's, among the largest, under 10 KiB).
pub(crate) const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// Why a discovery document was not used; shown in `/readyz`, logs and
/// `check-config`, so it never quotes more than a URL or an issuer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DiscoveryError {
    #[error("{0}")]
    Fetch(String),
    #[error("the discovery document is not a JSON object with string issuer and jwks_uri: {0}")]
    Garbage(String),
    #[error("the discovery document names issuer {found:?}, not {expected:?} (OpenID Connect Discovery 1.0 section 4.3 requires them to be identical)")]
    OtherIssuer { found: String, expected: String },
    #[error("the discovery document's jwks_uri {0:?} is not a URL")]
    BadJwksUri(String),
    #[error("the discovery document's jwks_uri {0:?} must be https (plain http is allowed only on loopback)")]
    InsecureJwksUri(String),
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    jwks_uri: String,
}

/// Reads a document's `jwks_uri`, checking its `issuer` against `expected`.
pub(crate) fn parse_document(body: &[u8], expected: &str) -> Result<reqwest::Url, DiscoveryError> {
    if body.len() > MAX_DISCOVERY_BYTES {
        return Err(DiscoveryError::Fetch(format!(
            "the discovery document is larger than {MAX_DISCOVERY_BYTES} bytes"
        )));
    }
    let doc: Document = serde_json::from_slice(body).map_err(|e| {
        // serde_json's messages name the position and the missing field; they
        // never quote the input.
        DiscoveryError::Garbage(e.to_string())
    })?;
    if doc.issuer != expected {
        return Err(DiscoveryError::OtherIssuer {
            found: shorten(&doc.issuer),
            expected: expected.to_string(),
        });
    }
    let uri = reqwest::Url::parse(&doc.jwks_uri)
        .map_err(|_| DiscoveryError::BadJwksUri(shorten(&doc.jwks_uri)))?;
    match uri.scheme() {
        "https" => Ok(uri),
        "http" if is_loopback_host(&uri) => Ok(uri),
        _ => Err(DiscoveryError::InsecureJwksUri(shorten(&doc.jwks_uri))),
    }
}

/// Fetches the document at `url` and returns the `jwks_uri` it names.
pub(crate) async fn discover(
    client: &reqwest::Client,
    url: &reqwest::Url,
    expected_issuer: &str,
    timeout: Duration,
) -> Result<reqwest::Url, DiscoveryError> {
    let (_, body) = get_bounded(
        client,
        url,
        timeout,
        MAX_DISCOVERY_BYTES,
        "the discovery document",
    )
    .await
    .map_err(DiscoveryError::Fetch)?;
    parse_document(&body, expected_issuer)
}

/// A value from the document, cut short so a hostile one cannot flood a log line.
fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://tenant.auth0.example/";

    fn doc(issuer: &str, jwks_uri: &str) -> Vec<u8> {
        serde_json::json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "authorization_endpoint": "https://tenant.auth0.example/authorize",
            "id_token_signing_alg_values_supported": ["RS256"],
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_jwks_uri_of_a_document_naming_this_issuer_is_used() {
        let uri = parse_document(
            &doc(ISS, "https://tenant.auth0.example/.well-known/jwks.json"),
            ISS,
        )
        .unwrap();
        assert_eq!(
            uri.as_str(),
            "https://tenant.auth0.example/.well-known/jwks.json"
        );
        let uri = parse_document(
            &doc("http://127.0.0.1:9/realms/r", "http://127.0.0.1:9/certs"),
            "http://127.0.0.1:9/realms/r",
        )
        .unwrap();
        assert_eq!(uri.as_str(), "http://127.0.0.1:9/certs");
    }

    #[test]
    fn the_issuer_must_be_identical_trailing_slash_included() {
        let without_slash = "https://tenant.auth0.example";
        let e = parse_document(&doc(without_slash, "https://x.example/jwks"), ISS).unwrap_err();
        assert_eq!(
            e,
            DiscoveryError::OtherIssuer {
                found: without_slash.into(),
                expected: ISS.into()
            }
        );
        assert!(e.to_string().contains("section 4.3"), "{e}");
    }

    #[test]
    fn insecure_or_malformed_jwks_uris_are_refused() {
        for (uri, insecure) in [
            ("http://tenant.auth0.example/jwks.json", true),
            ("http://10.0.0.1/jwks.json", true),
            ("file:///etc/passwd", true),
            ("/relative/jwks.json", false),
        ] {
            let e = parse_document(&doc(ISS, uri), ISS).unwrap_err();
            match e {
                DiscoveryError::InsecureJwksUri(u) if insecure => assert_eq!(u, uri),
                DiscoveryError::BadJwksUri(u) if !insecure => assert_eq!(u, uri),
                other => panic!("{uri}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_and_oversized_documents_are_refused_without_quoting_them() {
        for body in [
            &b"<html>nope</html>"[..],
            br#"["issuer"]"#,
            br#"{"issuer": 7, "jwks_uri": "https://x"}"#,
            br#"{"issuer": "https://tenant.auth0.example/"}"#,
        ] {
            let e = parse_document(body, ISS).unwrap_err();
            assert!(matches!(e, DiscoveryError::Garbage(_)), "{e:?}");
            assert!(!e.to_string().contains("nope"), "{e}");
        }
        let big = vec![b' '; MAX_DISCOVERY_BYTES + 1];
        assert!(parse_document(&big, ISS)
            .unwrap_err()
            .to_string()
            .contains("larger than"));
    }

    #[test]
    fn long_values_are_cut_short_in_errors() {
        let long = format!("https://{}.example/", "a".repeat(5000));
        let e = parse_document(&doc(&long, "https://x.example/jwks"), ISS)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 600, "{}", e.len());
    }
}
