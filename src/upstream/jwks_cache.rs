//! One issuer's JWKS, fetched over HTTP and cached. Fresh keys answer at once;
//! past the cache TTL they keep answering while one background refresh runs;
//! when the endpoint fails they keep answering up to `stale_for` past expiry.
//! An unknown `kid` triggers at most one refetch per cooldown, and concurrent
//! fetches collapse into one.
//!
//! An issuer found by OIDC discovery (`discovery.rs`) fetches its discovery
//! document before each key-set fetch (so a changed `jwks_uri` is followed
//! with the same refresh, cooldown and backoff), and while discovery fails it
//! keeps using the last good `jwks_uri` up to `cache_ttl + stale_for` after
//! it was last confirmed.
//!
//! Every freshness, cooldown, backoff and stale-bound decision reads the
//! injected clock's monotonic time ([`crate::clock::Clock::monotonic`]), so
//! tests age the cache by advancing a `ManualClock` instead of sleeping. Only
//! the HTTP timeout of a fetch runs on real time.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::discovery;
use super::jwks::{KeySet, VerifyKey, MAX_JWKS_BYTES};
use super::UpstreamError;
use crate::clock::SharedClock;
use crate::config::JwksSettings;

/// A reading of [`crate::clock::Clock::monotonic`]: comparable with other
/// readings of the same clock, meaningless on its own.
type Moment = Duration;

/// Shortest wait between two failed fetches, whatever asks for them.
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    NotReady(String),
}

/// A point-in-time view for health checks and metrics.
#[derive(Debug, Clone)]
pub(crate) struct CacheStatus {
    pub(crate) key_count: usize,
    pub(crate) age: Option<Duration>,
    pub(crate) fetches: u64,
    pub(crate) failures: u64,
    pub(crate) last_error: Option<String>,
    pub(crate) readiness: Readiness,
    /// For an issuer found by OIDC discovery.
    pub(crate) discovery: Option<DiscoveryStatus>,
}

#[derive(Debug, Clone)]
pub(crate) struct DiscoveryStatus {
    pub(crate) document_url: String,
    /// The `jwks_uri` in use: the last one a document named.
    pub(crate) jwks_uri: Option<String>,
    pub(crate) fetches: u64,
    pub(crate) failures: u64,
    /// Why the last discovery failed; cleared by the next success.
    pub(crate) last_error: Option<String>,
}

/// What `JwksCache::probe` found: where the keys are and which they are.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) jwks_uri: reqwest::Url,
    pub(crate) keys: KeySet,
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Moment>,
    fresh_until: Option<Moment>,
    /// Completed attempts, successful or not: a caller that saw N before
    /// queueing for the fetch lock knows a fetch finished meanwhile if it
    /// finds more. Counted at the end so an in-flight fetch is waited for.
    attempts: u64,
    failures: u64,
    last_attempt: Option<Moment>,
    last_attempt_failed: bool,
    last_error: Option<String>,
    last_unknown_kid_fetch: Option<Moment>,
    refreshing: bool,
    /// The last `jwks_uri` a discovery document named, and when.
    discovered: Option<(reqwest::Url, Moment)>,
    discovery_fetches: u64,
    discovery_failures: u64,
    discovery_error: Option<String>,
}

pub(crate) struct JwksCache {
    issuer: String,
    /// With OIDC discovery: the `iss` the document must name; `settings.url`
    /// is then the document's URL.
    discovery: Option<String>,
    settings: JwksSettings,
    client: reqwest::Client,
    clock: SharedClock,
    state: RwLock<State>,
    fetch_lock: tokio::sync::Mutex<()>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    Missing,
    UnknownKid,
    Refresh,
}

impl JwksCache {
    pub(crate) fn new(
        issuer: &str,
        settings: JwksSettings,
        client: reqwest::Client,
        clock: SharedClock,
    ) -> Arc<JwksCache> {
        Arc::new(JwksCache {
            issuer: issuer.to_string(),
            discovery: None,
            settings,
            client,
            clock,
            state: RwLock::new(State::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// An issuer whose key set is named by its discovery document at
    /// `settings.url`, which must name `iss` as its issuer.
    pub(crate) fn discovering(
        name: &str,
        iss: &str,
        settings: JwksSettings,
        client: reqwest::Client,
        clock: SharedClock,
    ) -> Arc<JwksCache> {
        let mut cache = JwksCache::new(name, settings, client, clock);
        Arc::get_mut(&mut cache)
            .expect("a cache just built has one owner")
            .discovery = Some(iss.to_string());
        cache
    }

    fn now(&self) -> Moment {
        self.clock.monotonic()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Keys still usable at `now`: fetched, and not past the stale bound.
    fn usable(&self, state: &State, now: Moment) -> Option<Arc<KeySet>> {
        let keys = state.keys.as_ref()?;
        let fresh_until = state.fresh_until?;
        (now <= fresh_until + self.settings.stale_for).then(|| keys.clone())
    }

    /// The key for a token's `kid` and `alg`, fetching the set when needed.
    pub(crate) async fn find(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<VerifyKey, UpstreamError> {
        let now = self.now();
        let (keys, attempts, stale) = {
            let state = self.read();
            let keys = self.usable(&state, now);
            let stale = state.fresh_until.is_some_and(|f| now > f);
            (keys, state.attempts, stale)
        };
        let keys = match keys {
            Some(keys) => {
                if stale {
                    self.refresh_in_background();
                }
                keys
            }
            None => {
                self.fetch_once(attempts, Why::Missing).await;
                self.usable(&self.read(), self.now())
                    .ok_or_else(|| self.unavailable())?
            }
        };
        if let Some(key) = keys.find(kid, alg) {
            return Ok(key.clone());
        }
        // Unknown kid: perhaps the issuer rotated. Refetch, at most once per cooldown.
        let attempts = {
            let state = self.read();
            let cooled = state
                .last_unknown_kid_fetch
                .is_none_or(|t| now.saturating_sub(t) >= self.settings.refetch_cooldown);
            if !cooled {
                return Err(UpstreamError::KeyUnknown);
            }
            state.attempts
        };
        self.fetch_once(attempts, Why::UnknownKid).await;
        let keys = self
            .usable(&self.read(), self.now())
            .ok_or_else(|| self.unavailable())?;
        keys.find(kid, alg)
            .cloned()
            .ok_or(UpstreamError::KeyUnknown)
    }

    fn unavailable(&self) -> UpstreamError {
        UpstreamError::KeysUnavailable {
            issuer: self.issuer.clone(),
        }
    }

    fn refresh_in_background(self: &Arc<Self>) {
        {
            let mut state = self.write();
            if state.refreshing || self.backing_off(&state, self.now()) {
                return;
            }
            state.refreshing = true;
        }
        let cache = self.clone();
        let attempts = self.read().attempts;
        tokio::spawn(async move {
            cache.fetch_once(attempts, Why::Refresh).await;
            cache.write().refreshing = false;
        });
    }

    fn backing_off(&self, state: &State, now: Moment) -> bool {
        state.last_attempt_failed
            && state
                .last_attempt
                .is_some_and(|t| now.saturating_sub(t) < FAILED_FETCH_BACKOFF)
    }

    /// Fetches unless another fetch happened since the caller saw `seen_attempts`.
    async fn fetch_once(&self, seen_attempts: u64, why: Why) {
        let _guard = self.fetch_lock.lock().await;
        let now = self.now();
        {
            let mut state = self.write();
            if state.attempts != seen_attempts || self.backing_off(&state, now) {
                return;
            }
            if why == Why::UnknownKid {
                if state
                    .last_unknown_kid_fetch
                    .is_some_and(|t| now.saturating_sub(t) < self.settings.refetch_cooldown)
                {
                    return;
                }
                state.last_unknown_kid_fetch = Some(now);
            }
            state.last_attempt = Some(now);
        }
        let result = match self.key_set_url().await {
            Ok(url) => self.fetch(&url).await,
            Err(error) => Err(error),
        };
        let mut state = self.write();
        state.attempts += 1;
        match result {
            Ok((keys, max_age)) => {
                for skipped in &keys.skipped {
                    tracing::warn!(issuer = %self.issuer, reason = %skipped, "JWKS key skipped");
                }
                let ttl = match max_age {
                    Some(age) => age.clamp(
                        self.settings.refetch_cooldown.min(self.settings.cache_ttl),
                        self.settings.cache_ttl,
                    ),
                    None => self.settings.cache_ttl,
                };
                let done = self.now();
                tracing::info!(issuer = %self.issuer, keys = keys.keys.len(), ttl_secs = ttl.as_secs(), "JWKS fetched");
                state.keys = Some(Arc::new(keys));
                state.fetched_at = Some(done);
                state.fresh_until = Some(done + ttl);
                state.last_attempt_failed = false;
                state.last_error = None;
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, error = %error, "JWKS fetch failed");
                state.failures += 1;
                state.last_attempt_failed = true;
                state.last_error = Some(error);
            }
        }
    }

    /// Where the key set is: `jwks_url`, or what discovery says now, or the
    /// last good `jwks_uri` while discovery fails (within the stale bound).
    /// Called under the fetch lock.
    async fn key_set_url(&self) -> Result<reqwest::Url, String> {
        let Some(iss) = &self.discovery else {
            return Ok(self.settings.url.clone());
        };
        let found =
            discovery::discover(&self.client, &self.settings.url, iss, self.settings.timeout).await;
        let now = self.now();
        let mut state = self.write();
        state.discovery_fetches += 1;
        match found {
            Ok(uri) => {
                let changed = state.discovered.as_ref().is_none_or(|(old, _)| *old != uri);
                if changed {
                    tracing::info!(issuer = %self.issuer, jwks_uri = %uri, "OIDC discovery named the key set");
                }
                state.discovered = Some((uri.clone(), now));
                state.discovery_error = None;
                Ok(uri)
            }
            Err(error) => {
                let error = format!("OIDC discovery at {} failed: {error}", self.settings.url);
                tracing::warn!(issuer = %self.issuer, error = %error, "OIDC discovery failed");
                state.discovery_failures += 1;
                state.discovery_error = Some(error.clone());
                let bound = self.settings.cache_ttl + self.settings.stale_for;
                match &state.discovered {
                    Some((uri, at)) if now.saturating_sub(*at) <= bound => Ok(uri.clone()),
                    _ => Err(error),
                }
            }
        }
    }

    async fn fetch(&self, url: &reqwest::Url) -> Result<(KeySet, Option<Duration>), String> {
        let (headers, body) = get_bounded(
            &self.client,
            url,
            self.settings.timeout,
            MAX_JWKS_BYTES,
            "the JWKS",
        )
        .await?;
        let max_age = headers
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_max_age);
        let keys = KeySet::parse(&body).map_err(|e| e.to_string())?;
        Ok((keys, max_age))
    }

    /// One discovery (when configured) and one key-set fetch, outside the
    /// cache: for `ably-tokend check-config`.
    pub(crate) async fn probe(&self) -> Result<Probe, String> {
        let jwks_uri = match &self.discovery {
            None => self.settings.url.clone(),
            Some(iss) => {
                discovery::discover(&self.client, &self.settings.url, iss, self.settings.timeout)
                    .await
                    .map_err(|e| format!("OIDC discovery at {} failed: {e}", self.settings.url))?
            }
        };
        let (keys, _) = self
            .fetch(&jwks_uri)
            .await
            .map_err(|e| format!("{e} (from {jwks_uri})"))?;
        Ok(Probe { jwks_uri, keys })
    }

    /// Starts a fetch if there are no usable keys and none is under way; for
    /// start-up and readiness probes, which must not wait on the network.
    pub(crate) fn prefetch(self: &Arc<Self>) {
        let needs = self.usable(&self.read(), self.now()).is_none();
        if needs {
            self.refresh_in_background();
        }
    }

    pub(crate) fn status(&self) -> CacheStatus {
        let now = self.now();
        let state = self.read();
        let usable = self.usable(&state, now);
        let readiness = match (&usable, &state.last_error) {
            (Some(_), _) => Readiness::Ready,
            (None, Some(error)) => Readiness::NotReady(format!(
                "issuer {:?} has no usable keys: {error}",
                self.issuer
            )),
            (None, None) if state.keys.is_some() => Readiness::NotReady(format!(
                "issuer {:?}: cached keys are older than jwks_stale_for",
                self.issuer
            )),
            (None, None) => {
                Readiness::NotReady(format!("issuer {:?}: JWKS not fetched yet", self.issuer))
            }
        };
        let discovery = self.discovery.as_ref().map(|_| DiscoveryStatus {
            document_url: self.settings.url.to_string(),
            jwks_uri: state.discovered.as_ref().map(|(uri, _)| uri.to_string()),
            fetches: state.discovery_fetches,
            failures: state.discovery_failures,
            last_error: state.discovery_error.clone(),
        });
        CacheStatus {
            key_count: usable.as_ref().map_or(0, |k| k.keys.len()),
            age: state.fetched_at.map(|t| now.saturating_sub(t)),
            fetches: state.attempts,
            failures: state.failures,
            last_error: state.last_error.clone(),
            readiness,
            discovery,
        }
    }
}

/// The HTTP client every key set and discovery document is fetched with.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("ably-tokend/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            // A redirect must never downgrade https to http: whoever sits on
            // the plain-text path could then hand us signing keys.
            let downgrade = attempt.url().scheme() != "https"
                && attempt.previous().iter().any(|u| u.scheme() == "https");
            if downgrade {
                attempt.error("redirected from https to plain http")
            } else if attempt.previous().len() > 3 {
                attempt.error("redirected more than 3 times")
            } else {
                attempt.follow()
            }
        }))
        .build()
        .expect("the HTTP client builds with static settings")
}

/// GETs `url` as JSON within `timeout`, refusing a non-2xx answer and a body
/// over `max` bytes before reading past it. `what` names the document in errors.
pub(crate) async fn get_bounded(
    client: &reqwest::Client,
    url: &reqwest::Url,
    timeout: Duration,
    max: usize,
    what: &str,
) -> Result<(reqwest::header::HeaderMap, Vec<u8>), String> {
    let mut response = client
        .get(url.clone())
        .header("accept", "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| describe_reqwest_error(&e, what))?;
    if !response.status().is_success() {
        return Err(format!(
            "the server of {what} answered {}",
            response.status()
        ));
    }
    let too_large = || format!("{what} is larger than {max} bytes");
    if response
        .content_length()
        .is_some_and(|len| len as usize > max)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| describe_reqwest_error(&e, what))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((response.headers().clone(), body))
}

fn describe_reqwest_error(e: &reqwest::Error, what: &str) -> String {
    if e.is_timeout() {
        format!("fetching {what} timed out")
    } else if e.is_connect() {
        format!("could not connect to the server of {what}")
    } else if e.is_request() && !e.is_redirect() {
        // Sending failed on a pooled connection the server had closed: to
        // whoever reads /readyz, the same outage as a refused connection.
        format!("could not connect to the server of {what} (the request could not be sent)")
    } else if e.is_redirect() {
        // reqwest's own message names the URL; the policy's reason is the cause.
        let why = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "a redirect failed".into());
        format!("fetching {what} failed: {why}")
    } else {
        format!("fetching {what} failed: {e}")
    }
}

fn parse_max_age(header: &str) -> Option<Duration> {
    header.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("max-age") {
            value
                .trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const TTL: Duration = Duration::from_secs(60);
    const COOLDOWN: Duration = Duration::from_secs(30);
    const STALE_FOR: Duration = Duration::from_secs(120);

    /// A cache holding the rsa1 fixture key (kid "k1") as fetched at the
    /// clock's current reading. Its URL refuses connections, so every fetch
    /// fails at once and only the clock decides what is fresh or stale.
    fn cache_with_keys() -> (Arc<JwksCache>, Arc<ManualClock>) {
        let clock = ManualClock::at_ms(1_700_000_000_000);
        let settings = JwksSettings {
            url: "http://127.0.0.1:1/.well-known/jwks.json".parse().unwrap(),
            cache_ttl: TTL,
            refetch_cooldown: COOLDOWN,
            stale_for: STALE_FOR,
            timeout: Duration::from_secs(1),
        };
        let cache = JwksCache::new("test", settings, reqwest::Client::new(), clock.clone());
        let mut jwk: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/rsa1.jwk.json")).unwrap();
        jwk["kid"] = "k1".into();
        let body = serde_json::json!({ "keys": [jwk] }).to_string();
        let keys = KeySet::parse(body.as_bytes()).unwrap();
        {
            let now = cache.now();
            let mut state = cache.write();
            state.keys = Some(Arc::new(keys));
            state.fetched_at = Some(now);
            state.fresh_until = Some(now + TTL);
        }
        (cache, clock)
    }

    #[test]
    fn cached_keys_age_with_the_injected_clock_up_to_the_stale_bound() {
        let (cache, clock) = cache_with_keys();
        assert_eq!(cache.status().readiness, Readiness::Ready);
        assert_eq!(cache.status().age, Some(Duration::ZERO));

        clock.advance(TTL + STALE_FOR);
        let status = cache.status();
        assert_eq!(status.readiness, Readiness::Ready, "usable up to the bound");
        assert_eq!(status.age, Some(TTL + STALE_FOR));
        assert_eq!(status.key_count, 1);

        clock.advance(Duration::from_millis(1));
        let status = cache.status();
        assert_eq!(status.key_count, 0);
        assert!(
            matches!(&status.readiness, Readiness::NotReady(why) if why.contains("jwks_stale_for")),
            "{:?}",
            status.readiness
        );
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_once_per_cooldown_of_the_injected_clock() {
        let (cache, clock) = cache_with_keys();
        let find = |kid: &'static str| {
            let cache = cache.clone();
            async move { cache.find(Some(kid), Algorithm::RS256).await }
        };
        assert!(find("k1").await.is_ok());
        assert_eq!(
            cache.status().fetches,
            0,
            "fresh keys answer without a fetch"
        );

        assert!(matches!(
            find("rotated").await,
            Err(UpstreamError::KeyUnknown)
        ));
        assert_eq!(cache.status().fetches, 1, "an unknown kid refetches");
        assert_eq!(cache.status().failures, 1);

        clock.advance(COOLDOWN - Duration::from_millis(1));
        assert!(matches!(
            find("rotated").await,
            Err(UpstreamError::KeyUnknown)
        ));
        assert_eq!(cache.status().fetches, 1, "not again within the cooldown");

        clock.advance(Duration::from_millis(1));
        assert!(matches!(
            find("rotated").await,
            Err(UpstreamError::KeyUnknown)
        ));
        assert_eq!(
            cache.status().fetches,
            2,
            "again once the cooldown has passed"
        );
        // The failed fetches never cost the cached keys.
        assert!(find("k1").await.is_ok());
    }

    #[tokio::test]
    async fn past_the_stale_bound_a_failed_fetch_leaves_no_keys() {
        let (cache, clock) = cache_with_keys();
        clock.advance(TTL + STALE_FOR + Duration::from_secs(1));
        let error = cache.find(Some("k1"), Algorithm::RS256).await.unwrap_err();
        assert!(
            matches!(&error, UpstreamError::KeysUnavailable { issuer } if issuer == "test"),
            "{error:?}"
        );
        assert_eq!(cache.status().failures, 1);
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            parse_max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_max_age("Max-Age=\"60\", must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
