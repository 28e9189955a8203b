//! What the session-endpoint and introspection look-ups share: the HTTP
//! client that never follows a redirect, the answer read with a size bound
//! before it is parsed, the two ways a look-up fails, the cache key (a
//! SHA-256 of exactly what was forwarded) and the strict reading of a
//! session's expiry.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::UpstreamError;

/// The largest answer read; a longer one is cut off unread (and is a 503).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A cache key: SHA-256 of what was forwarded, never the credential itself.
pub(crate) type Key = [u8; 32];

/// Why a look-up gave no claims. The text is for the log, never the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// The upstream says there is no such session: 401 `session_invalid`.
    Refused(String),
    /// The upstream did not answer usefully: 503 `session_upstream_unavailable`.
    Unavailable(String),
}

impl LookupError {
    /// The client-facing error; the detail stays in the log.
    pub(crate) fn into_upstream(self, issuer: &str) -> UpstreamError {
        let issuer = issuer.to_string();
        match self {
            LookupError::Refused(_) => UpstreamError::SessionInvalid { issuer },
            LookupError::Unavailable(_) => UpstreamError::SessionUpstreamUnavailable { issuer },
        }
    }
}

/// One upstream answer, interpreted: the claims (the whole JSON object) or
/// why there are none, and when the session ends if the answer says.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) claims: Result<Arc<Value>, LookupError>,
    /// Milliseconds since the Unix epoch.
    pub(crate) expires_at_ms: Option<u64>,
}

impl Answer {
    pub(crate) fn refused(why: impl Into<String>) -> Answer {
        Answer {
            claims: Err(LookupError::Refused(why.into())),
            expires_at_ms: None,
        }
    }

    pub(crate) fn unavailable(why: impl Into<String>) -> Answer {
        Answer {
            claims: Err(LookupError::Unavailable(why.into())),
            expires_at_ms: None,
        }
    }

    /// A session whose own expiry has passed is refused: no leeway.
    pub(crate) fn session(claims: Value, expires_at_ms: Option<u64>, now_ms: u64) -> Answer {
        match expires_at_ms {
            Some(at) if at <= now_ms => Answer::refused("the session's expiry has passed"),
            _ => Answer {
                claims: Ok(Arc::new(claims)),
                expires_at_ms,
            },
        }
    }
}

impl Answer {
    /// One log line for a look-up that failed: a refusal at info (the user's
    /// session is simply not valid), an upstream that could not be asked at
    /// warn with its URL (ops must act). `endpoint` and `refused` name the
    /// kind, e.g. "the session endpoint" / "the session".
    pub(crate) fn log_failure(
        &self,
        issuer: &str,
        url: &reqwest::Url,
        endpoint: &str,
        refused: &str,
    ) {
        match &self.claims {
            Ok(_) => {}
            Err(LookupError::Refused(why)) => {
                tracing::info!(issuer = %issuer, reason = "session_invalid", detail = %why, "{endpoint} refused {refused}");
            }
            Err(LookupError::Unavailable(why)) => {
                tracing::warn!(issuer = %issuer, reason = "session_upstream_unavailable", detail = %why, url = %url, "{endpoint} could not be asked");
            }
        }
    }
}

/// The client both look-ups use: a redirect is answered, never followed (a
/// session endpoint redirecting to a sign-in page means "no session", and
/// following it would carry the cookies elsewhere).
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("ably-tokend/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client builds with static settings")
}

/// Sends a request and reads the status and at most [`MAX_ANSWER_BYTES`]
/// of body, all within `timeout`. Only a 200's body is read.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    what: &str,
) -> Result<(u16, Vec<u8>), LookupError> {
    let exchange = async {
        let mut response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| LookupError::Unavailable(describe(&e, what)))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Ok((status, Vec::new()));
        }
        let too_large = || {
            LookupError::Unavailable(format!(
                "the {what} answered more than {MAX_ANSWER_BYTES} bytes"
            ))
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| LookupError::Unavailable(describe(&e, what)))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    };
    // reqwest's timeout covers the body too; this one makes the bound
    // independent of how the client is built.
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(LookupError::Unavailable(format!("the {what} timed out"))))
}

fn describe(e: &reqwest::Error, what: &str) -> String {
    if e.is_timeout() {
        format!("the {what} timed out")
    } else if e.is_connect() {
        format!("could not connect to the {what}")
    } else {
        format!("the request to the {what} failed: {e}")
    }
}

/// SHA-256 over the parts, each length-prefixed so no two lists of parts
/// hash the same input.
pub(crate) fn key(parts: &[&[u8]]) -> Key {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// How an answer writes its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpiryFormat {
    /// Integer seconds since the epoch only (RFC 7662 §2.2 `exp`).
    Seconds,
    /// Integer seconds, or RFC 3339 text (Auth.js `expires`, Better Auth `expiresAt`).
    SecondsOrRfc3339,
}

/// The expiry, in milliseconds since the epoch, read strictly: absent is
/// `None`; anything present but not an integer or RFC 3339 text is an error,
/// because an unreadable expiry cannot bound how long an answer is trusted.
pub(crate) fn read_expiry(
    value: Option<&Value>,
    format: ExpiryFormat,
) -> Result<Option<u64>, &'static str> {
    match (value, format) {
        (None, _) => Ok(None),
        (Some(Value::Number(n)), _) => n
            .as_u64()
            .and_then(|secs| secs.checked_mul(1000))
            .map(Some)
            .ok_or("the expiry is not a whole number of seconds"),
        (Some(Value::String(text)), ExpiryFormat::SecondsOrRfc3339) => rfc3339_ms(text)
            .map(Some)
            .ok_or("the expiry is not RFC 3339 date-time text"),
        (Some(_), ExpiryFormat::Seconds) => Err("the expiry is not a whole number of seconds"),
        (Some(_), ExpiryFormat::SecondsOrRfc3339) => {
            Err("the expiry is neither seconds nor RFC 3339 text")
        }
    }
}

/// RFC 3339 §5.6 `date-time` (`2026-01-02T03:04:05.678Z`, or with a
/// `+hh:mm`/`-hh:mm` offset), in milliseconds since the epoch.
pub(crate) fn rfc3339_ms(text: &str) -> Option<u64> {
    if text.len() > 64 || !text.is_ascii() {
        return None;
    }
    let (base, offset_secs) = match text.strip_suffix(['Z', 'z']) {
        Some(base) => (base, 0i64),
        None => {
            let (base, offset) = text.split_at(text.len().checked_sub(6)?);
            let sign = match offset.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hh, mm) = offset[1..].split_once(':')?;
            if hh.len() != 2
                || mm.len() != 2
                || !(hh.bytes().chain(mm.bytes())).all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let (hh, mm): (i64, i64) = (hh.parse().ok()?, mm.parse().ok()?);
            if hh > 23 || mm > 59 {
                return None;
            }
            (base, sign * (hh * 3600 + mm * 60))
        }
    };
    // humantime reads the `Z` form strictly (a `T`, two-digit fields, any
    // number of fraction digits).
    let local = humantime::parse_rfc3339(&format!("{base}Z")).ok()?;
    let local_ms = i64::try_from(local.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    u64::try_from(local_ms.checked_sub(offset_secs * 1000)?).ok()
}

#[cfg(test)]
pub(crate) mod testing {
    //! A loopback HTTP/1.1 server for the look-up tests: it records every
    //! request as it arrived and answers as the test scripts it.

    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Debug, Clone)]
    pub(crate) struct Request {
        pub(crate) method: String,
        pub(crate) path: String,
        /// Lower-cased names, in arrival order.
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) body: String,
    }

    impl Request {
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    #[derive(Debug, Clone)]
    pub(crate) enum Reply {
        /// Status, extra headers, body.
        With(u16, Vec<(&'static str, String)>, String),
        /// Waits this long, then replies.
        After(Duration, Box<Reply>),
        /// Sends headers, then `bytes` of body in 64 KiB writes until the
        /// peer goes away; `declared` says whether Content-Length is sent.
        Huge { bytes: usize, declared: bool },
    }

    impl Reply {
        pub(crate) fn json(status: u16, body: impl Into<String>) -> Reply {
            Reply::With(
                status,
                vec![("content-type", "application/json".into())],
                body.into(),
            )
        }
    }

    type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

    /// Formatted log lines of this thread, for asserting what is (not) logged.
    #[derive(Clone, Default)]
    pub(crate) struct Log(Arc<Mutex<Vec<u8>>>);

    impl Log {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Records every log line (all levels) of the current thread while the
    /// guard lives; use it in a current-thread `#[tokio::test]`.
    pub(crate) fn capture_log() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    pub(crate) struct Server {
        pub(crate) addr: SocketAddr,
        pub(crate) requests: Arc<Mutex<Vec<Request>>>,
        /// Body bytes a `Huge` reply wrote before the peer went away, and
        /// whether it went away before the end.
        pub(crate) huge: Arc<Mutex<Option<(usize, bool)>>>,
        calls: Arc<AtomicUsize>,
    }

    impl Server {
        pub(crate) fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        pub(crate) fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        pub(crate) fn last(&self) -> Request {
            self.requests.lock().unwrap().last().cloned().unwrap()
        }
    }

    pub(crate) async fn start(
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let huge = Arc::new(Mutex::new(None));
        let calls = Arc::new(AtomicUsize::new(0));
        let server = Server {
            addr,
            requests: requests.clone(),
            huge: huge.clone(),
            calls: calls.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (handler, requests, huge, calls) = (
                    handler.clone(),
                    requests.clone(),
                    huge.clone(),
                    calls.clone(),
                );
                tokio::spawn(async move {
                    let _ = serve(stream, handler, requests, huge, calls).await;
                });
            }
        });
        server
    }

    async fn serve(
        mut stream: TcpStream,
        handler: Arc<Handler>,
        requests: Arc<Mutex<Vec<Request>>>,
        huge: Arc<Mutex<Option<(usize, bool)>>>,
        calls: Arc<AtomicUsize>,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let request = Request {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).to_string(),
        };
        calls.fetch_add(1, Ordering::SeqCst);
        requests.lock().unwrap().push(request.clone());
        let mut reply = handler(&request);
        loop {
            match reply {
                Reply::After(wait, then) => {
                    tokio::time::sleep(wait).await;
                    reply = *then;
                }
                Reply::With(status, extra, body) => {
                    let mut out = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        body.len()
                    );
                    for (name, value) in extra {
                        out.push_str(&format!("{name}: {value}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&body);
                    stream.write_all(out.as_bytes()).await?;
                    return stream.shutdown().await;
                }
                Reply::Huge { bytes, declared } => {
                    let mut out = String::from(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n",
                    );
                    if declared {
                        out.push_str(&format!("content-length: {bytes}\r\n"));
                    } else {
                        out.push_str("transfer-encoding: chunked\r\n");
                    }
                    out.push_str("\r\n");
                    stream.write_all(out.as_bytes()).await?;
                    let piece = vec![b' '; 64 * 1024];
                    let mut written = 0;
                    let mut cut = false;
                    while written < bytes {
                        let result = if declared {
                            stream.write_all(&piece).await
                        } else {
                            let framed = [
                                format!("{:x}\r\n", piece.len()).into_bytes(),
                                piece.clone(),
                                b"\r\n".to_vec(),
                            ]
                            .concat();
                            stream.write_all(&framed).await
                        };
                        if result.is_err() {
                            cut = true;
                            break;
                        }
                        written += piece.len();
                    }
                    *huge.lock().unwrap() = Some((written, cut));
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expiry_is_read_strictly() {
        let read = |v: Value, f| read_expiry(Some(&v), f);
        use ExpiryFormat::*;
        assert_eq!(read_expiry(None, Seconds), Ok(None));
        assert_eq!(
            read(json!(1_700_000_000), Seconds),
            Ok(Some(1_700_000_000_000))
        );
        assert!(read(json!(1_700_000_000.5), Seconds).is_err());
        assert!(read(json!(-1), Seconds).is_err());
        assert!(read(json!("1700000000"), Seconds).is_err());
        assert!(read(json!("2023-11-14T22:13:20Z"), Seconds).is_err());
        assert_eq!(
            read(json!("2023-11-14T22:13:20.250Z"), SecondsOrRfc3339),
            Ok(Some(1_700_000_000_250))
        );
        assert_eq!(
            read(json!("2023-11-15T00:13:20+02:00"), SecondsOrRfc3339),
            Ok(Some(1_700_000_000_000))
        );
        assert_eq!(
            read(json!("2023-11-14T21:43:20-00:30"), SecondsOrRfc3339),
            Ok(Some(1_700_000_000_000))
        );
        for text in [
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20",
            "2023-11-14",
            "tomorrow",
            "2023-11-14T22:13:20+2:00",
            "2023-11-14T22:13:20+24:00",
            "",
        ] {
            assert!(read(json!(text), SecondsOrRfc3339).is_err(), "{text:?}");
        }
        assert!(read(json!(true), SecondsOrRfc3339).is_err());
        assert!(read(Value::Null, SecondsOrRfc3339).is_err());
    }

    #[test]
    fn a_session_past_its_expiry_is_refused_without_leeway() {
        let now = 1_700_000_000_000;
        assert!(Answer::session(json!({}), Some(now + 1), now)
            .claims
            .is_ok());
        assert!(matches!(
            Answer::session(json!({}), Some(now), now).claims,
            Err(LookupError::Refused(_))
        ));
    }

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_eq!(key(&[b"ab", b"c"]), key(&[b"ab", b"c"]));
        assert_ne!(key(&[b"x"]), key(&[b"x", b""]));
    }
}
