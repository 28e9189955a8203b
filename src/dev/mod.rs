//! `ably-tokend dev`: a zero-setup local stack on loopback. The sidecar, the
//! embedded broker, a generated API key and a development issuer that mints
//! session tokens, built in one call so that the CLI and the tests run the
//! same thing.

mod issuer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use issuer::DevIssuer;

use crate::broker::{Broker, Limits};
use crate::clock;
use crate::config::{
    check_cors_origins, AblySettings, BrokerSettings, ConfigError, LogFormat, LogSettings,
    PolicySettings, ServerSettings, Settings,
};
use crate::http::{Application, StartError};
use crate::policy::{Policy, PolicyError};
use crate::signing::ApiKey;

/// The policy file `dev` uses when none is named and the file exists.
const DEFAULT_POLICY_FILE: &str = "policies/default.toml";
/// Used when `policies/default.toml` is absent, so `dev` runs anywhere.
const EXAMPLE_POLICY: &str = include_str!("../../policies/default.toml");

/// What the stack is built from. `Default` binds both servers to free ports.
#[derive(Debug, Clone, Default)]
pub struct DevOptions {
    /// The sidecar's port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// The broker's port on 127.0.0.1; 0 picks a free one.
    pub broker_port: u16,
    /// A policy file, watched for edits. Without one: `policies/default.toml`
    /// when it exists, else the built-in example.
    pub policy: Option<PathBuf>,
    /// Origins allowed to call the token endpoints cross-origin.
    pub cors_origins: Vec<String>,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// One of `DevOptions::cors_origins` is not an origin.
    #[error("{0}")]
    CorsOrigin(ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Broker {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The sidecar and the broker, bound and ready to run.
pub struct DevStack {
    app: Application,
    broker: Broker,
    issuer: DevIssuer,
    key: ApiKey,
    policy_label: String,
}

impl DevStack {
    /// Loads the policy, generates the key and the issuer's secret and binds
    /// both servers. Call it inside the actix runtime.
    pub fn build(options: DevOptions) -> Result<DevStack, DevError> {
        let (policy, policy_label) = load_policy(options.policy.as_deref())?;
        check_cors_origins(&options.cors_origins).map_err(DevError::CorsOrigin)?;
        let issuer = DevIssuer::generate();
        let key = generate_key();
        let settings = Settings {
            server: ServerSettings {
                bind: loopback(options.port),
                cors_allowed_origins: options.cors_origins,
                // One developer's stack: a load test against it should not
                // be throttled.
                rate_limit_per_second: 0,
                ..ServerSettings::default()
            },
            ably: AblySettings::with_key(key.clone()),
            issuers: vec![issuer.issuer_settings()],
            policy: PolicySettings {
                path: policy.source.clone(),
                // Edits to the policy file apply while `dev` runs; the
                // built-in example has no file to watch.
                watch: policy.source.exists(),
            },
            broker: BrokerSettings {
                bind: loopback(options.broker_port),
                ..BrokerSettings::default()
            },
            log: LogSettings {
                format: LogFormat::Pretty,
                ..LogSettings::default()
            },
        };
        let addr = settings.broker.bind;
        let broker = Broker::build(
            &settings.broker,
            settings.ably.keys.clone(),
            clock::system(),
            options.limits,
        )
        .map_err(|source| DevError::Broker { addr, source })?;
        let app =
            Application::build_dev(settings, policy, issuer.clone(), broker.metrics_collector())?;
        Ok(DevStack {
            app,
            broker,
            issuer,
            key,
            policy_label,
        })
    }

    pub fn sidecar_port(&self) -> u16 {
        self.app.port()
    }

    pub fn broker_port(&self) -> u16 {
        self.broker.port()
    }

    /// `http://127.0.0.1:<sidecar port>`.
    pub fn sidecar_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.sidecar_port())
    }

    /// Answers `?sub=alice&roles=support` with a session token.
    pub fn session_url(&self) -> String {
        format!("{}/dev/session", self.sidecar_url())
    }

    /// The key generated for this run: it signs tokens and the broker trusts it.
    pub fn api_key(&self) -> &ApiKey {
        &self.key
    }

    /// Mints session tokens the sidecar accepts.
    pub fn issuer(&self) -> &DevIssuer {
        &self.issuer
    }

    /// The policy's file, or a note that the built-in example is used.
    pub fn policy_label(&self) -> &str {
        &self.policy_label
    }

    /// Runs both servers until a signal stops them.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (sidecar, broker) = futures_util::future::join(
            self.app.run_until_stopped(),
            self.broker.run_until_stopped(),
        )
        .await;
        sidecar?;
        broker
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `dev.<keyId>:<secret>`, fresh for each run.
fn generate_key() -> ApiKey {
    format!(
        "dev.{}:{}",
        // Letters and digits only, like the key ids Ably issues.
        issuer::random_text(6).replace(['-', '_'], "x"),
        issuer::random_text(24)
    )
    .parse()
    .expect("a generated key is well formed")
}

/// The policy and how the banner names it.
fn load_policy(path: Option<&Path>) -> Result<(Policy, String), PolicyError> {
    if let Some(path) = path {
        return Ok((Policy::load(path)?, path.display().to_string()));
    }
    let path = Path::new(DEFAULT_POLICY_FILE);
    if path.exists() {
        Ok((Policy::load(path)?, path.display().to_string()))
    } else {
        Ok((
            Policy::parse(path, EXAMPLE_POLICY)?,
            format!("built-in example ({DEFAULT_POLICY_FILE})"),
        ))
    }
}
