//! End-to-end: the real, unmodified `ably` npm client (pinned in tests/e2e/package-lock.json)
//! against this crate's real binary (`ably-tokend dev`: sidecar, embedded broker and development
//! issuer). The suite itself is Node (`tests/e2e/*.test.mjs`, run by Node's built-in test runner);
//! this file makes it part of `cargo test`: it installs the locked npm packages when needed, runs
//! the suite with a deadline, streams its report, and asserts on the runner's own counts.
//!
//! Node.js 20+ and npm must be installed. Without them this test fails with a message saying so:
//! it never skips, because a skipped end-to-end suite would let CI go green on nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The whole suite must finish within this, or every process it started is killed.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);
/// `npm ci` must finish within this.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// No single test may run longer than this (each test also sets its own, shorter timeout).
const PER_TEST_TIMEOUT_MS: u32 = 90_000;
/// The suite has this many tests today; fewer passing means tests were lost, not that all is well.
const EXPECTED_MIN_PASSED: u64 = 48;

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("e2e")
}

fn require_tool(name: &str) -> String {
    match Command::new(name).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "`{name} --version` failed ({}): the end-to-end suite needs Node.js 20+ and npm. {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => panic!(
            "`{name}` is not installed ({err}): the end-to-end suite (tests/e2e) needs Node.js 20+ \
             and npm on PATH; install them (e.g. `apt-get install nodejs npm`) — CI must too"
        ),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `npm ci` when node_modules is missing or older than package-lock.json (npm records the tree it
/// installed in node_modules/.package-lock.json).
fn ensure_node_modules(dir: &Path) {
    let lock = modified(&dir.join("package-lock.json"))
        .expect("tests/e2e/package-lock.json exists (it pins the ably client)");
    let installed = modified(&dir.join("node_modules").join(".package-lock.json"));
    let fresh = installed.is_some_and(|installed| installed >= lock)
        && dir
            .join("node_modules")
            .join("ably")
            .join("package.json")
            .exists();
    if fresh {
        return;
    }
    eprintln!("e2e: npm ci in {}", dir.display());
    let child = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run `npm ci` in {}: {err}", dir.display()));
    let run = run_streaming(child, NPM_TIMEOUT, "npm ci");
    assert!(
        !run.timed_out,
        "`npm ci` in {} did not finish within {NPM_TIMEOUT:?}:\n{}{}",
        dir.display(),
        run.stdout,
        run.stderr
    );
    assert!(
        run.success,
        "`npm ci` in {} failed ({}):\n{}{}",
        dir.display(),
        run.status,
        run.stdout,
        run.stderr
    );
}

fn test_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/e2e is readable")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".test.mjs"))
        })
        .collect();
    files.sort();
    files
}

struct Run {
    success: bool,
    timed_out: bool,
    status: String,
    stdout: String,
    stderr: String,
}

enum Line {
    Out(String),
    Err(String),
}

fn pump<R: Read + Send + 'static>(
    reader: R,
    wrap: fn(String) -> Line,
    tx: mpsc::Sender<Line>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(wrap(line)).is_err() {
                break;
            }
        }
    })
}

/// Kill the child and everything it started (it leads its own process group).
fn kill_tree(child: &mut Child) {
    #[cfg(unix)]
    {
        let group = format!("-{}", child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
}

/// Wait for `child` with a deadline, copying its stderr to ours as it comes (so a person watching
/// `cargo test` sees progress, past the test harness's capture) and collecting stdout and stderr.
fn run_streaming(mut child: Child, timeout: Duration, what: &str) -> Run {
    let (tx, rx) = mpsc::channel();
    let readers = [
        pump(
            child.stdout.take().expect("stdout is piped"),
            Line::Out,
            tx.clone(),
        ),
        pump(child.stderr.take().expect("stderr is piped"), Line::Err, tx),
    ];
    let deadline = Instant::now() + timeout;
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut timed_out = false;
    let mut console = std::io::stderr();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(Line::Out(line)) => {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            Ok(Line::Err(line)) => {
                let _ = writeln!(console, "{line}");
                stderr.push_str(&line);
                stderr.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                    let _ = writeln!(console, "e2e: {what} ran past {timeout:?}; killing it");
                    kill_tree(&mut child);
                    break;
                }
            }
        }
    }
    let status = child.wait().expect("wait for the child");
    if !timed_out {
        for reader in readers {
            let _ = reader.join();
        }
    }
    Run {
        success: status.success() && !timed_out,
        timed_out,
        status: status.to_string(),
        stdout,
        stderr,
    }
}

/// The counts Node's TAP reporter closes with: `# tests N`, `# pass N`, `# fail N`, …
#[derive(Debug, Default)]
struct Summary {
    tests: Option<u64>,
    pass: Option<u64>,
    fail: Option<u64>,
    cancelled: Option<u64>,
    skipped: Option<u64>,
    todo: Option<u64>,
}

fn summary(tap: &str) -> Summary {
    let mut s = Summary::default();
    for line in tap.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "tests" => s.tests = Some(n),
            "pass" => s.pass = Some(n),
            "fail" => s.fail = Some(n),
            "cancelled" => s.cancelled = Some(n),
            "skipped" => s.skipped = Some(n),
            "todo" => s.todo = Some(n),
            _ => {}
        }
    }
    s
}

/// The TAP lines of the tests that did not pass, for the failure message.
fn failures(tap: &str) -> String {
    tap.lines()
        .filter(|l| l.trim_start().starts_with("not ok"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn unmodified_ably_js_client_passes_the_end_to_end_suite_against_the_real_binary() {
    let dir = e2e_dir();
    let node = require_tool("node");
    let npm = require_tool("npm");
    eprintln!("e2e: node {node}, npm {npm}");
    ensure_node_modules(&dir);

    let files = test_files(&dir);
    assert!(!files.is_empty(), "no *.test.mjs in {}", dir.display());

    let mut cmd = Command::new("node");
    cmd.arg("--test")
        .arg("--test-concurrency=1")
        .arg(format!("--test-timeout={PER_TEST_TIMEOUT_MS}"))
        .arg("--test-force-exit")
        // A readable report for people, streamed on stderr; TAP on stdout for the counts.
        .args(["--test-reporter=spec", "--test-reporter-destination=stderr"])
        .args(["--test-reporter=tap", "--test-reporter-destination=stdout"])
        .args(&files)
        .current_dir(&dir)
        .env("ABLY_TOKEND_BIN", env!("CARGO_BIN_EXE_ably-tokend"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let child = cmd.spawn().expect("start node --test");
    let run = run_streaming(child, SUITE_TIMEOUT, "node --test");

    let counts = summary(&run.stdout);
    eprintln!("e2e: {counts:?}");
    assert!(
        !run.timed_out,
        "the end-to-end suite did not finish within {SUITE_TIMEOUT:?} and was killed; \
         not passed so far:\n{}",
        failures(&run.stdout)
    );
    let fail = counts.fail.expect("node's TAP report ends with `# fail N`");
    let cancelled = counts.cancelled.unwrap_or(0);
    let pass = counts.pass.expect("node's TAP report ends with `# pass N`");
    assert!(
        fail == 0 && cancelled == 0,
        "{fail} end-to-end tests failed and {cancelled} were cancelled (the report above has the \
         details):\n{}",
        failures(&run.stdout)
    );
    assert_eq!(
        counts.skipped.unwrap_or(0),
        0,
        "no end-to-end test may be skipped"
    );
    assert_eq!(
        counts.todo.unwrap_or(0),
        0,
        "no end-to-end test may be left as todo"
    );
    assert!(
        pass >= EXPECTED_MIN_PASSED,
        "only {pass} end-to-end tests passed (of {:?}); the suite has at least {EXPECTED_MIN_PASSED}",
        counts.tests
    );
    assert!(run.success, "node --test exited with {}", run.status);
}
