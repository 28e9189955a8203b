//! The command line (README.md, "Command line"). Exit codes: 0 ok, 1 invalid input or
//! denied, 2 usage error (clap's own).

mod check_config;
mod inspect;
mod policy_cmd;
mod serve;
mod words;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "ably-tokend", version, about = "Token-authentication sidecar for Ably", long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: token endpoints and health checks.
    Serve {
        /// Configuration file (default: ably-tokend.toml when present).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Zero-setup local stack on loopback: the sidecar, the embedded broker and
    /// a development issuer, sharing one generated API key.
    Dev {
        /// The sidecar's port (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The broker's port (0 picks a free one).
        #[arg(long, default_value_t = 8081)]
        broker_port: u16,
        /// Policy file (default: policies/default.toml, or the built-in example).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Print one JSON line with the URLs and key once ready (logs go to stderr).
        #[arg(long)]
        json: bool,
        /// An origin allowed to call the token endpoints cross-origin (repeatable).
        #[arg(long = "cors-origin")]
        cors_origins: Vec<String>,
    },
    /// Run the embedded Ably broker alone, trusting the [ably] keys.
    Broker {
        #[arg(long, short, conflicts_with = "sandbox")]
        config: Option<PathBuf>,
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
        /// Answer ably-js's local-sandbox contract instead (POST /apps, DELETE
        /// /apps/{appId}, POST /stats): each app gets a broker of its own, on
        /// loopback, with the keys it asks for. No configuration file is read.
        #[arg(long)]
        sandbox: bool,
        /// Where the sandbox listens: a loopback address (0 picks a port).
        #[arg(long, requires = "sandbox", default_value = "127.0.0.1:9010")]
        bind: std::net::SocketAddr,
    },
    /// Load the configuration and policy, then try every issuer once
    /// (discovery, JWKS, secret); exit 0 only when all of it works.
    CheckConfig {
        /// Configuration file (default: ably-tokend.toml when present).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate and explain policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Decode, verify and sign tokens by hand.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files; prints file:line and the reason of each error.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show which roles and rules apply to a set of claims, and the result.
    Explain(policy_cmd::ExplainArgs),
    /// Run the policy tests (*.tests.toml) in a directory.
    Test {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Decode an Ably JWT, a TokenRequest (JSON) or an upstream JWT.
    Inspect(inspect::InspectArgs),
    /// Sign a TokenRequest (or with --jwt an Ably JWT) by hand.
    Request(RequestArgs),
}

#[derive(Args)]
struct RequestArgs {
    /// Ably API key appId.keyId:secret (or ABLY_API_KEY).
    #[arg(long, env = "ABLY_API_KEY", hide_env_values = true)]
    key: String,
    /// Capability JSON, e.g. '{"chat:*":["subscribe"]}'.
    #[arg(long)]
    capability: String,
    #[arg(long)]
    client_id: Option<String>,
    /// Lifetime, e.g. 1h or 90s.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Sign an Ably JWT instead of a TokenRequest.
    #[arg(long)]
    jwt: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Json,
    Pretty,
}

impl From<LogFormatArg> for crate::config::LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Json => crate::config::LogFormat::Json,
            LogFormatArg::Pretty => crate::config::LogFormat::Pretty,
        }
    }
}

/// A failure a person can act on: printed as one line on stderr, exit 1.
pub(crate) struct Failure(pub(crate) String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure(e.to_string())
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, log_format } => {
            serve::serve(config, log_format.map(LogFormatArg::into))
        }
        Command::Broker {
            sandbox: true,
            bind,
            log_format,
            ..
        } => serve::sandbox(bind, log_format.map(LogFormatArg::into)),
        Command::Broker {
            config, log_format, ..
        } => serve::broker(config, log_format.map(LogFormatArg::into)),
        Command::Dev {
            port,
            broker_port,
            policy,
            json,
            cors_origins,
        } => serve::dev(serve::DevOptions {
            port,
            broker_port,
            policy,
            json_line: json,
            cors_origins,
        }),
        Command::CheckConfig { config } => check_config::check_config(config),
        Command::Policy(PolicyCommand::Check { files }) => policy_cmd::check(&files),
        Command::Policy(PolicyCommand::Explain(args)) => policy_cmd::explain(args),
        Command::Policy(PolicyCommand::Test { dir }) => policy_cmd::test(&dir),
        Command::Token(TokenCommand::Inspect(args)) => inspect::inspect(args),
        Command::Token(TokenCommand::Request(args)) => request(args),
    };
    match result {
        Ok(code) => code,
        Err(Failure(message)) => {
            eprintln!("ably-tokend: {message}");
            ExitCode::from(1)
        }
    }
}

fn request(args: RequestArgs) -> Result<ExitCode, Failure> {
    use crate::capability::Capability;
    use crate::signing::{new_nonce, sign_ably_jwt, sign_token_request, ApiKey, Grant};
    let key: ApiKey = args
        .key
        .parse()
        .map_err(|e| Failure(format!("--key: {e}")))?;
    let capability = Capability::parse_json(&args.capability)
        .map_err(|e| Failure(format!("--capability: {e}")))?;
    let ttl = crate::config::parse_duration("--ttl", &args.ttl)?;
    if ttl.is_zero() || ttl > crate::config::ABLY_MAX_TTL {
        return Err(Failure("--ttl: must be more than 0 and at most 24h".into()));
    }
    let grant = Grant {
        capability: &capability,
        client_id: args.client_id.as_deref(),
        ttl_ms: ttl.as_millis() as u64,
        issued_ms: crate::clock::Clock::now_ms(&crate::clock::SystemClock),
    };
    if args.jwt {
        println!("{}", sign_ably_jwt(&key, &grant));
    } else {
        let request = sign_token_request(&key, &grant, new_nonce());
        println!(
            "{}",
            serde_json::to_string_pretty(&request).expect("serialises")
        );
    }
    Ok(ExitCode::SUCCESS)
}
