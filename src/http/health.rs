//! Liveness and readiness.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::error_response_with;
use super::AppState;
use crate::upstream::Readiness;

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("content-type", "application/json"))
        .body(r#"{"status":"ok"}"#)
}

pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("content-type", "text/plain; version=0.0.4; charset=utf-8"))
        .body(state.metrics.render())
}

/// The policy in force and, when a reload was refused, why.
fn policy_detail(state: &AppState) -> serde_json::Value {
    let policy = state.policy.current();
    json!({
        "source": policy.source.display().to_string(),
        "roles": policy.role_names().count(),
        "reload_error": state.policy.last_error(),
    })
}

/// Ready once a policy is loaded and every JWKS issuer (OIDC discovery
/// included) has usable keys; otherwise 503 naming each issuer and why.
/// An issuer found by discovery also reports its document, the `jwks_uri` in
/// use and the last discovery error (which does not make it unready while
/// its keys are usable).
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut problems = Vec::new();
    let issuers: Vec<_> = state
        .verifier
        .jwks_status()
        .into_iter()
        .map(|(name, status)| {
            let ready = status.readiness == Readiness::Ready;
            if let Readiness::NotReady(why) = &status.readiness {
                problems.push(why.clone());
            }
            json!({
                "name": name,
                "ready": ready,
                "keys": status.key_count,
                "age_seconds": status.age.map(|a| a.as_secs()),
                "fetches": status.fetches,
                "failures": status.failures,
                "last_error": status.last_error,
                "discovery": status.discovery.as_ref().map(|d| json!({
                    "document_url": d.document_url,
                    "jwks_uri": d.jwks_uri,
                    "fetches": d.fetches,
                    "failures": d.failures,
                    "last_error": d.last_error,
                })),
            })
        })
        .collect();
    if !problems.is_empty() {
        // A probe must not wait on the network, but it may start the fetch.
        state.verifier.prefetch();
        let mut extra = serde_json::Map::new();
        extra.insert("status".into(), json!("not_ready"));
        extra.insert("policy".into(), policy_detail(&state));
        extra.insert("issuers".into(), json!(issuers));
        return error_response_with(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            &problems.join("; "),
            extra,
        );
    }
    HttpResponse::Ok()
        .insert_header(("content-type", "application/json"))
        .body(
            json!({
                "status": "ready",
                "policy": policy_detail(&state),
                "issuers": issuers,
            })
            .to_string(),
        )
}
