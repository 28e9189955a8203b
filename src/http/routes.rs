//! The sidecar's routes in one table. Registration, the 405 answer for a
//! known path, the metrics' route label and the probe exemptions all read
//! it, so a route cannot be added to one of them and missed by another.

use actix_web::http::Method;
use actix_web::web;

use super::{dev_session, health, token};

const GET: &[Method] = &[Method::GET];
const GET_POST: &[Method] = &[Method::GET, Method::POST];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    AblyToken,
    AblyJwt,
    Healthz,
    Readyz,
    Metrics,
    /// Session tokens from the development issuer: `ably-tokend dev` only.
    DevSession,
}

impl Route {
    pub(crate) const ALL: [Route; 6] = [
        Route::AblyToken,
        Route::AblyJwt,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::DevSession,
    ];

    pub(crate) const fn path(self) -> &'static str {
        match self {
            Route::AblyToken => "/api/ably-token",
            Route::AblyJwt => "/api/ably-jwt",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::DevSession => "/dev/session",
        }
    }

    /// ably-js calls an authUrl with GET, or POST when `authMethod` says so.
    pub(crate) fn methods(self) -> &'static [Method] {
        match self {
            Route::AblyToken | Route::AblyJwt => GET_POST,
            Route::Healthz | Route::Readyz | Route::Metrics | Route::DevSession => GET,
        }
    }

    /// Served only when the dev stack's issuer is present; otherwise the path
    /// is unknown (404), as if the route did not exist.
    pub(crate) const fn dev_only(self) -> bool {
        matches!(self, Route::DevSession)
    }

    /// Kubelet probes: never rate limited, and logged at debug level while
    /// they succeed.
    pub(crate) const fn is_probe(self) -> bool {
        matches!(self, Route::Healthz | Route::Readyz)
    }

    pub(crate) fn from_path(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.path() == path)
    }

    /// The handler, without a method guard (`configure` adds one per method).
    fn handler(self) -> actix_web::Route {
        match self {
            Route::AblyToken => web::to(token::ably_token),
            Route::AblyJwt => web::to(token::ably_jwt),
            Route::Healthz => web::to(health::healthz),
            Route::Readyz => web::to(health::readyz),
            Route::Metrics => web::to(health::metrics),
            Route::DevSession => web::to(dev_session::mint),
        }
    }
}

/// The routes this server serves: all of them with the dev issuer, all but
/// the dev-only ones without.
pub(crate) fn served(dev: bool) -> impl Iterator<Item = Route> {
    Route::ALL.into_iter().filter(move |r| dev || !r.dev_only())
}

/// Registers one route per path and method. Each is its own resource with a
/// method guard, so a wrong method falls through to the default service,
/// which answers 405 in Ably's error shape (see `super::not_found`).
pub(crate) fn configure(cfg: &mut web::ServiceConfig, dev: bool) {
    for route in served(dev) {
        for method in route.methods() {
            cfg.route(route.path(), route.handler().method(method.clone()));
        }
    }
}

/// Every method some route answers: what a CORS preflight may allow.
pub(crate) fn methods() -> Vec<Method> {
    let mut all: Vec<Method> = Vec::new();
    for method in Route::ALL.into_iter().flat_map(Route::methods) {
        if !all.contains(method) {
            all.push(method.clone());
        }
    }
    all
}

/// The metrics label for a request path: a route's path, or `other`, so a
/// scan of random paths cannot create unbounded series.
pub(crate) fn label(path: &str) -> &'static str {
    Route::from_path(path).map_or("other", Route::path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_found_by_its_path_and_labelled_with_it() {
        for route in Route::ALL {
            assert_eq!(Route::from_path(route.path()), Some(route));
            assert_eq!(label(route.path()), route.path());
            assert!(!route.methods().is_empty());
        }
    }

    #[test]
    fn cors_allows_exactly_the_methods_the_routes_answer() {
        assert_eq!(methods(), vec![Method::GET, Method::POST]);
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(label("/wp-admin.php"), "other");
        assert_eq!(label("/api/ably-token/"), "other");
        assert_eq!(Route::from_path("/dev/session/x"), None);
    }

    #[test]
    fn the_dev_session_is_served_only_by_the_dev_stack() {
        assert!(served(true).any(|r| r == Route::DevSession));
        assert!(!served(false).any(|r| r == Route::DevSession));
        assert_eq!(served(false).count(), Route::ALL.len() - 1);
    }
}
