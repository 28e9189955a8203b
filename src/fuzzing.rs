//! Entry points for the cargo-fuzz targets in `fuzz/`: one function per
//! parser of client input, taking raw bytes. Each feeds the bytes to the
//! parser the server uses and asserts what must hold of whatever it returns;
//! a panic is a finding. Built with the `fuzzing` feature (for `fuzz/`) and in
//! unit tests, which replay the checked-in seed corpora so these functions and
//! their seeds cannot rot while CI does not run the fuzzers.

use std::path::Path;

use crate::broker::filter::{Filter, MAX_FILTER_BYTES};
use crate::broker::inbound::Inbound;
use crate::broker::protocol::{self, Format};
use crate::capability::{laws, Capability};
use crate::policy::Policy;
use crate::upstream::authjs::{self, MAX_COOKIE_BYTES};
use crate::upstream::credential::{self, MAX_CHUNKS};
use crate::upstream::jwks::{KeySet, MAX_KEYS};
use crate::upstream::jws::{self, MAX_TOKEN_BYTES};
use crate::upstream::lookup::{read_expiry, rfc3339_ms, Answer, ExpiryFormat, LookupError};
use crate::upstream::{introspection, session_endpoint, supabase};

/// Separates the two capabilities of a `capability` input; never valid UTF-8,
/// so it cannot occur inside either JSON text.
pub const CAPABILITY_SEPARATOR: u8 = 0xff;

/// A session token as it arrives in `Authorization: Bearer` or a cookie:
/// parsed without a key, the parts it returns must be the token's own.
pub fn session_jws(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = jws::parse(token) {
        assert_eq!(
            format!("{}.{}", parsed.signing_input, parsed.signature),
            token,
            "the signing input and signature are not the token"
        );
        assert!(!parsed.signature.is_empty());
        assert_eq!(parsed.signing_input.matches('.').count(), 1);
    }
}

/// A JWKS document from an issuer: whatever keys survive are usable for
/// signatures, and lookups over them do not panic.
pub fn jwks_document(data: &[u8]) {
    let Ok(set) = KeySet::parse(data) else {
        return;
    };
    assert!(!set.keys.is_empty() && set.keys.len() <= MAX_KEYS);
    assert!(set.keys.len() + set.skipped.len() <= MAX_KEYS);
    for key in &set.keys {
        if let Some(alg) = key.alg {
            assert!(
                key.kind.accepts(alg),
                "{key:?} keeps an alg it cannot verify"
            );
            assert!(set.find(key.kid.as_deref(), alg).is_some() || key.kid.is_none());
        }
    }
}

/// The secret the `authjs_cookie` seeds were encrypted with (by @auth/core
/// and next-auth, under [`AUTHJS_COOKIE`]), so mutations reach decryption.
pub const AUTHJS_SECRET: &str = "fuzzing-secret-for-authjs-cookies-0123456789";
pub const AUTHJS_COOKIE: &str = "authjs.session-token";

/// An Auth.js v5 / NextAuth v4 session cookie value, decrypted as the
/// sidecar does: refused cheaply when oversized, and what opens is a JSON
/// object from a well-formed five-part token.
pub fn authjs_cookie(data: &[u8]) {
    static KEYS: std::sync::OnceLock<authjs::Keys> = std::sync::OnceLock::new();
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let keys = KEYS.get_or_init(|| {
        authjs::Keys::derive(&[AUTHJS_SECRET.as_bytes()], &[AUTHJS_COOKIE.to_string()])
    });
    match authjs::decrypt(value, AUTHJS_COOKIE, keys) {
        Ok(_claims) => {
            assert!(value.len() <= MAX_COOKIE_BYTES);
            assert_eq!(
                value.split('.').count(),
                5,
                "opened a token that is not five parts"
            );
        }
        Err(e) => {
            if value.len() > MAX_COOKIE_BYTES {
                assert_eq!(e.reason(), "session_token_too_large");
            }
        }
    }
}

/// The Cookie header of a request, with `authjs.session-token` listed:
/// whatever is found is within the size bound, and a joined value is the
/// concatenation of `NAME.0`, `NAME.1`, … in order.
pub fn cookie_chunks(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(Some(value)) = credential::cookie(std::iter::once(header), AUTHJS_COOKIE) else {
        return;
    };
    assert!(!value.is_empty());
    assert!(value.len() <= MAX_COOKIE_BYTES);
    // Each chunk's first occurrence, by index; a whole value when there is none.
    let chunk = |i: usize| {
        let name = format!("{AUTHJS_COOKIE}.{i}");
        header.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim() == name && !v.is_empty()).then_some(v)
        })
    };
    if chunk(0).is_some() {
        let joined: String = (0..MAX_CHUNKS).map_while(chunk).collect();
        assert_eq!(value, joined, "chunks joined out of order");
    }
}

/// A Supabase session cookie value (@supabase/ssr's `base64-` + base64url
/// of the session JSON, or the older percent-encoded JSON), chunks joined:
/// a token found is non-empty, within 8 KiB, and is the `access_token` a
/// general JSON parser reads from the same text; an oversized value is
/// refused as too large.
pub fn supabase_cookie(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    match supabase::access_token(value) {
        Ok(token) => {
            assert!(value.len() <= MAX_COOKIE_BYTES);
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
            let json = supabase::session_json(value).expect("decoded once already");
            // The struct skips the fields it does not read without checking
            // their string escapes (a lone `\uD800` in `user`, say), which a
            // `Value` refuses: compare only what both can read. The token is
            // verified as a JWT next, whatever surrounds it.
            let Ok(session) = serde_json::from_slice::<serde_json::Value>(&json) else {
                return;
            };
            assert_eq!(
                session.get("access_token").and_then(|t| t.as_str()),
                Some(token.as_str()),
                "the access token read is not the session's"
            );
        }
        Err(e) => {
            if value.len() > MAX_COOKIE_BYTES {
                assert_eq!(e.reason(), "session_token_too_large");
            }
        }
    }
}

/// Two capabilities, the granted one and the requested one, as JSON texts
/// separated by [`CAPABILITY_SEPARATOR`] (a lone text is checked on its own).
/// Checks the capability laws: the canonical form round-trips, narrowing
/// never widens, and `covers` agrees with `matches`.
pub fn capability_json(data: &[u8]) {
    let mut texts = data.splitn(2, |b| *b == CAPABILITY_SEPARATOR);
    let parse = |bytes: Option<&[u8]>| {
        std::str::from_utf8(bytes?)
            .ok()
            .and_then(|text| Capability::parse_json(text).ok())
    };
    let granted = parse(texts.next());
    let requested = parse(texts.next());
    for cap in granted.iter().chain(requested.iter()) {
        laws::canonical_form_round_trips(cap);
    }
    if let (Some(granted), Some(requested)) = (&granted, &requested) {
        laws::narrowing_never_widens(granted, requested);
        laws::covers_agrees_with_matches(&[granted, requested]);
    }
}

/// A policy file: parsing never panics, and an error points at a line of
/// the text.
pub fn policy_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Policy::parse(Path::new("fuzz.toml"), text) {
        if let Some(line) = error.line {
            assert!(
                line >= 1 && line <= text.lines().count().max(1) + 1,
                "line {line} is outside the text: {error}"
            );
        }
        assert!(!error.to_string().is_empty());
    }
}

/// A broker frame, decoded as the connection decodes it: as JSON if the first
/// byte is even (a text message), as msgpack otherwise (a binary one), then
/// parsed into the typed `Inbound` the connection dispatches on. A decoded
/// frame encodes again, and a msgpack frame survives the trip whole.
pub fn broker_frame(data: &[u8]) {
    let Some((selector, bytes)) = data.split_first() else {
        return;
    };
    let format = if selector % 2 == 0 {
        Format::Json
    } else {
        Format::MsgPack
    };
    let Ok(frame) = protocol::decode(bytes, format) else {
        return;
    };
    let _ = Inbound::from_frame(frame.clone());
    let again = protocol::decode(&protocol::encode_bytes(&frame, format), format);
    match format {
        // serde_json may read a re-printed float one ulp off, so JSON is only
        // required to decode again.
        Format::Json => assert!(again.is_ok(), "{frame} does not decode after encoding"),
        Format::MsgPack => assert_eq!(again.as_ref(), Ok(&frame), "msgpack round trip"),
    }
}

/// Token-request parameters as ably-js sends them: `query\nbody`, with the
/// first byte choosing the body's content type. Inputs a real request cannot
/// carry (an invalid URI or header) are skipped.
pub fn token_params(data: &[u8]) {
    use actix_web::http::header::{HeaderValue, CONTENT_TYPE};

    const CONTENT_TYPES: [&str; 4] = [
        "application/x-www-form-urlencoded",
        "application/json",
        "Application/JSON; charset=utf-8",
        "text/plain",
    ];
    let Some((selector, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let uri = format!("/ably/token?{query}");
    if uri.parse::<actix_web::http::Uri>().is_err() {
        return;
    }
    let content_type = CONTENT_TYPES[usize::from(*selector) % CONTENT_TYPES.len()];
    let req = actix_web::test::TestRequest::post()
        .uri(&uri)
        .insert_header((CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .to_http_request();
    if let Ok(params) = crate::http::params::token_params(&req, body) {
        if let Some(cap) = &params.asked.capability {
            laws::canonical_form_round_trips(cap);
        }
        if let Some(ttl) = params.asked.ttl {
            assert!(!ttl.is_zero());
        }
        if let Some(client_id) = &params.asked.client_id {
            assert!(!client_id.is_empty());
        }
    }
}

/// "Now" for the look-up answers: 2023-11-14T22:13:20Z.
const LOOKUP_NOW_MS: u64 = 1_700_000_000_000;

/// What holds of every interpreted look-up answer: a session is a non-empty
/// JSON object whose expiry, if any, is still ahead; nothing else has claims.
fn check_answer(answer: &Answer) {
    match &answer.claims {
        Ok(claims) => {
            assert!(
                claims.as_object().is_some_and(|o| !o.is_empty()),
                "claims that are not a non-empty object: {claims}"
            );
            if let Some(at) = answer.expires_at_ms {
                assert!(at > LOOKUP_NOW_MS, "a session kept past its expiry");
            }
        }
        Err(LookupError::Refused(why) | LookupError::Unavailable(why)) => {
            assert!(!why.is_empty());
        }
    }
}

/// A session endpoint's 200 body, read at the Auth.js (`/expires`) and the
/// Better Auth (`/session/expiresAt`) expiry pointers: a session is exactly a
/// non-empty JSON object, and `null` is always a refusal.
pub fn session_answer(data: &[u8]) {
    for pointer in ["/expires", "/session/expiresAt"] {
        let answer = session_endpoint::interpret_body(data, pointer, LOOKUP_NOW_MS);
        check_answer(&answer);
        let parsed = serde_json::from_slice::<serde_json::Value>(data).ok();
        if answer.claims.is_ok() {
            assert_eq!(
                parsed.as_ref(),
                answer.claims.as_deref().ok(),
                "the claims are not the body"
            );
        }
        if parsed == Some(serde_json::Value::Null) {
            assert!(matches!(answer.claims, Err(LookupError::Refused(_))));
        }
    }
}

/// An RFC 7662 introspection answer: claims only when `active` is `true`,
/// and never past `exp`.
pub fn introspection_answer(data: &[u8]) {
    let answer = introspection::interpret_body(data, LOOKUP_NOW_MS);
    check_answer(&answer);
    if let Ok(claims) = &answer.claims {
        assert_eq!(claims.get("active"), Some(&serde_json::Value::Bool(true)));
    }
}

/// A session's expiry as text: RFC 3339 that parses formats back to the same
/// instant, and the JSON reading agrees with the text reading.
pub fn expiry_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = rfc3339_ms(text);
    let value = serde_json::Value::String(text.to_string());
    assert_eq!(
        read_expiry(Some(&value), ExpiryFormat::SecondsOrRfc3339)
            .ok()
            .flatten(),
        parsed
    );
    assert!(read_expiry(Some(&value), ExpiryFormat::Seconds).is_err());
    if let Some(ms) = parsed {
        let instant = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let again = humantime::format_rfc3339_millis(instant).to_string();
        assert_eq!(rfc3339_ms(&again), Some(ms), "{text:?} → {again:?}");
    }
}

/// A subscription filter expression (`[filter=<base64>]` decoded): parsing
/// is deterministic, the base64 form parses the same, and `!(e)` matches
/// exactly the messages `e` does not.
pub fn subscription_filter(data: &[u8]) {
    use base64::Engine;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Filter::parse(text);
    assert_eq!(parsed, Filter::parse(text), "parsing is not deterministic");
    if text.len() <= MAX_FILTER_BYTES && !text.is_empty() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        assert_eq!(
            Filter::from_base64(&encoded),
            parsed,
            "the base64 form differs"
        );
    }
    let Ok(filter) = parsed else {
        return;
    };
    let negated = Filter::parse(&format!("!({text})"));
    let messages = [
        serde_json::json!({}),
        serde_json::json!({"name": "a"}),
        serde_json::json!({"name": "filtered", "extras": {"headers": {"number": 26095, "a": "x", "b": true, "c": 1.5}}}),
        serde_json::json!({"name": "", "extras": {"headers": {"number": "26095", "a": null, "b": false}}}),
    ];
    for message in &messages {
        let matched = filter.matches(message);
        if let Ok(negated) = &negated {
            assert_eq!(negated.matches(message), !matched, "!({text}) on {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed in `fuzz/corpus/<target>/` passes its target's checks.
    fn replay(target: &str, check: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            check(&std::fs::read(&path).unwrap());
            seeds += 1;
        }
        assert!(seeds > 0, "{} holds no seeds", dir.display());
    }

    #[test]
    fn seed_corpora_pass_their_checks() {
        replay("session_jws", session_jws);
        replay("jwks_document", jwks_document);
        replay("capability_json", capability_json);
        replay("policy_toml", policy_toml);
        replay("broker_frame", broker_frame);
        replay("token_params", token_params);
        replay("authjs_cookie", authjs_cookie);
        replay("cookie_chunks", cookie_chunks);
        replay("session_answer", session_answer);
        replay("introspection_answer", introspection_answer);
        replay("expiry_text", expiry_text);
        replay("supabase_cookie", supabase_cookie);
        replay("subscription_filter", subscription_filter);
    }

    /// The seeds written with @supabase/ssr's own encoder hold an access
    /// token, so mutations start past the decoding.
    #[test]
    fn the_supabase_seeds_hold_an_access_token() {
        for seed in ["ssr_base64", "ssr_raw"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus/supabase_cookie")
                .join(seed);
            let value = std::fs::read_to_string(&path).unwrap();
            let token = supabase::access_token(value.trim()).unwrap();
            assert_eq!(token.split('.').count(), 3, "{seed}");
        }
    }

    /// The seeds made by @auth/core and next-auth open: mutations start from
    /// inputs that reach decryption and the claim parser.
    #[test]
    fn the_real_library_seeds_decrypt() {
        let keys = authjs::Keys::derive(&[AUTHJS_SECRET.as_bytes()], &[AUTHJS_COOKIE.to_string()]);
        for seed in ["authjs_v5", "nextauth_v4"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus/authjs_cookie")
                .join(seed);
            let value = std::fs::read_to_string(&path).unwrap();
            let claims = authjs::decrypt(value.trim(), AUTHJS_COOKIE, &keys).unwrap();
            assert_eq!(claims["sub"], "fuzz-user", "{seed}");
        }
    }

    #[test]
    fn a_lone_capability_and_empty_inputs_are_fine() {
        capability_json(br#"{"a:*":["subscribe"]}"#);
        for check in [
            session_jws,
            jwks_document,
            capability_json,
            policy_toml,
            broker_frame,
            token_params,
            authjs_cookie,
            cookie_chunks,
            session_answer,
            introspection_answer,
            expiry_text,
            supabase_cookie,
            subscription_filter,
        ] {
            check(b"");
        }
    }
}
