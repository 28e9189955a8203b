//! ably-tokend: a token-authentication sidecar for Ably.

#[cfg(all(feature = "aws-lc", feature = "rust-crypto"))]
compile_error!("choose exactly one crypto backend: feature \"aws-lc\" or \"rust-crypto\"");
#[cfg(not(any(feature = "aws-lc", feature = "rust-crypto")))]
compile_error!("choose a crypto backend: feature \"aws-lc\" or \"rust-crypto\"");

mod ably_error;
pub mod broker;
pub mod capability;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev;
mod duration;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
mod keep_alive;
mod metrics;
pub mod policy;
pub mod signing;
pub mod upstream;
