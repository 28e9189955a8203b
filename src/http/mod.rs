//! The HTTP service: routes, shared state, limits, and the application that
//! binds it. `Application::build` gives a bound server whose `port()` tests
//! read after binding port 0.

mod dev_session;
mod error;
mod health;
pub(crate) mod params;
mod rate_limit;
mod request_log;
mod token;

use std::net::TcpListener;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpRequest, HttpServer};
use tracing_actix_web::TracingLogger;

pub use error::{error_response, ApiError};

use crate::broker::BrokerState;
use crate::clock::{self, SharedClock};
use crate::config::Settings;
use crate::dev::DevIssuer;
use crate::metrics::{Metrics, PolicyGauges};
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
    pub verifier: Arc<Verifier>,
    pub clock: SharedClock,
    pub metrics: Metrics,
    /// Set only by `ably-tokend dev`: serves `/dev/session`.
    pub dev_issuer: Option<DevIssuer>,
    policy: RwLock<Arc<Policy>>,
    policy_gauges: Arc<RwLock<PolicyGauges>>,
    reload: Mutex<ReloadState>,
}

#[derive(Default)]
struct ReloadState {
    /// Fingerprint of the file content last tried, applied or refused, so a
    /// broken file is reported once per change rather than on every poll.
    fingerprint: Option<[u8; 32]>,
    last_error: Option<String>,
}

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    Applied,
    Unchanged,
    Refused(PolicyError),
}

impl AppState {
    pub fn new(
        settings: Settings,
        policy: Policy,
        clock: SharedClock,
        broker: Option<Arc<BrokerState>>,
    ) -> AppState {
        let verifier = Arc::new(Verifier::new(&settings.issuers, clock.clone()));
        let policy_gauges = Arc::new(RwLock::new(PolicyGauges {
            healthy: true,
            roles: policy.role_names().count(),
            loaded_unix: clock.now_secs(),
        }));
        let metrics = Metrics::new(Some(verifier.clone()), policy_gauges.clone(), broker);
        let fingerprint = std::fs::read(&policy.source)
            .ok()
            .map(|bytes| fingerprint(&bytes));
        AppState {
            settings,
            verifier,
            clock,
            metrics,
            dev_issuer: None,
            policy: RwLock::new(Arc::new(policy)),
            policy_gauges,
            reload: Mutex::new(ReloadState {
                fingerprint,
                last_error: None,
            }),
        }
    }

    /// The policy in force; a request keeps the one it started with.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the last reload was refused, while the previous policy serves.
    pub fn policy_error(&self) -> Option<String> {
        self.reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error
            .clone()
    }

    /// Re-reads the policy file: a valid new policy is swapped in whole; a
    /// broken one is refused and the one in force keeps serving. With
    /// `force`, an unchanged file is re-applied too (SIGHUP).
    pub fn reload_policy(&self, force: bool) -> ReloadOutcome {
        let path = self.policy().source.clone();
        let mut reload = self.reload.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::fs::metadata(&path)
            .ok()
            .filter(|m| m.len() <= crate::policy::MAX_POLICY_BYTES)
            .and_then(|_| std::fs::read(&path).ok());
        let print = bytes.as_deref().map(fingerprint);
        if !force && print.is_some() && print == reload.fingerprint {
            return ReloadOutcome::Unchanged;
        }
        reload.fingerprint = print;
        let outcome = match Policy::load(&path) {
            Ok(policy) => {
                let roles = policy.role_names().count();
                *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
                let mut gauges = self
                    .policy_gauges
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                *gauges = PolicyGauges {
                    healthy: true,
                    roles,
                    loaded_unix: self.clock.now_secs(),
                };
                reload.last_error = None;
                tracing::info!(file = %path.display(), roles, "policy reloaded");
                ReloadOutcome::Applied
            }
            Err(error) => {
                self.policy_gauges
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .healthy = false;
                reload.last_error = Some(error.to_string());
                tracing::error!(
                    file = %error.file.display(),
                    line = error.line,
                    field = %error.path,
                    reason = %error.reason,
                    "policy reload refused; the previous policy keeps serving"
                );
                ReloadOutcome::Refused(error)
            }
        };
        self.metrics.policy_reload(match outcome {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Refused(_) => "refused",
        });
        outcome
    }
}

fn fingerprint(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
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
        broker: Arc<BrokerState>,
    ) -> Result<Application, StartError> {
        let mut state = AppState::new(settings, policy, clock::system(), Some(broker));
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
        let watcher = self
            .state
            .settings
            .policy
            .watch
            .then(|| actix_web::rt::spawn(watch_policy(self.state.clone())));
        let sighup = actix_web::rt::spawn(reload_on_sighup(self.state.clone()));
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
            .allowed_methods([Method::GET, Method::POST])
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
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            .wrap(TracingLogger::<request_log::RequestLog>::new())
            .route("/api/ably-token", web::get().to(token::ably_token))
            .route("/api/ably-token", web::post().to(token::ably_token))
            .route("/api/ably-jwt", web::get().to(token::ably_jwt))
            .route("/api/ably-jwt", web::post().to(token::ably_jwt))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(health::metrics))
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
    let known = [
        "/api/ably-token",
        "/api/ably-jwt",
        "/healthz",
        "/readyz",
        "/metrics",
    ];
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

/// How often the policy file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A change must hold this long before it is applied: editors and
/// Kubernetes ConfigMap updates write in more than one step.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Polls the policy file. Polling the path (rather than subscribing to inode
/// events) follows Kubernetes' ConfigMap updates, which swap a symlink.
async fn watch_policy(state: web::Data<AppState>) {
    let mut seen = read_fingerprint(&state);
    loop {
        actix_web::rt::time::sleep(WATCH_INTERVAL).await;
        let now = read_fingerprint(&state);
        if now == seen {
            continue;
        }
        actix_web::rt::time::sleep(DEBOUNCE).await;
        let settled = read_fingerprint(&state);
        if settled != now {
            continue;
        }
        seen = settled;
        state.reload_policy(false);
    }
}

fn read_fingerprint(state: &AppState) -> Option<[u8; 32]> {
    std::fs::read(&state.policy().source)
        .ok()
        .map(|b| fingerprint(&b))
}

async fn reload_on_sighup(state: web::Data<AppState>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; policy reload on signal is off");
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the policy");
        state.reload_policy(true);
    }
}
