//! What tests/e2e.rs and tests/browser.rs share to run a Node test suite (`node --test`) as part
//! of `cargo test`: run a command in its own process group with a deadline while streaming its
//! stderr, `npm ci` when node_modules is missing or stale, build the `node --test` command, read
//! the counts in Node's TAP summary and assert on them. Each includes it with
//! `#[path = "support/node_suite.rs"] mod node_suite;` (cargo does not build files in
//! subdirectories of tests/ as test targets of their own).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// One Node test suite: a directory of `*.test.mjs` with a package-lock.json.
pub struct Suite {
    /// Prefix of this test's progress lines, e.g. `e2e`.
    pub label: &'static str,
    /// What its tests are called in failure messages, e.g. `end-to-end`.
    pub noun: &'static str,
    /// The directory with package-lock.json and the `*.test.mjs` files.
    pub dir: PathBuf,
    /// How a command that ran past its deadline is ended: `None` SIGKILLs its process group at
    /// once; `Some(grace)` SIGTERMs it first and SIGKILLs it after `grace`.
    pub term_grace: Option<Duration>,
}

pub struct Run {
    pub success: bool,
    pub timed_out: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// The counts Node's TAP reporter closes with: `# tests N`, `# pass N`, `# fail N`, …
#[derive(Debug, Default)]
pub struct Summary {
    pub tests: Option<u64>,
    pub pass: Option<u64>,
    pub fail: Option<u64>,
    pub cancelled: Option<u64>,
    pub skipped: Option<u64>,
    pub todo: Option<u64>,
}

/// `NAME --version`, or a panic saying that the suite needs Node.js 20+ and npm.
// Only tests/e2e.rs checks its tools up front (tests/browser.rs finds out from `npm ci`); the
// other includer of this module would warn about it as dead code.
#[allow(dead_code)]
pub fn require_tool(name: &str) -> String {
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

impl Suite {
    /// Run `cmd` in its own process group with a deadline, copying its stderr to ours as it comes
    /// (so a person watching `cargo test` sees progress, past the test harness's capture) and
    /// collecting stdout and stderr. Past the deadline the whole process group is ended
    /// as `self.term_grace` says.
    pub fn run(&self, mut cmd: Command, timeout: Duration, what: &str) -> Run {
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
            pump(
                child.stdout.take().expect("stdout is piped"),
                true,
                tx.clone(),
            ),
            pump(child.stderr.take().expect("stderr is piped"), false, tx),
        ];
        let deadline = Instant::now() + timeout;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let mut timed_out = false;
        let mut console = std::io::stderr();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok((true, line)) => {
                    stdout.push_str(&line);
                    stdout.push('\n');
                }
                Ok((false, line)) => {
                    let _ = writeln!(console, "{line}");
                    stderr.push_str(&line);
                    stderr.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    timed_out = true;
                    let stopping = match self.term_grace {
                        None => "killing",
                        Some(_) => "stopping",
                    };
                    let _ = writeln!(
                        console,
                        "{}: {what} ran past {timeout:?}; {stopping} it",
                        self.label
                    );
                    stop_tree(&mut child, self.term_grace);
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

    /// `npm ci` when node_modules is missing, older than package-lock.json (npm records the tree
    /// it installed in node_modules/.package-lock.json) or lacks one of `packages`. `pins` says
    /// what package-lock.json pins, for the message when it is missing.
    pub fn ensure_node_modules(&self, packages: &[&str], pins: &str, timeout: Duration) {
        let dir = &self.dir;
        let lock = modified(&dir.join("package-lock.json")).unwrap_or_else(|| {
            panic!(
                "{}/package-lock.json exists (it pins {pins})",
                dir.display()
            )
        });
        let installed = modified(&dir.join("node_modules").join(".package-lock.json"));
        let fresh = installed.is_some_and(|installed| installed >= lock)
            && packages.iter().all(|name| {
                dir.join("node_modules")
                    .join(name)
                    .join("package.json")
                    .exists()
            });
        if fresh {
            return;
        }
        eprintln!("{}: npm ci in {}", self.label, dir.display());
        let mut cmd = Command::new("npm");
        cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir);
        let run = self.run(cmd, timeout, "npm ci");
        assert!(
            !run.timed_out,
            "`npm ci` in {} did not finish within {timeout:?}:\n{}{}",
            dir.display(),
            run.stdout,
            run.stderr
        );
        assert!(
            run.success,
            "`npm ci` in {} failed ({}; Node.js 20+ and npm must be installed):\n{}{}",
            dir.display(),
            run.status,
            run.stdout,
            run.stderr
        );
    }

    /// The suite's `*.test.mjs` files, sorted; at least one.
    pub fn test_files(&self) -> Vec<PathBuf> {
        let dir = &self.dir;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|err| panic!("{} is not readable: {err}", dir.display()))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".test.mjs"))
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no *.test.mjs in {}", dir.display());
        files
    }

    /// `node --test` over the suite's files, one at a time, each test limited to
    /// `per_test_timeout_ms`: a readable report for people streamed on stderr, TAP on stdout for
    /// the counts. Callers add their environment.
    pub fn node_test(&self, per_test_timeout_ms: u32) -> Command {
        let mut cmd = Command::new("node");
        cmd.arg("--test")
            .arg("--test-concurrency=1")
            .arg(format!("--test-timeout={per_test_timeout_ms}"))
            .arg("--test-force-exit")
            .args(["--test-reporter=spec", "--test-reporter-destination=stderr"])
            .args(["--test-reporter=tap", "--test-reporter-destination=stdout"])
            .args(self.test_files())
            .current_dir(&self.dir)
            .env("NO_COLOR", "1");
        cmd
    }

    /// Assert that the `node --test` run finished within `timeout`, that nothing failed, was
    /// cancelled, skipped or left todo, that at least `min_passed` tests passed, and that node
    /// exited successfully with no `not ok` in its report.
    pub fn assert_passed(&self, run: &Run, timeout: Duration, min_passed: u64) {
        let noun = self.noun;
        let counts = summary(&run.stdout);
        eprintln!("{}: {counts:?}", self.label);
        let not_ok = failures(&run.stdout);
        let stopped = match self.term_grace {
            None => "killed",
            Some(_) => "stopped",
        };
        assert!(
            !run.timed_out,
            "the {noun} suite did not finish within {timeout:?} and was {stopped}; not passed so \
             far:\n{not_ok}"
        );
        let pass = counts.pass.expect("node's TAP report ends with `# pass N`");
        let fail = counts.fail.expect("node's TAP report ends with `# fail N`");
        let cancelled = counts.cancelled.unwrap_or(0);
        assert!(
            fail == 0 && cancelled == 0,
            "{fail} {noun} tests failed and {cancelled} were cancelled (the report above has the \
             details):\n{not_ok}"
        );
        assert_eq!(
            counts.skipped.unwrap_or(0),
            0,
            "no {noun} test may be skipped"
        );
        assert_eq!(
            counts.todo.unwrap_or(0),
            0,
            "no {noun} test may be left as todo"
        );
        assert!(
            pass >= min_passed,
            "only {pass} {noun} tests passed (of {:?}); the suite has at least {min_passed}",
            counts.tests
        );
        // A failed before/after hook (e.g. a secret check on the binary's log) does not show in
        // the counts, only as a `not ok` suite and the exit status.
        assert!(
            run.success && not_ok.is_empty(),
            "node --test exited with {}:\n{not_ok}",
            run.status
        );
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

/// End the child and everything it started (it leads its own process group): SIGTERM first and
/// SIGKILL after `term_grace` if that is given, else SIGKILL at once.
fn stop_tree(child: &mut Child, term_grace: Option<Duration>) {
    #[cfg(unix)]
    {
        let group = format!("-{}", child.id());
        let signals: &[(&str, Duration)] = match term_grace {
            None => &[("-KILL", Duration::ZERO)],
            Some(grace) => &[("-TERM", grace), ("-KILL", Duration::ZERO)],
        };
        for &(signal, grace) in signals {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let end = Instant::now() + grace;
            while Instant::now() < end {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = term_grace;
    let _ = child.kill();
}

/// The counts in Node's TAP summary.
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
