//! Continuity: the serials that order each channel's events (RTL15b), and
//! the connections a client may resume (RTN15b) or recover (RTN16k).
//!
//! Serials come from one broker-wide counter, taken under the hub's lock, so
//! they rise on every channel and are never reused while the broker runs.
//! On the wire a serial is `<epoch>:<16 hex digits>`: the epoch is random
//! per broker start, so a serial from an earlier run is recognised as
//! unknown instead of being mistaken for a current one.
//!
//! A connection is remembered while it is open (so a resume that arrives
//! before the broker noticed the old transport died takes it over) and for
//! the connection-state TTL after it closed: its id, key, clientId and
//! expiry, nothing more. Closed entries are pruned as they expire.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::tables::GiveBack;
use crate::clock::SharedClock;

/// Longest channelSerial read from a client; anything longer is unknown.
const MAX_SERIAL_LEN: usize = 64;

/// Most closed connections remembered at once. Entries leave as they
/// expire; this only bounds a burst of closes within one TTL, beyond which
/// a closed connection is not resumable (its client gets a new connection).
pub(crate) const MAX_CLOSED: usize = 100_000;

/// How long a resume waits for the connection it takes over to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// The serials of one broker run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Serials {
    epoch: String,
}

impl Serials {
    pub(crate) fn new(epoch: String) -> Serials {
        Serials { epoch }
    }

    /// The wire form of serial `seq`.
    pub(crate) fn format(&self, seq: u64) -> String {
        format!("{}:{seq:016x}", self.epoch)
    }

    /// The sequence number of a serial this broker run issued; `None` for
    /// anything else (another run, malformed, too long).
    pub(crate) fn parse(&self, text: &str) -> Option<u64> {
        if text.len() > MAX_SERIAL_LEN {
            return None;
        }
        let (epoch, hex) = text.rsplit_once(':')?;
        if epoch != self.epoch || hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    }
}

/// A connection as a resume finds it.
struct Live {
    id: String,
    client_id: Option<String>,
    stop: Arc<Notify>,
    gone: watch::Receiver<bool>,
}

struct Closed {
    id: String,
    client_id: Option<String>,
    expires_ms: u64,
}

#[derive(Default)]
struct Table {
    live: HashMap<String, Live>,
    closed: HashMap<String, Closed>,
    /// Closed keys in the order they expire (every entry lives as long).
    expiry: VecDeque<(u64, String)>,
}

impl Table {
    fn prune(&mut self, now: u64) {
        while let Some((expires, _)) = self.expiry.front() {
            if *expires > now {
                break;
            }
            let (expires, key) = self.expiry.pop_front().expect("checked above");
            // The key may have been taken and closed again since: only the
            // entry this expiry was queued for goes.
            if self
                .closed
                .get(&key)
                .is_some_and(|c| c.expires_ms == expires)
            {
                self.closed.remove(&key);
            }
        }
    }
}

/// What an open connection holds: the signal that another transport took
/// it over, and the one it raises when it is gone.
pub(crate) struct Registration {
    pub(crate) stop: Arc<Notify>,
    gone: watch::Sender<bool>,
}

/// The connections this broker may resume or recover.
pub(crate) struct Sessions {
    table: Mutex<Table>,
    ttl_ms: u64,
    clock: SharedClock,
}

impl Sessions {
    pub(crate) fn new(ttl_ms: u64, clock: SharedClock) -> Sessions {
        Sessions {
            table: Mutex::new(Table::default()),
            ttl_ms,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an open connection under its key.
    pub(crate) fn open(&self, key: &str, id: &str, client_id: Option<&str>) -> Registration {
        let stop = Arc::new(Notify::new());
        let (gone, watching) = watch::channel(false);
        self.lock().live.insert(
            key.to_string(),
            Live {
                id: id.to_string(),
                client_id: client_id.map(str::to_string),
                stop: stop.clone(),
                gone: watching,
            },
        );
        Registration { stop, gone }
    }

    /// Records that the connection closed: it may be resumed until the TTL
    /// passes. Raises `gone` for a resume waiting to take it over.
    pub(crate) fn close(
        &self,
        key: &str,
        id: &str,
        client_id: Option<&str>,
        registration: &Registration,
    ) {
        let now = self.clock.now_ms();
        {
            let mut table = self.lock();
            if table.live.get(key).is_some_and(|l| l.id == id) {
                table.live.remove(key);
            }
            table.prune(now);
            if table.closed.len() < MAX_CLOSED {
                let expires_ms = now + self.ttl_ms;
                table.closed.insert(
                    key.to_string(),
                    Closed {
                        id: id.to_string(),
                        client_id: client_id.map(str::to_string),
                        expires_ms,
                    },
                );
                table.expiry.push_back((expires_ms, key.to_string()));
            } else {
                tracing::warn!(
                    limit = MAX_CLOSED,
                    "too many connections closed within the connection-state TTL; this one cannot be resumed"
                );
            }
        }
        registration.gone.send_replace(true);
    }

    /// The id of the connection `key` names, for a client with `client_id`
    /// resuming or recovering it; the entry is used up. A connection still
    /// open (its client saw the transport fail before the broker did) is
    /// told to stop, and awaited. `None`: unknown, expired, or another
    /// client's.
    pub(crate) async fn take(&self, key: &str, client_id: Option<&str>) -> Option<String> {
        let live = {
            let mut table = self.lock();
            table.prune(self.clock.now_ms());
            if let Some(found) = self.take_closed(&mut table, key, client_id) {
                return found;
            }
            let live = table.live.get(key)?;
            if live.client_id.as_deref() != client_id {
                return None;
            }
            (live.stop.clone(), live.gone.clone())
        };
        let (stop, mut gone) = live;
        stop.notify_one();
        let _ = tokio::time::timeout(TAKEOVER_WAIT, gone.wait_for(|g| *g)).await;
        let mut table = self.lock();
        self.take_closed(&mut table, key, client_id).flatten()
    }

    /// `Some(answer)` when a closed entry for `key` exists.
    fn take_closed(
        &self,
        table: &mut Table,
        key: &str,
        client_id: Option<&str>,
    ) -> Option<Option<String>> {
        let closed = table.closed.remove(key)?;
        let fresh = closed.expires_ms > self.clock.now_ms();
        Some((fresh && closed.client_id.as_deref() == client_id).then_some(closed.id))
    }

    /// Forgets the open connection `key` names before its clean-up runs: its
    /// client closed it (CLOSE), so from the CLOSED reply on its key names
    /// nothing, e.g. for a REST publish on its behalf (TM2h).
    pub(crate) fn retire(&self, key: &str, id: &str) {
        let mut table = self.lock();
        if table.live.get(key).is_some_and(|l| l.id == id) {
            table.live.remove(key);
        }
    }

    /// The id and clientId of the open connection `key` names.
    pub(crate) fn live(&self, key: &str) -> Option<(String, Option<String>)> {
        self.lock()
            .live
            .get(key)
            .map(|l| (l.id.clone(), l.client_id.clone()))
    }

    /// Forgets closed connections past the TTL, and gives back the room a
    /// burst of connections left the tables.
    pub(crate) fn sweep(&self) {
        let now = self.clock.now_ms();
        let mut table = self.lock();
        table.prune(now);
        table.live.give_back_room();
        table.closed.give_back_room();
        table.expiry.give_back_room();
    }

    /// The capacities of the open, closed and expiry tables.
    #[cfg(test)]
    pub(crate) fn room(&self) -> [usize; 3] {
        let table = self.lock();
        [
            table.live.capacity(),
            table.closed.capacity(),
            table.expiry.capacity(),
        ]
    }

    /// Closed connections remembered now.
    #[cfg(test)]
    pub(crate) fn closed_count(&self) -> usize {
        self.lock().closed.len()
    }

    /// Open connections, closed ones, and the closed keys queued for
    /// expiry (which outlive an entry a resume took, until its TTL).
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        let table = self.lock();
        (table.live.len(), table.closed.len(), table.expiry.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn serials_are_ordered_text_and_only_this_runs_parse() {
        let serials = Serials::new("abc".into());
        assert_eq!(serials.format(255), "abc:00000000000000ff");
        assert!(serials.format(9) < serials.format(10));
        assert_eq!(serials.parse(&serials.format(42)), Some(42));
        for unknown in [
            "",
            "abc",
            "xyz:000000000000002a",
            "abc:2a",
            "abc:zzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(serials.parse(unknown), None, "{unknown}");
        }
        assert_eq!(serials.parse(&"a".repeat(100)), None);
    }

    #[actix_web::test]
    async fn a_closed_connection_is_resumable_once_until_the_ttl_and_then_forgotten() {
        let clock = ManualClock::at_ms(1_000_000);
        let sessions = Sessions::new(120_000, clock.clone());
        let registration = sessions.open("k1", "id1", Some("alice"));
        sessions.close("k1", "id1", Some("alice"), &registration);
        assert_eq!(
            sessions.take("k1", Some("bob")).await,
            None,
            "another client's"
        );
        let registration = sessions.open("k1", "id1", Some("alice"));
        sessions.close("k1", "id1", Some("alice"), &registration);
        assert_eq!(
            sessions.take("k1", Some("alice")).await.as_deref(),
            Some("id1")
        );
        assert_eq!(sessions.take("k1", Some("alice")).await, None, "used up");

        let registration = sessions.open("k2", "id2", None);
        sessions.close("k2", "id2", None, &registration);
        clock.advance_secs(119);
        sessions.sweep();
        assert_eq!(sessions.closed_count(), 1);
        clock.advance_secs(1);
        assert_eq!(sessions.take("k2", None).await, None, "expired");
        let registration = sessions.open("k3", "id3", None);
        sessions.close("k3", "id3", None, &registration);
        clock.advance_secs(120);
        sessions.sweep();
        assert_eq!(sessions.closed_count(), 0, "pruned as it expired");
    }

    #[actix_web::test]
    async fn a_resume_takes_over_a_connection_still_open() {
        let clock = ManualClock::at_ms(1_000_000);
        let sessions = Arc::new(Sessions::new(120_000, clock));
        let registration = sessions.open("k", "id", None);
        let stop = registration.stop.clone();
        let closer = sessions.clone();
        actix_web::rt::spawn(async move {
            stop.notified().await;
            closer.close("k", "id", None, &registration);
        });
        assert_eq!(sessions.take("k", None).await.as_deref(), Some("id"));
        assert_eq!(sessions.take("unknown", None).await, None);
    }
}
