//! Errors as HTTP responses in Ably's shape, shared by the sidecar (`http`)
//! and the embedded broker's REST side so both render and sanitise alike.
//!
//! The body is `{"error": {code, statusCode, message, ...}}`: the `ErrorInfo`
//! fields of Ably's features spec (TI1), which ably-js reads from an error
//! body. The `X-Ably-Errorcode` / `X-Ably-Errormessage` headers repeat code
//! and message for clients that read headers only (features spec HP6, HP7;
//! browsers read them from an opaque or non-JSON response).

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use serde_json::{Map, Value};

/// The longest `X-Ably-Errormessage` value sent; the body keeps the whole message.
pub(crate) const MAX_HEADER_MESSAGE: usize = 512;

/// One Ably-shaped error response, built by `render`.
#[derive(Debug, Clone)]
#[must_use]
pub(crate) struct ErrorResponse {
    status: StatusCode,
    code: u32,
    message: String,
    /// Fields beside code, statusCode and message inside `error`.
    error_fields: Map<String, Value>,
    /// Fields beside `error` at the top level of the body.
    top_level: Map<String, Value>,
}

impl ErrorResponse {
    pub(crate) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            status,
            code,
            message: message.into(),
            error_fields: Map::new(),
            top_level: Map::new(),
        }
    }

    /// Adds a field inside `error` (the sidecar's stable `reason`).
    pub(crate) fn error_field(mut self, name: &str, value: impl Into<Value>) -> ErrorResponse {
        self.error_fields.insert(name.into(), value.into());
        self
    }

    /// Adds fields beside `error` (readiness detail).
    pub(crate) fn top_level(mut self, fields: Map<String, Value>) -> ErrorResponse {
        self.top_level.extend(fields);
        self
    }

    /// The body as JSON, content-type exactly `application/json`, the Ably
    /// headers, and `Cache-Control: no-store` (an error must not be cached).
    pub(crate) fn render(self) -> HttpResponse {
        let mut error = self.error_fields;
        error.insert("code".into(), self.code.into());
        error.insert("statusCode".into(), self.status.as_u16().into());
        error.insert("message".into(), Value::String(self.message.clone()));
        let mut body = self.top_level;
        body.insert("error".into(), Value::Object(error));
        HttpResponse::build(self.status)
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header(("x-ably-errorcode", self.code.to_string()))
            .insert_header(("x-ably-errormessage", header_safe(&self.message)))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(Value::Object(body).to_string())
    }
}

/// A header value must be visible ASCII or space (RFC 9110 §5.5); anything
/// else becomes `?` so the message stays readable, and it is cut at
/// `MAX_HEADER_MESSAGE` bytes.
pub(crate) fn header_safe(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_HEADER_MESSAGE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use serde_json::json;

    #[test]
    fn renders_the_body_headers_and_extra_fields() {
        let mut top = Map::new();
        top.insert("status".into(), json!("not_ready"));
        let response = ErrorResponse::new(StatusCode::SERVICE_UNAVAILABLE, 50300, "no keys")
            .error_field("reason", "not_ready")
            .top_level(top)
            .render();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let headers = response.headers();
        assert_eq!(headers.get("content-type").unwrap(), "application/json");
        assert_eq!(headers.get("x-ably-errorcode").unwrap(), "50300");
        assert_eq!(headers.get("x-ably-errormessage").unwrap(), "no keys");
        assert_eq!(headers.get("cache-control").unwrap(), "no-store");
        let body = response.into_body().try_into_bytes().unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({
                "status": "not_ready",
                "error": {"code": 50300, "statusCode": 503, "message": "no keys", "reason": "not_ready"},
            })
        );
    }

    #[test]
    fn the_standard_fields_win_over_extras_of_the_same_name() {
        let response = ErrorResponse::new(StatusCode::NOT_FOUND, 40400, "gone")
            .error_field("code", 1)
            .render();
        let body = response.into_body().try_into_bytes().unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], 40400);
    }

    #[test]
    fn header_message_is_visible_ascii_and_bounded() {
        assert_eq!(header_safe("é\nx"), "??x");
        assert_eq!(header_safe("a\u{7f}b\tc"), "a?b?c");
        let long = "x".repeat(MAX_HEADER_MESSAGE + 10);
        assert_eq!(header_safe(&long).len(), MAX_HEADER_MESSAGE);
    }
}
