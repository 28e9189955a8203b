//! `serve` and `dev`: start the service and log its life.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Failure;
use crate::config::{LogFormat, Settings};
use crate::dev::DevIssuer;
use crate::http::Application;
use crate::policy::Policy;

fn init_logging(format: LogFormat, level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
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

pub fn serve(config: Option<PathBuf>, log_format: Option<LogFormat>) -> Result<ExitCode, Failure> {
    let settings =
        Settings::load(config.as_deref()).map_err(|e| Failure(format!("configuration: {e}")))?;
    init_logging(
        log_format.unwrap_or(settings.log.format),
        &settings.log.level,
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

const EXAMPLE_POLICY: &str = include_str!("../../policies/default.toml");

pub fn dev(port: u16, policy: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let (policy, shown) = match policy {
        Some(path) => (Policy::load(&path)?, path.display().to_string()),
        None => {
            let path = PathBuf::from("policies/default.toml");
            if path.exists() {
                (Policy::load(&path)?, path.display().to_string())
            } else {
                (
                    Policy::parse(&path, EXAMPLE_POLICY)?,
                    "built-in example (policies/default.toml)".to_string(),
                )
            }
        }
    };
    let issuer = DevIssuer::generate();
    let settings = issuer.settings(port, &policy.source.display().to_string());
    init_logging(LogFormat::Pretty, "info");
    let key_name = settings.ably.signing_key().name().to_string();
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build_dev(settings, policy, issuer)?;
        let base = format!("http://127.0.0.1:{}", app.port());
        println!(
            "\nably-tokend dev stack (loopback only)\n\
             \n  token endpoint   {base}/api/ably-token   (Ably JWT: {base}/api/ably-jwt)\
             \n  session tokens   {base}/dev/session?sub=alice&roles=support\
             \n  API key          {key_name} (generated for this run)\
             \n  policy           {shown}\
             \n\nTry:\n  curl -s -H \"Authorization: Bearer $(curl -s '{base}/dev/session?sub=alice')\" {base}/api/ably-token\n"
        );
        app.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
}
