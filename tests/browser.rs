//! The browser path in a real browser: the `ably` npm package's browser build (pinned in
//! tests/browser/package-lock.json), in headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` with `executablePath`), gets its token from this crate's real binary
//! (`ably-tokend dev`) through `authUrl`: same origin with the `__session` cookie, and cross origin
//! with an Authorization header through CORS. The suite is Node (`tests/browser/*.test.mjs`, run by
//! Node's built-in test runner); this file makes it part of `cargo test`: it installs Chromium and
//! the locked npm packages when needed, runs the suite with a deadline and asserts on the runner's
//! own counts. It never skips: a skipped browser suite would let CI go green on nothing.

#[path = "support/node_suite.rs"]
mod node_suite;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use node_suite::Suite;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole suite must finish within this, or every process it started is stopped.
const SUITE_TIMEOUT: Duration = Duration::from_secs(240);
/// `npm ci` and each `apt-get` must finish within this.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// No single test may run longer than this (each also sets its own, shorter timeout).
const PER_TEST_TIMEOUT_MS: u32 = 90_000;
/// The suite has this many tests today; fewer passing means tests were lost.
const EXPECTED_MIN_PASSED: u64 = 8;

/// SIGTERM the suite's process group first (node then closes Chromium, which Playwright starts
/// in a process group of its own, and its `exit` handler kills the dev stack), SIGKILL after 5 s.
const STOP_GRACE: Duration = Duration::from_secs(5);

fn browser_suite() -> Suite {
    Suite {
        label: "browser",
        noun: "browser",
        dir: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("browser"),
        term_grace: Some(STOP_GRACE),
    }
}

/// Debian's chromium at /usr/bin/chromium, installed with apt-get when missing.
fn ensure_chromium(suite: &Suite) {
    if Path::new(CHROMIUM).exists() {
        return;
    }
    eprintln!("browser: {CHROMIUM} is missing; apt-get install -y chromium");
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        suite.run(cmd, INSTALL_TIMEOUT, "apt-get install chromium")
    };
    let mut attempt = install();
    if !attempt.success {
        eprintln!("browser: apt-get install failed; apt-get update, then again");
        let mut update = Command::new("apt-get");
        update
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive");
        let updated = suite.run(update, INSTALL_TIMEOUT, "apt-get update");
        if updated.success {
            attempt = install();
        }
    }
    assert!(
        attempt.success && Path::new(CHROMIUM).exists(),
        "the browser suite needs Debian's Chromium at {CHROMIUM} and could not install it \
         (`apt-get install -y chromium` as root: {}); install it by hand and run again.\n{}{}",
        attempt.status,
        attempt.stdout,
        attempt.stderr
    );
}

#[test]
fn ably_browser_build_in_headless_chromium_gets_tokens_same_origin_and_cross_origin() {
    let suite = browser_suite();
    ensure_chromium(&suite);
    suite.ensure_node_modules(
        &["ably", "playwright-core"],
        "ably and playwright-core",
        INSTALL_TIMEOUT,
    );

    let mut cmd = suite.node_test(PER_TEST_TIMEOUT_MS);
    cmd.env("ABLY_TOKEND_BIN", env!("CARGO_BIN_EXE_ably-tokend"))
        .env("CHROMIUM", CHROMIUM);
    let run = suite.run(cmd, SUITE_TIMEOUT, "node --test");
    suite.assert_passed(&run, SUITE_TIMEOUT, EXPECTED_MIN_PASSED);
}
