//! Channel deltas (`params: { delta: 'vcdiff' }`,
//! https://ably.com/docs/channels/options/deltas): a subscriber that asked
//! for them is sent each message's payload as an RFC 3284 VCDIFF delta
//! against the previous message's payload on the channel, with
//! `extras.delta = {format: "vcdiff", from: <previous message id>}` (TM2i)
//! and `vcdiff` in its encoding, which ably-js decodes with the
//! @ably/vcdiff-decoder plugin (RTL18, RTL19, RTL20, PC3).
//!
//! The base a delta applies to is what ably-js keeps as the previous
//! payload (RTL19b): the data as sent, less a final `base64` transport
//! encoding. So a string is its UTF-8 bytes (the delta then says `utf-8`
//! before `vcdiff`), and binary or encrypted data its bytes. The encoder
//! aims at correctness, not small deltas: one window, COPY from the source
//! where a 4-byte block of the target is found there, ADD for the rest.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

/// The newest message a delta can start from: its id, which the next
/// delta names in `extras.delta.from` (RTL20), and its payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Base {
    id: String,
    payload: Vec<u8>,
}

impl Base {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

/// What a delta subscriber was last sent on the channel: a delta frame
/// reaches it only when that is the delta's base (RTL20: ably-js refuses a
/// delta whose `from` is not the last message it received).
#[derive(Debug, Default, Clone)]
pub(crate) struct Cursor {
    pub(crate) last: Option<String>,
}

/// A message's payload bytes (RTL19b) and its encoding without the final
/// `base64`, with `utf-8` appended for string data; `None` when it cannot
/// be a delta's base or target: no id, no data, data that is not a string,
/// or an empty payload.
fn payload(message: &Value) -> Option<(String, Vec<u8>, String)> {
    let id = message.get("id")?.as_str()?.to_string();
    let data = message.get("data")?.as_str()?;
    let encoding = message
        .get("encoding")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (bytes, encoding) = match encoding.rsplit_once('/') {
        Some((rest, "base64")) => (STANDARD.decode(data).ok()?, rest.to_string()),
        None if encoding == "base64" => (STANDARD.decode(data).ok()?, String::new()),
        _ if encoding.is_empty() => (data.as_bytes().to_vec(), "utf-8".to_string()),
        _ => (data.as_bytes().to_vec(), format!("{encoding}/utf-8")),
    };
    (!bytes.is_empty()).then_some((id, bytes, encoding))
}

/// What a MESSAGE frame becomes for delta subscribers.
pub(crate) struct Encoded {
    /// The frame with each message after a usable base sent as a delta;
    /// `None` when no message could be (then every subscriber gets the
    /// frame as published).
    pub(crate) frame: Option<Value>,
    /// The base for the channel's next message.
    pub(crate) next: Option<Base>,
}

/// Encodes the messages of `frame` as deltas, the first against `base`
/// (the channel's previous message), each later one against the message
/// before it in the frame.
pub(crate) fn encode_frame(frame: &Value, base: Option<Base>) -> Encoded {
    let Some(messages) = frame.get("messages").and_then(Value::as_array) else {
        return Encoded {
            frame: None,
            next: None,
        };
    };
    let mut previous = base;
    let mut out = Vec::with_capacity(messages.len());
    let mut any = false;
    for message in messages {
        let Some((id, bytes, encoding)) = payload(message) else {
            previous = None;
            out.push(message.clone());
            continue;
        };
        let extras_ok = matches!(message.get("extras"), None | Some(Value::Object(_)));
        match previous.take() {
            Some(from) if extras_ok => {
                let mut delta = message.clone();
                delta["data"] = json!(STANDARD.encode(vcdiff(&from.payload, &bytes)));
                delta["encoding"] = json!(if encoding.is_empty() {
                    "vcdiff/base64".to_string()
                } else {
                    format!("{encoding}/vcdiff/base64")
                });
                if delta.get("extras").is_none() {
                    delta["extras"] = json!({});
                }
                delta["extras"]["delta"] = json!({"format": "vcdiff", "from": from.id});
                out.push(delta);
                any = true;
            }
            _ => out.push(message.clone()),
        }
        previous = Some(Base { id, payload: bytes });
    }
    let frame = any.then(|| {
        let mut frame = frame.clone();
        frame["messages"] = Value::Array(out);
        frame
    });
    Encoded {
        frame,
        next: previous,
    }
}

/// The shortest match worth a COPY.
const BLOCK: usize = 4;

/// An RFC 3284 delta that turns `source` into `target`: the header
/// (section 4.1, no secondary compressor, no custom code table), then one
/// window (4.2) whose source segment is all of `source`. Instructions use
/// the default code table (5.6) in its explicit-size forms only: ADD
/// (instruction 1) and COPY in mode VCD_SELF (instruction 19), whose
/// address is a plain integer into the source (5.3).
pub(crate) fn vcdiff(source: &[u8], target: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut instructions = Vec::new();
    let mut addresses = Vec::new();
    let mut blocks: HashMap<&[u8], usize> = HashMap::new();
    if source.len() >= BLOCK {
        for at in (0..=source.len() - BLOCK).rev() {
            blocks.insert(&source[at..at + BLOCK], at);
        }
    }
    let mut pending = 0; // where the bytes not yet covered start
    let mut at = 0;
    while at + BLOCK <= target.len() {
        let Some(&from) = blocks.get(&target[at..at + BLOCK]) else {
            at += 1;
            continue;
        };
        let len = source[from..]
            .iter()
            .zip(&target[at..])
            .take_while(|(a, b)| a == b)
            .count();
        if pending < at {
            add(&mut instructions, &mut data, &target[pending..at]);
        }
        instructions.push(19);
        integer(&mut instructions, len);
        integer(&mut addresses, from);
        at += len;
        pending = at;
    }
    if pending < target.len() {
        add(&mut instructions, &mut data, &target[pending..]);
    }

    let mut encoding = Vec::new();
    integer(&mut encoding, target.len());
    encoding.push(0); // Delta_Indicator: no section is compressed
    integer(&mut encoding, data.len());
    integer(&mut encoding, instructions.len());
    integer(&mut encoding, addresses.len());
    encoding.extend_from_slice(&data);
    encoding.extend_from_slice(&instructions);
    encoding.extend_from_slice(&addresses);

    let mut delta = vec![0xD6, 0xC3, 0xC4, 0x00, 0x00];
    if source.is_empty() {
        delta.push(0); // Win_Indicator: no source segment
    } else {
        delta.push(0x01); // VCD_SOURCE
        integer(&mut delta, source.len());
        integer(&mut delta, 0);
    }
    integer(&mut delta, encoding.len());
    delta.extend_from_slice(&encoding);
    delta
}

fn add(instructions: &mut Vec<u8>, data: &mut Vec<u8>, bytes: &[u8]) {
    instructions.push(1);
    integer(instructions, bytes.len());
    data.extend_from_slice(bytes);
}

/// An RFC 3284 integer (section 2): base 128, most significant digit
/// first, every byte but the last with its top bit set.
fn integer(out: &mut Vec<u8>, value: usize) {
    let mut digits = [0u8; 10];
    let mut n = value;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    let last = digits.len() - 1;
    for (k, digit) in digits.iter().enumerate().skip(i) {
        out.push(if k == last { *digit } else { digit | 0x80 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder for what `vcdiff` writes (one window, explicit ADD and
    /// mode-0 COPY), checking every length field on the way.
    fn apply(delta: &[u8], source: &[u8]) -> Vec<u8> {
        fn int(bytes: &[u8], at: &mut usize) -> usize {
            let mut value = 0;
            loop {
                let b = bytes[*at];
                *at += 1;
                value = (value << 7) | usize::from(b & 0x7F);
                if b & 0x80 == 0 {
                    return value;
                }
            }
        }
        assert_eq!(&delta[..5], &[0xD6, 0xC3, 0xC4, 0, 0]);
        let mut at = 5;
        let indicator = delta[at];
        at += 1;
        let segment = if indicator == 1 {
            let len = int(delta, &mut at);
            let pos = int(delta, &mut at);
            &source[pos..pos + len]
        } else {
            assert_eq!(indicator, 0);
            &[][..]
        };
        let encoding_len = int(delta, &mut at);
        assert_eq!(at + encoding_len, delta.len(), "one window, to the end");
        let target_len = int(delta, &mut at);
        assert_eq!(delta[at], 0);
        at += 1;
        let (dl, il, al) = (
            int(delta, &mut at),
            int(delta, &mut at),
            int(delta, &mut at),
        );
        let data = &delta[at..at + dl];
        let ins = &delta[at + dl..at + dl + il];
        let adr = &delta[at + dl + il..at + dl + il + al];
        assert_eq!(at + dl + il + al, delta.len());
        let (mut d, mut i, mut a) = (0, 0, 0);
        let mut target = Vec::new();
        while i < ins.len() {
            let code = ins[i];
            i += 1;
            let size = int(ins, &mut i);
            match code {
                1 => {
                    target.extend_from_slice(&data[d..d + size]);
                    d += size;
                }
                19 => {
                    let from = int(adr, &mut a);
                    target.extend_from_slice(&segment[from..from + size]);
                }
                other => panic!("unexpected instruction {other}"),
            }
        }
        assert_eq!((d, a), (dl, al), "every byte of data and addresses used");
        assert_eq!(target.len(), target_len);
        target
    }

    #[test]
    fn integers_are_base_128_most_significant_first() {
        // RFC 3284 section 2's example: 123456789 is 58 111 26 21.
        let mut out = Vec::new();
        integer(&mut out, 123_456_789);
        assert_eq!(out, [58 | 0x80, 111 | 0x80, 26 | 0x80, 21]);
        out.clear();
        integer(&mut out, 0);
        integer(&mut out, 127);
        integer(&mut out, 128);
        assert_eq!(out, [0, 127, 0x81, 0x00]);
    }

    #[test]
    fn a_delta_rebuilds_the_target_from_the_source() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"", b"hello"),
            (b"hello", b"hello"),
            (
                br#"{"price":100,"name":"widget","stock":7}"#,
                br#"{"price":101,"name":"widget","stock":7}"#,
            ),
            (b"abcdefgh", b"xxabcdyyefghzz"),
            (b"abc", b"completely different"),
            (
                b"aaaaaaaaaaaaaaaa",
                b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
        ];
        for (source, target) in cases {
            let delta = vcdiff(source, target);
            assert_eq!(apply(&delta, source), target, "{source:?} -> {target:?}");
        }
        // Where the source matches, the target is copied, not repeated.
        let source = vec![b'x'; 4000];
        let mut target = source.clone();
        target[2000] = b'y';
        let delta = vcdiff(&source, &target);
        assert!(delta.len() < 40, "{} bytes", delta.len());
        assert_eq!(apply(&delta, &source), target);
    }

    #[test]
    fn the_exact_bytes_of_a_small_delta() {
        // "abcdXY" from "abcd": COPY 4 from 0, ADD "XY".
        assert_eq!(
            vcdiff(b"abcd", b"abcdXY"),
            [
                0xD6, 0xC3, 0xC4, 0, 0, // header
                1, 4, 0,  // VCD_SOURCE, segment of 4 at 0
                12, // the delta encoding's length
                6, 0, 2, 4, 1, // target 6, indicator, data/instructions/addresses lengths
                b'X', b'Y', // data
                19, 4, 1, 2, // COPY 4, ADD 2
                0, // the COPY's address
            ]
        );
    }

    fn message(id: &str, data: Value, encoding: Option<&str>) -> Value {
        let mut m = json!({"id": id, "data": data});
        if let Some(e) = encoding {
            m["encoding"] = json!(e);
        }
        m
    }

    #[test]
    fn frames_become_deltas_against_the_previous_payload() {
        let frame = json!({"action": 15, "channel": "c", "messages": [
            message("m:1:0", json!("hello world"), None),
            message("m:1:1", json!(r#"{"a":1}"#), Some("json")),
            message("m:1:2", json!(STANDARD.encode([1u8, 2, 3, 4, 5])), Some("base64")),
            message("m:1:3", json!({"not": "a string"}), None),
            message("m:1:4", json!("after"), None),
        ]});
        // No base yet: only later messages of the frame can be deltas.
        let first = encode_frame(&frame, None);
        let out = first.frame.expect("messages 1 and 2 are deltas");
        let m = out["messages"].as_array().unwrap();
        assert_eq!(m[0], frame["messages"][0], "nothing before it: sent whole");
        assert_eq!(m[1]["encoding"], "json/utf-8/vcdiff/base64");
        assert_eq!(
            m[1]["extras"]["delta"],
            json!({"format": "vcdiff", "from": "m:1:0"})
        );
        let delta = STANDARD.decode(m[1]["data"].as_str().unwrap()).unwrap();
        assert_eq!(apply(&delta, b"hello world"), br#"{"a":1}"#);
        assert_eq!(m[2]["encoding"], "vcdiff/base64");
        let delta = STANDARD.decode(m[2]["data"].as_str().unwrap()).unwrap();
        assert_eq!(apply(&delta, br#"{"a":1}"#), [1, 2, 3, 4, 5]);
        // Data that is not a string breaks the chain: the next is whole.
        assert_eq!(m[3], frame["messages"][3]);
        assert_eq!(m[4], frame["messages"][4]);
        let next = first.next.expect("the last message is a base");
        assert_eq!(
            (next.id(), next.payload.as_slice()),
            ("m:1:4", &b"after"[..])
        );

        // With a base, the first message is a delta from it; extras kept.
        let frame = json!({"messages": [{"id": "m:2:0", "data": "afterwards", "extras": {"headers": {"k": "v"}}}]});
        let second = encode_frame(&frame, Some(next));
        let m = &second.frame.unwrap()["messages"][0];
        assert_eq!(m["extras"]["headers"], json!({"k": "v"}));
        assert_eq!(m["extras"]["delta"]["from"], "m:1:4");
        assert_eq!(m["encoding"], "utf-8/vcdiff/base64");

        // Encrypted data: the delta is of the ciphertext bytes.
        let base = Base {
            id: "x".into(),
            payload: vec![9; 16],
        };
        let cipher = json!({"messages": [message("y", json!(STANDARD.encode([9u8; 32])), Some("utf-8/cipher+aes-128-cbc/base64"))]});
        let m = &encode_frame(&cipher, Some(base)).frame.unwrap()["messages"][0];
        assert_eq!(m["encoding"], "utf-8/cipher+aes-128-cbc/vcdiff/base64");

        // Nothing to encode: no frame, no base.
        let empty = encode_frame(&json!({"messages": [message("z", json!(""), None)]}), None);
        assert!(empty.frame.is_none() && empty.next.is_none());
    }
}
