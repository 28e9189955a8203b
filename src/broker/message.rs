//! Messages and channels as REST and realtime both handle them: which
//! clientId a message may carry, whether a capability lets a client attach,
//! a message's stored form and counted size, and what a channel may be
//! called. One copy of each rule, so the two transports cannot disagree.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::time::Duration;

use serde_json::{json, Value};

use super::auth::Credentials;
use super::filter::Filter;
use super::protocol::AblyError;
use super::tables::GiveBack;
use crate::capability::{OpSet, Operation};

pub(crate) fn random_id(len: usize) -> String {
    use rand::rngs::OsRng;
    use rand::TryRngCore;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source is available");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Whether credentials may assume any clientId: an API key, or a token
/// whose clientId is the wildcard `*` (TD6, CD2a, RSA7b4).
fn may_assume_any_client_id(credentials: &Credentials) -> bool {
    credentials.expires_ms.is_none() || credentials.client_id.as_deref() == Some("*")
}

/// Which clientId a realtime connection has, given its credentials and the
/// `clientId` it asked for in the connect query (RTN2d, RSA15a, RSA15b).
pub(crate) fn resolve_client_id(
    credentials: &Credentials,
    asked: Option<&str>,
    key_auth: bool,
) -> Result<Option<String>, AblyError> {
    let mismatch = || {
        AblyError::new(
            40102,
            401,
            "the clientId asked for does not match the credentials' clientId",
        )
    };
    match (credentials.client_id.as_deref(), asked) {
        (Some("*"), asked) => Ok(asked.map(str::to_string)),
        (Some(own), Some(asked)) if own != asked => Err(mismatch()),
        (Some(own), _) => Ok(Some(own.to_string())),
        (None, Some(asked)) if key_auth => Ok(Some(asked.to_string())),
        (None, Some(_)) => Err(mismatch()),
        (None, None) => Ok(None),
    }
}

/// The clientId a message or presence item is published under, or why it
/// may not be (RTL6g, RSL1m, TD6):
/// - an identified client (`identified`) speaks only for itself: a message
///   naming another clientId is refused, one naming none gets the client's;
/// - an unidentified client whose credentials may assume any clientId (an
///   API key, or a wildcard token) may name any;
/// - any other unidentified client may name none.
///
/// A realtime connection is identified by the clientId it connected as; a
/// REST request by its credentials' clientId, unless that is the wildcard.
pub(crate) fn speaker(
    identified: Option<&str>,
    credentials: &Credentials,
    asked: Option<&Value>,
) -> Result<Option<String>, AblyError> {
    let refused = |why: &str| AblyError::new(40012, 400, why.to_string());
    match (asked, identified) {
        (None | Some(Value::Null), own) => Ok(own.map(str::to_string)),
        (Some(Value::String(asked)), Some(own)) if asked == own => Ok(Some(own.to_string())),
        (Some(Value::String(_)), Some(_)) => Err(refused(
            "the message's clientId is not the client's clientId",
        )),
        (Some(Value::String(asked)), None) if may_assume_any_client_id(credentials) => {
            Ok(Some(asked.clone()))
        }
        (Some(Value::String(_)), None) => Err(refused(
            "an unidentified client without a wildcard clientId cannot name a clientId",
        )),
        (Some(_), _) => Err(refused("clientId must be a string")),
    }
}

/// The clientId REST credentials identify: theirs, unless it is the wildcard.
pub(crate) fn identified_by(credentials: &Credentials) -> Option<&str> {
    credentials.client_id.as_deref().filter(|c| *c != "*")
}

/// A client may attach where its capability allows subscribe, publish or
/// presence: attaching is how a realtime client does any of them (RTL4,
/// RTL6c, RTP8); `history` alone does not need it.
pub(crate) fn may_attach(ops: OpSet) -> bool {
    [
        Operation::Subscribe,
        Operation::Publish,
        Operation::Presence,
    ]
    .iter()
    .any(|op| ops.allows(*op))
}

/// The id a client gave a message, if any: a non-empty string (RSL1k2,
/// RSL1k3; ably-js sets `<base64 random>:<index>` itself when
/// `idempotentRestPublishing` is on, RSL1k1).
pub(crate) fn supplied_id(item: &Value) -> Option<&str> {
    item.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
}

/// How long a client-supplied message id is remembered: "Ably can only
/// detect duplicate messages within a 2-minute window after the original
/// message, with the same ID, is published"
/// (<https://ably.com/docs/pub-sub/advanced#idempotency>).
pub(crate) const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(120);

/// Most ids one channel remembers. Ably's default per-channel publish rate
/// (50 messages/s, <https://ably.com/docs/platform/pricing/limits>) over the
/// 2-minute window is 6 000; past this cap the oldest id is forgotten early,
/// so a flood on one channel costs at most this many entries (16 bytes each
/// plus the map's overhead), never a refused publish.
pub(crate) const MAX_REMEMBERED_IDS: usize = 10_000;

/// The client-supplied message ids one channel has published within the
/// idempotency window, so a retried publish is delivered and stored once.
///
/// Ably deduplicates per channel: an id is "the idempotency key" of a
/// publish to a channel, and the batch API lets the same message ids go to
/// several channels as independent publishes
/// (<https://faqs.ably.com/client-specified-message-id-restrictions-for-multiple-messages-published-atomically>).
///
/// Ids are kept as keyed 64-bit hashes (SipHash with a random key), so an
/// entry's size does not depend on the id's length and a client cannot
/// choose two ids that collide.
pub(crate) struct RecentIds {
    hasher: RandomState,
    /// The remembered ids' hashes.
    seen: HashSet<u64>,
    /// The same ids with when each was first published (ms since the
    /// epoch), oldest first, for pruning as they expire.
    order: VecDeque<(u64, u64)>,
}

impl Default for RecentIds {
    fn default() -> Self {
        RecentIds {
            hasher: RandomState::new(),
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl RecentIds {
    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Ids remembered now: the larger of the hash set and the expiry queue,
    /// which hold the same ids.
    pub(crate) fn len(&self) -> usize {
        self.order.len().max(self.seen.len())
    }

    #[cfg(test)]
    pub(crate) fn room(&self) -> usize {
        self.seen.capacity() + self.order.capacity()
    }

    /// Forgets the ids first published longer than the window ago.
    pub(crate) fn prune(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(IDEMPOTENCY_WINDOW.as_millis() as u64);
        while let Some(&(at, key)) = self.order.front() {
            if at > oldest {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }

    /// Remembers `id` as published at `now_ms`; false when it was published
    /// within the window already (a duplicate, which is not remembered anew:
    /// the window runs from the original publish).
    pub(crate) fn first_time(&mut self, id: &str, now_ms: u64) -> bool {
        self.prune(now_ms);
        let key = self.hasher.hash_one(id);
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() >= MAX_REMEMBERED_IDS {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(key);
        self.order.push_back((now_ms, key));
        true
    }
}

impl GiveBack for RecentIds {
    fn give_back_room(&mut self) {
        self.seen.give_back_room();
        self.order.give_back_room();
    }
}

/// The message as delivered and stored: id, clientId, connectionId and
/// timestamp filled in, data and encoding passed through untouched.
pub(crate) fn stored_message(
    item: &Value,
    default_id: String,
    client_id: Option<String>,
    connection_id: Option<&str>,
    now: u64,
) -> Value {
    let mut message = serde_json::Map::new();
    let id = supplied_id(item).map(str::to_string).unwrap_or(default_id);
    message.insert("id".into(), json!(id));
    for field in ["name", "data", "encoding"] {
        if let Some(v) = item.get(field).filter(|v| !v.is_null()) {
            message.insert(field.into(), v.clone());
        }
    }
    if let Some(extras) = item.get("extras").and_then(Value::as_object) {
        // A client-supplied delta marker would send ably-js into a re-attach loop.
        let mut extras = extras.clone();
        extras.remove("delta");
        if !extras.is_empty() {
            message.insert("extras".into(), Value::Object(extras));
        }
    }
    if let Some(client_id) = client_id {
        message.insert("clientId".into(), json!(client_id));
    }
    if let Some(connection_id) = connection_id {
        message.insert("connectionId".into(), json!(connection_id));
    }
    message.insert("timestamp".into(), json!(now));
    Value::Object(message)
}

/// Ably counts a message's name, data, clientId and extras against the limit (TO3l8).
pub(crate) fn message_size(item: &Value) -> usize {
    let text = |v: Option<&Value>| match v {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) => s.len(),
        Some(other) => other.to_string().len(),
    };
    text(item.get("id"))
        + text(item.get("name"))
        + text(item.get("data"))
        + text(item.get("clientId"))
        + text(item.get("extras"))
}

/// Longest channel name accepted, in bytes. Ably sets no limit but advises
/// staying well under 2048 characters, as names travel in REST URLs
/// (<https://ably.com/docs/channels>); the broker's own bound keeps memory
/// per channel small.
pub(crate) const MAX_CHANNEL_NAME_LEN: usize = 512;

/// Ably's channel-name rules (<https://ably.com/docs/channels>, "Use a
/// channel"; error 40010, <https://ably.com/docs/platform/errors/codes/40010-invalid-channel-name>):
/// a name is not empty, does not start with `:` (it delimits namespaces) or
/// `[` (Ably reserves it for qualifiers such as `[meta]` and `[?rewind=1]`,
/// which this broker does not implement), and holds no line break ("newline
/// characters (or similar, e.g. carriage return or unicode page separator)",
/// <https://faqs.ably.com/what-restrictions-are-there-on-channel-names>).
/// Anything else is allowed: spaces, `::` as in the Spaces SDK's
/// `board::$space`, any Unicode. The caller answers a refusal with 40010 and
/// status 400, as Ably does.
pub(crate) fn valid_channel_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("invalid channel name: it must not be empty");
    }
    if name.len() > MAX_CHANNEL_NAME_LEN {
        return Err("invalid channel name: the embedded broker accepts at most 512 bytes");
    }
    if name.starts_with(':') {
        return Err("invalid channel name: it must not start with ':', which separates namespaces");
    }
    if name.starts_with('[') {
        return Err(
            "invalid channel name: it must not start with '['; qualifiers such as [meta] and \
             [?params] are not supported by the embedded broker (pass params as channel options), \
             and [filter=…] (subscription filters) only on a realtime attach",
        );
    }
    if name.chars().any(is_line_break) {
        return Err("invalid channel name: it must not contain a newline, carriage return or other line break");
    }
    Ok(())
}

/// A channel as a realtime client names it: a channel, or a derived channel
/// of one with a subscription filter (`[filter=<base64>]<channel>`, what
/// ably-js's `channels.getDerived(name, { filter })` attaches to;
/// <https://ably.com/docs/pub-sub/advanced#subscription-filters>).
#[derive(Debug)]
pub(crate) enum ChannelName<'a> {
    Plain,
    Filtered { base: &'a str, filter: Filter },
}

const FILTER_QUALIFIER: &str = "[filter=";

/// Reads a realtime channel name. `[filter=…]` is the one qualifier read;
/// the base channel follows the rules of [`valid_channel_name`], and any
/// other qualifier is refused as there. The caller answers an error with
/// 40010 and status 400.
pub(crate) fn parse_channel_name(name: &str) -> Result<ChannelName<'_>, String> {
    let Some(rest) = name.strip_prefix(FILTER_QUALIFIER) else {
        return valid_channel_name(name)
            .map(|()| ChannelName::Plain)
            .map_err(str::to_string);
    };
    let Some((encoded, base)) = rest.split_once(']') else {
        return Err("invalid channel name: the [filter=…] qualifier is not closed with ']'".into());
    };
    if encoded.contains('?') {
        return Err(
            "invalid channel name: [filter=…?params] is not supported; pass params as \
                    channel options (a filtered channel takes no rewind or delta)"
                .into(),
        );
    }
    valid_channel_name(base).map_err(|why| format!("{why} (the channel after [filter=…])"))?;
    let filter =
        Filter::from_base64(encoded).map_err(|e| format!("invalid subscription filter: {e}"))?;
    Ok(ChannelName::Filtered { base, filter })
}

/// The characters Unicode treats as line breaks (UAX #14's mandatory breaks
/// BK, CR, LF, NL): LF, VT, FF, CR, NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\u{0B}' | '\u{0C}' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Capability;

    fn credentials(client_id: Option<&str>, key: bool) -> Credentials {
        Credentials {
            client_id: client_id.map(str::to_string),
            capability: Capability::parse_json(r#"{"*":["*"]}"#).unwrap(),
            expires_ms: (!key).then_some(1),
        }
    }

    const WINDOW_MS: u64 = IDEMPOTENCY_WINDOW.as_millis() as u64;

    #[test]
    fn filter_qualifiers_are_read_and_other_qualifiers_refused() {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode("name == `\"filtered\"`");
        match parse_channel_name(&format!("[filter={encoded}]chan")) {
            Ok(ChannelName::Filtered { base, filter }) => {
                assert_eq!(base, "chan");
                assert!(filter.matches(&json!({"name": "filtered"})));
                assert!(!filter.matches(&json!({"name": "other"})));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_channel_name("chan"), Ok(ChannelName::Plain)));
        for (name, says) in [
            (format!("[filter={encoded}"), "not closed"),
            (
                format!("[filter={encoded}?rewind=1]chan"),
                "[filter=…?params]",
            ),
            (format!("[filter={encoded}]"), "must not be empty"),
            (
                format!("[filter={encoded}][meta]chan"),
                "must not start with '['",
            ),
            ("[filter=!!]chan".to_string(), "not base64"),
            (
                format!(
                    "[filter={}]chan",
                    base64::engine::general_purpose::STANDARD.encode("data == 'x'")
                ),
                "cannot be filtered on",
            ),
            ("[meta]chan".to_string(), "must not start with '['"),
            ("[filter]chan".to_string(), "must not start with '['"),
            ("[?rewind=1]chan".to_string(), "must not start with '['"),
        ] {
            let why = parse_channel_name(&name).expect_err(&name);
            assert!(why.contains(says), "{name}: {why}");
        }
    }

    #[test]
    fn only_non_empty_string_ids_are_the_clients_own() {
        assert_eq!(supplied_id(&json!({"id": "abc:0"})), Some("abc:0"));
        for no in [
            json!({}),
            json!({"id": ""}),
            json!({"id": null}),
            json!({"id": 7}),
        ] {
            assert_eq!(supplied_id(&no), None, "{no}");
        }
        let stored = stored_message(&json!({"id": ""}), "conn:1:0".into(), None, None, 5);
        assert_eq!(stored["id"], "conn:1:0", "an empty id is replaced");
    }

    #[test]
    fn an_id_is_a_duplicate_for_two_minutes_after_its_first_publish() {
        let mut ids = RecentIds::default();
        let t0 = 1_000_000;
        assert!(ids.first_time("a", t0));
        assert!(ids.first_time("b", t0 + 1));
        assert!(!ids.first_time("a", t0 + 1));
        // A duplicate does not extend the window: it runs from the original.
        assert!(!ids.first_time("a", t0 + WINDOW_MS - 1));
        assert!(ids.first_time("a", t0 + WINDOW_MS), "expired, so new again");
        assert!(!ids.first_time("b", t0 + WINDOW_MS), "b is 1 ms younger");
    }

    #[test]
    fn ids_are_pruned_as_they_expire() {
        let mut ids = RecentIds::default();
        let t0 = 1_000_000;
        for i in 0..100 {
            assert!(ids.first_time(&format!("early-{i}"), t0));
        }
        assert!(ids.first_time("late", t0 + 60_000));
        ids.prune(t0 + WINDOW_MS - 1);
        assert_eq!(ids.len(), 101);
        ids.prune(t0 + WINDOW_MS);
        assert_eq!(ids.len(), 1, "the early ids are gone, the late one is kept");
        ids.prune(t0 + 60_000 + WINDOW_MS);
        assert!(ids.is_empty());
    }

    #[test]
    fn a_channel_remembers_at_most_the_cap_forgetting_the_oldest_first() {
        let mut ids = RecentIds::default();
        let t0 = 1_000_000;
        for i in 0..=MAX_REMEMBERED_IDS {
            assert!(ids.first_time(&i.to_string(), t0));
        }
        assert_eq!(ids.len(), MAX_REMEMBERED_IDS);
        assert!(!ids.first_time(&MAX_REMEMBERED_IDS.to_string(), t0));
        assert!(!ids.first_time("1", t0), "the second oldest is still held");
        assert!(ids.first_time("0", t0), "the oldest was forgotten early");
    }

    #[test]
    fn an_identified_client_speaks_only_for_itself() {
        let alice = credentials(Some("alice"), false);
        let own = identified_by(&alice);
        assert_eq!(
            speaker(own, &alice, None).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            speaker(own, &alice, Some(&json!("alice")))
                .unwrap()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            speaker(own, &alice, Some(&json!("bob"))).unwrap_err().code,
            40012
        );
    }

    #[test]
    fn keys_and_wildcard_tokens_may_name_any_client_and_others_none() {
        let wildcard = credentials(Some("*"), false);
        assert_eq!(identified_by(&wildcard), None);
        assert_eq!(speaker(None, &wildcard, None).unwrap(), None);
        assert_eq!(
            speaker(None, &wildcard, Some(&json!("bob")))
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        let key = credentials(None, true);
        assert_eq!(
            speaker(None, &key, Some(&json!("bob"))).unwrap().as_deref(),
            Some("bob")
        );
        let anonymous = credentials(None, false);
        assert_eq!(speaker(None, &anonymous, None).unwrap(), None);
        assert_eq!(
            speaker(None, &anonymous, Some(&json!("bob")))
                .unwrap_err()
                .code,
            40012
        );
    }

    #[test]
    fn a_clientid_that_is_not_a_string_is_refused() {
        let key = credentials(None, true);
        assert_eq!(
            speaker(None, &key, Some(&json!(7))).unwrap_err().code,
            40012
        );
    }

    #[test]
    fn channel_names_follow_ablys_rules() {
        for good in [
            "a",
            "board::$space",
            "board::$cursors",
            "private:a:b",
            "caf\u{e9}:\u{1F600}",
            "with spaces and\ttab",
            "ends:",
            "a[b]",
            "*",
        ] {
            assert_eq!(valid_channel_name(good), Ok(()), "{good:?}");
        }
        let long = "x".repeat(MAX_CHANNEL_NAME_LEN);
        assert_eq!(valid_channel_name(&long), Ok(()));
        for (bad, why) in [
            ("", "empty"),
            (":a", "start with ':'"),
            ("::$space", "start with ':'"),
            ("[meta]log", "start with '['"),
            ("[?rewind=1]a", "start with '['"),
            ("a\nb", "line break"),
            ("a\rb", "line break"),
            ("a\u{2028}b", "line break"),
            ("a\u{2029}b", "line break"),
            ("a\u{85}b", "line break"),
        ] {
            let refused = valid_channel_name(bad).expect_err(bad);
            assert!(refused.contains(why), "{bad:?}: {refused}");
            assert!(refused.starts_with("invalid channel name"), "{refused}");
        }
        assert!(valid_channel_name(&format!("{long}x"))
            .unwrap_err()
            .contains("512"));
    }

    #[test]
    fn attaching_needs_subscribe_publish_or_presence() {
        let capability = Capability::parse_json(r#"{"a":["history"],"b":["publish"]}"#).unwrap();
        assert!(!may_attach(capability.ops_for_channel("a")));
        assert!(may_attach(capability.ops_for_channel("b")));
        assert!(!may_attach(capability.ops_for_channel("c")));
    }
}
