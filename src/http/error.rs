//! The one place where the sidecar's errors become HTTP responses, rendered
//! by `crate::ably_error` in Ably's error shape so ably-js reports them well:
//! `{"error": {code, statusCode, message, reason}}`, where `reason` is the
//! stable name logged and counted in metrics for the same outcome.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use super::routes::Route;
use crate::ably_error::ErrorResponse;
use crate::capability::CapabilityError;
use crate::policy::Denial;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Denied(#[from] Denial),
    #[error("{message}")]
    BadRequest {
        reason: &'static str,
        message: String,
    },
    /// The policy's grant and the signing key's capability do not meet.
    #[error(
        "the policy grants {granted}, but the signing key {key} may grant none of it \
         (its capability is {allowed})"
    )]
    OutsideKeyCapability {
        key: String,
        granted: String,
        allowed: String,
    },
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("too many requests: slow down and retry")]
    RateLimited,
    #[error(
        "no route {0}: the token endpoints are {token} and {jwt}",
        token = Route::AblyToken.path(),
        jwt = Route::AblyJwt.path()
    )]
    NotFound(String),
}

impl ApiError {
    pub(crate) fn bad_request(reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            reason,
            message: message.into(),
        }
    }

    pub(crate) fn invalid_capability(e: CapabilityError) -> ApiError {
        ApiError::bad_request("invalid_capability", format!("capability: {e}"))
    }

    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ApiError::Upstream(e) => e.reason(),
            ApiError::Denied(d) => d.reason(),
            ApiError::OutsideKeyCapability { .. } => "outside_key_capability",
            ApiError::BadRequest { reason, .. } => reason,
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::RateLimited => "rate_limited",
            ApiError::NotFound(_) => "not_found",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Upstream(
                UpstreamError::KeysUnavailable { .. }
                | UpstreamError::SessionUpstreamUnavailable { .. },
            ) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) => StatusCode::UNAUTHORIZED,
            ApiError::Denied(_) | ApiError::OutsideKeyCapability { .. } => StatusCode::FORBIDDEN,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.status_code(), self.reason(), &self.to_string())
    }
}

/// Builds an Ably-shaped error response; also used for errors raised outside
/// handlers (readiness, actix's own extractor errors).
pub(crate) fn error_response(
    status: StatusCode,
    reason: &'static str,
    message: &str,
) -> HttpResponse {
    error_response_with(status, reason, message, serde_json::Map::new())
}

/// As `error_response`, with more top-level fields beside `error`.
pub(crate) fn error_response_with(
    status: StatusCode,
    reason: &'static str,
    message: &str,
    extra: serde_json::Map<String, serde_json::Value>,
) -> HttpResponse {
    let code = u32::from(status.as_u16()) * 100;
    let mut response = ErrorResponse::new(status, code, message)
        .error_field("reason", reason)
        .top_level(extra)
        .render();
    super::request_log::mark(&mut response, reason);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use serde_json::json;

    #[test]
    fn errors_have_ablys_shape_and_headers() {
        let response = ApiError::Upstream(UpstreamError::Expired).error_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let headers = response.headers();
        assert_eq!(headers.get("content-type").unwrap(), "application/json");
        assert_eq!(headers.get("x-ably-errorcode").unwrap(), "40100");
        assert_eq!(
            headers.get("x-ably-errormessage").unwrap(),
            "the session token has expired"
        );
        let body = response.into_body().try_into_bytes().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": 40100, "statusCode": 401, "message": "the session token has expired", "reason": "session_token_expired"}})
        );
    }

    #[test]
    fn session_look_up_errors_are_401_and_503() {
        let issuer = "app-session".to_string();
        let invalid = ApiError::Upstream(UpstreamError::SessionInvalid {
            issuer: issuer.clone(),
        });
        assert_eq!(invalid.status_code(), StatusCode::UNAUTHORIZED);
        assert_eq!(invalid.reason(), "session_invalid");
        let down = ApiError::Upstream(UpstreamError::SessionUpstreamUnavailable { issuer });
        let response = down.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.into_body().try_into_bytes().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": 50300, "statusCode": 503, "message": "issuer \"app-session\" could not be asked about the session: try again later", "reason": "session_upstream_unavailable"}})
        );
    }
}
