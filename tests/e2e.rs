//! End-to-end: the real, unmodified `ably` npm client (pinned in tests/e2e/package-lock.json)
//! against this crate's real binary (`ably-tokend dev`: sidecar, embedded broker and development
//! issuer). The suite itself is Node (`tests/e2e/*.test.mjs`, run by Node's built-in test runner);
//! this file makes it part of `cargo test`: it installs the locked npm packages when needed, runs
//! the suite with a deadline, streams its report, and asserts on the runner's own counts.
//!
//! Node.js 20+ and npm must be installed. Without them this test fails with a message saying so:
//! it never skips, because a skipped end-to-end suite would let CI go green on nothing.

#[path = "support/node_suite.rs"]
mod node_suite;

use std::path::Path;
use std::time::Duration;

use node_suite::{require_tool, Suite};

/// The whole suite must finish within this, or every process it started is killed.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);
/// `npm ci` must finish within this.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// No single test may run longer than this (each test also sets its own, shorter timeout).
const PER_TEST_TIMEOUT_MS: u32 = 90_000;
/// The suite has this many tests today; fewer passing means tests were lost, not that all is well.
const EXPECTED_MIN_PASSED: u64 = 109;

fn e2e_suite() -> Suite {
    Suite {
        label: "e2e",
        noun: "end-to-end",
        dir: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("e2e"),
        term_grace: None,
    }
}

#[test]
fn unmodified_ably_js_client_passes_the_end_to_end_suite_against_the_real_binary() {
    let suite = e2e_suite();
    let node = require_tool("node");
    let npm = require_tool("npm");
    eprintln!("e2e: node {node}, npm {npm}");
    suite.ensure_node_modules(&["ably"], "the ably client", NPM_TIMEOUT);

    let mut cmd = suite.node_test(PER_TEST_TIMEOUT_MS);
    cmd.env("ABLY_TOKEND_BIN", env!("CARGO_BIN_EXE_ably-tokend"));
    let run = suite.run(cmd, SUITE_TIMEOUT, "node --test");
    suite.assert_passed(&run, SUITE_TIMEOUT, EXPECTED_MIN_PASSED);
}
