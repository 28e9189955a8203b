//! The HTTP service: routes, shared state, limits, and the application that
//! binds it. `Application::build` gives a bound server whose `port()` tests
//! read after binding port 0.

mod dev_session;
mod error;
mod health;
pub(crate) mod params;
mod rate_limit;
mod request_log;
mod routes;
mod token;

use std::net::TcpListener;
use std::sync::{Arc, RwLock};

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpRequest, HttpServer};
use prometheus_client::collector::Collector;
use tracing_actix_web::TracingLogger;

pub(crate) use error::{error_response, ApiError};

use crate::clock::{self, SharedClock};
use crate::config::Settings;
use crate::dev::DevIssuer;
use crate::keep_alive;
use crate::metrics::{Metrics, PolicyGauges};
use crate::policy::{Policy, PolicyError, ReloadOutcome, Store};
use crate::upstream::Verifier;

/// Headers ably-js and browsers send to an authUrl.
const CORS_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "x-ably-version",
    "ably-agent",
];

pub(crate) struct AppState {
    pub(crate) settings: Settings,
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) clock: SharedClock,
    pub(crate) metrics: Metrics,
    /// Set only by `ably-tokend dev`: serves `/dev/session`.
    pub(crate) dev_issuer: Option<DevIssuer>,
    /// The policy in force and its reloads.
    pub(crate) policy: Store,
    /// A copy of the store's status that metrics read at scrape time.
    policy_gauges: Arc<RwLock<PolicyGauges>>,
}

impl AppState {
    pub(crate) fn new(
        settings: Settings,
        policy: Policy,
        clock: SharedClock,
        extra_metrics: Option<Box<dyn Collector>>,
    ) -> AppState {
        let verifier = Arc::new(Verifier::new(&settings.issuers, clock.clone()));
        let policy = Store::new(policy, clock.clone());
        let policy_gauges = Arc::new(RwLock::new(PolicyGauges::default()));
        let metrics = Metrics::new(Some(verifier.clone()), policy_gauges.clone(), extra_metrics);
        let state = AppState {
            settings,
            verifier,
            clock,
            metrics,
            dev_issuer: None,
            policy,
            policy_gauges,
        };
        state.update_policy_gauges();
        state
    }

    /// Counts a reload (from the watcher or SIGHUP) and refreshes the policy
    /// gauges.
    fn policy_reloaded(&self, outcome: &ReloadOutcome) {
        self.update_policy_gauges();
        self.metrics.policy_reload(outcome.as_str());
    }

    fn update_policy_gauges(&self) {
        let mut gauges = self
            .policy_gauges
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // Read under the gauges' lock, so concurrent reloads (the watcher and
        // SIGHUP) leave the newest status behind.
        let status = self.policy.status();
        *gauges = PolicyGauges {
            healthy: status.healthy(),
            roles: status.roles,
            loaded_unix: status.loaded_unix,
        };
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    /// Loads the policy named in the settings and binds the server.
    pub fn build(settings: Settings) -> Result<Application, StartError> {
        let policy = Policy::load(&settings.policy.path)?;
        Application::build_with(settings, policy, clock::system())
    }

    pub fn build_with(
        settings: Settings,
        policy: Policy,
        clock: SharedClock,
    ) -> Result<Application, StartError> {
        Application::start(AppState::new(settings, policy, clock, None))
    }

    /// The `dev` stack: as `build`, plus the development issuer's `/dev/session`.
    pub fn build_dev(
        settings: Settings,
        policy: Policy,
        issuer: DevIssuer,
        broker_metrics: Box<dyn Collector>,
    ) -> Result<Application, StartError> {
        let mut state = AppState::new(settings, policy, clock::system(), Some(broker_metrics));
        state.dev_issuer = Some(issuer);
        Application::start(state)
    }

    fn start(state: AppState) -> Result<Application, StartError> {
        let addr = state.settings.server.bind;
        let listener =
            TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?
            .port();
        let state = web::Data::new(state);
        let server =
            serve(listener, state.clone()).map_err(|source| StartError::Bind { addr, source })?;
        Ok(Application {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.state.verifier.prefetch();
        let watcher = self.state.settings.policy.watch.then(|| {
            let state = self.state.clone();
            actix_web::rt::spawn(async move {
                state.policy.watch(|o| state.policy_reloaded(o)).await;
            })
        });
        let state = self.state.clone();
        let sighup = actix_web::rt::spawn(async move {
            state
                .policy
                .reload_on_sighup(|o| state.policy_reloaded(o))
                .await;
        });
        let result = self.server.await;
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        sighup.abort();
        result
    }
}

fn serve(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    let server_settings = state.settings.server.clone();
    let limiter = web::Data::new(rate_limit::Limiter::new(
        server_settings.rate_limit_per_second,
        server_settings.rate_limit_burst,
    ));
    let origins = server_settings.cors_allowed_origins.clone();
    let mut server = HttpServer::new(move || {
        let mut cors = Cors::default()
            .allowed_methods(routes::methods())
            .allowed_headers(CORS_HEADERS.iter().copied())
            .expose_headers(["x-ably-errorcode", "x-ably-errormessage"])
            .max_age(600)
            // ably-js marks an authUrl request credentialed when authHeaders
            // carry `authorization`: the listed origins are trusted with it.
            .supports_credentials();
        for origin in &origins {
            cors = cors.allowed_origin(origin);
        }
        App::new()
            .app_data(state.clone())
            .app_data(limiter.clone())
            .wrap(from_fn(rate_limit::middleware))
            .wrap(cors)
            .wrap(
                DefaultHeaders::new()
                    .add((header::CACHE_CONTROL, "no-store"))
                    .add(keep_alive::hint(server_settings.keep_alive)),
            )
            .wrap(TracingLogger::<request_log::RequestLog>::new())
            .configure(|cfg| routes::configure(cfg, state.dev_issuer.is_some()))
            .default_service(web::to(not_found))
    })
    .keep_alive(server_settings.keep_alive)
    .listen(listener)?
    .shutdown_timeout(server_settings.shutdown_timeout.as_secs().max(1));
    if server_settings.workers > 0 {
        server = server.workers(server_settings.workers);
    }
    Ok(server.run())
}

/// A path the server serves, asked with another method, gets 405; any other
/// request gets 404. Both in Ably's error shape.
async fn not_found(req: HttpRequest, state: web::Data<AppState>) -> actix_web::HttpResponse {
    let dev = state.dev_issuer.is_some();
    if routes::served(dev).any(|r| r.path() == req.path()) {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed on {}", req.method(), req.path()),
        );
    }
    actix_web::ResponseError::error_response(&ApiError::NotFound(
        req.path().chars().take(200).collect(),
    ))
}
