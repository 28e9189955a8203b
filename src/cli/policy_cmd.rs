//! `policy check` and `policy explain`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::Failure;
use crate::capability::Capability;
use crate::config::parse_duration;
use crate::policy::{Asked, ClaimPointer, Policy, Request};

pub(crate) fn check(files: &[PathBuf]) -> Result<ExitCode, Failure> {
    let mut failed = false;
    for file in files {
        if file.to_string_lossy().ends_with(".tests.toml") {
            println!(
                "skipped: {} is a policy test file (run `ably-tokend policy test`)",
                file.display()
            );
            continue;
        }
        match Policy::load(file) {
            Ok(policy) => println!(
                "ok: {} ({} roles)",
                file.display(),
                policy.role_names().count()
            ),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn test(dir: &std::path::Path) -> Result<ExitCode, Failure> {
    let files =
        crate::policy::cases::find(dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    if files.is_empty() {
        return Err(Failure(format!(
            "{}: no policy test files (*.tests.toml) found",
            dir.display()
        )));
    }
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        let result = crate::policy::cases::run_file(&file);
        println!(
            "{} (policy {})",
            result.file.display(),
            result.policy.display()
        );
        if let Some(error) = result.error {
            println!("  FAIL  {error}");
            failed += 1;
            continue;
        }
        for case in result.cases {
            match case.failure {
                None => {
                    println!("  ok    {}", case.name);
                    passed += 1;
                }
                Some(why) => {
                    println!("  FAIL  {}: {why}", case.name);
                    failed += 1;
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Args)]
pub(crate) struct ExplainArgs {
    /// The policy file.
    #[arg(long)]
    policy: PathBuf,
    /// The session token's claims as JSON, or @FILE.
    #[arg(long)]
    claims: String,
    /// JSON Pointer to the roles claim.
    #[arg(long, default_value = "/roles")]
    roles_claim: String,
    /// JSON Pointer to the client id claim.
    #[arg(long, default_value = "/sub")]
    client_id_claim: String,
    /// A requested capability (JSON), as ably-js would send it.
    #[arg(long)]
    capability: Option<String>,
    /// A requested clientId.
    #[arg(long)]
    client_id: Option<String>,
    /// A requested ttl, e.g. 30m.
    #[arg(long)]
    ttl: Option<String>,
    #[arg(long, default_value = "1h")]
    default_ttl: String,
    #[arg(long, default_value = "24h")]
    max_ttl: String,
}

pub(crate) fn explain(args: ExplainArgs) -> Result<ExitCode, Failure> {
    let policy = Policy::load(&args.policy)?;
    let text = match args.claims.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| Failure(format!("--claims {path}: {e}")))?
        }
        None => args.claims.clone(),
    };
    let claims: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Failure(format!("--claims: not JSON: {e}")))?;
    let roles_claim: ClaimPointer = args
        .roles_claim
        .parse()
        .map_err(|e| Failure(format!("--roles-claim: {e}")))?;
    let client_id_claim: ClaimPointer = args
        .client_id_claim
        .parse()
        .map_err(|e| Failure(format!("--client-id-claim: {e}")))?;
    let asked = Asked {
        capability: args
            .capability
            .as_deref()
            .map(Capability::parse_json)
            .transpose()
            .map_err(|e| Failure(format!("--capability: {e}")))?,
        client_id: args.client_id.clone(),
        ttl: args
            .ttl
            .as_deref()
            .map(|t| parse_duration("--ttl", t))
            .transpose()?,
    };
    let request = Request {
        claims: &claims,
        roles_claim: &roles_claim,
        client_id_claim: &client_id_claim,
        asked: &asked,
        default_ttl: parse_duration("--default-ttl", &args.default_ttl)?,
        max_ttl: parse_duration("--max-ttl", &args.max_ttl)?,
    };
    let (trace, result) = policy.explain(&request);
    println!("policy:        {}", args.policy.display());
    println!(
        "roles claim:   {} = {:?}",
        roles_claim.as_str(),
        trace.claimed_roles
    );
    println!("default roles: {:?}", trace.default_roles);
    if !trace.undefined_roles.is_empty() {
        println!(
            "ignored:       {:?} (not defined in the policy)",
            trace.undefined_roles
        );
    }
    if !trace.rules.is_empty() {
        println!("rules:");
        let width = trace.rules.iter().map(|r| r.role.len()).max().unwrap_or(0);
        for rule in &trace.rules {
            let outcome = match &rule.outcome {
                Ok(pattern) => format!("{pattern} {:?}", rule.operations),
                Err(why) => format!("REJECTED: {why}"),
            };
            println!("  {:width$}  {}  ->  {outcome}", rule.role, rule.template);
        }
    }
    for (role, ttl) in &trace.ttl_caps {
        println!(
            "ttl cap:       {} (role {role})",
            humantime::format_duration(*ttl)
        );
    }
    match result {
        Ok(decision) => {
            println!("result:        GRANTED");
            for role in &decision.roles {
                let about = policy
                    .role(role)
                    .and_then(|r| r.description.as_deref())
                    .unwrap_or("");
                println!("role:          {role}  {about}");
            }
            println!("clientId:      {}", decision.client_id);
            println!(
                "ttl:           {}",
                humantime::format_duration(round(decision.ttl))
            );
            println!("capability:    {}", decision.capability.to_canonical_json());
            Ok(ExitCode::SUCCESS)
        }
        Err(denial) => {
            println!("result:        DENIED ({})", denial.reason());
            println!("why:           {denial}");
            Ok(ExitCode::from(1))
        }
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
