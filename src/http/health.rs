//! Liveness and readiness.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::error_response_with;
use super::AppState;
use crate::upstream::Readiness;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("content-type", "application/json"))
        .body(r#"{"status":"ok"}"#)
}

/// Ready once a policy is loaded and every JWKS issuer has usable keys.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let policy = state.policy();
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
            })
        })
        .collect();
    if !problems.is_empty() {
        // A probe must not wait on the network, but it may start the fetch.
        state.verifier.prefetch();
        let mut extra = serde_json::Map::new();
        extra.insert("status".into(), json!("not_ready"));
        extra.insert(
            "policy".into(),
            json!({"source": policy.source.display().to_string()}),
        );
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
                "policy": {"source": policy.source.display().to_string()},
                "issuers": issuers,
            })
            .to_string(),
        )
}
