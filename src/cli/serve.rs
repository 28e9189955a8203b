//! `serve`, `broker` and `dev`: start the services and log their life.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::Failure;
use crate::broker::{Broker, Limits, Sandbox};
use crate::clock;
use crate::config::{LogFormat, Settings};
use crate::dev::{DevError, DevStack};
use crate::http::Application;

#[derive(Clone, Copy)]
enum Sink {
    Stdout,
    /// `dev --json` keeps stdout for its one machine-readable line.
    Stderr,
}

fn init_logging(format: LogFormat, level: &str, sink: Sink) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let writer = move || -> Box<dyn std::io::Write> {
        match sink {
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::Stderr => Box::new(std::io::stderr()),
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // The request line carries its own request id; span context would
            // repeat it on every line at a measurable cost.
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}

fn load(config: Option<PathBuf>) -> Result<Settings, Failure> {
    Settings::load(config.as_deref()).map_err(|e| Failure(format!("configuration: {e}")))
}

pub(crate) fn serve(
    config: Option<PathBuf>,
    log_format: Option<LogFormat>,
) -> Result<ExitCode, Failure> {
    let settings = load(config)?;
    settings
        .require_issuers()
        .map_err(|e| Failure(format!("configuration: {e}")))?;
    init_logging(
        log_format.unwrap_or(settings.log.format),
        &settings.log.level,
        Sink::Stdout,
    );
    let issuers: Vec<&str> = settings.issuers.iter().map(|i| i.name.as_str()).collect();
    tracing::info!(
        bind = %settings.server.bind,
        key = settings.ably.signing_key().name(),
        issuers = ?issuers,
        policy = %settings.policy.path.display(),
        "starting ably-tokend"
    );
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)?;
        tracing::info!(port = app.port(), "listening");
        app.run_until_stopped().await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn broker(
    config: Option<PathBuf>,
    log_format: Option<LogFormat>,
) -> Result<ExitCode, Failure> {
    let settings = load(config)?;
    init_logging(
        log_format.unwrap_or(settings.log.format),
        &settings.log.level,
        Sink::Stdout,
    );
    tracing::info!(bind = %settings.broker.bind, key = settings.ably.signing_key().name(), "starting the embedded Ably broker");
    actix_web::rt::System::new().block_on(async move {
        let broker = Broker::build(
            &settings.broker,
            settings.ably.keys.clone(),
            clock::system(),
            Limits::default(),
        )
        .map_err(|e| Failure(format!("cannot listen on {}: {e}", settings.broker.bind)))?;
        tracing::info!(port = broker.port(), "broker listening");
        broker.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `broker --sandbox`: ably-js's local-sandbox contract on a loopback address.
pub(crate) fn sandbox(
    bind: std::net::SocketAddr,
    log_format: Option<LogFormat>,
) -> Result<ExitCode, Failure> {
    init_logging(
        log_format.unwrap_or(LogFormat::Pretty),
        "info",
        Sink::Stdout,
    );
    actix_web::rt::System::new().block_on(async move {
        let sandbox = Sandbox::build(
            bind,
            crate::config::BrokerSettings::default(),
            clock::system(),
            Limits::default(),
        )
        .map_err(|e| Failure(format!("--bind: {e}")))?;
        tracing::info!(
            port = sandbox.port(),
            "sandbox listening: POST /apps creates an app with a broker of its own"
        );
        sandbox.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The `dev` command's flags.
pub(crate) struct DevOptions {
    pub(crate) port: u16,
    pub(crate) broker_port: u16,
    pub(crate) policy: Option<PathBuf>,
    pub(crate) json_line: bool,
    pub(crate) cors_origins: Vec<String>,
}

pub(crate) fn dev(options: DevOptions) -> Result<ExitCode, Failure> {
    let DevOptions {
        port,
        broker_port,
        policy,
        json_line,
        cors_origins,
    } = options;
    let stack_options = crate::dev::DevOptions {
        port,
        broker_port,
        policy,
        cors_origins,
        limits: Limits::default(),
    };
    init_logging(
        LogFormat::Pretty,
        "info",
        if json_line {
            Sink::Stderr
        } else {
            Sink::Stdout
        },
    );
    actix_web::rt::System::new().block_on(async move {
        let stack = DevStack::build(stack_options).map_err(|e| match e {
            DevError::CorsOrigin(e) => Failure(format!("--cors-origin: {e}")),
            e => Failure(e.to_string()),
        })?;
        let base = stack.sidecar_url();
        let broker_port = stack.broker_port();
        let key = stack.api_key();
        if json_line {
            println!(
                "{}",
                json!({
                    "sidecar": base,
                    "broker": {"host": "127.0.0.1", "port": broker_port},
                    "apiKey": key.expose_whole(),
                    "sessionUrl": stack.session_url(),
                })
            );
        } else {
            println!(
                "\nably-tokend dev stack (loopback only)\n\
                 \n  token endpoint   {base}/api/ably-token   (Ably JWT: {base}/api/ably-jwt)\
                 \n  session tokens   {base}/dev/session?sub=alice&roles=support\
                 \n  Ably broker      http://127.0.0.1:{broker_port} (REST and WebSocket)\
                 \n  API key          {key_name} (generated for this run; the whole key is for\
                 \n                   backends on this machine: {whole})\
                 \n  policy           {shown}\
                 \n\nTry:\n  curl -s -H \"Authorization: Bearer $(curl -s '{base}/dev/session?sub=alice')\" {base}/api/ably-token\
                 \n\nably-js options:\n  {{ endpoint: \"127.0.0.1\", port: {broker_port}, tls: false, authUrl: \"{base}/api/ably-token\",\
                 \n    authHeaders: {{ Authorization: \"Bearer <session token>\" }} }}\n",
                key_name = key.name(),
                whole = key.expose_whole(),
                shown = stack.policy_label(),
            );
        }
        stack.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
}
