//! `ably-tokend broker --sandbox`: the local-sandbox contract ably-js's own
//! test suite provisions its apps through when `ABLY_LOCAL_SANDBOX_URL` is
//! set (ably-js `test/common/modules/testapp_manager.js`, whose fixture is
//! `test-resources/test-app-setup.json` in ably/ably-common):
//!
//! - `POST /apps` with the fixture's `post_apps` body creates an app: a
//!   broker of its own on a fresh loopback port, holding the requested keys
//!   with their capabilities and the fixture channels' presence members
//!   already entered. The answer names the keys (same count and order), the
//!   namespaces (same count) and where to connect (`endpoint`, `port`, `tls`);
//! - `DELETE /apps/{appId}` with Basic auth of the app's first key stops
//!   that broker;
//! - `POST /stats` with Basic auth of an app's first key is accepted and not
//!   kept: the broker's `GET /stats` answers an empty page.
//!
//! Anyone who can reach the sandbox can create apps and then use their
//! keys, so it listens on loopback only, holds a bounded number of apps and
//! reads bounded bodies.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::OsRng;
use rand::TryRngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::hub::{ChannelLimits, Claim, PresenceChange};
use super::message::valid_channel_name;
use super::protocol::{presence_action, AblyError};
use super::{Broker, BrokerHandle, Limits};
use crate::capability::Capability;
use crate::clock::SharedClock;
use crate::config::BrokerSettings;
use crate::signing::ApiKey;

/// Apps alive at once; `DELETE` frees a place.
pub const MAX_APPS: usize = 32;
/// Largest `POST /apps` or `POST /stats` body read.
pub const MAX_BODY: usize = 64 * 1024;
const MAX_KEYS: usize = 16;
const MAX_NAMESPACES: usize = 64;
const MAX_CHANNELS: usize = 64;
/// Presence fixture members per channel: the fixture's own
/// `limits.presence.maxMembers` is 250.
const MAX_FIXTURE_MEMBERS: usize = 250;
/// The connection id the fixture members are entered under; no connection
/// has it, so they stay until the app is deleted.
const FIXTURE_CONNECTION: &str = "sandbox-fixtures";
/// A key asked for without a capability may do everything, as on Ably.
const UNRESTRICTED: &str = r#"{"*":["*"]}"#;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the sandbox creates apps for whoever reaches it and hands out their keys, so it \
         listens on loopback only: bind 127.0.0.1 or [::1], not {0}"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The provisioning server: one control endpoint, one broker per app.
pub struct Sandbox {
    port: u16,
    server: Server,
    commands: mpsc::Receiver<Command>,
    context: AppContext,
}

/// What every app's broker is built from.
struct AppContext {
    settings: BrokerSettings,
    clock: SharedClock,
    limits: Limits,
}

impl Sandbox {
    /// Binds the control endpoint on `bind` (port 0 picks one), refusing any
    /// address that is not loopback. Each app's broker gets `settings`
    /// (history bounds; its bind is replaced by a fresh port on the same
    /// loopback address), `clock` and `limits`.
    pub fn build(
        bind: SocketAddr,
        settings: BrokerSettings,
        clock: SharedClock,
        limits: Limits,
    ) -> Result<Sandbox, SandboxError> {
        if !bind.ip().is_loopback() {
            return Err(SandboxError::NotLoopback(bind));
        }
        let listener = TcpListener::bind(bind).map_err(|e| SandboxError::Bind(bind, e))?;
        let port = listener
            .local_addr()
            .map_err(|e| SandboxError::Bind(bind, e))?
            .port();
        let (tx, commands) = mpsc::channel::<Command>(64);
        let data = web::Data::new(tx);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .route("/apps", web::post().to(create_app))
                .route("/apps/{app_id}", web::delete().to(delete_app))
                .route("/stats", web::post().to(post_stats))
                .default_service(web::to(not_found))
        })
        .workers(1)
        .listen(listener)
        .map_err(|e| SandboxError::Bind(bind, e))?
        .shutdown_timeout(5)
        .run();
        let loopback = SocketAddr::new(bind.ip(), 0);
        Ok(Sandbox {
            port,
            server,
            commands,
            context: AppContext {
                settings: BrokerSettings {
                    bind: loopback,
                    ..settings
                },
                clock,
                limits,
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until stopped (SIGTERM/SIGINT), then stops every app's broker.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Sandbox {
            server,
            mut commands,
            context,
            ..
        } = self;
        // Apps are created and stopped by this one task, on this thread's
        // runtime, so their brokers live exactly as long as the sandbox.
        let (finish, mut finished) = oneshot::channel::<()>();
        let manager = actix_web::rt::spawn(async move {
            let mut apps = Apps::default();
            loop {
                tokio::select! {
                    command = commands.recv() => match command {
                        Some(command) => apps.handle(command, &context),
                        None => break,
                    },
                    _ = &mut finished => break,
                }
            }
            apps
        });
        let result = server.await;
        let _ = finish.send(());
        if let Ok(apps) = manager.await {
            apps.stop_all().await;
        }
        result
    }
}

/// The `post_apps` body as ably-common's `test-app-setup.json` writes it;
/// fields this broker has no use for (`limits`) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostApps {
    #[serde(default)]
    keys: Vec<KeySpec>,
    #[serde(default)]
    namespaces: Vec<Namespace>,
    #[serde(default)]
    channels: Vec<ChannelFixture>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeySpec {
    /// A JSON capability in a string, as Ably's app API takes it.
    capability: Option<String>,
    #[serde(default)]
    revocable_tokens: bool,
}

/// Kept only to be echoed: the broker keeps history on every channel
/// whatever `persisted` says, and has no push or message mutation.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Namespace {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    persisted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    push_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mutable_messages: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelFixture {
    name: String,
    #[serde(default)]
    presence: Vec<MemberFixture>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberFixture {
    client_id: String,
    data: Option<String>,
    encoding: Option<String>,
}

/// An app as asked for, checked: keys parsed, names valid, counts bounded.
struct AppSpec {
    keys: Vec<(Capability, bool)>,
    namespaces: Vec<Namespace>,
    channels: Vec<(String, Vec<PresenceChange>)>,
}

fn bad_request(message: impl Into<String>) -> AblyError {
    AblyError::new(40000, 400, message)
}

impl AppSpec {
    fn parse(body: &[u8]) -> Result<AppSpec, AblyError> {
        let asked: PostApps = serde_json::from_slice(body).map_err(|e| {
            bad_request(format!(
                "POST /apps takes the post_apps object of ably-common's test-app-setup.json: {e}"
            ))
        })?;
        if asked.keys.len() > MAX_KEYS {
            return Err(bad_request(format!("at most {MAX_KEYS} keys per app")));
        }
        if asked.namespaces.len() > MAX_NAMESPACES {
            return Err(bad_request(format!(
                "at most {MAX_NAMESPACES} namespaces per app"
            )));
        }
        if asked.channels.len() > MAX_CHANNELS {
            return Err(bad_request(format!(
                "at most {MAX_CHANNELS} fixture channels per app"
            )));
        }
        let mut keys = Vec::with_capacity(asked.keys.len().max(1));
        for (i, key) in asked.keys.iter().enumerate() {
            let capability = match key.capability.as_deref() {
                None => Capability::parse_json(UNRESTRICTED),
                Some(text) => Capability::parse_json(text),
            }
            .map_err(|e| bad_request(format!("keys[{i}].capability: {e}")))?;
            keys.push((capability, key.revocable_tokens));
        }
        if keys.is_empty() {
            // Ably gives every app a key; DELETE and the broker need one.
            keys.push((Capability::parse_json(UNRESTRICTED).expect("parses"), false));
        }
        let mut channels = Vec::with_capacity(asked.channels.len());
        for (i, channel) in asked.channels.into_iter().enumerate() {
            valid_channel_name(&channel.name)
                .map_err(|why| bad_request(format!("channels[{i}].name: {why}")))?;
            if channel.presence.len() > MAX_FIXTURE_MEMBERS {
                return Err(bad_request(format!(
                    "channels[{i}].presence: at most {MAX_FIXTURE_MEMBERS} members"
                )));
            }
            let mut members = Vec::with_capacity(channel.presence.len());
            for (j, member) in channel.presence.into_iter().enumerate() {
                if member.client_id.is_empty() || member.client_id == "*" {
                    return Err(bad_request(format!(
                        "channels[{i}].presence[{j}].clientId must name one client"
                    )));
                }
                members.push(PresenceChange {
                    action: presence_action::ENTER,
                    client_id: member.client_id,
                    data: member.data.map(Value::String),
                    encoding: member.encoding.map(Value::String),
                    extras: None,
                    id: None,
                });
            }
            channels.push((channel.name, members));
        }
        Ok(AppSpec {
            keys,
            namespaces: asked.namespaces,
            channels,
        })
    }
}

/// What the control endpoint asks of the task that owns the apps.
enum Command {
    Create {
        spec: AppSpec,
        reply: oneshot::Sender<Result<Value, AblyError>>,
    },
    Delete {
        app_id: String,
        credentials: Option<String>,
        reply: oneshot::Sender<Result<(), AblyError>>,
    },
    /// Whether these Basic credentials are some app's first key.
    Knows {
        credentials: Option<String>,
        reply: oneshot::Sender<bool>,
    },
}

struct RunningApp {
    /// The first key, whose `name:secret` authorises DELETE and POST /stats.
    first_key: String,
    server: ServerHandle,
    broker: BrokerHandle,
}

#[derive(Default)]
struct Apps(HashMap<String, RunningApp>);

impl Apps {
    fn handle(&mut self, command: Command, context: &AppContext) {
        match command {
            Command::Create { spec, reply } => {
                let _ = reply.send(self.create(spec, context));
            }
            Command::Delete {
                app_id,
                credentials,
                reply,
            } => match self.remove(&app_id, credentials.as_deref()) {
                Ok(app) => {
                    // Stopping waits for open WebSockets to close; the
                    // answer waits with it, so the app is gone once it comes.
                    actix_web::rt::spawn(async move {
                        stop(app).await;
                        let _ = reply.send(Ok(()));
                    });
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Knows { credentials, reply } => {
                let known = credentials.as_deref().is_some_and(|given| {
                    self.0
                        .values()
                        .any(|app| same_secret(&app.first_key, given))
                });
                let _ = reply.send(known);
            }
        }
    }

    fn create(&mut self, spec: AppSpec, context: &AppContext) -> Result<Value, AblyError> {
        if self.0.len() >= MAX_APPS {
            return Err(AblyError::new(
                42910,
                429,
                format!(
                    "the sandbox holds at most {MAX_APPS} apps: DELETE /apps/{{appId}} one first"
                ),
            ));
        }
        let app_id = loop {
            let id = Alphanumeric.sample_string(&mut rand::rng(), 6);
            if !self.0.contains_key(&id) {
                break id;
            }
        };
        let mut keys = Vec::with_capacity(spec.keys.len());
        let mut described = Vec::with_capacity(spec.keys.len());
        for (capability, revocable) in spec.keys {
            let key_id = Alphanumeric.sample_string(&mut rand::rng(), 6);
            let mut secret = [0u8; 24];
            OsRng
                .try_fill_bytes(&mut secret)
                .expect("the operating system's random source is available");
            let secret = URL_SAFE_NO_PAD.encode(secret);
            let key_name = format!("{app_id}.{key_id}");
            let key_str = format!("{key_name}:{secret}");
            let key: ApiKey = key_str.parse().expect("a generated key is well formed");
            described.push(json!({
                "id": key_id,
                "appId": app_id,
                "keyName": key_name,
                "keySecret": secret,
                "keyStr": key_str,
                "capability": capability.to_canonical_json(),
                "revocableTokens": revocable,
                "status": 0,
            }));
            keys.push(key.with_capability(capability));
        }
        let first_key = keys[0].expose_whole();
        let broker = Broker::build(
            &context.settings,
            keys,
            context.clock.clone(),
            context.limits.clone(),
        )
        .map_err(|e| {
            tracing::warn!(error = %e, "sandbox: cannot start an app's broker");
            AblyError::new(50000, 500, format!("cannot start the app's broker: {e}"))
        })?;
        let limits = ChannelLimits {
            max_channels: context.limits.max_channels,
            per_connection: context.limits.max_channels_per_connection,
        };
        for (i, (channel, members)) in spec.channels.into_iter().enumerate() {
            if members.is_empty() {
                continue;
            }
            // The fixture's limits are far below the broker's; a refusal
            // here would leave an app without its fixtures, so it is an error.
            broker
                .state
                .hub
                .presence(
                    &channel,
                    FIXTURE_CONNECTION,
                    &format!("{FIXTURE_CONNECTION}:{i}"),
                    members,
                    Claim::Visit,
                    limits,
                )
                .map_err(|_| {
                    AblyError::new(50000, 500, "the broker's channel limit refused a fixture")
                })?;
        }
        let port = broker.port();
        let app = RunningApp {
            first_key,
            server: broker.server.handle(),
            broker: broker.handle(),
        };
        actix_web::rt::spawn(broker.run_until_stopped());
        tracing::info!(app_id = %app_id, port, "sandbox: app created");
        self.0.insert(app_id.clone(), app);
        Ok(json!({
            "accountId": "sandbox",
            "appId": app_id,
            "keys": described,
            "namespaces": spec.namespaces,
            "endpoint": context.settings.bind.ip().to_string(),
            "port": port,
            "tls": false,
        }))
    }

    fn remove(&mut self, app_id: &str, credentials: Option<&str>) -> Result<RunningApp, AblyError> {
        let app = self.0.get(app_id).ok_or_else(|| {
            AblyError::new(
                40400,
                404,
                "no such app: it was never created or is deleted",
            )
        })?;
        if !credentials.is_some_and(|given| same_secret(&app.first_key, given)) {
            return Err(AblyError::new(
                40101,
                401,
                "DELETE /apps/{appId} needs Authorization: Basic with the app's first key",
            ));
        }
        tracing::info!(app_id, "sandbox: app deleted");
        Ok(self.0.remove(app_id).expect("looked up above"))
    }

    async fn stop_all(self) {
        for (_, app) in self.0 {
            stop(app).await;
        }
    }
}

async fn stop(app: RunningApp) {
    // Connections say DISCONNECTED and close, then the server stops.
    app.broker.disconnect_all();
    app.server.stop(true).await;
}

fn same_secret(expected: &str, given: &str) -> bool {
    crate::signing::constant_time_eq(expected.as_bytes(), given.as_bytes())
}

/// The `name:secret` of `Authorization: Basic`, if well formed.
fn basic_credentials(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()
}

async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, AblyError> {
    let stopping = || AblyError::new(50300, 503, "the sandbox is stopping");
    let (reply, answer) = oneshot::channel();
    commands
        .send(command(reply))
        .await
        .map_err(|_| stopping())?;
    answer.await.map_err(|_| stopping())
}

async fn create_app(
    body: web::Bytes,
    commands: web::Data<mpsc::Sender<Command>>,
) -> Result<HttpResponse, AblyError> {
    let spec = AppSpec::parse(&body)?;
    let app = ask(&commands, |reply| Command::Create { spec, reply }).await??;
    Ok(HttpResponse::build(StatusCode::CREATED).json(app))
}

async fn delete_app(
    req: HttpRequest,
    path: web::Path<String>,
    commands: web::Data<mpsc::Sender<Command>>,
) -> Result<HttpResponse, AblyError> {
    let app_id = path.into_inner();
    let credentials = basic_credentials(&req);
    ask(&commands, |reply| Command::Delete {
        app_id,
        credentials,
        reply,
    })
    .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Accepted from an app's first key and not kept (see the module comment).
async fn post_stats(
    req: HttpRequest,
    body: web::Bytes,
    commands: web::Data<mpsc::Sender<Command>>,
) -> Result<HttpResponse, AblyError> {
    let credentials = basic_credentials(&req);
    if !ask(&commands, |reply| Command::Knows { credentials, reply }).await? {
        return Err(AblyError::new(
            40101,
            401,
            "POST /stats needs Authorization: Basic with an app's first key",
        ));
    }
    serde_json::from_slice::<Vec<Value>>(&body)
        .map_err(|e| bad_request(format!("POST /stats takes a JSON array of stats: {e}")))?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(json!([])))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let path: String = req.path().chars().take(100).collect();
    actix_web::ResponseError::error_response(&AblyError::new(
        40400,
        404,
        format!(
            "the sandbox answers POST /apps, DELETE /apps/{{appId}} and POST /stats, not {} {path}",
            req.method()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = r#"{
        "limits": { "presence": { "maxMembers": 250 } },
        "keys": [
            {},
            { "capability": "{ \"channel0\":[\"publish\"], \"channel6\":[\"*\"] }" },
            { "capability": "{ \"[*]*\":[\"*\"] }" },
            { "revocableTokens": true }
        ],
        "namespaces": [{ "id": "persisted", "persisted": true }, { "id": "mutable", "mutableMessages": true }],
        "channels": [{
            "name": "persisted:presence_fixtures",
            "presence": [
                { "clientId": "client_bool", "data": "true" },
                { "clientId": "client_decoded", "data": "{\"a\":1}", "encoding": "json" }
            ]
        }]
    }"#;

    #[test]
    fn parses_the_fixture_into_keys_namespaces_and_members() {
        let spec = AppSpec::parse(FIXTURE.as_bytes()).unwrap();
        assert_eq!(spec.keys.len(), 4);
        assert_eq!(spec.keys[0].0.to_canonical_json(), r#"{"*":["*"]}"#);
        assert!(spec.keys[1]
            .0
            .allows("channel0", crate::capability::Operation::Publish));
        assert!(!spec.keys[1]
            .0
            .allows("channel0", crate::capability::Operation::Subscribe));
        assert!(spec.keys[3].1, "revocableTokens is kept");
        assert_eq!(spec.namespaces[1].mutable_messages, Some(true));
        let (name, members) = &spec.channels[0];
        assert_eq!(name, "persisted:presence_fixtures");
        assert_eq!(members[1].client_id, "client_decoded");
        assert_eq!(members[1].encoding, Some(json!("json")));
        assert_eq!(members[0].data, Some(json!("true")));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let refused = |body: &str| AppSpec::parse(body.as_bytes()).err().unwrap().message;
        assert!(refused(r#"{"keys":[{"capability":"{\"a\":[\"fly\"]}"}]}"#)
            .contains("keys[0].capability"));
        assert!(refused(r#"{"keys":"many"}"#).contains("post_apps"));
        assert!(refused(r#"{"channels":[{"name":""}]}"#).contains("channels[0].name"));
        assert!(
            refused(r#"{"channels":[{"name":"c","presence":[{"clientId":"*"}]}]}"#)
                .contains("presence[0].clientId")
        );
        let many = format!(r#"{{"keys":[{}]}}"#, vec!["{}"; MAX_KEYS + 1].join(","));
        assert!(refused(&many).contains("at most 16 keys"));
    }

    #[test]
    fn an_app_without_keys_gets_one() {
        assert_eq!(AppSpec::parse(b"{}").unwrap().keys.len(), 1);
    }
}
