//! A per-client-address request rate limit: the first bound on traffic
//! before any token is parsed or any key is touched.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use super::routes::Route;

/// Above this many tracked addresses, idle ones are forgotten.
const MAX_TRACKED: usize = 100_000;

pub(crate) struct Limiter(Option<DefaultKeyedRateLimiter<IpAddr>>, AtomicU64);

impl Limiter {
    pub(crate) fn new(per_second: u32, burst: u32) -> Limiter {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Limiter(limiter, AtomicU64::new(0))
    }

    fn allows(&self, ip: IpAddr) -> bool {
        let Some(limiter) = &self.0 else { return true };
        if limiter.len() > MAX_TRACKED {
            // At most one scan a second, whoever asks: the scan is O(keys).
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let last = self.1.load(Ordering::Relaxed);
            if now > last
                && self
                    .1
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                limiter.retain_recent();
            }
        }
        limiter.check_key(&client_key(ip)).is_ok()
    }
}

/// One key per IPv4 address, and per /64 for IPv6: a single host usually
/// holds a whole /64, and keying by address would let it rotate freely.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

pub(crate) async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let allowed = match (req.app_data::<web::Data<Limiter>>(), req.peer_addr()) {
        (Some(limiter), Some(peer)) => limiter.allows(peer.ip()),
        _ => true,
    };
    // Probes are never limited: a busy pod must still answer its kubelet.
    if !allowed && !Route::from_path(req.path()).is_some_and(Route::is_probe) {
        let response = ApiError::RateLimited.error_response();
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_key_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let limiter = Limiter::new(1, 1);
        assert!(limiter.allows(a));
        assert!(!limiter.allows(b), "same /64, same bucket");
        assert!(limiter.allows(c));
    }
}
