//! The HTTP service: routes, shared state, limits, and the application that
//! binds it. `Application::build` gives a bound server whose `port()` tests
//! read after binding port 0.

mod dev_session;
mod error;
mod health;
mod params;
mod rate_limit;
mod request_log;
mod token;

use std::net::TcpListener;
use std::sync::{Arc, RwLock};

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpRequest, HttpServer};
use tracing_actix_web::TracingLogger;

pub use error::{error_response, ApiError};

use crate::clock::{self, SharedClock};
use crate::config::Settings;
use crate::dev::DevIssuer;
use crate::policy::{Policy, PolicyError};
use crate::upstream::Verifier;

/// Headers ably-js and browsers send to an authUrl.
const CORS_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "x-ably-version",
    "ably-agent",
];

pub struct AppState {
    pub settings: Settings,
    pub verifier: Verifier,
    pub clock: SharedClock,
    /// Set only by `ably-tokend dev`: serves `/dev/session`.
    pub dev_issuer: Option<DevIssuer>,
    policy: RwLock<Arc<Policy>>,
}

impl AppState {
    pub fn new(settings: Settings, policy: Policy, clock: SharedClock) -> AppState {
        let verifier = Verifier::new(&settings.issuers, clock.clone());
        AppState {
            settings,
            verifier,
            clock,
            dev_issuer: None,
            policy: RwLock::new(Arc::new(policy)),
        }
    }

    /// The policy in force; a request keeps the one it started with.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
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
        Application::start(AppState::new(settings, policy, clock))
    }

    /// The `dev` stack: as `build`, plus the development issuer's `/dev/session`.
    pub fn build_dev(
        settings: Settings,
        policy: Policy,
        issuer: DevIssuer,
    ) -> Result<Application, StartError> {
        let mut state = AppState::new(settings, policy, clock::system());
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

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.state.verifier.prefetch();
        self.server.await
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
            .allowed_methods([Method::GET, Method::POST])
            .allowed_headers(CORS_HEADERS.iter().copied())
            .expose_headers(["x-ably-errorcode", "x-ably-errormessage"])
            .max_age(600);
        for origin in &origins {
            cors = cors.allowed_origin(origin);
        }
        App::new()
            .app_data(state.clone())
            .app_data(limiter.clone())
            .wrap(from_fn(rate_limit::middleware))
            .wrap(cors)
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            .wrap(TracingLogger::<request_log::RequestLog>::new())
            .route("/api/ably-token", web::get().to(token::ably_token))
            .route("/api/ably-token", web::post().to(token::ably_token))
            .route("/api/ably-jwt", web::get().to(token::ably_jwt))
            .route("/api/ably-jwt", web::post().to(token::ably_jwt))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .configure(|cfg| {
                if state.dev_issuer.is_some() {
                    cfg.route("/dev/session", web::get().to(dev_session::mint));
                }
            })
            .default_service(web::to(not_found))
    })
    .listen(listener)?
    .shutdown_timeout(server_settings.shutdown_timeout.as_secs().max(1));
    if server_settings.workers > 0 {
        server = server.workers(server_settings.workers);
    }
    Ok(server.run())
}

async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    let known = ["/api/ably-token", "/api/ably-jwt", "/healthz", "/readyz"];
    if known.contains(&req.path()) {
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
