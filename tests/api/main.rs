//! Integration tests: the real app on port 0, real JWKS servers on loopback.
//!
//! Silent by default; `TEST_LOG=1 cargo test --test api NAME -- --nocapture`
//! prints the in-process app's tracing logs (level from `RUST_LOG`, default
//! `info`). See `helpers::init_test_logging`.

mod architecture;
mod attach;
mod broker;
mod cli;
mod continuity;
mod defences;
mod denials;
mod discovery;
mod discovery_check_config;
mod filters;
mod helpers;
mod http;
mod idempotency;
mod identity;
mod jwks;
mod keys;
mod liveness;
mod names;
mod operations;
mod process;
mod readme_providers;
mod rest_surface;
mod sandbox;
mod session_kinds;
mod tokens;
