//! How long the sidecar and the broker keep an idle HTTP/1.1 connection, and
//! how they say so.
//!
//! RFC 9112 §9.3 leaves idle timeouts to each side, so a client may send a
//! request on a kept-alive connection at the moment the server closes it; the
//! request is lost ("socket hang up" or ECONNRESET) unless the client retries
//! it, and Node's HTTP agent — what ably-js uses for an `authUrl`, for
//! `requestToken` and for REST calls — does not. Its agent honours a
//! `Keep-Alive: timeout=` hint only when it has a timeout of its own
//! (`keepSocketAlive` in Node's `lib/_http_agent.js`), and ably-js's has none,
//! so an idle socket stays in its pool until the server closes it. With
//! actix-web's default of 5 s, a client that goes quiet for about 5 s and then
//! picks that socket loses a request: benches/soak saw it about once in
//! 20 000 requests, and a loopback reproduction that reuses sockets after
//! 5 s ± 0.1 s lost 57 of 1 610.
//!
//! So idle connections are kept 75 s: longer than the idle timeout of the
//! proxies that usually sit in front (AWS load balancers 60 s, nginx's
//! upstream keep-alive 60 s), which then always close first, as those
//! proxies' docs ask of a backend; and long enough that a client's sockets
//! rarely sit idle that long under load. A graceful shutdown closes idle
//! connections at once, so this does not lengthen it.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};

/// The broker's idle timeout; the sidecar's is `server.keep_alive`, whose
/// default this is too (src/config/raw.rs).
pub(crate) const DEFAULT: Duration = Duration::from_secs(75);

/// The `Keep-Alive` response header that tells clients the idle timeout in
/// whole seconds (rounded down, so a client that believes it closes first).
pub(crate) fn hint(idle: Duration) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("timeout={}", idle.as_secs()))
        .expect("digits are a valid header value");
    (HeaderName::from_static("keep-alive"), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_rounds_the_timeout_down_to_whole_seconds() {
        assert_eq!(hint(DEFAULT).1, "timeout=75");
        assert_eq!(hint(Duration::from_millis(1999)).1, "timeout=1");
        assert_eq!(hint(DEFAULT).0, "keep-alive");
    }
}
