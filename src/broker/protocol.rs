//! Ably's realtime protocol as the `ably` npm client 2.x speaks it: actions
//! (TR2), flags (TR3), error objects (TI1), and frames in JSON
//! (text) or msgpack (binary). Messages are kept as JSON values inside the
//! broker; binary `data` from msgpack clients is carried as base64 with
//! `base64` appended to its encoding, which every client decodes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

pub(crate) mod action {
    pub(crate) const HEARTBEAT: u64 = 0;
    pub(crate) const ACK: u64 = 1;
    pub(crate) const NACK: u64 = 2;
    #[allow(dead_code)] // the table follows ably-js's protocolmessage.ts; no client sends it here
    pub(crate) const CONNECT: u64 = 3;
    pub(crate) const CONNECTED: u64 = 4;
    pub(crate) const DISCONNECT: u64 = 5;
    pub(crate) const DISCONNECTED: u64 = 6;
    pub(crate) const CLOSE: u64 = 7;
    pub(crate) const CLOSED: u64 = 8;
    pub(crate) const ERROR: u64 = 9;
    pub(crate) const ATTACH: u64 = 10;
    pub(crate) const ATTACHED: u64 = 11;
    pub(crate) const DETACH: u64 = 12;
    pub(crate) const DETACHED: u64 = 13;
    pub(crate) const PRESENCE: u64 = 14;
    pub(crate) const MESSAGE: u64 = 15;
    pub(crate) const SYNC: u64 = 16;
    pub(crate) const AUTH: u64 = 17;
}

pub(crate) mod flag {
    pub(crate) const HAS_PRESENCE: u64 = 1 << 0;
    pub(crate) const HAS_BACKLOG: u64 = 1 << 1;
    pub(crate) const RESUMED: u64 = 1 << 2;
    pub(crate) const ATTACH_RESUME: u64 = 1 << 5;
    pub(crate) const PRESENCE: u64 = 1 << 16;
    pub(crate) const PUBLISH: u64 = 1 << 17;
    pub(crate) const SUBSCRIBE: u64 = 1 << 18;
    pub(crate) const PRESENCE_SUBSCRIBE: u64 = 1 << 19;
    pub(crate) const ANNOTATION_PUBLISH: u64 = 1 << 21;
    pub(crate) const ANNOTATION_SUBSCRIBE: u64 = 1 << 22;
    pub(crate) const OBJECT_SUBSCRIBE: u64 = 1 << 24;
    pub(crate) const OBJECT_PUBLISH: u64 = 1 << 25;
}

pub(crate) mod presence_action {
    #[allow(dead_code)] // the table follows ably-js's presencemessage.ts; never sent here
    pub(crate) const ABSENT: u64 = 0;
    pub(crate) const PRESENT: u64 = 1;
    pub(crate) const ENTER: u64 = 2;
    pub(crate) const LEAVE: u64 = 3;
    pub(crate) const UPDATE: u64 = 4;
}

/// An Ably error: what clients see as `ErrorInfo`. ably-js drops a whole
/// frame whose `error` lacks any of `message`, `code`, `statusCode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub(crate) struct AblyError {
    pub(crate) code: u32,
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl AblyError {
    pub(crate) fn new(code: u32, status: u16, message: impl Into<String>) -> AblyError {
        AblyError {
            code,
            status,
            message: message.into(),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        json!({"message": self.message, "code": self.code, "statusCode": self.status})
    }

    /// 40140–40149: the client renews its token and tries again.
    pub(crate) fn is_token_error(&self) -> bool {
        (40140..40150).contains(&self.code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    MsgPack,
}

/// An encoded frame, ready for the socket.
#[derive(Debug, Clone)]
pub(crate) enum Encoded {
    Text(String),
    Binary(Vec<u8>),
}

/// A frame delivered to many connections: encoded at most once per format.
#[derive(Debug)]
pub(crate) struct SharedFrame {
    value: Value,
    json: std::sync::OnceLock<String>,
    msgpack: std::sync::OnceLock<Vec<u8>>,
}

impl SharedFrame {
    pub(crate) fn new(value: Value) -> SharedFrame {
        SharedFrame {
            value,
            json: std::sync::OnceLock::new(),
            msgpack: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn encoded(&self, format: Format) -> Encoded {
        match format {
            Format::Json => Encoded::Text(self.json.get_or_init(|| self.value.to_string()).clone()),
            Format::MsgPack => Encoded::Binary(
                self.msgpack
                    .get_or_init(|| {
                        rmp_serde::to_vec_named(&self.value)
                            .expect("a JSON value always encodes as msgpack")
                    })
                    .clone(),
            ),
        }
    }
}

impl std::ops::Deref for SharedFrame {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

pub(crate) fn encode(value: &Value, format: Format) -> Encoded {
    match format {
        Format::Json => Encoded::Text(value.to_string()),
        Format::MsgPack => Encoded::Binary(
            rmp_serde::to_vec_named(value).expect("a JSON value always encodes as msgpack"),
        ),
    }
}

pub(crate) fn encode_bytes(value: &Value, format: Format) -> Vec<u8> {
    match encode(value, format) {
        Encoded::Text(t) => t.into_bytes(),
        Encoded::Binary(b) => b,
    }
}

/// Deepest msgpack nesting accepted (serde_json stops JSON at 128).
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("the frame is not valid {0}")]
    Syntax(&'static str),
}

/// Decodes one protocol message (or a REST body) in either format.
pub(crate) fn decode(bytes: &[u8], format: Format) -> Result<Value, DecodeError> {
    let value = match format {
        Format::Json => serde_json::from_slice(bytes).map_err(|_| DecodeError::Syntax("JSON"))?,
        Format::MsgPack => {
            let mut reader = bytes;
            // Protocol messages nest a few levels; the bound keeps a hostile
            // frame from recursing deep in the decoder and the converter.
            let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH)
                .map_err(|_| DecodeError::Syntax("msgpack"))?;
            if !reader.is_empty() {
                return Err(DecodeError::Syntax("msgpack"));
            }
            msgpack_to_json(value).ok_or(DecodeError::Syntax("msgpack"))?
        }
    };
    Ok(value)
}

fn msgpack_to_json(value: rmpv::Value) -> Option<Value> {
    use rmpv::Value as M;
    Some(match value {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => {
            if let Some(u) = i.as_u64() {
                json!(u)
            } else {
                json!(i.as_i64()?)
            }
        }
        M::F32(f) => json!(f),
        M::F64(f) => json!(f),
        M::String(s) => Value::String(s.into_str()?),
        M::Binary(b) => Value::String(STANDARD.encode(b)),
        M::Array(items) => Value::Array(
            items
                .into_iter()
                .map(msgpack_to_json)
                .collect::<Option<_>>()?,
        ),
        M::Map(entries) => {
            let mut map = Map::new();
            let mut binary_data = false;
            for (k, v) in entries {
                let key = match k {
                    M::String(s) => s.into_str()?,
                    _ => return None,
                };
                if key == "data" && matches!(v, M::Binary(_)) {
                    binary_data = true;
                }
                map.insert(key, msgpack_to_json(v)?);
            }
            if binary_data {
                // Binary data now travels as base64; say so in its encoding.
                let encoding = match map.get("encoding").and_then(Value::as_str) {
                    Some(e) if !e.is_empty() => format!("{e}/base64"),
                    _ => "base64".to_string(),
                };
                map.insert("encoding".into(), Value::String(encoding));
            }
            Value::Object(map)
        }
        M::Ext(_, _) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_frames_are_maps_with_named_fields() {
        let frame = json!({"action": action::ACK, "msgSerial": 3, "count": 1});
        let Encoded::Binary(bytes) = encode(&frame, Format::MsgPack) else {
            panic!("msgpack is binary")
        };
        // fixmap of 3 entries, first key "action".
        assert_eq!(bytes[0], 0x83);
        assert_eq!(decode(&bytes, Format::MsgPack).unwrap(), frame);
    }

    #[test]
    fn binary_data_becomes_base64_with_its_encoding() {
        let value = rmpv::Value::Map(vec![
            ("name".into(), "n".into()),
            ("data".into(), rmpv::Value::Binary(vec![1, 2, 3])),
            ("encoding".into(), "cipher".into()),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).unwrap();
        let decoded = decode(&bytes, Format::MsgPack).unwrap();
        assert_eq!(
            decoded,
            json!({"name": "n", "data": "AQID", "encoding": "cipher/base64"})
        );
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(
            decode(b"{nope", Format::Json),
            Err(DecodeError::Syntax("JSON"))
        );
        assert_eq!(
            // An array of two with one element: truncated.
            decode(&[0x92, 0x01], Format::MsgPack),
            Err(DecodeError::Syntax("msgpack"))
        );
        assert_eq!(
            decode(&[0x01, 0x02], Format::MsgPack),
            Err(DecodeError::Syntax("msgpack"))
        );
        // 100 nested arrays: deeper than any protocol message.
        let mut deep = vec![0x91u8; 100];
        deep.push(0x01);
        assert_eq!(
            decode(&deep, Format::MsgPack),
            Err(DecodeError::Syntax("msgpack"))
        );
    }
}
