//! Integration tests: the real app on port 0, real JWKS servers on loopback.

mod broker;
mod cli;
mod defences;
mod denials;
mod helpers;
mod http;
mod jwks;
mod operations;
mod process;
mod tokens;
