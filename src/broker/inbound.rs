//! What clients send, parsed once at the edge: the WebSocket URL's query
//! (RTN2) and each protocol message (TR2 actions, TR4 fields), much as
//! mini-redis's `Command::from_frame` turns a frame into a command. The
//! connection code trusts these types; a frame that cannot be one is a
//! `FrameError`, which the connection reports as an ERROR and then closes.

use serde_json::Value;

use super::protocol::{self, action, flag, AblyError, DecodeError, Format};

/// One protocol message from a client, by action (TR2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Inbound {
    /// Echoed back, with the client's `id` when it sent one (RTN13, RTN23).
    Heartbeat {
        id: Option<Value>,
    },
    Close,
    Disconnect,
    /// An attach (RTL4), with the channel params (RTL4k) and modes
    /// (RTL4l) it asked for, or why they are not acceptable.
    Attach {
        channel: Option<String>,
        options: Result<AttachOptions, AttachError>,
    },
    Detach {
        channel: Option<String>,
    },
    /// A publish (RTL6): `messages` is empty when the frame had none.
    Message {
        serial: u64,
        channel: Option<String>,
        messages: Vec<Value>,
    },
    /// Presence changes (RTP8, RTP9, RTP10): `presence` is empty when the
    /// frame had none.
    Presence {
        serial: u64,
        channel: Option<String>,
        presence: Vec<Value>,
    },
    /// A request for the channel's members, answered with one SYNC (RTP18).
    Sync {
        channel: Option<String>,
    },
    /// In-band re-authentication with a new token (RTC8a); empty when the
    /// frame had none, which then fails to authenticate.
    Auth {
        access_token: String,
    },
    /// An action a client has no reason to send (CONNECTED, ACK, …): ignored.
    Other(u64),
    /// An action the broker does not implement that expects an ACK (it
    /// carries a `msgSerial`): OBJECT (19, LiveObjects), ANNOTATION (21).
    /// Answered with a NACK, so the client's call fails instead of waiting.
    Unsupported {
        action: u64,
        serial: u64,
    },
}

/// Why a frame is not a protocol message. Each is fatal to the connection.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("malformed protocol message: {0}")]
    Decode(#[from] DecodeError),
    #[error("malformed protocol message: no numeric action")]
    NoAction,
    /// Without a serial nothing can be acknowledged: the client would wait forever.
    #[error("MESSAGE and PRESENCE need a numeric msgSerial")]
    NoSerial,
}

impl From<FrameError> for AblyError {
    fn from(error: FrameError) -> AblyError {
        AblyError::new(40000, 400, error.to_string())
    }
}

impl Inbound {
    /// Decodes a WebSocket frame (text: JSON, binary: msgpack) and parses it.
    pub(crate) fn parse(bytes: &[u8], format: Format) -> Result<Inbound, FrameError> {
        Inbound::from_frame(protocol::decode(bytes, format)?)
    }

    pub(crate) fn from_frame(frame: Value) -> Result<Inbound, FrameError> {
        let Value::Object(mut fields) = frame else {
            return Err(FrameError::NoAction);
        };
        let act = fields
            .get("action")
            .and_then(Value::as_u64)
            .ok_or(FrameError::NoAction)?;
        let channel = match fields.remove("channel") {
            Some(Value::String(channel)) => Some(channel),
            _ => None,
        };
        let serial = fields.get("msgSerial").and_then(Value::as_u64);
        let mut list = |name: &str| match fields.remove(name) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Ok(match act {
            action::HEARTBEAT => Inbound::Heartbeat {
                id: fields.remove("id"),
            },
            action::CLOSE => Inbound::Close,
            action::DISCONNECT => Inbound::Disconnect,
            action::ATTACH => Inbound::Attach {
                channel,
                options: AttachOptions::from_fields(
                    fields.get("params"),
                    fields.get("flags").and_then(Value::as_u64).unwrap_or(0),
                    fields.get("channelSerial").and_then(Value::as_str),
                ),
            },
            action::DETACH => Inbound::Detach { channel },
            action::MESSAGE => Inbound::Message {
                serial: serial.ok_or(FrameError::NoSerial)?,
                channel,
                messages: list("messages"),
            },
            action::PRESENCE => Inbound::Presence {
                serial: serial.ok_or(FrameError::NoSerial)?,
                channel,
                presence: list("presence"),
            },
            action::SYNC => Inbound::Sync { channel },
            action::AUTH => Inbound::Auth {
                access_token: fields
                    .get("auth")
                    .and_then(|a| a.get("accessToken"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            },
            other => match serial {
                Some(serial) => Inbound::Unsupported {
                    action: other,
                    serial,
                },
                None => Inbound::Other(other),
            },
        })
    }
}

/// The most messages a rewind delivers, as on Ably ("a fairly low rewind
/// limit (50 or 100)": https://github.com/ably/docs/pull/729).
pub(crate) const MAX_REWIND: u32 = 100;

/// A `rewind` channel param (https://ably.com/docs/channels/options/rewind):
/// the last `Count` messages, or those of the last `Within` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rewind {
    Count(u32),
    WithinMs(u64),
}

/// What an ATTACH asks for beyond the channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct AttachOptions {
    /// With the value as sent, echoed in ATTACHED's `params` (RTL4k1).
    pub(crate) rewind: Option<(Rewind, String)>,
    /// The requested modes (TR3q–TR3x), when the client asked for any
    /// (RTL4l), or a `modes` param named them, which takes precedence
    /// over the flags as on Ably; `None` means the default modes the
    /// capability allows.
    pub(crate) modes: Option<u64>,
    /// A `modes` param as sent, echoed in ATTACHED's `params` (RTL4k1).
    pub(crate) modes_param: Option<String>,
    /// `delta: "vcdiff"`: messages are sent as VCDIFF deltas (RTL18),
    /// and the param echoed. Any other `delta` value is not recognised.
    pub(crate) delta: bool,
    /// A reattach that resumes (a `channelSerial`, RTL4c1, or the older
    /// ATTACH_RESUME flag, TR3f): rewind does not apply to it ("Rewind only
    /// has an effect on an initial channel attachment").
    pub(crate) resume: bool,
    /// The channelSerial the client last saw (RTL4c1, RTL15b): where a
    /// resume continues from. At most `MAX_SERIAL` bytes; a longer one is
    /// kept out, so the resume is not honoured.
    pub(crate) channel_serial: Option<String>,
}

/// The longest channelSerial an ATTACH may carry and have it honoured.
const MAX_SERIAL: usize = 64;

/// Why an ATTACH's params cannot be honoured: the attach fails with a
/// channel ERROR, as Ably fails an attach whose rewind "cannot be parsed
/// either as a number or a time specifier"
/// (https://ably.com/docs/channels/options/rewind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AttachError {
    #[error("ATTACH params must be an object of strings (RTL4k)")]
    Params,
    #[error("invalid rewind {0:?}: use a number of messages (\"10\") or a time such as \"30s\" or \"2m\"")]
    Rewind(String),
    #[error("invalid modes {0:?}: use channel modes separated by commas, such as \"publish,subscribe\" (any of presence, publish, subscribe, presence_subscribe, annotation_publish, annotation_subscribe, object_subscribe, object_publish)")]
    Modes(String),
}

impl From<AttachError> for AblyError {
    fn from(error: AttachError) -> AblyError {
        AblyError::new(40000, 400, error.to_string())
    }
}

impl Rewind {
    /// `N` messages, or `Ns`/`Nm`/`Nh` of time; at most 9 digits.
    fn parse(text: &str) -> Option<Rewind> {
        let (digits, unit_ms) = match text.as_bytes().last()? {
            b's' => (&text[..text.len() - 1], Some(1_000)),
            b'm' => (&text[..text.len() - 1], Some(60_000)),
            b'h' => (&text[..text.len() - 1], Some(3_600_000)),
            _ => (text, None),
        };
        if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        Some(match unit_ms {
            Some(unit) => Rewind::WithinMs(n * unit),
            None => Rewind::Count(u32::try_from(n).ok()?),
        })
    }
}

impl AttachOptions {
    /// The modes a client can ask for, by name (TB2d, TR3q–TR3x).
    const MODE_NAMES: [(&'static str, u64); 8] = [
        ("presence", flag::PRESENCE),
        ("publish", flag::PUBLISH),
        ("subscribe", flag::SUBSCRIBE),
        ("presence_subscribe", flag::PRESENCE_SUBSCRIBE),
        ("annotation_publish", flag::ANNOTATION_PUBLISH),
        ("annotation_subscribe", flag::ANNOTATION_SUBSCRIBE),
        ("object_subscribe", flag::OBJECT_SUBSCRIBE),
        ("object_publish", flag::OBJECT_PUBLISH),
    ];

    /// Every mode a client can ask for.
    pub(crate) const MODES: u64 = flag::PRESENCE
        | flag::PUBLISH
        | flag::SUBSCRIBE
        | flag::PRESENCE_SUBSCRIBE
        | flag::ANNOTATION_PUBLISH
        | flag::ANNOTATION_SUBSCRIBE
        | flag::OBJECT_SUBSCRIBE
        | flag::OBJECT_PUBLISH;

    /// The modes of an attach that asked for none, as Ably grants them to
    /// a capability that allows everything: ably-js's suite expects
    /// `presence,publish,subscribe,presence_subscribe,annotation_publish`
    /// (test/realtime/channel.test.js, attachWithInvalidChannelParams).
    pub(crate) const DEFAULT_MODES: u64 = flag::PRESENCE
        | flag::PUBLISH
        | flag::SUBSCRIBE
        | flag::PRESENCE_SUBSCRIBE
        | flag::ANNOTATION_PUBLISH;

    /// A `modes` param: mode names separated by commas, in any case.
    fn parse_modes(text: &str) -> Option<u64> {
        if text.len() > 256 {
            return None;
        }
        text.split(',').try_fold(0, |modes, name| {
            let name = name.trim().to_ascii_lowercase();
            AttachOptions::MODE_NAMES
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, bit)| modes | bit)
        })
    }

    /// Reads `params` and `flags` of an ATTACH. Params other than `rewind`,
    /// `modes` and `delta: "vcdiff"` are ignored: ATTACHED echoes only "the
    /// subset of those params that the server has recognised and
    /// validated" (RTL4k1).
    fn from_fields(
        params: Option<&Value>,
        flags: u64,
        serial: Option<&str>,
    ) -> Result<AttachOptions, AttachError> {
        let modes = flags & AttachOptions::MODES;
        let serial = serial.filter(|s| !s.is_empty());
        let mut options = AttachOptions {
            rewind: None,
            modes: (modes != 0).then_some(modes),
            modes_param: None,
            delta: false,
            resume: serial.is_some() || flags & flag::ATTACH_RESUME != 0,
            channel_serial: serial.filter(|s| s.len() <= MAX_SERIAL).map(str::to_string),
        };
        match params {
            None | Some(Value::Null) => {}
            Some(Value::Object(params)) => {
                if let Some(rewind) = params.get("rewind") {
                    // A number is taken as its digits: ably-js sends
                    // `params: { rewind: 1 }` as given (its suite's
                    // resume_rewind_1 does).
                    let text = match rewind {
                        Value::String(text) => text.clone(),
                        Value::Number(n) if n.is_u64() => n.to_string(),
                        _ => return Err(AttachError::Params),
                    };
                    let parsed = Rewind::parse(&text)
                        .ok_or_else(|| AttachError::Rewind(text.chars().take(32).collect()))?;
                    options.rewind = Some((parsed, text));
                }
                if let Some(modes) = params.get("modes") {
                    let text = modes.as_str().ok_or(AttachError::Params)?;
                    let parsed = AttachOptions::parse_modes(text)
                        .ok_or_else(|| AttachError::Modes(text.chars().take(64).collect()))?;
                    options.modes = Some(parsed);
                    options.modes_param = Some(text.to_string());
                }
                options.delta = params.get("delta").and_then(Value::as_str) == Some("vcdiff");
            }
            Some(_) => return Err(AttachError::Params),
        }
        Ok(options)
    }
}

/// What the client asked for in the WebSocket URL (RTN2a, RTN2b, RTN2d,
/// RTN15b resume, RTN16k recover; `heartbeats` as ably-js sends it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectParams {
    pub(crate) format: Format,
    pub(crate) echo: bool,
    pub(crate) heartbeats: bool,
    pub(crate) client_id: Option<String>,
    /// `resume=` or `recover=` with the connection key to continue.
    pub(crate) continues: Option<Continue>,
}

/// What a connect asks to continue (RTN15b, RTN16k).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Continue {
    /// The same client after a dropped transport.
    Resume(String),
    /// A new client instance with a recovery key's connection key.
    Recover(String),
}

impl Continue {
    pub(crate) fn key(&self) -> &str {
        match self {
            Continue::Resume(key) | Continue::Recover(key) => key,
        }
    }
}

/// The credential in the WebSocket URL (RTN2e). Not `Debug`: it holds a
/// token or a key secret.
pub(crate) enum Presented {
    Token(String),
    Key(String),
    Nothing,
}

/// The query as sent; every field optional, so any query parses.
#[derive(Default, serde::Deserialize)]
struct ConnectQuery {
    access_token: Option<String>,
    #[serde(rename = "accessToken")]
    access_token_camel: Option<String>,
    key: Option<String>,
    format: Option<String>,
    echo: Option<String>,
    heartbeats: Option<String>,
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    resume: Option<String>,
    recover: Option<String>,
}

impl ConnectParams {
    /// Parses a connect query. A query that does not parse at all (a field
    /// given twice, say) counts as empty: the client then fails for want of
    /// credentials, with Ably's error, rather than on the HTTP upgrade,
    /// which ably-js ignores.
    pub(crate) fn from_query(query: &str) -> (ConnectParams, Presented) {
        let query: ConnectQuery = serde_urlencoded::from_str(query).unwrap_or_default();
        let params = ConnectParams {
            format: if query.format.as_deref() == Some("msgpack") {
                Format::MsgPack
            } else {
                Format::Json
            },
            echo: query.echo.as_deref() != Some("false"),
            heartbeats: query.heartbeats.as_deref() == Some("true"),
            client_id: query.client_id.filter(|c| !c.is_empty()),
            continues: match (query.resume, query.recover) {
                (Some(key), _) if !key.is_empty() => Some(Continue::Resume(key)),
                (_, Some(key)) if !key.is_empty() => Some(Continue::Recover(key)),
                _ => None,
            },
        };
        let presented = match (query.access_token.or(query.access_token_camel), query.key) {
            (Some(token), _) => Presented::Token(token),
            (None, Some(key)) => Presented::Key(key),
            (None, None) => Presented::Nothing,
        };
        (params, presented)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_become_typed_messages() {
        assert_eq!(
            Inbound::from_frame(json!({"action": 0, "id": "h1"})),
            Ok(Inbound::Heartbeat {
                id: Some(json!("h1"))
            })
        );
        assert_eq!(
            Inbound::from_frame(json!({"action": 10, "channel": 5})),
            Ok(Inbound::Attach {
                channel: None,
                options: Ok(AttachOptions::default())
            })
        );
        assert_eq!(
            Inbound::from_frame(
                json!({"action": 15, "channel": "c", "msgSerial": 3, "messages": [{"data": 1}]})
            ),
            Ok(Inbound::Message {
                serial: 3,
                channel: Some("c".into()),
                messages: vec![json!({"data": 1})]
            })
        );
        assert_eq!(
            Inbound::from_frame(json!({"action": 14, "msgSerial": 0, "presence": "x"})),
            Ok(Inbound::Presence {
                serial: 0,
                channel: None,
                presence: Vec::new()
            })
        );
        assert_eq!(
            Inbound::from_frame(json!({"action": 17, "auth": {"accessToken": "t"}})),
            Ok(Inbound::Auth {
                access_token: "t".into()
            })
        );
        assert_eq!(
            Inbound::from_frame(json!({"action": 4})),
            Ok(Inbound::Other(4))
        );
        assert_eq!(
            Inbound::from_frame(
                json!({"action": 21, "channel": "c", "msgSerial": 3, "annotations": []})
            ),
            Ok(Inbound::Unsupported {
                action: 21,
                serial: 3
            })
        );
    }

    #[test]
    fn frames_that_are_not_protocol_messages_are_errors() {
        assert_eq!(
            Inbound::from_frame(json!({"action": "attach"})),
            Err(FrameError::NoAction)
        );
        assert_eq!(Inbound::from_frame(json!([1])), Err(FrameError::NoAction));
        assert_eq!(
            Inbound::from_frame(json!({"action": 15, "channel": "c"})),
            Err(FrameError::NoSerial)
        );
        let error = AblyError::from(Inbound::parse(b"{nope", Format::Json).unwrap_err());
        assert_eq!(
            (error.code, error.message.as_str()),
            (
                40000,
                "malformed protocol message: the frame is not valid JSON"
            )
        );
    }

    fn attach(frame: Value) -> Result<AttachOptions, AttachError> {
        match Inbound::from_frame(frame) {
            Ok(Inbound::Attach { options, .. }) => options,
            other => panic!("not an attach: {other:?}"),
        }
    }

    #[test]
    fn attach_params_and_modes_are_parsed() {
        let options = attach(json!({
            "action": 10, "channel": "c",
            "params": {"rewind": "10", "delta": "vcdiff", "occupancy": "metrics"},
            "flags": flag::PUBLISH | flag::SUBSCRIBE | flag::HAS_BACKLOG,
        }))
        .unwrap();
        assert_eq!(
            options,
            AttachOptions {
                rewind: Some((Rewind::Count(10), "10".into())),
                modes: Some(flag::PUBLISH | flag::SUBSCRIBE),
                modes_param: None,
                delta: true,
                resume: false,
                channel_serial: None,
            }
        );
        // A `modes` param wins over the flags and is kept as sent; only
        // `vcdiff` deltas are recognised.
        let options = attach(json!({
            "action": 10,
            "params": {"modes": "Presence, subscribe", "delta": "xdelta"},
            "flags": flag::PUBLISH | flag::PRESENCE_SUBSCRIBE,
        }))
        .unwrap();
        assert_eq!(options.modes, Some(flag::PRESENCE | flag::SUBSCRIBE));
        assert_eq!(options.modes_param.as_deref(), Some("Presence, subscribe"));
        assert!(!options.delta);
        assert_eq!(
            attach(json!({"action": 10, "params": {"modes": "annotation_publish,object_publish"}}))
                .unwrap()
                .modes,
            Some(flag::ANNOTATION_PUBLISH | flag::OBJECT_PUBLISH)
        );
        for bad in ["", "subscribe,", "read", "publish;subscribe"] {
            assert_eq!(
                attach(json!({"action": 10, "params": {"modes": bad}})),
                Err(AttachError::Modes(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            attach(json!({"action": 10, "params": {"modes": ["publish"]}})),
            Err(AttachError::Params)
        );
        for (text, ms) in [
            ("30s", 30_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("0s", 0),
        ] {
            let options = attach(json!({"action": 10, "params": {"rewind": text}})).unwrap();
            assert_eq!(options.rewind, Some((Rewind::WithinMs(ms), text.into())));
        }
        // A channelSerial (RTL4c1) or ATTACH_RESUME makes it a resume; the
        // serial is kept when it is not absurdly long.
        let resumed = attach(json!({"action": 10, "channelSerial": "s:1", "params": {}})).unwrap();
        assert!(resumed.resume);
        assert_eq!(resumed.channel_serial.as_deref(), Some("s:1"));
        let long = attach(json!({"action": 10, "channelSerial": "s".repeat(65)})).unwrap();
        assert!(long.resume);
        assert_eq!(long.channel_serial, None);
        assert!(
            attach(json!({"action": 10, "flags": flag::ATTACH_RESUME}))
                .unwrap()
                .resume
        );
        assert!(
            !attach(json!({"action": 10, "channelSerial": ""}))
                .unwrap()
                .resume
        );
    }

    #[test]
    fn bad_rewind_values_are_attach_errors() {
        for text in [
            "",
            "-1",
            "1.5",
            "abc",
            "10x",
            "s",
            "1m30s",
            "9999999999",
            " 1",
        ] {
            assert_eq!(
                attach(json!({"action": 10, "params": {"rewind": text}})),
                Err(AttachError::Rewind(text.into())),
                "{text:?}"
            );
        }
        assert_eq!(
            attach(json!({"action": 10, "params": {"rewind": 5}}))
                .unwrap()
                .rewind,
            Some((Rewind::Count(5), "5".into()))
        );
        for bad in [json!(-1), json!(1.5), json!(true)] {
            assert_eq!(
                attach(json!({"action": 10, "params": {"rewind": bad}})),
                Err(AttachError::Params)
            );
        }
        assert_eq!(
            attach(json!({"action": 10, "params": ["rewind"]})),
            Err(AttachError::Params)
        );
        let long = "x".repeat(1000);
        let error =
            AblyError::from(attach(json!({"action": 10, "params": {"rewind": long}})).unwrap_err());
        assert_eq!(error.code, 40000);
        assert_eq!(error.status, 400);
        assert!(error.message.len() < 200, "{}", error.message);
    }

    #[test]
    fn the_connect_query_is_parsed_once() {
        let (params, presented) = ConnectParams::from_query(
            "format=msgpack&echo=false&heartbeats=true&clientId=alice&recover=k-1&accessToken=t",
        );
        assert_eq!(
            params,
            ConnectParams {
                format: Format::MsgPack,
                echo: false,
                heartbeats: true,
                client_id: Some("alice".into()),
                continues: Some(Continue::Recover("k-1".into())),
            }
        );
        assert!(matches!(presented, Presented::Token(t) if t == "t"));
        let (params, presented) = ConnectParams::from_query("key=a.b:c&clientId=&key=again");
        assert_eq!(params.format, Format::Json);
        assert!(params.echo);
        assert!(matches!(presented, Presented::Nothing));
        // resume= wins over recover= (ably-js sends one or the other); empty is neither.
        let (params, _) = ConnectParams::from_query("resume=k-2&recover=k-3");
        assert_eq!(params.continues, Some(Continue::Resume("k-2".into())));
        let (params, _) = ConnectParams::from_query("resume=&recover=");
        assert_eq!(params.continues, None);
        let (_, presented) = ConnectParams::from_query("key=a.b:c&access_token=");
        assert!(matches!(presented, Presented::Token(t) if t.is_empty()));
    }
}
