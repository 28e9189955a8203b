//! A per-client-address request rate limit: the first bound on traffic
//! before any token is parsed or any key is touched.

use std::net::IpAddr;
use std::num::NonZeroU32;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;

/// Above this many tracked addresses, idle ones are forgotten.
const MAX_TRACKED: usize = 100_000;

pub struct Limiter(Option<DefaultKeyedRateLimiter<IpAddr>>);

impl Limiter {
    pub fn new(per_second: u32, burst: u32) -> Limiter {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Limiter(limiter)
    }

    fn allows(&self, ip: IpAddr) -> bool {
        let Some(limiter) = &self.0 else { return true };
        if limiter.len() > MAX_TRACKED {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).is_ok()
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let allowed = match (req.app_data::<web::Data<Limiter>>(), req.peer_addr()) {
        (Some(limiter), Some(peer)) => limiter.allows(peer.ip()),
        _ => true,
    };
    // Probes are never limited: a busy pod must still answer its kubelet.
    if !allowed && !matches!(req.path(), "/healthz" | "/readyz") {
        let response = ApiError::RateLimited.error_response();
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
