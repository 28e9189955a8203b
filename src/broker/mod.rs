//! The embedded broker: enough of Ably's REST and realtime protocol for the
//! unmodified `ably` npm client to work against it on loopback, enforcing the
//! capabilities of the tokens it is given with the same code the sidecar
//! uses to grant them. State lives in memory, bounded. A development and test
//! tool: production traffic goes to Ably.

pub(crate) mod auth;
pub(crate) mod connection;
pub(crate) mod continuity;
pub(crate) mod delta;
pub(crate) mod filter;
pub(crate) mod hub;
pub(crate) mod inbound;
pub(crate) mod liveness;
pub(crate) mod message;
mod metrics;
pub(crate) mod protocol;
pub(crate) mod rest;
mod sandbox;
pub(crate) mod tables;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::clock::SharedClock;
use crate::config::BrokerSettings;
use crate::keep_alive;
use crate::signing::ApiKey;
use auth::BrokerAuth;
use hub::{HistoryLimits, Hub};
use inbound::{ConnectParams, Presented};
use protocol::AblyError;
pub use sandbox::{
    Sandbox, SandboxError, MAX_APPS as SANDBOX_MAX_APPS, MAX_BODY as SANDBOX_MAX_BODY,
};

/// Limits that keep one client from exhausting the broker.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Channels the broker holds state for, across all connections.
    pub max_channels: usize,
    pub max_channels_per_connection: usize,
    /// Bytes of name, data, clientId and extras in one publish.
    pub max_message_size: usize,
    /// Largest WebSocket frame read.
    pub max_frame_size: usize,
    /// Frames queued for a connection before it is dropped as too slow.
    pub outbox_frames: usize,
    /// How long one write may wait on a client that does not read.
    pub send_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_channels: 100_000,
            max_channels_per_connection: 200,
            max_message_size: 65_536,
            max_frame_size: 256 * 1024,
            outbox_frames: 1_000,
            send_timeout: Duration::from_secs(10),
        }
    }
}

pub(crate) struct BrokerState {
    pub(crate) hub: Hub,
    pub(crate) auth: BrokerAuth,
    pub(crate) limits: Limits,
    pub(crate) timings: liveness::Timings,
    /// Members of connections that dropped without CLOSE, until they leave.
    pub(crate) departures: liveness::Departures,
    connections: AtomicUsize,
    /// Open connections, and those closed within the connection-state TTL,
    /// by key: what a resume (RTN15b) or recover (RTN16k) continues.
    pub(crate) sessions: continuity::Sessions,
    /// Flips to true when the broker stops: every connection then sends
    /// DISCONNECTED and closes, so clients reconnect elsewhere or later.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// An open connection as a REST publish on its behalf sees it (TM2h,
/// <https://ably.com/docs/pub-sub/advanced#publish-on-behalf>).
#[derive(Debug, Clone)]
pub(crate) struct Open {
    pub(crate) id: String,
    pub(crate) client_id: Option<String>,
}

/// Held while a connection counts against `max_connections`.
pub(crate) struct Slot(Arc<BrokerState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl BrokerState {
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let admitted = self
            .connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limits.max_connections).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| Slot(self.clone()))
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Tells every connection to say DISCONNECTED and close.
    pub(crate) fn disconnect_all(&self) {
        self.stopping.send_replace(true);
    }

    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Forgets what expired: history past its age, channels left empty,
    /// TokenRequest nonces out of their window, closed connections past the
    /// connection-state TTL; and gives back the room a burst left the
    /// tables (`tables::GiveBack`). The broker's sweeper calls it every 10 s.
    pub(crate) fn sweep(&self) {
        self.hub.sweep();
        self.auth.sweep();
        self.sessions.sweep();
        self.departures.sweep();
    }

    /// The size of every table the broker keeps (see `tables`).
    pub(crate) fn tables(&self) -> tables::Tables {
        let (open_sessions, resumable, resumable_expiry) = self.sessions.sizes();
        tables::Tables {
            connections: self.connection_count(),
            open_sessions,
            resumable,
            resumable_expiry,
            presence_departures: self.departures.pending(),
            token_nonces: self.auth.live_nonces(),
            hub: self.hub.tables(),
        }
    }

    /// The open connection whose private key is `key`, if any.
    pub(crate) fn open_connection(&self, key: &str) -> Option<Open> {
        self.sessions
            .live(key)
            .map(|(id, client_id)| Open { id, client_id })
    }
}

/// Reaches a running broker from outside its task.
#[derive(Clone)]
pub struct BrokerHandle(Arc<BrokerState>);

impl BrokerHandle {
    /// Tells every connection to say DISCONNECTED and close, as a stopping
    /// broker does, so clients reconnect later instead of waiting on a dead socket.
    pub fn disconnect_all(&self) {
        self.0.disconnect_all();
    }
}

pub struct Broker {
    port: u16,
    server: Server,
    state: Arc<BrokerState>,
}

impl Broker {
    /// Binds the broker; `settings.bind` may use port 0.
    pub fn build(
        settings: &BrokerSettings,
        keys: Vec<ApiKey>,
        clock: SharedClock,
        limits: Limits,
    ) -> std::io::Result<Broker> {
        let listener = TcpListener::bind(settings.bind)?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(BrokerState {
            hub: Hub::new(
                HistoryLimits {
                    max_messages: settings.history_max_messages,
                    max_age: settings.history_max_age,
                },
                clock.clone(),
            ),
            auth: BrokerAuth::new(keys, clock.clone()),
            limits,
            timings: liveness::Timings {
                max_idle_interval: settings.max_idle_interval,
            },
            departures: liveness::Departures::new(settings.presence_grace),
            connections: AtomicUsize::new(0),
            sessions: continuity::Sessions::new(connection::CONNECTION_STATE_TTL_MS, clock),
            stopping: tokio::sync::watch::Sender::new(false),
        });
        let data = web::Data::from(state.clone());
        let registry = web::Data::new(metrics::registry(state.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(registry.clone())
                .route("/metrics", web::get().to(metrics::serve))
                .app_data(web::PayloadConfig::new(rest::MAX_REST_BODY))
                .wrap(actix_cors::Cors::permissive())
                .wrap(DefaultHeaders::new().add(keep_alive::hint(keep_alive::DEFAULT)))
                .route("/", web::get().to(websocket))
                .route("/time", web::get().to(rest::time))
                .route(
                    "/keys/{key_name}/requestToken",
                    web::post().to(rest::request_token),
                )
                .route(
                    "/channels/{channel}/messages",
                    web::post().to(rest::publish),
                )
                .route("/channels/{channel}/messages", web::get().to(rest::history))
                .route(
                    "/channels/{channel}/presence",
                    web::get().to(rest::presence),
                )
                .route(
                    "/channels/{channel}/presence/history",
                    web::get().to(rest::presence_history),
                )
                .route("/channels/{channel}", web::get().to(rest::channel_status))
                .route("/messages", web::post().to(rest::batch_publish))
                .route("/stats", web::get().to(rest::stats))
                .default_service(web::to(rest::not_found))
        })
        // Frames are small and latency-bound: without TCP_NODELAY, Nagle's
        // algorithm (RFC 896) holds a frame while an earlier one awaits the
        // client's delayed ACK (RFC 1122 §4.2.3.2), tens of milliseconds.
        .tcp_nodelay(true)
        .keep_alive(keep_alive::DEFAULT)
        .listen(listener)?
        .shutdown_timeout(5)
        .run();
        Ok(Broker {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that outlives `run_until_stopped` taking the broker.
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle(self.state.clone())
    }

    /// The broker's gauges and counters, read at scrape time, for another
    /// registry (the sidecar's in `ably-tokend dev`).
    pub fn metrics_collector(&self) -> Box<dyn prometheus_client::collector::Collector> {
        Box::new(metrics::BrokerCollector(self.state.clone()))
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // actix stops accepting on SIGTERM/SIGINT and waits for open
        // responses, which WebSockets are: tell them to finish first.
        let signalled = self.state.clone();
        let signals = actix_web::rt::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            signalled.disconnect_all();
        });
        let state = self.state.clone();
        let sweeper = actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                state.sweep();
                release_freed_memory();
            }
        });
        let departures = actix_web::rt::spawn(liveness::run(self.state.clone()));
        let result = self.server.await;
        self.state.disconnect_all();
        departures.abort();
        sweeper.abort();
        signals.abort();
        result
    }
}

/// Hands the memory the sweep just freed back to the operating system. glibc's
/// allocator keeps freed chunks in its arenas, so without this the RSS of a
/// broker that went through a burst of connections and token requests stays
/// at the burst's peak long after the entries expired: measured after an
/// 8-minute soak and 150 s with no load, 105.7 MB (benches/soak; a trim by
/// hand on a shorter run: 56.5 → 19.3 MB). Every 10 s, with the sweep.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: malloc_trim(3) only returns free memory at the top of the heap
    // and free pages inside it to the OS; it takes no pointers and is
    // thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<BrokerState>,
) -> actix_web::Result<HttpResponse> {
    if req.headers().get(header::UPGRADE).is_none() {
        return Ok(actix_web::ResponseError::error_response(&AblyError::new(
            40000,
            400,
            "this is the broker's realtime endpoint: connect with a WebSocket",
        )));
    }
    let (params, presented) = ConnectParams::from_query(req.query_string());
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    let asked = params.client_id.as_deref();
    let credentials = match presented {
        Presented::Token(token) => state
            .auth
            .authenticate_token(&token)
            .and_then(|c| message::resolve_client_id(&c, asked, false).map(|id| (c, id))),
        Presented::Key(_) if !loopback => Err(AblyError::new(
            40101,
            401,
            "API key auth is accepted only from loopback",
        )),
        Presented::Key(key) => state
            .auth
            .authenticate_key(&key)
            .and_then(|c| message::resolve_client_id(&c, asked, true).map(|id| (c, id))),
        Presented::Nothing => Err(AblyError::new(
            40101,
            401,
            "no credentials: connect with access_token or key",
        )),
    };
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let state = state.into_inner();
    actix_web::rt::spawn(connection::run(session, stream, state, params, credentials));
    Ok(response)
}
