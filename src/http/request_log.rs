//! One log line per request, written when the response is ready: request id,
//! method, route, status, reason, the user's `sub` and the session's
//! `sid`/`jti`, roles and latency. Never a token, key or secret: handlers put
//! only these fields into the response's extensions.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{web, Error, HttpMessage, HttpResponse};

use super::routes::{self, Route};
use super::AppState;
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

/// What a handler learned about the request, for its log line.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogFields {
    pub(crate) reason: &'static str,
    pub(crate) sub: Option<String>,
    pub(crate) sid: Option<String>,
    pub(crate) jti: Option<String>,
    pub(crate) roles: Option<String>,
}

impl LogFields {
    pub(crate) fn attach(self, response: &mut HttpResponse) {
        response.extensions_mut().insert(self);
    }
}

/// Marks a response with its stable reason (errors and outcomes alike).
pub(crate) fn mark(response: &mut HttpResponse, reason: &'static str) {
    let mut extensions = response.extensions_mut();
    match extensions.get_mut::<LogFields>() {
        Some(fields) => fields.reason = reason,
        None => {
            extensions.insert(LogFields {
                reason,
                ..LogFields::default()
            });
        }
    }
}

struct Started(Instant);

pub(crate) struct RequestLog;

impl RootSpanBuilder for RequestLog {
    fn on_request_start(request: &ServiceRequest) -> Span {
        request.extensions_mut().insert(Started(Instant::now()));
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        // Logs written while handling the request carry its id.
        tracing::info_span!("request", request_id = %request_id)
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let Ok(response) = outcome else {
            let _entered = span.enter();
            tracing::warn!(
                status = 500,
                reason = "internal",
                "request failed before a response"
            );
            return;
        };
        let request = response.request();
        let latency_ms = request
            .extensions()
            .get::<Started>()
            .map(|s| s.0.elapsed().as_secs_f64() * 1000.0)
            .unwrap_or_default();
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let status = response.status().as_u16();
        let extensions = response.response().extensions();
        let fields = extensions.get::<LogFields>();
        let reason = fields
            .map(|f| f.reason)
            .unwrap_or(if status < 400 { "ok" } else { "error" });
        let route = request.path();
        if let Some(state) = request.app_data::<web::Data<AppState>>() {
            let latency = Duration::from_secs_f64(latency_ms / 1000.0);
            state
                .metrics
                .observe_request(routes::label(route), status, reason, latency);
        }
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: "ably_tokend::request",
                    request_id = %request_id,
                    method = %request.method(),
                    route,
                    status,
                    reason,
                    sub = fields.and_then(|f| f.sub.as_deref()),
                    sid = fields.and_then(|f| f.sid.as_deref()),
                    jti = fields.and_then(|f| f.jti.as_deref()),
                    roles = fields.and_then(|f| f.roles.as_deref()),
                    latency_ms,
                    "request"
                )
            };
        }
        // Probes come every few seconds from the kubelet: keep them out of
        // the info stream unless they fail.
        if Route::from_path(route).is_some_and(Route::is_probe) && status < 400 {
            line!(debug);
        } else {
            line!(info);
        }
    }
}
