//! The browser path in a real browser: the `ably` npm package's browser build (pinned in
//! tests/browser/package-lock.json), in headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` with `executablePath`), gets its token from this crate's real binary
//! (`ably-tokend dev`) through `authUrl`: same origin with the `__session` cookie, and cross origin
//! with an Authorization header through CORS. The suite is Node (`tests/browser/*.test.mjs`, run by
//! Node's built-in test runner); this file makes it part of `cargo test`: it installs Chromium and
//! the locked npm packages when needed, runs the suite with a deadline and asserts on the runner's
//! own counts. It never skips: a skipped browser suite would let CI go green on nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole suite must finish within this, or every process it started is stopped.
const SUITE_TIMEOUT: Duration = Duration::from_secs(240);
/// `npm ci` and each `apt-get` must finish within this.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// No single test may run longer than this (each also sets its own, shorter timeout).
const PER_TEST_TIMEOUT_MS: u32 = 90_000;
/// The suite has this many tests today; fewer passing means tests were lost.
const EXPECTED_MIN_PASSED: u64 = 8;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("browser")
}

struct Run {
    success: bool,
    timed_out: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// Run `cmd` in its own process group with a deadline, streaming its stderr to ours.
fn run(mut cmd: Command, timeout: Duration, what: &str) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
    let (tx, rx) = mpsc::channel();
    let readers = [
        pump(child.stdout.take().expect("piped"), true, tx.clone()),
        pump(child.stderr.take().expect("piped"), false, tx),
    ];
    let deadline = Instant::now() + timeout;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok((true, line)) => {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            Ok((false, line)) => {
                let _ = writeln!(std::io::stderr(), "{line}");
                stderr.push_str(&line);
                stderr.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                timed_out = true;
                eprintln!("browser: {what} ran past {timeout:?}; stopping it");
                stop_tree(&mut child);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
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

fn pump<R: Read + Send + 'static>(
    reader: R,
    out: bool,
    tx: mpsc::Sender<(bool, String)>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send((out, line)).is_err() {
                break;
            }
        }
    })
}

/// SIGTERM the child's process group first (node then closes Chromium, which Playwright starts in
/// a process group of its own, and its `exit` handler kills the dev stack), SIGKILL after 5 s.
fn stop_tree(child: &mut Child) {
    #[cfg(unix)]
    {
        let group = format!("-{}", child.id());
        for (signal, grace) in [("-TERM", 5), ("-KILL", 0)] {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let end = Instant::now() + Duration::from_secs(grace);
            while Instant::now() < end {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _ = child.kill();
}

/// Debian's chromium at /usr/bin/chromium, installed with apt-get when missing.
fn ensure_chromium() {
    if Path::new(CHROMIUM).exists() {
        return;
    }
    eprintln!("browser: {CHROMIUM} is missing; apt-get install -y chromium");
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(cmd, INSTALL_TIMEOUT, "apt-get install chromium")
    };
    let mut attempt = install();
    if !attempt.success {
        eprintln!("browser: apt-get install failed; apt-get update, then again");
        let mut update = Command::new("apt-get");
        update
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive");
        let updated = run(update, INSTALL_TIMEOUT, "apt-get update");
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

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `npm ci` when node_modules is missing or older than package-lock.json.
fn ensure_node_modules(dir: &Path) {
    let lock = modified(&dir.join("package-lock.json"))
        .expect("tests/browser/package-lock.json exists (it pins ably and playwright-core)");
    let installed = modified(&dir.join("node_modules").join(".package-lock.json"));
    let fresh = installed.is_some_and(|installed| installed >= lock)
        && ["ably", "playwright-core"].iter().all(|name| {
            dir.join("node_modules")
                .join(name)
                .join("package.json")
                .exists()
        });
    if fresh {
        return;
    }
    eprintln!("browser: npm ci in {}", dir.display());
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir);
    let run = run(cmd, INSTALL_TIMEOUT, "npm ci");
    assert!(
        run.success,
        "`npm ci` in {} failed ({}; Node.js 20+ and npm must be installed):\n{}{}",
        dir.display(),
        run.status,
        run.stdout,
        run.stderr
    );
}

/// The count after `# KEY ` in Node's TAP summary.
fn count(tap: &str, key: &str) -> Option<u64> {
    tap.lines().find_map(|line| {
        line.strip_prefix("# ")?
            .strip_prefix(key)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn ably_browser_build_in_headless_chromium_gets_tokens_same_origin_and_cross_origin() {
    let dir = browser_dir();
    ensure_chromium();
    ensure_node_modules(&dir);

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/browser is readable")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.mjs in {}", dir.display());

    let mut cmd = Command::new("node");
    cmd.arg("--test")
        .arg("--test-concurrency=1")
        .arg(format!("--test-timeout={PER_TEST_TIMEOUT_MS}"))
        .arg("--test-force-exit")
        .args(["--test-reporter=spec", "--test-reporter-destination=stderr"])
        .args(["--test-reporter=tap", "--test-reporter-destination=stdout"])
        .args(&files)
        .current_dir(&dir)
        .env("ABLY_TOKEND_BIN", env!("CARGO_BIN_EXE_ably-tokend"))
        .env("CHROMIUM", CHROMIUM)
        .env("NO_COLOR", "1");
    let run = run(cmd, SUITE_TIMEOUT, "node --test");

    let not_ok: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("not ok"))
        .collect();
    assert!(
        !run.timed_out,
        "the browser suite did not finish within {SUITE_TIMEOUT:?} and was stopped; not passed so \
         far:\n{}",
        not_ok.join("\n")
    );
    let pass = count(&run.stdout, "pass").expect("node's TAP report ends with `# pass N`");
    let fail = count(&run.stdout, "fail").expect("node's TAP report ends with `# fail N`");
    let cancelled = count(&run.stdout, "cancelled").unwrap_or(0);
    let skipped = count(&run.stdout, "skipped").unwrap_or(0);
    let todo = count(&run.stdout, "todo").unwrap_or(0);
    eprintln!(
        "browser: pass {pass}, fail {fail}, cancelled {cancelled}, skipped {skipped}, todo {todo}"
    );
    assert!(
        fail == 0 && cancelled == 0,
        "{fail} browser tests failed and {cancelled} were cancelled (the report above has the \
         details):\n{}",
        not_ok.join("\n")
    );
    assert_eq!(skipped + todo, 0, "no browser test may be skipped or todo");
    assert!(
        pass >= EXPECTED_MIN_PASSED,
        "only {pass} browser tests passed; the suite has at least {EXPECTED_MIN_PASSED}"
    );
    // A failed before/after hook (e.g. the secret check on the binary's log) does not show in the
    // counts, only as a `not ok` suite and the exit status.
    assert!(
        run.success && not_ok.is_empty(),
        "node --test exited with {}:\n{}",
        run.status,
        not_ok.join("\n")
    );
}
