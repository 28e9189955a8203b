//! Answers of one session-endpoint or introspection issuer, cached by a
//! SHA-256 of what was forwarded. A session is kept at most `cache_ttl` and
//! never past its own expiry (no leeway); a refusal at most
//! [`REFUSAL_TTL`]; an upstream failure not at all. Concurrent look-ups of one
//! key make one upstream call and share its answer.
//!
//! Ages read the injected clock ([`crate::clock::Clock::monotonic`]) and a
//! session's expiry its wall time, so tests move a `ManualClock` instead of
//! sleeping.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use super::lookup::{Answer, Key, LookupError};
use crate::clock::SharedClock;

/// A refusal (`null`, 401, `active: false`) is kept this long at most, so a
/// user who has just signed in is not refused for longer.
pub(crate) const REFUSAL_TTL: Duration = Duration::from_secs(5);
/// Entries kept at most; expired ones are pruned first when it is reached.
pub(crate) const MAX_ENTRIES: usize = 10_000;

type Outcome = Result<Arc<Value>, LookupError>;

struct Entry {
    outcome: Outcome,
    /// Monotonic reading past which the entry is gone.
    until: Duration,
    /// The session's own expiry (ms since the epoch), checked on wall time too.
    expires_at_ms: Option<u64>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Look-ups under way; every caller of one key awaits the same cell.
    flights: HashMap<Key, Arc<OnceCell<Outcome>>>,
}

pub(crate) struct LookupCache {
    ttl: Duration,
    max_entries: usize,
    clock: SharedClock,
    inner: Mutex<Inner>,
    counts: Counts,
}

/// How look-ups ended, for metrics: answered from the cache (or by another
/// caller's call under way), or by a call of this one's that found a
/// session, a refusal, or no usable answer. Together they count every look-up.
#[derive(Default)]
struct Counts {
    hit: AtomicU64,
    miss: AtomicU64,
    refused: AtomicU64,
    unavailable: AtomicU64,
}

/// A snapshot of [`Counts`] and the cache's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LookupCounts {
    pub(crate) hit: u64,
    pub(crate) miss: u64,
    pub(crate) refused: u64,
    pub(crate) unavailable: u64,
    pub(crate) entries: usize,
}

impl LookupCache {
    pub(crate) fn new(ttl: Duration, clock: SharedClock) -> LookupCache {
        LookupCache::with_capacity(ttl, MAX_ENTRIES, clock)
    }

    pub(crate) fn with_capacity(
        ttl: Duration,
        max_entries: usize,
        clock: SharedClock,
    ) -> LookupCache {
        LookupCache {
            ttl,
            max_entries: max_entries.max(1),
            clock,
            inner: Mutex::new(Inner::default()),
            counts: Counts::default(),
        }
    }

    pub(crate) fn counts(&self) -> LookupCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LookupCounts {
            hit: read(&self.counts.hit),
            miss: read(&self.counts.miss),
            refused: read(&self.counts.refused),
            unavailable: read(&self.counts.unavailable),
            entries: self.len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self, entry: &Entry, now: Duration, now_ms: u64) -> bool {
        now < entry.until && entry.expires_at_ms.is_none_or(|at| now_ms < at)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// The cached outcome for `key`, or `fetch`'s, which only one of the
    /// concurrent callers of a key runs. If that caller is cancelled, the
    /// next waiting one runs its own `fetch`.
    pub(crate) async fn get_or_fetch<F, Fut>(&self, key: Key, fetch: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Answer>,
    {
        let cell = {
            let now = self.clock.monotonic();
            let now_ms = self.clock.now_ms();
            let mut inner = self.lock();
            match inner.entries.get(&key) {
                Some(entry) if self.live(entry, now, now_ms) => {
                    self.counts.hit.fetch_add(1, Ordering::Relaxed);
                    return entry.outcome.clone();
                }
                Some(_) => {
                    inner.entries.remove(&key);
                }
                None => {}
            }
            inner.flights.entry(key).or_default().clone()
        };
        let flight = Flight {
            cache: self,
            key,
            cell,
        };
        let called = std::sync::atomic::AtomicBool::new(false);
        let outcome = flight
            .cell
            .get_or_init(|| async {
                called.store(true, Ordering::Relaxed);
                let answer = fetch().await;
                let mut inner = self.lock();
                inner.flights.remove(&key);
                self.store(&mut inner, key, &answer);
                answer.claims
            })
            .await
            .clone();
        let counter = match (&outcome, called.load(Ordering::Relaxed)) {
            (_, false) => &self.counts.hit,
            (Ok(_), true) => &self.counts.miss,
            (Err(LookupError::Refused(_)), true) => &self.counts.refused,
            (Err(LookupError::Unavailable(_)), true) => &self.counts.unavailable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    fn store(&self, inner: &mut Inner, key: Key, answer: &Answer) {
        let life = match &answer.claims {
            Ok(_) => self.ttl,
            Err(LookupError::Refused(_)) => self.ttl.min(REFUSAL_TTL),
            Err(LookupError::Unavailable(_)) => return,
        };
        let now = self.clock.monotonic();
        let now_ms = self.clock.now_ms();
        let life = match answer.expires_at_ms {
            Some(at) => life.min(Duration::from_millis(at.saturating_sub(now_ms))),
            None => life,
        };
        if life.is_zero() {
            return;
        }
        if inner.entries.len() >= self.max_entries && !inner.entries.contains_key(&key) {
            inner.entries.retain(|_, e| self.live(e, now, now_ms));
            if inner.entries.len() >= self.max_entries {
                // Still full of live entries: the one that would leave first goes.
                if let Some(soonest) = inner
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| *k)
                {
                    inner.entries.remove(&soonest);
                }
            }
        }
        inner.entries.insert(
            key,
            Entry {
                outcome: answer.claims.clone(),
                until: now + life,
                expires_at_ms: answer.expires_at_ms,
            },
        );
    }
}

/// One caller's hold on a look-up under way. A caller cancelled while no
/// other waits (its request gone, say) takes the unfinished look-up out of
/// the map, so abandoned keys cannot pile up.
struct Flight<'c> {
    cache: &'c LookupCache,
    key: Key,
    cell: Arc<OnceCell<Outcome>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if self.cell.initialized() {
            return;
        }
        let mut inner = self.cache.lock();
        let alone = inner.flights.get(&self.key).is_some_and(|cell| {
            // The map's reference and this one: nobody else can be waiting,
            // and nobody can start to without the lock held here.
            Arc::ptr_eq(cell, &self.cell) && Arc::strong_count(&self.cell) == 2
        });
        if alone {
            inner.flights.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::upstream::lookup::key;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const NOW_MS: u64 = 1_700_000_000_000;

    fn new_cache(ttl_secs: u64) -> (LookupCache, Arc<ManualClock>) {
        let clock = ManualClock::at_ms(NOW_MS);
        (
            LookupCache::with_capacity(Duration::from_secs(ttl_secs), 3, clock.clone()),
            clock,
        )
    }

    /// Looks `k` up, answering `answer` on a miss; says whether it missed.
    async fn look(cache: &LookupCache, k: &str, answer: Answer) -> (Outcome, bool) {
        let missed = AtomicUsize::new(0);
        let outcome = cache
            .get_or_fetch(key(&[k.as_bytes()]), || async {
                missed.fetch_add(1, Ordering::SeqCst);
                answer
            })
            .await;
        (outcome, missed.load(Ordering::SeqCst) == 1)
    }

    fn session(expires_at_ms: Option<u64>) -> Answer {
        Answer::session(json!({"user": {"id": "u1"}}), expires_at_ms, NOW_MS)
    }

    #[tokio::test]
    async fn a_session_is_kept_for_the_ttl_of_the_injected_clock() {
        let (cache, clock) = new_cache(30);
        let (first, missed) = look(&cache, "a", session(None)).await;
        assert!(missed && first.is_ok());
        clock.advance_secs(29);
        let (again, missed) = look(&cache, "a", session(None)).await;
        assert!(!missed, "a hit within cache_ttl");
        assert_eq!(again.unwrap()["user"]["id"], "u1");
        clock.advance_secs(1);
        assert!(
            look(&cache, "a", session(None)).await.1,
            "gone at cache_ttl"
        );
    }

    #[tokio::test]
    async fn a_session_is_never_kept_past_its_expiry() {
        let (cache, clock) = new_cache(30);
        let expires = NOW_MS + 10_000;
        assert!(look(&cache, "a", session(Some(expires))).await.1);
        clock.advance(Duration::from_millis(9_999));
        assert!(!look(&cache, "a", session(Some(expires))).await.1);
        clock.advance(Duration::from_millis(1));
        let (outcome, missed) = look(&cache, "a", session(Some(expires))).await;
        assert!(missed, "asked again at the session's expiry, not later");
        assert!(outcome.is_ok(), "the upstream's (older) answer");
        // The wall clock alone also bounds it: a session answered with 10 s
        // left is gone once the wall clock passes its expiry.
        let (cache, clock) = new_cache(30);
        assert!(look(&cache, "b", session(Some(expires))).await.1);
        clock.advance(Duration::from_millis(10_000));
        assert!(look(&cache, "b", session(Some(expires))).await.1);
    }

    #[tokio::test]
    async fn refusals_are_kept_five_seconds_and_failures_not_at_all() {
        let (cache, clock) = new_cache(30);
        assert!(look(&cache, "r", Answer::refused("null")).await.1);
        clock.advance_secs(4);
        let (outcome, missed) = look(&cache, "r", session(None)).await;
        assert!(!missed && matches!(outcome, Err(LookupError::Refused(_))));
        clock.advance_secs(1);
        let (outcome, missed) = look(&cache, "r", session(None)).await;
        assert!(missed && outcome.is_ok(), "signed in since: asked again");

        assert!(look(&cache, "u", Answer::unavailable("503")).await.1);
        assert!(
            look(&cache, "u", session(None)).await.1,
            "a failure is not kept"
        );

        let (short, _) = new_cache(2);
        assert!(look(&short, "r", Answer::refused("null")).await.1);
        assert_eq!(short.len(), 1);
    }

    #[tokio::test]
    async fn a_zero_ttl_caches_nothing() {
        let (cache, _) = new_cache(0);
        assert!(look(&cache, "a", session(None)).await.1);
        assert!(look(&cache, "r", Answer::refused("null")).await.1);
        assert_eq!(cache.len(), 0);
        assert!(look(&cache, "a", session(None)).await.1);
    }

    #[tokio::test]
    async fn the_entry_count_is_bounded_and_expired_entries_go_first() {
        let (cache, clock) = new_cache(30);
        assert!(look(&cache, "refused", Answer::refused("null")).await.1);
        assert!(look(&cache, "a", session(None)).await.1);
        assert!(look(&cache, "b", session(None)).await.1);
        assert_eq!(cache.len(), 3);
        clock.advance_secs(5);
        assert!(look(&cache, "c", session(None)).await.1);
        assert_eq!(cache.len(), 3, "the expired refusal was pruned");
        assert!(!look(&cache, "a", session(None)).await.1);
        // Full of live entries: one leaving soonest ("a" or "b") makes room.
        assert!(look(&cache, "d", session(None)).await.1);
        assert_eq!(cache.len(), 3);
        assert!(!look(&cache, "d", session(None)).await.1);
        assert!(!look(&cache, "c", session(None)).await.1);
    }

    /// Starts a look-up of `k` on its own task, counting calls; its fetch
    /// waits for `gate`.
    fn spawn_look_up(
        cache: &Arc<LookupCache>,
        calls: &Arc<AtomicUsize>,
        gate: &Arc<tokio::sync::Notify>,
    ) -> tokio::task::JoinHandle<Outcome> {
        let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .get_or_fetch(key(&[b"k"]), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    session(None)
                })
                .await
        })
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_split_the_flight() {
        let cache = Arc::new(new_cache(30).0);
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let leader = spawn_look_up(&cache, &calls, &gate);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let quitter = spawn_look_up(&cache, &calls, &gate);
        tokio::time::sleep(Duration::from_millis(10)).await;
        quitter.abort();
        assert!(quitter.await.unwrap_err().is_cancelled());
        let late = spawn_look_up(&cache, &calls, &gate);
        tokio::time::sleep(Duration::from_millis(10)).await;
        gate.notify_waiters();
        assert!(leader.await.unwrap().is_ok());
        assert!(late.await.unwrap().is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cancelled_look_up_leaves_the_key_usable() {
        let (cache, _) = new_cache(30);
        let k = key(&[b"k"]);
        let pending = cache.get_or_fetch(k, std::future::pending::<Answer>);
        let timed_out = tokio::time::timeout(Duration::from_millis(10), pending).await;
        assert!(timed_out.is_err());
        assert!(
            cache.lock().flights.is_empty(),
            "the abandoned look-up is gone"
        );
        let (outcome, missed) = look(&cache, "k", session(None)).await;
        assert!(missed && outcome.is_ok());
    }
}
