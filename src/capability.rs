//! Ably capabilities: channel patterns, operations, and the capability map that
//! a token carries. The sidecar builds and narrows them; the broker enforces them.
//! One implementation, so what the sidecar grants is exactly what the broker allows.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// Longest channel pattern accepted, in bytes. Ably channel names are short in
/// practice; the bound keeps capability JSON (and so tokens) small.
pub(crate) const MAX_PATTERN_LEN: usize = 256;

/// Most resources a capability may hold.
pub(crate) const MAX_RESOURCES: usize = 100;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    #[error("{0:?} is not a valid channel pattern: {1}")]
    InvalidPattern(String, &'static str),
    #[error("{0:?} is not an Ably operation")]
    UnknownOperation(String),
    #[error("\"*\" must be the only operation in its list")]
    WildcardMixed,
    #[error("the operation list is empty")]
    EmptyOperations,
    #[error("capability must be a JSON object of channel patterns to operation lists: {0}")]
    Malformed(String),
    #[error("capability has more than {MAX_RESOURCES} channel patterns")]
    TooManyResources,
    #[error("capability has no channel patterns")]
    Empty,
}

macro_rules! operations {
    ($($variant:ident = $name:literal),+ $(,)?) => {
        /// One Ably capability operation, as listed in
        /// <https://ably.com/docs/auth/capabilities> (capability operations).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation { $($variant),+ }

        impl Operation {
            pub(crate) const ALL: &'static [Operation] = &[$(Operation::$variant),+];

            pub(crate) fn as_str(self) -> &'static str {
                match self { $(Operation::$variant => $name),+ }
            }

            pub(crate) fn parse(s: &str) -> Option<Operation> {
                match s { $($name => Some(Operation::$variant),)+ _ => None }
            }
        }
    };
}

operations! {
    AnnotationPublish = "annotation-publish",
    AnnotationSubscribe = "annotation-subscribe",
    ChannelMetadata = "channel-metadata",
    History = "history",
    MessageDeleteAny = "message-delete-any",
    MessageDeleteOwn = "message-delete-own",
    MessageUpdateAny = "message-update-any",
    MessageUpdateOwn = "message-update-own",
    ObjectPublish = "object-publish",
    ObjectSubscribe = "object-subscribe",
    Presence = "presence",
    PrivilegedHeaders = "privileged-headers",
    Publish = "publish",
    PushAdmin = "push-admin",
    PushSubscribe = "push-subscribe",
    Stats = "stats",
    Subscribe = "subscribe",
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of operations. `"*"` is kept apart from "every operation listed" because
/// Ably's `*` also grants operations added after this code was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpSet {
    bits: u32,
    star: bool,
}

impl OpSet {
    pub(crate) const EMPTY: OpSet = OpSet {
        bits: 0,
        star: false,
    };
    pub(crate) const STAR: OpSet = OpSet {
        bits: 0,
        star: true,
    };

    fn bit(op: Operation) -> u32 {
        1 << (op as u32)
    }

    #[cfg(test)]
    fn of(ops: &[Operation]) -> OpSet {
        OpSet {
            bits: ops.iter().fold(0, |acc, op| acc | Self::bit(*op)),
            star: false,
        }
    }

    /// Parses an operation list with Ably's rules: known names, or `"*"` alone, never empty.
    pub(crate) fn parse<S: AsRef<str>>(names: &[S]) -> Result<OpSet, CapabilityError> {
        if names.is_empty() {
            return Err(CapabilityError::EmptyOperations);
        }
        let mut set = OpSet::EMPTY;
        for name in names {
            let name = name.as_ref();
            if name == "*" {
                set.star = true;
            } else {
                let op = Operation::parse(name)
                    .ok_or_else(|| CapabilityError::UnknownOperation(name.to_string()))?;
                set.bits |= Self::bit(op);
            }
        }
        if set.star && set.bits != 0 {
            return Err(CapabilityError::WildcardMixed);
        }
        Ok(set)
    }

    pub(crate) fn is_empty(self) -> bool {
        !self.star && self.bits == 0
    }

    #[must_use]
    pub(crate) fn allows(self, op: Operation) -> bool {
        self.star || self.bits & Self::bit(op) != 0
    }

    pub(crate) fn union(self, other: OpSet) -> OpSet {
        if self.star || other.star {
            OpSet::STAR
        } else {
            OpSet {
                bits: self.bits | other.bits,
                star: false,
            }
        }
    }

    pub(crate) fn intersect(self, other: OpSet) -> OpSet {
        match (self.star, other.star) {
            (true, true) => OpSet::STAR,
            (true, false) => other,
            (false, true) => self,
            (false, false) => OpSet {
                bits: self.bits & other.bits,
                star: false,
            },
        }
    }

    /// Operation names in canonical (sorted) order.
    pub(crate) fn names(self) -> Vec<&'static str> {
        if self.star {
            return vec!["*"];
        }
        let mut names: Vec<&'static str> = Operation::ALL
            .iter()
            .filter(|op| self.bits & Self::bit(**op) != 0)
            .map(|op| op.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*` in the middle of a pattern: exactly one segment.
    One,
    /// `*` as the last segment: one or more segments.
    Tail,
}

/// A parsed Ably resource name: optional `[qualifier]`, then `:`-separated
/// segments where a whole segment may be `*` (the rules under "Resource names
/// and wildcards" in <https://ably.com/docs/auth/capabilities>).
///
/// `::` is an empty segment, nothing more: those docs split names on every
/// `:` and give no other meaning to an empty segment, and Ably's own SDKs
/// name their channels that way (the Spaces SDK's `<space>::$space` and
/// `<space>::$cursors`, per ably/spaces docs/channel-usage.md; Chat's
/// `<room>::$chat`, whose room-scoped capability is written
/// `your-room::$chat` in <https://ably.com/docs/chat/authentication>). So
/// `board::$space` is the segments `board`, `` and `$space`; `board::*`
/// matches `board::$space` and `board::$cursors`; and `board:*`, whose
/// trailing `*` stands for one or more segments, matches them too, as does
/// `*`. A `*` segment matches the empty segment like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    raw: String,
    /// `None` for ordinary channels, `Some("*")` for `[*]*`, else `queue`/`meta`.
    qualifier: Option<String>,
    segments: Vec<Segment>,
}

impl ChannelPattern {
    /// Parses a pattern strictly: a `*` that is not a whole segment is refused
    /// (Ably would read `orders:**` as a literal name, which is never what a
    /// policy author meant), as are characters that cannot appear in a
    /// channel name. Empty segments are allowed inside (`board::$space`) but
    /// not first (a channel name may not start with `:`, so `:a` matches
    /// nothing — <https://ably.com/docs/channels>) or last (`orders:` is
    /// almost always `orders:*` mistyped).
    pub(crate) fn parse(raw: &str) -> Result<ChannelPattern, CapabilityError> {
        let invalid = |why| CapabilityError::InvalidPattern(raw.to_string(), why);
        if raw.is_empty() {
            return Err(invalid("it is empty"));
        }
        if raw.len() > MAX_PATTERN_LEN {
            return Err(invalid("it is longer than 256 bytes"));
        }
        if raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Err(invalid(
                "it contains whitespace, a control character or a comma",
            ));
        }
        let (qualifier, rest) = if let Some(stripped) = raw.strip_prefix('[') {
            let end = stripped
                .find(']')
                .ok_or_else(|| invalid("the [qualifier] is not closed"))?;
            let q = &stripped[..end];
            if !matches!(q, "*" | "queue" | "meta") {
                return Err(invalid("the qualifier must be [queue], [meta] or [*]"));
            }
            (Some(q.to_string()), &stripped[end + 1..])
        } else {
            (None, raw)
        };
        if rest.contains('[') || rest.contains(']') {
            return Err(invalid("[ and ] may only open the pattern as a qualifier"));
        }
        if rest.is_empty() {
            return Err(invalid("nothing follows the [qualifier]"));
        }
        if rest.starts_with(':') {
            return Err(invalid(
                "it starts with ':', and no channel name does (Ably refuses them)",
            ));
        }
        if rest.ends_with(':') {
            return Err(invalid(
                "it ends with ':'; write ':*' for every channel under it",
            ));
        }
        let parts: Vec<&str> = rest.split(':').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = match *part {
                "*" if i + 1 == parts.len() => Segment::Tail,
                "*" => Segment::One,
                p if p.contains('*') => {
                    return Err(invalid("a * wildcard must be a whole segment"))
                }
                p => Segment::Literal(p.to_string()),
            };
            segments.push(seg);
        }
        if qualifier.as_deref() == Some("*") && segments != [Segment::Tail] {
            return Err(invalid("[*] may only be followed by *"));
        }
        Ok(ChannelPattern {
            raw: raw.to_string(),
            qualifier,
            segments,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.raw
    }

    fn is_everything(&self) -> bool {
        self.qualifier.as_deref() == Some("*")
    }

    /// Whether a concrete channel name is matched by this pattern.
    #[must_use]
    pub(crate) fn matches(&self, channel: &str) -> bool {
        if self.is_everything() {
            return true;
        }
        let (qualifier, rest) = split_qualifier(channel);
        if qualifier != self.qualifier.as_deref() {
            return false;
        }
        let mut names = rest.split(':');
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Tail => {
                    debug_assert_eq!(i + 1, self.segments.len());
                    return names.next().is_some();
                }
                Segment::One => {
                    if names.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if names.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        names.next().is_none()
    }

    /// Whether every channel matched by `other` is also matched by `self`.
    #[must_use]
    pub(crate) fn covers(&self, other: &ChannelPattern) -> bool {
        if self.is_everything() {
            return true;
        }
        if other.is_everything() || self.qualifier != other.qualifier {
            return false;
        }
        let tail = self.segments.last() == Some(&Segment::Tail);
        if tail {
            if other.segments.len() < self.segments.len() {
                return false;
            }
        } else if other.segments.len() != self.segments.len() {
            return false;
        }
        self.segments
            .iter()
            .zip(other.segments.iter())
            .all(|(mine, theirs)| match (mine, theirs) {
                (Segment::Tail, _) => true,
                (Segment::One, Segment::Tail) => false,
                (Segment::One, _) => true,
                (Segment::Literal(a), Segment::Literal(b)) => a == b,
                (Segment::Literal(_), _) => false,
            })
    }
}

fn split_qualifier(channel: &str) -> (Option<&str>, &str) {
    if let Some(stripped) = channel.strip_prefix('[') {
        if let Some(end) = stripped.find(']') {
            return (Some(&stripped[..end]), &stripped[end + 1..]);
        }
    }
    (None, channel)
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Ordered the way ably-js orders capability keys (JavaScript's default sort
/// compares UTF-16 code units), so the canonical JSON matches byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Utf16Key(ChannelPattern);

impl Ord for Utf16Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.raw.encode_utf16().cmp(other.0.raw.encode_utf16())
    }
}

impl PartialOrd for Utf16Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A capability: channel patterns to operation sets, never empty once built.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capability {
    grants: BTreeMap<Utf16Key, OpSet>,
}

impl Capability {
    pub(crate) fn new() -> Capability {
        Capability::default()
    }

    /// Adds operations to a pattern, merging with what it already has.
    pub(crate) fn grant(&mut self, pattern: ChannelPattern, ops: OpSet) {
        if ops.is_empty() {
            return;
        }
        let entry = self.grants.entry(Utf16Key(pattern)).or_default();
        *entry = entry.union(ops);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.grants.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ChannelPattern, OpSet)> {
        self.grants.iter().map(|(k, v)| (&k.0, *v))
    }

    /// Parses capability JSON text as Ably accepts it from a client.
    pub fn parse_json(text: &str) -> Result<Capability, CapabilityError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| CapabilityError::Malformed(e.to_string()))?;
        Capability::from_value(&value)
    }

    pub(crate) fn from_value(value: &serde_json::Value) -> Result<Capability, CapabilityError> {
        let object = value
            .as_object()
            .ok_or_else(|| CapabilityError::Malformed("not an object".into()))?;
        if object.len() > MAX_RESOURCES {
            return Err(CapabilityError::TooManyResources);
        }
        let mut capability = Capability::new();
        for (resource, ops) in object {
            let pattern = ChannelPattern::parse(resource)?;
            let names: Vec<&str> = ops
                .as_array()
                .ok_or_else(|| {
                    CapabilityError::Malformed(format!("{resource:?} is not mapped to a list"))
                })?
                .iter()
                .map(|op| {
                    op.as_str().ok_or_else(|| {
                        CapabilityError::Malformed(format!(
                            "{resource:?} lists an operation that is not a string"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            capability.grant(pattern, OpSet::parse(&names)?);
        }
        if capability.is_empty() {
            return Err(CapabilityError::Empty);
        }
        Ok(capability)
    }

    /// The canonical JSON text ably-js signs: no whitespace, resources and
    /// operations sorted.
    pub fn to_canonical_json(&self) -> String {
        let mut out = String::with_capacity(32 * self.grants.len() + 2);
        out.push('{');
        for (i, (key, ops)) in self.grants.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(&key.0.raw).expect("a string serialises"));
            out.push_str(":[");
            for (j, name) in ops.names().iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(name);
                out.push('"');
            }
            out.push(']');
        }
        out.push('}');
        out
    }

    /// Narrows `self` (what a client asked for) by `granted`, the way Ably
    /// narrows a token request by its key: where one pattern covers the other
    /// the narrower stays, operations intersect, and what neither covers is
    /// dropped. Partially overlapping patterns (`a:*:c` against `a:b:*`) are
    /// dropped too: their intersection has no pattern of its own.
    pub fn narrowed_by(&self, granted: &Capability) -> Capability {
        let mut out = Capability::new();
        for (asked, asked_ops) in self.iter() {
            for (allowed, allowed_ops) in granted.iter() {
                let ops = asked_ops.intersect(allowed_ops);
                if ops.is_empty() {
                    continue;
                }
                if allowed.covers(asked) {
                    out.grant(asked.clone(), ops);
                } else if asked.covers(allowed) {
                    out.grant(allowed.clone(), ops);
                }
            }
        }
        out
    }

    /// The operations this capability allows on one concrete channel.
    pub(crate) fn ops_for_channel(&self, channel: &str) -> OpSet {
        self.iter()
            .filter(|(pattern, _)| pattern.matches(channel))
            .fold(OpSet::EMPTY, |acc, (_, ops)| acc.union(ops))
    }

    #[must_use]
    pub(crate) fn allows(&self, channel: &str, op: Operation) -> bool {
        self.ops_for_channel(channel).allows(op)
    }

    /// Whether `self` grants nothing beyond `other`: the narrowing law the
    /// property tests and fuzz targets check.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn is_within(&self, other: &Capability) -> bool {
        self.iter().all(|(pattern, ops)| {
            let covered = other
                .iter()
                .filter(|(p, _)| p.covers(pattern))
                .fold(OpSet::EMPTY, |acc, (_, o)| acc.union(o));
            ops.intersect(covered) == ops
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_canonical_json())
    }
}

/// The capability laws, as assertions: stated once here, checked by the
/// property tests below and by the `capability` fuzz target (`fuzz/`, through
/// `crate::fuzzing`). Each panics with the offending input on a violation.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod laws {
    use super::*;

    /// Probing walks at most this many patterns, so a fuzz input with a
    /// hundred resources stays fast.
    const MAX_PROBED_PATTERNS: usize = 32;

    /// The canonical form parses back to the same capability, so what ably-js
    /// signs is what the sidecar meant.
    pub(crate) fn canonical_form_round_trips(cap: &Capability) {
        let text = cap.to_canonical_json();
        assert_eq!(
            Capability::parse_json(&text).as_ref(),
            Ok(cap),
            "canonical form {text} does not parse back"
        );
    }

    /// Narrowing never widens: `requested.narrowed_by(granted)` is within
    /// both, and on every probed channel it allows no operation (and no
    /// future-proof `*`) that either of them does not.
    pub(crate) fn narrowing_never_widens(granted: &Capability, requested: &Capability) {
        let narrowed = requested.narrowed_by(granted);
        let show = || format!("granted {granted}, requested {requested}, narrowed {narrowed}");
        assert!(
            narrowed.is_within(granted),
            "not within granted: {}",
            show()
        );
        assert!(
            narrowed.is_within(requested),
            "not within requested: {}",
            show()
        );
        for channel in probes(&[granted, requested, &narrowed]) {
            let ops = narrowed.ops_for_channel(&channel);
            for side in [granted, requested] {
                let theirs = side.ops_for_channel(&channel);
                // With `*` on one side only, the intersection is not `*`.
                assert_eq!(
                    ops.intersect(theirs),
                    ops,
                    "{channel:?} is widened: {}",
                    show()
                );
            }
        }
        if !narrowed.is_empty() {
            canonical_form_round_trips(&narrowed);
        }
    }

    /// `covers` agrees with `matches`: a channel matched by a covered
    /// pattern is matched by the covering one. `is_within` and
    /// `narrowed_by` reason with `covers`; the broker decides with `matches`.
    pub(crate) fn covers_agrees_with_matches(caps: &[&Capability]) {
        let patterns = probed_patterns(caps);
        let fillers = fillers(&patterns);
        for wide in &patterns {
            for narrow in &patterns {
                if !wide.covers(narrow) {
                    continue;
                }
                for channel in channels_of(narrow, &fillers) {
                    assert!(
                        narrow.matches(&channel),
                        "{narrow} does not match its own probe {channel:?}"
                    );
                    assert!(
                        wide.matches(&channel),
                        "{wide} covers {narrow} but does not match {channel:?}"
                    );
                }
            }
        }
    }

    /// The patterns the laws probe, bounded so a large input stays fast.
    fn probed_patterns<'c>(caps: &[&'c Capability]) -> Vec<&'c ChannelPattern> {
        caps.iter()
            .flat_map(|c| c.iter().map(|(p, _)| p))
            .take(MAX_PROBED_PATTERNS)
            .collect()
    }

    /// Concrete channels to test the capabilities on: each pattern with its
    /// wildcards filled in.
    fn probes(caps: &[&Capability]) -> Vec<String> {
        let patterns = probed_patterns(caps);
        let fillers = fillers(&patterns);
        patterns
            .iter()
            .flat_map(|p| channels_of(p, &fillers))
            .collect()
    }

    /// What a wildcard is replaced with: a name no pattern can contain (a
    /// control character), and the first few literals the patterns use, so
    /// probes also land where patterns overlap.
    fn fillers(patterns: &[&ChannelPattern]) -> Vec<String> {
        let mut fillers = vec!["\u{1}".to_string()];
        for pattern in patterns {
            for seg in &pattern.segments {
                if let Segment::Literal(lit) = seg {
                    if fillers.len() < 5 && !fillers.contains(lit) {
                        fillers.push(lit.clone());
                    }
                }
            }
        }
        fillers
    }

    /// Channels the pattern matches, one per filler, plus one where a tail
    /// wildcard spans two segments.
    fn channels_of(pattern: &ChannelPattern, fillers: &[String]) -> Vec<String> {
        let prefix = match pattern.qualifier.as_deref() {
            // `[*]*` matches everything, qualified or not.
            Some("*") => {
                return fillers
                    .iter()
                    .flat_map(|f| [f.clone(), format!("[meta]{f}"), format!("[queue]{f}")])
                    .collect()
            }
            Some(q) => format!("[{q}]"),
            None => String::new(),
        };
        let mut out = Vec::new();
        for filler in fillers {
            let segs: Vec<&str> = pattern
                .segments
                .iter()
                .map(|seg| match seg {
                    Segment::Literal(lit) => lit.as_str(),
                    Segment::One | Segment::Tail => filler.as_str(),
                })
                .collect();
            let channel = format!("{prefix}{}", segs.join(":"));
            if pattern.segments.last() == Some(&Segment::Tail) {
                out.push(format!("{channel}:{filler}"));
            }
            out.push(channel);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }

    #[test]
    fn canonical_json_sorts_resources_and_operations() {
        let cap = Capability::parse_json(
            r#"{"orders:user-1:*":["subscribe","presence","history"],"announcements":["subscribe"]}"#,
        )
        .unwrap();
        assert_eq!(
            cap.to_canonical_json(),
            r#"{"announcements":["subscribe"],"orders:user-1:*":["history","presence","subscribe"]}"#
        );
    }

    #[test]
    fn canonical_json_writes_star_alone() {
        let cap = Capability::parse_json(r#"{ "*" : [ "*" ] }"#).unwrap();
        assert_eq!(cap.to_canonical_json(), r#"{"*":["*"]}"#);
    }

    #[test]
    fn keys_sort_by_utf16_code_units_like_javascript() {
        // U+FF01 sorts after U+1F600 in UTF-8 byte order but before it in UTF-16.
        let mut cap = Capability::new();
        cap.grant(p("\u{1F600}"), OpSet::of(&[Operation::Subscribe]));
        cap.grant(p("\u{FF01}"), OpSet::of(&[Operation::Subscribe]));
        assert_eq!(
            cap.to_canonical_json(),
            "{\"\u{1F600}\":[\"subscribe\"],\"\u{FF01}\":[\"subscribe\"]}"
        );
    }

    #[test]
    fn operations_follow_ablys_rules() {
        assert_eq!(
            OpSet::parse(&["publish", "*"]),
            Err(CapabilityError::WildcardMixed)
        );
        assert_eq!(
            OpSet::parse::<&str>(&[]),
            Err(CapabilityError::EmptyOperations)
        );
        assert_eq!(
            OpSet::parse(&["publsh"]),
            Err(CapabilityError::UnknownOperation("publsh".into()))
        );
        let all: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(OpSet::parse(&all).unwrap().names().len(), 17);
    }

    #[test]
    fn patterns_reject_what_authors_never_mean() {
        for bad in [
            "",
            "orders:**",
            "a:",
            "a::",
            ":a",
            "::$space",
            "[meta]",
            "[meta]:a",
            "board::$sp*ce",
            "a b",
            "a,b",
            "[foo]x",
            "[*]x",
            "a[b]",
            "o*",
        ] {
            assert!(ChannelPattern::parse(bad).is_err(), "{bad:?} should fail");
        }
        for good in [
            "*",
            "orders:*",
            "foo:*:baz",
            "[meta]*",
            "[queue]q",
            "[*]*",
            "a",
            "board::$space",
            "board::*",
            "a:::b",
            "board:*::$cursors",
            "[meta]x::y",
        ] {
            assert!(ChannelPattern::parse(good).is_ok(), "{good:?} should parse");
        }
    }

    #[test]
    fn a_double_colon_is_an_empty_segment() {
        // The Spaces SDK's channels for a space named "board".
        let space = "board::$space";
        let cursors = "board::$cursors";
        assert!(p("board::$space").matches(space));
        assert!(!p("board::$space").matches(cursors));
        assert!(!p("board::$space").matches("board:$space"));
        assert!(!p("board::$space").matches("board"));
        for wide in ["board::*", "board:*", "*", "board:*:$space", "[*]*"] {
            assert!(p(wide).matches(space), "{wide} should match {space}");
        }
        assert!(p("board::*").matches(cursors));
        assert!(!p("board:*:$space").matches(cursors));
        // `board::*` is the space named "board", not the namespace.
        assert!(!p("board::*").matches("board:other"));
        assert!(!p("board::*").matches("boards::$space"));
        assert!(p("board:*").matches("board:other::$space"));
        assert!(!p("other::*").matches(space));

        assert!(p("board:*").covers(&p("board::*")));
        assert!(p("board::*").covers(&p("board::$space")));
        assert!(p("board:*:$space").covers(&p("board::$space")));
        assert!(!p("board::*").covers(&p("board:*")));
        assert!(!p("board::$space").covers(&p("board::*")));
    }

    #[test]
    fn double_colon_names_narrow_and_round_trip() {
        let granted = Capability::parse_json(
            r#"{"board:*":["subscribe","presence"],"board::$cursors":["publish"]}"#,
        )
        .unwrap();
        let asked = Capability::parse_json(
            r#"{"board::$space":["presence","publish"],"board::*":["publish","subscribe"]}"#,
        )
        .unwrap();
        let narrowed = asked.narrowed_by(&granted);
        assert_eq!(
            narrowed.to_canonical_json(),
            r#"{"board::$cursors":["publish"],"board::$space":["presence"],"board::*":["subscribe"]}"#
        );
        laws::canonical_form_round_trips(&narrowed);
        assert!(narrowed.allows("board::$cursors", Operation::Publish));
        assert!(!narrowed.allows("board::$space", Operation::Publish));
    }

    #[test]
    fn matching_follows_ablys_segment_rules() {
        assert!(p("*").matches("anything"));
        assert!(p("*").matches("a:b:c"));
        assert!(!p("*").matches("[meta]log"));
        assert!(p("[*]*").matches("[meta]log"));
        assert!(p("ns:*").matches("ns:a"));
        assert!(p("ns:*").matches("ns:a:b"));
        assert!(!p("ns:*").matches("ns"));
        assert!(!p("ns:*").matches("nsx:a"));
        assert!(p("foo:*:baz").matches("foo:bar:baz"));
        assert!(!p("foo:*:baz").matches("foo:bar:qux:baz"));
        assert!(!p("foo:*:baz").matches("foo:baz"));
        assert!(p("exact").matches("exact"));
        assert!(!p("exact").matches("exact:more"));
        assert!(p("[meta]*").matches("[meta]log"));
        assert!(!p("[meta]*").matches("log"));
    }

    #[test]
    fn covers_is_pattern_inclusion() {
        assert!(p("*").covers(&p("orders:1:*")));
        assert!(p("orders:*").covers(&p("orders:1:*")));
        assert!(p("orders:*").covers(&p("orders:1")));
        assert!(!p("orders:1:*").covers(&p("orders:*")));
        assert!(p("a:*:c").covers(&p("a:b:c")));
        assert!(!p("a:*:c").covers(&p("a:*")));
        assert!(!p("a:b:c").covers(&p("a:*:c")));
        assert!(!p("*").covers(&p("[meta]*")));
        assert!(p("[*]*").covers(&p("[meta]*")));
        assert!(!p("a:*:c").covers(&p("a:b:*")));
        assert!(!p("a:b:*").covers(&p("a:*:c")));
    }

    #[test]
    fn requested_capability_only_narrows() {
        let granted = Capability::parse_json(
            r#"{"orders:*":["subscribe","publish"],"announcements":["subscribe"]}"#,
        )
        .unwrap();
        let asked = Capability::parse_json(
            r#"{"orders:42":["publish","presence"],"*":["subscribe"],"secret":["*"]}"#,
        )
        .unwrap();
        let narrowed = asked.narrowed_by(&granted);
        assert_eq!(
            narrowed.to_canonical_json(),
            r#"{"announcements":["subscribe"],"orders:*":["subscribe"],"orders:42":["publish"]}"#
        );
        assert!(narrowed.is_within(&granted));
    }

    #[test]
    fn star_operations_intersect_to_the_other_side() {
        let granted = Capability::parse_json(r#"{"chat:*":["publish","subscribe"]}"#).unwrap();
        let asked = Capability::parse_json(r#"{"chat:1":["*"]}"#).unwrap();
        assert_eq!(
            asked.narrowed_by(&granted).to_canonical_json(),
            r#"{"chat:1":["publish","subscribe"]}"#
        );
    }

    #[test]
    fn disjoint_request_narrows_to_nothing() {
        let granted = Capability::parse_json(r#"{"chat:*":["subscribe"]}"#).unwrap();
        let asked = Capability::parse_json(r#"{"admin":["subscribe"]}"#).unwrap();
        assert!(asked.narrowed_by(&granted).is_empty());
    }

    #[test]
    fn ops_for_channel_unions_every_matching_pattern() {
        let cap = Capability::parse_json(
            r#"{"orders:*":["subscribe"],"orders:1:*":["publish"],"*":["presence"]}"#,
        )
        .unwrap();
        let ops = cap.ops_for_channel("orders:1:status");
        assert!(ops.allows(Operation::Subscribe));
        assert!(ops.allows(Operation::Publish));
        assert!(ops.allows(Operation::Presence));
        assert!(!ops.allows(Operation::History));
        assert!(!cap.allows("orders:2:status", Operation::Publish));
    }

    #[test]
    fn malformed_capability_json_is_refused() {
        assert!(matches!(
            Capability::parse_json("[]"),
            Err(CapabilityError::Malformed(_))
        ));
        assert!(matches!(
            Capability::parse_json(r#"{"a":"subscribe"}"#),
            Err(CapabilityError::Malformed(_))
        ));
        assert!(matches!(
            Capability::parse_json(r#"{"a":[1]}"#),
            Err(CapabilityError::Malformed(_))
        ));
        assert_eq!(Capability::parse_json("{}"), Err(CapabilityError::Empty));
    }
}

/// The capability laws over generated capabilities. Resource names come from a
/// small alphabet so patterns often overlap, cover or equal one another, where
/// narrowing has work to do.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => Just("*".to_string()),
            3 => prop::sample::select(vec!["a", "b", "orders", "user-1", "é", "$space"]).prop_map(String::from),
            // `::`, as in the Spaces SDK's `board::$space`.
            1 => Just(String::new()),
        ]
    }

    fn pattern() -> impl Strategy<Value = ChannelPattern> {
        let ordinary = (
            prop::sample::select(vec!["", "", "", "[meta]", "[queue]"]),
            prop::collection::vec(segment(), 1..5).prop_filter(
                "an empty segment is only allowed inside",
                |segments| {
                    !segments.first().is_some_and(String::is_empty)
                        && !segments.last().is_some_and(String::is_empty)
                },
            ),
        )
            .prop_map(|(qualifier, segments)| format!("{qualifier}{}", segments.join(":")));
        prop_oneof![9 => ordinary, 1 => Just("[*]*".to_string())]
            .prop_map(|raw| ChannelPattern::parse(&raw).expect("generated patterns are valid"))
    }

    fn ops() -> impl Strategy<Value = OpSet> {
        prop_oneof![
            1 => Just(OpSet::STAR),
            // A few operations, so overlaps between sides are common.
            5 => prop::collection::vec(prop::sample::select(Operation::ALL[..6].to_vec()), 1..4)
                .prop_map(|ops| OpSet::of(&ops)),
            1 => prop::collection::vec(prop::sample::select(Operation::ALL), 1..17)
                .prop_map(|ops| OpSet::of(&ops)),
        ]
    }

    fn capability() -> impl Strategy<Value = Capability> {
        prop::collection::vec((pattern(), ops()), 1..6).prop_map(|grants| {
            let mut cap = Capability::new();
            for (pattern, ops) in grants {
                cap.grant(pattern, ops);
            }
            cap
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn narrowing_never_widens(granted in capability(), requested in capability()) {
            laws::narrowing_never_widens(&granted, &requested);
        }

        #[test]
        fn narrowing_by_itself_changes_nothing(cap in capability()) {
            prop_assert_eq!(cap.narrowed_by(&cap), cap);
        }

        #[test]
        fn canonical_form_round_trips(cap in capability()) {
            laws::canonical_form_round_trips(&cap);
        }

        #[test]
        fn covers_agrees_with_matches(a in capability(), b in capability()) {
            laws::covers_agrees_with_matches(&[&a, &b]);
        }
    }
}
