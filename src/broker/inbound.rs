//! What clients send, parsed once at the edge: the WebSocket URL's query
//! (RTN2) and each protocol message (TR2 actions, TR4 fields), much as
//! mini-redis's `Command::from_frame` turns a frame into a command. The
//! connection code trusts these types; a frame that cannot be one is a
//! `FrameError`, which the connection reports as an ERROR and then closes.

use serde_json::Value;

use super::protocol::{self, action, AblyError, DecodeError, Format};

/// One protocol message from a client, by action (TR2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Inbound {
    /// Echoed back, with the client's `id` when it sent one (RTN13, RTN23).
    Heartbeat {
        id: Option<Value>,
    },
    Close,
    Disconnect,
    Attach {
        channel: Option<String>,
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
            action::ATTACH => Inbound::Attach { channel },
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
            other => Inbound::Other(other),
        })
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
    /// The connection key of `resume=` or `recover=`.
    pub(crate) resume: Option<String>,
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
            resume: query.resume.or(query.recover).filter(|k| !k.is_empty()),
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
            Ok(Inbound::Attach { channel: None })
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
                resume: Some("k-1".into()),
            }
        );
        assert!(matches!(presented, Presented::Token(t) if t == "t"));
        let (params, presented) = ConnectParams::from_query("key=a.b:c&clientId=&key=again");
        assert_eq!(params.format, Format::Json);
        assert!(params.echo);
        assert!(matches!(presented, Presented::Nothing));
        let (_, presented) = ConnectParams::from_query("key=a.b:c&access_token=");
        assert!(matches!(presented, Presented::Token(t) if t.is_empty()));
    }
}
