//! `/api/ably-token` and `/api/ably-jwt`: verify the session, apply the
//! policy, sign. Every outcome is logged once with a stable reason.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::error::ApiError;
use super::params::{session_credential, token_params};
use super::request_log::LogFields;
use super::routes::Route;
use super::AppState;
use crate::config::TokenFormat;
use crate::policy::Request;
use crate::signing::{new_nonce, sign_ably_jwt, sign_token_request, Grant};
use crate::upstream::Session;

#[derive(Clone, Copy)]
pub(crate) enum Endpoint {
    /// Answers in the configured format, or `?format=`.
    Token,
    /// Always an Ably JWT.
    Jwt,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Token => Route::AblyToken.path(),
            Endpoint::Jwt => Route::AblyJwt.path(),
        }
    }
}

pub(crate) async fn ably_token(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Endpoint::Token, req, body, state).await
}

pub(crate) async fn ably_jwt(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Endpoint::Jwt, req, body, state).await
}

async fn handle(
    endpoint: Endpoint,
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut session: Option<Session> = None;
    let (mut response, fields) = match issue(endpoint, &req, body, &state, &mut session).await {
        Ok((response, roles)) => (
            response,
            LogFields {
                reason: "issued",
                roles: Some(roles.join(",")),
                ..LogFields::default()
            },
        ),
        Err(error) => {
            if let ApiError::Upstream(e) = &error {
                tracing::debug!(
                    route = endpoint.path(),
                    reason = e.reason(),
                    "session refused: {e}"
                );
            }
            (
                actix_web::ResponseError::error_response(&error),
                LogFields {
                    reason: error.reason(),
                    ..LogFields::default()
                },
            )
        }
    };
    let fields = match session {
        Some(s) => LogFields {
            sub: s.sub,
            sid: s.sid,
            jti: s.jti,
            ..fields
        },
        None => fields,
    };
    fields.attach(&mut response);
    response
}

async fn read_body(mut body: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::bad_request("invalid_body", "the request body could not be read")
        })?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::BodyTooLarge(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn issue(
    endpoint: Endpoint,
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    session_out: &mut Option<Session>,
) -> Result<(HttpResponse, Vec<String>), ApiError> {
    let settings = &state.settings;
    let credential = session_credential(req, settings)?;
    let body = read_body(body, settings.server.max_body_bytes).await?;
    let params = token_params(req, &body)?;
    let session = state.verifier.authenticate(&credential).await?;
    let session = session_out.insert(session);
    let policy = state.policy.current();
    let decision = policy.evaluate(&Request {
        claims: &session.claims,
        roles_claim: &session.issuer.roles_claim,
        client_id_claim: &session.issuer.client_id_claim,
        asked: &params.asked,
        default_ttl: settings.ably.default_ttl,
        max_ttl: settings.ably.max_ttl,
    })?;
    let key = settings.ably.signing_key();
    // A token can hold no more than its key allows: Ably itself narrows a
    // TokenRequest to its key's capability, so say so here rather than hand
    // out a request Ably would shrink or refuse.
    let capability = decision.capability.narrowed_by(key.capability());
    if capability.is_empty() {
        return Err(ApiError::OutsideKeyCapability {
            key: key.name().to_string(),
            granted: decision.capability.to_canonical_json(),
            allowed: key.capability().to_canonical_json(),
        });
    }
    let grant = Grant {
        capability: &capability,
        client_id: Some(&decision.client_id),
        ttl_ms: decision.ttl.as_millis() as u64,
        issued_ms: state.clock.now_ms(),
    };
    let format = match endpoint {
        Endpoint::Jwt => TokenFormat::Jwt,
        Endpoint::Token => params.format.unwrap_or(settings.ably.token_format),
    };
    let response = match format {
        TokenFormat::TokenRequest => {
            let request = sign_token_request(key, &grant, new_nonce());
            HttpResponse::Ok()
                .insert_header(("content-type", "application/json"))
                .body(serde_json::to_string(&request).expect("a TokenRequest serialises"))
        }
        TokenFormat::Jwt => HttpResponse::Ok()
            .insert_header(("content-type", "application/jwt"))
            .body(sign_ably_jwt(key, &grant)),
    };
    state.metrics.roles_ignored(decision.ignored_roles);
    state.metrics.token_issued(
        &decision.roles,
        match format {
            TokenFormat::TokenRequest => "token_request",
            TokenFormat::Jwt => "jwt",
        },
    );
    Ok((response, decision.roles))
}
