//! Presence liveness: how long the members of a connection that ended
//! without CLOSE stay present, and how long a silent connection is trusted.
//!
//! Ably keeps such members present for a while, so a client that resumes
//! (RTN15) shows the others no leave and re-enter, and treats them as left
//! only when it does not come back
//! (<https://ably.com/docs/sdk/js/v2.0/types/ably.PresenceActions.LEAVE.html>);
//! the broker waits `presence_grace`, 15 s unless configured. A connection
//! that closed with CLOSE leaves at once. A connection the
//! broker has heard nothing from (no frame, no pong) for longer than
//! `maxIdleInterval` plus half of it is taken for dead and closed, which
//! starts the same countdown (RTN23a describes the client's side of it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::tables::GiveBack;
use super::BrokerState;

/// How long a silent connection is trusted, from `[broker] max_idle_interval`
/// (the grace is `Departures`').
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    pub(crate) max_idle_interval: Duration,
}

impl Timings {
    /// How often the broker pings: twice per `maxIdleInterval` (CD2h).
    pub(crate) fn ping_every(&self) -> Duration {
        self.max_idle_interval / 2
    }

    /// Silence longer than this (ms) closes the connection: three pings
    /// in a row unanswered.
    pub(crate) fn idle_timeout_ms(&self) -> u64 {
        (self.max_idle_interval + self.max_idle_interval / 2).as_millis() as u64
    }
}

/// Most connections whose members wait out the grace at once; past it a
/// dropped connection's members leave at once, so churn cannot grow this.
pub(crate) const MAX_PENDING: usize = 10_000;

/// How often due departures are looked for while any are pending.
const POLL: Duration = Duration::from_millis(100);

/// The channels a dropped connection is present on, and when its members
/// leave (ms on the broker's clock).
struct Pending {
    channels: Vec<String>,
    due_ms: u64,
}

/// Connections that dropped without CLOSE, whose members wait out the grace.
pub(crate) struct Departures {
    grace_ms: u64,
    pending: Mutex<HashMap<String, Pending>>,
    scheduled: Notify,
}

impl Departures {
    pub(crate) fn new(grace: Duration) -> Departures {
        Departures {
            grace_ms: grace.as_millis() as u64,
            pending: Mutex::new(HashMap::new()),
            scheduled: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the members of `connection_id` on `channels` for the grace.
    /// False when they must leave now instead: no grace, or too many pending.
    pub(crate) fn schedule(&self, connection_id: &str, channels: Vec<String>, now_ms: u64) -> bool {
        if self.grace_ms == 0 {
            return false;
        }
        {
            let mut pending = self.lock();
            if pending.len() >= MAX_PENDING && !pending.contains_key(connection_id) {
                return false;
            }
            pending.insert(
                connection_id.to_string(),
                Pending {
                    channels,
                    due_ms: now_ms + self.grace_ms,
                },
            );
        }
        self.scheduled.notify_one();
        true
    }

    /// A resumed connection takes its members back before they leave: the
    /// channels they are present on, none when the grace has run out.
    pub(crate) fn adopt(&self, connection_id: &str) -> Vec<String> {
        self.lock()
            .remove(connection_id)
            .map(|p| p.channels)
            .unwrap_or_default()
    }

    pub(crate) fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Gives back the room a burst of dropped connections left the table.
    pub(crate) fn sweep(&self) {
        self.lock().give_back_room();
    }

    #[cfg(test)]
    pub(crate) fn room(&self) -> usize {
        self.lock().capacity()
    }

    /// Calls `leave(connection, channel)` for every departure due at
    /// `now_ms`, under the lock `adopt` takes: a resume either adopts the
    /// members first or finds them gone, never re-enters them just before
    /// this removes them.
    pub(crate) fn leave_due(&self, now_ms: u64, mut leave: impl FnMut(&str, &str)) {
        let mut pending = self.lock();
        let due: Vec<String> = pending
            .iter()
            .filter(|(_, p)| p.due_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(departed) = pending.remove(&id) {
                for channel in &departed.channels {
                    leave(&id, channel);
                }
            }
        }
    }
}

/// The broker's departures task: waits while nothing is pending, else looks
/// for due departures every `POLL`, reading the broker's clock (so a test's
/// manual clock decides when the grace is over).
pub(crate) async fn run(state: Arc<BrokerState>) {
    loop {
        if state.departures.pending() == 0 {
            state.departures.scheduled.notified().await;
        }
        tokio::time::sleep(POLL).await;
        state
            .departures
            .leave_due(state.hub.now_ms(), |connection, channel| {
                state.hub.leave(channel, connection)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(departures: &Departures, now_ms: u64) -> Vec<(String, String)> {
        let mut left = Vec::new();
        departures.leave_due(now_ms, |c, ch| left.push((c.to_string(), ch.to_string())));
        left
    }

    #[test]
    fn members_leave_when_the_grace_is_over_unless_the_connection_resumed() {
        let departures = Departures::new(Duration::from_secs(15));
        assert!(departures.schedule("a", vec!["x".into(), "y".into()], 1_000));
        assert!(departures.schedule("b", vec!["x".into()], 2_000));
        assert!(due(&departures, 15_999).is_empty());
        assert_eq!(
            due(&departures, 16_000),
            vec![("a".into(), "x".into()), ("a".into(), "y".into())]
        );
        assert_eq!(departures.adopt("b"), vec!["x".to_string()]);
        assert!(due(&departures, 60_000).is_empty(), "b resumed");
        assert!(departures.adopt("a").is_empty(), "a's grace ran out");
        assert_eq!(departures.pending(), 0);
    }

    #[test]
    fn no_grace_or_too_many_pending_means_leaving_at_once() {
        assert!(!Departures::new(Duration::ZERO).schedule("a", vec!["x".into()], 0));
        let departures = Departures::new(Duration::from_secs(1));
        for i in 0..MAX_PENDING {
            assert!(departures.schedule(&i.to_string(), vec!["x".into()], 0));
        }
        assert!(!departures.schedule("one more", vec!["x".into()], 0));
        assert!(
            departures.schedule("0", vec!["x".into()], 0),
            "a reschedule"
        );
        assert_eq!(departures.pending(), MAX_PENDING);
    }

    #[test]
    fn the_idle_timeout_is_three_ping_periods() {
        let timings = Timings {
            max_idle_interval: Duration::from_secs(15),
        };
        assert_eq!(timings.ping_every(), Duration::from_millis(7_500));
        assert_eq!(timings.idle_timeout_ms(), 22_500);
    }
}
