//! Identity providers: session cookies minted by the providers' real npm libraries — `@auth/core`
//! (Auth.js v5), `next-auth` v4 and `@supabase/ssr` (with `@supabase/supabase-js`), pinned in
//! tests/identity/package-lock.json — and a session issued by `@auth/core`'s own `Auth()` handler
//! with database sessions (tests/support/authjs-session), and sessions from the real `better-auth`
//! package (signed up and in over HTTP on loopback), sent to this crate's real binary
//! (`ably-tokend serve`) configured with the README's copy-paste configurations. The suite itself is Node (`tests/identity/*.test.mjs`, run by Node's built-in
//! test runner); this file makes it part of `cargo test` as tests/e2e.rs does for the ably client.
//!
//! Node.js 20+ and npm must be installed. Without them this test fails with a message saying so:
//! it never skips.

#[path = "support/node_suite.rs"]
mod node_suite;

use std::path::Path;
use std::time::Duration;

use node_suite::{require_tool, Suite};

const SUITE_TIMEOUT: Duration = Duration::from_secs(180);
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
const PER_TEST_TIMEOUT_MS: u32 = 30_000;
/// The suite has this many tests today; fewer passing means tests were lost, not that all is well.
const EXPECTED_MIN_PASSED: u64 = 34;

#[test]
fn cookies_minted_by_auth_js_next_auth_and_supabase_are_accepted_and_attacks_refused() {
    let suite = Suite {
        label: "identity",
        noun: "identity-provider",
        dir: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("identity"),
        term_grace: None,
    };
    let node = require_tool("node");
    let npm = require_tool("npm");
    eprintln!("identity: node {node}, npm {npm}");
    suite.ensure_node_modules(
        &[
            "@auth/core",
            "next-auth",
            "jose",
            "@supabase/ssr",
            "@supabase/supabase-js",
            "better-auth",
        ],
        "@auth/core, next-auth, @supabase/ssr, @supabase/supabase-js, better-auth and jose",
        NPM_TIMEOUT,
    );
    // The real Auth() handler with database sessions (session-endpoint.test.mjs).
    Suite {
        label: "identity",
        noun: "identity-provider",
        dir: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("support")
            .join("authjs-session"),
        term_grace: None,
    }
    .ensure_node_modules(&["@auth/core"], "@auth/core", NPM_TIMEOUT);
    let mut cmd = suite.node_test(PER_TEST_TIMEOUT_MS);
    cmd.env("ABLY_TOKEND_BIN", env!("CARGO_BIN_EXE_ably-tokend"));
    let run = suite.run(cmd, SUITE_TIMEOUT, "node --test");
    suite.assert_passed(&run, SUITE_TIMEOUT, EXPECTED_MIN_PASSED);
}
